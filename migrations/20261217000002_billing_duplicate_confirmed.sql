-- When the cancellation worker found a queued duplicate subscription live beside another live
-- subscription of its customer at Stripe, just before cancelling it: only a duplicate confirmed
-- so is refunded once cancelled (one cancelled by someone else, never confirmed, is not).
ALTER TABLE billing.stripe_cancellations ADD COLUMN duplicate_confirmed_at timestamptz;

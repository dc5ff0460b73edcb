-- A subscription whose payment is given back once it is cancelled: a deleted user's checkout
-- paid after (or just before, unheard of at) the deletion. Nobody can use what it bought.
ALTER TABLE billing.stripe_cancellations ADD COLUMN refund_paid boolean NOT NULL DEFAULT false;

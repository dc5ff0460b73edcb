-- The stamp of the latest invoice applied to a Stripe subscription (the period it bills, Unix
-- seconds, then its event's `created`), kept apart from the snapshot's: an invoice no longer
-- moves the snapshot stamp, so a subscription snapshot delivered after a newer invoice of the
-- same period (a plan change or cancellation taking effect at renewal) still applies, while
-- the status the newer payment decided is kept. NULL: no invoice applied yet.
ALTER TABLE billing.subscriptions
    ADD COLUMN invoice_at bigint,
    ADD COLUMN invoice_event_created bigint;

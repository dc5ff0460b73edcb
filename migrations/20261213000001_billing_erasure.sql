-- A deleted account's billing: its data is erased and its paid subscriptions are cancelled at
-- Stripe, so a user who can no longer sign in (nor open the portal) is not charged again.

-- Users whose billing data was erased. Nothing is written for them afterwards: no trial (a
-- `user.created` relayed after the `user.deleted`), no subscription, customer link or invoice
-- from a Stripe event that still names them.
CREATE TABLE billing.erased_users (
    user_id   uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);

-- The Stripe subscriptions of erased users still to be cancelled at Stripe, worked by the
-- cancellation worker (`DELETE /v1/subscriptions/{id}`). A row is done when Stripe confirmed
-- the cancellation (or had no such subscription), and failed when Stripe refused it for good;
-- otherwise it is retried from `next_attempt_at`.
CREATE TABLE billing.stripe_cancellations (
    stripe_subscription_id text PRIMARY KEY,
    requested_at           timestamptz NOT NULL DEFAULT now(),
    attempts               integer NOT NULL DEFAULT 0,
    next_attempt_at        timestamptz NOT NULL DEFAULT now(),
    last_error             text,
    done_at                timestamptz,
    failed_at              timestamptz
);
CREATE INDEX stripe_cancellations_due ON billing.stripe_cancellations (next_attempt_at)
    WHERE done_at IS NULL AND failed_at IS NULL;
-- Done cancellations are forgotten after a while (the retention sweep).
CREATE INDEX stripe_cancellations_done_at ON billing.stripe_cancellations (done_at)
    WHERE done_at IS NOT NULL;

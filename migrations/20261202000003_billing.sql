-- The billing domain: Stripe customers, every user's subscriptions (the sign-up trial and Stripe
-- subscriptions), the Stripe events already applied, the user events the trial consumer has
-- handled, and the transactional outbox of billing events.

-- A user's Stripe customer (made at the first checkout, or learnt from a completed checkout).
CREATE TABLE billing.customers (
    user_id            uuid PRIMARY KEY,
    stripe_customer_id text NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Every subscription a user has had. A trial (`source = 'trial'`) is written by the trial
-- consumer; a Stripe subscription (`source = 'stripe'`) mirrors the latest snapshot of it that
-- Stripe's webhooks delivered. The user's plan is that of the newest one still in force.
CREATE TABLE billing.subscriptions (
    id                     uuid PRIMARY KEY,
    user_id                uuid NOT NULL,
    -- A plan id of the catalogue (config/plans.toml) when it was written.
    plan                   text NOT NULL,
    -- Stripe's status (`trialing`, `active`, `past_due`, `canceled`, `incomplete`,
    -- `incomplete_expired`, `unpaid`, `paused`); a trial is `trialing`.
    status                 text NOT NULL,
    billing_interval       text CHECK (billing_interval IN ('monthly', 'yearly')),
    source                 text NOT NULL CHECK (source IN ('trial', 'stripe')),
    stripe_subscription_id text UNIQUE,
    stripe_customer_id     text,
    current_period_end     timestamptz,
    trial_end              timestamptz,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    -- When the subscription began (Stripe's `created`; the trial's start): "newest" is by this.
    started_at             timestamptz NOT NULL DEFAULT now(),
    -- The ordering stamp of the Stripe snapshot applied: its own timestamp (unix seconds: the
    -- end or cancellation of a final snapshot, else the start of its current period), whether
    -- it was final (canceled or ended), and the `created` of the event that carried it. A
    -- snapshot is applied only if its stamp is greater, compared in that order.
    snapshot_at            bigint,
    snapshot_final         boolean NOT NULL DEFAULT false,
    snapshot_event_created bigint,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_stripe_has_its_id
        CHECK ((source = 'stripe') = (stripe_subscription_id IS NOT NULL)),
    CONSTRAINT subscriptions_trial_has_its_end
        CHECK (source <> 'trial' OR trial_end IS NOT NULL)
);
-- At most one trial per user, ever.
CREATE UNIQUE INDEX subscriptions_one_trial_per_user ON billing.subscriptions (user_id)
    WHERE source = 'trial';
CREATE INDEX subscriptions_by_user ON billing.subscriptions (user_id, started_at DESC);

-- The Stripe event ids already applied (or acknowledged): a redelivery finds its id here and
-- does nothing. Stripe retries for up to three days, so older rows may be pruned.
CREATE TABLE billing.stripe_events (
    event_id    text PRIMARY KEY,
    type        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_received_at ON billing.stripe_events (received_at);

-- The user events (`gl:events:users`) the trial consumer has applied, by `event_id`: a
-- redelivered entry finds its id here and does nothing.
CREATE TABLE billing.processed_user_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Billing events written in the same transaction as the change they describe, then relayed to
-- their Redis Stream (`gl:events:billing`); `published_at` is set once the stream has them.
-- The same shape as accounts.outbox (the kit's outbox relays both).
CREATE TABLE billing.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    stream       text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON billing.outbox (id) WHERE published_at IS NULL;

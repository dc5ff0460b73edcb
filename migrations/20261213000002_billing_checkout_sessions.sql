-- Each user's latest Checkout Session. A new one expires the one before it at Stripe, so a user
-- never has two open at once (two tabs, or one opened long before) and cannot pay for two
-- subscriptions.
CREATE TABLE billing.checkout_sessions (
    user_id    uuid PRIMARY KEY,
    session_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

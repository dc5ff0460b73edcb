-- Stripe customers deleted at Stripe (`customer.deleted`): never linked to a user again. A
-- late or redelivered event that still names one (a checkout completed before the deletion, a
-- subscription billing never stored) would otherwise link the user back to a customer Stripe
-- no longer has, and every later checkout and portal session would fail with "No such
-- customer".
CREATE TABLE billing.deleted_customers (
    stripe_customer_id text PRIMARY KEY,
    deleted_at         timestamptz NOT NULL DEFAULT now()
);

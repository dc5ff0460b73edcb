-- The cancellation queue also expires Checkout Sessions (a replaced one, or an erased user's):
-- its key is any Stripe object's id, `sub_…` to cancel or `cs_…` to expire.
ALTER TABLE billing.stripe_cancellations RENAME COLUMN stripe_subscription_id TO stripe_id;

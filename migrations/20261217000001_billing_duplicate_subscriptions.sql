-- A user who paid two Checkout Sessions (two tabs, one paid before the other was expired)
-- holds two live Stripe subscriptions. The later one is queued in the cancellation queue as a
-- duplicate of the customer's other subscription: the worker cancels it at Stripe only while
-- another of the customer's subscriptions is live, then refunds its paid invoice (a credit
-- note). `duplicate_customer` is the Stripe customer whose subscriptions are compared; NULL
-- for every other row (a deleted user's subscription, a session to expire).
ALTER TABLE billing.stripe_cancellations ADD COLUMN duplicate_customer text;

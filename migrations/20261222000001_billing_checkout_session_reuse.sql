-- A Checkout Session's address and price, so that a second checkout for the same price within
-- a moment of the first (a double click, a second tab) is answered with the first session
-- rather than expiring it while the user pays on it. Rows from before have neither: never
-- reused.
ALTER TABLE billing.checkout_sessions ADD COLUMN url text, ADD COLUMN price text;

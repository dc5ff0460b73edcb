-- A user's erasure deletes billing's outbox events about them (payments, plans), found by
-- the user id in their payload, as accounts' and notifications' outboxes are.
CREATE INDEX outbox_user_id ON billing.outbox ((payload->>'user_id'));

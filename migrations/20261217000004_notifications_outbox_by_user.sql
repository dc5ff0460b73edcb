-- The outbox's events of one user, for the erasure (which deletes them under the user's lock:
-- without it, a scan of every row kept for the outbox's retention).
CREATE INDEX outbox_user_id ON notifications.outbox ((payload->>'user_id'));

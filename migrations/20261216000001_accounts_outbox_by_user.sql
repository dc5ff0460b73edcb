-- The accounts outbox keeps its events (addresses in `user.*`, push tokens in
-- `device.registered`) for its retention, long after they are relayed. A user's deletion now
-- scrubs their events of them in its own transaction; this index finds a user's events without
-- reading the whole outbox.
CREATE INDEX outbox_user_id ON accounts.outbox ((payload->>'user_id'));

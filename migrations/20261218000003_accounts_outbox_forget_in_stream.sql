-- A deleted user's events already relayed to `gl:events:users` carry their address, and the
-- stream would keep them for its week. The deletion marks the user's recent events
-- `forget_in_stream` (in its transaction); the outbox relay's next pass finds their copies in
-- the stream by `event_id`, deletes them (`XDEL`) and clears the mark.
ALTER TABLE accounts.outbox ADD COLUMN forget_in_stream boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_forget_in_stream ON accounts.outbox (id) WHERE forget_in_stream;

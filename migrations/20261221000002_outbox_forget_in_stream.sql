-- A user's erasure no longer deletes billing's and notifications' outbox events about them at
-- once: those the streams may still hold are marked `forget_in_stream` (withdrawn if not yet
-- relayed), and each outbox's relay takes their copies out of the stream (`XDEL`, found by
-- their event ids), then deletes the rows. Before, the copies stayed for the stream's week.
ALTER TABLE billing.outbox ADD COLUMN forget_in_stream boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_forget_in_stream ON billing.outbox (id) WHERE forget_in_stream;
ALTER TABLE notifications.outbox ADD COLUMN forget_in_stream boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_forget_in_stream ON notifications.outbox (id) WHERE forget_in_stream;

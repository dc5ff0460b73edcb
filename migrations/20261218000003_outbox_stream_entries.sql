-- Each outbox row relayed remembers its stream entry's id, so that an event can be taken out
-- of the stream again (`XDEL`) when its subject's data must go before the stream's week is
-- up: a deleted user's `user.*` events carry their address. `forget_in_stream` marks the rows
-- whose entries the relay loop deletes next (then it clears both).
ALTER TABLE accounts.outbox
    ADD COLUMN stream_entry_id text,
    ADD COLUMN forget_in_stream boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_forget_in_stream ON accounts.outbox (id) WHERE forget_in_stream;

ALTER TABLE billing.outbox
    ADD COLUMN stream_entry_id text,
    ADD COLUMN forget_in_stream boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_forget_in_stream ON billing.outbox (id) WHERE forget_in_stream;

ALTER TABLE notifications.outbox
    ADD COLUMN stream_entry_id text,
    ADD COLUMN forget_in_stream boolean NOT NULL DEFAULT false;
CREATE INDEX outbox_forget_in_stream ON notifications.outbox (id) WHERE forget_in_stream;

-- The notifications domain: each user's inbox, their notification preferences, and what every
-- delivery attempt to a device or an address came to. Rows name their user by GospeLib user id
-- (no foreign key: accounts owns users; a deleted user's rows are erased by the consumer of
-- `user.deleted`). Every read and write names the user: a notification is its owner's alone.
CREATE SCHEMA IF NOT EXISTS notifications;

-- One notification in a user's inbox. `dedupe_key` says what made it (`welcome:<user>`,
-- `event:<event_id>`, `reminder:<user>:<date>`, `test:<user>:<id>`): an event applied twice
-- finds its key taken and makes nothing.
CREATE TABLE notifications.notifications (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    category   text NOT NULL CHECK (category IN ('account', 'subscription', 'study_reminder')),
    title      text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body       text NOT NULL CHECK (char_length(body) <= 2000),
    dedupe_key text NOT NULL CHECK (char_length(dedupe_key) <= 200),
    read_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_dedupe_key_unique UNIQUE (dedupe_key)
);
-- The inbox, newest first (keyset pages).
CREATE INDEX notifications_inbox
    ON notifications.notifications (user_id, created_at DESC, id DESC);
-- The unread ones: `unreadOnly` pages and the unread count read only these.
CREATE INDEX notifications_unread
    ON notifications.notifications (user_id, created_at DESC, id DESC)
    WHERE read_at IS NULL;

-- A user's preferences; a user without a row has the defaults (the subgraph's
-- `Preferences::default`, the same as these column defaults).
CREATE TABLE notifications.preferences (
    user_id         uuid PRIMARY KEY,
    -- Channels.
    push            boolean NOT NULL DEFAULT true,
    email           boolean NOT NULL DEFAULT true,
    -- Categories: whether a category reaches the user's channels (the inbox keeps everything).
    account         boolean NOT NULL DEFAULT true,
    subscription    boolean NOT NULL DEFAULT true,
    study_reminders boolean NOT NULL DEFAULT false,
    -- Quiet hours, minutes after local midnight in `time_zone`, start inclusive, end
    -- exclusive (it may wrap past midnight: 22:00–07:00 is 1320–420); both or neither.
    quiet_start     smallint CHECK (quiet_start BETWEEN 0 AND 1439),
    quiet_end       smallint CHECK (quiet_end BETWEEN 0 AND 1439),
    -- An IANA zone name (checked against `pg_timezone_names` by the subgraph).
    time_zone       text NOT NULL DEFAULT 'UTC' CHECK (char_length(time_zone) BETWEEN 1 AND 64),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT preferences_quiet_hours_paired
        CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CONSTRAINT preferences_quiet_hours_not_empty
        CHECK (quiet_start IS NULL OR quiet_start <> quiet_end)
);

-- What one delivery of one notification to one device or address came to, as the provider
-- said: `sent` only when the provider accepted the message. The recipient is kept as a
-- SHA-256 digest (hex), never as the token or the address.
CREATE TABLE notifications.deliveries (
    id                  bigserial PRIMARY KEY,
    notification_id     uuid NOT NULL
                        REFERENCES notifications.notifications (id) ON DELETE CASCADE,
    user_id             uuid NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('push', 'email')),
    provider            text NOT NULL CHECK (char_length(provider) <= 40),
    recipient_digest    text NOT NULL CHECK (recipient_digest ~ '^[0-9a-f]{64}$'),
    outcome             text NOT NULL CHECK (outcome IN ('sent', 'skipped', 'rejected', 'failed')),
    provider_message_id text CHECK (char_length(provider_message_id) <= 300),
    reason              text CHECK (char_length(reason) <= 1000),
    attempts            integer NOT NULL CHECK (attempts >= 1),
    at                  timestamptz NOT NULL DEFAULT now(),
    -- Nothing but an acceptance has a provider's message id.
    CONSTRAINT deliveries_message_id_only_when_sent
        CHECK (provider_message_id IS NULL OR outcome = 'sent')
);
CREATE INDEX deliveries_by_notification ON notifications.deliveries (notification_id);
CREATE INDEX deliveries_by_user ON notifications.deliveries (user_id);

-- Users whose data was erased (`user.deleted`): an event about them that arrives late (a
-- redelivered `user.created`, a billing event) must not make a new notification.
CREATE TABLE notifications.erased_users (
    user_id   uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);

-- The accounts domain: users mirrored from Clerk (through its webhooks), their push devices,
-- the webhook deliveries already applied, and the transactional outbox of user events.

-- One row per Clerk user. `id` is GospeLib's user id, derived from the Clerk id
-- (`gospelib_kit::caller::user_id_for_clerk`), so the router knows it from the session alone.
CREATE TABLE accounts.users (
    id                uuid PRIMARY KEY,
    clerk_id          text NOT NULL UNIQUE,
    email             text,
    first_name        text,
    last_name         text,
    image_url         text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The Clerk user object's own `updated_at`: a delivery older than this is stale and ignored.
    clerk_updated_at  timestamptz,
    last_signed_in_at timestamptz,
    -- Set by `user.deleted`; the row stays as a tombstone so a late delivery never resurrects
    -- the user, and it keeps no personal data.
    deleted_at        timestamptz,
    CONSTRAINT users_deleted_keep_no_personal_data CHECK (
        deleted_at IS NULL
        OR (email IS NULL AND first_name IS NULL AND last_name IS NULL AND image_url IS NULL
            AND last_signed_in_at IS NULL)
    )
);

-- A user's push-notification targets. The same token registered twice is the same device:
-- uniqueness is on the token's SHA-256 (tokens may be up to 4096 characters, longer than a
-- btree index entry may be).
CREATE TABLE accounts.devices (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES accounts.users (id) ON DELETE CASCADE,
    platform     text NOT NULL CHECK (platform IN ('IOS', 'ANDROID', 'WEB')),
    token        text NOT NULL CHECK (char_length(token) BETWEEN 1 AND 4096),
    token_sha256 bytea NOT NULL CHECK (octet_length(token_sha256) = 32),
    name         text CHECK (char_length(name) <= 100),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_user_token_unique UNIQUE (user_id, token_sha256)
);

-- The Svix message ids (`svix-id`) already applied: a redelivery finds its id here and does
-- nothing. Svix retries for about three days, so rows older than that may be pruned.
CREATE TABLE accounts.webhook_messages (
    message_id  text PRIMARY KEY,
    event_type  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_received_at ON accounts.webhook_messages (received_at);

-- Events written in the same transaction as the change they describe, then relayed to their
-- Redis Stream; `published_at` is set once the stream has them.
CREATE TABLE accounts.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    stream       text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON accounts.outbox (id) WHERE published_at IS NULL;

-- Delivering notifications to devices and addresses: notifications' own copy of where each user
-- is reached (from the accounts events on `gl:events:users`), the durable queue of deliveries to
-- make (written in the same transaction as the notification), what each delivery came to, and
-- the outbox of notifications' own events (`gl:events:notifications`). Rows name their user by
-- GospeLib user id, without foreign keys to accounts; `user.deleted` erases them.

-- A user's push targets, from `device.registered` and `device.removed`. `changed_at` is the
-- `occurred_at` of the event that last changed the row: an older event arriving late (stream
-- entries may be retried out of order) changes nothing. A removed device stays as a tombstone
-- without its token, so that a late `device.registered` cannot bring it back. A device whose
-- token a provider refused for good is retired (`retired_at`, `reason`) and never sent to again;
-- registering it again with the same token keeps it retired, with another token revives it.
CREATE TABLE notifications.devices (
    device_id  uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    -- IOS goes through APNs, ANDROID and WEB through FCM. NULL only on the tombstone of a device
    -- removed before it was ever registered here.
    platform   text CHECK (platform IN ('IOS', 'ANDROID', 'WEB')),
    token      text CHECK (char_length(token) BETWEEN 1 AND 4096),
    changed_at timestamptz NOT NULL,
    removed_at timestamptz,
    retired_at timestamptz,
    reason     text CHECK (char_length(reason) <= 1000),
    CONSTRAINT devices_live_have_a_token
        CHECK (removed_at IS NOT NULL OR (token IS NOT NULL AND platform IS NOT NULL)),
    CONSTRAINT devices_removed_keep_no_token CHECK (removed_at IS NULL OR token IS NULL),
    CONSTRAINT devices_retired_with_reason CHECK ((retired_at IS NULL) = (reason IS NULL))
);
CREATE INDEX devices_by_user ON notifications.devices (user_id);

-- A user's email address, from `user.created` and `user.updated`. A NULL email is an address
-- removed (kept, like a removed device, so that a late older event cannot restore it).
CREATE TABLE notifications.addresses (
    user_id    uuid PRIMARY KEY,
    email      text CHECK (char_length(email) BETWEEN 3 AND 320),
    changed_at timestamptz NOT NULL
);

-- The delivery queue: one job per notification and channel, inserted in the transaction that
-- inserts the notification. A worker claims due jobs (`not_before` passed, no live lease) with
-- `FOR UPDATE SKIP LOCKED`, sets `locked_until` (its lease) and counts the attempt; a job whose
-- worker died is claimed again once the lease has expired. `attempts` also fences a worker whose
-- lease expired: its updates name the attempt it claimed. A finished job keeps `done_at` and a
-- summary `outcome` (the best of its recipients': sent, failed, rejected, skipped); each
-- recipient's outcome is in `notifications.deliveries`.
CREATE TABLE notifications.delivery_jobs (
    id              bigserial PRIMARY KEY,
    notification_id uuid NOT NULL
                    REFERENCES notifications.notifications (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('push', 'email')),
    -- Now, or the end of the user's quiet hours (in their time zone) when it was made in them.
    not_before      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    locked_until    timestamptz,
    locked_by       text CHECK (char_length(locked_by) <= 200),
    done_at         timestamptz,
    outcome         text CHECK (outcome IN ('sent', 'skipped', 'rejected', 'failed')),
    last_error      text CHECK (char_length(last_error) <= 1000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delivery_jobs_one_per_channel UNIQUE (notification_id, channel),
    CONSTRAINT delivery_jobs_done_with_outcome CHECK ((done_at IS NULL) = (outcome IS NULL))
);
-- What a worker polls: the jobs not done, by when they are due.
CREATE INDEX delivery_jobs_due
    ON notifications.delivery_jobs (not_before, id) WHERE done_at IS NULL;
CREATE INDEX delivery_jobs_by_user ON notifications.delivery_jobs (user_id);

-- Deliveries that reached no provider (the channel or category switched off, no device or no
-- address) are recorded as `skipped` without provider or recipient. A transient failure that
-- the queue will try again is recorded as `failed` with `will_retry`; every other row is final
-- for its recipient (a retried job never sends again to a recipient with a final row).
ALTER TABLE notifications.deliveries
    ALTER COLUMN provider DROP NOT NULL,
    ALTER COLUMN recipient_digest DROP NOT NULL,
    ADD COLUMN will_retry boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT deliveries_only_skips_lack_a_recipient
        CHECK (outcome = 'skipped' OR (provider IS NOT NULL AND recipient_digest IS NOT NULL)),
    ADD CONSTRAINT deliveries_only_failures_are_retried
        CHECK (NOT will_retry OR outcome = 'failed');

-- Notifications' events (`device.rejected`), written in the same transaction as the change they
-- describe and relayed to `gl:events:notifications` (the kit's outbox; the shape of
-- `accounts.outbox`).
CREATE TABLE notifications.outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    stream       text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON notifications.outbox (id) WHERE published_at IS NULL;

-- The end of the quiet span that `instant` falls in, for quiet hours from `start_minute` to
-- `end_minute` (minutes after local midnight in `zone_name`, start inclusive, end exclusive,
-- wrapping past midnight when the start is after the end); NULL when `instant` is outside them
-- or there are none. The local end is turned back into an instant in the zone, so daylight
-- saving time is the zone's (an end that a spring-forward skipped lands just past the gap). A
-- zone PostgreSQL does not know counts as UTC (the subgraph stores only names it knows).
CREATE FUNCTION notifications.quiet_hours_end(
    start_minute smallint,
    end_minute   smallint,
    zone_name    text,
    instant      timestamptz
) RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    zone         text := coalesce(zone_name, 'UTC');
    local_time   timestamp;
    local_day    timestamp;
    local_minute double precision;
    local_end    timestamp;
    ends         timestamptz;
BEGIN
    IF start_minute IS NULL OR end_minute IS NULL OR start_minute = end_minute
       OR instant IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        local_time := instant AT TIME ZONE zone;
    EXCEPTION WHEN invalid_parameter_value THEN
        zone := 'UTC';
        local_time := instant AT TIME ZONE zone;
    END;
    local_day := date_trunc('day', local_time);
    local_minute := extract(epoch FROM local_time - local_day) / 60;
    IF start_minute < end_minute THEN
        IF local_minute < start_minute OR local_minute >= end_minute THEN
            RETURN NULL;
        END IF;
        local_end := local_day + make_interval(mins => end_minute);
    ELSIF local_minute >= start_minute THEN
        local_end := local_day + interval '1 day' + make_interval(mins => end_minute);
    ELSIF local_minute < end_minute THEN
        local_end := local_day + make_interval(mins => end_minute);
    ELSE
        RETURN NULL;
    END IF;
    ends := local_end AT TIME ZONE zone;
    -- Only a span still ahead postpones anything.
    IF ends <= instant THEN
        RETURN NULL;
    END IF;
    RETURN ends;
END;
$$;

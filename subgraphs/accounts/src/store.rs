//! Every SQL statement on `accounts.users`, `accounts.devices`, `accounts.webhook_messages`
//! and `accounts.early_sign_ins`.
//!
//! Timestamps stay `timestamptz` in PostgreSQL and leave it as RFC 3339 text in UTC with
//! millisecond precision (`2026-12-02T10:00:00.000Z`); Clerk's millisecond timestamps enter
//! it the same way, converted by PostgreSQL, so no date library is needed on this side.
//!
//! Functions taking a `&mut PgConnection` run inside the caller's transaction; the ones that
//! change a user lock its row (`FOR UPDATE`) first, so concurrent changes to one user are
//! applied one after the other.

use sha2::{Digest, Sha256};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::clerk::UserProfile;

/// The `updated_at` of a change to a locked user row: the clock now, and always at least a
/// millisecond past the row's previous change. Every `user.*` event is stamped with it (not
/// with Clerk's `updated_at`): a change Clerk made earlier but whose webhook arrives after a
/// change made here must carry the later stamp, since it carries the later state, and consumers
/// keep the event with the latest stamp (events are stamped to the millisecond).
const NEXT_CHANGE_AT: &str = "GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')";

/// A `timestamptz` column as RFC 3339 text in UTC, milliseconds included.
macro_rules! rfc3339 {
    ($column:expr) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// The stamp of a change to a device row, taken after the locks: the clock now, and always
/// at least a millisecond past the device's last stamp. Its `device.registered` and
/// `device.removed` events carry it, and notifications applies a removal only when it is not
/// older than what it knows of the device: a transaction that began before a registration
/// it then removes (it waited for the token's lock) must stamp the removal after it.
macro_rules! next_device_change_at {
    () => {
        "GREATEST(clock_timestamp(), last_seen_at + interval '1 millisecond')"
    };
}
const NEXT_DEVICE_CHANGE_AT: &str = next_device_change_at!();

/// [`NEXT_DEVICE_CHANGE_AT`] of a device removed, as its `device.removed` event's stamp.
const DEVICE_REMOVED_AT: &str = rfc3339!(next_device_change_at!());

/// A `bigint` parameter of milliseconds since the epoch as a `timestamptz`.
macro_rules! from_millis {
    ($param:literal) => {
        concat!(
            "(timestamptz 'epoch' + ",
            $param,
            "::bigint * interval '1 millisecond')"
        )
    };
}

/// The most devices one user may register.
pub const MAX_DEVICES_PER_USER: i64 = 20;

/// The most profile and device changes (`user.updated` and `device.registered` events) one
/// user may make in a day ([`changes_in_last_day`]). Each event stays a week in its Redis
/// stream, which Redis never evicts, so without a bound one account alternating two names,
/// or re-registering a long token, could fill Redis; a person changes their profile and
/// devices a few times a day. Sign-ins, and devices removed, are not counted: the user's
/// changes refused past the bound are `updateMe`'s and new devices.
pub const MAX_CHANGES_PER_DAY: i64 = 100;

const USER_COLUMNS: &str = concat!(
    "id, clerk_id, email, first_name, last_name, image_url, ",
    rfc3339!("created_at"),
    " AS created_at"
);

const DEVICE_COLUMNS: &str = concat!(
    "id, user_id, platform, name, ",
    rfc3339!("created_at"),
    " AS created_at, ",
    rfc3339!("last_seen_at"),
    " AS last_seen_at"
);

/// A live (not deleted) user.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// The platform a device receives pushes on.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[graphql(name = "DevicePlatform")]
pub enum Platform {
    Ios,
    Android,
    Web,
}

impl Platform {
    /// The value stored in `accounts.devices.platform`.
    pub const fn as_db(self) -> &'static str {
        match self {
            Self::Ios => "IOS",
            Self::Android => "ANDROID",
            Self::Web => "WEB",
        }
    }

    /// The platform stored as `value`, if it is one.
    pub fn from_db(value: &str) -> Option<Self> {
        [Self::Ios, Self::Android, Self::Web]
            .into_iter()
            .find(|platform| platform.as_db() == value)
    }
}

/// One of a user's devices (never its push token).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DeviceRow {
    pub id: Uuid,
    pub user_id: Uuid,
    /// As stored: `IOS`, `ANDROID` or `WEB` (see [`Platform::from_db`]).
    pub platform: String,
    pub name: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub last_seen_at: String,
}

/// The live users among `ids`.
pub async fn live_users(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<UserRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM accounts.users WHERE id = ANY($1) AND deleted_at IS NULL"
    );
    sqlx::query_as(&sql).bind(ids).fetch_all(pool).await
}

/// The devices of the users `ids` (live ones only have any), oldest first.
pub async fn devices_of(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<DeviceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM accounts.devices WHERE user_id = ANY($1)
         ORDER BY created_at, id"
    );
    sqlx::query_as(&sql).bind(ids).fetch_all(pool).await
}

/// Locks the live user `id` for the rest of the transaction; `None` if absent or deleted.
pub async fn lock_live_user(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM accounts.users WHERE id = $1 AND deleted_at IS NULL
         FOR UPDATE"
    );
    sqlx::query_as(&sql).bind(id).fetch_optional(conn).await
}

/// Sets a locked user's names; returns the user and when it changed (RFC 3339).
pub async fn set_names(
    conn: &mut PgConnection,
    id: Uuid,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> Result<(UserRow, String), sqlx::Error> {
    let sql = format!(
        "UPDATE accounts.users SET first_name = $2, last_name = $3, updated_at = {NEXT_CHANGE_AT}
         WHERE id = $1
         RETURNING {USER_COLUMNS}, {} AS changed_at",
        rfc3339!("updated_at")
    );
    let row: UserWithTime = sqlx::query_as(&sql)
        .bind(id)
        .bind(first_name)
        .bind(last_name)
        .fetch_one(conn)
        .await?;
    Ok((row.user, row.changed_at))
}

#[derive(FromRow)]
struct UserWithTime {
    #[sqlx(flatten)]
    user: UserRow,
    changed_at: String,
}

/// The SHA-256 of a push token: the key of (user, token).
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A device registration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice<'a> {
    pub platform: Platform,
    pub token: &'a str,
    pub name: DeviceName<'a>,
}

/// What a registration does to the device's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName<'a> {
    /// Left as it is (the app's start-up registration, which sends none); a new device has
    /// none.
    Kept,
    /// Set, or cleared with `None` (an empty name given).
    Set(Option<&'a str>),
}

impl<'a> DeviceName<'a> {
    /// Whether the name is set (or cleared), and to what.
    fn change(self) -> (bool, Option<&'a str>) {
        match self {
            Self::Kept => (false, None),
            Self::Set(name) => (true, name),
        }
    }
}

/// What registering a device came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A new device (the user had not registered this token).
    Added(DeviceRow),
    /// The token was registered already, on another platform: the same device, its platform
    /// now the new one (and its name and `last_seen_at` refreshed).
    PlatformChanged(DeviceRow),
    /// The token was registered already, on the same platform: the same device, seen again
    /// (its name and `last_seen_at` refreshed).
    Refreshed(DeviceRow),
    /// The user already has [`MAX_DEVICES_PER_USER`] devices.
    TooMany,
    /// The registration would be news, but the user's changes have written
    /// [`MAX_CHANGES_PER_DAY`] events in the last day; nothing was written.
    TooOften,
}

impl Registration {
    /// The device registered, unless there were too many.
    pub fn device(&self) -> Option<&DeviceRow> {
        match self {
            Self::Added(row) | Self::PlatformChanged(row) | Self::Refreshed(row) => Some(row),
            Self::TooMany | Self::TooOften => None,
        }
    }

    /// Whether the registration is news to the device's consumers (a `device.registered`
    /// event): a new device, or a new platform for a known token.
    pub fn is_news(&self) -> bool {
        matches!(self, Self::Added(_) | Self::PlatformChanged(_))
    }
}

/// How many `user.updated` and `device.registered` events about `user_id` the outbox holds
/// from the last day (made by `updateMe`, `registerDevice` and Clerk's deliveries alike), for
/// [`MAX_CHANGES_PER_DAY`]. The caller holds the user's lock, so two changes never both pass
/// the last free place.
pub async fn changes_in_last_day(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM accounts.outbox
         WHERE payload->>'user_id' = $1::text AND created_at > now() - interval '1 day'
           AND payload->>'type' IN ('user.updated', 'device.registered')",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await
}

/// Registers `device` for the user `user_id`, whose row the caller has locked (so two
/// registrations for one user never race past the limit, nor on the same token).
pub async fn register_device(
    conn: &mut PgConnection,
    user_id: Uuid,
    device: &NewDevice<'_>,
) -> Result<Registration, sqlx::Error> {
    let digest = token_digest(device.token);
    let known: Option<String> = sqlx::query_scalar(
        "SELECT platform FROM accounts.devices WHERE user_id = $1 AND token_sha256 = $2
         FOR UPDATE",
    )
    .bind(user_id)
    .bind(&digest)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(known_platform) = known {
        let sql = format!(
            "UPDATE accounts.devices
             SET platform = $3, name = CASE WHEN $5 THEN $4 ELSE name END,
                 last_seen_at = {NEXT_DEVICE_CHANGE_AT}
             WHERE user_id = $1 AND token_sha256 = $2
             RETURNING {DEVICE_COLUMNS}"
        );
        let row: DeviceRow = sqlx::query_as(&sql)
            .bind(user_id)
            .bind(&digest)
            .bind(device.platform.as_db())
            .bind(device.name.change().1)
            .bind(device.name.change().0)
            .fetch_one(&mut *conn)
            .await?;
        return Ok(if known_platform == device.platform.as_db() {
            Registration::Refreshed(row)
        } else {
            Registration::PlatformChanged(row)
        });
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts.devices WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    if count >= MAX_DEVICES_PER_USER {
        return Ok(Registration::TooMany);
    }
    let sql = format!(
        "INSERT INTO accounts.devices
             (id, user_id, platform, token, token_sha256, name, created_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, now(), clock_timestamp())
         RETURNING {DEVICE_COLUMNS}"
    );
    let inserted = sqlx::query_as(&sql)
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(device.platform.as_db())
        .bind(device.token)
        .bind(&digest)
        .bind(device.name.change().1)
        .fetch_one(conn)
        .await?;
    Ok(Registration::Added(inserted))
}

/// Removes the devices of users other than `user_id` that carry `token` (a phone that changed
/// hands: its token now reaches `user_id`, never the previous owner's notifications); their
/// (user, device id, removed at) for the `device.removed` events.
pub async fn take_token_from_others(
    conn: &mut PgConnection,
    user_id: Uuid,
    token: &str,
) -> Result<Vec<(Uuid, Uuid, String)>, sqlx::Error> {
    let sql = format!(
        "DELETE FROM accounts.devices WHERE token_sha256 = $1 AND user_id <> $2
         RETURNING user_id, id, {} AS removed_at",
        DEVICE_REMOVED_AT
    );
    sqlx::query_as(&sql)
        .bind(token_digest(token))
        .bind(user_id)
        .fetch_all(conn)
        .await
}

/// Removes the device `id` if it belongs to `user_id`, in the caller's transaction; when it
/// was removed (RFC 3339), or `None` if `user_id` has no such device (never had, or it is
/// gone already).
pub async fn remove_device(
    conn: &mut PgConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "DELETE FROM accounts.devices WHERE id = $1 AND user_id = $2 RETURNING {} AS removed_at",
        DEVICE_REMOVED_AT
    );
    sqlx::query_scalar(&sql)
        .bind(id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

// ---- Clerk webhooks ----

/// Records the Svix message `message_id` as applied; `false` if it already was (a
/// redelivery). A concurrent delivery of the same message waits here until the first one's
/// transaction ends, then sees the conflict.
pub async fn record_message(
    conn: &mut PgConnection,
    message_id: &str,
    event_type: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO accounts.webhook_messages (message_id, event_type, received_at)
         VALUES ($1, $2, now())
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(event_type)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Holds, until the transaction ends, the lock on push token `token`: two users registering
/// one phone's token at once (its old and new owner) are applied one after the other, so the
/// second takes it from the first. Each alone could not see the other's uncommitted device,
/// and both would keep it.
pub async fn lock_device_token(conn: &mut PgConnection, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('accounts.device_token:' || encode($1, 'hex'), 0))")
        .bind(token_digest(token))
        .execute(conn)
        .await?;
    Ok(())
}

/// Holds, until the transaction ends, the lock on Clerk user `clerk_id`'s events: two
/// deliveries about one user (a sign-in and the user's creation, say) are applied one after
/// the other, so neither misses what the other wrote.
pub async fn lock_clerk_user(conn: &mut PgConnection, clerk_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('accounts.clerk_user:' || $1, 0))")
        .bind(clerk_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A Clerk user as stored, locked for the transaction.
#[derive(Debug, Clone, FromRow)]
struct StoredUser {
    id: Uuid,
    deleted: bool,
    /// The stored Clerk `updated_at` is later than the delivery's.
    stale: bool,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    image_url: Option<String>,
    /// The names Clerk sent last (the shown ones may have been set in the app since).
    clerk_first_name: Option<String>,
    clerk_last_name: Option<String>,
}

/// What applying a Clerk user to the store did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// A new user; `at` is Clerk's `updated_at` (RFC 3339).
    Created { id: Uuid, at: String },
    /// The user's data changed.
    Updated { id: Uuid, at: String },
    /// Nothing to do: the same data, a stale delivery, or a deleted user (never resurrected).
    Unchanged,
}

/// Applies `profile` (from `user.created` or `user.updated`) to the user with its Clerk id.
pub async fn upsert_clerk_user(
    conn: &mut PgConnection,
    id: Uuid,
    profile: &UserProfile,
) -> Result<UpsertOutcome, sqlx::Error> {
    let select = concat!(
        "SELECT id, deleted_at IS NOT NULL AS deleted,
                COALESCE(clerk_updated_at > ",
        from_millis!("$2"),
        ", false) AS stale,
                email, first_name, last_name, image_url, clerk_first_name, clerk_last_name
         FROM accounts.users WHERE clerk_id = $1 FOR UPDATE"
    );
    // Two rounds at most: when another transaction inserts the user between our look-up and
    // our insert, the insert waits for it and does nothing, and the look-up then finds it.
    for _ in 0..2 {
        let stored: Option<StoredUser> = sqlx::query_as(select)
            .bind(&profile.clerk_id)
            .bind(profile.updated_at_millis)
            .fetch_optional(&mut *conn)
            .await?;
        match stored {
            Some(stored) => return update_clerk_user(conn, stored, profile).await,
            None => {
                let sql = format!(
                    "INSERT INTO accounts.users
                         (id, clerk_id, email, first_name, last_name, image_url,
                          created_at, updated_at, clerk_updated_at,
                          clerk_first_name, clerk_last_name)
                     VALUES ($1, $2, $3, $4, $5, $6, {}, clock_timestamp(), {}, $4, $5)
                     ON CONFLICT (clerk_id) DO NOTHING
                     RETURNING {} AS at",
                    from_millis!("$7"),
                    from_millis!("$8"),
                    rfc3339!("updated_at"),
                );
                let at: Option<String> = sqlx::query_scalar(&sql)
                    .bind(id)
                    .bind(&profile.clerk_id)
                    .bind(&profile.email)
                    .bind(&profile.first_name)
                    .bind(&profile.last_name)
                    .bind(&profile.image_url)
                    .bind(profile.created_at_millis)
                    .bind(profile.updated_at_millis)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(at) = at {
                    return Ok(UpsertOutcome::Created { id, at });
                }
            }
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "the user {} was neither found nor inserted",
        profile.clerk_id
    )))
}

async fn update_clerk_user(
    conn: &mut PgConnection,
    stored: StoredUser,
    profile: &UserProfile,
) -> Result<UpsertOutcome, sqlx::Error> {
    if stored.deleted || stored.stale {
        return Ok(UpsertOutcome::Unchanged);
    }
    // A name set in the app since stays unless Clerk's own name changed (then the user renamed
    // themself at Clerk, later than what Clerk had before).
    let first_name = newer_name(
        &stored.first_name,
        &stored.clerk_first_name,
        &profile.first_name,
    );
    let last_name = newer_name(
        &stored.last_name,
        &stored.clerk_last_name,
        &profile.last_name,
    );
    let changed = (
        &stored.email,
        &stored.first_name,
        &stored.last_name,
        &stored.image_url,
    ) != (&profile.email, first_name, last_name, &profile.image_url);
    // The Clerk `updated_at` moves forward even when nothing we keep changed, so an older
    // delivery arriving later is still recognised as stale.
    let sql = format!(
        "UPDATE accounts.users
         SET email = $2, first_name = $3, last_name = $4, image_url = $5,
             clerk_first_name = $8, clerk_last_name = $9,
             clerk_updated_at = {},
             updated_at = CASE WHEN $7 THEN {NEXT_CHANGE_AT} ELSE updated_at END
         WHERE id = $1
         RETURNING {} AS at",
        from_millis!("$6"),
        rfc3339!("updated_at"),
    );
    let at: String = sqlx::query_scalar(&sql)
        .bind(stored.id)
        .bind(&profile.email)
        .bind(first_name)
        .bind(last_name)
        .bind(&profile.image_url)
        .bind(profile.updated_at_millis)
        .bind(changed)
        .bind(&profile.first_name)
        .bind(&profile.last_name)
        .fetch_one(conn)
        .await?;
    Ok(if changed {
        UpsertOutcome::Updated { id: stored.id, at }
    } else {
        UpsertOutcome::Unchanged
    })
}

/// The name to show after a Clerk delivery: Clerk's when it changed at Clerk since its last
/// delivery, else the one shown now (which `updateMe` may have set).
fn newer_name<'a>(
    shown: &'a Option<String>,
    clerk_before: &Option<String>,
    clerk_now: &'a Option<String>,
) -> &'a Option<String> {
    if clerk_now != clerk_before {
        clerk_now
    } else {
        shown
    }
}

/// Soft-deletes the user with Clerk id `clerk_id` (personal data erased, devices removed, the
/// outbox's events scrubbed of their address and push tokens);
/// a user never seen before is stored as a tombstone, so a late `user.created` cannot bring
/// it to life. Returns when it was deleted (RFC 3339), or `None` if it already was.
pub async fn delete_clerk_user(
    conn: &mut PgConnection,
    id: Uuid,
    clerk_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO accounts.users AS u (id, clerk_id, created_at, updated_at, deleted_at)
         VALUES ($1, $2, now(), now(), now())
         ON CONFLICT (clerk_id) DO UPDATE
         SET email = NULL, first_name = NULL, last_name = NULL, image_url = NULL,
             clerk_first_name = NULL, clerk_last_name = NULL, last_signed_in_at = NULL,
             -- Later than the row's last change, as every user.* event's stamp (a change
             -- committed while this delivery waited for the user's lock included): the
             -- statement's time, taken after the lock, once for both columns.
             deleted_at = GREATEST(statement_timestamp(), u.updated_at + interval '1 millisecond'),
             updated_at = GREATEST(statement_timestamp(), u.updated_at + interval '1 millisecond')
         WHERE u.deleted_at IS NULL
         RETURNING u.id, {} AS at",
        rfc3339!("u.deleted_at")
    );
    let deleted: Option<(Uuid, String)> = sqlx::query_as(&sql)
        .bind(id)
        .bind(clerk_id)
        .fetch_optional(&mut *conn)
        .await?;
    // A sign-in heard before the user is discarded with it.
    sqlx::query("DELETE FROM accounts.early_sign_ins WHERE clerk_id = $1")
        .bind(clerk_id)
        .execute(&mut *conn)
        .await?;
    let Some((user_id, at)) = deleted else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM accounts.devices WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    scrub_outbox(conn, user_id).await?;
    Ok(Some(at))
}

/// Takes a deleted user's personal data out of the events the outbox keeps (for its retention,
/// long after they are relayed): addresses become `null`, push tokens go. A device
/// registration not relayed yet is withdrawn (never relayed: the device is gone, and the
/// deletion's own event comes after it). The user's events are marked to be taken out of the
/// stream too ([`gospelib_kit::outbox`]'s `forget_in_stream`), where
/// they would otherwise keep the address until the trim.
async fn scrub_outbox(conn: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    // Withdrawn rather than deleted: marked as if relayed, so the relay never sends it, and
    // kept (its token dropped below) so that the copy a failed relay batch may have added is
    // looked for in the stream like the others'.
    sqlx::query(
        "UPDATE accounts.outbox SET published_at = clock_timestamp()
         WHERE payload->>'user_id' = $1::text AND payload->>'type' = 'device.registered'
           AND published_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE accounts.outbox
         SET payload = CASE WHEN payload ? 'email'
                            THEN jsonb_set(payload - 'token', '{email}', 'null')
                            ELSE payload - 'token' END
         WHERE payload->>'user_id' = $1::text
           AND (payload->>'email' IS NOT NULL OR payload ? 'token')",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    // Every one (a stream is trimmed only when something is added to it, so copies may be
    // older than its week; looking where they were trimmed finds nothing, cheaply), not the
    // deletion's own (written after this).
    sqlx::query(
        "UPDATE accounts.outbox SET forget_in_stream = true WHERE payload->>'user_id' = $1::text",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a sign-in of the live user with Clerk id `clerk_id` at `at_millis` (now when
/// absent), unless a later one is already recorded. Returns the user and the sign-in time
/// (RFC 3339) when it moved forward. A sign-in of a Clerk id with no row at all (not even a
/// deletion's tombstone) is kept in `accounts.early_sign_ins` for the delivery that creates
/// the user ([`claim_early_sign_in`]); the caller holds [`lock_clerk_user`].
pub async fn record_sign_in(
    conn: &mut PgConnection,
    clerk_id: &str,
    at_millis: Option<i64>,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let recorded = update_sign_in(conn, clerk_id, at_millis).await?;
    if recorded.is_some() {
        return Ok(recorded);
    }
    let sql = format!(
        "INSERT INTO accounts.early_sign_ins AS e (clerk_id, signed_in_at)
         SELECT $1, COALESCE({}, now())
         WHERE NOT EXISTS (SELECT 1 FROM accounts.users WHERE clerk_id = $1)
         ON CONFLICT (clerk_id) DO UPDATE
         SET signed_in_at = GREATEST(e.signed_in_at, EXCLUDED.signed_in_at)",
        from_millis!("$2")
    );
    sqlx::query(&sql)
        .bind(clerk_id)
        .bind(at_millis)
        .execute(conn)
        .await?;
    Ok(None)
}

/// Applies to the user just created from `clerk_id` the sign-in heard before it, if any;
/// returns the sign-in time (RFC 3339). The caller holds [`lock_clerk_user`].
pub async fn claim_early_sign_in(
    conn: &mut PgConnection,
    user_id: Uuid,
    clerk_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "WITH early AS (
             DELETE FROM accounts.early_sign_ins WHERE clerk_id = $2 RETURNING signed_in_at
         )
         UPDATE accounts.users AS u
         SET last_signed_in_at = early.signed_in_at
         FROM early
         WHERE u.id = $1 AND u.deleted_at IS NULL
         RETURNING {} AS at",
        rfc3339!("u.last_signed_in_at")
    );
    sqlx::query_scalar(&sql)
        .bind(user_id)
        .bind(clerk_id)
        .fetch_optional(conn)
        .await
}

/// The sign-in update of a stored live user, when it moves the time forward.
async fn update_sign_in(
    conn: &mut PgConnection,
    clerk_id: &str,
    at_millis: Option<i64>,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let sql = format!(
        "WITH signed_in AS (SELECT COALESCE({}, now()) AS at)
         UPDATE accounts.users AS u
         SET last_signed_in_at = signed_in.at, updated_at = GREATEST(u.updated_at, now())
         FROM signed_in
         WHERE u.clerk_id = $1 AND u.deleted_at IS NULL
           AND (u.last_signed_in_at IS NULL OR u.last_signed_in_at < signed_in.at)
         RETURNING u.id, {} AS at",
        from_millis!("$2"),
        rfc3339!("u.last_signed_in_at")
    );
    sqlx::query_as(&sql)
        .bind(clerk_id)
        .bind(at_millis)
        .fetch_optional(conn)
        .await
}

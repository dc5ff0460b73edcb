//! The delivery worker: takes the due jobs of the delivery queue (`notifications.delivery_jobs`,
//! filled by [`crate::notify`]) and sends each notification to its user's devices (push) or
//! address (email) through the providers ([`crate::providers`]), recording what each send came
//! to in `notifications.deliveries`.
//!
//! - **Claiming.** The worker keeps up to [`DeliverySettings::batch`] jobs in flight, and
//!   claims due jobs (`not_before` passed, no live lease) for the slots that are free, at once
//!   when a job ends, with `FOR UPDATE SKIP LOCKED`, and gives each a lease
//!   ([`DeliverySettings::lease`]) and one more attempt in the same statement: two workers (any
//!   pods) never take the same job, and a job whose worker died is taken again once its lease
//!   has expired. A job's work is bounded to part of its lease; the worker's writes to the job
//!   name the attempt it claimed, so a worker whose lease expired changes nothing of the job.
//! - **Preferences, again.** When a job is due the user's preferences are read again: a channel
//!   or the notification's category switched off completes the job as `skipped` (reason given,
//!   no provider, no recipient); quiet hours now postpone it to their end (in the user's zone,
//!   `notifications.quiet_hours_end`), without counting an attempt.
//! - **Recipients.** Push: each of the user's devices that is neither removed nor retired, IOS
//!   through APNs and ANDROID/WEB through FCM; email: the user's address. None: `skipped`. A
//!   recipient that already has a final outcome for the notification (a retried job) is not sent
//!   to again; a device removed or retired while the job's earlier sends went out is `skipped`
//!   (checked just before its send), and one whose token changed meanwhile gets its new token.
//! - **Outcomes** ([`Delivery`], through [`deliver_with_retries`] with
//!   [`DeliverySettings::send_retries`]): `sent` only with the provider's acceptance (and its
//!   message id when it gave one); `skipped` when the provider is unconfigured; `rejected` when
//!   it refused; `failed` otherwise. A token the provider declared dead (APNs 410 `Unregistered`
//!   / 400 `BadDeviceToken`, FCM 404 `UNREGISTERED` / 400 `INVALID_ARGUMENT` about the token)
//!   **retires the device** (never sent to again) and writes `device.rejected` through the
//!   outbox ([`crate::outbox`]) in the same transaction as the retirement and its delivery
//!   record; it is relayed right after the commit (and by the relay loop otherwise).
//! - **Transient failures** (429, 5xx, timeouts, unreachable) left after the in-process retries
//!   are recorded `failed` with `will_retry` and the job is retried later (exponential backoff,
//!   at least the provider's `Retry-After`), up to [`DeliverySettings::max_attempts`] attempts;
//!   the last one's failure is final. A provider that hangs is bounded by its request timeout
//!   ([`crate::providers::settings::PROVIDER_TIMEOUT_MS`]); it holds only its own jobs' slots,
//!   and the other slots go on taking the queue's next jobs.
//! - **An address not heard of yet** (no `user.created` applied for the user: the users
//!   stream's consumer is behind the event that made the notification) puts an email job back
//!   for the backoff, as a transient failure; it is skipped on its last attempt. A user known
//!   to have no address is skipped at once.
//! - **Done.** A finished job keeps `done_at` and a summary outcome: the best of its recipients'
//!   (sent, then failed, rejected, skipped).
//!
//! # Settings
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GOSPELIB_NOTIFICATIONS_DELIVERY_POLL_MS` | 1000 | the pause before looking again when a look found fewer due jobs than free slots |
//! | `GOSPELIB_NOTIFICATIONS_DELIVERY_LEASE_SECS` | 300 | how long a claimed job is its worker's (its sends are bounded to 7/10 of it, its work to 4/5; a send that cannot end in time waits for the next attempt) |
//! | `GOSPELIB_NOTIFICATIONS_DELIVERY_BATCH` | 16 | jobs in flight at once (and per poll of `run_once`) |
//! | `GOSPELIB_NOTIFICATIONS_DELIVERY_MAX_ATTEMPTS` | 6 | attempts of a job before a transient failure is final |
//!
//! and the providers' `GOSPELIB_APNS_*`, `GOSPELIB_FCM_*`, `GOSPELIB_RESEND_*`,
//! `GOSPELIB_EMAIL_FROM` and `GOSPELIB_NOTIFICATIONS_PROVIDER_TIMEOUT_MS`
//! ([`crate::providers::settings`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::config::{ConfigError, ConfigProblem, ConfigReader, Env, Problem};
use gospelib_kit::outbox::Outbox;
use gospelib_kit::stores::PgPool;
use serde_json::json;
use sqlx::FromRow;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::outbox::{DEVICE_REJECTED, EVENTS_STREAM};
use crate::providers::{
    Delivery, EmailMessage, ProviderError, ProviderSettings, Providers, PushMessage, PushProvider,
    RetryPolicy, deliver_with_retries,
};
use crate::recipients::{self, Device, Platform};
use crate::store::{Channel, Preferences, recipient_digest};

pub const DELIVERY_POLL_MS: &str = "GOSPELIB_NOTIFICATIONS_DELIVERY_POLL_MS";
pub const DELIVERY_LEASE_SECS: &str = "GOSPELIB_NOTIFICATIONS_DELIVERY_LEASE_SECS";
pub const DELIVERY_BATCH: &str = "GOSPELIB_NOTIFICATIONS_DELIVERY_BATCH";
pub const DELIVERY_MAX_ATTEMPTS: &str = "GOSPELIB_NOTIFICATIONS_DELIVERY_MAX_ATTEMPTS";

/// The longest reason or error kept (the columns' limit).
const MAX_REASON_CHARS: usize = 1000;

/// How the delivery worker polls, leases and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// This worker's name, kept on the jobs it holds (one per process, e.g. the pod's).
    pub worker: String,
    /// The pause before looking again when a look found fewer due jobs than free slots.
    /// Default 1 s.
    pub poll_interval: Duration,
    /// How long a claimed job is its worker's before another may take it. Default 5 min.
    pub lease: Duration,
    /// Jobs in flight at once (and per poll of [`DeliveryWorker::run_once`]). Default 16.
    pub batch: u32,
    /// Attempts of a job (polls that took it) before a transient failure is final. Default 6.
    pub max_attempts: u32,
    /// The wait before a failed job's second attempt, doubled for each later one. Default 30 s.
    pub retry_base: Duration,
    /// The longest wait between a job's attempts. Default 30 min.
    pub retry_max: Duration,
    /// The in-process retries of one send ([`deliver_with_retries`]).
    pub send_retries: RetryPolicy,
    /// The deadline of one request to a provider (`GOSPELIB_NOTIFICATIONS_PROVIDER_TIMEOUT_MS`,
    /// read with the providers): with `send_retries`, how long one send may take.
    pub send_timeout: Duration,
    /// Where `device.rejected` goes. Default `gl:events:notifications`.
    pub events_stream: String,
    /// Only these users' jobs (`None`, the default: every user's). For tests sharing one
    /// database, and for draining one user's queue by hand.
    pub users: Option<Vec<Uuid>>,
}

impl DeliverySettings {
    /// The longest one send may take, its retries and waits included.
    pub fn longest_send(&self) -> Duration {
        self.send_retries.longest(self.send_timeout)
    }

    /// The worker `worker` with the default settings.
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            batch: 16,
            max_attempts: 6,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(30 * 60),
            send_retries: RetryPolicy::default(),
            send_timeout: crate::providers::DEFAULT_TIMEOUT,
            events_stream: EVENTS_STREAM.to_owned(),
            users: None,
        }
    }

    /// Reads the worker's variables (see the module's table); problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>, worker: impl Into<String>) -> Option<Self> {
        let defaults = Self::new(worker);
        let poll = reader.number(DELIVERY_POLL_MS, 1000, 10, 60_000);
        let lease = reader.number(DELIVERY_LEASE_SECS, 300, 30, 3600);
        let batch = reader.number(DELIVERY_BATCH, 16, 1, 500);
        let attempts = reader.number(DELIVERY_MAX_ATTEMPTS, 6, 1, 50);
        Some(Self {
            poll_interval: Duration::from_millis(poll?),
            lease: Duration::from_secs(lease?),
            batch: u32::try_from(batch?).ok()?,
            max_attempts: u32::try_from(attempts?).ok()?,
            ..defaults
        })
    }
}

/// What the launcher needs to deliver: the providers, built from their settings, and the
/// worker's settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub providers: Providers,
    pub settings: DeliverySettings,
}

impl DeliveryConfig {
    /// Reads the providers' and the worker's variables from `env` (every problem reported at
    /// once) and builds the providers; `worker` names this process's worker.
    pub fn from_env(env: &Env, worker: impl Into<String>) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let providers = ProviderSettings::read(&mut reader);
        let settings = DeliverySettings::read(&mut reader, worker);
        reader.finish()?;
        let present = "every value is present once finish() succeeded";
        let providers = providers.expect(present);
        let settings = DeliverySettings {
            send_timeout: providers.timeout,
            ..settings.expect(present)
        };
        let providers = Providers::from_settings(&providers).map_err(provider_problem)?;
        Ok(Self {
            providers,
            settings,
        })
    }
}

/// A provider that could not be built, as a configuration problem of its variables.
fn provider_problem(error: ProviderError) -> ConfigError {
    let variables = match &error {
        ProviderError::Key { provider, .. }
        | ProviderError::Credentials { provider, .. }
        | ProviderError::BaseUrl { provider, .. } => match *provider {
            "APNs" => "GOSPELIB_APNS_*",
            "Resend" => "GOSPELIB_RESEND_*",
            _ => "GOSPELIB_FCM_*",
        },
        ProviderError::Client(_) => "GOSPELIB_NOTIFICATIONS_PROVIDER_TIMEOUT_MS",
    };
    ConfigError {
        problems: vec![ConfigProblem {
            variable: variables.to_owned(),
            expected: "settings a delivery provider can be built from".to_owned(),
            problem: Problem::Malformed {
                shown: None,
                reason: error.to_string(),
            },
        }],
    }
}

/// What a worker did (summed over its polls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Sends the providers accepted.
    pub sent: u64,
    /// Deliveries skipped (preferences, no recipient, provider unconfigured).
    pub skipped: u64,
    /// Sends the providers refused.
    pub rejected: u64,
    /// Sends that failed for good.
    pub failed: u64,
    /// Jobs put back for a later attempt after a transient failure.
    pub retried: u64,
    /// Jobs postponed to the end of quiet hours.
    pub postponed: u64,
    /// Devices retired (their token refused for good).
    pub retired: u64,
    /// Jobs left unfinished by an error of PostgreSQL or their time running out (taken again
    /// later).
    pub errors: u64,
}

impl DeliveryStats {
    fn add(&mut self, other: &Self) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.skipped += other.skipped;
        self.rejected += other.rejected;
        self.failed += other.failed;
        self.retried += other.retried;
        self.postponed += other.postponed;
        self.retired += other.retired;
        self.errors += other.errors;
    }
}

/// A claimed job.
#[derive(Debug, Clone, FromRow)]
struct Job {
    id: i64,
    notification_id: Uuid,
    user_id: Uuid,
    channel: String,
    /// The attempt this claim is (the fence of every later write to the job).
    attempts: i32,
}

/// The notification of a job, the user's preferences, and the end of the quiet span now falls
/// in, if any.
#[derive(Debug, FromRow)]
struct Context {
    title: String,
    body: String,
    category: String,
    has_preferences: bool,
    push: Option<bool>,
    email: Option<bool>,
    account: Option<bool>,
    subscription: Option<bool>,
    study_reminders: Option<bool>,
    quiet_until: Option<String>,
}

impl Context {
    /// The user's preferences (the defaults when they have none).
    fn preferences(&self) -> Preferences {
        let defaults = Preferences::default();
        if !self.has_preferences {
            return defaults;
        }
        Preferences {
            push: self.push.unwrap_or(defaults.push),
            email: self.email.unwrap_or(defaults.email),
            account: self.account.unwrap_or(defaults.account),
            subscription: self.subscription.unwrap_or(defaults.subscription),
            study_reminders: self.study_reminders.unwrap_or(defaults.study_reminders),
            ..defaults
        }
    }

    /// Why the user does not want this notification on `channel` now, if they do not.
    fn switched_off(&self, channel: Channel) -> Option<String> {
        let preferences = self.preferences();
        let channel_on = match channel {
            Channel::Push => preferences.push,
            Channel::Email => preferences.email,
        };
        if !channel_on {
            return Some(format!(
                "{} is switched off in the user's preferences",
                channel.as_db()
            ));
        }
        let category_on = match self.category.as_str() {
            "account" => preferences.account,
            "subscription" => preferences.subscription,
            _ => preferences.study_reminders,
        };
        (!category_on).then(|| {
            format!(
                "the {} category is switched off in the user's preferences",
                self.category
            )
        })
    }
}

/// How a job ends this time.
enum JobEnd {
    /// Every recipient has a final outcome (the summary given).
    Done(&'static str),
    /// A transient failure: try again after at least this long.
    Retry {
        at_least: Option<Duration>,
        error: String,
    },
    /// Within quiet hours: due again then (RFC 3339).
    Postponed(String),
    /// Out of time with recipients left, every send so far settled for good: due again now,
    /// the attempt given back (why, for `last_error`).
    Continue(String),
}

/// One recipient of a job: a device, or the address.
struct Recipient {
    device: Option<Device>,
    /// The device token or the address.
    to: String,
}

/// The delivery worker: the pool, the providers, the outbox of `device.rejected`, and its
/// settings. Cheap to clone.
#[derive(Clone)]
pub struct DeliveryWorker {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    providers: Providers,
    outbox: Outbox,
    settings: DeliverySettings,
}

impl DeliveryWorker {
    /// A worker on `pool`, sending through `providers`, writing its events through `redis`.
    pub fn new(
        pool: PgPool,
        redis: redis::Client,
        providers: Providers,
        settings: DeliverySettings,
    ) -> Self {
        let outbox = crate::outbox::outbox(pool.clone(), redis, settings.events_stream.clone());
        Self {
            inner: Arc::new(Inner {
                pool,
                providers,
                outbox,
                settings,
            }),
        }
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.inner.settings
    }

    /// One poll: claims up to a batch of due jobs and works them (concurrently) to their end
    /// for this attempt. A job that could not be worked (PostgreSQL failed, time ran out) stays
    /// leased and is taken again when the lease expires; only a failure to claim is an error.
    pub async fn run_once(&self) -> Result<DeliveryStats, sqlx::Error> {
        let jobs = self.claim(self.inner.settings.batch as usize).await?;
        let mut stats = DeliveryStats {
            claimed: jobs.len() as u64,
            ..DeliveryStats::default()
        };
        let mut running = JoinSet::new();
        for job in jobs {
            let worker = self.clone();
            running.spawn(async move { worker.work_bounded(job).await });
        }
        while let Some(done) = running.join_next().await {
            Self::count(&mut stats, done);
        }
        Ok(stats)
    }

    /// Works jobs until `shutdown` becomes `true` (or its sender is dropped), keeping up to a
    /// batch of them in flight: a slot freed by a job that ends is filled by the next due job
    /// at once, so one slow provider (a push service that hangs for its whole timeout) holds
    /// only its own jobs' slots, not the rest of the queue. With free slots and nothing due,
    /// it looks again after the poll interval. What it had claimed when asked to stop is
    /// finished first (the launcher aborts the task after its grace; a job left then is taken
    /// again when its lease expires).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> DeliveryStats {
        let batch = self.inner.settings.batch as usize;
        let mut total = DeliveryStats::default();
        let mut running: JoinSet<DeliveryStats> = JoinSet::new();
        let mut failing = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = batch.saturating_sub(running.len());
            let mut filled = free == 0;
            if free > 0 {
                // Bounded from this side too: a silent connection must not stop the loop.
                let claimed = gospelib_kit::stores::within_deadline(
                    gospelib_kit::stores::WORKER_DEADLINE,
                    self.claim(free),
                );
                match claimed.await {
                    Ok(jobs) => {
                        if failing {
                            tracing::info!("the delivery worker reaches PostgreSQL again");
                            failing = false;
                        }
                        total.claimed += jobs.len() as u64;
                        filled = jobs.len() == free;
                        for job in jobs {
                            let worker = self.clone();
                            running.spawn(async move { worker.work_bounded(job).await });
                        }
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "the delivery worker cannot claim jobs; retrying");
                            failing = true;
                        }
                    }
                }
            }
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    Self::count(&mut total, done);
                    // Every slot freed meanwhile is refilled by one claim, not one each.
                    while let Some(done) = running.try_join_next() {
                        Self::count(&mut total, done);
                    }
                }
                _ = tokio::time::sleep(self.inner.settings.poll_interval), if !filled => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        while let Some(done) = running.join_next().await {
            Self::count(&mut total, done);
        }
        total
    }

    /// Adds a finished job's stats to `total`.
    fn count(total: &mut DeliveryStats, done: Result<DeliveryStats, tokio::task::JoinError>) {
        match done {
            Ok(job_stats) => total.add(&job_stats),
            Err(error) => {
                tracing::error!(%error, "a delivery job's task failed");
                total.errors += 1;
            }
        }
    }

    /// Takes up to `limit` due jobs: a lease and one more attempt each.
    async fn claim(&self, limit: usize) -> Result<Vec<Job>, sqlx::Error> {
        let settings = &self.inner.settings;
        sqlx::query_as(
            "UPDATE notifications.delivery_jobs j
             SET attempts = j.attempts + 1,
                 locked_until = now() + make_interval(secs => $1),
                 locked_by = $2
             WHERE j.id IN (
                 SELECT id FROM notifications.delivery_jobs
                 WHERE done_at IS NULL AND not_before <= now()
                   AND (locked_until IS NULL OR locked_until <= now())
                   AND ($3::uuid[] IS NULL OR user_id = ANY($3))
                 ORDER BY not_before, id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING j.id, j.notification_id, j.user_id, j.channel, j.attempts",
        )
        .bind(settings.lease.as_secs_f64())
        .bind(shorten(&settings.worker, 200))
        .bind(settings.users.as_deref())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
    }

    /// [`DeliveryWorker::work`] within 4/5 of the lease, its sends within 7/10 (so a send is
    /// cut short by its own deadline and recorded, never by this bound); a job that errs or runs
    /// out of time is put back for a later attempt when possible (else its lease expires).
    async fn work_bounded(&self, job: Job) -> DeliveryStats {
        let mut stats = DeliveryStats::default();
        let lease = self.inner.settings.lease;
        let bound = lease.mul_f64(0.8);
        let sends_by = tokio::time::Instant::now() + lease.mul_f64(0.7);
        let work = self.work(&job, sends_by, &mut stats);
        let error = match tokio::time::timeout(bound, work).await {
            Ok(Ok(())) => return stats,
            Ok(Err(error)) => format!("PostgreSQL: {error}"),
            Err(_) => format!("the job took longer than {bound:?}"),
        };
        tracing::warn!(job = job.id, %error, "a delivery job was left unfinished");
        stats.errors += 1;
        let wait = self.backoff(&job);
        // Bounded as the claim is: a connection gone silent would hold this slot for minutes.
        let put_back = self.put_back(&job, wait, &error);
        if let Err(error) =
            gospelib_kit::stores::within_deadline(gospelib_kit::stores::WORKER_DEADLINE, put_back)
                .await
        {
            tracing::debug!(job = job.id, %error, "the job waits for its lease to expire");
        }
        stats
    }

    /// Works one claimed job to its end for this attempt, its sends within `deadline`.
    async fn work(
        &self,
        job: &Job,
        deadline: tokio::time::Instant,
        stats: &mut DeliveryStats,
    ) -> Result<(), sqlx::Error> {
        let pool = &self.inner.pool;
        let channel = match job.channel.as_str() {
            "push" => Channel::Push,
            _ => Channel::Email,
        };
        let context: Option<Context> = sqlx::query_as(concat!(
            "SELECT n.title, n.body, n.category, p.user_id IS NOT NULL AS has_preferences,
                    p.push, p.email, p.account, p.subscription, p.study_reminders, ",
            gospelib_kit::pg_rfc3339!(
                "notifications.quiet_hours_end(p.quiet_start, p.quiet_end, p.time_zone, now())"
            ),
            " AS quiet_until
             FROM notifications.notifications n
             LEFT JOIN notifications.preferences p ON p.user_id = n.user_id
             WHERE n.id = $1 AND n.user_id = $2"
        ))
        .bind(job.notification_id)
        .bind(job.user_id)
        .fetch_optional(pool)
        .await?;
        // The notification is gone (its user erased): nothing to deliver.
        let Some(context) = context else {
            return self.finish(job, JobEnd::Done("skipped")).await;
        };
        if let Some(reason) = context.switched_off(channel) {
            return self.skip(job, channel, reason, stats).await;
        }
        if let Some(until) = context.quiet_until.clone() {
            stats.postponed += 1;
            return self.finish(job, JobEnd::Postponed(until)).await;
        }
        let recipients = self.recipients(job.user_id, channel).await?;
        let last_attempt = job.attempts >= i32::try_from(self.settings().max_attempts).unwrap_or(1);
        if recipients.is_empty()
            && matches!(channel, Channel::Email)
            && !last_attempt
            && !recipients::address_known(pool, job.user_id).await?
        {
            // Nothing heard of the user's address yet (the users stream's consumer is behind
            // the event that made this notification: a trial's start is raised from the same
            // `user.created`): asked again after the backoff, skipped only on the last attempt.
            stats.retried += 1;
            return self
                .finish(
                    job,
                    JobEnd::Retry {
                        at_least: None,
                        error: "the user's email address is not known yet".to_owned(),
                    },
                )
                .await;
        }
        if recipients.is_empty() {
            let reason = match channel {
                Channel::Push => "the user has no device to push to",
                Channel::Email => "the user has no email address",
            };
            return self.skip(job, channel, reason.to_owned(), stats).await;
        }
        // What earlier attempts of this job settled for good, by recipient digest, and whom
        // they will try again.
        let mut settled: HashMap<String, String> = HashMap::new();
        let mut failed_before: HashSet<String> = HashSet::new();
        for (digest, outcome, will_retry) in sqlx::query_as::<_, (String, String, bool)>(
            "SELECT recipient_digest, outcome, will_retry FROM notifications.deliveries
             WHERE notification_id = $1 AND channel = $2 AND recipient_digest IS NOT NULL",
        )
        .bind(job.notification_id)
        .bind(channel.as_db())
        .fetch_all(pool)
        .await?
        {
            if will_retry {
                failed_before.insert(digest);
            } else {
                settled.insert(digest, outcome);
            }
        }
        let mut outcomes: Vec<String> = settled.values().cloned().collect();
        let mut retry: Option<(Option<Duration>, String)> = None;
        // Those not tried yet go first: a provider that keeps failing one device must not
        // hold the user's others back attempt after attempt.
        let mut recipients: Vec<Recipient> = recipients
            .into_iter()
            .filter(|recipient| !settled.contains_key(&recipient_digest(&recipient.to)))
            .collect();
        recipients
            .sort_by_key(|recipient| failed_before.contains(&recipient_digest(&recipient.to)));
        let longest_send = self.settings().longest_send();
        let (mut sent_one, mut out_of_time) = (false, false);
        // The recipients this attempt sent to (or tried), by digest.
        let mut tried: HashSet<String> = HashSet::new();
        for mut recipient in recipients {
            // A send is never cut short by the job's own bound (what it did would go
            // unrecorded, and the job be tried again forever): once one send has gone out, the
            // rest wait for the next attempt unless the longest send still fits.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if sent_one && left < longest_send {
                out_of_time = true;
                break;
            }
            // The user's devices were read before the first send: one removed (or retired, or
            // the user erased) while the sends before its turn went out is not sent to, and one
            // whose token its app refreshed meanwhile is sent to at its new token.
            if sent_one && let Some(device) = &mut recipient.device {
                match recipients::current_token(pool, job.user_id, device).await? {
                    // A new token already sent to in this job (another device row holds it
                    // now): not twice.
                    Some(token)
                        if token != recipient.to
                            && (settled.contains_key(&recipient_digest(&token))
                                || tried.contains(&recipient_digest(&token))) =>
                    {
                        continue;
                    }
                    Some(token) => {
                        device.token = token.clone();
                        recipient.to = token;
                    }
                    None => {
                        let skipped = Delivery::Skipped {
                            reason: "the device was removed during the job".to_owned(),
                        };
                        let to = Some((self.push_provider(device).name(), recipient.to.as_str()));
                        record(pool, job, channel, to, &skipped, 1, false).await?;
                        stats.skipped += 1;
                        outcomes.push(outcome_of(&skipped).to_owned());
                        continue;
                    }
                }
            }
            // The re-check above waited on the database: what is left is measured again, and
            // the send waits for the next attempt unless it still fits whole.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if sent_one && left < longest_send {
                out_of_time = true;
                break;
            }
            sent_one = true;
            tried.insert(recipient_digest(&recipient.to));
            let (provider, delivery, attempts) =
                self.send_to(job, &context, &recipient, left).await;
            let will_retry = delivery.is_retryable() && !last_attempt;
            match &delivery {
                Delivery::Sent { .. } => stats.sent += 1,
                Delivery::Skipped { .. } => stats.skipped += 1,
                Delivery::Rejected { .. } => stats.rejected += 1,
                Delivery::Failed { .. } if will_retry => {}
                Delivery::Failed { .. } => stats.failed += 1,
            }
            match (&delivery, &recipient.device) {
                (
                    Delivery::Rejected {
                        retire_token: true,
                        reason,
                    },
                    Some(device),
                ) => {
                    if self
                        .retire(job, device, provider, &delivery, attempts, reason)
                        .await?
                    {
                        stats.retired += 1;
                    }
                }
                _ => {
                    let to = Some((provider, recipient.to.as_str()));
                    record(pool, job, channel, to, &delivery, attempts, will_retry).await?;
                }
            }
            if will_retry {
                if let Delivery::Failed {
                    retry_after,
                    reason,
                    ..
                } = &delivery
                {
                    let at_least = retry.as_ref().and_then(|r| r.0).max(*retry_after);
                    retry = Some((at_least, reason.clone()));
                }
            } else {
                outcomes.push(outcome_of(&delivery).to_owned());
            }
        }
        let left_for_later =
            "the job's time ran out: its other recipients are sent to on its next attempt";
        let end = match (retry, out_of_time) {
            // Something failed: the next attempt comes after the backoff, and counts.
            (Some((at_least, _)), true) => JobEnd::Retry {
                at_least,
                error: left_for_later.to_owned(),
            },
            (Some((at_least, error)), false) => JobEnd::Retry { at_least, error },
            // Every send so far settled for good: the rest go at once, and this attempt is
            // given back (it made progress; recipients are finite, so this ends).
            (None, true) => JobEnd::Continue(left_for_later.to_owned()),
            (None, false) => JobEnd::Done(summary(&outcomes)),
        };
        if matches!(end, JobEnd::Retry { .. }) {
            stats.retried += 1;
        }
        self.finish(job, end).await
    }

    /// Completes `job` as skipped for `reason` (no provider, no recipient).
    async fn skip(
        &self,
        job: &Job,
        channel: Channel,
        reason: String,
        stats: &mut DeliveryStats,
    ) -> Result<(), sqlx::Error> {
        let skipped = Delivery::Skipped { reason };
        record(&self.inner.pool, job, channel, None, &skipped, 1, false).await?;
        stats.skipped += 1;
        self.finish(job, JobEnd::Done("skipped")).await
    }

    /// Where `user`'s notifications go on `channel`: their live devices, or their address.
    async fn recipients(
        &self,
        user: Uuid,
        channel: Channel,
    ) -> Result<Vec<Recipient>, sqlx::Error> {
        let pool = &self.inner.pool;
        Ok(match channel {
            Channel::Push => recipients::active_devices(pool, user)
                .await?
                .into_iter()
                .map(|device| Recipient {
                    to: device.token.clone(),
                    device: Some(device),
                })
                .collect(),
            Channel::Email => recipients::address(pool, user)
                .await?
                .into_iter()
                .map(|to| Recipient { device: None, to })
                .collect(),
        })
    }

    /// Sends `job`'s notification to `recipient`, with the in-process retries: the provider's
    /// name, the outcome, and how many attempts it took.
    async fn send_to(
        &self,
        job: &Job,
        context: &Context,
        recipient: &Recipient,
        within: Duration,
    ) -> (&'static str, Delivery, u32) {
        match &recipient.device {
            Some(device) => {
                let push = PushMessage {
                    title: context.title.clone(),
                    body: context.body.clone(),
                    category: context.category.clone(),
                    data: BTreeMap::from([(
                        "notification_id".to_owned(),
                        job.notification_id.to_string(),
                    )]),
                };
                let provider = self.push_provider(device);
                let (delivery, attempts) = self
                    .send(within, || provider.send_push(&device.token, &push))
                    .await;
                (provider.name(), delivery, attempts)
            }
            None => {
                let email = EmailMessage {
                    to: recipient.to.clone(),
                    subject: context.title.clone(),
                    text: context.body.clone(),
                    html: None,
                    idempotency_key: Some(format!(
                        "{}/{}",
                        job.notification_id,
                        crate::store::recipient_digest(&recipient.to)
                    )),
                };
                let provider = &self.inner.providers.email;
                let (delivery, attempts) = self.send(within, || provider.send_email(&email)).await;
                (provider.name(), delivery, attempts)
            }
        }
    }

    /// The provider of `device`'s platform.
    fn push_provider(&self, device: &Device) -> &dyn PushProvider {
        let providers = &self.inner.providers;
        match Platform::from_db(&device.platform) {
            Some(Platform::Ios) => providers.apns.as_ref(),
            _ => providers.fcm.as_ref(),
        }
    }

    /// One send with the in-process retries: the outcome and how many attempts it took.
    async fn send<'a, F>(&self, within: Duration, mut send: F) -> (Delivery, u32)
    where
        F: FnMut() -> gospelib_kit::stores::BoxFuture<'a, Delivery>,
    {
        let mut attempts = 0;
        let sending = deliver_with_retries(&self.inner.settings.send_retries, |attempt| {
            attempts = attempt;
            send()
        });
        let delivery = match tokio::time::timeout(within, sending).await {
            Ok(delivery) => delivery,
            // It may have gone out: tried again on the job's next attempt. Its idempotency key
            // keeps a second email from going out; a push's collapse id only replaces a copy
            // still shown (one the user dismissed meanwhile shows again: APNs and FCM take no
            // idempotency key, and not trying again would lose the push when it did not go).
            Err(_) => Delivery::retryable(
                format!("no final answer within the job's time ({within:?} were left)"),
                None,
            ),
        };
        (delivery, attempts.max(1))
    }

    /// Retires `device` (its token refused for good), records the rejection and writes
    /// `device.rejected`, in one transaction, then relays the event; whether the device was
    /// retired now (not by another worker, nor removed meanwhile).
    async fn retire(
        &self,
        job: &Job,
        device: &Device,
        provider: &str,
        delivery: &Delivery,
        attempts: u32,
        reason: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.inner.pool.begin().await?;
        let to = Some((provider, device.token.as_str()));
        record(&mut *tx, job, Channel::Push, to, delivery, attempts, false).await?;
        let reason = shorten(reason, MAX_REASON_CHARS);
        let retired =
            recipients::retire_device(&mut tx, device.device_id, &device.token, &reason).await?;
        if let Some((user_id, occurred_at)) = &retired {
            self.inner
                .outbox
                .append(
                    &mut tx,
                    DEVICE_REJECTED,
                    json!({
                        "user_id": user_id,
                        "occurred_at": occurred_at,
                        "device_id": device.device_id,
                        "reason": reason,
                    }),
                )
                .await?;
        }
        tx.commit().await?;
        if retired.is_some() {
            tracing::info!(
                user_id = %job.user_id,
                device_id = %device.device_id,
                %reason,
                "a device's token was refused for good; the device is retired"
            );
            self.inner.outbox.publish_in_background();
        }
        Ok(retired.is_some())
    }

    /// The wait before `job`'s next attempt: `retry_base · 2^(attempts-1)`, at most `retry_max`.
    fn backoff(&self, job: &Job) -> Duration {
        let settings = &self.inner.settings;
        let exponent = u32::try_from(job.attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
        settings
            .retry_base
            .saturating_mul(1u32 << exponent)
            .min(settings.retry_max)
    }

    /// Puts `job` back, due after `wait`, its lease released.
    async fn put_back(&self, job: &Job, wait: Duration, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE notifications.delivery_jobs
             SET not_before = now() + make_interval(secs => $4), locked_until = NULL,
                 locked_by = NULL, last_error = $5
             WHERE id = $1 AND attempts = $2 AND locked_by = $3 AND done_at IS NULL",
        )
        .bind(job.id)
        .bind(job.attempts)
        .bind(shorten(&self.inner.settings.worker, 200))
        .bind(wait.as_secs_f64())
        .bind(shorten(error, MAX_REASON_CHARS))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Ends this attempt of `job` (only if it is still this worker's attempt).
    async fn finish(&self, job: &Job, end: JobEnd) -> Result<(), sqlx::Error> {
        let pool = &self.inner.pool;
        let worker = shorten(&self.inner.settings.worker, 200);
        let fence = "WHERE id = $1 AND attempts = $2 AND locked_by = $3 AND done_at IS NULL";
        let done = match end {
            JobEnd::Done(outcome) => {
                sqlx::query(&format!(
                    "UPDATE notifications.delivery_jobs
                     SET done_at = now(), outcome = $4, locked_until = NULL {fence}"
                ))
                .bind(job.id)
                .bind(job.attempts)
                .bind(&worker)
                .bind(outcome)
                .execute(pool)
                .await?
            }
            // Quiet hours are no failure: the attempt is given back.
            JobEnd::Postponed(until) => {
                // The end read when the job was taken, or the end of the quiet hours as they
                // are now if earlier (changed or cleared meanwhile, while this worker held the
                // job and their change could not release it).
                sqlx::query(&format!(
                    "UPDATE notifications.delivery_jobs
                     SET not_before = LEAST($4::timestamptz, coalesce(
                             (SELECT notifications.quiet_hours_end(
                                         p.quiet_start, p.quiet_end, p.time_zone, now())
                              FROM notifications.preferences p
                              WHERE p.user_id = delivery_jobs.user_id),
                             now())),
                         attempts = attempts - 1,
                         last_error = NULL, locked_until = NULL, locked_by = NULL {fence}"
                ))
                .bind(job.id)
                .bind(job.attempts)
                .bind(&worker)
                .bind(until)
                .execute(pool)
                .await?
            }
            JobEnd::Continue(why) => {
                sqlx::query(&format!(
                    "UPDATE notifications.delivery_jobs
                     SET not_before = now(), attempts = attempts - 1, last_error = $4,
                         locked_until = NULL, locked_by = NULL {fence}"
                ))
                .bind(job.id)
                .bind(job.attempts)
                .bind(&worker)
                .bind(shorten(&why, MAX_REASON_CHARS))
                .execute(pool)
                .await?
            }
            JobEnd::Retry { at_least, error } => {
                // A provider's `Retry-After` is heeded up to the longest wait between attempts.
                let asked = at_least.unwrap_or_default().min(self.settings().retry_max);
                let wait = self.backoff(job).max(asked);
                return self.put_back(job, wait, &error).await;
            }
        };
        if done.rows_affected() == 0 {
            tracing::warn!(
                job = job.id,
                "a delivery job's lease expired before its worker finished it"
            );
        }
        Ok(())
    }
}

/// The outcome column of `delivery`.
fn outcome_of(delivery: &Delivery) -> &'static str {
    match delivery {
        Delivery::Sent { .. } => "sent",
        Delivery::Skipped { .. } => "skipped",
        Delivery::Rejected { .. } => "rejected",
        Delivery::Failed { .. } => "failed",
    }
}

/// A finished job's outcome: the best of its recipients' (sent, failed, rejected, skipped).
fn summary(outcomes: &[String]) -> &'static str {
    ["sent", "failed", "rejected"]
        .into_iter()
        .find(|best| outcomes.iter().any(|outcome| outcome == best))
        .unwrap_or("skipped")
}

/// `text` cut to `limit` characters, as PostgreSQL can store it.
fn shorten(text: &str, limit: usize) -> String {
    // PostgreSQL's text holds no NUL, and a provider's answer may carry one (raw in an error
    // body, or `\u0000` in JSON): kept, the row could not be written, on any attempt, and a
    // send that went through would be sent again. Control characters read as spaces.
    text.chars()
        .take(limit)
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// Records what one delivery of `job` came to: through the provider to the recipient `to`
/// (`None` when none was reached: a skip). `sent` only for [`Delivery::Sent`], with the
/// provider's message id; `will_retry`: a failure the queue tries again.
async fn record<'c, E>(
    executor: E,
    job: &Job,
    channel: Channel,
    to: Option<(&str, &str)>,
    delivery: &Delivery,
    attempts: u32,
    will_retry: bool,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let (message_id, reason) = match delivery {
        Delivery::Sent {
            provider_message_id,
        } => (provider_message_id.as_deref(), None),
        Delivery::Skipped { reason }
        | Delivery::Rejected { reason, .. }
        | Delivery::Failed { reason, .. } => (None, Some(reason.as_str())),
    };
    sqlx::query(
        "INSERT INTO notifications.deliveries
             (notification_id, user_id, channel, provider, recipient_digest, outcome,
              provider_message_id, reason, attempts, will_retry)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(job.notification_id)
    .bind(job.user_id)
    .bind(channel.as_db())
    .bind(to.map(|(provider, _)| shorten(provider, 40)))
    .bind(to.map(|(_, recipient)| recipient_digest(recipient)))
    .bind(outcome_of(delivery))
    .bind(message_id.map(|id| shorten(id, 300)))
    .bind(reason.map(|reason| shorten(reason, MAX_REASON_CHARS)))
    .bind(i32::try_from(attempts.max(1)).unwrap_or(i32::MAX))
    .bind(will_retry)
    .execute(executor)
    .await?;
    Ok(())
}

/// Runs a delivery worker on `pool` through `providers` until `shutdown` fires (the launcher
/// spawns one per process running the notifications part, beside [`crate::relay_outbox`]);
/// `redis` carries its `device.rejected` events. Returns what it did.
pub async fn run_delivery_worker(
    pool: PgPool,
    redis: redis::Client,
    providers: Providers,
    settings: DeliverySettings,
    shutdown: watch::Receiver<bool>,
) -> DeliveryStats {
    DeliveryWorker::new(pool, redis, providers, settings)
        .run(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_the_best_outcome() {
        let of = |outcomes: &[&str]| {
            summary(&outcomes.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(of(&[]), "skipped");
        assert_eq!(of(&["skipped", "rejected"]), "rejected");
        assert_eq!(of(&["rejected", "failed"]), "failed");
        assert_eq!(of(&["failed", "sent", "skipped"]), "sent");
    }

    #[test]
    fn settings_are_read_with_defaults_and_bounds() {
        let settings = DeliveryConfig::from_env(&Env::default(), "w").unwrap();
        assert_eq!(settings.settings, DeliverySettings::new("w"));
        assert!(format!("{:?}", settings.providers).contains("apns"));
        let env = Env::from_pairs([
            (DELIVERY_POLL_MS, "250"),
            (DELIVERY_LEASE_SECS, "60"),
            (DELIVERY_BATCH, "4"),
            (DELIVERY_MAX_ATTEMPTS, "3"),
        ]);
        let settings = DeliveryConfig::from_env(&env, "w").unwrap().settings;
        assert_eq!(settings.poll_interval, Duration::from_millis(250));
        assert_eq!(settings.lease, Duration::from_secs(60));
        assert_eq!((settings.batch, settings.max_attempts), (4, 3));
        let bad = Env::from_pairs([(DELIVERY_LEASE_SECS, "5"), (DELIVERY_BATCH, "many")]);
        let error = DeliveryConfig::from_env(&bad, "w").unwrap_err();
        let variables: Vec<&str> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(variables, [DELIVERY_LEASE_SECS, DELIVERY_BATCH]);
    }

    #[test]
    fn preferences_decide_by_channel_then_category() {
        let context = |push, account| Context {
            title: String::new(),
            body: String::new(),
            category: "account".to_owned(),
            has_preferences: true,
            push: Some(push),
            email: Some(true),
            account: Some(account),
            subscription: Some(true),
            study_reminders: Some(false),
            quiet_until: None,
        };
        assert_eq!(context(true, true).switched_off(Channel::Push), None);
        assert!(
            context(false, true)
                .switched_off(Channel::Push)
                .unwrap()
                .starts_with("push is switched off")
        );
        assert_eq!(context(false, true).switched_off(Channel::Email), None);
        assert!(
            context(true, false)
                .switched_off(Channel::Email)
                .unwrap()
                .contains("account category")
        );
        let reminder = Context {
            category: "study_reminder".to_owned(),
            has_preferences: false,
            ..context(true, true)
        };
        // Without preferences, the defaults: reminders are off.
        assert!(reminder.switched_off(Channel::Push).is_some());
    }
}

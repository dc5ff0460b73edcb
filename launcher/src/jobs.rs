//! `gospelib jobs …`: work run on a schedule (CronJobs in Phase 2, cron or a timer in Phase 1),
//! which does its part and exits. Each job is idempotent, so a run repeated or overlapping
//! another does no harm.
//!
//! - `reminders`: today's study reminders ([`gospelib_notifications::reminders`]); needs
//!   `GOSPELIB_PG_URL`, and announces each reminder live when `GOSPELIB_REDIS_URL` is set.

use anyhow::Context;
use gospelib_kit::config::{ConfigReader, Env};
use gospelib_kit::live::LiveEvents;
use gospelib_kit::stores::{postgres_pool, redis_client};
use gospelib_kit::time::{now_secs, rfc3339};
use gospelib_notifications::reminders::{DEFAULT_HOUR, make_reminders};

/// The settings of `gospelib jobs reminders`.
pub(crate) struct ReminderSettings {
    postgres: url::Url,
    redis: Option<url::Url>,
    hour: u32,
}

pub(crate) fn reminder_settings(env: &Env) -> anyhow::Result<ReminderSettings> {
    let mut reader = ConfigReader::new(env);
    let postgres = reader.required_url(
        "GOSPELIB_PG_URL",
        "postgres://gospelib@127.0.0.1:25432/gospelib",
        &["postgres", "postgresql"],
    );
    let redis = reader
        .raw("GOSPELIB_REDIS_URL")
        .is_some()
        .then(|| {
            reader.required_url(
                "GOSPELIB_REDIS_URL",
                "redis://127.0.0.1:26379",
                &["redis", "rediss"],
            )
        })
        .flatten();
    let hour = reader.number("GOSPELIB_REMINDER_HOUR", DEFAULT_HOUR.into(), 0, 23);
    reader.finish()?;
    Ok(ReminderSettings {
        postgres: postgres.expect("present once finish() succeeded"),
        redis,
        hour: hour.expect("present once finish() succeeded") as u32,
    })
}

pub async fn run_reminders(env: &Env) -> anyhow::Result<()> {
    let job = ReminderJob::new(env)?;
    job.run().await
}

/// `gospelib jobs reminders --every MINUTES`: a run now, then one every `period` until SIGTERM
/// or SIGINT. A failed run is logged and the next one tried (the runs are idempotent per user
/// and local day, so a missed one is made up by the next).
pub async fn run_reminders_every(env: &Env, period: std::time::Duration) -> anyhow::Result<()> {
    let job = ReminderJob::new(env)?;
    // Listened for from the start: a signal during a run ends the job once the run is done.
    let stop = gospelib_kit::server::shutdown_signal();
    tokio::pin!(stop);
    loop {
        if let Err(error) = job.run().await {
            tracing::error!(
                error = format!("{error:#}"),
                "study reminders not made: tried again at the next run"
            );
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(period) => {}
        }
    }
    Ok(())
}

/// What a run of the reminders job makes them with.
struct ReminderJob {
    pool: sqlx::PgPool,
    live: Option<LiveEvents>,
    hour: u32,
}

impl ReminderJob {
    fn new(env: &Env) -> anyhow::Result<Self> {
        let settings = reminder_settings(env)?;
        let pool = postgres_pool(&settings.postgres, 2).context("PostgreSQL URL")?;
        let live = settings
            .redis
            .as_ref()
            .map(redis_client)
            .transpose()
            .context("Redis URL")?
            .map(LiveEvents::new);
        Ok(Self {
            pool,
            live,
            hour: settings.hour,
        })
    }

    /// Makes today's reminders, printing the report as JSON.
    async fn run(&self) -> anyhow::Result<()> {
        let report = make_reminders(
            &self.pool,
            self.live.as_ref(),
            &rfc3339(now_secs()),
            self.hour,
        )
        .await
        .context("making study reminders")?;
        tracing::info!(?report, "study reminders made");
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    }
}

//! `trial.ending`: a periodic sweep announces, once per trial, that a trial ends soon.
//!
//! [`sweep_trials_ending`] takes every trial that is still running (`source = 'trial'`,
//! `status = 'trialing'`), has not been announced (`trial_ending_announced_at` null), ends
//! after `now` but within [`TrialEndingSettings::within`] of it (72 hours by default), and whose
//! user pays for no plan (no Stripe subscription in force: `active`, `trialing` or `past_due`,
//! its period not over). For each, in one transaction, it sets `trial_ending_announced_at` and
//! appends `trial.ending` to the billing outbox (`{"event_id", "type", "user_id",
//! "occurred_at", "plan", "trial_end"}`, `trial_end` in RFC 3339 as in `trial.started`,
//! `occurred_at` the sweep's time): the event exists if and only if the trial is marked.
//!
//! - **Once per trial**, however many processes sweep at once: rows are taken `FOR UPDATE SKIP
//!   LOCKED` and updated only while still unannounced ([`store::announce_trials_ending`]), so
//!   concurrent sweeps take disjoint trials and a second sweep finds nothing left.
//! - A trial whose user starts paying before the sweep reaches it is never announced; one
//!   that was announced is not taken back (a user paying after the announcement just has an
//!   outdated reminder). A trial shorter than the window is announced at the first sweep after
//!   it starts.
//! - Trials are taken in batches of [`BATCH`], each its own transaction.
//!
//! [`run_trial_ending_sweep`] runs the sweep every [`TrialEndingSettings::every`] (10 minutes
//! by default) until its shutdown signal, publishing what each sweep wrote right after it (the
//! outbox relay picks up whatever it could not).

use std::time::Duration;

use gospelib_kit::outbox::Outbox;
use gospelib_kit::stores::PgPool;
use tokio::sync::watch;

use crate::events::{self, BillingEvent, DEFAULT_EVENTS_STREAM};
use crate::store;
use crate::time::now_secs;

/// How long before its end a trial is announced, by default.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(72 * 3600);

/// How often the sweep runs, by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10 * 60);

/// How many trials one transaction of the sweep takes.
pub const BATCH: i64 = 100;

/// When trials are announced and where their events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialEndingSettings {
    /// A trial is announced once its end is at most this far away ([`DEFAULT_WITHIN`]).
    pub within: Duration,
    /// How often the sweep runs ([`DEFAULT_EVERY`]).
    pub every: Duration,
    /// Where billing's events go (`gl:events:billing`).
    pub events_stream: String,
}

impl Default for TrialEndingSettings {
    fn default() -> Self {
        Self {
            within: DEFAULT_WITHIN,
            every: DEFAULT_EVERY,
            events_stream: DEFAULT_EVENTS_STREAM.to_owned(),
        }
    }
}

/// Announces every trial ending within `within` of `now` (Unix seconds) not announced yet, one
/// `trial.ending` per trial appended to `outbox` in the transaction that marks it (see the
/// module's description); returns how many it announced. Publishing is the caller's.
pub async fn sweep_trials_ending(
    pool: &PgPool,
    outbox: &Outbox,
    now: i64,
    within: Duration,
) -> Result<usize, sqlx::Error> {
    let within_secs = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
    let mut announced = 0;
    loop {
        let mut tx = pool.begin().await?;
        let trials = store::announce_trials_ending(&mut tx, now, within_secs, BATCH).await?;
        for trial in &trials {
            let event = BillingEvent::TrialEnding {
                user_id: trial.user_id,
                plan: trial.plan.clone(),
                trial_end: trial.trial_end.clone(),
                occurred_at: trial.announced_at.clone(),
            };
            events::append(&mut tx, outbox, &event).await?;
        }
        tx.commit().await?;
        for trial in &trials {
            tracing::info!(user_id = %trial.user_id, plan = %trial.plan, trial_end = %trial.trial_end, "trial ending announced");
        }
        announced += trials.len();
        if i64::try_from(trials.len()).unwrap_or(i64::MAX) < BATCH {
            return Ok(announced);
        }
    }
}

/// Runs [`sweep_trials_ending`] every `settings.every` (the first right away) until
/// `shutdown` fires (the launcher spawns it), publishing what each sweep wrote. Failures are
/// logged (a warning when the sweep starts failing, then quietly until it works again) and
/// retried on the next tick.
pub async fn run_trial_ending_sweep(
    pool: PgPool,
    redis: redis::Client,
    settings: TrialEndingSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let outbox = events::outbox(pool.clone(), redis, settings.events_stream.clone());
    let mut ticks = tokio::time::interval(settings.every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = ticks.tick() => {}
        }
        match sweep_trials_ending(&pool, &outbox, now_secs(), settings.within).await {
            Ok(announced) => {
                if failing {
                    tracing::info!(announced, "the trial-ending sweep works again");
                }
                failing = false;
                if announced > 0 {
                    outbox.publish().await;
                }
            }
            Err(error) if failing => {
                tracing::debug!(%error, "the trial-ending sweep still fails");
            }
            Err(error) => {
                tracing::warn!(%error, "the trial-ending sweep failed; retried on the next tick");
                failing = true;
            }
        }
    }
    tracing::info!("the trial-ending sweep stopped");
}

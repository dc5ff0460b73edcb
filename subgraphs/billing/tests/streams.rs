//! The kit's Redis Streams consumer runner (`gospelib_kit::streams`, used by billing's trial
//! consumer) against the stack's Redis: a consumer killed mid-batch loses nothing (restarted
//! under its name, or claimed by another), an idempotent handler applies nothing twice, a
//! poison entry reaches the dead-letter stream after N attempts (a user's deletion never does:
//! it is retried until applied), and the runner stops on its signal even while Redis is
//! unreachable.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gospelib_kit::streams::{
    ConsumerSettings, ConsumerStats, Handler, HandlerError, StreamEntry, handler_fn, run_consumer,
};
use support::*;
use tokio::sync::watch;

/// What an idempotent handler did: each `n` applied once, and every call.
#[derive(Default)]
struct Effects {
    applied: Vec<String>,
    calls: BTreeMap<String, u32>,
}

type Shared = Arc<Mutex<Effects>>;

fn settings(stream: &str, consumer: &str) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(stream, "g", consumer);
    settings.batch = 8;
    settings.block = Duration::from_millis(100);
    settings.claim_idle = Duration::from_millis(400);
    settings.claim_every = Duration::from_millis(100);
    settings.handler_timeout = Duration::from_millis(300);
    settings.retry_pause = Duration::from_millis(100);
    settings
}

async fn add_entries(stream: &str, range: std::ops::Range<u32>) {
    let mut connection = redis_connection().await;
    for n in range {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

/// A consumer whose handler applies each `n` once; from its `hang_at`-th call on (if any) it
/// never returns, like a process that died mid-batch.
fn start(
    stream: &str,
    consumer: &str,
    effects: &Shared,
    hang_at: Option<u32>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<ConsumerStats>) {
    let effects = effects.clone();
    let calls = Arc::new(Mutex::new(0u32));
    let handler = handler_fn(move |entry: StreamEntry| {
        let effects = effects.clone();
        let calls = calls.clone();
        async move {
            let call = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            if hang_at.is_some_and(|at| call >= at) {
                std::future::pending::<()>().await;
            }
            let n = entry.field("n").unwrap_or_default().to_owned();
            let mut effects = effects.lock().unwrap();
            *effects.calls.entry(n.clone()).or_default() += 1;
            if !effects.applied.contains(&n) {
                effects.applied.push(n);
            }
            Ok(())
        }
    });
    let mut settings = settings(stream, consumer);
    // The hanging handler must hang for good (its timeout would otherwise end the call).
    if hang_at.is_some() {
        settings.handler_timeout = Duration::from_secs(3600);
    }
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(redis(), settings, handler, shutdown));
    (stop, task)
}

async fn delete(keys: &[&str]) {
    let mut connection = redis_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut connection)
        .await
        .unwrap();
}

fn all(range: std::ops::Range<u32>) -> BTreeSet<String> {
    range.map(|n| n.to_string()).collect()
}

async fn killed_mid_batch_then(restart_as: &str) -> ConsumerStats {
    let stream = format!("gl:test:streams:{}", unique());
    add_entries(&stream, 0..30).await;
    let effects = Shared::default();

    // The first consumer handles 10 entries, then hangs in the 11th (of its second batch).
    let (_stop, first) = start(&stream, "a", &effects, Some(11));
    eventually("the first consumer is stuck", || async {
        effects.lock().unwrap().applied.len() == 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.abort(); // killed: its taken entries stay pending with it
    let _ = first.await;
    assert_eq!(effects.lock().unwrap().applied.len(), 10);

    add_entries(&stream, 30..40).await;
    let (stop, second) = start(&stream, restart_as, &effects, None);
    eventually("every entry is applied", || async {
        effects.lock().unwrap().applied.len() == 40
    })
    .await;
    eventually("the group is caught up", || group_caught_up(&stream, "g")).await;
    stop.send(true).unwrap();
    let stats = second.await.unwrap();
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.acknowledged, 30);

    let (applied, count) = {
        let effects = effects.lock().unwrap();
        (
            effects
                .applied
                .iter()
                .cloned()
                .collect::<BTreeSet<String>>(),
            effects.applied.len(),
        )
    };
    assert_eq!(applied.len(), count, "nothing applied twice");
    assert_eq!(applied, all(0..40), "nothing lost");
    delete(&[&stream]).await;
    stats
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_and_restarted_under_its_name_loses_nothing() {
    let stats = killed_mid_batch_then("a").await;
    // Its own pending entries are resumed as its own, not claimed after `claim_idle`.
    assert_eq!(stats.claimed, 0, "{stats:?}");
}

#[tokio::test]
async fn another_consumer_claims_what_a_killed_one_took() {
    let stats = killed_mid_batch_then("b").await;
    assert!(stats.claimed > 0, "{stats:?}");
}

/// A batch's entries wait their turn behind a slow handler while their idle clocks run, so
/// another consumer claims those not begun; the first leaves them to it. No entry is handled
/// by two consumers (before, every claimed entry was handled twice, at once).
#[tokio::test]
async fn entries_of_a_slow_batch_that_another_consumer_claims_are_handled_once() {
    let stream = format!("gl:test:streams:{}", unique());
    add_entries(&stream, 0..8).await;
    let effects = Shared::default();
    let begun = Arc::new(Mutex::new(0u32));
    // "a" takes 250 ms an entry (within its 300 ms timeout): its batch of 8 takes 2 s, far
    // past `claim_idle` (400 ms).
    let slow = {
        let (effects, begun) = (effects.clone(), begun.clone());
        handler_fn(move |entry: StreamEntry| {
            let (effects, begun) = (effects.clone(), begun.clone());
            async move {
                *begun.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
                let n = entry.field("n").unwrap_or_default().to_owned();
                let mut effects = effects.lock().unwrap();
                *effects.calls.entry(n.clone()).or_default() += 1;
                effects.applied.push(n);
                Ok(())
            }
        })
    };
    let (stop_a, shutdown) = watch::channel(false);
    let a = tokio::spawn(run_consumer(
        redis(),
        settings(&stream, "a"),
        slow,
        shutdown,
    ));
    eventually("a has read its batch", || async {
        *begun.lock().unwrap() > 0
    })
    .await;
    let (stop_b, b) = start(&stream, "b", &effects, None);
    eventually("the group is caught up", || group_caught_up(&stream, "g")).await;
    // "a" has looked at every entry of its batch: it begins none past this point.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_a.send(true).unwrap();
    stop_b.send(true).unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());

    let calls = effects.lock().unwrap().calls.clone();
    assert_eq!(
        calls,
        (0..8)
            .map(|n| (n.to_string(), 1))
            .collect::<BTreeMap<_, _>>(),
        "each entry handled once: {a:?} {b:?}"
    );
    assert!(b.claimed > 0 && a.left_to_others > 0, "{a:?} {b:?}");
    assert_eq!(a.acknowledged + b.acknowledged, 8, "{a:?} {b:?}");
    delete(&[&stream]).await;
}

/// A store down for longer than `max_deliveries` retries (a failover of some minutes) does not
/// dead-letter what it delays: young entries are retried until the store is back, then applied.
#[tokio::test]
async fn an_outage_past_max_deliveries_delays_entries_without_dead_lettering_them() {
    let stream = format!("gl:test:streams:{}", unique());
    let dead = format!("{stream}:dead");
    add_entries(&stream, 0..2).await;
    let store_down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let effects = Shared::default();
    let handler = {
        let (effects, store_down) = (effects.clone(), store_down.clone());
        handler_fn(move |entry: StreamEntry| {
            let (effects, store_down) = (effects.clone(), store_down.clone());
            async move {
                let n = entry.field("n").unwrap_or_default().to_owned();
                let mut effects = effects.lock().unwrap();
                *effects.calls.entry(n.clone()).or_default() += 1;
                if store_down.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(HandlerError::Retry("PostgreSQL: connection refused".into()));
                }
                effects.applied.push(n);
                Ok(())
            }
        })
    };
    let mut settings = settings(&stream, "a");
    settings.max_deliveries = 2;
    settings.claim_idle = Duration::from_millis(150);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(redis(), settings, handler, shutdown));

    eventually("each entry is tried past max_deliveries", || async {
        let effects = effects.lock().unwrap();
        ["0", "1"]
            .iter()
            .all(|n| effects.calls.get(*n).is_some_and(|calls| *calls > 3))
    })
    .await;
    store_down.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually("the group is caught up", || group_caught_up(&stream, "g")).await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!((stats.acknowledged, stats.dead_lettered), (2, 0));
    assert_eq!(
        effects
            .lock()
            .unwrap()
            .applied
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        all(0..2)
    );
    assert_eq!(gospelib_kit::test_stack::stream_length(&dead).await, 0);
}

#[tokio::test]
async fn a_poison_entry_reaches_the_dead_letter_stream_after_n_attempts() {
    let stream = format!("gl:test:streams:{}", unique());
    let dead = format!("{stream}:dead");
    add_entries(&stream, 0..3).await;
    let mut connection = redis_connection().await;
    let poison_id: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("n")
        .arg("poison")
        .query_async(&mut connection)
        .await
        .unwrap();
    let rejected_id: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("n")
        .arg("malformed")
        .query_async(&mut connection)
        .await
        .unwrap();
    add_entries(&stream, 3..6).await;

    let effects = Shared::default();
    let handler = {
        let effects = effects.clone();
        handler_fn(move |entry: StreamEntry| {
            let effects = effects.clone();
            async move {
                let n = entry.field("n").unwrap_or_default().to_owned();
                let mut effects = effects.lock().unwrap();
                *effects.calls.entry(n.clone()).or_default() += 1;
                match n.as_str() {
                    "poison" => Err(HandlerError::Retry("the store refuses it".into())),
                    "malformed" => Err(HandlerError::Reject("not an event".into())),
                    _ => {
                        effects.applied.push(n);
                        Ok(())
                    }
                }
            }
        })
    };
    let mut settings = settings(&stream, "a");
    settings.max_deliveries = 3;
    // Dead-lettered as soon as it is over the deliveries (another test keeps young ones).
    settings.retry_for = Duration::ZERO;
    settings.claim_idle = Duration::from_millis(150);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(redis(), settings, handler, shutdown));

    eventually("both bad entries are dead-lettered", || async {
        gospelib_kit::test_stack::stream_length(&dead).await == 2
    })
    .await;
    eventually("the group is caught up", || group_caught_up(&stream, "g")).await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(
        (stats.acknowledged, stats.dead_lettered, stats.failed),
        (6, 2, 3)
    );

    let (calls, applied) = {
        let effects = effects.lock().unwrap();
        (effects.calls.clone(), effects.applied.clone())
    };
    assert_eq!(calls["poison"], 3, "handed to the handler exactly N times");
    assert_eq!(calls["malformed"], 1, "a rejected entry is not retried");
    assert_eq!(applied.iter().cloned().collect::<BTreeSet<_>>(), all(0..6));

    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&dead)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .unwrap();
    let fields = |i: usize| -> BTreeMap<String, String> {
        entries[i]
            .1
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect()
    };
    let (rejected, poison) = (fields(0), fields(1));
    assert_eq!(rejected["n"], "malformed");
    assert_eq!(rejected["dead_letter_id"], rejected_id);
    assert_eq!(rejected["dead_letter_reason"], "not an event");
    assert_eq!(poison["n"], "poison");
    assert_eq!(poison["dead_letter_id"], poison_id);
    assert_eq!(poison["dead_letter_stream"], stream);
    assert_eq!(poison["dead_letter_group"], "g");
    assert_eq!(poison["dead_letter_deliveries"], "4");
    delete(&[&stream, &dead]).await;
}

/// Fails each entry until it has been handed to it as many times as `fail_first` says for its
/// type, then applies it; says a user's deletion must never be given up.
struct FailingForAWhile {
    fail_first: fn(&str) -> u32,
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Handler for FailingForAWhile {
    async fn handle(&self, entry: &StreamEntry) -> Result<(), HandlerError> {
        let kind = entry.field("type").unwrap_or_default().to_owned();
        let key = format!("{kind} {}", entry.field("n").unwrap_or_default());
        let mut calls = self.calls.lock().unwrap();
        let call = calls.entry(key).or_default();
        *call += 1;
        if *call <= (self.fail_first)(&kind) {
            Err(HandlerError::Retry("the store is down".into()))
        } else {
            Ok(())
        }
    }

    fn never_given_up(&self, entry: &StreamEntry) -> bool {
        gospelib_kit::streams::erases_a_user(entry)
    }
}

/// Adds an entry of `kind` numbered `n` to `stream`.
async fn add_typed(stream: &str, kind: &str, n: u32) {
    let mut connection = redis_connection().await;
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("type")
        .arg(kind)
        .arg("n")
        .arg(n)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// The entries of the dead-letter stream `dead`: their `type`s.
async fn dead_types(dead: &str) -> Vec<String> {
    let mut connection = redis_connection().await;
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(dead)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| fields[1].clone())
        .collect()
}

/// A user's deletion failing past `max_deliveries` and `retry_for` (a store down for a day) is
/// retried until it is applied, not dead-lettered: nothing else would erase the user's data.
/// Another event failing as long is dead-lettered as before; and a deletion still failing at
/// `keep_trying_for` is dead-lettered after all, before the stream's trim could drop it.
#[tokio::test]
async fn a_users_deletion_is_retried_until_applied_never_dead_lettered() {
    let stream = format!("gl:test:streams:{}", unique());
    let dead = format!("{stream}:dead");
    add_typed(&stream, "user.deleted", 0).await;
    add_typed(&stream, "user.updated", 0).await;
    let calls = Arc::new(Mutex::new(BTreeMap::new()));
    let handler = FailingForAWhile {
        fail_first: |_| 6,
        calls: calls.clone(),
    };
    let mut settings = settings(&stream, "a");
    settings.max_deliveries = 2;
    settings.retry_for = Duration::ZERO;
    settings.claim_idle = Duration::from_millis(150);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(redis(), settings.clone(), handler, shutdown));

    eventually("the group is caught up", || group_caught_up(&stream, "g")).await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(
        (stats.acknowledged, stats.dead_lettered),
        (1, 1),
        "{stats:?}"
    );
    let seen = calls.lock().unwrap().clone();
    assert_eq!(seen["user.deleted 0"], 7, "six failures, then applied");
    assert_eq!(
        seen["user.updated 0"], 2,
        "dead-lettered past max_deliveries"
    );
    assert_eq!(dead_types(&dead).await, ["user.updated"]);
    delete(&[&stream, &dead]).await;

    // Past `keep_trying_for`, a deletion still failing is dead-lettered too.
    let stream = format!("gl:test:streams:{}", unique());
    let dead = format!("{stream}:dead");
    add_typed(&stream, "user.deleted", 0).await;
    let handler = FailingForAWhile {
        fail_first: |_| u32::MAX,
        calls: Arc::default(),
    };
    let settings = ConsumerSettings {
        keep_trying_for: Duration::ZERO,
        ..settings_with_stream(&settings, &stream)
    };
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(redis(), settings, handler, shutdown));
    eventually("the group is caught up", || group_caught_up(&stream, "g")).await;
    stop.send(true).unwrap();
    assert_eq!(task.await.unwrap().dead_lettered, 1);
    assert_eq!(dead_types(&dead).await, ["user.deleted"]);
    delete(&[&stream, &dead]).await;
}

/// `settings` reading `stream` (and dead-lettering to its own dead-letter stream).
fn settings_with_stream(settings: &ConsumerSettings, stream: &str) -> ConsumerSettings {
    ConsumerSettings {
        stream: stream.to_owned(),
        dead_letter_stream: gospelib_kit::streams::dead_letter_stream(stream),
        ..settings.clone()
    }
}

/// Claim rounds go on where the last one stopped: deletions that keep failing at the front of
/// the pending list (more than one round claims) do not keep an entry behind them from being
/// claimed and applied.
#[tokio::test]
async fn failing_entries_at_the_front_do_not_starve_those_behind_them() {
    let stream = format!("gl:test:streams:{}", unique());
    for n in 0..20 {
        add_typed(&stream, "user.deleted", n).await;
    }
    add_typed(&stream, "user.updated", 0).await;
    let calls = Arc::new(Mutex::new(BTreeMap::new()));
    let handler = FailingForAWhile {
        fail_first: |kind| if kind == "user.deleted" { u32::MAX } else { 1 },
        calls: calls.clone(),
    };
    let mut settings = settings(&stream, "a");
    // A round claims at most 8 batches of 2: 16 entries, fewer than the failing ones.
    settings.batch = 2;
    settings.max_deliveries = 2;
    settings.retry_for = Duration::ZERO;
    settings.claim_idle = Duration::from_millis(150);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(redis(), settings, handler, shutdown));
    eventually("the entry behind the failing ones is applied", || async {
        calls.lock().unwrap().get("user.updated 0") == Some(&2)
    })
    .await;
    stop.send(true).unwrap();
    let stats = task.await.unwrap();
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    delete(&[&stream, &gospelib_kit::streams::dead_letter_stream(&stream)]).await;
}

#[tokio::test]
async fn the_runner_retries_an_unreachable_redis_and_stops_on_its_signal() {
    let handler = handler_fn(|_entry: StreamEntry| async { Ok(()) });
    let mut settings = settings("gl:test:streams:unreachable", "a");
    settings.call_timeout = Duration::from_millis(200);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(
        dead_redis(),
        settings.clone(),
        handler,
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "it keeps trying");
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats, ConsumerStats::default());

    // Dropping the sender stops it too, even while it waits for entries on a live Redis.
    let stream = format!("gl:test:streams:{}", unique());
    let handler = handler_fn(|_entry: StreamEntry| async { Ok(()) });
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_consumer(
        redis(),
        settings_for(&stream),
        handler,
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stop);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
    delete(&[&stream]).await;
}

fn settings_for(stream: &str) -> ConsumerSettings {
    settings(stream, "a")
}

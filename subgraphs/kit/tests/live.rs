//! Live events on the stack's Redis: fan-out across processes (each `LiveEvents` here stands
//! for a process), one subscription per channel per process, dropping the subscription with
//! the last listener, a lagging listener losing its oldest events (and hearing a gap), and
//! reconnection after the pub/sub connection is killed (a gap for every listener).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use gospelib_kit::live::{Heard, LiveEvents, LiveSettings};
use gospelib_kit::test_stack::{eventually, kill_pubsub_connections, redis, redis_as};
use serde_json::{Value, json};

fn channel(name: &str) -> String {
    format!("gl_test:live:{name}:{}", uuid::Uuid::new_v4())
}

/// How many pub/sub connections Redis has subscribed to `channel` (`PUBSUB NUMSUB`).
async fn redis_subscribers(channel: &str) -> i64 {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut connection)
        .await
        .unwrap();
    count
}

async fn heard(stream: &mut (impl Stream<Item = Heard> + Unpin)) -> Heard {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("something heard within five seconds")
        .expect("the stream goes on")
}

/// The next thing heard, which must be an event.
async fn next(stream: &mut (impl Stream<Item = Heard> + Unpin)) -> Value {
    match heard(stream).await {
        Heard::Event(event) => event,
        gap => panic!("an event, not {gap:?}"),
    }
}

async fn nothing_more(stream: &mut (impl Stream<Item = Heard> + Unpin)) {
    let more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(more.is_err(), "unexpected event: {more:?}");
}

#[tokio::test]
async fn events_fan_out_to_every_listener_of_every_process_over_one_subscription_each() {
    let channel = channel("fanout");
    let (a, b, publisher) = (
        LiveEvents::new(redis()),
        LiveEvents::new(redis()),
        LiveEvents::new(redis()),
    );
    let mut a1 = Box::pin(a.subscribe(&channel));
    let mut a2 = Box::pin(a.subscribe(&channel));
    let mut b1 = Box::pin(b.subscribe(&channel));
    let mut other = Box::pin(a.subscribe(&format!("{channel}:other")));
    eventually("both processes are subscribed", || async {
        a.is_subscribed(&channel) && b.is_subscribed(&channel)
    })
    .await;
    assert_eq!(redis_subscribers(&channel).await, 2, "one per process");
    assert_eq!(a.listener_count(&channel), 2);

    let receivers = publisher.publish(&channel, &json!({"n": 1})).await.unwrap();
    assert_eq!(receivers, 2);
    for stream in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(next(stream).await, json!({"n": 1}));
    }
    nothing_more(&mut other).await;

    // A message that is not JSON is skipped.
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("not json")
        .query_async(&mut connection)
        .await
        .unwrap();
    publisher.publish(&channel, &json!({"n": 2})).await.unwrap();
    assert_eq!(next(&mut a1).await, json!({"n": 2}));
}

#[tokio::test]
async fn redis_is_unsubscribed_when_the_last_listener_goes() {
    let channel = channel("last");
    let live = LiveEvents::new(redis());
    let first = live.subscribe(&channel);
    let mut second = Box::pin(live.subscribe(&channel));
    eventually("subscribed", || async { live.is_subscribed(&channel) }).await;
    assert_eq!(redis_subscribers(&channel).await, 1);

    // One listener is left: the subscription stays, and events still reach it.
    drop(first);
    assert_eq!(live.listener_count(&channel), 1);
    live.publish(&channel, &json!("still")).await.unwrap();
    assert_eq!(next(&mut second).await, json!("still"));
    assert!(live.is_subscribed(&channel));
    assert_eq!(redis_subscribers(&channel).await, 1);

    drop(second);
    eventually("unsubscribed", || async { !live.is_subscribed(&channel) }).await;
    assert_eq!(live.listener_count(&channel), 0);
    assert_eq!(redis_subscribers(&channel).await, 0);

    // A new listener subscribes again.
    let mut again = Box::pin(live.subscribe(&channel));
    eventually("subscribed again", || async {
        live.is_subscribed(&channel)
    })
    .await;
    live.publish(&channel, &json!("back")).await.unwrap();
    assert_eq!(next(&mut again).await, json!("back"));
}

#[tokio::test]
async fn a_listener_that_falls_behind_loses_its_oldest_events_only() {
    let channel = channel("lag");
    let live = LiveEvents::with_settings(
        redis(),
        LiveSettings {
            buffer: 4,
            ..LiveSettings::default()
        },
    );
    let mut lagging = Box::pin(live.subscribe(&channel));
    let mut keeping_up = Box::pin(live.subscribe(&channel));
    eventually("subscribed", || async { live.is_subscribed(&channel) }).await;
    for n in 0..10 {
        live.publish(&channel, &json!(n)).await.unwrap();
        assert_eq!(next(&mut keeping_up).await, json!(n));
    }
    assert_eq!(heard(&mut lagging).await, Heard::Gap { lost: Some(6) });
    for n in 6..10 {
        assert_eq!(next(&mut lagging).await, json!(n), "the newest four remain");
    }
    nothing_more(&mut lagging).await;
}

/// A channel opened with a buffer of its own (an inbox: one per user) keeps that many for a
/// listener behind, whatever the default.
#[tokio::test]
async fn a_channel_opened_with_its_own_buffer_keeps_that_many() {
    let channel = channel("own-buffer");
    let live = LiveEvents::new(redis());
    let mut lagging = Box::pin(live.subscribe_with_buffer(&channel, 2));
    let mut keeping_up = Box::pin(live.subscribe(&channel));
    eventually("subscribed", || async { live.is_subscribed(&channel) }).await;
    for n in 0..5 {
        live.publish(&channel, &json!(n)).await.unwrap();
        assert_eq!(next(&mut keeping_up).await, json!(n));
    }
    assert_eq!(heard(&mut lagging).await, Heard::Gap { lost: Some(3) });
    for n in 3..5 {
        assert_eq!(next(&mut lagging).await, json!(n), "the newest two remain");
    }
    nothing_more(&mut lagging).await;
}

/// The ACL user the reconnection test's own connections log in as (see `redis_as`).
const TEST_USER: &str = "gospelib_live_test";

#[tokio::test]
async fn a_killed_connection_is_made_again_and_every_channel_subscribed_again() {
    let live = LiveEvents::with_settings(
        redis_as(TEST_USER).await,
        LiveSettings {
            first_retry: Duration::from_millis(50),
            ..LiveSettings::default()
        },
    );
    let (one, two) = (channel("reconnect-1"), channel("reconnect-2"));
    let mut first = Box::pin(live.subscribe(&one));
    let mut second = Box::pin(live.subscribe(&two));
    eventually("subscribed", || async {
        live.is_subscribed(&one) && live.is_subscribed(&two)
    })
    .await;

    // Killed twice while the listeners read nothing.
    for _ in 0..2 {
        assert_eq!(
            kill_pubsub_connections(TEST_USER).await,
            1,
            "the one pub/sub connection of the process"
        );
        eventually(
            "both channels are subscribed on a new connection",
            || async { redis_subscribers(&one).await == 1 && redis_subscribers(&two).await == 1 },
        )
        .await;
        eventually("the process knows", || async {
            live.is_subscribed(&one) && live.is_subscribed(&two)
        })
        .await;
    }
    // What was published while it was down is lost, and each listener hears so first, once
    // for both losses.
    for stream in [&mut first, &mut second] {
        assert_eq!(heard(stream).await, Heard::Gap { lost: None });
    }
    let publisher = LiveEvents::new(redis());
    publisher.publish(&one, &json!("one")).await.unwrap();
    publisher.publish(&two, &json!("two")).await.unwrap();
    assert_eq!(next(&mut first).await, json!("one"));
    assert_eq!(next(&mut second).await, json!("two"));
}

/// Live events on a Redis that never answers, with a deadline of 200 ms.
fn on_a_silent_redis() -> LiveEvents {
    let silent = gospelib_kit::test_stack::silent_server();
    LiveEvents::with_settings(
        redis::Client::open(format!("redis://{silent}")).unwrap(),
        LiveSettings {
            timeout: Duration::from_millis(200),
            ..LiveSettings::default()
        },
    )
}

/// Redis silent: two publishes in a row wait out the deadline; those right after them are not
/// tried (a job announcing thousands of notifications does not wait the deadline on each).
#[tokio::test]
async fn after_a_failed_publish_the_next_ones_are_not_tried() {
    use gospelib_kit::live::PublishError;
    let live = on_a_silent_redis();
    for n in 0..2 {
        let tried = live.publish("gl:test:silent", &json!(n)).await;
        assert!(
            matches!(
                tried,
                Err(PublishError::Timeout(_) | PublishError::Redis(_))
            ),
            "one failure alone stops nothing: {tried:?}"
        );
    }
    for n in 2..5 {
        let next = live.publish("gl:test:silent", &json!(n)).await;
        assert!(matches!(next, Err(PublishError::Skipped)), "{next:?}");
    }
}

/// An event this process could not publish is a gap of one to this process's own listeners
/// of its channel (they read its durable copy again), not missed without a word; skipped
/// publishes (the breaker open) too.
#[tokio::test]
async fn an_event_not_published_is_a_gap_to_this_process_listeners() {
    let live = on_a_silent_redis();
    let channel = "gl:test:unpublished";
    let mut listener = Box::pin(live.subscribe(channel));
    for n in 0..3 {
        assert!(live.publish(channel, &json!(n)).await.is_err());
        assert_eq!(
            heard(&mut listener).await,
            Heard::Gap { lost: Some(1) },
            "{n}"
        );
    }
    // Another channel's listeners are not told.
    let mut other = Box::pin(live.subscribe("gl:test:unpublished-other"));
    assert!(live.publish(channel, &json!(3)).await.is_err());
    assert_eq!(heard(&mut listener).await, Heard::Gap { lost: Some(1) });
    nothing_more(&mut other).await;
}

//! The stream backlog reporter against the stack's Redis: what a consumer group has not read
//! and has not acknowledged, as `XINFO GROUPS` says, exported as gauges.

use std::time::Duration;

use gospelib_kit::metrics::Metrics;
use gospelib_kit::stream_lag::{Backlog, backlog, run_lag_reporter};
use gospelib_kit::test_stack::{eventually, redis};

/// The ids of `stream`'s entries, oldest first.
async fn entry_ids(
    connection: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<String> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(connection)
        .await
        .unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

/// A stream of its own with `entries` entries and the group `g`, which has read `read` of
/// them and acknowledged `acked` of those.
async fn stream_with(entries: usize, read: usize, acked: usize) -> String {
    let stream = format!("gl:test:lag:{}", uuid::Uuid::new_v4());
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    for n in 0..entries {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut connection)
        .await
        .unwrap();
    // The group reads the oldest entries first: the first `acked` of them are acknowledged.
    let ids = entry_ids(&mut connection, &stream).await;
    if read > 0 {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(read)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut connection)
            .await
            .unwrap();
        for id in ids.iter().take(acked) {
            let _: i64 = redis::cmd("XACK")
                .arg(&stream)
                .arg("g")
                .arg(id)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }
    stream
}

#[tokio::test]
async fn a_groups_backlog_is_what_it_has_not_read_and_not_acknowledged() {
    let stream = stream_with(5, 2, 1).await;
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(
        backlog(&mut connection, &stream, "g").await.unwrap(),
        Some(Backlog { lag: 3, pending: 1 })
    );
    assert_eq!(
        backlog(&mut connection, &stream, "other").await.unwrap(),
        None
    );
    let missing = format!("gl:test:lag:{}", uuid::Uuid::new_v4());
    assert_eq!(backlog(&mut connection, &missing, "g").await.unwrap(), None);

    // Entries deleted from the stream (a deleted user's events), one the group read and one
    // it has not: Redis no longer knows the lag, and the entries left after what was read are
    // counted (the stream's length less what the group read since the stream began would say 1).
    let ids = entry_ids(&mut connection, &stream).await;
    let _: i64 = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&ids[0])
        .arg(&ids[3])
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        backlog(&mut connection, &stream, "g").await.unwrap(),
        Some(Backlog { lag: 2, pending: 1 })
    );
}

#[tokio::test]
async fn the_reporter_exports_the_backlog_as_gauges_and_stops_on_shutdown() {
    let stream = stream_with(4, 4, 4).await;
    let metrics = Metrics::new("test");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let reporter = tokio::spawn(run_lag_reporter(
        redis(),
        metrics.clone(),
        vec![(stream.clone(), "g".to_owned())],
        Duration::from_millis(20),
        shutdown,
    ));
    let line = format!("gospelib_stream_lag{{group=\"g\",stream=\"{stream}\",service=\"test\"}} 0");
    eventually("the caught-up group reports no lag", || {
        let found = metrics.render().contains(&line);
        async move { found }
    })
    .await;
    // Three more entries nobody reads: the gauge follows.
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    for _ in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("n")
            .arg(1)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let line = format!("gospelib_stream_lag{{group=\"g\",stream=\"{stream}\",service=\"test\"}} 3");
    eventually("the lag grows with unread entries", || {
        let found = metrics.render().contains(&line);
        async move { found }
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), reporter)
        .await
        .expect("the reporter stops on shutdown")
        .unwrap();
}

//! Following a channel of announcements on the stack's Redis: each one heard, and a connection
//! that goes silent without closing (a half-open socket after a NAT's idle timeout or a
//! failover) found by its check instead of being waited on for ever.

mod support;

use std::time::Duration;

use gospelib_kit::announcements::{AnnouncementSettings, Interrupted, follow};
use gospelib_kit::test_stack::{redis, urls};
use support::SilenceableProxy;

#[tokio::test]
async fn announcements_are_heard_and_a_silent_connection_is_found_by_its_check() {
    let channel = format!("gl_test:announcements:{}", uuid::Uuid::new_v4());
    let proxy = SilenceableProxy::start(&urls().redis).await;
    let settings = AnnouncementSettings {
        timeout: Duration::from_millis(500),
        check_every: Duration::from_millis(300),
    };
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn({
        let client = redis::Client::open(proxy.url(&urls().redis).as_str()).unwrap();
        let channel = channel.clone();
        async move {
            follow(
                &client,
                &channel,
                settings,
                || {
                    let _ = subscribed_tx.send(());
                },
                |text| {
                    let _ = heard_tx.send(text.to_owned());
                },
            )
            .await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("subscribed")
        .unwrap();

    let mut publisher = redis().get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(" user-1 \n")
        .query_async(&mut publisher)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("heard");
    assert_eq!(first.as_deref(), Some("user-1"));

    // Past several checks the connection is still followed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!follower.is_finished());

    proxy.go_silent();
    let outcome = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the silent connection is found, not waited on")
        .unwrap();
    assert!(
        matches!(outcome, Interrupted::Unanswered("PING", _)),
        "{outcome:?}"
    );
}

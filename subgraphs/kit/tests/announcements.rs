//! Following a channel of announcements on the stack's Redis: each one heard, and a connection
//! that goes silent without closing (a half-open socket after a NAT's idle timeout or a
//! failover) found by its check instead of being waited on for ever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gospelib_kit::announcements::{AnnouncementSettings, Interrupted, follow};
use gospelib_kit::test_stack::{redis, urls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy to the stack's Redis that can go silent: from then on nothing passes either way,
/// and neither socket is closed.
struct SilenceableProxy {
    address: SocketAddr,
    silent: Arc<AtomicBool>,
}

impl SilenceableProxy {
    async fn start() -> Self {
        let redis = urls().redis;
        let target = format!(
            "{}:{}",
            redis.host_str().unwrap(),
            redis.port().unwrap_or(6379)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        tokio::spawn({
            let silent = silent.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = TcpStream::connect(&target).await.unwrap();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pass(client_read, server_write, silent.clone()));
                    tokio::spawn(pass(server_read, client_write, silent.clone()));
                }
            }
        });
        Self { address, silent }
    }

    fn client(&self) -> redis::Client {
        let mut url = urls().redis;
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.address.port())).unwrap();
        redis::Client::open(url.as_str()).unwrap()
    }

    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until `silent`; then swallows what arrives, holding both open.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        if !silent.load(Ordering::SeqCst) && to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    // Held open: the peer sees no close.
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn announcements_are_heard_and_a_silent_connection_is_found_by_its_check() {
    let channel = format!("gl_test:announcements:{}", uuid::Uuid::new_v4());
    let proxy = SilenceableProxy::start().await;
    let settings = AnnouncementSettings {
        timeout: Duration::from_millis(500),
        check_every: Duration::from_millis(300),
    };
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn({
        let (client, channel) = (proxy.client(), channel.clone());
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
        matches!(outcome, Err(Interrupted::Unanswered("PING", _))),
        "{outcome:?}"
    );
}

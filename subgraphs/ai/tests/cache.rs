//! The answer cache against the stack's Redis, reached through a proxy that delays Redis's
//! replies: a Redis slower than a read may wait is a miss for reads, but an answer (most likely
//! paid for) is still kept.

use std::time::Duration;

use gospelib_ai::cache::{AnswerCache, TIMEOUT, WRITE_TIMEOUT};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn redis_url() -> String {
    std::env::var("GOSPELIB_REDIS_URL")
        .expect("these tests need the stack: run scripts/test, or source .stack/run/env")
}

/// Copies `from` to `to`, each chunk after `delay`.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        tokio::time::sleep(delay).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
}

/// A proxy to Redis on 127.0.0.1 whose replies each arrive `delay` late; its URL.
async fn slow_redis(delay: Duration) -> String {
    let url = url::Url::parse(&redis_url()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(6379));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(relay(client_read, server_write, Duration::ZERO));
            tokio::spawn(relay(server_read, client_write, delay));
        }
    });
    let mut proxied = url.clone();
    proxied.set_port(Some(port)).unwrap();
    proxied.to_string()
}

#[tokio::test]
async fn a_slow_redis_is_a_miss_for_reads_but_still_keeps_answers() {
    let delay = TIMEOUT + Duration::from_millis(50);
    assert!(
        delay * 4 < WRITE_TIMEOUT,
        "connecting and one write fit the write's time"
    );
    let slow = AnswerCache::new(
        redis::Client::open(slow_redis(delay).await).unwrap(),
        format!("test-{}", std::process::id()),
    );
    let key = slow.key(&[json!("explain"), json!(uuid_like())]);
    slow.put(&key, &json!({"answer": "kept"})).await;

    // Kept: read straight from Redis.
    let direct = AnswerCache::new(
        redis::Client::open(redis_url()).unwrap(),
        format!("test-{}", std::process::id()),
    );
    let kept: Option<serde_json::Value> = direct.get(&key).await;
    assert_eq!(kept, Some(json!({"answer": "kept"})));
    // Read through the slow Redis, it is a miss: a read waits no longer than a read may.
    let read: Option<serde_json::Value> = slow.get(&key).await;
    assert_eq!(read, None);
}

/// A key of this run's own.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

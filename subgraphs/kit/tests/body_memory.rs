//! The memory a request body holds while it arrives: a gzip body is held as it was sent
//! (compressed) until it is whole, not as what it inflates to, and a body sent in tiny
//! chunks as its bytes, not a chunk each. Measured with a counting allocator, which sees the
//! whole process: this file holds one test.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use gospelib_kit::edge::EdgeSettings;
use gospelib_kit::server::{AppSpec, DEFAULT_MAX_BODY_BYTES, build_app};
use support::{start_app, test_subgraph};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes allocated and not yet freed, by anything in this process.
static HELD: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What is held once it has stayed within 4 KiB for a second (the server has read all that
/// was sent: a frame a few microseconds, the first phase's in one go; a timer or a log line
/// elsewhere in the process may still come and go).
async fn settled() -> isize {
    const STEADY: isize = 4 * 1024;
    let mut last = HELD.load(Ordering::Relaxed);
    let mut unchanged = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while unchanged < 10 {
        assert!(
            Instant::now() < deadline,
            "the memory held never settled (last {last} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = HELD.load(Ordering::Relaxed);
        if (now - last).abs() <= STEADY {
            unchanged += 1;
        } else {
            unchanged = 0;
            last = now;
        }
    }
    last
}

#[tokio::test]
async fn unfinished_bodies_hold_what_was_sent() {
    const CONNECTIONS: usize = 20;
    let (app, _) = build_app(AppSpec {
        service: "test".to_owned(),
        gateway: None,
        subgraphs: vec![test_subgraph(vec![])],
        dependencies: vec![],
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        extra_routes: None,
        public_routes: None,
        edge: EdgeSettings::default(),
    });
    let server = start_app(app).await;
    // A body inflating to 1 KiB under the limit, gzipped to a few KiB.
    let compressed = {
        let mut body = br#"{"query": "{ hello }""#.to_vec();
        body.resize(DEFAULT_MAX_BODY_BYTES - 1024 - 1, b' ');
        body.push(b'}');
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    };
    assert!(compressed.len() < 16 * 1024, "{}", compressed.len());
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        compressed.len()
    );
    // All but the gzip trailer (8 bytes): the body is never whole.
    let (sent, unsent) = compressed.split_at(compressed.len() - 8);

    let before = settled().await;
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(sent).await.unwrap();
        connections.push(stream);
    }
    let grown = settled().await - before;
    // Each holds its few KiB and a decoder (a 32 KiB window and buffers); holding the
    // decompressed body would be 2 MiB each, 40 MiB in all.
    assert!(
        grown < (CONNECTIONS * 512 * 1024) as isize,
        "{CONNECTIONS} unfinished bodies hold {grown} bytes"
    );

    // Finished, a body is decompressed and served whole.
    let mut stream = connections.pop().unwrap();
    stream.write_all(unsent).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with(r#"{"data":{"hello":"hello world"}}"#),
        "{answer}"
    );
    drop(connections);

    // A plain body in chunks of one byte each (`1\r\nX\r\n`): held as its bytes, not as
    // a chunk's bookkeeping (32 bytes) each.
    const BYTES: usize = 20_000;
    let head = "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    let mut chunks = Vec::with_capacity(6 * BYTES);
    let mut body = br#"{"query": "{ hello }""#.to_vec();
    body.resize(BYTES - 1, b' ');
    body.push(b'}');
    for byte in &body {
        chunks.extend_from_slice(b"1\r\n");
        chunks.push(*byte);
        chunks.extend_from_slice(b"\r\n");
    }
    drop(body);
    let before = settled().await;
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS / 4 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&chunks).await.unwrap();
        connections.push(stream);
    }
    let grown = settled().await - before;
    // The bytes, in a buffer grown by doubling (32 KiB), beside the connection's read
    // buffer; a chunk's bookkeeping each would be over 500 KB each.
    assert!(
        grown < (CONNECTIONS / 4 * 320 * 1024) as isize,
        "{} unfinished bodies of {BYTES} one-byte chunks hold {grown} bytes",
        CONNECTIONS / 4
    );
    let mut stream = connections.pop().unwrap();
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(
        answer.ends_with(r#"{"data":{"hello":"hello world"}}"#),
        "{answer}"
    );
    drop(connections);
    server.stop().await.unwrap();
}

/// The first answer on `stream`, read until its `content-length` is all there.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
            head.lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, length)| length.trim().parse::<usize>().ok())
                .is_some_and(|length| body.len() >= length)
        });
        if complete || read == 0 {
            return text;
        }
    }
}

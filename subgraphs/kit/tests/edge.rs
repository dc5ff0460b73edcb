//! The HTTP edge over a real listener: response compression, request decompression and the
//! body limit (compression bombs, chunked bodies), CORS, CSRF prevention, batched operations.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use gospelib_kit::edge::{CorsOrigins, CorsSettings, EdgeSettings};
use gospelib_kit::graphql_http::{ExecutorService, GraphQlService, ServiceResponse};
use gospelib_kit::metrics::Metrics;
use gospelib_kit::server::{AppSpec, build_app, build_split_apps};
use gospelib_kit::stores::BoxFuture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, start_app, test_subgraph};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 64 * 1024;

/// The kit's test subgraph alone (so also at `/graphql`), with `edge` and a 64 KiB body limit.
async fn subgraph_server(edge: EdgeSettings) -> TestServer {
    subgraph_server_with(edge, None).await
}

async fn subgraph_server_with(edge: EdgeSettings, extra: Option<axum::Router>) -> TestServer {
    subgraph_server_limited(edge, extra, LIMIT).await
}

async fn subgraph_server_limited(
    edge: EdgeSettings,
    extra: Option<axum::Router>,
    max_body_bytes: usize,
) -> TestServer {
    let (app, _) = build_app(AppSpec {
        service: "test".to_owned(),
        gateway: None,
        subgraphs: vec![test_subgraph(vec![])],
        dependencies: vec![],
        max_body_bytes,
        extra_routes: extra,
        public_routes: None,
        edge,
    });
    start_app(app).await
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn brotli_compress(bytes: &[u8]) -> Vec<u8> {
    let mut writer = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    writer.write_all(bytes).unwrap();
    writer.into_inner()
}

fn brotli_decompress(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

// ---- compression ----

#[tokio::test]
async fn responses_are_compressed_as_accept_encoding_asks() {
    let sse = "data: {\"n\": 1}\n\n".repeat(500);
    let multipart = "--graphql\r\ncontent-type: application/json\r\n\r\n{}\r\n".repeat(200);
    let streams = axum::Router::new()
        .route(
            "/sse",
            axum::routing::get(
                move || async move { ([("content-type", "text/event-stream")], sse) },
            ),
        )
        .route(
            "/multipart",
            axum::routing::get(move || async move {
                (
                    [(
                        "content-type",
                        "multipart/mixed; boundary=\"graphql\"; deferSpec=20220824",
                    )],
                    multipart,
                )
            }),
        );
    let server = subgraph_server_with(EdgeSettings::default(), Some(streams)).await;
    let http = reqwest::Client::new();
    let body = json!({
        "query": "query($n: String) { hello(name: $n) }",
        "variables": {"n": "Ruth ".repeat(800)}
    });
    let ask = |encoding: Option<&'static str>| {
        let mut request = http.post(server.url("/graphql")).json(&body);
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        request.send()
    };

    let plain = ask(None).await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap().to_vec();
    let answer: Value = serde_json::from_slice(&plain).unwrap();
    assert!(answer["data"]["hello"].as_str().unwrap().len() > 4000);

    let gzipped = ask(Some("gzip")).await.unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(gzipped.headers()["content-type"], "application/json");
    assert!(
        gzipped.headers()["vary"]
            .to_str()
            .unwrap()
            .contains("accept-encoding")
    );
    let gzipped = gzipped.bytes().await.unwrap();
    assert!(gzipped.len() < plain.len() / 4, "{}", gzipped.len());
    assert_eq!(gunzip(&gzipped), plain);

    let brotli = ask(Some("br")).await.unwrap();
    assert_eq!(brotli.headers()["content-encoding"], "br");
    let brotli = brotli.bytes().await.unwrap();
    assert!(brotli.len() < plain.len() / 4, "{}", brotli.len());
    assert_eq!(brotli_decompress(&brotli), plain);

    // Both accepted: one of them, decoded to the same answer.
    let either = ask(Some("br;q=1.0, gzip;q=0.5")).await.unwrap();
    assert_eq!(either.headers()["content-encoding"], "br");

    // A small answer is sent as it is.
    let small = http
        .post(server.url("/graphql"))
        .header("accept-encoding", "gzip, br")
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
    assert_eq!(
        small.json::<Value>().await.unwrap(),
        json!({"data": {"hello": "hello world"}})
    );

    // Streamed media types never are, however large.
    for path in ["/sse", "/multipart"] {
        let response = http
            .get(server.url(path))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{path} was compressed"
        );
        assert!(response.bytes().await.unwrap().len() > 5000, "{path}");
    }
    server.stop().await.unwrap();
}

// ---- decompression and the body limit ----

#[tokio::test]
async fn compressed_request_bodies_are_decompressed() {
    let server = subgraph_server(EdgeSettings::default()).await;
    let http = reqwest::Client::new();
    let body = serde_json::to_vec(
        &json!({"query": "query($n: String) { hello(name: $n) }", "variables": {"n": "Boaz"}}),
    )
    .unwrap();
    for (encoding, compressed) in [("gzip", gzip(&body))] {
        let response = http
            .post(server.url("/graphql"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(compressed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{encoding}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"data": {"hello": "hello Boaz"}}),
            "{encoding}"
        );
    }
    // Two gzip members (as gzip allows): the body is both, in order.
    let (first, second) = body.split_at(body.len() / 2);
    let two_members = [gzip(first), gzip(second)].concat();
    let response = http
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(two_members)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"data": {"hello": "hello Boaz"}})
    );
    // A body that claims gzip and is not, one cut short (its trailer missing), one with bytes
    // after its member: 400 with a GraphQL error, not a plain-text one.
    let compressed = gzip(&body);
    let cut_short = compressed[..compressed.len() - 4].to_vec();
    let trailing = [compressed.as_slice(), b"garbage"].concat();
    for (case, sent) in [
        ("not gzip", body.clone()),
        ("cut short", cut_short),
        ("trailing", trailing),
    ] {
        let response = http
            .post(server.url("/graphql"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(sent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(error_code(&answer), "INVALID_REQUEST", "{case}: {answer}");
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("the request body could not be read"),
            "{case}: {answer}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_unsupported_content_encoding_is_refused_with_415() {
    let server = subgraph_server(EdgeSettings::default()).await;
    // Brotli too, a real brotli body included: its decoder would reserve the window the
    // stream declares (16 MiB) from a few bytes, before the body limit counts anything.
    let brotli = reqwest::Client::new()
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body(brotli_compress(br#"{"query": "{ hello }"}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(brotli.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for encoding in ["zstd", "deflate", "gzip, br", "br"] {
        let response = reqwest::Client::new()
            .post(server.url("/graphql"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(r#"{"query": "{ hello }"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{encoding}"
        );
        let accepted = response.headers()["accept-encoding"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(accepted, "gzip", "{encoding}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(error_code(&answer), "INVALID_REQUEST", "{answer}");
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("content-encoding"),
            "{answer}"
        );
    }
    server.stop().await.unwrap();
}

/// 200 MB of zeros, gzipped (about 200 KB).
fn gzip_bomb() -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_with_413_after_reading_no_more_than_the_limit() {
    let bomb = gzip_bomb();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let server = subgraph_server(EdgeSettings::default()).await;

    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), "INVALID_REQUEST", "{answer}");
    assert_eq!(
        answer["errors"][0]["message"],
        "the request body is larger than this server accepts"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Streamed: the refusal comes while most of the compressed body is still unsent (a server
    // that buffered the body, or decompressed all of it, would wait for the rest).
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        bomb.len()
    );
    let mut first_part = head.into_bytes();
    first_part.extend_from_slice(&bomb[..16 * 1024]);
    let (status, body) = exchange_partial(server.addr, &first_part).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        error_code(&serde_json::from_str(&body).unwrap()),
        "INVALID_REQUEST"
    );
    server.stop().await.unwrap();
}

/// A gzip stream may take any number of bytes to produce none (a member's file name has no
/// length limit), so only its bytes on the wire can bound it: past the wire limit the request
/// is 413 as it arrives, not read until the body's deadline.
#[tokio::test]
async fn a_gzip_stream_past_the_wire_limit_is_refused_with_413() {
    let server = subgraph_server(EdgeSettings::default()).await;
    let wire_limit = gospelib_kit::edge::compressed_wire_limit(LIMIT);
    // A member's header (FNAME set), then a file name that never ends.
    let mut endless = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 0xff];
    endless.resize(3 * wire_limit, b'a');
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        endless.len()
    );
    // Only a little more than the limit is sent: the answer comes without the rest.
    let mut first_part = head.into_bytes();
    first_part.extend_from_slice(&endless[..wire_limit + 1024]);
    let (status, body) = exchange_partial(server.addr, &first_part).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        error_code(&serde_json::from_str(&body).unwrap()),
        "INVALID_REQUEST"
    );
    server.stop().await.unwrap();
}

/// A body that breaks off is 400 with what broke, each cause said once.
#[tokio::test]
async fn a_broken_body_is_400_saying_why_once() {
    let server = subgraph_server(EdgeSettings::default()).await;
    let request = b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                    transfer-encoding: chunked\r\n\r\nzz\r\n";
    let (status, body) = exchange(server.addr, request).await;
    assert_eq!(status, 400, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&answer), "INVALID_REQUEST", "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the request body could not be read: "),
        "{message}"
    );
    let causes: Vec<&str> = message.split(": ").collect();
    for pair in causes.windows(2) {
        assert_ne!(pair[0], pair[1], "{message}");
    }
    server.stop().await.unwrap();
}

/// A route with a limit of its own (as the webhooks have) holds a gzip body to it once
/// decompressed, as it does a plain one, and on the wire to what that limit allows: larger
/// or smaller than the server's.
#[tokio::test]
async fn a_routes_own_limit_holds_for_gzip_bodies_too() {
    const SMALL: usize = 1024;
    const LARGE: usize = 4 * LIMIT;
    let delivery = || {
        axum::routing::post(|request: axum::extract::Request| async move {
            match gospelib_kit::webhook_answer::read_delivery(
                "test",
                request,
                Duration::from_secs(5),
            )
            .await
            {
                Ok((_, body)) => body.len().to_string().into_response(),
                Err(refusal) => refusal,
            }
        })
    };
    let routes = axum::Router::new()
        .route("/small", delivery())
        .layer(axum::extract::DefaultBodyLimit::max(SMALL))
        .merge(
            axum::Router::new()
                .route("/large", delivery())
                .layer(axum::extract::DefaultBodyLimit::max(LARGE)),
        );
    let server = subgraph_server_with(EdgeSettings::default(), Some(routes)).await;
    let http = reqwest::Client::new();
    // Bytes gzip cannot shrink: on the wire a little more than they are.
    let noise = |size: usize| -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for (route, body, status) in [
        ("/small", vec![b'a'; SMALL], StatusCode::OK),
        (
            "/small",
            vec![b'a'; SMALL + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // Past the server's limit, within the route's, on the wire and decompressed.
        ("/large", noise(2 * LIMIT), StatusCode::OK),
        ("/large", noise(LARGE + 1), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let size = body.len();
        for (encoding, sent) in [("identity", body.clone()), ("gzip", gzip(&body))] {
            let response = http
                .post(server.url(route))
                .header("content-encoding", encoding)
                .body(sent)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                status,
                "{route}: {size} bytes, {encoding}"
            );
            if status == StatusCode::OK {
                assert_eq!(response.text().await.unwrap(), size.to_string());
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_with_413() {
    let server = subgraph_server(EdgeSettings::default()).await;
    // Within the limit, chunked (no content-length) is read whole and served.
    let small = chunked_request(&json_with_padding(LIMIT / 2), 4096);
    let (status, body) = exchange(server.addr, &small).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"data": {"hello": "hello world"}})
    );
    // Over it, 413 with a GraphQL error body.
    let large = chunked_request(&json_with_padding(LIMIT * 3), 8192);
    let (status, body) = exchange(server.addr, &large).await;
    assert_eq!(status, 413, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&answer), "INVALID_REQUEST", "{answer}");
    server.stop().await.unwrap();
}

/// A GraphQL request of about `size` bytes (a long comment in the document).
fn json_with_padding(size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"query": format!("{{ hello }} # {}", "x".repeat(size))})).unwrap()
}

fn chunked_request(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut request = b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        .to_vec();
    for piece in body.chunks(chunk) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Sends `request` whole (while reading, so an early answer is not lost) and returns the
/// status and the body of the answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        let _ = writer.write_all(request).await;
        writer
    };
    let read = async move {
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut raw)).await;
        raw
    };
    let (_writer, raw) = tokio::join!(write, read);
    parse_response(&raw)
}

/// Sends the start of a request, never its end, and returns the answer that came anyway.
async fn exchange_partial(addr: SocketAddr, start: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(start).await.unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buffer[..n]),
        }
        if let (_, Some(body)) = split_response(&raw)
            && body.len() >= content_length(&raw).unwrap_or(usize::MAX)
        {
            break;
        }
    }
    parse_response(&raw)
}

fn split_response(raw: &[u8]) -> (&[u8], Option<&[u8]>) {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => (&raw[..end], Some(&raw[end + 4..])),
        None => (raw, None),
    }
}

fn content_length(raw: &[u8]) -> Option<usize> {
    let (head, _) = split_response(raw);
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let (head, body) = split_response(raw);
    let head = String::from_utf8_lossy(head);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {head:?}"));
    let body = body.unwrap_or_default();
    let body = match content_length(raw) {
        Some(length) => &body[..length.min(body.len())],
        None => body,
    };
    (status, String::from_utf8_lossy(body).into_owned())
}

// ---- CORS ----

/// The public and internal listeners of a process whose router is the test subgraph's schema.
async fn split_servers(edge: EdgeSettings) -> (TestServer, TestServer) {
    let subgraph = test_subgraph(vec![]);
    let gateway: Arc<dyn GraphQlService> = Arc::new(ExecutorService(subgraph.executor.clone()));
    let apps = build_split_apps(
        AppSpec {
            service: "test".to_owned(),
            gateway: Some(gateway),
            subgraphs: vec![subgraph],
            dependencies: vec![],
            max_body_bytes: LIMIT,
            extra_routes: None,
            public_routes: None,
            edge,
        },
        Metrics::new("test"),
    );
    (start_app(apps.public).await, start_app(apps.internal).await)
}

fn cors_edge(origins: CorsOrigins, allow_credentials: bool) -> EdgeSettings {
    EdgeSettings {
        cors: CorsSettings {
            origins,
            allow_credentials,
        },
        ..EdgeSettings::default()
    }
}

const APP: &str = "https://app.example.com";

async fn preflight(url: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap()
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn cors_preflights_are_answered_for_listed_origins_only() {
    let edge = cors_edge(CorsOrigins::List(vec![HeaderValue::from_static(APP)]), true);
    let (public, internal) = split_servers(edge).await;
    let graphql = public.url("/graphql");

    let response = preflight(&graphql, APP).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), APP);
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        "true"
    );
    assert_eq!(header(&response, "access-control-max-age"), "600");
    let methods = header(&response, "access-control-allow-methods");
    for method in ["GET", "POST", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = header(&response, "access-control-allow-headers");
    for name in [
        "content-type",
        "authorization",
        "x-api-key",
        "apollo-require-preflight",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }

    // Another origin: not a single CORS header, so the browser refuses.
    let response = preflight(&graphql, "https://evil.example.com").await;
    assert_eq!(cors_headers(&response), Vec::<String>::new());

    // The request itself: readable by the listed origin, with the headers it may read.
    let http = reqwest::Client::new();
    let response = http
        .post(&graphql)
        .header("origin", APP)
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), APP);
    let exposed = header(&response, "access-control-expose-headers");
    for name in [
        "x-request-id",
        "x-supergraph-version",
        "ratelimit-remaining",
        "retry-after",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let response = http
        .post(&graphql)
        .header("origin", "https://evil.example.com")
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    // (The answer is made; the browser keeps it from the page.)
    assert_eq!(response.status(), StatusCode::OK);

    // The internal listener's subgraph endpoints have no CORS policy.
    let response = preflight(&internal.url("/subgraphs/test/graphql"), APP).await;
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    public.stop().await.unwrap();
    internal.stop().await.unwrap();
}

#[tokio::test]
async fn without_configured_origins_there_is_no_cors_and_any_origin_is_star() {
    let (public, internal) = split_servers(EdgeSettings::default()).await;
    let response = preflight(&public.url("/graphql"), APP).await;
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    public.stop().await.unwrap();
    internal.stop().await.unwrap();

    let (public, internal) = split_servers(cors_edge(CorsOrigins::Any, false)).await;
    let response = preflight(&public.url("/graphql"), "https://anyone.example").await;
    assert_eq!(header(&response, "access-control-allow-origin"), "*");
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    public.stop().await.unwrap();
    internal.stop().await.unwrap();
}

// ---- CSRF prevention ----

#[tokio::test]
async fn csrf_prevention_refuses_simple_gets_only() {
    let server = subgraph_server(EdgeSettings::default()).await;
    let http = reqwest::Client::new();
    let get = |headers: &[(&'static str, &'static str)]| {
        let mut request = http
            .get(server.url("/graphql"))
            .query(&[("query", "{ hello }")]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    for simple in [
        &[][..],
        &[("content-type", "text/plain")][..],
        &[("content-type", "application/x-www-form-urlencoded")][..],
        &[("apollo-require-preflight", "")][..],
    ] {
        let response = get(simple).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{simple:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(error_code(&answer), "INVALID_REQUEST");
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("CSRF prevention"), "{message}");
        assert!(message.contains("apollo-require-preflight"), "{message}");
    }
    for preflighted in [
        &[("apollo-require-preflight", "true")][..],
        &[("x-apollo-operation-name", "Hello")][..],
        &[("content-type", "application/json")][..],
    ] {
        let response = get(preflighted).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{preflighted:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"data": {"hello": "hello world"}})
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_csrf_prevention_off_plain_gets_are_served_queries_only() {
    let edge = EdgeSettings {
        csrf_prevention: false,
        ..EdgeSettings::default()
    };
    let server = subgraph_server(edge).await;
    // What a plain client sends: the query and variables URL-encoded, no other header.
    let url = format!(
        "{}?query=query(%24n%3A%20String)%20%7B%20hello(name%3A%20%24n)%20%7D&variables=%7B%22n%22%3A%22Naomi%22%7D",
        server.url("/graphql")
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"data": {"hello": "hello Naomi"}})
    );
    let response = reqwest::Client::new()
        .get(server.url("/graphql"))
        .query(&[("query", "mutation { touch }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await.unwrap();
}

// ---- batches ----

async fn post_batch(server: &TestServer, batch: &Value, accept: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(server.url("/graphql"))
        .json(batch);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_batch_is_answered_in_order_each_element_on_its_own() {
    let server = subgraph_server(EdgeSettings::default()).await;
    let batch = json!([
        {"query": "{ hello }"},
        42,
        {"query": "query($n: String) { hello(name: $n) }", "variables": {"n": "Ruth"}},
    ]);
    let response = post_batch(&server, &batch, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let cache_control = response.headers()["cache-control"].clone();
    let answers: Value = response.json().await.unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0], json!({"data": {"hello": "hello world"}}));
    assert_eq!(error_code(&answers[1]), "INVALID_REQUEST", "{answers:?}");
    assert!(answers[1].get("data").is_none());
    assert_eq!(answers[2], json!({"data": {"hello": "hello Ruth"}}));
    // An element refused at the edge: the whole batch is not to be kept.
    assert_eq!(cache_control, "no-store");

    // Under graphql-response+json too the batch is a 200, even with an element that could not
    // run at all (alone, it would be a 400).
    let batch = json!([{"query": "{ nosuchfield }"}, {}, {"query": "{ hello }"}]);
    let response = post_batch(&server, &batch, Some("application/graphql-response+json")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/graphql-response+json"
    );
    let answers: Value = response.json().await.unwrap();
    assert!(
        answers[0].get("data").is_none_or(Value::is_null),
        "{answers}"
    );
    assert!(
        answers[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchfield"),
        "{answers}"
    );
    assert_eq!(
        answers[1]["errors"][0]["message"],
        "missing the `query` field"
    );
    assert_eq!(answers[2], json!({"data": {"hello": "hello world"}}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_runs_its_operations_concurrently() {
    let server = subgraph_server(EdgeSettings::default()).await;
    let batch = json!([
        {"query": "{ slow(ms: 400) }"},
        {"query": "{ slow(ms: 400) }"},
        {"query": "{ slow(ms: 400) }"},
    ]);
    let answers: Value = post_batch(&server, &batch, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answers,
        json!([{"data": {"slow": 400}}, {"data": {"slow": 400}}, {"data": {"slow": 400}}])
    );
    // (The only slow queries of this test binary.)
    assert_eq!(support::SLOW.peak(), 3, "all three ran at once");
    server.stop().await.unwrap();
}

/// A body of more JSON values than any operation needs (a million zeros fit in 2 MiB) is
/// refused before it is parsed; a batch too.
#[tokio::test]
async fn bodies_of_too_many_json_values_are_refused_unparsed() {
    let server = subgraph_server_limited(EdgeSettings::default(), None, 2 << 20).await;
    let zeros = vec![0; 200_001];
    for body in [
        json!({"query": "{ hello }", "variables": {"v": zeros}}),
        json!([{"query": "{ hello }", "variables": {"v": zeros}}]),
    ] {
        let response = post_batch(&server, &body, None).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(error_code(&answer), "INVALID_REQUEST");
        assert_eq!(
            answer["errors"][0]["message"],
            "the request holds more than 100000 JSON values"
        );
    }
    let fine = json!({"query": "{ hello }", "variables": {"v": vec![0; 50_000]}});
    assert_eq!(
        post_batch(&server, &fine, None).await.status(),
        StatusCode::OK
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn batches_too_large_empty_or_switched_off_are_refused_whole() {
    let edge = EdgeSettings {
        max_batch: 2,
        ..EdgeSettings::default()
    };
    let server = subgraph_server(edge).await;
    let three = json!([{"query": "{ hello }"}, {"query": "{ hello }"}, {"query": "{ hello }"}]);
    let response = post_batch(&server, &three, None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), "INVALID_REQUEST");
    assert_eq!(
        answer["errors"][0]["message"],
        "a batch may hold at most 2 operations; this one holds 3"
    );
    let two = json!([{"query": "{ hello }"}, {"query": "{ hello }"}]);
    assert_eq!(
        post_batch(&server, &two, None).await.status(),
        StatusCode::OK
    );

    let response = post_batch(&server, &json!([]), None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), "INVALID_REQUEST");
    assert_eq!(
        answer["errors"][0]["message"],
        "the batch holds no operation"
    );
    server.stop().await.unwrap();

    let edge = EdgeSettings {
        max_batch: 0,
        ..EdgeSettings::default()
    };
    let server = subgraph_server(edge).await;
    let response = post_batch(&server, &json!([{"query": "{ hello }"}]), None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error_code(&answer), "INVALID_REQUEST");
    assert_eq!(
        answer["errors"][0]["message"],
        "this server does not accept batched operations"
    );
    // A single request is still served.
    let single = post_batch(&server, &json!({"query": "{ hello }"}), None).await;
    assert_eq!(single.status(), StatusCode::OK);
    server.stop().await.unwrap();
}

/// A server whose `/graphql` is a [`FakeRouter`] with 100 requests of rate limit.
async fn fake_router_server() -> TestServer {
    let (app, _) = build_app(AppSpec {
        service: "router".to_owned(),
        gateway: Some(Arc::new(FakeRouter {
            remaining: AtomicUsize::new(100),
        })),
        subgraphs: vec![],
        dependencies: vec![],
        max_body_bytes: LIMIT,
        extra_routes: None,
        public_routes: None,
        edge: EdgeSettings::default(),
    });
    start_app(app).await
}

/// A service like the router: a version header on every answer, a rate limit that counts down
/// and refuses queries mentioning `limited` with 429, persisted queries resolved by itself.
struct FakeRouter {
    remaining: AtomicUsize,
}

impl GraphQlService for FakeRouter {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            let remaining = self.remaining.fetch_sub(1, Ordering::SeqCst) - 1;
            let limited = request.query.contains("limited");
            let body = if limited {
                json!({"errors": [{"message": "rate limited", "extensions": {"code": "RATE_LIMITED"}}]})
            } else if request.query.contains("unconfigured") {
                json!({"errors": [{"message": "internal error", "extensions": {"code": "INTERNAL_ERROR"}}]})
            } else if request.query.contains("storesdown") {
                json!({"errors": [{"message": "unavailable", "extensions": {"code": "SERVICE_UNAVAILABLE"}}]})
            } else if request.extensions.contains_key("persistedQuery") {
                json!({"data": {"persisted": true}})
            } else {
                json!({"data": {"query": request.query}})
            };
            let mut response = ServiceResponse::from_json(&body);
            response.headers = vec![
                (
                    HeaderName::from_static("x-supergraph-version"),
                    HeaderValue::from_static("7"),
                ),
                (
                    HeaderName::from_static("ratelimit-remaining"),
                    HeaderValue::from(remaining),
                ),
            ];
            if limited {
                response.status = Some(axum::http::StatusCode::TOO_MANY_REQUESTS);
            }
            // As the router does: how long the answer may be kept, by what it served.
            let cache_control = if request.query.contains("daily") {
                "public, max-age=300"
            } else {
                "public, max-age=60"
            };
            response.headers.push((
                HeaderName::from_static("cache-control"),
                HeaderValue::from_static(cache_control),
            ));
            response
        })
    }
}

/// Under `application/graphql-response+json`, an answer without data is the server's error
/// (5xx) when it could not run the request, the client's (400) when it refused it; refusals at
/// the edge come in the media type the client accepts. Under `application/json` an answer is
/// a 200 whatever its errors.
#[tokio::test]
async fn answers_without_data_are_5xx_for_server_faults_in_the_accepted_type() {
    let server = fake_router_server().await;
    let http = reqwest::Client::new();
    let ask = |accept: &'static str, body: &'static str| {
        http.post(server.url("/graphql"))
            .header("accept", accept)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    const MODERN: &str = "application/graphql-response+json";
    for (query, status) in [
        (
            r#"{"query":"{ unconfigured }"}"#,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            r#"{"query":"{ storesdown }"}"#,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (r#"{"query":"{ fine }"}"#, StatusCode::OK),
    ] {
        let modern = ask(MODERN, query).await.unwrap();
        assert_eq!(modern.status(), status, "{query}");
        assert_eq!(header(&modern, "content-type"), MODERN);
        let legacy = ask("application/json", query).await.unwrap();
        assert_eq!(legacy.status(), StatusCode::OK, "{query}");
        assert_eq!(header(&legacy, "content-type"), "application/json");
    }

    // Refused before the service: 400 either way, each in the type the client accepts.
    for (accept, media_type) in [
        (MODERN, MODERN),
        (
            "application/graphql-response+json, application/json;q=0.9",
            MODERN,
        ),
        ("application/json", "application/json"),
    ] {
        let refused = ask(accept, "{not json").await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header(&refused, "content-type"), media_type, "{accept}");
        let answer: Value = refused.json().await.unwrap();
        assert_eq!(error_code(&answer), "INVALID_REQUEST");
    }
    let get = http
        .get(server.url("/graphql"))
        .header("accept", MODERN)
        .query(&[("query", "{ fine }")])
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::BAD_REQUEST, "CSRF prevention");
    assert_eq!(header(&get, "content-type"), MODERN);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn batch_elements_keep_their_own_refusals_and_agreeing_headers() {
    let server = fake_router_server().await;
    // Alone, a rate-limited operation is a 429.
    let alone = post_batch(&server, &json!({"query": "{ limited }"}), None).await;
    assert_eq!(alone.status(), StatusCode::TOO_MANY_REQUESTS);

    let batch = json!([
        {"query": "{ a }"},
        {"query": "{ limited }"},
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}},
    ]);
    let response = post_batch(&server, &batch, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-supergraph-version"), "7");
    // The elements' rate-limit headers differ: none is kept for the batch.
    assert!(response.headers().get("ratelimit-remaining").is_none());
    let answers: Value = response.json().await.unwrap();
    assert_eq!(answers[0], json!({"data": {"query": "{ a }"}}));
    assert_eq!(error_code(&answers[1]), "RATE_LIMITED");
    assert_eq!(answers[2], json!({"data": {"persisted": true}}));

    // Elements kept as long as each other: the batch too; for different times: not at all
    // (a batch without `Cache-Control` could be kept by a cache's own rules).
    let same = json!([{"query": "{ a }"}, {"query": "{ b }"}]);
    let response = post_batch(&server, &same, None).await;
    assert_eq!(header(&response, "cache-control"), "public, max-age=60");
    let mixed = json!([{"query": "{ a }"}, {"query": "{ daily }"}]);
    let response = post_batch(&server, &mixed, None).await;
    assert_eq!(header(&response, "cache-control"), "no-store");
    server.stop().await.unwrap();
}

/// A POST whose body trickles in (a slow POST: the headers at once, then a byte every 100 ms)
/// is answered `408` once its deadline passes, and its connection closed; a body that arrives
/// in time is served as ever.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closes() {
    let edge = EdgeSettings {
        body_deadline: Duration::from_millis(300),
        ..EdgeSettings::default()
    };
    let server = subgraph_server(edge).await;
    let answer = reqwest::Client::new()
        .post(server.url("/graphql"))
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    let body = format!("{{\"query\": \"{{ hello }}\"{}}}", " ".repeat(1000));
    let text = gospelib_kit::test_stack::trickle_post(
        &server.url("/graphql"),
        &[("content-type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 0.3 s"), "{text}");
}

//! `fixed-answer`: an HTTP/1.1 server that reads each request's body and answers every request
//! with the same bytes (a file's), doing nothing else.
//!
//! It is the floor of the router comparison in `scripts/bench-router`: a router answering a hot
//! query by sharing one run among all the requests in flight still reads each request and
//! writes each answer over its own connection. Served on the same core, with the same hyper
//! HTTP/1.1 server the routers use and the deep query's own answer, its CPU time per answer is
//! what no router can go under however little it does per request.

use std::convert::Infallible;
use std::path::PathBuf;

use anyhow::Context;
use axum::body::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

#[derive(Debug, Parser)]
#[command(
    name = "fixed-answer",
    about = "Answers every HTTP/1.1 request on 127.0.0.1:PORT with a file's bytes as JSON."
)]
struct Cli {
    /// The loopback port to listen on.
    #[arg(long)]
    port: u16,
    /// The file whose bytes every answer carries.
    #[arg(long)]
    answer: PathBuf,
}

/// Reads the whole request (as any server must before it can answer it) and answers `answer`.
async fn answer(request: Request<hyper::body::Incoming>, answer: Bytes) -> Response<Full<Bytes>> {
    // A request whose body fails to arrive is answered all the same: the client is gone.
    let _ = request.into_body().collect().await;
    Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(answer))
        .expect("a static response is valid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = Bytes::from(
        std::fs::read(&cli.answer)
            .with_context(|| format!("reading the answer from {}", cli.answer.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", cli.port))?;
    eprintln!(
        "fixed-answer: http://127.0.0.1:{} ({} bytes)",
        cli.port,
        body.len()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.context("accepting a connection")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(answer(request, body).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

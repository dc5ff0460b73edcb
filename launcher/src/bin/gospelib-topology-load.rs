//! `gospelib-topology-load`: the steady load `scripts/topology test` drives through the Phase 2
//! topology's routers while parts of it are killed and restarted, checking **every** answer.
//!
//! It first captures the expected answer of each operation of its mix (content queries: a
//! chapter with cross-references, passages with their cross-references, searches) from the
//! healthy topology, through every router (they must agree). Then `--concurrency` workers send
//! the mix in turn, alternating routers, until `--stop-file` appears (or SIGTERM/SIGINT). Each
//! answer is:
//! - **correct**: no errors, and `data` equal to the expected;
//! - a **clean, retryable error**: HTTP 503, or GraphQL errors that all carry an
//!   `extensions.code`. The request is sent again (to the other router) after a short pause,
//!   for up to `--retry-for-ms` after its first clean error; past that it is lost;
//! - otherwise **lost**: a wrong answer, an error without a code, no answer at all, or a router
//!   refusing the connection (routers must never stop).
//!
//! It ends with exactly one line on stdout, `topology: N requests, F failed, R retried, lost L`
//! (N requests made, F answers that were clean errors, R requests sent again after one, L lost)
//! and exits non-zero when L > 0, nothing was sent, or a router answered with fewer than
//! `--min-versions` supergraph versions (a new version must have been picked up).
//!
//! With `--identity-port`, it is also a signed-in reader: it serves a JWKS on that port (the
//! routers' `GOSPELIB_AUTH_JWKS_URL`) holding a test key, signs a Clerk-style session token
//! with it, and adds to the mix a highlight made with a client id (a mutation: sent again, it
//! answers the highlight already made) and the verse with the reader's highlights. Those run
//! the platform's identity path across processes: each router verifies the token and signs
//! the caller for study with study's key (study's process holds only its own), the mutation's
//! request for one use (its nonce claimed in the Redis every study process shares), and
//! content is sent the caller's scopes only.
//!
//! With `--bust-redis`, the content version key (`gl:content:version`) is set to a new value
//! every `--bust-every-ms`: content's Redis cache and the router's entity cache are keyed by it,
//! so they keep going cold and FalkorDB (its replica) is really read throughout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "gospelib-topology-load",
    about = "Steady, checked load through the Phase 2 topology's routers"
)]
struct Cli {
    /// A router's base URL (`http://127.0.0.1:24000`); give each router.
    #[arg(long = "router", required = true)]
    routers: Vec<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// A worker's pause between two requests (a steady load, not a flood).
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// The load stops once this file exists.
    #[arg(long)]
    stop_file: PathBuf,
    /// Written once the expected answers are captured and the load runs.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// How long one request may keep being sent again after its first clean error.
    #[arg(long, default_value_t = 10_000)]
    retry_for_ms: u64,
    /// How long a router may take to answer one request.
    #[arg(long, default_value_t = 15_000)]
    request_timeout_ms: u64,
    /// How long the topology may take to answer every operation correctly at the start.
    #[arg(long, default_value_t = 60_000)]
    capture_for_ms: u64,
    /// Each router must answer with at least this many supergraph versions.
    #[arg(long, default_value_t = 1)]
    min_versions: usize,
    /// The Redis (URL, with its database) holding the content version key to change.
    #[arg(long)]
    bust_redis: Option<String>,
    #[arg(long, default_value = "gl:content:version")]
    bust_key: String,
    #[arg(long, default_value_t = 200)]
    bust_every_ms: u64,
    /// Serve a JWKS at `http://127.0.0.1:<port>/jwks.json` and add the signed-in part of the
    /// mix, as a reader whose session token its key signs.
    #[arg(long)]
    identity_port: Option<u16>,
    /// The token's `iss` (the routers' GOSPELIB_AUTH_ISSUER).
    #[arg(long, default_value = "https://clerk.topology.gospelib.test")]
    issuer: String,
    /// The token's `azp` (the routers' GOSPELIB_AUTH_AUDIENCE).
    #[arg(long, default_value = "https://app.topology.gospelib.test")]
    audience: String,
}

/// One operation of the mix.
struct Operation {
    name: &'static str,
    query: &'static str,
    variables: Value,
    /// The root field whose answer must not be empty when captured.
    root: &'static str,
    /// Sent with the reader's session token.
    signed_in: bool,
}

const READING_VIEW: &str = "query ReadingView($bookId: ID!, $number: Int!) {
  chapter(bookId: $bookId, number: $number) {
    id reference verseCount
    book { id title testament chapterCount }
    verses { id verse text crossReferences(first: 5) { totalCount nodes { id reference } } }
  }
}";

const PASSAGE: &str = "query Passage($id: ID!) {
  passage(id: $id) {
    id reference text
    crossReferences(first: 10) { totalCount nodes { id reference text } }
  }
}";

const SEARCH: &str = "query Search($query: String!, $testament: Testament) {
  search(query: $query, filter: { testament: $testament }, first: 10) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { highlight node { id reference } }
    facets { field values { value count } }
  }
}";

const CHAPTER: &str = "query Chapter($bookId: ID!, $number: Int!) {
  chapter(bookId: $bookId, number: $number) { id reference verses { id verse text } }
}";

fn mix() -> Vec<Operation> {
    vec![
        (
            "ReadingView john 3",
            READING_VIEW,
            json!({"bookId": "john", "number": 3}),
            "chapter",
        ),
        (
            "Passage john.3.16",
            PASSAGE,
            json!({"id": "john.3.16"}),
            "passage",
        ),
        (
            "Search love (NT)",
            SEARCH,
            json!({"query": "love", "testament": "NEW"}),
            "search",
        ),
        (
            "Passage gen.1.1",
            PASSAGE,
            json!({"id": "gen.1.1"}),
            "passage",
        ),
        (
            "Chapter ps 23",
            CHAPTER,
            json!({"bookId": "ps", "number": 23}),
            "chapter",
        ),
        (
            "Search beginning",
            SEARCH,
            json!({"query": "beginning"}),
            "search",
        ),
        (
            "ReadingView gen 1",
            READING_VIEW,
            json!({"bookId": "gen", "number": 1}),
            "chapter",
        ),
        (
            "Passage 1-ne.3.7",
            PASSAGE,
            json!({"id": "1-ne.3.7"}),
            "passage",
        ),
        (
            "Search shepherd",
            SEARCH,
            json!({"query": "shepherd"}),
            "search",
        ),
    ]
    .into_iter()
    .map(|(name, query, variables, root)| Operation {
        name,
        query,
        variables,
        root,
        signed_in: false,
    })
    .collect()
}

const MARK: &str = "mutation Mark($input: CreateHighlightInput!) {
  createHighlight(input: $input) { id passageId color passage { id reference } }
}";

const MY_VERSE: &str = "query MyVerse($id: ID!) {
  passage(id: $id) { id reference text myHighlights { id color } }
}";

/// The signed-in part of the mix, for a reader whose highlight is `highlight`: made first (so
/// the verse's answer, captured after it, holds it), then made again and read in turn.
fn signed_in_mix(highlight: &str) -> Vec<Operation> {
    vec![
        Operation {
            name: "Mark john.3.16 (signed in)",
            query: MARK,
            variables: json!({"input": {"id": highlight, "passageId": "john.3.16", "color": "FAITH"}}),
            root: "createHighlight",
            signed_in: true,
        },
        Operation {
            name: "MyVerse john.3.16 (signed in)",
            query: MY_VERSE,
            variables: json!({"id": "john.3.16"}),
            root: "passage",
            signed_in: true,
        },
    ]
}

/// How one answer came out.
enum Outcome {
    Correct,
    /// A clean, retryable error (why).
    Clean(String),
    /// Lost (why).
    Lost(String),
}

/// One answer of a router: its status, body and supergraph version, or why there was none.
struct Answer {
    status: u16,
    body: Option<Value>,
    version: Option<String>,
}

struct Load {
    client: reqwest::Client,
    routers: Vec<String>,
    operations: Vec<Operation>,
    expected: Vec<Value>,
    stop: AtomicBool,
    requests: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    lost: AtomicU64,
    /// Requests that took over a second (retries included), and the longest, in milliseconds.
    slow: AtomicU64,
    longest_ms: AtomicU64,
    began: Instant,
    /// Each router's supergraph versions, in the order they appeared.
    versions: Mutex<BTreeMap<String, Vec<String>>>,
    retry_for: Duration,
    pause: Duration,
    /// The signed-in reader's session token (`--identity-port`).
    token: Option<String>,
}

impl Load {
    async fn ask(&self, router: &str, operation: &Operation) -> Result<Answer, String> {
        let mut request = self
            .client
            .post(format!("{router}/graphql"))
            .header("content-type", "application/json")
            .json(&json!({"query": operation.query, "variables": operation.variables}));
        if operation.signed_in {
            let token = self.token.as_deref().ok_or("no session token")?;
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("no answer from {router}: {error:#}"))?;
        let status = response.status().as_u16();
        let version = response
            .headers()
            .get("x-supergraph-version")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|error| format!("the answer from {router} broke off: {error:#}"))?;
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).ok(),
            version,
        })
    }

    fn note_version(&self, router: &str, version: Option<&str>) {
        let Some(version) = version else { return };
        let mut versions = self.versions.lock().unwrap();
        let seen = versions.entry(router.to_owned()).or_default();
        if seen.last().map(String::as_str) != Some(version) {
            if let Some(last) = seen.last() {
                eprintln!("load: {router} now answers with supergraph {version} (was {last})");
            }
            seen.push(version.to_owned());
        }
    }

    /// Judges one answer against the expected data.
    fn judge(answer: &Answer, expected: &Value) -> Outcome {
        let Some(body) = &answer.body else {
            return if answer.status == 503 {
                Outcome::Clean("HTTP 503".to_owned())
            } else {
                Outcome::Lost(format!("HTTP {} without a JSON body", answer.status))
            };
        };
        let errors = body["errors"].as_array().cloned().unwrap_or_default();
        if !errors.is_empty() {
            let codes: Vec<Option<&str>> = errors
                .iter()
                .map(|error| error["extensions"]["code"].as_str())
                .collect();
            return if codes.iter().all(Option::is_some) {
                let codes: Vec<&str> = codes.into_iter().flatten().collect();
                Outcome::Clean(format!("HTTP {} {}", answer.status, codes.join(",")))
            } else {
                Outcome::Lost(format!("an error without a code: {}", Value::Array(errors)))
            };
        }
        if answer.status == 503 {
            return Outcome::Clean("HTTP 503".to_owned());
        }
        if answer.status != 200 {
            return Outcome::Lost(format!("HTTP {} without errors", answer.status));
        }
        if &body["data"] == expected {
            Outcome::Correct
        } else {
            Outcome::Lost(format!(
                "a wrong answer: {}",
                truncate(&body["data"].to_string(), 600)
            ))
        }
    }

    /// Captures each operation's answer, the same from every router, before the load starts.
    async fn capture(&mut self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut expected = Vec::new();
        for operation in &self.operations {
            let data = loop {
                match self.capture_one(operation).await {
                    Ok(data) => break data,
                    Err(why) if started.elapsed() < within => {
                        eprintln!("load: capturing {}: {why}; again", operation.name);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(why) => bail!("cannot capture the answer of {}: {why}", operation.name),
                }
            };
            expected.push(data);
        }
        self.expected = expected;
        Ok(())
    }

    async fn capture_one(&self, operation: &Operation) -> Result<Value, String> {
        let mut agreed: Option<Value> = None;
        for router in &self.routers {
            let answer = self.ask(router, operation).await?;
            self.note_version(router, answer.version.as_deref());
            let body = answer
                .body
                .ok_or(format!("HTTP {} without JSON", answer.status))?;
            if answer.status != 200 || body.get("errors").is_some() {
                return Err(format!("{router} answered {}: {body}", answer.status));
            }
            let data = body["data"].clone();
            let root = &data[operation.root];
            let empty = root.is_null()
                || root
                    .get("edges")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty);
            if empty {
                return Err(format!(
                    "{router} answered an empty {}: {data}",
                    operation.root
                ));
            }
            match &agreed {
                Some(first) if first != &data => {
                    return Err(format!("the routers disagree: {first} vs {data}"));
                }
                Some(_) => {}
                None => agreed = Some(data),
            }
        }
        agreed.ok_or_else(|| "no router".to_owned())
    }

    /// One worker: the mix in turn until stopped.
    async fn work(self: Arc<Self>, worker: usize) {
        let mut turn = worker;
        while !self.stop.load(Ordering::Relaxed) {
            let index = turn % self.operations.len();
            let (operation, expected) = (&self.operations[index], &self.expected[index]);
            let mut router = turn % self.routers.len();
            turn += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            // When this request's first clean error came: it is sent again for `retry_for`
            // from then on.
            let mut first_error: Option<Instant> = None;
            loop {
                let url = &self.routers[router];
                let outcome = match self.ask(url, operation).await {
                    Ok(answer) => {
                        self.note_version(url, answer.version.as_deref());
                        Self::judge(&answer, expected)
                    }
                    Err(why) => Outcome::Lost(why),
                };
                match outcome {
                    Outcome::Correct => break,
                    Outcome::Lost(why) => {
                        self.lose(operation, url, &why);
                        break;
                    }
                    Outcome::Clean(why) => {
                        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                        if failed <= 20 || failed.is_power_of_two() {
                            eprintln!(
                                "load: {} through {url}: {why} (clean error #{failed}); sent again",
                                operation.name
                            );
                        }
                        let since = *first_error.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.retry_for {
                            self.lose(
                                operation,
                                url,
                                &format!("still failing after {:?}: {why}", self.retry_for),
                            );
                            break;
                        }
                        self.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        router = (router + 1) % self.routers.len();
                    }
                }
            }
            let took = started.elapsed();
            if took >= Duration::from_secs(1) {
                let slow = self.slow.fetch_add(1, Ordering::Relaxed) + 1;
                if slow <= 100 {
                    eprintln!(
                        "load: {:>5.1} s: {} took {} ms",
                        self.began.elapsed().as_secs_f64(),
                        operation.name,
                        took.as_millis()
                    );
                }
            }
            self.longest_ms
                .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(self.pause).await;
        }
    }

    fn lose(&self, operation: &Operation, router: &str, why: &str) {
        let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
        if lost <= 50 {
            eprintln!("load: LOST {} through {router}: {why}", operation.name);
        }
    }
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The key the reader's session token is signed with: the router tests' first test key (a
/// test key: nothing here is a secret).
const IDENTITY_KEY_PEM: &[u8] = include_bytes!("../../../router/tests/fixtures/jwt/key1.pem");
const IDENTITY_KID: &str = "topology-key";

/// Serves the JWKS on `port` (in the background, for the load's run) and returns a session
/// token for one reader, good for an hour (the longest the routers accept).
async fn sign_in(port: u16, issuer: &str, audience: &str) -> anyhow::Result<String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
    use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
    let signing = EncodingKey::from_rsa_pem(IDENTITY_KEY_PEM).context("the test key")?;
    let jwk = Jwk::from_encoding_key(&signing, Algorithm::RS256).context("its JWK")?;
    let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
        bail!("an RSA key gives an RSA JWK");
    };
    let jwks = json!({"keys": [{"kty": "RSA", "kid": IDENTITY_KID, "use": "sig", "alg": "RS256",
                                "n": rsa.n, "e": rsa.e}]});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(IDENTITY_KID.to_owned());
    let now = get_current_timestamp();
    let claims = json!({"sub": "user_topology_reader", "sid": "sess_topology", "iss": issuer,
                        "azp": audience, "iat": now, "nbf": now, "exp": now + 3_600});
    let token = jsonwebtoken::encode(&header, &claims, &signing).context("signing")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("the JWKS port {port}"))?;
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("load: the JWKS server stopped: {error}");
        }
    });
    Ok(token)
}

/// Sets the content version key to a new value every `every` until stopped.
async fn bust_caches(url: String, key: String, every: Duration, load: Arc<Load>) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("load: cannot bust the caches ({url}): {error}");
            return;
        }
    };
    let mut connection = None;
    let mut round = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        if connection.is_none() {
            connection = client.get_multiplexed_async_connection().await.ok();
        }
        if let Some(redis) = connection.as_mut() {
            round += 1;
            let set: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(format!("topology-load-{}-{round}", std::process::id()))
                .query_async(redis)
                .await;
            if set.is_err() {
                connection = None;
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("load: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(cli.request_timeout_ms))
        .pool_max_idle_per_host(cli.concurrency * 2)
        .build()
        .context("HTTP client")?;
    let routers: Vec<String> = cli
        .routers
        .iter()
        .map(|router| router.trim_end_matches('/').to_owned())
        .collect();
    let mut operations = mix();
    let token = match cli.identity_port {
        Some(port) => {
            let token = sign_in(port, &cli.issuer, &cli.audience).await?;
            // A highlight of this run's own: its answer is the same each time it is made.
            operations.extend(signed_in_mix(&uuid::Uuid::new_v4().to_string()));
            Some(token)
        }
        None => None,
    };
    let mut load = Load {
        client,
        routers,
        operations,
        expected: Vec::new(),
        stop: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        retried: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        slow: AtomicU64::new(0),
        longest_ms: AtomicU64::new(0),
        began: Instant::now(),
        versions: Mutex::new(BTreeMap::new()),
        retry_for: Duration::from_millis(cli.retry_for_ms),
        pause: Duration::from_millis(cli.pause_ms),
        token,
    };
    load.capture(Duration::from_millis(cli.capture_for_ms))
        .await?;
    eprintln!(
        "load: captured the expected answers of {} operations through {} routers",
        load.operations.len(),
        load.routers.len()
    );
    let load = Arc::new(load);
    let mut tasks = Vec::new();
    if let Some(url) = cli.bust_redis.clone() {
        tasks.push(tokio::spawn(bust_caches(
            url,
            cli.bust_key.clone(),
            Duration::from_millis(cli.bust_every_ms),
            load.clone(),
        )));
    }
    for worker in 0..cli.concurrency.max(1) {
        tasks.push(tokio::spawn(load.clone().work(worker)));
    }
    if let Some(ready) = &cli.ready_file {
        std::fs::write(ready, "running\n").context("the ready file")?;
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        if cli.stop_file.exists() {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "load: {:>3} s: {} requests, {} failed, {} retried, lost {}",
                started.elapsed().as_secs(),
                load.requests.load(Ordering::Relaxed),
                load.failed.load(Ordering::Relaxed),
                load.retried.load(Ordering::Relaxed),
                load.lost.load(Ordering::Relaxed),
            );
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let (requests, failed, retried, lost) = (
        load.requests.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
        load.retried.load(Ordering::Relaxed),
        load.lost.load(Ordering::Relaxed),
    );
    eprintln!(
        "load: {} requests took over a second (retries included); the longest {} ms",
        load.slow.load(Ordering::Relaxed),
        load.longest_ms.load(Ordering::Relaxed)
    );
    let mut passed = lost == 0 && requests > 0;
    for router in &load.routers {
        let versions = load
            .versions
            .lock()
            .unwrap()
            .get(router)
            .cloned()
            .unwrap_or_default();
        eprintln!(
            "load: {router} answered with supergraph versions {}",
            versions.join(" → ")
        );
        if versions.len() < cli.min_versions {
            eprintln!(
                "load: {router} answered with {} supergraph version(s), {} expected: it did not pick up the new one",
                versions.len(),
                cli.min_versions
            );
            passed = false;
        }
    }
    println!("topology: {requests} requests, {failed} failed, {retried} retried, lost {lost}");
    Ok(passed)
}

//! Fuzzing the router's whole request path over HTTP: body parsing, document parsing, the
//! operation limits, validation, variables, execution. Generated requests: arbitrary bytes as a
//! JSON body; JSON bodies whose documents come from a small grammar over the schemas' names (and
//! unknown ones; fragments, directives, variables; tokens dropped, duplicated, swapped) or from a
//! typed grammar that mostly gets as far as execution, with variables of any shape, size and
//! depth; deep nesting, many aliases, doubling fragments, fragment cycles; GET query strings with
//! and without a preflight header; other methods and paths; odd `accept` and `content-type`.
//! Fixed seeds run first, every time: the doubling-fragment attack at 26 and 40 fragments, 500
//! levels of nesting, 5,000 aliases, a fragment cycle, 60 KB of variables 1,000 deep, bodies at
//! and just over the size limit, and the inputs earlier runs found bugs with.
//!
//! Every response must arrive (10 s per request: a hang detector, not a speed requirement), with
//! an expected status and a JSON body that is a well-formed GraphQL response (`data`, or errors
//! each with a `message` and, unless forwarded from a subgraph beside data, an
//! `extensions.code`); a refusal by a limit has the code `VALIDATION_ERROR`; no thread of the
//! server may panic.
//!
//! It runs 1,000 generated cases by default (a few seconds in a debug build). For a longer run,
//! set the number; each run starts from a fresh random seed, and `--nocapture` shows what the
//! run saw (statuses, outcomes, the slowest requests):
//!
//! ```sh
//! GOSPELIB_FUZZ_CASES=50000 cargo test -p gospelib-router --test fuzz -- --nocapture
//! ```
//!
//! Requests go over a loopback socket, written and read byte by byte, so that headers (or their
//! absence) and query strings are exactly the generated ones.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::InProcess;
use gospelib_router::validation::Limits;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use support::attacks::{doubling_fragments, platform_supergraph};
use support::{SDL, products, reviews, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body limit of the app under test.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest request URI generated (hyper refuses those over 64 KiB with a bodiless 414).
const MAX_URI_BYTES: usize = 32 * 1024;
/// How long one request may take before it counts as a hang (not a speed requirement).
const HANG_AFTER: Duration = Duration::from_secs(10);
/// The statuses the GraphQL endpoint may answer with.
const EXPECTED_STATUSES: [u16; 8] = [200, 400, 401, 404, 405, 406, 413, 415];

// ---- the servers under test ----

/// Which router answers a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The products/reviews demo supergraph, both subgraphs in process, default settings.
    Demo,
    /// The platform's supergraph (`Passage.next`/`previous` recurse), no subgraph reachable.
    Platform,
    /// The platform's supergraph with depth allowed up to 1,000: the cost limit must hold alone.
    PlatformDeepAllowed,
}

impl Target {
    fn max_depth(self) -> usize {
        match self {
            Target::Demo | Target::Platform => Limits::default().max_depth,
            Target::PlatformDeepAllowed => 1_000,
        }
    }
}

struct Servers {
    runtime: tokio::runtime::Runtime,
    demo: String,
    platform: String,
    platform_deep_allowed: String,
}

impl Servers {
    fn address(&self, target: Target) -> &str {
        match target {
            Target::Demo => &self.demo,
            Target::Platform => &self.platform,
            Target::PlatformDeepAllowed => &self.platform_deep_allowed,
        }
    }
}

/// The whole HTTP app (the kit's server with the router as its gateway) on a loopback port.
async fn serve_router(router: Router) -> String {
    let (url, stop) = start_gateway(
        Arc::new(RouterService::new(Arc::new(router))),
        MAX_BODY_BYTES,
    )
    .await;
    // The servers live as long as the test process.
    std::mem::forget(stop);
    url.trim_start_matches("http://").to_owned()
}

/// The three apps, built once for every case.
fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Every case comes from one address: a planning budget would soon refuse them all
        // before the planner, which is what the fuzzing is for.
        let settings = RouterSettings {
            planning_budget: None,
            ..RouterSettings::default()
        };
        let (demo, platform, platform_deep_allowed) = runtime.block_on(async {
            let demo = Router::from_settings(
                Supergraph::parse(SDL, None).unwrap(),
                Arc::new(
                    InProcess::default()
                        .with("products", products())
                        .with("reviews", reviews()),
                ),
                &settings,
            );
            let platform = Router::from_settings(
                platform_supergraph(),
                Arc::new(InProcess::default()),
                &settings,
            );
            let deep_allowed = RouterSettings {
                limits: Limits {
                    max_depth: Target::PlatformDeepAllowed.max_depth(),
                    ..Limits::default()
                },
                ..settings.clone()
            };
            let platform_deep_allowed = Router::from_settings(
                platform_supergraph(),
                Arc::new(InProcess::default()),
                &deep_allowed,
            );
            (
                serve_router(demo).await,
                serve_router(platform).await,
                serve_router(platform_deep_allowed).await,
            )
        });
        Servers {
            runtime,
            demo,
            platform,
            platform_deep_allowed,
        }
    })
}

/// Panics on any thread of the process (the server's tasks and blocking planners included).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

// ---- requests and responses, byte by byte ----

/// What a response must show beyond the properties every response has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Anything,
    /// Refused by an operation limit (depth, aliases, root fields, cost, tokens, nesting).
    LimitRefusal,
    /// Refused before execution as invalid (e.g. a fragment cycle).
    ValidationRefusal,
    /// The body is over the limit: 413.
    TooLarge,
}

#[derive(Clone)]
struct Case {
    target: Target,
    method: &'static str,
    /// Path and query string, as sent.
    uri: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    expect: Expect,
}

/// Long bodies and URIs are shortened in failure reports.
fn shortened(bytes: &[u8]) -> String {
    shortened_to(bytes, 600)
}

fn shortened_to(bytes: &[u8], shown: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= shown {
        return text.into_owned();
    }
    let cut = (0..=shown)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… ({} bytes in all)", &text[..cut], bytes.len())
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value)))
            .collect();
        f.debug_struct("Case")
            .field("target", &self.target)
            .field("method", &self.method)
            .field("uri", &shortened(self.uri.as_bytes()))
            .field("headers", &headers)
            .field("body", &shortened(&self.body))
            .field("expect", &self.expect)
            .finish()
    }
}

impl Case {
    /// A JSON POST to `/graphql` with the usual headers; one whose body is over the limit can
    /// only expect a 413.
    fn post(target: Target, body: Vec<u8>, expect: Expect) -> Self {
        let expect = if body.len() > MAX_BODY_BYTES {
            Expect::TooLarge
        } else {
            expect
        };
        Case {
            target,
            method: "POST",
            uri: "/graphql".to_owned(),
            headers: vec![("content-type", b"application/json".to_vec())],
            body,
            expect,
        }
    }

    /// A POST of `{"query": …, "variables": …}`.
    fn query(target: Target, query: &str, variables: Value, expect: Expect) -> Self {
        let body = serde_json::to_vec(&json!({ "query": query, "variables": variables })).unwrap();
        Case::post(target, body, expect)
    }

    fn raw_request(&self) -> Vec<u8> {
        let mut request = format!(
            "{} {} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n",
            self.method, self.uri
        )
        .into_bytes();
        for (name, value) in &self.headers {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        if self.method != "GET" || !self.body.is_empty() {
            request
                .extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(&self.body);
        request
    }
}

struct HttpResponse {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends the request and reads the response until the server closes the connection. The
/// request is written while the response is read: a server refusing a large body may answer
/// (and close) before reading all of it.
async fn exchange(address: &str, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        // A write error means the server stopped reading; its answer is still read.
        let _ = writer.write_all(&request).await;
        writer
    };
    let read = async {
        let mut response = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
                // A reset after a refused body: what arrived before it is the answer.
                Err(_) if !response.is_empty() => break,
                Err(error) => return Err(format!("read: {error}")),
            }
        }
        Ok(response)
    };
    let (_writer, response) = tokio::join!(write, read);
    response
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {:?}", shortened(raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_type = String::new();
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-type" => content_type = value.to_ascii_lowercase(),
            "content-length" => content_length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match content_length {
            Some(length) if rest.len() < length => {
                return Err(format!("body cut short: {} of {length} bytes", rest.len()));
            }
            Some(length) => rest[..length].to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("a chunk cut short".to_owned());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---- the properties ----

/// What the run saw, printed at its end (`--nocapture`): statuses, planning deadlines missed,
/// the slowest requests.
#[derive(Default)]
struct Tally {
    statuses: std::collections::BTreeMap<u16, usize>,
    /// `data` for answers with data, else the first error's code.
    outcomes: std::collections::BTreeMap<String, usize>,
    planning_timeouts: usize,
    slowest: Vec<(Duration, String)>,
}

static TALLY: Mutex<Option<Tally>> = Mutex::new(None);

fn record(case: &Case, elapsed: Duration, response: Option<&HttpResponse>) {
    let mut tally = TALLY.lock().unwrap();
    let tally = tally.get_or_insert_with(Tally::default);
    if let Some(response) = response {
        *tally.statuses.entry(response.status).or_default() += 1;
        let body = String::from_utf8_lossy(&response.body);
        if body.contains("could not be planned within") {
            tally.planning_timeouts += 1;
        }
        let json: Value = serde_json::from_str(&body).unwrap_or_default();
        let outcome = if json.get("data").is_some_and(|data| !data.is_null()) {
            "data".to_owned()
        } else {
            json["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("(no code)")
                .to_owned()
        };
        *tally.outcomes.entry(outcome).or_default() += 1;
    }
    let what = format!("{:?} {} {}", case.target, case.method, case.uri);
    let what = format!("{what} {}", String::from_utf8_lossy(&case.body));
    tally
        .slowest
        .push((elapsed, shortened_to(what.as_bytes(), 160)));
    tally
        .slowest
        .sort_by_key(|(elapsed, _)| std::cmp::Reverse(*elapsed));
    tally.slowest.truncate(3);
}

/// Sends the case and checks every property; the error says which one failed.
fn run_case(case: &Case) -> Result<(), String> {
    let servers = servers();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let started = Instant::now();
    let raw = servers.runtime.block_on(async {
        tokio::time::timeout(
            HANG_AFTER,
            exchange(servers.address(case.target), case.raw_request()),
        )
        .await
    });
    let elapsed = started.elapsed();
    let raw = raw.map_err(|_| format!("no response within {HANG_AFTER:?}"))??;
    let response = parse_response(&raw)?;
    record(case, elapsed, Some(&response));
    // A panic in a request's task shows even when the response hides it.
    let panics = PANICS.load(Ordering::SeqCst) - panics_before;
    if panics > 0 {
        return Err(format!("{panics} panic(s) while serving the request"));
    }
    check_response(case, &response)
}

/// Whether an error is a refusal by one of the operation's limits.
fn is_operation_limit(message: &str) -> bool {
    let lowered = message.to_lowercase();
    (lowered.starts_with("the operation has") && lowered.contains("more than the limit"))
        || (lowered.starts_with("syntax error")
            && (lowered.contains("recursion limit") || lowered.contains("token limit")))
}

/// The nesting of objects in a JSON value (lists do not count: a field's level is an object).
fn object_depth(value: &Value) -> usize {
    match value {
        Value::Object(fields) => 1 + fields.values().map(object_depth).max().unwrap_or(0),
        Value::Array(items) => items.iter().map(object_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_response(case: &Case, response: &HttpResponse) -> Result<(), String> {
    let status = response.status;
    if !EXPECTED_STATUSES.contains(&status) {
        return Err(format!("unexpected status {status}"));
    }
    let path = case.uri.split('?').next().unwrap_or_default();
    let is_graphql_post = case.method == "POST" && path == "/graphql";
    if is_graphql_post && case.body.len() > MAX_BODY_BYTES && status != 413 {
        return Err(format!("a body over the limit got {status}, not 413"));
    }
    if status == 413 && !(is_graphql_post && case.body.len() > MAX_BODY_BYTES) {
        return Err("413 for a body within the limit".to_owned());
    }
    if case.expect == Expect::TooLarge && status != 413 {
        return Err(format!("expected 413, got {status}"));
    }
    // Only a credential the router cannot accept (the fuzzer's API keys are never real).
    let has_credential = case
        .headers
        .iter()
        .any(|(name, value)| *name == "x-api-key" && !value.trim_ascii().is_empty());
    if status == 401 && !has_credential {
        return Err("401 for a request without a credential".to_owned());
    }
    if response.content_type.starts_with("text/html") {
        // GraphiQL, for a browser's GET without a query.
        return if case.method == "GET" && status == 200 {
            Ok(())
        } else {
            Err(format!("an HTML answer to a {} ({status})", case.method))
        };
    }
    let body: Value = serde_json::from_slice(&response.body).map_err(|e| {
        format!(
            "the body is not JSON ({e}): {:?} (content-type {:?})",
            shortened(&response.body),
            response.content_type
        )
    })?;
    if path == "/health" && case.method == "GET" {
        return if body == json!({"status": "ok"}) {
            Ok(())
        } else {
            Err(format!("/health answered {body}"))
        };
    }
    if let (Value::Array(answers), "POST") = (&body, case.method) {
        // A batch (a JSON array of requests): one GraphQL response per operation, with 200.
        if status != 200 || answers.is_empty() {
            return Err(format!(
                "a batch answered {status} with {} answers",
                answers.len()
            ));
        }
        for answer in answers {
            check_graphql_response(case, answer).map_err(|problem| {
                format!(
                    "{problem} (in a batch); body {}",
                    shortened(body.to_string().as_bytes())
                )
            })?;
        }
        return Ok(());
    }
    check_graphql_response(case, &body).map_err(|problem| {
        format!(
            "{problem}; status {status}; body {}",
            shortened(body.to_string().as_bytes())
        )
    })
}

fn check_graphql_response(case: &Case, body: &Value) -> Result<(), String> {
    let object = body.as_object().ok_or("not a JSON object")?;
    let data = object.get("data").filter(|data| !data.is_null());
    let errors = match object.get("errors") {
        None => &Vec::new(),
        Some(Value::Array(errors)) if !errors.is_empty() => errors,
        Some(_) => return Err("`errors` is not a non-empty list".to_owned()),
    };
    if !object.contains_key("data") && errors.is_empty() {
        return Err("neither `data` nor `errors`".to_owned());
    }
    if data.is_none() && errors.is_empty() {
        return Err("no data and no errors".to_owned());
    }
    for error in errors {
        let message = error["message"]
            .as_str()
            .ok_or("an error without a string `message`")?;
        // Every error has a code, a subgraph's too (one it did not classify is INTERNAL_ERROR).
        let Some(Value::String(code)) = error["extensions"].get("code") else {
            return Err("an error without a string `extensions.code`".to_owned());
        };
        if message.contains("planning failed") {
            return Err("planning panicked".to_owned());
        }
        if is_operation_limit(message) && code != "VALIDATION_ERROR" {
            return Err(format!("a limit's refusal has the code {code}"));
        }
    }
    if let Some(data) = data {
        // `data` itself is one object; each level of the operation adds one more.
        let depth = object_depth(data);
        if depth > case.target.max_depth() + 1 {
            return Err(format!("`data` nests {depth} objects deep"));
        }
    }
    let refused = data.is_none() && !errors.is_empty();
    let codes = || errors.iter().map(|e| e["extensions"]["code"].as_str());
    match case.expect {
        Expect::Anything | Expect::TooLarge => Ok(()),
        Expect::LimitRefusal => {
            let by_limit = errors.iter().any(|e| {
                e["message"].as_str().is_some_and(is_operation_limit)
                    && e["extensions"]["code"] == "VALIDATION_ERROR"
            });
            if refused && by_limit {
                Ok(())
            } else {
                Err("expected a refusal by a limit, with VALIDATION_ERROR".to_owned())
            }
        }
        Expect::ValidationRefusal => {
            if refused && codes().all(|code| code == Some("VALIDATION_ERROR")) {
                Ok(())
            } else {
                Err("expected a refusal with VALIDATION_ERROR".to_owned())
            }
        }
    }
}

// ---- seeds: attacks that run every time ----

/// `{ topProducts { reviews { next { topProducts … body … } } } }`: `levels` fields around a
/// leaf (most of them wrong for their types; the limits come before validation).
fn nested_fields(levels: usize) -> String {
    let names = ["topProducts", "reviews", "next"];
    let mut query = String::from("{ ");
    for level in 0..levels {
        query.push_str(names[level % names.len()]);
        query.push_str(" { ");
    }
    query.push_str("body");
    query.push_str(&" }".repeat(levels));
    query.push_str(" }");
    query
}

fn many_aliases(count: usize) -> String {
    let aliases: Vec<String> = (0..count).map(|i| format!("a{i}: name")).collect();
    format!("{{ topProducts {{ {} }} }}", aliases.join(" "))
}

/// A variables object of about `bytes` bytes (at least 20 a level), `levels` objects deep.
fn deep_variables(levels: usize, bytes: usize) -> String {
    // `{"pad123":"…","n":` and `}`: about 20 bytes a level besides the padding.
    let padding = "x".repeat((bytes / levels.max(1)).saturating_sub(20));
    let mut text = String::new();
    for level in 0..levels {
        text.push_str(&format!("{{\"pad{level}\":\"{padding}\",\"n\":"));
    }
    text.push('1');
    text.push_str(&"}".repeat(levels));
    text
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn seeds() -> Vec<(&'static str, Case)> {
    use Expect::*;
    use Target::*;
    let no_variables = json!({});
    let just_over_the_limit = {
        let mut body = br#"{"query":"{ topProducts { name } }","pad":""#.to_vec();
        body.resize(MAX_BODY_BYTES - 1, b'x');
        body.extend_from_slice(b"\"}");
        body
    };
    let at_the_limit = just_over_the_limit[..MAX_BODY_BYTES - 2]
        .iter()
        .chain(b"\"}")
        .copied()
        .collect::<Vec<u8>>();
    let deep_variables_body = format!(
        r#"{{"query":"query($n: Int) {{ topProducts(first: $n) {{ name }} }}","variables":{}}}"#,
        deep_variables(1_000, 60 * 1024)
    );
    assert!(
        deep_variables_body.len() <= MAX_BODY_BYTES,
        "the 60 KB seed fits the limit"
    );
    let wide_variables = {
        let mut fields: serde_json::Map<String, Value> = (0..3_000)
            .map(|i| (format!("v{i}"), json!([i, "x", {"k": null}])))
            .collect();
        fields.insert("v0".to_owned(), json!(2));
        Value::Object(fields)
    };
    // Within every limit, but validation compares each pair of same-named fields: quadratic.
    let same_field_many_times = format!(
        "{{ topProducts(first: 1) {{ {} }} }}",
        "name ".repeat(3_000)
    );
    let deep_list_argument = format!(
        "{{ topProducts(first: {}1{}) {{ name }} }}",
        "[".repeat(500),
        "]".repeat(500)
    );
    // Braces unencoded: the URI stays under the 64 KiB hyper accepts.
    let deep_get = format!(
        "/graphql?query={}{}",
        "{a".repeat(20_000),
        "}".repeat(20_000)
    );
    let fragment_cycle = "{ topProducts { ...A } } \
        fragment A on Product { name ...B } fragment B on Product { upc ...A }";
    vec![
        (
            "doubling fragments, 26",
            Case::query(
                Platform,
                &doubling_fragments(26),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "doubling fragments, 40",
            Case::query(
                Platform,
                &doubling_fragments(40),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "doubling fragments, 26, depth allowed",
            Case::query(
                PlatformDeepAllowed,
                &doubling_fragments(26),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "doubling fragments, 40, depth allowed",
            Case::query(
                PlatformDeepAllowed,
                &doubling_fragments(40),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "500-deep nesting",
            Case::query(
                Demo,
                &nested_fields(500),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "40-deep nesting (under the parser's bracket limit)",
            Case::query(Demo, &nested_fields(40), no_variables.clone(), LimitRefusal),
        ),
        (
            "500-deep nesting, depth allowed",
            Case::query(
                PlatformDeepAllowed,
                &nested_fields(500),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "5000 aliases",
            Case::query(
                Demo,
                &many_aliases(5_000),
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "31 aliases",
            Case::query(Demo, &many_aliases(31), no_variables.clone(), LimitRefusal),
        ),
        (
            "a fragment cycle",
            Case::query(
                Demo,
                fragment_cycle,
                no_variables.clone(),
                ValidationRefusal,
            ),
        ),
        (
            "a selection under __typename (the planner's normalization panicked on it)",
            Case::query(
                Demo,
                "{ __typename { ... { name } } }",
                no_variables.clone(),
                ValidationRefusal,
            ),
        ),
        (
            "60 KB of variables nested 1000 deep",
            Case::post(Demo, deep_variables_body.into_bytes(), Anything),
        ),
        (
            "3000 variables, one declared",
            Case::query(
                Demo,
                "query($v0: Int) { topProducts(first: $v0) { name } }",
                wide_variables,
                Anything,
            ),
        ),
        (
            "a body just over the limit",
            Case::post(Demo, just_over_the_limit, TooLarge),
        ),
        (
            "a body at the limit",
            Case::post(Demo, at_the_limit, Anything),
        ),
        (
            "one field 3000 times (within every limit)",
            Case::query(Demo, &same_field_many_times, no_variables.clone(), Anything),
        ),
        (
            "a list argument 500 deep",
            Case::query(
                Demo,
                &deep_list_argument,
                no_variables.clone(),
                LimitRefusal,
            ),
        ),
        (
            "a GET of a document 20000 braces deep",
            Case {
                target: Demo,
                method: "GET",
                uri: deep_get,
                headers: vec![("apollo-require-preflight", b"true".to_vec())],
                body: Vec::new(),
                expect: LimitRefusal,
            },
        ),
    ]
}

// ---- strategies ----

const DEMO_FIELDS: &[&str] = &[
    "topProducts",
    "name",
    "upc",
    "reviews",
    "body",
    "__typename",
    "reviewCount",
    "nope",
];
const PLATFORM_FIELDS: &[&str] = &[
    "passage",
    "passages",
    "next",
    "previous",
    "id",
    "text",
    "reference",
    "crossReferences",
    "edges",
    "nodes",
    "node",
    "book",
    "books",
    "__typename",
    "nope",
];
const DEMO_TYPES: &[&str] = &["Product", "Review", "Query", "Nope"];
const PLATFORM_TYPES: &[&str] = &["Passage", "Book", "PassageConnection", "Query", "Nope"];
const FRAGMENT_NAMES: &[&str] = &["F0", "F1", "F2", "F3"];
const VARIABLE_NAMES: &[&str] = &["n", "v", "id", "first", "x"];

fn fields_of(target: Target) -> &'static [&'static str] {
    match target {
        Target::Demo => DEMO_FIELDS,
        Target::Platform | Target::PlatformDeepAllowed => PLATFORM_FIELDS,
    }
}

fn types_of(target: Target) -> &'static [&'static str] {
    match target {
        Target::Demo => DEMO_TYPES,
        Target::Platform | Target::PlatformDeepAllowed => PLATFORM_TYPES,
    }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => Just(Target::Demo),
        1 => Just(Target::Platform),
        1 => Just(Target::PlatformDeepAllowed),
    ]
}

fn alias() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => "[a-z][a-z0-9]{0,3}".prop_map(|alias| format!("{alias}: ")),
        1 => select(&["name: ", "upc: ", "__typename: ", "topProducts: "][..])
            .prop_map(str::to_owned),
    ]
}

fn arguments() -> impl Strategy<Value = String> {
    let argument = select(
        &[
            "first: 2",
            "first: $n",
            "first: $first",
            "first: \"3\"",
            "first: 99999999999999999999999",
            "first: -5",
            "first: 0",
            "first: null",
            "first: 1.5",
            "first: [1, 2]",
            "first: {a: 1}",
            "first: ENUM_VALUE",
            "id: \"gen.1.1\"",
            "id: $id",
            "id: 7",
            "ids: [\"gen.1.1\", \"gen.1.2\"]",
            "ids: $x",
            "last: 100000",
            "limit: $n",
            "nope: 1",
        ][..],
    );
    prop_oneof![
        3 => Just(String::new()),
        2 => vec(argument, 1..3).prop_map(|arguments| format!("({})", arguments.join(", "))),
    ]
}

fn directives() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => select(
            &[
                " @skip(if: true)",
                " @skip(if: false)",
                " @include(if: $v)",
                " @include(if: $n)",
                " @skip(if: $undefined)",
                " @include",
                " @include(if: \"yes\")",
                " @skip(if: true) @include(if: false)",
                " @nope",
                " @deprecated",
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

fn type_condition(target: Target) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        3 => select(types_of(target)).prop_map(|name| format!(" on {name}")),
    ]
}

/// One selection (field, spread or inline fragment), nested a few levels.
fn selection(target: Target) -> BoxedStrategy<String> {
    let fields = fields_of(target);
    let leaf = prop_oneof![
        6 => (alias(), select(fields), arguments(), directives())
            .prop_map(|(alias, field, arguments, directives)| {
                format!("{alias}{field}{arguments}{directives}")
            }),
        2 => (select(FRAGMENT_NAMES), directives())
            .prop_map(|(name, directives)| format!("...{name}{directives}")),
        1 => Just("__schema { queryType { name } types { name kind } }".to_owned()),
        1 => Just(
            "__type(name: \"Query\") { name fields { name type { name ofType { name } } } }"
                .to_owned()
        ),
    ];
    leaf.prop_recursive(6, 40, 4, move |inner| {
        let set = vec(inner, 1..5)
            .prop_map(|items| format!("{{ {} }}", items.join(" ")))
            .boxed();
        prop_oneof![
            4 => (alias(), select(fields), arguments(), directives(), set.clone()).prop_map(
                |(alias, field, arguments, directives, set)| {
                    format!("{alias}{field}{arguments}{directives} {set}")
                }
            ),
            1 => (type_condition(target), directives(), set).prop_map(|(on, directives, set)| {
                format!("...{on}{directives} {set}")
            }),
        ]
    })
    .boxed()
}

fn selection_set(target: Target) -> impl Strategy<Value = String> {
    vec(selection(target), 1..5).prop_map(|items| format!("{{ {} }}", items.join(" ")))
}

fn variable_definitions() -> impl Strategy<Value = String> {
    let definition = (
        select(VARIABLE_NAMES),
        select(
            &[
                "Int", "Int!", "[Int]", "[Int!]!", "[[Int]]", "Boolean", "Boolean!", "String",
                "ID", "ID!", "[ID!]!", "Float", "Nope", "Product", "Passage", "Corpus",
            ][..],
        ),
        prop_oneof![
            8 => select(
                &["", "", "", " = 3", " = \"x\"", " = null", " = [1]", " = true", " = {a: 1}"][..]
            ),
            1 => Just(" = $n"),
        ],
    )
        .prop_map(|(name, ty, default)| format!("${name}: {ty}{default}"));
    prop_oneof![
        2 => Just(String::new()),
        3 => vec(definition, 1..4).prop_map(|definitions| format!("({})", definitions.join(", "))),
    ]
}

fn operation(target: Target) -> impl Strategy<Value = String> {
    let kind = select(
        &[
            "",
            "query",
            "query",
            "query Q",
            "query Other",
            "mutation",
            "subscription S",
        ][..],
    );
    (
        kind,
        variable_definitions(),
        directives(),
        selection_set(target),
    )
        .prop_map(|(kind, definitions, directives, set)| {
            if kind.is_empty() {
                set
            } else {
                format!("{kind}{definitions}{directives} {set}")
            }
        })
}

fn fragment_definition(target: Target) -> impl Strategy<Value = String> {
    (
        select(FRAGMENT_NAMES),
        select(types_of(target)),
        directives(),
        selection_set(target),
    )
        .prop_map(|(name, on, directives, set)| {
            format!("fragment {name} on {on}{directives} {set}")
        })
}

/// A document from a small grammar over the schema's names (and some that are not there).
fn document(target: Target) -> impl Strategy<Value = String> {
    (
        vec(operation(target), 1..3),
        vec(fragment_definition(target), 0..4),
    )
        .prop_map(|(operations, fragments)| {
            operations
                .into_iter()
                .chain(fragments)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

/// A field of the typed grammar: its name, the argument lists it is tried with, and the type it
/// returns when that is an object.
struct FieldSpec {
    name: &'static str,
    arguments: &'static [&'static str],
    returns: Option<&'static str>,
}

const fn leaf(name: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        arguments: &[""],
        returns: None,
    }
}

const fn object(
    name: &'static str,
    arguments: &'static [&'static str],
    returns: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        arguments,
        returns: Some(returns),
    }
}

const NO_ARGUMENTS: &[&str] = &[""];
const DEMO_QUERY: &[FieldSpec] = &[object(
    "topProducts",
    &[
        "",
        "(first: 2)",
        "(first: $n)",
        "(first: 0)",
        "(first: 100)",
    ],
    "Product",
)];
const PRODUCT: &[FieldSpec] = &[
    leaf("upc"),
    leaf("name"),
    leaf("__typename"),
    object("reviews", NO_ARGUMENTS, "Review"),
];
const REVIEW: &[FieldSpec] = &[leaf("body"), leaf("__typename")];
const PLATFORM_QUERY: &[FieldSpec] = &[
    object(
        "passage",
        &["(id: \"gen.1.1\")", "(id: $id)", "(id: \"nope\")"],
        "Passage",
    ),
    object(
        "passages",
        &["(ids: [\"gen.1.1\", \"john.3.16\"])"],
        "Passage",
    ),
];
const PASSAGE: &[FieldSpec] = &[
    leaf("id"),
    leaf("text"),
    leaf("reference"),
    leaf("verse"),
    leaf("__typename"),
    object("next", NO_ARGUMENTS, "Passage"),
    object("previous", NO_ARGUMENTS, "Passage"),
    object(
        "crossReferences",
        &["", "(first: 3)", "(first: $n)"],
        "PassageConnection",
    ),
];
const PASSAGE_CONNECTION: &[FieldSpec] = &[
    leaf("totalCount"),
    object("nodes", NO_ARGUMENTS, "Passage"),
    object("edges", NO_ARGUMENTS, "PassageEdge"),
];
const PASSAGE_EDGE: &[FieldSpec] = &[leaf("cursor"), object("node", NO_ARGUMENTS, "Passage")];

/// The fields of the demo's and the platform's types, as the typed grammar knows them.
fn fields_of_type(type_name: &str) -> &'static [FieldSpec] {
    match type_name {
        "DemoQuery" => DEMO_QUERY,
        "Product" => PRODUCT,
        "Review" => REVIEW,
        "PlatformQuery" => PLATFORM_QUERY,
        "Passage" => PASSAGE,
        "PassageConnection" => PASSAGE_CONNECTION,
        "PassageEdge" => PASSAGE_EDGE,
        _ => &[],
    }
}

/// The name a type has in documents (the two roots are both `Query`).
fn schema_name(type_name: &'static str) -> &'static str {
    match type_name {
        "DemoQuery" | "PlatformQuery" => "Query",
        other => other,
    }
}

/// Directives whose variables the typed grammar declares.
fn typed_directives() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => Just(""),
        1 => select(
            &[" @skip(if: true)", " @include(if: false)", " @include(if: $v)", " @skip(if: $v)"][..]
        ),
    ]
}

/// A selection set of `type_name` using only its fields, `depth` object levels at most; spreads
/// of `Frag<Type>` when `spreads`.
fn typed_selection_set(
    type_name: &'static str,
    depth: usize,
    spreads: bool,
) -> BoxedStrategy<String> {
    let fields = fields_of_type(type_name);
    let leaves: Vec<&'static str> = fields
        .iter()
        .filter(|field| field.returns.is_none())
        .map(|field| field.name)
        .collect();
    let mut items: Vec<(u32, BoxedStrategy<String>)> = Vec::new();
    if !leaves.is_empty() {
        let leaf = (
            select(leaves),
            typed_directives(),
            prop_oneof![6 => Just(""), 1 => Just("alias: ")],
        )
            .prop_map(|(name, directives, alias)| format!("{alias}{name}{directives}"));
        items.push((4, leaf.boxed()));
    }
    if depth > 0 {
        for field in fields {
            let Some(returns) = field.returns else {
                continue;
            };
            // Each argument list has its own response name: the same field with different
            // arguments under one name would be a conflict (a validation error every time).
            let child = (
                0..field.arguments.len(),
                typed_directives(),
                typed_selection_set(returns, depth - 1, spreads),
            )
                .prop_map(move |(variant, directives, set)| {
                    let (name, arguments) = (field.name, field.arguments[variant]);
                    let alias = if variant == 0 {
                        String::new()
                    } else {
                        format!("{name}{variant}: ")
                    };
                    format!("{alias}{name}{arguments}{directives} {set}")
                });
            items.push((2, child.boxed()));
        }
        let inline = (
            typed_directives(),
            any::<bool>(),
            typed_selection_set(type_name, depth - 1, spreads),
        )
            .prop_map(move |(directives, named, set)| {
                let on = if named {
                    format!(" on {}", schema_name(type_name))
                } else {
                    String::new()
                };
                format!("...{on}{directives} {set}")
            });
        items.push((1, inline.boxed()));
    }
    if spreads && !type_name.ends_with("Query") {
        items.push((1, Just(format!("...Frag{type_name}")).boxed()));
    }
    if items.is_empty() {
        return Just("{ __typename }".to_owned()).boxed();
    }
    vec(proptest::strategy::Union::new_weighted(items), 1..4)
        .prop_map(|items| format!("{{ {} }}", items.join(" ")))
        .boxed()
}

/// A document that uses the schema as it is, with the variables it uses declared and the
/// fragments it spreads defined; and values for those variables (now and then of a wrong type,
/// or missing).
fn typed_request(target: Target) -> impl Strategy<Value = (String, Value)> {
    let root = match target {
        Target::Demo => "DemoQuery",
        Target::Platform | Target::PlatformDeepAllowed => "PlatformQuery",
    };
    let fragment_types: &[&'static str] = match target {
        Target::Demo => &["Product", "Review"],
        Target::Platform | Target::PlatformDeepAllowed => {
            &["Passage", "PassageConnection", "PassageEdge"]
        }
    };
    let fragments: Vec<BoxedStrategy<String>> = fragment_types
        .iter()
        .map(|&on| {
            typed_selection_set(on, 2, false)
                .prop_map(move |set| format!("fragment Frag{on} on {on} {set}"))
                .boxed()
        })
        .collect();
    let int_value = prop_oneof![
        6 => (-3i64..120).prop_map(Value::from),
        1 => select(vec![json!("3"), json!(null), json!(2.5), json!(1e30), json!([1])]),
    ];
    let id_value = prop_oneof![
        6 => select(&["gen.1.1", "john.3.16", "nope"][..]).prop_map(Value::from),
        1 => select(vec![json!(7), json!(null), json!({"id": 1})]),
    ];
    let bool_value =
        prop_oneof![6 => any::<bool>().prop_map(Value::from), 1 => Just(json!("true"))];
    let values = (int_value, id_value, bool_value, 0u8..10);
    (typed_selection_set(root, 4, true), fragments, values).prop_map(
        move |(set, fragments, (n, id, v, omit))| {
            // Only the fragments spread (an unused one is an error), by the operation or by
            // each other: a fragment may spread its own type (a cycle, refused).
            let mut body = set;
            for (on, fragment) in fragment_types.iter().zip(&fragments) {
                let name = format!("...Frag{on}");
                if body.contains(&name) || fragments.iter().any(|f| f.contains(&name)) {
                    body.push('\n');
                    body.push_str(fragment);
                }
            }
            // The variables the document uses, declared; now and then one goes missing.
            let mut definitions = Vec::new();
            let mut variables = serde_json::Map::new();
            for (name, ty, value) in [("n", "Int", n), ("id", "ID!", id), ("v", "Boolean!", v)] {
                if body.contains(&format!("${name}")) {
                    definitions.push(format!("${name}: {ty}"));
                    if omit != 0 || name == "n" {
                        variables.insert(name.to_owned(), value);
                    }
                }
            }
            let definitions = if definitions.is_empty() {
                String::new()
            } else {
                format!("({})", definitions.join(", "))
            };
            let document = format!("query Q{definitions} {body}");
            (document, Value::Object(variables))
        },
    )
}

/// A request made from the typed grammar, with the usual headers: most get as far as execution.
fn typed_post() -> impl Strategy<Value = Case> {
    // Built once per target (the typed grammar is a large tree of strategies).
    let for_target = |target: Target| {
        (typed_request(target), accept_header(), any::<bool>()).prop_map(
            move |((query, variables), accept, named)| {
                let mut body = json!({ "query": query, "variables": variables });
                if named {
                    body["operationName"] = json!("Q");
                }
                let body = serde_json::to_vec(&body).unwrap();
                let mut case = Case::post(target, body, Expect::Anything);
                case.headers.extend(accept.map(|value| ("accept", value)));
                case
            },
        )
    };
    prop_oneof![
        3 => for_target(Target::Demo),
        1 => for_target(Target::Platform),
        1 => for_target(Target::PlatformDeepAllowed),
    ]
}

/// The document's tokens, roughly: names and numbers, `...`, and single punctuators.
fn tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if c.is_whitespace() {
            continue;
        }
        if c == '.' && chars.peek() == Some(&'.') {
            chars.next();
            chars.next();
            tokens.push("...".to_owned());
        } else {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    Drop,
    Duplicate,
    Insert(char),
    SwapWithNext,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Drop),
        Just(Edit::Duplicate),
        Just(Edit::SwapWithNext),
        select(
            &[
                '{', '}', '(', ')', '[', ']', ':', '!', '$', '@', '=', '"', '|', '#', '.'
            ][..]
        )
        .prop_map(Edit::Insert),
    ]
}

fn mangle(text: &str, edits: &[(Index, Edit)]) -> String {
    let mut tokens = tokens(text);
    for (index, edit) in edits {
        if tokens.is_empty() {
            break;
        }
        let at = index.index(tokens.len());
        match edit {
            Edit::Drop => {
                tokens.remove(at);
            }
            Edit::Duplicate => tokens.insert(at, tokens[at].clone()),
            Edit::Insert(c) => tokens.insert(at, c.to_string()),
            Edit::SwapWithNext if at + 1 < tokens.len() => tokens.swap(at, at + 1),
            Edit::SwapWithNext => {}
        }
    }
    tokens.join(" ")
}

/// A generated document, sometimes with tokens dropped, duplicated, inserted or swapped.
fn maybe_mangled_document(target: Target) -> impl Strategy<Value = String> {
    let edits = prop_oneof![
        3 => Just(Vec::new()),
        2 => vec((any::<Index>(), edit()), 1..4),
    ];
    (document(target), edits).prop_map(|(text, edits)| {
        if edits.is_empty() {
            text
        } else {
            mangle(&text, &edits)
        }
    })
}

/// Any JSON value, a few levels deep.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(
            |number| serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
        ),
        ".{0,12}".prop_map(Value::from),
        select(&["gen.1.1", "true", "3", "", "PRODUCT"][..]).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        let key = prop_oneof![select(VARIABLE_NAMES).prop_map(str::to_owned), ".{0,6}"];
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((key, inner), 0..5).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// The text of a request's `variables`: usually an object, sometimes not, sometimes huge or
/// deeply nested.
fn variables_text() -> impl Strategy<Value = String> {
    let object = vec(
        (
            select(VARIABLE_NAMES).prop_map(str::to_owned),
            arbitrary_json(),
        ),
        0..4,
    )
    .prop_map(|fields| Value::Object(fields.into_iter().collect()).to_string());
    prop_oneof![
        6 => object,
        2 => arbitrary_json().prop_map(|value| value.to_string()),
        1 => (1usize..1_200, select(&["[", "{\"n\":"][..])).prop_map(|(levels, open)| {
            let close = if open == "[" { "]" } else { "}" };
            format!("{{\"n\":{}1{}}}", open.repeat(levels), close.repeat(levels))
        }),
        1 => (1usize..400).prop_map(|levels| deep_variables(levels, 30 * 1024)),
        1 => select(
            &[
                "{\"first\": 1e400}",
                "{\"first\": 18446744073709551616}",
                "{\"first\": -9223372036854775809}",
                "{\"first\": 2147483648}",
                "{\"n\": 1.0}",
                "{\"n\": \"\\ud800\"}",
                "{\"v\": \"true\"}",
                "{\"n\": 1, \"n\": 2}",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => (0usize..8_000).prop_map(|count| {
            format!("{{\"ids\":[{}]}}", vec!["\"gen.1.1\""; count].join(","))
        }),
    ]
}

fn json_string(text: &str) -> String {
    Value::from(text).to_string()
}

/// `{"query": …, "variables": …, "operationName": …, "extensions": …}`, each part optional or
/// of the wrong type now and then.
fn graphql_body(target: Target) -> impl Strategy<Value = Vec<u8>> {
    let query = prop_oneof![
        12 => maybe_mangled_document(target).prop_map(|query| Some(json_string(&query))),
        1 => Just(None),
        1 => select(&["null", "42", "[\"{ a }\"]", "{}", "\"\"", "\"   \"", "\"#\""][..])
            .prop_map(|query| Some(query.to_owned())),
    ];
    let variables = prop_oneof![2 => Just(None), 3 => variables_text().prop_map(Some)];
    let operation_name = prop_oneof![
        4 => Just(None),
        1 => select(&["\"Q\"", "\"Other\"", "\"S\"", "\"\"", "null", "7", "\"Nope\""][..])
            .prop_map(|name| Some(name.to_owned())),
    ];
    let extensions = prop_oneof![
        6 => Just(None),
        1 => select(
            &[
                "{}",
                "null",
                "{\"persistedQuery\":{\"version\":1,\"sha256Hash\":\"abc\"}}",
                "{\"persistedQuery\":null}",
                "[1]",
            ][..]
        )
        .prop_map(|extensions| Some(extensions.to_owned())),
    ];
    (query, variables, operation_name, extensions).prop_map(
        |(query, variables, operation_name, extensions)| {
            let parts: Vec<String> = [
                ("query", query),
                ("variables", variables),
                ("operationName", operation_name),
                ("extensions", extensions),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| format!("\"{key}\":{value}")))
            .collect();
            format!("{{{}}}", parts.join(",")).into_bytes()
        },
    )
}

fn accept_header() -> impl Strategy<Value = Option<Vec<u8>>> {
    let known = select(
        &[
            "application/json",
            "application/graphql-response+json",
            "application/graphql-response+json;q=0.9, application/json;q=0.8",
            "*/*",
            "application/*",
            "text/html",
            "text/html,application/xhtml+xml,*/*;q=0.8",
            "text/plain",
            "",
            " , ;",
        ][..],
    )
    .prop_map(|value| value.as_bytes().to_vec());
    prop_oneof![
        8 => Just(None),
        4 => known.prop_map(Some),
        1 => header_value().prop_map(Some),
    ]
}

fn content_type_header() -> impl Strategy<Value = Option<Vec<u8>>> {
    let known = select(
        &[
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json;",
            "text/plain",
            "application/graphql",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ][..],
    )
    .prop_map(|value| value.as_bytes().to_vec());
    prop_oneof![
        16 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        3 => known.prop_map(Some),
        1 => header_value().prop_map(Some),
    ]
}

/// Bytes HTTP allows in a header value: visible ASCII, spaces and tabs, and obs-text.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![8 => 0x21u8..0x7f, 1 => Just(b' '), 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..40,
    )
    .prop_map(|mut value| {
        // Surrounding whitespace is not part of a header's value.
        while value.last().is_some_and(|b| b.is_ascii_whitespace()) {
            value.pop();
        }
        value
    })
}

/// Headers beside `accept` and `content-type`: preflight markers, API keys, request ids.
fn other_headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let header = (
        select(
            &[
                "apollo-require-preflight",
                "x-apollo-operation-name",
                "graphql-preflight",
                "x-api-key",
                "x-request-id",
                "traceparent",
            ][..],
        ),
        header_value(),
    );
    prop_oneof![3 => Just(Vec::new()), 1 => vec(header, 1..3)]
}

fn with_headers(
    mut headers: Vec<(&'static str, Vec<u8>)>,
    accept: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
) -> Vec<(&'static str, Vec<u8>)> {
    headers.extend(accept.map(|value| ("accept", value)));
    headers.extend(content_type.map(|value| ("content-type", value)));
    headers
}

/// Any bytes as a JSON body (some of them JSON-shaped).
fn arbitrary_bytes_post() -> impl Strategy<Value = Case> {
    let bytes = prop_oneof![
        2 => vec(any::<u8>(), 0..512),
        1 => vec(
            select(
                &[
                    "{", "}", "[", "]", ",", ":", "\"query\"", "\"variables\"", "\"{ a }\"", "null",
                    "1", "\"", "\\",
                ][..]
            ),
            0..40,
        )
        .prop_map(|pieces| pieces.concat().into_bytes()),
    ];
    (
        target(),
        bytes,
        accept_header(),
        content_type_header(),
        other_headers(),
    )
        .prop_map(|(target, body, accept, content_type, headers)| Case {
            target,
            method: "POST",
            uri: "/graphql".to_owned(),
            headers: with_headers(headers, accept, content_type),
            body,
            expect: Expect::Anything,
        })
}

/// A GraphQL request body with generated headers.
fn structured_post() -> impl Strategy<Value = Case> {
    target().prop_flat_map(|target| {
        (
            graphql_body(target),
            accept_header(),
            content_type_header(),
            other_headers(),
        )
            .prop_map(move |(body, accept, content_type, headers)| Case {
                target,
                method: "POST",
                uri: "/graphql".to_owned(),
                headers: with_headers(headers, accept, content_type),
                body,
                expect: Expect::Anything,
            })
    })
}

/// A chain of fields up to a few hundred deep (inline fragments between them add no depth):
/// refused by a limit once deeper than the depth limit.
fn deep_nesting() -> impl Strategy<Value = Case> {
    let level = prop_oneof![
        6 => select(DEMO_FIELDS).prop_map(|field| format!("{field} {{ ")),
        1 => select(DEMO_TYPES).prop_map(|on| format!("... on {on} {{ ")),
        1 => Just("... { ".to_owned()),
    ];
    let levels = prop_oneof![3 => vec(level.clone(), 1..50), 1 => vec(level, 50..300)];
    levels.prop_map(|levels| {
        let depth = 1 + levels
            .iter()
            .filter(|level| !level.starts_with("..."))
            .count();
        let query = format!("{{ {}name{} }}", levels.concat(), " }".repeat(levels.len()));
        let expect = if depth > Limits::default().max_depth {
            Expect::LimitRefusal
        } else {
            Expect::Anything
        };
        Case::query(Target::Demo, &query, json!({}), expect)
    })
}

/// Up to 6,000 aliased fields, at the root or in a list: refused once over the alias limit.
fn many_aliases_case() -> impl Strategy<Value = Case> {
    (0usize..6_000, any::<bool>()).prop_map(|(count, at_root)| {
        let aliases: Vec<String> = (0..count).map(|i| format!("a{i}: __typename")).collect();
        let query = if at_root {
            format!("{{ __typename {} }}", aliases.join(" "))
        } else {
            format!("{{ topProducts {{ upc {} }} }}", aliases.join(" "))
        };
        let expect = if count > Limits::default().max_aliases {
            Expect::LimitRefusal
        } else {
            Expect::Anything
        };
        Case::query(Target::Demo, &query, json!({}), expect)
    })
}

/// The doubling-fragment attack at any length: refused by depth, or with depth allowed by cost.
fn doubling_case() -> impl Strategy<Value = Case> {
    (
        1usize..60,
        prop_oneof![Just(Target::Platform), Just(Target::PlatformDeepAllowed)],
    )
        .prop_map(|(count, target)| {
            // 14 fragments are 16 levels deep, and cost more than 2^14.
            let expect = if count >= 14 {
                Expect::LimitRefusal
            } else {
                Expect::Anything
            };
            Case::query(target, &doubling_fragments(count), json!({}), expect)
        })
}

/// Fragments that spread each other in a cycle, with other spreads besides.
fn fragment_cycle() -> impl Strategy<Value = Case> {
    (1usize..6, vec((any::<Index>(), any::<Index>()), 0..4)).prop_map(|(length, extra)| {
        let mut spreads: Vec<Vec<usize>> = (0..length).map(|i| vec![(i + 1) % length]).collect();
        for (from, to) in extra {
            let from = from.index(length);
            spreads[from].push(to.index(length));
        }
        let mut query = "{ topProducts { ...C0 } }".to_owned();
        for (i, targets) in spreads.iter().enumerate() {
            let spread: Vec<String> = targets.iter().map(|t| format!("...C{t}")).collect();
            query.push_str(&format!(
                "\nfragment C{i} on Product {{ name {} }}",
                spread.join(" ")
            ));
        }
        Case::query(Target::Demo, &query, json!({}), Expect::ValidationRefusal)
    })
}

/// `GET /graphql?…` with generated parameters, with or without a preflight header.
fn get_request() -> impl Strategy<Value = Case> {
    target().prop_flat_map(|target| {
        let parameter = prop_oneof![
            4 => maybe_mangled_document(target)
                .prop_map(|query| format!("query={}", percent_encoded(&query))),
            2 => variables_text()
                .prop_map(|variables| format!("variables={}", percent_encoded(&variables))),
            1 => select(&["Q", "Other", "", "S"][..])
                .prop_map(|name| format!("operationName={name}")),
            1 => select(&["{}", "{\"persistedQuery\":{\"version\":1}}", "nope", "[]"][..])
                .prop_map(|extensions| format!("extensions={}", percent_encoded(extensions))),
            1 => select(
                &[
                    "query=mutation%20%7B%20a%20%7D", "query", "=", "&", "%zz", "query=%", "x=1",
                    "query=+", "query=%7B%7D",
                ][..]
            )
                .prop_map(str::to_owned),
            1 => "(query=)?[A-Za-z0-9%&=+._~!$'()*,;:@/?{}-]{0,60}",
        ];
        let preflight = prop_oneof![
            1 => Just(None),
            3 => select(
                &["apollo-require-preflight", "x-apollo-operation-name", "graphql-preflight"][..]
            )
            .prop_map(Some),
        ];
        (
            vec(parameter, 0..4),
            preflight,
            accept_header(),
            other_headers(),
        )
            .prop_map(move |(parameters, preflight, accept, mut headers)| {
                headers.extend(preflight.map(|name| (name, b"1".to_vec())));
                // Within the URI length hyper accepts (longer ones get its bodiless 414).
                let mut uri = "/graphql?".to_owned();
                for parameter in parameters {
                    if uri.len() + parameter.len() < MAX_URI_BYTES {
                        uri.push_str(&parameter);
                        uri.push('&');
                    }
                }
                Case {
                    target,
                    method: "GET",
                    uri,
                    headers: with_headers(headers, accept, None),
                    body: Vec::new(),
                    expect: Expect::Anything,
                }
            })
    })
}

/// Other methods and paths.
fn elsewhere() -> impl Strategy<Value = Case> {
    (
        select(&["PUT", "DELETE", "PATCH", "OPTIONS", "POST", "GET"][..]),
        select(
            &[
                "/graphql",
                "/graphql/",
                "/",
                "/nope",
                "/graphql/extra",
                "/health",
                "/subgraphs/products/graphql",
            ][..],
        ),
        graphql_body(Target::Demo),
        accept_header(),
    )
        .prop_map(|(method, path, body, accept)| Case {
            target: Target::Demo,
            method,
            uri: path.to_owned(),
            headers: with_headers(Vec::new(), accept, Some(b"application/json".to_vec())),
            body: if method == "GET" { Vec::new() } else { body },
            expect: Expect::Anything,
        })
}

fn any_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        2 => arbitrary_bytes_post(),
        5 => structured_post(),
        8 => typed_post(),
        2 => deep_nesting(),
        1 => many_aliases_case(),
        1 => doubling_case(),
        1 => fragment_cycle(),
        3 => get_request(),
        1 => elsewhere(),
    ]
}

// ---- the test ----

fn generated_cases() -> u32 {
    std::env::var("GOSPELIB_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(1_000)
}

#[test]
fn every_request_gets_a_well_formed_bounded_answer_without_panics() {
    count_panics();
    let started = Instant::now();
    for (name, case) in seeds() {
        if let Err(problem) = run_case(&case) {
            panic!("seed {name:?}: {problem}\n{case:?}");
        }
    }
    let seeds_took = started.elapsed();
    let config = Config {
        cases: generated_cases(),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&any_case(), |case| {
        run_case(&case).map_err(TestCaseError::fail)
    });
    if let Some(tally) = TALLY.lock().unwrap().as_ref() {
        eprintln!(
            "fuzz: {} seeds in {seeds_took:?}, then up to {} generated cases in {:?}; statuses \
             {:?}; outcomes {:?}; {} missed the planning deadline; slowest: {:#?}",
            seeds().len(),
            generated_cases(),
            started.elapsed() - seeds_took,
            tally.statuses,
            tally.outcomes,
            tally.planning_timeouts,
            tally.slowest
        );
    }
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

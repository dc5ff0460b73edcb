//! The client contract: every operation of `client-tests/operations/` run through the router as
//! each kind of caller that sends it, over HTTP, and its answer compared with the expected JSON
//! committed beside it (`<Name>.expected.json`), errors included.
//!
//! - The platform is `gospelib serve`'s assembly (see `support/platform.rs`): every subgraph in
//!   process behind the caller guard, content on the fixture corpus in a namespace of this
//!   test's own, Clerk session tokens checked against a local JWKS, partner keys against the
//!   stack's database, the apps held to their trusted documents (`enforce`).
//! - The callers: `anonymous` (no credential); `reader` (a signed-in user on the free plan,
//!   whose sign-up trial has expired) and `scholar` (a signed-in user paying for Scholar
//!   yearly), each made for this run (a Clerk id of its own) and seeded directly in
//!   PostgreSQL with fixed data (profile, subscriptions, devices, notifications, preferences,
//!   highlights, notes, bookmarks, reading history), so nothing else can race with it; both
//!   send RS256 session tokens signed by the test JWKS's key; `partner`: an API key made by
//!   `gospelib partner-key create` (the real binary) for this run, revoked at the end.
//! - The apps' operations (`web/`, `mobile/`) are sent by the apps' callers as the apps send
//!   them: by trusted-document id (`extensions.persistedQuery.sha256Hash`) with their
//!   variables; the partners' (`partner/`) by the partner only, as text, through the partner
//!   contract. Queries run first (in file order), then mutations, so every query sees the
//!   seeded data only.
//! - What differs from run to run is named, never skipped: values this run made and knows
//!   (user ids, seeded ids, the supergraph versions) become placeholders such as
//!   `<reader.id>` wherever a whole string equals one (also inside the opaque cursors, shown
//!   decoded); values made by a mutation during the run (a new highlight's id and time) are
//!   declared per operation in the expected file's `volatile` map (a path under `data` and
//!   its kind, `uuid` or `timestamp`), checked for that shape and replaced by `<uuid>` or
//!   `<timestamp>`. Everything else is compared exactly.
//! - An answer that is wrong because of a bug not fixed yet is written in its expected file as
//!   it should be, by hand, and the caller named in the file's `known_bugs` map with what is
//!   wrong: the test reports it as a known bug (and fails until it is fixed, then asks for the
//!   entry to go).
//!
//! `GOSPELIB_CLIENT_TESTS_BLESS=1` writes the answers as the expected files (keeping their
//! `volatile` and `known_bugs` maps, and the known bugs' answers) instead of comparing: review
//! what it wrote before committing it.

#[path = "support/platform.rs"]
mod platform;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use gospelib_kit::caller::user_id_for_clerk;
use gospelib_router::trusted_documents::document_id;
use support::clerk::session_token;

/// The variable that turns comparing into writing the expected files.
const BLESS: &str = "GOSPELIB_CLIENT_TESTS_BLESS";

/// One operation of `client-tests/operations/<app>/<name>.graphql`.
struct Operation {
    app: String,
    name: String,
    path: PathBuf,
    text: String,
    variables: Value,
    mutation: bool,
}

impl Operation {
    fn label(&self) -> String {
        format!("{}/{}", self.app, self.name)
    }

    fn expected_path(&self) -> PathBuf {
        self.path.with_extension("expected.json")
    }

    /// Who sends it: the partners' operations are a partner's, the apps' the apps' callers'.
    fn callers(&self) -> &'static [Class] {
        if self.app == "partner" {
            &[Class::Partner]
        } else {
            &[Class::Anonymous, Class::Reader, Class::Scholar]
        }
    }
}

/// Every operation with its variables; queries first, then mutations, each in path order.
fn operations() -> Vec<Operation> {
    let root = platform::repository().join("client-tests/operations");
    let mut found = Vec::new();
    for app in ["web", "mobile", "partner"] {
        for entry in std::fs::read_dir(root.join(app)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "graphql") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let variables_path = path.with_extension("variables.json");
            let variables: Value = std::fs::read_to_string(&variables_path)
                .map(|text| serde_json::from_str(&text).unwrap())
                .unwrap_or_else(|_| panic!("{} has no variables file", path.display()));
            assert!(variables.is_object(), "{}", variables_path.display());
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mutation = text
                .lines()
                .map(str::trim_start)
                .any(|line| line.starts_with("mutation"));
            found.push(Operation {
                app: app.to_owned(),
                name,
                path,
                text,
                variables,
                mutation,
            });
        }
    }
    found.sort_by(|a, b| (a.mutation, &a.path).cmp(&(b.mutation, &b.path)));
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Anonymous,
    Reader,
    Scholar,
    Partner,
}

impl Class {
    fn key(self) -> &'static str {
        match self {
            Class::Anonymous => "anonymous",
            Class::Reader => "reader",
            Class::Scholar => "scholar",
            Class::Partner => "partner",
        }
    }
}

/// A signed-in user of this run.
struct Person {
    clerk_id: String,
    id: Uuid,
}

impl Person {
    fn new(role: &str, run: &str) -> Self {
        let clerk_id = format!("user_client_tests_{role}_{run}");
        Self {
            id: user_id_for_clerk(&clerk_id),
            clerk_id,
        }
    }
}

/// The values this run made, each with the placeholder the expected files show instead.
#[derive(Default)]
struct Known(BTreeMap<String, String>);

impl Known {
    fn add(&mut self, value: impl ToString, placeholder: &str) {
        let previous = self.0.insert(value.to_string(), format!("<{placeholder}>"));
        assert!(previous.is_none(), "{placeholder} named twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_operation_answers_each_caller_as_expected() {
    let platform = platform::start("client_contract").await;
    let run = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let reader = Person::new("reader", &run);
    let scholar = Person::new("scholar", &run);
    let mut known = Known::default();
    known.add(&platform.app_version, "supergraph version");
    known.add(&platform.partner_version, "partner contract version");
    known.add(reader.id, "reader.id");
    known.add(scholar.id, "scholar.id");
    let pool = platform.clients.postgres.clone();
    seed_reader(&pool, &reader, &mut known).await;
    seed_scholar(&pool, &scholar, &run, &mut known).await;
    let partner = PartnerKey::create(&run);

    let people = People {
        reader: &reader,
        scholar: &scholar,
        partner: &partner,
    };
    let http = reqwest::Client::new();
    let bless = std::env::var(BLESS).is_ok_and(|value| value == "1");
    let started_on = today();
    let mut failures = Vec::new();
    let mut blessed = Vec::new();
    let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
    let operations = operations();
    assert!(operations.len() >= 20, "{} operations", operations.len());
    for operation in &operations {
        let expected_file: Map<String, Value> =
            match std::fs::read_to_string(operation.expected_path()) {
                Ok(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
                    panic!("{}: {error}", operation.expected_path().display())
                }),
                Err(_) if bless => Map::new(),
                Err(_) => {
                    failures.push(format!(
                        "{}: no {} (write it with {BLESS}=1, then review it)",
                        operation.label(),
                        operation.expected_path().display()
                    ));
                    continue;
                }
            };
        let volatile = volatile_fields(operation, &expected_file);
        let known_bugs = known_bugs(operation, &expected_file);
        let mut answers = Map::new();
        for key in ["volatile", "known_bugs"] {
            if let Some(value) = expected_file.get(key) {
                answers.insert(key.to_owned(), value.clone());
            }
        }
        for &class in operation.callers() {
            let (status, mut body) = send(&http, &platform.base, operation, class, &people).await;
            let mut problems = Vec::new();
            if let Some(data) = body.get_mut("data") {
                replace_volatile(data, volatile.as_ref(), &started_on, &mut problems);
            }
            let answer = json!({ "status": status, "body": substitute(body, &known) });
            let label = format!("{} as {}", operation.label(), class.key());
            for problem in problems {
                failures.push(format!("{label}: {problem}"));
            }
            let bug = known_bugs.get(class.key());
            let expected = expected_file.get(class.key());
            if bless {
                // A known bug's answer is the one it should be, written by hand: kept.
                let kept = bug.and(expected).cloned();
                if kept.is_some() {
                    eprintln!("{label}: kept the expected answer of a known bug");
                }
                answers.insert(class.key().to_owned(), kept.unwrap_or(answer));
                continue;
            }
            *compared.entry(class.key()).or_insert(0) += 1;
            match (expected, bug) {
                (None, _) => failures.push(format!(
                    "{label}: {} has no \"{}\" answer",
                    operation.expected_path().display(),
                    class.key()
                )),
                (Some(expected), bug) if *expected != answer => {
                    let mut differences = Vec::new();
                    differ(expected, &answer, "$", &mut differences);
                    let actual = actual_path(operation, class);
                    std::fs::create_dir_all(actual.parent().unwrap()).unwrap();
                    std::fs::write(&actual, pretty(&answer)).unwrap();
                    let heading = match bug {
                        Some(why) => format!("{label}: KNOWN BUG, not fixed yet ({why})"),
                        None => label.clone(),
                    };
                    failures.push(format!(
                        "{heading}: differs from {} ({} difference(s); the whole answer is in {}):\n{}",
                        operation.expected_path().display(),
                        differences.len(),
                        actual.display(),
                        differences
                            .iter()
                            .take(25)
                            .map(|d| format!("    {d}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                }
                (Some(_), Some(_)) => failures.push(format!(
                    "{label}: answers as expected now: remove its `known_bugs` entry from {}",
                    operation.expected_path().display()
                )),
                (Some(_), None) => {}
            }
        }
        if bless {
            std::fs::write(operation.expected_path(), pretty(&Value::Object(answers))).unwrap();
            blessed.push(operation.expected_path());
        } else {
            let extra: Vec<&String> = expected_file
                .keys()
                .filter(|key| {
                    !["volatile", "known_bugs"].contains(&key.as_str())
                        && operation.callers().iter().all(|c| c.key() != *key)
                })
                .collect();
            if !extra.is_empty() {
                failures.push(format!(
                    "{}: the expected file answers callers that do not send it: {extra:?}",
                    operation.label()
                ));
            }
        }
    }
    partner.revoke();
    clean_up(&pool, &[reader.id, scholar.id]).await;
    if bless {
        eprintln!(
            "{BLESS}=1: wrote {} expected files; review them before committing:\n{}",
            blessed.len(),
            blessed
                .iter()
                .map(|p| format!("  {}", p.display()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let total: usize = compared.values().sum();
    let by_caller: Vec<String> = compared.iter().map(|(c, n)| format!("{c} {n}")).collect();
    assert!(
        failures.is_empty(),
        "{} of {total} answers ({}) are not as expected:\n{}",
        failures.len(),
        by_caller.join(", "),
        failures.join("\n")
    );
    eprintln!(
        "client contract: {} operations, {total} answers as expected ({})",
        operations.len(),
        by_caller.join(", ")
    );
}

/// The `known_bugs` map of an expected file: `{"<caller>": "what is wrong, and where"}`. Each
/// names a caller whose expected answer is the one it should be, written by hand, while the
/// platform still answers otherwise: reported as a known bug, and kept by the bless mode.
fn known_bugs(operation: &Operation, expected: &Map<String, Value>) -> BTreeMap<String, String> {
    let Some(bugs) = expected.get("known_bugs") else {
        return BTreeMap::new();
    };
    bugs.as_object()
        .unwrap_or_else(|| panic!("{}: `known_bugs` is not an object", operation.label()))
        .iter()
        .map(|(caller, why)| {
            assert!(
                operation.callers().iter().any(|c| c.key() == caller),
                "{}: known bug of {caller}, who does not send it",
                operation.label()
            );
            let why = why.as_str().unwrap_or_else(|| {
                panic!("{}: known bug of {caller}: not a string", operation.label())
            });
            (caller.clone(), why.to_owned())
        })
        .collect()
}

/// The `volatile` map of an expected file: `{"<path under data>": "uuid" | "timestamp"}`.
fn volatile_fields(operation: &Operation, expected: &Map<String, Value>) -> Option<Value> {
    let volatile = expected.get("volatile")?;
    let map = volatile
        .as_object()
        .unwrap_or_else(|| panic!("{}: `volatile` is not an object", operation.label()));
    for (path, kind) in map {
        assert!(
            matches!(kind.as_str(), Some("uuid" | "timestamp")),
            "{}: volatile {path} is {kind}, not \"uuid\" or \"timestamp\"",
            operation.label()
        );
    }
    Some(volatile.clone())
}

/// Replaces each volatile field present in `data` by its kind's placeholder once it has the
/// kind's shape (a UUID; an RFC 3339 time of the day this run began, or the next); a value
/// of another shape is left as it is (and so differs) and reported.
fn replace_volatile(
    data: &mut Value,
    volatile: Option<&Value>,
    started_on: &str,
    problems: &mut Vec<String>,
) {
    let Some(volatile) = volatile.and_then(Value::as_object) else {
        return;
    };
    for (path, kind) in volatile {
        let pointer = format!("/{}", path.replace('.', "/"));
        let Some(at) = data.pointer_mut(&pointer).filter(|at| !at.is_null()) else {
            continue;
        };
        let text = at.as_str().unwrap_or_default();
        let (placeholder, ok) = match kind.as_str() {
            Some("uuid") => ("<uuid>", Uuid::parse_str(text).is_ok()),
            _ => ("<timestamp>", is_timestamp_of_run(text, started_on)),
        };
        if ok {
            *at = Value::String(placeholder.to_owned());
        } else {
            problems.push(format!("volatile {path} is {at}, not a {kind} of this run"));
        }
    }
}

/// Whether `text` is an RFC 3339 time (UTC, `Z`) on the day `started_on` or the next.
fn is_timestamp_of_run(text: &str, started_on: &str) -> bool {
    let bytes = text.as_bytes();
    let shape = bytes.len() >= 20
        && text.ends_with('Z')
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.' || *b == b'Z',
            _ if i == bytes.len() - 1 => *b == b'Z',
            _ => b.is_ascii_digit(),
        });
    shape && (text[..10] == *started_on || text[..10] == *today())
}

/// Today's date in UTC, `YYYY-MM-DD`.
fn today() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    gospelib_study::streaks::date((seconds / 86_400) as i32)
}

/// `value` with every string this run made replaced by its placeholder, and every opaque
/// cursor that holds one shown decoded, with the placeholder inside.
fn substitute(value: Value, known: &Known) -> Value {
    match value {
        Value::String(text) => {
            if let Some(placeholder) = known.0.get(&text) {
                return Value::String(placeholder.clone());
            }
            if let Some(decoded) = URL_SAFE_NO_PAD
                .decode(&text)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .filter(Value::is_object)
            {
                let shown = substitute(decoded.clone(), known);
                if shown != decoded {
                    return Value::String(format!("<cursor {shown}>"));
                }
            }
            Value::String(text)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| substitute(v, known)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, substitute(v, known)))
                .collect(),
        ),
        other => other,
    }
}

/// The differences between two answers, one line each: where, what was expected, what came.
fn differ(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                match a.get(key) {
                    Some(other) => differ(value, other, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: expected {}, missing", short(value))),
                }
            }
            for (key, value) in a {
                if !e.contains_key(key) {
                    out.push(format!("{path}.{key}: not expected, got {}", short(value)));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (index, (x, y)) in e.iter().zip(a).enumerate() {
                differ(x, y, &format!("{path}[{index}]"), out);
            }
        }
        (Value::Array(e), Value::Array(a)) => out.push(format!(
            "{path}: expected {} items, got {}: expected {}, got {}",
            e.len(),
            a.len(),
            short(expected),
            short(actual)
        )),
        (Value::String(e), Value::String(a)) if e != a => {
            // Long texts: where they part, with a little on either side.
            let at = e.chars().zip(a.chars()).take_while(|(x, y)| x == y).count();
            let around = |text: &str| {
                let from = at.saturating_sub(40);
                let shown: String = text.chars().skip(from).take(120).collect();
                format!("{}{shown:?}", if from > 0 { "…" } else { "" })
            };
            out.push(format!(
                "{path}: the texts part at character {at}: expected {}, got {}",
                around(e),
                around(a)
            ));
        }
        _ if expected != actual => out.push(format!(
            "{path}: expected {}, got {}",
            short(expected),
            short(actual)
        )),
        _ => {}
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

/// Where an answer that differs is written for a closer look.
fn actual_path(operation: &Operation, class: Class) -> PathBuf {
    platform::repository()
        .join("target/client-tests")
        .join(&operation.app)
        .join(format!("{}.{}.actual.json", operation.name, class.key()))
}

/// Sends `operation` as `class` would; the HTTP status and the body.
async fn send(
    http: &reqwest::Client,
    base: &str,
    operation: &Operation,
    class: Class,
    people: &People<'_>,
) -> (u16, Value) {
    let mut request = http
        .post(format!("{base}/graphql"))
        .header("accept", "application/graphql-response+json");
    let body = match class {
        // Partners build their own documents and send them whole.
        Class::Partner => {
            request = request.header("x-api-key", &people.partner.key);
            json!({ "query": operation.text, "variables": operation.variables })
        }
        // The apps send their registered documents by id.
        _ => {
            let id = document_id(&operation.text).unwrap();
            json!({
                "operationName": operation.name,
                "variables": operation.variables,
                "extensions": { "persistedQuery": {
                    "version": 1, "sha256Hash": id.trim_start_matches("sha256:") } }
            })
        }
    };
    let token = match class {
        Class::Reader => Some(session_token(&people.reader.clerk_id)),
        Class::Scholar => Some(session_token(&people.scholar.clerk_id)),
        _ => None,
    };
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{} as {}: not JSON: {text}", operation.label(), class.key()));
    (status, body)
}

/// Who sends the operations.
struct People<'a> {
    reader: &'a Person,
    scholar: &'a Person,
    partner: &'a PartnerKey,
}

/// A partner's API key, made as `gospelib partner-key create` makes one.
struct PartnerKey {
    id: String,
    key: String,
}

impl PartnerKey {
    fn create(run: &str) -> Self {
        let output = support::gospelib(
            &[
                "partner-key",
                "create",
                "--partner",
                &format!("client-tests-{run}"),
                "--format",
                "json",
            ],
            &support::stack_vars(),
        )
        .output()
        .unwrap();
        assert!(
            output.status.success(),
            "gospelib partner-key create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let made: Value = serde_json::from_slice(&output.stdout).unwrap();
        Self {
            id: made["id"].as_str().unwrap().to_owned(),
            key: made["key"].as_str().unwrap().to_owned(),
        }
    }

    fn revoke(&self) {
        let output =
            support::gospelib(&["partner-key", "revoke", &self.id], &support::stack_vars())
                .output()
                .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A deterministic id for a seeded row of `person`'s, named `placeholder` in the answers.
fn seeded_id(person: &Person, label: &str, known: &mut Known, placeholder: &str) -> Uuid {
    let id = Uuid::new_v5(&person.id, label.as_bytes());
    known.add(id, placeholder);
    id
}

async fn execute(pool: &PgPool, sql: &str, binds: &[&dyn ToBind]) {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = bind.bind_to(query);
    }
    query
        .execute(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A value bound into a seeding statement.
trait ToBind: Sync {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q>;
}

impl ToBind for Uuid {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(*self)
    }
}

impl ToBind for &str {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(self.to_string())
    }
}

impl ToBind for String {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(self.clone())
    }
}

impl ToBind for Option<&str> {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(self.map(str::to_owned))
    }
}

impl ToBind for i64 {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(*self)
    }
}

impl ToBind for i32 {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(*self)
    }
}

impl ToBind for bool {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(*self)
    }
}

impl ToBind for Value {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(sqlx::types::Json(self.clone()))
    }
}

impl ToBind for Vec<String> {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(self.clone())
    }
}

impl ToBind for Vec<u8> {
    fn bind_to<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query.bind(self.clone())
    }
}

async fn user(pool: &PgPool, person: &Person, profile: [Option<&str>; 4], created_at: &str) {
    let [email, first_name, last_name, image_url] = profile;
    execute(
        pool,
        "INSERT INTO accounts.users (id, clerk_id, email, first_name, last_name, image_url, \
         created_at, updated_at, clerk_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $7::timestamptz, $7::timestamptz)",
        &[
            &person.id,
            &person.clerk_id,
            &email,
            &first_name,
            &last_name,
            &image_url,
            &created_at,
        ],
    )
    .await;
}

async fn highlight(
    pool: &PgPool,
    person: &Person,
    known: &mut Known,
    placeholder: &str,
    (passage, color, at): (&str, &str, &str),
) {
    let id = seeded_id(person, placeholder, known, placeholder);
    execute(
        pool,
        "INSERT INTO study.highlights (id, user_id, passage_id, color, created_at) \
         VALUES ($1, $2, $3, $4, $5::timestamptz)",
        &[&id, &person.id, &passage, &color, &at],
    )
    .await;
}

/// A note on `start`–`end` written at `created` and last changed at `updated` (at `version`).
#[allow(clippy::too_many_arguments)]
async fn note(
    pool: &PgPool,
    person: &Person,
    known: &mut Known,
    placeholder: &str,
    (start, end): (&str, &str),
    text: &str,
    links: &[&str],
    (version, created, updated): (i32, &str, &str),
) {
    let id = seeded_id(person, placeholder, known, placeholder);
    let order = |id: &str| gospelib_study::canon::passage_order(id).unwrap();
    let body = json!({"type": "doc", "content": [{"type": "paragraph",
        "content": [{"type": "text", "text": text}]}]});
    let links: Vec<String> = links.iter().map(|l| (*l).to_owned()).collect();
    execute(
        pool,
        "INSERT INTO study.notes (id, user_id, start_passage_id, end_passage_id, start_order, \
         end_order, body, text, links, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::timestamptz, $12::timestamptz)",
        &[
            &id,
            &person.id,
            &start,
            &end,
            &order(start),
            &order(end),
            &body,
            &text,
            &links,
            &version,
            &created,
            &updated,
        ],
    )
    .await;
}

async fn bookmark(
    pool: &PgPool,
    person: &Person,
    known: &mut Known,
    placeholder: &str,
    (passage, label, at): (&str, Option<&str>, &str),
) {
    let id = seeded_id(person, placeholder, known, placeholder);
    execute(
        pool,
        "INSERT INTO study.bookmarks (id, user_id, passage_id, label, created_at) \
         VALUES ($1, $2, $3, $4, $5::timestamptz)",
        &[&id, &person.id, &passage, &label, &at],
    )
    .await;
}

/// Reading progress in `chapter`, and one reading of it in the history at each of `reads`.
async fn reading(
    pool: &PgPool,
    person: &Person,
    (chapter, last_verse, completed): (&str, i32, bool),
    reads: &[&str],
) {
    execute(
        pool,
        "INSERT INTO study.reading_progress (user_id, chapter_id, last_verse, completed, \
         started_at, updated_at) VALUES ($1, $2, $3, $4, $5::timestamptz, $6::timestamptz)",
        &[
            &person.id,
            &chapter,
            &last_verse,
            &completed,
            &reads[0],
            &reads[reads.len() - 1],
        ],
    )
    .await;
    for at in reads {
        execute(
            pool,
            "INSERT INTO study.reading_history (user_id, chapter_id, read_at) \
             VALUES ($1, $2, $3::timestamptz)",
            &[&person.id, &chapter, at],
        )
        .await;
    }
}

async fn notification(
    pool: &PgPool,
    person: &Person,
    known: &mut Known,
    placeholder: &str,
    (category, title, body): (&str, &str, &str),
    (created, read): (&str, Option<&str>),
) {
    let id = seeded_id(person, placeholder, known, placeholder);
    execute(
        pool,
        "INSERT INTO notifications.notifications (id, user_id, category, title, body, \
         dedupe_key, read_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8::timestamptz)",
        &[
            &id,
            &person.id,
            &category,
            &title,
            &body,
            &format!("client-tests:{id}"),
            &read,
            &created,
        ],
    )
    .await;
}

/// The reader: Ruth, on the free plan since her sign-up trial ended; no device, the default
/// notification preferences; a few highlights, a note and a bookmark in John 3, three days of
/// reading in January 2026.
async fn seed_reader(pool: &PgPool, reader: &Person, known: &mut Known) {
    user(
        pool,
        reader,
        [
            Some("ruth.reader@example.com"),
            Some("Ruth"),
            Some("Reader"),
            None,
        ],
        "2026-01-15T09:30:00Z",
    )
    .await;
    let trial = Uuid::new_v5(&reader.id, b"trial");
    execute(
        pool,
        "INSERT INTO billing.subscriptions (id, user_id, plan, status, source, trial_end, \
         started_at, trial_ending_announced_at, created_at, updated_at) \
         VALUES ($1, $2, 'scholar', 'trialing', 'trial', '2026-01-29T09:30:01Z', \
         '2026-01-15T09:30:01Z', '2026-01-26T09:30:01Z', '2026-01-15T09:30:01Z', \
         '2026-01-15T09:30:01Z')",
        &[&trial, &reader.id],
    )
    .await;
    notification(
        pool,
        reader,
        known,
        "reader.notification.welcome",
        (
            "account",
            "Welcome to GospeLib",
            "Start reading, highlight what speaks to you and keep your notes in one place.",
        ),
        ("2026-01-15T09:30:02Z", Some("2026-01-15T10:00:00Z")),
    )
    .await;
    notification(
        pool,
        reader,
        known,
        "reader.notification.trial-ended",
        (
            "subscription",
            "Your Scholar trial has ended",
            "You are on the Reader plan now. Upgrade to keep the interlinear, the explorer and AI.",
        ),
        ("2026-01-29T09:30:02Z", None),
    )
    .await;
    highlight(
        pool,
        reader,
        known,
        "reader.highlight.1",
        ("john.3.3", "repentance", "2026-01-20T08:00:00Z"),
    )
    .await;
    highlight(
        pool,
        reader,
        known,
        "reader.highlight.2",
        ("john.3.16", "faith", "2026-01-20T08:01:00Z"),
    )
    .await;
    note(
        pool,
        reader,
        known,
        "reader.note.1",
        ("john.3.16", "john.3.16"),
        "God so loved the world: the gospel in one verse.",
        &[],
        (1, "2026-01-20T08:05:00Z", "2026-01-20T08:05:00Z"),
    )
    .await;
    bookmark(
        pool,
        reader,
        known,
        "reader.bookmark.1",
        ("john.3.16", Some("Memorize"), "2026-01-20T08:06:00Z"),
    )
    .await;
    reading(
        pool,
        reader,
        ("john.1", 51, true),
        &["2026-01-18T07:00:00Z"],
    )
    .await;
    reading(
        pool,
        reader,
        ("john.2", 25, true),
        &["2026-01-19T07:00:00Z"],
    )
    .await;
    reading(
        pool,
        reader,
        ("john.3", 21, false),
        &["2026-01-20T07:55:00Z", "2026-01-20T08:10:00Z"],
    )
    .await;
}

/// The scholar: Samuel, paying for Scholar yearly (a period ending far in the future, so the
/// answers do not depend on the day the test runs) after his trial; an iPhone, his own
/// notification preferences; highlights (two on John 3:16), notes (one on a range), bookmarks
/// and a week of reading in January 2026.
async fn seed_scholar(pool: &PgPool, scholar: &Person, run: &str, known: &mut Known) {
    user(
        pool,
        scholar,
        [
            Some("samuel.scholar@example.com"),
            Some("Samuel"),
            Some("Scholar"),
            Some("https://img.clerk.com/client-tests/samuel.png"),
        ],
        "2025-11-02T18:00:00Z",
    )
    .await;
    execute(
        pool,
        "INSERT INTO billing.subscriptions (id, user_id, plan, status, source, trial_end, \
         started_at, trial_ending_announced_at, created_at, updated_at) \
         VALUES ($1, $2, 'scholar', 'trialing', 'trial', '2025-11-16T18:00:01Z', \
         '2025-11-02T18:00:01Z', '2025-11-13T18:00:01Z', '2025-11-02T18:00:01Z', \
         '2025-11-02T18:00:01Z')",
        &[&Uuid::new_v5(&scholar.id, b"trial"), &scholar.id],
    )
    .await;
    execute(
        pool,
        "INSERT INTO billing.subscriptions (id, user_id, plan, status, billing_interval, source, \
         stripe_subscription_id, stripe_customer_id, current_period_end, cancel_at_period_end, \
         started_at, created_at, updated_at) \
         VALUES ($1, $2, 'scholar', 'active', 'yearly', 'stripe', $3, $4, \
         '2099-11-14T18:00:00Z', false, '2025-11-14T18:00:00Z', '2025-11-14T18:00:00Z', \
         '2025-11-14T18:00:00Z')",
        &[
            &Uuid::new_v5(&scholar.id, b"stripe"),
            &scholar.id,
            &format!("sub_client_tests_{run}"),
            &format!("cus_client_tests_{run}"),
        ],
    )
    .await;
    let device = seeded_id(scholar, "device", known, "scholar.device.1");
    let token = format!("client-tests-apns-{run}");
    execute(
        pool,
        "INSERT INTO accounts.devices (id, user_id, platform, token, token_sha256, name, \
         created_at, last_seen_at) VALUES ($1, $2, 'IOS', $3, $4, 'Samuel''s iPhone', \
         '2025-11-02T18:05:00Z', '2026-01-31T07:00:00Z')",
        &[&device, &scholar.id, &token, &{
            use sha2::Digest;
            sha2::Sha256::digest(token.as_bytes()).to_vec()
        }],
    )
    .await;
    execute(
        pool,
        "INSERT INTO notifications.preferences (user_id, push, email, account, subscription, \
         study_reminders, quiet_start, quiet_end, time_zone, updated_at) \
         VALUES ($1, true, false, true, true, true, 1320, 420, 'America/Denver', \
         '2025-11-03T08:00:00Z')",
        &[&scholar.id],
    )
    .await;
    notification(
        pool,
        scholar,
        known,
        "scholar.notification.welcome",
        (
            "account",
            "Welcome to GospeLib",
            "Start reading, highlight what speaks to you and keep your notes in one place.",
        ),
        ("2025-11-02T18:00:02Z", Some("2025-11-02T18:10:00Z")),
    )
    .await;
    notification(
        pool,
        scholar,
        known,
        "scholar.notification.subscribed",
        (
            "subscription",
            "You are a Scholar",
            "Your yearly Scholar subscription is active. Thank you!",
        ),
        ("2025-11-14T18:00:02Z", Some("2025-11-14T19:00:00Z")),
    )
    .await;
    notification(
        pool,
        scholar,
        known,
        "scholar.notification.reminder",
        (
            "study_reminder",
            "Time to read",
            "Pick up John 3 where you left off.",
        ),
        ("2026-01-31T15:00:00Z", None),
    )
    .await;
    for (n, (passage, color, at)) in [
        ("john.3.5", "baptism", "2026-01-05T06:00:00Z"),
        ("john.3.16", "christ", "2026-01-05T06:01:00Z"),
        ("john.3.16", "covenant", "2026-01-05T06:02:00Z"),
        ("ps.23.1", "personal_blue", "2026-01-11T21:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        highlight(
            pool,
            scholar,
            known,
            &format!("scholar.highlight.{}", n + 1),
            (passage, color, at),
        )
        .await;
    }
    note(
        pool,
        scholar,
        known,
        "scholar.note.1",
        ("john.3.14", "john.3.17"),
        "Lifted up as the serpent was (Num 21:9): looking in faith brings life; sent to save, not to condemn.",
        &["john.1.29", "gen.3.15"],
        (1, "2026-01-05T06:10:00Z", "2026-01-05T06:10:00Z"),
    )
    .await;
    note(
        pool,
        scholar,
        known,
        "scholar.note.2",
        ("john.3.5", "john.3.5"),
        "Water and the Spirit: compare John 1:33.",
        &["john.1.33"],
        (3, "2026-01-05T06:05:00Z", "2026-01-07T21:30:00Z"),
    )
    .await;
    bookmark(
        pool,
        scholar,
        known,
        "scholar.bookmark.1",
        ("john.3.16", None, "2026-01-05T06:15:00Z"),
    )
    .await;
    bookmark(
        pool,
        scholar,
        known,
        "scholar.bookmark.2",
        ("ps.23.1", Some("Comfort"), "2026-01-11T21:01:00Z"),
    )
    .await;
    reading(
        pool,
        scholar,
        ("john.3", 36, true),
        &[
            "2026-01-01T06:00:00Z",
            "2026-01-02T06:00:00Z",
            "2026-01-03T06:00:00Z",
            "2026-01-04T06:00:00Z",
            "2026-01-05T06:00:00Z",
        ],
    )
    .await;
    reading(
        pool,
        scholar,
        ("ps.23", 6, true),
        &[
            "2026-01-06T21:00:00Z",
            "2026-01-07T21:00:00Z",
            "2026-01-10T21:00:00Z",
            "2026-01-11T21:00:00Z",
        ],
    )
    .await;
}

/// Removes what this run's users have in every domain (their seeds and what the mutations
/// wrote).
async fn clean_up(pool: &PgPool, users: &[Uuid]) {
    for table in [
        "study.highlights",
        "study.notes",
        "study.bookmarks",
        "study.reading_progress",
        "study.reading_history",
        "study.usage",
        "notifications.notifications",
        "notifications.preferences",
        "billing.subscriptions",
        "accounts.devices",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = ANY($1)"))
            .bind(users)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("cleaning {table}: {error}"));
    }
    sqlx::query("DELETE FROM accounts.users WHERE id = ANY($1)")
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
}

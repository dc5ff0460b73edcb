//! The load: `--connections` readers, each on one keep-alive HTTP/1.1 connection with one
//! request in flight, closed loop (the next page view as soon as the last one is read), or with
//! a pause after each page view (`--think-ms`, exponential with that mean). A reader signs in as the next user of a seeded shuffle of the
//! users (every user once before any twice, so no user nears the per-minute rate limits of
//! their plan), asks a session of page views (geometric, mean `--session-mean`, at most 20)
//! drawn from the mix with that user's token, then moves on to the next user. Connections are spread over the
//! `--url`s in turn.
//!
//! Every request that starts inside the measured window (after `--warmup`) is measured from
//! just before it is sent until its whole body is read, and kept (exact percentiles, no
//! histogram buckets). An error is a transport failure, a status other than 200 or a body with
//! an `"errors"` list.
//!
//! At the window's edges the Prometheus endpoints (`--metrics`), a probe command (`--probe`,
//! printing `name value` lines: the stores' own counters) and the CPU time of processes
//! (`--cpu NAME=PID`, `--cpu-tree NAME=PID` with its children) are read; their growth, per
//! request, is reported with the latencies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::mix::{Mix, OPS};
use crate::prom::{self, Samples};
use crate::rng::{Rng, hash_name};

pub struct Settings {
    pub urls: Vec<String>,
    pub connections: usize,
    pub duration: f64,
    pub warmup: f64,
    pub label: String,
    pub tags: Vec<(String, String)>,
    pub seed: u64,
    pub session_mean: f64,
    /// Mean pause after each page view (exponential), milliseconds; 0: none (closed loop).
    pub think_ms: f64,
    pub metrics: Vec<String>,
    pub probe: Option<String>,
    /// (name, pid, with its children)
    pub cpu: Vec<(String, u32, bool)>,
}

/// What every reader shares.
pub struct Shared {
    pub mix: Mix,
    pub tokens: Vec<String>,
    /// Per user: whether their plan has the interlinear.
    pub interlinear: Vec<bool>,
    /// The users in the order readers take them.
    pub order: Vec<u32>,
    pub cursor: AtomicUsize,
}

impl Shared {
    pub fn new(mix: Mix, tokens: Vec<String>, seed: u64, label: &str) -> Self {
        let users = tokens.len() as u32;
        let interlinear = (0..users)
            .map(|i| crate::seed::user(seed, i).plan.interlinear())
            .collect();
        let mut order: Vec<u32> = (0..users).collect();
        let mut rng = Rng::derive(seed, &[hash_name("order")]);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        Self {
            mix,
            tokens,
            interlinear,
            order,
            // Each run starts elsewhere in the order.
            cursor: AtomicUsize::new(hash_name(label) as usize % users.max(1) as usize),
        }
    }

    fn next_user(&self) -> usize {
        loop {
            let user =
                self.order[self.cursor.fetch_add(1, Ordering::Relaxed) % self.order.len()] as usize;
            if self.interlinear[user] || self.mix.readers_take_part() {
                return user;
            }
        }
    }
}

/// The most page views one session asks.
const MAX_SESSION: u64 = 20;

struct Sample {
    op: u8,
    target: u8,
    micros: u32,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    errors: [u64; OPS.len()],
    first_errors: BTreeMap<&'static str, String>,
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("HTTP client")
}

/// Sends one GraphQL request: its body, or why it failed.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    authorization: Option<&reqwest::header::HeaderValue>,
    body: Vec<u8>,
) -> Result<axum::body::Bytes, String> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "accept",
            "application/graphql-response+json, application/json",
        )
        .body(body);
    if let Some(value) = authorization {
        request = request.header("authorization", value.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", preview(&bytes)));
    }
    if bytes.windows(9).any(|w| w == b"\"errors\":") {
        return Err(format!("GraphQL errors: {}", preview(&bytes)));
    }
    Ok(bytes)
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.find("\"errors\"") {
        Some(at) => text[at..].chars().take(400).collect(),
        None => text.chars().take(400).collect(),
    }
}

async fn reader(
    shared: Arc<Shared>,
    index: usize,
    url: String,
    target: u8,
    seed: u64,
    pace: (f64, f64),
    window: (Instant, Instant),
) -> anyhow::Result<Tally> {
    let (session_mean, think_ms) = pace;
    let client = client()?;
    let (from, until) = window;
    let mut rng = Rng::derive(seed, &[hash_name("reader"), index as u64]);
    let mut tally = Tally::default();
    'sessions: loop {
        let user = shared.next_user();
        let authorization =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", shared.tokens[user]))
                .context("a token that is not a header value")?;
        // At most 20 page views: no closed-loop session (a second or so) exceeds what any plan
        // allows a user per minute in one bucket (Reader: 20 searches).
        for _ in 0..rng.geometric(session_mean).min(MAX_SESSION) {
            if Instant::now() >= until {
                break 'sessions;
            }
            let op = shared.mix.draw(&mut rng, shared.interlinear[user]);
            let body = shared.mix.body(op, &mut rng);
            let started = Instant::now();
            let outcome = send(&client, &url, Some(&authorization), body).await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            if think_ms > 0.0 {
                let pause = -(1.0 - rng.f64()).ln() * think_ms;
                tokio::time::sleep(Duration::from_secs_f64(pause / 1e3)).await;
            }
            if started < from {
                continue;
            }
            match outcome {
                Ok(_) => tally.samples.push(Sample {
                    op: op.index() as u8,
                    target,
                    micros,
                }),
                Err(error) => {
                    tally.errors[op.index()] += 1;
                    tally.first_errors.entry(op.name()).or_insert(error);
                }
            }
        }
    }
    Ok(tally)
}

/// What the stores and processes had counted at one moment.
struct Snapshot {
    at: Instant,
    metrics: Vec<Samples>,
    probe: BTreeMap<String, f64>,
    cpu_ms: Vec<f64>,
    /// CPU time the whole machine spent busy (every process, every core).
    machine_ms: f64,
}

/// Busy CPU time of the whole machine (`/proc/stat`: all but idle and iowait), milliseconds.
fn machine_busy_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = ticks.iter().take(8).sum::<u64>()
        - ticks.get(3).copied().unwrap_or(0)
        - ticks.get(4).copied().unwrap_or(0);
    busy as f64 * 10.0
}

/// user + system CPU time of `pid` (and of its children), in milliseconds.
fn cpu_ms(pid: u32, children: bool) -> f64 {
    let ticks = |stat: &str| -> Option<(u32, u64)> {
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((ppid, utime + stime))
    };
    let mut total = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| ticks(&s))
        .map_or(0, |(_, t)| t);
    if children && let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(child) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, t)) = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| ticks(&s))
                && ppid == pid
            {
                total += t;
            }
        }
    }
    // USER_HZ is 100 on every architecture Linux exports it to.
    total as f64 * 10.0
}

async fn snapshot(http: &reqwest::Client, settings: &Settings) -> Snapshot {
    let at = Instant::now();
    let machine_ms = machine_busy_ms();
    let cpu_ms = settings
        .cpu
        .iter()
        .map(|(_, pid, children)| cpu_ms(*pid, *children))
        .collect();
    let mut metrics = Vec::new();
    for url in &settings.metrics {
        let text = match http.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(error) => {
                eprintln!("metrics at {url}: {error}");
                String::new()
            }
        };
        metrics.push(prom::parse(&text));
    }
    let mut probe = BTreeMap::new();
    if let Some(command) = &settings.probe {
        match tokio::process::Command::new("bash")
            .arg("-c")
            .arg(command)
            .output()
            .await
        {
            Ok(output) => {
                for line in String::from_utf8_lossy(&output.stdout).lines() {
                    if let Some((name, value)) = line.trim().rsplit_once(' ')
                        && let Ok(value) = value.parse::<f64>()
                    {
                        probe.insert(name.trim().to_owned(), value);
                    }
                }
            }
            Err(error) => eprintln!("the probe {command:?}: {error}"),
        }
    }
    Snapshot {
        at,
        metrics,
        probe,
        cpu_ms,
        machine_ms,
    }
}

/// The nearest-rank percentile `p` (0–100) of sorted `values`.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(mut micros: Vec<u32>, errors: u64, seconds: f64) -> Value {
    micros.sort_unstable();
    let n = micros.len() as u64;
    let mean = micros.iter().map(|&m| u64::from(m)).sum::<u64>() / n.max(1);
    json!({
        "requests": n + errors,
        "errors": errors,
        "rps": ((n + errors) as f64 / seconds * 10.0).round() / 10.0,
        "mean_us": mean,
        "p50_us": percentile(&micros, 50.0),
        "p95_us": percentile(&micros, 95.0),
        "p99_us": percentile(&micros, 99.0),
        "max_us": micros.last().copied().unwrap_or(0),
    })
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn rate(hits: f64, misses: f64) -> Value {
    if hits + misses == 0.0 {
        Value::Null
    } else {
        json!(round(hits / (hits + misses), 4))
    }
}

/// What the Prometheus counters say per request (`requests`: measured ones).
fn derived(grown: &Samples, requests: f64) -> Value {
    let per = |value: f64| round(value / requests.max(1.0), 3);
    let sum = |name: &str, labels: &[(&str, &str)]| prom::sum(grown, name, labels);
    let content_hits = sum(
        "gospelib_redis_mget_keys_total",
        &[("purpose", "content cache"), ("result", "found")],
    );
    let content_misses = sum(
        "gospelib_redis_mget_keys_total",
        &[("purpose", "content cache"), ("result", "absent")],
    );
    let entity_hits = sum("gospelib_entity_cache_total", &[("result", "hit")]);
    let entity_misses = sum("gospelib_entity_cache_total", &[("result", "miss")]);
    let mut entity_by_type = Map::new();
    for typename in prom::label_values(grown, "gospelib_entity_cache_total", "type") {
        let hits = sum(
            "gospelib_entity_cache_total",
            &[("type", &typename), ("result", "hit")],
        );
        let misses = sum(
            "gospelib_entity_cache_total",
            &[("type", &typename), ("result", "miss")],
        );
        entity_by_type.insert(
            typename,
            json!({"lookups_per_request": per(hits + misses), "hit_rate": rate(hits, misses)}),
        );
    }
    let mut fetches = Map::new();
    for subgraph in prom::label_values(
        grown,
        "gospelib_subgraph_fetch_duration_seconds_count",
        "subgraph",
    ) {
        let labels = [("subgraph", subgraph.as_str())];
        let count = sum("gospelib_subgraph_fetch_duration_seconds_count", &labels);
        let seconds = sum("gospelib_subgraph_fetch_duration_seconds_sum", &labels);
        let failed = count
            - sum(
                "gospelib_subgraph_fetch_duration_seconds_count",
                &[("subgraph", subgraph.as_str()), ("outcome", "ok")],
            );
        fetches.insert(
            subgraph,
            json!({
                "fetches_per_request": per(count),
                "mean_ms": if count > 0.0 { round(seconds / count * 1e3, 3) } else { 0.0 },
                "ms_per_request": round(seconds * 1e3 / requests.max(1.0), 3),
                "not_ok": failed,
            }),
        );
    }
    let mut routes = Map::new();
    for route in prom::label_values(
        grown,
        "gospelib_http_request_duration_seconds_count",
        "route",
    ) {
        let labels = [("route", route.as_str())];
        let count = sum("gospelib_http_request_duration_seconds_count", &labels);
        if count == 0.0 {
            continue;
        }
        let seconds = sum("gospelib_http_request_duration_seconds_sum", &labels);
        routes.insert(
            route,
            json!({"requests": count, "mean_ms": round(seconds / count * 1e3, 3)}),
        );
    }
    let mut operations = Map::new();
    for name in prom::label_values(
        grown,
        "gospelib_operation_duration_seconds_count",
        "operation",
    ) {
        let labels = [("operation", name.as_str())];
        let count = sum("gospelib_operation_duration_seconds_count", &labels);
        if count == 0.0 {
            continue;
        }
        let seconds = sum("gospelib_operation_duration_seconds_sum", &labels);
        operations.insert(
            name,
            json!({"count": count, "mean_ms": round(seconds / count * 1e3, 3)}),
        );
    }
    let mut errors: BTreeMap<String, f64> = BTreeMap::new();
    for (series, value) in grown {
        if series.name == "gospelib_graphql_errors_total" && *value > 0.0 {
            let key = format!(
                "{}:{}",
                series.label("subgraph").unwrap_or("?"),
                series.label("code").unwrap_or("?")
            );
            *errors.entry(key).or_insert(0.0) += value;
        }
    }
    json!({
        "falkordb_queries_per_request": per(sum("gospelib_store_queries_total", &[("store", "falkordb")])),
        "study_sql_per_request": per(sum("gospelib_store_queries_total", &[("store", "postgres"), ("subgraph", "study")])),
        "content_cache": {"lookups_per_request": per(content_hits + content_misses),
                          "hit_rate": rate(content_hits, content_misses)},
        "entity_cache": {"lookups_per_request": per(entity_hits + entity_misses),
                         "hit_rate": rate(entity_hits, entity_misses), "by_type": entity_by_type},
        "plan_cache_hit_rate": rate(sum("gospelib_plan_cache_total", &[("result", "hit")]),
                                    sum("gospelib_plan_cache_total", &[("result", "miss")])),
        "operations_shared": sum("gospelib_operations_shared_total", &[]),
        "subgraph_fetches": fetches,
        "http_routes": routes,
        "operations": operations,
        "graphql_errors": errors,
    })
}

pub async fn run(shared: Arc<Shared>, settings: Settings) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.connections > 0 && settings.duration > 0.0 && settings.warmup >= 0.0,
        "--connections and --duration must be positive, --warmup not negative"
    );
    let http = client()?;
    let mut settings = settings;
    settings
        .cpu
        .push(("load generator".to_owned(), std::process::id(), false));
    // Without a warm-up the window opens before the first request (a cold start is measured).
    let first = if settings.warmup == 0.0 {
        Some(snapshot(&http, &settings).await)
    } else {
        None
    };
    let from = Instant::now() + Duration::from_secs_f64(settings.warmup);
    let until = from + Duration::from_secs_f64(settings.duration);
    let readers: Vec<_> = (0..settings.connections)
        .map(|index| {
            let target = index % settings.urls.len();
            tokio::spawn(reader(
                shared.clone(),
                index,
                settings.urls[target].clone(),
                target as u8,
                settings.seed ^ hash_name(&settings.label),
                (settings.session_mean, settings.think_ms),
                (from, until),
            ))
        })
        .collect();
    let opened = match first {
        Some(snapshot) => snapshot,
        None => {
            tokio::time::sleep_until(from.into()).await;
            snapshot(&http, &settings).await
        }
    };
    tokio::time::sleep_until(until.into()).await;
    let closed = snapshot(&http, &settings).await;
    let mut tally = Tally::default();
    for reader in readers {
        let one = reader.await.context("a reader panicked")??;
        tally.samples.extend(one.samples);
        for (total, more) in tally.errors.iter_mut().zip(one.errors) {
            *total += more;
        }
        for (op, error) in one.first_errors {
            tally.first_errors.entry(op).or_insert(error);
        }
    }
    let seconds = settings.duration;
    let errors: u64 = tally.errors.iter().sum();
    let all: Vec<u32> = tally.samples.iter().map(|s| s.micros).collect();
    let requests = (all.len() as u64 + errors) as f64;
    let mut report = stats(all, errors, seconds);
    let mut by_op = Map::new();
    for op in OPS {
        let micros: Vec<u32> = tally
            .samples
            .iter()
            .filter(|s| usize::from(s.op) == op.index())
            .map(|s| s.micros)
            .collect();
        let errors = tally.errors[op.index()];
        if micros.is_empty() && errors == 0 {
            continue;
        }
        let mut one = stats(micros, errors, seconds);
        one["share"] = json!(round(
            one["requests"].as_f64().unwrap_or(0.0) / requests.max(1.0),
            3
        ));
        by_op.insert(op.name().to_owned(), one);
    }
    let mut by_target = Map::new();
    if settings.urls.len() > 1 {
        for (index, url) in settings.urls.iter().enumerate() {
            let micros: Vec<u32> = tally
                .samples
                .iter()
                .filter(|s| usize::from(s.target) == index)
                .map(|s| s.micros)
                .collect();
            by_target.insert(url.clone(), stats(micros, 0, seconds));
        }
    }
    let mut grown = Samples::new();
    for (before, after) in opened.metrics.iter().zip(&closed.metrics) {
        prom::add(&mut grown, &prom::delta(before, after));
    }
    let window = closed.at.duration_since(opened.at).as_secs_f64();
    let mut stores = Map::new();
    for (name, after) in &closed.probe {
        let before = opened.probe.get(name).copied().unwrap_or(0.0);
        stores.insert(
            name.clone(),
            json!(round((after - before) / requests.max(1.0), 4)),
        );
    }
    let mut cpu = Map::new();
    for (index, (name, _, _)) in settings.cpu.iter().enumerate() {
        let used = closed.cpu_ms[index] - opened.cpu_ms[index];
        cpu.insert(
            name.clone(),
            json!({"ms_per_request": round(used / requests.max(1.0), 4),
                   "cores": round(used / 1e3 / window, 3)}),
        );
    }
    // What the machine did besides the processes named (other work on a shared machine; the
    // stores' work for other clients is inside theirs).
    let machine = closed.machine_ms - opened.machine_ms;
    let named: f64 = (0..settings.cpu.len())
        .map(|i| closed.cpu_ms[i] - opened.cpu_ms[i])
        .sum();
    cpu.insert(
        "machine".to_owned(),
        json!({"cores": round(machine / 1e3 / window, 3)}),
    );
    cpu.insert(
        "other processes".to_owned(),
        json!({"cores": round((machine - named).max(0.0) / 1e3 / window, 3)}),
    );
    let object = report.as_object_mut().expect("an object");
    let mut head = Map::new();
    head.insert("label".into(), json!(settings.label));
    for (key, value) in &settings.tags {
        head.insert(key.clone(), json!(value));
    }
    head.insert("connections".into(), json!(settings.connections));
    head.insert("routers".into(), json!(settings.urls.len()));
    head.insert("duration_s".into(), json!(seconds));
    head.insert("warmup_s".into(), json!(settings.warmup));
    head.insert("think_ms".into(), json!(settings.think_ms));
    head.append(object);
    head.insert("ops".into(), Value::Object(by_op));
    if !by_target.is_empty() {
        head.insert("routers_detail".into(), Value::Object(by_target));
    }
    head.insert("platform".into(), derived(&grown, requests));
    head.insert("stores_per_request".into(), Value::Object(stores));
    head.insert("cpu".into(), Value::Object(cpu));
    if !tally.first_errors.is_empty() {
        head.insert("first_errors".into(), json!(tally.first_errors));
    }
    let report = Value::Object(head);
    println!("{report}");
    let ms = |key: &str| report[key].as_f64().unwrap_or(0.0) / 1e3;
    println!(
        "{}: {} readers, {} router(s): {:.0} req/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms, {} errors of {} requests",
        settings.label,
        settings.connections,
        settings.urls.len(),
        report["rps"].as_f64().unwrap_or(0.0),
        ms("p50_us"),
        ms("p95_us"),
        ms("p99_us"),
        ms("max_us"),
        errors,
        requests
    );
    for (op, error) in &tally.first_errors {
        eprintln!("{}: first {op} error: {error}", settings.label);
    }
    Ok(())
}

/// Every chapter's reader page once, signed in as users in turn, `concurrency` at a time:
/// content's cache and the router's entity cache then hold the whole canon.
pub async fn prime(url: &str, shared: Arc<Shared>, concurrency: usize) -> anyhow::Result<Value> {
    let chapters = shared.mix.canon.chapters.len();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (shared, next, url) = (shared.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                let client = client()?;
                let mut failed = Vec::new();
                loop {
                    let chapter = next.fetch_add(1, Ordering::Relaxed);
                    if chapter >= chapters {
                        return anyhow::Ok(failed);
                    }
                    let user = shared.next_user();
                    let authorization = reqwest::header::HeaderValue::from_str(&format!(
                        "Bearer {}",
                        shared.tokens[user]
                    ))?;
                    let body = shared.mix.reader_page(chapter);
                    if let Err(error) = send(&client, &url, Some(&authorization), body).await {
                        failed.push(format!("{}: {error}", shared.mix.canon.chapter_id(chapter)));
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for worker in workers {
        failed.extend(worker.await.context("a priming reader panicked")??);
    }
    Ok(json!({"chapters": chapters, "failed": failed.len(),
              "first_failures": failed.iter().take(3).collect::<Vec<_>>(),
              "seconds": round(started.elapsed().as_secs_f64(), 1)}))
}

/// Signs in as a few users and checks who the platform says they are (`me { id }`: the users
/// exist in accounts under the id the router derives), and that an entitled user's
/// interlinear and a Reader's refusal behave as the plans say.
pub async fn verify(url: &str, tokens: &[String], seed: u64) -> anyhow::Result<Value> {
    let http = client()?;
    let count = tokens.len() as u32;
    let mut checked = Vec::new();
    let mut entitled_checked = false;
    let mut reader_checked = false;
    for index in (0..count).step_by((count as usize / 40).max(1)) {
        let user = crate::seed::user(seed, index);
        let authorization =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", tokens[index as usize]))?;
        let query = if (user.plan.interlinear() && !entitled_checked)
            || (!user.plan.interlinear() && !reader_checked)
        {
            "{ me { id } passage(id: \"john.3.16\") { words { order } } }"
        } else {
            "{ me { id } }"
        };
        let body = serde_json::to_vec(&json!({ "query": query }))?;
        let answer = match send(&http, url, Some(&authorization), body).await {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)?,
            Err(error) if query.contains("words") && !user.plan.interlinear() => {
                anyhow::ensure!(
                    error.contains("FORBIDDEN") || error.contains("scope"),
                    "a Reader asking for the interlinear: {error}"
                );
                reader_checked = true;
                continue;
            }
            Err(error) => anyhow::bail!("user {index} ({}): {error}", user.clerk_id),
        };
        anyhow::ensure!(
            answer["data"]["me"]["id"] == user.id.as_str(),
            "user {index} ({}): the platform says {} but the seed made {}",
            user.clerk_id,
            answer["data"]["me"],
            user.id
        );
        if query.contains("words") {
            entitled_checked = true;
        }
        checked.push(index);
    }
    Ok(
        json!({"users_checked": checked.len(), "interlinear_allowed": entitled_checked,
              "interlinear_refused_to_a_reader": reader_checked}),
    )
}

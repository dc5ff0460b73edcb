//! Federated subscriptions at scale: fan-out latency and memory per open subscription
//! (issue #14: "10k idle subscriptions on 2 cores").
//!
//! The server runs in a child process (this binary, run again with `GOSPELIB_BENCH_SUB_SERVE`
//! set), so that its memory and CPU are its own: a small subgraph whose
//! `Subscription.tick { seq sentAtMicros }` follows a Redis channel through the kit's
//! `LiveEvents`, composed into a supergraph and served in process behind the router, itself
//! served by the kit's HTTP server (GraphQL over WebSocket at `/graphql`), with jemalloc as the
//! router's binary has it.
//!
//! This process is the client: `GOSPELIB_BENCH_SUB_CONNECTIONS` WebSocket connections (100)
//! carrying `GOSPELIB_BENCH_SUBS_PER_CONNECTION` subscriptions each (100), so 10,000. Warm-up
//! ticks are published until every subscription has received one (the subgraph listens from
//! its stream's first poll), then everything idles for a few seconds and the server's resident
//! size is read again: (open − idle) / subscriptions is the memory per open subscription, the
//! client connections' server side included. Then `GOSPELIB_BENCH_SUB_EVENTS` events (20), one
//! every `GOSPELIB_BENCH_SUB_INTERVAL_MS` (500), each carrying its send time: every
//! subscription records receive time − send time (the client shares the 2 cores, so its own
//! reading of the frames is included), and the time until the last subscription got each
//! event. The server's CPU time (utime + stime) over the events is divided by their number.
//!
//! Prints a table and one JSON line. `cargo bench -p gospelib-router --bench subscriptions`
//! with the stack's variables (`GOSPELIB_REDIS_URL`).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_graphql::{Context, EmptyMutation, Object, Schema, SimpleObject, Subscription};
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, Stream, StreamExt};
use gospelib_kit::live::{Heard, LiveEvents};
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_app, serve};
use gospelib_kit::ws::Message as Protocol;
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// As the router's binary: jemalloc, returning unused pages after a second.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf = JemallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);
// SAFETY: it points at a string literal, immutable for the whole run.
unsafe impl Sync for JemallocConf {}

/// Set in the child: serve, on the channel it names.
const SERVE: &str = "GOSPELIB_BENCH_SUB_SERVE";
/// Set in the child: its largest number of operations per WebSocket.
const PER_CONNECTION: &str = "GOSPELIB_BENCH_SUB_MAX_PER_CONNECTION";
const SUBSCRIPTION: &str = "subscription Ticks { tick { seq sentAtMicros } }";
/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

fn main() {
    if let Ok(channel) = std::env::var(SERVE) {
        server(&channel);
    } else {
        client();
    }
}

// ---- the server (child process) ----

#[derive(SimpleObject)]
struct Tick {
    seq: i32,
    sent_at_micros: String,
}

struct TicksQuery;

#[Object(name = "Query")]
impl TicksQuery {
    /// The Redis channel the ticks come from.
    async fn tick_channel(&self, ctx: &Context<'_>) -> String {
        ctx.data_unchecked::<Ticks>().channel.clone()
    }
}

/// Where ticks come from.
#[derive(Clone)]
struct Ticks {
    live: LiveEvents,
    channel: String,
}

struct TicksSubscription;

#[Subscription(name = "Subscription")]
impl TicksSubscription {
    /// Every tick published on the channel from now on.
    async fn tick(&self, ctx: &Context<'_>) -> impl Stream<Item = Tick> + use<> {
        let ticks = ctx.data_unchecked::<Ticks>();
        ticks.live.subscribe(&ticks.channel).filter_map(|heard| {
            // A gap is counted as the events it lost (missing sequence numbers).
            let Heard::Event(event) = heard else {
                return futures_util::future::ready(None);
            };
            let tick = event["seq"].as_i64().and_then(|seq| {
                Some(Tick {
                    seq: i32::try_from(seq).ok()?,
                    sent_at_micros: event["sentAtMicros"].as_str()?.to_owned(),
                })
            });
            futures_util::future::ready(tick)
        })
    }
}

type TicksSchema = Schema<TicksQuery, EmptyMutation, TicksSubscription>;

struct Local(TicksSchema);

impl LocalSubgraph for Local {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
        })
    }

    fn subscribe(
        &self,
        request: Value,
        _headers: Vec<(String, String)>,
    ) -> BoxStream<'static, Value> {
        let request: async_graphql::Request = serde_json::from_value(request).unwrap();
        Box::pin(
            self.0
                .execute_stream(request)
                .map(|response| serde_json::to_value(response).unwrap()),
        )
    }
}

fn server(channel: &str) {
    gospelib_kit::telemetry::init_json_logs();
    // The parent holds our stdin: when it goes (even killed), so do we.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let redis_url = std::env::var("GOSPELIB_REDIS_URL").expect("GOSPELIB_REDIS_URL");
    let per_connection: usize = std::env::var(PER_CONNECTION)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let ticks = Ticks {
            live: LiveEvents::new(redis::Client::open(redis_url).unwrap()),
            channel: channel.to_owned(),
        };
        let schema = Schema::build(TicksQuery, EmptyMutation, TicksSubscription)
            .data(ticks)
            .enable_federation()
            .enable_subscription_in_federation()
            .finish();
        let sdl = schema.sdl_with_options(async_graphql::SDLExportOptions::new().federation());
        let supergraph = compose(&[SubgraphSdl {
            name: "ticks".to_owned(),
            url: "http://ticks.invalid/graphql".to_owned(),
            sdl,
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        let transport = InProcess::default().with("ticks", Arc::new(Local(schema)));
        let settings = RouterSettings {
            max_subscriptions_per_caller: 20_000,
            ..RouterSettings::default()
        };
        let router = Router::from_settings(
            Supergraph::parse(&supergraph, None).unwrap(),
            Arc::new(transport),
            &settings,
        );
        let mut edge = gospelib_kit::edge::EdgeSettings::default();
        edge.subscriptions.max_per_connection = per_connection.max(100);
        let (app, _) = build_app(AppSpec {
            service: "router".to_owned(),
            gateway: Some(Arc::new(RouterService::new(Arc::new(router)))),
            subgraphs: Vec::new(),
            dependencies: Vec::new(),
            max_body_bytes: 64 * 1024,
            extra_routes: None,
            public_routes: None,
            edge,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut stdout = std::io::stdout();
        writeln!(stdout, "LISTENING {address}").unwrap();
        stdout.flush().unwrap();
        serve(
            listener,
            app,
            std::future::pending(),
            ConnectionLimits::with_grace(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    });
}

// ---- the client (this process) ----

/// Kills the server when dropped (a panic included).
struct Server {
    child: Child,
    address: String,
    /// Server log lines saying a listener fell behind, and every warning or error.
    lagged: Arc<AtomicUsize>,
    warnings: Arc<AtomicUsize>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(channel: &str, per_connection: usize) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env(SERVE, channel)
            .env(PER_CONNECTION, per_connection.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("GOSPELIB_LOG").is_none() {
            command.env("GOSPELIB_LOG", "warn");
        }
        let mut child = command.spawn().expect("the server starts");
        let lagged = Arc::new(AtomicUsize::new(0));
        let warnings = Arc::new(AtomicUsize::new(0));
        let stderr = child.stderr.take().unwrap();
        let (lagged_count, warning_count) = (lagged.clone(), warnings.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("fell behind") {
                    lagged_count.fetch_add(1, Ordering::Relaxed);
                }
                if warning_count.fetch_add(1, Ordering::Relaxed) < 20 {
                    eprintln!("[server] {line}");
                }
            }
        });
        let mut server = Self {
            child,
            address: String::new(),
            lagged,
            warnings,
        };
        let mut stdout = BufReader::new(server.child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        server.address = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("the server said {line:?}"))
            .to_owned();
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A `/proc/<pid>/status` line's value in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's parentheses: state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / USER_HZ
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
        Err(_) => default,
    }
}

/// What all connections share while they run.
struct Shared {
    /// Subscriptions that have received a warm-up tick.
    listening: AtomicUsize,
    /// Per event (index = seq), how many subscriptions received it.
    received: Vec<AtomicUsize>,
    /// `error` and `complete` messages, and connections that ended early.
    errors: AtomicUsize,
    completes: AtomicUsize,
    closed: AtomicUsize,
}

/// One received event: (seq, microseconds from its send time).
type Sample = (usize, i64);

/// Opens one connection with `subscriptions` subscriptions and records what it receives until
/// `stop`; returns the samples.
async fn connection(
    address: String,
    subscriptions: usize,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut upgrade = format!("ws://{address}/graphql")
        .into_client_request()
        .unwrap();
    upgrade.headers_mut().insert(
        "sec-websocket-protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(upgrade)
        .await
        .unwrap_or_else(|e| panic!("WebSocket to {address}: {e}"));
    let init = Protocol::ConnectionInit { payload: None };
    socket.send(Frame::text(init.to_text())).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Frame::Text(text))) => {
                match serde_json::from_str::<Protocol>(text.as_str()).unwrap() {
                    Protocol::ConnectionAck { .. } => break,
                    Protocol::Ping { .. } => {
                        let pong = Protocol::Pong { payload: None };
                        socket.send(Frame::text(pong.to_text())).await.unwrap();
                    }
                    other => panic!("before connection_ack: {other:?}"),
                }
            }
            Some(Ok(_)) => {}
            other => panic!("no connection_ack: {other:?}"),
        }
    }
    for id in 0..subscriptions {
        let subscribe = Protocol::Subscribe {
            id: id.to_string(),
            payload: json!({"query": SUBSCRIPTION}),
        };
        socket.feed(Frame::text(subscribe.to_text())).await.unwrap();
    }
    socket.flush().await.unwrap();
    let mut warmed = vec![false; subscriptions];
    let mut samples = Vec::with_capacity(subscriptions * (shared.received.len() - 1));
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = stop.changed() => break,
        };
        let received_at = now_micros();
        let text = match frame {
            Some(Ok(Frame::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                eprintln!("a connection failed: {error}");
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            None => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        match message["type"].as_str() {
            Some("next") => {}
            Some("error") => {
                if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("error: {message}");
                }
                continue;
            }
            Some("complete") => {
                shared.completes.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Some("ping") => {
                let pong = Protocol::Pong { payload: None };
                let _ = socket.send(Frame::text(pong.to_text())).await;
                continue;
            }
            _ => continue,
        }
        let tick = &message["payload"]["data"]["tick"];
        let (Some(seq), Some(sent)) = (
            tick["seq"].as_u64(),
            tick["sentAtMicros"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok()),
        ) else {
            if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("unexpected: {message}");
            }
            continue;
        };
        let seq = seq as usize;
        if seq == 0 {
            let id: usize = message["id"].as_str().unwrap().parse().unwrap();
            if !std::mem::replace(&mut warmed[id], true) {
                shared.listening.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some(count) = shared.received.get(seq) {
            count.fetch_add(1, Ordering::Relaxed);
            samples.push((seq, received_at - sent));
        }
    }
    samples
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(micros: i64) -> f64 {
    (micros as f64 / 10.0).round() / 100.0
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

fn client() {
    let connections = setting("GOSPELIB_BENCH_SUB_CONNECTIONS", 100);
    let per_connection = setting("GOSPELIB_BENCH_SUBS_PER_CONNECTION", 100);
    let events = setting("GOSPELIB_BENCH_SUB_EVENTS", 20);
    let interval = Duration::from_millis(setting("GOSPELIB_BENCH_SUB_INTERVAL_MS", 500) as u64);
    let idle = Duration::from_secs(setting("GOSPELIB_BENCH_SUB_IDLE_SECS", 5) as u64);
    let total = connections * per_connection;
    let Ok(redis_url) = std::env::var("GOSPELIB_REDIS_URL") else {
        eprintln!(
            "subscriptions bench: GOSPELIB_REDIS_URL is not set (run it with the stack's variables)"
        );
        return;
    };
    let channel = format!("bench:live:ticks:{}", std::process::id());
    let server = Server::start(&channel, per_connection);
    let pid = server.pid();
    let pid_text = pid.to_string();
    println!(
        "subscriptions bench: server pid {pid} at {}, {connections} connections × {per_connection} subscriptions = {total}, {events} events every {interval:?}",
        server.address
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let live = LiveEvents::new(redis::Client::open(redis_url).unwrap());
    let publish = |seq: usize| {
        let live = live.clone();
        let channel = channel.clone();
        async move {
            let event = json!({"seq": seq, "sentAtMicros": now_micros().to_string()});
            live.publish(&channel, &event).await.unwrap()
        }
    };

    // The idle server.
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = status_bytes(pid, "VmRSS");

    let shared = Arc::new(Shared {
        listening: AtomicUsize::new(0),
        received: (0..=events).map(|_| AtomicUsize::new(0)).collect(),
        errors: AtomicUsize::new(0),
        completes: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let opening = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            runtime.spawn(connection(
                server.address.clone(),
                per_connection,
                shared.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    // Warm-up ticks until every subscription has received one.
    let warm_ups = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut sent = 0;
        while shared.listening.load(Ordering::Relaxed) < total {
            if let Some(ended) = tasks.iter().position(|task| task.is_finished()) {
                panic!("connection {ended} ended during the warm-up");
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {total} subscriptions listening after 180 s",
                shared.listening.load(Ordering::Relaxed)
            );
            publish(0).await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        sent
    });
    let all_listening = opening.elapsed();
    std::thread::sleep(idle);
    let rss_open = status_bytes(pid, "VmRSS");
    let per_subscription = (rss_open as f64 - rss_idle as f64) / total as f64;

    // The events.
    let cpu_before = cpu_seconds(&pid_text);
    let client_cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let publisher_counts: Vec<usize> = runtime.block_on(async {
        let mut counts = Vec::new();
        let mut ticker = tokio::time::interval(interval);
        for seq in 1..=events {
            ticker.tick().await;
            counts.push(publish(seq).await);
        }
        // Until every subscription has the last events (or 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared
            .received
            .iter()
            .skip(1)
            .any(|c| c.load(Ordering::Relaxed) < total)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        counts
    });
    let events_took = started.elapsed();
    let cpu = cpu_seconds(&pid_text) - cpu_before;
    let client_cpu = cpu_seconds("self") - client_cpu_before;
    let rss_after = status_bytes(pid, "VmRSS");
    let rss_peak = status_bytes(pid, "VmHWM");

    stop.send(true).unwrap();
    let samples: Vec<Sample> = runtime.block_on(async {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    // The server's last log lines.
    std::thread::sleep(Duration::from_millis(100));

    // Latency over all (subscription, event) pairs, and the last subscriber per event.
    let mut latencies: Vec<i64> = samples.iter().map(|&(_, l)| l).collect();
    latencies.sort_unstable();
    let mut last_per_event = vec![i64::MIN; events + 1];
    for &(seq, latency) in &samples {
        last_per_event[seq] = last_per_event[seq].max(latency);
    }
    let mut last: Vec<i64> = last_per_event
        .into_iter()
        .skip(1)
        .filter(|&l| l != i64::MIN)
        .collect();
    last.sort_unstable();
    let expected = total * events;
    let missing = expected - samples.len();
    let (p50, p95, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0),
    );
    let (last_p50, last_max) = (percentile(&last, 50.0), last.last().copied().unwrap_or(0));
    let cpu_per_event_ms = cpu * 1000.0 / events as f64;
    let lagged = server.lagged.load(Ordering::Relaxed);
    let warnings = server.warnings.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let completes = shared.completes.load(Ordering::Relaxed);
    let closed = shared.closed.load(Ordering::Relaxed);

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| subscriptions open | {total} ({connections} connections × {per_connection}) |");
    println!(
        "| all listening after | {:.1} s ({warm_ups} warm-up ticks) |",
        all_listening.as_secs_f64()
    );
    println!("| server RSS idle | {} MiB |", mib(rss_idle));
    println!(
        "| server RSS with {total} open, idle {} s | {} MiB |",
        idle.as_secs(),
        mib(rss_open)
    );
    println!(
        "| memory per open subscription | {:.0} bytes ({:.1} KiB) |",
        per_subscription,
        per_subscription / 1024.0
    );
    println!(
        "| server RSS after the events (peak) | {} MiB ({} MiB) |",
        mib(rss_after),
        mib(rss_peak)
    );
    println!(
        "| fan-out latency p50 / p95 / p99 / max | {} / {} / {} / {} ms |",
        ms(p50),
        ms(p95),
        ms(p99),
        ms(max)
    );
    println!(
        "| last subscriber per event p50 / max | {} / {} ms |",
        ms(last_p50),
        ms(last_max)
    );
    println!(
        "| received / expected | {} / {expected} ({missing} missing) |",
        samples.len()
    );
    println!(
        "| server CPU per event | {cpu_per_event_ms:.1} ms ({cpu:.2} s over {events} events, {:.1} s) |",
        events_took.as_secs_f64()
    );
    println!(
        "| client CPU per event (same cores) | {:.1} ms |",
        client_cpu * 1000.0 / events as f64
    );
    println!(
        "| oddities | {errors} errors, {completes} completes, {closed} connections closed, {lagged} lag warnings, {warnings} server log lines, Redis receivers per publish {}..{} |",
        publisher_counts.iter().min().unwrap_or(&0),
        publisher_counts.iter().max().unwrap_or(&0)
    );
    let report = json!({
        "bench": "subscriptions",
        "connections": connections,
        "subscriptions_per_connection": per_connection,
        "subscriptions": total,
        "events": events,
        "interval_ms": interval.as_millis() as u64,
        "all_listening_s": all_listening.as_secs_f64(),
        "rss_idle_bytes": rss_idle,
        "rss_open_bytes": rss_open,
        "rss_after_bytes": rss_after,
        "rss_peak_bytes": rss_peak,
        "bytes_per_subscription": per_subscription.round(),
        "latency_ms": {"p50": ms(p50), "p95": ms(p95), "p99": ms(p99), "max": ms(max)},
        "last_subscriber_ms": {"p50": ms(last_p50), "max": ms(last_max)},
        "received": samples.len(),
        "expected": expected,
        "server_cpu_ms_per_event": (cpu_per_event_ms * 10.0).round() / 10.0,
        "client_cpu_ms_per_event": (client_cpu * 10_000.0 / events as f64).round() / 10.0,
        "errors": errors,
        "completes": completes,
        "connections_closed": closed,
        "lag_warnings": lagged,
        "server_log_lines": warnings,
    });
    println!("{report}");
}

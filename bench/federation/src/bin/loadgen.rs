//! `loadgen`: a closed-loop HTTP load generator for GraphQL endpoints.
//!
//! `--connections` workers each hold one keep-alive HTTP/1.1 connection (a client of their own
//! with a pool of one) and POST the same GraphQL request body back to back. After `--warmup`
//! seconds (not measured), every request that starts in the next `--duration` seconds is
//! measured from just before it is sent until its whole body has been read. An error is a
//! transport failure, a status other than 200, or a body with an `"errors"` key.
//!
//! Prints one JSON line (integers in microseconds, for scripts) and one readable line.
//! `--cpu-pid PID` also reports the CPU time (user + system, all threads) that process spent
//! during the measured window, per request: what a server costs per answer, whether or not
//! the load saturates it.
//! `--once` sends the request once, prints the response body and fails on an error: a
//! readiness and sanity check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
// The body is shared by every worker without copying (`Bytes` clones are reference counts).
use axum::body::Bytes;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Closed-loop keep-alive HTTP/1.1 load for a GraphQL URL."
)]
struct Cli {
    /// The GraphQL endpoint, e.g. http://127.0.0.1:4180/graphql.
    #[arg(long)]
    url: String,
    /// A file holding the request body (`{"query": …, "variables": …}`).
    #[arg(long, conflicts_with = "query")]
    body: Option<PathBuf>,
    /// The GraphQL query itself (no variables).
    #[arg(long)]
    query: Option<String>,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds first (connections opened, caches and plans warm).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A name for the report.
    #[arg(long, default_value = "load")]
    label: String,
    /// Send once, print the response and exit (non-zero on an error).
    #[arg(long)]
    once: bool,
    /// A header sent with every request, `name: value` (repeatable), e.g. a session token.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The server process whose CPU time during the measured window is reported.
    #[arg(long)]
    cpu_pid: Option<u32>,
}

/// The CPU time (user + system, every thread) process `pid` has used, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (in parentheses, which may hold spaces): state is the
    // 3rd field, utime the 14th and stime the 15th.
    let after_name = stat
        .rsplit_once(')')
        .context("an unexpected /proc stat line")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index - 3)
            .context("a short /proc stat line")?
            .parse()
            .context("a /proc stat field that is not a number")
    };
    // Linux reports these in USER_HZ, 100 per second on every architecture it exports to.
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// The CPU time `pid` uses between `from` and `until`.
async fn cpu_during(pid: u32, from: Instant, until: Instant) -> anyhow::Result<Duration> {
    tokio::time::sleep_until(from.into()).await;
    let start = cpu_time(pid)?;
    tokio::time::sleep_until(until.into()).await;
    Ok(cpu_time(pid)?.saturating_sub(start))
}

/// The `--header` values as a header map.
fn header_map(headers: &[String]) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut map = reqwest::header::HeaderMap::new();
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?} is not `name: value`"))?;
        map.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            reqwest::header::HeaderValue::from_str(value.trim())?,
        );
    }
    Ok(map)
}

/// What one worker saw during the measured window.
#[derive(Default)]
struct Tally {
    /// Latencies of the successful requests, in microseconds.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// One request: `Ok(latency)` or why it failed.
async fn request(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let outcome = async {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.clone())
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
        if has_errors(&bytes) {
            return Err(format!("GraphQL errors: {}", preview(&bytes)));
        }
        Ok(())
    }
    .await;
    (started.elapsed(), outcome)
}

/// Whether a response body carries a top-level-looking `"errors"` key (a substring test: the
/// demo's data never contains that text, and parsing every body would load the generator).
fn has_errors(body: &[u8]) -> bool {
    body.windows(8).any(|w| w == b"\"errors\"")
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

fn client(headers: &reqwest::header::HeaderMap) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .default_headers(headers.clone())
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("HTTP client")
}

async fn worker(
    url: String,
    body: Bytes,
    headers: reqwest::header::HeaderMap,
    measure_from: Instant,
    measure_until: Instant,
) -> anyhow::Result<Tally> {
    let client = client(&headers)?;
    let mut tally = Tally::default();
    loop {
        let now = Instant::now();
        if now >= measure_until {
            break;
        }
        let measured = now >= measure_from;
        let (latency, outcome) = request(&client, &url, &body).await;
        if !measured {
            continue;
        }
        match outcome {
            Ok(()) => tally.latencies.push(latency.as_micros() as u64),
            Err(error) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(error);
            }
        }
    }
    Ok(tally)
}

/// The nearest-rank percentile `p` (0–100) of sorted `values`.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = match (&cli.body, &cli.query) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(query)) => serde_json::to_vec(&serde_json::json!({ "query": query }))?,
        (None, None) => bail!("give --body FILE or --query QUERY"),
    };
    let body = Bytes::from(body);
    let headers = header_map(&cli.headers)?;

    if cli.once {
        let client = client(&headers)?;
        let (latency, outcome) = request(&client, &cli.url, &body).await;
        return match outcome {
            Ok(()) => {
                eprintln!("{}: ok in {:.2} ms", cli.label, latency.as_secs_f64() * 1e3);
                Ok(())
            }
            Err(error) => bail!("{}: {error}", cli.label),
        };
    }

    if cli.connections == 0 || cli.duration <= 0.0 || cli.warmup < 0.0 {
        bail!("--connections and --duration must be positive, --warmup not negative");
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(cli.warmup);
    let measure_until = measure_from + Duration::from_secs_f64(cli.duration);
    let cpu = cli
        .cpu_pid
        .map(|pid| tokio::spawn(cpu_during(pid, measure_from, measure_until)));
    let workers: Vec<_> = (0..cli.connections)
        .map(|_| {
            tokio::spawn(worker(
                cli.url.clone(),
                body.clone(),
                headers.clone(),
                measure_from,
                measure_until,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let tally = worker.await.context("a worker panicked")??;
        latencies.extend(tally.latencies);
        errors += tally.errors;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let rps = (ok + errors) as f64 / cli.duration;
    let mean = latencies.iter().sum::<u64>().checked_div(ok).unwrap_or(0);
    let (p50, p95, p99) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
    );
    let max = latencies.last().copied().unwrap_or(0);
    let cpu_ms = match cpu {
        Some(task) => Some(
            task.await
                .context("the CPU sampler panicked")??
                .as_secs_f64()
                * 1e3,
        ),
        None => None,
    };
    let cpu_ms_per_request = cpu_ms
        .filter(|_| ok + errors > 0)
        .map(|ms| (ms / (ok + errors) as f64 * 1e4).round() / 1e4);
    let mut report = serde_json::json!({
        "label": cli.label,
        "url": cli.url,
        "connections": cli.connections,
        "duration_s": cli.duration,
        "requests": ok + errors,
        "errors": errors,
        "rps": (rps * 10.0).round() / 10.0,
        "mean_us": mean,
        "p50_us": p50,
        "p95_us": p95,
        "p99_us": p99,
        "max_us": max,
    });
    if let Some(per_request) = cpu_ms_per_request {
        report["cpu_ms"] = serde_json::json!(cpu_ms);
        report["cpu_ms_per_request"] = serde_json::json!(per_request);
    }
    let mut out = format!("{report}\n");
    out.push_str(&format!(
        "{}: {} conn, {:.0} req/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
         {} errors of {} requests\n",
        cli.label,
        cli.connections,
        rps,
        ms(p50),
        ms(p95),
        ms(p99),
        ms(max),
        errors,
        ok + errors
    ));
    if let Some(per_request) = cpu_ms_per_request {
        out.push_str(&format!(
            "{}: server CPU {:.3} ms per request\n",
            cli.label, per_request
        ));
    }
    print_report(&out)?;
    if let Some(error) = first_error {
        eprintln!("{}: first error: {error}", cli.label);
    }
    Ok(())
}

/// Writes the report to stdout; a reader that went away (`| head`) ends the run quietly
/// instead of panicking as `println!` does.
fn print_report(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("writing the report"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 95.0), 95);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn an_errors_key_is_an_error() {
        assert!(has_errors(br#"{"data":null,"errors":[{"message":"x"}]}"#));
        assert!(!has_errors(br#"{"data":{"a":1}}"#));
    }

    #[test]
    fn this_process_cpu_time_grows_while_it_works() {
        // Work until the process has used 100 ms of CPU more: on a machine busy with other
        // tests, 200 ms of spinning may get less than half a core (CI once saw 90 ms), so the
        // wait is bounded by a generous deadline, not by a guess at the share it gets.
        let before = cpu_time(std::process::id()).unwrap();
        let started = Instant::now();
        let mut spin = 0u64;
        loop {
            let slice = Instant::now();
            while slice.elapsed() < Duration::from_millis(10) {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            let after = cpu_time(std::process::id()).unwrap();
            if after - before >= Duration::from_millis(100) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "30 s of spinning counted {before:?} → {after:?}"
            );
        }
        assert!(spin > 0);
    }
}

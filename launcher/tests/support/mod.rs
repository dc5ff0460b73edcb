//! What the launcher's tests share: the `gospelib` binary with chosen variables, the stack's
//! store variables, a served process, and throwaway PostgreSQL databases.
#![allow(dead_code)]

pub mod clerk;
pub mod ws;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_gospelib");

pub const STORE_VARIABLES: [&str; 5] = [
    "GOSPELIB_PG_URL",
    "GOSPELIB_REDIS_URL",
    "GOSPELIB_FALKORDB_URL",
    "GOSPELIB_TYPESENSE_URL",
    "GOSPELIB_TYPESENSE_API_KEY",
];

/// The stack's secrets (scripts/stack makes them): the internal secret every `serve` needs,
/// and the Clerk and Stripe webhook secrets the accounts and billing parts need.
pub const SECRET_VARIABLES: [&str; 3] = [
    "GOSPELIB_INTERNAL_SECRET",
    "GOSPELIB_CLERK_WEBHOOK_SECRET",
    "GOSPELIB_STRIPE_WEBHOOK_SECRET",
];

/// A command with no `GOSPELIB_*` variable but those given.
pub fn gospelib(args: &[&str], vars: &[(&str, String)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

/// The stack's store variables (exported by scripts/test), on a stack whose database has been
/// migrated (once per test binary: a fresh stack has no tables until `gospelib migrate`).
pub fn stack_vars() -> Vec<(&'static str, String)> {
    static MIGRATED: std::sync::Once = std::sync::Once::new();
    let vars: Vec<(&'static str, String)> = STORE_VARIABLES
        .iter()
        .chain(SECRET_VARIABLES.iter())
        .map(|name| {
            let value = std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run scripts/test, or source .stack/run/env")
            });
            (*name, value)
        })
        .collect();
    MIGRATED.call_once(|| {
        let output = gospelib(&["migrate"], &vars).output().unwrap();
        assert!(
            output.status.success(),
            "gospelib migrate on the stack failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
    vars
}

/// `gospelib <args>` on a free port with the stack's variables; returns the child, the base URL
/// and a runtime for the test's HTTP calls, once `/health` answers.
/// A served `gospelib`, killed when dropped (also when a test panics before stopping it).
pub struct Served {
    pub child: std::process::Child,
    /// The base URL of its internal listener (subgraphs, registry, metrics).
    pub internal: String,
    /// The file its log goes to (removed when it is dropped).
    pub log: std::path::PathBuf,
}

impl std::ops::Deref for Served {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.child
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.child
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn serve(args: &[&str]) -> (Served, String, tokio::runtime::Runtime) {
    serve_with(args, &[])
}

/// [`serve`] with some of the stack's variables replaced.
///
/// Both listeners are given port 0 and the process says which ports it bound (its
/// "gospelib serving" log line): no port is picked here and freed for the child to take, which
/// another test could take first.
pub fn serve_with(
    args: &[&str],
    overrides: &[(&'static str, String)],
) -> (Served, String, tokio::runtime::Runtime) {
    static SERVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut vars = stack_vars();
    vars.retain(|(name, _)| overrides.iter().all(|(replaced, _)| replaced != name));
    vars.extend(overrides.iter().cloned());
    vars.push(("GOSPELIB_ROUTER_LISTEN", "127.0.0.1:0".to_owned()));
    vars.push(("GOSPELIB_INTERNAL_LISTEN", "127.0.0.1:0".to_owned()));
    // Its log goes to a file, read for its addresses and shown if it never answers.
    let log_path = std::env::temp_dir().join(format!(
        "gospelib-test-serve-{}-{}.log",
        std::process::id(),
        SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Served {
        child: gospelib(args, &vars)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
        internal: String::new(),
        log: log_path.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = runtime.block_on(async {
        // Generous: every test of a suite starts its own process at once on two cores.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut base = None;
        loop {
            if base.is_none()
                && let Some((public, internal)) = bound_addresses(&log_path)
            {
                child.internal = format!("http://{internal}");
                base = Some(format!("http://{public}"));
            }
            if let Some(base) = &base
                && reqwest::get(format!("{base}/health")).await.is_ok()
            {
                return base.clone();
            }
            let exited = child.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "gospelib {args:?} did not answer on {} ({}); its last log lines:\n{}",
                    base.as_deref().unwrap_or("(no address logged yet)"),
                    exited.map_or("still running".to_owned(), |status| status.to_string()),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (child, base, runtime)
}

/// The public and internal addresses a served process logged that it bound, once it has.
fn bound_addresses(log: &std::path::Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "gospelib serving")
        .and_then(|line| {
            Some((
                line["public"].as_str()?.to_owned(),
                line["internal"].as_str()?.to_owned(),
            ))
        })
}

/// A fresh, migrated PostgreSQL database on the stack's server, dropped with the value.
pub struct TempDatabase {
    pub url: url::Url,
    admin_url: String,
    name: String,
}

impl TempDatabase {
    /// Creates an empty `gl_test_<label>_<pid>`.
    pub fn empty(label: &str) -> Self {
        let admin_url =
            std::env::var("GOSPELIB_PG_URL").expect("GOSPELIB_PG_URL (run scripts/test)");
        let name = format!("gl_test_{label}_{}", std::process::id());
        psql(&admin_url, &format!("DROP DATABASE IF EXISTS {name}"));
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Self {
            url,
            admin_url,
            name,
        }
    }

    /// `gospelib migrate` on the database; returns what it printed.
    pub fn migrate(&self) -> String {
        let output = gospelib(&["migrate"], &[("GOSPELIB_PG_URL", self.url.to_string())])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Creates `gl_test_<label>_<pid>` and applies the migrations.
    pub fn migrated(label: &str) -> Self {
        let database = Self::empty(label);
        database.migrate();
        database
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one SQL statement with `psql`, asserting it succeeds.
pub fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-X", "-q", url, "-c", sql])
        .env("PGOPTIONS", "--client-min-messages=warning")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "psql {sql}");
}

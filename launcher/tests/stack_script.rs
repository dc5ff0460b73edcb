//! `scripts/stack` on a stack of its own (its own folder and ports, the shared tool folder):
//! `up` is idempotent, `status` tells the truth, a server found running is reused and never
//! stopped, and `down` stops exactly what `up` started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The tests of this file run one at a time: each starts real servers on ports it picked, and
/// two picking at once could pick the same.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct IsolatedStack {
    dir: PathBuf,
    ports: [(&'static str, u16); 5],
}

impl IsolatedStack {
    /// A stack in `target/stack-test-<test>-<pid>`, on free ports.
    fn new(test: &str) -> Self {
        let dir = root()
            .join("target")
            .join(format!("stack-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Hold every listener until all five ports are chosen, so no two can be the same.
        let held: Vec<std::net::TcpListener> = (0..5)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| held[i].local_addr().unwrap().port();
        let ports = [
            ("GOSPELIB_PG_PORT", port(0)),
            ("GOSPELIB_REDIS_PORT", port(1)),
            ("GOSPELIB_FALKORDB_PORT", port(2)),
            ("GOSPELIB_TYPESENSE_PORT", port(3)),
            ("GOSPELIB_TYPESENSE_PEERING_PORT", port(4)),
        ];
        drop(held);
        Self { dir, ports }
    }

    fn port(&self, variable: &str) -> u16 {
        self.ports.iter().find(|(v, _)| *v == variable).unwrap().1
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(root().join("scripts/stack"));
        command
            .args(args)
            .env("GOSPELIB_STACK_DIR", &self.dir)
            .env_remove("GOSPELIB_TYPESENSE_API_KEY")
            .env_remove("GOSPELIB_STACK_STARTED_FILE")
            .stdin(Stdio::null());
        for (variable, port) in self.ports {
            command.env(variable, port.to_string());
        }
        command.output().unwrap()
    }

    /// Runs the script and insists it succeeded; returns stdout and stderr together.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "stack {args:?} failed:\n{text}");
        text
    }

    /// The status line of each server, by name.
    fn status_lines(&self) -> (bool, Vec<String>) {
        let output = self.run(&["status"]);
        let lines = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        (output.status.success(), lines)
    }
}

impl Drop for IsolatedStack {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How many processes listen on `port` (from /proc/net/tcp, no extra tools needed).
fn listeners_on(port: u16) -> usize {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            if fields[3] == "0A" && u16::from_str_radix(local_port, 16).unwrap() == port {
                count += 1;
            }
        }
    }
    count
}

/// A server the test started itself, killed when the test ends however it ends.
struct OwnServer(std::process::Child);

impl OwnServer {
    /// A plain Redis on `port`, once it listens.
    fn redis(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while listeners_on(port) == 0 {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pid_in(dir: &Path, name: &str) -> u32 {
    std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn wait_until_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if zombie {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} is still alive");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_is_idempotent_status_tells_the_truth_and_down_stops_what_up_started() {
    let _serial = one_at_a_time();
    let stack = IsolatedStack::new("idempotent");
    let servers = [
        ("postgres", "GOSPELIB_PG_PORT"),
        ("redis", "GOSPELIB_REDIS_PORT"),
        ("falkordb", "GOSPELIB_FALKORDB_PORT"),
        ("typesense", "GOSPELIB_TYPESENSE_PORT"),
    ];

    stack.ok(&["up"]);
    let second = stack.ok(&["up"]);
    for (name, _) in servers {
        assert!(
            second.contains(&format!("{name} already running")),
            "{second}"
        );
    }
    for (name, variable) in servers {
        assert_eq!(listeners_on(stack.port(variable)), 1, "{name} listens once");
    }
    let started = std::fs::read_to_string(stack.dir.join("started.last")).unwrap();
    assert_eq!(started, "", "the second up started nothing");

    let (all_up, lines) = stack.status_lines();
    assert!(all_up, "{lines:?}");
    for (line, (name, variable)) in lines.iter().zip(servers) {
        assert!(line.starts_with(name), "{line}");
        assert!(line.contains("running"), "{line}");
        assert!(
            line.contains(&format!("127.0.0.1:{}", stack.port(variable))),
            "{line}"
        );
        assert!(line.contains("started by stack up"), "{line}");
    }

    // Kill Redis behind the script's back: status must say so and fail.
    let redis_pid = pid_in(&stack.dir, "redis");
    Command::new("kill")
        .args(["-9", &redis_pid.to_string()])
        .status()
        .unwrap();
    wait_until_gone(redis_pid);
    let (all_up, lines) = stack.status_lines();
    assert!(!all_up);
    assert!(
        lines[1].starts_with("redis") && lines[1].contains("stopped"),
        "{lines:?}"
    );
    assert!(lines[1].contains("stale pid file"), "{lines:?}");
    assert!(lines[2].contains("running"), "{lines:?}");

    // up brings back just the missing one.
    stack.ok(&["up"]);
    let started = std::fs::read_to_string(stack.dir.join("started.last")).unwrap();
    assert_eq!(started, "redis\n");

    stack.ok(&["down"]);
    for (name, variable) in servers {
        assert_eq!(listeners_on(stack.port(variable)), 0, "{name} stopped");
    }
    let (all_up, lines) = stack.status_lines();
    assert!(!all_up);
    assert!(lines.iter().all(|l| l.contains("stopped")), "{lines:?}");
}

#[test]
fn a_server_found_running_is_reused_and_left_running() {
    let _serial = one_at_a_time();
    let stack = IsolatedStack::new("reuse");
    let port = stack.port("GOSPELIB_REDIS_PORT");
    let _external = OwnServer::redis(port);

    let text = stack.ok(&["up", "redis"]);
    assert!(
        text.contains("redis: reusing the server already listening"),
        "{text}"
    );
    let (up, lines) = stack.status_lines();
    assert!(!up, "the others are not running");
    assert!(
        lines[1].contains("running") && lines[1].contains("external"),
        "{lines:?}"
    );

    let text = stack.ok(&["down", "redis"]);
    assert!(text.contains("left running"), "{text}");
    assert_eq!(listeners_on(port), 1, "the external Redis still runs");
}

#[test]
fn a_port_held_by_the_wrong_kind_of_server_is_refused() {
    let _serial = one_at_a_time();
    let stack = IsolatedStack::new("wrong-kind");
    // A plain Redis where FalkorDB should be: it answers PING but has no graph module.
    let port = stack.port("GOSPELIB_FALKORDB_PORT");
    let _impostor = OwnServer::redis(port);
    let output = stack.run(&["up", "falkordb"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "port {port} is taken by something that is not a usable falkordb server"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("GOSPELIB_FALKORDB_PORT"), "{stderr}");
}

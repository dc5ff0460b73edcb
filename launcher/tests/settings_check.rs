//! `gospelib settings check` as `scripts/deploy check` runs it: an environment file and a
//! container's command line in, a report and an exit status out (0 clean, 2 on any problem).
//! Nothing is connected to, so no stack is needed.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// What a Phase 2 `gospelib serve --only content` pod gets.
fn content_pod() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GOSPELIB_LOG", "info"),
        ("GOSPELIB_ROUTER_LISTEN", "0.0.0.0:4000"),
        ("GOSPELIB_INTERNAL_LISTEN", "0.0.0.0:4001"),
        (
            "GOSPELIB_PG_URL",
            "postgres://gospelib:pw@postgres:5432/gospelib",
        ),
        ("GOSPELIB_REDIS_URL", "redis://redis:6379"),
        ("GOSPELIB_FALKORDB_URL", "falkor://falkordb-read:6379"),
        ("GOSPELIB_TYPESENSE_URL", "http://typesense:8108"),
        ("GOSPELIB_TYPESENSE_API_KEY", "3f6a1c9e0b7d4e2a"),
        ("GOSPELIB_INTERNAL_SECRET", SECRET),
    ]
}

/// Writes `pairs` as an environment file of its own.
fn env_file(pairs: &[(&str, &str)]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "gospelib-settings-check-{}-{}.env",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let text: String = pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    std::fs::write(&path, format!("# a container's settings\n{text}")).unwrap();
    path
}

/// Runs `gospelib settings check --env-file F ARGS…` with no GOSPELIB_* of this process.
fn check(pairs: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let file = env_file(pairs);
    let output: Output = Command::new(env!("CARGO_BIN_EXE_gospelib"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["settings", "check", "--env-file"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let text =
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap();
    (output.status.code(), text)
}

#[test]
fn a_good_environment_passes() {
    let (status, report) = check(&content_pod(), &["--only", "content"]);
    assert_eq!(status, Some(0), "{report}");
    assert!(
        report.contains("`gospelib serve --only content`"),
        "{report}"
    );
    assert!(
        report.contains("9 settings set, every one read and accepted"),
        "{report}"
    );
}

#[test]
fn an_unknown_name_is_reported() {
    let mut pairs = content_pod();
    pairs.push(("GOSPELIB_FALKORDB_TIMEOUT", "750"));
    let (status, report) = check(&pairs, &["--only", "content"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains(
            "GOSPELIB_FALKORDB_TIMEOUT is set, but `gospelib serve --only content` reads no such setting"
        ),
        "{report}"
    );
}

#[test]
fn a_bad_value_is_reported_without_echoing_a_secret() {
    let mut pairs = content_pod();
    pairs.retain(|(name, _)| *name != "GOSPELIB_PG_URL");
    pairs.push(("GOSPELIB_PG_URL", "mysql://root:hunter2@db/x"));
    pairs.push(("GOSPELIB_ROUTER_MAX_COST", "lots"));
    let (status, report) = check(&pairs, &["--only", "content"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("2 problems"), "{report}");
    assert!(
        report.contains("GOSPELIB_PG_URL has a bad value (scheme \"mysql\""),
        "{report}"
    );
    assert!(
        report.contains("GOSPELIB_ROUTER_MAX_COST has a bad value \"lots\""),
        "{report}"
    );
    assert!(!report.contains("hunter2"), "a secret leaked: {report}");
}

#[test]
fn a_part_reads_its_own_settings_and_requires_them() {
    let (status, report) = check(&content_pod(), &["--only", "billing"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("GOSPELIB_STRIPE_WEBHOOK_SECRET is not set"),
        "{report}"
    );
    let mut pairs = content_pod();
    pairs.push(("GOSPELIB_AI_CONTENT_URL", "http://content:4001/graphql"));
    let (status, report) = check(&pairs, &["--only", "ai"]);
    assert_eq!(status, Some(0), "{report}");
    let (status, report) = check(&pairs, &["--only", "content"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("GOSPELIB_AI_CONTENT_URL is set"),
        "{report}"
    );
}

#[test]
fn a_container_command_line_is_checked_with_its_own_readers() {
    let reminders = [
        (
            "GOSPELIB_PG_URL",
            "postgres://gospelib:pw@postgres:5432/gospelib",
        ),
        ("GOSPELIB_REDIS_URL", "redis://redis:6379"),
        ("GOSPELIB_REMINDER_HOUR", "8"),
    ];
    let (status, report) = check(&reminders, &["--", "jobs", "reminders"]);
    assert_eq!(status, Some(0), "{report}");
    let (status, report) = check(&reminders, &["--", "migrate"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("GOSPELIB_REMINDER_HOUR is set"), "{report}");
    assert!(report.contains("GOSPELIB_REDIS_URL is set"), "{report}");
    let (status, report) = check(&reminders, &["--", "serve", "--only", "nonesuch"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("unknown part \"nonesuch\""), "{report}");
    let (status, report) = check(&reminders, &["--", "frobnicate"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("the command line is refused"), "{report}");
}

#[test]
fn a_line_that_is_not_a_setting_is_refused() {
    let (status, report) = check(&[("PATH", "/bin")], &[]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("line 2: `PATH` is not a GOSPELIB_* setting"),
        "{report}"
    );
}

/// What `gospelib caller-keys NAMES` with `SECRET` as the internal secret gives.
fn caller_keys_output(names: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gospelib"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GOSPELIB_INTERNAL_SECRET", SECRET)
        .args(["caller-keys", names])
        .output()
        .unwrap()
}

/// `gospelib caller-keys NAMES` with `SECRET` as the internal secret: its one line.
fn caller_keys(names: &str) -> String {
    let output = caller_keys_output(names);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn caller_keys_names_an_unknown_subgraph_as_such() {
    let output = caller_keys_output("content,nonesuch");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no key printed: {output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unknown subgraph \"nonesuch\" for caller-keys")
            && stderr.contains("content, accounts")
            && !stderr.contains("--only")
            && !stderr.contains("registry"),
        "{stderr}"
    );
    // `registry` is an `--only` name, not a subgraph: it has no key.
    let output = caller_keys_output("registry");
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unknown subgraph \"registry\" for caller-keys"),
        "{stderr}"
    );
}

#[test]
fn previous_caller_keys_are_checked_like_the_current_ones() {
    let mut pairs: Vec<(&str, &str)> = content_pod();
    pairs.retain(|(name, _)| *name != "GOSPELIB_INTERNAL_SECRET");
    let content = caller_keys("content");
    pairs.push(("GOSPELIB_CALLER_KEYS", &content));
    let mut rotating = pairs.clone();
    rotating.push(("GOSPELIB_CALLER_KEYS_PREVIOUS", &content));
    let (status, report) = check(&rotating, &["--only", "content"]);
    assert_eq!(status, Some(0), "{report}");
    // Previous keys that miss the part's: a misnamed entry, caught before the rotation.
    let mut misnamed = pairs.clone();
    let study = caller_keys("study");
    misnamed.push(("GOSPELIB_CALLER_KEYS_PREVIOUS", &study));
    let (status, report) = check(&misnamed, &["--only", "content"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("it holds no key for content, which this process serves"),
        "{report}"
    );
    let cut = &content[..content.len() - 1];
    pairs.push(("GOSPELIB_CALLER_KEYS_PREVIOUS", cut));
    let (status, report) = check(&pairs, &["--only", "content"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("GOSPELIB_CALLER_KEYS_PREVIOUS"), "{report}");
    assert!(!report.contains(&cut[8..]), "a key was shown: {report}");
}

#[test]
fn a_part_alone_may_hold_its_caller_keys_instead_of_the_secret() {
    fn with_keys(keys: &str) -> Vec<(&str, &str)> {
        let mut pairs = content_pod();
        pairs.retain(|(name, _)| *name != "GOSPELIB_INTERNAL_SECRET");
        pairs.push(("GOSPELIB_CALLER_KEYS", keys));
        pairs
    }
    let content = caller_keys("content");
    assert!(
        content.starts_with("content=") && content.len() == 8 + 64,
        "{content}"
    );
    let (status, report) = check(&with_keys(&content), &["--only", "content"]);
    assert_eq!(status, Some(0), "{report}");

    // Another part's key is not this part's.
    let (status, report) = check(&with_keys(&content), &["--only", "study"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("it holds no key for study, which this process needs"),
        "{report}"
    );
    // The assistant asking content over HTTP signs with content's key: it needs both.
    let ai_alone = caller_keys("ai");
    let mut ai_pod = with_keys(&ai_alone);
    ai_pod.push(("GOSPELIB_AI_CONTENT_URL", "http://content:4001/graphql"));
    let (status, report) = check(&ai_pod, &["--only", "ai"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("no key for content"), "{report}");
    let ai_and_content = caller_keys("ai,content");
    let mut ai_pod = with_keys(&ai_and_content);
    ai_pod.push(("GOSPELIB_AI_CONTENT_URL", "http://content:4001/graphql"));
    let (status, report) = check(&ai_pod, &["--only", "ai"]);
    assert_eq!(status, Some(0), "{report}");

    // The whole platform runs the router, which needs the secret itself.
    let (status, report) = check(&with_keys(&content), &[]);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("the whole platform runs the router"),
        "{report}"
    );
    // Both at once: refused, and neither value shown.
    let mut both = content_pod();
    both.push(("GOSPELIB_CALLER_KEYS", &content));
    let (status, report) = check(&both, &["--only", "content"]);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("set only one of them"), "{report}");
    assert!(!report.contains(&content[8..]), "a key leaked: {report}");
    assert!(!report.contains(SECRET), "the secret leaked: {report}");
}

#[test]
fn the_registrys_usage_threshold_is_checked() {
    let pg = ("GOSPELIB_PG_URL", "postgres://gospelib@db:5432/gospelib");
    let (status, report) = check(
        &[pg, ("GOSPELIB_REGISTRY_USAGE_MIN_CALLERS", "0")],
        &["--", "schema", "publish"],
    );
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("GOSPELIB_REGISTRY_USAGE_MIN_CALLERS has a bad value \"0\""),
        "{report}"
    );
    let (status, report) = check(
        &[pg, ("GOSPELIB_REGISTRY_USAGE_MIN_CALLERS", "5")],
        &["--", "schema", "publish"],
    );
    assert_eq!(status, Some(0), "{report}");
}

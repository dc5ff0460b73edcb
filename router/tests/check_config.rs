//! `gospelib-router --check-config`: the router's settings checked as a start would read them,
//! connecting to nothing (what `scripts/deploy check` asks of each router container).

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_gospelib-router");

/// What a Phase 2 router pod gets.
fn router_pod() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GOSPELIB_LOG", "info"),
        ("GOSPELIB_ROUTER_LISTEN", "0.0.0.0:4000"),
        ("GOSPELIB_REDIS_URL", "redis://redis:6379"),
        (
            "GOSPELIB_PG_URL",
            "postgres://gospelib:pw@postgres:5432/gospelib",
        ),
        (
            "GOSPELIB_INTERNAL_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
        (
            "GOSPELIB_ROUTER_SUPERGRAPH_URL",
            "http://registry:4001/registry/supergraph",
        ),
        (
            "GOSPELIB_ROUTER_PARTNER_SUPERGRAPH_URL",
            "http://registry:4001/registry/contracts/partner/supergraph",
        ),
        (
            "GOSPELIB_ROUTER_SUBGRAPH_URLS",
            "content=http://content:4001/subgraphs/content/graphql",
        ),
    ]
}

/// Runs `gospelib-router --check-config` with exactly `pairs` as its GOSPELIB_* environment.
fn check(pairs: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(pairs.iter().copied())
        .arg("--check-config")
        .output()
        .unwrap();
    let text =
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap();
    (output.status.code(), text)
}

#[test]
fn a_good_router_environment_passes() {
    let (status, report) = check(&router_pod());
    assert_eq!(status, Some(0), "{report}");
    assert!(
        report.contains("every setting read and accepted"),
        "{report}"
    );
}

#[test]
fn a_setting_the_router_does_not_read_is_reported() {
    let mut pairs = router_pod();
    pairs.push(("GOSPELIB_INTERNAL_LISTEN", "0.0.0.0:4001"));
    let (status, report) = check(&pairs);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report
            .contains("GOSPELIB_INTERNAL_LISTEN is set, but gospelib-router reads no such setting"),
        "{report}"
    );
}

#[test]
fn bad_values_are_reported() {
    let mut pairs = router_pod();
    pairs.retain(|(name, _)| {
        !name.ends_with("SUPERGRAPH_URL") && !name.ends_with("_COST") && *name != "GOSPELIB_LOG"
    });
    pairs.push(("GOSPELIB_ROUTER_SUPERGRAPH_URL", "registry:4001"));
    pairs.push(("GOSPELIB_ROUTER_MAX_COST", "lots"));
    pairs.push(("GOSPELIB_LOG", "info,gospelib=loud"));
    let (status, report) = check(&pairs);
    assert_eq!(status, Some(2), "{report}");
    assert!(report.contains("GOSPELIB_LOG has a bad value"), "{report}");
    assert!(
        report.contains("GOSPELIB_ROUTER_MAX_COST has a bad value \"lots\""),
        "{report}"
    );
    assert!(
        report.contains("GOSPELIB_ROUTER_SUPERGRAPH_URL (or its flag) has a bad value"),
        "{report}"
    );
}

#[test]
fn a_partner_contract_without_the_key_store_is_refused() {
    let mut pairs = router_pod();
    pairs.retain(|(name, _)| *name != "GOSPELIB_PG_URL");
    let (status, report) = check(&pairs);
    assert_eq!(status, Some(2), "{report}");
    assert!(
        report.contains("a partner supergraph is given but GOSPELIB_PG_URL is not"),
        "{report}"
    );
}

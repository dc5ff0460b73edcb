//! `gospelib serve` applies the router's settings exactly as `gospelib-router` does (both read
//! one typed value): each limit and switch, set through the environment of a served process,
//! changes what its `/graphql` answers. And `GOSPELIB_SUPERGRAPH_SOURCE=registry` serves the
//! registry's latest published version instead of composing the code's parts.

mod support;

use serde_json::{Value, json};
use support::{TempDatabase, gospelib, serve_with};

/// Asks `query` of the process serving at `base`; the response body.
fn ask_served(runtime: &tokio::runtime::Runtime, base: &str, query: &str) -> Value {
    runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// Serves with `settings`, asks `query`, and returns the response body.
fn ask_with(settings: &[(&'static str, &str)], query: &str) -> Value {
    let overrides: Vec<(&'static str, String)> = settings
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    let (mut child, base, runtime) = serve_with(&["serve"], &overrides);
    let body = ask_served(&runtime, &base, query);
    child.kill().unwrap();
    child.wait().unwrap();
    body
}

/// The one refusal a request got, as (code, message).
fn refusal(body: &Value) -> (String, String) {
    assert!(body.get("data").is_none(), "a refusal has no data: {body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    (
        errors[0]["extensions"]["code"].as_str().unwrap().to_owned(),
        errors[0]["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn introspection_can_be_switched_off() {
    let body = ask_with(
        &[("GOSPELIB_ROUTER_INTROSPECTION", "false")],
        "{ __schema { queryType { name } } }",
    );
    assert_eq!(
        refusal(&body),
        (
            "FORBIDDEN".to_owned(),
            "introspection is disabled on this router".to_owned()
        )
    );
}

#[test]
fn max_depth_applies() {
    let body = ask_with(
        &[("GOSPELIB_ROUTER_MAX_DEPTH", "2")],
        r#"{ passage(id: "gen.1.1") { next { id } } }"#,
    );
    assert_eq!(
        refusal(&body).1,
        "the operation has 3 levels of depth, more than the limit of 2"
    );
}

#[test]
fn max_aliases_applies() {
    let body = ask_with(
        &[("GOSPELIB_ROUTER_MAX_ALIASES", "0")],
        r#"{ first: passage(id: "gen.1.1") { id } }"#,
    );
    assert_eq!(
        refusal(&body).1,
        "the operation has 1 aliases, more than the limit of 0"
    );
}

#[test]
fn max_root_fields_applies() {
    let body = ask_with(
        &[("GOSPELIB_ROUTER_MAX_ROOT_FIELDS", "1")],
        r#"{ passage(id: "gen.1.1") { id } book(id: "gen") { id } }"#,
    );
    assert_eq!(
        refusal(&body).1,
        "the operation has 2 root fields, more than the limit of 1"
    );
}

#[test]
fn max_tokens_applies() {
    let body = ask_with(
        &[("GOSPELIB_ROUTER_MAX_TOKENS", "10")],
        r#"{ passage(id: "gen.1.1") { id text reference } }"#,
    );
    assert_eq!(
        refusal(&body).1,
        "the operation has more than the limit of 10 tokens"
    );
}

#[test]
fn max_cost_applies() {
    // 1 (books) + 81 books × (1 id + 1 chapters + 18 chapters × 1 id) = 1,621
    // (config/cost.toml's sizes).
    let body = ask_with(
        &[("GOSPELIB_ROUTER_MAX_COST", "1000")],
        "{ books { id chapters { id } } }",
    );
    assert_eq!(
        refusal(&body),
        (
            "VALIDATION_ERROR".to_owned(),
            "the operation has an estimated 1621 cost, more than the limit of 1000".to_owned()
        )
    );
}

#[test]
fn the_registry_can_be_the_supergraph_source() {
    let database = TempDatabase::migrated("source_registry");
    let url = database.url.to_string();
    // Nothing published yet: serve refuses to start, saying what to do.
    let mut vars = support::stack_vars();
    vars.retain(|(name, _)| *name != "GOSPELIB_PG_URL");
    vars.extend([
        ("GOSPELIB_PG_URL", url.clone()),
        ("GOSPELIB_SUPERGRAPH_SOURCE", "registry".to_owned()),
        ("GOSPELIB_ROUTER_LISTEN", "127.0.0.1:0".to_owned()),
        ("GOSPELIB_INTERNAL_LISTEN", "127.0.0.1:0".to_owned()),
    ]);
    let output = gospelib(&["serve"], &vars).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no published version yet: run `gospelib schema publish`"),
        "{stderr}"
    );

    let published = gospelib(
        &["schema", "publish", "--message", "first"],
        &[("GOSPELIB_PG_URL", url.clone())],
    )
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    .output()
    .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let body = ask_with(
        &[
            ("GOSPELIB_PG_URL", url.as_str()),
            ("GOSPELIB_SUPERGRAPH_SOURCE", "registry"),
        ],
        "{ books { id } }",
    );
    let version = body["extensions"]["supergraphVersion"].as_str().unwrap();
    assert!(
        version.starts_with("1-"),
        "the registry's version 1: {body}"
    );
    // Answered by the content subgraph in process (whatever the graph holds now).
    assert!(body["data"]["books"].is_array(), "{body}");
    assert!(body.get("errors").is_none(), "{body}");

    // Polling hourly, the served router still moves to a new version within moments: the
    // publish is announced on Redis, which `serve` follows.
    let (mut child, base, runtime) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_PG_URL", url.clone()),
            ("GOSPELIB_SUPERGRAPH_SOURCE", "registry".to_owned()),
            ("GOSPELIB_ROUTER_POLL_MS", "3600000".to_owned()),
        ],
    );
    let served_version = || {
        ask_served(&runtime, &base, "{ __typename }")["extensions"]["supergraphVersion"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(served_version().starts_with("1-"));
    // Version 2: the same supergraph with another manifest of the apps' operations (none).
    let no_operations =
        std::env::temp_dir().join(format!("gospelib-no-operations-{}", std::process::id()));
    std::fs::create_dir_all(&no_operations).unwrap();
    let redis = support::stack_vars()
        .into_iter()
        .find(|(name, _)| *name == "GOSPELIB_REDIS_URL")
        .unwrap()
        .1;
    let published = gospelib(
        &[
            "schema",
            "publish",
            "--message",
            "second",
            "--operations",
            no_operations.to_str().unwrap(),
        ],
        &[
            ("GOSPELIB_PG_URL", url.clone()),
            ("GOSPELIB_REDIS_URL", redis),
        ],
    )
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&published.stdout);
    assert!(published.status.success(), "{stdout}");
    assert!(stdout.contains("published version 2"), "{stdout}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let version = served_version();
        if version.starts_with("2-") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still on {version} 10 s after the publish was announced"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A FalkorDB that accepts connections and never answers (held open for the test's life), so
/// the content subgraph's fetches stay in flight until a deadline ends them.
fn silent_falkordb() -> String {
    format!("falkor://{}", gospelib_kit::test_stack::silent_server())
}

/// The router's own deadline error, as opposed to the subgraph's FalkorDB error.
fn router_cut_the_fetch(body: &Value) -> bool {
    body["errors"][0]["message"] == "subgraph \"content\" is unavailable"
        && body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
}

#[test]
fn the_subgraph_timeout_applies_to_the_in_process_transport() {
    let falkordb = silent_falkordb();
    let body = ask_with(
        &[
            ("GOSPELIB_FALKORDB_URL", falkordb.as_str()),
            ("GOSPELIB_FALKORDB_TIMEOUT_MS", "60000"),
            ("GOSPELIB_ROUTER_SUBGRAPH_TIMEOUT_MS", "300"),
        ],
        r#"{ passage(id: "gen.1.1") { id } }"#,
    );
    assert!(router_cut_the_fetch(&body), "{body}");
}

#[test]
fn the_request_timeout_applies_to_the_in_process_transport() {
    let falkordb = silent_falkordb();
    let body = ask_with(
        &[
            ("GOSPELIB_FALKORDB_URL", falkordb.as_str()),
            ("GOSPELIB_FALKORDB_TIMEOUT_MS", "60000"),
            ("GOSPELIB_ROUTER_REQUEST_TIMEOUT_MS", "300"),
        ],
        r#"{ passage(id: "gen.1.1") { id } }"#,
    );
    assert!(router_cut_the_fetch(&body), "{body}");
}

/// Five identical requests at once, each fetch held in flight by a silent FalkorDB until the
/// subgraph timeout. Inbound sharing on (the default): four join the first operation and no
/// fetch is even repeated; inbound off, subgraph sharing on: five operations run and four join
/// the first fetch; both off: nothing is shared.
#[test]
fn both_sharing_layers_can_be_switched_off() {
    for (inbound, dedupe, shared_operations, shared_fetches) in [
        ("true", "true", 4, 0),
        ("false", "true", 0, 4),
        ("false", "false", 0, 0),
    ] {
        let falkordb = silent_falkordb();
        let (mut child, base, runtime) = serve_with(
            &["serve"],
            &[
                ("GOSPELIB_FALKORDB_URL", falkordb),
                ("GOSPELIB_FALKORDB_TIMEOUT_MS", "60000".to_owned()),
                ("GOSPELIB_ROUTER_SUBGRAPH_TIMEOUT_MS", "1000".to_owned()),
                ("GOSPELIB_ROUTER_INBOUND_DEDUPE", inbound.to_owned()),
                ("GOSPELIB_ROUTER_DEDUPE", dedupe.to_owned()),
            ],
        );
        let internal = child.internal.clone();
        let metrics = runtime.block_on(async {
            let client = reqwest::Client::new();
            let ask = || {
                client
                    .post(format!("{base}/graphql"))
                    .json(&json!({ "query": r#"{ passage(id: "gen.1.1") { id } }"# }))
                    .send()
            };
            let answers = tokio::join!(ask(), ask(), ask(), ask(), ask());
            for answer in [answers.0, answers.1, answers.2, answers.3, answers.4] {
                assert_eq!(answer.unwrap().status(), 200);
            }
            reqwest::get(format!("{internal}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let count = |prefix: &str| {
            metrics
                .lines()
                .find(|line| line.starts_with(prefix))
                .and_then(|line| line.rsplit(' ').next())
                .map_or(0, |n| n.parse::<u64>().unwrap())
        };
        let settings = format!("INBOUND_DEDUPE={inbound} DEDUPE={dedupe}");
        assert_eq!(
            count("gospelib_operations_shared_total"),
            shared_operations,
            "{settings}"
        );
        assert_eq!(
            count("gospelib_subgraph_fetches_shared_total{subgraph=\"content\""),
            shared_fetches,
            "{settings}"
        );
    }
}

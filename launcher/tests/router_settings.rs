//! `gospelib serve` applies the router's settings exactly as `gospelib-router` does (both read
//! one typed value): each limit and switch, set through the environment of a served process,
//! changes what its `/graphql` answers. And `GOSPELIB_SUPERGRAPH_SOURCE=registry` serves the
//! registry's latest published version instead of composing the code's parts.

mod support;

use serde_json::{Value, json};
use support::{TempDatabase, gospelib, serve_with};

/// Serves with `settings`, asks `query`, and returns the response body.
fn ask_with(settings: &[(&'static str, &str)], query: &str) -> Value {
    let overrides: Vec<(&'static str, String)> = settings
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    let (mut child, base, runtime) = serve_with(&["serve"], &overrides);
    let body = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
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
    // 1 (books) + 10 × (1 id + 1 chapters + 10 × 1 id) = 121.
    let body = ask_with(
        &[("GOSPELIB_ROUTER_MAX_COST", "100")],
        "{ books { id chapters { id } } }",
    );
    assert_eq!(
        refusal(&body),
        (
            "VALIDATION_ERROR".to_owned(),
            "the operation has an estimated 121 cost, more than the limit of 100".to_owned()
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
        ("GOSPELIB_ROUTER_PORT", support::free_port().to_string()),
        (
            "GOSPELIB_INTERNAL_LISTEN",
            format!("127.0.0.1:{}", support::free_port()),
        ),
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
}

//! The registry on real PostgreSQL: `gospelib schema publish/history/diff/check/rollback` as an
//! operator runs them, the `/registry/...` endpoints of `gospelib serve`, and a running router
//! that picks up a newly published version without a restart.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_kit::stores::postgres_pool;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::reload::{fetch_published, poll_registry};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::InProcess;
use gospelib_schema::compose::api_schema;
use gospelib_schema::store::{NewVersion, Store};
use support::{TempDatabase, gospelib, serve_with};

/// The explorer's root field in the committed supergraph, with its description.
const CONNECTIONS_FIELD: &str = "  \"\"\"The neighbourhood of a node for the graph explorer (`depth` 1 or 2).\"\"\"\n  connections(nodeId: ID!, depth: Int = 1, first: Int = 50): GraphNeighborhood\n";

/// The committed supergraph, as the code composes it.
fn code_supergraph() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/supergraph.graphql"
    ))
    .unwrap()
}

/// Publishes `supergraph` straight into the store (standing in for another branch's code).
async fn publish_directly(database: &TempDatabase, supergraph: String, message: &str) -> i32 {
    let store = Store::new(postgres_pool(&database.url, 1).unwrap());
    let version = store
        .publish(NewVersion {
            subgraphs: Vec::new(),
            api_schema: api_schema(&supergraph).unwrap(),
            supergraph,
            contracts: Default::default(),
            message: message.to_owned(),
            forced_reason: None,
            check_report: None,
            rollback_of: None,
        })
        .await
        .unwrap();
    version.number
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn schema_command(database: &TempDatabase, args: &[&str]) -> Outcome {
    schema_command_with(database, args, &[])
}

fn schema_command_with(database: &TempDatabase, args: &[&str], more: &[(&str, String)]) -> Outcome {
    let mut all = vec!["schema"];
    all.extend_from_slice(args);
    let mut vars = vec![("GOSPELIB_PG_URL", database.url.to_string())];
    vars.extend(more.iter().cloned());
    let output = gospelib(&all, &vars)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    Outcome {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn publish_history_diff_check_and_rollback_round_trip() {
    let database = TempDatabase::migrated("registry_cli");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let first = schema_command(&database, &["publish", "--message", "first"]);
    assert!(first.ok, "{}{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("published version 1"),
        "{}",
        first.stdout
    );
    let again = schema_command(&database, &["publish", "--message", "again"]);
    assert!(again.ok);
    assert!(
        again.stderr.contains("unchanged: version 1"),
        "{}",
        again.stderr
    );

    // Another branch published a supergraph with one more root field, nobody uses it.
    let with_extra = code_supergraph().replace(
        CONNECTIONS_FIELD,
        &format!("{CONNECTIONS_FIELD}  extra: String @join__field(graph: CONTENT)\n"),
    );
    assert_ne!(with_extra, code_supergraph());
    let second = runtime.block_on(publish_directly(&database, with_extra, "with extra"));
    assert_eq!(second, 2);

    let diff = schema_command(&database, &["diff", "1", "2"]);
    assert!(diff.ok, "{}", diff.stderr);
    assert!(
        diff.stdout.contains("Safe") && diff.stdout.contains("[Query.extra]"),
        "{}",
        diff.stdout
    );

    // The code drops `extra`: breaking, but no known operation uses it.
    let check = schema_command(&database, &["check", "--against", "latest"]);
    assert!(check.ok, "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("no known operation uses it"),
        "{}",
        check.stdout
    );

    // A client operation that uses it turns the same change into a failure.
    let operations = std::env::temp_dir().join(format!("gl-ops-{}", std::process::id()));
    std::fs::create_dir_all(operations.join("partner")).unwrap();
    std::fs::write(
        operations.join("partner/Extra.graphql"),
        "query Extra { extra }",
    )
    .unwrap();
    let operations_arg = operations.display().to_string();
    let failing = schema_command(
        &database,
        &["check", "--against", "2", "--operations", &operations_arg],
    );
    assert!(!failing.ok);
    assert!(
        failing
            .stdout
            .contains("breaks Extra (partner/Extra.graphql)"),
        "{}",
        failing.stdout
    );
    let json = schema_command(
        &database,
        &[
            "check",
            "--against",
            "2",
            "--operations",
            &operations_arg,
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["changes"][0]["criticality"], "breaking");
    assert_eq!(report["changes"][0]["coordinate"], "Query.extra");

    // An operation only the routers saw (recorded in Redis) protects it too.
    let redis_url = std::env::var("GOSPELIB_REDIS_URL").expect("GOSPELIB_REDIS_URL");
    let hash = format!("test{:060}", std::process::id());
    let recorded = gospelib_kit::usage::RecordedOperation {
        hash: hash.clone(),
        name: "RecordedExtra".to_owned(),
        coordinates: ["Query".to_owned(), "Query.extra".to_owned()].into(),
        count: 7,
    };
    let redis = redis::Client::open(redis_url.as_str()).unwrap();
    runtime.block_on(async {
        let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
        gospelib_kit::usage::record(&mut connection, &recorded)
            .await
            .unwrap();
    });
    let seen = schema_command_with(
        &database,
        &["check", "--against", "2"],
        &[("GOSPELIB_REDIS_URL", redis_url.clone())],
    );
    runtime.block_on(async {
        let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
        gospelib_kit::usage::forget(&mut connection, &hash)
            .await
            .unwrap();
    });
    assert!(!seen.ok);
    assert!(
        seen.stdout
            .contains("breaks RecordedExtra (router:test00000000, seen 7 times)"),
        "{}",
        seen.stdout
    );

    // Publishing that is refused, unless forced with a reason.
    let refused = schema_command(&database, &["publish", "--operations", &operations_arg]);
    assert!(!refused.ok);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    let forced = schema_command(
        &database,
        &[
            "publish",
            "--operations",
            &operations_arg,
            "--force",
            "--reason",
            "the partner agreed to drop extra",
        ],
    );
    assert!(forced.ok, "{}", forced.stderr);
    assert!(
        forced.stdout.contains("published version 3"),
        "{}",
        forced.stdout
    );
    std::fs::remove_dir_all(&operations).unwrap();

    let rollback = schema_command(&database, &["rollback", "--to", "2"]);
    assert!(rollback.ok, "{}", rollback.stderr);
    assert!(
        rollback.stdout.contains("published version 4"),
        "{}",
        rollback.stdout
    );

    let history = schema_command(&database, &["history"]);
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", history.stdout);
    assert!(lines[0].trim_start().starts_with("4 ") && lines[0].contains("(rollback to 2)"));
    assert!(lines[1].contains("forced: the partner agreed to drop extra"));
    assert!(lines[3].trim_start().starts_with("1 ") && lines[3].contains("first"));

    runtime.block_on(async {
        let store = Store::new(postgres_pool(&database.url, 1).unwrap());
        let second = store.require(2).await.unwrap();
        let fourth = store.require(4).await.unwrap();
        assert_eq!(fourth.supergraph, second.supergraph);
        assert_eq!(fourth.rollback_of, Some(2));
        // Versions published by the CLI carry their subgraphs and the partner contract.
        let first = store.require(1).await.unwrap();
        assert_eq!(first.subgraphs[0].name, "content");
        assert!(first.contracts["partner"].contains("@inaccessible"));
    });
}

#[test]
fn the_registry_serves_versions_and_a_polling_router_follows_them() {
    let database = TempDatabase::migrated("registry_http");
    let (mut child, base, runtime) =
        serve_with(&["serve"], &[("GOSPELIB_PG_URL", database.url.to_string())]);
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{base}/registry/supergraph");
        let nothing = client.get(&url).send().await.unwrap();
        assert_eq!(nothing.status(), 404);

        let published = schema_command(&database, &["publish", "--message", "v1"]);
        assert!(published.ok, "{}", published.stderr);
        let latest = client.get(&url).send().await.unwrap();
        assert_eq!(latest.status(), 200);
        let etag = latest.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with("\"v1-"), "{etag}");
        assert_eq!(latest.headers()["x-registry-version"], "1");
        assert_eq!(latest.text().await.unwrap(), code_supergraph());
        let unchanged = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(unchanged.status(), 304);
        assert_eq!(
            client
                .get(format!("{url}/1"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            client
                .get(format!("{url}/9"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            client
                .get(format!("{url}/x"))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        let contract = client
            .get(format!("{base}/registry/contracts/partner/supergraph"))
            .send()
            .await
            .unwrap();
        assert_eq!(contract.status(), 200);
        let contract_sdl = contract.text().await.unwrap();
        let contract_api = api_schema(&contract_sdl).unwrap();
        assert!(contract_api.contains("passage(id: ID!)"));
        assert!(!contract_api.contains("lexiconEntry("));
        let unknown = client
            .get(format!("{base}/registry/contracts/nope/supergraph"))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);

        // A router started from the registry, polling it.
        let first = fetch_published(&client, &url, None).await.unwrap().unwrap();
        let supergraph = Supergraph::parse(&first.sdl, first.number).unwrap();
        let router = Arc::new(Router::new(supergraph, Arc::new(InProcess::default())));
        let poller = tokio::spawn(poll_registry(
            router.clone(),
            client.clone(),
            url.clone(),
            first.etag,
            Duration::from_millis(100),
        ));
        let typename = GraphQlRequest {
            query: "{ __typename }".to_owned(),
            ..Default::default()
        };
        let answer = router.execute(&typename).await;
        let version = answer["extensions"]["supergraphVersion"].as_str().unwrap();
        assert!(version.starts_with("1-"), "{answer}");

        // A new version is published: the router swaps it in, no restart.
        let without_explorer = code_supergraph().replace(CONNECTIONS_FIELD, "");
        publish_directly(&database, without_explorer, "drop the explorer").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = router.execute(&typename).await;
            let version = answer["extensions"]["supergraphVersion"].as_str().unwrap();
            if version.starts_with("2-") {
                break;
            }
            assert!(Instant::now() < deadline, "still on {version}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let gone = router
            .execute(&GraphQlRequest {
                query: "{ connections(nodeId: \"john.3.16\") { truncated } }".to_owned(),
                ..Default::default()
            })
            .await;
        assert_eq!(
            gone["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
            "{gone}"
        );
        poller.abort();
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn partner_api_keys_see_only_the_partner_contract() {
    let key = "partner-test-key";
    let digest = gospelib_schema::store::content_hash(key);
    let (mut child, base, runtime) =
        serve_with(&["serve"], &[("GOSPELIB_PARTNER_API_KEY_SHA256", digest)]);
    let ask = |api_key: Option<&str>, query: &str| {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .json(&serde_json::json!({ "query": query }));
        if let Some(api_key) = api_key {
            request = request.header("x-api-key", api_key);
        }
        runtime.block_on(async {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
    };
    let root_fields = |api_key: Option<&str>| -> Vec<String> {
        let answer = ask(api_key, "{ __schema { queryType { fields { name } } } }");
        answer["data"]["__schema"]["queryType"]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|field| field["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let apps = root_fields(None);
    let partners = root_fields(Some(key));
    assert!(apps.contains(&"lexiconEntry".to_owned()), "{apps:?}");
    assert_eq!(
        partners,
        ["passage", "passages", "chapter", "book", "books", "search"],
        "{partners:?}"
    );

    let lexicon = "{ lexiconEntry(id: \"H0001\") { id } }";
    let for_apps = ask(None, lexicon);
    assert!(
        for_apps.get("data").is_some_and(|d| !d.is_null()),
        "{for_apps}"
    );
    let for_partners = ask(Some(key), lexicon);
    assert_eq!(
        for_partners["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
        "{for_partners}"
    );

    let words = "{ passage(id: \"john.3.16\") { id words { token } } }";
    let refused = ask(Some(key), words);
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
        "{refused}"
    );
    let reading = ask(Some(key), "{ passage(id: \"john.3.16\") { id reference } }");
    assert!(
        reading.get("errors").is_none_or(|errors| errors
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["extensions"]["code"] != "VALIDATION_ERROR")),
        "{reading}"
    );

    let unknown = ask(Some("guessed"), "{ __typename }");
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
        "{unknown}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn baseline_accepts_the_codes_supergraph_and_logs_the_reason() {
    let dir = std::env::temp_dir().join(format!("gl-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let baseline = dir.join("baseline.graphql");
    let log = dir.join("BASELINE.md");
    let with_extra = code_supergraph().replace(
        CONNECTIONS_FIELD,
        &format!("{CONNECTIONS_FIELD}  extra: String @join__field(graph: CONTENT)\n"),
    );
    std::fs::write(&baseline, with_extra).unwrap();
    let (baseline_arg, log_arg) = (baseline.display().to_string(), log.display().to_string());
    let output = gospelib(
        &[
            "schema",
            "baseline",
            "--reason",
            "extra was never used",
            "--file",
            &baseline_arg,
            "--log",
            &log_arg,
        ],
        &[],
    )
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&baseline).unwrap(),
        code_supergraph()
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("## extra was never used"), "{logged}");
    assert!(
        logged.contains("- breaking: ") && logged.contains("extra"),
        "{logged}"
    );
    let empty_reason = gospelib(
        &[
            "schema",
            "baseline",
            "--reason",
            " ",
            "--file",
            &baseline_arg,
            "--log",
            &log_arg,
        ],
        &[],
    )
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    .output()
    .unwrap();
    assert!(!empty_reason.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

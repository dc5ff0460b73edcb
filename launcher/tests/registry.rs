//! The registry on real PostgreSQL: `gospelib schema publish/history/diff/check/rollback` as an
//! operator runs them (a rollback checked like a publish), two publishes racing (one wins, the
//! other is told to check again), the `/registry/...` endpoints of `gospelib serve`, and a
//! running router that picks up a newly published version without a restart.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_kit::stores::postgres_pool;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::reload::{fetch_published, poll_registry};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::InProcess;
use gospelib_schema::check::client_documents;
use gospelib_schema::compose::{SubgraphSdl, api_schema, compose};
use gospelib_schema::publish::{CheckedProposal, PublishError, PublishOutcome, check_publish};
use gospelib_schema::store::{NewVersion, Store, StoreError, Version};
use support::{TempDatabase, gospelib, serve_with};

/// The explorer's root field in the committed supergraph, with its description.
const CONNECTIONS_FIELD: &str = "  \"\"\"\n  The neighbourhood of a node for the graph explorer (`depth` 1 or 2): a Scholar and\n  Academic feature.\n  \"\"\"\n  connections(\n    nodeId: ID!,\n    depth: Int = 1,\n    \"\"\"How many nodes, the start node included (1 to 100).\"\"\"\n    first: Int = 50,\n  ): GraphNeighborhood @join__field(graph: CONTENT) @requiresScopes(scopes: [[\"graph_explorer\"]])\n";

/// The committed supergraph, as the code composes it.
fn code_supergraph() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/supergraph.graphql"
    ))
    .unwrap()
}

/// A version of `supergraph` with no subgraphs, contracts or report.
fn bare_version(supergraph: String, message: &str) -> NewVersion {
    NewVersion {
        subgraphs: Vec::new(),
        api_schema: api_schema(&supergraph).unwrap(),
        supergraph,
        contracts: Default::default(),
        message: message.to_owned(),
        forced_reason: None,
        check_report: None,
        rollback_of: None,
        trusted_documents: None,
    }
}

/// Publishes `supergraph` straight into the store (standing in for another branch's code),
/// unchecked, after whatever is the latest version.
async fn publish_directly(database: &TempDatabase, supergraph: String, message: &str) -> i32 {
    let store = Store::new(postgres_pool(&database.url, 1).unwrap());
    let latest = store.latest_number().await.unwrap();
    let version = store
        .publish(bare_version(supergraph, message), latest)
        .await
        .unwrap();
    version.number
}

/// The committed subgraph SDLs (what the code exports), at the committed URLs; `extra` is added
/// to the content subgraph's `Query` type.
fn committed_subgraphs_with_query_field(extra: &str) -> Vec<SubgraphSdl> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/subgraphs");
    let mut subgraphs: Vec<SubgraphSdl> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "graphql"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            SubgraphSdl {
                url: format!("http://127.0.0.1:4001/subgraphs/{name}/graphql"),
                sdl: std::fs::read_to_string(&path).unwrap(),
                name,
            }
        })
        .collect();
    subgraphs.sort_by(|a, b| a.name.cmp(&b.name));
    let content = subgraphs.iter_mut().find(|s| s.name == "content").unwrap();
    // The end of the explorer's root field (`connections`), the last of `Query`.
    let explorer = "\t): GraphNeighborhood @requiresScopes(scopes: [[\"graph_explorer\"]])\n";
    assert!(content.sdl.contains(explorer));
    content.sdl = content
        .sdl
        .replace(explorer, &format!("{explorer}\t{extra}\n"));
    subgraphs
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
    // Without Redis, the routers' recorded operations were not read, and it says so.
    assert!(
        first.stderr.contains("GOSPELIB_REDIS_URL is not set"),
        "{}",
        first.stderr
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

    // An operation only the routers saw (recorded in Redis) protects it too, once enough
    // distinct users sent it (GOSPELIB_REGISTRY_USAGE_MIN_CALLERS, 3 by default): one account
    // alone cannot pin a field against removal.
    let redis_url = std::env::var("GOSPELIB_REDIS_URL").expect("GOSPELIB_REDIS_URL");
    let hash = format!("test{:060}", std::process::id());
    let recorded = gospelib_kit::usage::RecordedOperation {
        hash: hash.clone(),
        name: "RecordedExtra".to_owned(),
        coordinates: ["Query".to_owned(), "Query.extra".to_owned()].into(),
        count: 7,
        partner: false,
        callers: None,
    };
    let redis = redis::Client::open(redis_url.as_str()).unwrap();
    let record = |count: u64, callers: &[&str]| {
        let recorded = gospelib_kit::usage::RecordedOperation {
            count,
            ..recorded.clone()
        };
        let callers = callers.iter().map(|caller| caller.to_string()).collect();
        runtime.block_on(async {
            let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
            gospelib_kit::usage::record(&mut connection, &recorded, &callers, &Default::default())
                .await
                .unwrap();
        })
    };
    let check_with_usage = || {
        schema_command_with(
            &database,
            &["check", "--against", "2"],
            &[("GOSPELIB_REDIS_URL", redis_url.clone())],
        )
    };
    record(7, &["user:a"]);
    let pinned = check_with_usage();
    record(0, &["user:b", "user:c"]);
    let seen = check_with_usage();
    runtime.block_on(async {
        let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
        gospelib_kit::usage::forget(&mut connection, &hash)
            .await
            .unwrap();
    });
    assert!(pinned.ok, "{}", pinned.stdout);
    assert!(
        pinned.stdout.contains(
            "also used by RecordedExtra (router:test00000000, seen 7 times by 1 caller): too few callers to protect it"
        ),
        "{}",
        pinned.stdout
    );
    assert!(!seen.ok);
    assert!(
        seen.stdout
            .contains("breaks RecordedExtra (router:test00000000, seen 7 times by 3 callers)"),
        "{}",
        seen.stdout
    );

    // Publishing that is refused, unless forced with a reason.
    let refused = schema_command(&database, &["publish", "--operations", &operations_arg]);
    assert!(!refused.ok);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    // With Redis, the publish is announced to the routers following the registry.
    let hear = |number: &'static str| {
        let (announcement, listening) = runtime.block_on(async {
            use futures_util::StreamExt;
            let mut pubsub = redis.get_async_pubsub().await.unwrap();
            pubsub
                .subscribe(gospelib_kit::announcements::REGISTRY_PUBLISHED_CHANNEL)
                .await
                .unwrap();
            let (sent, listening) = tokio::sync::oneshot::channel();
            let heard = tokio::spawn(async move {
                let mut messages = pubsub.into_on_message();
                let _ = sent.send(());
                // Other tests may announce on the stack's Redis too: wait for this one's.
                loop {
                    let message = messages.next().await.expect("an announcement");
                    let heard = message.get_payload::<String>().unwrap();
                    if heard == number {
                        return heard;
                    }
                }
            });
            (heard, listening)
        });
        runtime.block_on(listening).unwrap();
        announcement
    };
    let announced = |announcement: tokio::task::JoinHandle<String>| {
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), announcement)
                .await
                .expect("announced within 10 s")
                .unwrap()
        })
    };
    let announcement = hear("3");
    let forced = schema_command_with(
        &database,
        &[
            "publish",
            "--operations",
            &operations_arg,
            "--force",
            "--reason",
            "the partner agreed to drop extra",
        ],
        &[("GOSPELIB_REDIS_URL", redis_url.clone())],
    );
    assert!(forced.ok, "{}", forced.stderr);
    assert!(
        forced.stdout.contains("published version 3"),
        "{}",
        forced.stdout
    );
    assert_eq!(announced(announcement), "3");
    std::fs::remove_dir_all(&operations).unwrap();

    // A rollback is announced too. With `--format json` its standard output is the report
    // alone, and what it did goes to standard error.
    let announcement = hear("4");
    let rollback = schema_command_with(
        &database,
        &["rollback", "--to", "2", "--format", "json"],
        &[("GOSPELIB_REDIS_URL", redis_url.clone())],
    );
    assert!(rollback.ok, "{}", rollback.stderr);
    let report: serde_json::Value = serde_json::from_str(&rollback.stdout).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert!(
        rollback
            .stderr
            .contains("published version 4 (the content of version 2)")
            && rollback.stderr.contains("announced to "),
        "{}",
        rollback.stderr
    );
    assert_eq!(announced(announcement), "4");

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
        // The rollback trusts today's app operations (the default folder, as the first
        // publish did), not those of the version it brings back.
        assert!(fourth.trusted_documents.is_some());
        assert_eq!(fourth.trusted_documents, first.trusted_documents);
        assert_eq!(first.subgraphs[0].name, "content");
        assert!(first.contracts["partner"].contains("@inaccessible"));
    });
}

#[test]
fn two_publishes_checked_against_the_same_version_race_and_exactly_one_wins() {
    let database = TempDatabase::migrated("registry_race");
    let first = schema_command(&database, &["publish", "--message", "first"]);
    assert!(first.ok, "{}{}", first.stdout, first.stderr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::new(postgres_pool(&database.url, 2).unwrap());
        let operations = concat!(env!("CARGO_MANIFEST_DIR"), "/../client-tests/operations");
        let documents = client_documents(std::path::Path::new(operations)).unwrap();
        let proposal = |field: &str| {
            let subgraphs = committed_subgraphs_with_query_field(field);
            let store = store.clone();
            let documents = documents.clone();
            async move {
                check_publish(&store, subgraphs, &documents, Vec::new())
                    .await
                    .unwrap()
            }
        };
        // Two branches check against version 1, each adding its own root field.
        let alpha = proposal("alpha: String").await;
        let beta = proposal("beta: String").await;
        for checked in [&alpha, &beta] {
            assert_eq!(checked.checked_number(), Some(1));
            assert!(checked.report.passed, "{}", checked.report.to_text());
        }

        // Both publish at once, each from its own task and connection.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |proposal: CheckedProposal, message: &'static str| {
            let store = Store::new(postgres_pool(&database.url, 1).unwrap());
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                proposal.publish(&store, message, None).await
            })
        };
        let (alpha_outcome, beta_outcome) = tokio::join!(race(alpha, "alpha"), race(beta, "beta"));
        let outcomes = [alpha_outcome.unwrap(), beta_outcome.unwrap()];
        let winners: Vec<&Version> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(PublishOutcome::Published(version)) => Some(&**version),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert_eq!(winners[0].number, 2);
        let losers: Vec<&PublishError> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().err())
            .collect();
        assert_eq!(losers.len(), 1, "{outcomes:?}");
        assert!(
            matches!(
                losers[0],
                PublishError::Conflict {
                    checked: Some(1),
                    latest: Some(2)
                }
            ),
            "{:?}",
            losers[0]
        );
        let told = losers[0].to_string();
        assert!(
            told.contains("version 2 was published after this check ran against version 1")
                && told.contains("nothing was written")
                && told.contains("run the check again"),
            "{told}"
        );

        // Exactly one new version, the winner's; nothing of the loser's.
        let winner = winners[0].message.clone();
        let history = store.history().await.unwrap();
        let messages: Vec<&str> = history.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(messages, [winner.as_str(), "first"]);
        let latest = store.latest().await.unwrap().unwrap();
        let winner_field = format!("{winner}: String");
        assert!(latest.api_schema.contains(&winner_field));

        // The loser checks again, now against version 2 (dropping the winner's field, which
        // nobody uses), and publishes.
        let loser_field = if winner == "alpha" {
            "beta: String"
        } else {
            "alpha: String"
        };
        let again = proposal(loser_field).await;
        assert_eq!(again.checked_number(), Some(2));
        let coordinates: Vec<&str> = again
            .report
            .changes
            .iter()
            .map(|checked| checked.change.coordinate.as_str())
            .collect();
        assert!(
            coordinates.contains(&format!("Query.{winner}").as_str()),
            "{coordinates:?}"
        );
        assert!(again.report.passed, "{}", again.report.to_text());
        match again.publish(&store, "again", None).await.unwrap() {
            PublishOutcome::Published(version) => assert_eq!(version.number, 3),
            other => panic!("{other:?}"),
        }

        // Publishing an unchanged supergraph still does nothing.
        let unchanged = proposal(loser_field).await;
        match unchanged.publish(&store, "unchanged", None).await.unwrap() {
            PublishOutcome::Unchanged(latest) => assert_eq!(latest, 3),
            other => panic!("{other:?}"),
        }

        // The store itself refuses a stale compare-and-swap, writing nothing.
        let stale = store
            .publish(bare_version(code_supergraph(), "stale"), Some(1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                stale,
                StoreError::Conflict {
                    checked: Some(1),
                    latest: Some(3)
                }
            ),
            "{stale:?}"
        );
        assert_eq!(store.history().await.unwrap().len(), 3);
        let composed = compose(&committed_subgraphs_with_query_field(loser_field)).unwrap();
        assert_eq!(store.latest().await.unwrap().unwrap().supergraph, composed);
    });
}

#[test]
fn a_rollback_that_breaks_a_client_operation_is_refused_unless_forced_with_a_reason() {
    let database = TempDatabase::migrated("registry_rollback");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = schema_command(&database, &["publish", "--message", "first"]);
    assert!(first.ok, "{}{}", first.stdout, first.stderr);
    // Version 2 adds `extra`, which a client operation now uses.
    let with_extra = code_supergraph().replace(
        CONNECTIONS_FIELD,
        &format!("{CONNECTIONS_FIELD}  extra: String @join__field(graph: CONTENT)\n"),
    );
    assert_eq!(
        runtime.block_on(publish_directly(&database, with_extra, "with extra")),
        2
    );
    let operations = std::env::temp_dir().join(format!("gl-rollback-ops-{}", std::process::id()));
    std::fs::create_dir_all(operations.join("web")).unwrap();
    std::fs::write(
        operations.join("web/Extra.graphql"),
        "query Extra { extra }",
    )
    .unwrap();
    let operations_arg = operations.display().to_string();

    // Rolling back to version 1 would remove `extra`: the check says so and refuses.
    let refused = schema_command(
        &database,
        &["rollback", "--to", "1", "--operations", &operations_arg],
    );
    assert!(!refused.ok);
    assert!(
        refused.stdout.contains("schema check against version 2"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("breaks Extra (web/Extra.graphql)"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("refused") && refused.stderr.contains("rollback --force"),
        "{}",
        refused.stderr
    );
    let json = schema_command(
        &database,
        &[
            "rollback",
            "--to",
            "1",
            "--operations",
            &operations_arg,
            "--format",
            "json",
        ],
    );
    assert!(!json.ok);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["changes"][0]["coordinate"], "Query.extra");
    assert_eq!(
        report["changes"][0]["breaks"][0],
        "Extra (web/Extra.graphql)"
    );
    assert_eq!(report["contracts"]["partner"]["passed"], true);
    let history = schema_command(&database, &["history"]);
    assert_eq!(history.stdout.lines().count(), 2, "{}", history.stdout);

    // Forced with a reason, it is published (and says why).
    let forced = schema_command(
        &database,
        &[
            "rollback",
            "--to",
            "1",
            "--operations",
            &operations_arg,
            "--force",
            "--reason",
            "extra leaked secrets",
        ],
    );
    assert!(forced.ok, "{}{}", forced.stdout, forced.stderr);
    assert!(
        forced
            .stdout
            .contains("published version 3 (the content of version 1)"),
        "{}",
        forced.stdout
    );
    let history = schema_command(&database, &["history"]);
    let newest = history.stdout.lines().next().unwrap().to_owned();
    assert!(
        newest.contains("rollback to 1") && newest.contains("forced: extra leaked secrets"),
        "{}",
        history.stdout
    );

    // Rolling back to what the latest version already has (the same operations trusted)
    // does nothing.
    let again = schema_command(
        &database,
        &["rollback", "--to", "1", "--operations", &operations_arg],
    );
    std::fs::remove_dir_all(&operations).unwrap();
    assert!(!again.ok);
    assert!(
        again
            .stderr
            .contains("the latest version (3) already has version 1's supergraph"),
        "{}",
        again.stderr
    );
    runtime.block_on(async {
        let store = Store::new(postgres_pool(&database.url, 1).unwrap());
        let third = store.require(3).await.unwrap();
        assert_eq!(third.supergraph, code_supergraph());
        assert_eq!(third.rollback_of, Some(1));
        assert!(third.contracts["partner"].contains("@inaccessible"));
        assert_eq!(store.history().await.unwrap().len(), 3);
    });
}

#[test]
fn the_registry_serves_versions_and_a_polling_router_follows_them() {
    let database = TempDatabase::migrated("registry_http");
    let (mut child, _base, runtime) =
        serve_with(&["serve"], &[("GOSPELIB_PG_URL", database.url.to_string())]);
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}/registry/supergraph", child.internal);
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
            .get(format!(
                "{}/registry/contracts/partner/supergraph",
                child.internal
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(contract.status(), 200);
        let contract_sdl = contract.text().await.unwrap();
        let contract_api = api_schema(&contract_sdl).unwrap();
        assert!(contract_api.contains("passage(id: ID!)"));
        assert!(!contract_api.contains("lexiconEntry("));
        let unknown = client
            .get(format!(
                "{}/registry/contracts/nope/supergraph",
                child.internal
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
        // A version's own contract, for a router pinned to that version.
        let pinned = |path: &str| {
            client
                .get(format!("{}/registry/contracts/{path}", child.internal))
                .send()
        };
        let first_contract = pinned("partner/supergraph/1").await.unwrap();
        assert_eq!(first_contract.status(), 200);
        assert_eq!(first_contract.headers()["x-registry-version"], "1");
        assert_eq!(first_contract.text().await.unwrap(), contract_sdl);
        for (path, status) in [
            ("partner/supergraph/9", 404),
            ("nope/supergraph/1", 404),
            ("partner/supergraph/x", 400),
            // Versions count from 1: none is a version that merely does not exist.
            ("partner/supergraph/0", 400),
            ("partner/supergraph/-3", 400),
        ] {
            assert_eq!(pinned(path).await.unwrap().status(), status, "{path}");
        }

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

/// Two small subgraphs, the library's `Query.book` tagged for partners when `tagged`.
fn small_subgraphs(tagged: bool) -> Vec<SubgraphSdl> {
    let link = r#"extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key", "@tag"])"#;
    let tag = if tagged {
        r#"@tag(name: "partner")"#
    } else {
        ""
    };
    vec![SubgraphSdl {
        name: "library".to_owned(),
        url: "http://library.test/graphql".to_owned(),
        sdl: format!(
            "{link}\ntype Query {{ book(id: ID!): Book {tag} }}\n\
             type Book @key(fields: \"id\") {{ id: ID! {tag} title: String! }}"
        ),
    }]
}

/// What the check passes publishes: a supergraph no field of which is tagged for partners has
/// no partner contract to check, and publishes without one (it was refused as an empty
/// contract). The same supergraph with contracts built otherwise (by an older build's rules)
/// is published again, not "unchanged": the routers serve the stored contracts.
#[test]
fn what_the_check_passes_publishes_and_new_contracts_are_a_change() {
    let database = TempDatabase::migrated("registry_contracts");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::new(postgres_pool(&database.url, 1).unwrap());
        let untagged = check_publish(&store, small_subgraphs(false), &[], Vec::new())
            .await
            .unwrap();
        assert!(untagged.report.passed, "{}", untagged.report.to_text());
        let outcome = untagged.publish(&store, "untagged", None).await.unwrap();
        let PublishOutcome::Published(version) = outcome else {
            panic!("published: {outcome:?}");
        };
        assert!(version.contracts.is_empty(), "{:?}", version.contracts);

        // The tagged supergraph, stored as an older build would have: without its contract.
        let tagged_supergraph = compose(&small_subgraphs(true)).unwrap();
        let older = publish_directly(&database, tagged_supergraph.clone(), "older build").await;
        let again = check_publish(&store, small_subgraphs(true), &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(again.checked_number(), Some(older));
        let outcome = again.publish(&store, "contracts", None).await.unwrap();
        let PublishOutcome::Published(version) = outcome else {
            panic!("published: {outcome:?}");
        };
        assert_eq!(version.supergraph, tagged_supergraph);
        assert!(version.contracts["partner"].contains("@tag(name: \"partner\")"));

        // Nothing changed since: unchanged.
        let same = check_publish(&store, small_subgraphs(true), &[], Vec::new())
            .await
            .unwrap();
        let outcome = same.publish(&store, "same", None).await.unwrap();
        assert!(
            matches!(outcome, PublishOutcome::Unchanged(n) if n == version.number),
            "{outcome:?}"
        );
    });
}

/// `schema diff` shows a change to what a field requires (`@authenticated`,
/// `@requiresScopes`), which the API schemas alone do not carry, as the check does.
#[test]
fn diff_shows_access_rule_changes() {
    let database = TempDatabase::migrated("registry_diff_access");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let with_extra = |rules: &str| {
        code_supergraph().replace(
            CONNECTIONS_FIELD,
            &format!("{CONNECTIONS_FIELD}  extra: String @join__field(graph: CONTENT){rules}\n"),
        )
    };
    let open = runtime.block_on(publish_directly(&database, with_extra(""), "open"));
    let closed = runtime.block_on(publish_directly(
        &database,
        with_extra(" @authenticated"),
        "signed-in callers only",
    ));
    let diff = schema_command(&database, &["diff", &open.to_string(), &closed.to_string()]);
    assert!(diff.ok, "{}", diff.stderr);
    assert!(
        diff.stdout.contains(": 1 change(s)") && diff.stdout.contains("[Query.extra]"),
        "{}",
        diff.stdout
    );
}

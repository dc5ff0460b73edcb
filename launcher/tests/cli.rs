//! The `gospelib` binary as an operator runs it: configuration errors, serve, SIGTERM, migrate.

use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use support::{BINARY, STORE_VARIABLES, TempDatabase, gospelib, serve, serve_with, stack_vars};

#[test]
fn serve_refuses_a_bad_configuration_and_names_every_variable() {
    let output = gospelib(&["serve"], &[("GOSPELIB_ROUTER_PORT", "eighty".to_owned())])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid configuration (7 problems)"),
        "{stderr}"
    );
    for name in STORE_VARIABLES.iter().chain(&["GOSPELIB_INTERNAL_SECRET"]) {
        assert!(
            stderr.contains(&format!("{name} is not set: expected ")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("GOSPELIB_ROUTER_PORT has a bad value \"eighty\""),
        "{stderr}"
    );
}

/// What `/ready` at `base` answers.
async fn ready_of(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
fn serve_refuses_an_unknown_part() {
    let output = gospelib(&["serve", "--only", "nonesuch"], &stack_vars())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unknown part \"nonesuch\" in --only"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_an_only_list_naming_nothing() {
    for only in ["", ","] {
        let output = gospelib(&["serve", "--only", only], &stack_vars())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "--only {only:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("--only names no part"), "{stderr}");
    }
}

#[test]
fn serve_only_registry_serves_the_registry_alone() {
    // No internal secret, no caller keys: the registry alone signs and checks nothing.
    let (child, base, runtime) = serve_with(
        &["serve", "--only", "registry"],
        &[("GOSPELIB_INTERNAL_SECRET", String::new())],
    );
    let internal = child.internal.clone();
    let (versions, subgraph, ready) = runtime.block_on(async {
        let versions = reqwest::get(format!("{internal}/registry/versions"))
            .await
            .unwrap();
        let subgraph = reqwest::Client::new()
            .post(format!("{internal}/graphql"))
            .json(&serde_json::json!({"query": "{ __typename }"}))
            .send()
            .await
            .unwrap()
            .status();
        let ready = ready_of(&base).await;
        (versions.status(), subgraph, ready)
    });
    assert_eq!(versions, 200);
    assert_eq!(subgraph, 404, "no subgraph is served");
    assert_eq!(ready["status"], "ready", "{ready}");
    let stores: Vec<&String> = ready["stores"].as_object().unwrap().keys().collect();
    assert_eq!(stores, ["postgres"], "it needs PostgreSQL alone: {ready}");
}

#[test]
fn serve_answers_health_and_ready_and_stops_cleanly_on_sigterm() {
    let (mut child, base, runtime) = serve(&["serve"]);
    let (health, ready) = runtime.block_on(async {
        let health = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status()
            .as_u16();
        let ready = ready_of(&base).await;
        (health, ready)
    });
    assert_eq!(health, 200);
    assert_eq!(ready["status"], "ready", "{ready}");
    for store in ["postgres", "redis", "falkordb", "typesense"] {
        assert_eq!(ready["stores"][store]["status"], "ok", "{ready}");
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "gospelib serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn migrate_brings_a_fresh_database_up_to_date_once() {
    let database = TempDatabase::empty("cli");
    let first = database.migrate();
    assert!(!first.starts_with("migrations: 0 applied"), "{first}");
    assert_eq!(
        database.migrate(),
        "migrations: 0 applied, database up to date\n"
    );
}

#[test]
fn migrate_without_a_database_url_names_the_variable() {
    let output = gospelib(&["migrate"], &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("GOSPELIB_PG_URL is not set: expected a URL such as postgres://"),
        "{stderr}"
    );
}

/// `gospelib jobs reminders` runs on the stack's database and says what it did as JSON; a bad
/// reminder hour is refused by name before anything runs.
#[test]
fn jobs_reminders_reports_what_it_did_and_refuses_a_bad_hour() {
    let output = gospelib(&["jobs", "reminders"], &stack_vars())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in ["due", "made", "already"] {
        assert!(report[key].is_u64(), "{report}");
    }
    let mut vars = stack_vars();
    vars.push(("GOSPELIB_REMINDER_HOUR", "24".to_owned()));
    let output = gospelib(&["jobs", "reminders"], &vars).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("GOSPELIB_REMINDER_HOUR"), "{stderr}");
}

/// `gospelib jobs reminders --every MINUTES` (Compose, where no scheduler runs it): a run at
/// once, reported, then waiting for the next until SIGTERM, which ends it cleanly.
#[test]
fn jobs_reminders_every_runs_at_once_and_stops_on_sigterm() {
    use std::io::BufRead;
    let mut child = gospelib(&["jobs", "reminders", "--every", "60"], &stack_vars())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(report["made"].is_u64(), "{report}");
    // Still running: waiting for the next run. SIGTERM at once (listened for before the
    // first run, not only once that run ended).
    assert!(child.try_wait().unwrap().is_none());
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "jobs reminders --every did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let refused = gospelib(&["jobs", "reminders", "--every", "0"], &stack_vars())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
}

/// As in Phase 2: content alone, holding its caller key and not the internal secret, in the
/// middle of a rotation (the key derived from the previous secret still believed).
#[test]
fn serve_only_content_answers_graphql_alone_on_the_internal_listener() {
    use gospelib_kit::caller::{
        CALLER_HEADER, Caller, CallerKeys, InternalSecret, variables_digest,
    };
    let secret = stack_vars()
        .into_iter()
        .find(|(name, _)| *name == "GOSPELIB_INTERNAL_SECRET")
        .map(|(_, value)| InternalSecret::new(value.trim().as_bytes()).unwrap())
        .unwrap();
    let previous = InternalSecret::new(b"the platform's previous internal secret").unwrap();
    let (mut child, base, runtime) = serve_with(
        &["serve", "--only", "content"],
        &[
            // Empty is unset.
            ("GOSPELIB_INTERNAL_SECRET", String::new()),
            (
                "GOSPELIB_CALLER_KEYS",
                CallerKeys::render(&secret, &["content"]),
            ),
            (
                "GOSPELIB_CALLER_KEYS_PREVIOUS",
                CallerKeys::render(&previous, &["content"]),
            ),
        ],
    );
    let internal = child.internal.clone();
    let (signed, lateral, by_previous, lateral_previous) = runtime.block_on(async {
        let query = "{ _service { sdl } }";
        let sign_with = |secret: &InternalSecret, subgraph: &str| {
            secret.caller_key(subgraph).sign(
                &Caller::partner("p", vec!["interlinear".to_owned()]),
                query,
                &variables_digest(&serde_json::json!({})),
                Duration::from_secs(30),
            )
        };
        let ask = |header: String| {
            let request = reqwest::Client::new()
                .post(format!("{internal}/graphql"))
                .header(CALLER_HEADER, header)
                .json(&serde_json::json!({ "query": query }));
            async move {
                request
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };
        (
            ask(sign_with(&secret, "content")).await,
            ask(sign_with(&secret, "ai")).await,
            ask(sign_with(&previous, "content")).await,
            ask(sign_with(&previous, "ai")).await,
        )
    });
    // Signed with content's key, current or previous: believed. With another subgraph's:
    // refused.
    assert!(signed["errors"].is_null(), "{signed}");
    assert!(by_previous["errors"].is_null(), "{by_previous}");
    for lateral in [lateral, lateral_previous] {
        assert_eq!(
            lateral["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{lateral}"
        );
    }
    let (alone, mounted, public, ready) = runtime.block_on(async {
        let http = reqwest::Client::new();
        let ask = |base: &str, path: &str| {
            http.post(format!("{base}{path}"))
                .json(&serde_json::json!({"query": "{ _service { sdl } }"}))
                .send()
        };
        let alone: serde_json::Value = ask(&internal, "/graphql")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mounted: serde_json::Value = ask(&internal, "/subgraphs/content/graphql")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // The subgraph is not a client's door: the public listener has no GraphQL without a
        // router.
        let public = ask(&base, "/subgraphs/content/graphql")
            .await
            .unwrap()
            .status();
        let ready = ready_of(&base).await;
        (alone, mounted, public, ready)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(alone, mounted);
    assert_eq!(public, 404);
    let sdl = alone["data"]["_service"]["sdl"].as_str().unwrap();
    assert!(sdl.contains("type Passage @key(fields: \"id\")"), "{sdl}");
    // Content needs FalkorDB and Typesense, and Redis only as a cache; not PostgreSQL.
    let stores: Vec<&String> = ready["stores"].as_object().unwrap().keys().collect();
    assert_eq!(stores, ["falkordb", "redis", "typesense"], "{ready}");
}

/// The public listener serves the router, `/health`, `/ready` and GraphiQL; subgraphs, the
/// registry and metrics only answer on the internal one.
#[test]
fn serve_keeps_subgraphs_registry_and_metrics_off_the_public_listener() {
    let database = TempDatabase::migrated("public_door");
    let (mut child, base, runtime) =
        serve_with(&["serve"], &[("GOSPELIB_PG_URL", database.url.to_string())]);
    let internal = child.internal.clone();
    let statuses = runtime.block_on(async {
        let http = reqwest::Client::new();
        let query = serde_json::json!({"query": "{ __typename }"});
        let mut statuses = Vec::new();
        for (listener, url) in [(&base, "public"), (&internal, "internal")] {
            for path in [
                "/graphql",
                "/subgraphs/content/graphql",
                "/registry/versions",
                "/metrics",
                "/health",
                "/ready",
            ] {
                let response = if path.contains("graphql") {
                    http.post(format!("{listener}{path}"))
                        .json(&query)
                        .send()
                        .await
                } else {
                    http.get(format!("{listener}{path}")).send().await
                };
                statuses.push(format!(
                    "{url} {path} {}",
                    response.unwrap().status().as_u16()
                ));
            }
        }
        let ide = http
            .get(format!("{base}/graphql"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        statuses.push(format!("public GraphiQL {}", ide.status().as_u16()));
        statuses
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        statuses,
        [
            "public /graphql 200",
            "public /subgraphs/content/graphql 404",
            "public /registry/versions 404",
            "public /metrics 404",
            "public /health 200",
            "public /ready 200",
            "internal /graphql 404",
            "internal /subgraphs/content/graphql 200",
            "internal /registry/versions 200",
            "internal /metrics 200",
            "internal /health 200",
            "internal /ready 200",
            "public GraphiQL 200",
        ]
    );
}

/// The import, run for real on the pinned packages, gives the design's counts and writes a
/// fixture identical to the committed one.
#[test]
fn corpus_import_converts_the_real_packages_and_reproduces_the_fixture() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let data = root
        .join("target")
        .join(format!("import-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    // Reuse downloads the run command may already have fetched (each file is checked by sha256).
    let downloads = root.join("data/downloads");
    if downloads.is_dir() {
        std::fs::create_dir_all(data.join("downloads")).unwrap();
        for entry in std::fs::read_dir(&downloads).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), data.join("downloads").join(entry.file_name())).unwrap();
        }
    }
    let fixture = data.join("fixture");
    let output = Command::new(BINARY)
        .args(["corpus", "import", "--data"])
        .arg(&data)
        .arg("--fixture")
        .arg(&fixture)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["counts"],
        serde_json::json!({
            "books": 81, "chapters": 1428, "passages.bible": 31102, "passages.book-of-mormon": 6604,
            "words": 349308, "lexicon": 14298, "topics": 5322, "crossrefs": 386518
        })
    );
    let committed = root.join("subgraphs/content/fixture");
    for file in [
        "books/gen.json",
        "books/ps.json",
        "books/john.json",
        "books/1-ne.json",
        "lexicon.json",
        "topics.json",
        "crossrefs.json",
    ] {
        let made = std::fs::read(fixture.join(file)).unwrap();
        let kept = std::fs::read(committed.join(file)).unwrap();
        assert!(
            made == kept,
            "{file} differs from the committed fixture: regenerate it with `gospelib corpus import --fixture subgraphs/content/fixture`"
        );
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn serve_routes_graphql_through_the_router_to_the_subgraphs() {
    let (mut child, base, runtime) = serve(&["serve"]);
    let (version, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .json(&serde_json::json!({"query": "{ passage(id: \"john.3.99\") { id } book(id: \"Bad!\") { id } }"}))
            .send()
            .await
            .unwrap();
        let version = response.headers()["x-supergraph-version"].to_str().unwrap().to_owned();
        let body: serde_json::Value = response.json().await.unwrap();
        (version, body)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        body["data"],
        serde_json::json!({"passage": null, "book": null}),
        "{body}"
    );
    let mut codes: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["extensions"]["code"].as_str().unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, ["PASSAGE_NOT_FOUND", "VALIDATION_ERROR"], "{body}");
    assert_eq!(body["extensions"]["supergraphVersion"], version);
}

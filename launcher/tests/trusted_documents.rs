//! Trusted documents end to end: `gospelib schema publish` stores the apps' manifest with each
//! version (a rollback, the manifest of today's app operations), the registry serves it, and
//! `gospelib serve` holds app callers to it under `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS=enforce` (by id or by
//! text; anything else `OPERATION_NOT_TRUSTED`, APQ no way around it), while partners may send
//! any operation their contract validates.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gospelib_kit::stores::postgres_pool;
use gospelib_router::trusted_documents::{Manifest, document_id};
use gospelib_schema::compose::api_schema;
use gospelib_schema::store::{NewVersion, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{TempDatabase, gospelib, serve_with, stack_vars};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn operation(path: &str) -> String {
    std::fs::read_to_string(repository().join("client-tests/operations").join(path)).unwrap()
}

fn variables(path: &str) -> Value {
    serde_json::from_str(&operation(&path.replace(".graphql", ".variables.json"))).unwrap()
}

/// The hex of a document's id (what `persistedQuery.sha256Hash` carries).
fn hash_of(text: &str) -> String {
    document_id(text).unwrap()["sha256:".len()..].to_owned()
}

/// The persisted-query extension naming `hash`.
fn by_id(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `(status, body)` of a POST of `body` with extra headers.
    async fn post(&self, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}/graphql", self.base)).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn query(&self, headers: &[(&str, &str)], query: &str, variables: Value) -> (u16, Value) {
        self.post(headers, json!({ "query": query, "variables": variables }))
            .await
    }
}

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Answered: data, and no refusal of the document itself.
fn assert_answered(status: u16, body: &Value) {
    assert!(body["data"].is_object(), "{body}");
    assert_run(status, body);
}

/// Run: the document was not refused (its fields may still fail, e.g. a store unavailable).
fn assert_run(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    let codes = codes(body);
    assert!(
        !codes.iter().any(|code| {
            [
                "OPERATION_NOT_TRUSTED",
                "VALIDATION_ERROR",
                "INVALID_REQUEST",
            ]
            .contains(&code.as_str())
                || code.starts_with("PERSISTED_QUERY")
        }),
        "{body}"
    );
}

/// An id nobody vouched for, sent alone: answered as APQ answers a hash it does not know, so
/// that a stock APQ client sends the text next.
fn assert_asked_for_the_text(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(codes(body), ["PERSISTED_QUERY_NOT_FOUND"], "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
}

fn assert_not_trusted(status: u16, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(codes(body), ["OPERATION_NOT_TRUSTED"], "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "only the apps' registered operations are accepted here"
    );
    assert!(body.get("data").is_none(), "{body}");
    assert!(
        body["extensions"]["supergraphVersion"].is_string(),
        "{body}"
    );
}

/// `gospelib partner-key <args>` on the stack; its stdout.
fn partner_key(args: &[&str]) -> String {
    let mut all = vec!["partner-key"];
    all.extend_from_slice(args);
    let output = gospelib(&all, &stack_vars()).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn under_enforce_apps_send_only_their_operations_and_partners_any_valid_one() {
    let made: Value = serde_json::from_str(&partner_key(&[
        "create",
        "--partner",
        &format!("trusted-{}", uuid::Uuid::new_v4().simple()),
        "--format",
        "json",
    ]))
    .unwrap();
    let key = made["key"].as_str().unwrap().to_owned();
    let key_id = made["id"].as_str().unwrap().to_owned();

    let (served, base, runtime) = serve_with(
        &["serve"],
        &[("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS", "enforce".to_owned())],
    );
    let client = Client {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    let reading = operation("web/ReadingView.graphql");
    let reading_variables = variables("web/ReadingView.graphql");
    let hash = hash_of(&reading);
    let unknown = "{ books { id } }";
    runtime.block_on(async {
        // A web operation by its text, as the app wrote it or laid out otherwise.
        let (status, body) = client.query(&[], &reading, reading_variables.clone()).await;
        assert_answered(status, &body);
        let relaid = format!(
            "# reformatted\n{}",
            reading.replace('\n', "\n\n   ").replace("id\n", "id ,\n")
        );
        assert_ne!(relaid, reading);
        let (status, body) = client.query(&[], &relaid, reading_variables.clone()).await;
        assert_answered(status, &body);

        // By its id (the hex, or `sha256:<hex>`), with no text.
        for id in [hash.clone(), format!("sha256:{hash}")] {
            let (status, body) = client
                .post(
                    &[],
                    json!({ "extensions": by_id(&id), "variables": reading_variables }),
                )
                .await;
            assert_answered(status, &body);
        }
        // Over GET too.
        let response = client
            .http
            .get(format!("{base}/graphql"))
            .header("apollo-require-preflight", "true")
            .query(&[
                ("extensions", by_id(&hash).to_string()),
                ("variables", reading_variables.to_string()),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_answered(status, &response.json().await.unwrap());

        // Anything else an app caller sends is refused: another operation, a partner's
        // operation; an unknown id is asked for its text, as APQ asks.
        let (status, body) = client.query(&[], unknown, json!({})).await;
        assert_not_trusted(status, &body);
        let chapter_text = operation("partner/ChapterText.graphql");
        let (status, body) = client
            .query(&[], &chapter_text, variables("partner/ChapterText.graphql"))
            .await;
        assert_not_trusted(status, &body);
        let (status, body) = client
            .post(&[], json!({ "extensions": by_id(&hash_of(unknown)) }))
            .await;
        assert_asked_for_the_text(status, &body);
        // Under the GraphQL-over-HTTP media type the same.
        let (status, body) = client
            .post(
                &[("accept", "application/graphql-response+json")],
                json!({ "query": unknown }),
            )
            .await;
        assert_not_trusted(status, &body);

        // APQ is no way around it: registering an unknown text is refused, and its hash then
        // finds nothing.
        let apq_hash = format!("{:x}", Sha256::digest(unknown.as_bytes()));
        let (status, body) = client
            .post(
                &[],
                json!({ "query": unknown, "extensions": by_id(&apq_hash) }),
            )
            .await;
        assert_not_trusted(status, &body);
        let (status, body) = client
            .post(&[], json!({ "extensions": by_id(&apq_hash) }))
            .await;
        assert_asked_for_the_text(status, &body);
        // A stock APQ client of a trusted text (Apollo's link hashes the text as it prints
        // it): its hash alone is asked for the text, the text with it runs, and from then on
        // the hash alone runs.
        let printed = format!("{reading}\n");
        let printed_hash = format!("{:x}", Sha256::digest(printed.as_bytes()));
        let by_hash = json!({ "extensions": by_id(&printed_hash), "variables": reading_variables });
        let (status, body) = client.post(&[], by_hash.clone()).await;
        assert_asked_for_the_text(status, &body);
        let (status, body) = client
            .post(
                &[],
                json!({ "query": printed, "extensions": by_id(&printed_hash),
                        "variables": reading_variables }),
            )
            .await;
        assert_answered(status, &body);
        let (status, body) = client.post(&[], by_hash).await;
        assert_answered(status, &body);

        // Partners may send any operation their contract validates, and use APQ as before.
        let partner = [("x-api-key", key.as_str())];
        let (status, body) = client.query(&partner, unknown, json!({})).await;
        assert_answered(status, &body);
        let (status, body) = client
            .query(
                &partner,
                &chapter_text,
                variables("partner/ChapterText.graphql"),
            )
            .await;
        assert_answered(status, &body);
        let partner_query = format!("{{ books {{ id }} }} # {}", key_id);
        let partner_hash = format!("{:x}", Sha256::digest(partner_query.as_bytes()));
        let (status, body) = client
            .post(
                &partner,
                json!({ "query": partner_query, "extensions": by_id(&partner_hash) }),
            )
            .await;
        assert_answered(status, &body);
        let (status, body) = client
            .post(&partner, json!({ "extensions": by_id(&partner_hash) }))
            .await;
        assert_answered(status, &body);
        // A key that is no partner's is refused as a credential (401), not as a document.
        let (status, body) = client
            .query(&[("x-api-key", "glpk_nobody")], unknown, json!({}))
            .await;
        assert_eq!(status, 401, "{body}");

        // Refusals are counted with the other GraphQL errors.
        let metrics = client
            .http
            .get(format!("{}/metrics", served.internal))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with("gospelib_graphql_errors_total")
                    && line.contains("code=\"OPERATION_NOT_TRUSTED\"")),
            "{metrics}"
        );
    });
    drop(served);
    partner_key(&["revoke", &key_id]);
}

#[test]
fn by_default_app_operations_outside_the_manifest_still_run() {
    let (served, base, runtime) = serve_with(&["serve"], &[]);
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let (status, body) = client.query(&[], "{ books { id } }", json!({})).await;
        assert_answered(status, &body);
        // A manifest id already works under `log`.
        let reading = operation("web/ReadingView.graphql");
        let (status, body) = client
            .post(
                &[],
                json!({
                    "extensions": by_id(&hash_of(&reading)),
                    "variables": variables("web/ReadingView.graphql"),
                }),
            )
            .await;
        assert_answered(status, &body);
    });
    drop(served);
}

fn publish(database: &TempDatabase, args: &[&str]) -> (bool, String) {
    let mut all = vec!["schema"];
    all.extend_from_slice(args);
    let output = gospelib(&all, &[("GOSPELIB_PG_URL", database.url.to_string())])
        .current_dir(repository())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn each_version_carries_its_manifest_the_registry_serves_it_and_serve_follows_it() {
    let database = TempDatabase::migrated("trusted_documents");
    // Version 1: an operations folder whose apps have the reading view only.
    let operations = std::env::temp_dir().join(format!("gl-trusted-ops-{}", std::process::id()));
    for (dir, file) in [
        ("web", "ReadingView.graphql"),
        ("partner", "ChapterText.graphql"),
    ] {
        std::fs::create_dir_all(operations.join(dir)).unwrap();
        std::fs::write(
            operations.join(dir).join(file),
            operation(&format!("{dir}/{file}")),
        )
        .unwrap();
    }
    let small = operations.display().to_string();
    let (ok, output) = publish(&database, &["publish", "--operations", &small]);
    assert!(ok && output.contains("published version 1"), "{output}");
    let reading = operation("web/ReadingView.graphql");
    let first_manifest = Manifest::from_documents([("ReadingView", reading.as_str())])
        .unwrap()
        .to_json();

    let (served, base, runtime) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_PG_URL", database.url.to_string()),
            ("GOSPELIB_SUPERGRAPH_SOURCE", "registry".to_owned()),
            ("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS", "enforce".to_owned()),
            ("GOSPELIB_ROUTER_POLL_MS", "200".to_owned()),
        ],
    );
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    let url = format!("{}/registry/trusted-documents", served.internal);
    let search = operation("mobile/Search.graphql");
    let search_variables = variables("mobile/Search.graphql");
    runtime.block_on(async {
        let latest = client.http.get(&url).send().await.unwrap();
        assert_eq!(latest.status(), 200);
        assert_eq!(latest.headers()["content-type"], "application/json");
        assert_eq!(latest.headers()["x-registry-version"], "1");
        let etag = latest.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with("\"v1-trusted-documents-"), "{etag}");
        assert_eq!(latest.json::<Value>().await.unwrap(), first_manifest);
        let unchanged = client
            .http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(unchanged.status(), 304);
        for (path, status) in [("/1", 200), ("/9", 404), ("/x", 400)] {
            let response = client
                .http
                .get(format!("{url}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{path}");
        }

        // The router serves the registry's manifest: the reading view, not the search.
        let (status, body) = client
            .query(&[], &reading, variables("web/ReadingView.graphql"))
            .await;
        assert_answered(status, &body);
        let (status, body) = client.query(&[], &search, search_variables.clone()).await;
        assert_not_trusted(status, &body);
    });

    // The same operations again: nothing to publish.
    let (ok, output) = publish(&database, &["publish", "--operations", &small]);
    assert!(ok && output.contains("unchanged: version 1"), "{output}");
    std::fs::remove_dir_all(&operations).unwrap();
    // Every app operation (the supergraph unchanged): a new version, which the router follows.
    let (ok, output) = publish(&database, &["publish"]);
    assert!(ok && output.contains("published version 2"), "{output}");
    let every =
        Manifest::from_operations_dir(&repository().join("client-tests/operations")).unwrap();
    assert!(every.len() > 1);
    let wait_for = |accepted: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        runtime.block_on(async {
            loop {
                let (status, body) = client.query(&[], &search, search_variables.clone()).await;
                if (status == 200) == accepted {
                    if accepted {
                        assert_run(status, &body);
                    } else {
                        assert_not_trusted(status, &body);
                    }
                    break;
                }
                assert!(Instant::now() < deadline, "{status} {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    wait_for(true);

    runtime.block_on(async {
        let store = Store::new(postgres_pool(&database.url, 1).unwrap());
        let second = store.require(2).await.unwrap();
        assert_eq!(second.trusted_documents, Some(every.to_json()));
        // A version published without a manifest: none is served for it, and the router
        // keeps the one it has.
        let refusals_before = refused_manifest_reads(&served.log);
        let supergraph = second.supergraph.clone();
        store
            .publish(
                NewVersion {
                    subgraphs: Vec::new(),
                    api_schema: api_schema(&supergraph).unwrap(),
                    supergraph,
                    contracts: second.contracts.clone(),
                    message: "no manifest".to_owned(),
                    forced_reason: None,
                    check_report: None,
                    rollback_of: None,
                    trusted_documents: None,
                },
                Some(2),
            )
            .await
            .unwrap();
        let none = client.http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 404);
        let second = client.http.get(format!("{url}/2")).send().await.unwrap();
        assert_eq!(second.headers()["x-registry-version"], "2");
        assert_eq!(second.json::<Value>().await.unwrap(), every.to_json());
        // The router has asked since, found none, and kept its own: the search still runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while refused_manifest_reads(&served.log) <= refusals_before {
            assert!(
                Instant::now() < deadline,
                "the router never asked again; its log:\n{}",
                std::fs::read_to_string(&served.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, body) = client.query(&[], &search, search_variables.clone()).await;
        assert_run(status, &body);
    });

    // A rollback to version 1 brings its supergraph back with the manifest of the apps'
    // operations of today (those its check protected), not version 1's, which would refuse
    // what the apps send now: the router keeps accepting the search.
    let (ok, output) = publish(&database, &["rollback", "--to", "1"]);
    assert!(
        ok && output.contains("published version 4 (the content of version 1)"),
        "{output}"
    );
    runtime.block_on(async {
        let latest = client.http.get(&url).send().await.unwrap();
        assert_eq!(latest.headers()["x-registry-version"], "4");
        let manifest = latest.json::<Value>().await.unwrap();
        assert_eq!(manifest, every.to_json());
        assert_ne!(manifest, first_manifest);
    });
    wait_for(true);
    drop(served);
}

/// How often the served router's log says the registry had no trusted documents (404) for
/// its latest version, and it kept its own.
fn refused_manifest_reads(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.contains("cannot read the trusted documents; keeping the current ones")
                && line.contains("registry answered 404")
        })
        .count()
}

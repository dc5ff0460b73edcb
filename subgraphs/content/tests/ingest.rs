//! `gospelib ingest` against real FalkorDB, Typesense and Redis: idempotent, nothing written on
//! invalid input, removed content pruned, changed content served fresh through the cache, and
//! each finished ingest announced to `ingestCompleted` subscribers (live events on Redis).

mod support;

use std::path::PathBuf;

use gospelib_content::ingest::{self, IngestError, graph_counts};
use gospelib_content::namespace::Namespace;
use gospelib_content::schema::ContentService;
use serde_json::json;
use support::{clients, copy_dir, edit_json, fixture, ingest_dir, run, targets};

/// A scratch copy of the fixture.
fn fixture_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gl-ingest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixture(), &dir);
    dir
}

/// The collection `alias` points at, and the collections of its family (`<alias>_*`).
async fn search_collections(alias: &str) -> (String, Vec<String>) {
    let typesense = clients().typesense;
    let get = |path: String| {
        let request = typesense
            .http
            .get(format!(
                "{}/{path}",
                typesense.base_url.as_str().trim_end_matches('/')
            ))
            .header("x-typesense-api-key", &typesense.api_key);
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
    let target = get(format!("aliases/{alias}")).await["collection_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let family = get("collections".to_owned())
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|name| name.starts_with(&format!("{alias}_")))
        .map(str::to_owned)
        .collect();
    (target, family)
}

#[tokio::test]
async fn ingesting_twice_writes_the_corpus_once() {
    let namespace = Namespace::isolated("t_ingest_twice");
    let first = ingest_dir(&namespace, &fixture()).await;
    let alias = namespace.alias(gospelib_content::ingest::search_sync::PASSAGES);
    let (served_first, _) = search_collections(&alias).await;
    let second = ingest_dir(&namespace, &fixture()).await;
    // The same corpus again fills a collection of its own (the one served stays whole until
    // the alias moves), then only that one is left.
    let (served_second, family) = search_collections(&alias).await;
    assert_ne!(served_first, served_second);
    assert_eq!(family, [served_second]);
    assert_eq!(first.nodes, second.nodes);
    assert_eq!(first.edges, second.edges);
    assert_eq!(first.search, second.search);
    assert_eq!(first.version, second.version);

    let corpus = &first.corpus;
    let passages = (corpus["passages.bible"] + corpus["passages.book-of-mormon"]) as i64;
    assert_eq!(first.nodes["Passage"], passages);
    assert_eq!(first.nodes["Book"], 4);
    assert_eq!(first.nodes["WordAlignment"], corpus["words"] as i64);
    assert_eq!(first.nodes["LexiconEntry"], corpus["lexicon"] as i64);
    assert_eq!(first.nodes["Topic"], corpus["topics"] as i64);
    assert_eq!(first.edges["CROSS_REF"], corpus["crossrefs"] as i64);
    assert_eq!(first.edges["HAS_WORD"], corpus["words"] as i64);
    assert_eq!(first.edges["DEFINED_BY"], corpus["words"] as i64);
    assert_eq!(first.edges["HAS_VERSE"], passages);
    assert_eq!(first.search["passages"], passages as u64);
    assert_eq!(first.search["topics"], corpus["topics"] as u64);
    assert_eq!(first.search["lexicon"], corpus["lexicon"] as u64);
    let stages: Vec<&str> = first.stages.iter().map(|s| s.stage).collect();
    assert_eq!(&stages[..3], ["schema", "books", "chapters"]);
}

#[tokio::test]
async fn an_invalid_corpus_writes_nothing_and_reports_every_problem() {
    let dir = fixture_copy("invalid");
    edit_json(&dir.join("books/john.json"), |v| {
        v["chapters"][2]["verses"][15]["words"][0]["strongs"] = "G99999".into();
    });
    edit_json(&dir.join("topics.json"), |v| {
        v["topics"][0]["seeAlso"] = json!(["naves:nowhere"]);
    });
    let namespace = Namespace::isolated("t_ingest_invalid");
    let clients = clients();
    let targets = targets(&namespace, &clients);
    let error = ingest::ingest(&dir, false, &targets).await.unwrap_err();
    let IngestError::Invalid(invalid) = error else {
        panic!("expected an invalid corpus, got {error}");
    };
    let paths: Vec<&str> = invalid.issues.iter().map(|i| i.path.as_str()).collect();
    assert!(
        paths.contains(&"$.chapters[2].verses[15].words[0].strongs"),
        "{invalid}"
    );
    assert!(paths.contains(&"$.topics[0].seeAlso[0]"), "{invalid}");

    let (nodes, edges) = graph_counts(&targets.graph).await.unwrap();
    assert!(
        nodes.values().all(|n| *n == 0),
        "nothing written: {nodes:?}"
    );
    assert!(
        edges.values().all(|n| *n == 0),
        "nothing written: {edges:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_dry_run_validates_and_reports_without_writing() {
    let namespace = Namespace::isolated("t_ingest_dry");
    let clients = clients();
    let targets = targets(&namespace, &clients);
    let report = ingest::ingest(&fixture(), true, &targets).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.corpus["books"], 4);
    let (nodes, _) = graph_counts(&targets.graph).await.unwrap();
    assert!(nodes.values().all(|n| *n == 0), "{nodes:?}");
}

#[tokio::test]
async fn re_ingested_content_is_served_fresh_and_removed_content_is_gone() {
    let namespace = Namespace::isolated("t_ingest_fresh");
    ingest_dir(&namespace, &fixture()).await;
    let service = ContentService::new(namespace.clone(), &clients());
    let query = r#"{ passage(id: "john.1.7") { text crossReferences { totalCount } } }"#;
    let before = run(&service, query, json!({})).await;
    let cached = run(&service, query, json!({})).await;
    assert_eq!(before, cached);
    let refs_before = before["data"]["passage"]["crossReferences"]["totalCount"]
        .as_u64()
        .unwrap();

    let dir = fixture_copy("fresh");
    let mut removed = 0;
    edit_json(&dir.join("books/john.json"), |v| {
        v["chapters"][0]["verses"][6]["text"] = "The same came for a witness (edited).".into();
    });
    edit_json(&dir.join("crossrefs.json"), |v| {
        let links = v["links"].as_array_mut().unwrap();
        let count = links.len();
        links.retain(|l| l["from"] != "john.1.7");
        removed = count - links.len();
    });
    assert!(removed > 0);
    let report = ingest_dir(&namespace, &dir).await;
    let pruned = report.stages.iter().find(|s| s.stage == "prune").unwrap();
    assert_eq!(
        pruned.rows, removed,
        "the removed cross-references, and nothing else"
    );

    let after = run(&service, query, json!({})).await;
    assert_eq!(
        after["data"]["passage"]["text"],
        "The same came for a witness (edited)."
    );
    assert_eq!(
        after["data"]["passage"]["crossReferences"]["totalCount"]
            .as_u64()
            .unwrap(),
        refs_before - removed as u64
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The prune deletes in batches until nothing of another version is left, and counts what
/// it deleted.
#[tokio::test]
async fn the_prune_deletes_in_batches_everything_of_other_versions() {
    let namespace = Namespace::isolated("t_ingest_prune");
    ingest_dir(&namespace, &fixture()).await;
    let graph = targets(&namespace, &clients()).graph;
    let (nodes, edges) = graph_counts(&graph).await.unwrap();
    let total: i64 = nodes.values().chain(edges.values()).sum();
    assert!(total > 1_000, "{total}");
    // Nothing of this version is pruned; everything is, for another one, 7 at a time.
    let report = ingest_dir(&namespace, &fixture()).await;
    assert_eq!(
        report
            .stages
            .iter()
            .find(|s| s.stage == "prune")
            .unwrap()
            .rows,
        0
    );
    let deleted = ingest::prune(&graph, "another-version", 7).await.unwrap();
    assert_eq!(deleted as i64, total);
    let (nodes, edges) = graph_counts(&graph).await.unwrap();
    assert!(
        nodes.values().chain(edges.values()).all(|n| *n == 0),
        "{nodes:?} {edges:?}"
    );
}

const INGEST_COMPLETED: &str =
    "subscription { ingestCompleted { contentVersion completedAt passages } }";

/// The next event of a subscription, as JSON, within `secs` seconds.
async fn next_event(
    stream: &mut futures_util::stream::BoxStream<'static, async_graphql::Response>,
    secs: u64,
) -> serde_json::Value {
    use futures_util::StreamExt;
    let response = tokio::time::timeout(std::time::Duration::from_secs(secs), stream.next())
        .await
        .expect("an event in time")
        .expect("the subscription goes on");
    serde_json::to_value(response).unwrap()
}

/// `ingestCompleted` on `service`, once Redis confirmed its live-event subscription.
async fn ingest_completed(
    service: &ContentService,
    namespace: &Namespace,
    live: &gospelib_kit::live::LiveEvents,
) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
    use futures_util::{FutureExt, StreamExt};
    use gospelib_kit::GraphQlExecutor;
    let mut stream = service.execute_stream(async_graphql::Request::new(INGEST_COMPLETED));
    // The first poll runs the resolver, which starts listening.
    assert!(stream.next().now_or_never().is_none(), "no event yet");
    gospelib_kit::test_stack::eventually("the subscription listens", || async {
        live.is_subscribed(&namespace.ingest_channel())
    })
    .await;
    stream
}

#[tokio::test]
async fn a_finished_ingest_is_announced_to_ingest_completed_subscribers() {
    let namespace = Namespace::isolated("t_ingest_live");
    let clients = clients();
    let service = ContentService::new(namespace.clone(), &clients);
    let mut events = ingest_completed(&service, &namespace, &clients.live).await;
    let report = ingest_dir(&namespace, &fixture()).await;
    let event = next_event(&mut events, 10).await;
    let announced = &event["data"]["ingestCompleted"];
    assert_eq!(
        announced["contentVersion"],
        report.version.as_str(),
        "{event}"
    );
    assert_eq!(announced["passages"], report.nodes["Passage"], "{event}");
    let at = announced["completedAt"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "RFC 3339: {at}"
    );
}

#[tokio::test]
async fn ingest_completed_relays_what_any_process_publishes_on_the_channel() {
    let namespace = Namespace::isolated("t_ingest_live_relay");
    let clients = clients();
    let service = ContentService::new(namespace.clone(), &clients);
    let mut events = ingest_completed(&service, &namespace, &clients.live).await;
    let other_pod = gospelib_kit::live::LiveEvents::new(clients.redis.clone());
    let announcement = json!({
        "contentVersion": "abc123",
        "completedAt": "2026-12-02T10:00:00.000Z",
        "passages": 42
    });
    other_pod
        .publish(&namespace.ingest_channel(), &announcement)
        .await
        .unwrap();
    let event = next_event(&mut events, 5).await;
    assert_eq!(event["data"]["ingestCompleted"], announcement);
}

/// An ingest keys the caches by a version of its own until it is whole (what they held may no
/// longer be what the stores answer); one that fails leaves that version, and the next whole
/// run sets the corpus's version again.
#[tokio::test]
async fn a_failed_ingest_retires_what_the_caches_hold() {
    let namespace = Namespace::isolated("t_ingest_failed");
    let good = ingest_dir(&namespace, &fixture()).await;
    let clients = clients();
    let mut broken = targets(&namespace, &clients);
    // (Port 1: nothing listens there.)
    broken.typesense.base_url = "http://127.0.0.1:1/".parse().unwrap();
    let failed = ingest::ingest(&fixture(), false, &broken).await;
    assert!(failed.is_err(), "{failed:?}");
    let version = || support::content_version(&namespace, &clients);
    let retired = version().await;
    assert!(
        retired.starts_with(&format!("{}-ingesting-", good.version)),
        "{retired}"
    );
    ingest_dir(&namespace, &fixture()).await;
    assert_eq!(version().await, good.version);
}

/// Two runs on one namespace at once (an operator's run during the ingest Job) take turns:
/// neither prunes what the other wrote, and the search alias points at a collection that
/// exists. A run that finds the lease held past its wait gives up, writing nothing.
#[tokio::test]
async fn ingests_of_one_namespace_take_turns() {
    let namespace = Namespace::isolated("t_ingest_turns");
    let clients = clients();
    let targets = targets(&namespace, &clients);
    let corpus = fixture();
    let (a, b) = tokio::join!(
        ingest::ingest(&corpus, false, &targets),
        ingest::ingest(&corpus, false, &targets)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.nodes, b.nodes);
    let (nodes, edges) = graph_counts(&targets.graph).await.unwrap();
    assert_eq!((nodes, edges), (a.nodes.clone(), a.edges.clone()));
    assert!(a.nodes["Passage"] > 0);
    let (target, family) = search_collections(&namespace.alias("passages")).await;
    assert!(family.contains(&target), "{target} in {family:?}");

    hold_as_another_run(&namespace.ingest_lock_key()).await;
    let busy = ingest::ingest_waiting(
        &fixture(),
        false,
        &targets,
        std::time::Duration::from_millis(600),
    )
    .await;
    assert!(matches!(busy, Err(IngestError::Busy(_))), "{busy:?}");
    assert_eq!(
        lease_holder(&namespace.ingest_lock_key()).await.as_deref(),
        Some("another-run"),
        "the other run's lease is left alone"
    );
    forget_lease(&namespace.ingest_lock_key()).await;
}

/// A lease taken by another run while this one holds it (its own expired while Redis was
/// away) tells the run it is lost, at its next renewal; one renewed undisturbed is not lost.
#[tokio::test]
async fn a_lease_taken_by_another_run_is_reported_lost() {
    use gospelib_content::ingest::lock::{IngestLock, LeaseTimes};
    use std::time::Duration;
    let clients = clients();
    let key = Namespace::isolated("t_ingest_lease").ingest_lock_key();
    let times = LeaseTimes {
        lease: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
    };
    let lease = IngestLock::acquire_with(&clients.redis, key.clone(), Duration::ZERO, times)
        .await
        .unwrap();
    // Renewed past its own length: still held.
    let kept = tokio::time::timeout(Duration::from_secs(3), lease.lost()).await;
    assert!(kept.is_err(), "a renewed lease is not lost");

    hold_as_another_run(&key).await;
    tokio::time::timeout(Duration::from_secs(5), lease.lost())
        .await
        .expect("the next renewal finds the lease taken");
    lease.release().await;
    assert_eq!(
        lease_holder(&key).await.as_deref(),
        Some("another-run"),
        "releasing never takes another run's lease"
    );
    forget_lease(&key).await;
}

/// Another run's lease on `key`, as another process would hold it (a minute).
async fn hold_as_another_run(key: &str) {
    let mut redis = lease_connection().await;
    let () = redis::cmd("SET")
        .arg(key)
        .arg("another-run")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// Who holds the lease `key`, if anyone.
async fn lease_holder(key: &str) -> Option<String> {
    let mut redis = lease_connection().await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap()
}

async fn forget_lease(key: &str) {
    let mut redis = lease_connection().await;
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap();
}

async fn lease_connection() -> redis::aio::MultiplexedConnection {
    clients()
        .redis
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

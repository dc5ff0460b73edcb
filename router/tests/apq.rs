//! Automatic persisted queries in the stack's real Redis: unknown hashes, registration, a wrong
//! hash, sharing between two router instances (as between pods), over HTTP by POST and GET, and
//! Redis being down.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_router::apq::{DEFAULT_TTL, Lookup, MAX_STORED_BYTES, PersistedQueries, hash_of};
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use serde_json::{Value, json};
use support::{assert_first_error, demo_router, start_gateway};

const QUERY: &str = "{ topProducts(first: 1) { name } }";

fn redis() -> redis::Client {
    let urls = StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!("these tests need the stack: run scripts/test, or source .stack/run/env\n{error}")
    });
    gospelib_kit::stores::redis_client(&urls.redis).unwrap()
}

/// The router over the demo subgraphs, in process.
fn router() -> Router {
    demo_router()
}

fn service(redis: redis::Client, prefix: &str) -> RouterService {
    RouterService::new(Arc::new(router())).with_persisted_queries(Arc::new(PersistedQueries::new(
        redis,
        prefix,
        DEFAULT_TTL,
    )))
}

/// A prefix of this test run's own, so runs never see each other's entries.
fn prefix(test: &str) -> String {
    format!("gl_test_apq:{test}:{}", std::process::id())
}

async fn call(service: &RouterService, query: &str, hash: &str) -> Value {
    let mut request = async_graphql::Request::new(query);
    request.extensions.insert(
        "persistedQuery".to_owned(),
        async_graphql::Value::from_json(json!({"version": 1, "sha256Hash": hash})).unwrap(),
    );
    service.call(request).await.json()
}

#[tokio::test]
async fn a_hash_is_unknown_until_registered_then_runs_alone_on_any_instance() {
    let prefix = prefix("register");
    let first = service(redis(), &prefix);
    let hash = hash_of(QUERY);

    let unknown = call(&first, "", &hash).await;
    assert_first_error(
        &unknown,
        "PersistedQueryNotFound",
        "PERSISTED_QUERY_NOT_FOUND",
    );

    let registered = call(&first, QUERY, &hash).await;
    assert_eq!(
        registered["data"],
        json!({"topProducts": [{"name": "Table"}]})
    );

    // Another router instance (another pod) shares the store.
    let second = service(redis(), &prefix);
    let by_hash = call(&second, "", &hash.to_uppercase()).await;
    assert_eq!(by_hash["data"], json!({"topProducts": [{"name": "Table"}]}));
}

/// Only what ran is kept: a query that does not validate, or one past the size kept (here a
/// valid one padded with a comment), is answered but not stored, so nobody can fill Redis
/// with documents that never run.
#[tokio::test]
async fn only_queries_that_ran_and_are_not_too_long_are_stored() {
    let service = service(redis(), &prefix("only-ran"));
    let invalid = "{ nonesuch }";
    let refused = call(&service, invalid, &hash_of(invalid)).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "VALIDATION_ERROR"
    );
    let later = call(&service, "", &hash_of(invalid)).await;
    assert_first_error(
        &later,
        "PersistedQueryNotFound",
        "PERSISTED_QUERY_NOT_FOUND",
    );

    let padded = format!("{QUERY}\n# {}", "x".repeat(MAX_STORED_BYTES));
    let ran = call(&service, &padded, &hash_of(&padded)).await;
    assert_eq!(ran["data"], json!({"topProducts": [{"name": "Table"}]}));
    let later = call(&service, "", &hash_of(&padded)).await;
    assert_first_error(
        &later,
        "PersistedQueryNotFound",
        "PERSISTED_QUERY_NOT_FOUND",
    );

    // The same query within the size is kept.
    let kept = format!("{QUERY}\n# a short comment");
    call(&service, &kept, &hash_of(&kept)).await;
    let later = call(&service, "", &hash_of(&kept)).await;
    assert_eq!(later["data"], json!({"topProducts": [{"name": "Table"}]}));
}

#[tokio::test]
async fn a_hash_that_does_not_match_its_query_is_refused() {
    let service = service(redis(), &prefix("mismatch"));
    let wrong = hash_of("{ something else }");
    let response = call(&service, QUERY, &wrong).await;
    assert_first_error(
        &response,
        "provided sha does not match query",
        "INVALID_REQUEST",
    );
    assert!(response.get("data").is_none());
    let response = call(&service, "", "not-a-hash").await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "INVALID_REQUEST"
    );
}

/// An app sending the manifest's ids (`sha256:<hex>`, the digest of the normalized text) to a
/// router whose manifest does not have them yet (trusted documents off or `log`): an id alone
/// is asked for its text, as a hash is; with its text it runs and is kept under that id, so
/// the id alone runs afterwards; another text under it is refused. A prefixed hash of the text
/// itself works as the hash does.
#[tokio::test]
async fn a_trusted_documents_id_is_asked_for_its_text_then_runs_alone() {
    use gospelib_router::trusted_documents::document_id;
    let service = service(redis(), &prefix("document-id"));
    let text = "query Top {\n  topProducts(first: 1) { name }\n}";
    let id = document_id(text).unwrap();
    assert_ne!(id["sha256:".len()..], hash_of(text));
    let alone = call(&service, "", &id).await;
    assert_first_error(
        &alone,
        "PersistedQueryNotFound",
        "PERSISTED_QUERY_NOT_FOUND",
    );
    // Another text under that id is refused.
    let other = call(&service, QUERY, &id).await;
    assert_first_error(
        &other,
        "provided sha does not match query",
        "INVALID_REQUEST",
    );
    let with_text = call(&service, text, &id).await;
    assert_eq!(
        with_text["data"],
        json!({"topProducts": [{"name": "Table"}]})
    );
    let again = call(&service, "", &id).await;
    assert_eq!(again["data"], json!({"topProducts": [{"name": "Table"}]}));

    let other_text = "query Top { topProducts(first: 1) { name } }";
    let prefixed_hash = format!("sha256:{}", hash_of(other_text));
    call(&service, other_text, &prefixed_hash).await;
    let by_hash = call(&service, "", &prefixed_hash).await;
    assert_eq!(by_hash["data"], json!({"topProducts": [{"name": "Table"}]}));
}

/// A text sent under a document id is normalized to compare with it only up to what the
/// store keeps (64 KiB): a longer one (here the same document padded with comments) is
/// refused with a message saying so, without being tokenized; its own sha256 still works.
#[tokio::test]
async fn a_text_past_what_is_stored_is_not_normalized_to_compare_with_a_document_id() {
    use gospelib_router::trusted_documents::document_id;
    let service = service(redis(), &prefix("document-id-long"));
    let padding = "# a comment the normalized text leaves out\n".repeat(MAX_STORED_BYTES / 40);
    let text = format!("{padding}query Top {{ topProducts(first: 1) {{ name }} }}");
    assert!(text.len() > MAX_STORED_BYTES);
    let id = document_id(&text).unwrap();
    let refused = call(&service, &text, &id).await;
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not normalized to compare with a document id"),
        "{refused}"
    );
    assert_eq!(
        refused["errors"][0]["extensions"]["code"],
        "INVALID_REQUEST"
    );
    let by_hash = call(&service, &text, &hash_of(&text)).await;
    assert_eq!(by_hash["data"], json!({"topProducts": [{"name": "Table"}]}));
}

/// A text stored under a hash it does not have (written to the shared Redis by anything but
/// the router) never runs under that hash: the hash is unknown.
#[tokio::test]
async fn a_stored_text_that_does_not_hash_to_its_key_is_unknown() {
    let prefix = prefix("swapped");
    let service = service(redis(), &prefix);
    let hash = hash_of(QUERY);
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(format!("{prefix}:{hash}"))
        .arg("{ topProducts(first: 5) { name price } }")
        .arg("EX")
        .arg(60)
        .query_async(&mut connection)
        .await
        .unwrap();
    let response = call(&service, "", &hash).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{response}"
    );
    assert!(response.get("data").is_none());
}

#[tokio::test]
async fn over_http_by_post_and_get() {
    let service = service(redis(), &prefix("http"));
    let (base, _stop) = start_gateway(Arc::new(service), 1 << 20).await;
    let http = reqwest::Client::new();
    let hash = hash_of(QUERY);
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let response = http
        .post(format!("{base}/graphql"))
        .json(&json!({"extensions": extensions}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "a hash alone is a GraphQL request, not a malformed one"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    http.post(format!("{base}/graphql"))
        .json(&json!({"query": QUERY, "extensions": extensions}))
        .send()
        .await
        .unwrap();
    let body: Value = http
        .get(format!("{base}/graphql"))
        .header("apollo-require-preflight", "true")
        .query(&[("extensions", extensions.to_string())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"], json!({"topProducts": [{"name": "Table"}]}));

    // A mutation registered by POST may not be run by its hash over GET (a link or an image
    // tag could then change data): 405, as for a mutation's text over GET. (The demo schema
    // has no mutation, and only what ran is stored: it is stored as a router whose schema
    // has one would have.)
    let mutation = format!("mutation {{ rename(id: \"{}\") }}", std::process::id());
    let mutation_hash = hash_of(&mutation);
    let mutation_extensions =
        json!({"persistedQuery": {"version": 1, "sha256Hash": mutation_hash}});
    PersistedQueries::new(redis(), &prefix("http"), DEFAULT_TTL)
        .register(&mutation_hash, &mutation)
        .await;
    let response = http
        .get(format!("{base}/graphql"))
        .header("apollo-require-preflight", "true")
        .query(&[("extensions", mutation_extensions.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST");
}

#[tokio::test]
async fn with_redis_down_clients_fall_back_to_full_queries() {
    // (Port 1: nothing listens there, and no other test's server can take it.)
    let down = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let service = service(down, &prefix("down"));
    let hash = hash_of(QUERY);
    let unknown = call(&service, "", &hash).await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    let full = call(&service, QUERY, &hash).await;
    assert_eq!(full["data"], json!({"topProducts": [{"name": "Table"}]}));
}

/// A Redis that accepts connections and never answers costs one bounded attempt: after it the
/// breaker is open, lookups miss at once (the client sends the query) and Redis is not
/// contacted again for a while.
#[tokio::test]
async fn a_redis_that_never_answers_costs_one_bounded_attempt() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    let store = PersistedQueries::new(client, "gl:test:apq", Duration::from_secs(60));
    let extension = json!({"version": 1, "sha256Hash": hash_of(QUERY)});
    let lookups = tokio::time::timeout(Duration::from_secs(20), async {
        let mut found = Vec::new();
        for _ in 0..5 {
            found.push(store.resolve("", &extension).await);
        }
        found
    })
    .await
    .expect("a silent Redis must not hold lookups");
    assert!(lookups.iter().all(|lookup| *lookup == Lookup::NotFound));
    assert_eq!(
        store.redis_attempts(),
        1,
        "the breaker opened after the first"
    );
    held.abort();
}

/// A service whose reader plan (every anonymous caller's) may store `limit` of the
/// `persisted_queries` bucket a minute.
fn storing_at_most(name: &str, limit: u32) -> RouterService {
    use gospelib_router::pipeline::PlanEnforcement;
    use gospelib_router::rate_limit::{RateLimitSettings, RateLimiter};
    let prefix = prefix(name);
    let text = gospelib_kit::plans::BUILT_IN.replacen(
        "persisted_queries = 60,",
        &format!("persisted_queries = {limit},"),
        1,
    );
    assert_ne!(
        text,
        gospelib_kit::plans::BUILT_IN,
        "the reader's limit was set"
    );
    let plans = Arc::new(gospelib_kit::plans::Plans::parse(&text).unwrap());
    let (mut enforcement, _) = PlanEnforcement::start(plans, None);
    enforcement.limiter = Arc::new(RateLimiter::new(
        Some(redis()),
        RateLimitSettings {
            key_prefix: format!("{prefix}:rl"),
            call_timeout: Duration::from_secs(2),
            ..RateLimitSettings::default()
        },
    ));
    let router = router().with_plans(enforcement);
    RouterService::new(Arc::new(router)).with_persisted_queries(Arc::new(PersistedQueries::new(
        redis(),
        &prefix,
        DEFAULT_TTL,
    )))
}

/// Sends each of `queries` with its hash (each runs), then each by its hash alone: found for
/// those `kept`, `PERSISTED_QUERY_NOT_FOUND` for the others.
async fn assert_kept(service: &RouterService, queries: &[String], kept: &[bool]) {
    for query in queries {
        let answer = call(service, query, &hash_of(query)).await;
        assert!(answer["data"]["topProducts"].is_array(), "{answer}");
    }
    for (query, kept) in queries.iter().zip(kept) {
        let by_hash = call(service, "", &hash_of(query)).await;
        if *kept {
            assert!(by_hash["data"]["topProducts"].is_array(), "{by_hash}");
        } else {
            assert_first_error(
                &by_hash,
                "PersistedQueryNotFound",
                "PERSISTED_QUERY_NOT_FOUND",
            );
        }
    }
}

/// Storing a query is a write into the shared Redis (kept a week): each caller may store only
/// so many a minute (`persisted_queries` in the plans); past that the query still runs, and is
/// not kept.
#[tokio::test]
async fn each_caller_stores_only_so_many_queries_a_minute() {
    let service = storing_at_most("limited", 2);
    let queries = (1..=3).map(|n| format!("{{ topProducts(first: {n}) {{ name }} }}"));
    assert_kept(&service, &queries.collect::<Vec<_>>(), &[true, true, false]).await;
}

/// The bucket is charged a request per started KiB of the text stored.
#[tokio::test]
async fn a_stored_query_is_charged_by_its_size() {
    let service = storing_at_most("by-size", 4);
    // Padded with comments, which run as the query they pad: 3 KiB, then 2 KiB (one KiB is
    // left), then a few bytes.
    let padded = |first: u32, kibibytes: usize| {
        let query = format!("{{ topProducts(first: {first}) {{ name }} }}\n#");
        format!("{query}{}", "x".repeat(kibibytes * 1024 - query.len()))
    };
    let queries = [
        padded(1, 3),
        padded(2, 2),
        "{ topProducts(first: 3) { name } }".to_owned(),
    ];
    assert_eq!(queries[0].len(), 3 * 1024);
    assert_kept(&service, &queries, &[true, false, true]).await;
}

//! The entity cache in the stack's real Redis, on really composed subgraphs (products, whose
//! `Product`s reviews resolves as entities): entities fetched once are served from Redis, only
//! the misses are asked for (partial hits keep their errors where they were), an entity with
//! an error is never stored, a new content version or supergraph is never served stale, a
//! subgraph the policy does not name is never cached, Redis being down costs nothing, and the
//! `Cache-Control` each response carries.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_router::entity_cache::{CachePolicy, EntityCache};
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use serde_json::{Value, json};
use support::{SDL, products, reviews};

fn redis() -> redis::Client {
    let urls = StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!("these tests need the stack: run scripts/test, or source .stack/run/env\n{error}")
    });
    gospelib_kit::stores::redis_client(&urls.redis).unwrap()
}

/// The reviews subgraph, recording the `upc` of every representation it is asked for.
struct Recorded {
    inner: Arc<dyn LocalSubgraph>,
    asked: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    /// Number entity errors as the spec's examples do (`_entities.2.reviews`), which
    /// async-graphql 7 does not.
    numbered: bool,
    /// Add an error to the next answer (whose data stays whole).
    spoil_next: Arc<AtomicBool>,
    /// Set this (version key, version) while answering the next request: an ingest beginning
    /// while the fetch runs.
    move_version_next: Arc<Mutex<Option<(String, String)>>>,
}

impl LocalSubgraph for Recorded {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some((key, version)) = self.move_version_next.lock().unwrap().take() {
            let mut connection = redis().get_connection().unwrap();
            redis::cmd("SET")
                .arg(key)
                .arg(version)
                .arg("EX")
                .arg(600)
                .exec(&mut connection)
                .unwrap();
        }
        if let Some(representations) = request["variables"]["representations"].as_array() {
            let mut asked = self.asked.lock().unwrap();
            asked.extend(
                representations
                    .iter()
                    .map(|r| r["upc"].as_str().unwrap_or_default().to_owned()),
            );
        }
        if self.spoil_next.swap(false, Ordering::SeqCst) {
            return Box::pin(async move {
                let mut response = self.inner.execute(request).await;
                response["errors"] = json!([{ "message": "one part failed" }]);
                response
            });
        }
        if !self.numbered {
            return self.inner.execute(request);
        }
        Box::pin(async move {
            let mut response = self.inner.execute(request).await;
            let nulls: Vec<usize> = response["data"]["_entities"]
                .as_array()
                .map(|entities| {
                    (0..entities.len())
                        .filter(|&i| entities[i].is_null())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(errors) = response["errors"].as_array_mut() {
                for (error, index) in errors.iter_mut().zip(nulls) {
                    if let Some(path) = error["path"].as_array_mut() {
                        path.insert(1, json!(index));
                    }
                }
            }
            response
        })
    }
}

/// A router on products and (recorded) reviews, its cache, and what reviews was asked.
struct Setup {
    router: Arc<Router>,
    cache: Arc<EntityCache>,
    asked: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    /// Requests products (the root fields' subgraph) was sent.
    product_requests: Arc<AtomicUsize>,
    spoil_next_product_answer: Arc<AtomicBool>,
    /// What reviews sets while answering its next request.
    move_version_next: Arc<Mutex<Option<(String, String)>>>,
    version_key: String,
    metrics: gospelib_kit::metrics::Metrics,
}

impl Setup {
    fn new(test: &str, policy_of: impl Fn(&str) -> String, sdl: &str) -> Self {
        let version_key = format!("gl_test_entity:{test}:{}:version", std::process::id());
        let policy = Arc::new(CachePolicy::parse(&policy_of(&version_key)).unwrap());
        Self::with_policy(test, policy, sdl, redis(), version_key, false)
    }

    fn with_policy(
        test: &str,
        policy: Arc<CachePolicy>,
        sdl: &str,
        redis: redis::Client,
        version_key: String,
        numbered: bool,
    ) -> Self {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let product_requests = Arc::new(AtomicUsize::new(0));
        let spoil_next_product_answer = Arc::new(AtomicBool::new(false));
        let move_version_next = Arc::new(Mutex::new(None));
        let transport = InProcess::default()
            .with(
                "products",
                Arc::new(Recorded {
                    inner: products(),
                    asked: Arc::default(),
                    requests: product_requests.clone(),
                    numbered: false,
                    spoil_next: spoil_next_product_answer.clone(),
                    move_version_next: Arc::default(),
                }),
            )
            .with(
                "reviews",
                Arc::new(Recorded {
                    inner: reviews(),
                    asked: asked.clone(),
                    requests: requests.clone(),
                    numbered,
                    spoil_next: Arc::default(),
                    move_version_next: move_version_next.clone(),
                }),
            );
        let prefix = format!("gl_test_entity:{test}:{}", std::process::id());
        let metrics = gospelib_kit::metrics::Metrics::new("test");
        let cache = Arc::new(
            EntityCache::new(redis, &prefix, policy.clone()).with_metrics(metrics.clone()),
        );
        let settings = gospelib_router::settings::RouterSettings {
            cache_policy: policy,
            ..Default::default()
        };
        let router = Router::from_settings(
            Supergraph::parse(sdl, None).unwrap(),
            Arc::new(transport),
            &settings,
        )
        .with_entity_cache(cache.clone())
        .with_internal_secret(gospelib_kit::caller::InternalSecret::new(&[7; 32]).unwrap());
        Self {
            router: Arc::new(router),
            cache,
            asked,
            requests,
            product_requests,
            spoil_next_product_answer,
            move_version_next,
            version_key,
            metrics,
        }
    }

    /// Runs `query`; the response body and the upcs reviews was asked for by it.
    async fn run(&self, query: &str) -> (Value, Vec<String>) {
        self.asked.lock().unwrap().clear();
        let response = self
            .router
            .execute(&GraphQlRequest {
                query: query.to_owned(),
                ..Default::default()
            })
            .await;
        let asked = std::mem::take(&mut *self.asked.lock().unwrap());
        (response, asked)
    }

    /// Waits until `count` entries have been stored (stores run in the background).
    async fn stored(&self, count: u64) {
        for _ in 0..200 {
            if self.cache.counts().stores.load(Ordering::SeqCst) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{count} entries were not stored: {}",
            self.cache.counts().stores.load(Ordering::SeqCst)
        );
    }

    fn set_version(&self, version: &str) {
        let mut connection = redis().get_connection().unwrap();
        redis::cmd("SET")
            .arg(&self.version_key)
            .arg(version)
            .arg("EX")
            .arg(600)
            .exec(&mut connection)
            .unwrap();
    }
}

fn reviews_cached(version_key: &str) -> String {
    format!(
        "[subgraphs.products]\nroot_fields = 30\n\n\
         [subgraphs.reviews]\nversion_key = \"{version_key}\"\n\n\
         [subgraphs.reviews.entities]\nProduct = 60\n"
    )
}

const THREE: &str = "{ topProducts(first: 3) { name reviews { body } } }";

fn three_expected() -> Value {
    json!({
        "data": { "topProducts": [
            { "name": "Table", "reviews": [{ "body": "review of 1" }] },
            { "name": "Couch", "reviews": [{ "body": "review of 2" }] },
            { "name": "Chair", "reviews": null }
        ]},
        "errors": [{
            "message": "reviews of product 3 are unavailable",
            "path": ["topProducts", 2, "reviews"],
            "extensions": { "code": "INTERNAL_ERROR" }
        }]
    })
}

fn without_extensions(mut response: Value) -> Value {
    response.as_object_mut().unwrap().remove("extensions");
    response
}

#[tokio::test]
async fn entities_are_fetched_once_and_a_partial_hit_keeps_its_error() {
    let setup = Setup::new("partial", reviews_cached, SDL);
    setup.set_version("v1");
    let (first, asked) = setup.run(THREE).await;
    let first = without_extensions(first);
    assert_eq!(asked, ["1", "2", "3"]);
    assert_eq!(first["data"], three_expected()["data"], "{first:#}");
    assert_eq!(
        first["errors"][0]["path"],
        json!(["topProducts", 2, "reviews"])
    );
    // Products 1 and 2 are stored; product 3 came with an error and is not.
    setup.stored(2).await;

    let (second, asked) = setup.run(THREE).await;
    assert_eq!(
        asked,
        ["3"],
        "only the entity the cache does not hold is asked for"
    );
    assert_eq!(
        without_extensions(second),
        first,
        "the same answer, errors at the same paths"
    );
    assert_eq!(setup.cache.counts().hits.load(Ordering::SeqCst), 2);
    let rendered = setup.metrics.render();
    let count = |result: &str| {
        rendered
            .lines()
            .find(|line| {
                line.starts_with("gospelib_entity_cache_total")
                    && line.contains(&format!("result=\"{result}\""))
                    && line.contains("type=\"Product\"")
            })
            .map(|line| line.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(count("hit").as_deref(), Some("2"), "{rendered}");
    assert_eq!(count("miss").as_deref(), Some("4"), "{rendered}");

    // Everything held: reviews is not asked at all.
    let requests = setup.requests.load(Ordering::SeqCst);
    let (two, asked) = setup
        .run("{ topProducts(first: 2) { name reviews { body } } }")
        .await;
    assert!(asked.is_empty());
    assert_eq!(setup.requests.load(Ordering::SeqCst), requests);
    assert_eq!(
        without_extensions(two),
        json!({ "data": { "topProducts": [
            { "name": "Table", "reviews": [{ "body": "review of 1" }] },
            { "name": "Couch", "reviews": [{ "body": "review of 2" }] }
        ]}})
    );
}

#[tokio::test]
async fn numbered_entity_errors_are_renumbered_among_all_entities() {
    let version_key = format!("gl_test_entity:numbered:{}:version", std::process::id());
    let policy = Arc::new(CachePolicy::parse(&reviews_cached(&version_key)).unwrap());
    let setup = Setup::with_policy("numbered", policy, SDL, redis(), version_key, true);
    setup.set_version("v1");
    let (first, asked) = setup.run(THREE).await;
    assert_eq!(asked, ["1", "2", "3"]);
    assert_eq!(
        first["errors"][0]["path"],
        json!(["topProducts", 2, "reviews"])
    );
    setup.stored(2).await;
    // Reviews is asked for product 3 alone and numbers its error 0: it is still product 3's.
    let (second, asked) = setup.run(THREE).await;
    assert_eq!(asked, ["3"]);
    assert_eq!(without_extensions(second), without_extensions(first));
}

#[tokio::test]
async fn another_selection_is_another_entry() {
    let setup = Setup::new("selection", reviews_cached, SDL);
    setup.set_version("v1");
    setup
        .run("{ topProducts(first: 2) { reviews { body } } }")
        .await;
    setup.stored(2).await;
    // Another selection of the same entities is another fetch document: not served from the
    // entries of the one above.
    let (answer, asked) = setup
        .run("{ topProducts(first: 2) { reviews { __typename } } }")
        .await;
    assert_eq!(asked, ["1", "2"]);
    assert_eq!(
        answer["data"]["topProducts"][0]["reviews"],
        json!([{ "__typename": "Review" }])
    );
}

#[tokio::test]
async fn a_new_content_version_or_supergraph_is_never_served_stale() {
    let setup = Setup::new("stale", reviews_cached, SDL);
    setup.set_version("v1");
    let query = "{ topProducts(first: 2) { reviews { body } } }";
    setup.run(query).await;
    setup.stored(2).await;
    assert!(setup.run(query).await.1.is_empty(), "held at v1");

    // A re-ingest writes a new version: every entry of the old one is a miss.
    setup.set_version("v2");
    assert_eq!(setup.run(query).await.1, ["1", "2"]);
    setup.stored(4).await;
    assert!(setup.run(query).await.1.is_empty(), "held again, at v2");

    // A new supergraph (here the same subgraphs, another version): misses too.
    let changed = format!("{SDL}\n# another version\n");
    setup
        .router
        .replace_supergraph(Supergraph::parse(&changed, None).unwrap());
    assert_eq!(setup.run(query).await.1, ["1", "2"]);
}

/// Entities fetched while an ingest began (the version moved on during the fetch) may come
/// from half-written data: they are not kept under the version read before, which a rollback
/// to the previous corpus would bring back.
#[tokio::test]
async fn what_is_fetched_while_the_version_moves_on_is_not_kept() {
    let setup = Setup::new("moving", reviews_cached, SDL);
    setup.set_version("v1");
    let query = "{ topProducts(first: 2) { reviews { body } } }";
    *setup.move_version_next.lock().unwrap() =
        Some((setup.version_key.clone(), "v2-ingesting-1".to_owned()));
    let (answer, asked) = setup.run(query).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(asked, ["1", "2"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(setup.cache.counts().stores.load(Ordering::SeqCst), 0);

    // Rolled back to v1: fetched again, then kept.
    setup.set_version("v1");
    assert_eq!(setup.run(query).await.1, ["1", "2"]);
    setup.stored(2).await;
    assert!(setup.run(query).await.1.is_empty(), "held at v1");
}

/// A store Redis refuses (here: the version key is not a string, so the store's script
/// fails) costs the stores only: lookups, on their own link, go on.
#[tokio::test]
async fn a_failing_store_does_not_stop_the_lookups() {
    let setup = Setup::new("failing_store", reviews_cached, SDL);
    let mut connection = redis().get_connection().unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&setup.version_key)
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&setup.version_key)
        .arg("not a version")
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg(&setup.version_key)
        .arg(600)
        .query(&mut connection)
        .unwrap();
    let misses = || setup.cache.counts().misses.load(Ordering::SeqCst);
    let query = "{ topProducts(first: 2) { reviews { body } } }";
    setup.run(query).await;
    assert_eq!(misses(), 2);
    // The store runs (and fails) in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 2..=3 {
        let (answer, asked) = setup.run(query).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        assert_eq!(asked, ["1", "2"]);
        assert_eq!(misses(), 2 * round, "still looked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn products_root_cached(version_key: &str) -> String {
    format!(
        "[subgraphs.products]\nversion_key = \"{version_key}\"\nroot_fields = 30\n\
         root_fetches = 60\n"
    )
}

#[tokio::test]
async fn root_fetches_are_kept_whole_by_variables_and_version() {
    let setup = Setup::new("root", products_root_cached, SDL);
    setup.set_version("v1");
    let products = || setup.product_requests.load(Ordering::SeqCst);
    let two = "query Two($n: Int) { topProducts(first: $n) { upc name } }";
    let run = |n: i64| {
        let router = setup.router.clone();
        async move {
            let request = GraphQlRequest {
                query: two.to_owned(),
                variables: json!({ "n": n }).as_object().unwrap().clone(),
                ..Default::default()
            };
            without_extensions(router.execute(&request).await)
        }
    };
    let expected = json!({ "data": { "topProducts": [
        { "upc": "1", "name": "Table" },
        { "upc": "2", "name": "Couch" }
    ]}});
    assert_eq!(run(2).await, expected);
    assert_eq!(products(), 1);
    setup.stored(1).await;

    // Held: the same answer, and products is not asked.
    assert_eq!(run(2).await, expected);
    assert_eq!(products(), 1, "served from the cache");
    assert_eq!(setup.cache.counts().hits.load(Ordering::SeqCst), 1);
    assert!(
        setup
            .metrics
            .render()
            .lines()
            .any(|line| line.starts_with("gospelib_entity_cache_total")
                && line.contains("type=\"(root)\"")
                && line.contains("result=\"hit\"")),
        "root fetches are counted under the type `(root)`"
    );

    // Other variables are another entry.
    let one = run(1).await;
    assert_eq!(
        one["data"]["topProducts"],
        json!([{ "upc": "1", "name": "Table" }])
    );
    assert_eq!(products(), 2);
    // (Stored while v1 is current: a store after the version moved on is refused.)
    setup.stored(2).await;

    // A new content version: the entry of the old one is a miss.
    setup.set_version("v2");
    assert_eq!(run(2).await, expected);
    assert_eq!(products(), 3);
    setup.stored(3).await;
    assert_eq!(run(2).await, expected);
    assert_eq!(products(), 3, "held again, at v2");
}

#[tokio::test]
async fn a_root_answer_with_an_error_is_never_kept() {
    let setup = Setup::new("root_error", products_root_cached, SDL);
    setup.set_version("v1");
    let query = "{ topProducts(first: 1) { name } }";
    setup
        .spoil_next_product_answer
        .store(true, Ordering::SeqCst);
    let (spoiled, _) = setup.run(query).await;
    assert_eq!(
        spoiled["errors"][0]["message"], "one part failed",
        "{spoiled}"
    );
    assert_eq!(spoiled["errors"][0]["extensions"]["code"], "INTERNAL_ERROR");

    // Asked again, products answers whole; that answer is kept, and the error is gone.
    let (whole, _) = setup.run(query).await;
    assert!(whole.get("errors").is_none(), "{whole}");
    assert_eq!(setup.product_requests.load(Ordering::SeqCst), 2);
    setup.stored(1).await;
    let (held, _) = setup.run(query).await;
    assert_eq!(without_extensions(held), without_extensions(whole));
    assert_eq!(setup.product_requests.load(Ordering::SeqCst), 2);
    // By now a store of the spoiled answer, started in the background before the whole
    // one's, would have been counted too.
    assert_eq!(setup.cache.counts().stores.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_subgraph_the_policy_does_not_name_is_never_cached() {
    // The policy names products (its root fetches kept), not reviews.
    let setup = Setup::new("unnamed", products_root_cached, SDL);
    setup.set_version("v1");
    let query = "{ topProducts(first: 2) { reviews { body } } }";
    assert_eq!(setup.run(query).await.1, ["1", "2"]);
    setup.stored(1).await;
    // Reviews is asked again: its answers were neither kept nor looked up. Products' root
    // fetch was (one miss, kept, one hit), so the cache was there to be used.
    assert_eq!(setup.run(query).await.1, ["1", "2"]);
    assert_eq!(setup.product_requests.load(Ordering::SeqCst), 1);
    assert_eq!(setup.cache.counts().misses.load(Ordering::SeqCst), 1);
    assert_eq!(setup.cache.counts().hits.load(Ordering::SeqCst), 1);
    assert_eq!(setup.cache.counts().stores.load(Ordering::SeqCst), 1);
}

fn everything_cached(version_key: &str) -> String {
    format!(
        "{}\n{}",
        products_root_cached(version_key),
        reviews_cached(version_key).replace("[subgraphs.products]\nroot_fields = 30\n", "")
    )
}

/// Runs THREE twice through a router whose cache is at `redis` (which cannot answer): both
/// subgraphs are asked every time and the answer is whole.
async fn answers_without_the_cache(test: &str, redis: redis::Client) {
    let version_key = format!("gl_test_entity:{test}:version");
    let policy = Arc::new(CachePolicy::parse(&everything_cached(&version_key)).unwrap());
    assert!(policy.root_fetch_ttl("products") > 0 && policy.caches_entities_of("reviews"));
    let setup = Setup::with_policy(test, policy, SDL, redis, version_key, false);
    for round in 1..=2 {
        let (answer, asked) = setup.run(THREE).await;
        assert_eq!(asked, ["1", "2", "3"]);
        assert_eq!(without_extensions(answer)["data"], three_expected()["data"]);
        assert_eq!(setup.product_requests.load(Ordering::SeqCst), round);
    }
}

#[tokio::test]
async fn redis_down_costs_nothing() {
    // Nothing listens on port 1.
    answers_without_the_cache("down", redis::Client::open("redis://127.0.0.1:1/").unwrap()).await;
}

#[tokio::test]
async fn a_redis_that_hangs_costs_a_bounded_wait() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    let redis = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        answers_without_the_cache("hangs", redis),
    )
    .await;
    held.abort();
    assert!(answered.is_ok(), "a hanging cache held the answers back");
}

#[tokio::test]
async fn responses_say_how_long_they_may_be_kept() {
    let setup = Setup::new("control", reviews_cached, SDL);
    let service = RouterService::new(setup.router.clone());
    let header_of = |query: &str, header: &'static str| {
        let service = &service;
        let query = query.to_owned();
        async move {
            let response = service.call(async_graphql::Request::new(query)).await;
            response
                .headers
                .iter()
                .find(|(name, _)| name == header)
                .map(|(_, value)| value.to_str().unwrap().to_owned())
        }
    };
    let cache_control = |query: &str| header_of(query, "cache-control");
    // Products' root fields (30 s) and reviews' entities (60 s): the shorter.
    let kept = "{ topProducts(first: 2) { name reviews { body } } }";
    assert_eq!(
        cache_control(kept).await.as_deref(),
        Some("public, max-age=30")
    );
    // Kept by its URL, it varies by its media type and by who asks (a partner's key, a token).
    assert_eq!(
        header_of(kept, "vary").await.as_deref(),
        Some("accept, authorization, x-api-key")
    );
    assert_eq!(header_of(THREE, "vary").await, None, "not kept: no vary");
    // A signed-in caller's: only for that caller's client.
    let signed = setup
        .router
        .respond(&GraphQlRequest {
            query: "{ topProducts(first: 2) { name reviews { body } } }".to_owned(),
            caller: gospelib_kit::caller::Caller::user(uuid::Uuid::from_u128(7)),
            ..Default::default()
        })
        .await;
    assert_eq!(
        signed.cache_control.header_value(),
        "private, max-age=30",
        "{:?}",
        signed.errors
    );
    // An error: not to be kept.
    assert_eq!(cache_control(THREE).await.as_deref(), Some("no-store"));
    // Nothing fetched (the router answers introspection): nothing says it may be kept.
    assert_eq!(
        cache_control("{ __schema { queryType { name } } }")
            .await
            .as_deref(),
        Some("no-store")
    );

    // Reviews not in the policy: what it adds may not be kept, so neither may the response.
    let unnamed = Setup::new(
        "control_unnamed",
        |_| "[subgraphs.products]\nroot_fields = 30\n".to_owned(),
        SDL,
    );
    let service = RouterService::new(unnamed.router.clone());
    let response = service
        .call(async_graphql::Request::new(
            "{ topProducts(first: 2) { reviews { body } } }",
        ))
        .await;
    let header = response
        .headers
        .iter()
        .find(|(name, _)| name == "cache-control")
        .map(|(_, value)| value.to_str().unwrap().to_owned());
    assert_eq!(header.as_deref(), Some("no-store"));
    let response = service
        .call(async_graphql::Request::new(
            "{ topProducts(first: 2) { name } }",
        ))
        .await;
    let header = response
        .headers
        .iter()
        .find(|(name, _)| name == "cache-control")
        .map(|(_, value)| value.to_str().unwrap().to_owned());
    assert_eq!(header.as_deref(), Some("public, max-age=30"));
}

/// Stores in flight are bounded (a Redis slow but not failing would otherwise gather a task,
/// holding its entries, per miss): past the bound a store is dropped.
#[tokio::test]
async fn stores_in_flight_are_bounded() {
    let metrics = gospelib_kit::metrics::Metrics::new("test");
    let cache = Arc::new(
        EntityCache::new(
            redis(),
            &format!("gl:test-stores-{}", std::process::id()),
            Arc::new(CachePolicy::built_in()),
        )
        .with_metrics(metrics.clone()),
    );
    let version = gospelib_router::entity_cache::Version {
        key: format!("gl:test-stores-version-{}", std::process::id()),
        value: "1".to_owned(),
    };
    let data: gospelib_router::value::Value =
        serde_json::from_str(r#"{"topProducts": [{"upc": "1"}]}"#).unwrap();
    let asked = 200;
    for n in 0..asked {
        cache.store_root(version.clone(), format!("key-{n}"), &data, 60);
    }
    let dropped = cache.counts().stores_dropped.load(Ordering::SeqCst);
    let bound = gospelib_router::entity_cache::STORES_IN_FLIGHT as u64;
    assert_eq!(dropped, asked - bound);
    // Exported, for the operator who sees the cache's hit rate fall.
    let line = format!(
        r#"gospelib_entity_cache_stores_dropped_total{{service="test"}} {}"#,
        asked - bound
    );
    assert!(metrics.render().contains(&line), "{line}");
    // Each gives its place back once Redis answered (within its second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in 0..bound {
        cache.store_root(version.clone(), format!("again-{n}"), &data, 60);
    }
    assert_eq!(
        cache.counts().stores_dropped.load(Ordering::SeqCst),
        asked - bound
    );
}

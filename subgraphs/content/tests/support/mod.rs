//! Shared by the content tests: the stack's clients, the committed fixture ingested into a
//! namespace of the test's own, and GraphQL requests run against the service.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gospelib_content::graph::Graph;
use gospelib_content::ingest::{self, IngestReport, Targets};
use gospelib_content::namespace::Namespace;
use gospelib_content::schema::ContentService;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::config::{ConfigReader, Env, StoreUrls};
use gospelib_kit::stores::StoreClients;
use serde_json::Value;

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixture")
}

pub fn urls() -> StoreUrls {
    let env = Env::from_process();
    let mut reader = ConfigReader::new(&env);
    let urls = StoreUrls::read(&mut reader);
    if let Err(error) = reader.finish() {
        panic!(
            "these tests need the stack: run scripts/test, or `scripts/stack up` and `source .stack/run/env`\n{error}"
        );
    }
    urls.unwrap()
}

pub fn clients() -> StoreClients {
    StoreClients::new(&urls()).unwrap()
}

pub fn targets(namespace: &Namespace, clients: &StoreClients) -> Targets {
    Targets {
        namespace: namespace.clone(),
        graph: Graph::new(&clients.falkordb_url, &namespace.graph),
        typesense: clients.typesense.clone(),
        redis: clients.redis.clone(),
    }
}

pub async fn ingest_dir(namespace: &Namespace, dir: &Path) -> IngestReport {
    ingest::ingest(dir, false, &targets(namespace, &clients()))
        .await
        .unwrap()
}

/// Ingests the fixture into `namespace` once per test binary.
pub async fn fixture_namespace(name: &str) -> Namespace {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let namespace = Namespace::isolated(name);
    DONE.get_or_init(|| async {
        ingest_dir(&namespace, &fixture()).await;
    })
    .await;
    namespace
}

/// Runs a GraphQL request and returns the response as JSON.
pub async fn run(service: &ContentService, query: &str, variables: Value) -> Value {
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(variables));
    serde_json::to_value(service.execute(request).await).unwrap()
}

/// The `extensions.code` of each error, in order.
pub fn codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["extensions"]["code"]
                .as_str()
                .unwrap_or("NONE")
                .to_owned()
        })
        .collect()
}

/// Points the namespace's caches at a fresh content version, so the next reads are cold.
pub async fn cold_cache(namespace: &Namespace) {
    let mut redis = clients()
        .redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let version = format!("cold-{}", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("SET")
        .arg(namespace.version_key())
        .arg(version)
        .query_async(&mut redis)
        .await
        .unwrap();
}

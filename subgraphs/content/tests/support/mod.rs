//! Shared by the content tests: the stack's clients, the committed fixture ingested into a
//! namespace of the test's own, and GraphQL requests run against the service.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gospelib_content::graph::Graph;
use gospelib_content::ingest::{self, IngestReport, Targets};
use gospelib_content::namespace::Namespace;
use gospelib_content::schema::ContentService;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::stores::StoreClients;
use serde_json::Value;

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixture")
}

pub fn urls() -> StoreUrls {
    StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!(
            "these tests need the stack: run scripts/test, or `scripts/stack up` and `source .stack/run/env`\n{error}"
        )
    })
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
        replica_wait: ingest::REPLICA_WAIT,
    }
}

pub async fn ingest_dir(namespace: &Namespace, dir: &Path) -> IngestReport {
    ingest::ingest(dir, false, &targets(namespace, &clients()))
        .await
        .unwrap()
}

/// The content version `namespace`'s caches are keyed by now, as Redis holds it.
pub async fn content_version(namespace: &Namespace, clients: &StoreClients) -> String {
    let mut redis = clients
        .redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(namespace.version_key())
        .query_async::<String>(&mut redis)
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

/// Runs a GraphQL request as a caller entitled to everything content serves (the router's
/// signed context, as a Scholar's) and returns the response as JSON.
pub async fn run(service: &ContentService, query: &str, variables: Value) -> Value {
    let scholar = gospelib_kit::caller::Caller {
        scopes: vec![
            gospelib_content::schema::INTERLINEAR.to_owned(),
            gospelib_content::schema::GRAPH_EXPLORER.to_owned(),
        ],
        ..gospelib_kit::caller::Caller::user(uuid::Uuid::new_v4())
    };
    run_as(service, Some(scholar), query, variables).await
}

/// Runs a GraphQL request as `caller` (anonymous: `None`) and returns the response as JSON.
pub async fn run_as(
    service: &ContentService,
    caller: Option<gospelib_kit::caller::Caller>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(variables));
    if let Some(caller) = caller {
        request = request.data(caller);
    }
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

/// Copies a folder tree (a scratch copy of the fixture to corrupt or edit).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rewrites a JSON file through `edit`.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string(&value).unwrap()).unwrap();
}

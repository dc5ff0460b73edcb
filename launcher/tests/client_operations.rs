//! The apps' and partners' real operations (`client-tests/operations/`), each with its
//! `<name>.variables.json`, run through the router over the committed supergraph against the
//! content subgraph on the fixture corpus (ingested into a namespace of this test's own) and the
//! ai subgraph reading it (extractive provider). Every operation must answer without errors and with data for each root field, asked by a
//! subscriber whose plan unlocks every feature (the interlinear and the explorer are gated).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gospelib_content::graph::Graph;
use gospelib_content::ingest::{Targets, ingest};
use gospelib_content::namespace::Namespace;
use gospelib_kit::caller::{Caller, InternalSecret, user_id_for_clerk};
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::stores::StoreClients;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess};
use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn operation_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            operation_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "graphql") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_client_operation_answers_through_the_router() {
    let urls = StoreUrls::from_env(&Env::from_process())
        .expect("these tests need the stack: run scripts/test, or source .stack/run/env");
    let clients = StoreClients::new(&urls).unwrap();
    let namespace = Namespace::isolated("client_ops");
    let targets = Targets {
        namespace: namespace.clone(),
        graph: Graph::new(&clients.falkordb_url, &namespace.graph),
        typesense: clients.typesense.clone(),
        redis: clients.redis.clone(),
    };
    let fixture = repository().join("subgraphs/content/fixture");
    ingest(&fixture, false, &targets).await.unwrap();
    let (content, _) = gospelib_content::schema::subgraph(namespace, &clients);
    // The assistant (extractive provider) reading the same content.
    let assistant = gospelib_ai::assistant::Assistant::new(
        Arc::new(gospelib_ai::content::InProcess(content.executor.clone())),
        None,
        None,
    );
    let ai = Arc::new(gospelib_ai::AiService::new(assistant));

    let sdl = std::fs::read_to_string(repository().join("schema/supergraph.graphql")).unwrap();
    let router = Router::new(
        Supergraph::parse(&sdl, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("content", Arc::new(ExecutorSubgraph(content.executor)))
                .with("ai", Arc::new(ExecutorSubgraph(ai))),
        ),
    )
    .with_internal_secret(InternalSecret::new(&[7; 32]).unwrap());
    let plans = gospelib_kit::plans::Plans::built_in();
    let subscriber = Caller {
        user_id: Some(user_id_for_clerk("user_client_operations")),
        plan: Some("academic".to_owned()),
        scopes: plans.plans["academic"].entitlements.clone(),
        ..Caller::default()
    };

    let mut files = Vec::new();
    operation_files(&repository().join("client-tests/operations"), &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let query = std::fs::read_to_string(&file).unwrap();
        let variables_file = file.with_extension("variables.json");
        let variables: Value = std::fs::read_to_string(&variables_file)
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or_else(|_| panic!("{} has no variables file", file.display()));
        let answer = router
            .execute(&GraphQlRequest {
                query,
                operation_name: None,
                variables: variables.as_object().unwrap().clone(),
                caller: subscriber.clone(),
                ..Default::default()
            })
            .await;
        assert!(
            answer.get("errors").is_none(),
            "{}: {answer}",
            file.display()
        );
        let data = answer["data"].as_object().unwrap();
        for (field, value) in data {
            assert!(
                !value.is_null(),
                "{}: {field} is null: {answer}",
                file.display()
            );
        }
    }
}

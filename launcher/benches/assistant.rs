//! The study assistant through the router with the extractive provider: `explainPassage`,
//! `studyQuestions` and `suggestConnections` on every verse of Genesis 1, John 1 and 3 and 1 Nephi 3 of the
//! fixture corpus (ingested into a namespace of its own), cold (the answer cache empty: the
//! context gathered from content, the answer composed) and warm (the same questions again,
//! answered from the Redis cache). Prints p50, p99 and max of each, and the size of the
//! context a vendor would be given per question (the prompt's material, in characters and in
//! tokens estimated at four characters each).
//!
//! The router, content and ai run in this process as `gospelib serve` runs them in Phase 1; the
//! stores are the stack's servers. `cargo bench -p gospelib --bench assistant` (with the
//! stack's variables).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_ai::AiService;
use gospelib_ai::assistant::Assistant;
use gospelib_ai::cache::AnswerCache;
use gospelib_content::graph::Graph;
use gospelib_content::ingest::{Targets, ingest};
use gospelib_content::namespace::Namespace;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{Caller, CallerGuard, InternalSecret, user_id_for_clerk};
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::stores::StoreClients;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess};
use serde_json::Value;

// The allocator `gospelib` itself runs with.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what:<34} n={:<5} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

async fn ask(router: &Router, caller: &Caller, query: &str) -> Value {
    router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            caller: caller.clone(),
            ..Default::default()
        })
        .await
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let urls = StoreUrls::from_env(&Env::from_process())
        .expect("the bench needs the stack: source .stack/run/env");
    let clients = StoreClients::new(&urls).unwrap();
    let namespace = Namespace::isolated("ai_bench");
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ingest(
        &repository.join("subgraphs/content/fixture"),
        false,
        &Targets {
            namespace: namespace.clone(),
            graph: Graph::new(&clients.falkordb_url, &namespace.graph),
            typesense: clients.typesense.clone(),
            redis: clients.redis.clone(),
            replica_wait: gospelib_content::ingest::REPLICA_WAIT,
        },
    )
    .await
    .unwrap();
    let (content, _) = gospelib_content::schema::subgraph(namespace, &clients);
    let cache = AnswerCache::new(
        clients.redis.clone(),
        format!("bench{}", uuid::Uuid::new_v4().simple()),
    );
    let source = Arc::new(gospelib_ai::content::InProcess(content.executor.clone()));
    let assistant = Assistant::new(source.clone(), None, Some(cache));
    let ai = Arc::new(AiService::new(assistant));
    let secret = InternalSecret::new(&[9; 32]).unwrap();
    let guarded = |name: &str, executor: Arc<dyn GraphQlExecutor>| {
        Arc::new(ExecutorSubgraph(Arc::new(CallerGuard::new(
            executor,
            secret.caller_key(name),
            NonceLedger::new(clients.redis.clone(), "test"),
        ))))
    };
    let transport = InProcess::default()
        .with("content", guarded("content", content.executor))
        .with("ai", guarded("ai", ai));
    let sdl = std::fs::read_to_string(repository.join("schema/supergraph.graphql")).unwrap();
    let router = Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport))
        .with_internal_secret(secret);
    let caller = Caller {
        scopes: vec!["ai_features".to_owned()],
        ..Caller::user(user_id_for_clerk("user_ai_bench"))
    };

    let mut ids = Vec::new();
    for (book, number) in [("gen", 1), ("john", 1), ("john", 3), ("1-ne", 3)] {
        let verses = ask(
            &router,
            &caller,
            &format!(r#"{{ chapter(bookId: "{book}", number: {number}) {{ verses {{ id }} }} }}"#),
        )
        .await;
        for verse in verses["data"]["chapter"]["verses"].as_array().unwrap() {
            ids.push(verse["id"].as_str().unwrap().to_owned());
        }
    }
    println!(
        "{} verses (Genesis 1, John 1 and 3, 1 Nephi 3 of the fixture corpus)",
        ids.len()
    );

    // The context each question is drawn from, as a vendor would be given it.
    let mut sizes = Vec::new();
    for id in &ids {
        let context = gospelib_ai::content::gather(source.as_ref(), id)
            .await
            .unwrap()
            .expect("a fixture verse");
        sizes.push(
            gospelib_ai::llm::prompts::material(&context)
                .chars()
                .count(),
        );
    }
    sizes.sort_unstable();
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    println!(
        "context per question: mean {mean} chars (~{} tokens), p99 {} chars (~{} tokens), max {} chars (~{} tokens)",
        mean / 4,
        sizes[(sizes.len() - 1) * 99 / 100],
        sizes[(sizes.len() - 1) * 99 / 100] / 4,
        sizes.last().unwrap(),
        sizes.last().unwrap() / 4
    );

    let questions: [(&str, &str); 3] = [
        (
            "explainPassage",
            "{ explainPassage(id: \"ID\") { text provider citations { __typename ... on Passage { reference } ... on LexiconEntry { lemma } ... on Topic { name } } } }",
        ),
        (
            "studyQuestions",
            "{ studyQuestions(id: \"ID\", count: 5) { text citations { __typename ... on Passage { reference } } } }",
        ),
        (
            "suggestConnections",
            "{ suggestConnections(id: \"ID\") { reason passage { reference text } } }",
        ),
    ];
    for (name, template) in questions {
        for round in ["cold", "warm"] {
            let mut times = Vec::new();
            for id in &ids {
                let query = template.replace("ID", id);
                let started = Instant::now();
                let answer = ask(&router, &caller, &query).await;
                times.push(started.elapsed());
                assert!(answer.get("errors").is_none(), "{answer}");
            }
            report(&format!("{name} {round}"), times);
        }
    }
}

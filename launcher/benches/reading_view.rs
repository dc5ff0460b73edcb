//! The reading view through the router: Psalm 119 (176 verses) with the signed-in caller's own
//! highlights and notes, as the apps ask for it, against the real stack and the full corpus
//! (production namespace; `scripts/run` or `scripts/bench` import and ingest it first).
//!
//! The router, the content subgraph and the study subgraph run in this process as `gospelib
//! serve` runs them in Phase 1 (in-process transport, every subgraph behind the caller guard,
//! the caller's context signed into each fetch); the stores are the stack's servers. A fresh
//! reader gets 40 highlights and 12 notes (some spanning several verses) in Psalm 119, then the
//! view is asked warm (content from its Redis cache) 2,000 times. Prints p50, p99 and max, and
//! per request: the study subgraph's SQL statements and content's FalkorDB queries.
//!
//! Then the reader's notes page (`me { notes, highlights }` with each one's verses: study
//! answers passage references, content resolves them as entities) with the router's entity
//! cache off and on: latency and the cache's hit rate.
//!
//! `cargo bench -p gospelib --bench reading_view` (with the stack's variables).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_content::namespace::Namespace;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{Caller, CallerGuard, InternalSecret, user_id_for_clerk};
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::stores::StoreClients;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess};
use gospelib_study::{FalkorCatalog, StudyService};
use serde_json::{Value, json};

// The allocator `gospelib` itself runs with.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const WARMUP: usize = 200;
const RUNS: usize = 2_000;

/// What the app's reading view asks for a chapter, signed in.
const READING_VIEW: &str = r#"query ReadingView {
  chapter(bookId: "ps", number: 119) {
    reference
    verses {
      id verse text
      myHighlights { id color }
      myNotes { id text version range { startId endId } }
    }
  }
}"#;

/// The reader's notes page: their notes and highlights with the verses they are on.
const NOTES_PAGE: &str = r#"query NotesPage {
  me {
    notes(first: 20) { nodes { id text range { start { id reference text } end { id reference text } } } }
    highlights(first: 50) { nodes { id color passage { id reference text } } }
  }
}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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

/// The reader's highlights and notes in Psalm 119, made through the router.
async fn annotate(router: &Router, reader: &Caller) {
    const COLORS: [&str; 4] = ["FAITH", "REPENTANCE", "PERSONAL_YELLOW", "PERSONAL_BLUE"];
    for (index, verse) in (1..=176).step_by(4).take(40).enumerate() {
        let color = COLORS[index % COLORS.len()];
        let created = ask(
            router,
            reader,
            &format!(
                r#"mutation {{ createHighlight(input: {{ passageId: "ps.119.{verse}", color: {color} }}) {{ id }} }}"#
            ),
        )
        .await;
        assert!(created.get("errors").is_none(), "{created}");
    }
    for (start, end) in (1..=176)
        .step_by(15)
        .map(|start| (start, (start + 3).min(176)))
    {
        let text = format!("On verses {start} to {end}: thy word is a lamp unto my feet.");
        let created = ask(
            router,
            reader,
            &format!(
                r#"mutation {{ createNote(input: {{ range: {{ start: "ps.119.{start}", end: "ps.119.{end}" }}, body: {{ type: "doc" }}, text: "{text}" }}) {{ id }} }}"#
            ),
        )
        .await;
        assert!(created.get("errors").is_none(), "{created}");
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let urls = StoreUrls::from_env(&Env::from_process())
            .expect("the stack's variables: source .stack/run/env (scripts/stack up)");
        let clients = StoreClients::new(&urls).unwrap();
        gospelib_kit::migrations::migrate(&clients.postgres)
            .await
            .unwrap();
        let namespace = Namespace::production();
        let secret = InternalSecret::new(&[7; 32]).unwrap();
        let (content, content_service) =
            gospelib_content::schema::subgraph(namespace.clone(), &clients);
        let catalog = FalkorCatalog::new(
            &clients.falkordb_url,
            &namespace.graph,
            Duration::from_secs(2),
        );
        let study = Arc::new(StudyService::new(clients.postgres.clone(), Arc::new(catalog)));
        let guarded = |name: &str, executor: Arc<dyn GraphQlExecutor>| {
            Arc::new(ExecutorSubgraph(Arc::new(CallerGuard::new(
                executor,
                secret.caller_key(name),
                NonceLedger::new(clients.redis.clone(), "test"),
            ))))
        };
        let accounts = gospelib_accounts::schema::subgraph(&clients);
        let transport = Arc::new(
            InProcess::default()
                .with("content", guarded("content", content.executor))
                .with("study", guarded("study", study.clone()))
                .with("accounts", guarded("accounts", accounts.executor)),
        );
        let sdl = include_str!("../../schema/supergraph.graphql");
        let router = Router::new(Supergraph::parse(sdl, None).unwrap(), transport.clone())
            .with_internal_secret(secret.clone());
        let policy = Arc::new(gospelib_router::entity_cache::CachePolicy::built_in());
        let entity_cache = Arc::new(gospelib_router::entity_cache::EntityCache::new(
            clients.redis.clone(),
            &format!("gl_bench_entity:{}", std::process::id()),
            policy.clone(),
        ));
        let cached_router = Router::from_settings(
            Supergraph::parse(sdl, None).unwrap(),
            transport,
            &gospelib_router::settings::RouterSettings {
                cache_policy: policy,
                ..Default::default()
            },
        )
        .with_internal_secret(secret.clone())
        .with_entity_cache(entity_cache.clone());

        let clerk_id = format!("user_bench_{}", uuid::Uuid::new_v4().simple());
        let reader = Caller::user(user_id_for_clerk(&clerk_id));
        sqlx::query("INSERT INTO accounts.users (id, clerk_id, email) VALUES ($1, $2, $3)")
            .bind(reader.user_id.unwrap())
            .bind(&clerk_id)
            .bind(format!("{clerk_id}@example.com"))
            .execute(&clients.postgres)
            .await
            .unwrap();
        let probe = ask(&router, &reader, READING_VIEW).await;
        let verses = probe["data"]["chapter"]["verses"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(
            verses, 176,
            "Psalm 119 is not in the graph: import and ingest the full corpus first \
             (scripts/run or scripts/bench)\n{probe}"
        );
        annotate(&router, &reader).await;
        let view = ask(&router, &reader, READING_VIEW).await;
        assert!(view.get("errors").is_none(), "{view}");
        let verses = view["data"]["chapter"]["verses"].as_array().unwrap();
        let highlighted = verses
            .iter()
            .filter(|verse| verse["myHighlights"] != json!([]))
            .count();
        let noted = verses
            .iter()
            .filter(|verse| verse["myNotes"] != json!([]))
            .count();
        println!(
            "reading view: Psalm 119, 176 verses, {highlighted} highlighted, {noted} under a note, {} bytes",
            view.to_string().len()
        );

        // The same view anonymous (study answers empty lists without SQL), and the chapter
        // alone (content only): what the reader's own data adds.
        let chapter_only = READING_VIEW
            .replace("myHighlights { id color }", "")
            .replace("myNotes { id text version range { startId endId } }", "");
        let runs = [
            ("signed in, with highlights and notes", &reader, READING_VIEW),
            ("anonymous, the same query", &Caller::anonymous(), READING_VIEW),
            ("signed in, the chapter alone", &reader, chapter_only.as_str()),
        ];
        // The study subgraph alone, as the router asks it (its `_entities` for the 176 verses),
        // without the router or the caller guard: the rest of the first figure is the router's
        // and content's.
        let entities = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Passage { \
            myHighlights { id color } myNotes { id text version range { startId endId } } } } }";
        let representations: Vec<Value> = (1..=176)
            .map(|verse| json!({"__typename": "Passage", "id": format!("ps.119.{verse}")}))
            .collect();
        let variables = json!({ "r": representations });
        let study_alone = || {
            let request = async_graphql::Request::new(entities)
                .variables(async_graphql::Variables::from_json(variables.clone()))
                .data(reader.clone());
            study.execute(request)
        };
        for _ in 0..WARMUP {
            study_alone().await;
        }
        let mut samples = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            let answer = study_alone().await;
            samples.push(started.elapsed());
            assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        }
        samples.sort();
        println!(
            "warm, one at a time, the study subgraph's _entities alone: n={RUNS} p50={:.3} ms p99={:.3} ms",
            percentile(&samples, 0.50).as_secs_f64() * 1000.0,
            percentile(&samples, 0.99).as_secs_f64() * 1000.0,
        );
        for (name, caller, query) in runs {
            for _ in 0..WARMUP {
                ask(&router, caller, query).await;
            }
            let (sql_before, graph_before) =
                (study.queries_run(), content_service.graph_queries());
            let mut samples = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let started = Instant::now();
                let answer = ask(&router, caller, query).await;
                samples.push(started.elapsed());
                assert!(answer.get("errors").is_none(), "{answer}");
            }
            let sql = (study.queries_run() - sql_before) as f64 / RUNS as f64;
            let graph = (content_service.graph_queries() - graph_before) as f64 / RUNS as f64;
            samples.sort();
            let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
            println!(
                "warm, one at a time, {name}: n={RUNS} p50={:.3} ms p99={:.3} ms max={:.3} ms; \
                 per request: {sql:.2} study SQL statements, {graph:.2} FalkorDB queries",
                ms(percentile(&samples, 0.50)),
                ms(percentile(&samples, 0.99)),
                ms(*samples.last().unwrap()),
            );
        }

        // The notes page, entity cache off then on.
        let page = ask(&router, &reader, NOTES_PAGE).await;
        assert!(page.get("errors").is_none(), "{page}");
        let notes = page["data"]["me"]["notes"]["nodes"]
            .as_array()
            .map_or(0, Vec::len);
        let highlights = page["data"]["me"]["highlights"]["nodes"]
            .as_array()
            .map_or(0, Vec::len);
        println!("notes page: {notes} notes and {highlights} highlights, each with its verse");
        for (name, router) in [
            ("entity cache off", &router),
            ("entity cache on", &cached_router),
        ] {
            for _ in 0..WARMUP {
                ask(router, &reader, NOTES_PAGE).await;
            }
            let counts = entity_cache.counts();
            let ordering = std::sync::atomic::Ordering::Relaxed;
            let (hits_before, misses_before) =
                (counts.hits.load(ordering), counts.misses.load(ordering));
            let graph_before = content_service.graph_queries();
            let mut samples = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let started = Instant::now();
                let answer = ask(router, &reader, NOTES_PAGE).await;
                samples.push(started.elapsed());
                assert_eq!(answer, page);
            }
            let hits = counts.hits.load(ordering) - hits_before;
            let misses = counts.misses.load(ordering) - misses_before;
            let graph = (content_service.graph_queries() - graph_before) as f64 / RUNS as f64;
            samples.sort();
            let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
            let rate = if hits + misses == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", 100.0 * hits as f64 / (hits + misses) as f64)
            };
            println!(
                "warm, one at a time, notes page, {name}: n={RUNS} p50={:.3} ms p99={:.3} ms \
                 max={:.3} ms; entity cache hit rate {rate} ({hits} hits, {misses} misses); \
                 {graph:.2} FalkorDB queries per request",
                ms(percentile(&samples, 0.50)),
                ms(percentile(&samples, 0.99)),
                ms(*samples.last().unwrap()),
            );
        }
    });
}

//! The study assistant (the ai subgraph) end to end:
//! - through the router in process, with content on the fixture corpus (its own namespace) and
//!   ai reading it through content's API: answers from the extractive provider whose
//!   citations resolve, through federation, into content's passages, lexicon entries and
//!   topics; anonymous callers, bad arguments and unknown passages refused with their codes; a repeated question
//!   answered from the Redis cache; with a vendor (a local server speaking Anthropic's
//!   Messages API): its answer served with the citations it invented dropped and counted, and a
//!   malformed reply answered by the extractive provider instead, kept briefly; a long answer
//!   deferred (`@defer`) while the rest of the page comes first;
//! - content reached over HTTP (Phase 2: `gospelib serve --only content` in another process):
//!   an unknown passage is none, a malformed id the client's error, a dead endpoint content
//!   unavailable;
//! - on `gospelib serve` with the real stack: a Reader (signed in, no trial) gets `FORBIDDEN`,
//!   uncharged, and once a Scholar (the trial a Clerk sign-up starts) is
//!   counted against the plan's AI quota per hour: ten aliased questions in one operation
//!   count ten, and the 51st question is `RATE_LIMITED`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gospelib_ai::AiService;
use gospelib_ai::assistant::Assistant;
use gospelib_ai::budget::VendorBudget;
use gospelib_ai::cache::AnswerCache;
use gospelib_ai::content::InProcess;
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
use gospelib_router::transport::{ExecutorSubgraph, InProcess as RouterInProcess};
use serde_json::{Value, json};
use support::clerk::{
    AUDIENCE, Client, ISSUER, eventually, jwks_server, session_token, unique, user_created,
};
use support::serve_with;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Setup {
    router: Router,
    ai: Arc<AiService>,
    metrics: gospelib_kit::metrics::Metrics,
}

async fn setup() -> Setup {
    setup_with(None).await
}

async fn setup_with(llm: Option<Arc<dyn gospelib_ai::llm::LlmClient>>) -> Setup {
    setup_with_deadline(llm, gospelib_ai::assistant::DEFAULT_VENDOR_DEADLINE, None).await
}

/// The assistant with `llm`, giving it `vendor_deadline` an answer, and at most
/// `daily_vendor_questions` (none: uncounted).
async fn setup_with_deadline(
    llm: Option<Arc<dyn gospelib_ai::llm::LlmClient>>,
    vendor_deadline: Duration,
    daily_vendor_questions: Option<u64>,
) -> Setup {
    setup_with_slow_first_read(llm, vendor_deadline, daily_vendor_questions, Duration::ZERO).await
}

/// A content source whose first read takes `delay` longer (a reader whose context read was
/// slow); the reads after it do not.
struct SlowFirstRead {
    inner: InProcess,
    delay: std::sync::Mutex<Option<Duration>>,
}

impl gospelib_ai::content::ContentSource for SlowFirstRead {
    fn run(
        &self,
        query: &'static str,
        variables: Value,
    ) -> gospelib_kit::stores::BoxFuture<'_, Result<Value, String>> {
        let delay = self.delay.lock().unwrap().take();
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            self.inner.run(query, variables).await
        })
    }
}

/// [`setup_with_deadline`], the assistant's first content read taking `first_read_delay` longer.
async fn setup_with_slow_first_read(
    llm: Option<Arc<dyn gospelib_ai::llm::LlmClient>>,
    vendor_deadline: Duration,
    daily_vendor_questions: Option<u64>,
    first_read_delay: Duration,
) -> Setup {
    let urls = StoreUrls::from_env(&Env::from_process())
        .expect("these tests need the stack: run scripts/test, or source .stack/run/env");
    let clients = StoreClients::new(&urls).unwrap();
    let namespace = Namespace::isolated("ai_router");
    let targets = Targets {
        namespace: namespace.clone(),
        graph: Graph::new(&clients.falkordb_url, &namespace.graph),
        typesense: clients.typesense.clone(),
        redis: clients.redis.clone(),
        replica_wait: gospelib_content::ingest::REPLICA_WAIT,
    };
    // Once per test binary: two ingests of one namespace at once would race.
    static INGESTED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INGESTED
        .get_or_init(|| async {
            ingest(
                &repository().join("subgraphs/content/fixture"),
                false,
                &targets,
            )
            .await
            .unwrap();
        })
        .await;
    let secret = InternalSecret::new(&[5; 32]).unwrap();
    let (content, _) = gospelib_content::schema::subgraph(namespace, &clients);
    // Answers cached under a namespace of this run's own, so a warm cache of an earlier run
    // cannot answer for this one.
    let run = format!("t{}", uuid::Uuid::new_v4().simple());
    let cache = AnswerCache::new(clients.redis.clone(), run.clone());
    let mut assistant = Assistant::new(
        Arc::new(SlowFirstRead {
            inner: InProcess(content.executor.clone()),
            delay: std::sync::Mutex::new(Some(first_read_delay)),
        }),
        llm,
        Some(cache),
    );
    if let Some(per_day) = daily_vendor_questions {
        assistant =
            assistant.with_vendor_budget(VendorBudget::new(clients.redis.clone(), run, per_day));
    }
    let metrics = gospelib_kit::metrics::Metrics::new("assistant_test");
    let ai = Arc::new(AiService::new(
        assistant
            .with_metrics(metrics.clone())
            .with_vendor_deadline(vendor_deadline),
    ));
    let guarded = |name: &str, executor: Arc<dyn GraphQlExecutor>| {
        Arc::new(ExecutorSubgraph(Arc::new(CallerGuard::new(
            executor,
            secret.caller_key(name),
            NonceLedger::new(clients.redis.clone(), "test"),
        ))))
    };
    let transport = RouterInProcess::default()
        .with("content", guarded("content", content.executor))
        .with("ai", guarded("ai", ai.clone()));
    let sdl = std::fs::read_to_string(repository().join("schema/supergraph.graphql")).unwrap();
    Setup {
        router: Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport))
            .with_internal_secret(secret),
        ai,
        metrics,
    }
}

impl Setup {
    async fn ask(&self, caller: &Caller, query: &str) -> Value {
        let mut answer = self
            .router
            .execute(&GraphQlRequest {
                query: query.to_owned(),
                caller: caller.clone(),
                ..Default::default()
            })
            .await;
        answer.as_object_mut().unwrap().remove("extensions");
        answer
    }
}

/// Today's number of UTC days since 1970-01-01, as the vendor budget counts them.
fn utc_day() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
}

/// A signed-in caller with the AI entitlement (as the router makes one for a Scholar).
fn scholar() -> Caller {
    Caller {
        scopes: vec!["ai_features".to_owned()],
        ..Caller::user(user_id_for_clerk(&format!(
            "user_ai_{}",
            uuid::Uuid::new_v4().simple()
        )))
    }
}

const CITATIONS: &str = "citations { __typename \
    ... on Passage { id reference } \
    ... on LexiconEntry { id lemma } \
    ... on Topic { id name } }";

/// Every citation of `citations` resolved by content: a passage's reference, an entry's lemma,
/// a topic's name (a null would be an id content does not have).
fn assert_resolved(citations: &Value, answer: &Value) {
    let citations = citations.as_array().unwrap_or_else(|| panic!("{answer}"));
    for citation in citations {
        let shown = match citation["__typename"].as_str() {
            Some("Passage") => &citation["reference"],
            Some("LexiconEntry") => &citation["lemma"],
            Some("Topic") => &citation["name"],
            other => panic!("a citation of type {other:?}: {answer}"),
        };
        assert!(
            shown.as_str().is_some_and(|text| !text.is_empty()),
            "{citation} did not resolve: {answer}"
        );
    }
}

#[tokio::test]
async fn answers_cite_entities_that_resolve_through_federation() {
    let setup = setup().await;
    let caller = scholar();
    let explained = setup
        .ask(
            &caller,
            &format!(
                r#"{{ explainPassage(id: "john.3.16") {{ text provider model {CITATIONS} }} }}"#
            ),
        )
        .await;
    assert_eq!(explained.get("errors"), None, "{explained}");
    let explanation = &explained["data"]["explainPassage"];
    assert_eq!(explanation["provider"], "extractive");
    assert_eq!(explanation["model"], "graph-v1");
    assert!(
        explanation["text"].as_str().unwrap().contains("John 3:16"),
        "{explained}"
    );
    assert_eq!(
        explanation["citations"][0],
        json!({"__typename": "Passage", "id": "john.3.16", "reference": "John 3:16"})
    );
    assert_resolved(&explanation["citations"], &explained);
    let kinds: Vec<&str> = explanation["citations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["__typename"].as_str())
        .collect();
    assert!(kinds.contains(&"LexiconEntry"), "{explained}");

    let questions = setup
        .ask(
            &caller,
            &format!(r#"{{ studyQuestions(id: "john.3.16", count: 3) {{ text {CITATIONS} }} }}"#),
        )
        .await;
    assert_eq!(questions.get("errors"), None, "{questions}");
    let questions = questions["data"]["studyQuestions"].as_array().unwrap();
    assert_eq!(questions.len(), 3);
    for question in questions {
        assert_resolved(&question["citations"], question);
    }

    let connections = setup
        .ask(
            &caller,
            &format!(
                r#"{{ suggestConnections(id: "john.3.16") {{ passage {{ id reference text }} reason {CITATIONS} }} }}"#
            ),
        )
        .await;
    assert_eq!(connections.get("errors"), None, "{connections}");
    let connections = connections["data"]["suggestConnections"]
        .as_array()
        .unwrap();
    assert!(!connections.is_empty());
    for connection in connections {
        assert!(connection["passage"]["text"].is_string(), "{connection}");
        assert_resolved(&connection["citations"], connection);
    }
}

#[tokio::test]
async fn bad_questions_are_refused_with_their_codes_and_repeats_come_from_the_cache() {
    let setup = setup().await;
    let caller = scholar();
    let code = |answer: &Value| answer["errors"][0]["extensions"]["code"].clone();

    let anonymous = setup
        .ask(
            &Caller::anonymous(),
            r#"{ explainPassage(id: "john.3.16") { text } }"#,
        )
        .await;
    assert_eq!(code(&anonymous), "UNAUTHORIZED", "{anonymous}");
    let unknown = setup
        .ask(&caller, r#"{ explainPassage(id: "john.3.99") { text } }"#)
        .await;
    assert_eq!(code(&unknown), "PASSAGE_NOT_FOUND", "{unknown}");
    assert_eq!(unknown["data"]["explainPassage"], Value::Null);
    let malformed = setup
        .ask(&caller, r#"{ explainPassage(id: "Bad!") { text } }"#)
        .await;
    assert_eq!(code(&malformed), "VALIDATION_ERROR", "{malformed}");
    let too_many = setup
        .ask(
            &caller,
            r#"{ studyQuestions(id: "john.3.16", count: 11) { text } }"#,
        )
        .await;
    assert_eq!(code(&too_many), "VALIDATION_ERROR", "{too_many}");
    let long_focus = format!(
        r#"{{ explainPassage(id: "john.3.16", focus: "{}") {{ text }} }}"#,
        "x".repeat(201)
    );
    let long_focus = setup.ask(&caller, &long_focus).await;
    assert_eq!(code(&long_focus), "VALIDATION_ERROR", "{long_focus}");

    // The same question twice: the second answer is the cached first.
    let question = r#"{ explainPassage(id: "john.3.16", focus: "love") { text } }"#;
    let hits = setup.ai.assistant().cache_hits();
    let first = setup.ask(&caller, question).await;
    let second = setup.ask(&caller, question).await;
    assert_eq!(first, second);
    assert_eq!(setup.ai.assistant().cache_hits(), hits + 1);

    // A focus is its words: spaced otherwise, it is the same question, from the cache.
    let spaced =
        r#"{ explainPassage(id: "john.3.16", focus: " so  loved   the world ") { text } }"#;
    let plain = r#"{ explainPassage(id: "john.3.16", focus: "so loved the world") { text } }"#;
    let first = setup.ask(&caller, spaced).await;
    let second = setup.ask(&caller, plain).await;
    assert_eq!(first, second);
    assert_eq!(setup.ai.assistant().cache_hits(), hits + 2);
}

#[test]
fn readers_are_forbidden_and_scholars_counted_against_their_hourly_quota() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jwks = runtime.block_on(jwks_server());
    let (_served, base, _serve_runtime) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_AUTH_JWKS_URL", jwks),
            ("GOSPELIB_AUTH_ISSUER", ISSUER.to_owned()),
            ("GOSPELIB_AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ],
    );
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let question = r#"{ explainPassage(id: "john.3.16") { provider } }"#;
        let code = |body: &Value| body["errors"][0]["extensions"]["code"].clone();
        // (Anonymous callers: `UNAUTHORIZED`, asserted in process above the quota: here they
        // share one bucket per address, which other runs within the hour may have used up.)
        // A Reader's questions are refused, and not charged: past the Reader's 5 an hour they
        // are still FORBIDDEN, not RATE_LIMITED.
        let user = unique("ai_reader");
        let reader = format!("Bearer {}", session_token(&user));
        for n in 1..=7 {
            let (_, body) = client.ask(&[("authorization", &reader)], question).await;
            assert_eq!(code(&body), "FORBIDDEN", "question {n}: {body}");
            assert_eq!(body["data"]["explainPassage"], Value::Null, "{body}");
        }

        // The same user signs up for a Scholar trial: 50 AI questions an hour (none used up by
        // the refused ones), then RATE_LIMITED.
        let scholar = user;
        let status = client
            .deliver(
                &format!("msg_{scholar}"),
                &user_created(&scholar, "scholar@example.com"),
            )
            .await;
        assert_eq!(status, 200);
        let auth = format!("Bearer {}", session_token(&scholar));
        let trial = eventually(Duration::from_secs(15), || async {
            let (_, body) = client
                .ask(&[("authorization", &auth)], "{ me { plan { id } } }")
                .await;
            body["data"]["me"]["plan"]["id"] == "scholar"
        })
        .await;
        assert!(trial, "the trial did not start");
        // Each answer counts, aliased or not: ten in one operation take ten of the fifty.
        let ten = format!(
            "{{ {} }}",
            (0..10)
                .map(|n| format!(r#"q{n}: explainPassage(id: "john.3.16") {{ provider }}"#))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let (status, body) = client.ask(&[("authorization", &auth)], &ten).await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(code(&body), "RATE_LIMITED", "{body}");
        assert_ne!(code(&body), "FORBIDDEN", "{body}");
        assert_eq!(body["data"].as_object().map(|data| data.len()), Some(10));
        for n in 11..=50 {
            let (status, body) = client.ask(&[("authorization", &auth)], question).await;
            assert_eq!(status, 200, "question {n}: {body}");
            assert_ne!(code(&body), "RATE_LIMITED", "question {n}: {body}");
            assert_ne!(code(&body), "FORBIDDEN", "question {n}: {body}");
        }
        let (status, body) = client.ask(&[("authorization", &auth)], question).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    });
}

/// A local Anthropic Messages API answering each request with the next of `replies` (the
/// last one again when they run out); its base URL.
async fn fake_anthropic(replies: Vec<String>) -> String {
    fake_anthropic_after(Duration::ZERO, replies).await
}

/// [`fake_anthropic`] answering each request only after `delay`.
async fn fake_anthropic_after(delay: Duration, replies: Vec<String>) -> String {
    fake_anthropic_counting(delay, replies).await.0
}

/// [`fake_anthropic_after`], with the count of requests it got.
async fn fake_anthropic_counting(
    delay: Duration,
    replies: Vec<String>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let replies = Arc::new(std::sync::Mutex::new(replies));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let replies = replies.clone();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                assert_eq!(headers["x-api-key"], "sk-ant-test");
                let mut replies = replies.lock().unwrap();
                let text = if replies.len() > 1 {
                    replies.remove(0)
                } else {
                    replies[0].clone()
                };
                axum::Json(json!({
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "model": "claude-test-1",
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn"
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), calls)
}

fn anthropic(base_url: String) -> Arc<dyn gospelib_ai::llm::LlmClient> {
    Arc::new(
        gospelib_ai::llm::Anthropic::new(gospelib_ai::llm::AnthropicConfig {
            api_key: gospelib_ai::llm::Secret::new("sk-ant-test"),
            model: "claude-test".to_owned(),
            base_url,
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    )
}

#[tokio::test]
async fn a_vendors_answer_keeps_only_citations_the_graph_holds_and_a_malformed_one_falls_back() {
    let invented = json!({
        "text": "God's love for the world, given in his Son.",
        "citations": ["john.3.16", "G9999", "naves:made-up", "rev.99.1"]
    })
    .to_string();
    let base = fake_anthropic(vec![invented, "I cannot answer in JSON today.".to_owned()]).await;
    let setup = setup_with(Some(anthropic(base))).await;
    let caller = scholar();
    let question =
        format!(r#"{{ explainPassage(id: "john.3.16") {{ text provider model {CITATIONS} }} }}"#);
    let answer = setup.ask(&caller, &question).await;
    assert_eq!(answer.get("errors"), None, "{answer}");
    assert_eq!(
        answer["data"]["explainPassage"],
        json!({
            "text": "God's love for the world, given in his Son.",
            "provider": "anthropic",
            "model": "claude-test-1",
            "citations": [{"__typename": "Passage", "id": "john.3.16", "reference": "John 3:16"}]
        })
    );
    assert_eq!(setup.ai.assistant().invented_citations(), 3);
    let exported = setup.metrics.render();
    assert!(
        exported.contains("gospelib_ai_citations_dropped_total{service=\"assistant_test\"} 3"),
        "{exported}"
    );
    // The same question again: from the cache, the vendor is not asked.
    assert_eq!(setup.ask(&caller, &question).await, answer);

    // Another question gets the malformed reply (paid for, unusable): the extractive provider
    // answers, and that answer is kept briefly (`UNUSABLE_TTL`), so the same question is not
    // paid for again at once.
    let other = format!(r#"{{ explainPassage(id: "john.1.1") {{ provider {CITATIONS} }} }}"#);
    let fallback = setup.ask(&caller, &other).await;
    assert_eq!(fallback.get("errors"), None, "{fallback}");
    assert_eq!(fallback["data"]["explainPassage"]["provider"], "extractive");
    assert_resolved(&fallback["data"]["explainPassage"]["citations"], &fallback);
    let hits = setup.ai.assistant().cache_hits();
    assert_eq!(setup.ask(&caller, &other).await, fallback);
    assert_eq!(
        setup.ai.assistant().cache_hits(),
        hits + 1,
        "the unusable reply's stand-in was not kept"
    );
}

/// A vendor that does not answer (unreachable, or a gateway in front of it answering 200 with
/// its own HTML page): the extractive provider answers and nothing is kept, so the vendor is
/// asked again the next time.
#[tokio::test]
async fn a_vendor_that_does_not_answer_leaves_nothing_cached() {
    let gateway = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(|| async {
            axum::response::Html("<html><body>502 Bad Gateway (cached by the proxy)</body></html>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gateway).await.unwrap() });
    for base in ["http://127.0.0.1:1".to_owned(), gateway_base] {
        let setup = setup_with(Some(anthropic(base.clone()))).await;
        let caller = scholar();
        let question = r#"{ explainPassage(id: "john.1.4") { provider } }"#;
        let first = setup.ask(&caller, question).await;
        assert_eq!(
            first["data"]["explainPassage"]["provider"], "extractive",
            "{base}: {first}"
        );
        let hits = setup.ai.assistant().cache_hits();
        assert_eq!(setup.ask(&caller, question).await, first);
        assert_eq!(
            setup.ai.assistant().cache_hits(),
            hits,
            "{base}: a stand-in was kept"
        );
    }
}

/// Many readers asking the same question at once (a daily-reading push) pay the vendor once:
/// the others wait for that answer, as does a second copy of the question in one operation.
#[tokio::test]
async fn identical_questions_in_flight_ask_the_vendor_once() {
    let reply = json!({"text": "In the beginning was the Word.", "citations": ["john.1.1"]});
    let (base, calls) =
        fake_anthropic_counting(Duration::from_millis(300), vec![reply.to_string()]).await;
    let setup = setup_with(Some(anthropic(base))).await;
    let question = r#"{ explainPassage(id: "john.1.1") { text provider } }"#;
    let readers: Vec<Caller> = (0..5).map(|_| scholar()).collect();
    let answers =
        futures_util::future::join_all(readers.iter().map(|r| setup.ask(r, question))).await;
    let expected = json!({"data": {"explainPassage": {
        "text": "In the beginning was the Word.", "provider": "anthropic"
    }}});
    assert!(
        answers.iter().all(|answer| *answer == expected),
        "{answers:?}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let exported = setup.metrics.render();
    let shared = exported
        .lines()
        .find(|line| line.contains("source=\"shared\""))
        .unwrap_or_else(|| panic!("{exported}"));
    assert!(shared.ends_with(" 4"), "{shared}");

    let twice = r#"{ a: explainPassage(id: "john.1.2") { text } b: explainPassage(id: "john.1.2") { text } }"#;
    let answer = setup.ask(&scholar(), twice).await;
    assert_eq!(answer["data"]["a"], answer["data"]["b"], "{answer}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Who answered `explainPassage` of John 1:`verse` for each of `verses`, asked in turn by a
/// Scholar.
async fn providers_of(setup: &Setup, verses: std::ops::RangeInclusive<u32>) -> Vec<Value> {
    let mut providers = Vec::new();
    for verse in verses {
        let question = format!(r#"{{ explainPassage(id: "john.1.{verse}") {{ provider }} }}"#);
        let answer = setup.ask(&scholar(), &question).await;
        providers.push(answer["data"]["explainPassage"]["provider"].clone());
    }
    providers
}

/// The platform asks the vendors at most its daily budget of questions, all readers together:
/// past it, the extractive provider answers, and that answer is not kept (tomorrow the vendor
/// answers it).
#[tokio::test]
async fn past_the_daily_vendor_budget_the_extractive_provider_answers() {
    let reply = json!({"text": "In the beginning was the Word.", "citations": ["john.1.1"]});
    // The budget is per UTC day: should UTC midnight pass during the four questions, the
    // budget started again under them, so they are asked again (a budget of their own).
    let (setup, calls, providers) = loop {
        let (base, calls) = fake_anthropic_counting(Duration::ZERO, vec![reply.to_string()]).await;
        let setup = setup_with_deadline(
            Some(anthropic(base)),
            gospelib_ai::assistant::DEFAULT_VENDOR_DEADLINE,
            Some(2),
        )
        .await;
        let day = utc_day();
        let providers = providers_of(&setup, 1..=4).await;
        if utc_day() == day {
            break (setup, calls, providers);
        }
        eprintln!("UTC midnight passed during the questions: again");
    };
    assert_eq!(
        providers,
        [
            json!("anthropic"),
            json!("anthropic"),
            json!("extractive"),
            json!("extractive")
        ]
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A question the vendor answered is still served from the cache.
    assert_eq!(providers_of(&setup, 1..=1).await, [json!("anthropic")]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// While the vendor rate-limits (its `Retry-After`), questions are answered by the extractive
/// provider without asking it, and without taking from the daily budget: the one question
/// that met the 429 took a unit and gave it back (a refusal is not charged), the ones during
/// the wait took none, so the vendor answers the budget's two questions once the wait has
/// passed.
#[tokio::test]
async fn while_the_vendor_rate_limits_questions_take_nothing_from_the_budget() {
    let reply = json!({"text": "In the beginning was the Word.", "citations": ["john.1.1"]});
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move || {
            let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let reply = reply.clone();
            async move {
                use axum::response::IntoResponse;
                if first {
                    return (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "3")],
                        axum::Json(json!({"type": "error", "error": {
                            "type": "rate_limit_error", "message": "slow down"}})),
                    )
                        .into_response();
                }
                axum::Json(json!({
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "model": "claude-test-1",
                    "content": [{"type": "text", "text": reply.to_string()}],
                    "stop_reason": "end_turn"
                }))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cooled: Arc<dyn gospelib_ai::llm::LlmClient> =
        Arc::new(gospelib_ai::llm::Cooldown::new(anthropic(base)));
    // The budget is per UTC day: the questions are asked again should midnight pass.
    let providers = loop {
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let setup = setup_with_deadline(
            Some(cooled.clone()),
            gospelib_ai::assistant::DEFAULT_VENDOR_DEADLINE,
            Some(2),
        )
        .await;
        let day = utc_day();
        let mut providers = providers_of(&setup, 1..=4).await;
        tokio::time::sleep(Duration::from_millis(3_100)).await;
        providers.extend(providers_of(&setup, 5..=6).await);
        if utc_day() == day {
            break providers;
        }
        eprintln!("UTC midnight passed during the questions: again");
        tokio::time::sleep(Duration::from_millis(3_100)).await;
    };
    assert_eq!(
        providers,
        [
            json!("extractive"),
            json!("extractive"),
            json!("extractive"),
            json!("extractive"),
            json!("anthropic"),
            json!("anthropic")
        ],
        "the 429 gave its unit back, the wait took none, the fifth and sixth questions took both"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// The daily counts live in one hash without an expiry, which the platform's Redis
/// (`volatile-lru`) never evicts: a day's count cannot start again under memory pressure. Each
/// count forgets the days before yesterday.
#[tokio::test]
async fn the_daily_vendor_budget_is_kept_where_redis_does_not_evict_it() {
    let redis = gospelib_kit::test_stack::redis();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    // The counts are per UTC day: should UTC midnight pass during an attempt, "today" moved
    // under it, so it runs again (with a budget of its own) and is asserted only when the day
    // stayed the same throughout.
    for attempt in 1.. {
        let namespace = format!("budget-{}", uuid::Uuid::new_v4().simple());
        let budget = VendorBudget::new(redis.clone(), namespace, 2);
        let key = budget.key();
        let today = utc_day();
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(&[(today - 1, 9), (today - 3, 7), (today - 10, 5)])
            .query_async(&mut connection)
            .await
            .unwrap();

        let taken = [
            budget.take("user:a").await,
            budget.take("user:b").await,
            budget.take("user:c").await,
        ];
        let counts: std::collections::BTreeMap<u64, u64> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        if utc_day() != today && attempt < 3 {
            eprintln!("UTC midnight passed during attempt {attempt}: again");
            continue;
        }

        assert_eq!(taken.map(|taken| taken.allowed()), [true, true, false]);
        // Today's two questions (the third, refused, not counted), yesterday's kept, three
        // days ago forgotten; ten days ago is past what a count forgets.
        let expected = [(today - 10, 5), (today - 1, 9), (today, 2)];
        assert_eq!(counts, expected.into_iter().collect());
        assert_eq!(ttl, -1, "no expiry: volatile-lru cannot evict it");
        break;
    }
}

/// Each caller may take only their share of the day's vendor questions: past it they get the
/// extractive answers, and take nothing more from the platform's budget.
#[tokio::test]
async fn a_caller_takes_at_most_their_share_of_the_vendor_budget() {
    let redis = gospelib_kit::test_stack::redis();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let namespace = format!("budget-{}", uuid::Uuid::new_v4().simple());
    let budget = VendorBudget::new(redis.clone(), namespace, 100).per_caller(2);
    let today = utc_day();
    let taken = [
        budget.take("user:a").await,
        budget.take("user:a").await,
        budget.take("user:a").await,
        budget.take("partner:p").await,
    ];
    let day_count: Option<u64> = redis::cmd("HGET")
        .arg(budget.key())
        .arg(today)
        .query_async(&mut connection)
        .await
        .unwrap();
    let callers_ttl: i64 = redis::cmd("TTL")
        .arg(budget.callers_key(today))
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(budget.key())
        .arg(budget.callers_key(today))
        .query_async(&mut connection)
        .await
        .unwrap();
    if utc_day() == today {
        assert_eq!(
            taken.map(|taken| taken.allowed()),
            [true, true, false, true]
        );
        assert_eq!(taken[2], gospelib_ai::budget::Taken::ShareSpent);
        assert_eq!(day_count, Some(3), "the refused question took nothing");
        assert!(callers_ttl > 86_400, "kept two days: {callers_ttl}");
    }
}

/// A page asks for the verse at once and the explanation deferred: the verse comes in the
/// first part, the explanation in the last (incremental delivery, as Apollo Client reads it).
#[tokio::test]
async fn an_explanation_can_be_deferred_behind_the_rest_of_the_page() {
    use gospelib_router::pipeline::Incremental;
    let setup = setup().await;
    let router = Arc::new(setup.router);
    let request = GraphQlRequest {
        query: r#"{ passage(id: "john.3.16") { reference }
            ... @defer(label: "explanation") { explainPassage(id: "john.3.16") { provider } } }"#
            .to_owned(),
        caller: scholar(),
        ..Default::default()
    };
    let Incremental::Parts { first, rest, .. } = router.respond_incremental(&request).await else {
        panic!("the deferred fragment did not make parts");
    };
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        first["data"],
        json!({"passage": {"reference": "John 3:16"}}),
        "{first}"
    );
    assert_eq!(first["hasNext"], true);
    let rest: Value = serde_json::from_slice(&rest.await).unwrap();
    assert_eq!(rest["hasNext"], false, "{rest}");
    assert_eq!(
        rest["incremental"][0]["data"],
        json!({"explainPassage": {"provider": "extractive"}}),
        "{rest}"
    );
    assert_eq!(rest["incremental"][0]["label"], "explanation");
}

/// The assistant's context from content in another process, over HTTP, as `serve --only ai`
/// with `GOSPELIB_AI_CONTENT_URL` reads it: the same outcomes as in process.
#[test]
fn content_over_http_answers_as_in_process() {
    use gospelib_ai::content::{ContextError, OverHttp, gather};
    let (served, _, runtime) = serve_with(&["serve", "--only", "content"], &[]);
    let url: url::Url = format!("{}/graphql", served.internal).parse().unwrap();
    runtime.block_on(async {
        // Signed as `serve --only ai` signs it (content's guard checks it).
        let secret = std::env::var("GOSPELIB_INTERNAL_SECRET").unwrap();
        let secret = gospelib_kit::caller::InternalSecret::new(secret.trim().as_bytes()).unwrap();
        let content = OverHttp::new(url, Duration::from_secs(5))
            .unwrap()
            .signed_with(secret.caller_key("content"));
        // The stack's production graph may hold no corpus (CI): an id no verse has is none.
        assert!(matches!(gather(&content, "john.3.99").await, Ok(None)));
        match gather(&content, "Bad!").await {
            Err(ContextError::Refused { code, .. }) => assert_eq!(code, "VALIDATION_ERROR"),
            other => panic!("a malformed id: {other:?}"),
        }
        let dead = OverHttp::new(
            "http://127.0.0.1:9/graphql".parse().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(matches!(
            gather(&dead, "john.3.16").await,
            Err(ContextError::Unavailable(_))
        ));
    });
}

/// A vendor slower than the assistant's deadline (the router would cut the whole fetch at its
/// subgraph timeout): the extractive provider answers in time instead, and the vendor's
/// answer, paid for, is kept when it comes: the next reader gets it without a second call.
#[tokio::test]
async fn a_vendor_slower_than_the_deadline_leaves_the_answer_to_the_extractive_provider() {
    let reply = json!({"text": "Too late.", "citations": ["john.3.16"]}).to_string();
    let (base, calls) = fake_anthropic_counting(Duration::from_millis(1_000), vec![reply]).await;
    let setup = setup_with_deadline(Some(anthropic(base)), Duration::from_millis(300), None).await;
    let question = r#"{ explainPassage(id: "john.3.17") { text provider } }"#;
    let started = std::time::Instant::now();
    let answer = setup.ask(&scholar(), question).await;
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "answered at the deadline"
    );
    assert_eq!(
        answer["data"]["explainPassage"]["provider"], "extractive",
        "{answer}"
    );
    // Asked again while the first call is on its way: answered at once, without a second
    // call; once the answer has come, it is the one served.
    let kept = json!({"data": {"explainPassage": {"text": "Too late.", "provider": "anthropic"}}});
    let mut answer = answer;
    for _ in 0..50 {
        answer = setup.ask(&scholar(), question).await;
        if answer == kept {
            break;
        }
        assert_eq!(answer["data"]["explainPassage"]["provider"], "extractive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, kept, "the late answer was kept");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one paid call"
    );
}

/// A reader who joins another's identical question in flight waits no longer than its own
/// deadline and a grace (the maker's cache write): one who began later has a later deadline,
/// and waiting for it could pass the router's subgraph timeout. The first reader here (its
/// context read slow, its deadline at 3 s) joins the second (began at 2 s, deadline at 5 s,
/// the vendor answering at about 4.5 s) and gets the extractive answer at 4 s; the second
/// gets the vendor's. Before, the first waited for the vendor's answer, past its own time.
#[tokio::test]
async fn a_reader_waiting_on_anothers_identical_question_stops_at_its_own_deadline() {
    let reply = json!({"text": "Paid for.", "citations": ["john.3.16"]}).to_string();
    let (base, calls) = fake_anthropic_counting(Duration::from_millis(2_500), vec![reply]).await;
    let setup = setup_with_slow_first_read(
        Some(anthropic(base)),
        Duration::from_secs(3),
        None,
        Duration::from_millis(2_500),
    )
    .await;
    let question = r#"{ explainPassage(id: "john.3.16") { provider } }"#;
    let (first_reader, second_reader) = (scholar(), scholar());
    let (first, second) = tokio::join!(setup.ask(&first_reader, question), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        setup.ask(&second_reader, question).await
    });
    assert_eq!(
        first["data"]["explainPassage"]["provider"], "extractive",
        "{first}"
    );
    assert_eq!(
        second["data"]["explainPassage"]["provider"], "anthropic",
        "{second}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// While as many vendor calls as can be left to go on are on their way past their askers'
/// deadlines, a new question is not sent to the vendor: at its own deadline it would be
/// aborted, paid for and kept nowhere. The extractive provider answers it.
#[tokio::test]
async fn no_call_is_sent_while_as_many_as_can_go_on_late_are_on_their_way() {
    use gospelib_ai::late_calls::MAX_LATE_CALLS;
    let reply = json!({"text": "Slow.", "citations": ["john.3.16"]}).to_string();
    let (base, calls) = fake_anthropic_counting(Duration::from_secs(60), vec![reply]).await;
    // A client that waits out the slow vendor: its calls stay on their way past their
    // questions' deadlines for the whole test.
    let patient: Arc<dyn gospelib_ai::llm::LlmClient> = Arc::new(
        gospelib_ai::llm::Anthropic::new(gospelib_ai::llm::AnthropicConfig {
            api_key: gospelib_ai::llm::Secret::new("sk-ant-test"),
            model: "claude-test".to_owned(),
            base_url: base,
            timeout: Duration::from_secs(120),
        })
        .unwrap(),
    );
    let setup = setup_with_deadline(Some(patient), Duration::from_secs(2), None).await;
    let question = |n: usize| {
        format!(r#"{{ explainPassage(id: "john.3.16", focus: "f{n}") {{ provider }} }}"#)
    };
    let caller = scholar();
    let batch = 32;
    for first in (0..MAX_LATE_CALLS + batch).step_by(batch) {
        let answers = futures_util::future::join_all((first..first + batch).map(|n| {
            let (setup, caller, question) = (&setup, &caller, question(n));
            async move { setup.ask(caller, &question).await }
        }))
        .await;
        for answer in answers {
            assert_eq!(
                answer["data"]["explainPassage"]["provider"], "extractive",
                "{answer}"
            );
        }
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        MAX_LATE_CALLS,
        "the questions past the late calls' room were not sent"
    );
}

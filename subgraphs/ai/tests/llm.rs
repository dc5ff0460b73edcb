//! The LLM clients against fake vendors on 127.0.0.1 that check the path, the headers, the model
//! and the message shape of every request: Anthropic's Messages API, an OpenAI-compatible chat
//! completions API, the fallback from one to the other (timeout, 5xx, 429); the prompts
//! rendered from a context; the answers parsed (fences, prose, wrong shapes, invented
//! citations); the settings; and no API key in any error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gospelib_ai::answer::{Citation, Producer};
use gospelib_ai::context::{
    CrossReference, LexiconRef, PassageContext, PassageText, TopicRef, Word,
};
use gospelib_ai::llm::prompts::{self, connections, explain, questions, system};
use gospelib_ai::llm::settings::*;
use gospelib_ai::llm::{
    Anthropic, AnthropicConfig, Cooldown, DEFAULT_COOLDOWN, Fallback, LlmClient, LlmError,
    LlmReply, LlmRequest, LlmSettings, MAX_COOLDOWN, MIN_FALLBACK_TIME, OpenAiCompatible,
    OpenAiConfig, Secret, parse_connections, parse_explanation, parse_questions,
    render_connections, render_explain, render_questions,
};
use gospelib_kit::config::Env;
use serde_json::{Value, json};

const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789abcdef";
const OPENAI_KEY: &str = "sk-test-fedcba9876543210";
const CLAUDE: &str = "claude-sonnet-4-5";
const GPT: &str = "gpt-4o-mini";

// ---------------------------------------------------------------------------------------------
// Fake vendors

/// Serves `router` on a free local port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}")
}

/// One scripted answer.
#[derive(Debug, Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    async fn send(self) -> Response {
        tokio::time::sleep(self.delay).await;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        (self.status, headers, self.body).into_response()
    }
}

/// A fake vendor: scripted answers (then `default`), what it received, what it objected to.
#[derive(Clone)]
struct Fake {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    default: Reply,
    received: Arc<Mutex<Vec<Value>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn new(default: Reply) -> Self {
        Self {
            replies: Arc::default(),
            default,
            received: Arc::default(),
            problems: Arc::default(),
        }
    }

    fn next(&self) -> Reply {
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.clone())
    }

    fn problem(&self, problem: String) -> Response {
        self.problems.lock().unwrap().push(problem.clone());
        (StatusCode::IM_A_TEAPOT, format!("test server: {problem}")).into_response()
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn assert_no_problems(&self) {
        let problems = self.problems.lock().unwrap();
        assert!(
            problems.is_empty(),
            "the fake vendor objected: {problems:?}"
        );
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Checks an Anthropic Messages request: headers, model, and the shape
/// `{model, max_tokens, system, messages: [{role: user, content}]}`.
async fn messages(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    for (name, expected) in [
        ("x-api-key", ANTHROPIC_KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ] {
        let got = header(&headers, name);
        if got != expected {
            return fake.problem(format!("{name} {got:?}"));
        }
    }
    if headers.contains_key("authorization") {
        return fake.problem("an authorization header".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake.problem("the body is not JSON".into());
    };
    let keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != ["model", "max_tokens", "system", "messages"] {
        return fake.problem(format!("keys {keys:?}"));
    }
    if body["model"] != CLAUDE || !body["max_tokens"].is_u64() || !body["system"].is_string() {
        return fake.problem(format!("model/max_tokens/system {body}"));
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.len() != 1
        || messages[0]["role"] != "user"
        || !messages[0]["content"].is_string()
        || messages[0].as_object().map(|o| o.len()) != Some(2)
    {
        return fake.problem(format!("messages {messages:?}"));
    }
    fake.received.lock().unwrap().push(body);
    fake.next().send().await
}

/// Checks an OpenAI chat completions request: bearer key, model, and the shape
/// `{model, max_tokens, messages: [{role: system, content}, {role: user, content}]}`.
async fn chat_completions(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = header(&headers, "authorization");
    if authorization != format!("Bearer {OPENAI_KEY}") {
        return fake.problem(format!("authorization {authorization:?}"));
    }
    if header(&headers, "content-type") != "application/json" {
        return fake.problem("content-type".into());
    }
    if headers.contains_key("x-api-key") {
        return fake.problem("an x-api-key header".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake.problem("the body is not JSON".into());
    };
    let keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != ["model", "max_tokens", "messages"] {
        return fake.problem(format!("keys {keys:?}"));
    }
    if body["model"] != GPT || !body["max_tokens"].is_u64() {
        return fake.problem(format!("model/max_tokens {body}"));
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    if roles != ["system", "user"] || !messages.iter().all(|m| m["content"].is_string()) {
        return fake.problem(format!("messages {messages:?}"));
    }
    fake.received.lock().unwrap().push(body);
    fake.next().send().await
}

async fn fake_anthropic(default: Reply) -> (String, Fake) {
    let fake = Fake::new(default);
    let router = Router::new()
        .route("/v1/messages", post(messages))
        .with_state(fake.clone());
    (serve(router).await, fake)
}

async fn fake_openai(default: Reply) -> (String, Fake) {
    let fake = Fake::new(default);
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(fake.clone());
    (serve(router).await, fake)
}

/// A Messages API answer whose text is `text`, in two blocks (and a block of another kind).
fn anthropic_ok(text: &str) -> Reply {
    let (first, second) = text.split_at(text.len() / 2);
    Reply::new(
        200,
        json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "text", "text": first},
                {"type": "tool_use", "id": "t", "name": "x", "input": {}},
                {"type": "text", "text": second}
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 20}
        })
        .to_string(),
    )
}

/// A chat completions answer whose content is `text`.
fn openai_ok(text: &str) -> Reply {
    Reply::new(
        200,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }]
        })
        .to_string(),
    )
}

fn anthropic(base: &str, timeout: Duration) -> Anthropic {
    Anthropic::new(AnthropicConfig {
        api_key: Secret::new(ANTHROPIC_KEY),
        model: CLAUDE.into(),
        base_url: base.into(),
        timeout,
    })
    .unwrap()
}

fn openai(base: &str, timeout: Duration) -> OpenAiCompatible {
    OpenAiCompatible::new(OpenAiConfig {
        api_key: Secret::new(OPENAI_KEY),
        model: GPT.into(),
        base_url: base.into(),
        timeout,
    })
    .unwrap()
}

fn fallback(primary: Anthropic, secondary: OpenAiCompatible) -> Fallback {
    Fallback::new(Arc::new(primary), Arc::new(secondary))
}

/// A port that was just free: nothing listens there.
fn unreachable_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    base
}

/// Anthropic's answer when it fails on its side (500).
const OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#;

fn request() -> LlmRequest {
    render_explain(&context(), Some("love")).request
}

/// `client`'s answer to [`request`], asked to come by `deadline`.
async fn answer_by(client: &Fallback, deadline: tokio::time::Instant) -> LlmReply {
    client
        .complete(&LlmRequest {
            deadline: Some(deadline),
            ..request()
        })
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A context: John 3:16 with a neighbour, two cross-references, words and topics.

fn passage(id: &str, reference: &str, text: &str) -> PassageText {
    PassageText {
        id: id.into(),
        reference: reference.into(),
        text: text.into(),
    }
}

fn entry(id: &str, lemma: &str, transliteration: &str, definition: &str) -> LexiconRef {
    LexiconRef {
        id: id.into(),
        lemma: lemma.into(),
        transliteration: transliteration.into(),
        definition: definition.into(),
    }
}

fn topic(id: &str, name: &str) -> TopicRef {
    TopicRef {
        id: id.into(),
        name: name.into(),
    }
}

fn context() -> PassageContext {
    let agapao = entry("G0025", "ἀγαπάω", "agapaō", "to love");
    let kosmos = entry("G2889", "κόσμος", "kosmos", "the world");
    let zoe = entry("G2222", "ζωή", "zōē", "life");
    let love = topic("naves:love", "Love");
    let word = |text: &str, lexicon: Option<&LexiconRef>| Word {
        text: text.into(),
        lexicon: lexicon.cloned(),
    };
    PassageContext {
        passage: passage(
            "john.3.16",
            "John 3:16",
            "For God so loved the world, that he gave his only begotten Son, that whosoever \
             believeth in him should not perish, but have everlasting life.",
        ),
        neighbours: vec![passage(
            "john.3.17",
            "John 3:17",
            "For God sent not his Son into the world to condemn the world; but that the world \
             through him might be saved.",
        )],
        cross_references: vec![
            CrossReference {
                passage: passage(
                    "rom.5.8",
                    "Romans 5:8",
                    "But God commendeth his love toward us, in that, while we were yet \
                     sinners, Christ died for us.",
                ),
                votes: 80,
                shared_lexicon: vec![entry("G0026", "ἀγάπη", "agapē", "love")],
                shared_topics: vec![love.clone()],
            },
            CrossReference {
                passage: passage(
                    "1john.4.9",
                    "1 John 4:9",
                    "In this was manifested the love of God toward us, because that God sent \
                     his only begotten Son into the world, that we might live through him.",
                ),
                votes: 60,
                shared_lexicon: vec![kosmos.clone()],
                shared_topics: vec![topic("naves:atonement", "Atonement")],
            },
        ],
        words: vec![
            word("For", None),
            word("God", None),
            word("so", None),
            word("loved", Some(&agapao)),
            word("the", None),
            word("world", Some(&kosmos)),
            word("life", Some(&zoe)),
        ],
        topics: vec![love, topic("naves:faith", "Faith")],
    }
}

fn reply_of(provider: &'static str, text: &str) -> LlmReply {
    LlmReply {
        text: text.into(),
        provider,
        model: "m-1".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The clients

#[tokio::test]
async fn anthropic_answers_with_the_text_of_its_text_blocks() {
    let answer = r#"{"text":"God's love is given.","citations":["john.3.16","G0025"]}"#;
    let (base, fake) = fake_anthropic(anthropic_ok(answer)).await;
    let client = anthropic(&base, Duration::from_secs(5));
    let prompt = render_explain(&context(), None);

    let reply = client.complete(&prompt.request).await.unwrap();

    fake.assert_no_problems();
    assert_eq!(reply.text, answer);
    assert_eq!(reply.provider, "anthropic");
    assert_eq!(reply.model, "claude-sonnet-4-5-20250929");
    assert_eq!(client.describe(), "anthropic/claude-sonnet-4-5");
    assert_eq!(
        fake.received(),
        [json!({
            "model": CLAUDE,
            "max_tokens": prompt.request.max_tokens,
            "system": prompt.request.system,
            "messages": [{"role": "user", "content": prompt.request.prompt}]
        })]
    );
}

#[tokio::test]
async fn an_openai_compatible_api_answers_with_its_first_choice() {
    let answer = r#"{"questions":[{"text":"Why?","citations":["john.3.16"]}]}"#;
    let (base, fake) = fake_openai(openai_ok(answer)).await;
    let client = openai(&base, Duration::from_secs(5));
    let prompt = render_questions(&context(), 3);

    let reply = client.complete(&prompt.request).await.unwrap();

    fake.assert_no_problems();
    assert_eq!(reply.text, answer);
    assert_eq!(reply.provider, "openai");
    assert_eq!(reply.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(
        fake.received(),
        [json!({
            "model": GPT,
            "max_tokens": prompt.request.max_tokens,
            "messages": [
                {"role": "system", "content": prompt.request.system},
                {"role": "user", "content": prompt.request.prompt}
            ]
        })]
    );
}

#[tokio::test]
async fn a_base_url_with_a_path_or_a_slash_keeps_it() {
    let fake = Fake::new(openai_ok("{}"));
    let router = Router::new()
        .route("/proxy/v1/chat/completions", post(chat_completions))
        .with_state(fake.clone());
    let base = serve(router).await;
    let client = openai(&format!("{base}/proxy/"), Duration::from_secs(5));

    client.complete(&request()).await.unwrap();

    fake.assert_no_problems();
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn a_hanging_primary_times_out_and_the_fallback_answers() {
    let (slow, slow_fake) = fake_anthropic(anthropic_ok("{}").after(Duration::from_secs(30))).await;
    let (base, fake) = fake_openai(openai_ok(r#"{"text":"ok"}"#)).await;
    let primary = anthropic(&slow, Duration::from_millis(300));

    let started = Instant::now();
    let error = primary.complete(&request()).await.unwrap_err();
    assert_eq!(
        error,
        LlmError::Timeout {
            provider: "anthropic",
            timeout: Duration::from_millis(300)
        }
    );

    let client = fallback(primary, openai(&base, Duration::from_secs(5)));
    let reply = client.complete(&request()).await.unwrap();

    assert_eq!(reply.provider, "openai");
    assert_eq!(reply.text, r#"{"text":"ok"}"#);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(slow_fake.count(), 2);
    assert_eq!(fake.count(), 1);
    fake.assert_no_problems();
    slow_fake.assert_no_problems();
    assert_eq!(
        client.describe(),
        "anthropic/claude-sonnet-4-5 then openai/gpt-4o-mini"
    );
}

/// A primary that fails too close to the asker's deadline is not followed by the secondary:
/// it could not finish in time, and a call cut short is paid for and answers nothing.
#[tokio::test]
async fn the_fallback_is_not_asked_without_time_left_before_the_deadline() {
    let (primary_base, primary_fake) = fake_anthropic(Reply::new(500, OVERLOADED)).await;
    let (base, fake) = fake_openai(openai_ok(r#"{"text":"ok"}"#)).await;
    let client = fallback(
        anthropic(&primary_base, Duration::from_secs(5)),
        openai(&base, Duration::from_secs(5)),
    );
    let with_left = |left: Duration| LlmRequest {
        deadline: Some(tokio::time::Instant::now() + left),
        ..request()
    };

    let error = client
        .complete(&with_left(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LlmError::Vendor { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!((primary_fake.count(), fake.count()), (1, 0));

    let reply = client
        .complete(&with_left(Duration::from_secs(8)))
        .await
        .unwrap();
    assert_eq!(reply.provider, "openai");
    assert_eq!((primary_fake.count(), fake.count()), (2, 1));
}

/// A primary that hangs longer than the asker's deadline (its own timeout is longer) is raced
/// by the secondary while the secondary still has its time: the secondary answers before the
/// deadline.
#[tokio::test]
async fn a_primary_hanging_past_the_deadline_is_raced_in_time_by_the_fallback() {
    let (slow, slow_fake) = fake_anthropic(anthropic_ok("{}").after(Duration::from_secs(30))).await;
    let (base, fake) = fake_openai(openai_ok(r#"{"text":"ok"}"#)).await;
    let client = fallback(
        anthropic(&slow, Duration::from_secs(20)),
        openai(&base, Duration::from_secs(5)),
    );
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(4);

    let reply = answer_by(&client, deadline).await;

    assert_eq!(reply.provider, "openai");
    let answered = tokio::time::Instant::now();
    assert!(
        answered < deadline,
        "answered {:?} after the start",
        answered - started
    );
    assert!(
        answered - started >= Duration::from_secs(1),
        "the primary had its share"
    );
    assert_eq!((slow_fake.count(), fake.count()), (1, 1));
    fake.assert_no_problems();
}

/// A primary still working at its share's end (a long answer, not a hang) is not cut short:
/// its call is paid for. The secondary is asked alongside, and the first answer is taken.
#[tokio::test]
async fn a_slow_primary_is_raced_by_the_fallback_not_cut_short() {
    let (slow, slow_fake) =
        fake_anthropic(anthropic_ok(r#"{"text":"late"}"#).after(Duration::from_millis(1500))).await;
    let (base, fake) =
        fake_openai(openai_ok(r#"{"text":"later"}"#).after(Duration::from_secs(30))).await;
    let client = fallback(
        anthropic(&slow, Duration::from_secs(20)),
        openai(&base, Duration::from_secs(20)),
    );
    let started = tokio::time::Instant::now();
    // The primary's share ends a second in; it answers half a second later.
    let deadline = started + MIN_FALLBACK_TIME + Duration::from_secs(1);

    let reply = answer_by(&client, deadline).await;

    assert_eq!(reply.provider, "anthropic");
    assert_eq!(reply.text, r#"{"text":"late"}"#);
    assert!(tokio::time::Instant::now() < deadline);
    assert_eq!((slow_fake.count(), fake.count()), (1, 1), "both were asked");
    slow_fake.assert_no_problems();
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_failing_primary_hands_over_to_the_fallback() {
    let (primary_base, primary_fake) = fake_anthropic(Reply::new(500, OVERLOADED)).await;
    let (base, fake) = fake_openai(openai_ok(r#"{"text":"ok"}"#)).await;

    let primary = anthropic(&primary_base, Duration::from_secs(5));
    assert_eq!(
        primary.complete(&request()).await.unwrap_err(),
        LlmError::Vendor {
            provider: "anthropic",
            status: 500,
            body: "Internal server error".into()
        }
    );

    let client = fallback(primary, openai(&base, Duration::from_secs(5)));
    let reply = client.complete(&request()).await.unwrap();
    assert_eq!(reply.provider, "openai");
    assert_eq!(primary_fake.count(), 2);
    assert_eq!(fake.count(), 1);
    primary_fake.assert_no_problems();
    fake.assert_no_problems();

    // An unreachable primary, and a primary whose 200 is not the Messages API's.
    for primary in [
        anthropic(&unreachable_base(), Duration::from_secs(2)),
        anthropic(
            &fake_anthropic(Reply::new(200, "<html>oops</html>")).await.0,
            Duration::from_secs(2),
        ),
    ] {
        let error = primary.complete(&request()).await.unwrap_err();
        assert!(
            matches!(
                error,
                LlmError::Transport { .. } | LlmError::Vendor { status: 200, .. }
            ),
            "not a reply that came and could not be used: {error:?}"
        );
        let client = fallback(primary, openai(&base, Duration::from_secs(5)));
        assert_eq!(
            client.complete(&request()).await.unwrap().provider,
            "openai"
        );
    }
}

#[tokio::test]
async fn too_many_requests_is_rate_limited_with_retry_after_and_falls_back() {
    let limited = Reply::new(
        429,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    )
    .header("retry-after", "17");
    let (primary_base, primary_fake) = fake_anthropic(limited).await;
    let primary = anthropic(&primary_base, Duration::from_secs(5));

    let error = primary.complete(&request()).await.unwrap_err();
    assert_eq!(
        error,
        LlmError::RateLimited {
            provider: "anthropic",
            retry_after: Some(Duration::from_secs(17))
        }
    );
    assert_eq!(
        error.to_string(),
        "anthropic is rate limiting (retry after 17s)"
    );

    // OpenAI rate limits too, without saying for how long.
    let (limited_base, _) = fake_openai(Reply::new(
        429,
        r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
    ))
    .await;
    assert_eq!(
        openai(&limited_base, Duration::from_secs(5))
            .complete(&request())
            .await
            .unwrap_err(),
        LlmError::RateLimited {
            provider: "openai",
            retry_after: None
        }
    );

    let (base, fake) = fake_openai(openai_ok(r#"{"text":"ok"}"#)).await;
    let client = fallback(primary, openai(&base, Duration::from_secs(5)));
    let reply = client.complete(&request()).await.unwrap();
    assert_eq!(reply.provider, "openai");
    assert_eq!(primary_fake.count(), 2);
    fake.assert_no_problems();

    // Both failing: the fallback's error.
    let client = fallback(
        anthropic(&primary_base, Duration::from_secs(5)),
        openai(&limited_base, Duration::from_secs(5)),
    );
    assert_eq!(
        client.complete(&request()).await.unwrap_err().provider(),
        "openai"
    );
}

/// A vendor that rate-limited is left alone for its `Retry-After` (capped), or a few seconds
/// when it gave none: completions fail at once meanwhile, a fallback goes straight to its
/// secondary, and the vendor is asked again once the window has passed.
#[tokio::test]
async fn a_rate_limited_vendor_is_left_alone_for_its_retry_after() {
    let limited = |retry_after: Option<&str>| {
        let reply = Reply::new(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        match retry_after {
            Some(wait) => reply.header("retry-after", wait),
            None => reply,
        }
    };
    let (base, fake) = fake_anthropic(anthropic_ok(r#"{"text":"ok"}"#)).await;
    fake.replies.lock().unwrap().push_back(limited(Some("1")));
    let cooled = Arc::new(Cooldown::new(Arc::new(anthropic(
        &base,
        Duration::from_secs(5),
    ))));
    assert!(!cooled.cooling_down());
    let error = cooled.complete(&request()).await.unwrap_err();
    assert!(matches!(error, LlmError::RateLimited { .. }), "{error:?}");
    assert!(cooled.cooling_down());
    for _ in 0..3 {
        match cooled.complete(&request()).await.unwrap_err() {
            LlmError::RateLimited {
                provider: "anthropic",
                retry_after: Some(left),
            } => assert!(left <= Duration::from_secs(1), "{left:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fake.count(), 1, "not asked while it cools down");

    // A fallback goes straight to its secondary, and is not cooling down while that one works.
    let (secondary_base, secondary) = fake_openai(openai_ok(r#"{"text":"ok"}"#)).await;
    let chain = Fallback::new(
        cooled.clone(),
        Arc::new(Cooldown::new(Arc::new(openai(
            &secondary_base,
            Duration::from_secs(5),
        )))),
    );
    let started = Instant::now();
    assert_eq!(chain.complete(&request()).await.unwrap().provider, "openai");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!chain.cooling_down());
    assert_eq!((fake.count(), secondary.count()), (1, 1));

    // Once the window has passed, the vendor is asked again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(!cooled.cooling_down());
    assert_eq!(
        cooled.complete(&request()).await.unwrap().provider,
        "anthropic"
    );
    assert_eq!(fake.count(), 2);

    // Two calls in flight when the vendor refuses: a shorter wait answered later does not
    // shorten the window the first opened.
    let (base, two) = fake_anthropic(anthropic_ok(r#"{"text":"ok"}"#)).await;
    two.replies.lock().unwrap().extend([
        limited(Some("60")),
        limited(Some("1")).after(Duration::from_millis(300)),
    ]);
    let cooled = Cooldown::new(Arc::new(anthropic(&base, Duration::from_secs(5))));
    let asked = request();
    let (first, second) = tokio::join!(cooled.complete(&asked), cooled.complete(&asked));
    assert!(first.is_err() && second.is_err());
    assert_eq!(two.count(), 2);
    match cooled.complete(&request()).await.unwrap_err() {
        LlmError::RateLimited {
            retry_after: Some(left),
            ..
        } => assert!(left > Duration::from_secs(50), "{left:?}"),
        other => panic!("{other:?}"),
    }

    // A day-long Retry-After is read as the cap; none at all, or 0, as the default.
    for (retry_after, window) in [
        (Some("86400"), MAX_COOLDOWN),
        (None, DEFAULT_COOLDOWN),
        (Some("0"), DEFAULT_COOLDOWN),
    ] {
        let (base, _) = fake_anthropic(limited(retry_after)).await;
        let cooled = Cooldown::new(Arc::new(anthropic(&base, Duration::from_secs(5))));
        cooled.complete(&request()).await.unwrap_err();
        match cooled.complete(&request()).await.unwrap_err() {
            LlmError::RateLimited {
                retry_after: Some(left),
                ..
            } => assert!(
                left <= window && left > window - Duration::from_secs(2),
                "{retry_after:?}: {left:?}"
            ),
            other => panic!("{other:?}"),
        }
    }
    fake.assert_no_problems();
}

#[tokio::test]
async fn no_api_key_appears_in_any_error_or_debug_output() {
    // Vendors that quote the key back in their error answers, in full and masked.
    let (anthropic_base, _) = fake_anthropic(Reply::new(
        401,
        format!(
            r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key {ANTHROPIC_KEY}"}}}}"#
        ),
    ))
    .await;
    let masked = format!(
        "{}****************{}",
        &OPENAI_KEY[..3],
        &OPENAI_KEY[OPENAI_KEY.len() - 4..]
    );
    let (openai_base, _) = fake_openai(Reply::new(
        401,
        format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys.","code":"invalid_api_key"}}}}"#
        ),
    ))
    .await;
    let (echo_base, _) =
        fake_openai(Reply::new(400, format!("bad request for {OPENAI_KEY}"))).await;
    let (slow_base, _) = fake_anthropic(anthropic_ok("{}").after(Duration::from_secs(30))).await;

    let mut errors = vec![
        anthropic(&anthropic_base, Duration::from_secs(5))
            .complete(&request())
            .await
            .unwrap_err(),
        openai(&openai_base, Duration::from_secs(5))
            .complete(&request())
            .await
            .unwrap_err(),
        openai(&echo_base, Duration::from_secs(5))
            .complete(&request())
            .await
            .unwrap_err(),
        anthropic(&slow_base, Duration::from_millis(200))
            .complete(&request())
            .await
            .unwrap_err(),
        openai(&unreachable_base(), Duration::from_secs(2))
            .complete(&request())
            .await
            .unwrap_err(),
        fallback(
            anthropic(&anthropic_base, Duration::from_secs(5)),
            openai(&openai_base, Duration::from_secs(5)),
        )
        .complete(&request())
        .await
        .unwrap_err(),
    ];
    errors.push(parse_explanation(&reply_of("openai", "not json"), &context()).unwrap_err());
    assert!(
        matches!(errors[0], LlmError::Vendor { status: 401, .. }),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(errors[3], LlmError::Timeout { .. }),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(errors[4], LlmError::Transport { .. }),
        "{:?}",
        errors[4]
    );

    let secrets = [
        ANTHROPIC_KEY,
        OPENAI_KEY,
        &ANTHROPIC_KEY[ANTHROPIC_KEY.len() - 8..],
        &OPENAI_KEY[OPENAI_KEY.len() - 4..],
    ];
    let clients = format!(
        "{:?} {:?} {:?}",
        anthropic(&anthropic_base, Duration::from_secs(1)),
        openai(&openai_base, Duration::from_secs(1)),
        fallback(
            anthropic(&anthropic_base, Duration::from_secs(1)),
            openai(&openai_base, Duration::from_secs(1))
        ),
    );
    let settings = LlmSettings::settings_from_env(&Env::from_pairs([
        (ANTHROPIC_API_KEY, ANTHROPIC_KEY),
        (OPENAI_API_KEY, OPENAI_KEY),
    ]))
    .unwrap();
    let settings = format!("{settings:?}");
    for error in &errors {
        for text in [error.to_string(), format!("{error:?}")] {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} leaked: {text}");
            }
        }
    }
    for secret in secrets {
        assert!(!clients.contains(secret), "{secret} leaked: {clients}");
        assert!(!settings.contains(secret), "{secret} leaked: {settings}");
    }
    assert!(
        errors[0]
            .to_string()
            .contains("invalid x-api-key [redacted]"),
        "{}",
        errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// The prompts

#[test]
fn template_versions_name_their_files_and_every_placeholder_is_filled() {
    assert_eq!(system::TEMPLATE_VERSION, "system.v1");
    assert_eq!(explain::TEMPLATE_VERSION, "explain.v1");
    assert_eq!(questions::TEMPLATE_VERSION, "questions.v1");
    assert_eq!(connections::TEMPLATE_VERSION, "connections.v1");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    for (version, text) in [
        (system::TEMPLATE_VERSION, system::TEMPLATE),
        (explain::TEMPLATE_VERSION, explain::TEMPLATE),
        (questions::TEMPLATE_VERSION, questions::TEMPLATE),
        (connections::TEMPLATE_VERSION, connections::TEMPLATE),
    ] {
        let file = std::fs::read_to_string(dir.join(format!("{version}.txt"))).unwrap();
        assert_eq!(file, text);
    }

    let context = context();
    let prompts = [
        render_explain(&context, Some("  God's\nlove ")),
        render_questions(&context, 4),
        render_connections(&context, 3),
    ];
    for prompt in &prompts {
        assert!(
            !prompt.request.prompt.contains("{{"),
            "{}",
            prompt.request.prompt
        );
        assert!(!prompt.request.system.contains("{{"));
        assert_eq!(prompt.request.system, system::TEMPLATE.trim_end());
        assert!(prompt.request.prompt.contains("John 3:16 (id john.3.16)"));
        assert!(prompt.request.prompt.contains(&prompts::material(&context)));
        assert!(prompt.request.max_tokens > 0);
    }
    assert_eq!(prompts[0].template_version, "system.v1+explain.v1");
    assert_eq!(prompts[1].template_version, "system.v1+questions.v1");
    assert_eq!(prompts[2].template_version, "system.v1+connections.v1");
    assert!(
        prompts[0]
            .request
            .prompt
            .contains(r#"The reader's focus: "God's love""#)
    );
    assert!(
        prompts[1]
            .request
            .prompt
            .contains("write 4 study questions")
    );
    assert!(prompts[2].request.prompt.contains("up to 3 passages"));
    assert!(
        render_explain(&context, None)
            .request
            .prompt
            .contains("The reader's focus: none given")
    );
    assert!(
        render_questions(&context, 500)
            .request
            .prompt
            .contains("write 10 study questions")
    );
}

#[test]
fn the_material_is_compact_json_holding_every_citable_id() {
    let context = context();
    let material = prompts::material(&context);
    assert!(!material.contains('\n'));
    let value: Value = serde_json::from_str(&material).unwrap();
    assert_eq!(value["passage"]["id"], "john.3.16");
    assert_eq!(
        value["passage"]["words"],
        "For God so loved[G0025] the world[G2889] life[G2222]"
    );
    assert_eq!(value["neighbours"][0]["id"], "john.3.17");
    assert_eq!(value["cross_references"][0]["id"], "rom.5.8");
    assert_eq!(
        value["cross_references"][0]["shared_lexicon"],
        json!(["G0026"])
    );
    assert_eq!(
        value["cross_references"][0]["shared_topics"],
        json!(["naves:love"])
    );
    // Each entry and topic once, the passage's own first.
    let lexicon: Vec<&str> = value["lexicon"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(lexicon, ["G0025", "G2889", "G2222", "G0026"]);
    assert_eq!(value["lexicon"][0]["definition"], "to love");
    let topics: Vec<&str> = value["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["naves:love", "naves:faith", "naves:atonement"]);
    for citation in context.citable() {
        assert!(
            material.contains(&format!("\"{}\"", citation.id))
                || material.contains(&format!("[{}]", citation.id)),
            "{citation:?}"
        );
    }
    // The same context, the same prompt; another focus, another prompt.
    assert_eq!(material, prompts::material(&context.clone()));
    let focused = render_explain(&context, Some("love"));
    assert_eq!(focused, render_explain(&context.clone(), Some("love")));
    assert_ne!(focused, render_explain(&context, Some("faith")));
}

#[test]
fn placeholders_in_the_material_or_focus_are_not_filled() {
    let mut context = context();
    context.passage.text = "He said {{focus}} and {{material}}".into();
    let prompt = render_explain(&context, Some("{{passage_id}}"));
    assert!(
        prompt
            .request
            .prompt
            .contains("He said {{focus}} and {{material}}")
    );
    assert!(
        prompt
            .request
            .prompt
            .contains(r#"The reader's focus: "{{passage_id}}""#)
    );
    assert_eq!(
        prompts::fill("{{a}} {{b}} {{c}} {{", &[("a", "{{b}}"), ("b", "2")]),
        "{{b}} 2 {{c}} {{"
    );
}

// ---------------------------------------------------------------------------------------------
// The answers

#[test]
fn an_explanation_is_parsed_with_its_citations_typed() {
    let text = r#"{"text":"  God gave his Son.  ","citations":["john.3.16","G0025","naves:love","rom.5.8","john.3.16"]}"#;
    let (explanation, dropped) =
        parse_explanation(&reply_of("anthropic", text), &context()).unwrap();
    assert_eq!(explanation.text, "God gave his Son.");
    assert_eq!(
        explanation.citations,
        [
            Citation::passage("john.3.16"),
            Citation::lexicon_entry("G0025"),
            Citation::topic("naves:love"),
            Citation::passage("rom.5.8"),
        ]
    );
    assert_eq!(dropped, 0);
    assert_eq!(
        explanation.producer,
        Producer {
            provider: "anthropic".into(),
            model: "m-1".into()
        }
    );
}

#[test]
fn a_fenced_or_prefaced_json_reply_is_parsed() {
    for text in [
        "```json\n{\"text\":\"Fenced.\",\"citations\":[\"john.3.16\"]}\n```",
        "Here is the explanation you asked for:\n\n```\n{\"text\":\"Fenced.\",\"citations\":[\"john.3.16\"]}\n```\nI hope it helps {really}.",
        "Sure {of course}: {\"text\":\"Fenced.\",\"citations\":[\"john.3.16\"]} — done.",
    ] {
        let (explanation, dropped) =
            parse_explanation(&reply_of("openai", text), &context()).unwrap();
        assert_eq!(explanation.text, "Fenced.", "{text}");
        assert_eq!(explanation.citations, [Citation::passage("john.3.16")]);
        assert_eq!(dropped, 0);
    }
}

#[test]
fn invented_citations_are_dropped_and_counted() {
    let text = r#"{"text":"x","citations":["john.3.16","matt.5.44","G9999","naves:grace","not an id",42,{"id":"G0026"}]}"#;
    let (explanation, dropped) =
        parse_explanation(&reply_of("anthropic", text), &context()).unwrap();
    assert_eq!(
        explanation.citations,
        [
            Citation::passage("john.3.16"),
            Citation::lexicon_entry("G0026")
        ]
    );
    assert_eq!(dropped, 5);

    // The context's ids, spelt otherwise, are its ids, not inventions.
    let text = r#"{"text":"x","citations":["John.3.16","g25","G26","NAVES:LOVE"]}"#;
    let (explanation, dropped) =
        parse_explanation(&reply_of("anthropic", text), &context()).unwrap();
    assert_eq!(
        explanation.citations,
        [
            Citation::passage("john.3.16"),
            Citation::lexicon_entry("G0025"),
            Citation::lexicon_entry("G0026"),
            Citation::topic("naves:love"),
        ]
    );
    assert_eq!(dropped, 0);

    let text = r#"{"questions":[
        {"text":"What does loved mean here?","citations":["G0025","H0157"]},
        {"text":"  ","citations":["john.3.16"]},
        {"text":"How does Romans 5:8 show it?","citations":["rom.5.8","rom.5.9"]}]}"#;
    let (questions, dropped) = parse_questions(&reply_of("openai", text), &context()).unwrap();
    assert_eq!(questions.len(), 2);
    assert_eq!(questions[0].citations, [Citation::lexicon_entry("G0025")]);
    assert_eq!(questions[1].text, "How does Romans 5:8 show it?");
    assert_eq!(questions[1].citations, [Citation::passage("rom.5.8")]);
    assert_eq!(dropped, 2);

    let text = r#"{"connections":[
        {"passage":"rom.5.8","reason":"Both speak of God's love.","citations":["G0026","naves:love","naves:mercy"]},
        {"passage":"matt.5.44","reason":"Invented.","citations":["G0025"]},
        {"passage":"john.3.16","reason":"Itself.","citations":[]},
        {"passage":"rom.5.8","reason":"Again.","citations":[]},
        {"passage":"1John.4.9","reason":"Sent his Son into the world.","citations":["G2889"]}]}"#;
    let (connections, dropped) =
        parse_connections(&reply_of("anthropic", text), &context()).unwrap();
    assert_eq!(connections.len(), 2);
    assert_eq!(connections[0].passage, "rom.5.8");
    assert_eq!(
        connections[0].citations,
        [
            Citation::lexicon_entry("G0026"),
            Citation::topic("naves:love")
        ]
    );
    assert_eq!(connections[1].passage, "1john.4.9");
    assert_eq!(connections[1].reason, "Sent his Son into the world.");
    // naves:mercy, and matt.5.44 (the connection, not its citations).
    assert_eq!(dropped, 2);
}

#[test]
fn malformed_answers_are_malformed() {
    let context = context();
    let malformed = |result: Result<(), LlmError>| match result {
        Err(LlmError::Malformed { provider, reason }) => {
            assert_eq!(provider, "openai");
            reason
        }
        other => panic!("expected Malformed, got {other:?}"),
    };
    let reply = |text: &str| reply_of("openai", text);

    let reason =
        malformed(parse_explanation(&reply("I cannot help with that."), &context).map(drop));
    assert_eq!(reason, "no JSON object in the answer");
    let reason = malformed(parse_explanation(&reply(r#"{"answer":"x"}"#), &context).map(drop));
    assert_eq!(reason, r#"the JSON object in the answer has no "text""#);
    let reason = malformed(
        parse_explanation(&reply(r#"{"text":["x"],"citations":[]}"#), &context).map(drop),
    );
    assert!(
        reason.starts_with("the JSON object is not of the asked shape"),
        "{reason}"
    );
    malformed(parse_explanation(&reply(r#"{"text":"   "}"#), &context).map(drop));
    malformed(parse_explanation(&reply(r#"["text"]"#), &context).map(drop));

    malformed(parse_questions(&reply(r#"{"questions":"Why?"}"#), &context).map(drop));
    malformed(parse_questions(&reply(r#"{"questions":[]}"#), &context).map(drop));
    malformed(
        parse_questions(&reply(r#"{"questions":[{"question":"Why?"}]}"#), &context).map(drop),
    );
    // Cut short at max_tokens.
    malformed(
        parse_questions(
            &reply(r#"{"questions":[{"text":"a","citations":[]},{"text":"b"#),
            &context,
        )
        .map(drop),
    );
    malformed(
        parse_connections(
            &reply(r#"{"connections":[{"reason":"no passage"}]}"#),
            &context,
        )
        .map(drop),
    );
    malformed(parse_connections(&reply(r#"{"text":"wrong task"}"#), &context).map(drop));

    // An empty list of connections is an answer.
    let (connections, dropped) =
        parse_connections(&reply(r#"{"connections":[]}"#), &context).unwrap();
    assert!(connections.is_empty());
    assert_eq!(dropped, 0);
}

#[tokio::test]
async fn a_client_answer_parses_end_to_end() {
    let answer = "```json\n{\"connections\":[{\"passage\":\"rom.5.8\",\"reason\":\"Love shown.\",\"citations\":[\"G0026\",\"H1234\"]}]}\n```";
    let (base, fake) = fake_anthropic(anthropic_ok(answer)).await;
    let client = anthropic(&base, Duration::from_secs(5));
    let context = context();
    let prompt = render_connections(&context, 5);

    let reply = client.complete(&prompt.request).await.unwrap();
    let (connections, dropped) = parse_connections(&reply, &context).unwrap();

    fake.assert_no_problems();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].citations, [Citation::lexicon_entry("G0026")]);
    assert_eq!(dropped, 1);
    assert_eq!(
        reply.producer(),
        Producer {
            provider: "anthropic".into(),
            model: "claude-sonnet-4-5-20250929".into()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// The settings

fn problems(pairs: Vec<(&'static str, &'static str)>) -> Vec<String> {
    let Err(error) = LlmSettings::from_env(&Env::from_pairs(pairs)) else {
        panic!("the settings were accepted");
    };
    error.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn no_provider_configured_is_none() {
    assert!(LlmSettings::from_env(&Env::default()).unwrap().is_none());
    // The timeout alone turns nothing on.
    let env = Env::from_pairs([(AI_TIMEOUT_MS, "5000"), (ANTHROPIC_API_KEY, "  ")]);
    assert!(LlmSettings::from_env(&env).unwrap().is_none());
    let settings = LlmSettings::settings_from_env(&env).unwrap();
    assert!(!settings.any());
    assert_eq!(settings.timeout, Duration::from_secs(5));
}

#[test]
fn one_provider_is_the_client_and_two_make_a_fallback() {
    let client = LlmSettings::from_env(&Env::from_pairs([(ANTHROPIC_API_KEY, ANTHROPIC_KEY)]))
        .unwrap()
        .unwrap();
    assert_eq!(client.describe(), "anthropic/claude-sonnet-4-5");

    let client = LlmSettings::from_env(&Env::from_pairs([
        (OPENAI_API_KEY, OPENAI_KEY),
        (OPENAI_MODEL, "llama-3.1-8b"),
        (OPENAI_BASE_URL, "http://127.0.0.1:8000"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(client.describe(), "openai/llama-3.1-8b");

    let env = Env::from_pairs([
        (ANTHROPIC_API_KEY, ANTHROPIC_KEY),
        (ANTHROPIC_MODEL, "claude-opus-4-1"),
        (OPENAI_API_KEY, OPENAI_KEY),
    ]);
    let client = LlmSettings::from_env(&env).unwrap().unwrap();
    assert_eq!(
        client.describe(),
        "anthropic/claude-opus-4-1 then openai/gpt-4o-mini"
    );
    let settings = LlmSettings::settings_from_env(&env).unwrap();
    let anthropic = settings.anthropic.unwrap();
    assert_eq!(anthropic.base_url, "https://api.anthropic.com");
    assert_eq!(anthropic.timeout, Duration::from_millis(20_000));
    let openai = settings.openai.unwrap();
    assert_eq!(openai.model, "gpt-4o-mini");
    assert_eq!(openai.base_url, "https://api.openai.com");
}

#[test]
fn a_half_configured_provider_names_the_missing_key() {
    assert_eq!(
        problems(vec![(ANTHROPIC_MODEL, "claude-opus-4-1")]),
        ["GOSPELIB_ANTHROPIC_API_KEY is not set: expected an Anthropic API key (sk-ant-…)"]
    );
    let lines = problems(vec![
        (OPENAI_BASE_URL, "http://127.0.0.1:8000"),
        (ANTHROPIC_API_KEY, ANTHROPIC_KEY),
    ]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("GOSPELIB_OPENAI_API_KEY is not set"),
        "{lines:?}"
    );
}

#[test]
fn bad_values_are_named_and_keys_never_shown() {
    let lines = problems(vec![
        (ANTHROPIC_API_KEY, "sk-ant hunter2"),
        (OPENAI_API_KEY, OPENAI_KEY),
        (OPENAI_BASE_URL, "ftp://example.com"),
        (OPENAI_MODEL, "gpt 4"),
        (AI_TIMEOUT_MS, "soon"),
    ]);
    let names: Vec<&str> = lines
        .iter()
        .map(|line| line.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            AI_TIMEOUT_MS,
            ANTHROPIC_API_KEY,
            OPENAI_MODEL,
            OPENAI_BASE_URL
        ]
    );
    let text = lines.join("\n");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(OPENAI_KEY), "{text}");
    assert!(text.contains("ftp"), "{text}");
}

/// Connections that all name passages the context does not hold are no answer (the assistant
/// then falls back rather than caching an empty list); an empty list as such is an answer.
#[test]
fn connections_all_invented_are_malformed_but_none_is_an_answer() {
    let text = r#"{"connections":[{"passage":"Romans 5:8","reason":"love","citations":[]},
        {"passage":"rev.99.1","reason":"made up","citations":[]}]}"#;
    assert!(matches!(
        parse_connections(&reply_of("anthropic", text), &context()),
        Err(LlmError::Malformed { .. })
    ));
    let (connections, dropped) =
        parse_connections(&reply_of("anthropic", r#"{"connections":[]}"#), &context()).unwrap();
    assert!(connections.is_empty());
    assert_eq!(dropped, 0);
    // Named, each unusable (the passage itself, no reason): no answer either.
    let unusable = r#"{"connections":[{"passage":"john.3.16","reason":"itself","citations":[]},
        {"passage":"rom.5.8","reason":"  ","citations":[]}]}"#;
    assert!(matches!(
        parse_connections(&reply_of("anthropic", unusable), &context()),
        Err(LlmError::Malformed { .. })
    ));
}

//! What a subgraph's caller check costs per request, in process (no network, no Redis): the
//! same router-like entity fetch through a [`CallerGuard`] in front of an executor that answers
//! at once, for
//!   1. an anonymous request (no header: the baseline);
//!   2. a signed query (the context verified: base64, HMAC-SHA256 over the query's and the
//!      variables' digests, the payload's JSON; then the operation read from the parsed-document
//!      cache, to refuse a mutation signed for many uses);
//!
//! and, apart, the two parts of 2: the verification alone and the operation's reading alone.
//! One-use contexts (mutations) also claim their nonce in Redis: one round trip, measured in
//! the nonce ledger's figures (README).
//!
//! Prints the mean of each over 20,000 requests, the median of 5 rounds.
//!
//! `cargo bench -p gospelib-kit --bench caller_guard`

use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{
    CALLER_HEADER, Caller, CallerGuard, DEFAULT_LIFETIME, ForwardedHeaders, InternalSecret,
    variables_digest,
};
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::parsed_documents::ParsedDocuments;
use gospelib_kit::stores::BoxFuture;

const ROUNDS: usize = 5;
const REQUESTS: usize = 20_000;

/// A fetch of the size the router sends study for a reader page's highlights.
const FETCH: &str = "query($representations:[_Any!]!){_entities(representations:$representations){...on Passage{myHighlights{id color passageId createdAt} myNotes{id title body version range{start end}}}}}";

/// Answers every request at once.
struct Answer;

impl GraphQlExecutor for Answer {
    fn execute(&self, _: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        Box::pin(async { async_graphql::Response::new(async_graphql::Value::Null) })
    }
    fn federation_sdl(&self) -> String {
        String::new()
    }
}

fn variables() -> async_graphql::Variables {
    async_graphql::Variables::from_json(serde_json::json!({
        "representations": [{"__typename": "Passage", "id": "john.3.16"}]
    }))
}

/// The mean time of `run` over [`REQUESTS`] calls, the median of [`ROUNDS`] rounds.
fn measure(mut run: impl FnMut()) -> Duration {
    for _ in 0..1_000 {
        run();
    }
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..REQUESTS {
                run();
            }
            started.elapsed() / REQUESTS as u32
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let key = InternalSecret::new(&[7u8; 32])
        .expect("a secret")
        .caller_key("study");
    // Nothing here claims a nonce: no Redis is reached.
    let ledger = NonceLedger::new(
        redis::Client::open("redis://127.0.0.1:1").expect("a URL"),
        "bench",
    );
    let guard = CallerGuard::new(Arc::new(Answer), key.clone(), ledger);
    let digest = variables_digest(&variables());
    // Signed once: a context lives 30 s, far longer than a round.
    let header = key.sign(
        &Caller::user(uuid::Uuid::new_v4()),
        FETCH,
        &digest,
        DEFAULT_LIFETIME,
    );
    let request = |signed: bool| {
        let request = async_graphql::Request::new(FETCH).variables(variables());
        if signed {
            request.data(ForwardedHeaders(vec![(
                CALLER_HEADER.to_owned(),
                header.clone(),
            )]))
        } else {
            request
        }
    };
    let ask = |signed: bool| {
        let response = runtime.block_on(guard.execute(request(signed)));
        assert!(response.errors.is_empty(), "{:?}", response.errors);
    };
    let anonymous = measure(|| ask(false));
    let signed = measure(|| ask(true));
    let verify = measure(|| {
        key.verify(&header, FETCH, &digest).expect("verified");
    });
    let documents = ParsedDocuments::global();
    let operation = measure(|| {
        documents.operation_type(FETCH, None).expect("a query");
    });
    println!(
        "caller guard, one request in process (mean of {REQUESTS}, median of {ROUNDS} rounds):"
    );
    println!(
        "  anonymous (baseline)        {:>8.2} µs",
        micros(anonymous)
    );
    println!(
        "  signed query                {:>8.2} µs  (+{:.2} µs)",
        micros(signed),
        micros(signed.saturating_sub(anonymous))
    );
    println!("    of which verifying        {:>8.2} µs", micros(verify));
    println!(
        "    of which the operation    {:>8.2} µs",
        micros(operation)
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

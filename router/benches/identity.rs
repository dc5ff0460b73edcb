//! What identity, entitlements and rate limits add to a request, measured inside the router
//! (no network between client and router, so the figure is the router's own work): the same
//! one-fetch query answered by the router as the kit's GraphQL service, for
//!   1. an anonymous caller, no plans enforced (the baseline);
//!   2. an anonymous caller whose operation is counted against a bucket (the rate limit: one
//!      Redis script call when `GOSPELIB_REDIS_URL` is set, else the local limiter);
//!   3. a signed-in caller: the Clerk session token verified (RS256, keys from a local JWKS),
//!      the caller's plan (from the router's entitlement cache, as between billing changes), the
//!      rate limit, and the caller context signed into the fetch and checked by the subgraph's
//!      guard.
//!
//! Prints the median and p99 of each, and the differences with the baseline.
//!
//! `cargo bench -p gospelib-router --bench identity` (with the stack's variables for Redis)

use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{CallerGuard, ForwardedHeaders, InternalSecret, user_id_for_clerk};
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::plans::Plans;
use gospelib_router::entitlements::CallerAccess;
use gospelib_router::http::RouterService;
use gospelib_router::identity::Identity;
use gospelib_router::jwt::{JwtSettings, JwtVerifier};
use gospelib_router::pipeline::{PlanEnforcement, Router};
use gospelib_router::rate_limit::{RateLimitSettings, RateLimiter};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::json;

const SDL: &str = include_str!("../tests/fixtures/products-reviews.graphql");
const KEY_PEM: &[u8] = include_bytes!("../tests/fixtures/jwt/key1.pem");
const ISSUER: &str = "https://clerk.bench.invalid";
const QUERY: &str = "{ topProducts { name } }";
const WARMUP: usize = 500;
const RUNS: usize = 5_000;

struct Products;

#[async_graphql::Object(name = "Query")]
impl Products {
    async fn top_products(&self) -> Vec<Product> {
        vec![
            Product {
                upc: "1".into(),
                name: "Table".into(),
            },
            Product {
                upc: "2".into(),
                name: "Couch".into(),
            },
        ]
    }
}

#[derive(async_graphql::SimpleObject)]
struct Product {
    upc: String,
    name: String,
}

/// A local JWKS with the test key; its URL, and a session token signed with the key.
async fn clerk() -> (String, String) {
    let signing = EncodingKey::from_rsa_pem(KEY_PEM).unwrap();
    let jwk = Jwk::from_encoding_key(&signing, Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
        unreachable!("an RSA key");
    };
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": rsa.n, "e": rsa.e}]});
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".to_owned());
    let now = get_current_timestamp();
    let claims = json!({"sub": "user_bench", "sid": "sess_bench", "iss": ISSUER, "nbf": now, "exp": now + 3600});
    let token = jsonwebtoken::encode(&header, &claims, &signing).unwrap();
    (format!("http://{address}/jwks.json"), token)
}

/// The catalogue with a bucket on the demo's root field that no run reaches.
fn plans() -> Arc<Plans> {
    let text = gospelib_kit::plans::BUILT_IN
        .replace(
            "[buckets.lexicon]",
            "[buckets.demo]\nwindow = \"minute\"\nfields = [\"Query.topProducts\"]\n\n[buckets.lexicon]",
        )
        .replace("\nlimits = { ", "\nlimits = { demo = 100000000, ");
    Arc::new(Plans::parse(&text).unwrap())
}

fn service(enforce: bool, identity: Identity, secret: &InternalSecret) -> RouterService {
    let products: Arc<dyn GraphQlExecutor> = Arc::new(CallerGuard::new(
        Arc::new(
            async_graphql::Schema::build(
                Products,
                async_graphql::EmptyMutation,
                async_graphql::EmptySubscription,
            )
            .enable_federation()
            .finish(),
        ),
        secret.caller_key("products"),
        // Never asked: the bench sends no mutation, whose contexts alone are claimed.
        NonceLedger::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "bench"),
    ));
    let transport = InProcess::default().with("products", Arc::new(ExecutorSubgraph(products)));
    let mut router = Router::new(Supergraph::parse(SDL, None).unwrap(), Arc::new(transport))
        .with_internal_secret(secret.clone());
    if enforce {
        let redis = std::env::var("GOSPELIB_REDIS_URL")
            .ok()
            .and_then(|url| redis::Client::open(url).ok());
        let (mut enforcement, _) = PlanEnforcement::start(plans(), None);
        enforcement.limiter = Arc::new(RateLimiter::new(
            redis,
            RateLimitSettings {
                key_prefix: format!("gl:bench:{}", std::process::id()),
                ..RateLimitSettings::default()
            },
        ));
        // As between billing's changes: the signed-in caller's plan is in the local cache.
        enforcement.entitlements.put(
            user_id_for_clerk("user_bench"),
            CallerAccess {
                plan: "scholar".into(),
                entitlements: vec!["interlinear".into()],
            },
        );
        router = router.with_plans(enforcement);
    }
    RouterService::new(Arc::new(router)).with_identity(identity)
}

async fn measure(name: &str, service: &RouterService, token: Option<&str>) -> (Duration, Duration) {
    let request = || {
        let mut request = async_graphql::Request::new(QUERY);
        if let Some(token) = token {
            request.data.insert(ForwardedHeaders(vec![(
                "authorization".to_owned(),
                format!("Bearer {token}"),
            )]));
        }
        request
    };
    for _ in 0..WARMUP {
        let answer = service.call(request()).await;
        assert!(answer.error_codes.is_empty(), "{name}: {}", answer.json());
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let answer = service.call(request()).await;
        times.push(started.elapsed());
        assert!(answer.error_codes.is_empty());
    }
    times.sort();
    let (median, p99) = (times[RUNS / 2], times[RUNS * 99 / 100]);
    println!(
        "{name:<44} median {:>7.1} µs   p99 {:>7.1} µs",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    (median, p99)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let secret = InternalSecret::new(&[5; 32]).unwrap();
        let (jwks, token) = clerk().await;
        let sessions = Arc::new(JwtVerifier::new(JwtSettings::new(jwks, ISSUER, None)).unwrap());
        let identity = Identity {
            sessions: Some(sessions),
            partner_keys: None,
        };
        let redis = if std::env::var("GOSPELIB_REDIS_URL").is_ok() {
            "Redis"
        } else {
            "the local limiter (no GOSPELIB_REDIS_URL)"
        };
        println!("one in-process fetch per request; rate limits through {redis}; {RUNS} runs each");
        if let Ok(url) = std::env::var("GOSPELIB_REDIS_URL") {
            // The floor under any shared limit: one round trip to Redis from this client.
            let client = redis::Client::open(url).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let mut times = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let started = Instant::now();
                let _: String = redis::cmd("PING").query_async(&mut connection).await.unwrap();
                times.push(started.elapsed());
            }
            times.sort();
            println!(
                "{:<44} median {:>7.1} µs   p99 {:>7.1} µs",
                "one Redis PING (the round trip's floor)",
                times[RUNS / 2].as_secs_f64() * 1e6,
                times[RUNS * 99 / 100].as_secs_f64() * 1e6
            );
            let mut times = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let started = Instant::now();
                let _: String = redis::cmd("SET")
                    .arg("gl:bench:set")
                    .arg("1")
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                times.push(started.elapsed());
            }
            times.sort();
            println!(
                "{:<44} median {:>7.1} µs   p99 {:>7.1} µs",
                "one Redis SET with expiry (a write)",
                times[RUNS / 2].as_secs_f64() * 1e6,
                times[RUNS * 99 / 100].as_secs_f64() * 1e6
            );
        }
        let plain = service(false, identity.clone(), &secret);
        let enforced = service(true, identity, &secret);
        let (base, _) = measure("anonymous, no plans enforced", &plain, None).await;
        let (limited, _) = measure("anonymous, rate limited", &enforced, None).await;
        let (signed, _) = measure("signed in: token, plan, rate limit, signing", &enforced, Some(&token)).await;
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "added at the median: rate limit {:.1} µs; identity + entitlements + rate limit + signed context {:.1} µs",
            micros(limited.saturating_sub(base)),
            micros(signed.saturating_sub(base))
        );
    });
}

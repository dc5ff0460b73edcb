//! Clerk session-token verification (`gospelib_router::jwt`) against a real JWKS endpoint: a
//! local axum server that counts its requests and whose key set a test swaps (a key rotation) or
//! breaks. Tokens are signed with the committed test-only key pairs in `fixtures/jwt/`.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gospelib_router::jwt::{JwtError, JwtSettings, JwtVerifier, MAX_JWKS_BYTES, SessionClaims};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};

const ISSUER: &str = "https://clerk.gospelib.test";
const AUDIENCE: &str = "https://app.gospelib.test";

const KEY1_PEM: &[u8] = include_bytes!("fixtures/jwt/key1.pem");
const KEY1_PUBLIC_PEM: &[u8] = include_bytes!("fixtures/jwt/key1.pub.pem");
const KEY2_PEM: &[u8] = include_bytes!("fixtures/jwt/key2.pem");

/// Asserts that a verification failed with the given error.
macro_rules! assert_refused {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {{
        let result = $result;
        assert!(
            matches!(&result, Err($pattern) $(if $guard)?),
            "expected {}, got {result:?}",
            stringify!($pattern)
        );
    }};
}

// ---- keys and tokens ----

/// A test key pair: its `kid`, its private key for signing and its public JWK.
struct TestKey {
    kid: &'static str,
    signing: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn new(kid: &'static str, private_pem: &[u8]) -> Self {
        let signing = EncodingKey::from_rsa_pem(private_pem).expect("a test RSA key");
        let jwk = Jwk::from_encoding_key(&signing, Algorithm::RS256).expect("its JWK");
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            panic!("an RSA key gives an RSA JWK");
        };
        let jwk =
            json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": rsa.n, "e": rsa.e});
        Self { kid, signing, jwk }
    }

    /// These claims, signed RS256 with this key and naming it.
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(self.kid), claims)
    }

    /// These claims, signed RS256 with this key, the header naming `kid`.
    fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.signing).expect("signs")
    }
}

fn key1() -> TestKey {
    TestKey::new("key-1", KEY1_PEM)
}

fn key2() -> TestKey {
    TestKey::new("key-2", KEY2_PEM)
}

fn now() -> u64 {
    get_current_timestamp()
}

/// A Clerk session token's claims, valid for a minute.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "user_2abcdef",
        "sid": "sess_2ghijkl",
        "azp": AUDIENCE,
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 60,
    })
}

/// [`claims`] with these changed; a `null` removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    let (Some(all), Some(changes)) = (claims.as_object_mut(), changes.as_object()) else {
        panic!("claims are objects");
    };
    for (name, value) in changes {
        match value {
            Value::Null => all.remove(name),
            value => all.insert(name.clone(), value.clone()),
        };
    }
    claims
}

/// A token assembled by hand: base64url header and payload JSON, and this signature part.
fn hand_made(header: &Value, claims: &Value, signature: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.{signature}")
}

// ---- the JWKS server ----

#[derive(Clone)]
struct Jwks {
    body: Arc<Mutex<Value>>,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

async fn answer_jwks(State(jwks): State<Jwks>) -> Response {
    jwks.hits.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(jwks.status.load(Ordering::SeqCst)).expect("a status");
    if !status.is_success() {
        return (status, "the JWKS is down").into_response();
    }
    let body = jwks.body.lock().expect("the JWKS body").clone();
    Json(body).into_response()
}

/// A JWKS endpoint on a loopback port.
struct JwksServer {
    url: String,
    jwks: Jwks,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> Self {
        let jwks = Jwks {
            body: Arc::new(Mutex::new(key_set(keys))),
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(answer_jwks))
            .with_state(jwks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("its address")
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the JWKS server");
        });
        Self { url, jwks, task }
    }

    /// Serves these keys from now on.
    fn publish(&self, keys: &[&TestKey]) {
        self.publish_raw(key_set(keys));
    }

    /// Serves this body from now on.
    fn publish_raw(&self, body: Value) {
        *self.jwks.body.lock().expect("the JWKS body") = body;
    }

    /// Answers every request with this status (and no key set when it is not 2xx).
    fn answer_with(&self, status: StatusCode) {
        self.jwks.status.store(status.as_u16(), Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.jwks.hits.load(Ordering::SeqCst)
    }

    /// Stops listening; returns the URL, which now refuses connections.
    async fn stop(self) -> String {
        self.task.abort();
        let _ = self.task.await;
        self.url
    }
}

fn key_set(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()})
}

fn settings(url: &str, audience: Option<&str>) -> JwtSettings {
    JwtSettings {
        fetch_timeout: Duration::from_secs(2),
        ..JwtSettings::new(url, ISSUER, audience.map(str::to_owned))
    }
}

fn verifier(url: &str, audience: Option<&str>) -> JwtVerifier {
    JwtVerifier::new(settings(url, audience)).expect("a verifier")
}

/// A server serving key 1 and a verifier reading it.
async fn key1_served(audience: Option<&str>) -> (JwksServer, JwtVerifier, TestKey) {
    let key = key1();
    let server = JwksServer::start(&[&key]).await;
    let verifier = verifier(&server.url, audience);
    (server, verifier, key)
}

// ---- valid tokens ----

#[tokio::test]
async fn a_valid_token_gives_its_claims_and_the_keys_are_fetched_once() {
    let (server, verifier, key) = key1_served(Some(AUDIENCE)).await;
    let claims = claims();
    let session = verifier
        .verify(&key.sign(&claims))
        .await
        .expect("a valid token");
    assert_eq!(
        session,
        SessionClaims {
            subject: "user_2abcdef".into(),
            session_id: Some("sess_2ghijkl".into()),
            expires_at: claims["exp"].as_u64().expect("exp"),
            authorized_party: Some(AUDIENCE.into()),
        }
    );
    verifier.verify(&key.sign(&claims)).await.expect("again");
    assert_eq!(
        verifier.fetches(),
        1,
        "the first use fetched the keys, the second used them"
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted() {
    let (_server, verifier, key) = key1_served(None).await;
    // Expired a second ago: four of the leeway's five seconds left to sign and fetch the keys.
    let token = key.sign(&claims_with(json!({"exp": now() - 1})));
    verifier
        .verify(&token)
        .await
        .expect("within the 5 s leeway");
}

#[tokio::test]
async fn a_token_valid_from_just_inside_the_leeway_is_accepted() {
    // `nbf` 3 s ahead: a clock that slow is within the 5 s leeway (60 s ahead is refused below).
    let (_server, verifier, key) = key1_served(Some(AUDIENCE)).await;
    let token = key.sign(&claims_with(json!({"nbf": now() + 3, "iat": now() + 3})));
    verifier
        .verify(&token)
        .await
        .expect("not valid for 3 s more, within the 5 s leeway");
}

#[tokio::test]
async fn without_an_audience_configured_aud_is_not_checked() {
    let (_server, verifier, key) = key1_served(None).await;
    let token = key.sign(&claims_with(
        json!({"aud": "someone-else", "azp": "https://elsewhere.test"}),
    ));
    verifier.verify(&token).await.expect("no audience to check");
}

#[tokio::test]
async fn the_audience_may_be_one_of_an_aud_array() {
    let (_server, verifier, key) = key1_served(Some(AUDIENCE)).await;
    let token = key.sign(&claims_with(
        json!({"aud": ["other", AUDIENCE], "azp": null}),
    ));
    verifier
        .verify(&token)
        .await
        .expect("the audience is in aud");
    let token = key.sign(&claims_with(
        json!({"aud": AUDIENCE, "azp": "https://elsewhere.test"}),
    ));
    verifier.verify(&token).await.expect("aud alone is enough");
}

#[tokio::test]
async fn the_audience_may_be_the_azp() {
    let (_server, verifier, key) = key1_served(Some(AUDIENCE)).await;
    let token = key.sign(&claims_with(json!({"aud": null, "azp": AUDIENCE})));
    let session = verifier
        .verify(&token)
        .await
        .expect("the audience is the azp");
    assert_eq!(session.authorized_party.as_deref(), Some(AUDIENCE));
    assert_eq!(session.session_id.as_deref(), Some("sess_2ghijkl"));
}

// ---- refused claims ----

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    let token = key.sign(&claims_with(json!({"exp": now() - 30})));
    let result = verifier.verify(&token).await;
    assert_refused!(&result, JwtError::Expired);
    assert!(result.unwrap_err().is_client_error());
}

#[tokio::test]
async fn a_token_valid_for_longer_than_a_session_token_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    // An hour ahead, within the 5 s leeway: the longest accepted.
    let hour = key.sign(&claims_with(json!({"exp": now() + 3600 + 4})));
    verifier.verify(&hour).await.expect("an hour ahead");
    // A minute past that, and a year ahead: signed by the issuer, but not a session token's
    // lifetime.
    for exp in [now() + 3600 + 5 + 60, now() + 365 * 24 * 3600] {
        let token = key.sign(&claims_with(json!({ "exp": exp })));
        let result = verifier.verify(&token).await;
        assert_refused!(&result, JwtError::LivesTooLong);
        assert!(result.unwrap_err().is_client_error());
    }
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    let token = key.sign(&claims_with(json!({"nbf": now() + 60})));
    assert_refused!(verifier.verify(&token).await, JwtError::NotYetValid);
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    for iss in [
        json!("https://clerk.elsewhere.test"),
        json!(format!("{ISSUER}/")),
        json!(""),
    ] {
        let token = key.sign(&claims_with(json!({"iss": iss})));
        assert_refused!(verifier.verify(&token).await, JwtError::WrongIssuer);
    }
    // An array holding the issuer is not the issuer.
    let token = key.sign(&claims_with(json!({"iss": [ISSUER]})));
    assert_refused!(verifier.verify(&token).await, JwtError::Malformed);
}

/// Several frontend origins (the web app's domains): a token issued to any of them passes.
#[tokio::test]
async fn any_of_several_audiences_may_be_the_azp() {
    let key = key1();
    let server = JwksServer::start(&[&key]).await;
    let second = "https://www.example.test";
    let verifier = JwtVerifier::new(JwtSettings {
        audiences: vec![AUDIENCE.to_owned(), second.to_owned()],
        ..settings(&server.url, None)
    })
    .unwrap();
    for azp in [AUDIENCE, second] {
        let token = key.sign(&claims_with(json!({"aud": null, "azp": azp})));
        verifier.verify(&token).await.expect("one of the audiences");
    }
    let token = key.sign(&claims_with(
        json!({"aud": null, "azp": "https://elsewhere.test"}),
    ));
    assert_refused!(verifier.verify(&token).await, JwtError::WrongAudience);
}

/// A native app's token (no `Origin`, so Clerk sets no `azp`, and no `aud`) passes only where
/// such tokens are accepted; one naming another audience never does.
#[tokio::test]
async fn a_native_apps_token_passes_only_where_accepted() {
    let key = key1();
    let server = JwksServer::start(&[&key]).await;
    let native = key.sign(&claims_with(json!({"aud": null, "azp": null})));
    let strict = verifier(&server.url, Some(AUDIENCE));
    assert_refused!(strict.verify(&native).await, JwtError::WrongAudience);
    let accepting = JwtVerifier::new(JwtSettings {
        accept_native_tokens: true,
        ..settings(&server.url, Some(AUDIENCE))
    })
    .unwrap();
    accepting
        .verify(&native)
        .await
        .expect("a native app's token");
    let elsewhere = key.sign(&claims_with(
        json!({"aud": null, "azp": "https://elsewhere.test"}),
    ));
    assert_refused!(accepting.verify(&elsewhere).await, JwtError::WrongAudience);
    let other_aud = key.sign(&claims_with(json!({"aud": "someone-else", "azp": null})));
    assert_refused!(accepting.verify(&other_aud).await, JwtError::WrongAudience);
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (_server, verifier, key) = key1_served(Some(AUDIENCE)).await;
    let token = key.sign(&claims_with(
        json!({"aud": "https://elsewhere.test", "azp": "https://elsewhere.test"}),
    ));
    assert_refused!(verifier.verify(&token).await, JwtError::WrongAudience);
    let token = key.sign(&claims_with(json!({"aud": ["a", "b"], "azp": null})));
    assert_refused!(verifier.verify(&token).await, JwtError::WrongAudience);
    let token = key.sign(&claims_with(json!({"azp": null})));
    assert_refused!(verifier.verify(&token).await, JwtError::WrongAudience);
}

#[tokio::test]
async fn a_token_without_a_required_claim_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    for claim in ["sub", "exp", "iss"] {
        let token = key.sign(&claims_with(json!({ claim: null })));
        assert_refused!(verifier.verify(&token).await, JwtError::MissingClaim(missing) if *missing == claim);
    }
    let token = key.sign(&claims_with(json!({"sub": ""})));
    assert_refused!(verifier.verify(&token).await, JwtError::MissingClaim("sub"));
}

/// A token of one of the instance's JWT templates (signed with the same key, for another
/// service, often long-lived) names no session: it is not a session token.
#[tokio::test]
async fn a_token_that_names_no_session_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    for sid in [json!(null), json!("")] {
        let token = key.sign(&claims_with(json!({ "sid": sid })));
        assert_refused!(verifier.verify(&token).await, JwtError::MissingClaim("sid"));
    }
}

/// A session with a task left (`sts: pending`: a compromised password to reset, MFA to set
/// up) is not signed in yet; an active one (or a v1 token, without `sts`) is.
#[tokio::test]
async fn a_pending_session_is_not_signed_in() {
    let (_server, verifier, key) = key1_served(None).await;
    let pending = key.sign(&claims_with(json!({"sts": "pending", "v": 2})));
    assert_refused!(
        verifier.verify(&pending).await,
        JwtError::SessionNotActive(status) if status == "pending"
    );
    let active = key.sign(&claims_with(json!({"sts": "active", "v": 2})));
    verifier.verify(&active).await.expect("an active session");
}

// ---- refused signatures and headers ----

#[tokio::test]
async fn an_unsigned_token_is_refused_before_any_key_is_fetched() {
    let (server, verifier, _key) = key1_served(None).await;
    let token = hand_made(
        &json!({"alg": "none", "typ": "JWT", "kid": "key-1"}),
        &claims(),
        "",
    );
    assert_refused!(verifier.verify(&token).await, JwtError::UnsupportedAlgorithm(alg) if alg == "none");
    assert_eq!((verifier.fetches(), server.hits()), (0, 0));
}

#[tokio::test]
async fn an_hmac_token_keyed_with_the_public_key_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    verifier.refresh().await.expect("the keys");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.into());
    let secret = EncodingKey::from_secret(KEY1_PUBLIC_PEM).expect("an HMAC key");
    let token = jsonwebtoken::encode(&header, &claims(), &secret).expect("signs");
    assert_refused!(verifier.verify(&token).await, JwtError::UnsupportedAlgorithm(alg) if alg == "HS256");
    for alg in ["ES256", "RS512", "PS256", "rs256"] {
        let token = hand_made(&json!({"alg": alg, "kid": "key-1"}), &claims(), "c2ln");
        assert_refused!(verifier.verify(&token).await, JwtError::UnsupportedAlgorithm(got) if got == alg);
    }
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let (_server, verifier, key) = key1_served(None).await;
    let token = key.sign(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(claims_with(json!({"sub": "user_admin"})).to_string());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_refused!(verifier.verify(&tampered).await, JwtError::BadSignature);
    verifier
        .verify(&token)
        .await
        .expect("the original still verifies");
}

#[tokio::test]
async fn a_token_signed_by_another_key_than_its_kid_is_refused() {
    let key1 = key1();
    let server = JwksServer::start(&[&key1, &key2()]).await;
    let verifier = verifier(&server.url, None);
    let token = key2().sign_as(Some(key1.kid), &claims());
    assert_refused!(verifier.verify(&token).await, JwtError::BadSignature);
    let stripped = format!("{}.", token.rsplit_once('.').expect("three parts").0);
    assert_refused!(verifier.verify(&stripped).await, JwtError::BadSignature);
}

#[tokio::test]
async fn a_token_without_a_kid_is_refused() {
    let (server, verifier, key) = key1_served(None).await;
    assert_refused!(
        verifier.verify(&key.sign_as(None, &claims())).await,
        JwtError::MissingKeyId
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn garbage_is_malformed() {
    let (server, verifier, _key) = key1_served(None).await;
    let not_json = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("not json"));
    let too_many = format!(
        "{}.e30.c2ln.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"key-1"}"#)
    );
    for garbage in [
        "",
        "a.b",
        "x.y.z",
        "...",
        "Bearer x.y.z",
        &not_json,
        &too_many,
    ] {
        let result = verifier.verify(garbage).await;
        assert_refused!(&result, JwtError::Malformed);
        assert!(result.unwrap_err().is_client_error());
    }
    let huge = "a".repeat(20_000);
    assert_refused!(
        verifier.verify(&format!("{huge}.{huge}.{huge}")).await,
        JwtError::Malformed
    );
    assert_eq!(server.hits(), 0, "no garbage reached the key set");
}

// ---- the key set ----

#[tokio::test]
async fn a_key_that_appears_after_a_rotation_is_fetched() {
    let (key1, key2) = (key1(), key2());
    let server = JwksServer::start(&[&key1]).await;
    let verifier = JwtVerifier::new(JwtSettings {
        min_refetch_interval: Duration::from_millis(500),
        ..settings(&server.url, None)
    })
    .expect("a verifier");
    // Every token is signed first: RSA signing is slow in a debug build, and signing between
    // the first fetch and the next check could outlast the interval. Each later check has a
    // token of its own (another session), so it looks its key up rather than being remembered.
    let key1_token = key1.sign(&claims());
    let key2_token = key2.sign(&claims());
    let key2_later = key2.sign(&claims_with(json!({"sid": "sess_later"})));
    let key1_later = key1.sign(&claims_with(json!({"sid": "sess_later"})));
    verifier.verify(&key1_token).await.expect("key 1");
    assert_eq!(verifier.fetches(), 1);

    // Within the interval an unknown kid does not fetch.
    assert_refused!(verifier.verify(&key2_token).await, JwtError::UnknownKey(kid) if kid == "key-2");
    assert_eq!(verifier.fetches(), 1);

    tokio::time::sleep(Duration::from_millis(600)).await;
    server.publish(&[&key1, &key2]);
    let session = verifier
        .verify(&key2_token)
        .await
        .expect("key 2 after the rotation");
    assert_eq!(session.subject, "user_2abcdef");
    assert_eq!(verifier.fetches(), 2);
    verifier.verify(&key2_later).await.expect("key 2, held");
    verifier
        .verify(&key1_later)
        .await
        .expect("key 1, still published");
    assert_eq!((verifier.fetches(), server.hits()), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_at_most_one_fetch() {
    let (server, verifier, key) = key1_served(None).await;
    let verifier = Arc::new(verifier);
    verifier.verify(&key.sign(&claims())).await.expect("key 1");
    assert_eq!(verifier.fetches(), 1);
    // Past the default one-second interval, so the flood may fetch once.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let flood: Vec<_> = (0..50)
        .map(|i| {
            let verifier = Arc::clone(&verifier);
            let kid = format!("made-up-{i}-{}", now());
            // The key is looked up before the signature is read, so none is needed.
            let token = hand_made(&json!({"alg": "RS256", "kid": kid}), &claims(), "c2ln");
            tokio::spawn(async move { (kid, verifier.verify(&token).await) })
        })
        .collect();
    for request in flood {
        let (kid, result) = request.await.expect("the request");
        assert_refused!(result, JwtError::UnknownKey(named) if *named == kid);
    }
    // The one before the flood, and one for all of it.
    assert_eq!(verifier.fetches(), 2);
    assert_eq!(server.hits(), 2);
    verifier
        .verify(&key.sign(&claims()))
        .await
        .expect("key 1, still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_jwks_down_before_any_fetch_the_keys_are_unavailable() {
    let key = key1();
    let url = JwksServer::start(&[&key]).await.stop().await;
    let verifier = Arc::new(verifier(&url, None));
    // Signed before the first fetch: RSA signing is slow in a debug build, and signing between
    // that fetch and the burst could outlast the one-second interval.
    let token = key.sign(&claims());

    let result = verifier.verify(&token).await;
    assert_refused!(&result, JwtError::KeysUnavailable(_));
    assert!(
        !result.unwrap_err().is_client_error(),
        "the platform's failure: 503, not 401"
    );
    assert_eq!(verifier.fetches(), 1);

    // Requests within the interval do not hammer the dead endpoint.
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let (verifier, token) = (Arc::clone(&verifier), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for request in burst {
        assert_refused!(
            request.await.expect("the request"),
            JwtError::KeysUnavailable(_)
        );
    }
    assert_eq!(verifier.fetches(), 1);

    assert_refused!(verifier.refresh().await, JwtError::KeysUnavailable(_));
    assert_eq!(verifier.fetches(), 2);
}

#[tokio::test]
async fn cached_keys_outlive_a_failing_jwks_and_a_new_kid_meanwhile_is_unavailable() {
    let (key1, key2) = (key1(), key2());
    let server = JwksServer::start(&[&key1]).await;
    let verifier = JwtVerifier::new(JwtSettings {
        min_refetch_interval: Duration::from_millis(100),
        ..settings(&server.url, None)
    })
    .expect("a verifier");
    assert_eq!(verifier.refresh().await.expect("the keys"), 1);

    server.answer_with(StatusCode::INTERNAL_SERVER_ERROR);
    let result = verifier.refresh().await;
    assert_refused!(&result, JwtError::KeysUnavailable(why) if why.contains("500"));
    verifier
        .verify(&key1.sign(&claims()))
        .await
        .expect("the cached key");

    // An unknown kid while the JWKS fails may name the key the issuer rotated to: the keys are
    // unavailable (503, which clients retry), not the token bad (401, which signs users out).
    let key2_token = key2.sign(&claims());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let result = verifier.verify(&key2_token).await;
    assert_refused!(&result, JwtError::KeysUnavailable(why) if why.contains("500"));
    assert!(!result.unwrap_err().is_client_error());
    assert_eq!((verifier.fetches(), server.hits()), (3, 3));
    verifier
        .verify(&key1.sign(&claims()))
        .await
        .expect("the cached key, still");

    // Once the JWKS answers again, the rotated key is fetched; a kid it does not list is the
    // token's fault.
    server.answer_with(StatusCode::OK);
    server.publish(&[&key1, &key2]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    verifier.verify(&key2_token).await.expect("key 2, fetched");
    let made_up = hand_made(
        &json!({"alg": "RS256", "kid": "made-up"}),
        &claims(),
        "c2ln",
    );
    assert_refused!(
        verifier.verify(&made_up).await,
        JwtError::UnknownKey(kid) if kid == "made-up"
    );
    assert_eq!(verifier.fetches(), 4);
}

#[tokio::test]
async fn only_rs256_signing_keys_of_the_jwks_are_used() {
    let (key1, key2) = (key1(), key2());
    let mut for_encryption = key2.jwk.clone();
    for_encryption["use"] = json!("enc");
    let server = JwksServer::start(&[]).await;
    server.publish_raw(json!({"keys": [
        key1.jwk,
        for_encryption,
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": "AQAB", "y": "AQAB", "use": "sig"},
        {"kty": "oct", "kid": "hmac-1", "k": "c2VjcmV0"},
    ]}));
    let verifier = verifier(&server.url, None);
    assert_eq!(verifier.refresh().await.expect("the keys"), 1);
    verifier.verify(&key1.sign(&claims())).await.expect("key 1");
    assert_refused!(
        verifier.verify(&key2.sign(&claims())).await,
        JwtError::UnknownKey(_)
    );
}

#[tokio::test]
async fn a_jwks_without_usable_keys_or_too_large_is_refused_and_the_keys_stay() {
    let (server, verifier, key) = key1_served(None).await;
    assert_eq!(verifier.refresh().await.expect("the keys"), 1);

    server.publish_raw(json!({"keys": []}));
    assert_refused!(verifier.refresh().await, JwtError::KeysUnavailable(_));
    server.publish_raw(json!({"keys": [key.jwk], "padding": "x".repeat(MAX_JWKS_BYTES)}));
    assert_refused!(verifier.refresh().await, JwtError::KeysUnavailable(why) if why.contains("larger"));
    server.publish_raw(json!(["not", "a", "key", "set"]));
    assert_refused!(verifier.refresh().await, JwtError::KeysUnavailable(_));

    verifier
        .verify(&key.sign(&claims()))
        .await
        .expect("the keys held before");
}

#[tokio::test]
async fn keep_fresh_replaces_the_key_set() {
    let (key1, key2) = (key1(), key2());
    let server = JwksServer::start(&[&key1]).await;
    let verifier = Arc::new(
        JwtVerifier::new(JwtSettings {
            refresh_every: Duration::from_millis(100),
            // Only the background refresh may bring a new key in this test.
            min_refetch_interval: Duration::from_secs(3600),
            ..settings(&server.url, None)
        })
        .expect("a verifier"),
    );
    verifier.verify(&key1.sign(&claims())).await.expect("key 1");

    server.publish(&[&key2]);
    let refresher = tokio::spawn(Arc::clone(&verifier).keep_fresh());
    let key2_token = key2.sign(&claims());
    let mut refreshed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // An unknown kid cannot fetch here: key 2 verifies once keep_fresh has fetched it.
        if verifier.verify(&key2_token).await.is_ok() {
            refreshed = true;
            break;
        }
    }
    refresher.abort();
    assert!(refreshed, "keep_fresh brought key 2 in");
    assert_refused!(
        verifier.verify(&key1.sign(&claims())).await,
        JwtError::UnknownKey(_)
    );
}

/// A remembered token is vouched for by the key that verified it, not by its `kid`: when the
/// issuer replaces the key under the same `kid` (a compromised key), tokens the old one
/// verified are checked again, and refused. A key set published again unchanged keeps them.
#[tokio::test]
async fn a_key_replaced_under_its_kid_stops_vouching_for_the_tokens_it_verified() {
    let (server, verifier, key) = key1_served(None).await;
    let token = key.sign(&claims());
    verifier.verify(&token).await.expect("valid");
    verifier.refresh().await.expect("the same key set again");
    verifier.verify(&token).await.expect("remembered");
    assert_eq!(
        verifier.signature_checks(),
        1,
        "remembered across the refresh"
    );

    // Key 2's material published under key 1's kid.
    let mut replaced = key2().jwk;
    replaced["kid"] = json!(key.kid);
    server.publish_raw(json!({ "keys": [replaced] }));
    verifier.refresh().await.expect("the replaced key set");
    assert_refused!(verifier.verify(&token).await, JwtError::BadSignature);
    assert_eq!(verifier.signature_checks(), 2);
}

#[tokio::test]
async fn a_remembered_token_still_expires() {
    let key = key1();
    let server = JwksServer::start(&[&key]).await;
    let mut settings = settings(&server.url, None);
    settings.leeway = Duration::ZERO;
    let verifier = JwtVerifier::new(settings).expect("settings");
    // Time enough to sign (slow in a debug build) and fetch the keys on a loaded machine.
    let expires = now() + 10;
    let token = key.sign(&claims_with(json!({ "exp": expires })));
    verifier
        .verify(&token)
        .await
        .expect("valid for ten seconds");
    verifier.verify(&token).await.expect("remembered");
    // Until a second past its expiry (whole seconds), whatever the time taken so far.
    let past_expiry = std::time::UNIX_EPOCH + Duration::from_secs(expires + 1);
    if let Ok(left) = past_expiry.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert_refused!(verifier.verify(&token).await, JwtError::Expired);
    // A different token (one byte changed) is never taken for the remembered one.
    let valid = key.sign(&claims());
    verifier.verify(&valid).await.expect("a valid token");
    // One character of the signature's middle changed.
    let middle = valid.rfind('.').expect("a signature") + 20;
    let mut tampered = valid.clone().into_bytes();
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    assert_refused!(verifier.verify(&tampered).await, JwtError::BadSignature);
}

/// A full memory forgets the least recently used token, not every token: the sessions in use
/// are not all checked again at once (with 10,000 readers, emptying it re-checked them all).
#[tokio::test]
async fn a_full_memory_forgets_the_least_recently_used_token_only() {
    let key = key1();
    let server = JwksServer::start(&[&key]).await;
    let mut settings = settings(&server.url, None);
    settings.remembered_tokens = std::num::NonZeroUsize::new(2).expect("not zero");
    let verifier = JwtVerifier::new(settings).expect("settings");
    let token = |user: &str| key.sign(&claims_with(json!({ "sub": user })));
    let (a, b, c) = (token("user_a"), token("user_b"), token("user_c"));

    for token in [&a, &b] {
        verifier.verify(token).await.expect("valid");
    }
    assert_eq!(verifier.signature_checks(), 2);
    // `a` used again: remembered, and now the most recently used.
    let claims = verifier.verify(&a).await.expect("remembered");
    assert_eq!(claims.subject, "user_a");
    assert_eq!(verifier.signature_checks(), 2);
    // A third token fills the memory: `b` (least recently used) is forgotten, `a` is not.
    verifier.verify(&c).await.expect("valid");
    assert_eq!(verifier.signature_checks(), 3);
    verifier.verify(&a).await.expect("still remembered");
    verifier.verify(&c).await.expect("remembered");
    assert_eq!(verifier.signature_checks(), 3);
    let claims = verifier.verify(&b).await.expect("checked again");
    assert_eq!(claims.subject, "user_b");
    assert_eq!(verifier.signature_checks(), 4);
}

//! The FCM provider against a fake Google on 127.0.0.1: a token endpoint that verifies the
//! RS256 assertion (with the test key's public half) and its claims before issuing an access
//! token, and an FCM send endpoint that accepts only a token it issued (the latest one).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use common::{Log, Reply, Script, blames_the_configuration, header, read_fixture, serve};
use gospelib_notifications::providers::fcm::{Fcm, FcmConfig, SCOPE, ServiceAccount};
use gospelib_notifications::providers::{
    Delivery, PushMessage, PushProvider, RetryPolicy, deliver_with_retries,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const PROJECT: &str = "gospelib-test";
const CLIENT_EMAIL: &str = "push@gospelib-test.iam.gserviceaccount.com";
const DEVICE: &str = "fcm-device-token:APA91bH_test-1";
const SENT: &str =
    r#"{"name":"projects/gospelib-test/messages/0:1700000000000000%31bd1c9631bd1c96"}"#;

#[derive(Clone)]
struct FakeGoogle {
    token_uri: Arc<Mutex<String>>,
    public_key: DecodingKey,
    /// The assertions' claims, one per token request.
    token_requests: Log<Value>,
    /// The access tokens issued, in order.
    issued: Arc<Mutex<Vec<String>>>,
    /// The send requests' bodies.
    sends: Log<Value>,
    script: Script,
}

async fn token(State(fake): State<FakeGoogle>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = header(&headers, "content-type");
    if content_type != "application/x-www-form-urlencoded" {
        return fake
            .token_requests
            .problem(format!("content-type {content_type:?}"));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let grant = field("grant_type");
    if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return fake.token_requests.problem(format!("grant_type {grant:?}"));
    }
    let token_uri = fake.token_uri.lock().unwrap().clone();
    let claims = match check_assertion(&field("assertion"), &fake.public_key, &token_uri) {
        Ok(claims) => claims,
        Err(problem) => return fake.token_requests.problem(problem),
    };
    fake.token_requests.push(claims);
    let access_token = {
        let mut issued = fake.issued.lock().unwrap();
        let token = format!("ya29.test-access-token-{}", issued.len() + 1);
        issued.push(token.clone());
        token
    };
    let answer = json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"});
    Reply::new(200, answer.to_string()).send().await
}

/// What Google checks of a JWT-bearer assertion: RS256 by the account's key, `iss`, `aud` (the
/// token URI), the FCM scope, and an `exp` at most an hour after `iat`.
fn check_assertion(jwt: &str, key: &DecodingKey, token_uri: &str) -> Result<Value, String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_audience(&[token_uri]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map_err(|e| format!("assertion refused: {e}"))?
        .claims;
    if claims["scope"] != SCOPE {
        return Err(format!("scope {}", claims["scope"]));
    }
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= iat || exp - iat > 3600 {
        return Err(format!("iat {iat}, exp {exp}: longer than an hour"));
    }
    Ok(claims)
}

async fn send(
    State(fake): State<FakeGoogle>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if project != PROJECT {
        return fake.sends.problem(format!("project {project:?}"));
    }
    let latest = fake.issued.lock().unwrap().last().cloned();
    let authorization = header(&headers, "authorization");
    if latest.is_none_or(|token| authorization != format!("Bearer {token}")) {
        return fake.sends.problem(format!(
            "authorization {authorization:?} is not the issued token"
        ));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake.sends.problem("the body is not JSON".to_owned());
    };
    fake.sends.push(body);
    fake.script.next().send().await
}

async fn fake_google() -> (String, FakeGoogle) {
    let fake = FakeGoogle {
        token_uri: Arc::default(),
        public_key: DecodingKey::from_rsa_pem(read_fixture("fcm-test-key.pub.pem").as_bytes())
            .unwrap(),
        token_requests: Log::default(),
        issued: Arc::default(),
        sends: Log::default(),
        script: Script::new(Reply::new(200, SENT)),
    };
    let router = Router::new()
        .route("/token", post(token))
        .route("/v1/projects/{project}/messages:send", post(send))
        .with_state(fake.clone());
    let base = serve(router).await;
    *fake.token_uri.lock().unwrap() = format!("{base}/token");
    (base, fake)
}

/// The service account's JSON, as Google issues it, pointing at the fake token endpoint.
fn credentials(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": read_fixture("fcm-test-key.pem"),
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000000",
        "token_uri": token_uri,
    })
    .to_string()
}

fn fcm(base: &str, timeout: Duration) -> Fcm {
    let account = ServiceAccount::from_json(&credentials(&format!("{base}/token"))).unwrap();
    Fcm::new(FcmConfig {
        account,
        base_url: base.into(),
        timeout,
    })
    .unwrap()
}

fn message() -> PushMessage {
    PushMessage {
        title: "Your trial ends in 3 days".into(),
        body: "Keep Scholar to keep the interlinear.".into(),
        category: "subscription".into(),
        data: [("notification_id".into(), "n-2".into())].into(),
    }
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn two_pushes_share_one_access_token() {
    let (base, fake) = fake_google().await;
    let fcm = fcm(&base, Duration::from_secs(5));

    for _ in 0..2 {
        let outcome = fcm.send_push(DEVICE, &message()).await;
        assert_eq!(
            outcome,
            Delivery::Sent {
                provider_message_id: Some(
                    "projects/gospelib-test/messages/0:1700000000000000%31bd1c9631bd1c96".into()
                )
            }
        );
    }

    fake.token_requests.assert_no_problems();
    fake.sends.assert_no_problems();
    assert_eq!(
        fake.token_requests.count(),
        1,
        "the access token was not cached"
    );
    let sends = fake.sends.entries();
    assert_eq!(sends.len(), 2);
    assert_eq!(
        sends[0],
        json!({"message": {
            "token": DEVICE,
            "notification": {"title": "Your trial ends in 3 days", "body": "Keep Scholar to keep the interlinear."},
            "data": {"category": "subscription", "notification_id": "n-2"},
            // One alert per notification on the device, whatever a retry sends again.
            "android": {"notification": {"tag": "n-2"}},
            "apns": {"headers": {"apns-collapse-id": "n-2"}},
            "webpush": {"notification": {"tag": "n-2"}}
        }})
    );
}

#[tokio::test]
async fn an_unregistered_token_is_retired() {
    let (base, fake) = fake_google().await;
    let unregistered = json!({"error": {"code": 404, "message": "Requested entity was not found.",
        "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "UNREGISTERED"}]}});
    fake.script.then(Reply::new(404, unregistered.to_string()));
    let fcm = fcm(&base, Duration::from_secs(5));

    let outcome = fcm.send_push(DEVICE, &message()).await;

    match outcome {
        Delivery::Rejected {
            retire_token: true,
            reason,
        } => assert!(reason.contains("UNREGISTERED"), "{reason}"),
        other => panic!("expected the token retired, got {other:?}"),
    }
    fake.sends.assert_no_problems();
}

/// Answers every token would get (the service account of another Firebase project, a base URL
/// that is not FCM's) fail the send without retiring the token (one configuration mistake must
/// not retire every device), its job tried again later.
#[tokio::test]
async fn answers_that_blame_the_configuration_retire_no_token() {
    let (base, fake) = fake_google().await;
    let mismatch = json!({"error": {"code": 403, "message": "SenderId mismatch",
        "status": "PERMISSION_DENIED", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "SENDER_ID_MISMATCH"}]}});
    fake.script
        .then(Reply::new(403, mismatch.to_string()))
        .then(Reply::new(404, "<html>Not Found</html>"));
    let fcm = fcm(&base, Duration::from_secs(5));

    for expected in ["SENDER_ID_MISMATCH", "404"] {
        let outcome = fcm.send_push(DEVICE, &message()).await;
        assert!(blames_the_configuration(&outcome), "{outcome:?}");
        let Delivery::Failed { reason, .. } = outcome else {
            unreachable!()
        };
        assert!(reason.contains(expected), "{reason}");
    }
    fake.sends.assert_no_problems();
}

#[tokio::test]
async fn a_401_refreshes_the_access_token_once() {
    let (base, fake) = fake_google().await;
    fake.script.then(Reply::new(
        401,
        r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#,
    ));
    let fcm = fcm(&base, Duration::from_secs(5));

    let outcome = fcm.send_push(DEVICE, &message()).await;

    assert!(matches!(outcome, Delivery::Sent { .. }), "{outcome:?}");
    assert_eq!(fake.token_requests.count(), 2);
    assert_eq!(fake.sends.count(), 2);
    fake.token_requests.assert_no_problems();
    fake.sends.assert_no_problems();
}

/// Sends refused with 401 at once make one new access token between them, not one each (the
/// shared token was fetched again for every such answer).
#[tokio::test]
async fn a_burst_of_401s_makes_one_new_access_token() {
    let (base, fake) = fake_google().await;
    let unauthenticated = Reply::new(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#);
    fake.script
        .then(unauthenticated.clone())
        .then(unauthenticated.clone())
        .then(unauthenticated);
    let fcm = fcm(&base, Duration::from_secs(5));

    let message = message();
    let outcomes =
        futures_util::future::join_all((0..3).map(|_| fcm.send_push(DEVICE, &message))).await;

    for outcome in &outcomes {
        assert!(matches!(outcome, Delivery::Sent { .. }), "{outcome:?}");
    }
    assert_eq!(
        fake.token_requests.count(),
        2,
        "one token, then one new one"
    );
    assert_eq!(fake.sends.count(), 6);
}

#[tokio::test]
async fn a_second_401_is_not_refreshed_again() {
    let (base, fake) = fake_google().await;
    let unauthenticated = Reply::new(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#);
    fake.script
        .then(unauthenticated.clone())
        .then(unauthenticated);
    let fcm = fcm(&base, Duration::from_secs(5));

    let outcome = fcm.send_push(DEVICE, &message()).await;

    assert!(blames_the_configuration(&outcome), "{outcome:?}");
    assert_eq!(fake.token_requests.count(), 2);
    assert_eq!(fake.sends.count(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit_then_fail() {
    let (base, fake) = fake_google().await;
    for _ in 0..5 {
        fake.script.then(Reply::new(
            503,
            r#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#,
        ));
    }
    let fcm = fcm(&base, Duration::from_secs(5));

    let message = message();
    let outcome = deliver_with_retries(&fast_policy(3), |_| fcm.send_push(DEVICE, &message)).await;

    assert!(outcome.is_retryable(), "{outcome:?}");
    assert_eq!(fake.sends.count(), 3);
    assert_eq!(fake.token_requests.count(), 1);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let (base, fake) = fake_google().await;
    fake.script.then(
        Reply::new(
            429,
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#,
        )
        .header("retry-after", "1"),
    );
    let fcm = fcm(&base, Duration::from_secs(5));

    let started = std::time::Instant::now();
    let message = message();
    let outcome = deliver_with_retries(&fast_policy(3), |_| fcm.send_push(DEVICE, &message)).await;

    assert!(matches!(outcome, Delivery::Sent { .. }), "{outcome:?}");
    assert_eq!(fake.sends.count(), 2);
    assert!(started.elapsed() >= Duration::from_millis(950));
}

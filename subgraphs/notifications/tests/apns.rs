//! The APNs provider against a fake APNs on 127.0.0.1 that checks every request: the provider
//! token's ES256 signature (with the test key's public half), its `kid` and `iss`, the device
//! token in the path, `apns-topic`, `apns-push-type`, `apns-priority` and the payload.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use common::{
    Log, Reply, Script, blames_the_configuration, header, read_fixture, retires_token, serve,
};
use gospelib_notifications::providers::apns::{Apns, ApnsConfig, ApnsKey};
use gospelib_notifications::providers::{
    Delivery, PushMessage, PushProvider, RetryPolicy, deliver_with_retries,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const TOPIC: &str = "org.gospelib.app";
const DEVICE: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// One request as the fake APNs saw it (after its checks passed).
#[derive(Clone, Debug)]
struct Received {
    device: String,
    jwt: String,
    payload: Value,
}

#[derive(Clone)]
struct FakeApns {
    script: Script,
    log: Log<Received>,
    public_key: DecodingKey,
}

async fn push(
    State(fake): State<FakeApns>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = header(&headers, "authorization");
    let Some(jwt) = authorization.strip_prefix("bearer ") else {
        return fake.log.problem(format!("authorization {authorization:?}"));
    };
    if let Err(problem) = check_provider_token(jwt, &fake.public_key) {
        return fake.log.problem(problem);
    }
    for (name, expected) in [
        ("apns-topic", TOPIC),
        ("apns-push-type", "alert"),
        ("apns-priority", "10"),
    ] {
        let got = header(&headers, name);
        if got != expected {
            return fake
                .log
                .problem(format!("{name} {got:?}, expected {expected:?}"));
        }
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return fake.log.problem("the body is not JSON".to_owned());
    };
    fake.log.push(Received {
        device,
        jwt: jwt.to_owned(),
        payload,
    });
    fake.script.next().send().await
}

/// The checks Apple makes of a provider token: ES256 by the registered key, `kid`, `iss`, and
/// an `iat` within the hour.
fn check_provider_token(jwt: &str, key: &DecodingKey) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("JWT header: {e}"))?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(KEY_ID) {
        return Err(format!("JWT header {header:?}"));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.set_issuer(&[TEAM_ID]);
    let claims = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map_err(|e| format!("JWT refused: {e}"))?
        .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if iat > now + 5 || now - iat > 3600 {
        return Err(format!("iat {iat} is not now ({now})"));
    }
    Ok(())
}

async fn fake_apns(default: Reply) -> (String, FakeApns) {
    let public = read_fixture("apns-test-key.pub.pem");
    let fake = FakeApns {
        script: Script::new(default),
        log: Log::default(),
        public_key: DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
    };
    let router = Router::new()
        .route("/3/device/{device}", post(push))
        .with_state(fake.clone());
    (serve(router).await, fake)
}

fn ok() -> Reply {
    Reply::new(200, "").header("apns-id", "EC1BF194-B3B2-424A-89A9-5A918A6E6B8D")
}

fn apns(base_url: &str, timeout: Duration) -> Apns {
    let key = ApnsKey::from_pem(read_fixture("apns-test-key.p8").as_bytes()).unwrap();
    Apns::new(ApnsConfig {
        key,
        key_id: KEY_ID.into(),
        team_id: TEAM_ID.into(),
        topic: TOPIC.into(),
        base_url: base_url.into(),
        timeout,
    })
    .unwrap()
}

fn message() -> PushMessage {
    PushMessage {
        title: "Welcome to GospeLib".into(),
        body: "Your Scholar trial has started.".into(),
        category: "account".into(),
        data: [("notification_id".into(), "n-1".into())].into(),
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
async fn a_push_is_sent_with_a_signed_provider_token() {
    let (base, fake) = fake_apns(ok()).await;
    let apns = apns(&base, Duration::from_secs(5));

    let outcome = apns.send_push(DEVICE, &message()).await;

    assert_eq!(
        outcome,
        Delivery::Sent {
            provider_message_id: Some("EC1BF194-B3B2-424A-89A9-5A918A6E6B8D".into())
        }
    );
    fake.log.assert_no_problems();
    let received = fake.log.entries();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].device, DEVICE);
    assert_eq!(
        received[0].payload,
        json!({
            "notification_id": "n-1",
            "aps": {
                "alert": {"title": "Welcome to GospeLib", "body": "Your Scholar trial has started."},
                "category": "account"
            }
        })
    );
}

#[tokio::test]
async fn the_provider_token_is_made_once_and_reused() {
    let (base, fake) = fake_apns(ok()).await;
    let apns = apns(&base, Duration::from_secs(5));

    for _ in 0..2 {
        let outcome = apns.send_push(DEVICE, &message()).await;
        assert!(matches!(outcome, Delivery::Sent { .. }), "{outcome:?}");
    }

    fake.log.assert_no_problems();
    let received = fake.log.entries();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].jwt, received[1].jwt, "the JWT was made twice");
}

#[tokio::test]
async fn a_dead_device_token_is_retired() {
    let (base, fake) = fake_apns(ok()).await;
    fake.script
        .then(Reply::new(
            410,
            r#"{"reason":"Unregistered","timestamp":1700000000000}"#,
        ))
        .then(Reply::new(400, r#"{"reason":"BadDeviceToken"}"#))
        .then(Reply::new(400, r#"{"reason":"PayloadTooLarge"}"#))
        .then(Reply::new(400, r#"{"reason":"DeviceTokenNotForTopic"}"#));
    let apns = apns(&base, Duration::from_secs(5));

    let gone = apns.send_push(DEVICE, &message()).await;
    let bad = apns.send_push(DEVICE, &message()).await;
    let too_large = apns.send_push(DEVICE, &message()).await;
    let wrong_topic = apns.send_push(DEVICE, &message()).await;

    assert_eq!(
        gone,
        Delivery::Rejected {
            retire_token: true,
            reason: "APNs answered 410 Gone: Unregistered".into()
        }
    );
    assert!(retires_token(&bad), "{bad:?}");
    assert!(
        matches!(
            too_large,
            Delivery::Rejected {
                retire_token: false,
                ..
            }
        ),
        "{too_large:?}"
    );
    // What every token gets when the configured topic is wrong: the send fails, its job is
    // tried again later, and no token is retired (one mistyped setting must not retire every
    // device).
    assert!(blames_the_configuration(&wrong_topic), "{wrong_topic:?}");
    // A token that is not hex never reaches Apple.
    let not_hex = apns.send_push("../../x", &message()).await;
    assert!(retires_token(&not_hex));
    assert_eq!(fake.log.count(), 4);
    fake.log.assert_no_problems();
}

/// An endpoint of the other environment (sandbox in production, or the reverse) answers
/// `BadDeviceToken` to every token: until the endpoint has accepted one of ours, that answer
/// fails the send and retires nothing, so one wrong setting cannot retire every device.
#[tokio::test]
async fn bad_device_token_retires_only_once_the_endpoint_accepted_a_token() {
    let other = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let (base, fake) = fake_apns(Reply::new(400, r#"{"reason":"BadDeviceToken"}"#)).await;
    let apns = apns(&base, Duration::from_secs(5));

    for device in [DEVICE, other, DEVICE] {
        let outcome = apns.send_push(device, &message()).await;
        assert!(blames_the_configuration(&outcome), "{outcome:?}");
    }

    // The endpoint accepts a token: it is the right environment, and a token it calls bad
    // is dead.
    fake.script.then(ok());
    let accepted = apns.send_push(other, &message()).await;
    assert!(matches!(accepted, Delivery::Sent { .. }), "{accepted:?}");
    let bad = apns.send_push(DEVICE, &message()).await;
    assert!(retires_token(&bad), "{bad:?}");
    assert_eq!(fake.log.count(), 5);
    fake.log.assert_no_problems();
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let (base, fake) = fake_apns(ok()).await;
    fake.script
        .then(Reply::new(429, r#"{"reason":"TooManyRequests"}"#).header("retry-after", "1"));
    let apns = apns(&base, Duration::from_secs(5));

    let started = Instant::now();
    let message = message();
    let outcome = deliver_with_retries(&fast_policy(3), |_| apns.send_push(DEVICE, &message)).await;

    assert!(matches!(outcome, Delivery::Sent { .. }), "{outcome:?}");
    assert_eq!(fake.log.count(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );
    fake.log.assert_no_problems();
}

#[tokio::test]
async fn a_hanging_apns_times_out_as_a_retryable_failure() {
    let (base, fake) = fake_apns(ok().after(Duration::from_secs(30))).await;
    let apns = apns(&base, Duration::from_millis(300));

    let started = Instant::now();
    let outcome = apns.send_push(DEVICE, &message()).await;

    match outcome {
        Delivery::Failed {
            retryable: true,
            reason,
            ..
        } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    fake.log.assert_no_problems();
}

//! The Resend provider against a fake Resend on 127.0.0.1 that checks the bearer key and the
//! JSON body of every email, and the retry loop around it: 429 with `Retry-After`, 500s until
//! the attempts run out, and a server that never answers.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use common::{Log, Reply, Script, header, serve};
use gospelib_notifications::providers::resend::{Resend, ResendConfig};
use gospelib_notifications::providers::{
    Delivery, EmailMessage, EmailProvider, RetryPolicy, Secret, deliver_with_retries,
};
use serde_json::{Value, json};

const API_KEY: &str = "re_test_0123456789";
const FROM: &str = "GospeLib <hello@gospelib.test>";
const IDEMPOTENCY_KEY: &str = "0b5a3f4e-3d1c-4b7a-9f5e-2c8d6e1a7b90/4f2e";

#[derive(Clone)]
struct FakeResend {
    script: Script,
    log: Log<Value>,
}

async fn emails(State(fake): State<FakeResend>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = header(&headers, "authorization");
    if authorization != format!("Bearer {API_KEY}") {
        return fake.log.problem(format!("authorization {authorization:?}"));
    }
    // Every attempt of one send carries the send's key: Resend answers a repeat with the first
    // answer instead of sending the email again.
    let key = header(&headers, "idempotency-key");
    if key != IDEMPOTENCY_KEY {
        return fake.log.problem(format!("idempotency-key {key:?}"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake.log.problem("the body is not JSON".to_owned());
    };
    fake.log.push(body);
    fake.script.next().send().await
}

async fn fake_resend(default: Reply) -> (String, FakeResend) {
    let fake = FakeResend {
        script: Script::new(default),
        log: Log::default(),
    };
    let router = Router::new()
        .route("/emails", post(emails))
        .with_state(fake.clone());
    (serve(router).await, fake)
}

fn ok() -> Reply {
    Reply::new(200, r#"{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}"#)
}

fn resend(base: &str, timeout: Duration) -> Resend {
    Resend::new(ResendConfig {
        api_key: Secret::new(API_KEY),
        from: FROM.into(),
        base_url: base.into(),
        timeout,
    })
    .unwrap()
}

fn email() -> EmailMessage {
    EmailMessage {
        to: "reader@example.test".into(),
        subject: "Welcome to GospeLib".into(),
        text: "Your Scholar trial has started.".into(),
        html: Some("<p>Your Scholar trial has started.</p>".into()),
        idempotency_key: Some(IDEMPOTENCY_KEY.into()),
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
async fn an_email_is_sent_with_the_key_and_the_message() {
    let (base, fake) = fake_resend(ok()).await;
    let resend = resend(&base, Duration::from_secs(5));

    let outcome = resend.send_email(&email()).await;

    assert_eq!(
        outcome,
        Delivery::Sent {
            provider_message_id: Some("49a3999c-0ce1-4ea6-ab68-afcd6dc2e794".into())
        }
    );
    fake.log.assert_no_problems();
    assert_eq!(
        fake.log.entries(),
        [json!({
            "from": FROM,
            "to": ["reader@example.test"],
            "subject": "Welcome to GospeLib",
            "text": "Your Scholar trial has started.",
            "html": "<p>Your Scholar trial has started.</p>"
        })]
    );
}

#[tokio::test]
async fn a_refused_address_is_rejected_without_retrying() {
    let (base, fake) = fake_resend(ok()).await;
    fake.script.then(Reply::new(
        422,
        r#"{"statusCode":422,"name":"validation_error","message":"Invalid `to` field."}"#,
    ));
    let resend = resend(&base, Duration::from_secs(5));

    let message = email();
    let outcome = deliver_with_retries(&fast_policy(3), |_| resend.send_email(&message)).await;

    assert_eq!(
        outcome,
        Delivery::Rejected {
            retire_token: false,
            reason: "Resend answered 422 Unprocessable Entity: Invalid `to` field.".into()
        }
    );
    assert_eq!(fake.log.count(), 1);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let (base, fake) = fake_resend(ok()).await;
    fake.script.then(
        Reply::new(429, r#"{"statusCode":429,"name":"rate_limit_exceeded"}"#)
            .header("retry-after", "1"),
    );
    let resend = resend(&base, Duration::from_secs(5));

    let started = Instant::now();
    let message = email();
    let outcome = deliver_with_retries(&fast_policy(3), |_| resend.send_email(&message)).await;

    assert!(matches!(outcome, Delivery::Sent { .. }), "{outcome:?}");
    assert_eq!(fake.log.count(), 2);
    assert!(started.elapsed() >= Duration::from_millis(950));
    fake.log.assert_no_problems();
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit_then_fail() {
    let (base, fake) = fake_resend(Reply::new(
        500,
        r#"{"statusCode":500,"name":"internal_server_error"}"#,
    ))
    .await;
    let resend = resend(&base, Duration::from_secs(5));

    let message = email();
    let mut attempts = Vec::new();
    let outcome = deliver_with_retries(&fast_policy(4), |attempt| {
        attempts.push(attempt);
        resend.send_email(&message)
    })
    .await;

    match outcome {
        Delivery::Failed {
            retryable: true,
            reason,
            ..
        } => assert!(reason.starts_with("Resend answered 500"), "{reason}"),
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    assert_eq!(attempts, [1, 2, 3, 4]);
    assert_eq!(fake.log.count(), 4);
    fake.log.assert_no_problems();
}

#[tokio::test]
async fn a_hanging_server_times_out_and_is_retried() {
    let (base, fake) = fake_resend(ok().after(Duration::from_secs(30))).await;
    let resend = resend(&base, Duration::from_millis(200));

    let started = Instant::now();
    let message = email();
    let outcome = deliver_with_retries(&fast_policy(2), |_| resend.send_email(&message)).await;

    match outcome {
        Delivery::Failed {
            retryable: true,
            reason,
            ..
        } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    assert_eq!(fake.log.count(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_failure() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let resend = resend(&base, Duration::from_secs(2));

    let outcome = resend.send_email(&email()).await;

    assert!(outcome.is_retryable(), "{outcome:?}");
    assert!(!format!("{outcome:?}").contains(API_KEY));
}

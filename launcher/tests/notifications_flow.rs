//! Notifications end to end on `gospelib serve` with the real stack: a Clerk `user.created`
//! webhook (Svix-signed) makes the account, accounts' outbox relays `user.created` to
//! `gl:events:users`, the notifications consumer group makes the welcome notification, and the
//! new user sees it through the router — stored (`me { notifications }`) and live, on a
//! `notificationReceived` subscription opened over WebSocket before the webhook came. The same
//! sign-up starts billing's trial (`trial.started` on `gl:events:billing`), which becomes a
//! second notification. Another user, subscribed the same way, hears and sees only their own.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::clerk::{
    AUDIENCE, Client, ISSUER, eventually, jwks_server, session_token, unique, user_created,
};
use support::serve_with;
use support::ws::{Socket, connect_with, receive, receive_within, send};

/// Held by each test for as long as its `gospelib serve` runs. Each served process runs the
/// stream consumers, in the same consumer groups on the same streams: a process a test ends
/// (killed) while it holds another test's entry, read and not yet acknowledged, leaves that
/// entry pending until a consumer claims it (a minute idle), longer than the other test waits
/// for the notification it makes. One served process at a time in this binary, then.
static ONE_SERVED_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_served_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed holding it still released it: its process is gone.
    ONE_SERVED_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const RECEIVED: &str = "subscription { notificationReceived { title category read } }";

const INBOX: &str = "{ me { id unreadCount \
    notifications(first: 5) { edges { node { title category read } } } } }";

/// A socket signed in as `clerk_id`, subscribed to its own new notifications as operation `1`,
/// once some process listens on its live channel.
async fn subscribed(base: &str, clerk_id: &str) -> Socket {
    let token = format!("Bearer {}", session_token(clerk_id));
    let mut socket = connect_with(base, json!({"authorization": token})).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": RECEIVED}}),
    )
    .await;
    let user = gospelib_kit::caller::user_id_for_clerk(clerk_id);
    let channel = gospelib_notifications::live::inbox_channel(user);
    let redis =
        redis::Client::open(std::env::var("GOSPELIB_REDIS_URL").expect("the stack's variables"))
            .unwrap();
    let listening = eventually(Duration::from_secs(10), || async {
        let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut connection)
            .await
            .unwrap();
        counts.first().is_some_and(|(_, count)| *count > 0)
    })
    .await;
    assert!(listening, "nobody subscribed to {channel}");
    socket
}

/// The data of the next `next` of operation `1` (an `error` fails the test).
async fn next_notification(socket: &mut Socket) -> Value {
    let message = receive(socket).await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], "1", "{message}");
    assert_eq!(message["payload"].get("errors"), None, "{message}");
    message["payload"]["data"].clone()
}

/// What a sign-up makes, in title order: the welcome and the trial's start (billing).
fn sign_up_notifications() -> Vec<Value> {
    vec![
        json!({"title": "Welcome to GospeLib", "category": "ACCOUNT", "read": false}),
        json!({"title": "Your Scholar trial has started", "category": "SUBSCRIPTION", "read": false}),
    ]
}

/// The next two notifications heard live, in title order (the two streams race).
async fn heard_sign_up(socket: &mut Socket) -> Vec<Value> {
    let mut heard = vec![
        next_notification(socket).await["notificationReceived"].clone(),
        next_notification(socket).await["notificationReceived"].clone(),
    ];
    heard.sort_by_key(|n| n["title"].as_str().unwrap_or_default().to_owned());
    heard
}

/// The inbox's notifications, in title order.
fn inbox_in_title_order(body: &Value) -> Vec<Value> {
    let mut nodes: Vec<Value> = body["data"]["me"]["notifications"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|edge| edge["node"].clone())
        .collect();
    nodes.sort_by_key(|n| n["title"].as_str().unwrap_or_default().to_owned());
    nodes
}

#[test]
fn a_clerk_sign_up_becomes_a_welcome_seen_live_and_in_the_inbox_by_that_user_only() {
    // Declared first, so released last: after the process is killed.
    let _alone = one_served_at_a_time();
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
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let (ada, bob) = (unique("ada_welcome"), unique("bob_welcome"));
        let mut ada_live = subscribed(&base, &ada).await;
        let mut bob_live = subscribed(&base, &bob).await;

        // Ada signs up: she hears her welcome and her trial's start, Bob hears nothing.
        let status = client
            .deliver(
                &format!("msg_{ada}"),
                &user_created(&ada, "ada@example.com"),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(heard_sign_up(&mut ada_live).await, sign_up_notifications());
        assert_eq!(
            receive_within(&mut bob_live, Duration::from_millis(500)).await,
            None
        );

        // Stored: through the router, her inbox has both, unread.
        let ada_token = format!("Bearer {}", session_token(&ada));
        let ada_id = gospelib_kit::caller::user_id_for_clerk(&ada).to_string();
        let (status, body) = client.ask(&[("authorization", &ada_token)], INBOX).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.get("errors"), None, "{body}");
        assert_eq!(body["data"]["me"]["id"], ada_id, "{body}");
        assert_eq!(body["data"]["me"]["unreadCount"], 2, "{body}");
        assert_eq!(inbox_in_title_order(&body), sign_up_notifications());

        // Bob signs up: his own welcome only, live and stored; Ada's socket stays quiet.
        let status = client
            .deliver(
                &format!("msg_{bob}"),
                &user_created(&bob, "bob@example.com"),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(heard_sign_up(&mut bob_live).await, sign_up_notifications());
        assert_eq!(
            receive_within(&mut ada_live, Duration::from_millis(500)).await,
            None
        );
        let bob_token = format!("Bearer {}", session_token(&bob));
        let (_, body) = client.ask(&[("authorization", &bob_token)], INBOX).await;
        assert_eq!(body["data"]["me"]["unreadCount"], 2, "{body}");
        assert_eq!(inbox_in_title_order(&body), sign_up_notifications());

        // The webhook delivered again (Svix retries) makes no second welcome.
        let status = client
            .deliver(
                &format!("msg_{ada}"),
                &user_created(&ada, "ada@example.com"),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            receive_within(&mut ada_live, Duration::from_millis(800)).await,
            None
        );
        let (_, body) = client.ask(&[("authorization", &ada_token)], INBOX).await;
        assert_eq!(body["data"]["me"]["unreadCount"], 2, "{body}");
    });
}

/// Anonymous callers cannot open the live inbox: the router refuses before subscribing.
#[test]
fn an_anonymous_notification_subscription_is_refused() {
    // Declared first, so released last: after the process is killed.
    let _alone = one_served_at_a_time();
    let (_served, base, runtime) = serve_with(&["serve"], &[]);
    runtime.block_on(async {
        let mut socket = connect_with(&base, json!({})).await;
        send(
            &mut socket,
            json!({"id": "1", "type": "subscribe", "payload": {"query": RECEIVED}}),
        )
        .await;
        let message = receive(&mut socket).await;
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(
            message["payload"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{message}"
        );
    });
}

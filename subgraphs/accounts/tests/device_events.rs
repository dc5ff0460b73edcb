//! Device events against the stack's PostgreSQL and Redis: `registerDevice` and
//! `unregisterDevice` write `device.registered` and `device.removed` through the outbox (only
//! when something changed), and the consumer of `gl:events:notifications` removes a device on
//! `device.rejected` (once, its owner's only), writing `device.removed` like any removal.

mod support;

use std::time::Duration;

use gospelib_accounts::device_rejections::DeviceRejectionsSettings;
use gospelib_accounts::run_device_rejections_consumer;
use gospelib_kit::caller::{Caller, user_id_for_clerk};
use gospelib_kit::streams::ConsumerStats;
use gospelib_kit::test_stack::{eventually, group_caught_up};
use serde_json::{Value, json};
use support::*;
use tokio::sync::watch;
use uuid::Uuid;

const REGISTER: &str = "mutation($input: RegisterDeviceInput!) {
    registerDevice(input: $input) { id platform name }
}";

const UNREGISTER: &str = "mutation($id: ID!) { unregisterDevice(id: $id) }";

fn as_user(clerk_id: &str) -> Option<Caller> {
    Some(Caller::user(user_id_for_clerk(clerk_id)))
}

/// Registers `token` on `platform` for `clerk_id`; the device's id.
async fn register(
    service: &gospelib_accounts::AccountsService,
    clerk_id: &str,
    platform: &str,
    token: &str,
    name: Option<&str>,
) -> String {
    let answer = run_as(
        service,
        as_user(clerk_id),
        REGISTER,
        json!({"input": {"platform": platform, "token": token, "name": name}}),
    )
    .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"]["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn unregister(
    service: &gospelib_accounts::AccountsService,
    clerk_id: &str,
    id: &str,
) -> Value {
    run_as(service, as_user(clerk_id), UNREGISTER, json!({"id": id})).await
}

/// The payloads of the outbox rows of `stream` whose type is `kind`, in order.
async fn events_of(pool: &gospelib_kit::stores::PgPool, stream: &str, kind: &str) -> Vec<Value> {
    outbox_rows(pool, stream)
        .await
        .into_iter()
        .map(|(payload, _)| payload)
        .filter(|payload| payload["type"] == kind)
        .collect()
}

/// The sorted keys of a JSON object.
fn keys(payload: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

async fn xadd(stream: &str, fields: &[(&str, &str)]) {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let mut command = redis::cmd("XADD");
    command.arg(stream).arg("*");
    for (field, value) in fields {
        command.arg(*field).arg(*value);
    }
    let _: String = command.query_async(&mut connection).await.unwrap();
}

/// Appends a `device.rejected` to `stream` as the notifications outbox would.
async fn xadd_rejected(stream: &str, event_id: Uuid, user_id: Uuid, device_id: &str) {
    let payload = json!({
        "event_id": event_id, "type": "device.rejected", "user_id": user_id,
        "occurred_at": "2026-12-12T10:00:00.000Z", "device_id": device_id,
        "reason": "Unregistered"
    });
    xadd(
        stream,
        &[
            ("event_id", &event_id.to_string()),
            ("type", "device.rejected"),
            ("payload", &payload.to_string()),
        ],
    )
    .await;
}

async fn delete_streams(streams: &[&str]) {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(streams)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// A device-rejections consumer of `group` on `notifications`, writing to `events`; stop it
/// with the sender.
fn start_consumer(
    pool: &gospelib_kit::stores::PgPool,
    notifications: &str,
    group: &str,
    events: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<ConsumerStats>) {
    let mut settings = DeviceRejectionsSettings::new(format!("test-{}", Uuid::new_v4().simple()));
    settings.consumer.stream = notifications.to_owned();
    settings.consumer.group = group.to_owned();
    settings.consumer.dead_letter_stream = format!("{notifications}:dead");
    settings.consumer.block = Duration::from_millis(100);
    settings.consumer.claim_idle = Duration::from_millis(300);
    settings.consumer.claim_every = Duration::from_millis(100);
    settings.events_stream = events.to_owned();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_device_rejections_consumer(
        pool.clone(),
        redis(),
        settings,
        shutdown,
    ));
    (stop, task)
}

async fn device_exists(pool: &gospelib_kit::stores::PgPool, id: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts.devices WHERE id = $1::uuid)")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn registering_writes_one_device_registered_with_the_token_and_only_when_it_is_news() {
    let pool = pool().await;
    let (a, stream) = (clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let service = service(&pool, &stream);

    let token = format!("apns-{}", Uuid::new_v4().simple());
    let device_id = register(&service, &a, "IOS", &token, Some("Ada's phone")).await;
    let registered = events_of(&pool, &stream, "device.registered").await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    let event = &registered[0];
    assert_eq!(
        keys(event),
        [
            "device_id",
            "event_id",
            "occurred_at",
            "platform",
            "token",
            "type",
            "user_id"
        ]
    );
    assert_eq!(event["user_id"], json!(a_id.to_string()));
    assert_eq!(event["device_id"], json!(device_id));
    assert_eq!(event["platform"], "IOS");
    assert_eq!(event["token"], json!(token));
    assert!(Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
    assert!(event["occurred_at"].as_str().unwrap().ends_with('Z'));

    // The same token on the same platform is the same device seen again (even renamed): no
    // event.
    assert_eq!(register(&service, &a, "IOS", &token, None).await, device_id);
    assert_eq!(
        register(&service, &a, "IOS", &token, Some("renamed")).await,
        device_id
    );
    assert_eq!(
        events_of(&pool, &stream, "device.registered").await.len(),
        1
    );

    // The same token on another platform: the same device, announced again.
    assert_eq!(
        register(&service, &a, "ANDROID", &token, None).await,
        device_id
    );
    let registered = events_of(&pool, &stream, "device.registered").await;
    assert_eq!(registered.len(), 2);
    assert_eq!(registered[1]["platform"], "ANDROID");
    assert_eq!(registered[1]["device_id"], json!(device_id));
    assert_ne!(registered[1]["event_id"], registered[0]["event_id"]);

    // Another token is another device.
    let web = register(&service, &a, "WEB", "web-push-endpoint", None).await;
    let registered = events_of(&pool, &stream, "device.registered").await;
    assert_eq!(registered.len(), 3);
    assert_eq!(
        (&registered[2]["device_id"], &registered[2]["platform"]),
        (&json!(web), &json!("WEB"))
    );

    // Each was published to the stream (at least once).
    let entries = stream_entries_at_least(&stream, 3).await;
    let types: Vec<&str> = entries.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(types, ["device.registered"; 3]);
    assert!(outbox_rows(&pool, &stream).await.len() == 3);

    clean_up(&pool, &[&a], &stream).await;
}

#[tokio::test]
async fn removing_a_device_writes_device_removed_once_and_only_for_its_owner() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    create_user(&pool, &b, "Bo", "bo@example.com").await;
    let service = service(&pool, &stream);
    let device_id = register(&service, &a, "IOS", "token-to-remove", None).await;

    // Not B's to remove: nothing happens, no event.
    let by_b = unregister(&service, &b, &device_id).await;
    assert_eq!(by_b, json!({"data": {"unregisterDevice": false}}));
    assert!(events_of(&pool, &stream, "device.removed").await.is_empty());

    let by_a = unregister(&service, &a, &device_id).await;
    assert_eq!(by_a, json!({"data": {"unregisterDevice": true}}));
    let again = unregister(&service, &a, &device_id).await;
    assert_eq!(again, json!({"data": {"unregisterDevice": false}}));

    let removed = events_of(&pool, &stream, "device.removed").await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(
        keys(&removed[0]),
        ["device_id", "event_id", "occurred_at", "type", "user_id"]
    );
    assert_eq!(removed[0]["user_id"], json!(a_id.to_string()));
    assert_eq!(removed[0]["device_id"], json!(device_id));
    let entries = stream_entries_at_least(&stream, 2).await;
    assert_eq!(
        entries
            .iter()
            .map(|(_, kind, _)| kind.as_str())
            .collect::<Vec<_>>(),
        ["device.registered", "device.removed"]
    );

    clean_up(&pool, &[&a, &b], &stream).await;
}

#[tokio::test]
async fn a_rejected_device_is_removed_once_and_never_another_users() {
    let pool = pool().await;
    let (a, b, events) = (clerk_id(), clerk_id(), stream());
    let notifications = format!("gl:test:notifications:{}", Uuid::new_v4().simple());
    let dead = format!("{notifications}:dead");
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    create_user(&pool, &b, "Bo", "bo@example.com").await;
    let service = service(&pool, &events);
    let a_device = register(&service, &a, "ANDROID", "fcm-a", None).await;
    let a_other_device = register(&service, &a, "IOS", "apns-a", None).await;
    let b_device = register(&service, &b, "IOS", "apns-b", None).await;

    let (stop, consumer) = start_consumer(&pool, &notifications, "accounts", &events);
    let rejection = Uuid::new_v4();
    xadd_rejected(&notifications, rejection, a_id, &a_device).await;
    // The same event again (a redelivery), B's device named as A's, an unknown device, and an
    // event accounts does not handle.
    xadd_rejected(&notifications, rejection, a_id, &a_device).await;
    xadd_rejected(&notifications, Uuid::new_v4(), a_id, &b_device).await;
    xadd_rejected(
        &notifications,
        Uuid::new_v4(),
        a_id,
        &Uuid::new_v4().to_string(),
    )
    .await;
    xadd(
        &notifications,
        &[
            ("event_id", &Uuid::new_v4().to_string()),
            ("type", "notification.sent"),
            ("payload", "{}"),
        ],
    )
    .await;

    eventually("every entry is acknowledged", || {
        group_caught_up(&notifications, "accounts")
    })
    .await;
    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!((stats.acknowledged, stats.dead_lettered), (5, 0));

    assert!(!device_exists(&pool, &a_device).await);
    assert!(device_exists(&pool, &a_other_device).await);
    assert!(device_exists(&pool, &b_device).await, "B's device stays");
    let removed = events_of(&pool, &events, "device.removed").await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["user_id"], json!(a_id.to_string()));
    assert_eq!(removed[0]["device_id"], json!(a_device));
    assert_eq!(
        keys(&removed[0]),
        ["device_id", "event_id", "occurred_at", "type", "user_id"]
    );
    // Published to the users stream like any removal.
    let entries = stream_entries_at_least(&events, 4).await;
    assert_eq!(
        entries
            .iter()
            .filter(|(_, kind, _)| kind == "device.removed")
            .count(),
        1
    );

    // The whole stream replayed (a new group reads it from the start): nothing more.
    let (stop, replay) = start_consumer(&pool, &notifications, "accounts-replay", &events);
    eventually("the replay acknowledged everything", || {
        group_caught_up(&notifications, "accounts-replay")
    })
    .await;
    stop.send(true).unwrap();
    assert_eq!(replay.await.unwrap().acknowledged, 5);
    assert_eq!(events_of(&pool, &events, "device.removed").await.len(), 1);
    assert!(device_exists(&pool, &b_device).await);
    assert!(device_exists(&pool, &a_other_device).await);
    assert_eq!(gospelib_kit::test_stack::stream_length(&dead).await, 0);

    delete_streams(&[&notifications, &dead]).await;
    clean_up(&pool, &[&a, &b], &events).await;
}

#[tokio::test]
async fn a_malformed_device_rejected_goes_to_the_dead_letter_stream() {
    let pool = pool().await;
    let (a, events) = (clerk_id(), stream());
    let notifications = format!("gl:test:notifications:{}", Uuid::new_v4().simple());
    let dead = format!("{notifications}:dead");
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let service = service(&pool, &events);
    let device = register(&service, &a, "WEB", "web-a", None).await;

    // A dead letter from long ago (past DEAD_LETTER_RETENTION): trimmed when the next is added.
    let mut redis = redis().get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&dead)
        .arg("1-0")
        .arg("type")
        .arg("device.rejected")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (stop, consumer) = start_consumer(&pool, &notifications, "accounts", &events);
    xadd(
        &notifications,
        &[
            ("event_id", &Uuid::new_v4().to_string()),
            ("type", "device.rejected"),
            ("payload", "{"),
        ],
    )
    .await;
    let no_device = json!({"type": "device.rejected", "user_id": a_id, "reason": "x"});
    xadd(
        &notifications,
        &[
            ("type", "device.rejected"),
            ("payload", &no_device.to_string()),
        ],
    )
    .await;
    let bad_user = json!({"type": "device.rejected", "user_id": "nobody", "device_id": device});
    xadd(
        &notifications,
        &[
            ("type", "device.rejected"),
            ("payload", &bad_user.to_string()),
        ],
    )
    .await;
    // A malformed entry of a type accounts does not handle is simply acknowledged.
    xadd(
        &notifications,
        &[("type", "something.else"), ("payload", "{")],
    )
    .await;

    eventually(
        "the malformed entries are dead-lettered, the old one gone",
        || async { gospelib_kit::test_stack::stream_length(&dead).await == 3 },
    )
    .await;
    eventually("every entry is acknowledged", || {
        group_caught_up(&notifications, "accounts")
    })
    .await;
    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!((stats.acknowledged, stats.dead_lettered), (1, 3));
    assert!(device_exists(&pool, &device).await);
    assert!(events_of(&pool, &events, "device.removed").await.is_empty());

    delete_streams(&[&notifications, &dead]).await;
    clean_up(&pool, &[&a], &events).await;
}

/// A phone that changed hands: the token the next user registers is taken from the previous
/// owner (their device removed, with `device.removed`), so their notifications stop reaching it.
#[tokio::test]
async fn a_token_registered_by_another_user_is_taken_from_the_previous_owner() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    create_user(&pool, &b, "Bob", "bob@example.com").await;
    let service = service(&pool, &stream);
    let token = format!("fcm-{}", Uuid::new_v4().simple());
    let adas = register(&service, &a, "ANDROID", &token, None).await;
    let bobs = register(&service, &b, "ANDROID", &token, None).await;
    assert_ne!(adas, bobs);
    assert!(!device_exists(&pool, &adas).await);
    assert!(device_exists(&pool, &bobs).await);
    let removed = events_of(&pool, &stream, "device.removed").await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["user_id"], json!(a_id.to_string()));
    assert_eq!(removed[0]["device_id"], json!(adas));
    // Bob seeing his phone again takes nothing more from anyone.
    register(&service, &b, "ANDROID", &token, None).await;
    assert_eq!(events_of(&pool, &stream, "device.removed").await.len(), 1);

    // Both registering one new token at the same moment: one of them ends with it, never both.
    for _ in 0..20 {
        let token = format!("fcm-{}", Uuid::new_v4().simple());
        let (adas, bobs) = tokio::join!(
            register(&service, &a, "ANDROID", &token, None),
            register(&service, &b, "ANDROID", &token, None),
        );
        let kept = [
            device_exists(&pool, &adas).await,
            device_exists(&pool, &bobs).await,
        ];
        assert_eq!(kept.iter().filter(|kept| **kept).count(), 1, "{kept:?}");
    }
}

/// A removal is stamped after the registration it removes, even by a transaction that began
/// before it (it waited for the token's lock): notifications applies a removal only when it
/// is not older than what it knows of the device, so an earlier stamp would leave the
/// previous owner's device there, and their notifications pushed to the phone's new owner.
#[tokio::test]
async fn a_removal_is_stamped_after_the_registration_it_removes() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    create_user(&pool, &a, "Ada", "ada@example.com").await;
    let b_id = create_user(&pool, &b, "Bob", "bob@example.com").await;
    let service = service(&pool, &stream);
    let token = format!("fcm-{}", Uuid::new_v4().simple());

    // Bob's transaction begins first; Ada registers the token meanwhile; then Bob's takes it.
    let mut bobs = pool.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *bobs).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let adas = register(&service, &a, "ANDROID", &token, None).await;
    let taken = gospelib_accounts::store::take_token_from_others(&mut bobs, b_id, &token)
        .await
        .unwrap();
    bobs.commit().await.unwrap();

    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].1.to_string(), adas);
    let registered = events_of(&pool, &stream, "device.registered").await;
    let registered_at = registered
        .iter()
        .find(|event| event["device_id"] == json!(adas))
        .and_then(|event| event["occurred_at"].as_str())
        .expect("Ada's device.registered")
        .to_owned();
    let removed_at = &taken[0].2;
    assert!(
        removed_at.as_str() > registered_at.as_str(),
        "removed {removed_at}, registered {registered_at}"
    );
}

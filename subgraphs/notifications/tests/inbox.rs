//! The notifications subgraph through GraphQL, as the router calls it, against the stack's
//! PostgreSQL: the inbox's pages and `unreadOnly`, the unread count, marking read, ownership
//! between two users, preferences and their validation, the test notification's rate limit,
//! and deliveries recorded only as the provider said.

mod stack;

use std::time::Duration;

use gospelib_notifications::NotificationsService;
use gospelib_notifications::providers::Delivery;
use gospelib_notifications::store::{
    Channel, DeliveryRecord, NewNotification, Store, TestLimits, recipient_digest,
};
use serde_json::{Value, json};
use stack::*;
use uuid::Uuid;

const INBOX: &str = "query($r: [_Any!]!, $first: Int, $after: String, $unread: Boolean) {
    _entities(representations: $r) { ... on User {
        id
        notifications(first: $first, after: $after, unreadOnly: $unread) {
            edges { cursor node { id title body category read createdAt } }
            pageInfo { hasNextPage hasPreviousPage endCursor }
        }
        unreadCount
    } } }";

const PREFERENCES: &str = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User {
    notificationPreferences { push email account subscription studyReminders
        quietHours { startMinute endMinute } timeZone } } } }";

const UPDATE: &str = "mutation($input: UpdateNotificationPreferencesInput!) {
    updateNotificationPreferences(input: $input) { push email account subscription studyReminders
        quietHours { startMinute endMinute } timeZone } }";

const MARK: &str = "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }";

const TEST: &str = "mutation { sendTestNotification { id title category read } }";

fn user_rep(user: Uuid) -> Value {
    json!([{"__typename": "User", "id": user.to_string()}])
}

/// Puts `count` notifications in `user`'s inbox, `n1` (oldest) to `n<count>`, with distinct
/// times; returns their ids, oldest first.
async fn fill(store: &Store, user: Uuid, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in 1..=count {
        let row = store
            .insert_notification(&NewNotification {
                user_id: user,
                category: "account",
                title: format!("n{n}"),
                body: format!("body {n}"),
                dedupe_key: format!("test-fill:{user}:{n}"),
            })
            .await
            .unwrap()
            .expect("a new notification");
        ids.push(row.id);
        // Distinct `created_at`s, so "newest first" is one order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids
}

async fn inbox(service: &NotificationsService, caller: Uuid, vars: Value) -> Value {
    let mut variables = json!({"r": user_rep(caller)});
    for (key, value) in vars.as_object().unwrap() {
        variables[key] = value.clone();
    }
    run_as(service, Some(caller), INBOX, variables).await
}

fn titles(response: &Value) -> Vec<String> {
    response["data"]["_entities"][0]["notifications"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"))
        .iter()
        .map(|edge| edge["node"]["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_inbox_pages_newest_first_and_unread_only() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let store = Store::new(pool.clone());
    let user = Uuid::new_v4();
    let ids = fill(&store, user, 5).await;

    let first = inbox(&service, user, json!({"first": 2})).await;
    assert_eq!(titles(&first), ["n5", "n4"], "{first}");
    let page = &first["data"]["_entities"][0]["notifications"];
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(page["edges"][0]["node"]["category"], "ACCOUNT");
    assert_eq!(page["edges"][0]["node"]["read"], false);
    assert!(
        page["edges"][0]["node"]["createdAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(first["data"]["_entities"][0]["unreadCount"], 5);

    let cursor = page["pageInfo"]["endCursor"].clone();
    let second = inbox(&service, user, json!({"first": 2, "after": cursor})).await;
    assert_eq!(titles(&second), ["n3", "n2"]);
    let cursor = second["data"]["_entities"][0]["notifications"]["pageInfo"]["endCursor"].clone();
    let last = inbox(&service, user, json!({"first": 2, "after": cursor})).await;
    assert_eq!(titles(&last), ["n1"]);
    assert_eq!(
        last["data"]["_entities"][0]["notifications"]["pageInfo"]["hasNextPage"],
        false
    );

    // n4 and n2 read: unreadOnly skips them, the count follows.
    let marked = run_as(&service, Some(user), MARK, json!({"ids": [ids[3], ids[1]]})).await;
    assert_eq!(marked["data"]["markNotificationsRead"], 2, "{marked}");
    // Marking them again changes nothing.
    let again = run_as(&service, Some(user), MARK, json!({"ids": [ids[3]]})).await;
    assert_eq!(again["data"]["markNotificationsRead"], 0);
    let unread = inbox(&service, user, json!({"unread": true})).await;
    assert_eq!(titles(&unread), ["n5", "n3", "n1"]);
    assert_eq!(unread["data"]["_entities"][0]["unreadCount"], 3);
    let unread_page = inbox(&service, user, json!({"unread": true, "first": 1})).await;
    let cursor =
        unread_page["data"]["_entities"][0]["notifications"]["pageInfo"]["endCursor"].clone();
    let next = inbox(
        &service,
        user,
        json!({"unread": true, "first": 1, "after": cursor}),
    )
    .await;
    assert_eq!(titles(&next), ["n3"]);

    // Bad paging input.
    let too_many = inbox(&service, user, json!({"first": 101})).await;
    assert_eq!(codes(&too_many), ["VALIDATION_ERROR"]);
    let forged = inbox(&service, user, json!({"after": "garbage"})).await;
    assert_eq!(codes(&forged), ["VALIDATION_ERROR"]);

    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn a_user_sees_and_changes_only_their_own() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let store = Store::new(pool.clone());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let of_a = fill(&store, a, 2).await;
    fill(&store, b, 1).await;

    // B asks for A's user entity: no data, like a user that does not exist.
    for query in [INBOX, PREFERENCES] {
        let response = run_as(&service, Some(b), query, json!({"r": user_rep(a)})).await;
        assert_eq!(response["data"]["_entities"], json!([null]), "{response}");
        assert!(response["errors"].is_null(), "{response}");
        let anonymous = run_as(&service, None, query, json!({"r": user_rep(a)})).await;
        assert_eq!(anonymous["data"]["_entities"], json!([null]));
    }

    // B marks A's notifications (and an unknown id) read: nothing changes, nothing is told.
    let marked = run_as(
        &service,
        Some(b),
        MARK,
        json!({"ids": [of_a[0], of_a[1], Uuid::new_v4()]}),
    )
    .await;
    assert_eq!(marked["data"]["markNotificationsRead"], 0, "{marked}");
    let seen = inbox(&service, a, json!({})).await;
    assert_eq!(seen["data"]["_entities"][0]["unreadCount"], 2);
    // A mixed list marks only the caller's own.
    let mixed = run_as(
        &service,
        Some(a),
        MARK,
        json!({"ids": [of_a[0], Uuid::new_v4()]}),
    )
    .await;
    assert_eq!(mixed["data"]["markNotificationsRead"], 1);

    // Anonymous callers and malformed ids.
    let anonymous = run_as(&service, None, MARK, json!({"ids": [of_a[1]]})).await;
    assert_eq!(codes(&anonymous), ["UNAUTHORIZED"]);
    let malformed = run_as(&service, Some(a), MARK, json!({"ids": ["nope"]})).await;
    assert_eq!(codes(&malformed), ["VALIDATION_ERROR"]);
    let anonymous = run_as(&service, None, TEST, json!({})).await;
    assert_eq!(codes(&anonymous), ["UNAUTHORIZED"]);
    let anonymous = run_as(&service, None, UPDATE, json!({"input": {"push": false}})).await;
    assert_eq!(codes(&anonymous), ["UNAUTHORIZED"]);

    clean_up(&pool, &[a, b]).await;
}

#[tokio::test]
async fn preferences_are_validated_and_stored() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let read = |who: Uuid| {
        let service = &service;
        async move {
            let response =
                run_as(service, Some(who), PREFERENCES, json!({"r": user_rep(who)})).await;
            response["data"]["_entities"][0]["notificationPreferences"].clone()
        }
    };
    let defaults = json!({"push": true, "email": true, "account": true, "subscription": true,
        "studyReminders": false, "quietHours": null, "timeZone": "UTC"});
    assert_eq!(read(user).await, defaults);

    let updated = run_as(
        &service,
        Some(user),
        UPDATE,
        json!({"input": {"email": false, "studyReminders": true, "timeZone": "America/New_York",
            "quietHours": {"startMinute": 1320, "endMinute": 420}}}),
    )
    .await;
    let expected = json!({"push": true, "email": false, "account": true, "subscription": true,
        "studyReminders": true, "quietHours": {"startMinute": 1320, "endMinute": 420},
        "timeZone": "America/New_York"});
    assert_eq!(
        updated["data"]["updateNotificationPreferences"], expected,
        "{updated}"
    );
    assert_eq!(read(user).await, expected);
    // A zone in another case is the zone, kept as the database spells it.
    let recased = run_as(
        &service,
        Some(user),
        UPDATE,
        json!({"input": {"timeZone": "AMERICA/new_york"}}),
    )
    .await;
    assert_eq!(
        recased["data"]["updateNotificationPreferences"], expected,
        "{recased}"
    );
    // Another user's are untouched.
    assert_eq!(read(other).await, defaults);

    // Bad input changes nothing.
    for input in [
        json!({"timeZone": "Mars/Olympus_Mons"}),
        json!({"timeZone": "EST; DROP TABLE x"}),
        json!({"timeZone": "posix/Europe/Paris"}),
        json!({"timeZone": "POSIX/Europe/Paris"}),
        json!({"timeZone": ""}),
        json!({"quietHours": {"startMinute": 0, "endMinute": 1440}}),
        json!({"quietHours": {"startMinute": -1, "endMinute": 10}}),
        json!({"quietHours": {"startMinute": 60, "endMinute": 60}}),
        json!({"push": false, "timeZone": "Nowhere/Town"}),
    ] {
        let response = run_as(&service, Some(user), UPDATE, json!({"input": input})).await;
        assert_eq!(
            codes(&response),
            ["VALIDATION_ERROR"],
            "{input}: {response}"
        );
    }
    assert_eq!(read(user).await, expected);

    // A patch keeps what it leaves out; `null` quiet hours remove them.
    let cleared = run_as(
        &service,
        Some(user),
        UPDATE,
        json!({"input": {"quietHours": null, "timeZone": "Europe/Paris"}}),
    )
    .await;
    let prefs = &cleared["data"]["updateNotificationPreferences"];
    assert_eq!(prefs["quietHours"], Value::Null, "{cleared}");
    assert_eq!(prefs["timeZone"], "Europe/Paris");
    assert_eq!(prefs["email"], false);
    assert_eq!(prefs["studyReminders"], true);

    clean_up(&pool, &[user, other]).await;
}

/// Two tabs change different preferences at the same moment: both changes are kept (each
/// change reads and writes under the row's lock), round after round.
#[tokio::test]
async fn concurrent_preference_changes_all_apply() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let user = Uuid::new_v4();
    let fields = ["push", "email", "account", "subscription", "studyReminders"];
    for round in 0..4 {
        // Even rounds turn every field the other way from its default, odd rounds back.
        let flipped = round % 2 == 0;
        let changes = fields.iter().map(|field| {
            let value = if *field == "studyReminders" {
                flipped
            } else {
                !flipped
            };
            run_as(
                &service,
                Some(user),
                UPDATE,
                json!({"input": {*field: value}}),
            )
        });
        for response in futures_util::future::join_all(changes).await {
            assert!(response["errors"].is_null(), "{response}");
        }
        let stored = Store::new(pool.clone()).preferences(user).await.unwrap();
        assert_eq!(
            (
                stored.push,
                stored.email,
                stored.account,
                stored.subscription
            ),
            (!flipped, !flipped, !flipped, !flipped),
            "round {round}: {stored:?}"
        );
        assert_eq!(stored.study_reminders, flipped, "round {round}");
    }
    clean_up(&pool, &[user]).await;
}

/// A session still valid for a minute after its account was deleted writes nothing that
/// would outlive the erasure (no preferences row, no test notification), and is told so.
#[tokio::test]
async fn an_erased_user_keeps_no_preferences_or_test_notifications() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let user = Uuid::new_v4();
    Store::new(pool.clone()).erase_user(user).await.unwrap();

    let updated = run_as(
        &service,
        Some(user),
        UPDATE,
        json!({"input": {"push": false}}),
    )
    .await;
    assert_eq!(codes(&updated), ["UNAUTHORIZED"], "{updated}");
    let test = run_as(&service, Some(user), TEST, json!({})).await;
    assert_eq!(codes(&test), ["UNAUTHORIZED"], "{test}");
    assert_nothing_kept(&pool, user).await;
    clean_up(&pool, &[user]).await;
}

/// That `user` has no preferences, notification or queued delivery.
async fn assert_nothing_kept(pool: &sqlx::PgPool, user: Uuid) {
    for table in ["preferences", "notifications", "delivery_jobs"] {
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM notifications.{table} WHERE user_id = $1"
        ))
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(rows, 0, "{table}");
    }
}

/// Changes and test notifications in flight while the user is erased: each lands wholly before
/// the erasure (and is erased) or after it (and is refused). Nothing survives.
#[tokio::test]
async fn writes_racing_an_erasure_leave_nothing_behind() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let store = Store::new(pool.clone());
    for _ in 0..5 {
        let user = Uuid::new_v4();
        let writes = futures_util::future::join_all((0..8).map(|n| {
            let service = &service;
            async move {
                let query = if n % 2 == 0 { UPDATE } else { TEST };
                run_as(
                    service,
                    Some(user),
                    query,
                    json!({"input": {"push": false}}),
                )
                .await
            }
        }));
        let (_, erased) = tokio::join!(writes, store.erase_user(user));
        erased.unwrap();
        assert_nothing_kept(&pool, user).await;
        clean_up(&pool, &[user]).await;
    }
}

#[tokio::test]
async fn test_notifications_are_rate_limited() {
    let pool = pool().await;
    let service = NotificationsService::new(pool.clone());
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());

    let sent = run_as(&service, Some(user), TEST, json!({})).await;
    let made = &sent["data"]["sendTestNotification"];
    assert_eq!(made["category"], "ACCOUNT", "{sent}");
    assert_eq!(made["read"], false);
    let again = run_as(&service, Some(user), TEST, json!({})).await;
    assert_eq!(codes(&again), ["RATE_LIMITED"], "{again}");
    let wait = again["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_i64()
        .unwrap();
    assert!((1..=30).contains(&wait), "{again}");
    assert!(again["data"]["sendTestNotification"].is_null(), "{again}");
    // The limit is per user.
    let theirs = run_as(&service, Some(other), TEST, json!({})).await;
    assert!(theirs["errors"].is_null(), "{theirs}");
    assert_eq!(rows_of(&pool, "notifications", user).await, 1);

    // Concurrent requests cannot slip under the limit together.
    let racer = Uuid::new_v4();
    let results = futures_join(&pool, racer).await;
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
    assert_eq!(rows_of(&pool, "notifications", racer).await, 1);

    // The daily limit, with the interval out of the way: ten within the day, then no more.
    let daily = NotificationsService::with_test_limits(
        pool.clone(),
        TestLimits {
            min_interval: Duration::ZERO,
            per_day: 10,
        },
    );
    let heavy = Uuid::new_v4();
    for n in 0..10 {
        let sent = run_as(&daily, Some(heavy), TEST, json!({})).await;
        assert!(sent["errors"].is_null(), "{n}: {sent}");
    }
    let eleventh = run_as(&daily, Some(heavy), TEST, json!({})).await;
    assert_eq!(codes(&eleventh), ["RATE_LIMITED"]);
    let wait = eleventh["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_i64()
        .unwrap();
    assert!(wait > 86_000 && wait <= 86_400, "{eleventh}");
    // A day later (the oldest moved back a day), one more is allowed.
    sqlx::query(
        "UPDATE notifications.notifications SET created_at = created_at - interval '1 day'
         WHERE id = (SELECT id FROM notifications.notifications WHERE user_id = $1
                     ORDER BY created_at LIMIT 1)",
    )
    .bind(heavy)
    .execute(&pool)
    .await
    .unwrap();
    let later = run_as(&daily, Some(heavy), TEST, json!({})).await;
    assert!(later["errors"].is_null(), "{later}");

    clean_up(&pool, &[user, other, racer, heavy]).await;
}

/// Eight `sendTestNotification`s of `user` at once, each on its own task; whether each
/// succeeded.
async fn futures_join(pool: &gospelib_kit::stores::PgPool, user: Uuid) -> Vec<bool> {
    let service = std::sync::Arc::new(NotificationsService::new(pool.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let service = service.clone();
        tasks.spawn(async move { run_as(&service, Some(user), TEST, json!({})).await });
    }
    let mut results = Vec::new();
    while let Some(response) = tasks.join_next().await {
        results.push(response.unwrap()["errors"].is_null());
    }
    results
}

#[tokio::test]
async fn deliveries_record_what_the_provider_said() {
    let pool = pool().await;
    let store = Store::new(pool.clone());
    let user = Uuid::new_v4();
    let ids = fill(&store, user, 1).await;
    for (delivery, channel) in [
        (
            Delivery::Sent {
                provider_message_id: Some("msg-1".into()),
            },
            Channel::Push,
        ),
        (
            Delivery::Skipped {
                reason: "resend is not configured".into(),
            },
            Channel::Email,
        ),
        (
            Delivery::Rejected {
                retire_token: true,
                reason: "Unregistered".into(),
            },
            Channel::Push,
        ),
        (Delivery::permanent_failure("bad key"), Channel::Push),
    ] {
        store
            .record_delivery(&DeliveryRecord {
                notification_id: ids[0],
                user_id: user,
                channel,
                provider: "apns",
                recipient: "device-token-1",
                delivery: &delivery,
                attempts: 1,
            })
            .await
            .unwrap();
    }
    let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT outcome, channel, provider_message_id, recipient_digest
         FROM notifications.deliveries WHERE user_id = $1 ORDER BY id",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    let outcomes: Vec<_> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        outcomes,
        [
            ("sent", "push"),
            ("skipped", "email"),
            ("rejected", "push"),
            ("failed", "push")
        ]
    );
    assert_eq!(rows[0].2.as_deref(), Some("msg-1"));
    assert!(rows[1..].iter().all(|r| r.2.is_none()));
    assert!(
        rows.iter()
            .all(|r| r.3 == recipient_digest("device-token-1"))
    );
    // The database itself refuses a message id on anything but an acceptance.
    let forged = sqlx::query(
        "INSERT INTO notifications.deliveries (notification_id, user_id, channel, provider,
             recipient_digest, outcome, provider_message_id, attempts)
         VALUES ($1, $2, 'push', 'apns', $3, 'skipped', 'x', 1)",
    )
    .bind(ids[0])
    .bind(user)
    .bind(recipient_digest("t"))
    .execute(&pool)
    .await;
    assert!(forged.is_err());
    clean_up(&pool, &[user]).await;
}

const RECEIVED: &str = "subscription { notificationReceived { id title category read } }";

/// The subscription `notificationReceived` as `caller` (anonymous: `None`).
fn listen(
    service: &NotificationsService,
    caller: Option<Uuid>,
) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
    let mut request = async_graphql::Request::new(RECEIVED);
    if let Some(user) = caller {
        request = request.data(gospelib_kit::caller::Caller::user(user));
    }
    gospelib_kit::GraphQlExecutor::execute_stream(service, request)
}

#[tokio::test]
async fn notification_received_hears_the_callers_new_notifications_only() {
    use futures_util::StreamExt;
    let pool = pool().await;
    let live = gospelib_kit::live::LiveEvents::new(gospelib_kit::test_stack::redis());
    let service =
        NotificationsService::with_live(pool.clone(), live.clone(), TestLimits::default());
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut heard = listen(&service, Some(ada));
    // The stream subscribes when first polled: poll it until Redis confirmed the channel.
    let channel = gospelib_notifications::live::inbox_channel(ada);
    let next = tokio::spawn(async move { heard.next().await });
    gospelib_kit::test_stack::eventually("the subscription is live", || {
        let subscribed = live.is_subscribed(&channel);
        async move { subscribed }
    })
    .await;

    // Bob's test notification is not Ada's; Ada's own is heard, as the mutation answered it.
    let bobs = run_as(&service, Some(bob), TEST, json!({})).await;
    assert_eq!(codes(&bobs), Vec::<String>::new(), "{bobs}");
    let adas = run_as(&service, Some(ada), TEST, json!({})).await;
    let received = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("Ada hears her notification")
        .unwrap()
        .expect("an event");
    let received = serde_json::to_value(received).unwrap();
    assert_eq!(
        received["data"]["notificationReceived"], adas["data"]["sendTestNotification"],
        "{received}"
    );
}

#[tokio::test]
async fn notification_received_refuses_an_anonymous_caller() {
    use futures_util::StreamExt;
    let pool = pool().await;
    let live = gospelib_kit::live::LiveEvents::new(gospelib_kit::test_stack::redis());
    let service = NotificationsService::with_live(pool.clone(), live, TestLimits::default());
    let answer = listen(&service, None).next().await.expect("one answer");
    let answer = serde_json::to_value(answer).unwrap();
    assert_eq!(codes(&answer), ["UNAUTHORIZED"], "{answer}");
    // Without live events (a service built for the inbox alone) it says so, as an error that
    // names no type of the code.
    let service = NotificationsService::new(pool);
    let answer = listen(&service, Some(Uuid::new_v4()))
        .next()
        .await
        .expect("one answer");
    let answer = serde_json::to_value(answer).unwrap();
    assert_eq!(codes(&answer), ["SERVICE_UNAVAILABLE"], "{answer}");
    assert!(!answer.to_string().contains("gospelib_kit"), "{answer}");
}

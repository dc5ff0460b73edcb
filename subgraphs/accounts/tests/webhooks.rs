//! `POST /webhooks/clerk` over real HTTP, against the stack's PostgreSQL and Redis: signatures,
//! idempotency (sequential and concurrent replays), ordering rules (stale updates, no
//! resurrection), and the outbox when Redis is down.

mod support;

use gospelib_accounts::outbox::relay_stream;
use gospelib_accounts::relay_pending;
use gospelib_kit::caller::user_id_for_clerk;
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_signed_user_created_creates_the_user_and_publishes_its_event() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;

    let delivery = Delivery::signed(user_event(
        "user.created",
        &clerk,
        1_700_000_000_500,
        "Ada",
        "ada@example.com",
    ));
    let (status, body) = post(&url, &delivery).await;
    assert_eq!((status, body), (200, json!({"status": "processed"})));

    let users = stored_users(&pool, &clerk).await;
    assert_eq!(
        users,
        vec![StoredUser {
            id: user_id_for_clerk(&clerk),
            email: Some("ada@example.com".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            image_url: Some("https://img.clerk.com/ada.png".into()),
            created_at_ms: 1_700_000_000_000,
            clerk_updated_at_ms: Some(1_700_000_000_500),
            signed_in_ms: None,
            deleted: false,
        }]
    );
    assert!(message_recorded(&pool, &delivery.id).await);

    let rows = published_outbox_rows(&pool, &stream).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].1, "published after the commit");
    let entries = stream_entries(&stream).await;
    assert_eq!(entries.len(), 1);
    let (event_id, kind, payload) = &entries[0];
    assert_eq!(kind, "user.created");
    assert_eq!(payload, &rows[0].0);
    assert_eq!(payload["event_id"], json!(event_id));
    assert_eq!(payload["type"], "user.created");
    assert_eq!(
        payload["user_id"],
        json!(user_id_for_clerk(&clerk).to_string())
    );
    assert_eq!(payload["clerk_id"], json!(clerk));
    assert_eq!(payload["email"], "ada@example.com");
    // Stamped when accounts applied it (see `a_clerk_change_delivered_after_a_change_made_here_
    // gets_the_later_stamp`), not with Clerk's `updated_at`.
    assert_recent(&pool, &payload["occurred_at"]).await;

    clean_up(&pool, &[&clerk], &stream).await;
}

#[tokio::test]
async fn deliveries_without_a_valid_signature_are_refused_and_write_nothing() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;
    let body = user_event("user.created", &clerk, 1_700_000_000_500, "Eve", "e@x.org");
    let good = Delivery::signed(body.clone());
    let timestamp = good.timestamp.to_string();

    let mut refused = Vec::new();
    // A signature that is not one.
    refused.push(
        post_with(
            &url,
            good.body.as_slice(),
            &[
                ("svix-id", &good.id),
                ("svix-timestamp", &timestamp),
                ("svix-signature", "v1,bm90IGEgc2lnbmF0dXJl"),
            ],
        )
        .await,
    );
    // Each header missing in turn.
    for missing in ["svix-id", "svix-timestamp", "svix-signature"] {
        let headers: Vec<(&str, &str)> = [
            ("svix-id", good.id.as_str()),
            ("svix-timestamp", timestamp.as_str()),
            ("svix-signature", good.signature.as_str()),
        ]
        .into_iter()
        .filter(|(name, _)| *name != missing)
        .collect();
        refused.push(post_with(&url, good.body.as_slice(), &headers).await);
    }
    // Signed with another endpoint's secret.
    let mut other = good.clone();
    other.signature = sign(OTHER_SECRET, &good.id, good.timestamp, &good.body);
    refused.push(post(&url, &other).await);
    // The body changed after signing.
    let mut tampered = good.clone();
    tampered.body = body.replace("Eve", "Mallory").into_bytes();
    refused.push(post(&url, &tampered).await);
    // Signed six minutes ago, and six minutes from now.
    for offset in [-360, 360] {
        let delivery = Delivery::signed_at(body.clone(), now_secs() + offset);
        refused.push(post(&url, &delivery).await);
    }
    for (status, body) in &refused {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(body["code"], "UNAUTHORIZED", "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    // A signed body that is not UTF-8 (no Svix message is) is refused as such.
    let bytes = vec![0xff, 0xfe, b'{'];
    let id = message_id();
    let not_utf8 = Delivery {
        signature: sign(SECRET, &id, now_secs(), &bytes),
        timestamp: now_secs(),
        id,
        body: bytes,
    };
    let (status, response) = post(&url, &not_utf8).await;
    assert_eq!(
        (status, response["code"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );

    assert!(stored_users(&pool, &clerk).await.is_empty());
    assert!(!message_recorded(&pool, &good.id).await);
    assert!(outbox_rows(&pool, &stream).await.is_empty());
    assert!(stream_entries(&stream).await.is_empty());

    // The very same delivery, correctly signed, goes through; so does one whose header
    // carries several signatures of which one is good (a secret being rotated).
    let several = format!("v1,bm90IGEgc2lnbmF0dXJl {} v2,whatever", good.signature);
    let mut rotated = good.clone();
    rotated.signature = several;
    assert_eq!(post(&url, &rotated).await.0, 200);
    assert_eq!(stored_users(&pool, &clerk).await.len(), 1);

    clean_up(&pool, &[&clerk], &stream).await;
}

#[tokio::test]
async fn a_body_over_two_mebibytes_is_refused_unread() {
    let pool = pool().await;
    let stream = stream();
    let url = endpoint(&pool, redis(), &stream).await;
    let padding = "x".repeat(gospelib_accounts::webhooks::MAX_BODY_BYTES);
    let body = json!({"type": "user.created", "data": {}, "padding": padding}).to_string();
    let delivery = Delivery::signed(body);
    let (status, _) = post(&url, &delivery).await;
    assert_eq!(status, 413);
    assert!(!message_recorded(&pool, &delivery.id).await);
}

#[tokio::test]
async fn malformed_json_with_a_valid_signature_is_a_bad_request() {
    let pool = pool().await;
    let stream = stream();
    let url = endpoint(&pool, redis(), &stream).await;
    for body in [
        "{not json".to_owned(),
        json!({"data": {}}).to_string(),
        json!({"type": "user.created", "data": {"id": "user_test_x"}}).to_string(),
        json!({"type": "user.deleted", "data": {"deleted": true}}).to_string(),
    ] {
        let delivery = Delivery::signed(body.clone());
        let (status, response) = post(&url, &delivery).await;
        assert_eq!(status, 400, "{body}: {response}");
        assert_eq!(response["code"], "INVALID_REQUEST");
        assert!(!message_recorded(&pool, &delivery.id).await);
    }
    assert!(outbox_rows(&pool, &stream).await.is_empty());
}

#[tokio::test]
async fn a_delivery_replayed_sequentially_or_concurrently_is_applied_once() {
    let pool = pool().await;
    let (first, second, stream) = (clerk_id(), clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;

    // Sequentially.
    let delivery = Delivery::signed(user_event("user.created", &first, 1, "Ada", "a@x.org"));
    assert_eq!(
        post(&url, &delivery).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(
        post(&url, &delivery).await,
        (200, json!({"status": "duplicate"}))
    );
    assert_eq!(
        post(&url, &delivery).await,
        (200, json!({"status": "duplicate"}))
    );

    // Ten times at once.
    let delivery = Delivery::signed(user_event("user.created", &second, 1, "Bo", "b@x.org"));
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (url, delivery) = (url.clone(), delivery.clone());
        sends.spawn(async move { post(&url, &delivery).await });
    }
    let mut statuses = Vec::new();
    while let Some(answer) = sends.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        statuses.push(body["status"].as_str().unwrap().to_owned());
    }
    statuses.sort();
    let mut expected = vec!["duplicate".to_owned(); 9];
    expected.push("processed".to_owned());
    assert_eq!(statuses, expected);

    for clerk in [&first, &second] {
        assert_eq!(stored_users(&pool, clerk).await.len(), 1);
    }
    let rows = outbox_rows(&pool, &stream).await;
    assert_eq!(rows.len(), 2, "one event per user");
    let entries = stream_entries_at_least(&stream, 2).await;
    assert_eq!(entries.len(), 2, "one stream entry per user");
    let users: Vec<_> = entries
        .iter()
        .map(|(_, _, p)| p["clerk_id"].clone())
        .collect();
    assert_eq!(users, vec![json!(first), json!(second)]);
    // Nothing is published twice.
    relay_stream(&pool, &redis(), &stream).await.unwrap();
    assert_eq!(stream_entries(&stream).await.len(), 2);

    clean_up(&pool, &[&first, &second], &stream).await;
}

#[tokio::test]
async fn unknown_event_types_are_acknowledged_and_change_nothing() {
    let pool = pool().await;
    let stream = stream();
    let url = endpoint(&pool, redis(), &stream).await;
    let body = json!({
        "type": "organization.created",
        "object": "event",
        "data": {"id": "org_1", "name": "Saints"}
    });
    let delivery = Delivery::signed(body.to_string());
    assert_eq!(
        post(&url, &delivery).await,
        (200, json!({"status": "ignored"}))
    );
    assert!(message_recorded(&pool, &delivery.id).await);
    assert_eq!(
        post(&url, &delivery).await,
        (200, json!({"status": "duplicate"}))
    );
    assert!(outbox_rows(&pool, &stream).await.is_empty());
    assert!(stream_entries(&stream).await.is_empty());
}

#[tokio::test]
async fn a_deleted_user_is_erased_and_never_resurrected() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;
    let user_id = user_id_for_clerk(&clerk);

    let created = user_event("user.created", &clerk, 1_000, "Ada", "a@x.org");
    assert_eq!(post(&url, &Delivery::signed(created)).await.0, 200);
    sqlx::query(
        "INSERT INTO accounts.devices (id, user_id, platform, token, token_sha256, name)
         VALUES ($1, $2, 'IOS', 'tok', $3, 'phone')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(user_id)
    .bind(gospelib_accounts::store::token_digest("tok"))
    .execute(&pool)
    .await
    .unwrap();

    // Device registrations in the outbox, one relayed and one not (on a stream of their own).
    let devices_stream = format!("{stream}:devices");
    for published in [true, false] {
        sqlx::query(
            "INSERT INTO accounts.outbox (event_id, stream, payload, published_at)
             VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(&devices_stream)
        .bind(json!({"type": "device.registered", "user_id": user_id, "token": "tok", "platform": "IOS"}))
        .bind(published)
        .execute(&pool)
        .await
        .unwrap();
    }

    // A change stamped later than this moment (a clock ahead, or one committed while the
    // deletion waited for the user's lock): the deletion is stamped after it still.
    sqlx::query(
        "UPDATE accounts.users SET updated_at = now() + interval '1 hour' WHERE clerk_id = $1",
    )
    .bind(&clerk)
    .execute(&pool)
    .await
    .unwrap();

    let deleted = Delivery::signed(deleted_event(&clerk));
    assert_eq!(
        post(&url, &deleted).await,
        (200, json!({"status": "processed"}))
    );
    let (after_the_change, equal): (bool, bool) = sqlx::query_as(
        "SELECT deleted_at > now() + interval '59 minutes', deleted_at = updated_at
         FROM accounts.users WHERE clerk_id = $1",
    )
    .bind(&clerk)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        after_the_change && equal,
        "the deletion's stamp is the row's latest"
    );
    // The outbox keeps the user's events, scrubbed: no address, no push token.
    let kept: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM accounts.outbox WHERE payload->>'user_id' = $1::text ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = kept
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.starts_with(&["user.created", "device.registered"])
            && kinds.ends_with(&["user.deleted"]),
        "{kept:?}"
    );
    for event in &kept {
        assert!(
            event["email"].is_null() && event.get("token").is_none(),
            "{event}"
        );
    }
    assert_eq!(
        kept[0]["clerk_id"],
        json!(clerk),
        "the rest of the event is kept"
    );
    // The device registration not relayed yet is withdrawn: never relayed now.
    assert_eq!(
        relay_stream(&pool, &redis(), &devices_stream)
            .await
            .unwrap(),
        0
    );
    assert!(
        gospelib_kit::test_stack::stream_entries(&devices_stream)
            .await
            .is_empty()
    );
    // Its events relayed already are taken out of the stream by the relay loop's next pass:
    // the address does not wait for the stream's week. The deletion's own stays.
    gospelib_accounts::outbox::outbox(pool.clone(), redis(), &stream)
        .forget_marked_entries()
        .await
        .unwrap();
    // (The deletion's own is relayed in the background.)
    let left = || async {
        gospelib_kit::test_stack::stream_entries(&stream)
            .await
            .into_iter()
            .map(|(_, kind, _)| kind)
            .collect::<Vec<String>>()
    };
    gospelib_kit::test_stack::eventually("the deletion's event is on the stream", || async {
        !left().await.is_empty()
    })
    .await;
    assert_eq!(left().await, ["user.deleted"]);
    // (The relay may have published the second to its stream meanwhile.)
    clean_up(&pool, &[], &devices_stream).await;
    let erased = |signed_in_ms| StoredUser {
        id: user_id,
        email: None,
        first_name: None,
        last_name: None,
        image_url: None,
        created_at_ms: 1_700_000_000_000,
        clerk_updated_at_ms: Some(1_000),
        signed_in_ms,
        deleted: true,
    };
    assert_eq!(stored_users(&pool, &clerk).await, vec![erased(None)]);
    assert_eq!(device_count(&pool, user_id).await, 0);

    // Late deliveries, even with a later Clerk `updated_at`, and a second deletion.
    for late in [
        user_event("user.updated", &clerk, 9_000, "Zombie", "z@x.org"),
        user_event("user.created", &clerk, 9_500, "Zombie", "z@x.org"),
        deleted_event(&clerk),
        json!({"type": "session.created", "data": {"id": "sess_1", "user_id": clerk, "created_at": 9_900}}).to_string(),
    ] {
        let (status, body) = post(&url, &Delivery::signed(late)).await;
        assert_eq!((status, body), (200, json!({"status": "processed"})));
    }
    assert_eq!(stored_users(&pool, &clerk).await, vec![erased(None)]);

    let events: Vec<_> = outbox_rows(&pool, &stream)
        .await
        .into_iter()
        .map(|(payload, _)| payload["type"].clone())
        .collect();
    assert_eq!(events, vec![json!("user.created"), json!("user.deleted")]);
    // (The creation's entry was taken out of the stream above.)
    let entries = stream_entries_at_least(&stream, 1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, "user.deleted");
    assert!(
        entries[0].2.get("email").is_none(),
        "no personal data in a deletion"
    );

    // A deletion Clerk sends before the creation (out of order) leaves a tombstone.
    let early = clerk_id();
    assert_eq!(
        post(&url, &Delivery::signed(deleted_event(&early))).await.0,
        200
    );
    let late = user_event("user.created", &early, 2_000, "Late", "l@x.org");
    assert_eq!(post(&url, &Delivery::signed(late)).await.0, 200);
    let tombstone = stored_users(&pool, &early).await;
    assert_eq!(tombstone.len(), 1);
    assert!(tombstone[0].deleted);
    assert_eq!(tombstone[0].email, None);

    clean_up(&pool, &[&clerk, &early], &stream).await;
}

#[tokio::test]
async fn stale_updates_are_ignored_and_unchanged_data_is_no_event() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;

    let send = |kind: &'static str, at: i64, name: &'static str| {
        let (url, clerk) = (url.clone(), clerk.clone());
        async move {
            let body = user_event(kind, &clerk, at, name, "a@x.org");
            post(&url, &Delivery::signed(body)).await
        }
    };
    assert_eq!(send("user.created", 2_000, "Ada").await.0, 200);
    assert_eq!(send("user.updated", 5_000, "Ada B").await.0, 200);
    // Older than what is stored: ignored.
    assert_eq!(send("user.updated", 4_000, "Stale").await.0, 200);
    // Newer, but nothing accounts keeps has changed: no event, though the clock moves on...
    assert_eq!(send("user.updated", 7_000, "Ada B").await.0, 200);
    // ...so a delivery between the two is still stale.
    assert_eq!(send("user.updated", 6_000, "Stale too").await.0, 200);

    let user = &stored_users(&pool, &clerk).await[0];
    assert_eq!(user.first_name.as_deref(), Some("Ada B"));
    assert_eq!(user.clerk_updated_at_ms, Some(7_000));
    let events: Vec<_> = outbox_rows(&pool, &stream)
        .await
        .into_iter()
        .map(|(payload, _)| (payload["type"].clone(), payload["occurred_at"].clone()))
        .collect();
    let kinds: Vec<_> = events.iter().map(|(kind, _)| kind.clone()).collect();
    assert_eq!(kinds, vec![json!("user.created"), json!("user.updated")]);
    assert!(events[0].1.as_str() < events[1].1.as_str(), "{events:?}");

    clean_up(&pool, &[&clerk], &stream).await;
}

#[tokio::test]
async fn sign_ins_are_recorded_once_and_in_order() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;
    let created = user_event("user.created", &clerk, 1_000, "Ada", "a@x.org");
    assert_eq!(post(&url, &Delivery::signed(created)).await.0, 200);

    let session = |at: i64| {
        json!({"type": "session.created", "object": "event",
               "data": {"id": "sess_x", "user_id": clerk, "created_at": at, "status": "active"}})
        .to_string()
    };
    assert_eq!(
        post(&url, &Delivery::signed(session(1_700_000_100_000)))
            .await
            .0,
        200
    );
    // An older session arriving late does not move the time back.
    assert_eq!(
        post(&url, &Delivery::signed(session(1_700_000_050_000)))
            .await
            .0,
        200
    );
    // A session of a user accounts does not know yet is acknowledged (and kept for it).
    let stranger_id = clerk_id();
    let stranger = json!({"type": "session.created", "data": {"id": "s", "user_id": stranger_id, "created_at": 5}});
    assert_eq!(
        post(&url, &Delivery::signed(stranger.to_string())).await.0,
        200
    );
    assert_eq!(early_sign_in_ms(&pool, &stranger_id).await, Some(5));

    assert_eq!(
        stored_users(&pool, &clerk).await[0].signed_in_ms,
        Some(1_700_000_100_000)
    );
    let rows = outbox_rows(&pool, &stream).await;
    let kinds: Vec<_> = rows.iter().map(|(p, _)| p["type"].clone()).collect();
    assert_eq!(kinds, vec![json!("user.created"), json!("user.signed_in")]);
    assert_eq!(rows[1].0["occurred_at"], "2023-11-14T22:15:00.000Z");

    clean_up(&pool, &[&clerk, &stranger_id], &stream).await;
}

/// The latest sign-in kept for `clerk_id` before its user arrived, in ms since the epoch.
async fn early_sign_in_ms(pool: &sqlx::PgPool, clerk_id: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT (extract(epoch FROM signed_in_at) * 1000)::bigint
         FROM accounts.early_sign_ins WHERE clerk_id = $1",
    )
    .bind(clerk_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

fn session_event(clerk: &str, at_ms: i64) -> String {
    json!({"type": "session.created", "object": "event",
           "data": {"id": "sess_early", "user_id": clerk, "created_at": at_ms, "status": "active"}})
    .to_string()
}

#[tokio::test]
async fn a_sign_in_heard_before_its_user_is_applied_when_the_user_arrives() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;

    // Two sign-ins arrive before `user.created`, the later one first: the latest is kept.
    for at in [1_700_000_200_000, 1_700_000_100_000] {
        let delivery = Delivery::signed(session_event(&clerk, at));
        assert_eq!(
            post(&url, &delivery).await,
            (200, json!({"status": "processed"}))
        );
    }
    assert!(stored_users(&pool, &clerk).await.is_empty());
    assert!(
        outbox_rows(&pool, &stream).await.is_empty(),
        "no event for an unknown user"
    );
    assert_eq!(
        early_sign_in_ms(&pool, &clerk).await,
        Some(1_700_000_200_000)
    );

    let created = user_event("user.created", &clerk, 1_000, "Ada", "a@x.org");
    assert_eq!(post(&url, &Delivery::signed(created)).await.0, 200);
    assert_eq!(
        stored_users(&pool, &clerk).await[0].signed_in_ms,
        Some(1_700_000_200_000)
    );
    assert_eq!(early_sign_in_ms(&pool, &clerk).await, None, "claimed once");
    let rows = outbox_rows(&pool, &stream).await;
    let kinds: Vec<_> = rows.iter().map(|(p, _)| p["type"].clone()).collect();
    assert_eq!(kinds, vec![json!("user.created"), json!("user.signed_in")]);
    assert_eq!(rows[1].0["occurred_at"], "2023-11-14T22:16:40.000Z");
    let entries = stream_entries_at_least(&stream, 2).await;
    assert_eq!(entries[1].1, "user.signed_in");

    // An update later does not apply it again.
    let updated = user_event("user.updated", &clerk, 2_000, "Ada", "ada@x.org");
    assert_eq!(post(&url, &Delivery::signed(updated)).await.0, 200);
    let kinds: Vec<_> = outbox_rows(&pool, &stream)
        .await
        .iter()
        .map(|(p, _)| p["type"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            json!("user.created"),
            json!("user.signed_in"),
            json!("user.updated")
        ]
    );

    clean_up(&pool, &[&clerk], &stream).await;
}

#[tokio::test]
async fn a_sign_in_heard_before_a_deleted_user_is_discarded() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, redis(), &stream).await;

    let session = Delivery::signed(session_event(&clerk, 1_700_000_000_000));
    assert_eq!(post(&url, &session).await.0, 200);
    assert_eq!(
        post(&url, &Delivery::signed(deleted_event(&clerk))).await.0,
        200
    );
    assert_eq!(early_sign_in_ms(&pool, &clerk).await, None);
    // The creation arriving last neither resurrects the user nor signs it in.
    let created = user_event("user.created", &clerk, 1_000, "Ada", "a@x.org");
    assert_eq!(post(&url, &Delivery::signed(created)).await.0, 200);
    let users = stored_users(&pool, &clerk).await;
    assert!(
        users[0].deleted && users[0].signed_in_ms.is_none(),
        "{users:?}"
    );
    // A sign-in of the deleted user is not kept either.
    let late = Delivery::signed(session_event(&clerk, 1_700_000_500_000));
    assert_eq!(post(&url, &late).await.0, 200);
    assert_eq!(early_sign_in_ms(&pool, &clerk).await, None);

    clean_up(&pool, &[&clerk], &stream).await;
}

#[tokio::test]
async fn a_sign_in_racing_its_users_creation_is_never_lost() {
    let pool = pool().await;
    let stream = stream();
    let url = endpoint(&pool, redis(), &stream).await;

    // For each of 40 users, `session.created` and `user.created` are sent at the same moment:
    // whichever commits first, the user ends up signed in, with both events.
    let clerks: Vec<String> = (0..40).map(|_| clerk_id()).collect();
    let mut sends = tokio::task::JoinSet::new();
    for clerk in &clerks {
        for body in [
            session_event(clerk, 1_700_000_300_000),
            user_event("user.created", clerk, 1_000, "Ada", "a@x.org"),
        ] {
            let url = url.clone();
            sends.spawn(async move { post(&url, &Delivery::signed(body)).await });
        }
    }
    while let Some(answer) = sends.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    for clerk in &clerks {
        assert_eq!(
            stored_users(&pool, clerk).await[0].signed_in_ms,
            Some(1_700_000_300_000),
            "{clerk}"
        );
        assert_eq!(early_sign_in_ms(&pool, clerk).await, None, "{clerk}");
    }
    let rows = outbox_rows(&pool, &stream).await;
    for clerk in &clerks {
        let kinds: Vec<_> = rows
            .iter()
            .filter(|(p, _)| p["clerk_id"] == json!(clerk))
            .map(|(p, _)| p["type"].clone())
            .collect();
        assert_eq!(
            kinds,
            vec![json!("user.created"), json!("user.signed_in")],
            "{clerk}"
        );
    }

    let all: Vec<&str> = clerks.iter().map(String::as_str).collect();
    clean_up(&pool, &all, &stream).await;
}

#[tokio::test]
async fn with_redis_down_the_change_commits_and_its_event_waits_for_the_relay() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let url = endpoint(&pool, dead_redis(), &stream).await;

    let delivery = Delivery::signed(user_event("user.created", &clerk, 1_000, "Ada", "a@x.org"));
    assert_eq!(
        post(&url, &delivery).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(stored_users(&pool, &clerk).await.len(), 1);
    let rows = outbox_rows(&pool, &stream).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].1, "still pending");
    assert!(stream_entries(&stream).await.is_empty());

    // The relay, with a Redis that works, publishes it, once.
    assert!(relay_pending(&pool, &redis()).await.unwrap() >= 1);
    let entries = stream_entries_at_least(&stream, 1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2, rows[0].0);
    assert!(outbox_rows(&pool, &stream).await[0].1, "now published");
    relay_pending(&pool, &redis()).await.unwrap();
    assert_eq!(stream_entries(&stream).await.len(), 1);

    // A relay that cannot reach Redis says so and leaves rows pending.
    let second = clerk_id();
    let delivery = Delivery::signed(user_event("user.created", &second, 1_000, "Bo", "b@x.org"));
    assert_eq!(post(&url, &delivery).await.0, 200);
    assert!(relay_pending(&pool, &dead_redis()).await.is_err());
    assert!(!outbox_rows(&pool, &stream).await[1].1);
    relay_pending(&pool, &redis()).await.unwrap();
    assert_eq!(stream_entries_at_least(&stream, 2).await.len(), 2);

    clean_up(&pool, &[&clerk, &second], &stream).await;
}

/// Whether `stamp` (RFC 3339) is of the last minute, by PostgreSQL's clock.
async fn assert_recent(pool: &gospelib_kit::stores::PgPool, stamp: &serde_json::Value) {
    let text = stamp.as_str().unwrap_or_default();
    let recent: bool = sqlx::query_scalar(
        "SELECT $1::timestamptz BETWEEN now() - interval '1 minute' AND clock_timestamp()",
    )
    .bind(text)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|error| panic!("{stamp}: {error}"));
    assert!(recent, "{stamp} is not of the last minute");
}

/// A delivery whose body trickles in (the headers at once, then a byte every 100 ms) is refused
/// `408` once its deadline passes, the connection closed and nothing written; the same
/// delivery sent whole afterwards (Svix retries) is applied.
#[tokio::test]
async fn a_delivery_whose_body_does_not_arrive_in_time_is_408_and_applied_when_retried() {
    let pool = pool().await;
    let (clerk, stream) = (clerk_id(), stream());
    let settings = gospelib_accounts::WebhookSettings::new(SECRET).with_stream(&stream);
    let state = gospelib_accounts::WebhookState::new(pool.clone(), redis(), settings)
        .unwrap()
        .with_body_deadline(std::time::Duration::from_millis(300));
    let url = serve(gospelib_accounts::webhook_routes(state)).await;
    let delivery = Delivery::signed(user_event(
        "user.created",
        &clerk,
        1_700_000_000_500,
        "Sloane",
        "sloane@example.com",
    ));

    let timestamp = delivery.timestamp.to_string();
    let answer = gospelib_kit::test_stack::trickle_post(
        &url,
        &[
            ("content-type", "application/json"),
            ("svix-id", &delivery.id),
            ("svix-timestamp", &timestamp),
            ("svix-signature", &delivery.signature),
        ],
        &delivery.body,
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"INVALID_REQUEST""#), "{answer}");
    assert!(answer.contains("did not arrive within 0.3 s"), "{answer}");
    assert!(!message_recorded(&pool, &delivery.id).await);
    assert!(stored_users(&pool, &clerk).await.is_empty());

    let (status, body) = post(&url, &delivery).await;
    assert_eq!((status, body), (200, json!({"status": "processed"})));
    assert_eq!(stored_users(&pool, &clerk).await.len(), 1);

    clean_up(&pool, &[&clerk], &stream).await;
}

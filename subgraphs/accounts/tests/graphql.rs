//! The accounts GraphQL subgraph against the stack's PostgreSQL: `me`, the `User` entity,
//! `updateMe`, `registerDevice`, `unregisterDevice`, and who may see or change what.

mod support;

use std::sync::Arc;

use gospelib_accounts::schema::MAX_NAME_CHARS;
use gospelib_accounts::store::{MAX_CHANGES_PER_DAY, MAX_DEVICES_PER_USER};
use gospelib_accounts::{AccountsService, federation_sdl};
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{
    CALLER_HEADER, Caller, CallerGuard, DEFAULT_LIFETIME, ForwardedHeaders, InternalSecret,
    user_id_for_clerk,
};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const ME: &str = "{ me { id email firstName lastName imageUrl createdAt devices { id } } }";

const UPDATE_ME: &str = "mutation($input: UpdateMeInput!) {
    updateMe(input: $input) { id firstName lastName email }
}";

const REGISTER: &str = "mutation($input: RegisterDeviceInput!) {
    registerDevice(input: $input) { id platform name createdAt lastSeenAt }
}";

const UNREGISTER: &str = "mutation($id: ID!) { unregisterDevice(id: $id) }";

const ENTITIES: &str = "query($representations: [_Any!]!) {
    _entities(representations: $representations) { ... on User { id firstName email } }
}";

fn as_user(clerk_id: &str) -> Option<Caller> {
    Some(Caller::user(user_id_for_clerk(clerk_id)))
}

async fn register(
    service: &AccountsService,
    clerk_id: &str,
    token: &str,
    name: Option<&str>,
) -> Value {
    run_as(
        service,
        as_user(clerk_id),
        REGISTER,
        json!({"input": {"platform": "IOS", "token": token, "name": name}}),
    )
    .await
}

#[tokio::test]
async fn me_is_the_callers_own_user_and_null_for_anyone_without_one() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    create_user(&pool, &b, "Bo", "bo@example.com").await;
    let service = service(&pool, &stream);

    let anonymous = run_as(&service, None, ME, json!({})).await;
    assert_eq!(anonymous, json!({"data": {"me": null}}));
    let partner = run_as(&service, Some(Caller::partner("p1", vec![])), ME, json!({})).await;
    assert_eq!(partner, json!({"data": {"me": null}}));

    let me = run_as(&service, as_user(&a), ME, json!({})).await;
    assert_eq!(
        me,
        json!({"data": {"me": {
            "id": a_id.to_string(),
            "email": "ada@example.com",
            "firstName": "Ada",
            "lastName": "Tester",
            "imageUrl": null,
            "createdAt": "2023-11-14T22:13:20.000Z",
            "devices": [],
        }}})
    );

    // A signed-in user whose account does not exist (yet), or was deleted.
    let nobody = run_as(&service, as_user(&clerk_id()), ME, json!({})).await;
    assert_eq!(nobody, json!({"data": {"me": null}}));
    sqlx::query(
        "UPDATE accounts.users SET deleted_at = now(), email = NULL, first_name = NULL,
         last_name = NULL, clerk_first_name = NULL, clerk_last_name = NULL
         WHERE clerk_id = $1",
    )
    .bind(&b)
    .execute(&pool)
    .await
    .unwrap();
    let deleted = run_as(&service, as_user(&b), ME, json!({})).await;
    assert_eq!(deleted, json!({"data": {"me": null}}));

    clean_up(&pool, &[&a, &b], &stream).await;
}

#[tokio::test]
async fn user_entities_resolve_for_their_own_user_only() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let b_id = create_user(&pool, &b, "Bo", "bo@example.com").await;
    let service = service(&pool, &stream);

    let representations = json!({"representations": [
        {"__typename": "User", "id": b_id.to_string()},
        {"__typename": "User", "id": a_id.to_string()},
        {"__typename": "User", "id": a_id.to_string()},
        {"__typename": "User", "id": "not-a-uuid"},
        {"__typename": "User", "id": Uuid::new_v4().to_string()},
    ]});
    let a_row = json!({"id": a_id.to_string(), "firstName": "Ada", "email": "ada@example.com"});
    let answer = run_as(&service, as_user(&a), ENTITIES, representations.clone()).await;
    assert_eq!(
        answer,
        json!({"data": {"_entities": [null, a_row, a_row, null, null]}})
    );
    let anonymous = run_as(&service, None, ENTITIES, representations).await;
    assert_eq!(
        anonymous,
        json!({"data": {"_entities": [null, null, null, null, null]}})
    );

    clean_up(&pool, &[&a, &b], &stream).await;
}

/// A user Clerk created as Ada (`old@x.org`, at Clerk's time 1,700,000,000,000) who then
/// renamed themself Augusta here: their Clerk id, the webhook endpoint, and the service.
async fn ada_renamed_augusta_here(
    pool: &sqlx::PgPool,
    stream: &str,
) -> (String, String, AccountsService) {
    let clerk = clerk_id();
    let url = endpoint(pool, redis(), stream).await;
    let created = user_event(
        "user.created",
        &clerk,
        1_700_000_000_000,
        "Ada",
        "old@x.org",
    );
    assert_eq!(post(&url, &Delivery::signed(created)).await.0, 200);
    let service = service(pool, stream);
    let renamed = run_as(
        &service,
        as_user(&clerk),
        UPDATE_ME,
        json!({"input": {"firstName": "Augusta"}}),
    )
    .await;
    assert!(renamed.get("errors").is_none(), "{renamed}");
    (clerk, url, service)
}

/// Events are stamped in the order accounts applied the changes, not by Clerk's clock: the user
/// changes their email at Clerk (Clerk's time T0), renames themselves here at T1 > T0 before the
/// webhook arrives, then the webhook arrives. Its event carries the new email and must carry
/// the later stamp, or consumers that keep the latest event keep the old email.
#[tokio::test]
async fn a_clerk_change_delivered_after_a_change_made_here_gets_the_later_stamp() {
    let pool = pool().await;
    let stream = stream();
    let (clerk, url, _service) = ada_renamed_augusta_here(&pool, &stream).await;
    // Clerk changed the email a minute before the rename; the webhook comes only now.
    let changed_at_clerk = user_event(
        "user.updated",
        &clerk,
        1_700_000_060_000,
        "Augusta",
        "new@x.org",
    );
    assert_eq!(post(&url, &Delivery::signed(changed_at_clerk)).await.0, 200);

    let events: Vec<(String, String, String)> = outbox_rows(&pool, &stream)
        .await
        .into_iter()
        .map(|(payload, _)| {
            let text = |key: &str| payload[key].as_str().unwrap_or_default().to_owned();
            (text("type"), text("email"), text("occurred_at"))
        })
        .collect();
    let kinds: Vec<_> = events
        .iter()
        .map(|(kind, email, _)| (kind.as_str(), email.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("user.created", "old@x.org"),
            ("user.updated", "old@x.org"),
            ("user.updated", "new@x.org")
        ]
    );
    // RFC 3339 to the millisecond, in UTC: text order is time order.
    assert!(
        events[0].2 < events[1].2 && events[1].2 < events[2].2,
        "{events:?}"
    );

    clean_up(&pool, &[&clerk], &stream).await;
}

/// A name set in the app stays when Clerk later sends the user for another reason (with the
/// names it had before); a name changed at Clerk replaces it.
#[tokio::test]
async fn a_name_set_here_survives_a_clerk_delivery_that_did_not_change_it() {
    let pool = pool().await;
    let stream = stream();
    let (clerk, url, service) = ada_renamed_augusta_here(&pool, &stream).await;

    // The email changed at Clerk, which never heard of the rename.
    let new_email = user_event(
        "user.updated",
        &clerk,
        1_700_000_060_000,
        "Ada",
        "new@x.org",
    );
    assert_eq!(post(&url, &Delivery::signed(new_email)).await.0, 200);
    let me = run_as(&service, as_user(&clerk), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["firstName"], "Augusta", "{me}");
    assert_eq!(me["data"]["me"]["email"], "new@x.org", "{me}");

    // Renamed at Clerk: the later name wins.
    let renamed_at_clerk = user_event(
        "user.updated",
        &clerk,
        1_700_000_120_000,
        "Grace",
        "new@x.org",
    );
    assert_eq!(post(&url, &Delivery::signed(renamed_at_clerk)).await.0, 200);
    let me = run_as(&service, as_user(&clerk), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["firstName"], "Grace", "{me}");

    // Erasure forgets Clerk's copy of the names too (the table's check refuses otherwise).
    assert_eq!(
        post(&url, &Delivery::signed(deleted_event(&clerk))).await.0,
        200
    );
    let kept: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT clerk_first_name, clerk_last_name FROM accounts.users WHERE clerk_id = $1",
    )
    .bind(&clerk)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, (None, None));

    clean_up(&pool, &[&clerk], &stream).await;
}

#[tokio::test]
async fn update_me_changes_the_caller_alone_and_appends_its_event() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    create_user(&pool, &b, "Bo", "bo@example.com").await;
    let service = service(&pool, &stream);

    let answer = run_as(
        &service,
        as_user(&a),
        UPDATE_ME,
        json!({"input": {"firstName": "  Augusta Ada  ", "lastName": ""}}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"data": {"updateMe": {
            "id": a_id.to_string(), "firstName": "Augusta Ada", "lastName": null,
            "email": "ada@example.com"
        }}})
    );
    // An absent field stays as it is.
    let answer = run_as(
        &service,
        as_user(&a),
        UPDATE_ME,
        json!({"input": {"lastName": "King"}}),
    )
    .await;
    assert_eq!(answer["data"]["updateMe"]["firstName"], "Augusta Ada");
    assert_eq!(answer["data"]["updateMe"]["lastName"], "King");
    // The same values again: no change, no event.
    let answer = run_as(
        &service,
        as_user(&a),
        UPDATE_ME,
        json!({"input": {"firstName": "Augusta Ada"}}),
    )
    .await;
    assert_eq!(answer["data"]["updateMe"]["lastName"], "King");

    let a_row = &stored_users(&pool, &a).await[0];
    assert_eq!(
        (a_row.first_name.as_deref(), a_row.last_name.as_deref()),
        (Some("Augusta Ada"), Some("King"))
    );
    let b_row = &stored_users(&pool, &b).await[0];
    assert_eq!(
        (b_row.first_name.as_deref(), b_row.last_name.as_deref()),
        (Some("Bo"), Some("Tester"))
    );

    let rows = published_outbox_rows(&pool, &stream).await;
    let events: Vec<_> = rows
        .iter()
        .map(|(p, _)| (p["type"].clone(), p["user_id"].clone(), p["email"].clone()))
        .collect();
    let expected = (
        json!("user.updated"),
        json!(a_id.to_string()),
        json!("ada@example.com"),
    );
    assert_eq!(events, vec![expected.clone(), expected]);
    assert!(rows.iter().all(|(_, published)| *published));
    assert_eq!(stream_entries_at_least(&stream, 2).await.len(), 2);

    // Anonymous callers are refused; users without an account too.
    let input = json!({"input": {"firstName": "X"}});
    let anonymous = run_as(&service, None, UPDATE_ME, input.clone()).await;
    assert_eq!(codes(&anonymous), vec!["UNAUTHORIZED"]);
    let nobody = run_as(&service, as_user(&clerk_id()), UPDATE_ME, input).await;
    assert_eq!(codes(&nobody), vec!["FORBIDDEN"]);

    clean_up(&pool, &[&a, &b], &stream).await;
}

#[tokio::test]
async fn invalid_input_is_refused_and_writes_nothing() {
    let pool = pool().await;
    let (a, stream) = (clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let service = service(&pool, &stream);

    let too_long = "x".repeat(MAX_NAME_CHARS + 1);
    for input in [
        json!({"firstName": too_long}),
        json!({"firstName": "Ok", "lastName": too_long}),
        json!({"firstName": "tab\there"}),
    ] {
        let answer = run_as(&service, as_user(&a), UPDATE_ME, json!({ "input": input })).await;
        assert_eq!(codes(&answer), vec!["VALIDATION_ERROR"], "{answer}");
    }
    let row = &stored_users(&pool, &a).await[0];
    assert_eq!(row.first_name.as_deref(), Some("Ada"));

    for (token, name) in [
        ("", None),
        ("   ", None),
        ("ok-token", Some(too_long.as_str())),
        ("two words", None),
        ("\u{1F600}", None),
    ] {
        let answer = register(&service, &a, token, name).await;
        assert_eq!(codes(&answer), vec!["VALIDATION_ERROR"], "{answer}");
    }
    let huge = "t".repeat(4097);
    let answer = register(&service, &a, &huge, None).await;
    assert_eq!(codes(&answer), vec!["VALIDATION_ERROR"]);
    assert_eq!(device_count(&pool, a_id).await, 0);

    let answer = run_as(
        &service,
        as_user(&a),
        UNREGISTER,
        json!({"id": "not-a-uuid"}),
    )
    .await;
    assert_eq!(codes(&answer), vec!["VALIDATION_ERROR"]);

    assert!(outbox_rows(&pool, &stream).await.is_empty());
    clean_up(&pool, &[&a], &stream).await;
}

#[tokio::test]
async fn devices_are_registered_once_per_token_and_removed_by_their_owner_only() {
    let pool = pool().await;
    let (a, b, stream) = (clerk_id(), clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let b_id = create_user(&pool, &b, "Bo", "bo@example.com").await;
    let service = service(&pool, &stream);

    // The same token twice is the same device (the longest token is fine).
    let token = "f".repeat(4096);
    let first = register(&service, &a, &token, Some(" Ada's phone ")).await;
    let device = &first["data"]["registerDevice"];
    assert_eq!(device["platform"], "IOS");
    assert_eq!(device["name"], "Ada's phone");
    let again = register(&service, &a, &token, None).await;
    assert_eq!(again["data"]["registerDevice"]["id"], device["id"]);
    assert_eq!(again["data"]["registerDevice"]["name"], "Ada's phone");
    assert!(
        again["data"]["registerDevice"]["lastSeenAt"].as_str() >= device["lastSeenAt"].as_str()
    );
    assert_eq!(device_count(&pool, a_id).await, 1);

    // The same token for another user (the phone changed hands) is that user's own device,
    // and no longer the previous owner's.
    let b_device = register(&service, &b, &token, None).await;
    let b_device_id = b_device["data"]["registerDevice"]["id"].clone();
    assert_ne!(b_device_id, device["id"]);

    let me = run_as(&service, as_user(&a), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["devices"], json!([]));

    // A cannot remove B's device, nor an unknown one; nobody anonymous can.
    let by_a = run_as(
        &service,
        as_user(&a),
        UNREGISTER,
        json!({"id": b_device_id}),
    )
    .await;
    assert_eq!(by_a, json!({"data": {"unregisterDevice": false}}));
    assert_eq!(device_count(&pool, b_id).await, 1);
    let unknown = json!({"id": Uuid::new_v4().to_string()});
    let answer = run_as(&service, as_user(&a), UNREGISTER, unknown).await;
    assert_eq!(answer, json!({"data": {"unregisterDevice": false}}));
    let anonymous = run_as(&service, None, UNREGISTER, json!({"id": b_device_id})).await;
    assert_eq!(codes(&anonymous), vec!["UNAUTHORIZED"]);

    // B can, once.
    let by_b = run_as(
        &service,
        as_user(&b),
        UNREGISTER,
        json!({"id": b_device_id}),
    )
    .await;
    assert_eq!(by_b, json!({"data": {"unregisterDevice": true}}));
    let again = run_as(
        &service,
        as_user(&b),
        UNREGISTER,
        json!({"id": b_device_id}),
    )
    .await;
    assert_eq!(again, json!({"data": {"unregisterDevice": false}}));
    assert_eq!(device_count(&pool, b_id).await, 0);
    assert_eq!(device_count(&pool, a_id).await, 0);

    clean_up(&pool, &[&a, &b], &stream).await;
}

#[tokio::test]
async fn a_user_has_at_most_twenty_devices() {
    let pool = pool().await;
    let (a, stream) = (clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let service = service(&pool, &stream);
    for n in 0..MAX_DEVICES_PER_USER {
        let answer = register(&service, &a, &format!("token-{n}"), None).await;
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    let answer = register(&service, &a, "one-too-many", None).await;
    assert_eq!(codes(&answer), vec!["VALIDATION_ERROR"]);
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("20")
    );
    // Registering a known token again is still fine; without a name it keeps its own, and an
    // empty one clears it.
    let answer = register(&service, &a, "token-3", Some("renamed")).await;
    assert_eq!(answer["data"]["registerDevice"]["name"], "renamed");
    let answer = register(&service, &a, "token-3", None).await;
    assert_eq!(answer["data"]["registerDevice"]["name"], "renamed");
    let answer = register(&service, &a, "token-3", Some("  ")).await;
    assert_eq!(
        answer["data"]["registerDevice"]["name"],
        Value::Null,
        "{answer}"
    );
    assert_eq!(device_count(&pool, a_id).await, MAX_DEVICES_PER_USER);
    let signed_out = register(&service, &clerk_id(), "t", None).await;
    assert_eq!(codes(&signed_out), vec!["FORBIDDEN"]);

    clean_up(&pool, &[&a], &stream).await;
}

/// Each event stays a week in a Redis stream Redis never evicts: one account's changes may
/// write at most a day's budget of them, however they are made, and past it nothing is written.
#[tokio::test]
async fn a_users_changes_write_at_most_a_days_budget_of_events() {
    let pool = pool().await;
    let (a, stream) = (clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let service = service(&pool, &stream);
    // Tokens of this run's own: a token another user holds would write its `device.removed`.
    let (known_token, new_token) = (
        format!("known-{}", Uuid::new_v4().simple()),
        format!("new-{}", Uuid::new_v4().simple()),
    );
    let known = register(&service, &a, &known_token, None).await;
    assert!(known.get("errors").is_none(), "{known}");

    // Two names in turn, each a change with its event, until the budget is spent.
    let mut written = outbox_rows(&pool, &stream).await.len() as i64;
    let mut turn = 0;
    while written < MAX_CHANGES_PER_DAY {
        turn += 1;
        let name = if turn % 2 == 0 { "Ada" } else { "Adah" };
        let input = json!({"input": {"firstName": name}});
        let answer = run_as(&service, as_user(&a), UPDATE_ME, input).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        written += 1;
    }
    assert_eq!(outbox_rows(&pool, &stream).await.len() as i64, written);
    let before = stored_users(&pool, &a).await[0].first_name.clone();

    let input = json!({"input": {"firstName": "Someone else"}});
    let renamed = run_as(&service, as_user(&a), UPDATE_ME, input).await;
    assert_eq!(codes(&renamed), vec!["RATE_LIMITED"], "{renamed}");
    assert_eq!(stored_users(&pool, &a).await[0].first_name, before);
    // A new token, or a known one on a new platform, is news: refused too.
    let added = register(&service, &a, &new_token, None).await;
    assert_eq!(codes(&added), vec!["RATE_LIMITED"], "{added}");
    let flipped = run_as(
        &service,
        as_user(&a),
        REGISTER,
        json!({"input": {"platform": "ANDROID", "token": known_token}}),
    )
    .await;
    assert_eq!(codes(&flipped), vec!["RATE_LIMITED"], "{flipped}");
    assert_eq!(device_count(&pool, a_id).await, 1);
    assert_eq!(outbox_rows(&pool, &stream).await.len() as i64, written);
    // The app registering its known token at start-up writes nothing, so it is never refused;
    // nor is a change that changes nothing.
    let refreshed = register(&service, &a, &known_token, Some("renamed")).await;
    assert_eq!(refreshed["data"]["registerDevice"]["name"], "renamed");
    assert_eq!(refreshed["data"]["registerDevice"]["platform"], "IOS");
    let input = json!({"input": {"firstName": before}});
    let same = run_as(&service, as_user(&a), UPDATE_ME, input).await;
    assert!(same.get("errors").is_none(), "{same}");

    // A day later the budget is back.
    sqlx::query(
        "UPDATE accounts.outbox SET created_at = created_at - interval '25 hours'
         WHERE stream = $1",
    )
    .bind(&stream)
    .execute(&pool)
    .await
    .unwrap();
    let added = register(&service, &a, &new_token, None).await;
    assert!(added.get("errors").is_none(), "{added}");
    assert_eq!(device_count(&pool, a_id).await, 2);

    clean_up(&pool, &[&a], &stream).await;
}

#[tokio::test]
async fn behind_the_caller_guard_only_a_router_signed_caller_counts() {
    let pool = pool().await;
    let (a, stream) = (clerk_id(), stream());
    let a_id = create_user(&pool, &a, "Ada", "ada@example.com").await;
    let secret = InternalSecret::new(&[42u8; 32])
        .unwrap()
        .caller_key("accounts");
    let guarded = CallerGuard::new(
        Arc::new(service(&pool, &stream)),
        secret.clone(),
        gospelib_kit::nonce_ledger::NonceLedger::new(gospelib_kit::test_stack::redis(), "test"),
    );
    let query = "{ me { id firstName } }";
    let execute = |header: Option<String>| {
        let mut request = async_graphql::Request::new(query);
        if let Some(header) = header {
            request = request.data(ForwardedHeaders(vec![(CALLER_HEADER.to_owned(), header)]));
        }
        let guarded = &guarded;
        async move { serde_json::to_value(guarded.execute(request).await).unwrap() }
    };

    let signed = secret.sign(
        &Caller::user(a_id),
        query,
        &no_variables(),
        DEFAULT_LIFETIME,
    );
    assert_eq!(
        execute(Some(signed)).await,
        json!({"data": {"me": {"id": a_id.to_string(), "firstName": "Ada"}}})
    );
    assert_eq!(execute(None).await, json!({"data": {"me": null}}));
    // Signed with another key: the platform's for another subgraph, then another platform's.
    for wrong_key in [
        InternalSecret::new(&[42u8; 32]).unwrap().caller_key("ai"),
        InternalSecret::new(&[7u8; 32])
            .unwrap()
            .caller_key("accounts"),
    ] {
        let forged = wrong_key.sign(
            &Caller::user(a_id),
            query,
            &no_variables(),
            DEFAULT_LIFETIME,
        );
        assert_eq!(codes(&execute(Some(forged)).await), vec!["UNAUTHORIZED"]);
    }

    clean_up(&pool, &[&a], &stream).await;
}

#[test]
fn the_federation_sdl_declares_the_user_entity_and_hides_push_tokens() {
    let sdl = federation_sdl();
    assert!(sdl.contains("type User @key(fields: \"id\")"), "{sdl}");
    for field in [
        "me: User",
        "updateMe(input: UpdateMeInput!): User!",
        "registerDevice(input: RegisterDeviceInput!): Device!",
        "unregisterDevice(id: ID!): Boolean!",
        "enum DevicePlatform",
    ] {
        assert!(sdl.contains(field), "{field} missing from\n{sdl}");
    }
    let device = sdl
        .split("type Device")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap();
    assert!(!device.contains("token"), "{device}");
}

/// The digest of a request without variables, which a caller header is signed for.
fn no_variables() -> gospelib_kit::caller::VariablesDigest {
    gospelib_kit::caller::variables_digest(&async_graphql::Variables::default())
}

//! `POST /webhooks/stripe` over real HTTP, against the stack's PostgreSQL and Redis:
//! signatures, idempotency (sequential and concurrent replays), out-of-order snapshots,
//! invoices and checkouts, the outbox when Redis is down, and the entitlements cache.

mod support;

use gospelib_billing::events;
use gospelib_kit::caller::Caller;
use serde_json::json;
use support::*;
use uuid::Uuid;

#[tokio::test]
async fn deliveries_without_a_valid_signature_are_refused_and_write_nothing() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let (id, now) = (event_id(), now_secs());
    let body = new_active_subscription(&id, user, now);
    let good = sign(SECRET, now, body.as_bytes());

    let mut refused = Vec::new();
    // No header at all.
    refused.push(post_signed(&url, &body, None).await);
    // Garbage, a v1 that is not a signature, only the v0 test scheme.
    for header in [
        "garbage".to_owned(),
        format!("t={now},v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"),
        format!("t={now},v0={good}"),
        format!("v1={good}"),
    ] {
        refused.push(post_signed(&url, &body, Some(&header)).await);
    }
    // Another endpoint's secret; the body changed after signing.
    let other = format!("t={now},v1={}", sign(OTHER_SECRET, now, body.as_bytes()));
    refused.push(post_signed(&url, &body, Some(&other)).await);
    let tampered = body.replace("active", "canceled");
    refused.push(post_signed(&url, &tampered, Some(&format!("t={now},v1={good}"))).await);
    // Signed six minutes ago, and six minutes from now.
    for offset in [-360, 360] {
        let t = now + offset;
        let stale = format!("t={t},v1={}", sign(SECRET, t, body.as_bytes()));
        refused.push(post_signed(&url, &body, Some(&stale)).await);
    }
    for (status, answer) in &refused {
        assert_eq!(*status, 400, "{answer}");
        assert_eq!(answer["code"], "UNAUTHORIZED", "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("signature"))
        );
    }
    assert!(!event_recorded(&pool, &id).await);
    assert!(stored_subscriptions(&pool, user).await.is_empty());
    assert!(outbox_rows(&pool, &names.events_stream).await.is_empty());

    // A header with several v1 signatures (a secret being rolled), one of them good, and a v0.
    let several = format!(
        "t={now},v1={},v1={good},v0={good}",
        sign(OTHER_SECRET, now, body.as_bytes())
    );
    assert_eq!(
        post_signed(&url, &body, Some(&several)).await,
        (200, json!({"status": "processed"}))
    );
    assert!(event_recorded(&pool, &id).await);
    assert_eq!(stored_subscriptions(&pool, user).await.len(), 1);

    // A signed body that is not an event is a bad request, recorded nowhere.
    let (status, answer) = post(&url, "{\"hello\": 1}").await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );

    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn an_event_replayed_sequentially_or_concurrently_is_applied_once() {
    let pool = pool().await;
    let (first, second, names) = (Uuid::new_v4(), Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let now = now_secs();

    // Sequentially.
    let body = event(
        &event_id(),
        "customer.subscription.created",
        now,
        subscription(
            &subscription_id(),
            &customer_id(),
            Some(first),
            "active",
            "price_scholar_monthly",
            (now, now + 1000),
        ),
    );
    assert_eq!(
        post(&url, &body).await,
        (200, json!({"status": "processed"}))
    );
    for _ in 0..2 {
        assert_eq!(
            post(&url, &body).await,
            (200, json!({"status": "duplicate"}))
        );
    }

    // Ten times at once.
    let body = event(
        &event_id(),
        "customer.subscription.created",
        now,
        subscription(
            &subscription_id(),
            &customer_id(),
            Some(second),
            "active",
            "price_academic_yearly",
            (now, now + 1000),
        ),
    );
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (url, body) = (url.clone(), body.clone());
        sends.spawn(async move { post(&url, &body).await });
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

    for (user, plan, interval) in [
        (first, "scholar", "monthly"),
        (second, "academic", "yearly"),
    ] {
        let stored = stored_subscriptions(&pool, user).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(
            (
                stored[0].plan.as_str(),
                stored[0].billing_interval.as_deref(),
                stored[0].source.as_str()
            ),
            (plan, Some(interval), "stripe")
        );
    }
    let rows = outbox_rows(&pool, &names.events_stream).await;
    assert_eq!(rows.len(), 2, "one event per subscription");
    let entries = stream_entries_at_least(&names.events_stream, 2).await;
    assert_eq!(entries.len(), 2, "one stream entry per subscription");
    let (event_id, kind, payload) = &entries[1];
    assert_eq!(kind, "subscription.changed");
    assert_eq!(payload["event_id"], json!(event_id));
    assert_eq!(payload["user_id"], json!(second.to_string()));
    assert_eq!(
        (payload["plan"].as_str(), payload["status"].as_str()),
        (Some("academic"), Some("active"))
    );
    assert!(
        payload["occurred_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    clean_up(&pool, &[first, second], &names).await;
}

#[tokio::test]
async fn snapshots_apply_by_their_own_time_never_by_arrival() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let service = service(&pool, settings(&names));
    let (sub, customer) = (subscription_id(), customer_id());
    let now = now_secs();
    let period = (now - 100, now + 30 * 86_400);
    let active = subscription(
        &sub,
        &customer,
        Some(user),
        "active",
        "price_scholar_monthly",
        period,
    );

    // `deleted` first, then the `updated(active)` that preceded it arrives late.
    let mut deleted = active.clone();
    deleted["status"] = json!("canceled");
    deleted["canceled_at"] = json!(now - 10);
    deleted["ended_at"] = json!(now - 10);
    let deleted_event = event(
        &event_id(),
        "customer.subscription.deleted",
        now - 10,
        deleted,
    );
    let late_update = event(
        &event_id(),
        "customer.subscription.updated",
        now - 50,
        active.clone(),
    );
    assert_eq!(post(&url, &deleted_event).await.0, 200);
    assert_eq!(
        post(&url, &late_update).await,
        (200, json!({"status": "processed"}))
    );
    let stored = stored_subscriptions(&pool, user).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].status, "canceled",
        "the late update did not resurrect it"
    );
    let plan =
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { plan { id } } } }";
    let representations = json!({"r": [{"__typename": "User", "id": user.to_string()}]});
    let answer = run_as(
        &service,
        Some(Caller::user(user)),
        plan,
        representations.clone(),
    )
    .await;
    assert_eq!(answer["data"]["_entities"][0]["plan"]["id"], "reader");
    // Even an update created after the deletion, but of the same period, is older than the end.
    let later_but_same_period = event(
        &event_id(),
        "customer.subscription.updated",
        now,
        active.clone(),
    );
    assert_eq!(post(&url, &later_but_same_period).await.0, 200);
    assert_eq!(
        stored_subscriptions(&pool, user).await[0].status,
        "canceled"
    );

    // Two updates of another subscription in reverse order: the newer one stays.
    let (sub2, customer2, user2) = (subscription_id(), customer_id(), Uuid::new_v4());
    let base = subscription(
        &sub2,
        &customer2,
        Some(user2),
        "active",
        "price_scholar_monthly",
        period,
    );
    let mut newer = base.clone();
    newer["cancel_at_period_end"] = json!(true);
    newer["items"]["data"][0]["price"] =
        json!({"id": "price_academic_monthly", "recurring": {"interval": "month"}});
    let newer_event = event(&event_id(), "customer.subscription.updated", now - 5, newer);
    let older_event = event(
        &event_id(),
        "customer.subscription.updated",
        now - 20,
        base.clone(),
    );
    assert_eq!(post(&url, &newer_event).await.0, 200);
    assert_eq!(post(&url, &older_event).await.0, 200);
    let stored = stored_subscriptions(&pool, user2).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].plan.as_str(), stored[0].cancel_at_period_end),
        ("academic", true)
    );
    // A snapshot of the next period wins whatever its event's time.
    let mut renewed = base;
    renewed["current_period_start"] = json!(period.1);
    renewed["current_period_end"] = json!(period.1 + 30 * 86_400);
    let renewed_event = event(
        &event_id(),
        "customer.subscription.updated",
        now - 30,
        renewed,
    );
    assert_eq!(post(&url, &renewed_event).await.0, 200);
    let stored = stored_subscriptions(&pool, user2).await;
    assert_eq!(
        (stored[0].plan.as_str(), stored[0].current_period_end),
        ("scholar", Some(period.1 + 30 * 86_400))
    );

    // Events only for what was applied: created-then-deleted (1), newer (1), renewed (1).
    let types = outbox_types(&pool, &names.events_stream).await;
    assert_eq!(types, vec!["subscription.changed"; 3]);

    clean_up(&pool, &[user, user2], &names).await;
}

/// A subscription created `incomplete` and paid within the same second (Stripe's `created`
/// has no finer grain): the paid state wins whichever arrives first, from the snapshot or
/// from the invoice, so the subscriber is not left on the free plan (and offered a second
/// checkout).
#[tokio::test]
async fn within_one_second_the_first_payment_comes_after_incomplete_in_any_order() {
    let pool = pool().await;
    let names = names();
    let url = endpoint(&pool, redis(), &names).await;
    let now = now_secs();
    let period = (now - 5, now + 30 * 86_400);
    // A `customer.subscription.<kind>` event created `now`, of a subscription in `status`.
    let snapshot = |kind: &str, sub: &str, customer: &str, user: Uuid, status: &str| {
        let object = subscription(
            sub,
            customer,
            Some(user),
            status,
            "price_scholar_monthly",
            period,
        );
        event(
            &event_id(),
            &format!("customer.subscription.{kind}"),
            now,
            object,
        )
    };
    let mut users = Vec::new();
    for active_first in [false, true] {
        let (user, sub, customer) = (Uuid::new_v4(), subscription_id(), customer_id());
        users.push(user);
        let created = snapshot("created", &sub, &customer, user, "incomplete");
        let updated = snapshot("updated", &sub, &customer, user, "active");
        let order = if active_first {
            [&updated, &created]
        } else {
            [&created, &updated]
        };
        for body in order {
            assert_eq!(post(&url, body).await.0, 200);
        }
        let stored = stored_subscriptions(&pool, user).await;
        assert_eq!(stored[0].status, "active", "active first: {active_first}");
    }

    // Created `incomplete`, then the first invoice paid in the same second.
    let (user, sub, customer) = (Uuid::new_v4(), subscription_id(), customer_id());
    users.push(user);
    let created = snapshot("created", &sub, &customer, user, "incomplete");
    assert_eq!(post(&url, &created).await.0, 200);
    let paid = event(
        &event_id(),
        "invoice.payment_succeeded",
        now,
        invoice(&format!("in_{}", unique()), &customer, &sub, period, 799),
    );
    assert_eq!(post(&url, &paid).await.0, 200);
    let stored = stored_subscriptions(&pool, user).await;
    assert_eq!(stored[0].status, "active");
    clean_up(&pool, &users, &names).await;
}

#[tokio::test]
async fn a_mid_period_invoice_does_not_outrank_the_periods_later_snapshots() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let (sub, customer) = (subscription_id(), customer_id());
    let now = now_secs();
    let period = (now - 1000, now + 1000);
    let snapshot = |status: &str, created: i64| {
        event(
            &event_id(),
            "customer.subscription.updated",
            created,
            subscription(
                &sub,
                &customer,
                Some(user),
                status,
                "price_scholar_monthly",
                period,
            ),
        )
    };
    assert_eq!(post(&url, &snapshot("active", now - 900)).await.0, 200);
    // An upgrade's proration, billed from mid-period to the period's end, fails: past_due.
    let proration = event(
        &event_id(),
        "invoice.payment_failed",
        now - 500,
        invoice("in_proration", &customer, &sub, (now - 500, period.1), 0),
    );
    assert_eq!(post(&url, &proration).await.0, 200);
    assert_eq!(
        stored_subscriptions(&pool, user).await[0].status,
        "past_due"
    );
    // Its retries run out: Stripe's later snapshot of the same period says unpaid, and it
    // stands (it used to be overwritten by the invoice's past_due, whose line starts later).
    assert_eq!(post(&url, &snapshot("unpaid", now - 100)).await.0, 200);
    assert_eq!(stored_subscriptions(&pool, user).await[0].status, "unpaid");
    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn invoices_emit_payment_events_and_move_the_status() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let (sub, customer) = (subscription_id(), customer_id());
    let now = now_secs();
    let period = (now - 100, now + 1000);
    let created = event(
        &event_id(),
        "customer.subscription.created",
        now - 100,
        subscription(
            &sub,
            &customer,
            Some(user),
            "active",
            "price_scholar_monthly",
            period,
        ),
    );
    assert_eq!(post(&url, &created).await.0, 200);
    assert_eq!(
        customer_of(&pool, user).await,
        Some(customer.clone()),
        "linked by the metadata"
    );

    let invoice = |id: &str, start: i64, end: i64| invoice(id, &customer, &sub, (start, end), 0);
    // The renewal's payment fails: past_due.
    let failed = event(
        &event_id(),
        "invoice.payment_failed",
        now - 50,
        invoice("in_1", period.1, period.1 + 1000),
    );
    assert_eq!(
        post(&url, &failed).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(
        stored_subscriptions(&pool, user).await[0].status,
        "past_due"
    );
    // A retry succeeds: active again, and the period extends.
    let mut paid = invoice("in_1", period.1, period.1 + 1000);
    paid["amount_paid"] = json!(799);
    let succeeded = event(&event_id(), "invoice.payment_succeeded", now - 40, paid);
    assert_eq!(post(&url, &succeeded).await.0, 200);
    let stored = stored_subscriptions(&pool, user).await;
    assert_eq!(
        (stored[0].status.as_str(), stored[0].current_period_end),
        ("active", Some(period.1 + 1000))
    );
    // The failure delivered again under another event id, older than the success: no change.
    let late = event(
        &event_id(),
        "invoice.payment_failed",
        now - 60,
        invoice("in_1", period.1, period.1 + 1000),
    );
    assert_eq!(post(&url, &late).await.0, 200);
    assert_eq!(stored_subscriptions(&pool, user).await[0].status, "active");

    let rows = outbox_rows(&pool, &names.events_stream).await;
    let types: Vec<_> = rows
        .iter()
        .map(|(p, _)| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "subscription.changed",
            "subscription.changed",
            "payment.failed",
            "subscription.changed",
            "payment.succeeded",
            "payment.failed"
        ]
    );
    let payment = &rows[4].0;
    assert_eq!(payment["user_id"], json!(user.to_string()));
    assert_eq!(
        (
            payment["invoice_id"].as_str(),
            payment["amount_cents"].as_i64()
        ),
        (Some("in_1"), Some(799))
    );
    assert!(payment["event_id"].as_str().is_some() && payment["occurred_at"].as_str().is_some());

    clean_up(&pool, &[user], &names).await;
}

/// At renewal Stripe sends the subscription's update (a cancellation at period end here) and,
/// a little later, the renewal's payment. Delivered the other way round (the update retried),
/// both apply: the update is older than the payment but newer than the snapshot stored, so it
/// is not dropped, and the status and period the payment decided stay.
#[tokio::test]
async fn a_subscription_update_delivered_after_the_renewals_payment_still_applies() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let (sub, customer) = (subscription_id(), customer_id());
    let now = now_secs();
    let first = (now - 2000, now - 100);
    let renewed = (first.1, first.1 + 2000);
    let created = event(
        &event_id(),
        "customer.subscription.created",
        now - 2000,
        subscription(
            &sub,
            &customer,
            Some(user),
            "active",
            "price_scholar_monthly",
            first,
        ),
    );
    assert_eq!(post(&url, &created).await.0, 200);

    let paid = invoice("in_renewal", &customer, &sub, renewed, 799);
    let payment = event(&event_id(), "invoice.payment_succeeded", now - 40, paid);
    assert_eq!(post(&url, &payment).await.0, 200);

    let mut canceling = subscription(
        &sub,
        &customer,
        Some(user),
        "active",
        "price_scholar_monthly",
        renewed,
    );
    canceling["cancel_at_period_end"] = json!(true);
    let update = event(
        &event_id(),
        "customer.subscription.updated",
        now - 60,
        canceling,
    );
    assert_eq!(post(&url, &update).await.0, 200);

    let stored = &stored_subscriptions(&pool, user).await[0];
    assert!(stored.cancel_at_period_end, "{stored:?}");
    assert_eq!(
        (stored.status.as_str(), stored.current_period_end),
        ("active", Some(renewed.1))
    );

    // An older snapshot of the first period still changes nothing.
    let stale = event(
        &event_id(),
        "customer.subscription.updated",
        now - 1500,
        subscription(
            &sub,
            &customer,
            Some(user),
            "past_due",
            "price_scholar_monthly",
            first,
        ),
    );
    assert_eq!(post(&url, &stale).await.0, 200);
    let stored = &stored_subscriptions(&pool, user).await[0];
    assert!(stored.cancel_at_period_end);
    assert_eq!(stored.status, "active");

    clean_up(&pool, &[user], &names).await;
}

/// A completed checkout links nothing: billing's own checkout links the customer before it
/// makes the session, and a session made another way (a Payment Link) carries a
/// `client_reference_id` its buyer may have written.
#[tokio::test]
async fn a_subscription_is_found_by_its_linked_customer_and_a_checkout_links_none() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let (sub, customer) = (subscription_id(), customer_id());
    let now = now_secs();

    // A subscription of an unknown customer, without metadata: nothing can be attributed, and
    // nothing is recorded (a resend after the link is applied).
    let orphan = subscription(
        &sub,
        &customer,
        None,
        "active",
        "price_scholar_yearly",
        (now, now + 1000),
    );
    let orphan_id = event_id();
    let orphan_event = event(&orphan_id, "customer.subscription.created", now, orphan);
    assert_eq!(
        post(&url, &orphan_event).await,
        (200, json!({"status": "unattributed"}))
    );
    assert!(!event_recorded(&pool, &orphan_id).await);

    // A buyer's Payment Link session naming the user as its `client_reference_id`: the buyer's
    // customer is not tied to the user, and the subscription stays unattributed.
    let session = json!({
        "id": format!("cs_test_{}", unique()), "object": "checkout.session", "mode": "subscription",
        "customer": customer, "client_reference_id": user.to_string(), "subscription": sub
    });
    let completed = event(&event_id(), "checkout.session.completed", now, session);
    assert_eq!(
        post(&url, &completed).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(customer_of(&pool, user).await, None);
    assert_eq!(
        post(&url, &orphan_event).await,
        (200, json!({"status": "unattributed"}))
    );

    // Linked as billing's checkout links it (before it makes the session): the resend is the
    // user's.
    link_customer(&pool, user, &customer).await;
    assert_eq!(customer_of(&pool, user).await, Some(customer.clone()));
    assert_eq!(
        post(&url, &orphan_event).await,
        (200, json!({"status": "processed"}))
    );
    let stored = stored_subscriptions(&pool, user).await;
    assert_eq!(
        (
            stored[0].plan.as_str(),
            stored[0].billing_interval.as_deref()
        ),
        ("scholar", Some("yearly"))
    );

    // Types billing does not handle are acknowledged, recorded, and change nothing.
    let unknown_id = event_id();
    let unknown = event(
        &unknown_id,
        "customer.created",
        now,
        json!({"id": customer}),
    );
    assert_eq!(
        post(&url, &unknown).await,
        (200, json!({"status": "ignored"}))
    );
    assert!(event_recorded(&pool, &unknown_id).await);
    assert_eq!(
        post(&url, &unknown).await,
        (200, json!({"status": "duplicate"}))
    );

    // The customer deleted at Stripe: unlinked, so the user's next checkout makes a new one
    // rather than failing on "No such customer" for good.
    let deleted = event(
        &event_id(),
        "customer.deleted",
        now,
        json!({"id": customer, "object": "customer", "deleted": true}),
    );
    assert_eq!(
        post(&url, &deleted).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(customer_of(&pool, user).await, None);
    // A checkout completed before the deletion, delivered after it, names the deleted
    // customer: it is not linked again.
    let late = event(
        &event_id(),
        "checkout.session.completed",
        now,
        json!({"id": "cs_test_late", "object": "checkout.session", "customer": customer,
               "client_reference_id": user.to_string(), "subscription": null}),
    );
    assert_eq!(
        post(&url, &late).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(customer_of(&pool, user).await, None);

    clean_up(&pool, &[user], &names).await;
}

/// A customer's deletion takes the user's lock before the customer's, as every other writer
/// does: while a webhook of the user's holds the user's lock (about to link), the deletion
/// waits without holding the customer's, so the two cannot deadlock.
#[tokio::test]
async fn a_customers_deletion_takes_the_users_lock_first() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let customer = customer_id();
    link_customer(&pool, user, &customer).await;

    let mut holder = pool.begin().await.unwrap();
    gospelib_billing::store::lock_user(&mut holder, user)
        .await
        .unwrap();
    let deleted = event(
        &event_id(),
        "customer.deleted",
        now_secs(),
        json!({"id": customer, "object": "customer", "deleted": true}),
    );
    let delivery = tokio::spawn(async move { post(&url, &deleted).await });
    // Until the deletion waits on the user's lock.
    let waiting = "SELECT count(*) FROM pg_locks l, hashtextextended($1::text, 4242) AS h(key)
         WHERE l.locktype = 'advisory' AND NOT l.granted
           AND l.classid::bigint = (h.key >> 32) & 4294967295
           AND l.objid::bigint = h.key & 4294967295";
    // Within the deletion's own lock timeout (5 s), past which it would give up waiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let count: i64 = sqlx::query_scalar(waiting)
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap();
        if count > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let customer_free: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 4343))")
            .bind(&customer)
            .fetch_one(&mut *holder)
            .await
            .unwrap();
    assert!(
        customer_free,
        "the deletion holds the customer's lock while it waits"
    );
    holder.commit().await.unwrap();

    assert_eq!(
        delivery.await.unwrap(),
        (200, json!({"status": "processed"}))
    );
    assert_eq!(customer_of(&pool, user).await, None);
    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn with_redis_down_the_change_commits_and_its_event_waits_for_the_relay() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, dead_redis(), &names).await;
    let body = new_active_subscription(&event_id(), user, now_secs());
    assert_eq!(
        post(&url, &body).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(stored_subscriptions(&pool, user).await.len(), 1);
    let rows = outbox_rows(&pool, &names.events_stream).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].1, "still pending");

    // The relay, with a Redis that works, publishes it, once.
    let outbox = events::outbox(pool.clone(), redis(), names.events_stream.clone());
    assert_eq!(outbox.relay_stream().await.unwrap(), 1);
    assert_eq!(outbox.relay_stream().await.unwrap(), 0);
    let entries = stream_entries(&names.events_stream).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2, rows[0].0);
    assert!(
        outbox_rows(&pool, &names.events_stream).await[0].1,
        "now published"
    );

    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn a_subscription_change_drops_the_cached_entitlements_and_announces_it() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let service = service(&pool, settings(&names));
    let key = format!("{}{user}", names.entitlements_prefix);
    let access = "{ callerAccess { plan entitlements } }";

    // Filled by a read.
    let answer = run_as(&service, Some(Caller::user(user)), access, json!({})).await;
    assert_eq!(answer["data"]["callerAccess"]["plan"], "reader");
    assert!(key_exists(&key).await);
    let mut connection = redis_connection().await;
    let cached: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&cached).unwrap(),
        json!({"plan": "reader", "entitlements": []})
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");

    // A subscription arrives: the key goes and the user id is announced.
    let mut changes = subscribe(&names.entitlements_channel).await;
    let now = now_secs();
    let body = event(
        &event_id(),
        "customer.subscription.created",
        now,
        subscription(
            &subscription_id(),
            &customer_id(),
            Some(user),
            "active",
            "price_academic_monthly",
            (now, now + 1000),
        ),
    );
    assert_eq!(post(&url, &body).await.0, 200);
    assert_eq!(next_message(&mut changes).await, Some(user.to_string()));
    assert!(!key_exists(&key).await);
    let answer = run_as(&service, Some(Caller::user(user)), access, json!({})).await;
    assert_eq!(answer["data"]["callerAccess"]["plan"], "academic");
    assert!(
        answer["data"]["callerAccess"]["entitlements"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("ai_features")))
    );
    // The second invalidation, a second later, announces it again.
    assert_eq!(next_message(&mut changes).await, Some(user.to_string()));

    clean_up(&pool, &[user], &names).await;
}

/// A delivery whose body trickles in (the headers at once, then a byte every 100 ms) is refused
/// `408` once its deadline passes, the connection closed and nothing written; the same event
/// sent whole afterwards (Stripe retries) is applied.
#[tokio::test]
async fn a_delivery_whose_body_does_not_arrive_in_time_is_408_and_applied_when_retried() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let state = gospelib_billing::WebhookState::with_names(
        pool.clone(),
        redis(),
        SECRET,
        plans(),
        names.clone(),
    )
    .unwrap()
    .with_body_deadline(std::time::Duration::from_millis(300));
    let url = serve(gospelib_billing::webhook_routes(state)).await;
    let (id, now) = (event_id(), now_secs());
    let body = new_active_subscription(&id, user, now);
    let signature = format!("t={now},v1={}", sign(SECRET, now, body.as_bytes()));

    let answer = gospelib_kit::test_stack::trickle_post(
        &url,
        &[
            ("content-type", "application/json"),
            ("stripe-signature", &signature),
        ],
        body.as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"INVALID_REQUEST""#), "{answer}");
    assert!(!event_recorded(&pool, &id).await);
    assert!(stored_subscriptions(&pool, user).await.is_empty());

    assert_eq!(
        post_signed(&url, &body, Some(&signature)).await,
        (200, json!({"status": "processed"}))
    );
    assert_eq!(stored_subscriptions(&pool, user).await.len(), 1);

    clean_up(&pool, &[user], &names).await;
}

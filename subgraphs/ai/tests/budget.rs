//! The vendors' daily budget against the stack's Redis: a question no vendor charged for is
//! given back to the caller's share and to the day, one each, and never below zero.

use gospelib_ai::budget::{Taken, VendorBudget, today};

async fn count(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &str,
    field: &str,
) -> Option<i64> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(connection)
        .await
        .unwrap()
}

/// The caller's count (`user:a`) and the day's.
async fn both(
    connection: &mut redis::aio::MultiplexedConnection,
    share: &str,
    total: &str,
    day: u64,
) -> (Option<i64>, Option<i64>) {
    (
        count(connection, share, "user:a").await,
        count(connection, total, &day.to_string()).await,
    )
}

/// A Redis namespace of this test's own (`prefix`, the process and the instant).
fn fresh_namespace(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn a_question_given_back_takes_one_from_each_count_and_never_below_zero() {
    let redis = gospelib_kit::test_stack::redis();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    // The counts are per UTC day: should midnight pass during an attempt, it runs again.
    for _ in 0..2 {
        let day = today();
        let namespace = fresh_namespace("budget");
        let budget = VendorBudget::new(redis.clone(), namespace, 5).per_caller(3);
        let (share, total) = (budget.callers_key(day), budget.key());
        let (taken, receipt) = budget.take_with_receipt("user:a").await;
        assert_eq!(taken, Taken::Yes);
        let receipt = receipt.expect("a receipt for a question taken");
        assert!(receipt.counted_in_redis());
        assert_eq!(budget.take("user:a").await, Taken::Yes);
        if today() != day {
            continue;
        }
        assert_eq!(
            both(&mut connection, &share, &total, day).await,
            (Some(2), Some(2))
        );

        budget.give_back(&receipt).await;
        assert_eq!(
            both(&mut connection, &share, &total, day).await,
            (Some(1), Some(1)),
            "one each"
        );

        // Counts at zero (a Redis that lost them, then counted again) stay at zero.
        for (key, field) in [(&share, "user:a".to_owned()), (&total, day.to_string())] {
            let _: () = redis::cmd("HSET")
                .arg(key)
                .arg(field)
                .arg(0)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        budget.give_back(&receipt).await;
        assert_eq!(
            both(&mut connection, &share, &total, day).await,
            (Some(0), Some(0)),
            "never below zero"
        );
        let _: () = redis::cmd("DEL")
            .arg(&share)
            .arg(&total)
            .query_async(&mut connection)
            .await
            .unwrap();
        budget.give_back(&receipt).await;
        assert_eq!(
            both(&mut connection, &share, &total, day).await,
            (None, None),
            "nothing made up"
        );
        if today() == day {
            return;
        }
    }
    panic!("UTC midnight passed twice during the test");
}

/// A question refused (the day's budget or the caller's share spent) is not counted: after a
/// vendor's outage gives questions back, the day is under its budget again.
#[tokio::test]
async fn a_refused_question_is_not_counted() {
    let redis = gospelib_kit::test_stack::redis();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..2 {
        let day = today();
        let namespace = fresh_namespace("budget-refused");
        let budget = VendorBudget::new(redis.clone(), namespace, 2).per_caller(3);
        let (share, total) = (budget.callers_key(day), budget.key());
        let (_, receipt) = budget.take_with_receipt("user:a").await;
        let receipt = receipt.expect("a receipt for a question taken");
        assert_eq!(budget.take("user:b").await, Taken::Yes);
        for _ in 0..3 {
            assert_eq!(budget.take("user:a").await, Taken::BudgetSpent);
        }
        if today() != day {
            continue;
        }
        assert_eq!(
            both(&mut connection, &share, &total, day).await,
            (Some(1), Some(2)),
            "refusals not counted"
        );
        // The first question's vendor failed: given back, the day has room again.
        budget.give_back(&receipt).await;
        assert_eq!(budget.take("user:a").await, Taken::Yes);
        // The caller's share down to one: the next refused, and not counted.
        let budget = budget.per_caller(1);
        assert_eq!(budget.take("user:a").await, Taken::ShareSpent);
        if today() != day {
            continue;
        }
        assert_eq!(
            both(&mut connection, &share, &total, day).await,
            (Some(1), Some(2))
        );
        let _: () = redis::cmd("DEL")
            .arg(&share)
            .arg(&total)
            .query_async(&mut connection)
            .await
            .unwrap();
        return;
    }
    panic!("UTC midnight passed twice during the test");
}

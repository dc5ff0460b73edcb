//! Rate limits in the stack's real Redis: the exact boundary, the refill after a window, two
//! limiters (two router pods) sharing one allowance, several buckets all or nothing, concurrent
//! checks, and Redis down, silent or coming back (the local limiter then, within bounded time).
//! Each test has its own key prefix, so runs never see each other's keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gospelib_kit::config::{Env, StoreUrls};
use gospelib_router::rate_limit::{Allowance, Decision, Enforcer, RateLimitSettings, RateLimiter};
use tokio::net::TcpListener;

/// A hang guard per check: generous, since the machine is shared; not a speed assertion.
const HANG_GUARD: Duration = Duration::from_secs(1);

fn redis_url() -> url::Url {
    let urls = StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!("these tests need the stack: run scripts/test, or source .stack/run/env\n{error}")
    });
    urls.redis
}

fn redis() -> redis::Client {
    gospelib_kit::stores::redis_client(&redis_url()).unwrap()
}

/// A prefix of this test run's own.
fn prefix(test: &str) -> String {
    format!("gl_test_rl:{test}:{}", std::process::id())
}

/// Settings for tests about what Redis decides: timeouts far above a loaded machine's stalls,
/// so a slow moment never turns a check local.
fn patient(test: &str) -> RateLimitSettings {
    RateLimitSettings {
        key_prefix: prefix(test),
        call_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(3),
        ..RateLimitSettings::default()
    }
}

fn allowance(bucket: &str, limit: u32, period: Duration) -> Allowance {
    Allowance {
        bucket: bucket.to_owned(),
        limit,
        period,
        cost: 1,
    }
}

async fn check(limiter: &RateLimiter, subject: &str, allowances: &[Allowance]) -> Decision {
    tokio::time::timeout(HANG_GUARD * 5, limiter.check(subject, allowances))
        .await
        .expect("a check never hangs")
}

/// A port nothing listens on (port 1: a port freed by another test could be taken again by
/// a server of another test running beside this one).
fn closed_port() -> u16 {
    1
}

fn client_at(port: u16) -> redis::Client {
    redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
}

#[tokio::test]
async fn exactly_the_limit_is_allowed_counting_down_then_refused_for_at_most_one_interval() {
    // 5 per 10 s: one request back every 2 s. The six checks below must all land within that
    // interval (a sixth check later than that is rightly allowed), which leaves a loaded
    // machine ample room.
    let period = Duration::from_secs(10);
    let interval = period / 5;
    let limiter = RateLimiter::new(Some(redis()), patient("boundary"));
    let limit = [allowance("passages", 5, period)];
    for expected in [4, 3, 2, 1, 0] {
        let decision = check(&limiter, "user:boundary", &limit).await;
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.enforced_by, Enforcer::Redis);
        assert_eq!(decision.bucket.as_deref(), Some("passages"));
        assert_eq!((decision.limit, decision.remaining), (5, expected));
        assert_eq!(decision.retry_after, None);
        assert!(decision.reset <= period, "{decision:?}");
    }
    let refused = check(&limiter, "user:boundary", &limit).await;
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(refused.enforced_by, Enforcer::Redis);
    assert_eq!((refused.limit, refused.remaining), (5, 0));
    let retry = refused.retry_after.expect("a refusal says when to retry");
    assert!(retry > Duration::ZERO && retry <= interval, "{retry:?}");
    // Full again one period after the first check, which was less than one interval ago.
    assert!(
        refused.reset > period - interval && refused.reset <= period,
        "{refused:?}"
    );

    // The key is the documented one, and expires when the bucket is full again.
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let key = limiter.key("passages", "user:boundary");
    assert_eq!(
        key,
        format!("{}:passages:user:boundary", prefix("boundary"))
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let period_ms = i64::try_from(period.as_millis()).unwrap();
    assert!(ttl > 0 && ttl <= period_ms, "PTTL {ttl}");
    // Another subject has its own allowance.
    assert!(check(&limiter, "user:other", &limit).await.allowed);
}

/// Five checks then a sixth on `subject`, all decided by Redis: their remaining counts and
/// whether each was allowed, with how long the six took in all.
async fn six_checks(
    limiter: &RateLimiter,
    subject: &str,
    limit: &[Allowance],
) -> (Vec<(bool, u32)>, Duration) {
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let decision = check(limiter, subject, limit).await;
        assert_eq!(decision.enforced_by, Enforcer::Redis, "{decision:?}");
        seen.push((decision.allowed, decision.remaining));
    }
    (seen, started.elapsed())
}

#[tokio::test]
async fn the_whole_allowance_is_back_one_period_later() {
    // 5 per 2 s: one request back every 400 ms. Five allowed counting down then a sixth
    // refused holds when the six checks land within one interval; a burst that took longer
    // (a stalled machine) proves nothing either way, so that attempt starts again on a fresh
    // subject.
    let period = Duration::from_secs(2);
    let interval = period / 5;
    let counted_down = vec![
        (true, 4),
        (true, 3),
        (true, 2),
        (true, 1),
        (true, 0),
        (false, 0),
    ];
    let limiter = RateLimiter::new(Some(redis()), patient("refill"));
    let limit = [allowance("search", 5, period)];
    let mut proven = false;
    for attempt in 0..3 {
        let subject = format!("user:refill:{attempt}");
        let first = std::time::Instant::now();
        let (drained, took) = six_checks(&limiter, &subject, &limit).await;
        if took >= interval {
            eprintln!("attempt {attempt}: draining took {took:?} (over {interval:?}): again");
            continue;
        }
        assert_eq!(drained, counted_down, "took {took:?}");

        // Full again one period after the first check.
        tokio::time::sleep_until((first + period + Duration::from_millis(100)).into()).await;
        let (refilled, took) = six_checks(&limiter, &subject, &limit).await;
        if took >= interval {
            eprintln!(
                "attempt {attempt}: refilled checks took {took:?} (over {interval:?}): again"
            );
            continue;
        }
        assert_eq!(refilled, counted_down, "took {took:?}");
        proven = true;
        break;
    }
    assert!(proven, "no attempt ran six checks within {interval:?}");
}

#[tokio::test]
async fn two_router_pods_share_one_allowance() {
    // Two limiters, each with its own Redis client and connection, as two pods have.
    let first = RateLimiter::new(Some(redis()), patient("pods"));
    let second = RateLimiter::new(Some(redis()), patient("pods"));
    let limit = [allowance("lexicon", 5, Duration::from_secs(60))];
    let mut allowed = 0;
    for round in 0..10 {
        let pod = if round % 2 == 0 { &first } else { &second };
        let decision = check(pod, "partner:acme", &limit).await;
        assert_eq!(decision.enforced_by, Enforcer::Redis);
        if decision.allowed {
            allowed += 1;
            assert_eq!(decision.remaining, 5 - allowed);
        }
    }
    assert_eq!(allowed, 5, "5 in total across both pods, not 5 each");
}

#[tokio::test]
async fn an_operation_touching_two_buckets_needs_room_in_both_and_takes_from_both() {
    let limiter = RateLimiter::new(Some(redis()), patient("buckets"));
    let minute = Duration::from_secs(60);
    let a = allowance("passages", 2, minute);
    let b = allowance("search", 5, minute);
    let both = [a.clone(), b.clone()];

    // Both have room: one from each; the tightest (passages, 1 left) is reported.
    let decision = check(&limiter, "user:ab", &both).await;
    assert!(decision.allowed);
    assert_eq!(decision.bucket.as_deref(), Some("passages"));
    assert_eq!((decision.limit, decision.remaining), (2, 1));

    // Exhaust passages alone, then the pair is refused and search is left as it was.
    assert!(
        check(&limiter, "user:ab", std::slice::from_ref(&a))
            .await
            .allowed
    );
    assert!(
        !check(&limiter, "user:ab", std::slice::from_ref(&a))
            .await
            .allowed
    );
    let refused = check(&limiter, "user:ab", &both).await;
    assert!(!refused.allowed);
    assert_eq!(refused.bucket.as_deref(), Some("passages"));
    assert_eq!(refused.remaining, 0);
    assert!(refused.retry_after.is_some());
    let search = check(&limiter, "user:ab", std::slice::from_ref(&b)).await;
    assert!(search.allowed);
    assert_eq!(
        search.remaining, 3,
        "5, one taken with passages, one now: the refusal took nothing"
    );
}

/// Buckets charged per field (the AI's): an operation asking three answers takes three; one
/// asking more than is left is refused whole and takes nothing; the same arithmetic in Redis
/// and, with Redis unreachable, in the router's memory.
#[tokio::test]
async fn an_operation_costing_several_requests_takes_them_all_or_none() {
    let hour = Duration::from_secs(3600);
    let costing = |cost| Allowance {
        cost,
        ..allowance("ai", 5, hour)
    };
    let global = RateLimiter::new(Some(redis()), patient("cost"));
    let local = RateLimiter::new(Some(client_at(closed_port())), patient("cost-local"));
    for (limiter, enforcer) in [(&global, Enforcer::Redis), (&local, Enforcer::Local)] {
        let three = check(limiter, "user:cost", &[costing(3)]).await;
        assert!(three.allowed);
        assert_eq!(three.enforced_by, enforcer);
        assert_eq!(three.remaining, 2, "{enforcer:?}: 5 − 3");

        let refused = check(limiter, "user:cost", &[costing(3)]).await;
        assert!(!refused.allowed, "{enforcer:?}: 3 asked, 2 left");
        assert_eq!(
            refused.remaining, 2,
            "{enforcer:?}: the refusal took nothing"
        );
        // One request comes back every 12 minutes: 3 fit again one interval later.
        let retry = refused.retry_after.expect("a refusal says when to retry");
        assert!(
            retry > Duration::from_secs(11 * 60) && retry <= Duration::from_secs(12 * 60),
            "{enforcer:?}: {retry:?}"
        );

        let two = check(limiter, "user:cost", &[costing(2)]).await;
        assert!(two.allowed, "{enforcer:?}: 2 asked, 2 left");
        assert_eq!(two.remaining, 0);

        // More than the whole limit costs the whole limit: refused now, never for ever.
        let too_many = check(limiter, "user:cost-many", &[costing(9)]).await;
        assert!(too_many.allowed, "{enforcer:?}: a full bucket");
        assert_eq!(too_many.remaining, 0);
    }
}

#[tokio::test]
async fn a_redis_that_lost_its_scripts_is_given_the_script_again() {
    let limiter = RateLimiter::new(Some(redis()), patient("noscript"));
    let limit = [allowance("search", 20, Duration::from_secs(60))];
    let mut remaining = 19;
    assert_eq!(
        check(&limiter, "user:noscript", &limit).await.remaining,
        remaining
    );

    // As after a restart: EVALSHA answers NOSCRIPT, and EVAL runs (and reloads) the script.
    // The Redis is shared: another test's check may reload the script between the flush and
    // this check (EVALSHA then simply works), so flush again until one round shows the
    // fallback. Every round's decision must be right either way.
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let mut fell_back = false;
    for _ in 0..5 {
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut connection)
            .await
            .unwrap();
        let before = limiter.redis_attempts();
        let decision = check(&limiter, "user:noscript", &limit).await;
        remaining -= 1;
        assert_eq!(decision.enforced_by, Enforcer::Redis);
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.remaining, remaining);
        let attempts = limiter.redis_attempts() - before;
        assert!(
            attempts == 1 || attempts == 2,
            "EVALSHA, then EVAL if the script was gone: {attempts}"
        );
        if attempts == 2 {
            fell_back = true;
            break;
        }
    }
    assert!(fell_back, "EVALSHA, then EVAL: never seen after a flush");
    let again = check(&limiter, "user:noscript", &limit).await;
    assert_eq!(
        (again.enforced_by, again.remaining),
        (Enforcer::Redis, remaining - 1)
    );
}

#[tokio::test]
async fn fifty_concurrent_checks_against_a_limit_of_ten_allow_exactly_ten() {
    let pods = [
        Arc::new(RateLimiter::new(Some(redis()), patient("concurrent"))),
        Arc::new(RateLimiter::new(Some(redis()), patient("concurrent"))),
    ];
    let limit = [allowance("ai", 10, Duration::from_secs(3600))];
    let mut checks = Vec::new();
    for n in 0..50 {
        let pod = Arc::clone(&pods[n % 2]);
        let limit = limit.clone();
        checks.push(tokio::spawn(async move {
            check(&pod, "user:concurrent", &limit).await
        }));
    }
    let mut allowed = 0;
    for decision in futures_util::future::join_all(checks).await {
        let decision = decision.unwrap();
        assert_eq!(decision.enforced_by, Enforcer::Redis, "{decision:?}");
        allowed += usize::from(decision.allowed);
    }
    assert_eq!(allowed, 10);
}

#[tokio::test]
async fn with_redis_down_each_pod_enforces_the_same_limit_locally_without_waiting() {
    let settings = RateLimitSettings {
        key_prefix: prefix("down"),
        ..RateLimitSettings::default()
    };
    let limiter = RateLimiter::new(Some(client_at(closed_port())), settings);
    let minute = Duration::from_secs(60);
    let limit = [allowance("passages", 3, minute)];
    for expected in [2, 1, 0] {
        let decision = tokio::time::timeout(HANG_GUARD, limiter.check("user:down", &limit))
            .await
            .expect("bounded");
        assert!(decision.allowed);
        assert_eq!(decision.enforced_by, Enforcer::Local);
        assert_eq!((decision.limit, decision.remaining), (3, expected));
    }
    let refused = tokio::time::timeout(HANG_GUARD, limiter.check("user:down", &limit))
        .await
        .expect("bounded");
    assert!(!refused.allowed);
    assert_eq!(refused.enforced_by, Enforcer::Local);
    assert!(
        refused
            .retry_after
            .is_some_and(|r| r > Duration::ZERO && r <= Duration::from_secs(20))
    );

    // All or nothing holds locally too.
    let both = [limit[0].clone(), allowance("search", 5, minute)];
    assert!(!limiter.check("user:down", &both).await.allowed);
    assert_eq!(
        limiter.check("user:down", &both[1..]).await.remaining,
        4,
        "search untouched"
    );

    // The breaker is open: later checks do not try Redis again.
    let attempts = limiter.redis_attempts();
    for _ in 0..20 {
        limiter.check("user:down", &limit).await;
    }
    assert_eq!(limiter.redis_attempts(), attempts);
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_one_bounded_wait_then_nothing() {
    // Accepts connections and never writes a byte.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let settings = RateLimitSettings {
        key_prefix: prefix("silent"),
        call_timeout: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(100),
        ..RateLimitSettings::default()
    };
    let limiter = RateLimiter::new(Some(client_at(port)), settings);
    let limit = [allowance("search", 2, Duration::from_secs(60))];
    let mut allowed = 0;
    for _ in 0..5 {
        let decision = tokio::time::timeout(HANG_GUARD, limiter.check("ip:10.0.0.1", &limit))
            .await
            .expect("bounded by the connect timeout, not by Redis");
        assert_eq!(decision.enforced_by, Enforcer::Local);
        allowed += usize::from(decision.allowed);
    }
    assert_eq!(allowed, 2);
    // The first check tried (a connect, perhaps a command); the breaker skipped Redis since.
    let attempts = limiter.redis_attempts();
    assert!((1..=2).contains(&attempts), "{attempts}");
    limiter.check("ip:10.0.0.1", &limit).await;
    assert_eq!(limiter.redis_attempts(), attempts);
    held.abort();
}

#[tokio::test]
async fn when_redis_is_back_the_limits_are_global_again() {
    // A proxy in front of the real Redis that refuses connections until told otherwise.
    let target = {
        let url = redis_url();
        format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(6379)
        )
    };
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    let up = Arc::new(AtomicBool::new(false));
    {
        let up = Arc::clone(&up);
        // Plain threads (blocking copies), left to end with the test process.
        std::thread::spawn(move || {
            for client in proxy.incoming() {
                let Ok(client) = client else { break };
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
    }
    let mut url = redis_url();
    url.set_port(Some(port)).unwrap();
    let settings = RateLimitSettings {
        first_open: Duration::from_millis(200),
        ..patient("back")
    };
    let limiter = RateLimiter::new(
        Some(gospelib_kit::stores::redis_client(&url).unwrap()),
        settings,
    );
    let limit = [allowance("ai", 5, Duration::from_secs(60))];

    let local = check(&limiter, "user:back", &limit).await;
    assert_eq!(local.enforced_by, Enforcer::Local);

    up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let global = check(&limiter, "user:back", &limit).await;
    assert_eq!(global.enforced_by, Enforcer::Redis, "the probe found Redis");
    assert_eq!(global.remaining, 4, "what was counted locally stays local");
    assert_eq!(
        check(&limiter, "user:back", &limit).await.enforced_by,
        Enforcer::Redis
    );
}

#[tokio::test]
async fn no_allowance_means_allowed_without_asking_anyone() {
    let limiter = RateLimiter::new(Some(client_at(closed_port())), RateLimitSettings::default());
    let decision = limiter.check("user:free", &[]).await;
    assert!(decision.allowed);
    assert_eq!(decision.enforced_by, Enforcer::Unlimited);
    assert!(decision.headers().is_empty());
    assert_eq!(limiter.redis_attempts(), 0);
}

#[tokio::test]
async fn headers_for_an_allowed_and_a_refused_decision() {
    let limiter = RateLimiter::new(Some(redis()), patient("headers"));
    let limit = [allowance("search", 1, Duration::from_secs(60))];

    let allowed = check(&limiter, "user:headers", &limit).await;
    assert!(allowed.allowed);
    assert_eq!(
        allowed.headers(),
        [
            ("ratelimit-limit", "1".to_owned()),
            ("ratelimit-remaining", "0".to_owned()),
            ("ratelimit-reset", "60".to_owned()),
        ]
    );

    let refused = check(&limiter, "user:headers", &limit).await;
    assert!(!refused.allowed);
    assert_eq!(
        refused.headers(),
        [
            ("ratelimit-limit", "1".to_owned()),
            ("ratelimit-remaining", "0".to_owned()),
            ("ratelimit-reset", "60".to_owned()),
            ("retry-after", "60".to_owned()),
        ]
    );
    // The names are valid as they are for `HeaderName::from_static` (lowercase).
    for (name, _) in gospelib_router::rate_limit::headers(&refused) {
        axum::http::HeaderName::from_static(name);
    }
}

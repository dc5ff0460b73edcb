//! Partner keys across router pods, on the stack's PostgreSQL and Redis: a key revoked with
//! `partner_keys::revoke` fails at once on every pod following the revocation channel (long
//! before the cache would have let it go), while a pod that does not follow it still trusts
//! its cached answer; and a pod that loses its subscription trusts nothing it cached before it
//! is subscribed again, so a revocation announced meanwhile is not missed.
//!
//! Each pod reaches Redis through a transparent TCP proxy of its own, which tells when the pod
//! is subscribed (Redis confirmed its SUBSCRIBE) and can cut the connection, as a network
//! failure would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gospelib_kit::caller::ForwardedHeaders;
use gospelib_kit::test_stack;
use gospelib_router::identity::{Identity, PARTNER_LIVE_LIFETIME};
use gospelib_router::partner_keys::{self, KeyOwner, POSITIVE_TTL, PartnerKeys};
use sqlx::PgPool;

/// A pool on the stack's database, migrated first: this file may run alone
/// (`cargo test -p gospelib-router --test partner_keys`), before anything else made the tables.
async fn pool() -> PgPool {
    test_stack::migrated_pool(4).await
}

/// A TCP proxy in front of the stack's Redis, for one pod.
struct RedisProxy {
    url: url::Url,
    /// SUBSCRIBE confirmations Redis sent through the proxy.
    subscriptions: Arc<AtomicUsize>,
    /// The pod's ends of the connections made so far.
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl RedisProxy {
    fn start() -> Self {
        let redis_url = test_stack::urls().redis;
        let target = format!(
            "{}:{}",
            redis_url.host_str().unwrap_or("127.0.0.1"),
            redis_url.port().unwrap_or(6379)
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut url = redis_url.clone();
        url.set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        let subscriptions = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (counted, kept) = (Arc::clone(&subscriptions), Arc::clone(&connections));
        // Plain threads (blocking copies), left to end with the test process.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                kept.lock().unwrap().push(client.try_clone().unwrap());
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Both);
                });
                let counted = Arc::clone(&counted);
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while let Ok(read) = from_server.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        let chunk = &buffer[..read];
                        if chunk
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"subscribe"))
                        {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        if to_client.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(Shutdown::Both);
                });
            }
        });
        Self {
            url,
            subscriptions,
            connections,
        }
    }

    fn client(&self) -> redis::Client {
        gospelib_kit::stores::redis_client(&self.url).unwrap()
    }

    /// Waits until Redis has confirmed `count` subscriptions through this proxy, then a moment
    /// more (for the pod to act on the confirmation).
    async fn subscribed(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.subscriptions.load(Ordering::SeqCst) < count {
            assert!(
                Instant::now() < deadline,
                "the pod did not subscribe within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Cuts every connection, as a network failure would.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

/// A pod following revocations through a proxy of its own.
struct Pod {
    keys: Arc<PartnerKeys>,
    proxy: RedisProxy,
    follower: tokio::task::JoinHandle<()>,
}

impl Pod {
    fn start(pool: &PgPool) -> Self {
        let keys = Arc::new(PartnerKeys::new(pool.clone()));
        let proxy = RedisProxy::start();
        let follower = tokio::spawn(Arc::clone(&keys).follow_revocations(proxy.client()));
        Self {
            keys,
            proxy,
            follower,
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// A new key for a partner of this test's own; the owner the routers should find.
async fn new_key(pool: &PgPool, test: &str) -> (KeyOwner, String) {
    let partner = format!("test-{test}-{}", uuid::Uuid::new_v4().simple());
    let scopes = vec!["content:read".to_owned()];
    let (made, key) = partner_keys::create(pool, &partner, &scopes).await.unwrap();
    let owner = KeyOwner {
        key_id: made.id,
        partner,
        scopes,
    };
    (owner, key)
}

async fn delete(pool: &PgPool, owner: &KeyOwner) {
    sqlx::query("DELETE FROM accounts.partner_keys WHERE id = $1")
        .bind(&owner.key_id)
        .execute(pool)
        .await
        .unwrap();
}

/// Takes every slot of the lookups of keys not found before, as a flood of made-up keys would.
async fn hold_every_lookup_slot(keys: &PartnerKeys) -> tokio::sync::SemaphorePermit<'_> {
    keys.lookup_slots()
        .acquire_many(partner_keys::MAX_CONCURRENT_LOOKUPS as u32)
        .await
        .unwrap()
}

/// Waits (polling every 5 ms, for at most 1 s: each request gives up after 2 s) until
/// `condition` holds.
async fn until(condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(1), "not within 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `keys.find(key)` on a task of its own.
fn find_in_background(
    keys: &Arc<PartnerKeys>,
    key: &str,
) -> tokio::task::JoinHandle<Result<Option<KeyOwner>, partner_keys::PartnerKeyError>> {
    let (keys, key) = (Arc::clone(keys), key.to_owned());
    tokio::spawn(async move { keys.find(&key).await })
}

/// How long until `keys` says there is no such key (polled every 10 ms, for at most `limit`).
async fn until_refused(keys: &PartnerKeys, key: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if keys.find(key).await.unwrap().is_none() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A flood of made-up keys (well formed, so each is looked up) fills only the unknown keys'
/// side of the cache: a real partner's key found before is still answered from the cache
/// (here its row is gone from the database, so only the cache can answer it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_keys_does_not_push_out_the_keys_found() {
    use futures_util::StreamExt;
    let pool = pool().await;
    let keys = PartnerKeys::new(pool.clone());
    let (owner, key) = new_key(&pool, "flood").await;
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    delete(&pool, &owner).await;

    let made_up: Vec<String> = (0..10_001).map(|n| format!("glpk_{:0>43}", n)).collect();
    let found = futures_util::stream::iter(&made_up)
        .map(|made_up| keys.find(made_up))
        .buffer_unordered(32)
        .filter(|found| std::future::ready(!matches!(found, Ok(None))))
        .count()
        .await;
    assert_eq!(
        found, 0,
        "made-up keys are unknown, and every lookup answered"
    );
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_fails_at_once_on_every_pod_following_revocations() {
    let pool = pool().await;
    let pods = [Pod::start(&pool), Pod::start(&pool)];
    for pod in &pods {
        pod.proxy.subscribed(1).await;
    }
    // A pod that does not follow revocations: only its cache's lifetime limits what it trusts.
    let deaf = PartnerKeys::new(pool.clone());
    let (owner, key) = new_key(&pool, "pods").await;
    for keys in pods.iter().map(|pod| &*pod.keys).chain([&deaf]) {
        assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    }

    assert!(
        partner_keys::revoke(&pool, Some(&test_stack::redis()), &owner.key_id)
            .await
            .unwrap()
    );
    for (n, pod) in pods.iter().enumerate() {
        let refused_after = until_refused(&pod.keys, &key, Duration::from_secs(5)).await;
        assert!(
            refused_after.is_some(),
            "pod {n} still trusts a revoked key 5 s later (its cache keeps one 15 s)"
        );
    }
    // Not the cache's lifetime: the deaf pod still trusts what it cached...
    assert!(POSITIVE_TTL >= Duration::from_secs(10));
    assert_eq!(deaf.find(&key).await.unwrap(), Some(owner.clone()));
    // ...and the database does not.
    assert_eq!(
        PartnerKeys::new(pool.clone()).find(&key).await.unwrap(),
        None
    );
    // The pods stayed subscribed all along: Redis told them.
    for pod in &pods {
        assert_eq!(pod.proxy.subscriptions.load(Ordering::SeqCst), 1);
    }
    delete(&pool, &owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_subscribing_again_forgets_what_it_cached_while_it_could_miss_revocations() {
    let pool = pool().await;
    let pod = Pod::start(&pool);
    pod.proxy.subscribed(1).await;
    let (owner, key) = new_key(&pool, "resubscribe").await;

    // The connection fails: the pod waits a second before subscribing again. What it looks up
    // meanwhile is cached, and the revocation announced meanwhile never reaches it.
    pod.proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pod.keys.find(&key).await.unwrap(), Some(owner.clone()));
    assert!(
        partner_keys::revoke(&pool, Some(&test_stack::redis()), &owner.key_id)
            .await
            .unwrap()
    );
    // Subscribed again, it trusts nothing from before: the key fails within moments, not
    // after the cache's 15 s.
    let refused_after = until_refused(&pod.keys, &key, Duration::from_secs(5)).await;
    assert!(
        refused_after.is_some(),
        "a revoked key is still trusted 5 s after the pod lost its subscription"
    );
    assert_eq!(
        pod.proxy.subscriptions.load(Ordering::SeqCst),
        2,
        "the pod subscribed again"
    );
    delete(&pool, &owner).await;
}

/// With Redis out of reach, a key found is kept for its own lifetime: the failed attempts
/// to subscribe (one a second) do not each send every partner's key to the database again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_out_of_reach_found_keys_are_kept_for_their_lifetime() {
    let pool = pool().await;
    let keys = Arc::new(PartnerKeys::new(pool.clone()));
    // Nothing listens there.
    let unreachable = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
    };
    let follower = tokio::spawn(Arc::clone(&keys).follow_revocations(unreachable));
    let (owner, key) = new_key(&pool, "outage").await;
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    // The row goes (unannounced): only a lookup in the database would notice.
    delete(&pool, &owner).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let found = keys.find(&key).await.unwrap();
    follower.abort();
    assert_eq!(
        found,
        Some(owner),
        "asked of the database again during the outage"
    );
}

/// A router that has served no partner yet (just started, or scaled out) listed the live
/// keys: a flood of made-up keys holding every lookup slot does not lock real partners out of
/// it; a key made after the listing waits for those slots until the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_lock_out_live_keys_a_new_router_has_not_served() {
    let pool = pool().await;
    let (owner, key) = new_key(&pool, "listed").await;
    let keys = PartnerKeys::new(pool.clone());
    assert!(keys.list_live_keys().await.unwrap() >= 1);
    let (later, later_key) = new_key(&pool, "listed-later").await;
    let held = hold_every_lookup_slot(&keys).await;
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    assert!(matches!(
        keys.find(&later_key).await,
        Err(partner_keys::PartnerKeyError::Timeout(_))
    ));
    keys.list_live_keys().await.unwrap();
    assert_eq!(keys.find(&later_key).await.unwrap(), Some(later.clone()));
    drop(held);
    delete(&pool, &owner).await;
    delete(&pool, &later).await;
}

/// Made-up keys can take every lookup slot; a key this router found before is then looked up
/// again, when its cached answer expires, in slots of its own, and really asked of the
/// database (a key gone from it is refused), not answered from what was cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_holding_every_lookup_slot_does_not_lock_out_keys_found_before() {
    let pool = pool().await;
    let ttl = Duration::from_millis(50);
    let keys = PartnerKeys::new(pool.clone()).with_positive_ttl(ttl);
    let (owner, key) = new_key(&pool, "slots").await;
    let (gone, gone_key) = new_key(&pool, "slots-gone").await;
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    assert_eq!(keys.find(&gone_key).await.unwrap(), Some(gone.clone()));

    // The flood: every slot for keys not found before is taken.
    let held = hold_every_lookup_slot(&keys).await;
    delete(&pool, &gone).await;
    tokio::time::sleep(ttl * 2).await;
    let started = Instant::now();
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    assert_eq!(keys.find(&gone_key).await.unwrap(), None);
    assert!(started.elapsed() < partner_keys::LOOKUP_TIMEOUT);
    // Known to be gone now: refused from the cache, without a lookup.
    assert_eq!(keys.find(&gone_key).await.unwrap(), None);
    // A key never seen waits for the flood's slots, and gives up.
    let made_up = format!("glpk_{:0>43}", "slots");
    assert!(matches!(
        keys.find(&made_up).await,
        Err(partner_keys::PartnerKeyError::Timeout(_))
    ));
    drop(held);
    assert_eq!(keys.find(&made_up).await.unwrap(), None);

    // Revocations may have been missed (a reconnection to Redis): nothing cached is trusted,
    // but a key found before is still asked in its own slots while a flood holds the others.
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    keys.forget_all();
    let held = hold_every_lookup_slot(&keys).await;
    delete(&pool, &owner).await;
    assert_eq!(
        keys.find(&key).await.unwrap(),
        None,
        "asked of the database again, in a slot of its own"
    );
    drop(held);
}

/// Requests with one key not cached, in flight at once, ask the database once between them
/// and all get its answer: here 50 wait while a flood holds every slot, then one lookup runs.
/// Once something is forgotten (a revocation announced), a request does not join a lookup
/// begun before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_ask_the_database_once() {
    let pool = pool().await;
    let keys = Arc::new(PartnerKeys::new(pool.clone()));
    let (owner, key) = new_key(&pool, "merged").await;
    let held = hold_every_lookup_slot(&keys).await;
    let waiting: Vec<_> = (0..50).map(|_| find_in_background(&keys, &key)).collect();
    until(|| keys.lookups_joined() == 49).await;
    assert_eq!(keys.lookups_in_flight(), 1);
    assert_eq!(keys.lookups_asked(), 0, "every slot is held");
    drop(held);
    for found in waiting {
        assert_eq!(found.await.unwrap().unwrap(), Some(owner.clone()));
    }
    assert_eq!(keys.lookups_asked(), 1);

    // A lookup waiting for a slot when the key is revoked and forgotten is not joined by a
    // request that comes after: that one makes a lookup of its own (two in flight, three
    // asked in all). (Both find the key gone here: the first one's turn comes after the
    // delete too.)
    keys.forget(&partner_keys::digest(&key));
    let held = hold_every_lookup_slot(&keys).await;
    let before = find_in_background(&keys, &key);
    until(|| keys.lookups_in_flight() == 1).await;
    delete(&pool, &owner).await;
    keys.forget(&partner_keys::digest(&key));
    let after = find_in_background(&keys, &key);
    until(|| keys.lookups_in_flight() == 2).await;
    drop(held);
    assert_eq!(after.await.unwrap().unwrap(), None);
    before.await.unwrap().unwrap();
    assert_eq!(
        keys.lookups_asked(),
        3,
        "the request after the revocation asked again"
    );
}

/// A request for a key listed since another request began to look it up in the slots a
/// flood holds does not join that lookup: it asks in the slots of keys found before, and is
/// answered while the first still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_listed_meanwhile_is_not_held_behind_a_lookup_waiting_in_the_floods_slots() {
    let pool = pool().await;
    let keys = Arc::new(PartnerKeys::new(pool.clone()));
    let (owner, key) = new_key(&pool, "listed-meanwhile").await;
    let held = hold_every_lookup_slot(&keys).await;
    let waiting = find_in_background(&keys, &key);
    until(|| keys.lookups_in_flight() == 1).await;
    keys.list_live_keys().await.unwrap();
    assert_eq!(keys.find(&key).await.unwrap(), Some(owner.clone()));
    assert!(!waiting.is_finished(), "the first still waits for a slot");
    drop(held);
    assert_eq!(waiting.await.unwrap().unwrap(), Some(owner.clone()));
    delete(&pool, &owner).await;
}

/// A key never expires, but a live connection opened with it does, so that a revoked key's
/// connections end too (they reconnect, and the key is checked again).
#[tokio::test]
async fn a_live_connection_opened_with_a_key_ends_after_its_lifetime() {
    let pool = pool().await;
    let (owner, key) = new_key(&pool, "live").await;
    let identity = Identity {
        sessions: None,
        partner_keys: Some(Arc::new(PartnerKeys::new(pool.clone()))),
    };
    let headers = ForwardedHeaders(vec![("x-api-key".to_owned(), key)]);
    let before = std::time::SystemTime::now();
    let identified = identity.identify(Some(&headers)).await.unwrap();
    assert!(identified.partner);
    let ends = identified.expires_at.expect("a partner's connection ends");
    assert!(ends >= before + PARTNER_LIVE_LIFETIME, "{ends:?}");
    assert!(
        ends <= std::time::SystemTime::now() + PARTNER_LIVE_LIFETIME,
        "{ends:?}"
    );
    delete(&pool, &owner).await;
}

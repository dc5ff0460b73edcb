//! A router polling the registry's supergraph: it follows newer versions and refuses one
//! older than the version it serves (a registry read from a lagging replica or a restored
//! database), which a rollback never is (it is published as a new version); and it reads no
//! answer past the size any published document has. Its trusted documents' poller refuses an
//! older manifest too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::reload::poll_registry;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::InProcess;

const SDL: &str = include_str!("fixtures/products-reviews.graphql");

/// What the fake registry serves: a version number and its supergraph.
type Served = Arc<Mutex<(u64, String)>>;

/// How many times the fake registry has answered (each answer counted once it is read).
type Answered = Arc<AtomicUsize>;

async fn supergraph(State((served, answered)): State<(Served, Answered)>) -> impl IntoResponse {
    let (number, sdl) = served.lock().unwrap().clone();
    answered.fetch_add(1, Ordering::SeqCst);
    (
        [
            ("x-registry-version", number.to_string()),
            ("etag", format!("\"v{number}\"")),
        ],
        sdl,
    )
}

/// A fake registry serving version 5 of [`SDL`] at the returned URL, until the test ends.
async fn fake_registry() -> (Served, Answered, String) {
    let served: Served = Arc::new(Mutex::new((5, SDL.to_owned())));
    let answered: Answered = Arc::default();
    let app = axum::Router::new()
        .route("/registry/supergraph", axum::routing::get(supergraph))
        .with_state((served.clone(), answered.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/registry/supergraph",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (served, answered, url)
}

/// A router serving version 5 of [`SDL`], as the fake registry first does.
fn router_at_version_5() -> Arc<Router> {
    Arc::new(Router::new(
        Supergraph::parse(SDL, Some(5)).unwrap(),
        Arc::new(InProcess::default()),
    ))
}

async fn version_served(router: &Router) -> String {
    let answer = router
        .execute(&GraphQlRequest {
            query: "{ __typename }".to_owned(),
            ..Default::default()
        })
        .await;
    answer["extensions"]["supergraphVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_polling_router_follows_newer_versions_and_refuses_older_ones() {
    let (served, answered, url) = fake_registry().await;

    let router = router_at_version_5();
    let poller = tokio::spawn(poll_registry(
        router.clone(),
        reqwest::Client::new(),
        url,
        Some("\"v5\"".to_owned()),
        Duration::from_millis(50),
    ));
    assert!(version_served(&router).await.starts_with("5-"));

    // An older number, with another supergraph: refused. Three answers after the change, at
    // least the last two read it, and the router asked for the third only once it had dealt
    // with the second (it polls one at a time).
    let older = SDL.replace("topProducts", "oldProducts");
    *served.lock().unwrap() = (3, older);
    let before = answered.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::SeqCst) < before + 3 {
        assert!(Instant::now() < deadline, "the router stopped polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(version_served(&router).await.starts_with("5-"));

    // A newer one is followed.
    let newer = SDL.replace("topProducts", "bestProducts");
    *served.lock().unwrap() = (6, newer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !version_served(&router).await.starts_with("6-") {
        assert!(
            Instant::now() < deadline,
            "the newer version was not followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poller.abort();
}

/// Whatever answers at the registry's address with more than a published document could hold
/// (a misrouted service, a broken proxy) is refused, not buffered; a document in bounds is read.
#[tokio::test]
async fn an_oversized_answer_is_refused_not_read() {
    use gospelib_router::reload::{FetchError, MAX_PUBLISHED_BYTES, fetch_published};
    let huge = axum::Router::new().route(
        "/supergraph",
        axum::routing::get(|| async { " ".repeat(MAX_PUBLISHED_BYTES + 1) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, huge).await.unwrap() });
    let client = gospelib_kit::outbound::client().build().unwrap();
    let url = format!("http://{address}/supergraph");
    let refused = fetch_published(&client, &url, None).await;
    assert!(matches!(refused, Err(FetchError::TooLarge)), "{refused:?}");

    let served: Served = Arc::new(Mutex::new((1, SDL.to_owned())));
    let registry = axum::Router::new()
        .route("/supergraph", axum::routing::get(supergraph))
        .with_state((served, Answered::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, registry).await.unwrap() });
    let url = format!("http://{address}/supergraph");
    let published = fetch_published(&client, &url, None).await.unwrap().unwrap();
    assert_eq!(published.sdl, SDL);
    assert_eq!(published.number, Some(1));
}

/// A router following the registry's announcements polls as soon as a publish is announced,
/// not at its next interval (here an hour): routers move to a new version together.
#[tokio::test]
async fn an_announced_publish_is_fetched_at_once() {
    use gospelib_kit::announcements::REGISTRY_PUBLISHED_CHANNEL;
    use gospelib_router::reload::{follow_publications, poll_registry_nudged};
    let (served, answered, url) = fake_registry().await;
    let router = router_at_version_5();
    let redis = gospelib_kit::test_stack::redis();
    let (nudge, nudges) = tokio::sync::watch::channel(0);
    let mut heard = nudges.clone();
    let follower = tokio::spawn(follow_publications(redis.clone(), nudge));
    let poller = tokio::spawn(poll_registry_nudged(
        router.clone(),
        reqwest::Client::new(),
        url,
        Some("\"v5\"".to_owned()),
        Duration::from_secs(3600),
        Some(nudges),
    ));
    // Once subscribed, the follower nudges (announcements may have been missed before), and
    // the poller asks once. Only once that answer is given does the registry change, so the
    // next version can come from the announcement alone.
    tokio::time::timeout(Duration::from_secs(10), heard.changed())
        .await
        .expect("subscribed within 10 s")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "no poll after subscribing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(version_served(&router).await.starts_with("5-"));

    let newer = SDL.replace("topProducts", "bestProducts");
    *served.lock().unwrap() = (6, newer);
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(REGISTRY_PUBLISHED_CHANNEL)
        .arg("6")
        .query_async(&mut connection)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !version_served(&router).await.starts_with("6-") {
        assert!(
            Instant::now() < deadline,
            "the announced version was not fetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered.load(Ordering::SeqCst), 2, "one poll per nudge");
    poller.abort();
    follower.abort();
}

/// A poller whose nudges end (the follower gone) keeps polling at its interval.
#[tokio::test]
async fn a_poller_without_its_follower_keeps_its_interval() {
    use gospelib_router::reload::next_poll;
    let (nudge, nudges) = tokio::sync::watch::channel(0);
    let mut nudges = Some(nudges);
    drop(nudge);
    // The sender is gone: the first wait ends at once, and forgets the receiver.
    tokio::time::timeout(
        Duration::from_secs(5),
        next_poll(Duration::from_secs(3600), &mut nudges),
    )
    .await
    .unwrap();
    assert!(nudges.is_none());
    // Then the interval alone counts.
    let waited = tokio::time::timeout(
        Duration::from_millis(200),
        next_poll(Duration::from_secs(3600), &mut nudges),
    )
    .await;
    assert!(waited.is_err());
}

/// The trusted documents' poller refuses a manifest older than the one it holds (a lagging
/// replica's, a restored database's), as the supergraph's poller does, and follows a newer one.
#[tokio::test]
async fn a_polling_router_refuses_older_trusted_documents() {
    use gospelib_router::trusted_documents::{
        Held, Manifest, Mode, TrustedDocuments, poll_registry,
    };
    let manifest_of = |text: &str| Manifest::from_documents([("test", text)]).unwrap();
    let json_of = |text: &str| manifest_of(text).to_json().to_string();
    let served: Served = Arc::new(Mutex::new((7, json_of("{ seven }"))));
    let answered: Answered = Arc::default();
    let app = axum::Router::new()
        .route(
            "/registry/trusted-documents",
            axum::routing::get(supergraph),
        )
        .with_state((served.clone(), answered.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/registry/trusted-documents",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let documents = Arc::new(TrustedDocuments::new(
        Mode::Enforce,
        Some(manifest_of("{ seven }")),
    ));
    let holds = |text: &str| {
        let id = manifest_of(text).ids().remove(0);
        documents.manifest().unwrap().get(&id).is_some()
    };
    let poller = tokio::spawn(poll_registry(
        documents.clone(),
        reqwest::Client::new(),
        url,
        Held {
            etag: Some("\"v7\"".to_owned()),
            number: Some(7),
        },
        Duration::from_millis(50),
    ));

    // Version 5's manifest, without what 6 and 7 added: refused (three answers read it).
    *served.lock().unwrap() = (5, json_of("{ five }"));
    let before = answered.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::SeqCst) < before + 3 {
        assert!(Instant::now() < deadline, "the router stopped polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(holds("{ seven }") && !holds("{ five }"));

    // Version 8's: followed.
    *served.lock().unwrap() = (8, json_of("{ eight }"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds("{ eight }") {
        assert!(
            Instant::now() < deadline,
            "the newer manifest was not followed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!holds("{ seven }"));
    poller.abort();
}

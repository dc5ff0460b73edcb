//! Federated subscriptions through the router, on two subgraphs composed for real and run in
//! process: `books` owns `Subscription.bookAdded`, `reviews` adds `Book.reviews`. Each event is
//! completed with the other subgraph's fields (an entity fetch per event), with partial failures
//! kept in their event; the stream ends when the subgraph completes it, when the client drops it
//! (its place in the caller's count is given back), and when a new supergraph is loaded (a last
//! `SUBSCRIPTION_RESTART` error). A caller may hold only so many; queries sent the same way get
//! their one answer, and a subscription sent as a plain request is refused.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_graphql::{Context, EmptyMutation, ID, Object, Schema, SimpleObject, Subscription};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};
use tokio::sync::broadcast;

// ---- the books subgraph: the subscription ----

#[derive(SimpleObject, Clone, Debug)]
struct Book {
    id: ID,
    title: String,
    genre: String,
}

struct BooksQuery;

#[Object(name = "Query")]
impl BooksQuery {
    async fn book(&self, id: ID) -> Book {
        stored_book(id)
    }

    #[graphql(entity)]
    async fn find_book(&self, id: ID) -> Book {
        stored_book(id)
    }
}

fn stored_book(id: ID) -> Book {
    Book {
        title: format!("Book {}", id.as_str()),
        id,
        genre: "history".to_owned(),
    }
}

struct BooksSubscription;

#[Subscription(name = "Subscription")]
impl BooksSubscription {
    /// Books as they are added (of one genre when asked; the first `limit` when asked).
    async fn book_added(
        &self,
        ctx: &Context<'_>,
        genre: Option<String>,
        limit: Option<usize>,
    ) -> impl futures_util::Stream<Item = Book> + use<> {
        let receiver = ctx.data_unchecked::<broadcast::Sender<Book>>().subscribe();
        futures_util::stream::unfold(receiver, move |mut receiver| {
            let genre = genre.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(book) if genre.as_ref().is_none_or(|g| *g == book.genre) => {
                            return Some((book, receiver));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .take(limit.unwrap_or(usize::MAX))
    }
}

type BooksSchema = Schema<BooksQuery, EmptyMutation, BooksSubscription>;

// ---- the reviews subgraph: fields on each event's book ----

struct ReviewedBook {
    id: ID,
}

#[derive(SimpleObject)]
struct Review {
    body: String,
}

#[Object(name = "Book")]
impl ReviewedBook {
    async fn id(&self) -> &ID {
        &self.id
    }

    async fn reviews(&self) -> async_graphql::Result<Option<Vec<Review>>> {
        match self.id.as_str() {
            "3" => Err("the reviews of book 3 are unavailable".into()),
            id => Ok(Some(vec![Review {
                body: format!("a review of {id}"),
            }])),
        }
    }
}

struct ReviewsQuery;

#[Object(name = "Query")]
impl ReviewsQuery {
    #[graphql(entity)]
    async fn find_book(&self, id: ID) -> ReviewedBook {
        ReviewedBook { id }
    }
}

type ReviewsSchema = Schema<ReviewsQuery, EmptyMutation, async_graphql::EmptySubscription>;

// ---- the harness ----

/// A schema as an in-process subgraph, subscriptions included.
struct Local<S>(S);

impl LocalSubgraph for Local<BooksSchema> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
        })
    }

    fn subscribe(
        &self,
        request: Value,
        _headers: Vec<(String, String)>,
    ) -> BoxStream<'static, Value> {
        let request: async_graphql::Request = serde_json::from_value(request).unwrap();
        Box::pin(
            self.0
                .execute_stream(request)
                .map(|response| serde_json::to_value(response).unwrap()),
        )
    }
}

impl LocalSubgraph for Local<ReviewsSchema> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
        })
    }
}

struct Harness {
    router: Arc<Router>,
    books: broadcast::Sender<Book>,
    metrics: gospelib_kit::metrics::Metrics,
}

impl Harness {
    /// The open-subscriptions gauge's value, as `/metrics` shows it.
    fn open_gauge(&self) -> String {
        let rendered = self.metrics.render();
        rendered
            .lines()
            .find(|line| line.starts_with("gospelib_router_subscriptions_open"))
            .and_then(|line| line.rsplit(' ').next())
            .unwrap_or_default()
            .to_owned()
    }
}

fn composed(books: &BooksSchema, reviews: &ReviewsSchema) -> &'static str {
    static COMPOSED: OnceLock<String> = OnceLock::new();
    COMPOSED.get_or_init(|| {
        let options = || async_graphql::SDLExportOptions::new().federation();
        let subgraphs = [
            ("books", books.sdl_with_options(options())),
            ("reviews", reviews.sdl_with_options(options())),
        ]
        .map(|(name, sdl)| SubgraphSdl {
            name: name.to_owned(),
            url: format!("http://{name}.invalid/graphql"),
            sdl,
        });
        compose(&subgraphs).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn harness(max_subscriptions_per_caller: usize) -> Harness {
    harness_with(RouterSettings {
        max_subscriptions_per_caller,
        ..RouterSettings::default()
    })
}

fn harness_with(settings: RouterSettings) -> Harness {
    let (books, _) = broadcast::channel(16);
    let books_schema = Schema::build(BooksQuery, EmptyMutation, BooksSubscription)
        .data(books.clone())
        .enable_federation()
        .enable_subscription_in_federation()
        .finish();
    let reviews_schema = Schema::build(
        ReviewsQuery,
        EmptyMutation,
        async_graphql::EmptySubscription,
    )
    .enable_federation()
    .finish();
    let supergraph = composed(&books_schema, &reviews_schema);
    let transport = InProcess::default()
        .with("books", Arc::new(Local(books_schema)))
        .with("reviews", Arc::new(Local(reviews_schema)));
    let metrics = gospelib_kit::metrics::Metrics::new("test");
    let router = Router::from_settings(
        Supergraph::parse(supergraph, None).unwrap(),
        Arc::new(transport),
        &settings,
    )
    .with_metrics(metrics.clone());
    Harness {
        router: Arc::new(router),
        books,
        metrics,
    }
}

fn request(query: &str, variables: Value) -> GraphQlRequest {
    GraphQlRequest {
        query: query.to_owned(),
        variables: variables.as_object().cloned().unwrap_or_default(),
        ..Default::default()
    }
}

fn book(id: &str, genre: &str) -> Book {
    Book {
        id: ID::from(id),
        title: format!("Book {id}"),
        genre: genre.to_owned(),
    }
}

/// A response without its `extensions` (the supergraph version).
fn body(response: gospelib_router::pipeline::Response) -> Value {
    let mut value = response.to_json();
    value.as_object_mut().unwrap().remove("extensions");
    value
}

impl Harness {
    /// Starts a subscription and waits until the subgraph listens (its resolver runs on the
    /// first poll), returning a receiver of its responses.
    async fn subscribe(&self, query: &str, variables: Value) -> tokio::sync::mpsc::Receiver<Value> {
        let listening = self.books.receiver_count();
        let mut responses = self
            .router
            .subscribe(request(query, variables))
            .await
            .unwrap_or_else(|refused| panic!("{}", refused.to_json()));
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(response) = responses.next().await {
                if sender.send(body(response)).await.is_err() {
                    return;
                }
            }
        });
        wait_until(|| self.books.receiver_count() > listening).await;
        receiver
    }
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition never held");
}

async fn next(receiver: &mut tokio::sync::mpsc::Receiver<Value>) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .expect("a response within 5 s")
}

const SUBSCRIPTION: &str =
    "subscription Added($genre: String) { bookAdded(genre: $genre) { title reviews { body } } }";

#[tokio::test]
async fn each_event_is_completed_with_the_other_subgraphs_fields() {
    let harness = harness(10);
    let mut responses = harness.subscribe(SUBSCRIPTION, json!({})).await;
    harness.books.send(book("1", "history")).unwrap();
    harness.books.send(book("2", "poetry")).unwrap();
    assert_eq!(
        next(&mut responses).await.unwrap(),
        json!({"data": {"bookAdded": {"title": "Book 1", "reviews": [{"body": "a review of 1"}]}}})
    );
    assert_eq!(
        next(&mut responses).await.unwrap(),
        json!({"data": {"bookAdded": {"title": "Book 2", "reviews": [{"body": "a review of 2"}]}}})
    );
    assert_eq!(harness.router.open_subscriptions(), 1);
}

#[tokio::test]
async fn a_failure_in_one_event_stays_in_that_event() {
    let harness = harness(10);
    let mut responses = harness.subscribe(SUBSCRIPTION, json!({})).await;
    harness.books.send(book("3", "history")).unwrap();
    harness.books.send(book("4", "history")).unwrap();
    let failed = next(&mut responses).await.unwrap();
    assert_eq!(
        failed["data"],
        json!({"bookAdded": {"title": "Book 3", "reviews": null}})
    );
    assert_eq!(failed["errors"][0]["path"], json!(["bookAdded", "reviews"]));
    assert_eq!(
        failed["errors"][0]["message"],
        "the reviews of book 3 are unavailable"
    );
    assert_eq!(
        next(&mut responses).await.unwrap(),
        json!({"data": {"bookAdded": {"title": "Book 4", "reviews": [{"body": "a review of 4"}]}}})
    );
}

#[tokio::test]
async fn variables_reach_the_subgraph() {
    let harness = harness(10);
    let mut poetry = harness
        .subscribe(SUBSCRIPTION, json!({"genre": "poetry"}))
        .await;
    harness.books.send(book("5", "history")).unwrap();
    harness.books.send(book("6", "poetry")).unwrap();
    let response = next(&mut poetry).await.unwrap();
    assert_eq!(response["data"]["bookAdded"]["title"], "Book 6");
}

#[tokio::test]
async fn a_dropped_subscription_gives_its_place_back_and_stops_listening() {
    let harness = harness(2);
    let first = harness.subscribe(SUBSCRIPTION, json!({})).await;
    let _second = harness.subscribe(SUBSCRIPTION, json!({})).await;
    assert_eq!(harness.router.open_subscriptions(), 2);
    let refused = harness
        .router
        .subscribe(request(SUBSCRIPTION, json!({})))
        .await
        .err()
        .expect("a third subscription of one caller is refused");
    assert_eq!(
        refused.errors[0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // The client goes away: the router's stream is dropped with the receiver's task.
    drop(first);
    harness.books.send(book("7", "history")).unwrap();
    wait_until(|| harness.router.open_subscriptions() == 1).await;
    wait_until(|| harness.books.receiver_count() == 1).await;
    assert_eq!(harness.open_gauge(), "1");
    let _third = harness.subscribe(SUBSCRIPTION, json!({})).await;
    assert_eq!(harness.router.open_subscriptions(), 2);
    assert_eq!(
        harness.open_gauge(),
        "2",
        "the refused one was never counted"
    );
}

#[tokio::test]
async fn a_new_supergraph_ends_open_subscriptions_with_a_restart_error() {
    let harness = harness(10);
    let mut responses = harness.subscribe(SUBSCRIPTION, json!({})).await;
    let sdl = harness.router.supergraph().sdl().to_owned();
    // The same schema under another registry version (trusted documents published): the
    // subscription goes on, and the router answers with the new number.
    harness
        .router
        .replace_supergraph(Supergraph::parse(&sdl, Some(7)).unwrap());
    assert_eq!(harness.router.supergraph().version.number, Some(7));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), responses.recv())
            .await
            .is_err(),
        "no restart for the same schema"
    );
    assert_eq!(harness.router.open_subscriptions(), 1);
    // Another schema: it ends.
    harness.router.replace_supergraph(
        Supergraph::parse(&format!("{sdl}\n# another version\n"), Some(8)).unwrap(),
    );
    let last = next(&mut responses).await.unwrap();
    assert_eq!(
        last["errors"][0]["extensions"]["code"],
        "SUBSCRIPTION_RESTART"
    );
    assert!(last.get("data").is_none(), "{last}");
    assert_eq!(next(&mut responses).await, None, "the stream ends");
    wait_until(|| harness.router.open_subscriptions() == 0).await;
}

#[tokio::test]
async fn when_the_subgraph_completes_the_subscription_ends() {
    let harness = harness(10);
    let once = "subscription { bookAdded(limit: 1) { title } }";
    let mut responses = harness.subscribe(once, json!({})).await;
    harness.books.send(book("8", "history")).unwrap();
    assert!(next(&mut responses).await.is_some());
    // The books subgraph completes after one event: then the router's stream ends.
    assert_eq!(next(&mut responses).await, None);
    wait_until(|| harness.router.open_subscriptions() == 0).await;
}

#[tokio::test]
async fn queries_sent_as_subscriptions_get_one_answer_and_subscriptions_need_a_stream() {
    let harness = harness(10);
    let answers: Vec<_> = harness
        .router
        .subscribe(request(
            "{ book(id: \"9\") { title reviews { body } } }",
            json!({}),
        ))
        .await
        .unwrap_or_else(|refused| panic!("{}", refused.to_json()))
        .map(body)
        .collect()
        .await;
    assert_eq!(
        answers,
        vec![
            json!({"data": {"book": {"title": "Book 9", "reviews": [{"body": "a review of 9"}]}}})
        ]
    );
    // Planned once: one plan cache lookup.
    let rendered = harness.metrics.render();
    let lookups: u64 = rendered
        .lines()
        .filter(|line| line.starts_with("gospelib_plan_cache_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(lookups, 1, "{rendered}");
    let refused = harness
        .router
        .respond(&request(SUBSCRIPTION, json!({})))
        .await;
    assert_eq!(refused.errors[0]["extensions"]["code"], "INVALID_REQUEST");
    assert!(refused.data.is_none());
}

#[tokio::test]
async fn a_subscription_ends_when_its_session_token_does() {
    let harness = harness(10);
    let listening = harness.books.receiver_count();
    // Time enough for the subscription to open and an event to come through first, even on a
    // loaded machine.
    let expires_at = std::time::SystemTime::now() + Duration::from_secs(2);
    let mut responses = harness
        .router
        .subscribe(GraphQlRequest {
            credential_expires_at: Some(expires_at),
            ..request(SUBSCRIPTION, json!({}))
        })
        .await
        .unwrap_or_else(|refused| panic!("{}", refused.to_json()));
    let first = tokio::spawn(async move {
        let first = responses.next().await.map(body);
        (first, responses)
    });
    wait_until(|| harness.books.receiver_count() > listening).await;
    harness.books.send(book("1", "poetry")).unwrap();
    let (first, mut responses) = first.await.unwrap();
    assert_eq!(first.unwrap()["data"]["bookAdded"]["title"], "Book 1");
    // Past the token's expiry: one last error, then nothing, and the caller's place is free.
    let last = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("the last response within 5 s")
        .map(body)
        .unwrap();
    assert!(std::time::SystemTime::now() >= expires_at);
    assert_eq!(
        last,
        json!({"errors": [{
            "message": "the session token expired: subscribe again with a fresh one",
            "extensions": {"code": "UNAUTHORIZED"}
        }]})
    );
    assert!(responses.next().await.is_none(), "the stream ends");
    drop(responses);
    wait_until(|| harness.router.open_subscriptions() == 0).await;
}

/// Starting a subscription counts in the rate limits of its root field's bucket, like a query:
/// past the caller's limit it is refused with `RATE_LIMITED` and nothing is subscribed.
#[tokio::test]
async fn starting_subscriptions_is_rate_limited() {
    let Harness { router, books, .. } = harness(10);
    let router = with_two_books_a_minute(router);
    let mut open = Vec::new();
    for _ in 0..2 {
        let responses = router
            .subscribe(request(SUBSCRIPTION, json!({})))
            .await
            .unwrap_or_else(|refused| panic!("{}", refused.to_json()));
        open.push(responses);
    }
    let listening = books.receiver_count();
    let refused = match router.subscribe(request(SUBSCRIPTION, json!({}))).await {
        Ok(_) => panic!("a third subscription within the minute"),
        Err(refused) => refused.to_json(),
    };
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    assert_eq!(books.receiver_count(), listening, "nothing subscribed");
}

/// The router holds at most `GOSPELIB_ROUTER_MAX_SUBSCRIPTIONS` open, all callers together
/// (each holds a socket to its subgraph), anonymous callers half of them: past it, another
/// anonymous caller's is refused until one ends.
#[tokio::test]
async fn a_router_holds_at_most_its_subscriptions_in_all() {
    let harness = harness_with(RouterSettings {
        max_subscriptions_per_caller: 10,
        max_subscriptions: 4,
        ..RouterSettings::default()
    });
    // Anonymous callers at three addresses: three callers.
    let from_address = |n: u8| GraphQlRequest {
        client_address: Some(std::net::IpAddr::from([192, 0, 2, n])),
        ..request(SUBSCRIPTION, json!({}))
    };
    let first = harness
        .router
        .subscribe(from_address(1))
        .await
        .ok()
        .unwrap();
    let _second = harness
        .router
        .subscribe(from_address(2))
        .await
        .ok()
        .unwrap();
    let refused = match harness.router.subscribe(from_address(3)).await {
        Ok(_) => panic!("a third anonymous subscription on a router holding four at most"),
        Err(refused) => refused.to_json(),
    };
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{refused}"
    );
    drop(first);
    wait_until(|| harness.router.open_subscriptions() == 1).await;
    assert!(harness.router.subscribe(from_address(3)).await.is_ok());
}

/// A subscription refused for another reason (the caller holds all it may) spends none of
/// the caller's starts: once a place is free, the next start is allowed.
#[tokio::test]
async fn a_start_refused_for_want_of_a_place_spends_no_start() {
    let router = with_two_books_a_minute(harness(1).router);
    let first = router
        .subscribe(request(SUBSCRIPTION, json!({})))
        .await
        .unwrap_or_else(|refused| panic!("{}", refused.to_json()));
    for _ in 0..3 {
        let refused = match router.subscribe(request(SUBSCRIPTION, json!({}))).await {
            Ok(_) => panic!("a second subscription of a caller allowed one"),
            Err(refused) => refused.to_json(),
        };
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
            "{refused}"
        );
    }
    drop(first);
    wait_until(|| router.open_subscriptions() == 0).await;
    let again = router.subscribe(request(SUBSCRIPTION, json!({}))).await;
    assert!(
        again.is_ok(),
        "{}",
        again
            .err()
            .map(|refused| refused.to_json())
            .unwrap_or_default()
    );
}

/// The harness's router with the `books` bucket (`Subscription.bookAdded`) allowing two starts
/// a minute on every plan.
fn with_two_books_a_minute(router: Arc<Router>) -> Arc<Router> {
    let text = gospelib_kit::plans::BUILT_IN
        .replace(
            "[buckets.lexicon]",
            "[buckets.books]\nwindow = \"minute\"\nfields = [\"Subscription.bookAdded\"]\n\n[buckets.lexicon]",
        )
        .replace("limits = { account = 120, passages = 60,", "limits = { account = 120, books = 2, passages = 60,")
        .replace(
            "limits = { account = 600, passages = 600, search = 200,",
            "limits = { account = 600, books = 2, passages = 600, search = 200,",
        )
        .replace(
            "limits = { account = 1200, passages = 600, search = 1000,",
            "limits = { account = 1200, books = 2, passages = 600, search = 1000,",
        );
    let plans = Arc::new(gospelib_kit::plans::Plans::parse(&text).unwrap());
    let (enforcement, _) = gospelib_router::pipeline::PlanEnforcement::start(plans, None);
    Arc::new(
        Arc::try_unwrap(router)
            .ok()
            .expect("the harness's router, not shared yet")
            .with_plans(enforcement),
    )
}

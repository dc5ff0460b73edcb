//! A caller's query sent after that caller's mutation was answered reads what the mutation
//! wrote: it never joins an identical query of the same caller begun before the mutation,
//! whether by inbound sharing or by subgraph fetch sharing. Queries sent together after it
//! still share.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

mod support;

use async_graphql::{EmptySubscription, Object, Schema};
use gospelib_kit::caller::{Caller, InternalSecret};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};
use support::until;

/// The shelf's books, and how many times they were read.
#[derive(Default)]
struct Shelf {
    books: AtomicI64,
    reads: AtomicUsize,
}

struct ShelfQuery(Arc<Shelf>);

#[Object(name = "Query")]
impl ShelfQuery {
    /// Read at once, answered a while later: a query sent meanwhile may share the answer.
    async fn books(&self) -> i64 {
        let books = self.0.books.load(Ordering::SeqCst);
        self.0.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        books
    }
}

struct ShelfMutation(Arc<Shelf>);

#[Object(name = "Mutation")]
impl ShelfMutation {
    async fn add_book(&self) -> i64 {
        self.0.books.fetch_add(1, Ordering::SeqCst) + 1
    }
}

type ShelfSchema = Schema<ShelfQuery, ShelfMutation, EmptySubscription>;

struct Local(ShelfSchema);

impl LocalSubgraph for Local {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
        })
    }
}

/// A router over the shelf, with inbound and subgraph fetch sharing as given.
fn router(inbound_dedupe: bool, dedupe: bool) -> (Router, Arc<Shelf>) {
    let shelf = Arc::new(Shelf::default());
    let schema = Schema::build(
        ShelfQuery(shelf.clone()),
        ShelfMutation(shelf.clone()),
        EmptySubscription,
    )
    .enable_federation()
    .finish();
    let supergraph = compose(&[SubgraphSdl {
        name: "shelf".to_owned(),
        url: "http://shelf.invalid/graphql".to_owned(),
        sdl: schema.sdl_with_options(async_graphql::SDLExportOptions::new().federation()),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = RouterSettings {
        dedupe,
        inbound_dedupe,
        ..RouterSettings::default()
    };
    let transport = InProcess::default().with("shelf", Arc::new(Local(schema)));
    let router = Router::from_settings(
        Supergraph::parse(&supergraph, None).unwrap(),
        Arc::new(transport),
        &settings,
    )
    .with_internal_secret(InternalSecret::new(&[7; 32]).unwrap());
    (router, shelf)
}

fn ada() -> Caller {
    Caller::user(uuid::Uuid::from_u128(0xada))
}

fn request(query: &str) -> GraphQlRequest {
    GraphQlRequest {
        query: query.to_owned(),
        caller: ada(),
        ..Default::default()
    }
}

/// A query begun before the caller's mutation, the mutation, then the same query again while
/// the first is still in flight: the second reads the book the mutation added. Then two
/// queries sent together share one read.
async fn a_query_after_a_mutation_reads_it(router: Router, shelf: Arc<Shelf>) {
    let router = Arc::new(router);
    let before = {
        let router = router.clone();
        tokio::spawn(async move { router.execute(&request("{ books }")).await })
    };
    until("the first query read the shelf", || {
        shelf.reads.load(Ordering::SeqCst) == 1
    })
    .await;
    let added = router.execute(&request("mutation { addBook }")).await;
    assert_eq!(added["data"], json!({"addBook": 1}), "{added}");

    let after = router.execute(&request("{ books }")).await;
    assert_eq!(after["data"], json!({"books": 1}), "{after}");
    assert_eq!(before.await.unwrap()["data"], json!({"books": 0}));
    assert_eq!(shelf.reads.load(Ordering::SeqCst), 2);

    let books = request("{ books }");
    let (one, two) = tokio::join!(router.execute(&books), router.execute(&books));
    assert_eq!(one["data"], json!({"books": 1}));
    assert_eq!(two["data"], json!({"books": 1}));
    assert_eq!(
        shelf.reads.load(Ordering::SeqCst),
        3,
        "queries sent together after the mutation still share"
    );
}

#[tokio::test]
async fn inbound_sharing_never_answers_a_query_with_a_run_begun_before_the_callers_mutation() {
    let (router, shelf) = router(true, false);
    a_query_after_a_mutation_reads_it(router, shelf).await;
}

#[tokio::test]
async fn fetch_sharing_never_answers_a_query_with_a_fetch_begun_before_the_callers_mutation() {
    let (router, shelf) = router(false, true);
    a_query_after_a_mutation_reads_it(router, shelf).await;
}

//! Conformance for two Federation 2 features, over async-graphql subgraphs composed for real
//! (apollo-federation) and run through the router in process, every subgraph request recorded:
//! - `@interfaceObject`: `catalog` owns the entity interface `Media` (`@key` on the interface,
//!   implemented by `Book` and `Movie`); `critics` sees `Media` as one object type with
//!   `@interfaceObject` and adds `reviews` to every implementation without knowing them.
//! - `@override`: `Product.price` moved from subgraph `old` to `new` with
//!   `@override(from: "old")`; the router asks `new` for it and never `old`.

use std::sync::{Arc, Mutex};

use async_graphql::{
    EmptyMutation, EmptySubscription, ID, Interface, Object, ObjectType, Schema, SimpleObject,
};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};

// ---- catalog: the entity interface `Media` and its implementations ----

#[derive(SimpleObject, Clone)]
struct Book {
    id: ID,
    title: String,
    author: String,
}

#[derive(SimpleObject, Clone)]
struct Movie {
    id: ID,
    title: String,
    director: String,
}

#[derive(Interface, Clone)]
#[graphql(field(name = "id", ty = "&ID"), field(name = "title", ty = "&String"))]
enum Media {
    Book(Book),
    Movie(Movie),
}

fn library() -> Vec<Media> {
    vec![
        Media::Book(Book {
            id: ID::from("b1"),
            title: "Ruth".into(),
            author: "Samuel".into(),
        }),
        Media::Movie(Movie {
            id: ID::from("m1"),
            title: "Exodus".into(),
            director: "Preminger".into(),
        }),
        Media::Book(Book {
            id: ID::from("b2"),
            title: "Esther".into(),
            author: "Mordecai".into(),
        }),
    ]
}

fn media_id(media: &Media) -> &ID {
    match media {
        Media::Book(book) => &book.id,
        Media::Movie(movie) => &movie.id,
    }
}

struct CatalogQuery;

#[Object(name = "Query")]
impl CatalogQuery {
    async fn media(&self) -> Vec<Media> {
        library()
    }

    /// Resolves `{__typename: "Media", id}`: the interface itself is the entity (`@key` on it).
    #[graphql(entity)]
    async fn media_by_id(&self, id: ID) -> Option<Media> {
        library().into_iter().find(|m| *media_id(m) == id)
    }

    // Federation requires the key on each implementation too, with a resolver for it.
    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> Option<Book> {
        library().into_iter().find_map(|m| match m {
            Media::Book(book) if book.id == id => Some(book),
            _ => None,
        })
    }

    #[graphql(entity)]
    async fn movie_by_id(&self, id: ID) -> Option<Movie> {
        library().into_iter().find_map(|m| match m {
            Media::Movie(movie) if movie.id == id => Some(movie),
            _ => None,
        })
    }
}

// ---- critics: `Media` as an @interfaceObject, with reviews for any media ----

#[derive(SimpleObject)]
#[graphql(name = "Media", interface_object)]
struct ReviewedMedia {
    id: ID,
    reviews: Vec<String>,
}

fn reviewed(id: ID) -> ReviewedMedia {
    let reviews = match id.as_str() {
        "b1" => vec!["loyal".to_owned(), "short".to_owned()],
        "m1" => vec!["epic".to_owned()],
        _ => Vec::new(),
    };
    ReviewedMedia { id, reviews }
}

struct CriticsQuery;

#[Object(name = "Query")]
impl CriticsQuery {
    /// The critics' pick: media this subgraph knows only by id and not by concrete type.
    async fn critics_pick(&self) -> Vec<ReviewedMedia> {
        vec![reviewed(ID::from("m1")), reviewed(ID::from("b1"))]
    }

    #[graphql(entity)]
    async fn media_by_id(&self, id: ID) -> ReviewedMedia {
        reviewed(id)
    }
}

// ---- old and new: `Product.price` moved from `old` to `new` ----

#[derive(SimpleObject, Clone)]
struct Product {
    upc: String,
    name: String,
    /// Composition drops it from `old`: `new` overrides it.
    price: i32,
}

fn products() -> Vec<Product> {
    vec![
        Product {
            upc: "1".into(),
            name: "Table".into(),
            price: 899,
        },
        Product {
            upc: "2".into(),
            name: "Couch".into(),
            price: 1299,
        },
    ]
}

struct OldQuery;

#[Object(name = "Query")]
impl OldQuery {
    async fn top_products(&self) -> Vec<Product> {
        products()
    }

    #[graphql(entity)]
    async fn product_by_upc(&self, upc: String) -> Option<Product> {
        products().into_iter().find(|p| p.upc == upc)
    }
}

#[derive(SimpleObject)]
#[graphql(name = "Product")]
struct RepricedProduct {
    upc: String,
    /// The new price list: ten more than `old` says, so the answer shows who gave it.
    #[graphql(override_from = "old")]
    price: i32,
}

struct NewQuery;

#[Object(name = "Query")]
impl NewQuery {
    #[graphql(entity)]
    async fn product_by_upc(&self, upc: String) -> Option<RepricedProduct> {
        products()
            .into_iter()
            .find(|p| p.upc == upc)
            .map(|p| RepricedProduct {
                upc: p.upc,
                price: p.price + 10,
            })
    }
}

// ---- the harness ----

/// A subgraph that records every request it gets (`{query, variables}`).
struct Recorded<Q: ObjectType + 'static> {
    schema: Schema<Q, EmptyMutation, EmptySubscription>,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl<Q: ObjectType + 'static> LocalSubgraph for Recorded<Q> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.requests.lock().unwrap().push(request.clone());
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.schema.execute(request).await).unwrap()
        })
    }
}

fn schema<Q: ObjectType + 'static>(query: Q) -> Schema<Q, EmptyMutation, EmptySubscription> {
    Schema::build(query, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish()
}

fn federation_sdl<Q: ObjectType + 'static>(
    name: &str,
    schema: &Schema<Q, EmptyMutation, EmptySubscription>,
) -> SubgraphSdl {
    SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://{name}.invalid/graphql"),
        sdl: schema.sdl_with_options(async_graphql::SDLExportOptions::new().federation()),
    }
}

struct Setup {
    router: Router,
    requests: Vec<(&'static str, Arc<Mutex<Vec<Value>>>)>,
}

impl Setup {
    fn new(subgraphs: Vec<(&'static str, SubgraphSdl, Arc<dyn LocalSubgraph>)>) -> Self {
        let sdls: Vec<SubgraphSdl> = subgraphs.iter().map(|(_, sdl, _)| sdl.clone()).collect();
        let supergraph = compose(&sdls).unwrap_or_else(|e| panic!("{e}"));
        let mut transport = InProcess::default();
        for (name, _, subgraph) in subgraphs {
            transport = transport.with(name, subgraph);
        }
        Self {
            router: Router::new(
                Supergraph::parse(&supergraph, None).unwrap(),
                Arc::new(transport),
            ),
            requests: Vec::new(),
        }
    }

    async fn ask(&self, query: &str) -> Value {
        let mut response = self
            .router
            .execute(&GraphQlRequest {
                query: query.to_owned(),
                ..Default::default()
            })
            .await;
        response.as_object_mut().unwrap().remove("extensions");
        response
    }

    /// The requests `subgraph` was sent, in order.
    fn requests(&self, subgraph: &str) -> Vec<Value> {
        let (_, requests) = self
            .requests
            .iter()
            .find(|(name, _)| *name == subgraph)
            .unwrap();
        requests.lock().unwrap().clone()
    }

    /// The queries `subgraph` was sent, in order.
    fn sent(&self, subgraph: &str) -> Vec<String> {
        self.requests(subgraph)
            .iter()
            .map(|r| r["query"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The entity representations of `subgraph`'s only request.
    fn representations(&self, subgraph: &str) -> Value {
        let requests = self.requests(subgraph);
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests[0]["variables"]["representations"].clone()
    }
}

fn recorded<Q: ObjectType + 'static>(
    name: &'static str,
    query: Q,
    requests: &mut Vec<(&'static str, Arc<Mutex<Vec<Value>>>)>,
) -> (&'static str, SubgraphSdl, Arc<dyn LocalSubgraph>) {
    let schema = schema(query);
    let sdl = federation_sdl(name, &schema);
    let log = Arc::new(Mutex::new(Vec::new()));
    requests.push((name, log.clone()));
    (
        name,
        sdl,
        Arc::new(Recorded {
            schema,
            requests: log,
        }),
    )
}

fn media_setup() -> Setup {
    let mut requests = Vec::new();
    let subgraphs = vec![
        recorded("catalog", CatalogQuery, &mut requests),
        recorded("critics", CriticsQuery, &mut requests),
    ];
    let mut setup = Setup::new(subgraphs);
    setup.requests = requests;
    setup
}

fn price_setup() -> Setup {
    let mut requests = Vec::new();
    let subgraphs = vec![
        recorded("old", OldQuery, &mut requests),
        recorded("new", NewQuery, &mut requests),
    ];
    let mut setup = Setup::new(subgraphs);
    setup.requests = requests;
    setup
}

// ---- @interfaceObject ----

#[test]
fn the_subgraph_sdls_declare_the_entity_interface_and_the_interface_object() {
    let catalog = federation_sdl("catalog", &schema(CatalogQuery)).sdl;
    assert!(
        catalog.contains("interface Media @key(fields: \"id\")"),
        "{catalog}"
    );
    let critics = federation_sdl("critics", &schema(CriticsQuery)).sdl;
    assert!(
        critics.contains("type Media @key(fields: \"id\") @interfaceObject"),
        "{critics}"
    );
}

#[tokio::test]
async fn an_interface_object_field_is_fetched_for_every_implementation() {
    let setup = media_setup();
    let response = setup.ask("{ media { __typename id title reviews } }").await;
    assert_eq!(
        response,
        json!({"data": {"media": [
            {"__typename": "Book", "id": "b1", "title": "Ruth", "reviews": ["loyal", "short"]},
            {"__typename": "Movie", "id": "m1", "title": "Exodus", "reviews": ["epic"]},
            {"__typename": "Book", "id": "b2", "title": "Esther", "reviews": []},
        ]}})
    );
    assert_eq!(setup.sent("catalog").len(), 1);
    let critics = setup.sent("critics");
    assert_eq!(critics.len(), 1, "one batch for every media: {critics:?}");
    assert!(critics[0].contains("_entities"), "{critics:?}");
    // Critics knows no Book or Movie: every entity goes as a `Media`.
    assert_eq!(
        setup.representations("critics"),
        json!([
            {"__typename": "Media", "id": "b1"},
            {"__typename": "Media", "id": "m1"},
            {"__typename": "Media", "id": "b2"},
        ])
    );
}

#[tokio::test]
async fn fragments_on_implementations_mix_with_interface_object_fields() {
    let setup = media_setup();
    let response = setup
        .ask(
            "{ media { id ... on Book { author reviews } ... on Movie { director } \
             ... on Media { title } } }",
        )
        .await;
    assert_eq!(
        response,
        json!({"data": {"media": [
            {"id": "b1", "author": "Samuel", "reviews": ["loyal", "short"], "title": "Ruth"},
            {"id": "m1", "director": "Preminger", "title": "Exodus"},
            {"id": "b2", "author": "Mordecai", "reviews": [], "title": "Esther"},
        ]}})
    );
    assert_eq!(setup.sent("catalog").len(), 1);
    // Only the books' reviews were asked for.
    assert_eq!(
        setup.representations("critics"),
        json!([
            {"__typename": "Media", "id": "b1"},
            {"__typename": "Media", "id": "b2"},
        ])
    );
}

#[tokio::test]
async fn from_the_interface_object_back_to_the_implementations() {
    // `criticsPick` comes from critics, which does not know whether each is a Book or a
    // Movie: the router asks catalog, by the interface's key, for the concrete type and fields.
    let setup = media_setup();
    let response = setup
        .ask(
            "{ criticsPick { __typename id reviews title \
             ... on Book { author } ... on Movie { director } } }",
        )
        .await;
    assert_eq!(
        response,
        json!({"data": {"criticsPick": [
            {"__typename": "Movie", "id": "m1", "reviews": ["epic"], "title": "Exodus",
             "director": "Preminger"},
            {"__typename": "Book", "id": "b1", "reviews": ["loyal", "short"], "title": "Ruth",
             "author": "Samuel"},
        ]}})
    );
    assert_eq!(setup.sent("critics").len(), 1);
    let catalog = setup.sent("catalog");
    assert_eq!(catalog.len(), 1, "one batch for every pick: {catalog:?}");
    assert!(catalog[0].contains("_entities"), "{catalog:?}");
    assert_eq!(
        setup.representations("catalog"),
        json!([
            {"__typename": "Media", "id": "m1"},
            {"__typename": "Media", "id": "b1"},
        ])
    );
}

#[tokio::test]
async fn only_the_interface_object_fields_need_no_concrete_type() {
    let setup = media_setup();
    let response = setup.ask("{ criticsPick { id reviews } }").await;
    assert_eq!(
        response,
        json!({"data": {"criticsPick": [
            {"id": "m1", "reviews": ["epic"]},
            {"id": "b1", "reviews": ["loyal", "short"]},
        ]}})
    );
    assert_eq!(setup.sent("critics").len(), 1);
    assert!(
        setup.sent("catalog").is_empty(),
        "nothing is asked of catalog"
    );
}

// ---- @override ----

#[test]
fn the_new_subgraph_overrides_the_old_one() {
    let new = federation_sdl("new", &schema(NewQuery)).sdl;
    assert!(
        new.contains("price: Int! @override(from: \"old\")"),
        "{new}"
    );
    let supergraph = price_setup().router.supergraph();
    assert!(
        supergraph
            .sdl()
            .contains("price: Int! @join__field(graph: NEW, override: \"old\")"),
        "{}",
        supergraph.sdl()
    );
}

#[tokio::test]
async fn an_overridden_field_comes_from_the_new_subgraph_only() {
    let setup = price_setup();
    let response = setup.ask("{ topProducts { upc name price } }").await;
    assert_eq!(
        response,
        json!({"data": {"topProducts": [
            {"upc": "1", "name": "Table", "price": 909},
            {"upc": "2", "name": "Couch", "price": 1309},
        ]}})
    );
    let old = setup.sent("old");
    assert_eq!(old.len(), 1, "{old:?}");
    assert!(
        !old[0].contains("price"),
        "old is never asked the price: {old:?}"
    );
    let new = setup.sent("new");
    assert_eq!(new.len(), 1, "one batch for every product: {new:?}");
    assert!(
        new[0].contains("_entities") && new[0].contains("price"),
        "{new:?}"
    );
    assert_eq!(
        setup.representations("new"),
        json!([
            {"__typename": "Product", "upc": "1"},
            {"__typename": "Product", "upc": "2"},
        ])
    );
}

#[tokio::test]
async fn the_overridden_field_alone_still_goes_to_the_new_subgraph() {
    let setup = price_setup();
    let response = setup.ask("{ topProducts { price } }").await;
    assert_eq!(
        response,
        json!({"data": {"topProducts": [{"price": 909}, {"price": 1309}]}})
    );
    assert!(
        setup.sent("old").iter().all(|q| !q.contains("price")),
        "{:?}",
        setup.sent("old")
    );
    assert_eq!(setup.sent("new").len(), 1);
}

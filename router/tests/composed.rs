//! Federation features across subgraphs composed for real (apollo-federation), through the
//! router in process: `@requires` (the router fetches the required fields from one subgraph and
//! hands them to another), `@provides` (a field provided on a path is not fetched again), and a
//! three-subgraph chain; the number of calls to each subgraph is counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_graphql::{EmptyMutation, EmptySubscription, ID, Object, Schema, SimpleObject};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};

// ---- products: the catalogue ----

#[derive(SimpleObject)]
struct Product {
    upc: String,
    name: String,
    price: i32,
    weight: i32,
}

fn catalogue() -> Vec<Product> {
    vec![
        Product {
            upc: "1".into(),
            name: "Table".into(),
            price: 899,
            weight: 100,
        },
        Product {
            upc: "2".into(),
            name: "Couch".into(),
            price: 1299,
            weight: 1000,
        },
    ]
}

struct ProductsQuery;

#[Object(name = "Query")]
impl ProductsQuery {
    async fn top_products(&self) -> Vec<Product> {
        catalogue()
    }

    #[graphql(entity)]
    async fn product_by_upc(&self, upc: String) -> Option<Product> {
        catalogue().into_iter().find(|p| p.upc == upc)
    }
}

// ---- inventory: shipping needs the price and weight it does not own (@requires) ----

struct InventoryProduct {
    upc: String,
    price: i32,
    weight: i32,
}

#[Object(name = "Product")]
impl InventoryProduct {
    async fn upc(&self) -> &str {
        &self.upc
    }

    #[graphql(external)]
    async fn price(&self) -> i32 {
        self.price
    }

    #[graphql(external)]
    async fn weight(&self) -> i32 {
        self.weight
    }

    /// Free over 1000, otherwise half the weight.
    #[graphql(requires = "price weight")]
    async fn shipping_estimate(&self) -> i32 {
        if self.price > 1000 {
            0
        } else {
            self.weight / 2
        }
    }

    async fn in_stock(&self) -> bool {
        self.upc == "1"
    }
}

struct InventoryQuery;

#[Object(name = "Query")]
impl InventoryQuery {
    #[graphql(entity)]
    async fn product_by_upc(
        &self,
        #[graphql(key)] upc: String,
        price: i32,
        weight: i32,
    ) -> InventoryProduct {
        InventoryProduct { upc, price, weight }
    }
}

// ---- reviews: reviews of products, with authors whose username it provides (@provides) ----

#[derive(SimpleObject)]
struct Review {
    body: String,
    #[graphql(provides = "username")]
    author: ReviewAuthor,
}

#[derive(SimpleObject)]
#[graphql(name = "User")]
struct ReviewAuthor {
    id: ID,
    #[graphql(external)]
    username: String,
}

struct ReviewedProduct {
    upc: String,
}

#[Object(name = "Product")]
impl ReviewedProduct {
    async fn upc(&self) -> &str {
        &self.upc
    }

    async fn reviews(&self) -> Vec<Review> {
        vec![Review {
            body: format!("review of {}", self.upc),
            author: ReviewAuthor {
                id: ID::from("u1"),
                username: "@ada".into(),
            },
        }]
    }
}

struct ReviewsQuery;

#[Object(name = "Query")]
impl ReviewsQuery {
    #[graphql(entity)]
    async fn product_by_upc(&self, upc: String) -> ReviewedProduct {
        ReviewedProduct { upc }
    }

    #[graphql(entity)]
    async fn user_by_id(&self, id: ID) -> ReviewAuthor {
        ReviewAuthor {
            id,
            username: "@ada".into(),
        }
    }
}

// ---- accounts: users ----

#[derive(SimpleObject)]
struct User {
    id: ID,
    /// Reviews provides it too.
    #[graphql(shareable)]
    username: String,
    name: String,
}

struct AccountsQuery;

#[Object(name = "Query")]
impl AccountsQuery {
    #[graphql(entity)]
    async fn user_by_id(&self, id: ID) -> User {
        User {
            id,
            username: "@ada".into(),
            name: "Ada Lovelace".into(),
        }
    }
}

/// A subgraph that counts the requests it gets.
struct Counted<Q: async_graphql::ObjectType + 'static> {
    schema: Schema<Q, EmptyMutation, EmptySubscription>,
    calls: Arc<AtomicUsize>,
}

impl<Q: async_graphql::ObjectType + 'static> LocalSubgraph for Counted<Q> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.schema.execute(request).await).unwrap()
        })
    }
}

fn schema<Q: async_graphql::ObjectType + 'static>(
    query: Q,
) -> Schema<Q, EmptyMutation, EmptySubscription> {
    Schema::build(query, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish()
}

struct Setup {
    router: Router,
    calls: HashMap<&'static str, Arc<AtomicUsize>>,
}

fn setup() -> Setup {
    static SUPERGRAPH: OnceLock<String> = OnceLock::new();
    let products = schema(ProductsQuery);
    let inventory = schema(InventoryQuery);
    let reviews = schema(ReviewsQuery);
    let accounts = schema(AccountsQuery);
    let sdl = SUPERGRAPH
        .get_or_init(|| {
            let subgraph = |name: &str, sdl: String| SubgraphSdl {
                name: name.to_owned(),
                url: format!("http://{name}.invalid/graphql"),
                sdl,
            };
            compose(&[
                subgraph(
                    "products",
                    products.sdl_with_options(async_graphql::SDLExportOptions::new().federation()),
                ),
                subgraph(
                    "inventory",
                    inventory.sdl_with_options(async_graphql::SDLExportOptions::new().federation()),
                ),
                subgraph(
                    "reviews",
                    reviews.sdl_with_options(async_graphql::SDLExportOptions::new().federation()),
                ),
                subgraph(
                    "accounts",
                    accounts.sdl_with_options(async_graphql::SDLExportOptions::new().federation()),
                ),
            ])
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone();
    let mut calls = HashMap::new();
    let mut transport = InProcess::default();
    macro_rules! add {
        ($name:literal, $schema:expr) => {{
            let counter = Arc::new(AtomicUsize::new(0));
            calls.insert($name, counter.clone());
            transport = transport.with(
                $name,
                Arc::new(Counted {
                    schema: $schema,
                    calls: counter,
                }),
            );
        }};
    }
    add!("products", products);
    add!("inventory", inventory);
    add!("reviews", reviews);
    add!("accounts", accounts);
    Setup {
        router: Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport)),
        calls,
    }
}

impl Setup {
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

    fn calls(&self, subgraph: &str) -> usize {
        self.calls[subgraph].load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn requires_hands_one_subgraphs_fields_to_another() {
    let setup = setup();
    let response = setup
        .ask("{ topProducts { name shippingEstimate inStock } }")
        .await;
    assert_eq!(
        response,
        json!({"data": {"topProducts": [
            {"name": "Table", "shippingEstimate": 50, "inStock": true},
            {"name": "Couch", "shippingEstimate": 0, "inStock": false},
        ]}})
    );
    assert_eq!((setup.calls("products"), setup.calls("inventory")), (1, 1));
}

#[tokio::test]
async fn a_provided_field_is_not_fetched_again_but_others_are() {
    let setup = setup();
    let response = setup
        .ask("{ topProducts { reviews { body author { username } } } }")
        .await;
    assert_eq!(
        response["data"]["topProducts"][0],
        json!({"reviews": [{"body": "review of 1", "author": {"username": "@ada"}}]}),
        "{response}"
    );
    assert_eq!(
        setup.calls("accounts"),
        0,
        "username is provided by reviews"
    );

    let response = setup
        .ask("{ topProducts { reviews { author { username name } } } }")
        .await;
    assert_eq!(
        response["data"]["topProducts"][1],
        json!({"reviews": [{"author": {"username": "@ada", "name": "Ada Lovelace"}}]}),
        "{response}"
    );
    assert_eq!(setup.calls("accounts"), 1, "one batch for every author");
}

#[tokio::test]
async fn a_chain_across_four_subgraphs_batches_each_step() {
    let setup = setup();
    let response = setup
        .ask("{ topProducts { upc name shippingEstimate reviews { body author { name } } } }")
        .await;
    assert!(response.get("errors").is_none(), "{response}");
    assert_eq!(response["data"]["topProducts"].as_array().unwrap().len(), 2);
    assert_eq!(response["data"]["topProducts"][1]["shippingEstimate"], 0);
    assert_eq!(
        response["data"]["topProducts"][1]["reviews"][0]["author"]["name"],
        "Ada Lovelace"
    );
    for subgraph in ["products", "inventory", "reviews", "accounts"] {
        assert_eq!(
            setup.calls(subgraph),
            1,
            "{subgraph} is called once, for all entities"
        );
    }
}

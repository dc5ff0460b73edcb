//! The classic four-subgraph federation demo (accounts, inventory, products, reviews), as
//! async-graphql subgraphs, for the router load benchmark (`scripts/bench-router`).
//!
//! The shape is Apollo's demo: users; products with `upc`, `name`, `price`, `weight`;
//! inventory's `inStock` and `shippingEstimate` (`@requires(fields: "price weight")`); reviews
//! with an `author` (`@provides(fields: "username")`) and a `product`, and `User.reviews`,
//! `Product.reviews`. The data is bigger than the demo's (20 users, 24 products, 96 reviews
//! with sentence-length bodies) so responses have a realistic size. Everything is generated
//! deterministically: the same query always gets the same answer.

use std::collections::HashMap;
use std::sync::OnceLock;

use async_graphql::{EmptyMutation, EmptySubscription, ID, Object, ObjectType, Schema};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The subgraphs, each with the loopback port it listens on by default (the committed
/// `supergraph.graphql` names these URLs).
pub const SUBGRAPHS: [(&str, u16); 4] = [
    ("accounts", 4181),
    ("inventory", 4182),
    ("products", 4183),
    ("reviews", 4184),
];

/// The URL a subgraph answers at, on `port`.
pub fn subgraph_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/graphql")
}

// ---- the data ----

struct UserRow {
    id: String,
    name: String,
    username: String,
    birth_date: String,
}

struct ProductRow {
    upc: String,
    name: String,
    price: i32,
    weight: i32,
}

struct ReviewRow {
    id: String,
    body: String,
    author: usize,
    product: usize,
}

struct Data {
    users: Vec<UserRow>,
    products: Vec<ProductRow>,
    reviews: Vec<ReviewRow>,
    user_by_id: HashMap<String, usize>,
    product_by_upc: HashMap<String, usize>,
    review_by_id: HashMap<String, usize>,
    reviews_by_author: Vec<Vec<usize>>,
    reviews_by_product: Vec<Vec<usize>>,
}

const USERS: usize = 20;
const PRODUCTS: usize = 24;
const REVIEWS_PER_PRODUCT: usize = 4;

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        const FIRST: [&str; 10] = [
            "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia",
            "Ken",
        ];
        const LAST: [&str; 7] = [
            "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen",
        ];
        const MATERIAL: [&str; 6] = ["Oak", "Walnut", "Steel", "Linen", "Leather", "Glass"];
        const THING: [&str; 4] = ["Table", "Couch", "Chair", "Lamp"];
        const OPINION: [&str; 6] = [
            "Sturdy and well made, exactly as described",
            "Arrived late and the box was damaged, but the piece itself is fine",
            "Looks great in the living room; assembly took about an hour",
            "Not worth the price in my opinion, the finish scratches easily",
            "Bought a second one for my parents after a month of daily use",
            "Smaller than the photos suggest; check the measurements first",
        ];
        let users: Vec<UserRow> = (0..USERS)
            .map(|i| {
                let first = FIRST[i % FIRST.len()];
                let last = LAST[(i * 3) % LAST.len()];
                UserRow {
                    id: (i + 1).to_string(),
                    name: format!("{first} {last}"),
                    username: format!("@{}{}", first.to_lowercase(), i + 1),
                    birth_date: format!("19{:02}-{:02}-{:02}", 50 + i, i % 12 + 1, i % 28 + 1),
                }
            })
            .collect();
        let products: Vec<ProductRow> = (0..PRODUCTS)
            .map(|i| ProductRow {
                upc: (i + 1).to_string(),
                name: format!(
                    "{} {}",
                    MATERIAL[i % MATERIAL.len()],
                    THING[i % THING.len()]
                ),
                // Some over 1000 (free shipping), some under.
                price: ((i * 37) % 20 + 1) as i32 * 100 - 1,
                weight: ((i * 13) % 50 + 1) as i32 * 10,
            })
            .collect();
        let reviews: Vec<ReviewRow> = (0..PRODUCTS * REVIEWS_PER_PRODUCT)
            .map(|r| {
                let product = r / REVIEWS_PER_PRODUCT;
                ReviewRow {
                    id: (r + 1).to_string(),
                    body: format!(
                        "{}. ({} stars, review {} of {})",
                        OPINION[(r * 5) % OPINION.len()],
                        r % 5 + 1,
                        r % REVIEWS_PER_PRODUCT + 1,
                        products[product].name
                    ),
                    author: (r * 7) % USERS,
                    product,
                }
            })
            .collect();
        let mut reviews_by_author = vec![Vec::new(); USERS];
        let mut reviews_by_product = vec![Vec::new(); PRODUCTS];
        for (index, review) in reviews.iter().enumerate() {
            reviews_by_author[review.author].push(index);
            reviews_by_product[review.product].push(index);
        }
        Data {
            user_by_id: users
                .iter()
                .enumerate()
                .map(|(i, u)| (u.id.clone(), i))
                .collect(),
            product_by_upc: products
                .iter()
                .enumerate()
                .map(|(i, p)| (p.upc.clone(), i))
                .collect(),
            review_by_id: reviews
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect(),
            users,
            products,
            reviews,
            reviews_by_author,
            reviews_by_product,
        }
    })
}

// ---- accounts: users ----

/// A user, as accounts owns it.
pub struct User(usize);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID::from(&data().users[self.0].id)
    }

    async fn name(&self) -> &str {
        &data().users[self.0].name
    }

    /// Reviews provides it too (`@provides` on `Review.author`).
    #[graphql(shareable)]
    async fn username(&self) -> &str {
        &data().users[self.0].username
    }

    async fn birth_date(&self) -> &str {
        &data().users[self.0].birth_date
    }
}

pub struct AccountsQuery;

#[Object(name = "Query")]
impl AccountsQuery {
    /// The signed-in user (the demo's: always the first).
    async fn me(&self) -> User {
        User(0)
    }

    #[graphql(entity)]
    async fn find_user_by_id(&self, id: ID) -> Option<User> {
        data().user_by_id.get(id.as_str()).copied().map(User)
    }
}

// ---- products: the catalogue ----

/// A product, as products owns it.
pub struct Product(usize);

#[Object]
impl Product {
    async fn upc(&self) -> &str {
        &data().products[self.0].upc
    }

    async fn name(&self) -> &str {
        &data().products[self.0].name
    }

    /// In cents.
    async fn price(&self) -> i32 {
        data().products[self.0].price
    }

    /// In grams.
    async fn weight(&self) -> i32 {
        data().products[self.0].weight
    }
}

pub struct ProductsQuery;

#[Object(name = "Query")]
impl ProductsQuery {
    async fn top_products(&self, #[graphql(default = 5)] first: i32) -> Vec<Product> {
        (0..(first.max(0) as usize).min(PRODUCTS))
            .map(Product)
            .collect()
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> Option<Product> {
        data().product_by_upc.get(&upc).copied().map(Product)
    }
}

// ---- inventory: stock, and shipping that needs the price and weight (@requires) ----

/// A product as inventory sees it: the price and weight come from products.
pub struct InventoryProduct {
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

    async fn in_stock(&self) -> bool {
        self.upc.parse::<usize>().is_ok_and(|n| n % 3 != 0)
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
}

pub struct InventoryQuery;

#[Object(name = "Query")]
impl InventoryQuery {
    #[graphql(entity)]
    async fn find_product_by_upc(
        &self,
        #[graphql(key)] upc: String,
        price: i32,
        weight: i32,
    ) -> InventoryProduct {
        InventoryProduct { upc, price, weight }
    }
}

// ---- reviews: reviews, their authors and products, and each user's and product's reviews ----

pub struct Review(usize);

#[Object]
impl Review {
    async fn id(&self) -> ID {
        ID::from(&data().reviews[self.0].id)
    }

    async fn body(&self) -> &str {
        &data().reviews[self.0].body
    }

    #[graphql(provides = "username")]
    async fn author(&self) -> ReviewAuthor {
        ReviewAuthor(data().reviews[self.0].author)
    }

    async fn product(&self) -> ReviewedProduct {
        ReviewedProduct(data().reviews[self.0].product)
    }
}

/// A user as reviews sees it: the reviews they wrote (and the username, which it provides).
pub struct ReviewAuthor(usize);

#[Object(name = "User")]
impl ReviewAuthor {
    async fn id(&self) -> ID {
        ID::from(&data().users[self.0].id)
    }

    #[graphql(external)]
    async fn username(&self) -> &str {
        &data().users[self.0].username
    }

    async fn reviews(&self) -> Vec<Review> {
        data().reviews_by_author[self.0]
            .iter()
            .copied()
            .map(Review)
            .collect()
    }
}

/// A product as reviews sees it: its reviews.
pub struct ReviewedProduct(usize);

#[Object(name = "Product")]
impl ReviewedProduct {
    async fn upc(&self) -> &str {
        &data().products[self.0].upc
    }

    async fn reviews(&self) -> Vec<Review> {
        data().reviews_by_product[self.0]
            .iter()
            .copied()
            .map(Review)
            .collect()
    }
}

pub struct ReviewsQuery;

#[Object(name = "Query")]
impl ReviewsQuery {
    #[graphql(entity)]
    async fn find_review_by_id(&self, id: ID) -> Option<Review> {
        data().review_by_id.get(id.as_str()).copied().map(Review)
    }

    #[graphql(entity)]
    async fn find_user_by_id(&self, id: ID) -> Option<ReviewAuthor> {
        data()
            .user_by_id
            .get(id.as_str())
            .copied()
            .map(ReviewAuthor)
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> Option<ReviewedProduct> {
        data()
            .product_by_upc
            .get(&upc)
            .copied()
            .map(ReviewedProduct)
    }
}

// ---- schemas and serving ----

pub type SubgraphSchema<Q> = Schema<Q, EmptyMutation, EmptySubscription>;

fn schema<Q: ObjectType + 'static>(query: Q) -> SubgraphSchema<Q> {
    Schema::build(query, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish()
}

pub fn accounts() -> SubgraphSchema<AccountsQuery> {
    schema(AccountsQuery)
}

pub fn inventory() -> SubgraphSchema<InventoryQuery> {
    schema(InventoryQuery)
}

pub fn products() -> SubgraphSchema<ProductsQuery> {
    schema(ProductsQuery)
}

pub fn reviews() -> SubgraphSchema<ReviewsQuery> {
    schema(ReviewsQuery)
}

/// Each subgraph's federation SDL, by name, in the order of [`SUBGRAPHS`].
pub fn federation_sdls() -> Vec<(&'static str, String)> {
    let options = || async_graphql::SDLExportOptions::new().federation();
    vec![
        ("accounts", accounts().sdl_with_options(options())),
        ("inventory", inventory().sdl_with_options(options())),
        ("products", products().sdl_with_options(options())),
        ("reviews", reviews().sdl_with_options(options())),
    ]
}

/// Serves `schema` on `listener`: GraphQL over HTTP at `POST /graphql` (JSON in, JSON out, as
/// the router's HTTP transport speaks it) and `GET /health`.
pub async fn serve<Q: ObjectType + 'static>(
    schema: SubgraphSchema<Q>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/graphql", axum::routing::post(graphql::<Q>))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(schema);
    axum::serve(listener, app).await
}

async fn graphql<Q: ObjectType + 'static>(
    State(schema): State<SubgraphSchema<Q>>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => axum::Json(schema.execute(request).await).into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "errors": [{ "message": format!("not a GraphQL request: {error}") }]
            })),
        )
            .into_response(),
    }
}

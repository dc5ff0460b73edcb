//! Interfaces and unions whose members get fields from another subgraph, composed for real:
//! fragments on the abstract types select per member, and the entity fetch for each member's
//! extra fields goes only to the objects of that type.

use std::sync::Arc;

use async_graphql::{
    EmptyMutation, EmptySubscription, ID, Interface, Object, Schema, SimpleObject, Union,
};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};

// ---- catalog: the items, behind an interface and a union ----

#[derive(SimpleObject, Clone)]
struct Book {
    id: ID,
    title: String,
}

#[derive(SimpleObject, Clone)]
struct Film {
    id: ID,
    director: String,
}

#[derive(Interface, Clone)]
#[graphql(field(name = "id", ty = "&ID"))]
enum Item {
    Book(Book),
    Film(Film),
}

#[derive(Union, Clone)]
enum Featured {
    Book(Book),
    Film(Film),
}

fn book() -> Book {
    Book {
        id: ID::from("b1"),
        title: "Ruth".into(),
    }
}

fn film() -> Film {
    Film {
        id: ID::from("f1"),
        director: "Ford".into(),
    }
}

struct CatalogQuery;

#[Object(name = "Query")]
impl CatalogQuery {
    async fn items(&self) -> Vec<Item> {
        vec![Item::Book(book()), Item::Film(film())]
    }

    async fn featured(&self) -> Vec<Featured> {
        vec![Featured::Film(film()), Featured::Book(book())]
    }

    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> Option<Book> {
        (id == book().id).then(book)
    }

    #[graphql(entity)]
    async fn film_by_id(&self, id: ID) -> Option<Film> {
        (id == film().id).then(film)
    }
}

// ---- pricing: a price for each, from another subgraph ----

#[derive(SimpleObject)]
#[graphql(name = "Book")]
struct PricedBook {
    id: ID,
    price: i32,
}

#[derive(SimpleObject)]
#[graphql(name = "Film")]
struct PricedFilm {
    id: ID,
    price: i32,
}

struct PricingQuery;

#[Object(name = "Query")]
impl PricingQuery {
    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> PricedBook {
        PricedBook { id, price: 12 }
    }

    #[graphql(entity)]
    async fn film_by_id(&self, id: ID) -> PricedFilm {
        PricedFilm { id, price: 30 }
    }
}

struct Local<Q: async_graphql::ObjectType + 'static>(Schema<Q, EmptyMutation, EmptySubscription>);

impl<Q: async_graphql::ObjectType + 'static> LocalSubgraph for Local<Q> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
        })
    }
}

fn router() -> Router {
    let catalog = Schema::build(CatalogQuery, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish();
    let pricing = Schema::build(PricingQuery, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish();
    let sdl = |schema: String, name: &str| SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://{name}.invalid/graphql"),
        sdl: schema,
    };
    let options = || async_graphql::SDLExportOptions::new().federation();
    let supergraph = compose(&[
        sdl(catalog.sdl_with_options(options()), "catalog"),
        sdl(pricing.sdl_with_options(options()), "pricing"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    Router::new(
        Supergraph::parse(&supergraph, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("catalog", Arc::new(Local(catalog)))
                .with("pricing", Arc::new(Local(pricing))),
        ),
    )
}

async fn ask(router: &Router, query: &str) -> Value {
    let response = router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            ..Default::default()
        })
        .await;
    assert!(response.get("errors").is_none(), "{response}");
    response["data"].clone()
}

#[tokio::test]
async fn fragments_on_an_interface_select_per_member_across_subgraphs() {
    let data = ask(
        &router(),
        "{ items { __typename id ... on Book { title price } ... on Film { director cost: price } } }",
    )
    .await;
    assert_eq!(
        data,
        json!({"items": [
            {"__typename": "Book", "id": "b1", "title": "Ruth", "price": 12},
            {"__typename": "Film", "id": "f1", "director": "Ford", "cost": 30},
        ]})
    );
}

#[tokio::test]
async fn union_members_keep_their_own_fields() {
    let data = ask(
        &router(),
        "{ featured { ... on Film { director price } ... on Book { title } } }",
    )
    .await;
    assert_eq!(
        data,
        json!({"featured": [{"director": "Ford", "price": 30}, {"title": "Ruth"}]})
    );
}

//! Conformance of the router with the GraphQL spec and Apollo Federation's semantics on the
//! shapes federation makes hard, each on subgraphs composed for real (apollo-federation) and run
//! in process:
//! - `@requires` whose selection has field arguments (`comments(limit: 3) { id }`), also when
//!   the client selects the same field with other arguments, and `@requires` selections with
//!   inline fragments on a union and on an interface;
//! - results that carry what the API schema does not: an enum value that is `@inaccessible`, or
//!   that the supergraph does not know, is `null` with an error at its path, and so is an object
//!   whose runtime type is an `@inaccessible` type (its `__typename` never reaches the client);
//!   a non-null position propagates the null as the spec says;
//! - inline fragments (and fragment spreads) with `@skip`/`@include` conditioned on variables,
//!   on interfaces and unions, with variables given, defaulted and absent, at the root and under
//!   entity fetches.

mod support;

use std::sync::{Arc, OnceLock};

use async_graphql::{
    Any, EmptyMutation, EmptySubscription, Enum, ID, Interface, Object, Schema, SimpleObject, Union,
};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};

// ---- the harness ----

/// An async-graphql schema as an in-process subgraph.
struct Local<Q: async_graphql::ObjectType + 'static>(Schema<Q, EmptyMutation, EmptySubscription>);

impl<Q: async_graphql::ObjectType + 'static> LocalSubgraph for Local<Q> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
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

fn federation_sdl<Q: async_graphql::ObjectType + 'static>(
    schema: &Schema<Q, EmptyMutation, EmptySubscription>,
) -> String {
    schema.sdl_with_options(async_graphql::SDLExportOptions::new().federation())
}

/// One subgraph of a test supergraph: its name, its SDL and the subgraph itself.
struct Part {
    name: &'static str,
    sdl: String,
    subgraph: Arc<dyn LocalSubgraph>,
}

fn part<Q: async_graphql::ObjectType + 'static>(name: &'static str, query: Q) -> Part {
    let schema = schema(query);
    Part {
        name,
        sdl: federation_sdl(&schema),
        subgraph: Arc::new(Local(schema)),
    }
}

/// A router over `parts`, composed once per supergraph (`composed` keeps it: composition is
/// slow in a debug build).
fn router(composed: &OnceLock<String>, parts: Vec<Part>) -> Router {
    let supergraph = composed.get_or_init(|| {
        let subgraphs: Vec<SubgraphSdl> = parts
            .iter()
            .map(|part| SubgraphSdl {
                name: part.name.to_owned(),
                url: format!("http://{}.invalid/graphql", part.name),
                sdl: part.sdl.clone(),
            })
            .collect();
        compose(&subgraphs).unwrap_or_else(|e| panic!("{e}"))
    });
    let mut transport = InProcess::default();
    for part in parts {
        transport = transport.with(part.name, part.subgraph);
    }
    Router::new(
        Supergraph::parse(supergraph, None).unwrap(),
        Arc::new(transport),
    )
}

/// The router's whole response to `query` with `variables`, without its `extensions`.
async fn ask(router: &Router, query: &str, variables: Value) -> Value {
    let mut response = router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            variables: variables.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        })
        .await;
    response.as_object_mut().unwrap().remove("extensions");
    response
}

/// `data`, after checking there is no error.
async fn data_of(router: &Router, query: &str, variables: Value) -> Value {
    let response = ask(router, query, variables).await;
    assert!(response.get("errors").is_none(), "{response}");
    response["data"].clone()
}

/// The paths of a response's errors, in order.
fn error_paths(response: &Value) -> Vec<Value> {
    response["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {response}"))
        .iter()
        .map(|error| error["path"].clone())
        .collect()
}

// ==== 1. `@requires` with field arguments and with fragments on abstract types ====

// ---- posts: posts, their comments (a field with an argument), authors and covers ----

#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
struct Comment {
    id: ID,
    body: String,
}

#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
struct Person {
    name: String,
}

#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
struct Bot {
    model: String,
}

/// A member of `Author` that `byline`'s requirement has no fragment on (and that stats does
/// not know).
#[derive(SimpleObject, Clone)]
struct Team {
    size: i32,
}

/// A union in the required selection.
#[derive(Union, Clone)]
enum Author {
    Person(Person),
    Bot(Bot),
    Team(Team),
}

#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
struct Image {
    id: ID,
    width: i32,
}

#[derive(SimpleObject, Clone)]
#[graphql(shareable)]
struct Video {
    id: ID,
    seconds: i32,
}

/// An interface in the required selection.
#[derive(Interface, Clone)]
#[graphql(field(name = "id", ty = "&ID"))]
enum Cover {
    Image(Image),
    Video(Video),
}

#[derive(Clone)]
struct Post {
    id: ID,
    title: String,
    comment_count: i32,
    author: Author,
    cover: Cover,
}

#[Object]
impl Post {
    async fn id(&self) -> &ID {
        &self.id
    }

    async fn title(&self) -> &str {
        &self.title
    }

    /// The post's first `limit` comments.
    async fn comments(&self, limit: i32) -> Vec<Comment> {
        (1..=limit.min(self.comment_count))
            .map(|n| Comment {
                id: ID::from(format!("{}-c{n}", self.id.as_str())),
                body: format!("comment {n}"),
            })
            .collect()
    }

    async fn author(&self) -> &Author {
        &self.author
    }

    async fn cover(&self) -> &Cover {
        &self.cover
    }
}

fn posts() -> Vec<Post> {
    vec![
        Post {
            id: ID::from("p1"),
            title: "Ruth".into(),
            comment_count: 5,
            author: Author::Person(Person { name: "Ada".into() }),
            cover: Cover::Image(Image {
                id: ID::from("i1"),
                width: 640,
            }),
        },
        Post {
            id: ID::from("p2"),
            title: "Jonah".into(),
            comment_count: 2,
            author: Author::Bot(Bot { model: "R2".into() }),
            cover: Cover::Video(Video {
                id: ID::from("v1"),
                seconds: 90,
            }),
        },
        Post {
            id: ID::from("p3"),
            title: "Amos".into(),
            comment_count: 0,
            author: Author::Team(Team { size: 3 }),
            cover: Cover::Image(Image {
                id: ID::from("i3"),
                width: 320,
            }),
        },
    ]
}

struct PostsQuery;

#[Object(name = "Query")]
impl PostsQuery {
    async fn posts(&self) -> Vec<Post> {
        posts()
    }

    #[graphql(entity)]
    async fn post_by_id(&self, id: ID) -> Option<Post> {
        posts().into_iter().find(|post| post.id == id)
    }
}

// ---- stats: fields computed from what posts has (`@requires`) ----

#[derive(SimpleObject)]
#[graphql(name = "Comment", shareable)]
struct StatsComment {
    id: ID,
}

#[derive(SimpleObject)]
#[graphql(name = "Person", shareable)]
struct StatsPerson {
    name: String,
}

#[derive(SimpleObject)]
#[graphql(name = "Bot", shareable)]
struct StatsBot {
    model: String,
}

#[derive(Union)]
#[graphql(name = "Author")]
enum StatsAuthor {
    Person(StatsPerson),
    Bot(StatsBot),
}

#[derive(SimpleObject)]
#[graphql(name = "Image", shareable)]
struct StatsImage {
    id: ID,
    width: i32,
}

#[derive(SimpleObject)]
#[graphql(name = "Video", shareable)]
struct StatsVideo {
    id: ID,
    seconds: i32,
}

#[derive(Interface)]
#[graphql(name = "Cover", field(name = "id", ty = "&ID"))]
enum StatsCover {
    Image(StatsImage),
    Video(StatsVideo),
}

/// A post as stats gets it: its key and the required fields the representation carried.
struct StatsPost {
    id: ID,
    comments: Option<serde_json::Value>,
    author: Option<serde_json::Value>,
    cover: Option<serde_json::Value>,
}

/// A required field the representation did not carry: the router's fault.
fn missing(what: &str) -> async_graphql::Error {
    async_graphql::Error::new(format!("the representation has no {what}"))
}

#[Object(name = "Post")]
impl StatsPost {
    async fn id(&self) -> &ID {
        &self.id
    }

    #[graphql(external)]
    async fn comments(&self, limit: i32) -> Vec<StatsComment> {
        let _ = limit;
        Vec::new()
    }

    #[graphql(external)]
    async fn author(&self) -> StatsAuthor {
        StatsAuthor::Bot(StatsBot {
            model: String::new(),
        })
    }

    #[graphql(external)]
    async fn cover(&self) -> StatsCover {
        StatsCover::Image(StatsImage {
            id: self.id.clone(),
            width: 0,
        })
    }

    /// The ids of the first three comments, as the representation gave them.
    #[graphql(requires = "comments(limit: 3) { id }")]
    async fn comment_digest(&self) -> async_graphql::Result<String> {
        let comments = self.comments.as_ref().ok_or_else(|| missing("comments"))?;
        let ids: Vec<String> = comments
            .as_array()
            .ok_or_else(|| missing("list of comments"))?
            .iter()
            .map(|comment| comment["id"].as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| missing("comment id"))?;
        Ok(ids.join(","))
    }

    /// Who wrote the post, by the member of the union it is.
    #[graphql(requires = "author { ... on Person { name } ... on Bot { model } }")]
    async fn byline(&self) -> async_graphql::Result<String> {
        let author = self.author.as_ref().ok_or_else(|| missing("author"))?;
        match (author["name"].as_str(), author["model"].as_str()) {
            (Some(name), None) => Ok(format!("by {name}")),
            (None, Some(model)) => Ok(format!("generated by {model}")),
            // A member the requirement has no fragment on: nothing of it is required.
            _ if author.as_object().is_some_and(|a| a.is_empty()) => Ok("by others".into()),
            _ => Err(missing(&format!("usable author in {author}"))),
        }
    }

    /// The cover, by the implementation of the interface it is.
    #[graphql(requires = "cover { id ... on Image { width } ... on Video { seconds } }")]
    async fn cover_note(&self) -> async_graphql::Result<String> {
        let cover = self.cover.as_ref().ok_or_else(|| missing("cover"))?;
        let id = cover["id"].as_str().ok_or_else(|| missing("cover id"))?;
        match (cover["width"].as_i64(), cover["seconds"].as_i64()) {
            (Some(width), None) => Ok(format!("{id}: {width}px wide")),
            (None, Some(seconds)) => Ok(format!("{id}: {seconds}s long")),
            _ => Err(missing(&format!("usable cover in {cover}"))),
        }
    }
}

struct StatsQuery;

#[Object(name = "Query")]
impl StatsQuery {
    #[graphql(entity)]
    async fn post_by_id(
        &self,
        #[graphql(key)] id: ID,
        comments: Option<Any>,
        author: Option<Any>,
        cover: Option<Any>,
    ) -> StatsPost {
        let json = |value: Option<Any>| value.and_then(|Any(value)| value.into_json().ok());
        StatsPost {
            id,
            comments: json(comments),
            author: json(author),
            cover: json(cover),
        }
    }
}

fn requires_router() -> Router {
    static COMPOSED: OnceLock<String> = OnceLock::new();
    let parts = vec![part("posts", PostsQuery), part("stats", StatsQuery)];
    router(&COMPOSED, parts)
}

#[tokio::test]
async fn requires_with_an_argument_sends_the_field_with_that_argument() {
    let router = requires_router();
    let data = data_of(&router, "{ posts { id commentDigest } }", json!({})).await;
    assert_eq!(
        data,
        json!({"posts": [
            {"id": "p1", "commentDigest": "p1-c1,p1-c2,p1-c3"},
            {"id": "p2", "commentDigest": "p2-c1,p2-c2"},
            {"id": "p3", "commentDigest": ""},
        ]})
    );
}

#[tokio::test]
async fn requires_with_an_argument_and_the_client_s_own_arguments_do_not_mix() {
    let router = requires_router();
    // The client's `comments(limit: 4)` and the required `comments(limit: 3)` are two fields:
    // each gets its own answer.
    let data = data_of(
        &router,
        "{ posts { comments(limit: 4) { id } commentDigest } }",
        json!({}),
    )
    .await;
    assert_eq!(
        data,
        json!({"posts": [
            {
                "comments": [{"id": "p1-c1"}, {"id": "p1-c2"}, {"id": "p1-c3"}, {"id": "p1-c4"}],
                "commentDigest": "p1-c1,p1-c2,p1-c3",
            },
            {
                "comments": [{"id": "p2-c1"}, {"id": "p2-c2"}],
                "commentDigest": "p2-c1,p2-c2",
            },
            {"comments": [], "commentDigest": ""},
        ]})
    );
    // Fewer than required, with a field the requirement does not have, in the other order.
    let data = data_of(
        &router,
        "{ posts { commentDigest comments(limit: 1) { body } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        data,
        json!({"posts": [
            {"commentDigest": "p1-c1,p1-c2,p1-c3", "comments": [{"body": "comment 1"}]},
            {"commentDigest": "p2-c1,p2-c2", "comments": [{"body": "comment 1"}]},
            {"commentDigest": "", "comments": []},
        ]})
    );
}

#[tokio::test]
async fn requires_with_an_argument_given_by_a_variable_elsewhere_in_the_query() {
    let router = requires_router();
    let data = data_of(
        &router,
        "query($n: Int!) { posts { commentDigest comments(limit: $n) { id } } }",
        json!({"n": 2}),
    )
    .await;
    assert_eq!(
        data["posts"][0],
        json!({"commentDigest": "p1-c1,p1-c2,p1-c3", "comments": [{"id": "p1-c1"}, {"id": "p1-c2"}]})
    );
}

#[tokio::test]
async fn requires_with_fragments_on_a_union_sends_each_member_s_fields() {
    let router = requires_router();
    let data = data_of(&router, "{ posts { byline } }", json!({})).await;
    assert_eq!(
        data,
        json!({"posts": [
            {"byline": "by Ada"},
            {"byline": "generated by R2"},
            {"byline": "by others"},
        ]})
    );
    // The client's own selection of the union is answered as it asked, not as required.
    let data = data_of(
        &router,
        "{ posts { author { __typename ... on Person { name } } byline } }",
        json!({}),
    )
    .await;
    assert_eq!(
        data,
        json!({"posts": [
            {"author": {"__typename": "Person", "name": "Ada"}, "byline": "by Ada"},
            {"author": {"__typename": "Bot"}, "byline": "generated by R2"},
            {"author": {"__typename": "Team"}, "byline": "by others"},
        ]})
    );
}

#[tokio::test]
async fn requires_with_fragments_on_an_interface_sends_each_implementation_s_fields() {
    let router = requires_router();
    let data = data_of(&router, "{ posts { coverNote cover { id } } }", json!({})).await;
    assert_eq!(
        data,
        json!({"posts": [
            {"coverNote": "i1: 640px wide", "cover": {"id": "i1"}},
            {"coverNote": "v1: 90s long", "cover": {"id": "v1"}},
            {"coverNote": "i3: 320px wide", "cover": {"id": "i3"}},
        ]})
    );
}

#[tokio::test]
async fn every_requirement_at_once() {
    let router = requires_router();
    let data = data_of(
        &router,
        "{ posts { title byline coverNote commentDigest comments(limit: 2) { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        data["posts"][1],
        json!({
            "title": "Jonah",
            "byline": "generated by R2",
            "coverNote": "v1: 90s long",
            "commentDigest": "p2-c1,p2-c2",
            "comments": [{"id": "p2-c1"}, {"id": "p2-c2"}],
        })
    );
}

// ==== 2. Results with what the API schema does not have ====

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
enum Status {
    Active,
    #[graphql(inaccessible)]
    Archived,
    // Not in the SDL the supergraph is composed from (see `catalog_router`): the subgraph was
    // deployed ahead of the supergraph.
    Retired,
}

#[derive(SimpleObject, Clone)]
struct Item {
    id: ID,
    status: Option<Status>,
    required_status: Status,
    history: Vec<Status>,
}

#[derive(SimpleObject, Clone)]
struct Book {
    id: ID,
    title: String,
}

/// Not in the API schema: a member of `SearchResult` and an implementation of `Node` that
/// clients must never see.
#[derive(SimpleObject, Clone)]
#[graphql(inaccessible)]
struct Draft {
    id: ID,
    title: String,
}

#[derive(Union, Clone)]
enum SearchResult {
    Book(Book),
    Draft(Draft),
}

#[derive(Interface, Clone)]
#[graphql(field(name = "id", ty = "&ID"))]
enum Node {
    Book(Book),
    Draft(Draft),
}

/// An object whose non-null field may be an inaccessible type.
#[derive(SimpleObject, Clone)]
struct Pin {
    label: String,
    result: SearchResult,
}

fn item(id: &str, status: Status) -> Item {
    Item {
        id: ID::from(id),
        status: Some(status),
        required_status: status,
        history: vec![Status::Active, status],
    }
}

fn book() -> Book {
    Book {
        id: ID::from("b1"),
        title: "Ruth".into(),
    }
}

fn draft() -> Draft {
    Draft {
        id: ID::from("d1"),
        title: "Untitled".into(),
    }
}

struct CatalogQuery;

#[Object(name = "Query")]
impl CatalogQuery {
    async fn items(&self) -> Vec<Option<Item>> {
        vec![
            Some(item("1", Status::Active)),
            Some(item("2", Status::Archived)),
            Some(item("3", Status::Retired)),
        ]
    }

    async fn search(&self) -> Vec<Option<SearchResult>> {
        vec![
            Some(SearchResult::Book(book())),
            Some(SearchResult::Draft(draft())),
        ]
    }

    /// Non-null, and its `requiredStatus` is `@inaccessible` (`ARCHIVED`): the null reaches
    /// the root.
    async fn required_item(&self) -> Item {
        item("2", Status::Archived)
    }

    async fn strict_search(&self) -> Option<Vec<SearchResult>> {
        Some(vec![
            SearchResult::Book(book()),
            SearchResult::Draft(draft()),
        ])
    }

    async fn node(&self, id: ID) -> Option<Node> {
        match id.as_str() {
            "b1" => Some(Node::Book(book())),
            "d1" => Some(Node::Draft(draft())),
            _ => None,
        }
    }

    async fn pins(&self) -> Vec<Option<Pin>> {
        vec![
            Some(Pin {
                label: "a book".into(),
                result: SearchResult::Book(book()),
            }),
            Some(Pin {
                label: "a draft".into(),
                result: SearchResult::Draft(draft()),
            }),
        ]
    }
}

fn catalog_router() -> Router {
    static COMPOSED: OnceLock<String> = OnceLock::new();
    let mut catalog = part("catalog", CatalogQuery);
    // The supergraph is composed from the subgraph's previous SDL, without `RETIRED`.
    let previous = catalog.sdl.replace("\tRETIRED\n", "");
    assert_ne!(previous, catalog.sdl, "the SDL has RETIRED");
    catalog.sdl = previous;
    router(&COMPOSED, vec![catalog])
}

#[tokio::test]
async fn an_inaccessible_enum_value_is_null_with_an_error() {
    let router = catalog_router();
    let response = ask(&router, "{ items { id status } }", json!({})).await;
    assert_eq!(
        response["data"],
        json!({"items": [
            {"id": "1", "status": "ACTIVE"},
            {"id": "2", "status": null},
            {"id": "3", "status": null},
        ]}),
        "{response}"
    );
    assert_eq!(
        error_paths(&response),
        vec![json!(["items", 1, "status"]), json!(["items", 2, "status"])]
    );
    assert!(
        !response.to_string().contains("ARCHIVED") && !response.to_string().contains("RETIRED"),
        "the hidden values never reach the client: {response}"
    );
}

#[tokio::test]
async fn an_inaccessible_enum_value_in_a_non_null_position_nulls_the_parent() {
    let router = catalog_router();
    let response = ask(&router, "{ items { id requiredStatus } }", json!({})).await;
    assert_eq!(
        response["data"],
        json!({"items": [{"id": "1", "requiredStatus": "ACTIVE"}, null, null]}),
        "{response}"
    );
    assert_eq!(
        error_paths(&response),
        vec![
            json!(["items", 1, "requiredStatus"]),
            json!(["items", 2, "requiredStatus"])
        ]
    );
    // In a list of non-null values, the whole list (here non-null too: the item) goes.
    let response = ask(&router, "{ items { id history } }", json!({})).await;
    assert_eq!(
        response["data"],
        json!({"items": [{"id": "1", "history": ["ACTIVE", "ACTIVE"]}, null, null]}),
        "{response}"
    );
    assert_eq!(
        error_paths(&response),
        vec![
            json!(["items", 1, "history", 1]),
            json!(["items", 2, "history", 1])
        ]
    );
}

#[tokio::test]
async fn an_object_of_an_inaccessible_type_in_a_union_is_null_with_an_error() {
    let router = catalog_router();
    let response = ask(
        &router,
        "{ search { __typename ... on Book { id title } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"search": [{"__typename": "Book", "id": "b1", "title": "Ruth"}, null]}),
        "{response}"
    );
    assert_eq!(error_paths(&response), vec![json!(["search", 1])]);
    assert!(!response.to_string().contains("Draft"), "{response}");
}

#[tokio::test]
async fn an_object_of_an_inaccessible_type_behind_an_interface_is_null_with_an_error() {
    let router = catalog_router();
    let response = ask(
        &router,
        r#"{ draft: node(id: "d1") { __typename id } book: node(id: "b1") { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"draft": null, "book": {"id": "b1"}}),
        "{response}"
    );
    assert_eq!(error_paths(&response), vec![json!(["draft"])]);
    assert!(!response.to_string().contains("Draft"), "{response}");
    // Even with nothing but fields of the interface selected, nothing of it shows.
    let response = ask(&router, r#"{ node(id: "d1") { id } }"#, json!({})).await;
    assert_eq!(response["data"], json!({"node": null}), "{response}");
    assert_eq!(error_paths(&response), vec![json!(["node"])]);
}

#[tokio::test]
async fn an_object_of_an_inaccessible_type_in_a_non_null_position_propagates() {
    let router = catalog_router();
    // `[SearchResult!]`: the list goes.
    let response = ask(
        &router,
        "{ strictSearch { ... on Book { title } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"strictSearch": null}),
        "{response}"
    );
    assert_eq!(error_paths(&response), vec![json!(["strictSearch", 1])]);
    // `Pin.result: SearchResult!`: the pin goes.
    let response = ask(
        &router,
        "{ pins { label result { __typename } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"pins": [{"label": "a book", "result": {"__typename": "Book"}}, null]}),
        "{response}"
    );
    assert_eq!(error_paths(&response), vec![json!(["pins", 1, "result"])]);
}

/// Over HTTP under `application/graphql-response+json`: a null that reaches the root is still
/// data (`"data": null`, 200, as the GraphQL over HTTP spec recommends); a request that never
/// ran has no `data` and is 400.
#[tokio::test]
async fn a_null_root_is_answered_200_and_a_request_error_400() {
    let (url, _stop) = support::start_router(catalog_router()).await;
    let ask = |query: &str| {
        reqwest::Client::new()
            .post(format!("{url}/graphql"))
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query }))
            .send()
    };
    let nulled = ask("{ requiredItem { id requiredStatus } }").await.unwrap();
    assert_eq!(nulled.status(), 200);
    let body: Value = nulled.json().await.unwrap();
    assert_eq!(body["data"], Value::Null, "{body}");
    assert!(body.as_object().unwrap().contains_key("data"), "{body}");
    assert_eq!(
        error_paths(&body),
        vec![json!(["requiredItem", "requiredStatus"])]
    );

    let refused = ask("{ requiredItem { noSuchField } }").await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn introspection_shows_no_inaccessible_member_or_value() {
    let router = catalog_router();
    let query = r#"{
        union: __type(name: "SearchResult") { possibleTypes { name } }
        interface: __type(name: "Node") { possibleTypes { name } }
        enum: __type(name: "Status") { enumValues { name } }
        draft: __type(name: "Draft") { name }
    }"#;
    assert_eq!(
        data_of(&router, query, json!({})).await,
        json!({
            "union": {"possibleTypes": [{"name": "Book"}]},
            "interface": {"possibleTypes": [{"name": "Book"}]},
            "enum": {"enumValues": [{"name": "ACTIVE"}]},
            "draft": null,
        })
    );
}

// ==== 3. `@skip`/`@include` with variables on fragments on abstract types ====

// ---- library: the shelf, behind an interface and a union ----

#[derive(SimpleObject, Clone)]
#[graphql(name = "Book")]
struct LibraryBook {
    id: ID,
    title: String,
}

#[derive(SimpleObject, Clone)]
struct Movie {
    id: ID,
    title: String,
}

#[derive(Interface, Clone)]
#[graphql(field(name = "id", ty = "&ID"), field(name = "title", ty = "&String"))]
enum Media {
    Book(LibraryBook),
    Movie(Movie),
}

#[derive(Union, Clone)]
enum Featured {
    Book(LibraryBook),
    Movie(Movie),
}

fn library_book(id: &str) -> Option<LibraryBook> {
    let title = match id {
        "b1" => "Ruth",
        "b2" => "Esther",
        _ => return None,
    };
    Some(LibraryBook {
        id: ID::from(id),
        title: title.into(),
    })
}

fn movie(id: &str) -> Option<Movie> {
    (id == "m1").then(|| Movie {
        id: ID::from("m1"),
        title: "Ben-Hur".into(),
    })
}

struct LibraryQuery;

#[Object(name = "Query")]
impl LibraryQuery {
    async fn shelf(&self) -> Vec<Media> {
        vec![
            Media::Book(library_book("b1").unwrap()),
            Media::Movie(movie("m1").unwrap()),
            Media::Book(library_book("b2").unwrap()),
        ]
    }

    /// An object, not an abstract type: the planner asks no `__typename` of it.
    async fn first_book(&self) -> LibraryBook {
        library_book("b1").unwrap()
    }

    async fn featured(&self) -> Vec<Featured> {
        vec![
            Featured::Movie(movie("m1").unwrap()),
            Featured::Book(library_book("b1").unwrap()),
        ]
    }

    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> Option<LibraryBook> {
        library_book(id.as_str())
    }

    #[graphql(entity)]
    async fn movie_by_id(&self, id: ID) -> Option<Movie> {
        movie(id.as_str())
    }
}

// ---- ratings: ratings of each, and media like a book ----

struct RatedBook {
    id: ID,
}

#[derive(SimpleObject)]
#[graphql(name = "Movie")]
struct RatedMovie {
    id: ID,
    rating: i32,
}

#[derive(Interface)]
#[graphql(name = "Media", field(name = "id", ty = "&ID"))]
enum RatedMedia {
    Book(RatedBook),
    Movie(RatedMovie),
}

#[Object(name = "Book")]
impl RatedBook {
    async fn id(&self) -> &ID {
        &self.id
    }

    async fn rating(&self) -> i32 {
        if self.id == "b1" { 5 } else { 4 }
    }

    /// A nullable field that fails for one book.
    async fn blurb(&self) -> async_graphql::Result<Option<String>> {
        if self.id == "b2" {
            Err("no blurb for b2".into())
        } else {
            Ok(Some(format!("blurb of {}", self.id.as_str())))
        }
    }

    /// Media like this book: an abstract field resolved by an entity fetch.
    async fn similar(&self) -> Vec<RatedMedia> {
        if self.id == "b1" {
            vec![
                RatedMedia::Movie(RatedMovie {
                    id: ID::from("m1"),
                    rating: 3,
                }),
                RatedMedia::Book(RatedBook { id: ID::from("b2") }),
            ]
        } else {
            vec![RatedMedia::Book(RatedBook { id: ID::from("b1") })]
        }
    }
}

struct RatingsQuery;

#[Object(name = "Query")]
impl RatingsQuery {
    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> RatedBook {
        RatedBook { id }
    }

    #[graphql(entity)]
    async fn movie_by_id(&self, id: ID) -> RatedMovie {
        RatedMovie { id, rating: 3 }
    }
}

/// The library's supergraph, composed once.
static LIBRARY: OnceLock<String> = OnceLock::new();

fn library_router() -> Router {
    let parts = vec![part("library", LibraryQuery), part("ratings", RatingsQuery)];
    router(&LIBRARY, parts)
}

/// A subgraph refusing every request as a whole: `data: null` and an error without a path (as
/// the kit's caller guard refuses a context it cannot verify).
struct Refusing;

impl LocalSubgraph for Refusing {
    fn execute(&self, _request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async { json!({"data": null, "errors": [{"message": "refused"}]}) })
    }
}

/// [`library_router`] whose ratings subgraph refuses everything.
fn library_router_ratings_refusing() -> Router {
    let mut ratings = part("ratings", RatingsQuery);
    ratings.subgraph = Arc::new(Refusing);
    router(&LIBRARY, vec![part("library", LibraryQuery), ratings])
}

/// An error in a nullable field of an entity is at that entity's path, not another's.
/// (async-graphql 7 resolves every entity with the `_entities` field's context, so the path
/// it gives, `_entities.blurb`, does not say which entity.)
#[tokio::test]
async fn an_entity_fields_error_without_its_index_is_at_its_own_entity() {
    let response = ask(
        &library_router(),
        "{ shelf { id ... on Book { rating blurb } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"shelf": [
            {"id": "b1", "rating": 5, "blurb": "blurb of b1"},
            {"id": "m1"},
            {"id": "b2", "rating": 4, "blurb": null},
        ]})
    );
    assert_eq!(error_paths(&response), vec![json!(["shelf", 2, "blurb"])]);
}

/// A subgraph refusing an entity fetch as a whole (`data: null`, an error without a path):
/// every entity it was asked for lost its fields, and each has the error at its own path.
#[tokio::test]
async fn a_refused_entity_fetch_is_an_error_at_each_entity() {
    let response = ask(
        &library_router_ratings_refusing(),
        "{ shelf { id ... on Book { blurb } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"shelf": [{"id": "b1", "blurb": null}, {"id": "m1"}, {"id": "b2", "blurb": null}]})
    );
    assert_eq!(
        error_paths(&response),
        vec![json!(["shelf", 0]), json!(["shelf", 2])]
    );
}

const SHELF: &str = "query($books: Boolean!, $movies: Boolean! = true) { shelf { id \
     ... on Book @include(if: $books) { title rating } \
     ... on Movie @skip(if: $movies) { title rating } } }";

#[tokio::test]
async fn conditions_on_fragments_on_an_interface_follow_the_variables() {
    let router = library_router();
    // `$movies` absent: its default (true) skips the movies' fragment.
    assert_eq!(
        data_of(&router, SHELF, json!({"books": true})).await,
        json!({"shelf": [
            {"id": "b1", "title": "Ruth", "rating": 5},
            {"id": "m1"},
            {"id": "b2", "title": "Esther", "rating": 4},
        ]})
    );
    assert_eq!(
        data_of(&router, SHELF, json!({"books": false, "movies": false})).await,
        json!({"shelf": [
            {"id": "b1"},
            {"id": "m1", "title": "Ben-Hur", "rating": 3},
            {"id": "b2"},
        ]})
    );
    assert_eq!(
        data_of(&router, SHELF, json!({"books": false})).await,
        json!({"shelf": [{"id": "b1"}, {"id": "m1"}, {"id": "b2"}]})
    );
    assert_eq!(
        data_of(&router, SHELF, json!({"books": true, "movies": false})).await,
        json!({"shelf": [
            {"id": "b1", "title": "Ruth", "rating": 5},
            {"id": "m1", "title": "Ben-Hur", "rating": 3},
            {"id": "b2", "title": "Esther", "rating": 4},
        ]})
    );
}

const FEATURED: &str = "query($b: Boolean = false, $m: Boolean = true) { featured { __typename \
     ... on Book @include(if: $b) { title rating } \
     ... on Movie @include(if: $m) { rating } } }";

#[tokio::test]
async fn conditions_on_fragments_on_a_union_fall_back_to_the_defaults() {
    let router = library_router();
    // No variables at all: both defaults apply.
    assert_eq!(
        data_of(&router, FEATURED, json!({})).await,
        json!({"featured": [{"__typename": "Movie", "rating": 3}, {"__typename": "Book"}]})
    );
    assert_eq!(
        data_of(&router, FEATURED, json!({"b": true, "m": false})).await,
        json!({"featured": [
            {"__typename": "Movie"},
            {"__typename": "Book", "title": "Ruth", "rating": 5},
        ]})
    );
    // One given, the other defaulted.
    assert_eq!(
        data_of(&router, FEATURED, json!({"b": true})).await,
        json!({"featured": [
            {"__typename": "Movie", "rating": 3},
            {"__typename": "Book", "title": "Ruth", "rating": 5},
        ]})
    );
}

const SIMILAR: &str = "query($m: Boolean!, $b: Boolean! = false) { shelf { ... on Book { id \
     similar { __typename \
       ... on Movie @include(if: $m) { title rating } \
       ... on Book @skip(if: $b) { title } } } } }";

#[tokio::test]
async fn conditions_on_fragments_under_an_entity_fetch_follow_the_variables() {
    let router = library_router();
    assert_eq!(
        data_of(&router, SIMILAR, json!({"m": true})).await,
        json!({"shelf": [
            {"id": "b1", "similar": [
                {"__typename": "Movie", "title": "Ben-Hur", "rating": 3},
                {"__typename": "Book", "title": "Esther"},
            ]},
            {},
            {"id": "b2", "similar": [{"__typename": "Book", "title": "Ruth"}]},
        ]})
    );
    assert_eq!(
        data_of(&router, SIMILAR, json!({"m": false, "b": true})).await,
        json!({"shelf": [
            {"id": "b1", "similar": [{"__typename": "Movie"}, {"__typename": "Book"}]},
            {},
            {"id": "b2", "similar": [{"__typename": "Book"}]},
        ]})
    );
}

#[tokio::test]
async fn a_condition_on_the_entity_fetch_s_own_fragment_follows_the_variable() {
    let router = library_router();
    // The fragment whose fields come from another subgraph carries the condition itself.
    let query = "query($rated: Boolean = true) { shelf { id \
         ... on Book @include(if: $rated) { rating similar { id ... on Movie { rating } } } } }";
    assert_eq!(
        data_of(&router, query, json!({})).await,
        json!({"shelf": [
            {"id": "b1", "rating": 5, "similar": [{"id": "m1", "rating": 3}, {"id": "b2"}]},
            {"id": "m1"},
            {"id": "b2", "rating": 4, "similar": [{"id": "b1"}]},
        ]})
    );
    assert_eq!(
        data_of(&router, query, json!({"rated": false})).await,
        json!({"shelf": [{"id": "b1"}, {"id": "m1"}, {"id": "b2"}]})
    );
}

#[tokio::test]
async fn a_field_in_a_skipped_fragment_and_an_included_one_is_answered_once() {
    let router = library_router();
    let query = "query($s: Boolean!) { shelf { \
         ... on Book @skip(if: $s) { title rating } ... on Media { title } } }";
    assert_eq!(
        data_of(&router, query, json!({"s": true})).await,
        json!({"shelf": [{"title": "Ruth"}, {"title": "Ben-Hur"}, {"title": "Esther"}]})
    );
    assert_eq!(
        data_of(&router, query, json!({"s": false})).await,
        json!({"shelf": [
            {"title": "Ruth", "rating": 5},
            {"title": "Ben-Hur"},
            {"title": "Esther", "rating": 4},
        ]})
    );
}

/// Literal conditions that empty a selection: the spec's answer is an empty object (graphql-js
/// answers `{}`), never the `__typename` the planner puts in for the subgraph's sake.
#[tokio::test]
async fn a_selection_emptied_by_literal_conditions_is_an_empty_object() {
    let router = library_router();
    for query in [
        "{ shelf { id @skip(if: true) } }",
        "{ shelf { id @include(if: false) } }",
        "{ shelf { ... on Book @include(if: false) { title } } }",
        "{ shelf { ... @skip(if: true) { id title } } }",
    ] {
        assert_eq!(
            ask(&router, query, json!({})).await,
            json!({"data": {"shelf": [{}, {}, {}]}}),
            "{query}"
        );
    }
    // Asked for by the client too, it is answered.
    assert_eq!(
        data_of(
            &router,
            "{ shelf { __typename id @skip(if: true) } }",
            json!({})
        )
        .await,
        json!({"shelf": [{"__typename": "Book"}, {"__typename": "Movie"}, {"__typename": "Book"}]})
    );
    // Under an entity fetch: the other subgraph's fields emptied.
    assert_eq!(
        data_of(
            &router,
            "{ shelf { id ... on Book { similar { id @skip(if: true) } } } }",
            json!({})
        )
        .await,
        json!({"shelf": [
            {"id": "b1", "similar": [{}, {}]},
            {"id": "m1"},
            {"id": "b2", "similar": [{}]},
        ]})
    );
}

/// Conditions on variables that leave a selection without a field: it is still an object,
/// `{}`, as with literal conditions. (async-graphql answers an object none of whose fields
/// it resolved with `null`, so the subgraphs are asked a `__typename` there.)
#[tokio::test]
async fn a_selection_emptied_by_variables_is_an_empty_object() {
    let router = library_router();
    let skipped = json!({"s": true});
    for (query, expected) in [
        (
            "query($s: Boolean!) { firstBook { id @skip(if: $s) } }",
            json!({"firstBook": {}}),
        ),
        (
            "query($s: Boolean!) { firstBook { ... @skip(if: $s) { id title } } }",
            json!({"firstBook": {}}),
        ),
        // Across both subgraphs: the book's own fields and its rating from the other.
        (
            "query($s: Boolean!) { firstBook { ... @skip(if: $s) { title rating } } }",
            json!({"firstBook": {}}),
        ),
        // Only the entity fetch's fields are conditional.
        (
            "query($s: Boolean!) { firstBook { id similar @skip(if: $s) { id } } }",
            json!({"firstBook": {"id": "b1"}}),
        ),
        (
            "query($s: Boolean!) { shelf { id ... on Book { similar { ... on Movie { \
             id @skip(if: $s) } } } } }",
            json!({"shelf": [
                {"id": "b1", "similar": [{}, {}]},
                {"id": "m1"},
                {"id": "b2", "similar": [{}]},
            ]}),
        ),
        (
            "query($s: Boolean!) { shelf { ... @skip(if: $s) { id title } } }",
            json!({"shelf": [{}, {}, {}]}),
        ),
    ] {
        let answer = ask(&router, query, skipped.clone()).await;
        assert_eq!(answer, json!({ "data": expected }), "{query}");
    }
    // Included, the same documents answer the fields.
    assert_eq!(
        data_of(
            &router,
            "query($s: Boolean!) { firstBook { ... @skip(if: $s) { title rating } } }",
            json!({"s": false})
        )
        .await,
        json!({"firstBook": {"title": "Ruth", "rating": 5}})
    );
}

#[tokio::test]
async fn conditions_on_fragment_spreads_follow_the_variables() {
    let router = library_router();
    let query = "query($b: Boolean!, $m: Boolean = false) { \
         shelf { id ...BookBits @include(if: $b) ...MovieBits @include(if: $m) } } \
         fragment BookBits on Book { rating } \
         fragment MovieBits on Movie { title }";
    assert_eq!(
        data_of(&router, query, json!({"b": false})).await,
        json!({"shelf": [{"id": "b1"}, {"id": "m1"}, {"id": "b2"}]})
    );
    assert_eq!(
        data_of(&router, query, json!({"b": true, "m": true})).await,
        json!({"shelf": [
            {"id": "b1", "rating": 5},
            {"id": "m1", "title": "Ben-Hur"},
            {"id": "b2", "rating": 4},
        ]})
    );
}

#[tokio::test]
async fn conditions_without_a_type_and_with_both_directives() {
    let router = library_router();
    // No type condition: the fragment is on the interface itself.
    let query = "query($b: Boolean = true) { shelf { id ... @include(if: $b) { title } } }";
    assert_eq!(
        data_of(&router, query, json!({})).await,
        json!({"shelf": [
            {"id": "b1", "title": "Ruth"},
            {"id": "m1", "title": "Ben-Hur"},
            {"id": "b2", "title": "Esther"},
        ]})
    );
    assert_eq!(
        data_of(&router, query, json!({"b": false})).await,
        json!({"shelf": [{"id": "b1"}, {"id": "m1"}, {"id": "b2"}]})
    );
    // Both: included only when not skipped and included.
    let query = "query($s: Boolean!, $i: Boolean!) { shelf { id \
         ... on Book @skip(if: $s) @include(if: $i) { rating } } }";
    for (skip, include, rated) in [
        (false, true, true),
        (true, true, false),
        (false, false, false),
        (true, false, false),
    ] {
        let data = data_of(&router, query, json!({"s": skip, "i": include})).await;
        let expected = if rated {
            json!({"shelf": [{"id": "b1", "rating": 5}, {"id": "m1"}, {"id": "b2", "rating": 4}]})
        } else {
            json!({"shelf": [{"id": "b1"}, {"id": "m1"}, {"id": "b2"}]})
        };
        assert_eq!(data, expected, "skip {skip}, include {include}");
    }
}

#[tokio::test]
async fn a_condition_on_an_interface_fragment_inside_a_union() {
    let router = library_router();
    let query = "query($t: Boolean!) { featured { __typename \
         ... on Media @include(if: $t) { title } ... on Book { rating } } }";
    assert_eq!(
        data_of(&router, query, json!({"t": true})).await,
        json!({"featured": [
            {"__typename": "Movie", "title": "Ben-Hur"},
            {"__typename": "Book", "title": "Ruth", "rating": 5},
        ]})
    );
    assert_eq!(
        data_of(&router, query, json!({"t": false})).await,
        json!({"featured": [{"__typename": "Movie"}, {"__typename": "Book", "rating": 5}]})
    );
}

//! `@authenticated` and `@requiresScopes` end to end: two subgraphs composed for real
//! (apollo-federation), each behind the kit's caller guard, called in process by a router
//! that signs the caller into every fetch. A denied field is `null` with its own error at its
//! exact path, the rest of the response is intact, and the subgraph never sees the field.

use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::{EmptyMutation, EmptySubscription, ID, Object, Schema, SimpleObject, Union};
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{
    CALLER_HEADER, Caller, CallerGuard, CallerRefused, ForwardedHeaders, InternalSecret,
    user_id_for_clerk,
};
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::subgraph::authenticated;
use gospelib_router::entity_cache::CachePolicy;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};

// ---- library: books, with a reviewer-only field and a scoped one ----

#[derive(SimpleObject)]
struct Book {
    id: ID,
    title: String,
    #[graphql(directive = authenticated::apply())]
    reviews: Option<Vec<String>>,
    #[graphql(requires_scopes = "commerce:read")]
    price: Option<i32>,
}

fn books() -> Vec<Book> {
    ["1", "2"]
        .into_iter()
        .map(|id| Book {
            id: ID::from(id),
            title: format!("Book {id}"),
            reviews: Some(vec![format!("review of {id}")]),
            price: Some(10),
        })
        .collect()
}

/// Only for signed-in callers, as a type: every field returning it is protected.
#[derive(SimpleObject)]
#[graphql(directive = authenticated::apply())]
struct Ledger {
    total: i32,
}

/// What the library holds: a protected type reached through a union.
#[derive(Union)]
enum Holding {
    Book(Book),
    Ledger(Ledger),
}

struct LibraryQuery;

#[Object(name = "Query")]
impl LibraryQuery {
    async fn books(&self) -> Vec<Book> {
        books()
    }

    /// Who the subgraph was told is calling (from the signed context, never the client).
    async fn whoami(&self, ctx: &async_graphql::Context<'_>) -> Option<String> {
        Caller::of(ctx).user_id.map(|id| id.to_string())
    }

    /// The scopes the subgraph was told the caller has.
    async fn told_scopes(&self, ctx: &async_graphql::Context<'_>) -> Vec<String> {
        Caller::of(ctx).scopes.clone()
    }

    #[graphql(directive = authenticated::apply())]
    async fn secret(&self) -> Option<String> {
        Some("the secret".to_owned())
    }

    async fn book(&self, id: ID) -> Option<Book> {
        books().into_iter().find(|b| b.id == id)
    }

    #[graphql(requires_scopes = "admin", requires_scopes = "auditor ledger:read")]
    async fn audit_note(&self) -> Option<String> {
        Some("audited".to_owned())
    }

    async fn ledger(&self) -> Option<Ledger> {
        Some(Ledger { total: 42 })
    }

    async fn holdings(&self) -> Vec<Option<Holding>> {
        let book = books().into_iter().next().map(Holding::Book);
        vec![book, Some(Holding::Ledger(Ledger { total: 42 }))]
    }

    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> Option<Book> {
        books().into_iter().find(|b| b.id == id)
    }
}

/// How many books have been borrowed, by any test: a mutation done twice shows here.
static BORROWED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct LibraryMutation;

#[Object(name = "Mutation")]
impl LibraryMutation {
    /// Borrows a book in the caller's name (counted in [`BORROWED`]).
    async fn borrow(
        &self,
        ctx: &async_graphql::Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Book>> {
        Caller::of(ctx).require_user()?;
        BORROWED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(books().into_iter().find(|b| b.id == id))
    }
}

// ---- loans: extends Book with a non-null signed-in-only field ----

struct LoanBook {
    id: ID,
}

#[Object(name = "Book")]
impl LoanBook {
    async fn id(&self) -> &ID {
        &self.id
    }

    #[graphql(directive = authenticated::apply())]
    async fn loans(&self) -> i32 {
        3
    }

    async fn shelf(&self) -> String {
        format!("shelf {}", self.id.as_str())
    }

    /// Who the loans subgraph was told is calling.
    async fn borrower(&self, ctx: &async_graphql::Context<'_>) -> Option<String> {
        Caller::of(ctx).user_id.map(|id| id.to_string())
    }
}

struct LoansQuery;

#[Object(name = "Query")]
impl LoansQuery {
    #[graphql(entity)]
    async fn book_by_id(&self, id: ID) -> LoanBook {
        LoanBook { id }
    }
}

/// The digest of a subgraph request without variables.
fn no_variables() -> gospelib_kit::caller::VariablesDigest {
    gospelib_kit::caller::variables_digest(&async_graphql::Variables::default())
}

/// Where the subgraphs claim one-use caller contexts: the stack's Redis.
fn ledger() -> NonceLedger {
    NonceLedger::new(gospelib_kit::test_stack::redis(), "test")
}

fn secret() -> InternalSecret {
    InternalSecret::new(b"a test secret of at least thirty-two bytes").unwrap()
}

/// A subgraph behind the caller guard, recording each query it is sent and whether it came
/// with a caller header, and keeping the last request whole (what someone reading internal
/// traffic would have captured).
struct Recorded {
    executor: Arc<dyn GraphQlExecutor>,
    queries: Arc<Mutex<Vec<String>>>,
    with_caller: Arc<Mutex<Vec<bool>>>,
    last: Arc<Mutex<Option<Captured>>>,
}

/// A subgraph request as it was sent: its body and its headers.
type Captured = (Value, Vec<(String, String)>);

impl LocalSubgraph for Recorded {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.execute_with_headers(request, Vec::new())
    }

    fn execute_with_headers(
        &self,
        request: Value,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            *self.last.lock().unwrap() = Some((request.clone(), headers.clone()));
            let mut request: async_graphql::Request = serde_json::from_value(request).unwrap();
            self.queries.lock().unwrap().push(request.query.clone());
            let signed = headers.iter().any(|(name, _)| name == CALLER_HEADER);
            self.with_caller.lock().unwrap().push(signed);
            request.data.insert(ForwardedHeaders(headers));
            serde_json::to_value(self.executor.execute(request).await).unwrap()
        })
    }
}

struct Setup {
    router: Router,
    library: Arc<Mutex<Vec<String>>>,
    loans: Arc<Mutex<Vec<String>>>,
    /// Whether each request to library came with a caller header.
    library_with_caller: Arc<Mutex<Vec<bool>>>,
    /// Each subgraph as the router reaches it, to send it captured requests again.
    library_subgraph: Arc<Recorded>,
    loans_subgraph: Arc<Recorded>,
}

fn setup() -> Setup {
    setup_with(&RouterSettings::default())
}

/// The two subgraphs behind a router made with `settings`.
fn setup_with(settings: &RouterSettings) -> Setup {
    static SUPERGRAPH: OnceLock<String> = OnceLock::new();
    let library: Arc<dyn GraphQlExecutor> = Arc::new(
        Schema::build(LibraryQuery, LibraryMutation, EmptySubscription)
            .enable_federation()
            .finish(),
    );
    let loans: Arc<dyn GraphQlExecutor> = Arc::new(
        Schema::build(LoansQuery, EmptyMutation, EmptySubscription)
            .enable_federation()
            .finish(),
    );
    let sdl = SUPERGRAPH
        .get_or_init(|| {
            let subgraph = |name: &str, executor: &Arc<dyn GraphQlExecutor>| SubgraphSdl {
                name: name.to_owned(),
                url: format!("http://{name}.invalid/graphql"),
                sdl: executor.federation_sdl(),
            };
            compose(&[subgraph("library", &library), subgraph("loans", &loans)])
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone();
    let recorded = |name: &str, executor: Arc<dyn GraphQlExecutor>| {
        let queries = Arc::new(Mutex::new(Vec::new()));
        let with_caller = Arc::new(Mutex::new(Vec::new()));
        let subgraph = Recorded {
            executor: Arc::new(CallerGuard::new(
                executor,
                secret().caller_key(name),
                ledger(),
            )),
            queries: queries.clone(),
            with_caller: with_caller.clone(),
            last: Arc::default(),
        };
        (Arc::new(subgraph), queries, with_caller)
    };
    let (library, library_queries, library_with_caller) = recorded("library", library);
    let (loans, loan_queries, _) = recorded("loans", loans);
    let transport = InProcess::default()
        .with("library", library.clone())
        .with("loans", loans.clone());
    Setup {
        router: Router::from_settings(
            Supergraph::parse(&sdl, None).unwrap(),
            Arc::new(transport),
            settings,
        )
        .with_internal_secret(secret()),
        library: library_queries,
        loans: loan_queries,
        library_with_caller,
        library_subgraph: library,
        loans_subgraph: loans,
    }
}

fn reader() -> Caller {
    Caller::user(user_id_for_clerk("user_reader"))
}

fn partner(scopes: &[&str]) -> Caller {
    Caller::partner("acme", scopes.iter().map(|s| (*s).to_owned()).collect())
}

impl Setup {
    async fn ask(&self, caller: Caller, query: &str) -> Value {
        let mut response = self
            .router
            .execute(&GraphQlRequest {
                query: query.to_owned(),
                caller,
                ..Default::default()
            })
            .await;
        response.as_object_mut().unwrap().remove("extensions");
        response
    }

    fn sent(&self) -> String {
        let library = self.library.lock().unwrap().join("\n");
        let loans = self.loans.lock().unwrap().join("\n");
        format!("{library}\n{loans}")
    }
}

#[tokio::test]
async fn the_composed_supergraph_keeps_both_directives() {
    let setup = setup();
    let sdl = setup.router.supergraph().sdl().to_owned();
    assert!(
        sdl.contains("https://specs.apollo.dev/authenticated/v0.1"),
        "{sdl}"
    );
    assert!(
        sdl.contains("https://specs.apollo.dev/requiresScopes/v0.1"),
        "{sdl}"
    );
    assert!(!setup.router.supergraph().access_rules().is_empty());
}

#[tokio::test]
async fn an_anonymous_caller_gets_nulls_with_errors_and_everything_else() {
    let setup = setup();
    let response = setup
        .ask(
            Caller::anonymous(),
            "{ whoami secret books { id title reviews price } }",
        )
        .await;
    assert_eq!(
        response,
        json!({
            "data": {
                "whoami": null,
                "secret": null,
                "books": [
                    {"id": "1", "title": "Book 1", "reviews": null, "price": null},
                    {"id": "2", "title": "Book 2", "reviews": null, "price": null},
                ]
            },
            "errors": [
                {"message": "`Query.secret` is only for signed-in callers", "path": ["secret"],
                 "extensions": {"code": "UNAUTHORIZED"}},
                {"message": "`Book.reviews` is only for signed-in callers", "path": ["books", 0, "reviews"],
                 "extensions": {"code": "UNAUTHORIZED"}},
                {"message": "`Book.price` is only for signed-in callers", "path": ["books", 0, "price"],
                 "extensions": {"code": "UNAUTHORIZED"}},
                {"message": "`Book.reviews` is only for signed-in callers", "path": ["books", 1, "reviews"],
                 "extensions": {"code": "UNAUTHORIZED"}},
                {"message": "`Book.price` is only for signed-in callers", "path": ["books", 1, "price"],
                 "extensions": {"code": "UNAUTHORIZED"}},
            ]
        })
    );
    let sent = setup.sent();
    for field in ["secret", "reviews", "price"] {
        assert!(!sent.contains(field), "{field} was sent: {sent}");
    }
}

#[tokio::test]
async fn a_signed_in_caller_gets_authenticated_fields_but_not_scoped_ones() {
    let setup = setup();
    let response = setup
        .ask(reader(), "{ whoami secret books { reviews price } }")
        .await;
    assert_eq!(
        response["data"],
        json!({
            "whoami": user_id_for_clerk("user_reader").to_string(),
            "secret": "the secret",
            "books": [
                {"reviews": ["review of 1"], "price": null},
                {"reviews": ["review of 2"], "price": null},
            ]
        })
    );
    let codes: Vec<&str> = response["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["extensions"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["FORBIDDEN", "FORBIDDEN"], "{response}");
    assert_eq!(response["errors"][1]["path"], json!(["books", 1, "price"]));
    assert!(!setup.sent().contains("price"));
}

#[tokio::test]
async fn scopes_open_scoped_fields_as_any_one_alternative_requires() {
    let setup = setup();
    let query = "{ books { price } auditNote }";
    let response = setup.ask(partner(&["commerce:read", "admin"]), query).await;
    assert_eq!(
        response,
        json!({"data": {"books": [{"price": 10}, {"price": 10}], "auditNote": "audited"}})
    );
    // The second alternative needs both of its scopes.
    let response = setup.ask(partner(&["auditor"]), "{ auditNote }").await;
    assert_eq!(response["data"], json!({"auditNote": null}));
    assert_eq!(response["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let response = setup
        .ask(partner(&["auditor", "ledger:read"]), "{ auditNote }")
        .await;
    assert_eq!(response, json!({"data": {"auditNote": "audited"}}));
}

#[tokio::test]
async fn a_denied_non_null_field_nulls_its_parent_and_the_other_subgraph_is_not_asked() {
    let setup = setup();
    let response = setup
        .ask(
            Caller::anonymous(),
            r#"{ book(id: "1") { title loans } books { id } }"#,
        )
        .await;
    // `loans: Int!` cannot be null: the book is (and only the book).
    assert_eq!(
        response,
        json!({
            "data": {"book": null, "books": [{"id": "1"}, {"id": "2"}]},
            "errors": [{"message": "`Book.loans` is only for signed-in callers",
                        "path": ["book", "loans"], "extensions": {"code": "UNAUTHORIZED"}}]
        })
    );
    assert!(
        setup.loans.lock().unwrap().is_empty(),
        "the loans subgraph had nothing allowed to answer"
    );
    // Signed in, the entity fetch runs.
    let response = setup.ask(reader(), "{ books { title loans shelf } }").await;
    assert_eq!(
        response,
        json!({"data": {"books": [
            {"title": "Book 1", "loans": 3, "shelf": "shelf 1"},
            {"title": "Book 2", "loans": 3, "shelf": "shelf 2"},
        ]}})
    );
}

#[tokio::test]
async fn a_protected_type_protects_every_field_returning_it() {
    let setup = setup();
    let response = setup
        .ask(Caller::anonymous(), "{ ledger { total } books { id } }")
        .await;
    assert_eq!(
        response["data"],
        json!({"ledger": null, "books": [{"id": "1"}, {"id": "2"}]})
    );
    assert_eq!(response["errors"][0]["path"], json!(["ledger"]));
    let response = setup.ask(reader(), "{ ledger { total } }").await;
    assert_eq!(response, json!({"data": {"ledger": {"total": 42}}}));
}

/// A protected type reached through a union's fragment: its fields are denied where they land,
/// and the subgraph is never asked for them.
#[tokio::test]
async fn a_protected_type_is_protected_behind_a_union() {
    let setup = setup();
    let query = "{ holdings { __typename ... on Book { title } ... on Ledger { total } } }";
    let response = setup.ask(Caller::anonymous(), query).await;
    assert_eq!(
        response["data"],
        json!({"holdings": [{"__typename": "Book", "title": "Book 1"}, null]})
    );
    assert_eq!(
        response["errors"][0]["path"],
        json!(["holdings", 1, "total"])
    );
    assert_eq!(response["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
    assert!(!setup.sent().contains("total"), "{}", setup.sent());
    let response = setup.ask(reader(), query).await;
    assert_eq!(
        response,
        json!({"data": {"holdings": [
            {"__typename": "Book", "title": "Book 1"},
            {"__typename": "Ledger", "total": 42},
        ]}})
    );
}

#[tokio::test]
async fn fragments_and_aliases_are_denied_where_they_land() {
    let setup = setup();
    let response = setup
        .ask(
            Caller::anonymous(),
            "query { first: books { ...B } } fragment B on Book { id hidden: reviews }",
        )
        .await;
    assert_eq!(
        response["data"],
        json!({"first": [{"id": "1", "hidden": null}, {"id": "2", "hidden": null}]})
    );
    assert_eq!(response["errors"][0]["path"], json!(["first", 0, "hidden"]));
    // Everything denied: nothing fetched at all.
    let before = setup.library.lock().unwrap().len();
    let response = setup.ask(Caller::anonymous(), "{ secret }").await;
    assert_eq!(response["data"], json!({"secret": null}));
    assert_eq!(setup.library.lock().unwrap().len(), before);
}

#[tokio::test]
async fn a_subgraph_refuses_a_forged_or_replayed_caller_context() {
    let setup = setup();
    let guard = CallerGuard::new(
        Arc::new(
            Schema::build(LibraryQuery, EmptyMutation, EmptySubscription)
                .enable_federation()
                .finish(),
        ),
        secret().caller_key("library"),
        ledger(),
    );
    let ask = |header: String, query: &str| {
        let mut request = async_graphql::Request::new(query);
        request
            .data
            .insert(ForwardedHeaders(vec![(CALLER_HEADER.to_owned(), header)]));
        guard.execute(request)
    };
    // Signed with another secret.
    let forged = InternalSecret::new(b"not the platform's secret, but long enough")
        .unwrap()
        .caller_key("library")
        .sign(
            &reader(),
            "{ whoami }",
            &no_variables(),
            std::time::Duration::from_secs(30),
        );
    let response = serde_json::to_value(ask(forged, "{ whoami }").await).unwrap();
    assert_eq!(response["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
    assert_eq!(response["data"], Value::Null);
    // Signed with the platform's key of another subgraph: what that subgraph's process holds
    // (were it compromised) signs nothing the library believes.
    let lateral = secret().caller_key("loans").sign(
        &reader(),
        "{ whoami }",
        &no_variables(),
        std::time::Duration::from_secs(30),
    );
    let response = serde_json::to_value(ask(lateral, "{ whoami }").await).unwrap();
    assert_eq!(response["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
    // Signed by the router, for another query.
    let replayed = secret().caller_key("library").sign(
        &reader(),
        "{ books { id } }",
        &no_variables(),
        std::time::Duration::from_secs(30),
    );
    let response = serde_json::to_value(ask(replayed, "{ whoami }").await).unwrap();
    assert_eq!(response["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
    // The real thing.
    let good = secret().caller_key("library").sign(
        &reader(),
        "{ whoami }",
        &no_variables(),
        std::time::Duration::from_secs(30),
    );
    let response = serde_json::to_value(ask(good, "{ whoami }").await).unwrap();
    assert_eq!(
        response["data"]["whoami"],
        user_id_for_clerk("user_reader").to_string()
    );
    drop(setup);
}

#[tokio::test]
async fn a_mutations_captured_subgraph_request_cannot_be_sent_again() {
    use std::sync::atomic::Ordering;
    let setup = setup();
    let borrow = "mutation { borrow(id: \"1\") { title loans } }";
    let before = BORROWED.load(Ordering::SeqCst);
    let response = setup.ask(reader(), borrow).await;
    assert_eq!(
        response,
        json!({"data": {"borrow": {"title": "Book 1", "loans": 3}}})
    );
    assert_eq!(BORROWED.load(Ordering::SeqCst), before + 1);
    // The mutation's request was signed for one use and claimed: sent again exactly as
    // captured, it is refused and nothing runs twice.
    let (body, headers) = setup.library_subgraph.last.lock().unwrap().clone().unwrap();
    let replayed = setup
        .library_subgraph
        .execute_with_headers(body, headers)
        .await;
    assert_eq!(
        replayed["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
        "{replayed}"
    );
    assert_eq!(
        replayed["errors"][0]["message"],
        CallerRefused::Replayed.to_string()
    );
    // The entity fetch after it (loans') is a read: good for many uses, never claimed.
    let (body, headers) = setup.loans_subgraph.last.lock().unwrap().clone().unwrap();
    let read_again = setup
        .loans_subgraph
        .execute_with_headers(body, headers)
        .await;
    assert_eq!(
        read_again["data"]["_entities"][0]["loans"], 3,
        "{read_again}"
    );
    assert_eq!(BORROWED.load(Ordering::SeqCst), before + 1);
    // The router's own next mutation is signed afresh and runs.
    assert_eq!(
        setup.ask(reader(), borrow).await,
        json!({"data": {"borrow": {"title": "Book 1", "loans": 3}}})
    );
    assert_eq!(BORROWED.load(Ordering::SeqCst), before + 2);
    // A query's subgraph request is good for many uses: sent again, it is answered again.
    setup.ask(reader(), "{ whoami }").await;
    let (body, headers) = setup.library_subgraph.last.lock().unwrap().clone().unwrap();
    let again = setup
        .library_subgraph
        .execute_with_headers(body, headers)
        .await;
    assert_eq!(
        again["data"]["whoami"],
        user_id_for_clerk("user_reader").to_string()
    );
}

/// The library subgraph served over HTTP by the kit, behind the caller guard: its base URL.
async fn library_over_http() -> String {
    use gospelib_kit::server::{AppSpec, build_app};
    let executor: Arc<dyn GraphQlExecutor> = Arc::new(CallerGuard::new(
        Arc::new(
            Schema::build(LibraryQuery, EmptyMutation, EmptySubscription)
                .enable_federation()
                .finish(),
        ),
        secret().caller_key("library"),
        ledger(),
    ));
    let (app, _) = build_app(AppSpec {
        service: "library".to_owned(),
        gateway: None,
        subgraphs: vec![gospelib_kit::Subgraph {
            name: "library".to_owned(),
            executor,
            dependencies: Vec::new(),
        }],
        dependencies: Vec::new(),
        max_body_bytes: 1 << 20,
        extra_routes: None,
        public_routes: None,
        edge: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn over_http_the_caller_reaches_the_subgraph_signed_and_a_forged_one_is_refused() {
    let base = library_over_http().await;
    // A router whose library subgraph is reached over HTTP.
    let sdl = setup().router.supergraph().sdl().to_owned();
    let router = Router::new(
        Supergraph::parse(&sdl, None).unwrap(),
        Arc::new(gospelib_router::transport::Http::new(std::time::Duration::from_secs(5)).unwrap()),
    )
    .with_internal_secret(secret())
    .with_subgraph_urls([("library".to_owned(), format!("{base}/graphql"))].into());
    let response = router
        .execute(&GraphQlRequest {
            query: "{ whoami secret }".to_owned(),
            caller: reader(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        response["data"],
        json!({"whoami": user_id_for_clerk("user_reader").to_string(), "secret": "the secret"})
    );
    // Straight to the subgraph: no header is anonymous, a forged one is refused.
    let post = |header: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": "{ whoami }" }));
        if let Some(header) = header {
            request = request.header(CALLER_HEADER, header);
        }
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(post(None).await["data"], json!({"whoami": null}));
    let forged = InternalSecret::new(b"not the platform's secret, but long enough")
        .unwrap()
        .caller_key("library")
        .sign(
            &reader(),
            "{ whoami }",
            &no_variables(),
            std::time::Duration::from_secs(30),
        );
    let refused = post(Some(forged)).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
        "{refused}"
    );
    let signed = secret().caller_key("library").sign(
        &reader(),
        "{ whoami }",
        &no_variables(),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(
        post(Some(signed)).await["data"]["whoami"],
        user_id_for_clerk("user_reader").to_string()
    );
}

#[tokio::test]
async fn different_callers_never_share_a_fetch() {
    let setup = setup();
    let request = |caller: Caller| GraphQlRequest {
        query: "{ whoami }".to_owned(),
        caller,
        ..Default::default()
    };
    let ada = Caller::user(user_id_for_clerk("user_ada"));
    let bob = Caller::user(user_id_for_clerk("user_bob"));
    let (for_ada, for_bob) = (request(ada.clone()), request(bob.clone()));
    let (a, b) = tokio::join!(
        setup.router.execute(&for_ada),
        setup.router.execute(&for_bob)
    );
    assert_eq!(a["data"]["whoami"], ada.user_id.unwrap().to_string());
    assert_eq!(b["data"]["whoami"], bob.user_id.unwrap().to_string());
}

/// A cache policy that names a subgraph shares its answers across callers (here: clients may
/// keep responses from its root fields), so the router tells it the caller's scopes and never
/// who calls: even a policy naming a subgraph of users' data cannot hand one user's answer to
/// another. The subgraph beside it, not named, is still told.
#[tokio::test]
async fn a_subgraph_whose_answers_are_shared_is_told_the_scopes_but_not_who_calls() {
    let policy = CachePolicy::parse("[subgraphs.library]\nroot_fields = 60\n").unwrap();
    let shared = setup_with(&RouterSettings {
        cache_policy: Arc::new(policy),
        ..RouterSettings::default()
    });
    let ada = user_id_for_clerk("user_ada");
    let scholar = Caller {
        scopes: vec!["commerce:read".to_owned()],
        ..Caller::user(ada)
    };
    let query = "{ whoami toldScopes books { price borrower } }";
    let response = shared.ask(scholar.clone(), query).await;
    let borrower = json!({"price": 10, "borrower": ada.to_string()});
    assert_eq!(
        response,
        json!({"data": {
            "whoami": null,
            "toldScopes": ["commerce:read"],
            "books": [borrower, borrower],
        }})
    );
    // A caller with no scopes reaches it as an anonymous one would: with no caller at all.
    let response = shared.ask(Caller::user(ada), "{ whoami toldScopes }").await;
    assert_eq!(
        response,
        json!({"data": {"whoami": null, "toldScopes": []}})
    );
    assert_eq!(
        *shared.library_with_caller.lock().unwrap(),
        [true, false],
        "the scholar's request was signed, the scopeless one's not"
    );
    // Without the policy naming it, the same subgraph is told who calls.
    let response = setup().ask(scholar, "{ whoami toldScopes }").await;
    assert_eq!(
        response,
        json!({"data": {"whoami": ada.to_string(), "toldScopes": ["commerce:read"]}})
    );
}

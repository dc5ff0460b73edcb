//! What a subgraph is to the rest of the platform: a name, a GraphQL executor and the stores it
//! depends on. The launcher mounts subgraphs over HTTP; the router (in one process) can also call
//! the executor directly.

use std::sync::Arc;

use async_graphql::{ObjectType, SDLExportOptions, Schema, SubscriptionType};

use crate::stores::{BoxFuture, Dependency};

/// Anything that executes GraphQL requests: every async-graphql `Schema` is one (taking each
/// request's parsed document from [`crate::parsed_documents`]).
pub trait GraphQlExecutor: Send + Sync + 'static {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response>;
    /// The federation SDL, as `_service { sdl }` gives it.
    fn federation_sdl(&self) -> String;

    /// Runs a subscription: one response per event, until the stream ends (or is dropped).
    /// A request that is not a subscription yields its one response. By default a subgraph
    /// has no subscriptions: one error.
    fn execute_stream(
        &self,
        request: async_graphql::Request,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        let _ = request;
        let error = async_graphql::ServerError::new("this subgraph serves no subscriptions", None);
        Box::pin(futures_util::stream::once(async move {
            async_graphql::Response::from_errors(vec![error])
        }))
    }
}

impl<Q, M, S> GraphQlExecutor for Schema<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    fn execute(
        &self,
        mut request: async_graphql::Request,
    ) -> BoxFuture<'_, async_graphql::Response> {
        Box::pin(async move {
            // The document parsed once per distinct text, not once per request.
            crate::parsed_documents::prepare(&mut request);
            let mut response = Schema::execute(self, request).await;
            fill_nulls_at_error_paths(&mut response);
            response
        })
    }

    fn federation_sdl(&self) -> String {
        import_authenticated(&self.sdl_with_options(SDLExportOptions::new().federation()))
    }

    fn execute_stream(
        &self,
        mut request: async_graphql::Request,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        use futures_util::StreamExt;
        crate::parsed_documents::prepare(&mut request);
        Schema::execute_stream(self, request)
            .map(|mut response| {
                fill_nulls_at_error_paths(&mut response);
                response
            })
            .boxed()
    }
}

// `@authenticated` on a field or an object type: only signed-in callers (or partners) may
// select it; the router enforces it before fetching (Federation 2.5's authorization
// directive). Apply with `#[graphql(directive = authenticated::apply())]`. (A plain comment:
// a doc comment would become the directive's description in the SDL, which is replaced.)
#[async_graphql::TypeDirective(location = "FieldDefinition", location = "Object")]
pub fn authenticated() {}

/// async-graphql links Federation 2.5 but imports `@requiresScopes` only: the schema then
/// defines `@authenticated` as a directive of its own, which composition would not treat as
/// federation's. This drops that local definition and imports federation's instead (a no-op
/// for a schema that does not use it).
fn import_authenticated(sdl: &str) -> String {
    let definition = "directive @authenticated on FIELD_DEFINITION | OBJECT";
    if !sdl.contains(definition) {
        return sdl.to_owned();
    }
    sdl.lines()
        .filter(|line| line.trim() != definition)
        .map(|line| {
            if line.trim_start().starts_with("import: [\"@key\"") {
                line.replacen(
                    "\"@requiresScopes\"",
                    "\"@requiresScopes\", \"@authenticated\"",
                    1,
                )
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// async-graphql leaves a field whose resolver failed out of `data` (and answers `null` for an
/// object all of whose fields failed); the GraphQL spec says the field is `null`. This puts
/// `null` at the path of each such error (only where the key is missing from an object that
/// exists). It does not propagate nulls through non-null fields: async-graphql does not record
/// them, and the router, which knows the schema, does.
pub fn fill_nulls_at_error_paths(response: &mut async_graphql::Response) {
    use async_graphql::{PathSegment, Value};
    // When every root field failed, async-graphql answers `data: null` even though execution
    // ran (the errors have paths): the root is an object whose fields are null.
    if response.data == Value::Null && response.errors.iter().any(|e| !e.path.is_empty()) {
        response.data = Value::Object(Default::default());
    }
    for error in &response.errors {
        let Some((PathSegment::Field(key), parents)) = error.path.split_last() else {
            continue;
        };
        if let Some(Value::Object(map)) = descend(&mut response.data, parents) {
            map.entry(async_graphql::Name::new(key))
                .or_insert(Value::Null);
        }
    }
}

/// The value at `path` inside `value`, if every step exists.
fn descend<'a>(
    value: &'a mut async_graphql::Value,
    path: &[async_graphql::PathSegment],
) -> Option<&'a mut async_graphql::Value> {
    use async_graphql::{PathSegment, Value};
    let mut current = value;
    for segment in path {
        current = match (segment, current) {
            (PathSegment::Field(key), Value::Object(map)) => map.get_mut(key.as_str())?,
            (PathSegment::Index(index), Value::List(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(current)
}

/// One domain's subgraph, ready to be served.
#[derive(Clone)]
pub struct Subgraph {
    /// Lower-case name (`content`, `accounts`, …): its path is `/subgraphs/<name>/graphql`.
    pub name: String,
    pub executor: Arc<dyn GraphQlExecutor>,
    /// The stores it needs; `/ready` checks them.
    pub dependencies: Vec<Dependency>,
}

//! Parsed GraphQL documents, kept so a subgraph parses each distinct document text once. The
//! router sends the same few fetch documents (its query plans' fetches) over and over with
//! different variables, and parsing each again cost a subgraph several percent of its CPU
//! under load. [`prepare`] gives a request the document parsed from its text (from the
//! process's cache, or parsed now and kept); every subgraph's schema calls it before executing
//! ([`crate::subgraph::GraphQlExecutor`] for an async-graphql `Schema`), so requests over HTTP
//! (one or batched, `GET` or `POST`), in process from the router, and subscriptions all use it.
//!
//! The cache is keyed on the whole text (its hash finds the entry; the text itself is compared,
//! so two documents differing by one character are never confused). It is bounded: at most
//! [`CAPACITY`] documents and [`MAX_TOTAL_BYTES`] held, least recently used first out, and a
//! document over [`MAX_DOCUMENT_BYTES`] of text is not kept. What a document holds is its text
//! and its syntax tree, estimated by [`weight`]: the tree is what grows (two bytes of text,
//! `a `, are a field node of about 230 bytes), so counting text alone would let 8 MB of
//! text hold close to a gigabyte of trees. A document that does not parse is not
//! kept either: the request is left untouched, and async-graphql reports the syntax error
//! exactly as it would without the cache. Validation still runs on every request.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_graphql::Name;
use async_graphql::parser::Positioned;
use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, Field, FragmentDefinition,
    OperationDefinition, OperationType, Selection, SelectionSet, VariableDefinition,
};
use async_graphql_value::Value;
use lru::LruCache;

/// How many documents the process keeps (every subgraph in it shares them: a document's parse
/// does not depend on the schema).
pub const CAPACITY: usize = 512;
/// The longest document text kept, in bytes; a longer one is parsed on every request.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// The most kept at once, in bytes of text and syntax trees ([`weight`]), so many long
/// documents cannot hold [`CAPACITY`] × [`MAX_DOCUMENT_BYTES`] and their trees. A document
/// heavier than this on its own is not kept.
pub const MAX_TOTAL_BYTES: usize = 32 * 1024 * 1024;

/// A bounded, thread-safe cache of parsed documents, keyed on their text.
pub struct ParsedDocuments {
    entries: Mutex<Entries>,
    max_document_bytes: usize,
    max_total_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    uncached: AtomicU64,
}

struct Entries {
    /// Each document with its [`weight`].
    documents: LruCache<Box<str>, (Arc<ExecutableDocument>, usize)>,
    /// The weight of every document kept.
    bytes: usize,
}

/// How a document was found: kept, parsed now and kept, or not kept.
enum Lookup {
    Hit,
    Miss,
    Uncached,
}

/// How often the cache answered: `hits` (the document was kept), `misses` (parsed and kept)
/// and `uncached` (too long or too heavy to keep, or it did not parse: left to
/// async-graphql).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lookups {
    pub hits: u64,
    pub misses: u64,
    pub uncached: u64,
}

impl ParsedDocuments {
    /// A cache of at most `capacity` documents of at most `max_document_bytes` of text each,
    /// holding at most `max_total_bytes` of text and trees ([`weight`]).
    pub fn new(capacity: NonZeroUsize, max_document_bytes: usize, max_total_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                documents: LruCache::new(capacity),
                bytes: 0,
            }),
            max_document_bytes,
            max_total_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            uncached: AtomicU64::new(0),
        }
    }

    /// The process's cache, which [`prepare`] uses.
    pub fn global() -> &'static ParsedDocuments {
        static GLOBAL: OnceLock<ParsedDocuments> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            ParsedDocuments::new(
                NonZeroUsize::new(CAPACITY).expect("a positive capacity"),
                MAX_DOCUMENT_BYTES,
                MAX_TOTAL_BYTES,
            )
        })
    }

    /// Sets `request`'s parsed document from the cache, or parses its text, keeps the document
    /// and sets it. A text that does not parse (or an empty one, a persisted query sent by its
    /// hash) leaves the request untouched: async-graphql then parses it and reports the error
    /// as it always does. A document already set on the request is replaced by the same parse
    /// of its text.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if let Some(document) = self.document(&request.query) {
            request.set_parsed_query(document);
        }
    }

    /// The document `text` parses to (a copy of the one kept, or parsed now and kept), or
    /// `None` when it does not parse or is too long to keep.
    pub fn document(&self, text: &str) -> Option<ExecutableDocument> {
        let (document, lookup) = self.find(text);
        match lookup {
            Lookup::Hit => self.hits.fetch_add(1, Ordering::Relaxed),
            Lookup::Miss => self.misses.fetch_add(1, Ordering::Relaxed),
            Lookup::Uncached => self.uncached.fetch_add(1, Ordering::Relaxed),
        };
        // The one copy, made outside the lock.
        document.map(|document| ExecutableDocument::clone(&document))
    }

    /// The type of the operation a request for `text` runs (the one named `operation_name`,
    /// or the document's only one), from the document kept (parsed now and kept if it is
    /// not; a text too long to keep is parsed and dropped), without copying it. `None` when
    /// the text does not parse or names no such operation: async-graphql then refuses the
    /// request itself. Counted in [`ParsedDocuments::lookups`] only when it parses and
    /// keeps the document (a miss); the request's own [`ParsedDocuments::prepare`] then
    /// counts its lookup.
    pub fn operation_type(
        &self,
        text: &str,
        operation_name: Option<&str>,
    ) -> Option<OperationType> {
        let document = match self.find(text) {
            (Some(document), Lookup::Miss) => {
                // Parsed and kept here: the request's own lookup then finds it.
                self.misses.fetch_add(1, Ordering::Relaxed);
                document
            }
            (Some(document), _) => document,
            // Too long to keep, but it runs all the same: parsed here, not kept.
            (None, _) if text.len() > self.max_document_bytes.min(self.max_total_bytes) => {
                Arc::new(async_graphql::parser::parse_query(text).ok()?)
            }
            (None, _) => return None,
        };
        // async-graphql's choice: the named one (an anonymous operation has no name), else
        // the only one.
        let operation = match (&document.operations, operation_name) {
            (DocumentOperations::Single(operation), None) => operation,
            (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
            (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
                operations.values().next()?
            }
            _ => return None,
        };
        Some(operation.node.ty)
    }

    /// The document `text` parses to, shared (kept, or parsed now and kept when it is light
    /// enough), and how it was found.
    fn find(&self, text: &str) -> (Option<Arc<ExecutableDocument>>, Lookup) {
        if text.len() > self.max_document_bytes || text.len() > self.max_total_bytes {
            return (None, Lookup::Uncached);
        }
        // Only the shared pointer is taken under the lock.
        let kept = self
            .lock()
            .documents
            .get(text)
            .map(|(document, _)| document.clone());
        if let Some(document) = kept {
            return (Some(document), Lookup::Hit);
        }
        let Ok(document) = async_graphql::parser::parse_query(text) else {
            return (None, Lookup::Uncached);
        };
        let weight = weight(text, &document);
        let document = Arc::new(document);
        if weight > self.max_total_bytes {
            return (Some(document), Lookup::Uncached);
        }
        let mut entries = self.lock();
        // Another request may have kept the same text meanwhile: `push` replaces it, and hands
        // back the replaced entry or the one evicted for room.
        if let Some((_, (_, removed))) = entries
            .documents
            .push(text.into(), (document.clone(), weight))
        {
            entries.bytes -= removed;
        }
        entries.bytes += weight;
        while entries.bytes > self.max_total_bytes {
            let Some((_, (_, removed))) = entries.documents.pop_lru() else {
                break;
            };
            entries.bytes -= removed;
        }
        (Some(document), Lookup::Miss)
    }

    /// Whether the document `text` is kept (without making it the most recently used).
    pub fn contains(&self, text: &str) -> bool {
        self.lock().documents.contains(text)
    }

    /// How many documents are kept.
    pub fn len(&self) -> usize {
        self.lock().documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes the documents kept hold, text and trees ([`weight`]).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The lookups so far.
    pub fn lookups(&self) -> Lookups {
        Lookups {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            uncached: self.uncached.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An estimate of the memory a kept document holds: its text, and its syntax tree counted
/// node by node (each node's size as the parser lays it out, and the heap its names, strings
/// and lists take). An estimate, not an account: against a counting allocator it came within
/// 3% of what the parser allocated for documents of thousands of fields (6.58 MB for 6.78 MB:
/// 29,000 fields; 5.72 MB for 5.83 MB: 3,000 aliased fields with arguments), and 11% under it
/// for a small document using every kind of node.
pub fn weight(text: &str, document: &ExecutableDocument) -> usize {
    let operations: usize = match &document.operations {
        DocumentOperations::Single(operation) => operation_weight(&operation.node),
        DocumentOperations::Multiple(operations) => operations
            .iter()
            .map(|(name, operation)| {
                entry_size::<OperationDefinition>()
                    + name_weight(name)
                    + operation_weight(&operation.node)
            })
            .sum(),
    };
    let fragments: usize = document
        .fragments
        .iter()
        .map(|(name, fragment)| {
            let fragment = &fragment.node;
            entry_size::<FragmentDefinition>()
                + name_weight(name)
                + name_weight(&fragment.type_condition.node.on.node)
                + directives_weight(&fragment.directives)
                + selection_set_weight(&fragment.selection_set.node)
        })
        .sum();
    text.len() + size_of::<ExecutableDocument>() + operations + fragments
}

/// What one more entry of a hash map of `T`s by name takes (the entry and its control byte).
fn entry_size<T>() -> usize {
    size_of::<(Name, Positioned<T>)>() + 1
}

/// A name's heap: its text behind an `Arc` (two counts before it).
fn name_weight(name: &Name) -> usize {
    2 * size_of::<usize>() + name.len()
}

fn operation_weight(operation: &OperationDefinition) -> usize {
    let variables: usize = operation
        .variable_definitions
        .iter()
        .map(variable_weight)
        .sum();
    slots(&operation.variable_definitions)
        + variables
        + directives_weight(&operation.directives)
        + selection_set_weight(&operation.selection_set.node)
}

fn variable_weight(variable: &Positioned<VariableDefinition>) -> usize {
    let variable = &variable.node;
    // The type by its printed length (a list type boxes each level's item type: a few words
    // each, under-counted here; variables are few and short). A default value is weighed
    // through the tree's value type (a copy, made once per document kept).
    name_weight(&variable.name.node)
        + variable.var_type.node.to_string().len()
        + directives_weight(&variable.directives)
        + variable
            .default_value
            .as_ref()
            .map_or(0, |value| value_weight(&value.node.clone().into_value()))
}

/// A list's slots, used or not (its own few words are counted where it sits).
fn slots<T>(items: &Vec<T>) -> usize {
    items.capacity() * size_of::<T>()
}

fn directives_weight(directives: &Vec<Positioned<Directive>>) -> usize {
    slots(directives)
        + directives
            .iter()
            .map(|directive| {
                name_weight(&directive.node.name.node) + arguments_weight(&directive.node.arguments)
            })
            .sum::<usize>()
}

fn arguments_weight(arguments: &Vec<(Positioned<Name>, Positioned<Value>)>) -> usize {
    slots(arguments)
        + arguments
            .iter()
            .map(|(name, value)| name_weight(&name.node) + value_weight(&value.node))
            .sum::<usize>()
}

/// A value's heap (its own size is counted where it sits).
fn value_weight(value: &Value) -> usize {
    match value {
        Value::Variable(name) | Value::Enum(name) => name_weight(name),
        Value::String(text) => text.capacity(),
        Value::Binary(bytes) => bytes.len(),
        Value::List(items) => slots(items) + items.iter().map(value_weight).sum::<usize>(),
        Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| {
                // An index map: the entry, its hash, and a slot of its table.
                size_of::<(Name, Value)>()
                    + 2 * size_of::<usize>()
                    + name_weight(name)
                    + value_weight(value)
            })
            .sum(),
        Value::Null | Value::Number(_) | Value::Boolean(_) => 0,
    }
}

fn selection_set_weight(selection_set: &SelectionSet) -> usize {
    let items: usize = selection_set
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => field_weight(&field.node),
            Selection::FragmentSpread(spread) => {
                name_weight(&spread.node.fragment_name.node)
                    + directives_weight(&spread.node.directives)
            }
            Selection::InlineFragment(fragment) => {
                fragment
                    .node
                    .type_condition
                    .as_ref()
                    .map_or(0, |condition| name_weight(&condition.node.on.node))
                    + directives_weight(&fragment.node.directives)
                    + selection_set_weight(&fragment.node.selection_set.node)
            }
        })
        .sum();
    slots(&selection_set.items) + items
}

fn field_weight(field: &Field) -> usize {
    field
        .alias
        .as_ref()
        .map_or(0, |alias| name_weight(&alias.node))
        + name_weight(&field.name.node)
        + arguments_weight(&field.arguments)
        + directives_weight(&field.directives)
        + selection_set_weight(&field.selection_set.node)
}

/// Sets `request`'s parsed document from the process's cache ([`ParsedDocuments::prepare`]).
pub fn prepare(request: &mut async_graphql::Request) {
    ParsedDocuments::global().prepare(request);
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request, Schema};

    struct Query;

    #[Object]
    impl Query {
        async fn hello(&self, name: Option<String>) -> String {
            format!("hello {}", name.as_deref().unwrap_or("world"))
        }

        async fn count(&self, by: i32) -> i32 {
            by * 2
        }
    }

    fn schema() -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription).finish()
    }

    fn cache(capacity: usize) -> ParsedDocuments {
        ParsedDocuments::new(
            NonZeroUsize::new(capacity).unwrap(),
            MAX_DOCUMENT_BYTES,
            MAX_TOTAL_BYTES,
        )
    }

    fn json(response: async_graphql::Response) -> serde_json::Value {
        serde_json::to_value(response).unwrap()
    }

    #[test]
    fn the_operation_a_request_runs_is_read_as_async_graphql_chooses_it() {
        let cache = cache(8);
        let both = "query Read { hello } mutation Write { hello }";
        let cases = [
            ("mutation { hello }", None, Some(OperationType::Mutation)),
            ("{ hello }", None, Some(OperationType::Query)),
            (
                "subscription { hello }",
                None,
                Some(OperationType::Subscription),
            ),
            // A named operation alone needs no name in the request.
            (
                "mutation Write { hello }",
                None,
                Some(OperationType::Mutation),
            ),
            (both, Some("Write"), Some(OperationType::Mutation)),
            (both, Some("Read"), Some(OperationType::Query)),
            // Several operations and no name, an unknown name, a name for an anonymous
            // operation, a syntax error: async-graphql refuses each, nothing runs.
            (both, None, None),
            (both, Some("Other"), None),
            ("mutation { hello }", Some("Write"), None),
            ("mutation { hello", None, None),
        ];
        for (text, name, expected) in cases {
            assert_eq!(
                cache.operation_type(text, name),
                expected,
                "{text} {name:?}"
            );
        }
        // A text too long to keep is read all the same.
        let long = format!("mutation {{ hello }} # {}", "x".repeat(MAX_DOCUMENT_BYTES));
        assert_eq!(
            cache.operation_type(&long, None),
            Some(OperationType::Mutation)
        );
        assert!(!cache.contains(&long));
        // Each document parsed and kept here counted as a miss (the five that parse); kept
        // for the request's own parse, which finds it.
        assert!(cache.contains(both));
        assert_eq!(
            cache.lookups(),
            Lookups {
                hits: 0,
                misses: 5,
                uncached: 0
            }
        );
        assert!(cache.document(both).is_some());
        assert_eq!(cache.lookups().hits, 1);
    }

    #[tokio::test]
    async fn a_repeated_document_is_parsed_once() {
        let cache = cache(8);
        let schema = schema();
        let query = "query($n: String) { hello(name: $n) }";
        for name in ["Ruth", "Boaz", "Naomi"] {
            let mut request = Request::new(query).variables(async_graphql::Variables::from_json(
                serde_json::json!({"n": name}),
            ));
            cache.prepare(&mut request);
            assert_eq!(
                json(schema.execute(request).await),
                serde_json::json!({"data": {"hello": format!("hello {name}")}})
            );
        }
        assert_eq!(
            cache.lookups(),
            Lookups {
                hits: 2,
                misses: 1,
                uncached: 0
            }
        );
        assert_eq!(cache.len(), 1);
        let tree = async_graphql::parser::parse_query(query).unwrap();
        assert_eq!(cache.bytes(), weight(query, &tree));
        assert!(cache.bytes() > query.len(), "the text and its tree");
    }

    #[tokio::test]
    async fn documents_one_character_apart_are_not_confused() {
        let cache = cache(8);
        let schema = schema();
        for _ in 0..2 {
            for (query, answer) in [
                ("{ count(by: 1) }", serde_json::json!({"count": 2})),
                ("{ count(by: 2) }", serde_json::json!({"count": 4})),
                ("{ hello }", serde_json::json!({"hello": "hello world"})),
                ("{ hellO }", serde_json::Value::Null),
            ] {
                let mut request = Request::new(query);
                cache.prepare(&mut request);
                let response = json(schema.execute(request).await);
                assert_eq!(response["data"], answer, "{query}: {response}");
            }
        }
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.lookups().misses, 4);
        assert_eq!(cache.lookups().hits, 4);
    }

    #[tokio::test]
    async fn a_syntax_error_is_reported_as_without_the_cache() {
        let cache = cache(8);
        let schema = schema();
        for query in ["{ hello ", "", "query { hello(name: ) }"] {
            let without = json(schema.execute(Request::new(query)).await);
            let mut request = Request::new(query);
            cache.prepare(&mut request);
            let with = json(schema.execute(request).await);
            assert_eq!(with, without, "{query}");
            assert!(with["errors"][0]["message"].is_string(), "{with}");
            assert!(!cache.contains(query));
        }
        assert!(cache.is_empty());
        assert_eq!(cache.lookups().uncached, 3);
        assert_eq!(cache.lookups().misses, 0);
    }

    #[tokio::test]
    async fn a_response_through_the_cache_is_the_response_without_it() {
        let cache = cache(8);
        let schema = schema();
        let query = "query A { hello(name: \"Ruth\") } query B { count(by: 21) hello }";
        for operation in [Some("A"), Some("B"), Some("C"), None] {
            let request = || {
                let request = Request::new(query);
                match operation {
                    Some(name) => request.operation_name(name),
                    None => request,
                }
            };
            let without = json(schema.execute(request()).await);
            // Twice: once parsed now, once from the cache.
            for _ in 0..2 {
                let mut cached = request();
                cache.prepare(&mut cached);
                assert_eq!(json(schema.execute(cached).await), without, "{operation:?}");
            }
        }
        assert_eq!(cache.lookups().misses, 1);
        assert_eq!(cache.lookups().hits, 7);
        // A validation error too (an unknown field): validation runs on every request.
        let without = json(schema.execute(Request::new("{ nope }")).await);
        for _ in 0..2 {
            let mut cached = Request::new("{ nope }");
            cache.prepare(&mut cached);
            assert_eq!(json(schema.execute(cached).await), without);
        }
        assert!(without["errors"][0]["message"].is_string(), "{without}");
    }

    #[test]
    fn the_capacity_and_sizes_are_bounded() {
        let cache = cache(2);
        for query in ["{ a }", "{ b }", "{ c }"] {
            assert!(cache.document(query).is_some());
        }
        assert_eq!(cache.len(), 2);
        assert!(
            !cache.contains("{ a }"),
            "the least recently used goes first"
        );
        assert!(cache.contains("{ b }") && cache.contains("{ c }"));
        // Using `{ b }` makes `{ c }` the next to go.
        assert!(cache.document("{ b }").is_some());
        assert!(cache.document("{ d }").is_some());
        assert!(cache.contains("{ b }") && cache.contains("{ d }") && !cache.contains("{ c }"));
        let one = weight(
            "{ a }",
            &async_graphql::parser::parse_query("{ a }").unwrap(),
        );
        assert_eq!(
            cache.bytes(),
            2 * one,
            "documents of one shape weigh the same"
        );

        // A document over the size limit is parsed but not kept.
        let cache = ParsedDocuments::new(NonZeroUsize::new(8).unwrap(), 16, 1024);
        let long = format!("{{ {} }}", "a ".repeat(20));
        assert!(cache.document(&long).is_none());
        let mut request = Request::new(long.clone());
        cache.prepare(&mut request);
        assert!(cache.is_empty());
        assert_eq!(cache.lookups().uncached, 2);

        // What is kept stays under its total.
        let cache = ParsedDocuments::new(NonZeroUsize::new(8).unwrap(), 16, 2 * one + one / 2);
        for query in ["{ a }", "{ b }", "{ c }"] {
            assert!(cache.document(query).is_some());
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 2 * one);
        assert!(!cache.contains("{ a }"));

        // A document heavier than the total on its own is parsed, answered, and not kept.
        let cache = ParsedDocuments::new(NonZeroUsize::new(8).unwrap(), 1024, one / 2);
        assert!(cache.document("{ a }").is_some());
        assert!(cache.is_empty());
        assert_eq!(cache.lookups().uncached, 1);
    }

    /// Two bytes of text (`a `) are a field node of about 230 bytes: the bound counts the
    /// trees, so documents of many small fields, each well under the text limit, cannot make
    /// the cache hold many times its total (counting text, ten such documents were 600 KB).
    #[test]
    fn the_total_counts_syntax_trees_not_only_text() {
        let wide = |n: usize| format!("{{ f{n} {} }}", "a ".repeat(29_000));
        let tree = async_graphql::parser::parse_query(wide(0)).unwrap();
        let heavy = weight(&wide(0), &tree);
        assert!(wide(0).len() < MAX_DOCUMENT_BYTES);
        assert!(
            heavy > 29_000 * size_of::<Positioned<Selection>>(),
            "each field's node counts: {heavy}"
        );
        let cache = cache(CAPACITY);
        for n in 0..10 {
            assert!(cache.document(&wide(n)).is_some());
        }
        assert!(cache.bytes() <= MAX_TOTAL_BYTES, "{}", cache.bytes());
        assert_eq!(cache.len(), MAX_TOTAL_BYTES / heavy);
        assert!(cache.contains(&wide(9)), "the most recent is kept");
        assert!(!cache.contains(&wide(0)), "the least recent went first");
        // Arguments, directives, variables and fragments weigh too.
        let rich = "query($v: [Int!] = [1, 2]) { f(a: {b: [\"x\", $v]}) @skip(if: false) { ...F } } \
                    fragment F on T { g }";
        let plain = "query { f { g } }";
        let weigh = |text: &str| weight(text, &async_graphql::parser::parse_query(text).unwrap());
        assert!(
            weigh(rich) > weigh(plain) + rich.len(),
            "{} {}",
            weigh(rich),
            weigh(plain)
        );
    }

    #[test]
    fn concurrent_requests_share_the_cache() {
        let cache = Arc::new(cache(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let query = format!("{{ f{} }}", i % 3);
                        let document = cache.document(&query).unwrap();
                        let parsed = async_graphql::parser::parse_query(&query).unwrap();
                        assert_eq!(format!("{document:?}"), format!("{parsed:?}"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(cache.len(), 3);
        let one = weight(
            "{ f0 }",
            &async_graphql::parser::parse_query("{ f0 }").unwrap(),
        );
        assert_eq!(cache.bytes(), 3 * one, "each document counted once");
        let lookups = cache.lookups();
        assert_eq!(lookups.hits + lookups.misses, 800);
        assert!(lookups.misses >= 3 && lookups.misses <= 12, "{lookups:?}");
    }

    #[tokio::test]
    async fn subgraph_executors_and_the_http_service_use_the_process_cache() {
        use crate::graphql_http::{ExecutorService, GraphQlService};
        use crate::subgraph::GraphQlExecutor;

        let schema = schema();
        // A text no other test uses: the process's cache is shared.
        let query = "query ProcessCache($n: String) { hello(name: $n) count(by: 4) }";
        let request = |name: &str| {
            Request::new(query).variables(async_graphql::Variables::from_json(
                serde_json::json!({"n": name}),
            ))
        };
        let without = json(Schema::execute(&schema, request("Ruth")).await);
        assert_eq!(
            without,
            serde_json::json!({"data": {"hello": "hello Ruth", "count": 8}})
        );
        assert!(!ParsedDocuments::global().contains(query));
        // In process (the router's `ExecutorSubgraph` calls the executor so).
        let executor: Arc<dyn GraphQlExecutor> = Arc::new(schema);
        assert_eq!(json(executor.execute(request("Ruth")).await), without);
        assert!(ParsedDocuments::global().contains(query));
        // Over HTTP (one request or each element of a batch is a call on the service).
        let service = ExecutorService(executor.clone());
        let before = ParsedDocuments::global().lookups().hits;
        assert_eq!(service.call(request("Ruth")).await.json(), without);
        assert!(ParsedDocuments::global().lookups().hits > before);
        // Subscriptions' executor too (a query there yields its one response).
        use futures_util::StreamExt;
        let streamed: Vec<_> = executor.execute_stream(request("Ruth")).collect().await;
        assert_eq!(streamed.len(), 1);
        assert_eq!(json(streamed.into_iter().next().unwrap()), without);
    }
}

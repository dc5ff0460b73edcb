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
//! [`CAPACITY`] documents and [`MAX_TOTAL_BYTES`] of text, least recently used first out, and a
//! document over [`MAX_DOCUMENT_BYTES`] is not kept. A document that does not parse is not
//! kept either: the request is left untouched, and async-graphql reports the syntax error
//! exactly as it would without the cache. Validation still runs on every request.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;

/// How many documents the process keeps (every subgraph in it shares them: a document's parse
/// does not depend on the schema).
pub const CAPACITY: usize = 512;
/// The longest document text kept, in bytes; a longer one is parsed on every request.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// The most document text kept at once, in bytes (so many long documents cannot hold
/// [`CAPACITY`] × [`MAX_DOCUMENT_BYTES`] and their syntax trees).
pub const MAX_TOTAL_BYTES: usize = 8 * 1024 * 1024;

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
    documents: LruCache<Box<str>, Arc<ExecutableDocument>>,
    /// The length of every text kept.
    bytes: usize,
}

/// How often the cache answered: `hits` (the document was kept), `misses` (parsed and kept)
/// and `uncached` (too long to keep, or it did not parse: left to async-graphql).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lookups {
    pub hits: u64,
    pub misses: u64,
    pub uncached: u64,
}

impl ParsedDocuments {
    /// A cache of at most `capacity` documents of at most `max_document_bytes` each, holding
    /// at most `max_total_bytes` of text.
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
        if text.len() > self.max_document_bytes || text.len() > self.max_total_bytes {
            self.uncached.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Only the shared pointer is taken under the lock; the copy is made outside it.
        let kept = self.lock().documents.get(text).cloned();
        if let Some(document) = kept {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(ExecutableDocument::clone(&document));
        }
        let Ok(document) = async_graphql::parser::parse_query(text) else {
            self.uncached.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let kept = Arc::new(document.clone());
        let mut entries = self.lock();
        // Another request may have kept the same text meanwhile: `push` replaces it, and hands
        // back the replaced entry or the one evicted for room.
        if let Some((removed, _)) = entries.documents.push(text.into(), kept) {
            entries.bytes -= removed.len();
        }
        entries.bytes += text.len();
        while entries.bytes > self.max_total_bytes {
            let Some((removed, _)) = entries.documents.pop_lru() else {
                break;
            };
            entries.bytes -= removed.len();
        }
        Some(document)
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

    /// How many bytes of document text are kept.
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
        assert_eq!(cache.bytes(), query.len());
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
        assert_eq!(cache.bytes(), 10);

        // A document over the size limit is parsed but not kept.
        let cache = ParsedDocuments::new(NonZeroUsize::new(8).unwrap(), 16, 1024);
        let long = format!("{{ {} }}", "a ".repeat(20));
        assert!(cache.document(&long).is_none());
        let mut request = Request::new(long.clone());
        cache.prepare(&mut request);
        assert!(cache.is_empty());
        assert_eq!(cache.lookups().uncached, 2);

        // The text kept stays under its total.
        let cache = ParsedDocuments::new(NonZeroUsize::new(8).unwrap(), 16, 12);
        for query in ["{ a }", "{ b }", "{ c }"] {
            assert!(cache.document(query).is_some());
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 10);
        assert!(!cache.contains("{ a }"));
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
        assert_eq!(cache.bytes(), 3 * "{ f0 }".len());
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

//! The kit every GospeLib subgraph is built with: typed configuration, the HTTP server
//! (GraphQL over HTTP, over WebSocket and as server-sent events, health, readiness, metrics,
//! graceful shutdown), live events across processes (Redis pub/sub), JSON logs with request
//! identity, the error-code catalog, store connections with their readiness probes, and the
//! PostgreSQL migrations.

pub mod access;
pub mod announcements;
pub mod breaker;
pub mod caller;
pub mod capped_body;
pub mod config;
pub mod edge;
pub mod errors;
pub mod graphiql;
pub mod graphql_http;
pub mod json_reasons;
pub mod json_size;
pub mod live;
pub mod metrics;
pub mod migrations;
pub mod multipart;
pub mod nonce_ledger;
pub mod observe;
pub mod outbound;
pub mod outbox;
pub mod paging;
pub mod parsed_documents;
pub mod plans;
pub mod redis_link;
pub mod request_body;
pub mod retention;
pub mod server;
pub mod single_flight;
pub mod sse;
pub mod stores;
pub mod stream_lag;
pub mod streaming;
pub mod streams;
pub mod subgraph;
pub mod telemetry;
pub mod test_stack;
pub mod text;
pub mod time;
pub mod time_zones;
pub mod usage;
pub mod versioned_store;
pub mod webhook_answer;
pub mod ws;

pub use errors::ErrorCode;
pub use subgraph::{GraphQlExecutor, Subgraph};

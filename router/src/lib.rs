//! The GospeLib federation router.
//!
//! A request goes through these stages, one module each:
//! - [`supergraph`]: the versioned supergraph the router serves (its SDL, content hash, subgraph
//!   endpoints and query planner);
//! - [`limits`]: the operation's size and cost, measured in one linear pass before anything else;
//! - [`validation`]: the spec's validation rules;
//! - [`planning`]: parse → limits → validate → normalize → plan, off the async workers and
//!   within a deadline, with plans cached per (supergraph version, normalized operation);
//! - [`authorization`]: `@authenticated` and `@requiresScopes`: what the caller may not
//!   select is left out of the plan and answered `null` with an error;
//! - [`variables`]: the request's variables coerced as the spec says (defaults, required
//!   values, input objects, lists, enums, scalars);
//! - [`execution`]: the plan's fetches, through a [`transport`], merged into one tree of
//!   [`value`]s (the router's own JSON, made for that work);
//! - [`projection`]: the response's JSON written straight from that tree as the client asked,
//!   nulls propagated as the spec says, with `__schema`/`__type` answered by [`introspection`];
//! - [`pipeline`]: the stages above in order, for one request;
//! - [`http`]: the pipeline as the platform kit's GraphQL-over-HTTP service, with
//!   [`apq`] (automatic persisted queries in Redis) and, in front of it, [`trusted_documents`]
//!   (the apps' registered operations, which app callers may be held to);
//! - [`reload`]: a new supergraph swapped in without a restart (a file, or the registry polled
//!   by ETag);
//! - [`usage`]: the schema coordinates each operation touches, counted into Redis for the
//!   registry's check.
//!
//! Beside them, [`identity`] turns a request's credentials into its caller: [`jwt`] verifies
//! Clerk session tokens against the issuer's JWKS, [`partner_keys`] checks partners' API keys,
//! and [`rate_limit`] enforces each plan's rate limits, shared by every pod through Redis.
//! [`writes`] keeps sharing from answering a caller's query with work begun before that
//! caller's mutation.

pub mod apq;
pub mod authorization;
pub mod defer;
pub mod derived;
pub mod entitlements;
pub mod entity_cache;
pub mod execution;
pub mod fingerprint;
pub mod http;
pub mod identity;
pub mod introspection;
pub mod jwt;
pub mod limits;
pub mod partner_keys;
pub mod pipeline;
pub mod planning;
pub mod planning_budget;
pub mod projection;
pub mod rate_limit;
pub mod reload;
pub mod settings;
pub mod subscription_client;
pub mod supergraph;
pub mod transport;
pub mod trusted_documents;
pub mod usage;
pub mod validation;
pub mod value;
pub mod variables;
pub mod weighted_lru;
pub mod writes;

/// The message of an internal error (the detail goes to the log only).
pub const INTERNAL_MESSAGE: &str = gospelib_kit::errors::INTERNAL_MESSAGE;

//! The notifications subgraph, in the making: GospeLib's events (sign-ups, trials, payments,
//! study reminders) turned into an inbox per user, pushes to devices and emails.
//!
//! What is here now:
//! - [`providers`]: delivery through provider traits with real HTTP implementations, APNs
//!   (token-based JWT auth), FCM (HTTP v1, OAuth2 from a service account) and Resend (email),
//!   each configured by `GOSPELIB_*` variables and off (its sends skipped, never faked as sent)
//!   when unconfigured, with bounded retries, backoff and `Retry-After`.
//!
//! The inbox, preferences, the Redis Streams consumers and the GraphQL schema come next.

pub mod providers;

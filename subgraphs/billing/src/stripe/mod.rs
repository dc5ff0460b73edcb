//! Stripe: webhook signatures ([`signature`]), the events billing reads ([`events`]) and how
//! each is applied to the store ([`apply`]), and the API calls billing makes ([`api`]).

pub mod api;
pub mod apply;
pub mod events;
pub mod signature;

/// The statuses of a Stripe subscription Stripe still bills or serves: one of them stands in
/// the way of another checkout, and two of one user's at once mean the user pays twice.
pub const LIVE_STATUSES: [&str; 3] = ["active", "trialing", "past_due"];

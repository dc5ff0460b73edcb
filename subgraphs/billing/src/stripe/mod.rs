//! Stripe: webhook signatures ([`signature`]), the events billing reads ([`events`]) and how
//! each is applied to the store ([`apply`]), and the API calls billing makes ([`api`]).

pub mod api;
pub mod apply;
pub mod events;
pub mod signature;

//! Checking credentials when the stores behind them misbehave: a partner-key database and a
//! JWKS endpoint that accept connections and never answer. The request is refused as
//! "cannot be checked now" (503), not hung and not served as anonymous; unknown and malformed
//! keys never reach the database at all.

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::caller::ForwardedHeaders;
use gospelib_kit::test_stack::silent_server;
use gospelib_router::identity::{Identity, IdentityError};
use gospelib_router::jwt::{JwtSettings, JwtVerifier};
use gospelib_router::partner_keys::PartnerKeys;

fn headers(name: &str, value: &str) -> ForwardedHeaders {
    ForwardedHeaders(vec![(name.to_owned(), value.to_owned())])
}

/// Far longer than any bound the identity checks have: only a hang takes this long.
const HANG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_key_store_that_hangs_makes_the_request_unavailable_not_stuck() {
    let address = silent_server();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&format!("postgres://gospelib@{address}/gospelib"))
        .unwrap();
    let identity = Identity {
        sessions: None,
        partner_keys: Some(Arc::new(PartnerKeys::new(pool))),
    };
    let key = format!("glpk_{}", "A".repeat(43));
    let outcome = tokio::time::timeout(HANG, identity.identify(Some(&headers("x-api-key", &key))))
        .await
        .expect("the lookup is bounded");
    assert!(
        matches!(outcome, Err(IdentityError::Unavailable(_))),
        "{outcome:?}"
    );
    // A key that is not even shaped like ours is refused without asking the store.
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        identity.identify(Some(&headers("x-api-key", "guess"))),
    )
    .await
    .expect("no store is asked");
    assert!(
        matches!(outcome, Err(IdentityError::Refused(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_jwks_that_hangs_makes_the_request_unavailable_not_stuck() {
    let address = silent_server();
    let settings = JwtSettings::new(
        format!("http://{address}/.well-known/jwks.json"),
        "https://clerk.hang.test",
        None,
    );
    let identity = Identity {
        sessions: Some(Arc::new(JwtVerifier::new(settings).unwrap())),
        partner_keys: None,
    };
    // A well-formed RS256 token naming a key the router has never seen.
    let token = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.\
                 eyJzdWIiOiJ1c2VyXzEiLCJpc3MiOiJodHRwczovL2NsZXJrLmhhbmcudGVzdCIsImV4cCI6OTk5OTk5OTk5OX0.\
                 c2lnbmF0dXJl";
    let outcome = tokio::time::timeout(
        HANG,
        identity.identify(Some(&headers("authorization", &format!("Bearer {token}")))),
    )
    .await
    .expect("the JWKS fetch is bounded");
    assert!(
        matches!(outcome, Err(IdentityError::Unavailable(_))),
        "{outcome:?}"
    );
}

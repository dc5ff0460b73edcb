//! Who is calling: the credentials on a client request, checked once, become the [`Caller`]
//! that reaches every subgraph (signed, see [`gospelib_kit::caller`]).
//!
//! - No credential: anonymous.
//! - `Authorization: Bearer <Clerk session JWT>`: a signed-in user, checked by [`crate::jwt`].
//! - `Authorization: ApiKey <key>` or `x-api-key: <key>`: a partner, checked by
//!   [`crate::partner_keys`]; partners are served the `partner` contract.
//!
//! A credential that does not check out is refused (HTTP 401, `UNAUTHORIZED`): a client that
//! sent one meant to be someone, and is never quietly served as anonymous. A credential that
//! cannot be checked because the key store or the JWKS is unreachable is 503.
//! The client's own `x-gospelib-caller` header, if any, is never read here and never forwarded.

use std::sync::Arc;

use gospelib_kit::caller::{Caller, ForwardedHeaders, user_id_for_clerk};

use crate::jwt::JwtVerifier;
use crate::partner_keys::PartnerKeys;

/// The credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    Session(&'a str),
    ApiKey(&'a str),
}

/// Why a request's credential was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The client's fault: 401.
    #[error("{0}")]
    Refused(String),
    /// A session token that was good and has ended (401 too): the client should get a fresh
    /// one (a WebSocket opened with it is closed `4403`, to be opened again with a new one).
    #[error("{0}")]
    Expired(String),
    /// Ours: the credential could not be checked just now (503).
    #[error("{0}")]
    Unavailable(String),
}

/// The credential in `headers`, or why it cannot be one.
pub fn credential(headers: Option<&ForwardedHeaders>) -> Result<Credential<'_>, IdentityError> {
    let Some(headers) = headers else {
        return Ok(Credential::None);
    };
    let authorization = headers.get("authorization").filter(|v| !v.is_empty());
    let api_key = headers.get("x-api-key").filter(|v| !v.is_empty());
    let refused = |message: &str| Err(IdentityError::Refused(message.to_owned()));
    match (authorization, api_key) {
        (None, None) => Ok(Credential::None),
        (None, Some(key)) => Ok(Credential::ApiKey(key)),
        (Some(_), Some(_)) => refused("send one credential: an Authorization header or x-api-key"),
        (Some(value), None) => {
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            let rest = rest.trim();
            if rest.is_empty() {
                return refused("the Authorization header has no credential after its scheme");
            }
            if scheme.eq_ignore_ascii_case("bearer") {
                Ok(Credential::Session(rest))
            } else if scheme.eq_ignore_ascii_case("apikey") {
                Ok(Credential::ApiKey(rest))
            } else {
                refused("the Authorization scheme must be Bearer (a session token) or ApiKey")
            }
        }
    }
}

/// A caller, and whether it is a partner (served the partner contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub caller: Caller,
    pub partner: bool,
    /// When a long-lived connection or subscription opened with this credential ends: a
    /// session token's `exp`, the leeway and the grace live connections get
    /// ([`crate::jwt::JwtSettings::live_grace`]); an API key's [`PARTNER_LIVE_LIFETIME`] after
    /// it was checked; `None` for anonymous callers.
    pub expires_at: Option<std::time::SystemTime>,
}

/// How long a live connection (WebSocket, or a subscription over server-sent events) opened
/// with a partner's API key lasts. A key never expires by itself, and a revoked one is refused
/// at once only to new operations: the connection then closes as a session's does at its
/// token's end (`4403` over WebSocket; clients reconnect), and its key is checked again.
pub const PARTNER_LIVE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// What checks credentials: session tokens when an issuer is configured, partner keys when
/// their store is.
#[derive(Default, Clone)]
pub struct Identity {
    pub sessions: Option<Arc<JwtVerifier>>,
    pub partner_keys: Option<Arc<PartnerKeys>>,
}

impl Identity {
    /// The caller of a request with these headers.
    pub async fn identify(
        &self,
        headers: Option<&ForwardedHeaders>,
    ) -> Result<Identified, IdentityError> {
        match credential(headers)? {
            Credential::None => Ok(Identified {
                caller: Caller::anonymous(),
                partner: false,
                expires_at: None,
            }),
            Credential::Session(token) => {
                let Some(sessions) = &self.sessions else {
                    return Err(IdentityError::Refused(
                        "this router does not accept session tokens".to_owned(),
                    ));
                };
                let claims = sessions.verify(token).await.map_err(|error| {
                    if matches!(error, crate::jwt::JwtError::Expired) {
                        IdentityError::Expired(format!("invalid session token: {error}"))
                    } else if error.is_client_error() {
                        IdentityError::Refused(format!("invalid session token: {error}"))
                    } else {
                        tracing::error!(%error, "session tokens cannot be checked");
                        IdentityError::Unavailable(
                            "session tokens cannot be checked right now".to_owned(),
                        )
                    }
                })?;
                Ok(Identified {
                    caller: Caller {
                        user_id: Some(user_id_for_clerk(&claims.subject)),
                        session_id: claims.session_id,
                        ..Caller::default()
                    },
                    partner: false,
                    expires_at: Some(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(claims.expires_at)
                            + sessions.live_until_after_exp(),
                    ),
                })
            }
            Credential::ApiKey(key) => {
                let Some(keys) = &self.partner_keys else {
                    return Err(IdentityError::Refused(
                        "this router does not accept API keys".to_owned(),
                    ));
                };
                match keys.find(key).await {
                    Ok(Some(owner)) => Ok(Identified {
                        caller: Caller::partner(owner.partner, owner.scopes),
                        partner: true,
                        expires_at: Some(std::time::SystemTime::now() + PARTNER_LIVE_LIFETIME),
                    }),
                    Ok(None) => Err(IdentityError::Refused("unknown API key".to_owned())),
                    Err(error) => {
                        tracing::error!(%error, "API keys cannot be checked");
                        Err(IdentityError::Unavailable(
                            "API keys cannot be checked right now".to_owned(),
                        ))
                    }
                }
            }
        }
    }
}

/// The identity checks `settings` ask for, and the tasks that keep them current (the JWKS
/// refreshed, revoked partner keys forgotten): partner keys need the database, and their
/// revocations reach this router through Redis.
pub fn start(
    settings: &crate::settings::IdentitySettings,
    postgres: Option<sqlx::PgPool>,
    redis: Option<redis::Client>,
) -> Result<(Identity, Vec<tokio::task::JoinHandle<()>>), crate::jwt::JwtError> {
    let mut background = Vec::new();
    let sessions = match &settings.sessions {
        Some(jwt) => {
            let verifier = Arc::new(JwtVerifier::new(jwt.clone())?);
            background.push(tokio::spawn(verifier.clone().keep_fresh()));
            Some(verifier)
        }
        None => None,
    };
    let partner_keys = postgres.map(|pool| Arc::new(PartnerKeys::new(pool)));
    if let Some(keys) = &partner_keys {
        background.push(tokio::spawn(keys.clone().keep_listing_live_keys()));
    }
    if let (Some(keys), Some(redis)) = (&partner_keys, redis) {
        background.push(tokio::spawn(keys.clone().follow_revocations(redis)));
    }
    Ok((
        Identity {
            sessions,
            partner_keys,
        },
        background,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> ForwardedHeaders {
        ForwardedHeaders(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn credentials_are_read_from_either_header() {
        assert_eq!(credential(None), Ok(Credential::None));
        let h = headers(&[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(credential(Some(&h)), Ok(Credential::Session("abc.def.ghi")));
        let h = headers(&[("authorization", "ApiKey glpk_x")]);
        assert_eq!(credential(Some(&h)), Ok(Credential::ApiKey("glpk_x")));
        let h = headers(&[("x-api-key", "glpk_y")]);
        assert_eq!(credential(Some(&h)), Ok(Credential::ApiKey("glpk_y")));
        let h = headers(&[("x-gospelib-caller", "v1.forged.mac")]);
        assert_eq!(credential(Some(&h)), Ok(Credential::None));
    }

    #[test]
    fn odd_credentials_are_refused() {
        for pairs in [
            &[("authorization", "Basic dXNlcjpwYXNz")][..],
            &[("authorization", "Bearer")][..],
            &[("authorization", "Bearer t"), ("x-api-key", "k")][..],
        ] {
            assert!(
                matches!(
                    credential(Some(&headers(pairs))),
                    Err(IdentityError::Refused(_))
                ),
                "{pairs:?}"
            );
        }
    }
}

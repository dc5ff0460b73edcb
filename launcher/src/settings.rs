//! The launcher's typed configuration, read from `GOSPELIB_*` variables and validated before
//! anything starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use gospelib_kit::caller::CallerKeys;
use gospelib_kit::config::{
    ConfigError, ConfigReader, ContentStoreUrls, Env, StoreUrls, Visibility,
};
use gospelib_kit::edge::EdgeSettings;
use gospelib_kit::server::DEFAULT_MAX_BODY_BYTES;
use gospelib_router::settings::{IdentitySettings, RouterSettings};

/// Settings of `gospelib serve`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// `GOSPELIB_ROUTER_LISTEN`, else `127.0.0.1:$GOSPELIB_ROUTER_PORT` (port 4000 by default):
    /// the public listener (the router, `/health`, `/ready`).
    pub listen: SocketAddr,
    /// `GOSPELIB_INTERNAL_LISTEN`, else loopback on the public port + 1: the subgraphs, the
    /// registry and `/metrics`, for the platform's own parts only.
    pub internal_listen: SocketAddr,
    /// The router's settings, as `gospelib-router` reads them.
    pub router: RouterSettings,
    /// `GOSPELIB_SUPERGRAPH_SOURCE`: compose the supergraph from the code's parts, or serve the
    /// registry's latest published version.
    pub supergraph_source: SupergraphSource,
    /// `GOSPELIB_MAX_BODY_BYTES` (default 2 MiB).
    pub max_body_bytes: usize,
    /// The HTTP edge: `GOSPELIB_CORS_ORIGINS`, `GOSPELIB_CORS_ALLOW_CREDENTIALS`,
    /// `GOSPELIB_ROUTER_CSRF`, `GOSPELIB_ROUTER_MAX_BATCH`, and the subscriptions'
    /// `GOSPELIB_WS_*`.
    pub edge: EdgeSettings,
    /// `GOSPELIB_SHUTDOWN_GRACE_SECS`: how long in-flight requests may run after SIGTERM.
    pub shutdown_grace: Duration,
    /// `GOSPELIB_MIGRATE_ON_START`: apply pending migrations before serving.
    pub migrate_on_start: bool,
    /// The internal secret (the router derives each subgraph's caller key from it) and how
    /// session tokens are checked; partner API keys are looked up in PostgreSQL. Only with
    /// `GOSPELIB_INTERNAL_SECRET`: the whole platform, which runs the router, needs it.
    pub identity: Option<IdentitySettings>,
    /// The caller keys of the subgraphs this process serves: derived from the internal
    /// secret, or given by `GOSPELIB_CALLER_KEYS` to a process serving subgraphs alone.
    pub caller_keys: gospelib_kit::caller::CallerKeys,
    /// While the internal secret is rotated, the keys derived from the previous one, which
    /// this process's subgraphs still believe (`GOSPELIB_CALLER_KEYS_PREVIOUS`; none when unset).
    pub previous_caller_keys: gospelib_kit::caller::CallerKeys,
    /// `GOSPELIB_CLERK_WEBHOOK_SECRET`: the `whsec_…` secret Clerk's webhooks are signed with
    /// (needed when the accounts part runs).
    pub clerk_webhook_secret: Option<gospelib_kit::config::SecretString>,
    /// Stripe: the webhook secret (needed by the billing part), the API key (checkout and the
    /// portal answer `SERVICE_UNAVAILABLE` without one) and the API's base URL.
    pub stripe: StripeSettings,
    /// `GOSPELIB_APP_URL`: the web app, where Stripe sends users back to.
    pub app_url: url::Url,
    /// `GOSPELIB_PLANS_FILE`: plans, prices, entitlements and limits (`config/plans.toml` as
    /// built by default).
    pub plans: std::sync::Arc<gospelib_kit::plans::Plans>,
    pub stores: StoreUrls,
}

impl ServeSettings {
    /// The router's identity settings: the whole platform runs the router, which needs the
    /// internal secret (caller keys alone serve subgraphs, not the router).
    pub fn router_identity(&self) -> Result<&IdentitySettings, NoRouterSecret> {
        self.identity.as_ref().ok_or(NoRouterSecret)
    }

    /// The settings of a `serve` that serves a subgraph or the router (the tests' usual case).
    #[cfg(test)]
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Self::read_for(env, true)
    }

    /// The settings of a `serve` that `needs_keys` (it serves a subgraph or the router);
    /// without (`--only registry`), neither the internal secret nor caller keys is required,
    /// and a process given neither holds no key.
    pub fn read_for(env: &Env, needs_keys: bool) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let port = reader.port("GOSPELIB_ROUTER_PORT", 4000);
        let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port.unwrap_or(4000));
        let listen = reader.socket_addr("GOSPELIB_ROUTER_LISTEN", default_listen);
        // The public port + 1; any port when the public one is any (0).
        let public = listen.map_or(4000, |l| l.port());
        let default_internal = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            match public {
                0 => 0,
                public => public.checked_add(1).unwrap_or(0),
            },
        );
        let internal_listen = reader.socket_addr("GOSPELIB_INTERNAL_LISTEN", default_internal);
        if public == u16::MAX && reader.raw("GOSPELIB_INTERNAL_LISTEN").is_none() {
            reader.require(
                "GOSPELIB_INTERNAL_LISTEN",
                "an IP address and port (the public port is 65535, which has no port above \
                 it for the internal listener)",
            );
        }
        let router = RouterSettings::read(&mut reader);
        let supergraph_source = reader.optional(
            "GOSPELIB_SUPERGRAPH_SOURCE",
            "`code` (compose the parts at start-up) or `registry` (the latest published version)",
            SupergraphSource::Code,
            |raw| match raw.trim() {
                "code" => Ok(SupergraphSource::Code),
                "registry" => Ok(SupergraphSource::Registry),
                other => Err(format!("`{other}` is neither `code` nor `registry`")),
            },
        );
        let max_body_bytes = reader.number(
            "GOSPELIB_MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES as u64,
            1024,
            64 * 1024 * 1024,
        );
        let edge = EdgeSettings::read(&mut reader);
        let grace = reader.number("GOSPELIB_SHUTDOWN_GRACE_SECS", 30, 0, 600);
        let migrate_on_start = reader.flag("GOSPELIB_MIGRATE_ON_START", false);
        // With the internal secret, the router's identity settings and every subgraph's key;
        // with caller keys alone (or with both, or neither: refused), no router.
        let holds_no_key = reader.raw("GOSPELIB_CALLER_KEYS").is_none()
            && reader.raw("GOSPELIB_INTERNAL_SECRET").is_none();
        let (identity, caller_keys) = if !needs_keys && holds_no_key {
            IdentitySettings::read_sessions(&mut reader);
            (Some(None), Some(CallerKeys::Given(Default::default())))
        } else if reader.raw("GOSPELIB_CALLER_KEYS").is_none()
            && reader.raw("GOSPELIB_INTERNAL_SECRET").is_some()
        {
            let identity = IdentitySettings::read(&mut reader);
            let keys = identity
                .as_ref()
                .map(|identity| CallerKeys::Derived(identity.secret.clone()));
            (identity.map(Some), keys)
        } else {
            // Session tokens are the router's business, but every `serve` reads the shared
            // settings alike: a bad value is refused here too.
            IdentitySettings::read_sessions(&mut reader);
            (Some(None), reader.caller_keys())
        };
        let previous_caller_keys = reader.previous_caller_keys();
        let clerk_webhook_secret = reader
            .raw("GOSPELIB_CLERK_WEBHOOK_SECRET")
            .is_some()
            .then(|| {
                reader.required(
                    "GOSPELIB_CLERK_WEBHOOK_SECRET",
                    "the webhook endpoint's signing secret from Clerk's dashboard (`whsec_…`)",
                    Visibility::Secret,
                    |raw| {
                        let raw = raw.trim();
                        svix::webhooks::Webhook::new(raw)
                            .map(|_| gospelib_kit::config::SecretString::new(raw))
                            .map_err(|e| format!("not a Svix signing secret: {e}"))
                    },
                )
            })
            .flatten();
        let plans = reader.plans();
        let stripe = StripeSettings::read(&mut reader);
        let app_url = reader.optional(
            "GOSPELIB_APP_URL",
            "the web app's URL, e.g. https://app.gospelib.com/",
            url::Url::parse("http://127.0.0.1:4000/").expect("a valid URL"),
            |raw| url::Url::parse(raw.trim()).map_err(|e| e.to_string()),
        );
        let stores = StoreUrls::read(&mut reader);
        reader.finish()?;
        let present = "every value is present once finish() succeeded";
        Ok(Self {
            listen: listen.expect(present),
            internal_listen: internal_listen.expect(present),
            router: router.expect(present),
            supergraph_source: supergraph_source.expect(present),
            max_body_bytes: usize::try_from(max_body_bytes.expect(present)).expect("fits"),
            edge: edge.expect(present),
            shutdown_grace: Duration::from_secs(grace.expect(present)),
            migrate_on_start: migrate_on_start.expect(present),
            identity: identity.expect(present),
            caller_keys: caller_keys.expect(present),
            previous_caller_keys: previous_caller_keys.expect(present),
            clerk_webhook_secret,
            plans: plans.expect(present),
            stripe: stripe.expect(present),
            app_url: app_url.expect(present),
            stores: stores.expect(present),
        })
    }
}

/// The whole platform was given caller keys instead of the internal secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "GOSPELIB_INTERNAL_SECRET is not set: the whole platform runs the router, which derives every \
     subgraph's caller key from it; GOSPELIB_CALLER_KEYS is for a process serving subgraphs \
     alone (`serve --only NAME`)"
)]
pub struct NoRouterSecret;

/// Stripe's settings: secrets, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeSettings {
    /// `GOSPELIB_STRIPE_WEBHOOK_SECRET` (`whsec_…`).
    pub webhook_secret: Option<String>,
    /// `GOSPELIB_STRIPE_API_KEY` (`sk_…` or a restricted `rk_…` key).
    pub api_key: Option<String>,
    /// `GOSPELIB_STRIPE_API_BASE`: `https://api.stripe.com` unless a test points elsewhere.
    pub api_base: url::Url,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("api_base", &self.api_base.as_str())
            .finish()
    }
}

impl StripeSettings {
    pub(crate) fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let secret = |reader: &mut ConfigReader<'_>, name: &str, expected: &str| {
            reader
                .raw(name)
                .is_some()
                .then(|| reader.required_secret(name, expected))
                .flatten()
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let webhook_secret = secret(
            reader,
            "GOSPELIB_STRIPE_WEBHOOK_SECRET",
            "the webhook endpoint's signing secret from Stripe (`whsec_…`)",
        );
        let api_key = secret(
            reader,
            "GOSPELIB_STRIPE_API_KEY",
            "a Stripe secret or restricted key (`sk_…`, `rk_…`)",
        );
        let api_base = reader.optional(
            "GOSPELIB_STRIPE_API_BASE",
            "Stripe's API base URL, e.g. https://api.stripe.com",
            url::Url::parse("https://api.stripe.com").expect("a valid URL"),
            |raw| gospelib_kit::config::parse_url(raw, &["http", "https"]),
        )?;
        Some(Self {
            webhook_secret,
            api_key,
            api_base,
        })
    }
}

/// Where `gospelib serve` takes the supergraph it routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupergraphSource {
    /// Composed from the parts this binary holds, at start-up.
    Code,
    /// The registry's latest published version (in PostgreSQL), followed as new ones appear.
    Registry,
}

/// Settings of `gospelib migrate`: only the database.
#[derive(Debug, Clone)]
pub struct MigrateSettings {
    pub postgres: url::Url,
}

impl MigrateSettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let postgres = reader.required_url(
            "GOSPELIB_PG_URL",
            "postgres://gospelib@127.0.0.1:25432/gospelib",
            &["postgres", "postgresql"],
        );
        reader.finish()?;
        Ok(Self {
            postgres: postgres.expect("present once finish() succeeded"),
        })
    }
}

/// Settings of `gospelib ingest`.
pub struct IngestSettings {
    /// The graph, the cache and search (`GOSPELIB_TYPESENSE_URL`).
    pub stores: ContentStoreUrls,
    /// `GOSPELIB_TYPESENSE_URLS`: the nodes of a Typesense cluster, when it writes to one (it
    /// then writes through the node leading it, not `GOSPELIB_TYPESENSE_URL`); empty: one
    /// node.
    pub typesense_nodes: Vec<url::Url>,
}

/// Reads the settings of `gospelib ingest`.
pub fn read_ingest_settings(env: &Env) -> Result<IngestSettings, ConfigError> {
    let mut reader = ConfigReader::new(env);
    let stores = ContentStoreUrls::read(&mut reader);
    let typesense_nodes = gospelib_content::settings::read_typesense_urls(&mut reader);
    reader.finish()?;
    let missing = "present once finish() succeeded";
    Ok(IngestSettings {
        stores: stores.expect(missing),
        typesense_nodes: typesense_nodes.expect(missing),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> Vec<(&'static str, &'static str)> {
        vec![
            ("GOSPELIB_PG_URL", "postgres://g@127.0.0.1:1/g"),
            ("GOSPELIB_REDIS_URL", "redis://127.0.0.1:2"),
            ("GOSPELIB_FALKORDB_URL", "falkor://127.0.0.1:3"),
            ("GOSPELIB_TYPESENSE_URL", "http://127.0.0.1:4"),
            ("GOSPELIB_TYPESENSE_API_KEY", "k"),
            (
                "GOSPELIB_INTERNAL_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
        ]
    }

    #[test]
    fn defaults_listen_on_loopback_4000() {
        let settings = ServeSettings::read(&Env::from_pairs(stores())).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(settings.internal_listen, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(settings.supergraph_source, SupergraphSource::Code);
        assert_eq!(settings.router, RouterSettings::default());
        assert_eq!(settings.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(settings.edge, EdgeSettings::default());
        assert!(!settings.migrate_on_start);
    }

    #[test]
    fn the_port_variable_moves_the_listener_and_listen_overrides_it() {
        let mut pairs = stores();
        pairs.push(("GOSPELIB_ROUTER_PORT", "4100"));
        let settings = ServeSettings::read(&Env::from_pairs(pairs.clone())).unwrap();
        assert_eq!(settings.listen.port(), 4100);
        pairs.push(("GOSPELIB_ROUTER_LISTEN", "0.0.0.0:8080"));
        let settings = ServeSettings::read(&Env::from_pairs(pairs.clone())).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(settings.internal_listen, "127.0.0.1:8081".parse().unwrap());
        // Any public port: any internal one too (never port 1).
        pairs.push(("GOSPELIB_ROUTER_LISTEN", "127.0.0.1:0"));
        let settings = ServeSettings::read(&Env::from_pairs(pairs)).unwrap();
        assert_eq!(settings.internal_listen, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn the_last_port_needs_the_internal_listener_named() {
        let mut pairs = stores();
        pairs.push(("GOSPELIB_ROUTER_PORT", "65535"));
        let error = ServeSettings::read(&Env::from_pairs(pairs.clone())).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        let line = error.problems[0].to_string();
        assert!(line.starts_with("GOSPELIB_INTERNAL_LISTEN"), "{line}");
        assert!(line.contains("65535"), "{line}");
        pairs.push(("GOSPELIB_INTERNAL_LISTEN", "127.0.0.1:4001"));
        let settings = ServeSettings::read(&Env::from_pairs(pairs)).unwrap();
        assert_eq!(settings.internal_listen.port(), 4001);
    }

    #[test]
    fn each_bad_launcher_variable_is_named() {
        for (name, value, expected) in [
            ("GOSPELIB_ROUTER_PORT", "http", "a TCP port number"),
            ("GOSPELIB_ROUTER_LISTEN", "4000", "an IP address and port"),
            ("GOSPELIB_MAX_BODY_BYTES", "12", "a whole number from 1024"),
            (
                "GOSPELIB_SHUTDOWN_GRACE_SECS",
                "-1",
                "a whole number from 0 to 600",
            ),
            ("GOSPELIB_MIGRATE_ON_START", "sometimes", "true or false"),
            ("GOSPELIB_INTERNAL_LISTEN", "4001", "an IP address and port"),
            (
                "GOSPELIB_SUPERGRAPH_SOURCE",
                "file",
                "neither `code` nor `registry`",
            ),
            ("GOSPELIB_ROUTER_MAX_COST", "many", "a whole number"),
            ("GOSPELIB_ROUTER_DEDUPE", "perhaps", "true or false"),
            ("GOSPELIB_INTERNAL_SECRET", "short", "at least 32 bytes"),
            (
                "GOSPELIB_CLERK_WEBHOOK_SECRET",
                "whsec_!!!",
                "not a Svix signing secret",
            ),
            ("GOSPELIB_AUTH_JWKS_URL", "ftp://x", "a URL"),
            ("GOSPELIB_CORS_ORIGINS", "app.gospelib.com", "not a URL"),
            ("GOSPELIB_ROUTER_CSRF", "sometimes", "`on` or `off`"),
            (
                "GOSPELIB_ROUTER_MAX_BATCH",
                "lots",
                "a whole number from 0 to 1000, or `off`",
            ),
        ] {
            let mut pairs = stores();
            pairs.push((name, value));
            let error = ServeSettings::read(&Env::from_pairs(pairs)).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{error}");
            let line = error.problems[0].to_string();
            assert!(
                line.starts_with(&format!("{name} has a bad value")),
                "{line}"
            );
            assert!(line.contains(expected), "{line}");
        }
    }

    #[test]
    fn any_origin_with_credentials_stops_the_start_up() {
        let mut pairs = stores();
        pairs.push(("GOSPELIB_CORS_ORIGINS", "*"));
        pairs.push(("GOSPELIB_CORS_ALLOW_CREDENTIALS", "true"));
        let error = ServeSettings::read(&Env::from_pairs(pairs)).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert_eq!(
            error.problems[0].variable,
            "GOSPELIB_CORS_ALLOW_CREDENTIALS"
        );
        assert!(
            error
                .to_string()
                .contains("while GOSPELIB_CORS_ORIGINS is `*`"),
            "{error}"
        );
    }

    #[test]
    fn migrate_needs_only_the_database() {
        let error = MigrateSettings::read(&Env::default()).unwrap_err();
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].variable, "GOSPELIB_PG_URL");
        MigrateSettings::read(&Env::from_pairs([("GOSPELIB_PG_URL", "postgres://x@h/d")])).unwrap();
    }
}

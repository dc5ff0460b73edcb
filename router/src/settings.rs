//! The router's own settings (`GOSPELIB_ROUTER_*`), read once and applied by both binaries
//! that run a router (`gospelib-router`, and `gospelib serve` in one process), so every
//! documented setting means the same in each.

use std::collections::BTreeMap;
use std::time::Duration;

use gospelib_kit::config::ConfigReader;

use crate::limits::Limits;

/// How the router treats requests: limits, deadlines, sharing, introspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    /// `GOSPELIB_ROUTER_MAX_DEPTH`, `_MAX_ALIASES`, `_MAX_ROOT_FIELDS`, `_MAX_TOKENS`,
    /// `_MAX_COST`.
    pub limits: Limits,
    /// `GOSPELIB_ROUTER_COST_FILE`: the sizes the cost gives lists no argument sizes
    /// (`config/cost.toml` when unset).
    pub list_sizes: std::sync::Arc<crate::limits::ListSizes>,
    /// `GOSPELIB_ROUTER_INTROSPECTION`: answer `__schema`/`__type`.
    pub introspection: bool,
    /// `GOSPELIB_ROUTER_DEDUPE`: identical subgraph fetches in flight are sent once.
    pub dedupe: bool,
    /// `GOSPELIB_ROUTER_INBOUND_DEDUPE`: identical client operations in flight (same document,
    /// variables and caller) are run once and answered to all.
    pub inbound_dedupe: bool,
    /// `GOSPELIB_ROUTER_MAX_SUBSCRIPTIONS_PER_CALLER`: open subscriptions one caller (user,
    /// partner, or anonymous address) may hold on one router.
    pub max_subscriptions_per_caller: usize,
    /// `GOSPELIB_ROUTER_MAX_SUBSCRIPTIONS`: open subscriptions one router holds, all callers
    /// together (each holds a socket to its subgraph).
    pub max_subscriptions: usize,
    /// `GOSPELIB_ROUTER_SUBGRAPH_TIMEOUT_MS`: one subgraph fetch, any transport.
    pub subgraph_timeout: Duration,
    /// `GOSPELIB_ROUTER_REQUEST_TIMEOUT_MS`: a whole request, every fetch included.
    pub request_timeout: Duration,
    /// `GOSPELIB_ROUTER_PLANNING_TIMEOUT_MS`: planning one operation.
    pub planning_timeout: Duration,
    /// `GOSPELIB_ROUTER_PLANNING_BUDGET_MS`: the planning time one caller (user, partner, or
    /// anonymous address) may use per minute on one router; `0` (`None`): unbounded. See
    /// [`crate::planning_budget`].
    pub planning_budget: Option<Duration>,
    /// `GOSPELIB_ROUTER_MAX_SUBGRAPH_RESPONSE_BYTES`: the largest subgraph answer read.
    pub max_subgraph_response_bytes: usize,
    /// `GOSPELIB_ROUTER_SUBGRAPH_URLS`: `name=url` pairs replacing the supergraph's URLs. A
    /// subgraph run as several instances has their URLs joined by `|` (`http://a|http://b`):
    /// the HTTP transport spreads fetches over them and retries idempotent ones on another
    /// instance when one refuses (see [`crate::transport::Http`]).
    pub subgraph_urls: BTreeMap<String, String>,
    /// `GOSPELIB_ROUTER_USAGE_FLUSH_MS`: how often operation usage is written to Redis.
    pub usage_flush_every: Duration,
    /// `GOSPELIB_ROUTER_POLL_MS`: how often the registry is asked for a new supergraph.
    pub registry_poll_every: Duration,
    /// `GOSPELIB_ROUTER_TRUST_FORWARDED_FOR`: the router is behind a proxy that sets
    /// `x-forwarded-for`, whose last address is then the client's (anonymous rate limits).
    pub trust_forwarded_for: bool,
    /// `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS`: `off`, `log` or `enforce` (app callers may only
    /// send the apps' registered operations; partners are never held to them).
    pub trusted_documents: crate::trusted_documents::Mode,
    /// `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE`: the manifest (JSON, as the registry serves
    /// it) instead of the one the supergraph's source gives.
    pub trusted_documents_file: Option<std::path::PathBuf>,
    /// `GOSPELIB_ROUTER_ENTITY_CACHE`: keep the entities the cache policy allows in Redis.
    pub entity_cache: bool,
    /// `GOSPELIB_ROUTER_CACHE_FILE`: what may be cached (`config/cache.toml` when unset).
    pub cache_policy: std::sync::Arc<crate::entity_cache::CachePolicy>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            list_sizes: std::sync::Arc::new(crate::limits::ListSizes::built_in()),
            introspection: true,
            dedupe: true,
            inbound_dedupe: true,
            max_subscriptions_per_caller: 50,
            max_subscriptions: 10_000,
            subgraph_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            planning_timeout: crate::planning::DEFAULT_PLANNING_TIMEOUT,
            planning_budget: Some(crate::planning_budget::DEFAULT_PLANNING_BUDGET),
            max_subgraph_response_bytes: crate::transport::DEFAULT_MAX_RESPONSE_BYTES,
            subgraph_urls: BTreeMap::new(),
            usage_flush_every: Duration::from_secs(10),
            registry_poll_every: Duration::from_secs(10),
            trust_forwarded_for: false,
            trusted_documents: crate::trusted_documents::Mode::default(),
            trusted_documents_file: None,
            entity_cache: true,
            cache_policy: std::sync::Arc::new(crate::entity_cache::CachePolicy::built_in()),
        }
    }
}

impl RouterSettings {
    /// Reads every router setting; `None` when one is bad (the reader holds the problems and
    /// reports them at `finish()`).
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let defaults = Self::default();
        let millis = |d: Duration| d.as_millis() as u64;
        let subgraph_timeout = reader.number(
            "GOSPELIB_ROUTER_SUBGRAPH_TIMEOUT_MS",
            millis(defaults.subgraph_timeout),
            1,
            600_000,
        );
        let request_timeout = reader.number(
            "GOSPELIB_ROUTER_REQUEST_TIMEOUT_MS",
            millis(defaults.request_timeout),
            1,
            600_000,
        );
        let planning_timeout = reader.number(
            "GOSPELIB_ROUTER_PLANNING_TIMEOUT_MS",
            millis(defaults.planning_timeout),
            1,
            600_000,
        );
        let planning_budget = reader.number(
            "GOSPELIB_ROUTER_PLANNING_BUDGET_MS",
            defaults.planning_budget.map_or(0, millis),
            0,
            3_600_000,
        );
        let max_response = reader.number(
            "GOSPELIB_ROUTER_MAX_SUBGRAPH_RESPONSE_BYTES",
            defaults.max_subgraph_response_bytes as u64,
            1024,
            1 << 30,
        );
        let subgraph_urls = reader.optional(
            "GOSPELIB_ROUTER_SUBGRAPH_URLS",
            "comma-separated name=url pairs, several instances of one subgraph joined by `|`, e.g. \
             content=http://content-a:4001/graphql|http://content-b:4001/graphql,\
             accounts=http://accounts:4001/graphql",
            BTreeMap::new(),
            parse_subgraph_urls,
        );
        let usage_flush = reader.number(
            "GOSPELIB_ROUTER_USAGE_FLUSH_MS",
            millis(defaults.usage_flush_every),
            50,
            3_600_000,
        );
        let poll = reader.number(
            "GOSPELIB_ROUTER_POLL_MS",
            millis(defaults.registry_poll_every),
            100,
            3_600_000,
        );
        let limits = defaults.limits;
        let max_depth = reader.number(
            "GOSPELIB_ROUTER_MAX_DEPTH",
            limits.max_depth as u64,
            1,
            1_000,
        );
        let max_aliases = reader.number(
            "GOSPELIB_ROUTER_MAX_ALIASES",
            limits.max_aliases as u64,
            0,
            10_000,
        );
        let max_root_fields = reader.number(
            "GOSPELIB_ROUTER_MAX_ROOT_FIELDS",
            limits.max_root_fields as u64,
            1,
            10_000,
        );
        let max_tokens = reader.number(
            "GOSPELIB_ROUTER_MAX_TOKENS",
            limits.max_tokens as u64,
            10,
            1_000_000,
        );
        let max_cost = reader.number("GOSPELIB_ROUTER_MAX_COST", limits.max_cost, 1, u64::MAX / 2);
        let introspection = reader.flag("GOSPELIB_ROUTER_INTROSPECTION", true);
        let dedupe = reader.flag("GOSPELIB_ROUTER_DEDUPE", true);
        let inbound_dedupe = reader.flag("GOSPELIB_ROUTER_INBOUND_DEDUPE", true);
        let max_subscriptions = reader.number(
            "GOSPELIB_ROUTER_MAX_SUBSCRIPTIONS_PER_CALLER",
            defaults.max_subscriptions_per_caller as u64,
            1,
            100_000,
        );
        let max_subscriptions_in_all = reader.number(
            "GOSPELIB_ROUTER_MAX_SUBSCRIPTIONS",
            defaults.max_subscriptions as u64,
            1,
            1_000_000,
        );
        let trust_forwarded_for = reader.flag("GOSPELIB_ROUTER_TRUST_FORWARDED_FOR", false);
        let trusted_documents = reader.optional(
            "GOSPELIB_ROUTER_TRUSTED_DOCUMENTS",
            "off, log or enforce",
            defaults.trusted_documents,
            crate::trusted_documents::Mode::parse,
        );
        let trusted_documents_file = reader
            .raw("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE")
            .map(str::trim)
            .filter(|path| !path.is_empty())
            .map(std::path::PathBuf::from);
        let entity_cache = reader.flag("GOSPELIB_ROUTER_ENTITY_CACHE", true);
        let cache_policy = file_setting(
            reader,
            "GOSPELIB_ROUTER_CACHE_FILE",
            "the path of a cache policy file like config/cache.toml",
            &defaults.cache_policy,
            crate::entity_cache::CachePolicy::parse,
        );
        let list_sizes = file_setting(
            reader,
            "GOSPELIB_ROUTER_COST_FILE",
            "the path of a cost file like config/cost.toml",
            &defaults.list_sizes,
            crate::limits::ListSizes::parse,
        );
        Some(Self {
            list_sizes: list_sizes?,
            entity_cache: entity_cache?,
            cache_policy: cache_policy?,
            limits: Limits {
                max_tokens: max_tokens? as usize,
                max_depth: max_depth? as usize,
                max_aliases: max_aliases? as usize,
                max_root_fields: max_root_fields? as usize,
                max_cost: max_cost?,
            },
            introspection: introspection?,
            dedupe: dedupe?,
            inbound_dedupe: inbound_dedupe?,
            max_subscriptions_per_caller: max_subscriptions? as usize,
            max_subscriptions: max_subscriptions_in_all? as usize,
            trust_forwarded_for: trust_forwarded_for?,
            trusted_documents: trusted_documents?,
            trusted_documents_file,
            subgraph_timeout: Duration::from_millis(subgraph_timeout?),
            request_timeout: Duration::from_millis(request_timeout?),
            planning_timeout: Duration::from_millis(planning_timeout?),
            planning_budget: Some(planning_budget?)
                .filter(|budget| *budget > 0)
                .map(Duration::from_millis),
            max_subgraph_response_bytes: max_response? as usize,
            subgraph_urls: subgraph_urls?,
            usage_flush_every: Duration::from_millis(usage_flush?),
            registry_poll_every: Duration::from_millis(poll?),
        })
    }
}

/// `content=http://a:4001/graphql|http://b:4001/graphql,accounts=http://c:4001/graphql` → name
/// → its URL, or its instances' URLs joined by [`INSTANCE_SEPARATOR`] (trimmed, in the order
/// given). Each URL must be http(s); a subgraph may be named once, an instance listed once.
pub fn parse_subgraph_urls(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut urls = BTreeMap::new();
    for pair in raw
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (name, list) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not name=url"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{pair}` names no subgraph before `=`"));
        }
        let mut instances: Vec<&str> = Vec::new();
        for url in list.split(INSTANCE_SEPARATOR).map(str::trim) {
            if url.is_empty() {
                return Err(format!(
                    "`{pair}`: an empty URL (instances are separated by a single `{INSTANCE_SEPARATOR}`)"
                ));
            }
            let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` ({name}): {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("`{url}` ({name}) is not an http(s) URL"));
            }
            if instances.contains(&url) {
                return Err(format!("`{url}` is listed twice for subgraph `{name}`"));
            }
            instances.push(url);
        }
        let joined = instances.join(&INSTANCE_SEPARATOR.to_string());
        if urls.insert(name.to_owned(), joined).is_some() {
            return Err(format!("subgraph `{name}` is named twice"));
        }
    }
    Ok(urls)
}

/// Separates the URLs of one subgraph's instances in `GOSPELIB_ROUTER_SUBGRAPH_URLS` (and in
/// the URL the router then hands its HTTP transport).
pub const INSTANCE_SEPARATOR: char = '|';

/// A setting naming a file that `parse` reads (`default` when unset); a file that cannot be
/// read or parsed is a problem of the setting.
fn file_setting<T, E: std::fmt::Display>(
    reader: &mut ConfigReader<'_>,
    name: &str,
    expected: &str,
    default: &std::sync::Arc<T>,
    parse: fn(&str) -> Result<T, E>,
) -> Option<std::sync::Arc<T>> {
    reader.optional(name, expected, default.clone(), |raw| {
        let text = std::fs::read_to_string(raw.trim()).map_err(|e| e.to_string())?;
        parse(&text)
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gospelib_kit::config::Env;

    fn read(pairs: &[(&str, &str)]) -> Result<RouterSettings, gospelib_kit::config::ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut reader = ConfigReader::new(&env);
        let settings = RouterSettings::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("present once finish() succeeded"))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        assert_eq!(read(&[]).unwrap(), RouterSettings::default());
    }

    #[test]
    fn every_setting_is_read() {
        let settings = read(&[
            ("GOSPELIB_ROUTER_MAX_COST", "77"),
            ("GOSPELIB_ROUTER_DEDUPE", "false"),
            ("GOSPELIB_ROUTER_PLANNING_TIMEOUT_MS", "5"),
            ("GOSPELIB_ROUTER_PLANNING_BUDGET_MS", "0"),
            ("GOSPELIB_ROUTER_REQUEST_TIMEOUT_MS", "6"),
            ("GOSPELIB_ROUTER_SUBGRAPH_TIMEOUT_MS", "7"),
            ("GOSPELIB_ROUTER_MAX_SUBGRAPH_RESPONSE_BYTES", "2048"),
            ("GOSPELIB_ROUTER_INTROSPECTION", "false"),
            ("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS", "enforce"),
            (
                "GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE",
                "/etc/trusted.json",
            ),
            (
                "GOSPELIB_ROUTER_SUBGRAPH_URLS",
                "content=http://c:1/graphql",
            ),
        ])
        .unwrap();
        assert_eq!(settings.limits.max_cost, 77);
        assert!(!settings.dedupe);
        assert!(!settings.introspection);
        assert_eq!(settings.planning_timeout, Duration::from_millis(5));
        assert_eq!(settings.planning_budget, None);
        assert_eq!(settings.request_timeout, Duration::from_millis(6));
        assert_eq!(settings.subgraph_timeout, Duration::from_millis(7));
        assert_eq!(settings.max_subgraph_response_bytes, 2048);
        assert_eq!(settings.subgraph_urls["content"], "http://c:1/graphql");
        assert_eq!(
            settings.trusted_documents,
            crate::trusted_documents::Mode::Enforce
        );
        assert_eq!(
            settings.trusted_documents_file.as_deref(),
            Some(std::path::Path::new("/etc/trusted.json"))
        );
    }

    #[test]
    fn several_instances_of_a_subgraph_are_joined_in_order() {
        let urls = parse_subgraph_urls(
            " content = http://a:1/graphql | http://b:2/graphql ,accounts=https://c/graphql,",
        )
        .unwrap();
        assert_eq!(urls["content"], "http://a:1/graphql|http://b:2/graphql");
        assert_eq!(urls["accounts"], "https://c/graphql");
        assert_eq!(urls.len(), 2);
        assert!(parse_subgraph_urls("").unwrap().is_empty());
    }

    #[test]
    fn malformed_instance_lists_are_refused_with_what_is_wrong() {
        for (raw, expected) in [
            ("content", "`content` is not name=url"),
            ("=http://a/graphql", "names no subgraph"),
            ("content=", "an empty URL"),
            ("content=http://a/graphql||http://b/graphql", "an empty URL"),
            ("content=http://a/graphql|", "an empty URL"),
            (
                "content=ftp://a/graphql",
                "`ftp://a/graphql` (content) is not an http(s) URL",
            ),
            ("content=http://a/graphql|nonsense", "`nonsense` (content)"),
            (
                "content=http://a/graphql|http://a/graphql",
                "`http://a/graphql` is listed twice for subgraph `content`",
            ),
            (
                "content=http://a/graphql,content=http://b/graphql",
                "subgraph `content` is named twice",
            ),
        ] {
            let error = parse_subgraph_urls(raw).unwrap_err();
            assert!(error.contains(expected), "{raw}: {error}");
        }
    }

    #[test]
    fn a_cost_file_is_read_and_a_bad_one_is_named_with_its_problem() {
        let dir = std::env::temp_dir().join(format!("gospelib-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[lists]\n\"Chapter.verses\" = 176\n").unwrap();
        let settings = read(&[("GOSPELIB_ROUTER_COST_FILE", good.to_str().unwrap())]).unwrap();
        assert_eq!(
            settings.list_sizes.of("Chapter", "verses"),
            Some(&crate::limits::ListSize::Assumed(176))
        );
        // Only what the file names: the built-in sizes are not merged in.
        assert_eq!(settings.list_sizes.of("Query", "books"), None);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[lists]\n\"Chapter.verses\" = 0\n").unwrap();
        let error = read(&[("GOSPELIB_ROUTER_COST_FILE", bad.to_str().unwrap())]).unwrap_err();
        assert_eq!(error.problems[0].variable, "GOSPELIB_ROUTER_COST_FILE");
        assert!(
            error
                .to_string()
                .contains("`Chapter.verses` in [lists] must be a number"),
            "{error}"
        );
        let missing = dir.join("missing.toml");
        let error = read(&[("GOSPELIB_ROUTER_COST_FILE", missing.to_str().unwrap())]).unwrap_err();
        assert_eq!(error.problems[0].variable, "GOSPELIB_ROUTER_COST_FILE");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let error = read(&[
            ("GOSPELIB_ROUTER_MAX_COST", "lots"),
            ("GOSPELIB_ROUTER_DEDUPE", "maybe"),
            ("GOSPELIB_ROUTER_SUBGRAPH_URLS", "content"),
        ])
        .unwrap_err();
        let names: Vec<_> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            names,
            [
                "GOSPELIB_ROUTER_SUBGRAPH_URLS",
                "GOSPELIB_ROUTER_MAX_COST",
                "GOSPELIB_ROUTER_DEDUPE"
            ]
        );
    }
}

/// Who may call, and how the caller reaches subgraphs: read by both binaries that run a
/// router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// `GOSPELIB_INTERNAL_SECRET`: each subgraph's caller key is derived from it.
    pub secret: gospelib_kit::caller::InternalSecret,
    /// `GOSPELIB_AUTH_JWKS_URL`, `GOSPELIB_AUTH_ISSUER` and `GOSPELIB_AUTH_AUDIENCE` (all
    /// three, or none: then session tokens are refused). A token's `aud` or `azp` is always
    /// checked: a token Clerk issued to another application is never accepted.
    pub sessions: Option<crate::jwt::JwtSettings>,
}

impl IdentitySettings {
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let secret = reader.internal_secret();
        let sessions = Self::read_sessions(reader);
        Some(Self {
            secret: secret?,
            sessions,
        })
    }

    /// The session token settings alone: `None` when session tokens are not accepted, or when
    /// a value is bad (a problem recorded in `reader`).
    pub fn read_sessions(reader: &mut ConfigReader<'_>) -> Option<crate::jwt::JwtSettings> {
        let jwks_url = reader
            .raw("GOSPELIB_AUTH_JWKS_URL")
            .is_some()
            .then(|| {
                reader.required_url(
                    "GOSPELIB_AUTH_JWKS_URL",
                    "https://clerk.example.com/.well-known/jwks.json",
                    &["http", "https"],
                )
            })
            .flatten();
        let issuer = reader
            .raw("GOSPELIB_AUTH_ISSUER")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        // Without an audience, any token the issuer signed would do, whichever application
        // it was issued to: required whenever session tokens are accepted.
        let audience = jwks_url
            .is_some()
            .then(|| {
                reader.required(
                    "GOSPELIB_AUTH_AUDIENCE",
                    "the audiences session tokens must be issued to, comma-separated: each \
                     frontend origin Clerk puts in `azp` (or a value of `aud`), e.g. \
                     https://app.example.com; required because GOSPELIB_AUTH_JWKS_URL is set",
                    gospelib_kit::config::Visibility::Plain,
                    |raw| {
                        let audiences: Vec<String> = raw
                            .split(',')
                            .map(str::trim)
                            .filter(|one| !one.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if audiences.is_empty() {
                            Err("names no audience".to_owned())
                        } else {
                            Ok(audiences)
                        }
                    },
                )
            })
            .flatten();
        let accept_native_tokens = reader.flag("GOSPELIB_AUTH_ACCEPT_NATIVE_TOKENS", false);
        let live_grace = reader.number(
            "GOSPELIB_AUTH_LIVE_GRACE_SECS",
            crate::jwt::DEFAULT_LIVE_GRACE.as_secs(),
            0,
            7 * 86_400,
        );
        match (jwks_url, issuer) {
            (Some(url), Some(issuer)) => audience.map(|audiences| crate::jwt::JwtSettings {
                live_grace: Duration::from_secs(live_grace.unwrap_or_default()),
                audiences,
                accept_native_tokens: accept_native_tokens.unwrap_or_default(),
                ..crate::jwt::JwtSettings::new(url.to_string(), issuer, None)
            }),
            (None, None) => None,
            (Some(_), None) => {
                reader.reject(
                    "GOSPELIB_AUTH_ISSUER",
                    "the issuer session tokens must name, e.g. https://clerk.example.com",
                    "GOSPELIB_AUTH_JWKS_URL is set, so the issuer is needed too",
                );
                None
            }
            (None, Some(_)) => {
                reader.reject(
                    "GOSPELIB_AUTH_JWKS_URL",
                    "the issuer's JWKS URL",
                    "GOSPELIB_AUTH_ISSUER is set, so the JWKS URL is needed too",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use gospelib_kit::config::{ConfigError, Env};

    const SECRET: &str = "a test secret of at least thirty-two bytes";
    const JWKS: &str = "https://clerk.example.com/.well-known/jwks.json";
    const ISSUER: &str = "https://clerk.example.com";

    fn read(pairs: &[(&str, &str)]) -> Result<IdentitySettings, ConfigError> {
        let mut all = vec![("GOSPELIB_INTERNAL_SECRET", SECRET)];
        all.extend_from_slice(pairs);
        let env = Env::from_pairs(all);
        let mut reader = ConfigReader::new(&env);
        let settings = IdentitySettings::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("present once finish() succeeded"))
    }

    #[test]
    fn without_a_jwks_url_session_tokens_are_off() {
        assert_eq!(read(&[]).unwrap().sessions, None);
    }

    #[test]
    fn session_tokens_need_an_audience() {
        let settings = read(&[
            ("GOSPELIB_AUTH_JWKS_URL", JWKS),
            ("GOSPELIB_AUTH_ISSUER", ISSUER),
            ("GOSPELIB_AUTH_AUDIENCE", " https://app.example.com "),
        ])
        .unwrap();
        let sessions = settings.sessions.expect("session tokens accepted");
        assert_eq!(sessions.audiences, ["https://app.example.com"]);
        assert!(!sessions.accept_native_tokens);
        let settings = read(&[
            ("GOSPELIB_AUTH_JWKS_URL", JWKS),
            ("GOSPELIB_AUTH_ISSUER", ISSUER),
            (
                "GOSPELIB_AUTH_AUDIENCE",
                "https://app.example.com, https://www.example.com,",
            ),
            ("GOSPELIB_AUTH_ACCEPT_NATIVE_TOKENS", "true"),
        ])
        .unwrap();
        let sessions = settings.sessions.expect("session tokens accepted");
        assert_eq!(
            sessions.audiences,
            ["https://app.example.com", "https://www.example.com"]
        );
        assert!(sessions.accept_native_tokens);
        for audience in [None, Some(""), Some("  ")] {
            let mut pairs = vec![
                ("GOSPELIB_AUTH_JWKS_URL", JWKS),
                ("GOSPELIB_AUTH_ISSUER", ISSUER),
            ];
            pairs.extend(audience.map(|value| ("GOSPELIB_AUTH_AUDIENCE", value)));
            let error = read(&pairs).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{error}");
            let message = error.problems[0].to_string();
            assert!(
                message.starts_with("GOSPELIB_AUTH_AUDIENCE is not set")
                    && message.contains("required because GOSPELIB_AUTH_JWKS_URL is set"),
                "{message}"
            );
        }
        // Missing beside the issuer: both are named at once.
        let error = read(&[("GOSPELIB_AUTH_JWKS_URL", JWKS)]).unwrap_err();
        let names: Vec<_> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(names, ["GOSPELIB_AUTH_AUDIENCE", "GOSPELIB_AUTH_ISSUER"]);
    }

    #[test]
    fn live_connections_outlive_their_token_by_the_grace() {
        let sessions = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![
                ("GOSPELIB_AUTH_JWKS_URL", JWKS),
                ("GOSPELIB_AUTH_ISSUER", ISSUER),
                ("GOSPELIB_AUTH_AUDIENCE", "https://app.example.com"),
            ];
            all.extend_from_slice(pairs);
            read(&all)
        };
        let default = sessions(&[]).unwrap().sessions.unwrap();
        assert_eq!(default.live_grace, crate::jwt::DEFAULT_LIVE_GRACE);
        let none = sessions(&[("GOSPELIB_AUTH_LIVE_GRACE_SECS", "0")]).unwrap();
        assert_eq!(none.sessions.unwrap().live_grace, Duration::ZERO);
        let error = sessions(&[("GOSPELIB_AUTH_LIVE_GRACE_SECS", "a week")]).unwrap_err();
        assert_eq!(error.problems[0].variable, "GOSPELIB_AUTH_LIVE_GRACE_SECS");
    }
}

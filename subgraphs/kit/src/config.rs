//! Typed configuration read from `GOSPELIB_*` environment variables and validated at start-up.
//!
//! A [`ConfigReader`] reads from an [`Env`] snapshot (the process environment, or a map in tests),
//! collects *every* problem instead of stopping at the first, and [`ConfigReader::finish`] turns
//! them into one [`ConfigError`] whose lines each name the variable and the expected form.
//! Values of secret variables (URLs with credentials, API keys) are never echoed back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

/// A snapshot of environment variables.
///
/// It remembers every name a reader asked for (set or not), so `gospelib settings check` can
/// name the variables a deployment sets that nothing reads ([`Env::unconsulted`]). Clones share
/// that record.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    consulted: Arc<Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for Env {
    /// The names set, never their values (secrets among them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("set", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Env {
    /// The `GOSPELIB_*` variables of this process.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(key, _)| key.starts_with("GOSPELIB_"))
                .collect(),
            consulted: Arc::default(),
        }
    }

    /// An environment made of the given pairs (tests, tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            consulted: Arc::default(),
        }
    }

    /// `GOSPELIB_*` settings from a file under those of `self`: one `NAME=value` a line, `#`
    /// comments and blank lines ignored (the format of `.stack/run/env` without `export`).
    /// The process environment wins, so one variable can override the file.
    pub fn under_file(mut self, text: &str, file: &str) -> Result<Self, ConfigFileError> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err(ConfigFileError {
                    file: file.to_owned(),
                    line: index + 1,
                    reason: "expected NAME=value".to_owned(),
                });
            };
            let name = name.trim();
            if !name.starts_with("GOSPELIB_") {
                return Err(ConfigFileError {
                    file: file.to_owned(),
                    line: index + 1,
                    reason: format!("`{name}` is not a GOSPELIB_* setting"),
                });
            }
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            self.vars
                .entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
        Ok(self)
    }

    /// The raw value of a variable; an empty value counts as unset. The name is recorded as
    /// consulted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.consulted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned());
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Every name some reader asked for so far, set or not.
    pub fn consulted(&self) -> BTreeSet<String> {
        self.consulted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The variables this snapshot holds that no reader has asked for (yet): in a deployment's
    /// settings, names that mean nothing to the command (a typo, or a setting of another part).
    pub fn unconsulted(&self) -> Vec<String> {
        let consulted = self.consulted();
        self.vars
            .keys()
            .filter(|name| !consulted.contains(*name))
            .cloned()
            .collect()
    }
}

/// A configuration file line that is not a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {reason}")]
pub struct ConfigFileError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

/// Why one variable was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    /// The value did not parse; `shown` is the value, or `None` when the variable is secret.
    Malformed {
        shown: Option<String>,
        reason: String,
    },
}

/// One refused variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: String,
    pub expected: String,
    pub problem: Problem,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Missing => write!(
                f,
                "{} is not set: expected {}",
                self.variable, self.expected
            ),
            Problem::Malformed {
                shown: Some(value),
                reason,
            } => write!(
                f,
                "{} has a bad value {value:?} ({reason}): expected {}",
                self.variable, self.expected
            ),
            Problem::Malformed {
                shown: None,
                reason,
            } => write!(
                f,
                "{} has a bad value ({reason}; value hidden, it may hold a secret): expected {}",
                self.variable, self.expected
            ),
        }
    }
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Whether a variable's value may be shown in an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Plain,
    Secret,
}

/// Reads typed values, remembering every problem until [`ConfigReader::finish`].
pub struct ConfigReader<'a> {
    env: &'a Env,
    problems: Vec<ConfigProblem>,
}

impl<'a> ConfigReader<'a> {
    pub fn new(env: &'a Env) -> Self {
        Self {
            env,
            problems: Vec::new(),
        }
    }

    /// A required value parsed by `parse`; `None` (and a recorded problem) when absent or bad.
    pub fn required<T>(
        &mut self,
        name: &str,
        expected: &str,
        visibility: Visibility,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.env.get(name) {
            None => {
                self.record(name, expected, Problem::Missing);
                None
            }
            Some(raw) => self.parse_value(name, expected, visibility, raw, parse),
        }
    }

    /// An optional value parsed by `parse`, `default` when unset; `None` only when malformed.
    pub fn optional<T>(
        &mut self,
        name: &str,
        expected: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.env.get(name) {
            None => Some(default),
            Some(raw) => self.parse_value(name, expected, Visibility::Plain, raw, parse),
        }
    }

    /// A required URL whose scheme is one of `schemes`.
    pub fn required_url(&mut self, name: &str, example: &str, schemes: &[&str]) -> Option<Url> {
        let expected = format!("a URL such as {example}");
        self.required(name, &expected, Visibility::Secret, |raw| {
            parse_url(raw, schemes)
        })
    }

    /// A required non-empty secret string (API keys, signing keys).
    pub fn required_secret(&mut self, name: &str, expected: &str) -> Option<String> {
        self.required(name, expected, Visibility::Secret, |raw| Ok(raw.to_owned()))
    }

    /// `GOSPELIB_INTERNAL_SECRET`: what the router derives each subgraph's caller key from (at
    /// least 32 bytes; the same in every process that runs a router or holds every key).
    pub fn internal_secret(&mut self) -> Option<crate::caller::InternalSecret> {
        self.required(
            "GOSPELIB_INTERNAL_SECRET",
            "a random secret of at least 32 characters, the same in every process that \
             runs a router (e.g. `openssl rand -hex 32`)",
            Visibility::Secret,
            |raw| {
                crate::caller::InternalSecret::new(raw.trim().as_bytes()).map_err(|e| e.to_string())
            },
        )
    }

    /// The caller keys of the subgraphs this process serves (see [`crate::caller`]): all of
    /// them, derived from `GOSPELIB_INTERNAL_SECRET`, or only those `GOSPELIB_CALLER_KEYS`
    /// gives (`NAME=KEY,…`, from `gospelib caller-keys`) to a process that serves subgraphs
    /// alone, which then never holds the secret. One of the two, not both.
    pub fn caller_keys(&mut self) -> Option<crate::caller::CallerKeys> {
        const KEYS: &str = "GOSPELIB_CALLER_KEYS";
        const EXPECTED: &str = "the keys of the subgraphs this process serves, `NAME=KEY,…` as \
             `gospelib caller-keys NAME…` prints them from the internal secret";
        if self.env.get(KEYS).is_none() {
            if self.env.get("GOSPELIB_INTERNAL_SECRET").is_none() {
                self.record(
                    "GOSPELIB_INTERNAL_SECRET",
                    "the platform's internal secret (at least 32 characters), or, in a process \
                     that serves subgraphs alone, GOSPELIB_CALLER_KEYS",
                    Problem::Missing,
                );
                return None;
            }
            return self
                .internal_secret()
                .map(crate::caller::CallerKeys::Derived);
        }
        if self.env.get("GOSPELIB_INTERNAL_SECRET").is_some() {
            self.record(
                KEYS,
                EXPECTED,
                Problem::Malformed {
                    shown: None,
                    reason: "GOSPELIB_INTERNAL_SECRET is set too: a process holding the secret \
                             derives every key, so set only one of them"
                        .to_owned(),
                },
            );
            return None;
        }
        self.required(
            KEYS,
            EXPECTED,
            Visibility::Secret,
            crate::caller::CallerKeys::parse,
        )
    }

    /// `GOSPELIB_CALLER_KEYS_PREVIOUS`: while the internal secret is rotated, the keys derived
    /// from the one before it (`NAME=KEY,…`, `gospelib caller-keys` run with the old secret),
    /// which this process's subgraphs still accept, so the routers may switch one by one
    /// without a refused request. Empty (none accepted) when unset.
    pub fn previous_caller_keys(&mut self) -> Option<crate::caller::CallerKeys> {
        const PREVIOUS: &str = "GOSPELIB_CALLER_KEYS_PREVIOUS";
        if self.env.get(PREVIOUS).is_none() {
            return Some(crate::caller::CallerKeys::Given(Default::default()));
        }
        // Keys: never shown, as `optional` would show a value it cannot read.
        self.required(
            PREVIOUS,
            "while the internal secret is rotated, the keys derived from the previous secret, \
             `NAME=KEY,…` as `gospelib caller-keys NAME…` prints them",
            Visibility::Secret,
            crate::caller::CallerKeys::parse,
        )
    }

    /// `GOSPELIB_PLANS_FILE`: the plan catalogue (see [`crate::plans`]); the one the binary
    /// was built with (`config/plans.toml`) when unset.
    pub fn plans(&mut self) -> Option<std::sync::Arc<crate::plans::Plans>> {
        let catalogue = self.optional(
            "GOSPELIB_PLANS_FILE",
            "the path of a plans file like config/plans.toml",
            None,
            |raw| {
                crate::plans::Plans::from_file(std::path::Path::new(raw.trim()))
                    .map(Some)
                    .map_err(|e| e.to_string())
            },
        )?;
        Some(std::sync::Arc::new(
            catalogue.unwrap_or_else(crate::plans::Plans::built_in),
        ))
    }

    /// An optional TCP port, `default` when unset.
    pub fn port(&mut self, name: &str, default: u16) -> Option<u16> {
        self.optional(
            name,
            "a TCP port number between 1 and 65535",
            default,
            parse_port,
        )
    }

    /// An optional socket address (`127.0.0.1:4000`), `default` when unset.
    pub fn socket_addr(&mut self, name: &str, default: SocketAddr) -> Option<SocketAddr> {
        self.optional(
            name,
            "an IP address and port such as 127.0.0.1:4000",
            default,
            |raw| SocketAddr::from_str(raw).map_err(|e| e.to_string()),
        )
    }

    /// An optional boolean (`true`/`false`/`1`/`0`), `default` when unset.
    pub fn flag(&mut self, name: &str, default: bool) -> Option<bool> {
        self.optional(name, "true or false", default, |raw| {
            match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("not a boolean".to_owned()),
            }
        })
    }

    /// An optional whole number in `min..=max`, `default` when unset.
    pub fn number(&mut self, name: &str, default: u64, min: u64, max: u64) -> Option<u64> {
        let expected = format!("a whole number from {min} to {max}");
        self.optional(name, &expected, default, |raw| {
            let value: u64 = raw
                .trim()
                .parse()
                .map_err(|_| "not a whole number".to_owned())?;
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err("out of range".to_owned())
            }
        })
    }

    /// Records that `name`, optional otherwise, must be set: the caller's own cross-field
    /// checks found its default unusable (`expected` says why).
    pub fn require(&mut self, name: &str, expected: &str) {
        self.record(name, expected, Problem::Missing);
    }

    /// Records a problem found by the caller's own cross-field checks.
    pub fn reject(&mut self, name: &str, expected: &str, reason: &str) {
        self.record(
            name,
            expected,
            Problem::Malformed {
                shown: self.env.get(name).map(str::to_owned),
                reason: reason.to_owned(),
            },
        );
    }

    /// The raw value of a variable, for cross-field checks.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.env.get(name)
    }

    /// `Ok` when every value was good, otherwise all the problems.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    fn parse_value<T>(
        &mut self,
        name: &str,
        expected: &str,
        visibility: Visibility,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(raw.trim()) {
            Ok(value) => Some(value),
            Err(reason) => {
                let shown = (visibility == Visibility::Plain).then(|| raw.to_owned());
                self.record(name, expected, Problem::Malformed { shown, reason });
                None
            }
        }
    }

    fn record(&mut self, name: &str, expected: &str, problem: Problem) {
        self.problems.push(ConfigProblem {
            variable: name.to_owned(),
            expected: expected.to_owned(),
            problem,
        });
    }
}

fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed".to_owned()),
        Ok(port) => Ok(port),
        Err(_) => Err("not a port number".to_owned()),
    }
}

/// A URL whose scheme is one of `schemes`, or why not.
pub fn parse_url(raw: &str, schemes: &[&str]) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "scheme {:?} is not one of {}",
            url.scheme(),
            schemes.join(", ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(url)
}

/// A secret read from configuration: kept as given, shown as `<hidden>` by `Debug`, so a
/// settings value printed whole (a log line, a failed assertion) never carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Where the shared stores are: the variables every service may read.
#[derive(Clone)]
pub struct StoreUrls {
    /// `GOSPELIB_PG_URL`
    pub postgres: Url,
    /// `GOSPELIB_PG_MAX_CONNECTIONS`: the PostgreSQL connections one process may hold, shared
    /// by the subgraphs it serves.
    pub postgres_max_connections: u32,
    /// `GOSPELIB_REDIS_URL`: the cache, rate limits and streams.
    pub redis: Url,
    /// `GOSPELIB_FALKORDB_URL`: the graph server (a separate instance from the cache).
    pub falkordb: Url,
    /// `GOSPELIB_FALKORDB_TIMEOUT_MS`: the deadline of one FalkorDB read, and of connecting.
    pub falkordb_timeout: Duration,
    /// `GOSPELIB_TYPESENSE_URL`
    pub typesense: Url,
    /// `GOSPELIB_TYPESENSE_API_KEY`
    pub typesense_api_key: String,
}

impl std::fmt::Debug for StoreUrls {
    /// Without the PostgreSQL password or the Typesense key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrls")
            .field("postgres", &redacted(&self.postgres))
            .field("postgres_max_connections", &self.postgres_max_connections)
            .field("redis", &redacted(&self.redis))
            .field("falkordb", &redacted(&self.falkordb))
            .field("falkordb_timeout", &self.falkordb_timeout)
            .field("typesense", &self.typesense.as_str())
            .field("typesense_api_key", &"<hidden>")
            .finish()
    }
}

impl std::fmt::Debug for ContentStoreUrls {
    /// Without the stores' passwords or the Typesense key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStoreUrls")
            .field("redis", &redacted(&self.redis))
            .field("falkordb", &redacted(&self.falkordb))
            .field("falkordb_timeout", &self.falkordb_timeout)
            .field("typesense", &self.typesense.as_str())
            .field("typesense_api_key", &"<hidden>")
            .finish()
    }
}

/// `url` without its password, for display.
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("<hidden>"));
    }
    url.to_string()
}

impl StoreUrls {
    /// Reads the store variables alone from `env`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let urls = Self::read(&mut reader);
        reader.finish()?;
        Ok(urls.expect("every value is present once finish() succeeded"))
    }

    /// Reads the store variables; problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let postgres = reader.required_url(
            "GOSPELIB_PG_URL",
            "postgres://gospelib@127.0.0.1:25432/gospelib",
            &["postgres", "postgresql"],
        );
        let postgres_max_connections = reader.number(
            "GOSPELIB_PG_MAX_CONNECTIONS",
            DEFAULT_PG_MAX_CONNECTIONS.into(),
            1,
            1000,
        );
        let content = ContentStoreUrls::read(reader)?;
        Some(Self {
            postgres: postgres?,
            postgres_max_connections: postgres_max_connections? as u32,
            redis: content.redis,
            falkordb: content.falkordb,
            falkordb_timeout: content.falkordb_timeout,
            typesense: content.typesense,
            typesense_api_key: content.typesense_api_key,
        })
    }
}

/// The default of `GOSPELIB_PG_MAX_CONNECTIONS`.
pub const DEFAULT_PG_MAX_CONNECTIONS: u32 = 10;

/// The default of `GOSPELIB_FALKORDB_TIMEOUT_MS`.
pub const DEFAULT_FALKORDB_TIMEOUT_MS: u64 = 2000;

/// The stores of the content domain alone (the ingest job needs no PostgreSQL).
#[derive(Clone)]
pub struct ContentStoreUrls {
    pub redis: Url,
    pub falkordb: Url,
    /// How long a FalkorDB read (or connect) may take before its fields fail.
    pub falkordb_timeout: Duration,
    pub typesense: Url,
    pub typesense_api_key: String,
}

impl ContentStoreUrls {
    /// Reads `GOSPELIB_REDIS_URL`, `GOSPELIB_FALKORDB_URL`, `GOSPELIB_FALKORDB_TIMEOUT_MS`,
    /// `GOSPELIB_TYPESENSE_URL` and `GOSPELIB_TYPESENSE_API_KEY`; problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let redis = reader.required_url(
            "GOSPELIB_REDIS_URL",
            "redis://127.0.0.1:26379",
            &["redis", "rediss"],
        );
        let falkordb = reader.required_url(
            "GOSPELIB_FALKORDB_URL",
            "falkor://127.0.0.1:26380 or redis://127.0.0.1:26380",
            &["falkor", "falkors", "redis", "rediss"],
        );
        // Long enough for the heaviest page query on a loaded node, short enough that a
        // FalkorDB which stopped answering costs a request seconds, not the router's timeout.
        let falkordb_timeout_ms = reader.number(
            "GOSPELIB_FALKORDB_TIMEOUT_MS",
            DEFAULT_FALKORDB_TIMEOUT_MS,
            50,
            60_000,
        );
        let typesense = reader.required_url(
            "GOSPELIB_TYPESENSE_URL",
            "http://127.0.0.1:28108",
            &["http", "https"],
        );
        let typesense_api_key = reader.required_secret(
            "GOSPELIB_TYPESENSE_API_KEY",
            "the Typesense admin API key (any non-empty string the server was started with)",
        );
        Some(Self {
            redis: redis?,
            falkordb: falkordb?,
            falkordb_timeout: Duration::from_millis(falkordb_timeout_ms?),
            typesense: typesense?,
            typesense_api_key: typesense_api_key?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn caller_keys_come_from_the_secret_or_are_given_never_both() {
        use crate::caller::{CallerKeys, InternalSecret};
        const SECRET: &str = "a test secret of at least thirty-two bytes";
        let read = |pairs: &[(&str, &str)]| {
            let env = super::Env::from_pairs(pairs.iter().copied());
            let mut reader = super::ConfigReader::new(&env);
            let keys = reader.caller_keys();
            reader.finish().map(|()| keys.unwrap())
        };
        let master = InternalSecret::new(SECRET.as_bytes()).unwrap();
        assert_eq!(
            read(&[("GOSPELIB_INTERNAL_SECRET", SECRET)]).unwrap(),
            CallerKeys::Derived(master.clone())
        );
        let given = CallerKeys::render(&master, &["study"]);
        let keys = read(&[("GOSPELIB_CALLER_KEYS", &given)]).unwrap();
        assert_eq!(keys.get("study"), Some(master.caller_key("study")));
        assert_eq!(keys.get("billing"), None);

        let both = read(&[
            ("GOSPELIB_CALLER_KEYS", &given),
            ("GOSPELIB_INTERNAL_SECRET", SECRET),
        ])
        .unwrap_err()
        .to_string();
        assert!(both.contains("set only one of them"), "{both}");
        let neither = read(&[]).unwrap_err().to_string();
        assert!(
            neither.contains("GOSPELIB_INTERNAL_SECRET is not set")
                && neither.contains("GOSPELIB_CALLER_KEYS"),
            "{neither}"
        );
        let bad = format!("{given}0");
        let refused = read(&[("GOSPELIB_CALLER_KEYS", &bad)])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("64 hexadecimal digits"), "{refused}");
        assert!(!refused.contains(&given[6..]), "a key was shown: {refused}");
    }

    #[test]
    fn previous_caller_keys_are_optional_and_never_shown() {
        use crate::caller::{CallerKeys, InternalSecret};
        let read = |pairs: &[(&str, &str)]| {
            let env = super::Env::from_pairs(pairs.iter().copied());
            let mut reader = super::ConfigReader::new(&env);
            let keys = reader.previous_caller_keys();
            reader.finish().map(|()| keys.unwrap())
        };
        assert_eq!(read(&[]).unwrap().get("study"), None, "none when unset");
        let old = InternalSecret::new(&[3u8; 32]).unwrap();
        let given = CallerKeys::render(&old, &["study"]);
        let keys = read(&[("GOSPELIB_CALLER_KEYS_PREVIOUS", &given)]).unwrap();
        assert_eq!(keys.get("study"), Some(old.caller_key("study")));
        let bad = format!("{given}0");
        let refused = read(&[("GOSPELIB_CALLER_KEYS_PREVIOUS", &bad)])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("GOSPELIB_CALLER_KEYS_PREVIOUS"),
            "{refused}"
        );
        assert!(!refused.contains(&given[6..]), "a key was shown: {refused}");
    }

    #[test]
    fn store_urls_print_no_password_nor_key() {
        let urls = super::StoreUrls {
            postgres: "postgres://gospelib:pg-s3cret@db.internal:5432/gospelib"
                .parse()
                .unwrap(),
            postgres_max_connections: 10,
            redis: "redis://:redis-s3cret@cache.internal:6379".parse().unwrap(),
            falkordb: "redis://graph.internal:6379".parse().unwrap(),
            falkordb_timeout: std::time::Duration::from_secs(2),
            typesense: "http://search.internal:8108".parse().unwrap(),
            typesense_api_key: "ts-s3cret".to_owned(),
        };
        let shown = format!("{urls:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
        assert_eq!(
            format!("{:?}", super::SecretString::new("whsec_s3cret")),
            "<hidden>"
        );
        let content = super::ContentStoreUrls {
            redis: urls.redis.clone(),
            falkordb: "redis://:graph-s3cret@graph.internal:6379".parse().unwrap(),
            falkordb_timeout: urls.falkordb_timeout,
            typesense: urls.typesense.clone(),
            typesense_api_key: urls.typesense_api_key.clone(),
        };
        let shown = format!("{content:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("graph.internal"), "{shown}");
        let env = super::Env::from_pairs([("GOSPELIB_INTERNAL_SECRET", "s3cret")]);
        let shown = format!("{env:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("GOSPELIB_INTERNAL_SECRET"), "{shown}");
    }

    #[test]
    fn a_config_file_sits_under_the_environment() {
        let file = "# router\nGOSPELIB_ROUTER_LISTEN=0.0.0.0:4000\nexport GOSPELIB_ROUTER_POLL_MS='500'\n\n";
        let env = Env::from_pairs([("GOSPELIB_ROUTER_LISTEN", "127.0.0.1:9")])
            .under_file(file, "router.env")
            .unwrap();
        assert_eq!(env.get("GOSPELIB_ROUTER_LISTEN"), Some("127.0.0.1:9"));
        assert_eq!(env.get("GOSPELIB_ROUTER_POLL_MS"), Some("500"));
        let error = Env::default()
            .under_file("GOSPELIB_X=1\nPATH=/bin\n", "router.env")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "router.env line 2: `PATH` is not a GOSPELIB_* setting"
        );
        let error = Env::default().under_file("nonsense", "f").unwrap_err();
        assert_eq!(error.line, 1);
    }

    use super::*;

    #[test]
    fn the_names_asked_for_are_recorded_and_the_others_listed() {
        let env = Env::from_pairs([
            ("GOSPELIB_A_FLAG", "true"),
            ("GOSPELIB_TYPO", "1"),
            ("GOSPELIB_EMPTY", ""),
        ]);
        let shared = env.clone();
        let mut reader = ConfigReader::new(&shared);
        reader.flag("GOSPELIB_A_FLAG", false);
        reader.port("GOSPELIB_UNSET_PORT", 1);
        reader.finish().unwrap();
        assert!(env.get("GOSPELIB_EMPTY").is_none());
        assert_eq!(
            env.consulted().into_iter().collect::<Vec<_>>(),
            ["GOSPELIB_A_FLAG", "GOSPELIB_EMPTY", "GOSPELIB_UNSET_PORT"]
        );
        assert_eq!(env.unconsulted(), ["GOSPELIB_TYPO"]);
    }

    fn good_stores() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "GOSPELIB_PG_URL",
                "postgres://gospelib@127.0.0.1:25432/gospelib",
            ),
            ("GOSPELIB_REDIS_URL", "redis://127.0.0.1:26379"),
            ("GOSPELIB_FALKORDB_URL", "falkor://127.0.0.1:26380"),
            ("GOSPELIB_TYPESENSE_URL", "http://127.0.0.1:28108"),
            ("GOSPELIB_TYPESENSE_API_KEY", "k"),
        ]
    }

    fn read_stores(env: &Env) -> Result<StoreUrls, ConfigError> {
        StoreUrls::from_env(env)
    }

    #[test]
    fn good_store_variables_are_accepted() {
        let stores = read_stores(&Env::from_pairs(good_stores())).unwrap();
        assert_eq!(stores.redis.port(), Some(26379));
        assert_eq!(stores.falkordb.scheme(), "falkor");
        assert_eq!(
            stores.falkordb_timeout,
            Duration::from_millis(DEFAULT_FALKORDB_TIMEOUT_MS)
        );
    }

    /// The good store variables with `name` set to `bad` are refused with one problem,
    /// naming the value and the whole numbers `range` allows.
    fn assert_refused(name: &str, bad: &str, range: &str) {
        let mut pairs = good_stores();
        pairs.push((name, bad));
        let error = read_stores(&Env::from_pairs(pairs)).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        let line = error.problems[0].to_string();
        assert!(
            line.starts_with(&format!("{name} has a bad value \"{bad}\"")),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("expected a whole number {range}")),
            "{line}"
        );
    }

    #[test]
    fn the_falkordb_timeout_is_read_in_milliseconds_and_checked() {
        let mut pairs = good_stores();
        pairs.push(("GOSPELIB_FALKORDB_TIMEOUT_MS", "750"));
        let stores = read_stores(&Env::from_pairs(pairs)).unwrap();
        assert_eq!(stores.falkordb_timeout, Duration::from_millis(750));

        for bad in ["0", "soon", "600000"] {
            assert_refused("GOSPELIB_FALKORDB_TIMEOUT_MS", bad, "from 50 to 60000");
        }
    }

    #[test]
    fn the_postgres_pool_size_is_read_and_checked() {
        let stores = read_stores(&Env::from_pairs(good_stores())).unwrap();
        assert_eq!(stores.postgres_max_connections, DEFAULT_PG_MAX_CONNECTIONS);
        let mut pairs = good_stores();
        pairs.push(("GOSPELIB_PG_MAX_CONNECTIONS", "32"));
        assert_eq!(
            read_stores(&Env::from_pairs(pairs))
                .unwrap()
                .postgres_max_connections,
            32
        );
        for bad in ["0", "many", "1001", "-1"] {
            assert_refused("GOSPELIB_PG_MAX_CONNECTIONS", bad, "from 1 to 1000");
        }
    }

    #[test]
    fn each_missing_store_variable_is_named_with_its_expected_form() {
        for (missing, _) in good_stores() {
            let env = Env::from_pairs(good_stores().into_iter().filter(|(k, _)| *k != missing));
            let error = read_stores(&env).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{error}");
            let line = error.problems[0].to_string();
            assert!(
                line.starts_with(&format!("{missing} is not set: expected ")),
                "{line}"
            );
        }
    }

    #[test]
    fn a_url_with_the_wrong_scheme_is_refused_without_echoing_it() {
        let mut pairs = good_stores();
        pairs[0] = ("GOSPELIB_PG_URL", "mysql://root:hunter2@db/x");
        let error = read_stores(&Env::from_pairs(pairs)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("GOSPELIB_PG_URL has a bad value"), "{text}");
        assert!(text.contains("scheme \"mysql\""), "{text}");
        assert!(text.contains("postgres://"), "{text}");
        assert!(!text.contains("hunter2"), "a secret leaked: {text}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let env = Env::from_pairs([
            ("GOSPELIB_REDIS_URL", "not a url"),
            ("GOSPELIB_ROUTER_PORT", "70000"),
        ]);
        let mut reader = ConfigReader::new(&env);
        StoreUrls::read(&mut reader);
        reader.port("GOSPELIB_ROUTER_PORT", 4000);
        let error = reader.finish().unwrap_err();
        let names: Vec<_> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            names,
            [
                "GOSPELIB_PG_URL",
                "GOSPELIB_REDIS_URL",
                "GOSPELIB_FALKORDB_URL",
                "GOSPELIB_TYPESENSE_URL",
                "GOSPELIB_TYPESENSE_API_KEY",
                "GOSPELIB_ROUTER_PORT"
            ]
        );
        assert!(error.to_string().contains(
            "GOSPELIB_ROUTER_PORT has a bad value \"70000\" (not a port number): expected a TCP port"
        ));
    }

    #[test]
    fn plain_values_are_parsed_or_defaulted() {
        let env = Env::from_pairs([
            ("GOSPELIB_A_FLAG", "yes"),
            ("GOSPELIB_A_NUMBER", "12"),
            ("GOSPELIB_A_LISTEN", "127.0.0.1:9"),
            ("GOSPELIB_EMPTY", "  "),
        ]);
        let mut reader = ConfigReader::new(&env);
        assert_eq!(reader.flag("GOSPELIB_A_FLAG", false), Some(true));
        assert_eq!(reader.number("GOSPELIB_A_NUMBER", 1, 1, 100), Some(12));
        assert_eq!(reader.port("GOSPELIB_EMPTY", 4000), Some(4000));
        assert_eq!(
            reader.socket_addr("GOSPELIB_A_LISTEN", "0.0.0.0:1".parse().unwrap()),
            Some("127.0.0.1:9".parse().unwrap())
        );
        reader.finish().unwrap();
    }

    #[test]
    fn bad_plain_values_name_variable_value_and_form() {
        let env = Env::from_pairs([
            ("GOSPELIB_A_FLAG", "maybe"),
            ("GOSPELIB_A_NUMBER", "500"),
            ("GOSPELIB_A_LISTEN", "localhost"),
            ("GOSPELIB_A_PORT", "0"),
        ]);
        let mut reader = ConfigReader::new(&env);
        reader.flag("GOSPELIB_A_FLAG", false);
        reader.number("GOSPELIB_A_NUMBER", 1, 1, 100);
        reader.socket_addr("GOSPELIB_A_LISTEN", "0.0.0.0:1".parse().unwrap());
        reader.port("GOSPELIB_A_PORT", 1);
        let lines: Vec<String> = reader
            .finish()
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "GOSPELIB_A_FLAG has a bad value \"maybe\" (not a boolean): expected true or false",
                "GOSPELIB_A_NUMBER has a bad value \"500\" (out of range): expected a whole number from 1 to 100",
                "GOSPELIB_A_LISTEN has a bad value \"localhost\" (invalid socket address syntax): expected an IP address and port such as 127.0.0.1:4000",
                "GOSPELIB_A_PORT has a bad value \"0\" (port 0 is not allowed): expected a TCP port number between 1 and 65535",
            ]
        );
    }
}

//! What the content part reads beyond the shared store settings (`GOSPELIB_FALKORDB_URL`,
//! `GOSPELIB_TYPESENSE_URL`, …): where its reads may go when the stores run replicated
//! (Phase 2). Both are optional; without them content reads the one FalkorDB and searches the
//! one Typesense node, as in Phase 1.

use gospelib_kit::config::{ConfigError, ConfigReader, Env, parse_url};
use url::Url;

/// `GOSPELIB_FALKORDB_READ_URL`.
pub const FALKORDB_READ_URL: &str = "GOSPELIB_FALKORDB_READ_URL";
/// `GOSPELIB_TYPESENSE_URLS`.
pub const TYPESENSE_URLS: &str = "GOSPELIB_TYPESENSE_URLS";

/// The content part's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentSettings {
    /// `GOSPELIB_FALKORDB_READ_URL`: a read replica of `GOSPELIB_FALKORDB_URL`'s server. Reads
    /// go to it first, and to the primary while it cannot serve them; writes (ingest) never do.
    pub falkordb_read_url: Option<Url>,
    /// `GOSPELIB_TYPESENSE_URLS`: every node of the Typesense cluster searches may go to
    /// (comma-separated), taken in turn, passing over a node that is down or not ready; empty:
    /// `GOSPELIB_TYPESENSE_URL` alone.
    pub typesense_urls: Vec<Url>,
}

/// Reads `GOSPELIB_TYPESENSE_URLS` alone (empty when not set): the nodes content searches, and
/// those `gospelib ingest` finds the cluster's leader among. Problems go to `reader`.
pub fn read_typesense_urls(reader: &mut ConfigReader<'_>) -> Option<Vec<Url>> {
    reader.optional(
        TYPESENSE_URLS,
        "comma-separated URLs of the Typesense nodes, e.g. \
         http://typesense-0:8108,http://typesense-1:8108,http://typesense-2:8108",
        Vec::new(),
        parse_typesense_urls,
    )
}

impl ContentSettings {
    /// Reads the settings; problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        // Read as a URL that may hold a password: a bad value is never echoed.
        let falkordb_read_url = if reader.raw(FALKORDB_READ_URL).is_some() {
            reader
                .required_url(
                    FALKORDB_READ_URL,
                    "falkor://falkordb-replica:6379 (a replica of GOSPELIB_FALKORDB_URL's server)",
                    &["falkor", "falkors", "redis", "rediss"],
                )
                .map(Some)
        } else {
            Some(None)
        };
        let typesense_urls = read_typesense_urls(reader);
        Some(Self {
            falkordb_read_url: falkordb_read_url?,
            typesense_urls: typesense_urls?,
        })
    }

    /// Reads the settings alone from `env`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let settings = Self::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("every value is present once finish() succeeded"))
    }
}

/// Checks the content part's settings in `env` without connecting to anything (`gospelib
/// settings check`).
pub fn check(env: &Env) -> Result<(), ConfigError> {
    ContentSettings::from_env(env).map(drop)
}

/// `http://a:8108,http://b:8108` → the nodes, in order: each an http(s) URL, none twice, at
/// least one.
pub fn parse_typesense_urls(raw: &str) -> Result<Vec<Url>, String> {
    let mut urls: Vec<Url> = Vec::new();
    for item in raw.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let url = parse_url(item, &["http", "https"]).map_err(|e| format!("`{item}`: {e}"))?;
        if urls.contains(&url) {
            return Err(format!("`{item}` is listed twice"));
        }
        urls.push(url);
    }
    if urls.is_empty() {
        return Err("no URL".to_owned());
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<ContentSettings, ConfigError> {
        ContentSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn nothing_set_means_one_server_of_each() {
        assert_eq!(read(&[]).unwrap(), ContentSettings::default());
    }

    #[test]
    fn a_replica_and_several_nodes_are_read() {
        let settings = read(&[
            (FALKORDB_READ_URL, "falkor://127.0.0.1:26392"),
            (
                TYPESENSE_URLS,
                " http://127.0.0.1:28200, http://127.0.0.1:28210 ,http://127.0.0.1:28220,",
            ),
        ])
        .unwrap();
        assert_eq!(
            settings.falkordb_read_url.unwrap().as_str(),
            "falkor://127.0.0.1:26392"
        );
        let nodes: Vec<_> = settings
            .typesense_urls
            .iter()
            .map(|url| url.port().unwrap())
            .collect();
        assert_eq!(nodes, [28200, 28210, 28220]);
    }

    #[test]
    fn bad_values_are_named_and_a_read_url_never_echoed() {
        let error = read(&[
            (FALKORDB_READ_URL, "http://:hunter2@replica:6379"),
            (TYPESENSE_URLS, "http://a:8108,ftp://b"),
        ])
        .unwrap_err();
        let names: Vec<_> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(names, [FALKORDB_READ_URL, TYPESENSE_URLS]);
        assert!(!error.to_string().contains("hunter2"), "{error}");
        for (raw, expected) in [
            (" , ", "no URL"),
            ("http://a:8108,http://a:8108", "listed twice"),
            ("a:8108", "`a:8108`"),
        ] {
            let error = parse_typesense_urls(raw).unwrap_err();
            assert!(error.contains(expected), "{raw}: {error}");
        }
    }
}

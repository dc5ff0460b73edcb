//! The LLM settings, read once at start-up from `GOSPELIB_*` variables with the kit's
//! [`ConfigReader`], and the client built from them.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `GOSPELIB_ANTHROPIC_API_KEY` | Anthropic API key (secret); turns the primary on | unset: off |
//! | `GOSPELIB_ANTHROPIC_MODEL` | the Anthropic model | `claude-sonnet-4-5` |
//! | `GOSPELIB_ANTHROPIC_BASE_URL` | the Messages API's base (`{base}/v1/messages`) | `https://api.anthropic.com` |
//! | `GOSPELIB_OPENAI_API_KEY` | OpenAI(-compatible) API key (secret); turns the fallback on | unset: off |
//! | `GOSPELIB_OPENAI_MODEL` | the chat completions model | `gpt-4o-mini` |
//! | `GOSPELIB_OPENAI_BASE_URL` | the chat completions API's base (`{base}/v1/chat/completions`) | `https://api.openai.com` |
//! | `GOSPELIB_AI_TIMEOUT_MS` | the deadline of one completion by one client, in ms (100 to 300000) | `20000` |
//!
//! A provider whose key is unset is off. A model or base URL set without its key is a start-up
//! error naming the key's variable, so a typo in a key's name never silently turns a provider
//! off. With no provider on, the subgraph answers with its extractive provider; with one, that
//! one answers; with both, Anthropic answers and OpenAI stands in when it fails ([`Fallback`]).
//! No key's value appears in an error.

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::config::{
    ConfigError, ConfigProblem, ConfigReader, Env, Problem, Visibility, parse_url,
};

use super::anthropic::{self, Anthropic, AnthropicConfig};
use super::openai::{self, OpenAiCompatible, OpenAiConfig};
use super::{ClientError, Cooldown, DEFAULT_TIMEOUT, Fallback, LlmClient, Secret};

pub const ANTHROPIC_API_KEY: &str = "GOSPELIB_ANTHROPIC_API_KEY";
pub const ANTHROPIC_MODEL: &str = "GOSPELIB_ANTHROPIC_MODEL";
pub const ANTHROPIC_BASE_URL: &str = "GOSPELIB_ANTHROPIC_BASE_URL";
pub const OPENAI_API_KEY: &str = "GOSPELIB_OPENAI_API_KEY";
pub const OPENAI_MODEL: &str = "GOSPELIB_OPENAI_MODEL";
pub const OPENAI_BASE_URL: &str = "GOSPELIB_OPENAI_BASE_URL";
/// The deadline of one completion by one client, in milliseconds. The assistant's deadline for
/// an answer (8 s, primary and fallback together) bounds it too; a [`Fallback`] asks its
/// secondary only while [`super::MIN_FALLBACK_TIME`] of that is left.
pub const AI_TIMEOUT_MS: &str = "GOSPELIB_AI_TIMEOUT_MS";

const ANTHROPIC_GROUP: [&str; 3] = [ANTHROPIC_API_KEY, ANTHROPIC_MODEL, ANTHROPIC_BASE_URL];
const OPENAI_GROUP: [&str; 3] = [OPENAI_API_KEY, OPENAI_MODEL, OPENAI_BASE_URL];

const MIN_TIMEOUT_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 300_000;

/// Every LLM provider's settings; `None` where a provider is off.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub anthropic: Option<AnthropicConfig>,
    pub openai: Option<OpenAiConfig>,
    /// The deadline of one completion by one client.
    pub timeout: Duration,
}

impl LlmSettings {
    /// The client `env` configures: `None` when no provider is (the extractive provider then
    /// answers), the one configured, or Anthropic with OpenAI as its [`Fallback`].
    pub fn from_env(env: &Env) -> Result<Option<Arc<dyn LlmClient>>, ConfigError> {
        Self::settings_from_env(env)?
            .client()
            .map_err(|error| client_problem(&error))
    }

    /// Reads the LLM settings alone from `env`.
    pub fn settings_from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let settings = Self::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("every value is present once finish() succeeded"))
    }

    /// Reads the LLM settings; problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let default_ms = u64::try_from(DEFAULT_TIMEOUT.as_millis()).unwrap_or(20_000);
        let timeout_ms = reader.number(AI_TIMEOUT_MS, default_ms, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS);
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(default_ms));
        let anthropic = read_provider(
            reader,
            &ANTHROPIC_GROUP,
            "an Anthropic API key (sk-ant-…)",
            anthropic::DEFAULT_MODEL,
            anthropic::DEFAULT_BASE_URL,
        )
        .map(|provider| {
            provider.map(|(api_key, model, base_url)| AnthropicConfig {
                api_key,
                model,
                base_url,
                timeout,
            })
        });
        let openai = read_provider(
            reader,
            &OPENAI_GROUP,
            "an OpenAI (or OpenAI-compatible server's) API key (sk-…)",
            openai::DEFAULT_MODEL,
            openai::DEFAULT_BASE_URL,
        )
        .map(|provider| {
            provider.map(|(api_key, model, base_url)| OpenAiConfig {
                api_key,
                model,
                base_url,
                timeout,
            })
        });
        Some(Self {
            anthropic: anthropic?,
            openai: openai?,
            timeout: Duration::from_millis(timeout_ms?),
        })
    }

    /// Whether any provider is on.
    pub fn any(&self) -> bool {
        self.anthropic.is_some() || self.openai.is_some()
    }

    /// The client of the configured providers: `None`, one, or a [`Fallback`]; each vendor
    /// behind a [`Cooldown`].
    pub fn client(&self) -> Result<Option<Arc<dyn LlmClient>>, ClientError> {
        let cooled =
            |client: Arc<dyn LlmClient>| -> Arc<dyn LlmClient> { Arc::new(Cooldown::new(client)) };
        let anthropic: Option<Arc<dyn LlmClient>> = match &self.anthropic {
            Some(config) => Some(cooled(Arc::new(Anthropic::new(config.clone())?))),
            None => None,
        };
        let openai: Option<Arc<dyn LlmClient>> = match &self.openai {
            Some(config) => Some(cooled(Arc::new(OpenAiCompatible::new(config.clone())?))),
            None => None,
        };
        Ok(match (anthropic, openai) {
            (Some(primary), Some(secondary)) => Some(Arc::new(Fallback::new(primary, secondary))),
            (one, other) => one.or(other),
        })
    }
}

/// `Some(None)`: the provider is off; `Some(Some((key, model, base URL)))`: on; `None`: a
/// problem was recorded. `group` is the key's variable, the model's, the base URL's.
fn read_provider(
    reader: &mut ConfigReader<'_>,
    group: &[&str; 3],
    key_expected: &str,
    default_model: &str,
    default_base_url: &str,
) -> Option<Option<(Secret, String, String)>> {
    let [key_name, model_name, base_url_name] = *group;
    if !group.iter().any(|name| reader.raw(name).is_some()) {
        return Some(None);
    }
    let api_key = reader.required(key_name, key_expected, Visibility::Secret, |raw| {
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("it contains whitespace".to_owned())
        } else {
            Ok(Secret::new(raw))
        }
    });
    let model = reader.optional(
        model_name,
        &format!("a model name such as {default_model}"),
        default_model.to_owned(),
        |raw| {
            if raw.chars().any(char::is_whitespace) {
                Err("it contains whitespace".to_owned())
            } else {
                Ok(raw.to_owned())
            }
        },
    );
    let base_url = reader.optional(
        base_url_name,
        &format!("an http(s) URL such as {default_base_url}"),
        default_base_url.to_owned(),
        |raw| parse_url(raw, &["http", "https"]).map(|_| raw.to_owned()),
    );
    Some(Some((api_key?, model?, base_url?)))
}

/// A client that could not be built from accepted settings (in practice: no TLS backend), as a
/// start-up error naming the provider's key variable.
fn client_problem(error: &ClientError) -> ConfigError {
    let variable = if error.provider() == openai::PROVIDER {
        OPENAI_API_KEY
    } else {
        ANTHROPIC_API_KEY
    };
    ConfigError {
        problems: vec![ConfigProblem {
            variable: variable.to_owned(),
            expected: "settings an LLM client can be built from".to_owned(),
            problem: Problem::Malformed {
                shown: None,
                reason: error.to_string(),
            },
        }],
    }
}

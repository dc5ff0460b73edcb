//! Anthropic's Messages API: `POST {base}/v1/messages` with the key in `x-api-key`, the API
//! version in `anthropic-version`, and `{model, max_tokens, system, messages}` as JSON; the answer
//! is the concatenated text of its `text` content blocks.

use std::time::Duration;

use gospelib_kit::stores::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{
    ClientError, LlmClient, LlmError, LlmReply, LlmRequest, Secret, check_key, check_model,
    http_client, not_json, status_error,
};

/// The name of the provider in replies, errors and logs.
pub const PROVIDER: &str = "anthropic";

/// Anthropic's API.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The model used unless `GOSPELIB_ANTHROPIC_MODEL` names another.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// The Messages API version the requests are written for.
pub const API_VERSION: &str = "2023-06-01";

/// What an Anthropic client is made of.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// `GOSPELIB_ANTHROPIC_API_KEY`.
    pub api_key: Secret,
    /// `GOSPELIB_ANTHROPIC_MODEL`, [`DEFAULT_MODEL`] by default.
    pub model: String,
    /// `GOSPELIB_ANTHROPIC_BASE_URL`: [`DEFAULT_BASE_URL`] or a test's server.
    pub base_url: String,
    /// `GOSPELIB_AI_TIMEOUT_MS`: the deadline of one completion.
    pub timeout: Duration,
}

/// Anthropic's Messages API over HTTP.
pub struct Anthropic {
    http: reqwest::Client,
    url: String,
    api_key: HeaderValue,
    /// To mask the key should an error answer quote it.
    secret: Secret,
    model: String,
    timeout: Duration,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    system: &'a str,
    messages: [Message<'a>; 1],
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Anthropic {
    pub fn new(config: AnthropicConfig) -> Result<Self, ClientError> {
        check_key(PROVIDER, &config.api_key)?;
        check_model(PROVIDER, &config.model)?;
        let mut api_key = HeaderValue::from_str(config.api_key.expose())
            .map_err(|_| ClientError::Key { provider: PROVIDER })?;
        api_key.set_sensitive(true);
        let base = super::base_url(PROVIDER, &config.base_url)?;
        Ok(Self {
            http: http_client(PROVIDER, config.timeout)?,
            url: super::endpoint(&base, "v1/messages"),
            api_key,
            secret: config.api_key,
            model: config.model,
            timeout: config.timeout,
        })
    }

    /// The configured model.
    pub fn model(&self) -> &str {
        &self.model
    }

    async fn run(&self, request: &LlmRequest) -> Result<LlmReply, LlmError> {
        let body = MessagesRequest {
            model: &self.model,
            max_tokens: request.max_tokens,
            system: &request.system,
            messages: [Message {
                role: "user",
                content: &request.prompt,
            }],
        };
        let builder = self
            .http
            .post(&self.url)
            .header("x-api-key", self.api_key.clone())
            .header("anthropic-version", API_VERSION)
            .header(CONTENT_TYPE, "application/json")
            .json(&body);
        let (status, wait, text) = super::send(PROVIDER, self.timeout, builder).await?;
        if !status.is_success() {
            return Err(status_error(PROVIDER, status, wait, &text, &self.secret));
        }
        if let Some(error) = not_json(PROVIDER, status, &text, &self.secret) {
            return Err(error);
        }
        self.read(&text)
    }

    /// The reply in a 2xx answer.
    fn read(&self, body: &str) -> Result<LlmReply, LlmError> {
        let response: MessagesResponse =
            serde_json::from_str(body).map_err(|error| LlmError::Malformed {
                provider: PROVIDER,
                reason: format!("not a Messages API response: {error}"),
            })?;
        let text: String = response
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text.as_deref())
            .collect();
        if text.trim().is_empty() {
            return Err(LlmError::Malformed {
                provider: PROVIDER,
                reason: format!(
                    "no text in the answer (stop reason {})",
                    response.stop_reason.as_deref().unwrap_or("none")
                ),
            });
        }
        if response.stop_reason.as_deref() == Some("max_tokens") {
            tracing::debug!(model = %self.model, "the answer was cut at max_tokens");
        }
        Ok(LlmReply {
            text,
            provider: PROVIDER,
            model: response
                .model
                .filter(|model| !model.is_empty())
                .unwrap_or_else(|| self.model.clone()),
        })
    }
}

impl LlmClient for Anthropic {
    fn describe(&self) -> String {
        format!("{PROVIDER}/{}", self.model)
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmReply, LlmError>> {
        Box::pin(self.run(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str) -> AnthropicConfig {
        AnthropicConfig {
            api_key: Secret::new(key),
            model: DEFAULT_MODEL.into(),
            base_url: DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn text_blocks_are_joined_and_others_ignored() {
        let client = Anthropic::new(config("sk-ant-1")).unwrap();
        let reply = client
            .read(
                r#"{"model":"claude-sonnet-4-5-20250929","content":[
                    {"type":"thinking","thinking":"hmm"},
                    {"type":"text","text":"{\"text\":"},
                    {"type":"text","text":"\"x\"}"}],"stop_reason":"end_turn"}"#,
            )
            .unwrap();
        assert_eq!(reply.text, r#"{"text":"x"}"#);
        assert_eq!(reply.model, "claude-sonnet-4-5-20250929");
        assert_eq!(reply.provider, "anthropic");

        let error = client
            .read(r#"{"content":[],"stop_reason":"refusal"}"#)
            .unwrap_err();
        assert!(matches!(error, LlmError::Malformed { .. }), "{error}");
        assert!(error.to_string().contains("refusal"), "{error}");
        assert!(matches!(
            client.read("<html>").unwrap_err(),
            LlmError::Malformed { .. }
        ));
    }

    #[test]
    fn the_key_is_checked_and_hidden() {
        assert_eq!(
            Anthropic::new(config("sk ant")).unwrap_err(),
            ClientError::Key { provider: PROVIDER }
        );
        let client = Anthropic::new(config("sk-ant-topsecret")).unwrap();
        assert!(!format!("{client:?}").contains("topsecret"));
        assert!(!format!("{:?}", config("sk-ant-topsecret")).contains("topsecret"));
        assert_eq!(client.describe(), "anthropic/claude-sonnet-4-5");
    }
}

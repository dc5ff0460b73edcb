//! An OpenAI-compatible chat completions API (OpenAI's, or any server that speaks it):
//! `POST {base}/v1/chat/completions` with the key as a bearer token and
//! `{model, max_tokens, messages: [system, user]}` as JSON; the answer is
//! `choices[0].message.content`. OpenAI's own API is sent `max_completion_tokens` instead of
//! `max_tokens`, which it deprecated and its reasoning models refuse; other servers get the
//! field they all read.

use std::time::Duration;

use gospelib_kit::stores::BoxFuture;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};

use super::{
    ClientError, LlmClient, LlmError, LlmReply, LlmRequest, Secret, check_key, check_model,
    http_client, not_json, status_error,
};

/// The name of the provider in replies, errors and logs.
pub const PROVIDER: &str = "openai";

/// OpenAI's API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com";

/// The model used unless `GOSPELIB_OPENAI_MODEL` names another.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// What an OpenAI-compatible client is made of.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// `GOSPELIB_OPENAI_API_KEY`.
    pub api_key: Secret,
    /// `GOSPELIB_OPENAI_MODEL`, [`DEFAULT_MODEL`] by default.
    pub model: String,
    /// `GOSPELIB_OPENAI_BASE_URL`: [`DEFAULT_BASE_URL`], another compatible server, or a test's.
    pub base_url: String,
    /// `GOSPELIB_AI_TIMEOUT_MS`: the deadline of one completion.
    pub timeout: Duration,
}

/// An OpenAI-compatible chat completions API over HTTP.
pub struct OpenAiCompatible {
    http: reqwest::Client,
    url: String,
    api_key: Secret,
    model: String,
    timeout: Duration,
    /// Whether the token limit is sent as `max_completion_tokens` ([`is_openais_own`]).
    completion_tokens_field: bool,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    messages: [ChatMessage<'a>; 2],
}

/// Whether `base` is OpenAI's own API, which takes the answer's token limit as
/// `max_completion_tokens` (`max_tokens` is deprecated there, and refused by its reasoning
/// models); compatible servers read `max_tokens`.
fn is_openais_own(base: &url::Url) -> bool {
    base.host_str() == Some("api.openai.com")
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

impl OpenAiCompatible {
    pub fn new(config: OpenAiConfig) -> Result<Self, ClientError> {
        check_key(PROVIDER, &config.api_key)?;
        check_model(PROVIDER, &config.model)?;
        let base = super::base_url(PROVIDER, &config.base_url)?;
        Ok(Self {
            http: http_client(PROVIDER, config.timeout)?,
            url: super::endpoint(&base, "v1/chat/completions"),
            api_key: config.api_key,
            model: config.model,
            timeout: config.timeout,
            completion_tokens_field: is_openais_own(&base),
        })
    }

    /// The configured model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The JSON body asking `request`.
    fn body<'a>(&'a self, request: &'a LlmRequest) -> ChatRequest<'a> {
        let limit = Some(request.max_tokens);
        ChatRequest {
            model: &self.model,
            max_tokens: limit.filter(|_| !self.completion_tokens_field),
            max_completion_tokens: limit.filter(|_| self.completion_tokens_field),
            messages: [
                ChatMessage {
                    role: "system",
                    content: &request.system,
                },
                ChatMessage {
                    role: "user",
                    content: &request.prompt,
                },
            ],
        }
    }

    async fn run(&self, request: &LlmRequest) -> Result<LlmReply, LlmError> {
        let body = self.body(request);
        // `bearer_auth` marks the header sensitive (kept out of reqwest's own debug output).
        let builder = self
            .http
            .post(&self.url)
            .bearer_auth(self.api_key.expose())
            .header(CONTENT_TYPE, "application/json")
            .json(&body);
        let (status, wait, text) = super::send(PROVIDER, self.timeout, builder).await?;
        if !status.is_success() {
            return Err(status_error(PROVIDER, status, wait, &text, &self.api_key));
        }
        if let Some(error) = not_json(PROVIDER, status, &text, &self.api_key) {
            return Err(error);
        }
        self.read(&text)
    }

    /// The reply in a 2xx answer.
    fn read(&self, body: &str) -> Result<LlmReply, LlmError> {
        let malformed = |reason: String| LlmError::Malformed {
            provider: PROVIDER,
            reason,
        };
        let response: ChatResponse = serde_json::from_str(body)
            .map_err(|error| malformed(format!("not a chat completions response: {error}")))?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(malformed("no choices in the answer".to_owned()));
        };
        let text = choice.message.content.unwrap_or_default();
        if text.trim().is_empty() {
            let why = match (&choice.message.refusal, &choice.finish_reason) {
                (Some(_), _) => "the model refused".to_owned(),
                (None, Some(reason)) => format!("finish reason {reason}"),
                (None, None) => "no finish reason".to_owned(),
            };
            return Err(malformed(format!("no text in the answer ({why})")));
        }
        if choice.finish_reason.as_deref() == Some("length") {
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

impl LlmClient for OpenAiCompatible {
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

    fn config(key: &str) -> OpenAiConfig {
        OpenAiConfig {
            api_key: Secret::new(key),
            model: DEFAULT_MODEL.into(),
            base_url: DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_first_choice_is_the_answer() {
        let client = OpenAiCompatible::new(config("sk-1")).unwrap();
        let reply = client
            .read(r#"{"choices":[{"message":{"role":"assistant","content":"{}"},"finish_reason":"stop"}]}"#)
            .unwrap();
        assert_eq!(reply.text, "{}");
        assert_eq!(reply.model, "gpt-4o-mini");
        assert_eq!(reply.provider, "openai");

        for body in [
            r#"{"choices":[]}"#,
            r#"{"choices":[{"message":{"content":null,"refusal":"no"},"finish_reason":"stop"}]}"#,
            r#"{"id":"x"}"#,
        ] {
            let error = client.read(body).unwrap_err();
            assert!(
                matches!(error, LlmError::Malformed { .. }),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn openais_own_api_gets_max_completion_tokens_and_other_servers_max_tokens() {
        let request = LlmRequest {
            system: "s".into(),
            prompt: "p".into(),
            max_tokens: 700,
            deadline: None,
        };
        let body = |base: &str| {
            let client = OpenAiCompatible::new(OpenAiConfig {
                base_url: base.into(),
                ..config("sk-1")
            })
            .unwrap();
            serde_json::to_value(client.body(&request)).unwrap()
        };
        let own = body(DEFAULT_BASE_URL);
        assert_eq!(own["max_completion_tokens"], 700);
        assert!(own.get("max_tokens").is_none(), "{own}");
        for other in ["http://127.0.0.1:8000", "https://api.groq.com/openai"] {
            let compatible = body(other);
            assert_eq!(compatible["max_tokens"], 700);
            assert!(
                compatible.get("max_completion_tokens").is_none(),
                "{compatible}"
            );
        }
    }

    #[test]
    fn the_key_is_checked_and_hidden() {
        assert!(OpenAiCompatible::new(config("")).is_err());
        let client = OpenAiCompatible::new(config("sk-topsecret")).unwrap();
        assert!(!format!("{client:?}").contains("topsecret"));
        let mut bad = config("sk-1");
        bad.base_url = "ftp://example.com".into();
        assert!(matches!(
            OpenAiCompatible::new(bad).unwrap_err(),
            ClientError::BaseUrl { .. }
        ));
    }
}

//! Language-model providers behind one trait: Anthropic's Messages API and OpenAI-compatible Chat
//! Completions (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp's server). Provider-neutral messages
//! with text, tool calls and tool results; a tool choice (let the model choose, require a tool,
//! or forbid tools); why the model stopped; timeouts, retries with jittered backoff on 429 and 5xx
//! (honouring `Retry-After` as seconds or a date), prompt caching where the provider has it, and
//! token and cache usage in the logs and metrics. Knows nothing of planning or HTTP routes.

mod anthropic;
mod openai;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use anthropic::Anthropic;
pub use openai::OpenAi;

use crate::vault::Secret;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// The model asks for a tool. `input` is what the model sent: usually an object, but a model
    /// can send anything, and the caller must check.
    ToolCall {
        id: String,
        name: String,
        input: Value,
    },
    /// The answer to a tool call.
    ToolResult {
        id: String,
        content: String,
        is_error: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Self { role: Role::User, parts: vec![Part::Text(text.into())] }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// Whether the model may, must or must not call a tool this turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must call one of the request's tools (the last planning round).
    Required,
    /// The model must answer in text (the last round of a run).
    None,
}

#[derive(Debug, Clone)]
pub struct Request {
    /// Fixed instructions: the start of the prompt the provider may cache.
    pub system: String,
    pub messages: Vec<Message>,
    /// Sent only when non-empty (OpenAI rejects an empty list).
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub max_tokens: u32,
}

impl Request {
    pub fn new(
        system: impl Into<String>,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
        max_tokens: u32,
    ) -> Self {
        Self { system: system.into(), messages, tools, tool_choice: ToolChoice::Auto, max_tokens }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every input token of the call, those read from or written to the cache included (the
    /// providers count them differently; each parser adds them up the same way).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of the input tokens, those read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Of the input tokens, those written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
}

/// Why the model stopped writing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stop {
    /// It finished its answer.
    #[default]
    End,
    /// It asks for its tool calls.
    ToolUse,
    /// It hit the token limit: the last text or tool call may be cut off.
    MaxTokens,
    /// It declined, or the provider's filter stopped it.
    Refused,
    /// Anything else the provider said (kept for the logs).
    Other(String),
}

/// The model's turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Text and tool calls, in order.
    pub parts: Vec<Part>,
    pub usage: Usage,
    pub stop: Stop,
}

impl Reply {
    pub fn tool_calls(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.parts.iter().filter_map(|p| match p {
            Part::ToolCall { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }

    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the {provider} API did not answer within {secs} s")]
    Timeout { provider: &'static str, secs: u64 },
    #[error("the {provider} API answered HTTP {status} after {attempts} attempt(s): {message}")]
    Status { provider: &'static str, status: u16, attempts: u32, message: String },
    #[error("could not reach the {provider} API: {message}")]
    Transport { provider: &'static str, message: String },
    #[error("the {provider} API answered something unreadable: {message}")]
    Malformed { provider: &'static str, message: String },
}

#[async_trait]
pub trait LlmClient: Send + Sync {
    /// `provider/model`, for logs and the agent's record.
    fn describe(&self) -> String;
    fn model(&self) -> &str;
    async fn complete(&self, request: &Request) -> Result<Reply, LlmError>;
}

/// Which provider, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Provider {
    /// Anthropic if `ANTHROPIC_API_KEY` is set, else OpenAI if `OPENAI_API_KEY` is, else none.
    #[default]
    Auto,
    Anthropic,
    /// Any OpenAI-compatible Chat Completions server.
    Openai,
    /// No model: the offline planner, and agents cannot run.
    None,
}

/// Everything needed to build a client.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub provider: Provider,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub anthropic_key: Option<Secret>,
    pub openai_key: Option<Secret>,
    pub timeout: Duration,
    pub max_retries: u32,
}

/// The configured client, or `None` when no provider is configured.
pub fn from_settings(s: &LlmSettings) -> Result<Option<std::sync::Arc<dyn LlmClient>>, String> {
    let provider = match s.provider {
        Provider::Auto if s.anthropic_key.is_some() => Provider::Anthropic,
        Provider::Auto if s.openai_key.is_some() => Provider::Openai,
        Provider::Auto => Provider::None,
        other => other,
    };
    let http = Http::new(s.timeout, s.max_retries)?;
    Ok(match provider {
        Provider::None | Provider::Auto => None,
        Provider::Anthropic => {
            let key = s.anthropic_key.clone().ok_or("the anthropic provider needs ANTHROPIC_API_KEY")?;
            Some(std::sync::Arc::new(Anthropic::new(
                http,
                s.base_url.clone().unwrap_or_else(|| anthropic::DEFAULT_BASE_URL.to_owned()),
                key,
                s.model.clone().unwrap_or_else(|| anthropic::DEFAULT_MODEL.to_owned()),
            )))
        }
        Provider::Openai => {
            // Local servers (Ollama, llama.cpp) take any key or none.
            let key = s.openai_key.clone();
            if key.is_none() && s.base_url.is_none() {
                return Err(
                    "the openai provider needs OPENAI_API_KEY (or a base URL of a local server)".into()
                );
            }
            Some(std::sync::Arc::new(OpenAi::new(
                http,
                s.base_url.clone().unwrap_or_else(|| openai::DEFAULT_BASE_URL.to_owned()),
                key,
                s.model.clone().unwrap_or_else(|| openai::DEFAULT_MODEL.to_owned()),
            )))
        }
    })
}

/// The HTTP side shared by the providers: one client, a per-request timeout, and retries with
/// exponential backoff (honouring `Retry-After`) on 429, 5xx and connection failures.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
    max_retries: u32,
}

impl Http {
    pub fn new(timeout: Duration, max_retries: u32) -> Result<Self, String> {
        // One process-wide TLS provider (ring, as the database driver uses).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("could not set up the HTTP client: {e}"))?;
        Ok(Self { client, timeout, max_retries })
    }

    /// POSTs `body` and returns the JSON answer; `headers` carry the key (never logged).
    pub(crate) async fn post_json(
        &self,
        provider: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<Value, LlmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.client.post(url).json(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let retry_after;
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return response
                        .json::<Value>()
                        .await
                        .map_err(|e| LlmError::Malformed { provider, message: e.to_string() });
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after_of(v, std::time::SystemTime::now()));
                    let text = response.text().await.unwrap_or_default();
                    let retriable = status == 429 || status >= 500;
                    if !retriable || attempt > self.max_retries {
                        return Err(LlmError::Status {
                            provider,
                            status,
                            attempts: attempt,
                            message: error_message(&text),
                        });
                    }
                    tracing::warn!(provider, status, attempt, "LLM API error; retrying");
                }
                Err(e) if e.is_timeout() => {
                    if attempt > self.max_retries {
                        return Err(LlmError::Timeout { provider, secs: self.timeout.as_secs() });
                    }
                    retry_after = None;
                    tracing::warn!(provider, attempt, "LLM API timed out; retrying");
                }
                Err(e) => {
                    if attempt > self.max_retries {
                        return Err(LlmError::Transport { provider, message: without_url(&e) });
                    }
                    retry_after = None;
                    tracing::warn!(provider, attempt, error = %without_url(&e), "LLM API unreachable; retrying");
                }
            }
            tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
        }
    }
}

/// The longest wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A `Retry-After` header: seconds, or an HTTP date (RFC 9110), as a wait from `now`, at most 30 s.
fn retry_after_of(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() => {
            Duration::from_secs_f64(secs.max(0.0).min(MAX_RETRY_AFTER.as_secs_f64()))
        }
        Ok(_) => return None,
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter: a random wait up to 250 ms × 2^(attempt−1), at most
/// 16 s, so that callers who failed together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 250 * 2u64.pow(attempt.clamp(1, 7) - 1);
    Duration::from_millis(fastrand::u64(ceiling / 4..=ceiling))
}

/// The provider's own error message, if its body has one (never the request).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(200).collect());
    message.chars().take(300).collect()
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// Logs one call's token usage and why the model stopped.
fn log_usage(provider: &'static str, model: &str, reply: &Reply) {
    let usage = reply.usage;
    tracing::info!(
        provider,
        model,
        input_tokens = usage.input_tokens,
        output_tokens = usage.output_tokens,
        cache_read_tokens = usage.cache_read_tokens,
        cache_write_tokens = usage.cache_write_tokens,
        stop = ?reply.stop,
        "LLM call"
    );
    metrics::counter!("dynamcp_llm_calls_total", "provider" => provider).increment(1);
    metrics::counter!("dynamcp_llm_tokens_total", "provider" => provider, "kind" => "input")
        .increment(usage.input_tokens);
    metrics::counter!("dynamcp_llm_tokens_total", "provider" => provider, "kind" => "output")
        .increment(usage.output_tokens);
    metrics::counter!("dynamcp_llm_tokens_total", "provider" => provider, "kind" => "cache_read")
        .increment(usage.cache_read_tokens);
    metrics::counter!("dynamcp_llm_tokens_total", "provider" => provider, "kind" => "cache_write")
        .increment(usage.cache_write_tokens);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_within_limits() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_of("2", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after_of(" 0.5 ", now), Some(Duration::from_millis(500)));
        assert_eq!(retry_after_of("3600", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after_of("-4", now), Some(Duration::ZERO));
        let in_five = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(retry_after_of(&in_five, now), Some(Duration::from_secs(5)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(retry_after_of(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after_of("soon", now), None);
        assert_eq!(retry_after_of("NaN", now), None);
    }

    #[test]
    fn backoff_grows_and_is_jittered() {
        for attempt in 1..=10 {
            let ceiling = 250 * 2u64.pow(attempt.min(7) - 1);
            let (low, high) = (Duration::from_millis(ceiling / 4), Duration::from_millis(ceiling));
            // Many draws, so the bounds are hit: each must stay within them.
            let waits: Vec<Duration> = (0..2_000).map(|_| backoff(attempt)).collect();
            assert!(waits.iter().all(|w| *w <= high && *w >= low), "{attempt}: {waits:?}");
        }
        let spread: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(5)).collect();
        assert!(spread.len() > 1, "retries that failed together must not retry together");
    }
}

//! OpenAI-compatible Chat Completions (`POST {base}/chat/completions`): OpenAI, OpenRouter, Ollama,
//! vLLM, llama.cpp's server.
//!
//! OpenAI's own API takes the answer's length as `max_completion_tokens` (its newer models
//! refuse `max_tokens`); other servers mostly know only `max_tokens`. Each client starts with the
//! field its base URL suggests and switches once for good when the server names the field it
//! sent as the problem.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Http, LlmClient, LlmError, Part, Reply, Request, Role, Stop, ToolChoice, Usage, log_usage};
use crate::vault::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
const PROVIDER: &str = "openai";

pub struct OpenAi {
    http: Http,
    base_url: String,
    key: Option<Secret>,
    model: String,
    /// Whether the answer's length travels as `max_completion_tokens` (else `max_tokens`).
    completion_field: AtomicBool,
}

impl OpenAi {
    pub fn new(http: Http, base_url: String, key: Option<Secret>, model: String) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let completion_field = AtomicBool::new(base_url == DEFAULT_BASE_URL);
        Self { http, base_url, key, model, completion_field }
    }
}

/// The name of the field that carries the answer's length.
fn length_field(completion_field: bool) -> &'static str {
    if completion_field { "max_completion_tokens" } else { "max_tokens" }
}

fn body(model: &str, request: &Request, completion_field: bool) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    for m in &request.messages {
        let text: Vec<&str> = m
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        match m.role {
            Role::Assistant => {
                let calls: Vec<Value> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall { id, name, input } => Some(json!({
                            "id": id, "type": "function",
                            // Arguments travel as a JSON string; a model's malformed string is kept as is.
                            "function": {"name": name, "arguments": input.as_str().map_or_else(|| input.to_string(), str::to_owned)}
                        })),
                        _ => None,
                    })
                    .collect();
                let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text.join("\n")) }});
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls);
                }
                messages.push(message);
            }
            Role::User => {
                for p in &m.parts {
                    if let Part::ToolResult { id, content, is_error } = p {
                        let content = if *is_error { format!("Error: {content}") } else { content.clone() };
                        messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                    }
                }
                if !text.is_empty() {
                    messages.push(json!({"role": "user", "content": text.join("\n")}));
                }
            }
        }
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
        .collect();
    let mut body = json!({"model": model, "messages": messages});
    body[length_field(completion_field)] = json!(request.max_tokens);
    if !tools.is_empty() {
        body["tools"] = json!(tools);
        body["tool_choice"] = json!(match request.tool_choice {
            ToolChoice::Auto => "auto",
            ToolChoice::Required => "required",
            ToolChoice::None => "none",
        });
    }
    body
}

fn parse(value: &Value) -> Result<Reply, LlmError> {
    let malformed = |m: &str| LlmError::Malformed { provider: PROVIDER, message: m.to_owned() };
    let message = value.pointer("/choices/0/message").ok_or_else(|| malformed("no choices[0].message"))?;
    let mut parts = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        parts.push(Part::Text(text.to_owned()));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let id = call["id"].as_str().ok_or_else(|| malformed("a tool call without id"))?.to_owned();
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("a tool call without name"))?;
        let raw = call.pointer("/function/arguments").cloned().unwrap_or(Value::Null);
        // The arguments are a JSON string; when it does not parse, the caller sees the raw string.
        let input = match &raw {
            Value::String(s) => serde_json::from_str(s).unwrap_or(raw.clone()),
            other => other.clone(),
        };
        parts.push(Part::ToolCall { id, name: name.to_owned(), input });
    }
    let count = |path: &str| value.pointer(path).and_then(Value::as_u64).unwrap_or(0);
    let usage = Usage {
        input_tokens: count("/usage/prompt_tokens"),
        output_tokens: count("/usage/completion_tokens"),
        cache_read_tokens: count("/usage/prompt_tokens_details/cached_tokens"),
        cache_write_tokens: 0,
    };
    let stop = match value.pointer("/choices/0/finish_reason").and_then(Value::as_str) {
        None | Some("stop") => Stop::End,
        Some("tool_calls" | "function_call") => Stop::ToolUse,
        Some("length") => Stop::MaxTokens,
        Some("content_filter") => Stop::Refused,
        Some(other) => Stop::Other(other.to_owned()),
    };
    Ok(Reply { parts, usage, stop })
}

#[async_trait]
impl LlmClient for OpenAi {
    fn describe(&self) -> String {
        format!("{PROVIDER}/{}", self.model)
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &Request) -> Result<Reply, LlmError> {
        let url = format!("{}/chat/completions", self.base_url);
        let bearer = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> =
            bearer.as_deref().map(|b| ("authorization", b)).into_iter().collect();
        let completion_field = self.completion_field.load(Ordering::Relaxed);
        let sent = body(&self.model, request, completion_field);
        let answer = match self.http.post_json(PROVIDER, &url, &headers, &sent).await {
            Err(LlmError::Status { status: 400, message, .. })
                if message.contains(length_field(completion_field)) =>
            {
                // The server refuses the length field sent: the other one, from now on.
                tracing::info!(
                    refused = length_field(completion_field),
                    "the OpenAI-compatible server refused the length field; using the other one"
                );
                self.completion_field.store(!completion_field, Ordering::Relaxed);
                let again = body(&self.model, request, !completion_field);
                self.http.post_json(PROVIDER, &url, &headers, &again).await?
            }
            other => other?,
        };
        let reply = parse(&answer)?;
        log_usage(PROVIDER, &self.model, &reply);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    #[test]
    fn speaks_the_chat_completions_wire_format() {
        let request = Request {
            system: "plan".into(),
            messages: vec![
                Message::user("hi"),
                Message {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall {
                        id: "c1".into(),
                        name: "search".into(),
                        input: json!({"q": "x"}),
                    }],
                },
                Message {
                    role: Role::User,
                    parts: vec![Part::ToolResult { id: "c1".into(), content: "r".into(), is_error: false }],
                },
            ],
            tools: vec![],
            tool_choice: ToolChoice::Auto,
            max_tokens: 100,
        };
        let b = body("m", &request, false);
        assert_eq!(b["max_tokens"], 100);
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none(), "no empty tool list: {b}");
        assert_eq!(body("m", &request, true)["max_completion_tokens"], 100);
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "plan"}));
        assert_eq!(b["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(b["messages"][3], json!({"role": "tool", "tool_call_id": "c1", "content": "r"}));
        let reply = parse(&json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "n", "arguments": "{\"q\": 1}"}},
            {"id": "b", "type": "function", "function": {"name": "n", "arguments": "{broken"}}
        ]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 2}}}))
        .unwrap();
        let calls: Vec<_> = reply.tool_calls().map(|(_, _, i)| i.clone()).collect();
        assert_eq!(calls, vec![json!({"q": 1}), json!("{broken")]);
        assert_eq!(
            reply.usage,
            Usage { input_tokens: 3, output_tokens: 4, cache_read_tokens: 2, cache_write_tokens: 0 }
        );
        assert_eq!(reply.stop, Stop::ToolUse);
    }

    #[test]
    fn tool_choice_and_stop_reasons() {
        let tool =
            crate::llm::ToolSpec { name: "t".into(), description: "d".into(), input_schema: json!({}) };
        let mut request = Request::new("s", vec![Message::user("hi")], vec![tool], 10);
        for (choice, wire) in
            [(ToolChoice::Auto, "auto"), (ToolChoice::Required, "required"), (ToolChoice::None, "none")]
        {
            request.tool_choice = choice;
            assert_eq!(body("m", &request, true)["tool_choice"], wire);
        }
        let stop = |reason: &str| {
            parse(&json!({"choices": [{"message": {"content": "x"}, "finish_reason": reason}]})).unwrap().stop
        };
        assert_eq!(stop("stop"), Stop::End);
        assert_eq!(stop("length"), Stop::MaxTokens);
        assert_eq!(stop("content_filter"), Stop::Refused);
        assert_eq!(stop("weird"), Stop::Other("weird".into()));
    }
}

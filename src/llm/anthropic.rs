//! Anthropic's Messages API (`POST /v1/messages`).
//!
//! Prompt caching: the system prompt (which, after the tools, is the stable start of every
//! request) and the newest message carry `cache_control`, so each round of a tool loop reads the
//! rounds before it from the cache. Prefixes shorter than the model's minimum are simply not
//! cached.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Http, LlmClient, LlmError, Part, Reply, Request, Role, Stop, ToolChoice, Usage, log_usage};
use crate::vault::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
const PROVIDER: &str = "anthropic";
const VERSION: &str = "2023-06-01";

pub struct Anthropic {
    http: Http,
    base_url: String,
    key: Secret,
    model: String,
}

impl Anthropic {
    pub fn new(http: Http, base_url: String, key: Secret, model: String) -> Self {
        Self { http, base_url: base_url.trim_end_matches('/').to_owned(), key, model }
    }
}

fn body(model: &str, request: &Request) -> Value {
    let ephemeral = json!({"type": "ephemeral"});
    let mut messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let content: Vec<Value> = m
                .parts
                .iter()
                // The API refuses empty text blocks.
                .filter(|p| !matches!(p, Part::Text(t) if t.trim().is_empty()))
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::ToolCall { id, name, input } => {
                        // The API wants an object; a model that sent something else gets it wrapped.
                        let input = if input.is_object() { input.clone() } else { json!({ "value": input }) };
                        json!({"type": "tool_use", "id": id, "name": name, "input": input})
                    }
                    Part::ToolResult { id, content, is_error } => {
                        json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error})
                    }
                })
                .collect();
            let role = if m.role == Role::User { "user" } else { "assistant" };
            json!({"role": role, "content": content})
        })
        .collect();
    // The newest message ends the prefix the next round reads from the cache.
    if let Some(last) =
        messages.last_mut().and_then(|m| m["content"].as_array_mut()).and_then(|c| c.last_mut())
    {
        last["cache_control"] = ephemeral.clone();
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "system": [{"type": "text", "text": request.system, "cache_control": ephemeral}],
        "messages": messages,
    });
    if !tools.is_empty() {
        body["tools"] = json!(tools);
        body["tool_choice"] = json!({"type": match request.tool_choice {
            ToolChoice::Auto => "auto",
            ToolChoice::Required => "any",
            ToolChoice::None => "none",
        }});
    }
    body
}

fn parse(value: &Value) -> Result<Reply, LlmError> {
    let malformed = |m: &str| LlmError::Malformed { provider: PROVIDER, message: m.to_owned() };
    let content =
        value.get("content").and_then(Value::as_array).ok_or_else(|| malformed("no `content` list"))?;
    let mut parts = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(Part::Text(block["text"].as_str().unwrap_or_default().to_owned())),
            Some("tool_use") => parts.push(Part::ToolCall {
                id: block["id"].as_str().ok_or_else(|| malformed("a tool_use without id"))?.to_owned(),
                name: block["name"].as_str().ok_or_else(|| malformed("a tool_use without name"))?.to_owned(),
                input: block.get("input").cloned().unwrap_or(Value::Null),
            }),
            _ => {}
        }
    }
    let count = |path: &str| value.pointer(path).and_then(Value::as_u64).unwrap_or(0);
    let (read, written) =
        (count("/usage/cache_read_input_tokens"), count("/usage/cache_creation_input_tokens"));
    let usage = Usage {
        // `input_tokens` counts only what was neither read from nor written to the cache.
        input_tokens: count("/usage/input_tokens") + read + written,
        output_tokens: count("/usage/output_tokens"),
        cache_read_tokens: read,
        cache_write_tokens: written,
    };
    let stop = match value.get("stop_reason").and_then(Value::as_str) {
        None | Some("end_turn" | "stop_sequence") => Stop::End,
        Some("tool_use") => Stop::ToolUse,
        Some("max_tokens") => Stop::MaxTokens,
        Some("refusal") => Stop::Refused,
        Some(other) => Stop::Other(other.to_owned()),
    };
    Ok(Reply { parts, usage, stop })
}

#[async_trait]
impl LlmClient for Anthropic {
    fn describe(&self) -> String {
        format!("{PROVIDER}/{}", self.model)
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &Request) -> Result<Reply, LlmError> {
        let url = format!("{}/v1/messages", self.base_url);
        let headers = [("x-api-key", self.key.expose()), ("anthropic-version", VERSION)];
        let answer = self.http.post_json(PROVIDER, &url, &headers, &body(&self.model, request)).await?;
        let reply = parse(&answer)?;
        log_usage(PROVIDER, &self.model, &reply);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, ToolSpec};

    #[test]
    fn speaks_the_messages_wire_format() {
        let request = Request {
            system: "plan".into(),
            messages: vec![
                Message::user("hi"),
                Message {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall {
                        id: "t1".into(),
                        name: "search".into(),
                        input: json!("oops"),
                    }],
                },
                Message {
                    role: Role::User,
                    parts: vec![Part::ToolResult { id: "t1".into(), content: "bad".into(), is_error: true }],
                },
            ],
            tools: vec![ToolSpec {
                name: "search".into(),
                description: "d".into(),
                input_schema: json!({"type": "object"}),
            }],
            tool_choice: ToolChoice::Required,
            max_tokens: 100,
        };
        let b = body("m", &request);
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
        assert_eq!(b["system"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(b["messages"][2]["content"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert!(b["messages"][1]["content"][0].get("cache_control").is_none());
        assert_eq!(
            b["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "t1", "name": "search", "input": {"value": "oops"}})
        );
        let no_tools = Request::new("s", vec![Message::user("hi")], vec![], 10);
        assert!(body("m", &no_tools).get("tools").is_none());
        assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
        let reply = parse(&json!({
            "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "a", "name": "n", "input": {"q": 1}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7,
                "cache_read_input_tokens": 80, "cache_creation_input_tokens": 15}
        }))
        .unwrap();
        assert_eq!(reply.text(), "ok");
        assert_eq!(reply.tool_calls().count(), 1);
        assert_eq!(
            reply.usage,
            Usage { input_tokens: 100, output_tokens: 7, cache_read_tokens: 80, cache_write_tokens: 15 }
        );
        assert_eq!(reply.stop, Stop::ToolUse);
        let cut = parse(&json!({"content": [], "stop_reason": "max_tokens"})).unwrap();
        assert_eq!(cut.stop, Stop::MaxTokens);
        assert!(parse(&json!({"nope": 1})).is_err());
    }
}

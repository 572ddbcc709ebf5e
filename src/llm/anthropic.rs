//! Anthropic's Messages API (`POST /v1/messages`).

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Http, LlmClient, LlmError, Part, Reply, Request, Role, Usage, log_usage};
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
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let content: Vec<Value> = m
                .parts
                .iter()
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
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
        .collect();
    json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "messages": messages,
        "tools": tools,
    })
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
    let usage = Usage {
        input_tokens: value.pointer("/usage/input_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: value.pointer("/usage/output_tokens").and_then(Value::as_u64).unwrap_or(0),
    };
    Ok(Reply { parts, usage })
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
        log_usage(PROVIDER, &self.model, reply.usage);
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
            max_tokens: 100,
        };
        let b = body("m", &request);
        assert_eq!(
            b["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "t1", "name": "search", "input": {"value": "oops"}})
        );
        assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
        let reply = parse(&json!({
            "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "a", "name": "n", "input": {"q": 1}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}
        }))
        .unwrap();
        assert_eq!(reply.text(), "ok");
        assert_eq!(reply.tool_calls().count(), 1);
        assert_eq!(reply.usage, Usage { input_tokens: 5, output_tokens: 7 });
        assert!(parse(&json!({"nope": 1})).is_err());
    }
}

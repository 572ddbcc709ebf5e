//! A local fake of the paid LLM providers that speaks their real wire protocols (Anthropic
//! Messages and OpenAI Chat Completions) and answers from a script, recording every request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dynamcp::config::ServeArgs;
use dynamcp::llm::Provider;
use dynamcp::vault::Secret;
use serde_json::{Value, json};

/// One scripted answer of the fake provider.
pub enum Step {
    Reply(Value),
    /// A reply made from the request (a model that reads the tool results it got).
    With(Box<dyn Fn(&Value) -> Value + Send>),
    /// A reply after a wait (a model that takes its time).
    After(Duration, Value),
    Status(u16),
    Slow(Duration),
}

/// A request the fake received: its auth header and its body.
pub type Seen = (Option<String>, Value);

#[derive(Clone, Default)]
pub struct Fake {
    pub script: Arc<Mutex<VecDeque<Step>>>,
    /// Every request body received, with its auth header.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// When set, Anthropic replies carry usage counted from the request (see [`Cache`]).
    pub cache: Option<Arc<Mutex<Cache>>>,
}

/// Anthropic's prompt caching as its documentation describes it, for token accounting: the
/// prompt is tools, then system, then messages, as blocks; a block with `cache_control` ends a
/// prefix that is written to the cache; a later request reads the longest prefix written before.
/// Tokens are estimated at 4 characters each.
const MIN_CACHED: u64 = 1024;

#[derive(Default)]
pub struct Cache {
    written: std::collections::HashSet<u64>,
}

impl Cache {
    /// The request's usage: (uncached input after the last breakpoint, read, written).
    pub fn account(&mut self, body: &Value) -> (u64, u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut blocks: Vec<(String, bool)> = Vec::new();
        let plain = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("cache_control");
            }
            v.to_string()
        };
        for t in body["tools"].as_array().into_iter().flatten() {
            blocks.push((plain(t), t.get("cache_control").is_some()));
        }
        for b in body["system"].as_array().into_iter().flatten() {
            blocks.push((plain(b), b.get("cache_control").is_some()));
        }
        for m in body["messages"].as_array().into_iter().flatten() {
            for b in m["content"].as_array().into_iter().flatten() {
                blocks.push((format!("{}:{}", m["role"], plain(b)), b.get("cache_control").is_some()));
            }
        }
        let tokens = |b: &str| (b.len() as u64).div_ceil(4);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let (mut upto, mut read, mut last_break) = (0u64, 0u64, 0u64);
        let mut breaks = Vec::new();
        for (text, marked) in &blocks {
            text.hash(&mut hasher);
            upto += tokens(text);
            let key = hasher.finish();
            if self.written.contains(&key) {
                read = upto;
            }
            if *marked && upto >= MIN_CACHED {
                breaks.push(key);
                last_break = upto;
            }
        }
        self.written.extend(breaks);
        let written = last_break.saturating_sub(read);
        (upto - read.max(last_break), read, written)
    }
}

async fn answer(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let auth = headers
        .get("x-api-key")
        .or_else(|| headers.get("authorization"))
        .map(|v| v.to_str().unwrap().to_owned());
    let usage = fake.cache.as_ref().map(|c| c.lock().unwrap().account(&body));
    fake.seen.lock().unwrap().push((auth, body.clone()));
    let step = fake.script.lock().unwrap().pop_front();
    let counted = |mut v: Value| {
        if let Some((input, read, written)) = usage {
            v["usage"]["input_tokens"] = json!(input);
            v["usage"]["cache_read_input_tokens"] = json!(read);
            v["usage"]["cache_creation_input_tokens"] = json!(written);
        }
        v
    };
    match step {
        Some(Step::Reply(v)) => (StatusCode::OK, Json(counted(v))),
        Some(Step::With(make)) => (StatusCode::OK, Json(counted(make(&body)))),
        Some(Step::After(d, v)) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, Json(v))
        }
        Some(Step::Status(code)) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"type": "fake", "message": format!("scripted {code}")}})),
        ),
        Some(Step::Slow(d)) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, Json(json!({})))
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"message": "script exhausted"}}))),
    }
}

pub async fn start_fake(script: Vec<Step>) -> (Fake, String) {
    serve_fake(Fake { script: Arc::new(Mutex::new(script.into())), ..Fake::default() }).await
}

/// An Anthropic fake that counts each request's tokens and cache use (see [`Cache`]).
pub async fn start_counting_fake(script: Vec<Step>) -> (Fake, String) {
    let cache = Some(Arc::new(Mutex::new(Cache::default())));
    serve_fake(Fake { script: Arc::new(Mutex::new(script.into())), cache, ..Fake::default() }).await
}

async fn serve_fake(fake: Fake) -> (Fake, String) {
    let app = axum::Router::new()
        .route("/v1/messages", post(answer))
        .route("/v1/chat/completions", post(answer))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

/// A provider's wire format for a turn with tool calls (and optional text).
pub fn tool_turn(provider: Provider, calls: &[(&str, &str, Value)]) -> Value {
    match provider {
        Provider::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "fake-model",
            "content": calls.iter().map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input})).collect::<Vec<_>>(),
            "stop_reason": "tool_use", "usage": {"input_tokens": 100, "output_tokens": 20}
        }),
        _ => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": calls.iter().map(|(id, name, input)| json!({"id": id, "type": "function", "function": {
                    "name": name,
                    // A string input is sent as the raw (possibly broken) arguments text.
                    "arguments": input.as_str().map_or_else(|| input.to_string(), str::to_owned)
                }})).collect::<Vec<_>>()}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    }
}

/// A provider's wire format for a turn that only writes text.
pub fn text_turn(provider: Provider, text: &str) -> Value {
    match provider {
        Provider::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "fake-model",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 100, "output_tokens": 20}
        }),
        _ => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    }
}

/// `turn` as the provider sends it when the answer hit `max_tokens` (the last block may be cut).
pub fn cut_off(provider: Provider, mut turn: Value) -> Value {
    match provider {
        Provider::Anthropic => turn["stop_reason"] = json!("max_tokens"),
        _ => turn["choices"][0]["finish_reason"] = json!("length"),
    }
    turn
}

/// A refusal: Anthropic's `refusal` stop reason, OpenAI's content filter.
pub fn refusal(provider: Provider) -> Value {
    let mut turn = text_turn(provider, "");
    match provider {
        Provider::Anthropic => turn["stop_reason"] = json!("refusal"),
        _ => turn["choices"][0]["finish_reason"] = json!("content_filter"),
    }
    turn
}

/// The tool names a request offered the model.
pub fn offered_tools(provider: Provider, body: &Value) -> Vec<String> {
    let tools = body.get("tools").and_then(Value::as_array).cloned().unwrap_or_default();
    tools
        .iter()
        .map(|t| match provider {
            Provider::Anthropic => t["name"].as_str().unwrap().to_owned(),
            _ => t["function"]["name"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// A request's tool choice in dynamcp's terms: `auto`, `required` or `none` (absent: `None`).
pub fn tool_choice(provider: Provider, body: &Value) -> Option<String> {
    let choice = body.get("tool_choice")?;
    Some(match provider {
        Provider::Anthropic => match choice["type"].as_str().unwrap() {
            "any" => "required".to_owned(),
            other => other.to_owned(),
        },
        _ => choice.as_str().unwrap().to_owned(),
    })
}

/// A request's system prompt as text.
pub fn system_prompt(provider: Provider, body: &Value) -> String {
    match provider {
        Provider::Anthropic => body["system"][0]["text"].as_str().unwrap().to_owned(),
        _ => body["messages"][0]["content"].as_str().unwrap().to_owned(),
    }
}

/// Points `args` at the fake at `url` as `provider`'s endpoint, with a test key.
pub fn configure(args: &mut ServeArgs, provider: Provider, url: &str, timeout_secs: u64, retries: u32) {
    args.llm.llm_provider = provider;
    args.llm.llm_model = Some("fake-model".into());
    args.llm.llm_timeout_secs = timeout_secs;
    args.llm.llm_max_retries = retries;
    match provider {
        Provider::Anthropic => {
            args.llm.llm_base_url = Some(url.to_owned());
            args.llm.anthropic_api_key = Some(Secret::new("sk-ant-test"));
        }
        _ => {
            args.llm.llm_base_url = Some(format!("{url}/v1"));
            args.llm.openai_api_key = Some(Secret::new("sk-test"));
        }
    }
}

/// The tool results the planner sent back in a request, as (content, is_error).
pub fn tool_results(provider: Provider, body: &Value) -> Vec<(String, bool)> {
    let messages = body["messages"].as_array().unwrap();
    match provider {
        Provider::Anthropic => messages
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["type"] == "tool_result")
            .map(|c| (c["content"].as_str().unwrap().to_owned(), c["is_error"].as_bool().unwrap()))
            .collect(),
        _ => messages
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| {
                let content = m["content"].as_str().unwrap().to_owned();
                let is_error = content.starts_with("Error: ");
                (content, is_error)
            })
            .collect(),
    }
}

//! The optional OpenAI-compatible embeddings endpoint, against a local fake speaking its wire
//! protocol: the catalog is embedded through it at start, search uses it, and a restart embeds
//! nothing again (vectors are cached by model and text).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use common::{Db, TestServer};
use dynamcp::config::EmbeddingSource;
use dynamcp::vault::Secret;
use serde_json::{Value, json};

const DIMS: usize = 64;

/// Texts embedded so far, and the auth headers seen.
#[derive(Clone, Default)]
struct Fake {
    texts: Arc<Mutex<Vec<String>>>,
    auth: Arc<Mutex<Vec<String>>>,
}

/// A deterministic bag-of-words vector: texts sharing words point the same way.
fn vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
        let h = word.bytes().fold(5381u64, |h, b| h.wrapping_mul(33) ^ u64::from(b));
        v[(h % DIMS as u64) as usize] += 1.0;
    }
    v
}

async fn embeddings(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    fake.auth.lock().unwrap().push(headers["authorization"].to_str().unwrap().to_owned());
    let inputs: Vec<String> =
        body["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    assert_eq!(body["model"], "fake-embed");
    fake.texts.lock().unwrap().extend(inputs.iter().cloned());
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev() // out of order on purpose: clients must use `index`
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t)}))
        .collect();
    Json(
        json!({"object": "list", "data": data, "model": "fake-embed", "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    )
}

#[tokio::test]
async fn the_catalog_is_embedded_remotely_once_and_searched() {
    let fake = Fake::default();
    let app = axum::Router::new().route("/v1/embeddings", post(embeddings)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_fixture_catalog(&args).await;
    args.store.no_model = false;
    args.store.embeddings = EmbeddingSource::Openai;
    args.store.embedding_base_url = url;
    args.store.embedding_model = "fake-embed".into();
    args.store.embedding_api_key = Some(Secret::new("sk-embed-test"));

    let server = TestServer::start_with(args.clone(), dir).await;
    let first_start = fake.texts.lock().unwrap().len();
    // The probe, then six servers and their tools.
    assert!(first_start > 7, "{first_start}");
    assert!(fake.texts.lock().unwrap().iter().any(|t| t.starts_with("Time MCP Server")));
    assert!(fake.auth.lock().unwrap().iter().all(|a| a == "Bearer sk-embed-test"));

    let (status, body) =
        server.post("/api/servers/search", json!({"query": "what time is it in Tokyo", "limit": 3})).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["id"], "time-mcp-server", "{body}");
    assert!(fake.texts.lock().unwrap().len() > first_start, "the query was not embedded");

    // A restart over the same store embeds no catalog text again: only the probe.
    let dir = server.stop().await;
    let before = fake.texts.lock().unwrap().len();
    let server = TestServer::start_with(args, dir).await;
    let added: Vec<String> = fake.texts.lock().unwrap()[before..].to_vec();
    assert_eq!(added, ["dynamcp"]);
    server.stop().await;
}

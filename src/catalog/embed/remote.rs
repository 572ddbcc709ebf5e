//! Embeddings from an OpenAI-compatible `/embeddings` endpoint (OpenAI's text-embedding-3-small, as
//! the design used, or any server that speaks the same protocol: Ollama, vLLM, llama.cpp, TEI).
//! Optional: the local model is the default and needs no network.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{EmbedError, Embedder, TextKind};
use crate::llm::Http;
use crate::vault::Secret;

/// Texts per request (OpenAI accepts up to 2,048; smaller batches keep requests modest).
const BATCH: usize = 96;
const PROVIDER: &str = "embeddings";

pub struct RemoteEmbedder {
    http: Http,
    url: String,
    key: Option<Secret>,
    model: String,
    id: String,
    dims: usize,
}

impl RemoteEmbedder {
    /// Connects and embeds one probe text to learn the model's dimension.
    pub async fn connect(
        http: Http,
        base_url: &str,
        key: Option<Secret>,
        model: &str,
    ) -> Result<Self, EmbedError> {
        let mut embedder = Self {
            http,
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            key,
            model: model.to_owned(),
            id: String::new(),
            dims: 0,
        };
        let probe = embedder.request(&["dynamcp".to_owned()]).await?;
        embedder.dims = probe.first().map_or(0, Vec::len);
        if embedder.dims == 0 {
            return Err(EmbedError::Model("the embeddings endpoint returned an empty vector".into()));
        }
        embedder.id = format!("remote-{model}-{}", embedder.dims);
        Ok(embedder)
    }

    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let bearer = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> =
            bearer.as_deref().map(|b| ("authorization", b)).into_iter().collect();
        let body = json!({ "model": self.model, "input": texts });
        let answer = self
            .http
            .post_json(PROVIDER, &self.url, &headers, &body)
            .await
            .map_err(|e| EmbedError::Model(e.to_string()))?;
        parse(&answer, texts.len())
    }
}

/// `{"data": [{"index", "embedding": [...]}, ...]}` → one L2-normalised vector per input, in order.
fn parse(answer: &Value, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let bad = |m: &str| EmbedError::Model(format!("the embeddings endpoint answered {m}"));
    let data = answer.get("data").and_then(Value::as_array).ok_or_else(|| bad("without a `data` list"))?;
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    for (position, item) in data.iter().enumerate() {
        let index = item.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
        let vector: Vec<f32> = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("an item without `embedding`"))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a non-numeric embedding"))?;
        let slot = out.get_mut(index).ok_or_else(|| bad("an index out of range"))?;
        *slot = Some(normalise(vector));
    }
    out.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| bad("fewer vectors than texts"))
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[async_trait]
impl Embedder for RemoteEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dims(&self) -> usize {
        self.dims
    }

    async fn embed(&self, texts: Vec<String>, _kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.request(chunk).await?);
        }
        Ok(out)
    }

    fn embed_blocking(&self, _texts: &[String], _kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        Err(EmbedError::Model("the remote embedder works asynchronously only (use `embed`)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_ordered_by_index_and_normalised() {
        let answer = json!({"object": "list", "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
            {"object": "embedding", "index": 0, "embedding": [3.0, 4.0]}
        ], "model": "m"});
        assert_eq!(parse(&answer, 2).unwrap(), vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert!(parse(&answer, 3).is_err());
        assert!(parse(&json!({"data": [{"index": 0, "embedding": ["x"]}]}), 1).is_err());
    }
}

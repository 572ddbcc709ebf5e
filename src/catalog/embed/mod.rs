//! Text embeddings for dense retrieval. [`Embedder`] is the edge: the default is a local BERT
//! model run in-process (all-MiniLM-L6-v2, no network, no key), loaded with candle and run by the
//! `lean` encoder on CPUs with AVX2/FMA or by candle elsewhere; tests and other deployments can
//! swap in another implementation.

mod bert;
#[cfg(target_arch = "x86_64")]
mod lean;
mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use bert::Bert;
pub use bert::Pooling;
pub use remote::RemoteEmbedder;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "embedding model file {path} is missing or unreadable ({reason}); fetch the model with `scripts/setup.sh --service`"
    )]
    Missing { path: PathBuf, reason: String },
    #[error("embedding model error: {0}")]
    Model(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("the embedding task was interrupted")]
    Interrupted,
}

/// Whether a text is a search query or a catalog document (some models embed them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Document,
}

#[async_trait]
pub trait Embedder: Send + Sync {
    /// Identifies the model (and its version): cached vectors are keyed by it.
    fn id(&self) -> &str;
    fn dims(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    async fn embed(&self, texts: Vec<String>, kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The same, on the calling thread (for CPU pools and benchmarks).
    fn embed_blocking(&self, texts: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// What computes the vectors, for reports.
    fn engine(&self) -> &str {
        "remote endpoint"
    }
}

/// A sentence-transformers BERT model from a directory holding `config.json`, `tokenizer.json`,
/// `model.safetensors` and optionally `1_Pooling/config.json`.
pub struct LocalEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    bert: Bert,
    tokenizer: Tokenizer,
    pooling: Pooling,
    query_prefix: String,
    batch: usize,
}

/// Texts longer than this many tokens are cut: catalog descriptions rarely need more, and
/// attention cost grows with the square of the length.
pub const MAX_TOKENS: usize = 128;
/// Texts per forward pass. Texts are sorted by length first, so padding stays small.
const BATCH: usize = 32;

impl LocalEmbedder {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Self::load_with(dir, true)
    }

    /// `lean: false` runs every input through candle (the tests compare the two encoders).
    fn load_with(dir: &Path, lean: bool) -> Result<Self, EmbedError> {
        let bert = Bert::load(dir, lean)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| EmbedError::Missing { path: tokenizer_path.clone(), reason: e.to_string() })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let pooling = match std::fs::read(dir.join("1_Pooling/config.json")) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if v["pooling_mode_cls_token"].as_bool() == Some(true) { Pooling::Cls } else { Pooling::Mean }
            }
            Err(_) => Pooling::Mean,
        };
        let query_prefix = std::fs::read(dir.join("config_sentence_transformers.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["prompts"]["query"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let id = Self::id_of(dir)?;
        Ok(Self { inner: Arc::new(Inner { id, bert, tokenizer, pooling, query_prefix, batch: BATCH }) })
    }

    /// The id the model in `dir` gets once loaded, read from its files without loading it:
    /// `<dir name>-<hash of config, tokenizer, weight size and truncation length>`. A changed
    /// model gets a new id, so stale cached vectors are never mixed with new ones.
    pub fn id_of(dir: &Path) -> Result<String, EmbedError> {
        let mut hasher = Sha256::new();
        for name in ["config.json", "tokenizer.json"] {
            let bytes = std::fs::read(dir.join(name))
                .map_err(|e| EmbedError::Missing { path: dir.join(name), reason: e.to_string() })?;
            hasher.update(&bytes);
        }
        let weights = std::fs::metadata(dir.join("model.safetensors")).map_err(|e| EmbedError::Missing {
            path: dir.join("model.safetensors"),
            reason: e.to_string(),
        })?;
        hasher.update(weights.len().to_le_bytes());
        // The truncation length changes the vectors of long texts.
        hasher.update((MAX_TOKENS as u64).to_le_bytes());
        let name = dir.file_name().map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned());
        Ok(format!("{name}-{}", &crate::catalog::record::hex(&hasher.finalize())[..12]))
    }
}

impl Inner {
    fn embed(&self, texts: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<String> = match kind {
            TextKind::Query if !self.query_prefix.is_empty() => {
                texts.iter().map(|t| format!("{}{t}", self.query_prefix)).collect()
            }
            _ => texts.to_vec(),
        };
        let encodings =
            self.tokenizer.encode_batch(inputs, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); encodings.len()];
        for chunk in order.chunks(self.batch) {
            let width = chunk.iter().map(|&i| encodings[i].get_ids().len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len());
            let mut mask = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let mut row = encodings[i].get_ids().to_vec();
                let mut m = vec![1u32; row.len()];
                row.resize(width, 0);
                m.resize(width, 0);
                ids.push(row);
                mask.push(m);
            }
            for (&i, v) in chunk.iter().zip(self.bert.embed(&ids, &mask, self.pooling)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn dims(&self) -> usize {
        self.inner.bert.config.hidden_size
    }

    async fn embed(&self, texts: Vec<String>, kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.embed(&texts, kind))
            .await
            .map_err(|_| EmbedError::Interrupted)?
    }

    fn embed_blocking(&self, texts: &[String], kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts, kind)
    }

    fn engine(&self) -> &str {
        self.inner.bert.engine()
    }
}

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default model, where `scripts/setup.sh` puts it.
    fn model_dir() -> PathBuf {
        std::env::var_os("DYNAMCP_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
    }

    #[test]
    fn reproduces_sentence_transformers_output() -> Result<(), EmbedError> {
        let model = LocalEmbedder::load(&model_dir())?;
        assert_eq!(model.dims(), 384);
        let v = model.embed_blocking(&["This is an example sentence".to_owned()], TextKind::Document)?;
        // The first values sentence-transformers prints for this sentence with all-MiniLM-L6-v2.
        let expected = [0.0676569, 0.0634960, 0.0487131, 0.0793050, 0.0374481];
        for (got, want) in v[0].iter().zip(expected) {
            assert!((got - want).abs() < 1e-4, "{:?}", &v[0][..5]);
        }
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn batching_and_padding_do_not_change_vectors() -> Result<(), EmbedError> {
        let model = LocalEmbedder::load(&model_dir())?;
        let texts: Vec<String> = [
            "send an email",
            "a much longer sentence about spreadsheets and rows and columns",
            "time in Tokyo",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let together = model.embed_blocking(&texts, TextKind::Document)?;
        for (i, t) in texts.iter().enumerate() {
            let alone = model.embed_blocking(std::slice::from_ref(t), TextKind::Document)?;
            assert!(cosine(&alone[0], &together[i]) > 0.9999, "text {i}");
        }
        assert!(cosine(&together[0], &together[2]) < cosine(&together[0], &together[0]));
        Ok(())
    }

    /// The lean encoder (used when the CPU has AVX2) and candle's give the same vectors, for one
    /// short query, a padded batch, and a text cut at the 128-token limit.
    #[test]
    fn lean_and_candle_encoders_agree() -> Result<(), EmbedError> {
        let lean = LocalEmbedder::load(&model_dir())?;
        let candle = LocalEmbedder::load_with(&model_dir(), false)?;
        assert_eq!(candle.engine(), "candle");
        if lean.engine() == "candle" {
            // No AVX2/FMA here: both are candle.
            return Ok(());
        }
        let long = "rows and columns of a quarterly sales spreadsheet with formulas ".repeat(20);
        let texts: Vec<String> =
            ["check my Gmail for invoices", "a", "what time is it in Tokyo right now, and in Lisbon?", &long]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        for kind in [TextKind::Query, TextKind::Document] {
            let a = lean.embed_blocking(&texts, kind)?;
            let b = candle.embed_blocking(&texts, kind)?;
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "text {i}: lean and candle differ by {worst}");
            }
        }
        Ok(())
    }

    #[test]
    fn meaning_beats_wording() -> Result<(), EmbedError> {
        let model = LocalEmbedder::load(&model_dir())?;
        let v = model.embed_blocking(
            &[
                "what time is it in Tokyo".into(),
                "get the current time in a timezone".into(),
                "create a GitHub issue".into(),
            ],
            TextKind::Document,
        )?;
        assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
        Ok(())
    }
}

//! A BERT encoder (the architecture of all-MiniLM-L6-v2 and its relatives) on candle, with mean
//! or CLS pooling and L2 normalisation, matching sentence-transformers' output.
//!
//! Weights load from `model.safetensors` read into memory (no mmap, so no `unsafe`).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::EmbedError;
#[cfg(target_arch = "x86_64")]
use super::lean::{Lean, LeanLayer, LeanParts, Norm, Packed};

/// The fields of a Hugging Face `config.json` that the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// A dense layer with its weight stored transposed (`in × out`, contiguous), so each call is one
/// plain 2-D matrix product with no per-call transposition of the weights.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    /// Loads one or more Hugging Face linear layers (`weight` is `out × in`) side by side: several
    /// layers that read the same input become one product (query, key and value).
    fn load(parts: &[VarBuilder], input: usize, output: usize) -> candle_core::Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for vb in parts {
            weights.push(vb.get((output, input), "weight")?);
            biases.push(vb.get(output, "bias")?);
        }
        Ok(Self { weight_t: Tensor::cat(&weights, 0)?.t()?.contiguous()?, bias: Tensor::cat(&biases, 0)? })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq, input) = x.dims3()?;
        let out = x.reshape((batch * seq, input))?.matmul(&self.weight_t)?.broadcast_add(&self.bias)?;
        out.reshape((batch, seq, self.bias.dim(0)?))
    }
}

struct Layer {
    /// Query, key and value in one product: `hidden × 3·hidden`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

/// The encoder with its weights: candle's general kernels, or the lean path when the CPU has AVX2
/// and FMA (faster on every input measured, see `BENCHMARKS.md`; the weights are held once).
pub struct Bert {
    encoder: Encoder,
    pub config: BertConfig,
}

enum Encoder {
    Candle(Candle),
    #[cfg(target_arch = "x86_64")]
    Lean(Lean),
}

struct Candle {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    gelu_tanh: bool,
}

fn model_err(e: candle_core::Error) -> EmbedError {
    EmbedError::Model(e.to_string())
}

impl Bert {
    /// Loads the model; `lean: false` keeps candle for every input (the tests compare the two
    /// encoders).
    pub fn load(dir: &Path, lean: bool) -> Result<Self, EmbedError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| EmbedError::Missing { path: dir.join(name), reason: e.to_string() })
        };
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| EmbedError::Model(format!("config.json: {e}")))?;
        let vb = VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, &Device::Cpu)
            .map_err(model_err)?;
        // Some exports prefix every weight with `bert.`.
        let vb =
            if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let norm = |vb: VarBuilder| candle_nn::layer_norm(h, eps, vb).map_err(model_err);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let dense =
                |parts: &[VarBuilder], i: usize, o: usize| Dense::load(parts, i, o).map_err(model_err);
            let attention = l.pp("attention.self");
            layers.push(Layer {
                qkv: dense(&[attention.pp("query"), attention.pp("key"), attention.pp("value")], h, h)?,
                attention_out: dense(&[l.pp("attention.output.dense")], h, h)?,
                attention_norm: norm(l.pp("attention.output.LayerNorm"))?,
                intermediate: dense(&[l.pp("intermediate.dense")], h, config.intermediate_size)?,
                output: dense(&[l.pp("output.dense")], config.intermediate_size, h)?,
                output_norm: norm(l.pp("output.LayerNorm"))?,
            });
        }
        if !h.is_multiple_of(config.num_attention_heads) {
            return Err(EmbedError::Model("hidden size is not a multiple of the head count".into()));
        }
        let candle = Candle {
            word: candle_nn::embedding(config.vocab_size, h, emb.pp("word_embeddings")).map_err(model_err)?,
            position: candle_nn::embedding(config.max_position_embeddings, h, emb.pp("position_embeddings"))
                .map_err(model_err)?,
            token_type: candle_nn::embedding(config.type_vocab_size, h, emb.pp("token_type_embeddings"))
                .map_err(model_err)?,
            embedding_norm: norm(emb.pp("LayerNorm"))?,
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            gelu_tanh: config.hidden_act == "gelu_new" || config.hidden_act == "gelu_pytorch_tanh",
        };
        // The lean path pays off with 8-lane (AVX2) vectors or wider; below that, candle's kernels.
        #[cfg(target_arch = "x86_64")]
        {
            let lanes = super::lean::lanes();
            if lean
                && lanes >= 8
                && let Some(parts) = candle.lean_parts(&config, 2 * lanes).map_err(model_err)?
            {
                return Ok(Self { encoder: Encoder::Lean(Lean::new(parts)), config });
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = lean;
        Ok(Self { encoder: Encoder::Candle(candle), config })
    }

    /// Which encoder runs, for the benchmark's report.
    pub fn engine(&self) -> &'static str {
        match self.encoder {
            Encoder::Candle(_) => "candle",
            #[cfg(target_arch = "x86_64")]
            Encoder::Lean(_) => "lean (AVX2/FMA)",
        }
    }

    /// Encodes a padded batch: `ids` and `mask` are `batch × seq` (mask 1 for tokens, 0 for
    /// padding). Returns one L2-normalised vector per row.
    pub fn embed(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.encoder {
            Encoder::Candle(candle) => candle.embed(ids, mask, pooling),
            #[cfg(target_arch = "x86_64")]
            Encoder::Lean(lean) => ids
                .iter()
                .zip(mask)
                .map(|(ids, mask)| {
                    let len = mask.iter().take_while(|&&m| m == 1).count();
                    lean.embed(&ids[..len], pooling).ok_or_else(|| {
                        EmbedError::Model("a token id or position is outside the model's tables".into())
                    })
                })
                .collect(),
        }
    }
}

impl Candle {
    /// The weights in the lean path's layout; `None` if a width does not suit it.
    #[cfg(target_arch = "x86_64")]
    fn lean_parts(&self, config: &BertConfig, panel: usize) -> candle_core::Result<Option<LeanParts>> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let norm = |n: &LayerNorm| -> candle_core::Result<Option<Norm>> {
            let Some(beta) = n.bias() else { return Ok(None) };
            Ok(Some(Norm { gamma: flat(n.weight())?, beta: flat(beta)?, eps: config.layer_norm_eps as f32 }))
        };
        let packed = |d: &Dense| -> candle_core::Result<Option<Packed>> {
            let (input, output) = d.weight_t.dims2()?;
            Ok(Packed::new(&flat(&d.weight_t)?, input, output, flat(&d.bias)?, panel))
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let (
                Some(qkv),
                Some(attention_out),
                Some(attention_norm),
                Some(intermediate),
                Some(output),
                Some(output_norm),
            ) = (
                packed(&l.qkv)?,
                packed(&l.attention_out)?,
                norm(&l.attention_norm)?,
                packed(&l.intermediate)?,
                packed(&l.output)?,
                norm(&l.output_norm)?,
            )
            else {
                return Ok(None);
            };
            layers.push(LeanLayer { qkv, attention_out, attention_norm, intermediate, output, output_norm });
        }
        let Some(embedding_norm) = norm(&self.embedding_norm)? else { return Ok(None) };
        Ok(Some(LeanParts {
            word: flat(self.word.embeddings())?,
            position: flat(self.position.embeddings())?,
            token_type: flat(&self.token_type.embeddings().get(0)?)?,
            embedding_norm,
            layers,
            hidden: config.hidden_size,
            heads: self.heads,
            gelu_tanh: self.gelu_tanh,
        }))
    }

    /// Encodes a padded batch: `ids` and `mask` are `batch × seq` (mask 1 for tokens, 0 for
    /// padding). Returns one L2-normalised vector per row.
    fn embed(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (batch, seq) = (ids.len(), ids.first().map_or(0, Vec::len));
        if batch == 0 || seq == 0 {
            return Ok(vec![Vec::new(); batch]);
        }
        let dev = Device::Cpu;
        let flat = |v: &[Vec<u32>]| v.iter().flatten().copied().collect::<Vec<u32>>();
        let ids_t = Tensor::from_vec(flat(ids), (batch, seq), &dev).map_err(model_err)?;
        let mask_u = flat(mask);
        let mask_f: Vec<f32> = mask_u.iter().map(|&m| m as f32).collect();
        let mask_t = Tensor::from_vec(mask_f, (batch, seq), &dev).map_err(model_err)?;
        let out = self.forward(&ids_t, &mask_t).map_err(model_err)?;
        let pooled = match pooling {
            Pooling::Cls => out.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            Pooling::Mean => {
                let m = mask_t.unsqueeze(2).map_err(model_err)?;
                let summed = out.broadcast_mul(&m).and_then(|t| t.sum(1)).map_err(model_err)?;
                let counts = m.sum(1).and_then(|c| c.clamp(1e-9, f64::MAX)).map_err(model_err)?;
                summed.broadcast_div(&counts)
            }
        }
        .map_err(model_err)?;
        let norms = pooled.sqr().and_then(|t| t.sum_keepdim(1)).and_then(|t| t.sqrt()).map_err(model_err)?;
        let normalized =
            pooled.broadcast_div(&norms.clamp(1e-12, f64::MAX).map_err(model_err)?).map_err(model_err)?;
        normalized.to_vec2::<f32>().map_err(model_err)
    }

    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, ids.device())?.unsqueeze(0)?;
        let types = ids.zeros_like()?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.embedding_norm.forward(&x)?;
        // Padding gets a large negative bias before the softmax: (batch, 1, 1, seq).
        let bias = ((mask.ones_like()? - mask)? * -10_000.0)?.reshape((batch, 1, 1, seq))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let hidden = self.heads * self.head_dim;
            let qkv = layer.qkv.forward(&x)?;
            let split = |part: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, part * hidden, hidden)?
                    .contiguous()?
                    .reshape((batch, seq, self.heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context =
                probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, self.heads * self.head_dim))?;
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = layer.intermediate.forward(&attended)?;
            let inner = if self.gelu_tanh { inner.gelu()? } else { inner.gelu_erf()? };
            x = layer.output_norm.forward(&(layer.output.forward(&inner)? + attended)?)?;
        }
        Ok(x)
    }
}

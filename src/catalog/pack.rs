//! Precomputed embeddings for the default catalog, shipped in the repository so a fresh install
//! does not spend minutes of CPU embedding 29k texts.
//!
//! The pack is the reproducible output of `dynamcp catalog pack-embeddings` (see
//! `catalog/README.md`): every server and tool text of the default catalog, embedded by the
//! local model, int8-quantised, keyed by the same text hash as the embedding cache. It is trusted
//! only when its model id matches the loaded model *and* the model, run on the pack's probe texts
//! now, reproduces the pack's probe vectors; otherwise it is ignored and texts are embedded.
//!
//! Layout (gzip of, little-endian): `b"DYNEMB01"`, model id (u32 length + UTF-8), dims (u32),
//! probe count (u32) then per probe: text (u32 length + UTF-8), scale (f32), dims × i8; entry
//! count (u32) then per entry: hash (16 bytes), scale (f32), dims × i8.

use std::collections::HashMap;
use std::io::{Read, Write};

use super::embed::{EmbedError, Embedder, TextKind, cosine};

const MAGIC: &[u8; 8] = b"DYNEMB01";
/// How close a probe must come to the packed vector (int8 quantisation costs ~1e-4).
const PROBE_AGREEMENT: f32 = 0.995;

/// The default catalog's pack, compiled in.
pub static DEFAULT_PACK: &[u8] = include_bytes!("../../catalog/default-embeddings.bin.gz");

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("embedding pack is malformed: {0}")]
    Malformed(&'static str),
    #[error("embedding pack I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Pack {
    pub model: String,
    pub dims: usize,
    probes: Vec<(String, Vec<f32>)>,
    entries: HashMap<[u8; 16], Vec<f32>>,
}

impl Pack {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The vector for a text hash (the hex string the embedding cache uses).
    pub fn get(&self, hash_hex: &str) -> Option<&Vec<f32>> {
        self.entries.get(&unhex(hash_hex)?)
    }

    /// Whether `embedder` is the model this pack was made with: same id, and it reproduces the
    /// probe vectors.
    pub async fn matches(&self, embedder: &dyn Embedder) -> Result<bool, EmbedError> {
        if embedder.id() != self.model || embedder.dims() != self.dims || self.probes.is_empty() {
            return Ok(false);
        }
        let texts: Vec<String> = self.probes.iter().map(|(t, _)| t.clone()).collect();
        let fresh = embedder.embed(texts, TextKind::Document).await?;
        Ok(self.probes.iter().zip(&fresh).all(|((_, packed), now)| cosine(packed, now) >= PROBE_AGREEMENT))
    }

    pub fn decode(gz: &[u8]) -> Result<Self, PackError> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut raw)?;
        let mut r = Reader { buf: &raw, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(PackError::Malformed("bad magic"));
        }
        let model = r.string()?;
        let dims = r.u32()? as usize;
        let mut probes = Vec::new();
        for _ in 0..r.u32()? {
            let text = r.string()?;
            probes.push((text, r.vector(dims)?));
        }
        let count = r.u32()? as usize;
        let mut entries = HashMap::with_capacity(count);
        for _ in 0..count {
            let mut hash = [0u8; 16];
            hash.copy_from_slice(r.take(16)?);
            entries.insert(hash, r.vector(dims)?);
        }
        if r.pos != raw.len() {
            return Err(PackError::Malformed("trailing bytes"));
        }
        Ok(Self { model, dims, probes, entries })
    }
}

/// Writes a pack: `entries` are `(hash hex, vector)`; `probes` are `(text, vector)`.
pub fn encode(
    model: &str,
    dims: usize,
    probes: &[(String, Vec<f32>)],
    entries: &[(String, Vec<f32>)],
) -> Result<Vec<u8>, PackError> {
    let mut raw = Vec::with_capacity(entries.len() * (dims + 20) + 1024);
    raw.extend_from_slice(MAGIC);
    put_string(&mut raw, model);
    raw.extend_from_slice(&(dims as u32).to_le_bytes());
    raw.extend_from_slice(&(probes.len() as u32).to_le_bytes());
    for (text, v) in probes {
        put_string(&mut raw, text);
        put_vector(&mut raw, v, dims)?;
    }
    let mut sorted: Vec<&(String, Vec<f32>)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    raw.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (hash, v) in sorted {
        raw.extend_from_slice(&unhex(hash).ok_or(PackError::Malformed("hash is not 16 hex bytes"))?);
        put_vector(&mut raw, v, dims)?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw)?;
    Ok(gz.finish()?)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_vector(out: &mut Vec<u8>, v: &[f32], dims: usize) -> Result<(), PackError> {
    if v.len() != dims {
        return Err(PackError::Malformed("vector of the wrong length"));
    }
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max == 0.0 { 0.0 } else { max / 127.0 };
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend(
        v.iter()
            .map(|x| if scale == 0.0 { 0u8 } else { (x / scale).round().clamp(-127.0, 127.0) as i8 as u8 }),
    );
    Ok(())
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(PackError::Malformed("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, PackError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self) -> Result<f32, PackError> {
        Ok(f32::from_bits(self.u32()?))
    }

    fn string(&mut self) -> Result<String, PackError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| PackError::Malformed("string is not UTF-8"))
    }

    fn vector(&mut self, dims: usize) -> Result<Vec<f32>, PackError> {
        let scale = self.f32()?;
        Ok(self.take(dims)?.iter().map(|&b| f32::from(b as i8) * scale).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_quantisation_error() -> Result<(), PackError> {
        let v = vec![0.6f32, -0.8, 0.0];
        let hash = "00112233445566778899aabbccddeeff".to_owned();
        let bytes = encode("m-1", 3, &[("probe".into(), v.clone())], &[(hash.clone(), v.clone())])?;
        let pack = Pack::decode(&bytes)?;
        assert_eq!((pack.model.as_str(), pack.dims, pack.len()), ("m-1", 3, 1));
        let got = pack.get(&hash).ok_or(PackError::Malformed("missing"))?;
        // Each component is within half a quantisation step (max |v| / 127 / 2).
        assert!(got.iter().zip(&v).all(|(g, w)| (g - w).abs() <= 0.8 / 254.0 + 1e-6), "{got:?}");
        assert!(pack.get("ff112233445566778899aabbccddeeff").is_none());
        assert!(Pack::decode(&bytes[..bytes.len() - 3]).is_err());
        Ok(())
    }
}

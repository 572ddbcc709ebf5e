//! Dense retrieval: one vector per server (name, description, categories, tool names) and one per
//! tool, int8-quantised (a quarter of f32's memory, integer dot products).
//! A server is found through its own vector or through its best-matching tool.
//!
//! Large scans run in two passes: the Hamming distance between sign bits (6 machine words per
//! 384-dim vector) picks a generous shortlist, which is then scored exactly in int8. The shortlist is
//! many times the number of hits asked for, so the ranking matches the exact scan in practice
//! (`eval` shows the same recall); small sets are scanned exactly.

use std::collections::HashMap;

use rayon::prelude::*;

use super::bm25::top_k;

/// Vectors quantised to int8 with one scale per vector: `v ≈ scale · q`.
#[derive(Debug, Default, Clone)]
pub struct Quantized {
    dims: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
    /// Sign bits of each vector, `words` u64 per vector.
    bits: Vec<u64>,
}

/// Below this many vectors a scan is exact; above it, sign bits pick the shortlist first.
const EXACT_BELOW: usize = 4096;

impl Quantized {
    pub fn new(dims: usize) -> Self {
        Self { dims, data: Vec::new(), scales: Vec::new(), bits: Vec::new() }
    }

    fn words(&self) -> usize {
        self.dims.div_ceil(64)
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Appends a vector; a vector of the wrong length is stored as zeros (it then matches
    /// nothing) rather than shifting every later one.
    pub fn push(&mut self, v: &[f32]) {
        let (q, scale) = if v.len() == self.dims { quantize(v) } else { (vec![0; self.dims], 0.0) };
        self.push_quantized(&q, scale);
    }

    fn push_quantized(&mut self, q: &[i8], scale: f32) {
        self.bits.extend(sign_bits(q));
        self.data.extend_from_slice(q);
        self.scales.push(scale);
    }

    /// The set of `rows`: vectors as stored, quantised on every core, and rows copied as they
    /// are from another set (of the same dimension; else stored as zeros).
    pub fn assemble(dims: usize, rows: &[Row<'_>]) -> Self {
        let quantized: Vec<Option<(Vec<i8>, f32)>> = rows
            .par_iter()
            .map(|row| match row {
                Row::Bytes(bytes) => {
                    let v = super::from_bytes(bytes);
                    Some(if v.len() == dims { quantize(&v) } else { (vec![0; dims], 0.0) })
                }
                Row::Copied(..) => None,
            })
            .collect();
        let mut set = Self::new(dims);
        set.data.reserve(rows.len() * dims);
        set.scales.reserve(rows.len());
        set.bits.reserve(rows.len() * set.words());
        let zeros = vec![0; dims];
        for (row, quantized) in rows.iter().zip(&quantized) {
            match (row, quantized) {
                (_, Some((q, scale))) => set.push_quantized(q, *scale),
                (Row::Copied(from, i), None) if from.dims == dims && *i < from.len() => {
                    set.push_quantized(&from.data[i * dims..(i + 1) * dims], from.scales[*i]);
                }
                _ => set.push_quantized(&zeros, 0.0),
            }
        }
        set
    }

    /// The `shortlist` stored vectors most likely nearest the query, by sign-bit Hamming distance,
    /// in no particular order; every vector when the set is small.
    fn candidates(&self, query: &[i8], shortlist: usize) -> Vec<u32> {
        let n = self.len();
        if n < EXACT_BELOW || shortlist >= n {
            return (0..n as u32).collect();
        }
        let q = sign_bits(query);
        let words = self.words();
        let distances: Vec<u16> = if words == 6 {
            // 384 dimensions (MiniLM, bge-small): a fixed-size loop the compiler unrolls.
            let q: [u64; 6] = std::array::from_fn(|w| q[w]);
            self.bits.chunks_exact(6).map(|row| hamming::<6>(&q, row)).collect()
        } else {
            self.bits.chunks_exact(words).map(|row| hamming_slice(&q, row)).collect()
        };
        // Counting selection: the smallest distance whose cumulative count reaches the shortlist.
        let mut histogram = vec![0usize; words * 64 + 1];
        for &d in &distances {
            histogram[usize::from(d)] += 1;
        }
        let mut cutoff = 0;
        let mut seen = 0;
        for (d, count) in histogram.iter().enumerate() {
            seen += count;
            cutoff = d as u16;
            if seen >= shortlist {
                break;
            }
        }
        distances.iter().enumerate().filter(|(_, d)| **d <= cutoff).map(|(i, _)| i as u32).collect()
    }

    /// Cosine similarity of `query` (normalised) with the stored vectors most likely to be near it
    /// (at least `shortlist` of them, or all): `(index, score)`, unordered.
    pub fn nearest(&self, query: &[f32], shortlist: usize) -> Vec<(u32, f32)> {
        if query.len() != self.dims || self.dims == 0 {
            return Vec::new();
        }
        let (q, qs) = quantize(query);
        self.candidates(&q, shortlist)
            .into_iter()
            .map(|i| {
                let at = i as usize * self.dims;
                (i, dot_i8(&q, &self.data[at..at + self.dims]) as f32 * qs * self.scales[i as usize])
            })
            .collect()
    }

    /// Cosine similarity of `query` (normalised) with every stored vector, in order.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        if query.len() != self.dims || self.dims == 0 {
            return vec![0.0; self.len()];
        }
        let (q, qs) = quantize(query);
        self.data
            .chunks_exact(self.dims)
            .zip(&self.scales)
            .map(|(row, s)| dot_i8(&q, row) as f32 * qs * s)
            .collect()
    }

    pub fn get(&self, i: usize) -> Vec<f32> {
        self.data[i * self.dims..(i + 1) * self.dims].iter().map(|&x| f32::from(x) * self.scales[i]).collect()
    }
}

fn hamming<const W: usize>(q: &[u64; W], row: &[u64]) -> u16 {
    let mut d = 0;
    for w in 0..W {
        d += (q[w] ^ row[w]).count_ones();
    }
    d as u16
}

fn hamming_slice(q: &[u64], row: &[u64]) -> u16 {
    q.iter().zip(row).map(|(a, b)| (a ^ b).count_ones()).sum::<u32>() as u16
}

fn sign_bits(q: &[i8]) -> Vec<u64> {
    let mut bits = vec![0u64; q.len().div_ceil(64)];
    for (i, &x) in q.iter().enumerate() {
        if x > 0 {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    (v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// One row of a set being assembled: a vector as stored (little-endian `f32` bytes), or row `i`
/// of an existing set, copied as it is.
pub enum Row<'a> {
    Bytes(&'a [u8]),
    Copied(&'a Quantized, usize),
}

/// Integer dot product; written so the compiler vectorises it (widening multiply-add).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for i in chunks * 16..a.len() {
        sum += i32::from(a[i]) * i32::from(b[i]);
    }
    sum
}

/// Shortlist sizes per hit asked for, and at least `MIN_SHORTLIST`. Servers have about two tools
/// each, so tools get more.
const SERVER_SHORTLIST: usize = 10;
const TOOL_SHORTLIST: usize = 20;
const MIN_SHORTLIST: usize = 1000;

/// Server and tool vectors for a catalog, aligned with the search index's document order.
#[derive(Debug, Default, Clone)]
pub struct DenseIndex {
    pub servers: Quantized,
    pub tools: Quantized,
    /// For each tool vector: its server (document) and the tool's position in that server.
    pub tool_owner: Vec<(u32, u32)>,
    /// The cache hash of each vector's text: the servers', then the tools'.
    pub hashes: Vec<String>,
    /// The model that made the vectors.
    pub model: String,
}

impl DenseIndex {
    /// Each vector's position (in [`DenseIndex::hashes`]' order) by its text's hash: what a
    /// later index can copy.
    pub fn positions_by_hash(&self) -> HashMap<&str, usize> {
        self.hashes.iter().enumerate().map(|(i, h)| (h.as_str(), i)).collect()
    }

    /// The vector at `position` (in [`DenseIndex::hashes`]' order), as `(set, row)`.
    pub fn row(&self, position: usize) -> (&Quantized, usize) {
        let n_servers = self.servers.len();
        if position < n_servers { (&self.servers, position) } else { (&self.tools, position - n_servers) }
    }

    pub fn dims(&self) -> usize {
        self.servers.dims()
    }

    /// The `k` servers whose own vector is nearest the query.
    pub fn search_servers(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut hits = self.servers.nearest(query, (k * SERVER_SHORTLIST).max(MIN_SHORTLIST));
        top_k(&mut hits, k);
        hits
    }

    /// The `k` servers with the nearest tools, each scored by its best tool; with that tool's
    /// position.
    pub fn search_tools(&self, query: &[f32], k: usize) -> Vec<(u32, f32, u32)> {
        let scores = self.tools.nearest(query, (k * TOOL_SHORTLIST).max(MIN_SHORTLIST));
        best_per_server(
            scores
                .into_iter()
                .map(|(i, s)| (self.tool_owner[i as usize].0, s, self.tool_owner[i as usize].1)),
            k,
        )
    }

    /// Both dense rankings of one query, as [`SearchIndex`](super::SearchIndex) fuses them.
    pub fn hits(&self, query: &[f32], k: usize, servers: bool, tools: bool) -> DenseHits {
        DenseHits {
            servers: if servers { self.search_servers(query, k) } else { Vec::new() },
            tools: if tools { self.search_tools(query, k) } else { Vec::new() },
        }
    }
}

/// One query's dense rankings: servers by their own vector `(doc, score)`, and servers by their
/// best tool `(doc, score, tool position)`; from the in-process index or from pgvector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DenseHits {
    pub servers: Vec<(u32, f32)>,
    pub tools: Vec<(u32, f32, u32)>,
}

/// Scored tools `(doc, score, tool)` -> the `k` best servers, each with its best tool.
pub fn best_per_server(tools: impl IntoIterator<Item = (u32, f32, u32)>, k: usize) -> Vec<(u32, f32, u32)> {
    let mut tools: Vec<(u32, f32, u32)> = tools.into_iter().collect();
    tools.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)).then(a.2.cmp(&b.2)));
    let mut seen = std::collections::HashSet::with_capacity(k);
    let mut hits = Vec::with_capacity(k);
    for (doc, s, tool) in tools {
        if hits.len() == k {
            break;
        }
        if seen.insert(doc) {
            hits.push((doc, s, tool));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn quantised_cosine_is_close_to_exact() {
        let mut q = Quantized::new(20);
        let a = unit(&(0..20).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>());
        let b = unit(&(0..20).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>());
        q.push(&a);
        q.push(&b);
        q.push(&[1.0; 3]); // wrong length: stored as zeros
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let s = q.scores(&a);
        assert!((s[0] - 1.0).abs() < 0.01, "{s:?}");
        assert!((s[1] - exact).abs() < 0.01, "{s:?} vs {exact}");
        assert_eq!(s[2], 0.0);
    }

    /// A deterministic pseudo-random unit vector.
    fn noise(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        unit(&v)
    }

    #[test]
    fn the_sign_bit_shortlist_keeps_the_exact_nearest() {
        let dims = 384;
        let query = noise(1_000_003, dims);
        let mut q = Quantized::new(dims);
        // 20,000 vectors; every 1,000th is the query plus noise of growing size.
        for i in 0..20_000u64 {
            if i % 1000 == 0 {
                let t = 0.2 + i as f32 / 80_000.0;
                let mixed: Vec<f32> =
                    query.iter().zip(noise(i + 1, dims)).map(|(a, b)| (1.0 - t) * a + t * b).collect();
                q.push(&unit(&mixed));
            } else {
                q.push(&noise(i + 1, dims));
            }
        }
        let exact = {
            let mut all: Vec<(u32, f32)> =
                q.scores(&query).into_iter().enumerate().map(|(i, s)| (i as u32, s)).collect();
            top_k(&mut all, 20);
            all
        };
        let mut fast = q.nearest(&query, 200);
        assert!(fast.len() >= 200 && fast.len() < 2_000, "shortlist of {}", fast.len());
        top_k(&mut fast, 20);
        assert_eq!(fast, exact);
        assert_eq!(exact.iter().filter(|(i, _)| i % 1000 == 0).count(), 20, "{exact:?}");
    }

    #[test]
    fn tools_vote_for_their_server() {
        let mut index =
            DenseIndex { servers: Quantized::new(2), tools: Quantized::new(2), ..DenseIndex::default() };
        index.servers.push(&[1.0, 0.0]);
        index.servers.push(&[0.0, 1.0]);
        for (owner, v) in [((0, 0), [0.0, 1.0]), ((1, 0), [0.6, 0.8]), ((1, 1), [1.0, 0.0])] {
            index.tools.push(&v);
            index.tool_owner.push(owner);
        }
        let by_server = index.search_servers(&[1.0, 0.0], 2);
        assert_eq!(by_server[0].0, 0);
        let by_tool = index.search_tools(&[1.0, 0.0], 2);
        assert_eq!((by_tool[0].0, by_tool[0].2), (1, 1));
        assert!((by_tool[0].1 - 1.0).abs() < 0.01);
    }
}

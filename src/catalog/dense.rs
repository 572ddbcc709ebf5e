//! Dense retrieval: one vector per server (name, description, categories, tool names) and one per
//! tool, int8-quantised (a quarter of f32's memory, integer dot products) and scanned exactly.
//! A server is found through its own vector or through its best-matching tool.

use super::bm25::top_k;

/// Vectors quantised to int8 with one scale per vector: `v ≈ scale · q`.
#[derive(Debug, Default, Clone)]
pub struct Quantized {
    dims: usize,
    data: Vec<i8>,
    scales: Vec<f32>,
}

impl Quantized {
    pub fn new(dims: usize) -> Self {
        Self { dims, data: Vec::new(), scales: Vec::new() }
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
        self.data.extend_from_slice(&q);
        self.scales.push(scale);
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

fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    (v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
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

/// Server and tool vectors for a catalog, aligned with the search index's document order.
#[derive(Debug, Default, Clone)]
pub struct DenseIndex {
    pub servers: Quantized,
    pub tools: Quantized,
    /// For each tool vector: its server (document) and the tool's position in that server.
    pub tool_owner: Vec<(u32, u32)>,
}

impl DenseIndex {
    pub fn dims(&self) -> usize {
        self.servers.dims()
    }

    /// The `k` servers whose own vector is nearest the query.
    pub fn search_servers(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut hits: Vec<(u32, f32)> =
            self.servers.scores(query).into_iter().enumerate().map(|(i, s)| (i as u32, s)).collect();
        top_k(&mut hits, k);
        hits
    }

    /// The `k` servers with the nearest tools, each scored by its best tool; with that tool's
    /// position.
    pub fn search_tools(&self, query: &[f32], k: usize) -> Vec<(u32, f32, u32)> {
        let scores = self.tools.scores(query);
        let mut best: std::collections::HashMap<u32, (f32, u32)> = std::collections::HashMap::new();
        for (i, s) in scores.into_iter().enumerate() {
            let (doc, tool) = self.tool_owner[i];
            let entry = best.entry(doc).or_insert((f32::MIN, tool));
            if s > entry.0 {
                *entry = (s, tool);
            }
        }
        let mut hits: Vec<(u32, f32)> = best.iter().map(|(d, (s, _))| (*d, *s)).collect();
        top_k(&mut hits, k);
        hits.into_iter().map(|(d, s)| (d, s, best[&d].1)).collect()
    }
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

    #[test]
    fn tools_vote_for_their_server() {
        let mut index =
            DenseIndex { servers: Quantized::new(2), tools: Quantized::new(2), tool_owner: vec![] };
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

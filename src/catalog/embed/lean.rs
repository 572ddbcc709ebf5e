//! The same BERT encoder as [`super::bert`], run without candle, one text at a time (no padding).
//!
//! It was built for one search query of a few dozen tokens, where candle's general kernels spend
//! more time packing matrices, allocating tensors and dispatching operations than multiplying; on
//! import batches it is as fast as candle, so it serves every input. This path keeps each dense layer's
//! weights pre-packed in column panels, multiplies with a register-blocked FMA kernel written once
//! over `pulp`'s SIMD types and dispatched safely at run time, splits every product's columns
//! across two threads, and does attention, layer norms and GELU in place on plain vectors. It is
//! built only when the CPU has AVX2 and FMA; otherwise [`super::bert::Bert`] uses candle for
//! everything. (pulp's AVX-512 level measured no faster here: `BENCHMARKS.md`.)
//!
//! The output matches candle's to float rounding (`tests` below compare the two).

use pulp::bytemuck::{cast_slice, cast_slice_mut};
use pulp::{Arch, Simd, WithSimd};

use super::bert::Pooling;

/// Input rows per register block: 4 rows × 2 vectors = 8 accumulators, enough to keep both FMA
/// units busy.
const BLOCK: usize = 4;

/// Floats per SIMD vector that pulp dispatches to on this CPU: 8 with AVX2 and FMA, 1 without.
pub(super) fn lanes() -> usize {
    struct Lanes;
    impl WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            lanes_of::<S>()
        }
    }
    Arch::new().dispatch(Lanes)
}

/// Floats per vector of the SIMD level `S`.
#[inline(always)]
fn lanes_of<S: Simd>() -> usize {
    size_of::<S::f32s>() / size_of::<f32>()
}

/// A dense layer, `out = x · W + b`, with `W` (`input × output`) packed as panels of two vectors'
/// width (`panel` columns), each `input × panel` contiguous, so the kernel reads every weight once,
/// in order.
pub(super) struct Packed {
    input: usize,
    output: usize,
    panel: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl Packed {
    /// `weight_t` is `input × output`, row-major (the transposed Hugging Face weight); `panel` is
    /// twice [`lanes`].
    pub(super) fn new(
        weight_t: &[f32],
        input: usize,
        output: usize,
        bias: Vec<f32>,
        panel: usize,
    ) -> Option<Self> {
        if panel == 0
            || !output.is_multiple_of(panel)
            || weight_t.len() != input * output
            || bias.len() != output
        {
            return None;
        }
        let mut panels = Vec::with_capacity(input * output);
        for p in 0..output / panel {
            for row in weight_t.chunks_exact(output) {
                panels.extend_from_slice(&row[p * panel..(p + 1) * panel]);
            }
        }
        Some(Self { input, output, panel, panels, bias })
    }

    /// `x` is `rows × input`, row-major, with `rows` a multiple of [`BLOCK`]. Returns
    /// `rows × output`, row-major, bias added.
    fn forward(&self, arch: Arch, x: &[f32], rows: usize) -> Vec<f32> {
        let panel = self.panel;
        let panel_len = self.input * panel;
        let out_len = rows * panel;
        let panel_count = self.output / panel;
        let mut by_panel = vec![0.0f32; panel_count * out_len];
        let run = |out: &mut [f32], weights: &[f32]| {
            for (out, w) in out.chunks_exact_mut(out_len).zip(weights.chunks_exact(panel_len)) {
                arch.dispatch(PanelKernel { x, w, out, input: self.input });
            }
        };
        let half = panel_count / 2;
        let (first, second) = by_panel.split_at_mut(half * out_len);
        let (w_first, w_second) = self.panels.split_at(half * panel_len);
        rayon::join(|| run(first, w_first), || run(second, w_second));
        let mut out = vec![0.0f32; rows * self.output];
        for (p, block) in by_panel.chunks_exact(out_len).enumerate() {
            let columns = p * panel..(p + 1) * panel;
            let bias = &self.bias[columns.clone()];
            for (row, src) in out.chunks_exact_mut(self.output).zip(block.chunks_exact(panel)) {
                for ((o, s), b) in row[columns.clone()].iter_mut().zip(src).zip(bias) {
                    *o = s + b;
                }
            }
        }
        out
    }
}

/// One panel's product for every row block: `out` (`rows × panel`) = `x` (`rows × input`) · `w`
/// (`input × panel`), where a panel is two SIMD vectors wide.
struct PanelKernel<'a> {
    x: &'a [f32],
    w: &'a [f32],
    out: &'a mut [f32],
    input: usize,
}

impl WithSimd for PanelKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, w, out, input } = self;
        let w: &[S::f32s] = cast_slice(w);
        let out: &mut [S::f32s] = cast_slice_mut(out);
        for (block, out) in x.chunks_exact(input * BLOCK).zip(out.chunks_exact_mut(2 * BLOCK)) {
            let zero = simd.splat_f32s(0.0);
            let mut acc = [[zero; 2]; BLOCK];
            let (r0, rest) = block.split_at(input);
            let (r1, rest) = rest.split_at(input);
            let (r2, r3) = rest.split_at(input);
            for ((((a, b), c), d), w) in r0.iter().zip(r1).zip(r2).zip(r3).zip(w.chunks_exact(2)) {
                for (acc, &v) in acc.iter_mut().zip([a, b, c, d]) {
                    let v = simd.splat_f32s(v);
                    acc[0] = simd.mul_add_f32s(v, w[0], acc[0]);
                    acc[1] = simd.mul_add_f32s(v, w[1], acc[1]);
                }
            }
            for (pair, acc) in out.chunks_exact_mut(2).zip(acc) {
                pair.copy_from_slice(&acc);
            }
        }
    }
}

pub(super) struct Norm {
    pub(super) gamma: Vec<f32>,
    pub(super) beta: Vec<f32>,
    pub(super) eps: f32,
}

impl Norm {
    /// Normalises each row of `x` (rows of `gamma.len()`) in place.
    fn apply(&self, x: &mut [f32]) {
        let width = self.gamma.len();
        for row in x.chunks_exact_mut(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

pub(super) struct LeanLayer {
    pub(super) qkv: Packed,
    pub(super) attention_out: Packed,
    pub(super) attention_norm: Norm,
    pub(super) intermediate: Packed,
    pub(super) output: Packed,
    pub(super) output_norm: Norm,
}

pub(super) struct Lean {
    arch: Arch,
    model: LeanParts,
}

/// The model in the lean path's layout, taken from the loaded weights.
pub(super) struct LeanParts {
    pub(super) word: Vec<f32>,
    pub(super) position: Vec<f32>,
    /// Token type 0's embedding (single texts never use type 1).
    pub(super) token_type: Vec<f32>,
    pub(super) embedding_norm: Norm,
    pub(super) layers: Vec<LeanLayer>,
    pub(super) hidden: usize,
    pub(super) heads: usize,
    pub(super) gelu_tanh: bool,
}

impl Lean {
    /// The panels in `model` must be packed `2 × lanes()` wide.
    pub(super) fn new(model: LeanParts) -> Self {
        Self { arch: Arch::new(), model }
    }

    /// The longest input this path takes (rows of the position table).
    pub(super) fn max_tokens(&self) -> usize {
        self.model.position.len() / self.model.hidden
    }

    /// One L2-normalised vector for one unpadded token sequence, or `None` for an empty one, one
    /// longer than the position table, or an id outside the vocabulary (the caller reports it).
    pub(super) fn embed(&self, ids: &[u32], pooling: Pooling) -> Option<Vec<f32>> {
        let h = self.model.hidden;
        let tokens = ids.len();
        if tokens == 0 || tokens > self.max_tokens() {
            return None;
        }
        let rows = tokens.div_ceil(BLOCK) * BLOCK;
        let mut x = vec![0.0f32; rows * h];
        for (i, (&id, row)) in ids.iter().zip(x.chunks_exact_mut(h)).enumerate() {
            let word = self.model.word.get(id as usize * h..(id as usize + 1) * h)?;
            let position = &self.model.position[i * h..(i + 1) * h];
            for (((v, w), p), t) in row.iter_mut().zip(word).zip(position).zip(&self.model.token_type) {
                *v = w + p + t;
            }
        }
        self.model.embedding_norm.apply(&mut x[..tokens * h]);
        for layer in &self.model.layers {
            let qkv = layer.qkv.forward(self.arch, &x, rows);
            let context = self.attention(&qkv, tokens, rows);
            let mut attended = layer.attention_out.forward(self.arch, &context, rows);
            add_norm(&mut attended, &x, &layer.attention_norm, tokens);
            let mut inner = layer.intermediate.forward(self.arch, &attended, rows);
            self.arch.dispatch(Gelu {
                x: &mut inner[..tokens * layer.intermediate.output],
                tanh: self.model.gelu_tanh,
            });
            let mut out = layer.output.forward(self.arch, &inner, rows);
            add_norm(&mut out, &attended, &layer.output_norm, tokens);
            x = out;
        }
        let mut pooled = match pooling {
            Pooling::Cls => x[..h].to_vec(),
            Pooling::Mean => {
                let mut sum = vec![0.0f32; h];
                for row in x[..tokens * h].chunks_exact(h) {
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                sum.iter_mut().for_each(|s| *s /= tokens as f32);
                sum
            }
        };
        let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        pooled.iter_mut().for_each(|v| *v /= norm);
        Some(pooled)
    }

    /// Multi-head self-attention over the first `tokens` rows of `qkv` (`rows × 3·hidden`).
    /// Returns the context, `rows × hidden` (padding rows zero).
    fn attention(&self, qkv: &[f32], tokens: usize, rows: usize) -> Vec<f32> {
        let h = self.model.hidden;
        let head_dim = h / self.model.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut context = vec![0.0f32; rows * h];
        let mut scores = vec![0.0f32; tokens];
        for head in 0..self.model.heads {
            let at = |row: usize, part: usize| {
                let start = row * 3 * h + part * h + head * head_dim;
                &qkv[start..start + head_dim]
            };
            for i in 0..tokens {
                let q = at(i, 0);
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = dot(q, at(j, 1)) * scale;
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0;
                for s in &mut scores {
                    *s = (*s - max).exp();
                    total += *s;
                }
                let out = &mut context[i * h + head * head_dim..i * h + (head + 1) * head_dim];
                for (j, s) in scores.iter().enumerate() {
                    let p = s / total;
                    out.iter_mut().zip(at(j, 2)).for_each(|(o, v)| *o += p * v);
                }
            }
        }
        context
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums, so the compiler can keep them in one vector register.
    let mut partial = [0.0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            partial[k] += a[k] * b[k];
        }
    }
    let tail: f32 =
        a.chunks_exact(8).remainder().iter().zip(b.chunks_exact(8).remainder()).map(|(x, y)| x * y).sum();
    partial.iter().sum::<f32>() + tail
}

/// `x += residual`, then layer norm, over the first `tokens` rows.
fn add_norm(x: &mut [f32], residual: &[f32], norm: &Norm, tokens: usize) {
    let live = tokens * norm.gamma.len();
    x[..live].iter_mut().zip(&residual[..live]).for_each(|(v, r)| *v += r);
    norm.apply(&mut x[..live]);
}

/// GELU in place: exact (erf) or the tanh approximation, as the model's config says.
struct Gelu<'a> {
    x: &'a mut [f32],
    tanh: bool,
}

impl WithSimd for Gelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, tanh } = self;
        if tanh {
            for v in x.iter_mut() {
                let u = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
                *v = 0.5 * *v * (1.0 + u.tanh());
            }
            return;
        }
        let lanes = lanes_of::<S>();
        let whole = x.len() / lanes * lanes;
        let (head, tail) = x.split_at_mut(whole);
        let half = simd.splat_f32s(0.5);
        let one = simd.splat_f32s(1.0);
        let inv_sqrt2 = simd.splat_f32s(std::f32::consts::FRAC_1_SQRT_2);
        for v in cast_slice_mut::<f32, S::f32s>(head) {
            let e = erf_simd(simd, simd.mul_f32s(*v, inv_sqrt2));
            *v = simd.mul_f32s(simd.mul_f32s(half, *v), simd.add_f32s(one, e));
        }
        for v in tail {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// erf as an odd rational function on [-4, 4] (beyond which erf is ±1 in f32): absolute error
/// below 1e-6, checked against a double-precision series in the tests.
const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
const ERF_Q: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];

#[inline(always)]
fn erf_simd<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.min_f32s(simd.max_f32s(x, simd.splat_f32s(-4.0)), simd.splat_f32s(4.0));
    let x2 = simd.mul_f32s(x, x);
    let mut p = simd.splat_f32s(ERF_P[0]);
    for c in &ERF_P[1..] {
        p = simd.mul_add_f32s(p, x2, simd.splat_f32s(*c));
    }
    let mut q = simd.splat_f32s(ERF_Q[0]);
    for c in &ERF_Q[1..] {
        q = simd.mul_add_f32s(q, x2, simd.splat_f32s(*c));
    }
    simd.div_f32s(simd.mul_f32s(x, p), q)
}

fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ERF_P[1..].iter().fold(ERF_P[0], |p, c| p * x2 + c);
    let q = ERF_Q[1..].iter().fold(ERF_Q[0], |q, c| q * x2 + c);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in double precision from its Maclaurin series (converges for |x| ≤ 4 with enough terms).
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_gelu_are_accurate_scalar_and_vector() {
        let xs: Vec<f32> = (-5000..5000).map(|i| i as f32 / 1000.0).collect();
        let want = |x: f32| if x.abs() > 4.0 { x.signum() as f64 } else { erf_reference(x as f64) };
        let worst = xs.iter().map(|&x| (erf(x) as f64 - want(x)).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "scalar erf: worst error {worst}");
        // GELU through the dispatched SIMD path (its length leaves a scalar tail too).
        let mut gelu = xs[..9_999].to_vec();
        Arch::new().dispatch(Gelu { x: &mut gelu, tanh: false });
        let worst = xs
            .iter()
            .zip(&gelu)
            .map(|(&x, &g)| (g as f64 - 0.5 * x as f64 * (1.0 + want(x / std::f32::consts::SQRT_2))).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "vector GELU: worst error {worst}");
    }

    #[test]
    fn packed_product_matches_naive() {
        let panel = 2 * lanes();
        let (rows, input, output) = (8, 24, 6 * panel);
        let x: Vec<f32> = (0..rows * input).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
        let w: Vec<f32> = (0..input * output).map(|i| ((i * 11 % 17) as f32 - 8.0) / 9.0).collect();
        let bias: Vec<f32> = (0..output).map(|i| i as f32 / 10.0).collect();
        let packed = Packed::new(&w, input, output, bias.clone(), panel).unwrap();
        let got = packed.forward(Arch::new(), &x, rows);
        for r in 0..rows {
            for c in 0..output {
                let want: f32 =
                    (0..input).map(|k| x[r * input + k] * w[k * output + c]).sum::<f32>() + bias[c];
                assert!(
                    (got[r * output + c] - want).abs() < 1e-4,
                    "row {r} col {c}: {} vs {want}",
                    got[r * output + c]
                );
            }
        }
        assert!(
            Packed::new(&w, input, output - 1, bias, panel).is_none(),
            "widths not a multiple of the panel are refused"
        );
    }
}

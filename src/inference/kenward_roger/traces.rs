//! The traces of Ĉ = ZᵀHZ that Kenward–Roger needs with several factors,
//! without the dense qt×qt Ĉ: K̂_rs = tr(E_rĈE_sĈ) and κ_r = tr(E_rĈ), from
//! Ĉ = N − ΨΨᵀ (`elimination`: N sparse but for its m×m block N₂₂, X = Ψᵀ
//! m×qt).
//!
//! For E_r, E_s on the first factor, or E_r there and E_s on another
//! factor, with R = ΨΨᵀ and all of E, N, R symmetric:
//! ```text
//!   tr(E_rĈE_sĈ) = tr(E_rNE_sN) − 2 tr(E_rNE_sR) + ⟨Γ_r, Γ_s⟩,   Γ_r = XE_rXᵀ (m×m)
//! ```
//! where tr(E_rNE_sN) and tr(E_rNE_sR) only visit N's nonzero blocks (the
//! first factor's level blocks and its cells) and R's entries there (dot
//! products of X's columns). For E_r, E_s both on the rest, Ĉ₂₂ = N₂₂ − X₂ᵀX₂
//! (m×m) is formed and the trace summed over its level blocks.
//!
//! Cost: Σ_r nlev_r·m² for the Γ_r, m³ for Ĉ₂₂, O(cells·q²·m) for the
//! rest; memory: one m×m per parameter of the first factor, and two more.

use super::columns::Columns;
use super::elimination::Elimination;
use super::terms::Param;

pub struct Traces {
    /// K̂_rs, nr×nr symmetric, column-major
    pub k: Vec<f64>,
    /// κ_r = tr(E_rĈ)
    pub kappa: Vec<f64>,
}

/// Column i of X dotted with its column j (four partial sums, so that the
/// compiler can vectorise).
fn dot(x: &[f64], m: usize, i: usize, j: usize) -> f64 {
    let (u, v) = (&x[i * m..(i + 1) * m], &x[j * m..(j + 1) * m]);
    let mut acc = [0.0; 4];
    let (uc, vc) = (u.chunks_exact(4), v.chunks_exact(4));
    let tail: f64 = uc
        .remainder()
        .iter()
        .zip(vc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in uc.zip(vc) {
        for t in 0..4 {
            acc[t] += a[t] * b[t];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// The lower triangle of Γ = X E Xᵀ = Σ_{(a,b)} X_a X_bᵀ over E's local
/// terms, X_a = X's columns of component a at every level of the factor
/// (E symmetric, so Γ is; the upper triangle is left zero).
fn gamma_lower(cols: &Columns, x: &[f64], m: usize, pr: &Param, out: &mut [f64]) {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    let f = &cols.factors[pr.factor];
    let (q, nlev, off) = (f.q, f.nlev, cols.off[pr.factor]);
    let par = faer::get_global_parallelism();
    out.iter_mut().for_each(|v| *v = 0.0);
    let component = |a: usize| {
        let start = (off + a) * m;
        faer::MatRef::from_column_major_slice_with_stride(
            &x[start..start + (nlev - 1) * q * m + m],
            m,
            nlev,
            q * m,
        )
    };
    for (a, b) in pr.local_terms() {
        let dst = faer::MatMut::from_column_major_slice_mut(out, m, m);
        matmul(
            dst,
            BlockStructure::TriangularLower,
            faer::Accum::Add,
            component(a),
            BlockStructure::Rectangular,
            component(b).transpose(),
            BlockStructure::Rectangular,
            1.0,
            par,
        );
    }
}

/// ⟨Γ, Γ'⟩ = tr(ΓΓ') for symmetric m×m matrices given by their lower triangles.
fn inner_lower(g: &[f64], h: &[f64], m: usize) -> f64 {
    let all: f64 = g.iter().zip(h).map(|(a, b)| a * b).sum();
    let diag: f64 = (0..m).map(|i| g[i * m + i] * h[i * m + i]).sum();
    2.0 * all - diag
}

/// What the traces are read from.
struct Parts<'a> {
    cols: &'a Columns<'a>,
    el: &'a Elimination,
    x: &'a [f64],
    params: &'a [Param],
    terms: Vec<Vec<(usize, usize)>>,
    /// Ĉ₂₂, m×m (both triangles)
    c22: Vec<f64>,
    /// ⟨Γ_r, Γ_s⟩ where r or s is on the first factor, nr×nr
    gram: Vec<f64>,
}

/// Ĉ₂₂ = N₂₂ − X₂ᵀX₂ in N₂₂'s place (lower triangle by faer, then mirrored).
fn rest_block(n22: Vec<f64>, m: usize, r0: usize, x: &[f64]) -> Vec<f64> {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    let mut c22 = n22;
    let par = faer::get_global_parallelism();
    let x2 = faer::MatRef::from_column_major_slice(&x[r0 * m..], m, m);
    let dst = faer::MatMut::from_column_major_slice_mut(&mut c22, m, m);
    matmul(
        dst,
        BlockStructure::TriangularLower,
        faer::Accum::Add,
        x2.transpose(),
        BlockStructure::Rectangular,
        x2,
        BlockStructure::Rectangular,
        -1.0,
        par,
    );
    for c in 0..m {
        for r in c + 1..m {
            c22[r * m + c] = c22[c * m + r];
        }
    }
    c22
}

/// ⟨Γ_r, Γ_s⟩ for r on the first factor (their Γ kept) and every s (the
/// others one at a time, in one buffer).
fn gamma_products(cols: &Columns, x: &[f64], m: usize, params: &[Param]) -> Vec<f64> {
    let nr = params.len();
    let first: Vec<usize> = (0..nr).filter(|&r| params[r].factor == 0).collect();
    let kept: Vec<Vec<f64>> = first
        .iter()
        .map(|&r| {
            let mut g = vec![0.0; m * m];
            gamma_lower(cols, x, m, &params[r], &mut g);
            g
        })
        .collect();
    let mut own = Vec::new();
    let mut gram = vec![0.0; nr * nr];
    for s in 0..nr {
        let gs = match first.iter().position(|&r| r == s) {
            Some(i) => &kept[i],
            None => {
                own.resize(m * m, 0.0);
                gamma_lower(cols, x, m, &params[s], &mut own);
                &own
            }
        };
        for (i, &r) in first.iter().enumerate() {
            let v = inner_lower(&kept[i], gs, m);
            gram[s * nr + r] = v;
            gram[r * nr + s] = v;
        }
    }
    gram
}

impl Parts<'_> {
    /// First column of factor f's level l among the rest's m.
    fn rest_start(&self, f: usize, l: usize) -> usize {
        self.cols.column(f, l) - self.el.r0
    }

    /// K̂_rs, both parameters on the rest: Σ Ĉ₂₂[(l,b),(l',c)]·Ĉ₂₂[(l',d),(l,a)]
    /// over the levels l of r's factor and l' of s's, read down columns of l'.
    fn both_rest(&self, r: usize, s: usize) -> f64 {
        let (fr, fs, m) = (self.params[r].factor, self.params[s].factor, self.el.m);
        let c22 = &self.c22;
        let mut v = 0.0;
        for l2 in 0..self.cols.factors[fs].nlev {
            let o2 = self.rest_start(fs, l2);
            for l in 0..self.cols.factors[fr].nlev {
                let o = self.rest_start(fr, l);
                for &(a, b) in &self.terms[r] {
                    for &(c, d) in &self.terms[s] {
                        v += c22[(o2 + c) * m + o + b] * c22[(o2 + d) * m + o + a];
                    }
                }
            }
        }
        v
    }

    /// K̂_rs, r on the first factor: tr(E_rNE_sN) − 2 tr(E_rNE_sR) + ⟨Γ_r, Γ_s⟩,
    /// N and R visited at N's nonzero blocks only (level blocks when s is on
    /// the first factor too, else the cells with s's factor).
    fn first(&self, r: usize, s: usize) -> f64 {
        use rayon::prelude::*;
        const CHUNK: usize = 256;
        let n0 = self.el.n0;
        let partial: Vec<(f64, f64)> = (0..n0.div_ceil(CHUNK))
            .into_par_iter()
            .map(|ci| self.first_levels(r, s, ci * CHUNK..((ci + 1) * CHUNK).min(n0)))
            .collect();
        let (t1, t2) = partial
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        t1 - 2.0 * t2 + self.gram[s * self.params.len() + r]
    }

    /// (tr(E_rNE_sN), tr(E_rNE_sR)) over some levels of the first factor.
    fn first_levels(&self, r: usize, s: usize, levels: std::ops::Range<usize>) -> (f64, f64) {
        let (el, x) = (self.el, self.x);
        let (m, r0, q0, fs) = (el.m, el.r0, el.q0, self.params[s].factor);
        let (tr_, ts) = (&self.terms[r], &self.terms[s]);
        let (mut t1, mut t2) = (0.0, 0.0);
        for l in levels {
            if fs == 0 {
                let n11 = &el.n11[l * q0 * q0..(l + 1) * q0 * q0];
                for &(a, b) in tr_ {
                    for &(c, d) in ts {
                        t1 += n11[c * q0 + b] * n11[a * q0 + d];
                        t2 += n11[c * q0 + b] * dot(x, m, l * q0 + d, l * q0 + a);
                    }
                }
                continue;
            }
            for cell in el.level_cells(l).iter().filter(|c| c.factor == fs) {
                let nb = el.n_block(cell);
                for &(a, b) in tr_ {
                    for &(c, d) in ts {
                        // N[(l,b),(l',c)] = N₁₂[b, c], N[(l',d),(l,a)] = N₁₂[a, d]
                        t1 += nb[c * q0 + b] * nb[d * q0 + a];
                        t2 += nb[c * q0 + b] * dot(x, m, r0 + cell.col + d, l * q0 + a);
                    }
                }
            }
        }
        (t1, t2)
    }

    /// κ_r = Σ over r's levels and terms of Ĉ[(l,b),(l,a)].
    fn kappa(&self, r: usize) -> f64 {
        let (el, f) = (self.el, self.params[r].factor);
        let (m, q0) = (el.m, el.q0);
        let mut v = 0.0;
        for l in 0..self.cols.factors[f].nlev {
            for &(a, b) in &self.terms[r] {
                v += if f == 0 {
                    el.n11[l * q0 * q0 + a * q0 + b] - dot(self.x, m, l * q0 + b, l * q0 + a)
                } else {
                    let o = self.rest_start(f, l);
                    self.c22[(o + a) * m + o + b]
                };
            }
        }
        v
    }
}

/// K̂ and κ; `n22` is the elimination's N₂₂, taken over for Ĉ₂₂.
pub fn traces(
    cols: &Columns,
    el: &Elimination,
    n22: Vec<f64>,
    x: &[f64],
    params: &[Param],
) -> Traces {
    let nr = params.len();
    let terms = params.iter().map(|p| p.local_terms()).collect();
    let parts = Parts {
        cols,
        el,
        x,
        params,
        terms,
        c22: rest_block(n22, el.m, el.r0, x),
        gram: gamma_products(cols, x, el.m, params),
    };
    let mut k = vec![0.0; nr * nr];
    for s in 0..nr {
        for r in 0..=s {
            // params come factor by factor: r's factor ≤ s's
            let (lo, hi) = if params[r].factor <= params[s].factor {
                (r, s)
            } else {
                (s, r)
            };
            let v = if params[lo].factor > 0 {
                parts.both_rest(lo, hi)
            } else {
                parts.first(lo, hi)
            };
            k[s * nr + r] = v;
            k[r * nr + s] = v;
        }
    }
    let kappa = (0..nr).map(|r| parts.kappa(r)).collect();
    Traces { k, kappa }
}

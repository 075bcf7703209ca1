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

/// Column i of X dotted with its column j.
fn dot(x: &[f64], m: usize, i: usize, j: usize) -> f64 {
    x[i * m..(i + 1) * m].iter().zip(&x[j * m..(j + 1) * m]).map(|(a, b)| a * b).sum()
}

/// Γ = X E Xᵀ = Σ_{(a,b)} X_a X_bᵀ over E's local terms, X_a = X's columns of
/// component a at every level of the factor.
fn gamma(cols: &Columns, x: &[f64], m: usize, pr: &Param) -> Vec<f64> {
    let f = &cols.factors[pr.factor];
    let (q, nlev, off) = (f.q, f.nlev, cols.off[pr.factor]);
    let par = faer::get_global_parallelism();
    let mut out = vec![0.0; m * m];
    let component = |a: usize| {
        let start = (off + a) * m;
        faer::MatRef::from_column_major_slice_with_stride(&x[start..start + (nlev - 1) * q * m + m], m, nlev, q * m)
    };
    for (a, b) in pr.local_terms() {
        let dst = faer::MatMut::from_column_major_slice_mut(&mut out, m, m);
        faer::linalg::matmul::matmul(dst, faer::Accum::Add, component(a), component(b).transpose(), 1.0, par);
    }
    out
}

pub fn traces(cols: &Columns, el: &Elimination, x: &[f64], params: &[Param]) -> Traces {
    let nr = params.len();
    let (m, r0, q0) = (el.m, el.r0, el.q0);
    let qq = q0 * q0;
    let terms: Vec<Vec<(usize, usize)>> = params.iter().map(|p| p.local_terms()).collect();
    // Ĉ₂₂ = N₂₂ − X₂ᵀX₂
    let mut c22 = el.n22.clone();
    if m > 0 {
        let par = faer::get_global_parallelism();
        let x2 = faer::MatRef::from_column_major_slice(&x[r0 * m..], m, m);
        let dst = faer::MatMut::from_column_major_slice_mut(&mut c22, m, m);
        faer::linalg::matmul::matmul(dst, faer::Accum::Add, x2.transpose(), x2, -1.0, par);
    }
    // ⟨Γ_r, Γ_s⟩ for r on the first factor (their Γ kept), s any
    let first: Vec<usize> = (0..nr).filter(|&r| params[r].factor == 0).collect();
    let gammas0: Vec<Vec<f64>> = first.iter().map(|&r| gamma(cols, x, m, &params[r])).collect();
    let mut gram = vec![0.0; nr * nr];
    for s in 0..nr {
        let own;
        let gs = match first.iter().position(|&r| r == s) {
            Some(i) => &gammas0[i],
            None => {
                own = gamma(cols, x, m, &params[s]);
                &own
            }
        };
        for (i, &r) in first.iter().enumerate() {
            let v: f64 = gammas0[i].iter().zip(gs).map(|(a, b)| a * b).sum();
            gram[s * nr + r] = v;
            gram[r * nr + s] = v;
        }
    }
    let rest_start = |f: usize, l: usize| cols.column(f, l) - r0;
    // K̂_rs for parameter r on factor fr ≤ fs, parameter s's factor
    let pair_trace = |r: usize, s: usize| -> f64 {
        let (fr, fs) = (params[r].factor, params[s].factor);
        let (tr_, ts) = (&terms[r], &terms[s]);
        if fr > 0 {
            // both on the rest: Ĉ₂₂ directly
            let mut v = 0.0;
            for l in 0..cols.factors[fr].nlev {
                let o = rest_start(fr, l);
                for l2 in 0..cols.factors[fs].nlev {
                    let o2 = rest_start(fs, l2);
                    for &(a, b) in tr_ {
                        for &(c, d) in ts {
                            v += c22[(o2 + c) * m + o + b] * c22[(o + a) * m + o2 + d];
                        }
                    }
                }
            }
            return v;
        }
        let (mut t1, mut t2) = (0.0, 0.0);
        for l in 0..el.n0 {
            if fs == 0 {
                let n11 = &el.n11[l * qq..(l + 1) * qq];
                for &(a, b) in tr_ {
                    for &(c, d) in ts {
                        t1 += n11[c * q0 + b] * n11[a * q0 + d];
                        t2 += n11[c * q0 + b] * dot(x, m, l * q0 + d, l * q0 + a);
                    }
                }
            } else {
                for cell in el.cells[l].iter().filter(|c| c.factor == fs) {
                    for &(a, b) in tr_ {
                        for &(c, d) in ts {
                            // N[(l,b),(l',c)] = N₁₂[b, c], N[(l',d),(l,a)] = N₁₂[a, d]
                            t1 += cell.n[c * q0 + b] * cell.n[d * q0 + a];
                            t2 += cell.n[c * q0 + b] * dot(x, m, r0 + cell.col + d, l * q0 + a);
                        }
                    }
                }
            }
        }
        t1 - 2.0 * t2 + gram[s * nr + r]
    };
    let mut k = vec![0.0; nr * nr];
    for s in 0..nr {
        for r in 0..=s {
            let v = if params[r].factor <= params[s].factor { pair_trace(r, s) } else { pair_trace(s, r) };
            k[s * nr + r] = v;
            k[r * nr + s] = v;
        }
    }
    let kappa = params
        .iter()
        .zip(&terms)
        .map(|(pr, tm)| {
            let f = pr.factor;
            let mut v = 0.0;
            for l in 0..cols.factors[f].nlev {
                for &(a, b) in tm {
                    v += if f == 0 { el.n11[l * qq + a * q0 + b] - dot(x, m, l * q0 + b, l * q0 + a) } else { c22[(rest_start(f, l) + a) * m + rest_start(f, l) + b] };
                }
            }
            v
        })
        .collect();
    Traces { k, kappa }
}

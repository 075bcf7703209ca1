//! Several grouping factors: ZᵀZ is no longer block diagonal, so it is built
//! densely (qt = Σ_f nlev_f·q_f columns, factor f's level l at columns
//! off_f + l·q_f …) from the per-level blocks and the pair cells, and the
//! module doc's algebra is done on qt×qt matrices:
//!
//! ```text
//!   S = ΛᵀKΛ + I = LLᵀ,  M = ΛS⁻¹Λᵀ,  T = I − KM
//!   Ĉ = TK,  B̂ = T ZᵀX,  B̂₂ = T B̂,  Ĉ₂ = TĈ (only its level-diagonal blocks)
//!   σ²[X y]ᵀΣ⁻¹[X y] = [X y]ᵀ[X y] − (Zᵀ[X y])ᵀ M (Zᵀ[X y])
//!   Â₂ = Â − (ZᵀX)ᵀ M B̂,  Â₃ = Â₂ − B̂ᵀ M B̂,   tr H² = n − qt + ‖S⁻¹‖²_F
//! ```
//! Cost: a Cholesky, a triangular inverse and three qt×qt products, about
//! 4·qt³ flops, and at most four qt×qt matrices (8·qt² bytes each) at a time
//! (qt = 2,000 in 0.9 s on 2 cores). The library uses `crossed` (no qt×qt
//! matrix); this is the reference the tests compare it with.

use super::linalg::{mul, mul_tn, symmetrize};
use super::terms::{Param, Sums};
use super::Moments;
use crate::crossed::{Factor, Pair};
use crate::dense::{cholesky_lower, invert_leading};

/// Which column block a column belongs to: (start of its level's block, factor).
fn column_blocks(factors: &[Factor]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut offsets = Vec::with_capacity(factors.len());
    let mut blocks = Vec::new();
    let mut o = 0;
    for (fi, f) in factors.iter().enumerate() {
        offsets.push(o);
        for _ in 0..f.nlev {
            blocks.push((o, fi));
            o += f.q;
        }
    }
    (offsets, blocks)
}

/// Which side Λ (block diagonal, per level) multiplies from, and whether transposed.
#[derive(Clone, Copy)]
enum Side {
    /// X Λ (X has qt columns)
    Right,
    /// X Λᵀ
    RightT,
    /// Λ X (X has qt rows)
    Left,
    /// Λᵀ X
    LeftT,
}

fn apply_lambda(
    x: &[f64],
    rows: usize,
    cols: usize,
    side: Side,
    blocks: &[(usize, usize)],
    factors: &[Factor],
    lambdas: &[Vec<f64>],
) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for &(o, fi) in blocks {
        let (q, lam) = (factors[fi].q, &lambdas[fi]);
        // Λ[t, c] = lam[c·q + t], lower triangular
        for c in 0..q {
            for t in 0..q {
                match side {
                    // (XΛ)[:, o+c] += X[:, o+t] Λ[t, c]
                    Side::Right if t >= c => {
                        let v = lam[c * q + t];
                        for r in 0..rows {
                            out[(o + c) * rows + r] += x[(o + t) * rows + r] * v;
                        }
                    }
                    // (XΛᵀ)[:, o+c] += X[:, o+t] Λ[c, t]
                    Side::RightT if t <= c => {
                        let v = lam[t * q + c];
                        for r in 0..rows {
                            out[(o + c) * rows + r] += x[(o + t) * rows + r] * v;
                        }
                    }
                    // (ΛX)[o+c, :] += Λ[c, t] X[o+t, :]
                    Side::Left if t <= c => {
                        let v = lam[t * q + c];
                        for j in 0..cols {
                            out[j * rows + o + c] += v * x[j * rows + o + t];
                        }
                    }
                    // (ΛᵀX)[o+c, :] += Λ[t, c] X[o+t, :]
                    Side::LeftT if t >= c => {
                        let v = lam[c * q + t];
                        for j in 0..cols {
                            out[j * rows + o + c] += v * x[j * rows + o + t];
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The module doc's moments for several factors, on qt×qt matrices.
#[allow(clippy::too_many_arguments)]
pub fn moments(
    n: f64,
    p: usize,
    factors: &[Factor],
    pairs: &[Pair],
    lambdas: &[Vec<f64>],
    params: &[Param],
    rtr: &[f64],
) -> Moments {
    let k = p + 1;
    let (offsets, blocks) = column_blocks(factors);
    let qt: usize = factors.iter().map(|f| f.nlev * f.q).sum();
    // K = ZᵀZ and Zᵀ[X y]
    let mut kmat = vec![0.0; qt * qt];
    let mut zr = vec![0.0; qt * k];
    for (fi, f) in factors.iter().enumerate() {
        let q = f.q;
        for l in 0..f.nlev {
            let o = offsets[fi] + l * q;
            for c in 0..q {
                for r in 0..q {
                    kmat[(o + c) * qt + o + r] = f.ztz[l * q * q + c * q + r];
                }
            }
            for j in 0..k {
                for r in 0..q {
                    zr[j * qt + o + r] = f.ztr[l * q * k + j * q + r];
                }
            }
        }
    }
    for pr in pairs {
        let (qa, qb) = (factors[pr.a].q, factors[pr.b].q);
        for (ci, &(la, lb)) in pr.cells.iter().enumerate() {
            let (oa, ob) = (
                offsets[pr.a] + la as usize * qa,
                offsets[pr.b] + lb as usize * qb,
            );
            for c in 0..qb {
                for r in 0..qa {
                    let v = pr.blocks[ci * qa * qb + c * qa + r];
                    kmat[(ob + c) * qt + oa + r] = v;
                    kmat[(oa + r) * qt + ob + c] = v;
                }
            }
        }
    }
    // S = Λᵀ(KΛ) + I = LLᵀ, S⁻¹ in place of L (lower triangle), mirrored
    let klam = apply_lambda(&kmat, qt, qt, Side::Right, &blocks, factors, lambdas);
    let mut s = apply_lambda(&klam, qt, qt, Side::LeftT, &blocks, factors, lambdas);
    drop(klam);
    for i in 0..qt {
        s[i * qt + i] += 1.0;
    }
    let ok = cholesky_lower(&mut s, qt);
    debug_assert!(ok, "S ≥ I is positive definite");
    invert_leading(&mut s, qt, qt);
    let mut fro = 0.0;
    for c in 0..qt {
        fro += s[c * qt + c] * s[c * qt + c];
        for r in c + 1..qt {
            let v = s[c * qt + r];
            fro += 2.0 * v * v;
            s[r * qt + c] = v;
        }
    }
    // M = ΛS⁻¹Λᵀ, T = I − KM, Ĉ = TK
    let sl = apply_lambda(&s, qt, qt, Side::RightT, &blocks, factors, lambdas);
    drop(s);
    let mut m = apply_lambda(&sl, qt, qt, Side::Left, &blocks, factors, lambdas);
    drop(sl);
    symmetrize(&mut m, qt);
    let mut t = mul(&kmat, &m, qt, qt, qt);
    for v in t.iter_mut() {
        *v = -*v;
    }
    for i in 0..qt {
        t[i * qt + i] += 1.0;
    }
    let mut c = mul(&t, &kmat, qt, qt, qt);
    drop(kmat);
    symmetrize(&mut c, qt);
    // [X y]ᵀH[X y], B̂, B̂₂, Â₂, Â₃
    let mzr = mul(&m, &zr, qt, qt, k);
    let corr = mul_tn(&zr, &mzr, qt, k, k);
    let mut a_full: Vec<f64> = rtr.iter().zip(&corr).map(|(a, b)| a - b).collect();
    symmetrize(&mut a_full, k);
    let zx = &zr[..qt * p];
    let b = mul(&t, zx, qt, qt, p);
    let mb = mul(&m, &b, qt, qt, p);
    drop(m);
    let b2 = mul(&t, &b, qt, qt, p);
    let zx_mb = mul_tn(zx, &mb, qt, p, p);
    let b_mb = mul_tn(&b, &mb, qt, p, p);
    let mut a2 = vec![0.0; p * p];
    for j in 0..p {
        for i in 0..p {
            a2[j * p + i] = a_full[j * k + i] - zx_mb[j * p + i];
        }
    }
    symmetrize(&mut a2, p);
    let mut a3: Vec<f64> = a2.iter().zip(&b_mb).map(|(a, b)| a - b).collect();
    symmetrize(&mut a3, p);
    // Each parameter acts on every level of its factor: global terms.
    let terms: Vec<Vec<(usize, usize)>> = params
        .iter()
        .map(|pr| {
            let f = &factors[pr.factor];
            let local = pr.local_terms();
            let o = offsets[pr.factor];
            (0..f.nlev)
                .flat_map(|l| {
                    local
                        .iter()
                        .map(move |&(a, b)| (o + l * f.q + a, o + l * f.q + b))
                })
                .collect()
        })
        .collect();
    // Ĉ₂[i, j] = Σ_t T[i, t] Ĉ[t, j], asked for within level blocks only
    let (tm, cm) = (&t, &c);
    let c2_at = move |i: usize, j: usize| -> f64 {
        let cj = &cm[j * qt..(j + 1) * qt];
        let a: f64 = (0..qt).map(|u| tm[u * qt + i] * cj[u]).sum();
        let ci = &cm[i * qt..(i + 1) * qt];
        let b: f64 = (0..qt).map(|u| tm[u * qt + j] * ci[u]).sum();
        0.5 * (a + b)
    };
    let mut sums = Sums::new(params.len(), p);
    let mut y = vec![0.0; qt * p];
    sums.add_block(&terms, qt, &b, &b2, &c, &c2_at, &mut y);
    Moments {
        a_full,
        a2,
        a3,
        tr_h2: n - qt as f64 + fro,
        sums,
    }
}

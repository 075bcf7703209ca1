//! Several grouping factors (crossed or nested): the module doc's moments
//! without any qt×qt matrix, qt = Σ_f nlev_f·q_f.
//!
//! Thin quantities (a few columns) use K = ZᵀZ and M = ΛS⁻¹Λᵀ as operators
//! (`columns`, and S⁻¹ by block elimination in `elimination`):
//! ```text
//!   σ²[X y]ᵀΣ⁻¹[X y] = [X y]ᵀ[X y] − (Zᵀ[X y])ᵀM(Zᵀ[X y])
//!   B̂ = ZᵀX − K·MZᵀX,   B̂₂ = B̂ − K·MB̂,   Â₂ = Â − (ZᵀX)ᵀMB̂,   Â₃ = Â₂ − B̂ᵀMB̂
//!   Y_s = ĈE_sB̂ = K·v − K·M·K·v, v = E_sB̂           (for Q̂_rs = B̂ᵀE_rY_s)
//! ```
//! The traces K̂_rs = tr(E_rĈE_sĈ) and κ_r = tr(E_rĈ) come from `traces`.
//! The others follow from them: ΛΛᵀ = Σ_s d_sE_s with d_s = (Λ_fΛ_fᵀ)_ij
//! (parameter s is element (i, j) of factor f's D/σ²), and H⁻¹ = I + ZΛΛᵀZᵀ
//! gives H² = H − HZΛΛᵀZᵀH, so
//! ```text
//!   Ĉ₂ = Ĉ − ĈΛΛᵀĈ:      K̂_rσ = tr(E_rĈ₂) = κ_r − Σ_s d_s K̂_rs
//!   tr H = n − tr(ĈΛΛᵀ):  tr H² = n − 2 Σ_r d_rκ_r + Σ_rs d_r d_s K̂_rs
//! ```
//! (like T = I − KM in the dense algebra, these differences lose about
//! log₁₀‖KΛΛᵀ‖ digits).
//!
//! Cost (m = columns of the factors after the first, which should be the one
//! with most levels, as the fit orders them): m²·qt for Ψ and the Γ_r of the
//! first factor's parameters, m³ for the rest; memory m·qt plus a few m×m.

use super::columns::Columns;
use super::elimination::Elimination;
use super::linalg::{mul_tn, symmetrize};
use super::terms::{Param, Sums};
use super::traces::traces;
use super::Moments;
use crate::crossed::{Factor, Pair};

/// Largest m·qt accepted, as MAX_DENSE²: Ψ (m×qt doubles) is then 200 MB
/// at most, and the m×m matrices (N₂₂, L_c, Ĉ₂₂, one Γ_r per parameter of the
/// first factor and one more) below that (m < 5,000: the crossed fit itself
/// holds an (m+p+1)² matrix). Measured: qt = 4,128, m = 1,156 in 0.4–0.6 s
/// (release, 2 shared cores; the former qt×qt path took about 4 s).
/// Every model the earlier dense path took (qt ≤ 5,000) is accepted.
pub const MAX_DENSE: usize = 5_000;

/// (m, qt) of the split, for the bound.
pub fn sizes(factors: &[Factor]) -> (usize, usize) {
    let qt: usize = factors.iter().map(|f| f.nlev * f.q).sum();
    (qt - factors[0].nlev * factors[0].q, qt)
}

/// The module doc's moments for several factors (m·qt ≤ `MAX_DENSE`², checked by the caller).
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
    let cols = Columns::new(factors, pairs, lambdas);
    let qt = cols.qt;
    let mut el = Elimination::new(&cols);
    let m_times = |v: &[f64], c: usize| {
        let lv = cols.lambda_times(v, c, true);
        cols.lambda_times(&el.s_solve(&lv, c), c, false)
    };
    let minus =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    // [X y]ᵀH[X y], B̂, B̂₂, Â₂, Â₃
    let zr = cols.zt_xy(k);
    let mzr = m_times(&zr, k);
    let mut a_full = minus(rtr, &mul_tn(&zr, &mzr, qt, k, k));
    symmetrize(&mut a_full, k);
    let zx = &zr[..qt * p];
    let b = minus(zx, &cols.k_times(&mzr[..qt * p], p));
    let mb = m_times(&b, p);
    let b2 = minus(&b, &cols.k_times(&mb, p));
    let zx_mb = mul_tn(zx, &mb, qt, p, p);
    let b_mb = mul_tn(&b, &mb, qt, p, p);
    let mut a2 = vec![0.0; p * p];
    for j in 0..p {
        for i in 0..p {
            a2[j * p + i] = a_full[j * k + i] - zx_mb[j * p + i];
        }
    }
    symmetrize(&mut a2, p);
    let mut a3 = minus(&a2, &b_mb);
    symmetrize(&mut a3, p);
    // Each parameter acts on every level of its factor: global terms.
    let terms: Vec<Vec<(usize, usize)>> = params
        .iter()
        .map(|pr| {
            let q = factors[pr.factor].q;
            let local = pr.local_terms();
            let o = cols.off[pr.factor];
            (0..factors[pr.factor].nlev)
                .flat_map(|l| {
                    local
                        .iter()
                        .map(move |&(a, b)| (o + l * q + a, o + l * q + b))
                })
                .collect()
        })
        .collect();
    let nr = params.len();
    let mut sums = Sums::new(nr, p);
    sums.add_linear(&terms, qt, &b, &b2);
    // Y_s = ĈE_sB̂ for every s at once (columns s·p … s·p + p − 1)
    let mut v = vec![0.0; qt * p * nr];
    for s in 0..nr {
        for &(c, d) in &terms[s] {
            for j in 0..p {
                v[(s * p + j) * qt + c] += b[j * qt + d];
            }
        }
    }
    let kv = cols.k_times(&v, p * nr);
    let y = minus(&kv, &cols.k_times(&m_times(&kv, p * nr), p * nr));
    for s in 0..nr {
        for r in 0..=s {
            sums.add_quadratic(r, s, &terms[r], qt, &b, &y[s * p * qt..(s + 1) * p * qt]);
        }
    }
    // K̂_rs, K̂_rσ, tr H²
    let x = el.psi_t(lambdas);
    let n22 = std::mem::take(&mut el.n22);
    let tr = traces(&cols, &el, n22, &x, params);
    drop(x);
    let d: Vec<f64> = params
        .iter()
        .map(|pr| {
            let (q, lam) = (factors[pr.factor].q, &lambdas[pr.factor]);
            (0..q).map(|t| lam[t * q + pr.i] * lam[t * q + pr.j]).sum()
        })
        .collect();
    let mut tr_h2 = n;
    for r in 0..nr {
        let kd: f64 = (0..nr).map(|s| tr.k[s * nr + r] * d[s]).sum();
        sums.k_sigma[r] = tr.kappa[r] - kd;
        tr_h2 += d[r] * (kd - 2.0 * tr.kappa[r]);
        for s in r..nr {
            sums.k[s * nr + r] = tr.k[s * nr + r];
        }
    }
    Moments {
        a_full,
        a2,
        a3,
        tr_h2,
        sums,
    }
}

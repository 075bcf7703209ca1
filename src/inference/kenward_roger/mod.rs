//! Kenward–Roger: the small-sample adjusted covariance of β̂ (pbkrtest's
//! `vcovAdj`) and the KR F test of H₀: Lβ = 0 with its scale λ and
//! denominator df m (pbkrtest's `KRmodcomp` / `Lb_ddf`, as lmerTest reports
//! them), from per-level sufficient statistics, never from rows.
//!
//! # Model and parameters
//!
//! y = Xβ + Zb + ε, ε ~ N(0, σ²I), b_fl ~ N(0, D_f), D_f = σ²Λ_fΛ_fᵀ, so
//! Σ = Var(y) = Σ_r φ_r G_r, linear in φ (pbkrtest's `get_SigmaG`): for each
//! factor f and each bar (diagonal block of Λ_f), the block's unique elements
//! (i, j), i ≥ j, of D_f by columns, with G = Z_f(I ⊗ E_ij)Z_fᵀ,
//! E_ii = e_ie_iᵀ, E_ij = e_ie_jᵀ + e_je_iᵀ; then σ² with G = I.
//!
//! # Kenward & Roger (1997), as pbkrtest 0.5 computes it
//!
//! ```text
//!   Φ     = (XᵀΣ⁻¹X)⁻¹                                   (= lme4's vcov at the REML estimates)
//!   P_r   = −XᵀΣ⁻¹G_rΣ⁻¹X
//!   Q_rs  = XᵀΣ⁻¹G_rΣ⁻¹G_sΣ⁻¹X                           (Q_sr = Q_rsᵀ)
//!   IE2_rs = tr(Σ⁻¹G_rΣ⁻¹G_s) − 2 tr(ΦQ_rs) + tr(ΦP_rΦP_s) (= tr(ΠG_rΠG_s), Π the REML projection)
//!   W     = 2·IE2⁻¹   (Moore–Penrose, tolerance √ε·max, when min|eig IE2| ≤ 1e-10, as pbkrtest)
//!   U     = Σ_rs W_rs (Q_rs − P_rΦP_s)                     (R_rs = 0: Σ is linear in φ)
//!   Φ_A   = Φ + 2ΦUΦ
//! ```
//! W is the inverse of the REML expected information ½IE2. For H₀: Lβ = 0
//! with L of ℓ rows (full row rank), Θ = Lᵀ(LΦLᵀ)⁻¹L, u_r = ΘΦP_rΦ:
//! ```text
//!   A₁ = Σ_rs W_rs tr(u_r) tr(u_s),   A₂ = Σ_rs W_rs tr(u_r u_s)
//!   B = (A₁ + 6A₂)/(2ℓ),   g = ((ℓ+1)A₁ − (ℓ+4)A₂)/((ℓ+2)A₂)
//!   c₁ = g/(3ℓ + 2(1−g)),  c₂ = (ℓ−g)/(3ℓ + 2(1−g)),  c₃ = (ℓ+2−g)/(3ℓ + 2(1−g))
//!   E* = 1/(1 − A₂/ℓ),     V* = (2/ℓ)(1 + c₁B)/((1 − c₂B)²(1 − c₃B))
//!   ρ = V*/(2E*²),  m = 4 + (ℓ+2)/(ℓρ − 1),  λ = m/(E*(m − 2))   (λ = 1 when |m − 2| < 1e-2)
//!   F = λ·(Lβ̂)ᵀ(LΦ_ALᵀ)⁻¹(Lβ̂)/ℓ ~ F(ℓ, m)
//! ```
//! (pbkrtest sets 1 + c₁B to 0 below 1e-10 and (1 − A₂/ℓ)/(1 − c₂B) to 1 when
//! both are below 1e-14; done here too.) For ℓ = 1, A₁ = A₂ and the formulas
//! reduce to m = 2/A₂, λ = 1: lmerTest's `summary(ddf = "Kenward-Roger")` and
//! `contest1D` report t = lβ̂/√(lΦ_Alᵀ) on m df; `contestMD` / `anova` report
//! the scaled F and m (`KrTest`).
//!
//! # Everything from ZᵀZ, Zᵀ[X y], [X y]ᵀ[X y] and n (Woodbury)
//!
//! With K = ZᵀZ, M = Λ(ΛᵀKΛ + I)⁻¹Λᵀ and H = I − ZMZᵀ:
//! Σ⁻¹ = H/σ², and ZᵀH = TZᵀ with T = I − KM = (I + KΛΛᵀ)⁻¹, hence
//! ZᵀH^kX = T^kZᵀX, ZᵀH^kZ = T^kK, XᵀH^{k+1}X = XᵀH^kX − (ZᵀX)ᵀMT^k(ZᵀX),
//! and tr H² = n − 2tr(MK) + tr(MKMK) = n − qt + ‖S⁻¹‖²_F (S = ΛᵀKΛ + I, so
//! MK is similar to I − S⁻¹). Writing
//! ```text
//!   Ĉ = ZᵀHZ,  B̂ = ZᵀHX,  B̂₂ = ZᵀH²X,  Ĉ₂ = ZᵀH²Z,  Â = XᵀHX,  Â₂ = XᵀH²X,  Â₃ = XᵀH³X
//! ```
//! (the hats are free of σ²), for random-effect parameters r, s and the
//! residual σ (Ĉ, B̂ restricted to the rows of each parameter's factor):
//! ```text
//!   σ⁴P_r  = −B̂ᵀ(I⊗E_r)B̂              σ⁴P_σ  = −Â₂
//!   σ⁶Q_rs = B̂ᵀ(I⊗E_r)Ĉ(I⊗E_s)B̂       σ⁶Q_rσ = B̂ᵀ(I⊗E_r)B̂₂,   σ⁶Q_σσ = Â₃
//!   σ⁴K_rs = tr((I⊗E_r)Ĉ(I⊗E_s)Ĉ)     σ⁴K_rσ = tr((I⊗E_r)Ĉ₂),  σ⁴K_σσ = tr H²
//!   Φ = σ²Φ̂, Φ̂ = Â⁻¹,   IE2 = ÎE2/σ⁴,   W = σ⁴Ŵ,   U = Û/σ²,   Φ_A = σ²(Φ̂ + 2Φ̂ÛΦ̂)
//! ```
//! (ÎE2, Ŵ, Û: the formulas above with P̂, Q̂, K̂, Φ̂ in place of P, Q, K, Φ.)
//! (K_rs = tr(Σ⁻¹G_rΣ⁻¹G_s).) The KR test quantities A₁, A₂ are free of σ².
//! Working in the hats keeps every number O(1) whatever the scale of y.
//!
//! With ONE factor, Σ is block diagonal by level and all of this is a sum of
//! q×q algebra per level (`blocks`): O(levels · (q³ + q²p + n_φ²p²)) time,
//! O(n_φ²p²) memory, levels split over rayon's threads. With SEVERAL factors
//! (`crossed`), the first factor (most levels) is eliminated level by level
//! and the others form one dense block of m columns (`elimination`); thin
//! products go through K = ZᵀZ and M as operators (`columns`), and the traces
//! through an m×qt matrix (`traces`): O(m²·qt) time and O(m·qt) memory,
//! qt = Σ nlev·q; above m·qt = `MAX_DENSE`² it returns an error. (`dense`,
//! the same algebra on qt×qt matrices in O(qt³), is kept for the tests.)
//!
//! Precision: T = I − KM and Ĉ = K − KMK are differences; they lose about
//! log₁₀‖KΛΛᵀ‖ digits when a level has many rows and a large variance ratio.

mod blocks;
mod columns;
mod crossed;
#[cfg(test)]
mod dense;
mod elimination;
mod ftest;
mod linalg;
mod terms;
mod traces;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

pub use crossed::MAX_DENSE;

use crate::crossed::{Factor, Pair};
use crate::dense::invert_spd;
use crate::error::{LmmError, Result};
use linalg::{inverse_from_eigen, mul, symmetric_eigen, trace_of_product};

/// The fitted model's statistics (REML estimates of Λ and σ²).
pub struct KrInput<'a> {
    /// number of observations
    pub n: f64,
    /// number of fixed effects (columns of X)
    pub p: usize,
    /// per factor: q, nlev, per-level Z_lᵀZ_l and Z_lᵀ[X y] (`off` is not used)
    pub factors: &'a [Factor],
    /// per pair of factors (a < b): the level pairs that occur and their Z_aᵀZ_b blocks
    /// (every pair of factors must be there; none with one factor)
    pub pairs: &'a [Pair],
    /// [X y]ᵀ[X y], (p+1)×(p+1) column-major
    pub rtr: &'a [f64],
    /// per factor: Λ_f, q×q lower triangular, column-major (lme4's θ by columns)
    pub lambdas: &'a [Vec<f64>],
    /// per factor: sizes of Λ_f's diagonal blocks (bars), summing to q
    pub blocks: &'a [Vec<usize>],
    /// residual variance σ²
    pub sigma2: f64,
}

/// `vcovAdj` and what the KR tests need.
#[derive(Clone, Debug)]
pub struct KenwardRoger {
    pub p: usize,
    pub sigma2: f64,
    /// GLS β̂ = Φ XᵀΣ⁻¹y at the given parameters
    pub beta: Vec<f64>,
    /// Φ = (XᵀΣ⁻¹X)⁻¹, p×p column-major
    pub vcov: Vec<f64>,
    /// Φ_A (pbkrtest's `vcovAdj`), p×p column-major
    pub vcov_adj: Vec<f64>,
    /// number of covariance parameters φ (random-effect (co)variances, then σ²)
    pub n_params: usize,
    /// W = 2·IE2⁻¹ (or its pseudo-inverse), n_params² column-major
    pub w: Vec<f64>,
    /// min |eigenvalue| of IE2 (pbkrtest's `condi`); ≤ 1e-10 means W is a pseudo-inverse
    pub condi: f64,
    phi_hat: Vec<f64>,
    p_hat: Vec<Vec<f64>>,
    w_hat: Vec<f64>,
}

/// KR F test of H₀: Lβ = 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KrTest {
    /// λ·F_unscaled (what `KRmodcomp`, `contest(joint = TRUE)` and `anova` report)
    pub f_value: f64,
    /// (Lβ̂)ᵀ(LΦ_ALᵀ)⁻¹(Lβ̂)/ℓ (lmerTest's mean square is this times σ²)
    pub f_unscaled: f64,
    /// ℓ, the rows of L
    pub num_df: usize,
    /// m
    pub den_df: f64,
    /// λ
    pub scale: f64,
    /// P(F(ℓ, m) > f_value)
    pub p_value: f64,
}

/// KR t test of one linear combination lᵀβ (lmerTest's `contest1D`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KrContrast {
    pub estimate: f64,
    /// √(lᵀΦ_Al)
    pub std_error: f64,
    /// m for ℓ = 1 (pbkrtest's `Lb_ddf`)
    pub df: f64,
    pub t_value: f64,
    pub p_value: f64,
}

/// What the two paths hand over: the hats of the module doc.
pub(crate) struct Moments {
    /// σ²[X y]ᵀΣ⁻¹[X y] = [X y]ᵀH[X y], k×k
    a_full: Vec<f64>,
    /// Â₂ = XᵀH²X, Â₃ = XᵀH³X (p×p)
    a2: Vec<f64>,
    a3: Vec<f64>,
    /// tr H²
    tr_h2: f64,
    sums: terms::Sums,
}

fn check(input: &KrInput) -> Result<()> {
    let (p, k) = (input.p, input.p + 1);
    let nf = input.factors.len();
    if p == 0 {
        return Err(LmmError::new(
            "Kenward-Roger needs at least one fixed effect",
        ));
    }
    if nf == 0 {
        return Err(LmmError::new("Kenward-Roger needs a random effect"));
    }
    if input.lambdas.len() != nf || input.blocks.len() != nf {
        return Err(LmmError::new(
            "Kenward-Roger: one Λ and one block list per factor",
        ));
    }
    if input.rtr.len() != k * k {
        return Err(LmmError::new(
            "Kenward-Roger: [X y]ᵀ[X y] must be (p+1)×(p+1)",
        ));
    }
    if !(input.sigma2 > 0.0 && input.sigma2.is_finite()) {
        return Err(LmmError::new(
            "Kenward-Roger: σ² must be positive and finite",
        ));
    }
    for (fi, f) in input.factors.iter().enumerate() {
        let q = f.q;
        if f.ztz.len() != f.nlev * q * q
            || f.ztr.len() != f.nlev * q * k
            || input.lambdas[fi].len() != q * q
        {
            return Err(LmmError::new(format!(
                "Kenward-Roger: factor {fi}'s blocks do not match q = {q}, {} levels, p = {p}",
                f.nlev
            )));
        }
        if input.blocks[fi].iter().sum::<usize>() != q || input.blocks[fi].contains(&0) {
            return Err(LmmError::new(format!(
                "Kenward-Roger: factor {fi}'s bars must be positive and sum to q = {q}"
            )));
        }
        // Λ must vanish above the diagonal and outside the bars.
        let mut bar = vec![0; q];
        let mut start = 0;
        for (bi, &s) in input.blocks[fi].iter().enumerate() {
            bar[start..start + s].iter_mut().for_each(|b| *b = bi);
            start += s;
        }
        for c in 0..q {
            for r in 0..q {
                let v = input.lambdas[fi][c * q + r];
                if (r < c || bar[r] != bar[c]) && v != 0.0 {
                    return Err(LmmError::new(format!("Kenward-Roger: factor {fi}'s Λ has a nonzero entry ({r}, {c}) outside its lower-triangular bars")));
                }
                if !v.is_finite() {
                    return Err(LmmError::new(format!(
                        "Kenward-Roger: factor {fi}'s Λ is not finite"
                    )));
                }
            }
        }
    }
    for pr in input.pairs {
        if pr.a >= pr.b
            || pr.b >= nf
            || pr.blocks.len() != pr.cells.len() * input.factors[pr.a].q * input.factors[pr.b].q
        {
            return Err(LmmError::new(
                "Kenward-Roger: a pair's factors or blocks do not match",
            ));
        }
        for &(la, lb) in &pr.cells {
            if la as usize >= input.factors[pr.a].nlev || lb as usize >= input.factors[pr.b].nlev {
                return Err(LmmError::new(
                    "Kenward-Roger: a pair's cell names a level that does not exist",
                ));
            }
        }
    }
    Ok(())
}

impl KenwardRoger {
    /// Φ, Φ_A and W at the given estimates; an error if the input is
    /// inconsistent, XᵀΣ⁻¹X is singular, or (several factors) m·qt > `MAX_DENSE`².
    pub fn new(input: &KrInput) -> Result<KenwardRoger> {
        check(input)?;
        let (p, k) = (input.p, input.p + 1);
        let params = terms::parameters(input.blocks);
        let mo = if input.factors.len() == 1 {
            blocks::moments(
                input.n,
                p,
                &input.factors[0],
                &input.lambdas[0],
                &params,
                input.rtr,
            )
        } else {
            let (m, qt) = crossed::sizes(input.factors);
            if m * qt > MAX_DENSE * MAX_DENSE {
                return Err(LmmError::new(format!(
                    "Kenward-Roger with several grouping factors holds a dense matrix of (columns of the factors after the first) × (all random-effect columns) and is limited to {} entries; this model has {m} × {qt}",
                    MAX_DENSE * MAX_DENSE
                )));
            }
            crossed::moments(
                input.n,
                p,
                input.factors,
                input.pairs,
                input.lambdas,
                &params,
                input.rtr,
            )
        };
        Self::assemble(p, k, input.sigma2, mo)
    }

    fn assemble(p: usize, k: usize, sigma2: f64, mo: Moments) -> Result<KenwardRoger> {
        let pp = p * p;
        let nr = mo.sums.nr;
        let np = nr + 1;
        // Â and XᵀHy
        let mut a = vec![0.0; pp];
        for j in 0..p {
            for i in 0..p {
                a[j * p + i] = 0.5 * (mo.a_full[j * k + i] + mo.a_full[i * k + j]);
            }
        }
        let xhy: Vec<f64> = (0..p).map(|i| mo.a_full[p * k + i]).collect();
        let phi = invert_spd(&a, p).ok_or_else(|| {
            LmmError::new("Kenward-Roger: XᵀΣ⁻¹X is not positive definite (X rank deficient?)")
        })?;
        let beta = mul(&phi, &xhy, p, p, 1);
        // P̂_r, Q̂_rs (all ordered pairs), K̂ with σ² as the last parameter
        let mut p_hat: Vec<Vec<f64>> = (0..nr)
            .map(|r| mo.sums.p_mats[r * pp..(r + 1) * pp].to_vec())
            .collect();
        p_hat.push(mo.a2.iter().map(|v| -v).collect());
        let q_at = |r: usize, s: usize| -> Vec<f64> {
            let (lo, hi, tr) = if r <= s { (r, s, false) } else { (s, r, true) };
            let m: Vec<f64> = if hi < nr {
                mo.sums.q_mats[(hi * nr + lo) * pp..(hi * nr + lo + 1) * pp].to_vec()
            } else if lo < nr {
                mo.sums.q_sigma[lo * pp..(lo + 1) * pp].to_vec()
            } else {
                mo.a3.clone()
            };
            if tr {
                (0..pp).map(|i| m[(i % p) * p + i / p]).collect()
            } else {
                m
            }
        };
        let mut k_hat = vec![0.0; np * np];
        for s in 0..nr {
            for r in 0..=s {
                k_hat[s * np + r] = mo.sums.k[s * nr + r];
                k_hat[r * np + s] = mo.sums.k[s * nr + r];
            }
            k_hat[nr * np + s] = mo.sums.k_sigma[s];
            k_hat[s * np + nr] = mo.sums.k_sigma[s];
        }
        k_hat[nr * np + nr] = mo.tr_h2;
        // ÎE2 = K̂ − 2tr(Φ̂Q̂) + tr(Φ̂P̂_rΦ̂P̂_s)
        let phi_p: Vec<Vec<f64>> = p_hat.iter().map(|pm| mul(&phi, pm, p, p, p)).collect();
        let mut q_all = vec![Vec::new(); np * np];
        let mut ie2 = vec![0.0; np * np];
        for s in 0..np {
            for r in 0..np {
                let q = q_at(r, s);
                ie2[s * np + r] = k_hat[s * np + r] - 2.0 * trace_of_product(&phi, &q, p)
                    + trace_of_product(&phi_p[r], &phi_p[s], p);
                q_all[s * np + r] = q;
            }
        }
        linalg::symmetrize(&mut ie2, np);
        let (vals, vecs) = symmetric_eigen(&ie2, np);
        let sigma4 = sigma2 * sigma2;
        let condi = vals.iter().fold(f64::INFINITY, |m, v| m.min(v.abs())) / sigma4;
        let tol = if condi > 1e-10 {
            0.0
        } else {
            f64::EPSILON.sqrt()
        };
        let w_hat: Vec<f64> = inverse_from_eigen(&vals, &vecs, np, tol)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        // Û = Σ_rs Ŵ_rs (Q̂_rs − P̂_rΦ̂P̂_s), Φ_A = σ²(Φ̂ + 2Φ̂ÛΦ̂)
        let mut u = vec![0.0; pp];
        for s in 0..np {
            for r in 0..np {
                let w = w_hat[s * np + r];
                if w == 0.0 {
                    continue;
                }
                let ppp = mul(&p_hat[r], &phi_p[s], p, p, p);
                for i in 0..pp {
                    u[i] += w * (q_all[s * np + r][i] - ppp[i]);
                }
            }
        }
        let phi_u_phi = mul(&mul(&phi, &u, p, p, p), &phi, p, p, p);
        let mut vcov_adj: Vec<f64> = (0..pp)
            .map(|i| sigma2 * (phi[i] + 2.0 * phi_u_phi[i]))
            .collect();
        linalg::symmetrize(&mut vcov_adj, p);
        let vcov = phi.iter().map(|v| sigma2 * v).collect();
        let w = w_hat.iter().map(|v| v * sigma4).collect();
        Ok(KenwardRoger {
            p,
            sigma2,
            beta,
            vcov,
            vcov_adj,
            n_params: np,
            w,
            condi,
            phi_hat: phi,
            p_hat,
            w_hat,
        })
    }
}

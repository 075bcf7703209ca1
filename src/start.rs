//! A moment estimate of θ to start the optimizer near the optimum.
//!
//! From the same per-group statistics the deviance uses: fit the fixed effects
//! by OLS, then each group's own coefficients b̂_i = (Z_iᵀZ_i)⁻¹ Z_iᵀ(y − Xβ̂);
//! their spread over groups, less the average sampling variance
//! σ̂² (Z_iᵀZ_i)⁻¹, estimates Var(b) (the classical method-of-moments idea).
//! σ̂² is the residual variance left after the group-wise fits. Relative to
//! σ̂², each block's Cholesky factor is a θ. The estimate only has to be
//! cheap and close: the caller keeps lme4's start θ = I when it is better.

use crate::dense::{cholesky_lower, solve_spd};
use crate::reml::Problem;
use crate::theta::ThetaLayout;

pub fn moment_theta(pr: &Problem, layout: &ThetaLayout) -> Option<Vec<f64>> {
    moment_theta_and_sigma2(pr, layout).map(|(theta, _)| theta)
}

/// The moment θ and the residual variance σ̂² it is relative to.
pub fn moment_theta_and_sigma2(pr: &Problem, layout: &ThetaLayout) -> Option<(Vec<f64>, f64)> {
    let (p, q, k) = (pr.p, pr.q, pr.k());
    // OLS fixed effects.
    let mut xx = vec![0.0; p * p];
    let mut xy = vec![0.0; p];
    for a in 0..p {
        xy[a] = pr.rtr[p * k + a];
        for b in 0..p {
            xx[b * p + a] = pr.rtr[b * k + a];
        }
    }
    let beta = if p > 0 {
        solve_spd(&xx, &xy, p)?
    } else {
        Vec::new()
    };
    let rss_ols = pr.rtr[p * k + p] - beta.iter().zip(&xy).map(|(b, v)| b * v).sum::<f64>();
    let sums = match &pr.shards {
        Some(shards) => shards.moments(&beta)?,
        None => moment_sums(pr, &beta),
    };
    let MomentSums {
        used,
        explained,
        sum_b,
        sum_bb,
        sum_inv,
    } = sums;
    let used = used as usize;
    if used < 2 {
        return None;
    }
    let g = used as f64;
    let dof = pr.n - p as f64 - (q * used) as f64;
    let sigma2 = if dof > 0.0 && rss_ols - explained > 0.0 {
        (rss_ols - explained) / dof
    } else {
        rss_ols / (pr.n - p as f64)
    };
    if !(sigma2 > 0.0) {
        return None;
    }
    // Var(b)/σ² = (Cov(b̂) − σ² mean (ZᵀZ)⁻¹) / σ²
    let mut rel = vec![0.0; q * q];
    for a in 0..q {
        for c in 0..q {
            let cov = (sum_bb[c * q + a] - sum_b[a] * sum_b[c] / g) / (g - 1.0);
            rel[c * q + a] = cov / sigma2 - sum_inv[c * q + a] / g;
        }
    }
    let mut theta = Vec::with_capacity(layout.len());
    for &(off, s) in &layout.blocks {
        let mut blk = vec![0.0; s * s];
        for a in 0..s {
            for c in 0..s {
                blk[c * s + a] = rel[(off + c) * q + off + a];
            }
        }
        let floor = 1e-2;
        if !cholesky_lower(&mut blk, s) {
            // Not positive definite: keep the (clamped) variances, no correlation.
            blk = vec![0.0; s * s];
            for a in 0..s {
                blk[a * s + a] = rel[(off + a) * q + off + a].max(floor * floor).sqrt();
            }
        }
        for j in 0..s {
            for i in j..s {
                let v = blk[j * s + i];
                theta.push(if i == j { v.max(floor) } else { v });
            }
        }
    }
    theta
        .iter()
        .all(|t| t.is_finite())
        .then_some((theta, sigma2))
}

/// The sums over groups the moment estimate needs, at the OLS β: how many
/// groups have an identified fit of their own, Σ r_iᵀb̂_i, Σ b̂_i, Σ b̂_ib̂_iᵀ
/// and Σ (Z_iᵀZ_i)⁻¹ over them. Sums over disjoint sets of groups add up.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentSums {
    pub used: f64,
    pub explained: f64,
    pub sum_b: Vec<f64>,
    pub sum_bb: Vec<f64>,
    pub sum_inv: Vec<f64>,
}

impl MomentSums {
    pub fn zero(q: usize) -> MomentSums {
        MomentSums {
            used: 0.0,
            explained: 0.0,
            sum_b: vec![0.0; q],
            sum_bb: vec![0.0; q * q],
            sum_inv: vec![0.0; q * q],
        }
    }

    pub fn add(&mut self, o: &MomentSums) {
        self.used += o.used;
        self.explained += o.explained;
        for (a, b) in [
            (&mut self.sum_b, &o.sum_b),
            (&mut self.sum_bb, &o.sum_bb),
            (&mut self.sum_inv, &o.sum_inv),
        ] {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += y;
            }
        }
    }

    /// As numbers: used, explained, then Σ b̂, Σ b̂b̂ᵀ, Σ (ZᵀZ)⁻¹.
    pub fn to_values(&self) -> Vec<f64> {
        let mut v = vec![self.used, self.explained];
        v.extend_from_slice(&self.sum_b);
        v.extend_from_slice(&self.sum_bb);
        v.extend_from_slice(&self.sum_inv);
        v
    }

    pub fn from_values(v: &[f64], q: usize) -> Option<MomentSums> {
        if v.len() != 2 + q + 2 * q * q {
            return None;
        }
        let (b, rest) = v[2..].split_at(q);
        let (bb, inv) = rest.split_at(q * q);
        Some(MomentSums {
            used: v[0],
            explained: v[1],
            sum_b: b.to_vec(),
            sum_bb: bb.to_vec(),
            sum_inv: inv.to_vec(),
        })
    }
}

/// `MomentSums` over the problem's own groups.
pub fn moment_sums(pr: &Problem, beta: &[f64]) -> MomentSums {
    let (p, q, k) = (pr.p, pr.q, pr.k());
    let mut out = MomentSums::zero(q);
    let mut r = vec![0.0; q];
    for i in 0..pr.groups {
        let ztz = &pr.ztz[i * q * q..(i + 1) * q * q];
        let ztr = &pr.ztr[i * q * k..(i + 1) * q * k];
        for a in 0..q {
            r[a] = ztr[p * q + a] - (0..p).map(|j| ztr[j * q + a] * beta[j]).sum::<f64>();
        }
        // Skip groups whose own fit is not identified (too few or collinear rows).
        let trace: f64 = (0..q).map(|a| ztz[a * q + a]).sum();
        let Some(b) = solve_spd(ztz, &r, q) else {
            continue;
        };
        let mut inv = vec![0.0; q * q];
        let mut ok = true;
        for c in 0..q {
            let mut e = vec![0.0; q];
            e[c] = 1.0;
            match solve_spd(ztz, &e, q) {
                Some(col) => inv[c * q..(c + 1) * q].copy_from_slice(&col),
                None => ok = false,
            }
        }
        if !ok || (0..q).any(|a| inv[a * q + a] * trace > 1e8) {
            continue;
        }
        out.used += 1.0;
        out.explained += r.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>();
        for a in 0..q {
            out.sum_b[a] += b[a];
            for c in 0..q {
                out.sum_bb[c * q + a] += b[a] * b[c];
                out.sum_inv[c * q + a] += inv[c * q + a];
            }
        }
    }
    out
}

/// Several factors, each estimated on its own: factor f's within-level
/// residual variance s_f² also holds the variance v_g = σ̂_g² tr(Λ_gΛ_gᵀ) of
/// every factor g that varies within f's levels (crossed), not only σ²; so
/// σ̂² ≈ max_f (s_f² − Σ_{g≠f} v_g) (the max discounts nested factors, which
/// do not vary within a level), and each θ_f is rescaled by s_f/σ̂. Returns
/// None when that leaves no credible σ̂².
pub fn crossed_correction(
    estimates: &[(Vec<f64>, f64)],
    layouts: &[&ThetaLayout],
) -> Option<Vec<f64>> {
    let v: Vec<f64> = estimates
        .iter()
        .zip(layouts)
        .map(|((theta, s2), l)| {
            let lam = l.lambda(theta);
            s2 * lam.iter().map(|x| x * x).sum::<f64>()
        })
        .collect();
    let total: f64 = v.iter().sum();
    let sigma2 = estimates
        .iter()
        .zip(&v)
        .map(|((_, s2), vf)| s2 - (total - vf))
        .fold(f64::NEG_INFINITY, f64::max);
    let smallest = estimates
        .iter()
        .map(|(_, s2)| *s2)
        .fold(f64::INFINITY, f64::min);
    if !(sigma2 > 0.05 * smallest) {
        return None;
    }
    let mut out = Vec::new();
    for ((theta, s2), l) in estimates.iter().zip(layouts) {
        let scale = (s2 / sigma2).sqrt();
        let lower = l.lower();
        out.extend(theta.iter().zip(&lower).map(|(t, _)| t * scale));
    }
    out.iter().all(|t| t.is_finite()).then_some(out)
}

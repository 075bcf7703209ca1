//! The KR tests from `KenwardRoger`: A₁, A₂ for a hypothesis matrix L, then
//! m and λ (module doc of `kenward_roger`), the scaled F and the t of one row.

use super::linalg::{self, mul, trace_of_product};
use super::{KenwardRoger, KrContrast, KrTest};
use crate::dense::invert_spd;
use crate::error::{LmmError, Result};

/// pbkrtest's `.divZero`: x/y, or 1 when both are below tol in magnitude.
fn div_zero(x: f64, y: f64) -> f64 {
    if x.abs() < 1e-14 && y.abs() < 1e-14 {
        1.0
    } else {
        x / y
    }
}

/// (m, λ) from A₁, A₂ and ℓ (module doc; pbkrtest's `.KR_adjust` / `Lb_ddf`).
pub(super) fn ddf_and_scale(a1: f64, a2: f64, rows: usize) -> (f64, f64) {
    let l = rows as f64;
    let b = (a1 + 6.0 * a2) / (2.0 * l);
    let g = ((l + 1.0) * a1 - (l + 4.0) * a2) / ((l + 2.0) * a2);
    let den = 3.0 * l + 2.0 * (1.0 - g);
    let (c1, c2, c3) = (g / den, (l - g) / den, (l + 2.0 - g) / den);
    let mut v0 = 1.0 + c1 * b;
    if v0.abs() < 1e-10 {
        v0 = 0.0;
    }
    let (v1, v2) = (1.0 - c2 * b, 1.0 - c3 * b);
    let rho = div_zero(1.0 - a2 / l, v1).powi(2) * v0 / (l * v2);
    let m = 4.0 + (l + 2.0) / (l * rho - 1.0);
    let scale = if (m - 2.0).abs() < 1e-2 {
        1.0
    } else {
        m * (1.0 - a2 / l) / (m - 2.0)
    };
    (m, scale)
}

impl KenwardRoger {
    /// A₁ and A₂ for L (ℓ×p, row-major: row i is l[i·p..(i+1)·p]).
    fn a1_a2(&self, l: &[f64], rows: usize) -> Result<(f64, f64)> {
        let p = self.p;
        if !full_row_rank(l, rows, p) {
            return Err(LmmError::new("Kenward-Roger: L must have full row rank"));
        }
        let lt = l; // row-major ℓ×p L read column-major is Lᵀ (p×ℓ)
                    // LΦ̂Lᵀ and Θ̂ = Lᵀ(LΦ̂Lᵀ)⁻¹L
        let phi_lt = mul(&self.phi_hat, lt, p, p, rows);
        let lpl = linalg::mul_tn(lt, &phi_lt, p, rows, rows);
        let inv = invert_spd(&lpl, rows).ok_or_else(|| {
            LmmError::new("Kenward-Roger: LΦLᵀ is singular (L must have full row rank)")
        })?;
        let theta = mul(
            &mul(lt, &inv, p, rows, rows),
            &transpose(lt, p, rows),
            p,
            rows,
            p,
        );
        let theta_phi = mul(&theta, &self.phi_hat, p, p, p);
        let us: Vec<Vec<f64>> = self
            .p_hat
            .iter()
            .map(|pm| mul(&mul(&theta_phi, pm, p, p, p), &self.phi_hat, p, p, p))
            .collect();
        let traces: Vec<f64> = us
            .iter()
            .map(|u| (0..p).map(|i| u[i * p + i]).sum())
            .collect();
        let np = self.n_params;
        let (mut a1, mut a2) = (0.0, 0.0);
        for s in 0..np {
            for r in 0..np {
                let w = self.w_hat[s * np + r];
                a1 += w * traces[r] * traces[s];
                a2 += w * trace_of_product(&us[r], &us[s], p);
            }
        }
        Ok((a1, a2))
    }

    /// The KR F test of H₀: Lβ = 0, L of `rows` rows (row-major), at `beta`.
    pub fn test(&self, l: &[f64], rows: usize, beta: &[f64]) -> Result<KrTest> {
        let p = self.p;
        if rows == 0 || l.len() != rows * p || beta.len() != p {
            return Err(LmmError::new(
                "Kenward-Roger: L must be rows×p and β of length p",
            ));
        }
        let (a1, a2) = self.a1_a2(l, rows)?;
        let (den_df, scale) = ddf_and_scale(a1, a2, rows);
        let lt = l; // Lᵀ, p×ℓ
        let lb = linalg::mul_tn(lt, beta, p, rows, 1);
        let la = mul(&self.vcov_adj, lt, p, p, rows);
        let lal = linalg::mul_tn(lt, &la, p, rows, rows);
        let sol = crate::dense::solve_spd(&lal, &lb, rows)
            .ok_or_else(|| LmmError::new("Kenward-Roger: LΦ_ALᵀ is not positive definite"))?;
        let wald: f64 = lb.iter().zip(&sol).map(|(a, b)| a * b).sum();
        let f_unscaled = wald / rows as f64;
        let f_value = scale * f_unscaled;
        let p_value = crate::inference::tdist::f_upper_p(f_value, rows as f64, den_df);
        Ok(KrTest {
            f_value,
            f_unscaled,
            num_df: rows,
            den_df,
            scale,
            p_value,
        })
    }

    /// The KR t test of lᵀβ = 0 (lmerTest's `contest1D`, `summary`).
    pub fn contrast(&self, l: &[f64], beta: &[f64]) -> Result<KrContrast> {
        let p = self.p;
        if l.len() != p || beta.len() != p {
            return Err(LmmError::new("Kenward-Roger: l and β must have length p"));
        }
        let (a1, a2) = self.a1_a2(l, 1)?;
        let (df, _) = ddf_and_scale(a1, a2, 1);
        let estimate: f64 = l.iter().zip(beta).map(|(a, b)| a * b).sum();
        let var: f64 = (0..p)
            .map(|j| {
                (0..p)
                    .map(|i| l[i] * self.vcov_adj[j * p + i] * l[j])
                    .sum::<f64>()
            })
            .sum();
        let std_error = var.sqrt();
        let t_value = estimate / std_error;
        let p_value = crate::inference::tdist::two_sided_p(t_value, df);
        Ok(KrContrast {
            estimate,
            std_error,
            df,
            t_value,
            p_value,
        })
    }
}

/// Whether the rows of L (row-major ℓ×p) are linearly independent: the
/// Cholesky pivots of LLᵀ, relative to the rows' squared norms, stay above
/// 1e-10 (about the rank tolerance of R's `rankMatrix`, squared).
fn full_row_rank(l: &[f64], rows: usize, p: usize) -> bool {
    let mut g: Vec<f64> = (0..rows * rows)
        .map(|ij| {
            (0..p)
                .map(|t| l[(ij % rows) * p + t] * l[(ij / rows) * p + t])
                .sum()
        })
        .collect();
    let norms: Vec<f64> = (0..rows).map(|i| g[i * rows + i]).collect();
    for j in 0..rows {
        let mut d = g[j * rows + j];
        for t in 0..j {
            d -= g[t * rows + j] * g[t * rows + j];
        }
        if !(d > 1e-10 * norms[j]) {
            return false;
        }
        let d = d.sqrt();
        g[j * rows + j] = d;
        for i in j + 1..rows {
            let mut v = g[j * rows + i];
            for t in 0..j {
                v -= g[t * rows + i] * g[t * rows + j];
            }
            g[j * rows + i] = v / d;
        }
    }
    true
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for c in 0..cols {
        for r in 0..rows {
            out[r * cols + c] = a[c * rows + r];
        }
    }
    out
}

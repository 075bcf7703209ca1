//! Tests of L β = 0 (lmerTest's `contest`): per row a t test, jointly an F test.
//!
//! Satterthwaite, for one row l: t = lᵀβ̂ / √(lᵀVl), df = 2(lᵀVl)² / (gᵀAg),
//! g_i = lᵀ(∂V/∂φ_i)l. For r rows (lmerTest's `contestMD`): with the
//! eigen-decomposition L V Lᵀ = P D Pᵀ (keeping the q positive eigenvalues),
//! the rows of PᵀL are independent contrasts with t_m² = (P_mᵀLβ̂)²/d_m and
//! df ν_m; F = Σ t_m² / q, and the denominator df is ν when q = 1 (or when
//! all ν_m agree), else 2E/(E − q) with E = Σ ν_m/(ν_m − 2) (2 if some ν_m ≤ 2).
//! sum_sq = q · F σ̂², mean_sq = F σ̂², as lmerTest's tables report them.

use super::distributions::{f_upper, t_quantile, t_two_sided};
use super::satterthwaite::Asymptotic;
use crate::dense::symmetric_eigen;

pub struct RowTest {
    pub estimate: f64,
    pub std_error: f64,
    pub df: f64,
    pub t_value: f64,
    pub p_value: f64,
    pub conf_low: f64,
    pub conf_high: f64,
}

pub struct JointTest {
    pub sum_sq: f64,
    pub mean_sq: f64,
    pub num_df: f64,
    pub den_df: f64,
    pub f_value: f64,
    pub p_value: f64,
}

fn form(l: &[f64], v: &[f64], p: usize) -> f64 {
    (0..p)
        .map(|a| (0..p).map(|b| l[a] * v[b * p + a] * l[b]).sum::<f64>())
        .sum()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One t test of lᵀβ (95% interval, as `contest(joint = FALSE)`).
pub fn row_test(l: &[f64], beta: &[f64], a: &Asymptotic) -> RowTest {
    let estimate = dot(l, beta);
    let std_error = form(l, &a.v0, a.p).sqrt();
    let df = a.df(l);
    let t_value = estimate / std_error;
    let crit = t_quantile(0.975, df);
    RowTest {
        estimate,
        std_error,
        df,
        t_value,
        p_value: t_two_sided(t_value, df),
        conf_low: estimate - crit * std_error,
        conf_high: estimate + crit * std_error,
    }
}

/// The joint F test of L β = 0 (rows of L, each of length p).
pub fn joint_test(rows: &[Vec<f64>], beta: &[f64], a: &Asymptotic) -> JointTest {
    let p = a.p;
    let r = rows.len();
    let mut vl = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            vl[j * r + i] = (0..p)
                .map(|x| {
                    (0..p)
                        .map(|y| rows[i][x] * a.v0[y * p + x] * rows[j][y])
                        .sum::<f64>()
                })
                .sum();
        }
    }
    let (values, vectors) = symmetric_eigen(&vl, r);
    let top = values.iter().cloned().fold(0.0, f64::max);
    let keep: Vec<usize> = (0..r)
        .filter(|&m| values[m] > 1e-8 * top.max(f64::MIN_POSITIVE))
        .collect();
    let q = keep.len();
    let mut t2 = 0.0;
    let mut nu = Vec::with_capacity(q);
    for &m in &keep {
        let lm: Vec<f64> = (0..p)
            .map(|x| (0..r).map(|i| vectors[m * r + i] * rows[i][x]).sum())
            .collect();
        t2 += dot(&lm, beta).powi(2) / values[m];
        nu.push(a.df(&lm));
    }
    let f_value = t2 / q as f64;
    let den_df = f_ddf(&nu);
    let mean_sq = f_value * a.sigma2;
    JointTest {
        sum_sq: mean_sq * q as f64,
        mean_sq,
        num_df: q as f64,
        den_df,
        f_value,
        p_value: f_upper(f_value, q as f64, den_df),
    }
}

/// lmerTest's denominator df of the F statistic from the contrasts' df.
fn f_ddf(nu: &[f64]) -> f64 {
    if nu.len() == 1 {
        return nu[0];
    }
    let mean = nu.iter().sum::<f64>() / nu.len() as f64;
    if nu.windows(2).all(|w| (w[1] - w[0]).abs() < 1e-8) {
        return mean;
    }
    if nu.iter().any(|&v| v <= 2.0) {
        return 2.0;
    }
    let e: f64 = nu.iter().map(|v| v / (v - 2.0)).sum();
    2.0 * e / (e - nu.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_reconstructs_the_matrix() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 2.0];
        let (d, v) = symmetric_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|m| v[m * 3 + i] * d[m] * v[m * 3 + j]).sum();
                assert!((r - a[j * 3 + i]).abs() < 1e-12, "{i} {j}: {r}");
            }
        }
    }
}

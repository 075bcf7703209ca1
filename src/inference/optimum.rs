//! The optimum of a `Likelihood` from a start close to it: a refit by ML, a
//! bootstrap replicate, a profile step. Quasi-Newton on the exact gradient
//! (entries the formula cannot give, in a singular block of a crossed model,
//! by differences), the derivative-free method where it stalls, and diagonal
//! entries a rounding error from 0 snapped onto the boundary as lme4 reports them.

use super::likelihood::Likelihood;
use crate::optimizer::{self, Settings};

pub struct Optimum {
    pub theta: Vec<f64>,
    pub deviance: f64,
    pub converged: bool,
    pub evaluations: usize,
}

/// Minimise over θ from `start`.
pub fn optimize(lik: &dyn Likelihood, start: &[f64]) -> Optimum {
    optimize_from(lik, start, None)
}

/// The inverse Hessian of the criterion at `theta` from differences of its
/// gradient (None where the gradient is not given or H is not positive definite).
pub fn inverse_hessian(lik: &dyn Likelihood, theta: &[f64]) -> Option<Vec<f64>> {
    let n = theta.len();
    let (_, g0) = lik.deviance_and_gradient(theta)?;
    let mut h = vec![0.0; n * n];
    for j in 0..n {
        let step = 1e-5 * theta[j].abs().max(1e-2);
        let mut t = theta.to_vec();
        t[j] += step;
        let (_, gj) = lik.deviance_and_gradient(&t)?;
        for i in 0..n {
            h[j * n + i] = (gj[i] - g0[i]) / step;
        }
    }
    if h.iter().any(|v| !v.is_finite()) {
        return None;
    }
    for j in 0..n {
        for i in 0..j {
            let m = 0.5 * (h[j * n + i] + h[i * n + j]);
            h[j * n + i] = m;
            h[i * n + j] = m;
        }
    }
    crate::dense::invert_spd(&h, n)
}

/// `optimize` with a given starting inverse Hessian (see `optimizer::minimize_bfgs_from`).
pub fn optimize_from(
    lik: &dyn Likelihood,
    start: &[f64],
    inverse_hessian: Option<&[f64]>,
) -> Optimum {
    let lower = lik.lower();
    let diagonal = lik.diagonal();
    let evals = std::cell::Cell::new(0usize);
    let dev = |t: &[f64]| {
        evals.set(evals.get() + 1);
        lik.deviance(t)
    };
    let mut fg = |theta: &[f64]| -> Option<(f64, Vec<f64>)> {
        evals.set(evals.get() + 1);
        let (f0, mut g) = lik
            .deviance_and_gradient(theta)
            .unwrap_or_else(|| (lik.deviance(theta), vec![f64::NAN; theta.len()]));
        if !f0.is_finite() {
            return None;
        }
        for j in 0..theta.len() {
            if g[j].is_nan() {
                let h = 1e-6 * theta[j].abs().max(0.1);
                let mut tp = theta.to_vec();
                tp[j] += h;
                let fp = dev(&tp);
                if theta[j] - h >= lower[j] {
                    let mut tm = theta.to_vec();
                    tm[j] -= h;
                    g[j] = (fp - dev(&tm)) / (2.0 * h);
                } else {
                    g[j] = (fp - f0) / h;
                }
            }
        }
        Some((f0, g))
    };
    let mut outcome =
        optimizer::minimize_bfgs_from(&mut fg, start, &lower, 500, true, inverse_hessian, 1e-10);
    if !outcome.converged || !outcome.f.is_finite() {
        let mut d = |t: &[f64]| dev(t);
        let from = if outcome.f.is_finite() {
            outcome.x.clone()
        } else {
            start.to_vec()
        };
        let nm = optimizer::minimize(&mut d, &from, &lower, &diagonal, &Settings::default());
        if nm.f <= outcome.f || !outcome.f.is_finite() {
            outcome = nm;
        }
    }
    let mut theta = outcome.x.clone();
    let mut f = outcome.f;
    for &i in &diagonal {
        if theta[i] > 0.0 && theta[i] < 1e-6 {
            let mut trial = theta.clone();
            trial[i] = 0.0;
            let ft = lik.deviance(&trial);
            if ft <= f + 1e-12 * f.abs().max(1.0) {
                theta = trial;
                f = ft.min(f);
            }
        }
    }
    Optimum {
        theta,
        deviance: f,
        converged: outcome.converged,
        evaluations: evals.get(),
    }
}

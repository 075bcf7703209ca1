//! The constrained criteria's exact gradients, in the free variables x and
//! in the profiled parameter's value v.
//!
//! One evaluation of the likelihood gives, at θ, the log-determinant terms
//! (ML: log|L|²) and ρ²(θ, β) = min_u ‖y − Xβ − ZΛu‖² + ‖u‖² at a fixed β,
//! with their gradients in θ (`Likelihood::gradients`). Every kind's
//! criterion is made of these:
//!
//! ```text
//!   σ fixed (σ, sd):   D = log|L|² + n log(2πσ²) + ρ²(θ, β̂)/σ²
//!                      ∂θ D = ∂ log|L|² + ∂ρ²/σ²,    ∂_{log σ} D = 2n − 2ρ²/σ²
//!   σ profiled (cor):  D = log|L|² + n (1 + log(2π ρ²/n)),   ∂θ D = ∂ log|L|² + (n/ρ²) ∂ρ²
//!   lᵀβ = b (fixed):   D as for cor with ρ_b² = ρ²(θ, β_b), β_b the constrained β;
//!                      ∂θ D = ∂ log|L|² + (n/ρ_b²) ∂ρ²(θ, β_b),   ∂_b D = (n/ρ_b²) 2(b − lᵀβ̂)/(lᵀAl)
//! ```
//! The ∂θ of a constrained ρ² is taken at the fixed β_b: β_b minimises over
//! a set that does not move with θ, so its own change does not count
//! (envelope). For sd and cor, θ is a function of (v, x) through the block's
//! permuted factor (`constrained`); that map costs no evaluation, and its
//! Jacobian is taken by central differences (one-sided at a bound).
//!
//! The derivative in v at the constrained minimum is the profile's own
//! slope, dD(v)/dv = ∂_v D(v, x*(v)) (the same envelope argument): what a
//! Newton step on ζ(v) = ±z needs, for nothing.

use super::constrained::Frame;
use super::parameters::Kind;
use crate::inference::likelihood::Point;
use crate::options::Method;

/// The criterion at (v, x) and its derivatives.
#[derive(Debug, Clone)]
pub struct Slope {
    pub deviance: f64,
    /// ∂D/∂v at fixed x
    pub dv: f64,
    /// ∂D/∂x at fixed v
    pub dx: Vec<f64>,
}

impl Frame {
    /// D(v, x), ∂D/∂v and ∂D/∂x; None where the likelihood cannot be evaluated.
    pub fn slope(&self, kind: Kind, v: f64, x: &[f64]) -> Option<Slope> {
        if !self.count_evaluation() {
            return None;
        }
        let (theta, sigma) = self.theta_sigma(kind, v, x);
        let g = match kind {
            Kind::Fixed { j } => self
                .lik
                .gradients(&theta, &|pt: &Point| self.fixed_excess(j, v, pt).1)?,
            _ => self.lik.gradients(&theta, &|pt: &Point| pt.beta.clone())?,
        };
        let (n, pt) = (self.n, &g.point);
        let (deviance, g_theta, mut dv, dlogsigma) = match (kind, sigma) {
            (Kind::Fixed { j }, _) => {
                let (excess, _, dexcess) = self.fixed_excess(j, v, pt);
                let rho2 = pt.pwrss + excess;
                let d = pt.logdet_l + n * (1.0 + (2.0 * std::f64::consts::PI * rho2 / n).ln());
                let gt: Vec<f64> = g
                    .logdets
                    .iter()
                    .zip(&g.pwrss)
                    .map(|(a, b)| a + n * b / rho2)
                    .collect();
                (d, gt, n * dexcess / rho2, 0.0)
            }
            (Kind::Cor { .. }, _) => {
                let d = pt.criterion(Method::Ml, n, self.p);
                let gt: Vec<f64> = g
                    .logdets
                    .iter()
                    .zip(&g.pwrss)
                    .map(|(a, b)| a + n * b / pt.pwrss)
                    .collect();
                (d, gt, 0.0, 0.0)
            }
            (_, Some(s)) => {
                let s2 = s * s;
                let d = pt.criterion_at_sigma(Method::Ml, n, self.p, s2, 0.0);
                let gt: Vec<f64> = g
                    .logdets
                    .iter()
                    .zip(&g.pwrss)
                    .map(|(a, b)| a + b / s2)
                    .collect();
                (d, gt, 0.0, 2.0 * n - 2.0 * pt.pwrss / s2)
            }
            _ => unreachable!("only a correlation or a fixed effect profiles σ"),
        };
        if !deviance.is_finite() {
            return None;
        }
        if g_theta.iter().any(|v| !v.is_finite()) {
            return self.slope_by_differences(kind, v, x, deviance);
        }
        let dx = match kind {
            Kind::Fixed { .. } => g_theta,
            Kind::Sigma => {
                dv = dlogsigma / v;
                g_theta
            }
            Kind::Sd { block, .. } | Kind::Cor { block, .. } => {
                let (dtheta_dv, dtheta_dx) = self.theta_jacobian(kind, v, x);
                let dot = |d: &[f64]| d.iter().zip(&g_theta).map(|(a, b)| a * b).sum::<f64>();
                dv += dot(&dtheta_dv);
                let mut dx: Vec<f64> = dtheta_dx.iter().map(|d| dot(d)).collect();
                if let Kind::Sd { .. } = kind {
                    // x holds log σ right after the other blocks' θ
                    dx[self.theta.len() - self.blocks[block].ntheta()] += dlogsigma;
                }
                dx
            }
        };
        let mut dx = dx;
        self.inward_at_bounds(kind, v, x, deviance, &mut dx);
        *self.last_slope.borrow_mut() = Some((kind, v, x.to_vec(), dv));
        Some(Slope { deviance, dv, dx })
    }

    /// On a bound x_i = 0 (a diagonal of Λ or C) the criterion is even in
    /// x_i, so its exact derivative there is 0 whether or not moving inward
    /// lowers it; the projected minimiser would stop. The one-sided
    /// difference (D(x + h e_i) − D(x))/h says which (its sign, ½ D'' h).
    fn inward_at_bounds(&self, kind: Kind, v: f64, x: &[f64], deviance: f64, dx: &mut [f64]) {
        let lower = self.lower(kind);
        for i in 0..x.len() {
            if lower[i] == 0.0 && x[i] <= 0.0 {
                let mut y = x.to_vec();
                let h = 1e-6;
                y[i] = h;
                let up = self.objective(kind, v, &y);
                if up.is_finite() {
                    dx[i] = (up - deviance) / h;
                }
            }
        }
    }

    /// dD(v)/dv at the constrained optimum x (NaN where it cannot be evaluated):
    /// the minimiser's last evaluation when that was at x, else one more.
    pub fn slope_at_optimum(&self, kind: Kind, v: f64, x: &[f64]) -> f64 {
        if let Some((k, lv, lx, dv)) = &*self.last_slope.borrow() {
            if *k == kind && *lv == v && lx.as_slice() == x {
                return *dv;
            }
        }
        self.slope(kind, v, x).map_or(f64::NAN, |s| s.dv)
    }

    /// Where the formulas give no gradient (a singular block of a crossed
    /// model): central differences of the objective.
    fn slope_by_differences(&self, kind: Kind, v: f64, x: &[f64], deviance: f64) -> Option<Slope> {
        let lower = self.lower(kind);
        let f = |v: f64, x: &[f64]| self.objective(kind, v, x);
        let mut dx = vec![0.0; x.len()];
        let mut y = x.to_vec();
        for i in 0..x.len() {
            let h = 1e-5 * x[i].abs().max(0.1);
            y[i] = x[i] + h;
            let up = f(v, &y);
            dx[i] = if x[i] - h >= lower[i] {
                y[i] = x[i] - h;
                (up - f(v, &y)) / (2.0 * h)
            } else {
                (up - deviance) / h
            };
            y[i] = x[i];
        }
        let (lo, hi) = self.params_range(kind);
        let h = 1e-5 * v.abs().max(0.1);
        let dv = if v - h >= lo && v + h <= hi {
            (f(v + h, x) - f(v - h, x)) / (2.0 * h)
        } else if v + h <= hi {
            (f(v + h, x) - deviance) / h
        } else {
            (deviance - f(v - h, x)) / h
        };
        if !(dv.is_finite() && dx.iter().all(|d| d.is_finite())) {
            return None;
        }
        *self.last_slope.borrow_mut() = Some((kind, v, x.to_vec(), dv));
        Some(Slope { deviance, dv, dx })
    }

    /// ∂θ/∂v and ∂θ/∂x_i of the map (v, x) → θ, by central differences
    /// (one-sided where a step would leave the bounds).
    fn theta_jacobian(&self, kind: Kind, v: f64, x: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let lower = self.lower(kind);
        let theta_at = |v: f64, x: &[f64]| self.theta_sigma(kind, v, x).0;
        let base = theta_at(v, x);
        let diff = |up: Vec<f64>, down: Option<Vec<f64>>, h: f64| -> Vec<f64> {
            match down {
                Some(dn) => up
                    .iter()
                    .zip(&dn)
                    .map(|(a, b)| (a - b) / (2.0 * h))
                    .collect(),
                None => up.iter().zip(&base).map(|(a, b)| (a - b) / h).collect(),
            }
        };
        let mut dx = Vec::with_capacity(x.len());
        let mut y = x.to_vec();
        for i in 0..x.len() {
            let h = 1e-6 * x[i].abs().max(0.1);
            y[i] = x[i] + h;
            let up = theta_at(v, &y);
            let down = (x[i] - h >= lower[i]).then(|| {
                y[i] = x[i] - h;
                theta_at(v, &y)
            });
            dx.push(diff(up, down, h));
            y[i] = x[i];
        }
        let (lo, hi) = self.params_range(kind);
        let h = 1e-6 * v.abs().max(0.1);
        let dv = if v + h <= hi {
            diff(
                theta_at(v + h, x),
                (v - h >= lo).then(|| theta_at(v - h, x)),
                h,
            )
        } else {
            theta_at(v - h, x)
                .iter()
                .zip(&base)
                .map(|(a, b)| (b - a) / h)
                .collect()
        };
        (dv, dx)
    }

    /// The range of the parameter of `kind`.
    fn params_range(&self, kind: Kind) -> (f64, f64) {
        let p = self
            .params
            .iter()
            .find(|p| p.kind == kind)
            .expect("a parameter of the model");
        (p.lower, p.upper)
    }
}

//! One interface to the profiled likelihood, whatever the number of grouping
//! factors: what inference evaluates at parameters other than the optimum.
//!
//! With Λ(θ) and R = [X y], every evaluation factors
//! `Λᵀ ZᵀZ Λ + I = L Lᵀ` and the Schur complement of [X y] (see `reml` and
//! `crossed`), which gives
//!
//! ```text
//!   log|L|², log|R_X|², ρ² (the penalised RSS), β̂(θ), (XᵀV⁻¹X)⁻¹/σ² = (R_XᵀR_X)⁻¹
//!   ML:   d(θ) = log|L|²            + n     (1 + log(2πρ²/n))
//!   REML: d(θ) = log|L|² + log|R_X|² + (n−p) (1 + log(2πρ²/(n−p)))
//! ```
//! and, not profiled over σ, `D(θ, σ) = log|L|² [+ log|R_X|²] + c log(2πσ²) + ρ²/σ²`
//! (c = n for ML, n − p for REML). Everything is on the problem's columns
//! (centred X, scaled Z: see `fit`); `stored` maps back to the data scale.

use crate::crossed::CrossedProblem;
use crate::options::Method;
use crate::reml::Problem;
use crate::theta::ThetaLayout;

/// The likelihood's pieces at one θ.
#[derive(Debug, Clone)]
pub struct Point {
    /// the problem's own criterion (REML or ML, profiled over σ)
    pub deviance: f64,
    pub logdet_l: f64,
    pub logdet_rx: f64,
    /// ρ²
    pub pwrss: f64,
    /// β̂(θ)
    pub beta: Vec<f64>,
    /// (R_XᵀR_X)⁻¹, p×p column-major: Cov(β̂) = σ² times this
    pub xtvx_inv: Vec<f64>,
}

/// The criterion's pieces at one θ and the gradients in θ of its two parts,
/// at a fixed β of the caller's choice: what a constrained minimisation
/// (a profile point) assembles its own criterion's gradient from.
#[derive(Debug, Clone)]
pub struct Gradients {
    pub point: Point,
    /// the β (problem's columns) at which ρ² is taken
    pub beta: Vec<f64>,
    /// ∂/∂θ of the criterion's log-determinant terms (ML: log|L|²; REML: + log|R_X|²)
    pub logdets: Vec<f64>,
    /// ∂/∂θ of ρ²(θ, β) = min_u ‖y − Xβ − ZΛu‖² + ‖u‖² at that fixed β; at β̂
    /// it is the derivative of ρ²(θ) (envelope)
    pub pwrss: Vec<f64>,
}

/// c: n − p for REML, n for ML (the divisor of ρ² in σ̂², the weight of log σ²).
pub fn residual_dof(method: Method, n: f64, p: usize) -> f64 {
    match method {
        Method::Reml => n - p as f64,
        Method::Ml => n,
    }
}

impl Point {
    pub fn sigma2(&self, method: Method, n: f64, p: usize) -> f64 {
        self.pwrss / residual_dof(method, n, p)
    }

    /// The log-determinant terms of the criterion `method`.
    pub fn logdets(&self, method: Method) -> f64 {
        self.logdet_l
            + if method == Method::Reml {
                self.logdet_rx
            } else {
                0.0
            }
    }

    /// The criterion `method` profiled over σ (either, from one evaluation).
    pub fn criterion(&self, method: Method, n: f64, p: usize) -> f64 {
        let c = residual_dof(method, n, p);
        self.logdets(method) + c * (1.0 + (2.0 * std::f64::consts::PI * self.pwrss / c).ln())
    }

    /// D(θ, σ) not profiled over σ, with ρ² raised by `extra` (a constrained β).
    pub fn criterion_at_sigma(
        &self,
        method: Method,
        n: f64,
        p: usize,
        sigma2: f64,
        extra: f64,
    ) -> f64 {
        let c = residual_dof(method, n, p);
        self.logdets(method)
            + c * (2.0 * std::f64::consts::PI * sigma2).ln()
            + (self.pwrss + extra) / sigma2
    }

    /// Cov(β̂) at the profiled σ̂².
    pub fn vcov(&self, method: Method, n: f64, p: usize) -> Vec<f64> {
        let s2 = self.sigma2(method, n, p);
        self.xtvx_inv.iter().map(|v| v * s2).collect()
    }
}

/// The profiled criterion of a model, one factor or several.
pub trait Likelihood {
    fn n(&self) -> f64;
    fn p(&self) -> usize;
    fn method(&self) -> Method;
    fn set_method(&mut self, method: Method);
    /// θ's lower bounds (0 on the diagonal of Λ, −∞ elsewhere).
    fn lower(&self) -> Vec<f64>;
    /// θ's diagonal entries.
    fn diagonal(&self) -> Vec<usize>;
    /// Λ per factor (factor order of the problem).
    fn lambdas(&self, theta: &[f64]) -> Vec<Vec<f64>>;
    /// The criterion (∞ where the matrices are not positive definite).
    fn deviance(&self, theta: &[f64]) -> f64;
    /// The criterion and its gradient in θ; entries it cannot give are NaN.
    fn deviance_and_gradient(&self, theta: &[f64]) -> Option<(f64, Vec<f64>)>;
    fn point(&self, theta: &[f64]) -> Option<Point>;
    /// The point and the gradients of its parts at the β that `beta` picks
    /// from it (entries the formulas cannot give are NaN).
    fn gradients(&self, theta: &[f64], beta: &dyn Fn(&Point) -> Vec<f64>) -> Option<Gradients>;
}

/// One grouping factor: per-group blocks (`reml::Problem`).
pub struct OneFactor {
    pub problem: Problem,
    pub layout: ThetaLayout,
    positions: Vec<(usize, usize)>,
}

impl OneFactor {
    pub fn new(problem: Problem, layout: ThetaLayout) -> OneFactor {
        let positions = layout.positions();
        OneFactor {
            problem,
            layout,
            positions,
        }
    }
}

impl Likelihood for OneFactor {
    fn n(&self) -> f64 {
        self.problem.n
    }
    fn p(&self) -> usize {
        self.problem.p
    }
    fn method(&self) -> Method {
        self.problem.method
    }
    fn set_method(&mut self, method: Method) {
        self.problem.method = method;
    }
    fn lower(&self) -> Vec<f64> {
        self.layout.lower()
    }
    fn diagonal(&self) -> Vec<usize> {
        self.layout.diagonal()
    }
    fn lambdas(&self, theta: &[f64]) -> Vec<Vec<f64>> {
        vec![self.layout.lambda(theta)]
    }
    fn deviance(&self, theta: &[f64]) -> f64 {
        self.problem.deviance(&self.layout.lambda(theta))
    }
    fn deviance_and_gradient(&self, theta: &[f64]) -> Option<(f64, Vec<f64>)> {
        self.problem
            .deviance_and_gradient(&self.layout.lambda(theta), &self.positions)
    }
    fn point(&self, theta: &[f64]) -> Option<Point> {
        self.problem.point(&self.layout.lambda(theta))
    }
    fn gradients(&self, theta: &[f64], beta: &dyn Fn(&Point) -> Vec<f64>) -> Option<Gradients> {
        self.problem
            .gradients(&self.layout.lambda(theta), &self.positions, beta)
    }
}

/// Several grouping factors (crossed or nested): `crossed::CrossedProblem`.
pub struct Crossed {
    pub problem: CrossedProblem,
    pub layouts: Vec<ThetaLayout>,
    positions: Vec<Vec<(usize, usize)>>,
}

impl Crossed {
    pub fn new(problem: CrossedProblem, layouts: Vec<ThetaLayout>) -> Crossed {
        let positions = layouts.iter().map(|l| l.positions()).collect();
        Crossed {
            problem,
            layouts,
            positions,
        }
    }
}

impl Likelihood for Crossed {
    fn n(&self) -> f64 {
        self.problem.n
    }
    fn p(&self) -> usize {
        self.problem.p
    }
    fn method(&self) -> Method {
        self.problem.method
    }
    fn set_method(&mut self, method: Method) {
        self.problem.method = method;
    }
    fn lower(&self) -> Vec<f64> {
        self.layouts.iter().flat_map(|l| l.lower()).collect()
    }
    fn diagonal(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut off = 0;
        for l in &self.layouts {
            out.extend(l.diagonal().iter().map(|i| i + off));
            off += l.len();
        }
        out
    }
    fn lambdas(&self, theta: &[f64]) -> Vec<Vec<f64>> {
        let mut out = Vec::with_capacity(self.layouts.len());
        let mut off = 0;
        for l in &self.layouts {
            out.push(l.lambda(&theta[off..off + l.len()]));
            off += l.len();
        }
        out
    }
    fn deviance(&self, theta: &[f64]) -> f64 {
        self.problem.deviance(&self.lambdas(theta))
    }
    fn deviance_and_gradient(&self, theta: &[f64]) -> Option<(f64, Vec<f64>)> {
        self.problem
            .deviance_and_gradient(&self.lambdas(theta), &self.positions)
    }
    fn point(&self, theta: &[f64]) -> Option<Point> {
        self.problem.point(&self.lambdas(theta))
    }
    fn gradients(&self, theta: &[f64], beta: &dyn Fn(&Point) -> Vec<f64>) -> Option<Gradients> {
        self.problem
            .gradients(&self.lambdas(theta), &self.positions, beta)
    }
}

//! The profile at one value: the ML deviance with one parameter fixed,
//! minimised over the others (lme4's `devfun2`, refitted by ML first).
//!
//! With β profiled out (β̂(θ) does not depend on σ), the ML deviance in
//! (θ, σ) is
//!
//! ```text
//!   D(θ, σ) = log|L(θ)|² + n log(2πσ²) + ρ²(θ)/σ²,    minimised by σ̂² = ρ²(θ)/n
//! ```
//! and each kind of parameter fixes it differently; x are the free variables
//! handed to the minimiser (every one bounded below at most, as the
//! optimizers want):
//!
//! - σ = v: x = θ, D(θ, v).
//! - a fixed effect lᵀβ = b (l = e_j on the data scale, lᵀβ = l_cᵀβ_c + shift):
//!   the constrained least squares adds (b − lᵀβ̂)²/(l_cᵀ(R_XᵀR_X)⁻¹l_c) to ρ²,
//!   σ is profiled: x = θ, `D = log|L|² + n (1 + log(2π ρ_b²/n))`.
//! - sd_i of a block = v: the block's S̃ (normalised, see `parameters`) is
//!   written as P S̃ Pᵀ = C Cᵀ with term i first (P a permutation, C lower
//!   triangular), so that sd_i = σ T_ii C₀₀. x = the other blocks' θ, log σ,
//!   and C but C₀₀, which is v/(σ T_ii). v = 0 is the boundary itself (row i
//!   of S̃ vanishes), no special case.
//! - cor_ij of a block = r: terms j, i first, C's second row is
//!   m (r, √(1−r²)), so the correlation is r whatever C₀₀ and m ≥ 0; x = the
//!   other blocks' θ, C₀₀, m and C's remaining rows; σ is profiled.
//!
//! The minimiser is projected BFGS on the exact gradients (`gradient`),
//! started from the inverse Hessian at the estimate (`local`), with bounded
//! Nelder–Mead where it stops short.

use super::parameters::{variance_parameters, Block, Kind, Parameter};
use crate::error::Result;
use crate::inference::likelihood::{Likelihood, Point};
use crate::inference::optimum::optimize;
use crate::inference::stored::Stored;
use crate::model::Model;
use crate::optimizer::{self, Settings};
use crate::options::Method;

/// The ML fit a profile is built around, and everything the constrained
/// minimisations need.
pub struct Frame {
    pub lik: Box<dyn Likelihood>,
    pub blocks: Vec<Block>,
    pub params: Vec<Parameter>,
    pub n: f64,
    pub p: usize,
    /// θ̂, σ̂ and the ML deviance at the ML optimum
    pub theta: Vec<f64>,
    pub sigma: f64,
    pub base: f64,
    /// every parameter at the optimum (lme4's `profile_base_value`)
    pub estimates: Vec<f64>,
    /// per fixed effect j: l_c and shift of e_j, and the ML standard error
    pub contrasts: Vec<(Vec<f64>, f64)>,
    pub se: Vec<f64>,
    /// a (intercept shift) and ȳ of the map β = β_c + e₀(aᵀβ_c + ȳ)
    shift: (Vec<f64>, f64),
    /// per parameter: a correlation's free variables where its constraint is void
    void_cache: Vec<std::cell::OnceCell<Vec<Vec<f64>>>>,
    /// the last `slope`: (kind, v, x, ∂D/∂v), for the profile's slope at an optimum just found
    pub(super) last_slope: std::cell::RefCell<Option<(Kind, f64, Vec<f64>, f64)>>,
    /// per parameter: the quadratic approximation at the estimate
    local_cache: Vec<std::cell::OnceCell<super::local::Local>>,
    shared: std::cell::OnceCell<Option<super::local::Shared>>,
    /// criterion evaluations so far (bounded by `MAX_EVALUATIONS`)
    pub evaluations: std::cell::Cell<u64>,
}

/// The most criterion evaluations one parameter's profile may take: a
/// regular profile takes a few thousand; an ill-behaved likelihood (or
/// damaged statistics) is stopped here rather than searched for minutes.
pub const MAX_EVALUATIONS: u64 = 200_000;

impl Frame {
    /// Refit by ML from the stored θ̂ (lme4's `refitML`) and name the parameters.
    pub fn new(model: &Model, stored: &Stored) -> Result<Frame> {
        let blocks = super::parameters::blocks(stored, model)?;
        if model.fixed.len() != stored.p {
            crate::bail!("the model value's fixed effects do not match its statistics");
        }
        let params = super::parameters::parameters(model, &blocks);
        let lik = stored.likelihood(Method::Ml);
        let (theta, base) = ml_optimum(&*lik, &stored.theta);
        let Some(pt) = lik.point(&theta) else {
            crate::bail!("the likelihood cannot be evaluated at the ML estimate");
        };
        let (n, p) = (stored.n, stored.p);
        let sigma = (pt.pwrss / n).sqrt();
        let contrasts: Vec<(Vec<f64>, f64)> = (0..p)
            .map(|j| {
                let mut l = vec![0.0; p];
                l[j] = 1.0;
                stored.contrast_on_problem_scale(&l)
            })
            .collect();
        let se = contrasts
            .iter()
            .map(|(lc, _)| sigma * quad(&pt.xtvx_inv, lc).sqrt())
            .collect();
        let mut frame = Frame {
            lik,
            blocks,
            params,
            n,
            p,
            theta,
            sigma,
            base,
            estimates: Vec::new(),
            contrasts,
            se,
            shift: (stored.intercept_shift.clone(), stored.y_shift),
            void_cache: Vec::new(),
            local_cache: Vec::new(),
            last_slope: std::cell::RefCell::new(None),
            shared: std::cell::OnceCell::new(),
            evaluations: std::cell::Cell::new(0),
        };
        frame.void_cache = (0..frame.params.len())
            .map(|_| std::cell::OnceCell::new())
            .collect();
        frame.local_cache = (0..frame.params.len())
            .map(|_| std::cell::OnceCell::new())
            .collect();
        frame.estimates = frame.all_parameters(&frame.theta.clone(), sigma, &pt.beta);
        Ok(frame)
    }

    /// Every parameter (variance parameters, then β on the data scale).
    fn all_parameters(&self, theta: &[f64], sigma: f64, beta_c: &[f64]) -> Vec<f64> {
        let mut out = variance_parameters(&self.blocks, theta, sigma);
        out.extend(self.beta_on_data_scale(beta_c));
        out
    }

    fn beta_on_data_scale(&self, beta_c: &[f64]) -> Vec<f64> {
        let mut beta = beta_c.to_vec();
        if !beta.is_empty() {
            beta[0] += self
                .shift
                .0
                .iter()
                .zip(beta_c)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + self.shift.1;
        }
        beta
    }

    /// The free variables at the ML optimum.
    pub fn start(&self, kind: Kind) -> Vec<f64> {
        self.free_at(kind, &self.theta, self.sigma)
    }

    /// The free variables of `kind` at (θ, σ).
    fn free_at(&self, kind: Kind, theta: &[f64], sigma: f64) -> Vec<f64> {
        match kind {
            Kind::Sigma | Kind::Fixed { .. } => theta.to_vec(),
            Kind::Sd { block, i } => {
                let c = self.permuted_factor(block, theta, &order(self.blocks[block].s, &[i]));
                let mut x = self.other_theta(block, theta);
                x.push(sigma.ln());
                x.extend_from_slice(&c[1..]);
                x
            }
            Kind::Cor { block, i, j } => {
                let s = self.blocks[block].s;
                let c = self.permuted_factor(block, theta, &order(s, &[j, i]));
                let mut x = self.other_theta(block, theta);
                x.push(c[0]);
                x.push((c[1] * c[1] + c[s] * c[s]).sqrt());
                x.extend(rows_from_two(&c, s));
                x
            }
        }
    }

    /// Lower bounds of the free variables.
    pub fn lower(&self, kind: Kind) -> Vec<f64> {
        let all = self.lik.lower();
        match kind {
            Kind::Sigma | Kind::Fixed { .. } => all,
            Kind::Sd { block, .. } => {
                let s = self.blocks[block].s;
                let mut lo = self.other_theta(block, &all);
                lo.push(f64::NEG_INFINITY);
                lo.extend_from_slice(&triangle_lower(s)[1..]);
                lo
            }
            Kind::Cor { block, .. } => {
                let s = self.blocks[block].s;
                let mut lo = self.other_theta(block, &all);
                lo.extend([0.0, 0.0]);
                lo.extend(rows_from_two(&triangle_lower(s), s));
                lo
            }
        }
    }

    /// θ and σ (None: profiled) from the free variables at the value v.
    pub fn theta_sigma(&self, kind: Kind, v: f64, x: &[f64]) -> (Vec<f64>, Option<f64>) {
        match kind {
            Kind::Sigma => (x.to_vec(), Some(v)),
            Kind::Fixed { .. } => (x.to_vec(), None),
            Kind::Sd { block, i } => {
                let b = &self.blocks[block];
                let k = self.theta.len() - b.ntheta();
                let sigma = x[k].exp();
                let mut c = vec![v / (sigma * b.tdiag[i])];
                c.extend_from_slice(&x[k + 1..]);
                (
                    self.with_block(block, &x[..k], &c, &order(b.s, &[i])),
                    Some(sigma),
                )
            }
            Kind::Cor { block, i, j } => {
                let b = &self.blocks[block];
                let k = self.theta.len() - b.ntheta();
                let c = cor_factor(v, x[k], x[k + 1], &x[k + 2..], b.s);
                (
                    self.with_block(block, &x[..k], &c, &order(b.s, &[j, i])),
                    None,
                )
            }
        }
    }

    /// The ML deviance at the value v of the parameter and the free variables x.
    pub fn objective(&self, kind: Kind, v: f64, x: &[f64]) -> f64 {
        if !self.count_evaluation() {
            return f64::NAN;
        }
        let (theta, sigma) = self.theta_sigma(kind, v, x);
        if let Kind::Cor { .. } = kind {
            return self.lik.deviance(&theta);
        }
        let Some(pt) = self.lik.point(&theta) else {
            return f64::INFINITY;
        };
        match (kind, sigma) {
            (Kind::Fixed { j }, _) => {
                let rho2 = pt.pwrss + self.fixed_excess(j, v, &pt).0;
                pt.logdet_l + self.n * (1.0 + (2.0 * std::f64::consts::PI * rho2 / self.n).ln())
            }
            (_, Some(s)) => pt.criterion_at_sigma(Method::Ml, self.n, self.p, s * s, 0.0),
            _ => unreachable!(),
        }
    }

    /// Count one criterion evaluation; false once `MAX_EVALUATIONS` are spent.
    pub(super) fn count_evaluation(&self) -> bool {
        let count = self.evaluations.get() + 1;
        self.evaluations.set(count);
        count <= MAX_EVALUATIONS
    }

    /// The quadratic approximation at the estimate of the parameter of `kind` (cached).
    pub(super) fn local(&self, kind: Kind) -> &super::local::Local {
        let index = self
            .params
            .iter()
            .position(|p| p.kind == kind)
            .expect("a parameter of the model");
        self.local_cache[index].get_or_init(|| match kind {
            Kind::Sigma | Kind::Fixed { .. } => match self
                .shared
                .get_or_init(|| super::local::Shared::at_estimate(self))
            {
                Some(shared) => super::local::Local::from_shared(self, shared, index),
                None => super::local::Local::at_estimate(self, index),
            },
            _ => super::local::Local::at_estimate(self, index),
        })
    }

    /// For lᵀβ = b: the rise (b − lᵀβ̂)²/(l_cᵀ A l_c) of ρ², and the constrained β_c
    /// = β̂ + A l_c (b − lᵀβ̂)/(l_cᵀ A l_c), A = (R_XᵀR_X)⁻¹, and the rise's
    /// derivative in b.
    pub(super) fn fixed_excess(&self, j: usize, b: f64, pt: &Point) -> (f64, Vec<f64>, f64) {
        let (lc, shift) = &self.contrasts[j];
        let est = lc.iter().zip(&pt.beta).map(|(a, b)| a * b).sum::<f64>() + shift;
        let a = &pt.xtvx_inv;
        let p = self.p;
        let al: Vec<f64> = (0..p)
            .map(|r| (0..p).map(|c| a[c * p + r] * lc[c]).sum())
            .collect();
        let v = lc.iter().zip(&al).map(|(x, y)| x * y).sum::<f64>();
        let d = b - est;
        let beta = pt
            .beta
            .iter()
            .zip(&al)
            .map(|(bb, a)| bb + a * d / v)
            .collect();
        (d * d / v, beta, 2.0 * d / v)
    }

    /// Every parameter at a point of the profile (the conditional optimum).
    pub fn parameters_at(&self, kind: Kind, v: f64, x: &[f64]) -> Option<Vec<f64>> {
        let (theta, sigma) = self.theta_sigma(kind, v, x);
        let pt = self.lik.point(&theta)?;
        if let Kind::Fixed { j } = kind {
            let (excess, beta, _) = self.fixed_excess(j, v, &pt);
            let sigma = ((pt.pwrss + excess) / self.n).sqrt();
            return Some(self.all_parameters(&theta, sigma, &beta));
        }
        let sigma = sigma.unwrap_or_else(|| (pt.pwrss / self.n).sqrt());
        Some(self.all_parameters(&theta, sigma, &pt.beta))
    }

    /// The ML deviance, not profiled, at every parameter given (sd, cor, σ, β on
    /// the data scale, in the order of `params`):
    /// `log|L|² + n log(2πσ²) + (ρ²(θ) + (β_c − β̂)ᵀ R_XᵀR_X (β_c − β̂))/σ²`.
    pub fn deviance_at(&self, all: &[f64]) -> Option<f64> {
        let nv = all.len() - self.p;
        let sigma = all[nv - 1];
        let theta = self.theta_of_sdcor(&all[..nv - 1], sigma);
        let pt = self.lik.point(&theta)?;
        let beta = &all[nv..];
        let mut beta_c = beta.to_vec();
        if !beta_c.is_empty() {
            beta_c[0] -= self
                .shift
                .0
                .iter()
                .zip(beta)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + self.shift.1;
        }
        let d: Vec<f64> = beta_c.iter().zip(&pt.beta).map(|(a, b)| a - b).collect();
        let excess = quad(&crate::dense::invert_spd(&pt.xtvx_inv, self.p)?, &d);
        Some(
            pt.logdet_l
                + self.n * (2.0 * std::f64::consts::PI * sigma * sigma).ln()
                + (pt.pwrss + excess) / (sigma * sigma),
        )
    }

    /// θ from every block's SDs and correlations (lme4's order) at σ:
    /// S̃_ij = sd_i sd_j cor_ij / (σ² T_ii T_jj), then `Block::theta_from_factor`.
    fn theta_of_sdcor(&self, sdcor: &[f64], sigma: f64) -> Vec<f64> {
        let mut theta = Vec::with_capacity(self.theta.len());
        let mut k = 0;
        for b in &self.blocks {
            let s = b.s;
            let full = super::parameters::unpack_lower(&sdcor[k..k + b.ntheta()], s);
            k += b.ntheta();
            let sd: Vec<f64> = (0..s)
                .map(|i| full[i * s + i] / (sigma * b.tdiag[i]))
                .collect();
            let mut cov = vec![0.0; s * s];
            for c in 0..s {
                for r in 0..s {
                    let cor = if r == c {
                        1.0
                    } else {
                        full[r.min(c) * s + r.max(c)]
                    };
                    cov[c * s + r] = sd[r] * sd[c] * cor;
                }
            }
            theta.extend(b.theta_from_factor(&super::parameters::semidefinite_cholesky(&cov, s)));
        }
        theta
    }

    /// Minimise the objective over x from `start`: (x, deviance).
    ///
    /// The constrained problems can have local minima on the bounds (an SD at
    /// 0; for a correlation, a void constraint, see `void_points`), which a
    /// descent from a neighbouring point may slide into past a lower interior
    /// minimum. So where the minimum found lies on a bound that the start (or
    /// the estimate) did not, the descent is repeated with those coordinates
    /// kept at a quarter of their start or more; an interior minimum found so
    /// is released and polished, and the lower of the two kept.
    pub fn minimise(&self, kind: Kind, v: f64, start: &[f64]) -> (Vec<f64>, f64) {
        let lower = self.lower(kind);
        let mut best = self.minimise_within(kind, v, start, &lower);
        if let Kind::Cor { .. } = kind {
            best = self.void_candidates(kind, v, best);
        }
        for from in [start.to_vec(), self.start(kind)] {
            best = self.away_from_bounds(kind, v, &from, &lower, best);
        }
        self.off_bounds(kind, v, &lower, best)
    }

    /// A minimum on (or next to) a bound x_i = 0 where the criterion, even in x_i, falls
    /// inward only at second order (a variance at 0 that the constraint
    /// makes worth raising): the derivative there is 0 and a descent started
    /// on the bound stays on it. So each such coordinate is tried at 0.05 and 0.5 (on
    /// the problem's scale, where θ is O(1)); where that is lower, the
    /// descent restarts from there and the lower minimum is kept.
    fn off_bounds(
        &self,
        kind: Kind,
        v: f64,
        lower: &[f64],
        best: (Vec<f64>, f64),
    ) -> (Vec<f64>, f64) {
        let mut best = best;
        for i in 0..lower.len() {
            // on the bound, or crawled a rounding step off it (the slope is O(x_i) there)
            if !(lower[i] == 0.0 && best.0[i] <= 1e-4) {
                continue;
            }
            for step in [0.05, 0.5] {
                let mut y = best.0.clone();
                y[i] = step;
                if self.objective(kind, v, &y) < best.1 - 1e-12 * best.1.abs() {
                    let other = self.minimise_within(kind, v, &y, lower);
                    if other.1 < best.1 {
                        best = other;
                        break;
                    }
                }
            }
        }
        best
    }

    fn minimise_within(&self, kind: Kind, v: f64, start: &[f64], lower: &[f64]) -> (Vec<f64>, f64) {
        if start.is_empty() {
            return (Vec::new(), self.objective(kind, v, start));
        }
        let mut fg = |x: &[f64]| self.slope(kind, v, x).map(|s| (s.deviance, s.dx));
        let h0 = self.local(kind).inverse_hessian.as_deref();
        let out = optimizer::minimize_bfgs_from(&mut fg, start, lower, 400, h0.is_none(), h0, 1e-9);
        if out.converged && out.f.is_finite() {
            return (out.x, out.f);
        }
        let f = |x: &[f64]| {
            let d = self.objective(kind, v, x);
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        };
        let from = if out.f.is_finite() {
            out.x.clone()
        } else {
            start.to_vec()
        };
        let diagonal: Vec<usize> = (0..lower.len()).filter(|&i| lower[i] == 0.0).collect();
        let mut g = |x: &[f64]| f(x);
        let nm = optimizer::minimize(
            &mut g,
            &from,
            lower,
            &diagonal,
            &Settings {
                ftol_abs: 1e-12,
                xtol_abs: 1e-9,
                max_evaluations: 20_000,
            },
        );
        if nm.f < out.f || !out.f.is_finite() {
            (nm.x, nm.f)
        } else {
            (out.x, out.f)
        }
    }

    /// The descent from `from` kept off the bounds `best` landed on.
    fn away_from_bounds(
        &self,
        kind: Kind,
        v: f64,
        from: &[f64],
        lower: &[f64],
        best: (Vec<f64>, f64),
    ) -> (Vec<f64>, f64) {
        let landed: Vec<usize> = (0..lower.len())
            .filter(|&i| lower[i] == 0.0 && best.0[i] <= 1e-10 && from[i] > 1e-8)
            .collect();
        if landed.is_empty() {
            return best;
        }
        let mut kept = lower.to_vec();
        for &i in &landed {
            kept[i] = 0.25 * from[i];
        }
        let (x, _) = self.minimise_within(kind, v, from, &kept);
        if landed.iter().any(|&i| x[i] <= kept[i]) {
            return best;
        }
        let polished = self.minimise_within(kind, v, &x, lower);
        if polished.1 < best.1 {
            polished
        } else {
            best
        }
    }

    /// A correlation's constraint is void where either SD is 0 (C₀₀ = 0 or
    /// m = 0): those points, at the deviance of the SD profiles at 0, belong
    /// to every value's profile, and a minimisation warm-started in the
    /// interior does not see them (orthodont: the slope SD at 0 caps |ζ| of the
    /// correlation at 1.42). They are tried where lower.
    fn void_candidates(&self, kind: Kind, v: f64, best: (Vec<f64>, f64)) -> (Vec<f64>, f64) {
        let mut best = best;
        for x in self.void_points(kind) {
            if self.objective(kind, v, &x) < best.1 {
                let other = self.minimise_within(kind, v, &x, &self.lower(kind));
                if other.1 < best.1 {
                    best = other;
                }
            }
        }
        best
    }

    /// The free variables of a correlation at the two SD profiles' minima at 0 (cached).
    fn void_points(&self, kind: Kind) -> Vec<Vec<f64>> {
        let Kind::Cor { block, i, j } = kind else {
            return Vec::new();
        };
        let index = self.params.iter().position(|p| p.kind == kind).unwrap();
        self.void_cache[index]
            .get_or_init(|| {
                [i, j]
                    .iter()
                    .filter_map(|&t| {
                        let sd = Kind::Sd { block, i: t };
                        // from the estimate moved along the conditional optimum's path to 0
                        let path = &self.local(sd).path;
                        let index = self.params.iter().position(|p| p.kind == sd).unwrap();
                        let dv = -self.estimates[index];
                        let lower = self.lower(sd);
                        let start: Vec<f64> = self
                            .start(sd)
                            .iter()
                            .zip(path)
                            .zip(&lower)
                            .map(|((x, p), l)| (x + p * dv).max(*l))
                            .collect();
                        let (x, d) = self.minimise(sd, 0.0, &start);
                        let (theta, sigma) = self.theta_sigma(sd, 0.0, &x);
                        d.is_finite()
                            .then(|| self.free_at(kind, &theta, sigma.unwrap()))
                    })
                    .collect()
            })
            .clone()
    }

    // -- the block's pieces ------------------------------------------------

    /// θ without the block's entries.
    fn other_theta(&self, block: usize, theta: &[f64]) -> Vec<f64> {
        let b = &self.blocks[block];
        let mut x = theta[..b.theta_off].to_vec();
        x.extend_from_slice(&theta[b.theta_off + b.ntheta()..]);
        x
    }

    /// The whole θ: the other blocks' entries and the block's from C (order `perm`).
    fn with_block(
        &self,
        block: usize,
        others: &[f64],
        c_packed: &[f64],
        perm: &[usize],
    ) -> Vec<f64> {
        let b = &self.blocks[block];
        let s = b.s;
        let c = super::parameters::unpack_lower(c_packed, s);
        // F = Pᵀ C: row perm[a] of F is row a of C, so S̃ = F Fᵀ.
        let mut f = vec![0.0; s * s];
        for col in 0..s {
            for a in 0..s {
                f[col * s + perm[a]] = c[col * s + a];
            }
        }
        let mut theta = others[..b.theta_off].to_vec();
        theta.extend(b.theta_from_factor(&f));
        theta.extend_from_slice(&others[b.theta_off..]);
        theta
    }

    /// C with C Cᵀ = P S̃ Pᵀ at θ (packed), the terms in the order `perm`.
    fn permuted_factor(&self, block: usize, theta: &[f64], perm: &[usize]) -> Vec<f64> {
        let b = &self.blocks[block];
        let s = b.s;
        let cov = b.normalised_cov(&theta[b.theta_off..b.theta_off + b.ntheta()]);
        let mut pc = vec![0.0; s * s];
        for c in 0..s {
            for r in 0..s {
                pc[c * s + r] = cov[perm[c] * s + perm[r]];
            }
        }
        super::parameters::pack_lower(&super::parameters::semidefinite_cholesky(&pc, s), s)
    }
}

/// θ̂ and the deviance of the ML fit from the stored fit's θ̂ (REML or ML).
fn ml_optimum(lik: &dyn Likelihood, theta: &[f64]) -> (Vec<f64>, f64) {
    let opt = optimize(lik, theta);
    let at_stored = lik.deviance(theta);
    if at_stored <= opt.deviance {
        (theta.to_vec(), at_stored)
    } else {
        (opt.theta, opt.deviance)
    }
}

/// The terms `first`, then the others in their order.
fn order(s: usize, first: &[usize]) -> Vec<usize> {
    let mut perm = first.to_vec();
    perm.extend((0..s).filter(|t| !first.contains(t)));
    perm
}

/// Lower bounds of a packed lower triangle: 0 on the diagonal.
fn triangle_lower(s: usize) -> Vec<f64> {
    let mut lo = Vec::new();
    for j in 0..s {
        for i in j..s {
            lo.push(if i == j { 0.0 } else { f64::NEG_INFINITY });
        }
    }
    lo
}

/// The packed entries (i, j) with i ≥ 2 (C's rows below the first two).
fn rows_from_two(packed: &[f64], s: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut k = 0;
    for j in 0..s {
        for i in j..s {
            if i >= 2 {
                out.push(packed[k]);
            }
            k += 1;
        }
    }
    out
}

/// The packed C of a correlation r: C₀₀ = c00, row 1 = m (r, √(1−r²)), rows ≥ 2 from `rest`.
fn cor_factor(r: f64, c00: f64, m: f64, rest: &[f64], s: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(s * (s + 1) / 2);
    let mut k = 0;
    for j in 0..s {
        for i in j..s {
            out.push(match (i, j) {
                (0, 0) => c00,
                (1, 0) => r * m,
                (1, 1) => (1.0 - r * r).max(0.0).sqrt() * m,
                _ => {
                    k += 1;
                    rest[k - 1]
                }
            });
        }
    }
    out
}

/// xᵀ A x (A p×p column-major).
fn quad(a: &[f64], x: &[f64]) -> f64 {
    let p = x.len();
    (0..p)
        .map(|c| (0..p).map(|r| x[r] * a[c * p + r]).sum::<f64>() * x[c])
        .sum()
}

//! Satterthwaite's degrees of freedom for each fixed effect, as lmerTest
//! computes them.
//!
//! With φ = (θ, σ) the variance parameters, D(φ) the REML (or ML) criterion
//! −2 log L with β profiled out, and V(φ) = Cov(β̂) = σ² (XᵀV⁻¹X)⁻¹-type
//! covariance, the asymptotic covariance of φ̂ is A = 2 H⁻¹, H = ∂²D/∂φ². For
//! the contrast β_j, with v = V_jj and g_k = ∂V_jj/∂φ_k,
//!
//! ```text
//!   df_j = 2 v² / (gᵀ A g) = v² / (gᵀ H⁻¹ g)
//! ```
//! H comes from the criterion profiled over σ, d(θ) (central differences):
//! with s = σ/σ̂ and D(θ, s) = L(θ) + c ln s² + c r(θ)/s², r = σ̂²(θ)/σ̂², the
//! s-row of H is exact (H_ss = 4c, H_θs = −2c∇r) and the Hessian of d is the
//! Schur complement of H_ss, so H⁻¹ is assembled blockwise. Differencing
//! D(θ, s) itself would not do at large n: its θθ entries are c times the
//! curvature that matters and cancel against H_θs²/H_ss to a few digits.
//! g are central differences of V (V needs no optimisation, so they are accurate).
//!
//! Scale: with L(θ) the deviance's log-determinant terms (free of y's scale),
//! D(θ, σ) = L(θ) + c ln(2πσ²) + ρ²(θ)/σ². The differences are taken in
//! s = σ/σ̂ (σ̂ at the optimum), dropping the constant c ln(2πσ̂²): D then has
//! the same digits whatever the scale of y (at y·1e100 its constant alone is
//! 8e4, and rounding it swamps the second differences). df is invariant under
//! this rescaling of one parameter.

use crate::dense::invert_spd;

/// At θ: the profiled criterion's log-determinant terms L(θ), the profiled
/// σ̂² and Cov(β̂) at σ̂² (p×p, column-major, already on the scale the user sees).
pub type AtTheta<'a> = dyn Fn(&[f64]) -> Option<(f64, f64, Vec<f64>)> + 'a;

/// The asymptotic covariance of the variance parameters φ = (θ, s), s = σ/σ̂,
/// and the derivatives of Cov(β̂) in φ: everything Satterthwaite's df need,
/// for any contrast.
/// Relative steps: for differences of the gradient (accurate to rounding
/// over the step), and for second differences of the criterion's values
/// (where the likelihood gives no gradient), whose rounding at large n calls
/// for a wider step.
const GRADIENT_STEP: f64 = 1e-4;
const VALUE_STEP: f64 = 1e-3;

/// The most θ entries whose Hessian is taken from second differences of
/// values (2k + 2k(k − 1) evaluations): beyond, the asymptotics are refused.
pub const MAX_VALUE_HESSIAN: usize = 30;

/// The gradient of the profiled criterion in θ, where the likelihood gives it.
pub type Gradient<'a> = dyn Fn(&[f64]) -> Option<Vec<f64>> + 'a;

pub struct Asymptotic {
    /// φ at the optimum: θ̂ and s = 1
    pub phi: Vec<f64>,
    /// H⁻¹ (m×m): A = 2 H⁻¹
    pub hinv: Vec<f64>,
    /// Cov(β̂) at the optimum (p×p) and its derivative in each φ_i
    pub v0: Vec<f64>,
    pub dv: Vec<Vec<f64>>,
    pub sigma2: f64,
    pub p: usize,
}

impl Asymptotic {
    /// From the criterion at θ (`at`); None where H is not positive definite.
    /// `c` is n − p for REML, n for ML (the weight of log σ² in the criterion).
    /// Without `values_allowed`, only the gradient route is taken (None where
    /// the likelihood gives no gradient): the cheap default of a fit.
    pub fn new(
        theta: &[f64],
        c: f64,
        p: usize,
        at: &AtTheta,
        gradient: Option<&Gradient>,
        values_allowed: bool,
    ) -> Option<Asymptotic> {
        let (l0, s2, v0) = at(theta)?;
        let k = theta.len();
        // The profiled criterion (s at its optimum √r), less constants:
        // d̃(θ) = L(θ) + c ln r(θ), r = σ̂²(θ)/σ̂², and V(θ)/r(θ) (V at s = 1).
        let profiled = |t: &[f64]| -> Option<(f64, f64, Vec<f64>)> {
            let (lt, s2t, vt) = at(t)?;
            let r = s2t / s2;
            Some((lt + c * r.ln(), r, vt.iter().map(|x| x / r).collect()))
        };
        let step = |x: f64, rel: f64| rel * x.abs().max(1e-2);
        let shifted = |i: usize, h: f64| {
            let mut x = theta.to_vec();
            x[i] += h;
            x
        };
        // ∇r and ∂(V/r) by central differences.
        let mut grad_r = vec![0.0; k];
        let mut dv = vec![vec![0.0; p * p]; k + 1];
        for i in 0..k {
            let h = step(theta[i], GRADIENT_STEP);
            let (_, rp, vp) = profiled(&shifted(i, h))?;
            let (_, rm, vm) = profiled(&shifted(i, -h))?;
            grad_r[i] = (rp - rm) / (2.0 * h);
            for (d, (a, b)) in dv[i].iter_mut().zip(vp.iter().zip(&vm)) {
                *d = (a - b) / (2.0 * h);
            }
        }
        // H_d: central differences of the gradient where it is given, else
        // Richardson-extrapolated second differences of d̃.
        let hd = gradient
            .and_then(|g| hessian_from_gradient(theta, g))
            .or_else(|| {
                if k > MAX_VALUE_HESSIAN || !values_allowed {
                    return None;
                }
                let value = |t: &[f64]| profiled(t).map(|(d, ..)| d);
                hessian_from_values(theta, l0, &value, VALUE_STEP)
            })?;
        // V(θ, s) = s² V(θ)/r(θ): ∂V/∂s = 2V at s = 1.
        dv[k] = v0.iter().map(|x| 2.0 * x).collect();
        // D(θ, s) = L + c ln s² + c r/s²: H_ss = 4c, H_θs = −2c ∇r; H_d is the
        // Schur complement H_θθ − H_θs H_sθ / H_ss, so H⁻¹ follows blockwise
        // without forming H_θθ (whose entries are c times larger and cancel).
        let hss = 4.0 * c;
        let w: Vec<f64> = grad_r.iter().map(|g| -2.0 * c * g / hss).collect();
        let hd_inv = if k == 0 {
            Vec::new()
        } else {
            invert_spd(&hd, k)?
        };
        let m = k + 1;
        let mut hinv = vec![0.0; m * m];
        let mut hw = vec![0.0; k];
        for a in 0..k {
            hw[a] = (0..k).map(|b| hd_inv[b * k + a] * w[b]).sum();
            for b in 0..k {
                hinv[b * m + a] = hd_inv[b * k + a];
            }
        }
        for a in 0..k {
            hinv[k * m + a] = -hw[a];
            hinv[a * m + k] = -hw[a];
        }
        hinv[k * m + k] = 1.0 / hss + w.iter().zip(&hw).map(|(x, y)| x * y).sum::<f64>();
        let mut phi = theta.to_vec();
        phi.push(1.0);
        Some(Asymptotic {
            phi,
            hinv,
            v0,
            dv,
            sigma2: s2,
            p,
        })
    }

    /// gᵀ H⁻¹ g.
    fn quad(&self, g: &[f64]) -> f64 {
        let m = self.phi.len();
        (0..m)
            .map(|a| {
                (0..m)
                    .map(|b| g[a] * self.hinv[b * m + a] * g[b])
                    .sum::<f64>()
            })
            .sum()
    }

    /// lᵀ V l and its gradient in φ.
    fn contrast(&self, l: &[f64]) -> (f64, Vec<f64>) {
        let p = self.p;
        let form = |v: &[f64]| -> f64 {
            (0..p)
                .map(|a| (0..p).map(|b| l[a] * v[b * p + a] * l[b]).sum::<f64>())
                .sum()
        };
        (form(&self.v0), self.dv.iter().map(|d| form(d)).collect())
    }

    /// Satterthwaite's df of the contrast lᵀβ: 2 (lᵀVl)² / (gᵀAg).
    pub fn df(&self, l: &[f64]) -> f64 {
        // as 1 / (uᵀ H⁻¹ u), u = g / v: v² overflows at extreme scales of y.
        let (v, g) = self.contrast(l);
        let u: Vec<f64> = g.iter().map(|x| x / v).collect();
        1.0 / self.quad(&u)
    }

    /// The asymptotic variance 2 gᵀH⁻¹g of a function of φ with gradient g.
    pub fn variance_of(&self, g: &[f64]) -> f64 {
        2.0 * self.quad(g)
    }
}

/// H of d̃ by central differences of its gradient, symmetrised.
fn hessian_from_gradient(theta: &[f64], gradient: &Gradient) -> Option<Vec<f64>> {
    let k = theta.len();
    let mut h = vec![0.0; k * k];
    for i in 0..k {
        let step = GRADIENT_STEP * theta[i].abs().max(1e-2);
        let mut up = theta.to_vec();
        up[i] += step;
        let mut down = theta.to_vec();
        down[i] -= step;
        let (gu, gd) = (gradient(&up)?, gradient(&down)?);
        if gu.iter().chain(&gd).any(|v| !v.is_finite()) {
            return None;
        }
        for j in 0..k {
            h[i * k + j] = (gu[j] - gd[j]) / (2.0 * step);
        }
    }
    for i in 0..k {
        for j in 0..i {
            let v = (h[i * k + j] + h[j * k + i]) / 2.0;
            h[i * k + j] = v;
            h[j * k + i] = v;
        }
    }
    Some(h)
}

/// H of d̃ by second differences of its values at relative step `rel` (d0 = d̃(θ)).
fn hessian_from_values(
    theta: &[f64],
    d0: f64,
    value: &dyn Fn(&[f64]) -> Option<f64>,
    rel: f64,
) -> Option<Vec<f64>> {
    let k = theta.len();
    let h: Vec<f64> = theta.iter().map(|x| rel * x.abs().max(1e-2)).collect();
    let at = |steps: &[(usize, f64)]| {
        let mut x = theta.to_vec();
        for &(i, s) in steps {
            x[i] += s * h[i];
        }
        value(&x)
    };
    let mut hd = vec![0.0; k * k];
    for i in 0..k {
        hd[i * k + i] = (at(&[(i, 1.0)])? - 2.0 * d0 + at(&[(i, -1.0)])?) / (h[i] * h[i]);
        for l in 0..i {
            let v = (at(&[(i, 1.0), (l, 1.0)])?
                - at(&[(i, 1.0), (l, -1.0)])?
                - at(&[(i, -1.0), (l, 1.0)])?
                + at(&[(i, -1.0), (l, -1.0)])?)
                / (4.0 * h[i] * h[l]);
            hd[l * k + i] = v;
            hd[i * k + l] = v;
        }
    }
    Some(hd)
}

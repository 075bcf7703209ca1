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
//! H and g are central differences of D and V (V needs no optimisation, so
//! its differences are accurate; D is a sum of logarithms known to ~1e-13).
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
    pub fn new(theta: &[f64], c: f64, p: usize, at: &AtTheta) -> Option<Asymptotic> {
        let (l0, s2, v0) = at(theta)?;
        // D(θ, s) − c ln(2πσ̂²) = L(θ) + c ln s² + c (σ̂²(θ)/σ̂²) / s²; V = Cov(β̂)(θ) s² σ̂² / σ̂²(θ).
        let unprofiled = |phi: &[f64]| -> Option<(f64, Vec<f64>)> {
            let (k, s) = (phi.len() - 1, phi[phi.len() - 1]);
            let (lt, s2t, vt) = at(&phi[..k])?;
            let ratio = s2t / s2;
            let d = lt + c * (s * s).ln() + c * ratio / (s * s);
            let v = vt.iter().map(|x| x * (s * s / ratio)).collect();
            Some((d, v))
        };
        let d0 = l0 + c;
        let mut phi = theta.to_vec();
        phi.push(1.0);
        let m = phi.len();
        let h: Vec<f64> = phi.iter().map(|x| 1e-4 * x.abs().max(1e-2)).collect();
        let at_step = |steps: &[(usize, f64)]| -> Option<(f64, Vec<f64>)> {
            let mut x = phi.clone();
            for &(i, s) in steps {
                x[i] += s * h[i];
            }
            unprofiled(&x)
        };
        let mut hess = vec![0.0; m * m];
        let mut dv = vec![vec![0.0; p * p]; m];
        for i in 0..m {
            let (fp, vp) = at_step(&[(i, 1.0)])?;
            let (fm, vm) = at_step(&[(i, -1.0)])?;
            hess[i * m + i] = (fp - 2.0 * d0 + fm) / (h[i] * h[i]);
            for (d, (a, b)) in dv[i].iter_mut().zip(vp.iter().zip(&vm)) {
                *d = (a - b) / (2.0 * h[i]);
            }
            for l in 0..i {
                let (fpp, _) = at_step(&[(i, 1.0), (l, 1.0)])?;
                let (fpm, _) = at_step(&[(i, 1.0), (l, -1.0)])?;
                let (fmp, _) = at_step(&[(i, -1.0), (l, 1.0)])?;
                let (fmm, _) = at_step(&[(i, -1.0), (l, -1.0)])?;
                let v = (fpp - fpm - fmp + fmm) / (4.0 * h[i] * h[l]);
                hess[l * m + i] = v;
                hess[i * m + l] = v;
            }
        }
        let hinv = invert_spd(&hess, m)?;
        Some(Asymptotic { phi, hinv, v0, dv, sigma2: s2, p })
    }

    /// gᵀ H⁻¹ g.
    fn quad(&self, g: &[f64]) -> f64 {
        let m = self.phi.len();
        (0..m).map(|a| (0..m).map(|b| g[a] * self.hinv[b * m + a] * g[b]).sum::<f64>()).sum()
    }

    /// lᵀ V l and its gradient in φ.
    fn contrast(&self, l: &[f64]) -> (f64, Vec<f64>) {
        let p = self.p;
        let form = |v: &[f64]| -> f64 { (0..p).map(|a| (0..p).map(|b| l[a] * v[b * p + a] * l[b]).sum::<f64>()).sum() };
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

/// df for every fixed effect; None where the Hessian is not positive definite.
/// `c` is n − p for REML, n for ML (the weight of log σ² in the criterion).
pub fn dfs(theta: &[f64], c: f64, p: usize, at: &AtTheta) -> Option<Vec<f64>> {
    let a = Asymptotic::new(theta, c, p, at)?;
    Some(
        (0..p)
            .map(|j| {
                let mut l = vec![0.0; p];
                l[j] = 1.0;
                a.df(&l)
            })
            .collect(),
    )
}

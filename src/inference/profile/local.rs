//! The profile's quadratic approximation at the estimate, per parameter.
//!
//! With H the Hessian of the constrained criterion D(v, x) in (v, x) at the
//! ML estimate (v̂, x̂), by differences of the exact gradient (`gradient`),
//!
//! ```text
//!   x*(v) ≈ x̂ − H_xx⁻¹ H_xv (v − v̂),          the conditional optimum's path
//!   D(v) − D̂ ≈ ½ h (v − v̂)²,  h = H_vv − H_vx H_xx⁻¹ H_xv,   so ζ(v) ≈ (v − v̂) √(h/2)
//! ```
//! H_xx⁻¹ starts every constrained minimisation of that parameter (no
//! difference Hessian per point), the path warm-starts the first point of a
//! limit search, and √(2/h) is the parameter's Wald-like scale: the first
//! guess of a limit is v̂ ± z √(2/h).
//!
//! For σ and the fixed effects x = θ, and H follows from one set of
//! differences in θ that they all share (`Shared`: the Hessians of the
//! σ-profiled and of the σ-fixed criterion, ∂β̂/∂θ); each fixed effect's
//! constraint adds a rank-one term (`from_shared`). For an SD or a
//! correlation H is taken in its own (v, x) by differences of the gradient.

use super::constrained::Frame;
use super::parameters::Kind;

/// What the estimate tells about one parameter's profile.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// H_xx⁻¹ (column-major), None where H_xx is not positive definite
    pub inverse_hessian: Option<Vec<f64>>,
    /// dx*/dv at the estimate (zeros where unknown)
    pub path: Vec<f64>,
    /// √(2/h): ζ rises by one per this much of v near the estimate
    pub scale: Option<f64>,
}

impl Local {
    /// The approximation at the estimate of parameter `index`.
    pub fn at_estimate(frame: &Frame, index: usize) -> Local {
        let par = &frame.params[index];
        let kind = par.kind;
        let v0 = frame.estimates[index];
        let x0 = frame.start(kind);
        let nx = x0.len();
        let none = Local {
            inverse_hessian: None,
            path: vec![0.0; nx],
            scale: None,
        };
        let Some(at) = frame.slope(kind, v0, &x0) else {
            return none;
        };
        // columns of H: forward differences of (∂_v D, ∂_x D), stepping into the range
        let dim = nx + 1;
        let mut h = vec![0.0; dim * dim];
        for c in 0..dim {
            let (mut v, mut x) = (v0, x0.clone());
            let step = if c == 0 {
                let s = 1e-5 * v0.abs().max(1e-2);
                if v0 + s > par.upper {
                    -s
                } else {
                    s
                }
            } else {
                // x has lower bounds only: a forward step stays inside
                1e-5 * x0[c - 1].abs().max(1e-2)
            };
            if c == 0 {
                v += step;
            } else {
                x[c - 1] += step;
            }
            let Some(sl) = frame.slope(kind, v, &x) else {
                return none;
            };
            h[c * dim] = (sl.dv - at.dv) / step;
            for r in 1..dim {
                h[c * dim + r] = (sl.dx[r - 1] - at.dx[r - 1]) / step;
            }
        }
        for c in 0..dim {
            for r in 0..c {
                let m = 0.5 * (h[c * dim + r] + h[r * dim + c]);
                h[c * dim + r] = m;
                h[r * dim + c] = m;
            }
        }
        Local::from_hessian(&h, nx)
    }

    /// The approximation from the joint Hessian H in (v, x) ((1+nx)², v first).
    fn from_hessian(h: &[f64], nx: usize) -> Local {
        let dim = nx + 1;
        if h.iter().any(|v| !v.is_finite()) {
            return Local {
                inverse_hessian: None,
                path: vec![0.0; nx],
                scale: None,
            };
        }
        let hxx: Vec<f64> = (0..nx)
            .flat_map(|c| (0..nx).map(move |r| (c, r)))
            .map(|(c, r)| h[(c + 1) * dim + r + 1])
            .collect();
        let hxv: Vec<f64> = (0..nx).map(|r| h[r + 1]).collect();
        let Some(inv) = (nx > 0)
            .then(|| crate::dense::invert_spd(&hxx, nx))
            .flatten()
        else {
            let scale = (h[0] > 0.0).then(|| (2.0 / h[0]).sqrt());
            return Local {
                inverse_hessian: None,
                path: vec![0.0; nx],
                scale,
            };
        };
        let path: Vec<f64> = (0..nx)
            .map(|r| -(0..nx).map(|c| inv[c * nx + r] * hxv[c]).sum::<f64>())
            .collect();
        let curvature = h[0] + hxv.iter().zip(&path).map(|(a, b)| a * b).sum::<f64>();
        let scale = (curvature > 0.0).then(|| (2.0 / curvature).sqrt());
        Local {
            inverse_hessian: Some(inv),
            path,
            scale,
        }
    }

    /// σ's and every fixed effect's approximation from one set of differences
    /// in θ (x = θ for all of them; `Shared`), None where those fail.
    pub fn from_shared(frame: &Frame, shared: &Shared, index: usize) -> Local {
        let t = frame.theta.len();
        let dim = t + 1;
        let mut h = vec![0.0; dim * dim];
        let (n, rho2) = (frame.n, shared.pwrss);
        match frame.params[index].kind {
            // D(θ, σ) = log|L|² + n log(2πσ²) + ρ²/σ²: at σ̂² = ρ²/n,
            // ∂²D/∂σ² = 4n/σ̂², ∂²D/∂σ∂θ = −2∂ρ²/σ̂³
            Kind::Sigma => {
                let s = frame.sigma;
                h[0] = 4.0 * n / (s * s);
                for r in 0..t {
                    h[r + 1] = -2.0 * shared.dpwrss[r] / (s * s * s);
                    h[(r + 1) * dim] = h[r + 1];
                    for c in 0..t {
                        h[(c + 1) * dim + r + 1] = shared.sigma_fixed[c * t + r];
                    }
                }
            }
            // D_b(θ) = log|L|² + n(1 + log(2π(ρ² + (b − e(θ))²/w)/n)), e = lᵀβ̂(θ),
            // w = l_cᵀAl_c: at b = e, with c = 2n/(ρ²w) and ∂e = l_cᵀ∂β̂,
            // H_bb = c, H_bθ = −c ∂e, H_θθ = H_profiled + c ∂e ∂eᵀ
            Kind::Fixed { j } => {
                let (lc, _) = &frame.contrasts[j];
                let w = quad(&shared.xtvx_inv, lc);
                let c = 2.0 * n / (rho2 * w);
                let de: Vec<f64> = (0..t)
                    .map(|r| {
                        (0..frame.p)
                            .map(|a| lc[a] * shared.dbeta[r * frame.p + a])
                            .sum()
                    })
                    .collect();
                h[0] = c;
                for r in 0..t {
                    h[r + 1] = -c * de[r];
                    h[(r + 1) * dim] = h[r + 1];
                    for cc in 0..t {
                        h[(cc + 1) * dim + r + 1] =
                            shared.profiled[cc * t + r] + c * de[r] * de[cc];
                    }
                }
            }
            _ => unreachable!("σ and fixed effects only"),
        }
        Local::from_hessian(&h, t)
    }
}

/// Differences in θ at the ML estimate that σ and every fixed effect share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// ρ² and its gradient at θ̂, (R_XᵀR_X)⁻¹
    pwrss: f64,
    dpwrss: Vec<f64>,
    xtvx_inv: Vec<f64>,
    /// Hessians (t×t): of the σ-profiled ML criterion, and of D(θ, σ̂) at fixed σ̂
    profiled: Vec<f64>,
    sigma_fixed: Vec<f64>,
    /// ∂β̂/∂θ_r, column r (p each)
    dbeta: Vec<f64>,
}

impl Shared {
    /// t + 1 evaluations of the likelihood's gradients.
    pub fn at_estimate(frame: &Frame) -> Option<Shared> {
        let (n, t, p) = (frame.n, frame.theta.len(), frame.p);
        let at = |theta: &[f64]| {
            if !frame.count_evaluation() {
                return None;
            }
            let g = frame.lik.gradients(theta, &|pt| pt.beta.clone())?;
            g.logdets
                .iter()
                .chain(&g.pwrss)
                .all(|v| v.is_finite())
                .then_some(g)
        };
        let g0 = at(&frame.theta)?;
        let s2 = frame.sigma * frame.sigma;
        let profiled_grad = |g: &crate::inference::likelihood::Gradients| -> Vec<f64> {
            g.logdets
                .iter()
                .zip(&g.pwrss)
                .map(|(a, b)| a + n * b / g.point.pwrss)
                .collect()
        };
        let fixed_grad = |g: &crate::inference::likelihood::Gradients| -> Vec<f64> {
            g.logdets
                .iter()
                .zip(&g.pwrss)
                .map(|(a, b)| a + b / s2)
                .collect()
        };
        let (p0, f0) = (profiled_grad(&g0), fixed_grad(&g0));
        let (mut profiled, mut sigma_fixed, mut dbeta) =
            (vec![0.0; t * t], vec![0.0; t * t], vec![0.0; t * p]);
        for c in 0..t {
            let mut theta = frame.theta.clone();
            let step = 1e-5 * theta[c].abs().max(1e-2);
            theta[c] += step;
            let g = at(&theta)?;
            let (pg, fg) = (profiled_grad(&g), fixed_grad(&g));
            for r in 0..t {
                profiled[c * t + r] = (pg[r] - p0[r]) / step;
                sigma_fixed[c * t + r] = (fg[r] - f0[r]) / step;
            }
            for a in 0..p {
                dbeta[c * p + a] = (g.point.beta[a] - g0.point.beta[a]) / step;
            }
        }
        for m in [&mut profiled, &mut sigma_fixed] {
            for c in 0..t {
                for r in 0..c {
                    let v = 0.5 * (m[c * t + r] + m[r * t + c]);
                    m[c * t + r] = v;
                    m[r * t + c] = v;
                }
            }
        }
        Some(Shared {
            pwrss: g0.point.pwrss,
            dpwrss: g0.pwrss.clone(),
            xtvx_inv: g0.point.xtvx_inv.clone(),
            profiled,
            sigma_fixed,
            dbeta,
        })
    }
}

/// xᵀAx (A column-major).
fn quad(a: &[f64], x: &[f64]) -> f64 {
    let p = x.len();
    (0..p)
        .map(|c| (0..p).map(|r| x[r] * a[c * p + r]).sum::<f64>() * x[c])
        .sum()
}

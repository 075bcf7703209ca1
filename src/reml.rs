//! The profiled REML / ML deviance from per-group cross-products.
//!
//! Model: y = Xβ + Zb + ε, b = Λu, u ~ N(0, σ²I), ε ~ N(0, σ²I), with one
//! grouping factor, so ZᵀZ is block diagonal (one q×q block per group i).
//! Write R = [X y] (k = p + 1 columns). For a given Λ:
//!
//! ```text
//!   L_i L_iᵀ = Λᵀ Z_iᵀZ_i Λ + I                       (q×q Cholesky per group)
//!   C_i      = L_i⁻¹ Λᵀ Z_iᵀR                          (q×k)
//!   S        = RᵀR − Σ_i C_iᵀ C_i  = Uᵀ U              (k×k Cholesky, U upper)
//! ```
//! U's leading p×p block is R_X, its last column holds r = R_X β̂ and the
//! penalised residual sum of squares ρ² = U_kk². With log|L|² = Σ_i 2 Σ log diag L_i:
//!
//! ```text
//!   ML:   d(θ) = log|L|² + n (1 + log(2π ρ²/n))
//!   REML: d(θ) = log|L|² + log|R_X|² + (n−p)(1 + log(2π ρ²/(n−p)))
//! ```
//! Nothing here touches rows: a deviance costs O(G (q³ + q k²) + k³).

use crate::options::Method;

pub struct Problem {
    pub n: f64,
    pub p: usize,
    pub q: usize,
    pub groups: usize,
    /// Per group, Z_iᵀZ_i as q×q column-major.
    pub ztz: Vec<f64>,
    /// Per group, Z_iᵀ[X y] as q×k column-major.
    pub ztr: Vec<f64>,
    /// [X y]ᵀ[X y], k×k column-major.
    pub rtr: Vec<f64>,
    pub method: Method,
}

/// In-place Cholesky of a column-major n×n matrix (lower factor); false if not positive definite.
pub fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[k * n + j] * a[k * n + j];
        }
        if !(d > 0.0) {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[j * n + i];
            for k in 0..j {
                s -= a[k * n + i] * a[k * n + j];
            }
            a[j * n + i] = s / d;
        }
    }
    true
}

/// Per-group work space and results.
struct GroupFactor {
    /// L_i, q×q lower, column-major.
    l: Vec<f64>,
    /// C_i, q×k column-major.
    c: Vec<f64>,
    /// Λᵀ Z_iᵀZ_i Λ scratch.
    m: Vec<f64>,
}

impl GroupFactor {
    fn new(q: usize, k: usize) -> Self {
        GroupFactor { l: vec![0.0; q * q], c: vec![0.0; q * k], m: vec![0.0; q * q] }
    }
}

pub struct Evaluation {
    pub deviance: f64,
    /// log|L|²
    pub logdet_l: f64,
    /// log|R_X|²
    pub logdet_rx: f64,
    /// ρ², the penalised residual sum of squares
    pub pwrss: f64,
    /// U (k×k upper, column-major)
    pub u: Vec<f64>,
}

impl Problem {
    pub fn k(&self) -> usize {
        self.p + 1
    }

    /// Factor group i: fills L_i and C_i; returns log|L_i|², or None if not PD.
    fn factor_group(&self, i: usize, lambda: &[f64], w: &mut GroupFactor) -> Option<f64> {
        let q = self.q;
        let k = self.k();
        let ztz = &self.ztz[i * q * q..(i + 1) * q * q];
        let ztr = &self.ztr[i * q * k..(i + 1) * q * k];
        // m = ZtZ Λ (q×q), then L = Λᵀ m + I (Λ lower: Λ[r, c] nonzero for r ≥ c).
        for c in 0..q {
            for r in 0..q {
                let mut s = 0.0;
                for t in c..q {
                    s += ztz[t * q + r] * lambda[c * q + t];
                }
                w.m[c * q + r] = s;
            }
        }
        for c in 0..q {
            for r in c..q {
                // (Λᵀ m)[r, c] = Σ_t Λ[t, r] m[t, c]
                let mut s = 0.0;
                for t in r..q {
                    s += lambda[r * q + t] * w.m[c * q + t];
                }
                w.l[c * q + r] = s + if r == c { 1.0 } else { 0.0 };
            }
        }
        // Only the lower triangle is read by the factorisation.
        if !cholesky_lower(&mut w.l, q) {
            return None;
        }
        // C = L⁻¹ Λᵀ ZtR
        for j in 0..k {
            for r in 0..q {
                let mut s = 0.0;
                for t in r..q {
                    s += lambda[r * q + t] * ztr[j * q + t];
                }
                w.c[j * q + r] = s;
            }
            for r in 0..q {
                let mut s = w.c[j * q + r];
                for t in 0..r {
                    s -= w.l[t * q + r] * w.c[j * q + t];
                }
                w.c[j * q + r] = s / w.l[r * q + r];
            }
        }
        let mut ld = 0.0;
        for r in 0..q {
            ld += 2.0 * w.l[r * q + r].ln();
        }
        Some(ld)
    }

    /// Σ_i over groups in `range` of C_iᵀC_i (upper triangle of k×k) and log|L_i|².
    fn partial(&self, lambda: &[f64], range: std::ops::Range<usize>) -> Option<(Vec<f64>, f64)> {
        let q = self.q;
        let k = self.k();
        let mut w = GroupFactor::new(q, k);
        let mut s = vec![0.0; k * k];
        let mut ld = 0.0;
        for i in range {
            ld += self.factor_group(i, lambda, &mut w)?;
            for b in 0..k {
                let cb = &w.c[b * q..(b + 1) * q];
                for a in 0..=b {
                    let ca = &w.c[a * q..(a + 1) * q];
                    let mut t = 0.0;
                    for r in 0..q {
                        t += ca[r] * cb[r];
                    }
                    s[b * k + a] += t;
                }
            }
        }
        Some((s, ld))
    }

    /// The profiled deviance and its pieces at Λ.
    pub fn evaluate(&self, lambda: &[f64]) -> Option<Evaluation> {
        let k = self.k();
        // Large problems are split into a fixed number of parts (deterministic sums,
        // whatever the machine), run on up to that many threads.
        const PARTS: usize = 8;
        let parts: Vec<Option<(Vec<f64>, f64)>> = if self.groups >= 4096 {
            let chunk = self.groups.div_ceil(PARTS);
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, PARTS);
            let ranges: Vec<_> = (0..PARTS).map(|t| (t * chunk).min(self.groups)..((t + 1) * chunk).min(self.groups)).collect();
            let mut results: Vec<Option<(Vec<f64>, f64)>> = (0..PARTS).map(|_| None).collect();
            std::thread::scope(|sc| {
                let per = PARTS.div_ceil(threads);
                for (rs, out) in ranges.chunks(per).zip(results.chunks_mut(per)) {
                    sc.spawn(move || {
                        for (r, o) in rs.iter().zip(out.iter_mut()) {
                            *o = self.partial(lambda, r.clone());
                        }
                    });
                }
            });
            results
        } else {
            vec![self.partial(lambda, 0..self.groups)]
        };
        let mut u = self.rtr.clone();
        let mut logdet_l = 0.0;
        for part in parts {
            let (s, ld) = part?;
            logdet_l += ld;
            for b in 0..k {
                for a in 0..=b {
                    u[b * k + a] -= s[b * k + a];
                }
            }
        }
        // Upper Cholesky of S (stored in the upper triangle): S = UᵀU.
        for j in 0..k {
            for a in j + 1..k {
                u[j * k + a] = 0.0;
            }
        }
        for j in 0..k {
            let mut d = u[j * k + j];
            for t in 0..j {
                d -= u[j * k + t] * u[j * k + t];
            }
            if j < self.p && !(d > 0.0) {
                return None;
            }
            let d = d.max(0.0).sqrt();
            u[j * k + j] = d;
            for c in j + 1..k {
                let mut s = u[c * k + j];
                for t in 0..j {
                    s -= u[j * k + t] * u[c * k + t];
                }
                u[c * k + j] = if d > 0.0 { s / d } else { 0.0 };
            }
        }
        let p = self.p;
        let pwrss = u[p * k + p] * u[p * k + p];
        let mut logdet_rx = 0.0;
        for j in 0..p {
            logdet_rx += 2.0 * u[j * k + j].ln();
        }
        let two_pi = 2.0 * std::f64::consts::PI;
        let deviance = match self.method {
            Method::Ml => logdet_l + self.n * (1.0 + (two_pi * pwrss / self.n).ln()),
            Method::Reml => {
                let nmp = self.n - p as f64;
                logdet_l + logdet_rx + nmp * (1.0 + (two_pi * pwrss / nmp).ln())
            }
        };
        if !deviance.is_finite() {
            return None;
        }
        Some(Evaluation { deviance, logdet_l, logdet_rx, pwrss, u })
    }

    pub fn deviance(&self, lambda: &[f64]) -> f64 {
        self.evaluate(lambda).map_or(f64::INFINITY, |e| e.deviance)
    }

    /// β̂ (on the problem's columns), σ̂², the covariance of β̂, and per group the
    /// conditional modes b_i = Λ u_i and conditional covariances σ² Λ (L_iL_iᵀ)⁻¹ Λᵀ.
    pub fn solution(&self, lambda: &[f64]) -> Option<Solution> {
        let e = self.evaluate(lambda)?;
        let (p, q, k) = (self.p, self.q, self.k());
        let u = &e.u;
        // β = R_X⁻¹ r
        let mut beta = vec![0.0; p];
        for j in (0..p).rev() {
            let mut s = u[p * k + j];
            for t in j + 1..p {
                s -= u[t * k + j] * beta[t];
            }
            beta[j] = s / u[j * k + j];
        }
        let sigma2 = match self.method {
            Method::Ml => e.pwrss / self.n,
            Method::Reml => e.pwrss / (self.n - p as f64),
        };
        // R_X⁻¹ (upper), then vcov = σ² R_X⁻¹ R_X⁻ᵀ.
        let mut rinv = vec![0.0; p * p];
        for c in 0..p {
            rinv[c * p + c] = 1.0 / u[c * k + c];
            for r in (0..c).rev() {
                let mut s = 0.0;
                for t in r + 1..=c {
                    s += u[t * k + r] * rinv[c * p + t];
                }
                rinv[c * p + r] = -s / u[r * k + r];
            }
        }
        let mut vcov = vec![0.0; p * p];
        for a in 0..p {
            for b in 0..p {
                let mut s = 0.0;
                for t in a.max(b)..p {
                    s += rinv[t * p + a] * rinv[t * p + b];
                }
                vcov[b * p + a] = sigma2 * s;
            }
        }
        let mut w = GroupFactor::new(q, k);
        let mut blups = vec![0.0; self.groups * q];
        let mut cond_cov = vec![0.0; self.groups * q * q];
        let mut uu = vec![0.0; q];
        let mut m = vec![0.0; q * q];
        for i in 0..self.groups {
            self.factor_group(i, lambda, &mut w)?;
            // u_i = L⁻ᵀ (c_y − C_X β)
            for r in 0..q {
                let mut s = w.c[p * q + r];
                for j in 0..p {
                    s -= w.c[j * q + r] * beta[j];
                }
                uu[r] = s;
            }
            for r in (0..q).rev() {
                let mut s = uu[r];
                for t in r + 1..q {
                    s -= w.l[r * q + t] * uu[t];
                }
                uu[r] = s / w.l[r * q + r];
            }
            for r in 0..q {
                let mut s = 0.0;
                for t in 0..=r {
                    s += lambda[t * q + r] * uu[t];
                }
                blups[i * q + r] = s;
            }
            // m = L⁻¹ Λᵀ (q×q); cond cov = σ² mᵀ m.
            for c in 0..q {
                for r in 0..q {
                    m[c * q + r] = lambda[r * q + c];
                }
                for r in 0..q {
                    let mut s = m[c * q + r];
                    for t in 0..r {
                        s -= w.l[t * q + r] * m[c * q + t];
                    }
                    m[c * q + r] = s / w.l[r * q + r];
                }
            }
            for a in 0..q {
                for b in 0..q {
                    let mut s = 0.0;
                    for t in 0..q {
                        s += m[a * q + t] * m[b * q + t];
                    }
                    cond_cov[i * q * q + b * q + a] = sigma2 * s;
                }
            }
        }
        Some(Solution { deviance: e.deviance, beta, sigma2, vcov, blups, cond_cov })
    }
}

pub struct Solution {
    pub deviance: f64,
    pub beta: Vec<f64>,
    pub sigma2: f64,
    /// p×p column-major
    pub vcov: Vec<f64>,
    /// groups × q, on the problem's (transformed) random-effect columns
    pub blups: Vec<f64>,
    /// groups × q×q column-major
    pub cond_cov: Vec<f64>,
}

//! `poly(x, k)`: R's orthogonal polynomials (and `raw = TRUE`'s powers) of
//! one variable, inside the formula, from moments of the same pass.
//!
//! R's `poly(x, k)` is the QR decomposition of the Vandermonde matrix
//! [1, x, …, x^k]: column j is the monic polynomial p_j orthogonal to the
//! lower ones over the rows, divided by its norm. The monic orthogonal
//! polynomials follow Stieltjes' three-term recurrence,
//!
//! ```text
//!   p₀ = 1,   p₁ = x − α₀,   p_{j+1} = (x − α_j) p_j − (‖p_j‖² / ‖p_{j−1}‖²) p_{j−1}
//!   α_j = ⟨x p_j, p_j⟩ / ⟨p_j, p_j⟩,      ⟨f, g⟩ = Σᵢ f(xᵢ) g(xᵢ)
//!   poly(x, k)_j = p_j(x) / ‖p_j‖           (j = 1 … k)
//! ```
//!
//! and every inner product of polynomials of degree ≤ k is a combination of
//! the power sums S_m = Σᵢ uᵢ^m, m ≤ 2k: ⟨Σ_a f_a u^a, Σ_b g_b u^b⟩ =
//! Σ_ab f_a g_b S_{a+b}. So the pass keeps the power sums (`PowerSums`),
//! and the basis is exact arithmetic on them afterwards. R's `coefs`
//! (`alpha` = α₀ … α_{k−1}, `norm2` = 1, n, ‖p₁‖², …, ‖p_k‖²) are what
//! `predict(poly)` evaluates new rows by, and what the model value stores.
//!
//! Offsets: x² of x ≈ 1.7e9 has no digit left of the variation, so the
//! powers are of u = x − a about an origin a in the data (the first value a
//! state saw); the sums are recentred on the mean before the recurrence.
//! States with different origins are merged after re-expressing one in the
//! other's origin (binomially, `PowerSums::reorigin`; the accumulated design
//! columns alike, `transform::reorigin`).
//!
//! A design column poly(x, k)_j · z (z: the rest of its term) is the
//! combination Σ_i c_{ji} u^i z of the accumulated columns u^i z (i = 0 is
//! the term without x), `PolyBasis::coefficients` giving c in powers of u.
//! R evaluates poly() in `model.frame` before `na.omit` (and refuses a
//! missing x), so the sums are over every row where x is present, as
//! `scale()`'s moments.

use crate::bail;
use crate::error::Result;

/// Highest degree lmm fits: power sums up to 2k lose about 1.5 digits per
/// degree to cancellation (measured in the tests against Gram–Schmidt on the
/// rows: 1e-14 up to k = 3, 9e-13 at 4, 2e-11 at 5, 6e-10 at 6).
pub const MAX_DEGREE: u32 = 6;

/// `poly(x, degree, raw)`'s arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolySpec {
    pub degree: u32,
    pub raw: bool,
}

/// Power sums of u = x − origin over the rows where x is present, and up to
/// degree + 1 distinct values (R refuses a degree ≥ the number of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PowerSums {
    pub origin: Option<f64>,
    /// S_m, m = 0 … 2·degree.
    pub sums: Vec<f64>,
    /// Distinct values of x seen, sorted, at most degree + 1 of them.
    pub distinct: Vec<f64>,
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64)
}

/// Σ_i C(m, i) δ^{m−i} s_i for every m: sums of (u + δ)^m from sums of u^m.
fn shift_sums(sums: &[f64], delta: f64) -> Vec<f64> {
    (0..sums.len())
        .map(|m| {
            (0..=m)
                .map(|i| binomial(m, i) * delta.powi((m - i) as i32) * sums[i])
                .sum()
        })
        .collect()
}

impl PowerSums {
    pub fn new(spec: PolySpec) -> PowerSums {
        PowerSums {
            origin: None,
            sums: vec![0.0; 2 * spec.degree as usize + 1],
            distinct: Vec::new(),
        }
    }

    fn degree(&self) -> usize {
        (self.sums.len() - 1) / 2
    }

    fn note_distinct(&mut self, x: f64) {
        if self.distinct.len() > self.degree() {
            return;
        }
        if let Err(at) = self.distinct.binary_search_by(|d| d.total_cmp(&x)) {
            self.distinct.insert(at, x);
        }
    }

    /// One value of x (finite); the first fixes the origin.
    pub fn push(&mut self, x: f64) {
        let a = *self.origin.get_or_insert(x);
        let u = x - a;
        let mut p = 1.0;
        for s in self.sums.iter_mut() {
            *s += p;
            p *= u;
        }
        self.note_distinct(x);
    }

    /// The sums about origin `b` instead.
    pub fn reorigin(&mut self, b: f64) {
        if let Some(a) = self.origin {
            self.sums = shift_sums(&self.sums, a - b);
        }
        self.origin = Some(b);
    }

    /// Add other's rows (re-expressed in this origin).
    pub fn merge(&mut self, other: &PowerSums) {
        let Some(b) = other.origin else { return };
        let a = *self.origin.get_or_insert(b);
        let theirs = if a == b {
            other.sums.clone()
        } else {
            shift_sums(&other.sums, b - a)
        };
        for (s, t) in self.sums.iter_mut().zip(theirs) {
            *s += t;
        }
        for &x in &other.distinct {
            self.note_distinct(x);
        }
    }
}

/// The basis of `poly(x, k)` over the fit's rows: R's `coefs`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolyBasis {
    pub raw: bool,
    /// The origin a the α are relative to (the accumulated powers' origin):
    /// R's alpha is a + α. Relative, they keep their digits at any offset
    /// (x ≈ 1.7e9 would round R's alpha to 2.4e-7), and x − α_j is computed
    /// as (x − a) − α_j.
    pub origin: f64,
    /// α₀ … α_{k−1}, relative to `origin` (empty for raw).
    pub alpha: Vec<f64>,
    /// 1, n, ‖p₁‖², …, ‖p_k‖² (empty for raw).
    pub norm2: Vec<f64>,
    pub degree: usize,
}

impl PolyBasis {
    /// The basis from the sums (an error naming the variable where R's poly() errs).
    pub fn from_sums(name: &str, spec: PolySpec, s: &PowerSums) -> Result<PolyBasis> {
        let k = spec.degree as usize;
        if spec.raw {
            return Ok(PolyBasis {
                raw: true,
                origin: 0.0,
                alpha: Vec::new(),
                norm2: Vec::new(),
                degree: k,
            });
        }
        if s.distinct.len() <= k {
            bail!(
                "'{name}': the degree {k} must be less than the number of distinct values of its variable ({}), as R's poly() requires",
                s.distinct.len()
            );
        }
        let a = s.origin.expect("values seen");
        // sums of (x − x̄)^m
        let mean_u = s.sums[1] / s.sums[0];
        let c = shift_sums(&s.sums, -mean_u);
        let inner = |f: &[f64], g: &[f64]| -> f64 {
            let mut t = 0.0;
            for (i, fi) in f.iter().enumerate() {
                for (j, gj) in g.iter().enumerate() {
                    t += fi * gj * c[i + j];
                }
            }
            t
        };
        let times_u = |p: &[f64]| -> Vec<f64> {
            let mut q = vec![0.0];
            q.extend_from_slice(p);
            q
        };
        let mut polys: Vec<Vec<f64>> = vec![vec![1.0]];
        let mut norm2 = vec![1.0, c[0]];
        let mut alpha = Vec::with_capacity(k);
        for j in 0..k {
            let p = &polys[j];
            let aj = inner(&times_u(p), p) / norm2[j + 1];
            let mut next = times_u(p);
            for (i, pi) in p.iter().enumerate() {
                next[i] -= aj * pi;
            }
            if j > 0 {
                let beta = norm2[j + 1] / norm2[j];
                for (i, qi) in polys[j - 1].iter().enumerate() {
                    next[i] -= beta * qi;
                }
            }
            let n2 = inner(&next, &next);
            if !(n2 > 0.0 && n2.is_finite()) {
                bail!("'{name}': the polynomial of degree {} is numerically zero over the rows; use a lower degree", j + 1);
            }
            alpha.push(aj + mean_u);
            norm2.push(n2);
            polys.push(next);
        }
        Ok(PolyBasis {
            raw: false,
            origin: a,
            alpha,
            norm2,
            degree: k,
        })
    }

    /// c[j−1][i]: column j (1 … k) as Σ_i c_{ji} (x − a)^i, i = 0 … j.
    pub fn coefficients(&self, a: f64) -> Vec<Vec<f64>> {
        let k = self.degree;
        // p_j in powers of t = x − a, by the recurrence on coefficient vectors
        let mut polys: Vec<Vec<f64>> = vec![vec![1.0]];
        let mut out = Vec::with_capacity(k);
        for j in 0..k {
            let next: Vec<f64> = if self.raw {
                // x^{j+1} = (t + a)^{j+1}
                (0..=j + 1)
                    .map(|i| binomial(j + 1, i) * a.powi((j + 1 - i) as i32))
                    .collect()
            } else {
                let p = &polys[j];
                // x − α_j = t − (α_j + origin − a)
                let shift = self.alpha[j] + (self.origin - a);
                let mut q = vec![0.0; j + 2];
                for (i, pi) in p.iter().enumerate() {
                    q[i + 1] += pi;
                    q[i] -= shift * pi;
                }
                if j > 0 {
                    let beta = self.norm2[j + 1] / self.norm2[j];
                    for (i, r) in polys[j - 1].iter().enumerate() {
                        q[i] -= beta * r;
                    }
                }
                q
            };
            let scale = if self.raw {
                1.0
            } else {
                self.norm2[j + 2].sqrt()
            };
            out.push(next.iter().map(|c| c / scale).collect());
            polys.push(next);
        }
        out
    }

    /// Column j (0-based) at x.
    pub fn column(&self, x: f64, j: usize) -> f64 {
        if self.raw {
            return x.powi(j as i32 + 1);
        }
        let u = x - self.origin;
        let (mut prev, mut cur) = (0.0, 1.0);
        for i in 0..=j {
            let beta = if i == 0 {
                0.0
            } else {
                self.norm2[i + 1] / self.norm2[i]
            };
            (prev, cur) = (cur, (u - self.alpha[i]) * cur - beta * prev);
        }
        cur / self.norm2[j + 2].sqrt()
    }

    /// The k columns at x (R's `predict(poly(…), x)`), into `out`.
    pub fn evaluate(&self, x: f64, out: &mut [f64]) {
        if self.raw {
            let mut p = 1.0;
            for o in out.iter_mut().take(self.degree) {
                p *= x;
                *o = p;
            }
            return;
        }
        let u = x - self.origin;
        let (mut prev, mut cur) = (0.0, 1.0);
        for j in 0..self.degree {
            let beta = if j == 0 {
                0.0
            } else {
                self.norm2[j + 1] / self.norm2[j]
            };
            let next = (u - self.alpha[j]) * cur - beta * prev;
            out[j] = next / self.norm2[j + 2].sqrt();
            (prev, cur) = (cur, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gram–Schmidt (twice) on the rows' Vandermonde columns: the reference.
    fn direct(x: &[f64], k: usize) -> Vec<Vec<f64>> {
        let xbar = x.iter().sum::<f64>() / x.len() as f64;
        let mut cols: Vec<Vec<f64>> = Vec::new();
        cols.push(vec![1.0; x.len()]);
        for j in 1..=k {
            let mut v: Vec<f64> = x.iter().map(|xi| (xi - xbar).powi(j as i32)).collect();
            for _ in 0..2 {
                for c in &cols {
                    let d: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum::<f64>()
                        / c.iter().map(|b| b * b).sum::<f64>();
                    v.iter_mut().zip(c).for_each(|(a, b)| *a -= d * b);
                }
            }
            cols.push(v);
        }
        cols.iter()
            .skip(1)
            .map(|c| {
                let n = c.iter().map(|b| b * b).sum::<f64>().sqrt();
                c.iter().map(|b| b / n).collect()
            })
            .collect()
    }

    fn sums_of(x: &[f64], spec: PolySpec) -> PowerSums {
        let mut s = PowerSums::new(spec);
        x.iter().for_each(|&v| s.push(v));
        s
    }

    fn values(x: &[f64], offset: f64, k: u32) -> (f64, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let x: Vec<f64> = x.iter().map(|v| v + offset).collect();
        let spec = PolySpec {
            degree: k,
            raw: false,
        };
        let s = sums_of(&x, spec);
        let b = PolyBasis::from_sums("poly(x)", spec, &s).unwrap();
        let a = s.origin.unwrap();
        let coef = b.coefficients(a);
        let by_coef: Vec<Vec<f64>> = coef
            .iter()
            .map(|c| {
                x.iter()
                    .map(|xi| {
                        c.iter()
                            .enumerate()
                            .map(|(i, ci)| ci * (xi - a).powi(i as i32))
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let mut by_rec = vec![vec![0.0; x.len()]; k as usize];
        let mut out = vec![0.0; k as usize];
        for (r, &xi) in x.iter().enumerate() {
            b.evaluate(xi, &mut out);
            for j in 0..k as usize {
                by_rec[j][r] = out[j];
                assert_eq!(out[j], b.column(xi, j));
            }
        }
        let worst = by_coef
            .iter()
            .chain(&by_rec)
            .zip(direct(&x, k as usize).iter().cycle())
            .flat_map(|(a, b)| a.iter().zip(b).map(|(p, q)| (p - q).abs()))
            .fold(0.0, f64::max);
        (worst, by_coef, by_rec)
    }

    fn data() -> Vec<f64> {
        // uneven values with ties: 0.37·i² mod 11, 40 rows
        (0..40).map(|i| (0.37 * (i * i) as f64) % 11.0).collect()
    }

    #[test]
    fn orthonormal_as_gram_schmidt_of_the_rows() {
        for k in 1..=MAX_DEGREE {
            let (worst, _, _) = values(&data(), 0.0, k);
            assert!(worst < [1e-14, 1e-13, 1e-13, 1e-11, 1e-9, 1e-8][k as usize - 1], "degree {k}: {worst:e}");
        }
    }

    #[test]
    fn offsets_cost_nothing() {
        for offset in [1e3, 1.7e9] {
            let (worst, _, _) = values(&data(), offset, 3);
            assert!(worst < 1e-9, "offset {offset}: {worst:e}");
        }
    }

    #[test]
    fn r_coefs_of_a_known_vector() {
        // R 4.5: attr(poly(c(1, 2, 4, 7, 11), 2), "coefs") is
        //   alpha = c(5, 7), norm2 = c(1, 5, 66, 514.8); column 2 at x = 1 is 0.475997296813150672
        let x = [1.0, 2.0, 4.0, 7.0, 11.0];
        let spec = PolySpec {
            degree: 2,
            raw: false,
        };
        let b = PolyBasis::from_sums("p", spec, &sums_of(&x, spec)).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-13 * b.abs();
        let alpha: Vec<f64> = b.alpha.iter().map(|a| a + b.origin).collect();
        assert!(close(alpha[0], 5.0) && close(alpha[1], 7.0), "{alpha:?}");
        assert!(close(b.norm2[1], 5.0) && close(b.norm2[2], 66.0), "{:?}", b.norm2);
        assert!((b.norm2[3] - 514.8).abs() < 1e-11, "{:?}", b.norm2);
        let mut out = [0.0; 2];
        b.evaluate(1.0, &mut out);
        assert!(close(out[1], 0.475997296813150672), "{}", out[1]);
    }

    #[test]
    fn merged_sums_in_other_origins_are_the_sums() {
        let x = data();
        let spec = PolySpec {
            degree: 3,
            raw: false,
        };
        let whole = sums_of(&x, spec);
        let mut a = sums_of(&x[..13], spec);
        let b = sums_of(&x[13..], spec);
        a.merge(&b);
        for (p, q) in a.sums.iter().zip(&whole.sums) {
            assert!((p - q).abs() <= 1e-10 * q.abs().max(1.0), "{p} {q}");
        }
        assert_eq!(a.distinct.len(), 4);
    }

    #[test]
    fn degree_needs_distinct_values() {
        let spec = PolySpec {
            degree: 2,
            raw: false,
        };
        let e = PolyBasis::from_sums("poly(d, 2)", spec, &sums_of(&[1.0, 2.0, 1.0, 2.0], spec))
            .unwrap_err();
        assert!(e.to_string().contains("distinct values"), "{e}");
    }

    #[test]
    fn raw_coefficients_are_binomial() {
        let b = PolyBasis {
            raw: true,
            origin: 0.0,
            alpha: vec![],
            norm2: vec![],
            degree: 2,
        };
        // x² = (t + 3)² = 9 + 6t + t²
        assert_eq!(b.coefficients(3.0)[1], vec![9.0, 6.0, 1.0]);
        let mut out = [0.0; 2];
        b.evaluate(1.5, &mut out);
        assert_eq!(out, [1.5, 2.25]);
    }
}

//! The profile's parameters (lme4's `prof.scale = "sdcor"`) and their map to
//! and from the likelihood's θ.
//!
//! Per factor and per bar's block of Λ (size s, columns re-expressed as in
//! `fit`: b = T b_c), the relative covariance of the block's random effects on
//! the data scale is
//!
//! ```text
//!   S = Var(b)/σ² = T Λ Λᵀ Tᵀ,     sd_i = σ √S_ii,     cor_ij = S_ij / √(S_ii S_jj)
//! ```
//! The constrained minimisations work with the normalised matrix
//! `S̃ = E S E`, E = diag(1/T_ii) (each column back on the problem's scale, so
//! the numbers are O(1) whatever the units of x and y): with U = E T (unit
//! upper-triangular within the block), `S̃ = U Λ Λᵀ Uᵀ`, and back,
//! `Λ Λᵀ = U⁻¹ S̃ U⁻ᵀ`, Λ its (semi-definite) lower Cholesky factor. The
//! deviance depends on Λ only through Λ Λᵀ (log|ΛᵀZᵀZΛ + I| and the penalised
//! RSS are invariant under Λ → ΛQ, Q orthogonal), so any factor serves.
//!
//! The parameters are listed as lme4 lists them: per factor (the tidy table's
//! order), per block, the lower triangle of the block column by column — a
//! diagonal entry (i, i) is `sd_i`, an off-diagonal (i, j), i > j, is
//! `cor_ij` — then σ, then the fixed effects on the data scale.

use crate::error::Result;
use crate::inference::stored::Stored;
use crate::model::Model;

/// What a profiled parameter is (indices into the stored factors and blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The SD of the block's term `i` (data scale).
    Sd { block: usize, i: usize },
    /// The correlation of the block's terms `i` and `j`, i > j.
    Cor { block: usize, i: usize, j: usize },
    /// The residual SD σ.
    Sigma,
    /// The fixed effect `j` (data scale).
    Fixed { j: usize },
}

/// One profiled parameter, named as lme4 and as the tidy table name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub kind: Kind,
    /// lme4's row name: `sd_(Intercept)|Subject`, `cor_Days.(Intercept)|Subject`, `sigma`, `Days`.
    pub name: String,
    /// The tidy table's group: the factor, `Residual` for σ, None for a fixed effect.
    pub group_var: Option<String>,
    /// The tidy table's term: `sd__(Intercept)`, `cor__(Intercept).Days`, `sd__Observation`, `Days`.
    pub term: String,
    /// The parameter's range (0 for an SD and σ, ±1 for a correlation, ±∞ for a fixed effect).
    pub lower: f64,
    pub upper: f64,
}

/// A bar's block of Λ: where its θ entries are, and its map to the data scale.
#[derive(Debug, Clone)]
pub struct Block {
    pub factor: usize,
    /// size s
    pub s: usize,
    /// offset of the block's s(s+1)/2 entries in the whole θ
    pub theta_off: usize,
    /// T_ii, the data-scale units of the block's columns
    pub tdiag: Vec<f64>,
    /// U = E T, s×s column-major, unit upper-triangular
    pub u: Vec<f64>,
    /// the block's term names
    pub terms: Vec<String>,
}

impl Block {
    pub fn ntheta(&self) -> usize {
        self.s * (self.s + 1) / 2
    }
}

/// The blocks of every factor, in θ order.
pub fn blocks(stored: &Stored, model: &Model) -> Result<Vec<Block>> {
    if model.factors.len() != stored.factors.len() {
        crate::bail!("the model value's factors do not match its statistics");
    }
    let mut out = Vec::new();
    let mut theta_off = 0;
    for (f, fs) in stored.factors.iter().enumerate() {
        let names = &model.factors[f].terms;
        if names.len() != fs.q {
            crate::bail!("the model value's random-effect terms do not match its statistics");
        }
        let mut off = 0;
        for &s in &fs.blocks {
            let t = |a: usize, b: usize| fs.tmat[(off + b) * fs.q + off + a];
            let tdiag: Vec<f64> = (0..s).map(|a| t(a, a)).collect();
            let mut u = vec![0.0; s * s];
            for b in 0..s {
                for a in 0..s {
                    u[b * s + a] = t(a, b) / tdiag[a];
                }
            }
            let terms = names[off..off + s].iter().map(|c| c.name.clone()).collect();
            out.push(Block {
                factor: f,
                s,
                theta_off,
                tdiag,
                u,
                terms,
            });
            theta_off += s * (s + 1) / 2;
            off += s;
        }
    }
    Ok(out)
}

/// The parameters in lme4's order.
pub fn parameters(model: &Model, blocks: &[Block]) -> Vec<Parameter> {
    let mut out = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let group = &model.factors[b.factor].name;
        for j in 0..b.s {
            for i in j..b.s {
                out.push(if i == j {
                    Parameter {
                        kind: Kind::Sd { block: bi, i },
                        name: format!("sd_{}|{group}", b.terms[i]),
                        group_var: Some(group.clone()),
                        term: format!("sd__{}", b.terms[i]),
                        lower: 0.0,
                        upper: f64::INFINITY,
                    }
                } else {
                    Parameter {
                        kind: Kind::Cor { block: bi, i, j },
                        name: format!("cor_{}.{}|{group}", b.terms[i], b.terms[j]),
                        group_var: Some(group.clone()),
                        term: format!("cor__{}.{}", b.terms[j], b.terms[i]),
                        lower: -1.0,
                        upper: 1.0,
                    }
                });
            }
        }
    }
    out.push(Parameter {
        kind: Kind::Sigma,
        name: "sigma".into(),
        group_var: Some("Residual".into()),
        term: "sd__Observation".into(),
        lower: 0.0,
        upper: f64::INFINITY,
    });
    for (j, c) in model.fixed.iter().enumerate() {
        out.push(Parameter {
            kind: Kind::Fixed { j },
            name: c.name.clone(),
            group_var: None,
            term: c.name.clone(),
            lower: f64::NEG_INFINITY,
            upper: f64::INFINITY,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Small dense helpers (s×s, column-major)
// ---------------------------------------------------------------------------

/// A lower triangle listed column by column → the s×s matrix.
pub fn unpack_lower(v: &[f64], s: usize) -> Vec<f64> {
    let mut m = vec![0.0; s * s];
    let mut k = 0;
    for j in 0..s {
        for i in j..s {
            m[j * s + i] = v[k];
            k += 1;
        }
    }
    m
}

/// The s×s matrix's lower triangle, column by column.
pub fn pack_lower(m: &[f64], s: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(s * (s + 1) / 2);
    for j in 0..s {
        for i in j..s {
            v.push(m[j * s + i]);
        }
    }
    v
}

/// A Aᵀ.
pub fn gram(a: &[f64], s: usize) -> Vec<f64> {
    let mut g = vec![0.0; s * s];
    for c in 0..s {
        for r in 0..s {
            g[c * s + r] = (0..s).map(|k| a[k * s + r] * a[k * s + c]).sum();
        }
    }
    g
}

/// A B.
pub fn product(a: &[f64], b: &[f64], s: usize) -> Vec<f64> {
    let mut m = vec![0.0; s * s];
    for c in 0..s {
        for r in 0..s {
            m[c * s + r] = (0..s).map(|k| a[k * s + r] * b[c * s + k]).sum();
        }
    }
    m
}

/// The lower Cholesky factor of a positive semi-definite matrix: a pivot that
/// is zero to rounding gives a zero column (the matrix is singular there).
pub fn semidefinite_cholesky(a: &[f64], s: usize) -> Vec<f64> {
    let scale = (0..s).map(|i| a[i * s + i].abs()).fold(0.0, f64::max);
    let tol = 1e-13 * scale;
    let mut l = vec![0.0; s * s];
    for j in 0..s {
        let d = a[j * s + j] - (0..j).map(|k| l[k * s + j] * l[k * s + j]).sum::<f64>();
        if d.is_nan() || d <= tol {
            continue;
        }
        let d = d.sqrt();
        l[j * s + j] = d;
        for i in j + 1..s {
            let v = a[j * s + i] - (0..j).map(|k| l[k * s + i] * l[k * s + j]).sum::<f64>();
            l[j * s + i] = v / d;
        }
    }
    l
}

/// U⁻¹ B for unit upper-triangular U (back substitution per column).
fn solve_unit_upper(u: &[f64], b: &[f64], s: usize) -> Vec<f64> {
    let mut x = b.to_vec();
    for c in 0..s {
        for r in (0..s).rev() {
            let v = x[c * s + r] - (r + 1..s).map(|k| u[k * s + r] * x[c * s + k]).sum::<f64>();
            x[c * s + r] = v;
        }
    }
    x
}

impl Block {
    /// S̃ = U Λ Λᵀ Uᵀ from the block's θ entries.
    pub fn normalised_cov(&self, theta_block: &[f64]) -> Vec<f64> {
        let ul = product(&self.u, &unpack_lower(theta_block, self.s), self.s);
        gram(&ul, self.s)
    }

    /// The block's θ entries from S̃ = F Fᵀ: Λ = chol(G Gᵀ), G = U⁻¹ F.
    pub fn theta_from_factor(&self, f: &[f64]) -> Vec<f64> {
        let g = solve_unit_upper(&self.u, f, self.s);
        pack_lower(&semidefinite_cholesky(&gram(&g, self.s), self.s), self.s)
    }

    /// The block's SDs and correlations at σ, as lme4 lists them.
    pub fn sdcor(&self, theta_block: &[f64], sigma: f64) -> Vec<f64> {
        let c = self.normalised_cov(theta_block);
        let s = self.s;
        let sd = |i: usize| sigma * self.tdiag[i] * c[i * s + i].max(0.0).sqrt();
        let mut out = Vec::with_capacity(self.ntheta());
        for j in 0..s {
            for i in j..s {
                out.push(if i == j {
                    sd(i)
                } else {
                    let (a, b) = (c[i * s + i].max(0.0).sqrt(), c[j * s + j].max(0.0).sqrt());
                    if a > 0.0 && b > 0.0 {
                        (c[j * s + i] / (a * b)).clamp(-1.0, 1.0)
                    } else {
                        f64::NAN
                    }
                });
            }
        }
        out
    }
}

/// Every variance parameter (sd, cor per block, then σ) at (θ, σ).
pub fn variance_parameters(blocks: &[Block], theta: &[f64], sigma: f64) -> Vec<f64> {
    let mut out: Vec<f64> = blocks
        .iter()
        .flat_map(|b| b.sdcor(&theta[b.theta_off..b.theta_off + b.ntheta()], sigma))
        .collect();
    out.push(sigma);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(t01: f64) -> Block {
        // T = [[1/2, t01], [0, 1/4]]: U = E T = [[1, 2 t01], [0, 1]]
        Block {
            factor: 0,
            s: 2,
            theta_off: 0,
            tdiag: vec![0.5, 0.25],
            u: vec![1.0, 0.0, 2.0 * t01, 1.0],
            terms: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn theta_round_trip_through_the_normalised_covariance() {
        let b = block(-0.3);
        let theta = [0.8, -0.4, 0.5];
        let c = b.normalised_cov(&theta);
        let back = b.theta_from_factor(&semidefinite_cholesky(&c, 2));
        for (x, y) in theta.iter().zip(&back) {
            assert!((x - y).abs() < 1e-12, "{theta:?} {back:?}");
        }
    }

    #[test]
    fn sdcor_is_the_data_scale_covariance() {
        let b = block(0.7);
        let theta = [0.8, -0.4, 0.5];
        let sigma = 3.0;
        // Var(b) = σ² T Λ Λᵀ Tᵀ directly
        let t = [0.5, 0.0, 0.7, 0.25];
        let tl = product(&t, &unpack_lower(&theta, 2), 2);
        let v: Vec<f64> = gram(&tl, 2).iter().map(|x| x * sigma * sigma).collect();
        let got = b.sdcor(&theta, sigma);
        assert!((got[0] - v[0].sqrt()).abs() < 1e-12);
        assert!((got[2] - v[3].sqrt()).abs() < 1e-12);
        assert!((got[1] - v[1] / (v[0] * v[3]).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn singular_factor() {
        let l = semidefinite_cholesky(&[0.0, 0.0, 0.0, 4.0], 2);
        assert_eq!(l, vec![0.0, 0.0, 0.0, 2.0]);
    }
}

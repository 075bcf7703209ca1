//! The statistics a model value keeps of its fit, so that inference can
//! evaluate the likelihood anywhere without the rows: the per-level blocks of
//! the re-expressed columns (`fit`: X centred, Z scaled), the level pairs of
//! crossed and nested factors, [X y]ᵀ[X y], θ̂, and the maps back to the data
//! scale:
//!
//! ```text
//!   β = A β_c + ȳ e₀,  A = I + e₀ aᵀ     (a_j = −x̄_j: the intercept absorbs the centring)
//!   Var(b_l) = σ² T Λ Λᵀ Tᵀ              (T per factor: b = T b_c)
//! ```
//! The byte layout (the model value's statistics section) is in
//! `docs/model-format.md`: per level q² + q·k doubles of each factor, per
//! cell q_a·q_b doubles and two u32, k² doubles.

use crate::bail;
use crate::crossed::{CrossedProblem, Factor, Pair};
use crate::error::Result;
use crate::options::Method;
use crate::reml::Problem;
use crate::theta::ThetaLayout;

use super::likelihood::{Crossed, Likelihood, OneFactor};

#[derive(Debug, Clone, PartialEq)]
pub struct FactorStats {
    pub q: usize,
    pub nlev: usize,
    /// sizes of the bars' blocks of Λ, in order
    pub blocks: Vec<usize>,
    /// b = T b_c, q×q column-major
    pub tmat: Vec<f64>,
    /// per level Z_lᵀZ_l (q×q) and Z_lᵀ[X y] (q×k), column-major
    pub ztz: Vec<f64>,
    pub ztr: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PairStats {
    pub a: usize,
    pub b: usize,
    pub cells: Vec<(u32, u32)>,
    pub blocks: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub n: f64,
    pub p: usize,
    /// the criterion the model was fitted by
    pub method: Method,
    /// in the tidy table's order (most levels first), which is also the order of elimination
    pub factors: Vec<FactorStats>,
    pub pairs: Vec<PairStats>,
    /// [X y]ᵀ[X y], k×k column-major
    pub rtr: Vec<f64>,
    /// θ̂, the factors' parts concatenated
    pub theta: Vec<f64>,
    /// a (length p, a₀ = 0) and ȳ: β = β_c + e₀ (aᵀβ_c + ȳ)
    pub intercept_shift: Vec<f64>,
    pub y_shift: f64,
    /// Σ log wᵢ of the prior weights (0 without): the deviance of the data is
    /// the criterion of the √w-scaled rows minus this (lme4's `ldW`).
    pub log_weights: f64,
}

impl Stored {
    pub fn k(&self) -> usize {
        self.p + 1
    }

    pub fn layouts(&self) -> Vec<ThetaLayout> {
        self.factors
            .iter()
            .map(|f| ThetaLayout::new(&f.blocks))
            .collect()
    }

    /// The likelihood of the stored problem under criterion `method`.
    pub fn likelihood(&self, method: Method) -> Box<dyn Likelihood> {
        let layouts = self.layouts();
        if self.factors.len() == 1 {
            let f = &self.factors[0];
            let problem = Problem {
                n: self.n,
                p: self.p,
                q: f.q,
                groups: f.nlev,
                ztz: f.ztz.clone(),
                ztr: f.ztr.clone(),
                rtr: self.rtr.clone(),
                method,
                shards: None,
            };
            return Box::new(OneFactor::new(problem, layouts.into_iter().next().unwrap()));
        }
        let factors = self
            .factors
            .iter()
            .map(|f| Factor {
                q: f.q,
                nlev: f.nlev,
                ztz: f.ztz.clone(),
                ztr: f.ztr.clone(),
                off: 0,
            })
            .collect();
        let pairs = self
            .pairs
            .iter()
            .map(|p| Pair {
                a: p.a,
                b: p.b,
                cells: p.cells.clone(),
                blocks: p.blocks.clone(),
            })
            .collect();
        Box::new(Crossed::new(
            CrossedProblem::new(self.n, self.p, method, factors, pairs, self.rtr.clone()),
            layouts,
        ))
    }

    /// `likelihood`, taking the statistics instead of copying them.
    pub fn into_likelihood(self, method: Method) -> Box<dyn Likelihood> {
        let layouts = self.layouts();
        let (n, p) = (self.n, self.p);
        if self.factors.len() == 1 {
            let f = self.factors.into_iter().next().unwrap();
            let problem = Problem {
                n,
                p,
                q: f.q,
                groups: f.nlev,
                ztz: f.ztz,
                ztr: f.ztr,
                rtr: self.rtr,
                method,
                shards: None,
            };
            return Box::new(OneFactor::new(problem, layouts.into_iter().next().unwrap()));
        }
        let factors = self
            .factors
            .into_iter()
            .map(|f| Factor {
                q: f.q,
                nlev: f.nlev,
                ztz: f.ztz,
                ztr: f.ztr,
                off: 0,
            })
            .collect();
        let pairs = self
            .pairs
            .into_iter()
            .map(|p| Pair {
                a: p.a,
                b: p.b,
                cells: p.cells,
                blocks: p.blocks,
            })
            .collect();
        Box::new(Crossed::new(
            CrossedProblem::new(n, p, method, factors, pairs, self.rtr),
            layouts,
        ))
    }

    /// β on the data scale from β on the problem's columns.
    pub fn beta_on_data_scale(&self, beta_c: &[f64]) -> Vec<f64> {
        let mut beta = beta_c.to_vec();
        if !beta.is_empty() {
            beta[0] += self
                .intercept_shift
                .iter()
                .zip(beta_c)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + self.y_shift;
        }
        beta
    }

    /// A S Aᵀ: a covariance of β_c on the data scale.
    pub fn vcov_on_data_scale(&self, s: &[f64]) -> Vec<f64> {
        let p = self.p;
        let mut out = s.to_vec();
        if p == 0 {
            return out;
        }
        let a = &self.intercept_shift;
        let sa: Vec<f64> = (0..p)
            .map(|r| (0..p).map(|c| s[c * p + r] * a[c]).sum())
            .collect();
        let asa: f64 = a.iter().zip(&sa).map(|(x, y)| x * y).sum();
        for c in 0..p {
            out[c * p] += sa[c];
            out[c] += sa[c];
        }
        out[0] += asa;
        out
    }

    /// A linear function lᵀβ on the data scale as one of β_c: (Aᵀl)ᵀβ_c + l₀ȳ.
    pub fn contrast_on_problem_scale(&self, l: &[f64]) -> (Vec<f64>, f64) {
        let mut lc = l.to_vec();
        if !l.is_empty() {
            for j in 1..self.p {
                lc[j] += l[0] * self.intercept_shift[j];
            }
        }
        (
            lc,
            if l.is_empty() {
                0.0
            } else {
                l[0] * self.y_shift
            },
        )
    }

    // -----------------------------------------------------------------------
    // Bytes
    // -----------------------------------------------------------------------

    pub fn to_bytes(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.u64(self.n as u64);
        w.u32(self.p as u32);
        w.u8(if self.method == Method::Reml { 0 } else { 1 });
        w.u32(self.factors.len() as u32);
        for f in &self.factors {
            w.u32(f.q as u32);
            w.u64(f.nlev as u64);
            w.u32(f.blocks.len() as u32);
            for &b in &f.blocks {
                w.u32(b as u32);
            }
            w.f64s(&f.tmat);
            w.f64s(&f.ztz);
            w.f64s(&f.ztr);
        }
        w.u32(self.pairs.len() as u32);
        for pr in &self.pairs {
            w.u32(pr.a as u32);
            w.u32(pr.b as u32);
            w.u64(pr.cells.len() as u64);
            for &(a, b) in &pr.cells {
                w.u32(a);
                w.u32(b);
            }
            w.f64s(&pr.blocks);
        }
        w.f64s(&self.rtr);
        w.f64s(&self.theta);
        w.f64s(&self.intercept_shift);
        w.f64s(&[self.y_shift]);
        if self.log_weights != 0.0 {
            // Only with weights: a model value without them reads as before.
            w.f64s(&[self.log_weights]);
        }
    }

    /// Read the section; every size is checked against what it must be.
    pub fn from_bytes(data: &[u8]) -> Result<Stored> {
        let mut r = R { data, pos: 0 };
        let n = r.u64()? as f64;
        let p = r.u32()? as usize;
        let method = match r.u8()? {
            0 => Method::Reml,
            1 => Method::Ml,
            _ => return Err(bad("the method")),
        };
        let k = p + 1;
        let nf = r.u32()? as usize;
        if nf == 0 || nf > 100 {
            return Err(bad("the grouping factors"));
        }
        let mut factors = Vec::with_capacity(nf);
        let mut ntheta = 0;
        for _ in 0..nf {
            let q = r.u32()? as usize;
            let nlev = r.u64()? as usize;
            let nb = r.u32()? as usize;
            if nb > q {
                return Err(bad("a factor's blocks"));
            }
            let blocks = (0..nb)
                .map(|_| r.u32().map(|b| b as usize))
                .collect::<Result<Vec<_>>>()?;
            if blocks.iter().sum::<usize>() != q || blocks.contains(&0) {
                return Err(bad("a factor's blocks"));
            }
            ntheta += blocks.iter().map(|s| s * (s + 1) / 2).sum::<usize>();
            let tmat = r.f64s_of(q * q)?;
            let ztz = r.f64s_of(nlev.checked_mul(q * q).ok_or_else(|| bad("a factor"))?)?;
            let ztr = r.f64s_of(nlev.checked_mul(q * k).ok_or_else(|| bad("a factor"))?)?;
            factors.push(FactorStats {
                q,
                nlev,
                blocks,
                tmat,
                ztz,
                ztr,
            });
        }
        let np = r.u32()? as usize;
        if np != nf * (nf - 1) / 2 {
            return Err(bad("the factor pairs"));
        }
        let mut pairs = Vec::with_capacity(np);
        for _ in 0..np {
            let (a, b) = (r.u32()? as usize, r.u32()? as usize);
            if a >= b || b >= nf {
                return Err(bad("a factor pair"));
            }
            let nc = r.u64()? as usize;
            if nc.saturating_mul(8) > data.len() {
                return Err(bad("a factor pair"));
            }
            let mut cells = Vec::with_capacity(nc);
            for _ in 0..nc {
                let (la, lb) = (r.u32()?, r.u32()?);
                if la as usize >= factors[a].nlev || lb as usize >= factors[b].nlev {
                    return Err(bad("a factor pair's levels"));
                }
                cells.push((la, lb));
            }
            let blocks = r.f64s_of(nc * factors[a].q * factors[b].q)?;
            pairs.push(PairStats {
                a,
                b,
                cells,
                blocks,
            });
        }
        let rtr = r.f64s_of(k * k)?;
        let theta = r.f64s_of(ntheta)?;
        let intercept_shift = r.f64s_of(p)?;
        let y_shift = r.f64s_of(1)?[0];
        let log_weights = if r.pos < data.len() {
            r.f64s_of(1)?[0]
        } else {
            0.0
        };
        if r.pos != data.len() || !log_weights.is_finite() {
            return Err(bad("the end of the section"));
        }
        Ok(Stored {
            n,
            p,
            method,
            factors,
            pairs,
            rtr,
            theta,
            intercept_shift,
            y_shift,
            log_weights,
        })
    }
}

fn bad(what: &str) -> crate::error::LmmError {
    crate::error::LmmError::new(format!(
        "the model value's statistics are corrupt (cannot read {what})"
    ))
}

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

struct R<'a> {
    data: &'a [u8],
    pos: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.data.len() - self.pos < n {
            bail!("the model value's statistics are truncated");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A list of doubles that must have exactly `expected` entries.
    fn f64s_of(&mut self, expected: usize) -> Result<Vec<f64>> {
        let n = self.u64()? as usize;
        if n != expected || n.saturating_mul(8) > self.data.len() - self.pos {
            return Err(bad("a block of statistics"));
        }
        let b = self.take(8 * n)?;
        Ok(b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
}

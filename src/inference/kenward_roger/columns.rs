//! The random-effect columns of several grouping factors and the two
//! operators every other piece is built from, applied to thin matrices
//! (qt rows, a few columns, column-major): K = ZᵀZ, stored as it comes (each
//! level's q×q block and the q_a×q_b blocks of the level pairs that occur),
//! and Λ, block diagonal with factor f's Λ_f repeated over its levels.
//!
//! Factor f's level l owns columns off_f + l·q_f … off_f + (l+1)·q_f − 1,
//! qt = Σ_f nlev_f·q_f.

use crate::crossed::{Factor, Pair};

pub struct Columns<'a> {
    pub factors: &'a [Factor],
    pub pairs: &'a [Pair],
    pub lambdas: &'a [Vec<f64>],
    /// first column of each factor
    pub off: Vec<usize>,
    pub qt: usize,
}

impl<'a> Columns<'a> {
    pub fn new(factors: &'a [Factor], pairs: &'a [Pair], lambdas: &'a [Vec<f64>]) -> Self {
        let mut off = Vec::with_capacity(factors.len());
        let mut qt = 0;
        for f in factors {
            off.push(qt);
            qt += f.nlev * f.q;
        }
        Columns {
            factors,
            pairs,
            lambdas,
            off,
            qt,
        }
    }

    /// First column of factor f's level l.
    pub fn column(&self, f: usize, l: usize) -> usize {
        self.off[f] + l * self.factors[f].q
    }

    /// Zᵀ[X y] (qt × (p+1)) from the per-level blocks.
    pub fn zt_xy(&self, k: usize) -> Vec<f64> {
        let qt = self.qt;
        let mut out = vec![0.0; qt * k];
        for (fi, f) in self.factors.iter().enumerate() {
            let q = f.q;
            for l in 0..f.nlev {
                let o = self.column(fi, l);
                for j in 0..k {
                    for r in 0..q {
                        out[j * qt + o + r] = f.ztr[l * q * k + j * q + r];
                    }
                }
            }
        }
        out
    }

    /// K·V for V with qt rows and `cols` columns.
    pub fn k_times(&self, v: &[f64], cols: usize) -> Vec<f64> {
        let qt = self.qt;
        let mut out = vec![0.0; qt * cols];
        for (fi, f) in self.factors.iter().enumerate() {
            let q = f.q;
            for l in 0..f.nlev {
                let o = self.column(fi, l);
                let kl = &f.ztz[l * q * q..(l + 1) * q * q];
                for j in 0..cols {
                    for c in 0..q {
                        let x = v[j * qt + o + c];
                        for r in 0..q {
                            out[j * qt + o + r] += kl[c * q + r] * x;
                        }
                    }
                }
            }
        }
        for pr in self.pairs {
            let (qa, qb) = (self.factors[pr.a].q, self.factors[pr.b].q);
            for (ci, &(la, lb)) in pr.cells.iter().enumerate() {
                let (oa, ob) = (
                    self.column(pr.a, la as usize),
                    self.column(pr.b, lb as usize),
                );
                let blk = &pr.blocks[ci * qa * qb..(ci + 1) * qa * qb];
                for j in 0..cols {
                    let col = j * qt;
                    for c in 0..qb {
                        for r in 0..qa {
                            let kv = blk[c * qa + r];
                            out[col + oa + r] += kv * v[col + ob + c];
                            out[col + ob + c] += kv * v[col + oa + r];
                        }
                    }
                }
            }
        }
        out
    }

    /// Λ·V (`transposed`: ΛᵀV) for V with qt rows.
    pub fn lambda_times(&self, v: &[f64], cols: usize, transposed: bool) -> Vec<f64> {
        let qt = self.qt;
        let mut out = vec![0.0; qt * cols];
        for (fi, f) in self.factors.iter().enumerate() {
            let (q, lam) = (f.q, &self.lambdas[fi]);
            for l in 0..f.nlev {
                let o = self.column(fi, l);
                for j in 0..cols {
                    let (x, y) = (
                        &v[j * qt + o..j * qt + o + q],
                        &mut out[j * qt + o..j * qt + o + q],
                    );
                    lambda_block(lam, q, x, y, transposed);
                }
            }
        }
        out
    }
}

/// y = Λx (`transposed`: Λᵀx) for one q-vector; Λ q×q lower triangular, column-major.
pub fn lambda_block(lam: &[f64], q: usize, x: &[f64], y: &mut [f64], transposed: bool) {
    for r in 0..q {
        y[r] = if transposed {
            (r..q).map(|t| lam[r * q + t] * x[t]).sum()
        } else {
            (0..=r).map(|t| lam[t * q + r] * x[t]).sum()
        };
    }
}

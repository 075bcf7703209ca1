//! A factor L of G = [Z X]ᵀ[Z X] (G = L Lᵀ, L of full column rank
//! r = rank [Z X]) built from the statistics, with the structure of
//! `crossed`'s elimination: factor 0's levels are independent blocks, the
//! other factors' columns (D) and X form a small dense Schur complement.
//!
//! ```text
//!   L = [ W    0  ]    W = diag_i(W_i),   A_i = Z_{0,i}ᵀZ_{0,i} = W_i W_iᵀ     (W_i: q₀ × r_i)
//!       [ Hᵀ  L_S ]    H_i = W_{i,P}⁻¹ B_i[P_i, :]                          (H_i: r_i × (m+p))
//!                      S = G₂₂ − Σ_i H_iᵀH_i = L_S L_Sᵀ                      (L_S: (m+p) × r_S)
//! ```
//! B_i = Z_{0,i}ᵀ[Z_D X] is level i's row of G₁₂ (its cells and its ztr's X
//! columns), P_i the pivots of A_i's pivoted Cholesky and W_{i,P} W_i's pivot
//! rows (lower triangular, invertible). See `simulate` for why LLᵀ = G.
//! Coordinates: "block" vectors have factor 0's nlev₀·q₀ entries
//! (level-major), "dense" ones m + p (the factors after the first in order,
//! level-major within each, then X); latent vectors have Σ r_i entries
//! (level by level) and r_S entries.

use super::pivoted::{dot, PivotedCholesky};
use crate::crossed::{Factor, Pair};

pub struct GramFactor {
    p: usize,
    q0: usize,
    nlev0: usize,
    /// offset in the dense coordinates of each factor's columns (0 for factor 0, unused)
    pub offsets: Vec<usize>,
    /// number of D columns (the other factors')
    pub m: usize,
    /// level i's latent coordinates are rank_ptr[i]..rank_ptr[i+1] (r_i of them)
    rank_ptr: Vec<usize>,
    /// W_i in a q₀×q₀ slot per level (its first r_i columns)
    w: Vec<f64>,
    /// level i's dense columns: support[support_ptr[i]..support_ptr[i+1]]
    support_ptr: Vec<usize>,
    support: Vec<u32>,
    /// H_i restricted to its support (r_i × |support_i|, column-major) at h_ptr[i]
    h_ptr: Vec<usize>,
    h: Vec<f64>,
    dense: PivotedCholesky,
}

impl GramFactor {
    pub fn new(
        p: usize,
        factors: &[Factor],
        pairs: &[Pair],
        rtr: &[f64],
    ) -> Result<GramFactor, String> {
        check_shapes(p, factors, pairs, rtr)?;
        let (offsets, m) = dense_offsets(factors);
        let f0 = &factors[0];
        let (q0, nlev0, k) = (f0.q, f0.nlev, p + 1);
        let cells = first_factor_cells(factors, pairs, &offsets);
        let mut g = GramFactor {
            p,
            q0,
            nlev0,
            offsets,
            m,
            rank_ptr: vec![0],
            w: vec![0.0; nlev0 * q0 * q0],
            support_ptr: vec![0],
            support: Vec::new(),
            h_ptr: vec![0],
            h: Vec::new(),
            dense: PivotedCholesky {
                n: 0,
                pivots: Vec::new(),
                l: Vec::new(),
            },
        };
        for (i, level_cells) in cells.iter().enumerate() {
            let a = &f0.ztz[i * q0 * q0..(i + 1) * q0 * q0];
            let diagonal: Vec<f64> = (0..q0).map(|t| a[t * q0 + t]).collect();
            let chol = PivotedCholesky::new(a, q0, &diagonal);
            g.w[i * q0 * q0..i * q0 * q0 + chol.l.len()].copy_from_slice(&chol.l);
            g.rank_ptr.push(g.rank_ptr[i] + chol.rank());
            // B_i column by column: the cells' blocks, then the X columns of ztr.
            for &(pi, ci, column) in level_cells {
                let qb = factors[pairs[pi].b].q;
                let block = &pairs[pi].blocks[ci * q0 * qb..(ci + 1) * q0 * qb];
                for (c, b) in block.chunks_exact(q0).enumerate() {
                    g.support.push((column + c) as u32);
                    g.h.extend(chol.solve_pivot_rows(b));
                }
            }
            let ztx = &f0.ztr[i * q0 * k..i * q0 * k + q0 * p];
            for (j, b) in ztx.chunks_exact(q0).enumerate() {
                g.support.push((m + j) as u32);
                g.h.extend(chol.solve_pivot_rows(b));
            }
            g.support_ptr.push(g.support.len());
            g.h_ptr.push(g.h.len());
        }
        let mut s = dense_gram(p, factors, pairs, rtr, &g.offsets, m);
        let dim = m + p;
        let reference: Vec<f64> = (0..dim).map(|t| s[t * dim + t]).collect();
        g.subtract_projection(&mut s);
        g.dense = PivotedCholesky::new(&s, dim, &reference);
        Ok(g)
    }

    /// r = Σ_i r_i + r_S = rank [Z X].
    pub fn rank(&self) -> usize {
        self.block_rank() + self.dense.rank()
    }

    /// Σ_i r_i, the length of the first latent vector.
    pub fn block_rank(&self) -> usize {
        self.rank_ptr[self.nlev0]
    }

    pub fn dense_rank(&self) -> usize {
        self.dense.rank()
    }

    /// (W_i, H_i) of level i: W_i as its r_i columns (q₀ values each), H_i
    /// as its support's columns (r_i values each), with the support.
    fn level(&self, i: usize) -> (&[f64], &[f64], &[u32]) {
        let (q0, r) = (self.q0, self.rank_ptr[i + 1] - self.rank_ptr[i]);
        let w = &self.w[i * q0 * q0..i * q0 * q0 + q0 * r];
        let h = &self.h[self.h_ptr[i]..self.h_ptr[i + 1]];
        (
            w,
            h,
            &self.support[self.support_ptr[i]..self.support_ptr[i + 1]],
        )
    }

    /// S = G₂₂ − Σ_i H_iᵀH_i, in place (both triangles).
    fn subtract_projection(&self, s: &mut [f64]) {
        let dim = self.m + self.p;
        for i in 0..self.nlev0 {
            let r = self.rank_ptr[i + 1] - self.rank_ptr[i];
            let (_, h, support) = self.level(i);
            if r == 0 {
                continue;
            }
            for (ha, &ca) in h.chunks_exact(r).zip(support) {
                for (hb, &cb) in h.chunks_exact(r).zip(support) {
                    s[cb as usize * dim + ca as usize] -= dot(ha, hb);
                }
            }
        }
    }

    /// L x = (W x₁, Hᵀx₁ + L_S x₂): a block vector and a dense one.
    pub fn times(&self, x1: &[f64], x2: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let q0 = self.q0;
        let mut y1 = vec![0.0; self.nlev0 * q0];
        let mut y2 = vec![0.0; self.m + self.p];
        for i in 0..self.nlev0 {
            let xi = &x1[self.rank_ptr[i]..self.rank_ptr[i + 1]];
            if xi.is_empty() {
                continue;
            }
            let (w, h, support) = self.level(i);
            let yi = &mut y1[i * q0..(i + 1) * q0];
            for (wc, &xc) in w.chunks_exact(q0).zip(xi) {
                for (y, &wt) in yi.iter_mut().zip(wc) {
                    *y += wt * xc;
                }
            }
            for (hg, &col) in h.chunks_exact(xi.len()).zip(support) {
                y2[col as usize] += dot(hg, xi);
            }
        }
        self.dense.add_times(x2, &mut y2);
        (y1, y2)
    }

    /// Lᵀ v = (Wᵀv₁ + H v₂, L_Sᵀv₂): the two latent vectors.
    pub fn transpose_times(&self, v1: &[f64], v2: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let q0 = self.q0;
        let mut t1 = vec![0.0; self.block_rank()];
        for i in 0..self.nlev0 {
            let ti = &mut t1[self.rank_ptr[i]..self.rank_ptr[i + 1]];
            if ti.is_empty() {
                continue;
            }
            let (w, h, support) = self.level(i);
            let vi = &v1[i * q0..(i + 1) * q0];
            for (t, wc) in ti.iter_mut().zip(w.chunks_exact(q0)) {
                *t = dot(wc, vi);
            }
            let r = ti.len();
            for (hg, &col) in h.chunks_exact(r).zip(support) {
                let vc = v2[col as usize];
                for (t, &hv) in ti.iter_mut().zip(hg) {
                    *t += hv * vc;
                }
            }
        }
        (t1, self.dense.transpose_times(v2))
    }
}

/// Each factor's first column in the dense coordinates (factors after the
/// first, in order), and their total m.
fn dense_offsets(factors: &[Factor]) -> (Vec<usize>, usize) {
    let mut offsets = vec![0; factors.len()];
    let mut m = 0;
    for (fi, f) in factors.iter().enumerate().skip(1) {
        offsets[fi] = m;
        m += f.nlev * f.q;
    }
    (offsets, m)
}

/// Per level of factor 0: its cells with the other factors, as (pair, cell,
/// the cell's first dense column), in increasing column order.
fn first_factor_cells(
    factors: &[Factor],
    pairs: &[Pair],
    offsets: &[usize],
) -> Vec<Vec<(usize, usize, usize)>> {
    let mut cells = vec![Vec::new(); factors[0].nlev];
    for (pi, pair) in pairs.iter().enumerate().filter(|(_, pr)| pr.a == 0) {
        let qb = factors[pair.b].q;
        for (ci, &(la, lb)) in pair.cells.iter().enumerate() {
            cells[la as usize].push((pi, ci, offsets[pair.b] + lb as usize * qb));
        }
    }
    for level in cells.iter_mut() {
        level.sort_by_key(|&(_, _, column)| column);
    }
    cells
}

/// G₂₂ = [Z_D X]ᵀ[Z_D X], dense (m+p)², both triangles: the other factors'
/// own blocks, their cells with each other, their ZᵀX, and XᵀX.
fn dense_gram(
    p: usize,
    factors: &[Factor],
    pairs: &[Pair],
    rtr: &[f64],
    offsets: &[usize],
    m: usize,
) -> Vec<f64> {
    let (dim, k) = (m + p, p + 1);
    let mut g = vec![0.0; dim * dim];
    let mut put = |r: usize, c: usize, v: f64| {
        g[c * dim + r] = v;
        g[r * dim + c] = v;
    };
    for (fi, f) in factors.iter().enumerate().skip(1) {
        let q = f.q;
        for l in 0..f.nlev {
            let o = offsets[fi] + l * q;
            let a = &f.ztz[l * q * q..(l + 1) * q * q];
            let b = &f.ztr[l * q * k..(l + 1) * q * k];
            for c in 0..q {
                for r in 0..q {
                    put(o + r, o + c, a[c * q + r]);
                }
            }
            for j in 0..p {
                for r in 0..q {
                    put(o + r, m + j, b[j * q + r]);
                }
            }
        }
    }
    for pair in pairs.iter().filter(|pr| pr.a > 0) {
        let (qa, qb) = (factors[pair.a].q, factors[pair.b].q);
        for (ci, &(la, lb)) in pair.cells.iter().enumerate() {
            let (oa, ob) = (
                offsets[pair.a] + la as usize * qa,
                offsets[pair.b] + lb as usize * qb,
            );
            let block = &pair.blocks[ci * qa * qb..(ci + 1) * qa * qb];
            for c in 0..qb {
                for r in 0..qa {
                    put(oa + r, ob + c, block[c * qa + r]);
                }
            }
        }
    }
    for c in 0..p {
        for r in 0..p {
            put(m + r, m + c, rtr[c * k + r]);
        }
    }
    g
}

fn check_shapes(p: usize, factors: &[Factor], pairs: &[Pair], rtr: &[f64]) -> Result<(), String> {
    let k = p + 1;
    if factors.is_empty() {
        return Err("bootstrap: the model has no grouping factor".into());
    }
    if rtr.len() != k * k {
        return Err(format!(
            "bootstrap: [X y]ᵀ[X y] has {} entries, expected {}",
            rtr.len(),
            k * k
        ));
    }
    for (fi, f) in factors.iter().enumerate() {
        if f.q == 0 || f.ztz.len() != f.nlev * f.q * f.q || f.ztr.len() != f.nlev * f.q * k {
            return Err(format!(
                "bootstrap: factor {fi}'s blocks do not match its {} levels of {} columns",
                f.nlev, f.q
            ));
        }
    }
    for (pi, pair) in pairs.iter().enumerate() {
        if !(pair.a < pair.b && pair.b < factors.len()) {
            return Err(format!(
                "bootstrap: pair {pi} joins factors {} and {}",
                pair.a, pair.b
            ));
        }
        let (fa, fb) = (&factors[pair.a], &factors[pair.b]);
        let in_range = pair
            .cells
            .iter()
            .all(|&(la, lb)| (la as usize) < fa.nlev && (lb as usize) < fb.nlev);
        if !in_range || pair.blocks.len() != pair.cells.len() * fa.q * fb.q {
            return Err(format!(
                "bootstrap: pair {pi}'s cells do not match its factors"
            ));
        }
    }
    Ok(())
}

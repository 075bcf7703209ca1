//! The profiled deviance with several grouping factors (crossed or nested).
//!
//! Factors are ordered by decreasing number of levels (as MixedModels.jl
//! does). The first one's block of Λᵀ(ZᵀZ)Λ + I is block diagonal, one q₀×q₀
//! block per level, and is eliminated level by level; the remaining factors'
//! columns D (m of them) and the columns of [X y] form a dense Schur complement
//!
//! ```text
//!   S = [Λ_DᵀA_DDΛ_D + I   Λ_DᵀB_D]  −  Σ_i C_iᵀC_i,    C_i = L_i⁻¹ Λ₀ᵀ [A_0D(i) Λ_D | B_0(i)]
//!       [B_DᵀΛ_D           RᵀR    ]
//! ```
//! where L_i L_iᵀ = Λ₀ᵀA_00(i)Λ₀ + I, A = ZᵀZ blocks (per level, and per level
//! pair that occurs: the "cells"), B = Zᵀ[X y]. C_i is sparse: only the
//! levels of the other factors that occur with level i. S = L_S L_Sᵀ (dense
//! Cholesky); its D part is the fill-in the other factors' levels create
//! among themselves, its X and y rows give R_X and ρ exactly as in `reml`.
//! Memory: (m + p + 1)² doubles for S, and as much again while the gradient
//! inverts it (`deviance_and_gradient`), whatever the number of rows.

use crate::dense::{dense_cholesky, invert_leading, sandwich, solve_lower, solve_lower_transposed};
use crate::options::Method;
use crate::reml::cholesky_lower;

/// One grouping factor's per-level blocks (on the re-expressed columns).
#[derive(Clone)]
pub struct Factor {
    pub q: usize,
    pub nlev: usize,
    /// per level: Z_lᵀZ_l (q×q) and Z_lᵀ[X y] (q×k), column-major
    pub ztz: Vec<f64>,
    pub ztr: Vec<f64>,
    /// offset of this factor's columns in D (factors after the first)
    pub off: usize,
}

/// Z_aᵀZ_b blocks (q_a × q_b, column-major) at the level pairs that occur.
#[derive(Clone)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub cells: Vec<(u32, u32)>,
    pub blocks: Vec<f64>,
}

pub struct CrossedProblem {
    pub n: f64,
    pub p: usize,
    pub method: Method,
    /// factors in elimination order (most levels first)
    pub factors: Vec<Factor>,
    pub pairs: Vec<Pair>,
    pub rtr: Vec<f64>,
    /// per level of the first factor: (pair index, cell index) of its cells,
    /// in increasing order of their columns in S
    adjacency: Vec<Vec<(usize, usize)>>,
    /// C_i's support, CSR over the first factor's levels: S columns, ascending
    /// (the other factors' levels that occur with level i, then X and y)
    support_ptr: Vec<usize>,
    support: Vec<u32>,
    /// the same entries by column of S (CSC): for column j, the entries g
    /// (indices into `support`) with support[g] = j, and the end of g's level
    by_column_ptr: Vec<usize>,
    by_column: Vec<(u32, u32)>,
    /// number of D columns
    pub m: usize,
    /// S's storage, kept between evaluations: at 5,000 columns it is 200 MB,
    /// and fresh pages for every evaluation cost more than refilling them.
    buffer: std::cell::RefCell<Vec<f64>>,
}

pub struct CrossedSolution {
    pub deviance: f64,
    pub beta: Vec<f64>,
    pub sigma2: f64,
    pub vcov: Vec<f64>,
    /// per factor: nlev × q conditional modes, nlev × q×q conditional covariances
    pub blups: Vec<Vec<f64>>,
    pub cond_cov: Vec<Vec<f64>>,
}

struct Eval {
    deviance: f64,
    /// log|L|² (all random effects) and log|R_X|², apart.
    logdet_l: f64,
    logdet_rx: f64,
    /// The deviance's log-determinant terms (the rest is its term in ρ²).
    logdets: f64,
    /// lower Cholesky factor of S, (m+k)×(m+k) column-major
    ls: Vec<f64>,
    pwrss: f64,
    /// C_i on every level's support (q₀ values per entry) and the L_i
    /// (q₀×q₀ each): what the gradient and the modes of the first factor need
    c: Vec<f64>,
    level_chol: Vec<f64>,
}

impl CrossedProblem {
    pub fn new(
        n: f64,
        p: usize,
        method: Method,
        mut factors: Vec<Factor>,
        pairs: Vec<Pair>,
        rtr: Vec<f64>,
    ) -> Self {
        let mut m = 0;
        for f in factors.iter_mut().skip(1) {
            f.off = m;
            m += f.nlev * f.q;
        }
        let k = p + 1;
        let column_of = |pi: usize, ci: usize| {
            let pr: &Pair = &pairs[pi];
            let fb = &factors[pr.b];
            fb.off + pr.cells[ci].1 as usize * fb.q
        };
        let mut adjacency = vec![Vec::new(); factors[0].nlev];
        for (pi, pr) in pairs.iter().enumerate() {
            if pr.a == 0 {
                for (ci, &(la, _)) in pr.cells.iter().enumerate() {
                    adjacency[la as usize].push((pi, ci));
                }
            }
        }
        let mut support_ptr = Vec::with_capacity(factors[0].nlev + 1);
        let mut support = Vec::new();
        support_ptr.push(0);
        for adj in adjacency.iter_mut() {
            adj.sort_by_key(|&(pi, ci)| column_of(pi, ci));
            for &(pi, ci) in adj.iter() {
                let o = column_of(pi, ci);
                support.extend((o..o + factors[pairs[pi].b].q).map(|c| c as u32));
            }
            support.extend((m..m + k).map(|c| c as u32));
            support_ptr.push(support.len());
        }
        let dim = m + k;
        let mut counts = vec![0usize; dim + 1];
        for &c in &support {
            counts[c as usize + 1] += 1;
        }
        for j in 0..dim {
            counts[j + 1] += counts[j];
        }
        let by_column_ptr = counts.clone();
        let mut by_column = vec![(0u32, 0u32); support.len()];
        for i in 0..factors[0].nlev {
            for g in support_ptr[i]..support_ptr[i + 1] {
                let c = support[g] as usize;
                by_column[counts[c]] = (g as u32, support_ptr[i + 1] as u32);
                counts[c] += 1;
            }
        }
        CrossedProblem {
            n,
            p,
            method,
            factors,
            pairs,
            rtr,
            adjacency,
            support_ptr,
            support,
            by_column_ptr,
            by_column,
            m,
            buffer: Default::default(),
        }
    }

    fn k(&self) -> usize {
        self.p + 1
    }

    /// The divisor of ρ² in σ̂², and the weight of log ρ² in the deviance:
    /// n − p for REML, n for ML.
    fn residual_dof(&self) -> f64 {
        match self.method {
            Method::Ml => self.n,
            Method::Reml => self.n - self.p as f64,
        }
    }

    /// Level i of the first factor: L_i (q₀×q₀ lower) with
    /// L_i L_iᵀ = Λ₀ᵀA_00(i)Λ₀ + I, and C_i = L_i⁻¹Λ₀ᵀ[A_0D(i)Λ_D | B_0(i)] on
    /// its support (`support[support_ptr[i]..support_ptr[i+1]]`), written to
    /// `c` column by column (q₀ values each). None if not positive definite.
    fn first_factor_level(
        &self,
        i: usize,
        lambdas: &[Vec<f64>],
        c: &mut [f64],
    ) -> Option<Vec<f64>> {
        let k = self.k();
        let f0 = &self.factors[0];
        let q0 = f0.q;
        let lam0 = &lambdas[0];
        let a = &f0.ztz[i * q0 * q0..(i + 1) * q0 * q0];
        if q0 == 1 {
            // intercept-only first factor: the common case, kept cheap
            let l = (lam0[0] * a[0] * lam0[0] + 1.0).sqrt();
            let scale = lam0[0] / l;
            let mut t = 0;
            for &(pi, ci) in &self.adjacency[i] {
                let pr = &self.pairs[pi];
                let qb = self.factors[pr.b].q;
                let lb = &lambdas[pr.b];
                let blk = &pr.blocks[ci * qb..(ci + 1) * qb];
                for j in 0..qb {
                    // (A Λ_b)[0, j] = Σ_{t ≥ j} A[0, t] Λ_b[t, j]
                    c[t] = scale * (j..qb).map(|r| blk[r] * lb[j * qb + r]).sum::<f64>();
                    t += 1;
                }
            }
            let b = &f0.ztr[i * k..(i + 1) * k];
            for j in 0..k {
                c[t + j] = scale * b[j];
            }
            return Some(vec![l]);
        }
        let mut l = ltal(lam0, a, lam0, q0, q0);
        for r in 0..q0 {
            l[r * q0 + r] += 1.0;
        }
        if !cholesky_lower(&mut l, q0) {
            return None;
        }
        let mut t = 0;
        for &(pi, ci) in &self.adjacency[i] {
            let pr = &self.pairs[pi];
            let qb = self.factors[pr.b].q;
            let blk = &pr.blocks[ci * q0 * qb..(ci + 1) * q0 * qb];
            let v = ltal(lam0, blk, &lambdas[pr.b], q0, qb);
            c[t..t + q0 * qb].copy_from_slice(&v);
            t += q0 * qb;
        }
        let b = &f0.ztr[i * q0 * k..(i + 1) * q0 * k];
        for j in 0..k {
            for r in 0..q0 {
                c[t + r] = (r..q0).map(|u| lam0[r * q0 + u] * b[j * q0 + u]).sum();
            }
            t += q0;
        }
        for col in c.chunks_exact_mut(q0) {
            solve_lower(&l, q0, col);
        }
        Some(l)
    }

    /// The profiled deviance at Λ (one Λ_f per factor, elimination order),
    /// with L_S, ρ², the C_i and the L_i that the gradient and the solution reuse.
    fn evaluate(&self, lambdas: &[Vec<f64>]) -> Option<Eval> {
        crate::cancel::checkpoint();
        let (m, k) = (self.m, self.k());
        let dim = m + k;
        let mut s = std::mem::take(&mut *self.buffer.borrow_mut());
        s.clear();
        s.resize(dim * dim, 0.0);
        // Dense factors' own blocks and their B rows.
        for (fi, f) in self.factors.iter().enumerate().skip(1) {
            let (q, lam) = (f.q, &lambdas[fi]);
            for l in 0..f.nlev {
                let a = &f.ztz[l * q * q..(l + 1) * q * q];
                let blk = ltal(lam, a, lam, q, q);
                let o = f.off + l * q;
                for c in 0..q {
                    for r in 0..q {
                        s[(o + c) * dim + o + r] = blk[c * q + r] + if r == c { 1.0 } else { 0.0 };
                    }
                }
                let b = &f.ztr[l * q * k..(l + 1) * q * k];
                for j in 0..k {
                    for r in 0..q {
                        let v: f64 = (r..q).map(|t| lam[r * q + t] * b[j * q + t]).sum();
                        s[(m + j) * dim + o + r] = v;
                        s[(o + r) * dim + m + j] = v;
                    }
                }
            }
        }
        // Cells between two dense factors.
        for pr in self.pairs.iter().filter(|p| p.a > 0) {
            let (fa, fb) = (&self.factors[pr.a], &self.factors[pr.b]);
            let (qa, qb) = (fa.q, fb.q);
            for (ci, &(la, lb)) in pr.cells.iter().enumerate() {
                let a = &pr.blocks[ci * qa * qb..(ci + 1) * qa * qb];
                let blk = ltal(&lambdas[pr.a], a, &lambdas[pr.b], qa, qb);
                let (oa, ob) = (fa.off + la as usize * qa, fb.off + lb as usize * qb);
                for c in 0..qb {
                    for r in 0..qa {
                        s[(ob + c) * dim + oa + r] += blk[c * qa + r];
                        s[(oa + r) * dim + ob + c] += blk[c * qa + r];
                    }
                }
            }
        }
        for a in 0..k {
            for b in 0..k {
                s[(m + b) * dim + m + a] = self.rtr[b * k + a];
            }
        }
        // Eliminate the first factor: every level's C_i, then S −= Σ_i C_iᵀC_i
        // column by column of S, so that the updates of one column land in a
        // contiguous, cache-resident stretch of memory.
        let q0 = self.factors[0].q;
        let nlev0 = self.factors[0].nlev;
        let mut c = vec![0.0; self.support.len() * q0];
        let mut level_chol = vec![0.0; nlev0 * q0 * q0];
        let mut logdet = 0.0;
        for i in 0..nlev0 {
            let (a, b) = (self.support_ptr[i], self.support_ptr[i + 1]);
            let l = self.first_factor_level(i, lambdas, &mut c[a * q0..b * q0])?;
            for r in 0..q0 {
                logdet += 2.0 * l[r * q0 + r].ln();
            }
            level_chol[i * q0 * q0..(i + 1) * q0 * q0].copy_from_slice(&l);
        }
        self.subtract_gram(&mut s, &c);
        if !dense_cholesky(&mut s, dim) {
            return None;
        }
        for j in 0..m {
            logdet += 2.0 * s[j * dim + j].ln();
        }
        let p = self.p;
        let mut logdet_rx = 0.0;
        for j in m..m + p {
            logdet_rx += 2.0 * s[j * dim + j].ln();
        }
        let rho = s[(m + p) * dim + m + p];
        let pwrss = rho * rho;
        let two_pi = 2.0 * std::f64::consts::PI;
        let dof = self.residual_dof();
        let reml_term = if self.method == Method::Reml {
            logdet_rx
        } else {
            0.0
        };
        let deviance = logdet + reml_term + dof * (1.0 + (two_pi * pwrss / dof).ln());
        deviance.is_finite().then_some(Eval {
            deviance,
            logdet_l: logdet,
            logdet_rx,
            logdets: logdet + reml_term,
            ls: s,
            pwrss,
            c,
            level_chol,
        })
    }

    /// S[r, j] −= Σ_i C_i[:, j]ᵀ C_i[:, r] for r ≥ j (the lower triangle), one
    /// column j of S per task: the entries of column j come from `by_column`,
    /// those of rows r ≥ j from the rest of each level's ascending support.
    fn subtract_gram(&self, s: &mut [f64], c: &[f64]) {
        use rayon::prelude::*;
        let dim = self.m + self.k();
        let q0 = self.factors[0].q;
        let (support, by_column, ptr) = (
            &self.support[..],
            &self.by_column[..],
            &self.by_column_ptr[..],
        );
        s.par_chunks_mut(dim)
            .enumerate()
            .with_min_len(16)
            .for_each(|(j, col)| {
                let entries = &by_column[ptr[j]..ptr[j + 1]];
                if q0 == 1 {
                    for &(g, end) in entries {
                        let (g, end) = (g as usize, end as usize);
                        let cj = c[g];
                        for t in g..end {
                            col[support[t] as usize] -= cj * c[t];
                        }
                    }
                } else {
                    for &(g, end) in entries {
                        let (g, end) = (g as usize, end as usize);
                        let cj = &c[g * q0..(g + 1) * q0];
                        for t in g..end {
                            let v: f64 = cj
                                .iter()
                                .zip(&c[t * q0..(t + 1) * q0])
                                .map(|(a, b)| a * b)
                                .sum();
                            col[support[t] as usize] -= v;
                        }
                    }
                }
            });
    }

    /// x = [u_D; β]: the spherical modes of the dense factors and β̂, from
    /// L_Sᵀ x = (the y row of L_S) (back substitution).
    fn dense_modes(&self, ls: &[f64]) -> Vec<f64> {
        let dim = self.m + self.k();
        let t = self.m + self.p;
        let mut x = vec![0.0; t];
        for j in (0..t).rev() {
            let mut v = ls[j * dim + t];
            for r in j + 1..t {
                v -= ls[j * dim + r] * x[r];
            }
            x[j] = v / ls[j * dim + j];
        }
        x
    }

    /// The dense factors' modes at a fixed β (`x` as `dense_modes`, its X part β):
    /// L_DDᵀ x_D = l_yD − L_XDᵀ β, the minimiser over x_D with β held.
    fn dense_modes_at(&self, ls: &[f64], beta: &[f64]) -> Vec<f64> {
        let dim = self.m + self.k();
        let t = self.m + self.p;
        let mut x = vec![0.0; t];
        x[self.m..].copy_from_slice(beta);
        for j in (0..self.m).rev() {
            let mut v = ls[j * dim + t];
            for r in j + 1..t {
                v -= ls[j * dim + r] * x[r];
            }
            x[j] = v / ls[j * dim + j];
        }
        x
    }

    /// The first factor's spherical modes: L_iᵀ u_i = c_{i,y} − C_{i,[D X]} x.
    fn first_factor_modes(&self, e: &Eval, x: &[f64]) -> Vec<f64> {
        let q0 = self.factors[0].q;
        let nlev0 = self.factors[0].nlev;
        let t_y = (self.m + self.p) as u32;
        let mut u = vec![0.0; nlev0 * q0];
        for i in 0..nlev0 {
            let ui = &mut u[i * q0..(i + 1) * q0];
            for g in self.support_ptr[i]..self.support_ptr[i + 1] {
                let col = self.support[g];
                let cg = &e.c[g * q0..(g + 1) * q0];
                let w = if col == t_y { -1.0 } else { x[col as usize] };
                for r in 0..q0 {
                    ui[r] -= cg[r] * w;
                }
            }
            solve_lower_transposed(&e.level_chol[i * q0 * q0..(i + 1) * q0 * q0], q0, ui);
        }
        u
    }

    /// The profiled deviance and its gradient in θ. `positions[f]` lists the
    /// (row, column) in Λ_f of each of factor f's θ entries (factors in
    /// elimination order, θ in that order). The entries of a singular Λ_f of
    /// two or more terms are NaN: the formula below divides by Λ.
    ///
    /// With Ω the cross-product matrix of [ZΛ X] plus I on the Z block,
    /// ∂Ω/∂θ_j = ĖᵀGT + TᵀGĖ (T = diag(Λ, I), Ė = diag(E_j, 0), G = [Z X]ᵀ[Z X]),
    /// and TᵀGĖ = (Ω[:, Z] − [I; 0]) Λ⁻¹E_j, so that
    ///
    /// ```text
    ///   ∂ log|Ω| = 2 tr(Λ⁻¹E_j) − 2 tr(P Λ⁻¹E_j),    P = (Ω⁻¹)_ZZ
    ///   ∂ ρ²     = −2 uᵀ Λ⁻¹E_j u                     (envelope; Zᵀr = Λ⁻ᵀu)
    /// ```
    /// Ω covers Z and X for REML (log|L|² + log|R_X|²) and Z alone for ML.
    /// Only the diagonal blocks of P are needed, summed per factor: for the
    /// dense factors they are blocks of S⁻¹; for level i of the first factor
    /// P_ii = L_i⁻ᵀ(I + C_i S⁻¹ C_iᵀ)L_i⁻¹, its S⁻¹ entries on C_i's support.
    pub fn deviance_and_gradient(
        &self,
        lambdas: &[Vec<f64>],
        positions: &[Vec<(usize, usize)>],
    ) -> Option<(f64, Vec<f64>)> {
        let g = self.gradients(lambdas, positions, &|pt| pt.beta.clone())?;
        let c = self.residual_dof();
        let grad = g
            .logdets
            .iter()
            .zip(&g.pwrss)
            .map(|(a, b)| a + c * b / g.point.pwrss)
            .collect();
        Some((g.point.deviance, grad))
    }

    /// The point and the gradients of its two parts (`inference::likelihood::Gradients`):
    /// ∂ of the log-determinants as above, and ∂ρ²(θ, β) = −2 u_βᵀ Λ⁻¹E_j u_β at the
    /// fixed β that `beta` picks, u_β the modes given that β (the same
    /// envelope argument: ρ²(θ, β) is a minimum over u alone).
    pub fn gradients(
        &self,
        lambdas: &[Vec<f64>],
        positions: &[Vec<(usize, usize)>],
        beta: &dyn Fn(&crate::inference::likelihood::Point) -> Vec<f64>,
    ) -> Option<crate::inference::likelihood::Gradients> {
        use rayon::prelude::*;
        // A factor whose Λ_f is singular: with one term its variance is on the
        // bound θ_f = 0, where the deviance is even in θ_f and the derivative
        // is exactly 0; a larger singular block gets NaN (the caller differences
        // those entries).
        let mut inv_lambdas = Vec::with_capacity(lambdas.len());
        let mut unknown = vec![false; lambdas.len()];
        for (fi, (lam, f)) in lambdas.iter().zip(&self.factors).enumerate() {
            let singular = (0..f.q).any(|r| lam[r * f.q + r].abs() < 1e-10);
            unknown[fi] = singular && f.q > 1;
            inv_lambdas.push((!singular).then(|| lower_inverse(lam, f.q)));
        }
        let mut e = self.evaluate(lambdas)?;
        let (m, p, k) = (self.m, self.p, self.k());
        let dim = m + k;
        let modes = self.dense_modes(&e.ls);
        let point = crate::inference::likelihood::Point {
            deviance: e.deviance,
            logdet_l: e.logdet_l,
            logdet_rx: e.logdet_rx,
            pwrss: e.pwrss,
            beta: modes[m..].to_vec(),
            xtvx_inv: self.beta_covariance(&e.ls, dim, 1.0),
        };
        let chosen = beta(&point);
        let x = if chosen == point.beta {
            modes
        } else {
            self.dense_modes_at(&e.ls, &chosen)
        };
        let u0 = self.first_factor_modes(&e, &x);
        let nsub = match self.method {
            Method::Ml => m,
            Method::Reml => m + p,
        };
        // S_sub⁻¹ into S's own storage: L_S is not needed any more.
        invert_leading(&mut e.ls, dim, nsub);
        let sinv = &e.ls;
        // Per factor: P_f = Σ_l P_ll and U_f = Σ_l u_l u_lᵀ (q_f×q_f).
        let mut pf: Vec<Vec<f64>> = self.factors.iter().map(|f| vec![0.0; f.q * f.q]).collect();
        let mut uf: Vec<Vec<f64>> = pf.clone();
        for (fi, f) in self.factors.iter().enumerate().skip(1) {
            let q = f.q;
            for l in 0..f.nlev {
                let o = f.off + l * q;
                for a in 0..q {
                    for b in 0..q {
                        let (r, c) = (o + a.max(b), o + a.min(b));
                        pf[fi][b * q + a] += sinv[c * dim + r];
                        uf[fi][b * q + a] += x[o + a] * x[o + b];
                    }
                }
            }
        }
        // First factor: G_i = L_i⁻ᵀ C_i column by column, then
        // Σ_i G_i S⁻¹ G_iᵀ read column by column of S⁻¹ (lower triangle).
        let f0 = &self.factors[0];
        let q0 = f0.q;
        let mut gmat = e.c.clone();
        for i in 0..f0.nlev {
            let l = &e.level_chol[i * q0 * q0..(i + 1) * q0 * q0];
            for g in self.support_ptr[i]..self.support_ptr[i + 1] {
                solve_lower_transposed(l, q0, &mut gmat[g * q0..(g + 1) * q0]);
            }
            // L_i⁻ᵀL_i⁻¹ = (L_iL_iᵀ)⁻¹
            let li = lower_inverse(l, q0);
            for a in 0..q0 {
                for b in 0..q0 {
                    pf[0][b * q0 + a] += (a.max(b)..q0)
                        .map(|t| li[a * q0 + t] * li[b * q0 + t])
                        .sum::<f64>();
                }
            }
            let ui = &u0[i * q0..(i + 1) * q0];
            for a in 0..q0 {
                for b in 0..q0 {
                    uf[0][b * q0 + a] += ui[a] * ui[b];
                }
            }
        }
        let drop_tail = dim - nsub;
        let (support, by_column, ptr) = (
            &self.support[..],
            &self.by_column[..],
            &self.by_column_ptr[..],
        );
        let gm = &gmat[..];
        let quad = (0..nsub)
            .into_par_iter()
            .with_min_len(16)
            .fold(
                || vec![0.0; q0 * q0],
                |mut acc, j| {
                    let col = &sinv[j * dim..j * dim + nsub];
                    for &(g, end) in &by_column[ptr[j]..ptr[j + 1]] {
                        let (g, end) = (g as usize, end as usize - drop_tail);
                        let gj = &gm[g * q0..(g + 1) * q0];
                        for t in g..end {
                            let w = col[support[t] as usize];
                            let gt = &gm[t * q0..(t + 1) * q0];
                            // an off-diagonal entry stands twice in the full sum
                            let w = if t == g { 0.5 * w } else { w };
                            for a in 0..q0 {
                                for b in 0..q0 {
                                    acc[b * q0 + a] += w * (gj[a] * gt[b] + gt[a] * gj[b]);
                                }
                            }
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0.0; q0 * q0],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        for (v, w) in pf[0].iter_mut().zip(&quad) {
            *v += w;
        }
        let (mut logdets, mut pwrss) = (Vec::new(), Vec::new());
        for (fi, f) in self.factors.iter().enumerate() {
            let Some(li) = &inv_lambdas[fi] else {
                let v = if unknown[fi] { f64::NAN } else { 0.0 };
                logdets.extend(positions[fi].iter().map(|_| v));
                pwrss.extend(positions[fi].iter().map(|_| v));
                continue;
            };
            let q = f.q;
            // (M Λ⁻¹)[c, r] = Σ_t M[c, t] Λ⁻¹[t, r]
            let times_inv = |mat: &[f64], r: usize, c: usize| -> f64 {
                (0..q).map(|t| mat[t * q + c] * li[r * q + t]).sum()
            };
            for &(r, c) in &positions[fi] {
                logdets.push(2.0 * (f.nlev as f64 * li[r * q + c] - times_inv(&pf[fi], r, c)));
                pwrss.push(-2.0 * times_inv(&uf[fi], r, c));
            }
        }
        self.recycle(e.ls);
        Some(crate::inference::likelihood::Gradients {
            point,
            beta: chosen,
            logdets,
            pwrss,
        })
    }

    /// Keep S's storage for the next evaluation.
    fn recycle(&self, ls: Vec<f64>) {
        *self.buffer.borrow_mut() = ls;
    }

    pub fn deviance(&self, lambdas: &[Vec<f64>]) -> f64 {
        match self.evaluate(lambdas) {
            Some(e) => {
                self.recycle(e.ls);
                e.deviance
            }
            None => f64::INFINITY,
        }
    }

    /// The profiled deviance's log-determinant terms, σ̂² and Cov(β̂) =
    /// σ̂²(R_XᵀR_X)⁻¹ alone (no modes or conditional variances): what
    /// Satterthwaite's df need at each θ.
    pub fn fixed_effects_covariance(&self, lambdas: &[Vec<f64>]) -> Option<(f64, f64, Vec<f64>)> {
        let e = self.evaluate(lambdas)?;
        let dim = self.m + self.k();
        let sigma2 = e.pwrss / self.residual_dof();
        let vcov = self.beta_covariance(&e.ls, dim, sigma2);
        self.recycle(e.ls);
        Some((e.logdets, sigma2, vcov))
    }

    /// The criterion's pieces, β̂ and (R_XᵀR_X)⁻¹ at Λ (see `inference::likelihood::Point`).
    pub fn point(&self, lambdas: &[Vec<f64>]) -> Option<crate::inference::likelihood::Point> {
        let e = self.evaluate(lambdas)?;
        let dim = self.m + self.k();
        let x = self.dense_modes(&e.ls);
        let point = crate::inference::likelihood::Point {
            deviance: e.deviance,
            logdet_l: e.logdet_l,
            logdet_rx: e.logdet_rx,
            pwrss: e.pwrss,
            beta: x[self.m..].to_vec(),
            xtvx_inv: self.beta_covariance(&e.ls, dim, 1.0),
        };
        self.recycle(e.ls);
        Some(point)
    }

    /// σ² (R_XᵀR_X)⁻¹ from the X block of L_S (R_X = L_S[X, X]ᵀ).
    fn beta_covariance(&self, ls: &[f64], dim: usize, sigma2: f64) -> Vec<f64> {
        let (m, p) = (self.m, self.p);
        let mut rx = vec![0.0; p * p];
        for a in 0..p {
            for b in 0..=a {
                rx[b * p + a] = ls[(m + b) * dim + m + a];
            }
        }
        let linv = lower_inverse(&rx, p);
        let mut vcov = vec![0.0; p * p];
        for a in 0..p {
            for b in 0..p {
                let v: f64 = (a.max(b)..p)
                    .map(|r| linv[a * p + r] * linv[b * p + r])
                    .sum();
                vcov[b * p + a] = sigma2 * v;
            }
        }
        vcov
    }

    pub fn solution(&self, lambdas: &[Vec<f64>]) -> Option<CrossedSolution> {
        let mut e = self.evaluate(lambdas)?;
        let (m, k) = (self.m, self.k());
        let dim = m + k;
        let x = self.dense_modes(&e.ls);
        let u0 = self.first_factor_modes(&e, &x);
        let beta = x[m..].to_vec();
        let sigma2 = e.pwrss / self.residual_dof();
        let vcov = self.beta_covariance(&e.ls, dim, sigma2);
        // P_DD = (L_DD L_DDᵀ)⁻¹ for the conditional covariances (lower triangle).
        invert_leading(&mut e.ls, dim, m);
        let pmat = &e.ls;
        let pdd = |a: usize, b: usize| -> f64 { pmat[a.min(b) * dim + a.max(b)] };
        let mut blups = vec![Vec::new()];
        let mut cond = vec![Vec::new()];
        for (fi, f) in self.factors.iter().enumerate().skip(1) {
            let q = f.q;
            let lam = &lambdas[fi];
            let mut b = vec![0.0; f.nlev * q];
            let mut cc = vec![0.0; f.nlev * q * q];
            for l in 0..f.nlev {
                let o = f.off + l * q;
                let u = &x[o..o + q];
                let mut pu = vec![0.0; q * q];
                for a in 0..q {
                    for c2 in 0..q {
                        pu[c2 * q + a] = pdd(o + a, o + c2);
                    }
                }
                write_mode_and_cov(
                    lam,
                    u,
                    &pu,
                    q,
                    sigma2,
                    &mut b[l * q..(l + 1) * q],
                    &mut cc[l * q * q..(l + 1) * q * q],
                );
            }
            blups.push(b);
            cond.push(cc);
        }
        // First factor: P_ii = L_i⁻ᵀ (I + C_{i,D} P_DD C_{i,D}ᵀ) L_i⁻¹.
        let f0 = &self.factors[0];
        let q0 = f0.q;
        let lam0 = &lambdas[0];
        let mut b0 = vec![0.0; f0.nlev * q0];
        let mut cc0 = vec![0.0; f0.nlev * q0 * q0];
        for i in 0..f0.nlev {
            let (a0, a1) = (self.support_ptr[i], self.support_ptr[i + 1]);
            let dcols = &self.support[a0..a1 - k];
            let cd = &e.c[a0 * q0..(a1 - k) * q0];
            let nd = dcols.len();
            let mut inner = vec![0.0; q0 * q0];
            for a in 0..q0 {
                inner[a * q0 + a] = 1.0;
            }
            for x1 in 0..nd {
                for y1 in 0..nd {
                    let pv = pdd(dcols[x1] as usize, dcols[y1] as usize);
                    for a in 0..q0 {
                        for c2 in 0..q0 {
                            inner[c2 * q0 + a] += cd[x1 * q0 + a] * pv * cd[y1 * q0 + c2];
                        }
                    }
                }
            }
            // L_i⁻ᵀ inner L_i⁻¹ = (L_i⁻¹)ᵀ inner L_i⁻¹
            let li = lower_inverse(&e.level_chol[i * q0 * q0..(i + 1) * q0 * q0], q0);
            let mut li_t = vec![0.0; q0 * q0];
            for a in 0..q0 {
                for c2 in 0..q0 {
                    li_t[c2 * q0 + a] = li[a * q0 + c2];
                }
            }
            let mid = sandwich(&li_t, &inner, q0);
            let ui = &u0[i * q0..(i + 1) * q0];
            write_mode_and_cov(
                lam0,
                ui,
                &mid,
                q0,
                sigma2,
                &mut b0[i * q0..(i + 1) * q0],
                &mut cc0[i * q0 * q0..(i + 1) * q0 * q0],
            );
        }
        blups[0] = b0;
        cond[0] = cc0;
        self.recycle(e.ls);
        Some(CrossedSolution {
            deviance: e.deviance,
            beta,
            sigma2,
            vcov,
            blups,
            cond_cov: cond,
        })
    }
}

/// b = Λ u and σ² Λ P Λᵀ for one level.
fn write_mode_and_cov(
    lam: &[f64],
    u: &[f64],
    pm: &[f64],
    q: usize,
    sigma2: f64,
    b: &mut [f64],
    cc: &mut [f64],
) {
    for r in 0..q {
        b[r] = (0..=r).map(|t| lam[t * q + r] * u[t]).sum();
    }
    for (x, v) in cc.iter_mut().zip(sandwich(lam, pm, q)) {
        *x = sigma2 * v;
    }
}

/// Λ_aᵀ A Λ_b for lower-triangular Λ_a (qa×qa), Λ_b (qb×qb), A qa×qb (column-major).
fn ltal(la: &[f64], a: &[f64], lb: &[f64], qa: usize, qb: usize) -> Vec<f64> {
    if qa == 1 && qb == 1 {
        // intercept-only factors: the common case, kept cheap
        return vec![la[0] * a[0] * lb[0]];
    }
    let mut tmp = vec![0.0; qa * qb];
    for c in 0..qb {
        for r in 0..qa {
            tmp[c * qa + r] = (c..qb).map(|t| a[t * qa + r] * lb[c * qb + t]).sum();
        }
    }
    let mut out = vec![0.0; qa * qb];
    for c in 0..qb {
        for r in 0..qa {
            out[c * qa + r] = (r..qa).map(|t| la[r * qa + t] * tmp[c * qa + t]).sum();
        }
    }
    out
}

/// Inverse of a lower-triangular n×n matrix (column-major).
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for c in 0..n {
        inv[c * n + c] = 1.0 / l[c * n + c];
        for r in c + 1..n {
            let mut v = 0.0;
            for t in c..r {
                v += l[t * n + r] * inv[c * n + t];
            }
            inv[c * n + r] = -v / l[r * n + r];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crossed problem built straight from rows: factor 0 (`n0` levels, terms
    /// [1, x] if `q0 == 2`) crossed with factor 1 (`n1` levels, likewise), and
    /// a third factor of 3 levels (intercept), X = [1, x].
    fn problem(method: Method, q0: usize, q1: usize) -> CrossedProblem {
        let (n0, n1, n2) = (23, 9, 3);
        let mut state: u64 = 12345;
        let mut unif = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64) / ((1u64 << 53) as f64)
        };
        let (p, k) = (2, 3);
        let qs = [q0, q1, 1];
        let nlevs = [n0, n1, n2];
        let mut ztz: Vec<Vec<f64>> = (0..3)
            .map(|f| vec![0.0; nlevs[f] * qs[f] * qs[f]])
            .collect();
        let mut ztr: Vec<Vec<f64>> = (0..3).map(|f| vec![0.0; nlevs[f] * qs[f] * k]).collect();
        let mut cells: Vec<std::collections::BTreeMap<(u32, u32), Vec<f64>>> =
            vec![Default::default(); 3];
        let mut rtr = vec![0.0; k * k];
        let rows = 400;
        for _ in 0..rows {
            let lev = [
                (unif() * n0 as f64) as usize,
                (unif() * n1 as f64) as usize,
                (unif() * n2 as f64) as usize,
            ];
            let x = unif() * 4.0 - 2.0;
            let y = 1.0
                + 0.5 * x
                + (lev[0] as f64 * 0.37).sin()
                + (lev[1] as f64).cos() * (1.0 + 0.3 * x)
                + 0.2 * lev[2] as f64
                + unif();
            let r = [1.0, x, y];
            let z: Vec<Vec<f64>> = (0..3)
                .map(|f| if qs[f] == 2 { vec![1.0, x] } else { vec![1.0] })
                .collect();
            for f in 0..3 {
                let q = qs[f];
                for c in 0..q {
                    for a in 0..q {
                        ztz[f][lev[f] * q * q + c * q + a] += z[f][a] * z[f][c];
                    }
                    for j in 0..k {
                        ztr[f][lev[f] * q * k + j * q + c] += z[f][c] * r[j];
                    }
                }
            }
            for (pi, (fa, fb)) in [(0, 1), (0, 2), (1, 2)].into_iter().enumerate() {
                let blk = cells[pi]
                    .entry((lev[fa] as u32, lev[fb] as u32))
                    .or_insert_with(|| vec![0.0; qs[fa] * qs[fb]]);
                for c in 0..qs[fb] {
                    for a in 0..qs[fa] {
                        blk[c * qs[fa] + a] += z[fa][a] * z[fb][c];
                    }
                }
            }
            for b in 0..k {
                for a in 0..k {
                    rtr[b * k + a] += r[a] * r[b];
                }
            }
        }
        let factors = (0..3)
            .map(|f| Factor {
                q: qs[f],
                nlev: nlevs[f],
                ztz: ztz[f].clone(),
                ztr: ztr[f].clone(),
                off: 0,
            })
            .collect();
        let pairs = [(0, 1), (0, 2), (1, 2)]
            .into_iter()
            .enumerate()
            .map(|(pi, (a, b))| Pair {
                a,
                b,
                cells: cells[pi].keys().copied().collect(),
                blocks: cells[pi].values().flatten().copied().collect(),
            })
            .collect();
        CrossedProblem::new(rows as f64, p, method, factors, pairs, rtr)
    }

    fn lambdas(theta: &[f64], qs: &[usize]) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        let mut t = 0;
        for &q in qs {
            let mut l = vec![0.0; q * q];
            for c in 0..q {
                for r in c..q {
                    l[c * q + r] = theta[t];
                    t += 1;
                }
            }
            out.push(l);
        }
        out
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        for method in [Method::Reml, Method::Ml] {
            for (q0, q1) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
                let pr = problem(method, q0, q1);
                let qs = [q0, q1, 1];
                let positions: Vec<Vec<(usize, usize)>> = qs
                    .iter()
                    .map(|&q| (0..q).flat_map(|c| (c..q).map(move |r| (r, c))).collect())
                    .collect();
                let ntheta: usize = qs.iter().map(|q| q * (q + 1) / 2).sum();
                let theta: Vec<f64> = (0..ntheta)
                    .map(|i| 0.9 - 0.17 * i as f64 + if i % 2 == 1 { -0.6 } else { 0.0 })
                    .collect();
                let (f0, g) = pr
                    .deviance_and_gradient(&lambdas(&theta, &qs), &positions)
                    .unwrap();
                assert!((f0 - pr.deviance(&lambdas(&theta, &qs))).abs() < 1e-12 * f0.abs());
                for j in 0..ntheta {
                    let h = 1e-6;
                    let (mut tp, mut tm) = (theta.clone(), theta.clone());
                    tp[j] += h;
                    tm[j] -= h;
                    let fd = (pr.deviance(&lambdas(&tp, &qs)) - pr.deviance(&lambdas(&tm, &qs)))
                        / (2.0 * h);
                    assert!(
                        (fd - g[j]).abs() < 1e-5 * (1.0 + fd.abs()),
                        "{method:?} q=({q0},{q1}) θ{j}: analytic {} vs fd {fd}",
                        g[j]
                    );
                }
            }
        }
    }
}

//! The first grouping factor eliminated level by level, the others kept as
//! one dense block (the same split as the crossed fit, `crate::crossed`).
//!
//! Split the random-effect columns into the first factor's (block 1: n₀
//! levels of q₀ columns, Λ₁ = I ⊗ Λ₀) and the rest (block 2: m columns, Λ₂).
//! K₁₁ is block diagonal (K_l per level), so with
//! H₁ = (I + Z₁Λ₁Λ₁ᵀZ₁ᵀ)⁻¹ = I − Z₁Λ₁(Λ₁ᵀK₁₁Λ₁ + I)⁻¹Λ₁ᵀZ₁ᵀ (the first
//! factor alone, one level at a time) and N = ZᵀH₁Z:
//!
//! ```text
//!   A_l = Λ₀ᵀK_lΛ₀ + I = L_lL_lᵀ,  W_l = L_l⁻¹Λ₀ᵀK_l,  G_lc = L_l⁻¹Λ₀ᵀK_lc   (c: a cell of level l)
//!   N₁₁ = blockdiag(K_l − W_lᵀW_l)          (what `blocks` calls Ĉ_l)
//!   N₁₂ at the cells: K_lc − W_lᵀG_lc        (zero elsewhere)
//!   N₂₂ = K₂₂ − Σ_l G_lᵀG_l                   (dense m×m, G_l = [G_lc]_c)
//! ```
//! H = (H₁⁻¹ + Z₂Λ₂Λ₂ᵀZ₂ᵀ)⁻¹, and by Woodbury H = H₁ − H₁Z₂Λ₂S_c⁻¹Λ₂ᵀZ₂ᵀH₁
//! with S_c = I + Λ₂ᵀN₂₂Λ₂ = L_cL_cᵀ, which is also the Schur complement of
//! A in S = ΛᵀKΛ + I = [A B; Bᵀ D] (B = Λ₁ᵀK₁₂Λ₂, D = Λ₂ᵀK₂₂Λ₂ + I). Hence,
//! with N₂ = [N₂₁ N₂₂] (N's rows of the rest):
//!
//! ```text
//!   Ĉ = ZᵀHZ = N − N₂ᵀΛ₂S_c⁻¹Λ₂ᵀN₂ = N − ΨΨᵀ,   X = Ψᵀ = L_c⁻¹Λ₂ᵀN₂   (m × qt, dense)
//! ```
//! and S⁻¹ (for M = ΛS⁻¹Λᵀ) is applied by block elimination: y₁ = A⁻¹x₁,
//! z₂ = S_c⁻¹(x₂ − Bᵀy₁), z₁ = A⁻¹(x₁ − Bz₂).
//!
//! Cost: Σ_l (cells of l)²·q₀ for N₂₂ (bands of its columns on rayon's
//! threads), m³/3 for L_c, m²·qt for X; memory m·qt (X) and three m×m
//! (N₂₂, Λ₂ᵀN₂₂, L_c) doubles.

use super::columns::{lambda_block, Columns};
use crate::dense::{cholesky_lower, solve_lower, solve_lower_transposed};

/// A level pair of the first factor with another one; its blocks (q₀ × q,
/// column-major) sit at `at` in `Elimination`'s flat arrays.
pub struct Cell {
    /// the other factor and its q
    pub factor: usize,
    pub q: usize,
    /// first column of that level among the rest's m columns
    pub col: usize,
    pub at: usize,
}

pub struct Elimination {
    pub q0: usize,
    pub n0: usize,
    /// columns of the rest (m) and where they start among all (n₀·q₀)
    pub m: usize,
    pub r0: usize,
    /// per level of the first factor: L_l and N₁₁'s block (q₀×q₀ each)
    pub chol: Vec<f64>,
    pub n11: Vec<f64>,
    /// the cells, level by level of the first factor (level l: cell_ptr[l]..cell_ptr[l+1])
    pub cells: Vec<Cell>,
    pub cell_ptr: Vec<usize>,
    /// per cell: K_lc = Z_lᵀZ_c, B_lc = Λ₀ᵀK_lcΛ_c and N₁₂'s block
    pub cell_k: Vec<f64>,
    pub cell_b: Vec<f64>,
    pub cell_n: Vec<f64>,
    /// G_lc while N₂₂ is formed
    cell_g: Vec<f64>,
    /// N₂₂ (until `traces` takes it over for Ĉ₂₂), Λ₂ᵀN₂₂ and L_c (m×m,
    /// column-major; L_c's upper triangle is zero)
    pub n22: Vec<f64>,
    pub lt_n22: Vec<f64>,
    pub sc: Vec<f64>,
    /// the rest's column blocks: (first column among the m, q, factor)
    pub rest_blocks: Vec<(usize, usize, usize)>,
}

impl Elimination {
    pub fn new(cols: &Columns) -> Elimination {
        let (factors, lambdas) = (cols.factors, cols.lambdas);
        let f0 = &factors[0];
        let (q0, n0) = (f0.q, f0.nlev);
        let r0 = n0 * q0;
        let m = cols.qt - r0;
        let (cells, cell_ptr, cell_k) = cells_by_level(cols, r0);
        let size = cell_k.len();
        let mut e = Elimination {
            q0,
            n0,
            m,
            r0,
            chol: vec![0.0; n0 * q0 * q0],
            n11: vec![0.0; n0 * q0 * q0],
            cells,
            cell_ptr,
            cell_k,
            cell_b: vec![0.0; size],
            cell_n: vec![0.0; size],
            cell_g: vec![0.0; size],
            n22: rest_ztz(cols, r0, m),
            lt_n22: Vec::new(),
            sc: Vec::new(),
            rest_blocks: Vec::new(),
        };
        for fi in 1..factors.len() {
            for l in 0..factors[fi].nlev {
                e.rest_blocks
                    .push((cols.column(fi, l) - r0, factors[fi].q, fi));
            }
        }
        for l in 0..n0 {
            e.eliminate_level(l, &f0.ztz[l * q0 * q0..(l + 1) * q0 * q0], lambdas);
        }
        e.subtract_first_factor();
        e.cell_g = Vec::new();
        e.factor_rest(lambdas);
        e
    }

    /// Λ₂ᵀN₂₂ and L_c with L_cL_cᵀ = S_c = I + (Λ₂ᵀN₂₂)Λ₂.
    fn factor_rest(&mut self, lambdas: &[Vec<f64>]) {
        let m = self.m;
        self.lt_n22 = self.rest_lambda_t(&self.n22, m, lambdas);
        let mut sc = self.rest_times_lambda(&self.lt_n22, lambdas);
        for i in 0..m {
            sc[i * m + i] += 1.0;
        }
        let ok = cholesky_lower(&mut sc, m);
        debug_assert!(ok, "S_c ≥ I is positive definite");
        for c in 0..m {
            for r in 0..c {
                sc[c * m + r] = 0.0;
            }
        }
        self.sc = sc;
    }

    /// The cells of the first factor's level l.
    pub fn level_cells(&self, l: usize) -> &[Cell] {
        &self.cells[self.cell_ptr[l]..self.cell_ptr[l + 1]]
    }

    /// N₁₂'s block of a cell (q₀ × cell.q).
    pub fn n_block(&self, cell: &Cell) -> &[f64] {
        &self.cell_n[cell.at..cell.at + self.q0 * cell.q]
    }

    /// L_l, W_l, N₁₁'s block, the G_lc, B_lc and N₁₂'s blocks of level l.
    fn eliminate_level(&mut self, l: usize, kl: &[f64], lambdas: &[Vec<f64>]) {
        let q0 = self.q0;
        let qq = q0 * q0;
        let lam0 = &lambdas[0];
        // A = Λ₀ᵀKΛ₀ + I: column c is Λ₀ᵀ(K Λ₀[:, c])
        let mut a = vec![0.0; qq];
        let mut tmp = vec![0.0; q0];
        for c in 0..q0 {
            for r in 0..q0 {
                tmp[r] = (c..q0).map(|t| kl[t * q0 + r] * lam0[c * q0 + t]).sum();
            }
            lambda_block(lam0, q0, &tmp, &mut a[c * q0..(c + 1) * q0], true);
            a[c * q0 + c] += 1.0;
        }
        let ok = cholesky_lower(&mut a, q0);
        debug_assert!(ok, "A_l ≥ I is positive definite");
        // x ↦ L⁻¹Λ₀ᵀx on each of ncol columns
        let lt_solve = |x: &[f64], ncol: usize, out: &mut [f64]| {
            for j in 0..ncol {
                let o = &mut out[j * q0..(j + 1) * q0];
                lambda_block(lam0, q0, &x[j * q0..(j + 1) * q0], o, true);
                solve_lower(&a, q0, o);
            }
        };
        let mut w = vec![0.0; qq];
        lt_solve(kl, q0, &mut w);
        let n11 = &mut self.n11[l * qq..(l + 1) * qq];
        for c in 0..q0 {
            for r in 0..q0 {
                n11[c * q0 + r] =
                    kl[c * q0 + r] - (0..q0).map(|t| w[r * q0 + t] * w[c * q0 + t]).sum::<f64>();
            }
        }
        // G_l = [G_lc]_c (q₀ × Σq), N₁₂ = K_lc − W_lᵀG_lc, B_lc = Λ₀ᵀK_lcΛ_c
        let (lo, hi) = (self.cell_ptr[l], self.cell_ptr[l + 1]);
        let (start, end) = if lo < hi {
            (
                self.cells[lo].at,
                self.cells[hi - 1].at + q0 * self.cells[hi - 1].q,
            )
        } else {
            (0, 0)
        };
        let ncols = (end - start) / q0.max(1);
        let mut g = vec![0.0; end - start];
        lt_solve(&self.cell_k[start..end], ncols, &mut g);
        for i in start..end {
            let (c, r) = ((i - start) / q0, (i - start) % q0);
            self.cell_n[i] =
                self.cell_k[i] - (0..q0).map(|t| w[r * q0 + t] * g[c * q0 + t]).sum::<f64>();
        }
        let mut col = vec![0.0; q0];
        for cell in &self.cells[lo..hi] {
            let lam = &lambdas[cell.factor];
            let (qc, at) = (cell.q, cell.at);
            // K_lcΛ_c by columns, then Λ₀ᵀ on each
            for c in 0..qc {
                for r in 0..q0 {
                    col[r] = (c..qc)
                        .map(|t| self.cell_k[at + t * q0 + r] * lam[c * qc + t])
                        .sum();
                }
                lambda_block(
                    lam0,
                    q0,
                    &col,
                    &mut self.cell_b[at + c * q0..at + (c + 1) * q0],
                    true,
                );
            }
        }
        self.cell_g[start..end].copy_from_slice(&g);
        self.chol[l * qq..(l + 1) * qq].copy_from_slice(&a);
    }

    /// N₂₂ −= Σ_l G_lᵀG_l, lower triangle (mirrored once all levels are in).
    /// Threads own bands of columns and visit the levels in order, so the
    /// result does not depend on their number.
    fn subtract_first_factor(&mut self) {
        use rayon::prelude::*;
        const BAND: usize = 64;
        let (m, q0) = (self.m, self.q0);
        let (cells, ptr, g) = (&self.cells, &self.cell_ptr, &self.cell_g);
        self.n22
            .par_chunks_mut(BAND * m)
            .enumerate()
            .for_each(|(bi, band)| {
                let (c0, c1) = (bi * BAND, (bi * BAND + band.len() / m).min(m));
                for l in 0..self.n0 {
                    let level = &cells[ptr[l]..ptr[l + 1]];
                    for cb in level.iter().filter(|cb| cb.col < c1 && cb.col + cb.q > c0) {
                        let gb = &g[cb.at..cb.at + q0 * cb.q];
                        for j in (0..cb.q).filter(|&j| (c0..c1).contains(&(cb.col + j))) {
                            let column =
                                &mut band[(cb.col + j - c0) * m..(cb.col + j - c0 + 1) * m];
                            for ca in level.iter().filter(|ca| ca.col >= cb.col) {
                                let ga = &g[ca.at..ca.at + q0 * ca.q];
                                for (i, d) in column[ca.col..ca.col + ca.q].iter_mut().enumerate() {
                                    *d -= (0..q0)
                                        .map(|t| ga[i * q0 + t] * gb[j * q0 + t])
                                        .sum::<f64>();
                                }
                            }
                        }
                    }
                }
            });
        for c in 0..m {
            for r in c + 1..m {
                self.n22[r * m + c] = self.n22[c * m + r];
            }
        }
    }

    /// Λ₂ᵀV for V with the rest's m rows.
    pub fn rest_lambda_t(&self, v: &[f64], cols: usize, lambdas: &[Vec<f64>]) -> Vec<f64> {
        let m = self.m;
        let mut out = vec![0.0; m * cols];
        for j in 0..cols {
            for &(o, q, fi) in &self.rest_blocks {
                lambda_block(
                    &lambdas[fi],
                    q,
                    &v[j * m + o..j * m + o + q],
                    &mut out[j * m + o..j * m + o + q],
                    true,
                );
            }
        }
        out
    }

    /// VΛ₂ for V m×m: column o+c of a block is Σ_{t ≥ c} V[:, o+t] Λ[t, c].
    fn rest_times_lambda(&self, v: &[f64], lambdas: &[Vec<f64>]) -> Vec<f64> {
        let m = self.m;
        let mut out = vec![0.0; m * m];
        for &(o, q, fi) in &self.rest_blocks {
            let lam = &lambdas[fi];
            for c in 0..q {
                let dst = &mut out[(o + c) * m..(o + c + 1) * m];
                for t in c..q {
                    let f = lam[c * q + t];
                    if f != 0.0 {
                        for (d, x) in dst.iter_mut().zip(&v[(o + t) * m..(o + t + 1) * m]) {
                            *d += x * f;
                        }
                    }
                }
            }
        }
        out
    }

    /// X = Ψᵀ = L_c⁻¹Λ₂ᵀN₂ (m × qt, column-major: column i is Ψ's row i).
    pub fn psi_t(&self, lambdas: &[Vec<f64>]) -> Vec<f64> {
        let (m, r0, q0) = (self.m, self.r0, self.q0);
        let qt = r0 + m;
        let mut x = vec![0.0; m * qt];
        // the first factor's columns: N₂₁ is N₁₂ᵀ at the cells
        let qmax = self.rest_blocks.iter().map(|b| b.1).max().unwrap_or(1);
        let (mut row, mut seg) = (vec![0.0; qmax], vec![0.0; qmax]);
        for l in 0..self.n0 {
            for cell in self.level_cells(l) {
                let (q, nb) = (cell.q, self.n_block(cell));
                for a in 0..q0 {
                    for c in 0..q {
                        row[c] = nb[c * q0 + a];
                    }
                    lambda_block(&lambdas[cell.factor], q, &row[..q], &mut seg[..q], true);
                    let col = (l * q0 + a) * m + cell.col;
                    x[col..col + q].copy_from_slice(&seg[..q]);
                }
            }
        }
        x[r0 * m..].copy_from_slice(&self.lt_n22);
        let par = faer::get_global_parallelism();
        let lc = faer::MatRef::from_column_major_slice(&self.sc, m, m);
        let xm = faer::MatMut::from_column_major_slice_mut(&mut x, m, qt);
        faer::linalg::triangular_solve::solve_lower_triangular_in_place(lc, xm, par);
        x
    }

    /// S⁻¹V for V with qt rows and `ncol` columns (S = ΛᵀKΛ + I).
    pub fn s_solve(&self, v: &[f64], ncol: usize) -> Vec<f64> {
        let (q0, m, r0) = (self.q0, self.m, self.r0);
        let qt = r0 + m;
        let qq = q0 * q0;
        let mut out = v.to_vec();
        let mut t = vec![0.0; q0];
        // y₁ = A⁻¹x₁ (kept aside), then x₂ −= Bᵀy₁
        let mut y1 = vec![0.0; r0 * ncol];
        for l in 0..self.n0 {
            let lc = &self.chol[l * qq..(l + 1) * qq];
            for j in 0..ncol {
                let yl = &mut y1[j * r0 + l * q0..j * r0 + (l + 1) * q0];
                yl.copy_from_slice(&out[j * qt + l * q0..j * qt + (l + 1) * q0]);
                solve_lower(lc, q0, yl);
                solve_lower_transposed(lc, q0, yl);
            }
            for cell in self.level_cells(l) {
                let b = &self.cell_b[cell.at..cell.at + q0 * cell.q];
                for j in 0..ncol {
                    let yl = &y1[j * r0 + l * q0..j * r0 + (l + 1) * q0];
                    for c in 0..cell.q {
                        out[j * qt + r0 + cell.col + c] -=
                            (0..q0).map(|r| b[c * q0 + r] * yl[r]).sum::<f64>();
                    }
                }
            }
        }
        // z₂ = S_c⁻¹(x₂ − Bᵀy₁), all columns at once
        {
            let par = faer::get_global_parallelism();
            let lc = faer::MatRef::from_column_major_slice(&self.sc, m, m);
            let mut z2 =
                faer::MatMut::from_column_major_slice_with_stride_mut(&mut out[r0..], m, ncol, qt);
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(lc, z2.as_mut(), par);
            faer::linalg::triangular_solve::solve_upper_triangular_in_place(
                lc.transpose(),
                z2,
                par,
            );
        }
        // z₁ = A⁻¹(x₁ − Bz₂) = y₁ − A⁻¹Bz₂
        for l in 0..self.n0 {
            let lc = &self.chol[l * qq..(l + 1) * qq];
            for j in 0..ncol {
                t.iter_mut().for_each(|v| *v = 0.0);
                for cell in self.level_cells(l) {
                    let b = &self.cell_b[cell.at..cell.at + q0 * cell.q];
                    let z = &out[j * qt + r0 + cell.col..j * qt + r0 + cell.col + cell.q];
                    for (c, zc) in z.iter().enumerate() {
                        for r in 0..q0 {
                            t[r] += b[c * q0 + r] * zc;
                        }
                    }
                }
                solve_lower(lc, q0, &mut t);
                solve_lower_transposed(lc, q0, &mut t);
                for r in 0..q0 {
                    out[j * qt + l * q0 + r] = y1[j * r0 + l * q0 + r] - t[r];
                }
            }
        }
        out
    }
}

/// The first factor's cells, level by level (a counting sort of the pairs'
/// cells), with level pointers and their Z_lᵀZ_c blocks copied in that order.
fn cells_by_level(cols: &Columns, r0: usize) -> (Vec<Cell>, Vec<usize>, Vec<f64>) {
    let (q0, n0) = (cols.factors[0].q, cols.factors[0].nlev);
    let first_pairs: Vec<&crate::crossed::Pair> =
        cols.pairs.iter().filter(|pr| pr.a == 0).collect();
    let mut ptr = vec![0usize; n0 + 1];
    for pr in &first_pairs {
        for &(la, _) in &pr.cells {
            ptr[la as usize + 1] += 1;
        }
    }
    for l in 0..n0 {
        ptr[l + 1] += ptr[l];
    }
    let mut fill = ptr.clone();
    let mut slots: Vec<(usize, usize)> = vec![(0, 0); ptr[n0]];
    for (pi, pr) in first_pairs.iter().enumerate() {
        for (ci, &(la, _)) in pr.cells.iter().enumerate() {
            slots[fill[la as usize]] = (pi, ci);
            fill[la as usize] += 1;
        }
    }
    let mut cells = Vec::with_capacity(slots.len());
    let mut blocks = Vec::new();
    for &(pi, ci) in &slots {
        let pr = first_pairs[pi];
        let qb = cols.factors[pr.b].q;
        cells.push(Cell {
            factor: pr.b,
            q: qb,
            col: cols.column(pr.b, pr.cells[ci].1 as usize) - r0,
            at: blocks.len(),
        });
        blocks.extend_from_slice(&pr.blocks[ci * q0 * qb..(ci + 1) * q0 * qb]);
    }
    (cells, ptr, blocks)
}

/// K₂₂: the rest's block of ZᵀZ, dense m×m.
fn rest_ztz(cols: &Columns, r0: usize, m: usize) -> Vec<f64> {
    let mut k = vec![0.0; m * m];
    for (fi, f) in cols.factors.iter().enumerate().skip(1) {
        let q = f.q;
        for l in 0..f.nlev {
            let o = cols.column(fi, l) - r0;
            for c in 0..q {
                for r in 0..q {
                    k[(o + c) * m + o + r] = f.ztz[l * q * q + c * q + r];
                }
            }
        }
    }
    for pr in cols.pairs.iter().filter(|pr| pr.a > 0) {
        let (qa, qb) = (cols.factors[pr.a].q, cols.factors[pr.b].q);
        for (ci, &(la, lb)) in pr.cells.iter().enumerate() {
            let (oa, ob) = (
                cols.column(pr.a, la as usize) - r0,
                cols.column(pr.b, lb as usize) - r0,
            );
            for c in 0..qb {
                for r in 0..qa {
                    let v = pr.blocks[ci * qa * qb + c * qa + r];
                    k[(ob + c) * m + oa + r] = v;
                    k[(oa + r) * m + ob + c] = v;
                }
            }
        }
    }
    k
}

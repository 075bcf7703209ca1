//! The first grouping factor eliminated level by level, the others kept as
//! one dense block (the same split as the crossed fit, `crate::crossed`).
//!
//! Split the random-effect columns into the first factor's (1: n₀ levels of
//! q₀ columns) and the rest (2: m columns). K₁₁ is block diagonal, so with
//! H₁ = I − Z₁Λ₁(Λ₁ᵀK₁₁Λ₁ + I)⁻¹Λ₁ᵀZ₁ᵀ (the residual operator of the first
//! factor alone, one level at a time) and N = ZᵀH₁Z:
//!
//! ```text
//!   A_l = Λ₀ᵀK_lΛ₀ + I = L_lL_lᵀ,  W_l = L_l⁻¹Λ₀ᵀK_l,  G_lc = L_l⁻¹Λ₀ᵀK_lc   (c: a cell of level l)
//!   N₁₁ = blockdiag(K_l − W_lᵀW_l)          (what `blocks` calls Ĉ_l)
//!   N₁₂ at the cells: K_lc − W_lᵀG_lc        (zero elsewhere)
//!   N₂₂ = K₂₂ − Σ_l G_lᵀG_l                   (dense m×m, G_l = [G_lc]_c)
//! ```
//! Woodbury on the rest: H = H₁ − H₁Z₂Λ₂ S_c⁻¹ Λ₂ᵀZ₂ᵀH₁ with
//! S_c = I + Λ₂ᵀN₂₂Λ₂ = L_cL_cᵀ, which is also the Schur complement of A in
//! S = ΛᵀKΛ + I = [A B; Bᵀ D] (B = Λ₁ᵀK₁₂Λ₂, D = Λ₂ᵀK₂₂Λ₂ + I). Hence
//!
//! ```text
//!   Ĉ = ZᵀHZ = N − ΨΨᵀ,   Ψᵀ = X = L_c⁻¹Λ₂ᵀN₂.   (m × qt, dense; N₂ = N's rows of the rest)
//! ```
//! and S⁻¹ (for M = ΛS⁻¹Λᵀ) is applied by block elimination: y₁ = A⁻¹x₁,
//! z₂ = S_c⁻¹(x₂ − Bᵀy₁), z₁ = A⁻¹(x₁ − Bz₂).
//!
//! Cost: Σ_l (cells of l)²·q₀ for N₂₂, m³/3 for L_c, m²·qt for X; memory
//! m·qt (X) and two m×m (N₂₂, L_c) doubles.

use super::columns::{lambda_block, Columns};
use crate::dense::{cholesky_lower, solve_lower, solve_lower_transposed};

/// A level pair of the first factor with another one.
pub struct Cell {
    /// the other factor, its level and q
    pub factor: usize,
    pub q: usize,
    /// first column of that level among the rest's m columns
    pub col: usize,
    /// Z_lᵀZ_c (q₀ × q) and N₁₂'s block, column-major
    pub k: Vec<f64>,
    pub n: Vec<f64>,
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
    /// per level of the first factor, its cells
    pub cells: Vec<Vec<Cell>>,
    /// N₂₂ and L_c (m×m, column-major; L_c's upper triangle is zero)
    pub n22: Vec<f64>,
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
        let lam0 = &lambdas[0];
        let mut cells: Vec<Vec<Cell>> = (0..n0).map(|_| Vec::new()).collect();
        for pr in cols.pairs.iter().filter(|pr| pr.a == 0) {
            let qb = factors[pr.b].q;
            for (ci, &(la, lb)) in pr.cells.iter().enumerate() {
                let k = pr.blocks[ci * q0 * qb..(ci + 1) * q0 * qb].to_vec();
                cells[la as usize].push(Cell { factor: pr.b, q: qb, col: cols.column(pr.b, lb as usize) - r0, n: vec![0.0; k.len()], k });
            }
        }
        let n22 = rest_ztz(cols, r0, m);
        let mut e = Elimination { q0, n0, m, r0, chol: vec![0.0; n0 * q0 * q0], n11: vec![0.0; n0 * q0 * q0], cells, n22, sc: Vec::new(), rest_blocks: Vec::new() };
        for fi in 1..factors.len() {
            for l in 0..factors[fi].nlev {
                e.rest_blocks.push((cols.column(fi, l) - r0, factors[fi].q, fi));
            }
        }
        for l in 0..n0 {
            e.eliminate_level(l, &f0.ztz[l * q0 * q0..(l + 1) * q0 * q0], lam0);
        }
        // S_c = I + Λ₂ᵀN₂₂Λ₂ = L_cL_cᵀ
        let lt_n = e.rest_lambda_t(&e.n22, m, lambdas);
        let mut sc = e.rest_lambda_t(&transpose(&lt_n, m, m), m, lambdas);
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
        e.sc = sc;
        e
    }

    /// L_l, W_l, N₁₁'s block, the G_lc and N₁₂'s blocks of level l; N₂₂ −= G_lᵀG_l.
    fn eliminate_level(&mut self, l: usize, kl: &[f64], lam0: &[f64]) {
        let q0 = self.q0;
        let qq = q0 * q0;
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
        // x ↦ L⁻¹Λ₀ᵀx on each column
        let lt_solve = |x: &[f64], out: &mut [f64]| {
            lambda_block(lam0, q0, x, out, true);
            solve_lower(&a, q0, out);
        };
        let cols_of = |x: &[f64], ncol: usize| -> Vec<f64> {
            let mut out = vec![0.0; q0 * ncol];
            for j in 0..ncol {
                lt_solve(&x[j * q0..(j + 1) * q0], &mut out[j * q0..(j + 1) * q0]);
            }
            out
        };
        let w = cols_of(kl, q0);
        let n11 = &mut self.n11[l * qq..(l + 1) * qq];
        for c in 0..q0 {
            for r in 0..q0 {
                n11[c * q0 + r] = kl[c * q0 + r] - (0..q0).map(|t| w[r * q0 + t] * w[c * q0 + t]).sum::<f64>();
            }
        }
        let g: Vec<Vec<f64>> = self.cells[l].iter().map(|cell| cols_of(&cell.k, cell.q)).collect();
        for (cell, gc) in self.cells[l].iter_mut().zip(&g) {
            for c in 0..cell.q {
                for r in 0..q0 {
                    cell.n[c * q0 + r] = cell.k[c * q0 + r] - (0..q0).map(|t| w[r * q0 + t] * gc[c * q0 + t]).sum::<f64>();
                }
            }
        }
        let m = self.m;
        for (ca, ga) in self.cells[l].iter().zip(&g) {
            for (cb, gb) in self.cells[l].iter().zip(&g) {
                for j in 0..cb.q {
                    for i in 0..ca.q {
                        let v: f64 = (0..q0).map(|t| ga[i * q0 + t] * gb[j * q0 + t]).sum();
                        self.n22[(cb.col + j) * m + ca.col + i] -= v;
                    }
                }
            }
        }
        self.chol[l * qq..(l + 1) * qq].copy_from_slice(&a);
    }

    /// Λ₂ᵀV for V with the rest's m rows.
    pub fn rest_lambda_t(&self, v: &[f64], cols: usize, lambdas: &[Vec<f64>]) -> Vec<f64> {
        let m = self.m;
        let mut out = vec![0.0; m * cols];
        for &(o, q, fi) in &self.rest_blocks {
            let lam = &lambdas[fi];
            for j in 0..cols {
                lambda_block(lam, q, &v[j * m + o..j * m + o + q], &mut out[j * m + o..j * m + o + q], true);
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
        let mut seg = vec![0.0; 8];
        for (l, cells) in self.cells.iter().enumerate() {
            for cell in cells {
                let lam = &lambdas[cell.factor];
                seg.resize(cell.q, 0.0);
                let mut nrow = vec![0.0; cell.q];
                for a in 0..q0 {
                    for (c, v) in nrow.iter_mut().enumerate() {
                        *v = cell.n[c * q0 + a];
                    }
                    lambda_block(lam, cell.q, &nrow, &mut seg, true);
                    let col = (l * q0 + a) * m + cell.col;
                    x[col..col + cell.q].copy_from_slice(&seg);
                }
            }
        }
        let rest = self.rest_lambda_t(&self.n22, m, lambdas);
        x[r0 * m..].copy_from_slice(&rest);
        let par = faer::get_global_parallelism();
        let lc = faer::MatRef::from_column_major_slice(&self.sc, m, m);
        let xm = faer::MatMut::from_column_major_slice_mut(&mut x, m, qt);
        faer::linalg::triangular_solve::solve_lower_triangular_in_place(lc, xm, par);
        x
    }

    /// S⁻¹V for V with qt rows and `cols` columns (S = ΛᵀKΛ + I).
    pub fn s_solve(&self, cols: &Columns, v: &[f64], ncol: usize) -> Vec<f64> {
        let (q0, m, r0) = (self.q0, self.m, self.r0);
        let qt = r0 + m;
        let lam0 = &cols.lambdas[0];
        let qq = q0 * q0;
        let a_solve = |l: usize, x: &mut [f64]| {
            let lc = &self.chol[l * qq..(l + 1) * qq];
            solve_lower(lc, q0, x);
            solve_lower_transposed(lc, q0, x);
        };
        let mut out = v.to_vec();
        let mut t0 = vec![0.0; q0];
        let mut t1 = vec![0.0; q0];
        for j in 0..ncol {
            let col = &mut out[j * qt..(j + 1) * qt];
            let (x1, x2) = col.split_at_mut(r0);
            // y₁ = A⁻¹x₁ (kept aside), x₂ − Bᵀy₁ with Bᵀ = Λ₂ᵀK₂₁Λ₀
            let mut y1 = x1.to_vec();
            for l in 0..self.n0 {
                a_solve(l, &mut y1[l * q0..(l + 1) * q0]);
                lambda_block(lam0, q0, &y1[l * q0..(l + 1) * q0], &mut t0, false);
                for cell in &self.cells[l] {
                    let mut u = vec![0.0; cell.q];
                    for (c, uv) in u.iter_mut().enumerate() {
                        *uv = (0..q0).map(|r| cell.k[c * q0 + r] * t0[r]).sum();
                    }
                    let mut w = vec![0.0; cell.q];
                    lambda_block(&cols.lambdas[cell.factor], cell.q, &u, &mut w, true);
                    for (c, wv) in w.iter().enumerate() {
                        x2[cell.col + c] -= wv;
                    }
                }
            }
            // z₂ = S_c⁻¹(…)
            solve_lower(&self.sc, m, x2);
            solve_lower_transposed(&self.sc, m, x2);
            // z₁ = A⁻¹(x₁ − Bz₂), B = Λ₀ᵀK₁₂Λ₂
            for l in 0..self.n0 {
                t1.iter_mut().for_each(|v| *v = 0.0);
                for cell in &self.cells[l] {
                    let mut w = vec![0.0; cell.q];
                    lambda_block(&cols.lambdas[cell.factor], cell.q, &x2[cell.col..cell.col + cell.q], &mut w, false);
                    for r in 0..q0 {
                        t1[r] += (0..cell.q).map(|c| cell.k[c * q0 + r] * w[c]).sum::<f64>();
                    }
                }
                lambda_block(lam0, q0, &t1, &mut t0, true);
                let x1l = &mut x1[l * q0..(l + 1) * q0];
                for r in 0..q0 {
                    x1l[r] -= t0[r];
                }
                a_solve(l, x1l);
            }
        }
        out
    }
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
            let (oa, ob) = (cols.column(pr.a, la as usize) - r0, cols.column(pr.b, lb as usize) - r0);
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

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for c in 0..cols {
        for r in 0..rows {
            out[r * cols + c] = a[c * rows + r];
        }
    }
    out
}

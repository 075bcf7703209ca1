//! A rank-revealing (pivoted) Cholesky factor of a symmetric positive
//! semi-definite matrix: A = L Lᵀ with L n×r, r = rank(A).
//!
//! Column j of L is the next pivot's column of the Schur complement of A
//! given the pivots already taken, divided by the square root of its
//! diagonal. The next pivot is the column whose remaining diagonal is the
//! largest fraction of its reference (its own squared norm, in the matrix
//! the caller has in mind): that fraction is sin² of the angle between the
//! column and the span of the columns already taken, so the choice and the
//! stop do not depend on the columns' scales. The factorization stops when
//! every remaining column has a fraction of at most `DEPENDENT`; what is
//! left out of A is then at the level of the rounding of its entries.
//!
//! In the pivots' order L is lower triangular with a positive diagonal: row
//! `pivots[j]` of L is zero after column j, and column j is zero in the rows
//! of the earlier pivots.

/// A column whose squared distance from the span of the columns taken before
/// it is at most this fraction of its reference is taken as dependent. An
/// exactly dependent column keeps a remainder of order 1e-16 (the rounding of
/// the subtractions); a genuine one, a sin² of at least this.
pub const DEPENDENT: f64 = 1e-10;

pub struct PivotedCholesky {
    pub n: usize,
    /// the rows of A taken, in order; r = pivots.len()
    pub pivots: Vec<usize>,
    /// n × r, column-major
    pub l: Vec<f64>,
}

impl PivotedCholesky {
    /// `a`: n×n column-major, both triangles. `reference[t]` > 0 is what
    /// column t's remaining diagonal is compared with (usually A's own
    /// diagonal); a column with reference 0 is never a pivot.
    pub fn new(a: &[f64], n: usize, reference: &[f64]) -> PivotedCholesky {
        debug_assert!(a.len() == n * n && reference.len() == n);
        let mut remaining: Vec<f64> = (0..n).map(|t| a[t * n + t]).collect();
        let mut taken = vec![false; n];
        let mut pivots = Vec::new();
        let mut l = Vec::new();
        while let Some(i) = next_pivot(&remaining, reference, &taken) {
            let column = schur_column(a, n, &l, i);
            let pivot = remaining[i].sqrt();
            taken[i] = true;
            let start = l.len();
            l.extend((0..n).map(|t| if taken[t] { 0.0 } else { column[t] / pivot }));
            l[start + i] = pivot;
            for t in (0..n).filter(|&t| !taken[t]) {
                remaining[t] -= l[start + t] * l[start + t];
            }
            pivots.push(i);
        }
        PivotedCholesky { n, pivots, l }
    }

    pub fn rank(&self) -> usize {
        self.pivots.len()
    }

    /// The h (r values) with L h = x, read off the pivot rows (forward
    /// substitution in the pivots' order). Exact when x lies in L's column
    /// space (A's); otherwise it fits x's pivot rows only.
    pub fn solve_pivot_rows(&self, x: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut h = Vec::with_capacity(self.rank());
        for (j, &row) in self.pivots.iter().enumerate() {
            let s: f64 = (0..j).map(|c| self.l[c * n + row] * h[c]).sum();
            h.push((x[row] - s) / self.l[j * n + row]);
        }
        h
    }

    /// out += L w (w: r values, out: n values).
    pub fn add_times(&self, w: &[f64], out: &mut [f64]) {
        for (column, &wc) in self.l.chunks_exact(self.n).zip(w) {
            for (o, &lt) in out.iter_mut().zip(column) {
                *o += lt * wc;
            }
        }
    }

    /// Lᵀ v (r values).
    pub fn transpose_times(&self, v: &[f64]) -> Vec<f64> {
        self.l
            .chunks_exact(self.n)
            .map(|column| dot(column, v))
            .collect()
    }
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The column not yet taken with the largest remaining fraction of its
/// reference, if that fraction exceeds `DEPENDENT`.
fn next_pivot(remaining: &[f64], reference: &[f64], taken: &[bool]) -> Option<usize> {
    let mut best = None;
    let mut best_fraction = DEPENDENT;
    for t in 0..remaining.len() {
        if taken[t] || !(reference[t] > 0.0) {
            continue;
        }
        let fraction = remaining[t] / reference[t];
        if fraction > best_fraction {
            best_fraction = fraction;
            best = Some(t);
        }
    }
    best
}

/// Column i of the Schur complement of A given the columns of L so far:
/// A[:, i] − Σ_c L[:, c] L[i, c].
fn schur_column(a: &[f64], n: usize, l: &[f64], i: usize) -> Vec<f64> {
    let mut column = a[i * n..(i + 1) * n].to_vec();
    for lc in l.chunks_exact(n) {
        let lic = lc[i];
        if lic != 0.0 {
            for (x, &lt) in column.iter_mut().zip(lc) {
                *x -= lt * lic;
            }
        }
    }
    column
}

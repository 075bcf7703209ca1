//! Dense helpers for the Kenward–Roger algebra (column-major throughout):
//! products that go to faer from `FAER_FROM` on, traces of products, and the
//! eigen-decomposition of the small symmetric information matrix (cyclic
//! Jacobi) for its inverse or Moore–Penrose inverse.

use crate::dense::FAER_FROM;

/// A B for A m×k and B k×n.
pub fn mul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    if m.max(k).max(n) >= FAER_FROM {
        let par = faer::get_global_parallelism();
        let am = faer::MatRef::from_column_major_slice(a, m, k);
        let bm = faer::MatRef::from_column_major_slice(b, k, n);
        let dst = faer::MatMut::from_column_major_slice_mut(&mut out, m, n);
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, am, bm, 1.0, par);
        return out;
    }
    for c in 0..n {
        for t in 0..k {
            let btc = b[c * k + t];
            if btc != 0.0 {
                for r in 0..m {
                    out[c * m + r] += a[t * m + r] * btc;
                }
            }
        }
    }
    out
}

/// Aᵀ B for A k×m and B k×n.
pub fn mul_tn(a: &[f64], b: &[f64], k: usize, m: usize, n: usize) -> Vec<f64> {
    if m.max(k).max(n) >= FAER_FROM {
        let par = faer::get_global_parallelism();
        let am = faer::MatRef::from_column_major_slice(a, k, m);
        let bm = faer::MatRef::from_column_major_slice(b, k, n);
        let mut out = vec![0.0; m * n];
        let dst = faer::MatMut::from_column_major_slice_mut(&mut out, m, n);
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, am.transpose(), bm, 1.0, par);
        return out;
    }
    let mut out = vec![0.0; m * n];
    for c in 0..n {
        for r in 0..m {
            out[c * m + r] = (0..k).map(|t| a[r * k + t] * b[c * k + t]).sum();
        }
    }
    out
}

/// tr(A B) for n×n A and B.
pub fn trace_of_product(a: &[f64], b: &[f64], n: usize) -> f64 {
    let mut s = 0.0;
    for i in 0..n {
        for j in 0..n {
            s += a[j * n + i] * b[i * n + j];
        }
    }
    s
}

/// (A + Aᵀ)/2 in place.
pub fn symmetrize(a: &mut [f64], n: usize) {
    for c in 0..n {
        for r in c + 1..n {
            let v = 0.5 * (a[c * n + r] + a[r * n + c]);
            a[c * n + r] = v;
            a[r * n + c] = v;
        }
    }
}

pub use crate::dense::symmetric_eigen;

/// Σ_{i kept} v_i v_iᵀ / λ_i: the inverse when every eigenvalue is kept, the
/// Moore–Penrose inverse when those with |λ| ≤ tol·max|λ| are dropped.
pub fn inverse_from_eigen(values: &[f64], vectors: &[f64], n: usize, tol: f64) -> Vec<f64> {
    let top = values.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut out = vec![0.0; n * n];
    for (i, &l) in values.iter().enumerate() {
        if !(l.abs() > tol * top) {
            continue;
        }
        let vi = &vectors[i * n..(i + 1) * n];
        for c in 0..n {
            for r in 0..n {
                out[c * n + r] += vi[r] * vi[c] / l;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_reconstructs() {
        let n = 4;
        // A = BᵀB − 3I: symmetric, indefinite
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 + 3) % 11) as f64 / 5.0 - 1.0)
            .collect();
        let mut a = mul_tn(&b, &b, n, n, n);
        for i in 0..n {
            a[i * n + i] -= 3.0;
        }
        let (vals, vecs) = symmetric_eigen(&a, n);
        let inv = inverse_from_eigen(&vals, &vecs, n, 0.0);
        let id = mul(&a, &inv, n, n, n);
        for c in 0..n {
            for r in 0..n {
                let want = if r == c { 1.0 } else { 0.0 };
                assert!((id[c * n + r] - want).abs() < 1e-12, "{:?}", id);
            }
        }
        // A rank-one matrix: its pseudo-inverse is v vᵀ / (vᵀv)²
        let u = [1.0, -2.0, 0.5, 3.0];
        let r1: Vec<f64> = (0..n * n).map(|i| u[i % n] * u[i / n]).collect();
        let (vals, vecs) = symmetric_eigen(&r1, n);
        let pinv = inverse_from_eigen(&vals, &vecs, n, 1.5e-8);
        let uu: f64 = u.iter().map(|x| x * x).sum();
        for i in 0..n * n {
            assert!((pinv[i] - r1[i] / (uu * uu)).abs() < 1e-12);
        }
    }
}

//! Small dense kernels shared by the likelihoods and the optimizer
//! (column-major storage throughout).

/// In-place Cholesky of an n×n matrix (lower factor; the lower triangle is
/// read); false if not positive definite.
#[inline(always)]
pub fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[k * n + j] * a[k * n + j];
        }
        if !(d > 0.0) {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[j * n + i];
            for k in 0..j {
                s -= a[k * n + i] * a[k * n + j];
            }
            a[j * n + i] = s / d;
        }
    }
    true
}

/// Solve L x = b in place (L lower triangular, n×n).
pub fn solve_lower(l: &[f64], n: usize, x: &mut [f64]) {
    for r in 0..n {
        let mut s = x[r];
        for t in 0..r {
            s -= l[t * n + r] * x[t];
        }
        x[r] = s / l[r * n + r];
    }
}

/// Solve Lᵀ x = b in place (L lower triangular, n×n).
pub fn solve_lower_transposed(l: &[f64], n: usize, x: &mut [f64]) {
    for r in (0..n).rev() {
        let mut s = x[r];
        for t in r + 1..n {
            s -= l[r * n + t] * x[t];
        }
        x[r] = s / l[r * n + r];
    }
}

/// Solve L Lᵀ x = b in place, L from `cholesky_lower`.
pub fn cholesky_solve(l: &[f64], n: usize, x: &mut [f64]) {
    solve_lower(l, n, x);
    solve_lower_transposed(l, n, x);
}

/// x with A x = b for symmetric positive definite A; None if A is not.
pub fn solve_spd(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = a.to_vec();
    if !cholesky_lower(&mut l, n) {
        return None;
    }
    let mut x = b.to_vec();
    cholesky_solve(&l, n, &mut x);
    Some(x)
}

/// A⁻¹ for symmetric positive definite A; None if A is not.
pub fn invert_spd(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = a.to_vec();
    if !cholesky_lower(&mut l, n) {
        return None;
    }
    let mut inv = vec![0.0; n * n];
    for c in 0..n {
        let col = &mut inv[c * n..(c + 1) * n];
        col[c] = 1.0;
        cholesky_solve(&l, n, col);
    }
    Some(inv)
}

/// (RᵀR)⁻¹ = R⁻¹R⁻ᵀ for the leading p×p upper-triangular block R of a
/// column-major matrix with leading dimension `ld`.
pub fn upper_gram_inverse(u: &[f64], ld: usize, p: usize) -> Vec<f64> {
    let mut rinv = vec![0.0; p * p];
    for c in 0..p {
        rinv[c * p + c] = 1.0 / u[c * ld + c];
        for r in (0..c).rev() {
            let mut s = 0.0;
            for t in r + 1..=c {
                s += u[t * ld + r] * rinv[c * p + t];
            }
            rinv[c * p + r] = -s / u[r * ld + r];
        }
    }
    let mut out = vec![0.0; p * p];
    for a in 0..p {
        for b in 0..p {
            let mut s = 0.0;
            for t in a.max(b)..p {
                s += rinv[t * p + a] * rinv[t * p + b];
            }
            out[b * p + a] = s;
        }
    }
    out
}

/// A S Aᵀ for column-major n×n matrices.
pub fn sandwich(a: &[f64], s: &[f64], n: usize) -> Vec<f64> {
    let mut tmp = vec![0.0; n * n];
    for r in 0..n {
        for c in 0..n {
            tmp[c * n + r] = (0..n).map(|t| a[t * n + r] * s[c * n + t]).sum();
        }
    }
    let mut out = vec![0.0; n * n];
    for r in 0..n {
        for c in 0..n {
            out[c * n + r] = (0..n).map(|t| tmp[t * n + r] * a[t * n + c]).sum();
        }
    }
    out
}

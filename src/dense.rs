//! Dense kernels shared by the likelihoods and the optimizer (column-major
//! storage throughout). Small matrices (the common case: a few fixed effects,
//! q×q blocks) use plain loops; from `FAER_FROM` rows on (a fixed factor with
//! many levels, the crossed Schur complement) the O(n³) work goes to faer's
//! blocked, vectorised, multi-threaded routines.

/// Size from which the O(n³) kernels call faer.
pub const FAER_FROM: usize = 64;

/// In-place Cholesky of an n×n matrix (lower factor; the lower triangle is
/// read); false if not positive definite.
#[inline(always)]
pub fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    if n >= FAER_FROM {
        return faer_llt(a, n, n); // the upper triangle is left as it was
    }
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

/// faer's lower Cholesky of the leading n×n block of a column-major matrix
/// with leading dimension `ld`, in place; false if not positive definite.
fn faer_llt(a: &mut [f64], n: usize, ld: usize) -> bool {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt::factor;
    let par = faer::get_global_parallelism();
    let mut buf = MemBuffer::new(factor::cholesky_in_place_scratch::<f64>(
        n,
        par,
        Default::default(),
    ));
    let m =
        faer::MatMut::from_column_major_slice_with_stride_mut(&mut a[..(n - 1) * ld + n], n, n, ld);
    factor::cholesky_in_place(
        m,
        Default::default(),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .is_ok()
}

/// (RᵀR)⁻¹ = R⁻¹R⁻ᵀ for the leading p×p upper-triangular block R of a
/// column-major matrix with leading dimension `ld`.
pub fn upper_gram_inverse(u: &[f64], ld: usize, p: usize) -> Vec<f64> {
    if p >= FAER_FROM {
        return faer_upper_gram_inverse(u, ld, p);
    }
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

/// `upper_gram_inverse` by faer: a triangular inverse and one product.
fn faer_upper_gram_inverse(u: &[f64], ld: usize, p: usize) -> Vec<f64> {
    let par = faer::get_global_parallelism();
    let r = faer::MatRef::from_column_major_slice_with_stride(&u[..(p - 1) * ld + p], p, p, ld);
    let mut rinv = vec![0.0; p * p];
    faer::linalg::triangular_inverse::invert_upper_triangular(
        faer::MatMut::from_column_major_slice_mut(&mut rinv, p, p),
        r,
        par,
    );
    let ri = faer::MatRef::from_column_major_slice(&rinv, p, p);
    let mut out = vec![0.0; p * p];
    // Only the lower triangle of the symmetric product (a third of a full product), then mirrored.
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    let dst = faer::MatMut::from_column_major_slice_mut(&mut out, p, p);
    matmul(
        dst,
        BlockStructure::TriangularLower,
        faer::Accum::Replace,
        ri,
        BlockStructure::TriangularUpper,
        ri.transpose(),
        BlockStructure::TriangularLower,
        1.0,
        par,
    );
    for c in 0..p {
        for r in c + 1..p {
            out[r * p + c] = out[c * p + r];
        }
    }
    out
}

/// A S Aᵀ for column-major n×n matrices.
pub fn sandwich(a: &[f64], s: &[f64], n: usize) -> Vec<f64> {
    if n >= FAER_FROM {
        let par = faer::get_global_parallelism();
        let am = faer::MatRef::from_column_major_slice(a, n, n);
        let sm = faer::MatRef::from_column_major_slice(s, n, n);
        let mut tmp = vec![0.0; n * n];
        faer::linalg::matmul::matmul(
            faer::MatMut::from_column_major_slice_mut(&mut tmp, n, n),
            faer::Accum::Replace,
            am,
            sm,
            1.0,
            par,
        );
        let tm = faer::MatRef::from_column_major_slice(&tmp, n, n);
        let mut out = vec![0.0; n * n];
        faer::linalg::matmul::matmul(
            faer::MatMut::from_column_major_slice_mut(&mut out, n, n),
            faer::Accum::Replace,
            tm,
            am.transpose(),
            1.0,
            par,
        );
        return out;
    }
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

/// The leading n×n block of `ls` (column-major, leading dimension `dim`)
/// holds a lower Cholesky factor L; overwrite its lower triangle with that of
/// (L Lᵀ)⁻¹ = L⁻ᵀL⁻¹ (faer: triangular inverse, then a triangular product).
/// Needs n² doubles besides.
pub fn invert_leading(ls: &mut [f64], dim: usize, n: usize) {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    let par = faer::get_global_parallelism();
    let mut linv = vec![0.0; n * n];
    let l = faer::MatRef::from_column_major_slice_with_stride(&ls[..], n, n, dim);
    let dst = faer::MatMut::from_column_major_slice_mut(&mut linv[..], n, n);
    faer::linalg::triangular_inverse::invert_lower_triangular(dst, l, par);
    let li = faer::MatRef::from_column_major_slice(&linv[..], n, n);
    let out = faer::MatMut::from_column_major_slice_with_stride_mut(&mut ls[..], n, n, dim);
    matmul(
        out,
        BlockStructure::TriangularLower,
        faer::Accum::Replace,
        li.transpose(),
        BlockStructure::TriangularUpper,
        li,
        BlockStructure::TriangularLower,
        1.0,
        par,
    );
}

/// Lower Cholesky of the dense Schur complement, in place (column-major n×n,
/// lower triangle read and written). The leading n−1 columns (random effects
/// and X, which must be positive definite) go to faer's blocked, vectorised,
/// multi-threaded factorisation, 20x faster than a plain loop at n = 5,000
/// (measured 0.67 s against 13.4 s); y's row is finished by hand so that a
/// zero pivot there (a perfect fit) is accepted, as in `reml`.
pub fn dense_cholesky(a: &mut [f64], n: usize) -> bool {
    let h = n - 1;
    if h > 0 && !faer_llt(a, h, n) {
        return false;
    }
    // Last row: L[h, j] = (S[h, j] − Σ_{t<j} L[h, t] L[j, t]) / L[j, j]
    for j in 0..h {
        let mut v = a[j * n + h];
        for t in 0..j {
            v -= a[t * n + h] * a[t * n + j];
        }
        a[j * n + h] = v / a[j * n + j];
    }
    let mut d = a[h * n + h];
    for t in 0..h {
        d -= a[t * n + h] * a[t * n + h];
    }
    a[h * n + h] = d.max(0.0).sqrt();
    true
}

/// Eigenvalues and eigenvectors (columns) of a symmetric n×n matrix, by
/// cyclic Jacobi rotations (for small n: variance parameters, contrast rows).
/// Eigenvector m is column m (entries m·n..(m+1)·n).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|c| (0..n).filter(move |&r| r != c).map(move |r| (r, c)))
            .map(|(r, c)| m[c * n + r] * m[c * n + r])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-17 * norm || off == 0.0 {
            break;
        }
        for pi in 0..n {
            for qi in pi + 1..n {
                let apq = m[qi * n + pi];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[pi * n + pi], m[qi * n + qi]);
                // The rotation that zeroes m[p, q]: t = tan φ, the smaller root of t² + 2τt − 1 = 0.
                let tau = (aqq - app) / (2.0 * apq);
                let t = if tau == 0.0 {
                    1.0
                } else {
                    tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt())
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[pi * n + k], m[qi * n + k]);
                    m[pi * n + k] = c * mkp - s * mkq;
                    m[qi * n + k] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[k * n + pi], m[k * n + qi]);
                    m[k * n + pi] = c * mpk - s * mqk;
                    m[k * n + qi] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[pi * n + k], v[qi * n + k]);
                    v[pi * n + k] = c * vkp - s * vkq;
                    v[qi * n + k] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i * n + i]).collect(), v)
}

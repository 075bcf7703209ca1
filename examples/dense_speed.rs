//! Speed of the dense kernels a crossed fit uses, at the InstEval size:
//! `cargo run --release --example dense_speed -- [n]`.
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor;
use faer::{Mat, Par};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).map_or(1159, |s| s.parse().unwrap());
    let mut state = 1u64;
    let mut unif = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let b = Mat::<f64>::from_fn(n, n, |_, _| unif());
    let a0 = &b * b.transpose() + Mat::<f64>::identity(n, n) * (n as f64);
    for par in [Par::Seq, Par::rayon(2)] {
        let mut times = vec![];
        for _ in 0..5 {
            let mut a = a0.clone();
            let t = Instant::now();
            let mut buf = MemBuffer::new(factor::cholesky_in_place_scratch::<f64>(
                n,
                par,
                Default::default(),
            ));
            factor::cholesky_in_place(
                a.as_mut(),
                Default::default(),
                par,
                MemStack::new(&mut buf),
                Default::default(),
            )
            .unwrap();
            let t1 = t.elapsed().as_secs_f64();
            let mut li = Mat::<f64>::zeros(n, n);
            faer::linalg::triangular_inverse::invert_lower_triangular(li.as_mut(), a.as_ref(), par);
            let t2 = t.elapsed().as_secs_f64();
            let mut out = Mat::<f64>::zeros(n, n);
            use faer::linalg::matmul::triangular::{matmul, BlockStructure};
            matmul(
                out.as_mut(),
                BlockStructure::TriangularLower,
                faer::Accum::Replace,
                li.transpose(),
                BlockStructure::TriangularUpper,
                li.as_ref(),
                BlockStructure::TriangularLower,
                1.0,
                par,
            );
            let t3 = t.elapsed().as_secs_f64();
            times.push((t1, t2 - t1, t3 - t2));
        }
        times.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let (c, i, m) = times[2];
        let gf = (n as f64).powi(3) / 3.0 / 1e9;
        println!(
            "{par:?}: chol {c:.4}s ({:.1} GF/s) inv {i:.4}s matmul {m:.4}s",
            gf / c
        );
    }
}

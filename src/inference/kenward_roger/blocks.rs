//! One grouping factor: Σ is block diagonal by level, so every quantity of
//! the module doc is a sum over levels of q×q and q×p algebra on
//! K_l = Z_lᵀZ_l and Z_lᵀ[X y]:
//!
//! ```text
//!   S_l = ΛᵀK_lΛ + I = L_lL_lᵀ,   W_l = L_l⁻¹ΛᵀK_l,   R_l = L_l⁻¹Λᵀ Z_lᵀ[X y]
//!   Ĉ_l = K_l − W_lᵀW_l                          (Z_lᵀHZ_l)
//!   B̂_l = Z_lᵀX − W_lᵀR_l,X                      (Z_lᵀHX)
//!   B̂₂_l = B̂_l − W_lᵀ(L_l⁻¹ΛᵀB̂_l)                (Z_lᵀH²X = T_l B̂_l)
//!   Ĉ₂_l = Ĉ_l − W_lᵀ(L_l⁻¹ΛᵀĈ_l)                (Z_lᵀH²Z_l = T_l Ĉ_l)
//!   σ²[X y]ᵀΣ⁻¹[X y] = [X y]ᵀ[X y] − Σ_l R_lᵀR_l
//!   Â₂ = Â − Σ_l R_l,Xᵀ(L_l⁻¹ΛᵀB̂_l),   Â₃ = Â₂ − Σ_l (L_l⁻¹ΛᵀB̂_l)ᵀ(L_l⁻¹ΛᵀB̂_l)
//!   tr H² = n − Σ_l (q − ‖S_l⁻¹‖²_F)
//! ```
//! (W_lᵀ = K_lΛL_l⁻ᵀ, so W_lᵀ L_l⁻¹Λᵀ = K_lM_l and T_l = I − K_lM_l.)
//! Levels are processed in fixed chunks on rayon's pool and the chunk sums
//! added in order, so the result does not depend on the thread count.

use super::terms::{Param, Sums};
use super::Moments;
use crate::crossed::Factor;
use crate::dense::{cholesky_lower, solve_lower};

/// Levels per parallel task.
const CHUNK: usize = 4096;

struct Scratch {
    klam: Vec<f64>,
    l: Vec<f64>,
    w: Vec<f64>,
    c: Vec<f64>,
    r: Vec<f64>,
    b: Vec<f64>,
    rb: Vec<f64>,
    b2: Vec<f64>,
    rc: Vec<f64>,
    c2: Vec<f64>,
    linv: Vec<f64>,
    y: Vec<f64>,
}

/// What a chunk of levels adds up.
struct Partial {
    rtr_minus: Vec<f64>, // Σ R_lᵀR_l (k×k)
    a2_minus: Vec<f64>,  // Σ R_l,Xᵀ Rb_l (p×p)
    a3_minus: Vec<f64>,  // Σ Rb_lᵀRb_l
    fro: f64,            // Σ (‖S_l⁻¹‖²_F − q)
    sums: Sums,
}

/// X ← L⁻¹ΛᵀX for a q×m X (Λ lower triangular, L from `cholesky_lower`).
fn lt_solve(lam: &[f64], l: &[f64], q: usize, x: &[f64], m: usize, out: &mut [f64]) {
    for j in 0..m {
        let col = &mut out[j * q..(j + 1) * q];
        for a in 0..q {
            col[a] = (a..q).map(|t| lam[a * q + t] * x[j * q + t]).sum();
        }
        solve_lower(l, q, col);
    }
}

/// out ← X − WᵀY for q×m X and Y.
fn minus_wt(w: &[f64], q: usize, x: &[f64], y: &[f64], m: usize, out: &mut [f64]) {
    for j in 0..m {
        for a in 0..q {
            out[j * q + a] =
                x[j * q + a] - (0..q).map(|t| w[a * q + t] * y[j * q + t]).sum::<f64>();
        }
    }
}

/// out += Aᵀ B for q×m A and B (m×m out).
fn add_tn(a: &[f64], b: &[f64], q: usize, m: usize, out: &mut [f64]) {
    for j in 0..m {
        for i in 0..m {
            out[j * m + i] += (0..q).map(|t| a[i * q + t] * b[j * q + t]).sum::<f64>();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn level(
    f: &Factor,
    lam: &[f64],
    l_idx: usize,
    p: usize,
    terms: &[Vec<(usize, usize)>],
    s: &mut Scratch,
    part: &mut Partial,
) {
    let (q, k) = (f.q, p + 1);
    let kl = &f.ztz[l_idx * q * q..(l_idx + 1) * q * q];
    let zr = &f.ztr[l_idx * q * k..(l_idx + 1) * q * k];
    // KΛ, then S = Λᵀ(KΛ) + I = LLᵀ
    for c in 0..q {
        for r in 0..q {
            s.klam[c * q + r] = (c..q).map(|t| kl[t * q + r] * lam[c * q + t]).sum();
        }
    }
    for c in 0..q {
        for r in 0..q {
            s.l[c * q + r] = (r..q)
                .map(|t| lam[r * q + t] * s.klam[c * q + t])
                .sum::<f64>()
                + if r == c { 1.0 } else { 0.0 };
        }
    }
    // S ≥ I: always positive definite
    let ok = cholesky_lower(&mut s.l, q);
    debug_assert!(ok);
    // W = L⁻¹(KΛ)ᵀ; Ĉ = K − WᵀW
    for j in 0..q {
        for t in 0..q {
            s.w[j * q + t] = s.klam[t * q + j];
        }
        solve_lower(&s.l, q, &mut s.w[j * q..(j + 1) * q]);
    }
    for c in 0..q {
        for r in 0..q {
            s.c[c * q + r] =
                kl[c * q + r] - (0..q).map(|t| s.w[r * q + t] * s.w[c * q + t]).sum::<f64>();
        }
    }
    // R = L⁻¹ΛᵀZᵀ[X y]; B̂ = ZᵀX − WᵀR_X; Rb = L⁻¹ΛᵀB̂; B̂₂ = B̂ − WᵀRb
    lt_solve(lam, &s.l, q, zr, k, &mut s.r);
    add_tn(&s.r, &s.r, q, k, &mut part.rtr_minus);
    minus_wt(&s.w, q, zr, &s.r, p, &mut s.b);
    lt_solve(lam, &s.l, q, &s.b, p, &mut s.rb);
    minus_wt(&s.w, q, &s.b, &s.rb, p, &mut s.b2);
    add_tn(&s.r[..q * p], &s.rb, q, p, &mut part.a2_minus);
    add_tn(&s.rb, &s.rb, q, p, &mut part.a3_minus);
    // Ĉ₂ = Ĉ − Wᵀ(L⁻¹ΛᵀĈ)
    lt_solve(lam, &s.l, q, &s.c, q, &mut s.rc);
    minus_wt(&s.w, q, &s.c, &s.rc, q, &mut s.c2);
    // ‖S⁻¹‖²_F = ‖L⁻ᵀL⁻¹‖²_F
    s.linv.iter_mut().for_each(|v| *v = 0.0);
    for j in 0..q {
        s.linv[j * q + j] = 1.0;
        solve_lower(&s.l, q, &mut s.linv[j * q..(j + 1) * q]);
    }
    let mut fro = 0.0;
    for b in 0..q {
        for a in 0..q {
            let v: f64 = (a.max(b)..q)
                .map(|t| s.linv[a * q + t] * s.linv[b * q + t])
                .sum();
            fro += v * v;
        }
    }
    part.fro += fro - q as f64;
    let c2 = &s.c2;
    // Ĉ₂ is symmetric (T_lK_lT_lᵀ); average its two triangles
    let c2_at = |i: usize, j: usize| 0.5 * (c2[j * q + i] + c2[i * q + j]);
    part.sums
        .add_block(terms, q, &s.b, &s.b2, &s.c, &c2_at, &mut s.y);
}

/// The module doc's moments for one factor, from its per-level blocks.
pub fn moments(
    n: f64,
    p: usize,
    f: &Factor,
    lam: &[f64],
    params: &[Param],
    rtr: &[f64],
) -> Moments {
    use rayon::prelude::*;
    let (q, k) = (f.q, p + 1);
    let terms: Vec<Vec<(usize, usize)>> = params.iter().map(|pr| pr.local_terms()).collect();
    let nr = params.len();
    let nchunks = f.nlev.div_ceil(CHUNK);
    let partials: Vec<Partial> = (0..nchunks)
        .into_par_iter()
        .map(|ci| {
            let qq = q * q;
            let mut s = Scratch {
                klam: vec![0.0; qq],
                l: vec![0.0; qq],
                w: vec![0.0; qq],
                c: vec![0.0; qq],
                r: vec![0.0; q * k],
                b: vec![0.0; q * p],
                rb: vec![0.0; q * p],
                b2: vec![0.0; q * p],
                rc: vec![0.0; qq],
                c2: vec![0.0; qq],
                linv: vec![0.0; qq],
                y: vec![0.0; q * p],
            };
            let mut part = Partial {
                rtr_minus: vec![0.0; k * k],
                a2_minus: vec![0.0; p * p],
                a3_minus: vec![0.0; p * p],
                fro: 0.0,
                sums: Sums::new(nr, p),
            };
            for l_idx in ci * CHUNK..((ci + 1) * CHUNK).min(f.nlev) {
                level(f, lam, l_idx, p, &terms, &mut s, &mut part);
            }
            part
        })
        .collect();
    let mut total = Partial {
        rtr_minus: vec![0.0; k * k],
        a2_minus: vec![0.0; p * p],
        a3_minus: vec![0.0; p * p],
        fro: 0.0,
        sums: Sums::new(nr, p),
    };
    for part in &partials {
        for (a, b) in total.rtr_minus.iter_mut().zip(&part.rtr_minus) {
            *a += b;
        }
        for (a, b) in total.a2_minus.iter_mut().zip(&part.a2_minus) {
            *a += b;
        }
        for (a, b) in total.a3_minus.iter_mut().zip(&part.a3_minus) {
            *a += b;
        }
        total.fro += part.fro;
        total.sums.add(&part.sums);
    }
    let a_full: Vec<f64> = rtr
        .iter()
        .zip(&total.rtr_minus)
        .map(|(a, b)| a - b)
        .collect();
    let mut a2 = vec![0.0; p * p];
    let mut a3 = vec![0.0; p * p];
    for j in 0..p {
        for i in 0..p {
            a2[j * p + i] = a_full[j * k + i] - total.a2_minus[j * p + i];
        }
    }
    for i in 0..p * p {
        a3[i] = a2[i] - total.a3_minus[i];
    }
    super::linalg::symmetrize(&mut a2, p);
    super::linalg::symmetrize(&mut a3, p);
    Moments {
        a_full,
        a2,
        a3,
        tr_h2: n + total.fro,
        sums: total.sums,
    }
}

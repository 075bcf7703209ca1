//! Brute force: Σ built as an explicit n×n matrix, G_r as n×n matrices,
//! and P, Q, IE2 (as tr(ΠG_rΠG_s), a different expansion from the code's),
//! W, Φ_A, and the test's E*, V*, ρ, m, λ from Kenward & Roger's formulas;
//! the block implementation must agree to ~1e-9 relative.

use super::*;
use crate::crossed::{Factor, Pair};

/// Rows of a data set: X, y, and per factor each row's level and Z row.
pub(super) struct Rows {
    pub p: usize,
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
    pub nlev: Vec<usize>,
    pub level: Vec<Vec<usize>>,
    pub z: Vec<Vec<Vec<f64>>>,
}

impl Rows {
    pub fn n(&self) -> usize {
        self.y.len()
    }
    pub fn q(&self, f: usize) -> usize {
        self.z[f][0].len()
    }
}

/// The sufficient statistics of `Rows`: per-level blocks, pair cells, [X y]ᵀ[X y].
pub(super) fn statistics(rows: &Rows) -> (Vec<Factor>, Vec<Pair>, Vec<f64>) {
    let (p, n) = (rows.p, rows.n());
    let k = p + 1;
    let xy = |i: usize, j: usize| if j < p { rows.x[i][j] } else { rows.y[i] };
    let mut rtr = vec![0.0; k * k];
    for i in 0..n {
        for c in 0..k {
            for r in 0..k {
                rtr[c * k + r] += xy(i, r) * xy(i, c);
            }
        }
    }
    let nf = rows.nlev.len();
    let mut factors = Vec::new();
    for f in 0..nf {
        let (q, nlev) = (rows.q(f), rows.nlev[f]);
        let mut ztz = vec![0.0; nlev * q * q];
        let mut ztr = vec![0.0; nlev * q * k];
        for i in 0..n {
            let (l, z) = (rows.level[f][i], &rows.z[f][i]);
            for c in 0..q {
                for r in 0..q {
                    ztz[l * q * q + c * q + r] += z[r] * z[c];
                }
            }
            for c in 0..k {
                for r in 0..q {
                    ztr[l * q * k + c * q + r] += z[r] * xy(i, c);
                }
            }
        }
        factors.push(Factor {
            q,
            nlev,
            ztz,
            ztr,
            off: 0,
        });
    }
    let mut pairs = Vec::new();
    for a in 0..nf {
        for b in a + 1..nf {
            let (qa, qb) = (rows.q(a), rows.q(b));
            let mut cells: Vec<(u32, u32)> = (0..n)
                .map(|i| (rows.level[a][i] as u32, rows.level[b][i] as u32))
                .collect();
            cells.sort_unstable();
            cells.dedup();
            let mut blocks = vec![0.0; cells.len() * qa * qb];
            for i in 0..n {
                let key = (rows.level[a][i] as u32, rows.level[b][i] as u32);
                let ci = cells.binary_search(&key).unwrap();
                for c in 0..qb {
                    for r in 0..qa {
                        blocks[ci * qa * qb + c * qa + r] += rows.z[a][i][r] * rows.z[b][i][c];
                    }
                }
            }
            pairs.push(Pair {
                a,
                b,
                cells,
                blocks,
            });
        }
    }
    (factors, pairs, rtr)
}

/// splitmix64 and Box–Muller: reproducible data without a dependency.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
}

// ---- plain dense n×n algebra for the brute force ----

fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for c in 0..n {
        for t in 0..k {
            let v = b[c * k + t];
            for r in 0..m {
                out[c * m + r] += a[t * m + r] * v;
            }
        }
    }
    out
}

fn tr(a: &[f64], n: usize) -> f64 {
    (0..n).map(|i| a[i * n + i]).sum()
}

fn t_of(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for c in 0..n {
        for r in 0..m {
            out[r * n + c] = a[c * m + r];
        }
    }
    out
}

/// Everything the textbook formulas give, from explicit n×n matrices.
pub(super) struct Brute {
    pub vcov: Vec<f64>,
    pub vcov_adj: Vec<f64>,
    pub beta: Vec<f64>,
    pub w: Vec<f64>,
    pub np: usize,
    p_mats: Vec<Vec<f64>>,
}

pub(super) fn brute_force(
    rows: &Rows,
    lambdas: &[Vec<f64>],
    blocks: &[Vec<usize>],
    sigma2: f64,
) -> Brute {
    let (n, p) = (rows.n(), rows.p);
    let nf = rows.nlev.len();
    // Z (n × qt), factor by factor, level by level
    let qt: usize = (0..nf).map(|f| rows.nlev[f] * rows.q(f)).sum();
    let mut z = vec![0.0; n * qt];
    let mut off = vec![0; nf];
    let mut o = 0;
    for f in 0..nf {
        off[f] = o;
        o += rows.nlev[f] * rows.q(f);
    }
    for f in 0..nf {
        let q = rows.q(f);
        for i in 0..n {
            for a in 0..q {
                z[(off[f] + rows.level[f][i] * q + a) * n + i] = rows.z[f][i][a];
            }
        }
    }
    // G_r = Z_f (I ⊗ E) Z_fᵀ, φ_r = D_f[i, j]; then G = I, φ = σ²
    let mut gs: Vec<Vec<f64>> = Vec::new();
    let mut phis = Vec::new();
    for f in 0..nf {
        let q = rows.q(f);
        let lam = &lambdas[f];
        let d: Vec<f64> = (0..q * q)
            .map(|ij| {
                sigma2
                    * (0..q)
                        .map(|t| lam[t * q + ij % q] * lam[t * q + ij / q])
                        .sum::<f64>()
            })
            .collect();
        let mut start = 0;
        for &size in &blocks[f] {
            for j in start..start + size {
                for i in j..start + size {
                    let mut e = vec![0.0; qt * qt];
                    for l in 0..rows.nlev[f] {
                        let base = off[f] + l * q;
                        e[(base + j) * qt + base + i] = 1.0;
                        e[(base + i) * qt + base + j] = 1.0;
                    }
                    gs.push(mm(&mm(&z, &e, n, qt, qt), &t_of(&z, n, qt), n, qt, n));
                    phis.push(d[j * q + i]);
                }
            }
            start += size;
        }
    }
    let mut id = vec![0.0; n * n];
    for i in 0..n {
        id[i * n + i] = 1.0;
    }
    gs.push(id);
    phis.push(sigma2);
    let np = gs.len();
    let mut sigma = vec![0.0; n * n];
    for (g, phi) in gs.iter().zip(&phis) {
        for i in 0..n * n {
            sigma[i] += phi * g[i];
        }
    }
    let si = invert_spd(&sigma, n).unwrap();
    let x: Vec<f64> = (0..p)
        .flat_map(|j| (0..n).map(move |i| (j, i)))
        .map(|(j, i)| rows.x[i][j])
        .collect();
    let xt = t_of(&x, n, p);
    let six = mm(&si, &x, n, n, p);
    let phi = invert_spd(&mm(&xt, &six, p, n, p), p).unwrap();
    let beta = mm(&phi, &mm(&t_of(&six, n, p), &rows.y, p, n, 1), p, p, 1);
    // Σ⁻¹G_rΣ⁻¹X and Π = Σ⁻¹ − Σ⁻¹XΦXᵀΣ⁻¹
    let sgs: Vec<Vec<f64>> = gs
        .iter()
        .map(|g| mm(&mm(&si, g, n, n, n), &six, n, n, p))
        .collect();
    let p_mats: Vec<Vec<f64>> = sgs
        .iter()
        .map(|o| mm(&xt, o, p, n, p).iter().map(|v| -v).collect())
        .collect();
    let mut pi = si.clone();
    let corr = mm(&mm(&six, &phi, n, p, p), &t_of(&six, n, p), n, p, n);
    for i in 0..n * n {
        pi[i] -= corr[i];
    }
    let pg: Vec<Vec<f64>> = gs.iter().map(|g| mm(&pi, g, n, n, n)).collect();
    let mut ie2 = vec![0.0; np * np];
    for r in 0..np {
        for s in 0..np {
            ie2[s * np + r] = tr(&mm(&pg[r], &pg[s], n, n, n), n);
        }
    }
    let w: Vec<f64> = invert_spd(&ie2, np)
        .unwrap()
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    let mut u = vec![0.0; p * p];
    for r in 0..np {
        // G_rΣ⁻¹X, so Q_rs = (Σ⁻¹G_rΣ⁻¹X)ᵀ (G_sΣ⁻¹X)
        for s in 0..np {
            let q_rs = mm(&t_of(&sgs[r], n, p), &mm(&gs[s], &six, n, n, p), p, n, p);
            let ppp = mm(&mm(&p_mats[r], &phi, p, p, p), &p_mats[s], p, p, p);
            for i in 0..p * p {
                u[i] += w[s * np + r] * (q_rs[i] - ppp[i]);
            }
        }
    }
    let a = mm(&mm(&phi, &u, p, p, p), &phi, p, p, p);
    let vcov_adj = (0..p * p).map(|i| phi[i] + 2.0 * a[i]).collect();
    Brute {
        vcov: phi,
        vcov_adj,
        beta,
        w,
        np,
        p_mats,
    }
}

impl Brute {
    /// Kenward & Roger's (1997) E*, V*, ρ, m, λ and F for L (ℓ×p row-major).
    pub fn test(&self, l: &[f64], rows: usize) -> (f64, f64, f64) {
        let p = self.beta.len();
        let lm = t_of(l, p, rows); // ℓ×p column-major
        let lt = l.to_vec();
        let lpl = mm(&mm(&lm, &self.vcov, rows, p, p), &lt, rows, p, rows);
        let theta = mm(
            &mm(&lt, &invert_spd(&lpl, rows).unwrap(), p, rows, rows),
            &lm,
            p,
            rows,
            p,
        );
        let u: Vec<Vec<f64>> = self
            .p_mats
            .iter()
            .map(|pm| {
                mm(
                    &mm(&mm(&theta, &self.vcov, p, p, p), pm, p, p, p),
                    &self.vcov,
                    p,
                    p,
                    p,
                )
            })
            .collect();
        let (mut a1, mut a2) = (0.0, 0.0);
        for r in 0..self.np {
            for s in 0..self.np {
                a1 += self.w[s * self.np + r] * tr(&u[r], p) * tr(&u[s], p);
                a2 += self.w[s * self.np + r] * tr(&mm(&u[r], &u[s], p, p, p), p);
            }
        }
        let ell = rows as f64;
        let b = (a1 + 6.0 * a2) / (2.0 * ell);
        let g = ((ell + 1.0) * a1 - (ell + 4.0) * a2) / ((ell + 2.0) * a2);
        let d = 3.0 * ell + 2.0 * (1.0 - g);
        let (c1, c2, c3) = (g / d, (ell - g) / d, (ell + 2.0 - g) / d);
        let e_star = 1.0 / (1.0 - a2 / ell);
        let v_star = 2.0 / ell * (1.0 + c1 * b) / ((1.0 - c2 * b).powi(2) * (1.0 - c3 * b));
        let rho = v_star / (2.0 * e_star * e_star);
        let m = 4.0 + (ell + 2.0) / (ell * rho - 1.0);
        let lambda = m / (e_star * (m - 2.0));
        let lb = mm(&lm, &self.beta, rows, p, 1);
        let lal = mm(&mm(&lm, &self.vcov_adj, rows, p, p), &lt, rows, p, rows);
        let sol = crate::dense::solve_spd(&lal, &lb, rows).unwrap();
        let f: f64 = lb.iter().zip(&sol).map(|(a, b)| a * b).sum::<f64>() / ell;
        (lambda * f, m, lambda)
    }
}

pub(super) fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn close(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Random data: factor 0 with `q0` Z columns (intercept, x1, …), optional
/// factors 1 and 2 with an intercept each; X = [1, x1, x2].
fn simulate(seed: u64, nlev: &[usize], q0: usize) -> Rows {
    let mut rng = Rng(seed);
    let nf = nlev.len();
    let mut rows = Rows {
        p: 3,
        x: vec![],
        y: vec![],
        nlev: nlev.to_vec(),
        level: vec![vec![]; nf],
        z: vec![vec![]; nf],
    };
    let effects: Vec<Vec<f64>> = (0..nf)
        .map(|f| {
            (0..nlev[f] * if f == 0 { q0 } else { 1 })
                .map(|_| rng.normal())
                .collect()
        })
        .collect();
    for l0 in 0..nlev[0] {
        // unequal group sizes, 3 to 14 rows
        for _ in 0..3 + (l0 * 5) % 12 {
            let x1 = 2.0 * rng.normal() + 1.0;
            let x2 = rng.uniform() * 10.0;
            let mut y = 1.0 + 0.5 * x1 - 0.3 * x2 + 0.7 * rng.normal();
            let z0: Vec<f64> = (0..q0)
                .map(|a| if a == 0 { 1.0 } else { x1.powi(a as i32) })
                .collect();
            y += (0..q0)
                .map(|a| z0[a] * effects[0][l0 * q0 + a] * if a == 0 { 1.0 } else { 0.4 })
                .sum::<f64>();
            rows.level[0].push(l0);
            rows.z[0].push(z0);
            for f in 1..nf {
                let l = rng.below(nlev[f]);
                y += 0.8 * effects[f][l];
                rows.level[f].push(l);
                rows.z[f].push(vec![1.0]);
            }
            rows.x.push(vec![1.0, x1, x2]);
            rows.y.push(y);
        }
    }
    rows
}

/// The block implementation against the brute force, for a few L.
fn agree(rows: &Rows, lambdas: &[Vec<f64>], blocks: &[Vec<usize>], sigma2: f64) -> KenwardRoger {
    let (factors, pairs, rtr) = statistics(rows);
    let input = KrInput {
        n: rows.n() as f64,
        p: rows.p,
        factors: &factors,
        pairs: &pairs,
        rtr: &rtr,
        lambdas,
        blocks,
        sigma2,
    };
    let kr = KenwardRoger::new(&input).unwrap();
    let bf = brute_force(rows, lambdas, blocks, sigma2);
    let tol = 1e-9;
    assert!(
        rel_diff(&kr.vcov, &bf.vcov) < tol,
        "vcov {:?} {:?}",
        kr.vcov,
        bf.vcov
    );
    assert!(
        rel_diff(&kr.vcov_adj, &bf.vcov_adj) < tol,
        "vcov_adj {:?} {:?}",
        kr.vcov_adj,
        bf.vcov_adj
    );
    assert!(rel_diff(&kr.beta, &bf.beta) < tol);
    assert_eq!(kr.n_params, bf.np);
    assert!(rel_diff(&kr.w, &bf.w) < tol, "W {:?} {:?}", kr.w, bf.w);
    // Φ_A differs from Φ: the test would not see a missing adjustment otherwise
    assert!(rel_diff(&kr.vcov_adj, &kr.vcov) > 1e-4);
    let ls: [(&[f64], usize); 4] = [
        (&[0.0, 1.0, 0.0], 1),
        (&[1.0, 0.0, 0.0], 1),
        (&[0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 2),
        (&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 1.0], 3),
    ];
    for (l, r) in ls {
        let t = kr.test(l, r, &kr.beta).unwrap();
        let (f, m, lambda) = bf.test(l, r);
        assert!(
            close(t.f_value, f) < tol && close(t.den_df, m) < tol && close(t.scale, lambda) < tol,
            "{t:?} vs F {f} m {m} λ {lambda}"
        );
        assert!(t.p_value > 0.0 && t.p_value <= 1.0);
        if r == 1 {
            assert!((t.scale - 1.0).abs() < 1e-12, "λ = 1 for one row");
            let c = kr.contrast(l, &kr.beta).unwrap();
            let var: f64 = (0..3)
                .map(|j| {
                    (0..3)
                        .map(|i| l[i] * bf.vcov_adj[j * 3 + i] * l[j])
                        .sum::<f64>()
                })
                .sum();
            assert!(close(c.std_error, var.sqrt()) < tol && close(c.df, m) < tol);
            assert!(close(c.t_value * c.t_value, t.f_value) < tol);
            assert!(
                close(c.p_value, t.p_value) < 1e-8,
                "{} {}",
                c.p_value,
                t.p_value
            );
        }
    }
    kr
}

#[test]
fn one_factor_intercept_and_slope() {
    let rows = simulate(1, &[7], 2);
    let lam = vec![vec![1.3, 0.2, 0.0, 0.35]];
    agree(&rows, &lam, &[vec![2]], 0.6);
}

#[test]
fn one_factor_uncorrelated_bars() {
    // (1 + x1 || g): Λ diagonal, two variance parameters and σ²
    let rows = simulate(2, &[8], 2);
    let lam = vec![vec![0.9, 0.0, 0.0, 0.3]];
    let kr = agree(&rows, &lam, &[vec![1, 1]], 1.4);
    assert_eq!(kr.n_params, 3);
}

#[test]
fn one_factor_three_columns_two_bars() {
    // (1 + x1 | g) + (0 + x1² | g): bars [2, 1]
    let rows = simulate(3, &[9], 3);
    let lam = vec![vec![1.1, -0.3, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.2]];
    let kr = agree(&rows, &lam, &[vec![2, 1]], 0.8);
    assert_eq!(kr.n_params, 5);
}

#[test]
fn crossed_two_factors() {
    // (1 + x1 | g) + (1 | h), h crossed with g (random assignment)
    let rows = simulate(4, &[6, 4], 2);
    let lam = vec![vec![1.2, 0.25, 0.0, 0.3], vec![0.7]];
    agree(&rows, &lam, &[vec![2], vec![1]], 0.9);
}

#[test]
fn crossed_three_factors_uncorrelated() {
    let rows = simulate(5, &[5, 4, 3], 2);
    let lam = vec![vec![1.0, 0.0, 0.0, 0.4], vec![0.6], vec![1.5]];
    agree(&rows, &lam, &[vec![1, 1], vec![1], vec![1]], 0.5);
}

#[test]
fn one_factor_dense_path_equals_level_path() {
    let rows = simulate(6, &[10], 2);
    let (factors, pairs, rtr) = statistics(&rows);
    let lam = vec![vec![0.8, 0.1, 0.0, 0.2]];
    let bl = vec![vec![2]];
    let input = KrInput {
        n: rows.n() as f64,
        p: 3,
        factors: &factors,
        pairs: &pairs,
        rtr: &rtr,
        lambdas: &lam,
        blocks: &bl,
        sigma2: 1.1,
    };
    let kr = KenwardRoger::new(&input).unwrap();
    let params = terms::parameters(&bl);
    let mo = dense::moments(input.n, 3, &factors, &pairs, &lam, &params, &rtr);
    let kd = KenwardRoger::assemble(3, 4, 1.1, mo).unwrap();
    assert!(rel_diff(&kd.vcov_adj, &kr.vcov_adj) < 1e-11);
    assert!(rel_diff(&kd.w, &kr.w) < 1e-11);
}

#[test]
fn invariant_to_the_scale_of_y() {
    // y·c: Φ_A scales by c², df and λ do not change.
    let mut rows = simulate(7, &[6], 2);
    let lam = vec![vec![1.0, 0.3, 0.0, 0.5]];
    let bl = vec![vec![2]];
    let run = |rows: &Rows, s2: f64| {
        let (factors, pairs, rtr) = statistics(rows);
        let input = KrInput {
            n: rows.n() as f64,
            p: 3,
            factors: &factors,
            pairs: &pairs,
            rtr: &rtr,
            lambdas: &lam,
            blocks: &bl,
            sigma2: s2,
        };
        let kr = KenwardRoger::new(&input).unwrap();
        let t = kr
            .test(&[0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 2, &kr.beta)
            .unwrap();
        (kr.vcov_adj, t)
    };
    let (v1, t1) = run(&rows, 0.7);
    let c = 1e150;
    rows.y.iter_mut().for_each(|y| *y *= c);
    let (v2, t2) = run(&rows, 0.7 * c * c);
    let scaled: Vec<f64> = v2.iter().map(|v| v / (c * c)).collect();
    assert!(rel_diff(&scaled, &v1) < 1e-12);
    assert!(
        close(t2.den_df, t1.den_df) < 1e-12
            && close(t2.scale, t1.scale) < 1e-12
            && close(t2.f_value, t1.f_value) < 1e-10
    );
}

#[test]
fn confounded_factor_uses_the_pseudo_inverse_and_gives_the_exact_f_test() {
    // One row per level, q = 1: G = ZZᵀ = I = G_σ, so Σ = (d + σ²)I, IE2 is
    // singular and W its (doubled) pseudo-inverse. KR must then reduce to the
    // exact OLS F test: Φ_A = Φ, m = n − p, λ = 1.
    let mut rng = Rng(21);
    let n = 25;
    let mut rows = Rows {
        p: 3,
        x: vec![],
        y: vec![],
        nlev: vec![n],
        level: vec![(0..n).collect()],
        z: vec![vec![vec![1.0]; n]],
    };
    for _ in 0..n {
        let (x1, x2) = (rng.normal(), rng.uniform());
        rows.x.push(vec![1.0, x1, x2]);
        rows.y.push(0.3 * x1 + rng.normal());
    }
    let (factors, pairs, rtr) = statistics(&rows);
    let input = KrInput {
        n: n as f64,
        p: 3,
        factors: &factors,
        pairs: &pairs,
        rtr: &rtr,
        lambdas: &[vec![0.8]],
        blocks: &[vec![1]],
        sigma2: 0.9,
    };
    let kr = KenwardRoger::new(&input).unwrap();
    assert!(kr.condi < 1e-10, "condi {}", kr.condi);
    assert!(rel_diff(&kr.vcov_adj, &kr.vcov) < 1e-10);
    for (l, r) in [
        (&[0.0, 1.0, 0.0][..], 1),
        (&[0.0, 1.0, 0.0, 0.0, 0.0, 1.0][..], 2),
    ] {
        let t = kr.test(l, r, &kr.beta).unwrap();
        assert!(
            close(t.den_df, (n - 3) as f64) < 1e-9 && close(t.scale, 1.0) < 1e-9,
            "{t:?}"
        );
    }
}

#[test]
fn rejects_bad_input() {
    let rows = simulate(8, &[4, 3], 1);
    let (factors, pairs, rtr) = statistics(&rows);
    let ok_lam = vec![vec![1.0], vec![1.0]];
    let bl = vec![vec![1], vec![1]];
    let mk = |lam: &[Vec<f64>], s2: f64| {
        KenwardRoger::new(&KrInput {
            n: rows.n() as f64,
            p: 3,
            factors: &factors,
            pairs: &pairs,
            rtr: &rtr,
            lambdas: lam,
            blocks: &bl,
            sigma2: s2,
        })
    };
    assert!(mk(&ok_lam, 1.0).is_ok());
    assert!(mk(&ok_lam, 0.0).is_err());
    assert!(mk(&[vec![1.0]], 1.0).is_err());
    // Λ nonzero outside its bars
    let rows2 = simulate(9, &[5], 2);
    let (f2, p2, r2) = statistics(&rows2);
    let e = KenwardRoger::new(&KrInput {
        n: rows2.n() as f64,
        p: 3,
        factors: &f2,
        pairs: &p2,
        rtr: &r2,
        lambdas: &[vec![1.0, 0.5, 0.0, 1.0]],
        blocks: &[vec![1, 1]],
        sigma2: 1.0,
    });
    assert!(e.unwrap_err().0.contains("outside"));
    // a rank-deficient L
    let kr = mk(&ok_lam, 1.0).unwrap();
    assert!(kr
        .test(&[0.0, 1.0, 0.0, 0.0, 2.0, 0.0], 2, &kr.beta)
        .is_err());
}

#[test]
fn dense_size_bound() {
    // m = 5,001 columns after the first factor, qt = 10,001: refused with the
    // reason; qt = 5,001 with m = 1 (refused by the former qt×qt path) runs.
    let f = |nlev: usize| Factor {
        q: 1,
        nlev,
        ztz: vec![1.0; nlev],
        ztr: vec![0.0; nlev * 2],
        off: 0,
    };
    let run = |factors: &[Factor]| {
        let pairs = vec![Pair {
            a: 0,
            b: 1,
            cells: vec![(0, 0)],
            blocks: vec![1.0],
        }];
        let n = factors[0].nlev as f64;
        KenwardRoger::new(&KrInput {
            n,
            p: 1,
            factors,
            pairs: &pairs,
            rtr: &[n, 0.0, 0.0, 1.0],
            lambdas: &[vec![1.0], vec![1.0]],
            blocks: &[vec![1], vec![1]],
            sigma2: 1.0,
        })
    };
    let err = run(&[f(5_000), f(5_001)]).unwrap_err();
    assert!(
        err.0.contains("25000000") && err.0.contains("5001 × 10001"),
        "{err}"
    );
    assert!(run(&[f(5_000), f(1)]).is_ok());
}

/// Crossed, nested and random-slope factors: factor 0 (1 + x1 | g0), n0
/// levels, nested in factor 3 (1 | g3); factor 1 (1 + x1 | g1) or
/// (1 + x1 || g1) crossed with g0; factor 2 (1 | g2) nested in g1.
fn crossed_nested_slopes(seed: u64, n0: usize, n1: usize) -> Rows {
    let mut rng = Rng(seed);
    let nlev = vec![n0, n1, 3 * n1, 5];
    let q = [2, 2, 1, 1];
    let mut rows = Rows {
        p: 3,
        x: vec![],
        y: vec![],
        nlev: nlev.clone(),
        level: vec![vec![]; 4],
        z: vec![vec![]; 4],
    };
    let effects: Vec<Vec<f64>> = (0..4)
        .map(|f| (0..nlev[f] * q[f]).map(|_| rng.normal()).collect())
        .collect();
    for l0 in 0..nlev[0] {
        for _ in 0..3 + (l0 * 7) % 9 {
            let x1 = 2.0 * rng.normal() + 1.0;
            let x2 = rng.uniform() * 10.0;
            let l1 = rng.below(nlev[1]);
            let lv = [l0, l1, l1 * 3 + rng.below(3), l0 % nlev[3]];
            let mut y = 1.0 + 0.5 * x1 - 0.3 * x2 + 0.7 * rng.normal();
            for f in 0..4 {
                let z: Vec<f64> = (0..q[f]).map(|a| if a == 0 { 1.0 } else { x1 }).collect();
                y += (0..q[f])
                    .map(|a| z[a] * effects[f][lv[f] * q[f] + a] * if a == 0 { 0.8 } else { 0.3 })
                    .sum::<f64>();
                rows.level[f].push(lv[f]);
                rows.z[f].push(z);
            }
            rows.x.push(vec![1.0, x1, x2]);
            rows.y.push(y);
        }
    }
    rows
}

#[test]
fn crossed_path_equals_dense_path() {
    // factor 1 uncorrelated (two variances), then correlated (a covariance on the rest too)
    // (600, 60): several chunks of levels and bands of N₂₂'s columns (m = 305)
    for (seed, bars1, lam1, n0, n1) in [
        (31, vec![1, 1], vec![0.8, 0.0, 0.0, 0.25], 40, 8),
        (32, vec![2], vec![0.8, -0.2, 0.0, 0.25], 40, 8),
        (33, vec![2], vec![0.8, -0.2, 0.0, 0.25], 600, 60),
    ] {
        let lam = vec![vec![1.1, 0.3, 0.0, 0.4], lam1, vec![0.6], vec![0.9]];
        let bl = vec![vec![2], bars1, vec![1], vec![1]];
        let rows = crossed_nested_slopes(seed, n0, n1);
        let (factors, pairs, rtr) = statistics(&rows);
        let params = terms::parameters(&bl);
        let n = rows.n() as f64;
        let fast = crossed::moments(n, 3, &factors, &pairs, &lam, &params, &rtr);
        let slow = dense::moments(n, 3, &factors, &pairs, &lam, &params, &rtr);
        let pieces = [
            ("a_full", &fast.a_full, &slow.a_full),
            ("a2", &fast.a2, &slow.a2),
            ("a3", &fast.a3, &slow.a3),
            ("P", &fast.sums.p_mats, &slow.sums.p_mats),
            ("Q", &fast.sums.q_mats, &slow.sums.q_mats),
            ("Qσ", &fast.sums.q_sigma, &slow.sums.q_sigma),
            ("K", &fast.sums.k, &slow.sums.k),
            ("Kσ", &fast.sums.k_sigma, &slow.sums.k_sigma),
        ];
        let mut worst = 0.0f64;
        for (name, a, b) in pieces {
            let d = rel_diff(a, b);
            assert!(d < 1e-10, "{name}: {d:e}\n{a:?}\n{b:?}");
            worst = worst.max(d);
        }
        let d = close(fast.tr_h2, slow.tr_h2);
        assert!(d < 1e-12, "tr H²: {} {}", fast.tr_h2, slow.tr_h2);
        let kf = KenwardRoger::assemble(3, 4, 0.9, fast).unwrap();
        let kd = KenwardRoger::assemble(3, 4, 0.9, slow).unwrap();
        let dv = rel_diff(&kf.vcov_adj, &kd.vcov_adj).max(rel_diff(&kf.w, &kd.w));
        eprintln!(
            "crossed vs dense (seed {seed}): moments {worst:e}, tr H² {d:e}, vcov_adj and W {dv:e}"
        );
        assert!(dv < 1e-10);
        if n0 < 100 {
            agree(&rows, &lam, &bl, 0.9);
        }
    }
}

/// O(levels): 200,000 levels of one factor (q = 2, p = 3, 800,000 rows),
/// statistics generated level by level. Measured: 2.0 s debug, 0.05 s
/// release (500,000 levels: 4.7 s debug, 0.11–0.13 s release).
#[test]
fn scale_200k_levels() {
    let nlev = 200_000;
    let (q, p) = (2, 3);
    let k = p + 1;
    let mut rng = Rng(11);
    let mut ztz = vec![0.0; nlev * q * q];
    let mut ztr = vec![0.0; nlev * q * k];
    let mut rtr = vec![0.0; k * k];
    let mut n = 0.0;
    for l in 0..nlev {
        let b0 = rng.normal();
        let b1 = 0.3 * rng.normal();
        for _ in 0..2 + l % 5 {
            let x1 = rng.normal();
            let x2 = rng.normal() + 2.0;
            let y = 1.0 + 0.5 * x1 - 0.25 * x2 + b0 + b1 * x1 + 0.7 * rng.normal();
            let (xy, z) = ([1.0, x1, x2, y], [1.0, x1]);
            for c in 0..q {
                for r in 0..q {
                    ztz[l * q * q + c * q + r] += z[r] * z[c];
                }
            }
            for c in 0..k {
                for r in 0..q {
                    ztr[l * q * k + c * q + r] += z[r] * xy[c];
                }
                for r in 0..k {
                    rtr[c * k + r] += xy[r] * xy[c];
                }
            }
            n += 1.0;
        }
    }
    let factors = vec![Factor {
        q,
        nlev,
        ztz,
        ztr,
        off: 0,
    }];
    let lam = vec![vec![1.4, 0.19, 0.0, 0.37]];
    let input = KrInput {
        n,
        p,
        factors: &factors,
        pairs: &[],
        rtr: &rtr,
        lambdas: &lam,
        blocks: &[vec![2]],
        sigma2: 0.5,
    };
    let t0 = std::time::Instant::now();
    let kr = KenwardRoger::new(&input).unwrap();
    let c = kr.contrast(&[0.0, 1.0, 0.0], &kr.beta).unwrap();
    eprintln!(
        "Kenward-Roger at {nlev} levels ({n} rows): {:.3} s; x1: se {} df {}",
        t0.elapsed().as_secs_f64(),
        c.std_error,
        c.df
    );
    assert!(c.df > 1e4 && c.df.is_finite());
    assert!((c.estimate - 0.5).abs() < 0.01);
}

/// The benchmark's shape (bench_inference.py --crossed): 73,421 rows, 2,972 ×
/// 1,128 crossed levels and 28 grouping the second, p = 2 (m = 1,156).
/// Measured in release on 2 shared cores: 0.4–0.6 s (the qt×qt path: ~4 s).
/// `cargo test --release -- --ignored kenward_roger_at_the_benchmark_shape --nocapture`
#[test]
#[ignore]
fn kenward_roger_at_the_benchmark_shape() {
    let mut rng = Rng(5);
    let nlev = vec![2972, 1128, 28];
    let mut rows = Rows {
        p: 2,
        x: vec![],
        y: vec![],
        nlev: nlev.clone(),
        level: vec![vec![]; 3],
        z: vec![vec![]; 3],
    };
    for i in 0..73_421 {
        let s = i % 2972;
        let d = (rng.below(1128) + s) % 1128;
        let ds = d % 28;
        rows.level[0].push(s);
        rows.level[1].push(d);
        rows.level[2].push(ds);
        for f in 0..3 {
            rows.z[f].push(vec![1.0]);
        }
        let sv = if ds % 2 == 0 { 1.0 } else { 0.0 };
        rows.x.push(vec![1.0, sv]);
        rows.y.push(rng.normal() + sv);
    }
    let (factors, pairs, rtr) = statistics(&rows);
    let lam = vec![vec![0.5], vec![0.4], vec![0.2]];
    let bl = vec![vec![1], vec![1], vec![1]];
    let input = KrInput {
        n: rows.n() as f64,
        p: 2,
        factors: &factors,
        pairs: &pairs,
        rtr: &rtr,
        lambdas: &lam,
        blocks: &bl,
        sigma2: 1.0,
    };
    let t0 = std::time::Instant::now();
    let kr = KenwardRoger::new(&input).unwrap();
    eprintln!("KR {:.3} s {:?}", t0.elapsed().as_secs_f64(), kr.vcov_adj);
}

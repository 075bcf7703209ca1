//! A parametric bootstrap replicate, drawn as statistics (no rows).
//!
//! # The replicate
//! At the fit's β̂, σ̂ and relative covariance factors Λ_f (lower triangular),
//!
//! ```text
//!   y* = Xβ̂ + Zb* + ε*,   b*_{f,l} = σ̂ Λ_f z_{f,l},  z_{f,l} ~ N(0, I_{q_f}),   ε* ~ N(0, σ̂² I_n),
//! ```
//! all independent, so b*_{f,l} ~ N(0, σ̂² Λ_fΛ_fᵀ). Of the statistics a fit
//! reads (`crossed::Factor`, `crossed::Pair`, [X y]ᵀ[X y]) only those that
//! involve y change: Z_{f,l}ᵀy* (the last column of each level's ztr), Xᵀy*
//! and y*ᵀy* (the last column of rtr). ZᵀZ, ZᵀX and XᵀX stay as they are.
//! With M = [Z X] (n × N; N = Σ_f nlev_f q_f + p), G = MᵀM, v = [b*; β̂]
//! and c = Mᵀε*,
//!
//! ```text
//!   Mᵀy*  = G v + c                                  ([Zᵀy*; Xᵀy*])
//!   y*ᵀy* = ‖Mv‖² + 2 (Mv)ᵀε* + ε*ᵀε* = vᵀG v + 2 vᵀc + ε*ᵀε*
//! ```
//! (vᵀc = b*ᵀZᵀε* + β̂ᵀXᵀε*). G is in the statistics: factor 0's levels'
//! ZᵀZ blocks, the cells' Z_aᵀZ_b blocks, the ztr's X columns and XᵀX. What
//! remains to draw is (c, ε*ᵀε*), jointly.
//!
//! # The noise: (c, ε*ᵀε*) from G alone
//! Write ε* = σ̂ e, e ~ N(0, I_n), and let r = rank M, Q (n × r) an
//! orthonormal basis of M's column space. Then M = QQᵀM, so c = σ̂ (MᵀQ)(Qᵀe),
//! and MᵀQ (N × r, rank r) has (MᵀQ)(MᵀQ)ᵀ = MᵀQQᵀM = G. For any factor
//! G = L Lᵀ with L N × r of full column rank, two N × r matrices with the
//! same Gram matrix differ by an orthogonal O (r × r): MᵀQ = L O. Hence
//!
//! ```text
//!   c       = σ̂ L u,                     u = O Qᵀe ~ N(0, I_r)
//!   ε*ᵀε*   = σ̂² (‖Qᵀe‖² + ‖(I − QQᵀ)e‖²) = σ̂² (uᵀu + χ²_{n−r})
//! ```
//! where (I − QQᵀ)e is independent of Qᵀe (orthogonal projections of a
//! standard normal vector), so the χ² is independent of u. Drawing u and
//! one χ²_{n−r} gives (c, ε*ᵀε*) with exactly their joint law. The rank need
//! not be found exactly: a zero column of L adds a term to uᵀu and takes one
//! degree of freedom from the χ², the same law; what matters is LLᵀ = G.
//!
//! # The factor L, blockwise
//! Order M's columns as [Z₀ | Z_D X]: factor 0's (q₀ per level, level by
//! level), then the other factors' (D, m columns) and X (p). Factor 0's
//! levels have disjoint rows, so G₁₁ = diag_i(A_i), A_i = Z_{0,i}ᵀZ_{0,i}
//! (q₀ × q₀), and level i's row of G₁₂ is B_i = Z_{0,i}ᵀ[Z_D X], nonzero only
//! on the columns of the levels that share rows with level i (its cells) and
//! on X. Per level, a pivoted Cholesky A_i = W_i W_iᵀ (W_i q₀ × r_i; A_i is
//! singular for a level of one row and a slope, or a slope constant within
//! the level), with W_{i,P} its pivot rows (r_i × r_i, lower triangular,
//! invertible). B_i = Z_{0,i}ᵀ[Z_D X] lies in the column space of
//! Z_{0,i}ᵀ, which is A_i's, W_i's: B_i = W_i H_i has exactly one solution,
//! read off the pivot rows by forward substitution,
//!
//! ```text
//!   H_i = W_{i,P}⁻¹ B_i[P_i, :]                        (r_i × (m+p), sparse as B_i)
//!   S   = G₂₂ − Σ_i H_iᵀH_i = L_S L_Sᵀ                  (pivoted Cholesky, L_S (m+p) × r_S)
//!   L   = [ W    0  ],   LLᵀ = [ WWᵀ     WH          ] = G,   r = Σ_i r_i + r_S.
//!         [ Hᵀ  L_S ]          [ HᵀWᵀ    HᵀH + L_S L_Sᵀ ]
//! ```
//! S is the Schur complement G₂₂ − G₂₁G₁₁⁺G₁₂: with A = WWᵀ (W of full column
//! rank), WᵀA⁺W = I, so G₂₁G₁₁⁺G₁₂ = HᵀWᵀA⁺WH = HᵀH and no pseudo-inverse is
//! formed. The pivoted S reveals the dependencies among [Z_D X] given Z₀:
//! nested factors (Z_b in the span of Z_a), a covariate constant within
//! factor 0's levels, X's intercept (always in the span of Z₀'s intercepts).
//! With u = (u₁, u₂) split the same way, the draw is
//!
//! ```text
//!   c₁ = σ̂ W u₁                   (level by level: c_{1,i} = σ̂ W_i u_{1,i})
//!   c₂ = σ̂ (Hᵀu₁ + L_S u₂)  =  G₂₁G₁₁⁺c₁ + σ̂ L_S u₂
//! ```
//! (G₂₁G₁₁⁺W = HᵀWᵀA⁺W = Hᵀ): c₁ ~ N(0, σ̂²G₁₁) and c₂ given c₁ has its
//! Gaussian conditional law N(G₂₁G₁₁⁺c₁, σ̂²S).
//!
//! # The mean part
//! G v = L(Lᵀv) and vᵀGv = ‖Lᵀv‖² (= ‖Xβ̂ + Zb*‖²): two passes over L,
//! which has the sparsity of the statistics, so the statistics themselves
//! need not be kept.
//!
//! # Cost
//! Set-up (once): a q₀×q₀ pivoted Cholesky and one triangular solve per
//! entry of B_i for every level of factor 0, S's fill-in Σ_i r_i |supp B_i|²,
//! and S's pivoted Cholesky, O((m+p)² r_S). A replicate: N normals for the
//! effects, r for u, one χ², and three passes over L (Lᵀv, L(Lᵀv), L u):
//! O(Σ_i r_i (q₀ + |supp B_i|) + (m+p) r_S) plus the effects' O(Σ_f nlev_f q_f²).
//!
//! # Randomness
//! Replicate `index` under `seed` draws from ChaCha8 seeded by `seed` on
//! stream `index`: it depends on (seed, index) only, not on the order or the
//! thread in which replicates are computed. Its draws, in order: z_{f,l}
//! (factor by factor, level by level, q_f standard normals each), u₁ (level
//! by level of factor 0), u₂, then one χ²_{n−r} (none if n ≤ r).

use super::gram::GramFactor;
use super::pivoted::dot;
use super::Response;
use crate::crossed::{Factor, Pair};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{ChiSquared, Distribution, StandardNormal};

/// What a replicate needs from the statistics: the factor of G, computed once.
pub struct Simulator {
    n: f64,
    p: usize,
    /// (q_f, nlev_f) per factor
    shapes: Vec<(usize, usize)>,
    gram: GramFactor,
}

impl Simulator {
    /// From the statistics of the fit (only their Z and X parts are read;
    /// ztr's and rtr's y column are ignored). A pair of factors that is not
    /// listed shares no rows.
    pub fn new(
        n: f64,
        p: usize,
        factors: &[Factor],
        pairs: &[Pair],
        rtr: &[f64],
    ) -> Result<Simulator, String> {
        let gram = GramFactor::new(p, factors, pairs, rtr)?;
        let shapes = factors.iter().map(|f| (f.q, f.nlev)).collect();
        Ok(Simulator { n, p, shapes, gram })
    }

    /// rank [Z X] as revealed by the factorization.
    pub fn rank(&self) -> usize {
        self.gram.rank()
    }

    /// The y statistics of replicate `index` (0-based) under `seed`: y* drawn
    /// at `beta`, the relative covariance factors `lambdas` (per factor,
    /// q_f×q_f lower triangular, column-major) and `sigma`.
    pub fn replicate(
        &self,
        seed: u64,
        index: u64,
        beta: &[f64],
        lambdas: &[Vec<f64>],
        sigma: f64,
    ) -> Response {
        let mut rng = stream(seed, index);
        let effects = self.draw_effects(&mut rng, lambdas, sigma);
        let noise = self.draw_noise(&mut rng, sigma);
        self.response(beta, &effects, &noise)
    }

    /// The y statistics of y = Xβ + Zb + ε from b (`effects`, per factor
    /// nlev_f·q_f, level-major) and ε's own statistics (`noise`: Zᵀε, Xᵀε,
    /// εᵀε): Mᵀy = Gv + Mᵀε, yᵀy = ‖Lᵀv‖² + 2vᵀMᵀε + εᵀε, v = [b; β].
    pub fn response(&self, beta: &[f64], effects: &[Vec<f64>], noise: &Response) -> Response {
        assert_eq!(beta.len(), self.p, "bootstrap: β has the wrong length");
        let (v1, v2) = self.join(effects, beta);
        let (t1, t2) = self.gram.transpose_times(&v1, &v2);
        let (g1, g2) = self.gram.times(&t1, &t2);
        let mean = self.split(g1, g2);
        let cross: f64 = effects
            .iter()
            .zip(&noise.zty)
            .map(|(b, c)| dot(b, c))
            .sum::<f64>()
            + dot(beta, &noise.xty);
        let zty = mean
            .zty
            .iter()
            .zip(&noise.zty)
            .map(|(g, c)| add(g, c))
            .collect();
        Response {
            zty,
            xty: add(&mean.xty, &noise.xty),
            yty: dot(&t1, &t1) + dot(&t2, &t2) + 2.0 * cross + noise.yty,
        }
    }

    /// b*_{f,l} = σ Λ_f z_{f,l}, per factor (nlev_f·q_f, level-major).
    fn draw_effects(
        &self,
        rng: &mut ChaCha8Rng,
        lambdas: &[Vec<f64>],
        sigma: f64,
    ) -> Vec<Vec<f64>> {
        assert_eq!(
            lambdas.len(),
            self.shapes.len(),
            "bootstrap: one Λ per factor"
        );
        self.shapes
            .iter()
            .zip(lambdas)
            .map(|(&(q, nlev), lambda)| {
                assert_eq!(lambda.len(), q * q, "bootstrap: Λ_f is q_f × q_f");
                let mut b = Vec::with_capacity(nlev * q);
                for _ in 0..nlev {
                    let z = normals(rng, q);
                    b.extend(
                        (0..q).map(|r| {
                            sigma * (0..=r).map(|c| lambda[c * q + r] * z[c]).sum::<f64>()
                        }),
                    );
                }
                b
            })
            .collect()
    }

    /// (Zᵀε*, Xᵀε*, ε*ᵀε*) = (σ L u, σ²(uᵀu + χ²_{n−r})).
    fn draw_noise(&self, rng: &mut ChaCha8Rng, sigma: f64) -> Response {
        let u1 = normals(rng, self.gram.block_rank());
        let u2 = normals(rng, self.gram.dense_rank());
        let df = self.n - self.rank() as f64;
        let remainder = if df > 0.0 {
            ChiSquared::new(df)
                .expect("χ² degrees of freedom")
                .sample(rng)
        } else {
            0.0
        };
        let (c1, c2) = self.gram.times(&u1, &u2);
        let mut noise = self.split(c1, c2);
        for x in noise.zty.iter_mut().flatten().chain(noise.xty.iter_mut()) {
            *x *= sigma;
        }
        noise.yty = sigma * sigma * (dot(&u1, &u1) + dot(&u2, &u2) + remainder);
        noise
    }

    /// v = [b; β] as a block vector (factor 0's b) and a dense one (the other
    /// factors' b, then β).
    fn join(&self, effects: &[Vec<f64>], beta: &[f64]) -> (Vec<f64>, Vec<f64>) {
        assert_eq!(
            effects.len(),
            self.shapes.len(),
            "bootstrap: effects for every factor"
        );
        for (b, &(q, nlev)) in effects.iter().zip(&self.shapes) {
            assert_eq!(
                b.len(),
                q * nlev,
                "bootstrap: effects are nlev × q per factor"
            );
        }
        let mut v2: Vec<f64> = effects[1..].iter().flatten().copied().collect();
        v2.extend_from_slice(beta);
        (effects[0].clone(), v2)
    }

    /// A block vector and a dense one as per-factor Z parts and an X part
    /// (yᵀy left 0).
    fn split(&self, y1: Vec<f64>, y2: Vec<f64>) -> Response {
        let mut zty = vec![y1];
        for (fi, &(q, nlev)) in self.shapes.iter().enumerate().skip(1) {
            let o = self.gram.offsets[fi];
            zty.push(y2[o..o + q * nlev].to_vec());
        }
        Response {
            zty,
            xty: y2[self.gram.m..].to_vec(),
            yty: 0.0,
        }
    }
}

/// The random stream of replicate `index` under `seed`.
pub fn stream(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

fn normals(rng: &mut ChaCha8Rng, count: usize) -> Vec<f64> {
    (0..count).map(|_| rng.sample(StandardNormal)).collect()
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

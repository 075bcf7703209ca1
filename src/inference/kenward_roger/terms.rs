//! The linear covariance parameters φ_r of the random effects and the sums
//! over Z-blocks that P̂_r, Q̂_rs and K̂_rs need (shared by the one-factor,
//! per-level path and the several-factor, dense path).
//!
//! A parameter is one unique element (i, j), i ≥ j, of one bar's block of a
//! factor's D = σ²ΛΛᵀ. Its G_r = Z_f (I ⊗ E_ij) Z_fᵀ with E_ii = e_i e_iᵀ
//! and E_ij = e_i e_jᵀ + e_j e_iᵀ (pbkrtest's `get_SigmaG`), so a parameter is
//! a list of "terms" (a, b), E = Σ e_a e_bᵀ, over the rows of the block it
//! acts on: local indices within a level, or (dense path) global indices over
//! every level of its factor.

/// One parameter: its factor and element (i, j) of the factor's q×q D, i ≥ j.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    pub factor: usize,
    pub i: usize,
    pub j: usize,
}

impl Param {
    /// E's terms (a, b) within one level.
    pub fn local_terms(&self) -> Vec<(usize, usize)> {
        if self.i == self.j {
            vec![(self.i, self.i)]
        } else {
            vec![(self.i, self.j), (self.j, self.i)]
        }
    }
}

/// φ in pbkrtest's order: per factor, per bar, the block's lower triangle by
/// columns (variances and covariances); σ² comes after these.
pub fn parameters(blocks: &[Vec<usize>]) -> Vec<Param> {
    let mut out = Vec::new();
    for (factor, bars) in blocks.iter().enumerate() {
        let mut start = 0;
        for &size in bars {
            for j in 0..size {
                for i in j..size {
                    out.push(Param {
                        factor,
                        i: start + i,
                        j: start + j,
                    });
                }
            }
            start += size;
        }
    }
    out
}

/// Running sums for the nr random-effect parameters (hats: the quantities
/// times the power of σ² that makes them free of σ², see the module doc):
/// P̂_r = −Σ B̂ᵀE_rB̂, Q̂_rs = Σ B̂ᵀE_rĈE_sB̂ (r ≤ s), Q̂_rσ = Σ B̂ᵀE_rB̂₂,
/// K̂_rs = Σ tr(E_rĈE_sĈ) (r ≤ s), K̂_rσ = Σ tr(E_rĈ₂). p×p matrices are
/// column-major; Q̂_rs sits at (s·nr + r)·p².
#[derive(Clone)]
pub struct Sums {
    pub nr: usize,
    pub p: usize,
    pub p_mats: Vec<f64>,
    pub q_mats: Vec<f64>,
    pub q_sigma: Vec<f64>,
    pub k: Vec<f64>,
    pub k_sigma: Vec<f64>,
}

impl Sums {
    pub fn new(nr: usize, p: usize) -> Sums {
        let pp = p * p;
        Sums {
            nr,
            p,
            p_mats: vec![0.0; nr * pp],
            q_mats: vec![0.0; nr * nr * pp],
            q_sigma: vec![0.0; nr * pp],
            k: vec![0.0; nr * nr],
            k_sigma: vec![0.0; nr],
        }
    }

    pub fn add(&mut self, other: &Sums) {
        let pairs = [
            (&mut self.p_mats, &other.p_mats),
            (&mut self.q_mats, &other.q_mats),
            (&mut self.q_sigma, &other.q_sigma),
            (&mut self.k, &other.k),
            (&mut self.k_sigma, &other.k_sigma),
        ];
        for (a, b) in pairs {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += y;
            }
        }
    }

    /// P̂_r −= B̂ᵀE_rB̂ and Q̂_rσ += B̂ᵀE_rB̂₂ for one block of `rows` rows.
    pub fn add_linear(
        &mut self,
        terms: &[Vec<(usize, usize)>],
        rows: usize,
        b: &[f64],
        b2: &[f64],
    ) {
        let pp = self.p * self.p;
        for (r, tr) in terms.iter().enumerate() {
            for &(a, bb) in tr {
                outer(
                    &mut self.p_mats[r * pp..(r + 1) * pp],
                    self.p,
                    rows,
                    b,
                    a,
                    b,
                    bb,
                    -1.0,
                );
                outer(
                    &mut self.q_sigma[r * pp..(r + 1) * pp],
                    self.p,
                    rows,
                    b,
                    a,
                    b2,
                    bb,
                    1.0,
                );
            }
        }
    }

    /// Q̂_rs += B̂ᵀE_rY_s (r ≤ s) given Y_s = ĈE_sB̂ (rows×p).
    pub fn add_quadratic(
        &mut self,
        r: usize,
        s: usize,
        terms_r: &[(usize, usize)],
        rows: usize,
        b: &[f64],
        y: &[f64],
    ) {
        let (nr, pp) = (self.nr, self.p * self.p);
        let q_rs = &mut self.q_mats[(s * nr + r) * pp..(s * nr + r + 1) * pp];
        for &(a, bb) in terms_r {
            outer(q_rs, self.p, rows, b, a, y, bb, 1.0);
        }
    }

    /// Add one block's contributions. `terms[r]` are parameter r's (a, b) on
    /// this block's `rows` rows (an empty list: r does not act here); `b` and
    /// `b2` are B̂ and B̂₂ (rows×p), `c` is Ĉ (rows×rows), `c2(i, j)` gives
    /// Ĉ₂[i, j] (only asked for pairs (a, b) of one term). `y` is scratch of
    /// rows·p.
    #[allow(clippy::too_many_arguments)]
    pub fn add_block(
        &mut self,
        terms: &[Vec<(usize, usize)>],
        rows: usize,
        b: &[f64],
        b2: &[f64],
        c: &[f64],
        c2: &dyn Fn(usize, usize) -> f64,
        y: &mut [f64],
    ) {
        let (p, nr) = (self.p, self.nr);
        self.add_linear(terms, rows, b, b2);
        for r in 0..nr {
            for &(a, bb) in &terms[r] {
                self.k_sigma[r] += c2(bb, a);
            }
        }
        for s in 0..nr {
            if terms[s].is_empty() {
                continue;
            }
            // Y_s = Ĉ E_s B̂ = Σ_{(c,d)∈s} Ĉ[:, c] B̂[d, :]
            y.iter_mut().for_each(|v| *v = 0.0);
            for &(cc, d) in &terms[s] {
                let ccol = &c[cc * rows..(cc + 1) * rows];
                for j in 0..p {
                    let bdj = b[j * rows + d];
                    if bdj != 0.0 {
                        let yj = &mut y[j * rows..(j + 1) * rows];
                        for (yv, cv) in yj.iter_mut().zip(ccol) {
                            *yv += cv * bdj;
                        }
                    }
                }
            }
            for r in 0..=s {
                self.add_quadratic(r, s, &terms[r], rows, b, y);
                let mut k_rs = 0.0;
                for &(a, bb) in &terms[r] {
                    for &(cc, d) in &terms[s] {
                        k_rs += c[cc * rows + bb] * c[a * rows + d];
                    }
                }
                self.k[s * nr + r] += k_rs;
            }
        }
    }
}

/// out[j, i] += f · X[xa, i] · Z[zb, j] (X, Z rows×p, out p×p, column-major).
#[allow(clippy::too_many_arguments)]
fn outer(
    out: &mut [f64],
    p: usize,
    rows: usize,
    x: &[f64],
    xa: usize,
    z: &[f64],
    zb: usize,
    f: f64,
) {
    for j in 0..p {
        let zj = f * z[j * rows + zb];
        if zj != 0.0 {
            for i in 0..p {
                out[j * p + i] += x[i * rows + xa] * zj;
            }
        }
    }
}

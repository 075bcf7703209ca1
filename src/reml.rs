//! The profiled REML / ML deviance from per-group cross-products.
//!
//! Model: y = Xβ + Zb + ε, b = Λu, u ~ N(0, σ²I), ε ~ N(0, σ²I), with one
//! grouping factor, so ZᵀZ is block diagonal (one q×q block per group i).
//! Write R = [X y] (k = p + 1 columns). For a given Λ:
//!
//! ```text
//!   L_i L_iᵀ = Λᵀ Z_iᵀZ_i Λ + I                       (q×q Cholesky per group)
//!   C_i      = L_i⁻¹ Λᵀ Z_iᵀR                          (q×k)
//!   S        = RᵀR − Σ_i C_iᵀ C_i  = Uᵀ U              (k×k Cholesky, U upper)
//! ```
//! U's leading p×p block is R_X, its last column holds r = R_X β̂ and the
//! penalised residual sum of squares ρ² = U_kk². With log|L|² = Σ_i 2 Σ log diag L_i:
//!
//! ```text
//!   ML:   d(θ) = log|L|² + n (1 + log(2π ρ²/n))
//!   REML: d(θ) = log|L|² + log|R_X|² + (n−p)(1 + log(2π ρ²/(n−p)))
//! ```
//! Nothing here touches rows: a deviance costs O(G (q³ + q k²) + k³).

pub use crate::dense::cholesky_lower;
use crate::dense::{dense_cholesky, upper_gram_inverse, FAER_FROM};
use crate::options::Method;

/// The groups of a distributed fit, held elsewhere (`crate::distributed`):
/// each call is one round trip to every shard, whose answers are summed in
/// shard order. A `Problem` with shards holds no groups itself (`groups` 0).
pub trait Shards: Send + Sync {
    /// Σ over every shard's groups of the partial sums at Λ (`Problem::partial_sum`).
    fn partial(&self, lambda: &[f64], pos: Option<&[(usize, usize)]>) -> Option<Partial>;
    /// Σ over every shard's groups of the moment-start sums at the OLS β (`crate::start::MomentSums`).
    fn moments(&self, beta: &[f64]) -> Option<crate::start::MomentSums>;
}

#[derive(Clone)]
pub struct Problem {
    pub n: f64,
    pub p: usize,
    pub q: usize,
    pub groups: usize,
    /// Per group, Z_iᵀZ_i as q×q column-major.
    pub ztz: Vec<f64>,
    /// Per group, Z_iᵀ[X y] as q×k column-major.
    pub ztr: Vec<f64>,
    /// [X y]ᵀ[X y], k×k column-major.
    pub rtr: Vec<f64>,
    pub method: Method,
    /// the groups, when they are held by shards elsewhere (then `groups` is 0)
    pub shards: Option<std::sync::Arc<dyn Shards>>,
}

/// Per-group work space and results.
struct GroupFactor {
    /// L_i, q×q lower, column-major.
    l: Vec<f64>,
    /// C_i, q×k column-major.
    c: Vec<f64>,
    /// Λᵀ Z_iᵀZ_i Λ scratch.
    m: Vec<f64>,
}

impl GroupFactor {
    fn new(q: usize, k: usize) -> Self {
        GroupFactor {
            l: vec![0.0; q * q],
            c: vec![0.0; q * k],
            m: vec![0.0; q * q],
        }
    }
}

/// Rows waiting to be added to S (the C_i rows) and to each T_j (the rows
/// Q_i[r,:] and P_i[c,:] of its entry), all row-major with k columns.
struct RowBatch {
    k: usize,
    c: Vec<f64>,
    qt: Vec<Vec<f64>>,
    pt: Vec<Vec<f64>>,
}

impl RowBatch {
    /// Rows per product: enough for faer's blocking, few enough to stay small.
    const ROWS: usize = 256;

    fn new(k: usize, nth: usize) -> RowBatch {
        RowBatch {
            k,
            c: Vec::new(),
            qt: vec![Vec::new(); nth],
            pt: vec![Vec::new(); nth],
        }
    }

    fn full(&self) -> bool {
        self.c.len() >= Self::ROWS * self.k
    }

    /// S += CᵀC and T_j += Q_jᵀP_j for the rows held, then empty the batch.
    fn flush(&mut self, out: &mut Partial) {
        use faer::{Accum, MatMut, MatRef};
        let k = self.k;
        let par = faer::get_global_parallelism();
        let product = |dst: &mut [f64], a: &[f64], b: &[f64]| {
            let rows = a.len() / k;
            if rows == 0 {
                return;
            }
            let (a, b) = (
                MatRef::from_row_major_slice(a, rows, k),
                MatRef::from_row_major_slice(b, rows, k),
            );
            faer::linalg::matmul::matmul(
                MatMut::from_column_major_slice_mut(dst, k, k),
                Accum::Add,
                a.transpose(),
                b,
                1.0,
                par,
            );
        };
        product(&mut out.s, &self.c, &self.c);
        for j in 0..self.qt.len() {
            product(
                &mut out.t[j * k * k..(j + 1) * k * k],
                &self.qt[j],
                &self.pt[j],
            );
            self.qt[j].clear();
            self.pt[j].clear();
        }
        self.c.clear();
    }
}

/// Sums over a set of groups: S's part Σ C_iᵀC_i (upper triangle of k×k),
/// Σ log|L_i|², and with θ's positions the gradient pieces g1 (one per θ
/// entry) and T_j (k×k each). Adding the partials of disjoint sets of groups
/// gives the partial of their union: what a shard sends back.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub s: Vec<f64>,
    pub logdet: f64,
    pub g1: Vec<f64>,
    pub t: Vec<f64>,
}

impl Partial {
    pub fn zero(k: usize, nth: usize) -> Partial {
        Partial {
            s: vec![0.0; k * k],
            logdet: 0.0,
            g1: vec![0.0; nth],
            t: vec![0.0; nth * k * k],
        }
    }

    pub fn add(&mut self, other: &Partial) {
        self.logdet += other.logdet;
        for (a, b) in [
            (&mut self.s, &other.s),
            (&mut self.g1, &other.g1),
            (&mut self.t, &other.t),
        ] {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += y;
            }
        }
    }

    /// As numbers: logdet, then s, g1, t.
    pub fn to_values(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(1 + self.s.len() + self.g1.len() + self.t.len());
        v.push(self.logdet);
        v.extend_from_slice(&self.s);
        v.extend_from_slice(&self.g1);
        v.extend_from_slice(&self.t);
        v
    }

    /// `to_values` read back for k columns and nth θ entries; None if the count is wrong.
    pub fn from_values(v: &[f64], k: usize, nth: usize) -> Option<Partial> {
        if v.len() != 1 + k * k + nth + nth * k * k {
            return None;
        }
        let (s, rest) = v[1..].split_at(k * k);
        let (g1, t) = rest.split_at(nth);
        Some(Partial {
            s: s.to_vec(),
            logdet: v[0],
            g1: g1.to_vec(),
            t: t.to_vec(),
        })
    }
}

pub struct Evaluation {
    pub deviance: f64,
    /// log|L|²
    pub logdet_l: f64,
    /// log|R_X|²
    pub logdet_rx: f64,
    /// ρ², the penalised residual sum of squares
    pub pwrss: f64,
    /// U (k×k upper, column-major)
    pub u: Vec<f64>,
}

impl Problem {
    pub fn k(&self) -> usize {
        self.p + 1
    }

    /// Factor group i: fills L_i and C_i (row-major); returns |L_i|², or None if not PD.
    /// `Q` > 0 fixes q at compile time (small q is the common case, and the
    /// compiler then unrolls the q-loops); `Q` = 0 reads it from the problem.
    #[inline(always)]
    fn factor_group<const Q: usize>(
        &self,
        i: usize,
        lambda: &[f64],
        w: &mut GroupFactor,
    ) -> Option<f64> {
        let q = if Q > 0 { Q } else { self.q };
        let k = self.k();
        let ztz = &self.ztz[i * q * q..(i + 1) * q * q];
        let ztr = &self.ztr[i * q * k..(i + 1) * q * k];
        // m = ZtZ Λ (q×q), then L = Λᵀ m + I (Λ lower: Λ[r, c] nonzero for r ≥ c).
        for c in 0..q {
            for r in 0..q {
                let mut s = 0.0;
                for t in c..q {
                    s += ztz[t * q + r] * lambda[c * q + t];
                }
                w.m[c * q + r] = s;
            }
        }
        for c in 0..q {
            for r in c..q {
                // (Λᵀ m)[r, c] = Σ_t Λ[t, r] m[t, c]
                let mut s = 0.0;
                for t in r..q {
                    s += lambda[r * q + t] * w.m[c * q + t];
                }
                w.l[c * q + r] = s + if r == c { 1.0 } else { 0.0 };
            }
        }
        // Only the lower triangle is read by the factorisation.
        if !cholesky_lower(&mut w.l[..q * q], q) {
            return None;
        }
        // C = L⁻¹ Λᵀ ZtR, row-major (C[r, :] at c[r*k..]) so the k-long loops are contiguous.
        for r in 0..q {
            for j in 0..k {
                let mut s = 0.0;
                for t in r..q {
                    s += lambda[r * q + t] * ztr[j * q + t];
                }
                w.c[r * k + j] = s;
            }
        }
        for r in 0..q {
            let (done, rest) = w.c.split_at_mut(r * k);
            let row = &mut rest[..k];
            for t in 0..r {
                let l = w.l[t * q + r];
                for (x, y) in row.iter_mut().zip(&done[t * k..(t + 1) * k]) {
                    *x -= l * y;
                }
            }
            let inv = 1.0 / w.l[r * q + r];
            row.iter_mut().for_each(|x| *x *= inv);
        }
        // |L|² = Π L_rr²; every L_rr ≥ 1 because M ⪰ I. The caller takes logarithms.
        let mut det = 1.0;
        for r in 0..q {
            det *= w.l[r * q + r] * w.l[r * q + r];
        }
        Some(det)
    }

    /// Over groups in `range`: Σ C_iᵀC_i (upper triangle of k×k), Σ log|L_i|², and
    /// with `pos` (θ's positions in Λ) the gradient pieces
    /// Σ 2 (M_i⁻¹ΛᵀA_i)[c, r] and T_j = Σ Q_i[r,:]ᵀ P_i[c,:] (see `evaluate`).
    fn partial(
        &self,
        lambda: &[f64],
        range: std::ops::Range<usize>,
        pos: Option<&[(usize, usize)]>,
    ) -> Option<Partial> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.partial_avx2(lambda, range, pos) };
        }
        self.partial_dispatch(lambda, range, pos)
    }

    /// The same kernels compiled for AVX2 + FMA: the k-long loops vectorise 4 wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn partial_avx2(
        &self,
        lambda: &[f64],
        range: std::ops::Range<usize>,
        pos: Option<&[(usize, usize)]>,
    ) -> Option<Partial> {
        self.partial_dispatch(lambda, range, pos)
    }

    #[inline(always)]
    fn partial_dispatch(
        &self,
        lambda: &[f64],
        range: std::ops::Range<usize>,
        pos: Option<&[(usize, usize)]>,
    ) -> Option<Partial> {
        match self.q {
            1 => self.partial_q::<1>(lambda, range, pos),
            2 => self.partial_q::<2>(lambda, range, pos),
            3 => self.partial_q::<3>(lambda, range, pos),
            _ => self.partial_q::<0>(lambda, range, pos),
        }
    }

    #[inline(always)]
    fn partial_q<const Q: usize>(
        &self,
        lambda: &[f64],
        range: std::ops::Range<usize>,
        pos: Option<&[(usize, usize)]>,
    ) -> Option<Partial> {
        let q = if Q > 0 { Q } else { self.q };
        let k = self.k();
        let mut w = GroupFactor::new(q, k);
        let nth = pos.map_or(0, |p| p.len());
        let mut out = Partial::zero(k, nth);
        let mut pm = vec![0.0; q * k];
        let mut lp = vec![0.0; q * k];
        let mut qm = vec![0.0; q * k];
        let mut nm = vec![0.0; q * q];
        // Large k: the rank-one updates of S and T_j go through row batches and
        // faer's matrix products (each k×k update streams S or T_j through
        // memory once per group otherwise: at k = 3,000, 72 MB per group).
        let mut batch = (k >= FAER_FROM).then(|| RowBatch::new(k, nth));
        // Π |L_i|² in chunks, one logarithm per chunk (each factor is ≥ 1).
        let mut det = 1.0;
        for i in range {
            det *= self.factor_group::<Q>(i, lambda, &mut w)?;
            if det > 1e280 {
                out.logdet += det.ln();
                det = 1.0;
            }
            match &mut batch {
                Some(b) => b.c.extend_from_slice(&w.c[..q * k]),
                None => {
                    for r in 0..q {
                        let cr = &w.c[r * k..(r + 1) * k];
                        for b in 0..k {
                            let cb = cr[b];
                            let sb = &mut out.s[b * k..b * k + b + 1];
                            for (x, ca) in sb.iter_mut().zip(cr) {
                                *x += ca * cb;
                            }
                        }
                    }
                }
            }
            let Some(pos) = pos else {
                if let Some(b) = batch.as_mut().filter(|b| b.full()) {
                    b.flush(&mut out);
                }
                continue;
            };
            let ztz = &self.ztz[i * q * q..(i + 1) * q * q];
            let ztr = &self.ztr[i * q * k..(i + 1) * q * k];
            // P = L⁻ᵀ C (row-major, backward over rows)
            for r in (0..q).rev() {
                let (head, tail) = pm.split_at_mut((r + 1) * k);
                let row = &mut head[r * k..];
                row.copy_from_slice(&w.c[r * k..(r + 1) * k]);
                for t in r + 1..q {
                    let l = w.l[r * q + t];
                    for (x, y) in row.iter_mut().zip(&tail[(t - r - 1) * k..(t - r) * k]) {
                        *x -= l * y;
                    }
                }
                let inv = 1.0 / w.l[r * q + r];
                row.iter_mut().for_each(|x| *x *= inv);
            }
            // ΛP
            for r in 0..q {
                let row = &mut lp[r * k..(r + 1) * k];
                row.iter_mut().for_each(|x| *x = 0.0);
                for t in 0..=r {
                    let l = lambda[t * q + r];
                    for (x, y) in row.iter_mut().zip(&pm[t * k..(t + 1) * k]) {
                        *x += l * y;
                    }
                }
            }
            // Q = B − A Λ P
            for r in 0..q {
                let row = &mut qm[r * k..(r + 1) * k];
                for (j, x) in row.iter_mut().enumerate() {
                    *x = ztr[j * q + r];
                }
                for t in 0..q {
                    let a = ztz[t * q + r];
                    for (x, y) in row.iter_mut().zip(&lp[t * k..(t + 1) * k]) {
                        *x -= a * y;
                    }
                }
            }
            // N = M⁻¹ Λᵀ A: Λᵀ A, then two triangular solves per column.
            for c in 0..q {
                for r in 0..q {
                    let mut v = 0.0;
                    for t in r..q {
                        v += lambda[r * q + t] * ztz[c * q + t];
                    }
                    nm[c * q + r] = v;
                }
                for r in 0..q {
                    let mut v = nm[c * q + r];
                    for t in 0..r {
                        v -= w.l[t * q + r] * nm[c * q + t];
                    }
                    nm[c * q + r] = v / w.l[r * q + r];
                }
                for r in (0..q).rev() {
                    let mut v = nm[c * q + r];
                    for t in r + 1..q {
                        v -= w.l[r * q + t] * nm[c * q + t];
                    }
                    nm[c * q + r] = v / w.l[r * q + r];
                }
            }
            for (j, &(r, c)) in pos.iter().enumerate() {
                out.g1[j] += 2.0 * nm[r * q + c];
                if let Some(b) = &mut batch {
                    b.qt[j].extend_from_slice(&qm[r * k..(r + 1) * k]);
                    b.pt[j].extend_from_slice(&pm[c * k..(c + 1) * k]);
                    continue;
                }
                let t = &mut out.t[j * k * k..(j + 1) * k * k];
                let qr = &qm[r * k..(r + 1) * k];
                for b in 0..k {
                    let pcb = pm[c * k + b];
                    for (x, y) in t[b * k..(b + 1) * k].iter_mut().zip(qr) {
                        *x += y * pcb;
                    }
                }
            }
            if let Some(b) = batch.as_mut().filter(|b| b.full()) {
                b.flush(&mut out);
            }
        }
        if let Some(b) = &mut batch {
            b.flush(&mut out);
        }
        out.logdet += det.ln();
        Some(out)
    }

    /// The profiled deviance and its pieces at Λ.
    pub fn evaluate(&self, lambda: &[f64]) -> Option<Evaluation> {
        self.evaluate_impl(lambda, None).map(|(e, _)| e)
    }

    /// The deviance and its gradient in θ (positions of θ's entries in Λ):
    /// `gradients` at β̂, combined as `d = logdets + c log ρ² + const`.
    pub fn deviance_and_gradient(
        &self,
        lambda: &[f64],
        pos: &[(usize, usize)],
    ) -> Option<(f64, Vec<f64>)> {
        let g = self.gradients(lambda, pos, &|pt| pt.beta.clone())?;
        let c = crate::inference::likelihood::residual_dof(self.method, self.n, self.p);
        let grad = g
            .logdets
            .iter()
            .zip(&g.pwrss)
            .map(|(a, b)| a + c * b / g.point.pwrss)
            .collect();
        Some((g.point.deviance, grad))
    }

    /// The criterion's pieces at Λ and the gradients in θ of its log-determinant
    /// terms and of ρ²(θ, β) = min_u ‖y − Xβ − ZΛu‖² + ‖u‖² at the fixed β that
    /// `beta` chooses from the point (β̂ itself, or a constrained β).
    ///
    /// With E_j = ∂Λ/∂θ_j = e_r e_cᵀ, M_i = ΛᵀA_iΛ + I, P_i = M_i⁻¹ΛᵀB_i and
    /// Q_i = B_i − A_iΛP_i (A_i = Z_iᵀZ_i, B_i = Z_iᵀ[X y]):
    /// ∂log|M_i| = 2 (M_i⁻¹ΛᵀA_i)[c, r] and ∂S = −(T_j + T_jᵀ) with
    /// T_j = Σ_i Q_i[r,:]ᵀ P_i[c,:]. ρ²(θ, β) = wᵀ S w for w = [−β; 1] (the
    /// Schur complement S of [X y]), so ∂ρ² = −2 wᵀT_j w at any fixed β, and
    /// ∂log|S_XX| = −2 tr(S_XX⁻¹ T_j[X,X]).
    pub fn gradients(
        &self,
        lambda: &[f64],
        pos: &[(usize, usize)],
        beta: &dyn Fn(&crate::inference::likelihood::Point) -> Vec<f64>,
    ) -> Option<crate::inference::likelihood::Gradients> {
        let (e, (g1, t)) = self.evaluate_impl(lambda, Some(pos))?;
        let (p, k) = (self.p, self.k());
        let point = self.point_of(e);
        let b = beta(&point);
        let mut w: Vec<f64> = b.iter().map(|v| -v).collect();
        w.push(1.0);
        // S_XX⁻¹ = R_X⁻¹ R_X⁻ᵀ = (R_XᵀR_X)⁻¹
        let sinv = &point.xtvx_inv;
        let mut logdets = Vec::with_capacity(pos.len());
        let mut pwrss = Vec::with_capacity(pos.len());
        for j in 0..pos.len() {
            let tj = &t[j * k * k..(j + 1) * k * k];
            let mut wtw = 0.0;
            for c in 0..k {
                for a in 0..k {
                    wtw += w[a] * tj[c * k + a] * w[c];
                }
            }
            pwrss.push(-2.0 * wtw);
            logdets.push(match self.method {
                Method::Ml => g1[j],
                Method::Reml => {
                    let mut tr = 0.0;
                    for a in 0..p {
                        for c in 0..p {
                            tr += sinv[c * p + a] * tj[a * k + c];
                        }
                    }
                    g1[j] - 2.0 * tr
                }
            });
        }
        Some(crate::inference::likelihood::Gradients {
            point,
            beta: b,
            logdets,
            pwrss,
        })
    }

    /// The partials of this problem's own groups: a fixed number of parts
    /// (deterministic sums, whatever the machine), run on up to that many threads.
    fn local_parts(&self, lambda: &[f64], pos: Option<&[(usize, usize)]>) -> Vec<Option<Partial>> {
        const PARTS: usize = 8;
        if self.groups < 4096 {
            return vec![self.partial(lambda, 0..self.groups, pos)];
        }
        let chunk = self.groups.div_ceil(PARTS);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, PARTS);
        let ranges: Vec<_> = (0..PARTS)
            .map(|t| (t * chunk).min(self.groups)..((t + 1) * chunk).min(self.groups))
            .collect();
        let mut results: Vec<Option<Partial>> = (0..PARTS).map(|_| None).collect();
        std::thread::scope(|sc| {
            let per = PARTS.div_ceil(threads);
            for (rs, out) in ranges.chunks(per).zip(results.chunks_mut(per)) {
                sc.spawn(move || {
                    for (r, o) in rs.iter().zip(out.iter_mut()) {
                        *o = self.partial(lambda, r.clone(), pos);
                    }
                });
            }
        });
        results
    }

    /// The partial of all this problem's own groups (what a shard answers),
    /// or None where a group's system is not positive definite.
    pub fn partial_sum(&self, lambda: &[f64], pos: Option<&[(usize, usize)]>) -> Option<Partial> {
        crate::cancel::checkpoint();
        let mut total = Partial::zero(self.k(), pos.map_or(0, |p| p.len()));
        for part in self.local_parts(lambda, pos) {
            total.add(&part?);
        }
        Some(total)
    }

    #[allow(clippy::type_complexity)]
    fn evaluate_impl(
        &self,
        lambda: &[f64],
        pos: Option<&[(usize, usize)]>,
    ) -> Option<(Evaluation, (Vec<f64>, Vec<f64>))> {
        crate::cancel::checkpoint();
        let k = self.k();
        let nth = pos.map_or(0, |p| p.len());
        let parts = match &self.shards {
            Some(shards) => vec![shards.partial(lambda, pos)],
            None => self.local_parts(lambda, pos),
        };
        let mut u = self.rtr.clone();
        let mut logdet_l = 0.0;
        let mut g1 = vec![0.0; nth];
        let mut t = vec![0.0; nth * k * k];
        for part in parts {
            let part = part?;
            logdet_l += part.logdet;
            for b in 0..k {
                for a in 0..=b {
                    u[b * k + a] -= part.s[b * k + a];
                }
            }
            for (x, y) in g1.iter_mut().zip(part.g1.iter()) {
                *x += y;
            }
            for (x, y) in t.iter_mut().zip(part.t.iter()) {
                *x += y;
            }
        }
        // Upper Cholesky of S (stored in the upper triangle): S = UᵀU.
        if k >= FAER_FROM {
            if !upper_cholesky_by_faer(&mut u, k) {
                return None;
            }
        } else {
            upper_cholesky(&mut u, k, self.p)?;
        }
        let p = self.p;
        let pwrss = u[p * k + p] * u[p * k + p];
        let mut logdet_rx = 0.0;
        for j in 0..p {
            logdet_rx += 2.0 * u[j * k + j].ln();
        }
        let two_pi = 2.0 * std::f64::consts::PI;
        let deviance = match self.method {
            Method::Ml => logdet_l + self.n * (1.0 + (two_pi * pwrss / self.n).ln()),
            Method::Reml => {
                let nmp = self.n - p as f64;
                logdet_l + logdet_rx + nmp * (1.0 + (two_pi * pwrss / nmp).ln())
            }
        };
        if !deviance.is_finite() {
            return None;
        }
        Some((
            Evaluation {
                deviance,
                logdet_l,
                logdet_rx,
                pwrss,
                u,
            },
            (g1, t),
        ))
    }

    pub fn deviance(&self, lambda: &[f64]) -> f64 {
        self.evaluate(lambda).map_or(f64::INFINITY, |e| e.deviance)
    }

    /// The criterion's pieces, β̂ and (R_XᵀR_X)⁻¹ at Λ (see `inference::likelihood::Point`).
    pub fn point(&self, lambda: &[f64]) -> Option<crate::inference::likelihood::Point> {
        self.evaluate(lambda).map(|e| self.point_of(e))
    }

    fn point_of(&self, e: Evaluation) -> crate::inference::likelihood::Point {
        let (p, k) = (self.p, self.k());
        let beta = upper_solve(&e.u, k, p);
        let xtvx_inv = upper_gram_inverse(&e.u, k, p);
        crate::inference::likelihood::Point {
            deviance: e.deviance,
            logdet_l: e.logdet_l,
            logdet_rx: e.logdet_rx,
            pwrss: e.pwrss,
            beta,
            xtvx_inv,
        }
    }

    /// β̂ (on the problem's columns), σ̂², the covariance of β̂, and per group the
    /// conditional modes b_i = Λ u_i and conditional covariances σ² Λ (L_iL_iᵀ)⁻¹ Λᵀ.
    pub fn solution(&self, lambda: &[f64]) -> Option<Solution> {
        let e = self.evaluate(lambda)?;
        let (p, k) = (self.p, self.k());
        let u = &e.u;
        let beta = upper_solve(u, k, p);
        let sigma2 = match self.method {
            Method::Ml => e.pwrss / self.n,
            Method::Reml => e.pwrss / (self.n - p as f64),
        };
        // vcov = σ² R_X⁻¹ R_X⁻ᵀ
        let vcov: Vec<f64> = upper_gram_inverse(u, k, p)
            .into_iter()
            .map(|v| sigma2 * v)
            .collect();
        let (blups, cond_cov) = self.modes(lambda, &beta, sigma2)?;
        let logdets = e.logdet_l
            + if self.method == Method::Reml {
                e.logdet_rx
            } else {
                0.0
            };
        Some(Solution {
            deviance: e.deviance,
            logdets,
            beta,
            sigma2,
            vcov,
            blups,
            cond_cov,
        })
    }
}

impl Problem {
    /// Per group of this problem's own, at Λ and the given β̂, σ̂²: the
    /// conditional modes b_i = Λ u_i, u_i = L_i⁻ᵀ(c_iy − C_iX β̂), and the
    /// conditional covariances σ² Λ (L_iL_iᵀ)⁻¹ Λᵀ (groups × q and groups × q×q).
    pub fn modes(&self, lambda: &[f64], beta: &[f64], sigma2: f64) -> Option<(Vec<f64>, Vec<f64>)> {
        let (p, q, k) = (self.p, self.q, self.k());
        let mut w = GroupFactor::new(q, k);
        let mut blups = vec![0.0; self.groups * q];
        let mut cond_cov = vec![0.0; self.groups * q * q];
        let mut uu = vec![0.0; q];
        let mut m = vec![0.0; q * q];
        for i in 0..self.groups {
            self.factor_group::<0>(i, lambda, &mut w)?;
            // u_i = L⁻ᵀ (c_y − C_X β)
            for r in 0..q {
                let mut s = w.c[r * k + p];
                for j in 0..p {
                    s -= w.c[r * k + j] * beta[j];
                }
                uu[r] = s;
            }
            for r in (0..q).rev() {
                let mut s = uu[r];
                for t in r + 1..q {
                    s -= w.l[r * q + t] * uu[t];
                }
                uu[r] = s / w.l[r * q + r];
            }
            for r in 0..q {
                let mut s = 0.0;
                for t in 0..=r {
                    s += lambda[t * q + r] * uu[t];
                }
                blups[i * q + r] = s;
            }
            // m = L⁻¹ Λᵀ (q×q); cond cov = σ² mᵀ m.
            for c in 0..q {
                for r in 0..q {
                    m[c * q + r] = lambda[r * q + c];
                }
                for r in 0..q {
                    let mut s = m[c * q + r];
                    for t in 0..r {
                        s -= w.l[t * q + r] * m[c * q + t];
                    }
                    m[c * q + r] = s / w.l[r * q + r];
                }
            }
            for a in 0..q {
                for b in 0..q {
                    let mut s = 0.0;
                    for t in 0..q {
                        s += m[a * q + t] * m[b * q + t];
                    }
                    cond_cov[i * q * q + b * q + a] = sigma2 * s;
                }
            }
        }
        Some((blups, cond_cov))
    }
}

/// β = R_X⁻¹ r: U's leading p×p block is R_X, its last column holds r.
fn upper_solve(u: &[f64], k: usize, p: usize) -> Vec<f64> {
    let mut beta = vec![0.0; p];
    for j in (0..p).rev() {
        let mut s = u[p * k + j];
        for t in j + 1..p {
            s -= u[t * k + j] * beta[t];
        }
        beta[j] = s / u[j * k + j];
    }
    beta
}

/// Upper Cholesky S = UᵀU in place (upper triangle read; the lower one is
/// zeroed). The last pivot (y's) may be 0: a perfect fit. None if X's block is
/// not positive definite.
fn upper_cholesky(u: &mut [f64], k: usize, p: usize) -> Option<()> {
    for j in 0..k {
        for a in j + 1..k {
            u[j * k + a] = 0.0;
        }
    }
    for j in 0..k {
        let mut d = u[j * k + j];
        for t in 0..j {
            d -= u[j * k + t] * u[j * k + t];
        }
        if j < p && !(d > 0.0) {
            return None;
        }
        let d = d.max(0.0).sqrt();
        u[j * k + j] = d;
        for c in j + 1..k {
            let mut s = u[c * k + j];
            for t in 0..j {
                s -= u[j * k + t] * u[c * k + t];
            }
            u[c * k + j] = if d > 0.0 { s / d } else { 0.0 };
        }
    }
    Some(())
}

/// `upper_cholesky` for large k: S's upper triangle mirrored into the lower
/// one, faer's factorisation there (`dense_cholesky`), U = Lᵀ copied back.
fn upper_cholesky_by_faer(u: &mut [f64], k: usize) -> bool {
    for c in 0..k {
        for r in c + 1..k {
            u[c * k + r] = u[r * k + c];
        }
    }
    if !dense_cholesky(u, k) {
        return false;
    }
    for c in 0..k {
        for r in c + 1..k {
            u[r * k + c] = u[c * k + r];
            u[c * k + r] = 0.0;
        }
    }
    true
}

pub struct Solution {
    pub deviance: f64,
    /// The deviance's log-determinant terms (the rest is its term in ρ²):
    /// they do not depend on the scale of y.
    pub logdets: f64,
    pub beta: Vec<f64>,
    pub sigma2: f64,
    /// p×p column-major
    pub vcov: Vec<f64>,
    /// groups × q, on the problem's (transformed) random-effect columns
    pub blups: Vec<f64>,
    /// groups × q×q column-major
    pub cond_cov: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theta::ThetaLayout;

    /// A small random problem: groups of rows with z = (1, x), X = (1, x, w).
    fn problem(method: Method) -> Problem {
        let (q, p, groups) = (2, 3, 6);
        let k = p + 1;
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let mut ztz = vec![0.0; groups * q * q];
        let mut ztr = vec![0.0; groups * q * k];
        let mut rtr = vec![0.0; k * k];
        let mut n = 0.0;
        for g in 0..groups {
            let b0 = rnd() * 4.0;
            let b1 = rnd() * 2.0;
            for _ in 0..(5 + g) {
                let x = rnd() * 10.0;
                let w = rnd();
                let y = 1.0 + 0.5 * x - w + b0 + b1 * x + rnd();
                let z = [1.0, x];
                let r = [1.0, x, w, y];
                for a in 0..q {
                    for b in 0..q {
                        ztz[g * q * q + b * q + a] += z[a] * z[b];
                    }
                    for j in 0..k {
                        ztr[g * q * k + j * q + a] += z[a] * r[j];
                    }
                }
                for a in 0..k {
                    for b in 0..k {
                        rtr[b * k + a] += r[a] * r[b];
                    }
                }
                n += 1.0;
            }
        }
        Problem {
            n,
            p,
            q,
            groups,
            ztz,
            ztr,
            rtr,
            method,
            shards: None,
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for method in [Method::Reml, Method::Ml] {
            let pr = problem(method);
            for layout in [ThetaLayout::new(&[2]), ThetaLayout::new(&[1, 1])] {
                let theta: Vec<f64> = if layout.len() == 3 {
                    vec![0.8, -0.3, 0.4]
                } else {
                    vec![0.7, 0.2]
                };
                let pos = layout.positions();
                let (f0, g) = pr
                    .deviance_and_gradient(&layout.lambda(&theta), &pos)
                    .unwrap();
                assert!((f0 - pr.deviance(&layout.lambda(&theta))).abs() < 1e-12 * f0.abs());
                for j in 0..theta.len() {
                    let h = 1e-6;
                    let mut tp = theta.clone();
                    tp[j] += h;
                    let mut tm = theta.clone();
                    tm[j] -= h;
                    let fd = (pr.deviance(&layout.lambda(&tp)) - pr.deviance(&layout.lambda(&tm)))
                        / (2.0 * h);
                    assert!(
                        (fd - g[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                        "{method:?} θ{j}: analytic {} vs fd {fd}",
                        g[j]
                    );
                }
            }
        }
    }
}

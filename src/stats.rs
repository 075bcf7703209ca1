//! Exact streaming moments of one group's rows.
//!
//! Scheme (chosen for issue 6): each group keeps its count `n`, the mean of
//! every design column *relative to a per-state shift K* (the first value the
//! state saw in that column), and the centred co-moment matrix
//! `C = Σ (v - m)(v - m)ᵀ`. Rows enter by Welford's update
//! `δ = v - m; m += δ/n; C += δδᵀ (n-1)/n`, states merge by Chan et al.'s
//! pairwise formula `C = C_a + C_b + δδᵀ n_a n_b / n` with `δ = m_b - m_a`.
//! Raw sums `Σ vvᵀ` would lose every digit of the centred information when a
//! column carries an offset such as epoch seconds (1.7e9² ≫ 2⁵³); co-moments
//! never form those large numbers, and the shift keeps even the stored means
//! small, so offsets cost nothing and the result does not depend on row order
//! beyond rounding.
//!
//! Storage: the mean (length d) followed by the upper triangle of C packed
//! column by column, so that a new design column (a newly seen factor level)
//! is appended without moving the existing entries' meaning.
//!
//! Prior weights (`weights :=`, lme4's Var(εᵢ) = σ²/wᵢ): a row of weight w
//! counts w times. The state keeps the weight total W beside the row count
//! n, and the means and co-moments become weighted ones:
//! `W += w; δ = v - m; m += δ w/W; C += w (W - w)/W δδᵀ` (with w = 1 this is
//! Welford's update, to the last bit), and merges take `W_a W_b / W` where
//! counts stood. Every cross-product a fit reads, `Σ wᵢ uᵢvᵢ = C + W m mᵀ`,
//! is then the unweighted fit's on the rows scaled by √wᵢ; n stays the
//! number of observations (σ²'s degrees of freedom, χ² draws).

/// Index of (a, b), a ≤ b, in a column-packed upper triangle.
#[inline]
pub fn packed(a: usize, b: usize) -> usize {
    debug_assert!(a <= b);
    b * (b + 1) / 2 + a
}

#[derive(Debug, Clone, Default)]
pub struct Moments {
    /// rows
    pub n: u64,
    /// weight total (= n without weights)
    pub w: f64,
    /// Number of columns currently stored.
    pub d: usize,
    /// mean[0..d] then packed co-moments.
    pub data: Vec<f64>,
}

impl Moments {
    pub fn new(d: usize) -> Moments {
        Moments {
            n: 0,
            w: 0.0,
            d,
            data: vec![0.0; d + d * (d + 1) / 2],
        }
    }

    #[inline]
    pub fn mean(&self, a: usize) -> f64 {
        if a < self.d {
            self.data[a]
        } else {
            0.0
        }
    }

    /// Co-moment of columns a and b (any order); 0 for columns this group never stored.
    #[inline]
    pub fn comoment(&self, a: usize, b: usize) -> f64 {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        if b < self.d {
            self.data[self.d + packed(a, b)]
        } else {
            0.0
        }
    }

    /// Grow to `d` columns; new columns were 0 on every row seen so far, so
    /// their mean and co-moments are 0 (their shift is 0 by construction).
    pub fn grow(&mut self, d: usize) {
        if d <= self.d {
            return;
        }
        let old_d = self.d;
        let mut data = Vec::with_capacity(d + d * (d + 1) / 2);
        data.extend_from_slice(&self.data[..old_d]);
        data.resize(d, 0.0);
        data.extend_from_slice(&self.data[old_d..]);
        data.resize(d + d * (d + 1) / 2, 0.0);
        self.data = data;
        self.d = d;
    }

    /// Welford's update with one row; `x` holds the row's values minus the shift, length d.
    #[inline]
    pub fn push(&mut self, x: &[f64], delta: &mut [f64]) {
        // weight 1: step 1/n, f = (n - 1)/n, Welford's update to the last bit
        self.push_weighted(x, 1.0, delta);
    }

    /// The weighted update with one row of weight `wt` > 0 (module doc).
    #[inline]
    pub fn push_weighted(&mut self, x: &[f64], wt: f64, delta: &mut [f64]) {
        debug_assert!(x.len() == self.d && delta.len() >= self.d && wt > 0.0);
        self.n += 1;
        let before = self.w;
        self.w += wt;
        let step = wt / self.w;
        self.step(x, step, before * step, delta);
    }

    /// One row into the means (`m += δ·step`) and co-moments (`C += f·δδᵀ`).
    #[inline]
    fn step(&mut self, x: &[f64], step: f64, f: f64, delta: &mut [f64]) {
        let d = self.d;
        let (mean, com) = self.data.split_at_mut(d);
        for a in 0..d {
            let dl = x[a] - mean[a];
            delta[a] = dl;
            mean[a] += dl * step;
        }
        if f == 0.0 {
            return; // the first row: no co-moment yet
        }
        let mut k = 0;
        for b in 0..d {
            let db = delta[b] * f;
            for a in 0..=b {
                com[k] += delta[a] * db;
                k += 1;
            }
        }
    }

    /// Chan's pairwise merge of `other`, whose column j is this one's column `map[j]`
    /// and whose means are shifted by `offset[j]` relative to this state's shift
    /// (other's mean + offset = mean relative to this state's shift). `other` is not modified.
    pub fn merge_mapped(&mut self, other: &Moments, map: &[usize], offset: &[f64]) {
        if other.n == 0 {
            return;
        }
        let need = map.iter().take(other.d).copied().max().map_or(0, |m| m + 1);
        self.grow(need);
        let d = self.d;
        let (na, nb) = (self.w, other.w);
        let n = na + nb;
        // δ = other's mean (in this state's columns and shift) − ours; columns
        // other never had were 0 there.
        let mut delta: Vec<f64> = self.data[..d].iter().map(|m| -m).collect();
        for j in 0..other.d {
            delta[map[j]] += other.data[j] + offset[j];
        }
        let w = na * nb / n;
        for b in 0..d {
            for a in 0..=b {
                self.data[d + packed(a, b)] += delta[a] * delta[b] * w;
            }
        }
        for j in 0..other.d {
            for i in 0..=j {
                let (a, b) = (map[i].min(map[j]), map[i].max(map[j]));
                self.data[d + packed(a, b)] += other.data[other.d + packed(i, j)];
            }
        }
        for a in 0..d {
            self.data[a] += delta[a] * nb / n;
        }
        self.n += other.n;
        self.w = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let d = rows[0].len();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|a| rows.iter().map(|r| r[a]).sum::<f64>() / n)
            .collect();
        let cov = (0..d)
            .map(|a| {
                (0..d)
                    .map(|b| {
                        rows.iter()
                            .map(|r| (r[a] - mean[a]) * (r[b] - mean[b]))
                            .sum()
                    })
                    .collect()
            })
            .collect();
        (mean, cov)
    }

    #[test]
    fn welford_and_chan_agree_with_two_pass() {
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|i| {
                let x = i as f64;
                vec![
                    x.sin() * 3.0,
                    (x * 0.7).cos() + x * 0.1,
                    if i % 3 == 0 { 1.0 } else { 0.0 },
                ]
            })
            .collect();
        let (mean, cov) = naive(&rows);
        let mut all = Moments::new(3);
        let mut a = Moments::new(3);
        let mut b = Moments::new(3);
        let mut dl = vec![0.0; 3];
        for (i, r) in rows.iter().enumerate() {
            all.push(r, &mut dl);
            if i < 17 {
                a.push(r, &mut dl)
            } else {
                b.push(r, &mut dl)
            }
        }
        a.merge_mapped(&b, &[0, 1, 2], &[0.0; 3]);
        for m in [&all, &a] {
            for i in 0..3 {
                assert!((m.mean(i) - mean[i]).abs() < 1e-13);
                for j in 0..3 {
                    assert!((m.comoment(i, j) - cov[i][j]).abs() < 1e-11);
                }
            }
        }
    }

    #[test]
    fn weighted_rows_are_rows_repeated_and_merge_exactly() {
        // A row of integer weight k is that row k times; weights split over two
        // states merge to the one state's moments; the store agrees with Moments.
        let rows: Vec<(Vec<f64>, f64)> = (0..40)
            .map(|i| {
                let x = i as f64;
                (
                    vec![
                        1.7e3 + x.sin() * 3.0,
                        (x * 0.3).cos(),
                        if i % 4 == 0 { 1.0 } else { 0.0 },
                    ],
                    (1 + i % 3) as f64,
                )
            })
            .collect();
        let mut repeated = Moments::new(3);
        let (mut all, mut a, mut b) = (Moments::new(3), Moments::new(3), Moments::new(3));
        let mut store = GroupStore::default();
        store.ensure(3, 2);
        store.add_group();
        let mut dl = vec![0.0; 3];
        for (i, (r, w)) in rows.iter().enumerate() {
            for _ in 0..*w as usize {
                repeated.push(r, &mut dl);
            }
            all.push_weighted(r, *w, &mut dl);
            store.push_weighted(0, r, *w, &[0, 2], &mut dl);
            if i % 3 == 0 {
                a.push_weighted(r, *w, &mut dl)
            } else {
                b.push_weighted(r, *w, &mut dl)
            }
        }
        a.merge_mapped(&b, &[0, 1, 2], &[0.0; 3]);
        assert_eq!((all.n, a.n), (40, 40));
        assert_eq!(all.w, repeated.w);
        let g = store.group(0);
        assert_eq!(g.n(), repeated.w);
        for m in [&all, &a] {
            for i in 0..3 {
                assert!(
                    (m.mean(i) - repeated.mean(i)).abs() < 1e-12 * (1.0 + repeated.mean(i).abs()),
                    "mean {i}"
                );
                assert!(
                    (g.mean(i) - repeated.mean(i)).abs() < 1e-12 * (1.0 + repeated.mean(i).abs()),
                    "group mean {i}"
                );
                for j in 0..3 {
                    let want = repeated.comoment(i, j);
                    assert!(
                        (m.comoment(i, j) - want).abs() < 1e-10 * (1.0 + want.abs()),
                        "comoment {i},{j}"
                    );
                }
                for (zi, z) in [0usize, 2].iter().enumerate() {
                    let want = repeated.comoment(*z, i);
                    assert!(
                        (g.comoment(zi, i) - want).abs() < 1e-10 * (1.0 + want.abs()),
                        "group comoment {z},{i}"
                    );
                }
            }
        }
    }

    #[test]
    fn indicator_chunks_equal_welford() {
        // columns: 0 = y (dense, offset), 1 = x (dense), 2..5 = levels of one factor
        let d = 5;
        let rows: Vec<(f64, f64, usize)> = (0..300)
            .map(|i| {
                let x = ((i * 37) % 101) as f64 / 7.0;
                (1.7e9 + x * 3.0 + ((i * 13) % 11) as f64, x, 2 + (i * 7) % 3)
            })
            .collect();
        let k0 = rows[0].0;
        let mut welford = Moments::new(d);
        let mut dl = vec![0.0; d];
        for &(y, x, l) in &rows {
            let mut v = vec![0.0; d];
            v[0] = y - k0;
            v[1] = x;
            v[l] = 1.0;
            welford.push(&v, &mut dl);
        }
        let mut chunked = Moments::new(0);
        for part in rows.chunks(64) {
            let dense: Vec<f64> = part.iter().flat_map(|&(y, x, _)| [y - k0, x]).collect();
            let active: Vec<usize> = part.iter().map(|&(_, _, l)| l).collect();
            let ch = IndicatorChunk {
                dense_ids: &[0, 1],
                dense: &dense,
                active: &active,
                rows: part.len(),
            };
            chunked.merge_indicator_chunk(d, &ch);
        }
        assert_eq!(chunked.n, welford.n);
        for a in 0..d {
            assert!(
                (chunked.mean(a) - welford.mean(a)).abs() <= 1e-12 * (1.0 + welford.mean(a).abs()),
                "mean {a}"
            );
            for b in 0..d {
                let (c, w) = (chunked.comoment(a, b), welford.comoment(a, b));
                assert!(
                    (c - w).abs() <= 1e-10 * (1.0 + w.abs()),
                    "comoment {a},{b}: {c} vs {w}"
                );
            }
        }
    }

    #[test]
    fn growth_and_permuted_merge() {
        // State A saw columns (x, L1); state B saw (L2, x, L1) in its own order.
        let mut a = Moments::new(2);
        let mut dl = vec![0.0; 3];
        a.push(&[1.0, 1.0], &mut dl);
        a.push(&[2.0, 0.0], &mut dl);
        a.grow(3); // column 2 = L2 appears
        a.push(&[3.0, 0.0, 1.0], &mut dl);
        let mut b = Moments::new(3);
        b.push(&[1.0, 4.0, 0.0], &mut dl);
        b.push(&[0.0, 5.0, 1.0], &mut dl);
        a.merge_mapped(&b, &[2, 0, 1], &[0.0; 3]);
        let rows = vec![
            vec![1.0, 1.0, 0.0],
            vec![2.0, 0.0, 0.0],
            vec![3.0, 0.0, 1.0],
            vec![4.0, 0.0, 1.0],
            vec![5.0, 1.0, 0.0],
        ];
        let (mean, cov) = naive(&rows);
        for i in 0..3 {
            assert!((a.mean(i) - mean[i]).abs() < 1e-14);
            for j in 0..3 {
                assert!((a.comoment(i, j) - cov[i][j]).abs() < 1e-12, "{i}{j}");
            }
        }
    }
}

/// A chunk of rows whose columns are either *dense* (numeric, any value) or
/// *indicators* (0 or 1: the columns of terms made only of factors). Adding
/// such a chunk costs O((dense + active indicators)²) per row instead of
/// Welford's O(d²), and stays exact: dense columns are centred at the
/// chunk's own mean (two passes over the chunk), indicators enter as counts
/// (exact integers), and
/// `C = Σ x'x'ᵀ − n e eᵀ` with x' = x minus the mean on dense columns only and
/// e the indicators' means. The chunk then merges by Chan's formula.
pub struct IndicatorChunk<'a> {
    /// the dense columns' indices
    pub dense_ids: &'a [usize],
    /// rows × dense values (already relative to the state's shift)
    pub dense: &'a [f64],
    /// rows × active indicator columns per row (one per factor-only term)
    pub active: &'a [usize],
    pub rows: usize,
}

impl Moments {
    pub fn merge_indicator_chunk(&mut self, d: usize, ch: &IndicatorChunk) {
        let n = ch.rows;
        if n == 0 {
            return;
        }
        let nd = ch.dense_ids.len();
        let na = if n > 0 { ch.active.len() / n } else { 0 };
        let nf = n as f64;
        let mut cm = Moments::new(d);
        cm.n = n as u64;
        cm.w = nf;
        let mut md = vec![0.0; nd];
        for r in 0..n {
            for i in 0..nd {
                md[i] += ch.dense[r * nd + i];
            }
        }
        md.iter_mut().for_each(|v| *v /= nf);
        let mut cnt = vec![0.0; d];
        for &a in ch.active {
            cnt[a] += 1.0;
        }
        let mut u = vec![0.0; nd];
        {
            let (mean, com) = cm.data.split_at_mut(d);
            for (i, &c) in ch.dense_ids.iter().enumerate() {
                mean[c] = md[i];
            }
            for a in 0..d {
                if cnt[a] > 0.0 {
                    mean[a] = cnt[a] / nf;
                }
            }
            let at = |a: usize, b: usize| if a <= b { packed(a, b) } else { packed(b, a) };
            for r in 0..n {
                for i in 0..nd {
                    u[i] = ch.dense[r * nd + i] - md[i];
                }
                let act = &ch.active[r * na..(r + 1) * na];
                for i in 0..nd {
                    let ci = ch.dense_ids[i];
                    for j in i..nd {
                        com[at(ci, ch.dense_ids[j])] += u[i] * u[j];
                    }
                    for &a in act {
                        com[at(ci, a)] += u[i];
                    }
                }
                for (x, &a) in act.iter().enumerate() {
                    for &b in &act[x..] {
                        com[at(a, b)] += 1.0;
                    }
                }
            }
            let used: Vec<usize> = (0..d).filter(|&a| cnt[a] > 0.0).collect();
            for (x, &a) in used.iter().enumerate() {
                for &b in &used[x..] {
                    com[at(a, b)] -= cnt[a] * cnt[b] / nf;
                }
            }
        }
        let ident: Vec<usize> = (0..d).collect();
        self.grow(d);
        self.merge_mapped(&cm, &ident, &vec![0.0; d]);
    }
}

/// Every group's moments in one arena, restricted to what a fit needs of a
/// group: the count, the means of all d columns, and the co-moments of the q
/// random-effect columns with all d columns. The full d×d co-moments are only
/// needed over all rows and are kept once per state (`Moments`). A group's
/// block is contiguous, `[n, mean[0..d], com[zi * d + c]]`, so a row touches
/// one run of d + q·d + 1 doubles (18 + 1 for the benchmark design, not 54).
/// When d or q grows (a new factor level), the arena is re-laid out; the new
/// entries are 0, which is exact (see `Moments::grow`).
///
/// The layout's capacity (`cd` columns, `cq` rows) may exceed the columns and
/// rows in use (`d`, `q`): the first `EXACT_RELAYOUTS` re-layouts, and any of
/// a small arena, are to the exact size (a design's columns usually all show
/// up in its first rows: no memory is wasted); after those, a large arena
/// grows by half, so that a design whose columns keep appearing costs
/// O(log d) more re-layouts, not O(d).
#[derive(Debug, Clone, Default)]
pub struct GroupStore {
    pub d: usize,
    pub q: usize,
    cd: usize,
    cq: usize,
    relayouts: u32,
    data: Vec<f64>,
    groups: usize,
}

const EXACT_LAYOUT_BYTES: usize = 1 << 16;
const EXACT_RELAYOUTS: u32 = 8;

/// Read access to one group's block.
pub struct GroupView<'a> {
    d: usize,
    q: usize,
    cd: usize,
    b: &'a [f64],
}

impl GroupView<'_> {
    /// The group's weight total: its row count without weights.
    #[inline]
    pub fn n(&self) -> f64 {
        self.b[0]
    }
    #[inline]
    pub fn mean(&self, c: usize) -> f64 {
        if c < self.d {
            self.b[1 + c]
        } else {
            0.0
        }
    }
    /// Co-moment of random-effect row `zi` with column `c`.
    #[inline]
    pub fn comoment(&self, zi: usize, c: usize) -> f64 {
        if zi < self.q && c < self.d {
            self.b[1 + self.cd + zi * self.cd + c]
        } else {
            0.0
        }
    }
}

impl GroupStore {
    #[inline]
    fn stride(&self) -> usize {
        1 + self.cd + self.cq * self.cd
    }

    /// Bytes held (the arena's capacity).
    pub fn bytes(&self) -> usize {
        self.data.capacity() * std::mem::size_of::<f64>()
    }

    pub fn len(&self) -> usize {
        self.groups
    }

    pub fn is_empty(&self) -> bool {
        self.groups == 0
    }

    pub fn group(&self, g: usize) -> GroupView<'_> {
        let s = self.stride();
        GroupView {
            d: self.d,
            q: self.q,
            cd: self.cd,
            b: &self.data[g * s..(g + 1) * s],
        }
    }

    /// Make room for d columns and q random-effect rows.
    pub fn ensure(&mut self, d: usize, q: usize) {
        let (d, q) = (d.max(self.d), q.max(self.q));
        if d <= self.cd && q <= self.cq {
            self.d = d;
            self.q = q;
            return;
        }
        self.relayouts += 1;
        let (ncd, ncq) =
            if self.relayouts <= EXACT_RELAYOUTS || self.data.len() * 8 <= EXACT_LAYOUT_BYTES {
                (d, q)
            } else {
                (d.max(self.cd + self.cd / 2), q.max(self.cq + self.cq / 2))
            };
        let (ocd, oq, os) = (self.cd, self.q, self.stride());
        let ns = 1 + ncd + ncq * ncd;
        let mut data = vec![0.0; self.groups * ns];
        for g in 0..self.groups {
            let src = &self.data[g * os..(g + 1) * os];
            let dst = &mut data[g * ns..(g + 1) * ns];
            dst[..1 + ocd].copy_from_slice(&src[..1 + ocd]);
            for zi in 0..oq {
                dst[1 + ncd + zi * ncd..1 + ncd + zi * ncd + ocd]
                    .copy_from_slice(&src[1 + ocd + zi * ocd..1 + ocd + (zi + 1) * ocd]);
            }
        }
        self.data = data;
        (self.d, self.q, self.cd, self.cq) = (d, q, ncd, ncq);
    }

    /// Hint the CPU to fetch group g's block (a no-op where unsupported).
    #[inline]
    pub fn prefetch(&self, g: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let s = self.stride();
            if (g + 1) * s <= self.data.len() {
                let p = self.data[g * s..].as_ptr() as *const i8;
                // SAFETY: prefetching is a hint and never faults; the lines are within the block.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    let mut off = 0;
                    while off < s * 8 {
                        _mm_prefetch(p.add(off), _MM_HINT_T0);
                        off += 64;
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = g;
    }

    /// Set group g's count, means (`d` of them) and co-moment rows (`q` rows
    /// of `d`), as `group` reads them back. Call `ensure(d, q)` first.
    pub fn set_group(&mut self, g: usize, n: f64, means: &[f64], comoments: &[f64]) {
        let (d, cd, s) = (self.d, self.cd, self.stride());
        let b = &mut self.data[g * s..(g + 1) * s];
        b[0] = n;
        b[1..1 + d].copy_from_slice(&means[..d]);
        for (zi, row) in comoments.chunks_exact(d.max(1)).take(self.q).enumerate() {
            b[1 + cd + zi * cd..1 + cd + zi * cd + d].copy_from_slice(&row[..d]);
        }
    }

    /// Append an empty group; returns its index.
    pub fn add_group(&mut self) -> usize {
        let s = self.stride();
        self.data.resize(self.data.len() + s, 0.0);
        self.groups += 1;
        self.groups - 1
    }

    /// Welford's update of group g with one row; `x` holds the row minus the shift
    /// (length d), `zcols[zi]` the column of random-effect row zi.
    #[inline]
    pub fn push(&mut self, g: usize, x: &[f64], zcols: &[usize], delta: &mut [f64]) {
        // weight 1: step 1/n, f = (n - 1)/n, Welford's update to the last bit
        self.push_weighted(g, x, 1.0, zcols, delta);
    }

    /// The weighted update of group g with one row of weight `wt` > 0 (see `Moments::push_weighted`).
    #[inline]
    pub fn push_weighted(
        &mut self,
        g: usize,
        x: &[f64],
        wt: f64,
        zcols: &[usize],
        delta: &mut [f64],
    ) {
        let (d, q, cd, s) = (self.d, self.q, self.cd, self.stride());
        let b = &mut self.data[g * s..(g + 1) * s];
        let before = b[0];
        b[0] += wt;
        let step = wt / b[0];
        let (mean, com) = b[1..].split_at_mut(cd);
        for a in 0..d {
            let dl = x[a] - mean[a];
            delta[a] = dl;
            mean[a] += dl * step;
        }
        if before == 0.0 {
            return; // the group's first row: no co-moment yet
        }
        let f = before * step;
        for (zi, row) in com.chunks_exact_mut(cd).enumerate().take(q) {
            let dz = delta[zcols[zi]] * f;
            for (r, dc) in row[..d].iter_mut().zip(delta[..d].iter()) {
                *r += dz * dc;
            }
        }
    }

    /// Chan's merge of group `og` of `other` into group g (other's column j is our
    /// `map[j]`, its row zi our `zmap[zi]`, its means + `offset[j]` are relative to our
    /// shifts); `other` is not modified. Call `ensure` first.
    pub fn merge_group(
        &mut self,
        g: usize,
        other: &GroupStore,
        og: usize,
        map: &[usize],
        offset: &[f64],
        zmap: &[usize],
        zcols: &[usize],
        delta: &mut Vec<f64>,
    ) {
        let o = other.group(og);
        let nb = o.n();
        if nb == 0.0 {
            return;
        }
        let (d, q, cd, s) = (self.d, self.q, self.cd, self.stride());
        let b = &mut self.data[g * s..(g + 1) * s];
        let na = b[0];
        let n = na + nb;
        delta.clear();
        delta.extend(b[1..1 + d].iter().map(|m| -m));
        for j in 0..o.d {
            delta[map[j]] += o.b[1 + j] + offset[j];
        }
        let w = na * nb / n;
        for zi in 0..q {
            let dz = delta[zcols[zi]] * w;
            for c in 0..d {
                b[1 + cd + zi * cd + c] += dz * delta[c];
            }
        }
        for zi in 0..o.q {
            for j in 0..o.d {
                b[1 + cd + zmap[zi] * cd + map[j]] += o.b[1 + o.cd + zi * o.cd + j];
            }
        }
        for a in 0..d {
            b[1 + a] += delta[a] * nb / n;
        }
        b[0] = n;
    }
}

/// A linear re-expression of the design columns: column c becomes
/// Σ coef · column src over `map[c]` (None: c stays as it is). Stored means
/// are relative to the shifts, so the map's constants go to the shifts and
/// means and co-moments transform linearly (`transform::reorigin`).
pub type ColumnMap = [Option<Vec<(usize, f64)>>];

fn mapped(map: &ColumnMap, c: usize, get: impl Fn(usize) -> f64) -> f64 {
    match map.get(c).and_then(|m| m.as_ref()) {
        None => get(c),
        Some(terms) => terms.iter().map(|&(src, coef)| coef * get(src)).sum(),
    }
}

impl Moments {
    /// Means m → T m and co-moments C → T C Tᵀ under `map`.
    pub fn transform(&mut self, map: &ColumnMap) {
        let d = self.d;
        let means: Vec<f64> = (0..d).map(|c| mapped(map, c, |s| self.data[s])).collect();
        // rows first: R = T C (d × d), then C' = R Tᵀ
        let rows: Vec<f64> = (0..d)
            .flat_map(|a| (0..d).map(move |b| (a, b)))
            .map(|(a, b)| mapped(map, a, |s| self.comoment(s, b)))
            .collect();
        let mut data = means;
        data.resize(d + d * (d + 1) / 2, 0.0);
        for b in 0..d {
            for a in 0..=b {
                data[d + packed(a, b)] = mapped(map, b, |s| rows[a * d + s]);
            }
        }
        self.data = data;
    }
}

impl GroupStore {
    /// Every group's means and co-moment rows under `map` (the map of a
    /// random-effect column uses random-effect columns only: `zindex`).
    pub fn transform(&mut self, map: &ColumnMap, zcols: &[usize], zindex: &[usize]) {
        let (d, q, cd, s) = (self.d, self.q, self.cd, self.stride());
        let mut rows = vec![0.0; q * d];
        for g in 0..self.groups {
            let b = &mut self.data[g * s..(g + 1) * s];
            let means: Vec<f64> = (0..d).map(|c| mapped(map, c, |src| b[1 + src])).collect();
            b[1..1 + d].copy_from_slice(&means);
            let com = |zi: usize, c: usize| b[1 + cd + zi * cd + c];
            for zi in 0..q {
                for c in 0..d {
                    // T on the row side (through the z index), then on the column side
                    let row_side = |cc: usize| mapped(map, zcols[zi], |src| com(zindex[src], cc));
                    rows[zi * d + c] = mapped(map, c, row_side);
                }
            }
            for zi in 0..q {
                b[1 + cd + zi * cd..1 + cd + zi * cd + d].copy_from_slice(&rows[zi * d..(zi + 1) * d]);
            }
        }
    }
}

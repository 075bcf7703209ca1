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

/// Index of (a, b), a ≤ b, in a column-packed upper triangle.
#[inline]
pub fn packed(a: usize, b: usize) -> usize {
    debug_assert!(a <= b);
    b * (b + 1) / 2 + a
}

#[derive(Debug, Clone, Default)]
pub struct Moments {
    pub n: u64,
    /// Number of columns currently stored.
    pub d: usize,
    /// mean[0..d] then packed co-moments.
    pub data: Vec<f64>,
}

impl Moments {
    pub fn new(d: usize) -> Moments {
        Moments { n: 0, d, data: vec![0.0; d + d * (d + 1) / 2] }
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
        let d = self.d;
        debug_assert!(x.len() == d && delta.len() >= d);
        self.n += 1;
        let n = self.n as f64;
        let inv_n = 1.0 / n;
        let (mean, com) = self.data.split_at_mut(d);
        for a in 0..d {
            let dl = x[a] - mean[a];
            delta[a] = dl;
            mean[a] += dl * inv_n;
        }
        if self.n == 1 {
            return;
        }
        let f = (n - 1.0) * inv_n;
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
        // other's mean in this state's column space.
        let mut mb = vec![0.0; d];
        let mut present = vec![false; d];
        for j in 0..other.d {
            mb[map[j]] = other.data[j] + offset[j];
            present[map[j]] = true;
        }
        let na = self.n as f64;
        let nb = other.n as f64;
        let n = na + nb;
        let mut delta = vec![0.0; d];
        for a in 0..d {
            delta[a] = mb[a] - self.data[a];
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let d = rows[0].len();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..d).map(|a| rows.iter().map(|r| r[a]).sum::<f64>() / n).collect();
        let cov = (0..d)
            .map(|a| (0..d).map(|b| rows.iter().map(|r| (r[a] - mean[a]) * (r[b] - mean[b])).sum()).collect())
            .collect();
        (mean, cov)
    }

    #[test]
    fn welford_and_chan_agree_with_two_pass() {
        let rows: Vec<Vec<f64>> = (0..50).map(|i| {
            let x = i as f64;
            vec![x.sin() * 3.0, (x * 0.7).cos() + x * 0.1, if i % 3 == 0 { 1.0 } else { 0.0 }]
        }).collect();
        let (mean, cov) = naive(&rows);
        let mut all = Moments::new(3);
        let mut a = Moments::new(3);
        let mut b = Moments::new(3);
        let mut dl = vec![0.0; 3];
        for (i, r) in rows.iter().enumerate() {
            all.push(r, &mut dl);
            if i < 17 { a.push(r, &mut dl) } else { b.push(r, &mut dl) }
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
            vec![1.0, 1.0, 0.0], vec![2.0, 0.0, 0.0], vec![3.0, 0.0, 1.0],
            vec![4.0, 0.0, 1.0], vec![5.0, 1.0, 0.0],
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

/// One group's moments, restricted to what a fit needs of a group: the count,
/// the means of all d columns, and the co-moments of the q random-effect
/// columns with all d columns (row-major q×d). The full d×d co-moments are
/// needed only over all rows, and are kept once per state (`Moments`). This
/// keeps the per-row memory traffic of a group to d + q·d doubles.
#[derive(Debug, Clone, Default)]
pub struct GroupMoments {
    pub n: u64,
    pub d: usize,
    pub q: usize,
    /// mean[0..d] then com[zi * d + c].
    pub data: Vec<f64>,
}

impl GroupMoments {
    pub fn new(d: usize, q: usize) -> GroupMoments {
        GroupMoments { n: 0, d, q, data: vec![0.0; d + q * d] }
    }

    #[inline]
    pub fn mean(&self, c: usize) -> f64 {
        if c < self.d {
            self.data[c]
        } else {
            0.0
        }
    }

    /// Co-moment of random-effect column `zi` with column `c`; 0 where never stored.
    #[inline]
    pub fn comoment(&self, zi: usize, c: usize) -> f64 {
        if zi < self.q && c < self.d {
            self.data[self.d + zi * self.d + c]
        } else {
            0.0
        }
    }

    /// Grow to d columns and q random-effect rows (new entries are 0: see `Moments::grow`).
    pub fn grow(&mut self, d: usize, q: usize) {
        if d <= self.d && q <= self.q {
            return;
        }
        let (d, q) = (d.max(self.d), q.max(self.q));
        let mut data = vec![0.0; d + q * d];
        data[..self.d].copy_from_slice(&self.data[..self.d]);
        for zi in 0..self.q {
            let src = &self.data[self.d + zi * self.d..self.d + (zi + 1) * self.d];
            data[d + zi * d..d + zi * d + self.d].copy_from_slice(src);
        }
        self.data = data;
        self.d = d;
        self.q = q;
    }

    /// Welford's update; `x` holds the row minus the shift (length d), `zcols[zi]` the
    /// column of random-effect row zi.
    #[inline]
    pub fn push(&mut self, x: &[f64], zcols: &[usize], delta: &mut [f64]) {
        let d = self.d;
        self.n += 1;
        let n = self.n as f64;
        let inv_n = 1.0 / n;
        let (mean, com) = self.data.split_at_mut(d);
        for a in 0..d {
            let dl = x[a] - mean[a];
            delta[a] = dl;
            mean[a] += dl * inv_n;
        }
        if self.n == 1 {
            return;
        }
        let f = (n - 1.0) * inv_n;
        for (zi, row) in com.chunks_exact_mut(d).enumerate().take(self.q) {
            let dz = delta[zcols[zi]] * f;
            for (r, dc) in row.iter_mut().zip(delta[..d].iter()) {
                *r += dz * dc;
            }
        }
    }

    /// Chan's merge of `other` (its column j is our `map[j]`, its row zi our `zmap[zi]`,
    /// its means + `offset[j]` are relative to our shifts); `other` is not modified.
    pub fn merge_mapped(&mut self, other: &GroupMoments, map: &[usize], offset: &[f64], zmap: &[usize], zcols: &[usize]) {
        if other.n == 0 {
            return;
        }
        let need_d = map.iter().take(other.d).copied().max().map_or(0, |m| m + 1);
        let need_q = zmap.iter().take(other.q).copied().max().map_or(0, |m| m + 1);
        self.grow(need_d, need_q);
        let (d, q) = (self.d, self.q);
        let na = self.n as f64;
        let nb = other.n as f64;
        let n = na + nb;
        let mut delta = vec![0.0; d];
        for a in 0..d {
            delta[a] = -self.data[a];
        }
        for j in 0..other.d {
            delta[map[j]] += other.data[j] + offset[j];
        }
        let w = na * nb / n;
        for zi in 0..q {
            let dz = delta[zcols[zi]] * w;
            for c in 0..d {
                self.data[d + zi * d + c] += dz * delta[c];
            }
        }
        for zi in 0..other.q {
            for j in 0..other.d {
                self.data[d + zmap[zi] * d + map[j]] += other.data[other.d + zi * other.d + j];
            }
        }
        for a in 0..d {
            self.data[a] += delta[a] * nb / n;
        }
        self.n += other.n;
    }
}

//! The covariance parameter θ and the relative covariance factor Λ(θ).
//!
//! Random effects b = Λ u with u ~ N(0, σ² I), so Var(b) = σ² Λ Λᵀ. Λ is
//! block diagonal, one lower-triangular block per random-effects bar; θ lists
//! each block's lower triangle column by column (lme4's order). Diagonal
//! entries are bounded below by 0, off-diagonal ones are free.

#[derive(Debug, Clone)]
pub struct ThetaLayout {
    /// (offset, size) of each block within the q random-effect columns.
    pub blocks: Vec<(usize, usize)>,
    pub q: usize,
}

impl ThetaLayout {
    pub fn new(block_sizes: &[usize]) -> ThetaLayout {
        let mut blocks = Vec::new();
        let mut off = 0;
        for &s in block_sizes {
            blocks.push((off, s));
            off += s;
        }
        ThetaLayout { blocks, q: off }
    }

    pub fn len(&self) -> usize {
        self.blocks.iter().map(|&(_, s)| s * (s + 1) / 2).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lower bounds: 0 on diagonals, -∞ elsewhere.
    pub fn lower(&self) -> Vec<f64> {
        let mut lo = Vec::new();
        for &(_, s) in &self.blocks {
            for j in 0..s {
                for i in j..s {
                    lo.push(if i == j { 0.0 } else { f64::NEG_INFINITY });
                }
            }
        }
        lo
    }

    /// lme4's start: Λ = I.
    pub fn start(&self) -> Vec<f64> {
        self.lower()
            .iter()
            .map(|&l| if l == 0.0 { 1.0 } else { 0.0 })
            .collect()
    }

    /// Indices into θ of the diagonal entries.
    pub fn diagonal(&self) -> Vec<usize> {
        let lo = self.lower();
        (0..lo.len()).filter(|&i| lo[i] == 0.0).collect()
    }

    /// (row, column) in Λ of each θ entry.
    pub fn positions(&self) -> Vec<(usize, usize)> {
        let mut pos = Vec::new();
        for &(off, s) in &self.blocks {
            for j in 0..s {
                for i in j..s {
                    pos.push((off + i, off + j));
                }
            }
        }
        pos
    }

    /// Λ as a dense q×q column-major matrix.
    pub fn lambda(&self, theta: &[f64]) -> Vec<f64> {
        let q = self.q;
        let mut l = vec![0.0; q * q];
        let mut k = 0;
        for &(off, s) in &self.blocks {
            for j in 0..s {
                for i in j..s {
                    l[(off + j) * q + off + i] = theta[k];
                    k += 1;
                }
            }
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_full_and_a_scalar_block() {
        let t = ThetaLayout::new(&[2, 1]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.start(), vec![1.0, 0.0, 1.0, 1.0]);
        assert_eq!(t.diagonal(), vec![0, 2, 3]);
        let l = t.lambda(&[1.0, 2.0, 3.0, 4.0]);
        // column-major 3×3: col0 = (1,2,0), col1 = (0,3,0), col2 = (0,0,4)
        assert_eq!(l, vec![1.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0]);
    }
}

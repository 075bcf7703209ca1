//! A state's `poly()` powers re-expressed about another origin, so that two
//! states with different origins can merge (`Accumulator::merge`).
//!
//! A state accumulates the columns u^j z (u = x − a, z the rest of the
//! term, j = 0 … k with u⁰ z = z, the term without x; z = 1 is the
//! intercept, which is no column). About b = a + δ,
//!
//! ```text
//!   (x − b)^j z = (u − δ)^j z = Σ_{i ≤ j} C(j, i) (−δ)^{j−i} u^i z
//! ```
//!
//! a linear map T of the columns plus a constant where z = 1. Means are
//! stored relative to per-column shifts K, so the constant and T K become
//! the new shifts and the stored means and co-moments transform by T alone
//! (`stats::ColumnMap`): every group's, every cell's and all rows'.

use crate::accumulator::{Accumulator, Kind};
use crate::bail;
use crate::error::Result;

fn binomial(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64)
}

impl Accumulator {
    /// Re-express the powers of poly variable `slot` (index into `polys`) about origin `b`.
    pub(crate) fn reorigin(&mut self, slot: usize, b: f64) -> Result<()> {
        let (v, _, sums) = &self.polys[slot];
        let v = *v;
        let Some(a) = sums.origin else {
            self.polys[slot].2.origin = Some(b);
            return Ok(());
        };
        if a == b {
            return Ok(());
        }
        let delta = b - a;
        let d = self.ext.len();
        let mut map: Vec<Option<Vec<(usize, f64)>>> = vec![None; d];
        let mut constant = vec![0.0; d];
        for c in 0..d {
            let e = &self.ext[c];
            if e.term == usize::MAX {
                continue;
            }
            let spec = &self.terms[e.term];
            let Some(at) = spec.vars.iter().position(|&w| w == v) else {
                continue;
            };
            let j = spec.powers[at];
            // level id of each categorical variable of the column
            let cats: Vec<usize> = spec
                .vars
                .iter()
                .copied()
                .filter(|&w| self.vars[w].kind != Some(Kind::Numeric))
                .collect();
            let level_of = |w: usize| e.levels[cats.iter().position(|&x| x == w).unwrap()];
            let mut terms = Vec::with_capacity(j as usize + 1);
            for i in 0..=j {
                let coef = binomial(j, i) * (-delta).powi((j - i) as i32);
                let (mut vars, mut powers) = (Vec::new(), Vec::new());
                for (&w, &p) in spec.vars.iter().zip(&spec.powers) {
                    if w != v {
                        vars.push(w);
                        powers.push(p);
                    } else if i > 0 {
                        vars.push(w);
                        powers.push(i);
                    }
                }
                if vars.is_empty() {
                    constant[c] += coef;
                    continue;
                }
                let Some(src) = self.column_at(&vars, &powers, &level_of) else {
                    bail!("internal: a lower power of '{}' has no column", self.vars[v].name);
                };
                if (self.zindex[c] == usize::MAX) != (self.zindex[src] == usize::MAX) {
                    bail!("internal: the powers of '{}' are not all random-effect columns", self.vars[v].name);
                }
                terms.push((src, coef));
            }
            map[c] = Some(terms);
        }
        let old_shift = self.shift.clone();
        for c in 0..d {
            if let Some(terms) = &map[c] {
                self.shift[c] =
                    terms.iter().map(|&(s, w)| w * old_shift[s]).sum::<f64>() + constant[c];
            }
        }
        self.global.grow(d);
        self.global.transform(&map);
        let q = self.zcols.len();
        for f in &mut self.factors {
            f.store.ensure(d, q);
            f.store.transform(&map, &self.zcols, &self.zindex);
        }
        for cell in &mut self.cells {
            cell.store.ensure(d, q);
            cell.store.transform(&map, &self.zcols, &self.zindex);
        }
        self.polys[slot].2.reorigin(b);
        Ok(())
    }

    /// The extended column of the term over `vars` at `powers` whose
    /// categorical variables are at the levels `level_of` gives.
    fn column_at(
        &self,
        vars: &[usize],
        powers: &[u32],
        level_of: &dyn Fn(usize) -> u32,
    ) -> Option<usize> {
        let same = |t: &crate::accumulator::TermSpec| {
            t.vars.len() == vars.len()
                && vars.iter().zip(powers).all(|(w, p)| {
                    t.vars
                        .iter()
                        .zip(&t.powers)
                        .any(|(tw, tp)| tw == w && tp == p)
                })
        };
        let spec = self.terms.iter().find(|t| same(t))?;
        let key: Vec<u32> = spec
            .vars
            .iter()
            .copied()
            .filter(|&w| self.vars[w].kind != Some(Kind::Numeric))
            .map(level_of)
            .collect();
        spec.columns.get(&key).copied()
    }
}

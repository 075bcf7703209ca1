//! Columns re-expressed as w = (v − centre) / scale, and their cross-products
//! from the stored moments (all rows, or one group's).

use crate::design::Source;
use crate::stats::{GroupView, Moments};

/// A model column re-expressed as w = (v − centre) / scale, centre relative to the state's shift.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    pub source: Source,
    pub centre: f64,
    pub scale: f64,
}

/// Σ over rows of w_a w_b from a count (the weight total, with prior
/// weights: the sums are then weighted), means and co-moments
/// (`comoment(i, j)` for extended columns i, j).
fn cross_with(n: f64, mean: impl Fn(usize) -> f64, comoment: impl Fn(usize, usize) -> f64, a: &Col, b: &Col) -> f64 {
    match (a.source, b.source) {
        (Source::Zero, _) | (_, Source::Zero) => 0.0,
        (Source::Ones, Source::Ones) => n,
        (Source::Ones, Source::Ext(j)) => n * (mean(j) - b.centre) / b.scale,
        (Source::Ext(i), Source::Ones) => n * (mean(i) - a.centre) / a.scale,
        (Source::Ext(i), Source::Ext(j)) => {
            (comoment(i, j) + n * (mean(i) - a.centre) * (mean(j) - b.centre)) / (a.scale * b.scale)
        }
    }
}

/// Σ over all rows of w_a w_b.
pub(super) fn cross(m: &Moments, a: &Col, b: &Col) -> f64 {
    cross_with(m.w, |c| m.mean(c), |i, j| m.comoment(i, j), a, b)
}

/// Σ over a group's rows of w_a w_b, for a random-effect column a (intercept or
/// row `zindex[c]` of the group's co-moments).
pub(super) fn cross_group(m: &GroupView, a: &Col, b: &Col, zindex: &[usize]) -> f64 {
    cross_with(m.n(), |c| m.mean(c), |i, j| m.comoment(zindex[i], j), a, b)
}

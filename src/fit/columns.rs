//! Columns re-expressed as w = (v − centre) / scale, and their cross-products
//! from the stored moments (all rows, or one group's).

use crate::design::Source;
use crate::stats::{GroupView, Moments};

/// A model column re-expressed as w = (v − centre) / scale, centre relative to the state's shift.
#[derive(Debug, Clone)]
pub(crate) struct Col {
    pub source: Source,
    pub centre: f64,
    pub scale: f64,
}

/// The extended columns and coefficients of a combination (`Source::Combo`;
/// an `Ext` column is one with coefficient 1).
pub(crate) fn each_term(s: &Source, mut f: impl FnMut(usize, f64)) {
    match s {
        Source::Ext(c) => f(*c, 1.0),
        Source::Combo(terms, _) => terms.iter().for_each(|&(c, w)| f(c, w)),
        Source::Ones | Source::Zero => {}
    }
}

/// The constant of a combination (a centred scale() column's −c/s), 0 otherwise.
pub(crate) fn constant_of(s: &Source) -> f64 {
    match s {
        Source::Combo(_, k) => *k,
        _ => 0.0,
    }
}

/// Σ over rows of w_a w_b from a count (the weight total, with prior
/// weights: the sums are then weighted), means and co-moments
/// (`comoment(i, j)` for extended columns i, j). A combination's mean and
/// co-moments are those of its terms, combined.
fn cross_with(
    n: f64,
    mean: impl Fn(usize) -> f64,
    comoment: impl Fn(usize, usize) -> f64,
    a: &Col,
    b: &Col,
) -> f64 {
    let combined_mean = |s: &Source| {
        let mut m = 0.0;
        each_term(s, |c, w| m += w * mean(c));
        m
    };
    match (&a.source, &b.source) {
        (Source::Zero, _) | (_, Source::Zero) => 0.0,
        (Source::Ones, Source::Ones) => n,
        (Source::Ext(i), Source::Ext(j)) => {
            (comoment(*i, *j) + n * (mean(*i) - a.centre) * (mean(*j) - b.centre))
                / (a.scale * b.scale)
        }
        (Source::Ones, s) => n * (combined_mean(s) - b.centre) / b.scale,
        (s, Source::Ones) => n * (combined_mean(s) - a.centre) / a.scale,
        (sa, sb) => {
            let mut c = 0.0;
            each_term(sa, |i, wi| {
                each_term(sb, |j, wj| c += wi * wj * comoment(i, j))
            });
            (c + n * (combined_mean(sa) - a.centre) * (combined_mean(sb) - b.centre))
                / (a.scale * b.scale)
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

//! From accumulated statistics to a fitted model and its tidy table, in steps:
//! `setup` (columns re-expressed, checked, crossed), `one_factor` or
//! `several_factors` (the optimum of the likelihood), `report` (the model value).
//!
//! Conditioning: before optimising, the columns are re-expressed about the
//! data (exactly, from the stored moments):
//! - X columns and y are centred at their overall means when the model has an
//!   intercept (β̂ is mapped back: the intercept absorbs Σ β_j x̄_j and ȳ);
//!   centring is unit-triangular, so even the REML criterion is unchanged;
//! - random-effect columns are scaled to unit SD, and centred too inside a
//!   correlated block that has an intercept. Both are invertible maps within
//!   the block's covariance family, so the likelihood's optimum is the same;
//!   Var(b) and the BLUPs are mapped back with b = T b_c.
//! A covariate far from zero (epoch seconds) would otherwise make the
//! intercept nearly collinear with its slope and the optimiser ill-conditioned.

mod checks;
mod columns;
mod estimates;
mod one_factor;
mod report;
mod setup;
mod several_factors;

pub(crate) use one_factor::optimize as optimize_one_factor;
pub(crate) use report::{data_scale, statistics, table};
pub(crate) use setup::prepare_with;

use crate::accumulator::Accumulator;
use crate::error::Result;
use crate::model::Model;
use crate::tidy::Tidy;

/// Fit and return the tidy table.
pub fn fit(acc: &Accumulator) -> Result<Tidy> {
    fit_model(acc).map(Model::into_tidy)
}

/// Fit and return the model value (its tidy table included).
pub fn fit_model(acc: &Accumulator) -> Result<Model> {
    let t0 = std::time::Instant::now();
    let trace = |what: &str| {
        if std::env::var_os("LMM_TRACE").is_some() {
            eprintln!("lmm: {what} {:.3}s", t0.elapsed().as_secs_f64());
        }
    };
    let setup = setup::prepare(acc)?;
    let est = if setup.specs.len() == 1 {
        one_factor::estimate(acc, &setup, &trace)?
    } else {
        several_factors::estimate(acc, &setup, &trace)?
    };
    trace(&format!("optimized ({} evaluations)", est.evaluations));
    let model = report::model(acc, &setup, est)?;
    trace("results");
    Ok(model)
}

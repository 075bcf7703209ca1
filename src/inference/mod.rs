//! Inference after the fit: everything that evaluates the likelihood at
//! parameters other than the optimum, from the statistics a model value keeps
//! (never from rows).
//!
//! - `satterthwaite`: lmerTest's Satterthwaite degrees of freedom.
//! - `profile`: lme4's profile likelihood and profile confidence intervals.
//! - `tdist`: the t distribution (regularised incomplete beta).

pub mod likelihood;
pub mod optimum;
pub mod profile;
pub mod satterthwaite;
pub mod stored;
pub mod tdist;

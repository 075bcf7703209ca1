//! Inference after the fit: everything that evaluates the likelihood at
//! parameters other than the optimum, from the statistics a model value keeps
//! (never from rows).
//!
//! - `bootstrap`: parametric bootstrap replicates drawn as statistics.
//! - `satterthwaite`: lmerTest's Satterthwaite degrees of freedom.
//! - `profile`: lme4's profile likelihood and profile confidence intervals.
//! - `tdist`: the t distribution (regularised incomplete beta).

pub mod anova;
pub mod contrast;
pub mod distributions;
pub mod fitted;
pub mod likelihood;
pub mod lrt;
pub mod run;
pub mod table;
pub mod optimum;
pub mod bootstrap;
pub mod profile;
pub mod satterthwaite;
pub mod stored;
pub mod summary;
pub mod tdist;
pub mod varpar;

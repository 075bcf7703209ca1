//! Inference after the fit: everything that evaluates the likelihood at
//! parameters other than the optimum, from the statistics a model value keeps
//! (never from rows).
//!
//! - `bootstrap`: parametric bootstrap replicates drawn as statistics.
//! - `satterthwaite`: lmerTest's Satterthwaite degrees of freedom.
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
pub mod satterthwaite;
pub mod stored;
pub mod tdist;
pub mod varpar;

//! Inference after the fit: everything that evaluates the likelihood at
//! parameters other than the optimum, from the statistics a model value keeps
//! (never from rows).
//!
//! - `kenward_roger`: pbkrtest's Kenward–Roger adjusted covariance and F/t tests.
//! - `satterthwaite`: lmerTest's Satterthwaite degrees of freedom.
//! - `tdist`: the t and F distributions (regularised incomplete beta).

pub mod kenward_roger;
pub mod satterthwaite;
pub mod tdist;

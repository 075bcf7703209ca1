//! Inference after the fit: everything that evaluates the likelihood at
//! parameters other than the optimum, from the statistics a model value keeps
//! (never from rows). All of it goes through one interface to the likelihood
//! (`likelihood::Likelihood`), which the one-factor and the several-factor
//! problems implement.
//!
//! - `stored`: the statistics a model value keeps; `fitted`: a model value read for inference.
//! - `likelihood`, `optimum`: the criterion at any θ, and its optimum from a start.
//! - `satterthwaite`: the asymptotic covariance of (θ, σ) and Satterthwaite's df.
//! - `kenward_roger`: pbkrtest's Kenward–Roger adjusted covariance and F/t tests.
//! - `contrast`, `anova`: lmerTest's `contest` and `anova` tables.
//! - `lrt`: likelihood-ratio tests (lme4's `anova(m0, m1)`).
//! - `profile`: lme4's profile likelihood and profile confidence intervals.
//! - `bootstrap`: parametric bootstrap replicates drawn as statistics, refitted.
//! - `varpar`, `summary`: the variance parameters by name; lme4's `summary()`.
//! - `distributions`, `tdist`: the t, F, χ² and normal distributions.
//! - `run`, `table`: the functions as SQL calls them, and their result table.

pub mod anova;
pub mod bootstrap;
pub mod contrast;
pub mod distributions;
pub mod fitted;
pub mod kenward_roger;
pub mod likelihood;
pub mod lrt;
pub mod optimum;
pub mod profile;
pub mod run;
pub mod satterthwaite;
pub mod stored;
pub mod summary;
pub mod table;
pub mod tdist;
pub mod varpar;

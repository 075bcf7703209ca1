//! Row-level transformations written in the formula: `I(Days^2)`,
//! `log(Reaction)`, `factor(x)`, `offset(e)`, `scale(x)`.
//!
//! - `expr`: the arithmetic, its evaluation and its R name.
//! - `derive`: a chunk's columns → the model's variables (the fit and a
//!   prediction compute them the same way, from the formula kept in the
//!   model value).
//! - `scale`: R's `scale()`, its centre and scale from moments of the pass.

pub mod derive;
pub mod expr;
pub mod poly;
pub mod reorigin;
pub mod scale;

pub use derive::Derivation;

//! Row-level transformations written in the formula: `I(Days^2)`,
//! `log(Reaction)`, `factor(x)`, `offset(e)`.
//!
//! - `expr`: the arithmetic, its evaluation and its R name.
//! - `derive`: a chunk's columns → the model's variables (the fit and a
//!   prediction compute them the same way, from the formula kept in the
//!   model value).

pub mod derive;
pub mod expr;

pub use derive::Derivation;

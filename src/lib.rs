//! `lmm`: linear mixed models fitted from streamed sufficient statistics.
//!
//! The statistics core (everything but `ext`) knows nothing of DuckDB.

pub mod error;
pub mod input;
pub mod options;
pub mod tidy;
pub mod accumulator;
pub mod budget;
pub mod cancel;
pub mod crossed;
pub mod dense;
pub mod design;
pub mod fit;
pub mod inference;
pub mod formula;
pub mod levels;
pub mod model;
pub mod predict;
pub mod optimizer;
pub mod reml;
pub mod start;
pub mod stats;
pub mod statistics;
pub mod distributed;
pub mod codec;
pub mod contrasts;
pub mod theta;
pub mod transform;

pub mod ext;

pub use accumulator::Accumulator;
pub use error::{LmmError, Result};
pub use options::Options;
pub use tidy::TidyRow;

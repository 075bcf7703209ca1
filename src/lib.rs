//! `lmm`: linear mixed models fitted from streamed sufficient statistics.
//!
//! The statistics core (everything but `ext`) knows nothing of DuckDB.

pub mod accumulator;
pub mod budget;
pub mod cancel;
pub mod codec;
pub mod contrasts;
pub mod crossed;
pub mod dense;
pub mod design;
pub mod distributed;
pub mod error;
pub mod fit;
pub mod formula;
pub mod inference;
pub mod input;
pub mod levels;
pub mod model;
pub mod optimizer;
pub mod options;
pub mod predict;
pub mod reml;
pub mod start;
pub mod statistics;
pub mod stats;
pub mod theta;
pub mod tidy;
pub mod transform;

pub mod ext;

pub use accumulator::Accumulator;
pub use error::{LmmError, Result};
pub use options::Options;
pub use tidy::TidyRow;

//! Statistics as values: an accumulation (`Accumulator`) written to bytes,
//! moved anywhere, read back and merged exactly, then fitted — the route for
//! data that one DuckDB process should not scan (shards, other engines,
//! Spark executors).
//!
//! Every statistic the fit uses is a sum over rows, kept as per-group counts,
//! means and co-moments about a shift (`stats`); two accumulations of
//! disjoint rows merge by Chan's pairwise formulas (`Accumulator::merge`),
//! which map each side's levels and design columns onto the other's by key.
//! So any partition of the rows (shards that split groups, levels seen in
//! one shard only, empty shards) merges to the statistics of all rows, up to
//! rounding.
//!
//! The value (`docs/stats-format.md`): a 32-byte header (magic `LMMSTATS`,
//! format version, flags, checksum and length of the payload), then the
//! formula, the options, each variable's type and levels (as their keys),
//! the design columns with their shifts, the all-rows moments, and per
//! grouping factor (and per pair of factors, the level cells that occur)
//! the per-level moments.
//!
//! - `encode`: an accumulation to bytes.
//! - `decode`: bytes to an accumulation, every count and index checked.

mod decode;
mod encode;

pub use decode::{decode, identity};
pub use encode::encode;

pub const MAGIC: &[u8; 8] = b"LMMSTATS";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
/// Header flag: the rows carried prior weights (`weights :=`).
pub const WEIGHTED: u32 = 1;

#[cfg(test)]
pub(crate) mod tests;

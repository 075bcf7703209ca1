//! Distributed fits of one-factor models: the groups stay on the shards
//! (for Spark, the partitions of rows partitioned by group), the optimizer
//! runs on the driver, and each evaluation of the criterion is one round
//! trip that brings back a few numbers per shard.
//!
//! # Why the criterion splits over shards
//!
//! With one grouping factor ZᵀZ is block diagonal, and everything the
//! profiled criterion and its gradient need is a sum over groups of terms of
//! the group's own block (`reml`'s module doc, R = [X y], k = p + 1):
//!
//! ```text
//!   S      = RᵀR − Σ_i C_iᵀC_i              log|L|² = Σ_i log|L_i|²
//!   ∂_j log|L|² = Σ_i 2 (M_i⁻¹ΛᵀA_i)[c, r]   T_j = Σ_i Q_i[r,:]ᵀ P_i[c,:]
//! ```
//! A shard answers with its groups' sums (`reml::Partial`: 1 + k² + n_θ(1 +
//! k²) numbers, whatever its number of groups); the driver adds the answers
//! in shard order, subtracts from RᵀR and finishes the evaluation (a k×k
//! Cholesky), exactly as `reml::Problem` does with its own groups. The
//! moment start is a sum over groups too (`start::MomentSums`), and at the
//! optimum each group's BLUP needs only θ̂, β̂, σ̂² and its own block, so the
//! BLUPs are computed where the groups are and never travel to the driver.
//! The asymptotics (Satterthwaite's df, the SEs of the variance parameters)
//! are differences of exact gradients: more round trips of the same kind.
//!
//! # The columns every side agrees on
//!
//! The fit re-expresses the columns about the moments of all rows (`fit`'s
//! module doc), which no shard has. They are in the *header*: a shard's
//! statistics value without its groups (`header`), which merges over shards
//! like any value (`Accumulator::merge`). Each shard re-bases its groups on
//! the merged header (a merge of its statistics into the header maps its
//! design columns and shifts onto the header's) and runs the same
//! `fit::prepare_with` on the same header and total number of levels as the
//! driver, so every side holds the same columns, bit for bit.
//!
//! # Steps
//!
//! 1. per shard, its statistics (`lmm_stats_agg`) and from them its header
//!    and number of levels (`header::of`); the driver merges the headers and
//!    adds the level counts (the rows must be partitioned by group: a group
//!    whose rows are on two shards would count as two groups);
//! 2. the driver fits (`driver::fit`), asking the shards (`driver::Ask`)
//!    with `protocol::Request`s; each shard answers (`shard::Shard::answer`);
//! 3. the BLUPs: each shard's rows of the tidy table (`Shard::blups`) at the
//!    estimates the driver hands out.
//!
//! Crossed and nested models do not split this way (the levels of one
//! factor couple those of another) and take the merged route.

pub mod cache;
pub mod driver;
pub mod exchange;
pub mod header;
pub mod protocol;
pub mod shard;

#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod tests;

/// Only models of one grouping factor split over shards of whole groups.
fn one_factor(acc: &crate::accumulator::Accumulator) -> crate::error::Result<()> {
    if acc.factors.len() != 1 {
        crate::bail!(
            "a distributed fit takes one grouping factor; this formula has {} (crossed or nested): fit its merged statistics instead",
            acc.factors.len()
        );
    }
    Ok(())
}

/// The columns whose values make the groups of `formula`'s one grouping
/// factor (with `options`' `grp` and `re`): what to partition the rows by.
pub fn grouping_columns(
    formula: &str,
    options: crate::options::Options,
) -> crate::error::Result<Vec<String>> {
    let acc = crate::accumulator::Accumulator::new(formula, options)?;
    one_factor(&acc)?;
    Ok(acc.factors[0]
        .vars
        .iter()
        .map(|&v| acc.vars[v].name.clone())
        .collect())
}

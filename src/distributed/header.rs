//! A shard's header: its statistics without the groups (all-rows moments,
//! design columns with their shifts, the levels of categorical columns), and
//! a shard's groups re-based onto a merged header.

use crate::accumulator::{Accumulator, Cells};
use crate::bail;
use crate::error::Result;
use crate::levels::Levels;
use crate::stats::GroupStore;

/// The header of `acc` and its number of levels of the first grouping factor.
pub fn of(mut acc: Accumulator) -> (Accumulator, usize) {
    let levels = acc.factors.first().map_or(0, |f| f.store.len());
    for f in &mut acc.factors {
        f.levels = Levels::default();
        f.store = GroupStore::default();
    }
    for c in &mut acc.cells {
        let (a, b) = (c.a, c.b);
        *c = Cells::default();
        (c.a, c.b) = (a, b);
    }
    (acc, levels)
}

/// The groups of `shard` on the columns and shifts of `header` (the merged
/// header of every shard, this one's included): `header` with `shard` merged in.
pub fn rebase(header: &Accumulator, shard: &Accumulator) -> Result<Accumulator> {
    if header.formula_text != shard.formula_text {
        bail!(
            "a shard's statistics are of another formula ('{}') than the header's ('{}')",
            shard.formula_text,
            header.formula_text
        );
    }
    let mut acc = header.clone();
    acc.merge(shard)?;
    // the header's scale() moments are every shard's already
    acc.scale_moments.clone_from(&header.scale_moments);
    for ((_, _, mine), (_, _, theirs)) in acc.polys.iter_mut().zip(&header.polys) {
        mine.clone_from(theirs);
    }
    if acc.ext.len() != header.ext.len() {
        bail!("a shard's statistics have design columns the merged header lacks: its header was not merged into it");
    }
    Ok(acc)
}

//! The shards a process serves, kept between requests.
//!
//! Every request of a distributed fit reaches each shard with the shard's
//! statistics value (Spark keeps them cached on the executors and hands them
//! to every task); decoding the value and building its groups' blocks for
//! each of the optimizer's evaluations would cost far more than answering.
//! So the built `Shard`s are kept, keyed by what identifies their inputs:
//! the checksums (verified against the bytes) and lengths of the merged
//! header and of the statistics value, and the total number of levels.
//!
//! The cache is bounded: at most `MAX_SHARDS` shards, whose statistics
//! values add up to at most `MAX_BYTES` (the newest is kept whatever its
//! size); the least recently used go first.

use std::sync::{Arc, Mutex, MutexGuard};

use super::shard::Shard;
use crate::error::Result;
use crate::statistics::{decode, identity};

pub const MAX_SHARDS: usize = 64;
pub const MAX_BYTES: usize = 4 << 30;

type Key = ((u64, usize), usize, (u64, usize));

struct Kept {
    key: Key,
    bytes: usize,
    shard: Arc<Shard>,
}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

fn kept() -> MutexGuard<'static, Vec<Kept>> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shard of `stats` under the merged `header` of `levels` groups in all,
/// built once and kept (`Shard::new`).
pub fn shard(header: &[u8], levels: usize, stats: &[u8]) -> Result<Arc<Shard>> {
    let key = (identity(header)?, levels, identity(stats)?);
    {
        let mut all = kept();
        if let Some(i) = all.iter().position(|k| k.key == key) {
            let k = all.remove(i);
            let shard = k.shard.clone();
            all.push(k);
            return Ok(shard);
        }
    }
    let shard = Arc::new(Shard::new(&decode(header)?, levels, &decode(stats)?)?);
    let mut all = kept();
    if let Some(k) = all.iter().find(|k| k.key == key) {
        return Ok(k.shard.clone());
    }
    all.push(Kept {
        key,
        bytes: stats.len(),
        shard: shard.clone(),
    });
    while all.len() > MAX_SHARDS
        || (all.len() > 1 && all.iter().map(|k| k.bytes).sum::<usize>() > MAX_BYTES)
    {
        all.remove(0);
    }
    Ok(shard)
}

/// How many shards are kept (for tests).
pub fn len() -> usize {
    kept().len()
}

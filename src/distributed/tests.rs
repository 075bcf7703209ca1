//! A distributed fit over shards of whole groups gives `lmm_fit`'s table on
//! all rows (1e-9 relative), BLUPs included; what it cannot fit is refused.

use std::sync::Arc;

use super::driver::{self, Ask};
use super::header;
use super::protocol::{answer_from_bytes, answer_to_bytes, Request};
use super::shard::Shard;
use crate::error::Result;
use crate::options::{Ddf, Method};
use crate::statistics::tests::{accumulate, data, key, Data};
use crate::statistics::{decode, encode};
use crate::tidy::TidyRow;
use crate::Accumulator;

/// Shards in this process, asked in order; requests and answers go through their bytes.
struct Local(Vec<Shard>);

impl Ask for Local {
    fn ask(&self, request: &Request) -> Result<Vec<Option<Vec<f64>>>> {
        let request = Request::from_bytes(&request.to_bytes())?;
        self.0
            .iter()
            .map(|s| answer_from_bytes(&answer_to_bytes(s.answer(&request)?.as_deref())))
            .collect()
    }
}

/// The rows of each shard (a shard: groups g with index % `shards` = s), the
/// last shard empty.
fn by_group(d: &Data, shards: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); shards + 1];
    for r in 0..d.y.len() {
        out[d.g[r][1..].parse::<usize>().unwrap() % shards].push(r);
    }
    out
}

/// The distributed fit's whole table (BLUPs from every shard) and its round trips.
fn distributed(
    formula: &str,
    d: &Data,
    shards: &[Vec<usize>],
    set: impl Fn(&mut Accumulator),
) -> Result<(Vec<TidyRow>, usize)> {
    let stats: Vec<Accumulator> = shards
        .iter()
        .map(|rows| decode(&encode(&accumulate(formula, d, rows))).unwrap())
        .collect();
    // each shard's header travels as a value; the driver merges them
    let mut merged: Option<Accumulator> = None;
    let mut levels = 0;
    for s in &stats {
        let (h, l) = header::of(s.clone());
        let h = decode(&encode(&h)).unwrap();
        levels += l;
        match &mut merged {
            Some(m) => m.merge(&h)?,
            None => merged = Some(h),
        }
    }
    let mut merged = merged.unwrap();
    set(&mut merged);
    let local: Vec<Shard> = stats
        .iter()
        .map(|s| Shard::new(&merged, levels, s))
        .collect::<Result<_>>()?;
    let ask = Arc::new(Local(local));
    let fitted = driver::fit(&merged, levels, ask.clone())?;
    let mut rows = fitted.tidy.into_rows();
    if let Some(request) = &fitted.blups {
        for s in &ask.0 {
            rows.extend(s.blups(request)?.into_rows());
        }
    }
    Ok((rows, fitted.requests))
}

fn assert_same_rows(whole: &[TidyRow], dist: &[TidyRow], what: &str) {
    assert_eq!(whole.len(), dist.len(), "{what}: rows");
    let mut by_key: std::collections::HashMap<String, &TidyRow> =
        dist.iter().map(|r| (key(r), r)).collect();
    for r in whole {
        let o = by_key
            .remove(&key(r))
            .unwrap_or_else(|| panic!("{what}: no row {}", key(r)));
        let (a, b) = (r.as_ref().values, o.as_ref().values);
        for (x, y) in a.iter().zip(b.iter()) {
            match (x, y) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(1e-3),
                    "{what} {}: {x} vs {y}",
                    key(r)
                ),
                (None, None) => {}
                _ => panic!("{what} {}: {x:?} vs {y:?}", key(r)),
            }
        }
    }
}

#[test]
fn shards_of_whole_groups_fit_as_all_rows() {
    let d = data();
    let all: Vec<usize> = (0..d.y.len()).collect();
    for formula in [
        "y ~ x + c + (1 + x | g)",
        "y ~ x + (1 | g)",
        "y ~ c + (x || g)",
    ] {
        for (method, ddf) in [
            (Method::Reml, Ddf::None),
            (Method::Reml, Ddf::Satterthwaite),
            (Method::Ml, Ddf::Satterthwaite),
        ] {
            let set = |a: &mut Accumulator| (a.options.method, a.options.ddf) = (method, ddf);
            let mut whole = accumulate(formula, &d, &all);
            set(&mut whole);
            let whole = whole.finish().unwrap();
            for shards in [1, 3, 40] {
                let what = format!("{formula} {method:?} {ddf:?}, {shards} shards");
                let (rows, requests) =
                    distributed(formula, &d, &by_group(&d, shards), set).unwrap();
                assert!(requests > 3, "{what}: {requests} round trips");
                assert_same_rows(&whole, &rows, &what);
            }
        }
    }
}

#[test]
fn what_a_distributed_fit_cannot_do_is_refused() {
    let d = data();
    let shards = by_group(&d, 3);
    let e = |f: &str, set: &dyn Fn(&mut Accumulator)| {
        distributed(f, &d, &shards, set)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let crossed = e("y ~ x + (1 | g) + (1 | h)", &|_| {});
    assert!(
        crossed.contains("one grouping factor") && crossed.contains("merged"),
        "{crossed}"
    );
    let kr = e("y ~ x + (1 | g)", &|a| a.options.ddf = Ddf::KenwardRoger);
    assert!(
        kr.contains("Kenward-Roger") && kr.contains("distributed"),
        "{kr}"
    );
    // a shard of another formula
    let (h, l) = header::of(accumulate("y ~ x + (1 | g)", &d, &shards[0]));
    let other = accumulate("y ~ c + (1 | g)", &d, &shards[1]);
    let msg = Shard::new(&h, l, &other)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("another formula"), "{msg}");
    // requests that do not fit the shard's model
    let s = Shard::new(&h, l, &accumulate("y ~ x + (1 | g)", &d, &shards[0])).unwrap();
    let wrong = s
        .answer(&Request::Partial {
            lambda: vec![1.0; 4],
            positions: None,
        })
        .err()
        .unwrap()
        .to_string();
    assert!(wrong.contains("another model"), "{wrong}");
    assert!(Request::from_bytes(&[7, 0]).is_err());
    assert!(Request::from_bytes(&Request::Moments { beta: vec![1.0] }.to_bytes()[..5]).is_err());
}

//! Statistics values: a round trip is the same accumulation, and any
//! partition of the rows into shards (groups split, levels in one shard
//! only, empty shards, shards of one row), encoded, decoded and merged,
//! fits as all rows do (1e-9 relative).

use super::*;
use crate::input::{Chunk, Column, ColumnData};
use crate::tidy::TidyRow;
use crate::{Accumulator, Options};

pub(crate) struct Data {
    pub g: Vec<String>,
    pub h: Vec<String>,
    pub c: Vec<String>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// 40 groups g of unequal size crossed with 7 levels h, a 3-level factor c, rows shuffled.
pub(crate) fn data() -> Data {
    let mut state: u64 = 7;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut d = Data {
        g: vec![],
        h: vec![],
        c: vec![],
        x: vec![],
        y: vec![],
    };
    let (bg, bh): (Vec<f64>, Vec<f64>) = (
        (0..40).map(|i| (i as f64 * 0.37).sin()).collect(),
        (0..7).map(|i| (i as f64 * 1.3).cos()).collect(),
    );
    for i in 0..600 {
        let g = (uniform() * uniform() * 40.0) as usize;
        let h = (uniform() * 7.0) as usize;
        let c = i % 3;
        let x = uniform() * 4.0;
        d.g.push(format!("g{g}"));
        d.h.push(format!("h{h}"));
        d.c.push(["a", "b", "c"][c].to_string());
        d.x.push(x);
        d.y.push(
            1.0 + 0.5 * x
                + [0.0, 0.3, -0.2][c]
                + bg[g] * (1.0 + 0.2 * x)
                + bh[h]
                + (uniform() - 0.5) * 1.5,
        );
    }
    d
}

fn chunk<'a>(acc: &Accumulator, d: &'a Data, rows: &[usize]) -> Chunk<'a> {
    let n = rows.len();
    let text =
        |v: &'a Vec<String>| ColumnData::Text(rows.iter().map(|&r| v[r].as_bytes()).collect());
    let num = |v: &Vec<f64>| ColumnData::Float(rows.iter().map(|&r| v[r]).collect());
    let columns = acc
        .required_columns()
        .iter()
        .map(|name| {
            let (data, t) = match name.as_str() {
                "g" => (text(&d.g), "VARCHAR"),
                "h" => (text(&d.h), "VARCHAR"),
                "c" => (text(&d.c), "VARCHAR"),
                "x" => (num(&d.x), "DOUBLE"),
                _ => (num(&d.y), "DOUBLE"),
            };
            Column {
                name: name.clone(),
                type_name: t.into(),
                data,
                valid: vec![true; n],
            }
        })
        .collect();
    Chunk { columns, len: n }
}

pub(crate) fn accumulate(formula: &str, d: &Data, rows: &[usize]) -> Accumulator {
    let mut acc = Accumulator::new(formula, Options::default()).unwrap();
    for part in rows.chunks(97) {
        let ch = chunk(&acc, d, part);
        let all: Vec<usize> = (0..part.len()).collect();
        acc.update(&ch, &all).unwrap();
    }
    acc
}

pub(crate) fn key(r: &TidyRow) -> String {
    format!("{} {:?} {:?} {:?}", r.effect, r.group_var, r.level, r.term)
}

fn assert_same_fit(a: &Accumulator, b: &Accumulator, what: &str) {
    let (ra, rb) = (a.finish().unwrap(), b.finish().unwrap());
    assert_eq!(ra.len(), rb.len(), "{what}: rows");
    let mut by_key: std::collections::HashMap<String, &TidyRow> =
        rb.iter().map(|r| (key(r), r)).collect();
    for r in &ra {
        let o = by_key
            .remove(&key(r))
            .unwrap_or_else(|| panic!("{what}: no row {}", key(r)));
        for (x, y) in [
            (r.estimate, o.estimate),
            (r.std_error, o.std_error),
            (r.statistic, o.statistic),
            (r.df, o.df),
        ] {
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

const FORMULAS: [&str; 3] = [
    "y ~ x + c + (1 + x | g)",
    "y ~ x + c + (1 | g) + (1 | h)",
    "y ~ x + (1 | h/g)",
];

#[test]
fn a_round_trip_is_the_same_accumulation() {
    let d = data();
    let all: Vec<usize> = (0..d.y.len()).collect();
    for f in FORMULAS {
        let acc = accumulate(f, &d, &all);
        let bytes = encode(&acc);
        let back = decode(&bytes).unwrap();
        assert_eq!(encode(&back), bytes, "{f}: the bytes of the decoded value");
        assert_same_fit(&acc, &back, f);
    }
}

#[test]
fn any_partition_merges_to_the_fit_of_all_rows() {
    let d = data();
    let n = d.y.len();
    let all: Vec<usize> = (0..n).collect();
    // shards: by hash (groups split), by group (levels in one shard only),
    // with an empty shard and shards of one row
    let mut state: u64 = 99;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let by_hash: Vec<usize> = (0..n).map(|_| next() % 5).collect();
    let by_group: Vec<usize> = (0..n)
        .map(|r| d.g[r][1..].parse::<usize>().unwrap() % 4)
        .collect();
    let singles: Vec<usize> = (0..n).map(|r| if r < 3 { 10 + r } else { r % 2 }).collect();
    for f in FORMULAS {
        let whole = accumulate(f, &d, &all);
        for (name, shard_of) in [
            ("hash", &by_hash),
            ("group", &by_group),
            ("single rows", &singles),
        ] {
            let shards = shard_of.iter().max().unwrap() + 2; // the last one stays empty
            let values: Vec<Vec<u8>> = (0..shards)
                .map(|s| {
                    let rows: Vec<usize> = (0..n).filter(|&r| shard_of[r] == s).collect();
                    encode(&accumulate(f, &d, &rows))
                })
                .collect();
            let mut merged = decode(&values[values.len() - 1]).unwrap();
            for v in values.iter().rev().skip(1) {
                merged.merge(&decode(v).unwrap()).unwrap();
            }
            // and merged values are values again
            let merged = decode(&encode(&merged)).unwrap();
            assert_same_fit(&whole, &merged, &format!("{f}, shards by {name}"));
        }
    }
}

#[test]
fn damaged_values_are_refused() {
    let d = data();
    let all: Vec<usize> = (0..d.y.len()).collect();
    let bytes = encode(&accumulate(FORMULAS[0], &d, &all));
    let e = |b: &[u8]| decode(b).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e(&bytes[..bytes.len() - 1]).contains("length"));
    let mut flipped = bytes.clone();
    flipped[100] ^= 1;
    assert!(e(&flipped).contains("checksum"));
    let mut version = bytes.clone();
    version[8] = 9;
    assert!(e(&version).contains("format version 9"));
    assert!(e(b"LMMMODEL and more bytes than a header holds").contains("model value"));
    assert!(e(b"hello").contains("not an lmm statistics value"));
    // every truncation and every byte flipped (checksum fixed up) errors or decodes, never panics
    for cut in (HEADER_LEN..bytes.len()).step_by(7) {
        let mut v = bytes[..cut].to_vec();
        let len = (v.len() - HEADER_LEN) as u64;
        v[24..32].copy_from_slice(&len.to_le_bytes());
        let sum = crate::model::checksum(&v[HEADER_LEN..]);
        v[16..24].copy_from_slice(&sum.to_le_bytes());
        assert!(decode(&v).is_err(), "truncated at {cut}");
    }
    for at in (HEADER_LEN..bytes.len()).step_by(5) {
        let mut v = bytes.clone();
        v[at] = v[at].wrapping_add(0x5b);
        let sum = crate::model::checksum(&v[HEADER_LEN..]);
        v[16..24].copy_from_slice(&sum.to_le_bytes());
        if let Ok(acc) = decode(&v) {
            let _ = acc.finish();
        }
    }
}

//! An accumulation to a statistics value (layout: `docs/stats-format.md`).

use super::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::accumulator::{Accumulator, Kind};
use crate::codec::Writer;
use crate::options::{Ddf, Method};
use crate::stats::GroupStore;

/// The statistics value of `acc`.
pub fn encode(acc: &Accumulator) -> Vec<u8> {
    let mut w = Writer {
        buf: vec![0; HEADER_LEN],
    };
    w.str(&acc.formula_text);
    let o = &acc.options;
    w.u8(match o.method {
        Method::Reml => 0,
        Method::Ml => 1,
    });
    w.u8(o.ranef as u8);
    w.u8(match o.ddf {
        Ddf::None => 0,
        Ddf::Satterthwaite => 1,
        Ddf::KenwardRoger => 2,
    });
    w.u8(o.null_on_error as u8);
    if let Some(col) = &o.weights {
        w.str(col);
    }
    w.u64(acc.n_dropped);
    w.u32(acc.vars.len() as u32);
    for v in &acc.vars {
        w.u8(match v.kind {
            None => 0,
            Some(Kind::Numeric) => 1,
            Some(Kind::Categorical) => 2,
        });
        w.str(&v.type_name);
        w.u32(v.levels.keys.len() as u32);
        for k in &v.levels.keys {
            w.bytes(k);
        }
    }
    w.u8(acc.shift_set as u8);
    w.u32(acc.ext.len() as u32);
    for (e, shift) in acc.ext.iter().zip(&acc.shift) {
        w.u32(if e.term == usize::MAX {
            u32::MAX
        } else {
            e.term as u32
        });
        w.u32(e.levels.len() as u32);
        for &l in &e.levels {
            w.u32(l);
        }
        w.f64(*shift);
    }
    w.u64(acc.global.n);
    w.u32(acc.global.d as u32);
    w.f64s(&acc.global.data);
    if o.weights.is_some() {
        w.f64(acc.global.w);
        w.f64(acc.log_weights);
    }
    for (_, m) in &acc.scale_moments {
        w.u64(m.n);
        w.f64(m.mean);
        w.f64(m.m2);
    }
    for (_, _, p) in &acc.polys {
        w.u8(p.origin.is_some() as u8);
        w.f64(p.origin.unwrap_or(0.0));
        w.f64s(&p.sums);
        w.u32(p.distinct.len() as u32);
        w.f64s(&p.distinct);
    }
    w.u32(acc.factors.len() as u32);
    for f in &acc.factors {
        w.u64(f.levels.keys.len() as u64);
        for k in &f.levels.keys {
            w.bytes(k);
        }
        store(&mut w, &f.store);
    }
    w.u32(acc.cells.len() as u32);
    for c in &acc.cells {
        w.u32(c.a as u32);
        w.u32(c.b as u32);
        w.u64(c.keys.len() as u64);
        for &(la, lb) in &c.keys {
            w.u32(la);
            w.u32(lb);
        }
        store(&mut w, &c.store);
    }
    let mut buf = w.buf;
    let checksum = crate::model::checksum(&buf[HEADER_LEN..]);
    let len = (buf.len() - HEADER_LEN) as u64;
    buf[0..8].copy_from_slice(MAGIC);
    buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if o.weights.is_some() {
        super::WEIGHTED
    } else {
        0
    };
    buf[12..16].copy_from_slice(&flags.to_le_bytes());
    buf[16..24].copy_from_slice(&checksum.to_le_bytes());
    buf[24..32].copy_from_slice(&len.to_le_bytes());
    buf
}

/// d, q, then per group: n (the weight total, with weights), d means, q rows of d co-moments.
fn store(w: &mut Writer, s: &GroupStore) {
    w.u32(s.d as u32);
    w.u32(s.q as u32);
    for g in 0..s.len() {
        let v = s.group(g);
        w.f64(v.n());
        for c in 0..s.d {
            w.f64(v.mean(c));
        }
        for zi in 0..s.q {
            for c in 0..s.d {
                w.f64(v.comoment(zi, c));
            }
        }
    }
}

//! What the driver asks the shards, and what they answer, as bytes.
//!
//! A request is a tag byte, then (all little-endian):
//! - 1 `Moments`: u32 p, β (p f64) → the shard's `start::MomentSums`;
//! - 2 `Partial`: u32 q², Λ (q² f64), u8 with-gradient, then u32 n_θ and
//!   n_θ (row, column) pairs as u32 → the shard's `reml::Partial`;
//! - 3 `Blups`: Λ as above, u32 p, β̂, f64 σ̂² → the shard's BLUP rows.
//!
//! An answer is u8 1 and u32 n, n f64 (`Partial::to_values`,
//! `MomentSums::to_values`), or u8 0: a group's system is not positive
//! definite at that Λ (the evaluation is infinite, as for local groups).

use crate::codec::{Reader, Writer};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Moments {
        beta: Vec<f64>,
    },
    Partial {
        lambda: Vec<f64>,
        positions: Option<Vec<(usize, usize)>>,
    },
    Blups {
        lambda: Vec<f64>,
        beta: Vec<f64>,
        sigma2: f64,
    },
}

const WHAT: &str = "request of a distributed fit";

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer { buf: Vec::new() };
        let vector = |w: &mut Writer, v: &[f64]| {
            w.u32(v.len() as u32);
            w.f64s(v);
        };
        match self {
            Request::Moments { beta } => {
                w.u8(1);
                vector(&mut w, beta);
            }
            Request::Partial { lambda, positions } => {
                w.u8(2);
                vector(&mut w, lambda);
                w.u8(positions.is_some() as u8);
                if let Some(pos) = positions {
                    w.u32(pos.len() as u32);
                    for &(r, c) in pos {
                        w.u32(r as u32);
                        w.u32(c as u32);
                    }
                }
            }
            Request::Blups {
                lambda,
                beta,
                sigma2,
            } => {
                w.u8(3);
                vector(&mut w, lambda);
                vector(&mut w, beta);
                w.f64(*sigma2);
            }
        }
        w.buf
    }

    pub fn from_bytes(b: &[u8]) -> Result<Request> {
        let mut r = Reader::new(b, WHAT);
        let vector = |r: &mut Reader, what: &str| -> Result<Vec<f64>> {
            let n = r.u32(what)? as usize;
            r.f64s(n, what)
        };
        let out = match r.u8("its kind")? {
            1 => Request::Moments {
                beta: vector(&mut r, "β")?,
            },
            2 => {
                let lambda = vector(&mut r, "Λ")?;
                let positions = match r.u8("its gradient flag")? {
                    0 => None,
                    _ => {
                        let n = r.u32("θ's positions")? as u64;
                        let n = r.count(n, 8, "θ's positions")?;
                        let mut pos = Vec::with_capacity(n);
                        for _ in 0..n {
                            pos.push((
                                r.u32("a position")? as usize,
                                r.u32("a position")? as usize,
                            ));
                        }
                        Some(pos)
                    }
                };
                Request::Partial { lambda, positions }
            }
            3 => Request::Blups {
                lambda: vector(&mut r, "Λ")?,
                beta: vector(&mut r, "β")?,
                sigma2: r.f64("σ²")?,
            },
            _ => return Err(r.corrupt("its kind")),
        };
        if !r.is_at_end() {
            return Err(r.corrupt("its end"));
        }
        Ok(out)
    }
}

/// An answer's bytes: the numbers, or None (not positive definite).
pub fn answer_to_bytes(values: Option<&[f64]>) -> Vec<u8> {
    let mut w = Writer { buf: Vec::new() };
    match values {
        Some(v) => {
            w.u8(1);
            w.u32(v.len() as u32);
            w.f64s(v);
        }
        None => w.u8(0),
    }
    w.buf
}

pub fn answer_from_bytes(b: &[u8]) -> Result<Option<Vec<f64>>> {
    let mut r = Reader::new(b, "answer of a shard");
    let out = match r.u8("its kind")? {
        0 => None,
        _ => {
            let n = r.u32("its numbers")? as usize;
            Some(r.f64s(n, "its numbers")?)
        }
    };
    if !r.is_at_end() {
        return Err(r.corrupt("its end"));
    }
    Ok(out)
}

//! A statistics value back to an accumulation. Every count is checked
//! against the bytes left before anything is allocated, every index against
//! what it indexes, and the layout against what the formula makes, so a
//! damaged or forged value gets an error, never a crash or a huge allocation.

use super::{FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::accumulator::{Accumulator, ExtColumn, Kind};
use crate::codec::Reader;
use crate::error::{LmmError, Result};
use crate::options::{Ddf, Method, Options};
use crate::stats::{GroupStore, Moments};
use crate::transform::scale::ScaleMoments;

const VALUE: &str = "statistics value";

fn damaged(why: &str) -> LmmError {
    LmmError::new(format!(
        "the statistics value is damaged or was not made by lmm: {why}"
    ))
}

/// The accumulation a statistics value holds.
pub fn decode(data: &[u8]) -> Result<Accumulator> {
    let payload = payload(data)?;
    let flags = u32::from_le_bytes(data[12..16].try_into().unwrap());
    if flags & !super::WEIGHTED != 0 {
        return Err(damaged("unknown flags in its header"));
    }
    let mut r = Reader::new(payload, VALUE);
    let formula = r.str("the formula")?;
    let mut options = Options::default();
    options.method = match r.u8("the method")? {
        0 => Method::Reml,
        1 => Method::Ml,
        _ => return Err(damaged("unknown method")),
    };
    options.ranef = r.u8("the options")? != 0;
    options.ddf = match r.u8("the options")? {
        0 => Ddf::None,
        1 => Ddf::Satterthwaite,
        2 => Ddf::KenwardRoger,
        _ => return Err(damaged("unknown ddf")),
    };
    options.null_on_error = r.u8("the options")? != 0;
    if flags & super::WEIGHTED != 0 {
        options.weights = Some(r.str("the weights column")?);
    }
    // grp and re are in the formula already (the bar they stand for)
    let mut acc = Accumulator::new(&formula, options)?;
    acc.n_dropped = r.u64("the rows dropped")?;
    variables(&mut r, &mut acc)?;
    acc.shift_set = r.u8("the shifts")? != 0;
    columns(&mut r, &mut acc)?;
    let n = r.u64("the moments of all rows")?;
    let d = r.u32("the moments of all rows")? as usize;
    if d != acc.ext.len() {
        return Err(damaged(
            "the moments of all rows do not match the design columns",
        ));
    }
    let data = r.f64s(d + d * (d + 1) / 2, "the moments of all rows")?;
    let weighted = acc.options.weights.is_some();
    let w = if weighted {
        r.f64("the weight total")?
    } else {
        n as f64
    };
    acc.log_weights = if weighted {
        r.f64("the log weights")?
    } else {
        0.0
    };
    if !(w.is_finite() && w >= 0.0 && acc.log_weights.is_finite()) {
        return Err(damaged(
            "the weight total is not a finite non-negative number",
        ));
    }
    acc.global = Moments { n, w, d, data };
    for i in 0..acc.scale_moments.len() {
        let m = ScaleMoments {
            n: r.u64("the moments of a scale() variable")?,
            mean: r.f64("the moments of a scale() variable")?,
            m2: r.f64("the moments of a scale() variable")?,
        };
        if !(m.mean.is_finite() && m.m2.is_finite() && m.m2 >= 0.0) {
            return Err(damaged("the moments of a scale() variable are not finite"));
        }
        acc.scale_moments[i].1 = m;
    }
    for i in 0..acc.polys.len() {
        let what = "the power sums of a poly() variable";
        let has = r.u8(what)?;
        let origin = r.f64(what)?;
        let sums = r.f64s(acc.polys[i].2.sums.len(), what)?;
        let nd = r.u32(what)? as usize;
        if nd > acc.polys[i].1.degree as usize + 1 {
            return Err(damaged("a poly() variable keeps more distinct values than its degree needs"));
        }
        let distinct = r.f64s(nd, what)?;
        let all_finite = |x: &[f64]| x.iter().all(|v| v.is_finite());
        if has > 1
            || !origin.is_finite()
            || !all_finite(&sums)
            || !all_finite(&distinct)
            || distinct.len() > acc.polys[i].1.degree as usize + 1
        {
            return Err(damaged("the power sums of a poly() variable are not finite"));
        }
        acc.polys[i].2.origin = (has == 1).then_some(origin);
        acc.polys[i].2.sums = sums;
        acc.polys[i].2.distinct = distinct;
    }
    let nf = r.u32("the grouping factors")? as usize;
    if nf != acc.factors.len() {
        return Err(damaged("the grouping factors do not match the formula"));
    }
    let (dmax, qmax) = (acc.ext.len(), acc.zcols.len());
    for fi in 0..nf {
        let nlev = r.u64("a grouping factor's levels")?;
        let nlev = r.count(nlev, 4, "a grouping factor's levels")?;
        let f = &mut acc.factors[fi];
        for l in 0..nlev {
            let key = well_formed(r.bytes("a level")?, f.vars.len())?;
            if f.levels.id(key) as usize != l {
                return Err(damaged("a grouping factor lists a level twice"));
            }
        }
        f.store = store(&mut r, nlev, dmax, qmax, weighted)?;
    }
    let np = r.u32("the factor pairs")? as usize;
    if np != acc.cells.len() {
        return Err(damaged("the factor pairs do not match the formula"));
    }
    for pi in 0..np {
        let (a, b) = (
            r.u32("a factor pair")? as usize,
            r.u32("a factor pair")? as usize,
        );
        let cells = &acc.cells[pi];
        if (a, b) != (cells.a, cells.b) {
            return Err(damaged("the factor pairs are out of order"));
        }
        let (na, nb) = (acc.factors[a].levels.len(), acc.factors[b].levels.len());
        let nc = r.u64("a pair's cells")?;
        let nc = r.count(nc, 8, "a pair's cells")?;
        for c in 0..nc {
            let (la, lb) = (r.u32("a cell")?, r.u32("a cell")?);
            if la as usize >= na || lb as usize >= nb {
                return Err(damaged("a cell names a level that does not exist"));
            }
            if acc.cells[pi].id(la, lb) != c {
                return Err(damaged("a cell is listed twice"));
            }
        }
        acc.cells[pi].store = store(&mut r, nc, dmax, qmax, weighted)?;
    }
    if !r.is_at_end() {
        return Err(damaged("bytes after the last section"));
    }
    Ok(acc)
}

/// What tells two statistics values apart: the checksum of the payload
/// (checked against the value's content) and its length.
pub fn identity(data: &[u8]) -> Result<(u64, usize)> {
    let payload = payload(data)?;
    Ok((
        u64::from_le_bytes(data[16..24].try_into().unwrap()),
        payload.len(),
    ))
}

/// The header checked (magic, version, length, checksum); the payload.
fn payload(data: &[u8]) -> Result<&[u8]> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        let model = data.len() >= 8 && &data[..8] == crate::model::MAGIC;
        return Err(LmmError::new(if model {
            "this is a model value, not a statistics value (lmm_stats_agg makes those)".to_string()
        } else {
            "not an lmm statistics value (lmm_stats_agg makes those)".to_string()
        }));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(LmmError::new(format!(
            "the statistics value has format version {version}; this lmm reads version {FORMAT_VERSION}: make the statistics again with this lmm's lmm_stats_agg"
        )));
    }
    let checksum = u64::from_le_bytes(data[16..24].try_into().unwrap());
    let len = u64::from_le_bytes(data[24..32].try_into().unwrap());
    if len != (data.len() - HEADER_LEN) as u64 {
        return Err(damaged("its length does not match its header (truncated?)"));
    }
    let payload = &data[HEADER_LEN..];
    if crate::model::checksum(payload) != checksum {
        return Err(damaged("its checksum does not match"));
    }
    Ok(payload)
}

/// A level's key, made of `parts` values each tagged with its type (`levels`).
fn well_formed(key: &[u8], parts: usize) -> Result<&[u8]> {
    match crate::levels::part_tags(key) {
        Some(tags) if tags.len() == parts => Ok(key),
        _ => Err(damaged("a level's key is malformed")),
    }
}

/// Each variable's type and levels, in the formula's order.
fn variables(r: &mut Reader, acc: &mut Accumulator) -> Result<()> {
    let nv = r.u32("the variables")? as usize;
    if nv != acc.vars.len() {
        return Err(damaged("the variables do not match the formula"));
    }
    for v in acc.vars.iter_mut() {
        v.kind = match r.u8("a variable's kind")? {
            0 => None,
            1 => Some(Kind::Numeric),
            2 => Some(Kind::Categorical),
            _ => return Err(damaged("a variable of unknown kind")),
        };
        v.type_name = r.str("a variable's type")?;
        let nl = r.u32("a variable's levels")? as usize;
        let nl = r.count(nl as u64, 4, "a variable's levels")?;
        for l in 0..nl {
            let key = well_formed(r.bytes("a level")?, 1)?;
            if v.levels.id(key) as usize != l {
                return Err(damaged("a variable lists a level twice"));
            }
        }
    }
    Ok(())
}

/// The extended design's columns, registered in order as the accumulation made them.
fn columns(r: &mut Reader, acc: &mut Accumulator) -> Result<()> {
    let nc = r.u32("the design columns")? as usize;
    let nc = r.count(nc as u64, 16, "the design columns")?;
    for c in 0..nc {
        let term = r.u32("a design column")?;
        let nlv = r.u32("a design column")? as usize;
        let nlv = r.count(nlv as u64, 4, "a design column")?;
        let levels = (0..nlv)
            .map(|_| r.u32("a design column"))
            .collect::<Result<Vec<u32>>>()?;
        let shift = r.f64("a design column's shift")?;
        if c == 0 {
            // column 0 is the response
            if term != u32::MAX || !levels.is_empty() {
                return Err(damaged("the first design column is not the response"));
            }
            acc.ext.push(ExtColumn {
                term: usize::MAX,
                levels,
            });
            acc.shift.push(shift);
            acc.zindex.push(usize::MAX);
            continue;
        }
        let t = term as usize;
        if t >= acc.terms.len() {
            return Err(damaged(
                "a design column names a term the formula does not have",
            ));
        }
        let cats: Vec<usize> = acc.terms[t]
            .vars
            .iter()
            .copied()
            .filter(|&v| acc.vars[v].kind == Some(Kind::Categorical))
            .collect();
        if cats.len() != levels.len()
            || cats
                .iter()
                .zip(&levels)
                .any(|(&v, &l)| l as usize >= acc.vars[v].levels.len())
        {
            return Err(damaged("a design column's levels do not match its term"));
        }
        if acc.terms[t].columns.contains_key(&levels) {
            return Err(damaged("a design column is listed twice"));
        }
        acc.new_ext(t, levels, shift)?;
    }
    Ok(())
}

/// A store of `groups` groups (d ≤ dmax columns, q ≤ qmax random-effect rows; `weighted`: counts are weight totals).
fn store(
    r: &mut Reader,
    groups: usize,
    dmax: usize,
    qmax: usize,
    weighted: bool,
) -> Result<GroupStore> {
    let (d, q) = (r.u32("a store")? as usize, r.u32("a store")? as usize);
    if d > dmax || q > qmax {
        return Err(damaged("a store has more columns than the design"));
    }
    let per = 1 + d + q * d;
    r.count(groups as u64, 8 * per, "a store's groups")?;
    let mut s = GroupStore::default();
    s.ensure(d, q);
    for g in 0..groups {
        s.add_group();
        let n = r.f64("a group's count")?;
        let means = r.f64s(d, "a group's means")?;
        let comoments = r.f64s(q * d, "a group's co-moments")?;
        // with prior weights the count is the group's weight total
        if !n.is_finite() || n < 0.0 || (!weighted && n.fract() != 0.0) {
            return Err(damaged(if weighted {
                "a group's weight total is not a finite non-negative number"
            } else {
                "a group's count is not a whole number"
            }));
        }
        s.set_group(g, n, &means, &comoments);
    }
    Ok(s)
}

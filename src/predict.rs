//! Prediction from a model value: X β + Σ_factors z·b_level.
//!
//! A `Prepared` model is parsed once and holds lookup tables: per categorical
//! variable a level dictionary, per fixed term a coefficient table indexed by
//! level combination, per grouping factor a level dictionary and the BLUPs
//! level-major. A process-wide cache keyed by the model's identity (the
//! checksum and length in its header) parses each model value once, whatever
//! the number of rows, chunks or threads that apply it.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};

use rustc_hash::FxHashMap;

use crate::bail;
use crate::error::{LmmError, Result};
use crate::input::Chunk;
use crate::input::{Column, ColumnData};
use crate::levels::{self, Levels};
use crate::model::{self, DesignCol, Model, ModelId, PartKind, NUMERIC};
use crate::transform::Derivation;

/// Coefficients of one fixed term by level combination (mixed radix).
enum Coef {
    Dense(Vec<f64>),
    Sparse(FxHashMap<u64, f64>),
}

/// A fixed term: Π numeric variables × coefficient of the row's level combination.
struct Term {
    nums: Vec<usize>,
    cats: Vec<usize>,
    strides: Vec<u64>,
    coef: Coef,
}

struct PFactor {
    vars: Vec<usize>,
    levels: Levels,
    q: usize,
    /// Parts of each random-effect column.
    z: Vec<Vec<(usize, u32)>>,
    /// BLUPs level-major: `l * q + t`.
    b: Vec<f64>,
}

pub struct Prepared {
    pub id: ModelId,
    pub model: Model,
    /// Variables a prediction reads: without / with the random effects.
    need_fixed: Vec<usize>,
    need_all: Vec<usize>,
    /// Categorical variables whose level a term needs: fixed terms / random terms only.
    cats_fixed: Vec<usize>,
    cats_random: Vec<usize>,
    /// Numeric variables: fixed / random only.
    nums_fixed: Vec<usize>,
    nums_random: Vec<usize>,
    var_levels: Vec<Option<Levels>>,
    /// Per variable: for a poly() column's variable (appended after the
    /// model's, `poly_columns`), the poly() variable and the column.
    poly_of: Vec<Option<(usize, usize)>>,
    terms: Vec<Term>,
    factors: Vec<PFactor>,
    /// How the variables (and the offsets) are made from a row's columns.
    derive: Derivation,
    /// The columns (indices into `derive.columns`) a prediction reads: without / with the random effects.
    read_fixed: Vec<usize>,
    read_all: Vec<usize>,
}

fn push_unique(v: &mut Vec<usize>, x: usize) {
    if !v.contains(&x) {
        v.push(x);
    }
}

impl Prepared {
    /// Parse and index a model value (header already checked by `model::header`).
    pub fn from_bytes(data: &[u8]) -> Result<Prepared> {
        let id = model::header(data)?;
        let m = Model::from_bytes(data)?;
        Prepared::new(id, m)
    }

    pub fn new(id: ModelId, model: Model) -> Result<Prepared> {
        check_preparation_size(&id, &model)?;
        let nv = model.vars.len();
        let (model, poly_of) = poly_columns(model);
        let base = |v: usize| poly_of[v].map_or(v, |(b, _)| b);
        let var_levels: Vec<Option<Levels>> = model
            .vars
            .iter()
            .map(|v| {
                if v.levels.is_empty() {
                    return None;
                }
                let mut l = Levels::default();
                for k in v.levels.iter() {
                    l.id(k);
                }
                Some(l)
            })
            .collect();
        let (mut need_fixed, mut cats_fixed, mut nums_fixed) = (Vec::new(), Vec::new(), Vec::new());
        let classify =
            |c: &DesignCol, need: &mut Vec<usize>, cats: &mut Vec<usize>, nums: &mut Vec<usize>| {
                for &(v, l) in &c.parts {
                    push_unique(need, base(v as usize));
                    push_unique(if l == NUMERIC { nums } else { cats }, v as usize);
                }
            };
        for c in &model.fixed {
            classify(c, &mut need_fixed, &mut cats_fixed, &mut nums_fixed);
        }
        let mut need_all = need_fixed.clone();
        let (mut cats_random, mut nums_random) = (Vec::new(), Vec::new());
        for f in &model.factors {
            for &v in &f.vars {
                push_unique(&mut need_all, v as usize);
            }
            for c in &f.terms {
                classify(c, &mut need_all, &mut cats_random, &mut nums_random);
            }
        }
        cats_random.retain(|v| !cats_fixed.contains(v));
        nums_random.retain(|v| !nums_fixed.contains(v));

        // Fixed terms: columns grouped by their set of variables.
        let mut terms: Vec<Term> = Vec::new();
        for cols in &fixed_terms(&model.fixed) {
            let first = &model.fixed[cols[0]];
            let nums: Vec<usize> = first
                .parts
                .iter()
                .filter(|p| p.1 == NUMERIC)
                .map(|p| p.0 as usize)
                .collect();
            let cats: Vec<usize> = first
                .parts
                .iter()
                .filter(|p| p.1 != NUMERIC)
                .map(|p| p.0 as usize)
                .collect();
            let mut strides = Vec::with_capacity(cats.len());
            let mut size: u64 = 1;
            for &v in &cats {
                strides.push(size);
                size = size.saturating_mul(model.vars[v].levels.len() as u64);
            }
            // A column's entries in the term's table: one level combination for
            // indicators, a contrast column's levels weighted by C[level, j].
            let entries = |c: &DesignCol| -> Result<Vec<(u64, f64)>> {
                let mut out = vec![(0u64, 1.0)];
                for (k, &v) in cats.iter().enumerate() {
                    let Some(&(_, l)) =
                        c.parts.iter().find(|p| p.0 as usize == v && p.1 != NUMERIC)
                    else {
                        bail!(
                            "the model value is corrupt (fixed-effect column '{}')",
                            c.name
                        );
                    };
                    let var = &model.vars[v];
                    let choices: Vec<(u64, f64)> = match model::part_kind(l) {
                        PartKind::Level(l) => vec![(l as u64, 1.0)],
                        PartKind::Coded(j) => (0..var.levels.len())
                            .map(|l| (l as u64, var.coded(l, j)))
                            .filter(|e| e.1 != 0.0)
                            .collect(),
                        PartKind::Value | PartKind::Poly(_) => bail!(
                            "the model value is corrupt (fixed-effect column '{}')",
                            c.name
                        ),
                    };
                    let stride = strides[k];
                    out = out
                        .iter()
                        .flat_map(|&(i, w)| {
                            choices.iter().map(move |&(l, a)| (i + l * stride, w * a))
                        })
                        .collect();
                }
                Ok(out)
            };
            let coef = if dense_coefficients(size, cols.len()) {
                let mut t = vec![0.0; size as usize];
                for &j in cols {
                    for (i, w) in entries(&model.fixed[j])? {
                        t[i as usize] += model.beta[j] * w;
                    }
                }
                Coef::Dense(t)
            } else {
                let mut t = FxHashMap::default();
                for &j in cols {
                    for (i, w) in entries(&model.fixed[j])? {
                        *t.entry(i).or_insert(0.0) += model.beta[j] * w;
                    }
                }
                Coef::Sparse(t)
            };
            terms.push(Term {
                nums,
                cats,
                strides,
                coef,
            });
        }

        let factors = model
            .factors
            .iter()
            .map(|f| {
                let q = f.terms.len();
                let nl = f.nlevels();
                let mut levels = Levels::default();
                for k in f.keys.iter() {
                    levels.id(k);
                }
                let mut b = vec![0.0; nl * q];
                for t in 0..q {
                    for l in 0..nl {
                        b[l * q + t] = f.blup[t * nl + l];
                    }
                }
                PFactor {
                    vars: f.vars.iter().map(|&v| v as usize).collect(),
                    levels,
                    q,
                    z: f.terms
                        .iter()
                        .map(|c| c.parts.iter().map(|&(v, l)| (v as usize, l)).collect())
                        .collect(),
                    b,
                }
            })
            .collect();
        debug_assert!(need_all.iter().all(|&v| v < nv));
        let formula = crate::formula::parse(&model.formula)?;
        let names: Vec<String> = model.vars[..nv].iter().map(|v| v.name.clone()).collect();
        let derive = Derivation::new(&names, &formula, false);
        let reads = |need: &[usize]| {
            let mut out = derive.offset_columns();
            for &v in need {
                for c in derive.columns_of(v) {
                    push_unique(&mut out, c);
                }
            }
            out
        };
        let (read_fixed, read_all) = (reads(&need_fixed), reads(&need_all));
        Ok(Prepared {
            derive,
            read_fixed,
            read_all,
            id,
            model,
            need_fixed,
            need_all,
            cats_fixed,
            cats_random,
            nums_fixed,
            nums_random,
            var_levels,
            poly_of,
            terms,
            factors,
        })
    }

    /// Names of the columns a prediction reads (with the random effects or
    /// without): the columns the model's variables and offsets are made of.
    pub fn required(&self, re: bool) -> Vec<String> {
        let read = if re { &self.read_all } else { &self.read_fixed };
        read.iter()
            .map(|&c| self.derive.columns[c].clone())
            .collect()
    }

    /// `predict` over a chunk whose columns are `required(any re[r])`: the
    /// variables made from them as in the fit, the offsets added.
    pub fn predict_chunk(
        &self,
        chunk: &Chunk,
        rows: &[usize],
        re: &[bool],
        valid: &mut [bool],
        out: &mut [f64],
    ) -> Result<()> {
        let any_re = rows.iter().any(|&r| valid[r] && re[r]);
        let read = if any_re {
            &self.read_all
        } else {
            &self.read_fixed
        };
        let mut columns: Vec<Option<&Column>> = vec![None; self.derive.columns.len()];
        for (k, &c) in read.iter().enumerate() {
            columns[c] = Some(&chunk.columns[k]);
        }
        let need = if any_re {
            &self.need_all
        } else {
            &self.need_fixed
        };
        let mut vars: Vec<Option<Cow<Column>>> = (0..self.model.vars.len()).map(|_| None).collect();
        for &v in need {
            vars[v] = Some(self.derive.variable(v, &columns, chunk.len)?);
        }
        let cols: Vec<Option<&Column>> = vars.iter().map(|c| c.as_deref()).collect();
        self.predict(&cols, rows, re, valid, out)?;
        if let Some(offset) = self.derive.offset(&columns, chunk.len)? {
            for &r in rows {
                if valid[r] {
                    if offset[r].is_finite() {
                        out[r] += offset[r];
                    } else {
                        valid[r] = false;
                    }
                }
            }
        }
        Ok(())
    }

    /// Indices (into `model.vars`) of the columns `required(re)` names, same order.
    pub fn required_vars(&self, re: bool) -> &[usize] {
        if re {
            &self.need_all
        } else {
            &self.need_fixed
        }
    }

    /// Predict rows `rows` of a chunk. `cols[v]` is the column of model
    /// variable v (`None` for a variable the call does not need); `re[r]`
    /// whether row r includes the random effects; `valid[r]` on entry says
    /// whether row r is to be predicted at all (false: NULL), and on exit
    /// whether `out[r]` holds a prediction (a NULL in a needed column gives NULL).
    pub fn predict(
        &self,
        cols: &[Option<&Column>],
        rows: &[usize],
        re: &[bool],
        valid: &mut [bool],
        out: &mut [f64],
    ) -> Result<()> {
        let any_re = rows.iter().any(|&r| valid[r] && re[r]);
        let need = if any_re {
            &self.need_all
        } else {
            &self.need_fixed
        };
        let vars = &self.model.vars;
        let n = cols
            .iter()
            .flatten()
            .map(|c| c.valid.len())
            .max()
            .unwrap_or(0);
        // Column kinds must match the fit's.
        for &v in need {
            let Some(col) = cols[v] else {
                bail!("internal: column '{}' was not provided", vars[v].name);
            };
            let var = &vars[v];
            let numeric = matches!(col.data, ColumnData::Float(_) | ColumnData::Int(_));
            if !var.categorical && !numeric {
                bail!(
                    "column '{}' has type {} but the model uses it as a number (it was {} in the fit)",
                    var.name,
                    col.type_name,
                    var.type_name
                );
            }
            if var.categorical && var.key_tag != 0 && levels::column_tag(col) != var.key_tag {
                bail!(
                    "column '{}' has type {} but the model was fitted with {} ({}); cast it to {}",
                    var.name,
                    col.type_name,
                    var.type_name,
                    levels::tag_name(var.key_tag),
                    var.type_name
                );
            }
        }
        // NULL, NaN or ±Inf in a needed column: NULL prediction (the fit drops such rows too).
        let usable = |c: &Column, r: usize| {
            c.valid[r] && !matches!(&c.data, ColumnData::Float(x) if !x[r].is_finite())
        };
        for &r in rows {
            if !valid[r] {
                continue;
            }
            let need = if re[r] {
                &self.need_all
            } else {
                &self.need_fixed
            };
            if need.iter().any(|&v| !cols[v].is_some_and(|c| usable(c, r))) {
                valid[r] = false;
            }
        }
        // Numeric values as f64.
        let mut nums: Vec<Option<Cow<[f64]>>> = (0..vars.len()).map(|_| None).collect();
        for &v in self
            .nums_fixed
            .iter()
            .chain(if any_re { &self.nums_random[..] } else { &[] })
        {
            let poly = self.poly_of[v];
            let mut x = match &cols[poly.map_or(v, |(b, _)| b)].unwrap().data {
                ColumnData::Float(x) => Cow::Borrowed(&x[..]),
                ColumnData::Int(x) => Cow::Owned(x.iter().map(|&i| i as f64).collect()),
                _ => unreachable!("checked above"),
            };
            // poly(…)_j: the fit's basis at the value
            if let Some((b, j)) = poly {
                let basis = vars[b].poly.as_ref().expect("a poly() variable's basis");
                x.to_mut().iter_mut().for_each(|x| *x = basis.column(*x, j));
            }
            // scale(…): about the centre and scale of the fit's data
            if let Some((c, s)) = vars[v].scaling {
                x.to_mut().iter_mut().for_each(|x| *x = (*x - c) / s);
            }
            nums[v] = Some(x);
        }
        // Level of each categorical variable a term needs (rows that need it).
        let mut lid: Vec<Vec<u32>> = vec![Vec::new(); vars.len()];
        let mut key = Vec::new();
        let random_cats = if any_re { &self.cats_random[..] } else { &[] };
        for (&v, fixed) in self
            .cats_fixed
            .iter()
            .map(|v| (v, true))
            .chain(random_cats.iter().map(|v| (v, false)))
        {
            let col = cols[v].unwrap();
            let dict = self.var_levels[v]
                .as_ref()
                .expect("levels of a categorical term variable");
            let mut ids = vec![u32::MAX; n];
            for &r in rows {
                if !valid[r] || !(fixed || re[r]) {
                    continue;
                }
                key.clear();
                levels::encode(col, r, &mut key);
                match dict.find(&key) {
                    Some(i) => ids[r] = i,
                    None => bail!("{}", unseen_level(&vars[v], &key)),
                }
            }
            lid[v] = ids;
        }
        // Fixed part.
        for &r in rows {
            if valid[r] {
                out[r] = 0.0;
            }
        }
        for t in &self.terms {
            for &r in rows {
                if !valid[r] {
                    continue;
                }
                let mut idx = 0u64;
                for (k, &v) in t.cats.iter().enumerate() {
                    idx += lid[v][r] as u64 * t.strides[k];
                }
                let mut x = match &t.coef {
                    Coef::Dense(c) => c[idx as usize],
                    Coef::Sparse(c) => c.get(&idx).copied().unwrap_or(0.0),
                };
                for &v in &t.nums {
                    x *= nums[v].as_ref().unwrap()[r];
                }
                out[r] += x;
            }
        }
        if !any_re {
            return Ok(());
        }
        // Random part: each factor's level (unseen levels contribute 0).
        let mut lev = vec![u32::MAX; n];
        for f in &self.factors {
            let single_int = match (&f.vars[..], cols[f.vars[0]].map(|c| &c.data)) {
                ([_], Some(ColumnData::Int(v))) => Some(v),
                _ => None,
            };
            for (i, &r) in rows.iter().enumerate() {
                lev[r] = u32::MAX;
                if !valid[r] || !re[r] {
                    continue;
                }
                lev[r] = match single_int {
                    Some(v) => {
                        if let Some(&ahead) = rows.get(i + 16) {
                            f.levels.prefetch_int(v[ahead]);
                        }
                        f.levels.find_int(v[r])
                    }
                    None => {
                        key.clear();
                        for &g in &f.vars {
                            levels::encode(cols[g].unwrap(), r, &mut key);
                        }
                        f.levels.find(&key)
                    }
                }
                .unwrap_or(u32::MAX);
            }
            let q = f.q;
            for (i, &r) in rows.iter().enumerate() {
                let l = lev[r];
                if l == u32::MAX {
                    continue;
                }
                if let Some(&ahead) = rows.get(i + 8) {
                    prefetch(&f.b, lev[ahead] as usize * q);
                }
                let b = &f.b[l as usize * q..(l as usize + 1) * q];
                let mut s = 0.0;
                for (t, parts) in f.z.iter().enumerate() {
                    let mut z = b[t];
                    for &(v, lv) in parts {
                        match model::part_kind(lv) {
                            PartKind::Value => z *= nums[v].as_ref().unwrap()[r],
                            PartKind::Level(l) if lid[v][r] as usize != l => z = 0.0,
                            PartKind::Level(_) => {}
                            PartKind::Coded(j) => z *= vars[v].coded(lid[v][r] as usize, j),
                            // rewritten as numeric parts of their own variables (`poly_columns`)
                            PartKind::Poly(_) => unreachable!("poly() parts are rewritten"),
                        }
                    }
                    s += z;
                }
                out[r] += s;
            }
        }
        Ok(())
    }
}

/// The fixed-effect columns grouped by their set of variables (one group per
/// term), in order of first appearance.
fn fixed_terms(fixed: &[DesignCol]) -> Vec<Vec<usize>> {
    let mut index: FxHashMap<Vec<u32>, usize> = FxHashMap::default();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (j, c) in fixed.iter().enumerate() {
        let mut key: Vec<u32> = c.parts.iter().map(|&(v, _)| v).collect();
        key.sort_unstable();
        let t = *index.entry(key).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[t].push(j);
    }
    out
}

/// The model with each poly() part (v, POLY | j) rewritten as the numeric
/// part of a variable of its own, appended after the model's: its values
/// are column j of v's basis at v's (`Prepared::predict`), so the terms'
/// tables and the random part treat it as any numeric variable. Also, per
/// variable, the poly() variable and column it stands for.
fn poly_columns(mut model: Model) -> (Model, Vec<Option<(usize, usize)>>) {
    let mut poly_of: Vec<Option<(usize, usize)>> = vec![None; model.vars.len()];
    let mut added: Vec<((usize, usize), usize)> = Vec::new();
    let mut new_vars = Vec::new();
    let nv = model.vars.len();
    let columns = model
        .fixed
        .iter_mut()
        .chain(model.factors.iter_mut().flat_map(|f| f.terms.iter_mut()));
    for c in columns {
        for part in c.parts.iter_mut() {
            let PartKind::Poly(j) = model::part_kind(part.1) else {
                continue;
            };
            let key = (part.0 as usize, j);
            let v = match added.iter().find(|(k, _)| *k == key) {
                Some(&(_, v)) => v,
                None => {
                    let base = &model.vars[key.0];
                    let mut var = base.clone();
                    var.name = format!("{}{}", base.name, j + 1);
                    var.poly = None;
                    var.scaling = None;
                    var.response = false;
                    new_vars.push(var);
                    let v = nv + new_vars.len() - 1;
                    added.push((key, v));
                    poly_of.push(Some(key));
                    v
                }
            };
            *part = (v as u32, NUMERIC);
        }
    }
    model.vars.extend(new_vars);
    (model, poly_of)
}

/// The number of level combinations of a column's categorical parts.
fn combinations(model: &Model, c: &DesignCol) -> u64 {
    c.parts
        .iter()
        .filter(|p| p.1 != NUMERIC)
        .fold(1u64, |a, p| {
            a.saturating_mul(model.vars[p.0 as usize].levels.len() as u64)
        })
}

/// A term's coefficients go in a table indexed by level combination when the
/// columns fill a good part of it, else in a hash map: the table never holds
/// more than a few entries per column the model value actually stores.
fn dense_coefficients(combinations: u64, columns: usize) -> bool {
    combinations <= 4 * columns as u64 + 16
}

/// What the lookup tables of a set of level keys may take: the keys and their
/// map entries, and for integer keys the direct table of `Levels` (at most
/// 4 entries per key + 4096, 4 bytes each).
fn levels_bytes(keys: &model::Keys) -> u64 {
    let n = keys.len() as u64;
    let key_bytes: u64 = keys.iter().map(|k| k.len() as u64).sum();
    2 * key_bytes
        + 48 * n
        + if keys.iter().any(|k| k.first() == Some(&levels::T_INT)) {
            4 * (4 * n + 4096)
        } else {
            0
        }
}

/// Refuse to prepare a model whose tables would take far more memory than its
/// value's size and declared counts imply (only a damaged or forged value can):
/// the estimate is made before anything is allocated.
fn check_preparation_size(id: &ModelId, model: &Model) -> Result<()> {
    let mut need: u64 = 0;
    for v in &model.vars {
        if !v.levels.is_empty() {
            need = need.saturating_add(levels_bytes(&v.levels));
        }
    }
    for cols in fixed_terms(&model.fixed) {
        let size = combinations(model, &model.fixed[cols[0]]);
        let entries = if dense_coefficients(size, cols.len()) {
            size
        } else {
            2 * cols.len() as u64
        };
        need = need.saturating_add(8 * entries + 64);
    }
    for f in &model.factors {
        need = need
            .saturating_add(levels_bytes(&f.keys))
            .saturating_add(8 * f.blup.len() as u64);
    }
    let budget = 16 * (id.len + model::HEADER_LEN as u64) + (64 << 20);
    if need > budget {
        bail!(
            "the model value is damaged or was not made by lmm: preparing it for prediction would need about {} MiB, \
             far more than its {} bytes can describe (at most {} MiB); refit the model with lmm_model_agg",
            need >> 20,
            id.len + model::HEADER_LEN as u64,
            budget >> 20
        );
    }
    Ok(())
}

#[inline]
fn prefetch(v: &[f64], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if i < v.len() {
        // SAFETY: a prefetch of an in-bounds address; it never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(v.as_ptr().add(i) as *const i8, _MM_HINT_T0);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, i);
}

fn unseen_level(var: &model::Var, key: &[u8]) -> String {
    let shown: Vec<String> = var
        .levels
        .iter()
        .take(10)
        .map(|k| format!("'{}'", levels::label(k)))
        .collect();
    let more = if var.levels.len() > 10 {
        format!(", … ({} in all)", var.levels.len())
    } else {
        String::new()
    };
    format!(
        "column '{}' has level '{}', which the model was not fitted with (its levels: {}{more}); \
         a fixed-effect factor cannot predict a level it has no coefficient for",
        var.name,
        levels::label(key),
        shown.join(", ")
    )
}

// ---------------------------------------------------------------------------
// The process-wide cache of prepared models
// ---------------------------------------------------------------------------

type Slot = Arc<OnceLock<std::result::Result<Arc<Prepared>, LmmError>>>;

struct Entry {
    id: ModelId,
    slot: Slot,
    last_use: u64,
}

#[derive(Default)]
struct Cache {
    entries: Vec<Entry>,
    tick: u64,
}

/// At most this many models, and (beyond the most recent one) this many bytes of model values.
const CACHE_ENTRIES: usize = 64;
const CACHE_BYTES: u64 = 1 << 30;

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: Vec::new(),
    tick: 0,
});

/// The prepared model of a model value: parsed on the first call for its
/// identity, shared afterwards (also across threads; a thread asking while
/// another parses waits for that parse).
///
/// The checksum is verified on every call (a damaged value whose header is
/// intact must not pass for the cached model), so callers look models up
/// once per query and thread, not per row or chunk.
pub fn prepared(data: &[u8]) -> Result<Arc<Prepared>> {
    let id = model::header(data)?;
    if model::checksum(model::model_part(data)) != id.checksum {
        bail!("the model value is corrupt (its checksum does not match its contents)");
    }
    let slot = {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.tick += 1;
        let tick = cache.tick;
        match cache.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                e.last_use = tick;
                e.slot.clone()
            }
            None => {
                let slot: Slot = Arc::new(OnceLock::new());
                cache.entries.push(Entry {
                    id,
                    slot: slot.clone(),
                    last_use: tick,
                });
                // Evict the least recently used beyond the bounds (never the new one).
                loop {
                    let bytes: u64 = cache.entries.iter().map(|e| e.id.len).sum();
                    if cache.entries.len() <= 1
                        || (cache.entries.len() <= CACHE_ENTRIES && bytes <= CACHE_BYTES)
                    {
                        break;
                    }
                    let oldest = (0..cache.entries.len())
                        .filter(|&i| cache.entries[i].id != id)
                        .min_by_key(|&i| cache.entries[i].last_use)
                        .unwrap();
                    cache.entries.swap_remove(oldest);
                }
                slot
            }
        }
    };
    slot.get_or_init(|| Prepared::from_bytes(data).map(Arc::new))
        .clone()
}

/// Number of models in the cache (tests).
pub fn cached_models() -> usize {
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .len()
}

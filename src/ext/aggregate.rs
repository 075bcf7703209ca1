//! The aggregate function set `lmm_fit_agg(row ANY, formula VARCHAR [, options ANY])`.
//!
//! DuckDB owns a fixed-size state block per group and may move it around, so
//! the block holds only a pointer to a heap `State` (null until the state sees
//! its first chunk). Every callback runs inside `guard`.

use std::slice;

use libduckdb_sys as ffi;

use super::boxed::{self, report};
use super::guard::guard;
use super::hash::IntMap;
use super::jobs;
use super::output;
use super::vectors::{
    first_differing_options_row, option_pairs, string_at, EnumCache, RowStruct, Validity,
};
use crate::accumulator::Accumulator;
use crate::error::{LmmError, Result};
use crate::options::Options;

pub const FUNCTION_NAME: &std::ffi::CStr = c"lmm_fit_agg";
pub const MODEL_FUNCTION_NAME: &std::ffi::CStr = c"lmm_model_agg";
pub const ACCUMULATE_FUNCTION_NAME: &std::ffi::CStr = c"lmm_accumulate_agg";
pub const STATS_FUNCTION_NAME: &std::ffi::CStr = c"lmm_stats_agg";

/// What a state block points to.
struct State {
    formula: String,
    /// `formula_key(formula)`: a cheap per-chunk check that the formula is unchanged.
    key: u64,
    acc: Accumulator,
    /// Position of each required column in the row STRUCT, with the row's
    /// width (fixed for a query: the argument type is bound once).
    layout: Option<(usize, Vec<usize>)>,
    /// ENUM labels fetched so far (an optimisation, not part of the statistics).
    enums: EnumCache,
}

impl State {
    /// A copy for combining into an empty target: the source stays untouched.
    fn duplicate(&self) -> State {
        State::new(self.formula.clone(), self.acc.clone())
    }

    fn new(formula: String, acc: Accumulator) -> State {
        State {
            key: formula_key(&formula),
            formula,
            acc,
            layout: None,
            enums: EnumCache::default(),
        }
    }
}

/// FNV-1a hash of the formula mixed with its length.
fn formula_key(f: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ f.len() as u64;
    for &b in f.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The state block DuckDB allocates for each group.
type Block = *mut State;

#[inline]
unsafe fn block(s: ffi::duckdb_aggregate_state) -> *mut Block {
    unsafe { boxed::block::<State>(s) }
}

// ---------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------

unsafe extern "C" fn update(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    states: *mut ffi::duckdb_aggregate_state,
) {
    report(info, guard(|| unsafe { update_impl(input, states) }));
}

unsafe extern "C" fn combine(
    info: ffi::duckdb_function_info,
    source: *mut ffi::duckdb_aggregate_state,
    target: *mut ffi::duckdb_aggregate_state,
    count: ffi::idx_t,
) {
    report(
        info,
        guard(|| unsafe { combine_impl(source, target, count as usize) }),
    );
}

unsafe extern "C" fn finalize(
    info: ffi::duckdb_function_info,
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: ffi::idx_t,
    offset: ffi::idx_t,
) {
    report(
        info,
        guard(|| unsafe { finalize_impl(source, result, count as usize, offset as usize) }),
    );
}

// ---------------------------------------------------------------------------
// Implementations
// ---------------------------------------------------------------------------

/// The formula (argument 2), which must be the same non-NULL string on every row.
unsafe fn read_formula<'v>(v: ffi::duckdb_vector, n: usize) -> Result<&'v str> {
    unsafe {
        let valid = Validity::of(v);
        let data = ffi::duckdb_vector_get_data(v) as *const ffi::duckdb_string_t;
        if !(0..n).all(|i| valid.is_valid(i)) {
            return Err(LmmError::new("the formula must not be NULL"));
        }
        let first = string_at(data, 0);
        // Fast path: identical 16-byte string_t (same length, prefix and
        // pointer, or same inlined bytes) means the same string.
        let raw = data as *const u128;
        let raw0 = raw.read_unaligned();
        if (1..n).any(|i| raw.add(i).read_unaligned() != raw0 && string_at(data, i) != first) {
            return Err(LmmError::new("the formula must be the same for all rows"));
        }
        std::str::from_utf8(first).map_err(|_| LmmError::new("the formula is not valid UTF-8"))
    }
}

const OPTIONS_DIFFER: &str = "the options must be the same for all rows of a group (they differ between rows); \
                              pass a constant such as {'method': 'ML'}, or GROUP BY the column they depend on";

/// Options (argument 3, if given) of `rows` of the chunk, which must be the
/// same on all of them.
unsafe fn read_options(input: ffi::duckdb_data_chunk, rows: &[usize]) -> Result<Options> {
    unsafe {
        if ffi::duckdb_data_chunk_get_column_count(input) < 3 {
            return Ok(Options::default());
        }
        let v = ffi::duckdb_data_chunk_get_vector(input, 2);
        let options = Options::from_pairs(&option_pairs(v, rows[0])?)?;
        if first_differing_options_row(v, rows)?.is_some() {
            return Err(LmmError::new(OPTIONS_DIFFER));
        }
        Ok(options)
    }
}

/// The rows of a chunk grouped by state: group `g` is state `states[g]` with
/// rows `rows[offsets[g]..offsets[g + 1]]` (in increasing order).
struct Groups {
    states: Vec<ffi::duckdb_aggregate_state>,
    offsets: Vec<usize>,
    rows: Vec<usize>,
}

impl Groups {
    /// O(rows): one comparison per row, one hash lookup per run of equal
    /// states, then a counting sort. Usually the whole chunk is one state.
    fn new(states: &[ffi::duckdb_aggregate_state]) -> Groups {
        let n = states.len();
        let first = states[0];
        if states.iter().all(|&s| s == first) {
            return Groups {
                states: vec![first],
                offsets: vec![0, n],
                rows: (0..n).collect(),
            };
        }
        let mut distinct: Vec<ffi::duckdb_aggregate_state> = Vec::new();
        let mut index: IntMap<usize, u32> = IntMap::default();
        let mut group_of: Vec<u32> = Vec::with_capacity(n);
        let mut counts: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < n {
            let s = states[i];
            let mut j = i + 1;
            while j < n && states[j] == s {
                j += 1;
            }
            let g = *index.entry(s as usize).or_insert_with(|| {
                distinct.push(s);
                counts.push(0);
                (distinct.len() - 1) as u32
            });
            counts[g as usize] += j - i;
            group_of.extend(std::iter::repeat_n(g, j - i));
            i = j;
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut total = 0;
        offsets.push(0);
        for c in &counts {
            total += c;
            offsets.push(total);
        }
        let mut next = offsets.clone();
        let mut rows = vec![0; n];
        for (r, &g) in group_of.iter().enumerate() {
            rows[next[g as usize]] = r;
            next[g as usize] += 1;
        }
        Groups {
            states: distinct,
            offsets,
            rows,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (ffi::duckdb_aggregate_state, &[usize])> + '_ {
        self.states
            .iter()
            .enumerate()
            .map(|(g, &s)| (s, &self.rows[self.offsets[g]..self.offsets[g + 1]]))
    }
}

unsafe fn update_impl(
    input: ffi::duckdb_data_chunk,
    states: *mut ffi::duckdb_aggregate_state,
) -> Result<()> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        if n == 0 {
            return Ok(());
        }
        let row = RowStruct::new(
            ffi::duckdb_data_chunk_get_vector(input, 0),
            n,
            "the first argument of lmm_fit_agg / lmm_model_agg must be a whole row, as in \
             lmm_fit_agg(t, 'y ~ x') FROM tbl t (a column named like the table alias hides the row; \
             lmm_fit calls the row __lmm_row, so rename a column of that name)",
        )?;
        let formula = read_formula(ffi::duckdb_data_chunk_get_vector(input, 1), n)?;
        let groups = Groups::new(slice::from_raw_parts(states, n));

        // Create the states that see their first rows; check the others' formula and options.
        let key = formula_key(formula);
        // The options are read once when the whole chunk has the same (the
        // usual constant), else once per group.
        let shared = read_options(input, &groups.rows).ok();
        for (s, rows) in groups.iter() {
            let options = match &shared {
                Some(o) => std::borrow::Cow::Borrowed(o),
                None => std::borrow::Cow::Owned(read_options(input, rows)?),
            };
            let b = block(s);
            let p = b.read_unaligned();
            if p.is_null() {
                let acc = Accumulator::new(formula, options.into_owned())?;
                b.write_unaligned(Box::into_raw(Box::new(State::new(
                    formula.to_string(),
                    acc,
                ))));
            } else if (*p).key != key {
                return Err(LmmError::new(
                    "the formula must be the same for all rows of a group",
                ));
            } else if (*p).acc.options != *options {
                return Err(LmmError::new(OPTIONS_DIFFER));
            }
        }

        // All states share the formula, hence the columns: convert them once,
        // using the first state's column layout and enum label cache.
        let first: *mut State = block(groups.states[0]).read_unaligned();
        let required = (*first).acc.required_columns().to_vec();
        let width = row.width();
        let index = match &(*first).layout {
            Some((w, index)) if *w == width => index.clone(),
            _ => {
                let index = row.resolve(&required)?;
                (*first).layout = Some((width, index.clone()));
                index
            }
        };
        let mut prepared = row.prepare(&required, &index, &mut (*first).enums)?;
        let chunk = prepared.chunk(&(*first).enums);
        for (s, rows) in groups.iter() {
            let p: *mut State = block(s).read_unaligned();
            // Only the `acc` field is borrowed mutably; `chunk` borrows `enums`.
            (*p).acc.update(&chunk, rows)?;
        }
        Ok(())
    }
}

unsafe fn combine_impl(
    source: *mut ffi::duckdb_aggregate_state,
    target: *mut ffi::duckdb_aggregate_state,
    count: usize,
) -> Result<()> {
    unsafe {
        for i in 0..count {
            let src: *mut State = block(*source.add(i)).read_unaligned();
            if src.is_null() {
                continue;
            }
            let tb = block(*target.add(i));
            let tgt = tb.read_unaligned();
            if tgt.is_null() {
                tb.write_unaligned(Box::into_raw(Box::new((*src).duplicate())));
            } else if tgt != src {
                if (*tgt).key != (*src).key || (*tgt).formula != (*src).formula {
                    return Err(LmmError::new("cannot combine fits of different formulas"));
                }
                if (*tgt).acc.options != (*src).acc.options {
                    return Err(LmmError::new(OPTIONS_DIFFER));
                }
                (*tgt).acc.merge(&(*src).acc)?;
            }
        }
        Ok(())
    }
}

/// The states of one finalize batch: `each(row, state)` writes row `row` of
/// the result; a state that never saw a row is NULL (`null(row)`), and so is
/// one whose fit fails if its options say `on_error := 'null'`. Otherwise a
/// failure in a batch of several states (a GROUP BY) says which group it was.
unsafe fn for_each_state(
    source: *mut ffi::duckdb_aggregate_state,
    count: usize,
    offset: usize,
    mut null: impl FnMut(usize) -> Result<()>,
    mut each: impl FnMut(usize, &mut State) -> Result<()>,
) -> Result<()> {
    unsafe {
        for i in 0..count {
            let p: *mut State = block(*source.add(i)).read_unaligned();
            if p.is_null() {
                null(offset + i)?;
                continue;
            }
            if let Err(e) = each(offset + i, &mut *p) {
                if (*p).acc.options.null_on_error {
                    null(offset + i)?;
                } else if count > 1 || offset > 0 {
                    return Err(LmmError::new(format!(
                        "{} (in the GROUP BY group {}; {{'on_error': 'null'}} gives NULL for failing groups instead)",
                        e.0,
                        describe(&(*p).acc)
                    )));
                } else {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// A group of a GROUP BY, as far as its statistics tell: its rows and the
/// first levels of its first grouping factor.
fn describe(acc: &Accumulator) -> String {
    let Some(factor) = acc.factors.first() else {
        return "with no rows".to_string();
    };
    let name: Vec<&str> = factor
        .vars
        .iter()
        .map(|&v| acc.vars[v].name.as_str())
        .collect();
    let levels: Vec<String> = factor
        .levels
        .sorted()
        .iter()
        .take(3)
        .map(|&l| crate::levels::label(&factor.levels.keys[l as usize]))
        .collect();
    let more = if factor.levels.len() > 3 { ", ..." } else { "" };
    format!(
        "with {} row(s) used, {} level(s) of '{}': {}{more}",
        acc.global.n,
        factor.levels.len(),
        name.join(":"),
        levels.join(", ")
    )
}

unsafe fn finalize_impl(
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: usize,
    offset: usize,
) -> Result<()> {
    unsafe {
        for_each_state(
            source,
            count,
            offset,
            |row| output::write_null(result, row),
            |row, state| output::write_rows(result, row, &state.acc.finish_tidy()?),
        )
    }
}

unsafe extern "C" fn finalize_model(
    info: ffi::duckdb_function_info,
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: ffi::idx_t,
    offset: ffi::idx_t,
) {
    report(
        info,
        guard(|| unsafe { finalize_model_impl(source, result, count as usize, offset as usize) }),
    );
}

/// `lmm_model_agg`: the fitted model as a BLOB (see `crate::model`).
unsafe fn finalize_model_impl(
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: usize,
    offset: usize,
) -> Result<()> {
    unsafe {
        for_each_state(
            source,
            count,
            offset,
            |row| output::write_null_scalar(result, row),
            |row, state| output::write_blob(result, row, &state.acc.finish_model()?.to_bytes()),
        )
    }
}

unsafe extern "C" fn finalize_accumulation(
    info: ffi::duckdb_function_info,
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: ffi::idx_t,
    offset: ffi::idx_t,
) {
    report(
        info,
        guard(|| unsafe {
            finalize_accumulation_impl(source, result, count as usize, offset as usize)
        }),
    );
}

/// `lmm_accumulate_agg`: the accumulation itself, deposited for a fit that
/// DuckDB can interrupt (see `jobs`); the value is the job's handle.
unsafe fn finalize_accumulation_impl(
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: usize,
    offset: usize,
) -> Result<()> {
    unsafe {
        for_each_state(
            source,
            count,
            offset,
            |row| output::write_null_scalar(result, row),
            |row, state| {
                let empty = Accumulator::new(&state.formula, state.acc.options.clone())?;
                let acc = std::mem::replace(&mut state.acc, empty);
                output::write_blob(result, row, &jobs::deposit(acc))
            },
        )
    }
}

unsafe extern "C" fn finalize_stats(
    info: ffi::duckdb_function_info,
    source: *mut ffi::duckdb_aggregate_state,
    result: ffi::duckdb_vector,
    count: ffi::idx_t,
    offset: ffi::idx_t,
) {
    report(
        info,
        guard(|| unsafe {
            for_each_state(
                source,
                count as usize,
                offset as usize,
                |row| output::write_null_scalar(result, row),
                |row, state| {
                    if !state.acc.options.contrasts.is_empty() {
                        return Err(LmmError::new(
                            "lmm_stats_agg: contrasts choose how the fit codes a factor, not what is accumulated; \
                             give contrasts := to lmm_fit_stats / lmm_model_stats instead",
                        ));
                    }
                    output::write_blob(result, row, &crate::statistics::encode(&state.acc))
                },
            )
        }),
    );
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

/// Register both aggregate sets: `lmm_fit_agg` (the tidy table) and
/// `lmm_model_agg` (the model value); same accumulation, different finalize.
pub unsafe fn register(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        register_set(con, FUNCTION_NAME, output::result_type(), finalize)?;
        let blob = super::types::LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB);
        register_set(con, MODEL_FUNCTION_NAME, blob, finalize_model)?;
        let blob = super::types::LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB);
        register_set(con, ACCUMULATE_FUNCTION_NAME, blob, finalize_accumulation)?;
        let blob = super::types::LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB);
        register_set(con, STATS_FUNCTION_NAME, blob, finalize_stats)
    }
}

type Finalize = unsafe extern "C" fn(
    ffi::duckdb_function_info,
    *mut ffi::duckdb_aggregate_state,
    ffi::duckdb_vector,
    ffi::idx_t,
    ffi::idx_t,
);

/// Register one function set: (ANY, VARCHAR) and (ANY, VARCHAR, ANY).
unsafe fn register_set(
    con: ffi::duckdb_connection,
    name: &std::ffi::CStr,
    return_type: super::types::LogicalType,
    finalize: Finalize,
) -> Result<()> {
    unsafe {
        let any = super::types::LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_ANY);
        let varchar = super::types::LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR);

        let mut set = ffi::duckdb_create_aggregate_function_set(name.as_ptr());
        if set.is_null() {
            return Err(LmmError::new("could not create the aggregate function set"));
        }
        let mut ok = true;
        for with_options in [false, true] {
            let mut f = ffi::duckdb_create_aggregate_function();
            if f.is_null() {
                ok = false;
                break;
            }
            ffi::duckdb_aggregate_function_set_name(f, name.as_ptr());
            ffi::duckdb_aggregate_function_add_parameter(f, any.0);
            ffi::duckdb_aggregate_function_add_parameter(f, varchar.0);
            if with_options {
                ffi::duckdb_aggregate_function_add_parameter(f, any.0);
            }
            ffi::duckdb_aggregate_function_set_return_type(f, return_type.0);
            ffi::duckdb_aggregate_function_set_functions(
                f,
                Some(boxed::state_size::<State>),
                Some(boxed::state_init::<State>),
                Some(update),
                Some(combine),
                Some(finalize),
            );
            ffi::duckdb_aggregate_function_set_destructor(f, Some(boxed::destroy::<State>));
            ok &= ffi::duckdb_add_aggregate_function_to_set(set, f) == ffi::DuckDBSuccess;
            ffi::duckdb_destroy_aggregate_function(&mut f);
        }
        if ok {
            ok = ffi::duckdb_register_aggregate_function_set(con, set) == ffi::DuckDBSuccess;
        }
        ffi::duckdb_destroy_aggregate_function_set(&mut set);
        if ok {
            Ok(())
        } else {
            Err(LmmError::new(format!(
                "could not register the aggregate function {}",
                name.to_string_lossy()
            )))
        }
    }
}

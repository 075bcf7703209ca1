//! Statistics values in SQL (`crate::statistics`):
//!
//! - `lmm_stats_merge(stats BLOB) -> BLOB`, an aggregate: the exact merge of
//!   statistics values (NULLs, from shards without rows, are skipped).
//! - `lmm_stats_start(stats BLOB, options VARCHAR) -> BLOB`: the fit of a
//!   statistics value deposited as a job (`jobs`), for the interruptible
//!   `lmm_fit_stats` macro (polled by `lmm_fit_poll`, read by `lmm_fit_result`).
//! - `lmm_model_stats_impl(stats BLOB, options VARCHAR) -> BLOB`: the model
//!   value, fitted in the call (the `lmm_model_stats` macro).
//!
//! `lmm_stats_agg` itself is `aggregate`'s accumulation with another finalize.

use libduckdb_sys as ffi;

use super::boxed::{self, report};
use super::checked;
use super::guard::{c_message, guard};
use super::types::LogicalType;
use super::vectors::{string_at, Validity};
use crate::accumulator::Accumulator;
use crate::error::{LmmError, Result};
use crate::options::Options;

type Block = *mut Accumulator;

unsafe fn block(s: ffi::duckdb_aggregate_state) -> *mut Block {
    unsafe { boxed::block::<Accumulator>(s) }
}

/// Merge `other` into the state `b` (which it becomes if empty).
unsafe fn absorb(b: *mut Block, other: Accumulator) -> Result<()> {
    unsafe {
        let p = b.read_unaligned();
        if p.is_null() {
            b.write_unaligned(Box::into_raw(Box::new(other)));
            return Ok(());
        }
        same_model(&*p, &other)?;
        (*p).merge(&other)
    }
}

/// Statistics merge only with statistics of the same formula (after `grp`/`re`).
fn same_model(a: &Accumulator, b: &Accumulator) -> Result<()> {
    if a.formula_text != b.formula_text {
        return Err(LmmError::new(format!(
            "lmm_stats_merge: statistics of different formulas ('{}' and '{}') cannot be merged",
            a.formula_text, b.formula_text
        )));
    }
    if a.options.weights != b.options.weights {
        let name = |w: &Option<String>| {
            w.as_ref()
                .map_or("no weights".to_string(), |c| format!("weights '{c}'"))
        };
        return Err(LmmError::new(format!(
            "lmm_stats_merge: statistics made with {} and with {} cannot be merged",
            name(&a.options.weights),
            name(&b.options.weights)
        )));
    }
    Ok(())
}

unsafe extern "C" fn update(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    states: *mut ffi::duckdb_aggregate_state,
) {
    report(
        info,
        guard(|| unsafe {
            let n = ffi::duckdb_data_chunk_get_size(input) as usize;
            let v = ffi::duckdb_data_chunk_get_vector(input, 0);
            let valid = Validity::of(v);
            let data = ffi::duckdb_vector_get_data(v) as *const ffi::duckdb_string_t;
            for r in 0..n {
                if valid.is_valid(r) {
                    absorb(
                        block(*states.add(r)),
                        crate::statistics::decode(string_at(data, r))?,
                    )?;
                }
            }
            Ok(())
        }),
    );
}

unsafe extern "C" fn combine(
    info: ffi::duckdb_function_info,
    source: *mut ffi::duckdb_aggregate_state,
    target: *mut ffi::duckdb_aggregate_state,
    count: ffi::idx_t,
) {
    report(
        info,
        guard(|| unsafe {
            for i in 0..count as usize {
                let src = block(*source.add(i)).read_unaligned();
                let tb = block(*target.add(i));
                if !src.is_null() && src != tb.read_unaligned() {
                    absorb(tb, (*src).clone())?;
                }
            }
            Ok(())
        }),
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
        guard(|| unsafe {
            for i in 0..count as usize {
                let p = block(*source.add(i)).read_unaligned();
                let row = offset as usize + i;
                if p.is_null() {
                    super::output::write_null_scalar(result, row)?;
                } else {
                    super::output::write_blob(result, row, &crate::statistics::encode(&*p))?;
                }
            }
            Ok(())
        }),
    );
}

/// The accumulation of a statistics value with the fit's options
/// (`method`, `ranef`, `ddf` as `key␟value␞…`; the formula's `grp` and `re`
/// were given to `lmm_stats_agg`); `who` opens the refusal of another option
/// ("lmm_dist_start takes").
pub(super) fn for_fit(stats: &[u8], options: &str, who: &str) -> Result<Accumulator> {
    let mut acc = crate::statistics::decode(stats)?;
    let pairs: Vec<(String, Option<String>)> = crate::inference::run::parse_options(options)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, _)| !["method", "ranef", "ddf", "contrasts"].contains(&k.as_str()))
    {
        return Err(LmmError::new(format!(
            "{who} method, ranef, ddf and contrasts; '{k}' belongs to lmm_stats_agg (it shapes the statistics)"
        )));
    }
    let o = Options::from_pairs(&pairs)?;
    (acc.options.method, acc.options.ranef, acc.options.ddf) = (o.method, o.ranef, o.ddf);
    acc.options.contrasts = o.contrasts;
    Ok(acc)
}

/// Row by row: (stats, options) → `make`'s BLOB; a NULL value gives NULL, or
/// the error `null` where there is one.
unsafe fn blob_each(
    input: ffi::duckdb_data_chunk,
    result: ffi::duckdb_vector,
    null: Option<&str>,
    make: impl Fn(Accumulator) -> Result<Vec<u8>>,
) -> Result<()> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        let arg = |i: usize| {
            let v = ffi::duckdb_data_chunk_get_vector(input, i as ffi::idx_t);
            (
                Validity::of(v),
                ffi::duckdb_vector_get_data(v) as *const ffi::duckdb_string_t,
            )
        };
        let ((sv, sd), (ov, od)) = (arg(0), arg(1));
        for r in 0..n {
            if !sv.is_valid(r) {
                if let Some(message) = null {
                    return Err(LmmError::new(message));
                }
                super::output::write_null_scalar(result, r)?;
                continue;
            }
            let options = if ov.is_valid(r) {
                String::from_utf8_lossy(string_at(od, r)).into_owned()
            } else {
                String::new()
            };
            let acc = for_fit(
                string_at(sd, r),
                &options,
                "lmm_fit_stats / lmm_model_stats take",
            )?;
            super::output::write_blob(result, r, &make(acc)?)?;
        }
        Ok(())
    }
}

const NULL_STATS: &str = "lmm_fit_stats: the statistics value is NULL (lmm_stats_agg saw no rows, or every shard was empty)";

unsafe extern "C" fn start_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    if let Err(e) = guard(|| unsafe {
        blob_each(input, output, Some(NULL_STATS), |acc| {
            Ok(super::jobs::deposit(acc))
        })
    }) {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

unsafe extern "C" fn model_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    if let Err(e) = guard(|| unsafe {
        blob_each(input, output, None, |acc| {
            Ok(acc.finish_model()?.to_bytes())
        })
    }) {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

pub unsafe fn register(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        register_merge(con)?;
        let (blob, varchar) = (
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR,
        );
        boxed::register_scalar(
            con,
            c"lmm_stats_start",
            &[blob, varchar],
            LogicalType::new(blob),
            start_fn,
        )?;
        boxed::register_scalar(
            con,
            c"lmm_model_stats_impl",
            &[blob, varchar],
            LogicalType::new(blob),
            model_fn,
        )
    }
}

unsafe fn register_merge(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        let blob = LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB);
        let mut f = ffi::duckdb_create_aggregate_function();
        if f.is_null() {
            return Err(LmmError::new(
                "could not create the aggregate function lmm_stats_merge",
            ));
        }
        ffi::duckdb_aggregate_function_set_name(f, c"lmm_stats_merge".as_ptr());
        ffi::duckdb_aggregate_function_add_parameter(f, blob.0);
        ffi::duckdb_aggregate_function_set_return_type(f, blob.0);
        ffi::duckdb_aggregate_function_set_functions(
            f,
            Some(boxed::state_size::<Accumulator>),
            Some(boxed::state_init::<Accumulator>),
            Some(update),
            Some(combine),
            Some(finalize),
        );
        ffi::duckdb_aggregate_function_set_destructor(f, Some(boxed::destroy::<Accumulator>));
        let ok = ffi::duckdb_register_aggregate_function(con, f) == ffi::DuckDBSuccess;
        ffi::duckdb_destroy_aggregate_function(&mut f);
        if ok {
            Ok(())
        } else {
            Err(LmmError::new(
                "could not register the aggregate function lmm_stats_merge",
            ))
        }
    }
}

//! Distributed one-factor fits in SQL (`crate::distributed`): the functions
//! a host (lmm.spark's distributed mode, or any engine that runs SQL where
//! the shards are) calls.
//!
//! Where a shard's statistics are:
//! - `lmm_shard_header(stats BLOB) -> BLOB`: its header (a statistics value
//!   without groups; headers merge with `lmm_stats_merge`);
//! - `lmm_shard_levels(stats BLOB) -> BIGINT`: its number of groups;
//! - `lmm_shard_answer(header, levels, stats, request) -> BLOB`: its answer
//!   to a request, given the merged header and the total number of groups;
//! - `lmm_shard_blups(header, levels, stats, request) -> LIST(STRUCT(...))`:
//!   its BLUP rows of the tidy table.
//!
//! Where the driver is:
//! - `lmm_dist_grouping(formula, options) -> VARCHAR`: the grouping
//!   columns to partition the rows by (joined by U+001F);
//! - `lmm_dist_start(header, levels, options) -> BIGINT`: a fit's handle;
//! - `lmm_dist_next(handle) -> BLOB`: 'R' and a request's bytes, 'W' (ask
//!   again), or 'D' (done); an error of the fit is raised here;
//! - `lmm_dist_reply(handle, answers BLOB) -> BOOLEAN`: the shards' answers,
//!   concatenated in shard order;
//! - `lmm_dist_blups(handle) -> BLOB`: the BLUP request (NULL without ranef);
//! - `lmm_dist_result(handle) -> LIST(STRUCT(...))`: the table without its
//!   BLUP rows; the handle is forgotten;
//! - `lmm_dist_abandon(handle) -> BOOLEAN`: stop and forget a fit.
//!
//! A NULL argument is an error naming it, except a NULL statistics value of
//! `lmm_shard_*` (a shard without rows), which answers nothing (NULL).

use std::time::Duration;

use libduckdb_sys as ffi;

use super::boxed;
use super::checked;
use super::guard::{c_message, guard};
use super::output;
use super::types::LogicalType;
use super::vectors::{string_at, Validity};
use crate::distributed::{cache, exchange, protocol};
use crate::error::{LmmError, Result};

/// How long one `lmm_dist_next` waits for the fit (its interrupt latency).
const NEXT_WAIT: Duration = Duration::from_millis(500);

/// The arguments of one call, read row by row.
struct Args {
    n: usize,
    cols: Vec<(Validity, ffi::duckdb_vector)>,
}

impl Args {
    unsafe fn of(input: ffi::duckdb_data_chunk) -> Args {
        unsafe {
            let n = ffi::duckdb_data_chunk_get_size(input) as usize;
            let k = ffi::duckdb_data_chunk_get_column_count(input) as usize;
            let cols = (0..k)
                .map(|i| {
                    let v = ffi::duckdb_data_chunk_get_vector(input, i as ffi::idx_t);
                    (Validity::of(v), v)
                })
                .collect();
            Args { n, cols }
        }
    }

    fn is_null(&self, col: usize, row: usize) -> bool {
        !self.cols[col].0.is_valid(row)
    }

    unsafe fn bytes(&self, col: usize, row: usize, name: &str) -> Result<&[u8]> {
        if self.is_null(col, row) {
            return Err(LmmError::new(format!("{name} is NULL")));
        }
        unsafe {
            Ok(string_at(
                ffi::duckdb_vector_get_data(self.cols[col].1) as *const ffi::duckdb_string_t,
                row,
            ))
        }
    }

    unsafe fn text(&self, col: usize, row: usize) -> String {
        if self.is_null(col, row) {
            return String::new();
        }
        unsafe {
            String::from_utf8_lossy(self.bytes(col, row, "").unwrap_or_default()).into_owned()
        }
    }

    unsafe fn int(&self, col: usize, row: usize, name: &str) -> Result<i64> {
        if self.is_null(col, row) {
            return Err(LmmError::new(format!("{name} is NULL")));
        }
        unsafe { Ok(*(ffi::duckdb_vector_get_data(self.cols[col].1) as *const i64).add(row)) }
    }

    unsafe fn count(&self, col: usize, row: usize, name: &str) -> Result<usize> {
        let v = unsafe { self.int(col, row, name)? };
        usize::try_from(v).map_err(|_| {
            LmmError::new(format!(
                "{name} is {v}; it counts groups, so it cannot be negative"
            ))
        })
    }
}

unsafe fn write_int(output: ffi::duckdb_vector, row: usize, v: i64) {
    unsafe { *(ffi::duckdb_vector_get_data(output) as *mut i64).add(row) = v }
}

unsafe fn write_bool(output: ffi::duckdb_vector, row: usize, v: bool) {
    unsafe { *(ffi::duckdb_vector_get_data(output) as *mut bool).add(row) = v }
}

/// Run `f` for each row, reporting its first error to DuckDB.
unsafe fn each(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
    f: impl Fn(&Args, usize, ffi::duckdb_vector) -> Result<()>,
) {
    let r = guard(|| unsafe {
        let args = Args::of(input);
        for row in 0..args.n {
            f(&args, row, output)?;
        }
        Ok(())
    });
    if let Err(e) = r {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

unsafe extern "C" fn shard_header(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            if a.is_null(0, r) {
                return output::write_null_scalar(out, r);
            }
            let (header, _) = crate::distributed::header::of(crate::statistics::decode(a.bytes(
                0,
                r,
                "the statistics value",
            )?)?);
            output::write_blob(out, r, &crate::statistics::encode(&header))
        })
    }
}

unsafe extern "C" fn shard_levels(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            if a.is_null(0, r) {
                return output::write_null_scalar(out, r);
            }
            let acc = crate::statistics::decode(a.bytes(0, r, "the statistics value")?)?;
            write_int(
                out,
                r,
                acc.factors.first().map_or(0, |f| f.store.len()) as i64,
            );
            Ok(())
        })
    }
}

/// The shard and request of a `lmm_shard_*` row (None: a shard without rows).
unsafe fn shard_of(
    a: &Args,
    r: usize,
) -> Result<
    Option<(
        std::sync::Arc<crate::distributed::shard::Shard>,
        protocol::Request,
    )>,
> {
    unsafe {
        if a.is_null(2, r) {
            return Ok(None);
        }
        let header = a.bytes(
            0,
            r,
            "the merged header (lmm_shard_answer's first argument)",
        )?;
        let levels = a.count(
            1,
            r,
            "the number of groups (lmm_shard_answer's second argument)",
        )?;
        let request = protocol::Request::from_bytes(a.bytes(
            3,
            r,
            "the request (lmm_shard_answer's fourth argument)",
        )?)?;
        Ok(Some((
            cache::shard(header, levels, a.bytes(2, r, "the statistics value")?)?,
            request,
        )))
    }
}

unsafe extern "C" fn shard_answer(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| match shard_of(a, r)? {
            None => output::write_null_scalar(out, r),
            Some((shard, request)) => output::write_blob(
                out,
                r,
                &protocol::answer_to_bytes(shard.answer(&request)?.as_deref()),
            ),
        })
    }
}

unsafe extern "C" fn shard_blups(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| match shard_of(a, r)? {
            None => output::write_null(out, r),
            Some((shard, request)) => output::write_rows(out, r, &shard.blups(&request)?),
        })
    }
}

/// Options as `key␟value␞…` (lmm_fit's spelling) to `Options`.
fn options_of(text: &str) -> Result<crate::options::Options> {
    let pairs: Vec<(String, Option<String>)> = crate::inference::run::parse_options(text)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    crate::options::Options::from_pairs(&pairs)
}

unsafe extern "C" fn dist_grouping(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            let formula = String::from_utf8_lossy(a.bytes(0, r, "the formula")?).into_owned();
            let columns =
                crate::distributed::grouping_columns(&formula, options_of(&a.text(1, r))?)?;
            output::write_blob(out, r, columns.join("\u{1f}").as_bytes())
        })
    }
}

unsafe extern "C" fn dist_start(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            let merged = super::statistics::for_fit(
                a.bytes(0, r, "the merged header")?,
                &a.text(2, r),
                "lmm_dist_start takes",
            )?;
            let levels = a.count(1, r, "the number of groups")?;
            write_int(out, r, exchange::open(merged, levels)?);
            Ok(())
        })
    }
}

unsafe extern "C" fn dist_next(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            let handle = a.int(0, r, "the handle")?;
            let step = exchange::get(handle)?.next(NEXT_WAIT);
            let bytes = match step {
                Ok(exchange::Next::Request(b)) => [b"R".as_slice(), &b].concat(),
                Ok(exchange::Next::Wait) => b"W".to_vec(),
                Ok(exchange::Next::Done) => b"D".to_vec(),
                Err(e) => {
                    exchange::close(handle);
                    return Err(e);
                }
            };
            output::write_blob(out, r, &bytes)
        })
    }
}

unsafe extern "C" fn dist_reply(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            exchange::get(a.int(0, r, "the handle")?)?.reply(a.bytes(1, r, "the answers")?)?;
            write_bool(out, r, true);
            Ok(())
        })
    }
}

unsafe extern "C" fn dist_blups(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            match exchange::get(a.int(0, r, "the handle")?)?.blups_request()? {
                Some(b) => output::write_blob(out, r, &b),
                None => output::write_null_scalar(out, r),
            }
        })
    }
}

unsafe extern "C" fn dist_result(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            let handle = a.int(0, r, "the handle")?;
            let fitted = exchange::get(handle)?.result();
            exchange::close(handle);
            output::write_rows(out, r, &fitted?.tidy)
        })
    }
}

unsafe extern "C" fn dist_abandon(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    unsafe {
        each(info, input, output, |a, r, out| {
            exchange::close(a.int(0, r, "the handle")?);
            write_bool(out, r, true);
            Ok(())
        })
    }
}

pub unsafe fn register(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        let (blob, varchar, bigint, boolean) = (
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN,
        );
        let t = LogicalType::new;
        boxed::register_scalar(con, c"lmm_shard_header", &[blob], t(blob), shard_header)?;
        boxed::register_scalar(con, c"lmm_shard_levels", &[blob], t(bigint), shard_levels)?;
        boxed::register_scalar(
            con,
            c"lmm_shard_answer",
            &[blob, bigint, blob, blob],
            t(blob),
            shard_answer,
        )?;
        boxed::register_scalar(
            con,
            c"lmm_shard_blups",
            &[blob, bigint, blob, blob],
            output::result_type(),
            shard_blups,
        )?;
        boxed::register_scalar(
            con,
            c"lmm_dist_grouping",
            &[varchar, varchar],
            t(varchar),
            dist_grouping,
        )?;
        boxed::register_scalar(
            con,
            c"lmm_dist_start",
            &[blob, bigint, varchar],
            t(bigint),
            dist_start,
        )?;
        boxed::register_scalar(con, c"lmm_dist_next", &[bigint], t(blob), dist_next)?;
        boxed::register_scalar(
            con,
            c"lmm_dist_reply",
            &[bigint, blob],
            t(boolean),
            dist_reply,
        )?;
        boxed::register_scalar(con, c"lmm_dist_blups", &[bigint], t(blob), dist_blups)?;
        boxed::register_scalar(
            con,
            c"lmm_dist_result",
            &[bigint],
            output::result_type(),
            dist_result,
        )?;
        boxed::register_scalar(
            con,
            c"lmm_dist_abandon",
            &[bigint],
            t(boolean),
            dist_abandon,
        )
    }
}

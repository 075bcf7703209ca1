//! Scalar functions over model values:
//! `lmm_predict_impl(model ANY, row ANY, re BOOLEAN) -> DOUBLE` and
//! `lmm_model_tidy(model ANY) -> LIST(STRUCT(...))` (the tidy table's type).
//!
//! A model value is parsed once per process (`predict::prepared`, keyed by the
//! identity in its header); each thread keeps, for the models it has met in
//! the query, the prepared model and where its columns are in the row STRUCT
//! (the STRUCT type is fixed for a query). Per chunk, a row whose model is the
//! same 16-byte string handle as the previous row's costs one comparison;
//! another handle costs a read of the 32-byte header.

use std::ffi::c_void;
use std::sync::Arc;

use libduckdb_sys as ffi;

use super::checked;
use super::guard::{c_message, guard};
use super::output;
use super::types::LogicalType;
use super::vectors::{string_at, EnumCache, RowStruct, Validity};
use crate::error::{LmmError, Result};
use crate::model::{self, ModelId};
use crate::predict::{self, Prepared};

pub const PREDICT_NAME: &std::ffi::CStr = c"lmm_predict_impl";
pub const TIDY_NAME: &std::ffi::CStr = c"lmm_model_tidy";

/// A model this thread has met: the prepared model, per mode (without /
/// with random effects) the positions of its columns in the row STRUCT, and
/// the addresses of the values whose bytes were verified to be this model.
struct LocalModel {
    id: ModelId,
    prep: Arc<Prepared>,
    index: [Option<Vec<usize>>; 2],
    verified: Vec<usize>,
}

/// Per-thread state of one query's `lmm_predict_impl`.
#[derive(Default)]
struct Local {
    models: Vec<LocalModel>,
}

const LOCAL_MODELS: usize = 16;
const VERIFIED_ADDRESSES: usize = 8;

impl Local {
    /// Index into `models` of the model value `bytes`.
    ///
    /// A header that matches a known model is not enough (a damaged value
    /// can carry an intact header): the payload's checksum is verified once
    /// per distinct address of the value's bytes. A value read again from
    /// the same address (a join's build side, a cross join's one model) costs
    /// a comparison.
    fn lookup(&mut self, bytes: &[u8]) -> Result<usize> {
        let at = bytes.as_ptr() as usize;
        if let Some(id) = model::quick_id(bytes) {
            if let Some(i) = self.models.iter().position(|m| m.id == id) {
                let m = &mut self.models[i];
                if !m.verified.contains(&at) {
                    if model::checksum(model::model_part(bytes)) != id.checksum {
                        return Err(LmmError::new(
                            "the model value is corrupt (its checksum does not match its contents)",
                        ));
                    }
                    if m.verified.len() >= VERIFIED_ADDRESSES {
                        m.verified.remove(0);
                    }
                    m.verified.push(at);
                }
                return Ok(i);
            }
        }
        let prep = predict::prepared(bytes)?;
        if self.models.len() >= LOCAL_MODELS {
            self.models.remove(0);
        }
        self.models.push(LocalModel {
            id: prep.id,
            prep,
            index: [None, None],
            verified: vec![at],
        });
        Ok(self.models.len() - 1)
    }
}

fn report(info: ffi::duckdb_function_info, r: Result<()>) {
    if let Err(e) = r {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

/// The model argument must be a BLOB (made by lmm_model_agg).
unsafe fn check_model_vector(v: ffi::duckdb_vector, function: &str) -> Result<bool> {
    let ty = unsafe { LogicalType::of_vector(v)? };
    match ty.id() {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => Ok(true),
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => Ok(false),
        _ => Err(LmmError::new(format!(
            "the model argument of {function} must be a model value (a BLOB made by lmm_model_agg); got a value of type {}",
            ty.name()
        ))),
    }
}

// ---------------------------------------------------------------------------
// lmm_predict_impl
// ---------------------------------------------------------------------------

unsafe extern "C" fn predict_init(info: ffi::duckdb_init_info) {
    let r = guard(|| {
        let state = Box::into_raw(Box::new(Local::default()));
        unsafe {
            ffi::duckdb_scalar_function_init_set_state(info, state as *mut c_void, Some(drop_local))
        };
        Ok(())
    });
    if let Err(e) = r {
        let msg = c_message(&e.to_string());
        unsafe { ffi::duckdb_scalar_function_init_set_error(info, msg.as_ptr()) };
    }
}

unsafe extern "C" fn drop_local(p: *mut c_void) {
    let _ = guard(|| {
        if !p.is_null() {
            drop(unsafe { Box::from_raw(p as *mut Local) });
        }
        Ok(())
    });
}

unsafe extern "C" fn predict_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    report(
        info,
        guard(|| unsafe {
            let state = ffi::duckdb_scalar_function_get_state(info) as *mut Local;
            if state.is_null() {
                let mut local = Local::default();
                predict_impl(&mut local, input, output)
            } else {
                predict_impl(&mut *state, input, output)
            }
        }),
    );
}

unsafe fn predict_impl(
    local: &mut Local,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) -> Result<()> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        if n == 0 {
            return Ok(());
        }
        let vmodel = ffi::duckdb_data_chunk_get_vector(input, 0);
        let vrow = ffi::duckdb_data_chunk_get_vector(input, 1);
        let vre = ffi::duckdb_data_chunk_get_vector(input, 2);
        checked::ensure_validity_writable(output)?;
        let out_mask = ffi::duckdb_vector_get_validity(output);
        let out_data = ffi::duckdb_vector_get_data(output) as *mut f64;
        let set_null = |r: usize| ffi::duckdb_validity_set_row_invalid(out_mask, r as ffi::idx_t);
        if !check_model_vector(vmodel, "lmm_predict")? {
            (0..n).for_each(set_null);
            return Ok(());
        }
        let row = RowStruct::new(
            vrow,
            n,
            "the second argument of lmm_predict must be a whole row, as in \
             lmm_predict(m.model, d) FROM data d, models m (a column named like the table alias hides \
             the row; lmm_score calls the row __lmm_t, so rename a column of that name)",
        )?;
        let model_valid = Validity::of(vmodel);
        let row_valid = Validity::of(vrow);
        let re_valid = Validity::of(vre);
        let re_data = ffi::duckdb_vector_get_data(vre) as *const u8;
        let model_data = ffi::duckdb_vector_get_data(vmodel) as *const ffi::duckdb_string_t;

        let mut valid: Vec<bool> = (0..n)
            .map(|r| model_valid.is_valid(r) && row_valid.is_valid(r) && re_valid.is_valid(r))
            .collect();
        let re: Vec<bool> = (0..n).map(|r| *re_data.add(r) != 0).collect();

        // The model of each row: the same string handle as the previous row is the same model.
        let mut model_of: Vec<usize> = vec![usize::MAX; n];
        let raw = model_data as *const u128;
        let mut prev: Option<(u128, usize)> = None;
        for r in 0..n {
            if !valid[r] {
                continue;
            }
            let handle = raw.add(r).read_unaligned();
            model_of[r] = match prev {
                Some((h, i)) if h == handle => i,
                _ => {
                    let i = local.lookup(string_at(model_data, r))?;
                    prev = Some((handle, i));
                    i
                }
            };
        }
        let mut result = vec![0.0f64; n];
        let mut distinct: Vec<usize> = model_of
            .iter()
            .copied()
            .filter(|&i| i != usize::MAX)
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        for mi in distinct {
            let rows: Vec<usize> = (0..n).filter(|&r| model_of[r] == mi).collect();
            let any_re = rows.iter().any(|&r| re[r]);
            let lm = &mut local.models[mi];
            let prep = lm.prep.clone();
            let required = prep.required(any_re);
            let index = match &lm.index[any_re as usize] {
                Some(ix) => ix.clone(),
                None => {
                    let ix = row.resolve(&required).map_err(|e| {
                        LmmError::new(format!(
                            "lmm_predict: {}; the model '{}' needs it",
                            e.0, prep.model.formula
                        ))
                    })?;
                    lm.index[any_re as usize] = Some(ix.clone());
                    ix
                }
            };
            let mut enums = EnumCache::default();
            let mut prepared = row.prepare(&required, &index, &mut enums)?;
            let chunk = prepared.chunk(&enums);
            prep.predict_chunk(&chunk, &rows, &re, &mut valid, &mut result)?;
        }
        for r in 0..n {
            if valid[r] {
                *out_data.add(r) = result[r];
            } else {
                set_null(r);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// lmm_model_tidy
// ---------------------------------------------------------------------------

unsafe extern "C" fn tidy_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    report(info, guard(|| unsafe { tidy_impl(input, output) }));
}

unsafe fn tidy_impl(input: ffi::duckdb_data_chunk, result: ffi::duckdb_vector) -> Result<()> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        let vmodel = ffi::duckdb_data_chunk_get_vector(input, 0);
        if !check_model_vector(vmodel, "lmm_tidy")? {
            for r in 0..n {
                output::write_null(result, r)?;
            }
            return Ok(());
        }
        let valid = Validity::of(vmodel);
        let data = ffi::duckdb_vector_get_data(vmodel) as *const ffi::duckdb_string_t;
        let mut last: Option<(ModelId, crate::tidy::Tidy)> = None;
        for r in 0..n {
            if !valid.is_valid(r) {
                output::write_null(result, r)?;
                continue;
            }
            let prep = predict::prepared(string_at(data, r))?;
            if last.as_ref().is_none_or(|(id, _)| *id != prep.id) {
                last = Some((prep.id, prep.model.tidy()));
            }
            output::write_rows(result, r, &last.as_ref().unwrap().1)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

pub unsafe fn register(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        let any = LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_ANY);
        let boolean = LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN);
        let double = LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE);

        let mut f = ffi::duckdb_create_scalar_function();
        if f.is_null() {
            return Err(LmmError::new(
                "could not create the scalar function lmm_predict_impl",
            ));
        }
        ffi::duckdb_scalar_function_set_name(f, PREDICT_NAME.as_ptr());
        ffi::duckdb_scalar_function_add_parameter(f, any.0);
        ffi::duckdb_scalar_function_add_parameter(f, any.0);
        ffi::duckdb_scalar_function_add_parameter(f, boolean.0);
        ffi::duckdb_scalar_function_set_return_type(f, double.0);
        ffi::duckdb_scalar_function_set_special_handling(f);
        ffi::duckdb_scalar_function_set_function(f, Some(predict_fn));
        ffi::duckdb_scalar_function_set_init(f, Some(predict_init));
        let ok = ffi::duckdb_register_scalar_function(con, f) == ffi::DuckDBSuccess;
        ffi::duckdb_destroy_scalar_function(&mut f);
        if !ok {
            return Err(LmmError::new(
                "could not register the scalar function lmm_predict_impl",
            ));
        }

        let mut f = ffi::duckdb_create_scalar_function();
        if f.is_null() {
            return Err(LmmError::new(
                "could not create the scalar function lmm_model_tidy",
            ));
        }
        ffi::duckdb_scalar_function_set_name(f, TIDY_NAME.as_ptr());
        ffi::duckdb_scalar_function_add_parameter(f, any.0);
        let list = output::result_type();
        ffi::duckdb_scalar_function_set_return_type(f, list.0);
        ffi::duckdb_scalar_function_set_special_handling(f);
        ffi::duckdb_scalar_function_set_function(f, Some(tidy_fn));
        let ok = ffi::duckdb_register_scalar_function(con, f) == ffi::DuckDBSuccess;
        ffi::duckdb_destroy_scalar_function(&mut f);
        if !ok {
            return Err(LmmError::new(
                "could not register the scalar function lmm_model_tidy",
            ));
        }
        Ok(())
    }
}

//! The scalar functions of an interruptible fit (see `jobs`):
//! `lmm_fit_poll(job BLOB) -> BOOLEAN` (still running?) and
//! `lmm_fit_result(job BLOB) -> LIST(STRUCT(...))` (the tidy table) for
//! `lmm_fit`; `lmm_model_poll` and `lmm_model_result(job) -> BLOB` (the
//! model value) for `lmm_model`.
//! Both are volatile: DuckDB must call them once per row, never fold them.

use libduckdb_sys as ffi;

use super::checked;
use super::guard::{c_message, guard};
use super::jobs;
use super::output;
use super::types::LogicalType;
use super::vectors::{string_at, Validity};
use crate::error::{LmmError, Result};

fn report(info: ffi::duckdb_function_info, r: Result<()>) {
    if let Err(e) = r {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

/// Each row's job handle (`None` for NULL).
unsafe fn handles<'a>(input: ffi::duckdb_data_chunk) -> Vec<Option<&'a [u8]>> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        let v = ffi::duckdb_data_chunk_get_vector(input, 0);
        let valid = Validity::of(v);
        let data = ffi::duckdb_vector_get_data(v) as *const ffi::duckdb_string_t;
        (0..n)
            .map(|i| valid.is_valid(i).then(|| string_at(data, i)))
            .collect()
    }
}

/// What `lmm_fit_poll`'s bind found: the query's `memory_limit`, the budget
/// of the fit it starts (see `crate::budget`).
struct PollBind {
    memory_limit: Option<u64>,
}

unsafe extern "C" fn poll_bind(info: ffi::duckdb_bind_info) {
    let _ = guard(|| {
        let data = Box::into_raw(Box::new(PollBind {
            memory_limit: checked::memory_limit(info),
        }));
        unsafe {
            ffi::duckdb_scalar_function_set_bind_data(
                info,
                data as *mut std::ffi::c_void,
                Some(drop_poll_bind),
            )
        };
        Ok(())
    });
}

unsafe extern "C" fn drop_poll_bind(p: *mut std::ffi::c_void) {
    let _ = guard(|| {
        if !p.is_null() {
            drop(unsafe { Box::from_raw(p as *mut PollBind) });
        }
        Ok(())
    });
}

unsafe fn poll_impl(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
    product: jobs::Product,
) -> Result<()> {
    unsafe {
        let bind = ffi::duckdb_scalar_function_get_bind_data(info) as *const PollBind;
        let memory_limit = if bind.is_null() {
            None
        } else {
            (*bind).memory_limit
        };
        checked::ensure_validity_writable(output)?;
        let mask = ffi::duckdb_vector_get_validity(output);
        let out = ffi::duckdb_vector_get_data(output) as *mut bool;
        for (i, h) in handles(input).into_iter().enumerate() {
            match h {
                Some(h) => *out.add(i) = jobs::poll(h, product, memory_limit)?,
                None => ffi::duckdb_validity_set_row_invalid(mask, i as ffi::idx_t),
            }
        }
        Ok(())
    }
}

unsafe extern "C" fn poll_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    report(
        info,
        guard(|| unsafe { poll_impl(info, input, output, jobs::Product::Table) }),
    );
}

unsafe extern "C" fn inference_poll_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    report(
        info,
        guard(|| unsafe { poll_impl(info, input, output, jobs::Product::Inference) }),
    );
}

unsafe extern "C" fn model_poll_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    report(
        info,
        guard(|| unsafe { poll_impl(info, input, output, jobs::Product::Model) }),
    );
}

/// Write each row's finished job (`each`), or NULL for a NULL handle (`null`).
unsafe fn results(
    input: ffi::duckdb_data_chunk,
    mut null: impl FnMut(usize) -> Result<()>,
    mut each: impl FnMut(usize, jobs::Finished) -> Result<()>,
) -> Result<()> {
    for (i, h) in unsafe { handles(input) }.into_iter().enumerate() {
        match h {
            Some(h) => each(i, jobs::take_result(h)?)?,
            None => null(i)?,
        }
    }
    Ok(())
}

unsafe extern "C" fn result_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    let each = |i, done| match done {
        jobs::Finished::Table(t) => unsafe { output::write_rows(output, i, &t) },
        _ => Err(LmmError::new("internal error: another job read as a table")),
    };
    report(
        info,
        guard(|| unsafe { results(input, |i| output::write_null(output, i), each) }),
    );
}

unsafe extern "C" fn model_result_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    let each = |i, done| match done {
        jobs::Finished::Model(bytes) => unsafe { output::write_blob(output, i, &bytes) },
        _ => Err(LmmError::new("internal error: another job read as a model")),
    };
    report(
        info,
        guard(|| unsafe { results(input, |i| output::write_null_scalar(output, i), each) }),
    );
}

unsafe extern "C" fn inference_result_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    let each = |i, done| match done {
        jobs::Finished::Inference(t) => unsafe { super::inference::write_table(output, i, &t) },
        _ => Err(LmmError::new(
            "internal error: another job read as an inference table",
        )),
    };
    report(
        info,
        guard(|| unsafe { results(input, |i| output::write_null(output, i), each) }),
    );
}

type Callback =
    unsafe extern "C" fn(ffi::duckdb_function_info, ffi::duckdb_data_chunk, ffi::duckdb_vector);

type Bind = unsafe extern "C" fn(ffi::duckdb_bind_info);

unsafe fn register_one(
    con: ffi::duckdb_connection,
    name: &std::ffi::CStr,
    returns: LogicalType,
    f: Callback,
    bind: Option<Bind>,
) -> Result<()> {
    unsafe {
        let blob = LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB);
        let mut sf = ffi::duckdb_create_scalar_function();
        if sf.is_null() {
            return Err(LmmError::new(format!(
                "could not create the scalar function {}",
                name.to_string_lossy()
            )));
        }
        ffi::duckdb_scalar_function_set_name(sf, name.as_ptr());
        ffi::duckdb_scalar_function_add_parameter(sf, blob.0);
        ffi::duckdb_scalar_function_set_return_type(sf, returns.0);
        ffi::duckdb_scalar_function_set_volatile(sf);
        ffi::duckdb_scalar_function_set_function(sf, Some(f));
        if let Some(b) = bind {
            ffi::duckdb_scalar_function_set_bind(sf, Some(b));
        }
        let ok = ffi::duckdb_register_scalar_function(con, sf) == ffi::DuckDBSuccess;
        ffi::duckdb_destroy_scalar_function(&mut sf);
        if ok {
            Ok(())
        } else {
            Err(LmmError::new(format!(
                "could not register the scalar function {}",
                name.to_string_lossy()
            )))
        }
    }
}

pub unsafe fn register(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        register_one(
            con,
            c"lmm_fit_poll",
            LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN),
            poll_fn,
            Some(poll_bind),
        )?;
        register_one(
            con,
            c"lmm_fit_result",
            output::result_type(),
            result_fn,
            None,
        )?;
        let boolean = LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN);
        register_one(
            con,
            c"lmm_model_poll",
            boolean,
            model_poll_fn,
            Some(poll_bind),
        )?;
        register_one(
            con,
            c"lmm_model_result",
            LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB),
            model_result_fn,
            None,
        )?;
        register_one(
            con,
            c"lmm_inference_poll",
            LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN),
            inference_poll_fn,
            Some(poll_bind),
        )?;
        register_one(
            con,
            c"lmm_inference_result",
            super::inference::result_type(),
            inference_result_fn,
            None,
        )
    }
}

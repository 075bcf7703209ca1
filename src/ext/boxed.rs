//! Shared pieces of lmm's DuckDB functions: an aggregate state that is a
//! pointer to a heap value (DuckDB owns a fixed-size block per group and may
//! move it; the block holds only the pointer, null until the first row), its
//! size/init/destroy callbacks, error reporting, and scalar registration.

use std::ptr;

use libduckdb_sys as ffi;

use super::checked;
use super::guard::{c_message, guard};
use super::types::LogicalType;
use crate::error::{LmmError, Result};

/// The state block of a group: a pointer to its `T`.
#[inline]
pub unsafe fn block<T>(s: ffi::duckdb_aggregate_state) -> *mut *mut T {
    s as *mut *mut T
}

/// An aggregate callback's error, handed to DuckDB.
pub fn report(info: ffi::duckdb_function_info, r: Result<()>) {
    if let Err(e) = r {
        checked::set_error(info, &c_message(&e.to_string()), false);
    }
}

pub unsafe extern "C" fn state_size<T>(_info: ffi::duckdb_function_info) -> ffi::idx_t {
    std::mem::size_of::<*mut T>() as ffi::idx_t
}

pub unsafe extern "C" fn state_init<T>(
    info: ffi::duckdb_function_info,
    state: ffi::duckdb_aggregate_state,
) {
    report(
        info,
        guard(|| {
            unsafe { block::<T>(state).write_unaligned(ptr::null_mut()) };
            Ok(())
        }),
    );
}

pub unsafe extern "C" fn destroy<T>(states: *mut ffi::duckdb_aggregate_state, count: ffi::idx_t) {
    // No way to report an error here: just never unwind into DuckDB.
    for i in 0..count as usize {
        let _ = guard(|| {
            unsafe {
                let b = block::<T>(*states.add(i));
                let p = b.read_unaligned();
                if !p.is_null() {
                    b.write_unaligned(ptr::null_mut());
                    drop(Box::from_raw(p));
                }
            }
            Ok(())
        });
    }
}

pub type ScalarCallback =
    unsafe extern "C" fn(ffi::duckdb_function_info, ffi::duckdb_data_chunk, ffi::duckdb_vector);

/// Register a volatile scalar function with special NULL handling.
pub unsafe fn register_scalar(
    con: ffi::duckdb_connection,
    name: &std::ffi::CStr,
    params: &[ffi::DUCKDB_TYPE],
    returns: LogicalType,
    callback: ScalarCallback,
) -> Result<()> {
    unsafe {
        let params: Vec<LogicalType> = params.iter().map(|&t| LogicalType::new(t)).collect();
        let mut f = ffi::duckdb_create_scalar_function();
        if f.is_null() {
            return Err(LmmError::new(format!(
                "could not create the scalar function {}",
                name.to_string_lossy()
            )));
        }
        ffi::duckdb_scalar_function_set_name(f, name.as_ptr());
        for t in &params {
            ffi::duckdb_scalar_function_add_parameter(f, t.0);
        }
        ffi::duckdb_scalar_function_set_return_type(f, returns.0);
        ffi::duckdb_scalar_function_set_special_handling(f);
        ffi::duckdb_scalar_function_set_volatile(f);
        ffi::duckdb_scalar_function_set_function(f, Some(callback));
        let ok = ffi::duckdb_register_scalar_function(con, f) == ffi::DuckDBSuccess;
        ffi::duckdb_destroy_scalar_function(&mut f);
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

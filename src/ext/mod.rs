//! DuckDB layer: the loadable-extension entry point, the aggregate function
//! sets `lmm_fit_agg` and `lmm_model_agg`, the scalar functions
//! `lmm_predict_impl` and `lmm_model_tidy` (through DuckDB's C API), and the
//! `lmm_fit`, `lmm_predict` and `lmm_tidy` macros.
//!
//! Nothing outside this module touches DuckDB; the statistics core only sees
//! `input::Chunk`s and returns `tidy::TidyRow`s.

mod aggregate;
mod boxed;
mod checked;
mod distributed;
mod guard;
mod hash;
mod inference;
mod job_functions;
mod jobs;
mod keys;
mod output;
mod scalar;
mod sql;
mod statistics;
mod types;
mod vectors;

use std::ptr;

use libduckdb_sys as ffi;

use crate::error::LmmError;

/// The C API version requested from DuckDB (the highest that DuckDB 2.0.0
/// accepts for the `C_STRUCT` ABI; must match the metadata footer).
pub const C_API_VERSION: &str = "v1.5.6";

/// The SQL of the `lmm_fit` table macro created at LOAD.
pub const LMM_FIT_MACRO_SQL: &str = sql::LMM_FIT_MACRO;

/// Entry point called by DuckDB on `LOAD` (the name must be `<extension>_init_c_api`).
///
/// This mirrors what duckdb-rs' `#[duckdb_entrypoint_c_api]` macro generates,
/// except that it keeps the raw `duckdb_database`, which the C API needs to
/// register an aggregate function (the macro only hands out a `duckdb::Connection`,
/// whose raw handle is private).
///
/// # Safety
/// Called by DuckDB with valid `info` and `access` pointers.
#[no_mangle]
pub unsafe extern "C" fn lmm_init_c_api(
    info: ffi::duckdb_extension_info,
    access: *const ffi::duckdb_extension_access,
) -> bool {
    if access.is_null() {
        return false;
    }
    let outcome = guard::guard(|| unsafe { init(info, access) });
    match outcome {
        Ok(loaded) => loaded,
        Err(e) => {
            if let Some(set_error) = unsafe { (*access).set_error } {
                let msg = guard::c_message(&e.to_string());
                unsafe { set_error(info, msg.as_ptr()) };
            }
            false
        }
    }
}

unsafe fn init(
    info: ffi::duckdb_extension_info,
    access: *const ffi::duckdb_extension_access,
) -> Result<bool, LmmError> {
    unsafe {
        let have_api = ffi::duckdb_rs_extension_api_init(info, access, C_API_VERSION)
            .map_err(|e| LmmError::new(format!("could not initialise the DuckDB C API: {e}")))?;
        if !have_api {
            // DuckDB refused the requested API version and has set the reason.
            return Ok(false);
        }
        // The same struct again, for the calls made through C++ (`checked`).
        let version = std::ffi::CString::new(C_API_VERSION).expect("no NUL in the version");
        let get_api = (*access)
            .get_api
            .ok_or_else(|| LmmError::new("DuckDB did not provide get_api"))?;
        checked::set_api(get_api(info, version.as_ptr()) as *const ffi::duckdb_ext_api_v1);
        guard::install_panic_hook();

        let get_database = (*access)
            .get_database
            .ok_or_else(|| LmmError::new("DuckDB did not provide get_database"))?;
        let db = get_database(info);
        if db.is_null() {
            return Ok(false);
        }
        let mut con: ffi::duckdb_connection = ptr::null_mut();
        if ffi::duckdb_connect(*db, &mut con) != ffi::DuckDBSuccess {
            return Err(LmmError::new("could not connect to the database"));
        }
        let registered = aggregate::register(con)
            .and_then(|_| scalar::register(con))
            .and_then(|_| job_functions::register(con))
            .and_then(|_| inference::register(con))
            .and_then(|_| statistics::register(con))
            .and_then(|_| distributed::register(con));
        // Macros: see `sql::create_macros`; only a planted macro on a database
        // lmm cannot write fails the LOAD.
        let macros = if registered.is_ok() {
            sql::create_macros(con)
                .map_err(|e| LmmError::new(e.trim_start_matches("Invalid Input Error: ")))
        } else {
            Ok(())
        };
        ffi::duckdb_disconnect(&mut con);
        registered.and(macros).map(|_| true)
    }
}

//! DuckDB calls that may throw, made so that they cannot unwind through Rust.
//!
//! DuckDB is C++: a C API function that allocates (a list child reserved, a
//! string copied into a vector's heap, a validity mask made writable) throws
//! an `OutOfMemoryException` when `memory_limit` is reached. An exception
//! that reaches a Rust frame aborts the host process ("Rust cannot catch
//! foreign exceptions"). So these calls go through the C++ trampolines of
//! `shim/catch.cpp`, which call DuckDB's function pointer (taken from the API
//! struct DuckDB hands out at LOAD) inside `try`/`catch` and turn an exception
//! into an `LmmError` that says what was being done.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

use libduckdb_sys as ffi;

use crate::error::{LmmError, Result};

extern "C" {
    fn lmm_call_v_p(
        f: unsafe extern "C" fn(*mut c_void),
        a: *mut c_void,
        msg: *mut c_char,
        cap: usize,
    ) -> i32;
    fn lmm_call_v_ps(
        f: unsafe extern "C" fn(*mut c_void, *const c_char),
        a: *mut c_void,
        s: *const c_char,
        msg: *mut c_char,
        cap: usize,
    ) -> i32;
    fn lmm_call_v_pusu(
        f: unsafe extern "C" fn(*mut c_void, u64, *const c_char, u64),
        a: *mut c_void,
        i: u64,
        s: *const c_char,
        n: u64,
        msg: *mut c_char,
        cap: usize,
    ) -> i32;
    fn lmm_call_i_pu(
        f: unsafe extern "C" fn(*mut c_void, u64) -> i32,
        a: *mut c_void,
        u: u64,
        out: *mut i32,
        msg: *mut c_char,
        cap: usize,
    ) -> i32;
    fn lmm_call_p_p(
        f: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
        a: *mut c_void,
        out: *mut *mut c_void,
        msg: *mut c_char,
        cap: usize,
    ) -> i32;
    fn lmm_call_p_pu(
        f: unsafe extern "C" fn(*mut c_void, u64) -> *mut c_void,
        a: *mut c_void,
        u: u64,
        out: *mut *mut c_void,
        msg: *mut c_char,
        cap: usize,
    ) -> i32;
}

/// A copy of the API struct of the DuckDB that loaded us (set once at LOAD;
/// the struct DuckDB lends lives only during the entry point).
static API: OnceLock<ffi::duckdb_ext_api_v1> = OnceLock::new();

/// Copy DuckDB's API struct; called by the entry point. A second LOAD in
/// the same process gets the same functions, so the first copy stays.
///
/// # Safety
/// `api` must be null or point to the struct returned by `get_api`.
pub unsafe fn set_api(api: *const ffi::duckdb_ext_api_v1) {
    if !api.is_null() {
        let _ = API.set(unsafe { *api });
    }
}

fn api() -> Result<&'static ffi::duckdb_ext_api_v1> {
    API.get()
        .ok_or_else(|| LmmError::new("internal error: the DuckDB API is not initialised"))
}

/// The function pointer `name` of the API struct, as the trampoline's type.
macro_rules! entry {
    ($field:ident, $ty:ty) => {{
        let f = api()?.$field.ok_or_else(|| {
            LmmError::new(concat!("this DuckDB does not provide ", stringify!($field)))
        })?;
        // The trampolines take `void *` for every handle: same ABI.
        unsafe { std::mem::transmute::<_, $ty>(f) }
    }};
}

const CAP: usize = 512;

/// Turn a trampoline's outcome into a `Result`, naming what was being done.
fn outcome(code: i32, msg: &[c_char; CAP], doing: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let raw = unsafe { CStr::from_ptr(msg.as_ptr()) }.to_string_lossy();
    let text = exception_message(&raw);
    let hint = if text.to_ascii_lowercase().contains("memory") {
        " (raise memory_limit, or ask for less: e.g. ranef := false leaves out the BLUP rows)"
    } else {
        ""
    };
    Err(LmmError::new(format!(
        "DuckDB failed while {doing}: {text}{hint}"
    )))
}

/// The first line of a DuckDB exception's message. DuckDB's `what()` is a
/// JSON object (`{"exception_type": ..., "exception_message": "..."}`); a
/// plain message is kept as it is.
fn exception_message(raw: &str) -> String {
    const KEY: &str = "\"exception_message\":\"";
    let Some(start) = raw.find(KEY).map(|i| i + KEY.len()) else {
        return raw.to_string();
    };
    let mut out = String::new();
    let mut chars = raw[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => break,
                Some(e) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// `duckdb_vector_ensure_validity_writable`.
pub fn ensure_validity_writable(v: ffi::duckdb_vector) -> Result<()> {
    let f = entry!(
        duckdb_vector_ensure_validity_writable,
        unsafe extern "C" fn(*mut c_void)
    );
    let mut msg = [0 as c_char; CAP];
    let code = unsafe { lmm_call_v_p(f, v as *mut c_void, msg.as_mut_ptr(), CAP) };
    outcome(code, &msg, "allocating a validity mask")
}

/// `duckdb_vector_assign_string_element_len`: copy `bytes` into row `row`.
pub fn assign_string(v: ffi::duckdb_vector, row: usize, bytes: &[u8]) -> Result<()> {
    let f = entry!(
        duckdb_vector_assign_string_element_len,
        unsafe extern "C" fn(*mut c_void, u64, *const c_char, u64)
    );
    let mut msg = [0 as c_char; CAP];
    let code = unsafe {
        lmm_call_v_pusu(
            f,
            v as *mut c_void,
            row as u64,
            bytes.as_ptr() as *const c_char,
            bytes.len() as u64,
            msg.as_mut_ptr(),
            CAP,
        )
    };
    outcome(code, &msg, "writing a string of the result")
}

fn list_call(
    f: unsafe extern "C" fn(*mut c_void, u64) -> i32,
    v: ffi::duckdb_vector,
    n: usize,
    doing: &str,
) -> Result<()> {
    let mut msg = [0 as c_char; CAP];
    let mut state = 0i32;
    let code = unsafe {
        lmm_call_i_pu(
            f,
            v as *mut c_void,
            n as u64,
            &mut state,
            msg.as_mut_ptr(),
            CAP,
        )
    };
    outcome(code, &msg, doing)?;
    if state != ffi::DuckDBSuccess as i32 {
        return Err(LmmError::new(format!("DuckDB refused {doing}")));
    }
    Ok(())
}

/// `duckdb_list_vector_reserve`.
pub fn list_reserve(v: ffi::duckdb_vector, capacity: usize) -> Result<()> {
    let f = entry!(
        duckdb_list_vector_reserve,
        unsafe extern "C" fn(*mut c_void, u64) -> i32
    );
    list_call(
        f,
        v,
        capacity,
        &format!("reserving {capacity} rows of the result list"),
    )
}

/// `duckdb_list_vector_set_size`.
pub fn list_set_size(v: ffi::duckdb_vector, size: usize) -> Result<()> {
    let f = entry!(
        duckdb_list_vector_set_size,
        unsafe extern "C" fn(*mut c_void, u64) -> i32
    );
    list_call(f, v, size, "setting the size of the result list")
}

/// `duckdb_aggregate_function_set_error` / `duckdb_scalar_function_set_error`:
/// report `message` for the query. Nothing can be reported if this fails.
pub fn set_error(info: ffi::duckdb_function_info, message: &CStr, scalar: bool) {
    let Ok(api) = api() else { return };
    let f = if scalar {
        api.duckdb_scalar_function_set_error
    } else {
        api.duckdb_aggregate_function_set_error
    };
    let Some(f) = f else { return };
    let f: unsafe extern "C" fn(*mut c_void, *const c_char) = unsafe { std::mem::transmute(f) };
    let mut msg = [0 as c_char; CAP];
    unsafe {
        lmm_call_v_ps(
            f,
            info as *mut c_void,
            message.as_ptr(),
            msg.as_mut_ptr(),
            CAP,
        )
    };
}

/// A call `handle -> handle` (logical types of vectors and of their children).
fn pointer_call(
    f: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    a: *mut c_void,
    doing: &str,
) -> Result<*mut c_void> {
    let mut msg = [0 as c_char; CAP];
    let mut out: *mut c_void = std::ptr::null_mut();
    let code = unsafe { lmm_call_p_p(f, a, &mut out, msg.as_mut_ptr(), CAP) };
    outcome(code, &msg, doing)?;
    if out.is_null() {
        return Err(LmmError::new(format!(
            "DuckDB returned nothing while {doing}"
        )));
    }
    Ok(out)
}

/// A call `(handle, index) -> pointer` (struct children, enum labels).
fn indexed_call(
    f: unsafe extern "C" fn(*mut c_void, u64) -> *mut c_void,
    a: *mut c_void,
    i: usize,
    doing: &str,
) -> Result<*mut c_void> {
    let mut msg = [0 as c_char; CAP];
    let mut out: *mut c_void = std::ptr::null_mut();
    let code = unsafe { lmm_call_p_pu(f, a, i as u64, &mut out, msg.as_mut_ptr(), CAP) };
    outcome(code, &msg, doing)?;
    if out.is_null() {
        return Err(LmmError::new(format!(
            "DuckDB returned nothing while {doing}"
        )));
    }
    Ok(out)
}

/// `duckdb_vector_get_column_type`.
pub fn vector_type(v: ffi::duckdb_vector) -> Result<ffi::duckdb_logical_type> {
    let f = entry!(
        duckdb_vector_get_column_type,
        unsafe extern "C" fn(*mut c_void) -> *mut c_void
    );
    Ok(pointer_call(f, v as *mut c_void, "reading a column's type")? as ffi::duckdb_logical_type)
}

/// The child type of a LIST (`list`), ARRAY (`array`) or the key / value type of a MAP.
pub fn child_type(
    t: ffi::duckdb_logical_type,
    which: ChildType,
) -> Result<ffi::duckdb_logical_type> {
    let f = match which {
        ChildType::List => entry!(
            duckdb_list_type_child_type,
            unsafe extern "C" fn(*mut c_void) -> *mut c_void
        ),
        ChildType::Array => entry!(
            duckdb_array_type_child_type,
            unsafe extern "C" fn(*mut c_void) -> *mut c_void
        ),
        ChildType::MapKey => entry!(
            duckdb_map_type_key_type,
            unsafe extern "C" fn(*mut c_void) -> *mut c_void
        ),
        ChildType::MapValue => entry!(
            duckdb_map_type_value_type,
            unsafe extern "C" fn(*mut c_void) -> *mut c_void
        ),
    };
    Ok(pointer_call(f, t as *mut c_void, "reading a nested type")? as ffi::duckdb_logical_type)
}

#[derive(Clone, Copy)]
pub enum ChildType {
    List,
    Array,
    MapKey,
    MapValue,
}

/// `duckdb_struct_type_child_type`.
pub fn struct_child_type(
    t: ffi::duckdb_logical_type,
    i: usize,
) -> Result<ffi::duckdb_logical_type> {
    let f = entry!(
        duckdb_struct_type_child_type,
        unsafe extern "C" fn(*mut c_void, u64) -> *mut c_void
    );
    Ok(
        indexed_call(f, t as *mut c_void, i, "reading a STRUCT field's type")?
            as ffi::duckdb_logical_type,
    )
}

/// `duckdb_struct_type_child_name` (a string to be freed with `duckdb_free`).
pub fn struct_child_name(t: ffi::duckdb_logical_type, i: usize) -> Result<*mut c_char> {
    let f = entry!(
        duckdb_struct_type_child_name,
        unsafe extern "C" fn(*mut c_void, u64) -> *mut c_void
    );
    Ok(indexed_call(f, t as *mut c_void, i, "reading a STRUCT field's name")? as *mut c_char)
}

/// `duckdb_enum_dictionary_value` (a string to be freed with `duckdb_free`).
pub fn enum_label(t: ffi::duckdb_logical_type, i: usize) -> Result<*mut c_char> {
    let f = entry!(
        duckdb_enum_dictionary_value,
        unsafe extern "C" fn(*mut c_void, u64) -> *mut c_void
    );
    Ok(indexed_call(f, t as *mut c_void, i, "reading an ENUM label")? as *mut c_char)
}

#[cfg(test)]
mod tests {
    use super::exception_message;

    #[test]
    fn duckdb_json_messages_are_reduced_to_their_first_line() {
        let raw = r#"{"exception_type":"Out of Memory","exception_message":"failed to allocate data of size 1.0 MiB (9.0 MiB/9.5 MiB used)\n\nPossible solutions:"}"#;
        assert_eq!(
            exception_message(raw),
            "failed to allocate data of size 1.0 MiB (9.0 MiB/9.5 MiB used)"
        );
        assert_eq!(exception_message("std::bad_alloc"), "std::bad_alloc");
        assert_eq!(
            exception_message(r#"{"exception_message":"a \"quoted\" word"}"#),
            "a \"quoted\" word"
        );
    }
}

/// DuckDB's `memory_limit` for the query being bound (a scalar function's
/// bind info), in bytes; `None` where this DuckDB cannot say.
pub fn memory_limit(info: ffi::duckdb_bind_info) -> Option<u64> {
    let api = api().ok()?;
    api.duckdb_scalar_function_get_client_context?;
    api.duckdb_client_context_get_config_option?;
    api.duckdb_destroy_client_context?;
    unsafe {
        let mut ctx: ffi::duckdb_client_context = std::ptr::null_mut();
        ffi::duckdb_scalar_function_get_client_context(info, &mut ctx);
        if ctx.is_null() {
            return None;
        }
        let mut scope: ffi::duckdb_config_option_scope = std::mem::zeroed();
        let mut value =
            ffi::duckdb_client_context_get_config_option(ctx, c"memory_limit".as_ptr(), &mut scope);
        ffi::duckdb_destroy_client_context(&mut ctx);
        if value.is_null() {
            return None;
        }
        let text = ffi::duckdb_get_varchar(value);
        ffi::duckdb_destroy_value(&mut value);
        if text.is_null() {
            return None;
        }
        let s = CStr::from_ptr(text).to_string_lossy().into_owned();
        ffi::duckdb_free(text as *mut c_void);
        crate::budget::parse_size(&s)
    }
}

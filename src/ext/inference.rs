//! `lmm_inference(kind VARCHAR, model BLOB, other BLOB, options VARCHAR,
//! contrast VARCHAR) -> LIST(STRUCT(t0..t3 VARCHAR, v0..v11 DOUBLE))`: every
//! inference function through one scalar (`inference::run`); the SQL macros
//! (`sql`) name its columns per function.

use std::ffi::{c_char, CString};

use libduckdb_sys as ffi;

use super::checked;
use super::guard::{c_message, guard};
use super::types::LogicalType;
use super::vectors::{string_at, Validity};
use crate::error::Result;
use crate::inference::table::{Table, NUMS, TEXTS};

pub unsafe fn result_type() -> LogicalType {
    unsafe {
        let mut members = Vec::new();
        let mut names = Vec::new();
        for i in 0..TEXTS {
            members.push(LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR));
            names.push(CString::new(format!("t{i}")).unwrap());
        }
        for i in 0..NUMS {
            members.push(LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE));
            names.push(CString::new(format!("v{i}")).unwrap());
        }
        let mut raw_types: Vec<ffi::duckdb_logical_type> = members.iter().map(|t| t.0).collect();
        let mut raw_names: Vec<*const c_char> = names.iter().map(|s| s.as_ptr()).collect();
        let st = LogicalType(ffi::duckdb_create_struct_type(
            raw_types.as_mut_ptr(),
            raw_names.as_mut_ptr(),
            raw_types.len() as ffi::idx_t,
        ));
        LogicalType(ffi::duckdb_create_list_type(st.0))
    }
}

struct Arg {
    valid: Validity,
    data: *const ffi::duckdb_string_t,
}

impl Arg {
    unsafe fn of(input: ffi::duckdb_data_chunk, i: usize) -> Arg {
        unsafe {
            let v = ffi::duckdb_data_chunk_get_vector(input, i as ffi::idx_t);
            Arg {
                valid: Validity::of(v),
                data: ffi::duckdb_vector_get_data(v) as *const ffi::duckdb_string_t,
            }
        }
    }
    unsafe fn get<'a>(&self, r: usize) -> Option<&'a [u8]> {
        unsafe { self.valid.is_valid(r).then(|| string_at(self.data, r)) }
    }
}

unsafe fn set_validity(v: ffi::duckdb_vector, row: usize, valid: bool) -> Result<()> {
    checked::ensure_validity_writable(v)?;
    unsafe {
        let mask = ffi::duckdb_vector_get_validity(v);
        if valid {
            ffi::duckdb_validity_set_row_valid(mask, row as ffi::idx_t);
        } else {
            ffi::duckdb_validity_set_row_invalid(mask, row as ffi::idx_t);
        }
    }
    Ok(())
}

pub unsafe fn write_table(result: ffi::duckdb_vector, row: usize, table: &Table) -> Result<()> {
    unsafe {
        let start = ffi::duckdb_list_vector_get_size(result) as usize;
        let end = start + table.len();
        checked::list_reserve(result, end)?;
        let child = ffi::duckdb_list_vector_get_child(result);
        let fields: Vec<ffi::duckdb_vector> = (0..TEXTS + NUMS)
            .map(|k| ffi::duckdb_struct_vector_get_child(child, k as ffi::idx_t))
            .collect();
        for (j, r) in table.iter().enumerate() {
            let at = start + j;
            set_validity(child, at, true)?;
            for (k, t) in r.text.iter().enumerate() {
                match t {
                    Some(s) => {
                        checked::assign_string(fields[k], at, s.as_bytes())?;
                        set_validity(fields[k], at, true)?;
                    }
                    None => set_validity(fields[k], at, false)?,
                }
            }
            for (k, x) in r.num.iter().enumerate() {
                let v = fields[TEXTS + k];
                match x {
                    Some(x) => {
                        *(ffi::duckdb_vector_get_data(v) as *mut f64).add(at) = *x;
                        set_validity(v, at, true)?;
                    }
                    None => set_validity(v, at, false)?,
                }
            }
        }
        let entries = ffi::duckdb_vector_get_data(result) as *mut ffi::duckdb_list_entry;
        *entries.add(row) = ffi::duckdb_list_entry {
            offset: start as u64,
            length: table.len() as u64,
        };
        set_validity(result, row, true)?;
        checked::list_set_size(result, end)
    }
}

unsafe fn inference_impl(input: ffi::duckdb_data_chunk, result: ffi::duckdb_vector) -> Result<()> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        let args: Vec<Arg> = (0..5).map(|i| Arg::of(input, i)).collect();
        for r in 0..n {
            let (Some(kind), Some(model)) = (args[0].get(r), args[1].get(r)) else {
                let entries = ffi::duckdb_vector_get_data(result) as *mut ffi::duckdb_list_entry;
                *entries.add(r) = ffi::duckdb_list_entry {
                    offset: ffi::duckdb_list_vector_get_size(result),
                    length: 0,
                };
                set_validity(result, r, false)?;
                continue;
            };
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let kind = String::from_utf8_lossy(kind).into_owned();
            let options = text(args[3].get(r)).unwrap_or_default();
            let contrast = text(args[4].get(r));
            let table = crate::inference::run::run(
                &kind,
                model,
                args[2].get(r),
                &options,
                contrast.as_deref(),
            )?;
            write_table(result, r, &table)?;
        }
        Ok(())
    }
}

/// `lmm_inference_start(...)`: the same arguments, deposited as a job (see `jobs`); its handle.
unsafe fn start_impl(input: ffi::duckdb_data_chunk, result: ffi::duckdb_vector) -> Result<()> {
    unsafe {
        let n = ffi::duckdb_data_chunk_get_size(input) as usize;
        let args: Vec<Arg> = (0..5).map(|i| Arg::of(input, i)).collect();
        for r in 0..n {
            let (Some(kind), Some(model)) = (args[0].get(r), args[1].get(r)) else {
                set_validity(result, r, false)?;
                continue;
            };
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let call = super::jobs::InferenceCall {
                kind: String::from_utf8_lossy(kind).into_owned(),
                model: model.to_vec(),
                other: args[2].get(r).map(<[u8]>::to_vec),
                options: text(args[3].get(r)).unwrap_or_default(),
                contrast: text(args[4].get(r)),
            };
            super::output::write_blob(result, r, &super::jobs::deposit_inference(call))?;
        }
        Ok(())
    }
}

unsafe extern "C" fn start_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    if let Err(e) = guard(|| unsafe { start_impl(input, output) }) {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

unsafe extern "C" fn inference_fn(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    if let Err(e) = guard(|| unsafe { inference_impl(input, output) }) {
        checked::set_error(info, &c_message(&e.to_string()), true);
    }
}

pub unsafe fn register(con: ffi::duckdb_connection) -> Result<()> {
    unsafe {
        let (varchar, blob) = (
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR,
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB,
        );
        let params = [varchar, blob, blob, varchar, varchar];
        super::boxed::register_scalar(con, c"lmm_inference", &params, result_type(), inference_fn)?;
        super::boxed::register_scalar(
            con,
            c"lmm_inference_start",
            &params,
            LogicalType::new(blob),
            start_fn,
        )
    }
}

//! The result type LIST(STRUCT(...)) and writing tidy rows into it.

use std::ffi::{c_char, CString};

use libduckdb_sys as ffi;

use super::checked;
use super::types::LogicalType;
use crate::error::{LmmError, Result};
use crate::tidy::Tidy;

/// Text fields, then numeric fields, in the order of the result STRUCT.
const TEXT_FIELDS: [&str; 4] = ["effect", "group_var", "level", "term"];
const NUM_FIELDS: [&str; 7] = [
    "estimate",
    "std_error",
    "statistic",
    "df",
    "p_value",
    "conf_low",
    "conf_high",
];

/// LIST(STRUCT(effect VARCHAR, group_var VARCHAR, level VARCHAR, term VARCHAR,
/// estimate DOUBLE, std_error DOUBLE, statistic DOUBLE, df DOUBLE, p_value DOUBLE,
/// conf_low DOUBLE, conf_high DOUBLE)).
pub unsafe fn result_type() -> LogicalType {
    unsafe {
        let members: Vec<LogicalType> = TEXT_FIELDS
            .iter()
            .map(|_| LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR))
            .chain(
                NUM_FIELDS
                    .iter()
                    .map(|_| LogicalType::new(ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE)),
            )
            .collect();
        let names: Vec<CString> = TEXT_FIELDS
            .iter()
            .chain(NUM_FIELDS.iter())
            .map(|s| CString::new(*s).unwrap())
            .collect();
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

unsafe fn set_invalid(v: ffi::duckdb_vector, row: usize) -> Result<()> {
    checked::ensure_validity_writable(v)?;
    unsafe {
        let mask = ffi::duckdb_vector_get_validity(v);
        ffi::duckdb_validity_set_row_invalid(mask, row as ffi::idx_t);
    }
    Ok(())
}

unsafe fn set_valid(v: ffi::duckdb_vector, row: usize) {
    unsafe {
        let mask = ffi::duckdb_vector_get_validity(v);
        if !mask.is_null() {
            ffi::duckdb_validity_set_row_valid(mask, row as ffi::idx_t);
        }
    }
}

/// A vector's validity bits, made writable once and then set without a call per row.
struct Mask(*mut u64);

impl Mask {
    unsafe fn of(v: ffi::duckdb_vector) -> Result<Mask> {
        checked::ensure_validity_writable(v)?;
        Ok(Mask(unsafe { ffi::duckdb_vector_get_validity(v) }))
    }
    #[inline]
    unsafe fn set(&self, row: usize, valid: bool) {
        unsafe {
            let word = self.0.add(row / 64);
            let bit = 1u64 << (row % 64);
            if valid {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }
}

/// A NULL result at `row` (a state that saw no rows).
pub unsafe fn write_null(result: ffi::duckdb_vector, row: usize) -> Result<()> {
    unsafe {
        let size = ffi::duckdb_list_vector_get_size(result);
        let entries = ffi::duckdb_vector_get_data(result) as *mut ffi::duckdb_list_entry;
        *entries.add(row) = ffi::duckdb_list_entry {
            offset: size,
            length: 0,
        };
        set_invalid(result, row)
    }
}

/// A NULL at `row` of a flat result vector of any non-list type.
pub unsafe fn write_null_scalar(result: ffi::duckdb_vector, row: usize) -> Result<()> {
    unsafe { set_invalid(result, row) }
}

/// A BLOB (or VARCHAR) value at `row`.
pub unsafe fn write_blob(result: ffi::duckdb_vector, row: usize, bytes: &[u8]) -> Result<()> {
    if bytes.len() > u32::MAX as usize {
        return Err(LmmError::new(format!(
            "the model value would be {} bytes, more than a BLOB can hold (4 GiB)",
            bytes.len()
        )));
    }
    checked::assign_string(result, row, bytes)?;
    unsafe { set_valid(result, row) };
    Ok(())
}

/// Write `rows` as the list at position `row` of `result`.
pub unsafe fn write_rows(result: ffi::duckdb_vector, row: usize, rows: &Tidy) -> Result<()> {
    unsafe {
        let start = ffi::duckdb_list_vector_get_size(result) as usize;
        let end = start + rows.len();
        checked::list_reserve(result, end)?;
        // Reserving may reallocate the child: fetch the child vectors only now.
        let child = ffi::duckdb_list_vector_get_child(result);
        let text: Vec<ffi::duckdb_vector> = (0..TEXT_FIELDS.len())
            .map(|k| ffi::duckdb_struct_vector_get_child(child, k as ffi::idx_t))
            .collect();
        let nums: Vec<ffi::duckdb_vector> = (0..NUM_FIELDS.len())
            .map(|k| {
                ffi::duckdb_struct_vector_get_child(child, (TEXT_FIELDS.len() + k) as ffi::idx_t)
            })
            .collect();
        let num_data: Vec<*mut f64> = nums
            .iter()
            .map(|&v| ffi::duckdb_vector_get_data(v) as *mut f64)
            .collect();
        let child_mask = Mask::of(child)?;
        let text_masks: Vec<Mask> = text.iter().map(|&v| Mask::of(v)).collect::<Result<_>>()?;
        let num_masks: Vec<Mask> = nums.iter().map(|&v| Mask::of(v)).collect::<Result<_>>()?;

        for (j, r) in rows.rows().enumerate() {
            let at = start + j;
            child_mask.set(at, true);
            let texts: [Option<&str>; 4] = [Some(r.effect), r.group_var, r.level, r.term];
            for (k, t) in texts.iter().enumerate() {
                match t {
                    Some(s) => {
                        checked::assign_string(text[k], at, s.as_bytes())?;
                        text_masks[k].set(at, true);
                    }
                    None => text_masks[k].set(at, false),
                }
            }
            for (k, x) in r.values.iter().enumerate() {
                match x {
                    Some(x) => {
                        *num_data[k].add(at) = *x;
                        num_masks[k].set(at, true);
                    }
                    None => num_masks[k].set(at, false),
                }
            }
        }
        let entries = ffi::duckdb_vector_get_data(result) as *mut ffi::duckdb_list_entry;
        *entries.add(row) = ffi::duckdb_list_entry {
            offset: start as u64,
            length: rows.len() as u64,
        };
        set_valid(result, row);
        checked::list_set_size(result, end)
    }
}

//! Logical types: an owning handle and readable type names.

use std::ffi::{c_char, c_void, CStr};

use libduckdb_sys as ffi;

use super::checked::{self, ChildType};
use crate::error::Result;

/// An owned `duckdb_logical_type`, destroyed on drop.
pub struct LogicalType(pub ffi::duckdb_logical_type);

impl LogicalType {
    /// The type of a vector (owned copy).
    pub unsafe fn of_vector(v: ffi::duckdb_vector) -> Result<LogicalType> {
        checked::vector_type(v).map(LogicalType)
    }

    pub unsafe fn new(id: ffi::DUCKDB_TYPE) -> LogicalType {
        LogicalType(unsafe { ffi::duckdb_create_logical_type(id) })
    }

    pub fn id(&self) -> ffi::DUCKDB_TYPE {
        unsafe { ffi::duckdb_get_type_id(self.0) }
    }

    pub fn struct_child_count(&self) -> usize {
        unsafe { ffi::duckdb_struct_type_child_count(self.0) as usize }
    }

    pub fn struct_child_name(&self, i: usize) -> Result<String> {
        Ok(unsafe { take_c_string(checked::struct_child_name(self.0, i)?) })
    }

    pub fn struct_child_type(&self, i: usize) -> Result<LogicalType> {
        checked::struct_child_type(self.0, i).map(LogicalType)
    }

    pub fn map_key_type(&self) -> Result<LogicalType> {
        checked::child_type(self.0, ChildType::MapKey).map(LogicalType)
    }

    pub fn map_value_type(&self) -> Result<LogicalType> {
        checked::child_type(self.0, ChildType::MapValue).map(LogicalType)
    }

    pub fn decimal_width(&self) -> u8 {
        unsafe { ffi::duckdb_decimal_width(self.0) }
    }

    pub fn decimal_scale(&self) -> u8 {
        unsafe { ffi::duckdb_decimal_scale(self.0) }
    }

    pub fn decimal_internal(&self) -> ffi::DUCKDB_TYPE {
        unsafe { ffi::duckdb_decimal_internal_type(self.0) }
    }

    pub fn enum_internal(&self) -> ffi::DUCKDB_TYPE {
        unsafe { ffi::duckdb_enum_internal_type(self.0) }
    }

    pub fn enum_size(&self) -> u32 {
        unsafe { ffi::duckdb_enum_dictionary_size(self.0) }
    }

    /// The label of enum entry `i`, as bytes.
    pub fn enum_label(&self, i: u32) -> Result<Vec<u8>> {
        Ok(unsafe { take_c_bytes(checked::enum_label(self.0, i as usize)?) })
    }

    /// A readable SQL name: `DOUBLE`, `DECIMAL(18,3)`, `VARCHAR[]`, `STRUCT(...)`.
    pub fn name(&self) -> String {
        let id = self.id();
        match id {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => {
                format!("DECIMAL({},{})", self.decimal_width(), self.decimal_scale())
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => {
                match checked::child_type(self.0, ChildType::List) {
                    Ok(child) => format!("{}[]", LogicalType(child).name()),
                    Err(_) => "LIST".to_string(),
                }
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_ARRAY => {
                let size = unsafe { ffi::duckdb_array_type_array_size(self.0) };
                match checked::child_type(self.0, ChildType::Array) {
                    Ok(child) => format!("{}[{}]", LogicalType(child).name(), size),
                    Err(_) => format!("ARRAY[{size}]"),
                }
            }
            _ => type_id_name(id).to_string(),
        }
    }
}

impl Drop for LogicalType {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { ffi::duckdb_destroy_logical_type(&mut self.0) };
        }
    }
}

/// Copy a C string allocated by DuckDB and free it.
pub unsafe fn take_c_string(p: *mut c_char) -> String {
    String::from_utf8_lossy(&unsafe { take_c_bytes(p) }).into_owned()
}

/// Copy the bytes of a C string allocated by DuckDB and free it.
pub unsafe fn take_c_bytes(p: *mut c_char) -> Vec<u8> {
    if p.is_null() {
        return Vec::new();
    }
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes().to_vec();
    unsafe { ffi::duckdb_free(p as *mut c_void) };
    bytes
}

/// SQL name of a type id (without parameters).
pub fn type_id_name(id: ffi::DUCKDB_TYPE) -> &'static str {
    match id {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => "BOOLEAN",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => "TINYINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => "SMALLINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => "INTEGER",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => "BIGINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => "UTINYINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => "USMALLINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => "UINTEGER",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => "UBIGINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => "FLOAT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => "DOUBLE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => "TIMESTAMP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => "DATE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME => "TIME",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL => "INTERVAL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => "HUGEINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT => "UHUGEINT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => "VARCHAR",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => "BLOB",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => "DECIMAL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S => "TIMESTAMP_S",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS => "TIMESTAMP_MS",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => "TIMESTAMP_NS",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM => "ENUM",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => "LIST",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => "STRUCT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_MAP => "MAP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ARRAY => "ARRAY",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID => "UUID",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UNION => "UNION",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIT => "BIT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_TZ => "TIME WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ => "TIMESTAMP WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_NS => "TIME_NS",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGNUM => "BIGNUM",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => "NULL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_GEOMETRY => "GEOMETRY",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARIANT => "VARIANT",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ_NS => "TIMESTAMP_NS WITH TIME ZONE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ANY => "ANY",
        _ => "an unsupported type",
    }
}

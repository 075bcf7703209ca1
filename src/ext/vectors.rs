//! Reading DuckDB input vectors: the row STRUCT (converted into the core's
//! `Column`s), the formula string and the options STRUCT / MAP.
//!
//! Vectors handed to an aggregate's `update` by the C API are flat, so row `i`
//! of a vector is element `i` of its data array.

use std::slice;

use libduckdb_sys as ffi;

use super::hash::IntMap;
use super::types::LogicalType;
use crate::error::{LmmError, Result};
use crate::input::{Chunk, Column, ColumnData};

// ---------------------------------------------------------------------------
// Low-level access
// ---------------------------------------------------------------------------

/// A vector's validity mask (`NULL` pointer = every row valid).
#[derive(Clone, Copy)]
pub struct Validity(*const u64);

impl Validity {
    pub unsafe fn of(v: ffi::duckdb_vector) -> Validity {
        Validity(unsafe { ffi::duckdb_vector_get_validity(v) })
    }

    pub fn all_valid(&self) -> bool {
        self.0.is_null()
    }

    #[inline]
    pub fn is_valid(&self, i: usize) -> bool {
        self.0.is_null() || unsafe { (*self.0.add(i / 64) >> (i % 64)) & 1 == 1 }
    }
}

#[inline]
unsafe fn data_ptr<T>(v: ffi::duckdb_vector) -> *const T {
    unsafe { ffi::duckdb_vector_get_data(v) as *const T }
}

/// The bytes of the VARCHAR at `i` (inlined when at most 12 bytes long,
/// otherwise behind a pointer). Valid while the vector is.
#[inline]
pub unsafe fn string_at<'a>(data: *const ffi::duckdb_string_t, i: usize) -> &'a [u8] {
    unsafe {
        let s = &*data.add(i);
        let len = s.value.inlined.length as usize;
        if len <= 12 {
            slice::from_raw_parts(s.value.inlined.inlined.as_ptr() as *const u8, len)
        } else {
            slice::from_raw_parts(s.value.pointer.ptr as *const u8, len)
        }
    }
}

#[inline]
fn hugeint_to_i128(h: ffi::duckdb_hugeint) -> i128 {
    ((h.upper as i128) << 64) | (h.lower as i128)
}

#[inline]
fn uhugeint_to_u128(h: ffi::duckdb_uhugeint) -> u128 {
    ((h.upper as u128) << 64) | (h.lower as u128)
}

unsafe fn map_rows<T: Copy, U>(v: ffi::duckdb_vector, n: usize, f: impl Fn(T) -> U) -> Vec<U> {
    let data = unsafe { slice::from_raw_parts(data_ptr::<T>(v), n) };
    data.iter().map(|&x| f(x)).collect()
}

/// Convert an integer column, checking (on valid rows only) that values fit in i64.
unsafe fn wide_ints<T: Copy>(
    v: ffi::duckdb_vector,
    n: usize,
    valid: &[bool],
    name: &str,
    type_name: &str,
    f: impl Fn(T) -> Option<i64>,
) -> Result<Vec<i64>> {
    let data = unsafe { slice::from_raw_parts(data_ptr::<T>(v), n) };
    let mut out = Vec::with_capacity(n);
    for (i, &x) in data.iter().enumerate() {
        match f(x) {
            Some(y) => out.push(y),
            None if !valid[i] => out.push(0),
            None => return Err(LmmError::new(format!(
                "column '{name}' ({type_name}) has a value that does not fit in a 64-bit integer"
            ))),
        }
    }
    Ok(out)
}

/// DECIMAL as f64 (internal integer divided by 10^scale).
unsafe fn decimal_rows(v: ffi::duckdb_vector, ty: &LogicalType, n: usize) -> Vec<f64> {
    let div = 10f64.powi(ty.decimal_scale() as i32);
    unsafe {
        match ty.decimal_internal() {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => map_rows(v, n, |x: i16| x as f64 / div),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => map_rows(v, n, |x: i32| x as f64 / div),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => map_rows(v, n, |x: i64| x as f64 / div),
            _ => map_rows(v, n, |x: ffi::duckdb_hugeint| {
                hugeint_to_i128(x) as f64 / div
            }),
        }
    }
}

/// ENUM indices as u32.
unsafe fn enum_indices(v: ffi::duckdb_vector, ty: &LogicalType, n: usize) -> Vec<u32> {
    unsafe {
        match ty.enum_internal() {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => map_rows(v, n, |x: u8| x as u32),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => map_rows(v, n, |x: u16| x as u32),
            _ => map_rows(v, n, |x: u32| x),
        }
    }
}

// ---------------------------------------------------------------------------
// Enum labels, cached per aggregate state
// ---------------------------------------------------------------------------

/// Labels of ENUM columns fetched so far, one entry per required column.
/// Fetching a label is an FFI call with an allocation, so labels are kept for
/// the life of the aggregate state instead of being fetched for every chunk.
#[derive(Default)]
pub struct EnumCache {
    columns: Vec<Option<EnumLabels>>,
}

struct EnumLabels {
    dict_size: u32,
    /// Enum index -> slot in `labels`.
    slots: SlotMap,
    labels: Vec<Box<[u8]>>,
}

enum SlotMap {
    /// Small dictionaries: direct table (`u32::MAX` = not fetched yet).
    Dense(Vec<u32>),
    Sparse(IntMap<u32, u32>),
}

const DENSE_LIMIT: u32 = 4096;
const NO_SLOT: u32 = u32::MAX;

impl EnumLabels {
    fn new(dict_size: u32) -> EnumLabels {
        let slots = if dict_size <= DENSE_LIMIT {
            SlotMap::Dense(vec![NO_SLOT; dict_size as usize])
        } else {
            SlotMap::Sparse(IntMap::default())
        };
        EnumLabels {
            dict_size,
            slots,
            labels: Vec::new(),
        }
    }

    #[inline]
    fn slot(&mut self, ty: &LogicalType, idx: u32) -> Result<u32> {
        let labels = &mut self.labels;
        let mut fetch = || -> Result<u32> {
            labels.push(ty.enum_label(idx)?.into_boxed_slice());
            Ok((labels.len() - 1) as u32)
        };
        Ok(match &mut self.slots {
            SlotMap::Dense(d) => match d.get(idx as usize) {
                Some(&s) if s != NO_SLOT => s,
                Some(_) => {
                    let s = fetch()?;
                    d[idx as usize] = s;
                    s
                }
                None => NO_SLOT,
            },
            SlotMap::Sparse(m) => {
                if idx >= self.dict_size {
                    return Ok(NO_SLOT);
                }
                match m.get(&idx) {
                    Some(&s) => s,
                    None => {
                        let s = fetch()?;
                        m.insert(idx, s);
                        s
                    }
                }
            }
        })
    }
}

impl EnumCache {
    fn column(&mut self, pos: usize, dict_size: u32) -> &mut EnumLabels {
        if self.columns.len() <= pos {
            self.columns.resize_with(pos + 1, || None);
        }
        let entry = &mut self.columns[pos];
        if entry.as_ref().map(|e| e.dict_size) != Some(dict_size) {
            *entry = Some(EnumLabels::new(dict_size));
        }
        entry.as_mut().unwrap()
    }

    fn label(&self, pos: usize, slot: u32) -> &[u8] {
        match self.columns.get(pos).and_then(|c| c.as_ref()) {
            Some(c) if (slot as usize) < c.labels.len() => &c.labels[slot as usize],
            _ => b"",
        }
    }
}

// ---------------------------------------------------------------------------
// The row STRUCT
// ---------------------------------------------------------------------------

/// The first argument: one STRUCT per row whose children are the table's columns.
pub struct RowStruct {
    vec: ffi::duckdb_vector,
    ty: LogicalType,
    n: usize,
    valid: Validity,
}

enum Data<'v> {
    Ready(ColumnData<'v>),
    /// Enum slots into the state's `EnumCache` (column position `pos`).
    Enum {
        pos: usize,
        slots: Vec<u32>,
    },
    /// Grouping keys formatted as text (`keys`), borrowed by the chunk.
    Formatted(Vec<Vec<u8>>),
}

/// Columns read from a chunk, before enum labels are attached.
pub struct Prepared<'v> {
    columns: Vec<(String, String, Data<'v>, Vec<bool>)>,
    len: usize,
}

impl RowStruct {
    /// `what` names the argument in the error for a value that is not a row,
    /// e.g. "the first argument of lmm_fit_agg must be a whole row, as in lmm_fit_agg(t, 'y ~ x') FROM tbl t".
    pub unsafe fn new(vec: ffi::duckdb_vector, n: usize, what: &str) -> Result<RowStruct> {
        let ty = unsafe { LogicalType::of_vector(vec)? };
        if ty.id() != ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT {
            return Err(LmmError::new(format!(
                "{what}; got a value of type {}",
                ty.name()
            )));
        }
        let valid = unsafe { Validity::of(vec) };
        Ok(RowStruct { vec, ty, n, valid })
    }

    /// Number of columns in the row.
    pub fn width(&self) -> usize {
        self.ty.struct_child_count()
    }

    /// Index of each required column among the row's children: exact name
    /// first, then case-insensitive.
    pub fn resolve(&self, required: &[String]) -> Result<Vec<usize>> {
        let names: Vec<String> = (0..self.width())
            .map(|i| self.ty.struct_child_name(i))
            .collect::<Result<_>>()?;
        required
            .iter()
            .map(|name| {
                if let Some(i) = names.iter().position(|c| c == name) {
                    return Ok(i);
                }
                let lower = name.to_lowercase();
                if let Some(i) = names.iter().position(|c| c.to_lowercase() == lower) {
                    return Ok(i);
                }
                Err(LmmError::new(format!(
                    "column '{name}' not found; available columns: {}",
                    names.join(", ")
                )))
            })
            .collect()
    }

    /// Read the columns named in `required`, found at child positions `index`
    /// (phase 1). ENUM labels missing from `cache` are fetched into it.
    pub unsafe fn prepare<'v>(
        &self,
        required: &[String],
        index: &[usize],
        cache: &mut EnumCache,
    ) -> Result<Prepared<'v>> {
        let n = self.n;
        let mut columns = Vec::with_capacity(required.len());
        for (pos, (name, &idx)) in required.iter().zip(index).enumerate() {
            let child = unsafe { ffi::duckdb_struct_vector_get_child(self.vec, idx as ffi::idx_t) };
            let cty = self.ty.struct_child_type(idx)?;
            let type_name = cty.name();
            let cval = unsafe { Validity::of(child) };
            let valid: Vec<bool> = if self.valid.all_valid() && cval.all_valid() {
                vec![true; n]
            } else {
                (0..n)
                    .map(|i| self.valid.is_valid(i) && cval.is_valid(i))
                    .collect()
            };
            let data =
                unsafe { read_column(child, &cty, n, &valid, name, &type_name, pos, cache)? };
            columns.push((name.clone(), type_name, data, valid));
        }
        Ok(Prepared { columns, len: n })
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn read_column<'v>(
    v: ffi::duckdb_vector,
    ty: &LogicalType,
    n: usize,
    valid: &[bool],
    name: &str,
    type_name: &str,
    pos: usize,
    cache: &mut EnumCache,
) -> Result<Data<'v>> {
    use ColumnData::*;
    if let Some(keys) = unsafe { key_column(v, ty.id(), n, valid) } {
        return Ok(keys);
    }
    let d = unsafe {
        match ty.id() {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => {
                Float(slice::from_raw_parts(data_ptr::<f64>(v), n).to_vec())
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => Float(map_rows(v, n, |x: f32| x as f64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => Float(decimal_rows(v, ty, n)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => Int(map_rows(v, n, |x: i8| x as i64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => Int(map_rows(v, n, |x: i16| x as i64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => Int(map_rows(v, n, |x: i32| x as i64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => {
                Int(slice::from_raw_parts(data_ptr::<i64>(v), n).to_vec())
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => Int(map_rows(v, n, |x: u8| x as i64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => Int(map_rows(v, n, |x: u16| x as i64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => Int(map_rows(v, n, |x: u32| x as i64)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => {
                Int(wide_ints(v, n, valid, name, type_name, |x: u64| {
                    i64::try_from(x).ok()
                })?)
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => {
                Int(wide_ints(v, n, valid, name, type_name, |x| {
                    i64::try_from(hugeint_to_i128(x)).ok()
                })?)
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT => {
                Int(wide_ints(v, n, valid, name, type_name, |x| {
                    i64::try_from(uhugeint_to_u128(x)).ok()
                })?)
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => Bool(map_rows(v, n, |x: u8| x != 0)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => {
                let data = data_ptr::<ffi::duckdb_string_t>(v);
                // The slot of a NULL string may be uninitialised: do not follow its pointer.
                Text(
                    (0..n)
                        .map(|i| {
                            if valid[i] {
                                string_at(data, i)
                            } else {
                                &b""[..]
                            }
                        })
                        .collect(),
                )
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM => {
                let idx = enum_indices(v, ty, n);
                let labels = cache.column(pos, ty.enum_size());
                let mut slots = Vec::with_capacity(n);
                let (mut last_idx, mut last_slot) = (NO_SLOT, NO_SLOT);
                for (i, &k) in idx.iter().enumerate() {
                    if !valid[i] {
                        slots.push(NO_SLOT);
                        continue;
                    }
                    if k != last_idx {
                        last_idx = k;
                        last_slot = labels.slot(ty, k)?;
                    }
                    slots.push(last_slot);
                }
                return Ok(Data::Enum { pos, slots });
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => Float(vec![f64::NAN; n]),
            _ => {
                return Err(LmmError::new(format!(
                    "column '{name}' has type {type_name}, which lmm cannot use"
                )))
            }
        }
    };
    Ok(Data::Ready(d))
}

impl<'v> Prepared<'v> {
    /// Attach enum labels (phase 2) and build the core's chunk, which borrows
    /// the labels from `cache` and formatted keys from `self`.
    pub fn chunk<'c>(&'c mut self, cache: &'c EnumCache) -> Chunk<'c>
    where
        'v: 'c,
    {
        let len = self.len;
        let columns = self
            .columns
            .iter_mut()
            .map(|(name, type_name, data, valid)| {
                let mut valid = std::mem::take(valid);
                let data = match data {
                    Data::Ready(d) => std::mem::replace(d, ColumnData::Bool(Vec::new())),
                    Data::Formatted(keys) => {
                        ColumnData::Key(keys.iter().map(|k| k.as_slice()).collect())
                    }
                    Data::Enum { pos, slots } => ColumnData::Text(
                        slots
                            .iter()
                            .enumerate()
                            .map(|(i, &s)| {
                                if s == NO_SLOT {
                                    valid[i] = false;
                                    &b""[..]
                                } else {
                                    cache.label(*pos, s)
                                }
                            })
                            .collect(),
                    ),
                };
                Column {
                    name: std::mem::take(name),
                    type_name: std::mem::take(type_name),
                    data,
                    valid,
                }
            })
            .collect();
        Chunk { columns, len }
    }
}

/// Rows of a column of a key-only type, formatted by `f` (valid rows only).
unsafe fn formatted<T: Copy>(
    v: ffi::duckdb_vector,
    n: usize,
    valid: &[bool],
    f: impl Fn(T) -> String,
) -> Data<'static> {
    let data = unsafe { slice::from_raw_parts(data_ptr::<T>(v), n) };
    Data::Formatted(
        data.iter()
            .zip(valid)
            .map(|(&x, &ok)| if ok { f(x).into_bytes() } else { Vec::new() })
            .collect(),
    )
}

/// The key-only types (see `keys`): their rows as text, or `None` for another type.
unsafe fn key_column<'v>(
    v: ffi::duckdb_vector,
    id: ffi::DUCKDB_TYPE,
    n: usize,
    valid: &[bool],
) -> Option<Data<'v>> {
    use super::keys;
    unsafe {
        Some(match id {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => {
                formatted(v, n, valid, |d: i32| keys::date(d as i64))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME => formatted(v, n, valid, keys::time),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_NS => {
                formatted(v, n, valid, |t: i64| format!("{}ns", t))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => formatted(v, n, valid, keys::timestamp),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ => {
                formatted(v, n, valid, |t: i64| keys::timestamp(t) + "+00")
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S => formatted(v, n, valid, |t: i64| {
                keys::timestamp(t.saturating_mul(1_000_000))
            }),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS => formatted(v, n, valid, |t: i64| {
                keys::timestamp(t.saturating_mul(1000))
            }),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => formatted(v, n, valid, |t: i64| {
                let frac = t.rem_euclid(1000);
                let base = keys::timestamp(t.div_euclid(1000));
                if frac == 0 {
                    base
                } else {
                    format!("{base}+{frac}ns")
                }
            }),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID => {
                formatted(v, n, valid, |h: ffi::duckdb_hugeint| {
                    keys::uuid(h.upper, h.lower)
                })
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL => {
                formatted(v, n, valid, |i: ffi::duckdb_interval| {
                    keys::interval(i.months, i.days, i.micros)
                })
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => {
                let data = data_ptr::<ffi::duckdb_string_t>(v);
                Data::Ready(ColumnData::Key(
                    (0..n)
                        .map(|i| {
                            if valid[i] {
                                string_at(data, i)
                            } else {
                                &b""[..]
                            }
                        })
                        .collect(),
                ))
            }
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Single values: formula and options
// ---------------------------------------------------------------------------

/// The value at row `i` as text, for options: VARCHAR as is, BOOLEAN as
/// true/false, numbers formatted. `None` for NULL.
pub unsafe fn scalar_text(
    v: ffi::duckdb_vector,
    ty: &LogicalType,
    i: usize,
    what: &str,
) -> Result<Option<String>> {
    if ty.id() == ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL || !unsafe { Validity::of(v) }.is_valid(i) {
        return Ok(None);
    }
    unsafe {
        let s = match ty.id() {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => {
                String::from_utf8_lossy(string_at(data_ptr::<ffi::duckdb_string_t>(v), i))
                    .into_owned()
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => if *data_ptr::<u8>(v).add(i) != 0 {
                "true"
            } else {
                "false"
            }
            .to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => (*data_ptr::<i8>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => (*data_ptr::<i16>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => (*data_ptr::<i32>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => (*data_ptr::<i64>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => (*data_ptr::<u8>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => (*data_ptr::<u16>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => (*data_ptr::<u32>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => (*data_ptr::<u64>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => {
                hugeint_to_i128(*data_ptr::<ffi::duckdb_hugeint>(v).add(i)).to_string()
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT => {
                uhugeint_to_u128(*data_ptr::<ffi::duckdb_uhugeint>(v).add(i)).to_string()
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => (*data_ptr::<f32>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => (*data_ptr::<f64>(v).add(i)).to_string(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => {
                // Read just this row through the bulk reader.
                let all = decimal_rows(v, ty, i + 1);
                all[i].to_string()
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM => {
                let idx = enum_indices(v, ty, i + 1)[i];
                String::from_utf8_lossy(&ty.enum_label(idx)?).into_owned()
            }
            _ => {
                return Err(LmmError::new(format!(
                    "{what} has type {}; use a string, number or boolean",
                    ty.name()
                )))
            }
        };
        Ok(Some(s))
    }
}

/// The options argument at row `i`: a STRUCT (`{'method': 'ML'}`) or a
/// MAP (`MAP {'method': 'ML'}`), as (name, value-as-text) pairs.
pub unsafe fn option_pairs(
    v: ffi::duckdb_vector,
    i: usize,
) -> Result<Vec<(String, Option<String>)>> {
    let ty = unsafe { LogicalType::of_vector(v)? };
    let mut pairs = Vec::new();
    match ty.id() {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => {}
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => {
            let row_valid = unsafe { Validity::of(v) }.is_valid(i);
            for k in 0..ty.struct_child_count() {
                let name = ty.struct_child_name(k)?;
                let value = if row_valid {
                    let child = unsafe { ffi::duckdb_struct_vector_get_child(v, k as ffi::idx_t) };
                    let cty = ty.struct_child_type(k)?;
                    unsafe { scalar_text(child, &cty, i, &format!("option '{name}'"))? }
                } else {
                    None
                };
                pairs.push((name, value));
            }
        }
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_MAP => {
            if !unsafe { Validity::of(v) }.is_valid(i) {
                return Ok(pairs);
            }
            let entry = unsafe { *data_ptr::<ffi::duckdb_list_entry>(v).add(i) };
            let entries = unsafe { ffi::duckdb_list_vector_get_child(v) };
            let keys = unsafe { ffi::duckdb_struct_vector_get_child(entries, 0) };
            let values = unsafe { ffi::duckdb_struct_vector_get_child(entries, 1) };
            let kty = ty.map_key_type()?;
            let vty = ty.map_value_type()?;
            for j in entry.offset as usize..(entry.offset + entry.length) as usize {
                let name = unsafe { scalar_text(keys, &kty, j, "an option name")? }
                    .ok_or_else(|| LmmError::new("an option name is NULL"))?;
                let value = unsafe { scalar_text(values, &vty, j, &format!("option '{name}'"))? };
                pairs.push((name, value));
            }
        }
        _ => {
            return Err(LmmError::new(format!(
                "the options argument must be a STRUCT such as {{'method': 'ML', 'ranef': false}} \
                 or a MAP; got {}",
                ty.name()
            )))
        }
    }
    Ok(pairs)
}

/// The first of `rows` whose options differ from those of `rows[0]`, if any.
///
/// Options normally come from a constant (`{'method': 'ML'}`), and are read
/// from row 0 only; this check keeps a per-row options column from being
/// silently reduced to its first row. Struct fields of fixed width and
/// VARCHAR fields are compared in place; anything else (a MAP) row by row.
pub unsafe fn first_differing_options_row(
    v: ffi::duckdb_vector,
    rows: &[usize],
) -> Result<Option<usize>> {
    let Some((&r0, rest)) = rows.split_first() else {
        return Ok(None);
    };
    let ty = unsafe { LogicalType::of_vector(v)? };
    match ty.id() {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => Ok(None),
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => {
            let row_valid = unsafe { Validity::of(v) };
            let mut fields = Vec::new();
            for k in 0..ty.struct_child_count() {
                let child = unsafe { ffi::duckdb_struct_vector_get_child(v, k as ffi::idx_t) };
                fields.push(unsafe { Field::new(child, ty.struct_child_type(k)?) });
            }
            for &i in rest {
                if row_valid.is_valid(i) != row_valid.is_valid(r0) {
                    return Ok(Some(i));
                }
                for f in &fields {
                    if !unsafe { f.same(r0, i)? } {
                        return Ok(Some(i));
                    }
                }
            }
            Ok(None)
        }
        _ => {
            let first = unsafe { option_pairs(v, r0)? };
            for &i in rest {
                if unsafe { option_pairs(v, i)? } != first {
                    return Ok(Some(i));
                }
            }
            Ok(None)
        }
    }
}

/// One field of the options STRUCT, read once for comparing rows.
struct Field {
    v: ffi::duckdb_vector,
    ty: LogicalType,
    valid: Validity,
    data: *const u8,
    /// Bytes per value for fixed-width types; 0 for VARCHAR; `None` otherwise.
    width: Option<usize>,
}

impl Field {
    unsafe fn new(v: ffi::duckdb_vector, ty: LogicalType) -> Field {
        let width = match ty.id() {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => Some(0),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => Some(1),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => {
                Some(2)
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => Some(4),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT
            | ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => Some(8),
            _ => None,
        };
        let null = ty.id() == ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL;
        let (valid, data) = unsafe {
            (
                Validity::of(v),
                if null {
                    std::ptr::null()
                } else {
                    data_ptr::<u8>(v)
                },
            )
        };
        Field {
            v,
            ty,
            valid,
            data,
            width,
        }
    }

    /// Whether rows `a` and `b` hold the same value (or are both NULL).
    unsafe fn same(&self, a: usize, b: usize) -> Result<bool> {
        if self.valid.is_valid(a) != self.valid.is_valid(b) {
            return Ok(false);
        }
        if !self.valid.is_valid(a) || self.data.is_null() {
            return Ok(true);
        }
        unsafe {
            match self.width {
                Some(0) => {
                    let s = self.data as *const ffi::duckdb_string_t;
                    Ok(string_at(s, a) == string_at(s, b))
                }
                Some(w) => Ok(slice::from_raw_parts(self.data.add(a * w), w)
                    == slice::from_raw_parts(self.data.add(b * w), w)),
                None => Ok(scalar_text(self.v, &self.ty, a, "an option")?
                    == scalar_text(self.v, &self.ty, b, "an option")?),
            }
        }
    }
}

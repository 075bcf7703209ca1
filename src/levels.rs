//! Levels of categorical variables and grouping factors.
//!
//! A level is stored as an encoded key (type tag + bytes) so that rows can be
//! looked up without allocating; keys are decoded only to sort levels (numbers
//! numerically, strings bytewise, as lme4's fixtures do) and to label them.

use rustc_hash::FxHashMap;
use std::cmp::Ordering;

use crate::input::{Column, ColumnData};

pub const T_INT: u8 = 1;
pub const T_FLOAT: u8 = 2;
pub const T_TEXT: u8 = 3;
pub const T_BOOL: u8 = 4;

/// The tag `encode` writes for a column (its values' kind).
pub fn column_tag(col: &Column) -> u8 {
    match &col.data {
        ColumnData::Int(_) => T_INT,
        ColumnData::Float(_) => T_FLOAT,
        ColumnData::Text(_) | ColumnData::Key(_) => T_TEXT,
        ColumnData::Bool(_) => T_BOOL,
    }
}

/// A readable name for a tag, for error messages.
pub fn tag_name(tag: u8) -> &'static str {
    match tag {
        T_INT => "an integer type",
        T_FLOAT => "a floating-point type",
        T_TEXT => "a text type (VARCHAR or ENUM)",
        T_BOOL => "BOOLEAN",
        _ => "an unknown type",
    }
}

/// The tags of the parts of a key, in order; `None` if the key is malformed.
pub fn part_tags(mut key: &[u8]) -> Option<Vec<u8>> {
    let mut tags = Vec::new();
    while let Some((&tag, rest)) = key.split_first() {
        let len = match tag {
            T_INT | T_FLOAT => 8,
            T_TEXT => 4 + u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize,
            T_BOOL => 1,
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        tags.push(tag);
        key = &rest[len..];
    }
    Some(tags)
}

/// Append the key of `col[row]` to `buf`.
#[inline]
pub fn encode(col: &Column, row: usize, buf: &mut Vec<u8>) {
    match &col.data {
        ColumnData::Int(v) => {
            buf.push(T_INT);
            buf.extend_from_slice(&v[row].to_le_bytes());
        }
        ColumnData::Float(v) => {
            buf.push(T_FLOAT);
            // +0.0 and -0.0 are one level.
            let x = if v[row] == 0.0 { 0.0 } else { v[row] };
            buf.extend_from_slice(&x.to_le_bytes());
        }
        ColumnData::Text(v) | ColumnData::Key(v) => {
            buf.push(T_TEXT);
            buf.extend_from_slice(&(v[row].len() as u32).to_le_bytes());
            buf.extend_from_slice(v[row]);
        }
        ColumnData::Bool(v) => {
            buf.push(T_BOOL);
            buf.push(v[row] as u8);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LevelPart {
    Int(i64),
    Float(f64),
    Text(Vec<u8>),
    Bool(bool),
}

impl LevelPart {
    fn cmp(&self, other: &LevelPart) -> Ordering {
        use LevelPart::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Text(a), Text(b)) => a.cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            _ => format!("{self:?}").cmp(&format!("{other:?}")),
        }
    }

    /// The level's label as R prints it.
    pub fn label(&self) -> String {
        match self {
            LevelPart::Int(v) => v.to_string(),
            LevelPart::Float(v) => format!("{v}"),
            LevelPart::Text(b) => String::from_utf8_lossy(b).into_owned(),
            LevelPart::Bool(b) => {
                if *b {
                    "TRUE".into()
                } else {
                    "FALSE".into()
                }
            }
        }
    }
}

pub fn decode(mut key: &[u8]) -> Vec<LevelPart> {
    let mut parts = Vec::new();
    while let Some((&tag, rest)) = key.split_first() {
        match tag {
            T_INT => {
                parts.push(LevelPart::Int(i64::from_le_bytes(
                    rest[..8].try_into().unwrap(),
                )));
                key = &rest[8..];
            }
            T_FLOAT => {
                parts.push(LevelPart::Float(f64::from_le_bytes(
                    rest[..8].try_into().unwrap(),
                )));
                key = &rest[8..];
            }
            T_TEXT => {
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                parts.push(LevelPart::Text(rest[4..4 + len].to_vec()));
                key = &rest[4 + len..];
            }
            T_BOOL => {
                parts.push(LevelPart::Bool(rest[0] != 0));
                key = &rest[1..];
            }
            _ => unreachable!("corrupt level key"),
        }
    }
    parts
}

/// Compare decoded keys lexicographically (first part slowest).
fn compare_parts(da: &[LevelPart], db: &[LevelPart]) -> Ordering {
    for (x, y) in da.iter().zip(db.iter()) {
        let c = x.cmp(y);
        if c != Ordering::Equal {
            return c;
        }
    }
    da.len().cmp(&db.len())
}

pub fn label(key: &[u8]) -> String {
    if key.len() == 9 && key[0] == T_INT {
        return i64::from_le_bytes(key[1..].try_into().unwrap()).to_string();
    }
    decode(key)
        .iter()
        .map(LevelPart::label)
        .collect::<Vec<_>>()
        .join(":")
}

/// A dictionary of levels in order of first appearance.
///
/// Integer keys (the common grouping column) live in their own map with the
/// value inline: one probe, no key bytes to chase and compare.
#[derive(Debug, Clone, Default)]
pub struct Levels {
    map: FxHashMap<Box<[u8]>, u32>,
    ints: FxHashMap<i64, u32>,
    /// Direct table for small non-negative integer keys (ids 0..G are common):
    /// index = key, u32::MAX = absent; kept within a few times the number of levels.
    dense: Vec<u32>,
    pub keys: Vec<Box<[u8]>>,
}

impl Levels {
    /// Hint the CPU to fetch the direct-table slot of key v.
    #[inline]
    pub fn prefetch_int(&self, v: i64) {
        #[cfg(target_arch = "x86_64")]
        if v >= 0 && (v as u64) < self.dense.len() as u64 {
            // SAFETY: a prefetch of an in-bounds address; it never faults.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(
                    self.dense.as_ptr().add(v as usize) as *const i8,
                    _MM_HINT_T0,
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = v;
    }

    #[inline]
    pub fn id_int(&mut self, v: i64) -> u32 {
        if v >= 0 && (v as u64) < self.dense.len() as u64 {
            let i = self.dense[v as usize];
            if i != u32::MAX {
                return i;
            }
        }
        // Keys stored before the dense table reached them live in the map.
        if let Some(&i) = self.ints.get(&v) {
            return i;
        }
        let i = self.keys.len() as u32;
        let mut key = Vec::with_capacity(9);
        key.push(T_INT);
        key.extend_from_slice(&v.to_le_bytes());
        self.keys.push(key.into());
        let limit = 4 * self.keys.len() + 4096;
        if v >= 0 && (v as u64) < limit as u64 {
            if (v as usize) >= self.dense.len() {
                let grow = (v as usize + 1).max(2 * self.dense.len()).min(limit);
                self.dense.resize(grow, u32::MAX);
            }
            self.dense[v as usize] = i;
        } else {
            self.ints.insert(v, i);
        }
        i
    }

    #[inline]
    pub fn id(&mut self, key: &[u8]) -> u32 {
        if key.len() == 9 && key[0] == T_INT {
            return self.id_int(i64::from_le_bytes(key[1..].try_into().unwrap()));
        }
        if let Some(&i) = self.map.get(key) {
            return i;
        }
        let i = self.keys.len() as u32;
        let boxed: Box<[u8]> = key.into();
        self.keys.push(boxed.clone());
        self.map.insert(boxed, i);
        i
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The id of an integer key, if present (never inserts).
    #[inline]
    pub fn find_int(&self, v: i64) -> Option<u32> {
        if v >= 0 && (v as u64) < self.dense.len() as u64 {
            let i = self.dense[v as usize];
            if i != u32::MAX {
                return Some(i);
            }
        }
        self.ints.get(&v).copied()
    }

    /// The id of a key, if present (never inserts).
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        if key.len() == 9 && key[0] == T_INT {
            return self.find_int(i64::from_le_bytes(key[1..].try_into().unwrap()));
        }
        self.map.get(key).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Level ids in sorted order. Keys are decoded once.
    pub fn sorted(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.keys.len() as u32).collect();
        let decoded: Vec<Vec<LevelPart>> = self.keys.iter().map(|k| decode(k)).collect();
        let ints: Option<Vec<i64>> = decoded
            .iter()
            .map(|p| match p.as_slice() {
                [LevelPart::Int(v)] => Some(*v),
                _ => None,
            })
            .collect();
        match ints {
            Some(v) => order.sort_unstable_by_key(|&i| v[i as usize]),
            None => {
                order.sort_by(|&a, &b| compare_parts(&decoded[a as usize], &decoded[b as usize]))
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_levels_are_unique_whatever_the_order() {
        let mut l = Levels::default();
        let keys: Vec<i64> = (0..20_000).map(|i| (i * 7919) % 50_000 - 100).collect();
        let ids: Vec<u32> = keys.iter().map(|&k| l.id_int(k)).collect();
        for (k, id) in keys.iter().zip(&ids) {
            assert_eq!(l.id_int(*k), *id);
            let mut key = vec![T_INT];
            key.extend_from_slice(&k.to_le_bytes());
            assert_eq!(l.id(&key), *id);
        }
        let distinct: std::collections::HashSet<i64> = keys.iter().copied().collect();
        assert_eq!(l.len(), distinct.len());
        let order = l.sorted();
        let sorted: Vec<i64> = order
            .iter()
            .map(|&i| match decode(&l.keys[i as usize])[0] {
                LevelPart::Int(v) => v,
                _ => unreachable!(),
            })
            .collect();
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
    }
}

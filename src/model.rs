//! A fitted model as a value: what prediction needs (the design recipe, β,
//! the BLUPs of every level of every grouping factor) and what the tidy table
//! needs, with a compact, versioned binary serialization.
//!
//! The byte layout is documented in `docs/model-format.md`; keep the two in step.
//! Summary: a 32-byte header (magic `LMMMODEL`, format version, flags, a
//! 64-bit checksum of the payload that doubles as the model's identity, the
//! payload length), then the payload, all integers and floats little-endian.

use crate::bail;
use crate::error::{LmmError, Result};
use crate::levels;
use crate::options::Method;
use crate::tidy::{RanVals, Text, Tidy, TidyRow};

pub const MAGIC: &[u8; 8] = b"LMMMODEL";
/// The format this version writes; it reads every version up to this one.
pub const FORMAT_VERSION: u32 = 5;
/// The version written when a variable carries a scaling and none a poly() basis.
pub const SCALED_VERSION: u32 = 4;
/// The version written when no variable carries a contrast matrix or a
/// scaling (what readers of format 2 read).
pub const PLAIN_VERSION: u32 = 2;
/// The version written when a variable carries a contrast matrix and none a scaling.
pub const CODED_VERSION: u32 = 3;
/// Header flag: a statistics section follows the model (format 2 on).
pub const HAS_STATS: u32 = 1;
pub const HEADER_LEN: usize = 32;
/// Marks a numeric part of a design column (no level).
pub const NUMERIC: u32 = u32::MAX;
/// Marks a contrast-coded part: `CODED | j` is column j of the variable's
/// contrast matrix (`Var::coding`), C[level, j].
pub const CODED: u32 = 0x8000_0000;
/// Marks a poly() part: `POLY | j` is column j (0-based) of the variable's
/// basis (`Var::poly`) at its value.
pub const POLY: u32 = 0x4000_0000;

/// What a design column's part `(v, l)` stands for.
pub fn part_kind(l: u32) -> PartKind {
    if l == NUMERIC {
        PartKind::Value
    } else if l & CODED != 0 {
        PartKind::Coded((l & !CODED) as usize)
    } else if l & POLY != 0 {
        PartKind::Poly((l & !POLY) as usize)
    } else {
        PartKind::Level(l as usize)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PartKind {
    Value,
    Level(usize),
    Coded(usize),
    Poly(usize),
}

/// A list of level keys (`levels::encode` format) in one buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keys {
    bytes: Vec<u8>,
    /// `ends[i]` is the end of key i in `bytes`.
    ends: Vec<usize>,
}

impl Keys {
    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Every key a single integer (the common grouping column): stored as i64s.
    fn all_ints(&self) -> bool {
        self.iter().all(|k| k.len() == 9 && k[0] == levels::T_INT)
    }
}

/// A variable (column) of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    pub name: String,
    /// The column's type when fitted (for messages).
    pub type_name: String,
    pub response: bool,
    /// Part of a grouping factor.
    pub grouping: bool,
    /// Categorical (coded by levels) rather than numeric.
    pub categorical: bool,
    /// For a categorical variable: the kind of its level keys
    /// (`levels::T_INT` …), 0 if unknown. A row must bring the same kind.
    pub key_tag: u8,
    /// Levels of a categorical variable used in a model term, sorted as R
    /// sorts them (the first is the reference level); empty otherwise.
    pub levels: Keys,
    /// Its contrast matrix when `contrasts :=` gave it one other than
    /// treatment coding: levels × columns, column-major; empty otherwise.
    pub coding: Vec<f64>,
    /// `scale(…)`: the centre and scale its values are taken about, (x − c)/s.
    pub scaling: Option<(f64, f64)>,
    /// `poly(…)`: R's `coefs` of its basis (`transform::poly`).
    pub poly: Option<crate::transform::poly::PolyBasis>,
}

impl Var {
    /// C[level, j] of the contrast matrix.
    pub fn coded(&self, level: usize, j: usize) -> f64 {
        self.coding[j * self.levels.len() + level]
    }
    pub fn coded_columns(&self) -> usize {
        self.coding
            .len()
            .checked_div(self.levels.len())
            .unwrap_or(0)
    }
}

/// A design column: the product of its parts, `(variable, level)`, where the
/// level `NUMERIC` means the variable's value and any other value the
/// indicator of that level (index into the variable's `levels`).
/// No parts: the intercept.
#[derive(Debug, Clone, PartialEq)]
pub struct DesignCol {
    pub name: String,
    pub parts: Vec<(u32, u32)>,
}

/// A grouping factor with its random-effect terms and BLUPs.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// lme4's name: the grouping columns joined by ':'.
    pub name: String,
    /// Its grouping columns (indices into `Model::vars`).
    pub vars: Vec<u32>,
    /// The random-effect columns (Z) per level.
    pub terms: Vec<DesignCol>,
    /// The levels, sorted as in the tidy table, keyed as the fit keyed them
    /// (the concatenated `levels::encode` keys of the grouping columns).
    pub keys: Keys,
    /// BLUPs on the data scale, term-major: entry `t * nlevels + l`.
    pub blup: Vec<f64>,
    /// Conditional SDs, same layout; present when the fit reported `ran_vals`.
    pub cond_sd: Option<Vec<f64>>,
}

impl Factor {
    pub fn nlevels(&self) -> usize {
        self.keys.len()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub formula: String,
    pub method: Method,
    pub vars: Vec<Var>,
    pub fixed: Vec<DesignCol>,
    pub beta: Vec<f64>,
    /// In the order of the tidy table (factors with more levels first).
    pub factors: Vec<Factor>,
    /// Tidy rows before the `ran_vals` (fixed, ran_pars) and after them (fit).
    pub head: Vec<TidyRow>,
    pub tail: Vec<TidyRow>,
    /// What inference needs of the fit (written; `from_bytes` leaves it unread:
    /// see `stats_of`).
    pub stats: Option<crate::inference::stored::Stored>,
}

/// A model's identity: the payload checksum and length from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelId {
    pub checksum: u64,
    pub len: u64,
}

impl Model {
    /// The tidy table, as the fit returned it.
    pub fn tidy(&self) -> Tidy {
        let ran_vals = self
            .factors
            .iter()
            .filter_map(|f| {
                let sd = f.cond_sd.as_ref()?;
                let labels: Vec<Text> = f.keys.iter().map(|k| levels::label(k).into()).collect();
                Some(RanVals {
                    group_var: f.name.as_str().into(),
                    terms: f.terms.iter().map(|t| t.name.as_str().into()).collect(),
                    levels: labels,
                    estimate: f.blup.clone(),
                    std_error: sd.clone(),
                })
            })
            .collect();
        Tidy {
            head: self.head.clone(),
            ran_vals,
            tail: self.tail.clone(),
        }
    }

    /// The tidy table, consuming the model (no copies of the BLUP arrays).
    pub fn into_tidy(self) -> Tidy {
        let ran_vals = self
            .factors
            .into_iter()
            .filter_map(|f| {
                let sd = f.cond_sd?;
                let labels: Vec<Text> = f.keys.iter().map(|k| levels::label(k).into()).collect();
                Some(RanVals {
                    group_var: f.name.as_str().into(),
                    terms: f.terms.iter().map(|t| t.name.as_str().into()).collect(),
                    levels: labels,
                    estimate: f.blup,
                    std_error: sd,
                })
            })
            .collect();
        Tidy {
            head: self.head,
            ran_vals,
            tail: self.tail,
        }
    }

    // -----------------------------------------------------------------------
    // Serialization
    // -----------------------------------------------------------------------

    /// The model value: header + payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer {
            buf: Vec::with_capacity(HEADER_LEN + self.size_hint()),
        };
        w.buf.resize(HEADER_LEN, 0);
        self.write_payload(&mut w);
        let mut buf = w.buf;
        let checksum = checksum(&buf[HEADER_LEN..]);
        let mut flags = 0u32;
        if let Some(stats) = &self.stats {
            // [u64 checksum of the body][body] … [u64 length of both]
            flags |= HAS_STATS;
            let at = buf.len();
            buf.extend_from_slice(&[0u8; 8]);
            stats.to_bytes(&mut buf);
            let body = self::checksum(&buf[at + 8..]);
            buf[at..at + 8].copy_from_slice(&body.to_le_bytes());
            let len = (buf.len() - at) as u64;
            buf.extend_from_slice(&len.to_le_bytes());
        }
        let payload_len = (buf.len() - HEADER_LEN) as u64;
        buf[0..8].copy_from_slice(MAGIC);
        let version = if self.vars.iter().any(|v| v.poly.is_some()) {
            FORMAT_VERSION
        } else if self.vars.iter().any(|v| v.scaling.is_some()) {
            SCALED_VERSION
        } else if self.vars.iter().any(|v| !v.coding.is_empty()) {
            CODED_VERSION
        } else {
            PLAIN_VERSION
        };
        buf[8..12].copy_from_slice(&version.to_le_bytes());
        buf[12..16].copy_from_slice(&flags.to_le_bytes());
        buf[16..24].copy_from_slice(&checksum.to_le_bytes());
        buf[24..32].copy_from_slice(&payload_len.to_le_bytes());
        buf
    }

    fn size_hint(&self) -> usize {
        self.factors
            .iter()
            .map(|f| f.keys.bytes.len() + 16 * f.blup.len())
            .sum::<usize>()
            + 4096
    }

    fn write_payload(&self, w: &mut Writer) {
        w.str(&self.formula);
        w.u8(match self.method {
            Method::Reml => 0,
            Method::Ml => 1,
        });
        w.u32(self.vars.len() as u32);
        for v in &self.vars {
            w.str(&v.name);
            w.str(&v.type_name);
            let coded = !v.coding.is_empty();
            let scaled = v.scaling.is_some();
            w.u8(v.response as u8
                | (v.grouping as u8) << 1
                | (v.categorical as u8) << 2
                | (coded as u8) << 3
                | (scaled as u8) << 4
                | (v.poly.is_some() as u8) << 5);
            w.u8(v.key_tag);
            w.keys(&v.levels);
            if coded {
                w.f64s(&v.coding);
            }
            if let Some((c, s)) = v.scaling {
                w.f64s(&[c, s]);
            }
            if let Some(p) = &v.poly {
                w.u8(p.raw as u8);
                w.u32(p.degree as u32);
                w.f64s(&[p.origin]);
                w.f64s(&p.alpha);
                w.f64s(&p.norm2);
            }
        }
        w.u32(self.fixed.len() as u32);
        for c in &self.fixed {
            w.col(c);
        }
        w.f64s(&self.beta);
        w.u32(self.factors.len() as u32);
        for f in &self.factors {
            w.str(&f.name);
            w.u32(f.vars.len() as u32);
            for &v in &f.vars {
                w.u32(v);
            }
            w.u32(f.terms.len() as u32);
            for c in &f.terms {
                w.col(c);
            }
            w.keys(&f.keys);
            w.f64s(&f.blup);
            match &f.cond_sd {
                Some(sd) => {
                    w.u8(1);
                    w.f64s(sd);
                }
                None => w.u8(0),
            }
        }
        for rows in [&self.head, &self.tail] {
            w.u32(rows.len() as u32);
            for r in rows {
                w.row(r);
            }
        }
    }

    /// Read a model value; any defect gives an error saying what is wrong.
    pub fn from_bytes(data: &[u8]) -> Result<Model> {
        let id = header(data)?;
        let payload = model_part(data);
        if checksum(payload) != id.checksum {
            bail!("the model value is corrupt (its checksum does not match its contents)");
        }
        let mut r = Reader {
            data: payload,
            pos: 0,
        };
        let m = read_payload(&mut r)?;
        if r.pos != payload.len() {
            bail!(
                "the model value is corrupt ({} unexpected bytes after the model)",
                payload.len() - r.pos
            );
        }
        Ok(m)
    }
}

/// Check a model value's header (magic, version, length); its identity.
pub fn header(data: &[u8]) -> Result<ModelId> {
    if data.len() < 8 || &data[..8] != MAGIC {
        bail!(
            "this value is not an lmm model (a model is a BLOB made by lmm_model_agg and starts with 'LMMMODEL'; \
             this one has {} byte(s){})",
            data.len(),
            if data.is_empty() { "" } else { " and another start" }
        );
    }
    if data.len() < HEADER_LEN {
        bail!(
            "the model value is truncated ({} bytes, shorter than its {HEADER_LEN}-byte header)",
            data.len()
        );
    }
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap());
    if version == 0 || version > FORMAT_VERSION {
        bail!(
            "the model value has format version {version}, but this version of lmm reads versions 1 to {FORMAT_VERSION}; \
             it was saved by a newer lmm: upgrade the extension, or refit the model"
        );
    }
    let checksum = u64::from_le_bytes(data[16..24].try_into().unwrap());
    let len = u64::from_le_bytes(data[24..32].try_into().unwrap());
    let have = (data.len() - HEADER_LEN) as u64;
    if have != len {
        bail!(
            "the model value is {} (its header announces {len} bytes of model after the header, it has {have})",
            if have < len { "truncated" } else { "corrupt" }
        );
    }
    Ok(ModelId { checksum, len })
}

/// The model part of a value (what its header's checksum covers): the payload
/// without the statistics section. Never fails: a damaged trailer leaves the
/// whole payload, whose checksum then fails.
pub fn model_part(data: &[u8]) -> &[u8] {
    let payload = data.get(HEADER_LEN..).unwrap_or(&[]);
    let flags = data
        .get(12..16)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
    if flags & HAS_STATS == 0 || payload.len() < 8 {
        return payload;
    }
    let len = u64::from_le_bytes(payload[payload.len() - 8..].try_into().unwrap());
    match (payload.len() as u64 - 8).checked_sub(len) {
        Some(end) if len >= 8 => &payload[..end as usize],
        _ => payload,
    }
}

/// The statistics section of a model value (header checked), read and
/// verified; None for a value saved without one (format 1, or `stats` off).
pub fn stats_of(data: &[u8]) -> Result<Option<crate::inference::stored::Stored>> {
    header(data)?;
    let payload = &data[HEADER_LEN..];
    let model = model_part(data);
    if model.len() == payload.len() {
        return Ok(None);
    }
    let section = &payload[model.len()..payload.len() - 8];
    let sum = u64::from_le_bytes(section[..8].try_into().unwrap());
    if checksum(&section[8..]) != sum {
        bail!("the model value's statistics are corrupt (their checksum does not match their contents)");
    }
    crate::inference::stored::Stored::from_bytes(&section[8..]).map(Some)
}

/// The identity stored in a header, without validating anything but its presence.
#[inline]
pub fn quick_id(data: &[u8]) -> Option<ModelId> {
    if data.len() < HEADER_LEN {
        return None;
    }
    Some(ModelId {
        checksum: u64::from_le_bytes(data[16..24].try_into().unwrap()),
        len: u64::from_le_bytes(data[24..32].try_into().unwrap()),
    })
}

/// A 64-bit checksum: 8-byte words, multiply–xorshift, two lanes.
pub fn checksum(data: &[u8]) -> u64 {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let (mut a, mut b) = (0x243F_6A88_85A3_08D3u64, 0x1319_8A2E_0370_7344u64);
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        let x = u64::from_le_bytes(c[..8].try_into().unwrap());
        let y = u64::from_le_bytes(c[8..].try_into().unwrap());
        a = (a ^ x).wrapping_mul(K1).rotate_left(29);
        b = (b ^ y).wrapping_mul(K2).rotate_left(31);
    }
    for (i, &byte) in chunks.remainder().iter().enumerate() {
        a = (a ^ ((byte as u64) << (8 * (i % 8))))
            .wrapping_mul(K1)
            .rotate_left(29);
    }
    let mut h = a ^ b.rotate_left(17) ^ (data.len() as u64).wrapping_mul(K2);
    h ^= h >> 33;
    h = h.wrapping_mul(K1);
    h ^= h >> 29;
    h
}

// ---------------------------------------------------------------------------
// Writer and reader
// ---------------------------------------------------------------------------

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn keys(&mut self, k: &Keys) {
        self.u64(k.len() as u64);
        if k.all_ints() && !k.is_empty() {
            self.u8(1);
            for key in k.iter() {
                self.buf.extend_from_slice(&key[1..9]);
            }
        } else {
            self.u8(0);
            for key in k.iter() {
                self.u32(key.len() as u32);
                self.buf.extend_from_slice(key);
            }
        }
    }
    fn col(&mut self, c: &DesignCol) {
        self.str(&c.name);
        self.u32(c.parts.len() as u32);
        for &(v, l) in &c.parts {
            self.u32(v);
            self.u32(l);
        }
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn row(&mut self, r: &TidyRow) {
        self.str(r.effect);
        self.opt_str(r.group_var.as_deref());
        self.opt_str(r.level.as_deref());
        self.opt_str(r.term.as_deref());
        let values = r.as_ref().values;
        let mut mask = 0u8;
        for (i, v) in values.iter().enumerate() {
            if v.is_some() {
                mask |= 1 << i;
            }
        }
        self.u8(mask);
        for x in values.iter().flatten() {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

fn corrupt(what: &str) -> LmmError {
    LmmError::new(format!("the model value is corrupt (cannot read {what})"))
}

/// A value that reads but whose contents contradict each other: never made by lmm.
fn damaged(why: String) -> LmmError {
    LmmError::new(format!(
        "the model value is damaged or was not made by lmm: {why}"
    ))
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(corrupt(what));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, n: u64, min_size: usize, what: &str) -> Result<usize> {
        if n.saturating_mul(min_size.max(1) as u64) > (self.data.len() - self.pos) as u64 {
            return Err(corrupt(what));
        }
        Ok(n as usize)
    }
    fn str(&mut self, what: &str) -> Result<String> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(what))
    }
    fn f64s(&mut self, what: &str) -> Result<Vec<f64>> {
        let n = self.u64(what)?;
        let n = self.count(n, 8, what)?;
        let b = self.take(8 * n, what)?;
        Ok(b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    fn keys(&mut self, what: &str) -> Result<Keys> {
        let n = self.u64(what)?;
        let ints = self.u8(what)?;
        let mut k = Keys::default();
        match ints {
            1 => {
                let n = self.count(n, 8, what)?;
                let b = self.take(8 * n, what)?;
                k.bytes.reserve(9 * n);
                k.ends.reserve(n);
                for c in b.chunks_exact(8) {
                    k.bytes.push(levels::T_INT);
                    k.bytes.extend_from_slice(c);
                    k.ends.push(k.bytes.len());
                }
            }
            0 => {
                let n = self.count(n, 4, what)?;
                k.ends.reserve(n);
                for _ in 0..n {
                    let len = self.u32(what)? as usize;
                    let key = self.take(len, what)?;
                    if levels::part_tags(key).is_none_or(|t| t.is_empty()) {
                        return Err(corrupt(what));
                    }
                    k.push(key);
                }
            }
            _ => return Err(corrupt(what)),
        }
        Ok(k)
    }
    fn col(&mut self, nvars: usize, what: &str) -> Result<DesignCol> {
        let name = self.str(what)?;
        let n = self.u32(what)? as u64;
        let n = self.count(n, 8, what)?;
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            let v = self.u32(what)?;
            let l = self.u32(what)?;
            if v as usize >= nvars {
                return Err(corrupt(what));
            }
            parts.push((v, l));
        }
        Ok(DesignCol { name, parts })
    }
    fn opt_str(&mut self, what: &str) -> Result<Option<Text>> {
        Ok(match self.u8(what)? {
            0 => None,
            1 => Some(self.str(what)?.into()),
            _ => return Err(corrupt(what)),
        })
    }
    fn row(&mut self) -> Result<TidyRow> {
        let what = "a tidy row";
        let effect = match self.str(what)?.as_str() {
            "fixed" => "fixed",
            "ran_pars" => "ran_pars",
            "ran_vals" => "ran_vals",
            "fit" => "fit",
            _ => return Err(corrupt(what)),
        };
        let mut r = TidyRow::new(effect);
        r.group_var = self.opt_str(what)?;
        r.level = self.opt_str(what)?;
        r.term = self.opt_str(what)?;
        let mask = self.u8(what)?;
        let mut values = [None; 7];
        for (i, v) in values.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *v = Some(f64::from_le_bytes(self.take(8, what)?.try_into().unwrap()));
            }
        }
        [
            r.estimate,
            r.std_error,
            r.statistic,
            r.df,
            r.p_value,
            r.conf_low,
            r.conf_high,
        ] = values;
        Ok(r)
    }
}

fn read_payload(r: &mut Reader) -> Result<Model> {
    let formula = r.str("the formula")?;
    let method = match r.u8("the method")? {
        0 => Method::Reml,
        1 => Method::Ml,
        _ => return Err(corrupt("the method")),
    };
    let nvars = r.u32("the variables")? as u64;
    let nvars = r.count(nvars, 11, "the variables")?;
    let mut vars = Vec::with_capacity(nvars);
    for _ in 0..nvars {
        let name = r.str("a variable name")?;
        let type_name = r.str("a variable type")?;
        let flags = r.u8("a variable")?;
        let key_tag = r.u8("a variable")?;
        let levels = r.keys("a variable's levels")?;
        let coding = if flags & 8 != 0 {
            r.f64s("a variable's contrasts")?
        } else {
            Vec::new()
        };
        if flags & 8 != 0
            && (flags & 4 == 0 || levels.is_empty() || coding.len() % levels.len() != 0)
        {
            return Err(damaged(format!(
                "the contrasts of variable '{name}' do not fit its levels"
            )));
        }
        let scaling = if flags & 16 != 0 {
            match r.f64s("a variable's scaling")?[..] {
                [c, s] if flags & 4 == 0 && c.is_finite() && s.is_finite() && s != 0.0 => {
                    Some((c, s))
                }
                _ => return Err(damaged(format!(
                    "the scaling of variable '{name}' is not a finite centre and a non-zero scale"
                ))),
            }
        } else {
            None
        };
        let poly = if flags & 32 != 0 {
            let what = "a variable's poly() basis";
            let raw = r.u8(what)?;
            let degree = r.u32(what)? as usize;
            let origin = match r.f64s(what)?[..] {
                [o] => o,
                _ => return Err(damaged(format!("the poly() basis of variable '{name}' has no origin"))),
            };
            let alpha = r.f64s(what)?;
            let norm2 = r.f64s(what)?;
            let finite = alpha.iter().chain(&norm2).all(|x| x.is_finite()) && origin.is_finite();
            let shaped = if raw == 1 {
                alpha.is_empty() && norm2.is_empty()
            } else {
                raw == 0
                    && alpha.len() == degree
                    && norm2.len() == degree + 2
                    && norm2.iter().all(|&n| n > 0.0)
            };
            if !(finite && shaped && flags & 4 == 0 && (1..=64).contains(&degree)) {
                return Err(damaged(format!(
                    "the poly() basis of variable '{name}' is not a valid basis"
                )));
            }
            Some(crate::transform::poly::PolyBasis {
                raw: raw == 1,
                origin,
                alpha,
                norm2,
                degree,
            })
        } else {
            None
        };
        vars.push(Var {
            name,
            type_name,
            response: flags & 1 != 0,
            grouping: flags & 2 != 0,
            categorical: flags & 4 != 0,
            key_tag,
            levels,
            coding,
            scaling,
            poly,
        });
    }
    // Every index a design column holds, checked against what it points at.
    let check_col = |c: &DesignCol, vars: &[Var]| -> Result<()> {
        for &(v, l) in &c.parts {
            let var = &vars[v as usize];
            if let PartKind::Poly(j) = part_kind(l) {
                let degree = var.poly.as_ref().map_or(0, |p| p.degree);
                if j >= degree {
                    return Err(damaged(format!(
                        "design column '{}' takes poly() column {j} of variable '{}', which has {degree}",
                        c.name, var.name
                    )));
                }
                continue;
            }
            if let PartKind::Coded(j) = part_kind(l) {
                if j >= var.coded_columns() {
                    return Err(damaged(format!(
                        "design column '{}' takes contrast column {j} of variable '{}', which has {}",
                        c.name,
                        var.name,
                        var.coded_columns()
                    )));
                }
                continue;
            }
            if l == NUMERIC && var.categorical {
                return Err(damaged(format!(
                    "design column '{}' uses the categorical variable '{}' as a number",
                    c.name, var.name
                )));
            }
            if l != NUMERIC && !var.categorical {
                return Err(damaged(format!(
                    "design column '{}' takes a level of the numeric variable '{}'",
                    c.name, var.name
                )));
            }
            if l != NUMERIC && l as usize >= var.levels.len() {
                return Err(damaged(format!(
                    "design column '{}' takes level {} of variable '{}', which has {} level(s)",
                    c.name,
                    l,
                    var.name,
                    var.levels.len()
                )));
            }
        }
        Ok(())
    };
    let nfixed = r.u32("the fixed effects")? as u64;
    let nfixed = r.count(nfixed, 8, "the fixed effects")?;
    let mut fixed = Vec::with_capacity(nfixed);
    for _ in 0..nfixed {
        let c = r.col(nvars, "a fixed-effect column")?;
        check_col(&c, &vars)?;
        fixed.push(c);
    }
    let beta = r.f64s("the fixed effects")?;
    if beta.len() != fixed.len() {
        return Err(corrupt("the fixed effects"));
    }
    let nf = r.u32("the grouping factors")? as u64;
    let nf = r.count(nf, 8, "the grouping factors")?;
    let mut factors = Vec::with_capacity(nf);
    for _ in 0..nf {
        let what = "a grouping factor";
        let name = r.str(what)?;
        let nv = r.u32(what)? as u64;
        let nv = r.count(nv, 4, what)?;
        if nv == 0 {
            return Err(damaged(format!(
                "grouping factor '{name}' has no grouping column"
            )));
        }
        let mut fvars = Vec::with_capacity(nv);
        for _ in 0..nv {
            let v = r.u32(what)?;
            if v as usize >= nvars {
                return Err(corrupt(what));
            }
            let var = &vars[v as usize];
            if !(var.categorical && var.grouping) || var.response {
                return Err(damaged(format!(
                    "grouping factor '{name}' is made of '{}', which is not a grouping column",
                    var.name
                )));
            }
            fvars.push(v);
        }
        let nt = r.u32(what)? as u64;
        let nt = r.count(nt, 8, what)?;
        let mut terms = Vec::with_capacity(nt);
        for _ in 0..nt {
            let c = r.col(nvars, what)?;
            check_col(&c, &vars)?;
            terms.push(c);
        }
        let keys = r.keys("a grouping factor's levels")?;
        let blup = r.f64s("the BLUPs")?;
        if Some(blup.len()) != keys.len().checked_mul(terms.len()) {
            return Err(corrupt("the BLUPs"));
        }
        let cond_sd = match r.u8(what)? {
            0 => None,
            1 => {
                let sd = r.f64s("the conditional SDs")?;
                if sd.len() != blup.len() {
                    return Err(corrupt("the conditional SDs"));
                }
                Some(sd)
            }
            _ => return Err(corrupt(what)),
        };
        factors.push(Factor {
            name,
            vars: fvars,
            terms,
            keys,
            blup,
            cond_sd,
        });
    }
    let mut parts = Vec::new();
    for _ in 0..2 {
        let n = r.u32("the tidy rows")? as u64;
        let n = r.count(n, 8, "the tidy rows")?;
        parts.push((0..n).map(|_| r.row()).collect::<Result<Vec<_>>>()?);
    }
    let tail = parts.pop().unwrap();
    let head = parts.pop().unwrap();
    Ok(Model {
        formula,
        method,
        vars,
        fixed,
        beta,
        factors,
        head,
        tail,
        stats: None,
    })
}

/// Build the model from an accumulator and the fit's results (called by `fit`).
pub struct FactorResult<'a> {
    pub name: String,
    pub vars: Vec<usize>,
    pub terms: &'a [crate::design::DesignColumn],
    /// Level ids of the factor (ids in `acc.factors[i].levels`) in output order.
    pub order: Vec<u32>,
    pub factor_index: usize,
    pub blup: Vec<f64>,
    pub cond_sd: Option<Vec<f64>>,
}

pub fn build(
    acc: &crate::accumulator::Accumulator,
    xcols: &[crate::design::DesignColumn],
    beta: Vec<f64>,
    factors: Vec<FactorResult>,
    head: Vec<TidyRow>,
    tail: Vec<TidyRow>,
) -> Model {
    use crate::accumulator::Kind;
    // Variables used (with a level) in a term: their levels, sorted; rank of each level id.
    let mut used_levels = vec![false; acc.vars.len()];
    let mut coded = vec![false; acc.vars.len()];
    for c in xcols
        .iter()
        .chain(factors.iter().flat_map(|f| f.terms.iter()))
    {
        for &(v, l) in &c.parts {
            if l != crate::design::Part::Value {
                used_levels[v] = true;
            }
            if matches!(l, crate::design::Part::Coded(_)) {
                coded[v] = true;
            }
        }
    }
    let mut rank: Vec<Vec<u32>> = vec![Vec::new(); acc.vars.len()];
    let mut vars: Vec<Var> = Vec::with_capacity(acc.vars.len());
    for (i, v) in acc.vars.iter().enumerate() {
        let categorical = v.kind == Some(Kind::Categorical);
        let mut keys = Keys::default();
        if categorical && used_levels[i] {
            let order = v.levels.sorted();
            rank[i] = vec![0; order.len()];
            for (pos, &id) in order.iter().enumerate() {
                rank[i][id as usize] = pos as u32;
                keys.push(&v.levels.keys[id as usize]);
            }
        }
        vars.push(Var {
            name: v.name.clone(),
            type_name: v.type_name.clone(),
            response: v.response,
            grouping: v.grouping,
            categorical,
            key_tag: 0,
            levels: keys,
            // coded in `design::code` already, from the same levels
            coding: match crate::design::contrast_of(acc, i) {
                Some(c) if coded[i] => crate::design::coding(acc, i, c)
                    .map(|c| c.matrix)
                    .unwrap_or_default(),
                _ => Vec::new(),
            },
            // scaled in `design::code` already, from the same moments
            scaling: acc.scaling(i).unwrap_or_default(),
            // a basis `design::code` made already, from the same sums
            poly: acc.poly_basis(i).ok().flatten().map(|(b, _)| b),
        });
    }
    // The kind of key each categorical variable brings: from its own levels,
    // else from its part of a grouping factor's first key.
    for (i, var) in vars.iter_mut().enumerate() {
        if !var.categorical {
            continue;
        }
        if !var.levels.is_empty() {
            var.key_tag = var.levels.get(0)[0];
            continue;
        }
        for f in &acc.factors {
            if let (Some(pos), Some(key)) =
                (f.vars.iter().position(|&v| v == i), f.levels.keys.first())
            {
                if let Some(tags) = levels::part_tags(key) {
                    var.key_tag = tags.get(pos).copied().unwrap_or(0);
                }
                break;
            }
        }
    }
    let col = |c: &crate::design::DesignColumn| DesignCol {
        name: c.name.clone(),
        parts: c
            .parts
            .iter()
            .map(|&(v, l)| {
                let l = match l {
                    crate::design::Part::Value => NUMERIC,
                    crate::design::Part::Level(id) => rank[v][id as usize],
                    crate::design::Part::Coded(j) => CODED | j,
                    crate::design::Part::Poly(j) => POLY | j,
                };
                (v as u32, l)
            })
            .collect(),
    };
    let fixed = xcols.iter().map(col).collect();
    let factors = factors
        .into_iter()
        .map(|f| {
            let lv = &acc.factors[f.factor_index].levels;
            let mut keys = Keys::default();
            for &g in &f.order {
                keys.push(&lv.keys[g as usize]);
            }
            Factor {
                name: f.name,
                vars: f.vars.iter().map(|&v| v as u32).collect(),
                terms: f.terms.iter().map(col).collect(),
                keys,
                blup: f.blup,
                cond_sd: f.cond_sd,
            }
        })
        .collect();
    Model {
        formula: acc.formula_text.clone(),
        method: acc.options.method,
        vars,
        fixed,
        beta,
        factors,
        head,
        tail,
        stats: None,
    }
}

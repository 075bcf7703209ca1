//! Little-endian bytes for lmm's values: a writer, and a reader that checks
//! every length against what is left before it allocates (a forged value
//! gets an error naming what could not be read, never a huge allocation).

use crate::error::{LmmError, Result};

pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// f64 values without a length (the reader knows it).
    pub fn f64s(&mut self, v: &[f64]) {
        for x in v {
            self.f64(*x);
        }
    }
}

pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// what the bytes are, for messages ("statistics value")
    value: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], value: &'static str) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            value,
        }
    }

    pub fn corrupt(&self, what: &str) -> LmmError {
        LmmError::new(format!(
            "the {} is corrupt (cannot read {what})",
            self.value
        ))
    }

    pub fn is_at_end(&self) -> bool {
        self.pos == self.data.len()
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(self.corrupt(what));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A count of items of at least `min_size` bytes each, checked against what is left.
    pub fn count(&mut self, n: u64, min_size: usize, what: &str) -> Result<usize> {
        if n.saturating_mul(min_size.max(1) as u64) > (self.data.len() - self.pos) as u64 {
            return Err(self.corrupt(what));
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    pub fn str(&mut self, what: &str) -> Result<String> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt(what))
    }
    /// `n` f64 values.
    pub fn f64s(&mut self, n: usize, what: &str) -> Result<Vec<f64>> {
        let n = self.count(n as u64, 8, what)?;
        let b = self.take(8 * n, what)?;
        Ok(b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
}

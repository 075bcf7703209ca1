//! The memory a fit may use for its own large buffers, checked before they
//! are allocated.
//!
//! A fit's big allocations (per-group cross-products, the dense blocks of a
//! crossed model) are sized from the model before the data are touched;
//! each goes through `check(what, bytes)` first. The limit is DuckDB's
//! `memory_limit` when the query's context could be read (the `lmm_fit`
//! route reads it), else the machine's physical memory. Exceeding it is an
//! ordinary error that states the size needed, instead of an allocation
//! failure that would abort the host process.

use std::cell::Cell;

use crate::error::{LmmError, Result};

thread_local! {
    /// The limit set for the computation on this thread, in bytes.
    static LIMIT: Cell<Option<(u64, &'static str)>> = const { Cell::new(None) };
}

/// Run `f` with `bytes` as this thread's limit; `source` names it in errors.
pub fn with_limit<T>(bytes: u64, source: &'static str, f: impl FnOnce() -> T) -> T {
    let previous = LIMIT.with(|l| l.replace(Some((bytes, source))));
    let out = f();
    LIMIT.with(|l| l.set(previous));
    out
}

/// The machine's physical memory in bytes (`MemTotal` of /proc/meminfo), if known.
pub fn physical_memory() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

fn limit() -> Option<(u64, &'static str)> {
    LIMIT
        .with(|l| l.get())
        .or_else(|| physical_memory().map(|b| (b, "the machine's physical memory")))
}

/// Refuse an allocation of `bytes` (for `what`) beyond the limit.
pub fn check(what: &str, bytes: u128) -> Result<()> {
    match limit() {
        Some((lim, source)) if bytes > lim as u128 => Err(LmmError::new(format!(
            "{what} would need {}, more than {source} ({}); fit fewer levels or terms{}",
            human(bytes),
            human(lim as u128),
            if source.contains("memory_limit") {
                ", or raise memory_limit"
            } else {
                ""
            }
        ))),
        _ => Ok(()),
    }
}

/// `n` doubles, as bytes (no overflow).
pub fn doubles(n: u128) -> u128 {
    n.saturating_mul(8)
}

/// A byte count as people read it: `1.5 GiB`.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// DuckDB's text for a size (`'10.0 MiB'`, `'2GB'`, `'1.5 GiB'`, `'512 bytes'`) in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let number: f64 = t[..split].parse().ok()?;
    let unit = t[split..].trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        _ => return None,
    };
    Some((number * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_duckdb_writes_them() {
        assert_eq!(parse_size("10.0 MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("512 bytes"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(human(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn a_buffer_beyond_the_limit_is_an_error_stating_both_sizes() {
        with_limit(10 << 20, "memory_limit", || {
            let e = check(
                "the dense block of the crossed factors",
                doubles(4096 * 4096),
            )
            .unwrap_err();
            assert_eq!(
                e.0,
                "the dense block of the crossed factors would need 128.0 MiB, more than memory_limit (10.0 MiB); \
                 fit fewer levels or terms, or raise memory_limit"
            );
            assert!(check("a small one", doubles(1000)).is_ok());
        });
    }
}

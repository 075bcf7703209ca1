//! Values of the types lmm uses only as grouping keys, as text: DATE, TIME,
//! TIMESTAMP (every precision, with or without time zone), UUID, INTERVAL.
//! (BLOB keys are their bytes.) The text is the level's label in `ran_vals`,
//! and prediction formats a new row's value the same way to find its level.

/// Days since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian calendar).
pub fn date(days: i64) -> String {
    if days == i32::MAX as i64 {
        return "infinity".into();
    }
    if days == -(i32::MAX as i64) {
        return "-infinity".into();
    }
    // Shift to an era-based count starting 0000-03-01 (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year < 0 {
        format!("{:04}-{month:02}-{day:02} (BC)", 1 - year)
    } else {
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// Microseconds since midnight as `HH:MM:SS[.ffffff]`.
pub fn time(micros: i64) -> String {
    let (secs, frac) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{frac:06}")
    }
}

/// Microseconds since 1970-01-01 00:00:00 as `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub fn timestamp(micros: i64) -> String {
    if micros == i64::MAX {
        return "infinity".into();
    }
    if micros == -i64::MAX {
        return "-infinity".into();
    }
    let day = micros.div_euclid(86_400_000_000);
    format!("{} {}", date(day), time(micros.rem_euclid(86_400_000_000)))
}

/// DuckDB's UUID (a HUGEINT whose top bit is flipped) as 8-4-4-4-12 hex digits.
pub fn uuid(upper: i64, lower: u64) -> String {
    let v = (((upper as u64) ^ (1 << 63)) as u128) << 64 | lower as u128;
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An INTERVAL as `M months D days HH:MM:SS[.ffffff]`.
pub fn interval(months: i32, days: i32, micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    format!("{months} months {days} days {sign}{}", time(micros.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_read_as_duckdb_prints_them() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(18_262), "2020-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(time(0), "00:00:00");
        assert_eq!(time(45_296_000_001), "12:34:56.000001");
        assert_eq!(
            timestamp(1_577_836_800_000_000 + 3_600_000_000),
            "2020-01-01 01:00:00"
        );
        assert_eq!(timestamp(-1), "1969-12-31 23:59:59.999999");
    }

    #[test]
    fn uuids_and_intervals() {
        // uuid '00000000-0000-0000-0000-000000000001' is stored with the top bit flipped.
        assert_eq!(uuid(i64::MIN, 1), "00000000-0000-0000-0000-000000000001");
        assert_eq!(uuid(-1, u64::MAX), "7fffffff-ffff-ffff-ffff-ffffffffffff");
        assert_eq!(interval(14, 3, 5_000_000), "14 months 3 days 00:00:05");
    }
}

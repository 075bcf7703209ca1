//! `scale(x)`: R's `scale.default` on one column, inside the formula.
//!
//! ```text
//!   scale(x, center = TRUE, scale = TRUE) = (x − c) / s
//!   c = mean(x)          (center = TRUE),   the number given,   0 (FALSE)
//!   s = √(Σ (x − c)² / (n − 1))   (scale = TRUE),   the number given,   1 (FALSE)
//!   Σ (x − c)² = M₂ + n (x̄ − c)²          (M₂ = Σ (x − x̄)², Welford)
//! ```
//! R evaluates `scale(x)` in `model.frame` before `na.omit`, so c and s are
//! over every row where x itself is present (finite), also rows the fit then
//! drops for a missing value in another column or a weight of 0: the
//! moments here are accumulated over exactly those rows, in the same pass
//! (`ScaleMoments`, mergeable as the other statistics are).
//!
//! A design column with a scaled variable is a combination of accumulated
//! columns: (x − c)/s · z = (x·z − c·z)/s, so the fit accumulates the term
//! without its scaled variables too (`Accumulator::new`) and `design::code`
//! combines them; prediction applies (x − c)/s to the new rows with the
//! c and s the model value stores.

use crate::bail;
use crate::error::Result;

/// One of `scale()`'s arguments: TRUE (from the data), FALSE, or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleArg {
    Data,
    Off,
    Value(f64),
}

/// `scale(x, center, scale)`'s two arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub center: ScaleArg,
    pub scale: ScaleArg,
}

/// Count, mean and M₂ = Σ (x − x̄)² of a variable's values (Welford; Chan's merge).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScaleMoments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl ScaleMoments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn merge(&mut self, other: &ScaleMoments) {
        if other.n == 0 {
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let d = other.mean - self.mean;
        self.mean += d * nb / n;
        self.m2 += other.m2 + d * d * na * nb / n;
        self.n += other.n;
    }
}

impl Scaling {
    /// (c, s) for the variable `name` with moments `m`; an error where R's
    /// column would be NaN or infinite (no spread, fewer than 2 values).
    pub fn centre_and_scale(&self, name: &str, m: &ScaleMoments) -> Result<(f64, f64)> {
        let c = match self.center {
            ScaleArg::Data => {
                if m.n == 0 {
                    bail!("'{name}': no row has a value to centre by");
                }
                m.mean
            }
            ScaleArg::Off => 0.0,
            ScaleArg::Value(c) => c,
        };
        let s = match self.scale {
            ScaleArg::Data => {
                if m.n < 2 {
                    bail!("'{name}': the standard deviation needs at least 2 rows with a value, and there are {}", m.n);
                }
                let ss = m.m2 + m.n as f64 * (m.mean - c) * (m.mean - c);
                (ss / (m.n - 1) as f64).sqrt()
            }
            ScaleArg::Off => 1.0,
            ScaleArg::Value(s) => s,
        };
        if !(s.is_finite() && s != 0.0) {
            bail!(
                "'{name}': the values have {} (scale {s}), so every scaled value would be NaN or infinite; \
                 drop scale() or check the column",
                if s == 0.0 { "no spread" } else { "no finite spread" }
            );
        }
        if !c.is_finite() {
            bail!("'{name}': the centre is not finite ({c})");
        }
        Ok((c, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(x: &[f64]) -> ScaleMoments {
        let mut m = ScaleMoments::default();
        x.iter().for_each(|&v| m.push(v));
        m
    }

    #[test]
    fn as_r_scale() {
        let x = [1.0, 2.0, 4.0, 7.0];
        let both = Scaling {
            center: ScaleArg::Data,
            scale: ScaleArg::Data,
        };
        let (c, s) = both.centre_and_scale("scale(x)", &moments(&x)).unwrap();
        // R: scale(c(1, 2, 4, 7)) has center 3.5 and scale 2.6457513110645907
        assert!((c - 3.5).abs() < 1e-15 && (s - 2.6457513110645907).abs() < 1e-15);
        // R: scale(c(1, 2, 4, 7), center = FALSE) has scale sqrt(70 / 3)
        let rms = Scaling {
            center: ScaleArg::Off,
            scale: ScaleArg::Data,
        };
        let (c, s) = rms.centre_and_scale("x", &moments(&x)).unwrap();
        assert!(c == 0.0 && (s - (70.0f64 / 3.0).sqrt()).abs() < 1e-14);
        // a numeric centre: the scale is about it
        let at2 = Scaling {
            center: ScaleArg::Value(2.0),
            scale: ScaleArg::Data,
        };
        let (_, s) = at2.centre_and_scale("x", &moments(&x)).unwrap();
        assert!((s - (30.0f64 / 3.0).sqrt()).abs() < 1e-14);
    }

    #[test]
    fn merged_moments_equal_one_pass_at_an_offset() {
        let x: Vec<f64> = (0..1000)
            .map(|i| 1.7e9 + ((i * 37) % 101) as f64 * 0.25)
            .collect();
        let whole = moments(&x);
        let mut a = moments(&x[..313]);
        a.merge(&moments(&x[313..]));
        assert_eq!(a.n, whole.n);
        assert!((a.mean - whole.mean).abs() < 1e-6);
        assert!((a.m2 - whole.m2).abs() < 1e-9 * whole.m2);
        let mut empty = ScaleMoments::default();
        empty.merge(&whole);
        assert_eq!(empty, whole);
    }

    #[test]
    fn no_spread_is_an_error() {
        let both = Scaling {
            center: ScaleArg::Data,
            scale: ScaleArg::Data,
        };
        let e = both
            .centre_and_scale("scale(x)", &moments(&[3.0, 3.0, 3.0]))
            .unwrap_err();
        assert!(
            e.0.contains("scale(x)") && e.0.contains("no spread"),
            "{}",
            e.0
        );
        assert!(both
            .centre_and_scale("scale(x)", &moments(&[3.0]))
            .unwrap_err()
            .0
            .contains("at least 2"));
    }
}

//! Profile confidence limits: where ζ crosses ±z, z = Φ⁻¹((1 + level)/2), as
//! lme4's `confint.thpr`.
//!
//! lme4 interpolates its profile points with a spline; here the crossing is
//! bracketed by the trace's points and then found on the exact profile (each
//! trial value one constrained minimisation, warm-started from the nearer
//! end of the bracket) by the Illinois variant of regula falsi.
//!
//! Where a side of the profile does not reach ±z, lme4 reports the
//! parameter's bound (its `lower`/`upper` attributes: 0 for an SD and σ, −1
//! and 1 for a correlation) and NA for an unbounded parameter. So here: the
//! bound when the trace reached it (or the estimate lies on it: a singular
//! fit's SD of 0 has lower limit 0), None otherwise (an unbounded side, or a
//! side that stopped where the deviance could not be evaluated). lme4 also
//! gives NA where its spline of a non-monotonic profile fails; the exact
//! profile has no such failure, and the first crossing outward is taken.

use super::constrained::Frame;
use super::parameters::Parameter;
use super::trace::{zeta_at, Trace, TracePoint};

/// The confidence limits of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub parameter: Parameter,
    /// index into `Profile::parameters`
    pub index: usize,
    /// the ML estimate (the profile's centre)
    pub estimate: f64,
    pub level: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// The interval of one trace at `level`.
pub fn interval(frame: &Frame, trace: &Trace, level: f64) -> Interval {
    let z = normal_quantile(0.5 * (1.0 + level));
    let (lower, upper) = if trace.points.is_empty() || !z.is_finite() {
        (None, None)
    } else {
        (limit(frame, trace, -z), limit(frame, trace, z))
    };
    Interval {
        parameter: trace.parameter.clone(),
        index: trace.index,
        estimate: trace.estimate,
        level,
        lower,
        upper,
    }
}

/// Where ζ crosses `target` on its side of the estimate.
pub(super) fn limit(frame: &Frame, trace: &Trace, target: f64) -> Option<f64> {
    let dir = target.signum();
    let centre = trace
        .points
        .iter()
        .position(|p| p.value == trace.estimate)?;
    let side: Vec<&TracePoint> = if dir > 0.0 {
        trace.points[centre..].iter().collect()
    } else {
        trace.points[..=centre].iter().rev().collect()
    };
    for w in side.windows(2) {
        if dir * w[1].zeta >= dir * target {
            return Some(crossing(frame, trace.index, w[0], w[1], target));
        }
    }
    let last = side.last()?.value;
    let bound = if dir > 0.0 {
        trace.parameter.upper
    } else {
        trace.parameter.lower
    };
    (last == bound && bound.is_finite()).then_some(bound)
}

/// The root of ζ(v) = target between an inner point (ζ short of it) and an
/// outer one (ζ beyond it).
fn crossing(
    frame: &Frame,
    index: usize,
    inner: &TracePoint,
    outer: &TracePoint,
    target: f64,
) -> f64 {
    let (mut a, mut fa, mut xa) = (inner.value, inner.zeta - target, inner.free.clone());
    let (mut b, mut fb, mut xb) = (outer.value, outer.zeta - target, outer.free.clone());
    if fb == 0.0 {
        return b;
    }
    for _ in 0..60 {
        let mut c = b - fb * (b - a) / (fb - fa);
        if !(c > a.min(b) && c < a.max(b)) {
            c = 0.5 * (a + b);
        }
        let start = if (c - a).abs() < (c - b).abs() {
            &xa
        } else {
            &xb
        };
        let Some(pt) = zeta_at(frame, index, c, start) else {
            return c;
        };
        let fc = pt.zeta - target;
        if fc.abs() <= super::search::tolerance(frame, target)
            || (b - a).abs() <= 1e-12 * b.abs().max(a.abs())
        {
            return c;
        }
        if fc * fb < 0.0 {
            (a, fa, xa) = (b, fb, xb);
        } else {
            fa *= 0.5;
        }
        (b, fb, xb) = (c, fc, pt.free);
    }
    b
}

/// Φ⁻¹(p): a rational start (Abramowitz & Stegun 26.2.23), then Newton steps on
/// the exact tail probability Φ(−|x|) = erfc(|x|/√2)/2.
pub fn normal_quantile(p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else if p == 1.0 {
            f64::INFINITY
        } else {
            f64::NAN
        };
    }
    // the lower tail q = min(p, 1 − p) and x > 0 with Φ(−x) = q
    let q = p.min(1.0 - p);
    let t = (-2.0 * q.ln()).sqrt();
    let mut x = t
        - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
    for _ in 0..4 {
        let tail = 0.5 * libm::erfc(x / std::f64::consts::SQRT_2);
        let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        x += (tail - q) / density;
    }
    if p < 0.5 {
        -x
    } else {
        x
    }
}

/// P(a, x), the regularised lower incomplete gamma function, by its series
/// e^{−x} x^a Σ_k x^k / Γ(a + k + 1) (fine for the moderate x of a cutoff).
fn lower_gamma(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mut term = 1.0 / a;
    let mut sum = term;
    for k in 1..10_000 {
        term *= x / (a + k as f64);
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    (sum.ln() - x + a * x.ln() - libm::lgamma(a)).exp().min(1.0)
}

/// The χ² quantile with `df` degrees of freedom at probability p (bisection).
pub fn chisq_quantile(p: f64, df: f64) -> f64 {
    let cdf = |x: f64| lower_gamma(0.5 * df, 0.5 * x);
    let (mut lo, mut hi) = (0.0f64, df.max(1.0));
    while cdf(hi) < p {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-14 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-13);
        assert!((normal_quantile(0.995) - 2.5758293035489).abs() < 1e-12);
        assert!((normal_quantile(0.025) + 1.959963984540054).abs() < 1e-13);
        assert!((normal_quantile(0.5)).abs() < 1e-15);
        // qchisq(0.99, 1) = 2.5758293² ; qchisq(0.99, 6) = 16.81189383
        assert!((chisq_quantile(0.99, 1.0) - 6.634896601021214).abs() < 1e-9);
        assert!((chisq_quantile(0.99, 6.0) - 16.811893829770927).abs() < 1e-9);
    }
}

//! Student's t distribution: two-sided tail probabilities and quantiles, for
//! Satterthwaite tests of the fixed effects; and the upper tail of Fisher's F
//! (Kenward–Roger F tests).
//!
//! P(|T| > t) = I_x(ν/2, 1/2) with x = ν/(ν + t²), and P(F > f) =
//! I_x(ν₂/2, ν₁/2) with x = ν₂/(ν₂ + ν₁f), I the regularized incomplete beta
//! function, evaluated by its continued fraction (modified Lentz), on the side
//! of x where the fraction converges fast.

/// I_x(a, b), 0 ≤ x ≤ 1.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    // x^a (1−x)^b / (a B(a, b))
    let ln_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction 1/(1+ d₁/(1+ d₂/(1+ …))) of I_x(a, b), with
/// d_{2m+1} = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1)), d_{2m} = m(b−m)x / ((a+2m−1)(a+2m)).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    let tiny = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        for coef in [
            even,
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + coef * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + coef / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// P(|T| > |t|) for T ~ t(ν).
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t.is_nan() { f64::NAN } else { 0.0 };
    }
    incomplete_beta(df / (df + t * t), 0.5 * df, 0.5)
}

/// P(F > f) for F ~ F(ν₁, ν₂) (R's `pf(f, ν₁, ν₂, lower.tail = FALSE)`).
pub fn f_upper_p(f: f64, df1: f64, df2: f64) -> f64 {
    if f.is_nan() || df1.is_nan() || df2.is_nan() {
        return f64::NAN;
    }
    if f <= 0.0 {
        return 1.0;
    }
    if f.is_infinite() {
        return 0.0;
    }
    incomplete_beta(df2 / (df2 + df1 * f), 0.5 * df2, 0.5 * df1)
}

/// The t with P(|T| > t) = alpha (e.g. alpha = 0.05 for a 95% interval).
pub fn two_sided_quantile(alpha: f64, df: f64) -> f64 {
    // P(|T| > t) falls from 1 at t = 0; bracket, then bisect.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while two_sided_p(hi, df) > alpha && hi < 1e300 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if two_sided_p(mid, df) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Cauchy (ν = 1): P(|T| > 1) = 1/2; ν = 2: P(|T| > t) = 1 − t/√(2 + t²)
        assert!((two_sided_p(1.0, 1.0) - 0.5).abs() < 1e-14);
        let t: f64 = 1.7;
        assert!((two_sided_p(t, 2.0) - (1.0 - t / (2.0 + t * t).sqrt())).abs() < 1e-14);
        // R: qt(0.975, 5) = 2.570581835636314, qt(0.975, 17) = 2.109815577833317
        assert!((two_sided_quantile(0.05, 5.0) - 2.570581835636314).abs() < 1e-9);
        assert!((two_sided_quantile(0.05, 17.0) - 2.109815577833317).abs() < 1e-9);
        // large ν tends to the normal: qnorm(0.975) = 1.959963984540054
        assert!((two_sided_quantile(0.05, 1e8) - 1.959963984540054).abs() < 1e-6);
        // R: 2 * pt(-6.771481488999181, 16.999983725591733) = 3.2638244699273775e-06 (lmerTest, sleepstudy)
        let p = two_sided_p(6.771481488999181, 16.999983725591733);
        assert!((p / 3.2638244699273775e-06 - 1.0).abs() < 1e-9, "{p}");
    }

    #[test]
    fn f_upper_tail() {
        // F(1, ν) is T(ν)²
        for (t, nu) in [(0.3, 3.0), (2.1, 17.0), (6.77, 16.99)] {
            let (a, b) = (f_upper_p(t * t, 1.0, nu), two_sided_p(t, nu));
            assert!((a / b - 1.0).abs() < 1e-12, "{a} {b}");
        }
        // F(2, ν): P(F > f) = (1 + 2f/ν)^(−ν/2)
        for (f, nu) in [
            (0.5f64, 4.0f64),
            (3.0, 11.5),
            (930.2378416457169, 504.23531104020157),
        ] {
            let exact = (-0.5 * nu * (1.0 + 2.0 * f / nu).ln()).exp();
            let got = f_upper_p(f, 2.0, nu);
            assert!((got / exact - 1.0).abs() < 1e-10, "{got} {exact}");
        }
        // I_x(ν₂/2, ν₁/2) by mpmath.betainc (30 digits): P(F(3, 20) > 3.5), P(F(7, 5) > 0.8)
        assert!((f_upper_p(3.5, 3.0, 20.0) / 0.034_493_103_885_124_39 - 1.0).abs() < 1e-12);
        assert!((f_upper_p(0.8, 7.0, 5.0) / 0.620_438_882_459_174_9 - 1.0).abs() < 1e-12);
        assert_eq!(f_upper_p(0.0, 2.0, 5.0), 1.0);
    }
}

//! Refusals before the fit: scales double precision cannot square, a constant
//! response, a rank-deficient X, buffers beyond the memory budget.

use super::setup::FactorSpec;
use crate::bail;
use crate::design::{DesignColumn, Source};
use crate::error::Result;

/// Values whose squares double precision cannot hold (about 1e±154): below
/// `TINY` or above `HUGE` a column is refused rather than fitted wrongly.
pub(super) const TINY: f64 = 1e-150;
pub(super) const HUGE: f64 = 1e150;

/// Refuse a column whose values are too small or too large for their squares
/// (every fit forms them) to be represented. `what` names the column.
pub(super) fn check_scale(what: &str, magnitude: f64) -> Result<()> {
    if magnitude > 0.0 && magnitude < TINY {
        bail!(
            "{what} is too small to be represented: its values are about {magnitude:.1e}, and their squares \
             underflow double precision (values must lie between {TINY:e} and {HUGE:e} in absolute value); \
             rescale it, e.g. multiply by 1e{}",
            -magnitude.log10().floor() as i64
        );
    }
    if !(magnitude <= HUGE) {
        let reach = if magnitude.is_finite() {
            format!("reach about {magnitude:.1e}")
        } else {
            "are so large".to_string()
        };
        bail!(
            "{what} is too large to be represented: its values {reach}, and their squares \
             overflow double precision (values must lie between {TINY:e} and {HUGE:e} in absolute value); \
             rescale it, e.g. divide by 1e{}",
            if magnitude.is_finite() { magnitude.log10().floor() as i64 } else { 150 }
        );
    }
    Ok(())
}

/// Refuse a response that is constant or whose scale double precision cannot square.
pub(super) fn check_response(name: &str, comoment: f64, mean: f64, magnitude: f64) -> Result<()> {
    check_scale(&format!("the response '{name}'"), magnitude)?;
    if comoment == 0.0 {
        bail!("the response '{name}' is constant (every row used has the value {mean}); there is no variation for a model to explain");
    }
    if !comoment.is_finite() {
        check_scale(&format!("the response '{name}'"), f64::INFINITY)?;
    }
    Ok(())
}

/// The common case first, as one blocked factorisation (faer's, from
/// `dense::FAER_FROM` columns on): without pivoting, the Cholesky factor's
/// pivot L_jj² is column j's squared residual after regression on the columns
/// before it, which is what `check_rank` tests column by column. When every
/// pivot passes, `check_rank` would keep every column; otherwise it decides.
fn full_rank_by_blocked_cholesky(rtr: &[f64], k: usize, xcols: &[DesignColumn]) -> bool {
    let p = xcols.len();
    if p < crate::dense::FAER_FROM
        || xcols
            .iter()
            .enumerate()
            .any(|(j, c)| matches!(c.source, Source::Zero) || rtr[j * k + j] == 0.0)
    {
        return false;
    }
    let mut a = vec![0.0; p * p];
    for c in 0..p {
        a[c * p + c..(c + 1) * p].copy_from_slice(&rtr[c * k + c..c * k + p]);
    }
    crate::dense::cholesky_lower(&mut a, p)
        && (0..p).all(|j| a[j * p + j] * a[j * p + j] > 1e-10 * rtr[j * k + j])
}

/// Check the fit's large buffers against the memory budget before any is made:
/// the cross-products of [X y] (k²), each factor's per-level blocks
/// (levels · q · (q + k)), and the dense work of the criterion: a few k² for
/// one factor, 2 (m + k)² for several (m: the random effects of the factors
/// after the largest).
pub(super) fn check_memory(specs: &[FactorSpec], k: usize) -> Result<()> {
    use crate::budget;
    let k = k as u128;
    let per_level: u128 = specs
        .iter()
        .map(|s| (s.nlev * s.zcols.len()) as u128 * (s.zcols.len() as u128 + k))
        .sum();
    let dense = if specs.len() == 1 {
        4 * k * k
    } else {
        let sizes: Vec<u128> = specs
            .iter()
            .map(|s| (s.nlev * s.zcols.len()) as u128)
            .collect();
        let m = sizes.iter().sum::<u128>() - sizes.iter().max().copied().unwrap_or(0);
        2 * (m + k) * (m + k)
    };
    let what = if specs.len() == 1 {
        "the fit (per-group blocks and the fixed-effects system)".to_string()
    } else {
        "the fit (per-level blocks and the dense block of the crossed factors after the largest)"
            .to_string()
    };
    budget::check(&what, budget::doubles(k * k + per_level + dense))
}

/// Refuse a rank-deficient X, naming each aliased column and what it is a combination of.
/// With `means` (X centred about them), the intercept is orthogonal to the other
/// columns in `rtr`; an aliasing then involves it when the combination of means
/// leaves a constant.
///
/// Pivot-free Gram–Schmidt on the cross-products: L is the Cholesky factor of
/// the kept columns' block (L Lᵀ = G_KK, row-major, row r of length r + 1). A
/// new column j costs one triangular solve L w = G_Kj; its squared residual
/// after regression on the kept columns is G_jj − wᵀw. Kept, it appends the row
/// (wᵀ, √residual); aliased, its coefficients are L⁻ᵀ w. O(p³) in all.
pub(super) fn check_rank(
    rtr: &[f64],
    k: usize,
    xcols: &[DesignColumn],
    means: Option<&[f64]>,
) -> Result<()> {
    let p = xcols.len();
    if full_rank_by_blocked_cholesky(rtr, k, xcols) {
        return Ok(());
    }
    let mut kept: Vec<usize> = Vec::new();
    let mut l: Vec<f64> = Vec::new();
    let row = |r: usize| r * (r + 1) / 2;
    let mut problems = Vec::new();
    for j in 0..p {
        let sjj = rtr[j * k + j];
        if matches!(xcols[j].source, Source::Zero) || sjj == 0.0 {
            let why = if matches!(xcols[j].source, Source::Zero) {
                "is zero on every row (that level combination never occurs)".to_string()
            } else if kept
                .iter()
                .any(|&i| matches!(xcols[i].source, Source::Ones))
            {
                "is constant, so it is collinear with '(Intercept)'".to_string()
            } else {
                "is zero on every row".to_string()
            };
            problems.push(format!("'{}' {why}", xcols[j].name));
            continue;
        }
        let m = kept.len();
        let mut w: Vec<f64> = kept.iter().map(|&i| rtr[j * k + i]).collect();
        for r in 0..m {
            let lr = &l[row(r)..row(r) + r + 1];
            let s: f64 = lr[..r].iter().zip(&w[..r]).map(|(a, b)| a * b).sum();
            w[r] = (w[r] - s) / lr[r];
        }
        let resid = sjj - w.iter().map(|x| x * x).sum::<f64>();
        if resid > 1e-10 * sjj {
            l.extend_from_slice(&w);
            l.push(resid.sqrt());
            kept.push(j);
            continue;
        }
        // Aliased: coefficients on the kept columns, Lᵀ c = w.
        let mut coef = w;
        for r in (0..m).rev() {
            coef[r] /= l[row(r) + r];
            let c = coef[r];
            for (t, lt) in coef[..r].iter_mut().zip(&l[row(r)..row(r) + r]) {
                *t -= lt * c;
            }
        }
        let mut with: Vec<String> = kept
            .iter()
            .zip(coef.iter())
            .filter(|(&i, &c)| (c * c * rtr[i * k + i]).abs() > 1e-12 * sjj)
            .map(|(&i, _)| format!("'{}'", xcols[i].name))
            .collect();
        if let Some(mv) = means {
            let intercept = kept
                .iter()
                .position(|&i| matches!(xcols[i].source, Source::Ones));
            let constant = mv[j]
                - kept
                    .iter()
                    .zip(coef.iter())
                    .map(|(&i, c)| c * mv[i])
                    .sum::<f64>();
            if let Some(pos) = intercept {
                if constant.abs() > 1e-8 * mv[j].abs().max(sjj.sqrt())
                    && !with.contains(&"'(Intercept)'".to_string())
                {
                    with.insert(0, format!("'{}'", xcols[kept[pos]].name));
                }
            }
        }
        problems.push(format!(
            "'{}' is a linear combination of {}",
            xcols[j].name,
            with.join(", ")
        ));
    }
    if !problems.is_empty() {
        bail!("the fixed-effects design is rank deficient: {}; remove the aliased term(s) from the formula", problems.join("; "));
    }
    Ok(())
}

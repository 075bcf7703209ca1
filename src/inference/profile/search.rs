//! Profile confidence limits found directly, without the trace: for
//! `lmm_confint`, which needs the two crossings ζ(v) = ±z and no plot.
//!
//! Each side is a safeguarded Newton iteration on ζ(v) − target, every
//! iterate one constrained minimisation:
//!
//! ```text
//!   ζ'(v) = D'(v) / (2ζ),   D'(v) = ∂_v D(v, x*(v))   (envelope: `gradient`)
//!   v_{k+1} = v_k − (ζ_k − target)/ζ'_k
//! ```
//! from the first guess v̂ ± z·scale (`local`). While every iterate is short
//! of the target (ζ concave in v, as an SD's upper side) the steps move
//! outward, at most ten times the distance covered so far, clamped to the
//! parameter's range; once an iterate passes the target the crossing is
//! bracketed and the Newton step is kept inside the bracket (regula falsi
//! where it would leave it). Each minimisation starts from the nearest
//! iterate's optimum moved along the path x*(v) (the last two iterates'
//! secant, or H_xx⁻¹H_xv at the start). The result is the crossing to
//! |ζ − target| ≤ 1e-10 or ζ's rounding level if coarser (`tolerance`), as
//! `interval`'s search on the trace: either a probe that close, or a last
//! Newton step whose own error, ½|ζ''|δ² (ζ'' from the last two slopes, the
//! first being 1/scale at the estimate; taken 4x for safety), is within it —
//! the step is then taken unprobed.
//!
//! The side's bound is the limit where ζ does not reach the target there
//! (0 for an SD, ±1 for a correlation), or where the estimate lies on it;
//! None where an unbounded side does not reach it within `MAX_STEPS`
//! iterates or stops where the deviance cannot be evaluated (lme4: NA).

use super::constrained::Frame;
use super::trace::first_step;

/// Newton iterates per side at most.
const MAX_STEPS: usize = 60;

/// One constrained minimisation: ζ at v, its slope, and the optimum.
struct Probe {
    v: f64,
    zeta: f64,
    dzeta: f64,
    free: Vec<f64>,
}

/// The limit of parameter `index` where ζ crosses `target` (±z).
///
/// The constrained criterion can have several local minima at one value
/// (score_rs, whose correlation sits at −1): the Newton iterates, warm
/// started from one another, may follow a branch that is not the lowest.
/// So the limit found is confirmed by a minimisation from the estimate's
/// free variables; where that finds a lower deviance, the side is walked
/// from the estimate as `lmm_profile` walks it (`trace`), and the crossing
/// found on those points (`interval`).
pub fn limit(frame: &Frame, index: usize, target: f64) -> Option<f64> {
    let found = newton(frame, index, target);
    match found {
        Some(v) if !confirmed(frame, index, v, target) => {
            let t = super::trace::trace(frame, index, target.abs() + 0.5);
            super::interval::limit(frame, &t, target)
        }
        other => other,
    }
}

/// Whether a minimisation at v from the estimate's free variables agrees
/// that ζ(v) = target (a bound needs no confirmation).
fn confirmed(frame: &Frame, index: usize, v: f64, target: f64) -> bool {
    let par = &frame.params[index];
    if v == par.lower || v == par.upper {
        return true;
    }
    let (_, dev) = frame.minimise(par.kind, v, &frame.start(par.kind));
    let zeta = (dev - frame.base).max(0.0).sqrt();
    !dev.is_finite() || zeta >= target.abs() - 10.0 * tolerance(frame, target)
}

/// The Newton iteration of the module doc.
fn newton(frame: &Frame, index: usize, target: f64) -> Option<f64> {
    let par = &frame.params[index];
    let kind = par.kind;
    let dir = target.signum();
    let bound = if dir > 0.0 { par.upper } else { par.lower };
    let est = frame.estimates[index];
    if !est.is_finite() {
        return None;
    }
    if est == bound {
        return Some(bound);
    }
    let local = frame.local(kind);
    let lower = frame.lower(kind);
    let centre = Probe {
        v: est,
        zeta: 0.0,
        dzeta: f64::NAN,
        free: frame.start(kind),
    };
    let scale = local.scale.unwrap_or_else(|| first_step(frame, index, 1.0));
    let clamp = |v: f64| v.max(par.lower).min(par.upper);
    let mut v = clamp(est + target * scale);
    let mut start = moved(&centre.free, &local.path, v - est, &lower);
    let mut inside = centre;
    let mut outside: Option<Probe> = None;
    let mut previous: Option<(f64, Vec<f64>)> = None;
    // ζ' at the estimate is 1/scale (`local`)
    let mut slope_before: Option<(f64, f64)> = local.scale.map(|s| (est, 1.0 / s));
    for _ in 0..MAX_STEPS {
        let Some(pt) = probe(frame, index, v, &start) else {
            // the deviance cannot be evaluated here: back off toward the inside once
            if outside.is_none() && (v - inside.v).abs() > 1e-3 * scale {
                v = 0.5 * (v + inside.v);
                start = inside.free.clone();
                continue;
            }
            return None;
        };
        let gap = pt.zeta - target;
        if gap.abs() <= tolerance(frame, target) {
            return Some(pt.v);
        }
        let newton = pt.v - gap / pt.dzeta;
        // Converged without another probe: the Newton step's own error,
        // ½|ζ''|δ² with ζ'' from the last two slopes (4x for safety), is
        // within the tolerance.
        if let Some((pv, pd)) = slope_before {
            let curvature = ((pt.dzeta - pd) / (pt.v - pv)).abs();
            let step = newton - pt.v;
            let inside_range = newton >= par.lower && newton <= par.upper;
            if inside_range
                && curvature.is_finite()
                && 2.0 * curvature * step * step <= tolerance(frame, target)
            {
                return Some(newton);
            }
        }
        slope_before = pt.dzeta.is_finite().then_some((pt.v, pt.dzeta));
        let last = (pt.v, pt.free.clone());
        let next = if dir * gap > 0.0 {
            outside = Some(pt);
            let o = outside.as_ref().unwrap();
            bracketed(&inside, o, newton, target)
        } else {
            if pt.v == bound {
                return Some(bound);
            }
            let covered = (pt.v - est).abs();
            let reach = 10.0 * covered;
            let step = newton - pt.v;
            let next = if let Some(o) = &outside {
                bracketed(&pt, o, newton, target)
            } else if step.is_finite() && dir * step > 0.0 {
                pt.v + dir * step.abs().min(reach)
            } else {
                pt.v + dir * covered
            };
            inside = pt;
            next
        };
        let next = clamp(next);
        let span = outside
            .as_ref()
            .map_or(f64::INFINITY, |o| (o.v - inside.v).abs());
        if span <= 1e-12 * inside.v.abs().max(scale) || next == v {
            return Some(
                if outside
                    .as_ref()
                    .is_some_and(|o| (o.zeta - target).abs() < (inside.zeta - target).abs())
                {
                    outside.unwrap().v
                } else {
                    inside.v
                },
            );
        }
        // warm start: the nearer probe's optimum, moved along the last secant of the path
        let near = match &outside {
            Some(o) if (o.v - next).abs() < (inside.v - next).abs() => (o.v, &o.free),
            _ => (inside.v, &inside.free),
        };
        let path: Vec<f64> = match &previous {
            Some((pv, px)) if *pv != last.0 => last
                .1
                .iter()
                .zip(px)
                .map(|(a, b)| (a - b) / (last.0 - pv))
                .collect(),
            _ => local.path.clone(),
        };
        start = moved(near.1, &path, next - near.0, &lower);
        previous = Some(last);
        v = next;
    }
    None
}

/// How close to the target ζ is asked to come: 1e-10, or the rounding level
/// of ζ where that is coarser. The criterion sums n logarithms, so D carries
/// an error of about 1e-13 |D| (measured: ±1e-8 at D = 2.4e6, 10⁶ rows),
/// which is 1e-13 |D| / (2|ζ|) in ζ = √(D − D̂).
pub(super) fn tolerance(frame: &Frame, target: f64) -> f64 {
    (1e-13 * frame.base.abs() / (2.0 * target.abs())).max(1e-10)
}

/// The next iterate inside the bracket (a inside, b outside): Newton's `newton`
/// if it lies strictly within, else the secant of the two ends.
fn bracketed(a: &Probe, b: &Probe, newton: f64, target: f64) -> f64 {
    let (lo, hi) = (a.v.min(b.v), a.v.max(b.v));
    if newton > lo && newton < hi {
        return newton;
    }
    let (fa, fb) = (a.zeta - target, b.zeta - target);
    let secant = b.v - fb * (b.v - a.v) / (fb - fa);
    if secant > lo && secant < hi {
        secant
    } else {
        0.5 * (lo + hi)
    }
}

/// x + path·dv, kept on the bounds.
fn moved(x: &[f64], path: &[f64], dv: f64, lower: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(path)
        .zip(lower)
        .map(|((a, p), l)| (a + p * dv).max(*l))
        .collect()
}

/// ζ at v (minimised from `start`) and dζ/dv = D'(v)/(2ζ).
fn probe(frame: &Frame, index: usize, v: f64, start: &[f64]) -> Option<Probe> {
    let kind = frame.params[index].kind;
    let before = frame.evaluations.get();
    let (free, dev) = frame.minimise(kind, v, start);
    if std::env::var_os("LMM_TRACE").is_some() {
        eprintln!(
            "probe v={v} dev={dev} evals={}",
            frame.evaluations.get() - before
        );
    }
    if !dev.is_finite() {
        return None;
    }
    let p_hat = frame.estimates[index];
    let rise = (dev - frame.base).max(0.0);
    let zeta = if v == p_hat {
        0.0
    } else {
        (v - p_hat).signum() * rise.sqrt()
    };
    let dv = frame.slope_at_optimum(kind, v, &free);
    let dzeta = if zeta != 0.0 {
        dv / (2.0 * zeta)
    } else {
        f64::NAN
    };
    Some(Probe {
        v,
        zeta,
        dzeta,
        free,
    })
}

//! The profile of one parameter: ζ at a sequence of values either side of the
//! estimate, as lme4's `profile.merMod` steps.
//!
//! ```text
//!   ζ(v) = sign(v − p̂) √(D(v) − D(p̂)),   D(v) = min over the other parameters of the ML deviance
//! ```
//! From p̂ each side is walked outward: a first small step (1% of |p̂|, or a
//! unit of the parameter's scale; δ·SE for a fixed effect), then secant steps
//! aimed at a rise of δ = cutoff/8 in |ζ| (lme4's `delta.cutoff`),
//! `v_{k+1} = v_k ± δ (v_k − v_{k−1})/(ζ_k − ζ_{k−1})`, at most ten times
//! the previous step and doubling it where ζ does not rise, clamped to the
//! parameter's range. A side ends once |ζ| exceeds the cutoff
//! √χ²_{1−α}(n_par) (α = `alphamax` = 0.01, n_par the number of parameters:
//! lme4's cutoff), at the range's end, or where the deviance cannot be
//! evaluated. Each point's minimisation starts from the previous point's.

use super::constrained::Frame;
use super::parameters::{Kind, Parameter};

/// One point of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePoint {
    /// the profiled parameter's value
    pub value: f64,
    pub zeta: f64,
    /// every parameter at this point (the conditional optimum), in the order of `Profile::parameters`
    pub parameters: Vec<f64>,
    /// the minimiser's free variables (a warm start for a nearby value)
    pub(crate) free: Vec<f64>,
}

/// The profile of one parameter, its points sorted by value.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub parameter: Parameter,
    /// index into `Profile::parameters`
    pub index: usize,
    /// the ML estimate (ζ = 0)
    pub estimate: f64,
    pub points: Vec<TracePoint>,
}

/// Steps per side at most.
const MAX_STEPS: usize = 60;

/// ζ at v, minimising from `start`; None where the deviance cannot be evaluated.
pub fn zeta_at(frame: &Frame, index: usize, v: f64, start: &[f64]) -> Option<TracePoint> {
    let kind = frame.params[index].kind;
    let (free, dev) = frame.minimise(kind, v, start);
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
    let mut parameters = frame.parameters_at(kind, v, &free)?;
    parameters[index] = v; // as fixed (the round trip through θ may differ in the last digit)
    Some(TracePoint {
        value: v,
        zeta,
        parameters,
        free,
    })
}

/// The profile of parameter `index` out to |ζ| = `cutoff`.
pub fn trace(frame: &Frame, index: usize, cutoff: f64) -> Trace {
    let parameter = frame.params[index].clone();
    let estimate = frame.estimates[index];
    let centre = TracePoint {
        value: estimate,
        zeta: 0.0,
        parameters: frame.estimates.clone(),
        free: frame.start(parameter.kind),
    };
    let mut points = Vec::new();
    if estimate.is_finite() {
        let mut below = walk(frame, index, &centre, -1.0, cutoff);
        below.reverse();
        points = below;
        points.push(centre.clone());
        points.extend(walk(frame, index, &centre, 1.0, cutoff));
    }
    Trace {
        parameter,
        index,
        estimate,
        points,
    }
}

/// The first step from the estimate: small against the parameter's scale.
pub(super) fn first_step(frame: &Frame, index: usize, delta: f64) -> f64 {
    let p_hat = frame.estimates[index];
    match frame.params[index].kind {
        Kind::Fixed { j } => delta * frame.se[j],
        Kind::Cor { .. } => 0.01 * (1.0 - p_hat.abs()).max(0.01),
        Kind::Sigma => 0.01 * p_hat,
        // the unit of sd_i is σ T_ii (θ = 1 on the problem's scale)
        Kind::Sd { block, i } => {
            (0.01 * p_hat).max(1e-3 * frame.sigma * frame.blocks[block].tdiag[i])
        }
    }
}

/// One side (`dir` = ±1) from the centre outward.
fn walk(
    frame: &Frame,
    index: usize,
    centre: &TracePoint,
    dir: f64,
    cutoff: f64,
) -> Vec<TracePoint> {
    let par = &frame.params[index];
    let bound = if dir < 0.0 { par.lower } else { par.upper };
    let mut out: Vec<TracePoint> = Vec::new();
    if centre.value == bound {
        return out;
    }
    let delta = cutoff / 8.0;
    let mut step = first_step(frame, index, delta);
    let mut prev = centre.clone();
    for _ in 0..MAX_STEPS {
        let v = clamp(prev.value + dir * step, par.lower, par.upper);
        let Some(pt) = zeta_at(frame, index, v, &prev.free) else {
            break;
        };
        let rise = dir * (pt.zeta - prev.zeta);
        let moved = (pt.value - prev.value).abs();
        let done = pt.zeta.abs() >= cutoff || v == bound;
        out.push(pt.clone());
        if done {
            break;
        }
        step = if rise > 1e-6 {
            (delta * moved / rise).min(10.0 * moved)
        } else {
            2.0 * moved
        };
        prev = pt;
    }
    out
}

fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    v.max(lo).min(hi)
}

//! lme4's profile likelihood (`profile.merMod`) and profile confidence
//! intervals (`confint.thpr`), from the statistics a model value keeps.
//!
//! As lme4, the profile is of the **ML** deviance, also for a REML fit (lme4
//! refits by ML first), on the scale `sdcor`: per factor and block the SDs
//! and correlations of the random effects on the data scale, then σ, then
//! every fixed effect on the data scale. For a parameter p with ML estimate p̂,
//!
//! ```text
//!   ζ(v) = sign(v − p̂) √(D(v) − D̂),   D(v) = min { ML deviance : p = v }
//! ```
//! the minimum over every other parameter (`constrained`); a (1 − α)
//! interval is {v : |ζ(v)| ≤ Φ⁻¹(1 − α/2)} (`interval`).
//!
//! - `parameters`: the sd/cor/σ parameterisation and its map to θ.
//! - `constrained`: the ML refit, and D(v) as one bounded minimisation.
//! - `trace`: the points of one parameter's profile.
//! - `interval`: the confidence limits, found on the exact profile.
//!
//! Nothing here reads rows: every evaluation is one of the stored
//! likelihood's. A `Profile` owns the refitted likelihood, so its intervals
//! (and ζ at any further value) are computed on the exact profile, not
//! interpolated between the trace's points.
//!
//! Use, from a model value's two parts:
//!
//! ```text
//!   let pr = profile(&model, &stored, None)?;          // or Some("sd_Days|Subject")
//!   for t in &pr.traces { t.parameter.group_var, t.parameter.term, t.points[i].value, .zeta }
//!   let ci = intervals(&pr, 0.95);                     // Interval { parameter, estimate, lower, upper }
//! ```
//! (a `Profile` holds a `Box<dyn Likelihood>`: use it on the thread that made it.)
//!
//! Where this differs from lme4's numbers, and why (tests/profile.rs measures it):
//!
//! - lme4's constrained minimisations sometimes stop short at the far points
//!   of a profile (its ζ there is larger than the minimum's; checked by
//!   evaluating lme4's own conditional optimum, which lme4 stores, under this
//!   likelihood: it is worth exactly lme4's ζ, and the minimum here is lower).
//! - lme4's limits interpolate a spline through its points; here the limit is
//!   the exact crossing (|ζ(limit) ∓ z| ≤ 1e-10, or ζ's rounding level at large n), so the two differ by the
//!   spline's error (up to 2.4e-4 relative in the fixtures).
//! - A correlation whose profile does not reach ±z has the limit −1 or 1, an
//!   SD whose profile reaches 0 first has the lower limit 0, as lme4 reports
//!   them; an unbounded parameter whose profile does not reach ±z has None
//!   (lme4: NA). Where lme4's spline of a non-monotonic profile fails, lme4
//!   gives NA (sitka_rs, score_rs); the exact profile gives a limit.
//! - The profile of a correlation includes the points where either of its SDs
//!   is 0 (the constraint is void there, at the SD profiles' deviance at 0),
//!   as lme4's parameter space does: orthodont's correlation profile is capped
//!   at |ζ| = 1.42 by the slope SD at 0, so its limits are −1 and 1 (lme4's).

mod constrained;
mod gradient;
mod interval;
mod local;
mod parameters;
mod search;
#[cfg(test)]
mod tests;
mod trace;

pub use interval::{chisq_quantile, normal_quantile, Interval};
pub use parameters::{Kind, Parameter};
pub use trace::{Trace, TracePoint};

use crate::error::Result;
use crate::inference::stored::Stored;
use crate::model::Model;
use constrained::Frame;

/// lme4's `alphamax`: the traces reach |ζ| = √χ²_{1−alphamax}(number of parameters).
pub const ALPHA_MAX: f64 = 0.01;

/// A model's profile: the ML fit it is built around and the traces.
pub struct Profile {
    frame: Frame,
    /// the profiled parameters' traces, in lme4's order
    pub traces: Vec<Trace>,
    /// the |ζ| the traces reach
    pub cutoff: f64,
}

/// Profile one parameter (`parameter`: see `Profile::find`) or, with None,
/// every parameter. `model` and `stored` are the two parts of one model
/// value (`Model::from_bytes`, `model::stats_of`).
pub fn profile(model: &Model, stored: &Stored, parameter: Option<&str>) -> Result<Profile> {
    let frame = Frame::new(model, stored)?;
    let cutoff = chisq_quantile(1.0 - ALPHA_MAX, frame.params.len() as f64).sqrt();
    let mut pr = Profile {
        frame,
        traces: Vec::new(),
        cutoff,
    };
    let which: Vec<usize> = match parameter {
        Some(name) => vec![pr.find(name)?],
        None => (0..pr.frame.params.len()).collect(),
    };
    for k in which {
        pr.frame.evaluations.set(0);
        let t = trace::trace(&pr.frame, k, cutoff);
        let used = pr.frame.evaluations.get();
        if std::env::var_os("LMM_TRACE").is_some() {
            eprintln!(
                "lmm: profile of {} ({} points, {used} evaluations)",
                t.parameter.name,
                t.points.len()
            );
        }
        if used > constrained::MAX_EVALUATIONS {
            crate::bail!(
                "the profile of '{}' did not settle within {} evaluations of the likelihood (it is ill-behaved there); \
                 use method := 'Wald' or 'boot' for its interval",
                t.parameter.name,
                constrained::MAX_EVALUATIONS
            );
        }
        pr.traces.push(t);
    }
    Ok(pr)
}

/// The profile intervals at `level` of every parameter, found directly
/// (`search`: no trace, each limit a few constrained minimisations), as
/// `intervals(&profile(..)?, level)` finds them on the traces.
pub fn confint(model: &Model, stored: &Stored, level: f64) -> Result<Vec<Interval>> {
    let frame = Frame::new(model, stored)?;
    let z = normal_quantile(0.5 * (1.0 + level));
    let mut out = Vec::with_capacity(frame.params.len());
    for (index, parameter) in frame.params.iter().enumerate() {
        frame.evaluations.set(0);
        let (lower, upper) = if z.is_finite() {
            (
                search::limit(&frame, index, -z),
                search::limit(&frame, index, z),
            )
        } else {
            (None, None)
        };
        let used = frame.evaluations.get();
        if std::env::var_os("LMM_TRACE").is_some() {
            eprintln!(
                "lmm: profile limits of {} ({used} evaluations)",
                parameter.name
            );
        }
        if used > constrained::MAX_EVALUATIONS {
            crate::bail!(
                "the profile of '{}' did not settle within {} evaluations of the likelihood (it is ill-behaved there); \
                 use method := 'Wald' or 'boot' for its interval",
                parameter.name,
                constrained::MAX_EVALUATIONS
            );
        }
        out.push(Interval {
            parameter: parameter.clone(),
            index,
            estimate: frame.estimates[index],
            level,
            lower,
            upper,
        });
    }
    Ok(out)
}

/// The profile intervals at `level` of every trace of `profile`.
pub fn intervals(profile: &Profile, level: f64) -> Vec<Interval> {
    profile.intervals(level)
}

impl Profile {
    /// Every parameter of the model, in lme4's order.
    pub fn parameters(&self) -> &[Parameter] {
        &self.frame.params
    }

    /// The ML estimates (the profile's centre), in the order of `parameters`.
    pub fn estimates(&self) -> &[f64] {
        &self.frame.estimates
    }

    /// The ML deviance at the ML estimate (ζ = 0).
    pub fn deviance(&self) -> f64 {
        self.frame.base
    }

    /// A parameter by name: lme4's (`sd_Days|Subject`, `cor_Days.(Intercept)|Subject`,
    /// `sigma`, a fixed effect), the tidy table's `term|group_var`, or its term
    /// alone where that names one parameter.
    pub fn find(&self, name: &str) -> Result<usize> {
        let params = &self.frame.params;
        let exact = |p: &Parameter| {
            p.name == name
                || p.group_var
                    .as_ref()
                    .is_some_and(|g| format!("{}|{g}", p.term) == name)
        };
        if let Some(k) = params.iter().position(exact) {
            return Ok(k);
        }
        let by_term: Vec<usize> = (0..params.len())
            .filter(|&k| params[k].term == name)
            .collect();
        match by_term.len() {
            1 => Ok(by_term[0]),
            0 => crate::bail!(
                "the model has no parameter '{name}' (parameters: {})",
                self.names()
            ),
            _ => crate::bail!(
                "'{name}' names a term of several grouping factors; write it as 'term|group' ({})",
                self.names()
            ),
        }
    }

    fn names(&self) -> String {
        self.frame
            .params
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// ζ of parameter `index` at `value`: one constrained minimisation,
    /// started from the nearest point of its trace (or the estimate).
    pub fn zeta(&self, index: usize, value: f64) -> Option<f64> {
        let kind = self.frame.params[index].kind;
        let nearest = self.traces.iter().find(|t| t.index == index).and_then(|t| {
            t.points
                .iter()
                .min_by(|a, b| (a.value - value).abs().total_cmp(&(b.value - value).abs()))
        });
        let start = nearest.map_or_else(|| self.frame.start(kind), |p| p.free.clone());
        trace::zeta_at(&self.frame, index, value, &start).map(|p| p.zeta)
    }

    /// ζ of parameter `index` at a full parameter vector `all` (every
    /// parameter, in the order of `parameters`), the deviance not minimised:
    /// what another implementation's profile point is worth under this
    /// likelihood (|ζ| at least that of the profile at the same value).
    pub fn zeta_at_parameters(&self, index: usize, all: &[f64]) -> Option<f64> {
        if all.len() != self.frame.params.len() {
            return None;
        }
        let rise = (self.frame.deviance_at(all)? - self.frame.base).max(0.0);
        Some((all[index] - self.frame.estimates[index]).signum() * rise.sqrt())
    }

    /// The intervals at `level` (e.g. 0.95) of every trace.
    pub fn intervals(&self, level: f64) -> Vec<Interval> {
        self.traces
            .iter()
            .map(|t| interval::interval(&self.frame, t, level))
            .collect()
    }
}

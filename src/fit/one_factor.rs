//! One grouping factor: quasi-Newton on the exact gradient of `reml::Problem`
//! from the moment estimate (or lme4's θ = I where that is better), the
//! derivative-free method where it stalls.

use super::estimates::{snap_to_boundary, Estimates};
use super::setup::Setup;
use crate::accumulator::Accumulator;
use crate::bail;
use crate::error::Result;
use crate::optimizer::{self, Settings};
use crate::reml::Problem;

pub(super) fn estimate(
    acc: &Accumulator,
    setup: &Setup,
    trace: &dyn Fn(&str),
) -> Result<Estimates> {
    let (n, p, specs) = (setup.n, setup.p, &setup.specs);
    let rtr = setup.rtr.clone();
    let spec = &specs[0];
    let q = spec.zcols.len();
    let (ztz, ztr) = setup.level_blocks(acc, spec);
    let problem = Problem {
        n,
        p,
        q,
        groups: spec.nlev,
        ztz,
        ztr,
        rtr,
        method: acc.options.method,
        shards: None,
    };
    trace(&format!("setup ({} groups)", spec.nlev));
    optimize(problem, &spec.layout)
}

/// The optimum of `problem` (its groups here or on shards) for θ laid out as `layout`.
pub(crate) fn optimize(problem: Problem, layout: &crate::theta::ThetaLayout) -> Result<Estimates> {
    let lower = layout.lower();
    let pos = layout.positions();
    let mut objective = |theta: &[f64]| problem.deviance_and_gradient(&layout.lambda(theta), &pos);
    // Start at the moment estimate when it beats lme4's start θ = I.
    let mut start = layout.start();
    let mut extra = 0;
    let mut near = false;
    if let Some(m) = crate::start::moment_theta(&problem, layout) {
        extra = 2;
        if problem.deviance(&layout.lambda(&m)) < problem.deviance(&layout.lambda(&start)) {
            start = m;
            near = true;
        }
    }
    let mut outcome = optimizer::minimize_bfgs(&mut objective, &start, &lower, 1000, near, 1e-13);
    outcome = optimizer::leave_saddles(
        &mut objective,
        outcome,
        &lower,
        &layout.diagonal(),
        1000,
        1e-13,
    );
    outcome.evaluations += extra;
    if !outcome.converged {
        // Fall back on the derivative-free method from where the quasi-Newton one stopped.
        let mut dev = |theta: &[f64]| problem.deviance(&layout.lambda(theta));
        let start = if outcome.f.is_finite() {
            outcome.x.clone()
        } else {
            layout.start()
        };
        let nm = optimizer::minimize(
            &mut dev,
            &start,
            &lower,
            &layout.diagonal(),
            &Settings::default(),
        );
        let evaluations = outcome.evaluations + nm.evaluations;
        if nm.f <= outcome.f || !outcome.f.is_finite() {
            outcome = nm;
        }
        outcome.evaluations = evaluations;
    }
    let mut theta = outcome.x.clone();
    let diagonal = layout.diagonal();
    snap_to_boundary(&mut theta, &mut outcome.f, &diagonal, &|t: &[f64]| {
        problem.deviance(&layout.lambda(t))
    });
    let lambda = layout.lambda(&theta);
    let Some(sol) = problem.solution(&lambda) else {
        bail!("the fit failed: the model matrices are not positive definite at the optimum");
    };
    let Problem { ztz, ztr, rtr, .. } = problem;
    Ok(Estimates {
        blocks: vec![(ztz, ztr)],
        pairs: Vec::new(),
        rtr,
        deviance: sol.deviance,
        beta: sol.beta,
        sigma2: sol.sigma2,
        vcov: sol.vcov,
        lambdas: vec![lambda],
        blups: vec![sol.blups],
        cond_cov: vec![sol.cond_cov],
        theta,
        diagonal,
        converged: outcome.converged,
        evaluations: outcome.evaluations,
    })
}

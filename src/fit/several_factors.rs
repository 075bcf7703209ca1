//! Several grouping factors (crossed or nested): the blocked likelihood of
//! `crossed`, quasi-Newton on its gradient from the factors' moment estimates.

use super::columns::cross_group;
use super::estimates::{snap_to_boundary, Estimates};
use super::setup::Setup;
use crate::accumulator::Accumulator;
use crate::bail;
use crate::crossed;
use crate::error::Result;
use crate::optimizer::{self, Settings};
use crate::reml::Problem;
use crate::theta::ThetaLayout;

/// Several grouping factors: the blocked likelihood of `crossed`, optimised
/// without derivatives (bounded Nelder–Mead with restarts, as lme4's own
/// derivative-free optimizers do).
pub(super) fn estimate(
    acc: &Accumulator,
    setup: &Setup,
    trace: &dyn Fn(&str),
) -> Result<Estimates> {
    let (n, p, specs) = (setup.n, setup.p, &setup.specs[..]);
    let rtr = setup.rtr.clone();
    // Elimination order: most levels first.
    let mut elim: Vec<usize> = (0..specs.len()).collect();
    elim.sort_by_key(|&i| std::cmp::Reverse(specs[i].nlev));
    let pos_of = |si: usize| elim.iter().position(|&e| e == si).unwrap();
    let factors: Vec<crossed::Factor> = elim
        .iter()
        .map(|&si| {
            let (ztz, ztr) = setup.level_blocks(acc, &specs[si]);
            crossed::Factor {
                q: specs[si].zcols.len(),
                nlev: specs[si].nlev,
                ztz,
                ztr,
                off: 0,
            }
        })
        .collect();
    let mut pairs = Vec::new();
    for cells in &acc.cells {
        // cells.a / cells.b index acc.factors; map to spec and elimination positions.
        let sa = specs.iter().position(|s| s.index == cells.a).unwrap();
        let sb = specs.iter().position(|s| s.index == cells.b).unwrap();
        let (pa, pb) = (pos_of(sa), pos_of(sb));
        // Store with the earlier-eliminated factor first.
        let (first, second, swap) = if pa < pb {
            (sa, sb, false)
        } else {
            (sb, sa, true)
        };
        let (qa, qb) = (specs[first].zcols.len(), specs[second].zcols.len());
        let mut blocks = Vec::with_capacity(cells.keys.len() * qa * qb);
        let mut keys = Vec::with_capacity(cells.keys.len());
        for (ci, &(la, lb)) in cells.keys.iter().enumerate() {
            let m = cells.store.group(ci);
            for c in 0..qb {
                for r in 0..qa {
                    blocks.push(cross_group(
                        &m,
                        &specs[first].zc[r],
                        &specs[second].zc[c],
                        &acc.zindex,
                    ));
                }
            }
            keys.push(if swap { (lb, la) } else { (la, lb) });
        }
        pairs.push(crossed::Pair {
            a: pa.min(pb),
            b: pa.max(pb),
            cells: keys,
            blocks,
        });
    }
    // A start per factor from the one-factor moment estimate (each factor on
    // its own, then corrected for the other factors' variance inside its
    // residual; see `start::crossed_correction`).
    let moment_estimates: Option<Vec<(Vec<f64>, f64)>> = elim
        .iter()
        .zip(factors.iter())
        .map(|(&si, fac)| {
            let single = Problem {
                n,
                p,
                q: fac.q,
                groups: fac.nlev,
                ztz: fac.ztz.clone(),
                ztr: fac.ztr.clone(),
                rtr: rtr.clone(),
                method: acc.options.method,
                shards: None,
            };
            crate::start::moment_theta_and_sigma2(&single, &specs[si].layout)
        })
        .collect();
    let mut problem = crossed::CrossedProblem::new(n, p, acc.options.method, factors, pairs, rtr);
    trace(&format!(
        "setup ({} factors, {} dense columns)",
        specs.len(),
        problem.m
    ));
    // θ: the factors' layouts concatenated in elimination order.
    let layouts: Vec<&ThetaLayout> = elim.iter().map(|&si| &specs[si].layout).collect();
    let mut lower = Vec::new();
    let mut start: Vec<f64> = Vec::new();
    let mut diagonal = Vec::new();
    for l in &layouts {
        let off = lower.len();
        diagonal.extend(l.diagonal().iter().map(|i| i + off));
        lower.extend(l.lower());
        start.extend(l.start());
    }
    let lambdas = |theta: &[f64]| -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        let mut off = 0;
        for l in &layouts {
            out.push(l.lambda(&theta[off..off + l.len()]));
            off += l.len();
        }
        out
    };
    let positions: Vec<Vec<(usize, usize)>> = layouts.iter().map(|l| l.positions()).collect();
    let evals = std::cell::Cell::new(0usize);
    let dev = |theta: &[f64]| {
        evals.set(evals.get() + 1);
        problem.deviance(&lambdas(theta))
    };
    // Quasi-Newton on the exact gradient, from a Newton step on its finite-
    // difference Hessian. The entries of a singular block of two or more terms
    // (no Λ⁻¹ for the formula) come from differences: forward ones while the
    // gradient is large, central ones near the optimum.
    let mut last_gnorm = f64::INFINITY;
    let mut fg = |theta: &[f64]| -> Option<(f64, Vec<f64>)> {
        let (f0, mut g) = match problem.deviance_and_gradient(&lambdas(theta), &positions) {
            Some((f, g)) => {
                evals.set(evals.get() + 1);
                (f, g)
            }
            None => (dev(theta), vec![f64::NAN; theta.len()]),
        };
        if !f0.is_finite() {
            return None;
        }
        // Entries the formula cannot give (a singular block): differences.
        let central = last_gnorm <= 1e-5 * f0.abs().max(1.0);
        for j in 0..theta.len() {
            if !g[j].is_nan() {
                continue;
            }
            let h = if central { 1e-5 } else { 1e-7 } * theta[j].abs().max(0.1);
            let mut tp = theta.to_vec();
            tp[j] += h;
            let fp = dev(&tp);
            if central && theta[j] - h >= lower[j] {
                let mut tm = theta.to_vec();
                tm[j] -= h;
                g[j] = (fp - dev(&tm)) / (2.0 * h);
            } else {
                g[j] = (fp - f0) / h;
            }
        }
        last_gnorm = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        Some((f0, g))
    };
    if let Some(est) = &moment_estimates {
        let corrected = crate::start::crossed_correction(est, &layouts);
        let own: Vec<f64> = est.iter().flat_map(|(t, _)| t.iter().copied()).collect();
        let at_identity = dev(&start);
        // The corrected start first; the uncorrected one only if that does not beat θ = I.
        for m in corrected.into_iter().chain(std::iter::once(own)) {
            if dev(&m) < at_identity {
                start = m;
                break;
            }
        }
    }
    let mut outcome = optimizer::minimize_bfgs(&mut fg, &start, &lower, 500, true, 1e-9);
    outcome = optimizer::leave_saddles(&mut fg, outcome, &lower, &diagonal, 500, 1e-9);
    if !outcome.converged {
        let mut dev_mut = |theta: &[f64]| dev(theta);
        let nm = optimizer::minimize(
            &mut dev_mut,
            &outcome.x,
            &lower,
            &diagonal,
            &Settings::default(),
        );
        if nm.f <= outcome.f {
            outcome = nm;
        }
    }
    outcome.evaluations = evals.get();
    let mut theta = outcome.x.clone();
    snap_to_boundary(&mut theta, &mut outcome.f, &diagonal, &|t: &[f64]| {
        problem.deviance(&lambdas(t))
    });
    let lam = lambdas(&theta);
    let Some(sol) = problem.solution(&lam) else {
        bail!("the fit failed: the model matrices are not positive definite at the optimum");
    };
    let blocks_back: Vec<(Vec<f64>, Vec<f64>)> = problem
        .factors
        .iter_mut()
        .map(|f| (std::mem::take(&mut f.ztz), std::mem::take(&mut f.ztr)))
        .collect();
    let pairs_back = problem
        .pairs
        .iter_mut()
        .map(|p| crate::inference::stored::PairStats {
            a: p.a,
            b: p.b,
            cells: std::mem::take(&mut p.cells),
            blocks: std::mem::take(&mut p.blocks),
        })
        .collect();
    let rtr_back = std::mem::take(&mut problem.rtr);
    // Back to spec order.
    let mut lambdas_spec = vec![Vec::new(); specs.len()];
    let mut blups = vec![Vec::new(); specs.len()];
    let mut cond = vec![Vec::new(); specs.len()];
    for (pi, &si) in elim.iter().enumerate() {
        lambdas_spec[si] = lam[pi].clone();
        blups[si] = sol.blups[pi].clone();
        cond[si] = sol.cond_cov[pi].clone();
    }
    Ok(Estimates {
        blocks: blocks_back,
        pairs: pairs_back,
        rtr: rtr_back,
        deviance: sol.deviance,
        beta: sol.beta,
        sigma2: sol.sigma2,
        vcov: sol.vcov,
        lambdas: lambdas_spec,
        blups,
        cond_cov: cond,
        theta,
        diagonal,
        converged: outcome.converged,
        evaluations: outcome.evaluations,
    })
}

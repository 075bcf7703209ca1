//! Bound-constrained minimisation of the profiled deviance over θ.
//!
//! Nelder–Mead on the projected problem f(max(θ, lower)): vertices are kept
//! feasible, so a variance that belongs on its bound lands on it exactly
//! (lme4 reports such fits as singular). The simplex is restarted around the
//! best point until a restart no longer improves the objective, which guards
//! against the method's known premature collapse. Then each diagonal entry
//! that is small is tried at exactly 0 with the rest re-optimised, so that
//! boundary optima are reached exactly, not approached.

use crate::dense::invert_spd;

pub struct Outcome {
    pub x: Vec<f64>,
    pub f: f64,
    pub evaluations: usize,
    pub converged: bool,
}

pub struct Settings {
    pub ftol_abs: f64,
    pub xtol_abs: f64,
    pub max_evaluations: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ftol_abs: 1e-10,
            xtol_abs: 1e-7,
            max_evaluations: 20_000,
        }
    }
}

struct Counted<'a> {
    f: &'a mut dyn FnMut(&[f64]) -> f64,
    lower: &'a [f64],
    evaluations: usize,
}

impl Counted<'_> {
    fn project(&self, x: &mut [f64]) {
        for (v, &l) in x.iter_mut().zip(self.lower) {
            if *v < l {
                *v = l;
            }
        }
    }
    fn eval(&mut self, x: &[f64]) -> f64 {
        self.evaluations += 1;
        crate::cancel::checkpoint();
        let v = (self.f)(x);
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    }
}

/// One Nelder–Mead run from `x0` with initial step `step`; `fixed[i]` pins coordinate i.
fn nelder_mead(
    c: &mut Counted,
    x0: &[f64],
    step: f64,
    fixed: &[bool],
    s: &Settings,
    budget: usize,
) -> (Vec<f64>, f64, bool) {
    let free: Vec<usize> = (0..x0.len()).filter(|&i| !fixed[i]).collect();
    let n = free.len();
    let f0 = c.eval(x0);
    if n == 0 {
        return (x0.to_vec(), f0, true);
    }
    let start = c.evaluations;
    let mut simplex: Vec<(Vec<f64>, f64)> = vec![(x0.to_vec(), f0)];
    for &i in &free {
        let mut x = x0.to_vec();
        let h = step * x0[i].abs().max(1.0);
        x[i] += h;
        c.project(&mut x);
        if x[i] == x0[i] {
            x[i] -= h;
        }
        let fx = c.eval(&x);
        simplex.push((x, fx));
    }
    let (alpha, gamma, rho, sigma) = (1.0, 2.0, 0.5, 0.5);
    let mut converged = false;
    while c.evaluations - start < budget {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let fspread = simplex[n].1 - simplex[0].1;
        let xspread = simplex[1..]
            .iter()
            .map(|(x, _)| {
                free.iter()
                    .map(|&i| (x[i] - simplex[0].0[i]).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        let ftol = s.ftol_abs.max(1e-15 * simplex[0].1.abs());
        if fspread.abs() <= ftol && xspread <= s.xtol_abs || xspread <= s.xtol_abs * 1e-3 {
            converged = true;
            break;
        }
        let mut centroid = simplex[0].0.clone();
        for &i in &free {
            centroid[i] = simplex[..n].iter().map(|(x, _)| x[i]).sum::<f64>() / n as f64;
        }
        let along = |t: f64, worst: &[f64]| {
            let mut x = centroid.clone();
            for &i in &free {
                x[i] = centroid[i] + t * (worst[i] - centroid[i]);
            }
            x
        };
        let worst = simplex[n].0.clone();
        let mut xr = along(-alpha, &worst);
        c.project(&mut xr);
        let fr = c.eval(&xr);
        if fr < simplex[0].1 {
            let mut xe = along(-gamma, &worst);
            c.project(&mut xe);
            let fe = c.eval(&xe);
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
        } else {
            let (mut xc, outside) = if fr < simplex[n].1 {
                (along(-rho, &worst), true)
            } else {
                (along(rho, &worst), false)
            };
            c.project(&mut xc);
            let fc = c.eval(&xc);
            if (outside && fc <= fr) || (!outside && fc < simplex[n].1) {
                simplex[n] = (xc, fc);
            } else {
                let best = simplex[0].0.clone();
                for v in simplex.iter_mut().skip(1) {
                    let mut x = best.clone();
                    for &i in &free {
                        x[i] = best[i] + sigma * (v.0[i] - best[i]);
                    }
                    c.project(&mut x);
                    let fx = c.eval(&x);
                    *v = (x, fx);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (x, f) = simplex.swap_remove(0);
    (x, f, converged)
}

/// Restarted Nelder–Mead with some coordinates pinned.
fn restarted(c: &mut Counted, x0: &[f64], fixed: &[bool], s: &Settings) -> (Vec<f64>, f64, bool) {
    let mut x = x0.to_vec();
    c.project(&mut x);
    let mut step = 0.25;
    let budget = s.max_evaluations;
    let (mut best_x, mut best_f, mut conv) = nelder_mead(c, &x, step, fixed, s, budget);
    for _ in 0..8 {
        if c.evaluations >= budget {
            conv = false;
            break;
        }
        step = (step * 0.3).max(1e-3);
        let (x2, f2, c2) = nelder_mead(
            c,
            &best_x,
            step,
            fixed,
            s,
            budget - c.evaluations.min(budget),
        );
        let improved = best_f - f2;
        if f2 < best_f {
            best_x = x2;
            best_f = f2;
            conv = c2;
        }
        if improved <= s.ftol_abs * 10.0 {
            break;
        }
    }
    (best_x, best_f, conv)
}

/// Minimise `f` subject to `x ≥ lower`, starting at `x0`. `diagonal` lists the
/// coordinates whose bound is a variance boundary worth trying exactly.
pub fn minimize(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    lower: &[f64],
    diagonal: &[usize],
    s: &Settings,
) -> Outcome {
    let mut c = Counted {
        f,
        lower,
        evaluations: 0,
    };
    let none = vec![false; x0.len()];
    let (mut x, mut fx, mut converged) = restarted(&mut c, x0, &none, s);
    // Try the boundary for small diagonal entries (the objective is flat or
    // increasing there only if the optimum is interior).
    let mut fixed = none.clone();
    for &i in diagonal {
        if x[i] > lower[i] && x[i] < 1e-2 {
            let mut trial = x.clone();
            trial[i] = lower[i];
            fixed[i] = true;
            let (xt, ft, ct) = restarted(&mut c, &trial, &fixed, s);
            if ft <= fx + 1e-10 {
                x = xt;
                fx = ft;
                converged = ct;
            } else {
                fixed[i] = false;
            }
        }
    }
    if fixed.iter().any(|&b| b) {
        // Re-polish with the boundary entries released: they stay put if the bound is optimal.
        let (xt, ft, ct) = restarted(&mut c, &x, &none, s);
        if ft < fx {
            x = xt;
            fx = ft;
            converged = ct;
        }
    }
    Outcome {
        x,
        f: fx,
        evaluations: c.evaluations,
        converged: converged && c.evaluations < s.max_evaluations,
    }
}

/// Largest gradient component not blocked by a bound.
fn projected_gradient(x: &[f64], g: &[f64], lower: &[f64]) -> f64 {
    (0..x.len())
        .filter(|&i| !(x[i] <= lower[i] && g[i] > 0.0))
        .map(|i| g[i].abs())
        .fold(0.0, f64::max)
}

/// A variance parameter θ_i on its bound 0 (a diagonal element of Λ) has a
/// zero derivative there whatever the data: the deviance depends on θ_i
/// through θ_i² near 0, so θ_i = 0 is stationary even where it is a local
/// maximum along θ_i (a saddle of the box problem). A gradient method that
/// lands there stops; lme4's derivative-free search does not. So, at the
/// end, each such θ_i is moved off the bound (to 0.01 and to 0.25, on the
/// relative scale where the start is 1) and the search restarts from the
/// better probe if it is lower; at most three rounds.
pub fn leave_saddles(
    fg: &mut dyn FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
    mut outcome: Outcome,
    lower: &[f64],
    diagonal: &[usize],
    max_iter: usize,
    gtol: f64,
) -> Outcome {
    for _ in 0..3 {
        let mut best: Option<(Vec<f64>, f64)> = None;
        for &i in diagonal {
            if !(outcome.x[i] <= lower[i] && lower[i] == 0.0) {
                continue;
            }
            for h in [0.01, 0.25] {
                let mut trial = outcome.x.clone();
                trial[i] = h;
                outcome.evaluations += 1;
                if let Some((f, _)) = fg(&trial) {
                    let better = f < outcome.f - 1e-10 * outcome.f.abs().max(1.0);
                    if better && best.as_ref().is_none_or(|b| f < b.1) {
                        best = Some((trial, f));
                    }
                }
            }
        }
        let Some((from, _)) = best else { break };
        let next = minimize_bfgs(fg, &from, lower, max_iter, false, gtol);
        let evaluations = outcome.evaluations + next.evaluations;
        if next.f < outcome.f {
            outcome = next;
        }
        outcome.evaluations = evaluations;
    }
    outcome
}

/// Projected BFGS with exact gradients, for `x ≥ lower`.
///
/// A coordinate on its bound whose gradient points outward is held there
/// (the active set); the rest take a quasi-Newton step, and the trial point is
/// projected back onto the feasible box before the Armijo test. Stops when the
/// projected gradient vanishes to rounding level, or when no step can lower
/// the objective any further (the precision limit).
/// With `newton_start` (x0 believed near the optimum), the first step is a
/// Newton step on a finite-difference Hessian of the exact gradient (n extra
/// evaluations), which from a good start saves more iterations than it costs.
///
/// `gtol` is the relative gradient tolerance: 1e-13 suits exact gradients (the
/// rounding level, so that fits agree to 1e-9 whatever the data order);
/// finite-difference gradients carry more noise and need a larger one, and
/// for them a step is never accepted on the gradient alone.
pub fn minimize_bfgs(
    fg: &mut dyn FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
    x0: &[f64],
    lower: &[f64],
    max_iter: usize,
    newton_start: bool,
    gtol: f64,
) -> Outcome {
    minimize_bfgs_from(fg, x0, lower, max_iter, newton_start, None, gtol)
}

/// `minimize_bfgs` started from a given inverse Hessian (n×n), e.g. one taken
/// at a nearby optimum for many nearby problems (the bootstrap's replicates):
/// no difference Hessian is taken then.
pub fn minimize_bfgs_from(
    fg: &mut dyn FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
    x0: &[f64],
    lower: &[f64],
    max_iter: usize,
    newton_start: bool,
    inverse_hessian: Option<&[f64]>,
    gtol: f64,
) -> Outcome {
    let n = x0.len();
    let project = |x: &mut [f64]| {
        for (v, &l) in x.iter_mut().zip(lower) {
            if *v < l {
                *v = l;
            }
        }
    };
    let mut evaluations = 0;
    let mut x = x0.to_vec();
    project(&mut x);
    let mut eval = |x: &[f64], evaluations: &mut usize| {
        *evaluations += 1;
        crate::cancel::checkpoint();
        let out = fg(x).filter(|(f, g)| f.is_finite() && g.iter().all(|v| v.is_finite()));
        if std::env::var_os("LMM_TRACE").is_some() {
            eprintln!(
                "  eval f={:.12} x={x:?}",
                out.as_ref().map_or(f64::NAN, |o| o.0)
            );
        }
        out
    };
    let Some((mut f, mut g)) = eval(&x, &mut evaluations) else {
        return Outcome {
            x,
            f: f64::INFINITY,
            evaluations,
            converged: false,
        };
    };
    let mut h = vec![0.0; n * n];
    let reset = |h: &mut [f64], scale: f64| {
        h.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..n {
            h[i * n + i] = scale;
        }
    };
    reset(&mut h, 1.0);
    let mut first = true;
    if let Some(inv) = inverse_hessian.filter(|h0| h0.len() == n * n) {
        h = inv.to_vec();
        first = false;
    } else if newton_start {
        let mut hess = vec![0.0; n * n];
        let mut ok = true;
        for j in 0..n {
            let step = 1e-5 * x[j].abs().max(1e-2);
            let mut xj = x.clone();
            xj[j] += step;
            match eval(&xj, &mut evaluations) {
                Some((_, gj)) => {
                    for i in 0..n {
                        hess[j * n + i] = (gj[i] - g[i]) / step;
                    }
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            for j in 0..n {
                for i in 0..j {
                    let m = 0.5 * (hess[j * n + i] + hess[i * n + j]);
                    hess[j * n + i] = m;
                    hess[i * n + j] = m;
                }
            }
            if let Some(inv) = invert_spd(&hess, n) {
                h = inv;
                first = false;
            }
        }
    }
    let mut converged = false;
    let mut stall = 0;
    for _ in 0..max_iter {
        let free: Vec<bool> = (0..n).map(|i| !(x[i] <= lower[i] && g[i] > 0.0)).collect();
        let pg = projected_gradient(&x, &g, lower);
        if std::env::var_os("LMM_TRACE").is_some() {
            eprintln!("bfgs f={f:.15} pg={pg:.3e} x={x:?} g={g:?}");
        }
        if pg <= gtol * f.abs().max(1.0) {
            converged = true;
            break;
        }
        let mut d = vec![0.0; n];
        for i in 0..n {
            if free[i] {
                d[i] = -(0..n)
                    .filter(|&j| free[j])
                    .map(|j| h[j * n + i] * g[j])
                    .sum::<f64>();
            }
        }
        let slope: f64 = (0..n).map(|i| g[i] * d[i]).sum();
        if slope >= 0.0 {
            reset(&mut h, 1.0);
            for i in 0..n {
                d[i] = if free[i] { -g[i] } else { 0.0 };
            }
        }
        // With a loose gtol (an objective whose gradient carries noise, as a
        // crossed deviance's does), stop once a quasi-Newton step's predicted
        // decrease −gᵀd/2 is below 1e-15 |f|: the estimates no longer move.
        if gtol >= 1e-12 && !first && slope < 0.0 && -0.5 * slope <= 1e-15 * f.abs() {
            converged = pg <= 1e-6 * f.abs().max(1.0);
            break;
        }
        let dmax = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut alpha = if first { (1.0 / dmax).min(1.0) } else { 1.0 };
        let mut accepted = None;
        // Trials whose objective equals f to within rounding (relative 1e-13:
        // a crossed deviance sums thousands of logarithms): shorter steps
        // cannot do better.
        let mut unresolved = 0;
        while alpha * dmax > 1e-14 && unresolved < 3 {
            let mut xn: Vec<f64> = (0..n).map(|i| x[i] + alpha * d[i]).collect();
            project(&mut xn);
            let decrease: f64 = (0..n).map(|i| g[i] * (xn[i] - x[i])).sum();
            if let Some((fnew, gnew)) = eval(&xn, &mut evaluations) {
                if (fnew - f).abs() <= 1e-13 * f.abs() {
                    unresolved += 1;
                }
                // Armijo; or, where f no longer resolves the step (rounding level),
                // the exact gradient decides: accept if it shrinks.
                let armijo = fnew <= f + 1e-4 * decrease.min(0.0) && fnew <= f;
                let flat = (fnew - f).abs() <= 1e-11 * f.abs().max(1.0)
                    && projected_gradient(&xn, &gnew, lower) < pg;
                if armijo || flat {
                    accepted = Some((xn, fnew, gnew));
                    break;
                }
            }
            alpha *= 0.5;
        }
        let Some((xn, fnew, gnew)) = accepted else {
            // No step lowers the objective or the gradient: the precision limit.
            converged = pg <= 1e-6 * f.abs().max(1.0);
            break;
        };
        let sv: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let yv: Vec<f64> = (0..n).map(|i| gnew[i] - g[i]).collect();
        let sy: f64 = sv.iter().zip(&yv).map(|(a, b)| a * b).sum();
        let yy: f64 = yv.iter().map(|a| a * a).sum();
        let ss: f64 = sv.iter().map(|a| a * a).sum();
        if sy > 1e-12 * (ss * yy).sqrt() {
            if first {
                reset(&mut h, sy / yy);
            }
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[j * n + i] * yv[j]).sum())
                .collect();
            let yhy: f64 = yv.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[j * n + i] += -rho * (hy[i] * sv[j] + sv[i] * hy[j])
                        + (rho * rho * yhy + rho) * sv[i] * sv[j];
                }
            }
            first = false;
        }
        // No progress for several iterations: noisy gradients at their floor.
        if f - fnew <= 1e-15 * f.abs().max(1.0) {
            stall += 1;
        } else {
            stall = 0;
        }
        let stalled = ss == 0.0 || stall >= 5;
        x = xn;
        f = fnew;
        g = gnew;
        if stalled {
            converged = projected_gradient(&x, &g, lower) <= 1e-6 * f.abs().max(1.0);
            break;
        }
    }
    Outcome {
        x,
        f,
        evaluations,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfgs_interior_and_bound() {
        let mut fg = |x: &[f64]| {
            let f = (x[0] - 1.5).powi(2)
                + 3.0 * (x[1] + 0.5).powi(2)
                + (x[2] + 0.3).powi(2)
                + 0.5 * (x[0] - 1.5) * (x[1] + 0.5);
            let g = vec![
                2.0 * (x[0] - 1.5) + 0.5 * (x[1] + 0.5),
                6.0 * (x[1] + 0.5) + 0.5 * (x[0] - 1.5),
                2.0 * (x[2] + 0.3),
            ];
            Some((f, g))
        };
        let o = minimize_bfgs(
            &mut fg,
            &[1.0, 0.0, 1.0],
            &[0.0, f64::NEG_INFINITY, 0.0],
            200,
            false,
            1e-13,
        );
        assert!(o.converged);
        assert!(
            (o.x[0] - 1.5).abs() < 1e-8 && (o.x[1] + 0.5).abs() < 1e-8,
            "{:?}",
            o.x
        );
        assert_eq!(o.x[2], 0.0);
    }

    #[test]
    fn interior_quadratic() {
        let mut f = |x: &[f64]| {
            (x[0] - 1.5).powi(2) + 3.0 * (x[1] + 0.5).powi(2) + 0.5 * (x[0] - 1.5) * (x[1] + 0.5)
        };
        let o = minimize(
            &mut f,
            &[1.0, 0.0],
            &[0.0, f64::NEG_INFINITY],
            &[0],
            &Settings::default(),
        );
        assert!(
            (o.x[0] - 1.5).abs() < 1e-5 && (o.x[1] + 0.5).abs() < 1e-5,
            "{:?}",
            o.x
        );
        assert!(o.converged);
    }

    #[test]
    fn reaches_the_bound_exactly() {
        let mut f = |x: &[f64]| (x[0] + 0.3).powi(2) + (x[1] - 2.0).powi(2);
        let o = minimize(
            &mut f,
            &[1.0, 1.0],
            &[0.0, 0.0],
            &[0, 1],
            &Settings::default(),
        );
        assert_eq!(o.x[0], 0.0);
        assert!((o.x[1] - 2.0).abs() < 1e-5);
    }

    #[test]
    fn leaves_the_saddle_at_a_zero_variance() {
        // f depends on x0 through x0² (as the deviance on a diagonal θ): x0 = 0
        // is stationary, a maximum along x0; the minimum is at x0² = 0.2.
        // Started on x0 = 0, BFGS sees a zero gradient there and stops.
        let mut fg = |x: &[f64]| {
            let (a, b) = (x[0] * x[0], x[1] - 1.5);
            Some((
                (a - 0.2) * (a - 0.2) + b * b,
                vec![4.0 * x[0] * (a - 0.2), 2.0 * b],
            ))
        };
        let stuck = minimize_bfgs(
            &mut fg,
            &[0.0, 1.0],
            &[0.0, f64::NEG_INFINITY],
            200,
            false,
            1e-12,
        );
        assert_eq!(stuck.x[0], 0.0, "a gradient method stays on the saddle");
        let out = leave_saddles(&mut fg, stuck, &[0.0, f64::NEG_INFINITY], &[0], 200, 1e-12);
        assert!((out.x[0] - 0.2f64.sqrt()).abs() < 1e-6, "{:?}", out.x);
        assert!((out.x[1] - 1.5).abs() < 1e-6);
        assert!(out.f < 1e-10);
    }
}

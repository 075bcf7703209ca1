//! Bound-constrained minimisation of the profiled deviance over θ.
//!
//! Nelder–Mead on the projected problem f(max(θ, lower)): vertices are kept
//! feasible, so a variance that belongs on its bound lands on it exactly
//! (lme4 reports such fits as singular). The simplex is restarted around the
//! best point until a restart no longer improves the objective, which guards
//! against the method's known premature collapse. Then each diagonal entry
//! that is small is tried at exactly 0 with the rest re-optimised, so that
//! boundary optima are reached exactly, not approached.

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
        Settings { ftol_abs: 1e-11, xtol_abs: 1e-9, max_evaluations: 20_000 }
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
        let v = (self.f)(x);
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    }
}

/// One Nelder–Mead run from `x0` with initial step `step`; `fixed[i]` pins coordinate i.
fn nelder_mead(c: &mut Counted, x0: &[f64], step: f64, fixed: &[bool], s: &Settings, budget: usize) -> (Vec<f64>, f64, bool) {
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
            .map(|(x, _)| free.iter().map(|&i| (x[i] - simplex[0].0[i]).abs()).fold(0.0, f64::max))
            .fold(0.0, f64::max);
        if fspread.abs() <= s.ftol_abs && xspread <= s.xtol_abs || xspread <= s.xtol_abs * 1e-3 {
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
            let (mut xc, outside) = if fr < simplex[n].1 { (along(-rho, &worst), true) } else { (along(rho, &worst), false) };
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
        let (x2, f2, c2) = nelder_mead(c, &best_x, step, fixed, s, budget - c.evaluations.min(budget));
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
pub fn minimize(f: &mut dyn FnMut(&[f64]) -> f64, x0: &[f64], lower: &[f64], diagonal: &[usize], s: &Settings) -> Outcome {
    let mut c = Counted { f, lower, evaluations: 0 };
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
    Outcome { x, f: fx, evaluations: c.evaluations, converged: converged && c.evaluations < s.max_evaluations }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interior_quadratic() {
        let mut f = |x: &[f64]| (x[0] - 1.5).powi(2) + 3.0 * (x[1] + 0.5).powi(2) + 0.5 * (x[0] - 1.5) * (x[1] + 0.5);
        let o = minimize(&mut f, &[1.0, 0.0], &[0.0, f64::NEG_INFINITY], &[0], &Settings::default());
        assert!((o.x[0] - 1.5).abs() < 1e-5 && (o.x[1] + 0.5).abs() < 1e-5, "{:?}", o.x);
        assert!(o.converged);
    }

    #[test]
    fn reaches_the_bound_exactly() {
        let mut f = |x: &[f64]| (x[0] + 0.3).powi(2) + (x[1] - 2.0).powi(2);
        let o = minimize(&mut f, &[1.0, 1.0], &[0.0, 0.0], &[0, 1], &Settings::default());
        assert_eq!(o.x[0], 0.0);
        assert!((o.x[1] - 2.0).abs() < 1e-5);
    }
}

//! From accumulated statistics to a fitted model and its tidy table.
//!
//! Conditioning: before optimising, the columns are re-expressed about the
//! data (exactly, from the stored moments):
//! - X columns and y are centred at their overall means when the model has an
//!   intercept (β̂ is mapped back: the intercept absorbs Σ β_j x̄_j and ȳ);
//!   centring is unit-triangular, so even the REML criterion is unchanged;
//! - random-effect columns are scaled to unit SD, and centred too inside a
//!   correlated block that has an intercept. Both are invertible maps within
//!   the block's covariance family, so the likelihood's optimum is the same;
//!   Var(b) and the BLUPs are mapped back with b = T b_c.
//! A covariate far from zero (epoch seconds) would otherwise make the
//! intercept nearly collinear with its slope and the optimiser ill-conditioned.

use crate::accumulator::Accumulator;
use crate::crossed;
use crate::bail;
use crate::design::{self, DesignColumn, Source};
use crate::error::Result;
use crate::optimizer::{self, Settings};
use crate::options::{Ddf, Method};
use crate::dense::sandwich;
use crate::reml::Problem;
use crate::stats::{GroupView, Moments};
use crate::theta::ThetaLayout;
use crate::model::Model;
use crate::tidy::{Text, Tidy, TidyRow};

/// A model column re-expressed as w = (v − centre) / scale, centre relative to the state's shift.
#[derive(Debug, Clone, Copy)]
struct Col {
    source: Source,
    centre: f64,
    scale: f64,
}

/// Σ over rows of w_a w_b from a count, means and co-moments
/// (`comoment(i, j)` for extended columns i, j).
fn cross_with(n: f64, mean: impl Fn(usize) -> f64, comoment: impl Fn(usize, usize) -> f64, a: &Col, b: &Col) -> f64 {
    match (a.source, b.source) {
        (Source::Zero, _) | (_, Source::Zero) => 0.0,
        (Source::Ones, Source::Ones) => n,
        (Source::Ones, Source::Ext(j)) => n * (mean(j) - b.centre) / b.scale,
        (Source::Ext(i), Source::Ones) => n * (mean(i) - a.centre) / a.scale,
        (Source::Ext(i), Source::Ext(j)) => {
            (comoment(i, j) + n * (mean(i) - a.centre) * (mean(j) - b.centre)) / (a.scale * b.scale)
        }
    }
}

/// Σ over all rows of w_a w_b.
fn cross(m: &Moments, a: &Col, b: &Col) -> f64 {
    cross_with(m.n as f64, |c| m.mean(c), |i, j| m.comoment(i, j), a, b)
}

/// Σ over a group's rows of w_a w_b, for a random-effect column a (intercept or
/// row `zindex[c]` of the group's co-moments).
fn cross_group(m: &GroupView, a: &Col, b: &Col, zindex: &[usize]) -> f64 {
    cross_with(m.n(), |c| m.mean(c), |i, j| m.comoment(zindex[i], j), a, b)
}

/// A S Aᵀ for the map back from centred columns, A = I + e₀aᵀ (only A's
/// first row differs from the identity: the intercept absorbs −Σ x̄_j β_j):
/// S + e₀(Sa)ᵀ + (Sa)e₀ᵀ + (aᵀSa) e₀e₀ᵀ, O(p²) where a general product is O(p³).
fn uncentre_covariance(amat: &[f64], s: &[f64], p: usize) -> Vec<f64> {
    debug_assert!((1..p).all(|c| (0..p).all(|r| amat[c * p + r] == if r == c { 1.0 } else if r == 0 { amat[c * p] } else { 0.0 })));
    let mut out = s.to_vec();
    if p == 0 {
        return out;
    }
    // a = A's first row minus e₀ᵀ.
    let a: Vec<f64> = (0..p).map(|c| amat[c * p] - if c == 0 { 1.0 } else { 0.0 }).collect();
    let sa: Vec<f64> = (0..p).map(|r| (0..p).map(|c| s[c * p + r] * a[c]).sum()).collect();
    let asa: f64 = a.iter().zip(&sa).map(|(x, y)| x * y).sum();
    for c in 0..p {
        out[c * p] += sa[c];
        out[c] += sa[c];
    }
    out[0] += asa;
    out
}

/// Normal upper-tail two-sided p-value.
fn p_normal(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

const Z975: f64 = 1.959_963_984_540_054;

/// One grouping factor's part of the model: its random-effect columns
/// (re-expressed), θ layout, and the map b = T b_c back to the data scale.
struct FactorSpec {
    /// index into `acc.factors`
    index: usize,
    /// lme4's name: the grouping columns joined by ':'
    name: String,
    nlev: usize,
    zcols: Vec<DesignColumn>,
    zc: Vec<Col>,
    layout: ThetaLayout,
    tmat: Vec<f64>,
    bars_terms: Vec<Vec<String>>,
}

/// What either likelihood (one factor, or several) gives back at the optimum.
struct Estimates {
    /// Satterthwaite df per fixed effect, when asked for and computable
    df: Option<Vec<f64>>,
    deviance: f64,
    beta: Vec<f64>,
    sigma2: f64,
    vcov: Vec<f64>,
    /// per factor (spec order): Λ, conditional modes and covariances (transformed scale)
    lambdas: Vec<Vec<f64>>,
    blups: Vec<Vec<f64>>,
    cond_cov: Vec<Vec<f64>>,
    theta: Vec<f64>,
    diagonal: Vec<usize>,
    converged: bool,
    evaluations: usize,
    /// The problem's blocks, given back after the fit (elimination order):
    /// per factor (ztz, ztr), the pairs, and [X y]ᵀ[X y].
    blocks: Vec<(Vec<f64>, Vec<f64>)>,
    pairs: Vec<crate::inference::stored::PairStats>,
    rtr: Vec<f64>,
}

/// Snap diagonal θ entries that ended a rounding error away from 0 onto the
/// boundary, where lme4 reports them (a singular fit), if that is no worse.
fn snap_to_boundary(theta: &mut [f64], f: &mut f64, diagonal: &[usize], dev: &dyn Fn(&[f64]) -> f64) {
    for &i in diagonal {
        if theta[i] > 0.0 && theta[i] < 1e-6 {
            let mut trial = theta.to_vec();
            trial[i] = 0.0;
            let ft = dev(&trial);
            if ft <= *f + 1e-12 * f.abs().max(1.0) {
                theta[i] = 0.0;
                *f = ft.min(*f);
            }
        }
    }
}

/// Fit and return the tidy table.
pub fn fit(acc: &Accumulator) -> Result<Tidy> {
    fit_model(acc).map(Model::into_tidy)
}

/// Fit and return the model value (its tidy table included).
pub fn fit_model(acc: &Accumulator) -> Result<Model> {
    let trace = std::env::var_os("LMM_TRACE").is_some();
    let t0 = std::time::Instant::now();
    let f = &acc.formula;
    let n_obs = acc.n_obs();
    if n_obs == 0 {
        bail!(
            "no rows left to fit after dropping {} row(s) with NULL or non-finite values in the model's columns ({})",
            acc.n_dropped,
            acc.var_names.join(", ")
        );
    }
    let d = acc.ext.len();
    let mut total = acc.global.clone();
    total.grow(d);
    let n = n_obs as f64;
    let abs_mean = |c: usize| acc.shift[c] + total.mean(c);
    let sd = |c: usize| (total.comoment(c, c) / n).sqrt();
    // How large a column's values are, even when their squares under- or overflow:
    // its mean and SD, and its largest group mean where those cannot settle
    // `check_scale`. A group mean lies within √(n)·SD of the mean (the groups'
    // share of the co-moment is at most all of it), so the groups matter only
    // when the SD is not finite or that bound leaves [TINY, HUGE].
    let magnitude = |c: usize| {
        let spread = if sd(c).is_finite() { sd(c) } else { 0.0 };
        let base = abs_mean(c).abs().max(spread);
        let settled = sd(c).is_finite() && base >= TINY && abs_mean(c).abs() + spread * n.sqrt() <= HUGE;
        if settled {
            return base;
        }
        let store = &acc.factors[0].store;
        (0..store.len()).map(|g| (acc.shift[c] + store.group(g).mean(c)).abs()).fold(base, f64::max)
    };
    check_response(&acc.vars[0].name, total.comoment(0, 0), abs_mean(0), magnitude(0))?;
    for c in 1..d {
        if !total.comoment(c, c).is_finite() {
            let name: Vec<&str> = acc.terms[acc.ext[c].term].vars.iter().map(|&v| acc.vars[v].name.as_str()).collect();
            check_scale(&format!("the term '{}'", name.join(":")), f64::INFINITY.max(magnitude(c)))?;
        }
    }

    // Fixed effects.
    let xcols: Vec<DesignColumn> = design::code(acc, f.intercept, &f.fixed)?;
    let p = xcols.len();
    let centre_x = f.intercept;
    let col_x = |dc: &DesignColumn| match dc.source {
        Source::Ext(c) if centre_x => Col { source: dc.source, centre: total.mean(c), scale: 1.0 },
        Source::Ext(c) => Col { source: dc.source, centre: -acc.shift[c], scale: 1.0 },
        s => Col { source: s, centre: 0.0, scale: 1.0 },
    };
    let mut rcols: Vec<Col> = xcols.iter().map(col_x).collect();
    rcols.push(if centre_x {
        Col { source: Source::Ext(0), centre: total.mean(0), scale: 1.0 }
    } else {
        Col { source: Source::Ext(0), centre: -acc.shift[0], scale: 1.0 }
    });
    let k = p + 1;

    // Random effects: per grouping factor, one block per bar.
    let mut specs: Vec<FactorSpec> = Vec::new();
    for (fi, factor) in acc.factors.iter().enumerate() {
        let group_vars: Vec<String> = factor.vars.iter().map(|&v| acc.vars[v].name.clone()).collect();
        let name = group_vars.join(":");
        let nlev = factor.store.len();
        if nlev < 2 {
            bail!("grouping factor '{name}' has {nlev} level(s); at least 2 are needed to estimate its variance");
        }
        let mut zcols: Vec<DesignColumn> = Vec::new();
        let mut zc: Vec<Col> = Vec::new();
        let mut block_sizes = Vec::new();
        let mut bars_terms: Vec<Vec<String>> = Vec::new();
        let mut bar_intercepts = Vec::new();
        for bar in f.random.iter().filter(|b| b.group == group_vars) {
            let cols = design::code(acc, bar.intercept, &bar.terms)?;
            let centre = bar.intercept && cols.len() > 1;
            for dc in &cols {
                let col = match dc.source {
                    Source::Ext(c) => {
                        check_scale(&format!("the random-effect column '{}' of '{name}'", dc.name), magnitude(c))?;
                        let s = sd(c);
                        let s = if s > 0.0 && s.is_finite() { s } else { 1.0 };
                        Col { source: dc.source, centre: if centre { total.mean(c) } else { -acc.shift[c] }, scale: s }
                    }
                    s => Col { source: s, centre: 0.0, scale: 1.0 },
                };
                zc.push(col);
            }
            block_sizes.push(cols.len());
            bar_intercepts.push(bar.intercept);
            bars_terms.push(cols.iter().map(|c| c.name.clone()).collect());
            zcols.extend(cols);
        }
        let q = zcols.len();
        let layout = ThetaLayout::new(&block_sizes);
        // b = T b_c, T block upper-triangular (q×q column-major).
        let mut tmat = vec![0.0; q * q];
        for (bi, &(off, s)) in layout.blocks.iter().enumerate() {
            for j in 0..s {
                let c = &zc[off + j];
                tmat[(off + j) * q + off + j] = 1.0 / c.scale;
                if bar_intercepts[bi] && j > 0 && s > 1 {
                    if let Source::Ext(e) = c.source {
                        // the intercept absorbs −c_j/s_j b_cj
                        tmat[(off + j) * q + off] = -(acc.shift[e] + c.centre) / c.scale;
                    }
                }
            }
        }
        specs.push(FactorSpec { index: fi, name, nlev, zcols, zc, layout, tmat, bars_terms });
    }
    for s in &specs {
        if (n_obs as usize) <= s.nlev * s.zcols.len() {
            bail!(
                "number of observations ({n_obs}) <= number of random effects ({}) for grouping factor '{}'; the random-effects parameters and the residual variance are probably unidentifiable",
                s.nlev * s.zcols.len(),
                s.name
            );
        }
    }
    if (n_obs as usize) <= p {
        bail!("number of observations ({n_obs}) must exceed the number of fixed-effect columns ({p})");
    }
    check_memory(&specs, k)?;

    let mut rtr = vec![0.0; k * k];
    for a in 0..k {
        for b in 0..k {
            rtr[b * k + a] = cross(&total, &rcols[a], &rcols[b]);
        }
    }
    // Column means on the data scale, to name the intercept in an aliasing that involves it.
    let xmeans: Vec<f64> = xcols
        .iter()
        .map(|c| match c.source {
            Source::Ext(e) => abs_mean(e),
            Source::Ones => 1.0,
            Source::Zero => 0.0,
        })
        .collect();
    for dc in &xcols {
        if let Source::Ext(c) = dc.source {
            check_scale(&format!("the column '{}'", dc.name), magnitude(c))?;
        }
    }
    check_rank(&rtr, k, &xcols, if centre_x { Some(&xmeans) } else { None })?;

    // Per-level cross-products of the re-expressed columns, per factor.
    let level_blocks = |spec: &FactorSpec| {
        let q = spec.zcols.len();
        let store = &acc.factors[spec.index].store;
        let mut ztz = vec![0.0; spec.nlev * q * q];
        let mut ztr = vec![0.0; spec.nlev * q * k];
        for i in 0..spec.nlev {
            let m = &store.group(i);
            for a in 0..q {
                for b in 0..q {
                    ztz[i * q * q + b * q + a] = cross_group(m, &spec.zc[a], &spec.zc[b], &acc.zindex);
                }
                for j in 0..k {
                    ztr[i * q * k + j * q + a] = cross_group(m, &spec.zc[a], &rcols[j], &acc.zindex);
                }
            }
        }
        (ztz, ztr)
    };

    // Map β back: β_0 = β_c0 − Σ_j x̄_j β_cj (+ ȳ), β_j = β_cj; Cov likewise.
    let mut amat = vec![0.0; p * p];
    for j in 0..p {
        amat[j * p + j] = 1.0;
    }
    let uncentre = centre_x && p > 0 && matches!(xcols[0].source, Source::Ones);
    if uncentre {
        for j in 1..p {
            if let Source::Ext(c) = xcols[j].source {
                amat[j * p] = -abs_mean(c);
            }
        }
    }
    // Satterthwaite: the weight of log σ² in the criterion.
    let c_sigma = match acc.options.method {
        Method::Reml => n - p as f64,
        Method::Ml => n,
    };
    let want_df = acc.options.ddf == Ddf::Satterthwaite;

    let est = if specs.len() == 1 {
        let spec = &specs[0];
        let q = spec.zcols.len();
        let (ztz, ztr) = level_blocks(spec);
        let problem = Problem { n, p, q, groups: spec.nlev, ztz, ztr, rtr, method: acc.options.method };
        if trace {
            eprintln!("lmm: setup {:.3}s ({} groups)", t0.elapsed().as_secs_f64(), spec.nlev);
        }
        let layout = &spec.layout;
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
        outcome.evaluations += extra;
        if !outcome.converged {
            // Fall back on the derivative-free method from where the quasi-Newton one stopped.
            let mut dev = |theta: &[f64]| problem.deviance(&layout.lambda(theta));
            let start = if outcome.f.is_finite() { outcome.x.clone() } else { layout.start() };
            let nm = optimizer::minimize(&mut dev, &start, &lower, &layout.diagonal(), &Settings::default());
            let evaluations = outcome.evaluations + nm.evaluations;
            if nm.f <= outcome.f || !outcome.f.is_finite() {
                outcome = nm;
            }
            outcome.evaluations = evaluations;
        }
        let mut theta = outcome.x.clone();
        let diagonal = layout.diagonal();
        snap_to_boundary(&mut theta, &mut outcome.f, &diagonal, &|t: &[f64]| problem.deviance(&layout.lambda(t)));
        let lambda = layout.lambda(&theta);
        let Some(sol) = problem.solution(&lambda) else {
            bail!("the fit failed: the model matrices are not positive definite at the optimum");
        };
        let df = want_df
            .then(|| {
                let at = |t: &[f64]| {
                    let s = problem.solution(&layout.lambda(t))?;
                    Some((s.logdets, s.sigma2, uncentre_covariance(&amat, &s.vcov, p)))
                };
                crate::inference::satterthwaite::dfs(&theta, c_sigma, p, &at)
            })
            .flatten();
        let Problem { ztz, ztr, rtr, .. } = problem;
        Estimates {
            blocks: vec![(ztz, ztr)],
            pairs: Vec::new(),
            rtr,
            df,
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
        }
    } else {
        crossed_estimates(acc, &specs, &level_blocks, n, p, rtr, want_df.then_some((&amat[..], c_sigma)))?
    };
    if trace {
        eprintln!("lmm: optimized {:.3}s ({} evaluations)", t0.elapsed().as_secs_f64(), est.evaluations);
    }
    let singular = est.diagonal.iter().any(|&i| est.theta[i] < 1e-4);

    let mut beta = est.beta.clone();
    if uncentre {
        beta = (0..p).map(|r| (0..p).map(|c| amat[c * p + r] * est.beta[c]).sum()).collect();
        beta[0] += abs_mean(0);
    }
    let vcov = uncentre_covariance(&amat, &est.vcov, p);

    let mut rows = Vec::new();
    for j in 0..p {
        let e = beta[j];
        let se = vcov[j * p + j].sqrt();
        let z = e / se;
        let mut r = TidyRow::new("fixed");
        r.term = Some(xcols[j].name.as_str().into());
        r.estimate = Some(e);
        r.std_error = Some(se);
        r.statistic = Some(z);
        // Satterthwaite (when asked for): a t test on df; else the normal.
        let df = est.df.as_ref().map(|d| d[j]).filter(|d| d.is_finite() && *d > 0.0);
        let (pv, crit) = match df {
            Some(d) => (crate::inference::tdist::two_sided_p(z, d), crate::inference::tdist::two_sided_quantile(0.05, d)),
            None => (p_normal(z), Z975),
        };
        r.df = df;
        r.p_value = Some(pv);
        r.conf_low = Some(e - crit * se);
        r.conf_high = Some(e + crit * se);
        rows.push(r);
    }

    // Output order: lme4's, factors with more levels first.
    let mut out_order: Vec<usize> = (0..specs.len()).collect();
    out_order.sort_by_key(|&i| std::cmp::Reverse(specs[i].nlev));

    // Variance components: σ² T Λ Λᵀ Tᵀ per block.
    for &si in &out_order {
        let spec = &specs[si];
        let q = spec.zcols.len();
        let lambda = &est.lambdas[si];
        let group_text: Text = spec.name.as_str().into();
        let mut ll = vec![0.0; q * q];
        for a in 0..q {
            for b in 0..q {
                ll[b * q + a] = (0..q).map(|t| lambda[t * q + a] * lambda[t * q + b]).sum::<f64>() * est.sigma2;
            }
        }
        let sigma_b = sandwich(&spec.tmat, &ll, q);
        for (bi, &(off, s)) in spec.layout.blocks.iter().enumerate() {
            let names = &spec.bars_terms[bi];
            let push = |rows: &mut Vec<TidyRow>, term: String, v: f64| {
                let mut r = TidyRow::new("ran_pars");
                r.group_var = Some(group_text.clone());
                r.term = Some(term.into());
                r.estimate = Some(v);
                rows.push(r);
            };
            for j in 0..s {
                let v = sigma_b[(off + j) * q + off + j];
                push(&mut rows, format!("var__{}", names[j]), v);
                push(&mut rows, format!("sd__{}", names[j]), v.max(0.0).sqrt());
            }
            for a in 0..s {
                for b in a + 1..s {
                    let c = sigma_b[(off + b) * q + off + a];
                    let va = sigma_b[(off + a) * q + off + a];
                    let vb = sigma_b[(off + b) * q + off + b];
                    push(&mut rows, format!("cov__{}.{}", names[a], names[b]), c);
                    // Each SD on its own: va·vb overflows (or underflows) at extreme scales of y.
                    let cor = if va > 0.0 && vb > 0.0 { (c / (va.sqrt() * vb.sqrt())).clamp(-1.0, 1.0) } else { f64::NAN };
                    push(&mut rows, format!("cor__{}.{}", names[a], names[b]), cor);
                }
            }
        }
    }
    for (term, v) in [("var__Observation", est.sigma2), ("sd__Observation", est.sigma2.sqrt())] {
        let mut r = TidyRow::new("ran_pars");
        r.group_var = Some("Residual".into());
        r.term = Some(term.into());
        r.estimate = Some(v);
        rows.push(r);
    }

    // BLUPs on the data scale for every factor (prediction needs them), with
    // their conditional SDs when the table reports them.
    let mut factor_results = Vec::new();
    for &si in &out_order {
        let spec = &specs[si];
        let q = spec.zcols.len();
        let tmat = &spec.tmat;
        let factor = &acc.factors[spec.index];
        // lme4 sorts the levels.
        let order = factor.levels.sorted();
        let nl = order.len();
        let mut estimate = vec![0.0; q * nl];
        let mut std_error = if acc.options.ranef { vec![0.0; q * nl] } else { Vec::new() };
        let (blups, cond) = (&est.blups[si], &est.cond_cov[si]);
        for a in 0..q {
            for (li, &g) in order.iter().enumerate() {
                let g = g as usize;
                let bc = &blups[g * q..(g + 1) * q];
                estimate[a * nl + li] = (0..q).map(|t| tmat[t * q + a] * bc[t]).sum();
                if acc.options.ranef {
                    let cc = &cond[g * q * q..(g + 1) * q * q];
                    let var: f64 = (0..q)
                        .map(|s| (0..q).map(|t| tmat[s * q + a] * cc[t * q + s] * tmat[t * q + a]).sum::<f64>())
                        .sum();
                    std_error[a * nl + li] = var.max(0.0).sqrt();
                }
            }
        }
        factor_results.push(crate::model::FactorResult {
            name: spec.name.clone(),
            vars: factor.vars.clone(),
            terms: &spec.zcols,
            order,
            factor_index: spec.index,
            blup: estimate,
            cond_sd: if acc.options.ranef { Some(std_error) } else { None },
        });
    }
    let head = std::mem::take(&mut rows);

    let reml = acc.options.method == Method::Reml;
    let dev = est.deviance;
    let df = (p + est.theta.len() + 1) as f64;
    let fit_row = |term: &str, v: f64, group: Option<Text>| {
        let mut r = TidyRow::new("fit");
        r.term = Some(term.into());
        r.estimate = Some(v);
        r.group_var = group;
        r
    };
    rows.push(fit_row("nobs", n, None));
    rows.push(fit_row("nobs_dropped", acc.n_dropped as f64, None));
    for &si in &out_order {
        rows.push(fit_row("ngroups", specs[si].nlev as f64, Some(specs[si].name.as_str().into())));
    }
    rows.push(fit_row("logLik", -dev / 2.0, None));
    rows.push(fit_row("AIC", dev + 2.0 * df, None));
    rows.push(fit_row("BIC", dev + df * n.ln(), None));
    rows.push(fit_row(if reml { "REMLcrit" } else { "deviance" }, dev, None));
    rows.push(fit_row("sigma", est.sigma2.sqrt(), None));
    rows.push(fit_row("converged", if est.converged { 1.0 } else { 0.0 }, None));
    rows.push(fit_row("singular", if singular { 1.0 } else { 0.0 }, None));
    rows.push(fit_row("iterations", est.evaluations as f64, None));
    let stats = crate::inference::stored::Stored {
        n,
        p,
        method: acc.options.method,
        factors: out_order
            .iter()
            .zip(est.blocks)
            .map(|(&si, (ztz, ztr))| crate::inference::stored::FactorStats {
                q: specs[si].zcols.len(),
                nlev: specs[si].nlev,
                blocks: specs[si].layout.blocks.iter().map(|&(_, s)| s).collect(),
                tmat: specs[si].tmat.clone(),
                ztz,
                ztr,
            })
            .collect(),
        pairs: est.pairs,
        rtr: est.rtr,
        theta: est.theta.clone(),
        intercept_shift: (0..p).map(|j| if uncentre && j > 0 { amat[j * p] } else { 0.0 }).collect(),
        y_shift: if uncentre { abs_mean(0) } else { 0.0 },
    };
    if trace {
        eprintln!("lmm: results {:.3}s", t0.elapsed().as_secs_f64());
    }
    let mut model = crate::model::build(acc, &xcols, beta, factor_results, head, rows);
    model.stats = Some(stats);
    Ok(model)
}

/// Several grouping factors: the blocked likelihood of `crossed`, optimised
/// without derivatives (bounded Nelder–Mead with restarts, as lme4's own
/// derivative-free optimizers do).
fn crossed_estimates(
    acc: &Accumulator,
    specs: &[FactorSpec],
    level_blocks: &dyn Fn(&FactorSpec) -> (Vec<f64>, Vec<f64>),
    n: f64,
    p: usize,
    rtr: Vec<f64>,
    satterthwaite: Option<(&[f64], f64)>,
) -> Result<Estimates> {
    // Elimination order: most levels first.
    let mut elim: Vec<usize> = (0..specs.len()).collect();
    elim.sort_by_key(|&i| std::cmp::Reverse(specs[i].nlev));
    let pos_of = |si: usize| elim.iter().position(|&e| e == si).unwrap();
    let factors: Vec<crossed::Factor> = elim
        .iter()
        .map(|&si| {
            let (ztz, ztr) = level_blocks(&specs[si]);
            crossed::Factor { q: specs[si].zcols.len(), nlev: specs[si].nlev, ztz, ztr, off: 0 }
        })
        .collect();
    let mut pairs = Vec::new();
    for cells in &acc.cells {
        // cells.a / cells.b index acc.factors; map to spec and elimination positions.
        let sa = specs.iter().position(|s| s.index == cells.a).unwrap();
        let sb = specs.iter().position(|s| s.index == cells.b).unwrap();
        let (pa, pb) = (pos_of(sa), pos_of(sb));
        // Store with the earlier-eliminated factor first.
        let (first, second, swap) = if pa < pb { (sa, sb, false) } else { (sb, sa, true) };
        let (qa, qb) = (specs[first].zcols.len(), specs[second].zcols.len());
        let mut blocks = Vec::with_capacity(cells.keys.len() * qa * qb);
        let mut keys = Vec::with_capacity(cells.keys.len());
        for (ci, &(la, lb)) in cells.keys.iter().enumerate() {
            let m = cells.store.group(ci);
            for c in 0..qb {
                for r in 0..qa {
                    blocks.push(cross_group(&m, &specs[first].zc[r], &specs[second].zc[c], &acc.zindex));
                }
            }
            keys.push(if swap { (lb, la) } else { (la, lb) });
        }
        pairs.push(crossed::Pair { a: pa.min(pb), b: pa.max(pb), cells: keys, blocks });
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
            };
            crate::start::moment_theta_and_sigma2(&single, &specs[si].layout)
        })
        .collect();
    let mut problem = crossed::CrossedProblem::new(n, p, acc.options.method, factors, pairs, rtr);
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
    if !outcome.converged {
        let mut dev_mut = |theta: &[f64]| dev(theta);
        let nm = optimizer::minimize(&mut dev_mut, &outcome.x, &lower, &diagonal, &Settings::default());
        if nm.f <= outcome.f {
            outcome = nm;
        }
    }
    outcome.evaluations = evals.get();
    let mut theta = outcome.x.clone();
    snap_to_boundary(&mut theta, &mut outcome.f, &diagonal, &|t: &[f64]| problem.deviance(&lambdas(t)));
    let lam = lambdas(&theta);
    let Some(sol) = problem.solution(&lam) else {
        bail!("the fit failed: the model matrices are not positive definite at the optimum");
    };
    let df = satterthwaite.and_then(|(amat, c_sigma)| {
        let at = |t: &[f64]| {
            let (d, s2, v) = problem.fixed_effects_covariance(&lambdas(t))?;
            Some((d, s2, uncentre_covariance(amat, &v, p)))
        };
        crate::inference::satterthwaite::dfs(&theta, c_sigma, p, &at)
    });
    let blocks_back: Vec<(Vec<f64>, Vec<f64>)> = problem.factors.iter_mut().map(|f| (std::mem::take(&mut f.ztz), std::mem::take(&mut f.ztr))).collect();
    let pairs_back = problem
        .pairs
        .iter_mut()
        .map(|p| crate::inference::stored::PairStats { a: p.a, b: p.b, cells: std::mem::take(&mut p.cells), blocks: std::mem::take(&mut p.blocks) })
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
        df,
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

/// Values whose squares double precision cannot hold (about 1e±154): below
/// `TINY` or above `HUGE` a column is refused rather than fitted wrongly.
const TINY: f64 = 1e-150;
const HUGE: f64 = 1e150;

/// Refuse a column whose values are too small or too large for their squares
/// (every fit forms them) to be represented. `what` names the column.
fn check_scale(what: &str, magnitude: f64) -> Result<()> {
    if magnitude > 0.0 && magnitude < TINY {
        bail!(
            "{what} is too small to be represented: its values are about {magnitude:.1e}, and their squares \
             underflow double precision (values must lie between {TINY:e} and {HUGE:e} in absolute value); \
             rescale it, e.g. multiply by 1e{}",
            -magnitude.log10().floor() as i64
        );
    }
    if !(magnitude <= HUGE) {
        let reach = if magnitude.is_finite() { format!("reach about {magnitude:.1e}") } else { "are so large".to_string() };
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
fn check_response(name: &str, comoment: f64, mean: f64, magnitude: f64) -> Result<()> {
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
    if p < crate::dense::FAER_FROM || xcols.iter().enumerate().any(|(j, c)| matches!(c.source, Source::Zero) || rtr[j * k + j] == 0.0) {
        return false;
    }
    let mut a = vec![0.0; p * p];
    for c in 0..p {
        a[c * p + c..(c + 1) * p].copy_from_slice(&rtr[c * k + c..c * k + p]);
    }
    crate::dense::cholesky_lower(&mut a, p) && (0..p).all(|j| a[j * p + j] * a[j * p + j] > 1e-10 * rtr[j * k + j])
}

/// Check the fit's large buffers against the memory budget before any is made:
/// the cross-products of [X y] (k²), each factor's per-level blocks
/// (levels · q · (q + k)), and the dense work of the criterion: a few k² for
/// one factor, 2 (m + k)² for several (m: the random effects of the factors
/// after the largest).
fn check_memory(specs: &[FactorSpec], k: usize) -> Result<()> {
    use crate::budget;
    let k = k as u128;
    let per_level: u128 = specs.iter().map(|s| (s.nlev * s.zcols.len()) as u128 * (s.zcols.len() as u128 + k)).sum();
    let dense = if specs.len() == 1 {
        4 * k * k
    } else {
        let sizes: Vec<u128> = specs.iter().map(|s| (s.nlev * s.zcols.len()) as u128).collect();
        let m = sizes.iter().sum::<u128>() - sizes.iter().max().copied().unwrap_or(0);
        2 * (m + k) * (m + k)
    };
    let what = if specs.len() == 1 {
        "the fit (per-group blocks and the fixed-effects system)".to_string()
    } else {
        "the fit (per-level blocks and the dense block of the crossed factors after the largest)".to_string()
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
fn check_rank(rtr: &[f64], k: usize, xcols: &[DesignColumn], means: Option<&[f64]>) -> Result<()> {
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
            } else if kept.iter().any(|&i| matches!(xcols[i].source, Source::Ones)) {
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
            let intercept = kept.iter().position(|&i| matches!(xcols[i].source, Source::Ones));
            let constant = mv[j] - kept.iter().zip(coef.iter()).map(|(&i, c)| c * mv[i]).sum::<f64>();
            if let Some(pos) = intercept {
                if constant.abs() > 1e-8 * mv[j].abs().max(sjj.sqrt()) && !with.contains(&"'(Intercept)'".to_string()) {
                    with.insert(0, format!("'{}'", xcols[kept[pos]].name));
                }
            }
        }
        problems.push(format!("'{}' is a linear combination of {}", xcols[j].name, with.join(", ")));
    }
    if !problems.is_empty() {
        bail!("the fixed-effects design is rank deficient: {}; remove the aliased term(s) from the formula", problems.join("; "));
    }
    Ok(())
}

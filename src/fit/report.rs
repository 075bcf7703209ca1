//! From the optimum to the model value: the statistics kept for inference,
//! the asymptotics (Satterthwaite's df, standard errors of the variance
//! parameters), the tidy rows and the BLUPs on the data scale.

use super::estimates::Estimates;
use super::setup::{FactorSpec, Setup};
use crate::accumulator::Accumulator;
use crate::bail;
use crate::error::Result;
use crate::inference::distributions::{t_quantile, t_two_sided, z_two_sided};
use crate::inference::likelihood::Likelihood;
use crate::inference::satterthwaite::Asymptotic;
use crate::inference::stored::{FactorStats, Stored};
use crate::model::{FactorResult, Model};
use crate::options::{Ddf, Method};
use crate::tidy::{Text, TidyRow};

const Z975: f64 = 1.959_963_984_540_054;

/// The fit's order of factors for output and statistics: most levels first
/// (the elimination order of `crossed`, a stable sort of the formula's order).
pub(super) fn out_order(specs: &[FactorSpec]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(specs[i].nlev));
    order
}

/// The statistics the model value keeps (the problem's blocks, moved out of `est`).
pub(crate) fn statistics(acc: &Accumulator, setup: &Setup, est: &mut Estimates) -> Stored {
    let specs = &setup.specs;
    let blocks = std::mem::take(&mut est.blocks);
    Stored {
        n: setup.n,
        p: setup.p,
        method: acc.options.method,
        factors: out_order(specs)
            .iter()
            .zip(blocks)
            .map(|(&si, (ztz, ztr))| FactorStats {
                q: specs[si].zcols.len(),
                nlev: specs[si].nlev,
                blocks: specs[si].layout.blocks.iter().map(|&(_, s)| s).collect(),
                tmat: specs[si].tmat.clone(),
                ztz,
                ztr,
            })
            .collect(),
        pairs: std::mem::take(&mut est.pairs),
        rtr: std::mem::take(&mut est.rtr),
        theta: est.theta.clone(),
        intercept_shift: setup.intercept_shift.clone(),
        y_shift: if setup.uncentre { setup.y_mean } else { 0.0 },
        log_weights: acc.log_weights,
    }
}

/// The delta-method SE of the var/cov entries of Var(b) of factor `f` (stats
/// order, θ from `offset`), σ̂² s² (TΛΛᵀTᵀ)_ab in φ = (θ, s): q×q, column-major.
fn covariance_se(stats: &Stored, f: usize, offset: usize, a: &Asymptotic) -> Vec<f64> {
    let fs = &stats.factors[f];
    let q = fs.q;
    let layout = crate::theta::ThetaLayout::new(&fs.blocks);
    let nt = layout.len();
    let cov_at = |phi: &[f64]| -> Vec<f64> {
        let s = phi[phi.len() - 1];
        let lambda = layout.lambda(&phi[offset..offset + nt]);
        crate::inference::varpar::covariance(stats, f, &lambda, a.sigma2 * s * s)
    };
    let m = a.phi.len();
    let mut grads = vec![vec![0.0; m]; q * q];
    for i in 0..m {
        if i < m - 1 && !(offset..offset + nt).contains(&i) {
            continue;
        }
        // Var(b) is quadratic in φ: central differences are exact up to rounding.
        let h = 1e-3 * a.phi[i].abs().max(0.1);
        let (mut up, mut down) = (a.phi.clone(), a.phi.clone());
        up[i] += h;
        down[i] -= h;
        let (cu, cd) = (cov_at(&up), cov_at(&down));
        for e in 0..q * q {
            grads[e][i] = (cu[e] - cd[e]) / (2.0 * h);
        }
    }
    grads
        .iter()
        .map(|g| a.variance_of(g).max(0.0).sqrt())
        .collect()
}

/// The rows of the fixed effects: z tests, or t tests on Satterthwaite's df.
fn fixed_rows(setup: &Setup, beta: &[f64], vcov: &[f64], df: Option<&[f64]>) -> Vec<TidyRow> {
    let p = setup.p;
    (0..p)
        .map(|j| {
            let (e, se) = (beta[j], vcov[j * p + j].sqrt());
            let z = e / se;
            let mut r = TidyRow::new("fixed");
            r.term = Some(setup.xcols[j].name.as_str().into());
            r.estimate = Some(e);
            r.std_error = Some(se);
            r.statistic = Some(z);
            let d = df.map(|d| d[j]).filter(|d| d.is_finite() && *d > 0.0);
            let (pv, crit) = match d {
                Some(d) => (t_two_sided(z, d), t_quantile(0.975, d)),
                None => (z_two_sided(z), Z975),
            };
            r.df = d;
            r.p_value = Some(pv);
            r.conf_low = Some(e - crit * se);
            r.conf_high = Some(e + crit * se);
            r
        })
        .collect()
}

/// var/sd/cov/cor per factor and block, then the residual's, with the SEs of var and cov.
fn ran_pars_rows(
    setup: &Setup,
    est: &Estimates,
    stats: &Stored,
    asym: Option<&Asymptotic>,
) -> Vec<TidyRow> {
    let mut rows = Vec::new();
    let mut offset = 0;
    for (f, &si) in out_order(&setup.specs).iter().enumerate() {
        let spec = &setup.specs[si];
        let q = spec.zcols.len();
        let sigma_b = crate::inference::varpar::covariance(stats, f, &est.lambdas[si], est.sigma2);
        let se = asym.map(|a| covariance_se(stats, f, offset, a));
        offset += spec.layout.len();
        let group_text: Text = spec.name.as_str().into();
        let at = |a: usize, b: usize| sigma_b[b * q + a];
        let se_at =
            |a: usize, b: usize| se.as_ref().map(|s| s[b * q + a]).filter(|v| v.is_finite());
        for (bi, &(off, s)) in spec.layout.blocks.iter().enumerate() {
            let names = &spec.bars_terms[bi];
            let mut push = |term: String, v: f64, std_error: Option<f64>| {
                let mut r = TidyRow::new("ran_pars");
                r.group_var = Some(group_text.clone());
                r.term = Some(term.into());
                r.estimate = Some(v);
                r.std_error = std_error;
                rows.push(r);
            };
            for j in off..off + s {
                push(format!("var__{}", names[j - off]), at(j, j), se_at(j, j));
                push(
                    format!("sd__{}", names[j - off]),
                    at(j, j).max(0.0).sqrt(),
                    None,
                );
            }
            for a in off..off + s {
                for b in a + 1..off + s {
                    let (c, va, vb) = (at(a, b), at(a, a), at(b, b));
                    push(
                        format!("cov__{}.{}", names[a - off], names[b - off]),
                        c,
                        se_at(a, b),
                    );
                    // Each SD on its own: va·vb overflows (or underflows) at extreme scales of y.
                    let cor = if va > 0.0 && vb > 0.0 {
                        (c / (va.sqrt() * vb.sqrt())).clamp(-1.0, 1.0)
                    } else {
                        f64::NAN
                    };
                    push(
                        format!("cor__{}.{}", names[a - off], names[b - off]),
                        cor,
                        None,
                    );
                }
            }
        }
    }
    // σ² = σ̂² s²: its gradient in φ is 2σ̂² in s.
    let sigma_se = asym.map(|a| {
        let mut g = vec![0.0; a.phi.len()];
        g[a.phi.len() - 1] = 2.0 * a.sigma2;
        a.variance_of(&g).sqrt()
    });
    for (term, v, se) in [
        ("var__Observation", est.sigma2, sigma_se),
        ("sd__Observation", est.sigma2.sqrt(), None),
    ] {
        let mut r = TidyRow::new("ran_pars");
        r.group_var = Some("Residual".into());
        r.term = Some(term.into());
        r.estimate = Some(v);
        r.std_error = se.filter(|x| x.is_finite());
        rows.push(r);
    }
    rows
}

/// One factor's BLUPs on the data scale, b = T b_c, term by term (term a's
/// levels at a·nl…, in `order`), and from the conditional covariances `cond`
/// (when given) their conditional SDs, sqrt(diag(T C Tᵀ)); else no SDs.
pub(crate) fn data_scale(
    tmat: &[f64],
    q: usize,
    order: &[u32],
    blups: &[f64],
    cond: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let nl = order.len();
    let mut estimate = vec![0.0; q * nl];
    let mut std_error = if cond.is_some() {
        vec![0.0; q * nl]
    } else {
        Vec::new()
    };
    for a in 0..q {
        for (li, &g) in order.iter().enumerate() {
            let g = g as usize;
            let bc = &blups[g * q..(g + 1) * q];
            estimate[a * nl + li] = (0..q).map(|t| tmat[t * q + a] * bc[t]).sum();
            if let Some(cond) = cond {
                let cc = &cond[g * q * q..(g + 1) * q * q];
                let var: f64 = (0..q)
                    .map(|s| {
                        (0..q)
                            .map(|t| tmat[s * q + a] * cc[t * q + s] * tmat[t * q + a])
                            .sum::<f64>()
                    })
                    .sum();
                std_error[a * nl + li] = var.max(0.0).sqrt();
            }
        }
    }
    (estimate, std_error)
}

/// BLUPs on the data scale (b = T b_c) for every factor, with their conditional SDs when asked for.
fn factor_results<'a>(
    acc: &Accumulator,
    setup: &'a Setup,
    est: &Estimates,
) -> Vec<FactorResult<'a>> {
    let mut out = Vec::new();
    for &si in &out_order(&setup.specs) {
        let spec = &setup.specs[si];
        let q = spec.zcols.len();
        let tmat = &spec.tmat;
        let factor = &acc.factors[spec.index];
        // lme4 sorts the levels.
        let order = factor.levels.sorted();
        let cond = acc.options.ranef.then(|| est.cond_cov[si].as_slice());
        let (estimate, std_error) = data_scale(tmat, q, &order, &est.blups[si], cond);
        out.push(FactorResult {
            name: spec.name.clone(),
            vars: factor.vars.clone(),
            terms: &spec.zcols,
            order,
            factor_index: spec.index,
            blup: estimate,
            cond_sd: if acc.options.ranef {
                Some(std_error)
            } else {
                None
            },
        });
    }
    out
}

/// The `fit` rows: counts, criteria, convergence.
fn fit_rows(acc: &Accumulator, setup: &Setup, est: &Estimates) -> Vec<TidyRow> {
    let (n, p, specs) = (setup.n, setup.p, &setup.specs);
    // With prior weights the problem is that of the √w-scaled rows; the data's
    // deviance (lme4's) is its criterion minus Σ log wᵢ.
    let dev = est.deviance - acc.log_weights;
    let df = (p + est.theta.len() + 1) as f64;
    let singular = est.diagonal.iter().any(|&i| est.theta[i] < 1e-4);
    let row = |term: &str, v: f64, group: Option<Text>| {
        let mut r = TidyRow::new("fit");
        r.term = Some(term.into());
        r.estimate = Some(v);
        r.group_var = group;
        r
    };
    let mut rows = vec![
        row("nobs", n, None),
        row("nobs_dropped", acc.n_dropped as f64, None),
    ];
    for &si in &out_order(specs) {
        rows.push(row(
            "ngroups",
            specs[si].nlev as f64,
            Some(specs[si].name.as_str().into()),
        ));
    }
    rows.push(row("logLik", -dev / 2.0, None));
    rows.push(row("AIC", dev + 2.0 * df, None));
    rows.push(row("BIC", dev + df * n.ln(), None));
    rows.push(row(
        if acc.options.method == Method::Reml {
            "REMLcrit"
        } else {
            "deviance"
        },
        dev,
        None,
    ));
    rows.push(row("sigma", est.sigma2.sqrt(), None));
    rows.push(row(
        "converged",
        if est.converged { 1.0 } else { 0.0 },
        None,
    ));
    rows.push(row("singular", if singular { 1.0 } else { 0.0 }, None));
    rows.push(row("iterations", est.evaluations as f64, None));
    rows
}

/// The model value: β and Cov(β̂) on the data scale, the tidy rows, the BLUPs and the statistics.
pub(super) fn model(acc: &Accumulator, setup: &Setup, mut est: Estimates) -> Result<Model> {
    let stats = statistics(acc, setup, &mut est);
    let lik = stats.likelihood(stats.method);
    let (beta, head, tail) = table(acc, setup, &est, &stats, lik.as_ref())?;
    let factors = factor_results(acc, setup, &est);
    let mut model = crate::model::build(acc, &setup.xcols, beta, factors, head, tail);
    model.stats = Some(stats);
    Ok(model)
}

/// β on the data scale and the tidy rows before the BLUPs (fixed, ran_pars)
/// and after them (fit), with the df `acc`'s options ask for, the
/// asymptotics taken on `lik` (the stored problem, or its shards).
pub(crate) fn table(
    acc: &Accumulator,
    setup: &Setup,
    est: &Estimates,
    stats: &Stored,
    lik: &dyn Likelihood,
) -> Result<(Vec<f64>, Vec<TidyRow>, Vec<TidyRow>)> {
    let asym =
        crate::inference::fitted::asymptotic_of(stats, lik, acc.options.ddf == Ddf::Satterthwaite);
    let beta = stats.beta_on_data_scale(&est.beta);
    let (vcov, df) = match acc.options.ddf {
        Ddf::None => (stats.vcov_on_data_scale(&est.vcov), None),
        Ddf::Satterthwaite => {
            let df = asym.as_ref().map(|a| {
                (0..setup.p)
                    .map(|j| a.df(&unit(setup.p, j)))
                    .collect::<Vec<f64>>()
            });
            (stats.vcov_on_data_scale(&est.vcov), df)
        }
        Ddf::KenwardRoger => kenward_roger(stats, lik)?,
    };
    let mut head = fixed_rows(setup, &beta, &vcov, df.as_deref());
    head.extend(ran_pars_rows(setup, est, stats, asym.as_ref()));
    let tail = fit_rows(acc, setup, est);
    Ok((beta, head, tail))
}

/// pbkrtest's adjusted Cov(β̂) (data scale) and the KR df of each coefficient.
fn kenward_roger(stats: &Stored, lik: &dyn Likelihood) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
    if stats.method != Method::Reml {
        bail!("ddf := 'Kenward-Roger' needs a REML fit (pbkrtest defines it for REML); use method := 'REML' or ddf := 'Satterthwaite'");
    }
    let kr = crate::inference::fitted::kenward_roger_of(stats, lik)?;
    let p = stats.p;
    let df = (0..p)
        .map(|j| {
            let (lc, _) = stats.contrast_on_problem_scale(&unit(p, j));
            kr.contrast(&lc, &kr.beta).map(|c| c.df)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok((stats.vcov_on_data_scale(&kr.vcov_adj), Some(df)))
}

fn unit(p: usize, j: usize) -> Vec<f64> {
    let mut l = vec![0.0; p];
    l[j] = 1.0;
    l
}

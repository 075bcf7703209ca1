//! The inference functions as SQL calls them: a kind, one or two model values
//! and options (`key=value` pairs), giving a `Table` whose columns the SQL
//! macro names. Column maps per kind are in `ext::sql`.

use std::collections::HashMap;

use super::anova::anova;
use super::contrast::{joint_test, row_test};
use super::distributions::z_quantile;
use super::fitted::{load, Fitted};
use super::lrt::lrt;
use super::table::{Row, Table};
use crate::bail;
use crate::error::Result;

/// Options as the macros pass them: `key␟value` pairs joined by `␞`.
pub fn parse_options(text: &str) -> HashMap<String, String> {
    text.split('\u{1e}')
        .filter(|s| !s.is_empty())
        .filter_map(|kv| {
            kv.split_once('\u{1f}')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn number(opts: &HashMap<String, String>, key: &str, default: f64) -> Result<f64> {
    match opts.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .map_err(|_| crate::error::LmmError::new(format!("{key} := '{v}' is not a number"))),
    }
}

fn level(opts: &HashMap<String, String>) -> Result<f64> {
    let level = number(opts, "level", 0.95)?;
    if !(level > 0.0 && level < 1.0) {
        bail!("level := {level} is outside (0, 1); a confidence level such as 0.95 is wanted");
    }
    Ok(level)
}

/// `ddf`: 'Satterthwaite' (default) or 'Kenward-Roger'.
fn ddf(opts: &HashMap<String, String>) -> Result<Ddf> {
    match opts.get("ddf").map(|s| s.to_ascii_lowercase()).as_deref() {
        None | Some("satterthwaite") => Ok(Ddf::Satterthwaite),
        Some("kenward-roger") | Some("kenward_roger") => Ok(Ddf::KenwardRoger),
        Some(other) => {
            bail!("ddf := '{other}' is not known; use 'Satterthwaite' or 'Kenward-Roger'")
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Ddf {
    Satterthwaite,
    KenwardRoger,
}

/// Contrast rows from the macro's text: rows by `␞`, entries by `␝`, name and weight by `␟`.
pub fn parse_contrast(text: &str) -> Result<Vec<Vec<(String, f64)>>> {
    text.split('\u{1e}')
        .map(|row| {
            row.split('\u{1d}')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let (k, v) = e.split_once('\u{1f}').ok_or_else(|| {
                        crate::error::LmmError::new("a contrast entry is not name → weight")
                    })?;
                    let w = v.trim().parse::<f64>().map_err(|_| {
                        crate::error::LmmError::new(format!(
                            "the contrast's weight for '{k}' ('{v}') is not a number"
                        ))
                    })?;
                    Ok((k.to_string(), w))
                })
                .collect()
        })
        .collect()
}

pub fn run(
    kind: &str,
    model: &[u8],
    other: Option<&[u8]>,
    options: &str,
    contrast: Option<&str>,
) -> Result<Table> {
    let opts = parse_options(options);
    match kind {
        "vcov" => vcov(&load(model, "lmm_vcov")?, &opts),
        "confint" => confint(&load(model, "lmm_confint")?, &opts),
        "lrt" => {
            let Some(other) = other else {
                bail!("lmm_lrt needs two models")
            };
            let refit = !matches!(opts.get("refit").map(String::as_str), Some("false"));
            let (m0, m1) = (load(model, "lmm_lrt")?, load(other, "lmm_lrt")?);
            let t = lrt(&m0, &m1, refit)?;
            Ok(t.lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let test = i != t.smaller;
                    Row::new(
                        &[Some(if i == 0 { "model0" } else { "model1" })],
                        &[
                            Some(l.npar as f64),
                            Some(l.aic),
                            Some(l.bic),
                            Some(l.loglik),
                            Some(l.deviance),
                            test.then_some(t.chisq),
                            test.then_some(t.df as f64),
                            test.then_some(t.p_value),
                        ],
                    )
                })
                .collect())
        }
        "anova" => {
            let m = load(model, "lmm_anova")?;
            let type_ = number(&opts, "type", 3.0)?;
            if type_.fract() != 0.0 {
                bail!("type := {type_} is not an ANOVA type; use 1, 2 or 3");
            }
            let rows = if ddf(&opts)? == Ddf::KenwardRoger {
                let kr = m.kenward_roger()?;
                super::anova::anova_with(&m, type_ as u32, &|l: &[Vec<f64>]| kr_joint(&m, &kr, l))?
            } else {
                let a = m.asymptotic()?;
                anova(&m, type_ as u32, &m.model.beta, &a)?
            };
            Ok(rows
                .iter()
                .map(|r| {
                    let t = &r.test;
                    Row::new(
                        &[Some(&r.term)],
                        &[
                            Some(t.sum_sq),
                            Some(t.mean_sq),
                            Some(t.num_df),
                            Some(t.den_df),
                            Some(t.f_value),
                            Some(t.p_value),
                        ],
                    )
                })
                .collect())
        }
        "profile" => {
            let m = load(model, "lmm_profile")?;
            let pr = super::profile::profile(
                &m.model,
                &m.stats,
                opts.get("parameter").map(String::as_str),
            )?;
            let mut out = Vec::new();
            for t in &pr.traces {
                let p = &t.parameter;
                for pt in &t.points {
                    out.push(Row::new(
                        &[p.group_var.as_deref(), Some(&p.term), Some(&p.name)],
                        &[Some(pt.value), Some(pt.zeta)],
                    ));
                }
            }
            Ok(out)
        }
        "summary" => {
            let m = load(model, "lmm_summary")?;
            Ok(vec![Row::new(&[Some(&super::summary::summary(&m)?)], &[])])
        }
        "bootstrap" => {
            let m = load(model, "lmm_bootstrap")?;
            let (nsim, seed) = (count(&opts, "nsim", 1000)?, count(&opts, "seed", 0)?);
            let reps = super::bootstrap::refit::bootstrap(&m, nsim, seed)?;
            let names = m.coef_names();
            let vp = varpar_names(&m)?;
            let mut out = Vec::with_capacity(reps.len() * (names.len() + vp.len()));
            for (i, r) in reps.iter().enumerate() {
                let rep = Some((i + 1) as f64);
                for (name, b) in names.iter().zip(&r.beta) {
                    out.push(Row::new(
                        &[Some("fixed"), None, Some(name)],
                        &[rep, Some(*b)],
                    ));
                }
                for ((g, t), v) in vp.iter().zip(&r.varpar) {
                    out.push(Row::new(
                        &[Some("ran_pars"), Some(g), Some(t)],
                        &[rep, Some(*v)],
                    ));
                }
            }
            Ok(out)
        }
        "contrast" => {
            let m = load(model, "lmm_contrast")?;
            let rows = m.contrast_matrix(&parse_contrast(contrast.unwrap_or(""))?)?;
            if ddf(&opts)? == Ddf::KenwardRoger {
                return kr_contrast_table(&m, &rows);
            }
            let a = m.asymptotic()?;
            let beta = &m.model.beta;
            let mut out = Vec::new();
            let j = joint_test(&rows, beta, &a);
            out.push(Row::new(
                &[Some("joint")],
                &[
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(j.sum_sq),
                    Some(j.mean_sq),
                    Some(j.num_df),
                    Some(j.den_df),
                    Some(j.f_value),
                ],
            ));
            out[0].num[6] = Some(j.p_value);
            for (i, l) in rows.iter().enumerate() {
                let r = row_test(l, beta, &a);
                let name = format!("{}", i + 1);
                out.push(Row::new(
                    &[Some("row"), Some(&name)],
                    &[
                        Some(r.estimate),
                        Some(r.std_error),
                        Some(r.df),
                        Some(r.t_value),
                        Some(r.conf_low),
                        Some(r.conf_high),
                        Some(r.p_value),
                    ],
                ));
            }
            Ok(out)
        }
        _ => bail!("unknown inference function '{kind}'"),
    }
}

/// The Kenward–Roger F test of L β = 0 (rows on the data scale).
fn kr_joint(
    m: &Fitted,
    kr: &super::kenward_roger::KenwardRoger,
    rows: &[Vec<f64>],
) -> Result<super::contrast::JointTest> {
    // KR's own β̂ (GLS at θ̂): no evaluation of the likelihood per test.
    let (lc, beta) = m.on_problem_scale(rows, &kr.beta);
    let t = kr.test(&lc, rows.len(), &beta)?;
    let mean_sq = t.f_unscaled * kr.sigma2;
    Ok(super::contrast::JointTest {
        sum_sq: mean_sq * t.num_df as f64,
        mean_sq,
        num_df: t.num_df as f64,
        den_df: t.den_df,
        f_value: t.f_value,
        p_value: t.p_value,
    })
}

/// `lmm_contrast` with Kenward–Roger: the joint F test and a t test per row (95% interval).
fn kr_contrast_table(m: &Fitted, rows: &[Vec<f64>]) -> Result<Table> {
    let kr = m.kenward_roger()?;
    let j = kr_joint(m, &kr, rows)?;
    let mut out = vec![Row::new(
        &[Some("joint")],
        &[
            None,
            None,
            None,
            None,
            None,
            None,
            Some(j.p_value),
            Some(j.sum_sq),
            Some(j.mean_sq),
            Some(j.num_df),
            Some(j.den_df),
            Some(j.f_value),
        ],
    )];
    for (i, l) in rows.iter().enumerate() {
        let (lc, beta) = m.on_problem_scale(std::slice::from_ref(l), &kr.beta);
        let c = kr.contrast(&lc, &beta)?;
        let crit = super::distributions::t_quantile(0.975, c.df);
        let name = format!("{}", i + 1);
        out.push(Row::new(
            &[Some("row"), Some(&name)],
            &[
                Some(c.estimate),
                Some(c.std_error),
                Some(c.df),
                Some(c.t_value),
                Some(c.estimate - crit * c.std_error),
                Some(c.estimate + crit * c.std_error),
                Some(c.p_value),
            ],
        ));
    }
    Ok(out)
}

/// A non-negative integer option.
fn count(opts: &HashMap<String, String>, key: &str, default: u64) -> Result<u64> {
    let v = number(opts, key, default as f64)?;
    if !(v >= 0.0 && v.fract() == 0.0 && v <= 1e18) {
        if key == "nsim" {
            bail!("nsim := {v} is not a positive whole number of bootstrap replicates");
        }
        bail!("{key} := {v} is not a non-negative whole number");
    }
    if key == "nsim" && v == 0.0 {
        bail!("nsim := 0: the number of bootstrap replicates must be positive");
    }
    Ok(v as u64)
}

/// (group_var, term) of the variance parameters, as `varpar::sdcor` orders them.
fn varpar_names(m: &Fitted) -> Result<Vec<(String, String)>> {
    let pt = m.point()?;
    let s2 = pt.sigma2(m.method(), m.n(), m.p());
    Ok(
        super::varpar::sdcor(&m.stats, &m.model, &m.lik.lambdas(&m.stats.theta), s2)
            .into_iter()
            .map(|v| (v.group_var, v.term))
            .collect(),
    )
}

/// Every parameter of a confidence table with its estimate: fixed effects, then sd/cor and σ.
fn estimates(m: &Fitted) -> Result<Vec<(Option<String>, String, f64)>> {
    let pt = m.point()?;
    let s2 = pt.sigma2(m.method(), m.n(), m.p());
    let mut out: Vec<(Option<String>, String, f64)> = m
        .coef_names()
        .into_iter()
        .zip(m.model.beta.iter())
        .map(|(n, b)| (None, n, *b))
        .collect();
    for v in super::varpar::sdcor(&m.stats, &m.model, &m.lik.lambdas(&m.stats.theta), s2) {
        out.push((Some(v.group_var), v.term, v.value));
    }
    Ok(out)
}

/// R's default (type 7) quantile of sorted values.
fn quantile(sorted: &[f64], prob: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * prob;
    let (lo, frac) = (h.floor() as usize, h - h.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    Some(sorted[lo] + frac * (sorted[hi] - sorted[lo]))
}

/// Rows `term1, term2, covariance` of Cov(β̂).
fn vcov(m: &Fitted, opts: &HashMap<String, String>) -> Result<Table> {
    let v = match opts.get("ddf") {
        Some(_) if ddf(opts)? == Ddf::KenwardRoger => {
            m.stats.vcov_on_data_scale(&m.kenward_roger()?.vcov_adj)
        }
        _ => m.vcov()?,
    };
    let names = m.coef_names();
    let p = names.len();
    let mut out = Vec::with_capacity(p * p);
    for (i, a) in names.iter().enumerate() {
        for (j, b) in names.iter().enumerate() {
            out.push(Row::new(&[Some(a), Some(b)], &[Some(v[j * p + i])]));
        }
    }
    Ok(out)
}

/// `group_var, term, estimate, conf_low, conf_high, method`.
fn confint(m: &Fitted, opts: &HashMap<String, String>) -> Result<Table> {
    let level = level(opts)?;
    let method = opts
        .get("method")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| "profile".into());
    match method.as_str() {
        "wald" => {
            let v = m.vcov()?;
            let p = m.p();
            let z = z_quantile(0.5 + level / 2.0);
            Ok(m.coef_names()
                .iter()
                .enumerate()
                .map(|(j, name)| {
                    let (e, se) = (m.model.beta[j], v[j * p + j].sqrt());
                    Row::new(
                        &[None, Some(name), Some("Wald")],
                        &[Some(e), Some(e - z * se), Some(e + z * se)],
                    )
                })
                .collect())
        }
        "boot" => {
            let (nsim, seed) = (count(opts, "nsim", 1000)?, count(opts, "seed", 0)?);
            let reps = super::bootstrap::refit::bootstrap(m, nsim, seed)?;
            let est = estimates(m)?;
            let mut out = Vec::new();
            for (j, (g, t, e)) in est.iter().enumerate() {
                let mut values: Vec<f64> = reps
                    .iter()
                    .map(|r| {
                        if j < m.p() {
                            r.beta[j]
                        } else {
                            r.varpar[j - m.p()]
                        }
                    })
                    .filter(|v| v.is_finite())
                    .collect();
                values.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (lo, hi) = (
                    quantile(&values, (1.0 - level) / 2.0),
                    quantile(&values, (1.0 + level) / 2.0),
                );
                out.push(Row::new(
                    &[g.as_deref(), Some(t), Some("boot")],
                    &[Some(*e), lo, hi],
                ));
            }
            Ok(out)
        }
        "profile" => {
            let limits = super::profile::confint(&m.model, &m.stats, level)?;
            let est = estimates(m)?;
            // A correlation estimated at ±1 (a singular fit inside a block): the
            // variance parameters sit on the boundary of their space, where ζ has
            // no regular profile; lme4 gives NA for all of them (score_rs), so do we.
            let degenerate = est
                .iter()
                .any(|(_, t, v)| t.starts_with("cor__") && v.abs() > 1.0 - 1e-6);
            Ok(limits
                .iter()
                .map(|iv| {
                    let p = &iv.parameter;
                    let e = est
                        .iter()
                        .find(|(g, t, _)| *g == p.group_var && *t == p.term)
                        .map(|x| x.2);
                    let variance = !matches!(p.kind, super::profile::Kind::Fixed { .. });
                    let (lo, hi) = if degenerate && variance {
                        (None, None)
                    } else {
                        (iv.lower, iv.upper)
                    };
                    Row::new(
                        &[p.group_var.as_deref(), Some(&p.term), Some("profile")],
                        &[e, lo, hi],
                    )
                })
                .collect())
        }
        other => bail!("method := '{other}' is not known; use 'profile', 'Wald' or 'boot'"),
    }
}

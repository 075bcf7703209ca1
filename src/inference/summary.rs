//! lme4's `summary()` as text: the formula, method and criterion, the random
//! effects (variance, SD, correlations), the numbers of observations and
//! groups, the fixed effects with SE, df (Satterthwaite), t and p, their
//! correlations, and convergence and singularity in words.

use std::fmt::Write;

use super::distributions::t_two_sided;
use super::fitted::Fitted;
use super::varpar::covariance;
use crate::error::Result;
use crate::options::Method;

fn fit_value(m: &Fitted, term: &str) -> Option<f64> {
    m.model
        .tail
        .iter()
        .find(|r| r.term.as_deref() == Some(term))
        .and_then(|r| r.estimate)
}

/// 4 significant digits, as R prints a summary column.
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

fn p_text(p: f64) -> String {
    if p < 2e-16 {
        "< 2e-16".into()
    } else if p < 1e-3 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// Why the fit is singular, in words (empty if it is not).
fn singularity(m: &Fitted) -> Vec<String> {
    let mut out = Vec::new();
    let lambdas = m.lik.lambdas(&m.stats.theta);
    for (f, fs) in m.stats.factors.iter().enumerate() {
        let q = fs.q;
        let cov = covariance(&m.stats, f, &lambdas[f], 1.0);
        let names: Vec<&str> = m.model.factors[f]
            .terms
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let group = &m.model.factors[f].name;
        let mut off = 0;
        for &s in &fs.blocks {
            let lam = &lambdas[f];
            for j in off..off + s {
                if lam[j * q + j].abs() >= 1e-4 {
                    continue;
                }
                if cov[j * q + j]
                    <= 1e-8
                        * (0..q)
                            .map(|i| cov[i * q + i])
                            .fold(0.0, f64::max)
                            .max(f64::MIN_POSITIVE)
                {
                    out.push(format!("the variance of '{}' in '{group}' is 0", names[j]));
                } else {
                    let block: Vec<String> = names[off..off + s]
                        .iter()
                        .map(|n| format!("'{n}'"))
                        .collect();
                    out.push(format!("the random effects {} of '{group}' are perfectly correlated (a correlation of ±1)", block.join(", ")));
                }
            }
            off += s;
        }
    }
    out
}

pub fn summary(m: &Fitted) -> Result<String> {
    let mut s = String::new();
    let reml = m.method() == Method::Reml;
    let _ = writeln!(
        s,
        "Linear mixed model fit by {} [lmm]",
        if reml { "REML" } else { "maximum likelihood" }
    );
    let _ = writeln!(s, "Formula: {}", m.model.formula);
    let crit = fit_value(m, if reml { "REMLcrit" } else { "deviance" }).unwrap_or(f64::NAN);
    if reml {
        let _ = writeln!(s, "\nREML criterion at convergence: {crit:.1}\n");
    } else {
        let (npar, n) = (m.npar() as f64, m.n());
        let _ = writeln!(s, "\n     AIC      BIC   logLik deviance");
        let _ = writeln!(
            s,
            "{:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
            crit + 2.0 * npar,
            crit + npar * n.ln(),
            -crit / 2.0,
            crit
        );
    }
    // Random effects.
    let pt = m.point()?;
    let sigma2 = pt.sigma2(m.method(), m.n(), m.p());
    let lambdas = m.lik.lambdas(&m.stats.theta);
    let _ = writeln!(s, "Random effects:");
    let _ = writeln!(
        s,
        " {:<10} {:<14} {:>12} {:>10}  Corr",
        "Groups", "Name", "Variance", "Std.Dev."
    );
    for (f, fs) in m.stats.factors.iter().enumerate() {
        let q = fs.q;
        let cov = covariance(&m.stats, f, &lambdas[f], sigma2);
        let names: Vec<&str> = m.model.factors[f]
            .terms
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let mut off = 0;
        for &b in &fs.blocks {
            for j in off..off + b {
                let group = if j == 0 {
                    m.model.factors[f].name.as_str()
                } else {
                    ""
                };
                let v = cov[j * q + j];
                let cors: Vec<String> = (off..j)
                    .map(|i| {
                        let d = (cov[i * q + i] * v).sqrt();
                        if d > 0.0 {
                            format!("{:>5.2}", cov[j * q + i] / d)
                        } else {
                            "  NaN".into()
                        }
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    " {:<10} {:<14} {:>12} {:>10}  {}",
                    group,
                    names[j],
                    sig(v),
                    sig(v.max(0.0).sqrt()),
                    cors.join(" ")
                );
            }
            off += b;
        }
    }
    let _ = writeln!(
        s,
        " {:<10} {:<14} {:>12} {:>10}",
        "Residual",
        "",
        sig(sigma2),
        sig(sigma2.sqrt())
    );
    let groups: Vec<String> = m
        .model
        .factors
        .iter()
        .map(|f| format!("{}, {}", f.name, f.nlevels()))
        .collect();
    let _ = writeln!(
        s,
        "Number of obs: {}, groups:  {}\n",
        m.n(),
        groups.join("; ")
    );
    // Fixed effects.
    let vcov = m.vcov()?;
    let p = m.p();
    let asym = m.asymptotic().ok();
    let _ = writeln!(
        s,
        "Fixed effects{}:",
        if asym.is_some() {
            " (t tests on Satterthwaite's df)"
        } else {
            " (Satterthwaite's df undefined here)"
        }
    );
    let names = m.coef_names();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(11);
    let _ = writeln!(
        s,
        "{:<width$} {:>12} {:>12} {:>10} {:>9} {:>10}",
        "", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"
    );
    for j in 0..p {
        let (e, se) = (m.model.beta[j], vcov[j * p + j].sqrt());
        let mut l = vec![0.0; p];
        l[j] = 1.0;
        let df = asym.as_ref().map(|a| a.df(&l)).filter(|d| d.is_finite());
        let t = e / se;
        let pv = df.map(|d| t_two_sided(t, d));
        let _ = writeln!(
            s,
            "{:<width$} {:>12} {:>12} {:>10} {:>9.3} {:>10}",
            names[j],
            sig(e),
            sig(se),
            df.map_or("NA".into(), |d| format!("{d:.2}")),
            t,
            pv.map_or("NA".into(), p_text)
        );
    }
    if p > 1 {
        let _ = writeln!(s, "\nCorrelation of Fixed Effects:");
        let short: Vec<String> = names
            .iter()
            .map(|n| n.chars().filter(|c| c.is_alphanumeric()).take(6).collect())
            .collect();
        let _ = writeln!(
            s,
            "{:<width$} {}",
            "",
            short[..p - 1]
                .iter()
                .map(|n| format!("{n:>6}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for i in 1..p {
            let row: Vec<String> = (0..i)
                .map(|j| {
                    format!(
                        "{:>6.3}",
                        vcov[j * p + i] / (vcov[i * p + i] * vcov[j * p + j]).sqrt()
                    )
                })
                .collect();
            let _ = writeln!(s, "{:<width$} {}", names[i], row.join(" "));
        }
    }
    let converged = fit_value(m, "converged") == Some(1.0);
    let evaluations = fit_value(m, "iterations").unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "\n{}",
        if converged {
            format!("The optimizer converged ({evaluations} evaluations of the criterion).")
        } else {
            format!("The optimizer did NOT converge ({evaluations} evaluations): the estimates may not be the optimum.")
        }
    );
    for why in singularity(m) {
        let _ = writeln!(s, "boundary (singular) fit: {why}");
    }
    Ok(s)
}

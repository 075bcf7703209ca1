//! Likelihood-ratio tests between nested models (lme4's `anova(m0, m1)`).
//!
//! Each model contributes npar = p + |θ| + 1, logLik = −d/2, AIC = d + 2 npar,
//! BIC = d + npar log n, with d its ML deviance (`refit`: a REML fit is refitted
//! by ML from its own θ, as lme4 does) or its criterion as it is. Ordered by
//! npar, χ² = max(0, d₀ − d₁) on npar₁ − npar₀ df.

use super::distributions::chisq_upper;
use super::fitted::Fitted;
use crate::bail;
use crate::error::Result;
use crate::options::Method;

pub struct ModelLine {
    pub npar: usize,
    pub aic: f64,
    pub bic: f64,
    pub loglik: f64,
    pub deviance: f64,
}

pub struct Lrt {
    /// in the order given
    pub lines: [ModelLine; 2],
    /// 0 or 1: which model is the smaller
    pub smaller: usize,
    pub chisq: f64,
    pub df: usize,
    pub p_value: f64,
}

fn line(m: &Fitted, refit: bool) -> Result<ModelLine> {
    let scaled = if refit || m.method() == Method::Ml {
        m.ml_deviance()?
    } else {
        m.point()?.deviance
    };
    // prior weights: the criterion is that of the √w-scaled rows (`stored`)
    let deviance = scaled - m.stats.log_weights;
    let npar = m.npar();
    let k = npar as f64;
    Ok(ModelLine {
        npar,
        aic: deviance + 2.0 * k,
        bic: deviance + k * m.n().ln(),
        loglik: -deviance / 2.0,
        deviance,
    })
}

pub fn lrt(m0: &Fitted, m1: &Fitted, refit: bool) -> Result<Lrt> {
    if m0.n() != m1.n() {
        bail!("the models were fitted to different rows: {} and {} observations; a likelihood-ratio test compares fits to the same data", m0.n(), m1.n());
    }
    let response = |m: &Fitted| {
        m.model
            .vars
            .iter()
            .find(|v| v.response)
            .map(|v| v.name.clone())
            .unwrap_or_default()
    };
    if response(m0) != response(m1) {
        bail!("the models have different responses ('{}' and '{}'); a likelihood-ratio test compares models of the same response", response(m0), response(m1));
    }
    if !refit && m0.method() != m1.method() {
        bail!("with refit := false both models must be fitted by the same criterion; one is REML and the other ML");
    }
    if m0.npar() == m1.npar() {
        bail!("both models have {} parameters; a likelihood-ratio test needs nested models with different numbers of parameters", m0.npar());
    }
    let lines = [line(m0, refit)?, line(m1, refit)?];
    let smaller = if lines[0].npar < lines[1].npar { 0 } else { 1 };
    let (small, large) = (&lines[smaller], &lines[1 - smaller]);
    let chisq = (small.deviance - large.deviance).max(0.0);
    let df = large.npar - small.npar;
    Ok(Lrt {
        chisq,
        df,
        p_value: chisq_upper(chisq, df as f64),
        smaller,
        lines,
    })
}

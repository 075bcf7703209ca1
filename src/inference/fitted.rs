//! A model value read for inference: the model (names, estimates) and the
//! statistics of its fit, with the likelihood under the fit's own criterion.

use super::likelihood::{residual_dof, Likelihood, Point};
use super::satterthwaite::Asymptotic;
use super::stored::Stored;
use crate::bail;
use crate::error::Result;
use crate::model::{self, Model};
use crate::options::Method;

pub struct Fitted {
    pub model: Model,
    pub stats: Stored,
    pub lik: Box<dyn Likelihood>,
}

/// Read a model value for a function that needs its statistics (`what` names it).
pub fn load(bytes: &[u8], what: &str) -> Result<Fitted> {
    let model = Model::from_bytes(bytes)?;
    let Some(stats) = model::stats_of(bytes)? else {
        bail!(
            "{what} needs the statistics of the fit, and this model value has none (it was saved by an lmm \
             before format 2): refit it with lmm_model_agg or lmm_model to get a value that keeps them"
        );
    };
    if stats.p != model.fixed.len() || stats.factors.len() != model.factors.len() {
        bail!("the model value is damaged: its statistics do not belong to its model");
    }
    let lik = stats.likelihood(stats.method);
    Ok(Fitted { model, stats, lik })
}

/// The asymptotics at the stored optimum of `lik` (the stored problem under its criterion).
pub fn asymptotic_of(
    stats: &Stored,
    lik: &dyn Likelihood,
    values_allowed: bool,
) -> Option<Asymptotic> {
    let (method, n, p) = (lik.method(), stats.n, stats.p);
    let at = |t: &[f64]| {
        let pt = lik.point(t)?;
        let s2 = pt.sigma2(method, n, p);
        Some((
            pt.logdets(method),
            s2,
            stats.vcov_on_data_scale(&pt.vcov(method, n, p)),
        ))
    };
    let gradient = |t: &[f64]| lik.deviance_and_gradient(t).map(|(_, g)| g);
    Asymptotic::new(
        &stats.theta,
        residual_dof(method, n, p),
        p,
        &at,
        Some(&gradient),
        values_allowed,
    )
}

/// Kenward–Roger at the stored optimum of `lik` (REML), on the problem's columns.
pub fn kenward_roger_of(
    stats: &Stored,
    lik: &dyn Likelihood,
) -> Result<super::kenward_roger::KenwardRoger> {
    use crate::crossed::{Factor, Pair};
    let factors: Vec<Factor> = stats
        .factors
        .iter()
        .map(|f| Factor {
            q: f.q,
            nlev: f.nlev,
            ztz: f.ztz.clone(),
            ztr: f.ztr.clone(),
            off: 0,
        })
        .collect();
    let pairs: Vec<Pair> = stats
        .pairs
        .iter()
        .map(|p| Pair {
            a: p.a,
            b: p.b,
            cells: p.cells.clone(),
            blocks: p.blocks.clone(),
        })
        .collect();
    let blocks: Vec<Vec<usize>> = stats.factors.iter().map(|f| f.blocks.clone()).collect();
    let lambdas = lik.lambdas(&stats.theta);
    let Some(pt) = lik.point(&stats.theta) else {
        bail!("the model's statistics do not give a positive definite system at its estimates");
    };
    let sigma2 = pt.sigma2(lik.method(), stats.n, stats.p);
    let input = super::kenward_roger::KrInput {
        n: stats.n,
        p: stats.p,
        factors: &factors,
        pairs: &pairs,
        rtr: &stats.rtr,
        lambdas: &lambdas,
        blocks: &blocks,
        sigma2,
    };
    super::kenward_roger::KenwardRoger::new(&input)
}

impl Fitted {
    pub fn n(&self) -> f64 {
        self.stats.n
    }
    pub fn p(&self) -> usize {
        self.stats.p
    }
    pub fn method(&self) -> Method {
        self.stats.method
    }
    /// Parameters counted by logLik, AIC and BIC: β, θ and σ.
    pub fn npar(&self) -> usize {
        self.p() + self.stats.theta.len() + 1
    }
    pub fn coef_names(&self) -> Vec<String> {
        self.model.fixed.iter().map(|c| c.name.clone()).collect()
    }

    pub fn point(&self) -> Result<Point> {
        match self.lik.point(&self.stats.theta) {
            Some(p) => Ok(p),
            None => bail!(
                "the model's statistics do not give a positive definite system at its estimates"
            ),
        }
    }

    /// Cov(β̂) on the data scale.
    pub fn vcov(&self) -> Result<Vec<f64>> {
        let pt = self.point()?;
        Ok(self
            .stats
            .vcov_on_data_scale(&pt.vcov(self.method(), self.n(), self.p())))
    }

    /// The asymptotic covariance of (θ, σ) and the derivatives of Cov(β̂) (data scale).
    pub fn asymptotic(&self) -> Result<Asymptotic> {
        match asymptotic_of(&self.stats, self.lik.as_ref(), true) {
            Some(a) => Ok(a),
            None => bail!(
                "the Hessian of the criterion in the variance parameters is not positive definite at the estimates \
                 (a singular fit?), so Satterthwaite's degrees of freedom are not defined"
            ),
        }
    }

    /// The criterion's value at the fit, and the ML deviance at the ML optimum
    /// (a refit from the fit's θ when the fit is REML).
    pub fn ml_deviance(&self) -> Result<f64> {
        if self.method() == Method::Ml {
            return Ok(self.point()?.deviance);
        }
        let ml = self.stats.likelihood(Method::Ml);
        let opt = super::optimum::optimize(ml.as_ref(), &self.stats.theta);
        if !opt.deviance.is_finite() {
            bail!("the refit by maximum likelihood failed");
        }
        Ok(opt.deviance)
    }

    /// Kenward–Roger at the fit (REML only, as pbkrtest), on the problem's columns.
    pub fn kenward_roger(&self) -> Result<super::kenward_roger::KenwardRoger> {
        if self.method() != Method::Reml {
            bail!("Kenward-Roger degrees of freedom are defined for REML fits (as pbkrtest computes them); refit with method := 'REML' or use ddf := 'Satterthwaite'");
        }
        kenward_roger_of(&self.stats, self.lik.as_ref())
    }

    /// L (rows on the data scale) on the problem's columns, row-major, and
    /// `beta_c` (β̂ there) with ȳ on the intercept, so that L_c β = Lβ̂ on the data scale.
    pub fn on_problem_scale(&self, rows: &[Vec<f64>], beta_c: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut beta = beta_c.to_vec();
        if !beta.is_empty() {
            beta[0] += self.stats.y_shift;
        }
        (
            rows.iter()
                .flat_map(|l| self.stats.contrast_on_problem_scale(l).0)
                .collect(),
            beta,
        )
    }

    /// A contrast matrix from rows of (coefficient, weight); unknown names are an error listing the known ones.
    pub fn contrast_matrix(&self, rows: &[Vec<(String, f64)>]) -> Result<Vec<Vec<f64>>> {
        let names = self.coef_names();
        if rows.is_empty() {
            bail!("the contrast has no rows: give a list of MAPs from coefficient name to weight, e.g. [MAP {{'Time': 1.0}}]");
        }
        rows.iter()
            .map(|r| {
                let mut l = vec![0.0; names.len()];
                for (name, w) in r {
                    let Some(j) = names.iter().position(|c| c == name) else {
                        bail!("the contrast names the coefficient '{name}', which the model does not have; its coefficients are {}",
                              names.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", "));
                    };
                    if !w.is_finite() {
                        bail!("the contrast's weight for '{name}' is {w}; weights must be finite");
                    }
                    l[j] += w;
                }
                Ok(l)
            })
            .collect()
    }
}

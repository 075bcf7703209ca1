//! The bootstrap's replicates refitted: each replicate's statistics (drawn
//! by the `Simulator`) go through the same likelihood and optimizer as the
//! fit, started at θ̂, with no pass over rows. Replicates run in parallel;
//! each depends on (seed, index) alone, so the output is the same for any
//! number of threads and any schedule.

use rayon::prelude::*;

use super::{Response, Simulator};
use crate::bail;
use crate::cancel;
use crate::crossed::{Factor, Pair};
use crate::error::Result;
use crate::inference::fitted::Fitted;
use crate::inference::optimum::{inverse_hessian, optimize_from};
use crate::inference::stored::Stored;
use crate::inference::varpar::sdcor;

/// The largest `nsim` accepted (a bound on the work before it starts).
pub const MAX_NSIM: u64 = 1_000_000;

/// One replicate's estimates: fixed effects (data scale), then sd/cor and σ as `varpar::sdcor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replicate {
    pub beta: Vec<f64>,
    pub varpar: Vec<f64>,
    pub converged: bool,
}

fn simulator(s: &Stored) -> Result<Simulator> {
    let factors: Vec<Factor> = s
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
    let pairs: Vec<Pair> = s
        .pairs
        .iter()
        .map(|p| Pair {
            a: p.a,
            b: p.b,
            cells: p.cells.clone(),
            blocks: p.blocks.clone(),
        })
        .collect();
    Simulator::new(s.n, s.p, &factors, &pairs, &s.rtr)
        .map_err(|e| crate::error::LmmError::new(format!("the bootstrap cannot start: {e}")))
}

/// The stored statistics with a replicate's response in place of y's.
fn with_response(s: &Stored, r: &Response) -> Stored {
    let mut out = s.clone();
    let (p, k) = (s.p, s.k());
    for (f, zty) in out.factors.iter_mut().zip(&r.zty) {
        let q = f.q;
        for (level, values) in zty.chunks_exact(q).enumerate() {
            let at = level * q * k + p * q;
            f.ztr[at..at + q].copy_from_slice(values);
        }
    }
    for (j, &v) in r.xty.iter().enumerate() {
        out.rtr[p * k + j] = v;
        out.rtr[j * k + p] = v;
    }
    out.rtr[p * k + p] = r.yty;
    out
}

/// `nsim` replicates under `seed`.
pub fn bootstrap(m: &Fitted, nsim: u64, seed: u64) -> Result<Vec<Replicate>> {
    if nsim == 0 || nsim > MAX_NSIM {
        bail!("nsim := {nsim} is outside 1..{MAX_NSIM}; the number of bootstrap replicates must be positive");
    }
    let sim = simulator(&m.stats)?;
    let theta = &m.stats.theta;
    let point = m.point()?;
    let sigma = point.sigma2(m.method(), m.n(), m.p()).sqrt();
    let lambdas = m.lik.lambdas(theta);
    // The curvature at θ̂ starts every replicate's quasi-Newton search (the
    // replicates' optima lie near θ̂, their curvatures near this one).
    let h0 = inverse_hessian(m.lik.as_ref(), theta);
    let control = cancel::current();
    let (stored, model, method, n, p) = (&m.stats, &m.model, m.method(), m.n(), m.p());
    let one = |i: u64| -> Result<Replicate> {
        cancel::checkpoint();
        let response = sim.replicate(seed, i, &point.beta, &lambdas, sigma);
        let stats = with_response(stored, &response);
        let (intercept_shift, y_shift) = (stats.intercept_shift.clone(), stats.y_shift);
        let lik = stats.into_likelihood(method);
        let opt = optimize_from(lik.as_ref(), theta, h0.as_deref());
        let Some(pt) = lik.point(&opt.theta) else {
            bail!("bootstrap replicate {} could not be refitted", i + 1);
        };
        let s2 = pt.sigma2(method, n, p);
        let varpar = sdcor(stored, model, &lik.lambdas(&opt.theta), s2)
            .into_iter()
            .map(|v| v.value)
            .collect();
        let mut beta = pt.beta.clone();
        if !beta.is_empty() {
            beta[0] += intercept_shift
                .iter()
                .zip(&pt.beta)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + y_shift;
        }
        Ok(Replicate {
            beta,
            varpar,
            converged: opt.converged,
        })
    };
    (0..nsim)
        .into_par_iter()
        .map(|i| cancel::with(control.clone(), || one(i)))
        .collect()
}

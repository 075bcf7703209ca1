//! The driver of a distributed fit: `fit::prepare_with` on the merged
//! header, the one-factor optimizer on a `reml::Problem` whose groups are the
//! shards' (`reml::Shards`, one round trip per evaluation), then the tidy
//! table's fixed, ran_pars and fit rows; the BLUP rows are the shards'.

use std::sync::{Arc, Mutex};

use super::protocol::Request;
use crate::accumulator::Accumulator;
use crate::bail;
use crate::error::{LmmError, Result};
use crate::inference::likelihood::OneFactor;
use crate::options::Ddf;
use crate::reml::{Partial, Problem, Shards};
use crate::start::MomentSums;
use crate::tidy::Tidy;

/// Puts a request to every shard; their answers in shard order (a shard's
/// None: a group's system is not positive definite there).
pub trait Ask: Send + Sync {
    fn ask(&self, request: &Request) -> Result<Vec<Option<Vec<f64>>>>;
}

/// The fit: the table without its BLUP rows, and the request that gives
/// them (None unless the fit reports BLUPs, `ranef`).
pub struct Fitted {
    pub tidy: Tidy,
    pub blups: Option<Request>,
    /// round trips to the shards
    pub requests: usize,
}

/// The shards as `reml::Problem`'s groups: answers added in shard order. The
/// first failure to ask is kept and ends the fit with its message.
struct Remote {
    ask: Arc<dyn Ask>,
    k: usize,
    q: usize,
    failure: Mutex<Option<LmmError>>,
    requests: Mutex<usize>,
}

impl Remote {
    /// The shards' answers to `request`, added; None if one is None or asking failed.
    fn total<T>(
        &self,
        request: Request,
        read: impl Fn(&[f64]) -> Option<T>,
        add: impl Fn(&mut T, &T),
    ) -> Option<T> {
        if self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return None;
        }
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let answers = match self.ask.ask(&request) {
            Ok(a) => a,
            Err(e) => {
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                return None;
            }
        };
        let mut total: Option<T> = None;
        for answer in answers {
            let Some(part) = read(&answer?) else {
                let e = LmmError::new("a shard's answer does not have the size of the request's");
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                return None;
            };
            match &mut total {
                Some(t) => add(t, &part),
                None => total = Some(part),
            }
        }
        total
    }
}

impl Shards for Remote {
    fn partial(&self, lambda: &[f64], pos: Option<&[(usize, usize)]>) -> Option<Partial> {
        let nth = pos.map_or(0, |p| p.len());
        let request = Request::Partial {
            lambda: lambda.to_vec(),
            positions: pos.map(|p| p.to_vec()),
        };
        let k = self.k;
        self.total(
            request,
            |v| Partial::from_values(v, k, nth),
            |a, b| a.add(b),
        )
    }

    fn moments(&self, beta: &[f64]) -> Option<MomentSums> {
        let q = self.q;
        self.total(
            Request::Moments {
                beta: beta.to_vec(),
            },
            |v| MomentSums::from_values(v, q),
            |a, b| a.add(b),
        )
    }
}

/// Fit the model of `merged` (the header of every shard merged, with the
/// fit's options) whose `levels` groups are on the shards `ask` reaches.
pub fn fit(merged: &Accumulator, levels: usize, ask: Arc<dyn Ask>) -> Result<Fitted> {
    if merged.options.ddf == Ddf::KenwardRoger {
        bail!("ddf := 'Kenward-Roger' is not available in a distributed fit (its sums need every group at once); use the merged statistics, or ddf := 'Satterthwaite'");
    }
    super::one_factor(merged)?;
    let setup = crate::fit::prepare_with(merged, Some(&[levels]))?;
    let spec = &setup.specs[0];
    let q = spec.zcols.len();
    let remote = Arc::new(Remote {
        ask,
        k: setup.k,
        q,
        failure: Mutex::new(None),
        requests: Mutex::new(0),
    });
    let problem = Problem {
        n: setup.n,
        p: setup.p,
        q,
        groups: 0,
        ztz: Vec::new(),
        ztr: Vec::new(),
        rtr: setup.rtr.clone(),
        method: merged.options.method,
        shards: Some(remote.clone() as Arc<dyn Shards>),
    };
    let failed = |r: &Remote| r.failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    let est = crate::fit::optimize_one_factor(problem.clone(), &spec.layout);
    if let Some(e) = failed(&remote) {
        return Err(e);
    }
    let mut est = est?;
    let stats = crate::fit::statistics(merged, &setup, &mut est);
    let lik = OneFactor::new(problem, spec.layout.clone());
    let (_, head, tail) = crate::fit::table(merged, &setup, &est, &stats, &lik)?;
    if let Some(e) = failed(&remote) {
        return Err(e);
    }
    let blups = merged.options.ranef.then(|| Request::Blups {
        lambda: est.lambdas[0].clone(),
        beta: est.beta.clone(),
        sigma2: est.sigma2,
    });
    let requests = *remote.requests.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Fitted {
        tidy: Tidy {
            head,
            ran_vals: Vec::new(),
            tail,
        },
        blups,
        requests,
    })
}

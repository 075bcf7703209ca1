//! One shard of a distributed fit: its groups' blocks on the columns every
//! side agrees on (`header`), and its answers to the driver's requests.

use super::header;
use super::protocol::Request;
use crate::accumulator::Accumulator;
use crate::bail;
use crate::error::Result;
use crate::reml::Problem;
use crate::tidy::{RanVals, Text, Tidy};

pub struct Shard {
    /// the shard's groups (its own blocks; no RᵀR: the driver has it)
    problem: Problem,
    /// b = T b_c, the map back to the data scale (q×q)
    tmat: Vec<f64>,
    group_var: Text,
    terms: Vec<Text>,
    /// the shard's level labels, and its groups in lme4's (sorted) order
    labels: Vec<Text>,
    order: Vec<u32>,
}

impl Shard {
    /// The shard of statistics `stats`, given the merged header of all
    /// shards and their total number of levels.
    pub fn new(merged: &Accumulator, levels: usize, stats: &Accumulator) -> Result<Shard> {
        let acc = header::rebase(merged, stats)?;
        super::one_factor(merged)?;
        let setup = crate::fit::prepare_with(merged, Some(&[levels]))?;
        let spec = &setup.specs[0];
        let (ztz, ztr) = setup.level_blocks(&acc, spec);
        let factor = &acc.factors[spec.index];
        let k = setup.k;
        let problem = Problem {
            n: setup.n,
            p: setup.p,
            q: spec.zcols.len(),
            groups: factor.store.len(),
            ztz,
            ztr,
            rtr: vec![0.0; k * k],
            method: merged.options.method,
            shards: None,
        };
        Ok(Shard {
            problem,
            tmat: spec.tmat.clone(),
            group_var: spec.name.as_str().into(),
            terms: spec.zcols.iter().map(|c| c.name.as_str().into()).collect(),
            labels: factor
                .levels
                .keys
                .iter()
                .map(|k| crate::levels::label(k).into())
                .collect(),
            order: factor.levels.sorted(),
        })
    }

    pub fn groups(&self) -> usize {
        self.problem.groups
    }

    fn check_lambda(&self, lambda: &[f64]) -> Result<()> {
        let q = self.problem.q;
        if lambda.len() != q * q {
            bail!("a request of a distributed fit has Λ of {} entries for q = {q}: it is of another model", lambda.len());
        }
        Ok(())
    }

    fn check_beta(&self, beta: &[f64]) -> Result<()> {
        if beta.len() != self.problem.p {
            bail!("a request of a distributed fit has {} fixed effects for p = {}: it is of another model", beta.len(), self.problem.p);
        }
        Ok(())
    }

    /// The numbers a `Moments` or `Partial` request asks for (None: a
    /// group's system is not positive definite at that Λ).
    pub fn answer(&self, request: &Request) -> Result<Option<Vec<f64>>> {
        match request {
            Request::Moments { beta } => {
                self.check_beta(beta)?;
                Ok(Some(
                    crate::start::moment_sums(&self.problem, beta).to_values(),
                ))
            }
            Request::Partial { lambda, positions } => {
                self.check_lambda(lambda)?;
                let q = self.problem.q;
                if let Some(pos) = positions {
                    if pos.iter().any(|&(r, c)| r >= q || c > r) {
                        bail!("a request of a distributed fit names a θ position outside Λ's lower triangle");
                    }
                }
                Ok(self
                    .problem
                    .partial_sum(lambda, positions.as_deref())
                    .map(|p| p.to_values()))
            }
            Request::Blups { .. } => {
                bail!("a BLUPs request asks for rows (Shard::blups), not numbers")
            }
        }
    }

    /// The shard's `ran_vals` rows at the estimates of a `Blups` request:
    /// BLUPs and conditional SDs on the data scale, levels sorted as lme4 does.
    pub fn blups(&self, request: &Request) -> Result<Tidy> {
        let Request::Blups {
            lambda,
            beta,
            sigma2,
        } = request
        else {
            bail!("Shard::blups takes a BLUPs request");
        };
        self.check_lambda(lambda)?;
        self.check_beta(beta)?;
        let Some((blups, cond)) = self.problem.modes(lambda, beta, *sigma2) else {
            bail!("a group's system is not positive definite at the estimates");
        };
        let (estimate, std_error) =
            crate::fit::data_scale(&self.tmat, self.problem.q, &self.order, &blups, Some(&cond));
        let levels = self
            .order
            .iter()
            .map(|&g| self.labels[g as usize].clone())
            .collect();
        let ran_vals = vec![RanVals {
            group_var: self.group_var.clone(),
            terms: self.terms.clone(),
            levels,
            estimate,
            std_error,
        }];
        Ok(Tidy {
            head: Vec::new(),
            ran_vals,
            tail: Vec::new(),
        })
    }
}

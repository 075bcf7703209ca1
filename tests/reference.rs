//! The statistics core against lme4 (tests/fixtures, copied from the shared reference).
//!
//! Data are read from the fixture CSVs into chunks the way the DuckDB layer
//! would deliver them (integers as Int, other numbers as Float, text as Text),
//! fed in several chunks to separate states and merged, then fitted.

use lmm::input::Chunk;
use lmm::{Accumulator, Options, TidyRow};
use serde_json::Value;
use std::collections::HashMap;

mod common;
use common::{column_rows as column, read_csv};

pub fn fit_csv(
    csv: &str,
    formula: &str,
    options: Options,
    chunk_rows: usize,
) -> Result<Vec<TidyRow>, lmm::LmmError> {
    let t = read_csv(csv);
    let nrows = t.cells[0].len();
    let proto = Accumulator::new(formula, options)?;
    let needed: Vec<String> = proto.required_columns().to_vec();
    // Alternate chunks between two states, then merge: exercises combine.
    let mut states = vec![proto.clone(), proto.clone()];
    let mut start = 0;
    let mut s = 0;
    while start < nrows {
        let end = (start + chunk_rows).min(nrows);
        let chunk = Chunk {
            columns: needed.iter().map(|n| column(&t, n, start..end)).collect(),
            len: end - start,
        };
        let rows: Vec<usize> = (0..end - start).collect();
        states[s % 2].update(&chunk, &rows)?;
        s += 1;
        start = end;
    }
    let mut acc = proto;
    acc.merge(&states[0])?;
    acc.merge(&states[1])?;
    acc.finish()
}

struct Fit {
    rows: Vec<TidyRow>,
}

impl Fit {
    fn get(&self, effect: &str, group: Option<&str>, level: Option<&str>, term: &str) -> &TidyRow {
        self.rows
            .iter()
            .find(|r| {
                r.effect == effect
                    && r.term.as_deref() == Some(term)
                    && (group.is_none() || r.group_var.as_deref() == group)
                    && (level.is_none() || r.level.as_deref() == level)
            })
            .unwrap_or_else(|| panic!("no row {effect} {group:?} {level:?} {term}"))
    }
    fn fit_stat(&self, term: &str) -> f64 {
        self.get("fit", None, None, term).estimate.unwrap()
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn arr(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

/// Compare one fit (REML or ML) with the lme4 block, with the tolerances of issue 2.
fn check(model: &str, reml: bool) {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("tests/fixtures/{model}.json")).unwrap(),
    )
    .unwrap();
    let block = &fx["lme4"][if reml { "REML" } else { "ML" }];
    let csv = format!("tests/fixtures/{}", fx["dataset"]["file"].as_str().unwrap());
    let formula = fx["formula_lme4"].as_str().unwrap();
    let opts = Options {
        method: if reml {
            lmm::options::Method::Reml
        } else {
            lmm::options::Method::Ml
        },
        ranef: true,
        ..Options::default()
    };
    let fit = Fit {
        rows: fit_csv(&csv, formula, opts, 97).unwrap_or_else(|e| panic!("{model}: {e}")),
    };
    let tag = format!("{model} {}", if reml { "REML" } else { "ML" });

    // Objective: no worse than the best optimum_check objective + 1e-6.
    let crit_name = if reml { "REMLcrit" } else { "deviance" };
    let ours = fit.fit_stat(crit_name);
    let best = block["optimum_check"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| f(&o["objective"]))
        .fold(f64::INFINITY, f64::min);
    let best = best.min(f(&block[if reml { "REML_criterion" } else { "deviance" }]));
    assert!(
        ours <= best + 1e-6,
        "{tag}: objective {ours} vs best {best} (diff {})",
        ours - best
    );
    // logLik / AIC / BIC implied by our objective.
    let df = f(&block["logLik_df"]);
    let n = f(&fx["n_obs"]);
    assert!(
        (fit.fit_stat("logLik") + ours / 2.0).abs() < 1e-6,
        "{tag} logLik"
    );
    assert!(
        (fit.fit_stat("AIC") - (ours + 2.0 * df)).abs() < 1e-6,
        "{tag} AIC"
    );
    assert!(
        (fit.fit_stat("BIC") - (ours + df * n.ln())).abs() < 1e-6,
        "{tag} BIC"
    );
    assert_eq!(fit.fit_stat("nobs"), n, "{tag} nobs");

    // Fixed effects and standard errors.
    let fe = &block["fixed_effects"];
    let names: Vec<&str> = fe["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let est = arr(&fe["estimate"]);
    let se = arr(&fe["std_error"]);
    for (i, name) in names.iter().enumerate() {
        let r = fit.get("fixed", None, None, name);
        let (e, s) = (r.estimate.unwrap(), r.std_error.unwrap());
        let tol = (1e-4 * est[i].abs()).max(1e-3 * se[i]);
        assert!(
            (e - est[i]).abs() <= tol,
            "{tag}: fixed {name} {e} vs {} (tol {tol})",
            est[i]
        );
        assert!(
            (s - se[i]).abs() <= 1e-3 * se[i],
            "{tag}: se {name} {s} vs {}",
            se[i]
        );
    }

    // Variance components.
    let close = |ours: f64, reference: f64, what: &str| {
        let ok = if reference == 0.0 {
            ours.abs() <= 1e-6
        } else {
            (ours - reference).abs() <= 1e-3 * reference.abs()
        };
        assert!(ok, "{tag}: {what} {ours} vs {reference}");
    };
    for vc in block["var_components"].as_array().unwrap() {
        let group = vc["grouping_factor"].as_str().unwrap();
        let terms: Vec<&str> = vc["terms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let cov = vc["covariance"].as_array().unwrap();
        for (a, ta) in terms.iter().enumerate() {
            let v = fit
                .get("ran_pars", Some(group), None, &format!("var__{ta}"))
                .estimate
                .unwrap();
            close(v, f(&cov[a][a]), &format!("var {group} {ta}"));
            for (b, tb) in terms.iter().enumerate().skip(a + 1) {
                let c = fit
                    .get("ran_pars", Some(group), None, &format!("cov__{ta}.{tb}"))
                    .estimate
                    .unwrap();
                let scale = (f(&cov[a][a]) * f(&cov[b][b])).sqrt();
                assert!(
                    (c - f(&cov[a][b])).abs() <= 1e-3 * scale,
                    "{tag}: cov {ta}.{tb} {c} vs {}",
                    f(&cov[a][b])
                );
            }
        }
    }
    close(
        fit.get("ran_pars", Some("Residual"), None, "var__Observation")
            .estimate
            .unwrap(),
        f(&block["residual_variance"]),
        "sigma²",
    );

    // BLUPs and conditional SDs, within 1e-3 of the largest |BLUP| of the term.
    for bl in block["blups"].as_array().unwrap() {
        let group = bl["grouping_factor"].as_str().unwrap();
        let terms: Vec<&str> = bl["terms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let levels: Vec<&str> = bl["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let values = bl["values"].as_array().unwrap();
        let sds = bl["cond_sd"].as_array().unwrap();
        for (t, term) in terms.iter().enumerate() {
            let biggest = values.iter().map(|v| f(&v[t]).abs()).fold(0.0, f64::max);
            let tol = 1e-3 * biggest.max(1e-12);
            let mut by_level: HashMap<&str, &TidyRow> = HashMap::new();
            for r in fit.rows.iter().filter(|r| {
                r.effect == "ran_vals"
                    && r.term.as_deref() == Some(*term)
                    && r.group_var.as_deref() == Some(group)
            }) {
                by_level.insert(r.level.as_deref().unwrap(), r);
            }
            assert_eq!(
                by_level.len(),
                levels.len(),
                "{tag}: number of levels of {group}"
            );
            for (l, level) in levels.iter().enumerate() {
                let r = by_level[level];
                let (b, sd) = (r.estimate.unwrap(), r.std_error.unwrap());
                assert!(
                    (b - f(&values[l][t])).abs() <= tol,
                    "{tag}: BLUP {level} {term} {b} vs {}",
                    f(&values[l][t])
                );
                assert!(
                    (sd - f(&sds[l][t])).abs() <= tol,
                    "{tag}: cond SD {level} {term} {sd} vs {}",
                    f(&sds[l][t])
                );
            }
        }
    }
    let singular = fit.fit_stat("singular") == 1.0;
    assert_eq!(
        singular,
        block["isSingular"].as_bool().unwrap(),
        "{tag}: singular"
    );
    assert_eq!(fit.fit_stat("converged"), 1.0, "{tag}: converged");
}

macro_rules! reference_tests {
    ($($name:ident: $model:expr,)*) => {
        $(
            #[test]
            fn $name() {
                check($model, true);
                check($model, false);
            }
        )*
    };
}

reference_tests! {
    dietox_ri: "dietox_ri",
    dietox_rs: "dietox_rs",
    dietox_rs_uncorr: "dietox_rs_uncorr",
    sleepstudy_ri: "sleepstudy_ri",
    sleepstudy_rs: "sleepstudy_rs",
    sleepstudy_rs_uncorr: "sleepstudy_rs_uncorr",
    sitka_ri: "sitka_ri",
    sitka_rs: "sitka_rs",
    dyestuff: "dyestuff",
    dyestuff2: "dyestuff2",
    orthodont: "orthodont",
    score_ri: "score_ri",
    score_rs: "score_rs",
    synthetic_small: "synthetic_small",
    penicillin_crossed: "penicillin_crossed",
    pastes_nested: "pastes_nested",
}

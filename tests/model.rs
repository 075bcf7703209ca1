//! The model value: serialization round trip, its tidy table, prediction
//! against lme4's fixtures (fixed effects and BLUPs determine predictions),
//! and the errors a damaged or foreign value gives.

use std::sync::Arc;

use lmm::input::{Chunk, Column, ColumnData};
use lmm::model::{self, Model, FORMAT_VERSION, HEADER_LEN};
use lmm::predict::{self, Prepared};
use lmm::{Accumulator, Options};
use serde_json::Value;

mod common;
use common::{column, Table};

/// A fixture data set by name (`tests/fixtures/data/<name>.csv`).
fn read_csv(name: &str) -> Table {
    common::read_csv(&format!("tests/fixtures/data/{name}.csv"))
}

fn fit_model(data: &str, formula: &str, options: Options) -> (Table, Model) {
    let t = read_csv(data);
    let mut acc = Accumulator::new(formula, options).unwrap();
    let chunk = Chunk {
        columns: acc
            .required_columns()
            .iter()
            .map(|n| column(&t, n))
            .collect(),
        len: t.cells[0].len(),
    };
    let rows: Vec<usize> = (0..chunk.len).collect();
    acc.update(&chunk, &rows).unwrap();
    let m = acc.finish_model().unwrap();
    (t, m)
}

fn prepare(m: &Model) -> Prepared {
    let bytes = m.to_bytes();
    Prepared::from_bytes(&bytes).unwrap()
}

/// Predict every row of `t` (columns by name), with or without random effects.
fn predict_table(p: &Prepared, t: &Table, re: bool) -> lmm::Result<Vec<Option<f64>>> {
    let owned: Vec<Option<Column>> = p
        .model
        .vars
        .iter()
        .map(|v| {
            if p.required(re).contains(&v.name) {
                Some(column(t, &v.name))
            } else {
                None
            }
        })
        .collect();
    let cols: Vec<Option<&Column>> = owned.iter().map(|c| c.as_ref()).collect();
    let n = t.cells[0].len();
    let rows: Vec<usize> = (0..n).collect();
    let mut valid = vec![true; n];
    let mut out = vec![f64::NAN; n];
    p.predict(&cols, &rows, &vec![re; n], &mut valid, &mut out)?;
    Ok((0..n).map(|r| valid[r].then_some(out[r])).collect())
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("tests/fixtures/{name}.json")).unwrap())
        .unwrap()
}

/// lme4's prediction for every row from the fixture's β and BLUPs (one factor,
/// numeric slopes): β·x + Σ_t z_t b_t[level]; `drop` levels are treated as unseen.
fn lme4_predictions(fx: &Value, t: &Table, group: &str, drop: &[&str], re: bool) -> Vec<f64> {
    let reml = &fx["lme4"]["REML"];
    let names: Vec<String> = reml["fixed_effects"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let beta: Vec<f64> = reml["fixed_effects"]["estimate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let blups = &reml["blups"][0];
    let terms: Vec<String> = blups["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let levels: Vec<String> = blups["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let values = blups["values"].as_array().unwrap();
    let value = |row: usize, name: &str| -> f64 {
        if name == "(Intercept)" {
            return 1.0;
        }
        let i = t.names.iter().position(|n| n == name).unwrap();
        t.cells[i][row].parse().unwrap()
    };
    let gi = t.names.iter().position(|n| n == group).unwrap();
    (0..t.cells[0].len())
        .map(|r| {
            let mut eta: f64 = names.iter().zip(&beta).map(|(n, b)| b * value(r, n)).sum();
            let level = &t.cells[gi][r];
            if re && !drop.contains(&level.as_str()) {
                if let Some(l) = levels.iter().position(|x| x == level) {
                    for (k, term) in terms.iter().enumerate() {
                        eta += values[l][k].as_f64().unwrap() * value(r, term);
                    }
                }
            }
            eta
        })
        .collect()
}

fn assert_close(got: &[Option<f64>], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.unwrap_or_else(|| panic!("row {i}: NULL prediction"));
        assert!(
            (g - w).abs() <= rel * w.abs().max(1.0),
            "row {i}: {g} vs lme4 {w}"
        );
    }
}

#[test]
fn serialization_round_trip_is_exact() {
    for (data, formula, options) in [
        ("dietox", "Weight ~ Time + (Time | Pig)", Options::default()),
        (
            "synthetic_small",
            "y ~ x1 + x2 + site + (x1 | g)",
            Options::default(),
        ),
        (
            "pastes",
            "strength ~ 1 + (1 | batch/cask)",
            Options::default(),
        ),
        (
            "sleepstudy",
            "Reaction ~ Days + (Days || Subject)",
            Options::from_pairs(&[("ranef".into(), Some("false".into()))]).unwrap(),
        ),
    ] {
        let (_, m) = fit_model(data, formula, options);
        let bytes = m.to_bytes();
        assert_eq!(&bytes[..8], model::MAGIC);
        // no contrast matrices: the version a format-2 reader reads
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
            model::PLAIN_VERSION
        );
        let mut back = Model::from_bytes(&bytes).unwrap();
        // `from_bytes` leaves the statistics unread (prediction never needs them); `stats_of` reads them.
        assert!(back.stats.is_none());
        back.stats = model::stats_of(&bytes).unwrap();
        assert!(back.stats.is_some());
        assert_eq!(back, m, "{formula}");
        // Writing the read model gives the same bytes (identity is stable).
        assert_eq!(back.to_bytes(), bytes);
        // The tidy table from the value equals the fit's.
        let a: Vec<_> = m.tidy().into_rows();
        let b: Vec<_> = back.into_tidy().into_rows();
        assert_eq!(a, b);
    }
}

#[test]
fn tidy_of_model_equals_fit_tidy() {
    let t = read_csv("sleepstudy");
    let mut acc =
        Accumulator::new("Reaction ~ Days + (Days | Subject)", Options::default()).unwrap();
    let chunk = Chunk {
        columns: acc
            .required_columns()
            .iter()
            .map(|n| column(&t, n))
            .collect(),
        len: t.cells[0].len(),
    };
    acc.update(&chunk, &(0..chunk.len).collect::<Vec<_>>())
        .unwrap();
    let direct = acc.finish().unwrap();
    let via_model = Model::from_bytes(&acc.finish_model().unwrap().to_bytes())
        .unwrap()
        .into_tidy()
        .into_rows();
    // 2 fixed, 6 + 2 ran_pars, 18 × 2 ran_vals, 11 fit rows.
    assert_eq!(direct.len(), 2 + 8 + 36 + 11);
    assert_eq!(direct, via_model);
}

/// The fixture's β and BLUPs put into our model value (names and level order checked).
fn with_lme4_parameters(mut m: Model, fx: &Value) -> Model {
    let reml = &fx["lme4"]["REML"];
    let names: Vec<&str> = reml["fixed_effects"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        m.fixed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        names
    );
    m.beta = reml["fixed_effects"]["estimate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let blups = &reml["blups"][0];
    let f = &mut m.factors[0];
    let levels: Vec<&str> = blups["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        f.keys.iter().map(lmm::levels::label).collect::<Vec<_>>(),
        levels
    );
    let values = blups["values"].as_array().unwrap();
    let nl = levels.len();
    for t in 0..f.terms.len() {
        for l in 0..nl {
            f.blup[t * nl + l] = values[l][t].as_f64().unwrap();
        }
    }
    m
}

#[test]
fn ranef_false_keeps_blups_for_prediction_but_not_in_the_table() {
    let opts = Options::from_pairs(&[("ranef".into(), Some("false".into()))]).unwrap();
    let (t, m) = fit_model("dietox", "Weight ~ Time + (Time | Pig)", opts);
    assert!(m.tidy().ran_vals.is_empty());
    assert_eq!(m.factors[0].blup.len(), 72 * 2);
    let (_, full) = fit_model("dietox", "Weight ~ Time + (Time | Pig)", Options::default());
    assert_eq!(m.factors[0].blup, full.factors[0].blup);
    let p = prepare(&with_lme4_parameters(m, &fixture("dietox_rs")));
    let want = lme4_predictions(&fixture("dietox_rs"), &t, "Pig", &[], true);
    assert_close(&predict_table(&p, &t, true).unwrap(), &want, 1e-6);
}

#[test]
fn predictions_with_lme4_parameters_match_lme4() {
    for (data, fx, formula, group) in [
        ("dietox", "dietox_rs", "Weight ~ Time + (Time | Pig)", "Pig"),
        (
            "sleepstudy",
            "sleepstudy_rs",
            "Reaction ~ Days + (Days | Subject)",
            "Subject",
        ),
    ] {
        let (t, m) = fit_model(data, formula, Options::default());
        let fx = fixture(fx);
        let p = prepare(&with_lme4_parameters(m, &fx));
        assert_close(
            &predict_table(&p, &t, true).unwrap(),
            &lme4_predictions(&fx, &t, group, &[], true),
            1e-6,
        );
        assert_close(
            &predict_table(&p, &t, false).unwrap(),
            &lme4_predictions(&fx, &t, group, &[], false),
            1e-6,
        );
        // With random effects, predictions differ from the population ones.
        let a = predict_table(&p, &t, true).unwrap();
        let b = predict_table(&p, &t, false).unwrap();
        assert!(a
            .iter()
            .zip(&b)
            .any(|(x, y)| (x.unwrap() - y.unwrap()).abs() > 1e-3));
    }
}

/// lme4's predictions at its tightly converged optimum (`optimum_check`,
/// nloptwrap_tight: θ and β), the BLUPs by the closed form
/// b_g = Λ (ΛᵀZ_gᵀZ_gΛ + I)⁻¹ ΛᵀZ_gᵀ(y_g − X_g β), for `y ~ x + (x | g)`.
fn lme4_tight_predictions(fx: &Value, t: &Table, y: &str, x: &str, group: &str) -> Vec<f64> {
    let tight = fx["lme4"]["REML"]["optimum_check"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["optimizer"] == "nloptwrap_tight")
        .unwrap();
    let th: Vec<f64> = tight["theta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let beta: Vec<f64> = tight["beta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let col = |n: &str| t.names.iter().position(|c| c == n).unwrap();
    let (yi, xi, gi) = (col(y), col(x), col(group));
    let n = t.cells[0].len();
    // Λ = [[θ0, 0], [θ1, θ2]]
    let lam = [[th[0], 0.0], [th[1], th[2]]];
    let mut groups: Vec<&str> = t.cells[gi].iter().map(|s| s.as_str()).collect();
    groups.sort();
    groups.dedup();
    let mut b = std::collections::HashMap::new();
    for g in groups {
        // ZᵀZ and Zᵀr for r = y − Xβ, Z = [1, x].
        let (mut ztz, mut ztr) = ([[0.0f64; 2]; 2], [0.0f64; 2]);
        for r in (0..n).filter(|&r| t.cells[gi][r] == g) {
            let xv: f64 = t.cells[xi][r].parse().unwrap();
            let res = t.cells[yi][r].parse::<f64>().unwrap() - beta[0] - beta[1] * xv;
            let z = [1.0, xv];
            for a in 0..2 {
                ztr[a] += z[a] * res;
                for c in 0..2 {
                    ztz[a][c] += z[a] * z[c];
                }
            }
        }
        // M = ΛᵀZᵀZΛ + I, v = ΛᵀZᵀr
        let mut m = [[0.0f64; 2]; 2];
        let mut v = [0.0f64; 2];
        for a in 0..2 {
            for c in 0..2 {
                m[a][c] = (0..2)
                    .map(|i| {
                        (0..2)
                            .map(|j| lam[i][a] * ztz[i][j] * lam[j][c])
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    + if a == c { 1.0 } else { 0.0 };
            }
            v[a] = (0..2).map(|i| lam[i][a] * ztr[i]).sum();
        }
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let u = [
            (m[1][1] * v[0] - m[0][1] * v[1]) / det,
            (m[0][0] * v[1] - m[1][0] * v[0]) / det,
        ];
        b.insert(
            g.to_string(),
            [lam[0][0] * u[0], lam[1][0] * u[0] + lam[1][1] * u[1]],
        );
    }
    (0..n)
        .map(|r| {
            let xv: f64 = t.cells[xi][r].parse().unwrap();
            let bg = b[&t.cells[gi][r]];
            beta[0] + beta[1] * xv + bg[0] + bg[1] * xv
        })
        .collect()
}

#[test]
fn own_fit_predictions_match_lme4_optimum() {
    for (data, fx, formula, y, x, group) in [
        (
            "dietox",
            "dietox_rs",
            "Weight ~ Time + (Time | Pig)",
            "Weight",
            "Time",
            "Pig",
        ),
        (
            "sleepstudy",
            "sleepstudy_rs",
            "Reaction ~ Days + (Days | Subject)",
            "Reaction",
            "Days",
            "Subject",
        ),
    ] {
        let (t, m) = fit_model(data, formula, Options::default());
        let p = prepare(&m);
        let want = lme4_tight_predictions(&fixture(fx), &t, y, x, group);
        assert_close(&predict_table(&p, &t, true).unwrap(), &want, 1e-6);
    }
}

#[test]
fn unseen_group_gets_population_prediction() {
    // Fit without pig 4601, predict all rows: 4601's rows get X β only.
    let t = read_csv("dietox");
    let gi = t.names.iter().position(|n| n == "Pig").unwrap();
    let keep: Vec<usize> = (0..t.cells[0].len())
        .filter(|&r| t.cells[gi][r] != "4601")
        .collect();
    let mut acc = Accumulator::new("Weight ~ Time + (Time | Pig)", Options::default()).unwrap();
    let chunk = Chunk {
        columns: acc
            .required_columns()
            .iter()
            .map(|n| column(&t, n))
            .collect(),
        len: t.cells[0].len(),
    };
    acc.update(&chunk, &keep).unwrap();
    let p = prepare(&acc.finish_model().unwrap());
    let with = predict_table(&p, &t, true).unwrap();
    let without = predict_table(&p, &t, false).unwrap();
    let mut seen_unseen = 0;
    for r in 0..t.cells[0].len() {
        if t.cells[gi][r] == "4601" {
            assert_eq!(with[r], without[r]);
            seen_unseen += 1;
        } else {
            assert_ne!(with[r], without[r]);
        }
    }
    assert_eq!(seen_unseen, 12);
}

#[test]
fn categorical_fixed_factor_coding_and_unseen_level() {
    let (t, m) = fit_model(
        "synthetic_small",
        "y ~ x1 + x2 + site + (x1 | g)",
        Options::default(),
    );
    let names: Vec<&str> = m.fixed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["(Intercept)", "x1", "x2", "sitesite_b", "sitesite_c"]
    );
    let site = m.vars.iter().position(|v| v.name == "site").unwrap();
    let labels: Vec<String> = m.vars[site].levels.iter().map(lmm::levels::label).collect();
    assert_eq!(labels, ["site_a", "site_b", "site_c"]);
    let p = prepare(&m);
    // Against lme4, including the site coding (site columns are indicators).
    let fx = fixture("synthetic_small");
    let reml = &fx["lme4"]["REML"];
    let beta: Vec<f64> = reml["fixed_effects"]["estimate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let col = |name: &str| t.names.iter().position(|n| n == name).unwrap();
    let want: Vec<f64> = (0..t.cells[0].len())
        .map(|r| {
            let x1: f64 = t.cells[col("x1")][r].parse().unwrap();
            let x2: f64 = t.cells[col("x2")][r].parse().unwrap();
            let s = &t.cells[col("site")][r];
            beta[0]
                + beta[1] * x1
                + beta[2] * x2
                + if s == "site_b" { beta[3] } else { 0.0 }
                + if s == "site_c" { beta[4] } else { 0.0 }
        })
        .collect();
    assert_close(&predict_table(&p, &t, false).unwrap(), &want, 1e-6);
    // An unseen site is an error naming the column and the level.
    let mut t2 = read_csv("synthetic_small");
    let si = t2.names.iter().position(|n| n == "site").unwrap();
    t2.cells[si][3] = "site_z".into();
    let err = predict_table(&p, &t2, true).unwrap_err().to_string();
    assert!(
        err.contains("column 'site'") && err.contains("'site_z'"),
        "{err}"
    );
    // An unseen group is not an error.
    let gi = t2.names.iter().position(|n| n == "g").unwrap();
    t2.cells[si][3] = "site_a".into();
    t2.cells[gi][3] = "new_group".into();
    let out = predict_table(&p, &t2, true).unwrap();
    assert!(out[3].is_some());
}

#[test]
fn null_in_a_needed_column_gives_null() {
    let (mut t, m) = fit_model(
        "sleepstudy",
        "Reaction ~ Days + (Days | Subject)",
        Options::default(),
    );
    let p = prepare(&m);
    let di = t.names.iter().position(|n| n == "Days").unwrap();
    let si = t.names.iter().position(|n| n == "Subject").unwrap();
    t.cells[di][0] = String::new();
    t.cells[si][1] = String::new();
    let with = predict_table(&p, &t, true).unwrap();
    let without = predict_table(&p, &t, false).unwrap();
    assert_eq!(with[0], None);
    assert_eq!(with[1], None);
    assert_eq!(without[0], None);
    // Without random effects the grouping column is not needed.
    assert!(without[1].is_some());
    assert!(with[2].is_some());
}

#[test]
fn damaged_and_foreign_values_give_clear_errors() {
    let (_, m) = fit_model(
        "sleepstudy",
        "Reaction ~ Days + (Days | Subject)",
        Options::default(),
    );
    let good = m.to_bytes();
    let msg = |b: &[u8]| {
        Prepared::from_bytes(b)
            .err()
            .expect("must fail")
            .to_string()
    };

    let e = msg(b"Weight ~ Time");
    assert!(e.contains("not an lmm model"), "{e}");
    let e = msg(&[]);
    assert!(e.contains("not an lmm model"), "{e}");

    let mut future = good.clone();
    future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = msg(&future);
    assert!(
        e.contains(&format!("format version {}", FORMAT_VERSION + 1)) && e.contains("newer"),
        "{e}"
    );

    let e = msg(&good[..good.len() - 5]);
    assert!(e.contains("truncated"), "{e}");
    let e = msg(&good[..HEADER_LEN - 2]);
    assert!(e.contains("truncated"), "{e}");

    let mut flipped = good.clone();
    let mid = HEADER_LEN + (good.len() - HEADER_LEN) / 2;
    flipped[mid] ^= 0x40;
    let e = msg(&flipped);
    assert!(e.contains("corrupt"), "{e}");

    // A payload that is consistent with its header but malformed inside.
    let mut bad = good[..HEADER_LEN].to_vec();
    bad.extend_from_slice(&[0xff; 40]);
    let payload_len = (bad.len() - HEADER_LEN) as u64;
    let sum = model::checksum(&bad[HEADER_LEN..]);
    bad[16..24].copy_from_slice(&sum.to_le_bytes());
    bad[24..32].copy_from_slice(&payload_len.to_le_bytes());
    let e = msg(&bad);
    assert!(e.contains("corrupt"), "{e}");
}

#[test]
fn cache_parses_each_model_once() {
    let (_, m) = fit_model("dyestuff", "Yield ~ 1 + (1 | Batch)", Options::default());
    let bytes = m.to_bytes();
    let a = predict::prepared(&bytes).unwrap();
    let copy = bytes.clone();
    let b = predict::prepared(&copy).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(predict::cached_models() >= 1);
    // Another model is another entry.
    let (_, m2) = fit_model("dyestuff2", "Yield ~ 1 + (1 | Batch)", Options::default());
    let c = predict::prepared(&m2.to_bytes()).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
}

#[test]
fn cache_does_not_accept_a_damaged_copy_of_a_cached_model() {
    let (_, m) = fit_model("dyestuff", "Yield ~ 1 + (1 | Batch)", Options::default());
    let bytes = m.to_bytes();
    predict::prepared(&bytes).unwrap();
    let mut flipped = bytes.clone();
    let mid = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
    flipped[mid] ^= 0x08;
    let e = predict::prepared(&flipped)
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("corrupt"), "{e}");
}

/// A model value written by the model module itself, with the given parts.
fn forged(
    vars: Vec<model::Var>,
    fixed: Vec<model::DesignCol>,
    factors: Vec<model::Factor>,
) -> Vec<u8> {
    let beta = vec![0.5; fixed.len()];
    let m = Model {
        formula: "y ~ forged".into(),
        method: lmm::options::Method::Reml,
        vars,
        fixed,
        beta,
        factors,
        head: Vec::new(),
        tail: Vec::new(),
        stats: None,
    };
    m.to_bytes()
}

fn var(name: &str, categorical: bool, grouping: bool, levels: &[i64]) -> model::Var {
    let mut keys = model::Keys::default();
    for &l in levels {
        let mut k = vec![lmm::levels::T_INT];
        k.extend_from_slice(&l.to_le_bytes());
        keys.push(&k);
    }
    model::Var {
        name: name.into(),
        type_name: if categorical {
            "VARCHAR".into()
        } else {
            "DOUBLE".into()
        },
        response: name == "y",
        grouping,
        categorical,
        key_tag: if categorical { lmm::levels::T_INT } else { 0 },
        levels: keys,
        coding: Vec::new(),
        scaling: None,
        poly: None,
    }
}

fn col(name: &str, parts: &[(u32, u32)]) -> model::DesignCol {
    model::DesignCol {
        name: name.into(),
        parts: parts.to_vec(),
    }
}

#[test]
fn forged_indices_are_refused_when_the_value_is_read() {
    let msg = |b: &[u8]| {
        Prepared::from_bytes(b)
            .err()
            .expect("must fail")
            .to_string()
    };
    let intercept = || col("(Intercept)", &[]);
    // A grouping factor without grouping columns (was: index out of bounds in predict).
    let factor = model::Factor {
        name: "g".into(),
        vars: vec![],
        terms: vec![intercept()],
        keys: model::Keys::default(),
        blup: vec![],
        cond_sd: None,
    };
    let e = msg(&forged(
        vec![var("y", false, false, &[])],
        vec![intercept()],
        vec![factor],
    ));
    assert!(e.contains("the model value is damaged or was not made by lmm: grouping factor 'g' has no grouping column"), "{e}");
    // A factor made of a numeric column.
    let factor = model::Factor {
        name: "x".into(),
        vars: vec![1],
        terms: vec![intercept()],
        keys: model::Keys::default(),
        blup: vec![],
        cond_sd: None,
    };
    let e = msg(&forged(
        vec![var("y", false, false, &[]), var("x", false, false, &[])],
        vec![intercept()],
        vec![factor],
    ));
    assert!(
        e.contains("damaged or was not made by lmm: grouping factor 'x' is made of 'x'"),
        "{e}"
    );
    // A categorical variable used as a number, a numeric one with a level, a level out of range.
    let vars = || {
        vec![
            var("y", false, false, &[]),
            var("f", true, false, &[1, 2]),
            var("x", false, false, &[]),
        ]
    };
    let e = msg(&forged(
        vars(),
        vec![intercept(), col("f", &[(1, model::NUMERIC)])],
        vec![],
    ));
    assert!(
        e.contains("design column 'f' uses the categorical variable 'f' as a number"),
        "{e}"
    );
    let e = msg(&forged(
        vars(),
        vec![intercept(), col("x1", &[(2, 0)])],
        vec![],
    ));
    assert!(
        e.contains("design column 'x1' takes a level of the numeric variable 'x'"),
        "{e}"
    );
    let e = msg(&forged(
        vars(),
        vec![intercept(), col("f9", &[(1, 9)])],
        vec![],
    ));
    assert!(
        e.contains("design column 'f9' takes level 9 of variable 'f', which has 2 level(s)"),
        "{e}"
    );
}

#[test]
fn preparing_a_forged_value_allocates_what_its_size_implies() {
    // 40 factors × 2,048 levels and their 780 pairwise interactions, one column each:
    // the dense tables would take 780 × 32 MiB; the sparse ones take a few bytes.
    let levels: Vec<i64> = (0..2048).collect();
    let mut vars = vec![var("y", false, false, &[])];
    for i in 0..40 {
        vars.push(var(&format!("f{i}"), true, false, &levels));
    }
    let mut fixed = vec![col("(Intercept)", &[])];
    for a in 1..=40u32 {
        for b in a + 1..=40u32 {
            fixed.push(col(&format!("f{a}:f{b}"), &[(a, 1), (b, 2)]));
        }
    }
    assert_eq!(fixed.len(), 781);
    let bytes = forged(vars, fixed, vec![]);
    assert!(bytes.len() < 1 << 20);
    let p = Prepared::from_bytes(&bytes).unwrap();
    // Rows where f1 = 1 and f2 = 2 get that interaction's coefficient, others not.
    let keys: Vec<i64> = vec![1, 2, 5];
    let f1 = Column {
        name: "f1".into(),
        type_name: "BIGINT".into(),
        data: ColumnData::Int(keys.clone()),
        valid: vec![true; 3],
    };
    let f2 = Column {
        name: "f2".into(),
        type_name: "BIGINT".into(),
        data: ColumnData::Int(vec![2, 2, 2]),
        valid: vec![true; 3],
    };
    let others = Column {
        name: "fk".into(),
        type_name: "BIGINT".into(),
        data: ColumnData::Int(vec![0, 0, 0]),
        valid: vec![true; 3],
    };
    let mut cols: Vec<Option<&Column>> = vec![None; 41];
    cols[1] = Some(&f1);
    cols[2] = Some(&f2);
    for c in cols.iter_mut().skip(3) {
        *c = Some(&others);
    }
    let (mut valid, mut out) = (vec![true; 3], vec![0.0; 3]);
    p.predict(&cols, &[0, 1, 2], &[false; 3], &mut valid, &mut out)
        .unwrap();
    assert_eq!(out, vec![1.0, 0.5, 0.5]);

    // Tens of thousands of variables with one integer level each: their lookup
    // tables would need hundreds of MiB; refused, with the size stated.
    let mut vars = vec![var("y", false, false, &[])];
    for i in 0..25_000 {
        vars.push(var(&format!("v{i}"), true, false, &[4000]));
    }
    let bytes = forged(vars, vec![col("(Intercept)", &[])], vec![]);
    let e = Prepared::from_bytes(&bytes)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        e.contains("damaged or was not made by lmm: preparing it for prediction would need about")
            && e.contains("MiB"),
        "{e}"
    );
}

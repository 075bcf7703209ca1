//! The profile likelihood against lme4 (`/work/shared/reference/inference`,
//! the parts used here extracted to tests/fixtures/profile): ζ at lme4's own profile points, and
//! the profile confidence limits at 0.95 and 0.99.
//!
//! The models are fitted by REML (the fixtures' REML block: lme4 profiles the
//! ML deviance after an ML refit, caveat 1 of the fixtures' README) from the
//! rows, written to a model value, and profiled from the value's statistics.

use lmm::inference::profile::{self, Profile};
use lmm::input::Chunk;
use lmm::model::{self, Model};
use lmm::{Accumulator, Options};
use serde_json::Value;

mod common;
use common::{column, read_csv};

fn json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

/// Fit the fixture's model by REML and read the model value back: (Model, Stored).
fn model_value(name: &str) -> (Model, lmm::inference::stored::Stored) {
    let base = json(&format!("tests/fixtures/{name}.json"));
    let t = read_csv(&format!(
        "tests/fixtures/{}",
        base["dataset"]["file"].as_str().unwrap()
    ));
    let formula = base["formula_lme4"].as_str().unwrap();
    let mut acc = Accumulator::new(formula, Options::default()).unwrap();
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
    let bytes = acc.finish_model().unwrap().to_bytes();
    (
        Model::from_bytes(&bytes).unwrap(),
        model::stats_of(&bytes).unwrap().unwrap(),
    )
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn rel(ours: f64, reference: f64) -> f64 {
    (ours - reference).abs() / reference.abs().max(1e-300)
}

/// The largest differences found for one model.
#[derive(Default, Debug)]
struct Worst {
    /// limits compared, and the largest relative difference among those within the tolerance
    limits: usize,
    limit_rel: f64,
    /// lme4's points compared, and the largest |Δζ| among those within the tolerance
    points: usize,
    zeta_abs: f64,
    /// the largest |ζ(lme4's conditional optimum) − lme4's ζ|: the two likelihoods' agreement
    function_abs: f64,
    /// the ML estimates against lme4's `profile_base_value` (relative)
    centre_rel: f64,
    /// points where lme4's ζ is off by more than the tolerance because its
    /// minimisation stopped short (its deviance is above ours), and the largest such difference
    lme4_short: usize,
    lme4_short_zeta: f64,
    /// limits beyond the tolerance where lme4's limit is off the exact profile's
    /// crossing of ±z (its spline through its points: interpolation error, and
    /// points whose minimisation stopped short) while ours is on it, and the
    /// largest such difference
    lme4_off: usize,
    lme4_off_rel: f64,
}

/// Compare one model; `fixed_only`: the variance parameters' profiles of lme4 are not to be trusted.
fn check(name: &str, fixed_only: bool, tol_limit: f64, tol_zeta: f64) -> Worst {
    let (m, stored) = model_value(name);
    let t0 = std::time::Instant::now();
    let pr: Profile = profile::profile(&m, &stored, None).unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let fx = json(&format!("tests/fixtures/profile/{name}.json"));
    let block = &fx["lme4"]["REML"];
    let mut worst = Worst::default();
    let mut failures = Vec::new();
    let t1 = std::time::Instant::now();
    let ci95 = pr.intervals(0.95);
    let ci99 = pr.intervals(0.99);
    let elapsed_ci = t1.elapsed().as_secs_f64();
    // lmm_confint's direct search (no trace) finds the same crossings as the search on the traces
    let t2 = std::time::Instant::now();
    for (level, on_traces) in [(0.95, &ci95), (0.99, &ci99)] {
        let direct = profile::confint(&m, &stored, level).unwrap();
        for (a, b) in direct.iter().zip(on_traces.iter()) {
            assert_eq!(a.index, b.index);
            for (side, x, y) in [("lower", a.lower, b.lower), ("upper", a.upper, b.upper)] {
                match (x, y) {
                    (None, None) => {}
                    (Some(x), Some(y)) => {
                        // equal, or (where the constrained criterion has several local
                        // minima, as score_rs's) the direct search found the lower
                        // branch: its limit lies farther out than the trace's
                        let d = (x - y).abs() / y.abs().max(1e-3);
                        let farther = (x - a.estimate).abs() > (y - a.estimate).abs();
                        assert!(d <= 1e-7 || farther, "{name} {} {side} {level}: direct {x} vs on the trace {y} (rel {d:.2e})", a.parameter.name);
                        if d > 1e-7 {
                            eprintln!("{name} {} {side} {level}: direct {x} farther out than on the trace {y} (rel {d:.2e})", a.parameter.name);
                        }
                    }
                    _ => panic!(
                        "{name} {} {side} {level}: direct {x:?} vs on the trace {y:?}",
                        a.parameter.name
                    ),
                }
            }
        }
    }
    let elapsed_direct = t2.elapsed().as_secs_f64();
    for row in block["confint_profile"]["rows"].as_array().unwrap() {
        let lme4_name = row["name"].as_str().unwrap();
        let k = pr.find(lme4_name).unwrap_or_else(|e| panic!("{name}: {e}"));
        if fixed_only && row["kind"].as_str() != Some("fixed") {
            // not compared (lme4's profile of this parameter is not to be trusted): shown
            let iv = ci95.iter().find(|i| i.index == k).unwrap();
            eprintln!(
                "{name:20} {lme4_name:32} 0.95 ours {:?} {:?}, lme4 {} {} (not compared)",
                iv.lower, iv.upper, row["lower_0.95"], row["upper_0.95"]
            );
            continue;
        }
        let par = &pr.parameters()[k];
        assert_eq!(
            par.group_var.as_deref(),
            row["group_var"].as_str(),
            "{name} {lme4_name} group_var"
        );
        assert_eq!(
            par.term,
            row["term"].as_str().unwrap(),
            "{name} {lme4_name} term"
        );
        let centre = num(&row["profile_base_value"]).unwrap();
        let c = pr.estimates()[k];
        let d = if centre == 0.0 {
            c.abs()
        } else {
            rel(c, centre)
        };
        worst.centre_rel = worst.centre_rel.max(d);
        for (level, ci) in [("0.95", &ci95), ("0.99", &ci99)] {
            let iv = ci.iter().find(|i| i.index == k).unwrap();
            for (side, ours) in [("lower", iv.lower), ("upper", iv.upper)] {
                let reference = num(&row[format!("{side}_{level}")]);
                match (ours, reference) {
                    (None, None) => {}
                    (Some(o), Some(r)) => {
                        let d = if r == 0.0 { o.abs() } else { rel(o, r) };
                        worst.limits += 1;
                        // the exact profile at both limits: how far each is from ζ = ±z
                        let z = profile::normal_quantile(0.5 * (1.0 + iv.level))
                            * if side == "lower" { -1.0 } else { 1.0 };
                        let at_bound = o == par.lower || o == par.upper;
                        let (ours_off, theirs_off) = if at_bound {
                            (0.0, 0.0)
                        } else {
                            (
                                (pr.zeta(k, o).unwrap() - z).abs(),
                                (pr.zeta(k, r).unwrap() - z).abs(),
                            )
                        };
                        eprintln!(
                            "{name:20} {lme4_name:32} {side} {level}: {o:.10} lme4 {r:.10} rel {d:.2e}; |zeta - z| ours {ours_off:.1e} lme4's {theirs_off:.1e}"
                        );
                        if d <= tol_limit {
                            worst.limit_rel = worst.limit_rel.max(d);
                            continue;
                        }
                        // Beyond the tolerance: acceptable only where ours is the exact
                        // crossing and lme4's is off it (lme4 interpolates its points).
                        if ours_off <= 1e-6
                            && theirs_off > 10.0 * ours_off.max(1e-7)
                            && d <= 10.0 * tol_limit
                        {
                            worst.lme4_off += 1;
                            worst.lme4_off_rel = worst.lme4_off_rel.max(d);
                        } else {
                            failures.push(format!(
                                "{lme4_name} {side} {level}: {o} vs lme4 {r} (rel {d:.2e})"
                            ));
                        }
                    }
                    (o, r) => {
                        failures.push(format!("{lme4_name} {side} {level}: {o:?} vs lme4 {r:?}"))
                    }
                }
            }
        }
    }
    for zp in block["profile_zeta"]["params"].as_array().unwrap() {
        let lme4_name = zp["par"].as_str().unwrap();
        let k = pr.find(lme4_name).unwrap();
        if fixed_only && !matches!(pr.parameters()[k].kind, profile::Kind::Fixed { .. }) {
            continue;
        }
        let values = floats(&zp["value"]);
        let zetas = floats(&zp["zeta"]);
        // lme4's conditional optimum at each point: every parameter, in our order
        let columns: Vec<Vec<f64>> = pr
            .parameters()
            .iter()
            .map(|p| floats(&zp["all_params"][p.name.as_str()]))
            .collect();
        for (at, (v, z)) in values.iter().zip(&zetas).enumerate() {
            let ours = pr.zeta(k, *v).unwrap_or(f64::NAN);
            let d = (ours - z).abs();
            // lme4's own conditional optimum under our likelihood
            let all: Vec<f64> = columns.iter().map(|c| c[at]).collect();
            let theirs = pr.zeta_at_parameters(k, &all).unwrap_or(f64::NAN);
            let function = (theirs - z).abs();
            worst.points += 1;
            worst.function_abs = worst.function_abs.max(if function.is_nan() {
                f64::INFINITY
            } else {
                function
            });
            if d > 1e-5 && std::env::var_os("PROFILE_VERBOSE").is_some() {
                eprintln!("{name} {lme4_name} at {v}: ours {ours} lme4 {z} (lme4's point under our likelihood {theirs})");
            }
            if d <= tol_zeta {
                worst.zeta_abs = worst.zeta_abs.max(d);
                continue;
            }
            // Not within tolerance: acceptable only where lme4's own point is worth
            // its ζ under our likelihood and our minimum is lower (lme4's
            // constrained optimisation stopped short).
            if function <= tol_zeta && ours.abs() < z.abs() {
                worst.lme4_short += 1;
                worst.lme4_short_zeta = worst.lme4_short_zeta.max(d);
            } else {
                failures.push(format!("zeta {lme4_name} at {v}: {ours} vs lme4 {z} (diff {d:.2e}; lme4's point under our likelihood {theirs})"));
            }
        }
    }
    let npoints: usize = pr.traces.iter().map(|t| t.points.len()).sum();
    eprintln!("{name}: profile {elapsed:.3} s ({npoints} points, cutoff {:.3}), intervals at 2 levels {elapsed_ci:.3} s (direct {elapsed_direct:.3} s); {worst:?}", pr.cutoff);
    assert!(failures.is_empty(), "{name}:\n  {}", failures.join("\n  "));
    worst
}

macro_rules! models {
    ($($test:ident: $name:expr, $fixed_only:expr;)*) => {
        $(
            #[test]
            fn $test() {
                check($name, $fixed_only, 1e-4, 1e-4);
            }
        )*
    };
}

models! {
    sleepstudy_rs: "sleepstudy_rs", false;
    sleepstudy_ri: "sleepstudy_ri", false;
    dietox_rs: "dietox_rs", false;
    dyestuff: "dyestuff", false;
    dyestuff2: "dyestuff2", false;
    pastes_nested: "pastes_nested", false;
    penicillin_crossed: "penicillin_crossed", false;
    orthodont: "orthodont", false;
    sitka_ri: "sitka_ri", false;
    synthetic_small: "synthetic_small", false;
    sitka_rs_fixed_effects: "sitka_rs", true;
    score_rs_fixed_effects: "score_rs", true;
}

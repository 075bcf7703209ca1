//! Self-consistency of the profile on a small simulated random-slope model
//! (lme4's numbers are in tests/profile.rs): every point's conditional
//! optimum, mapped back through sd/cor/σ → θ independently of the
//! minimisation's own parameterisation, has the deviance D̂ + ζ²; ζ rises
//! through 0 at the estimate; each limit lies on ζ = ±z.

use super::*;
use crate::input::{Chunk, Column, ColumnData};
use crate::{Accumulator, Options};

/// y = 2 + 0.5 x + b₀ + b₁ x + e over 12 groups × 7 x values, from a fixed LCG.
fn simulated() -> (Model, Stored) {
    simulated_by(crate::options::Method::Reml)
}

fn simulated_by(method: crate::options::Method) -> (Model, Stored) {
    let mut state: u64 = 20240517;
    let mut normal = || {
        // sum of 12 uniforms − 6: close enough to N(0, 1) for a test
        (0..12)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 53) as f64
            })
            .sum::<f64>()
            - 6.0
    };
    let (mut g, mut x, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for group in 0..12 {
        let (b0, b1) = (1.5 * normal(), 0.3 * normal());
        for t in 0..7 {
            g.push(format!("g{group}"));
            x.push(t as f64);
            y.push(2.0 + 0.5 * t as f64 + b0 + b1 * t as f64 + 0.8 * normal());
        }
    }
    let n = y.len();
    let mut acc = Accumulator::new(
        "y ~ x + (x | g)",
        Options {
            method,
            ..Options::default()
        },
    )
    .unwrap();
    let columns = acc
        .required_columns()
        .iter()
        .map(|name| {
            let data = match name.as_str() {
                "g" => ColumnData::Text(g.iter().map(|s| s.as_bytes()).collect()),
                "x" => ColumnData::Float(x.clone()),
                _ => ColumnData::Float(y.clone()),
            };
            Column {
                name: name.clone(),
                type_name: "DOUBLE".into(),
                data,
                valid: vec![true; n],
            }
        })
        .collect();
    let rows: Vec<usize> = (0..n).collect();
    acc.update(&Chunk { columns, len: n }, &rows).unwrap();
    let mut model = acc.finish_model().unwrap();
    let stored = model.stats.take().unwrap();
    (model, stored)
}

#[test]
fn names_and_order_are_lme4s() {
    let (model, stored) = simulated();
    let pr = profile(&model, &stored, Some("sigma")).unwrap();
    let names: Vec<&str> = pr.parameters().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "sd_(Intercept)|g",
            "cor_x.(Intercept)|g",
            "sd_x|g",
            "sigma",
            "(Intercept)",
            "x"
        ]
    );
    let terms: Vec<&str> = pr.parameters().iter().map(|p| p.term.as_str()).collect();
    assert_eq!(
        terms,
        [
            "sd__(Intercept)",
            "cor__(Intercept).x",
            "sd__x",
            "sd__Observation",
            "(Intercept)",
            "x"
        ]
    );
    assert_eq!(pr.find("sd__x|g").unwrap(), 2);
    assert_eq!(pr.find("cor__(Intercept).x").unwrap(), 1);
    assert!(pr.find("sd__Days").is_err());
    assert_eq!(pr.traces.len(), 1);
}

#[test]
fn points_are_conditional_optima_and_limits_cross_z() {
    let (model, stored) = simulated();
    let pr = profile(&model, &stored, None).unwrap();
    assert_eq!(pr.traces.len(), 6);
    for t in &pr.traces {
        let centre = t.points.iter().position(|p| p.zeta == 0.0).unwrap();
        assert_eq!(t.points[centre].value, t.estimate);
        for w in t.points.windows(2) {
            assert!(
                w[1].value > w[0].value && w[1].zeta > w[0].zeta,
                "{}: {:?} {:?}",
                t.parameter.name,
                w[0].value,
                w[1].value
            );
        }
        let (first, last) = (&t.points[0], t.points.last().unwrap());
        assert!(
            first.zeta <= -pr.cutoff || first.value == t.parameter.lower,
            "{}",
            t.parameter.name
        );
        assert!(last.zeta >= pr.cutoff, "{}", t.parameter.name);
        for p in &t.points {
            assert_eq!(p.parameters[t.index], p.value);
            let d = pr.frame.deviance_at(&p.parameters).unwrap();
            assert!(
                (d - pr.deviance() - p.zeta * p.zeta).abs() < 1e-7,
                "{} at {}: {d} vs {}",
                t.parameter.name,
                p.value,
                pr.deviance() + p.zeta * p.zeta
            );
        }
    }
    for level in [0.95, 0.99] {
        let z = normal_quantile(0.5 * (1.0 + level));
        for iv in intervals(&pr, level) {
            let (lo, hi) = (iv.lower.unwrap(), iv.upper.unwrap());
            assert!(lo < iv.estimate && iv.estimate < hi);
            assert!(
                (pr.zeta(iv.index, lo).unwrap() + z).abs() < 1e-8,
                "{} lower",
                iv.parameter.name
            );
            assert!(
                (pr.zeta(iv.index, hi).unwrap() - z).abs() < 1e-8,
                "{} upper",
                iv.parameter.name
            );
        }
    }
}

#[test]
fn a_fixed_effects_profile_is_nearly_its_wald_line() {
    // ζ of a fixed effect is close to (b − β̂)/SE near the estimate.
    let (model, stored) = simulated();
    let pr = profile(&model, &stored, Some("x")).unwrap();
    let k = pr.find("x").unwrap();
    let se = pr.frame.se[1];
    let b = pr.estimates()[k] + 0.1 * se;
    assert!((pr.zeta(k, b).unwrap() - 0.1).abs() < 2e-3);
}

#[test]
fn a_reml_and_an_ml_fit_have_one_profile() {
    // lme4 profiles the ML deviance whatever the fit's criterion.
    let (mr, sr) = simulated_by(crate::options::Method::Reml);
    let (mm, sm) = simulated_by(crate::options::Method::Ml);
    let (a, b) = (
        profile(&mr, &sr, Some("sd_x|g")).unwrap(),
        profile(&mm, &sm, Some("sd_x|g")).unwrap(),
    );
    assert!((a.deviance() - b.deviance()).abs() < 1e-8);
    let (ia, ib) = (&intervals(&a, 0.95)[0], &intervals(&b, 0.95)[0]);
    assert!((ia.lower.unwrap() - ib.lower.unwrap()).abs() < 1e-6 * ib.lower.unwrap());
    assert!((ia.upper.unwrap() - ib.upper.unwrap()).abs() < 1e-6 * ib.upper.unwrap());
}

#[test]
fn slopes_are_the_criteria_derivatives() {
    // `slope` (exact gradients through the likelihood's parts) against central
    // differences of `objective`, for every kind, away from the estimate.
    let (model, stored) = simulated();
    let pr = profile(&model, &stored, Some("sigma")).unwrap();
    let frame = &pr.frame;
    for (k, par) in frame.params.iter().enumerate() {
        let kind = par.kind;
        let step = match kind {
            Kind::Cor { .. } => 0.1,
            _ => 0.05 * frame.estimates[k].abs().max(0.1),
        };
        let v = frame.estimates[k] + step;
        let x: Vec<f64> = frame
            .start(kind)
            .iter()
            .enumerate()
            .map(|(i, a)| a * (1.0 + 0.03 * (i as f64 + 1.0)) + 0.01)
            .collect();
        let s = frame.slope(kind, v, &x).unwrap();
        assert!(
            (s.deviance - frame.objective(kind, v, &x)).abs() < 1e-9 * s.deviance.abs(),
            "{}",
            par.name
        );
        let h = 1e-5;
        let dv = (frame.objective(kind, v + h, &x) - frame.objective(kind, v - h, &x)) / (2.0 * h);
        assert!(
            (s.dv - dv).abs() < 1e-5 * dv.abs().max(1.0),
            "{} dv: {} vs {dv}",
            par.name,
            s.dv
        );
        for i in 0..x.len() {
            let (mut up, mut dn) = (x.clone(), x.clone());
            up[i] += h;
            dn[i] -= h;
            let d = (frame.objective(kind, v, &up) - frame.objective(kind, v, &dn)) / (2.0 * h);
            assert!(
                (s.dx[i] - d).abs() < 1e-5 * d.abs().max(1.0),
                "{} dx[{i}]: {} vs {d}",
                par.name,
                s.dx[i]
            );
        }
    }
}

#[test]
fn direct_limits_are_the_trace_limits() {
    // lmm_confint's search without a trace lands on the same crossings.
    let (model, stored) = simulated();
    let pr = profile(&model, &stored, None).unwrap();
    for level in [0.95, 0.99] {
        let direct = confint(&model, &stored, level).unwrap();
        for (a, b) in direct.iter().zip(intervals(&pr, level)) {
            for (x, y) in [
                (a.lower.unwrap(), b.lower.unwrap()),
                (a.upper.unwrap(), b.upper.unwrap()),
            ] {
                assert!(
                    (x - y).abs() < 1e-8 * y.abs().max(1.0),
                    "{} at {level}: {x} vs {y}",
                    a.parameter.name
                );
            }
        }
    }
}

//! lmerTest's ANOVA tables: one F test per fixed term as written (a factor is
//! one term), with the hypothesis matrices of types 1, 2 and 3.
//!
//! With X the data-scale design (X = X_c (I − e₀aᵀ), X_c the centred columns
//! the statistics hold) and G = XᵀX:
//! - type 1 (sequential): the term's rows of Lᵀ, G = L D Lᵀ (L unit lower, Doolittle);
//! - type 2: L = X_Fᵀ(I − P₁)X = G_F· − G_F1 G_11⁻¹ G_1·, X₁ the columns of the
//!   terms that do not contain F (the intercept included);
//! - type 3: the rows selecting F's coefficients (terms inside an interaction
//!   are refused: their type-3 hypotheses depend on the coding).
//! Each L is tested by `contrast::joint_test`.

use super::contrast::{joint_test, JointTest};
use super::fitted::Fitted;
use super::satterthwaite::Asymptotic;
use crate::bail;
use crate::error::Result;

pub struct Term {
    pub name: String,
    pub columns: Vec<usize>,
    pub vars: Vec<u32>,
}

/// The fixed terms (columns grouped by their set of variables), the intercept left out.
pub fn terms(m: &Fitted) -> Vec<Term> {
    let mut out: Vec<Term> = Vec::new();
    for (j, c) in m.model.fixed.iter().enumerate() {
        if c.parts.is_empty() {
            continue;
        }
        let mut vars: Vec<u32> = c.parts.iter().map(|&(v, _)| v).collect();
        let name = vars
            .iter()
            .map(|&v| m.model.vars[v as usize].name.as_str())
            .collect::<Vec<_>>()
            .join(":");
        vars.sort();
        match out.iter_mut().find(|t| t.vars == vars) {
            Some(t) => t.columns.push(j),
            None => out.push(Term {
                name,
                columns: vec![j],
                vars,
            }),
        }
    }
    out
}

/// XᵀX on the data scale.
fn gram(m: &Fitted) -> Vec<f64> {
    let (p, k) = (m.p(), m.stats.k());
    let a = &m.stats.intercept_shift;
    // X = X_c B, B = I − e₀aᵀ: G = Bᵀ G_c B.
    let gc = |i: usize, j: usize| m.stats.rtr[j * k + i];
    let b = |r: usize, c: usize| -> f64 {
        (if r == c { 1.0 } else { 0.0 }) - if r == 0 { a[c] } else { 0.0 }
    };
    let mut g = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..p {
            let mut s = 0.0;
            for r in 0..p {
                let br = b(r, i);
                if br == 0.0 {
                    continue;
                }
                for c in 0..p {
                    let bc = b(c, j);
                    if bc != 0.0 {
                        s += br * gc(r, c) * bc;
                    }
                }
            }
            g[j * p + i] = s;
        }
    }
    g
}

fn selection(p: usize, cols: &[usize]) -> Vec<Vec<f64>> {
    cols.iter()
        .map(|&c| {
            let mut l = vec![0.0; p];
            l[c] = 1.0;
            l
        })
        .collect()
}

fn contains(outer: &Term, inner: &Term) -> bool {
    outer.vars.len() > inner.vars.len() && inner.vars.iter().all(|v| outer.vars.contains(v))
}

/// Type 1: rows of Lᵀ from G = C Cᵀ (L = C diag(1/C_jj)).
fn type1(g: &[f64], p: usize, cols: &[usize]) -> Result<Vec<Vec<f64>>> {
    let mut c = g.to_vec();
    if !crate::dense::cholesky_lower(&mut c, p) {
        bail!("the fixed-effects design is not of full rank");
    }
    Ok(cols
        .iter()
        .map(|&j| {
            (0..p)
                .map(|r| {
                    if r < j {
                        0.0
                    } else {
                        c[j * p + r] / c[j * p + j]
                    }
                })
                .collect()
        })
        .collect())
}

/// Type 2: X_Fᵀ(I − P₁)X.
fn type2(g: &[f64], p: usize, f: &Term, all: &[Term]) -> Result<Vec<Vec<f64>>> {
    let mut one: Vec<usize> = (0..p)
        .filter(|&j| all.iter().all(|t| !t.columns.contains(&j)))
        .collect();
    for t in all {
        if t.vars != f.vars && !contains(t, f) {
            one.extend(&t.columns);
        }
    }
    one.sort();
    let n1 = one.len();
    let mut g11 = vec![0.0; n1 * n1];
    for (a, &i) in one.iter().enumerate() {
        for (b, &j) in one.iter().enumerate() {
            g11[b * n1 + a] = g[j * p + i];
        }
    }
    let mut rows = Vec::new();
    for &fc in &f.columns {
        // G_F1 G_11⁻¹ (solve G_11 w = G_1F)
        let rhs: Vec<f64> = one.iter().map(|&i| g[fc * p + i]).collect();
        let w = if n1 == 0 {
            Vec::new()
        } else {
            match crate::dense::solve_spd(&g11, &rhs, n1) {
                Some(w) => w,
                None => bail!("the fixed-effects design is not of full rank"),
            }
        };
        rows.push(
            (0..p)
                .map(|c| {
                    g[c * p + fc]
                        - one
                            .iter()
                            .zip(&w)
                            .map(|(&i, wi)| wi * g[c * p + i])
                            .sum::<f64>()
                })
                .collect(),
        );
    }
    Ok(rows)
}

pub struct AnovaRow {
    pub term: String,
    pub test: JointTest,
}

pub fn anova(m: &Fitted, type_: u32, beta: &[f64], a: &Asymptotic) -> Result<Vec<AnovaRow>> {
    anova_with(m, type_, &|rows: &[Vec<f64>]| Ok(joint_test(rows, beta, a)))
}

/// The table with each term's hypothesis tested by `test` (Satterthwaite's or Kenward–Roger's).
pub fn anova_with(
    m: &Fitted,
    type_: u32,
    test: &dyn Fn(&[Vec<f64>]) -> Result<JointTest>,
) -> Result<Vec<AnovaRow>> {
    let p = m.p();
    let all = terms(m);
    let g = gram(m);
    let mut out = Vec::new();
    for f in &all {
        let rows = match type_ {
            1 => type1(&g, p, &f.columns)?,
            2 => type2(&g, p, f, &all)?,
            3 => {
                if let Some(outer) = all.iter().find(|t| contains(t, f)) {
                    bail!(
                        "type 3 tests of '{}', which the interaction '{}' contains, are not implemented (they depend on the coding); use type := 2 or lmm_contrast",
                        f.name,
                        outer.name
                    );
                }
                selection(p, &f.columns)
            }
            t => bail!("type := {t} is not an ANOVA type; use 1, 2 or 3"),
        };
        out.push(AnovaRow {
            term: f.name.clone(),
            test: test(&rows)?,
        });
    }
    Ok(out)
}

//! Contrasts: how a factor of k levels becomes k − 1 columns when its term is
//! coded against a smaller one (R's `contrasts`, `model.matrix`).
//!
//! A contrast is a k × (k − 1) matrix C over the sorted levels; the design
//! column j of the factor is Σ_l C[l, j] · 1[level = l], a linear combination
//! of the per-level indicator columns the accumulator keeps anyway, so a
//! choice of contrasts changes no pass over the rows. R's definitions:
//!
//! - `treatment` (`contr.treatment`): C = the identity without the base
//!   level's column (the first level, or `treatment:B` for level B); columns
//!   are named by their level.
//! - `sum` (`contr.sum`): C[j, j] = 1, C[k−1, j] = −1; named `f1`, `f2`, ….
//! - `helmert` (`contr.helmert`): C[l, j] = −1 for l ≤ j, j + 1 for l = j + 1;
//!   named `f1`, `f2`, ….
//! - `poly` (`contr.poly`): orthonormal polynomials on the scores 1, …, k —
//!   column j is x^(j+1) with the lower powers projected out (Gram–Schmidt,
//!   leading coefficient positive), scaled to unit length; named `f.L`, `f.Q`,
//!   `f.C`, `f^4`, ….

use crate::bail;
use crate::error::Result;

/// A contrast type, as `contrasts := {column: type}` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Contrast {
    /// Treatment coding against the first level, or against the level whose label is given.
    Treatment(Option<String>),
    Sum,
    Helmert,
    Poly,
}

/// A factor's contrast matrix over its sorted levels, with its column suffixes.
#[derive(Debug, Clone, PartialEq)]
pub struct Coding {
    /// k × (k − 1), column-major: `matrix[j * k + l]`.
    pub matrix: Vec<f64>,
    pub k: usize,
    /// per column: what follows the variable's name (`1`, `.L`, a level label)
    pub suffixes: Vec<String>,
}

impl Coding {
    pub fn columns(&self) -> usize {
        self.suffixes.len()
    }
    pub fn at(&self, level: usize, column: usize) -> f64 {
        self.matrix[column * self.k + level]
    }
}

impl Contrast {
    /// Parses `treatment`, `treatment:B`, `sum`, `helmert`, `poly` (R's
    /// `contr.*` names accepted too).
    pub fn parse(column: &str, text: &str) -> Result<Contrast> {
        let t = text.trim();
        let (kind, base) = match t.split_once(':') {
            Some((k, b)) => (k.trim(), Some(b.trim().to_string())),
            None => (t, None),
        };
        let kind = kind.to_ascii_lowercase();
        let kind = kind.strip_prefix("contr.").unwrap_or(&kind);
        Ok(match (kind, base) {
            ("treatment", b) => Contrast::Treatment(b),
            ("sum", None) => Contrast::Sum,
            ("helmert", None) => Contrast::Helmert,
            ("poly", None) => Contrast::Poly,
            (_, Some(_)) if ["sum", "helmert", "poly"].contains(&kind) => {
                bail!("contrasts: '{t}' for '{column}': only treatment coding takes a base level ('treatment:B')")
            }
            _ => bail!("contrasts: unknown contrast '{t}' for '{column}'; expected 'treatment', 'treatment:B', 'sum', 'helmert' or 'poly'"),
        })
    }

    /// The matrix for a factor `name` whose sorted levels have these labels.
    pub fn coding(&self, name: &str, labels: &[String]) -> Result<Coding> {
        let k = labels.len();
        let mut matrix = vec![0.0; k * k.saturating_sub(1)];
        let numbered = |k: usize| (1..k).map(|j| j.to_string()).collect::<Vec<_>>();
        let suffixes = match self {
            Contrast::Treatment(base) => {
                let b = match base {
                    None => 0,
                    Some(b) => labels.iter().position(|l| l == b).ok_or_else(|| {
                        let shown: Vec<&str> = labels.iter().take(20).map(String::as_str).collect();
                        crate::error::LmmError::new(format!(
                            "contrasts: the base level '{b}' of 'treatment:{b}' is not a level of '{name}' (levels: {}{})",
                            shown.join(", "),
                            if k > 20 { ", …" } else { "" }
                        ))
                    })?,
                };
                let kept: Vec<usize> = (0..k).filter(|&l| l != b).collect();
                for (j, &l) in kept.iter().enumerate() {
                    matrix[j * k + l] = 1.0;
                }
                kept.iter().map(|&l| labels[l].clone()).collect()
            }
            Contrast::Sum => {
                for j in 0..k.saturating_sub(1) {
                    matrix[j * k + j] = 1.0;
                    matrix[j * k + k - 1] = -1.0;
                }
                numbered(k)
            }
            Contrast::Helmert => {
                for j in 0..k.saturating_sub(1) {
                    for l in 0..=j {
                        matrix[j * k + l] = -1.0;
                    }
                    matrix[j * k + j + 1] = (j + 1) as f64;
                }
                numbered(k)
            }
            Contrast::Poly => {
                if k > 95 {
                    bail!("contrasts: 'poly' for '{name}' with {k} levels: orthogonal polynomials of degree {} on equally spaced scores are not computed accurately (R stops at 95 levels too)", k - 1);
                }
                let basis = orthonormal_polynomials(k);
                matrix.copy_from_slice(&basis[k..]);
                (1..k)
                    .map(|d| match d {
                        1 => ".L".to_string(),
                        2 => ".Q".to_string(),
                        3 => ".C".to_string(),
                        d => format!("^{d}"),
                    })
                    .collect()
            }
        };
        Ok(Coding {
            matrix,
            k,
            suffixes,
        })
    }
}

/// Orthonormal polynomials of degree 0, …, k − 1 on the scores 1, …, k:
/// k columns of k values (column-major), by modified Gram–Schmidt on the
/// centred powers, each with a positive leading coefficient.
pub fn orthonormal_polynomials(k: usize) -> Vec<f64> {
    let mean = (k as f64 + 1.0) / 2.0;
    let x: Vec<f64> = (1..=k).map(|s| s as f64 - mean).collect();
    let mut q = vec![0.0; k * k];
    for d in 0..k {
        // x · (previous column) keeps the leading coefficient positive and the
        // numbers well scaled (a three-term recurrence would too).
        let mut v: Vec<f64> = if d == 0 {
            vec![1.0; k]
        } else {
            (0..k).map(|i| x[i] * q[(d - 1) * k + i]).collect()
        };
        for _ in 0..2 {
            for e in 0..d {
                let dot: f64 = (0..k).map(|i| v[i] * q[e * k + i]).sum();
                for i in 0..k {
                    v[i] -= dot * q[e * k + i];
                }
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        for i in 0..k {
            q[d * k + i] = v[i] / norm;
        }
    }
    q
}

/// Reads `contrasts := …` as text: a DuckDB STRUCT or MAP cast to VARCHAR
/// (`{'recipe': sum, 'temperature': poly}`, `{recipe=sum}`) or a plain list
/// `recipe=sum, temperature=poly` (`:` after a key works as `=`).
pub fn parse_option(text: &str) -> Result<Vec<(String, Contrast)>> {
    let t = text.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(t);
    let mut out: Vec<(String, Contrast)> = Vec::new();
    for entry in t.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let unquote = |s: &str| {
            let s = s.trim();
            ['\'', '"']
                .iter()
                .find_map(|&q| s.strip_prefix(q).and_then(|r| r.strip_suffix(q)))
                .unwrap_or(s)
                .to_string()
        };
        let (key, value) = if let Some(rest) =
            entry.strip_prefix('\'').or_else(|| entry.strip_prefix('"'))
        {
            let close = rest.find(['\'', '"']).ok_or_else(|| {
                crate::error::LmmError::new(format!("option contrasts: cannot read '{entry}'"))
            })?;
            let after = rest[close + 1..].trim_start();
            let after = after
                .strip_prefix(':')
                .or_else(|| after.strip_prefix('='))
                .unwrap_or(after);
            (rest[..close].to_string(), unquote(after))
        } else {
            let at = entry.find(['=', ':']).ok_or_else(|| {
                crate::error::LmmError::new(format!("option contrasts: '{entry}' is not column = contrast (as in {{'recipe': 'sum'}})"))
            })?;
            (entry[..at].trim().to_string(), unquote(&entry[at + 1..]))
        };
        if key.is_empty() {
            bail!("option contrasts: an entry without a column name ('{entry}')");
        }
        if out.iter().any(|(k, _)| *k == key) {
            bail!("option contrasts: the column '{key}' is given twice");
        }
        let c = Contrast::parse(&key, &value)?;
        out.push((key, c));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(k: usize) -> Vec<String> {
        (1..=k).map(|i| format!("l{i}")).collect()
    }

    #[test]
    fn r_definitions() {
        // contr.sum(3) = [1 0; 0 1; -1 -1]; contr.helmert(3) = [-1 -1; 1 -1; 0 2]
        let s = Contrast::Sum.coding("f", &labels(3)).unwrap();
        assert_eq!(s.matrix, vec![1.0, 0.0, -1.0, 0.0, 1.0, -1.0]);
        assert_eq!(s.suffixes, vec!["1", "2"]);
        let h = Contrast::Helmert.coding("f", &labels(3)).unwrap();
        assert_eq!(h.matrix, vec![-1.0, 1.0, 0.0, -1.0, -1.0, 2.0]);
        let t = Contrast::Treatment(Some("l2".into()))
            .coding("f", &labels(3))
            .unwrap();
        assert_eq!(t.matrix, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(t.suffixes, vec!["l1", "l3"]);
        assert!(Contrast::Treatment(Some("zz".into()))
            .coding("f", &labels(3))
            .unwrap_err()
            .to_string()
            .contains("'zz'"));
    }

    #[test]
    fn poly_is_r_contr_poly() {
        // contr.poly(4) from R 4.2
        let p = Contrast::Poly.coding("f", &labels(4)).unwrap();
        let r = [
            -0.670820393249937,
            -0.223606797749979,
            0.223606797749979,
            0.670820393249937,
            0.5,
            -0.5,
            -0.5,
            0.5,
            -0.223606797749979,
            0.670820393249937,
            -0.670820393249937,
            0.223606797749979,
        ];
        for (a, b) in p.matrix.iter().zip(r) {
            assert!((a - b).abs() < 1e-13, "{a} vs {b}");
        }
        assert_eq!(p.suffixes, vec![".L", ".Q", ".C"]);
        let q = orthonormal_polynomials(30);
        for a in 0..30 {
            for b in 0..30 {
                let dot: f64 = (0..30).map(|i| q[a * 30 + i] * q[b * 30 + i]).sum();
                assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn option_text_forms() {
        let want = vec![
            ("recipe".to_string(), Contrast::Sum),
            ("temperature".to_string(), Contrast::Poly),
        ];
        assert_eq!(
            parse_option("{'recipe': sum, 'temperature': poly}").unwrap(),
            want
        );
        assert_eq!(
            parse_option("{recipe=sum, temperature=poly}").unwrap(),
            want
        );
        assert_eq!(
            parse_option("recipe = 'sum', temperature: contr.poly").unwrap(),
            want
        );
        assert_eq!(
            parse_option("{'g': treatment:B}").unwrap(),
            vec![("g".to_string(), Contrast::Treatment(Some("B".into())))]
        );
        assert!(parse_option("{'g': lasso}")
            .unwrap_err()
            .to_string()
            .contains("unknown contrast 'lasso' for 'g'"));
        assert!(parse_option("{'g': sum:B}")
            .unwrap_err()
            .to_string()
            .contains("only treatment"));
        assert!(parse_option("g=sum, g=poly")
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}

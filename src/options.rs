//! Fit options given by name (`method := 'ML'`, `ranef := false`).

use crate::bail;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Reml,
    Ml,
}

/// Degrees of freedom for the fixed-effect tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ddf {
    /// None: z tests on the normal distribution (statsmodels' convention).
    None,
    /// Satterthwaite's approximation and t tests (lmerTest's default).
    Satterthwaite,
    /// Kenward–Roger: pbkrtest's adjusted covariance, its df and t tests (REML fits).
    KenwardRoger,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub method: Method,
    /// Emit the `ran_vals` rows (BLUPs).
    pub ranef: bool,
    pub ddf: Ddf,
    /// statsmodels style: a grouping column that gets a random intercept
    /// (and the slopes `re`), added to the formula as a bar of column names.
    pub grp: Option<String>,
    /// Columns with random slopes per `grp`.
    pub re: Vec<String>,
    /// What a failed fit gives: an error for the query (default), or NULL
    /// for that group only (`on_error := 'null'`, for GROUP BY pipelines).
    pub null_on_error: bool,
    /// lme4's prior weights: the column whose value wᵢ makes row i's residual
    /// variance σ²/wᵢ (a weight of 0 drops the row; negative or non-finite is an error).
    pub weights: Option<String>,
    /// R's contrasts per categorical column (`contrasts := {'f': 'sum'}`);
    /// a column not named gets treatment coding against its first level.
    pub contrasts: Vec<(String, crate::contrasts::Contrast)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: Method::Reml,
            ranef: true,
            ddf: Ddf::None,
            grp: None,
            re: Vec::new(),
            null_on_error: false,
            weights: None,
            contrasts: Vec::new(),
        }
    }
}

const KNOWN: &str = "method ('REML' or 'ML'), ranef (true/false), ddf ('none', 'Satterthwaite' or 'Kenward-Roger'), \
                     grp (a grouping column), re (columns with random slopes per grp), \
                     on_error ('stop' or 'null'), weights (a numeric column of prior weights), \
                     contrasts (per categorical column: 'treatment', 'treatment:B', 'sum', 'helmert' or 'poly')";

/// Separates the names of a list given as `re` (the `lmm_fit` macro joins a
/// list with it; a plain string is split on '+').
pub const LIST_SEPARATOR: char = '\u{1f}';

impl Options {
    /// Options from (name, value-as-text) pairs; a NULL value means "default".
    pub fn from_pairs(pairs: &[(String, Option<String>)]) -> Result<Options> {
        let mut o = Options::default();
        for (name, value) in pairs {
            let Some(v) = value else { continue };
            match name.to_ascii_lowercase().as_str() {
                "method" => {
                    o.method = match v.to_ascii_uppercase().as_str() {
                        "REML" => Method::Reml,
                        "ML" => Method::Ml,
                        _ => bail!("option method: expected 'REML' or 'ML', got '{v}'"),
                    }
                }
                "ranef" => {
                    o.ranef = match v.to_ascii_lowercase().as_str() {
                        "true" | "t" | "1" | "yes" => true,
                        "false" | "f" | "0" | "no" => false,
                        _ => bail!("option ranef: expected true or false, got '{v}'"),
                    }
                }
                "ddf" => {
                    o.ddf = match v.to_ascii_lowercase().as_str() {
                        "none" => Ddf::None,
                        "satterthwaite" => Ddf::Satterthwaite,
                        "kenward-roger" | "kenward_roger" => Ddf::KenwardRoger,
                        _ => bail!("option ddf: expected 'none', 'Satterthwaite' or 'Kenward-Roger', got '{v}'"),
                    }
                }
                "grp" => o.grp = Some(v.clone()),
                "weights" => {
                    if v.trim().is_empty() || v.contains('`') {
                        bail!("option weights: '{v}' is not a usable column name (empty, or contains a backtick)");
                    }
                    o.weights = Some(v.clone())
                }
                "contrasts" => o.contrasts = crate::contrasts::parse_option(v)?,
                "on_error" => {
                    o.null_on_error = match v.to_ascii_lowercase().as_str() {
                        "stop" => false,
                        "null" => true,
                        _ => bail!("option on_error: expected 'stop' or 'null', got '{v}'"),
                    }
                }
                "re" => {
                    let sep = if v.contains(LIST_SEPARATOR) { LIST_SEPARATOR } else { '+' };
                    o.re = v.split(sep).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                }
                _ => bail!("unknown option '{name}'; known options: {KNOWN}"),
            }
        }
        if o.grp.is_none() && !o.re.is_empty() {
            bail!("option re (random slopes) needs grp (the grouping column)");
        }
        Ok(o)
    }

    /// The bar that `grp` and `re` stand for, to append to the formula:
    /// ` + (1 + `a` + `b` | `g`)`. Every name is quoted, so it is read as one
    /// column name whatever it contains (no formula syntax can be slipped in).
    pub fn grouping_bar(&self) -> Result<Option<String>> {
        let Some(grp) = &self.grp else {
            return Ok(None);
        };
        let quote = |what: &str, name: &str| -> Result<String> {
            if name.contains('`') || name.trim().is_empty() {
                bail!("option {what}: '{name}' is not a usable column name (empty, or contains a backtick)");
            }
            Ok(format!("`{name}`"))
        };
        let mut terms = vec!["1".to_string()];
        for r in &self.re {
            terms.push(quote("re", r)?);
        }
        Ok(Some(format!(
            " + ({} | {})",
            terms.join(" + "),
            quote("grp", grp)?
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), Some(b.to_string())))
            .collect()
    }

    #[test]
    fn grp_and_re_become_a_bar_of_quoted_names() {
        let o =
            Options::from_pairs(&pairs(&[("grp", "Pig"), ("re", "Time\u{1f}Other col")])).unwrap();
        assert_eq!(
            o.grouping_bar().unwrap().unwrap(),
            " + (1 + `Time` + `Other col` | `Pig`)"
        );
        let o = Options::from_pairs(&pairs(&[("grp", "g"), ("re", "a + b")])).unwrap();
        assert_eq!(o.re, vec!["a", "b"]);
        assert_eq!(
            Options::from_pairs(&pairs(&[("grp", "g")]))
                .unwrap()
                .grouping_bar()
                .unwrap()
                .unwrap(),
            " + (1 | `g`)"
        );
    }

    #[test]
    fn formula_syntax_in_grp_stays_a_name() {
        let o = Options::from_pairs(&pairs(&[("grp", "Subject) + (Days | Subject")])).unwrap();
        assert_eq!(
            o.grouping_bar().unwrap().unwrap(),
            " + (1 | `Subject) + (Days | Subject`)"
        );
        let o = Options::from_pairs(&pairs(&[("grp", "a`b")])).unwrap();
        assert!(o.grouping_bar().unwrap_err().0.contains("backtick"));
    }

    #[test]
    fn re_needs_grp() {
        let e = Options::from_pairs(&pairs(&[("re", "Days")])).unwrap_err();
        assert!(e.0.contains("needs grp"), "{}", e.0);
    }
}

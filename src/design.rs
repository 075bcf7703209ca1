//! Design coding: which extended columns make up X and Z, and their R names.
//!
//! R's rule (`model.matrix`): in a term, a factor is coded by treatment
//! contrasts (reference level dropped) when the term without that factor is
//! also in the model (the intercept being the empty term), and by one
//! indicator per level otherwise. Levels are sorted; the first is the
//! reference. Columns of an interaction vary the first variable fastest.

use crate::accumulator::{Accumulator, Kind};
use crate::bail;
use crate::error::Result;
use crate::formula::Term;
use crate::levels;

/// Most design columns (extended columns in the accumulator; X or Z columns
/// here) a model may have: the fit costs O(p³) time and O(p²) memory in them.
pub const MAX_DESIGN_COLUMNS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The intercept: 1 on every row.
    Ones,
    /// A level combination never seen: 0 on every row.
    Zero,
    /// An extended-design column of the accumulator.
    Ext(usize),
}

#[derive(Debug, Clone)]
pub struct DesignColumn {
    pub name: String,
    pub source: Source,
    /// How to compute the column from a row: the product over these variables
    /// (index into `acc.vars`) of the value (numeric, `None`) or of the
    /// indicator of a level (level id in that variable's `levels`).
    /// Empty for the intercept.
    pub parts: Vec<(usize, Option<u32>)>,
}

fn same_set(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// Code an intercept flag and a list of terms into named design columns.
pub fn code(acc: &Accumulator, intercept: bool, terms: &[Term]) -> Result<Vec<DesignColumn>> {
    let var = |name: &str| acc.vars.iter().position(|v| v.name == name).expect("variable registered at parse");
    let term_vars: Vec<Vec<usize>> = terms.iter().map(|t| t.iter().map(|v| var(v)).collect()).collect();
    let mut out = Vec::new();
    if intercept {
        out.push(DesignColumn { name: "(Intercept)".into(), source: Source::Ones, parts: Vec::new() });
    }
    for tv in &term_vars {
        let spec_idx = acc.terms.iter().position(|s| same_set(&s.vars, tv)).expect("term registered at parse");
        let spec = &acc.terms[spec_idx];
        // Per variable of the term: None for numeric, else the level ids to enumerate.
        let mut choices: Vec<Option<Vec<u32>>> = Vec::new();
        for &v in tv {
            let variable = &acc.vars[v];
            if variable.kind != Some(Kind::Categorical) {
                choices.push(None);
                continue;
            }
            let rest: Vec<usize> = tv.iter().copied().filter(|&w| w != v).collect();
            let contrasts = if rest.is_empty() { intercept } else { term_vars.iter().any(|t| same_set(t, &rest)) };
            let order = variable.levels.sorted();
            let ids: Vec<u32> = if contrasts { order.into_iter().skip(1).collect() } else { order };
            choices.push(Some(ids));
        }
        // Enumerate combinations, first variable fastest.
        let sizes: Vec<usize> = choices.iter().map(|c| c.as_ref().map_or(1, |v| v.len())).collect();
        let total = sizes.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).unwrap_or(usize::MAX);
        if total > MAX_DESIGN_COLUMNS - out.len().min(MAX_DESIGN_COLUMNS) {
            let name: Vec<&str> = tv.iter().map(|&v| acc.vars[v].name.as_str()).collect();
            let counts: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
            bail!(
                "the term '{}' needs {} columns ({}){}, more than the limit of {MAX_DESIGN_COLUMNS} design columns; \
                 drop the term or use a factor with fewer levels (as a grouping factor, a factor with many levels costs no columns)",
                name.join(":"),
                if total == usize::MAX { "an astronomical number of".to_string() } else { total.to_string() },
                counts.join(" × "),
                if out.is_empty() { String::new() } else { format!(" after {} column(s) of the terms before it", out.len()) }
            );
        }
        for combo in 0..total {
            let mut rem = combo;
            let mut name_parts = Vec::new();
            let mut level_of_var: Vec<(usize, u32)> = Vec::new();
            let mut parts: Vec<(usize, Option<u32>)> = Vec::new();
            for (k, &v) in tv.iter().enumerate() {
                let i = rem % sizes[k];
                rem /= sizes[k];
                match &choices[k] {
                    None => {
                        name_parts.push(acc.vars[v].name.clone());
                        parts.push((v, None));
                    }
                    Some(ids) => {
                        let id = ids[i];
                        name_parts.push(format!(
                            "{}{}",
                            acc.vars[v].name,
                            levels::label(&acc.vars[v].levels.keys[id as usize])
                        ));
                        level_of_var.push((v, id));
                        parts.push((v, Some(id)));
                    }
                }
            }
            // The extended column is keyed by level ids in the spec's variable order.
            let key: Vec<u32> = spec
                .vars
                .iter()
                .filter(|&&v| acc.vars[v].kind == Some(Kind::Categorical))
                .map(|v| level_of_var.iter().find(|(w, _)| w == v).unwrap().1)
                .collect();
            let source = match spec.columns.get(&key) {
                Some(&c) => Source::Ext(c),
                None => Source::Zero,
            };
            out.push(DesignColumn { name: name_parts.join(":"), source, parts });
        }
    }
    Ok(out)
}

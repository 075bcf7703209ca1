//! Design coding: which extended columns make up X and Z, and their R names.
//!
//! R's rule (`model.matrix`): in a term, a factor is coded by treatment
//! contrasts (reference level dropped) when the term without that factor is
//! also in the model (the intercept being the empty term), and by one
//! indicator per level otherwise. Levels are sorted; the first is the
//! reference. Columns of an interaction vary the first variable fastest.

use crate::accumulator::{Accumulator, Kind};
use crate::bail;
use crate::contrasts::{Coding, Contrast};
use crate::error::Result;
use crate::formula::Term;
use crate::levels;

/// Most (level combination, column) pairs the contrast-coded columns of one
/// term may combine.
pub const MAX_COMBINATION_WORK: usize = 50_000_000;

/// How a variable of a term enters its columns.
enum Choice {
    Value,
    /// one column per level id (indicators)
    Levels(Vec<u32>),
    /// the contrast's columns, over the levels sorted as `order`
    Coded(Coding, Vec<u32>),
    /// poly(x, k)'s columns, column j as Σ_i c[j][i] (x − a)^i
    Poly(Vec<Vec<f64>>),
}

impl Choice {
    fn columns(&self) -> usize {
        match self {
            Choice::Value => 1,
            Choice::Levels(ids) => ids.len(),
            Choice::Coded(c, _) => c.columns(),
            Choice::Poly(c) => c.len(),
        }
    }
}

/// The contrast the options give the categorical variable v, if any.
pub fn contrast_of(acc: &Accumulator, v: usize) -> Option<Contrast> {
    let name = &acc.vars[v].name;
    acc.options
        .contrasts
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, c)| c.clone())
}

/// The contrast matrix of variable v under c, over its levels as sorted.
pub fn coding(acc: &Accumulator, v: usize, c: Contrast) -> Result<Coding> {
    let variable = &acc.vars[v];
    let labels: Vec<String> = variable
        .levels
        .sorted()
        .iter()
        .map(|&id| levels::label(&variable.levels.keys[id as usize]))
        .collect();
    c.coding(&variable.name, &labels)
}

/// Every `contrasts` key names a categorical variable of the model.
pub fn check_contrasts(acc: &Accumulator) -> Result<()> {
    for (key, _) in &acc.options.contrasts {
        let known = || {
            let cats: Vec<&str> = acc
                .vars
                .iter()
                .filter(|v| v.kind == Some(Kind::Categorical) && !v.grouping)
                .map(|v| v.name.as_str())
                .collect();
            if cats.is_empty() {
                "the model has none".to_string()
            } else {
                format!("its categorical columns: {}", cats.join(", "))
            }
        };
        match acc.vars.iter().find(|v| v.name == *key) {
            None => bail!(
                "contrasts: '{key}' is not a column of the model ({})",
                known()
            ),
            Some(v) if v.kind != Some(Kind::Categorical) => {
                bail!("contrasts: '{key}' is numeric, not a categorical column of the model ({}; factor({key}) makes it one)", known())
            }
            Some(v)
                if v.response
                    || (v.grouping
                        && !acc
                            .terms
                            .iter()
                            .any(|t| t.vars.iter().any(|&w| acc.vars[w].name == *key))) =>
            {
                bail!(
                    "contrasts: '{key}' is only a grouping factor, not a term of the model ({})",
                    known()
                )
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The source of the product over categorical variables of Σ_level coef ·
/// indicator (one entry each): the level combinations' extended columns,
/// weighted; a single unweighted one is that column, none is `Zero`.
fn combination_source(
    factors: &[(usize, Vec<(u32, f64)>)],
    ext_of: &dyn Fn(&[(usize, u32)]) -> Option<usize>,
) -> Source {
    if factors.is_empty() {
        return match ext_of(&[]) {
            Some(c) => Source::Ext(c),
            None => Source::Zero,
        };
    }
    let mut terms: Vec<(usize, f64)> = Vec::new();
    let mut at = vec![0usize; factors.len()];
    'combos: loop {
        let levels_of: Vec<(usize, u32)> = factors
            .iter()
            .zip(&at)
            .map(|((v, t), &i)| (*v, t[i].0))
            .collect();
        let coef: f64 = factors.iter().zip(&at).map(|((_, t), &i)| t[i].1).product();
        if let Some(c) = ext_of(&levels_of) {
            terms.push((c, coef));
        }
        for (slot, (_, t)) in at.iter_mut().zip(factors) {
            *slot += 1;
            if *slot < t.len() {
                continue 'combos;
            }
            *slot = 0;
        }
        break;
    }
    Combination {
        terms,
        constant: 0.0,
    }
    .source()
}

/// Σ coefficient × extended column + constant, as it is built.
#[derive(Default)]
struct Combination {
    terms: Vec<(usize, f64)>,
    constant: f64,
}

impl Combination {
    /// Add `coef` × the column `s`.
    fn add(&mut self, s: &Source, coef: f64) {
        match s {
            Source::Ones => self.constant += coef,
            Source::Zero => {}
            Source::Ext(c) => self.terms.push((*c, coef)),
            Source::Combo(terms, k) => {
                self.terms.extend(terms.iter().map(|&(c, w)| (c, w * coef)));
                self.constant += k * coef;
            }
        }
    }

    fn source(self) -> Source {
        match (self.terms.as_slice(), self.constant) {
            ([], 0.0) => Source::Zero,
            ([(c, w)], 0.0) if *w == 1.0 => Source::Ext(*c),
            _ => Source::Combo(self.terms, self.constant),
        }
    }
}

/// The source of a term's column whose variables `expanded` are each a
/// polynomial in the accumulated values, given as (variable, [(power,
/// coefficient)]): scale()'s (x − c)/s is [(1, 1/s), (0, −c/s)], poly()'s
/// column j is [(i, c_ji)] in powers of x − a. The column is Σ over one
/// choice per variable of Π coefficient × the column of the term at those
/// powers (`source_of`: the column of a sub-term given its variables and
/// powers, power 0 dropping the variable; the empty term is the intercept).
fn expanded_source(
    term: &[usize],
    expanded: &[(usize, Vec<(u32, f64)>)],
    source_of: &dyn Fn(&[usize], &[u32]) -> Source,
) -> Source {
    let mut sum = Combination::default();
    let combos: usize = expanded.iter().map(|(_, alts)| alts.len()).product();
    for combo in 0..combos {
        let (mut rest, mut coef) = (combo, 1.0);
        let (mut vars, mut powers) = (Vec::new(), Vec::new());
        for &v in term {
            let p = match expanded.iter().find(|(w, _)| *w == v) {
                None => 1,
                Some((_, alts)) => {
                    let (p, c) = alts[rest % alts.len()];
                    rest /= alts.len();
                    coef *= c;
                    p
                }
            };
            if p > 0 {
                vars.push(v);
                powers.push(p);
            }
        }
        if coef == 0.0 {
            continue;
        }
        let src = if vars.is_empty() {
            Source::Ones
        } else {
            source_of(&vars, &powers)
        };
        sum.add(&src, coef);
    }
    sum.source()
}

/// The accumulator's term over `vars` at `powers` (in any order).
fn spec_at<'a>(
    acc: &'a Accumulator,
    vars: &[usize],
    powers: &[u32],
) -> &'a crate::accumulator::TermSpec {
    acc.terms
        .iter()
        .find(|t| {
            t.vars.len() == vars.len()
                && vars.iter().zip(powers).all(|(w, p)| {
                    t.vars
                        .iter()
                        .zip(&t.powers)
                        .any(|(tw, tp)| tw == w && tp == p)
                })
        })
        .expect("term registered at parse")
}

/// Most design columns (extended columns in the accumulator; X or Z columns
/// here) a model may have: the fit costs O(p³) time and O(p²) memory in them.
pub const MAX_DESIGN_COLUMNS: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The intercept: 1 on every row.
    Ones,
    /// A level combination never seen: 0 on every row.
    Zero,
    /// An extended-design column of the accumulator.
    Ext(usize),
    /// Σ coefficient × extended column + constant: a contrast-coded factor's
    /// column (a combination of its levels' indicator columns), a scale()
    /// variable's ((x − c)/s) or a poly() column (`expanded_source`).
    Combo(Vec<(usize, f64)>, f64),
}

/// One factor of a design column's product, for a variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part {
    /// The variable's value.
    Value,
    /// The indicator of a level (level id in the variable's `levels`).
    Level(u32),
    /// Column j of the variable's contrast matrix (`coding`): C[level, j].
    Coded(u32),
    /// Column j (0-based) of the poly() variable's basis at its value.
    Poly(u32),
}

#[derive(Debug, Clone)]
pub struct DesignColumn {
    pub name: String,
    pub source: Source,
    /// How to compute the column from a row: the product over these variables
    /// (index into `acc.vars`) of their parts. Empty for the intercept.
    pub parts: Vec<(usize, Part)>,
}

fn same_set(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// Code an intercept flag and a list of terms into named design columns.
/// `fixed`: the fixed-effect terms, where `contrasts :=` applies (as lme4's
/// `contrasts` argument, random-effect terms keep treatment coding).
pub fn code(
    acc: &Accumulator,
    intercept: bool,
    terms: &[Term],
    fixed: bool,
) -> Result<Vec<DesignColumn>> {
    let var = |name: &str| {
        acc.vars
            .iter()
            .position(|v| v.name == name)
            .expect("variable registered at parse")
    };
    let term_vars: Vec<Vec<usize>> = terms
        .iter()
        .map(|t| t.iter().map(|v| var(v)).collect())
        .collect();
    let mut out = Vec::new();
    if intercept {
        out.push(DesignColumn {
            name: "(Intercept)".into(),
            source: Source::Ones,
            parts: Vec::new(),
        });
    }
    for tv in &term_vars {
        let spec = spec_at(acc, tv, &vec![1; tv.len()]);
        // Per variable of the term: how it enters (value, one column per level, contrast columns).
        let mut choices: Vec<Choice> = Vec::new();
        for &v in tv {
            let variable = &acc.vars[v];
            if variable.kind != Some(Kind::Categorical) {
                choices.push(match acc.poly_basis(v)? {
                    Some((basis, origin)) => Choice::Poly(basis.coefficients(origin)),
                    None => Choice::Value,
                });
                continue;
            }
            let rest: Vec<usize> = tv.iter().copied().filter(|&w| w != v).collect();
            let contrasts = if rest.is_empty() {
                intercept
            } else {
                term_vars.iter().any(|t| same_set(t, &rest))
            };
            let order = variable.levels.sorted();
            if !contrasts {
                choices.push(Choice::Levels(order));
                continue;
            }
            choices.push(match contrast_of(acc, v).filter(|_| fixed) {
                None => Choice::Levels(order.into_iter().skip(1).collect()),
                Some(c @ Contrast::Treatment(_)) => {
                    // indicators of the levels the matrix keeps (all but the base)
                    let coding = coding(acc, v, c)?;
                    let kept = (0..order.len())
                        .filter(|&pos| (0..coding.columns()).any(|j| coding.at(pos, j) != 0.0));
                    Choice::Levels(kept.map(|pos| order[pos]).collect())
                }
                Some(c) => Choice::Coded(coding(acc, v, c)?, order),
            });
        }
        // Enumerate combinations, first variable fastest.
        let sizes: Vec<usize> = choices.iter().map(Choice::columns).collect();
        let total = sizes
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .unwrap_or(usize::MAX);
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
        // A contrast column is a combination of indicator columns: bound the combinations.
        let support: usize = choices
            .iter()
            .map(|c| {
                if let Choice::Coded(_, order) = c {
                    order.len()
                } else {
                    1
                }
            })
            .product::<usize>();
        if support.saturating_mul(total) > MAX_COMBINATION_WORK {
            let name: Vec<&str> = tv.iter().map(|&v| acc.vars[v].name.as_str()).collect();
            bail!(
                "the term '{}' with its contrasts combines {} level combinations into each of its {total} columns, more than lmm computes ({MAX_COMBINATION_WORK} in all); \
                 use treatment contrasts for one of its factors",
                name.join(":"),
                support
            );
        }
        // The extended column of a level combination of a term's spec, keyed by level ids in the spec's variable order.
        let ext_in =
            |spec: &crate::accumulator::TermSpec, levels_of: &[(usize, u32)]| -> Option<usize> {
                let key: Vec<u32> = spec
                    .vars
                    .iter()
                    .filter(|&&v| acc.vars[v].kind == Some(Kind::Categorical))
                    .map(|v| levels_of.iter().find(|(w, _)| w == v).unwrap().1)
                    .collect();
                spec.columns.get(&key).copied()
            };
        let ext_of = |levels_of: &[(usize, u32)]| ext_in(spec, levels_of);
        // scale() variables of the term: (variable, centre, scale)
        let mut scaled: Vec<(usize, f64, f64)> = Vec::new();
        for &v in tv {
            if let Some((c, s)) = acc.scaling(v)? {
                scaled.push((v, c, s));
            }
        }
        let expands = !scaled.is_empty() || choices.iter().any(|c| matches!(c, Choice::Poly(_)));
        for combo in 0..total {
            let mut rem = combo;
            let mut name_parts = Vec::new();
            let mut parts: Vec<(usize, Part)> = Vec::new();
            // per categorical variable: the (level id, coefficient) it contributes
            let mut factors: Vec<(usize, Vec<(u32, f64)>)> = Vec::new();
            let mut expanded: Vec<(usize, Vec<(u32, f64)>)> = scaled
                .iter()
                .map(|&(v, c, s)| (v, vec![(1, 1.0 / s), (0, -c / s)]))
                .collect();
            for (k, &v) in tv.iter().enumerate() {
                let i = rem % sizes[k];
                rem /= sizes[k];
                let name = &acc.vars[v].name;
                match &choices[k] {
                    Choice::Value => {
                        name_parts.push(name.clone());
                        parts.push((v, Part::Value));
                    }
                    Choice::Levels(ids) => {
                        let id = ids[i];
                        name_parts.push(format!(
                            "{name}{}",
                            levels::label(&acc.vars[v].levels.keys[id as usize])
                        ));
                        factors.push((v, vec![(id, 1.0)]));
                        parts.push((v, Part::Level(id)));
                    }
                    Choice::Coded(coding, order) => {
                        name_parts.push(format!("{name}{}", coding.suffixes[i]));
                        let terms = order
                            .iter()
                            .enumerate()
                            .map(|(pos, &id)| (id, coding.at(pos, i)))
                            .filter(|t| t.1 != 0.0)
                            .collect();
                        factors.push((v, terms));
                        parts.push((v, Part::Coded(i as u32)));
                    }
                    Choice::Poly(coefs) => {
                        // R's model.matrix: a one-column matrix keeps the variable's name
                        name_parts.push(if coefs.len() == 1 {
                            name.clone()
                        } else {
                            format!("{name}{}", i + 1)
                        });
                        let alts = coefs[i]
                            .iter()
                            .enumerate()
                            .map(|(p, &c)| (p as u32, c))
                            .collect();
                        expanded.push((v, alts));
                        parts.push((v, Part::Poly(i as u32)));
                    }
                }
            }
            let source = if !expands {
                combination_source(&factors, &ext_of)
            } else {
                let source_of = |sub: &[usize], powers: &[u32]| {
                    let sub_spec = spec_at(acc, sub, powers);
                    combination_source(&factors, &|l| ext_in(sub_spec, l))
                };
                expanded_source(tv, &expanded, &source_of)
            };
            out.push(DesignColumn {
                name: name_parts.join(":"),
                source,
                parts,
            });
        }
    }
    Ok(out)
}

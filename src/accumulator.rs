//! The streaming accumulator: rows in, sufficient statistics out.
//!
//! Rows are never kept. Each row is coded into the *extended design*: one
//! column per model term and combination of factor levels (every level, the
//! reference level included), plus the response. Treatment-contrast columns
//! are a selection of these, chosen once all levels are known (`model`).
//! Per group the state keeps the exact moments of those columns (`stats`).

use rustc_hash::FxHashMap;

use crate::bail;
use crate::error::Result;
use crate::formula::{self, Formula};
use crate::input::{Chunk, Column, ColumnData};
use crate::levels::{self, Levels};
use crate::options::Options;
use crate::stats::{GroupStore, IndicatorChunk, Moments};
use crate::tidy::{Tidy, TidyRow};
use crate::transform::poly::{PolySpec, PowerSums};
use crate::transform::scale::ScaleMoments;
use crate::transform::Derivation;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Numeric,
    Categorical,
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    /// Named as (part of) a grouping factor: categorical whatever its type.
    pub grouping: bool,
    /// The response: must be numeric.
    pub response: bool,
    /// `factor(x)` / `C(x)`: categorical whatever its type.
    pub factor: bool,
    /// Decided by the first chunk's column type.
    pub kind: Option<Kind>,
    pub type_name: String,
    pub levels: Levels,
}

/// A distinct model term (fixed or random) over variables (indices).
#[derive(Debug, Clone)]
pub struct TermSpec {
    pub vars: Vec<usize>,
    /// Per variable: the power its values enter with, (x − a)^p for a
    /// `poly()` variable about its origin a (`transform::poly`), 1 otherwise.
    pub powers: Vec<u32>,
    /// Extended columns of this term, keyed by the level ids of its categorical variables.
    pub columns: FxHashMap<Vec<u32>, usize>,
    /// Fast path for terms with at most one categorical variable: column by level id
    /// (index 0 for a purely numeric term); `usize::MAX` where not created yet.
    pub by_level: Vec<usize>,
    /// Used in a random-effects bar.
    pub random: bool,
}

/// One extended-design column: a term at one combination of levels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtColumn {
    /// Index into `terms`, or `usize::MAX` for the response.
    pub term: usize,
    pub levels: Vec<u32>,
}

/// A grouping factor: its columns, levels, and per-level moments.
#[derive(Debug, Clone)]
pub struct GroupingFactor {
    pub vars: Vec<usize>,
    pub levels: Levels,
    pub store: GroupStore,
}

/// The level pairs of two grouping factors that occur together, with the
/// moments of their rows (the off-diagonal blocks Z_aᵀZ_b come from these).
#[derive(Debug, Clone, Default)]
pub struct Cells {
    pub a: usize,
    pub b: usize,
    map: FxHashMap<u64, u32>,
    pub keys: Vec<(u32, u32)>,
    pub store: GroupStore,
}

impl GroupingFactor {
    /// The level id of row r (integer keys skip the byte encoding), creating
    /// the level and its moments block when new.
    #[inline]
    fn level(&mut self, cols: &[Column], r: usize, key: &mut Vec<u8>) -> usize {
        let l = match (&self.vars[..], &cols[self.vars[0]].data) {
            ([_], ColumnData::Int(v)) => self.levels.id_int(v[r]),
            _ => {
                key.clear();
                for &v in &self.vars {
                    levels::encode(&cols[v], r, key);
                }
                self.levels.id(key)
            }
        } as usize;
        if l == self.store.len() {
            self.store.add_group();
        }
        l
    }
}

impl Cells {
    #[inline]
    pub fn id(&mut self, la: u32, lb: u32) -> usize {
        let key = ((la as u64) << 32) | lb as u64;
        if let Some(&c) = self.map.get(&key) {
            return c as usize;
        }
        let c = self.keys.len();
        self.keys.push((la, lb));
        self.map.insert(key, c as u32);
        self.store.add_group();
        c
    }
}

#[derive(Clone)]
pub struct Accumulator {
    pub formula: Formula,
    /// The formula as written.
    pub formula_text: String,
    pub options: Options,
    pub vars: Vec<Variable>,
    pub var_names: Vec<String>,
    /// The columns a chunk brings (`required_columns`), and how the variables
    /// are made from them when a function in the formula makes one (None:
    /// the variables are the columns).
    pub columns: Vec<String>,
    derive: Option<Arc<Derivation>>,
    pub terms: Vec<TermSpec>,
    pub ext: Vec<ExtColumn>,
    /// Per extended column: the shift K its stored means are relative to.
    pub shift: Vec<f64>,
    pub shift_set: bool,
    pub factors: Vec<GroupingFactor>,
    /// One entry per pair of grouping factors (crossed or nested models).
    pub cells: Vec<Cells>,
    /// Moments of all rows (the full d×d co-moments).
    pub global: Moments,
    /// Extended columns of random-effect terms, in order of creation (row zi of
    /// each group's co-moments), and the inverse map (usize::MAX: not random).
    pub zcols: Vec<usize>,
    pub zindex: Vec<usize>,
    pub n_dropped: u64,
    /// The variable holding the prior weights (`weights :=`), if any.
    pub weight_var: Option<usize>,
    /// Σ log wᵢ over the rows used (0 without weights): lme4's deviance has −Σ log wᵢ.
    pub log_weights: f64,
    /// Per `scale()` variable: the moments of its values over the rows where
    /// it is present (`transform::scale`: R scales before `na.omit`).
    pub scale_moments: Vec<(usize, ScaleMoments)>,
    /// Per `poly()` variable: its degree and the power sums of its values
    /// (over the rows where it is present, as R's poly() before `na.omit`),
    /// whose origin the accumulated powers are about.
    pub polys: Vec<(usize, PolySpec, PowerSums)>,
    // scratch buffers
    x: Vec<f64>,
    delta: Vec<f64>,
    key: Vec<u8>,
    level_ids: Vec<u32>,
    slots: Vec<(usize, f64)>,
    lv: Vec<u32>,
    /// The last integer group key seen and its id (usize::MAX: none).
    last_group: (i64, usize),
    /// Rows of the current chunk that are complete, with their group (and
    /// their weights, with `weights :=`).
    kept: Vec<(usize, usize)>,
    kept_w: Vec<f64>,
    /// Level of each grouping factor for the current row.
    flev: Vec<usize>,
    /// The chunk's rows for the all-rows co-moments (see `IndicatorChunk`).
    chunk_dense: Vec<f64>,
    chunk_active: Vec<usize>,
    chunk_dense_ids: Vec<usize>,
}

/// The term over `vars` at `powers` (`TermSpec::powers`), added unless
/// there (in any order of its variables); a random use marks it random.
fn add_term(terms: &mut Vec<TermSpec>, vars: Vec<usize>, powers: Vec<u32>, random: bool) {
    let key = |vs: &[usize], ps: &[u32]| {
        let mut k: Vec<(usize, u32)> = vs.iter().copied().zip(ps.iter().copied()).collect();
        k.sort();
        k
    };
    let mine = key(&vars, &powers);
    match terms.iter().position(|t| key(&t.vars, &t.powers) == mine) {
        Some(pos) => terms[pos].random |= random,
        None => terms.push(TermSpec {
            vars,
            powers,
            columns: FxHashMap::default(),
            by_level: Vec::new(),
            random,
        }),
    }
}

fn var_index(vars: &mut Vec<Variable>, name: &str) -> usize {
    if let Some(i) = vars.iter().position(|v| v.name == name) {
        return i;
    }
    vars.push(Variable {
        name: name.to_string(),
        grouping: false,
        response: false,
        factor: false,
        kind: None,
        type_name: String::new(),
        levels: Levels::default(),
    });
    vars.len() - 1
}

impl Accumulator {
    /// Parse the formula and prepare an empty accumulator.
    pub fn new(formula_text: &str, options: Options) -> Result<Accumulator> {
        let formula_text = match options.grouping_bar()? {
            Some(bar) => format!("{formula_text}{bar}"),
            None => formula_text.to_string(),
        };
        let formula_text = formula_text.as_str();
        let formula = formula::parse(formula_text)?;
        if formula.random.is_empty() {
            bail!("the formula has no random-effects term such as '(1 | group)'; lmm_fit fits mixed models only");
        }
        let mut vars = Vec::new();
        let r = var_index(&mut vars, &formula.response);
        vars[r].response = true;
        // Fixed terms, then each bar's terms (those are random); a term in both is one column set.
        let all_terms = formula.fixed.iter().map(|t| (t, false)).chain(
            formula
                .random
                .iter()
                .flat_map(|b| b.terms.iter().map(|t| (t, true))),
        );
        let mut terms: Vec<TermSpec> = Vec::new();
        for (t, random) in all_terms {
            let idx: Vec<usize> = t.iter().map(|v| var_index(&mut vars, v)).collect();
            let powers = vec![1; idx.len()];
            add_term(&mut terms, idx, powers, random);
        }
        // A term with scale() variables combines the terms without them
        // (`transform::scale`); one with a poly(x, k) variable the terms with
        // x to each power 0 … k (`transform::poly`; power 0: without x).
        let powers_of = |v: usize| match formula.derived(&vars[v].name) {
            Some(formula::Derived::Scaled(..)) => Some(1),
            Some(formula::Derived::Poly(_, spec)) => Some(spec.degree),
            _ => None,
        };
        for t in 0..terms.len() {
            let special: Vec<(usize, u32)> = terms[t]
                .vars
                .iter()
                .filter_map(|&v| powers_of(v).map(|k| (v, k)))
                .collect();
            let combos: usize = special.iter().map(|&(_, k)| k as usize + 1).product();
            for combo in 0..combos {
                let mut rest = combo;
                let (mut sub, mut powers) = (Vec::new(), Vec::new());
                for &v in &terms[t].vars {
                    let p = match special.iter().find(|(w, _)| *w == v) {
                        None => 1,
                        Some(&(_, k)) => {
                            // k first: the term itself, then lower powers (0: without v)
                            let p = k - (rest % (k as usize + 1)) as u32;
                            rest /= k as usize + 1;
                            p
                        }
                    };
                    if p > 0 {
                        sub.push(v);
                        powers.push(p);
                    }
                }
                if !sub.is_empty() {
                    let random = terms[t].random;
                    add_term(&mut terms, sub, powers, random);
                }
            }
        }
        let scale_moments = (0..vars.len())
            .filter(|&v| {
                matches!(
                    formula.derived(&vars[v].name),
                    Some(formula::Derived::Scaled(..))
                )
            })
            .map(|v| (v, ScaleMoments::default()))
            .collect();
        let polys = (0..vars.len())
            .filter_map(|v| match formula.derived(&vars[v].name) {
                Some(formula::Derived::Poly(_, spec)) => Some((v, *spec, PowerSums::new(*spec))),
                _ => None,
            })
            .collect();
        let mut factors = Vec::new();
        for bar in &formula.random {
            let gv: Vec<usize> = bar.group.iter().map(|v| var_index(&mut vars, v)).collect();
            for &g in &gv {
                if vars[g].response {
                    bail!(
                        "the response '{}' cannot be a grouping factor",
                        vars[g].name
                    );
                }
                vars[g].grouping = true;
            }
            if !factors.iter().any(|f: &GroupingFactor| f.vars == gv) {
                factors.push(GroupingFactor {
                    vars: gv,
                    levels: Levels::default(),
                    store: GroupStore::default(),
                });
            }
        }
        let weight_var = match &options.weights {
            None => None,
            Some(w) => {
                let i = var_index(&mut vars, w);
                if vars[i].grouping {
                    bail!("weights: the column '{w}' is a grouping factor of the formula; prior weights must be a numeric column");
                }
                Some(i)
            }
        };
        for v in vars.iter_mut() {
            v.factor = matches!(formula.derived(&v.name), Some(formula::Derived::Factor(_)));
            if v.response && v.factor {
                bail!("the response '{}' must be numeric, not a factor", v.name);
            }
        }
        let var_names: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
        let derivation = Derivation::new(&var_names, &formula, true);
        let columns = derivation.columns.clone();
        let derive = if derivation.is_identity() {
            None
        } else {
            Some(Arc::new(derivation))
        };
        Ok(Accumulator {
            formula,
            formula_text: formula_text.to_string(),
            options,
            vars,
            var_names,
            columns,
            derive,
            terms,
            ext: Vec::new(),
            shift: Vec::new(),
            shift_set: false,
            cells: (0..factors.len())
                .flat_map(|a| {
                    (a + 1..factors.len()).map(move |b| Cells {
                        a,
                        b,
                        ..Default::default()
                    })
                })
                .collect(),
            factors,
            global: Moments::new(0),
            zcols: Vec::new(),
            zindex: Vec::new(),
            n_dropped: 0,
            weight_var,
            log_weights: 0.0,
            scale_moments,
            polys,
            x: Vec::new(),
            delta: Vec::new(),
            key: Vec::new(),
            level_ids: Vec::new(),
            slots: Vec::new(),
            lv: Vec::new(),
            last_group: (0, usize::MAX),
            kept: Vec::new(),
            kept_w: Vec::new(),
            flev: Vec::new(),
            chunk_dense: Vec::new(),
            chunk_active: Vec::new(),
            chunk_dense_ids: Vec::new(),
        })
    }

    /// Names of the columns the model reads, in the order `update` expects them in a `Chunk`.
    pub fn required_columns(&self) -> &[String] {
        &self.columns
    }

    /// The centre and scale of variable v when it is `scale(…)`: from the
    /// moments of its values (an error where R's column would be NaN).
    pub fn scaling(&self, v: usize) -> Result<Option<(f64, f64)>> {
        let Some(formula::Derived::Scaled(_, how)) = self.formula.derived(&self.vars[v].name)
        else {
            return Ok(None);
        };
        let m = self
            .scale_moments
            .iter()
            .find(|(w, _)| *w == v)
            .map(|(_, m)| m)
            .expect("moments of a scaled variable");
        how.centre_and_scale(&self.vars[v].name, m).map(Some)
    }

    /// The basis of variable v when it is `poly(…)`, with the origin its
    /// accumulated powers are about (an error where R's poly() errs).
    pub fn poly_basis(&self, v: usize) -> Result<Option<(crate::transform::poly::PolyBasis, f64)>> {
        let Some((_, spec, sums)) = self.polys.iter().find(|(w, ..)| *w == v) else {
            return Ok(None);
        };
        let Some(origin) = sums.origin else {
            bail!("'{}': no row has a value for its polynomial", self.vars[v].name);
        };
        let basis = crate::transform::poly::PolyBasis::from_sums(&self.vars[v].name, *spec, sums)?;
        Ok(Some((basis, origin)))
    }

    /// Rows used so far.
    pub fn n_obs(&self) -> u64 {
        self.global.n
    }

    /// Decide each variable's kind from its column type (first chunk), and check later chunks agree.
    fn check_kinds(&mut self, chunk: &Chunk) -> Result<()> {
        if chunk.columns.len() != self.vars.len() {
            bail!(
                "internal: chunk has {} columns, model needs {}",
                chunk.columns.len(),
                self.vars.len()
            );
        }
        for (i, (v, col)) in self.vars.iter_mut().zip(chunk.columns.iter()).enumerate() {
            let numeric = matches!(col.data, ColumnData::Float(_) | ColumnData::Int(_));
            if Some(i) == self.weight_var && !numeric {
                bail!(
                    "weights: the column '{}' has type {}; prior weights must be numeric",
                    v.name,
                    col.type_name
                );
            }
            let kind = if v.grouping || v.factor || !numeric {
                Kind::Categorical
            } else {
                Kind::Numeric
            };
            if matches!(col.data, ColumnData::Key(_)) && !v.grouping && !v.response {
                bail!(
                    "column '{}' has type {}, which lmm can use only as a grouping factor, as in (1 | {}); \
                     cast it to VARCHAR for a fixed factor, or to a number for a covariate",
                    v.name,
                    col.type_name,
                    v.name
                );
            }
            if v.response && !numeric {
                bail!(
                    "column '{}' has type {} but the response must be numeric",
                    v.name,
                    col.type_name
                );
            }
            match v.kind {
                None => {
                    v.kind = Some(kind);
                    v.type_name = col.type_name.clone();
                }
                Some(k) if k != kind => bail!(
                    "column '{}' changed type between chunks ({} then {})",
                    v.name,
                    v.type_name,
                    col.type_name
                ),
                _ => {}
            }
        }
        Ok(())
    }

    #[inline]
    fn num(col: &Column, row: usize) -> f64 {
        match &col.data {
            ColumnData::Float(v) => v[row],
            ColumnData::Int(v) => v[row] as f64,
            _ => f64::NAN,
        }
    }

    /// Register the design column of `term` at the levels `lv`, its means relative to `shift`.
    pub(crate) fn new_ext(&mut self, term: usize, lv: Vec<u32>, shift: f64) -> Result<usize> {
        let c = self.ext.len();
        // Column 0 is the response.
        if c > crate::design::MAX_DESIGN_COLUMNS {
            let name: Vec<&str> = self.terms[term]
                .vars
                .iter()
                .map(|&v| self.vars[v].name.as_str())
                .collect();
            bail!(
                "the model's terms take more than {} design columns in these data (one per term and combination of \
                 factor levels that occurs; the limit was reached at term '{}'); drop the term or use factors with fewer levels",
                crate::design::MAX_DESIGN_COLUMNS,
                name.join(":")
            );
        }
        self.ext.push(ExtColumn {
            term,
            levels: lv.clone(),
        });
        self.shift.push(shift);
        if self.terms[term].random {
            self.zindex.push(self.zcols.len());
            self.zcols.push(c);
        } else {
            self.zindex.push(usize::MAX);
        }
        if lv.len() <= 1 {
            let slot = lv.first().map_or(0, |&l| l as usize);
            let by = &mut self.terms[term].by_level;
            if by.len() <= slot {
                by.resize(slot + 1, usize::MAX);
            }
            by[slot] = c;
        }
        self.terms[term].columns.insert(lv, c);
        Ok(c)
    }

    /// Add the rows `rows` (indices into the chunk, whose columns are
    /// `required_columns()`) to the statistics.
    pub fn update(&mut self, chunk: &Chunk, rows: &[usize]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self.derive.clone() {
            None => self.update_variables(chunk, rows),
            Some(d) => self.update_variables(&d.apply(chunk)?, rows),
        }
    }

    /// `update` on a chunk of the model's variables (`var_names`).
    fn update_variables(&mut self, chunk: &Chunk, rows: &[usize]) -> Result<()> {
        self.check_kinds(chunk)?;
        let cols = &chunk.columns;
        for (v, m) in self.scale_moments.iter_mut() {
            let col = &cols[*v];
            for &r in rows {
                let x = Self::num(col, r);
                if col.valid[r] && x.is_finite() {
                    m.push(x);
                }
            }
        }
        for (v, _, sums) in self.polys.iter_mut() {
            let col = &cols[*v];
            for &r in rows {
                let x = Self::num(col, r);
                if col.valid[r] && x.is_finite() {
                    sums.push(x);
                }
            }
        }
        let nvars = self.vars.len();
        let mut level_ids = std::mem::take(&mut self.level_ids);
        level_ids.resize(nvars, 0);
        let mut key = std::mem::take(&mut self.key);
        // Pass 1: drop incomplete rows (as lme4's na.omit does) and find each row's
        // group, so that pass 2 can prefetch the group's moments a few rows ahead:
        // with many groups, each row's update is otherwise a wait on memory.
        let mut kept = std::mem::take(&mut self.kept);
        kept.clear();
        let mut kept_w = std::mem::take(&mut self.kept_w);
        kept_w.clear();
        'rows: for &r in rows {
            for (i, col) in cols.iter().take(self.vars.len()).enumerate() {
                if !col.valid[r] {
                    self.n_dropped += 1;
                    continue 'rows;
                }
                // NaN and ±Inf are dropped in every column, a grouping or factor column too.
                if matches!(&col.data, ColumnData::Float(x) if !x[r].is_finite()) {
                    if Some(i) == self.weight_var {
                        bail!("weights: the column '{}' holds a non-finite weight ({}); prior weights must be finite and ≥ 0", self.vars[i].name, Self::num(col, r));
                    }
                    self.n_dropped += 1;
                    continue 'rows;
                }
            }
            if let Some(v) = self.weight_var {
                let w = Self::num(&cols[v], r);
                if w < 0.0 {
                    bail!("weights: the column '{}' holds a negative weight ({w}); prior weights must be ≥ 0", self.vars[v].name);
                }
                if w == 0.0 {
                    // A row of weight 0 carries no information: dropped, as lm does for its residual df.
                    self.n_dropped += 1;
                    continue 'rows;
                }
                kept_w.push(w);
                self.log_weights += w.ln();
            }
            // The first grouping factor's level; runs of one integer key, common in
            // data sorted by group, skip even the lookup.
            let f = &mut self.factors[0];
            let g = match (&f.vars[..], &cols[f.vars[0]].data) {
                ([_], ColumnData::Int(v))
                    if self.last_group.1 != usize::MAX && self.last_group.0 == v[r] =>
                {
                    self.last_group.1
                }
                ([_], ColumnData::Int(v)) => {
                    if let Some(&ahead) = v.get(r + 16) {
                        f.levels.prefetch_int(ahead);
                    }
                    let g = f.level(cols, r, &mut key);
                    self.last_group = (v[r], g);
                    g
                }
                _ => f.level(cols, r, &mut key),
            };
            kept.push((r, g));
        }
        // Terms made only of numeric variables (0) or only of factors (1) let the
        // all-rows co-moments be added a chunk at a time; a term mixing both (2)
        // falls back to Welford's update row by row.
        let term_class: Vec<u8> = self
            .terms
            .iter()
            .map(|t| {
                let cats = t
                    .vars
                    .iter()
                    .filter(|&&v| self.vars[v].kind == Some(Kind::Categorical))
                    .count();
                if cats == 0 {
                    0
                } else if cats == t.vars.len() {
                    1
                } else {
                    2
                }
            })
            .collect();
        let by_chunk = !term_class.contains(&2) && self.weight_var.is_none();
        self.chunk_dense.clear();
        self.chunk_active.clear();
        self.chunk_dense_ids.clear();
        const AHEAD: usize = 8;
        for (idx, &(r, g)) in kept.iter().enumerate() {
            let wt = kept_w.get(idx).copied();
            if let Some(&(_, ga)) = kept.get(idx + AHEAD) {
                self.factors[0].store.prefetch(ga);
            }
            for (i, v) in self.vars.iter_mut().enumerate() {
                if v.kind == Some(Kind::Categorical) && !v.grouping {
                    key.clear();
                    levels::encode(&cols[i], r, &mut key);
                    level_ids[i] = v.levels.id(&key);
                }
            }
            // Extended columns: term values first (may create columns), then the response.
            if self.ext.is_empty() {
                self.ext.push(ExtColumn {
                    term: usize::MAX,
                    levels: vec![],
                });
                self.shift.push(0.0);
                self.zindex.push(usize::MAX);
            }
            let mut slots = std::mem::take(&mut self.slots);
            let mut lv = std::mem::take(&mut self.lv);
            slots.clear();
            for t in 0..self.terms.len() {
                let mut value = 1.0;
                lv.clear();
                for (&v, &p) in self.terms[t].vars.iter().zip(&self.terms[t].powers) {
                    if self.vars[v].kind == Some(Kind::Numeric) {
                        let x = Self::num(&cols[v], r);
                        value *= match self.polys.iter().find(|(w, ..)| *w == v) {
                            None => x,
                            Some((_, _, sums)) => {
                                (x - sums.origin.expect("origin set by the sums")).powi(p as i32)
                            }
                        };
                    } else if self.vars[v].grouping {
                        // A grouping column used inside a term is a factor with its own levels.
                        key.clear();
                        levels::encode(&cols[v], r, &mut key);
                        lv.push(self.vars[v].levels.id(&key));
                    } else {
                        lv.push(level_ids[v]);
                    }
                }
                let fast = if lv.len() <= 1 {
                    let slot = lv.first().map_or(0, |&l| l as usize);
                    self.terms[t]
                        .by_level
                        .get(slot)
                        .copied()
                        .unwrap_or(usize::MAX)
                } else {
                    usize::MAX
                };
                let col = match if fast != usize::MAX {
                    Some(&fast)
                } else {
                    self.terms[t].columns.get(lv.as_slice())
                } {
                    Some(&c) => c,
                    // Rows before this one were 0 in a new column: its shift is 0.
                    None => self.new_ext(t, lv.clone(), 0.0)?,
                };
                slots.push((col, value));
            }
            let y = Self::num(&cols[0], r);
            if !self.shift_set {
                // First row of this state: shift each numeric column by its first value.
                self.shift[0] = y;
                for (t, &(c, v)) in slots.iter().enumerate() {
                    if self.terms[t]
                        .vars
                        .iter()
                        .all(|&v| self.vars[v].kind == Some(Kind::Numeric))
                    {
                        self.shift[c] = v;
                    }
                }
                self.shift_set = true;
            }
            let d = self.ext.len();
            self.x.clear();
            self.x.resize(d, 0.0);
            self.x[0] = y - self.shift[0];
            for &(c, v) in &slots {
                self.x[c] = v - self.shift[c];
            }
            self.slots = slots;
            self.lv = lv;
            self.delta.resize(d, 0.0);
            if by_chunk {
                // Dense values: the response, then each numeric term; indicators: the
                // active column of each factor-only term.
                if self.chunk_dense_ids.is_empty() {
                    self.chunk_dense_ids.push(0);
                    for (t, &(c, _)) in self.slots.iter().enumerate() {
                        if term_class[t] == 0 {
                            self.chunk_dense_ids.push(c);
                        }
                    }
                }
                self.chunk_dense.push(self.x[0]);
                for (t, &(c, _)) in self.slots.iter().enumerate() {
                    match term_class[t] {
                        0 => self.chunk_dense.push(self.x[c]),
                        _ => self.chunk_active.push(c),
                    }
                }
            } else {
                self.global.grow(d);
                match wt {
                    None => self.global.push(&self.x, &mut self.delta),
                    Some(w) => self.global.push_weighted(&self.x, w, &mut self.delta),
                }
            }
            let nz = self.zcols.len();
            let f0 = &mut self.factors[0].store;
            f0.ensure(d, nz);
            match wt {
                None => f0.push(g, &self.x, &self.zcols, &mut self.delta),
                Some(w) => f0.push_weighted(g, &self.x, w, &self.zcols, &mut self.delta),
            }
            if self.factors.len() > 1 {
                // Crossed or nested: every other factor's level, and every pair's cell.
                self.flev.clear();
                self.flev.push(g);
                for f in 1..self.factors.len() {
                    let fac = &mut self.factors[f];
                    let l = fac.level(cols, r, &mut key);
                    fac.store.ensure(d, nz);
                    match wt {
                        None => fac.store.push(l, &self.x, &self.zcols, &mut self.delta),
                        Some(w) => {
                            fac.store
                                .push_weighted(l, &self.x, w, &self.zcols, &mut self.delta)
                        }
                    }
                    self.flev.push(l);
                }
                for cell in &mut self.cells {
                    let c = cell.id(self.flev[cell.a] as u32, self.flev[cell.b] as u32);
                    cell.store.ensure(d, nz);
                    match wt {
                        None => cell.store.push(c, &self.x, &self.zcols, &mut self.delta),
                        Some(w) => {
                            cell.store
                                .push_weighted(c, &self.x, w, &self.zcols, &mut self.delta)
                        }
                    }
                }
            }
        }
        if by_chunk && !kept.is_empty() {
            let chunk = IndicatorChunk {
                dense_ids: &self.chunk_dense_ids,
                dense: &self.chunk_dense,
                active: &self.chunk_active,
                rows: kept.len(),
            };
            self.global.merge_indicator_chunk(self.ext.len(), &chunk);
        }
        self.kept = kept;
        self.kept_w = kept_w;
        self.level_ids = level_ids;
        self.key = key;
        self.check_statistics_size()
    }

    /// The per-group statistics grow with the groups met; after each chunk
    /// their size is checked against the budget (`crate::budget`), so that a
    /// key with too many distinct values is an error, not an exhausted host.
    fn check_statistics_size(&self) -> Result<()> {
        let stores = self
            .factors
            .iter()
            .map(|f| &f.store)
            .chain(self.cells.iter().map(|c| &c.store));
        let bytes: u128 = stores.map(|s| s.bytes() as u128).sum();
        let groups = self.factors.first().map_or(0, |f| f.store.len());
        crate::budget::check(
            &format!("the statistics of {groups} groups (and their crossings)"),
            bytes,
        )
    }

    /// Add another state's statistics; `other` is left untouched.
    pub fn merge(&mut self, other: &Accumulator) -> Result<()> {
        self.n_dropped += other.n_dropped;
        self.log_weights += other.log_weights;
        for (v, o) in self.vars.iter_mut().zip(other.vars.iter()) {
            match (v.kind, o.kind) {
                (None, Some(k)) => {
                    v.kind = Some(k);
                    v.type_name = o.type_name.clone();
                }
                (Some(a), Some(b)) if a != b => {
                    bail!(
                        "column '{}' has different types in different parts of the input",
                        v.name
                    )
                }
                _ => {}
            }
        }
        // scale()'s moments count rows the fit drops, too
        for ((_, mine), (_, theirs)) in self.scale_moments.iter_mut().zip(&other.scale_moments) {
            mine.merge(theirs);
        }
        // poly(): other's powers re-expressed about our origins (`transform::reorigin`)
        let mut moved: Option<Accumulator> = None;
        for slot in 0..self.polys.len() {
            if let (Some(a), Some(b)) = (self.polys[slot].2.origin, other.polys[slot].2.origin) {
                if a != b {
                    moved.get_or_insert_with(|| other.clone()).reorigin(slot, a)?;
                }
            }
        }
        let other = moved.as_ref().unwrap_or(other);
        for ((_, _, mine), (_, _, theirs)) in self.polys.iter_mut().zip(&other.polys) {
            mine.merge(theirs);
        }
        // A state that saw no rows adds nothing (a header, `distributed::header`,
        // saw rows but keeps no groups: its all-rows moments are merged).
        if other.factors[0].store.is_empty() && other.global.n == 0 {
            return Ok(());
        }
        // A state that saw no rows adopts the other's shifts, so its means carry over
        // unchanged; otherwise columns new to this state had value 0 here: shift 0.
        let adopt = !self.shift_set;
        // Level ids of other -> ours.
        let level_map: Vec<Vec<u32>> = self
            .vars
            .iter_mut()
            .zip(other.vars.iter())
            .map(|(v, o)| o.levels.keys.iter().map(|k| v.levels.id(k)).collect())
            .collect();
        if self.ext.is_empty() {
            self.ext.push(ExtColumn {
                term: usize::MAX,
                levels: vec![],
            });
            self.shift.push(other.shift[0]);
            self.zindex.push(usize::MAX);
        }
        let mut col_map = Vec::with_capacity(other.ext.len());
        let mut offset = Vec::with_capacity(other.ext.len());
        for (j, e) in other.ext.iter().enumerate() {
            let c = if e.term == usize::MAX {
                0
            } else {
                let lv: Vec<u32> = e
                    .levels
                    .iter()
                    .zip(
                        self.terms[e.term]
                            .vars
                            .iter()
                            .filter(|&&v| self.vars[v].kind != Some(Kind::Numeric)),
                    )
                    .map(|(&id, &v)| level_map[v][id as usize])
                    .collect();
                match self.terms[e.term].columns.get(&lv) {
                    Some(&c) => c,
                    None => self.new_ext(e.term, lv, if adopt { other.shift[j] } else { 0.0 })?,
                }
            };
            col_map.push(c);
            offset.push(other.shift[j] - self.shift[c]);
        }
        self.shift_set = true;
        let d = self.ext.len();
        let q = self.zcols.len();
        let zmap: Vec<usize> = other
            .zcols
            .iter()
            .map(|&c| self.zindex[col_map[c]])
            .collect();
        self.global.merge_mapped(&other.global, &col_map, &offset);
        let mut scratch = Vec::new();
        // Level ids of other's factors -> ours, then the per-level and per-cell moments.
        let mut fmaps: Vec<Vec<usize>> = Vec::with_capacity(self.factors.len());
        for (fs, fo) in self.factors.iter_mut().zip(other.factors.iter()) {
            fs.store.ensure(d, q);
            let mut fmap = Vec::with_capacity(fo.levels.len());
            for (gid, key) in fo.levels.keys.iter().enumerate() {
                let g = fs.levels.id(key) as usize;
                if g == fs.store.len() {
                    fs.store.add_group();
                }
                fs.store.merge_group(
                    g,
                    &fo.store,
                    gid,
                    &col_map,
                    &offset,
                    &zmap,
                    &self.zcols,
                    &mut scratch,
                );
                fmap.push(g);
            }
            fmaps.push(fmap);
        }
        for (cs, co) in self.cells.iter_mut().zip(other.cells.iter()) {
            cs.store.ensure(d, q);
            for (cid, &(la, lb)) in co.keys.iter().enumerate() {
                let c = cs.id(
                    fmaps[cs.a][la as usize] as u32,
                    fmaps[cs.b][lb as usize] as u32,
                );
                cs.store.merge_group(
                    c,
                    &co.store,
                    cid,
                    &col_map,
                    &offset,
                    &zmap,
                    &self.zcols,
                    &mut scratch,
                );
            }
        }
        Ok(())
    }

    /// Fit the model and return the tidy table.
    pub fn finish(&self) -> Result<Vec<TidyRow>> {
        crate::fit::fit(self).map(Tidy::into_rows)
    }

    /// Fit the model; the table with its BLUPs kept column-wise.
    pub fn finish_tidy(&self) -> Result<Tidy> {
        crate::fit::fit(self)
    }

    /// Fit the model; the model value (prediction recipe and tidy table).
    pub fn finish_model(&self) -> Result<crate::model::Model> {
        crate::fit::fit_model(self)
    }
}

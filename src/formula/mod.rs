//! The model language: lme4's formula syntax.
//!
//! `y ~ x1 * f + (1 + x1 | g) + (x2 || g) + (1 | a/b)`
//!
//! The fixed part is a set of terms (each a set of variables: `a:b` is the
//! interaction of `a` and `b`; `a*b` expands to `a + b + a:b`), an intercept
//! unless `0 +` or `- 1` is given. Each random-effects bar `(terms | group)`
//! carries its own intercept rule. `(x || g)` means `(1 | g) + (0 + x | g)`,
//! and `(1 | a/b)` means `(1 | a) + (1 | a:b)`.
//!
//! Expansion is bounded: equal terms are merged as a product expands
//! (`a*a` is `a`, `a:a` is `a`, `g:g` is `g`), and the limits below are checked
//! before each step allocates, so no formula can exhaust memory while parsing.

mod calls;
mod tokens;

use crate::bail;
use crate::error::Result;
pub use crate::transform::expr::Expr;
use tokens::{tokenize, Tok};

/// A model term: the interaction of one or more variables, in the order written.
pub type Term = Vec<String>;

/// Longest formula accepted, in bytes.
pub const MAX_FORMULA_BYTES: usize = 100_000;
/// Most terms one side of a formula (the fixed part, or one bar) may expand to.
pub const MAX_TERMS: usize = 1_000;
/// Most variables in one term (`a:b:c` has 3) or in one grouping factor.
pub const MAX_TERM_VARIABLES: usize = 32;
/// Most random-effects bars after expanding `||` and `/`.
pub const MAX_BARS: usize = 100;
/// Most distinct grouping factors.
pub const MAX_GROUPING_FACTORS: usize = 20;
/// Most segments in one grouping (`a/b/c` has 3).
pub const MAX_GROUPING_SEGMENTS: usize = 20;

/// One random-effects bar after expansion of `||` and `/`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomBar {
    /// Intercept included in this bar.
    pub intercept: bool,
    /// Non-intercept terms of this bar.
    pub terms: Vec<Term>,
    /// Grouping variables (more than one for an interaction `a:b`).
    pub group: Vec<String>,
    /// The block as written when it came from `diag(...)`, whose every
    /// column must be a term of its own (checked once the columns are known).
    pub diag_of: Option<String>,
}

/// How a bar's block is written: `(…)`, or one of lme4 2.0's / glmmTMB's
/// covariance structures `us(…)` (unstructured, the default) and `diag(…)`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Structure {
    Plain,
    Unstructured,
    Diagonal,
}

/// Covariance structures of lme4 2.0 and glmmTMB that lmm does not fit yet.
const STRUCTURES_NOT_YET: &[(&str, &str)] = &[
    ("cs", "compound symmetry"),
    ("homcs", "compound symmetry with one variance"),
    ("ar1", "first-order autoregressive"),
    ("homdiag", "diagonal with one variance"),
    ("toep", "Toeplitz"),
    ("ou", "Ornstein-Uhlenbeck"),
    ("rr", "reduced rank"),
];

/// How a variable made by a function in the formula gets its values.
#[derive(Debug, Clone, PartialEq)]
pub enum Derived {
    /// `I(e)`, `log(e)`, …, or a response such as `log(y)`: a number per row.
    Numeric(Expr),
    /// `factor(x)`, `C(x)`: the column's values as the levels of a factor.
    Factor(String),
    /// `scale(e, center, scale)`: (e − c)/s, c and s from the data
    /// (`transform::scale`); a row's value is e's, the design applies c and s.
    Scaled(Expr, crate::transform::scale::Scaling),
    /// `poly(e, k [, raw])`: k columns, R's orthogonal polynomials of e over
    /// the rows (`transform::poly`); a row's value is e's, the design combines
    /// the accumulated powers.
    Poly(Expr, crate::transform::poly::PolySpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    /// The response's name (a column, or an expression as R names it: `log(Reaction)`).
    pub response: String,
    pub intercept: bool,
    /// Fixed-effect terms, ordered as R orders them (by degree, then as written).
    pub fixed: Vec<Term>,
    pub random: Vec<RandomBar>,
    /// The variables that are functions of columns, by name (`calls`).
    pub derived: Vec<(String, Derived)>,
    /// `offset(e)` terms: subtracted from the response in the fit, added to a prediction.
    pub offsets: Vec<Expr>,
}

impl Formula {
    /// How variable `name` is made, when a function in the formula makes it.
    pub fn derived(&self, name: &str) -> Option<&Derived> {
        self.derived.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }
}

/// Terms of a right-hand side before intercept handling.
#[derive(Debug, Default)]
struct Rhs {
    /// Some(true) for `1`, Some(false) for `0` / `-1`.
    intercept: Option<bool>,
    terms: Vec<Term>,
    removed: Vec<Term>,
    bars: Vec<RandomBar>,
    offsets: Vec<Expr>,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// The response, once read (it may appear in no term or grouping).
    response: String,
    /// Variables made by functions (`calls`).
    derived: Vec<(String, Derived)>,
    /// Expression nodes read so far (bounded: `calls::MAX_EXPRESSION_NODES`).
    nodes: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn error<T>(&self, what: &str) -> Result<T> {
        let at = self
            .toks
            .get(self.pos)
            .map(|t| t.1)
            .unwrap_or(self.src.len());
        bail!(
            "formula syntax error: {what} at position {}\n  {}\n  {}^",
            at + 1,
            self.src,
            " ".repeat(at)
        )
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<()> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(&format!("expected {what}"))
        }
    }

    /// sum := ['-'] product (('+' | '-') product)*
    fn sum(&mut self, rhs: &mut Rhs, in_bar: bool) -> Result<()> {
        let mut sign = true;
        if self.peek() == Some(&Tok::Minus) {
            self.pos += 1;
            sign = false;
        }
        loop {
            self.product(rhs, sign, in_bar)?;
            match self.peek() {
                Some(Tok::Plus) => {
                    self.pos += 1;
                    sign = true;
                }
                Some(Tok::Minus) => {
                    self.pos += 1;
                    sign = false;
                }
                _ => return Ok(()),
            }
        }
    }

    /// A random-effects bar `(terms | group)` (`(terms || group)`), the
    /// parser at its '(' (for `us(…)` / `diag(…)`, after the name).
    fn bar(&mut self, rhs: &mut Rhs, sign: bool, structure: Structure) -> Result<()> {
        if !sign {
            return self.error("a random-effects term cannot be removed");
        }
        let open = self.toks[if structure == Structure::Plain {
            self.pos
        } else {
            self.pos - 1
        }]
        .1;
        self.pos += 1;
        let mut inner = Rhs::default();
        self.sum(&mut inner, true)?;
        let double = match self.peek() {
            Some(Tok::Bar) => false,
            Some(Tok::DoubleBar) if structure != Structure::Plain => {
                return self.error("a covariance structure takes a single '|' (diag(x | g) is already what (x || g) means)")
            }
            Some(Tok::DoubleBar) => true,
            _ => return self.error("expected '|' or '||' in a random-effects term"),
        };
        self.pos += 1;
        let groups = self.grouping()?;
        let close = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1 + 1);
        self.expect(Tok::RParen, "')' closing the random-effects term")?;
        let bar_text = &self.src[open..close];
        if inner.terms.iter().flatten().any(|v| *v == self.response) {
            bail!(
                "the response '{}' also appears in the random-effects term '{bar_text}'",
                self.response
            );
        }
        if groups.iter().flatten().any(|v| *v == self.response) {
            bail!("the response '{}' is also a grouping column in the random-effects term '{bar_text}'", self.response);
        }
        let intercept = inner.intercept.unwrap_or(true);
        let mut terms = Vec::new();
        for t in expand_removals(inner.terms, &inner.removed) {
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        if !double && !intercept && terms.is_empty() {
            return self.error("a random-effects term needs at least one effect");
        }
        let double = double || structure == Structure::Diagonal;
        let diag_of = (structure == Structure::Diagonal).then(|| bar_text.to_string());
        let bars_per_group = if double {
            intercept as usize + terms.len()
        } else {
            1
        };
        let total = rhs.bars.len() + bars_per_group * groups.len();
        if total > MAX_BARS {
            bail!(
                "the formula has more than {MAX_BARS} random-effects terms after expanding '||' and '/' ({total} with '{bar_text}'); \
                 combine terms into fewer bars"
            );
        }
        for group in groups {
            if double {
                if intercept {
                    rhs.bars.push(RandomBar {
                        intercept: true,
                        terms: vec![],
                        group: group.clone(),
                        diag_of: diag_of.clone(),
                    });
                }
                for t in &terms {
                    rhs.bars.push(RandomBar {
                        intercept: false,
                        terms: vec![t.clone()],
                        group: group.clone(),
                        diag_of: diag_of.clone(),
                    });
                }
            } else {
                rhs.bars.push(RandomBar {
                    intercept,
                    terms: terms.clone(),
                    group,
                    diag_of: None,
                });
            }
        }
        let mut factors: Vec<&Vec<String>> = Vec::new();
        for b in &rhs.bars {
            if !factors.iter().any(|g| same_term(g, &b.group)) {
                factors.push(&b.group);
            }
        }
        if factors.len() > MAX_GROUPING_FACTORS {
            bail!(
                "the formula has more than {MAX_GROUPING_FACTORS} distinct grouping factors (at '{bar_text}'); \
                 each pair of factors costs a table of level pairs, so lmm fits at most {MAX_GROUPING_FACTORS}"
            );
        }
        Ok(())
    }

    /// product := item (('*' | ':') item)*, or a number 0/1, or a bar in parentheses.
    fn product(&mut self, rhs: &mut Rhs, sign: bool, in_bar: bool) -> Result<()> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                let v = match n.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => {
                        return {
                            self.pos -= 1;
                            self.error(&format!("only 0 or 1 may appear as a number, found '{n}'"))
                        }
                    }
                };
                rhs.intercept = Some(if sign { v } else { !v });
                return Ok(());
            }
            Some(Tok::LParen) if !in_bar => return self.bar(rhs, sign, Structure::Plain),
            Some(Tok::Ident(name))
                if !in_bar
                    && self.at_call().is_some()
                    && matches!(name.as_str(), "us" | "diag") =>
            {
                self.pos += 1;
                let structure = if name == "us" {
                    Structure::Unstructured
                } else {
                    Structure::Diagonal
                };
                return self.bar(rhs, sign, structure);
            }
            Some(Tok::Ident(name))
                if !in_bar
                    && self.at_call().is_some()
                    && STRUCTURES_NOT_YET.iter().any(|(n, _)| *n == name) =>
            {
                let what = STRUCTURES_NOT_YET
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap()
                    .1;
                return self.error(&format!(
                    "the covariance structure '{name}(…)' ({what}) is not supported yet; lmm fits us(…) = (… | g), the unstructured \
                     block, and diag(…) = (… || g), independent terms"
                ));
            }
            Some(Tok::Ident(name)) if name == "offset" && self.at_call().is_some() => {
                if in_bar {
                    return self.error("offset() cannot be part of a random-effects term");
                }
                if !sign {
                    return self.error("an offset cannot be removed");
                }
                let e = self.offset_call()?;
                if matches!(self.peek(), Some(Tok::Star) | Some(Tok::Colon)) {
                    return self.error("an offset cannot be part of an interaction");
                }
                rhs.offsets.push(e);
                return Ok(());
            }
            _ => {}
        }
        // `:` binds tighter than `*`: a*b:c is a + b:c + a:b:c.
        let start = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
        let mut expansion: Vec<Term> = vec![self.colon_term()?];
        while self.peek() == Some(&Tok::Star) {
            self.pos += 1;
            let it = self.colon_term()?;
            // (t1 + … + tk) * it = t1 + … + tk + it + t1:it + … + tk:it, equal terms once.
            let products: Vec<Term> = std::iter::once(it.clone())
                .chain(expansion.iter().map(|t| concat(t, &it)))
                .collect();
            for t in products {
                if t.len() > MAX_TERM_VARIABLES {
                    let end = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
                    bail!(
                        "the product '{}' makes an interaction of more than {MAX_TERM_VARIABLES} variables; lmm allows at most {MAX_TERM_VARIABLES} in one term",
                        quote_excerpt(self.src[start..end].trim_end())
                    );
                }
                if !expansion.iter().any(|e| same_term(e, &t)) {
                    if expansion.len() == MAX_TERMS {
                        return self.too_many_terms(start, in_bar);
                    }
                    expansion.push(t);
                }
            }
        }
        let list = if sign {
            &mut rhs.terms
        } else {
            &mut rhs.removed
        };
        for t in expansion {
            if !list.iter().any(|e| same_term(e, &t)) {
                if list.len() == MAX_TERMS {
                    return self.too_many_terms(start, in_bar);
                }
                list.push(t);
            }
        }
        Ok(())
    }

    /// The error for a product whose expansion passes `MAX_TERMS`, quoting it from `start`.
    fn too_many_terms<T>(&self, start: usize, in_bar: bool) -> Result<T> {
        let end = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
        let text = quote_excerpt(self.src[start..end].trim_end());
        let side = if in_bar {
            "random-effect terms in one bar"
        } else {
            "fixed-effect terms"
        };
        bail!(
            "the formula expands to more than {MAX_TERMS} {side} at '{text}'; \
             each '*' doubles the number of terms, so write the interactions you need with ':' instead"
        )
    }

    fn colon_term(&mut self) -> Result<Term> {
        let start = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
        let mut t = self.item()?;
        while self.peek() == Some(&Tok::Colon) {
            self.pos += 1;
            let it = self.item()?;
            t = concat(&t, &it);
            if t.len() > MAX_TERM_VARIABLES {
                let end = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
                bail!(
                    "the term '{}' is an interaction of more than {MAX_TERM_VARIABLES} variables; lmm allows at most {MAX_TERM_VARIABLES} in one term",
                    quote_excerpt(&self.src[start..end])
                );
            }
        }
        Ok(t)
    }

    fn item(&mut self) -> Result<Term> {
        if self.at_call().is_some() {
            return Ok(vec![self.call_variable()?]);
        }
        match self.peek().cloned() {
            Some(Tok::Caret) => self.error("'^' in a formula term means crossing in R; write I(x^2) for a power, or a*b for crossing"),
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.peek() == Some(&Tok::Caret) {
                    return self.error("'^' in a formula term means crossing in R; write I(x^2) for a power, or a*b for crossing");
                }
                Ok(vec![name])
            }
            Some(Tok::Num(n)) => self.error(&format!("'{n}' cannot be part of an interaction")),
            Some(Tok::LParen) => self.error("parentheses are only for random-effects terms '(... | group)' and functions such as I(x^2)"),
            _ => self.error("expected a column name"),
        }
    }

    /// grouping := name ((':' | '/') name)*. `a/b` gives groups [a] and [b, a]:
    /// lme4 names the nested factor `b:a` (levels "b-value:a-value").
    /// A variable repeated in an interaction counts once (`g:g` is `g`), and a
    /// grouping that repeats an earlier one is dropped (`g/g` is `g`).
    fn grouping(&mut self) -> Result<Vec<Vec<String>>> {
        let start = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
        let mut segments: Vec<Vec<String>> = vec![Vec::new()];
        let mut nvars = 0;
        loop {
            match self.peek().cloned() {
                Some(Tok::Ident(name)) => {
                    self.pos += 1;
                    if !segments.iter().flatten().any(|v| *v == name) {
                        nvars += 1;
                        segments.last_mut().unwrap().push(name);
                    }
                }
                _ => return self.error("expected a grouping column name"),
            }
            let end = self.toks.get(self.pos).map_or(self.src.len(), |t| t.1);
            if nvars > MAX_TERM_VARIABLES {
                bail!(
                    "the grouping '{}' has more than {MAX_TERM_VARIABLES} variables; lmm allows at most {MAX_TERM_VARIABLES}",
                    quote_excerpt(&self.src[start..end])
                );
            }
            match self.peek() {
                Some(Tok::Colon) => {
                    self.pos += 1;
                }
                // A segment that brought nothing new is reused: `g/g/h` is `g/h`.
                Some(Tok::Slash) if segments.last().is_some_and(|s| s.is_empty()) => {
                    self.pos += 1;
                }
                Some(Tok::Slash) => {
                    self.pos += 1;
                    if segments.len() == MAX_GROUPING_SEGMENTS {
                        bail!(
                            "the grouping '{}' has more than {MAX_GROUPING_SEGMENTS} nesting levels ('/'); lmm allows at most {MAX_GROUPING_SEGMENTS}",
                            quote_excerpt(&self.src[start..end])
                        );
                    }
                    segments.push(Vec::new());
                }
                _ => break,
            }
        }
        // a/b/c: a, b:a, c:b:a (a last segment with nothing new adds no factor).
        if segments.len() > 1 && segments.last().is_some_and(|s| s.is_empty()) {
            segments.pop();
        }
        Ok((0..segments.len())
            .map(|i| segments[..=i].iter().rev().flatten().cloned().collect())
            .collect())
    }
}

fn concat(a: &Term, b: &Term) -> Term {
    let mut t = a.clone();
    for v in b {
        if !t.contains(v) {
            t.push(v.clone());
        }
    }
    t
}

/// A piece of the formula for a message: at most 60 characters, elided in the middle.
fn quote_excerpt(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 60 {
        return text.to_string();
    }
    let head: String = chars[..40].iter().collect();
    let tail: String = chars[chars.len() - 15..].iter().collect();
    format!("{head}...{tail}")
}

fn same_term(a: &Term, b: &Term) -> bool {
    a.len() == b.len() && a.iter().all(|v| b.contains(v))
}

fn expand_removals(terms: Vec<Term>, removed: &[Term]) -> Vec<Term> {
    terms
        .into_iter()
        .filter(|t| !removed.iter().any(|r| same_term(t, r)))
        .collect()
}

pub fn parse(src: &str) -> Result<Formula> {
    if src.len() > MAX_FORMULA_BYTES {
        bail!(
            "the formula is {} bytes long; lmm accepts formulas of at most {MAX_FORMULA_BYTES} bytes",
            src.len()
        );
    }
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        response: String::new(),
        derived: Vec::new(),
        nodes: 0,
    };
    let response = match (p.peek().cloned(), p.toks.get(1).map(|t| t.0.clone())) {
        (Some(Tok::Ident(name)), Some(Tok::Tilde)) => {
            p.pos = 2;
            name
        }
        (Some(Tok::Tilde), _) => return p.error("the formula needs a response column before '~'"),
        _ => {
            if !p.toks.iter().any(|t| t.0 == Tok::Tilde) {
                bail!("formula syntax error: no '~' found; write 'response ~ terms', e.g. 'y ~ x + (1 | g)'\n  {src}");
            }
            // A function of the response: `log(Reaction) ~ …`.
            if matches!(p.at_call().as_deref(), Some("factor") | Some("C")) {
                return p.error("the response must be numeric, not a factor");
            }
            let e = p.expr()?;
            if p.peek() != Some(&Tok::Tilde) {
                return p.error("expected '~' after the response");
            }
            p.pos += 1;
            match e {
                Expr::Column(name) => name,
                e => {
                    let name = e.deparse();
                    p.derived.push((name.clone(), Derived::Numeric(e)));
                    name
                }
            }
        }
    };
    p.response = response.clone();
    if p.peek().is_none() {
        return p.error("expected terms after '~'");
    }
    let mut rhs = Rhs::default();
    p.sum(&mut rhs, false)?;
    if p.pos < p.toks.len() {
        return p.error("unexpected token");
    }
    let mut fixed: Vec<Term> = Vec::new();
    for t in expand_removals(rhs.terms, &rhs.removed) {
        if !fixed.iter().any(|f| same_term(f, &t)) {
            fixed.push(t);
        }
    }
    // R orders terms by degree, keeping the written order within a degree.
    fixed.sort_by_key(|t| t.len());
    let intercept = rhs.intercept.unwrap_or(true);
    if fixed.iter().flatten().any(|v| *v == response) {
        bail!("the response '{response}' also appears on the right-hand side of the formula");
    }
    Ok(Formula {
        response,
        intercept,
        fixed,
        random: rhs.bars,
        derived: p.derived,
        offsets: rhs.offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> Term {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fixed_and_random() {
        let f = parse("Weight ~ Time + (1 + Time | Pig)").unwrap();
        assert_eq!(f.response, "Weight");
        assert!(f.intercept);
        assert_eq!(f.fixed, vec![t(&["Time"])]);
        assert_eq!(
            f.random,
            vec![RandomBar {
                intercept: true,
                terms: vec![t(&["Time"])],
                group: t(&["Pig"]),
                diag_of: None
            }]
        );
    }

    #[test]
    fn double_bar_splits() {
        let f = parse("Reaction ~ Days + (Days || Subject)").unwrap();
        assert_eq!(f.random.len(), 2);
        assert!(f.random[0].intercept && f.random[0].terms.is_empty());
        assert!(!f.random[1].intercept && f.random[1].terms == vec![t(&["Days"])]);
    }

    #[test]
    fn structures_us_and_diag_are_bar_and_double_bar() {
        let plain = |f: &Formula| {
            f.random
                .iter()
                .map(|b| (b.intercept, b.terms.clone(), b.group.clone()))
                .collect::<Vec<_>>()
        };
        let us = parse("Reaction ~ Days + us(Days | Subject)").unwrap();
        assert_eq!(
            us.random,
            parse("Reaction ~ Days + (Days | Subject)").unwrap().random
        );
        let diag = parse("Reaction ~ Days + diag(1 + Days | Subject) + (1 | Other)").unwrap();
        let double = parse("Reaction ~ Days + (1 + Days || Subject) + (1 | Other)").unwrap();
        assert_eq!(plain(&diag), plain(&double));
        assert_eq!(
            diag.random[0].diag_of.as_deref(),
            Some("diag(1 + Days | Subject)")
        );
        assert_eq!(
            diag.random[1].diag_of.as_deref(),
            Some("diag(1 + Days | Subject)")
        );
        assert_eq!(diag.random[2].diag_of, None);
        // a column called diag is still a column
        assert_eq!(
            parse("y ~ diag + (1 | g)").unwrap().fixed,
            vec![t(&["diag"])]
        );
        let e = parse("y ~ x + diag(x || g)").unwrap_err();
        assert!(e.0.contains("single '|'"), "{}", e.0);
        for (name, what) in [
            ("cs", "compound symmetry"),
            ("ar1", "autoregressive"),
            ("homcs", "one variance"),
        ] {
            let e = parse(&format!("y ~ week + {name}(0 + week_f | patient)")).unwrap_err();
            assert!(
                e.0.contains(&format!("'{name}(…)'"))
                    && e.0.contains(what)
                    && e.0.contains("diag(…)"),
                "{}",
                e.0
            );
        }
    }

    #[test]
    fn star_and_colon_and_no_intercept() {
        let f = parse("y ~ 0 + a*b + c:d + (0 + x | g)").unwrap();
        assert!(!f.intercept);
        assert_eq!(
            f.fixed,
            vec![t(&["a"]), t(&["b"]), t(&["a", "b"]), t(&["c", "d"])]
        );
        assert!(!f.random[0].intercept);
        let g = parse("y ~ x - 1 + (1 | g)").unwrap();
        assert!(!g.intercept);
        assert_eq!(g.fixed, vec![t(&["x"])]);
    }

    #[test]
    fn nested_groups() {
        let f = parse("strength ~ 1 + (1 | batch/cask)").unwrap();
        assert_eq!(f.fixed.len(), 0);
        assert_eq!(f.random[0].group, t(&["batch"]));
        assert_eq!(f.random[1].group, t(&["cask", "batch"]));
        let g = parse("y ~ (1 | a/b/c)").unwrap();
        let groups: Vec<Term> = g.random.iter().map(|b| b.group.clone()).collect();
        assert_eq!(groups, vec![t(&["a"]), t(&["b", "a"]), t(&["c", "b", "a"])]);
    }

    #[test]
    fn repeated_factors_expand_once() {
        let days = vec!["Days"; 26].join("*");
        let f = parse(&format!("Reaction ~ {days} + (1 | Subject)")).unwrap();
        assert_eq!(f.fixed, vec![t(&["Days"])]);
        let f = parse("y ~ a*b*a*b + (1 | g)").unwrap();
        assert_eq!(f.fixed, vec![t(&["a"]), t(&["b"]), t(&["a", "b"])]);
        let nested = vec!["Subject"; 3000].join("/");
        let f = parse(&format!("y ~ x + (1 | {nested})")).unwrap();
        assert_eq!(f.random.len(), 1);
        assert_eq!(f.random[0].group, t(&["Subject"]));
        let f = parse("y ~ x + (1 | Subject:Subject) + (1 | a/b/a) + (1 | c/c/d)").unwrap();
        let groups: Vec<Term> = f.random.iter().map(|b| b.group.clone()).collect();
        assert_eq!(
            groups,
            vec![
                t(&["Subject"]),
                t(&["a"]),
                t(&["b", "a"]),
                t(&["c"]),
                t(&["d", "c"])
            ]
        );
    }

    #[test]
    fn expansion_limits_are_errors_not_allocations() {
        let vars: Vec<String> = (0..22).map(|i| format!("x{i}")).collect();
        let e = parse(&format!("y ~ {} + (1 | g)", vars.join("*"))).unwrap_err();
        assert!(
            e.0.contains("more than 1000 fixed-effect terms at 'x0*x1*"),
            "{}",
            e.0
        );
        // Ten factors make 1023 terms: just over; nine make 511.
        assert!(parse(&format!("y ~ {} + (1 | g)", vars[..10].join("*"))).is_err());
        assert_eq!(
            parse(&format!("y ~ {} + (1 | g)", vars[..9].join("*")))
                .unwrap()
                .fixed
                .len(),
            511
        );
        let e = parse(&format!("y ~ x + ({} | g)", vars.join("*"))).unwrap_err();
        assert!(e.0.contains("random-effect terms in one bar"), "{}", e.0);
        let wide: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        let e = parse(&format!("y ~ {} + (1 | g)", wide.join(":"))).unwrap_err();
        assert!(e.0.contains("more than 32 variables"), "{}", e.0);
        let segs: Vec<String> = (0..3000).map(|i| format!("g{i}")).collect();
        let e = parse(&format!("y ~ x + (1 | {})", segs.join("/"))).unwrap_err();
        assert!(
            e.0.contains("more than 20 nesting levels") && e.0.contains("'g0/g1/g2"),
            "{}",
            e.0
        );
        let bars: Vec<String> = (0..101).map(|i| format!("(1 | g{})", i % 7)).collect();
        let e = parse(&format!("y ~ x + {}", bars.join(" + "))).unwrap_err();
        assert!(
            e.0.contains("more than 100 random-effects terms"),
            "{}",
            e.0
        );
        let bars: Vec<String> = (0..21).map(|i| format!("(1 | g{i})")).collect();
        let e = parse(&format!("y ~ x + {}", bars.join(" + "))).unwrap_err();
        assert!(
            e.0.contains("more than 20 distinct grouping factors") && e.0.contains("(1 | g20)"),
            "{}",
            e.0
        );
        let long = format!("y ~ x + (1 | g){}", " ".repeat(100_000));
        assert!(parse(&long).unwrap_err().0.contains("at most 100000 bytes"));
        let many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
        let e = parse(&format!("y ~ {} + (1 | g)", many.join(" + "))).unwrap_err();
        assert!(e.0.contains("more than 1000 fixed-effect terms"), "{}", e.0);
    }

    #[test]
    fn response_in_a_random_term_is_an_error() {
        let e = parse("Reaction ~ Days + (Reaction | Subject)").unwrap_err();
        assert_eq!(e.0, "the response 'Reaction' also appears in the random-effects term '(Reaction | Subject)'");
        let e = parse("Reaction ~ Days + (0 + Days:Reaction || Subject)").unwrap_err();
        assert!(e.0.contains("'(0 + Days:Reaction || Subject)'"), "{}", e.0);
        let e = parse("Reaction ~ Days + (1 | Subject/Reaction)").unwrap_err();
        assert_eq!(e.0, "the response 'Reaction' is also a grouping column in the random-effects term '(1 | Subject/Reaction)'");
    }

    #[test]
    fn functions_become_variables_named_as_r_names_them() {
        let f = parse("log(Reaction) ~ I(Days^2) + I(-x * 2 + 1e-3) + factor(k):log10(z) + offset(log(n)) + (I(Days/10) | g)").unwrap();
        assert_eq!(f.response, "log(Reaction)");
        assert_eq!(
            f.fixed,
            vec![
                t(&["I(Days^2)"]),
                t(&["I(-x * 2 + 0.001)"]),
                t(&["factor(k)", "log10(z)"])
            ]
        );
        assert_eq!(f.random[0].terms, vec![t(&["I(Days/10)"])]);
        assert_eq!(f.offsets.len(), 1);
        assert_eq!(f.offsets[0].deparse(), "log(n)");
        assert_eq!(f.derived("factor(k)"), Some(&Derived::Factor("k".into())));
        assert!(matches!(
            f.derived("log(Reaction)"),
            Some(Derived::Numeric(_))
        ));
        // -x^2 is -(x^2), 2^-1 is 2^(-1), as in R
        let f = parse("y ~ I(-x^2 + 2^-1) + (1 | g)").unwrap();
        let Some(Derived::Numeric(e)) = f.derived(&f.fixed[0][0]) else {
            panic!()
        };
        assert_eq!(e.eval(&|_| 3.0), -9.0 + 0.5);
    }

    #[test]
    fn expressions_are_bounded() {
        let deep = format!("y ~ I({}x{}) + (1 | g)", "(".repeat(300), ")".repeat(300));
        assert!(parse(&deep).unwrap_err().0.contains("more than 256 parts"));
        assert!(parse("y ~ ns(x, 2) + (1 | g)")
            .unwrap_err()
            .0
            .contains("'ns()' is not supported yet"));
        assert!(parse("y ~ x + offset(z):a + (1 | g)")
            .unwrap_err()
            .0
            .contains("cannot be part of an interaction"));
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let e = parse("y ~ x + (1 | )").unwrap_err();
        assert!(e.0.contains("grouping column"), "{}", e.0);
        assert!(e.0.contains("position 14"), "{}", e.0);
        assert!(parse("y x").unwrap_err().0.contains("'~'"));
        assert!(parse("y ~ x + (x g)").unwrap_err().0.contains("'|'"));
        assert!(parse("y ~ x $ z").unwrap_err().0.contains("'$'"));
        assert!(parse("y ~ 2 + x").unwrap_err().0.contains("only 0 or 1"));
    }
}

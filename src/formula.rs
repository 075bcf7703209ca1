//! The model language: lme4's formula syntax.
//!
//! `y ~ x1 * f + (1 + x1 | g) + (x2 || g) + (1 | a/b)`
//!
//! The fixed part is a set of terms (each a set of variables: `a:b` is the
//! interaction of `a` and `b`; `a*b` expands to `a + b + a:b`), an intercept
//! unless `0 +` or `- 1` is given. Each random-effects bar `(terms | group)`
//! carries its own intercept rule. `(x || g)` means `(1 | g) + (0 + x | g)`,
//! and `(1 | a/b)` means `(1 | a) + (1 | a:b)`.

use crate::bail;
use crate::error::Result;

/// A model term: the interaction of one or more variables, in the order written.
pub type Term = Vec<String>;

/// One random-effects bar after expansion of `||` and `/`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomBar {
    /// Intercept included in this bar.
    pub intercept: bool,
    /// Non-intercept terms of this bar.
    pub terms: Vec<Term>,
    /// Grouping variables (more than one for an interaction `a:b`).
    pub group: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    pub response: String,
    pub intercept: bool,
    /// Fixed-effect terms, ordered as R orders them (by degree, then as written).
    pub fixed: Vec<Term>,
    pub random: Vec<RandomBar>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Tilde,
    Plus,
    Minus,
    Colon,
    Star,
    Slash,
    Bar,
    DoubleBar,
    LParen,
    RParen,
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'~' => out.push((Tok::Tilde, start)),
            b'+' => out.push((Tok::Plus, start)),
            b'-' => out.push((Tok::Minus, start)),
            b':' => out.push((Tok::Colon, start)),
            b'*' => out.push((Tok::Star, start)),
            b'/' => out.push((Tok::Slash, start)),
            b'(' => out.push((Tok::LParen, start)),
            b')' => out.push((Tok::RParen, start)),
            b'|' => {
                if b.get(i + 1) == Some(&b'|') {
                    out.push((Tok::DoubleBar, start));
                    i += 1;
                } else {
                    out.push((Tok::Bar, start));
                }
            }
            b'`' | b'"' => {
                // Quoted column name: `my column`.
                let close = c;
                let mut j = i + 1;
                while j < b.len() && b[j] != close {
                    j += 1;
                }
                if j >= b.len() {
                    bail!("formula syntax error: unterminated quoted name at position {}\n  {}\n  {}^", start + 1, src, " ".repeat(start));
                }
                out.push((Tok::Ident(src[i + 1..j].to_string()), start));
                i = j;
            }
            b'0'..=b'9' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                    j += 1;
                }
                out.push((Tok::Num(src[i..j].to_string()), start));
                i = j;
                continue;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c == b'.' || c >= 0x80 => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.' || b[j] >= 0x80) {
                    j += 1;
                }
                out.push((Tok::Ident(src[i..j].to_string()), start));
                i = j;
                continue;
            }
            _ => bail!(
                "formula syntax error: unexpected character '{}' at position {}\n  {}\n  {}^",
                c as char,
                start + 1,
                src,
                " ".repeat(start)
            ),
        }
        i += 1;
    }
    Ok(out)
}

/// Terms of a right-hand side before intercept handling.
#[derive(Debug, Default)]
struct Rhs {
    /// Some(true) for `1`, Some(false) for `0` / `-1`.
    intercept: Option<bool>,
    terms: Vec<Term>,
    removed: Vec<Term>,
    bars: Vec<RandomBar>,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn error<T>(&self, what: &str) -> Result<T> {
        let at = self.toks.get(self.pos).map(|t| t.1).unwrap_or(self.src.len());
        bail!("formula syntax error: {what} at position {}\n  {}\n  {}^", at + 1, self.src, " ".repeat(at))
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

    /// product := item (('*' | ':') item)*, or a number 0/1, or a bar in parentheses.
    fn product(&mut self, rhs: &mut Rhs, sign: bool, in_bar: bool) -> Result<()> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                let v = match n.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => return { self.pos -= 1; self.error(&format!("only 0 or 1 may appear as a number, found '{n}'")) },
                };
                rhs.intercept = Some(if sign { v } else { !v });
                return Ok(());
            }
            Some(Tok::LParen) if !in_bar => {
                // A random-effects bar.
                if !sign {
                    return self.error("a random-effects term cannot be removed");
                }
                self.pos += 1;
                let mut inner = Rhs::default();
                self.sum(&mut inner, true)?;
                let double = match self.peek() {
                    Some(Tok::Bar) => false,
                    Some(Tok::DoubleBar) => true,
                    _ => return self.error("expected '|' or '||' in a random-effects term"),
                };
                self.pos += 1;
                let groups = self.grouping()?;
                self.expect(Tok::RParen, "')' closing the random-effects term")?;
                let intercept = inner.intercept.unwrap_or(true);
                let mut terms = Vec::new();
                for t in expand_removals(inner.terms, &inner.removed) {
                    if !terms.contains(&t) {
                        terms.push(t);
                    }
                }
                for group in groups {
                    if double {
                        if intercept {
                            rhs.bars.push(RandomBar { intercept: true, terms: vec![], group: group.clone() });
                        }
                        for t in &terms {
                            rhs.bars.push(RandomBar { intercept: false, terms: vec![t.clone()], group: group.clone() });
                        }
                    } else {
                        if !intercept && terms.is_empty() {
                            return self.error("a random-effects term needs at least one effect");
                        }
                        rhs.bars.push(RandomBar { intercept, terms: terms.clone(), group });
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        // `:` binds tighter than `*`: a*b:c is a + b:c + a:b:c.
        let mut expansion: Vec<Term> = vec![self.colon_term()?];
        while self.peek() == Some(&Tok::Star) {
            self.pos += 1;
            let it = self.colon_term()?;
            let mut next = expansion.clone();
            next.push(it.clone());
            for t in &expansion {
                next.push(concat(t, &it));
            }
            expansion = next;
        }
        for t in expansion {
            if sign {
                rhs.terms.push(t);
            } else {
                rhs.removed.push(t);
            }
        }
        Ok(())
    }

    fn colon_term(&mut self) -> Result<Term> {
        let mut t = self.item()?;
        while self.peek() == Some(&Tok::Colon) {
            self.pos += 1;
            let it = self.item()?;
            t = concat(&t, &it);
        }
        Ok(t)
    }

    fn item(&mut self) -> Result<Term> {
        match self.peek().cloned() {
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                Ok(vec![name])
            }
            Some(Tok::Num(n)) => self.error(&format!("'{n}' cannot be part of an interaction")),
            Some(Tok::LParen) => self.error("parentheses are only for random-effects terms '(... | group)'"),
            _ => self.error("expected a column name"),
        }
    }

    /// grouping := name ((':' | '/') name)*. `a/b` gives groups [a] and [b, a]:
    /// lme4 names the nested factor `b:a` (levels "b-value:a-value").
    fn grouping(&mut self) -> Result<Vec<Vec<String>>> {
        let mut segments: Vec<Vec<String>> = vec![Vec::new()];
        loop {
            match self.peek().cloned() {
                Some(Tok::Ident(name)) => {
                    self.pos += 1;
                    segments.last_mut().unwrap().push(name);
                }
                _ => return self.error("expected a grouping column name"),
            }
            match self.peek() {
                Some(Tok::Colon) => {
                    self.pos += 1;
                }
                Some(Tok::Slash) => {
                    self.pos += 1;
                    segments.push(Vec::new());
                }
                _ => break,
            }
        }
        Ok((0..segments.len()).map(|i| segments[..=i].iter().rev().flatten().cloned().collect()).collect())
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

fn same_term(a: &Term, b: &Term) -> bool {
    a.len() == b.len() && a.iter().all(|v| b.contains(v))
}

fn expand_removals(terms: Vec<Term>, removed: &[Term]) -> Vec<Term> {
    terms.into_iter().filter(|t| !removed.iter().any(|r| same_term(t, r))).collect()
}

pub fn parse(src: &str) -> Result<Formula> {
    let toks = tokenize(src)?;
    let mut p = Parser { src, toks, pos: 0 };
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
            p.pos = if p.toks.len() > 1 { 1 } else { 0 };
            return p.error("expected '~' after a single response column");
        }
    };
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
    Ok(Formula { response, intercept, fixed, random: rhs.bars })
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
        assert_eq!(f.random, vec![RandomBar { intercept: true, terms: vec![t(&["Time"])], group: t(&["Pig"]) }]);
    }

    #[test]
    fn double_bar_splits() {
        let f = parse("Reaction ~ Days + (Days || Subject)").unwrap();
        assert_eq!(f.random.len(), 2);
        assert!(f.random[0].intercept && f.random[0].terms.is_empty());
        assert!(!f.random[1].intercept && f.random[1].terms == vec![t(&["Days"])]);
    }

    #[test]
    fn star_and_colon_and_no_intercept() {
        let f = parse("y ~ 0 + a*b + c:d + (0 + x | g)").unwrap();
        assert!(!f.intercept);
        assert_eq!(f.fixed, vec![t(&["a"]), t(&["b"]), t(&["a", "b"]), t(&["c", "d"])]);
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

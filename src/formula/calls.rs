//! Functions in a formula: `I(Days^2)`, `log(Reaction)`, `factor(x)`,
//! `C(x)` and `offset(e)`, and the arithmetic inside them.
//!
//! Each call becomes a variable named as R names it (`Expr::deparse`), so
//! a term is still a list of variable names and everything downstream (the
//! coding of the design, the names in the tidy table, the model value) sees
//! one more variable. `transform::Derivation` computes its values from the
//! columns, row by row; `Formula::derived` says how.
//!
//! ```text
//!   expr  := term (('+' | '-') term)*
//!   term  := unary (('*' | '/') unary)*
//!   unary := ('-' | '+') unary | power
//!   power := atom ('^' unary)?            -- right-associative; 2^-1 is 2^(-1)
//!   atom  := number | column | function '(' expr ')' | 'I' '(' expr ')' | '(' expr ')'
//! ```

use super::tokens::Tok;
use super::{Derived, Parser};
use crate::error::Result;
use crate::transform::expr::{r_number, Expr, Function, Op, FUNCTION_NAMES};
use crate::transform::poly::{PolySpec, MAX_DEGREE};
use crate::transform::scale::{ScaleArg, Scaling};

/// Most parts the formula's expressions may have together (bounds the
/// parser's and the evaluation's recursion, and the work per row).
pub const MAX_EXPRESSION_NODES: usize = 256;

/// Functions R users write that lmm does not evaluate (yet), with what to do instead.
const NOT_YET: &[(&str, &str)] = &[
    ("ns", "compute the spline basis in SQL"),
    ("bs", "compute the spline basis in SQL"),
];

fn known_functions() -> String {
    let mut names: Vec<&str> = vec!["I"];
    names.extend(FUNCTION_NAMES.iter().map(|(n, _)| *n));
    names.extend(["factor", "C", "offset", "scale", "poly"]);
    names
        .iter()
        .map(|n| format!("{n}()"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Parser<'_> {
    /// Is the next token a name followed by '('?
    pub(super) fn at_call(&self) -> Option<String> {
        match (
            self.toks.get(self.pos).map(|t| &t.0),
            self.toks.get(self.pos + 1).map(|t| &t.0),
        ) {
            (Some(Tok::Ident(name)), Some(Tok::LParen)) => Some(name.clone()),
            _ => None,
        }
    }

    /// A call used as a variable of a term: its name, registered in `derived`.
    pub(super) fn call_variable(&mut self) -> Result<String> {
        let name = self.at_call().expect("at a call");
        match name.as_str() {
            "factor" | "C" => {
                self.pos += 2;
                let column = match self.peek().cloned() {
                    Some(Tok::Ident(c)) => c,
                    _ => return self.error(&format!("{name}() takes one column name")),
                };
                self.pos += 1;
                if self.peek() == Some(&Tok::Comma) {
                    return self.error(&format!("{name}() takes one column name; choose contrasts with the contrasts option"));
                }
                self.expect(Tok::RParen, &format!("')' closing {name}("))?;
                let var = format!("{name}({})", Expr::Column(column.clone()).deparse());
                self.register(&var, Derived::Factor(column));
                Ok(var)
            }
            "offset" => self.error("offset() is a term of its own on the fixed side, as in 'y ~ x + offset(log_n) + (1 | g)'"),
            "scale" => self.scale_call(),
            "poly" => self.poly_call(),
            _ => {
                let e = self.atom()?;
                if let Expr::Column(c) = &e {
                    return Ok(c.clone());
                }
                let var = e.deparse();
                self.register(&var, Derived::Numeric(e));
                Ok(var)
            }
        }
    }

    /// `scale(e [, center] [, scale])`, arguments by position or name, each
    /// TRUE/T, FALSE/F or a number; named as R deparses the call.
    fn scale_call(&mut self) -> Result<String> {
        self.pos += 2;
        let e = self.expr()?;
        let mut how = Scaling {
            center: ScaleArg::Data,
            scale: ScaleArg::Data,
        };
        let mut written = vec![e.deparse()];
        let mut given = [false; 2];
        let mut position = 0;
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            let named = match (
                self.peek().cloned(),
                self.toks.get(self.pos + 1).map(|t| &t.0),
            ) {
                (Some(Tok::Ident(n)), Some(Tok::Equals)) => {
                    self.pos += 2;
                    Some(n)
                }
                _ => None,
            };
            let slot =
                match named.as_deref() {
                    Some("center") => 0,
                    Some("scale") => 1,
                    Some(other) => {
                        return self.error(&format!(
                            "scale() has no argument '{other}'; it takes center and scale"
                        ))
                    }
                    None if position < 2 => position,
                    None => return self.error(
                        "scale() takes at most two arguments after the column: center and scale",
                    ),
                };
            position += 1;
            if given[slot] {
                return self.error(&format!(
                    "scale(): the argument '{}' is given twice",
                    ["center", "scale"][slot]
                ));
            }
            given[slot] = true;
            let (arg, text) = self.scale_arg()?;
            if slot == 0 {
                how.center = arg
            } else {
                how.scale = arg
            }
            written.push(match named {
                Some(n) => format!("{n} = {text}"),
                None => text,
            });
        }
        self.expect(Tok::RParen, "')' closing scale(")?;
        let var = format!("scale({})", written.join(", "));
        self.register(&var, super::Derived::Scaled(e, how));
        Ok(var)
    }

    /// `poly(e [, degree] [, raw = TRUE|FALSE])`: degree by position or name
    /// (R takes a second positional argument as the degree only when it is
    /// one number), raw by name; named as R deparses the call.
    fn poly_call(&mut self) -> Result<String> {
        self.pos += 2;
        let e = self.expr()?;
        let mut spec = PolySpec {
            degree: 1,
            raw: false,
        };
        let mut written = vec![e.deparse()];
        let mut given = [false; 2];
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            let named = match (
                self.peek().cloned(),
                self.toks.get(self.pos + 1).map(|t| &t.0),
            ) {
                (Some(Tok::Ident(n)), Some(Tok::Equals)) => {
                    self.pos += 2;
                    Some(n)
                }
                _ => None,
            };
            let slot = match named.as_deref() {
                Some("degree") => 0,
                Some("raw") => 1,
                Some(other) => {
                    return self.error(&format!(
                        "poly() has no argument '{other}' here; it takes the degree and raw = TRUE"
                    ))
                }
                None if !given[0] && !given[1] => 0,
                None => {
                    return self.error(
                        "poly() of one column takes the degree, then raw = TRUE by name (poly(x, 2, raw = TRUE)); poly() of several columns is not supported",
                    )
                }
            };
            if given[slot] {
                return self.error(&format!(
                    "poly(): the argument '{}' is given twice",
                    ["degree", "raw"][slot]
                ));
            }
            given[slot] = true;
            let text = if slot == 0 {
                let k = match self.peek().cloned() {
                    Some(Tok::Num(t)) => t.parse::<f64>().ok(),
                    _ => None,
                };
                match k {
                    Some(k) if k.fract() == 0.0 && k >= 1.0 && k <= MAX_DEGREE as f64 => {
                        spec.degree = k as u32;
                    }
                    Some(k) if k.fract() == 0.0 && k > MAX_DEGREE as f64 => {
                        return self.error(&format!(
                            "poly(): degree {} is more than lmm fits ({MAX_DEGREE}: the basis comes from power sums up to twice the degree, which lose digits beyond it)", r_number(k)
                        ))
                    }
                    _ => return self.error("poly()'s degree is a whole number ≥ 1, as in poly(x, 2)"),
                }
                self.pos += 1;
                r_number(spec.degree as f64)
            } else {
                let t = match self.peek().cloned() {
                    Some(Tok::Ident(t)) if matches!(t.as_str(), "TRUE" | "T" | "FALSE" | "F") => t,
                    _ => return self.error("poly()'s raw is TRUE or FALSE"),
                };
                self.pos += 1;
                spec.raw = matches!(t.as_str(), "TRUE" | "T");
                t
            };
            written.push(match named {
                Some(n) => format!("{n} = {text}"),
                None => text,
            });
        }
        self.expect(Tok::RParen, "')' closing poly(")?;
        let var = format!("poly({})", written.join(", "));
        self.register(&var, super::Derived::Poly(e, spec));
        Ok(var)
    }

    /// TRUE, T, FALSE, F or a (signed) number, and how R deparses it.
    fn scale_arg(&mut self) -> Result<(ScaleArg, String)> {
        let negative = self.peek() == Some(&Tok::Minus);
        if negative {
            self.pos += 1;
        }
        let arg = match self.peek().cloned() {
            Some(Tok::Ident(t)) if !negative && matches!(t.as_str(), "TRUE" | "T") => {
                (ScaleArg::Data, t)
            }
            Some(Tok::Ident(f)) if !negative && matches!(f.as_str(), "FALSE" | "F") => {
                (ScaleArg::Off, f)
            }
            Some(Tok::Num(text)) => match text.parse::<f64>() {
                Ok(x) => {
                    let x = if negative { -x } else { x };
                    (ScaleArg::Value(x), r_number(x))
                }
                Err(_) => return self.error(&format!("'{text}' is not a number")),
            },
            _ => return self.error("scale()'s center and scale are TRUE, FALSE or a number"),
        };
        self.pos += 1;
        Ok(arg)
    }

    /// `offset(e)`: its expression.
    pub(super) fn offset_call(&mut self) -> Result<Expr> {
        self.pos += 2;
        let e = self.expr()?;
        self.expect(Tok::RParen, "')' closing offset(")?;
        Ok(e)
    }

    fn register(&mut self, name: &str, how: Derived) {
        if !self.derived.iter().any(|(n, _)| n == name) {
            self.derived.push((name.to_string(), how));
        }
    }

    fn node(&mut self) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_EXPRESSION_NODES {
            return self.error(&format!(
                "the formula's expressions have more than {MAX_EXPRESSION_NODES} parts"
            ));
        }
        Ok(())
    }

    pub(super) fn expr(&mut self) -> Result<Expr> {
        let mut e = self.term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Plus) => Op::Add,
                Some(Tok::Minus) => Op::Sub,
                _ => return Ok(e),
            };
            self.pos += 1;
            self.node()?;
            e = Expr::Binary(op, Box::new(e), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr> {
        let mut e = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Star) => Op::Mul,
                Some(Tok::Slash) => Op::Div,
                _ => return Ok(e),
            };
            self.pos += 1;
            self.node()?;
            e = Expr::Binary(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                self.node()?;
                Ok(Expr::Negate(Box::new(self.unary()?)))
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.unary()
            }
            _ => {
                let base = self.atom()?;
                if self.peek() != Some(&Tok::Caret) {
                    return Ok(base);
                }
                self.pos += 1;
                self.node()?;
                Ok(Expr::Binary(
                    Op::Pow,
                    Box::new(base),
                    Box::new(self.unary()?),
                ))
            }
        }
    }

    fn atom(&mut self) -> Result<Expr> {
        self.node()?;
        match self.peek().cloned() {
            Some(Tok::Num(text)) => {
                self.pos += 1;
                match text.parse::<f64>() {
                    Ok(x) => Ok(Expr::Number(x)),
                    Err(_) => {
                        self.pos -= 1;
                        self.error(&format!("'{text}' is not a number"))
                    }
                }
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(Expr::Paren(Box::new(e)))
            }
            Some(Tok::Ident(name)) if self.at_call().is_some() => {
                let wrap: Box<dyn Fn(Expr) -> Expr> = if name == "I" {
                    Box::new(|e| Expr::Identity(Box::new(e)))
                } else if let Some(f) = Function::by_name(&name) {
                    Box::new(move |e| Expr::Call(f, Box::new(e)))
                } else {
                    return self.unknown_function(&name);
                };
                self.pos += 2;
                let e = self.expr()?;
                if self.peek() == Some(&Tok::Comma) {
                    return self.error(&format!("{name}() takes one argument here"));
                }
                self.expect(Tok::RParen, &format!("')' closing {name}("))?;
                Ok(wrap(e))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                Ok(Expr::Column(name))
            }
            _ => self.error("expected a number, a column or a function"),
        }
    }

    fn unknown_function<T>(&self, name: &str) -> Result<T> {
        let what = match name {
            "factor" | "C" => format!("{name}() makes a factor of a column; it cannot be part of arithmetic"),
            "offset" => "offset() is a term of its own on the fixed side".to_string(),
            "poly" => "poly() is a variable of a term, as in 'y ~ poly(x, 2) + (1 | g)'; it cannot be part of arithmetic or the response".to_string(),
            "scale" => "scale() is a variable of a term, as in 'y ~ scale(x) + (scale(x) | g)'; it cannot be part of arithmetic or the response \
                        (scale the column in SQL for that)".to_string(),
            _ => match NOT_YET.iter().find(|(n, _)| *n == name) {
                Some((_, instead)) => format!("the function '{name}()' is not supported yet ({instead}); lmm knows {}", known_functions()),
                None => format!("unknown function '{name}()'; lmm knows {}", known_functions()),
            },
        };
        self.error(&what)
    }
}

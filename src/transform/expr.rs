//! An arithmetic expression over a row's columns, as R evaluates the
//! argument of `I()`, `log()` or `offset()` in a formula, and the name R
//! gives it (`deparse`): `I(Days^2)`, `log(Reaction)`, `I(x * 2 + 1)`.
//!
//! R's precedence, highest first: `^` (right-associative), unary `-`/`+`,
//! `*` and `/`, binary `+` and `-` (both left-associative). So `-x^2` is
//! `-(x^2)` and `2^-1` is `2^(-1)`. Parentheses are kept as written, because
//! R's names keep them: `I((x + 1)^2)`.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// The functions of one number that may appear in a formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Function {
    Log,
    Log2,
    Log10,
    Log1p,
    Exp,
    Sqrt,
    Abs,
}

pub const FUNCTION_NAMES: &[(&str, Function)] = &[
    ("log", Function::Log),
    ("log2", Function::Log2),
    ("log10", Function::Log10),
    ("log1p", Function::Log1p),
    ("exp", Function::Exp),
    ("sqrt", Function::Sqrt),
    ("abs", Function::Abs),
];

impl Op {
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
            Op::Pow => pow(a, b),
        }
    }
}

impl Function {
    pub fn by_name(name: &str) -> Option<Function> {
        FUNCTION_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, f)| f)
    }
    pub fn name(self) -> &'static str {
        FUNCTION_NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map(|&(n, _)| n)
            .unwrap()
    }
    /// As R: a value outside the domain gives NaN (the row is then dropped,
    /// as R's `na.omit` drops it).
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Function::Log => x.ln(),
            Function::Log2 => x.log2(),
            Function::Log10 => x.log10(),
            Function::Log1p => x.ln_1p(),
            Function::Exp => x.exp(),
            Function::Sqrt => x.sqrt(),
            Function::Abs => x.abs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Number(f64),
    Negate(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    Call(Function, Box<Expr>),
    /// `I(e)`: R's identity, kept for the name.
    Identity(Box<Expr>),
    /// `(e)` as written.
    Paren(Box<Expr>),
}

impl Expr {
    /// The columns the expression reads, each once, in order of appearance.
    pub fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Column(c) => {
                if !out.contains(c) {
                    out.push(c.clone())
                }
            }
            Expr::Number(_) => {}
            Expr::Negate(e) | Expr::Call(_, e) | Expr::Identity(e) | Expr::Paren(e) => {
                e.columns(out)
            }
            Expr::Binary(_, a, b) => {
                a.columns(out);
                b.columns(out);
            }
        }
    }

    /// The value at one row, `value(column)` giving each column's.
    pub fn eval(&self, value: &impl Fn(&str) -> f64) -> f64 {
        match self {
            Expr::Column(c) => value(c),
            Expr::Number(x) => *x,
            Expr::Negate(e) => -e.eval(value),
            Expr::Identity(e) | Expr::Paren(e) => e.eval(value),
            Expr::Call(f, e) => f.apply(e.eval(value)),
            Expr::Binary(op, a, b) => op.apply(a.eval(value), b.eval(value)),
        }
    }

    /// The expression's values over `n` rows, `columns[k]` holding the values
    /// of `names[k]` (NaN where missing).
    pub fn eval_rows(&self, names: &[String], columns: &[&[f64]], n: usize) -> Vec<f64> {
        match self {
            Expr::Column(c) => {
                let k = names
                    .iter()
                    .position(|x| x == c)
                    .expect("column read for the expression");
                columns[k][..n].to_vec()
            }
            Expr::Number(x) => vec![*x; n],
            Expr::Negate(e) => map(e.eval_rows(names, columns, n), |x| -x),
            Expr::Identity(e) | Expr::Paren(e) => e.eval_rows(names, columns, n),
            Expr::Call(f, e) => map(e.eval_rows(names, columns, n), |x| f.apply(x)),
            Expr::Binary(op, a, b) => {
                let mut a = a.eval_rows(names, columns, n);
                let b = b.eval_rows(names, columns, n);
                for (x, &y) in a.iter_mut().zip(&b) {
                    *x = op.apply(*x, y);
                }
                a
            }
        }
    }

    /// R's `deparse`: binary `+ - *` between spaces, `/`, `^` and unary
    /// minus without, numbers as R prints them (`2`, `0.5`, `1e+06`).
    pub fn deparse(&self) -> String {
        match self {
            Expr::Column(c) => quote_name(c),
            Expr::Number(x) => r_number(*x),
            Expr::Negate(e) => format!("-{}", e.deparse()),
            Expr::Identity(e) => format!("I({})", e.deparse()),
            Expr::Paren(e) => format!("({})", e.deparse()),
            Expr::Call(f, e) => format!("{}({})", f.name(), e.deparse()),
            Expr::Binary(op, a, b) => {
                let sym = match op {
                    Op::Add => " + ",
                    Op::Sub => " - ",
                    Op::Mul => " * ",
                    Op::Div => "/",
                    Op::Pow => "^",
                };
                format!("{}{sym}{}", a.deparse(), b.deparse())
            }
        }
    }
}

fn map(mut v: Vec<f64>, f: impl Fn(f64) -> f64) -> Vec<f64> {
    v.iter_mut().for_each(|x| *x = f(*x));
    v
}

/// R's `^`: an integer power is exact repeated multiplication (as R's
/// `R_pow` for integer exponents), so `I(x^2)` is `x * x` to the last bit.
fn pow(a: f64, b: f64) -> f64 {
    if b == 2.0 {
        a * a
    } else if b.fract() == 0.0 && b.abs() <= 64.0 {
        a.powi(b as i32)
    } else {
        a.powf(b)
    }
}

/// A column name as R deparses it: backquoted unless it is a syntactic name.
fn quote_name(c: &str) -> String {
    let syntactic = c
        .chars()
        .next()
        .is_some_and(|ch| ch.is_alphabetic() || ch == '.')
        && c.chars()
            .all(|ch| ch.is_alphanumeric() || ch == '.' || ch == '_')
        && !(c.starts_with('.') && c.chars().nth(1).is_some_and(|ch| ch.is_ascii_digit()));
    if syntactic {
        c.to_string()
    } else {
        format!("`{c}`")
    }
}

/// A number as R prints it with 15 significant digits: fixed notation unless
/// scientific is shorter (R's `scipen = 0` rule), exponents with a sign and
/// two digits (`1e+05`, `2.5e-07`).
pub fn r_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Shortest digits that round-trip at 15 significant digits.
    let sci = format!("{:.14e}", x);
    let (mant, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let mant = mant.trim_end_matches('0').trim_end_matches('.');
    let sci_text = format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    let digits = mant.chars().filter(|c| c.is_ascii_digit()).count() as i32;
    let decimals = (digits - 1 - exp).max(0) as usize;
    let fixed_text = format!("{:.*}", decimals, x);
    if fixed_text.len() <= sci_text.len() {
        fixed_text
    } else {
        sci_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_r_prints_them() {
        for (x, want) in [
            (2.0, "2"),
            (0.5, "0.5"),
            (100000.0, "1e+05"),
            (123456.0, "123456"),
            (0.0001, "1e-04"),
            (0.001, "0.001"),
            (1e6, "1e+06"),
            (2.5e-7, "2.5e-07"),
            (-3.25, "-3.25"),
            (1.0 / 3.0, "0.333333333333333"),
        ] {
            assert_eq!(r_number(x), want, "{x}");
        }
    }

    #[test]
    fn names_and_values() {
        let days = || Box::new(Expr::Column("Days".into()));
        let sq = Expr::Identity(Box::new(Expr::Binary(
            Op::Pow,
            days(),
            Box::new(Expr::Number(2.0)),
        )));
        assert_eq!(sq.deparse(), "I(Days^2)");
        assert_eq!(sq.eval(&|_| 3.0), 9.0);
        let e = Expr::Call(
            Function::Log,
            Box::new(Expr::Binary(Op::Add, days(), Box::new(Expr::Number(1.0)))),
        );
        assert_eq!(e.deparse(), "log(Days + 1)");
        assert!((e.eval(&|_| std::f64::consts::E - 1.0) - 1.0).abs() < 1e-15);
        assert!(Expr::Call(Function::Log, days()).eval(&|_| -1.0).is_nan());
        assert_eq!(Expr::Column("my col".into()).deparse(), "`my col`");
        let rows = e.eval_rows(&["Days".into()], &[&[0.0, 1.0]], 2);
        assert_eq!(rows, vec![0.0, 2f64.ln()]);
    }
}

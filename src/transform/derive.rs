//! From the columns a chunk brings to the variables a model uses.
//!
//! A variable is a column (`Days`), a function of columns (`I(Days^2)`,
//! `log(Reaction)`), or a column read as a factor (`factor(cyl)`). With
//! offsets, the response the fit sees is `y − Σ offset(eᵢ)`: the fit of
//! y − o on X and Z is the fit of y with a known offset o (the likelihood of
//! y given o is that of y − o), and a prediction adds o back.
//!
//! When every variable is a column read as it is (no function in the
//! formula), the derivation is the identity and costs nothing: callers
//! check `is_identity` and pass the chunk through.

use std::borrow::Cow;

use crate::bail;
use crate::error::Result;
use crate::formula::{Derived, Formula};
use crate::input::{Chunk, Column, ColumnData};
use crate::transform::expr::{Expr, Op};

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Column `columns[i]` as it is.
    Column(usize),
    /// A number per row from the columns.
    Numeric(Expr),
    /// Column `columns[i]`, its values the levels of a factor.
    Factor(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Derivation {
    /// The columns read, each once.
    pub columns: Vec<String>,
    /// Per variable (in the caller's order): its name and how it is made.
    pub vars: Vec<(String, Source)>,
    /// The offsets, for a prediction (the fit folds them into the response).
    pub offsets: Vec<Expr>,
}

fn column_index(columns: &mut Vec<String>, name: &str) -> usize {
    match columns.iter().position(|c| c == name) {
        Some(i) => i,
        None => {
            columns.push(name.to_string());
            columns.len() - 1
        }
    }
}

impl Derivation {
    /// The derivation of variables `names` under `formula`. With
    /// `fold_offsets`, the response becomes `response − Σ offsets` (the fit);
    /// without, the offsets are kept apart (a prediction).
    pub fn new(names: &[String], formula: &Formula, fold_offsets: bool) -> Derivation {
        let mut columns = Vec::new();
        let mut vars = Vec::with_capacity(names.len());
        for name in names {
            let mut source = match formula.derived(name) {
                // a scaled variable's row values are its expression's; the design applies (x − c)/s
                Some(Derived::Numeric(e) | Derived::Scaled(e, _) | Derived::Poly(e, _)) => Source::Numeric(e.clone()),
                Some(Derived::Factor(c)) => Source::Factor(column_index(&mut columns, c)),
                None => Source::Column(column_index(&mut columns, name)),
            };
            if fold_offsets && *name == formula.response && !formula.offsets.is_empty() {
                let response = match source {
                    Source::Numeric(e) => e,
                    _ => Expr::Column(name.clone()),
                };
                let total = formula
                    .offsets
                    .iter()
                    .cloned()
                    .reduce(|a, b| Expr::Binary(Op::Add, Box::new(a), Box::new(b)))
                    .unwrap();
                source =
                    Source::Numeric(Expr::Binary(Op::Sub, Box::new(response), Box::new(total)));
            }
            if let Source::Numeric(e) = &source {
                let mut used = Vec::new();
                e.columns(&mut used);
                for c in used {
                    column_index(&mut columns, &c);
                }
            }
            vars.push((name.clone(), source));
        }
        let offsets = if fold_offsets {
            Vec::new()
        } else {
            formula.offsets.clone()
        };
        for o in &offsets {
            let mut used = Vec::new();
            o.columns(&mut used);
            for c in used {
                column_index(&mut columns, &c);
            }
        }
        Derivation {
            columns,
            vars,
            offsets,
        }
    }

    /// Every variable is the column of the same position, read as it is.
    pub fn is_identity(&self) -> bool {
        self.offsets.is_empty()
            && self.columns.len() == self.vars.len()
            && self
                .vars
                .iter()
                .enumerate()
                .all(|(i, (_, s))| *s == Source::Column(i))
    }

    /// The columns (indices into `columns`) variable `v` is made from.
    pub fn columns_of(&self, v: usize) -> Vec<usize> {
        match &self.vars[v].1 {
            Source::Column(i) | Source::Factor(i) => vec![*i],
            Source::Numeric(e) => self.expr_columns(e),
        }
    }

    /// The columns (indices into `columns`) the offsets read.
    pub fn offset_columns(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for o in &self.offsets {
            for i in self.expr_columns(o) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out
    }

    fn expr_columns(&self, e: &Expr) -> Vec<usize> {
        let mut used = Vec::new();
        e.columns(&mut used);
        used.iter()
            .map(|c| {
                self.columns
                    .iter()
                    .position(|x| x == c)
                    .expect("column registered")
            })
            .collect()
    }

    /// Variable `v` over a chunk whose columns are `columns` (`None` where the
    /// caller did not read a column): borrowed when it is a column as it is.
    pub fn variable<'c, 'a>(
        &self,
        v: usize,
        columns: &'c [Option<&'c Column<'a>>],
        n: usize,
    ) -> Result<Cow<'c, Column<'a>>> {
        let (name, source) = &self.vars[v];
        match source {
            Source::Column(i) | Source::Factor(i) => {
                Ok(Cow::Borrowed(columns[*i].expect("column read")))
            }
            Source::Numeric(e) => Ok(Cow::Owned(self.numeric(name, e, columns, n)?)),
        }
    }

    /// The offsets' sum per row (NaN where one is missing), if any.
    pub fn offset<'a>(
        &self,
        columns: &[Option<&Column<'a>>],
        n: usize,
    ) -> Result<Option<Vec<f64>>> {
        if self.offsets.is_empty() {
            return Ok(None);
        }
        let mut total = vec![0.0; n];
        for o in &self.offsets {
            let c = self.numeric(&format!("offset({})", o.deparse()), o, columns, n)?;
            let ColumnData::Float(x) = c.data else {
                unreachable!()
            };
            for r in 0..n {
                total[r] += if c.valid[r] { x[r] } else { f64::NAN };
            }
        }
        Ok(Some(total))
    }

    /// The variables of a chunk whose columns are `self.columns`, in order.
    pub fn apply<'a>(&self, chunk: &Chunk<'a>) -> Result<Chunk<'a>> {
        let cols: Vec<Option<&Column<'a>>> = chunk.columns.iter().map(Some).collect();
        let mut out = Vec::with_capacity(self.vars.len());
        for v in 0..self.vars.len() {
            out.push(self.variable(v, &cols, chunk.len)?.into_owned());
        }
        Ok(Chunk {
            columns: out,
            len: chunk.len,
        })
    }

    /// An expression's values: NULL where a column it reads is NULL, NaN
    /// where R gives NaN (`log(-1)`; the fit drops such rows as R's na.omit).
    fn numeric<'a>(
        &self,
        name: &str,
        e: &Expr,
        columns: &[Option<&Column<'a>>],
        n: usize,
    ) -> Result<Column<'a>> {
        let mut used = Vec::new();
        e.columns(&mut used);
        let mut values: Vec<Cow<[f64]>> = Vec::with_capacity(used.len());
        let mut valid = vec![true; n];
        for c in &used {
            let i = self
                .columns
                .iter()
                .position(|x| x == c)
                .expect("column registered");
            let col = columns[i].expect("column read");
            values.push(match &col.data {
                ColumnData::Float(x) => Cow::Borrowed(&x[..]),
                ColumnData::Int(x) => Cow::Owned(x.iter().map(|&v| v as f64).collect()),
                _ => bail!(
                    "'{name}' computes with column '{c}', which has type {}; a function in the formula needs a number \
                     (factor({c}) makes a factor of it)",
                    col.type_name
                ),
            });
            for (ok, &cv) in valid.iter_mut().zip(&col.valid) {
                *ok &= cv;
            }
        }
        let slices: Vec<&[f64]> = values.iter().map(|v| &v[..]).collect();
        let data = e.eval_rows(&used, &slices, n);
        Ok(Column {
            name: name.to_string(),
            type_name: "DOUBLE".into(),
            data: ColumnData::Float(data),
            valid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formula::parse;

    fn floats(name: &str, v: &[f64]) -> Column<'static> {
        Column {
            name: name.into(),
            type_name: "DOUBLE".into(),
            data: ColumnData::Float(v.to_vec()),
            valid: vec![true; v.len()],
        }
    }

    #[test]
    fn functions_of_columns_and_offsets() {
        let f = parse("log(y) ~ I(x^2) + factor(k) + x + offset(o) + (1 | g)").unwrap();
        let names: Vec<String> = ["log(y)", "I(x^2)", "factor(k)", "x", "g"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let d = Derivation::new(&names, &f, true);
        assert_eq!(d.columns, vec!["y", "o", "x", "k", "g"]);
        assert!(!d.is_identity());
        let mut o = floats("o", &[0.5, 1.0]);
        o.valid[1] = false;
        let chunk = Chunk {
            columns: vec![
                floats("y", &[1.0, 2.0]),
                o,
                floats("x", &[3.0, -2.0]),
                floats("k", &[1.0, 2.0]),
                floats("g", &[1.0, 1.0]),
            ],
            len: 2,
        };
        let v = d.apply(&chunk).unwrap();
        let ColumnData::Float(resp) = &v.columns[0].data else {
            panic!()
        };
        assert_eq!(resp[0], 1f64.ln() - 0.5);
        assert!(
            !v.columns[0].valid[1],
            "a NULL offset makes the response NULL"
        );
        let ColumnData::Float(sq) = &v.columns[1].data else {
            panic!()
        };
        assert_eq!(sq, &vec![9.0, 4.0]);
        // a prediction keeps the offsets apart
        let p = Derivation::new(&names, &f, false);
        let cols: Vec<Option<&Column>> = p
            .columns
            .iter()
            .map(|c| chunk.columns.iter().find(|k| k.name == *c))
            .collect();
        let total = p.offset(&cols, 2).unwrap().unwrap();
        assert_eq!(total[0], 0.5);
        assert!(total[1].is_nan());
        let plain = parse("y ~ x + (1 | g)").unwrap();
        assert!(Derivation::new(&["y".into(), "x".into(), "g".into()], &plain, true).is_identity());
    }

    #[test]
    fn text_in_arithmetic_is_an_error_naming_the_column() {
        let f = parse("y ~ log(s) + (1 | g)").unwrap();
        let d = Derivation::new(&["y".into(), "log(s)".into(), "g".into()], &f, true);
        let s = Column {
            name: "s".into(),
            type_name: "VARCHAR".into(),
            data: ColumnData::Text(vec![b"a"]),
            valid: vec![true],
        };
        let chunk = Chunk {
            columns: vec![floats("y", &[1.0]), s, floats("g", &[1.0])],
            len: 1,
        };
        let e = d.apply(&chunk).err().unwrap();
        assert!(
            e.0.contains("'log(s)' computes with column 's', which has type VARCHAR"),
            "{}",
            e.0
        );
    }
}

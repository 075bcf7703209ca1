//! The tidy result table (broom.mixed conventions).

/// Shared text: a table with a million BLUP rows repeats a few names.
pub type Text = std::sync::Arc<str>;

/// One output row. Column order and names are those of the SQL result:
/// `effect, group_var, level, term, estimate, std_error, statistic, df, p_value, conf_low, conf_high`.
#[derive(Debug, Clone, PartialEq)]
pub struct TidyRow {
    /// "fixed", "ran_pars", "ran_vals" or "fit".
    pub effect: &'static str,
    pub group_var: Option<Text>,
    pub level: Option<Text>,
    pub term: Option<Text>,
    pub estimate: Option<f64>,
    pub std_error: Option<f64>,
    pub statistic: Option<f64>,
    pub df: Option<f64>,
    pub p_value: Option<f64>,
    pub conf_low: Option<f64>,
    pub conf_high: Option<f64>,
}

impl TidyRow {
    pub fn new(effect: &'static str) -> Self {
        TidyRow {
            effect,
            group_var: None,
            level: None,
            term: None,
            estimate: None,
            std_error: None,
            statistic: None,
            df: None,
            p_value: None,
            conf_low: None,
            conf_high: None,
        }
    }
}

/// A borrowed view of one output row, as the database layer writes it.
pub struct RowRef<'a> {
    pub effect: &'a str,
    pub group_var: Option<&'a str>,
    pub level: Option<&'a str>,
    pub term: Option<&'a str>,
    /// estimate, std_error, statistic, df, p_value, conf_low, conf_high
    pub values: [Option<f64>; 7],
}

impl TidyRow {
    pub fn as_ref(&self) -> RowRef<'_> {
        RowRef {
            effect: self.effect,
            group_var: self.group_var.as_deref(),
            level: self.level.as_deref(),
            term: self.term.as_deref(),
            values: [
                self.estimate,
                self.std_error,
                self.statistic,
                self.df,
                self.p_value,
                self.conf_low,
                self.conf_high,
            ],
        }
    }
}

/// The BLUPs of one grouping factor, column-wise: entry `t * levels.len() + l`
/// is term t at level l. A fit with a million groups keeps its `ran_vals` rows
/// this way instead of as a million `TidyRow`s.
pub struct RanVals {
    pub group_var: Text,
    pub terms: Vec<Text>,
    pub levels: Vec<Text>,
    pub estimate: Vec<f64>,
    pub std_error: Vec<f64>,
}

/// A fit's whole table: `head` (fixed, ran_pars), the BLUPs, `tail` (fit).
pub struct Tidy {
    pub head: Vec<TidyRow>,
    pub ran_vals: Vec<RanVals>,
    pub tail: Vec<TidyRow>,
}

impl Tidy {
    pub fn len(&self) -> usize {
        self.head.len()
            + self.tail.len()
            + self
                .ran_vals
                .iter()
                .map(|r| r.estimate.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row in table order.
    pub fn rows(&self) -> impl Iterator<Item = RowRef<'_>> {
        let ran = self.ran_vals.iter().flat_map(|rv| {
            let nl = rv.levels.len();
            (0..rv.estimate.len()).map(move |i| RowRef {
                effect: "ran_vals",
                group_var: Some(&rv.group_var),
                level: Some(&rv.levels[i % nl]),
                term: Some(&rv.terms[i / nl]),
                values: [
                    Some(rv.estimate[i]),
                    Some(rv.std_error[i]),
                    None,
                    None,
                    None,
                    None,
                    None,
                ],
            })
        });
        self.head
            .iter()
            .map(TidyRow::as_ref)
            .chain(ran)
            .chain(self.tail.iter().map(TidyRow::as_ref))
    }

    /// Row `i` in table order (`None` past the end).
    pub fn row(&self, mut i: usize) -> Option<RowRef<'_>> {
        if i < self.head.len() {
            return Some(self.head[i].as_ref());
        }
        i -= self.head.len();
        for rv in &self.ran_vals {
            if i < rv.estimate.len() {
                let nl = rv.levels.len();
                return Some(RowRef {
                    effect: "ran_vals",
                    group_var: Some(&rv.group_var),
                    level: Some(&rv.levels[i % nl]),
                    term: Some(&rv.terms[i / nl]),
                    values: [
                        Some(rv.estimate[i]),
                        Some(rv.std_error[i]),
                        None,
                        None,
                        None,
                        None,
                        None,
                    ],
                });
            }
            i -= rv.estimate.len();
        }
        self.tail.get(i).map(TidyRow::as_ref)
    }

    /// The table as owned rows (tests, small fits).
    pub fn into_rows(self) -> Vec<TidyRow> {
        let mut out = self.head;
        for rv in &self.ran_vals {
            let nl = rv.levels.len();
            for i in 0..rv.estimate.len() {
                let mut r = TidyRow::new("ran_vals");
                r.group_var = Some(rv.group_var.clone());
                r.level = Some(rv.levels[i % nl].clone());
                r.term = Some(rv.terms[i / nl].clone());
                r.estimate = Some(rv.estimate[i]);
                r.std_error = Some(rv.std_error[i]);
                out.push(r);
            }
        }
        out.extend(self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_by_index_is_the_iteration_order() {
        let mut fixed = TidyRow::new("fixed");
        fixed.term = Some("(Intercept)".into());
        let t = Tidy {
            head: vec![fixed],
            ran_vals: vec![RanVals {
                group_var: "g".into(),
                terms: vec!["(Intercept)".into(), "x".into()],
                levels: vec!["a".into(), "b".into()],
                estimate: vec![1.0, 2.0, 3.0, 4.0],
                std_error: vec![0.1, 0.2, 0.3, 0.4],
            }],
            tail: vec![TidyRow::new("fit")],
        };
        let all: Vec<(String, Option<String>, Option<f64>)> = t
            .rows()
            .map(|r| (r.effect.to_string(), r.level.map(String::from), r.values[0]))
            .collect();
        let by_index: Vec<_> = (0..t.len())
            .map(|i| t.row(i).unwrap())
            .map(|r| (r.effect.to_string(), r.level.map(String::from), r.values[0]))
            .collect();
        assert_eq!(all, by_index);
        assert!(t.row(t.len()).is_none());
    }
}

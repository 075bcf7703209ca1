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

//! A small result table: up to 4 text and 12 numeric columns per row, named
//! by the SQL macro that shows it (one generic result type for every
//! inference function).

pub const TEXTS: usize = 4;
pub const NUMS: usize = 12;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub text: [Option<String>; TEXTS],
    pub num: [Option<f64>; NUMS],
}

impl Row {
    pub fn new(text: &[Option<&str>], num: &[Option<f64>]) -> Row {
        let mut r = Row::default();
        for (d, s) in r.text.iter_mut().zip(text) {
            *d = s.map(str::to_string);
        }
        for (d, x) in r.num.iter_mut().zip(num) {
            *d = x.filter(|v| !v.is_nan());
        }
        r
    }
}

pub type Table = Vec<Row>;

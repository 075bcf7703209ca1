//! What the integration tests share: the fixture CSVs read into columns the
//! way the DuckDB layer delivers them (integers as Int, other numbers as
//! Float, text as Text; an empty cell is NULL).

#![allow(dead_code)]

use lmm::input::{Column, ColumnData};

pub struct Table {
    pub names: Vec<String>,
    /// column-major
    pub cells: Vec<Vec<String>>,
}

pub fn read_csv(path: &str) -> Table {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let names: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.to_string())
        .collect();
    let mut cells = vec![Vec::new(); names.len()];
    for line in lines.filter(|l| !l.is_empty()) {
        for (i, f) in line.split(',').enumerate() {
            cells[i].push(f.to_string());
        }
    }
    Table { names, cells }
}

/// Rows `rows` of a column, typed from the whole column.
pub fn column_rows<'a>(t: &'a Table, name: &str, rows: std::ops::Range<usize>) -> Column<'a> {
    let i = t
        .names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let cells = &t.cells[i];
    let valid: Vec<bool> = cells[rows.clone()].iter().map(|c| !c.is_empty()).collect();
    let (data, type_name) = if cells
        .iter()
        .all(|c| c.is_empty() || c.parse::<i64>().is_ok())
    {
        (
            ColumnData::Int(cells[rows].iter().map(|c| c.parse().unwrap_or(0)).collect()),
            "BIGINT",
        )
    } else if cells
        .iter()
        .all(|c| c.is_empty() || c.parse::<f64>().is_ok())
    {
        (
            ColumnData::Float(
                cells[rows]
                    .iter()
                    .map(|c| c.parse().unwrap_or(0.0))
                    .collect(),
            ),
            "DOUBLE",
        )
    } else {
        (
            ColumnData::Text(cells[rows].iter().map(|c| c.as_bytes()).collect()),
            "VARCHAR",
        )
    };
    Column {
        name: name.into(),
        type_name: type_name.into(),
        data,
        valid,
    }
}

/// A whole column.
pub fn column<'a>(t: &'a Table, name: &str) -> Column<'a> {
    column_rows(
        t,
        name,
        0..t.cells[t
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no column {name}"))]
        .len(),
    )
}

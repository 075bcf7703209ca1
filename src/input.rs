//! What the statistics core reads: one chunk of rows, column by column.
//!
//! The database layer converts each column the model needs into one of these
//! typed views; the core never sees a database type.

/// The values of one column over the rows of a chunk.
#[derive(Clone)]
pub enum ColumnData<'a> {
    /// DOUBLE, FLOAT, DECIMAL (converted to f64).
    Float(Vec<f64>),
    /// TINYINT … BIGINT, UTINYINT … UBIGINT (that fits), converted to i64.
    Int(Vec<i64>),
    /// VARCHAR, and ENUM decoded to its label: borrowed bytes of each row.
    Text(Vec<&'a [u8]>),
    /// BOOLEAN.
    Bool(Vec<bool>),
    /// DATE, TIME, TIMESTAMP, UUID, INTERVAL (as their text) and BLOB:
    /// usable only as grouping keys, one level per distinct value.
    Key(Vec<&'a [u8]>),
}

/// One column of a chunk: values and validity (`valid[i] == false` means NULL;
/// the value slot of a NULL row is arbitrary).
#[derive(Clone)]
pub struct Column<'a> {
    pub name: String,
    /// The database's type name, for error messages ("VARCHAR", "DATE", …).
    pub type_name: String,
    pub data: ColumnData<'a>,
    pub valid: Vec<bool>,
}

/// The columns a model needs, in the order of `Accumulator::required_columns()`.
pub struct Chunk<'a> {
    pub columns: Vec<Column<'a>>,
    pub len: usize,
}

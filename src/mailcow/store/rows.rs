//! Fallible conversion of result rows: a column whose type or value does not fit (schema
//! drift, hand-edited data) is a [`StoreError::Data`] naming the column, never a panic.

use mysql::Row;
use mysql::prelude::FromValue;

use super::StoreError;

/// The columns of one row, read in order.
pub(crate) struct Columns {
    row: Row,
    next: usize,
    /// The table named in errors.
    table: &'static str,
}

impl Columns {
    pub(crate) fn new(row: Row, table: &'static str) -> Columns {
        Columns {
            row,
            next: 0,
            table,
        }
    }

    /// Errors from here on name `table` (for rows joining several tables).
    pub(crate) fn rename(&mut self, table: &'static str) {
        self.table = table;
    }

    /// The next column as a `T`.
    pub(crate) fn next<T: FromValue>(&mut self) -> Result<T, StoreError> {
        let index = self.next;
        self.next += 1;
        match self.row.take_opt::<T, usize>(index) {
            Some(Ok(value)) => Ok(value),
            Some(Err(_)) => Err(StoreError::Data(format!(
                "{}.{} holds a value of an unexpected type",
                self.table,
                self.name(index)
            ))),
            None => Err(StoreError::Data(format!(
                "{}: column {} missing from the result",
                self.table,
                index + 1
            ))),
        }
    }

    /// Column `index` as text, whatever it holds (for naming a row that cannot be read).
    pub(crate) fn text_lossy(&self, index: usize) -> String {
        match self.row.as_ref(index) {
            Some(mysql::Value::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }

    fn name(&self, index: usize) -> String {
        self.row.columns_ref().get(index).map_or_else(
            || format!("column {}", index + 1),
            |c| c.name_str().into_owned(),
        )
    }
}

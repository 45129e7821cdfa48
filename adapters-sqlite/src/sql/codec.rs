//! Conversions between Stockroom's values and SQLite's: the parameters a write binds, and
//! [`RowReader`], which reads a row's columns in the order a select list names them.
//!
//! Ids are 16-byte BLOBs and timestamps INTEGER microseconds (see `schema.rs`).

use rusqlite::types::{FromSql, Type, Value};
use rusqlite::Row;
use stockroom_core::adapter::{from_micros, to_micros};
use stockroom_core::time::Timestamp;
use stockroom_core::Entity;
use uuid::Uuid;

/// An id as its 16 bytes.
pub(crate) fn blob(id: impl Into<Uuid>) -> Value {
    Value::Blob(id.into().as_bytes().to_vec())
}

/// An optional id as its 16 bytes, or `NULL`.
pub(crate) fn opt_blob(id: Option<impl Into<Uuid>>) -> Value {
    id.map_or(Value::Null, blob)
}

/// A timestamp as microseconds since the Unix epoch.
pub(crate) fn micros(ts: Timestamp) -> Value {
    Value::Integer(to_micros(ts))
}

/// A string as text.
pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// An optional string as text, or `NULL`.
pub(crate) fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

/// The error of a column whose value does not convert.
pub(crate) fn conversion(index: usize, ty: Type, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, ty, what.to_owned().into())
}

/// The values of the bookkeeping columns every entity table has after its own columns:
/// `created_at, updated_at, deleted_at, version` (see `table_columns!`).
pub(crate) type Meta = (Timestamp, Timestamp, Option<Timestamp>, i64);

/// The values of `row`'s bookkeeping columns, in the order of [`Meta`].
pub(crate) fn meta_values<E: Entity>(row: &E) -> [Value; 4] {
    [
        micros(row.created_at()),
        micros(row.updated_at()),
        row.deleted_at().map_or(Value::Null, micros),
        Value::Integer(row.version()),
    ]
}

/// Reads a row's columns one after another from a starting column, each read taking the next
/// column: a row mapping reads its fields in the order of its column list, and so names no
/// column offset.
pub(crate) struct RowReader<'r, 's> {
    row: &'r Row<'s>,
    next: usize,
}

impl<'r, 's> RowReader<'r, 's> {
    /// A reader of `row` from column `at` on.
    pub(crate) fn new(row: &'r Row<'s>, at: usize) -> Self {
        Self { row, next: at }
    }

    /// The index of the column the next read takes.
    pub(crate) fn position(&self) -> usize {
        self.next
    }

    fn take(&mut self) -> usize {
        let index = self.next;
        self.next += 1;
        index
    }

    /// The next column, as any type rusqlite converts.
    pub(crate) fn get<T: FromSql>(&mut self) -> rusqlite::Result<T> {
        let index = self.take();
        self.row.get(index)
    }

    /// Whether the next column is `NULL`, without taking it.
    pub(crate) fn next_is_null(&self) -> rusqlite::Result<bool> {
        Ok(self.row.get_ref(self.next)? == rusqlite::types::ValueRef::Null)
    }

    /// The next column, an id.
    pub(crate) fn uuid(&mut self) -> rusqlite::Result<Uuid> {
        Ok(Uuid::from_bytes(self.get::<[u8; 16]>()?))
    }

    /// The next column, an optional id.
    pub(crate) fn opt_uuid(&mut self) -> rusqlite::Result<Option<Uuid>> {
        Ok(self.get::<Option<[u8; 16]>>()?.map(Uuid::from_bytes))
    }

    /// The next column, a timestamp.
    pub(crate) fn timestamp(&mut self) -> rusqlite::Result<Timestamp> {
        let index = self.take();
        let us: i64 = self.row.get(index)?;
        from_micros(us).ok_or_else(|| out_of_range(index))
    }

    /// The next column, an optional timestamp.
    pub(crate) fn opt_timestamp(&mut self) -> rusqlite::Result<Option<Timestamp>> {
        let index = self.take();
        match self.row.get::<_, Option<i64>>(index)? {
            None => Ok(None),
            Some(us) => from_micros(us).map(Some).ok_or_else(|| out_of_range(index)),
        }
    }

    /// The next column, text parsed by `parse` from the row's own text (no `String` just to be
    /// dropped); `what` names the value in the error of text that does not parse.
    pub(crate) fn parsed<T>(
        &mut self,
        what: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> rusqlite::Result<T> {
        let index = self.take();
        let text = self
            .row
            .get_ref(index)?
            .as_str()
            .map_err(|_| conversion(index, Type::Text, &format!("{what} is not text")))?;
        parse(text).ok_or_else(|| conversion(index, Type::Text, &format!("unknown {what}")))
    }

    /// The bookkeeping columns, [`Meta`].
    pub(crate) fn meta(&mut self) -> rusqlite::Result<Meta> {
        Ok((
            self.timestamp()?,
            self.timestamp()?,
            self.opt_timestamp()?,
            self.get()?,
        ))
    }
}

fn out_of_range(index: usize) -> rusqlite::Error {
    conversion(index, Type::Integer, "timestamp out of range")
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// Each read takes the next column, from the starting one on; an error names the column it
    /// met, counted from the row's first column.
    #[test]
    fn a_row_reader_takes_the_columns_in_order_and_names_a_bad_one() {
        let conn = Connection::open_in_memory().unwrap();
        let id = Uuid::now_v7();
        let read = conn
            .query_row(
                "SELECT 'skipped', ?1, NULL, 7, NULL, ?2",
                rusqlite::params![id.as_bytes(), i64::MAX],
                |row| {
                    let mut row = RowReader::new(row, 1);
                    let read = (
                        row.uuid()?,
                        row.opt_uuid()?,
                        row.get::<i64>()?,
                        row.opt_timestamp()?,
                    );
                    assert_eq!(row.position(), 5);
                    Ok((read, row.timestamp().unwrap_err()))
                },
            )
            .unwrap();
        let ((uuid, none, seven, no_time), out_of_range) = read;
        assert_eq!((uuid, none, seven, no_time), (id, None, 7, None));
        assert!(
            matches!(
                out_of_range,
                rusqlite::Error::FromSqlConversionFailure(5, ..)
            ),
            "{out_of_range:?}"
        );
    }
}

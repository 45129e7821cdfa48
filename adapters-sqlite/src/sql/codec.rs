//! Conversions between Stockroom's values and SQLite's: [`Param`], which binds a value without
//! copying it, and [`RowReader`], which reads a row's columns in the order a select list names
//! them, each by its declared [`Storage`].
//!
//! Ids and other UUIDs are 16-byte BLOBs, timestamps INTEGER microseconds since the Unix epoch,
//! booleans INTEGER 0 or 1, integers INTEGER and text TEXT (see `schema.rs` and `ddl.rs`).

use rusqlite::types::{FromSql, ToSqlOutput, Type, Value as SqlValue, ValueRef};
use rusqlite::{Row, ToSql};
use stockroom_core::adapter::{from_micros, to_micros};
use stockroom_core::schema::{
    collect_values, declared_name, Field, FieldType, Record, Storage, Value,
};
use stockroom_core::time::Timestamp;
use uuid::Uuid;

/// An id as its 16 bytes.
pub(crate) fn blob(id: impl Into<Uuid>) -> SqlValue {
    SqlValue::Blob(id.into().as_bytes().to_vec())
}

/// A timestamp as microseconds since the Unix epoch.
pub(crate) fn micros(ts: Timestamp) -> SqlValue {
    SqlValue::Integer(to_micros(ts))
}

/// An optional string as text, or `NULL`.
pub(crate) fn opt_text(s: Option<&str>) -> SqlValue {
    s.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_owned()))
}

/// One parameter of a statement. A record's values are bound as they are (text and ids borrowed,
/// not copied into an owned `rusqlite` value), since a write binds every column of every row.
#[derive(Debug)]
pub(crate) enum Param<'a> {
    /// A field's value, in its stored form.
    Value(&'a Value),
    /// An id.
    Id(Uuid),
    /// An integer (a timestamp's microseconds, a version, a limit).
    Int(i64),
    /// Borrowed text (a row's search document).
    Str(&'a str),
    /// Owned text (a search pattern).
    Text(String),
    /// `NULL`.
    Null,
}

impl Param<'_> {
    /// A timestamp.
    pub(crate) fn time(ts: Timestamp) -> Self {
        Param::Int(to_micros(ts))
    }

    /// An optional timestamp, or `NULL`.
    pub(crate) fn opt_time(ts: Option<Timestamp>) -> Self {
        ts.map_or(Param::Null, Param::time)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Value(value) => match value {
                Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
                Value::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
                Value::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
                Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
                Value::Name(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
                Value::Uuid(u) => ToSqlOutput::Borrowed(ValueRef::Blob(u.as_bytes())),
                Value::Timestamp(t) => ToSqlOutput::Owned(SqlValue::Integer(to_micros(*t))),
            },
            Param::Id(id) => ToSqlOutput::Borrowed(ValueRef::Blob(id.as_bytes())),
            Param::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
            Param::Str(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// How a field's column is read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decode {
    /// As its storage class.
    Stored(Storage),
    /// As one of an enum's declared names.
    Names(&'static [&'static str]),
}

impl From<&Field> for Decode {
    fn from(field: &Field) -> Self {
        match field.ty {
            FieldType::Enum(names) => Decode::Names(names),
            ty => Decode::Stored(ty.storage()),
        }
    }
}

impl From<Storage> for Decode {
    fn from(storage: Storage) -> Self {
        Decode::Stored(storage)
    }
}

/// The error of a column whose value does not convert.
pub(crate) fn conversion(index: usize, ty: Type, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, ty, what.to_owned().into())
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
    #[cfg(test)]
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

    /// The next column, an id.
    pub(crate) fn uuid(&mut self) -> rusqlite::Result<Uuid> {
        Ok(Uuid::from_bytes(self.get::<[u8; 16]>()?))
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

    /// The next column, a field's value read as `decode` says (`NULL` as [`Value::Null`]).
    /// The column's SQLite type is matched with the storage at once (this runs for every field
    /// of every row read).
    pub(crate) fn value(&mut self, decode: Decode) -> rusqlite::Result<Value> {
        let index = self.take();
        let raw = self.row.get_ref(index)?;
        let storage = match (decode, raw) {
            // An enum's name: the declaration's own, found without copying the row's text.
            (Decode::Names(names), ValueRef::Text(bytes)) => {
                let found = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| declared_name(names, text));
                return found.ok_or_else(|| conversion(index, Type::Text, "not a declared name"));
            }
            (Decode::Names(_), _) => Storage::Text,
            (Decode::Stored(storage), _) => storage,
        };
        Ok(match (storage, raw) {
            (_, ValueRef::Null) => Value::Null,
            (Storage::Text, ValueRef::Text(bytes)) => Value::Text(
                std::str::from_utf8(bytes)
                    .map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e))
                    })?
                    .to_owned(),
            ),
            (Storage::Int, ValueRef::Integer(i)) => Value::Int(i),
            (Storage::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
            (Storage::Timestamp, ValueRef::Integer(us)) => {
                Value::Timestamp(from_micros(us).ok_or_else(|| out_of_range(index))?)
            }
            (Storage::Uuid, ValueRef::Blob(bytes)) => match <[u8; 16]>::try_from(bytes) {
                Ok(bytes) => Value::Uuid(Uuid::from_bytes(bytes)),
                Err(_) => return Err(conversion(index, Type::Blob, "an id is not 16 bytes")),
            },
            (storage, other) => {
                return Err(conversion(
                    index,
                    other.data_type(),
                    &format!("a {storage:?} field holds another type"),
                ))
            }
        })
    }

    /// A whole record: the id, the declared fields read as `decoders` say (in declaration
    /// order), then `created_at, updated_at, deleted_at, version`, the order every entity's
    /// select list has (see `plan.rs`).
    pub(crate) fn record(&mut self, decoders: &[Decode]) -> rusqlite::Result<Record> {
        let id = self.uuid()?;
        let values = collect_values(decoders.len(), |i| self.value(decoders[i]))?;
        Ok(Record {
            id,
            values,
            created_at: self.timestamp()?,
            updated_at: self.timestamp()?,
            deleted_at: self.opt_timestamp()?,
            version: self.get()?,
        })
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
                        row.value(Storage::Uuid.into())?,
                        row.get::<i64>()?,
                        row.opt_timestamp()?,
                    );
                    assert_eq!(row.position(), 5);
                    Ok((read, row.timestamp().unwrap_err()))
                },
            )
            .unwrap();
        let ((uuid, none, seven, no_time), out_of_range) = read;
        assert_eq!((uuid, none, seven, no_time), (id, Value::Null, 7, None));
        assert!(
            matches!(
                out_of_range,
                rusqlite::Error::FromSqlConversionFailure(5, ..)
            ),
            "{out_of_range:?}"
        );
    }

    /// Every kind of value goes in as a parameter and comes back out by its storage unchanged.
    #[test]
    fn values_round_trip_through_their_storage() {
        let conn = Connection::open_in_memory().unwrap();
        let values = [
            (Value::Text("Straße ✓".into()), Storage::Text),
            (Value::Int(i64::MIN), Storage::Int),
            (Value::Bool(true), Storage::Bool),
            (Value::Bool(false), Storage::Bool),
            (
                Value::Timestamp(stockroom_core::time::now()),
                Storage::Timestamp,
            ),
            (Value::Uuid(Uuid::now_v7()), Storage::Uuid),
            (Value::Null, Storage::Text),
        ];
        for (value, storage) in values {
            let back = conn
                .query_row("SELECT ?1", [Param::Value(&value)], |row| {
                    RowReader::new(row, 0).value(storage.into())
                })
                .unwrap();
            assert_eq!(back, value, "{storage:?}");
        }
        let wrong = conn.query_row("SELECT 'text'", [], |row| {
            RowReader::new(row, 0).value(Storage::Int.into())
        });
        assert!(
            matches!(wrong, Err(rusqlite::Error::FromSqlConversionFailure(0, ..))),
            "{wrong:?}"
        );
    }
}

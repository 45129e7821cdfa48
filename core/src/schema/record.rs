//! A row as the adapters see it, and what the generic operations ask of them: which rows
//! ([`Condition`], [`Selection`]) and what changes ([`Changes`]).

use std::sync::Arc;

use uuid::Uuid;

use super::value::Value;
use crate::query::{Cursor, SearchText};
use crate::time::Timestamp;

/// The values of a record's declared fields, shared: copying a record (a read of an in-memory
/// table) copies a pointer, not the values, and an entity built from a record that holds the
/// only reference (a row just decoded) moves them out (the derive macro's decoder takes each value out of the slice).
pub type Values = Arc<[Value]>;

/// `len` values, the value at each position given by `value`, in one allocation; the first
/// error of `value` otherwise (nothing is asked after it).
pub fn collect_values<E>(
    len: usize,
    mut value: impl FnMut(usize) -> Result<Value, E>,
) -> Result<Values, E> {
    let mut error = None;
    // A mapped range knows its length, so the slice is allocated once, at its size, and each
    // value is written in place.
    let values: Values = (0..len)
        .map(|index| {
            if error.is_some() {
                return Value::Null;
            }
            value(index).unwrap_or_else(|e| {
                error = Some(e);
                Value::Null
            })
        })
        .collect();
    match error {
        None => Ok(values),
        Some(e) => Err(e),
    }
}

/// One row of a declared entity: its id, its declared fields' values (in the declaration's
/// order) and the bookkeeping every row has.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The row's id (a UUID v7: ids sort by creation time).
    pub id: Uuid,
    /// The values of the declared fields, in the order of [`Schema::fields`](super::Schema).
    pub values: Values,
    /// When the row was created.
    pub created_at: Timestamp,
    /// When the row last changed.
    pub updated_at: Timestamp,
    /// When the row was soft-deleted; `None` while it is live.
    pub deleted_at: Option<Timestamp>,
    /// 1 at creation, one more at every change.
    pub version: i64,
}

impl Record {
    /// A new row: a fresh id, version 1, created and updated at `now`.
    pub fn new(values: impl Into<Values>, now: Timestamp) -> Self {
        Self {
            id: Uuid::now_v7(),
            values: values.into(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
    }

    /// Whether the row is live (not soft-deleted).
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// The row's keyset position.
    pub fn cursor(&self) -> Cursor {
        Cursor::after_row(self.created_at, self.id)
    }

    /// The values, to change some: copied first if another record shares them.
    pub fn values_mut(&mut self) -> &mut [Value] {
        Arc::make_mut(&mut self.values)
    }
}

/// A condition a row must pass to be read, counted or listed.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The field at `field` equals `value`. When the field is a reference, the row it names
    /// must also be live: a condition naming a deleted row matches nothing, as if it did not
    /// exist.
    Eq {
        /// The field's position in the declaration.
        field: usize,
        /// The value it must hold (never `Null`).
        value: Value,
    },
    /// The entity's search document (see [`Schema::search`](super::Schema)) contains the query.
    Search(SearchText),
}

/// The order of a list: by `(created_at, id)`, oldest or newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first (the default of every list).
    #[default]
    Oldest,
    /// Newest first.
    Newest,
}

/// Where a list starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After skipping this many rows.
    Offset(u64),
    /// Right after this position (in the list's order), or at the beginning.
    After(Option<Cursor>),
}

/// Which live rows a list returns: those that pass every condition, in `order`, from `start`,
/// at most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The conditions every row passes.
    pub conditions: Vec<Condition>,
    /// The order.
    pub order: Order,
    /// Where the list starts.
    pub start: Start,
    /// The most rows to return.
    pub limit: u32,
}

/// An update: new values for some fields, at a time (the row's next `updated_at`; its version
/// goes up by one).
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The fields to set, by position, each at most once, in declaration order.
    pub sets: Vec<(usize, Value)>,
    /// The row's new `updated_at`.
    pub at: Timestamp,
}

impl Changes {
    /// Whether the changes set field `index`.
    pub fn sets(&self, index: usize) -> bool {
        self.sets.iter().any(|(i, _)| *i == index)
    }

    /// Applies the changes to `record`: its fields, `updated_at` and `version`.
    pub fn apply_to(&self, record: &mut Record) {
        for (index, value) in &self.sets {
            record.values_mut()[*index] = value.clone();
        }
        record.updated_at = self.at;
        record.version += 1;
    }
}

/// What an [`increment`](crate::schema::RecordWriter::increment) did.
#[derive(Debug, Clone, PartialEq)]
pub enum Incremented {
    /// The live row, with the field changed.
    Done(Record),
    /// The row is not live (or does not exist); nothing changed.
    NotLive,
    /// The field would leave its range; nothing changed. The field's current value.
    OutOfRange {
        /// The value the field holds.
        current: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `collect_values` holds each position's value, in order, and stops at the first error.
    #[test]
    fn collect_values_fills_each_position_or_stops_at_the_first_error() {
        let values = collect_values(3, |i| Ok::<_, ()>(Value::Int(i as i64 * 10))).unwrap();
        assert_eq!(*values, [Value::Int(0), Value::Int(10), Value::Int(20)]);

        let mut asked = Vec::new();
        let failed = collect_values(3, |i| {
            asked.push(i);
            if i == 1 {
                Err("no second value")
            } else {
                Ok(Value::Bool(true))
            }
        });
        assert_eq!(failed, Err("no second value"));
        assert_eq!(asked, [0, 1], "nothing is asked after the error");
    }

    /// Changing a record's values does not change those of a record it was copied from.
    #[test]
    fn changing_shared_values_copies_them_first() {
        let original = Record::new(vec![Value::Int(1), Value::Int(2)], crate::time::now());
        let mut changed = original.clone();
        Changes {
            sets: vec![(1, Value::Int(3))],
            at: crate::time::now(),
        }
        .apply_to(&mut changed);
        assert_eq!(*original.values, [Value::Int(1), Value::Int(2)]);
        assert_eq!(*changed.values, [Value::Int(1), Value::Int(3)]);
        assert_eq!(changed.version, 2);
    }
}

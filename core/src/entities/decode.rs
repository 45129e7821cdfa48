//! What entities' conversions are written with: reading a record's (or an input's) values one
//! field after another, each converted to its Rust type. Used by Stockroom's entities and by
//! the code `#[derive(Entity)]` writes (through `__private`).

use crate::error::{Error, Result};
use crate::schema::{Record, Schema, Value, Values};
use crate::time::Timestamp;

/// Reads the declared fields of a record one after another, in declaration order, converting
/// each to its Rust type: what [`Entity::from_record`] implementations are written with.
#[doc(hidden)]
pub struct Fields<'a> {
    schema: &'static Schema,
    values: Slots<'a>,
    next: usize,
}

/// A record's values: its own (a row just read from a database), whose values are moved out,
/// or shared (a row of an in-memory table), whose values are cloned.
enum Slots<'a> {
    Owned(&'a mut [Value]),
    Shared(&'a [Value]),
}

impl<'a> Fields<'a> {
    /// A reader of `values`, the record of an entity declared by `schema`.
    pub fn new(schema: &'static Schema, values: &'a mut Values) -> Self {
        // Whether the values are shared is asked once per record, not once per field: each
        // `Arc::get_mut` is an atomic compare-and-swap. A shared record (the count above one)
        // is told by a plain load.
        let owned =
            std::sync::Arc::strong_count(values) == 1 && std::sync::Arc::get_mut(values).is_some();
        let values = if owned {
            Slots::Owned(std::sync::Arc::get_mut(values).expect("the only reference"))
        } else {
            Slots::Shared(values)
        };
        Self {
            schema,
            values,
            next: 0,
        }
    }

    /// The next field's value, as `T` (each call takes the next field).
    #[inline]
    pub fn take<T: crate::schema::FieldValue>(&mut self) -> Result<T> {
        let index = self.next;
        self.next += 1;
        let value = match &mut self.values {
            Slots::Owned(values) => values.get_mut(index).map(std::mem::take),
            Slots::Shared(values) => values.get(index).cloned(),
        }
        .unwrap_or(Value::Null);
        T::from_value(value).ok_or_else(|| {
            let field = self.schema.fields.get(index).map_or("?", |f| f.name);
            Error::backend_message(format!(
                "{}.{field}: the stored value does not have the declared type",
                self.schema.table
            ))
        })
    }
}

/// The values of an input, read one field after another with [`Inputs::take`] (for the
/// `from_values`, `from_sets` and `from_conditions` of inputs: a value of the wrong type is
/// [`Error::Validation`] on its field).
#[doc(hidden)]
pub struct Inputs;

impl Inputs {
    /// `value`, the value of field `index` of `schema`, as `T`.
    pub fn take<T: crate::schema::FieldValue>(
        schema: &'static Schema,
        index: usize,
        value: Value,
    ) -> Result<T> {
        let field = schema.fields.get(index).map_or("?", |f| f.name);
        T::from_value(value).ok_or_else(|| wrong_type(field))
    }

    /// The next of `values`, the value of field `index` of `schema`, as `T`.
    pub fn take_next<T: crate::schema::FieldValue>(
        schema: &'static Schema,
        index: usize,
        values: &mut impl Iterator<Item = Value>,
    ) -> Result<T> {
        Self::take(schema, index, values.next().unwrap_or_default())
    }

    /// `values` as one value per field of `schema`, or a validation error.
    pub fn check_len(schema: &'static Schema, values: &[Value]) -> Result<()> {
        if values.len() == schema.fields.len() {
            Ok(())
        } else {
            Err(Error::validation(
                "values",
                crate::Rule::Malformed {
                    expected: "one value per declared field",
                },
            ))
        }
    }

    /// The error of a search condition given to a filter without search.
    pub fn no_search() -> Error {
        Error::validation(
            "q",
            crate::Rule::Malformed {
                expected: "no search: the entity's filter has none",
            },
        )
    }

    /// The error of a field an input cannot set or filter by.
    pub fn unsupported(schema: &'static Schema, index: usize) -> Error {
        let field = schema.fields.get(index).map_or("?", |f| f.name);
        Error::validation(
            field,
            crate::Rule::Malformed {
                expected: "a field this input sets or filters by",
            },
        )
    }
}

fn wrong_type(field: &'static str) -> Error {
    Error::validation(
        field,
        crate::Rule::Malformed {
            expected: "a value of the field's declared type",
        },
    )
}

/// The bookkeeping of a record, for an entity built from it.
#[doc(hidden)]
pub fn meta(record: &Record) -> (Timestamp, Timestamp, Option<Timestamp>, i64) {
    (
        record.created_at,
        record.updated_at,
        record.deleted_at,
        record.version,
    )
}

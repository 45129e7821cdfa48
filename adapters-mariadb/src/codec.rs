//! Type mapping between MariaDB and the core's records: a declared field's [`Value`] bound as a
//! parameter and read back from a row, by the field's [`Storage`] (`VARCHAR`/`TEXT`, `BIGINT`,
//! `BOOLEAN`, `DATETIME(6)` in UTC, `BINARY(16)`); statements built with their arguments
//! ([`Statement`]); the conversions of bound parameters and counts.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::{Arguments, AssertSqlSafe, Encode, MySql, Row, Type};
use stockroom_core::schema::{
    collect_values, declared_name, Field, FieldType, Record, Storage, Value,
};
use stockroom_core::{Limit, Page, Result};
use uuid::Uuid;

use crate::error::decode_error;
use crate::session::MyQuery;

/// Reads the column at `index` of `row`.
pub(crate) fn at<'r, T>(row: &'r MySqlRow, index: usize) -> Result<T>
where
    T: sqlx::Decode<'r, MySql> + Type<MySql>,
{
    row.try_get(index).map_err(decode_error)
}

/// A timestamp column (`DATETIME(6)`, which holds UTC) at `index`. Read as a naive date-time:
/// the column has no time zone, and the value is UTC by Stockroom's convention.
pub(crate) fn timestamp_at(row: &MySqlRow, index: usize) -> Result<Option<DateTime<Utc>>> {
    Ok(at::<Option<NaiveDateTime>>(row, index)?.map(|naive| naive.and_utc()))
}

/// A timestamp as bound to a `DATETIME(6)` parameter: the UTC wall clock, without a zone (sqlx
/// would otherwise send a `TIMESTAMP`, which the server converts with the session's time zone).
pub(crate) fn utc(ts: DateTime<Utc>) -> NaiveDateTime {
    ts.naive_utc()
}

/// A statement prepared once (the text of a plan), to bind arguments to: sharing the text costs
/// a reference count, not a copy.
pub(crate) fn query(sql: &Arc<str>) -> MyQuery<'static> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

/// `query` with `value` bound as a field of storage class `storage`; `Null` is bound with the
/// field's type.
pub(crate) fn bind_value<'q>(query: MyQuery<'q>, storage: Storage, value: &Value) -> MyQuery<'q> {
    match value {
        Value::Null => match storage {
            Storage::Text => query.bind(None::<String>),
            Storage::Int => query.bind(None::<i64>),
            Storage::Bool => query.bind(None::<bool>),
            Storage::Timestamp => query.bind(None::<NaiveDateTime>),
            Storage::Uuid => query.bind(None::<Uuid>),
        },
        Value::Text(text) => query.bind(text.clone()),
        Value::Name(name) => query.bind(*name),
        Value::Int(int) => query.bind(*int),
        Value::Bool(b) => query.bind(*b),
        Value::Timestamp(ts) => query.bind(utc(*ts)),
        Value::Uuid(uuid) => query.bind(*uuid),
    }
}

/// The value of `field` at column `index` of `row` (`Null` for SQL `NULL`).
pub(crate) fn decode_value(row: &MySqlRow, index: usize, field: &Field) -> Result<Value> {
    if let FieldType::Enum(names) = field.ty {
        // The declaration's own name, found without copying the row's text.
        return match at::<Option<&str>>(row, index)? {
            None => Ok(Value::Null),
            Some(text) => declared_name(names, text).ok_or_else(|| {
                stockroom_core::Error::backend_message(format!(
                    "column {index} holds {text:?}, not a declared name of {}",
                    field.name
                ))
            }),
        };
    }
    let value = match field.ty.storage() {
        Storage::Text => at::<Option<String>>(row, index)?.map(Value::Text),
        Storage::Int => at::<Option<i64>>(row, index)?.map(Value::Int),
        Storage::Bool => at::<Option<bool>>(row, index)?.map(Value::Bool),
        Storage::Timestamp => timestamp_at(row, index)?.map(Value::Timestamp),
        Storage::Uuid => at::<Option<Uuid>>(row, index)?.map(Value::Uuid),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// The record whose columns start at `start` in `row`, in the order every read selects them:
/// `id`, the declared `fields`, `created_at`, `updated_at`, `deleted_at`, `version`.
pub(crate) fn decode_record(row: &MySqlRow, start: usize, fields: &[Field]) -> Result<Record> {
    let values = collect_values(fields.len(), |i| {
        decode_value(row, start + 1 + i, &fields[i])
    })?;
    let next = start + 1 + fields.len();
    let required = |index| {
        timestamp_at(row, index)?.ok_or_else(|| {
            stockroom_core::Error::backend_message(format!("column {index} is NULL"))
        })
    };
    Ok(Record {
        id: at(row, start)?,
        values,
        created_at: required(next)?,
        updated_at: required(next + 1)?,
        deleted_at: timestamp_at(row, next + 2)?,
        version: at(row, next + 3)?,
    })
}

/// A statement whose text depends on the call (its conditions, its `SET` list), built together
/// with its arguments: each `?` written by [`bind`](Statement::bind) or
/// [`value`](Statement::value) is the argument bound with it (MariaDB's placeholders are
/// positional: a value used twice is bound twice).
pub(crate) struct Statement {
    text: String,
    arguments: MySqlArguments,
    /// The first argument that failed to encode; the statement then fails when run.
    error: Option<BoxDynError>,
}

impl Statement {
    /// A statement starting with `text`.
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            arguments: MySqlArguments::default(),
            error: None,
        }
    }

    /// Appends SQL text (never user text: names from declarations, and keywords).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Binds `value` as the next argument and appends its placeholder `?`.
    pub(crate) fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, MySql> + Type<MySql>,
    {
        if let Err(e) = self.arguments.add(value) {
            self.error.get_or_insert(e);
        }
        self.text.push('?');
        self
    }

    /// Binds the value of a field of storage class `storage` as the next argument and appends
    /// its placeholder; `Null` is bound with the field's type.
    pub(crate) fn value(&mut self, storage: Storage, value: &Value) -> &mut Self {
        match value {
            Value::Null => match storage {
                Storage::Text => self.bind(None::<String>),
                Storage::Int => self.bind(None::<i64>),
                Storage::Bool => self.bind(None::<bool>),
                Storage::Timestamp => self.bind(None::<NaiveDateTime>),
                Storage::Uuid => self.bind(None::<Uuid>),
            },
            Value::Text(text) => self.bind(text.clone()),
            Value::Name(name) => self.bind(*name),
            Value::Int(int) => self.bind(*int),
            Value::Bool(b) => self.bind(*b),
            Value::Timestamp(ts) => self.bind(utc(*ts)),
            Value::Uuid(uuid) => self.bind(*uuid),
        }
    }

    /// The statement's text, shared (for the log), and the query with its arguments; an
    /// argument that failed to encode is the error.
    pub(crate) fn build(self) -> Result<(Arc<str>, MyQuery<'static>)> {
        if let Some(e) = self.error {
            return Err(decode_error(sqlx::Error::Encode(e)));
        }
        let sql: Arc<str> = Arc::from(self.text);
        let query = sqlx::query_with(AssertSqlSafe(Arc::clone(&sql)), self.arguments);
        Ok((sql, query))
    }
}

/// A limit bound as a `BIGINT`.
pub(crate) fn limit_i64(limit: Limit) -> i64 {
    i64::from(limit.get())
}

/// A page's offset bound as a `BIGINT`.
pub(crate) fn offset_i64(page: Page) -> i64 {
    // Page offsets are at most MAX_OFFSET (10^7).
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

/// A `COUNT(*)` read back as a `u64`.
pub(crate) fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

//! Type mapping between PostgreSQL and the core's records: a declared field's [`Value`] bound as
//! a parameter (one value, or one array per field for `UNNEST`) and read back from a row, by the
//! field's [`Storage`] (`text`, `bigint`, `boolean`, `timestamptz`, `uuid`); the ledger's row
//! struct; statements built with their arguments ([`Statement`]); the conversions of bound
//! parameters and counts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{
    Arguments, AssertSqlSafe, Column as _, Encode, FromRow, Postgres, Row, Type, TypeInfo as _,
};
use stockroom_core::schema::{
    collect_values, declared_name, Field, FieldType, Record, Storage, Value,
};
use stockroom_core::{Limit, Page, ProductId, Result, StockMovement, StockMovementId};
use uuid::Uuid;

use crate::error::map_error;
use crate::session::PgQuery;

/// Reads the column `name` of `row`.
pub(crate) fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(map_error)
}

/// Reads the column at `index` of `row`.
pub(crate) fn at<'r, T>(row: &'r PgRow, index: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index).map_err(map_error)
}

/// Decodes the row type `R` of `row` and converts it into `E`.
pub(crate) fn decode<R, E>(row: &PgRow) -> Result<E>
where
    R: for<'r> FromRow<'r, PgRow> + TryInto<E, Error = sqlx::Error>,
{
    R::from_row(row)
        .and_then(TryInto::try_into)
        .map_err(map_error)
}

/// A statement prepared once (the text of a [`Plan`](crate::plans::Plan)), to bind arguments
/// to: sharing the text costs a reference count, not a copy.
pub(crate) fn query(sql: &Arc<str>) -> PgQuery<'static> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

/// `query` with `value` bound as a field of storage class `storage`; `Null` is bound with the
/// field's type, so that the server never has to guess it.
pub(crate) fn bind_value<'q>(query: PgQuery<'q>, storage: Storage, value: &Value) -> PgQuery<'q> {
    match value {
        Value::Null => match storage {
            Storage::Text => query.bind(None::<&str>),
            Storage::Int => query.bind(None::<i64>),
            Storage::Bool => query.bind(None::<bool>),
            Storage::Timestamp => query.bind(None::<DateTime<Utc>>),
            Storage::Uuid => query.bind(None::<Uuid>),
        },
        Value::Text(text) => query.bind(text.as_str()),
        Value::Name(name) => query.bind(*name),
        Value::Int(int) => query.bind(*int),
        Value::Bool(b) => query.bind(*b),
        Value::Timestamp(ts) => query.bind(*ts),
        Value::Uuid(uuid) => query.bind(*uuid),
    }
}

/// `query` with the values of field `field` of every row of `rows` bound as one array of the
/// field's type (for `UNNEST($n::<type>[])`).
pub(crate) fn bind_column<'q>(
    query: PgQuery<'q>,
    storage: Storage,
    rows: &[Record],
    field: usize,
) -> PgQuery<'q> {
    let values = rows.iter().map(|r| &r.values[field]);
    match storage {
        Storage::Text => query.bind(values.map(Value::as_text).collect::<Vec<_>>()),
        Storage::Int => query.bind(values.map(Value::as_int).collect::<Vec<_>>()),
        Storage::Bool => query.bind(
            values
                .map(|v| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        Storage::Timestamp => query.bind(
            values
                .map(|v| match v {
                    Value::Timestamp(t) => Some(*t),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        Storage::Uuid => query.bind(values.map(Value::as_uuid).collect::<Vec<_>>()),
    }
}

/// The SQL type of a storage class, as casts spell it (`$1::bigint[]`).
pub(crate) const fn sql_type(storage: Storage) -> &'static str {
    match storage {
        Storage::Text => "text",
        Storage::Int => "bigint",
        Storage::Bool => "boolean",
        Storage::Timestamp => "timestamptz",
        Storage::Uuid => "uuid",
    }
}

/// The value of `field` at column `index` of `row` (`Null` for SQL
/// `NULL`). An integer column may be narrower than `bigint` (a `smallint` rating, or an
/// application's own `integer` column): it is read at its own width.
pub(crate) fn decode_value(row: &PgRow, index: usize, field: &Field) -> Result<Value> {
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
        Storage::Int => {
            let ty = row.column(index).type_info();
            if *ty == <i64 as Type<Postgres>>::type_info() {
                at::<Option<i64>>(row, index)?
            } else if *ty == <i32 as Type<Postgres>>::type_info() {
                at::<Option<i32>>(row, index)?.map(i64::from)
            } else if *ty == <i16 as Type<Postgres>>::type_info() {
                at::<Option<i16>>(row, index)?.map(i64::from)
            } else {
                return Err(stockroom_core::Error::backend_message(format!(
                    "column {index} holds {}, not an integer",
                    ty.name().to_owned()
                )));
            }
            .map(Value::Int)
        }
        Storage::Bool => at::<Option<bool>>(row, index)?.map(Value::Bool),
        Storage::Timestamp => at::<Option<DateTime<Utc>>>(row, index)?.map(Value::Timestamp),
        Storage::Uuid => at::<Option<Uuid>>(row, index)?.map(Value::Uuid),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// The record whose columns start at `start` in `row`, in the order every read selects them:
/// `id`, the declared `fields`, `created_at`, `updated_at`, `deleted_at`,
/// `version`.
pub(crate) fn decode_record(row: &PgRow, start: usize, fields: &[Field]) -> Result<Record> {
    let values = collect_values(fields.len(), |i| {
        decode_value(row, start + 1 + i, &fields[i])
    })?;
    let next = start + 1 + fields.len();
    Ok(Record {
        id: at(row, start)?,
        values,
        created_at: at(row, next)?,
        updated_at: at(row, next + 1)?,
        deleted_at: at(row, next + 2)?,
        version: at(row, next + 3)?,
    })
}

/// A statement whose text depends on the call (its conditions, its `SET` list), built together
/// with its arguments so that each `$n` is the argument bound for it.
pub(crate) struct Statement {
    text: String,
    arguments: PgArguments,
    /// The first argument that failed to encode; the statement then fails when run.
    error: Option<BoxDynError>,
}

impl Statement {
    /// A statement starting with `text`.
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            arguments: PgArguments::default(),
            error: None,
        }
    }

    /// Appends SQL text (never user text: names from declarations, and keywords).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Binds `value` as the next argument and returns its placeholder (`$3`), to be written
    /// where it is used (as many times as needed).
    pub(crate) fn arg<'t, T>(&mut self, value: T) -> String
    where
        T: Encode<'t, Postgres> + Type<Postgres>,
    {
        if let Err(e) = self.arguments.add(value) {
            self.error.get_or_insert(e);
        }
        format!("${}", self.arguments.len())
    }

    /// Binds `value` as the next argument and appends its placeholder.
    pub(crate) fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, Postgres> + Type<Postgres>,
    {
        let placeholder = self.arg(value);
        self.text.push_str(&placeholder);
        self
    }

    /// Binds the value of a field of storage class `storage` as the next argument and returns
    /// its placeholder; `Null` is bound with the field's type.
    pub(crate) fn value(&mut self, storage: Storage, value: &Value) -> String {
        match value {
            Value::Null => match storage {
                Storage::Text => self.arg(None::<String>),
                Storage::Int => self.arg(None::<i64>),
                Storage::Bool => self.arg(None::<bool>),
                Storage::Timestamp => self.arg(None::<DateTime<Utc>>),
                Storage::Uuid => self.arg(None::<Uuid>),
            },
            Value::Text(text) => self.arg(text.as_str()),
            Value::Name(name) => self.arg(*name),
            Value::Int(int) => self.arg(*int),
            Value::Bool(b) => self.arg(*b),
            Value::Timestamp(ts) => self.arg(*ts),
            Value::Uuid(uuid) => self.arg(*uuid),
        }
    }

    /// The statement's text, shared (for the log) and as a query with its arguments; an
    /// argument that failed to encode is the error.
    pub(crate) fn build(self) -> Result<(Arc<str>, PgQuery<'static>)> {
        if let Some(e) = self.error {
            return Err(map_error(sqlx::Error::Encode(e)));
        }
        let sql: Arc<str> = Arc::from(self.text);
        let query = sqlx::query_with(AssertSqlSafe(Arc::clone(&sql)), self.arguments);
        Ok((sql, query))
    }
}

/// A row of `stock_movements`, the ledger.
#[derive(Debug, FromRow)]
pub(crate) struct StockMovementRow {
    id: Uuid,
    source_id: Uuid,
    target_id: Uuid,
    quantity: i64,
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<StockMovementRow> for StockMovement {
    type Error = sqlx::Error;

    fn try_from(row: StockMovementRow) -> sqlx::Result<Self> {
        Ok(StockMovement {
            id: StockMovementId::from_uuid(row.id),
            source_id: ProductId::from_uuid(row.source_id),
            target_id: ProductId::from_uuid(row.target_id),
            quantity: row.quantity,
            idempotency_key: row.idempotency_key,
            created_at: row.created_at,
        })
    }
}

/// A limit bound as a `bigint`.
pub(crate) fn limit_i64(limit: Limit) -> i64 {
    i64::from(limit.get())
}

/// A page's offset bound as a `bigint`.
pub(crate) fn offset_i64(page: Page) -> i64 {
    // Page offsets are at most MAX_OFFSET (10^7).
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

/// A `count(*)` read back as a `u64`.
pub(crate) fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

//! `create_many`'s binary `COPY`, for any entity: large batches go straight into the table in
//! `COPY`'s binary format, which skips what makes `INSERT … SELECT FROM UNNEST(…)` slower per
//! row (arrays to unnest, a speculative insert for `ON CONFLICT`, a row returned for each).

use std::collections::BTreeSet;

use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArgumentBuffer;
use sqlx::Postgres;
use stockroom_core::schema::{search_document, Entry, Record, Storage, Value};
use stockroom_core::{Error, Result, StorageFault};
use uuid::Uuid;

use crate::codec::{at, query};
use crate::plans::Plan;
use crate::session::Session;

/// Batches of at least this many rows go in by `COPY`; smaller ones by `INSERT … SELECT FROM
/// UNNEST(…)`. `COPY` takes four round trips to the insert's one, and ends with a small write
/// (`CopyDone`) right after the large one of the data: sqlx 0.9.0 leaves Nagle's algorithm on,
/// so that small write waits for the server to acknowledge the data, which a server holds back
/// up to 40 ms (delayed ACK) unless the data is large. Measured on this machine over TCP, with
/// products: `COPY` of 256 rows was 4x slower than the insert, of 500 rows and more faster
/// (1.2x at 500 and 1,000 rows, 1.3x to 1.4x at 2,000 and 10,000).
pub(crate) const COPY_FROM_ROWS: usize = 1_000;

/// The savepoint a `COPY` runs under: a row that breaks a rule fails the `COPY`, and rolling
/// back to it keeps the unit of work's transaction usable.
const COPY_SAVEPOINT: &str = "stockroom_copy";

/// SQLSTATE 0A000, what a server answers a `COPY` it will not run for this table, or at all:
/// PostgreSQL refuses `COPY FROM` into a table under row-level security, where `INSERT` runs.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// How an integer column of the live table is written: `COPY`'s binary format is the column
/// type's own, so a `smallint` column (the rating of a review) takes two bytes, not eight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
}

/// Per declared field, the width of its column if it is an integer.
pub(crate) type Layout = Vec<Option<Width>>;

/// The columns of `$1` and their types, to learn the [`Layout`] from.
const COLUMN_TYPES: &str =
    "SELECT column_name::text, udt_name::text FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = $1";

/// The layout of `plan`'s table from its columns and their types (`udt_name`), or `None` when
/// a column is missing or of a type whose binary form is not the one written here: then the
/// rows go in by `INSERT`, which converts, or says what is wrong.
fn layout_of(plan: &Plan, columns: &[(String, String)]) -> Option<Layout> {
    let type_of = |name: &str| {
        columns
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, ty)| ty.as_str())
    };
    plan.schema
        .fields
        .iter()
        .zip(&plan.storages)
        .map(|(field, &storage)| match (storage, type_of(field.name)?) {
            (Storage::Int, "int2") => Some(Some(Width::Int2)),
            (Storage::Int, "int4") => Some(Some(Width::Int4)),
            (Storage::Int, "int8") => Some(Some(Width::Int8)),
            (Storage::Text, "text" | "varchar")
            | (Storage::Bool, "bool")
            | (Storage::Timestamp, "timestamptz")
            | (Storage::Uuid, "uuid") => Some(None),
            _ => None,
        })
        .collect()
}

/// Whether a failed `COPY` leaves the batch to the `INSERT` path: a rule broken (a taken
/// unique value, a reference deleted meanwhile, a check), which the insert names row by row,
/// or a `COPY` the server refuses where an `INSERT` may run (row-level security, a privilege).
fn falls_back(error: &Error) -> bool {
    match error {
        Error::Conflict { .. } | Error::NotFound { .. } | Error::Validation { .. } => true,
        Error::Storage {
            fault: StorageFault::PermissionDenied,
            ..
        } => true,
        Error::Backend {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|db| db.code())
            .is_some_and(|code| code == FEATURE_NOT_SUPPORTED),
        _ => false,
    }
}

impl Session {
    /// Inserts all of `rows` (of `plan`'s entity) by binary `COPY` if that suits them: `true`
    /// when every row went in, `false` when none did, and the `INSERT` path is to insert them
    /// (and say which row breaks which rule). It runs under a savepoint, so that a row breaking
    /// a rule, which fails the `COPY` and would abort the transaction, only undoes the `COPY`;
    /// a batch that refers to a row that is not live, which a foreign key would let through, is
    /// not copied. Batches smaller than [`COPY_FROM_ROWS`] are not copied either.
    pub(crate) async fn copy_rows(
        &mut self,
        plan: &Plan,
        entry: &Entry,
        rows: &[Record],
    ) -> Result<bool> {
        if rows.len() < COPY_FROM_ROWS || !self.in_transaction() {
            return Ok(false);
        }
        let layout = match plan.copy_layout.get() {
            Some(layout) => layout.clone(),
            None => {
                let columns: Vec<(String, String)> = {
                    let found = self
                        .fetch_all(COLUMN_TYPES, sqlx::query(COLUMN_TYPES).bind(plan.table))
                        .await?;
                    found
                        .iter()
                        .map(|row| Ok((at(row, 0)?, at(row, 1)?)))
                        .collect::<Result<_>>()?
                };
                let layout = layout_of(plan, &columns);
                // Two sessions may learn it at once; they learn the same.
                let _ = plan.copy_layout.set(layout.clone());
                layout
            }
        };
        let Some(layout) = layout else {
            return Ok(false);
        };
        if self.refers_to_dead_rows(plan, rows).await? {
            return Ok(false);
        }
        // A value too wide for its column: the insert says so.
        let Ok(data) = copy_data(plan, entry, &layout, rows) else {
            return Ok(false);
        };
        self.open_savepoint(COPY_SAVEPOINT).await?;
        match self.copy_in(&plan.copy, &data).await {
            Ok(_) => {
                self.release_savepoint(COPY_SAVEPOINT).await?;
                Ok(true)
            }
            Err(e) if falls_back(&e) => {
                self.roll_back_to_savepoint(COPY_SAVEPOINT).await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a row of `rows` refers to a row that is not live (a foreign key would accept a
    /// deleted one).
    async fn refers_to_dead_rows(&mut self, plan: &Plan, rows: &[Record]) -> Result<bool> {
        let Some(sql) = &plan.dead_references else {
            return Ok(false);
        };
        let mut statement = query(sql);
        let mut any = false;
        for reference in &plan.references {
            let ids: BTreeSet<Uuid> = rows
                .iter()
                .filter_map(|row| row.values[reference.field].as_uuid())
                .collect();
            any |= !ids.is_empty();
            statement = statement.bind(ids.into_iter().collect::<Vec<_>>());
        }
        if !any {
            return Ok(false);
        }
        let row = self.fetch_one(sql, statement).await?;
        at(&row, 0)
    }
}

/// `rows` in `COPY`'s binary format, in the columns of `plan.copy`: a header, one tuple per row
/// (its field count, then each field's length and bytes, -1 for NULL), a trailer. Each field is
/// in the binary form sqlx binds it in, which is the one `COPY` reads.
fn copy_data(
    plan: &Plan,
    entry: &Entry,
    layout: &[Option<Width>],
    rows: &[Record],
) -> std::result::Result<Vec<u8>, BoxDynError> {
    let fields = i16::try_from(plan.storages.len() + 4 + usize::from(plan.searchable))?;
    let mut buf = PgArgumentBuffer::default();
    // Room for a row of short fields each (the buffer grows, copying itself, past it).
    buf.reserve(19 + rows.len() * (2 + 24 * usize::from(fields.unsigned_abs())));
    // Signature, flags (no OIDs), header extension length.
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
    for row in rows {
        buf.extend_from_slice(&fields.to_be_bytes());
        put_field(&mut buf, row.id)?;
        for (value, &width) in row.values.iter().zip(layout) {
            put_value(&mut buf, value, width)?;
        }
        put_field(&mut buf, row.created_at)?;
        put_field(&mut buf, row.updated_at)?;
        put_field(&mut buf, row.version)?;
        if plan.searchable {
            put_field(&mut buf, search_document(entry, &row.values))?;
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(std::mem::take(&mut *buf))
}

/// Appends a field's value to a `COPY` tuple, an integer at its column's `width`.
fn put_value(
    buf: &mut PgArgumentBuffer,
    value: &Value,
    width: Option<Width>,
) -> std::result::Result<(), BoxDynError> {
    match value {
        Value::Null => {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            Ok(())
        }
        Value::Text(text) => put_field(buf, text.as_str()),
        Value::Name(name) => put_field(buf, *name),
        Value::Int(int) => match width {
            Some(Width::Int2) => put_field(buf, i16::try_from(*int)?),
            Some(Width::Int4) => put_field(buf, i32::try_from(*int)?),
            _ => put_field(buf, *int),
        },
        Value::Bool(b) => put_field(buf, *b),
        Value::Timestamp(ts) => put_field(buf, *ts),
        Value::Uuid(uuid) => put_field(buf, *uuid),
    }
}

/// Appends `value` to a `COPY` tuple: its length, then its binary form, or -1 for NULL.
fn put_field<'q, T: Encode<'q, Postgres>>(
    buf: &mut PgArgumentBuffer,
    value: T,
) -> std::result::Result<(), BoxDynError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let length = match value.encode_by_ref(buf)? {
        IsNull::Yes => -1,
        IsNull::No => i32::try_from(buf.len() - start - 4)?,
    };
    buf[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

//! The SQL every entity table shares, written once for any [`Table`]: the reads, the writes,
//! soft delete, restore and purge, the statement helpers they run on, and the ends of a
//! transaction.

use std::collections::HashSet;

use rusqlite::types::Value;
use rusqlite::Row;
use stockroom_core::time::{self, Timestamp};
use stockroom_core::{Cursor, Error, Page, Result};
use uuid::Uuid;

use super::codec::{blob, micros, RowReader};
use super::{Table, Where};
use crate::conn::Db;
use crate::error::map;

/// SQLite's default bound on the parameters of one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMS: usize = 32_766;

/// The internal savepoint that makes a multi-statement write all-or-nothing.
const ATOMIC: &str = "stockroom_atomic";

/// Reads an `E` from `row`, its columns starting at column `at`.
pub(crate) fn read_row<E: Table>(row: &Row<'_>, at: usize) -> rusqlite::Result<E> {
    let mut columns = RowReader::new(row, at);
    let entity = E::read(&mut columns)?;
    debug_assert_eq!(
        columns.position() - at,
        E::COLUMNS.len(),
        "{}: the row mapping reads a different number of columns than COLUMNS lists",
        E::NAME
    );
    Ok(entity)
}

/// The values of `row`'s `WRITE_COLUMNS`, appended to `out`.
fn push_values<E: Table>(row: &E, out: &mut Vec<Value>) {
    let before = out.len();
    row.values(out);
    debug_assert_eq!(
        out.len() - before,
        E::WRITE_COLUMNS.len(),
        "{}: the row mapping writes a different number of values than WRITE_COLUMNS lists",
        E::NAME
    );
}

// ---- Row mapping and statements ------------------------------------------------------------

/// SQLite reports whichever unique index it happened to check first; every backend names the
/// first rule broken in a fixed order: rows in input order, each row's unique values in the order
/// the entity declares them (a product's slug before its sku). Runs only after a write failed on
/// a unique index.
fn first_conflict<E: Table>(conn: &Db<'_>, rows: &[E], error: Error) -> Error {
    if !matches!(error, Error::Conflict { .. }) {
        return error;
    }
    let mut earlier = HashSet::new();
    for row in rows {
        for (constraint, condition, value) in row.unique_columns() {
            let in_batch = !earlier.insert((constraint, format!("{value:?}")));
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {condition} AND deleted_at IS NULL \
                 AND id <> ?)",
                E::NAME
            );
            let taken = scalar::<bool>(conn, &sql, &[value, blob(row.id())]);
            if in_batch || taken.unwrap_or(false) {
                return Error::Conflict { constraint };
            }
        }
    }
    error
}

/// `alias.col, alias.col, …` for a select list.
pub(crate) fn columns<E: Table>(alias: Option<&str>) -> String {
    let mut s = String::new();
    for (i, c) in E::COLUMNS.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if let Some(a) = alias {
            s.push_str(a);
            s.push('.');
        }
        s.push_str(c);
    }
    s
}

/// Every row `sql` returns, each mapped by `f`.
pub(crate) fn query<T>(
    conn: &Db<'_>,
    sql: &str,
    params: &[Value],
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    conn.observe(sql, || {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), f)?;
        rows.collect::<rusqlite::Result<Vec<T>>>()
    })
    .map_err(map)
}

/// Every row `sql` returns, each an `E` read from column 0 on.
pub(crate) fn query_rows<E: Table>(conn: &Db<'_>, sql: &str, params: &[Value]) -> Result<Vec<E>> {
    query(conn, sql, params, |r| read_row::<E>(r, 0))
}

/// The first row of a lookup by a unique key: it steps once, where collecting every row would
/// step again only to find no second one. The key is bound as it is (an id as its 16 bytes, no
/// owned `Value`), since this is the point read.
pub(crate) fn query_first<T>(
    conn: &Db<'_>,
    sql: &str,
    key: impl rusqlite::ToSql,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.observe(sql, || {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([key])?;
        rows.next()?.map(f).transpose()
    })
    .map_err(map)
}

/// The first column of the one row `sql` returns.
pub(crate) fn scalar<T: rusqlite::types::FromSql>(
    conn: &Db<'_>,
    sql: &str,
    params: &[Value],
) -> Result<T> {
    conn.observe(sql, || {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row(rusqlite::params_from_iter(params), |r| r.get(0)))
    })
    .map_err(map)
}

/// Runs a statement that returns no rows; the number of rows it changed.
pub(crate) fn execute(conn: &Db<'_>, sql: &str, params: &[Value]) -> Result<usize> {
    conn.observe(sql, || {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
    })
    .map_err(map)
}

/// `?, ?, …` with `n` parameters.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ", ?" });
    }
    s
}

/// Appends the page's `LIMIT ? OFFSET ?` parameters.
pub(crate) fn page_params(page: Page, params: &mut Vec<Value>) {
    params.push(Value::Integer(i64::from(page.limit().get())));
    params.push(Value::Integer(page.offset() as i64));
}

/// Runs `f` all-or-nothing: inside a savepoint that is rolled back when `f` fails.
pub(crate) fn atomically<T>(conn: &Db<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch(&format!("SAVEPOINT {ATOMIC}"))
        .map_err(map)?;
    match f() {
        Ok(v) => {
            conn.execute_batch(&format!("RELEASE {ATOMIC}"))
                .map_err(map)?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch(&format!("ROLLBACK TO {ATOMIC}; RELEASE {ATOMIC}"))
                .map_err(map)?;
            Err(e)
        }
    }
}

/// Fails with `NotFound{E::KIND}` unless every id names a live row of `E`'s table.
pub(crate) fn require_live<E: Table>(
    conn: &Db<'_>,
    ids: impl IntoIterator<Item = E::Id>,
) -> Result<()> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE id = ? AND deleted_at IS NULL)",
        E::NAME
    );
    let mut seen = HashSet::new();
    for id in ids.into_iter().map(Into::<Uuid>::into) {
        if seen.insert(id) && !scalar::<bool>(conn, &sql, &[blob(id)])? {
            return Err(Error::not_found(E::KIND, id));
        }
    }
    Ok(())
}

// ---- The operations ------------------------------------------------------------------------

/// The live row `id`: the point read.
pub(crate) fn get<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<Option<E>> {
    query_first(conn, E::GET_SQL, id.as_bytes(), |r| read_row::<E>(r, 0))
}

/// The distinct ids, in a stable order.
fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The live rows among `ids`, in the list order.
pub(crate) fn get_many<E: Table>(conn: &Db<'_>, ids: &[Uuid]) -> Result<Vec<E>> {
    let ids = distinct(ids);
    let mut rows = Vec::with_capacity(ids.len());
    // One statement unless the ids exceed SQLite's parameter bound.
    for chunk in ids.chunks(MAX_PARAMS) {
        let sql = format!(
            "SELECT {} FROM {} WHERE id IN ({}) AND deleted_at IS NULL ORDER BY created_at, id",
            columns::<E>(None),
            E::NAME,
            placeholders(chunk.len())
        );
        let params: Vec<Value> = chunk.iter().map(|id| blob(*id)).collect();
        rows.extend(query_rows::<E>(conn, &sql, &params)?);
    }
    if ids.len() > MAX_PARAMS {
        rows.sort_by_key(|r| (r.created_at(), r.id()));
    }
    Ok(rows)
}

/// The conditions of `filter`.
pub(crate) fn filter_where<E: Table>(filter: &E::Filter) -> Where {
    let mut w = Where::default();
    E::filter(filter, &mut w);
    w
}

/// A page of the live rows that match `filter`, in the list order (`created_at`, then id).
pub(crate) fn list<E: Table>(conn: &Db<'_>, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
    let mut w = filter_where::<E>(filter);
    let sql = format!(
        "SELECT {} FROM {} WHERE deleted_at IS NULL{} ORDER BY created_at, id LIMIT ? OFFSET ?",
        columns::<E>(None),
        E::NAME,
        w.sql
    );
    page_params(page, &mut w.params);
    query_rows::<E>(conn, &sql, &w.params)
}

/// Up to `limit` rows after `after` (`limit` is the overfetching size).
pub(crate) fn list_after<E: Table>(
    conn: &Db<'_>,
    filter: &E::Filter,
    after: Option<Cursor>,
    limit: u32,
) -> Result<Vec<E>> {
    let mut w = filter_where::<E>(filter);
    if let Some(c) = after {
        w.sql.push_str(" AND (created_at, id) > (?, ?)");
        w.params.push(micros(c.created_at()));
        w.params.push(blob(c.id()));
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE deleted_at IS NULL{} ORDER BY created_at, id LIMIT ?",
        columns::<E>(None),
        E::NAME,
        w.sql
    );
    w.params.push(Value::Integer(i64::from(limit)));
    query_rows::<E>(conn, &sql, &w.params)
}

/// How many live rows match `filter`.
pub(crate) fn count<E: Table>(conn: &Db<'_>, filter: &E::Filter) -> Result<u64> {
    let w = filter_where::<E>(filter);
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE deleted_at IS NULL{}",
        E::NAME,
        w.sql
    );
    scalar::<i64>(conn, &sql, &w.params).map(|n| n as u64)
}

/// Whether a live row matches `filter`: the first one found ends the search.
pub(crate) fn exists<E: Table>(conn: &Db<'_>, filter: &E::Filter) -> Result<bool> {
    let w = filter_where::<E>(filter);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE deleted_at IS NULL{})",
        E::NAME,
        w.sql
    );
    scalar(conn, &sql, &w.params)
}

/// A page of the soft-deleted rows, in the list order.
pub(crate) fn list_deleted<E: Table>(conn: &Db<'_>, page: Page) -> Result<Vec<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE deleted_at IS NOT NULL ORDER BY created_at, id LIMIT ? OFFSET ?",
        columns::<E>(None),
        E::NAME
    );
    let mut params = Vec::with_capacity(2);
    page_params(page, &mut params);
    query_rows::<E>(conn, &sql, &params)
}

fn insert_sql<E: Table>(rows: usize) -> String {
    let one = format!("({})", placeholders(E::WRITE_COLUMNS.len()));
    let mut values = String::with_capacity(rows * (one.len() + 2));
    for i in 0..rows {
        if i > 0 {
            values.push_str(", ");
        }
        values.push_str(&one);
    }
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        E::NAME,
        E::WRITE_COLUMNS.join(", "),
        values
    )
}

/// Inserts the row the core makes of `new`.
pub(crate) fn create<E: Table>(conn: &Db<'_>, new: E::New) -> Result<E> {
    let row = E::create(new, time::now());
    E::check_new_refs(conn, std::slice::from_ref(&row))?;
    let mut params = Vec::with_capacity(E::WRITE_COLUMNS.len());
    push_values(&row, &mut params);
    execute(conn, &insert_sql::<E>(1), &params)
        .map_err(|e| first_conflict(conn, std::slice::from_ref(&row), e))?;
    Ok(row)
}

/// Inserts `new` with one multi-row `INSERT` per batch of rows that fits SQLite's parameter
/// bound, all or nothing.
pub(crate) fn create_many<E: Table>(conn: &Db<'_>, new: Vec<E::New>) -> Result<Vec<E>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let now = time::now();
    let rows: Vec<E> = new.into_iter().map(|n| E::create(n, now)).collect();
    let per_batch = MAX_PARAMS / E::WRITE_COLUMNS.len();
    let insert_all = || {
        E::check_new_refs(conn, &rows)?;
        let mut params = Vec::with_capacity(per_batch.min(rows.len()) * E::WRITE_COLUMNS.len());
        for batch in rows.chunks(per_batch) {
            params.clear();
            for row in batch {
                push_values(row, &mut params);
            }
            execute(conn, &insert_sql::<E>(batch.len()), &params)?;
        }
        Ok(())
    };
    let inserted = if rows.len() > per_batch {
        atomically(conn, insert_all)
    } else {
        // One statement: SQLite's statement rollback makes it all-or-nothing already.
        insert_all()
    };
    inserted.map_err(|e| first_conflict(conn, &rows, e))?;
    Ok(rows)
}

fn write_back<E: Table>(conn: &Db<'_>, row: &E) -> Result<()> {
    let mut params = Vec::with_capacity(E::WRITE_COLUMNS.len() + 1);
    push_values(row, &mut params);
    // Everything but the id (first column), which becomes the key.
    let id = params.remove(0);
    params.push(id);
    let sets: Vec<String> = E::WRITE_COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect();
    let sql = format!("UPDATE {} SET {} WHERE id = ?", E::NAME, sets.join(", "));
    execute(conn, &sql, &params)?;
    Ok(())
}

/// Reads the live row, applies the patch in Rust (the core's semantics) and writes it back;
/// nothing changes the row in between (the write lock: see the [module docs](super)).
pub(crate) fn update<E: Table>(
    conn: &Db<'_>,
    id: Uuid,
    patch: &E::Patch,
    expected_version: Option<i64>,
) -> Result<E> {
    let mut row = get::<E>(conn, id)?.ok_or_else(|| Error::not_found(E::KIND, id))?;
    if let Some(expected) = expected_version {
        if row.version() != expected {
            return Err(Error::stale_version(E::KIND, id, expected, row.version()));
        }
    }
    E::check_patch_refs(conn, patch)?;
    row.apply(patch, time::now());
    write_back(conn, &row).map_err(|e| first_conflict(conn, std::slice::from_ref(&row), e))?;
    Ok(row)
}

/// Applies `patch` to each live row among `ids`, all or nothing; how many it changed.
pub(crate) fn update_many<E: Table>(conn: &Db<'_>, ids: &[Uuid], patch: &E::Patch) -> Result<u64> {
    let mut rows = get_many::<E>(conn, ids)?;
    if rows.is_empty() {
        return Ok(0);
    }
    E::check_patch_refs(conn, patch)?;
    let now = time::now();
    atomically(conn, || {
        for row in &mut rows {
            row.apply(patch, now);
            write_back(conn, row)?;
        }
        Ok(rows.len() as u64)
    })
}

/// Marks the live row `id` deleted; false when it already was.
pub(crate) fn soft_delete<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<bool> {
    let sql = format!(
        "UPDATE {} SET deleted_at = ?1, updated_at = ?1, version = version + 1 \
         WHERE id = ?2 AND deleted_at IS NULL",
        E::NAME
    );
    let changed = execute(conn, &sql, &[micros(time::now()), blob(id)])? == 1;
    changed_or_known::<E>(conn, id, changed)
}

/// `changed`, or, when the write changed nothing, whether that is because the row `id` is in
/// the other state (false) or does not exist at all ([`Error::NotFound`]).
fn changed_or_known<E: Table>(conn: &Db<'_>, id: Uuid, changed: bool) -> Result<bool> {
    if changed {
        return Ok(true);
    }
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE id = ?)", E::NAME);
    if scalar::<bool>(conn, &sql, &[blob(id)])? {
        Ok(false)
    } else {
        Err(Error::not_found(E::KIND, id))
    }
}

/// Brings the soft-deleted row `id` back; false when it is live. A unique value a live row
/// took meanwhile is a conflict.
pub(crate) fn restore<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<bool> {
    let sql = format!(
        "UPDATE {} SET deleted_at = NULL, updated_at = ?1, version = version + 1 \
         WHERE id = ?2 AND deleted_at IS NOT NULL",
        E::NAME
    );
    match execute(conn, &sql, &[micros(time::now()), blob(id)]) {
        Ok(changed) => changed_or_known::<E>(conn, id, changed == 1),
        Err(error) => {
            let row = trashed::<E>(conn, id)?;
            Err(first_conflict(conn, &Vec::from_iter(row), error))
        }
    }
}

/// The soft-deleted row `id`.
fn trashed<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<Option<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE id = ? AND deleted_at IS NOT NULL",
        columns::<E>(None),
        E::NAME
    );
    query_first(conn, &sql, id.as_bytes(), |r| read_row::<E>(r, 0))
}

/// Deletes the row `id` for good, live or not (the foreign keys do the rest).
pub(crate) fn hard_delete<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<()> {
    let sql = format!("DELETE FROM {} WHERE id = ?", E::NAME);
    match execute(conn, &sql, &[blob(id)])? {
        1 => Ok(()),
        _ => Err(Error::not_found(E::KIND, id)),
    }
}

/// Deletes for good the rows soft-deleted before `before`; how many.
pub(crate) fn purge_deleted_before<E: Table>(conn: &Db<'_>, before: Timestamp) -> Result<u64> {
    let before = time::supported("before", before)?;
    let sql = format!(
        "DELETE FROM {} WHERE deleted_at IS NOT NULL AND deleted_at < ?",
        E::NAME
    );
    Ok(execute(conn, &sql, &[micros(before)])? as u64)
}

/// The live row whose unique `column` equals `value`.
pub(crate) fn by_column<E: Table>(conn: &Db<'_>, column: &str, value: &str) -> Result<Option<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {column} = ? AND deleted_at IS NULL",
        columns::<E>(None),
        E::NAME
    );
    query_first(conn, &sql, value, |r| read_row::<E>(r, 0))
}

// ---- The ends of a transaction -------------------------------------------------------------

/// Ends the connection's transaction with `COMMIT`.
pub(crate) fn commit(conn: &Db<'_>) -> Result<()> {
    conn.observe("COMMIT", || conn.execute_batch("COMMIT"))
        .map_err(map)
}

/// Ends the connection's transaction with `ROLLBACK`.
pub(crate) fn rollback(conn: &Db<'_>) -> Result<()> {
    conn.observe("ROLLBACK", || conn.execute_batch("ROLLBACK"))
        .map_err(map)
}

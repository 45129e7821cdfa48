//! The statement helpers every query runs on (each through the prepared-statement cache and the
//! connection's statement log), the all-or-nothing savepoint, and the ends of a transaction.
//!
//! The helpers return rusqlite's errors as they are: the caller maps them, with the store's
//! catalog where a unique index may be the cause (see `error.rs`).

use rusqlite::{Params, Row, ToSql};
use stockroom_core::{Page, Result};

use super::codec::Param;
use crate::conn::Db;
use crate::error::map;

/// SQLite's default bound on the parameters of one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
pub(crate) const MAX_PARAMS: usize = 32_766;

/// The internal savepoint that makes a multi-statement write all-or-nothing: its opening, its
/// release and its undoing.
macro_rules! atomic {
    ($($sql:literal),+) => { concat!($($sql, "stockroom_atomic"),+) };
}

/// Every row `sql` returns, each mapped by `f`.
pub(crate) fn query<T, P: ToSql>(
    conn: &Db<'_>,
    sql: &str,
    params: &[P],
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    conn.observe(sql, || {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), f)?;
        rows.collect()
    })
}

/// The first row `sql` returns: it steps once, where collecting every row would step again
/// only to find no second one (the point reads, by a unique key).
pub(crate) fn query_first<T>(
    conn: &Db<'_>,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    conn.observe(sql, || {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        rows.next()?.map(f).transpose()
    })
}

/// The first column of the one row `sql` returns.
pub(crate) fn scalar<T: rusqlite::types::FromSql>(
    conn: &Db<'_>,
    sql: &str,
    params: impl Params,
) -> rusqlite::Result<T> {
    conn.observe(sql, || {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row(params, |r| r.get(0)))
    })
}

/// Runs a statement that returns no rows; the number of rows it changed.
pub(crate) fn execute<P: ToSql>(conn: &Db<'_>, sql: &str, params: &[P]) -> rusqlite::Result<usize> {
    conn.observe(sql, || {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
    })
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
pub(crate) fn page_params(page: Page, params: &mut Vec<Param<'_>>) {
    params.push(Param::Int(i64::from(page.limit().get())));
    params.push(Param::Int(i64::try_from(page.offset()).unwrap_or(i64::MAX)));
}

/// Runs `f` all-or-nothing: inside a savepoint that is rolled back when `f` fails.
pub(crate) fn atomically<T>(conn: &Db<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch(atomic!("SAVEPOINT ")).map_err(map)?;
    match f() {
        Ok(v) => {
            conn.execute_batch(atomic!("RELEASE ")).map_err(map)?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch(atomic!("ROLLBACK TO ", "; RELEASE "))
                .map_err(map)?;
            Err(e)
        }
    }
}

// ---- The ends of a transaction -------------------------------------------------------------

/// Ends the connection's transaction with `COMMIT`.
pub(crate) fn commit(conn: &Db<'_>) -> Result<()> {
    conn.observe("COMMIT", || conn.execute_batch("COMMIT"))
        .map_err(map)
}

/// Runs `work` in the connection's transaction (already begun, its own: a store's write outside
/// any unit of work), then `COMMIT`; `ROLLBACK` instead when `work` fails or when the call's
/// caller gave up on it meanwhile (see [`Db::check_still_awaited`]). A `COMMIT` that fails
/// leaves the transaction to the connection's release, which rolls it back.
pub(crate) fn and_commit<T>(conn: &Db<'_>, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let done = work().and_then(|value| conn.check_still_awaited().map(|()| value));
    match done {
        Ok(value) => commit(conn).map(|()| value),
        Err(failed) => {
            if !conn.is_autocommit() {
                if let Err(error) = rollback(conn) {
                    tracing::debug!(%error, "rollback after a failed write failed");
                }
            }
            Err(failed)
        }
    }
}

/// Ends the connection's transaction with `ROLLBACK`.
pub(crate) fn rollback(conn: &Db<'_>) -> Result<()> {
    conn.observe("ROLLBACK", || conn.execute_batch("ROLLBACK"))
        .map_err(map)
}

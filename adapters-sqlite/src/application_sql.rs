//! The application's own SQL on the store's connections: [`with_connection`] inside a unit of
//! work's transaction, [`with_read_connection`] on a read session's connection. Their errors
//! map onto Stockroom's with [`classify`](crate::classify).

use rusqlite::Connection;
use stockroom_core::adapter::{native_read_session, native_unit_of_work};
use stockroom_core::{ReadSession, Result, UnitOfWork};

use crate::conn::Cost;
use crate::store::{SqliteReadSession, SqliteUnitOfWork};

/// Runs `f` on the unit of work's writer connection, inside its transaction: what `f` writes
/// commits or rolls back with everything else the unit of work did.
///
/// `f` runs on tokio's blocking pool, since it may take any time (after the unit of work's
/// `BEGIN IMMEDIATE`, if no statement ran yet), with the store's busy timeout in effect: its
/// statements may wait for a lock. Its value is returned. A statement of `f` that fails is
/// undone by SQLite alone and the unit of work goes on, as after a failed statement of
/// Stockroom's. `f` must leave the transaction open: if the connection is
/// in autocommit mode afterwards (`f` ran `COMMIT` or `ROLLBACK`, or SQLite rolled the
/// transaction back after an error such as a full disk), the unit of work runs nothing more and
/// its `commit` and `rollback` fail, with [`Error::Backend`](stockroom_core::Error::Backend)
/// whose source is [`SqliteError::TransactionEnded`](crate::SqliteError::TransactionEnded).
/// Use the unit of work's savepoints, not your own `SAVEPOINT`/`RELEASE`, for nesting.
///
/// A panic in `f` fails the call with [`Error::Backend`](stockroom_core::Error::Backend); the
/// writer connection is left as after any call, its busy timeout switched off again for the
/// calls that run inline.
///
/// Works through wrappers that forward the native unit of work (such as
/// [`traced`](stockroom_core::traced)); a unit of work of another backend (or a mock) is
/// [`Error::Unsupported`](stockroom_core::Error::Unsupported).
///
/// ```
/// use stockroom_core::{NewProduct, Store};
/// use stockroom_sqlite::{with_connection, SqliteOptions, SqliteStore};
///
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> stockroom_core::Result<()> {
/// let store = SqliteStore::connect_with(
///     SqliteOptions::in_memory().with_on_open(|c| {
///         c.execute_batch("CREATE TABLE IF NOT EXISTS audit (sku TEXT NOT NULL)")
///     }),
/// )
/// .await?;
/// let mut uow = store.begin().await?;
/// let mug = uow.products().create(NewProduct::new("Mug", "mug", "MUG-1")?).await?;
/// let sku = mug.sku.clone();
/// with_connection(uow.as_mut(), move |c| {
///     c.execute("INSERT INTO audit (sku) VALUES (?1)", [sku])
/// })
/// .await?
/// .map_err(stockroom_sqlite::classify)?; // SQLITE_BUSY is Transient, a taken key Conflict
/// uow.commit().await?; // the product and the audit row, together
/// # store.close().await;
/// # Ok(()) }
/// ```
pub async fn with_connection<T, F>(uow: &mut dyn UnitOfWork, f: F) -> Result<T>
where
    F: FnOnce(&Connection) -> T + Send + 'static,
    T: Send + 'static,
{
    let native = native_unit_of_work::<SqliteUnitOfWork>(uow, "with_connection")?;
    // Long: the application's SQL may take any time; it runs on the blocking pool.
    native.conn.run(Cost::Long, move |db| Ok(f(db))).await
}

/// Runs `f` on the read session's connection, for the application's own reads (its own tables,
/// a report) beside Stockroom's, without a unit of work: it never takes the store's single
/// writer, and reads in parallel with other sessions as Stockroom's reads do (WAL).
///
/// The connection is read-only (`query_only`): a write fails with SQLite's `SQLITE_READONLY`,
/// which [`classify`](crate::classify) maps to [`Error::Storage`](stockroom_core::Error::Storage)
/// `ReadOnly`; write in a unit of work with [`with_connection`]. `f` runs on tokio's blocking
/// pool, as in [`with_connection`]; a panic in `f` fails the call with
/// [`Error::Backend`](stockroom_core::Error::Backend). Leave the connection as you found it (no
/// `BEGIN` left open, no pragmas changed). A session of another backend (or a mock) is
/// [`Error::Unsupported`](stockroom_core::Error::Unsupported).
///
/// ```
/// use stockroom_core::Store;
/// use stockroom_sqlite::{with_read_connection, SqliteOptions, SqliteStore};
///
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> stockroom_core::Result<()> {
/// let store = SqliteStore::connect_with(SqliteOptions::in_memory().with_on_open(|c| {
///     c.execute_batch("CREATE TABLE IF NOT EXISTS orders (number INTEGER NOT NULL)")
/// }))
/// .await?;
/// let mut session = store.read().await?;
/// let orders: i64 = with_read_connection(session.as_mut(), |c| {
///     c.query_row("SELECT count(*) FROM orders", [], |row| row.get(0))
/// })
/// .await?
/// .map_err(stockroom_sqlite::classify)?;
/// assert_eq!(orders, 0);
/// # store.close().await;
/// # Ok(()) }
/// ```
pub async fn with_read_connection<T, F>(session: &mut dyn ReadSession, f: F) -> Result<T>
where
    F: FnOnce(&Connection) -> T + Send + 'static,
    T: Send + 'static,
{
    let native = native_read_session::<SqliteReadSession>(session, "with_read_connection")?;
    native.conn.run(Cost::Long, move |db| Ok(f(db))).await
}

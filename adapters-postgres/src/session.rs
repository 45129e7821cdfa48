//! One connection, and the statements run on it: a read session (a pooled connection, no
//! transaction) or a unit of work (a transaction).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};
use stockroom_core::adapter::Savepoints;
use stockroom_core::{
    Error, NewStockMovement, ReadSession, Result, Savepoint, StockMoved, UnitOfWork,
};

use crate::analyze::Inserted;
use crate::connections::{Connections, Fetch, Lease};
use crate::error::{map_commit_error, map_error, map_error_in};
use crate::outbox::Publishing;
use crate::plans::Plans;

pub(crate) fn store_closed() -> Error {
    Error::unavailable("the store is closed")
}

pub(crate) type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// How a store logs its statements, under the target `stockroom::sql`: each one slower than
/// `slow` at `warn`, and every other one at `debug` when `echo_all` is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatementLog {
    /// Log every statement (echo), not only the slow ones.
    echo_all: bool,
    /// Log statements slower than this at `warn`.
    slow: Duration,
}

impl StatementLog {
    pub(crate) fn new(echo_all: bool, slow: Duration) -> Self {
        Self { echo_all, slow }
    }

    fn record(&self, sql: &str, elapsed: Duration, failed: bool) {
        if elapsed >= self.slow {
            tracing::warn!(
                target: "stockroom::sql",
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                failed,
                sql,
                "slow statement"
            );
        } else if self.echo_all {
            tracing::debug!(
                target: "stockroom::sql",
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                failed,
                sql,
                "statement"
            );
        }
    }
}

enum Handle {
    Pooled(Lease),
    Transaction(Transaction<'static, Postgres>),
}

/// The connection of a read session or unit of work. Every repository trait is implemented on
/// it; the sessions hand it out as the trait each one offers.
pub(crate) struct Session {
    handle: Handle,
    /// Where the connection came from; closed once the store is.
    connections: Arc<Connections>,
    /// The statements of the store's entities, and their declarations (which name the rules a
    /// failed statement broke).
    plans: Arc<Plans>,
    log: StatementLog,
    /// Set when a statement failed inside the transaction: PostgreSQL then refuses every
    /// statement until a rollback (to a savepoint), and a COMMIT would silently roll back.
    aborted: bool,
    /// The rows inserted, per table (a bulk insert's table is analyzed after the commit).
    pub(crate) inserted: Inserted,
    /// How it writes to the outbox.
    publishing: Publishing,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field(
                "kind",
                &match self.handle {
                    Handle::Pooled(_) => "read",
                    Handle::Transaction(_) => "transaction",
                },
            )
            .field("aborted", &self.aborted)
            .finish()
    }
}

impl Session {
    /// A session on a pooled connection, outside any transaction.
    pub(crate) fn pooled(
        lease: Lease,
        connections: Arc<Connections>,
        plans: Arc<Plans>,
        log: StatementLog,
        publishing: Publishing,
    ) -> Self {
        Self {
            handle: Handle::Pooled(lease),
            connections,
            plans,
            log,
            aborted: false,
            inserted: Inserted::default(),
            publishing,
        }
    }

    /// The statements of the store's entities.
    pub(crate) fn plans(&self) -> Arc<Plans> {
        Arc::clone(&self.plans)
    }

    /// How it writes to the outbox.
    pub(crate) fn publishing(&self) -> Publishing {
        self.publishing
    }

    /// The connection, for the application's own statements: a read session's is given back
    /// to sqlx's pool afterwards, which checks it (see `Lease::lend`).
    fn lend(&mut self) -> Result<&mut PgConnection> {
        self.check_open()?;
        Ok(match &mut self.handle {
            Handle::Pooled(lease) => lease.lend(),
            Handle::Transaction(t) => t,
        })
    }

    /// Whether the session is a unit of work's transaction (else a pooled connection in
    /// autocommit).
    pub(crate) fn in_transaction(&self) -> bool {
        matches!(self.handle, Handle::Transaction(_))
    }

    fn conn(&mut self) -> &mut PgConnection {
        match &mut self.handle {
            Handle::Pooled(c) => c,
            Handle::Transaction(t) => t,
        }
    }

    /// After `Store::close`, every statement of a session still in flight fails as
    /// `Unavailable` (and its transaction rolls back when the unit of work is dropped).
    fn check_open(&mut self) -> Result<()> {
        if self.connections.is_closed() {
            if matches!(self.handle, Handle::Transaction(_)) {
                self.aborted = true;
            }
            return Err(store_closed());
        }
        Ok(())
    }

    fn finish<T>(&mut self, sql: &str, started: Instant, result: sqlx::Result<T>) -> Result<T> {
        self.finish_mapped(sql, started, result, map_error)
    }

    fn finish_mapped<T>(
        &mut self,
        sql: &str,
        started: Instant,
        result: sqlx::Result<T>,
        map: fn(sqlx::Error) -> Error,
    ) -> Result<T> {
        self.log.record(sql, started.elapsed(), result.is_err());
        result.map_err(|e| {
            if matches!(self.handle, Handle::Transaction(_)) {
                self.aborted = true;
            }
            map_error_in(e, &self.plans.catalog, map)
        })
    }

    /// Runs `query` (whose text is `sql`, for the log) and reads its result as `T` (on a
    /// pooled connection, through `Lease::run`, which checks a fresh connection).
    async fn run<T: Fetch>(&mut self, sql: &str, query: PgQuery<'_>) -> Result<T> {
        self.run_mapped(sql, query, map_error).await
    }

    async fn run_mapped<T: Fetch>(
        &mut self,
        sql: &str,
        query: PgQuery<'_>,
        map: fn(sqlx::Error) -> Error,
    ) -> Result<T> {
        self.check_open()?;
        let started = Instant::now();
        let result = match &mut self.handle {
            Handle::Pooled(lease) => lease.run(query).await,
            Handle::Transaction(tx) => T::fetch(tx, query).await,
        };
        self.finish_mapped(sql, started, result, map)
    }

    /// The one row of a statement that commits by itself (autocommit, on a pooled connection):
    /// a connection lost while it ran leaves its outcome unknown, [`Error::AmbiguousCommit`].
    pub(crate) async fn fetch_one_autocommit(
        &mut self,
        sql: &str,
        query: PgQuery<'_>,
    ) -> Result<PgRow> {
        self.run_mapped::<Option<PgRow>>(sql, query, map_commit_error)
            .await?
            .ok_or_else(|| map_error(sqlx::Error::RowNotFound))
    }

    pub(crate) async fn fetch_all(&mut self, sql: &str, query: PgQuery<'_>) -> Result<Vec<PgRow>> {
        self.run(sql, query).await
    }

    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &str,
        query: PgQuery<'_>,
    ) -> Result<Option<PgRow>> {
        self.run(sql, query).await
    }

    /// The one row `query` returns; a statement that returns none is a backend error.
    pub(crate) async fn fetch_one(&mut self, sql: &str, query: PgQuery<'_>) -> Result<PgRow> {
        self.run::<Option<PgRow>>(sql, query)
            .await?
            .ok_or_else(|| map_error(sqlx::Error::RowNotFound))
    }

    pub(crate) async fn execute(&mut self, sql: &str, query: PgQuery<'_>) -> Result<PgQueryResult> {
        self.run(sql, query).await
    }

    /// Runs `sql`, a `COPY … FROM STDIN` statement, sending `data` as its input; how many rows
    /// it copied.
    pub(crate) async fn copy_in(&mut self, sql: &str, data: &[u8]) -> Result<u64> {
        self.check_open()?;
        let started = Instant::now();
        let result = copy_in(self.conn(), sql, data).await;
        self.finish(sql, started, result)
    }

    /// Opens the savepoint `name` (a name of ours, never user text).
    pub(crate) async fn open_savepoint(&mut self, name: &str) -> Result<()> {
        self.control(format!("SAVEPOINT {name}")).await
    }

    /// Keeps what was done since the savepoint `name` and closes it.
    pub(crate) async fn release_savepoint(&mut self, name: &str) -> Result<()> {
        self.control(format!("RELEASE SAVEPOINT {name}")).await
    }

    /// Undoes what was done since the savepoint `name` and closes it; this ends the aborted
    /// state a failed statement put the transaction in.
    pub(crate) async fn roll_back_to_savepoint(&mut self, name: &str) -> Result<()> {
        self.control(format!(
            "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
        ))
        .await?;
        self.aborted = false;
        Ok(())
    }

    /// Runs a statement we generate ourselves (savepoint commands) with the simple protocol.
    async fn control(&mut self, sql: String) -> Result<()> {
        self.check_open()?;
        let started = Instant::now();
        let result = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(self.conn())
            .await;
        self.finish(&sql, started, result).map(drop)
    }
}

/// `COPY … FROM STDIN` on `conn`, with `data` as its input.
async fn copy_in(conn: &mut PgConnection, sql: &str, data: &[u8]) -> sqlx::Result<u64> {
    let mut copy = conn.copy_in_raw(sql).await?;
    copy.send(data).await?;
    copy.finish().await
}

/// Reads on a pooled connection, outside any transaction.
#[derive(Debug)]
pub(crate) struct PgReadSession {
    session: Session,
}

impl PgReadSession {
    pub(crate) fn new(session: Session) -> Self {
        Self { session }
    }
}

impl ReadSession for PgReadSession {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Postgres
    }

    fn readers(&mut self) -> &mut dyn stockroom_core::Readers {
        &mut self.session
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        Some(self)
    }
}

/// One transaction at PostgreSQL's READ COMMITTED isolation. Writes that must not race take row
/// locks (`lock` is `SELECT … FOR UPDATE` in id order; `adjust_stock` is one conditional
/// `UPDATE`), so a transfer never needs a retry for a serialization failure. Dropped without a
/// commit, sqlx queues a `ROLLBACK` that runs before the connection is used again.
#[derive(Debug)]
pub(crate) struct PgUnitOfWork {
    session: Session,
    savepoints: Savepoints,
    /// Whether the transaction's connection was handed to the application ([`connection`]):
    /// its SQL may have aborted or ended the transaction without this unit of work seeing it,
    /// so `commit` checks the transaction first.
    lent: bool,
}

/// The savepoint `commit` opens to check a transaction the application's SQL ran in.
const COMMIT_CHECK: &str = "SAVEPOINT stockroom_commit_check";

impl PgUnitOfWork {
    pub(crate) fn new(
        tx: Transaction<'static, Postgres>,
        connections: Arc<Connections>,
        plans: Arc<Plans>,
        log: StatementLog,
        publishing: Publishing,
    ) -> Self {
        Self {
            session: Session {
                handle: Handle::Transaction(tx),
                connections,
                plans,
                log,
                aborted: false,
                inserted: Inserted::default(),
                publishing,
            },
            savepoints: Savepoints::default(),
            lent: false,
        }
    }

    fn lend(&mut self) -> Result<&mut PgConnection> {
        if self.session.connections.is_closed() {
            return Err(store_closed());
        }
        self.lent = true;
        Ok(self.session.conn())
    }
}

/// The connection of `uow`'s transaction, for the application's own SQL in the same
/// transaction as Stockroom's writes: they commit or roll back together.
///
/// `uow` is a unit of work of a [`PostgresStore`](crate::PostgresStore), directly or through a
/// wrapper that forwards to it, such as [`stockroom_core::traced`]. Any other backend's is
/// [`Error::Unsupported`]; after [`Store::close`](stockroom_core::Store::close),
/// [`Error::Unavailable`].
///
/// Leave the transaction to the unit of work: do not `COMMIT`, `ROLLBACK` or `BEGIN` on the
/// connection (use savepoints, or sqlx's nested `begin`, for a part that may fail). Because
/// PostgreSQL aborts a transaction in which a statement failed (and then turns `COMMIT` into a
/// silent rollback), and because the application's SQL might end the transaction itself, a unit
/// of work whose connection was handed out checks its transaction before it commits (one more
/// round trip, for such units of work only): if a statement failed and was not rolled back to a
/// savepoint, or the transaction was ended on the connection, it rolls back and `commit`
/// returns [`Error::Backend`], never success. A transaction the application ended and then
/// began anew on the connection cannot be told from the original one: don't.
///
/// ```no_run
/// # async fn demo(store: &stockroom_postgres::PostgresStore, new: stockroom_core::NewProduct) -> stockroom_core::Result<()> {
/// use stockroom_core::Store;
///
/// let mut uow = store.begin().await?;
/// let product = uow.products().create(new).await?;
/// let conn = stockroom_postgres::connection(uow.as_mut())?;
/// sqlx::query("INSERT INTO audit (product_id, action) VALUES ($1, 'created')")
///     .bind(product.id.as_uuid())
///     .execute(&mut *conn)
///     .await
///     .map_err(stockroom_postgres::classify)?; // a deadlock is Transient, a taken key Conflict
/// uow.commit().await?; // the product and its audit row, or neither
/// # Ok(()) }
/// ```
pub fn connection<'u>(uow: &'u mut (dyn UnitOfWork + '_)) -> Result<&'u mut PgConnection> {
    stockroom_core::adapter::native_unit_of_work::<PgUnitOfWork>(
        uow,
        "stockroom_postgres::connection",
    )?
    .lend()
}

/// The connection of the read session `session`, for the application's own reads (its own
/// tables, a report) on one of the store's connections, outside any transaction and without a
/// unit of work: each statement runs on its own, as Stockroom's reads do. Map its errors with
/// [`classify`](crate::classify).
///
/// The session is the store's [`read`](stockroom_core::Store::read) (a replica's connection
/// when replicas are configured) or [`read_primary`](stockroom_core::Store::read_primary),
/// directly or through a wrapper that forwards to it, such as [`stockroom_core::traced`]. Any
/// other backend's session is [`Error::Unsupported`]; after
/// [`Store::close`](stockroom_core::Store::close), [`Error::Unavailable`].
///
/// Leave the connection as you found it: no `BEGIN`, `SET` or `LISTEN` (use a unit of work and
/// [`connection`] for a transaction). When the session is dropped the connection goes back to
/// sqlx's pool, which checks it before it serves again.
///
/// ```no_run
/// # async fn demo(store: &stockroom_postgres::PostgresStore) -> stockroom_core::Result<()> {
/// use stockroom_core::Store;
///
/// let mut session = store.read().await?;
/// let conn = stockroom_postgres::read_connection(session.as_mut())?;
/// let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
///     .fetch_one(&mut *conn)
///     .await
///     .map_err(stockroom_postgres::classify)?;
/// # let _ = orders;
/// # Ok(()) }
/// ```
pub fn read_connection<'s>(
    session: &'s mut (dyn ReadSession + '_),
) -> Result<&'s mut PgConnection> {
    stockroom_core::adapter::native_read_session::<PgReadSession>(
        session,
        "stockroom_postgres::read_connection",
    )?
    .session
    .lend()
}

/// Why a transaction whose connection was lent cannot be committed, from the error of the
/// [`COMMIT_CHECK`] savepoint: 25P02 when a statement failed and PostgreSQL aborted the
/// transaction, 25P01 when no transaction is open any more (the application's SQL ended it).
fn check_failure(error: sqlx::Error) -> Error {
    let code = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        Some("25P02") => Error::backend(
            "commit refused: a statement run on the unit of work's connection failed, so \
             PostgreSQL aborted the transaction; it was rolled back",
            error,
        ),
        Some("25P01") => Error::backend(
            "commit refused: the transaction was already ended (COMMIT or ROLLBACK) by SQL run \
             on the unit of work's connection; what it held was committed or rolled back then, \
             not by this commit",
            error,
        ),
        _ => map_error(error),
    }
}

/// Rolls `tx` back after its commit was refused, and returns `refusal` (or the rollback's
/// error, which says more: the connection is gone).
async fn refuse(
    tx: Transaction<'static, Postgres>,
    log: StatementLog,
    refusal: Error,
) -> Result<()> {
    let started = Instant::now();
    let result = tx.rollback().await;
    log.record("ROLLBACK", started.elapsed(), result.is_err());
    result.map_err(map_error)?;
    Err(refusal)
}

#[async_trait]
impl UnitOfWork for PgUnitOfWork {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Postgres
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        Some(self)
    }

    fn repositories(&mut self) -> &mut dyn stockroom_core::Repositories {
        &mut self.session
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        let savepoint = self.savepoints.open();
        // The name is ours (`sp<depth>`), never user text.
        match self.session.open_savepoint(&savepoint.name()).await {
            Ok(()) => Ok(savepoint),
            Err(e) => {
                self.savepoints.close(&savepoint)?;
                Err(e)
            }
        }
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        self.session.roll_back_to_savepoint(&savepoint.name()).await
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        self.session.release_savepoint(&savepoint.name()).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let PgUnitOfWork { session, lent, .. } = *self;
        let Session {
            handle,
            connections,
            log,
            aborted,
            inserted,
            ..
        } = session;
        let Handle::Transaction(mut tx) = handle else {
            unreachable!("a unit of work always holds a transaction")
        };
        if connections.is_closed() {
            // The transaction is rolled back with the connection.
            drop(tx);
            return Err(store_closed());
        }
        if aborted {
            // PostgreSQL answers COMMIT of a failed transaction with a rollback; say so.
            let refusal = Error::backend_message("commit refused: a statement of this unit of work failed, so PostgreSQL aborted the transaction; it was rolled back" .to_owned());
            return refuse(tx, log, refusal).await;
        }
        if lent {
            // The application's SQL may have aborted or ended the transaction unseen. A
            // savepoint is the probe that tells both, from the server: it fails with 25P02 in
            // an aborted transaction and with 25P01 outside a transaction block, and costs
            // nothing else (COMMIT releases it).
            let started = Instant::now();
            let checked = sqlx::raw_sql(COMMIT_CHECK).execute(&mut *tx).await;
            log.record(COMMIT_CHECK, started.elapsed(), checked.is_err());
            if let Err(e) = checked {
                return refuse(tx, log, check_failure(e)).await;
            }
        }
        let started = Instant::now();
        let result = tx.commit().await;
        log.record("COMMIT", started.elapsed(), result.is_err());
        result.map_err(map_commit_error)?;
        connections.committed(&inserted);
        Ok(())
    }

    /// One statement in this transaction (see `Session::move_stock`); the unit of work's lock
    /// timeout applies already.
    async fn move_stock(&mut self, movement: &NewStockMovement) -> Result<StockMoved> {
        let row = movement.clone().into_entity(stockroom_core::time::now());
        self.session.move_stock(row, None).await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let Session { handle, log, .. } = self.session;
        let Handle::Transaction(tx) = handle else {
            unreachable!("a unit of work always holds a transaction")
        };
        let started = Instant::now();
        let result = tx.rollback().await;
        log.record("ROLLBACK", started.elapsed(), result.is_err());
        result.map_err(map_error)
    }
}

//! Sessions: a read session on a pooled connection in autocommit, and a unit of work on a
//! connection in a transaction. Every repository port is implemented on [`Session`] (the
//! records in `records`, the ledger in `ledger`); the two session types hand it out as the port
//! each one offers.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::mysql::{MySqlArguments, MySqlQueryResult, MySqlRow, MySqlTransactionManager};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::SqlSafeStr as _;
use sqlx::{Executor as _, MySql, MySqlConnection};
use sqlx_core::transaction::TransactionManager as _;
use stockroom_core::adapter::Savepoints;
use stockroom_core::{Constraint, EntityKind, Error, ReadSession, Result, Savepoint, UnitOfWork};

use crate::error::{map_commit_error, map_error, rolls_back_transaction};
use crate::plans::Plans;
use crate::store::Shared;

/// A statement with its arguments, as sqlx's MySQL driver runs it.
pub(crate) type MyQuery<'q> = Query<'q, MySql, MySqlArguments>;

/// The error of every call on a store after [`Store::close`](stockroom_core::Store::close).
pub(crate) fn store_closed() -> Error {
    Error::unavailable("the store is closed")
}

/// Where statements are logged: all of them at `debug` with `log_statements`, slow ones at
/// `warn`, under the target `stockroom::sql`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatementLog {
    echo_all: bool,
    slow: Duration,
}

impl StatementLog {
    pub(crate) fn new(echo_all: bool, slow: Duration) -> Self {
        Self { echo_all, slow }
    }

    pub(crate) fn record(&self, sql: &str, elapsed: Duration, failed: bool) {
        if elapsed >= self.slow {
            tracing::warn!(target: "stockroom::sql", elapsed_ms = elapsed.as_millis() as u64, failed, "slow statement: {sql}");
        } else if self.echo_all {
            tracing::debug!(target: "stockroom::sql", elapsed_us = elapsed.as_micros() as u64, failed, "{sql}");
        }
    }
}

/// Results a statement can be read as.
pub(crate) trait Fetch: Sized {
    fn fetch<'c>(
        conn: &'c mut MySqlConnection,
        query: MyQuery<'c>,
    ) -> futures_util::future::BoxFuture<'c, sqlx::Result<Self>>;
}

impl Fetch for Vec<MySqlRow> {
    fn fetch<'c>(
        conn: &'c mut MySqlConnection,
        query: MyQuery<'c>,
    ) -> futures_util::future::BoxFuture<'c, sqlx::Result<Self>> {
        Box::pin(query.fetch_all(conn))
    }
}

impl Fetch for Option<MySqlRow> {
    fn fetch<'c>(
        conn: &'c mut MySqlConnection,
        query: MyQuery<'c>,
    ) -> futures_util::future::BoxFuture<'c, sqlx::Result<Self>> {
        Box::pin(query.fetch_optional(conn))
    }
}

impl Fetch for MySqlQueryResult {
    fn fetch<'c>(
        conn: &'c mut MySqlConnection,
        query: MyQuery<'c>,
    ) -> futures_util::future::BoxFuture<'c, sqlx::Result<Self>> {
        Box::pin(query.execute(conn))
    }
}

/// The connection of a read session or unit of work. Every repository trait is implemented on
/// it; the sessions hand it out as the trait each one offers.
pub(crate) struct Session {
    /// The connection; taken only when the session ends (commit, rollback, drop).
    conn: Option<PoolConnection<MySql>>,
    shared: Arc<Shared>,
    /// Whether a transaction is open on the connection (a unit of work's), else autocommit.
    in_transaction: bool,
    /// Whether a statement was sent and its answer not read yet: a session dropped then (its
    /// future dropped at that await) closes its connection rather than give it back to the
    /// pool, which could not tell what the connection is in the middle of.
    in_flight: bool,
    /// Why the transaction can no longer commit, once it cannot: the server rolled it back (a
    /// deadlock, or a Galera certification failure: MariaDB then runs the next statements in
    /// autocommit, so none may be sent), or its connection was lost.
    broken: Option<Broken>,
    /// Whether the connection was lent to the application ([`connection`]) since the server was
    /// last asked whether the transaction is still open: the next statement of Stockroom's, or
    /// the commit, asks first.
    lent_unchecked: bool,
}

/// Why a transaction can no longer commit.
#[derive(Debug, Clone)]
enum Broken {
    /// The server rolled it back (the error's text).
    RolledBack(String),
    /// Its connection was lost (the error's text).
    Lost(String),
    /// The store was closed.
    Closed,
    /// The application's SQL on the lent connection ended it.
    Ended,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field(
                "kind",
                &if self.in_transaction {
                    "transaction"
                } else {
                    "autocommit"
                },
            )
            .field("broken", &self.broken.is_some())
            .finish()
    }
}

impl Session {
    /// A session on a pooled connection, outside any transaction.
    pub(crate) fn pooled(conn: PoolConnection<MySql>, shared: Arc<Shared>) -> Self {
        Self {
            conn: Some(conn),
            shared,
            in_transaction: false,
            in_flight: false,
            broken: None,
            lent_unchecked: false,
        }
    }

    /// Begins a transaction on the session's connection with `statement` (what sets the
    /// transaction's characteristics, then `START TRANSACTION`). Dropped midway, the session
    /// closes its connection (the server then rolls back whatever began).
    pub(crate) async fn start_transaction(&mut self, statement: &str) -> Result<()> {
        self.check_usable()?;
        let started = Instant::now();
        self.in_flight = true;
        // Through sqlx's transaction manager, so that the connection's transaction depth is 1:
        // the application's `begin()` on the lent connection is then a SAVEPOINT, not a `BEGIN`
        // (which on MariaDB commits the open transaction first).
        let sql = sqlx::AssertSqlSafe(statement.to_owned()).into_sql_str();
        let result = MySqlTransactionManager::begin(self.conn(), Some(sql)).await;
        self.in_flight = false;
        self.finish(statement, started, result)?;
        self.in_transaction = true;
        Ok(())
    }

    /// The statements of the store's entities, and their declarations.
    pub(crate) fn plans(&self) -> Arc<Plans> {
        Arc::clone(&self.shared.plans)
    }

    /// Whether Stockroom's own events are written.
    pub(crate) fn own_events(&self) -> bool {
        self.shared.own_events
    }

    /// Whether the session is a unit of work's transaction (else a pooled connection in
    /// autocommit).
    pub(crate) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    fn conn(&mut self) -> &mut MySqlConnection {
        self.conn
            .as_mut()
            .expect("a session holds its connection until it ends")
    }

    /// The connection, for the application's own statements.
    fn lend(&mut self) -> Result<&mut MySqlConnection> {
        self.check_usable()?;
        if self.in_transaction {
            self.lent_unchecked = true;
        }
        Ok(self.conn())
    }

    /// After a lend, asks the server whether the transaction is still open; marks the session
    /// broken when it is not (nothing more of the unit of work may run: it would autocommit).
    async fn check_still_open(&mut self) -> Result<()> {
        if !self.lent_unchecked {
            return Ok(());
        }
        self.lent_unchecked = false;
        const QUERY: &str = "SELECT CAST(@@in_transaction AS SIGNED)";
        let started = Instant::now();
        self.in_flight = true;
        let result = sqlx::query_scalar::<_, i64>(QUERY)
            .fetch_one(self.conn())
            .await;
        self.in_flight = false;
        let open = self.finish(QUERY, started, result)?;
        if open != 1 {
            self.broken = Some(Broken::Ended);
            return Err(ended_by_the_application());
        }
        Ok(())
    }

    /// Refuses a statement after `Store::close`, or in a transaction the server rolled back.
    fn check_usable(&mut self) -> Result<()> {
        if self.shared.is_closed() {
            if self.in_transaction() && self.broken.is_none() {
                self.broken = Some(Broken::Closed);
            }
            return Err(store_closed());
        }
        match &self.broken {
            Some(why) => Err(refused(why)),
            None => Ok(()),
        }
    }

    /// Logs a statement's outcome and maps its error; an error that ended the transaction (a
    /// deadlock rolled it back, the connection was lost) marks the session broken.
    fn finish<T>(&mut self, sql: &str, started: Instant, result: sqlx::Result<T>) -> Result<T> {
        self.finish_on(None, sql, started, result)
    }

    /// [`finish`](Self::finish) for a statement that writes rows of `entity`: a duplicate
    /// primary key (which MariaDB reports as key `PRIMARY`, without the table) is a conflict on
    /// that entity's id.
    fn finish_on<T>(
        &mut self,
        entity: Option<EntityKind>,
        sql: &str,
        started: Instant,
        result: sqlx::Result<T>,
    ) -> Result<T> {
        self.shared
            .log
            .record(sql, started.elapsed(), result.is_err());
        result.map_err(|e| {
            let broken = if rolls_back_transaction(&e) {
                Some(Broken::RolledBack(e.to_string()))
            } else if crate::error::is_connection_lost(&e) {
                Some(Broken::Lost(e.to_string()))
            } else {
                None
            };
            if self.in_transaction() && self.broken.is_none() {
                self.broken = broken;
            }
            match entity {
                Some(entity) if is_duplicate_primary_key(&e) => Error::Conflict {
                    constraint: Constraint::primary_key(entity),
                },
                _ => map_error(e, &self.shared.plans.catalog),
            }
        })
    }

    /// Runs `query` (whose text is `sql`, for the log) and reads its result as `T`.
    async fn run<T: Fetch>(&mut self, sql: &str, query: MyQuery<'_>) -> Result<T> {
        self.run_on(None, sql, query).await
    }

    /// [`run`](Self::run) for a statement that writes rows of `entity` (see
    /// [`finish_on`](Self::finish_on)).
    async fn run_on<T: Fetch>(
        &mut self,
        entity: Option<EntityKind>,
        sql: &str,
        query: MyQuery<'_>,
    ) -> Result<T> {
        self.check_usable()?;
        self.check_still_open().await?;
        let query = bounded(query, self.shared.lock_wait_per_statement)?;
        let started = Instant::now();
        self.in_flight = true;
        let result = T::fetch(self.conn(), query).await;
        self.in_flight = false;
        self.finish_on(entity, sql, started, result)
    }

    /// Every row `query` returns.
    pub(crate) async fn fetch_all(
        &mut self,
        sql: &str,
        query: MyQuery<'_>,
    ) -> Result<Vec<MySqlRow>> {
        self.run(sql, query).await
    }

    /// The row `query` returns, if any.
    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &str,
        query: MyQuery<'_>,
    ) -> Result<Option<MySqlRow>> {
        self.run(sql, query).await
    }

    /// The one row `query` returns; a statement that returns none is a backend error.
    pub(crate) async fn fetch_one(&mut self, sql: &str, query: MyQuery<'_>) -> Result<MySqlRow> {
        self.run::<Option<MySqlRow>>(sql, query)
            .await?
            .ok_or_else(|| Error::backend_message(format!("no row returned by: {sql}")))
    }

    /// Runs `query`, which writes rows of `entity`, for its effect: a duplicate id is a
    /// conflict on `entity`'s primary key.
    pub(crate) async fn execute_on(
        &mut self,
        entity: EntityKind,
        sql: &str,
        query: MyQuery<'_>,
    ) -> Result<MySqlQueryResult> {
        self.run_on(Some(entity), sql, query).await
    }

    /// Runs `query` for its effect.
    pub(crate) async fn execute(
        &mut self,
        sql: &str,
        query: MyQuery<'_>,
    ) -> Result<MySqlQueryResult> {
        self.run(sql, query).await
    }

    /// Commits the session's transaction. With `check_open` (the connection was lent to the
    /// application), asks the server first whether the transaction is still open.
    pub(crate) async fn commit(mut self, check_open: bool) -> Result<()> {
        debug_assert!(self.in_transaction, "only a transaction is committed");
        if self.shared.is_closed() {
            // Dropped, the session rolls the transaction back.
            return Err(store_closed());
        }
        if let Some(why) = self.broken.take() {
            self.rollback_quietly().await;
            return Err(refused(&why));
        }
        if check_open {
            if let Err(e) = self.check_still_open().await {
                // Back to depth 0; a ROLLBACK with no transaction open is a no-op.
                self.rollback_quietly().await;
                return Err(e);
            }
        }
        let started = Instant::now();
        self.in_flight = true;
        let result = end_transaction(self.conn(), COMMIT_CHECKED).await;
        self.shared
            .log
            .record(COMMIT_CHECKED, started.elapsed(), result.is_err());
        match result {
            Ok(()) => {
                self.in_flight = false;
                self.in_transaction = false;
                Ok(())
            }
            Err(e) if rolled_back_under_us(&e) => {
                // Nothing of it committed: what ran after the silent rollback is in a
                // transaction of its own, rolled back now.
                self.in_flight = false;
                self.rollback_quietly().await;
                Err(Error::transient(
                    "the server rolled this unit of work's transaction back without saying so \
                     (a Galera node aborts a transaction that conflicts with another node's \
                     write set); nothing of it was committed; run it again",
                ))
            }
            // `in_flight` stays set: whatever the failure, the connection is closed when the
            // session drops (after a failed COMMIT nobody knows its state for sure).
            Err(e) => Err(map_commit_error(e, &self.shared.plans.catalog)),
        }
    }

    /// Rolls the session's transaction back.
    pub(crate) async fn rollback(mut self) -> Result<()> {
        let started = Instant::now();
        self.in_flight = true;
        let result = end_transaction(self.conn(), ROLLBACK_AND_RESET).await;
        self.shared
            .log
            .record(ROLLBACK_AND_RESET, started.elapsed(), result.is_err());
        match result {
            Ok(()) => {
                self.in_flight = false;
                self.in_transaction = false;
                Ok(())
            }
            Err(e) => Err(map_error(e, &self.shared.plans.catalog)),
        }
    }

    /// Rolls back after a refused commit; a failure is not reported (the refusal says more,
    /// and the connection is then closed, which rolls back too).
    async fn rollback_quietly(&mut self) {
        self.in_flight = true;
        if end_transaction(self.conn(), ROLLBACK_AND_RESET)
            .await
            .is_ok()
        {
            self.in_flight = false;
            self.in_transaction = false;
        }
    }

    /// Runs SQL text of ours (savepoint commands) with the text protocol.
    pub(crate) async fn control(&mut self, sql: String) -> Result<()> {
        self.check_usable()?;
        self.check_still_open().await?;
        let started = Instant::now();
        self.in_flight = true;
        let result = self.conn().execute(sqlx::AssertSqlSafe(sql.clone())).await;
        self.in_flight = false;
        self.finish(&sql, started, result).map(drop)
    }
}

/// How every transaction of Stockroom's begins, after its isolation level is set: with
/// autocommit off, and a row in a temporary table of the connection's own (temporary tables are
/// neither replicated by Galera nor seen by other sessions) that only this transaction holds.
///
/// Why: on a Galera node, a transaction aborted by another node's write set while the server
/// handles a statement's `PREPARE` is rolled back without any statement reporting it (seen with
/// MariaDB 10.11 and galera-4: `tests/galera.rs`,
/// `a_unit_of_work_of_several_statements_is_all_or_nothing_on_every_node`). With autocommit on,
/// the unit of work's next statements would then each commit by themselves: half a unit of
/// work applied, and the `COMMIT` answered OK. With autocommit off they open a new transaction
/// instead, which does not hold the marker row: the commit's check finds it missing and rolls
/// back ([`COMMIT_CHECKED`]).
pub(crate) const START_MARKED: &str = "SET autocommit = 0; START TRANSACTION; \
     CREATE TEMPORARY TABLE IF NOT EXISTS `stockroom_transaction` (`open` BOOLEAN NOT NULL) \
     ENGINE=InnoDB; INSERT INTO `stockroom_transaction` VALUES (TRUE)";

/// The text of a commit: the transaction's marker row checked (and taken away) by one compound
/// statement that fails with SQLSTATE 40001 when the row is gone (the transaction it was
/// written by was rolled back under the unit of work), then `COMMIT` and autocommit back on,
/// in one round trip, by the text protocol (no `PREPARE`). The server runs none of the
/// statements after one that fails.
const COMMIT_CHECKED: &str = "BEGIN NOT ATOMIC \
     IF NOT EXISTS (SELECT 1 FROM `stockroom_transaction`) THEN \
     SIGNAL SQLSTATE '40001' SET MESSAGE_TEXT = 'stockroom: the transaction was rolled back under the unit of work'; \
     END IF; DELETE FROM `stockroom_transaction`; END; COMMIT; SET autocommit = 1";

/// The text of a rollback: `ROLLBACK` and autocommit back on, in one round trip.
const ROLLBACK_AND_RESET: &str = "ROLLBACK; SET autocommit = 1";

/// Whether `e` is the commit check's refusal ([`COMMIT_CHECKED`]).
fn rolled_back_under_us(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|db| {
        db.message()
            .starts_with("stockroom: the transaction was rolled back")
    })
}

/// Ends the transaction on `conn` with `text` (ours: [`COMMIT_CHECKED`] or
/// [`ROLLBACK_AND_RESET`]), then tells sqlx's transaction manager it ended. (Its own `commit`
/// and `rollback` send one statement each; ours send two or three in one round trip. The
/// manager's `start_rollback` queues a `ROLLBACK`, a no-op by then, that goes out with the
/// connection's next command, and brings its depth back to 0.)
async fn end_transaction(conn: &mut MySqlConnection, text: &'static str) -> sqlx::Result<()> {
    conn.execute(text).await?;
    MySqlTransactionManager::start_rollback(conn);
    Ok(())
}

impl Drop for Session {
    /// A session dropped with a statement in flight closes its connection; one dropped in an
    /// open transaction (a unit of work neither committed nor rolled back) rolls it back on a
    /// task of its own before the connection goes back to the pool, and closes the connection
    /// if that cannot be done.
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut conn = Closing::new(conn);
        if self.in_flight || !self.in_transaction {
            if !self.in_flight {
                conn.keep();
            }
            return;
        }
        let shared = Arc::clone(&self.shared);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let started = Instant::now();
                let result = end_transaction(conn.connection(), ROLLBACK_AND_RESET).await;
                shared
                    .log
                    .record(ROLLBACK_AND_RESET, started.elapsed(), result.is_err());
                if result.is_ok() {
                    conn.keep();
                }
            });
        }
    }
}

/// A pooled connection closed when dropped unless [`keep`](Closing::keep) says it may go back
/// to the pool (a task that never ran, or a rollback that failed, closes it).
struct Closing(Option<PoolConnection<MySql>>);

impl Closing {
    fn new(conn: PoolConnection<MySql>) -> Self {
        Self(Some(conn))
    }

    fn connection(&mut self) -> &mut MySqlConnection {
        self.0.as_mut().expect("held until kept or dropped")
    }

    /// Gives the connection back to the pool.
    fn keep(&mut self) {
        self.0.take();
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

/// `query` with the settings it runs under, for itself alone (`SET STATEMENT … FOR …`, so that
/// nothing outlives the statement): on a pool of the application's, the store's lock wait
/// (`innodb_lock_wait_timeout`); within a deadline, the time left (`max_statement_time`: the
/// server ends the statement when it has run out, lock waits included, and it fails as
/// `Transient` with nothing applied, error 1969). Past the deadline, nothing is sent.
fn bounded(mut query: MyQuery<'_>, lock_wait: Option<u64>) -> Result<MyQuery<'_>> {
    use sqlx::Execute as _;
    let mut settings = Vec::with_capacity(2);
    if let Some(seconds) = lock_wait {
        settings.push(format!("innodb_lock_wait_timeout = {seconds}"));
    }
    if let Some(left) = stockroom_core::adapter::time_left() {
        if left < Duration::from_millis(1) {
            return Err(stockroom_core::adapter::deadline_reached(
                "a statement to be sent",
            ));
        }
        settings.push(format!("max_statement_time = {:.6}", left.as_secs_f64()));
    }
    if settings.is_empty() {
        return Ok(query);
    }
    let arguments = query
        .take_arguments()
        .map_err(|e| crate::error::decode_error(sqlx::Error::Encode(e)))?
        .unwrap_or_default();
    let sql = format!(
        "SET STATEMENT {} FOR {}",
        settings.join(", "),
        query.sql().as_str()
    );
    Ok(sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments))
}

/// Whether `e` is a duplicate entry for the key `PRIMARY` (1062, whose message names no table).
fn is_duplicate_primary_key(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| db.number() == 1062 && db.message().ends_with("for key 'PRIMARY'"))
}

/// The error of a statement refused because the transaction can no longer commit.
fn refused(why: &Broken) -> Error {
    match why {
        Broken::RolledBack(cause) => Error::transient(format!(
            "the server rolled back this unit of work's transaction ({cause}); roll it back and \
             run it again"
        )),
        Broken::Lost(cause) => Error::unavailable(format!(
            "this unit of work's connection was lost ({cause}); its transaction was rolled back"
        )),
        Broken::Closed => store_closed(),
        Broken::Ended => ended_by_the_application(),
    }
}

/// The error of a statement or commit of a unit of work whose transaction the application's
/// SQL on its lent connection ended.
fn ended_by_the_application() -> Error {
    Error::backend_message(
        "commit refused: the transaction was already ended by SQL run on the unit of work's \
         connection (a COMMIT, a ROLLBACK, a statement that commits implicitly, or a deadlock \
         that rolled it back); what it held was committed or rolled back then, and nothing of \
         this unit of work is run or committed after it",
    )
}

/// Reads on a pooled connection, outside any transaction.
#[derive(Debug)]
pub(crate) struct MariaDbReadSession {
    session: Session,
}

impl MariaDbReadSession {
    pub(crate) fn new(session: Session) -> Self {
        Self { session }
    }
}

impl ReadSession for MariaDbReadSession {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::MariaDb
    }

    fn readers(&mut self) -> &mut dyn stockroom_core::Readers {
        &mut self.session
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        Some(self)
    }
}

/// One transaction, at the isolation level of the store's options (READ COMMITTED by default).
/// Dropped without a commit, sqlx queues a `ROLLBACK` that runs before the connection is used
/// again.
#[derive(Debug)]
pub(crate) struct MariaDbUnitOfWork {
    session: Session,
    savepoints: Savepoints,
    /// Whether the transaction's connection was handed to the application ([`connection`]):
    /// its SQL may have ended the transaction without this unit of work seeing it, so `commit`
    /// checks that it is still open first.
    lent: bool,
}

impl MariaDbUnitOfWork {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            session,
            savepoints: Savepoints::default(),
            lent: false,
        }
    }

    fn lend(&mut self) -> Result<&mut MySqlConnection> {
        let conn = self.session.lend()?;
        self.lent = true;
        Ok(conn)
    }
}

/// The connection of `uow`'s transaction, for the application's own SQL in the same
/// transaction as Stockroom's writes: they commit or roll back together.
///
/// `uow` is a unit of work of a [`MariaDbStore`](crate::MariaDbStore), directly or through a
/// wrapper that forwards to it, such as [`stockroom_core::traced`]. Any other backend's is
/// [`Error::Unsupported`]; after [`Store::close`](stockroom_core::Store::close),
/// [`Error::Unavailable`].
///
/// Leave the transaction to the unit of work: no `COMMIT`, `ROLLBACK`, `START TRANSACTION`, and
/// no statement that commits implicitly (DDL); for a part that may fail, use sqlx's nested
/// `begin()` on the connection (a savepoint: the unit of work's transaction is sqlx's). A unit
/// of work whose connection was handed out asks the server (`@@in_transaction`), before
/// Stockroom's next statement or its `COMMIT`, whether the transaction is still open: if the
/// application's SQL ended it, that statement and `commit` return [`Error::Backend`], never
/// success, and nothing more of the unit of work runs (it would autocommit). A deadlock (1213)
/// in your SQL rolled the whole transaction back: return it ([`classify`](crate::classify)
/// makes it `Transient`, and the retry runner runs the unit of work again) rather than go on;
/// your own statements after it would run in autocommit.
///
/// ```no_run
/// # async fn demo(store: &stockroom_mariadb::MariaDbStore, new: stockroom_core::NewProduct) -> stockroom_core::Result<()> {
/// use stockroom_core::Store;
///
/// let mut uow = store.begin().await?;
/// let product = uow.products().create(new).await?;
/// let conn = stockroom_mariadb::connection(uow.as_mut())?;
/// sqlx::query("INSERT INTO audit (product_id, action) VALUES (?, 'created')")
///     .bind(product.id.as_uuid())
///     .execute(&mut *conn)
///     .await
///     .map_err(stockroom_mariadb::classify)?;
/// uow.commit().await?; // the product and its audit row, or neither
/// # Ok(()) }
/// ```
pub fn connection<'u>(uow: &'u mut (dyn UnitOfWork + '_)) -> Result<&'u mut MySqlConnection> {
    stockroom_core::adapter::native_unit_of_work::<MariaDbUnitOfWork>(
        uow,
        "stockroom_mariadb::connection",
    )?
    .lend()
}

/// The connection of the read session `session`, for the application's own reads on one of the
/// store's connections, outside any transaction. Leave the connection as you found it (no
/// `START TRANSACTION`, no `SET`). Map its errors with [`classify`](crate::classify).
pub fn read_connection<'s>(
    session: &'s mut (dyn ReadSession + '_),
) -> Result<&'s mut MySqlConnection> {
    stockroom_core::adapter::native_read_session::<MariaDbReadSession>(
        session,
        "stockroom_mariadb::read_connection",
    )?
    .session
    .lend()
}

#[async_trait]
impl UnitOfWork for MariaDbUnitOfWork {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::MariaDb
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
        match self
            .session
            .control(format!("SAVEPOINT {}", savepoint.name()))
            .await
        {
            Ok(()) => Ok(savepoint),
            Err(e) => {
                self.savepoints.close(&savepoint)?;
                Err(e)
            }
        }
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        let name = savepoint.name();
        self.session
            .control(format!("ROLLBACK TO SAVEPOINT {name}"))
            .await?;
        self.session
            .control(format!("RELEASE SAVEPOINT {name}"))
            .await
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        self.session
            .control(format!("RELEASE SAVEPOINT {}", savepoint.name()))
            .await
    }

    /// The core's move with both stocks changed by one statement (see `crate::moves`).
    async fn move_stock(
        &mut self,
        movement: &stockroom_core::NewStockMovement,
    ) -> Result<stockroom_core::StockMoved> {
        crate::moves::move_stock(&mut self.session, movement).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let MariaDbUnitOfWork { session, lent, .. } = *self;
        session.commit(lent).await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.session.rollback().await
    }
}

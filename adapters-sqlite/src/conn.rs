//! Connections, and where their calls run.
//!
//! A [`Conn`] owns one connection (a [`Lease`]) exclusively and runs each call inline or on
//! tokio's blocking pool, as the call's [`Cost`] and the store decide. The rules and their
//! reasons are the crate documentation's ("Where calls run" in `lib.rs`); this module is their
//! mechanics: the leases (dropping one rolls back a transaction left open), the pending
//! `BEGIN IMMEDIATE`, the busy handler switched on for a blocking call and parked after it, a
//! read that met a lock run again on the blocking pool, and the checkpoint after a commit that
//! made it due (see `hooks.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, InterruptHandle};
use stockroom_core::adapter::time_left;
use stockroom_core::{Error, Result};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};

use crate::error::{map, SqliteError};
use crate::hooks::{self, observe, Observed, WaitBounds};
use crate::sql::plan::Plans;

/// What to log of the statements a connection runs (`StoreConfig::log_statements` and
/// `StoreConfig::slow_statement_threshold`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlLog {
    pub(crate) echo: bool,
    pub(crate) slow: Duration,
}

/// A connection lent to one call, with the store's logging settings.
pub(crate) struct Db<'a> {
    conn: &'a Connection,
    log: SqlLog,
    /// On the blocking pool: set once the future that awaits the call was dropped.
    abandoned: Option<&'a AtomicBool>,
}

impl std::ops::Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Db<'_> {
    /// Fails, with nothing run, once the future that awaits this call (on the blocking pool)
    /// was dropped: checked before a statement that would make the call's work durable
    /// (`COMMIT`), so that nobody's abandoned call commits after its caller gave up on it.
    pub(crate) fn check_still_awaited(&self) -> Result<()> {
        match self.abandoned {
            Some(abandoned) if abandoned.load(Ordering::Acquire) => Err(abandoned_call()),
            _ => Ok(()),
        }
    }

    /// Runs one statement, logging it at `debug` (target `stockroom::sql`) when echo is on and
    /// at `warn` when slower than the threshold.
    pub(crate) fn observe<T>(&self, sql: &str, run: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = run();
        let elapsed = started.elapsed();
        if elapsed >= self.log.slow {
            tracing::warn!(target: "stockroom::sql", elapsed_us = elapsed.as_micros() as u64, sql, "slow statement");
        } else if self.log.echo {
            tracing::debug!(target: "stockroom::sql", elapsed_us = elapsed.as_micros() as u64, sql);
        }
        result
    }
}

/// Whether the store was closed: one flag, set by `close`, that the store, its read pool and
/// every lease read.
pub(crate) type StoreClosed = Arc<AtomicBool>;

/// The store's read connections not in use, and the rules of their reuse.
pub(crate) struct ReadPool {
    pub(crate) idle: Mutex<Vec<Idle>>,
    /// A connection given back after the store closed is closed instead.
    pub(crate) store_closed: StoreClosed,
    /// Idle read connections older than this are closed instead of reused (recycle).
    pub(crate) max_lifetime: Option<Duration>,
    /// Idle read connections beyond `keep_idle`, unused for this long, are closed.
    pub(crate) idle_timeout: Option<Duration>,
    /// How many idle read connections stay open whatever their idle time (`min_connections`).
    pub(crate) keep_idle: usize,
}

/// A read connection waiting in the pool.
pub(crate) struct Idle {
    conn: Connection,
    opened: Instant,
    idle_since: Instant,
}

impl ReadPool {
    fn expired(&self, opened: Instant) -> bool {
        self.max_lifetime.is_some_and(|max| opened.elapsed() >= max)
    }

    /// The most recently used idle connection that has not outlived `max_lifetime`; older ones
    /// are closed.
    /// How many read connections wait in the pool.
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    pub(crate) fn take_idle(&self) -> Option<(Connection, Instant)> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle { conn, opened, .. }) = idle.pop() {
            if self.expired(opened) {
                drop(conn);
                continue;
            }
            return Some((conn, opened));
        }
        None
    }

    /// Takes every idle connection out (to close them).
    pub(crate) fn drain_idle(&self) -> Vec<Idle> {
        self.idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn give_back(&self, conn: Connection, opened: Instant) {
        if !conn.is_autocommit()
            || self.expired(opened)
            || self.store_closed.load(Ordering::Acquire)
        {
            return;
        }
        let mut surplus = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                opened,
                idle_since: Instant::now(),
            });
            // The longest idle are first; close those beyond `keep_idle` idle for too long.
            if let Some(timeout) = self.idle_timeout {
                while idle.len() > self.keep_idle && idle[0].idle_since.elapsed() >= timeout {
                    surplus.push(idle.remove(0));
                }
            }
        }
        drop(surplus);
    }
}

/// The single writer connection, held for the life of a unit of work.
pub(crate) struct WriterLease {
    pub(crate) guard: OwnedMutexGuard<Option<Connection>>,
    pub(crate) store_closed: StoreClosed,
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        if let Some(conn) = self.guard.as_ref() {
            rollback_if_open(conn);
        }
        if self.store_closed.load(Ordering::Acquire) {
            // The store was closed while this unit of work ran: the writer closes with it.
            drop(self.guard.take());
        }
    }
}

/// A read connection, returned to the pool when dropped.
pub(crate) struct ReaderLease {
    pub(crate) conn: Option<Connection>,
    /// When the connection was opened (for `max_lifetime`).
    pub(crate) opened: Instant,
    pub(crate) pool: Arc<ReadPool>,
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            rollback_if_open(&conn);
            self.pool.give_back(conn, self.opened);
        }
    }
}

fn rollback_if_open(conn: &Connection) {
    if conn.is_autocommit() {
        return;
    }
    let mut rolled_back = conn.execute_batch("ROLLBACK");
    if matches!(
        &rolled_back,
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::OperationInterrupted
    ) {
        // The interrupt of an abandoned call outlived it (see `hooks::stop_running_statements`).
        crate::hooks::stop_running_statements(conn);
        rolled_back = conn.execute_batch("ROLLBACK");
    }
    if let Err(error) = rolled_back {
        tracing::warn!(%error, "sqlite: rollback of an abandoned transaction failed");
    }
}

/// One connection, exclusively owned.
pub(crate) enum Lease {
    Writer(WriterLease),
    Reader(ReaderLease),
}

impl Lease {
    fn store_closed(&self) -> bool {
        let flag = match self {
            Lease::Writer(w) => &w.store_closed,
            Lease::Reader(r) => &r.pool.store_closed,
        };
        flag.load(Ordering::Acquire)
    }

    pub(crate) fn conn(&self) -> &Connection {
        match self {
            Lease::Writer(w) => w
                .guard
                .as_ref()
                .expect("a writer lease holds an open connection"),
            Lease::Reader(r) => r
                .conn
                .as_ref()
                .expect("a reader lease holds its connection"),
        }
    }

    fn conn_mut(&mut self) -> &mut Connection {
        match self {
            Lease::Writer(w) => w
                .guard
                .as_mut()
                .expect("a writer lease holds an open connection"),
            Lease::Reader(r) => r
                .conn
                .as_mut()
                .expect("a reader lease holds its connection"),
        }
    }

    fn in_transaction(&self) -> bool {
        !self.conn().is_autocommit()
    }
}

/// How long a call may hold the thread it runs on, which decides where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// A few statements that find their rows through an index (a point read, a write by id, a
    /// stock move): a few microseconds each, less than a hand-off to another thread. Inline.
    Short,
    /// Work that grows with the data or the input (lists, counts, searches, large batches,
    /// purges, cascading deletes, a commit after any of those, the application's own SQL), or
    /// that waits for the disk (a commit with `Durability::Full`). On the blocking pool.
    Long,
}

impl Cost {
    /// The longer of the two: a call that does both.
    pub(crate) fn and(self, other: Cost) -> Self {
        if self == Cost::Long || other == Cost::Long {
            Cost::Long
        } else {
            Cost::Short
        }
    }

    /// `Short` for a batch of up to [`SHORT_BATCH`] rows or ids, `Long` beyond.
    pub(crate) fn of_batch(len: usize) -> Self {
        if len <= SHORT_BATCH {
            Cost::Short
        } else {
            Cost::Long
        }
    }
}

/// The most rows (or ids) a batch call may hold and still run inline: each is an index lookup
/// or an insert of a few microseconds.
pub(crate) const SHORT_BATCH: usize = 32;

/// How a store's connections run their calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runner {
    pub(crate) log: SqlLog,
    /// Whether short calls run inline: false for the in-memory database (see the module docs).
    pub(crate) inline: bool,
    /// How long a statement on the blocking pool waits for a lock held elsewhere: the busy
    /// timeout in effect once the connection was set up (the option, or the application's
    /// `busy_timeout` pragma).
    pub(crate) busy_timeout: Duration,
    /// Whether a commit waits for the disk (`Durability::Full`), and so runs on the blocking
    /// pool.
    pub(crate) durable_commits: bool,
    /// The WAL length, in frames, at which a commit is followed by a checkpoint on the
    /// blocking pool (the writer's `wal_autocheckpoint`, see `hooks::watch_wal`); 0 for never.
    pub(crate) checkpoint_at: u32,
}

/// Where a connection's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    /// A read connection: no transaction is expected.
    None,
    /// A unit of work whose transaction opens with this statement, run in the same call as its
    /// first statement.
    Pending(&'static str),
    /// A unit of work whose transaction is open.
    Open,
    /// A unit of work whose transaction ended under it (found in autocommit mode after a
    /// call): a `COMMIT`/`ROLLBACK` by the application, or SQLite's own rollback after an
    /// error. Nothing more runs on it.
    Ended,
}

impl Transaction {
    /// The state after a call, from whether the connection is in autocommit mode.
    fn after_call(self, autocommit: bool) -> Self {
        match self {
            Transaction::None => Transaction::None,
            _ if autocommit => Transaction::Ended,
            _ => Transaction::Open,
        }
    }
}

/// A connection owned by one session or unit of work; every method of the ports is implemented
/// on it (see `records.rs` and `sql/ledger.rs`).
pub(crate) struct Conn {
    lease: Option<Lease>,
    runner: Runner,
    /// The statements of the store's entities.
    plans: Arc<Plans>,
    transaction: Transaction,
    /// Whether a long call ran in this transaction: its commit (or a rollback to a savepoint)
    /// has that call's pages to write (or restore), so it is long too.
    ran_long: bool,
    /// Whether its writes (and the native stock moves) write Stockroom's own events to the
    /// outbox (`StoreConfig::own_events`).
    own_events: bool,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.lease {
            Some(Lease::Writer(_)) => "writer",
            Some(Lease::Reader(_)) => "reader",
            None => "lost",
        };
        f.debug_struct("Conn").field("connection", &kind).finish()
    }
}

impl Conn {
    pub(crate) fn new(lease: Lease, runner: Runner, plans: Arc<Plans>) -> Self {
        Self {
            lease: Some(lease),
            runner,
            plans,
            transaction: Transaction::None,
            ran_long: false,
            own_events: false,
        }
    }

    /// The connection, writing Stockroom's own events or not.
    pub(crate) fn with_own_events(mut self, on: bool) -> Self {
        self.own_events = on;
        self
    }

    /// Whether it writes Stockroom's own events.
    pub(crate) fn writes_own_events(&self) -> bool {
        self.own_events
    }

    /// A connection whose transaction opens with `begin` right before its first statement.
    pub(crate) fn with_pending_begin(
        lease: Lease,
        runner: Runner,
        plans: Arc<Plans>,
        begin: &'static str,
    ) -> Self {
        let mut conn = Self::new(lease, runner, plans);
        conn.transaction = Transaction::Pending(begin);
        conn
    }

    /// The statements of the store's entities.
    pub(crate) fn plans(&self) -> &Arc<Plans> {
        &self.plans
    }

    /// Fails with `Unavailable` once the store is closed (and gives up the connection, rolling
    /// back its transaction).
    pub(crate) fn check_open(&mut self) -> Result<()> {
        let closed = self.lease.as_ref().is_some_and(Lease::store_closed);
        if closed {
            self.release();
            return Err(crate::error::closed());
        }
        Ok(())
    }

    /// Whether the transaction was never opened (no statement ran yet).
    pub(crate) fn transaction_pending(&self) -> bool {
        matches!(self.transaction, Transaction::Pending(_))
    }

    /// The cost of ending the transaction with a commit: long when it waits for the disk or
    /// writes what a long call changed.
    pub(crate) fn commit_cost(&self) -> Cost {
        if self.runner.durable_commits || self.ran_long {
            Cost::Long
        } else {
            Cost::Short
        }
    }

    /// The cost of undoing the transaction's work back to a savepoint.
    pub(crate) fn undo_cost(&self) -> Cost {
        if self.ran_long {
            Cost::Long
        } else {
            Cost::Short
        }
    }

    /// Runs `work` on the connection (after the pending `BEGIN`, if any): inline when short
    /// (see the module docs), otherwise on the blocking pool.
    ///
    /// A unit of work whose transaction was found ended after an earlier call fails with
    /// [`SqliteError::TransactionEnded`] instead of running `work` outside a transaction. The
    /// call that ended it returns its own result.
    pub(crate) async fn run<T, F>(&mut self, cost: Cost, work: F) -> Result<T>
    where
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.ready_inline(cost).await? {
            let (result, observed) = self.run_inline(work);
            if observed.checkpoint_due(self.runner.checkpoint_at) {
                self.checkpoint().await;
            }
            return result;
        }
        self.run_blocking(cost, work).await
    }

    /// [`run`](Self::run) for work that only reads, and so may run twice: work run inline that
    /// met a lock held elsewhere (rare under WAL: another process recovering the WAL index
    /// after a crash) is run again on the blocking pool, where it may wait for the lock.
    pub(crate) async fn read<T, F>(&mut self, cost: Cost, work: F) -> Result<T>
    where
        F: Fn(&Db<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.ready_inline(cost).await? {
            let (result, observed) = self.run_inline(&work);
            if !observed.refused_wait {
                return result;
            }
            // Its result is "busy": run it again below, where it waits for the lock.
        }
        self.run_blocking(cost, work).await
    }

    /// Checks that a call may run, and says whether it runs inline: a short call on a store
    /// that allows it, whose pending `BEGIN IMMEDIATE` (if any) took the write lock without
    /// waiting. Another connection (another process) holding that lock sends the whole call
    /// to the blocking pool, where its `BEGIN` waits for the lock.
    async fn ready_inline(&mut self, cost: Cost) -> Result<bool> {
        self.check_open()?;
        if self.transaction == Transaction::Ended {
            return Err(SqliteError::TransactionEnded.into());
        }
        if cost == Cost::Long || !self.runner.inline {
            return Ok(false);
        }
        // An inline call does not yield; taking a unit of the task's budget makes a task
        // that runs many of them in a row yield now and then, as tokio's own resources do.
        tokio::task::coop::consume_budget().await;
        self.begin_inline()
    }

    /// Opens the pending transaction inline; `false` when the write lock is held elsewhere.
    fn begin_inline(&mut self) -> Result<bool> {
        let Transaction::Pending(sql) = self.transaction else {
            return Ok(true);
        };
        let db = Db {
            conn: self.lease()?.conn(),
            log: self.runner.log,
            abandoned: None,
        };
        match observe(|| db.observe(sql, || db.execute_batch(sql))) {
            (Ok(()), _) => {
                self.transaction = Transaction::Open;
                Ok(true)
            }
            (Err(_), seen) if seen.refused_wait => Ok(false),
            (Err(e), _) => Err(map(e)),
        }
    }

    fn lease(&self) -> Result<&Lease> {
        self.lease.as_ref().ok_or_else(lost)
    }

    /// Runs `work` here and now (its transaction, if any, already open); also says what SQLite
    /// reported meanwhile (a lock it did not wait for, a commit's WAL length).
    fn run_inline<T>(&mut self, work: impl FnOnce(&Db<'_>) -> Result<T>) -> (Result<T>, Observed) {
        let lease = match self.lease() {
            Ok(lease) => lease,
            Err(e) => return (Err(e), Observed::default()),
        };
        let db = Db {
            conn: lease.conn(),
            log: self.runner.log,
            abandoned: None,
        };
        let (result, observed) = observe(|| work(&db));
        let autocommit = db.is_autocommit();
        self.transaction = self.transaction.after_call(autocommit);
        (result, observed)
    }

    /// Checkpoints the WAL on the blocking pool, after an inline commit that made it due: a
    /// checkpoint writes and syncs pages, which can take long. The connection is held until it
    /// ends, as SQLite's automatic checkpoint holds the committing connection.
    async fn checkpoint(&mut self) {
        let _ = self
            .run_blocking(Cost::Long, |db| {
                hooks::checkpoint(db);
                Ok(())
            })
            .await;
    }

    /// Runs `work` on the blocking pool, after the pending `BEGIN` if any, its waits for a lock
    /// bounded by the busy timeout and by the deadline of the operation in progress (see
    /// `hooks::bound_waits`).
    ///
    /// If this future is dropped before the call ends, the call is abandoned: it stops waiting
    /// for a lock, runs no pending `BEGIN` nor a `COMMIT` it has not begun (see
    /// [`Db::check_still_awaited`]), and the statement it is running is interrupted
    /// (`sqlite3_interrupt`); its connection, its transaction rolled back, is freed when the
    /// call returns.
    async fn run_blocking<T, F>(&mut self, cost: Cost, work: F) -> Result<T>
    where
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let mut lease = self.lease.take().ok_or_else(lost)?;
        let runner = self.runner;
        let before = self.transaction;
        let link = Arc::new(CallLink::new(lease.conn()));
        let bounds = WaitBounds {
            busy_timeout: runner.busy_timeout,
            deadline: time_left().and_then(|left| Instant::now().checked_add(left)),
            abandoned: Arc::clone(&link.abandoned),
        };
        let call = Arc::clone(&link);
        let blocking = tokio::task::spawn_blocking(move || {
            let (after, result) =
                hooks::bound_waits(lease.conn_mut(), bounds, runner.inline, |conn| {
                    let db = Db {
                        conn,
                        log: runner.log,
                        abandoned: Some(&call.abandoned),
                    };
                    if let Err(abandoned) = db.check_still_awaited() {
                        return (before, Err(abandoned));
                    }
                    if let Transaction::Pending(sql) = before {
                        if let Err(e) = db.observe(sql, || db.execute_batch(sql)) {
                            return (before, Err(map(e))); // still to open
                        }
                    }
                    let (result, observed) = observe(|| work(&db));
                    if observed.checkpoint_due(runner.checkpoint_at) {
                        hooks::checkpoint(&db); // already off the async threads
                    }
                    (before.after_call(db.is_autocommit()), result)
                });
            // Before the connection leaves this call: from here on nothing may interrupt it.
            call.end();
            (lease, after, result)
        });
        let abandon = AbandonOnDrop(Some(link));
        let joined = blocking.await;
        abandon.defuse();
        let (lease, after, result) =
            joined.map_err(|e| Error::backend_message(format!("sqlite worker failed: {e}")))?;
        self.lease = Some(lease);
        self.transaction = after;
        self.ran_long |= cost == Cost::Long;
        result
    }

    /// Ends the connection's use: a transaction left open is rolled back on a blocking thread.
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            if lease.in_transaction() {
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        handle.spawn_blocking(move || drop(lease));
                    }
                    Err(_) => drop(lease),
                }
            }
        }
    }
}

/// The error of a call on a connection that an earlier call, dropped mid-way on the blocking
/// pool, took with it.
fn lost() -> Error {
    Error::unavailable("the connection was lost by an interrupted call")
}

/// What ties a call on the blocking pool to the future that awaits it (see
/// `Conn::run_blocking`).
struct CallLink {
    /// Set when the future is dropped before the call ended.
    abandoned: Arc<AtomicBool>,
    /// Whether the call has ended. Both sides take the lock, so that an interrupt is only ever
    /// sent while the call still holds the connection, never to a statement of its next user.
    ended: Mutex<bool>,
    interrupt: InterruptHandle,
}

impl CallLink {
    fn new(conn: &Connection) -> Self {
        Self {
            abandoned: Arc::new(AtomicBool::new(false)),
            ended: Mutex::new(false),
            interrupt: conn.get_interrupt_handle(),
        }
    }

    /// The call is done with the connection.
    fn end(&self) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// The future was dropped: unless the call has ended, it is abandoned, and the statement
    /// it runs, if any, interrupted (a statement that is about to finish may finish; one that
    /// starts afterwards is not interrupted, and the call's checks stop it instead).
    fn abandon(&self) {
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if !*ended {
            self.abandoned.store(true, Ordering::Release);
            self.interrupt.interrupt();
        }
    }
}

/// Abandons the call of its link when dropped before being defused: when the future that
/// awaits the call is dropped.
struct AbandonOnDrop(Option<Arc<CallLink>>);

impl AbandonOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(link) = self.0.take() {
            link.abandon();
        }
    }
}

/// The error of an abandoned call (which nobody sees: its future was dropped).
fn abandoned_call() -> Error {
    Error::transient("sqlite: the call was abandoned by its caller; nothing more was run")
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    /// A unit of work that wrote a searchable row and was interrupted between statements (its
    /// call abandoned) is rolled back when its connection is released, and the connection
    /// works again: FTS5's open index reader would otherwise keep the interrupt set, `ROLLBACK`
    /// included.
    #[test]
    fn an_interrupted_transaction_that_wrote_to_a_search_index_rolls_back() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id BLOB PRIMARY KEY, deleted_at INTEGER, search_text TEXT NOT NULL)",
        )
        .unwrap();
        crate::search_index::create(&conn, "t").unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (x'01', NULL, 'red cup')")
            .unwrap();
        conn.get_interrupt_handle().interrupt();
        assert!(
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .is_err(),
            "the interrupt outlives the statement it was meant for"
        );
        super::rollback_if_open(&conn);
        assert!(conn.is_autocommit(), "rolled back");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "the insert is gone");
    }

    use std::sync::{Arc, Mutex};

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;
    use crate::hooks::park;

    /// Collects the level of every `stockroom::sql` event.
    #[derive(Clone, Default)]
    struct Levels(Arc<Mutex<Vec<Level>>>);

    impl Subscriber for Levels {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if event.metadata().target() == "stockroom::sql" {
                self.0.lock().unwrap().push(*event.metadata().level());
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn levels_of(log: SqlLog) -> Vec<Level> {
        let levels = Levels::default();
        let conn = Connection::open_in_memory().unwrap();
        tracing::subscriber::with_default(levels.clone(), || {
            let db = Db {
                conn: &conn,
                log,
                abandoned: None,
            };
            db.observe("SELECT 1", || db.execute_batch("SELECT 1"))
                .unwrap();
        });
        let seen = levels.0.lock().unwrap().clone();
        seen
    }

    #[test]
    fn statements_are_echoed_and_slow_ones_warned_about() {
        let quiet = SqlLog {
            echo: false,
            slow: Duration::from_secs(3600),
        };
        assert_eq!(levels_of(quiet), Vec::<Level>::new());
        assert_eq!(
            levels_of(SqlLog {
                echo: true,
                ..quiet
            }),
            vec![Level::DEBUG]
        );
        let slow = SqlLog {
            echo: false,
            slow: Duration::ZERO,
        };
        assert_eq!(levels_of(slow), vec![Level::WARN]);
    }

    /// A read connection, parked, whose short calls run inline, on `uri`.
    fn inline_reader(uri: &str) -> Conn {
        let mut conn = Connection::open_with_flags(
            uri,
            rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        park(&mut conn).unwrap();
        let pool = Arc::new(ReadPool {
            idle: Mutex::new(Vec::new()),
            store_closed: Arc::new(AtomicBool::new(false)),
            max_lifetime: None,
            idle_timeout: None,
            keep_idle: 0,
        });
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let runner = Runner {
            log: SqlLog {
                echo: false,
                slow: Duration::from_secs(3600),
            },
            inline: true,
            busy_timeout: Duration::from_secs(30),
            durable_commits: false,
            checkpoint_at: 0,
        };
        let lease = ReaderLease {
            conn: Some(conn),
            opened: Instant::now(),
            pool,
            _permit: permit,
        };
        let plans = Plans::new(stockroom_core::schema::Catalog::new(&[]).unwrap(), &[]);
        Conn::new(Lease::Reader(lease), runner, Arc::new(plans))
    }

    /// A read run inline that meets a lock runs again on the blocking pool, where it waits for
    /// the lock. (The `memdb` VFS makes a reader meet the writer's lock; the store itself runs
    /// every call of an in-memory database on the blocking pool.) On a current-thread runtime,
    /// the writer's thread commits while the reader waits.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_that_meets_a_lock_waits_for_it_on_the_blocking_pool() {
        let uri = format!(
            "file:/stockroom-conn-{}?vfs=memdb",
            uuid::Uuid::now_v7().simple()
        );
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let writer = Connection::open_with_flags(&uri, flags).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .unwrap();
        let mut reader = inline_reader(&uri);
        let (locked, unlock) = std::sync::mpsc::channel::<()>();
        let committer = std::thread::spawn(move || {
            // Commits once the reader has met the lock (or after a while, in any case).
            let _ = unlock.recv_timeout(Duration::from_millis(200));
            writer.execute_batch("COMMIT").unwrap();
            writer
        });
        let count = reader
            .read(Cost::Short, move |db| {
                let _ = locked.send(());
                db.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .map_err(map)
            })
            .await;
        assert_eq!(count.unwrap(), 1, "the read did not wait for the commit");
        drop(committer.join().unwrap());
    }
}

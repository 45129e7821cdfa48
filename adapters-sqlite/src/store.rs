//! [`SqliteStore`]: connecting, the writer slot, the read pool, units of work.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use stockroom_core::adapter::{wait_within, Savepoints};
use stockroom_core::metrics::adapter as metrics;
use stockroom_core::outbox::{Backlog, ClaimOptions, Claimed};
use stockroom_core::schema::Catalog;
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Error, NewStockMovement, ReadSession, Result, Savepoint, StockMoved, Store, StoreConfig,
    UnitOfWork,
};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, Semaphore};

use crate::conn::{
    Conn, Cost, Lease, ReadPool, ReaderLease, Runner, SqlLog, StoreClosed, WriterLease,
};
use crate::error::{closed, map};
use crate::hooks::{park, watch_wal};
use crate::moves::{not_run, MoveQueue, Ticket};
use crate::options::{Durability, SqliteOptions};
use crate::sql::plan::Plans;
use crate::sql::{generic, ledger};

struct Inner {
    options: Arc<SqliteOptions>,
    /// The stock moves waiting for the writer (`moves.rs`).
    moves: MoveQueue<NewStockMovement>,
    writer: Arc<AsyncMutex<Option<Connection>>>,
    read_pool: Arc<ReadPool>,
    read_permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    runner: Runner,
    /// The statements of the store's entities, built once.
    plans: Arc<Plans>,
    closed: StoreClosed,
    /// The read connections and the writer as their metrics name them.
    metered: Metered,
}

/// The store's two pools as their metrics name them (see `stockroom_core::metrics`): the read
/// connections, and the writer (a pool of one).
struct Metered {
    readers: metrics::Pool,
    writer: metrics::Pool,
}

impl Metered {
    fn of(options: &SqliteOptions) -> Self {
        let file = options.location.to_string();
        let pool = |role: &str| metrics::Pool {
            system: "sqlite",
            name: format!("{file} ({role})"),
            server: String::new(),
            namespace: file.clone(),
        };
        Self {
            readers: pool("read"),
            writer: pool("writer"),
        }
    }
}

/// The SQLite backend: one writer connection that units of work take turns on (SQLite has a
/// single writer), and a pool of read connections that serve reads in parallel (WAL).
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.options.location.to_string())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `config.url` (`sqlite://path/to/file.db`, or
    /// `sqlite::memory:` / `sqlite://:memory:` for a private in-memory database) and, unless
    /// `config.run_migrations` is false, applies the embedded schema migrations.
    ///
    /// The same as [`connect_with`](Self::connect_with) the options
    /// [`SqliteOptions::from_config`] makes of `config`.
    /// A configuration that names read replicas is refused as `Unsupported`.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        stockroom_core::adapter::refuse_replicas(config, "sqlite")?;
        Self::connect_with(SqliteOptions::from_config(config)?).await
    }

    /// Opens the database `options` name, with the application's own pragmas and `on_open`
    /// hook on every connection, and, unless migrations are turned off, applies the embedded
    /// schema migrations (bookkeeping in `stockroom_migrations`; `user_version` is the
    /// application's).
    ///
    /// The application's entities ([`SqliteOptions::with_entity`]) get their tables then too:
    /// created, extended by a new nullable or defaulted field, or checked (see the crate docs,
    /// "Your own entities"). A declaration no backend can store, or one its table no longer
    /// matches, is [`Error::Schema`](stockroom_core::Error::Schema), and nothing was changed.
    ///
    /// The writer connection opens now; up to `max_read_connections` read connections open on
    /// demand. Malformed or enforced pragmas are a validation error on `pragma`.
    pub async fn connect_with(options: SqliteOptions) -> Result<Self> {
        options.validate()?;
        let catalog = Catalog::new(&options.entities)?;
        let options = Arc::new(options);
        let opening = Arc::clone(&options);
        let (writer, settled, catalog) = tokio::task::spawn_blocking(move || {
            open_writer(&opening, &catalog).map(|(writer, settled)| (writer, settled, catalog))
        })
        .await
        .map_err(worker_failed)??;
        let plans = Arc::new(Plans::new(catalog, &settled.search_indexes));
        let runner = Runner {
            log: SqlLog {
                echo: options.log_statements,
                slow: options.slow_statement_threshold,
            },
            inline: options.runs_inline(),
            busy_timeout: settled.busy_timeout,
            durable_commits: options.durability == Durability::Full,
            checkpoint_at: settled.checkpoint_at,
        };
        let closed = StoreClosed::default();
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Arc::new(AsyncMutex::new(Some(writer))),
                read_pool: Arc::new(ReadPool {
                    idle: Mutex::new(Vec::new()),
                    store_closed: Arc::clone(&closed),
                    max_lifetime: options.max_lifetime,
                    idle_timeout: options.idle_timeout,
                    keep_idle: options.idle_read_connections as usize,
                }),
                read_permits: Arc::new(Semaphore::new(options.max_read_connections as usize)),
                acquire_timeout: options.acquire_timeout,
                runner,
                plans,
                closed,
                moves: MoveQueue::default(),
                metered: Metered::of(&options),
                options,
            }),
        })
    }

    /// Opens the database file at `path` with the default options.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Self::connect_with(SqliteOptions::file(path)).await
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    pub(crate) async fn reader(&self) -> Result<Conn> {
        self.check_open()?;
        let asked = Instant::now();
        // Up to the acquire timeout, and never past the deadline of the operation in progress.
        let permit = wait_within(
            self.inner.acquire_timeout,
            Arc::clone(&self.inner.read_permits).acquire_owned(),
            || Error::unavailable("timed out waiting for a free sqlite read connection"),
            "a free sqlite read connection",
        )
        .await?
        .map_err(|_| closed())?;
        let idle = self.inner.read_pool.take_idle();
        let (conn, opened) = match idle {
            Some(c) => c,
            None => {
                let options = Arc::clone(&self.inner.options);
                let conn = tokio::task::spawn_blocking(move || open_reader(&options))
                    .await
                    .map_err(worker_failed)??;
                (conn, Instant::now())
            }
        };
        let used = self.inner.options.max_read_connections as usize
            - self.inner.read_permits.available_permits();
        let idle = self.inner.read_pool.idle_count();
        let readers = &self.inner.metered.readers;
        metrics::connection_acquired(readers, asked.elapsed(), used, idle);
        Ok(Conn::new(
            Lease::Reader(ReaderLease {
                conn: Some(conn),
                opened,
                pool: Arc::clone(&self.inner.read_pool),
                _permit: permit,
            }),
            self.inner.runner,
            Arc::clone(&self.inner.plans),
        ))
    }

    /// The writer connection, once free (waiting up to the acquire timeout, then
    /// `Unavailable`, as a pool without a free connection), with its `BEGIN IMMEDIATE` pending:
    /// it runs in the same call as the first statement.
    pub(crate) async fn writer(&self) -> Result<Conn> {
        self.check_open()?;
        let asked = Instant::now();
        // A free writer is taken without arming a timer. The lock is fair: a waiter queued
        // before keeps its turn, since `try_lock` fails while one waits.
        let guard = match Arc::clone(&self.inner.writer).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => self.wait_for_writer().await?,
        };
        metrics::connection_acquired(&self.inner.metered.writer, asked.elapsed(), 1, 0);
        if guard.is_none() {
            return Err(closed());
        }
        Ok(Conn::with_pending_begin(
            Lease::Writer(WriterLease {
                guard,
                store_closed: Arc::clone(&self.inner.closed),
            }),
            self.inner.runner,
            Arc::clone(&self.inner.plans),
            "BEGIN IMMEDIATE",
        )
        .with_own_events(self.inner.options.own_events))
    }

    /// Waits for the writer up to the acquire timeout (then `Unavailable`), and never past the
    /// deadline of the operation in progress (then `Transient`).
    async fn wait_for_writer(&self) -> Result<OwnedMutexGuard<Option<Connection>>> {
        let timeout = self.inner.acquire_timeout;
        wait_within(
            timeout,
            Arc::clone(&self.inner.writer).lock_owned(),
            || {
                Error::unavailable(format!(
                    "timed out after {timeout:?} waiting for the sqlite writer"
                ))
            },
            "the sqlite writer",
        )
        .await
    }
}

/// What the writer was left with once set up (the options, or what the application's pragmas
/// or hook set), which the store's calls keep to.
struct Settled {
    /// The busy timeout, which calls on the blocking pool restore.
    busy_timeout: Duration,
    /// `wal_autocheckpoint`, which the writer's WAL hook now enforces (0: never).
    checkpoint_at: u32,
    /// Per entity of the catalog: whether its table has a search index (`search_index.rs`).
    search_indexes: Vec<bool>,
}

/// Opens the writer and applies the migrations and the tables of `catalog`'s entities (waiting,
/// as long as the busy timeout allows, for another process that migrates the file at the same
/// time), then readies it for inline calls: parked, its automatic checkpoint taken over (see
/// `hooks::watch_wal`).
fn open_writer(options: &SqliteOptions, catalog: &Catalog) -> Result<(Connection, Settled)> {
    let mut conn = options.open(true)?;
    if options.run_migrations {
        crate::schema::migrate(&mut conn, catalog)?;
    }
    let search_indexes = crate::search_index::present(&conn, catalog).map_err(map)?;
    let busy_ms: i64 = conn
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .map_err(map)?;
    let mut checkpoint_at = 0;
    if options.runs_inline() {
        park(&mut conn)?;
        checkpoint_at = watch_wal(&conn)?;
    }
    let busy_timeout = Duration::from_millis(u64::try_from(busy_ms).unwrap_or(0));
    Ok((
        conn,
        Settled {
            busy_timeout,
            checkpoint_at,
            search_indexes,
        },
    ))
}

/// Opens a read connection, parked for inline calls.
fn open_reader(options: &SqliteOptions) -> Result<Connection> {
    let mut conn = options.open(false)?;
    if options.runs_inline() {
        park(&mut conn)?;
    }
    Ok(conn)
}

/// Withdraws a queued stock move when its caller's future is dropped before the move was
/// taken to run.
struct WithdrawOnDrop(Option<Arc<Ticket<NewStockMovement>>>);

impl WithdrawOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(ticket) = self.0.take() {
            ticket.withdraw();
        }
    }
}

fn worker_failed(e: tokio::task::JoinError) -> Error {
    Error::backend_message(format!("sqlite worker failed: {e}"))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Sqlite
    }

    /// Waits up to the acquire timeout for the writer slot (`Unavailable` after it, as a
    /// pool that has no free connection). The write transaction opens with `BEGIN IMMEDIATE`
    /// in the same call as the unit of work's first statement. A write lock held by another
    /// connection (another process) sends that call to the blocking pool, where it waits up to
    /// the busy timeout, then fails as `Transient`. Within a retried operation with a deadline,
    /// neither wait outlasts the deadline: then the answer is `Transient`, nothing applied.
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        Ok(Box::new(SqliteUnitOfWork {
            conn: self.writer().await?,
            savepoints: Savepoints::default(),
        }))
    }

    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        Ok(Box::new(SqliteReadSession {
            conn: self.reader().await?,
        }))
    }

    async fn health(&self) -> Result<()> {
        let mut conn = self.reader().await?;
        conn.read(Cost::Short, |c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(map)
        })
        .await
        .map(drop)
    }

    /// Whether the store can write now, found without waiting for the writer (a unit of work may
    /// hold it for long) or a read connection: the writer, if no unit of work holds it at this
    /// moment, must not be read-only (opened after the file lost its write permission), and a
    /// connection of the check's own, opened for it and closed after, must open the database for
    /// writing (SQLite opens it read-only when the file, its directory or the file system refuses
    /// writes) and read its schema (a damaged file or one that is no database fails here).
    ///
    /// The writer keeps the file it opened: a file made read-only under a running store is
    /// written through that writer until the store reopens it, but the check already says
    /// not-ready, as the next store on the file will not write.
    async fn readiness(&self) -> Result<()> {
        self.check_open()?;
        if let Ok(writer) = self.inner.writer.try_lock() {
            if let Some(conn) = writer.as_ref() {
                if conn.is_readonly("main").map_err(map)? {
                    return Err(read_only("the store's writer connection is read-only"));
                }
            }
        }
        let options = Arc::clone(&self.inner.options);
        tokio::task::spawn_blocking(move || probe_writable(&options.location))
            .await
            .map_err(worker_failed)?
    }

    /// The whole move in one call on the writer: `BEGIN IMMEDIATE`, the key lookup, both
    /// products, the checks, the ledger row, the stock update and `COMMIT` (or `ROLLBACK` when
    /// a rule refuses the move). Inline, unless the write lock is held by another process or
    /// commits wait for the disk.
    /// Group commit (see `moves.rs`): the move joins the queue; whichever caller gets the
    /// writer runs every move waiting in one transaction, each in a savepoint of its own, and
    /// answers each. A caller answered while it waits for the writer stops waiting.
    async fn move_stock(&self, movement: &NewStockMovement) -> Result<StockMoved> {
        let (ticket, mut answer) = self.inner.moves.join(movement.clone());
        let withdraw = WithdrawOnDrop(Some(Arc::clone(&ticket)));
        let writer = tokio::select! {
            biased;
            answered = &mut answer => {
                withdraw.defuse();
                return answered.unwrap_or_else(|_| Err(not_run("it did not run")));
            }
            writer = self.writer() => writer,
        };
        let mut conn = match writer {
            Ok(conn) => conn,
            Err(e) => {
                if ticket.withdraw() {
                    withdraw.defuse();
                    return Err(e);
                }
                // Taken by the caller that holds the writer: its answer comes.
                withdraw.defuse();
                return answer
                    .await
                    .unwrap_or_else(|_| Err(not_run("it did not run")));
            }
        };
        let batch = self.inner.moves.take(&ticket);
        withdraw.defuse();
        if batch.tickets().is_empty() {
            // Taken meanwhile by the caller before us, which answered it before it let go of
            // the writer.
            drop(conn);
            return answer
                .await
                .unwrap_or_else(|_| Err(not_run("it did not run")));
        }
        let cost = if batch.tickets().len() > 8 {
            Cost::Long
        } else {
            conn.commit_cost()
        };
        let own_events = conn.writes_own_events();
        conn.run(cost, move |c| {
            if let [alone] = batch.tickets() {
                let moved = ledger::move_stock_and_commit(c, &alone.movement, own_events);
                drop(batch);
                moved
            } else {
                ledger::move_batch_and_commit(c, batch, own_events)
            }
        })
        .await
    }

    /// One short writer transaction (`BEGIN IMMEDIATE`, taken through the writer like every
    /// write, so it waits its turn): the lanes leased by one `UPDATE … RETURNING`, their
    /// events read, `COMMIT`. The single write lock serializes claims, other processes'
    /// included.
    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed> {
        crate::outbox::claim(self, options).await
    }

    /// One statement on a read connection.
    async fn outbox_backlog(&self) -> Result<Backlog> {
        crate::outbox::backlog(self).await
    }

    /// A writer transaction of its own, on the blocking pool.
    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64> {
        crate::outbox::purge_delivered(self, before).await
    }

    async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.read_permits.close();
        let idle = self.inner.read_pool.drain_idle();
        // A unit of work still running fails on its next call (its transaction rolls back) and
        // closes the writer when it ends; otherwise the writer closes here, last, so that the
        // last connection to close checkpoints the WAL.
        let writer = Arc::clone(&self.inner.writer)
            .try_lock_owned()
            .ok()
            .and_then(|mut guard| guard.take());
        let _ = tokio::task::spawn_blocking(move || {
            drop(idle);
            drop(writer);
        })
        .await;
    }
}

/// The readiness probe of the database at `location`: the file must be one this process may
/// write, and a connection of the probe's own, opened read-write without creating anything (a
/// file deleted under the store is not quietly made anew) with a short busy timeout (in WAL
/// mode a read waits for no writer), must read the schema and not be read-only. SQLite's own
/// bookkeeping keeps the locks of the store's connections when it closes.
fn probe_writable(location: &crate::options::Location) -> Result<()> {
    use rusqlite::OpenFlags;
    const BUSY: Duration = Duration::from_millis(200);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if let crate::options::Location::File(path) = location {
        if !may_write(path) {
            return Err(read_only(
                "the database file is not writable (its permissions or attributes, or a \
                 read-only file system)",
            ));
        }
    }
    let conn = match location {
        crate::options::Location::File(path) => Connection::open_with_flags(path, flags),
        crate::options::Location::Memory(uri) => {
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
    }
    .map_err(map)?;
    conn.busy_timeout(BUSY).map_err(map)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(map)?;
    if conn.is_readonly("main").map_err(map)? {
        return Err(read_only(
            "the database file cannot be opened for writing (its permissions, or a read-only \
             file system)",
        ));
    }
    Ok(())
}

/// Whether the operating system lets this process read and write the file at `path` now:
/// `access(2)`, as SQLite's own Unix VFS asks it, which opens no descriptor of the file (closing
/// one would drop the POSIX locks of the store's connections). A connection opened now cannot
/// answer this: SQLite hands it a descriptor the process already has, opened for writing before
/// the file lost its permission. Elsewhere than Unix, the answer is "yes".
fn may_write(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use rustix::fs::{access, Access};
        access(path, Access::READ_OK | Access::WRITE_OK).is_ok()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

fn read_only(reason: &str) -> Error {
    Error::storage(
        stockroom_core::StorageFault::ReadOnly,
        format!("sqlite: {reason}"),
    )
}

/// Reads without a transaction, on a read connection of the store.
pub(crate) struct SqliteReadSession {
    pub(crate) conn: Conn,
}

impl ReadSession for SqliteReadSession {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Sqlite
    }

    fn readers(&mut self) -> &mut dyn stockroom_core::Readers {
        &mut self.conn
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        Some(self)
    }
}

/// A write transaction on the store's writer connection.
pub(crate) struct SqliteUnitOfWork {
    pub(crate) conn: Conn,
    savepoints: Savepoints,
}

#[async_trait]
impl UnitOfWork for SqliteUnitOfWork {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Sqlite
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        Some(self)
    }

    /// The move's statements in one call on the unit of work's connection; its writes (the
    /// ledger row and the stock update) are all-or-nothing within the transaction.
    async fn move_stock(&mut self, movement: &NewStockMovement) -> Result<StockMoved> {
        let movement = movement.clone();
        let own_events = self.conn.writes_own_events();
        self.conn
            .run(Cost::Short, move |c| {
                ledger::move_stock(c, &movement, own_events)
            })
            .await
    }

    fn repositories(&mut self) -> &mut dyn stockroom_core::Repositories {
        &mut self.conn
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        let savepoint = self.savepoints.open();
        let sql = format!("SAVEPOINT {}", savepoint.name());
        match self
            .conn
            .run(Cost::Short, move |c| c.execute_batch(&sql).map_err(map))
            .await
        {
            Ok(()) => Ok(savepoint),
            Err(e) => {
                let _ = self.savepoints.close(&savepoint);
                Err(e)
            }
        }
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        let name = savepoint.name();
        let sql = format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}");
        let cost = self.conn.undo_cost();
        self.conn
            .run(cost, move |c| c.execute_batch(&sql).map_err(map))
            .await
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        let sql = format!("RELEASE SAVEPOINT {}", savepoint.name());
        self.conn
            .run(Cost::Short, move |c| c.execute_batch(&sql).map_err(map))
            .await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.check_open()?;
        if self.conn.transaction_pending() {
            return Ok(()); // nothing ran: nothing to commit
        }
        let cost = self.conn.commit_cost();
        self.conn.run(cost, generic::commit).await
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.conn.check_open()?;
        if self.conn.transaction_pending() {
            return Ok(());
        }
        self.conn.run(Cost::Short, generic::rollback).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes a test's database file and its WAL and shared-memory files.
    fn remove_database(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.to_owned().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    /// A panic in the application's closure of `with_connection` (which runs on the blocking
    /// pool with the busy timeout on) still parks the writer again: its next inline call must
    /// not sleep in the busy handler on a runtime worker. Parked, a statement that meets a lock
    /// held elsewhere fails at once and says it refused to wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_with_connection_leaves_the_writer_parked() {
        let path = std::env::temp_dir().join(format!(
            "stockroom-panic-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let options = SqliteOptions::file(&path).with_busy_timeout(Duration::from_millis(500));
        let store = SqliteStore::connect_with(options).await.unwrap();
        let mut uow = store.begin().await.unwrap();
        let panicked =
            crate::with_connection(uow.as_mut(), |_| -> () { panic!("the application's bug") })
                .await;
        assert!(
            matches!(panicked, Err(Error::Backend { .. })),
            "{panicked:?}"
        );
        drop(uow);

        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let writer = store.inner.writer.try_lock().expect("the writer is free");
        let writer = writer.as_ref().expect("the writer is open");
        let (begun, seen) = crate::hooks::observe(|| writer.execute_batch("BEGIN IMMEDIATE"));
        assert!(begun.is_err(), "BEGIN IMMEDIATE beside another writer");
        assert!(
            seen.refused_wait,
            "the writer waited for the lock: it was left with its busy timeout"
        );
        holder.execute_batch("ROLLBACK").unwrap();
        drop(holder);
        store.close().await;
        remove_database(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_readers_beyond_min_connections_close_after_the_idle_timeout() {
        let path = std::env::temp_dir().join(format!(
            "stockroom-idle-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let mut config =
            StoreConfig::new(format!("sqlite://{}", path.display())).with_min_connections(1);
        config.idle_timeout = Some(Duration::from_millis(20));
        let store = SqliteStore::connect(&config).await.unwrap();
        let sessions = [
            store.reader().await.unwrap(),
            store.reader().await.unwrap(),
            store.reader().await.unwrap(),
        ];
        drop(sessions);
        assert_eq!(store.inner.read_pool.idle_count(), 3);
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(store.reader().await.unwrap());
        // The reused one went back; the two idle past the timeout beyond min_connections were closed.
        assert_eq!(store.inner.read_pool.idle_count(), 1);
        store.close().await;
        assert_eq!(store.inner.read_pool.idle_count(), 0);
        remove_database(&path);
    }
}

//! [`SqliteStore`]: connecting, the writer slot, the read pool, units of work.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use stockroom_core::{
    CategoryReader, CategoryRepository, Durability, Error, ProductReader, ProductRepository,
    ReadSession, Result, ReviewReader, ReviewRepository, Savepoint, Savepoints,
    StockMovementReader, StockMovementRepository, Store, StoreConfig, UnitOfWork, UserReader,
    UserRepository,
};
use tokio::sync::Semaphore;

use crate::conn::{Conn, Lease, ReaderLease, Shared, SqlLog, WriterLease};
use crate::error::{closed, map};

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    File(PathBuf),
    /// A private in-memory database shared by the store's connections (SQLite's `memdb` VFS).
    Memory(String),
}

impl Location {
    fn parse(url: &str) -> Result<Self> {
        let bad = || {
            Error::validation(
                "url",
                stockroom_core::Rule::Malformed {
                    expected: "sqlite://path/to/file.db, sqlite::memory: or sqlite://:memory:",
                },
            )
        };
        let rest = if let Some(rest) = url.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            rest
        } else {
            return Err(bad());
        };
        if rest == ":memory:" {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!(
                "file:/stockroom-{}-{n}-{}?vfs=memdb",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            );
            return Ok(Location::Memory(name));
        }
        if rest.is_empty() || rest.contains('\0') || rest.contains('?') {
            return Err(bad());
        }
        Ok(Location::File(PathBuf::from(rest)))
    }
}

/// The connection settings every connection gets.
#[derive(Debug, Clone)]
struct Settings {
    location: Location,
    busy_timeout: Duration,
    durability: Durability,
}

impl Settings {
    fn open(&self, writer: bool) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &self.location {
            Location::File(path) => Connection::open_with_flags(path, flags),
            Location::Memory(uri) => Connection::open_with_flags(uri, flags),
        }
        .map_err(map)?;
        conn.busy_timeout(self.busy_timeout).map_err(map)?;
        if writer {
            // WAL is persistent in the file; the memdb VFS has no WAL and keeps its own mode.
            let _mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(map)?;
        }
        let synchronous = match self.durability {
            Durability::Full => "FULL",
            _ => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;{}",
            if writer {
                ""
            } else {
                " PRAGMA query_only = ON;"
            }
        ))
        .map_err(map)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

struct Inner {
    settings: Settings,
    url: String,
    writer: Arc<tokio::sync::Mutex<Option<Connection>>>,
    readers: Arc<Shared>,
    read_permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    log: SqlLog,
    closed: AtomicBool,
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
            .field("url", &self.inner.url)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `config.url` (`sqlite://path/to/file.db`, or
    /// `sqlite::memory:` / `sqlite://:memory:` for a private in-memory database) and, unless
    /// `config.run_migrations` is false, applies the embedded schema migrations.
    ///
    /// Connections use WAL, `synchronous=NORMAL` (`FULL` with [`Durability::Full`]),
    /// `foreign_keys=ON` and `config.busy_timeout`. Up to `config.max_connections()` read
    /// connections are opened on demand.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        let settings = Settings {
            location: Location::parse(&config.url)?,
            busy_timeout: config.busy_timeout,
            durability: config.durability,
        };
        let run_migrations = config.run_migrations;
        let opening = settings.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let mut conn = opening.open(true)?;
            if run_migrations {
                crate::schema::migrate(&mut conn)?;
            }
            Ok(conn)
        })
        .await
        .map_err(worker_failed)??;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                url: config.redacted_url(),
                writer: Arc::new(tokio::sync::Mutex::new(Some(writer))),
                readers: Arc::new(Shared {
                    idle: Mutex::new(Vec::new()),
                    closed: AtomicBool::new(false),
                    max_lifetime: config.max_lifetime,
                    idle_timeout: config.idle_timeout,
                    keep_idle: config.pool_size as usize,
                }),
                read_permits: Arc::new(Semaphore::new(config.max_connections() as usize)),
                acquire_timeout: config.acquire_timeout,
                log: SqlLog {
                    echo: config.log_statements,
                    slow: config.slow_statement_threshold,
                },
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Opens `sqlite://<path>` with the default configuration.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path: PathBuf = path.into();
        Self::connect(&StoreConfig::new(format!("sqlite://{}", path.display()))).await
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    async fn reader(&self) -> Result<Conn> {
        self.check_open()?;
        let permit = tokio::time::timeout(
            self.inner.acquire_timeout,
            Arc::clone(&self.inner.read_permits).acquire_owned(),
        )
        .await
        .map_err(|_| Error::Unavailable {
            reason: "timed out waiting for a free sqlite read connection".to_owned(),
        })?
        .map_err(|_| closed())?;
        let idle = self.inner.readers.take_idle();
        let (conn, born) = match idle {
            Some(c) => c,
            None => {
                let settings = self.inner.settings.clone();
                let conn = tokio::task::spawn_blocking(move || settings.open(false))
                    .await
                    .map_err(worker_failed)??;
                (conn, Instant::now())
            }
        };
        Ok(Conn::new(
            Lease::Reader(ReaderLease {
                conn: Some(conn),
                born,
                pool: Arc::clone(&self.inner.readers),
                _permit: permit,
            }),
            self.inner.log,
        ))
    }
}

fn worker_failed(e: tokio::task::JoinError) -> Error {
    Error::Backend {
        message: format!("sqlite worker failed: {e}"),
        source: None,
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// Waits up to the busy timeout for the writer slot (`Transient` after it). The write
    /// transaction opens with `BEGIN IMMEDIATE` in the same blocking call as the unit of work's
    /// first statement (a lock held by another process then shows there, as `Transient`).
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        self.check_open()?;
        let guard = tokio::time::timeout(
            self.inner.settings.busy_timeout,
            Arc::clone(&self.inner.writer).lock_owned(),
        )
        .await
        .map_err(|_| Error::Transient {
            reason: "timed out waiting for the sqlite writer".to_owned(),
        })?;
        if guard.is_none() {
            return Err(closed());
        }
        let conn = Conn::with_pending_begin(
            Lease::Writer(WriterLease {
                guard,
                shared: Arc::clone(&self.inner.readers),
            }),
            self.inner.log,
            "BEGIN IMMEDIATE",
        );
        Ok(Box::new(SqliteUnitOfWork {
            conn,
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
        conn.run(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(map)
        })
        .await
        .map(drop)
    }

    async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.readers.closed.store(true, Ordering::Release);
        self.inner.read_permits.close();
        let idle = self.inner.readers.drain_idle();
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

/// Reads without a transaction, on a read connection of the store.
struct SqliteReadSession {
    conn: Conn,
}

impl ReadSession for SqliteReadSession {
    fn products(&mut self) -> &mut dyn ProductReader {
        &mut self.conn
    }
    fn categories(&mut self) -> &mut dyn CategoryReader {
        &mut self.conn
    }
    fn users(&mut self) -> &mut dyn UserReader {
        &mut self.conn
    }
    fn reviews(&mut self) -> &mut dyn ReviewReader {
        &mut self.conn
    }
    fn movements(&mut self) -> &mut dyn StockMovementReader {
        &mut self.conn
    }
}

/// A write transaction on the store's writer connection.
struct SqliteUnitOfWork {
    conn: Conn,
    savepoints: Savepoints,
}

#[async_trait]
impl UnitOfWork for SqliteUnitOfWork {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        Some(self)
    }

    fn products(&mut self) -> &mut dyn ProductRepository {
        &mut self.conn
    }
    fn categories(&mut self) -> &mut dyn CategoryRepository {
        &mut self.conn
    }
    fn users(&mut self) -> &mut dyn UserRepository {
        &mut self.conn
    }
    fn reviews(&mut self) -> &mut dyn ReviewRepository {
        &mut self.conn
    }
    fn movements(&mut self) -> &mut dyn StockMovementRepository {
        &mut self.conn
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        let savepoint = self.savepoints.open();
        let sql = format!("SAVEPOINT {}", savepoint.name());
        match self
            .conn
            .run(move |c| c.execute_batch(&sql).map_err(map))
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
        self.conn
            .run(move |c| c.execute_batch(&sql).map_err(map))
            .await
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        let sql = format!("RELEASE SAVEPOINT {}", savepoint.name());
        self.conn
            .run(move |c| c.execute_batch(&sql).map_err(map))
            .await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.check_open()?;
        if self.conn.transaction_pending() {
            return Ok(()); // nothing ran: nothing to commit
        }
        self.conn
            .run(|c| c.execute_batch("COMMIT").map_err(map))
            .await
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.conn.check_open()?;
        if self.conn.transaction_pending() {
            return Ok(());
        }
        self.conn
            .run(|c| c.execute_batch("ROLLBACK").map_err(map))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_get_the_configured_settings() {
        let path = std::env::temp_dir().join(format!(
            "stockroom-settings-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        for (durability, synchronous) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let settings = Settings {
                location: Location::File(path.clone()),
                busy_timeout: Duration::from_millis(1234),
                durability,
            };
            for writer in [true, false] {
                let conn = settings.open(writer).unwrap();
                let pragma = |name: &str| -> i64 {
                    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                        .unwrap()
                };
                assert_eq!(pragma("synchronous"), synchronous);
                assert_eq!(pragma("foreign_keys"), 1);
                assert_eq!(pragma("busy_timeout"), 1234);
                assert_eq!(pragma("query_only"), i64::from(!writer));
                let mode: String = conn
                    .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(mode, "wal");
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_readers_beyond_the_pool_size_close_after_the_idle_timeout() {
        let path = std::env::temp_dir().join(format!(
            "stockroom-idle-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let mut config = StoreConfig::new(format!("sqlite://{}", path.display())).with_pool_size(1);
        config.idle_timeout = Some(Duration::from_millis(20));
        let store = SqliteStore::connect(&config).await.unwrap();
        let sessions = [
            store.reader().await.unwrap(),
            store.reader().await.unwrap(),
            store.reader().await.unwrap(),
        ];
        drop(sessions);
        assert_eq!(store.inner.readers.idle_count(), 3);
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(store.reader().await.unwrap());
        // The reused one went back; the two idle past the timeout beyond pool_size were closed.
        assert_eq!(store.inner.readers.idle_count(), 1);
        store.close().await;
        assert_eq!(store.inner.readers.idle_count(), 0);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    #[test]
    fn urls_name_a_file_or_memory() {
        assert_eq!(
            Location::parse("sqlite://data/shop.db").unwrap(),
            Location::File(PathBuf::from("data/shop.db"))
        );
        assert_eq!(
            Location::parse("sqlite:///tmp/shop.db").unwrap(),
            Location::File(PathBuf::from("/tmp/shop.db"))
        );
        for memory in ["sqlite::memory:", "sqlite://:memory:"] {
            assert!(
                matches!(Location::parse(memory), Ok(Location::Memory(_))),
                "{memory}"
            );
        }
        for bad in [
            "postgres://h/db",
            "sqlite://",
            "sqlite://a.db?mode=ro",
            "memory://",
        ] {
            assert!(
                matches!(
                    Location::parse(bad),
                    Err(Error::Validation { field: "url", .. })
                ),
                "{bad}"
            );
        }
    }
}

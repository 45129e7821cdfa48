//! Connections, and running work on them off the async threads.
//!
//! A [`Conn`] owns one connection (a [`Lease`]) exclusively. Each call moves the lease into a
//! blocking task, runs there and moves it back; the async threads never touch SQLite. If the
//! awaiting future is dropped mid-call, the lease is dropped on the blocking thread after the
//! work finishes, and dropping a lease rolls back any transaction left open, so a connection
//! never goes back into service with a transaction open.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use stockroom_core::{Error, Result};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};

use crate::error::SqliteError;

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
}

impl std::ops::Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Db<'_> {
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

/// What the store and its connections share: the read connections not in use, the rules of
/// their reuse, and whether the store was closed.
pub(crate) struct Shared {
    pub(crate) idle: Mutex<Vec<Idle>>,
    pub(crate) closed: AtomicBool,
    /// Idle read connections older than this are closed instead of reused (recycle).
    pub(crate) max_lifetime: Option<Duration>,
    /// Idle read connections beyond `keep_idle`, unused for this long, are closed.
    pub(crate) idle_timeout: Option<Duration>,
    /// How many idle read connections stay open whatever their idle time (`pool_size`).
    pub(crate) keep_idle: usize,
}

/// A read connection waiting in the pool.
pub(crate) struct Idle {
    conn: Connection,
    born: Instant,
    since: Instant,
}

impl Shared {
    fn expired(&self, born: Instant) -> bool {
        self.max_lifetime.is_some_and(|max| born.elapsed() >= max)
    }

    /// The most recently used idle connection that has not outlived `max_lifetime`; older ones
    /// are closed.
    pub(crate) fn take_idle(&self) -> Option<(Connection, Instant)> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle { conn, born, .. }) = idle.pop() {
            if self.expired(born) {
                drop(conn);
                continue;
            }
            return Some((conn, born));
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

    /// How many connections wait in the pool.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn give_back(&self, conn: Connection, born: Instant) {
        if !conn.is_autocommit() || self.expired(born) || self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut surplus = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                born,
                since: Instant::now(),
            });
            // The longest idle are first; close those beyond `keep_idle` idle for too long.
            if let Some(timeout) = self.idle_timeout {
                while idle.len() > self.keep_idle && idle[0].since.elapsed() >= timeout {
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
    pub(crate) shared: Arc<Shared>,
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        if let Some(conn) = self.guard.as_ref() {
            rollback_if_open(conn);
        }
        if self.shared.closed.load(Ordering::Acquire) {
            // The store was closed while this unit of work ran: the writer closes with it.
            drop(self.guard.take());
        }
    }
}

/// A read connection, returned to the pool when dropped.
pub(crate) struct ReaderLease {
    pub(crate) conn: Option<Connection>,
    pub(crate) born: Instant,
    pub(crate) pool: Arc<Shared>,
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            rollback_if_open(&conn);
            self.pool.give_back(conn, self.born);
        }
    }
}

fn rollback_if_open(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(error) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(%error, "sqlite: rollback of an abandoned transaction failed");
        }
    }
}

/// One connection, exclusively owned.
pub(crate) enum Lease {
    Writer(WriterLease),
    Reader(ReaderLease),
}

impl Lease {
    fn shared(&self) -> &Shared {
        match self {
            Lease::Writer(w) => &w.shared,
            Lease::Reader(r) => &r.pool,
        }
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

    fn in_transaction(&self) -> bool {
        !self.conn().is_autocommit()
    }
}

/// Where a connection's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    /// A read connection: no transaction is expected.
    None,
    /// A unit of work whose transaction opens with this statement, run in the same blocking
    /// call as its first statement (one thread hop less per unit of work).
    Pending(&'static str),
    /// A unit of work whose transaction is open.
    Open,
    /// A unit of work whose transaction ended under it (found in autocommit mode after a
    /// call): a `COMMIT`/`ROLLBACK` by the application, or SQLite's own rollback after an
    /// error. Nothing more runs on it.
    Ended,
}

/// A connection owned by one session or unit of work; every method of the repository ports is
/// implemented on it (see `repos.rs`).
pub(crate) struct Conn {
    lease: Option<Lease>,
    log: SqlLog,
    transaction: Transaction,
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
    pub(crate) fn new(lease: Lease, log: SqlLog) -> Self {
        Self {
            lease: Some(lease),
            log,
            transaction: Transaction::None,
        }
    }

    /// A connection whose transaction opens with `begin` right before its first statement.
    pub(crate) fn with_pending_begin(lease: Lease, log: SqlLog, begin: &'static str) -> Self {
        Self {
            lease: Some(lease),
            log,
            transaction: Transaction::Pending(begin),
        }
    }

    /// Fails with `Unavailable` once the store is closed (and gives up the connection, rolling
    /// back its transaction).
    pub(crate) fn check_open(&mut self) -> Result<()> {
        let closed = self
            .lease
            .as_ref()
            .is_some_and(|l| l.shared().closed.load(Ordering::Acquire));
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

    /// Runs `work` on the connection on a blocking thread, after the pending `BEGIN` if any.
    ///
    /// A unit of work whose transaction was found ended after an earlier call fails with
    /// [`SqliteError::TransactionEnded`] instead of running `work` outside a transaction. The
    /// call that ended it returns its own result.
    pub(crate) async fn run<T, F>(&mut self, work: F) -> Result<T>
    where
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.check_open()?;
        if self.transaction == Transaction::Ended {
            return Err(SqliteError::TransactionEnded.into());
        }
        let lease = self.lease.take().ok_or_else(|| Error::Unavailable {
            reason: "the connection was lost by an interrupted call".to_owned(),
        })?;
        let log = self.log;
        let before = self.transaction;
        let (lease, after, result) = tokio::task::spawn_blocking(move || {
            let db = Db {
                conn: lease.conn(),
                log,
            };
            if let Transaction::Pending(sql) = before {
                if let Err(e) = db.observe(sql, || db.execute_batch(sql)) {
                    return (lease, before, Err(crate::error::map(e)));
                }
            }
            let result = work(&db);
            let after = match before {
                Transaction::None => Transaction::None,
                _ if db.is_autocommit() => Transaction::Ended,
                _ => Transaction::Open,
            };
            (lease, after, result)
        })
        .await
        .map_err(|e| Error::Backend {
            message: format!("sqlite worker failed: {e}"),
            source: None,
        })?;
        self.lease = Some(lease);
        self.transaction = after;
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

impl Drop for Conn {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;

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
            let db = Db { conn: &conn, log };
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
}

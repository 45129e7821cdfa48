//! Where sessions get their connections: sqlx's pool, with a stack of connections in front of it
//! on Stockroom's own pool, and the check that a connection is alive folded into its first
//! statement.
//!
//! sqlx's pool pings every connection it takes back (a round trip, from a task of its own), and
//! its acquire and release each hand the connection between tasks: a session taken per request
//! (a read, a transfer) would cost more in the pool than in its statement. So a session that
//! ends with its connection in a known state (no statement cut short, no connection error)
//! leaves the connection on a stack of Stockroom's own, from which the next session takes it;
//! sqlx gets it back, checks it and applies its lifetime and idle limits once it has been lent
//! for [`KEEP_FOR`]. On a borrowed pool nothing is kept: the application's pool gets every
//! connection back at once.
//!
//! No ping is sent before a session either. The first round trip of a session on a connection
//! (a read session's first statement, a transfer's statement, a unit of work's `BEGIN`) is the
//! check: if it finds the connection closed by the server (with `test_before_acquire`), or
//! opened by a tokio runtime that has shut down since (always: the error comes before anything
//! is sent), the connection is dropped and the same statement is sent again on another one.
//! That is sound because of what those first statements are: `BEGIN`, reads, and the stock move,
//! which carries its ledger row's id and answers `Applied` when that row is already there (see
//! `MOVE_STOCK`), so a move that committed before its answer was lost is not applied twice.

use crate::analyze::{Analyzer, Inserted};
use std::future::Future;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::{Execute, PgConnection, PgPool, Postgres, SqlStr};

use stockroom_core::metrics::adapter as metrics;

use crate::error::{is_dead_connection, is_runtime_gone};
use crate::replicas::Reroute;
use crate::session::PgQuery;

/// How long Stockroom keeps a connection out of sqlx's pool, from when it took it: then the
/// pool gets it back (and pings it, and closes it past its `max_lifetime`).
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(1);

/// How a statement's result is read: every row, at most one, or the command's outcome.
pub(crate) trait Fetch: Sized {
    fn fetch<'c>(
        conn: &'c mut PgConnection,
        query: PgQuery<'c>,
    ) -> impl Future<Output = sqlx::Result<Self>> + Send + 'c;
}

impl Fetch for Vec<PgRow> {
    fn fetch<'c>(
        conn: &'c mut PgConnection,
        query: PgQuery<'c>,
    ) -> impl Future<Output = sqlx::Result<Self>> + Send + 'c {
        query.fetch_all(conn)
    }
}

impl Fetch for Option<PgRow> {
    fn fetch<'c>(
        conn: &'c mut PgConnection,
        query: PgQuery<'c>,
    ) -> impl Future<Output = sqlx::Result<Self>> + Send + 'c {
        query.fetch_optional(conn)
    }
}

impl Fetch for PgQueryResult {
    fn fetch<'c>(
        conn: &'c mut PgConnection,
        query: PgQuery<'c>,
    ) -> impl Future<Output = sqlx::Result<Self>> + Send + 'c {
        query.execute(conn)
    }
}

/// A connection on Stockroom's stack, and when it was taken from sqlx's pool.
struct Kept {
    conn: PoolConnection<Postgres>,
    lent_at: Instant,
}

impl Kept {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.lent_at) >= KEEP_FOR
    }
}

/// The connections of a store's sessions (see the module docs).
pub(crate) struct Connections {
    pool: PgPool,
    /// Connections sessions gave back in a known state, the latest on top.
    kept: Mutex<Vec<Kept>>,
    /// Whether connections are kept at all: on Stockroom's own pool only.
    keeps: bool,
    /// Callers waiting in sqlx's pool: while there are any, a connection given back goes to
    /// the pool, where they wait, not onto the stack.
    waiting: AtomicUsize,
    /// Retry a first statement that found its connection closed by the server.
    test_before_acquire: bool,
    /// Set by `Store::close`. The store's own flag, not the pool's: a pool the application
    /// lent stays open after Stockroom is closed.
    closed: AtomicBool,
    /// The pool as its metrics name it.
    metered: metrics::Pool,
    /// The background `ANALYZE` after a bulk insert, when on (`analyze.rs`).
    analyzer: Option<Arc<Analyzer>>,
}

impl Connections {
    /// The connections of `pool`; `keeps`: whether connections may be kept out of it (only on
    /// a pool nobody else takes connections from).
    pub(crate) fn new(pool: PgPool, keeps: bool, test_before_acquire: bool) -> Self {
        let metered = metered(&pool);
        Self {
            metered,
            pool,
            kept: Mutex::new(Vec::new()),
            keeps,
            waiting: AtomicUsize::new(0),
            test_before_acquire,
            closed: AtomicBool::new(false),
            analyzer: None,
        }
    }

    /// Analyzes a table after a unit of work bulk-inserted into it (see `analyze.rs`).
    pub(crate) fn with_analyzer(mut self) -> Self {
        self.analyzer = Some(Analyzer::new(self.pool.clone()));
        self
    }

    /// A unit of work that inserted `inserted` committed.
    pub(crate) fn committed(&self, inserted: &Inserted) {
        if let Some(analyzer) = &self.analyzer {
            if !self.is_closed() {
                analyzer.after_commit(inserted);
            }
        }
    }

    /// A connection for a session: the latest one kept, else one from sqlx's pool, unchecked
    /// (its first round trip is the check, see [`Lease::run`] and [`Connections::replaces`]).
    pub(crate) async fn lend(self: &Arc<Self>) -> sqlx::Result<Lease> {
        if self.is_closed() {
            return Err(sqlx::Error::PoolClosed);
        }
        let asked = Instant::now();
        let kept = match self.take_kept() {
            Some(kept) => kept,
            None => self.acquire().await?,
        };
        self.record_lent(asked.elapsed());
        Ok(Lease {
            conn: Some(kept.conn),
            lent_at: kept.lent_at,
            proven: false,
            unsettled: false,
            home: Arc::clone(self),
            reroute: None,
            lent: false,
        })
    }

    /// Records the wait for a connection just lent, and the pool's connections: those kept
    /// between sessions are idle, as the pool's own idle ones are.
    fn record_lent(&self, waited: Duration) {
        let kept = self.lock().len();
        let idle = self.pool.num_idle() + kept;
        let used = (self.pool.size() as usize).saturating_sub(idle);
        metrics::connection_acquired(&self.metered, waited, used, idle);
    }

    /// Whether `error`, the answer to the first round trip on a connection (the `failures`th
    /// such error in a row), means the connection was dead and another should be tried: always
    /// when its runtime has shut down (nothing was sent), and with `test_before_acquire` when
    /// the server closed it; at most once per connection the pool may hold, so a server that
    /// is down is reported, not retried forever.
    pub(crate) fn replaces(&self, error: &sqlx::Error, failures: u32) -> bool {
        failures <= self.pool.options().get_max_connections()
            && (is_runtime_gone(error) || (self.test_before_acquire && is_dead_connection(error)))
    }

    /// Marks the store closed and gives every kept connection back to the pool.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.give_back_kept();
    }

    /// Gives every kept connection back to the pool, which pings each and closes the dead ones
    /// (a replica found dead, see `crate::replicas`).
    pub(crate) fn give_back_kept(&self) {
        let kept = mem::take(&mut *self.lock());
        drop(kept);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// How many connections are kept now.
    pub(crate) fn kept(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Kept>> {
        // The stack stays consistent whatever panicked while it was held: pushes and pops only.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest kept connection still within [`KEEP_FOR`]; older ones go back to the pool.
    fn take_kept(&self) -> Option<Kept> {
        if !self.keeps {
            return None;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        let found = {
            let mut kept = self.lock();
            loop {
                match kept.pop() {
                    Some(k) if k.expired(now) => expired.push(k),
                    other => break other,
                }
            }
        };
        // Outside the lock: giving a connection back to sqlx spawns its release task.
        drop(expired);
        found
    }

    /// A connection from sqlx's pool, counted among the waiting while it is awaited.
    async fn acquire(&self) -> sqlx::Result<Kept> {
        let _waiting = Waiting::register(&self.waiting);
        // A connection kept between the check in `lend` and the registration above would
        // otherwise sit on the stack while this caller waits in the pool (see `keep`).
        if let Some(kept) = self.take_kept() {
            return Ok(kept);
        }
        let conn = self.pool.acquire().await?;
        Ok(Kept {
            conn,
            lent_at: Instant::now(),
        })
    }

    /// Keeps `conn`, given back in a known state, unless it is due back in the pool, the store
    /// is closed, or a caller waits in the pool.
    fn keep(&self, conn: PoolConnection<Postgres>, lent_at: Instant) {
        let now = Instant::now();
        let given = Kept { conn, lent_at };
        if !self.keeps || given.expired(now) {
            return;
        }
        let mut back = Vec::new();
        {
            let mut kept = self.lock();
            // Checked under the lock that `close` takes to empty the stack, so nothing is kept
            // after it.
            if self.is_closed() {
                back.push(given);
            } else {
                back.extend(kept.extract_if(.., |k| k.expired(now)));
                kept.push(given);
            }
            // Either a caller registered as waiting before this push and gets a connection
            // from the pool, or it registered after and finds this one on the stack (both
            // sides use SeqCst around the same lock).
            if self.waiting.load(Ordering::SeqCst) > 0 {
                back.extend(kept.pop());
            }
        }
        drop(back);
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        let kept = mem::take(self.kept.get_mut().unwrap_or_else(PoisonError::into_inner));
        give_back_outside_runtime(kept);
    }
}

/// Gives `kept` back to sqlx's pool, which does it from a task on the current runtime. A store
/// dropped after its runtimes (its last handle on a plain thread) has none: then a runtime is
/// made for the purpose, and its shutdown drops the tasks, closing the connections.
fn give_back_outside_runtime(kept: Vec<Kept>) {
    if kept.is_empty() || tokio::runtime::Handle::try_current().is_ok() {
        return;
    }
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => {
            let _entered = runtime.enter();
            drop(kept);
        }
        // Without a runtime sqlx cannot take them back: leave them to the process's end.
        Err(_) => mem::forget(kept),
    }
}

/// One caller waiting in sqlx's pool, for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn register(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection lent to one session; given back when dropped.
pub(crate) struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    lent_at: Instant,
    /// A statement came back on it in this session: the connection is alive.
    proven: bool,
    /// A statement was cut short (its future dropped) or the connection failed: its state is
    /// unknown, so it goes back to sqlx's pool, which checks it.
    unsettled: bool,
    home: Arc<Connections>,
    /// On a replica's connection: where the first statement goes when it finds the connection
    /// dead (the next replica, or the primary).
    reroute: Option<Reroute>,
    /// Handed to the application ([`read_connection`](crate::read_connection)): whatever its
    /// statements left on the connection is unknown, so it goes back to sqlx's pool, which
    /// checks it, not to the store's own idle connections.
    lent: bool,
}

impl Lease {
    /// The connection, for the application's own statements (see [`Lease::lent`]).
    pub(crate) fn lend(&mut self) -> &mut PgConnection {
        self.lent = true;
        self
    }

    /// The lease, lent by a replica: its first statement goes elsewhere, by `reroute`, when it
    /// finds the connection dead.
    pub(crate) fn rerouted_by(mut self, reroute: Reroute) -> Self {
        self.reroute = Some(reroute);
        self
    }

    /// Runs `query`; the first statement on the connection is sent again on another connection
    /// if it finds this one dead (see [`Connections::replaces`]).
    ///
    /// The two ways to another connection wait in a pool (sqlx's acquire futures take kilobytes)
    /// and are rare, so they are boxed: otherwise every statement's future, and every port
    /// method's boxed future built around it, carries them (10 KB, copied into the box at each
    /// call).
    pub(crate) async fn run<T: Fetch>(&mut self, query: PgQuery<'_>) -> sqlx::Result<T> {
        if self.proven {
            return self.attempt(query).await;
        }
        let (sql, arguments) = split(query)?;
        let mut failures = 0;
        loop {
            let query = sqlx::query_with(sql.clone(), arguments.clone());
            match self.attempt(query).await {
                Ok(fetched) => return Ok(fetched),
                Err(error) => {
                    if is_dead_connection(&error) {
                        if let Some(reroute) = self.reroute.take() {
                            // A replica's connection: a read can be sent anywhere, so the
                            // replica is marked down and the next source serves it. The dead
                            // connection goes to the replica's pool, which closes it.
                            let next = Box::pin(reroute.elsewhere(&error)).await?;
                            drop(mem::replace(self, next));
                            failures = 0;
                            continue;
                        }
                    }
                    failures += 1;
                    if !self.home.replaces(&error, failures) {
                        return Err(error);
                    }
                    Box::pin(self.replace()).await?;
                }
            }
        }
    }

    /// The connection as sqlx's, for a transaction (which gives it back to sqlx's pool).
    pub(crate) fn into_pool_connection(mut self) -> PoolConnection<Postgres> {
        self.conn
            .take()
            .expect("a lease holds its connection until dropped")
    }

    async fn attempt<T: Fetch>(&mut self, query: PgQuery<'_>) -> sqlx::Result<T> {
        self.unsettled = true;
        let result = T::fetch(self, query).await;
        self.unsettled = match &result {
            Ok(_) => {
                self.proven = true;
                false
            }
            Err(error) => is_dead_connection(error) || is_runtime_gone(error),
        };
        result
    }

    /// Drops the connection (to sqlx's pool, which finds it dead and closes it) for another.
    async fn replace(&mut self) -> sqlx::Result<()> {
        drop(self.conn.take());
        let kept = match self.home.take_kept() {
            Some(kept) => kept,
            None => self.home.acquire().await?,
        };
        self.conn = Some(kept.conn);
        self.lent_at = kept.lent_at;
        self.unsettled = false;
        Ok(())
    }
}

/// A query's SQL and arguments, so that it can be sent again.
fn split(mut query: PgQuery<'_>) -> sqlx::Result<(SqlStr, PgArguments)> {
    let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
    Ok((query.sql(), arguments.unwrap_or_default()))
}

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.unsettled || self.lent {
                // To sqlx's pool, which pings it (flushing what a cut-short statement left).
                drop(conn);
            } else {
                self.home.keep(conn, self.lent_at);
            }
        }
    }
}

/// sqlx's `Transaction::begin`, made safe to drop: dropped after its `BEGIN` was sent and
/// before the answer, sqlx's own future hands the connection back to the pool still inside the
/// transaction that `BEGIN` opened (its rollback guard only rolls back a transaction it has
/// counted, and it counts it once the answer is in), where the next session would run in it.
/// Dropped after it was first polled, this future is finished on a task of its own instead,
/// and the transaction it gives dropped, which rolls back before the connection is reused.
pub(crate) struct Begin {
    begin: Option<BeginFuture>,
    polled: bool,
}

type BeginFuture =
    futures_util::future::BoxFuture<'static, sqlx::Result<sqlx::Transaction<'static, Postgres>>>;

impl Begin {
    /// Begins a transaction on `conn` with `statement` (`None`: `BEGIN`).
    pub(crate) fn new(conn: PoolConnection<Postgres>, statement: Option<SqlStr>) -> Self {
        Self {
            begin: Some(sqlx::Transaction::begin(conn, statement)),
            polled: false,
        }
    }
}

impl Future for Begin {
    type Output = sqlx::Result<sqlx::Transaction<'static, Postgres>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.polled = true;
        let begin = self
            .begin
            .as_mut()
            .expect("a begin is not polled after it completed");
        let answer = std::task::ready!(begin.as_mut().poll(cx));
        self.begin = None;
        std::task::Poll::Ready(answer)
    }
}

impl Drop for Begin {
    fn drop(&mut self) {
        let Some(begin) = self.begin.take() else {
            return;
        };
        // Never polled: nothing was sent, and the connection goes back as it came.
        if !self.polled {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // The transaction, if it began, rolls back as it is dropped.
                    drop(begin.await);
                });
            }
            // No runtime, so none to run sqlx's return of the connection either: the
            // connection is dropped, and closes.
            Err(_) => drop(begin),
        }
    }
}

/// A connection that is closed, not given back to its pool, unless [`settled`](Self::settle):
/// for work that changes the session (the migrations' advisory lock and timeouts), which a
/// failure or a drop midway may leave changed.
pub(crate) struct CloseUnlessSettled(Option<PoolConnection<Postgres>>);

impl CloseUnlessSettled {
    pub(crate) fn new(conn: PoolConnection<Postgres>) -> Self {
        Self(Some(conn))
    }

    /// The session is as it was: the connection goes back to its pool when dropped.
    pub(crate) fn settle(mut self) {
        drop(self.0.take());
    }
}

impl Deref for CloseUnlessSettled {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.0.as_ref().expect("held until settled or dropped")
    }
}

impl DerefMut for CloseUnlessSettled {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.0.as_mut().expect("held until settled or dropped")
    }
}

impl Drop for CloseUnlessSettled {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

/// A pool as its metrics name it: `host:port/database` of the server it connects to (a socket
/// directory for the host when it connects through one), as OpenTelemetry suggests.
fn metered(pool: &PgPool) -> metrics::Pool {
    let options = pool.connect_options();
    let (server, database) = (
        options.get_host(),
        options.get_database().unwrap_or_default(),
    );
    metrics::Pool {
        system: "postgresql",
        name: format!("{server}:{}/{database}", options.get_port()),
        server: server.to_owned(),
        namespace: database.to_owned(),
    }
}

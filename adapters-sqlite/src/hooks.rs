//! What SQLite tells a call while it runs, through the callbacks Stockroom installs on its
//! connections: the busy handlers (a statement asks to wait for a lock: refused between
//! blocking calls, waited for within bounds during one) and, on the writer, the WAL hook (a
//! commit left the WAL this many frames long).
//!
//! The callbacks run on the thread that runs the statement and talk to the call through
//! thread-locals: [`observe`] clears the reports before a call and reads them after it, and
//! [`bound_waits`] sets the bounds of a blocking call's waits for its duration.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{ffi, Connection};
use stockroom_core::Result;

use crate::error::map;

thread_local! {
    /// Whether SQLite asked, on this thread, to wait for a lock and was refused.
    static REFUSED_WAIT: Cell<bool> = const { Cell::new(false) };
    /// The WAL's length in frames after the last commit on this thread, if any.
    static WAL_FRAMES: Cell<Option<u32>> = const { Cell::new(None) };
    /// The bounds of the waits of the blocking call running on this thread, if one is.
    static WAIT_BOUNDS: RefCell<Option<WaitBounds>> = const { RefCell::new(None) };
    /// When the wait for a lock in progress on this thread began.
    static WAITING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// What SQLite reported during a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// A statement met a lock held elsewhere and, parked, did not wait for it.
    pub(crate) refused_wait: bool,
    /// The call committed, leaving the WAL this many frames long.
    pub(crate) wal_frames: Option<u32>,
}

impl Observed {
    /// Whether the WAL reached `threshold` frames (`wal_autocheckpoint`; 0 = never).
    pub(crate) fn checkpoint_due(&self, threshold: u32) -> bool {
        threshold > 0 && self.wal_frames.is_some_and(|frames| frames >= threshold)
    }
}

/// Runs `f`, which runs statements on this thread, and says what SQLite reported meanwhile.
pub(crate) fn observe<T>(f: impl FnOnce() -> T) -> (T, Observed) {
    REFUSED_WAIT.set(false);
    WAL_FRAMES.set(None);
    let out = f();
    let observed = Observed {
        refused_wait: REFUSED_WAIT.take(),
        wal_frames: WAL_FRAMES.take(),
    };
    (out, observed)
}

/// The busy handler of a parked connection: never wait on an async worker; note the refusal.
fn refuse_to_wait(_attempts: i32) -> bool {
    REFUSED_WAIT.set(true);
    false
}

/// Readies a connection for inline calls: from now on a statement that meets a lock fails at
/// once with `SQLITE_BUSY` (and [`Observed::refused_wait`]) instead of sleeping in SQLite's
/// busy handler. A call on the blocking pool sets the busy timeout for its duration, then parks
/// the connection again.
pub(crate) fn park(conn: &mut Connection) -> Result<()> {
    conn.busy_handler(Some(refuse_to_wait as fn(i32) -> bool))
        .map_err(map)
}

/// How long a blocking call's statements may wait for a lock.
#[derive(Debug, Clone)]
pub(crate) struct WaitBounds {
    /// How long one wait may last (the store's busy timeout).
    pub(crate) busy_timeout: Duration,
    /// When every wait ends, whatever its start: the deadline of the operation in progress.
    pub(crate) deadline: Option<Instant>,
    /// Set when the future that awaits the call is dropped: the waits end at once.
    pub(crate) abandoned: Arc<AtomicBool>,
}

/// Runs `f`, a blocking call's work on `conn`, with its waits for a lock bounded by `bounds`
/// (see [`wait_within_bounds`]), then readies `conn` for what runs next: parked when `parks`
/// (a store whose short calls run inline), SQLite's own busy timeout otherwise. Both happen
/// even when `f` panics, so a connection never goes back with this call's handler on it.
pub(crate) fn bound_waits<R>(
    conn: &mut Connection,
    bounds: WaitBounds,
    parks: bool,
    f: impl FnOnce(&Connection) -> R,
) -> R {
    /// Ends the bounded waits when dropped.
    struct Restore<'c> {
        conn: &'c mut Connection,
        busy_timeout: Duration,
        parks: bool,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            WAIT_BOUNDS.set(None);
            let readied = if self.parks {
                park(self.conn)
            } else {
                self.conn.busy_timeout(self.busy_timeout).map_err(map)
            };
            if let Err(error) = readied {
                tracing::warn!(%error, "sqlite: could not ready a connection after a blocking call");
            }
        }
    }
    let busy_timeout = bounds.busy_timeout;
    if let Err(error) = conn.busy_handler(Some(wait_within_bounds as fn(i32) -> bool)) {
        // The call then fails fast on a lock, which changes no statement's effect.
        tracing::warn!(%error, "sqlite: could not set the busy handler for a blocking call");
    }
    WAIT_BOUNDS.set(Some(bounds));
    let restore = Restore {
        conn,
        busy_timeout,
        parks,
    };
    f(restore.conn)
}

/// The longest a bounded wait sleeps between two tries: short, so that a dropped call stops
/// waiting soon after.
const LONGEST_NAP: Duration = Duration::from_millis(20);

/// The busy handler of a blocking call: waits for the lock as SQLite's own busy timeout would
/// (short naps, growing), but no longer than the busy timeout from the wait's start, nor past
/// the deadline, nor once the call's future was dropped (see [`WaitBounds`]). Outside a call
/// it refuses to wait.
fn wait_within_bounds(attempts: i32) -> bool {
    let now = Instant::now();
    if attempts == 0 {
        WAITING_SINCE.set(Some(now));
    }
    let since = WAITING_SINCE.get().unwrap_or(now);
    WAIT_BOUNDS.with_borrow(|bounds| {
        let Some(bounds) = bounds else {
            return false;
        };
        if bounds.abandoned.load(Ordering::Acquire) {
            return false;
        }
        let mut until = since + bounds.busy_timeout;
        if let Some(deadline) = bounds.deadline {
            until = until.min(deadline);
        }
        let Some(left) = until.checked_duration_since(now).filter(|d| !d.is_zero()) else {
            return false;
        };
        let nap = Duration::from_millis(1u64 << attempts.clamp(0, 5)).min(LONGEST_NAP);
        std::thread::sleep(nap.min(left));
        true
    })
}

/// The WAL hook of the writer: notes the WAL's length after each commit.
///
/// Called by SQLite inside `sqlite3_step` of the committing statement, on that thread. It must
/// not unwind into C: `try_with` fails quietly instead of panicking during the thread's
/// teardown.
unsafe extern "C" fn note_wal_frames(
    _context: *mut c_void,
    _db: *mut ffi::sqlite3,
    _schema: *const c_char,
    frames: c_int,
) -> c_int {
    let _ = WAL_FRAMES.try_with(|f| f.set(u32::try_from(frames).ok()));
    ffi::SQLITE_OK
}

/// Replaces the writer's automatic checkpoint (SQLite's own WAL hook, which checkpoints inside
/// the commit that reaches `wal_autocheckpoint` frames, on whatever thread runs it) with
/// [`note_wal_frames`], so that the code that ran the commit checkpoints off the async threads
/// (see `Conn::run`). Returns the threshold in effect before: the application's
/// `wal_autocheckpoint` pragma, or SQLite's default of 1,000 frames.
pub(crate) fn watch_wal(conn: &Connection) -> Result<u32> {
    let threshold: i64 = conn
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .map_err(map)?;
    // SAFETY: `handle` is this open connection's `sqlite3*`, valid until the connection closes,
    // which unregisters the hook with it. The hook's context is null and the hook dereferences
    // nothing: it only sets a thread-local. rusqlite registers no WAL hook of its own here (its
    // `hooks` feature would only by an explicit `wal_hook` call), so none is displaced.
    unsafe {
        ffi::sqlite3_wal_hook(conn.handle(), Some(note_wal_frames), std::ptr::null_mut());
    }
    Ok(u32::try_from(threshold).unwrap_or(0))
}

/// Resets every statement of `conn` still running, so that an interrupt (`sqlite3_interrupt`)
/// ends: SQLite clears its interrupt flag only when a statement starts while none runs. FTS5
/// keeps a blob reader of its index open (a running statement) from a write until the
/// transaction commits or rolls back, so once a unit of work has written a searchable row, an
/// interrupt would otherwise interrupt every later statement of the connection, `ROLLBACK`
/// included. Called only when no call runs on `conn` (the statements reset are SQLite's own:
/// rusqlite resets each of its statements after use).
pub(crate) fn stop_running_statements(conn: &Connection) {
    // SAFETY: `handle` is this open connection's `sqlite3*`, used on the thread that owns the
    // connection, with no call of its running. `sqlite3_next_stmt` walks the statements the
    // connection owns (resetting one does not unlink it), and `sqlite3_reset` of a statement
    // the connection owns is always allowed; FTS5 reopens or closes its reader after a reset
    // (its rollback closes it, and a closed handle finalizes the reset statement).
    unsafe {
        let db = conn.handle();
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            if ffi::sqlite3_stmt_busy(stmt) != 0 {
                ffi::sqlite3_reset(stmt);
            }
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
}

/// Checkpoints the WAL as the automatic checkpoint would have (`PASSIVE`: it copies what no
/// reader still needs and waits for nobody). A failure is logged, not returned: the commit
/// before it stands, and the next due checkpoint tries again.
pub(crate) fn checkpoint(conn: &Connection) {
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match done {
        Ok((frames, copied)) => {
            tracing::debug!(target: "stockroom::sql", frames, copied, "wal checkpoint");
        }
        Err(error) => tracing::warn!(%error, "sqlite: wal checkpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "stockroom-hooks-{name}-{}.db",
            uuid::Uuid::now_v7().simple()
        ))
    }

    fn remove(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    #[test]
    fn a_parked_connection_refuses_to_wait_for_a_lock_and_says_so() {
        let path = temp_path("parked");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); BEGIN IMMEDIATE")
            .unwrap();
        let mut parked = Connection::open(&path).unwrap();
        parked
            .busy_timeout(std::time::Duration::from_secs(60))
            .unwrap();
        park(&mut parked).unwrap();

        let (begun, seen) = observe(|| parked.execute_batch("BEGIN IMMEDIATE"));
        assert!(begun.is_err(), "BEGIN IMMEDIATE beside another writer");
        assert!(seen.refused_wait, "the refusal was not noted");
        // A read under WAL does not wait for the writer: nothing to refuse.
        let (count, seen) =
            observe(|| parked.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)));
        assert_eq!((count.unwrap(), seen.refused_wait), (0, false));
        drop((holder, parked));
        remove(&path);
    }

    fn bounds(busy_timeout: Duration) -> WaitBounds {
        WaitBounds {
            busy_timeout,
            deadline: None,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn a_blocking_call_waits_within_its_bounds_then_the_connection_is_parked_again() {
        let path = temp_path("bounded");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); BEGIN IMMEDIATE")
            .unwrap();
        let mut conn = Connection::open(&path).unwrap();
        park(&mut conn).unwrap();
        let begin = |c: &Connection| c.execute_batch("BEGIN IMMEDIATE");

        let started = Instant::now();
        let waited = bound_waits(&mut conn, bounds(Duration::from_millis(60)), true, begin);
        assert!(waited.is_err(), "the lock is held");
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "waited the busy timeout"
        );

        let mut past = bounds(Duration::from_secs(60));
        past.deadline = Some(Instant::now());
        assert!(bound_waits(&mut conn, past, true, begin).is_err());
        let abandoned = bounds(Duration::from_secs(60));
        abandoned.abandoned.store(true, Ordering::Release);
        let started = Instant::now();
        assert!(bound_waits(&mut conn, abandoned, true, begin).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "an abandoned call waited"
        );

        // Even after a call that panicked, the connection is parked: it refuses to wait.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bound_waits(&mut conn, bounds(Duration::from_secs(60)), true, |_| {
                panic!("the application's code panicked")
            })
        }));
        assert!(panicked.is_err());
        let (begun, seen) = observe(|| begin(&conn));
        assert!(begun.is_err() && seen.refused_wait, "not parked: {begun:?}");
        drop((holder, conn));
        remove(&path);
    }

    #[test]
    fn the_wal_hook_reports_the_wal_length_after_a_commit_instead_of_checkpointing() {
        let path = temp_path("wal");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 2")
            .unwrap();
        assert_eq!(watch_wal(&conn).unwrap(), 2);
        conn.execute_batch("CREATE TABLE t (x)").unwrap();

        let mut lengths = Vec::new();
        for i in 0..3 {
            let ((), seen) = observe(|| {
                conn.execute("INSERT INTO t VALUES (?)", [i]).unwrap();
            });
            lengths.push(seen.wal_frames.expect("a commit reports the WAL length"));
        }
        // SQLite's automatic checkpoint (every 2 frames) would have restarted the WAL.
        assert!(
            lengths.windows(2).all(|w| w[0] < w[1]),
            "the WAL kept growing: {lengths:?}"
        );
        assert!(Observed {
            wal_frames: lengths.last().copied(),
            ..Observed::default()
        }
        .checkpoint_due(2));
        checkpoint(&conn);
        let (_, seen) =
            observe(|| conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)));
        assert_eq!(seen.wal_frames, None, "a read commits nothing");
        drop(conn);
        remove(&path);
    }
}

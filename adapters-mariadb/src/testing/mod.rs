//! A MariaDB server for tests, and a fresh database per test (the `testing` feature).
//!
//! Stockroom's own MariaDB tests use this module, and an application can too, to test its code
//! against a real MariaDB:
//!
//! ```no_run
//! use stockroom_core::Store;
//! use stockroom_mariadb::testing::TestDatabase;
//!
//! #[tokio::test]
//! async fn creates_a_product() {
//!     // `None`: no MariaDB on this machine (a line on stderr said so); the test is skipped.
//!     let Some(db) = TestDatabase::create().await else { return };
//!     let store = db.store().await;
//!     db.drop_after(async move {
//!         let mut uow = store.begin().await.unwrap();
//!         // … the test …
//!         uow.commit().await.unwrap();
//!         store.close().await;
//!     })
//!     .await; // the database is dropped even if the test panicked
//! }
//! # fn main() {}
//! ```
//!
//! # Where the server comes from
//!
//! Once per process, the first call to [`server`] (or [`TestDatabase::create`]) settles it:
//!
//! 1. **The configured server**: `STOCKROOM_TEST_MARIADB_URL`, else
//!    `mysql://root@127.0.0.1:3306` ([`configured_url`]). If a server answers there within two
//!    seconds, it is used; its user must be allowed to create and drop databases. If it answers
//!    with an error (a wrong password, an unknown user), that error is reported.
//! 2. **The local server, started**: when nothing answers and the URL names this machine
//!    (`127.0.0.1`, `localhost`, `::1`), the harness starts the installed server once, as the
//!    machine's own service would be started: `start-stop-daemon --start --oknodo --background
//!    --pidfile /run/mysqld/mysqld.pid --exec /usr/sbin/mariadbd` (the pid file, which the
//!    server's configuration names, so that the `mariadbd` of a Galera test cluster does not
//!    count as the local server running). It then waits up to 30 seconds for the server to
//!    answer. The server keeps running after the tests: it is the machine's, not the tests'.
//! 3. **Neither**: the MariaDB tests are skipped. Each test process prints one line to stderr
//!    saying so and how to run them, and [`server`] and [`TestDatabase::create`] return `None`.
//!    Unless MariaDB is required: with `CI` set (to anything but `false` or `0`) or
//!    `STOCKROOM_TEST_REQUIRE_MARIADB=1`, they panic instead, with the reason, so CI never
//!    passes by skipping.
//!
//! # A database per test
//!
//! [`TestDatabase::create`] runs `CREATE DATABASE stockroom_test_<uuid>` on the server,
//! [`TestDatabase::drop_now`] ends the sessions still on it (`KILL CONNECTION`, as PostgreSQL's
//! `DROP DATABASE … WITH (FORCE)` does) and drops it, and [`TestDatabase::drop_after`] drops it
//! after a test body, whether the body passed or panicked. A database no call dropped is
//! dropped when its last [`TestDatabase`] is (on a thread of its own, see
//! [`TestDatabase`]'s `Drop`). Tests therefore run in parallel without seeing each other's rows.
//!
//! A test process killed before it could drop its databases leaves them behind: the first call
//! to [`server`] of every later process drops the `stockroom_test_<uuid>` databases made more
//! than an hour ago (the UUID v7 in the name holds the time it was made; no test runs that
//! long), so they do not pile up.
//!
//! The admin connection ([`Server::admin`]) is sqlx's `MySqlConnection`, for tests that run
//! their own SQL.

pub mod galera;

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, MySqlConnection};
use stockroom_core::adapter::redact_url;
use stockroom_core::StoreConfig;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::MariaDbStore;

/// The server the tests try when `STOCKROOM_TEST_MARIADB_URL` is not set: the local one, as
/// `root` without a password (the machine's MariaDB as installed).
pub const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306";

/// The prefix of every database the harness creates.
pub const DATABASE_PREFIX: &str = "stockroom_test_";

/// How long the configured server gets to answer before the harness tries to start it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a server the harness started gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How old a test database must be for the sweep to drop it: older than any test run.
const ABANDONED_AFTER: Duration = Duration::from_secs(60 * 60);

/// How long a drop waits for the locks of the sessions it ended before it gives up, so that a
/// stuck session never hangs the tests (MariaDB's default is a day).
const DROP_LOCK_WAIT_SECS: u32 = 30;

/// The server of this process, settled by the first call to [`server`].
static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();

/// The one skip notice of this process.
static SKIP_NOTICE: Once = Once::new();

/// The MariaDB server the tests of this process use.
pub struct Server {
    url: String,
    started: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &redact_url(&self.url))
            .field("started", &self.started)
            .finish()
    }
}

impl Server {
    /// The server's URL, without a database: tests create theirs from it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this process started the server (it did not answer at first).
    pub fn was_started(&self) -> bool {
        self.started
    }

    /// A new connection to the server, on no database, to create and drop databases or to
    /// watch and end other sessions.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached (it answered when it was chosen, so this is a test
    /// environment failure).
    pub async fn admin(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to MariaDB at {}: {e}", redact_url(&self.url)))
    }

    /// Runs one statement on a new admin connection.
    async fn execute(&self, sql: String) {
        let mut conn = self.admin().await;
        // Only statements the harness builds from generated names come here, never user text.
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
        {
            panic!("{sql}: {e}");
        }
        let _ = conn.close().await;
    }
}

/// The server for this process's MariaDB tests, found or started on the first call (see the
/// [module docs](self)), or `None` when there is none and the tests are to be skipped (after a
/// line on stderr saying so, once per process).
///
/// # Panics
///
/// When there is no server and MariaDB is required ([`mariadb_required`]).
pub async fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(resolve).await {
        Ok(server) => Some(server),
        Err(reason) if mariadb_required() => panic!("{}", required_message(reason)),
        Err(reason) => {
            SKIP_NOTICE.call_once(|| {
                // Straight to the process's stderr: the test harness captures `eprintln!` of a
                // test that passes, and a skipped test passes.
                let _ = writeln!(std::io::stderr().lock(), "{}", skip_message(reason));
            });
            None
        }
    }
}

/// The configured test server: `STOCKROOM_TEST_MARIADB_URL`, else [`DEFAULT_URL`]. An empty
/// variable counts as unset.
pub fn configured_url() -> String {
    resolve_url(|name| std::env::var(name).ok())
}

/// [`configured_url`] over any source of variables.
fn resolve_url(var: impl Fn(&str) -> Option<String>) -> String {
    var("STOCKROOM_TEST_MARIADB_URL")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// `url` with its database replaced by `database` (or set, when it names none); user,
/// password, host, port and query are kept.
///
/// ```
/// use stockroom_mariadb::testing::with_database;
///
/// assert_eq!(with_database("mysql://root@127.0.0.1:3306", "shop"), "mysql://root@127.0.0.1:3306/shop");
/// assert_eq!(
///     with_database("mariadb://u:pw@db:3307/old?ssl-mode=disabled", "shop"),
///     "mariadb://u:pw@db:3307/shop?ssl-mode=disabled"
/// );
/// ```
///
/// # Panics
///
/// If `url` has no scheme (`…://`).
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// True when a missing MariaDB must fail the tests rather than skip them: `CI` or
/// `STOCKROOM_TEST_REQUIRE_MARIADB` is set to anything but an empty string, `false` or `0`.
pub fn mariadb_required() -> bool {
    let var = |name| std::env::var(name).ok();
    is_set(var("CI").as_deref()) || is_set(var("STOCKROOM_TEST_REQUIRE_MARIADB").as_deref())
}

/// Whether an environment flag is on.
fn is_set(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// What the tests say when they skip: one line, whatever the reason holds.
fn skip_message(reason: &str) -> String {
    format!(
        "MariaDB tests skipped: {}. To run them, start MariaDB (start-stop-daemon --start \
         --background --exec /usr/sbin/mariadbd) or set STOCKROOM_TEST_MARIADB_URL; with CI or \
         STOCKROOM_TEST_REQUIRE_MARIADB=1 set they fail instead.",
        one_line(reason)
    )
}

/// The panic of a test that needs MariaDB when there is none.
fn required_message(reason: &str) -> String {
    format!(
        "MariaDB is required (CI or STOCKROOM_TEST_REQUIRE_MARIADB is set) and there is none: \
         {}. Start MariaDB (start-stop-daemon --start --background --exec /usr/sbin/mariadbd) \
         or set STOCKROOM_TEST_MARIADB_URL.",
        one_line(reason)
    )
}

/// `text` on one line: the lines of a tool's output joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Finds the server: the configured one if it answers, else the local one started, else the
/// reason there is none.
async fn resolve() -> Result<Server, String> {
    let url = configured_url();
    let silence = match probe(&url).await {
        Probe::Answered => {
            let server = Server {
                url,
                started: false,
            };
            sweep(&server).await;
            return Ok(server);
        }
        Probe::Refused(e) => {
            return Err(format!(
                "MariaDB at {} refused the tests: {e}",
                redact_url(&url)
            ))
        }
        Probe::Silent(why) => why,
    };
    let nothing_at = format!("no MariaDB answers at {} ({silence})", redact_url(&url));
    if !names_this_machine(&url) {
        return Err(nothing_at);
    }
    start_local()
        .await
        .map_err(|e| format!("{nothing_at}, and it could not be started: {e}"))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let last = loop {
        let last = match probe(&url).await {
            Probe::Answered => {
                let server = Server { url, started: true };
                sweep(&server).await;
                return Ok(server);
            }
            Probe::Refused(e) => {
                return Err(format!(
                    "MariaDB, started at {}, refused the tests: {e}",
                    redact_url(&url)
                ))
            }
            Probe::Silent(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    Err(format!(
        "{nothing_at}; it was started, but did not answer within {START_TIMEOUT:?} ({last})"
    ))
}

/// Whether `url`'s host is this machine, where the harness may start the installed server.
fn names_this_machine(url: &str) -> bool {
    match url.parse::<MySqlConnectOptions>() {
        Ok(options) => {
            // A Unix socket is local too.
            options.get_socket().is_some()
                || matches!(
                    options.get_host().trim_matches(['[', ']']),
                    "127.0.0.1" | "localhost" | "::1"
                )
        }
        Err(_) => false,
    }
}

/// Starts the installed server as the machine would (see the [module docs](self)).
async fn start_local() -> Result<(), String> {
    let run = tokio::task::spawn_blocking(|| {
        Command::new("start-stop-daemon")
            .args([
                "--start",
                "--oknodo",
                "--background",
                "--pidfile",
                "/run/mysqld/mysqld.pid",
                "--exec",
                "/usr/sbin/mariadbd",
            ])
            // The daemon must hold none of the test process's pipes: cargo waits for them to
            // close.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    })
    .await
    .map_err(|e| format!("start-stop-daemon did not run: {e}"))?;
    match run {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "start-stop-daemon failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(e) => Err(format!("start-stop-daemon could not be run: {e}")),
    }
}

/// What a server did when the harness knocked.
enum Probe {
    Answered,
    /// A server answered, with an error (authentication, a bad URL).
    Refused(String),
    /// Nothing answered (connection refused, timed out, unreachable host).
    Silent(String),
}

/// Connects to `url` once, within [`PROBE_TIMEOUT`].
async fn probe(url: &str) -> Probe {
    let options: MySqlConnectOptions = match url.parse() {
        Ok(options) => options,
        Err(e) => return Probe::Refused(format!("not a MariaDB URL ({e})")),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Probe::Answered
        }
        Ok(Err(e @ sqlx::Error::Database(_))) => Probe::Refused(e.to_string()),
        Ok(Err(e)) => Probe::Silent(e.to_string()),
        Err(_) => Probe::Silent(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Drops the test databases made more than [`ABANDONED_AFTER`] ago: what test processes that
/// were killed left behind. Best effort: a database another process drops at the same time, or
/// one a stuck session holds, is left for the next sweep.
async fn sweep(server: &Server) {
    let Ok(mut conn) = MySqlConnection::connect(&server.url).await else {
        return;
    };
    let pattern = format!("{}%", DATABASE_PREFIX.replace('_', "\\_"));
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT `SCHEMA_NAME` FROM `information_schema`.`SCHEMATA` WHERE `SCHEMA_NAME` LIKE ?",
    )
    .bind(pattern)
    .fetch_all(&mut conn)
    .await
    {
        Ok(names) => names,
        Err(_) => return,
    };
    let now = SystemTime::now();
    let abandoned: Vec<String> = names
        .into_iter()
        .filter(|name| is_abandoned(name, now))
        .collect();
    if abandoned.is_empty() {
        let _ = conn.close().await;
        return;
    }
    let _ = sqlx::raw_sql("SET SESSION `lock_wait_timeout` = 5")
        .execute(&mut conn)
        .await;
    for name in abandoned {
        let sql = format!("DROP DATABASE IF EXISTS `{name}`");
        let _ = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
    }
    let _ = conn.close().await;
}

/// Whether `name` is a test database made more than [`ABANDONED_AFTER`] before `now`, by the
/// time in its UUID v7. A name of another shape is never the harness's to drop.
fn is_abandoned(name: &str, now: SystemTime) -> bool {
    let Some(made) = made_at(name) else {
        return false;
    };
    now.duration_since(made)
        .is_ok_and(|age| age > ABANDONED_AFTER)
}

/// When the test database `name` was made, from the UUID v7 after [`DATABASE_PREFIX`].
fn made_at(name: &str) -> Option<SystemTime> {
    let suffix = name.strip_prefix(DATABASE_PREFIX)?;
    if suffix.len() != 32 {
        return None;
    }
    let id = Uuid::try_parse(suffix).ok()?;
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// A fresh database name: [`DATABASE_PREFIX`] and a UUID v7 in lower-case hex (47 characters,
/// under MariaDB's 64; a valid unquoted identifier that sorts by creation).
pub fn database_name() -> String {
    format!("{DATABASE_PREFIX}{}", Uuid::now_v7().simple())
}

/// A database of one test on the test server, created fresh, and dropped by
/// [`drop_now`](Self::drop_now), by [`drop_after`](Self::drop_after), or when the last clone of
/// it is dropped.
///
/// The last resort, `Drop`, cannot await: it drops the database on a thread of its own, with a
/// runtime of its own (so it never blocks on the test's runtime, whichever flavour it is), and
/// waits for it at most a minute before it leaves the database to the sweep of a later run (see
/// the [module docs](self)). The asynchronous ways are the ones to call.
#[derive(Clone)]
pub struct TestDatabase {
    inner: Arc<Inner>,
}

/// What the clones of a [`TestDatabase`] share.
struct Inner {
    name: String,
    url: String,
    server: &'static Server,
    dropped: AtomicBool,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.inner.name)
            .field("server", self.inner.server)
            .finish()
    }
}

impl TestDatabase {
    /// Creates `stockroom_test_<uuid>` on the test [`server`], or returns `None` when there is no
    /// server and the test is to be skipped.
    ///
    /// # Panics
    ///
    /// When there is no server and MariaDB is required ([`mariadb_required`]), or when the
    /// server refuses `CREATE DATABASE`.
    pub async fn create() -> Option<Self> {
        let server = server().await?;
        let name = database_name();
        server.execute(format!("CREATE DATABASE `{name}`")).await;
        let url = with_database(&server.url, &name);
        Some(Self {
            inner: Arc::new(Inner {
                name,
                url,
                server,
                dropped: AtomicBool::new(false),
            }),
        })
    }

    /// The database's name, `stockroom_test_<uuid>`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A URL of the database, for a store or a connection of the test's own.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The server the database lives on.
    pub fn server(&self) -> &'static Server {
        self.inner.server
    }

    /// A store configuration for this database: a small pool (tests run many stores at once,
    /// and the server's connections are bounded: 151 by default) and the database's name as
    /// application name.
    pub fn config(&self) -> StoreConfig {
        StoreConfig::new(self.inner.url.clone())
            .with_min_connections(1)
            .with_max_connections(5)
            .with_acquire_timeout(Duration::from_secs(30))
            .with_application_name(self.inner.name.clone())
    }

    /// A store on this database with [`config`](Self::config), migrations applied.
    ///
    /// # Panics
    ///
    /// If the store cannot connect.
    pub async fn store(&self) -> MariaDbStore {
        MariaDbStore::connect(&self.config())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.inner.name))
    }

    /// A new connection to this database, for a test's own SQL.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub async fn connect(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.inner.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.inner.name))
    }

    /// Ends the sessions still on the database and drops it.
    ///
    /// # Panics
    ///
    /// If the server refuses.
    pub async fn drop_now(self) {
        if let Err(e) = drop_database(self.inner.server, &self.inner.name).await {
            panic!("drop the test database {}: {e}", self.inner.name);
        }
        self.inner.dropped.store(true, Ordering::SeqCst);
    }

    /// Runs `body`, then drops the database whether `body` returned or panicked, and re-raises
    /// the panic if it did.
    pub async fn drop_after<T>(self, body: impl Future<Output = T>) -> T {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        self.drop_now().await;
        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.dropped.load(Ordering::SeqCst) {
            return;
        }
        let (server, name) = (self.server, self.name.clone());
        let (done, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("drop {name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let outcome = match runtime {
                    Ok(runtime) => runtime.block_on(drop_database(server, &name)),
                    Err(e) => Err(format!("no runtime: {e}")),
                };
                let _ = done.send(outcome);
            });
        let outcome = match spawned {
            Ok(_) => finished
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| Err(format!("no answer: {e}"))),
            Err(e) => Err(format!("no thread: {e}")),
        };
        if let Err(e) = outcome {
            // Never panic in a drop (it may run while a test's panic unwinds): say it, and
            // leave the database to the sweep.
            let _ = writeln!(
                std::io::stderr().lock(),
                "the test database {} was not dropped ({e}); a later run drops it",
                self.name
            );
        }
    }
}

/// Ends the sessions on `name` (other than the dropping one) and drops it.
async fn drop_database(server: &Server, name: &str) -> Result<(), String> {
    let mut conn = MySqlConnection::connect(&server.url)
        .await
        .map_err(|e| format!("connect to MariaDB at {}: {e}", redact_url(&server.url)))?;
    let outcome = async {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET SESSION `lock_wait_timeout` = {DROP_LOCK_WAIT_SECS}"
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        // Cast: the column is signed on some versions, unsigned on others.
        let sessions: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(`ID` AS SIGNED) FROM `information_schema`.`PROCESSLIST` \
             WHERE `DB` = ? AND `ID` <> CONNECTION_ID()",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("list the sessions: {e}"))?;
        for id in sessions {
            // A session that ended meanwhile is "unknown thread" (1094): what was wanted.
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("KILL CONNECTION {id}")))
                .execute(&mut conn)
                .await;
        }
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    let _ = conn.close().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_on_unless_empty_zero_or_false() {
        for on in ["true", "1", "yes", "TRUE", "github"] {
            assert!(is_set(Some(on)), "{on}");
        }
        for off in ["", " ", "0", "false", "False", "FALSE"] {
            assert!(!is_set(Some(off)), "{off:?}");
        }
        assert!(!is_set(None));
    }

    #[test]
    fn the_test_variable_names_the_server_and_empty_is_unset() {
        let with = |value: Option<&str>| {
            resolve_url(|name| {
                assert_eq!(name, "STOCKROOM_TEST_MARIADB_URL");
                value.map(str::to_owned)
            })
        };
        assert_eq!(with(Some("mysql://t@h:1")), "mysql://t@h:1");
        assert_eq!(with(Some("")), DEFAULT_URL);
        assert_eq!(with(None), DEFAULT_URL);
    }

    #[test]
    fn the_skip_notice_is_one_line_with_the_reason_and_the_ways_out() {
        let reason = "no MariaDB answers at mysql://root@127.0.0.1:3306\nstart-stop-daemon: \
                      unable to start\n\n  try again\n";
        let message = skip_message(reason);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.starts_with("MariaDB tests skipped: no MariaDB answers"));
        assert!(message.contains("start-stop-daemon: unable to start; try again"));
        for way_out in [
            "start MariaDB",
            "STOCKROOM_TEST_MARIADB_URL",
            "STOCKROOM_TEST_REQUIRE_MARIADB=1",
        ] {
            assert!(
                message.contains(way_out),
                "{way_out} missing from {message}"
            );
        }
        let required = required_message(reason);
        assert_eq!(required.lines().count(), 1, "{required}");
        assert!(required.contains("unable to start"));
    }

    #[test]
    fn database_names_are_fresh_identifiers_that_tell_their_age() {
        let (a, b) = (database_name(), database_name());
        assert_ne!(a, b);
        let suffix = a.strip_prefix(DATABASE_PREFIX).expect("the prefix");
        assert_eq!(suffix.len(), 32);
        assert!(suffix
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert!(a.len() < 64, "MariaDB's limit on names");
        let now = SystemTime::now();
        let made = made_at(&a).expect("a UUID v7 tells its time");
        let age = now.duration_since(made).unwrap_or_default();
        assert!(age < Duration::from_secs(5), "{age:?}");
        assert!(!is_abandoned(&a, now));
        let later = now + ABANDONED_AFTER + Duration::from_secs(1);
        assert!(is_abandoned(&a, later));
    }

    #[test]
    fn only_the_harnesss_own_names_are_ever_swept() {
        let later = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
        for name in [
            "shop",
            "stockroom_test_",
            "stockroom_test_galera",
            // A UUID v4 holds no time.
            &format!("{DATABASE_PREFIX}67e5504410b1426f9247bb680e5fe0c8"),
            &format!("stockroom_other_{}", Uuid::now_v7().simple()),
        ] {
            assert!(!is_abandoned(name, later), "{name}");
        }
    }

    #[test]
    fn with_database_replaces_or_sets_only_the_database() {
        let cases = [
            ("mysql://u@h:3306", "mysql://u@h:3306/t"),
            ("mysql://u@h:3306/", "mysql://u@h:3306/t"),
            ("mysql://u@h:3306/old", "mysql://u@h:3306/t"),
            (
                "mariadb://u:p@h/db?ssl-mode=disabled",
                "mariadb://u:p@h/t?ssl-mode=disabled",
            ),
            ("mysql://h?charset=utf8mb4", "mysql://h/t?charset=utf8mb4"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "t"), expected, "{url}");
        }
    }

    #[test]
    fn only_this_machine_is_started() {
        for local in [
            "mysql://root@127.0.0.1:3306",
            "mysql://root@localhost",
            "mysql://root@[::1]:3306",
        ] {
            assert!(names_this_machine(local), "{local}");
        }
        for remote in ["mysql://root@db.example:3306", "mysql://root@10.0.0.7"] {
            assert!(!names_this_machine(remote), "{remote}");
        }
    }

    #[test]
    fn server_debug_hides_the_password() {
        let server = Server {
            url: "mysql://app:hunter2@db:3306".into(),
            started: false,
        };
        assert!(!format!("{server:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_silent_and_a_bad_url_is_refused() {
        assert!(matches!(
            probe("mysql://root@127.0.0.1:1").await,
            Probe::Silent(_)
        ));
        assert!(matches!(
            probe("mysql://root@127.0.0.1:1?ssl-mode=sometimes").await,
            Probe::Refused(_)
        ));
    }

    /// Whether the database `name` exists.
    async fn exists(conn: &mut MySqlConnection, name: String) -> bool {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM `information_schema`.`SCHEMATA` WHERE `SCHEMA_NAME` = ?",
        )
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap();
        count == 1
    }

    /// A database the test forgot is dropped when its last handle goes, from a runtime of
    /// either flavour, and a dropped one is not dropped twice (skipped without MariaDB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forgotten_database_is_dropped_with_its_last_handle() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let name = db.name().to_owned();
        let mut admin = db.server().admin().await;
        assert!(exists(&mut admin, name.clone()).await);
        // A session on it, as a store that was never closed leaves.
        let mut on_it = db.connect().await;
        sqlx::raw_sql("CREATE TABLE `t` (`x` INT) ENGINE=InnoDB; START TRANSACTION; INSERT INTO `t` VALUES (1)")
            .execute(&mut on_it)
            .await
            .unwrap();
        let clone = db.clone();
        drop(db);
        assert!(
            exists(&mut admin, name.clone()).await,
            "a clone still holds it"
        );
        drop(clone);
        assert!(
            !exists(&mut admin, name.clone()).await,
            "dropped with its last handle"
        );
        assert!(
            sqlx::query("SELECT 1").execute(&mut on_it).await.is_err(),
            "its session was ended"
        );

        let db = TestDatabase::create().await.unwrap();
        let name = db.name().to_owned();
        let keep = db.clone();
        db.drop_now().await;
        assert!(!exists(&mut admin, name.clone()).await);
        // The database was dropped already: the last handle's drop does nothing (a database
        // made again under the name, as here, is left alone).
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .unwrap();
        drop(keep);
        assert!(exists(&mut admin, name.clone()).await);
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE `{name}`")))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    /// The sweep drops a test database made more than an hour ago and leaves a fresh one.
    #[tokio::test]
    async fn the_sweep_drops_abandoned_databases_only() {
        let Some(server) = server().await else {
            return;
        };
        // A v7 UUID of two hours ago.
        let then = SystemTime::now() - Duration::from_secs(2 * 3600);
        let since = then.duration_since(UNIX_EPOCH).unwrap();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
        let old = format!("{DATABASE_PREFIX}{}", Uuid::new_v7(ts).simple());
        let fresh = TestDatabase::create().await.unwrap();
        let mut admin = server.admin().await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE `{old}`")))
            .execute(&mut admin)
            .await
            .unwrap();
        sweep(server).await;
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT `SCHEMA_NAME` FROM `information_schema`.`SCHEMATA` WHERE `SCHEMA_NAME` IN (?, ?)",
        )
        .bind(&old)
        .bind(fresh.name())
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(left, [fresh.name().to_owned()]);
        fresh.drop_now().await;
    }
}

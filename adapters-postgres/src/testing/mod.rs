//! A PostgreSQL server for tests, and a fresh database per test (the `testing` feature).
//!
//! Stockroom's own PostgreSQL tests use this module, and an application can too, to test its code
//! against a real PostgreSQL without asking every developer to run a server:
//!
//! ```no_run
//! use stockroom_core::Store;
//! use stockroom_postgres::testing::TestDatabase;
//!
//! #[tokio::test]
//! async fn creates_a_product() {
//!     // `None`: no PostgreSQL on this machine (a line on stderr said so); the test is skipped.
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
//! 1. **The configured server**: `STOCKROOM_TEST_DATABASE_URL`, else `DATABASE_URL` when it is a
//!    `postgres://` or `postgresql://` URL, else `postgres://postgres@127.0.0.1:5432/postgres`
//!    ([`configured_url`]). If a server answers there within two seconds, it is used; its role
//!    must be allowed to create databases. If it answers with an error (a wrong password, an
//!    unknown role), that error is reported: the harness never silently swaps a server that is
//!    there but refuses for another one.
//! 2. **A throwaway cluster**: when nothing answers there and PostgreSQL's binaries are installed
//!    (`initdb`, `pg_ctl` and `postgres` in one directory of `PATH`, else the newest
//!    `/usr/lib/postgresql/<version>/bin`; `STOCKROOM_TEST_PG_BIN_DIR` names the directory
//!    instead), a cluster is made with `initdb` under the temporary directory
//!    (`stockroom-test-pg-<uid>/cluster`: superuser `postgres`, fsync off, 300 connections) and
//!    started. It listens on no TCP address, only on a Unix socket in that directory, which is
//!    its owner's and mode 0700: no other local user can reach it, so its `trust` lets in only
//!    the owner and root. [`Server::url`] names the directory as its host, percent-encoded
//!    (`postgres://postgres@%2Ftmp%2Fstockroom-test-pg-1000%2Fcluster:5432/postgres`). Run as
//!    root, it belongs to the `postgres` OS user (initdb refuses root), and whatever is done
//!    inside its directory runs as that user: root itself creates, reads, removes and signals
//!    nothing there (its connections go to the socket, as any client's). The test processes of
//!    one user share it: the first one starts it under a file lock, the next ones (cargo runs
//!    test binaries one after another) find it running, and each holds a shared lock on a file
//!    while it lives. A small detached `sh` loop, which runs as the cluster's owner, stops it and
//!    removes its files once no test process has held that lock for 15 seconds
//!    (`STOCKROOM_TEST_PG_GRACE_SECS` sets another grace), however the last one ended. Only
//!    `stockroom-test-pg-<uid>` stays, with three empty lock files and the owner's emptied
//!    directory.
//! 3. **Neither**: the PostgreSQL tests are skipped. Each test process prints one line to stderr
//!    saying so and how to run them (start a server, install PostgreSQL, or set
//!    `STOCKROOM_TEST_DATABASE_URL`), and [`server`] and [`TestDatabase::create`] return `None`.
//!    Unless PostgreSQL is required: with `CI` set (to anything but `false` or `0`) or
//!    `STOCKROOM_TEST_REQUIRE_POSTGRES=1`, they panic instead, with the reason, so CI never
//!    passes by skipping.
//!
//! # A database per test
//!
//! [`TestDatabase::create`] runs `CREATE DATABASE stockroom_test_<uuid>` on the server through
//! sqlx, [`TestDatabase::drop_now`] runs `DROP DATABASE … WITH (FORCE)`, and
//! [`TestDatabase::drop_after`] drops it after a test body, whether the body passed or panicked.
//! Tests therefore run in parallel without seeing each other's rows.
//!
//! The admin connection ([`Server::admin`]) is sqlx's `PgConnection`, for tests that run their
//! own SQL; it is the only sqlx type this crate exposes, and only here.

mod cluster;
mod replica;
mod url;

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use stockroom_core::adapter::redact_url;
use stockroom_core::StoreConfig;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::PostgresStore;

pub use replica::ReplicatedServers;
pub use url::{configured_url, with_database, DEFAULT_URL};

/// How long the configured server gets to answer before the harness looks elsewhere.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The server of this process, settled by the first call to [`server`].
static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();

/// The one skip notice of this process.
static SKIP_NOTICE: Once = Once::new();

/// The PostgreSQL server the tests of this process use.
pub struct Server {
    url: String,
    throwaway: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &redact_url(&self.url))
            .field("throwaway", &self.throwaway)
            .finish()
    }
}

impl Server {
    /// The URL of the server's maintenance database, from which tests create theirs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for a throwaway cluster the harness started, false for the configured server.
    pub fn is_throwaway(&self) -> bool {
        self.throwaway
    }

    /// A new connection to the maintenance database, to create and drop databases or to watch
    /// and end other sessions.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached (it answered when it was chosen, so this is a test
    /// environment failure).
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL at {}: {e}", redact_url(&self.url)))
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

/// The server for this process's PostgreSQL tests, found or started on the first call (see the
/// [module docs](self)), or `None` when there is none and the tests are to be skipped (after a
/// line on stderr saying so, once per process).
///
/// # Panics
///
/// When there is no server and PostgreSQL is required ([`postgres_required`]).
pub async fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(resolve).await {
        Ok(server) => Some(server),
        Err(reason) if postgres_required() => panic!("{}", required_message(reason)),
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

/// True when a missing PostgreSQL must fail the tests rather than skip them: `CI` or
/// `STOCKROOM_TEST_REQUIRE_POSTGRES` is set to anything but an empty string, `false` or `0`
/// (`CI=true` on CI services, `STOCKROOM_TEST_REQUIRE_POSTGRES=1` by hand).
pub fn postgres_required() -> bool {
    let var = |name| std::env::var(name).ok();
    is_set(var("CI").as_deref()) || is_set(var("STOCKROOM_TEST_REQUIRE_POSTGRES").as_deref())
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
        "PostgreSQL tests skipped: {}. To run them, start a PostgreSQL server, install PostgreSQL \
         (its initdb and pg_ctl start a throwaway cluster), or set STOCKROOM_TEST_DATABASE_URL; \
         with CI or STOCKROOM_TEST_REQUIRE_POSTGRES=1 set they fail instead.",
        one_line(reason)
    )
}

/// The panic of a test that needs PostgreSQL when there is none.
fn required_message(reason: &str) -> String {
    format!(
        "PostgreSQL is required (CI or STOCKROOM_TEST_REQUIRE_POSTGRES is set) and there is \
         none: {}. Start a PostgreSQL server, install PostgreSQL (its initdb and pg_ctl start a \
         throwaway cluster), or set STOCKROOM_TEST_DATABASE_URL.",
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

/// Finds the server: the configured one if it answers, else a throwaway cluster, else the
/// reason there is none.
async fn resolve() -> Result<Server, String> {
    let configured = configured_url();
    let silence = match probe(&configured).await {
        Probe::Answered => {
            return Ok(Server {
                url: configured,
                throwaway: false,
            })
        }
        Probe::Refused(e) => {
            return Err(format!(
                "PostgreSQL at {} refused the tests: {e}",
                redact_url(&configured)
            ))
        }
        Probe::Silent(why) => why,
    };
    let nothing_at = format!(
        "no PostgreSQL server answers at {} ({silence})",
        redact_url(&configured)
    );
    let Some(bin) = cluster::find_bin_dir() else {
        return Err(format!(
            "{nothing_at} and no PostgreSQL binaries (initdb, pg_ctl, postgres) are in {}",
            cluster::searched_places()
        ));
    };
    let url = start_throwaway(bin)
        .await
        .map_err(|e| format!("{nothing_at} and a throwaway cluster could not start: {e}"))?;
    Ok(Server {
        url,
        throwaway: true,
    })
}

/// Starts (or joins) the throwaway cluster and checks that it serves.
async fn start_throwaway(bin: std::path::PathBuf) -> Result<String, String> {
    let socket_dir = tokio::task::spawn_blocking(move || cluster::acquire(&bin))
        .await
        .map_err(|e| format!("the cluster's start failed: {e}"))??;
    let url = url::socket_url(&socket_dir, cluster::PORT)?;
    match probe(&url).await {
        Probe::Answered => Ok(url),
        Probe::Refused(e) | Probe::Silent(e) => Err(format!("it does not serve on {url}: {e}")),
    }
}

/// What a server did when the harness knocked.
enum Probe {
    Answered,
    /// A server answered, with an error (authentication, a missing database, a bad URL).
    Refused(String),
    /// Nothing answered (connection refused, timed out, unreachable host).
    Silent(String),
}

/// Connects to `url` once, within [`PROBE_TIMEOUT`].
async fn probe(url: &str) -> Probe {
    let options: PgConnectOptions = match url.parse() {
        Ok(options) => options,
        Err(e) => return Probe::Refused(format!("not a PostgreSQL URL ({e})")),
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

/// A database of one test on the test server, created fresh and dropped by
/// [`drop_now`](Self::drop_now) or [`drop_after`](Self::drop_after).
#[derive(Clone)]
pub struct TestDatabase {
    name: String,
    url: String,
    server: &'static Server,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("server", self.server)
            .finish()
    }
}

impl TestDatabase {
    /// Creates `stockroom_test_<uuid>` on the test [`server`], or returns `None` when there is no
    /// server and the test is to be skipped.
    ///
    /// # Panics
    ///
    /// When there is no server and PostgreSQL is required ([`postgres_required`]), or when the
    /// server refuses `CREATE DATABASE`.
    pub async fn create() -> Option<Self> {
        let server = server().await?;
        let name = database_name();
        server.execute(format!("CREATE DATABASE {name}")).await;
        let url = with_database(&server.url, &name);
        Some(Self { name, url, server })
    }

    /// The database's name, `stockroom_test_<uuid>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL of the database, for a store or a connection of the test's own.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server the database lives on.
    pub fn server(&self) -> &'static Server {
        self.server
    }

    /// A store configuration for this database: a small pool (tests run many stores at once
    /// and a server's connections are bounded) and the database's name as application name, so
    /// a test can find its sessions in `pg_stat_activity`.
    pub fn config(&self) -> StoreConfig {
        StoreConfig::new(self.url.clone())
            .with_min_connections(1)
            .with_max_connections(5)
            .with_acquire_timeout(Duration::from_secs(30))
            .with_application_name(self.name.clone())
    }

    /// A store on this database with [`config`](Self::config), migrations applied.
    ///
    /// # Panics
    ///
    /// If the store cannot connect.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.config())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// Drops the database, terminating any session still on it.
    ///
    /// # Panics
    ///
    /// If the server refuses.
    pub async fn drop_now(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        self.server.execute(sql).await;
    }

    /// Runs `body`, then drops the database whether `body` returned or panicked, and re-raises
    /// the panic if it did.
    pub async fn drop_after<T>(self, body: impl Future<Output = T>) -> T {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        self.drop_now().await;
        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// The statements a store sends for a stock move in autocommit and for a product's point read,
/// as they are (with `$1`… placeholders), so that a benchmark can have the server run them
/// without Stockroom (`pgbench -f`).
pub struct Statements {
    /// The stock move: `$1` the ledger row's id, `$2` and `$3` the source's and target's ids,
    /// `$4` the quantity, `$5` the idempotency key (or NULL), `$6` the time, `$7` the most
    /// stock a product holds, `$8` a `lock_timeout` for the transaction (or NULL).
    pub move_stock: &'static str,
    /// A live product by id: `$1` its id.
    pub product_get: String,
}

impl Statements {
    /// The statements of `store`.
    pub fn of(store: &crate::PostgresStore) -> Self {
        Self {
            move_stock: crate::movements::MOVE_STOCK,
            product_get: store.product_get_statement(),
        }
    }
}

/// A fresh database name: `stockroom_test_` and a UUID v7 in lower-case hex, a valid unquoted
/// identifier that sorts by creation.
pub fn database_name() -> String {
    format!("stockroom_test_{}", Uuid::now_v7().simple())
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
    fn the_skip_notice_is_one_line_with_the_reason_and_the_ways_out() {
        let reason = "no server at postgres://postgres@127.0.0.1:1/postgres and initdb said:\n\
                      initdb: error: invalid locale\n\n  try again\n";
        let message = skip_message(reason);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.starts_with("PostgreSQL tests skipped: no server at"));
        assert!(message.contains("initdb said:; initdb: error: invalid locale; try again"));
        for way_out in [
            "start a PostgreSQL server",
            "install PostgreSQL",
            "STOCKROOM_TEST_DATABASE_URL",
            "STOCKROOM_TEST_REQUIRE_POSTGRES=1",
        ] {
            assert!(
                message.contains(way_out),
                "{way_out} missing from {message}"
            );
        }
        let required = required_message(reason);
        assert_eq!(required.lines().count(), 1, "{required}");
        assert!(required.contains("invalid locale"));
    }

    #[test]
    fn database_names_are_fresh_identifiers() {
        let (a, b) = (database_name(), database_name());
        assert_ne!(a, b);
        let suffix = a.strip_prefix("stockroom_test_").expect("the prefix");
        assert_eq!(suffix.len(), 32);
        assert!(suffix
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        // Under PostgreSQL's 63-byte identifier limit, so never truncated.
        assert!(a.len() < 64);
    }

    #[test]
    fn server_debug_hides_the_password() {
        let server = Server {
            url: "postgres://app:hunter2@db:5432/postgres".into(),
            throwaway: false,
        };
        assert!(!format!("{server:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_silent_and_a_bad_url_is_refused() {
        assert!(matches!(
            probe("postgres://postgres@127.0.0.1:1/postgres").await,
            Probe::Silent(_)
        ));
        assert!(matches!(
            probe("postgres://postgres@127.0.0.1:1/postgres?sslmode=sometimes").await,
            Probe::Refused(_)
        ));
    }
}

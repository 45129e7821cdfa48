//! The connected store: a `PgPool` configured from [`StoreConfig`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use stockroom_core::{Error, ReadSession, Result, Rule, Store, StoreConfig, UnitOfWork};

use crate::error::{is_dead_connection, map_error};
use crate::session::{store_closed, PgReadSession, PgUnitOfWork, Shared};

/// How long `close` waits for connections held by sessions in flight.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The schema, embedded at build time from `migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Stockroom on PostgreSQL: a pool of connections, each unit of work a transaction on one of
/// them, each read session a pooled connection without a transaction.
///
/// Build it with [`PostgresStore::connect`]. Its `Debug` shows the URL without its password.
pub struct PostgresStore {
    pool: PgPool,
    log: Arc<Shared>,
    config: StoreConfig,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.config.redacted_url())
            .field("application_name", &self.config.application_name)
            .field("max_connections", &self.config.max_connections())
            .field("open_connections", &self.pool.size())
            .field("idle_connections", &self.pool.num_idle())
            .field("closed", &self.pool.is_closed())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the `postgres://` or `postgresql://` URL of `config` and, unless
    /// `config.run_migrations` is false, applies the embedded migrations.
    ///
    /// The pool keeps `pool_size` connections open and opens up to `max_overflow` more under
    /// load; those extra ones are closed after `idle_timeout`. Every connection is recycled
    /// after `max_lifetime`, checked before it is handed out when `test_before_acquire` is
    /// set (a read session pings it; a unit of work's `BEGIN` serves as the ping), carries `application_name`, and starts with
    /// `session_settings` (such as `jit=off`) as server options, with `lock_timeout` set to
    /// `busy_timeout` unless they set it themselves (a statement that waits longer for a row
    /// lock fails as [`Error::Transient`]). Statements are logged under
    /// the target `stockroom::sql`: all of them at `debug` with `log_statements`, those slower
    /// than `slow_statement_threshold` at `warn`.
    ///
    /// Errors: [`Error::Validation`] on `url` for a URL that is not PostgreSQL's;
    /// [`Error::Unavailable`] when no server answers within `acquire_timeout`.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        let bad_url = || {
            Error::validation(
                "url",
                Rule::Malformed {
                    expected: "a postgres:// or postgresql:// URL",
                },
            )
        };
        match config.scheme().as_deref() {
            Some("postgres" | "postgresql") => {}
            _ => return Err(bad_url()),
        }
        // `busy_timeout` bounds how long a statement waits for a row lock (`lock_timeout`;
        // 55P03 maps to `Transient`), unless the session settings name a lock_timeout.
        let mut settings = config.session_settings.clone();
        if !settings
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("lock_timeout"))
        {
            settings.push((
                "lock_timeout".to_owned(),
                format!("{}ms", config.busy_timeout.as_millis()),
            ));
        }
        // The parse error may quote the URL, password included: it is not passed on.
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|_| bad_url())?
            .application_name(&config.application_name)
            .options(settings)
            // Statements are logged by the sessions, under `stockroom::sql`.
            .disable_statement_logging();
        let max = config.max_connections();
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(config.pool_size.min(max))
            .acquire_timeout(config.acquire_timeout)
            .max_lifetime(config.max_lifetime)
            .idle_timeout(config.idle_timeout)
            // Pre-ping is done here, not by sqlx: a unit of work's BEGIN is its ping (see
            // `begin`), which saves a round trip per unit of work.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(map_error)?;
        let store = Self {
            pool: pool.clone(),
            log: Arc::new(Shared {
                pool: pool.clone(),
                all: config.log_statements,
                slow: config.slow_statement_threshold,
            }),
            config: config.clone(),
        };
        if config.run_migrations {
            if let Err(e) = store.migrate().await {
                store.pool.close().await;
                return Err(e);
            }
        }
        tracing::debug!(
            target: "stockroom::sql",
            url = %config.redacted_url(),
            max_connections = max,
            "connected to PostgreSQL"
        );
        Ok(store)
    }

    /// Applies the embedded migrations that the database does not have yet (under an advisory
    /// lock, so concurrent callers apply each once).
    pub async fn migrate(&self) -> Result<()> {
        self.ensure_open()?;
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        // Migrations wait for their locks (the migrator's advisory lock included) without the
        // `lock_timeout` that `busy_timeout` sets for ordinary statements.
        sqlx::raw_sql("SET lock_timeout = 0")
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        let result = MIGRATOR.run(&mut *conn).await.map_err(|e| match e {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => map_error(e),
            other => Error::backend("migration failed", other),
        });
        sqlx::raw_sql("RESET lock_timeout")
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        result
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// How many connections the pool holds now, idle or in use.
    pub fn open_connections(&self) -> u32 {
        self.pool.size()
    }

    /// Whether `error`, met on a pooled connection before any work, means the connection was
    /// dead (the server closed it) and another should be tried: only with
    /// `test_before_acquire`, and at most once per connection the pool may hold.
    fn retry_on_dead_connection(&self, error: &sqlx::Error, attempts: u32) -> bool {
        self.config.test_before_acquire
            && attempts <= self.config.max_connections()
            && is_dead_connection(error)
    }

    fn ensure_open(&self) -> Result<()> {
        if self.pool.is_closed() {
            return Err(store_closed());
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        self.ensure_open()?;
        // READ COMMITTED (the server's default): rows that must not race are locked
        // explicitly, see `PgUnitOfWork`. With `test_before_acquire`, BEGIN is the ping: a
        // pooled connection that the server closed fails it, is discarded, and the next one is
        // tried.
        let mut attempts = 0;
        loop {
            match self.pool.begin().await {
                Ok(tx) => return Ok(Box::new(PgUnitOfWork::new(tx, Arc::clone(&self.log)))),
                Err(e) => {
                    attempts += 1;
                    if !self.retry_on_dead_connection(&e, attempts) {
                        return Err(map_error(e));
                    }
                }
            }
        }
    }

    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        self.ensure_open()?;
        let mut attempts = 0;
        loop {
            let mut conn = self.pool.acquire().await.map_err(map_error)?;
            if !self.config.test_before_acquire {
                return Ok(Box::new(PgReadSession::new(conn, Arc::clone(&self.log))));
            }
            match conn.ping().await {
                Ok(()) => return Ok(Box::new(PgReadSession::new(conn, Arc::clone(&self.log)))),
                Err(e) => {
                    attempts += 1;
                    if !self.retry_on_dead_connection(&e, attempts) {
                        return Err(map_error(e));
                    }
                }
            }
        }
    }

    async fn health(&self) -> Result<()> {
        self.ensure_open()?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(map_error)
    }

    /// Closes the store at once: `begin`, `read` and `health` fail as `Unavailable` from now
    /// on, and so does the next statement of a session still in flight (a unit of work then
    /// rolls back). Idle connections are closed; a connection still held by a session closes
    /// when the session is dropped. Waits up to two seconds for that to happen.
    async fn close(&self) {
        // Calling `close` marks the pool closed before its future is first polled.
        drop(self.pool.close());
        let pool = self.pool.clone();
        let closing = tokio::spawn(async move { pool.close().await });
        if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
            tracing::warn!(
                target: "stockroom::sql",
                "store closed while sessions were still held; their connections close when \
                 they are dropped"
            );
        }
    }
}

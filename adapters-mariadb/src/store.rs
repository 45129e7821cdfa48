//! [`MariaDbStore`]: the pool, the migrations on connect, and the [`Store`] port.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Executor as _, MySqlPool};
use stockroom_core::adapter::until_deadline;
use stockroom_core::outbox::{Backlog, ClaimOptions, Claimed};
use stockroom_core::schema::Catalog;
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Error, ReadSession, Result, Rule, StorageFault, Store, StoreConfig, UnitOfWork,
};

use crate::error::map_error;
use crate::options::MariaDbOptions;
use crate::plans::Plans;
use crate::session::{
    store_closed, MariaDbReadSession, MariaDbUnitOfWork, Session, StatementLog, START_MARKED,
};

/// How long [`Store::close`] waits for sessions still held before it returns.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Whose pool the store runs on.
enum Owner {
    /// Stockroom's own, built from this configuration: closed with the store.
    Stockroom(Box<StoreConfig>),
    /// The application's ([`MariaDbStore::from_pool`]): left open when the store closes.
    Application,
}

/// What the store's sessions share: the pool, the statements, the settings.
pub(crate) struct Shared {
    /// The pool sessions take their connections from.
    pub(crate) pool: MySqlPool,
    /// The statements of the store's entities, and their declarations.
    pub(crate) plans: Arc<Plans>,
    /// Where statements are logged.
    pub(crate) log: StatementLog,
    /// Whether Stockroom's own events are written.
    pub(crate) own_events: bool,
    /// The lock wait Stockroom's statements set for themselves (`SET STATEMENT
    /// innodb_lock_wait_timeout = … FOR …`), on a pool of the application's, whose sessions keep
    /// their own; `None` on Stockroom's pool, whose connections start with it.
    pub(crate) lock_wait_per_statement: Option<u64>,
    /// What starts every unit of work (its isolation level, then `START TRANSACTION`).
    begin_statement: Arc<str>,
    closed: AtomicBool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.pool.size())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether the store was closed (or its pool, by the application).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.pool.is_closed()
    }

    fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(store_closed());
        }
        Ok(())
    }

    /// A session on a pooled connection in autocommit. The wait for a connection ends at the
    /// deadline of the operation in progress, if any.
    pub(crate) async fn session(self: &Arc<Self>) -> Result<Session> {
        self.ensure_open()?;
        let conn = until_deadline(self.pool.acquire(), "a pooled MariaDB connection")
            .await?
            .map_err(|e| map_error(e, &self.plans.catalog))?;
        Ok(Session::pooled(conn, Arc::clone(self)))
    }

    /// A session in a new transaction, at the store's isolation level.
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<Session> {
        let statement = Arc::clone(&self.begin_statement);
        self.begin_with(statement).await
    }

    /// A session in a new transaction begun by `statement` (`START TRANSACTION`, after what
    /// sets its characteristics).
    pub(crate) async fn begin_with(
        self: &Arc<Self>,
        statement: impl Into<Arc<str>>,
    ) -> Result<Session> {
        self.ensure_open()?;
        let statement: Arc<str> = statement.into();
        let mut session = self.session().await?;
        session.start_transaction(&statement).await?;
        Ok(session)
    }
}

/// A [`Store`] on MariaDB (a Galera cluster's node included), through sqlx's MySQL driver.
///
/// Built by [`MariaDbStore::connect`] (a pool of Stockroom's own) or [`MariaDbStore::from_pool`]
/// (the application's pool). See the [crate docs](crate) for how the design maps to MariaDB.
pub struct MariaDbStore {
    shared: Arc<Shared>,
    owner: Owner,
    options: MariaDbOptions,
}

impl fmt::Debug for MariaDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("MariaDbStore");
        if let Owner::Stockroom(config) = &self.owner {
            s.field("url", &config.redacted_url());
        } else {
            s.field("pool", &"the application's");
        }
        s.field("options", &self.options)
            .field("connections", &self.shared.pool.size())
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

impl MariaDbStore {
    /// Connects to the `mariadb://` or `mysql://` URL of `config` with a pool of Stockroom's own
    /// and, unless `config.run_migrations` is false, applies the migrations (see
    /// [`MariaDbStore::migrate`]).
    ///
    /// The pool keeps `min_connections` connections open and opens up to `max_connections`;
    /// each connection starts with `time_zone = '+00:00'` and the lock wait of
    /// [`MariaDbOptions::lock_wait_timeout`].
    ///
    /// Errors: [`Error::Schema`] for a registered entity whose declaration no backend can store;
    /// [`Error::Validation`] on `url` for a URL that is not MariaDB's; [`Error::Unavailable`]
    /// when the server does not answer within `acquire_timeout`; those of
    /// [`MariaDbStore::migrate`].
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        Self::connect_with(config, MariaDbOptions::from_config(config)).await
    }

    /// [`connect`](Self::connect) with MariaDB's own settings given apart.
    pub async fn connect_with(config: &StoreConfig, options: MariaDbOptions) -> Result<Self> {
        stockroom_core::adapter::refuse_replicas(config, "mariadb")?;
        let plans = plans(&options)?;
        let connect_options = connect_options(&config.url)?;
        let pool = pool_options(config, &options).connect_lazy_with(connect_options);
        let bound = config.acquire_timeout;
        if options.run_migrations {
            let migrated = within(bound, migrate_on(&pool, &plans.catalog)).await;
            if let Err(e) = migrated {
                pool.close().await;
                return Err(e);
            }
        } else {
            // Connect now, so that a wrong URL fails here rather than at the first request.
            let checked = within(bound, async {
                pool.acquire()
                    .await
                    .map(drop)
                    .map_err(|e| map_error(e, &plans.catalog))
            })
            .await;
            if let Err(e) = checked {
                pool.close().await;
                return Err(e);
            }
        }
        tracing::debug!(
            target: "stockroom::sql",
            url = %config.redacted_url(),
            max_connections = config.max_connections,
            "connected to MariaDB"
        );
        Ok(Self::assemble(
            pool,
            options,
            Owner::Stockroom(Box::new(config.clone())),
            plans,
        ))
    }

    /// A store on the application's own pool, sharing its connections, and, unless
    /// `options.run_migrations` is false, with the migrations applied.
    ///
    /// Stockroom takes connections from `pool` for its sessions and gives them back; it sends
    /// each unit of work's isolation level with its `START TRANSACTION` and changes no session
    /// setting of the pool's connections: the store's lock wait is set by each of its
    /// statements for itself (`SET STATEMENT innodb_lock_wait_timeout = … FOR …`; the
    /// application's SQL on a lent connection waits as the pool's sessions do), and timestamps
    /// are written and compared as UTC whatever the connections' `time_zone` (Stockroom binds
    /// them itself and uses `UTC_TIMESTAMP`). [`Store::close`] stops Stockroom's sessions but leaves
    /// `pool` open.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use stockroom_mariadb::{sqlx, MariaDbOptions, MariaDbStore};
    ///
    /// let pool = sqlx::MySqlPool::connect("mysql://app@127.0.0.1/shop").await?;
    /// let store = MariaDbStore::from_pool(pool.clone(), MariaDbOptions::default()).await?;
    /// // … the application keeps using `pool`, and Stockroom uses it too.
    /// # Ok(()) }
    /// ```
    pub async fn from_pool(pool: MySqlPool, options: MariaDbOptions) -> Result<Self> {
        let plans = plans(&options)?;
        if options.run_migrations {
            let bound = pool.options().get_acquire_timeout();
            within(bound, migrate_on(&pool, &plans.catalog)).await?;
        }
        Ok(Self::assemble(pool, options, Owner::Application, plans))
    }

    fn assemble(pool: MySqlPool, options: MariaDbOptions, owner: Owner, plans: Arc<Plans>) -> Self {
        let begin_statement = begin_statement(options.isolation);
        let lock_wait_per_statement =
            matches!(owner, Owner::Application).then(|| options.lock_wait_seconds());
        let shared = Shared {
            lock_wait_per_statement,
            pool,
            plans,
            log: StatementLog::new(options.log_statements, options.slow_statement_threshold),
            own_events: options.own_events,
            begin_statement: Arc::from(begin_statement),
            closed: AtomicBool::new(false),
        };
        Self {
            shared: Arc::new(shared),
            owner,
            options,
        }
    }

    /// Applies the migrations the database does not have yet, bookkept in
    /// `stockroom_migrations` (never sqlx's `_sqlx_migrations`, which stays the application's),
    /// under the named lock `GET_LOCK('stockroom_migrations')`, so concurrent callers apply each
    /// once; then makes, extends or checks the entities' tables (see the [crate docs](crate)).
    /// It runs on a connection of its own, closed afterwards (never given back to the pool
    /// holding the lock, even when this future is dropped midway).
    pub async fn migrate(&self) -> Result<()> {
        self.shared.ensure_open()?;
        migrate_on(&self.shared.pool, &self.shared.plans.catalog).await
    }

    /// The configuration the store was connected with; `None` for a store on the
    /// application's pool.
    pub fn config(&self) -> Option<&StoreConfig> {
        match &self.owner {
            Owner::Stockroom(config) => Some(config),
            Owner::Application => None,
        }
    }

    /// The adapter's options the store runs with.
    pub fn options(&self) -> &MariaDbOptions {
        &self.options
    }

    /// The pool the store's sessions take their connections from.
    pub fn pool(&self) -> &MySqlPool {
        &self.shared.pool
    }

    /// How many connections the pool holds now, idle or in use.
    pub fn open_connections(&self) -> u32 {
        self.shared.pool.size()
    }
}

/// What begins a transaction at `isolation`: the level, then autocommit off and the
/// transaction's marker row (see [`START_MARKED`]), in one round trip.
pub(crate) fn begin_statement(isolation: crate::IsolationLevel) -> String {
    format!(
        "SET TRANSACTION ISOLATION LEVEL {}; {START_MARKED}",
        isolation.as_sql()
    )
}

/// The statements of the store's entities, built from their declarations.
fn plans(options: &MariaDbOptions) -> Result<Arc<Plans>> {
    let catalog = Catalog::new(options.entities())?;
    Ok(Arc::new(Plans::new(catalog)))
}

/// `wait`, or [`Error::Unavailable`] when it takes longer than `bound`.
async fn within<T>(
    bound: Duration,
    wait: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(bound, wait).await.unwrap_or_else(|_| {
        Err(Error::unavailable(format!(
            "MariaDB did not answer within {bound:?}"
        )))
    })
}

/// Runs the migrations on a connection of their own, made with the pool's options and closed
/// afterwards: dropped midway, it is closed (and the server releases its named lock).
async fn migrate_on(pool: &MySqlPool, catalog: &Catalog) -> Result<()> {
    let options = pool.connect_options();
    let mut conn = options.connect().await.map_err(|e| map_error(e, catalog))?;
    let migrated = crate::migrate::migrate(&mut conn, catalog).await;
    // Closed either way: the migrations leave nothing the pool should inherit.
    let _ = conn.close().await;
    migrated
}

/// The connect options of `url`: `mariadb://` is read as `mysql://`, which sqlx parses.
pub(crate) fn connect_options(url: &str) -> Result<MySqlConnectOptions> {
    let rest = url
        .strip_prefix("mariadb://")
        .or_else(|| url.strip_prefix("mysql://"))
        .ok_or_else(|| {
            Error::validation(
                "url",
                Rule::Malformed {
                    expected: "a mariadb:// or mysql:// URL",
                },
            )
        })?;
    MySqlConnectOptions::from_str(&format!("mysql://{rest}")).map_err(|_| {
        Error::validation(
            "url",
            Rule::Malformed {
                expected: "a mariadb:// or mysql:// URL",
            },
        )
    })
}

/// The pool `config` describes; each connection starts in UTC with the options' lock wait.
fn pool_options(config: &StoreConfig, options: &MariaDbOptions) -> MySqlPoolOptions {
    let session = Arc::<str>::from(format!(
        "SET time_zone = '+00:00', innodb_lock_wait_timeout = {}",
        options.lock_wait_seconds()
    ));
    MySqlPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .max_lifetime(config.max_lifetime)
        .test_before_acquire(config.test_before_acquire)
        .after_connect(move |conn, _| {
            let session = Arc::clone(&session);
            Box::pin(async move {
                conn.execute(AssertSqlSafe(session.to_string())).await?;
                Ok(())
            })
        })
}

#[async_trait]
impl Store for MariaDbStore {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::MariaDb
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        let session = self.shared.begin().await?;
        Ok(Box::new(MariaDbUnitOfWork::new(session)))
    }

    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        let session = self.shared.session().await?;
        Ok(Box::new(MariaDbReadSession::new(session)))
    }

    async fn health(&self) -> Result<()> {
        const PING: &str = "SELECT 1";
        let mut session = self.shared.session().await?;
        session.execute(PING, sqlx::query(PING)).await.map(drop)
    }

    async fn readiness(&self) -> Result<()> {
        const QUERY: &str = "SELECT @@read_only";
        let mut session = self.shared.session().await?;
        let row = session.fetch_one(QUERY, sqlx::query(QUERY)).await?;
        let read_only: i64 = crate::codec::at(&row, 0)?;
        if read_only != 0 {
            return Err(Error::storage(
                StorageFault::ReadOnly,
                "the MariaDB server is read-only (@@read_only)",
            ));
        }
        Ok(())
    }

    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed> {
        crate::outbox::claim_events(&self.shared, options).await
    }

    async fn outbox_backlog(&self) -> Result<Backlog> {
        crate::outbox::outbox_backlog(&self.shared).await
    }

    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64> {
        crate::outbox::purge_delivered_events(&self.shared, before).await
    }

    async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        if matches!(self.owner, Owner::Application) {
            return;
        }
        let pool = self.shared.pool.clone();
        // Calling `close` marks the pool closed before its future is first polled.
        drop(pool.close());
        let closing = tokio::spawn(async move { pool.close().await });
        if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
            tracing::warn!(
                target: "stockroom::sql",
                "store closed while sessions were still held; their connections close when they \
                 are dropped"
            );
        }
    }
}

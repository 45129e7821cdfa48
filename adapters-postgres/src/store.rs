//! The connected store: a `PgPool` of Stockroom's own, configured from [`StoreConfig`], or one
//! the application lends.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Postgres, SqlSafeStr, Transaction};
use stockroom_core::outbox::{Backlog, ClaimOptions, Claimed};
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Error, NewStockMovement, ReadSession, Result, Rule, StockMoved, Store, StoreConfig, UnitOfWork,
};

use stockroom_core::adapter::{
    deadline_reached, move_stock_in_own_unit_of_work, time_left, until_deadline,
};
use stockroom_core::schema::Catalog;

use crate::connections::{Begin, CloseUnlessSettled, Connections, Lease};
use crate::engine::Engine;
use crate::error::{is_dead_connection, map_error};
use crate::migrate;
use crate::options::{timeout_value, IsolationLevel, PostgresOptions};
use crate::outbox::{PgLease, Publishing};
use crate::plans::Plans;
use crate::replicas::{ReplicaPools, Replicas};
use crate::session::{store_closed, PgReadSession, PgUnitOfWork, Session, StatementLog};

/// How long `close` waits for connections held by sessions in flight.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whose pool a store runs on.
enum Owner {
    /// Stockroom built it from this configuration, and closes it on `close`.
    Stockroom(Box<StoreConfig>),
    /// The application lent it; `close` leaves it open.
    Application,
}

/// Stockroom on PostgreSQL: a pool of connections, each unit of work a transaction on one of
/// them, each read session a pooled connection without a transaction (a read replica's, when
/// the configuration names replicas: see [Read replicas](crate#read-replicas)).
///
/// Build it with [`PostgresStore::connect`] (a pool of its own) or
/// [`PostgresStore::from_pool`] (the application's pool). Its `Debug` shows the URL without its
/// password.
pub struct PostgresStore {
    pool: PgPool,
    /// Where sessions get their connections; closed by [`Store::close`].
    connections: Arc<Connections>,
    /// Where read sessions get theirs: the replicas in turn, else `connections`.
    replicas: Arc<Replicas>,
    log: StatementLog,
    options: PostgresOptions,
    owner: Owner,
    /// The statement that begins a unit of work outside a deadline: `BEGIN ISOLATION LEVEL …`
    /// with an isolation level, followed by `; SET LOCAL …` for the [`LocalTimeouts`] (one
    /// round trip like a plain `BEGIN`); `None`, a plain `BEGIN`, without either.
    begin_statement: Option<Arc<str>>,
    /// The engine behind the connections, probed when the store was built.
    engine: Engine,
    /// The store's entities and their statements, shared by its sessions.
    plans: Arc<Plans>,
    /// How its sessions write to the outbox.
    publishing: Publishing,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PostgresStore");
        match &self.owner {
            Owner::Stockroom(config) => d
                .field("pool", &"own")
                .field("url", &config.redacted_url())
                .field("application_name", &config.application_name),
            Owner::Application => d.field("pool", &"borrowed"),
        };
        d.field("options", &self.options)
            .field("replicas", &self.replicas)
            .field(
                "max_connections",
                &self.pool.options().get_max_connections(),
            )
            .field("open_connections", &self.pool.size())
            .field("idle_connections", &self.pool.num_idle())
            .field("kept_connections", &self.connections.kept())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the `postgres://` or `postgresql://` URL of `config` with a pool of
    /// Stockroom's own and, unless `config.run_migrations` is false, applies the embedded
    /// migrations.
    ///
    /// The pool keeps `min_connections` connections open and opens up to `max_connections`
    /// under load; the extra ones are closed after `idle_timeout`. Every connection is replaced
    /// after `max_lifetime` (give or take a second, see below), never handed to a caller
    /// dead when [`PostgresOptions::test_before_acquire`] is set, carries
    /// `application_name`, and starts with the session settings of [`PostgresOptions`] (such as
    /// `jit=off`) as server options, with its `lock_timeout` (5 s unless the URL's `options` set
    /// one) (a
    /// statement that waits longer for a lock fails as [`Error::Transient`]). Statements are
    /// logged under the target `stockroom::sql`: all of them at `debug` with
    /// `log_statements`, those slower than `slow_statement_threshold` at `warn`. A session
    /// that ends with its connection in a known state leaves it to the next session for up to
    /// a second before sqlx's pool gets it back (sqlx pings every connection it takes back).
    /// The rest is [`PostgresStore::from_pool`] with [`PostgresOptions::from_config`].
    ///
    /// Each of `config.replica_urls` gets a pool of its own with the same settings, connected
    /// lazily (a replica that is down does not fail the connect), without migrations; read
    /// sessions go to the replicas (see [Read replicas](crate#read-replicas)).
    ///
    /// Errors: [`Error::Schema`] for a registered entity whose declaration no backend can
    /// store (before any connection is made); [`Error::Validation`] on `url` (or
    /// `replica_urls`) for a URL that is not PostgreSQL's; [`Error::Unavailable`] when the
    /// primary does not answer within `acquire_timeout` (the engine probe and the pool's first
    /// connection together, so a server that accepts connections and never answers does not
    /// hold `connect` longer); those of [`PostgresStore::migrate`].
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        Self::connect_with(config, PostgresOptions::from_config(config)).await
    }

    /// [`connect`](Self::connect) with PostgreSQL's own settings given apart: the pool as
    /// `config` describes it, the sessions as `options` do (the lock timeout, the session
    /// settings such as `jit=off`, statement logging, migrations).
    ///
    /// Before the pool opens, one connection asks the server which engine it is
    /// ([`Engine::from_version`]), so that the pool's connections start only with settings the
    /// engine knows and migrations lock only where the engine can.
    pub async fn connect_with(config: &StoreConfig, options: PostgresOptions) -> Result<Self> {
        let plans = plans(&options)?;
        let base = connect_options(config, &config.url, "url")?;
        // The replicas' URLs are checked before connecting.
        ReplicaPools::check(config)?;
        let (engine, probe) = answered_within(config.acquire_timeout, probe_engine(&base)).await?;
        // The pool opens its first connection while the probe's connection applies the
        // migrations: two connections made at once, not one after the other, before the first
        // statement (the first transfer takes the pool's).
        let pool = answered_within(
            config.acquire_timeout,
            connect_pool(config, base, &options, engine),
        );
        let migrated = migrate_on(probe, options.run_migrations, engine, &plans.catalog);
        let (pool, migrated) = futures_util::future::join(pool, migrated).await;
        let pool = pool?;
        if let Err(e) = migrated {
            pool.close().await;
            return Err(e);
        }
        // Connected lazily, with the primary's engine's settings.
        let replicas = ReplicaPools::connect(config, &options, engine)?;
        let owner = Owner::Stockroom(Box::new(config.clone()));
        let mut store = Self::assemble(pool, options, owner, engine, plans);
        store.replicas = Arc::new(replicas.falling_back_to(&store.connections));
        tracing::debug!(
            target: "stockroom::sql",
            url = %config.redacted_url(),
            max_connections = config.max_connections,
            "connected to PostgreSQL"
        );
        Ok(store)
    }

    /// A store on the application's own pool, sharing its connections and their settings, and,
    /// unless `options.run_migrations` is false, with the embedded migrations applied.
    ///
    /// Stockroom takes connections from `pool` for its sessions and gives them back. What it
    /// needs of every transaction that the pool's connections do not carry (the lock timeout)
    /// is sent with the unit of work's `BEGIN` (`SET LOCAL`, same round trip), so it never
    /// changes a setting of the application's sessions. [`Store::close`] stops Stockroom's
    /// sessions but leaves `pool` open.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use stockroom_postgres::{sqlx, PostgresOptions, PostgresStore};
    ///
    /// let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/shop").await?;
    /// let store = PostgresStore::from_pool(pool.clone(), PostgresOptions::default()).await?;
    /// // … the application keeps using `pool`, and Stockroom uses it too.
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::Schema`] for a registered entity whose declaration no backend can
    /// store; [`Error::Unavailable`] naming the cause (connection refused, …) when the server
    /// cannot be reached by the one connection, made with the pool's options, that asks which
    /// engine it is, or does not answer it within the pool's acquire timeout; those of
    /// [`PostgresStore::migrate`].
    pub async fn from_pool(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        let plans = plans(&options)?;
        // On a connection of its own, made with the pool's options: a lazy pool that cannot
        // reach its server would only say, after its acquire timeout, that it timed out, where
        // a direct connection names the cause at once (connection refused, no such database).
        let bound = pool.options().get_acquire_timeout();
        let (engine, probe) = answered_within(bound, probe_engine(&pool.connect_options())).await?;
        // On that connection too, so that the migrations never hold one of the application's.
        migrate_on(probe, options.run_migrations, engine, &plans.catalog).await?;
        Ok(Self::assemble(
            pool,
            options,
            Owner::Application,
            engine,
            plans,
        ))
    }

    fn assemble(
        pool: PgPool,
        options: PostgresOptions,
        owner: Owner,
        engine: Engine,
        plans: Arc<Plans>,
    ) -> Self {
        let timeouts = LocalTimeouts::of(&options, &owner, None);
        let begin_statement = begin_statement(options.isolation, timeouts).map(Arc::from);
        // Connections are kept out of the pool between sessions only when nobody else takes
        // connections from it.
        let keeps = matches!(owner, Owner::Stockroom(_));
        let mut connections = Connections::new(pool.clone(), keeps, options.test_before_acquire);
        if options.analyze_after_bulk_insert && engine == Engine::PostgreSql {
            connections = connections.with_analyzer();
        }
        let connections = Arc::new(connections);
        let publishing = Publishing::of(&options, engine);
        Self {
            pool,
            replicas: Arc::new(Replicas::none(&connections)),
            connections,
            log: StatementLog::new(options.log_statements, options.slow_statement_threshold),
            options,
            owner,
            begin_statement,
            engine,
            plans,
            publishing,
        }
    }

    /// The engine behind the store's connections (PostgreSQL, CockroachDB, YugabyteDB), as
    /// its `version()` told when the store was built.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies the embedded migrations that the database does not have yet, bookkept in
    /// `stockroom_migrations` (not sqlx's `_sqlx_migrations`, which stays the application's),
    /// under an advisory lock of Stockroom's own, so concurrent callers apply each once and
    /// never wait for the application's migrator nor it for them. A database whose Stockroom
    /// migrations are recorded in `_sqlx_migrations` (by an earlier version) has those rows
    /// moved to `stockroom_migrations` first, in one transaction; the application's rows are
    /// left alone. Migrations wait for their locks without the lock timeout.
    ///
    /// Then, under the same lock, the tables of the application's entities are made, extended
    /// or checked (see [Your own entities](crate#your-own-entities)): a table that no longer
    /// matches its entity's declaration, or that Stockroom did not make, is [`Error::Schema`]
    /// naming the entity and what differs, and nothing is changed.
    pub async fn migrate(&self) -> Result<()> {
        self.ensure_open()?;
        let conn = self.pool.acquire().await.map_err(map_error)?;
        // Failed, or dropped midway (its caller gave up), the session may still hold the
        // advisory lock or the changed timeouts: it must not go back to the pool, least of all
        // to the application's.
        let mut conn = CloseUnlessSettled::new(conn);
        migrate::run(&mut conn, self.engine, &self.plans.catalog).await?;
        conn.settle();
        Ok(())
    }

    /// The configuration the store was connected with; `None` for a store on the
    /// application's pool ([`PostgresStore::from_pool`]).
    pub fn config(&self) -> Option<&StoreConfig> {
        match &self.owner {
            Owner::Stockroom(config) => Some(config),
            Owner::Application => None,
        }
    }

    /// The adapter's options the store runs with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// How many connections the pool holds now, idle or in use (on a borrowed pool, the
    /// application's included).
    pub fn open_connections(&self) -> u32 {
        self.pool.size()
    }

    /// Whether an autocommit statement would run at another level than the one asked for: on a
    /// borrowed pool, whose connections keep the application's default.
    fn isolation_needs_a_transaction(&self) -> bool {
        self.options.isolation.is_some() && matches!(self.owner, Owner::Application)
    }

    fn is_closed(&self) -> bool {
        self.connections.is_closed() || self.pool.is_closed()
    }

    fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(store_closed());
        }
        Ok(())
    }

    /// A session on a pooled connection, without a transaction. No round trip (see
    /// `crate::connections`).
    pub(crate) async fn pooled_session(&self) -> Result<Session> {
        self.ensure_open()?;
        let lease = self.lend().await?.map_err(map_error)?;
        Ok(Session::pooled(
            lease,
            Arc::clone(&self.connections),
            Arc::clone(&self.plans),
            self.log,
            self.publishing,
        ))
    }

    /// A connection of the primary, waited for no longer than the deadline of the operation in
    /// progress (then `Transient`; the pool's own acquire timeout still applies).
    async fn lend(&self) -> Result<sqlx::Result<Lease>> {
        until_deadline(self.connections.lend(), "a pooled PostgreSQL connection").await
    }

    /// Begins a transaction on a lent connection with `statement` (`None`: `BEGIN`).
    async fn begin_transaction(
        &self,
        statement: Option<&Arc<str>>,
    ) -> Result<sqlx::Result<Transaction<'static, Postgres>>> {
        let lease = match self.lend().await? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(e)),
        };
        let statement = statement.map(|s| AssertSqlSafe(Arc::clone(s)).into_sql_str());
        Ok(Begin::new(lease.into_pool_connection(), statement).await)
    }

    /// The statement that begins a unit of work now: the store's own, or, within a deadline,
    /// one that also bounds the transaction's waits and statements by the time left. Past the
    /// deadline nothing is to be sent: `Transient`.
    fn begin_statement_now(&self) -> Result<Option<Arc<str>>> {
        match time_left() {
            None => Ok(self.begin_statement.clone()),
            Some(left) if left.is_zero() => Err(deadline_reached("a transaction to begin")),
            Some(left) => {
                let timeouts = LocalTimeouts::of(&self.options, &self.owner, Some(left));
                Ok(begin_statement(self.options.isolation, timeouts).map(Arc::from))
            }
        }
    }

    /// The statement of a live product's point read (for `testing::Statements`).
    #[cfg(feature = "testing")]
    pub(crate) fn product_get_statement(&self) -> String {
        let schema = <stockroom_core::Product as stockroom_core::Entity>::schema();
        self.plans
            .of(schema)
            .map(|plan| plan.get.to_string())
            .expect("Stockroom's products are in every store's plans")
    }

    /// The `lock_timeout` a statement sent in autocommit (a stock move, a settle or a purge of
    /// the outbox) sets for itself.
    fn autocommit_lock_timeout(&self) -> AutocommitLockTimeout {
        AutocommitLockTimeout {
            configured: self.options.lock_timeout,
            borrowed: matches!(self.owner, Owner::Application),
        }
    }

    /// Past the deadline of the operation in progress nothing is to be sent: `Transient`
    /// naming `what`.
    fn ensure_time_left(what: &str) -> Result<()> {
        if time_left().is_some_and(|left| left.is_zero()) {
            return Err(deadline_reached(what));
        }
        Ok(())
    }
}

/// The `lock_timeout` a statement sent in autocommit (a stock move, a settle or a purge of the
/// outbox) sets for its own transaction: the options' on a borrowed pool (Stockroom's own
/// connections carry it from their start), and within a deadline the time left where shorter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AutocommitLockTimeout {
    /// The options' `lock_timeout`.
    configured: Option<Duration>,
    /// Whether the pool is the application's.
    borrowed: bool,
}

impl AutocommitLockTimeout {
    /// The value to set now (a PostgreSQL `lock_timeout`), `None` for the connection's own.
    /// Past the deadline nothing is to be sent: `Transient`, waiting for `what`.
    pub(crate) fn now(&self, what: &str) -> Result<Option<String>> {
        let left = time_left();
        if left.is_some_and(|left| left.is_zero()) {
            return Err(deadline_reached(what));
        }
        Ok(per_transaction(self.configured, self.borrowed, left).map(timeout_value))
    }
}

/// The timeouts a transaction sets for itself (`SET LOCAL`, sent with its `BEGIN`), and the
/// `lock_timeout` a stock move in autocommit sets for itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LocalTimeouts {
    lock: Option<Duration>,
    statement: Option<Duration>,
}

impl LocalTimeouts {
    /// What `options` need set per transaction on `owner`'s pool: nothing on Stockroom's own,
    /// whose connections carry the timeouts from their start, the options' on a borrowed pool.
    /// With `left` (the time left before a deadline), both are set, to the time left where it
    /// is shorter than the options' (or they set no limit).
    fn of(options: &PostgresOptions, owner: &Owner, left: Option<Duration>) -> Self {
        let borrowed = matches!(owner, Owner::Application);
        Self {
            lock: per_transaction(options.lock_timeout, borrowed, left),
            statement: per_transaction(options.statement_timeout, borrowed, left),
        }
    }
}

/// A timeout a transaction sets for itself, `configured` in the options: that one on a
/// `borrowed` pool (Stockroom's own connections carry it from their start); with `left` (the
/// time left before a deadline), the time left where it is shorter than the configured one (or
/// that one sets no limit).
fn per_transaction(
    configured: Option<Duration>,
    borrowed: bool,
    left: Option<Duration>,
) -> Option<Duration> {
    match (left, configured) {
        (Some(left), Some(timeout)) if !timeout.is_zero() => Some(timeout.min(left)),
        (Some(left), _) => Some(left),
        (None, configured) if borrowed => configured,
        (None, _) => None,
    }
}

/// The catalog of Stockroom's entities and those `options` registers, each declaration checked
/// (an invalid one is `Error::Schema`, before any connection is made), with their statements.
fn plans(options: &PostgresOptions) -> Result<Arc<Plans>> {
    Ok(Arc::new(Plans::new(Catalog::new(options.entities())?)))
}

/// `SELECT version()`: what tells the engines apart.
const VERSION: &str = "SELECT version()";

/// The statement that begins a unit of work at `isolation`, setting the `timeouts` given for
/// the transaction; `None` when a plain `BEGIN` does.
fn begin_statement(isolation: Option<IsolationLevel>, timeouts: LocalTimeouts) -> Option<String> {
    let mut statement = match isolation {
        Some(level) => format!("BEGIN ISOLATION LEVEL {}", level.as_sql()),
        None => "BEGIN".to_owned(),
    };
    let settings = [
        ("lock_timeout", timeouts.lock),
        ("statement_timeout", timeouts.statement),
    ];
    for (name, timeout) in settings {
        if let Some(timeout) = timeout {
            // Values of ours (`<n>ms`), never user text.
            statement.push_str(&format!(
                "; SET LOCAL {name} = '{}'",
                timeout_value(timeout)
            ));
        }
    }
    (statement != "BEGIN").then_some(statement)
}

/// The connection options `url` (the primary's, or a replica's) and `config`'s application
/// name make, before any setting. A `url` that is not PostgreSQL's is a validation error on
/// `field`.
pub(crate) fn connect_options(
    config: &StoreConfig,
    url: &str,
    field: &'static str,
) -> Result<PgConnectOptions> {
    let bad_url = || {
        Error::validation(
            field,
            Rule::Malformed {
                expected: "a postgres:// or postgresql:// URL",
            },
        )
    };
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => {}
        _ => return Err(bad_url()),
    }
    // The parse error may quote the URL, password included: it is not passed on.
    Ok(PgConnectOptions::from_str(url)
        .map_err(|_| bad_url())?
        .application_name(&config.application_name)
        // Statements are logged by the sessions, under `stockroom::sql`.
        .disable_statement_logging())
}

/// `connecting`, or `Unavailable` once `timeout` (the acquire timeout) has passed. sqlx bounds
/// the wait for a pooled connection, but not a connection made directly (the engine probe): a
/// server that accepts the connection and never answers would hold it forever.
async fn answered_within<T>(
    timeout: std::time::Duration,
    connecting: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(Error::unavailable(format!(
                "PostgreSQL did not answer within the acquire timeout ({timeout:?})"
            )))
        })
}

/// Which engine answers at `options`, asked on a connection of its own, which is returned for
/// the migrations ([`migrate_on`]).
async fn probe_engine(options: &PgConnectOptions) -> Result<(Engine, sqlx::PgConnection)> {
    let mut conn = options.connect().await.map_err(map_error)?;
    let version: String = sqlx::query_scalar(VERSION)
        .fetch_one(&mut conn)
        .await
        .map_err(map_error)?;
    Ok((Engine::from_version(&version), conn))
}

/// Applies the migrations on `conn`, the probe's connection, if `run` says so, then closes it:
/// a session of its own that no pool ever gets back, whatever the migrations left on it (their
/// advisory lock, their timeouts), even when this future is dropped midway (the connection
/// closes with it, and the server lets go of the lock).
async fn migrate_on(
    mut conn: sqlx::PgConnection,
    run: bool,
    engine: Engine,
    catalog: &stockroom_core::schema::Catalog,
) -> Result<()> {
    let migrated = if run {
        migrate::run(&mut conn, engine, catalog).await
    } else {
        Ok(())
    };
    let _ = conn.close().await;
    migrated
}

/// The settings every connection of Stockroom's own pool starts with: the session settings the
/// engine knows, the lock timeout, and the isolation level if one is asked for.
pub(crate) fn startup_settings(options: &PostgresOptions, engine: Engine) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = engine
        .supported_settings(&options.session_settings)
        .cloned()
        .collect();
    if let Some(timeout) = options.lock_timeout {
        settings.push(("lock_timeout".to_owned(), timeout_value(timeout)));
    }
    if let Some(timeout) = options.statement_timeout {
        settings.push(("statement_timeout".to_owned(), timeout_value(timeout)));
    }
    if let Some(level) = options.isolation {
        let value = level.setting().to_owned();
        settings.push(("default_transaction_isolation".to_owned(), value));
    }
    settings
}

/// Stockroom's own pool, as `config` describes it, its connections made from `base` with the
/// [`startup_settings`].
async fn connect_pool(
    config: &StoreConfig,
    base: PgConnectOptions,
    options: &PostgresOptions,
    engine: Engine,
) -> Result<PgPool> {
    let connect_options = base.options(startup_settings(options, engine));
    pool_options(config)
        .connect_with(connect_options)
        .await
        .map_err(map_error)
}

/// The pool `config` describes (the primary's, and each replica's).
pub(crate) fn pool_options(config: &StoreConfig) -> PgPoolOptions {
    let max = config.max_connections.max(1);
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(config.min_connections.min(max))
        .acquire_timeout(config.acquire_timeout)
        .max_lifetime(config.max_lifetime)
        .idle_timeout(config.idle_timeout)
        // No ping: see `crate::connections`.
        .test_before_acquire(false)
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Postgres
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        self.ensure_open()?;
        // At the isolation level asked for, or the server's default: rows that must not race
        // are locked explicitly, see `PgUnitOfWork`. BEGIN is the connection's check (see
        // `crate::connections`): on a dead connection it is sent again on the next one.
        let statement = self.begin_statement_now()?;
        let mut failures = 0;
        loop {
            match self.begin_transaction(statement.as_ref()).await? {
                Ok(tx) => {
                    return Ok(Box::new(PgUnitOfWork::new(
                        tx,
                        Arc::clone(&self.connections),
                        Arc::clone(&self.plans),
                        self.log,
                        self.publishing,
                    )));
                }
                Err(e) => {
                    failures += 1;
                    if !self.connections.replaces(&e, failures) {
                        return Err(map_error(e));
                    }
                }
            }
        }
    }

    /// A read session on a replica's connection, taken in turn, or on the primary's when no
    /// replica serves (see the crate docs, [Read replicas](crate#read-replicas)); on the
    /// primary's on a store without replicas. A replica may lag behind the primary: for a
    /// read that must see this process's own writes, use
    /// [`read_primary`](Store::read_primary).
    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        self.ensure_open()?;
        let lease = self.replicas.lend().await.map_err(map_error)?;
        let session = Session::pooled(
            lease,
            Arc::clone(&self.connections),
            Arc::clone(&self.plans),
            self.log,
            self.publishing,
        );
        Ok(Box::new(PgReadSession::new(session)))
    }

    /// A read session on the primary's connection, whatever the replicas: it sees every unit
    /// of work committed before it was taken (read-your-writes). The same as
    /// [`read`](Store::read) on a store without replicas.
    async fn read_primary(&self) -> Result<Box<dyn ReadSession>> {
        Ok(Box::new(PgReadSession::new(self.pooled_session().await?)))
    }

    /// The stock move in one statement, in autocommit: its own transaction, without a `BEGIN`
    /// or a `COMMIT` to send (see `Session::move_stock`). On a borrowed pool, and within a
    /// deadline, the statement sets its lock timeout for itself (see
    /// [`PostgresOptions::statement_timeout`] on deadlines).
    async fn move_stock(&self, movement: &NewStockMovement) -> Result<StockMoved> {
        if self.isolation_needs_a_transaction() {
            return move_stock_in_own_unit_of_work(self, movement).await;
        }
        let lock_timeout = self
            .autocommit_lock_timeout()
            .now("the stock move to be sent")?;
        let row = movement.clone().into_entity(stockroom_core::time::now());
        let mut session = self.pooled_session().await?;
        session.move_stock(row, lock_timeout.as_deref()).await
    }

    /// The claim in one statement in autocommit on a pooled connection of the primary (never a
    /// replica's), a transaction of its own (see the `outbox` module): the lanes locked
    /// `FOR UPDATE SKIP LOCKED`, so concurrent claims lease disjoint lanes without waiting for
    /// each other. Under REPEATABLE READ or SERIALIZABLE (see [`PostgresOptions::isolation`]), a
    /// lane leased by a claim that committed while this one ran fails it with a serialization
    /// failure, `Error::Transient`.
    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed> {
        options.check()?;
        Self::ensure_time_left("the claim to be sent")?;
        let token = uuid::Uuid::now_v7();
        let mut session = self.pooled_session().await?;
        let events = crate::outbox::claim(&mut session, options, token).await?;
        drop(session);
        if events.is_empty() {
            // No lane was leased: with one, the statement's snapshot holds its events.
            return Ok(Claimed::nothing());
        }
        let lease = PgLease::new(
            token,
            Arc::clone(&self.connections),
            Arc::clone(&self.plans),
            self.log,
            self.publishing,
            self.autocommit_lock_timeout(),
        );
        Ok(Claimed::new(events, Box::new(lease)))
    }

    async fn outbox_backlog(&self) -> Result<Backlog> {
        Self::ensure_time_left("the backlog to be read")?;
        let mut session = self.pooled_session().await?;
        crate::outbox::backlog(&mut session).await
    }

    /// One `DELETE` in autocommit on a pooled connection of the primary.
    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64> {
        let before = stockroom_core::time::supported("before", before)?;
        let lock_timeout = self.autocommit_lock_timeout().now("the purge to be sent")?;
        let mut session = self.pooled_session().await?;
        crate::outbox::purge(&mut session, before, lock_timeout).await
    }

    async fn health(&self) -> Result<()> {
        const PING: &str = "SELECT 1";
        let mut session = self.pooled_session().await?;
        session.execute(PING, sqlx::query(PING)).await.map(drop)
    }

    /// Whether the store can write now, asked on a connection that waits behind nobody: an idle
    /// one of the pool if there is one (one the server has closed is dropped instead), otherwise
    /// one opened for the check and closed after it, so a pool whose every connection waits on
    /// a row lock does not hold the answer back. The whole check takes at most the pool's
    /// acquire timeout, and never more than five seconds; past it, or without a connection, the
    /// store is `Unavailable`. A server in recovery (a standby), or a database whose sessions
    /// are read-only by default (`default_transaction_read_only`, which some hosts set when the
    /// disk fills up), is [`Error::Storage`] with `ReadOnly`.
    async fn readiness(&self) -> Result<()> {
        const MOST: std::time::Duration = std::time::Duration::from_secs(5);
        self.ensure_open()?;
        let bound = MOST.min(self.pool.options().get_acquire_timeout());
        tokio::time::timeout(bound, probe_writable(&self.pool))
            .await
            .unwrap_or_else(|_| {
                Err(Error::unavailable(format!(
                    "PostgreSQL did not answer the readiness check within {bound:?}"
                )))
            })
    }

    /// Closes the store at once: `begin`, `read` and `health` fail as `Unavailable` from now
    /// on, and so does the next statement of a session still in flight (a unit of work then
    /// rolls back).
    ///
    /// On Stockroom's own pool, idle connections are closed, a connection still held by a
    /// session closes when the session is dropped, and `close` waits up to two seconds for
    /// that. A borrowed pool stays open for the application: the connections of Stockroom's
    /// sessions go back to it when the sessions are dropped.
    async fn close(&self) {
        // Also gives the kept connections back to the pool.
        self.connections.close();
        let mut pools = self.replicas.close();
        if matches!(self.owner, Owner::Stockroom(_)) {
            pools.push(self.pool.clone());
        }
        close_within_grace(pools).await;
    }
}

/// Closes `pools` (Stockroom's own: the primary's and the replicas'), waiting up to
/// [`CLOSE_GRACE`] for connections held by sessions in flight.
async fn close_within_grace(pools: Vec<PgPool>) {
    if pools.is_empty() {
        return;
    }
    for pool in &pools {
        // Calling `close` marks the pool closed before its future is first polled.
        drop(pool.close());
    }
    let closing = tokio::spawn(async move {
        futures_util::future::join_all(pools.iter().map(PgPool::close)).await;
    });
    if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
        tracing::warn!(
            target: "stockroom::sql",
            "store closed while sessions were still held; their connections close when they \
             are dropped"
        );
    }
}

/// The readiness check of [`PostgresStore::readiness`], on an idle pooled connection or a new
/// one of its own.
async fn probe_writable(pool: &PgPool) -> Result<()> {
    /// Whether the server is a standby, and whether a transaction would be read-only.
    const QUERY: &str =
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'";
    async fn ask(conn: &mut sqlx::PgConnection) -> sqlx::Result<(bool, bool)> {
        sqlx::query_as(QUERY).fetch_one(conn).await
    }
    let answer = match pool.try_acquire() {
        Some(mut pooled) => match ask(&mut pooled).await {
            Err(e) if is_dead_connection(&e) => {
                pooled.close_on_drop();
                None
            }
            answer => Some(answer),
        },
        None => None,
    };
    let answer = match answer {
        Some(answer) => answer,
        None => {
            let mut own = pool.connect_options().connect().await.map_err(map_error)?;
            let answer = ask(&mut own).await;
            // A polite goodbye, so the server logs no lost client for every check.
            let _ = own.close().await;
            answer
        }
    };
    let reason = match answer.map_err(map_error)? {
        (true, _) => "the PostgreSQL server is in recovery (a standby): it accepts no writes",
        (false, true) => "the database's sessions are read-only (default_transaction_read_only)",
        (false, false) => return Ok(()),
    };
    Err(Error::storage(
        stockroom_core::StorageFault::ReadOnly,
        reason.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(settings: &[(String, String)]) -> Vec<&str> {
        settings.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[test]
    fn startup_settings_leave_out_what_the_engine_lacks() {
        let options = PostgresOptions::default();
        assert_eq!(
            names(&startup_settings(&options, Engine::PostgreSql)),
            ["jit", "lock_timeout", "statement_timeout"]
        );
        assert_eq!(
            names(&startup_settings(&options, Engine::YugabyteDb)),
            ["jit", "lock_timeout", "statement_timeout"]
        );
        assert_eq!(
            names(&startup_settings(&options, Engine::CockroachDb)),
            ["lock_timeout", "statement_timeout"]
        );
    }

    #[test]
    fn an_isolation_level_is_a_startup_setting_of_the_own_pool() {
        let options = PostgresOptions::default()
            .with_lock_timeout(None)
            .with_statement_timeout(None)
            .with_isolation(Some(IsolationLevel::Serializable));
        assert_eq!(
            startup_settings(&options, Engine::CockroachDb),
            [(
                "default_transaction_isolation".to_owned(),
                "serializable".to_owned()
            )]
        );
    }

    #[test]
    fn the_begin_statement_names_the_level_and_the_local_timeouts() {
        let serializable = Some(IsolationLevel::Serializable);
        let none = LocalTimeouts::default();
        let ms = Duration::from_millis;
        assert_eq!(begin_statement(None, none), None);
        assert_eq!(
            begin_statement(serializable, none).as_deref(),
            Some("BEGIN ISOLATION LEVEL SERIALIZABLE")
        );
        let lock = LocalTimeouts {
            lock: Some(ms(2000)),
            statement: None,
        };
        assert_eq!(
            begin_statement(None, lock).as_deref(),
            Some("BEGIN; SET LOCAL lock_timeout = '2000ms'")
        );
        let both = LocalTimeouts {
            lock: Some(ms(5000)),
            statement: Some(ms(800)),
        };
        assert_eq!(
            begin_statement(Some(IsolationLevel::ReadCommitted), both).as_deref(),
            Some(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '5000ms'; \
                 SET LOCAL statement_timeout = '800ms'"
            )
        );
    }

    #[test]
    fn a_deadline_shortens_the_timeouts_of_a_transaction_and_never_lengthens_them() {
        let options = PostgresOptions::default()
            .with_lock_timeout(Some(Duration::from_secs(5)))
            .with_statement_timeout(Some(Duration::ZERO));
        let own = Owner::Stockroom(Box::new(StoreConfig::new("postgres://h/db")));
        let ms = Duration::from_millis;
        let of = |owner: &Owner, left: Option<u64>| {
            let t = LocalTimeouts::of(&options, owner, left.map(ms));
            (t.lock, t.statement)
        };
        // Stockroom's own connections carry the options' from their start.
        assert_eq!(of(&own, None), (None, None));
        assert_eq!(of(&Owner::Application, None), (Some(ms(5000)), Some(ms(0))));
        // Within a deadline: the time left, where shorter than the option (zero: no limit).
        assert_eq!(of(&own, Some(800)), (Some(ms(800)), Some(ms(800))));
        assert_eq!(of(&own, Some(9000)), (Some(ms(5000)), Some(ms(9000))));
        assert_eq!(
            of(&Owner::Application, Some(800)),
            (Some(ms(800)), Some(ms(800)))
        );
    }
}

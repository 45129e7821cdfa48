//! [`SqliteOptions`]: where a [`SqliteStore`](crate::SqliteStore) finds its database, and how it
//! opens every connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use stockroom_core::schema::Schema;
use stockroom_core::{Entity, Error, Result, Rule, StoreConfig};

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `NORMAL`: in WAL mode a commit survives a process crash; a power loss may lose the last
    /// commits, never corrupt the file.
    #[default]
    Normal,
    /// `FULL`: a commit also survives a power loss.
    Full,
}

/// The SQLite settings a `sqlite://` URL may carry in its query, beside the path:
/// `busy_timeout_ms` (how long a statement waits for a lock another connection or process
/// holds; default 5000) and `synchronous` (`normal`, the default, or `full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UrlSettings {
    busy_timeout: Duration,
    durability: Durability,
}

impl Default for UrlSettings {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
        }
    }
}

impl UrlSettings {
    /// The settings of `query` (`name=value` pairs joined by `&`); an unknown name or a
    /// malformed value is a validation error on `url`.
    fn parse(query: &str) -> Result<Self> {
        let mut settings = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "busy_timeout_ms" => {
                    let ms: u64 = value.parse().map_err(|_| url_setting("busy_timeout_ms"))?;
                    settings.busy_timeout = Duration::from_millis(ms);
                }
                "synchronous" => {
                    settings.durability = match value.to_ascii_lowercase().as_str() {
                        "normal" => Durability::Normal,
                        "full" => Durability::Full,
                        _ => return Err(url_setting("synchronous")),
                    }
                }
                _ => return Err(url_setting(name)),
            }
        }
        Ok(settings)
    }
}

fn url_setting(name: &str) -> Error {
    let expected = match name {
        "busy_timeout_ms" => "busy_timeout_ms=<milliseconds>",
        "synchronous" => "synchronous=normal or synchronous=full",
        _ => "a sqlite URL whose query holds only busy_timeout_ms and synchronous",
    };
    Error::validation("url", Rule::Malformed { expected })
}

use crate::error::{map, SqliteError};

/// The application's hook run on every connection the store opens: see
/// [`SqliteOptions::with_on_open`].
type OnOpen = dyn Fn(&Connection) -> rusqlite::Result<()> + Send + Sync;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    File(PathBuf),
    /// A private in-memory database shared by the store's connections (SQLite's `memdb` VFS),
    /// named by this URI.
    Memory(String),
}

impl Location {
    /// A name no other in-memory database of this process has.
    fn private_memory() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Location::Memory(format!(
            "file:/stockroom-{}-{n}-{}?vfs=memdb",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ))
    }

    /// `sqlite://path/to/file.db`, `sqlite:///abs/path.db`, `sqlite::memory:` or
    /// `sqlite://:memory:`.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let bad = || {
            Error::validation(
                "url",
                Rule::Malformed {
                    expected: "sqlite://path/to/file.db, sqlite::memory: or sqlite://:memory:",
                },
            )
        };
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(bad)?;
        if rest == ":memory:" {
            return Ok(Self::private_memory());
        }
        if rest.is_empty() || rest.contains('\0') || rest.contains('?') {
            return Err(bad());
        }
        Ok(Location::File(PathBuf::from(rest)))
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        match self {
            // A path is a path, even one that starts with `file:`: no URI interpretation.
            Location::File(path) => Connection::open_with_flags(path, flags),
            Location::Memory(uri) => {
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Memory(_) => f.write_str(":memory:"),
        }
    }
}

/// Pragmas Stockroom sets itself because its semantics depend on them; an application's
/// [`SqliteOptions::with_pragma`] may not name them.
const ENFORCED_PRAGMAS: &[&str] = &["foreign_keys", "query_only", "journal_mode"];

/// How a [`SqliteStore`](crate::SqliteStore) opens its database: the file (or a private
/// in-memory database), the pool of read connections, logging, migrations, and the
/// application's own pragmas and `on_open` hook. Build it with [`SqliteOptions::file`],
/// [`SqliteOptions::in_memory`] or [`SqliteOptions::from_config`] and the `with_*` methods, and
/// connect with [`SqliteStore::connect_with`](crate::SqliteStore::connect_with).
///
/// Every connection is opened the same way, in this order: the busy timeout, `synchronous`
/// (from the durability), the application's pragmas, the `on_open` hook, then what Stockroom's
/// semantics need, so nothing before can undo it: WAL on a file (the writer switches the file
/// to it), `foreign_keys=ON`, and `query_only=ON` on the read connections.
///
/// The defaults are [`StoreConfig::new`]'s.
///
/// ```
/// use std::time::Duration;
/// use stockroom_sqlite::SqliteOptions;
///
/// let options = SqliteOptions::file("app.db")
///     .with_busy_timeout(Duration::from_secs(2))
///     .with_max_read_connections(4)
///     .with_pragma("cache_size", "-16000")
///     .with_on_open(|conn| conn.execute_batch("PRAGMA temp_store = MEMORY"));
/// assert_eq!(options.path(), Some(std::path::Path::new("app.db")));
/// ```
#[derive(Clone)]
pub struct SqliteOptions {
    pub(crate) location: Location,
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    pub(crate) max_read_connections: u32,
    pub(crate) idle_read_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) log_statements: bool,
    pub(crate) slow_statement_threshold: Duration,
    pub(crate) run_migrations: bool,
    /// The application's entities the store holds besides Stockroom's.
    pub(crate) entities: Vec<&'static Schema>,
    /// Whether the store writes Stockroom's own events to the outbox.
    pub(crate) own_events: bool,
    pragmas: Vec<(String, String)>,
    on_open: Option<Arc<OnOpen>>,
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("location", &self.location.to_string())
            .field("busy_timeout", &self.busy_timeout)
            .field("durability", &self.durability)
            .field("max_read_connections", &self.max_read_connections)
            .field("idle_read_connections", &self.idle_read_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("log_statements", &self.log_statements)
            .field("slow_statement_threshold", &self.slow_statement_threshold)
            .field("run_migrations", &self.run_migrations)
            .field(
                "entities",
                &self.entities.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .field("own_events", &self.own_events)
            .field("pragmas", &self.pragmas)
            .field("on_open", &self.on_open.as_ref().map(|_| "Fn(&Connection)"))
            .finish()
    }
}

impl SqliteOptions {
    /// The database file at `path` (created if missing), with the defaults.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::at(
            Location::File(path.into()),
            UrlSettings::default(),
            &StoreConfig::new(""),
        )
    }

    /// A private in-memory database, shared by the store's connections and by nobody else,
    /// gone when the store closes; with the defaults.
    pub fn in_memory() -> Self {
        Self::at(
            Location::private_memory(),
            UrlSettings::default(),
            &StoreConfig::new(""),
        )
    }

    /// The options [`SqliteStore::connect`](crate::SqliteStore::connect) uses for `config`:
    /// the database its URL names, with the settings of the URL's query (`busy_timeout_ms`,
    /// default 5000; `synchronous=normal|full`, default normal), `max_connections` read
    /// connections of which `min_connections` are kept idle, `acquire_timeout`, `idle_timeout`,
    /// `max_lifetime`, `log_statements`, `slow_statement_threshold`, `run_migrations`,
    /// `own_events` and the application's `entities`.
    /// A URL that names no SQLite database is a validation error on `url`.
    pub fn from_config(config: &StoreConfig) -> Result<Self> {
        let (location, query) = match config.url.split_once('?') {
            Some((location, query)) => (location, query),
            None => (config.url.as_str(), ""),
        };
        let settings = UrlSettings::parse(query)?;
        Ok(Self::at(Location::parse(location)?, settings, config))
    }

    fn at(location: Location, settings: UrlSettings, config: &StoreConfig) -> Self {
        Self {
            location,
            busy_timeout: settings.busy_timeout,
            durability: settings.durability,
            max_read_connections: config.max_connections.max(1),
            idle_read_connections: config.min_connections,
            acquire_timeout: config.acquire_timeout,
            idle_timeout: config.idle_timeout,
            max_lifetime: config.max_lifetime,
            log_statements: config.log_statements,
            slow_statement_threshold: config.slow_statement_threshold,
            run_migrations: config.run_migrations,
            entities: config.entities.schemas().to_vec(),
            own_events: config.own_events,
            pragmas: Vec::new(),
            on_open: None,
        }
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(path) => Some(path),
            Location::Memory(_) => None,
        }
    }

    /// How long a statement waits for a lock another connection or process holds before failing
    /// as [`Error::Transient`].
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// `synchronous=NORMAL` ([`Durability::Normal`]) or `FULL` ([`Durability::Full`]).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The most read connections open at once (at least 1); a read waits up to the acquire
    /// timeout for one.
    pub fn with_max_read_connections(mut self, max: u32) -> Self {
        self.max_read_connections = max.max(1);
        self
    }

    /// How many idle read connections stay open whatever their idle time.
    pub fn with_idle_read_connections(mut self, keep: u32) -> Self {
        self.idle_read_connections = keep;
        self
    }

    /// How long a read waits for a free read connection, and
    /// [`Store::begin`](stockroom_core::Store::begin) for the writer, before failing as
    /// `Unavailable`.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Idle read connections beyond the kept ones, unused for this long, are closed.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Idle read connections older than this are closed instead of reused.
    pub fn with_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Log every statement Stockroom runs at `debug` (target `stockroom::sql`).
    pub fn with_log_statements(mut self, on: bool) -> Self {
        self.log_statements = on;
        self
    }

    /// Statements slower than this are logged at `warn` (target `stockroom::sql`).
    pub fn with_slow_statement_threshold(mut self, threshold: Duration) -> Self {
        self.slow_statement_threshold = threshold;
        self
    }

    /// Whether connecting applies Stockroom's embedded migrations (on by default).
    pub fn with_run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// The options, with the application's entity `E` among the store's (as
    /// [`StoreConfig::with_entity`] adds it): its declaration is checked when the store is
    /// built, and its table created, extended or checked when it connects (see the crate docs,
    /// "Your own entities").
    pub fn with_entity<E: Entity>(mut self) -> Self {
        let schema = E::schema();
        if !self
            .entities
            .iter()
            .any(|s| s.name == schema.name && s.table == schema.table)
        {
            self.entities.push(schema);
        }
        self
    }

    /// Whether the store writes Stockroom's own events to the outbox, in the unit of work that
    /// makes them (as [`StoreConfig::with_own_events`] says; off by default): for the writes to
    /// products and for stock moves, the native ones included.
    pub fn with_own_events(mut self, on: bool) -> Self {
        self.own_events = on;
        self
    }

    /// Runs `PRAGMA name = value` on every connection, after Stockroom's busy timeout and
    /// `synchronous` (so it may change those) and before the `on_open` hook. `name` is a
    /// pragma name, optionally with its schema (`main.cache_size`); `value` a number, a
    /// keyword or a single-quoted string. The pragmas Stockroom enforces (`foreign_keys`,
    /// `query_only`, `journal_mode`) are refused, as is anything malformed, by
    /// [`SqliteStore::connect_with`](crate::SqliteStore::connect_with), with a validation
    /// error on `pragma`.
    pub fn with_pragma(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.pragmas.push((name.into(), value.into()));
        self
    }

    /// Runs `hook` on every connection the store opens (the writer and each read connection),
    /// after the pragmas: the application's own pragmas, functions and collations. A hook's
    /// error fails the open (connecting, or the read that needed a new connection). It must not
    /// leave a transaction open. Stockroom's `foreign_keys=ON`, WAL and `query_only` on read
    /// connections are set after it.
    pub fn with_on_open<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Connection) -> rusqlite::Result<()> + Send + Sync + 'static,
    {
        self.on_open = Some(Arc::new(hook));
        self
    }

    /// Whether the store runs short calls inline on the async workers: on a file (WAL), where
    /// readers never wait for the writer. The private in-memory database (the `memdb` VFS, no
    /// WAL) makes a reader wait for the writer's whole transaction, so it runs every call on
    /// the blocking pool.
    pub(crate) fn runs_inline(&self) -> bool {
        matches!(self.location, Location::File(_))
    }

    /// Refuses malformed pragmas and those Stockroom enforces.
    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in &self.pragmas {
            let bare = name.rsplit_once('.').map_or(name.as_str(), |(_, n)| n);
            let malformed = |expected| Error::validation("pragma", Rule::Malformed { expected });
            if !is_pragma_name(name) {
                return Err(malformed("a pragma name, optionally schema-qualified"));
            }
            if ENFORCED_PRAGMAS.contains(&bare.to_ascii_lowercase().as_str()) {
                return Err(malformed(
                    "a pragma Stockroom does not set itself (not foreign_keys, query_only or \
                     journal_mode)",
                ));
            }
            if !is_pragma_value(value) {
                return Err(malformed("a number, a keyword or a single-quoted string"));
            }
        }
        Ok(())
    }

    /// Opens a connection, set up as the type's docs say; `writer` for the store's single
    /// writer, otherwise a read connection.
    pub(crate) fn open(&self, writer: bool) -> Result<Connection> {
        let conn = self.location.open().map_err(map)?;
        conn.busy_timeout(self.busy_timeout).map_err(map)?;
        let synchronous = match self.durability {
            Durability::Full => "FULL",
            _ => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}"))
            .map_err(map)?;
        for (name, value) in &self.pragmas {
            conn.execute_batch(&format!("PRAGMA {name} = {value}"))
                .map_err(map)?;
        }
        if let Some(hook) = &self.on_open {
            hook(&conn).map_err(map)?;
            if !conn.is_autocommit() {
                return Err(SqliteError::OpenHookLeftTransaction.into());
            }
        }
        self.enforce(&conn, writer)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// What Stockroom's semantics need, set last so that no pragma or hook undoes it.
    fn enforce(&self, conn: &Connection, writer: bool) -> Result<()> {
        if writer {
            // WAL is persistent in the file; the memdb VFS has no WAL and keeps its own mode.
            let mode = self.switch_to_wal(conn)?;
            if matches!(self.location, Location::File(_)) && !mode.eq_ignore_ascii_case("wal") {
                return Err(SqliteError::NotWal { mode }.into());
            }
        }
        let query_only = if writer { "OFF" } else { "ON" };
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA query_only = {query_only};"
        ))
        .map_err(map)
    }
}

impl SqliteOptions {
    /// Puts the file in WAL mode (if it is not already) and returns the mode it is in. The
    /// switch needs the file to itself, and SQLite answers `SQLITE_BUSY` at once, without its
    /// busy handler, while another connection has it open (as when several processes open a
    /// fresh file at once): it is tried again until the busy timeout has passed.
    fn switch_to_wal(&self, conn: &Connection) -> Result<String> {
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(map)?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(mode);
        }
        let give_up = std::time::Instant::now() + self.busy_timeout;
        loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < give_up =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                answer => return answer.map_err(map),
            }
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_pragma_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((schema, pragma)) => is_identifier(schema) && is_identifier(pragma),
        None => is_identifier(name),
    }
}

/// A number, a keyword, or a single-quoted string (quotes inside doubled): nothing that could
/// end the statement or start another.
fn is_pragma_value(value: &str) -> bool {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return !inner.replace("''", "").contains('\'') && !inner.contains('\0');
    }
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "stockroom-{name}-{}.db",
            uuid::Uuid::now_v7().simple()
        ))
    }

    fn remove(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }

    #[test]
    fn connections_get_the_configured_settings() {
        let path = temp_path("settings");
        for (durability, synchronous) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let options = SqliteOptions::file(&path)
                .with_busy_timeout(Duration::from_millis(1234))
                .with_durability(durability);
            for writer in [true, false] {
                let conn = options.open(writer).unwrap();
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
        remove(&path);
    }

    #[test]
    fn the_hook_and_pragmas_cannot_undo_what_stockroom_enforces() {
        let path = temp_path("enforced");
        let options = SqliteOptions::file(&path)
            .with_pragma("cache_size", "-4000")
            .with_on_open(|c| c.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA query_only = ON"));
        options.validate().unwrap();
        for writer in [true, false] {
            let conn = options.open(writer).unwrap();
            let pragma = |name: &str| -> i64 {
                conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                    .unwrap()
            };
            assert_eq!(pragma("cache_size"), -4000);
            assert_eq!(pragma("foreign_keys"), 1);
            assert_eq!(pragma("query_only"), i64::from(!writer));
        }
        remove(&path);
    }

    #[test]
    fn a_hook_that_leaves_a_transaction_open_fails_the_open() {
        let options = SqliteOptions::in_memory().with_on_open(|c| c.execute_batch("BEGIN"));
        let err = options.open(true).unwrap_err();
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<SqliteError>());
        assert_eq!(source, Some(&SqliteError::OpenHookLeftTransaction), "{err}");
    }

    #[test]
    fn pragmas_are_checked() {
        let accepted = [
            ("cache_size", "-2000"),
            ("main.mmap_size", "268435456"),
            ("temp_store", "MEMORY"),
            ("application_id", "0x1234"),
            ("key", "'it''s'"),
        ];
        for (name, value) in accepted {
            let options = SqliteOptions::in_memory().with_pragma(name, value);
            assert!(options.validate().is_ok(), "{name} = {value}");
        }
        let refused = [
            ("foreign_keys", "OFF"),
            ("main.Journal_Mode", "DELETE"),
            ("query_only", "0"),
            ("cache_size; DROP TABLE products", "1"),
            ("cache_size", "1; DROP TABLE products"),
            ("key", "'a' ; x'"),
            ("", "1"),
            ("cache_size", ""),
        ];
        for (name, value) in refused {
            let options = SqliteOptions::in_memory().with_pragma(name, value);
            assert!(
                matches!(
                    options.validate(),
                    Err(Error::Validation {
                        field: "pragma",
                        ..
                    })
                ),
                "{name} = {value}"
            );
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

    #[test]
    fn options_from_a_config_carry_its_settings() {
        let config = StoreConfig::new("sqlite://shop.db?busy_timeout_ms=50&synchronous=full")
            .with_min_connections(2)
            .with_max_connections(5)
            .with_run_migrations(false)
            .with_log_statements(true);
        let options = SqliteOptions::from_config(&config).unwrap();
        assert_eq!(options.path(), Some(Path::new("shop.db")));
        assert_eq!(
            (options.max_read_connections, options.idle_read_connections),
            (5, 2)
        );
        assert_eq!(options.busy_timeout, Duration::from_millis(50));
        assert_eq!(options.durability, Durability::Full);
        assert!(!options.run_migrations && options.log_statements);
        let plain = SqliteOptions::from_config(&StoreConfig::new("sqlite://shop.db")).unwrap();
        assert_eq!(
            (plain.busy_timeout, plain.durability),
            (Duration::from_secs(5), Durability::Normal)
        );
    }

    #[test]
    fn an_unknown_or_malformed_url_setting_is_refused() {
        for url in [
            "sqlite://shop.db?cache=shared",
            "sqlite://shop.db?busy_timeout_ms=soon",
            "sqlite://shop.db?synchronous=extra",
        ] {
            let refused = SqliteOptions::from_config(&StoreConfig::new(url));
            assert!(
                matches!(refused, Err(Error::Validation { field: "url", .. })),
                "{url}: {refused:?}"
            );
        }
    }
}

//! The adapter's own settings: what Stockroom needs of a pool, whether the pool is its own or the
//! application's.

use std::time::Duration;

use stockroom_core::schema::Schema;
use stockroom_core::{Entity, StoreConfig};

/// How a [`PostgresStore`](crate::PostgresStore) behaves on its pool, whether Stockroom built
/// the pool ([`PostgresStore::connect`](crate::PostgresStore::connect), which derives these
/// from the [`StoreConfig`]) or the application lent it
/// ([`PostgresStore::from_pool`](crate::PostgresStore::from_pool)).
///
/// ```
/// use std::time::Duration;
/// use stockroom_postgres::PostgresOptions;
///
/// let options = PostgresOptions::default()
///     .with_lock_timeout(Some(Duration::from_secs(2)))
///     .with_run_migrations(false);
/// assert_eq!(options.lock_timeout, Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// How long a statement of a unit of work waits for a lock (a row locked by another
    /// transaction, say) before it fails as [`Error::Transient`](stockroom_core::Error):
    /// PostgreSQL's `lock_timeout`. On Stockroom's own pool it is a startup option of every
    /// connection; on a borrowed pool it is set for each unit of work's transaction only
    /// (`SET LOCAL`, sent with the `BEGIN`), so the application's own sessions keep their
    /// setting. `None` leaves the setting alone; zero means no limit, as in PostgreSQL.
    /// Migrations are exempt: they wait for their locks as long as it takes.
    pub lock_timeout: Option<Duration>,
    /// How long any one statement may run before the server cancels it: PostgreSQL's
    /// `statement_timeout`, so that no statement outlives the request that sent it by much (a
    /// future dropped mid-statement does not stop the statement on the server). A statement
    /// canceled by it (SQLSTATE 57014) fails as [`Error::Transient`](stockroom_core::Error):
    /// inside a unit of work nothing of the transaction is applied (PostgreSQL aborts it, and
    /// the unit of work rolls back), and a stock move outside one (a transfer's, which commits
    /// by itself) did not apply. Set like `lock_timeout`: a startup option of every connection
    /// of Stockroom's own pool (read sessions and transfers included), `SET LOCAL` with each
    /// unit of work's `BEGIN` on a borrowed pool (whose read sessions and transfers keep the
    /// application's setting). It also bounds the application's own SQL on a unit of work's
    /// [`connection`](crate::connection). `None` leaves the setting alone; zero means no limit,
    /// as in PostgreSQL. Migrations are exempt. The default, 30 s, is far above what
    /// Stockroom's statements take; set it to about your requests' timeout.
    ///
    /// Within a retried operation with a deadline
    /// ([`RetryPolicy::deadline`](stockroom_core::RetryPolicy::deadline)), a unit of work's
    /// `BEGIN` also sets `lock_timeout` and `statement_timeout` to the time left where that is
    /// shorter (`SET LOCAL`, same round trip), and a transfer's statement its `lock_timeout`, so
    /// that the server, not the client, ends the waits at the deadline and says that nothing
    /// was applied.
    pub statement_timeout: Option<Duration>,
    /// Log every statement at `debug`, target `stockroom::sql` (echo).
    pub log_statements: bool,
    /// Log statements slower than this at `warn`, target `stockroom::sql`.
    pub slow_statement_threshold: Duration,
    /// Apply the embedded migrations when the store is built.
    pub run_migrations: bool,
    /// Never hand a caller a pooled connection the server closed. No ping is sent: the first
    /// round trip of a session on a connection (a unit of work's `BEGIN`, a read session's
    /// first statement, a transfer's one statement) is the check, and when it finds the
    /// connection closed the connection is dropped and the statement is sent again on another
    /// (a transfer's statement carries its ledger row's id, so it never applies twice). Off by
    /// default on a borrowed pool, whose own `test_before_acquire` (on in sqlx by default)
    /// pings instead. A connection opened by a tokio runtime that has shut down since is
    /// replaced the same way whatever this says: nothing was sent on it.
    pub test_before_acquire: bool,
    /// Analyze a table in the background after a unit of work that inserted 1,000 rows or more
    /// into it commits, when they are a tenth or more of the rows its statistics counted, so
    /// that searches and lists are planned for the rows just imported rather than for the
    /// table before (on PostgreSQL; not on CockroachDB or YugabyteDB). On by default; the
    /// role needs to own the table (otherwise PostgreSQL skips it with a warning).
    pub analyze_after_bulk_insert: bool,
    /// Settings every connection of Stockroom's own pool starts with, as startup options
    /// (`-c name=value`), such as `jit=off` (the default: JIT compilation costs more than it
    /// saves on Stockroom's short statements). A borrowed pool keeps the application's.
    pub session_settings: Vec<(String, String)>,
    /// The isolation level Stockroom asks for: every unit of work begins with
    /// `BEGIN ISOLATION LEVEL …`, and on Stockroom's own pool every connection starts with
    /// `default_transaction_isolation` set to it, so read sessions and the one-statement
    /// transfer run at it too (on a borrowed pool, a transfer then runs in a transaction of its
    /// own; a read replica's sessions, since a hot standby has no SERIALIZABLE, run at
    /// REPEATABLE READ when SERIALIZABLE is asked for). `None` (the default) asks for nothing:
    /// the server's `default_transaction_isolation` applies, READ COMMITTED unless the role or database says
    /// otherwise. Stockroom is correct at every level: it locks the rows that must not race, and
    /// at REPEATABLE READ or SERIALIZABLE (CockroachDB's default) the serialization failures of
    /// contended units of work are `Error::Transient`, which the transfer and the retry runner
    /// retry.
    pub isolation: Option<IsolationLevel>,
    /// Write Stockroom's own events to the outbox for the writes to products and for stock
    /// moves, in the unit of work (or the transfer's statement) that makes them (see
    /// [`stockroom_core::outbox::subjects`]); from [`StoreConfig::own_events`], off by default.
    pub own_events: bool,
    /// The application's own entities the store holds besides Stockroom's (see
    /// [`with_entity`](Self::with_entity) and [`entities`](Self::entities)).
    entities: Registered,
}

/// The declarations of the application's entities, compared by entity and table name (as
/// `StoreConfig` compares them).
#[derive(Clone, Default)]
struct Registered(Vec<&'static Schema>);

impl PartialEq for Registered {
    fn eq(&self, other: &Self) -> bool {
        let key = |s: &&Schema| (s.name, s.table);
        self.0.iter().map(key).eq(other.0.iter().map(key))
    }
}

impl Eq for Registered {}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.name))
            .finish()
    }
}

/// A transaction isolation level of PostgreSQL (see [`PostgresOptions::isolation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Each statement sees what was committed before it began.
    ReadCommitted,
    /// The whole transaction sees one snapshot; a write to a row changed since fails with a
    /// serialization failure.
    RepeatableRead,
    /// As if the transactions ran one after another; conflicts fail with a serialization
    /// failure.
    Serializable,
}

impl IsolationLevel {
    /// The level as SQL spells it in `BEGIN ISOLATION LEVEL …`: `READ COMMITTED`, ….
    pub const fn as_sql(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        }
    }

    /// The level as the setting `default_transaction_isolation` (and `SHOW
    /// transaction_isolation`) spells it: `read committed`, ….
    pub const fn setting(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => "read committed",
            IsolationLevel::RepeatableRead => "repeatable read",
            IsolationLevel::Serializable => "serializable",
        }
    }
}

impl Default for PostgresOptions {
    /// A five-second lock timeout, a thirty-second statement timeout, no echo, slow statements
    /// from one second, migrations on, no `test_before_acquire` check of Stockroom's own (the
    /// pool's setting applies), `jit=off`, no own events.
    fn default() -> Self {
        Self {
            lock_timeout: Some(Duration::from_secs(5)),
            statement_timeout: Some(Duration::from_secs(30)),
            log_statements: false,
            slow_statement_threshold: Duration::from_secs(1),
            run_migrations: true,
            test_before_acquire: false,
            analyze_after_bulk_insert: true,
            session_settings: vec![("jit".to_owned(), "off".to_owned())],
            isolation: None,
            own_events: false,
            entities: Registered::default(),
        }
    }
}

impl PostgresOptions {
    /// The options a [`StoreConfig`] implies: `log_statements`, `slow_statement_threshold`,
    /// `run_migrations`, `test_before_acquire`, `own_events` and the entities from it, and the defaults (a five-second lock
    /// timeout, a thirty-second statement timeout, `jit=off`) for what its URL's `options`
    /// parameter does not set itself: a URL such as
    /// `postgres://app@db/shop?options=-c%20lock_timeout%3D2s` keeps its own `lock_timeout`. A
    /// setting counts as set when the parameter names it as PostgreSQL reads it (`-c
    /// name=value`, `-cname=value` or `--name=value`), not when its name is part of another's
    /// (`deadlock_timeout` leaves the lock timeout's default in place).
    pub fn from_config(config: &StoreConfig) -> Self {
        let in_url = settings_named_in(&url_startup_options(&config.url));
        let sets = |name: &str| in_url.iter().any(|set| set == name);
        let defaults = Self::default();
        Self {
            lock_timeout: if sets("lock_timeout") {
                None
            } else {
                defaults.lock_timeout
            },
            statement_timeout: if sets("statement_timeout") {
                None
            } else {
                defaults.statement_timeout
            },
            log_statements: config.log_statements,
            slow_statement_threshold: config.slow_statement_threshold,
            run_migrations: config.run_migrations,
            test_before_acquire: config.test_before_acquire,
            analyze_after_bulk_insert: defaults.analyze_after_bulk_insert,
            session_settings: defaults
                .session_settings
                .into_iter()
                .filter(|(name, _)| !sets(name))
                .collect(),
            isolation: None,
            own_events: config.own_events,
            entities: Registered(config.entities.schemas().to_vec()),
        }
    }

    /// The options, with the application's entity `E` among the store's, as
    /// [`StoreConfig::with_entity`] adds it to a configuration: the store checks its
    /// declaration when it is built and creates, extends or checks its table with the
    /// migrations (see [Your own entities](crate#your-own-entities)).
    pub fn with_entity<E: Entity>(mut self) -> Self {
        let schema = E::schema();
        if !self
            .entities
            .0
            .iter()
            .any(|s| s.name == schema.name && s.table == schema.table)
        {
            self.entities.0.push(schema);
        }
        self
    }

    /// The application's entities the store holds besides Stockroom's, in the order they were
    /// added (by [`with_entity`](Self::with_entity), or from [`StoreConfig::entities`]).
    pub fn entities(&self) -> &[&'static Schema] {
        &self.entities.0
    }

    /// Sets [`isolation`](Self::isolation).
    pub fn with_isolation(mut self, level: Option<IsolationLevel>) -> Self {
        self.isolation = level;
        self
    }

    /// Sets [`session_settings`](Self::session_settings).
    pub fn with_session_settings(mut self, settings: Vec<(String, String)>) -> Self {
        self.session_settings = settings;
        self
    }

    /// Sets [`lock_timeout`](Self::lock_timeout).
    pub fn with_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`log_statements`](Self::log_statements).
    pub fn with_log_statements(mut self, on: bool) -> Self {
        self.log_statements = on;
        self
    }

    /// Sets [`slow_statement_threshold`](Self::slow_statement_threshold).
    pub fn with_slow_statement_threshold(mut self, threshold: Duration) -> Self {
        self.slow_statement_threshold = threshold;
        self
    }

    /// Sets [`run_migrations`](Self::run_migrations).
    pub fn with_run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// Sets [`analyze_after_bulk_insert`](Self::analyze_after_bulk_insert).
    pub fn with_analyze_after_bulk_insert(mut self, on: bool) -> Self {
        self.analyze_after_bulk_insert = on;
        self
    }

    /// Sets [`own_events`](Self::own_events).
    pub fn with_own_events(mut self, on: bool) -> Self {
        self.own_events = on;
        self
    }

    /// Sets [`test_before_acquire`](Self::test_before_acquire).
    pub fn with_test_before_acquire(mut self, on: bool) -> Self {
        self.test_before_acquire = on;
        self
    }
}

/// `timeout` as a value of PostgreSQL's `lock_timeout` or `statement_timeout`, in whole
/// milliseconds. A non-zero timeout below one millisecond is rounded up, since `0` would mean
/// no limit at all.
pub(crate) fn timeout_value(timeout: Duration) -> String {
    let millis = timeout.as_millis();
    let millis = if millis == 0 && !timeout.is_zero() {
        1
    } else {
        millis
    };
    format!("{millis}ms")
}

/// The startup options (`options=-c name=value …`) a PostgreSQL URL carries, or "".
fn url_startup_options(url: &str) -> String {
    use std::str::FromStr;
    sqlx::postgres::PgConnectOptions::from_str(url)
        .ok()
        .and_then(|options| options.get_options().map(str::to_owned))
        .unwrap_or_default()
}

/// The names of the settings that startup options set, as PostgreSQL reads its `options`
/// connection parameter: words split on white space (a backslash escapes the next character),
/// each setting `-c name=value`, `-cname=value` or `--name=value`, the name in any case and
/// with `-` for `_`. Other words (other command-line switches) set nothing of ours.
fn settings_named_in(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut names = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()
        } else {
            word.strip_prefix("--")
                .or_else(|| word.strip_prefix("-c"))
                .map(str::to_owned)
        };
        if let Some((name, _)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            names.push(name.to_ascii_lowercase().replace('-', "_"));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_setting_its_own_lock_timeout_or_jit_keeps_it() {
        let plain = PostgresOptions::from_config(&StoreConfig::new("postgres://h/db"));
        assert_eq!(plain.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            plain.session_settings,
            [("jit".to_owned(), "off".to_owned())]
        );
        assert_eq!(plain.statement_timeout, Some(Duration::from_secs(30)));
        let url = "postgres://h/db?options=-c%20lock_timeout%3D1s%20-c%20jit%3Don\
                   %20-c%20statement_timeout%3D9s";
        let own = PostgresOptions::from_config(&StoreConfig::new(url));
        assert_eq!(own.lock_timeout, None, "the URL's lock_timeout stays");
        assert_eq!(
            own.statement_timeout, None,
            "the URL's statement_timeout stays"
        );
        assert!(own.session_settings.is_empty(), "the URL's jit stays");
    }

    #[test]
    fn only_a_setting_of_the_same_name_counts_not_one_containing_it() {
        let from = |options: &str| {
            let url = format!("postgres://h/db?options={options}");
            PostgresOptions::from_config(&StoreConfig::new(&url))
        };
        // deadlock_timeout contains "lock_timeout"; jit_above_cost contains "jit".
        let other = from("-c%20deadlock_timeout%3D2s%20-c%20jit_above_cost%3D10");
        assert_eq!(other.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            other.session_settings,
            [("jit".to_owned(), "off".to_owned())]
        );
        // The forms PostgreSQL takes: `-c name=value`, `-cname=value`, `--name=value`, with
        // `-` for `_` and in any case.
        for own in [
            "-c%20lock_timeout%3D1s",
            "-clock_timeout%3D1s",
            "--lock_timeout%3D1s",
            "--lock-timeout%3D1s",
            "-c%20Lock_Timeout%3D1s",
        ] {
            assert_eq!(from(own).lock_timeout, None, "{own}");
        }
        // A value naming a setting is not a setting, even with an escaped space in it.
        for value in [
            "-c%20application_name%3Dlock_timeout",
            "-c%20application_name%3Dx%5C%20--lock_timeout%3D1s",
        ] {
            assert_eq!(
                from(value).lock_timeout,
                Some(Duration::from_secs(5)),
                "{value}"
            );
        }
    }

    #[test]
    fn timeouts_never_round_down_to_no_limit() {
        assert_eq!(timeout_value(Duration::from_micros(300)), "1ms");
        assert_eq!(timeout_value(Duration::ZERO), "0ms");
        assert_eq!(timeout_value(Duration::from_secs(5)), "5000ms");
    }
}

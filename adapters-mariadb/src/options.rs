//! The adapter's own settings: what Stockroom needs of a pool, whether the pool is its own or the
//! application's.

use std::time::Duration;

use stockroom_core::schema::Schema;
use stockroom_core::{Entity, StoreConfig};

/// How a [`MariaDbStore`](crate::MariaDbStore) behaves on its pool, whether Stockroom built the
/// pool ([`MariaDbStore::connect`](crate::MariaDbStore::connect), which derives these from the
/// [`StoreConfig`]) or the application lent it
/// ([`MariaDbStore::from_pool`](crate::MariaDbStore::from_pool)).
///
/// ```
/// use std::time::Duration;
/// use stockroom_mariadb::{IsolationLevel, MariaDbOptions};
///
/// let options = MariaDbOptions::default()
///     .with_lock_wait_timeout(Duration::from_secs(2))
///     .with_isolation(IsolationLevel::RepeatableRead);
/// assert_eq!(options.lock_wait_timeout, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MariaDbOptions {
    /// The isolation level of every unit of work, sent before its `START TRANSACTION` (`SET
    /// TRANSACTION ISOLATION LEVEL …`, same round trip), so that it never depends on the
    /// server's or the pool's default (MariaDB's is REPEATABLE READ). READ COMMITTED by
    /// default, as on PostgreSQL.
    pub isolation: IsolationLevel,
    /// How long a statement of a unit of work waits for a row lock before it fails as
    /// [`Error::Transient`](stockroom_core::Error) (InnoDB's `innodb_lock_wait_timeout`, whole
    /// seconds, at least 1): a setting every connection of Stockroom's own pool starts with; on
    /// a borrowed pool ([`MariaDbStore::from_pool`](crate::MariaDbStore::from_pool)) each of
    /// Stockroom's statements sets it for itself (`SET STATEMENT … FOR …`), so the application's
    /// sessions keep theirs. 5 s by default.
    pub lock_wait_timeout: Duration,
    /// Log every statement at `debug`, target `stockroom::sql` (echo).
    pub log_statements: bool,
    /// Log statements slower than this at `warn`, target `stockroom::sql`.
    pub slow_statement_threshold: Duration,
    /// Apply the embedded migrations, and make or check the entities' tables, when the store is
    /// built.
    pub run_migrations: bool,
    /// Write Stockroom's own events to the outbox for the writes to products and for stock
    /// moves (see [`stockroom_core::outbox::subjects`]); from [`StoreConfig::own_events`], off
    /// by default.
    pub own_events: bool,
    /// The application's own entities the store holds besides Stockroom's.
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

/// A transaction isolation level of MariaDB (see [`MariaDbOptions::isolation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Each statement sees what was committed before it began.
    ReadCommitted,
    /// The transaction's plain reads see one snapshot (locking reads and writes see the latest
    /// committed rows): InnoDB's default.
    RepeatableRead,
    /// REPEATABLE READ whose plain reads take shared locks.
    Serializable,
}

impl IsolationLevel {
    /// The level as `SET TRANSACTION ISOLATION LEVEL …` spells it: `READ COMMITTED`, ….
    pub const fn as_sql(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        }
    }
}

impl Default for MariaDbOptions {
    /// READ COMMITTED, a five-second lock wait, no echo, slow statements from one second,
    /// migrations on, no own events, no entities of the application's.
    fn default() -> Self {
        Self {
            isolation: IsolationLevel::ReadCommitted,
            lock_wait_timeout: Duration::from_secs(5),
            log_statements: false,
            slow_statement_threshold: Duration::from_secs(1),
            run_migrations: true,
            own_events: false,
            entities: Registered::default(),
        }
    }
}

impl MariaDbOptions {
    /// The options a [`StoreConfig`] implies: `log_statements`, `slow_statement_threshold`,
    /// `run_migrations`, `own_events` and the entities from it, the defaults for the rest.
    pub fn from_config(config: &StoreConfig) -> Self {
        Self {
            log_statements: config.log_statements,
            slow_statement_threshold: config.slow_statement_threshold,
            run_migrations: config.run_migrations,
            own_events: config.own_events,
            entities: Registered(config.entities.schemas().to_vec()),
            ..Self::default()
        }
    }

    /// The options, with the application's entity `E` among the store's, as
    /// [`StoreConfig::with_entity`] adds it to a configuration.
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
    /// added.
    pub fn entities(&self) -> &[&'static Schema] {
        &self.entities.0
    }

    /// The options with `level` for every unit of work.
    pub fn with_isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation = level;
        self
    }

    /// The options with `timeout` as the lock wait of units of work (rounded up to whole
    /// seconds, at least one: InnoDB counts in seconds).
    pub fn with_lock_wait_timeout(mut self, timeout: Duration) -> Self {
        self.lock_wait_timeout = timeout;
        self
    }

    /// The options with statement echo on or off.
    pub fn with_log_statements(mut self, on: bool) -> Self {
        self.log_statements = on;
        self
    }

    /// The options with `threshold` as the slow-statement warning threshold.
    pub fn with_slow_statement_threshold(mut self, threshold: Duration) -> Self {
        self.slow_statement_threshold = threshold;
        self
    }

    /// The options with migrations on connect on or off.
    pub fn with_run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// The options with Stockroom's own events on or off.
    pub fn with_own_events(mut self, on: bool) -> Self {
        self.own_events = on;
        self
    }

    /// The whole seconds of `innodb_lock_wait_timeout`: the lock wait rounded up, at least 1.
    pub(crate) fn lock_wait_seconds(&self) -> u64 {
        let d = self.lock_wait_timeout;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_wait_is_rounded_up_to_whole_seconds() {
        let of = |ms| MariaDbOptions::default().with_lock_wait_timeout(Duration::from_millis(ms));
        assert_eq!(of(0).lock_wait_seconds(), 1);
        assert_eq!(of(1_000).lock_wait_seconds(), 1);
        assert_eq!(of(1_001).lock_wait_seconds(), 2);
    }
}

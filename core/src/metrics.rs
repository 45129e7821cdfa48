//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): the
//! application installs the recorder it likes (Prometheus, OpenTelemetry, StatsD, …) and
//! Stockroom's numbers go there. Without the feature, or without a recorder, nothing is
//! recorded; without the feature, nothing is measured either.
//!
//! | name | kind | unit | attributes | what it counts |
//! |---|---|---|---|---|
//! | `db.client.operation.duration` | histogram | seconds | `db.system.name`, `db.operation.name`, `db.collection.name`, `outcome` | every operation of a store from `stockroom::connect` (or wrapped by [`traced`](crate::traced)): reads, writes, `begin`, `commit`, … |
//! | `db.client.connection.wait_time` | histogram | seconds | `db.system.name`, `db.client.connection.pool.name`, `server.address`, `db.namespace` | the wait for a connection: from the PostgreSQL pool; for one of SQLite's read connections, or its writer |
//! | `db.client.connection.count` | gauge | connections | the same, and `db.client.connection.state` (`used`, `idle`) | the pool's connections, set each time one is handed out (PostgreSQL; SQLite's read connections, and its writer as a pool of one) |
//! | `stockroom.retry.retries` | counter | attempts | `stockroom.operation` (`transfer`, `unit_of_work`), `error.type` | a failed attempt that is tried again |
//! | `stockroom.retry.outcomes` | counter | operations | `stockroom.operation`, `outcome` (`committed`, `gave_up`, `failed`) | a retried operation, once it ends |
//! | `stockroom.transfers` | counter | transfers | `outcome` (`applied`, `replayed`, `insufficient_stock`, `invalid`, `not_found`, `gave_up`, `failed`) | every transfer, by [`transfer_stock`](crate::transfer_stock) or [`transfer_in`](crate::transfer_in) |
//! | `stockroom.replica.up` | gauge | | `db.system.name`, `server.address` (the replica's URL, password hidden) | 1 while a PostgreSQL read replica serves reads, 0 while it is marked down |
//!
//! The attribute names follow OpenTelemetry's database conventions: `db.system.name` is
//! `postgresql`, `sqlite` or `memory`; `db.operation.name` is Stockroom's name of the operation
//! (the record port's `get`, `insert`, `update`, `list`, `soft_delete`, `increment`, …, and
//! `move_stock`, `begin`, `commit`, `rollback`, `savepoint`, `read`, `health`);
//! `db.collection.name` is the entity's table (`products`, or an application's `warehouses`),
//! empty for operations on no table (`begin`, `commit`); `outcome` is `ok` or the kind of the
//! error, as the spans' `outcome` field says it (see [`Traced`](crate::Traced)); a PostgreSQL
//! pool's name is `host:port/database`, SQLite's are `<file> (read)` and `<file> (writer)`, with
//! the file as `db.namespace` and no `server.address`.
//!
//! Without a recorder installed, a metric still costs building its key (its attributes) and a
//! call to the no-op recorder; without the feature it costs nothing.
//!
//! The tests `every_metric_is_recorded_with_its_attributes` (`adapters-memory/tests/metrics.rs`),
//! `the_pool_and_the_replicas_are_measured` (`adapters-postgres/tests/metrics.rs`) and
//! `the_read_connections_and_the_writer_are_measured` (`adapters-sqlite/tests/metrics.rs`)
//! record each of them with a test recorder, and the service example's
//! `metrics_are_served_in_prometheus_format` reads them from `/metrics`.

/// `db.client.operation.duration`: a histogram of each operation's time, in seconds.
pub const OPERATION_DURATION: &str = "db.client.operation.duration";
/// `db.client.connection.wait_time`: a histogram of the wait for a pooled connection, in seconds.
pub const CONNECTION_WAIT_TIME: &str = "db.client.connection.wait_time";
/// `db.client.connection.count`: a gauge of the pool's connections by state.
pub const CONNECTION_COUNT: &str = "db.client.connection.count";
/// `stockroom.retry.retries`: a counter of failed attempts tried again.
pub const RETRIES: &str = "stockroom.retry.retries";
/// `stockroom.retry.outcomes`: a counter of retried operations, by how they ended.
pub const RETRY_OUTCOMES: &str = "stockroom.retry.outcomes";
/// `stockroom.transfers`: a counter of transfers, by outcome.
pub const TRANSFERS: &str = "stockroom.transfers";
/// `stockroom.replica.up`: a gauge, 1 while a read replica serves reads and 0 while it is down.
pub const REPLICA_UP: &str = "stockroom.replica.up";

/// Gives the installed recorder the unit and description of each of Stockroom's metrics (which
/// exporters show, e.g. as Prometheus `# HELP` lines). Call it once after installing the
/// recorder; without the `metrics` feature it does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::Unit;
        metrics::describe_histogram!(
            OPERATION_DURATION,
            Unit::Seconds,
            "Duration of a Stockroom store operation"
        );
        metrics::describe_histogram!(
            CONNECTION_WAIT_TIME,
            Unit::Seconds,
            "Time waited for a pooled connection"
        );
        metrics::describe_gauge!(
            CONNECTION_COUNT,
            Unit::Count,
            "Connections of the pool, by state"
        );
        metrics::describe_counter!(
            RETRIES,
            Unit::Count,
            "Failed attempts that were tried again"
        );
        metrics::describe_counter!(
            RETRY_OUTCOMES,
            Unit::Count,
            "Retried operations, by how they ended"
        );
        metrics::describe_counter!(TRANSFERS, Unit::Count, "Stock transfers, by outcome");
        metrics::describe_gauge!(
            REPLICA_UP,
            "1 while a read replica serves reads, 0 while it is marked down"
        );
    }
}

/// The `db.system.name` of a backend.
pub fn system_name(backend: crate::Backend) -> &'static str {
    match backend {
        crate::Backend::Postgres => "postgresql",
        crate::Backend::Sqlite => "sqlite",
        crate::Backend::Memory => "memory",
        crate::Backend::MariaDb => "mariadb",
    }
}

/// Records one finished operation (the tracing decorator calls it).
#[cfg(feature = "metrics")]
pub(crate) fn operation(
    backend: crate::Backend,
    operation: &'static str,
    collection: &'static str,
    outcome: &'static str,
    elapsed: std::time::Duration,
) {
    metrics::histogram!(
        OPERATION_DURATION,
        "db.system.name" => system_name(backend),
        "db.operation.name" => operation,
        "db.collection.name" => collection,
        "outcome" => outcome,
    )
    .record(elapsed.as_secs_f64());
}

/// Records a failed attempt of `operation` that is tried again.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn retry(operation: &'static str, error_type: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(RETRIES, "stockroom.operation" => operation, "error.type" => error_type)
        .increment(1);
}

/// Records how a retried `operation` ended.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn retry_outcome(operation: &'static str, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(RETRY_OUTCOMES, "stockroom.operation" => operation, "outcome" => outcome)
        .increment(1);
}

/// Records a transfer's outcome.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn transfer(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TRANSFERS, "outcome" => outcome).increment(1);
}

/// What adapters record: their pools and replicas. Each function does nothing without the
/// `metrics` feature, so an adapter calls it unconditionally.
pub mod adapter {
    use std::time::Duration;

    /// A pool, as its metrics name it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Pool {
        /// `db.system.name`: `postgresql`, say.
        pub system: &'static str,
        /// `db.client.connection.pool.name`: `host:port/database`.
        pub name: String,
        /// `server.address`: the server's host name or address (a socket directory for a
        /// Unix socket).
        pub server: String,
        /// `db.namespace`: the database.
        pub namespace: String,
    }

    /// Records that a connection of `pool` was handed out after `waited`, and the pool's
    /// connections at that moment: `used` by sessions and `idle`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn connection_acquired(pool: &Pool, waited: Duration, used: usize, idle: usize) {
        #[cfg(feature = "metrics")]
        {
            let labels = |extra: Option<(&'static str, &'static str)>| {
                let mut labels = vec![
                    metrics::Label::new("db.system.name", pool.system),
                    metrics::Label::new("db.client.connection.pool.name", pool.name.clone()),
                    metrics::Label::new("server.address", pool.server.clone()),
                    metrics::Label::new("db.namespace", pool.namespace.clone()),
                ];
                labels.extend(extra.map(|(k, v)| metrics::Label::new(k, v)));
                labels
            };
            metrics::histogram!(super::CONNECTION_WAIT_TIME, labels(None))
                .record(waited.as_secs_f64());
            for (state, count) in [("used", used), ("idle", idle)] {
                let state = Some(("db.client.connection.state", state));
                metrics::gauge!(super::CONNECTION_COUNT, labels(state)).set(count as f64);
            }
        }
    }

    /// Records whether the read replica at `url` (password hidden) serves reads.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn replica_state(system: &'static str, url: &str, up: bool) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(
            super::REPLICA_UP,
            "db.system.name" => system,
            "server.address" => url.to_owned(),
        )
        .set(if up { 1.0 } else { 0.0 });
    }
}

//! Read replicas: where a read session gets its connection when the store has replicas.
//!
//! Each replica URL of the [`StoreConfig`] gets a pool of its own, built like the primary's
//! (the same settings, see `store::pool_options` and `store::startup_settings`) but connected lazily, so a replica that is
//! down does not keep the store from connecting; no migrations run on it (a streaming replica
//! is read-only, and it has the primary's schema). Each pool has its own [`Connections`], so a
//! connection goes back to the stack of the server it came from.
//!
//! How a read session's connection is chosen ([`Replicas::lend`]):
//!
//! - The replicas are taken in turn (round robin: a counter shared by the store's read
//!   sessions, advanced once per session), skipping those marked down. The first one that
//!   lends a connection within [`Replicas::attempt`] (the pool's `acquire_timeout`, at most
//!   [`MOST_ATTEMPT`]) serves the session.
//! - A replica that does not lend one in time, or whose connection attempt fails, is marked
//!   down for [`BACK_OFF`], and the next one is tried. When no replica lends one, the
//!   primary's connections serve the session, as on a store without replicas: that is the
//!   fall-back.
//! - A connection lent by a replica is not checked before use (as on the primary): its first
//!   round trip is the check. When it finds the connection dead (the replica stopped or
//!   restarted), the replica is marked down, its kept connections go back to its pool (which
//!   pings them and closes the dead ones), and the same statement is sent on a connection of
//!   the next replica, or the primary (see `Lease::run`). Reads are safe to send twice, so this
//!   happens whatever `test_before_acquire` says.
//! - Once a replica's back-off has passed, the next read session that would have tried it
//!   starts a probe in the background instead, and goes on to the next replica (or the
//!   primary): the probe takes connections from the replica's pool (closing those that no
//!   longer answer a ping) until one answers, within [`Replicas::attempt`]; then the replica
//!   serves reads again, else it stays down for another [`BACK_OFF`]. So a read never waits on
//!   a replica known to be down; only the first read that meets a replica that died with no
//!   connection pooled (none to find dead at once) waits, for at most [`Replicas::attempt`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::Connection;
use stockroom_core::adapter::redact_url;
use stockroom_core::{Result, StoreConfig};

use crate::connections::{Connections, Lease};
use crate::engine::Engine;
use crate::options::{IsolationLevel, PostgresOptions};
use crate::store;

/// How long a replica that failed is left alone before it is probed again.
pub(crate) const BACK_OFF: Duration = Duration::from_secs(5);

/// The longest a read session waits for a replica's connection before it tries the next one.
pub(crate) const MOST_ATTEMPT: Duration = Duration::from_secs(2);

/// The replicas of a store, and its primary's connections, where reads go when no replica
/// serves them (see the module docs). A store without replicas has an empty list: every read
/// goes to the primary.
pub(crate) struct Replicas {
    list: Vec<Arc<Replica>>,
    /// The round robin's counter.
    next: AtomicUsize,
    /// The primary's connections.
    primary: Arc<Connections>,
    /// How long a read waits for a replica's connection, and how long a probe may take.
    attempt: Duration,
}

/// One replica: its pool, its connections, and whether it is serving.
struct Replica {
    /// The URL, password hidden.
    url: String,
    pool: PgPool,
    connections: Arc<Connections>,
    state: Mutex<State>,
}

/// Whether a replica serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// It serves reads (the state at connect: a replica down then is found out by the first
    /// read).
    Up,
    /// It failed; reads skip it until `until`, then it is probed.
    Down { until: Instant },
    /// A probe is in flight; reads skip it.
    Probing,
}

/// The replicas' pools, before the store has its primary's connections.
pub(crate) struct ReplicaPools {
    list: Vec<Arc<Replica>>,
    attempt: Duration,
}

impl ReplicaPools {
    /// `Err(Validation)` on `replica_urls` when one of `config`'s replica URLs is not
    /// PostgreSQL's.
    pub(crate) fn check(config: &StoreConfig) -> Result<()> {
        for url in &config.replica_urls {
            store::connect_options(config, url, "replica_urls")?;
        }
        Ok(())
    }

    /// The replicas of `config`, each a lazily connected pool with the primary's settings, as
    /// `engine` (the primary's) takes them (nothing is connected yet: a replica that is down
    /// does not fail the store's connect).
    ///
    /// Errors: [`Error::Validation`](stockroom_core::Error::Validation) on `replica_urls` for a
    /// URL that is not PostgreSQL's.
    pub(crate) fn connect(
        config: &StoreConfig,
        options: &PostgresOptions,
        engine: Engine,
    ) -> Result<Self> {
        let options = on_a_standby(options);
        let list = config
            .replica_urls
            .iter()
            .map(|url| {
                let connect = store::connect_options(config, url, "replica_urls")?
                    .options(store::startup_settings(&options, engine));
                let pool = store::pool_options(config).connect_lazy_with(connect);
                // Kept between sessions like the primary's: nobody else takes from this pool.
                let connections = Connections::new(pool.clone(), true, options.test_before_acquire);
                stockroom_core::metrics::adapter::replica_state(
                    "postgresql",
                    &redact_url(url),
                    true,
                );
                Ok(Arc::new(Replica {
                    url: redact_url(url),
                    pool,
                    connections: Arc::new(connections),
                    state: Mutex::new(State::Up),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            list,
            attempt: MOST_ATTEMPT.min(config.acquire_timeout),
        })
    }

    /// The replicas, with `primary`'s connections for the fall-back.
    pub(crate) fn falling_back_to(self, primary: &Arc<Connections>) -> Replicas {
        Replicas {
            list: self.list,
            next: AtomicUsize::new(0),
            primary: Arc::clone(primary),
            attempt: self.attempt,
        }
    }
}

/// `options` as a replica's sessions take them: a hot standby has no SERIALIZABLE (it refuses
/// every statement at `default_transaction_isolation = serializable`, SQLSTATE 0A000), so they
/// run at REPEATABLE READ then, the strictest level it has.
fn on_a_standby(options: &PostgresOptions) -> PostgresOptions {
    let level = options.isolation.map(|level| match level {
        IsolationLevel::Serializable => IsolationLevel::RepeatableRead,
        other => other,
    });
    options.clone().with_isolation(level)
}

impl Replicas {
    /// No replicas: every read on `primary`.
    pub(crate) fn none(primary: &Arc<Connections>) -> Self {
        Self {
            list: Vec::new(),
            next: AtomicUsize::new(0),
            primary: Arc::clone(primary),
            attempt: MOST_ATTEMPT,
        }
    }

    /// A connection for a read session: the next replica's in turn, else the primary's (see
    /// the module docs).
    pub(crate) async fn lend(self: &Arc<Self>) -> sqlx::Result<Lease> {
        if self.list.is_empty() {
            return self.primary.lend().await;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        self.lend_from(start, None).await
    }

    /// A connection of the first replica that serves, taking them in turn from `start`
    /// (`skip` excepted), else the primary's.
    async fn lend_from(self: &Arc<Self>, start: usize, skip: Option<usize>) -> sqlx::Result<Lease> {
        let count = self.list.len();
        for index in (0..count).map(|i| start.wrapping_add(i) % count) {
            let replica = &self.list[index];
            if Some(index) == skip || !replica.serves(self.attempt) {
                continue;
            }
            match tokio::time::timeout(self.attempt, replica.connections.lend()).await {
                Ok(Ok(lease)) => {
                    return Ok(lease.rerouted_by(Reroute {
                        replicas: Arc::clone(self),
                        index,
                    }));
                }
                Ok(Err(sqlx::Error::PoolClosed)) => return Err(sqlx::Error::PoolClosed),
                Ok(Err(error)) => replica.mark_down(&error.to_string()),
                Err(_) => replica.mark_down(&format!("no connection within {:?}", self.attempt)),
            }
        }
        self.primary.lend().await
    }

    /// Closes every replica's connections and returns their pools, for the store to close
    /// with its own.
    pub(crate) fn close(&self) -> Vec<PgPool> {
        self.list
            .iter()
            .map(|replica| {
                replica.connections.close();
                replica.pool.clone()
            })
            .collect()
    }
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list.iter()).finish()
    }
}

impl fmt::Debug for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state() {
            State::Up => "up",
            State::Down { .. } => "down",
            State::Probing => "probing",
        };
        f.debug_struct("Replica")
            .field("url", &self.url)
            .field("state", &state)
            .field("open_connections", &self.pool.size())
            .field("kept_connections", &self.connections.kept())
            .finish()
    }
}

impl Replica {
    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether reads may try this replica now. A replica whose back-off has passed is probed
    /// in the background (within `attempt`), and skipped until the probe says it serves.
    fn serves(self: &Arc<Self>, attempt: Duration) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Up => true,
            State::Probing => false,
            State::Down { until } if Instant::now() < until => false,
            State::Down { .. } => {
                if tokio::runtime::Handle::try_current().is_err() {
                    // No runtime to probe on: let this read try it.
                    *state = State::Up;
                    return true;
                }
                *state = State::Probing;
                drop(state);
                let replica = Arc::clone(self);
                tokio::spawn(async move { replica.probe(attempt).await });
                false
            }
        }
    }

    /// Marks the replica down for [`BACK_OFF`] (saying why, once per failure), and gives its
    /// kept connections back to its pool, which pings them and closes the dead ones.
    fn mark_down(&self, why: &str) {
        let was = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let was = *state;
            *state = State::Down {
                until: Instant::now() + BACK_OFF,
            };
            was
        };
        self.connections.give_back_kept();
        stockroom_core::metrics::adapter::replica_state("postgresql", &self.url, false);
        if was == State::Up {
            tracing::warn!(
                target: "stockroom::sql",
                replica = %self.url,
                reason = why,
                back_off_s = BACK_OFF.as_secs(),
                "read replica marked down; reads go to the other replicas, or the primary"
            );
        }
    }

    /// Takes connections from the pool until one answers a ping (closing those that do not),
    /// within `attempt`; the replica serves again if one did, else stays down.
    async fn probe(self: Arc<Self>, attempt: Duration) {
        let answered = tokio::time::timeout(attempt, async {
            loop {
                let mut conn = self.pool.acquire().await?;
                match conn.ping().await {
                    Ok(()) => return Ok::<_, sqlx::Error>(()),
                    Err(_) => conn.close_on_drop(),
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(())) if !self.connections.is_closed() => {
                *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::Up;
                stockroom_core::metrics::adapter::replica_state("postgresql", &self.url, true);
                tracing::info!(
                    target: "stockroom::sql",
                    replica = %self.url,
                    "read replica answers again; reads go to it"
                );
            }
            _ => {
                *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::Down {
                    until: Instant::now() + BACK_OFF,
                };
            }
        }
    }
}

/// What a replica's lease does when its first round trip finds the connection dead: the
/// replica is marked down and the statement goes to the next replica, or the primary.
pub(crate) struct Reroute {
    replicas: Arc<Replicas>,
    /// The replica the lease's connection came from.
    index: usize,
}

impl Reroute {
    /// Marks the replica down and lends a connection of the next one that serves, else the
    /// primary's.
    pub(crate) async fn elsewhere(self, error: &sqlx::Error) -> sqlx::Result<Lease> {
        let replica = &self.replicas.list[self.index];
        replica.mark_down(&format!("connection lost: {error}"));
        self.replicas
            .lend_from(self.index + 1, Some(self.index))
            .await
    }
}

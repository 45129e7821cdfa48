//! The store, its units of work and its read sessions.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use stockroom_core::adapter::{wait_within, Savepoints};
use stockroom_core::outbox::{Backlog, ClaimOptions, Claimed, EventId, Lease};
use stockroom_core::schema::Catalog;
use stockroom_core::time::{self, Timestamp};
use stockroom_core::{Error, ReadSession, Result, Rule, Savepoint, Store, StoreConfig, UnitOfWork};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::outbox::Leases;
use crate::repositories::{check_open, Tables};
use crate::state::State;

/// An in-memory [`Store`]: the reference implementation of every port.
///
/// Cheap to clone (clones share the data) and safe to share across tasks and threads. Units of
/// work are serialized: [`begin`](Store::begin) waits up to the configured `acquire_timeout`
/// for the one writer slot (as a SQL store waits for a pooled connection), then fails with
/// [`Error::Unavailable`]; within a retried operation whose deadline comes first, it waits
/// until the deadline, then fails as [`Error::Transient`]. Each unit of work writes to its own
/// copy of the data (O(1) to take: the tables are persistent maps) and publishes it atomically
/// on commit; reads see the last committed state, never a partial one.
#[derive(Clone)]
pub struct MemoryStore {
    db: Arc<Database>,
}

/// What the store's clones, units of work and read sessions share: the committed state, the
/// writer slot and whether the store was closed.
struct Database {
    committed: RwLock<Arc<State>>,
    /// The entities the store holds.
    catalog: Arc<Catalog>,
    writer: Arc<Mutex<()>>,
    /// Shared with every session's [`Tables`], whose calls fail once it is set.
    closed: Arc<AtomicBool>,
    acquire_timeout: Duration,
    /// Write Stockroom's own events ([`StoreConfig::own_events`]).
    own_events: bool,
    /// Who holds each lane of the outbox.
    leases: std::sync::Mutex<Leases>,
}

impl Database {
    fn check_open(&self) -> Result<()> {
        check_open(&self.closed)
    }

    /// The writer slot, once the store is open and the slot free: waited for up to the acquire
    /// timeout, and never past the deadline of the operation in progress (a retried one's):
    /// then the answer is `Transient`.
    async fn writer_slot(&self) -> Result<OwnedMutexGuard<()>> {
        self.check_open()?;
        let writer = match Arc::clone(&self.writer).try_lock_owned() {
            Ok(writer) => writer,
            Err(_) => {
                let timeout = self.acquire_timeout;
                wait_within(
                    timeout,
                    Arc::clone(&self.writer).lock_owned(),
                    || {
                        Error::unavailable(format!(
                            "timed out after {timeout:?} waiting for the memory store's writer slot"
                        ))
                    },
                    "the memory store's writer slot",
                )
                .await?
            }
        };
        self.check_open()?;
        Ok(writer)
    }

    /// A write outside any unit of work (the outbox's bookkeeping): the committed state, to
    /// change and publish while holding the writer slot.
    async fn write_directly(self: &Arc<Self>) -> Result<DirectWrite> {
        let writer = self.writer_slot().await?;
        Ok(DirectWrite {
            state: self.snapshot(),
            db: Arc::clone(self),
            writer,
        })
    }

    /// `state`, behind the gate that closes with the store.
    fn tables(&self, state: Arc<State>) -> Tables {
        Tables {
            state,
            closed: Arc::clone(&self.closed),
            own_events: self.own_events,
        }
    }

    fn snapshot(&self) -> Arc<State> {
        Arc::clone(
            &self
                .committed
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Makes `state` the committed one; returns the previous one, for the caller to drop
    /// (freeing the versions nobody shares any more can take a while) after releasing the
    /// writer slot.
    #[must_use = "drop the previous state outside the writer slot"]
    fn publish(&self, state: Arc<State>) -> Arc<State> {
        let mut committed = self
            .committed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *committed, state)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("committed", &self.db.snapshot())
            .field("closed", &self.db.closed.load(Ordering::Relaxed))
            .field("acquire_timeout", &self.db.acquire_timeout)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store of Stockroom's entities, with the default settings of [`StoreConfig`].
    pub fn new() -> Self {
        Self::with_config(StoreConfig::new("memory://"))
            .expect("Stockroom's own declarations are valid")
    }

    /// An empty store; of `config`, `acquire_timeout` (how long `begin` waits for the writer
    /// slot) and `entities` (the application's entities it holds besides Stockroom's) apply.
    /// A declaration no backend can store is [`Error::Schema`].
    pub fn with_config(config: StoreConfig) -> Result<Self> {
        let catalog = Arc::new(Catalog::new(config.entities.schemas())?);
        Ok(Self {
            db: Arc::new(Database {
                committed: RwLock::new(Arc::new(State::new(Arc::clone(&catalog)))),
                catalog,
                writer: Arc::new(Mutex::new(())),
                closed: Arc::new(AtomicBool::new(false)),
                acquire_timeout: config.acquire_timeout,
                own_events: config.own_events,
                leases: std::sync::Mutex::default(),
            }),
        })
    }

    /// An empty store for a `memory://` URL (anything after `memory://` is ignored). Any other
    /// URL is a validation error on `url`; read replicas are refused as `Unsupported`.
    pub fn connect(config: &StoreConfig) -> Result<Self> {
        stockroom_core::adapter::refuse_replicas(config, "memory")?;
        if config.scheme().as_deref() != Some("memory") {
            return Err(Error::validation(
                "url",
                Rule::Malformed {
                    expected: "a memory:// URL",
                },
            ));
        }
        Self::with_config(config.clone())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Memory
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        let writer = self.db.writer_slot().await?;
        Ok(Box::new(MemoryUnitOfWork {
            tables: self.db.tables(self.db.snapshot()),
            savepoints: Vec::new(),
            marks: Savepoints::default(),
            db: Arc::clone(&self.db),
            writer_slot: writer,
        }))
    }

    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        self.db.check_open()?;
        Ok(Box::new(MemoryReadSession {
            tables: self.db.tables(self.db.snapshot()),
            db: Arc::clone(&self.db),
        }))
    }

    async fn health(&self) -> Result<()> {
        self.db.check_open()
    }

    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed> {
        options.check()?;
        self.db.check_open()?;
        let now = time::now();
        let token = Uuid::now_v7();
        let (state, lanes) = {
            let mut leases = self
                .db
                .leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Taken under the leases' lock: a lane given back was given back after its events
            // were marked delivered, so this state shows them delivered.
            let state = self.db.snapshot();
            let lanes: Vec<u16> = state
                .outbox
                .lanes_with_events()
                .into_iter()
                .filter(|&lane| leases.is_free(lane, now))
                .take(usize::from(options.max_lanes))
                .collect();
            let until = options.lease_until(now);
            for &lane in &lanes {
                leases.lease(lane, token, until);
            }
            (state, lanes)
        };
        if lanes.is_empty() {
            return Ok(Claimed::nothing());
        }
        let events = state.outbox.pending_of(&lanes, options.max_events);
        let lease = MemoryLease {
            db: Arc::clone(&self.db),
            token,
        };
        Ok(Claimed::new(events, Box::new(lease)))
    }

    async fn outbox_backlog(&self) -> Result<Backlog> {
        self.db.check_open()?;
        Ok(self.db.snapshot().outbox.backlog())
    }

    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64> {
        let before = time::supported("before", before)?;
        let mut write = self.db.write_directly().await?;
        let purged = write.state_mut().outbox.purge_delivered_before(before);
        write.commit();
        Ok(purged)
    }

    async fn close(&self) {
        self.db.closed.store(true, Ordering::Release);
        drop(
            self.db
                .publish(Arc::new(State::new(Arc::clone(&self.db.catalog)))),
        );
    }
}

/// A change of the committed state outside any unit of work, holding the writer slot.
struct DirectWrite {
    state: Arc<State>,
    db: Arc<Database>,
    writer: OwnedMutexGuard<()>,
}

impl DirectWrite {
    fn state_mut(&mut self) -> &mut State {
        Arc::make_mut(&mut self.state)
    }

    /// Publishes the change and frees the writer slot.
    fn commit(self) {
        let previous = self.db.publish(self.state);
        drop(self.writer);
        drop(previous);
    }
}

/// The lease of a claim's lanes.
struct MemoryLease {
    db: Arc<Database>,
    token: Uuid,
}

impl fmt::Debug for MemoryLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLease")
            .field("token", &self.token)
            .finish()
    }
}

#[async_trait]
impl Lease for MemoryLease {
    async fn settle(self: Box<Self>, delivered: Vec<EventId>) -> Result<()> {
        if !delivered.is_empty() {
            let mut write = self.db.write_directly().await?;
            write
                .state_mut()
                .outbox
                .mark_delivered(&delivered, time::now());
            write.commit();
        }
        self.db
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(self.token);
        Ok(())
    }
}

/// A unit of work: a private copy of the committed state, published on commit. It holds the
/// store's writer slot until it ends.
struct MemoryUnitOfWork {
    tables: Tables,
    /// The state when each open savepoint was taken, outermost first.
    savepoints: Vec<Arc<State>>,
    marks: Savepoints,
    db: Arc<Database>,
    writer_slot: OwnedMutexGuard<()>,
}

impl fmt::Debug for MemoryUnitOfWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryUnitOfWork")
            .field("state", &self.tables.state)
            .field("savepoints", &self.marks.depth())
            .finish()
    }
}

#[async_trait]
impl UnitOfWork for MemoryUnitOfWork {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Memory
    }

    fn repositories(&mut self) -> &mut dyn stockroom_core::Repositories {
        &mut self.tables
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        self.savepoints.push(self.tables.state.clone());
        Ok(self.marks.open())
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        self.marks.close(&savepoint)?;
        self.savepoints.truncate(savepoint.depth() as usize);
        self.tables.state = self
            .savepoints
            .pop()
            .expect("an open savepoint has its saved state");
        Ok(())
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.marks.close(&savepoint)?;
        self.savepoints.truncate(savepoint.depth() as usize - 1);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.db.check_open()?;
        let MemoryUnitOfWork {
            tables,
            savepoints,
            db,
            writer_slot,
            ..
        } = *self;
        drop(savepoints);
        let previous = db.publish(tables.state);
        drop(writer_slot); // the next unit of work may begin: it sees the new state
        drop(previous);
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// Reads outside a transaction. Like a SQL connection in autocommit mode, each read sees the
/// state committed when it starts: the session takes a fresh snapshot (O(1)) every time one of
/// its readers is asked for.
struct MemoryReadSession {
    tables: Tables,
    db: Arc<Database>,
}

impl MemoryReadSession {
    /// The tables, as last committed.
    fn latest(&mut self) -> &mut Tables {
        // After close, the tables answer `Unavailable` (the snapshot is then the empty one).
        self.tables.state = self.db.snapshot();
        &mut self.tables
    }
}

impl fmt::Debug for MemoryReadSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReadSession")
            .field("state", &self.tables.state)
            .finish()
    }
}

impl ReadSession for MemoryReadSession {
    fn backend(&self) -> stockroom_core::Backend {
        stockroom_core::Backend::Memory
    }

    fn readers(&mut self) -> &mut dyn stockroom_core::Readers {
        self.latest()
    }
}

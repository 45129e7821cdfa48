use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::entities::{Category, Entity, NewStockMovement, Product, Review, User};
use crate::error::{Error, Result, Rule};
use crate::outbox::{Backlog, ClaimOptions, Claimed, NewEvent};
use crate::ports::stock::{
    move_stock_in_own_unit_of_work, move_stock_with_repositories, StockMoved,
};
use crate::ports::{RecordReader, RecordWriter, StockMovementReader, StockMovementRepository};
use crate::repo::{ReadRepo, Repo};
use crate::time::Timestamp;

/// Every reader of a read session, as one trait: what an adapter's session type implements
/// (the generic reads of every declared entity, and the ledger's reads), and what
/// [`ReadSession::readers`] hands out.
pub trait Readers: RecordReader + StockMovementReader {}

impl<T> Readers for T where T: RecordReader + StockMovementReader + ?Sized {}

/// Every repository of a unit of work, as one trait: what an adapter's transaction type
/// implements (the generic reads and writes of every declared entity, and the ledger), and what
/// [`UnitOfWork::repositories`] hands out.
pub trait Repositories: Readers + RecordWriter + StockMovementRepository {}

impl<T> Repositories for T where T: Readers + RecordWriter + StockMovementRepository + ?Sized {}

/// Reads outside a transaction, on one connection of the store's own.
///
/// The readers of each entity are reached through it: `session.products()`, `.categories()`,
/// `.users()`, `.reviews()`, `.movements()`, or `session.reader::<E>()` for any entity, the
/// application's own included.
pub trait ReadSession: Send {
    /// The backend, as [`Store::backend`] says it.
    fn backend(&self) -> Backend;

    /// Every reader of the session (what the accessors of `dyn ReadSession` hand out).
    fn readers(&mut self) -> &mut dyn Readers;

    /// The adapter's own read session behind this one (itself, for an adapter's), as [`Any`]
    /// for the adapter crate's typed access to the session's connection
    /// (`stockroom_postgres::read_connection`, `stockroom_sqlite::with_read_connection`). A
    /// wrapper, such as [`Traced`](crate::Traced), forwards to the session it wraps.
    ///
    /// `None`, the default, for a session that has no SQL connection to lend: the memory
    /// store's, a mock's, or one an application writes; those need not implement it.
    fn as_native(&mut self) -> Option<&mut (dyn Any + Send)> {
        None
    }
}

impl dyn ReadSession + '_ {
    /// The product reader.
    pub fn products(&mut self) -> ReadRepo<'_, Product> {
        self.reader()
    }
    /// The category reader.
    pub fn categories(&mut self) -> ReadRepo<'_, Category> {
        self.reader()
    }
    /// The user reader.
    pub fn users(&mut self) -> ReadRepo<'_, User> {
        self.reader()
    }
    /// The review reader.
    pub fn reviews(&mut self) -> ReadRepo<'_, Review> {
        self.reader()
    }
    /// The stock ledger's reader.
    pub fn movements(&mut self) -> &mut dyn StockMovementReader {
        self.readers()
    }
    /// The reads of entity `E`: any entity the store holds (see
    /// [`StoreConfig::with_entity`](crate::StoreConfig::with_entity)).
    pub fn reader<E: Entity>(&mut self) -> ReadRepo<'_, E> {
        let records: &mut dyn RecordReader = self.readers();
        Repo::new(records)
    }
}

/// One transaction and the repositories bound to it.
///
/// It sees its own writes; nobody else does until [`commit`](UnitOfWork::commit). Dropped
/// without a commit, it rolls back. The repositories of each entity are reached through it:
/// `uow.products()`, `.categories()`, `.users()`, `.reviews()`, `.movements()`, or
/// `uow.repository::<E>()` for any entity, the application's own included.
#[async_trait]
pub trait UnitOfWork: Send {
    /// The backend, as [`Store::backend`] says it.
    fn backend(&self) -> Backend;

    /// Every repository of the unit of work (what the accessors of `dyn UnitOfWork` hand out).
    fn repositories(&mut self) -> &mut dyn Repositories;

    /// Opens a nested savepoint.
    async fn savepoint(&mut self) -> Result<Savepoint>;

    /// Undoes everything since `savepoint` (savepoints opened after it included) and closes it.
    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()>;

    /// Keeps everything since `savepoint` as part of the enclosing transaction and closes it.
    async fn release(&mut self, savepoint: Savepoint) -> Result<()>;

    /// Makes every write durable and visible to others.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Undoes every write.
    async fn rollback(self: Box<Self>) -> Result<()>;

    /// Moves stock and writes its ledger row, atomically, in this unit of work: the port of the
    /// transfer use case (see [`move_stock_with_repositories`](crate::ports::move_stock_with_repositories)
    /// for its rules). The default does it with the repository ports; an adapter may do it
    /// natively. Applications call [`UnitOfWorkExt::transfer`](crate::UnitOfWorkExt::transfer).
    async fn move_stock(&mut self, movement: &NewStockMovement) -> Result<StockMoved> {
        move_stock_with_repositories(self.repositories(), movement).await
    }

    /// The adapter's own unit of work behind this one (itself, for an adapter's), as [`Any`]
    /// for the adapter crate's typed access to the transaction's connection
    /// (`stockroom_postgres::connection`, `stockroom_sqlite::with_connection`). A wrapper, such
    /// as [`Traced`](crate::Traced), forwards to the unit of work it wraps.
    ///
    /// `None`, the default, for a unit of work that has no SQL connection to lend: the memory
    /// store's, a mock's, or one an application writes; those need not implement it.
    fn as_native(&mut self) -> Option<&mut (dyn Any + Send)> {
        None
    }
}

impl dyn UnitOfWork + '_ {
    /// The product repository of the transaction.
    pub fn products(&mut self) -> Repo<'_, Product> {
        self.repository()
    }
    /// The category repository of the transaction.
    pub fn categories(&mut self) -> Repo<'_, Category> {
        self.repository()
    }
    /// The user repository of the transaction.
    pub fn users(&mut self) -> Repo<'_, User> {
        self.repository()
    }
    /// The review repository of the transaction.
    pub fn reviews(&mut self) -> Repo<'_, Review> {
        self.repository()
    }
    /// The stock ledger of the transaction.
    pub fn movements(&mut self) -> &mut dyn StockMovementRepository {
        self.repositories()
    }
    /// Publishes `event` in the transaction: it is committed with the unit of work (and then
    /// claimed by a relay, see [`outbox`](crate::outbox)), or gone with a rollback.
    ///
    /// ```
    /// use stockroom_core::outbox::NewEvent;
    /// use stockroom_core::{Result, Store};
    ///
    /// async fn place_order(store: &dyn Store, order: &str) -> Result<()> {
    ///     let mut uow = store.begin().await?;
    ///     // … the order's own writes …
    ///     uow.publish(NewEvent::new("orders.placed", order, br#"{"total":12}"#.to_vec())?)
    ///         .await?;
    ///     uow.commit().await // the event is in the outbox if and only if this commits
    /// }
    /// ```
    pub async fn publish(&mut self, event: NewEvent) -> Result<()> {
        self.repositories().append_events(vec![event]).await
    }

    /// Publishes `events`, in order, in the transaction (as `publish` does one).
    pub async fn publish_all(&mut self, events: Vec<NewEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.repositories().append_events(events).await
    }

    /// The reads and writes of entity `E` in the transaction: any entity the store holds (see
    /// [`StoreConfig::with_entity`](crate::StoreConfig::with_entity)).
    pub fn repository<E: Entity>(&mut self) -> Repo<'_, E> {
        let records: &mut dyn RecordWriter = self.repositories();
        Repo::new(records)
    }
}

/// The adapter's unit of work of type `U` behind `uow`, for the adapter crates' typed access to
/// a transaction's connection. Any other backend's unit of work (or a mock) is
/// [`Error::Unsupported`] naming `operation` and the backend it is on.
#[doc(hidden)]
pub fn native_unit_of_work<'u, U: Any>(
    uow: &'u mut dyn UnitOfWork,
    operation: &'static str,
) -> Result<&'u mut U> {
    let backend = uow.backend().as_str();
    uow.as_native()
        .and_then(|native| native.downcast_mut::<U>())
        .ok_or(Error::Unsupported { operation, backend })
}

/// The adapter's read session of type `S` behind `session`, for the adapter crates' typed
/// access to a read session's connection. Any other backend's session (or a mock) is
/// [`Error::Unsupported`] naming `operation` and the backend it is on.
#[doc(hidden)]
pub fn native_read_session<'s, S: Any>(
    session: &'s mut dyn ReadSession,
    operation: &'static str,
) -> Result<&'s mut S> {
    let backend = session.backend().as_str();
    session
        .as_native()
        .and_then(|native| native.downcast_mut::<S>())
        .ok_or(Error::Unsupported { operation, backend })
}

/// A nested savepoint of one unit of work; consumed by `rollback_to` or `release`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a savepoint is closed with rollback_to or release"]
pub struct Savepoint {
    owner: u64,
    depth: u32,
}

impl Savepoint {
    /// How deeply nested it is: 1 for the outermost.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The SQL name of the savepoint (`sp1`, `sp2`, …).
    pub fn name(&self) -> String {
        format!("sp{}", self.depth)
    }
}

/// The bookkeeping of a unit of work's nested savepoints, so that every adapter refuses the same
/// misuse the same way (a savepoint already closed, or one of another unit of work).
#[derive(Debug)]
pub struct Savepoints {
    owner: u64,
    depth: u32,
}

impl Default for Savepoints {
    fn default() -> Self {
        static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);
        Self {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            depth: 0,
        }
    }
}

impl Savepoints {
    /// How many savepoints are open.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Opens the next savepoint.
    pub fn open(&mut self) -> Savepoint {
        self.depth += 1;
        Savepoint {
            owner: self.owner,
            depth: self.depth,
        }
    }

    /// Checks that `savepoint` is open here, then closes it and every savepoint inside it.
    pub fn close(&mut self, savepoint: &Savepoint) -> Result<()> {
        if savepoint.owner != self.owner || savepoint.depth == 0 || savepoint.depth > self.depth {
            return Err(Error::validation(
                "savepoint",
                Rule::Malformed {
                    expected: "a savepoint still open in this unit of work",
                },
            ));
        }
        self.depth = savepoint.depth - 1;
        Ok(())
    }
}

/// The storage engine a store runs on, as [`Store::backend`] and [`UnitOfWork::backend`] say.
///
/// ```
/// use stockroom_core::Backend;
/// assert_eq!(Backend::Sqlite.as_str(), "sqlite");
/// assert_eq!(Backend::Postgres.to_string(), "postgres");
/// assert_eq!("memory".parse::<Backend>(), Ok(Backend::Memory));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum Backend {
    /// The in-memory store (`memory://`).
    Memory,
    /// SQLite (`sqlite://`), embedded.
    Sqlite,
    /// PostgreSQL (`postgres://`), or an engine that speaks its protocol.
    Postgres,
    /// MariaDB (`mariadb://` or `mysql://`), a Galera cluster's node included.
    MariaDb,
}

impl Backend {
    /// The backend's name, as in a URL's scheme and in spans: `memory`, `sqlite`, `postgres`,
    /// `mariadb`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MariaDb => "mariadb",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = UnknownBackend;

    /// The backend named `name` (`memory`, `sqlite`, `postgres` or `mariadb`, as [`Backend::as_str`] says).
    fn from_str(name: &str) -> std::result::Result<Self, UnknownBackend> {
        [
            Backend::Memory,
            Backend::Sqlite,
            Backend::Postgres,
            Backend::MariaDb,
        ]
        .into_iter()
        .find(|backend| backend.as_str() == name)
        .ok_or(UnknownBackend)
    }
}

/// A name [`Backend::from_str`](std::str::FromStr::from_str) does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownBackend;

impl std::fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a backend's name: memory, sqlite, postgres or mariadb")
    }
}

impl std::error::Error for UnknownBackend {}

/// A connected backend.
///
/// With the `mocks` feature, [`MockStore`](crate::mocks::MockStore) is a
/// [mockall](https://docs.rs/mockall) mock of it (generated from this trait).
///
/// Usable as `Arc<dyn Store>` (chosen at run time from a URL) or generically. Every method takes
/// `&self`: one store serves many tasks at once, each with its own connection.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync {
    /// The storage engine the store runs on.
    fn backend(&self) -> Backend;

    /// Begins a unit of work on a connection of its own.
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>>;

    /// A connection for reads that need no transaction (and pay for none). With read replicas
    /// configured ([`StoreConfig::replica_urls`](crate::StoreConfig::replica_urls)) it is a
    /// replica's, which may lag behind the primary: use [`read_primary`](Self::read_primary)
    /// to read what was just committed.
    async fn read(&self) -> Result<Box<dyn ReadSession>>;

    /// A read session on the primary: it sees every unit of work committed before it was
    /// taken (read-your-writes), whatever the replicas' lag. The same as
    /// [`read`](Self::read) on a store without replicas (the default).
    async fn read_primary(&self) -> Result<Box<dyn ReadSession>> {
        self.read().await
    }

    /// Checks that the backend answers (liveness): a read on a connection of the store's.
    async fn health(&self) -> Result<()>;

    /// Checks that the store can serve writes now (readiness): the backend answers and accepts
    /// writes (a SQLite file opened read-write and still writable, a PostgreSQL server not in
    /// recovery), without waiting behind the store's busy connections or writer (a check that
    /// cannot get a connection within a short bound fails as [`Error::Unavailable`]). A
    /// backend that cannot write is [`Error::Storage`] with [`StorageFault::ReadOnly`](crate::StorageFault::ReadOnly).
    /// The default is [`health`](Store::health).
    async fn readiness(&self) -> Result<()> {
        self.health().await
    }

    /// [`UnitOfWork::move_stock`] in a transaction of its own, committed when it applied (or
    /// found) the move: what the transfer use case runs, and retries. The default begins a unit
    /// of work; an adapter may do it in fewer round trips. Applications call
    /// [`StoreExt::transfer`](crate::StoreExt::transfer).
    async fn move_stock(&self, movement: &NewStockMovement) -> Result<StockMoved> {
        move_stock_in_own_unit_of_work(self, movement).await
    }

    /// Claims committed, undelivered events for a relay: the events of up to
    /// `options.max_lanes` free lanes (those whose oldest event is oldest first), at most
    /// `options.max_events`, in sequence order, the lanes leased to the claim (see
    /// [`outbox`](crate::outbox)). [`Claimed::nothing`](crate::outbox::Claimed::nothing) when
    /// no free lane has an undelivered event. Options out of bounds are [`Error::Validation`].
    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed>;

    /// What waits in the outbox: undelivered events, the oldest one's time, delivered events
    /// not purged yet.
    async fn outbox_backlog(&self) -> Result<Backlog>;

    /// Deletes delivered events delivered before `before`; how many. Undelivered events stay,
    /// however old.
    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64>;

    /// Closes every connection; afterwards every call fails with
    /// [`Error::Unavailable`](crate::Error::Unavailable).
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoints_close_inner_ones_with_outer() {
        let mut sps = Savepoints::default();
        let outer = sps.open();
        let inner = sps.open();
        sps.close(&outer).unwrap();
        assert_eq!(sps.depth(), 0);
        assert!(sps.close(&inner).is_err(), "inner was closed with outer");
        let foreign = Savepoints::default().open();
        assert!(sps.open().depth() == 1 && sps.close(&foreign).is_err());
    }
}

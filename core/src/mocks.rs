//! Test doubles for an application's unit tests (feature `mocks`).
//!
//! - [mockall](https://docs.rs/mockall) mocks of the ports, generated from the ports themselves
//!   so they follow every change: [`MockStore`], [`MockUnitOfWork`], [`MockReadSession`], the
//!   typed repositories [`MockRepository`] (a [`Repository<E>`](crate::Repository) and its
//!   [`ReadRepository<E>`](crate::ReadRepository)) and the record and ledger ports a unit of
//!   work hands out ([`MockRepositories`], made of [`MockRecords`] and [`MockLedger`]). A mocked unit of work or read session has no SQL
//!   connection to lend (its `as_native` is the port's default, `None`), and nothing else of a
//!   port is hidden from the docs or needs implementing by hand.
//! - [`FaultyStore`]: a real store (usually the memory store) that fails on purpose where it is
//!   told to: `begin`, `read`, `commit` (rolled back, or committed with the answer lost), the stock
//!   move, `health`, `readiness`; or is slow there ([`FaultyStore::delay`]), as a backend that
//!   takes its time to answer. It counts every call, so a test also checks what was asked of
//!   the store (how many units of work a retry began, say). It passes everything else through,
//!   the application's own SQL included (`stockroom::sqlite::with_connection` on a
//!   `FaultyStore` around a SQLite store).
//!
//! For everything else, test with the memory store: it is a real, transactional store with the
//! semantics of every backend (and, for code with SQL of its own, SQLite's `sqlite::memory:`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use stockroom_core::mocks::{Fault, FaultyStore, MockStore};
//! use stockroom_core::{Error, Store};
//!
//! // Usually the memory store; here a mock that must not be asked to begin.
//! let mut inner = MockStore::new();
//! inner.expect_begin().never();
//! let store = FaultyStore::new(inner);
//! // The next begin fails as if the pool were exhausted.
//! store.inject(Fault::Begin, 1, || Error::unavailable("pool exhausted"));
//! assert!(matches!(store.begin().await, Err(Error::Unavailable { .. })));
//! assert_eq!(store.calls(Fault::Begin), 1);
//! # }
//! ```
//!
//! A unit of work whose commit fails, handed to the code under test by a mocked store:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use stockroom_core::mocks::{MockStore, MockUnitOfWork};
//! use stockroom_core::{Error, Store, UnitOfWork};
//!
//! let mut store = MockStore::new();
//! store.expect_begin().times(1).returning(|| {
//!     let mut uow = MockUnitOfWork::new();
//!     uow.expect_commit()
//!         .times(1)
//!         .returning(|| Err(Error::ambiguous_commit("connection lost during COMMIT")));
//!     Ok(Box::new(uow) as Box<dyn UnitOfWork>)
//! });
//!
//! let uow = store.begin().await.unwrap();
//! assert!(uow.commit().await.unwrap_err().is_ambiguous_commit());
//! # }
//! ```
//!
//! A typed repository, for code that takes `&mut dyn Repository<E>`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use stockroom_core::mocks::MockRepository;
//! use stockroom_core::{Error, EntityKind, Product, ProductId, ReadRepository};
//!
//! let id = ProductId::new();
//! let mut products = MockRepository::<Product>::new();
//! products.expect_get().times(1).returning(|_| Ok(None));
//! let reads: &mut dyn ReadRepository<Product> = &mut products;
//! let missing = reads.require(id).await.unwrap_err();
//! assert!(matches!(missing, Error::NotFound { entity, .. } if entity == EntityKind::PRODUCT));
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use crate::ports::MockStore;

use crate::entities::{Entity, StockMovement};
use crate::ids::{ProductId, StockMovementId};
use crate::ports::{
    ReadRepository, ReadSession as ReadSessionPort, Readers, RecordReader, RecordWriter,
    Repository, StockMovementReader, StockMovementRepository,
};
use crate::query::{Cursor, KeysetPage, Limit, Page, SearchPage};
use crate::schema::{Changes, Condition, Incremented, Record, Schema, Selection, Value};
use crate::time::Timestamp;

mockall::mock! {
    /// A mock of [`UnitOfWork`]: set what `commit`, `rollback`, the savepoints and
    /// `move_stock` answer, and hand out repositories with
    /// `expect_repositories().return_var(Box::new(repositories))` (a [`MockRepositories`]).
    pub UnitOfWork {}

    #[async_trait]
    impl UnitOfWork for UnitOfWork {
        fn backend(&self) -> crate::Backend;
        fn repositories(&mut self) -> &mut dyn Repositories;
        async fn savepoint(&mut self) -> Result<Savepoint>;
        async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()>;
        async fn release(&mut self, savepoint: Savepoint) -> Result<()>;
        async fn commit(self: Box<Self>) -> Result<()>;
        async fn rollback(self: Box<Self>) -> Result<()>;
        async fn move_stock(&mut self, movement: &NewStockMovement) -> Result<StockMoved>;
    }
}

mockall::mock! {
    /// A mock of [`ReadSession`]: hand out readers with
    /// `expect_readers().return_var(Box::new(repositories))` (a [`MockRepositories`]).
    pub ReadSession {}

    impl ReadSessionPort for ReadSession {
        fn backend(&self) -> crate::Backend;
        fn readers(&mut self) -> &mut dyn Readers;
    }
}

mockall::mock! {
    /// A mock of the typed repository of entity `E`: [`Repository<E>`](crate::Repository) and
    /// [`ReadRepository<E>`](crate::ReadRepository), for code that takes
    /// `&mut dyn Repository<E>`. `require` keeps the port's default (a `get` that answers
    /// `None` is [`Error::NotFound`]).
    pub Repository<E: Entity> {}

    #[async_trait]
    impl<E: Entity> ReadRepository<E> for Repository<E> {
        async fn get(&mut self, id: E::Id) -> Result<Option<E>>;
        async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>>;
        async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>>;
        async fn list_after(
            &mut self,
            filter: &E::Filter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<E>>;
        async fn count(&mut self, filter: &E::Filter) -> Result<u64>;
        async fn exists(&mut self, filter: &E::Filter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>>;
    }

    #[async_trait]
    impl<E: Entity> Repository<E> for Repository<E> {
        async fn create(&mut self, new: E::New) -> Result<E>;
        async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>>;
        async fn update(
            &mut self,
            id: E::Id,
            patch: &E::Patch,
            expected_version: Option<i64>,
        ) -> Result<E>;
        async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64>;
        async fn soft_delete(&mut self, id: E::Id) -> Result<bool>;
        async fn restore(&mut self, id: E::Id) -> Result<bool>;
        async fn hard_delete(&mut self, id: E::Id) -> Result<()>;
        async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64>;
    }
}

mockall::mock! {
    /// A mock of the generic record ports of every entity
    /// ([`RecordReader`], [`RecordWriter`]), the
    /// entities' half of a [`MockRepositories`]; expectations name an entity by its
    /// [`Schema`] (`withf(|schema, _| schema.name == "product")`).
    pub Records {}

    #[async_trait]
    impl RecordReader for Records {
        async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>>;
        async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>>;
        async fn find(
            &mut self,
            schema: &'static Schema,
            unique: usize,
            values: &[Value],
        ) -> Result<Option<Record>>;
        async fn get_related(
            &mut self,
            schema: &'static Schema,
            id: Uuid,
        ) -> Result<Option<(Record, Vec<Option<Record>>)>>;
        async fn list(&mut self, schema: &'static Schema, selection: &Selection) -> Result<Vec<Record>>;
        async fn count(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<u64>;
        async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool>;
        async fn search(
            &mut self,
            schema: &'static Schema,
            conditions: &[Condition],
            page: Page,
        ) -> Result<SearchPage<Record>>;
        async fn tally(
            &mut self,
            schema: &'static Schema,
            conditions: &[Condition],
            field: usize,
        ) -> Result<Vec<(Value, u64)>>;
        async fn list_deleted(&mut self, schema: &'static Schema, page: Page) -> Result<Vec<Record>>;
    }

    #[async_trait]
    impl RecordWriter for Records {
        async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>>;
        async fn update(
            &mut self,
            schema: &'static Schema,
            id: Uuid,
            changes: &Changes,
            expected_version: Option<i64>,
        ) -> Result<Record>;
        async fn update_many(
            &mut self,
            schema: &'static Schema,
            ids: &[Uuid],
            changes: &Changes,
        ) -> Result<u64>;
        async fn increment(
            &mut self,
            schema: &'static Schema,
            id: Uuid,
            field: usize,
            delta: i64,
            at: Timestamp,
        ) -> Result<Incremented>;
        async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>>;
        async fn soft_delete(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp) -> Result<bool>;
        async fn restore(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp) -> Result<bool>;
        async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()>;
        async fn purge_deleted_before(&mut self, schema: &'static Schema, before: Timestamp) -> Result<u64>;
        async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()>;
    }
}

mockall::mock! {
    /// A mock of the stock ledger's ports ([`StockMovementReader`],
    /// [`StockMovementRepository`]), the ledger half of a
    /// [`MockRepositories`].
    pub Ledger {}

    #[async_trait]
    impl StockMovementReader for Ledger {
        async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>>;
        async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>>;
        async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>>;
        async fn count(&mut self) -> Result<u64>;
    }

    #[async_trait]
    impl StockMovementRepository for Ledger {
        async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement>;
    }
}

/// What a [`MockUnitOfWork`] or [`MockReadSession`] hands out (`expect_repositories()
/// .return_var(Box::new(repositories))`), so that `uow.products()`, `uow.repository::<E>()`
/// and `uow.movements()` run over mocks: the entities' record ports answer as `records` is
/// told, the ledger as `ledger` is.
#[derive(Default)]
pub struct MockRepositories {
    /// The record ports of every entity.
    pub records: MockRecords,
    /// The stock ledger.
    pub ledger: MockLedger,
}

impl fmt::Debug for MockRepositories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockRepositories").finish_non_exhaustive()
    }
}

#[async_trait]
impl RecordReader for MockRepositories {
    async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>> {
        RecordReader::get(&mut self.records, schema, id).await
    }
    async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        self.records.get_many(schema, ids).await
    }
    async fn find(
        &mut self,
        schema: &'static Schema,
        unique: usize,
        values: &[Value],
    ) -> Result<Option<Record>> {
        self.records.find(schema, unique, values).await
    }
    async fn get_related(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
    ) -> Result<Option<(Record, Vec<Option<Record>>)>> {
        self.records.get_related(schema, id).await
    }
    async fn list(
        &mut self,
        schema: &'static Schema,
        selection: &Selection,
    ) -> Result<Vec<Record>> {
        self.records.list(schema, selection).await
    }
    async fn count(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<u64> {
        RecordReader::count(&mut self.records, schema, conditions).await
    }
    async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool> {
        self.records.exists(schema, conditions).await
    }
    async fn search(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        page: Page,
    ) -> Result<SearchPage<Record>> {
        self.records.search(schema, conditions, page).await
    }
    async fn tally(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        field: usize,
    ) -> Result<Vec<(Value, u64)>> {
        self.records.tally(schema, conditions, field).await
    }
    async fn list_deleted(&mut self, schema: &'static Schema, page: Page) -> Result<Vec<Record>> {
        self.records.list_deleted(schema, page).await
    }
}

#[async_trait]
impl RecordWriter for MockRepositories {
    async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>> {
        self.records.insert(schema, rows).await
    }
    async fn update(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        changes: &Changes,
        expected_version: Option<i64>,
    ) -> Result<Record> {
        self.records
            .update(schema, id, changes, expected_version)
            .await
    }
    async fn update_many(
        &mut self,
        schema: &'static Schema,
        ids: &[Uuid],
        changes: &Changes,
    ) -> Result<u64> {
        self.records.update_many(schema, ids, changes).await
    }
    async fn increment(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        field: usize,
        delta: i64,
        at: Timestamp,
    ) -> Result<Incremented> {
        self.records.increment(schema, id, field, delta, at).await
    }
    async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        self.records.lock(schema, ids).await
    }
    async fn soft_delete(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        at: Timestamp,
    ) -> Result<bool> {
        self.records.soft_delete(schema, id, at).await
    }
    async fn restore(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp) -> Result<bool> {
        self.records.restore(schema, id, at).await
    }
    async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()> {
        self.records.hard_delete(schema, id).await
    }
    async fn purge_deleted_before(
        &mut self,
        schema: &'static Schema,
        before: Timestamp,
    ) -> Result<u64> {
        self.records.purge_deleted_before(schema, before).await
    }
    async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()> {
        self.records.append_events(events).await
    }
}

#[async_trait]
impl StockMovementReader for MockRepositories {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        StockMovementReader::get(&mut self.ledger, id).await
    }
    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        self.ledger.by_idempotency_key(key).await
    }
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        self.ledger.for_product(product, page).await
    }
    async fn count(&mut self) -> Result<u64> {
        StockMovementReader::count(&mut self.ledger).await
    }
}

#[async_trait]
impl StockMovementRepository for MockRepositories {
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement> {
        self.ledger.record(movement).await
    }
}

use crate::entities::NewStockMovement;
use crate::error::{Error, Result};
use crate::outbox::{Backlog, ClaimOptions, Claimed, EventId, Lease, NewEvent};
use crate::ports::{ReadSession, Repositories, Savepoint, StockMoved, Store, UnitOfWork};

/// Where a [`FaultyStore`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// `Store::begin`.
    Begin,
    /// `Store::read`.
    Read,
    /// `Store::health`.
    Health,
    /// `Store::readiness`.
    Readiness,
    /// `UnitOfWork::commit`: the unit of work rolls back and the error is returned, as when the
    /// connection is lost before the commit reaches the server.
    Commit,
    /// `UnitOfWork::commit`: the unit of work commits and the error is returned anyway, as when
    /// the connection is lost after the server committed (the outcome the caller cannot know).
    CommitOutcomeLost,
    /// `UnitOfWork::rollback`.
    Rollback,
    /// `UnitOfWork::move_stock` (the atomic stock move of a transfer): nothing moves.
    MoveStock,
    /// `Store::claim_events`: nothing is claimed.
    ClaimEvents,
    /// `Claimed::acknowledge` (and `release`): the acknowledgement is lost before it reaches
    /// the store, as when the relay's connection drops: nothing is marked delivered and the
    /// lanes stay leased until the lease runs out.
    AcknowledgeEvents,
}

type MakeError = Arc<dyn Fn() -> Error + Send + Sync>;

/// One fault: how many more calls it fails, and with what.
struct Injected {
    remaining: usize,
    error: MakeError,
}

/// One delay: how many more calls it slows down, and by how much.
struct Delay {
    remaining: usize,
    by: Duration,
}

#[derive(Default)]
struct Faults {
    injected: HashMap<Fault, Vec<Injected>>,
    delays: HashMap<Fault, Vec<Delay>>,
    calls: HashMap<Fault, usize>,
}

impl Faults {
    /// How long the next call at `at` waits before it runs (zero when no delay is armed).
    fn delay(&mut self, at: Fault) -> Duration {
        let Some(armed) = self.delays.get_mut(&at) else {
            return Duration::ZERO;
        };
        match armed.iter_mut().find(|d| d.remaining > 0) {
            Some(delay) => {
                delay.remaining -= 1;
                delay.by
            }
            None => Duration::ZERO,
        }
    }

    /// Counts a call at `at`; the error it must fail with, if a fault is armed there.
    fn call(&mut self, at: Fault) -> Option<Error> {
        *self.calls.entry(at).or_default() += 1;
        let armed = self.injected.get_mut(&at)?;
        let fault = armed.iter_mut().find(|f| f.remaining > 0)?;
        fault.remaining -= 1;
        Some((fault.error)())
    }
}

/// A store that fails on purpose: see the [module docs](self). Cloning shares the faults and
/// the counts.
///
/// The stock move of a transfer runs in a unit of work of the wrapper's own (the default of
/// [`Store::move_stock`]), so faults of `begin`, `commit` and the move apply to transfers too.
pub struct FaultyStore<S: ?Sized> {
    inner: Arc<S>,
    faults: Arc<Mutex<Faults>>,
}

impl<S: ?Sized> Clone for FaultyStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            faults: Arc::clone(&self.faults),
        }
    }
}

impl<S: ?Sized> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("FaultyStore")
            .field("calls", &faults.calls)
            .finish_non_exhaustive()
    }
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, failing nowhere yet.
    pub fn new(inner: S) -> Self {
        Self::shared(Arc::new(inner))
    }
}

impl<S: Store + ?Sized> FaultyStore<S> {
    /// Wraps a store shared with others (an `Arc<dyn Store>`, say), failing nowhere yet.
    pub fn shared(inner: Arc<S>) -> Self {
        Self {
            inner,
            faults: Arc::default(),
        }
    }

    /// Makes the next `times` calls at `at` fail with the error `error` makes (after the faults
    /// armed there before it are used up).
    pub fn inject(
        &self,
        at: Fault,
        times: usize,
        error: impl Fn() -> Error + Send + Sync + 'static,
    ) -> &Self {
        self.lock().injected.entry(at).or_default().push(Injected {
            remaining: times,
            error: Arc::new(error),
        });
        self
    }

    /// Makes the next `times` calls at `at` wait `by` before they run (after the delays armed
    /// there before it are used up), as a backend that is slow to answer: a commit delayed so
    /// commits only after the wait, and not at all if it is dropped during it.
    pub fn delay(&self, at: Fault, times: usize, by: Duration) -> &Self {
        self.lock().delays.entry(at).or_default().push(Delay {
            remaining: times,
            by,
        });
        self
    }

    /// How many calls reached `at` so far, failed or not.
    pub fn calls(&self, at: Fault) -> usize {
        self.lock().calls.get(&at).copied().unwrap_or(0)
    }

    /// The store it wraps.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn check(&self, at: Fault) -> Result<()> {
        let delay = self.lock().delay(at);
        wait(delay).await;
        match self.lock().call(at) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for FaultyStore<S> {
    fn backend(&self) -> crate::Backend {
        self.inner.backend()
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        self.check(Fault::Begin).await?;
        let inner = self.inner.begin().await?;
        Ok(Box::new(FaultyUnitOfWork {
            inner,
            faults: Arc::clone(&self.faults),
        }))
    }

    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        self.check(Fault::Read).await?;
        self.inner.read().await
    }

    /// Fails like [`read`](Store::read) (the same [`Fault::Read`]).
    async fn read_primary(&self) -> Result<Box<dyn ReadSession>> {
        self.check(Fault::Read).await?;
        self.inner.read_primary().await
    }

    async fn health(&self) -> Result<()> {
        self.check(Fault::Health).await?;
        self.inner.health().await
    }

    async fn readiness(&self) -> Result<()> {
        self.check(Fault::Readiness).await?;
        self.inner.readiness().await
    }

    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed> {
        self.check(Fault::ClaimEvents).await?;
        let (events, lease) = self.inner.claim_events(options).await?.into_parts();
        Ok(match lease {
            Some(inner) => Claimed::new(
                events,
                Box::new(FaultyLease {
                    inner,
                    faults: Arc::clone(&self.faults),
                }),
            ),
            None => Claimed::nothing(),
        })
    }

    async fn outbox_backlog(&self) -> Result<Backlog> {
        self.inner.outbox_backlog().await
    }

    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_delivered_events(before).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// The lease of a claim of a [`FaultyStore`].
struct FaultyLease {
    inner: Box<dyn Lease>,
    faults: Arc<Mutex<Faults>>,
}

impl fmt::Debug for FaultyLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyLease")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl Lease for FaultyLease {
    async fn settle(self: Box<Self>, delivered: Vec<EventId>) -> Result<()> {
        if let Some(error) = armed(&self.faults, Fault::AcknowledgeEvents).await {
            drop(self.inner); // never settled: the lease runs out
            return Err(error);
        }
        self.inner.settle(delivered).await
    }
}

/// A unit of work of a [`FaultyStore`].
struct FaultyUnitOfWork {
    inner: Box<dyn UnitOfWork>,
    faults: Arc<Mutex<Faults>>,
}

/// Waits the delay armed at `at`, then counts the call: the error it must fail with, if a fault
/// is armed there.
async fn armed(faults: &Mutex<Faults>, at: Fault) -> Option<Error> {
    let lock = || faults.lock().unwrap_or_else(PoisonError::into_inner);
    let delay = lock().delay(at);
    wait(delay).await;
    lock().call(at)
}

/// Sleeps `delay`, if any.
async fn wait(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[async_trait]
impl UnitOfWork for FaultyUnitOfWork {
    fn backend(&self) -> crate::Backend {
        self.inner.backend()
    }

    fn repositories(&mut self) -> &mut dyn Repositories {
        self.inner.repositories()
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        self.inner.savepoint().await
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        self.inner.rollback_to(savepoint).await
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.inner.release(savepoint).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        if let Some(error) = armed(&self.faults, Fault::Commit).await {
            self.inner.rollback().await?;
            return Err(error);
        }
        if let Some(error) = armed(&self.faults, Fault::CommitOutcomeLost).await {
            self.inner.commit().await?;
            return Err(error);
        }
        self.inner.commit().await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        if let Some(error) = armed(&self.faults, Fault::Rollback).await {
            drop(self.inner); // a unit of work dropped without a commit rolls back
            return Err(error);
        }
        self.inner.rollback().await
    }

    async fn move_stock(&mut self, movement: &NewStockMovement) -> Result<StockMoved> {
        if let Some(error) = armed(&self.faults, Fault::MoveStock).await {
            return Err(error);
        }
        self.inner.move_stock(movement).await
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        self.inner.as_native()
    }
}

//! Test doubles for an application's unit tests (feature `mocks`).
//!
//! - [`MockStore`]: a [mockall](https://docs.rs/mockall) mock generated from the [`Store`] port itself, so it follows
//!   every change of the port; its `begin` and `read` hand out whatever units of work and read
//!   sessions a test gives it (a memory store's, say).
//! - [`FaultyStore`]: a real store (usually the memory store) that fails on purpose where it is
//!   told to: `begin`, `read`, `commit` (rolled back, or committed with the answer lost), the stock
//!   move, `health`, `readiness`; or is slow there ([`FaultyStore::delay`]), as a backend that
//!   takes its time to answer. It counts every call, so a test also checks what was asked of
//!   the store (how many units of work a retry began, say).
//!
//! For everything else, test with the memory store: it is a real, transactional store with the
//! semantics of every backend.
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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

pub use crate::ports::MockStore;

use crate::entities::NewStockMovement;
use crate::error::{Error, Result};
use crate::ports::{
    NativeUnitOfWork, ReadSession, Repositories, Savepoint, StockMoved, Store, UnitOfWork,
};

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

    async fn close(&self) {
        self.inner.close().await
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

    fn as_native(&mut self) -> &mut dyn NativeUnitOfWork {
        self.inner.as_native()
    }
}

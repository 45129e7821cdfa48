//! A unit of work per request, for web handlers (or any other "one request, one transaction"
//! code), with no web framework in it.
//!
//! A session that is committed after the handler has returned (or after the response has been
//! sent) can tell a client "created" about a row that a failed commit then throws away.
//! [`RequestUnitOfWork`] fixes the order instead:
//!
//! - **Begun lazily.** Creating one costs nothing and takes no connection (nor, on a
//!   single-writer backend, the writer slot); the transaction begins the first time the handler
//!   asks for a repository. A request that only reads never begins one: reads go through
//!   [`Store::read`], which pays for no transaction.
//! - **Committed before the response.** The only way to get a handler's success value out is
//!   [`RequestUnitOfWork::commit`], which returns it wrapped in [`Committed`] once the commit
//!   succeeded. A web layer that accepts only `Committed<T>` as the success of a handler that
//!   took the unit of work cannot send a success for work that was not committed: a failed commit
//!   is an `Err`, and so becomes an error response.
//! - **Rolled back when dropped.** A handler that returns early with an error, or panics, drops
//!   the unit of work, and the transaction rolls back.
//! - **A backstop.** [`RequestUnitOfWork::watch`] hands a web layer a [`WorkWatch`] it keeps
//!   across the handler; after it, [`WorkWatch::abandoned`] tells whether work was begun and then
//!   not committed, so a middleware can refuse to send a success status for it even if some
//!   handler dodged the type discipline above; and [`WorkWatch::commit_unanswered`] whether
//!   the handler was dropped (cut off by a timeout, say) while its commit ran, so that the
//!   answer says the outcome is unknown rather than "nothing was done, retry".
//!
#![cfg_attr(feature = "memory", doc = "```")]
#![cfg_attr(not(feature = "memory"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! use stockroom::request::{Committed, RequestUnitOfWork};
//! use stockroom::{NewCategory, Category};
//!
//! // What a handler looks like: it may fail anywhere (and roll back), and it can only return
//! // its success through `commit`.
//! async fn create_category(mut work: RequestUnitOfWork, name: &str, slug: &str) -> stockroom::Result<Committed<Category>> {
//!     let new = NewCategory::new(name, slug)?;          // a bad input begins no transaction
//!     let category = work.categories().await?.create(new).await?;
//!     work.commit(category).await
//! }
//!
//! let store = stockroom::connect("memory://").await?;
//! let created = create_category(RequestUnitOfWork::new(store.clone()), "Kitchen", "kitchen").await?;
//! assert_eq!(created.into_inner().slug, "kitchen");
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::{
    Category, Entity, Product, Repo, Result, Review, StockMovementRepository, Store, UnitOfWork,
    User,
};

/// The unit of work of one request: begun on first use, committed explicitly, rolled back when
/// dropped. See the [module docs](self).
#[must_use = "a unit of work that is dropped rolls back; finish it with commit"]
pub struct RequestUnitOfWork {
    store: Arc<dyn Store>,
    uow: Option<Box<dyn UnitOfWork>>,
    state: Arc<AtomicU8>,
}

const IDLE: u8 = 0;
const BEGUN: u8 = 1;
const COMMITTED: u8 = 2;
const ABANDONED: u8 = 3;
/// The commit was sent and has not answered (yet, or ever: its future was dropped).
const COMMITTING: u8 = 4;

impl RequestUnitOfWork {
    /// A unit of work on `store` that has not begun (and holds no connection).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            uow: None,
            state: Arc::new(AtomicU8::new(IDLE)),
        }
    }

    /// The store, for reads that need no transaction.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the transaction has begun.
    pub fn is_begun(&self) -> bool {
        self.uow.is_some()
    }

    /// A handle that outlives this unit of work and tells how it ended.
    pub fn watch(&self) -> WorkWatch {
        WorkWatch {
            state: Arc::clone(&self.state),
        }
    }

    /// The transaction, begun now if it has not been yet.
    ///
    /// Errors: those of [`Store::begin`] ([`Error::Unavailable`] when no connection, or on a
    /// single-writer backend the writer slot, came free within `acquire_timeout`).
    ///
    /// [`Error::Unavailable`]: crate::Error::Unavailable
    pub async fn unit_of_work(&mut self) -> Result<&mut dyn UnitOfWork> {
        let uow = match self.uow.take() {
            Some(uow) => uow,
            None => {
                let uow = self.store.begin().await?;
                self.state.store(BEGUN, Ordering::Release);
                uow
            }
        };
        Ok(self.uow.insert(uow).as_mut())
    }

    /// The products repository of the transaction (begun now if need be).
    pub async fn products(&mut self) -> Result<Repo<'_, Product>> {
        self.repository().await
    }

    /// The categories repository of the transaction (begun now if need be).
    pub async fn categories(&mut self) -> Result<Repo<'_, Category>> {
        self.repository().await
    }

    /// The users repository of the transaction (begun now if need be).
    pub async fn users(&mut self) -> Result<Repo<'_, User>> {
        self.repository().await
    }

    /// The reviews repository of the transaction (begun now if need be).
    pub async fn reviews(&mut self) -> Result<Repo<'_, Review>> {
        self.repository().await
    }

    /// The repository of entity `E` in the transaction (begun now if need be): any entity the
    /// store holds, the application's own included.
    pub async fn repository<E: Entity>(&mut self) -> Result<Repo<'_, E>> {
        Ok(self.unit_of_work().await?.repository::<E>())
    }

    /// The stock ledger of the transaction (begun now if need be).
    pub async fn movements(&mut self) -> Result<&mut dyn StockMovementRepository> {
        Ok(self.unit_of_work().await?.movements())
    }

    /// Commits the transaction (if it was begun) and hands `value` back as [`Committed`]: the
    /// proof a response may now claim success. A failed commit is returned as the error, so the
    /// caller answers with an error, never with a success for work that was not kept.
    pub async fn commit<T>(mut self, value: T) -> Result<Committed<T>> {
        if let Some(uow) = self.uow.take() {
            self.state.store(COMMITTING, Ordering::Release);
            if let Err(error) = uow.commit().await {
                self.state.store(ABANDONED, Ordering::Release);
                tracing::debug!(%error, "stockroom: request unit of work failed to commit");
                return Err(error);
            }
            self.state.store(COMMITTED, Ordering::Release);
            tracing::trace!("stockroom: request unit of work committed");
        }
        Ok(Committed(value))
    }

    /// Rolls the transaction back now (dropping the unit of work does the same, without waiting
    /// for the backend's answer).
    pub async fn rollback(mut self) -> Result<()> {
        match self.uow.take() {
            Some(uow) => {
                self.state.store(ABANDONED, Ordering::Release);
                uow.rollback().await
            }
            None => Ok(()),
        }
    }
}

impl Drop for RequestUnitOfWork {
    fn drop(&mut self) {
        if let Some(uow) = self.uow.take() {
            self.state.store(ABANDONED, Ordering::Release);
            tracing::debug!(
                panicking = std::thread::panicking(),
                "stockroom: request unit of work dropped without commit, rolling back"
            );
            drop(uow); // a unit of work dropped without a commit rolls back
        }
    }
}

impl fmt::Debug for RequestUnitOfWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestUnitOfWork")
            .field("backend", &self.store.backend())
            .field("begun", &self.is_begun())
            .finish()
    }
}

/// A value whose unit of work has committed (or had nothing to commit): only
/// [`RequestUnitOfWork::commit`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Committed<T>(T);

impl<T> Committed<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }

    /// The value, borrowed.
    pub fn get(&self) -> &T {
        &self.0
    }

    /// The committed value, transformed (it stays committed: a response built from it may
    /// claim success).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Committed<U> {
        Committed(f(self.0))
    }
}

/// How a [`RequestUnitOfWork`] ended, seen from outside it (see
/// [`RequestUnitOfWork::watch`]).
#[derive(Debug, Clone)]
pub struct WorkWatch {
    state: Arc<AtomicU8>,
}

impl WorkWatch {
    /// Whether the transaction began and then did not commit (rolled back, dropped, or its
    /// commit failed). A response for such a request must not claim success.
    pub fn abandoned(&self) -> bool {
        self.state.load(Ordering::Acquire) == ABANDONED
    }

    /// Whether the transaction began (it may have ended since).
    pub fn began(&self) -> bool {
        self.state.load(Ordering::Acquire) != IDLE
    }

    /// Whether the commit was sent and never answered: the handler was dropped (cut off by a
    /// timeout, its connection closed) while the commit ran. Whether the work was stored is
    /// then unknown, as after [`Error::AmbiguousCommit`](crate::Error::AmbiguousCommit).
    pub fn commit_unanswered(&self) -> bool {
        self.state.load(Ordering::Acquire) == COMMITTING
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::time::Duration;

    use super::*;
    // The dev-dependency on core turns `mocks` on for tests, whatever the facade's features.
    use crate::{Category, Error, NewCategory, StoreConfig};
    use stockroom_core::mocks::{Fault, FaultyStore};

    /// A memory store whose writer slot is given up after 200 ms of waiting, so that "the slot is
    /// taken" shows as a quick `Unavailable`.
    async fn store() -> Arc<dyn Store> {
        crate::connect_with(
            StoreConfig::new("memory://").with_acquire_timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap()
    }

    /// Creates the "kitchen" category through the request's unit of work (beginning it).
    async fn create_kitchen(work: &mut RequestUnitOfWork) -> Category {
        work.categories()
            .await
            .unwrap()
            .create(NewCategory::new("Kitchen", "kitchen").unwrap())
            .await
            .unwrap()
    }

    async fn category_exists(store: &dyn Store, slug: &str) -> bool {
        let mut read = store.read().await.unwrap();
        read.categories().by_slug(slug).await.unwrap().is_some()
    }

    async fn writer_slot_is_free(store: &dyn Store) -> bool {
        match store.begin().await {
            Ok(uow) => {
                uow.rollback().await.unwrap();
                true
            }
            Err(Error::Unavailable { .. }) => false,
            Err(other) => panic!("begin failed: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unused_unit_of_work_begins_nothing() {
        let store = store().await;
        let work = RequestUnitOfWork::new(store.clone());
        let watch = work.watch();
        assert!(!work.is_begun());
        assert!(
            writer_slot_is_free(store.as_ref()).await,
            "an unused request unit of work must not hold the writer slot"
        );
        let committed = work.commit(7).await.unwrap();
        assert_eq!(committed.into_inner(), 7);
        assert!(!watch.began() && !watch.abandoned());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_used_unit_of_work_holds_the_writer_slot_until_it_ends() {
        let store = store().await;
        let mut work = RequestUnitOfWork::new(store.clone());
        work.categories().await.unwrap();
        assert!(work.is_begun());
        assert!(
            !writer_slot_is_free(store.as_ref()).await,
            "the begun unit of work holds the single writer slot"
        );
        let _committed = work.commit(()).await.unwrap();
        assert!(writer_slot_is_free(store.as_ref()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_makes_the_writes_visible() {
        let store = store().await;
        let mut work = RequestUnitOfWork::new(store.clone());
        let watch = work.watch();
        let created = create_kitchen(&mut work).await;
        assert!(
            !category_exists(store.as_ref(), "kitchen").await,
            "not visible before the commit"
        );
        let committed = work.commit(created.clone()).await.unwrap();
        assert_eq!(committed.get(), &created);
        assert!(category_exists(store.as_ref(), "kitchen").await);
        assert!(watch.began() && !watch.abandoned());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_rolls_back() {
        let store = store().await;
        let mut work = RequestUnitOfWork::new(store.clone());
        let watch = work.watch();
        create_kitchen(&mut work).await;
        drop(work);
        assert!(watch.abandoned());
        assert!(!category_exists(store.as_ref(), "kitchen").await);
        assert!(writer_slot_is_free(store.as_ref()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn explicit_rollback_undoes_the_writes() {
        let store = store().await;
        let mut work = RequestUnitOfWork::new(store.clone());
        let watch = work.watch();
        create_kitchen(&mut work).await;
        work.rollback().await.unwrap();
        assert!(watch.abandoned());
        assert!(!category_exists(store.as_ref(), "kitchen").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_rolls_back() {
        let store = store().await;
        let mut work = RequestUnitOfWork::new(store.clone());
        let watch = work.watch();
        let handler = tokio::spawn(async move {
            create_kitchen(&mut work).await;
            panic!("the handler fails after writing");
        });
        assert!(handler.await.unwrap_err().is_panic());
        assert!(watch.abandoned());
        assert!(!category_exists(store.as_ref(), "kitchen").await);
        assert!(writer_slot_is_free(store.as_ref()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_is_an_error_and_writes_nothing() {
        let inner = store().await;
        // Every commit fails (and rolls back) as a lost connection would.
        let faulty = FaultyStore::shared(inner.clone());
        faulty.inject(Fault::Commit, usize::MAX, || {
            Error::unavailable("connection lost during commit")
        });
        let store: Arc<dyn Store> = Arc::new(faulty);
        let mut work = RequestUnitOfWork::new(store);
        let watch = work.watch();
        create_kitchen(&mut work).await;
        let result = work.commit("created").await;
        assert!(
            matches!(result, Err(Error::Unavailable { .. })),
            "{result:?}"
        );
        assert!(watch.abandoned(), "a failed commit is not a success");
        assert!(!category_exists(inner.as_ref(), "kitchen").await);
    }
}

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use stockroom_core::Store;

type Teardown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fresh, empty store for one case, and how to clean up after it (drop a test database, delete
/// a file). The teardown runs whether the case passed or panicked.
pub struct Fixture {
    store: Arc<dyn Store>,
    teardown: Option<Teardown>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("backend", &self.store.backend())
            .field("has_teardown", &self.teardown.is_some())
            .finish()
    }
}

impl Fixture {
    /// A fixture with nothing to clean up.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            teardown: None,
        }
    }

    /// Runs `teardown` after the case, after the store was closed.
    pub fn with_teardown(mut self, teardown: impl Future<Output = ()> + Send + 'static) -> Self {
        self.teardown = Some(Box::pin(teardown));
        self
    }

    /// The store under test.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }
}

/// Runs one case on a fresh fixture: builds it, runs the case, closes the store, tears down, and
/// re-raises the case's panic if it failed.
///
/// The fixture function returns a [`Fixture`], or an `Option<Fixture>` whose `None` says the
/// backend is unavailable here (no database server): the case is then skipped, silently, since
/// the fixture already said why, once, in the way its backend does.
pub async fn run<F, FFut, C, CFut>(fixture: F, case: C)
where
    F: FnOnce() -> FFut,
    FFut: Future,
    FFut::Output: Into<Option<Fixture>>,
    C: FnOnce(Arc<dyn Store>) -> CFut,
    CFut: Future<Output = ()>,
{
    let Some(fixture) = fixture().await.into() else {
        return;
    };
    let outcome = AssertUnwindSafe(case(fixture.store())).catch_unwind().await;
    fixture.store.close().await;
    if let Some(teardown) = fixture.teardown {
        teardown.await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

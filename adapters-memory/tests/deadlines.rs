//! What the retry runner answers when its deadline runs out, on paused time: `Transient` only
//! when nothing can have been applied, `AmbiguousCommit` when a call that can commit was in
//! flight. A store wrapped so that one of its calls hangs stands for a backend that does not
//! answer in time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stockroom_core::{
    transfer_stock, Error, NewCategory, NewProduct, NewStockMovement, Product, ReadSession, Result,
    RetryPolicy, Savepoint, StockMoved, Store, StoreConfig, StoreExt, TransferRequest, UnitOfWork,
};
use stockroom_memory::MemoryStore;
use tokio::time::Instant;

/// The deadline of every operation here.
const DEADLINE: Duration = Duration::from_secs(1);

/// Where a [`Hanging`] store hangs.
#[derive(Clone, Copy, PartialEq)]
enum Hang {
    Begin,
    Commit,
    MoveStock,
}

/// A memory store whose `hang` call sleeps a minute before it runs.
struct Hanging {
    inner: MemoryStore,
    hang: Hang,
}

async fn hang_if(hang: bool) {
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

#[async_trait]
impl Store for Hanging {
    fn backend(&self) -> stockroom_core::Backend {
        self.inner.backend()
    }
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        hang_if(self.hang == Hang::Begin).await;
        let inner = self.inner.begin().await?;
        Ok(Box::new(HangingUnitOfWork {
            inner,
            hang_commit: self.hang == Hang::Commit,
        }))
    }
    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        self.inner.read().await
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    async fn move_stock(&self, movement: &NewStockMovement) -> Result<StockMoved> {
        hang_if(self.hang == Hang::MoveStock).await;
        self.inner.move_stock(movement).await
    }
    async fn claim_events(
        &self,
        options: &stockroom_core::outbox::ClaimOptions,
    ) -> stockroom_core::Result<stockroom_core::outbox::Claimed> {
        self.inner.claim_events(options).await
    }
    async fn outbox_backlog(&self) -> stockroom_core::Result<stockroom_core::outbox::Backlog> {
        self.inner.outbox_backlog().await
    }
    async fn purge_delivered_events(
        &self,
        before: stockroom_core::Timestamp,
    ) -> stockroom_core::Result<u64> {
        self.inner.purge_delivered_events(before).await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

struct HangingUnitOfWork {
    inner: Box<dyn UnitOfWork>,
    hang_commit: bool,
}

#[async_trait]
impl UnitOfWork for HangingUnitOfWork {
    fn backend(&self) -> stockroom_core::Backend {
        self.inner.backend()
    }
    fn repositories(&mut self) -> &mut dyn stockroom_core::Repositories {
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
        hang_if(self.hang_commit).await;
        self.inner.commit().await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.inner.rollback().await
    }
    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        self.inner.as_native()
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy::default().with_deadline(DEADLINE)
}

/// Two products with 10 and 0 in stock.
async fn two_products(store: &MemoryStore) -> (Product, Product) {
    let mut uow = store.begin().await.unwrap();
    let mut made = Vec::new();
    for (tag, stock) in [("a", 10), ("b", 0)] {
        let new = NewProduct::new(tag, tag, &tag.to_uppercase()).unwrap();
        made.push(
            uow.products()
                .create(new.with_stock(stock).unwrap())
                .await
                .unwrap(),
        );
    }
    uow.commit().await.unwrap();
    let b = made.pop().unwrap();
    (made.pop().unwrap(), b)
}

/// A unit of work run by the runner whose commit has not answered when the deadline (and its
/// grace) ran out is `AmbiguousCommit`, not `Transient`: the commit was sent.
#[tokio::test(start_paused = true)]
async fn a_commit_still_running_past_the_deadline_is_an_ambiguous_commit() {
    let store = Hanging {
        inner: MemoryStore::new(),
        hang: Hang::Commit,
    };
    let started = Instant::now();
    let answer = store
        .run(&policy(), |uow| {
            Box::pin(async move {
                let new = NewCategory::new("Cups", "cups")?;
                uow.categories().create(new).await?;
                Ok(())
            })
        })
        .await;
    assert!(
        matches!(answer, Err(Error::AmbiguousCommit { .. })),
        "{answer:?}"
    );
    assert_eq!(started.elapsed(), DEADLINE + RetryPolicy::DEADLINE_GRACE);
}

/// A transfer whose stock move (which commits by itself) has not answered when the deadline
/// and its grace ran out is `AmbiguousCommit`, with or without an idempotency key (with one,
/// sending it again with the same key is safe; the runner has no time left to do it).
#[tokio::test(start_paused = true)]
async fn a_stock_move_still_running_past_the_deadline_is_an_ambiguous_commit() {
    let inner = MemoryStore::new();
    let (a, b) = two_products(&inner).await;
    let store = Hanging {
        inner,
        hang: Hang::MoveStock,
    };
    for request in [
        TransferRequest::new(a.id, b.id, 1),
        TransferRequest::new(a.id, b.id, 1).with_idempotency_key("order-1"),
    ] {
        let started = Instant::now();
        let answer = transfer_stock(&store, &request, &policy()).await;
        assert!(
            matches!(answer, Err(Error::AmbiguousCommit { .. })),
            "{request:?}: {answer:?}"
        );
        assert_eq!(started.elapsed(), DEADLINE + RetryPolicy::DEADLINE_GRACE);
    }
}

/// A unit of work that has not begun when the deadline and its grace ran out is `Transient`:
/// nothing was sent that could commit.
#[tokio::test(start_paused = true)]
async fn a_begin_still_waiting_past_the_deadline_is_transient() {
    let store = Hanging {
        inner: MemoryStore::new(),
        hang: Hang::Begin,
    };
    let answer = store
        .run(&policy(), |_uow| Box::pin(async move { Ok(()) }))
        .await;
    assert!(matches!(answer, Err(Error::Transient { .. })), "{answer:?}");
}

/// The memory store bounds its wait for the writer slot by the deadline: a transfer behind a
/// unit of work that holds the slot answers `Transient` at the deadline itself (its own
/// refusal, not the runner's backstop after the grace), and moves nothing.
#[tokio::test(start_paused = true)]
async fn the_wait_for_the_writer_ends_at_the_deadline() {
    let config = StoreConfig::new("memory://").with_acquire_timeout(Duration::from_secs(30));
    let store = Arc::new(MemoryStore::with_config(config).unwrap());
    let (a, b) = two_products(&store).await;
    let holder = store.begin().await.unwrap();
    let started = Instant::now();
    let answer = transfer_stock(&*store, &TransferRequest::new(a.id, b.id, 1), &policy()).await;
    match &answer {
        Err(Error::Transient { reason, .. }) => assert!(reason.contains("writer slot"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(started.elapsed(), DEADLINE);
    holder.rollback().await.unwrap();
    let mut read = store.read().await.unwrap();
    assert_eq!(read.movements().count().await.unwrap(), 0);
}

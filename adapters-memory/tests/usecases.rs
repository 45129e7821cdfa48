//! The use cases of stockroom-core (the transfer, the retry runner, product details) against the
//! memory store, with failures injected by `FaultyStore`: what they ask of a store, and how they
//! react to each failure.

use std::sync::Arc;
use std::time::Duration;

use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::{
    product_details, transfer_stock, Constraint, Error, Limit, NewCategory, NewProduct, NewReview,
    NewUser, Product, ProductId, RetryPolicy, Store, StoreExt, TransferRequest,
};
use stockroom_memory::MemoryStore;

fn transient() -> Error {
    Error::transient("serialization failure")
}

/// A policy with `attempts` attempts and short delays (the tests run on paused time).
fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_backoff(Duration::from_millis(50), Duration::from_secs(1))
}

/// A memory store behind a `FaultyStore`, with two products holding 10 and 0.
async fn two_products() -> (FaultyStore<MemoryStore>, Product, Product) {
    let store = FaultyStore::new(MemoryStore::new());
    let mut uow = store.begin().await.unwrap();
    let new = |tag: &str, stock| {
        NewProduct::new(
            &format!("Lamp {tag}"),
            &format!("lamp-{tag}"),
            &format!("L-{}", tag.to_uppercase()),
        )
        .unwrap()
        .with_stock(stock)
        .unwrap()
    };
    let a = uow.products().create(new("a", 10)).await.unwrap();
    let b = uow.products().create(new("b", 0)).await.unwrap();
    uow.commit().await.unwrap();
    (store, a, b)
}

async fn stock_and_ledger(store: &dyn Store, a: ProductId, b: ProductId) -> (i64, i64, u64) {
    let mut read = store.read().await.unwrap();
    let stock = |p: Option<Product>| p.expect("live").stock;
    let a = stock(read.products().get(a).await.unwrap());
    let b = stock(read.products().get(b).await.unwrap());
    (a, b, read.movements().count().await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_of_the_move_is_retried_and_the_ledger_written_once() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::MoveStock, 1, transient);
    let begun = store.calls(Fault::Begin);
    let done = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 4), &policy(5))
        .await
        .unwrap();
    assert_eq!((done.movement.source_id, done.movement.quantity), (a.id, 4));
    assert_eq!(
        store.calls(Fault::Begin) - begun,
        2,
        "one unit of work per attempt"
    );
    assert_eq!(stock_and_ledger(&store, a.id, b.id).await, (6, 4, 1));
}

#[tokio::test(start_paused = true)]
async fn a_transient_commit_failure_is_retried() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::Commit, 1, transient);
    let committed = store.calls(Fault::Commit);
    transfer_stock(&store, &TransferRequest::new(a.id, b.id, 3), &policy(5))
        .await
        .unwrap();
    assert_eq!(store.calls(Fault::Commit) - committed, 2);
    assert_eq!(
        stock_and_ledger(&store, a.id, b.id).await,
        (7, 3, 1),
        "the failed commit rolled back; the retry moved the stock once"
    );
}

fn ambiguous() -> Error {
    Error::ambiguous_commit("connection lost during COMMIT")
}

#[tokio::test(start_paused = true)]
async fn a_keyed_transfer_whose_commit_outcome_was_lost_is_resolved_by_its_key() {
    let (store, a, b) = two_products().await;
    // The server committed; the client heard nothing.
    store.inject(Fault::CommitOutcomeLost, 1, ambiguous);
    let request = TransferRequest::new(a.id, b.id, 3).with_idempotency_key("order-1");
    let done = transfer_stock(&store, &request, &policy(5)).await.unwrap();
    assert!(
        done.replayed,
        "the second attempt found the first one's movement"
    );
    assert_eq!(
        stock_and_ledger(&store, a.id, b.id).await,
        (7, 3, 1),
        "moved once, though attempted twice"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_transfer_whose_commit_was_lost_before_the_server_applies_on_retry() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::Commit, 1, ambiguous);
    let request = TransferRequest::new(a.id, b.id, 3).with_idempotency_key("order-2");
    let done = transfer_stock(&store, &request, &policy(5)).await.unwrap();
    assert!(
        !done.replayed,
        "the first attempt rolled back; the second applied"
    );
    assert_eq!(stock_and_ledger(&store, a.id, b.id).await, (7, 3, 1));
}

#[tokio::test(start_paused = true)]
async fn an_ambiguous_commit_without_a_key_is_returned_not_retried() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::CommitOutcomeLost, 1, ambiguous);
    let committed = store.calls(Fault::Commit);
    let result = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 3), &policy(5)).await;
    assert!(
        matches!(result, Err(Error::AmbiguousCommit { .. })),
        "{result:?}"
    );
    assert_eq!(
        store.calls(Fault::Commit) - committed,
        1,
        "no second attempt"
    );
    assert_eq!(
        stock_and_ledger(&store, a.id, b.id).await,
        (7, 3, 1),
        "the one attempt was stored; a retry would have moved the stock twice"
    );
}

#[tokio::test(start_paused = true)]
async fn the_runner_never_reruns_a_unit_of_work_whose_commit_outcome_is_unknown() {
    let (store, _, _) = two_products().await;
    store.inject(Fault::CommitOutcomeLost, 1, ambiguous);
    let mut runs = 0;
    let result = store
        .run(&policy(5), |uow| {
            runs += 1;
            Box::pin(async move {
                uow.categories()
                    .create(NewCategory::new("Mugs", "mugs").unwrap())
                    .await
            })
        })
        .await;
    assert!(
        matches!(result, Err(Error::AmbiguousCommit { .. })),
        "{result:?}"
    );
    assert_eq!(runs, 1, "the work ran once");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_never_begins_a_unit_of_work() {
    let (store, a, b) = two_products().await;
    let begun = store.calls(Fault::Begin);
    let cases = [
        (TransferRequest::new(a.id, b.id, 0), "quantity"),
        (TransferRequest::new(a.id, b.id, -3), "quantity"),
        (TransferRequest::new(a.id, a.id, 1), "target_id"),
        (
            TransferRequest::new(a.id, b.id, 1).with_idempotency_key(""),
            "idempotency_key",
        ),
        (
            TransferRequest::new(a.id, b.id, 1).with_idempotency_key("bad\0key"),
            "idempotency_key",
        ),
    ];
    for (request, expected) in cases {
        match transfer_stock(&store, &request, &policy(5)).await {
            Err(Error::Validation { field, .. }) => assert_eq!(field, expected, "{request:?}"),
            other => panic!("{request:?}: {other:?}"),
        }
    }
    assert_eq!(store.calls(Fault::Begin), begun, "no unit of work began");
}

#[tokio::test(start_paused = true)]
async fn insufficient_stock_is_not_retried_and_moves_nothing() {
    let (store, a, b) = two_products().await;
    let result = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 11), &policy(5)).await;
    match result {
        Err(Error::InsufficientStock {
            product,
            available,
            requested,
        }) => assert_eq!((product, available, requested), (a.id, 10, 11)),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.calls(Fault::MoveStock), 1, "not retried");
    assert_eq!(stock_and_ledger(&store, a.id, b.id).await, (10, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_beyond_max_attempts_are_returned() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::MoveStock, usize::MAX, transient);
    let started = tokio::time::Instant::now();
    let result = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 1), &policy(3)).await;
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    assert_eq!(store.calls(Fault::MoveStock), 3);
    // Two backoff sleeps, each at most its capped delay (virtual time: nothing really waited).
    assert!(started.elapsed() <= Duration::from_millis(50 + 100));
    assert_eq!(stock_and_ledger(&store, a.id, b.id).await, (10, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_retries() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::MoveStock, usize::MAX, transient);
    let policy = RetryPolicy::default()
        .with_max_attempts(1_000)
        .with_backoff(Duration::from_millis(100), Duration::from_millis(100))
        .with_deadline(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let result = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 1), &policy).await;
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        store.calls(Fault::MoveStock) < 1_000,
        "gave up at the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_used_idempotency_key_returns_the_earlier_movement_and_moves_nothing() {
    let (store, a, b) = two_products().await;
    let request = TransferRequest::new(a.id, b.id, 7).with_idempotency_key("order-1");
    let first = transfer_stock(&store, &request, &policy(5)).await.unwrap();
    let again = transfer_stock(&store, &request, &policy(5)).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(again.movement, first.movement);
    assert_eq!(stock_and_ledger(&store, a.id, b.id).await, (3, 7, 1));
}

#[tokio::test(start_paused = true)]
async fn a_key_used_for_another_transfer_is_a_conflict_and_not_retried() {
    let (store, a, b) = two_products().await;
    let request = TransferRequest::new(a.id, b.id, 8).with_idempotency_key("order-2");
    transfer_stock(&store, &request, &policy(5)).await.unwrap();
    let moves = store.calls(Fault::MoveStock);
    let other = TransferRequest::new(a.id, b.id, 7).with_idempotency_key("order-2");
    let result = transfer_stock(&store, &other, &policy(5)).await;
    assert!(
        matches!(
            result,
            Err(Error::Conflict {
                constraint: Constraint::IDEMPOTENCY_KEY
            })
        ),
        "{result:?}"
    );
    assert_eq!(store.calls(Fault::MoveStock), moves + 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn the_runner_reruns_the_whole_unit_of_work_after_a_transient_commit() {
    let (store, a, b) = two_products().await;
    store.inject(Fault::Commit, 2, transient);
    let runs = std::sync::atomic::AtomicU32::new(0);
    let runs = &runs;
    let moved = store
        .run(&policy(5), |uow| {
            Box::pin(async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let new = NewProduct::new("Cup", "cup", "CUP")?;
                let cup = uow.products().create(new).await?;
                stockroom_core::transfer_in(uow, &TransferRequest::new(a.id, cup.id, 2)).await?;
                Ok(cup.id)
            })
        })
        .await
        .unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    let (a_stock, _, ledger) = stock_and_ledger(&store, a.id, b.id).await;
    assert_eq!(
        (a_stock, ledger),
        (8, 1),
        "the failed attempts left nothing"
    );
    let mut read = store.read().await.unwrap();
    assert_eq!(read.products().get(moved).await.unwrap().unwrap().stock, 2);
}

#[tokio::test(start_paused = true)]
async fn product_details_runs_its_three_reads_on_three_sessions() {
    let (store, a, _) = two_products().await;
    let mut uow = store.begin().await.unwrap();
    for i in 0..3 {
        let user = NewUser::new(&format!("u{i}@example.com"), "Reader").unwrap();
        let user = uow.users().create(user).await.unwrap();
        let review = NewReview::new(a.id, user.id, 4).unwrap();
        uow.reviews().create(review).await.unwrap();
    }
    uow.commit().await.unwrap();
    let reads = store.calls(Fault::Read);
    let details = product_details(&store, a.id, Limit::new(2).unwrap())
        .await
        .unwrap()
        .expect("the product is live");
    assert_eq!(
        (
            details.product.id,
            details.reviews.len(),
            details.stats.count
        ),
        (a.id, 2, 3)
    );
    assert_eq!(store.calls(Fault::Read), reads + 3);
}

#[tokio::test(start_paused = true)]
async fn product_details_of_a_missing_product_is_none_and_a_failed_read_fails() {
    let (store, _, _) = two_products().await;
    let missing = product_details(&store, ProductId::new(), Limit::new(5).unwrap()).await;
    assert!(matches!(missing, Ok(None)), "{missing:?}");
    store.inject(Fault::Read, 1, || Error::unavailable("closed"));
    let store: Arc<dyn Store> = Arc::new(store);
    let failed = store
        .product_details(ProductId::new(), Limit::new(5).unwrap())
        .await;
    assert!(
        matches!(failed, Err(Error::Unavailable { .. })),
        "{failed:?}"
    );
}

//! The use cases against the port mocks: what they ask of a store, in which order, and how they
//! react to each failure, without a database.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::entities::{Product, ProductStatus, RatingStats, Review, StockMovement};
use crate::error::{Constraint, Error};
use crate::ids::{ProductId, ReviewId, StockMovementId, UserId};
use crate::mocks::{MockReadSession, MockStore, MockUnitOfWork};
use crate::query::Limit;
use crate::time;
use crate::usecases::{product_details, transfer_stock, RetryPolicy, TransferRequest};

fn product(id: ProductId, stock: i64) -> Product {
    let now = time::now();
    Product {
        id,
        name: "Lamp".into(),
        slug: format!("lamp-{id}"),
        sku: format!("SKU-{id}"),
        description: None,
        status: ProductStatus::Active,
        stock,
        category_id: None,
        created_by: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    }
}

fn movement(source: ProductId, target: ProductId, quantity: i64, key: &str) -> StockMovement {
    StockMovement {
        id: StockMovementId::new(),
        source_id: source,
        target_id: target,
        quantity,
        idempotency_key: Some(key.into()),
        created_at: time::now(),
    }
}

fn transient() -> Error {
    Error::Transient {
        reason: "serialization failure".into(),
    }
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::with_max_attempts(max_attempts)
        .with_backoff(Duration::from_millis(50), Duration::from_secs(1))
}

/// Two fresh product ids.
fn two_ids() -> (ProductId, ProductId) {
    (ProductId::new(), ProductId::new())
}

/// Expects `uow` to lock `source` and `target` once, in id order (the order a transfer locks
/// them in), finding 10 in stock at the source and none at the target.
fn expect_lock_in_id_order(uow: &mut MockUnitOfWork, source: ProductId, target: ProductId) {
    let mut sorted = [source, target];
    sorted.sort();
    uow.products
        .expect_lock()
        .withf(move |ids| ids == sorted)
        .times(1)
        .returning(move |_| Ok(vec![product(source, 10), product(target, 0)]));
}

/// A unit of work that goes all the way: locks both rows (in id order), moves `quantity`,
/// records the ledger row once and commits once (the commit fails transiently with
/// `commit_fails`).
fn successful_uow(
    source: ProductId,
    target: ProductId,
    quantity: i64,
    commit_fails: bool,
) -> MockUnitOfWork {
    let mut uow = MockUnitOfWork::new();
    expect_lock_in_id_order(&mut uow, source, target);
    uow.products
        .expect_adjust_stock()
        .withf(move |id, delta| *id == source && delta.get() == -quantity)
        .times(1)
        .returning(move |id, _| Ok(product(id, 10 - quantity)));
    uow.products
        .expect_adjust_stock()
        .withf(move |id, delta| *id == target && delta.get() == quantity)
        .times(1)
        .returning(move |id, _| Ok(product(id, quantity)));
    uow.movements
        .expect_record()
        .withf(move |m| m.source_id() == source && m.target_id() == target)
        .times(1)
        .returning(move |m| {
            Ok(StockMovement {
                id: StockMovementId::new(),
                source_id: m.source_id(),
                target_id: m.target_id(),
                quantity: m.quantity(),
                idempotency_key: None,
                created_at: time::now(),
            })
        });
    uow.transaction.expect_commit().times(1).returning(move || {
        if commit_fails {
            Err(transient())
        } else {
            Ok(())
        }
    });
    uow.transaction.expect_rollback().never();
    uow
}

/// A unit of work that must never commit and must roll back exactly once.
fn rolled_back_uow() -> MockUnitOfWork {
    let mut uow = MockUnitOfWork::new();
    uow.transaction.expect_commit().never();
    uow.transaction
        .expect_rollback()
        .times(1)
        .returning(|| Ok(()));
    uow
}

/// A store whose one `begin` hands out `uow`.
fn store_beginning_once(uow: MockUnitOfWork) -> MockStore {
    let mut store = MockStore::new();
    store
        .expect_begin()
        .times(1)
        .return_once(move || Ok(Box::new(uow)));
    store
}

/// A unit of work that must commit exactly once (with nothing written) and never roll back.
fn committed_empty_uow() -> MockUnitOfWork {
    let mut uow = MockUnitOfWork::new();
    uow.transaction
        .expect_commit()
        .times(1)
        .returning(|| Ok(()));
    uow.transaction.expect_rollback().never();
    uow.products.expect_adjust_stock().never();
    uow.movements.expect_record().never();
    uow
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_and_the_ledger_written_once() {
    let (a, b) = two_ids();
    let begins = Arc::new(AtomicU32::new(0));
    let mut store = MockStore::new();
    let counter = begins.clone();
    store.expect_begin().times(2).returning(move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            // First attempt: the ledger insert hits a serialization failure.
            let mut uow = rolled_back_uow();
            expect_lock_in_id_order(&mut uow, a, b);
            uow.movements
                .expect_record()
                .times(1)
                .returning(|_| Err(transient()));
            uow.products.expect_adjust_stock().never();
            Ok(Box::new(uow))
        } else {
            Ok(Box::new(successful_uow(a, b, 4, false)))
        }
    });

    let movement = transfer_stock(&store, &TransferRequest::new(a, b, 4), &policy(5))
        .await
        .unwrap()
        .movement;
    assert_eq!(
        (movement.source_id, movement.target_id, movement.quantity),
        (a, b, 4)
    );
    assert_eq!(begins.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transient_commit_failure_is_retried() {
    let (a, b) = two_ids();
    let begins = Arc::new(AtomicU32::new(0));
    let mut store = MockStore::new();
    let counter = begins.clone();
    store.expect_begin().times(2).returning(move || {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        Ok(Box::new(successful_uow(a, b, 3, first)))
    });

    let movement = transfer_stock(&store, &TransferRequest::new(a, b, 3), &policy(5))
        .await
        .unwrap()
        .movement;
    assert_eq!(movement.quantity, 3);
    assert_eq!(begins.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_never_begins_a_transaction() {
    let (a, b) = two_ids();
    let mut store = MockStore::new();
    store.expect_begin().never();
    let cases = [
        (TransferRequest::new(a, b, 0), "quantity"),
        (TransferRequest::new(a, b, -3), "quantity"),
        (TransferRequest::new(a, a, 1), "target_id"),
        (
            TransferRequest::new(a, b, 1).with_idempotency_key(""),
            "idempotency_key",
        ),
        (
            TransferRequest::new(a, b, 1).with_idempotency_key("bad\0key"),
            "idempotency_key",
        ),
    ];
    for (request, expected) in cases {
        match transfer_stock(&store, &request, &policy(5)).await {
            Err(Error::Validation { field, .. }) => assert_eq!(field, expected, "{request:?}"),
            other => panic!("{request:?}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn insufficient_stock_rolls_back_without_moving_anything() {
    let (a, b) = two_ids();
    let mut uow = rolled_back_uow();
    uow.products
        .expect_lock()
        .times(1)
        .returning(move |_| Ok(vec![product(a, 2), product(b, 0)]));
    uow.products.expect_adjust_stock().never();
    uow.movements.expect_record().never();
    let store = store_beginning_once(uow);

    let result = transfer_stock(&store, &TransferRequest::new(a, b, 5), &policy(5)).await;
    match result {
        Err(Error::InsufficientStock {
            product,
            available,
            requested,
        }) => assert_eq!((product, available, requested), (a, 2, 5)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_beyond_max_attempts_are_returned() {
    let (a, b) = two_ids();
    let begins = Arc::new(AtomicU32::new(0));
    let mut store = MockStore::new();
    let counter = begins.clone();
    store.expect_begin().times(3).returning(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut uow = rolled_back_uow();
        uow.products
            .expect_lock()
            .times(1)
            .returning(|_| Err(transient()));
        uow.products.expect_adjust_stock().never();
        Ok(Box::new(uow))
    });

    let started = tokio::time::Instant::now();
    let result = transfer_stock(&store, &TransferRequest::new(a, b, 1), &policy(3)).await;
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    assert_eq!(begins.load(Ordering::SeqCst), 3);
    // Two backoff sleeps, each at most the capped delay (virtual time: nothing really waited).
    assert!(started.elapsed() <= Duration::from_millis(50 + 100));
}

#[tokio::test(start_paused = true)]
async fn a_used_idempotency_key_returns_the_earlier_movement() {
    let (a, b) = two_ids();
    let earlier = movement(a, b, 7, "order-1");
    let returned = earlier.clone();
    let mut uow = committed_empty_uow();
    uow.movements
        .expect_by_idempotency_key()
        .withf(|key| key == "order-1")
        .times(1)
        .return_once(move |_| Ok(Some(returned)));
    uow.products.expect_lock().never();
    let store = store_beginning_once(uow);

    let request = TransferRequest::new(a, b, 7).with_idempotency_key("order-1");
    let movement = transfer_stock(&store, &request, &policy(5))
        .await
        .unwrap()
        .movement;
    assert_eq!(movement, earlier);
}

#[tokio::test(start_paused = true)]
async fn a_key_used_for_another_transfer_is_a_conflict() {
    let (a, b) = two_ids();
    // The key names a movement of 8: a request for 7 under it is refused (its unit of work, which
    // wrote nothing, ends), and not retried.
    let mut uow = committed_empty_uow();
    uow.movements
        .expect_by_idempotency_key()
        .times(1)
        .return_once(move |_| Ok(Some(movement(a, b, 8, "order-2"))));
    uow.products.expect_lock().never();
    let store = store_beginning_once(uow);

    let request = TransferRequest::new(a, b, 7).with_idempotency_key("order-2");
    let result = transfer_stock(&store, &request, &policy(5)).await;
    assert!(
        matches!(
            result,
            Err(Error::Conflict {
                constraint: Constraint::IdempotencyKey
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_taken_by_a_concurrent_transfer_is_retried_and_returns_its_movement() {
    let (a, b) = two_ids();
    let earlier = movement(a, b, 7, "order-3");
    let begins = Arc::new(AtomicU32::new(0));
    let counter = begins.clone();
    let found = earlier.clone();
    let mut store = MockStore::new();
    store.expect_begin().times(2).returning(move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            // First attempt: the key is free at the lookup, then the ledger insert finds it
            // taken by a transfer that committed meanwhile; nothing has moved.
            let mut uow = rolled_back_uow();
            uow.movements
                .expect_by_idempotency_key()
                .times(1)
                .returning(|_| Ok(None));
            expect_lock_in_id_order(&mut uow, a, b);
            uow.movements.expect_record().times(1).returning(|_| {
                Err(Error::Conflict {
                    constraint: Constraint::IdempotencyKey,
                })
            });
            uow.products.expect_adjust_stock().never();
            Ok(Box::new(uow))
        } else {
            let mut uow = committed_empty_uow();
            let found = found.clone();
            uow.movements
                .expect_by_idempotency_key()
                .times(1)
                .return_once(move |_| Ok(Some(found)));
            uow.products.expect_lock().never();
            Ok(Box::new(uow))
        }
    });

    let request = TransferRequest::new(a, b, 7).with_idempotency_key("order-3");
    let movement = transfer_stock(&store, &request, &policy(5))
        .await
        .unwrap()
        .movement;
    assert_eq!(movement, earlier);
    assert_eq!(begins.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn product_details_runs_its_three_reads_on_three_sessions() {
    let id = ProductId::new();
    let review = Review {
        id: ReviewId::new(),
        product_id: id,
        author_id: UserId::new(),
        rating: 4,
        body: None,
        created_at: time::now(),
        updated_at: time::now(),
        deleted_at: None,
        version: 1,
    };
    let stats = RatingStats::from_histogram([0, 0, 0, 1, 0]);
    let sessions = Arc::new(AtomicU32::new(0));
    let counter = sessions.clone();
    let (r, s) = (review.clone(), stats);
    let mut store = MockStore::new();
    store.expect_read().times(3).returning(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        // Each session may serve any one of the three reads.
        let mut session = MockReadSession::new();
        session
            .products
            .expect_get()
            .withf(move |got| *got == id)
            .times(0..=1)
            .returning(move |id| Ok(Some(product(id, 3))));
        let review = r.clone();
        session
            .reviews
            .expect_for_product()
            .withf(move |got, page| *got == id && page.limit().get() == 2 && page.offset() == 0)
            .times(0..=1)
            .returning(move |_, _| Ok(vec![review.clone()]));
        session
            .reviews
            .expect_stats()
            .times(0..=1)
            .returning(move |_| Ok(s));
        Ok(Box::new(session))
    });

    let details = product_details(&store, id, Limit::new(2).unwrap())
        .await
        .unwrap()
        .expect("the product is live");
    assert_eq!(details.product.id, id);
    assert_eq!(details.reviews, vec![review]);
    assert_eq!(details.stats, stats);
    assert_eq!(sessions.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn product_details_of_a_missing_product_is_none_and_a_failed_read_fails() {
    let id = ProductId::new();
    let mut store = MockStore::new();
    store.expect_read().times(3).returning(move || {
        let mut session = MockReadSession::new();
        session.products.expect_get().returning(|_| Ok(None));
        session
            .reviews
            .expect_for_product()
            .returning(|_, _| Ok(vec![]));
        session
            .reviews
            .expect_stats()
            .returning(|_| Ok(RatingStats::default()));
        Ok(Box::new(session))
    });
    let details = product_details(&store, id, Limit::new(5).unwrap()).await;
    assert!(matches!(details, Ok(None)), "{details:?}");

    let mut store = MockStore::new();
    store.expect_read().returning(|| {
        Err(Error::Unavailable {
            reason: "closed".into(),
        })
    });
    let details = product_details(&store, id, Limit::new(5).unwrap()).await;
    assert!(
        matches!(details, Err(Error::Unavailable { .. })),
        "{details:?}"
    );
}

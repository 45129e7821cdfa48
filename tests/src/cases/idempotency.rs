//! Idempotent transfers: a request repeated with the same key applies once.

use std::sync::Arc;

use stockroom_core::{Constraint, RetryPolicy, Store, StoreExt, TransferRequest};

use crate::support::*;

/// The same request with the same key returns the first movement and moves the stock once.
pub async fn same_key_returns_the_same_movement_and_moves_once(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 10)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    let request = TransferRequest::new(a.id, b.id, 3).with_idempotency_key("order-1");
    let first = store.transfer(&request).await.unwrap();
    let second = store.transfer(&request).await.unwrap();
    let third = store.transfer(&request).await.unwrap();
    assert_eq!(
        (second.id, third.id),
        (first.id, first.id),
        "repeated requests' movements"
    );
    assert_eq!(second, first, "repeated movement differs");
    assert_eq!(
        first.idempotency_key.as_deref(),
        Some("order-1"),
        "stored key"
    );
    let stocks = (stock_of(&store, a.id).await, stock_of(&store, b.id).await);
    assert_eq!(
        (stocks, ledger_count(&store).await),
        ((7, 3), 1),
        "(stocks, ledger) after 3 tries"
    );
}

/// The same key with a different quantity, source or target is `Conflict{IdempotencyKey}` and
/// changes nothing.
pub async fn same_key_with_other_parameters_is_a_conflict(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 10)).await;
    let b = create_product(&store, new_product("b", 10)).await;
    let c = create_product(&store, new_product("c", 10)).await;
    store
        .transfer(&TransferRequest::new(a.id, b.id, 3).with_idempotency_key("k-1"))
        .await
        .unwrap();
    let before = (live_products(&store).await, ledger_count(&store).await);
    for other in [
        TransferRequest::new(a.id, b.id, 4),
        TransferRequest::new(b.id, a.id, 3),
        TransferRequest::new(a.id, c.id, 3),
    ] {
        let request = other.with_idempotency_key("k-1");
        expect_conflict(store.transfer(&request).await, Constraint::IDEMPOTENCY_KEY);
    }
    let after = (live_products(&store).await, ledger_count(&store).await);
    assert_eq!(after, before, "state after conflicting requests");
}

/// Different keys are different transfers; the ledger finds each by its key.
pub async fn different_keys_apply_separately(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 10)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    let m1 = store
        .transfer(&TransferRequest::new(a.id, b.id, 2).with_idempotency_key("k-1"))
        .await
        .unwrap();
    let m2 = store
        .transfer(&TransferRequest::new(a.id, b.id, 2).with_idempotency_key("k-2"))
        .await
        .unwrap();
    assert_ne!(m1.id, m2.id, "two keys gave one movement");
    assert_eq!(
        stock_of(&store, b.id).await,
        4,
        "target after two keyed transfers"
    );
    let mut r = store.read().await.unwrap();
    let found = (
        r.movements().by_idempotency_key("k-1").await.unwrap(),
        r.movements().by_idempotency_key("k-2").await.unwrap(),
        r.movements().by_idempotency_key("k-3").await.unwrap(),
    );
    assert_eq!(found, (Some(m1), Some(m2), None), "movements by key");
}

/// A keyed transfer that failed (insufficient stock) records nothing: the same key can be used
/// once the stock is there.
pub async fn failed_keyed_transfer_does_not_use_up_the_key(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 1)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    let request = TransferRequest::new(a.id, b.id, 5).with_idempotency_key("retry-me");
    let refused = store.transfer(&request).await;
    assert!(
        matches!(
            refused,
            Err(stockroom_core::Error::InsufficientStock { .. })
        ),
        "got {refused:?}"
    );
    let delta = stockroom_core::StockDelta::new(4).unwrap();
    in_uow!(store, |uow| uow.products().adjust_stock(a.id, delta).await).unwrap();
    let m = store
        .transfer(&request)
        .await
        .expect("keyed transfer after restock");
    assert_eq!(
        (
            m.quantity,
            ledger_count(&store).await,
            stock_of(&store, b.id).await
        ),
        (5, 1, 5),
        "(quantity, ledger, target)"
    );
}

/// A repeated request says it is one: the first answer is a new transfer, every later answer
/// with the same key is the same movement marked as replayed; a request without a key is never
/// a replay.
pub async fn a_replayed_request_says_so(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 10)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    let policy = RetryPolicy::default();
    let keyed = TransferRequest::new(a.id, b.id, 2).with_idempotency_key("order-9");
    let first = store.transfer_with(&keyed, &policy).await.unwrap();
    let again = store.transfer_with(&keyed, &policy).await.unwrap();
    assert_eq!(
        (first.replayed, again.replayed),
        (false, true),
        "(first, again) replayed"
    );
    assert_eq!(
        again.movement, first.movement,
        "the replay returns the first movement"
    );
    let unkeyed = TransferRequest::new(a.id, b.id, 2);
    for _ in 0..2 {
        let done = store.transfer_with(&unkeyed, &policy).await.unwrap();
        assert!(!done.replayed, "a request without a key replayed");
    }
    assert_eq!(
        stock_of(&store, b.id).await,
        6,
        "2 keyed (once) + 2 x 2 unkeyed"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_idempotency_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) idempotency:
        same_key_returns_the_same_movement_and_moves_once,
        same_key_with_other_parameters_is_a_conflict,
        different_keys_apply_separately,
        failed_keyed_transfer_does_not_use_up_the_key,
        a_replayed_request_says_so,
    } };
}

//! The stock transfer use case: moves stock and writes one ledger row; every bad request is a
//! typed error that changes nothing.

use std::sync::Arc;

use stockroom_core::{
    EntityKind, Error, Product, ProductId, Rule, Store, StoreExt, TransferRequest, UnitOfWorkExt,
    MAX_STOCK,
};

use crate::support::*;

/// Two products with 10 and 3 units.
async fn pair(store: &Arc<dyn Store>) -> (Product, Product) {
    let a = create_product(store, new_product("a", 10)).await;
    let b = create_product(store, new_product("b", 3)).await;
    (a, b)
}

/// The state a refused transfer must leave untouched: both stocks and the ledger size.
async fn state(
    store: &Arc<dyn Store>,
    a: &Product,
    b: &Product,
) -> (Option<Product>, Option<Product>, u64) {
    (
        get_product(store, a.id).await,
        get_product(store, b.id).await,
        ledger_count(store).await,
    )
}

/// A transfer moves the quantity, returns the ledger row, and the ledger holds exactly it.
pub async fn transfer_moves_stock_and_writes_one_ledger_row(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let m = store
        .transfer(&TransferRequest::new(a.id, b.id, 4))
        .await
        .expect("transfer");
    assert_eq!(
        (
            m.source_id,
            m.target_id,
            m.quantity,
            m.idempotency_key.clone()
        ),
        (a.id, b.id, 4, None),
        "movement {m:?}"
    );
    let stocks = (stock_of(&store, a.id).await, stock_of(&store, b.id).await);
    assert_eq!(stocks, (6, 7), "stocks after moving 4 from 10 to 3");
    let mut r = store.read().await.unwrap();
    let stored = r.movements().get(m.id).await.unwrap();
    assert_eq!(stored.as_ref(), Some(&m), "stored movement");
    assert_eq!(r.movements().count().await.unwrap(), 1, "ledger size");
    let of_a = r.movements().for_product(a.id, all()).await.unwrap();
    let of_b = r.movements().for_product(b.id, all()).await.unwrap();
    assert_eq!(
        (of_a, of_b),
        (vec![m.clone()], vec![m]),
        "movements of source and target"
    );
}

/// Transferring the whole stock leaves the source at zero.
pub async fn transfer_of_the_whole_stock_leaves_zero(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    store
        .transfer(&TransferRequest::new(a.id, b.id, 10))
        .await
        .expect("transfer all");
    let stocks = (stock_of(&store, a.id).await, stock_of(&store, b.id).await);
    assert_eq!(stocks, (0, 13), "stocks after moving all 10");
}

/// A zero, negative or oversized quantity is `Validation{quantity}` and changes nothing.
pub async fn bad_quantity_is_a_validation_error_and_changes_nothing(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let before = state(&store, &a, &b).await;
    for q in [0, -1, -10, MAX_STOCK + 1] {
        expect_validation(
            store.transfer(&TransferRequest::new(a.id, b.id, q)).await,
            "quantity",
            Rule::OutOfRange {
                min: 1,
                max: MAX_STOCK,
            },
        );
    }
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "state after refused transfers"
    );
}

/// The same product as source and target is `Validation{target_id, SameAs source_id}` and
/// changes nothing.
pub async fn same_source_and_target_is_rejected_and_changes_nothing(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let before = state(&store, &a, &b).await;
    expect_validation(
        store.transfer(&TransferRequest::new(a.id, a.id, 1)).await,
        "target_id",
        Rule::SameAs { other: "source_id" },
    );
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "state after refused transfer"
    );
}

/// An unknown source or target is `NotFound{Product}` naming it, and changes nothing.
pub async fn unknown_product_is_not_found_and_changes_nothing(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let ghost = ProductId::new();
    let before = state(&store, &a, &b).await;
    expect_not_found(
        store.transfer(&TransferRequest::new(ghost, a.id, 1)).await,
        EntityKind::PRODUCT,
        ghost,
    );
    expect_not_found(
        store.transfer(&TransferRequest::new(a.id, ghost, 1)).await,
        EntityKind::PRODUCT,
        ghost,
    );
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "state after refused transfers"
    );
}

/// A deleted source or target is `NotFound{Product}`, and changes nothing.
pub async fn deleted_product_is_not_found_and_changes_nothing(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let c = create_product(&store, new_product("c", 10)).await;
    assert!(soft_delete_product(&store, c.id).await);
    let trashed = trashed_product(&store, c.id).await;
    let before = state(&store, &a, &b).await;
    expect_not_found(
        store.transfer(&TransferRequest::new(c.id, a.id, 1)).await,
        EntityKind::PRODUCT,
        c.id,
    );
    expect_not_found(
        store.transfer(&TransferRequest::new(a.id, c.id, 1)).await,
        EntityKind::PRODUCT,
        c.id,
    );
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "state after refused transfers"
    );
    assert_eq!(
        trashed_product(&store, c.id).await,
        trashed,
        "deleted product changed"
    );
}

/// Moving more than the source holds is `InsufficientStock{available, requested}` and changes
/// nothing.
pub async fn insufficient_stock_names_the_amounts_and_changes_nothing(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let before = state(&store, &a, &b).await;
    match store.transfer(&TransferRequest::new(b.id, a.id, 4)).await {
        Err(Error::InsufficientStock {
            product,
            available,
            requested,
        }) => {
            assert_eq!(
                (product, available, requested),
                (b.id, 3, 4),
                "insufficient stock error"
            );
        }
        other => panic!("expected InsufficientStock, got {other:?}"),
    }
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "state after refused transfer"
    );
}

/// A malformed idempotency key is `Validation{idempotency_key}` and changes nothing.
pub async fn malformed_idempotency_key_is_rejected_and_changes_nothing(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let before = state(&store, &a, &b).await;
    let long = "k".repeat(129);
    let cases: [(&str, Rule); 4] = [
        ("", Rule::Empty),
        (&long, Rule::TooLong { max: 128 }),
        (
            "has space",
            Rule::Malformed {
                expected: "visible ASCII characters",
            },
        ),
        (
            "clé",
            Rule::Malformed {
                expected: "visible ASCII characters",
            },
        ),
    ];
    for (key, rule) in cases {
        let request = TransferRequest::new(a.id, b.id, 1).with_idempotency_key(key);
        expect_validation(store.transfer(&request).await, "idempotency_key", rule);
    }
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "state after refused transfers"
    );
}

/// Transfers in both directions add up, and each has its own ledger row, in order.
pub async fn successive_transfers_add_up(store: Arc<dyn Store>) {
    let (a, b) = pair(&store).await;
    let m1 = store
        .transfer(&TransferRequest::new(a.id, b.id, 5))
        .await
        .unwrap();
    let m2 = store
        .transfer(&TransferRequest::new(b.id, a.id, 7))
        .await
        .unwrap();
    let m3 = store
        .transfer(&TransferRequest::new(a.id, b.id, 1))
        .await
        .unwrap();
    let stocks = (stock_of(&store, a.id).await, stock_of(&store, b.id).await);
    assert_eq!(stocks, (11, 2), "stocks after 10/3 -5 +7 -1");
    let ledger = in_read!(store, |r| r.movements().for_product(a.id, all()).await).unwrap();
    let got: Vec<_> = ledger.iter().map(|m| m.id).collect();
    let mut expected = vec![
        (m1.created_at, m1.id),
        (m2.created_at, m2.id),
        (m3.created_at, m3.id),
    ];
    expected.sort();
    assert_eq!(
        got,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
        "ledger order"
    );
}

/// A transfer that would take the target past `MAX_STOCK` is a validation error on `stock`
/// (`OutOfRange 0..=MAX_STOCK`), whether it runs in a unit of work of its own or in the
/// caller's, and moves nothing: both stocks and the ledger stay as they were.
pub async fn transfer_past_the_target_maximum_is_refused_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let a = create_product(&store, new_product("a", 10)).await;
    let b = create_product(&store, new_product("b", MAX_STOCK - 1)).await;
    let before = state(&store, &a, &b).await;
    let out_of_range = Rule::OutOfRange {
        min: 0,
        max: MAX_STOCK,
    };
    let request = TransferRequest::new(a.id, b.id, 2);
    expect_validation(
        store.transfer(&request).await,
        "stock",
        out_of_range.clone(),
    );
    expect_validation(
        in_uow!(store, |uow| uow.transfer(&request).await),
        "stock",
        out_of_range,
    );
    assert_eq!(
        state(&store, &a, &b).await,
        before,
        "a refused transfer changed state"
    );
    store
        .transfer(&TransferRequest::new(a.id, b.id, 1))
        .await
        .expect("a transfer up to the maximum");
    assert_eq!(
        stock_of(&store, b.id).await,
        MAX_STOCK,
        "target at the maximum"
    );
}

/// When a transfer breaks several rules, every backend names the same one, in this order: the
/// source not live, then the target not live, then insufficient stock at the source, then the
/// target above `MAX_STOCK`.
pub async fn broken_rules_are_reported_in_a_fixed_order(store: Arc<dyn Store>) {
    let (ghost_a, ghost_b) = (ProductId::new(), ProductId::new());
    let poor = create_product(&store, new_product("poor", 1)).await;
    let full = create_product(&store, new_product("full", MAX_STOCK)).await;
    let before = ledger_count(&store).await;
    let transfer = |source, target, quantity| {
        let store = store.clone();
        async move {
            store
                .transfer(&TransferRequest::new(source, target, quantity))
                .await
        }
    };
    expect_not_found(
        transfer(ghost_a, ghost_b, 5).await,
        EntityKind::PRODUCT,
        ghost_a,
    );
    expect_not_found(
        transfer(poor.id, ghost_b, 5).await,
        EntityKind::PRODUCT,
        ghost_b,
    );
    expect_not_found(
        transfer(ghost_a, poor.id, 5).await,
        EntityKind::PRODUCT,
        ghost_a,
    );
    match transfer(poor.id, full.id, 5).await {
        Err(Error::InsufficientStock { product, .. }) => assert_eq!(product, poor.id),
        other => panic!("expected InsufficientStock before the target's maximum, got {other:?}"),
    }
    assert_eq!(
        ledger_count(&store).await,
        before,
        "a refused transfer wrote a ledger row"
    );
    assert_eq!(
        (
            stock_of(&store, poor.id).await,
            stock_of(&store, full.id).await
        ),
        (1, MAX_STOCK),
        "stocks after refused transfers"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_transfer_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) transfer:
        transfer_moves_stock_and_writes_one_ledger_row,
        transfer_of_the_whole_stock_leaves_zero,
        bad_quantity_is_a_validation_error_and_changes_nothing,
        same_source_and_target_is_rejected_and_changes_nothing,
        unknown_product_is_not_found_and_changes_nothing,
        deleted_product_is_not_found_and_changes_nothing,
        insufficient_stock_names_the_amounts_and_changes_nothing,
        malformed_idempotency_key_is_rejected_and_changes_nothing,
        successive_transfers_add_up,
        transfer_past_the_target_maximum_is_refused_and_changes_nothing,
        broken_rules_are_reported_in_a_fixed_order,
    } };
}

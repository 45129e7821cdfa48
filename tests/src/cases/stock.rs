//! Stock adjustment: one conditional statement that never takes stock below zero; and row locks.

use std::sync::Arc;

use stockroom_core::{EntityKind, Error, ProductId, Rule, StockDelta, Store, MAX_STOCK};

use crate::support::*;

/// `adjust_stock` adds and removes, and returns the row with its new stock.
pub async fn adjust_stock_adds_and_removes(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 10)).await;
    let up = StockDelta::new(5).unwrap();
    let down = StockDelta::new(-12).unwrap();
    let a = in_uow!(store, |uow| uow.products().adjust_stock(p.id, up).await).unwrap();
    let b = in_uow!(store, |uow| uow.products().adjust_stock(p.id, down).await).unwrap();
    assert_eq!((a.stock, b.stock), (15, 3), "stock after +5, -12");
    assert_eq!(stock_of(&store, p.id).await, 3, "stored stock");
}

/// Taking stock to exactly zero is allowed.
pub async fn adjust_stock_to_exactly_zero_is_allowed(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 4)).await;
    let delta = StockDelta::new(-4).unwrap();
    let a = in_uow!(store, |uow| uow.products().adjust_stock(p.id, delta).await).unwrap();
    assert_eq!(a.stock, 0, "stock after -4 from 4");
}

/// Going below zero is `InsufficientStock{available, requested}` and changes nothing.
pub async fn adjust_stock_below_zero_is_insufficient_and_changes_nothing(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 3)).await;
    let delta = StockDelta::new(-4).unwrap();
    match in_uow!(store, |uow| uow.products().adjust_stock(p.id, delta).await) {
        Err(Error::InsufficientStock {
            product,
            available,
            requested,
        }) => {
            assert_eq!(
                (product, available, requested),
                (p.id, 3, 4),
                "insufficient stock error"
            );
        }
        other => panic!("expected InsufficientStock, got {other:?}"),
    }
    assert_eq!(
        get_product(&store, p.id).await,
        Some(p),
        "row changed by a refused adjustment"
    );
}

/// Adjusting an unknown product is `NotFound{Product}`.
pub async fn adjust_stock_of_an_unknown_product_is_not_found(store: Arc<dyn Store>) {
    let ghost = ProductId::new();
    let delta = StockDelta::new(1).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.products().adjust_stock(ghost, delta).await),
        EntityKind::PRODUCT,
        ghost,
    );
}

/// `lock` returns the live products among the ids, sorted by id, skipping deleted and unknown
/// ones.
pub async fn lock_returns_live_rows_sorted_by_id(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 4, 1).await;
    assert!(soft_delete_product(&store, rows[1].id).await);
    let asked = vec![
        rows[3].id,
        rows[1].id,
        ProductId::new(),
        rows[0].id,
        rows[2].id,
    ];
    let locked = in_uow!(store, |uow| uow.products().lock(&asked).await).unwrap();
    let mut expected = vec![rows[0].id, rows[2].id, rows[3].id];
    expected.sort();
    assert_eq!(ids(&locked), expected, "locked rows");
}

/// Stock changes inside a unit of work are visible to it, and roll back with it.
pub async fn adjust_stock_rolls_back_with_the_unit_of_work(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 5)).await;
    let mut uow = store.begin().await.unwrap();
    uow.products()
        .adjust_stock(p.id, StockDelta::new(-5).unwrap())
        .await
        .unwrap();
    let inside = uow.products().get(p.id).await.unwrap().unwrap().stock;
    uow.rollback().await.unwrap();
    assert_eq!(
        (inside, stock_of(&store, p.id).await),
        (0, 5),
        "(inside, after rollback)"
    );
}

/// Stock has an upper bound: an adjustment that would take a product past `MAX_STOCK` is a
/// validation error on `stock` (`OutOfRange 0..=MAX_STOCK`) and changes nothing; reaching
/// `MAX_STOCK` exactly is allowed.
pub async fn adjust_stock_past_the_maximum_is_refused_and_changes_nothing(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("full", MAX_STOCK - 5)).await;
    for delta in [6, MAX_STOCK] {
        let delta = StockDelta::new(delta).unwrap();
        expect_validation(
            in_uow!(store, |uow| uow.products().adjust_stock(p.id, delta).await),
            "stock",
            Rule::OutOfRange {
                min: 0,
                max: MAX_STOCK,
            },
        );
    }
    assert_eq!(
        get_product(&store, p.id).await,
        Some(p.clone()),
        "row changed by a refused adjustment"
    );
    let up = StockDelta::new(5).unwrap();
    let full = in_uow!(store, |uow| uow.products().adjust_stock(p.id, up).await).unwrap();
    assert_eq!(full.stock, MAX_STOCK, "stock after reaching the maximum");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_stock_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) stock:
        adjust_stock_adds_and_removes,
        adjust_stock_to_exactly_zero_is_allowed,
        adjust_stock_below_zero_is_insufficient_and_changes_nothing,
        adjust_stock_of_an_unknown_product_is_not_found,
        lock_returns_live_rows_sorted_by_id,
        adjust_stock_rolls_back_with_the_unit_of_work,
        adjust_stock_past_the_maximum_is_refused_and_changes_nothing,
    } };
}

//! Nested savepoints: rolling back to one undoes only what came after it; a closed savepoint is
//! refused.

use std::sync::Arc;

use stockroom_core::{Error, Rule, Savepoint, StockDelta, Store};

use crate::support::*;

fn expect_closed_savepoint(result: stockroom_core::Result<()>) {
    match result {
        Err(Error::Validation {
            field: "savepoint",
            rule: Rule::Malformed { .. },
        }) => {}
        other => panic!("expected Validation {{ savepoint, Malformed }}, got {other:?}"),
    }
}

/// Rolling back to a savepoint undoes only the writes made after it; the earlier ones commit.
pub async fn rollback_to_a_savepoint_undoes_only_its_part(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    let before = uow
        .products()
        .create(new_product("before", 1))
        .await
        .unwrap();
    let sp = uow.savepoint().await.unwrap();
    assert_eq!(sp.depth(), 1, "outermost savepoint depth");
    let after = uow
        .products()
        .create(new_product("after", 1))
        .await
        .unwrap();
    uow.products()
        .adjust_stock(before.id, StockDelta::new(9).unwrap())
        .await
        .unwrap();
    uow.rollback_to(sp).await.unwrap();
    let inside = uow.products().get(after.id).await.unwrap();
    assert_eq!(
        inside, None,
        "row created after the savepoint still visible: {inside:?}"
    );
    uow.commit().await.unwrap();
    assert_eq!(live_products(&store).await, vec![before], "committed rows");
}

/// Releasing a savepoint keeps its writes in the transaction.
pub async fn released_savepoint_keeps_its_writes(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    let sp = uow.savepoint().await.unwrap();
    let p = uow.products().create(new_product("a", 1)).await.unwrap();
    uow.release(sp).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        get_product(&store, p.id).await,
        Some(p),
        "released write lost"
    );
}

/// Nested savepoints: rolling back the inner one keeps the outer one's writes.
pub async fn inner_rollback_keeps_the_outer_writes(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    let outer = uow.savepoint().await.unwrap();
    let a = uow.products().create(new_product("a", 1)).await.unwrap();
    let inner = uow.savepoint().await.unwrap();
    assert_eq!((outer.depth(), inner.depth()), (1, 2), "savepoint depths");
    uow.products().create(new_product("b", 1)).await.unwrap();
    uow.rollback_to(inner).await.unwrap();
    uow.release(outer).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(live_products(&store).await, vec![a], "committed rows");
}

/// Rolling back to the outer savepoint undoes the inner one's writes too, and closes it.
pub async fn outer_rollback_undoes_the_inner_writes(store: Arc<dyn Store>) {
    let base = create_product(&store, new_product("base", 1)).await;
    let mut uow = store.begin().await.unwrap();
    let outer = uow.savepoint().await.unwrap();
    uow.products().create(new_product("a", 1)).await.unwrap();
    let inner = uow.savepoint().await.unwrap();
    uow.products().create(new_product("b", 1)).await.unwrap();
    uow.release(inner).await.unwrap();
    uow.rollback_to(outer).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        live_products(&store).await,
        vec![base],
        "rows after outer rollback"
    );
}

/// A savepoint closed with its enclosing one is refused (`Validation{savepoint}`), and the unit
/// of work stays usable.
pub async fn closed_savepoint_is_rejected(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    let outer = uow.savepoint().await.unwrap();
    let inner = uow.savepoint().await.unwrap();
    let p = uow.products().create(new_product("a", 1)).await.unwrap();
    uow.release(outer).await.unwrap();
    expect_closed_savepoint(uow.rollback_to(inner).await);
    uow.commit().await.unwrap();
    assert_eq!(
        get_product(&store, p.id).await,
        Some(p),
        "the refused rollback undid a write"
    );
}

/// A savepoint of another unit of work is refused.
pub async fn savepoint_of_another_unit_of_work_is_rejected(store: Arc<dyn Store>) {
    let mut first = store.begin().await.unwrap();
    let foreign: Savepoint = first.savepoint().await.unwrap();
    first.rollback().await.unwrap();
    let mut second = store.begin().await.unwrap();
    let p = second.products().create(new_product("a", 1)).await.unwrap();
    expect_closed_savepoint(second.release(foreign).await);
    second.commit().await.unwrap();
    assert_eq!(
        get_product(&store, p.id).await,
        Some(p),
        "write of the second unit of work"
    );
}

/// Savepoints can be reopened after a rollback: a second savepoint at the same depth works.
pub async fn savepoints_can_be_reused_after_rollback(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    for round in 0..3 {
        let sp = uow.savepoint().await.unwrap();
        assert_eq!(sp.depth(), 1, "round {round}: depth");
        uow.products()
            .create(new_product(&format!("r{round}"), 1))
            .await
            .unwrap();
        if round == 1 {
            uow.release(sp).await.unwrap();
        } else {
            uow.rollback_to(sp).await.unwrap();
        }
    }
    uow.commit().await.unwrap();
    let skus: Vec<_> = live_products(&store)
        .await
        .into_iter()
        .map(|p| p.sku)
        .collect();
    assert_eq!(skus, vec!["SKU-R1"], "only the released round committed");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_savepoints_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) savepoints:
        rollback_to_a_savepoint_undoes_only_its_part,
        released_savepoint_keeps_its_writes,
        inner_rollback_keeps_the_outer_writes,
        outer_rollback_undoes_the_inner_writes,
        closed_savepoint_is_rejected,
        savepoint_of_another_unit_of_work_is_rejected,
        savepoints_can_be_reused_after_rollback,
    } };
}

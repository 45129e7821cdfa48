//! Behaviours of the SQL backends beside an application's own tables (`orders`, referring to
//! `products`). The memory store has no SQL, so these are not conformance cases: each SQL
//! adapter's tests make the table with its own DDL, then call the same function here, so both
//! backends give the same answer.

use stockroom_core::{Constraint, EntityKind, Error, ProductId, Result, Store};

/// A delete for good that a foreign key of the application's `table` refuses (a row of it
/// refers to `product`) is [`Error::Referenced`] naming the product and the table; nothing is
/// deleted, and the same unit of work goes on: its other writes commit.
pub async fn a_delete_another_table_refuses_is_referenced(
    store: &dyn Store,
    product: ProductId,
    table: &str,
) {
    let mut uow = store.begin().await.unwrap();
    let refused = uow.products().hard_delete(product).await;
    match &refused {
        Err(Error::Referenced {
            entity,
            id,
            table: by,
        }) => {
            assert_eq!(*entity, EntityKind::PRODUCT, "{refused:?}");
            assert!(*id == product, "the refused row: {id} vs {product}");
            assert_eq!(by, table, "{refused:?}");
        }
        other => panic!("expected Referenced by {table}, got {other:?}"),
    }
    // The unit of work goes on: the product is still there, and a later write commits.
    let still = uow.products().get(product).await.unwrap();
    assert!(still.is_some(), "the refused delete deleted nothing");
    let patch = stockroom_core::ProductPatch::default()
        .with_description(Some("kept: an order refers to it"))
        .unwrap();
    uow.products().update(product, &patch, None).await.unwrap();
    uow.commit().await.unwrap();
    let mut read = store.read().await.unwrap();
    let kept = read.products().require(product).await.unwrap();
    assert_eq!(kept.version, 2, "the write after the refusal committed");
}

/// Asserts that `result` is [`Error::Conflict`] on the unique key of the application's `table`
/// over `columns` ([`Constraint::of_table`]), as both SQL backends name it.
pub fn assert_conflict_on_table<T: std::fmt::Debug>(
    result: Result<T>,
    table: &str,
    columns: &[&str],
) {
    let expected = Constraint::of_table(table, columns);
    match result {
        Err(Error::Conflict { constraint }) => assert_eq!(
            constraint, expected,
            "the conflict names {constraint:?}, not {expected:?}"
        ),
        other => panic!("expected a conflict on {expected:?}, got {other:?}"),
    }
}

/// A purge of the trash that a foreign key of the application's `table` refuses (a row of it
/// refers to `product`, soft-deleted here) is [`Error::Referenced`] naming the product and the
/// table; nothing is purged, and the same unit of work goes on: its other writes commit.
pub async fn a_purge_another_table_refuses_is_referenced(
    store: &dyn Store,
    product: ProductId,
    table: &str,
) {
    let mut uow = store.begin().await.unwrap();
    assert!(uow.products().soft_delete(product).await.unwrap());
    let after = stockroom_core::time::now() + chrono::Duration::seconds(1);
    let refused = uow.products().purge_deleted_before(after).await;
    match &refused {
        Err(Error::Referenced {
            entity,
            id,
            table: by,
        }) => {
            assert_eq!(*entity, EntityKind::PRODUCT, "{refused:?}");
            assert!(*id == product, "the refused row: {id} vs {product}");
            assert_eq!(by, table, "{refused:?}");
        }
        other => panic!("expected Referenced by {table}, got {other:?}"),
    }
    // Nothing was purged: the product is still in the trash, and it comes back.
    let trash = uow
        .products()
        .list_deleted(stockroom_core::Page::new(100, 0).unwrap())
        .await
        .unwrap();
    assert!(
        trash.iter().any(|p| p.id == product),
        "the refused purge purged nothing"
    );
    assert!(uow.products().restore(product).await.unwrap());
    uow.commit().await.unwrap();
    let mut read = store.read().await.unwrap();
    read.products().require(product).await.unwrap();
}

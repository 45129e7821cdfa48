//! Units of work: a transaction sees its own writes, nobody else does until commit; rollback and
//! drop leave no trace.

use std::sync::Arc;

use stockroom_core::{
    CategoryId, Constraint, EntityKind, Error, NewCategory, NewProduct, ProductFilter,
    ProductPatch, StockDelta, Store,
};

use crate::support::*;

/// A unit of work reads its own uncommitted writes: get, by_sku, count, list.
pub async fn unit_of_work_sees_its_own_writes(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    let p = uow.products().create(new_product("a", 1)).await.unwrap();
    let got = uow.products().get(p.id).await.unwrap();
    let by_sku = uow.products().by_sku("SKU-A").await.unwrap();
    let n = uow
        .products()
        .count(&ProductFilter::default())
        .await
        .unwrap();
    let listed = uow
        .products()
        .list(&ProductFilter::default(), all())
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        (got.as_ref(), by_sku.as_ref(), n),
        (Some(&p), Some(&p), 1),
        "reads inside the unit of work"
    );
    assert_eq!(ids(&listed), vec![p.id], "list inside the unit of work");
}

/// A read session does not see a unit of work's writes until it commits, then does.
pub async fn others_do_not_see_uncommitted_writes(store: Arc<dyn Store>) {
    let existing = create_product(&store, new_product("old", 1)).await;
    let mut uow = store.begin().await.unwrap();
    let p = uow.products().create(new_product("a", 1)).await.unwrap();
    let patch = ProductPatch::new().with_name("Renamed").unwrap();
    uow.products()
        .update(existing.id, &patch, None)
        .await
        .unwrap();
    {
        let mut r = store.read().await.unwrap();
        let new_row = r.products().get(p.id).await.unwrap();
        let old_row = r.products().get(existing.id).await.unwrap();
        let n = r.products().count(&ProductFilter::default()).await.unwrap();
        assert_eq!(new_row, None, "uncommitted row visible: {new_row:?}");
        assert_eq!(
            old_row.as_ref(),
            Some(&existing),
            "uncommitted update visible: {old_row:?}"
        );
        assert_eq!(n, 1, "count sees an uncommitted row");
    }
    uow.commit().await.unwrap();
    let after = get_product(&store, p.id).await;
    assert_eq!(
        after.as_ref(),
        Some(&p),
        "committed row invisible: {after:?}"
    );
    assert_eq!(
        get_product(&store, existing.id).await.unwrap().name,
        "Renamed",
        "committed update"
    );
}

/// Rollback undoes every kind of write: create, update, adjust_stock, soft delete, and a
/// category created alongside.
pub async fn rollback_leaves_no_trace(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 5)).await;
    let b = create_product(&store, new_product("b", 5)).await;
    let before = counts(&store).await;
    let mut uow = store.begin().await.unwrap();
    uow.products().create(new_product("c", 1)).await.unwrap();
    let patch = ProductPatch::new().with_name("Changed").unwrap();
    uow.products().update(a.id, &patch, None).await.unwrap();
    uow.products()
        .adjust_stock(a.id, StockDelta::new(-5).unwrap())
        .await
        .unwrap();
    assert!(uow.products().soft_delete(b.id).await.unwrap());
    uow.categories()
        .create(NewCategory::new("Cat", "cat").unwrap())
        .await
        .unwrap();
    uow.rollback().await.unwrap();
    assert_eq!(counts(&store).await, before, "counts after rollback");
    let rows = live_products(&store).await;
    assert_eq!(rows, vec![a.clone(), b.clone()], "rows after rollback");
    // The sku of the rolled-back product is free.
    create_product(&store, new_product("c", 1)).await;
}

/// A unit of work dropped without commit rolls back, and frees the store for the next one.
pub async fn dropped_unit_of_work_rolls_back(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 5)).await;
    {
        let mut uow = store.begin().await.unwrap();
        uow.products().create(new_product("b", 1)).await.unwrap();
        uow.products()
            .adjust_stock(a.id, StockDelta::new(3).unwrap())
            .await
            .unwrap();
        // dropped here
    }
    let rows = live_products(&store).await;
    assert_eq!(rows, vec![a.clone()], "rows after a dropped unit of work");
    // The next unit of work can take the same sku.
    let b = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        create_product(&store, new_product("b", 1)),
    )
    .await
    .expect("begin after a dropped unit of work hangs");
    assert_eq!(b.sku, "SKU-B");
}

/// Committed units of work are each visible to the next, in order.
pub async fn sequential_units_of_work_build_on_each_other(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 0)).await;
    for _ in 0..5 {
        let mut uow = store.begin().await.unwrap();
        let current = uow.products().require(p.id).await.unwrap();
        let patch = ProductPatch::new()
            .with_name(&format!("v{}", current.version + 1))
            .unwrap();
        uow.products()
            .update(p.id, &patch, Some(current.version))
            .await
            .unwrap();
        uow.commit().await.unwrap();
    }
    let now = get_product(&store, p.id).await.unwrap();
    assert_eq!(
        (now.version, now.name.as_str()),
        (6, "v6"),
        "after 5 committed updates"
    );
}

/// A failed write inside a unit of work leaves earlier writes of it intact when the caller
/// rolls back only what failed through a savepoint, then commits.
pub async fn unit_of_work_survives_a_failed_statement_in_a_savepoint(store: Arc<dyn Store>) {
    create_product(&store, new_product("taken", 1)).await;
    let mut uow = store.begin().await.unwrap();
    let kept = uow.products().create(new_product("kept", 1)).await.unwrap();
    let sp = uow.savepoint().await.unwrap();
    let same_sku = stockroom_core::NewProduct::new("Other", "other", "SKU-TAKEN").unwrap();
    let dup = uow.products().create(same_sku).await;
    expect_conflict(dup, stockroom_core::Constraint::PRODUCT_SKU);
    uow.rollback_to(sp).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        get_product(&store, kept.id).await,
        Some(kept),
        "write before the failed one"
    );
    assert_eq!(counts(&store).await.products, 2, "products after commit");
}

/// A write refused by a rule (a taken SKU or slug, too little stock, an unknown reference, a
/// batch that would give two rows one slug) changes nothing and leaves the unit of work usable:
/// its earlier and later writes commit. (On PostgreSQL a failed statement would abort the whole
/// transaction; the adapter must contain each refusal.)
pub async fn a_failed_rule_leaves_the_unit_of_work_usable(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.unwrap();
    let a = uow.products().create(new_product("a", 10)).await.unwrap();
    let b = uow.products().create(new_product("b", 10)).await.unwrap();
    let taken_slug = NewProduct::new("Product c", a.slug.as_str(), "SKU-C").unwrap();
    expect_conflict(
        uow.products().create(taken_slug).await,
        Constraint::PRODUCT_SLUG,
    );
    let taken_sku = ProductPatch::new().with_sku(b.sku.as_str()).unwrap();
    expect_conflict(
        uow.products().update(a.id, &taken_sku, None).await,
        Constraint::PRODUCT_SKU,
    );
    let too_much = StockDelta::new(-11).unwrap();
    let refused = uow.products().adjust_stock(a.id, too_much).await;
    assert!(
        matches!(refused, Err(Error::InsufficientStock { .. })),
        "adjusting 10 by -11: {refused:?}"
    );
    let ghost = CategoryId::new();
    expect_not_found(
        uow.products()
            .create(new_product("d", 1).with_category_id(ghost))
            .await,
        EntityKind::CATEGORY,
        ghost,
    );
    let one_slug = ProductPatch::new().with_slug("one-slug").unwrap();
    expect_conflict(
        uow.products().update_many(&[a.id, b.id], &one_slug).await,
        Constraint::PRODUCT_SLUG,
    );
    let c = uow.products().create(new_product("e", 1)).await.unwrap();
    uow.commit().await.expect("commit after the refused writes");
    let stored = (
        get_product(&store, a.id).await,
        get_product(&store, b.id).await,
        get_product(&store, c.id).await,
    );
    assert_eq!(
        stored,
        (Some(a), Some(b), Some(c)),
        "rows written around the refusals, as committed"
    );
    assert_eq!(live_products(&store).await.len(), 3, "live products");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_transactions_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) transactions:
        unit_of_work_sees_its_own_writes,
        others_do_not_see_uncommitted_writes,
        rollback_leaves_no_trace,
        dropped_unit_of_work_rolls_back,
        sequential_units_of_work_build_on_each_other,
        unit_of_work_survives_a_failed_statement_in_a_savepoint,
        a_failed_rule_leaves_the_unit_of_work_usable,
    } };
}

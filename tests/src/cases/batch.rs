//! Create many and update many: input order, one shared `created_at`, all or nothing.

use std::sync::Arc;

use stockroom_core::{
    CategoryId, Constraint, EntityKind, NewProduct, ProductId, ProductPatch, ProductStatus, Store,
};

use crate::support::*;

/// `create_many` returns the rows in input order (not id or name order), all with one
/// `created_at`, each readable afterwards.
pub async fn create_many_keeps_input_order_and_one_created_at(store: Arc<dyn Store>) {
    let tags = ["zulu", "alpha", "mike", "bravo", "yankee"];
    let news = tags.iter().map(|t| new_product(t, 1)).collect();
    let rows = in_uow!(store, |uow| uow.products().create_many(news).await).unwrap();
    let skus: Vec<_> = rows.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(
        skus,
        vec![
            "SKU-ZULU",
            "SKU-ALPHA",
            "SKU-MIKE",
            "SKU-BRAVO",
            "SKU-YANKEE"
        ],
        "returned order"
    );
    let shared = rows[0].created_at;
    assert!(
        rows.iter()
            .all(|p| p.created_at == shared && p.updated_at == shared && p.version == 1),
        "rows differ in created_at/updated_at/version: {rows:?}"
    );
    let stored = in_read!(store, |r| r.products().get_many(&ids(&rows)).await).unwrap();
    assert_eq!(sorted(stored), sorted(rows), "stored rows != returned rows");
}

/// A duplicate sku inside the batch fails the whole batch with `Conflict{ProductSku}`: no row
/// of it is written.
pub async fn create_many_with_a_duplicate_inside_writes_nothing(store: Arc<dyn Store>) {
    let before = counts(&store).await;
    let news = vec![
        new_product("a", 1),
        new_product("b", 1),
        NewProduct::new("Dup", "dup", "SKU-A").unwrap(),
    ];
    expect_conflict(
        in_uow!(store, |uow| uow.products().create_many(news).await),
        Constraint::PRODUCT_SKU,
    );
    assert_eq!(counts(&store).await, before, "a failed batch wrote rows");
}

/// A batch that collides with an existing live row writes nothing.
pub async fn create_many_conflicting_with_a_stored_row_writes_nothing(store: Arc<dyn Store>) {
    create_product(&store, new_product("taken", 1)).await;
    let before = counts(&store).await;
    let news = vec![
        new_product("a", 1),
        NewProduct::new("X", "product-taken", "X-1").unwrap(),
        new_product("c", 1),
    ];
    expect_conflict(
        in_uow!(store, |uow| uow.products().create_many(news).await),
        Constraint::PRODUCT_SLUG,
    );
    assert_eq!(counts(&store).await, before, "a failed batch wrote rows");
}

/// A batch with an unknown category is `NotFound{Category}` and writes nothing.
pub async fn create_many_with_an_unknown_reference_writes_nothing(store: Arc<dyn Store>) {
    let ghost = CategoryId::new();
    let before = counts(&store).await;
    let news = vec![
        new_product("a", 1),
        new_product("b", 1).with_category_id(ghost),
    ];
    expect_not_found(
        in_uow!(store, |uow| uow.products().create_many(news).await),
        EntityKind::CATEGORY,
        ghost,
    );
    assert_eq!(counts(&store).await, before, "a failed batch wrote rows");
}

/// `update_many` patches every live row among the ids (unknown and deleted ones skipped),
/// bumps each version once, and returns how many changed.
pub async fn update_many_changes_live_rows_and_counts_them(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 5, 1).await;
    assert!(soft_delete_product(&store, rows[4].id).await);
    let trashed = trashed_product(&store, rows[4].id).await.unwrap();
    let mut asked = ids(&rows);
    asked.push(ProductId::new());
    let patch = ProductPatch::new().with_status(ProductStatus::Archived);
    let n = in_uow!(store, |uow| uow
        .products()
        .update_many(&asked, &patch)
        .await)
    .unwrap();
    assert_eq!(n, 4, "update_many changed {n} rows");
    for p in &rows[..4] {
        let now = get_product(&store, p.id).await.unwrap();
        assert_eq!(
            (now.status, now.version, &now.name),
            (ProductStatus::Archived, 2, &p.name),
            "row {now:?}"
        );
        assert!(
            now.updated_at >= p.updated_at,
            "updated_at went back: {now:?}"
        );
    }
    assert_eq!(
        trashed_product(&store, rows[4].id).await,
        Some(trashed),
        "deleted row changed"
    );
}

/// `update_many` with a sku that would collide is a conflict and changes none of the rows.
pub async fn update_many_is_all_or_nothing(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 3, 1).await;
    let patch = ProductPatch::new().with_sku("SAME-SKU").unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow
            .products()
            .update_many(&ids(&rows), &patch)
            .await),
        Constraint::PRODUCT_SKU,
    );
    let after = in_read!(store, |r| r.products().get_many(&ids(&rows)).await).unwrap();
    assert_eq!(
        sorted(after),
        sorted(rows),
        "rows changed by a failed update_many"
    );
}

/// Empty inputs are empty results, not errors: `create_many` of nothing, `get_many`, `lock` and
/// `update_many` of no ids.
pub async fn empty_batches_are_empty_results(store: Arc<dyn Store>) {
    create_product(&store, new_product("a", 1)).await;
    let before = counts(&store).await;
    let patch = ProductPatch::new().with_status(ProductStatus::Archived);
    let mut uow = store.begin().await.unwrap();
    let created = uow.products().create_many(Vec::new()).await.unwrap();
    let got = uow.products().get_many(&[]).await.unwrap();
    let locked = uow.products().lock(&[]).await.unwrap();
    let changed = uow.products().update_many(&[], &patch).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        (created.len(), got.len(), locked.len(), changed),
        (0, 0, 0, 0),
        "(create_many, get_many, lock, update_many) of nothing"
    );
    assert_eq!(
        counts(&store).await,
        before,
        "empty batches changed the store"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_batch_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) batch:
        create_many_keeps_input_order_and_one_created_at,
        create_many_with_a_duplicate_inside_writes_nothing,
        create_many_conflicting_with_a_stored_row_writes_nothing,
        create_many_with_an_unknown_reference_writes_nothing,
        update_many_changes_live_rows_and_counts_them,
        update_many_is_all_or_nothing,
        empty_batches_are_empty_results,
    } };
}

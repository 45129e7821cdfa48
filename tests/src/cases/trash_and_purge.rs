//! Restore, the trash listing, and purge of rows deleted before a time (with its cascades).

use std::sync::Arc;

use stockroom_core::{time, EntityKind, NewReview, ReviewFilter, Store, StoreExt, TransferRequest};

use crate::support::*;

/// Restore brings a deleted row back: readable again, `deleted_at` cleared, version bumped, and
/// out of the trash.
pub async fn restore_brings_the_row_back(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 4)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let restored = in_uow!(store, |uow| uow.products().restore(p.id).await).unwrap();
    assert!(restored, "restore returned false");
    let back = get_product(&store, p.id)
        .await
        .expect("restored row is live");
    assert_eq!(
        (back.deleted_at, back.version, back.stock),
        (None, 3, 4),
        "restored row {back:?}"
    );
    assert_eq!(
        trashed_product(&store, p.id).await,
        None,
        "restored row still in the trash"
    );
}

/// Restore of a live row returns false and changes nothing; of an unknown id, `NotFound`.
pub async fn restore_of_a_live_row_is_false_and_of_an_unknown_one_not_found(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let live = in_uow!(store, |uow| uow.products().restore(p.id).await).unwrap();
    assert!(!live, "restore of a live row returned true");
    let ghost = stockroom_core::ProductId::new();
    expect_not_found(
        in_uow!(store, |uow| uow.products().restore(ghost).await),
        stockroom_core::EntityKind::PRODUCT,
        ghost,
    );
    let after = get_product(&store, p.id).await;
    assert_eq!(
        after.as_ref(),
        Some(&p),
        "live row changed by restore: {after:?}"
    );
}

/// The trash lists only deleted rows, in `(created_at, id)` order, with offset paging.
pub async fn trash_lists_only_deleted_rows_in_order(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 6, 1).await;
    let order = sorted(rows.clone());
    // Delete out of order: the trash is still in (created_at, id) order.
    for i in [4, 0, 2] {
        assert!(soft_delete_product(&store, order[i].id).await);
    }
    let expected = vec![order[0].id, order[2].id, order[4].id];
    let trash = in_read!(store, |r| r.products().list_deleted(all()).await).unwrap();
    assert_eq!(ids(&trash), expected, "trash");
    assert!(
        trash.iter().all(|p| p.deleted_at.is_some()),
        "trash holds live rows: {trash:?}"
    );
    let page = stockroom_core::Page::new(2, 1).unwrap();
    let second = in_read!(store, |r| r.products().list_deleted(page).await).unwrap();
    assert_eq!(
        ids(&second),
        expected[1..].to_vec(),
        "trash page (limit 2, offset 1)"
    );
}

/// Purge deletes for good only the rows soft-deleted before the given time: rows deleted later
/// and live rows stay.
pub async fn purge_removes_only_rows_deleted_before_the_time(store: Arc<dyn Store>) {
    let old = create_product(&store, new_product("old", 1)).await;
    let recent = create_product(&store, new_product("recent", 1)).await;
    let live = create_product(&store, new_product("live", 1)).await;
    assert!(soft_delete_product(&store, old.id).await);
    tick().await;
    let cut = time::now();
    tick().await;
    assert!(soft_delete_product(&store, recent.id).await);
    let purged = in_uow!(store, |uow| uow.products().purge_deleted_before(cut).await).unwrap();
    assert_eq!(purged, 1, "purged {purged} rows, expected 1");
    let trash = in_read!(store, |r| r.products().list_deleted(all()).await).unwrap();
    assert_eq!(ids(&trash), vec![recent.id], "trash after purge");
    assert!(
        get_product(&store, live.id).await.is_some(),
        "live row purged"
    );
    expect_not_found(
        in_uow!(store, |uow| uow.products().restore(old.id).await),
        stockroom_core::EntityKind::PRODUCT,
        old.id,
    );
}

/// Purging a product deletes its reviews with it (ON DELETE CASCADE).
pub async fn purge_of_a_product_cascades_to_its_reviews(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let other = create_product(&store, new_product("b", 1)).await;
    let u = create_user(&store, "ann").await;
    let r1 = NewReview::new(p.id, u.id, 3).unwrap();
    let r2 = NewReview::new(other.id, u.id, 4).unwrap();
    let gone = in_uow!(store, |uow| uow.reviews().create(r1).await).unwrap();
    let kept = in_uow!(store, |uow| uow.reviews().create(r2).await).unwrap();
    assert!(soft_delete_product(&store, p.id).await);
    tick().await;
    let n = in_uow!(store, |uow| uow
        .products()
        .purge_deleted_before(time::now())
        .await)
    .unwrap();
    assert_eq!(n, 1, "purged {n}");
    let mut r = store.read().await.unwrap();
    let got = (
        r.reviews().get(gone.id).await.unwrap().map(|r| r.id),
        r.reviews().get(kept.id).await.unwrap().map(|r| r.id),
        r.reviews().count(&ReviewFilter::default()).await.unwrap(),
    );
    assert_eq!(
        got,
        (None, Some(kept.id), 1),
        "(review of purged product, other review, count)"
    );
}

/// Purging a category leaves its products without a category (ON DELETE SET NULL).
pub async fn purge_of_a_category_clears_it_from_products(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    let p = create_product(&store, new_product("a", 1).with_category_id(cat.id)).await;
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(cat.id).await).unwrap());
    tick().await;
    let n = in_uow!(store, |uow| uow
        .categories()
        .purge_deleted_before(time::now())
        .await)
    .unwrap();
    assert_eq!(n, 1, "purged {n} categories");
    let after = get_product(&store, p.id)
        .await
        .expect("product survives its category");
    assert_eq!(
        after.category_id, None,
        "category_id after purge: {after:?}"
    );
}

/// Hard-deleting a user deletes their reviews and clears them as creator of products.
pub async fn hard_delete_of_a_user_cascades_and_clears(store: Arc<dyn Store>) {
    let u = create_user(&store, "ann").await;
    let p = create_product(&store, new_product("a", 1).with_created_by(u.id)).await;
    let review = NewReview::new(p.id, u.id, 5).unwrap();
    let review = in_uow!(store, |uow| uow.reviews().create(review).await).unwrap();
    in_uow!(store, |uow| uow.users().hard_delete(u.id).await).expect("hard delete");
    let after = get_product(&store, p.id)
        .await
        .expect("product survives its creator");
    let rev = in_read!(store, |r| r.reviews().get(review.id).await).unwrap();
    assert_eq!(
        (after.created_by, rev),
        (None, None),
        "(created_by, review) after hard delete"
    );
}

/// The ledger survives a purge: movements keep their product ids after the products are gone.
pub async fn ledger_survives_the_purge_of_its_products(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 5)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    let m = store
        .transfer(&TransferRequest::new(a.id, b.id, 2))
        .await
        .unwrap();
    assert!(soft_delete_product(&store, a.id).await);
    tick().await;
    let n = in_uow!(store, |uow| uow
        .products()
        .purge_deleted_before(time::now())
        .await)
    .unwrap();
    assert_eq!(n, 1, "purged {n}");
    let kept = in_read!(store, |r| r.movements().get(m.id).await).unwrap();
    assert_eq!(kept.as_ref(), Some(&m), "ledger row after purge: {kept:?}");
    expect_not_found(
        store.transfer(&TransferRequest::new(a.id, b.id, 1)).await,
        EntityKind::PRODUCT,
        a.id,
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_trash_and_purge_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) trash_and_purge:
        restore_brings_the_row_back,
        restore_of_a_live_row_is_false_and_of_an_unknown_one_not_found,
        trash_lists_only_deleted_rows_in_order,
        purge_removes_only_rows_deleted_before_the_time,
        purge_of_a_product_cascades_to_its_reviews,
        purge_of_a_category_clears_it_from_products,
        hard_delete_of_a_user_cascades_and_clears,
        ledger_survives_the_purge_of_its_products,
    } };
}

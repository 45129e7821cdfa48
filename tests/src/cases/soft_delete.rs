//! Soft delete: a deleted row is invisible to every read and untouchable by every write; a second
//! delete is a no-op that keeps the first timestamp.

use std::sync::Arc;

use stockroom_core::{
    CategoryFilter, EntityKind, Limit, NewReview, ProductFilter, ProductPatch, ProductStatus,
    ReviewFilter, StockDelta, Store, UserFilter,
};

use crate::support::*;

/// Soft delete sets `deleted_at`, bumps the version and `updated_at`, and the row moves to the
/// trash.
pub async fn soft_delete_marks_the_row_and_bumps_the_version(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    tick().await;
    assert!(
        soft_delete_product(&store, p.id).await,
        "first soft delete returned false"
    );
    let t = trashed_product(&store, p.id)
        .await
        .expect("deleted row is in the trash");
    let deleted_at = t.deleted_at.expect("deleted_at set");
    assert_eq!(
        (t.version, t.updated_at),
        (2, deleted_at),
        "trashed row {t:?}"
    );
    assert!(
        deleted_at > p.created_at,
        "deleted_at {deleted_at:?} <= created_at {:?}",
        p.created_at
    );
}

/// Soft-deleting a deleted row returns false and keeps the first `deleted_at` (and version).
pub async fn second_soft_delete_returns_false_and_keeps_the_first_timestamp(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let first = trashed_product(&store, p.id).await.expect("in trash");
    tick().await;
    let again = soft_delete_product(&store, p.id).await;
    assert!(!again, "second soft delete returned {again}");
    let second = trashed_product(&store, p.id).await.expect("still in trash");
    assert_eq!(
        second, first,
        "second delete changed the row: {second:?} vs {first:?}"
    );
}

/// A deleted product is invisible to `get`, `require` and `get_many`.
pub async fn deleted_row_is_invisible_to_get_and_get_many(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 3, 1).await;
    assert!(soft_delete_product(&store, rows[1].id).await);
    let mut r = store.read().await.unwrap();
    let got = r.products().get(rows[1].id).await.unwrap();
    assert_eq!(got, None, "get of deleted row gave {got:?}");
    expect_not_found(
        r.products().require(rows[1].id).await,
        EntityKind::PRODUCT,
        rows[1].id,
    );
    let many = r.products().get_many(&ids(&rows)).await.unwrap();
    assert_eq!(ids(&many), vec![rows[0].id, rows[2].id], "get_many");
}

/// A deleted product is invisible to `list` and `list_after`.
pub async fn deleted_row_is_invisible_to_list_and_list_after(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 4, 1).await;
    assert!(soft_delete_product(&store, rows[2].id).await);
    let expected: Vec<_> = sorted(rows.clone())
        .into_iter()
        .filter(|p| p.id != rows[2].id)
        .collect();
    let listed = live_products(&store).await;
    assert_eq!(ids(&listed), ids(&expected), "list");
    let page = in_read!(store, |r| r
        .products()
        .list_after(&ProductFilter::default(), None, Limit::new(10).unwrap())
        .await)
    .unwrap();
    assert_eq!(ids(&page.items), ids(&expected), "list_after");
}

/// A deleted product is not counted and does not make `exists` true.
pub async fn deleted_row_is_invisible_to_count_and_exists(store: Arc<dyn Store>) {
    let p = create_product(
        &store,
        new_product("a", 1).with_status(ProductStatus::Archived),
    )
    .await;
    create_product(&store, new_product("b", 1)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let archived = ProductFilter::default().with_status(ProductStatus::Archived);
    let mut r = store.read().await.unwrap();
    let got = (
        r.products().count(&ProductFilter::default()).await.unwrap(),
        r.products().count(&archived).await.unwrap(),
        r.products().exists(&archived).await.unwrap(),
    );
    assert_eq!(
        got,
        (1, 0, false),
        "(count all, count archived, exists archived)"
    );
}

/// A deleted product is not found by search, and not counted in its total.
pub async fn deleted_row_is_invisible_to_search(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("mug1", 1)).await;
    create_product(&store, new_product("mug2", 1)).await;
    assert!(soft_delete_product(&store, a.id).await);
    let filter = ProductFilter::default().with_search("mug").unwrap();
    let page = in_read!(store, |r| r.products().search(&filter, all()).await).unwrap();
    let names: Vec<_> = page.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        (names, exact(page.total)),
        (vec!["Product mug2"], 1),
        "search after delete"
    );
}

/// A deleted product is not found by slug or by sku.
pub async fn deleted_row_is_invisible_to_by_slug_and_by_sku(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let mut r = store.read().await.unwrap();
    let by_slug = r.products().by_slug("product-a").await.unwrap();
    let by_sku = r.products().by_sku("SKU-A").await.unwrap();
    assert_eq!(
        (by_slug.clone(), by_sku.clone()),
        (None, None),
        "by_slug {by_slug:?}, by_sku {by_sku:?}"
    );
}

/// A deleted product does not show in its category's listing.
pub async fn deleted_row_is_invisible_to_the_category_listing(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    let a = create_product(&store, new_product("a", 1).with_category_id(cat.id)).await;
    let b = create_product(&store, new_product("b", 1).with_category_id(cat.id)).await;
    assert!(soft_delete_product(&store, a.id).await);
    let filter = ProductFilter::default().with_category_id(cat.id);
    let listed = in_read!(store, |r| r.products().list(&filter, all()).await).unwrap();
    assert_eq!(ids(&listed), vec![b.id], "category listing");
}

/// `with_relations` of a deleted product is `None`.
pub async fn deleted_row_is_invisible_to_with_relations(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let got = in_read!(store, |r| r.products().with_relations(p.id).await).unwrap();
    assert_eq!(got, None, "with_relations of deleted product: {got:?}");
}

/// The reviews of a deleted product are hidden: `for_product` is empty and `stats` are zero.
pub async fn reviews_of_a_deleted_product_are_hidden(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let u = create_user(&store, "ann").await;
    let review = NewReview::new(p.id, u.id, 5).unwrap();
    in_uow!(store, |uow| uow.reviews().create(review).await).unwrap();
    assert!(soft_delete_product(&store, p.id).await);
    let mut r = store.read().await.unwrap();
    let listed = r.reviews().for_product(p.id, all()).await.unwrap();
    let stats = r.reviews().stats(p.id).await.unwrap();
    assert_eq!(listed, vec![], "reviews of deleted product: {listed:?}");
    assert_eq!(
        stats,
        stockroom_core::RatingStats::default(),
        "stats of deleted product: {stats:?}"
    );
}

/// A deleted product cannot be updated (`NotFound`), is skipped by `update_many`, and its stock
/// cannot be adjusted (`NotFound`); the trashed row is unchanged.
pub async fn deleted_row_cannot_be_written(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 5)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let trashed = trashed_product(&store, p.id).await.unwrap();
    let patch = ProductPatch::new().with_name("Changed").unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.products().update(p.id, &patch, None).await),
        EntityKind::PRODUCT,
        p.id,
    );
    let n = in_uow!(store, |uow| uow
        .products()
        .update_many(&[p.id], &patch)
        .await)
    .unwrap();
    assert_eq!(n, 0, "update_many changed {n} deleted rows");
    let delta = StockDelta::new(3).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.products().adjust_stock(p.id, delta).await),
        EntityKind::PRODUCT,
        p.id,
    );
    let after = trashed_product(&store, p.id).await;
    assert_eq!(
        after.as_ref(),
        Some(&trashed),
        "trashed row changed: {after:?}"
    );
}

/// Deleted categories and users are invisible to get, by_slug / by_email, count.
pub async fn deleted_category_and_user_are_invisible(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    let user = create_user(&store, "ann").await;
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(cat.id).await).unwrap());
    assert!(in_uow!(store, |uow| uow.users().soft_delete(user.id).await).unwrap());
    let mut r = store.read().await.unwrap();
    let got = (
        r.categories().get(cat.id).await.unwrap(),
        r.categories().by_slug("mugs").await.unwrap(),
        r.users().get(user.id).await.unwrap(),
        r.users().by_email("ann@example.com").await.unwrap(),
    );
    assert_eq!(
        got,
        (None, None, None, None),
        "reads of deleted category / user"
    );
    let n = (
        r.categories()
            .count(&CategoryFilter::default())
            .await
            .unwrap(),
        r.users().count(&UserFilter::default()).await.unwrap(),
    );
    assert_eq!(n, (0, 0), "counts of categories / users");
}

/// A deleted review is hidden from its product's reviews and statistics.
pub async fn deleted_review_is_hidden(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let ann = create_user(&store, "ann").await;
    let bob = create_user(&store, "bob").await;
    let r1 = NewReview::new(p.id, ann.id, 1).unwrap();
    let r2 = NewReview::new(p.id, bob.id, 5).unwrap();
    let low = in_uow!(store, |uow| uow.reviews().create(r1).await).unwrap();
    let high = in_uow!(store, |uow| uow.reviews().create(r2).await).unwrap();
    assert!(in_uow!(store, |uow| uow.reviews().soft_delete(low.id).await).unwrap());
    let mut r = store.read().await.unwrap();
    let listed = r.reviews().for_product(p.id, all()).await.unwrap();
    let stats = r.reviews().stats(p.id).await.unwrap();
    let count = r
        .reviews()
        .count(&ReviewFilter::default().with_product_id(p.id))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![high.id],
        "reviews"
    );
    assert_eq!(
        (stats.count, stats.average, count),
        (1, Some(5.0), 1),
        "stats {stats:?}"
    );
}

/// A filter on a soft-deleted category matches nothing, as one on an absent category would:
/// listing, counting, `exists`, keyset pages and search all come back empty, while the products
/// themselves stay live and listed without the filter; restoring the category brings the matches
/// back.
pub async fn a_deleted_category_filters_like_an_absent_one(store: Arc<dyn Store>) {
    let category = create_category(&store, "kitchen").await;
    for tag in ["pot", "pan"] {
        create_product(&store, new_product(tag, 1).with_category_id(category.id)).await;
    }
    let by_category = ProductFilter::default().with_category_id(category.id);
    let searched = by_category.clone().with_search("product").unwrap();
    let seen = |store: Arc<dyn Store>| {
        let (by_category, searched) = (by_category.clone(), searched.clone());
        async move {
            let mut r = store.read().await.unwrap();
            let mut products = r.products();
            let listed = products.list(&by_category, all()).await.unwrap().len();
            let counted = products.count(&by_category).await.unwrap();
            let exists = products.exists(&by_category).await.unwrap();
            let keyset = products
                .list_after(&by_category, None, Limit::new(10).unwrap())
                .await
                .unwrap()
                .items
                .len();
            let found = exact(products.search(&searched, all()).await.unwrap().total);
            (listed, counted, exists, keyset, found)
        }
    };
    assert_eq!(
        seen(store.clone()).await,
        (2, 2, true, 2, 2),
        "live category"
    );
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(category.id).await).unwrap());
    assert_eq!(
        seen(store.clone()).await,
        (0, 0, false, 0, 0),
        "(list, count, exists, keyset, search) filtered by a deleted category"
    );
    assert_eq!(
        live_products(&store).await.len(),
        2,
        "the products stay live"
    );
    assert!(in_uow!(store, |uow| uow.categories().restore(category.id).await).unwrap());
    assert_eq!(seen(store).await, (2, 2, true, 2, 2), "restored category");
}

/// A review filter on a soft-deleted product or author matches nothing either (list, count,
/// exists), as one on an absent row would; restoring them brings the matches back.
pub async fn a_review_filter_on_a_deleted_product_or_author_matches_nothing(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let u = create_user(&store, "ann").await;
    let review = NewReview::new(p.id, u.id, 4).unwrap();
    in_uow!(store, |uow| uow.reviews().create(review).await).unwrap();
    let filters = [
        ReviewFilter::default().with_product_id(p.id),
        ReviewFilter::default().with_author_id(u.id),
    ];
    let seen = |store: Arc<dyn Store>, filter: ReviewFilter| async move {
        let mut r = store.read().await.unwrap();
        let mut reviews = r.reviews();
        (
            reviews.list(&filter, all()).await.unwrap().len(),
            reviews.count(&filter).await.unwrap(),
            reviews.exists(&filter).await.unwrap(),
        )
    };
    for filter in &filters {
        assert_eq!(
            seen(store.clone(), filter.clone()).await,
            (1, 1, true),
            "{filter:?}"
        );
    }
    assert!(soft_delete_product(&store, p.id).await);
    assert!(in_uow!(store, |uow| uow.users().soft_delete(u.id).await).unwrap());
    for filter in &filters {
        assert_eq!(
            seen(store.clone(), filter.clone()).await,
            (0, 0, false),
            "(list, count, exists) of {filter:?} once its row is deleted"
        );
    }
    assert!(in_uow!(store, |uow| uow.products().restore(p.id).await).unwrap());
    assert!(in_uow!(store, |uow| uow.users().restore(u.id).await).unwrap());
    for filter in &filters {
        assert_eq!(
            seen(store.clone(), filter.clone()).await,
            (1, 1, true),
            "restored: {filter:?}"
        );
    }
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_soft_delete_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) soft_delete:
        soft_delete_marks_the_row_and_bumps_the_version,
        second_soft_delete_returns_false_and_keeps_the_first_timestamp,
        deleted_row_is_invisible_to_get_and_get_many,
        deleted_row_is_invisible_to_list_and_list_after,
        deleted_row_is_invisible_to_count_and_exists,
        deleted_row_is_invisible_to_search,
        deleted_row_is_invisible_to_by_slug_and_by_sku,
        deleted_row_is_invisible_to_the_category_listing,
        deleted_row_is_invisible_to_with_relations,
        reviews_of_a_deleted_product_are_hidden,
        deleted_row_cannot_be_written,
        deleted_category_and_user_are_invisible,
        deleted_review_is_hidden,
        a_deleted_category_filters_like_an_absent_one,
        a_review_filter_on_a_deleted_product_or_author_matches_nothing,
    } };
}

//! Create, get, update and hard delete of single rows, for every entity.

use std::sync::Arc;

use stockroom_core::{
    EntityKind, NewCategory, NewProduct, NewReview, NewUser, ProductFilter, ProductId,
    ProductPatch, ProductStatus, Store, UserId,
};

use crate::support::*;

/// A created product reads back identical, field for field, timestamps included (microsecond
/// precision on every backend).
pub async fn create_then_get_returns_the_same_row(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.expect("begin");
    let created = uow
        .products()
        .create(
            NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE")
                .unwrap()
                .with_stock(3)
                .unwrap(),
        )
        .await
        .expect("create");
    uow.commit().await.expect("commit");
    let mut read = store.read().await.expect("read");
    let fetched = read.products().get(created.id).await.expect("get");
    assert_eq!(
        fetched.as_ref(),
        Some(&created),
        "fetched {fetched:?} != created {created:?}"
    );
}

/// A new row starts at version 1, live, with `updated_at == created_at`, every field as given,
/// and timestamps with no sub-microsecond digits.
pub async fn created_row_starts_at_version_one(store: Arc<dyn Store>) {
    let new = new_product("a", 7)
        .with_description("A plain mug")
        .unwrap()
        .with_status(ProductStatus::Active);
    let p = create_product(&store, new).await;
    assert_eq!(
        (p.version, p.deleted_at, p.updated_at),
        (1, None, p.created_at),
        "fresh row {p:?}"
    );
    assert_eq!(
        (
            p.name.as_str(),
            p.slug.as_str(),
            p.sku.as_str(),
            p.description.as_deref(),
            p.status,
            p.stock
        ),
        (
            "Product a",
            "product-a",
            "SKU-A",
            Some("A plain mug"),
            ProductStatus::Active,
            7
        ),
        "fields of {p:?}"
    );
    let nanos = p.created_at.timestamp_subsec_nanos();
    assert_eq!(
        nanos % 1_000,
        0,
        "created_at {:?} has sub-microsecond digits",
        p.created_at
    );
}

/// An update changes the patched fields only, bumps the version and `updated_at`, and the
/// returned row is what a later read sees.
pub async fn update_applies_the_patch_and_bumps_the_version(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 2).with_description("old").unwrap()).await;
    tick().await;
    let patch = ProductPatch::new()
        .with_name("Red mug")
        .unwrap()
        .with_description(None)
        .unwrap();
    let updated =
        in_uow!(store, |uow| uow.products().update(p.id, &patch, None).await).expect("update");
    assert_eq!(
        (
            updated.name.as_str(),
            updated.description.as_deref(),
            updated.version
        ),
        ("Red mug", None, 2),
        "updated {updated:?}"
    );
    assert_eq!(
        (
            &updated.slug,
            &updated.sku,
            updated.stock,
            updated.created_at
        ),
        (&p.slug, &p.sku, p.stock, p.created_at),
        "untouched fields changed: {updated:?} vs {p:?}"
    );
    assert!(
        updated.updated_at > p.updated_at,
        "updated_at {:?} !> {:?}",
        updated.updated_at,
        p.updated_at
    );
    let fetched = get_product(&store, p.id).await;
    assert_eq!(
        fetched.as_ref(),
        Some(&updated),
        "read back {fetched:?} != returned {updated:?}"
    );
}

/// An unknown id reads as absent (`get` is `None`, `require` is `NotFound`), and every write on
/// it by id is `NotFound` naming the typed id: update, soft delete, restore, hard delete, stock
/// adjustment; nothing is written.
pub async fn unknown_id_is_absent_everywhere(store: Arc<dyn Store>) {
    let id = ProductId::new();
    let mut r = store.read().await.unwrap();
    let got = r.products().get(id).await.expect("get");
    assert_eq!(got, None, "get of unknown id gave {got:?}");
    expect_not_found(r.products().require(id).await, EntityKind::PRODUCT, id);
    drop(r);
    let patch = ProductPatch::new().with_name("x").unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.products().update(id, &patch, None).await),
        EntityKind::PRODUCT,
        id,
    );
    expect_not_found(
        in_uow!(store, |uow| uow.products().soft_delete(id).await),
        EntityKind::PRODUCT,
        id,
    );
    expect_not_found(
        in_uow!(store, |uow| uow.products().restore(id).await),
        EntityKind::PRODUCT,
        id,
    );
    expect_not_found(
        in_uow!(store, |uow| uow.products().hard_delete(id).await),
        EntityKind::PRODUCT,
        id,
    );
    let delta = stockroom_core::StockDelta::new(1).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.products().adjust_stock(id, delta).await),
        EntityKind::PRODUCT,
        id,
    );
    let category = stockroom_core::CategoryId::new();
    expect_not_found(
        in_uow!(store, |uow| uow.categories().soft_delete(category).await),
        EntityKind::CATEGORY,
        category,
    );
    assert_eq!(counts(&store).await, Counts::default(), "nothing written");
}

/// `get_many` returns each live row once, in `(created_at, id)` order, whatever the order and
/// repetitions of the ids asked for; unknown ids are left out.
pub async fn get_many_returns_each_live_row_once_in_order(store: Arc<dyn Store>) {
    let first = create_product(&store, new_product("a", 0)).await;
    tick().await;
    let batch = create_products(&store, "b", 3, 0).await;
    let mut asked: Vec<ProductId> = batch.iter().rev().map(|p| p.id).collect();
    asked.push(first.id);
    asked.push(batch[0].id);
    asked.push(ProductId::new());
    let got = in_read!(store, |r| r.products().get_many(&asked).await).unwrap();
    let mut expected = batch.clone();
    expected.insert(0, first);
    let expected = sorted(expected);
    assert_eq!(ids(&got), ids(&expected), "get_many order");
}

/// A product can only reference a live category and a live user: unknown ones are
/// `NotFound{Category}` / `NotFound{User}` and nothing is written.
pub async fn create_with_unknown_reference_is_not_found(store: Arc<dyn Store>) {
    let before = counts(&store).await;
    let cat = stockroom_core::CategoryId::new();
    expect_not_found(
        try_create_product(&store, new_product("a", 1).with_category_id(cat)).await,
        EntityKind::CATEGORY,
        cat,
    );
    let user = UserId::new();
    expect_not_found(
        try_create_product(&store, new_product("a", 1).with_created_by(user)).await,
        EntityKind::USER,
        user,
    );
    assert_eq!(
        counts(&store).await,
        before,
        "a rejected create wrote a row"
    );
}

/// An update that moves a product to an unknown category is `NotFound{Category}` and changes
/// nothing.
pub async fn update_with_unknown_category_is_not_found(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let cat = stockroom_core::CategoryId::new();
    let patch = ProductPatch::new().with_category(Some(cat));
    expect_not_found(
        in_uow!(store, |uow| uow.products().update(p.id, &patch, None).await),
        EntityKind::CATEGORY,
        cat,
    );
    let after = get_product(&store, p.id).await;
    assert_eq!(after.as_ref(), Some(&p), "row changed: {after:?}");
}

/// Hard delete removes a row for good, live or trashed: it is gone from reads and from the
/// trash, and a second hard delete is `NotFound`.
pub async fn hard_delete_removes_the_row_for_good(store: Arc<dyn Store>) {
    let live = create_product(&store, new_product("a", 1)).await;
    let trashed = create_product(&store, new_product("b", 1)).await;
    assert!(soft_delete_product(&store, trashed.id).await);
    for id in [live.id, trashed.id] {
        in_uow!(store, |uow| uow.products().hard_delete(id).await).expect("first hard delete");
        expect_not_found(
            in_uow!(store, |uow| uow.products().hard_delete(id).await),
            EntityKind::PRODUCT,
            id,
        );
    }
    let c = counts(&store).await;
    assert_eq!(
        (c.products, c.trashed_products),
        (0, 0),
        "after hard deletes: {c:?}"
    );
}

/// `count` and `exists` follow the filter: status, category.
pub async fn count_and_exists_follow_the_filter(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    create_product(
        &store,
        new_product("a", 1)
            .with_status(ProductStatus::Active)
            .with_category_id(cat.id),
    )
    .await;
    create_product(
        &store,
        new_product("b", 1).with_status(ProductStatus::Active),
    )
    .await;
    create_product(&store, new_product("c", 1)).await;
    let mut r = store.read().await.unwrap();
    let mut p = r.products();
    let active = ProductFilter::default().with_status(ProductStatus::Active);
    let archived = ProductFilter::default().with_status(ProductStatus::Archived);
    let in_cat = ProductFilter::default().with_category_id(cat.id);
    let got = (
        p.count(&ProductFilter::default()).await.unwrap(),
        p.count(&active).await.unwrap(),
        p.count(&in_cat).await.unwrap(),
        p.count(&archived).await.unwrap(),
        p.exists(&active).await.unwrap(),
        p.exists(&archived).await.unwrap(),
    );
    assert_eq!(
        got,
        (3, 2, 1, 0, true, false),
        "(all, active, in category, archived, exists active, exists archived)"
    );
}

/// Categories and users round-trip, and are found by slug and by email (the email compared
/// lower-cased).
pub async fn categories_and_users_round_trip(store: Arc<dyn Store>) {
    let new_cat = NewCategory::new("Kitchen", "kitchen").unwrap();
    let cat = in_uow!(store, |uow| uow.categories().create(new_cat).await).unwrap();
    let new_user = NewUser::new("Ann@Example.COM", "Ann").unwrap();
    let user = in_uow!(store, |uow| uow.users().create(new_user).await).unwrap();
    assert_eq!(
        user.email, "ann@example.com",
        "email stored as {:?}",
        user.email
    );
    let mut r = store.read().await.unwrap();
    let by_slug = r.categories().by_slug("kitchen").await.unwrap();
    assert_eq!(
        by_slug.as_ref(),
        Some(&cat),
        "category by slug: {by_slug:?}"
    );
    let by_id = r.categories().get(cat.id).await.unwrap();
    assert_eq!(by_id.as_ref(), Some(&cat), "category by id: {by_id:?}");
    let by_email = r.users().by_email("ANN@example.com").await.unwrap();
    assert_eq!(
        by_email.as_ref(),
        Some(&user),
        "user by mixed-case email: {by_email:?}"
    );
    let none = r.users().by_email("bob@example.com").await.unwrap();
    assert_eq!(none, None, "unknown email gave {none:?}");
}

/// A review needs a live product and a live author: otherwise `NotFound{Product}` /
/// `NotFound{User}`, nothing written; a valid one round-trips.
pub async fn review_needs_a_live_product_and_author(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let u = create_user(&store, "ann").await;
    let ghost_p = ProductId::new();
    let ghost_u = UserId::new();
    let before = counts(&store).await;
    let r1 = NewReview::new(ghost_p, u.id, 4).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.reviews().create(r1).await),
        EntityKind::PRODUCT,
        ghost_p,
    );
    let r2 = NewReview::new(p.id, ghost_u, 4).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.reviews().create(r2).await),
        EntityKind::USER,
        ghost_u,
    );
    assert_eq!(counts(&store).await, before, "rejected reviews wrote a row");
    let ok = NewReview::new(p.id, u.id, 4)
        .unwrap()
        .with_body("Good\nmug")
        .unwrap();
    let review = in_uow!(store, |uow| uow.reviews().create(ok).await).unwrap();
    let fetched = in_read!(store, |r| r.reviews().get(review.id).await).unwrap();
    assert_eq!(
        fetched.as_ref(),
        Some(&review),
        "review read back {fetched:?}"
    );
    assert_eq!(
        (review.rating, review.body.as_deref()),
        (4, Some("Good\nmug")),
        "{review:?}"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_crud_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) crud:
        create_then_get_returns_the_same_row,
        created_row_starts_at_version_one,
        update_applies_the_patch_and_bumps_the_version,
        unknown_id_is_absent_everywhere,
        get_many_returns_each_live_row_once_in_order,
        create_with_unknown_reference_is_not_found,
        update_with_unknown_category_is_not_found,
        hard_delete_removes_the_row_for_good,
        count_and_exists_follow_the_filter,
        categories_and_users_round_trip,
        review_needs_a_live_product_and_author,
    } };
}

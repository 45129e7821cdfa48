//! Uniqueness among live rows only: slugs, skus, emails, one review per author and product.

use std::sync::Arc;

use stockroom_core::{
    CategoryId, Constraint, EntityKind, NewCategory, NewProduct, NewReview, NewUser, ProductPatch,
    Store,
};

use crate::support::*;

/// A second live product with a taken sku is `Conflict{ProductSku}`; with a taken slug,
/// `Conflict{ProductSlug}`; nothing is written.
pub async fn duplicate_sku_or_slug_is_a_conflict(store: Arc<dyn Store>) {
    create_product(&store, new_product("a", 1)).await;
    let before = counts(&store).await;
    let same_sku = NewProduct::new("Other", "other", "SKU-A").unwrap();
    expect_conflict(
        try_create_product(&store, same_sku).await,
        Constraint::PRODUCT_SKU,
    );
    let same_slug = NewProduct::new("Other", "product-a", "OTHER").unwrap();
    expect_conflict(
        try_create_product(&store, same_slug).await,
        Constraint::PRODUCT_SLUG,
    );
    assert_eq!(
        counts(&store).await,
        before,
        "a conflicting create wrote a row"
    );
}

/// A soft-deleted product's sku and slug can be taken by a new product.
pub async fn deleted_products_sku_and_slug_can_be_reused(store: Arc<dyn Store>) {
    let old = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, old.id).await);
    let new = try_create_product(&store, new_product("a", 2))
        .await
        .expect("reuse of sku and slug");
    let by_sku = in_read!(store, |r| r.products().by_sku("SKU-A").await).unwrap();
    assert_eq!(
        by_sku.map(|p| p.id),
        Some(new.id),
        "by_sku finds the new live row"
    );
}

/// Restoring a product whose sku was taken meanwhile is `Conflict{ProductSku}`, and the row
/// stays deleted.
pub async fn restore_when_the_sku_is_taken_is_a_conflict(store: Arc<dyn Store>) {
    let old = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, old.id).await);
    let trashed = trashed_product(&store, old.id).await.unwrap();
    create_product(&store, NewProduct::new("New", "new-slug", "SKU-A").unwrap()).await;
    expect_conflict(
        in_uow!(store, |uow| uow.products().restore(old.id).await),
        Constraint::PRODUCT_SKU,
    );
    let still = trashed_product(&store, old.id).await;
    assert_eq!(
        still.as_ref(),
        Some(&trashed),
        "row after refused restore: {still:?}"
    );
    assert_eq!(
        get_product(&store, old.id).await,
        None,
        "refused restore made the row live"
    );
}

/// Restoring a product whose slug was taken meanwhile is `Conflict{ProductSlug}`, and the row
/// stays deleted.
pub async fn restore_when_the_slug_is_taken_is_a_conflict(store: Arc<dyn Store>) {
    let old = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, old.id).await);
    create_product(
        &store,
        NewProduct::new("New", "product-a", "OTHER-SKU").unwrap(),
    )
    .await;
    expect_conflict(
        in_uow!(store, |uow| uow.products().restore(old.id).await),
        Constraint::PRODUCT_SLUG,
    );
    assert!(
        trashed_product(&store, old.id).await.is_some(),
        "row left the trash"
    );
}

/// Updating a product to another live product's sku is a conflict and changes nothing.
pub async fn update_to_a_taken_sku_is_a_conflict(store: Arc<dyn Store>) {
    create_product(&store, new_product("a", 1)).await;
    let b = create_product(&store, new_product("b", 1)).await;
    let patch = ProductPatch::new().with_sku("SKU-A").unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow.products().update(b.id, &patch, None).await),
        Constraint::PRODUCT_SKU,
    );
    let after = get_product(&store, b.id).await;
    assert_eq!(
        after.as_ref(),
        Some(&b),
        "row after refused update: {after:?}"
    );
}

/// Category slugs are unique among live categories; a deleted category's slug is free.
pub async fn category_slug_is_unique_among_live_rows(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    let dup = NewCategory::new("Mugs again", "mugs").unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow.categories().create(dup).await),
        Constraint::CATEGORY_SLUG,
    );
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(cat.id).await).unwrap());
    let again = NewCategory::new("Mugs again", "mugs").unwrap();
    in_uow!(store, |uow| uow.categories().create(again).await).expect("slug of a deleted category");
}

/// Emails are unique among live users, compared lower-cased.
pub async fn user_email_is_unique_ignoring_case(store: Arc<dyn Store>) {
    let ann = create_user(&store, "ann").await;
    let dup = NewUser::new("ANN@Example.com", "Other Ann").unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow.users().create(dup).await),
        Constraint::USER_EMAIL,
    );
    assert!(in_uow!(store, |uow| uow.users().soft_delete(ann.id).await).unwrap());
    let again = NewUser::new("ann@example.com", "Ann two").unwrap();
    in_uow!(store, |uow| uow.users().create(again).await).expect("email of a deleted user");
}

/// A user has at most one live review of a product; once it is deleted they may review again.
pub async fn one_live_review_per_author_and_product(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let u = create_user(&store, "ann").await;
    let first = NewReview::new(p.id, u.id, 4).unwrap();
    let first = in_uow!(store, |uow| uow.reviews().create(first).await).unwrap();
    let second = NewReview::new(p.id, u.id, 2).unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow.reviews().create(second).await),
        Constraint::REVIEW_AUTHOR,
    );
    assert!(in_uow!(store, |uow| uow.reviews().soft_delete(first.id).await).unwrap());
    let third = NewReview::new(p.id, u.id, 2).unwrap();
    in_uow!(store, |uow| uow.reviews().create(third).await)
        .expect("review after deleting the first");
}

/// Restoring a category whose slug a live category took meanwhile is `Conflict{CategorySlug}`;
/// the category stays deleted.
pub async fn restore_of_a_category_whose_slug_is_taken_is_a_conflict(store: Arc<dyn Store>) {
    let old = create_category(&store, "mugs").await;
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(old.id).await).unwrap());
    create_category(&store, "mugs").await;
    expect_conflict(
        in_uow!(store, |uow| uow.categories().restore(old.id).await),
        Constraint::CATEGORY_SLUG,
    );
    let got = in_read!(store, |r| r.categories().get(old.id).await).unwrap();
    assert_eq!(got, None, "refused restore made the category live: {got:?}");
}

/// Restoring a user whose email a live user took meanwhile is `Conflict{UserEmail}`; the user
/// stays deleted.
pub async fn restore_of_a_user_whose_email_is_taken_is_a_conflict(store: Arc<dyn Store>) {
    let old = create_user(&store, "ann").await;
    assert!(in_uow!(store, |uow| uow.users().soft_delete(old.id).await).unwrap());
    create_user(&store, "ann").await;
    expect_conflict(
        in_uow!(store, |uow| uow.users().restore(old.id).await),
        Constraint::USER_EMAIL,
    );
    let got = in_read!(store, |r| r.users().get(old.id).await).unwrap();
    assert_eq!(got, None, "refused restore made the user live: {got:?}");
}

/// Restoring a review when its author reviewed the product again meanwhile is
/// `Conflict{ReviewAuthor}`; the old review stays deleted.
pub async fn restore_of_a_review_when_the_author_reviewed_again_is_a_conflict(
    store: Arc<dyn Store>,
) {
    let p = create_product(&store, new_product("a", 1)).await;
    let u = create_user(&store, "ann").await;
    let first = NewReview::new(p.id, u.id, 2).unwrap();
    let first = in_uow!(store, |uow| uow.reviews().create(first).await).unwrap();
    assert!(in_uow!(store, |uow| uow.reviews().soft_delete(first.id).await).unwrap());
    let second = NewReview::new(p.id, u.id, 5).unwrap();
    let second = in_uow!(store, |uow| uow.reviews().create(second).await).unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow.reviews().restore(first.id).await),
        Constraint::REVIEW_AUTHOR,
    );
    let listed = in_read!(store, |r| r.reviews().for_product(p.id, all()).await).unwrap();
    let ids: Vec<_> = listed.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![second.id],
        "live reviews after the refused restore"
    );
}

/// Renaming a category to a live category's slug is `Conflict{CategorySlug}` and changes
/// nothing.
pub async fn update_of_a_category_to_a_taken_slug_is_a_conflict(store: Arc<dyn Store>) {
    create_category(&store, "mugs").await;
    let plates = create_category(&store, "plates").await;
    let patch = stockroom_core::CategoryPatch::new()
        .with_slug("mugs")
        .unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow
            .categories()
            .update(plates.id, &patch, None)
            .await),
        Constraint::CATEGORY_SLUG,
    );
    let got = in_read!(store, |r| r.categories().get(plates.id).await).unwrap();
    assert_eq!(
        got.as_ref(),
        Some(&plates),
        "category after a refused update: {got:?}"
    );
}

/// When a write breaks several rules, every backend names the same one, in a fixed order: a
/// referenced row that is not live first (`NotFound`), then the unique values in the order the
/// entity declares them (a product's slug before its sku). Checked on create, create_many,
/// update and restore, with both the slug and the sku taken.
pub async fn several_broken_rules_are_reported_in_a_fixed_order(store: Arc<dyn Store>) {
    let taken = create_product(&store, new_product("a", 1)).await;
    let other = create_product(&store, new_product("b", 1)).await;
    let both = || NewProduct::new("Clash", &taken.slug, &taken.sku).unwrap();
    expect_conflict(
        try_create_product(&store, both()).await,
        Constraint::PRODUCT_SLUG,
    );
    expect_conflict(
        in_uow!(store, |uow| uow
            .products()
            .create_many(vec![new_product("c", 1), both()])
            .await),
        Constraint::PRODUCT_SLUG,
    );
    let ghost = CategoryId::new();
    expect_not_found(
        try_create_product(&store, both().with_category_id(ghost)).await,
        EntityKind::CATEGORY,
        ghost,
    );
    let patch = ProductPatch::new()
        .with_slug(&taken.slug)
        .unwrap()
        .with_sku(&taken.sku)
        .unwrap();
    expect_conflict(
        in_uow!(store, |uow| uow
            .products()
            .update(other.id, &patch, None)
            .await),
        Constraint::PRODUCT_SLUG,
    );
    expect_not_found(
        in_uow!(store, |uow| uow
            .products()
            .update(other.id, &patch.clone().with_category(Some(ghost)), None)
            .await),
        EntityKind::CATEGORY,
        ghost,
    );
    // A deleted product whose slug and sku were both taken again meanwhile.
    assert!(soft_delete_product(&store, taken.id).await);
    create_product(&store, both()).await;
    expect_conflict(
        in_uow!(store, |uow| uow.products().restore(taken.id).await),
        Constraint::PRODUCT_SLUG,
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_uniqueness_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) uniqueness:
        duplicate_sku_or_slug_is_a_conflict,
        deleted_products_sku_and_slug_can_be_reused,
        restore_when_the_sku_is_taken_is_a_conflict,
        restore_when_the_slug_is_taken_is_a_conflict,
        update_to_a_taken_sku_is_a_conflict,
        category_slug_is_unique_among_live_rows,
        user_email_is_unique_ignoring_case,
        one_live_review_per_author_and_product,
        restore_of_a_category_whose_slug_is_taken_is_a_conflict,
        restore_of_a_user_whose_email_is_taken_is_a_conflict,
        restore_of_a_review_when_the_author_reviewed_again_is_a_conflict,
        update_of_a_category_to_a_taken_slug_is_a_conflict,
        several_broken_rules_are_reported_in_a_fixed_order,
    } };
}

//! Relations: a product with its live category and creator; reviews of a product, newest first,
//! and their statistics.

use std::sync::Arc;

use stockroom_core::{
    Category, NewReview, NewUser, Product, ProductFilter, ProductId, ProductWithRelations,
    RatingStats, Review, Store, User,
};

use crate::support::*;

/// A category "mugs", a user "ann", and a product "a" in that category created by that user.
async fn product_with_category_and_creator(store: &Arc<dyn Store>) -> (Category, User, Product) {
    let cat = create_category(store, "mugs").await;
    let user = create_user(store, "ann").await;
    let p = create_product(
        store,
        new_product("a", 1)
            .with_category_id(cat.id)
            .with_created_by(user.id),
    )
    .await;
    (cat, user, p)
}

/// `with_relations` of a product that must be live.
async fn live_relations(store: &Arc<dyn Store>, id: ProductId) -> ProductWithRelations {
    in_read!(store, |r| r.products().with_relations(id).await)
        .unwrap()
        .expect("live product")
}

/// `with_relations` returns the product with its live category and creator.
pub async fn with_relations_returns_the_live_category_and_creator(store: Arc<dyn Store>) {
    let (cat, user, p) = product_with_category_and_creator(&store).await;
    let got = live_relations(&store, p.id).await;
    assert_eq!(got.product, p, "product part");
    assert_eq!(
        got.category.as_ref(),
        Some(&cat),
        "category part: {:?}",
        got.category
    );
    assert_eq!(
        got.creator.as_ref(),
        Some(&user),
        "creator part: {:?}",
        got.creator
    );
}

/// A deleted category shows as `None` in `with_relations` (the product keeps its id).
pub async fn deleted_category_shows_as_none(store: Arc<dyn Store>) {
    let (cat, user, p) = product_with_category_and_creator(&store).await;
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(cat.id).await).unwrap());
    let got = live_relations(&store, p.id).await;
    assert_eq!(
        got.category, None,
        "deleted category shown: {:?}",
        got.category
    );
    assert_eq!(
        got.creator.map(|u| u.id),
        Some(user.id),
        "creator still shown"
    );
}

/// A deleted creator shows as `None` in `with_relations`.
pub async fn deleted_creator_shows_as_none(store: Arc<dyn Store>) {
    let (cat, user, p) = product_with_category_and_creator(&store).await;
    assert!(in_uow!(store, |uow| uow.users().soft_delete(user.id).await).unwrap());
    let got = live_relations(&store, p.id).await;
    assert_eq!(
        got.creator, None,
        "deleted creator shown: {:?}",
        got.creator
    );
    assert_eq!(
        got.category.map(|c| c.id),
        Some(cat.id),
        "category still shown"
    );
}

/// A product cannot be created in a deleted category: `NotFound{Category}`.
pub async fn deleted_category_cannot_be_referenced(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    assert!(in_uow!(store, |uow| uow.categories().soft_delete(cat.id).await).unwrap());
    let before = counts(&store).await;
    expect_not_found(
        try_create_product(&store, new_product("a", 1).with_category_id(cat.id)).await,
        stockroom_core::EntityKind::CATEGORY,
        cat.id,
    );
    assert_eq!(counts(&store).await, before, "rejected create wrote a row");
}

/// A deleted user cannot write a review: `NotFound{User}`; a deleted product cannot be
/// reviewed: `NotFound{Product}`.
pub async fn deleted_author_or_product_cannot_be_reviewed(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let q = create_product(&store, new_product("b", 1)).await;
    let ann = create_user(&store, "ann").await;
    let bob = create_user(&store, "bob").await;
    assert!(in_uow!(store, |uow| uow.users().soft_delete(bob.id).await).unwrap());
    assert!(soft_delete_product(&store, q.id).await);
    let by_bob = NewReview::new(p.id, bob.id, 3).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.reviews().create(by_bob).await),
        stockroom_core::EntityKind::USER,
        bob.id,
    );
    let of_q = NewReview::new(q.id, ann.id, 3).unwrap();
    expect_not_found(
        in_uow!(store, |uow| uow.reviews().create(of_q).await),
        stockroom_core::EntityKind::PRODUCT,
        q.id,
    );
}

/// Reviews of a product come newest first (`created_at`, then id, descending) and page by
/// offset; reviews of other products are not included.
pub async fn reviews_of_a_product_come_newest_first(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let other = create_product(&store, new_product("b", 1)).await;
    let news = (0..5)
        .map(|i| NewUser::new(&format!("u{i}@example.com"), &format!("U{i}")).unwrap())
        .collect();
    let users = in_uow!(store, |uow| uow.users().create_many(news).await).unwrap();
    let mut reviews: Vec<Review> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let new = NewReview::new(p.id, u.id, 1 + i as i64).unwrap();
        reviews.push(in_uow!(store, |uow| uow.reviews().create(new).await).unwrap());
        if i == 1 {
            tick().await;
        }
    }
    let noise = NewReview::new(other.id, users[0].id, 2).unwrap();
    in_uow!(store, |uow| uow.reviews().create(noise).await).unwrap();
    let mut expected: Vec<_> = reviews.iter().map(|r| (r.created_at, r.id)).collect();
    expected.sort();
    expected.reverse();
    let all_reviews = in_read!(store, |r| r.reviews().for_product(p.id, all()).await).unwrap();
    let got: Vec<_> = all_reviews.iter().map(|r| (r.created_at, r.id)).collect();
    assert_eq!(got, expected, "reviews newest first");
    let page = stockroom_core::Page::new(2, 2).unwrap();
    let second = in_read!(store, |r| r.reviews().for_product(p.id, page).await).unwrap();
    let got: Vec<_> = second.iter().map(|r| (r.created_at, r.id)).collect();
    assert_eq!(got, expected[2..4].to_vec(), "second page of reviews");
}

/// Rating statistics count the live reviews of the product: count, average and histogram.
pub async fn rating_stats_summarise_live_reviews(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let ratings = [5, 4, 4, 1, 2];
    let mut ids_ = Vec::new();
    for (i, rating) in ratings.iter().enumerate() {
        let u = create_user(&store, &format!("u{i}")).await;
        let new = NewReview::new(p.id, u.id, *rating).unwrap();
        ids_.push(
            in_uow!(store, |uow| uow.reviews().create(new).await)
                .unwrap()
                .id,
        );
    }
    // The rating-2 review is deleted: it no longer counts.
    assert!(in_uow!(store, |uow| uow.reviews().soft_delete(ids_[4]).await).unwrap());
    let stats = in_read!(store, |r| r.reviews().stats(p.id).await).unwrap();
    let expected = RatingStats {
        count: 4,
        average: Some(3.5),
        histogram: [1, 0, 0, 2, 1],
    };
    assert_eq!(stats, expected, "stats of ratings 5, 4, 4, 1");
    let empty = create_product(&store, new_product("b", 1)).await;
    let none = in_read!(store, |r| r.reviews().stats(empty.id).await).unwrap();
    assert_eq!(
        none,
        RatingStats::default(),
        "stats without reviews: {none:?}"
    );
}

/// Products of a category are a list with a category filter, in `(created_at, id)` order.
pub async fn products_of_a_category_are_listed_in_order(store: Arc<dyn Store>) {
    let mugs = create_category(&store, "mugs").await;
    let plates = create_category(&store, "plates").await;
    let news = (0..8)
        .map(|i| {
            new_product(&format!("p{i}"), 1).with_category_id(if i % 2 == 0 {
                mugs.id
            } else {
                plates.id
            })
        })
        .collect();
    let rows = in_uow!(store, |uow| uow.products().create_many(news).await).unwrap();
    let f = ProductFilter::default().with_category_id(mugs.id);
    let expected: Vec<_> = sorted(rows)
        .into_iter()
        .filter(|p| p.category_id == Some(mugs.id))
        .collect();
    let listed = in_read!(store, |r| r.products().list(&f, all()).await).unwrap();
    assert_eq!(
        ids(&listed),
        ids(&expected),
        "products of the mugs category"
    );
    assert_eq!(listed.len(), 4, "4 mugs");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_relations_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) relations:
        with_relations_returns_the_live_category_and_creator,
        deleted_category_shows_as_none,
        deleted_creator_shows_as_none,
        deleted_category_cannot_be_referenced,
        deleted_author_or_product_cannot_be_reviewed,
        reviews_of_a_product_come_newest_first,
        rating_stats_summarise_live_reviews,
        products_of_a_category_are_listed_in_order,
    } };
}

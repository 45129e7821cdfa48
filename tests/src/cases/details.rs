//! The product details use case: product, latest reviews and statistics, read concurrently.

use std::sync::Arc;

use stockroom_core::{Limit, NewReview, ProductId, RatingStats, Store, StoreExt};

use crate::support::*;

/// Details hold the product, its newest reviews up to the limit, and the statistics of all its
/// live reviews.
pub async fn details_hold_the_product_latest_reviews_and_stats(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let mut reviews = Vec::new();
    for (i, rating) in [2, 4, 5].into_iter().enumerate() {
        let u = create_user(&store, &format!("u{i}")).await;
        let new = NewReview::new(p.id, u.id, rating).unwrap();
        reviews.push(in_uow!(store, |uow| uow.reviews().create(new).await).unwrap());
        tick().await;
    }
    let d = store
        .product_details(p.id, Limit::new(2).unwrap())
        .await
        .unwrap()
        .expect("details");
    assert_eq!(d.product, p, "product part");
    let got: Vec<_> = d.reviews.iter().map(|r| r.id).collect();
    assert_eq!(
        got,
        vec![reviews[2].id, reviews[1].id],
        "the two newest reviews, newest first"
    );
    let expected = RatingStats {
        count: 3,
        average: Some(11.0 / 3.0),
        histogram: [0, 1, 0, 1, 1],
    };
    assert_eq!(d.stats, expected, "stats over all three reviews");
}

/// Details of an unknown or deleted product are `None`.
pub async fn details_of_an_unknown_or_deleted_product_are_none(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, p.id).await);
    let limit = Limit::new(5).unwrap();
    let deleted = store.product_details(p.id, limit).await.unwrap();
    let unknown = store
        .product_details(ProductId::new(), limit)
        .await
        .unwrap();
    assert_eq!(
        (deleted, unknown),
        (None, None),
        "details of deleted / unknown product"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_details_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) details:
        details_hold_the_product_latest_reviews_and_stats,
        details_of_an_unknown_or_deleted_product_are_none,
    } };
}

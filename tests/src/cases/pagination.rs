//! Offset pagination: deterministic `(created_at, id)` order, ties included, no row repeated or
//! skipped across pages.

use std::collections::HashSet;
use std::sync::Arc;

use stockroom_core::{NewUser, Page, ProductFilter, ProductStatus, Store, UserFilter};

use crate::support::*;

/// 27 rows created in one batch share one `created_at`; pages of 4 cover them all, each once,
/// in exactly `(created_at, id)` order.
pub async fn offset_pages_cover_tied_rows_once_in_order(store: Arc<dyn Store>) {
    let rows = create_products(&store, "p", 27, 1).await;
    let shared = rows[0].created_at;
    assert!(
        rows.iter().all(|p| p.created_at == shared),
        "create_many rows differ in created_at"
    );
    let expected = ids(&sorted(rows));
    let mut seen = Vec::new();
    for offset in (0..28).step_by(4) {
        let page = Page::new(4, offset).unwrap();
        let rows = in_read!(store, |r| r
            .products()
            .list(&ProductFilter::default(), page)
            .await)
        .unwrap();
        let want = if offset < 24 { 4 } else { 27 - offset as usize };
        assert_eq!(
            rows.len(),
            want,
            "page at offset {offset} has {} rows",
            rows.len()
        );
        seen.extend(ids(&rows));
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a row was repeated across pages: {seen:?}"
    );
    assert_eq!(
        seen, expected,
        "pages concatenated != (created_at, id) order"
    );
}

/// Rows created at different times list oldest first, across batches and single creates.
pub async fn list_orders_by_created_at_then_id(store: Arc<dyn Store>) {
    let mut all_rows = Vec::new();
    all_rows.push(create_product(&store, new_product("first", 1)).await);
    tick().await;
    all_rows.extend(create_products(&store, "mid", 5, 1).await);
    tick().await;
    all_rows.push(create_product(&store, new_product("last", 1)).await);
    let expected = ids(&sorted(all_rows.clone()));
    assert_eq!(expected[0], all_rows[0].id, "oldest row is not first");
    assert_eq!(expected[6], all_rows[6].id, "newest row is not last");
    let listed = live_products(&store).await;
    assert_eq!(ids(&listed), expected, "list order");
}

/// A page past the end is empty, not an error.
pub async fn page_past_the_end_is_empty(store: Arc<dyn Store>) {
    create_products(&store, "p", 3, 1).await;
    let page = Page::new(10, 3).unwrap();
    let rows = in_read!(store, |r| r
        .products()
        .list(&ProductFilter::default(), page)
        .await)
    .unwrap();
    assert_eq!(rows, vec![], "page past the end: {rows:?}");
}

/// Listing with a filter pages through the matching rows only, in order.
pub async fn filtered_pages_hold_only_matching_rows(store: Arc<dyn Store>) {
    let cat = create_category(&store, "mugs").await;
    let news = (0..12)
        .map(|i| {
            let p = new_product(&format!("p{i}"), 1);
            let p = if i % 2 == 0 {
                p.with_category_id(cat.id)
            } else {
                p
            };
            if i % 3 == 0 {
                p.with_status(ProductStatus::Active)
            } else {
                p
            }
        })
        .collect();
    let rows = in_uow!(store, |uow| uow.products().create_many(news).await).unwrap();
    let filter = ProductFilter::default()
        .with_category_id(cat.id)
        .with_status(ProductStatus::Active);
    let expected: Vec<_> = sorted(rows)
        .into_iter()
        .filter(|p| filter.matches(p))
        .collect();
    assert_eq!(expected.len(), 2, "fixture: products 0 and 6 match");
    let first = in_read!(store, |r| r
        .products()
        .list(&filter, Page::new(1, 0).unwrap())
        .await)
    .unwrap();
    let second = in_read!(store, |r| r
        .products()
        .list(&filter, Page::new(1, 1).unwrap())
        .await)
    .unwrap();
    let third = in_read!(store, |r| r
        .products()
        .list(&filter, Page::new(1, 2).unwrap())
        .await)
    .unwrap();
    assert_eq!(
        (ids(&first), ids(&second), third.len()),
        (vec![expected[0].id], vec![expected[1].id], 0),
        "filtered pages"
    );
}

/// Other entities page the same way: users created in one batch list in `(created_at, id)` order.
pub async fn users_page_in_the_same_order(store: Arc<dyn Store>) {
    let news = (0..9)
        .map(|i| NewUser::new(&format!("u{i}@example.com"), &format!("User {i}")).unwrap())
        .collect();
    let users = in_uow!(store, |uow| uow.users().create_many(news).await).unwrap();
    let mut expected: Vec<_> = users.iter().map(|u| (u.created_at, u.id)).collect();
    expected.sort();
    let mut seen = Vec::new();
    for offset in [0, 4, 8] {
        let page = Page::new(4, offset).unwrap();
        let rows = in_read!(store, |r| r
            .users()
            .list(&UserFilter::default(), page)
            .await)
        .unwrap();
        seen.extend(rows.iter().map(|u| (u.created_at, u.id)));
    }
    assert_eq!(seen, expected, "user pages");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_pagination_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) pagination:
        offset_pages_cover_tied_rows_once_in_order,
        list_orders_by_created_at_then_id,
        page_past_the_end_is_empty,
        filtered_pages_hold_only_matching_rows,
        users_page_in_the_same_order,
    } };
}

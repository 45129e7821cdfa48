//! Keyset (cursor) pagination: pages after a `(created_at, id)` position, ties included.

use std::sync::Arc;

use stockroom_core::{Cursor, Limit, ProductFilter, ProductId, ProductStatus, Store};

use crate::support::*;

async fn walk(
    store: &Arc<dyn Store>,
    filter: &ProductFilter,
    limit: i64,
) -> (Vec<ProductId>, usize) {
    let limit = Limit::new(limit).unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = in_read!(store, |r| r
            .products()
            .list_after(filter, after, limit)
            .await)
        .unwrap();
        pages += 1;
        assert!(pages < 100, "keyset walk does not end");
        assert!(
            page.items.len() <= limit.get() as usize,
            "page over the limit: {}",
            page.items.len()
        );
        seen.extend(ids(&page.items));
        match page.next {
            Some(next) => {
                let last = page
                    .items
                    .last()
                    .expect("a page with a next cursor has rows");
                assert_eq!(
                    next,
                    stockroom_core::Entity::cursor(last),
                    "next cursor is not the last row's"
                );
                after = Some(next);
            }
            None => break,
        }
    }
    (seen, pages)
}

/// Walking 26 rows that share one `created_at` plus rows before and after, 3 at a time,
/// visits each row exactly once, in `(created_at, id)` order.
pub async fn keyset_pages_walk_tied_rows_once_in_order(store: Arc<dyn Store>) {
    let mut rows = vec![create_product(&store, new_product("first", 1)).await];
    tick().await;
    rows.extend(create_products(&store, "tie", 26, 1).await);
    tick().await;
    rows.push(create_product(&store, new_product("last", 1)).await);
    let expected = ids(&sorted(rows));
    let (seen, pages) = walk(&store, &ProductFilter::default(), 3).await;
    assert_eq!(seen, expected, "keyset walk order");
    assert_eq!(pages, 10, "28 rows in pages of 3 take 10 pages");
}

/// A page that ends exactly at the last row has no next cursor; one with more rows after it has.
pub async fn last_page_has_no_cursor(store: Arc<dyn Store>) {
    create_products(&store, "p", 6, 1).await;
    let limit = Limit::new(3).unwrap();
    let f = ProductFilter::default();
    let first = in_read!(store, |r| r.products().list_after(&f, None, limit).await).unwrap();
    let next = first
        .next
        .expect("6 rows, first page of 3 has a next cursor");
    let second = in_read!(store, |r| r
        .products()
        .list_after(&f, Some(next), limit)
        .await)
    .unwrap();
    assert_eq!((second.items.len(), second.next), (3, None), "second page");
}

/// A cursor survives its text form: parsing what `Display` printed continues at the same place.
pub async fn cursor_round_trips_through_text(store: Arc<dyn Store>) {
    let rows = sorted(create_products(&store, "p", 5, 1).await);
    let limit = Limit::new(2).unwrap();
    let f = ProductFilter::default();
    let first = in_read!(store, |r| r.products().list_after(&f, None, limit).await).unwrap();
    let text = first.next.expect("cursor").to_string();
    let parsed = Cursor::parse(&text).expect("parse the printed cursor");
    let second = in_read!(store, |r| r
        .products()
        .list_after(&f, Some(parsed), limit)
        .await)
    .unwrap();
    assert_eq!(
        ids(&second.items),
        vec![rows[2].id, rows[3].id],
        "page after parsed cursor {text}"
    );
}

/// Keyset pages honour the filter, and rows deleted between two pages are not returned.
pub async fn keyset_honours_filter_and_deletes_between_pages(store: Arc<dyn Store>) {
    let news = (0..10)
        .map(|i| {
            let p = new_product(&format!("p{i}"), 1);
            if i % 2 == 0 {
                p.with_status(ProductStatus::Active)
            } else {
                p
            }
        })
        .collect();
    let rows = in_uow!(store, |uow| uow.products().create_many(news).await).unwrap();
    let f = ProductFilter::default().with_status(ProductStatus::Active);
    let active: Vec<_> = sorted(rows).into_iter().filter(|p| f.matches(p)).collect();
    let limit = Limit::new(2).unwrap();
    let first = in_read!(store, |r| r.products().list_after(&f, None, limit).await).unwrap();
    assert_eq!(
        ids(&first.items),
        vec![active[0].id, active[1].id],
        "first page"
    );
    assert!(soft_delete_product(&store, active[2].id).await);
    let second = in_read!(store, |r| r
        .products()
        .list_after(&f, first.next, limit)
        .await)
    .unwrap();
    assert_eq!(
        ids(&second.items),
        vec![active[3].id, active[4].id],
        "second page after a delete"
    );
    assert_eq!(second.next, None, "no row after the last active one");
}

/// A cursor positioned after every row gives an empty page with no cursor.
pub async fn cursor_after_the_end_gives_an_empty_page(store: Arc<dyn Store>) {
    let rows = sorted(create_products(&store, "p", 3, 1).await);
    let after = stockroom_core::Entity::cursor(rows.last().unwrap());
    let page = in_read!(store, |r| r
        .products()
        .list_after(
            &ProductFilter::default(),
            Some(after),
            Limit::new(5).unwrap()
        )
        .await)
    .unwrap();
    assert_eq!(
        (page.items.len(), page.next),
        (0, None),
        "page after the last row"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_keyset_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) keyset:
        keyset_pages_walk_tied_rows_once_in_order,
        last_page_has_no_cursor,
        cursor_round_trips_through_text,
        keyset_honours_filter_and_deletes_between_pages,
        cursor_after_the_end_gives_an_empty_page,
    } };
}

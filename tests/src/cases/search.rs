//! Search: case-insensitive (Unicode included), `%` and `_` literal, over name, sku and
//! description, with the total of all matches (exact up to a bound).

use std::sync::Arc;

use stockroom_core::{
    time, Entity, Limit, NewProduct, Page, ProductFilter, ProductPatch, ProductStatus, Store,
    StoreExt, Total, TransferRequest, MAX_EXACT_TOTAL,
};

use crate::support::*;

async fn search_names(store: &Arc<dyn Store>, q: &str) -> (Vec<String>, u64) {
    let filter = ProductFilter::default().with_search(q).unwrap();
    let page = in_read!(store, |r| r.products().search(&filter, all()).await).unwrap();
    (
        page.items.into_iter().map(|p| p.name).collect(),
        exact(page.total),
    )
}

fn named(name: &str, slug: &str, sku: &str) -> NewProduct {
    NewProduct::new(name, slug, sku).unwrap()
}

/// Upper-, lower- and mixed-case queries find the same rows.
pub async fn search_is_case_insensitive(store: Arc<dyn Store>) {
    create_product(&store, named("Blue Mug", "blue-mug", "BM-1")).await;
    create_product(&store, named("Red plate", "red-plate", "RP-1")).await;
    for q in ["mug", "MUG", "bLuE m"] {
        let got = search_names(&store, q).await;
        assert_eq!(got, (vec!["Blue Mug".to_owned()], 1), "search {q:?}");
    }
}

/// Case folding covers non-ASCII letters ("ÉCLAIR" finds "éclair", "ÜBER" finds "Über"), and
/// is only case folding: "ECLAIR" does not find "éclair" (no accent stripping on any backend).
pub async fn search_folds_non_ascii_letters(store: Arc<dyn Store>) {
    create_product(&store, named("Chocolate éclair", "eclair", "EC-1")).await;
    create_product(&store, named("Über mug", "uber-mug", "UM-1")).await;
    create_product(&store, named("Plain eclair", "plain-eclair", "EC-2")).await;
    assert_eq!(
        search_names(&store, "ÉCLAIR").await,
        (vec!["Chocolate éclair".to_owned()], 1),
        "ÉCLAIR"
    );
    assert_eq!(
        search_names(&store, "über").await,
        (vec!["Über mug".to_owned()], 1),
        "über"
    );
    assert_eq!(
        search_names(&store, "ÜBER MUG").await,
        (vec!["Über mug".to_owned()], 1),
        "ÜBER MUG"
    );
    assert_eq!(
        search_names(&store, "ECLAIR").await,
        (vec!["Plain eclair".to_owned()], 1),
        "ECLAIR (no accent folding)"
    );
}

/// `%`, `_` and `\` in a query are ordinary characters, not wildcards.
pub async fn wildcards_in_the_query_are_literal(store: Arc<dyn Store>) {
    create_product(&store, named("Mug 50% off", "mug-50-off", "M-1")).await;
    create_product(&store, named("Mug 500 off", "mug-500-off", "M-2")).await;
    create_product(&store, named("snake_case mug", "snake-case", "M-3")).await;
    create_product(&store, named("snakeXcase mug", "snake-x-case", "M-4")).await;
    create_product(&store, named("back\\slash", "back-slash", "M-5")).await;
    assert_eq!(
        search_names(&store, "50%").await,
        (vec!["Mug 50% off".to_owned()], 1),
        "50%"
    );
    assert_eq!(
        search_names(&store, "%").await,
        (vec!["Mug 50% off".to_owned()], 1),
        "%"
    );
    assert_eq!(
        search_names(&store, "e_c").await,
        (vec!["snake_case mug".to_owned()], 1),
        "e_c"
    );
    assert_eq!(
        search_names(&store, "k\\s").await,
        (vec!["back\\slash".to_owned()], 1),
        "k\\s"
    );
}

/// The query matches the name, the sku and the description.
pub async fn search_matches_name_sku_and_description(store: Arc<dyn Store>) {
    create_product(&store, named("Alpha", "alpha", "ZX-9")).await;
    create_product(
        &store,
        named("Beta", "beta", "B-1")
            .with_description("Holds hot tea")
            .unwrap(),
    )
    .await;
    create_product(&store, named("Gamma", "gamma", "G-1")).await;
    assert_eq!(
        search_names(&store, "alp").await.0,
        vec!["Alpha"],
        "by name"
    );
    assert_eq!(
        search_names(&store, "zx-9").await.0,
        vec!["Alpha"],
        "by sku"
    );
    assert_eq!(
        search_names(&store, "HOT TEA").await.0,
        vec!["Beta"],
        "by description"
    );
    assert_eq!(
        search_names(&store, "nothing").await,
        (vec![], 0),
        "no match"
    );
}

/// The total counts every match while the page holds only its part, in list order.
pub async fn search_total_is_correct_while_paging(store: Arc<dyn Store>) {
    let news = (0..17)
        .map(|i| {
            let name = if i % 3 == 2 {
                format!("Plate {i}")
            } else {
                format!("Mug {i}")
            };
            NewProduct::new(&name, &format!("p-{i}"), &format!("S-{i}")).unwrap()
        })
        .collect();
    let rows = in_uow!(store, |uow| uow.products().create_many(news).await).unwrap();
    let filter = ProductFilter::default().with_search("mug").unwrap();
    let matching: Vec<_> = sorted(rows)
        .into_iter()
        .filter(|p| filter.matches(p))
        .collect();
    assert_eq!(matching.len(), 12, "fixture has 12 mugs");
    let page = Page::new(5, 10).unwrap();
    let got = in_read!(store, |r| r.products().search(&filter, page).await).unwrap();
    assert_eq!(exact(got.total), 12, "total while paging");
    assert_eq!(
        ids(&got.items),
        ids(&matching[10..]),
        "last page of the search"
    );
}

/// Search combines with the other filters: status and category.
pub async fn search_combines_with_status_and_category(store: Arc<dyn Store>) {
    let cat = create_category(&store, "kitchen").await;
    create_product(
        &store,
        named("Mug A", "mug-a", "MA")
            .with_category_id(cat.id)
            .with_status(ProductStatus::Active),
    )
    .await;
    create_product(
        &store,
        named("Mug B", "mug-b", "MB").with_category_id(cat.id),
    )
    .await;
    create_product(
        &store,
        named("Mug C", "mug-c", "MC").with_status(ProductStatus::Active),
    )
    .await;
    let filter = ProductFilter::default()
        .with_search("mug")
        .unwrap()
        .with_status(ProductStatus::Active)
        .with_category_id(cat.id);
    let got = in_read!(store, |r| r.products().search(&filter, all()).await).unwrap();
    let names: Vec<_> = got.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        (names, exact(got.total)),
        (vec!["Mug A"], 1),
        "filtered search"
    );
    let n = in_read!(store, |r| r.products().count(&filter).await).unwrap();
    assert_eq!(n, 1, "count with the same filter");
}

/// Search sees updates: after a rename the old name no longer matches and the new one does.
pub async fn search_follows_updates(store: Arc<dyn Store>) {
    let p = create_product(&store, named("Teapot", "teapot", "TP-1")).await;
    let patch = ProductPatch::new()
        .with_name("Kettle")
        .unwrap()
        .with_sku("KT-1")
        .unwrap();
    in_uow!(store, |uow| uow.products().update(p.id, &patch, None).await).unwrap();
    assert_eq!(
        search_names(&store, "teapot").await,
        (vec![], 0),
        "old name"
    );
    assert_eq!(search_names(&store, "tp-1").await, (vec![], 0), "old sku");
    assert_eq!(
        search_names(&store, "kettle").await.0,
        vec!["Kettle"],
        "new name"
    );
    assert_eq!(
        search_names(&store, "kt-1").await.0,
        vec!["Kettle"],
        "new sku"
    );
}

/// Search matches what a reader would call the same text: full Unicode case folding ("STRASSE"
/// finds "Straße", "οδοσ" finds "ΟΔΟΣ" with its final sigma) and canonical equivalence (an "é"
/// typed as "e" + U+0301 finds a precomposed "é", and the other way round); still no accent
/// stripping ("cafe" does not find "café").
pub async fn search_matches_case_folded_and_canonically_equivalent_text(store: Arc<dyn Store>) {
    create_product(&store, named("Große Straße", "strasse", "ST-1")).await;
    create_product(&store, named("ΟΔΟΣ map", "odos", "OD-1")).await;
    create_product(
        &store,
        named("Cafe\u{301} au lait", "cafe-decomposed", "CF-1"),
    )
    .await;
    create_product(&store, named("Caf\u{e9} noir", "cafe-composed", "CF-2")).await;
    create_product(&store, named("Cafeteria tray", "cafeteria", "CF-3")).await;
    let cases: [(&str, &[&str]); 6] = [
        ("STRASSE", &["Große Straße"]),
        ("grosse", &["Große Straße"]),
        ("οδοσ", &["ΟΔΟΣ map"]),
        ("Οδος", &["ΟΔΟΣ map"]),
        ("CAF\u{c9}", &["Cafe\u{301} au lait", "Caf\u{e9} noir"]),
        ("cafe\u{301}", &["Cafe\u{301} au lait", "Caf\u{e9} noir"]),
    ];
    for (query, expected) in cases {
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        let total = expected.len() as u64;
        assert_eq!(
            search_names(&store, query).await,
            (expected, total),
            "search {query:?}"
        );
    }
    assert_eq!(
        search_names(&store, "cafe ").await,
        (Vec::new(), 0),
        "\"cafe \" (no accent folding)"
    );
}

/// Search follows every write that changes what is live or what a row says: a rename through
/// `update_many`, a soft delete, a restore, a delete for good and a purge; a stock move leaves
/// the row found. Each is checked with a query of three characters or more and with a shorter
/// one (a backend may serve the two differently, e.g. through a substring index).
pub async fn search_follows_deletes_restores_and_batch_updates(store: Arc<dyn Store>) {
    let teal = create_product(
        &store,
        named("Teal kettle", "teal", "TK-1").with_stock(5).unwrap(),
    )
    .await;
    let other = create_product(&store, named("Red pot", "red-pot", "RP-9")).await;
    let found = |store: Arc<dyn Store>| async move {
        let long = search_names(&store, "teal kett").await;
        let short = search_names(&store, "ea").await;
        (long, short)
    };
    let teal_only = || (vec!["Teal kettle".to_owned()], 1);
    assert_eq!(
        found(store.clone()).await,
        (teal_only(), teal_only()),
        "created"
    );

    store
        .transfer(&TransferRequest::new(teal.id, other.id, 2))
        .await
        .unwrap();
    assert_eq!(
        found(store.clone()).await,
        (teal_only(), teal_only()),
        "after a stock move"
    );

    assert!(soft_delete_product(&store, teal.id).await);
    let nothing = || (Vec::<String>::new(), 0);
    assert_eq!(
        found(store.clone()).await,
        (nothing(), nothing()),
        "soft-deleted"
    );

    assert!(in_uow!(store, |uow| uow.products().restore(teal.id).await).unwrap());
    assert_eq!(
        found(store.clone()).await,
        (teal_only(), teal_only()),
        "restored"
    );

    let rename = ProductPatch::new().with_name("Teal kettle two").unwrap();
    let changed = in_uow!(store, |uow| uow
        .products()
        .update_many(&[teal.id, other.id], &rename)
        .await)
    .unwrap();
    assert_eq!(changed, 2, "update_many changed both");
    let both = || {
        (
            vec!["Teal kettle two".to_owned(), "Teal kettle two".to_owned()],
            2,
        )
    };
    assert_eq!(found(store.clone()).await, (both(), both()), "both renamed");

    in_uow!(store, |uow| uow.products().hard_delete(other.id).await).unwrap();
    assert!(soft_delete_product(&store, teal.id).await);
    tick().await;
    let purged = in_uow!(store, |uow| uow
        .products()
        .purge_deleted_before(time::now())
        .await)
    .unwrap();
    assert_eq!(purged, 1, "the deleted kettle purged");
    assert_eq!(
        found(store.clone()).await,
        (nothing(), nothing()),
        "deleted for good and purged"
    );
}

/// A search counts its matches exactly up to [`MAX_EXACT_TOTAL`] and says when there are more:
/// with one match more than the bound the total is `AtLeast(MAX_EXACT_TOTAL)` on the first page,
/// `AtLeast` the rows up to a page's end beyond the bound, `AtLeast(MAX_EXACT_TOTAL)` on an
/// empty page past the end, and `Exact` again with another filter that leaves few matches, or
/// once a match is deleted. The pages hold the right rows all along, for a long query and a
/// short one, and so do `list` and `list_after` with the same filters (a backend may read many
/// matches and few differently); `count` stays exact.
pub async fn a_search_total_beyond_the_bound_is_a_lower_bound(store: Arc<dyn Store>) {
    let kitchen = create_category(&store, "kitchen").await;
    let matches = MAX_EXACT_TOTAL as usize + 1;
    let mut rows = Vec::with_capacity(matches);
    for first in (0..matches).step_by(1_000) {
        let news = (first..matches.min(first + 1_000))
            .map(|i| {
                let new = named(
                    &format!("Bulk mug {i}"),
                    &format!("bulk-{i}"),
                    &format!("B-{i}"),
                );
                if i % 4_000 == 7 {
                    new.with_category_id(kitchen.id)
                } else {
                    new
                }
            })
            .collect();
        rows.extend(in_uow!(store, |uow| uow.products().create_many(news).await).unwrap());
    }
    create_product(&store, named("Red plate", "red-plate", "RP-1")).await;
    let rows = sorted(rows);
    let last = rows.len() - 1;
    for q in ["bulk mug", "bu"] {
        let filter = ProductFilter::default().with_search(q).unwrap();
        let search = |page: Page| {
            let (store, filter) = (store.clone(), filter.clone());
            async move { in_read!(store, |r| r.products().search(&filter, page).await).unwrap() }
        };
        let first = search(Page::new(20, 0).unwrap()).await;
        assert_eq!(
            (ids(&first.items), first.total),
            (ids(&rows[..20]), Total::AtLeast(MAX_EXACT_TOTAL)),
            "{q:?}: the first page"
        );
        let beyond = search(Page::new(20, MAX_EXACT_TOTAL as i64).unwrap()).await;
        assert_eq!(
            (ids(&beyond.items), beyond.total),
            (ids(&rows[last..]), Total::AtLeast(MAX_EXACT_TOTAL + 1)),
            "{q:?}: the page holding the last match"
        );
        let past = search(Page::new(20, MAX_EXACT_TOTAL as i64 + 1).unwrap()).await;
        assert_eq!(
            (past.items.len(), past.total),
            (0, Total::AtLeast(MAX_EXACT_TOTAL)),
            "{q:?}: a page past the end"
        );
        let counted = in_read!(store, |r| r.products().count(&filter).await).unwrap();
        assert_eq!(counted, MAX_EXACT_TOTAL + 1, "{q:?}: count is exact");
        let limit = Limit::new(20).unwrap();
        let keyset = in_read!(store, |r| r
            .products()
            .list_after(&filter, None, limit)
            .await)
        .unwrap();
        assert_eq!(ids(&keyset.items), ids(&rows[..20]), "{q:?}: a keyset page");
        let middle = Page::new(20, 5_000).unwrap();
        let listed = in_read!(store, |r| r.products().list(&filter, middle).await).unwrap();
        assert_eq!(
            ids(&listed),
            ids(&rows[5_000..5_020]),
            "{q:?}: an offset page"
        );

        let in_kitchen = filter.clone().with_category_id(kitchen.id);
        let few = in_read!(store, |r| r.products().search(&in_kitchen, all()).await).unwrap();
        let expected: Vec<_> = rows
            .iter()
            .filter(|p| p.category_id == Some(kitchen.id))
            .cloned()
            .collect();
        assert_eq!(
            (ids(&few.items), few.total),
            (ids(&expected), Total::Exact(3)),
            "{q:?}: with a category, few matches"
        );
        let after = Some(expected[0].cursor());
        let keyset = in_read!(store, |r| r
            .products()
            .list_after(&in_kitchen, after, Limit::new(20).unwrap())
            .await)
        .unwrap();
        assert_eq!(
            ids(&keyset.items),
            ids(&expected[1..]),
            "{q:?}: with a category, a keyset page after the first match"
        );
    }
    assert!(soft_delete_product(&store, rows[0].id).await);
    let filter = ProductFilter::default().with_search("bulk mug").unwrap();
    let page = Page::new(20, 0).unwrap();
    let after = in_read!(store, |r| r.products().search(&filter, page).await).unwrap();
    assert_eq!(
        (ids(&after.items), after.total),
        (ids(&rows[1..21]), Total::Exact(MAX_EXACT_TOTAL)),
        "one match deleted: exactly the bound"
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_search_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) search:
        search_is_case_insensitive,
        search_folds_non_ascii_letters,
        wildcards_in_the_query_are_literal,
        search_matches_name_sku_and_description,
        search_total_is_correct_while_paging,
        search_combines_with_status_and_category,
        search_follows_updates,
        search_matches_case_folded_and_canonically_equivalent_text,
        search_follows_deletes_restores_and_batch_updates,
        a_search_total_beyond_the_bound_is_a_lower_bound,
    } };
}

//! Optimistic concurrency: every write bumps `version`; an update with an expected version that
//! is no longer current is `StaleVersion` and changes nothing.

use std::sync::Arc;

use stockroom_core::{EntityId, EntityKind, Error, ProductPatch, StockDelta, Store};

use crate::support::*;

/// An update with the current version succeeds and returns the next version.
pub async fn update_with_the_current_version_succeeds(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let patch = ProductPatch::new().with_name("Renamed").unwrap();
    let u = in_uow!(store, |uow| uow
        .products()
        .update(p.id, &patch, Some(1))
        .await)
    .unwrap();
    assert_eq!(
        (u.version, u.name.as_str()),
        (2, "Renamed"),
        "updated {u:?}"
    );
}

/// An update with a stale version is `StaleVersion{expected, actual}` and changes nothing.
pub async fn update_with_a_stale_version_is_rejected(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let first = ProductPatch::new().with_name("First").unwrap();
    let winner = in_uow!(store, |uow| uow
        .products()
        .update(p.id, &first, Some(1))
        .await)
    .unwrap();
    let second = ProductPatch::new().with_name("Second").unwrap();
    let result = in_uow!(store, |uow| uow
        .products()
        .update(p.id, &second, Some(1))
        .await);
    match result {
        Err(Error::StaleVersion {
            entity,
            id,
            expected,
            actual,
        }) => {
            assert_eq!(
                (entity, id, expected, actual),
                (EntityKind::PRODUCT, EntityId::from(p.id), 1, 2),
                "stale version error"
            );
        }
        other => panic!("expected StaleVersion, got {other:?}"),
    }
    let now = get_product(&store, p.id).await;
    assert_eq!(
        now.as_ref(),
        Some(&winner),
        "row after a stale update: {now:?}"
    );
}

/// A version from the future is stale too.
pub async fn update_with_a_future_version_is_rejected(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let patch = ProductPatch::new().with_name("X").unwrap();
    match in_uow!(store, |uow| uow
        .products()
        .update(p.id, &patch, Some(7))
        .await)
    {
        Err(Error::StaleVersion {
            expected: 7,
            actual: 1,
            ..
        }) => {}
        other => panic!("expected StaleVersion {{ expected: 7, actual: 1 }}, got {other:?}"),
    }
    assert_eq!(get_product(&store, p.id).await, Some(p), "row changed");
}

/// Every write that changes a row bumps its version by one and moves `updated_at` forward:
/// update, adjust_stock, soft_delete, restore, update_many.
pub async fn every_write_bumps_the_version(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 5)).await;
    let mut last = (p.version, p.updated_at);
    let check = |step: &str, version: i64, updated_at, last: &mut (i64, _)| {
        assert_eq!(
            version,
            last.0 + 1,
            "{step}: version {version} after {}",
            last.0
        );
        assert!(
            updated_at > last.1,
            "{step}: updated_at {updated_at:?} !> {:?}",
            last.1
        );
        *last = (version, updated_at);
    };
    tick().await;
    let patch = ProductPatch::new().with_name("B").unwrap();
    let u = in_uow!(store, |uow| uow.products().update(p.id, &patch, None).await).unwrap();
    check("update", u.version, u.updated_at, &mut last);
    tick().await;
    let delta = StockDelta::new(-2).unwrap();
    let u = in_uow!(store, |uow| uow.products().adjust_stock(p.id, delta).await).unwrap();
    check("adjust_stock", u.version, u.updated_at, &mut last);
    tick().await;
    assert!(soft_delete_product(&store, p.id).await);
    let u = trashed_product(&store, p.id).await.unwrap();
    check("soft_delete", u.version, u.updated_at, &mut last);
    tick().await;
    assert!(in_uow!(store, |uow| uow.products().restore(p.id).await).unwrap());
    let u = get_product(&store, p.id).await.unwrap();
    check("restore", u.version, u.updated_at, &mut last);
    tick().await;
    let n = in_uow!(store, |uow| uow
        .products()
        .update_many(&[p.id], &patch)
        .await)
    .unwrap();
    assert_eq!(n, 1);
    let u = get_product(&store, p.id).await.unwrap();
    check("update_many", u.version, u.updated_at, &mut last);
}

/// Two writers that read the same version: the first update wins, the second is stale, in the
/// order they commit.
pub async fn the_second_of_two_writers_is_stale(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let seen_by_ann = get_product(&store, p.id).await.unwrap().version;
    let seen_by_bob = get_product(&store, p.id).await.unwrap().version;
    let ann = ProductPatch::new().with_name("Ann's").unwrap();
    let bob = ProductPatch::new().with_name("Bob's").unwrap();
    in_uow!(store, |uow| uow
        .products()
        .update(p.id, &ann, Some(seen_by_ann))
        .await)
    .unwrap();
    let result = in_uow!(store, |uow| uow
        .products()
        .update(p.id, &bob, Some(seen_by_bob))
        .await);
    assert!(
        matches!(
            result,
            Err(Error::StaleVersion {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "bob got {result:?}"
    );
    let name = get_product(&store, p.id).await.unwrap().name;
    assert_eq!(name, "Ann's", "the stale write went through");
}

/// An empty patch changes no field but still bumps the version and `updated_at` (it is a
/// write: "touch").
pub async fn empty_patch_still_bumps_the_version(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    tick().await;
    let patch = ProductPatch::new();
    let u = in_uow!(store, |uow| uow
        .products()
        .update(p.id, &patch, Some(1))
        .await)
    .unwrap();
    assert_eq!(
        (&u.name, &u.slug, &u.sku, u.stock, u.version),
        (&p.name, &p.slug, &p.sku, p.stock, 2),
        "after an empty patch: {u:?}"
    );
    assert!(
        u.updated_at > p.updated_at,
        "updated_at {:?} !> {:?}",
        u.updated_at,
        p.updated_at
    );
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_versioning_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) versioning:
        update_with_the_current_version_succeeds,
        update_with_a_stale_version_is_rejected,
        update_with_a_future_version_is_rejected,
        every_write_bumps_the_version,
        the_second_of_two_writers_is_stale,
        empty_patch_still_bumps_the_version,
    } };
}

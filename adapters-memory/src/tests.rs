//! The tricky parts of the adapter: transactions, savepoints, the writer slot, all-or-nothing
//! writes. The shared behaviour of every port is checked by the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use stockroom_core::{
    Constraint, Error, NewCategory, NewProduct, Page, ProductFilter, ProductPatch, StockDelta,
    Store, StoreConfig, UnitOfWork,
};

use crate::MemoryStore;

fn mug(n: u32) -> NewProduct {
    NewProduct::new(
        &format!("Mug {n}"),
        &format!("mug-{n}"),
        &format!("MUG-{n}"),
    )
    .unwrap()
}

async fn product_count(store: &MemoryStore) -> u64 {
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap()
}

async fn slugs(uow: &mut Box<dyn UnitOfWork>) -> Vec<String> {
    let page = Page::new(100, 0).unwrap();
    let rows = uow
        .products()
        .list(&ProductFilter::default(), page)
        .await
        .unwrap();
    rows.into_iter().map(|p| p.slug).collect()
}

#[tokio::test]
async fn writes_are_invisible_to_others_until_commit() {
    let store = MemoryStore::new();
    let mut before = store.read().await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let created = uow.products().create(mug(1)).await.unwrap();
    assert_eq!(before.products().get(created.id).await.unwrap(), None);
    assert_eq!(
        uow.products().get(created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(product_count(&store).await, 0, "visible before commit");
    uow.commit().await.unwrap();
    assert_eq!(product_count(&store).await, 1);
    // Like a SQL connection outside a transaction, an older session sees the commit too.
    assert_eq!(
        before.products().get(created.id).await.unwrap(),
        Some(created)
    );
}

#[tokio::test]
async fn drop_and_rollback_leave_no_trace_and_free_the_writer() {
    let store = MemoryStore::with_config(
        StoreConfig::new("memory://").with_acquire_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let mut uow = store.begin().await.unwrap();
    uow.products().create(mug(1)).await.unwrap();
    drop(uow);
    assert_eq!(product_count(&store).await, 0, "drop kept the write");

    let mut uow = store.begin().await.expect("drop released the writer slot");
    uow.products().create(mug(2)).await.unwrap();
    uow.rollback().await.unwrap();
    assert_eq!(product_count(&store).await, 0, "rollback kept the write");
    store
        .begin()
        .await
        .expect("rollback released the writer slot");
}

#[tokio::test]
async fn savepoints_roll_back_only_their_part() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    uow.products().create(mug(1)).await.unwrap();
    let outer = uow.savepoint().await.unwrap();
    uow.products().create(mug(2)).await.unwrap();
    let inner = uow.savepoint().await.unwrap();
    assert_eq!((outer.depth(), inner.depth()), (1, 2));
    uow.products().create(mug(3)).await.unwrap();
    uow.rollback_to(inner).await.unwrap();
    assert_eq!(slugs(&mut uow).await, ["mug-1", "mug-2"]);

    let inner = uow.savepoint().await.unwrap();
    assert_eq!(inner.depth(), 2, "rollback_to closed the inner savepoint");
    uow.products().create(mug(4)).await.unwrap();
    uow.release(inner).await.unwrap();
    assert_eq!(slugs(&mut uow).await, ["mug-1", "mug-2", "mug-4"]);

    uow.rollback_to(outer).await.unwrap();
    assert_eq!(slugs(&mut uow).await, ["mug-1"]);
    uow.commit().await.unwrap();
    assert_eq!(product_count(&store).await, 1);
}

#[tokio::test]
async fn rolling_back_to_an_outer_savepoint_closes_the_inner_ones() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let outer = uow.savepoint().await.unwrap();
    let inner = uow.savepoint().await.unwrap();
    uow.products().create(mug(1)).await.unwrap();
    uow.rollback_to(outer).await.unwrap();
    let err = uow.release(inner).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Validation {
                field: "savepoint",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(slugs(&mut uow).await.is_empty());

    // A savepoint of another unit of work is refused too, and changes nothing.
    let mut other = MemoryStore::new().begin().await.unwrap();
    let foreign = other.savepoint().await.unwrap();
    uow.products().create(mug(2)).await.unwrap();
    assert!(uow.rollback_to(foreign).await.is_err());
    assert_eq!(slugs(&mut uow).await, ["mug-2"]);
}

#[tokio::test]
async fn begin_times_out_as_unavailable_while_another_unit_of_work_writes() {
    let store = MemoryStore::with_config(
        StoreConfig::new("memory://").with_acquire_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let holder = store.begin().await.unwrap();
    let err = store.begin().await.err().expect("the writer slot is taken");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    // Reads never wait for the writer.
    store.read().await.unwrap();
    holder.commit().await.unwrap();
    store
        .begin()
        .await
        .expect("commit released the writer slot");
}

#[tokio::test]
async fn a_waiting_begin_gets_the_slot_when_it_is_released() {
    let store = MemoryStore::with_config(
        StoreConfig::new("memory://").with_acquire_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let mut holder = store.begin().await.unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut uow = store.begin().await?;
            let seen = uow.products().by_slug("mug-1").await?;
            uow.commit().await?;
            Ok::<_, Error>(seen)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "two units of work ran at once");
    holder.products().create(mug(1)).await.unwrap();
    holder.commit().await.unwrap();
    let seen = waiter.await.unwrap().unwrap();
    assert!(seen.is_some(), "the next unit of work missed the commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_units_of_work_lose_no_update() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let id = uow.products().create(mug(1)).await.unwrap().id;
    uow.commit().await.unwrap();

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let mut uow = store.begin().await.unwrap();
                    let stock = uow.products().require(id).await.unwrap().stock;
                    tokio::task::yield_now().await;
                    let after = uow
                        .products()
                        .adjust_stock(id, StockDelta::new(1).unwrap())
                        .await
                        .unwrap();
                    assert_eq!(after.stock, stock + 1, "another writer interleaved");
                    uow.commit().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut read = store.read().await.unwrap();
    let product = read.products().require(id).await.unwrap();
    assert_eq!((product.stock, product.version), (400, 401));
}

#[tokio::test]
async fn restore_fails_when_a_live_row_took_its_slug_and_changes_nothing() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let old = uow
        .categories()
        .create(NewCategory::new("Mugs", "mugs").unwrap())
        .await
        .unwrap();
    assert!(uow.categories().soft_delete(old.id).await.unwrap());
    let deleted = uow
        .categories()
        .list_deleted(Page::default())
        .await
        .unwrap();
    uow.categories()
        .create(NewCategory::new("New mugs", "mugs").unwrap())
        .await
        .unwrap();

    let err = uow.categories().restore(old.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                constraint: Constraint::CATEGORY_SLUG
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        uow.categories()
            .list_deleted(Page::default())
            .await
            .unwrap(),
        deleted,
        "the failed restore changed the row"
    );
    assert_eq!(
        uow.categories()
            .by_slug("mugs")
            .await
            .unwrap()
            .unwrap()
            .name,
        "New mugs"
    );
}

#[tokio::test]
async fn restored_row_takes_back_its_unique_values() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let row = uow.products().create(mug(1)).await.unwrap();
    uow.products().soft_delete(row.id).await.unwrap();
    assert!(uow.products().restore(row.id).await.unwrap());
    let err = uow.products().create(mug(1)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let restored = uow.products().by_sku("MUG-1").await.unwrap().unwrap();
    assert_eq!((restored.id, restored.version), (row.id, 3));
}

#[tokio::test]
async fn create_many_is_all_or_nothing_even_for_duplicates_inside_the_batch() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let err = uow
        .products()
        .create_many(vec![mug(1), mug(2), mug(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                constraint: Constraint::PRODUCT_SLUG
            }
        ),
        "{err:?}"
    );
    assert!(
        slugs(&mut uow).await.is_empty(),
        "a failed batch inserted rows"
    );

    let rows = uow
        .products()
        .create_many(vec![mug(3), mug(1), mug(2)])
        .await
        .unwrap();
    let returned: Vec<_> = rows.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(returned, ["mug-3", "mug-1", "mug-2"], "not in input order");
    assert!(rows.iter().all(|p| p.created_at == rows[0].created_at));
}

#[tokio::test]
async fn update_many_is_all_or_nothing() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let rows = uow
        .products()
        .create_many(vec![mug(1), mug(2)])
        .await
        .unwrap();
    let ids: Vec<_> = rows.iter().map(|p| p.id).collect();
    // Both rows cannot take one slug: the second update conflicts with the first.
    let patch = ProductPatch::new().with_slug("same").unwrap();
    let err = uow.products().update_many(&ids, &patch).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(uow.products().get_many(&ids).await.unwrap(), rows);

    let patch = ProductPatch::new().with_name("Renamed").unwrap();
    let twice = [ids[0], ids[0], ids[1]];
    assert_eq!(uow.products().update_many(&twice, &patch).await.unwrap(), 2);
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let store = MemoryStore::new();
    let uow = store.begin().await.unwrap();
    store.close().await;
    for err in [
        store.begin().await.err().unwrap(),
        store.read().await.err().unwrap(),
        store.health().await.unwrap_err(),
        uow.commit().await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn connect_accepts_only_memory_urls() {
    let store = MemoryStore::connect(&StoreConfig::new("memory://anything")).unwrap();
    assert_eq!(store.backend(), stockroom_core::Backend::Memory);
    store.health().await.unwrap();
    for url in ["sqlite://x.db", "memory", ""] {
        let err = MemoryStore::connect(&StoreConfig::new(url)).unwrap_err();
        assert!(
            matches!(err, Error::Validation { field: "url", .. }),
            "{url}: {err:?}"
        );
    }
    let _: Arc<dyn Store> = Arc::new(store);
}

#[test]
fn an_uncontended_begin_needs_no_timer() {
    // A runtime without the time driver: only a contended begin waits on a timer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = MemoryStore::new();
        let mut uow = store.begin().await.unwrap();
        uow.products().create(mug(1)).await.unwrap();
        uow.commit().await.unwrap();
        assert_eq!(product_count(&store).await, 1);
    });
}

#[tokio::test]
async fn update_many_checks_references_only_when_a_row_would_change() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let row = uow.products().create(mug(1)).await.unwrap();
    let gone = uow
        .categories()
        .create(NewCategory::new("Gone", "gone").unwrap())
        .await
        .unwrap();
    uow.categories().soft_delete(gone.id).await.unwrap();
    let patch = ProductPatch::new().with_category(Some(gone.id));

    let err = uow
        .products()
        .update_many(&[row.id], &patch)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    // No live row among the ids: nothing to check, nothing changed (as in SQL).
    uow.products().soft_delete(row.id).await.unwrap();
    assert_eq!(
        uow.products().update_many(&[row.id], &patch).await.unwrap(),
        0
    );
    assert_eq!(uow.products().update_many(&[], &patch).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_half_a_commit() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let rows = uow
        .products()
        .create_many(vec![
            mug(1).with_stock(500).unwrap(),
            mug(2).with_stock(500).unwrap(),
        ])
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let ids = [rows[0].id, rows[1].id];

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let (from, to) = if (w + i) % 2 == 0 { (0, 1) } else { (1, 0) };
                    let mut uow = store.begin().await.unwrap();
                    let mut products = uow.products();
                    products
                        .adjust_stock(ids[from], StockDelta::new(-3).unwrap())
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                    products
                        .adjust_stock(ids[to], StockDelta::new(3).unwrap())
                        .await
                        .unwrap();
                    uow.commit().await.unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut read = store.read().await.unwrap();
                for _ in 0..200 {
                    let both = read.products().get_many(&ids).await.unwrap();
                    let total: i64 = both.iter().map(|p| p.stock).sum();
                    assert_eq!(total, 1000, "a read saw half a commit: {both:?}");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.unwrap();
    }
    let mut read = store.read().await.unwrap();
    let both = read.products().get_many(&ids).await.unwrap();
    assert_eq!(both[0].version + both[1].version, 2 + 400);
}

/// Search keeps an earlier index and checks the rows written since one by one: whatever the
/// interleaving of writes (new rows, renames, soft deletes, restores, deletes for good) and
/// searches, and across the point where it gives up the earlier index and builds a new one, a
/// search finds exactly the live rows whose document holds the query, in list order.
#[tokio::test]
async fn search_after_any_writes_finds_what_a_scan_finds() {
    let store = MemoryStore::new();
    let mut ids = Vec::new();
    let mut uow = store.begin().await.unwrap();
    for n in 0..300 {
        ids.push(uow.products().create(mug(n)).await.unwrap().id);
    }
    uow.commit().await.unwrap();
    let filter = ProductFilter::default().with_search("teal").unwrap();
    let all = Page::new(stockroom_core::MAX_LIMIT.into(), 0).unwrap();
    // A deterministic walk over the writes; 400 of them, so the earlier index is dropped and
    // rebuilt along the way (past a sixteenth of the table, 64 rows here).
    let mut state = 0x2545_f491_u64;
    for step in 0..400u32 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let id = ids[(state >> 33) as usize % ids.len()];
        let mut uow = store.begin().await.unwrap();
        match (state >> 20) % 5 {
            0 => {
                let name = format!("Teal mug {step}");
                let patch = ProductPatch::new().with_name(&name).unwrap();
                let _ = uow.products().update(id, &patch, None).await;
            }
            1 => {
                let patch = ProductPatch::new().with_name("Plain mug").unwrap();
                let _ = uow.products().update(id, &patch, None).await;
            }
            2 => {
                let _ = uow.products().soft_delete(id).await;
            }
            3 => {
                let _ = uow.products().restore(id).await;
            }
            _ => {
                let new = NewProduct::new(
                    &format!("Teal new {step}"),
                    &format!("teal-{step}"),
                    &format!("TEAL-{step}"),
                )
                .unwrap();
                ids.push(uow.products().create(new).await.unwrap().id);
            }
        }
        uow.commit().await.unwrap();
        if step % 3 != 0 {
            continue; // several writes between some searches
        }
        let mut read = store.read().await.unwrap();
        let found = read.products().search(&filter, all).await.unwrap();
        let listed = read
            .products()
            .list(&ProductFilter::default(), all)
            .await
            .unwrap();
        let expected: Vec<_> = listed
            .into_iter()
            .filter(|p| {
                let document = stockroom_core::adapter::search_document(
                    &p.name,
                    &p.sku,
                    p.description.as_deref(),
                );
                document.contains("teal")
            })
            .map(|p| p.id)
            .collect();
        let got: Vec<_> = found.items.iter().map(|p| p.id).collect();
        assert_eq!(got, expected, "search after step {step}");
        assert_eq!(
            found.total,
            stockroom_core::Total::Exact(expected.len() as u64),
            "total after step {step}"
        );
    }
}

#[test]
fn a_configuration_with_read_replicas_is_unsupported() {
    let config = StoreConfig::new("memory://").with_replica_url("postgres://replica/shop");
    let refused = MemoryStore::connect(&config);
    assert!(
        matches!(
            refused,
            Err(Error::Unsupported {
                backend: "memory",
                ..
            })
        ),
        "{refused:?}"
    );
}

//! What is particular to the SQLite adapter: the writer slot, rollback of abandoned
//! transactions, parallel reads under WAL, the in-memory form, the schema and its settings,
//! where calls run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use stockroom_core::schema::Catalog;
use stockroom_core::{
    Constraint, Error, Limit, NewProduct, Page, ProductFilter, RetryPolicy, Store, StoreConfig,
    StoreExt, TransferRequest, UnitOfWork,
};
use stockroom_sqlite::{SqliteOptions, SqliteStore};

mod support;

use support::{create_products, TempDb};

/// A fresh database file for one test.
fn temp_db() -> TempDb {
    TempDb::new("stockroom-sqlite-test")
}

fn product(i: usize) -> NewProduct {
    NewProduct::new(
        &format!("Product {i}"),
        &format!("p-{i}"),
        &format!("SKU-{i}"),
    )
    .unwrap()
    .with_stock(10)
    .unwrap()
}

async fn count_products(store: &dyn Store) -> u64 {
    count_products_result(store).await.expect("count")
}

/// The products a unit of work sees.
async fn count_in(uow: &mut dyn UnitOfWork) -> stockroom_core::Result<u64> {
    uow.products().count(&ProductFilter::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn begin_waits_for_the_writer_then_fails_as_unavailable() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config().with_acquire_timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    let held = store.begin().await.unwrap();
    let started = Instant::now();
    let second = store.begin().await;
    assert!(
        matches!(second, Err(Error::Unavailable { .. })),
        "{:?}",
        second.err()
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The writer is handed over as soon as it is free.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.begin().await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.rollback().await.unwrap();
    waiter
        .await
        .unwrap()
        .expect("begin after the writer was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_held_by_another_process_is_transient() {
    let db = temp_db();
    // The busy timeout, from the URL's query.
    let mut config = db.config();
    config.url.push_str("?busy_timeout_ms=100");
    let store = SqliteStore::connect(&config).await.unwrap();
    let other = Connection::open(db.path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The transaction opens with the first statement, which waits the busy timeout.
    let mut uow = store
        .begin()
        .await
        .expect("the in-process writer slot is free");
    let started = Instant::now();
    let result = uow.products().create(product(1)).await;
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    other.execute_batch("ROLLBACK").unwrap();
    // The same unit of work opens its transaction on its next statement.
    uow.products()
        .create(product(1))
        .await
        .expect("create once the other writer is done");
    uow.commit().await.unwrap();
    assert_eq!(count_products(&store).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_unit_of_work_rolls_back_and_frees_the_writer() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    uow.products().create(product(1)).await.unwrap();
    drop(uow);
    let mut uow = store.begin().await.expect("the writer is free again");
    assert_eq!(count_in(uow.as_mut()).await.unwrap(), 0);
    uow.commit().await.unwrap();
    assert_eq!(count_products(&store).await, 0);
}

/// A call abandoned mid-way (its future dropped by a timeout) leaves the unit of work without a
/// connection, and the connection goes back with its transaction rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_call_never_leaks_its_transaction() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let many: Vec<_> = (0..20_000).map(product).collect();
    let cancelled =
        tokio::time::timeout(Duration::from_millis(1), uow.products().create_many(many)).await;
    assert!(cancelled.is_err(), "the call finished before the timeout");
    let after = count_in(uow.as_mut()).await;
    assert!(matches!(after, Err(Error::Unavailable { .. })), "{after:?}");
    drop(uow);
    let mut uow = store.begin().await.expect("begin after the cancelled call");
    assert_eq!(count_in(uow.as_mut()).await.unwrap(), 0);
    uow.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_run_beside_an_open_write_transaction_and_see_only_commits() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let committed = uow.products().create(product(1)).await.unwrap();
    uow.commit().await.unwrap();

    let mut uow = store.begin().await.unwrap();
    let pending = uow.products().create(product(2)).await.unwrap();
    // Two read sessions at once, while the writer holds its transaction open.
    let (mut a, mut b) = (store.read().await.unwrap(), store.read().await.unwrap());
    let (mut a_products, mut b_products) = (a.products(), b.products());
    let (seen, unseen) = tokio::join!(a_products.get(committed.id), b_products.get(pending.id));
    assert_eq!(seen.unwrap().map(|p| p.id), Some(committed.id));
    assert_eq!(
        unseen.unwrap(),
        None,
        "an uncommitted row leaked to a reader"
    );
    uow.commit().await.unwrap();
    assert!(a.products().get(pending.id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_form_shares_one_database_between_connections() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let store = SqliteStore::connect(&StoreConfig::new(url)).await.unwrap();
        let other = SqliteStore::connect(&StoreConfig::new(url)).await.unwrap();
        let mut uow = store.begin().await.unwrap();
        let p = uow.products().create(product(1)).await.unwrap();
        uow.commit().await.unwrap();
        // product_details reads on three connections at once.
        let details = store
            .product_details(p.id, Limit::new(5).unwrap())
            .await
            .unwrap()
            .expect("details");
        assert_eq!(details.product, p);
        assert_eq!(
            count_products(&other).await,
            0,
            "{url}: two stores share a database"
        );
        store.close().await;
        other.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_many_beyond_one_batch_is_one_time_in_order_and_all_or_nothing() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let created = uow
        .products()
        .create_many((0..5_000).map(product).collect())
        .await
        .unwrap();
    assert_eq!(created.len(), 5_000);
    assert!(created
        .iter()
        .all(|p| p.created_at == created[0].created_at));
    assert!(created
        .iter()
        .enumerate()
        .all(|(i, p)| p.sku == format!("SKU-{i}")));
    uow.commit().await.unwrap();

    // A duplicate in the last batch: nothing of the earlier batches stays.
    let mut uow = store.begin().await.unwrap();
    let mut batch: Vec<_> = (5_000..10_000).map(product).collect();
    batch.push(product(0));
    let err = uow.products().create_many(batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                constraint: Constraint::PRODUCT_SKU | Constraint::PRODUCT_SLUG
            }
        ),
        "{err:?}"
    );
    uow.commit().await.unwrap();
    assert_eq!(count_products(&store).await, 5_000);
    let mut read = store.read().await.unwrap();
    let page = read
        .products()
        .list(&ProductFilter::default(), Page::new(1_000, 4_500).unwrap())
        .await
        .unwrap();
    assert_eq!(page.len(), 500);
    assert_eq!(page[0].sku, "SKU-4500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_store_is_unavailable() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    store.health().await.unwrap();
    let mut running = store.begin().await.unwrap();
    running.products().create(product(1)).await.unwrap();
    let mut pending = store.read().await.unwrap();
    store.close().await;
    // What was running when the store closed fails, and its writes are gone.
    let err = running.products().create(product(2)).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(matches!(
        running.commit().await,
        Err(Error::Unavailable { .. })
    ));
    let err = pending
        .products()
        .count(&ProductFilter::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(matches!(
        store.begin().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(store.read().await, Err(Error::Unavailable { .. })));
    assert!(matches!(
        store.health().await,
        Err(Error::Unavailable { .. })
    ));
    drop(pending);
    let reopened = SqliteStore::connect(&db.config()).await.unwrap();
    assert_eq!(
        count_products(&reopened).await,
        0,
        "a closed store's pending write stayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schema_is_migrated_once_with_its_named_indexes_in_wal_mode() {
    let db = temp_db();
    db.connect_and_close().await;
    // Connecting again finds the schema current.
    db.connect_and_close().await;
    let conn = Connection::open(db.path()).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM stockroom_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    // user_version is the application's: Stockroom never sets it.
    let user_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(user_version, 0);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Each unique rule of Stockroom's entities, by the index its declaration names.
    let catalog = Catalog::new(&[]).unwrap();
    for entry in catalog.entries() {
        for rule in entry.schema.unique {
            let found: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?)",
                    [rule.index],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(found, "no index named {} for {}", rule.index, rule.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_can_be_skipped() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config().with_run_migrations(false))
        .await
        .unwrap();
    let result = count_products_result(&store).await;
    assert!(matches!(result, Err(Error::Backend { .. })), "{result:?}");
    let conn = Connection::open(db.path()).unwrap();
    let bookkeeping: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'stockroom_migrations')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!bookkeeping, "migrations ran although turned off");
}

async fn count_products_result(store: &dyn Store) -> stockroom_core::Result<u64> {
    let mut read = store.read().await?;
    read.products().count(&ProductFilter::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_urls_are_validation_errors() {
    for url in [
        "postgres://localhost/db",
        "sqlite://",
        "sqlite://x.db?mode=ro",
    ] {
        let result = SqliteStore::connect(&StoreConfig::new(url)).await;
        assert!(
            matches!(result, Err(Error::Validation { field: "url", .. })),
            "{url}: {:?}",
            result.err()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_transfers_keep_the_total() {
    let db = temp_db();
    let store = Arc::new(SqliteStore::connect(&db.config()).await.unwrap());
    let ids = create_products(&*store, (0..6).map(product).collect()).await;
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let store = Arc::clone(&store);
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut applied = 0u64;
            for i in 0..25usize {
                let (a, b) = ((t + i) % ids.len(), (t + 2 * i + 1) % ids.len());
                if a == b {
                    continue;
                }
                let request = stockroom_core::TransferRequest::new(ids[a], ids[b], 3);
                match store.transfer(&request).await {
                    Ok(_) => applied += 1,
                    Err(Error::InsufficientStock { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    let mut read = store.read().await.unwrap();
    let products = read.products().get_many(&ids).await.unwrap();
    assert_eq!(products.iter().map(|p| p.stock).sum::<i64>(), 60);
    assert!(products.iter().all(|p| p.stock >= 0));
    assert_eq!(read.movements().count().await.unwrap(), applied);
}

// ---- Where calls run --------------------------------------------------------------------------

/// The file's write-ahead log, beside it.
fn wal_path(db: &TempDb) -> std::path::PathBuf {
    let mut path = db.path().as_os_str().to_owned();
    path.push("-wal");
    path.into()
}

/// A write lock held by another connection is waited for off the async threads: on a
/// current-thread runtime, the task that releases the lock runs while a transfer (with no retry)
/// and a unit of work wait for it. Waiting on the async thread would starve that task until the
/// busy timeout, then fail.
#[tokio::test(flavor = "current_thread")]
async fn a_write_lock_held_elsewhere_is_waited_for_off_the_async_thread() {
    let db = temp_db();
    let options = SqliteOptions::from_config(&db.config())
        .unwrap()
        .with_busy_timeout(Duration::from_secs(10));
    let store = SqliteStore::connect_with(options).await.unwrap();
    let ids = create_products(&store, (0..2).map(product).collect()).await;
    let hold_the_lock = || {
        let other = Connection::open(db.path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            other.execute_batch("ROLLBACK").unwrap();
        })
    };

    let released = hold_the_lock();
    let request = TransferRequest::new(ids[0], ids[1], 4);
    store
        .transfer_with(&request, &RetryPolicy::none())
        .await
        .expect("the transfer waits for the lock");
    released.await.unwrap();

    let released = hold_the_lock();
    let mut uow = store.begin().await.unwrap();
    uow.products()
        .create(product(3))
        .await
        .expect("the first statement waits for the lock");
    uow.commit().await.unwrap();
    released.await.unwrap();

    let mut read = store.read().await.unwrap();
    let stocks: Vec<i64> = read
        .products()
        .get_many(&ids)
        .await
        .unwrap()
        .iter()
        .map(|p| p.stock)
        .collect();
    assert_eq!(stocks, [6, 14]);
    assert_eq!(count_products(&store).await, 3);
}

/// Short calls run inline and never yield inside, so each takes a unit of the task's tokio
/// budget: a task making many in a row yields now and then, and the other tasks of its thread
/// get to run before it is done.
#[tokio::test(flavor = "current_thread")]
async fn a_task_making_many_short_calls_yields_to_the_others() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let ids = create_products(&store, vec![product(1)]).await;
    let mut read = store.read().await.unwrap();
    read.products().get(ids[0]).await.unwrap(); // the read connection is open
    let other_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&other_ran);
    let other = tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
    let mut calls = 0;
    while !other_ran.load(std::sync::atomic::Ordering::SeqCst) && calls < 10_000 {
        read.products().get(ids[0]).await.unwrap();
        calls += 1;
    }
    assert!(
        other_ran.load(std::sync::atomic::Ordering::SeqCst),
        "the other task never ran during {calls} reads"
    );
    other.await.unwrap();
}

/// The writer's automatic checkpoint is taken over (it runs after the commit, on the blocking
/// pool) and still keeps the WAL as short as `wal_autocheckpoint` says: without it, 300
/// transfers would leave some 1,000 frames (4 MiB) in the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_as_wal_autocheckpoint_says() {
    let db = temp_db();
    let options = SqliteOptions::from_config(&db.config())
        .unwrap()
        .with_pragma("wal_autocheckpoint", "16");
    let store = SqliteStore::connect_with(options).await.unwrap();
    let ids = create_products(&store, (0..2).map(product).collect()).await;
    for i in 0..300 {
        let (from, to) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        store
            .transfer(&TransferRequest::new(ids[from], ids[to], 1))
            .await
            .unwrap();
    }
    let wal = std::fs::metadata(wal_path(&db)).unwrap().len();
    assert!(wal < 512 * 1024, "the WAL grew to {wal} bytes");
    store.close().await;
}

/// With `Durability::Full` commits wait for the disk, so they (and a stock move, which commits)
/// run on the blocking pool; what they write lands all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_full_durability_moves_and_commits_land() {
    let db = temp_db();
    let mut config = db.config();
    config.url.push_str("?synchronous=full");
    let store = SqliteStore::connect(&config).await.unwrap();
    let ids = create_products(&store, (0..2).map(product).collect()).await;
    store
        .transfer(&TransferRequest::new(ids[0], ids[1], 3))
        .await
        .unwrap();
    let mut read = store.read().await.unwrap();
    let stock = read.products().get(ids[1]).await.unwrap().map(|p| p.stock);
    assert_eq!(stock, Some(13));
    assert_eq!(read.movements().count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_configuration_with_read_replicas_is_unsupported() {
    let db = TempDb::new("replicas");
    let config = db.config().with_replica_url("postgres://replica/shop");
    let refused = SqliteStore::connect(&config).await;
    assert!(
        matches!(
            refused,
            Err(stockroom_core::Error::Unsupported {
                backend: "sqlite",
                ..
            })
        ),
        "{:?}",
        refused.map(|_| ())
    );
}

/// The errors of two batches that each break two rules in different rows, on `store`: a taken
/// sku in the first row and a deleted category in the second, then the other way round.
async fn batch_errors(store: &dyn Store) -> (Error, Error) {
    let mut uow = store.begin().await.unwrap();
    uow.products().create(product(1)).await.unwrap();
    let gone = uow
        .categories()
        .create(stockroom_core::NewCategory::new("Gone", "gone").unwrap())
        .await
        .unwrap();
    uow.categories().soft_delete(gone.id).await.unwrap();
    let taken_sku = || NewProduct::new("Again", "again", "SKU-1").unwrap();
    let in_gone = |i| product(i).with_category_id(gone.id);
    let sku_first = uow
        .products()
        .create_many(vec![taken_sku(), in_gone(2)])
        .await
        .unwrap_err();
    let category_first = uow
        .products()
        .create_many(vec![in_gone(3), taken_sku()])
        .await
        .unwrap_err();
    uow.rollback().await.unwrap();
    (sku_first, category_first)
}

/// SQLite checks references before it inserts and reports whichever unique index it meets
/// first; the adapter still reports the first broken rule in the order every backend keeps
/// (row by row, a row's references before its unique values), as the memory store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_the_first_broken_rule_row_by_row_as_memory_does() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let (sku_first, category_first) = batch_errors(&store).await;
    store.close().await;
    assert!(
        matches!(sku_first, Error::Conflict { constraint } if constraint == Constraint::PRODUCT_SKU),
        "{sku_first:?}"
    );
    assert!(
        matches!(&category_first, Error::NotFound { entity, .. } if *entity == stockroom_core::EntityKind::CATEGORY),
        "{category_first:?}"
    );
    let memory = stockroom_memory::MemoryStore::new();
    let (memory_sku, memory_category) = batch_errors(&memory).await;
    // The rule each names (the ids differ between the stores).
    let rule = |e: &Error| match e {
        Error::Conflict { constraint } => constraint.name().to_owned(),
        Error::NotFound { entity, .. } => format!("{entity} not found"),
        other => format!("{other:?}"),
    };
    assert_eq!(
        (rule(&sku_first), rule(&category_first)),
        (rule(&memory_sku), rule(&memory_category))
    );
}

/// The products' search index is keyed by their rowids, which `VACUUM` could renumber in a
/// table without an `INTEGER PRIMARY KEY`; SQLite keeps them for a table with indexes, as
/// `products` has. After deletes leave gaps in the rowids and the application vacuums the file,
/// a search through the index (a query of three characters or more) finds exactly the live rows
/// whose text matches, as the shorter query (which reads the table) does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacuum_keeps_the_search_index_right() {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let ids = create_products(&store, (0..300).map(product).collect()).await;
    let mut uow = store.begin().await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        match i % 3 {
            0 => uow.products().hard_delete(*id).await.unwrap(),
            1 if i % 2 == 0 => assert!(uow.products().soft_delete(*id).await.unwrap()),
            _ => {}
        }
    }
    uow.commit().await.unwrap();
    store.close().await;
    Connection::open(db.path())
        .unwrap()
        .execute_batch("VACUUM")
        .unwrap();

    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let live = |i: usize| i % 3 == 2 || (i % 3 == 1 && i % 2 == 1);
    for query in ["duct 2", "t 2"] {
        let mut expected: Vec<String> = (0..300)
            .filter(|&i| live(i) && format!("product {i}").contains(query))
            .map(|i| format!("Product {i}"))
            .collect();
        expected.sort();
        let filter = ProductFilter::default().with_search(query).unwrap();
        let mut read = store.read().await.unwrap();
        let found = read
            .products()
            .search(&filter, Page::new(1_000, 0).unwrap())
            .await
            .unwrap();
        let mut names: Vec<String> = found.items.into_iter().map(|p| p.name).collect();
        names.sort();
        assert_eq!(names, expected, "search {query:?} after VACUUM");
    }
    let short = ProductFilter::default().with_search("t ").unwrap();
    let long = ProductFilter::default().with_search("uct ").unwrap();
    let mut read = store.read().await.unwrap();
    let counts = (
        read.products().count(&short).await.unwrap(),
        read.products().count(&long).await.unwrap(),
    );
    assert_eq!(
        counts,
        (150, 150),
        "every live row, by a short and a long query"
    );
}

/// Records the `moves` field of every "stock moves committed together" event.
#[derive(Clone, Default)]
struct Together(Arc<std::sync::Mutex<Vec<u64>>>);

impl tracing::Subscriber for Together {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Moves(Option<u64>);
        impl tracing::field::Visit for Moves {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "moves" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut moves = Moves(None);
        event.record(&mut moves);
        if let Some(n) = moves.0 {
            self.0.lock().unwrap().push(n);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Transfers waiting for the writer are committed together by the first of them to get it, in
/// one transaction, each in a savepoint of its own: with a unit of work holding the writer, 8
/// transfers of one unit each from a product that has 4 wait; once it lets go, one transaction
/// runs all 8 (the event says so), 4 move and 4 are refused as insufficient stock, each caller
/// gets its own answer, and the stock and the ledger hold exactly the 4.
#[tokio::test]
async fn transfers_waiting_for_the_writer_commit_together() {
    let together = Together::default();
    let _guard = tracing::subscriber::set_default(together.clone());
    let db = temp_db();
    let store = Arc::new(SqliteStore::connect(&db.config()).await.unwrap());
    let new = |i: usize, stock: i64| product(i).with_stock(stock).unwrap();
    let ids = create_products(store.as_ref(), vec![new(0, 4), new(1, 0)]).await;
    let (from, to) = (ids[0], ids[1]);

    let held = store.begin().await.unwrap();
    let transfers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.transfer(&TransferRequest::new(from, to, 1)).await })
        })
        .collect();
    // Every transfer joins the queue and waits for the writer (one runtime thread: they run
    // while this task sleeps).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    let mut moved = 0;
    let mut refused = 0;
    for transfer in transfers {
        match transfer.await.unwrap() {
            Ok(_) => moved += 1,
            Err(Error::InsufficientStock { .. }) => refused += 1,
            Err(other) => panic!("a transfer failed otherwise: {other:?}"),
        }
    }
    assert_eq!((moved, refused), (4, 4), "moved and refused");
    assert_eq!(
        together.0.lock().unwrap().as_slice(),
        [8],
        "one transaction ran the 8 moves"
    );
    let mut read = store.read().await.unwrap();
    let stocks = (
        read.products().get(from).await.unwrap().unwrap().stock,
        read.products().get(to).await.unwrap().unwrap().stock,
    );
    assert_eq!(stocks, (0, 4), "the stock of both products");
    let ledger = read.movements().count().await.unwrap();
    assert_eq!(ledger, 4, "one ledger row per move");
}

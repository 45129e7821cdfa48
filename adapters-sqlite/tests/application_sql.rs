//! The application's own SQL beside Stockroom's: its errors classified as Stockroom's
//! (`stockroom_sqlite::classify`: `SQLITE_BUSY` retried by the retry runner, a unique violation
//! a `Conflict`), its reads on a read session (`with_read_connection`, never the writer), a
//! table of its own referring to `products` (ids as 16-byte blobs, times as integer
//! microseconds), and a delete for good that the table's foreign key refuses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use stockroom_core::{
    traced, BackendCode, Error, ProductId, RetryPolicy, StorageFault, Store, StoreExt, Timestamp,
    UnitOfWork,
};
use stockroom_memory::MemoryStore;
use stockroom_sqlite::{classify, with_connection, with_read_connection, SqliteStore};

#[allow(dead_code)]
mod support;

use support::TempDb;

/// The application's table, as its own migrations would make it: `orders` refers to
/// Stockroom's `products` by the id's 16 bytes (no `ON DELETE`: an ordered product may not be
/// deleted) and keeps a time as integer microseconds since the Unix epoch, as Stockroom does.
const APPLICATION_SCHEMA: &str = "
    CREATE TABLE orders (
        id INTEGER PRIMARY KEY,
        customer INTEGER NOT NULL,
        number INTEGER NOT NULL,
        product_id BLOB NOT NULL REFERENCES products (id),
        placed_at INTEGER NOT NULL,
        UNIQUE (customer, number)
    );
";

async fn setup() -> (TempDb, SqliteStore) {
    let db = TempDb::new("stockroom-application-sql");
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    Connection::open(db.path())
        .unwrap()
        .execute_batch(APPLICATION_SCHEMA)
        .unwrap();
    (db, store)
}

fn product(i: usize) -> stockroom_core::NewProduct {
    stockroom_core::NewProduct::new(
        &format!("Mug {i}"),
        &format!("mug-{i}"),
        &format!("MUG-{i}"),
    )
    .unwrap()
}

/// Places order `number` of `customer` for `product`, in the unit of work's transaction.
async fn place_order(
    uow: &mut dyn UnitOfWork,
    customer: i64,
    number: i64,
    product: ProductId,
    at: Timestamp,
) -> stockroom_core::Result<()> {
    let id = product.as_uuid().as_bytes().to_vec();
    let at = at.timestamp_micros();
    with_connection(uow, move |c| {
        c.execute(
            "INSERT INTO orders (customer, number, product_id, placed_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![customer, number, id, at],
        )
    })
    .await?
    .map_err(classify)?;
    Ok(())
}

/// A real `SQLITE_BUSY`: a second connection writes to `path` while the first holds its write
/// lock, without waiting.
fn busy(path: &std::path::Path) -> rusqlite::Error {
    let holder = Connection::open(path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let other = Connection::open(path).unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    let error = other
        .execute(
            "INSERT INTO orders (customer, number, product_id, placed_at) VALUES (0, 0, x'00', 0)",
            [],
        )
        .unwrap_err();
    holder.execute_batch("ROLLBACK").unwrap();
    error
}

/// `SQLITE_BUSY` from the application's SQL is `Transient` with SQLite's code, so the retry
/// runner runs the unit of work again: the first attempt fails with it, the second commits,
/// and the order is written once. With `Error::backend` in place of `classify`, `run` would
/// return the first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_in_the_applications_sql_is_transient_and_retried() {
    let (db, store) = setup().await;
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    uow.commit().await.unwrap();

    let classified = classify(busy(db.path()));
    assert!(classified.is_transient(), "{classified:?}");
    assert_eq!(
        classified.code(),
        Some(&BackendCode::Sqlite(rusqlite::ffi::SQLITE_BUSY))
    );

    let attempts = Arc::new(AtomicUsize::new(0));
    let path = db.path().to_owned();
    store
        .run(&RetryPolicy::default(), |uow| {
            let (attempts, path) = (Arc::clone(&attempts), path.clone());
            Box::pin(async move {
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    let error = tokio::task::spawn_blocking(move || busy(&path))
                        .await
                        .unwrap();
                    return Err(classify(error));
                }
                place_order(uow, 1, 1, mug.id, mug.created_at).await
            })
        })
        .await
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let orders: i64 = Connection::open(db.path())
        .unwrap()
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orders, 1);
    store.close().await;
}

/// A unique violation in the application's table is `Conflict` on `orders(customer, number)`,
/// named as PostgreSQL's is; the unit of work goes on (SQLite undid the statement alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_violation_in_the_applications_table_is_a_conflict() {
    let (_db, store) = setup().await;
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 7, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    let taken = place_order(uow.as_mut(), 7, 1, mug.id, mug.created_at).await;
    stockroom_conformance::application_sql::assert_conflict_on_table(
        taken,
        "orders",
        &["customer", "number"],
    );
    uow.commit().await.unwrap();
    store.close().await;
}

/// SQLite names neither the key nor the row of a foreign-key failure, so an order for a
/// product that does not exist is `Backend` with `SQLITE_CONSTRAINT_FOREIGNKEY` (PostgreSQL's is
/// `NotFound` of the product), as `classify`'s docs say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_for_a_missing_product_is_a_foreign_key_failure() {
    let (_db, store) = setup().await;
    let mut uow = store.begin().await.unwrap();
    let failed = place_order(
        uow.as_mut(),
        1,
        1,
        ProductId::new(),
        stockroom_core::time::now(),
    )
    .await;
    match &failed {
        Err(error @ Error::Backend { .. }) => assert_eq!(
            error.code(),
            Some(&BackendCode::Sqlite(
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
            ))
        ),
        other => panic!("expected the foreign-key failure, got {other:?}"),
    }
    drop(uow);
    store.close().await;
}

/// The application's table refers to `products` by the id's 16 bytes and keeps times as integer
/// microseconds: a join finds the product, and a time written from `created_at` equals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_table_refers_to_products_by_their_ids_and_times() {
    let (_db, store) = setup().await;
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 1, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let mut session = store.read().await.unwrap();
    let (sku, placed_at): (String, i64) = with_read_connection(session.as_mut(), |c| {
        c.query_row(
            "SELECT p.sku, o.placed_at FROM orders o JOIN products p ON p.id = o.product_id \
             WHERE o.placed_at = p.created_at",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let placed_at = Timestamp::from_timestamp_micros(placed_at).unwrap();
    assert_eq!(
        (sku.as_str(), placed_at),
        (mug.sku.as_str(), mug.created_at)
    );
    drop(session);
    store.close().await;
}

/// A delete for good that `orders`' foreign key refuses: the shared behaviour, on SQLite, whose
/// error names no table (Stockroom finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_an_application_table_refuses_is_referenced_and_the_unit_of_work_goes_on() {
    let (_db, store) = setup().await;
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 1, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    stockroom_conformance::application_sql::a_delete_another_table_refuses_is_referenced(
        &store, mug.id, "orders",
    )
    .await;
    // With the order gone, the delete goes through (nothing of the check stayed behind).
    let mut uow = store.begin().await.unwrap();
    with_connection(uow.as_mut(), |c| c.execute("DELETE FROM orders", []))
        .await
        .unwrap()
        .unwrap();
    uow.products().hard_delete(mug.id).await.unwrap();
    uow.commit().await.unwrap();
    store.close().await;
}

/// A purge of the trash that `orders`' foreign key refuses: the shared behaviour, on SQLite,
/// whose error names neither the table nor the row (Stockroom finds both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_an_application_table_refuses_is_referenced_and_the_unit_of_work_goes_on() {
    let (_db, store) = setup().await;
    let mut uow = store.begin().await.unwrap();
    let other = uow.products().create(product(2)).await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 1, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    // A second product in the trash that nothing refers to: the purge is refused as a whole.
    uow.products().soft_delete(other.id).await.unwrap();
    uow.commit().await.unwrap();
    stockroom_conformance::application_sql::a_purge_another_table_refuses_is_referenced(
        &store, mug.id, "orders",
    )
    .await;
    let mut read = store.read().await.unwrap();
    let trash = read
        .products()
        .list_deleted(stockroom_core::Page::new(10, 0).unwrap())
        .await
        .unwrap();
    assert_eq!(
        trash.len(),
        1,
        "the unreferenced product was not purged either"
    );
    drop(read);
    store.close().await;
}

/// The application's reads run on a read connection while a unit of work holds the writer
/// (they would wait behind it if they took it), and see only what was committed; a write there
/// is refused as read-only. Through the tracing decorator too; a memory store's session has no
/// connection (`Unsupported`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_reads_run_on_a_read_session_beside_the_writer() {
    let (_db, store) = setup().await;
    let store = traced(store);
    let mut writing = store.begin().await.unwrap();
    let mug = writing.products().create(product(1)).await.unwrap();
    place_order(writing.as_mut(), 1, 1, mug.id, mug.created_at)
        .await
        .unwrap();

    let mut session = store.read().await.unwrap();
    let orders = tokio::time::timeout(
        Duration::from_secs(30),
        with_read_connection(session.as_mut(), |c| {
            c.query_row("SELECT count(*) FROM orders", [], |r| r.get::<_, i64>(0))
        }),
    )
    .await
    .expect("a read connection does not wait for the writer")
    .unwrap()
    .unwrap();
    assert_eq!(orders, 0, "the uncommitted order is not seen");
    let write = with_read_connection(session.as_mut(), |c| c.execute("DELETE FROM orders", []))
        .await
        .unwrap()
        .map_err(classify);
    assert!(
        matches!(
            write,
            Err(Error::Storage {
                fault: StorageFault::ReadOnly,
                ..
            })
        ),
        "{write:?}"
    );
    drop(session);
    writing.commit().await.unwrap();

    let memory = MemoryStore::new();
    let mut session = memory.read().await.unwrap();
    let unsupported = with_read_connection(session.as_mut(), |_| ()).await;
    assert!(
        matches!(
            unsupported,
            Err(Error::Unsupported {
                backend: "memory",
                ..
            })
        ),
        "{unsupported:?}"
    );
    store.inner().close().await;
}

#[test]
fn busy_is_sqlites_busy() {
    let db = TempDb::new("stockroom-application-sql-busy");
    Connection::open(db.path())
        .unwrap()
        .execute_batch("CREATE TABLE orders (customer, number, product_id, placed_at)")
        .unwrap();
    assert_eq!(
        busy(db.path()).sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy)
    );
}

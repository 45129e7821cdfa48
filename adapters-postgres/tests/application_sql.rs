//! The application's own SQL beside Stockroom's: its errors classified as Stockroom's
//! (`stockroom_postgres::classify`: a deadlock retried by the retry runner, a unique violation
//! a `Conflict`, a missing product `NotFound`), its reads on a read session
//! (`read_connection`), a table of its own referring to `products` (ids as `uuid`, times as
//! `timestamptz`), and a delete for good that the table's foreign key refuses.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use stockroom_core::{
    traced, EntityKind, Error, ProductId, RetryPolicy, Store, StoreExt, Timestamp,
};
use stockroom_memory::MemoryStore;
use stockroom_postgres::{classify, connection, read_connection, PostgresStore};
use support::{product, TestDatabase};

/// The application's tables, as its own migrations would make them: `orders` refers to
/// Stockroom's `products` (no `ON DELETE`: an ordered product may not be deleted), `tallies`
/// is a plain table the deadlock test updates.
const APPLICATION_SCHEMA: &str = "
    CREATE TABLE orders (
        id bigserial PRIMARY KEY,
        customer bigint NOT NULL,
        number bigint NOT NULL,
        product_id uuid NOT NULL REFERENCES products (id),
        placed_at timestamptz NOT NULL,
        UNIQUE (customer, number)
    );
    CREATE TABLE tallies (id int PRIMARY KEY, n int NOT NULL);
    INSERT INTO tallies VALUES (1, 0), (2, 0);
";

async fn setup() -> Option<(TestDatabase, PostgresStore)> {
    let db = TestDatabase::create().await?;
    let store = db.store().await;
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql(APPLICATION_SCHEMA)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    Some((db, store))
}

async fn teardown(db: TestDatabase, store: PostgresStore) {
    store.close().await;
    db.drop_now().await;
}

/// Places order `number` of `customer` for `product`, in the unit of work's transaction.
async fn place_order(
    uow: &mut dyn stockroom_core::UnitOfWork,
    customer: i64,
    number: i64,
    product: ProductId,
    at: Timestamp,
) -> stockroom_core::Result<()> {
    let conn = connection(uow)?;
    sqlx::query(
        "INSERT INTO orders (customer, number, product_id, placed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(customer)
    .bind(number)
    .bind(product.as_uuid())
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Two units of work update the application's two rows in opposite orders, each waiting for
/// the other to hold its first row: PostgreSQL ends the deadlock by failing one (40P01) or,
/// first, by the store's lock timeout (55P03). `classify` makes it `Transient`, so the retry
/// runner runs that unit of work again and both commit, each row counted exactly twice.
/// With `Error::backend` in place of `classify`, one of the two fails instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_in_the_applications_sql_is_transient_and_retried() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let attempts = Arc::new(AtomicUsize::new(0));
    let both_hold_one = Arc::new(tokio::sync::Barrier::new(2));
    let run = |first: i32, second: i32| {
        let (store, attempts, barrier) = (
            Arc::clone(&store),
            Arc::clone(&attempts),
            Arc::clone(&both_hold_one),
        );
        tokio::spawn(async move {
            let policy = RetryPolicy::default();
            store
                .run(&policy, |uow| {
                    let (attempts, barrier) = (Arc::clone(&attempts), Arc::clone(&barrier));
                    Box::pin(async move {
                        let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                        let conn = connection(uow)?;
                        for (i, id) in [first, second].into_iter().enumerate() {
                            sqlx::query("UPDATE tallies SET n = n + 1 WHERE id = $1")
                                .bind(id)
                                .execute(&mut *conn)
                                .await
                                .map_err(classify)?;
                            // Only the two first attempts meet, so that they deadlock.
                            if i == 0 && attempt < 2 {
                                barrier.wait().await;
                            }
                        }
                        Ok(())
                    })
                })
                .await
        })
    };
    let (a, b) = (run(1, 2), run(2, 1));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a.is_ok() && b.is_ok(), "both commit: {a:?}, {b:?}");
    assert!(
        attempts.load(Ordering::SeqCst) >= 3,
        "one unit of work was retried: {} attempts",
        attempts.load(Ordering::SeqCst)
    );
    let mut session = store.read().await.unwrap();
    let conn = read_connection(session.as_mut()).unwrap();
    let tallies: Vec<(i32, i32)> = sqlx::query_as("SELECT id, n FROM tallies ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(tallies, [(1, 2), (2, 2)], "each unit of work counted once");
    drop(session);
    store.close().await;
    db.drop_now().await;
}

/// A unique violation in the application's table is `Conflict` on `orders(customer, number)`;
/// an order for a product that does not exist is `NotFound` of that product, its id the one
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_constraint_violations_are_typed() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 7, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let mut uow = store.begin().await.unwrap();
    let taken = place_order(uow.as_mut(), 7, 1, mug.id, mug.created_at).await;
    stockroom_conformance::application_sql::assert_conflict_on_table(
        taken,
        "orders",
        &["customer", "number"],
    );
    drop(uow);

    let mut uow = store.begin().await.unwrap();
    let missing = ProductId::new();
    match place_order(uow.as_mut(), 7, 2, missing, mug.created_at).await {
        Err(Error::NotFound { entity, id }) => {
            assert_eq!(entity, EntityKind::PRODUCT);
            assert!(id == missing, "{id} vs {missing}");
        }
        other => panic!("expected NotFound of the product, got {other:?}"),
    }
    drop(uow);
    teardown(db, store).await;
}

/// The application's table refers to `products` by its `uuid` id and keeps a `timestamptz`:
/// Stockroom's ids and times bind and compare as they are (a join finds the product, a time
/// written from `created_at` equals it to the microsecond).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_table_refers_to_products_by_their_ids_and_times() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 1, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let mut session = store.read().await.unwrap();
    let conn = read_connection(session.as_mut()).unwrap();
    let (sku, placed_at): (String, Timestamp) = sqlx::query_as(
        "SELECT p.sku, o.placed_at FROM orders o JOIN products p ON p.id = o.product_id \
         WHERE o.placed_at = p.created_at",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        (sku.as_str(), placed_at),
        (mug.sku.as_str(), mug.created_at)
    );
    drop(session);
    teardown(db, store).await;
}

/// A delete for good that `orders`' foreign key refuses: the shared behaviour, on PostgreSQL,
/// where a failed statement would otherwise abort the whole transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_an_application_table_refuses_is_referenced_and_the_unit_of_work_goes_on() {
    let Some((db, store)) = setup().await else {
        return;
    };
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
    teardown(db, store).await;
}

/// A purge of the trash that `orders`' foreign key refuses: the shared behaviour, on
/// PostgreSQL (the purge runs in a savepoint too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_an_application_table_refuses_is_referenced_and_the_unit_of_work_goes_on() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    let mug = uow.products().create(product(1)).await.unwrap();
    place_order(uow.as_mut(), 1, 1, mug.id, mug.created_at)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    stockroom_conformance::application_sql::a_purge_another_table_refuses_is_referenced(
        &store, mug.id, "orders",
    )
    .await;
    teardown(db, store).await;
}

/// The application's reads run on a read session's connection, through the tracing decorator
/// too; a memory store's session has none (`Unsupported`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_reads_run_on_a_read_session() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let store = traced(store);
    let mut session = store.read().await.unwrap();
    let conn = read_connection(session.as_mut()).unwrap();
    let (orders,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)
        .unwrap();
    assert_eq!(orders, 0);
    // A statement that fails is classified, and the session's own reads go on.
    let failed = sqlx::query("SELECT nonsense FROM orders")
        .execute(&mut *conn)
        .await
        .map_err(classify);
    assert!(
        matches!(&failed, Err(Error::Backend { .. }))
            && failed.as_ref().unwrap_err().sqlstate() == Some("42703"),
        "{failed:?}"
    );
    assert_eq!(
        session.products().count(&Default::default()).await.unwrap(),
        0
    );
    drop(session);

    let memory = MemoryStore::new();
    let mut session = memory.read().await.unwrap();
    assert!(matches!(
        read_connection(session.as_mut()),
        Err(Error::Unsupported {
            backend: "memory",
            ..
        })
    ));
    store.inner().close().await;
    db.drop_now().await;
}

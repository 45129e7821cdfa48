//! The application's own SQL beside Stockroom's: its errors classified as Stockroom's
//! (`stockroom_mariadb::classify`: a deadlock retried by the retry runner, a missing product
//! `NotFound`; `classify_on`: a duplicate on the application's own unique key a `Conflict` on
//! that table and its columns, which MariaDB's message does not name), its reads on a read
//! session (`read_connection`), a table of its own referring to `products` (ids as
//! `BINARY(16)`, times as `DATETIME(6)`), and a delete for good, or a purge, that the table's
//! foreign key refuses.
//!
//! Each test makes and drops its own database (`support::TestDatabase`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::{Connection, MySqlConnection, MySqlPool};
use stockroom_core::{
    traced, BackendCode, EntityKind, Error, ProductId, RetryPolicy, Store, StoreExt, Timestamp,
};
use stockroom_mariadb::{classify, classify_on, connection, read_connection, MariaDbStore};
use stockroom_memory::MemoryStore;
use support::{product, TestDatabase};

/// The application's tables, as its own migrations would make them: `orders` refers to
/// Stockroom's `products` (no `ON DELETE`: an ordered product may not be deleted) and has an
/// unnamed unique key, which MariaDB calls after its first column (`customer`); `tallies` is a
/// plain table the deadlock test updates.
const APPLICATION_SCHEMA: &str = "
    CREATE TABLE `orders` (
        `id` BIGINT AUTO_INCREMENT PRIMARY KEY,
        `customer` BIGINT NOT NULL,
        `number` BIGINT NOT NULL,
        `product_id` BINARY(16) NOT NULL,
        `placed_at` DATETIME(6) NOT NULL,
        UNIQUE (`customer`, `number`),
        FOREIGN KEY (`product_id`) REFERENCES `products` (`id`)
    ) ENGINE=InnoDB;
    CREATE TABLE `tallies` (`id` INT PRIMARY KEY, `n` INT NOT NULL) ENGINE=InnoDB;
    INSERT INTO `tallies` VALUES (1, 0), (2, 0);
";

async fn run_sql(db: &TestDatabase, sql: &str) {
    let mut conn = MySqlConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.unwrap();
}

async fn setup() -> Option<(TestDatabase, MariaDbStore)> {
    let db = TestDatabase::create().await?;
    let store = db.store().await;
    run_sql(&db, APPLICATION_SCHEMA).await;
    Some((db, store))
}

async fn teardown(db: TestDatabase, store: MariaDbStore) {
    store.close().await;
    db.drop_now().await;
}

/// Places order `number` of `customer` for `product`, in the unit of work's transaction; its
/// error classified with the catalog's help (`classify_on`, on the same connection).
async fn place_order(
    uow: &mut dyn stockroom_core::UnitOfWork,
    customer: i64,
    number: i64,
    product: ProductId,
    at: Timestamp,
) -> stockroom_core::Result<()> {
    let conn = connection(uow)?;
    let placed = sqlx::query(
        "INSERT INTO `orders` (`customer`, `number`, `product_id`, `placed_at`) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(customer)
    .bind(number)
    .bind(product.as_uuid())
    .bind(at)
    .execute(&mut *conn)
    .await;
    match placed {
        Ok(_) => Ok(()),
        Err(e) => Err(classify_on(&mut *conn, e).await),
    }
}

/// Two units of work update the application's two rows in opposite orders, each waiting for
/// the other to hold its first row: InnoDB ends the deadlock by failing one (1213, its
/// transaction rolled back). `classify` makes it `Transient`, so the retry runner runs that
/// unit of work again and both commit, each row counted exactly twice. With `Error::backend`
/// in place of `classify`, one of the two fails instead.
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
                            sqlx::query("UPDATE `tallies` SET `n` = `n` + 1 WHERE `id` = ?")
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
    let tallies: Vec<(i32, i32)> = sqlx::query_as("SELECT `id`, `n` FROM `tallies` ORDER BY `id`")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(tallies, [(1, 2), (2, 2)], "each unit of work counted once");
    drop(session);
    store.close().await;
    db.drop_now().await;
}

/// A duplicate on the application's unique key is `Conflict` on `orders(customer, number)`
/// (`classify_on`: MariaDB's message names only the index, `customer`, which `classify` alone
/// reports as `Backend` with error 1062); the unit of work goes on after it (MariaDB undid the
/// statement alone). An order for a product that does not exist is `NotFound` of that product
/// (MariaDB's message does not hold the id: it is nil).
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
    // Without the catalog, the error alone names the index and no more.
    let conn = connection(uow.as_mut()).unwrap();
    let alone = sqlx::query(
        "INSERT INTO `orders` (`customer`, `number`, `product_id`, `placed_at`) \
         VALUES (7, 1, ?, UTC_TIMESTAMP(6))",
    )
    .bind(mug.id.as_uuid())
    .execute(&mut *conn)
    .await
    .map_err(classify);
    match &alone {
        Err(Error::Backend { message, code, .. }) => {
            assert!(message.contains("`customer`"), "{message}");
            assert_eq!(code, &Some(BackendCode::MariaDb(1062)));
        }
        other => panic!("expected Backend naming the index, got {other:?}"),
    }
    // The duplicates undid themselves only: the unit of work goes on and commits.
    place_order(uow.as_mut(), 7, 2, mug.id, mug.created_at)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let mut uow = store.begin().await.unwrap();
    let missing = ProductId::new();
    match place_order(uow.as_mut(), 7, 3, missing, mug.created_at).await {
        Err(Error::NotFound { entity, id }) => {
            assert_eq!(entity, EntityKind::PRODUCT);
            assert!(id.as_uuid().is_nil(), "MariaDB does not say which: {id}");
        }
        other => panic!("expected NotFound of the product, got {other:?}"),
    }
    drop(uow);
    let mut read = store.read().await.unwrap();
    let conn = read_connection(read.as_mut()).unwrap();
    let numbers: Vec<i64> = sqlx::query_scalar("SELECT `number` FROM `orders` ORDER BY `number`")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(numbers, [1, 2]);
    drop(read);
    teardown(db, store).await;
}

/// `classify_on` names only a key it can place: an index name two tables share (each table's
/// unnamed `UNIQUE (code)` is called `code`) and the primary key (every table's `PRIMARY`) stay
/// `Backend`, as `classify` says; a key named for its table is a `Conflict` on its columns,
/// whether the lookup runs on the connection or on a pool; and a unique rule stored as
/// Stockroom stores an entity's (generated `_live_…` columns, NULL once the row is deleted) is
/// named by the field it covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_on_names_only_a_key_it_can_place() {
    let Some((db, store)) = setup().await else {
        return;
    };
    run_sql(
        &db,
        "CREATE TABLE `coupons` (`id` INT PRIMARY KEY, `code` VARCHAR(20) NOT NULL UNIQUE) \
           ENGINE=InnoDB;
         CREATE TABLE `vouchers` (`id` INT PRIMARY KEY, `code` VARCHAR(20) NOT NULL UNIQUE, \
           `serial` INT NOT NULL, UNIQUE KEY `vouchers_serial` (`serial`)) ENGINE=InnoDB;
         CREATE TABLE `bins` (`id` INT PRIMARY KEY, `code` VARCHAR(20) NOT NULL, \
           `deleted_at` DATETIME(6) NULL, \
           `_live_bins_code_live_0` VARCHAR(20) AS (IF(`deleted_at` IS NULL, `code`, NULL)) VIRTUAL, \
           UNIQUE KEY `bins_code_live` (`_live_bins_code_live_0`)) ENGINE=InnoDB;
         INSERT INTO `coupons` VALUES (1, 'A');
         INSERT INTO `vouchers` VALUES (1, 'A', 10);
         INSERT INTO `bins` (`id`, `code`, `deleted_at`) VALUES (1, 'B', NULL), (2, 'C', UTC_TIMESTAMP(6));",
    )
    .await;
    let pool = MySqlPool::connect(db.url()).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    async fn fails(conn: &mut MySqlConnection, sql: &str) -> sqlx::Error {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(conn)
            .await
            .expect_err(sql)
    }
    let backend_on = |result: &Error, key: &str| match result {
        Error::Backend { message, code, .. } => {
            assert!(message.contains(&format!("`{key}`")), "{message}");
            assert_eq!(code, &Some(BackendCode::MariaDb(1062)));
        }
        other => panic!("expected Backend on `{key}`, got {other:?}"),
    };

    let shared_name = fails(&mut conn, "INSERT INTO `coupons` VALUES (2, 'A')").await;
    backend_on(&classify_on(&mut *conn, shared_name).await, "code");
    let primary = fails(&mut conn, "INSERT INTO `vouchers` VALUES (1, 'Z', 11)").await;
    backend_on(&classify_on(&mut *conn, primary).await, "PRIMARY");

    let named = fails(&mut conn, "INSERT INTO `vouchers` VALUES (2, 'Z', 10)").await;
    stockroom_conformance::application_sql::assert_conflict_on_table(
        Err::<(), _>(classify_on(&pool, named).await),
        "vouchers",
        &["serial"],
    );
    let live = fails(
        &mut conn,
        "INSERT INTO `bins` (`id`, `code`) VALUES (3, 'B')",
    )
    .await;
    stockroom_conformance::application_sql::assert_conflict_on_table(
        Err::<(), _>(classify_on(&mut *conn, live).await),
        "bins",
        &["code"],
    );
    // A deleted row's value is free again: no duplicate, nothing to classify.
    sqlx::raw_sql("INSERT INTO `bins` (`id`, `code`) VALUES (3, 'C')")
        .execute(&mut *conn)
        .await
        .unwrap();
    // Any other error is `classify`'s, with no lookup.
    let other = fails(&mut conn, "SELECT `nonsense` FROM `bins`").await;
    let other = classify_on(&mut *conn, other).await;
    assert_eq!(other.code(), Some(&BackendCode::MariaDb(1054)), "{other:?}");
    drop(conn);
    pool.close().await;
    teardown(db, store).await;
}

/// The application's table refers to `products` by its id, stored as Stockroom stores it
/// (`BINARY(16)`), and keeps a `DATETIME(6)`: Stockroom's ids and times bind and compare as
/// they are (a join finds the product, a time written from `created_at` equals it to the
/// microsecond).
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
    assert_ne!(
        mug.created_at.timestamp_subsec_micros() % 1_000,
        0,
        "a time with microseconds (one in a thousand is not; run again)"
    );
    let mut session = store.read().await.unwrap();
    let conn = read_connection(session.as_mut()).unwrap();
    let (sku, placed_at, product_id): (String, Timestamp, uuid::Uuid) = sqlx::query_as(
        "SELECT `p`.`sku`, `o`.`placed_at`, `o`.`product_id` FROM `orders` AS `o` \
         JOIN `products` AS `p` ON `p`.`id` = `o`.`product_id` \
         WHERE `o`.`placed_at` = `p`.`created_at`",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        (sku.as_str(), placed_at, product_id),
        (mug.sku.as_str(), mug.created_at, mug.id.as_uuid())
    );
    drop(session);
    teardown(db, store).await;
}

/// A delete for good that `orders`' foreign key refuses: the shared behaviour, on MariaDB,
/// whose message names neither the row nor its id.
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

/// A purge of the trash that `orders`' foreign key refuses: the shared behaviour, on MariaDB.
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
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM `orders`")
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)
        .unwrap();
    assert_eq!(orders, 0);
    // A statement that fails is classified (1054: unknown column), and the session's own reads
    // go on.
    let failed = sqlx::query("SELECT `nonsense` FROM `orders`")
        .execute(&mut *conn)
        .await
        .map_err(classify);
    assert!(
        matches!(&failed, Err(Error::Backend { .. }))
            && failed.as_ref().unwrap_err().code() == Some(&BackendCode::MariaDb(1054)),
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

/// A read session's connection is lent only while the store is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_session_lends_no_connection_after_close() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut session = store.read().await.unwrap();
    read_connection(session.as_mut()).unwrap();
    store.close().await;
    assert!(matches!(
        read_connection(session.as_mut()),
        Err(Error::Unavailable { .. })
    ));
    drop(session);
    db.drop_now().await;
}

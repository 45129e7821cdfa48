//! A store on the application's own pool (`MariaDbStore::from_pool`): it shares the pool's
//! connections and data, leaves the pool open when closed, keeps the application's session
//! settings as they were (lock wait, isolation level, time zone), still bounds a unit of
//! work's or a transfer's wait for a lock and runs its units of work at its own isolation
//! level, migrates without a connection of the pool, and keeps its migrations apart from the
//! application's sqlx migrations on the same database, in either order and at once.
//!
//! Each test makes and drops its own database (`support::TestDatabase`).

mod support;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{Executor, MySqlPool, SqlSafeStr};
use stockroom_core::{
    transfer_stock, Error, ProductFilter, RetryPolicy, StockDelta, Store, StoreExt, TransferRequest,
};
use stockroom_mariadb::{connection, IsolationLevel, MariaDbOptions, MariaDbStore};
use support::{count_products, product, seed_products, TestDatabase};
use uuid::Uuid;

/// The application's pool on the test database: at most `max` connections, each starting with
/// `session` (the application's own settings), if any.
async fn app_pool(db: &TestDatabase, max: u32, session: Option<&'static str>) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(max)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if let Some(sql) = session {
                    conn.execute(sql).await?;
                }
                Ok(())
            })
        })
        .connect(db.url())
        .await
        .unwrap()
}

async fn from_pool(pool: &MySqlPool, options: MariaDbOptions) -> MariaDbStore {
    MariaDbStore::from_pool(pool.clone(), options)
        .await
        .unwrap_or_else(|e| panic!("from_pool: {e:?}"))
}

/// `query`'s value on every connection of `pool` (which holds at most `max`): all of them are
/// taken at once, so none is left out.
async fn on_every_connection(pool: &MySqlPool, max: u32, query: &'static str) -> Vec<String> {
    let mut conns = Vec::new();
    for _ in 0..max {
        conns.push(pool.acquire().await.unwrap());
    }
    let mut values = Vec::new();
    for conn in &mut conns {
        let value: String = sqlx::query_scalar(query)
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        values.push(value);
    }
    values
}

/// How many sessions of the server are on `db`, waited for until it is at most `expected`
/// (a closed connection leaves the server's list a moment later), at most five seconds.
async fn sessions_on(db: &TestDatabase, pool: &MySqlPool, expected: u32) -> u32 {
    let mut seen = 0;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM `information_schema`.`PROCESSLIST` WHERE `DB` = ?",
        )
        .bind(db.name())
        .fetch_one(pool)
        .await
        .unwrap();
        seen = u32::try_from(n).unwrap();
        if seen <= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_pool_shares_its_data_and_connections() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 2, None).await;
    let store = from_pool(&pool, MariaDbOptions::default()).await;
    // The application writes a product with its own SQL on its own pool …
    sqlx::query(
        "INSERT INTO `products` (`id`, `name`, `slug`, `sku`, `status`, `stock`, `search_text`, \
         `created_at`, `updated_at`) VALUES (?, 'Raw mug', 'raw-mug', 'RAW-1', 'draft', 4, \
         'raw mug', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
    )
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    // … and Stockroom sees it, on a connection of that pool.
    let mut read = store.read().await.unwrap();
    let found = read.products().by_slug("raw-mug").await.unwrap();
    assert_eq!(found.map(|p| p.stock), Some(4));
    // Every session on the database is one of the pool's: Stockroom kept no connection of its
    // own (the migration's was closed).
    // (The read session holds one of the pool's two connections, the count runs on the other.)
    let sessions = sessions_on(&db, &pool, 2).await;
    assert_eq!(pool.size(), 2);
    assert_eq!(sessions, 2);
    drop(read);
    // What Stockroom commits, the application reads.
    seed_products(&store, [1]).await;
    let stock: i64 =
        sqlx::query_scalar("SELECT `stock` FROM `products` WHERE `slug` = 'product-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stock, 10);
    assert!(store.open_connections() <= 2);
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_stockroom_and_leaves_the_applications_pool_open() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 3, None).await;
    let store = from_pool(&pool, MariaDbOptions::default()).await;
    let mut in_flight = store.begin().await.unwrap();
    in_flight.products().create(product(1)).await.unwrap();
    store.close().await;
    assert!(matches!(
        store.begin().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(store.read().await, Err(Error::Unavailable { .. })));
    assert!(matches!(
        store.health().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        in_flight.products().create(product(2)).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        in_flight.commit().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(!pool.is_closed());
    let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM `products`")
        .fetch_one(&pool)
        .await
        .expect("the application's pool still serves it");
    assert_eq!(products, 0, "the unit of work in flight was rolled back");
    // Another store on the same pool works as before.
    let again = from_pool(&pool, MariaDbOptions::default()).await;
    assert_eq!(count_products(&again).await, 0);
    again.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// The application's sessions wait for a row lock for 30 s (their own setting; MariaDB's
/// default is 50 s); the store's units of work, for the store's lock wait (1 s), after which a
/// write fails as `Transient`; and the application's sessions keep their setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_wait_bounds_a_unit_of_work_on_a_borrowed_pool() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    const SESSION: &str = "SET SESSION `innodb_lock_wait_timeout` = 30";
    let pool = app_pool(&db, 4, Some(SESSION)).await;
    let options = MariaDbOptions::default().with_lock_wait_timeout(Duration::from_secs(1));
    let store = from_pool(&pool, options).await;
    let [p] = seed_products(&store, [1]).await;
    let mut holder = store.begin().await.unwrap();
    holder.products().lock(&[p.id]).await.unwrap();
    let mut waiter = store.begin().await.unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        waiter
            .products()
            .adjust_stock(p.id, StockDelta::new(1).unwrap()),
    )
    .await
    .expect("the wait for the row lock was bounded");
    let waited = started.elapsed();
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    waiter.rollback().await.unwrap();
    holder.rollback().await.unwrap();
    // Set for Stockroom's statements only: the application's sessions keep their setting.
    let settings =
        on_every_connection(&pool, 4, "SELECT CAST(@@innodb_lock_wait_timeout AS CHAR)").await;
    assert_eq!(settings, ["30"; 4]);
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// A transfer on a borrowed pool gives up on a locked row as `Transient` after the store's lock
/// wait, not the application's, and the application's sessions keep their setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_wait_bounds_a_transfer_on_a_borrowed_pool() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    const SESSION: &str = "SET SESSION `innodb_lock_wait_timeout` = 30";
    let pool = app_pool(&db, 4, Some(SESSION)).await;
    let options = MariaDbOptions::default().with_lock_wait_timeout(Duration::from_secs(1));
    let store = from_pool(&pool, options).await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    let mut holder = store.begin().await.unwrap();
    holder.products().lock(&[a.id]).await.unwrap();
    let request = TransferRequest::new(a.id, b.id, 1);
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        transfer_stock(&store, &request, &RetryPolicy::none()),
    )
    .await
    .expect("the wait for the row lock was bounded");
    assert!(matches!(result, Err(Error::Transient { .. })), "{result:?}");
    holder.rollback().await.unwrap();
    let settings =
        on_every_connection(&pool, 4, "SELECT CAST(@@innodb_lock_wait_timeout AS CHAR)").await;
    assert_eq!(settings, ["30"; 4]);
    store
        .transfer(&request)
        .await
        .expect("the row is free again");
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// MariaDB's sessions run at REPEATABLE READ unless told otherwise, and so do the application's
/// here; the store's units of work run at the store's level (READ COMMITTED by default: a
/// second read sees what another transaction committed in between), set for each transaction
/// alone, so the application's sessions keep theirs. A store set to REPEATABLE READ sees its
/// snapshot, which tells the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_on_a_borrowed_pool_runs_at_the_stores_isolation_level() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 3, None).await;
    let levels = on_every_connection(&pool, 3, "SELECT @@tx_isolation").await;
    assert_eq!(levels, ["REPEATABLE-READ"; 3], "the server's default");
    let read_committed = from_pool(&pool, MariaDbOptions::default()).await;
    let repeatable = from_pool(
        &pool,
        MariaDbOptions::default().with_isolation(IsolationLevel::RepeatableRead),
    )
    .await;
    let [p] = seed_products(&read_committed, [1]).await;
    let mut stocks = Vec::new();
    for (store, new_stock) in [(&read_committed, 3_i64), (&repeatable, 5)] {
        let mut uow = store.begin().await.unwrap();
        let conn = connection(uow.as_mut()).unwrap();
        async fn read(conn: &mut sqlx::MySqlConnection, id: Uuid) -> i64 {
            sqlx::query_scalar("SELECT `stock` FROM `products` WHERE `id` = ?")
                .bind(id)
                .fetch_one(conn)
                .await
                .unwrap()
        }
        let before = read(&mut *conn, p.id.as_uuid()).await;
        sqlx::query("UPDATE `products` SET `stock` = ? WHERE `id` = ?")
            .bind(new_stock)
            .bind(p.id.as_uuid())
            .execute(&pool)
            .await
            .unwrap();
        let after = read(&mut *conn, p.id.as_uuid()).await;
        uow.rollback().await.unwrap();
        stocks.push((before, after));
    }
    assert_eq!(stocks, [(10, 3), (3, 3)]);
    let levels = on_every_connection(&pool, 3, "SELECT @@tx_isolation").await;
    assert_eq!(
        levels, ["REPEATABLE-READ"; 3],
        "the application's sessions keep theirs"
    );
    read_committed.close().await;
    repeatable.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// The application's connections run in another time zone: Stockroom writes and compares its
/// times as UTC all the same (it binds them itself, or uses `UTC_TIMESTAMP`), so a stored time
/// is the UTC time it returned, and a purge of what was deleted before now purges it; the
/// connections keep their zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_utc_whatever_the_pools_time_zone() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 2, Some("SET time_zone = '+05:00'")).await;
    let store = from_pool(&pool, MariaDbOptions::default()).await;
    let [p] = seed_products(&store, [1]).await;
    let (stored, behind_utc): (chrono::NaiveDateTime, i64) = sqlx::query_as(
        "SELECT `created_at`, TIMESTAMPDIFF(SECOND, `created_at`, UTC_TIMESTAMP(6)) \
         FROM `products` WHERE `id` = ?",
    )
    .bind(p.id.as_uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, p.created_at.naive_utc());
    assert!((0..60).contains(&behind_utc), "{behind_utc} s");
    // The application's own `DateTime<Utc>`, bound on a connection of its zone into a
    // `DATETIME(6)`, is stored as the same UTC time as Stockroom's.
    sqlx::raw_sql("CREATE TABLE `seen` (`at` DATETIME(6) NOT NULL) ENGINE=InnoDB")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO `seen` VALUES (?)")
        .bind(p.created_at)
        .execute(&pool)
        .await
        .unwrap();
    let same: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM `seen` JOIN `products` ON `products`.`created_at` = `seen`.`at`",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(same, 1);
    let mut uow = store.begin().await.unwrap();
    assert!(uow.products().soft_delete(p.id).await.unwrap());
    uow.commit().await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let bound = stockroom_core::time::now() + chrono::Duration::seconds(1);
    assert_eq!(uow.products().purge_deleted_before(bound).await.unwrap(), 1);
    uow.commit().await.unwrap();
    let zones = on_every_connection(&pool, 2, "SELECT @@time_zone").await;
    assert_eq!(zones, ["+05:00"; 2]);
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// The migrations run on a connection of their own, made with the pool's connect options and
/// closed afterwards: a store is built on a one-connection pool while the application holds
/// that connection, and the connection's session is as the application set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_needs_no_connection_of_the_pool_and_leaves_its_sessions_alone() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 1, Some("SET SESSION `innodb_lock_wait_timeout` = 7")).await;
    let mut held = pool.acquire().await.unwrap();
    let store = tokio::time::timeout(
        Duration::from_secs(30),
        MariaDbStore::from_pool(pool.clone(), MariaDbOptions::default()),
    )
    .await
    .expect("migrating does not wait for the pool's connection")
    .unwrap();
    let setting: i64 = sqlx::query_scalar("SELECT CAST(@@innodb_lock_wait_timeout AS SIGNED)")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    assert_eq!(setting, 7);
    drop(held);
    assert_eq!(
        sessions_on(&db, &pool, 1).await,
        1,
        "the migration's connection is closed"
    );
    let mut read = store.read().await.unwrap();
    assert_eq!(
        read.products()
            .count(&ProductFilter::default())
            .await
            .unwrap(),
        0
    );
    drop(read);
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_pool_without_migrations_leaves_the_schema_alone() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 2, None).await;
    let store = from_pool(&pool, MariaDbOptions::default().with_run_migrations(false)).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM `information_schema`.`TABLES` WHERE `TABLE_SCHEMA` = DATABASE() \
         AND `TABLE_NAME` IN ('products', 'stockroom_migrations')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    store.migrate().await.unwrap();
    assert_eq!(count_products(&store).await, 0);
    assert!(
        store.config().is_none(),
        "no StoreConfig behind a borrowed pool"
    );
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// The application's migrations 1..=`count`, as it would embed them with `sqlx::migrate!`.
fn app_migrator(count: usize) -> Migrator {
    let all = [
        (
            1,
            "orders",
            "CREATE TABLE `app_orders` (`id` BIGINT PRIMARY KEY, `product_id` BINARY(16))",
        ),
        (
            2,
            "notes",
            "CREATE TABLE `app_notes` (`id` BIGINT PRIMARY KEY, `body` TEXT)",
        ),
    ];
    Migrator::with_migrations(
        all[..count]
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The versions recorded in `table`, in order.
async fn versions(pool: &MySqlPool, table: &str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT `version` FROM `{table}` ORDER BY `version`"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Stockroom's migrations, bookkept in `stockroom_migrations`, and the application's sqlx
/// migrations, in `_sqlx_migrations`, on the same pool: either may run first, and new ones of
/// either apply later; run at the same time (three stores and the application's migrator),
/// each applies its own once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_sqlx_migrations_share_the_pool_in_either_order_and_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 3, None).await;
    app_migrator(1).run(&pool).await.unwrap();
    let store = from_pool(&pool, MariaDbOptions::default()).await;
    let stockroom = versions(&pool, "stockroom_migrations").await;
    assert!(!stockroom.is_empty());
    app_migrator(2).run(&pool).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(versions(&pool, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(versions(&pool, "stockroom_migrations").await, stockroom);
    store.close().await;

    let other = TestDatabase::create().await.unwrap();
    let other_pool = app_pool(&other, 5, None).await;
    let stores = futures_util::future::join_all(
        (0..3).map(|_| MariaDbStore::from_pool(other_pool.clone(), MariaDbOptions::default())),
    );
    let migrator = app_migrator(2);
    let (stores, applied) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(stores, migrator.run(&other_pool))
    })
    .await
    .expect("neither waits for the other for long");
    applied.expect("the application's migrator is not disturbed by Stockroom's");
    for store in stores {
        let store = store.expect("every concurrent from_pool succeeds");
        assert_eq!(count_products(&store).await, 0);
        store.close().await;
    }
    assert_eq!(versions(&other_pool, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(
        versions(&other_pool, "stockroom_migrations").await,
        stockroom
    );
    other_pool.close().await;
    other.drop_now().await;
    pool.close().await;
    db.drop_now().await;
}

//! A store on the application's own pool (`PostgresStore::from_pool`): it shares the pool's
//! connections and data, leaves the pool open when closed, keeps the application's session
//! settings as they were, and still bounds a unit of work's or a transfer's wait for a lock.

mod support;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use stockroom_core::{
    transfer_stock, Error, ProductFilter, RetryPolicy, StockDelta, Store, StoreExt, TransferRequest,
};
use stockroom_postgres::{PostgresOptions, PostgresStore};
use support::{count_products, product, seed_products, TestDatabase};
use uuid::Uuid;

/// The application's pool on the test database: at most `max` connections, named `the-app`.
async fn app_pool(db: &TestDatabase, max: u32) -> PgPool {
    let options: PgConnectOptions = db.url().parse().unwrap();
    PgPoolOptions::new()
        .max_connections(max)
        .connect_with(options.application_name("the-app"))
        .await
        .unwrap()
}

async fn from_pool(pool: &PgPool, options: PostgresOptions) -> PostgresStore {
    PostgresStore::from_pool(pool.clone(), options)
        .await
        .unwrap_or_else(|e| panic!("from_pool: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_pool_shares_its_data_and_connections() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 2).await;
    let store = from_pool(&pool, PostgresOptions::default()).await;
    // The application writes a product with its own SQL on its own pool …
    sqlx::query(
        "INSERT INTO products (id, name, slug, sku, status, stock, search_text, created_at, \
         updated_at) VALUES ($1, 'Raw mug', 'raw-mug', 'RAW-1', 'draft', 4, 'raw mug', now(), now())",
    )
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    // … and Stockroom sees it, on a connection of that pool (named by the application).
    let mut read = store.read().await.unwrap();
    let found = read.products().by_slug("raw-mug").await.unwrap();
    assert_eq!(found.map(|p| p.stock), Some(4));
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = $1 \
         AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        names,
        ["the-app"],
        "Stockroom opened no connection of its own"
    );
    drop(read);
    // What Stockroom commits, the application reads.
    seed_products(&store, [1]).await;
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE slug = 'product-1'")
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
    let pool = app_pool(&db, 3).await;
    let store = from_pool(&pool, PostgresOptions::default()).await;
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
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&pool)
        .await
        .expect("the application's pool still serves it");
    assert_eq!(products, 0, "the unit of work in flight was rolled back");
    // Another store on the same pool works as before.
    let again = from_pool(&pool, PostgresOptions::default()).await;
    assert_eq!(count_products(&again).await, 0);
    again.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_timeout_bounds_a_unit_of_work_on_a_borrowed_pool() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // The application's sessions wait for locks without limit (PostgreSQL's default).
    let pool = app_pool(&db, 4).await;
    let options = PostgresOptions::default().with_lock_timeout(Some(Duration::from_millis(200)));
    let store = from_pool(&pool, options).await;
    let [p] = seed_products(&store, [1]).await;
    let mut holder = store.begin().await.unwrap();
    holder.products().lock(&[p.id]).await.unwrap();
    let mut waiter = store.begin().await.unwrap();
    let started = std::time::Instant::now();
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
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    waiter.rollback().await.unwrap();
    holder.rollback().await.unwrap();
    // Set for Stockroom's transactions only: the application's sessions keep their setting.
    for _ in 0..4 {
        let setting: String = sqlx::query_scalar("SHOW lock_timeout")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(setting, "0");
    }
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// A transfer is one statement without `BEGIN`, so on a borrowed pool the statement sets the
/// lock timeout for itself: it gives up on a locked row as `Transient` instead of waiting for
/// as long as the row is held, and the application's sessions keep their setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_timeout_bounds_a_transfer_on_a_borrowed_pool() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db, 4).await;
    let options = PostgresOptions::default().with_lock_timeout(Some(Duration::from_millis(200)));
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
    for _ in 0..4 {
        let setting: String = sqlx::query_scalar("SHOW lock_timeout")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(setting, "0");
    }
    store
        .transfer(&request)
        .await
        .expect("the row is free again");
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_on_a_one_connection_pool_keeps_the_sessions_settings() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // One connection: the migration must not need a second one, and it is the connection the
    // application gets back afterwards.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET lock_timeout = '7s'").await?;
                Ok(())
            })
        })
        .connect(db.url())
        .await
        .unwrap();
    let store = tokio::time::timeout(
        Duration::from_secs(30),
        PostgresStore::from_pool(pool.clone(), PostgresOptions::default()),
    )
    .await
    .expect("migrating on a one-connection pool does not wait for a second connection")
    .unwrap();
    let setting: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        setting, "7s",
        "the migration restored the session's lock_timeout"
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
    let pool = app_pool(&db, 2).await;
    let store = from_pool(&pool, PostgresOptions::default().with_run_migrations(false)).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('products', 'stockroom_migrations')",
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

//! The isolation level: what Stockroom asks for (`PostgresOptions::isolation`) is what its
//! transactions run at, whatever the database's default; without one the default applies; and
//! at SERIALIZABLE, contended units of work run through the retry runner all commit, exactly.
//!
//! Each test sets its own database's default to SERIALIZABLE (`ALTER DATABASE … SET
//! default_transaction_isolation`), so the tests mean the same under every role; CI also runs
//! the whole conformance suite as a role whose default is SERIALIZABLE.

mod support;

use std::sync::Arc;

use futures_util::future::join_all;
use sqlx::PgPool;
use stockroom_core::{RetryPolicy, StockDelta, Store, StoreExt, TransferRequest, UnitOfWork};
use stockroom_postgres::{connection, IsolationLevel, PostgresOptions, PostgresStore};
use support::{seed_products, TestDatabase};

/// Makes SERIALIZABLE the default of `db` for the sessions that start from now on.
async fn serializable_by_default(db: &TestDatabase) {
    let mut admin = support::admin().await;
    let sql = format!(
        "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
        db.name()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn store_with(db: &TestDatabase, isolation: Option<IsolationLevel>) -> PostgresStore {
    let config = db.config();
    let options = PostgresOptions::from_config(&config).with_isolation(isolation);
    PostgresStore::connect_with(&config, options).await.unwrap()
}

/// `SHOW transaction_isolation` inside a unit of work of `store`.
async fn level_of_a_unit_of_work(store: &PostgresStore) -> String {
    let mut uow: Box<dyn UnitOfWork> = store.begin().await.unwrap();
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(connection(uow.as_mut()).unwrap())
        .await
        .unwrap();
    uow.rollback().await.unwrap();
    level
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_runs_at_the_level_asked_for() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    serializable_by_default(&db).await;
    let asked = store_with(&db, Some(IsolationLevel::ReadCommitted)).await;
    let default = store_with(&db, None).await;
    let levels = (
        level_of_a_unit_of_work(&asked).await,
        level_of_a_unit_of_work(&default).await,
    );
    assert_eq!(
        (levels.0.as_str(), levels.1.as_str()),
        ("read committed", "serializable"),
        "(asked for READ COMMITTED, asked for nothing) on a SERIALIZABLE database"
    );
    asked.close().await;
    default.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borrowed_pool_runs_units_of_work_and_transfers_at_the_level_asked_for() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = PgPool::connect(db.url()).await.unwrap();
    let options = PostgresOptions::default().with_isolation(Some(IsolationLevel::Serializable));
    let store = PostgresStore::from_pool(pool.clone(), options)
        .await
        .unwrap();
    assert_eq!(level_of_a_unit_of_work(&store).await, "serializable");
    let [a, b] = seed_products(&store, [1, 2]).await; // 10 units each
    let moved = store
        .transfer(&TransferRequest::new(a.id, b.id, 4))
        .await
        .unwrap();
    assert_eq!(moved.quantity, 4);
    // The application's own sessions keep their default.
    let (theirs, default): (String, String) = sqlx::query_as(
        "SELECT current_setting('transaction_isolation'), \
         current_setting('default_transaction_isolation')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        theirs, default,
        "the application's session runs at its default"
    );
    assert_ne!(theirs, "repeatable read", "the application's session");
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// Eight tasks each add one unit to the same product ten times, each increment a unit of work
/// of its own through the retry runner, at SERIALIZABLE: the concurrent writers fail with
/// serialization failures, which the runner retries until every increment has committed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_units_of_work_through_the_retry_runner_all_commit_at_serializable() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    serializable_by_default(&db).await;
    let pg = store_with(&db, None).await;
    let [product] = seed_products(&pg, [1]).await; // 10 units
    let store: Arc<dyn Store> = Arc::new(pg);
    let policy = RetryPolicy::default();
    let tasks = (0..8).map(|_| {
        let store = Arc::clone(&store);
        let policy = policy.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                store
                    .run(&policy, |uow| {
                        Box::pin(async move {
                            // Read, then write what was read: a read-modify-write that
                            // SERIALIZABLE refuses to interleave.
                            let now = uow.products().get(product.id).await?.unwrap();
                            let one = StockDelta::new(1).unwrap();
                            let after = uow.products().adjust_stock(product.id, one).await?;
                            assert_eq!(after.stock, now.stock + 1);
                            Ok(())
                        })
                    })
                    .await
                    .expect("every increment commits, however often it is retried");
            }
        })
    });
    for task in join_all(tasks).await {
        task.unwrap();
    }
    let mut read = store.read().await.unwrap();
    let stock = read
        .products()
        .get(product.id)
        .await
        .unwrap()
        .unwrap()
        .stock;
    assert_eq!(stock, 10 + 80, "ten, plus eight tasks times ten increments");
    drop(read);
    store.close().await;
    db.drop_now().await;
}

//! Every public future of the adapter is `Send`: this file compiles only if `tokio::spawn`
//! (which requires `Send + 'static`) accepts each of them, and running it checks that each
//! spawned operation did its work on a multi-thread runtime.

mod support;

use std::sync::Arc;

use sqlx::PgPool;
use stockroom_core::{RetryPolicy, Store, StoreExt, TransferRequest};
use stockroom_postgres::{connection, PostgresOptions, PostgresStore};
use support::{product, TestDatabase};
use tokio::task::JoinHandle;

/// Awaits a spawned task, failing the test if it panicked.
async fn joined<T>(task: JoinHandle<T>) -> T {
    task.await.expect("the spawned task completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_can_be_spawned() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config();
    let store = joined(tokio::spawn(async move {
        PostgresStore::connect(&config).await
    }))
    .await
    .unwrap();
    let store = Arc::new(store);

    let s = Arc::clone(&store);
    joined(tokio::spawn(async move { s.migrate().await }))
        .await
        .unwrap();
    let s = Arc::clone(&store);
    joined(tokio::spawn(async move { s.health().await }))
        .await
        .unwrap();

    let s = Arc::clone(&store);
    let [a, b] = joined(tokio::spawn(async move {
        let mut uow = s.begin().await.unwrap();
        let a = uow.products().create(product(1)).await.unwrap();
        let b = uow.products().create(product(2)).await.unwrap();
        uow.commit().await.unwrap();
        [a, b]
    }))
    .await;

    let s = Arc::clone(&store);
    let movement = joined(tokio::spawn(async move {
        s.transfer(&TransferRequest::new(a.id, b.id, 3)).await
    }))
    .await
    .unwrap();
    assert_eq!(movement.quantity, 3);

    // The retry runner, with the application's own SQL in the unit of work.
    let s = Arc::clone(&store);
    let answer: i32 = joined(tokio::spawn(async move {
        s.run(&RetryPolicy::default(), |uow| {
            Box::pin(async move {
                let conn = connection(uow)?;
                sqlx::query_scalar("SELECT 42")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| stockroom_core::Error::backend("select", e))
            })
        })
        .await
    }))
    .await
    .unwrap();
    assert_eq!(answer, 42);

    let s = Arc::clone(&store);
    let stock = joined(tokio::spawn(async move {
        let mut read = s.read().await?;
        read.products().get(b.id).await
    }))
    .await
    .unwrap()
    .map(|p| p.stock);
    assert_eq!(stock, Some(13));

    let pool = PgPool::connect(db.url()).await.unwrap();
    let borrowed = joined(tokio::spawn(PostgresStore::from_pool(
        pool.clone(),
        PostgresOptions::default(),
    )))
    .await
    .unwrap();
    let borrowed = Arc::new(borrowed);
    let s = Arc::clone(&borrowed);
    joined(tokio::spawn(async move { s.close().await })).await;
    assert!(!pool.is_closed());

    let s = Arc::clone(&store);
    joined(tokio::spawn(async move { s.close().await })).await;
    assert!(store.health().await.is_err(), "closed by the spawned task");
    pool.close().await;
    db.drop_now().await;
}

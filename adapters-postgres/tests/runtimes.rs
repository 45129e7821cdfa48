//! A store shared by threads that each run a tokio runtime of their own: its connections belong
//! to the runtime that opened them, and the store outlives that runtime.

mod support;

use std::future::Future;
use std::sync::Arc;

use stockroom_core::{ProductFilter, Store, StoreExt, TransferRequest};
use stockroom_postgres::PostgresStore;
use support::{count_products, product, TestDatabase};

/// Runs `work` to completion on a runtime of its own, on a thread of its own, and shuts the
/// runtime down before returning what `work` returned.
fn on_own_runtime<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(work)
        // The runtime shuts down here, and with it every socket it registered.
    })
    .join()
    .expect("the thread's work panicked")
}

/// The first thread's runtime opens the pool's connections and ends; the next thread, on a
/// runtime of its own, gets every kind of session from the same store against the same healthy
/// server, with and without `test_before_acquire`: a connection whose runtime is gone is replaced, never
/// handed to a caller. The store is dropped last, outside any runtime.
#[test]
fn a_store_outlives_the_runtime_that_opened_its_connections() {
    for test_before_acquire in [false, true] {
        let Some(db) = on_own_runtime(TestDatabase::create()) else {
            return;
        };
        let mut config = db.config().with_min_connections(3).with_max_connections(4);
        config.test_before_acquire = test_before_acquire;
        let store = on_own_runtime(async move {
            let store = Arc::new(PostgresStore::connect(&config).await.unwrap());
            let [a, b] = support::seed_products(&store, [1, 2]).await;
            // Every connection of the pool busy at once, so each was opened by this runtime.
            let sessions = futures_util::future::join_all((0..4).map(|_| store.read())).await;
            drop(sessions);
            store
                .transfer(&TransferRequest::new(a.id, b.id, 1))
                .await
                .unwrap();
            (store, [a.id, b.id])
        });
        let (store, [a, b]) = store;
        let again = Arc::clone(&store);
        on_own_runtime(async move {
            again.health().await.expect("health on a new runtime");
            let mut read = again.read().await.unwrap();
            let count = read.products().count(&ProductFilter::default()).await;
            assert_eq!(count.expect("a read on a new runtime"), 2);
            drop(read);
            again
                .transfer(&TransferRequest::new(b, a, 1))
                .await
                .expect("a transfer on a new runtime");
            let mut uow = again
                .begin()
                .await
                .expect("a unit of work on a new runtime");
            uow.products().create(product(3)).await.unwrap();
            uow.commit().await.unwrap();
            assert_eq!(count_products(&again).await, 3);
        });
        // The last handle goes away outside any runtime.
        drop(store);
        on_own_runtime(db.drop_now());
    }
}

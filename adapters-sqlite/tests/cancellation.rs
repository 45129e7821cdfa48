//! Every public future dropped at every await, on SQLite, with the file's own view after each
//! drop: another connection takes the write lock (`BEGIN IMMEDIATE`) within a short bound, so no
//! connection of the store still holds it. The store's operations run the conformance crate's
//! sweep (`stockroom_conformance::cancel`), which also checks that nothing was half-applied,
//! on a file and on the private in-memory database (every call on the blocking pool there);
//! `connect` is swept here.

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use stockroom_conformance::cancel::{polled_at_most, run_for_at_most, sweep_both_ways, Operation};
use stockroom_core::{NewProduct, Store, StoreExt, TransferRequest};
use stockroom_sqlite::{SqliteOptions, SqliteStore};
use support::{create_products, TempDb};

/// Another connection takes the write lock on `db`'s file within five seconds (a call the
/// drop abandoned stops at its next check), then lets it go.
fn write_lock_is_free(db: &TempDb) {
    let other = Connection::open(db.path()).unwrap();
    other.busy_timeout(Duration::from_secs(5)).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("another connection takes the write lock: no connection of the store holds it");
    other.execute_batch("ROLLBACK").unwrap();
}

/// Each operation of a store on a file, swept, with the write lock checked after every drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_dropped_anywhere_leaves_the_write_lock_free() {
    let db = TempDb::new("stockroom-cancel");
    let config = db.config().with_acquire_timeout(Duration::from_secs(10));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&config).await.unwrap());
    for operation in Operation::ALL {
        sweep_both_ways(&store, operation, || async { write_lock_is_free(&db) }).await;
    }
    store.close().await;
}

/// Each operation of a store on the private in-memory database, where every call runs on the
/// blocking pool (so a drop abandons calls in flight there), swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_dropped_anywhere_on_the_in_memory_database_leaves_nothing_behind() {
    let options = SqliteOptions::in_memory().with_acquire_timeout(Duration::from_secs(10));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect_with(options).await.unwrap());
    for operation in Operation::ALL {
        sweep_both_ways(&store, operation, || async {}).await;
    }
    store.close().await;
}

/// A store on `db`'s file works: a transfer between two new products.
async fn works(db: &TempDb) {
    let store = SqliteStore::connect(&db.config())
        .await
        .expect("connect after the drop");
    let new = |n: u32| {
        NewProduct::new(&format!("W {n}"), &format!("w-{n}"), &format!("W-{n}"))
            .unwrap()
            .with_stock(5)
            .unwrap()
    };
    let ids = create_products(&store, vec![new(1), new(2)]).await;
    store
        .transfer(&TransferRequest::new(ids[0], ids[1], 1))
        .await
        .expect("a transfer after the drop");
    let mut uow = store.begin().await.unwrap();
    for id in ids {
        uow.products().hard_delete(id).await.unwrap();
    }
    uow.commit().await.unwrap();
    store.close().await;
}

/// `SqliteStore::connect` on a new file, migrations included, dropped after 0, 1, 2, … polls
/// and then after 0, 1, 2, … hundredths of the time a whole connect takes: the write lock is
/// free again (the migrating connection, left to finish on the blocking pool, lets it go), and
/// the next connect migrates what is left and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_connect_leaves_the_write_lock_free_and_the_next_connect_works() {
    for spread in [false, true] {
        let db = TempDb::new("stockroom-cancel-connect");
        let config = db.config();
        let step = if spread {
            let probe = TempDb::new("stockroom-cancel-probe");
            let started = Instant::now();
            SqliteStore::connect(&probe.config())
                .await
                .unwrap()
                .close()
                .await;
            (started.elapsed() / 100).max(Duration::from_micros(1))
        } else {
            Duration::ZERO
        };
        for n in 0u32.. {
            let connect = SqliteStore::connect(&config);
            let done = if spread {
                run_for_at_most(step * n, connect).await
            } else {
                polled_at_most(n as usize, connect).await
            };
            if db.path().exists() {
                write_lock_is_free(&db);
            }
            works(&db).await;
            if let Some(store) = done {
                store.expect("a connect that completed").close().await;
                break;
            }
        }
    }
}

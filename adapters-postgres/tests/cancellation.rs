//! Every public future dropped at every await, on PostgreSQL, with the server's own view after
//! each drop: no session of the test database is left idle in a transaction or holding a lock
//! (`pg_stat_activity`, `pg_locks`). The store's operations run the conformance crate's sweep
//! (`stockroom_conformance::cancel`), which also checks that nothing was half-applied; the
//! constructors (`connect`, `from_pool`) and `migrate` are swept here.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use stockroom_conformance::cancel::{polled_at_most, run_for_at_most, sweep_both_ways, Operation};
use stockroom_core::{Store, StoreConfig, StoreExt, TransferRequest};
use stockroom_postgres::{PostgresOptions, PostgresStore};
use support::{seed_products, TestDatabase};

/// A session that holds something: its pid, state, last query and granted locks.
type Holder = (i32, Option<String>, Option<String>, Option<String>);

/// Waits (up to ten seconds: a dropped transaction is rolled back when its connection is next
/// used or pinged, from a task of sqlx's) until no session of `db` but the caller's own is idle
/// in a transaction or holds a lock; fails naming them otherwise.
async fn nothing_held_on(db: &TestDatabase) {
    const HOLDERS: &str = "SELECT a.pid, a.state, a.query, \
        (SELECT string_agg(l.locktype || ' ' || l.mode, ', ') FROM pg_locks l \
         WHERE l.pid = a.pid AND l.granted) AS locks \
        FROM pg_stat_activity a \
        WHERE a.datname = $1 AND a.pid <> pg_backend_pid() \
        AND (a.state LIKE 'idle in transaction%' \
             OR EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.granted))";
    let mut admin = support::admin().await;
    let started = Instant::now();
    loop {
        let holders: Vec<Holder> = sqlx::query_as(HOLDERS)
            .bind(db.name())
            .fetch_all(&mut admin)
            .await
            .unwrap();
        if holders.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sessions still holding something (pid, state, query, locks): {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.close().await.unwrap();
}

/// Each operation of the store, swept (see `stockroom_conformance::cancel`), with the server's
/// sessions checked after every drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_dropped_anywhere_leaves_no_session_holding_anything() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    for operation in Operation::ALL {
        sweep_both_ways(&store, operation, || nothing_held_on(&db)).await;
    }
    store.close().await;
    db.drop_now().await;
}

/// Drops what `start` makes after 0, 1, 2, … polls, then after 0, 1, 2, … hundredths of the
/// time a whole run took, until it completes; after each drop, `check` runs. A store it
/// completed with is closed.
async fn sweep_constructor<S, SF, C, CF>(mut start: S, mut check: C)
where
    S: FnMut() -> SF,
    SF: Future<Output = stockroom_core::Result<Option<PostgresStore>>>,
    C: FnMut() -> CF,
    CF: Future<Output = ()>,
{
    for n in 0.. {
        let done = polled_at_most(n, start()).await;
        check().await;
        if let Some(store) = done {
            if let Some(store) = store.expect("completed") {
                store.close().await;
            }
            eprintln!("completed within {n} polls");
            break;
        }
    }
    let started = Instant::now();
    if let Some(store) = start().await.expect("a whole run") {
        store.close().await;
    }
    let step = (started.elapsed() / 100).max(Duration::from_micros(1));
    for n in 0u32.. {
        let done = run_for_at_most(step * n, start()).await;
        check().await;
        if let Some(store) = done {
            if let Some(store) = store.expect("completed") {
                store.close().await;
            }
            eprintln!("completed within {n} steps of {step:?}");
            break;
        }
    }
}

/// A store on `config` works: a transfer between two new products.
async fn works(config: &StoreConfig) {
    let store = PostgresStore::connect(config)
        .await
        .expect("connect after the drop");
    let [a, b] = seed_products(&store, [1, 2]).await;
    store
        .transfer(&TransferRequest::new(a.id, b.id, 1))
        .await
        .expect("a transfer after the drop");
    let mut uow = store.begin().await.unwrap();
    uow.products().hard_delete(a.id).await.unwrap();
    uow.products().hard_delete(b.id).await.unwrap();
    uow.commit().await.unwrap();
    store.close().await;
}

/// `PostgresStore::connect` on a fresh database, migrations included, dropped anywhere: no
/// session is left holding a lock (the migrations' advisory lock among them), and the next
/// connect migrates what is left and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_connect_leaves_no_lock_and_the_next_connect_works() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config();
    sweep_constructor(
        || async { PostgresStore::connect(&config).await.map(Some) },
        || async {
            nothing_held_on(&db).await;
            works(&config).await;
            nothing_held_on(&db).await;
        },
    )
    .await;
    db.drop_now().await;
}

/// `PostgresStore::from_pool` on the application's pool, migrations included, dropped
/// anywhere: the application's pool keeps no connection holding a lock or a transaction
/// (Stockroom's advisory lock among them), its connections work, and the next `from_pool`
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_from_pool_leaves_the_applications_pool_clean() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(db.url())
        .await
        .unwrap();
    sweep_constructor(
        || PostgresStore::from_pool(pool.clone(), PostgresOptions::default()).map_ok_some(),
        || async {
            nothing_held_on(&db).await;
            // Every connection of the application's pool answers (and none is in a
            // transaction: `nothing_held_on` saw no session idle in one).
            let mut held = Vec::new();
            for _ in 0..3 {
                let mut conn = pool.acquire().await.expect("the application's pool");
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .expect("a connection of the application's pool");
                held.push(conn);
            }
            drop(held);
        },
    )
    .await;
    pool.close().await;
    db.drop_now().await;
}

/// `PostgresStore::migrate` on a store that did not migrate at connect, dropped anywhere:
/// nothing is left holding a lock, and the next `migrate` completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_migrate_leaves_no_lock_and_the_next_migrate_works() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_run_migrations(false);
    let store = PostgresStore::connect(&config).await.unwrap();
    let store = &store;
    sweep_constructor(
        || async { store.migrate().await.map(|()| None) },
        || async {
            nothing_held_on(&db).await;
        },
    )
    .await;
    works(&db.config()).await;
    store.close().await;
    db.drop_now().await;
}

/// `Ok(Some(store))` of a constructor's answer.
trait MapOkSome: Future<Output = stockroom_core::Result<PostgresStore>> + Sized {
    async fn map_ok_some(self) -> stockroom_core::Result<Option<PostgresStore>> {
        self.await.map(Some)
    }
}

impl<F: Future<Output = stockroom_core::Result<PostgresStore>>> MapOkSome for F {}

//! Deadlines and dropped calls on SQLite: a call on the blocking pool that its caller gave up on
//! (the retry runner's deadline, or a future dropped) stops waiting for the write lock, runs no
//! `BEGIN` or `COMMIT` afterwards, and has its statement interrupted, so that it applies
//! nothing after its answer (or after nobody awaits one).

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use rusqlite::Connection;
use stockroom_core::{
    transfer_stock, Error, NewProduct, ProductId, RetryPolicy, Store, StoreExt, TransferRequest,
};
use stockroom_sqlite::{with_connection, SqliteOptions, SqliteStore};
use support::{create_products, TempDb};

/// The deadline of the operations that wait behind the write lock.
const DEADLINE: Duration = Duration::from_millis(800);

/// A store on `db` with a busy timeout far longer than the deadlines here (a wait that is not
/// cut short outlives them), and an acquire timeout of five seconds.
async fn store(db: &TempDb) -> SqliteStore {
    let config = db.config().with_acquire_timeout(Duration::from_secs(5));
    let options = SqliteOptions::from_config(&config)
        .unwrap()
        .with_busy_timeout(Duration::from_secs(30));
    SqliteStore::connect_with(options).await.unwrap()
}

/// Products `a` and `b`, with 10 in stock each.
async fn two_products(store: &SqliteStore) -> [ProductId; 2] {
    let new = |n: u32| {
        NewProduct::new(&format!("P {n}"), &format!("p-{n}"), &format!("P-{n}"))
            .unwrap()
            .with_stock(10)
            .unwrap()
    };
    let ids = create_products(store, vec![new(1), new(2)]).await;
    [ids[0], ids[1]]
}

/// Another connection to the file (another process, say) that holds the write lock.
fn hold_the_write_lock(db: &TempDb) -> Connection {
    let other = Connection::open(db.path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other
}

/// The stocks of `ids` and the size of the ledger, once the store's writer is free: a unit of
/// work waits for the writer, which a call still running on the blocking pool holds.
async fn state_once_the_writer_is_free(
    store: &SqliteStore,
    ids: [ProductId; 2],
) -> (Vec<i64>, u64) {
    let mut uow = store.begin().await.expect("the writer is free");
    let stocks = uow
        .products()
        .lock(&ids)
        .await
        .unwrap()
        .iter()
        .map(|p| p.stock)
        .collect();
    let ledger = uow.movements().count().await.unwrap();
    uow.rollback().await.unwrap();
    (stocks, ledger)
}

/// The case: a transfer without an idempotency key, behind a write lock another
/// connection holds, answers `Transient` at its deadline, and its `BEGIN IMMEDIATE` stops
/// waiting then: when the other connection commits, nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_past_its_deadline_behind_a_write_lock_held_elsewhere_applies_nothing() {
    let db = TempDb::new("stockroom-deadline");
    let store = store(&db).await;
    let ids = two_products(&store).await;
    let other = hold_the_write_lock(&db);
    let policy = RetryPolicy::default().with_deadline(DEADLINE);
    let started = Instant::now();
    let answer = transfer_stock(&store, &TransferRequest::new(ids[0], ids[1], 3), &policy).await;
    let took = started.elapsed();
    assert!(matches!(answer, Err(Error::Transient { .. })), "{answer:?}");
    assert!(
        took <= DEADLINE + Duration::from_secs(4),
        "answered after {took:?}"
    );
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(
        state_once_the_writer_is_free(&store, ids).await,
        (vec![10, 10], 0)
    );
    store.close().await;
}

/// A transfer whose future is dropped while its `BEGIN IMMEDIATE` waits for a write lock held
/// elsewhere stops waiting: when the other connection commits, nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transfer_stops_waiting_for_the_write_lock() {
    let db = TempDb::new("stockroom-dropped");
    let store = store(&db).await;
    let ids = two_products(&store).await;
    let other = hold_the_write_lock(&db);
    let request = TransferRequest::new(ids[0], ids[1], 3);
    let dropped = tokio::time::timeout(Duration::from_millis(300), store.transfer(&request)).await;
    assert!(dropped.is_err(), "the transfer went through: {dropped:?}");
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(
        state_once_the_writer_is_free(&store, ids).await,
        (vec![10, 10], 0)
    );
    store.close().await;
}

/// A unit of work whose call on the blocking pool (the application's SQL, here a statement
/// that would run for minutes) is dropped has that statement interrupted: the writer is free
/// again at once, not when the statement would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_on_the_blocking_pool_is_interrupted() {
    let db = TempDb::new("stockroom-interrupted");
    let store = store(&db).await;
    let mut uow = store.begin().await.unwrap();
    let endless = with_connection(uow.as_mut(), |c| {
        c.query_row(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000000) \
             SELECT count(*) FROM n",
            [],
            |r| r.get::<_, i64>(0),
        )
    });
    let dropped = tokio::time::timeout(Duration::from_millis(300), endless).await;
    assert!(dropped.is_err(), "the statement ended: {dropped:?}");
    drop(uow);
    let mut next = store
        .begin()
        .await
        .expect("the writer is free within the acquire timeout");
    next.products()
        .create(NewProduct::new("After", "after", "AFTER").unwrap())
        .await
        .unwrap();
    next.commit().await.unwrap();
    store.close().await;
}

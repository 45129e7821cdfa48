//! Honest answers under deadlines and timeouts: `Transient` only when nothing was applied and
//! nothing will be. The server, not the client, ends a wait that runs out of time (a
//! `lock_timeout` or `statement_timeout` set from the time left), so that the refusal is
//! definite; a commit still running when the retry runner gives up is `AmbiguousCommit`.

mod support;

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use stockroom_core::{
    transfer_stock, Error, NewProduct, Product, RetryPolicy, StockDelta, Store, StoreExt,
    TransferRequest,
};
use stockroom_postgres::{PostgresOptions, PostgresStore};
use support::{seed_products, TestDatabase};

/// The deadline of the operations that wait behind a held row.
const DEADLINE: Duration = Duration::from_millis(800);

/// A generous bound on how long after its deadline an operation answers.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// A connection of its own that holds `product`'s row locked (`SELECT … FOR UPDATE` in an open
/// transaction), as another application's transaction would.
async fn hold_row(db: &TestDatabase, product: &Product) -> PgConnection {
    let mut holder = PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT id FROM products WHERE id = '{}' FOR UPDATE",
        product.id
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    holder
}

async fn commit(mut holder: PgConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
}

/// How many sessions of `db` wait for a lock now, asked for up to a second until none does: a
/// statement the client gave up on that still waits on the server would apply once the lock
/// is free.
async fn sessions_waiting_for_a_lock(db: &TestDatabase) -> i64 {
    let mut admin = support::admin().await;
    let mut waiting = 0;
    for _ in 0..20 {
        waiting = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(db.name())
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.close().await.unwrap();
    waiting
}

/// The stocks of `products` and the size of the ledger, read on the primary.
async fn state(store: &PostgresStore, products: &[&Product]) -> (Vec<i64>, u64) {
    let mut read = store.read_primary().await.unwrap();
    let mut stocks = Vec::new();
    for p in products {
        stocks.push(read.products().get(p.id).await.unwrap().unwrap().stock);
    }
    (stocks, read.movements().count().await.unwrap())
}

fn expect_transient_in_time<T: std::fmt::Debug>(
    answer: &stockroom_core::Result<T>,
    took: Duration,
) {
    assert!(
        matches!(answer, Err(Error::Transient { .. })),
        "the answer at the deadline: {answer:?}"
    );
    assert!(took <= DEADLINE + ANSWER_WITHIN, "answered after {took:?}");
}

/// The case: a transfer without an idempotency key, its source row locked by another
/// session, answers `Transient` at its deadline, and its statement no longer waits on the
/// server (its `lock_timeout` was the time left): when the holder commits, nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_past_its_deadline_behind_a_row_locked_elsewhere_applies_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    let holder = hold_row(&db, &a).await;
    let policy = RetryPolicy::default().with_deadline(DEADLINE);
    let started = Instant::now();
    let answer = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 3), &policy).await;
    expect_transient_in_time(&answer, started.elapsed());
    assert_eq!(
        sessions_waiting_for_a_lock(&db).await,
        0,
        "the move still waits on the server"
    );
    commit(holder).await;
    assert_eq!(state(&store, &[&a, &b]).await, (vec![10, 10], 0));
    store.close().await;
    db.drop_now().await;
}

/// A unit of work run by the retry runner, waiting for a row locked elsewhere, answers
/// `Transient` at its deadline and no longer waits on the server (its `BEGIN` set the
/// transaction's `lock_timeout` and `statement_timeout` to the time left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_past_its_deadline_stops_waiting_on_the_server() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    let holder = hold_row(&db, &a).await;
    let policy = RetryPolicy::default().with_deadline(DEADLINE);
    let started = Instant::now();
    let answer = store
        .run(&policy, |uow| {
            Box::pin(async move {
                uow.products()
                    .adjust_stock(b.id, StockDelta::new(1)?)
                    .await?;
                uow.products()
                    .adjust_stock(a.id, StockDelta::new(-1)?)
                    .await?;
                Ok(())
            })
        })
        .await;
    expect_transient_in_time(&answer, started.elapsed());
    assert_eq!(
        sessions_waiting_for_a_lock(&db).await,
        0,
        "the unit of work's statement still waits on the server"
    );
    commit(holder).await;
    assert_eq!(state(&store, &[&a, &b]).await, (vec![10, 10], 0));
    store.close().await;
    db.drop_now().await;
}

/// Installs, on `table`, a deferred trigger that sleeps `seconds` at commit: a commit that is
/// slow on the server (the statement timeout does not cover the commit itself).
async fn slow_commits_of(db: &TestDatabase, table: &str, seconds: f64) {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let sql = format!(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {table}
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Waits up to ten seconds for `check` to hold.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within ten seconds");
}

/// A unit of work whose `COMMIT` is still running on the server when the runner's deadline
/// (and its grace) runs out is `AmbiguousCommit`, not `Transient`: here the commit then
/// completes, so a client told `Transient` would have applied the work twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_still_running_at_the_deadline_is_an_ambiguous_commit() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    slow_commits_of(&db, "products", 3.0).await;
    let policy = RetryPolicy::default().with_deadline(Duration::from_millis(300));
    let answer = store
        .run(&policy, |uow| {
            Box::pin(async move {
                let new = NewProduct::new("Slow", "slow", "SLOW")?;
                uow.products().create(new).await?;
                Ok(())
            })
        })
        .await;
    assert!(
        matches!(answer, Err(Error::AmbiguousCommit { .. })),
        "{answer:?}"
    );
    eventually("the commit completed on the server", async || {
        let mut read = store.read_primary().await.unwrap();
        read.products().by_slug("slow").await.unwrap().is_some()
    })
    .await;
    store.close().await;
    db.drop_now().await;
}

/// A transfer whose stock move (one statement that commits by itself) is still committing when
/// the deadline and its grace run out is `AmbiguousCommit`; the move then applies, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_still_committing_at_the_deadline_is_an_ambiguous_commit() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    slow_commits_of(&db, "stock_movements", 3.0).await;
    let policy = RetryPolicy::default().with_deadline(Duration::from_millis(300));
    let answer = transfer_stock(&store, &TransferRequest::new(a.id, b.id, 3), &policy).await;
    assert!(
        matches!(answer, Err(Error::AmbiguousCommit { .. })),
        "{answer:?}"
    );
    eventually("the move committed on the server", async || {
        state(&store, &[&a, &b]).await == (vec![7, 13], 1)
    })
    .await;
    store.close().await;
    db.drop_now().await;
}

/// A store whose statements may run 300 ms and whose lock waits are unbounded, set by the
/// URL's startup options.
async fn store_with_a_short_statement_timeout(db: &TestDatabase) -> PostgresStore {
    let mut config = db.config();
    let separator = if config.url.contains('?') { '&' } else { '?' };
    config.url = format!(
        "{}{separator}options=-c%20statement_timeout%3D300ms%20-c%20lock_timeout%3D0",
        config.url
    );
    PostgresStore::connect(&config).await.unwrap()
}

/// A statement that outlives the statement timeout (here a wait for a row lock, with no lock
/// timeout) is canceled by the server (SQLSTATE 57014) and answered as `Transient`: in a unit
/// of work nothing of it is applied, and a transfer's stock move, which commits by itself, did
/// not apply either; once the row is free, nothing has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_canceled_by_the_statement_timeout_is_transient_and_applies_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store_with_a_short_statement_timeout(&db).await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    let holder = hold_row(&db, &a).await;

    let mut uow = store.begin().await.unwrap();
    uow.products()
        .adjust_stock(b.id, StockDelta::new(1).unwrap())
        .await
        .unwrap();
    let canceled = uow
        .products()
        .adjust_stock(a.id, StockDelta::new(-1).unwrap())
        .await;
    assert!(
        matches!(canceled, Err(Error::Transient { .. })),
        "{canceled:?}"
    );
    let refused = uow.commit().await;
    assert!(refused.is_err(), "the aborted transaction committed");

    let moved = transfer_stock(
        &store,
        &TransferRequest::new(a.id, b.id, 3),
        &RetryPolicy::none(),
    )
    .await;
    assert!(matches!(moved, Err(Error::Transient { .. })), "{moved:?}");

    commit(holder).await;
    assert_eq!(state(&store, &[&a, &b]).await, (vec![10, 10], 0));
    store.close().await;
    db.drop_now().await;
}

/// Every connection of Stockroom's own pool starts with the default statement timeout (30 s);
/// on a borrowed pool, a unit of work's transaction sets it for itself, and the application's
/// own sessions keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_run_with_a_statement_timeout_by_default() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    async fn in_unit_of_work(store: &PostgresStore) -> String {
        let mut uow = store.begin().await.unwrap();
        let conn = stockroom_postgres::connection(uow.as_mut()).unwrap();
        let value: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        uow.rollback().await.unwrap();
        value
    }
    let own = db.store().await;
    assert_eq!(in_unit_of_work(&own).await, "30s");
    own.close().await;

    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let borrowed = PostgresStore::from_pool(pool.clone(), PostgresOptions::default())
        .await
        .unwrap();
    assert_eq!(in_unit_of_work(&borrowed).await, "30s");
    let application: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(application, "0", "the application's own sessions");
    borrowed.close().await;
    pool.close().await;
    db.drop_now().await;
}

/// Migrations are exempt from the statement timeout, as from the lock timeout: a database
/// whose sessions allow a statement one millisecond is still migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_exempt_from_the_statement_timeout() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut admin = support::admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} SET statement_timeout = '1ms'",
        db.name()
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    let options = PostgresOptions::from_config(&db.config()).with_statement_timeout(None);
    let store = PostgresStore::connect_with(&db.config(), options)
        .await
        .expect("migrated under a one-millisecond statement timeout");
    store.close().await;
    db.drop_now().await;
}

//! The application's own SQL inside a Stockroom unit of work (`stockroom_mariadb::connection`):
//! it commits and rolls back with Stockroom's writes; a failed statement of its own is undone
//! alone (MariaDB rolls back the statement, not the transaction); and a unit of work whose
//! transaction the application's SQL ended (a `COMMIT`, a `ROLLBACK`, DDL, which commits
//! implicitly, or a deadlock, after which the server rolled it back) refuses to commit instead
//! of reporting success.
//!
//! Each test makes and drops its own database (`support::TestDatabase`).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use sqlx::{Connection, MySqlConnection};
use stockroom_core::{traced, Error, Product, Store, UnitOfWork};
use stockroom_mariadb::{classify, connection, MariaDbStore};
use stockroom_memory::MemoryStore;
use support::{count_products, product, TestDatabase};

/// A test database with Stockroom's schema and the application's own `audit` table; `None`
/// (the test is skipped) without MariaDB.
async fn setup() -> Option<(TestDatabase, MariaDbStore)> {
    let db = TestDatabase::create().await?;
    let store = db.store().await;
    let mut conn = MySqlConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE `audit` (`product_id` BINARY(16) NOT NULL, `note` TEXT NOT NULL) \
         ENGINE=InnoDB",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    Some((db, store))
}

async fn teardown(db: TestDatabase, store: MariaDbStore) {
    store.close().await;
    db.drop_now().await;
}

/// Creates product `n` through Stockroom and its audit row through the application's SQL, in
/// `uow`.
async fn create_with_audit(uow: &mut dyn UnitOfWork, n: usize) -> Product {
    let created = uow.products().create(product(n)).await.unwrap();
    let conn = connection(uow).unwrap();
    sqlx::query("INSERT INTO `audit` (`product_id`, `note`) VALUES (?, 'created')")
        .bind(created.id.as_uuid())
        .execute(&mut *conn)
        .await
        .unwrap();
    created
}

/// The audit rows committed, counted on a connection of the test's own.
async fn audit_rows(db: &TestDatabase) -> i64 {
    let mut conn = MySqlConnection::connect(db.url()).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM `audit`")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

fn assert_refused(result: Result<(), Error>, why: &str) {
    match result {
        Err(Error::Backend { message, .. }) => {
            assert!(
                message.starts_with("commit refused") && message.contains(why),
                "{message}"
            )
        }
        other => panic!("expected a refused commit ({why}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_sql_commits_with_the_unit_of_work() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    // Invisible to others until the commit.
    assert_eq!(audit_rows(&db).await, 0);
    uow.commit().await.unwrap();
    assert_eq!(count_products(&store).await, 1);
    assert_eq!(audit_rows(&db).await, 1);
    teardown(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_sql_rolls_back_with_the_unit_of_work() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    uow.rollback().await.unwrap();
    let mut dropped = store.begin().await.unwrap();
    create_with_audit(dropped.as_mut(), 2).await;
    drop(dropped);
    assert_eq!(count_products(&store).await, 0);
    assert_eq!(audit_rows(&db).await, 0);
    teardown(db, store).await;
}

/// Where PostgreSQL aborts the whole transaction after a failed statement, MariaDB undoes the
/// statement alone: the application may ignore the error, and the unit of work commits
/// everything else it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_application_statement_is_undone_alone_and_the_rest_commits() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    let failed = sqlx::query(
        "INSERT INTO `audit` (`product_id`, `note`) VALUES (?, 'one'), (NULL, 'no product')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&mut *conn)
    .await;
    assert!(failed.is_err(), "NOT NULL violated");
    create_with_audit(uow.as_mut(), 2).await;
    uow.commit().await.unwrap();
    assert_eq!(count_products(&store).await, 2);
    assert_eq!(
        audit_rows(&db).await,
        2,
        "the failed statement's first row too was undone"
    );
    teardown(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_own_commit_makes_commit_fail() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await.unwrap();
    // What the application's COMMIT committed is committed; Stockroom's commit says it did not
    // commit it.
    assert_refused(uow.commit().await, "already ended");
    assert_eq!(count_products(&store).await, 1);
    assert_eq!(audit_rows(&db).await, 1);
    teardown(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_own_rollback_makes_commit_fail() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    assert_refused(uow.commit().await, "already ended");
    assert_eq!(count_products(&store).await, 0);
    assert_eq!(audit_rows(&db).await, 0);
    // The connection went back to the pool in a usable state: units of work on it begin, lend
    // their connection and commit again.
    for n in 2..6 {
        let mut next = store.begin().await.unwrap();
        create_with_audit(next.as_mut(), n).await;
        next.commit().await.unwrap();
    }
    assert_eq!(audit_rows(&db).await, 4);
    teardown(db, store).await;
}

/// Once the application's SQL ended the transaction (here its own `ROLLBACK`), MariaDB runs
/// the next statements in autocommit, each committed at once: Stockroom's next write in the
/// unit of work is refused rather than committed on its own, and so is the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_of_stockroom_runs_after_the_applications_sql_ended_the_transaction() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    let after = uow.products().create(product(2)).await;
    assert!(after.is_err(), "refused: {after:?}");
    assert_refused(uow.commit().await, "already ended");
    assert_eq!(
        count_products(&store).await,
        0,
        "nothing committed on its own"
    );
    teardown(db, store).await;
}

/// DDL commits the transaction before it runs (MariaDB has no transactional DDL), and the
/// connection is in autocommit afterwards: the unit of work refuses to commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_commits_implicitly_makes_commit_fail() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    sqlx::raw_sql("CREATE TABLE `notes` (`id` INT PRIMARY KEY) ENGINE=InnoDB")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_refused(uow.commit().await, "already ended");
    assert_eq!(count_products(&store).await, 1, "the DDL committed it");
    teardown(db, store).await;
}

/// A deadlock in the application's SQL makes the server roll the whole transaction back
/// (1213, `Transient` through `classify`): an application that goes on regardless gets a
/// refused commit, never success, and nothing of the unit of work before the deadlock is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_the_application_ignores_makes_commit_fail() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut other = MySqlConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE `tallies` (`id` INT PRIMARY KEY, `n` INT NOT NULL) ENGINE=InnoDB; \
         INSERT INTO `tallies` VALUES (1, 0), (2, 0); \
         CREATE TABLE `bulk` (`id` INT PRIMARY KEY) ENGINE=InnoDB",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    sqlx::query("UPDATE `tallies` SET `n` = 1 WHERE `id` = 1")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The other transaction holds row 2 and has done far more, so that InnoDB picks the unit
    // of work as the deadlock's victim (it rolls back the lighter transaction).
    sqlx::raw_sql(
        "START TRANSACTION; \
         INSERT INTO `bulk` SELECT `seq` FROM `seq_1_to_2000`; \
         UPDATE `tallies` SET `n` = 2 WHERE `id` = 2",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let waiting = tokio::spawn(async move {
        let outcome = sqlx::query("UPDATE `tallies` SET `n` = 2 WHERE `id` = 1")
            .execute(&mut other)
            .await
            .map(drop);
        (other, outcome)
    });
    support::until_a_session_waits_for_a_lock(db.name()).await;
    let deadlock = sqlx::query("UPDATE `tallies` SET `n` = 1 WHERE `id` = 2")
        .execute(&mut *conn)
        .await
        .map_err(classify);
    assert!(
        matches!(&deadlock, Err(Error::Transient { .. })),
        "{deadlock:?}"
    );
    let (mut other, outcome) = waiting.await.unwrap();
    outcome.expect("the other transaction goes on");
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    // The application ignores the error and commits.
    assert_refused(uow.commit().await, "already ended");
    assert_eq!(count_products(&store).await, 0);
    assert_eq!(audit_rows(&db).await, 0);
    teardown(db, store).await;
}

/// sqlx's nested transaction on the lent connection is a savepoint inside Stockroom's
/// transaction (not a `BEGIN`, which on MariaDB would commit Stockroom's transaction first):
/// rolled back, it undoes its own statements only, and the unit of work commits the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_the_application_rolled_back_to_its_savepoint_still_commits() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    let mut nested = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO `audit` (`product_id`, `note`) VALUES (?, 'undone')")
        .bind(uuid::Uuid::now_v7())
        .execute(&mut *nested)
        .await
        .unwrap();
    let failed = sqlx::query("INSERT INTO `audit` (`product_id`, `note`) VALUES (NULL, 'no')")
        .execute(&mut *nested)
        .await;
    assert!(failed.is_err());
    nested.rollback().await.unwrap();
    // Nothing was committed yet: the product and its audit row are the unit of work's.
    assert_eq!(audit_rows(&db).await, 0);
    uow.commit().await.unwrap();
    assert_eq!(count_products(&store).await, 1);
    assert_eq!(audit_rows(&db).await, 1);
    teardown(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_works_through_a_traced_store() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let store = traced(store);
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    uow.commit().await.unwrap();
    assert_eq!(audit_rows(&db).await, 1);
    // After close, no connection is handed out.
    let mut uow = store.begin().await.unwrap();
    store.close().await;
    assert!(matches!(
        connection(uow.as_mut()),
        Err(Error::Unavailable { .. })
    ));
    drop(uow);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_unit_of_work_has_no_mariadb_connection() {
    let store = traced(MemoryStore::new());
    let mut uow = store.begin().await.unwrap();
    match connection(uow.as_mut()) {
        Err(Error::Unsupported { operation, backend }) => {
            assert_eq!(operation, "stockroom_mariadb::connection");
            assert_eq!(backend, "memory");
        }
        other => panic!(
            "expected Unsupported, got {:?}",
            other.map(|_| "a connection")
        ),
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The statements `store`'s sessions log (echo on) while `work` runs.
async fn statements_of<F: std::future::Future<Output = ()>>(work: F) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("stockroom::sql=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    work.await;
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    text
}

// One thread, so that the thread-local subscriber sees every event.
#[tokio::test(flavor = "current_thread")]
async fn only_a_unit_of_work_that_lent_its_connection_checks_before_commit() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = MariaDbStore::connect(&db.config().with_log_statements(true))
        .await
        .unwrap();
    let plain = statements_of(async {
        let mut uow = store.begin().await.unwrap();
        uow.products().create(product(1)).await.unwrap();
        uow.commit().await.unwrap();
    })
    .await;
    assert!(plain.contains("COMMIT"), "{plain}");
    assert!(!plain.contains("@@in_transaction"), "{plain}");
    let lent = statements_of(async {
        let mut uow = store.begin().await.unwrap();
        uow.products().create(product(2)).await.unwrap();
        connection(uow.as_mut()).unwrap();
        uow.commit().await.unwrap();
    })
    .await;
    assert_eq!(lent.matches("@@in_transaction").count(), 1, "{lent}");
    assert_eq!(count_products(&store).await, 2);
    store.close().await;
    db.drop_now().await;
}

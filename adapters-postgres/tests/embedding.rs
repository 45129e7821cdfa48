//! The application's own SQL inside a Stockroom unit of work (`stockroom_postgres::connection`):
//! it commits and rolls back with Stockroom's writes, and a unit of work whose transaction the
//! application's SQL aborted or ended refuses to commit instead of reporting success.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use sqlx::{Connection, PgConnection};
use stockroom_core::{traced, Error, Product, Store, UnitOfWork};
use stockroom_memory::MemoryStore;
use stockroom_postgres::{connection, PostgresStore};
use support::{count_products, product, TestDatabase};

/// A test database with Stockroom's schema and the application's own `audit` table; `None`
/// (the test is skipped) without PostgreSQL.
async fn setup() -> Option<(TestDatabase, PostgresStore)> {
    let db = TestDatabase::create().await?;
    let store = db.store().await;
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE audit (product_id uuid NOT NULL, note text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    Some((db, store))
}

async fn teardown(db: TestDatabase, store: PostgresStore) {
    store.close().await;
    db.drop_now().await;
}

/// Creates product `n` through Stockroom and its audit row through the application's SQL, in
/// `uow`.
async fn create_with_audit(uow: &mut dyn UnitOfWork, n: usize) -> Product {
    let created = uow.products().create(product(n)).await.unwrap();
    let conn = connection(uow).unwrap();
    sqlx::query("INSERT INTO audit (product_id, note) VALUES ($1, 'created')")
        .bind(created.id.as_uuid())
        .execute(&mut *conn)
        .await
        .unwrap();
    created
}

async fn audit_rows(db: &TestDatabase) -> i64 {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM audit")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_application_statement_makes_commit_fail_and_writes_nothing() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    let failed = sqlx::query("INSERT INTO audit (product_id, note) VALUES (NULL, 'no product')")
        .execute(&mut *conn)
        .await;
    assert!(failed.is_err(), "NOT NULL violated");
    // The application ignores the error; PostgreSQL has aborted the transaction.
    assert_refused(uow.commit().await, "failed");
    assert_eq!(count_products(&store).await, 0);
    assert_eq!(audit_rows(&db).await, 0);
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
    // The connection went back to the pool in a usable state.
    let mut next = store.begin().await.unwrap();
    create_with_audit(next.as_mut(), 2).await;
    next.commit().await.unwrap();
    assert_eq!(audit_rows(&db).await, 1);
    teardown(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_the_application_rolled_back_to_its_savepoint_still_commits() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let conn = connection(uow.as_mut()).unwrap();
    // sqlx's nested transaction is a savepoint inside Stockroom's transaction.
    let mut nested = conn.begin().await.unwrap();
    let failed = sqlx::query("INSERT INTO audit (product_id, note) VALUES (NULL, 'no product')")
        .execute(&mut *nested)
        .await;
    assert!(failed.is_err());
    nested.rollback().await.unwrap();
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
async fn a_memory_unit_of_work_has_no_postgres_connection() {
    let store = traced(MemoryStore::new());
    let mut uow = store.begin().await.unwrap();
    match connection(uow.as_mut()) {
        Err(Error::Unsupported { operation, backend }) => {
            assert_eq!(operation, "stockroom_postgres::connection");
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
    let store = PostgresStore::connect(&db.config().with_log_statements(true))
        .await
        .unwrap();
    let plain = statements_of(async {
        let mut uow = store.begin().await.unwrap();
        uow.products().create(product(1)).await.unwrap();
        uow.commit().await.unwrap();
    })
    .await;
    assert!(plain.contains("COMMIT"), "{plain}");
    assert!(!plain.contains("stockroom_commit_check"), "{plain}");
    let lent = statements_of(async {
        let mut uow = store.begin().await.unwrap();
        uow.products().create(product(2)).await.unwrap();
        connection(uow.as_mut()).unwrap();
        uow.commit().await.unwrap();
    })
    .await;
    assert_eq!(
        lent.matches("SAVEPOINT stockroom_commit_check").count(),
        1,
        "{lent}"
    );
    assert_eq!(count_products(&store).await, 2);
    store.close().await;
    db.drop_now().await;
}

//! Commits whose outcome the client cannot know: the session is killed while the server runs
//! `COMMIT` (a deferred trigger that terminates its own backend, which fires at commit time).
//! Such a commit is `Error::AmbiguousCommit`, never `Backend` and never retried blindly; a
//! transfer with an idempotency key resolves it by trying again.

mod support;

use sqlx::{Connection, PgConnection};
use stockroom_core::{
    transfer_stock, Error, NewProduct, RetryPolicy, Store, StoreConfig, TransferRequest,
};
use stockroom_postgres::PostgresStore;
use support::{seed_products, TestDatabase};

/// Installs, on `table`, a deferred trigger that kills its own session at commit, once: the
/// first time a row matching `condition` is committed (a sequence counts, outside any
/// transaction, so the kill happens once however often the commit is retried).
async fn kill_the_first_commit_of(db: &TestDatabase, table: &str, condition: &str) {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let sql = format!(
        "CREATE SEQUENCE doomed_commits;
         CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF ({condition}) AND nextval('doomed_commits') = 1 THEN
             PERFORM pg_terminate_backend(pg_backend_pid());
           END IF;
           RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON {table}
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit();"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A store whose first statement on a pooled connection is not sent again when it finds the
/// connection dead, so that a lost stock move reaches the use case as it happened.
async fn store_without_resend(db: &TestDatabase) -> PostgresStore {
    let config: StoreConfig = db.config().with_test_before_acquire(false);
    PostgresStore::connect(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_during_commit_is_an_ambiguous_commit() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.config()).await.unwrap();
    kill_the_first_commit_of(&db, "products", "NEW.name = 'Doomed'").await;
    let mut uow = store.begin().await.unwrap();
    let doomed = NewProduct::new("Doomed", "doomed", "SKU-DOOM").unwrap();
    let product = uow.products().create(doomed).await.unwrap();
    let committed = uow.commit().await;
    assert!(
        matches!(committed, Err(Error::AmbiguousCommit { .. })),
        "a commit whose session died: {committed:?}"
    );
    // Here the server had not committed; the client could not know, and the store goes on.
    let mut read = store.read().await.unwrap();
    assert_eq!(read.products().get(product.id).await.unwrap(), None);
    drop(read);
    let [again] = seed_products(&store, [7]).await;
    assert_eq!(again.stock, 10);
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_transfer_killed_at_commit_is_resolved_by_trying_again() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store_without_resend(&db).await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    kill_the_first_commit_of(&db, "stock_movements", "true").await;
    let request = TransferRequest::new(a.id, b.id, 3).with_idempotency_key("order-41");
    let done = transfer_stock(&store, &request, &RetryPolicy::default())
        .await
        .expect("the key resolves the ambiguity");
    assert_eq!(done.movement.quantity, 3);
    let mut read = store.read().await.unwrap();
    let stocks = (
        read.products().get(a.id).await.unwrap().unwrap().stock,
        read.products().get(b.id).await.unwrap().unwrap().stock,
        read.movements().count().await.unwrap(),
    );
    assert_eq!(
        stocks,
        (7, 13, 1),
        "(source, target, ledger rows): moved once"
    );
    drop(read);
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_without_a_key_killed_at_commit_is_returned_as_ambiguous() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store_without_resend(&db).await;
    let [a, b] = seed_products(&store, [1, 2]).await;
    kill_the_first_commit_of(&db, "stock_movements", "true").await;
    let request = TransferRequest::new(a.id, b.id, 3);
    let result = transfer_stock(&store, &request, &RetryPolicy::default()).await;
    assert!(
        matches!(result, Err(Error::AmbiguousCommit { .. })),
        "not retried without a key: {result:?}"
    );
    let mut read = store.read().await.unwrap();
    assert_eq!(read.movements().count().await.unwrap(), 0, "ledger rows");
    drop(read);
    store.close().await;
    db.drop_now().await;
}

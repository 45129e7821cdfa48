//! Stockroom's migrations beside the application's own sqlx migrations on the same database:
//! each keeps its own bookkeeping table and lock, in whatever order they run, and a database
//! whose Stockroom rows are still in `_sqlx_migrations` (as Stockroom kept them before it had a
//! table of its own) opens with those rows moved.

mod support;

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{PgPool, Row, SqlSafeStr};
use stockroom_core::{Store, StoreConfig};
use stockroom_postgres::PostgresStore;
use support::{count_products, seed_products, TestDatabase};

/// The application's migrations 1..=`count`, as an application would embed them.
fn app_migrator(count: usize) -> Migrator {
    let all = [
        (
            1,
            "orders",
            "CREATE TABLE app_orders (id bigint PRIMARY KEY, product_id uuid)",
        ),
        (
            2,
            "notes",
            "CREATE TABLE app_notes (id bigint PRIMARY KEY, body text)",
        ),
    ];
    Migrator::with_migrations(
        all[..count]
            .iter()
            .map(|&(version, name, sql)| app_migration(version, name, sql))
            .collect(),
    )
}

fn app_migration(version: i64, name: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(name),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
}

/// Stockroom's embedded migrations, through sqlx's default migrator: what Stockroom ran on
/// connect before it had a table of its own (rows in `_sqlx_migrations`, sqlx's lock).
fn old_stockroom_migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

fn stockroom_versions() -> Vec<i64> {
    old_stockroom_migrator().iter().map(|m| m.version).collect()
}

/// The application's own pool on the test database.
async fn app_pool(db: &TestDatabase) -> PgPool {
    PgPool::connect(db.url()).await.unwrap()
}

/// The versions recorded in `table`, in order.
async fn versions(pool: &PgPool, table: &str) -> Vec<i64> {
    let sql = format!("SELECT version FROM {table} ORDER BY version");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `work`'s output, or a panic after a minute (a migrator waiting for a lock that is never
/// released would otherwise hang the test).
async fn within_a_minute<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), work)
        .await
        .expect("the migrators finished within a minute")
}

async fn connect(config: &StoreConfig) -> PostgresStore {
    PostgresStore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("Stockroom's connect failed: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_migrations_before_stockroom_then_both_again() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    app_migrator(1).run(&pool).await.unwrap();
    let store = connect(&db.config()).await;
    // The application ships a new migration; both migrators run again.
    app_migrator(2).run(&pool).await.unwrap();
    store.migrate().await.unwrap();
    let again = connect(&db.config()).await;
    app_migrator(2).run(&pool).await.unwrap();
    assert_eq!(versions(&pool, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(
        versions(&pool, "stockroom_migrations").await,
        stockroom_versions()
    );
    assert_eq!(count_products(&again).await, 0);
    again.close().await;
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stockroom_before_the_applications_migrations_then_both_again() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    let store = connect(&db.config()).await;
    app_migrator(1).run(&pool).await.unwrap();
    store.migrate().await.unwrap();
    app_migrator(2).run(&pool).await.unwrap();
    let again = connect(&db.config()).await;
    app_migrator(2).run(&pool).await.unwrap();
    assert_eq!(versions(&pool, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(
        versions(&pool, "stockroom_migrations").await,
        stockroom_versions()
    );
    again.close().await;
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_old_layout_opens_with_its_data_and_its_rows_moved() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    // As before: Stockroom's rows in `_sqlx_migrations`, beside the application's (which had to
    // ignore Stockroom's versions to run at all), and data in Stockroom's tables.
    old_stockroom_migrator().run(&pool).await.unwrap();
    app_migrator(1)
        .set_ignore_missing(true)
        .run(&pool)
        .await
        .unwrap();
    let old: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT version, checksum, installed_on::text FROM _sqlx_migrations \
         WHERE version <> 1 ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(old.len(), stockroom_versions().len());
    let unmigrated = connect(&db.config().with_run_migrations(false)).await;
    seed_products(&unmigrated, [1, 2]).await;
    unmigrated.close().await;

    let store = connect(&db.config()).await;
    assert_eq!(count_products(&store).await, 2, "the data is intact");
    assert_eq!(versions(&pool, "_sqlx_migrations").await, [1]);
    let moved: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "SELECT version, checksum, installed_on::text FROM stockroom_migrations ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(moved, old, "the rows moved as they were");
    // The application's migrator no longer meets versions it does not know.
    app_migrator(2).run(&pool).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(versions(&pool, "_sqlx_migrations").await, [1, 2]);
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_row_with_a_stockroom_version_but_another_checksum_stays() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    let version = stockroom_versions()[0];
    let theirs = app_migration(version, "same number", "CREATE TABLE app_same (id int)");
    Migrator::with_migrations(vec![theirs.clone()])
        .run(&pool)
        .await
        .unwrap();
    let store = connect(&db.config()).await;
    // Not taken for Stockroom's: Stockroom applied its own migration, and the row is intact.
    let row = sqlx::query("SELECT version, checksum FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), version);
    assert_eq!(row.get::<Vec<u8>, _>(1), theirs.checksum.to_vec());
    assert_eq!(
        versions(&pool, "stockroom_migrations").await,
        stockroom_versions()
    );
    assert_eq!(count_products(&store).await, 0);
    Migrator::with_migrations(vec![theirs])
        .run(&pool)
        .await
        .unwrap();
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_and_the_applications_migrator_each_apply_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    let config = db.config();
    let connects = futures_util::future::join_all((0..4).map(|_| PostgresStore::connect(&config)));
    let app = app_migrator(2);
    let (stores, app_run) = within_a_minute(async { tokio::join!(connects, app.run(&pool)) }).await;
    app_run.expect("the application's migrator is not disturbed by Stockroom's");
    for store in stores {
        let store = store.expect("every concurrent connect succeeds");
        assert_eq!(count_products(&store).await, 0);
        store.close().await;
    }
    assert_eq!(versions(&pool, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(
        versions(&pool, "stockroom_migrations").await,
        stockroom_versions()
    );
    pool.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_to_a_database_of_the_old_layout_move_the_rows_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    old_stockroom_migrator().run(&pool).await.unwrap();
    let config = db.config();
    let connects = (0..4).map(|_| PostgresStore::connect(&config));
    for store in within_a_minute(futures_util::future::join_all(connects)).await {
        let store = store.expect("every concurrent connect succeeds");
        store.close().await;
    }
    assert_eq!(versions(&pool, "_sqlx_migrations").await, Vec::<i64>::new());
    assert_eq!(
        versions(&pool, "stockroom_migrations").await,
        stockroom_versions()
    );
    pool.close().await;
    db.drop_now().await;
}

/// A database whose search documents were made with the earlier folding (lower-casing only,
/// before the refold migration) has them made again when it opens: "STRASSE" then finds
/// "Straße", and the refold is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_documents_of_an_earlier_fold_are_made_again() {
    const REFOLD: i64 = 20261201000001;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let mut uow = store.begin().await.unwrap();
    let new = stockroom_core::NewProduct::new("Große Straße", "strasse", "ST-1").unwrap();
    uow.products().create(new).await.unwrap();
    uow.commit().await.unwrap();
    store.close().await;
    // As the earlier build left it: lower-cased documents, the refold not recorded.
    let pool = app_pool(&db).await;
    sqlx::query("UPDATE products SET search_text = lower(name) || E'\\n' || lower(sku)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM stockroom_migrations WHERE version = $1")
        .bind(REFOLD)
        .execute(&pool)
        .await
        .unwrap();

    let store = db.store().await;
    let mut read = store.read().await.unwrap();
    let filter = stockroom_core::ProductFilter::default()
        .with_search("STRASSE")
        .unwrap();
    let found = read
        .products()
        .search(&filter, stockroom_core::Page::new(10, 0).unwrap())
        .await
        .unwrap();
    assert_eq!(
        found.total,
        stockroom_core::Total::Exact(1),
        "the refolded document matches"
    );
    drop(read);
    store.close().await;
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stockroom_migrations WHERE version = $1")
            .bind(REFOLD)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, 1);
    pool.close().await;
    db.drop_now().await;
}

/// The SHA-384 of the schema migration's text before its ordered indexes spelled out `ASC`.
const SCHEMA_WITHOUT_ASC: &str = "cf9f758972c523f04ebddcbd0d6153bcbc3595e61a2848fd3bc9dd2e5c3ec583829e0a766ddcbb22f379d7b87ec8b1f0";

/// The checksum recorded for `version` in `stockroom_migrations`, as hex.
async fn recorded_checksum(pool: &PgPool, version: i64) -> String {
    sqlx::query_scalar(
        "SELECT encode(checksum, 'hex') FROM stockroom_migrations WHERE version = $1",
    )
    .bind(version)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_recorded_under_an_equivalent_earlier_text_opens_and_takes_the_new_checksum() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    let version = stockroom_versions()[0];
    connect(&db.config()).await.close().await;
    sqlx::query("UPDATE stockroom_migrations SET checksum = decode($1, 'hex') WHERE version = $2")
        .bind(SCHEMA_WITHOUT_ASC)
        .bind(version)
        .execute(&pool)
        .await
        .unwrap();
    let store = connect(&db.config()).await;
    let current = hex(&old_stockroom_migrator().iter().next().unwrap().checksum);
    assert_eq!(recorded_checksum(&pool, version).await, current);
    assert_eq!(count_products(&store).await, 0);
    // Any other text under Stockroom's version is still refused.
    sqlx::query("UPDATE stockroom_migrations SET checksum = '\\x00' WHERE version = $1")
        .bind(version)
        .execute(&pool)
        .await
        .unwrap();
    let refused = PostgresStore::connect(&db.config()).await;
    assert!(
        refused.is_err(),
        "a changed migration must be refused: {refused:?}"
    );
    store.close().await;
    pool.close().await;
    db.drop_now().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of Stockroom's migration lock (`stockroo` in ASCII).
const STOCKROOM_LOCK_KEY: i64 = 0x7374_6f63_6b72_6f6f;

/// A `from_pool` dropped while it waits for Stockroom's migration lock (held here by another
/// session) leaves nothing behind: once that lock is released, no session holds it, and the
/// next `from_pool` on the same application pool migrates and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_pool_dropped_while_waiting_for_the_migration_lock_leaves_no_lock() {
    use sqlx::Connection;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(STOCKROOM_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let waiting = tokio::spawn(PostgresStore::from_pool(
        pool.clone(),
        stockroom_postgres::PostgresOptions::default(),
    ));
    support::until_a_session_waits_for_a_lock(db.name()).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(STOCKROOM_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let _ = holder.close().await;

    let store = within_a_minute(PostgresStore::from_pool(
        pool.clone(),
        stockroom_postgres::PostgresOptions::default(),
    ))
    .await
    .expect("from_pool after the dropped one");
    assert_eq!(count_products(&store).await, 0);
    store.close().await;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, 0, "advisory locks still held after the migrations");
    pool.close().await;
    db.drop_now().await;
}

/// A role that may read and add to the application's `_sqlx_migrations` but not delete from it
/// (as an application may grant Stockroom's role) opens a database with nothing of Stockroom's
/// to carry over from it: the carry-over only deletes there when it has rows to move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_delete_on_the_applications_migrations_connects() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = app_pool(&db).await;
    app_migrator(1).run(&pool).await.unwrap();
    let setup = [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "GRANT USAGE, CREATE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT, UPDATE ON _sqlx_migrations TO {role}",
    ];
    support::as_role(db, &setup, |as_role| async {
        let role_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(as_role)
            .await
            .unwrap();
        let options = stockroom_postgres::PostgresOptions::default();
        let store = PostgresStore::from_pool(role_pool.clone(), options)
            .await
            .unwrap_or_else(|e| panic!("from_pool as a role without DELETE: {e:?}"));
        assert_eq!(count_products(&store).await, 0);
        store.close().await;
        role_pool.close().await;
        assert_eq!(versions(&pool, "_sqlx_migrations").await, [1]);
        assert_eq!(
            versions(&pool, "stockroom_migrations").await,
            stockroom_versions()
        );
        pool.close().await;
    })
    .await;
}

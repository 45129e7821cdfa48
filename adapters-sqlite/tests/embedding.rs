//! Stockroom as a guest in an application's SQLite database: its migrations beside the
//! application's (which own `user_version`), a database of an earlier Stockroom build, the
//! application's own file, pragmas and `on_open` hook, and the application's SQL inside a
//! Stockroom unit of work (`with_connection`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};
use sha2::{Digest, Sha256};
use stockroom_core::{
    traced, Error, NewProduct, ProductFilter, RetryPolicy, Store, StoreExt, UnitOfWork,
};
use stockroom_memory::MemoryStore;
use stockroom_sqlite::{with_connection, SqliteError, SqliteOptions, SqliteStore};

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use support::TempDb;

/// V1 of the schema exactly as the builds before `stockroom_migrations` embedded it.
const OLD_V1: &str = include_str!("fixtures/v1-before-stockroom-migrations.sql");

/// The application's own migrations, run by rusqlite_migration (which counts them in
/// `user_version`).
/// How many migrations Stockroom's SQLite schema has (V1 tables, V2 search documents refolded,
/// V3 the bookkeeping of declared entities' tables, V4 the products' search index, V5 the
/// outbox).
const STOCKROOM_MIGRATIONS: usize = 5;

const APP_MIGRATIONS: &[M<'static>] = &[
    M::up("CREATE TABLE orders (id INTEGER PRIMARY KEY, sku TEXT NOT NULL);"),
    M::up("ALTER TABLE orders ADD COLUMN quantity INTEGER NOT NULL DEFAULT 1;"),
];

fn temp_db() -> TempDb {
    TempDb::new("stockroom-embedding")
}

fn product(i: usize) -> NewProduct {
    NewProduct::new(
        &format!("Product {i}"),
        &format!("p-{i}"),
        &format!("SKU-{i}"),
    )
    .unwrap()
}

/// Runs the application's migrations on the file, as the application would on start.
fn migrate_app(db: &TempDb) {
    let mut conn = Connection::open(db.path()).unwrap();
    Migrations::from_slice(APP_MIGRATIONS)
        .to_latest(&mut conn)
        .expect("the application's migrations");
}

fn user_version(db: &TempDb) -> i64 {
    let conn = Connection::open(db.path()).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// The rows of `stockroom_migrations`: (version, checksum).
fn bookkeeping(db: &TempDb) -> Vec<(i64, String)> {
    let conn = Connection::open(db.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT version, checksum FROM stockroom_migrations ORDER BY version")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stockroom and the application each write through their own path, then read back.
async fn both_work(db: &TempDb, i: usize) {
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    uow.products().create(product(i)).await.unwrap();
    uow.commit().await.unwrap();
    store.close().await;
    migrate_app(db);
    let conn = Connection::open(db.path()).unwrap();
    conn.execute(
        "INSERT INTO orders (sku, quantity) VALUES (?1, 2)",
        [format!("SKU-{i}")],
    )
    .unwrap();
}

async fn product_count(store: &dyn Store) -> u64 {
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap()
}

/// The error's source as the adapter's own refusal.
fn refusal(error: &Error) -> Option<&SqliteError> {
    std::error::Error::source(error).and_then(|s| s.downcast_ref::<SqliteError>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_migrations_before_stockroom_keep_working_on_reconnect() {
    let db = temp_db();
    migrate_app(&db);
    assert_eq!(user_version(&db), 2);
    db.connect_and_close().await;
    assert_eq!(user_version(&db), 2, "Stockroom touched user_version");
    for i in 0..2 {
        both_work(&db, i).await;
    }
    assert_eq!(user_version(&db), 2);
    assert_eq!(bookkeeping(&db).len(), STOCKROOM_MIGRATIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_migrations_after_stockroom_keep_working_on_reconnect() {
    let db = temp_db();
    db.connect_and_close().await;
    assert_eq!(user_version(&db), 0);
    migrate_app(&db);
    assert_eq!(user_version(&db), 2);
    for i in 0..2 {
        both_work(&db, i).await;
    }
    assert_eq!(user_version(&db), 2);
    assert_eq!(bookkeeping(&db).len(), STOCKROOM_MIGRATIONS);
}

/// `user_version = 1` is what earlier Stockroom builds left; set by the application on a file
/// without Stockroom's tables, it is the application's and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_version_set_by_the_application_is_left_alone() {
    for version in [1, 42] {
        let db = temp_db();
        let conn = Connection::open(db.path()).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT); PRAGMA user_version = {version};"
        ))
        .unwrap();
        drop(conn);
        let store = SqliteStore::connect(&db.config()).await.unwrap();
        assert_eq!(product_count(&store).await, 0);
        store.close().await;
        db.connect_and_close().await;
        assert_eq!(user_version(&db), version);
        assert_eq!(bookkeeping(&db).len(), STOCKROOM_MIGRATIONS);
    }
}

/// A file exactly as the builds before `stockroom_migrations` left it: V1 applied by
/// rusqlite_migration (`user_version = 1`), in WAL mode, with data.
fn database_of_the_previous_build(db: &TempDb) {
    let mut conn = Connection::open(db.path()).unwrap();
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    Migrations::from_slice(&[M::up(OLD_V1)])
        .to_latest(&mut conn)
        .unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    conn.execute(
        "INSERT INTO products (id, name, slug, sku, description, status, stock, created_at, \
         updated_at, version, search_text) \
         VALUES (?1, 'Blue mug', 'blue-mug', 'MUG-B', NULL, 'active', 7, ?2, ?2, 1, ?3)",
        rusqlite::params![
            uuid::Uuid::now_v7().as_bytes().to_vec(),
            now,
            stockroom_core::adapter::search_document("Blue mug", "MUG-B", None)
        ],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_build_opens_with_its_data_and_its_bookkeeping_moved() {
    let db = temp_db();
    database_of_the_previous_build(&db);
    assert_eq!(user_version(&db), 1);

    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut read = store.read().await.unwrap();
    let mug = read
        .products()
        .by_sku("MUG-B")
        .await
        .unwrap()
        .expect("the mug");
    assert_eq!((mug.name.as_str(), mug.stock), ("Blue mug", 7));
    let found = read
        .products()
        .search(
            &ProductFilter::default().with_search("blue").unwrap(),
            stockroom_core::Page::first(stockroom_core::Limit::new(10).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(found.total, stockroom_core::Total::Exact(1));
    drop(read);
    store.close().await;

    // V1 recorded as applied, with the checksum of the very SQL the old build ran; V2 (the
    // search documents made again) applied on top.
    let recorded = bookkeeping(&db);
    assert_eq!(recorded[0], (1, sha256_hex(OLD_V1)));
    assert_eq!(recorded.len(), STOCKROOM_MIGRATIONS);
    assert_eq!(user_version(&db), 0, "user_version was not handed back");
    // The application's own migrations now start from 0, and everything still opens.
    migrate_app(&db);
    assert_eq!(user_version(&db), 2);
    both_work(&db, 1).await;
    assert_eq!(bookkeeping(&db).len(), STOCKROOM_MIGRATIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_checksum_is_refused_and_nothing_changes() {
    let db = temp_db();
    db.connect_and_close().await;
    let tampered = "0".repeat(64);
    Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE stockroom_migrations SET checksum = ?1 WHERE version = 1",
            [&tampered],
        )
        .unwrap();
    let err = SqliteStore::connect(&db.config()).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("migration 1"), "{err}");
    assert!(
        matches!(
            refusal(&err),
            Some(SqliteError::MigrationChecksum { version: 1, applied, .. }) if *applied == tampered
        ),
        "{err:?}"
    );
    let recorded = bookkeeping(&db);
    assert_eq!(
        recorded[0],
        (1, tampered),
        "the tampered row is left as it was"
    );
    assert_eq!(recorded.len(), STOCKROOM_MIGRATIONS, "nothing was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_of_a_newer_build_is_refused() {
    let db = temp_db();
    db.connect_and_close().await;
    Connection::open(db.path())
        .unwrap()
        .execute(
            "INSERT INTO stockroom_migrations (version, description, checksum, applied_at) \
             VALUES (99, 'from the future', 'abc', 0)",
            [],
        )
        .unwrap();
    let err = SqliteStore::connect(&db.config()).await.unwrap_err();
    assert!(err.to_string().contains("migration 99"), "{err}");
    assert!(
        matches!(
            refusal(&err),
            Some(SqliteError::UnknownMigration { version: 99, .. })
        ),
        "{err:?}"
    );
}

/// Separate stores (as separate processes would) connecting to one fresh file at once: each
/// migration is applied by exactly one of them, and all of them work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_to_a_fresh_file_apply_the_schema_once() {
    const STORES: usize = 8;
    let db = temp_db();
    let start = Arc::new(tokio::sync::Barrier::new(STORES));
    let tasks: Vec<_> = (0..STORES)
        .map(|i| {
            let (config, start) = (db.config(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                let store = SqliteStore::connect(&config).await?;
                let mut uow = store.begin().await?;
                uow.products().create(product(i)).await?;
                uow.commit().await?;
                store.close().await;
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("connect and write");
    }
    assert_eq!(bookkeeping(&db).len(), STOCKROOM_MIGRATIONS);
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    assert_eq!(product_count(&store).await, STORES as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_own_file_runs_its_pragmas_and_hook_on_every_connection() {
    let db = temp_db();
    // The application's file, made with its own rusqlite before Stockroom ever saw it.
    let app = Connection::open(db.path()).unwrap();
    app.execute_batch(
        "CREATE TABLE notes (body TEXT NOT NULL); INSERT INTO notes VALUES ('kept');
         PRAGMA user_version = 3;",
    )
    .unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let options = SqliteOptions::file(db.path())
        .with_pragma("cache_size", "-8000")
        .with_on_open(move |c| {
            counter.fetch_add(1, Ordering::SeqCst);
            // A per-connection object the application relies on.
            c.execute_batch("CREATE TEMP VIEW app_marker AS SELECT 'hooked' AS mark")
        });
    let store = SqliteStore::connect_with(options).await.unwrap();
    assert_eq!(opened.load(Ordering::SeqCst), 1, "the writer");

    let mut uow = store.begin().await.unwrap();
    let seen = with_connection(uow.as_mut(), |c| -> rusqlite::Result<_> {
        let cache: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
        let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        let mark: String = c.query_row("SELECT mark FROM app_marker", [], |r| r.get(0))?;
        let note: String = c.query_row("SELECT body FROM notes", [], |r| r.get(0))?;
        Ok((cache, fk, mark, note))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(seen, (-8000, 1, "hooked".to_owned(), "kept".to_owned()));
    uow.rollback().await.unwrap();

    // Three read sessions at once: three read connections, each opened through the hook.
    let sessions = [
        store.read().await.unwrap(),
        store.read().await.unwrap(),
        store.read().await.unwrap(),
    ];
    assert_eq!(opened.load(Ordering::SeqCst), 4);
    drop(sessions);
    store.close().await;
    let user_version: i64 = app
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(user_version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pragmas_stockroom_enforces_are_refused() {
    for (name, value) in [("foreign_keys", "OFF"), ("journal_mode", "DELETE")] {
        let options = SqliteOptions::in_memory().with_pragma(name, value);
        let result = SqliteStore::connect_with(options).await;
        assert!(
            matches!(
                result,
                Err(Error::Validation {
                    field: "pragma",
                    ..
                })
            ),
            "{name}: {:?}",
            result.err()
        );
    }
}

/// A store whose file has the application's `audit` table beside Stockroom's.
async fn store_with_audit(db: &TempDb) -> SqliteStore {
    Connection::open(db.path())
        .unwrap()
        .execute_batch("CREATE TABLE audit (sku TEXT NOT NULL UNIQUE)")
        .unwrap();
    SqliteStore::connect(&db.config()).await.unwrap()
}

/// Creates product `i` and its audit row in `uow`.
async fn create_with_audit(uow: &mut dyn UnitOfWork, i: usize) {
    let p = uow.products().create(product(i)).await.unwrap();
    with_connection(uow, move |c| {
        c.execute("INSERT INTO audit (sku) VALUES (?1)", [p.sku])
    })
    .await
    .unwrap()
    .unwrap();
}

fn audit_rows(db: &TempDb) -> i64 {
    Connection::open(db.path())
        .unwrap()
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_rows_commit_with_the_unit_of_work() {
    let db = temp_db();
    let store = store_with_audit(&db).await;
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    // Not visible outside before the commit.
    assert_eq!(audit_rows(&db), 0);
    uow.commit().await.unwrap();
    assert_eq!((product_count(&store).await, audit_rows(&db)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_rows_roll_back_with_the_unit_of_work() {
    let db = temp_db();
    let store = store_with_audit(&db).await;
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    uow.rollback().await.unwrap();
    assert_eq!((product_count(&store).await, audit_rows(&db)), (0, 0));

    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 2).await;
    drop(uow);
    assert_eq!((product_count(&store).await, audit_rows(&db)), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closure_runs_inside_the_transaction_even_as_the_first_statement() {
    let store = SqliteStore::connect_with(SqliteOptions::in_memory())
        .await
        .unwrap();
    let mut uow = store.begin().await.unwrap();
    let in_transaction = with_connection(uow.as_mut(), |c| !c.is_autocommit())
        .await
        .unwrap();
    assert!(
        in_transaction,
        "the pending BEGIN IMMEDIATE did not run first"
    );
    uow.commit().await.unwrap();
}

/// The application ends the transaction itself: the unit of work refuses to go on or commit,
/// and the writer serves the next unit of work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_or_rollback_inside_the_closure_makes_commit_fail() {
    for statement in ["COMMIT", "ROLLBACK"] {
        let db = temp_db();
        let store = store_with_audit(&db).await;
        let mut uow = store.begin().await.unwrap();
        create_with_audit(uow.as_mut(), 1).await;
        with_connection(uow.as_mut(), move |c| c.execute_batch(statement))
            .await
            .unwrap()
            .unwrap();
        let next = uow.products().create(product(2)).await.unwrap_err();
        assert!(
            matches!(refusal(&next), Some(SqliteError::TransactionEnded)),
            "{statement}: {next:?}"
        );
        let commit = uow.commit().await.unwrap_err();
        assert!(
            matches!(refusal(&commit), Some(SqliteError::TransactionEnded)),
            "{statement}: {commit:?}"
        );
        // Product 2 never ran outside a transaction.
        let expected = if statement == "COMMIT" { 1 } else { 0 };
        assert_eq!(product_count(&store).await, expected, "{statement}");
        let mut uow = store.begin().await.expect("the writer is free again");
        uow.products().create(product(3)).await.unwrap();
        uow.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_application_statement_leaves_the_unit_of_work_usable() {
    let db = temp_db();
    let store = store_with_audit(&db).await;
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let duplicate = with_connection(uow.as_mut(), |c| {
        c.execute("INSERT INTO audit (sku) VALUES ('SKU-1')", [])
    })
    .await
    .unwrap();
    assert!(duplicate.is_err(), "the UNIQUE audit.sku did not fire");
    create_with_audit(uow.as_mut(), 2).await;
    uow.commit().await.unwrap();
    assert_eq!((product_count(&store).await, audit_rows(&db)), (2, 2));
}

/// SQLite rolls the whole transaction back after some errors: here a full database (made with
/// `max_page_count`) on a single-row insert, which has no statement journal to undo just
/// itself. The unit of work must then neither go on in autocommit mode nor commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sqlite_rolled_back_refuses_to_go_on() {
    let db = temp_db();
    let store = store_with_audit(&db).await;
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    let (full, rolled_back) = with_connection(uow.as_mut(), |c| {
        c.execute_batch("CREATE TABLE attachments (body BLOB)")?;
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        c.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 2))?;
        let full = c.execute("INSERT INTO attachments VALUES (zeroblob(1000000))", []);
        Ok::<_, rusqlite::Error>((full.map(drop), c.is_autocommit()))
    })
    .await
    .unwrap()
    .unwrap();
    let full = full.unwrap_err();
    assert_eq!(
        full.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull),
        "{full}"
    );
    assert!(
        rolled_back,
        "SQLite kept the transaction: the test proves nothing"
    );

    let next = uow.products().create(product(2)).await.unwrap_err();
    assert!(
        matches!(refusal(&next), Some(SqliteError::TransactionEnded)),
        "{next:?}"
    );
    let commit = uow.commit().await.unwrap_err();
    assert!(
        matches!(refusal(&commit), Some(SqliteError::TransactionEnded)),
        "{commit:?}"
    );
    assert_eq!((product_count(&store).await, audit_rows(&db)), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_of_another_backend_is_unsupported() {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let result = with_connection(uow.as_mut(), |_| ()).await;
    assert!(
        matches!(
            result,
            Err(Error::Unsupported {
                operation: "with_connection",
                backend: "memory"
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_connection_works_through_the_tracing_decorator() {
    let db = temp_db();
    let store = traced(store_with_audit(&db).await);
    let mut uow = store.begin().await.unwrap();
    create_with_audit(uow.as_mut(), 1).await;
    uow.commit().await.unwrap();
    assert_eq!(audit_rows(&db), 1);
    // And the runner commits the application's rows with its own.
    store
        .run(&RetryPolicy::default(), |uow| {
            Box::pin(async move {
                with_connection(uow, |c| c.execute("INSERT INTO audit VALUES ('x')", []))
                    .await?
                    .map_err(|e| Error::backend("audit", e))
            })
        })
        .await
        .unwrap();
    assert_eq!(audit_rows(&db), 2);
}

//! What the tests share: a fresh database per test from the crate's test harness
//! (`stockroom_mariadb::testing`, see its docs for where the server comes from), and a few
//! helpers. Without MariaDB on the machine [`TestDatabase::create`] and [`fixture`] return
//! `None` and the tests return early (one line on stderr says so), unless `CI` or
//! `STOCKROOM_TEST_REQUIRE_MARIADB=1` makes that a failure.

#![allow(dead_code)] // each test crate uses a different part of it

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, MySqlConnection};
use stockroom_core::{NewProduct, Product, ProductFilter, Store};
use stockroom_mariadb::MariaDbStore;

pub use stockroom_mariadb::testing::TestDatabase;

/// An admin connection to the test server (on no database).
///
/// # Panics
///
/// Without a server: call it only after [`TestDatabase::create`] returned a database.
pub async fn admin() -> MySqlConnection {
    stockroom_mariadb::testing::server()
        .await
        .expect("a test database exists, so the server does")
        .admin()
        .await
}

/// A conformance fixture: a store on a fresh database, dropped after the case; `None` skips the
/// case when there is no MariaDB.
pub async fn fixture() -> Option<stockroom_conformance::Fixture> {
    fixture_with(|config| config).await
}

/// A conformance fixture as [`fixture`]'s, its store configured by `configure` (own events on,
/// say).
pub async fn fixture_with(
    configure: impl FnOnce(stockroom_core::StoreConfig) -> stockroom_core::StoreConfig,
) -> Option<stockroom_conformance::Fixture> {
    let db = TestDatabase::create().await?;
    // An acquire timeout of a few seconds, so the case that holds every connection gives up soon.
    let config = configure(db.config().with_acquire_timeout(Duration::from_secs(5)));
    let store = MariaDbStore::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
    Some(stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(db.drop_now()))
}

/// Waits until a session on `database` waits for a lock (a row lock of InnoDB, or a table's
/// metadata lock), at most ten seconds, so that a test can act exactly while a statement is
/// blocked.
pub async fn until_a_session_waits_for_a_lock(database: &str) {
    let mut conn = admin().await;
    let table = format!("`{database}`.");
    for _ in 0..400 {
        // A metadata lock (a table's, a named lock) shows in the session's state.
        let metadata: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM `information_schema`.`PROCESSLIST` \
              WHERE `DB` = ? AND `STATE` LIKE 'Waiting for%lock'",
        )
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        // A row lock shows in InnoDB's own status, not in `INNODB_TRX`: InnoDB refreshes that
        // table only when nobody on the server read it in the last 100 ms, so a poll (this one,
        // or another test's) can keep it showing the moment before the wait.
        let status = sqlx::raw_sql("SHOW ENGINE INNODB STATUS")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let text: String = sqlx::Row::get(&status, "Status");
        let row_lock = text
            .split("---TRANSACTION")
            .any(|block| block.contains("LOCK WAIT") && block.contains(&table));
        if metadata > 0 || row_lock {
            let _ = conn.close().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no session of {database} waited for a lock within ten seconds");
}

/// The id MariaDB gives the session of `conn` (`CONNECTION_ID()`), to end it with `KILL`.
pub async fn connection_id(conn: &mut MySqlConnection) -> i64 {
    // Cast: `CONNECTION_ID()` is unsigned, and a signed id is what every other query compares.
    sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Product `n`: name `Product n`, slug `product-n`, sku `SKU-n`, ten in stock.
pub fn product(n: usize) -> NewProduct {
    NewProduct::new(
        &format!("Product {n}"),
        &format!("product-{n}"),
        &format!("SKU-{n}"),
    )
    .unwrap()
    .with_stock(10)
    .unwrap()
}

/// Creates [`product`] `n` for each of `ns` in one committed unit of work.
pub async fn seed_products<const N: usize>(store: &MariaDbStore, ns: [usize; N]) -> [Product; N] {
    let mut uow = store.begin().await.unwrap();
    let mut created = Vec::with_capacity(N);
    for n in ns {
        created.push(uow.products().create(product(n)).await.unwrap());
    }
    uow.commit().await.unwrap();
    created.try_into().unwrap()
}

/// How many live products `store` holds, counted in a read session of its own.
pub async fn count_products(store: &MariaDbStore) -> u64 {
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap()
}

/// Runs `body` with connect options for `db` as a user of its own (no privilege but those
/// `setup` grants: `stockroom_role_<uuid>`@`%` with a random password), after `setup`
/// (statements in which `{role}` stands for the quoted account, `'stockroom_role_…'@'%'`, as
/// `GRANT … TO {role}` wants it) ran on `db` as the server's admin; then drops `db` and the
/// user, whether `body` returned or panicked, and re-raises the panic if it did.
pub async fn as_role<F, Fut>(db: TestDatabase, setup: &[&str], body: F)
where
    F: FnOnce(sqlx::mysql::MySqlConnectOptions) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    let role = format!("stockroom_role_{}", uuid::Uuid::now_v7().simple());
    let account = format!("'{role}'@'%'");
    let password = uuid::Uuid::now_v7().simple().to_string();
    let mut admin = admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE USER {account} IDENTIFIED BY '{password}'"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let options = db
        .url()
        .parse::<sqlx::mysql::MySqlConnectOptions>()
        .unwrap();
    let outcome = std::panic::AssertUnwindSafe(async {
        let mut on_db = MySqlConnection::connect_with(&options).await.unwrap();
        for statement in setup {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.replace("{role}", &account)))
                .execute(&mut on_db)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let _ = on_db.close().await;
        body(options.clone().username(&role).password(&password)).await;
    })
    .catch_unwind()
    .await;
    db.drop_now().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP USER {account}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

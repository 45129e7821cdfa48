//! The test harness: a fresh database per test on a real PostgreSQL server.
//!
//! The server comes from `STOCKROOM_TEST_DATABASE_URL`, else `DATABASE_URL` (when it is a
//! PostgreSQL URL), else `postgres://postgres@127.0.0.1:5432/postgres`. Each test creates
//! `stockroom_test_<uuid>` through that URL, connects a store to it, and drops it afterwards, so
//! tests run in parallel without seeing each other. Without a server the tests fail, saying how
//! to point them at one.

#![allow(dead_code)] // each test crate uses a different part of it

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use stockroom_core::{redact_url, NewProduct, Product, ProductFilter, Store, StoreConfig};
use stockroom_postgres::PostgresStore;
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of the server the tests use (with a database the tests may create databases from).
pub fn server_url() -> String {
    if let Ok(url) = std::env::var("STOCKROOM_TEST_DATABASE_URL") {
        return url;
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
        _ => DEFAULT_URL.to_owned(),
    }
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// An admin connection to the server, or a panic that says how to point the tests at one.
pub async fn admin() -> PgConnection {
    let url = server_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "cannot reach PostgreSQL at {}: {error}\n\
             The stockroom-postgres tests need a running PostgreSQL server. Start one (on this \
             machine: `pg_ctlcluster --skip-systemctl-redirect 15 main start`) or point \
             STOCKROOM_TEST_DATABASE_URL (or DATABASE_URL) at one, e.g. \
             STOCKROOM_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres",
            redact_url(&url)
        ),
    }
}

/// A database of one test; dropped by [`TestDatabase::drop_now`].
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("stockroom_test_{}", Uuid::now_v7().simple());
        let mut conn = admin().await;
        // The name is ours (a fresh UUID), never user text.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&server_url(), &name);
        Self { name, url }
    }

    /// A store configuration for this database: a small pool (many tests run at once and the
    /// server allows 100 connections) and an application name of its own.
    pub fn config(&self) -> StoreConfig {
        StoreConfig::new(self.url.clone())
            .with_pool_size(1)
            .with_max_overflow(4)
            .with_acquire_timeout(Duration::from_secs(30))
            .with_application_name(self.name.clone())
    }

    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.config())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// Drops the database, terminating any session still on it.
    pub async fn drop_now(self) {
        let mut conn = admin().await;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {}: {e}", self.name));
        let _ = conn.close().await;
    }
}

/// A conformance fixture: a store on a fresh database, dropped after the case.
pub async fn fixture() -> stockroom_conformance::Fixture {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(db.drop_now())
}

/// Waits until a session on `database` is waiting for a lock (at most ten seconds), so that a
/// test can act exactly while a statement is blocked.
pub async fn until_a_session_waits_for_a_lock(database: &str) {
    let mut conn = admin().await;
    for _ in 0..1_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if waiting > 0 {
            let _ = conn.close().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no session of {database} waited for a lock within ten seconds");
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
pub async fn seed_products<const N: usize>(store: &PostgresStore, ns: [usize; N]) -> [Product; N] {
    let mut uow = store.begin().await.unwrap();
    let mut created = Vec::with_capacity(N);
    for n in ns {
        created.push(uow.products().create(product(n)).await.unwrap());
    }
    uow.commit().await.unwrap();
    created.try_into().unwrap()
}

/// How many live products `store` holds, counted in a read session of its own.
pub async fn count_products(store: &PostgresStore) -> u64 {
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap()
}

//! How an application tests its own code that uses Stockroom (README, "Testing code that
//! writes its own SQL"): code with SQL of its own on an in-memory SQLite database
//! (`sqlite::memory:`, fast, nothing to clean up), a failing commit with `FaultyStore` around
//! it (which passes the application's SQL through), and Stockroom's ports mocked with mockall
//! where a real store is not wanted. Everything comes from the `stockroom` facade.

use std::sync::Arc;

use stockroom::mocks::{Fault, FaultyStore, MockRepositories, MockStore, MockUnitOfWork};
use stockroom::sqlite::{classify, with_connection, with_read_connection};
use stockroom::{
    Constraint, EntityKind, Error, NewProduct, ProductId, ProductPatch, RetryPolicy, Store,
    StoreExt, UnitOfWork,
};

/// The application's code under test.
mod orders {
    use super::*;

    /// The application's own table, made by its own migrations (here, one statement).
    pub async fn migrate(store: &dyn Store) -> stockroom::Result<()> {
        let mut uow = store.begin().await?;
        with_connection(uow.as_mut(), |c| {
            c.execute_batch(
                "CREATE TABLE orders (
                    number INTEGER PRIMARY KEY,
                    product_id BLOB NOT NULL REFERENCES products (id),
                    placed_at INTEGER NOT NULL
                 )",
            )
        })
        .await?
        .map_err(classify)?;
        uow.commit().await
    }

    /// Places order `number` for `product`: the order row (the application's SQL) and the
    /// product's description (Stockroom's write), in one unit of work, retried as a whole when
    /// it fails transiently.
    pub async fn place(
        store: &dyn Store,
        number: i64,
        product: ProductId,
    ) -> stockroom::Result<()> {
        store
            .run(&RetryPolicy::default(), |uow| {
                Box::pin(async move {
                    let id = product.as_uuid().as_bytes().to_vec();
                    let at = stockroom::time::now().timestamp_micros();
                    with_connection(uow, move |c| {
                        c.execute(
                            "INSERT INTO orders (number, product_id, placed_at) VALUES (?1, ?2, ?3)",
                            (number, id, at),
                        )
                    })
                    .await?
                    .map_err(classify)?;
                    let patch = ProductPatch::default().with_description(Some("ordered"))?;
                    uow.products().update(product, &patch, None).await?;
                    Ok(())
                })
            })
            .await
    }

    /// How many orders there are: on a read session, never SQLite's writer.
    pub async fn count(store: &dyn Store) -> stockroom::Result<i64> {
        let mut session = store.read().await?;
        with_read_connection(session.as_mut(), |c| {
            c.query_row("SELECT count(*) FROM orders", [], |row| row.get(0))
        })
        .await?
        .map_err(classify)
    }

    /// Renames a product (no SQL of the application's: mockable).
    pub async fn rename(
        store: &dyn Store,
        product: ProductId,
        name: &str,
    ) -> stockroom::Result<()> {
        let patch = ProductPatch::default().with_name(name)?;
        let mut uow = store.begin().await?;
        uow.products().update(product, &patch, None).await?;
        uow.commit().await
    }
}

async fn in_memory_store() -> Arc<dyn Store> {
    let store = stockroom::connect("sqlite::memory:").await.unwrap();
    orders::migrate(store.as_ref()).await.unwrap();
    store
}

async fn a_product(store: &dyn Store) -> ProductId {
    let mut uow = store.begin().await.unwrap();
    let mug = uow
        .products()
        .create(NewProduct::new("Mug", "mug", "MUG-1").unwrap())
        .await
        .unwrap();
    uow.commit().await.unwrap();
    mug.id
}

/// Code with its own SQL, tested on `sqlite::memory:`: the order and Stockroom's write commit
/// together, and the application's unique key is a typed conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_with_its_own_sql_is_tested_on_an_in_memory_sqlite_database() {
    let store = in_memory_store().await;
    let mug = a_product(store.as_ref()).await;
    orders::place(store.as_ref(), 1, mug).await.unwrap();
    assert_eq!(orders::count(store.as_ref()).await.unwrap(), 1);
    let again = orders::place(store.as_ref(), 1, mug).await;
    assert!(
        matches!(again, Err(Error::Conflict { constraint }) if constraint == Constraint::of_table("orders", &["number"])),
        "{again:?}"
    );
    assert_eq!(orders::count(store.as_ref()).await.unwrap(), 1);
}

/// A commit that fails, injected by `FaultyStore` around the SQLite store: the application's
/// SQL runs through the wrapper, the error reaches the caller, and nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_injected_around_a_store_that_runs_the_applications_sql() {
    let store = in_memory_store().await;
    let mug = a_product(store.as_ref()).await;
    let faulty = FaultyStore::shared(Arc::clone(&store));
    faulty.inject(Fault::Commit, 1, || {
        Error::unavailable("connection lost before COMMIT")
    });
    let failed = orders::place(&faulty, 1, mug).await;
    assert!(
        matches!(failed, Err(Error::Unavailable { .. })),
        "{failed:?}"
    );
    assert_eq!(
        orders::count(store.as_ref()).await.unwrap(),
        0,
        "rolled back"
    );
    assert_eq!(faulty.calls(Fault::Commit), 1);
}

/// Stockroom's ports mocked: a store whose unit of work answers a stale version for the
/// update, and whose commit must not be reached.
#[tokio::test]
async fn the_ports_are_mocked_from_the_facade() {
    let product = ProductId::new();
    let mut store = MockStore::new();
    store.expect_begin().times(1).returning(move || {
        let mut repositories = MockRepositories::default();
        repositories
            .records
            .expect_update()
            .times(1)
            .returning(move |_, _, _, _| {
                Err(Error::stale_version(EntityKind::PRODUCT, product, 1, 2))
            });
        let mut uow = MockUnitOfWork::new();
        uow.expect_repositories().return_var(Box::new(repositories));
        uow.expect_commit().never();
        Ok(Box::new(uow) as Box<dyn UnitOfWork>)
    });
    let refused = orders::rename(&store, product, "Big mug").await;
    assert!(
        matches!(refused, Err(Error::StaleVersion { actual: 2, .. })),
        "{refused:?}"
    );
}

//! # Stockroom
//!
//! A typed, race-free data layer for a product catalogue and its stock. Pick a backend with a
//! cargo feature (`memory`, `sqlite`, `postgres`, `mariadb`) or at run time with a URL, and get
//! repositories, units of work, soft delete and a safe stock transfer that behave the same on
//! every backend.
//!
#![cfg_attr(feature = "memory", doc = "```")]
#![cfg_attr(not(feature = "memory"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! use stockroom::{NewProduct, ProductFilter, Page, StoreExt, Total, TransferRequest};
//!
//! let store = stockroom::connect("memory://").await?;
//!
//! let mut uow = store.begin().await?;
//! let mug = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE")?.with_stock(10)?).await?;
//! let cup = uow.products().create(NewProduct::new("Tea cup", "tea-cup", "CUP-TEA")?).await?;
//! uow.commit().await?;
//!
//! store.transfer(&TransferRequest::new(mug.id, cup.id, 4)).await?;
//!
//! let mut read = store.read().await?;
//! let found = read.products().search(&ProductFilter::default().with_search("MUG")?, Page::new(10, 0)?).await?;
//! assert_eq!((found.total, found.items[0].stock), (Total::Exact(1), 6));
//! # Ok(()) }
//! ```
//!
//! The crate re-exports the application's API of `stockroom-core` (entities, inputs, ports, use
//! cases, [`Error`]); the adapters are under [`memory`], [`sqlite`], [`postgres`] and [`mariadb`] when
//! their features are on.
//!
//! # Choosing a backend
//!
//! | feature | URL given to [`connect`] | store |
//! |---|---|---|
//! | `memory` (default) | `memory://` | [`memory::MemoryStore`]: in the process, gone when it ends |
//! | `sqlite` (default) | `sqlite://path/to/shop.db` (created if missing), `sqlite::memory:` | [`sqlite::SqliteStore`]: an embedded SQLite file |
//! | `postgres` | `postgres://user:password@host:5432/db` | [`postgres::PostgresStore`]: a pool of connections to a server |
//! | `mariadb` | `mariadb://user:password@host:3306/db` (or `mysql://…`) | [`mariadb::MariaDbStore`]: a pool of connections to a MariaDB server or a Galera node |
//!
//! Other features: `mocks` ([`mocks`]: mockall mocks of the ports, such as [`mocks::MockStore`]
//! and [`mocks::MockUnitOfWork`], and [`mocks::FaultyStore`], which fails a real store on
//! purpose), `serde` (entities,
//! ids and [`Backend`] are `Serialize` and `Deserialize`; [`TransferRequest`] is `Deserialize`;
//! what the API returns, such as pages, [`Transferred`], [`Rule`] and [`Constraint`], is
//! `Serialize`; the other inputs, such as [`NewProduct`], [`ProductPatch`] and
//! [`ProductFilter`], are built by their validating constructors, not deserialized), `axum`
//! ([`axum`]: [`Error`] as an RFC 9457 problem
//! response, the per-request unit of work as an extractor). An application on PostgreSQL alone
//! writes `stockroom = { version = "0.1", default-features = false, features = ["postgres"] }`.
//!
//! [`connect`] picks the backend from the URL's scheme at run time; a scheme whose feature is off
//! is [`Error::Validation`] on the field `url`. Every store is an `Arc<dyn Store>`, so the rest of
//! the application does not depend on the choice.
//!
//! In memory, for tests and demos:
//!
#![cfg_attr(feature = "memory", doc = "```")]
#![cfg_attr(not(feature = "memory"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! let store = stockroom::connect("memory://").await?;
//! assert_eq!(store.backend(), stockroom::Backend::Memory);
//! # Ok(()) }
//! ```
//!
//! A SQLite file, created and migrated on first use (the parent directory must exist):
//!
#![cfg_attr(feature = "sqlite", doc = "```")]
#![cfg_attr(not(feature = "sqlite"), doc = "```ignore")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("stockroom-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("shop.db");
//! let store = stockroom::connect(&format!("sqlite://{}", path.display())).await?;
//! assert_eq!(store.backend(), stockroom::Backend::Sqlite);
//! store.close().await;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! A PostgreSQL server (feature `postgres`), with the pool settings of [`StoreConfig`]; or all of
//! them from the environment with [`connect_from_env`] (`DATABASE_URL`, `STOCKROOM_*`):
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! use std::time::Duration;
//! use stockroom::StoreConfig;
//!
//! let config = StoreConfig::new("postgres://shop:secret@db.internal:5432/shop")
//!     .with_max_connections(20)
//!     .with_acquire_timeout(Duration::from_secs(2)) // then `begin` fails with Error::Unavailable
//!     .with_application_name("shop-api");
//! let store = stockroom::connect_with(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Testing an application with the memory backend
//!
//! The memory store is a real, transactional store that passes the same conformance suite as
//! the SQL backends, so an application's tests can run its code against it, with no server and
//! no file, and check the outcome with ordinary reads:
//!
#![cfg_attr(feature = "memory", doc = "```")]
#![cfg_attr(not(feature = "memory"), doc = "```ignore")]
//! use stockroom::memory::MemoryStore;
//! use stockroom::{NewProduct, ProductId, Store, StoreExt, TransferRequest};
//!
//! /// The application's code: ships `quantity` units from the warehouse to the shop, once per
//! /// order number.
//! async fn ship(store: &dyn Store, warehouse: ProductId, shop: ProductId, quantity: i64, order: &str) -> stockroom::Result<()> {
//!     let request = TransferRequest::new(warehouse, shop, quantity).with_idempotency_key(order);
//!     store.transfer(&request).await.map(drop)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! // The test: a fresh store per test, with the rows it needs.
//! let store = MemoryStore::new();
//! let mut uow = store.begin().await?;
//! let warehouse = uow.products().create(NewProduct::new("Mug (warehouse)", "mug-w", "MUG-W")?.with_stock(10)?).await?;
//! let shop = uow.products().create(NewProduct::new("Mug (shop)", "mug-s", "MUG-S")?).await?;
//! uow.commit().await?;
//!
//! ship(&store, warehouse.id, shop.id, 4, "order-17").await?;
//! ship(&store, warehouse.id, shop.id, 4, "order-17").await?; // a retried request: applied once
//!
//! let mut read = store.read().await?;
//! assert_eq!(read.products().require(shop.id).await?.stock, 4);
//! assert_eq!(read.movements().count().await?, 1);
//! # Ok(()) }
//! ```
//!
//! # Testing with mocks
//!
//! With the `mocks` feature, [`mocks::MockStore`] is a [mockall](https://docs.rs/mockall) mock of
//! the [`Store`] port, for code that only needs a store to answer one call in a given way; and
//! [`mocks::FaultyStore`] wraps a real store (usually the memory store) and fails on purpose where
//! a test says: `begin`, `read`, `commit` (rolled back, or committed with the answer lost), the
//! stock move, `health`, `readiness`.
//!
#![cfg_attr(all(feature = "mocks", feature = "memory"), doc = "```")]
#![cfg_attr(not(all(feature = "mocks", feature = "memory")), doc = "```ignore")]
//! use stockroom::memory::MemoryStore;
//! use stockroom::mocks::{Fault, FaultyStore, MockStore};
//! use stockroom::{Error, NewProduct, Store, StoreExt, TransferRequest};
//!
//! /// The application's readiness probe: the HTTP status it answers.
//! async fn readyz(store: &dyn Store) -> u16 {
//!     match store.readiness().await {
//!         Ok(()) => 200,
//!         Err(_) => 503,
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! // A mock: the store refuses connections.
//! let mut down = MockStore::new();
//! down.expect_readiness()
//!     .times(1)
//!     .returning(|| Err(Error::unavailable("connection refused")));
//! assert_eq!(readyz(&down).await, 503);
//!
//! // A real store whose next commit is lost: the transfer fails and moves nothing.
//! let store = FaultyStore::new(MemoryStore::new());
//! let mut uow = store.begin().await?;
//! let a = uow.products().create(NewProduct::new("A", "a", "A")?.with_stock(5)?).await?;
//! let b = uow.products().create(NewProduct::new("B", "b", "B")?).await?;
//! uow.commit().await?;
//! store.inject(Fault::Commit, 1, || Error::unavailable("connection lost"));
//! let failed = store.transfer(&TransferRequest::new(a.id, b.id, 2)).await;
//! assert!(matches!(failed, Err(Error::Unavailable { .. })));
//! assert_eq!(store.read().await?.products().require(a.id).await?.stock, 5);
//! # Ok(()) }
//! ```
//!
//! # In a web handler
//!
//! A handler takes the shared store (`Arc<dyn Store>`, cloned into each request), reads without
//! a transaction, writes through a use case or a unit of work, and turns an [`Error`] into a
//! response. With the `axum` feature, [`axum::Problem`] maps every error to its HTTP status and an
//! RFC 9457 `application/problem+json` body (404 not found, 409 conflict or insufficient stock,
//! 412 stale version, 422 validation naming the field, 503 with `Retry-After` when the store is
//! busy or down, 500 without internals otherwise; see [`axum`]). The handler below is a plain
//! function, so it fits any web framework; [`request::RequestUnitOfWork`] gives a handler that
//! writes several rows a unit of work committed before the response.
//!
#![cfg_attr(all(feature = "axum", feature = "memory"), doc = "```")]
#![cfg_attr(not(all(feature = "axum", feature = "memory")), doc = "```ignore")]
//! use std::sync::Arc;
//!
//! use stockroom::axum::Problem;
//! use stockroom::{Error, ProductId, ProductStatus, Rule, Store, StoreExt, TransferRequest};
//!
//! /// POST /products/{source}/transfers, body `{"target_id": …, "quantity": …}`: the status and
//! /// the JSON body to send.
//! async fn post_transfer(store: Arc<dyn Store>, source: ProductId, target: ProductId, quantity: i64) -> (u16, String) {
//!     match transfer(store.as_ref(), source, target, quantity).await {
//!         Ok(left) => (201, format!(r#"{{"source_stock": {left}}}"#)),
//!         Err(error) => {
//!             let problem = Problem::from(error);
//!             (problem.status().as_u16(), problem.body().to_string())
//!         }
//!     }
//! }
//!
//! /// The handler's work: the stock left at the source.
//! async fn transfer(store: &dyn Store, source: ProductId, target: ProductId, quantity: i64) -> stockroom::Result<i64> {
//!     // A read: no transaction. A missing product is Error::NotFound (404).
//!     let target_row = store.read().await?.products().require(target).await?;
//!     if target_row.status == ProductStatus::Archived {
//!         // The application's own rule, reported like Stockroom's (422, naming the field).
//!         return Err(Error::validation("target_id", Rule::Malformed { expected: "a product that is not archived" }));
//!     }
//!     // The transfer: validated, atomic, retried on transient failures.
//!     store.transfer(&TransferRequest::new(source, target, quantity)).await?;
//!     Ok(store.read().await?.products().require(source).await?.stock)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! # use stockroom::NewProduct;
//! let store = stockroom::connect("memory://").await?;
//! # let mut uow = store.begin().await?;
//! # let mug = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE")?.with_stock(10)?).await?;
//! # let cup = uow.products().create(NewProduct::new("Tea cup", "tea-cup", "CUP-TEA")?).await?;
//! # let old = uow.products().create(NewProduct::new("Old cup", "old-cup", "CUP-OLD")?.with_status(ProductStatus::Archived)).await?;
//! # uow.commit().await?;
//! assert_eq!(post_transfer(store.clone(), mug.id, cup.id, 4).await, (201, r#"{"source_stock": 6}"#.to_owned()));
//!
//! let (status, body) = post_transfer(store.clone(), mug.id, cup.id, 99).await;
//! assert_eq!(status, 409);
//! assert!(body.contains("urn:stockroom:problem:insufficient-stock"), "{body}");
//!
//! let (status, body) = post_transfer(store.clone(), mug.id, old.id, 1).await;
//! assert_eq!(status, 422);
//! assert!(body.contains(r#""field":"target_id""#), "{body}");
//!
//! assert_eq!(post_transfer(store, mug.id, ProductId::new(), 1).await.0, 404);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

// The application's API, named one by one: what an application writes against. The adapters'
// toolkit (`stockroom_core::adapter`) stays out of it.
pub use stockroom_core::{
    entity_id, outbox, product_details, run_in_unit_of_work, schema, time, traced, transfer_in,
    transfer_stock, Backend, BackendCode, BoxError, CategoryId, ColumnDifference, Constraint,
    Cursor, Email, EntityId, EntityKind, Error, IdempotencyKey, KeysetPage, Limit, Name, OnDelete,
    Page, ProductId, Quantity, Rating, ReadRepo, ReadRepository, ReadSession, Readers, Repo,
    Repositories, Repository, Result, RetryPolicy, ReviewId, Rule, Savepoint, SchemaProblem,
    SearchPage, SearchText, Sku, Slug, Stock, StockDelta, StockMoved, StockMovementId,
    StockMovementReader, StockMovementRepository, StorageFault, Store, StoreConfig, StoreExt, Text,
    TextEnum, Timestamp, Total, Traced, TransferRequest, Transferred, UnitOfWork, UnitOfWorkExt,
    UnknownBackend, UserId, WorkFuture, MAX_EMAIL_LEN, MAX_EXACT_TOTAL, MAX_IDEMPOTENCY_KEY_LEN,
    MAX_LIMIT, MAX_NAME_LEN, MAX_OFFSET, MAX_QUERY_LEN, MAX_SKU_LEN, MAX_SLUG_LEN, MAX_STOCK,
    MAX_TEXT_LEN,
};
// Every entity of Stockroom's, its inputs, and the `Entity` trait and derive: a new entity is
// exported with no line of its own.
pub use stockroom_core::entities::*;
pub use stockroom_core::Entity;

/// What `#[derive(Entity)]`, `#[derive(TextEnum)]` and `entity_id!` expand to. Not a stable API.
#[doc(hidden)]
pub use stockroom_core::__private;

pub use stockroom_core::metrics;
/// Mocks of the ports for an application's unit tests: mockall mocks of the ports and `FaultyStore`,
/// which injects failures into a real store.
#[cfg(feature = "mocks")]
#[cfg_attr(docsrs, doc(cfg(feature = "mocks")))]
pub use stockroom_core::mocks;

pub mod request;

/// The outbox's relay (feature `relay`; `nats` and `rabbitmq` add those brokers' sinks): see
/// [`stockroom_relay`] and [`outbox`].
#[cfg(feature = "relay")]
#[cfg_attr(docsrs, doc(cfg(feature = "relay")))]
pub use stockroom_relay as relay;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "mariadb")]
#[cfg_attr(docsrs, doc(cfg(feature = "mariadb")))]
pub use stockroom_mariadb as mariadb;
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use stockroom_memory as memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use stockroom_postgres as postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use stockroom_sqlite as sqlite;

/// Connects to the backend named by the URL's scheme, with default settings:
/// `memory://`, `sqlite://path/to/file.db` (created if missing), `postgres://user@host/db`,
/// `mariadb://user@host/db` (or `mysql://user@host/db`).
///
/// Every operation of the returned store runs inside a `tracing` span.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    connect_with(StoreConfig::new(url)).await
}

/// Connects with the settings of [`StoreConfig::from_env`]. `DATABASE_URL` is required: without
/// it this is [`Error::Validation`] on the field `DATABASE_URL`, never a silent fallback to a
/// local file that would hide a misconfigured deployment.
pub async fn connect_from_env() -> Result<Arc<dyn Store>> {
    connect_with(StoreConfig::from_env()?).await
}

/// Connects to the backend named by `config.url`'s scheme.
///
/// A scheme whose backend is not compiled in (its cargo feature is off), or an unknown one, is a
/// validation error on the field `url`.
pub async fn connect_with(config: StoreConfig) -> Result<Arc<dyn Store>> {
    let scheme = config.scheme().unwrap_or_default();
    tracing::debug!(url = %config.redacted_url(), "stockroom: connecting");
    match scheme.as_str() {
        #[cfg(feature = "memory")]
        "memory" => Ok(traced_arc(memory::MemoryStore::connect(&config)?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(traced_arc(sqlite::SqliteStore::connect(&config).await?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(traced_arc(postgres::PostgresStore::connect(&config).await?)),
        #[cfg(feature = "mariadb")]
        "mariadb" | "mysql" => Ok(traced_arc(mariadb::MariaDbStore::connect(&config).await?)),
        _ => Err(Error::validation(
            "url",
            Rule::Malformed {
                expected: "a URL whose backend is compiled in: memory://, sqlite://… (features memory, sqlite), postgres://… (feature postgres) or mariadb://… (feature mariadb)",
            },
        )),
    }
}

#[allow(dead_code)] // unused only when every backend feature is off
fn traced_arc<S: Store + 'static>(store: S) -> Arc<dyn Store> {
    Arc::new(traced(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_is_a_validation_error_on_url() {
        let err = connect("oracle://localhost/db")
            .await
            .err()
            .expect("oracle is not a backend");
        assert!(
            matches!(err, Error::Validation { field: "url", .. }),
            "{err:?}"
        );
    }

    /// `mariadb://` and `mysql://` go to the MariaDB adapter with its feature, and are an
    /// unknown scheme without it: a port nobody listens on answers `Unavailable`, not a
    /// validation error on the URL.
    #[tokio::test]
    async fn mariadb_and_mysql_urls_pick_the_mariadb_backend_with_its_feature() {
        for url in [
            "mariadb://root@127.0.0.1:1/shop",
            "mysql://root@127.0.0.1:1/shop",
        ] {
            let err = connect_with(
                StoreConfig::new(url).with_acquire_timeout(std::time::Duration::from_secs(2)),
            )
            .await
            .err()
            .expect("nothing listens on port 1");
            if cfg!(feature = "mariadb") {
                assert!(matches!(err, Error::Unavailable { .. }), "{url}: {err:?}");
            } else {
                assert!(
                    matches!(err, Error::Validation { field: "url", .. }),
                    "{url}: {err:?}"
                );
            }
        }
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_url_picks_the_memory_adapter() {
        let store = connect("memory://").await.unwrap();
        assert_eq!(store.backend(), Backend::Memory);
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_picks_the_sqlite_adapter() {
        let dir = std::env::temp_dir().join(format!("stockroom-facade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("facade.db").display());
        let store = connect(&url).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Every public future can be spawned on a multi-thread runtime (it is `Send`), with every
    /// feature on, and the use cases are methods of `&dyn Store`, `Arc<dyn Store>` and concrete
    /// stores alike. This is a compile-time test: it fails to build otherwise.
    #[cfg(feature = "memory")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn public_futures_are_send_and_use_cases_work_on_any_store() {
        use std::time::Duration;

        let config = StoreConfig::new("memory://");
        let store = tokio::spawn(connect_with(config)).await.unwrap().unwrap();
        let (a, b) = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut uow = store.begin().await?;
                let a = uow
                    .products()
                    .create(NewProduct::new("A", "a", "A")?.with_stock(5)?)
                    .await?;
                let b = uow
                    .products()
                    .create(NewProduct::new("B", "b", "B")?)
                    .await?;
                uow.commit().await?;
                Ok::<_, Error>((a.id, b.id))
            })
            .await
            .unwrap()
            .unwrap()
        };
        let request = TransferRequest::new(a, b, 1);
        let spawned = {
            let store = store.clone();
            let request = request.clone();
            tokio::spawn(async move { store.transfer(&request).await })
        };
        spawned.await.unwrap().unwrap();
        let ran = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .run(&RetryPolicy::none(), |uow| {
                        Box::pin(async move { uow.transfer(&TransferRequest::new(a, b, 1)).await })
                    })
                    .await
            })
        };
        ran.await.unwrap().unwrap();
        let read = {
            let store = store.clone();
            tokio::spawn(async move { store.read().await?.products().require(b).await })
        };
        assert_eq!(read.await.unwrap().unwrap().stock, 2);

        // `&dyn Store` and a concrete store take the same extension methods.
        async fn through_a_reference(store: &dyn Store, request: &TransferRequest) -> Result<()> {
            store.transfer(request).await.map(drop)
        }
        through_a_reference(store.as_ref(), &request).await.unwrap();
        let concrete = memory::MemoryStore::new();
        let details = concrete
            .product_details(ProductId::new(), Limit::new(1).unwrap())
            .await;
        assert!(matches!(details, Ok(None)));
        let closing = {
            let store = store.clone();
            tokio::spawn(async move {
                store.health().await?;
                store.close().await;
                Ok::<_, Error>(())
            })
        };
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_memory_url_picks_the_sqlite_adapter_without_a_file() {
        let store = connect("sqlite::memory:").await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        store.health().await.unwrap();
    }
}

/// The README's examples, compiled (and the tour run) as doc tests so they cannot drift from the
/// API. They use every backend and the axum integration, so they are checked with those features.
#[cfg(all(
    doctest,
    feature = "memory",
    feature = "sqlite",
    feature = "postgres",
    feature = "axum"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! # Stockroom
//!
//! A typed, race-free data layer for a product catalogue and its stock. Pick a backend with a
//! cargo feature (`memory`, `sqlite`, `postgres`) or at run time with a URL, and get
//! repositories, units of work, soft delete and a safe stock transfer that behave the same on
//! every backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom::Result<()> {
//! use stockroom::{NewProduct, ProductFilter, Page, StoreExt, TransferRequest};
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
//! let found = read.products().search(&ProductFilter::default().search("MUG")?, Page::new(10, 0)?).await?;
//! assert_eq!((found.total, found.items[0].stock), (1, 6));
//! # Ok(()) }
//! ```
//!
//! The crate re-exports everything of `stockroom-core`; the adapters are under [`memory`],
//! [`sqlite`] and [`postgres`] when their features are on.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

// The application's API, named one by one: what an application writes against. The adapters'
// toolkit (`stockroom_core::adapter`) stays out of it.
pub use stockroom_core::{
    product_details, run_in_unit_of_work, time, traced, transfer_in, transfer_stock, Category,
    CategoryFilter, CategoryId, CategoryPatch, CategoryReader, CategoryRepository, Constraint,
    Cursor, Email, Entity, EntityId, EntityKind, Error, IdempotencyKey, KeysetPage, Limit, Name,
    NewCategory, NewProduct, NewReview, NewStockMovement, NewUser, OnDelete, Page, Product,
    ProductDetails, ProductFilter, ProductId, ProductPatch, ProductReader, ProductRepository,
    ProductStatus, ProductWithRelations, Quantity, Rating, RatingStats, ReadRepository,
    ReadSession, Readers, Repositories, Repository, Result, RetryPolicy, Review, ReviewFilter,
    ReviewId, ReviewPatch, ReviewReader, ReviewRepository, Rule, Savepoint, SearchPage, SearchText,
    Sku, Slug, Stock, StockDelta, StockMoved, StockMovement, StockMovementId, StockMovementReader,
    StockMovementRepository, StorageFault, Store, StoreConfig, StoreExt, Text, Timestamp, Traced,
    TransferRequest, Transferred, UnitOfWork, UnitOfWorkExt, User, UserFilter, UserId, UserPatch,
    UserReader, UserRepository, WorkFuture, MAX_EMAIL_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_LIMIT,
    MAX_NAME_LEN, MAX_OFFSET, MAX_QUERY_LEN, MAX_SKU_LEN, MAX_SLUG_LEN, MAX_STOCK, MAX_TEXT_LEN,
};

/// Mocks of the ports for an application's unit tests: `MockStore` (mockall) and `FaultyStore`,
/// which injects failures into a real store.
#[cfg(feature = "mocks")]
#[cfg_attr(docsrs, doc(cfg(feature = "mocks")))]
pub use stockroom_core::mocks;

pub mod request;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

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
/// `memory://`, `sqlite://path/to/file.db` (created if missing), `postgres://user@host/db`.
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
        _ => Err(Error::validation(
            "url",
            Rule::Malformed {
                expected: "a URL whose backend is compiled in: memory://, sqlite://… (features memory, sqlite) or postgres://… (feature postgres)",
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
        let err = connect("mysql://localhost/db")
            .await
            .err()
            .expect("mysql is not a backend");
        assert!(
            matches!(err, Error::Validation { field: "url", .. }),
            "{err:?}"
        );
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_url_picks_the_memory_adapter() {
        let store = connect("memory://").await.unwrap();
        assert_eq!(store.backend(), "memory");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_picks_the_sqlite_adapter() {
        let dir = std::env::temp_dir().join(format!("stockroom-facade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("facade.db").display());
        let store = connect(&url).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
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
        assert_eq!(store.backend(), "sqlite");
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

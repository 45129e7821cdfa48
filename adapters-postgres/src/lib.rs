//! # stockroom-postgres
//!
//! Stockroom's PostgreSQL adapter: every port of `stockroom-core` on a sqlx `PgPool`.
//!
//! ```no_run
//! use stockroom_core::{NewProduct, Store, StoreConfig, StoreExt, TransferRequest};
//! use stockroom_postgres::PostgresStore;
//!
//! # async fn demo() -> stockroom_core::Result<()> {
//! let config = StoreConfig::new("postgres://app:secret@127.0.0.1:5432/shop")
//!     .with_pool_size(10)
//!     .with_application_name("shop-api");
//! let store = PostgresStore::connect(&config).await?; // applies the migrations
//!
//! let mut uow = store.begin().await?;
//! let a = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-B")?.with_stock(10)?).await?;
//! let b = uow.products().create(NewProduct::new("Red mug", "red-mug", "MUG-R")?).await?;
//! uow.commit().await?;
//!
//! store.transfer(&TransferRequest::new(a.id, b.id, 3)).await?;
//! let mut read = store.read().await?; // a pooled connection, no transaction
//! assert_eq!(read.products().get(b.id).await?.map(|p| p.stock), Some(3));
//! store.close().await;
//! # Ok(()) }
//! ```
//!
//! ## How it maps the design
//!
//! - **Schema**: embedded migrations (`migrations/`), applied on connect unless
//!   `StoreConfig::run_migrations` is false. Uniqueness among live rows is a partial unique index
//!   per rule, named after `Constraint::as_str()`; `CHECK (stock >= 0)`; foreign keys as the
//!   design says (none on the ledger); `(created_at, id)` indexes for the list order; a pg_trgm
//!   GIN index on `search_text` for search.
//! - **Round trips**: one statement per operation on the success path. `get_many` is
//!   `= ANY($1)`; `create_many` is one `INSERT … SELECT FROM UNNEST(…)` per 10,000 rows;
//!   `exists` is `SELECT EXISTS`; `search` returns the page and the total in one statement;
//!   `adjust_stock` is one conditional `UPDATE … WHERE stock + $2 >= 0 RETURNING …`; `lock` is
//!   `SELECT … ORDER BY id FOR UPDATE`. Reads of a read session run on a pooled connection
//!   without `BEGIN`/`COMMIT`.
//! - **Expected failures do not abort the transaction**: inserts use `ON CONFLICT DO NOTHING`
//!   and updates carry guards (referenced row live, new unique value free), so a conflict or a
//!   missing reference changes nothing and a second statement, run only then, says which rule
//!   failed. The unit of work stays usable, as on the other backends. A statement that does fail
//!   on the server (a race the guards could not see, a lost connection) aborts the PostgreSQL
//!   transaction: the unit of work then refuses to commit (rather than let PostgreSQL turn the
//!   `COMMIT` into a silent rollback) until it is rolled back, or rolled back to a savepoint.
//! - **Isolation**: READ COMMITTED. A transfer locks both rows in id order with
//!   `SELECT … FOR UPDATE` before it reads their stock, so concurrent transfers serialize on
//!   the rows they share and cannot deadlock; serialization failures do not occur at this
//!   level, and deadlocks (40P01) or serialization failures from other settings map to
//!   `Error::Transient`, which the transfer retries.
//! - **Configuration**: `pool_size` connections are kept (min connections), up to
//!   `pool_size + max_overflow` are opened under load and the extra ones closed after
//!   `idle_timeout`; `max_lifetime` recycles; `test_before_acquire` makes a connection the
//!   server closed invisible to callers (a read session pings it; a unit of work's `BEGIN` is its
//!   ping, so it costs no extra round trip) and a dead one is replaced; `application_name`
//!   names the sessions, `session_settings` (default `jit=off`) are sent as startup options,
//!   `busy_timeout` becomes `lock_timeout` (a longer wait for a row lock fails as
//!   `Error::Transient`; migrations are exempt), and statements are logged under the target
//!   `stockroom::sql` (all at `debug` with `log_statements`, slow ones at `warn`). The password
//!   never appears in `Debug` output or logs.
//! - **Errors** map by SQLSTATE (see the `error` module): 23505 conflict, 23514 validation,
//!   23503 not found, 40001/40P01/55P03 transient, connection loss and pool timeouts
//!   unavailable. No sqlx type appears in the public API.

mod categories;
mod entity;
mod error;
mod migrate;
mod options;
mod products;
mod reviews;
mod session;
mod store;
mod users;

/// The sqlx this adapter is built on, so that an application's pool, connections and queries
/// are of the same version as Stockroom's.
pub use sqlx;

pub use options::PostgresOptions;
pub use session::connection;
pub use store::PostgresStore;

/// Rows per statement of `create_many`.
pub const CREATE_MANY_BATCH: usize = products::BATCH;

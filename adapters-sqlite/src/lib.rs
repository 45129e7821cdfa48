//! # stockroom-sqlite
//!
//! Stockroom's SQLite backend (rusqlite, bundled SQLite): the embedded default. It implements
//! every port of [`stockroom_core`] with the semantics the conformance suite checks.
//!
//! ```
//! use stockroom_core::{NewProduct, StoreConfig, Store, StoreExt, TransferRequest};
//! use stockroom_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> stockroom_core::Result<()> {
//! let store = SqliteStore::connect(&StoreConfig::new("sqlite::memory:")).await?;
//! let mut uow = store.begin().await?;
//! let a = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-B")?.with_stock(10)?).await?;
//! let b = uow.products().create(NewProduct::new("Red mug", "red-mug", "MUG-R")?).await?;
//! uow.commit().await?;
//!
//! store.transfer(&TransferRequest::new(a.id, b.id, 4)).await?;
//! let mut read = store.read().await?;
//! assert_eq!(read.products().get(b.id).await?.map(|p| p.stock), Some(4));
//! # store.close().await;
//! # Ok(()) }
//! ```
//!
//! ## Design
//!
//! - **One writer, many readers.** SQLite allows one writer at a time. The store keeps one writer
//!   connection behind an async mutex: [`Store::begin`](stockroom_core::Store::begin) waits up to
//!   `StoreConfig::busy_timeout` for it (then fails as `Transient`), and the unit of work holds it
//!   exclusively until commit, rollback or drop, so no other statement can slip into its
//!   transaction. The transaction opens with `BEGIN IMMEDIATE` (run in the same blocking call as
//!   the first statement, saving a thread hop), so a transaction that reads first cannot fail
//!   its later write with `SQLITE_BUSY`; a lock held by another process shows as `Transient`.
//!   Reads outside a unit of work take connections from a pool of up to `max_connections()`
//!   read connections (`query_only`), which run in parallel under WAL.
//! - **Off the async threads.** Every call moves its connection into
//!   `tokio::task::spawn_blocking`, runs its statements there and moves it back. A connection
//!   is never shared: a lease owns it. Dropping a lease (a unit of work dropped without commit,
//!   or a call whose future was dropped mid-way) rolls back any open transaction before the
//!   connection serves anyone else (checked with `is_autocommit`).
//! - **Connections**: WAL, `synchronous=NORMAL` (`FULL` with `Durability::Full`),
//!   `foreign_keys=ON`, the configured busy timeout, a prepared-statement cache
//!   (`prepare_cached`, 64 statements). With `log_statements`, every statement is logged at
//!   `debug` (target `stockroom::sql`); statements slower than `slow_statement_threshold` at
//!   `warn`. Idle read connections older than `max_lifetime` are closed and replaced; those
//!   beyond `pool_size` idle for `idle_timeout` are closed.
//! - **Schema**: embedded migrations, applied on connect unless `run_migrations` is false, with
//!   their bookkeeping in Stockroom's own `stockroom_migrations` table (`user_version` is left
//!   to the application; see `schema.rs`). Ids are 16-byte BLOBs, timestamps INTEGER microseconds, unique
//!   rules are partial unique indexes over live rows named after their
//!   [`Constraint`](stockroom_core::Constraint), `CHECK (stock >= 0)`, foreign keys as the
//!   design says, and `(created_at, id)` indexes for the list order.
//! - **Search** matches a `search_text` column (the core's `search_document`, folded in Rust at
//!   write time) with `LIKE ? ESCAPE '\'`, so it gives the same rows as the memory adapter for
//!   any Unicode text. The page and the total come from one statement (`COUNT(*) OVER ()`).
//! - **URLs**: `sqlite://path/to/file.db` (created if missing; `sqlite:///abs/path.db` for an
//!   absolute path) and `sqlite::memory:` or `sqlite://:memory:` for a private in-memory database
//!   (SQLite's `memdb` VFS, shared by the store's connections, without WAL).

mod conn;
mod connection;
mod error;
mod options;
mod repos;
mod schema;
mod store;
mod table;

/// The rusqlite this adapter is built with: use it for [`with_connection`] and
/// [`SqliteOptions::with_on_open`], so the application's code and Stockroom share one version
/// (and one SQLite).
pub use rusqlite;

pub use connection::with_connection;
pub use error::SqliteError;
pub use options::SqliteOptions;
pub use store::SqliteStore;

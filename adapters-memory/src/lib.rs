//! # stockroom-memory
//!
//! Stockroom's in-memory adapter: the reference implementation of every port of
//! `stockroom-core`, and the test double applications use in their unit tests. It passes the
//! same conformance suite as the SQL adapters.
//!
//! - Real transactions. A unit of work sees its own writes and nobody else does until it
//!   commits; rollback, drop and [`rollback_to`](stockroom_core::UnitOfWork::rollback_to) leave
//!   no trace.
//! - One writer at a time, like SQLite: [`begin`](stockroom_core::Store::begin) waits up to
//!   [`StoreConfig::acquire_timeout`](stockroom_core::StoreConfig) for the writer slot (as the
//!   SQL stores wait for a connection), then fails with
//!   [`Error::Unavailable`](stockroom_core::Error::Unavailable). Units of work are therefore
//!   serializable and cannot lose updates. Reads never wait.
//! - A read session reads, at each call, the last committed state, like a SQL connection
//!   outside a transaction.
//! - Cheap. Every table is a persistent map: a unit of work, a savepoint or a read copies the
//!   whole store in O(1), and a commit publishes the new version atomically.
//!
//! ```
//! use stockroom_core::{NewProduct, ProductStatus, Store};
//! use stockroom_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stockroom_core::Result<()> {
//! let store = MemoryStore::new();
//!
//! let mut uow = store.begin().await?;
//! let mug = uow
//!     .products()
//!     .create(NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE")?.with_stock(12)?)
//!     .await?;
//! uow.commit().await?;
//!
//! let mut read = store.read().await?;
//! let found = read.products().by_slug("blue-mug").await?.expect("committed");
//! assert_eq!(found, mug);
//! assert_eq!(found.status, ProductStatus::Draft);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ledger;
mod outbox;
mod repositories;
mod state;
mod store;
mod table;

pub use store::MemoryStore;

#[cfg(test)]
mod tests;

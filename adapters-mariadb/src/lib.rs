//! # stockroom-mariadb
//!
//! Stockroom's MariaDB adapter: every port of `stockroom-core` on a sqlx `MySqlPool`, on a
//! single MariaDB server or on a node of a Galera cluster.
//!
//! ```no_run
//! use stockroom_core::{NewProduct, Store, StoreConfig, StoreExt, TransferRequest};
//! use stockroom_mariadb::MariaDbStore;
//!
//! # async fn demo() -> stockroom_core::Result<()> {
//! let config = StoreConfig::new("mariadb://app:secret@127.0.0.1:3306/shop");
//! let store = MariaDbStore::connect(&config).await?; // applies the migrations
//!
//! let mut uow = store.begin().await?;
//! let a = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-B")?.with_stock(10)?).await?;
//! let b = uow.products().create(NewProduct::new("Red mug", "red-mug", "MUG-R")?).await?;
//! uow.commit().await?;
//!
//! store.transfer(&TransferRequest::new(a.id, b.id, 3)).await?;
//! let mut read = store.read().await?;
//! assert_eq!(read.products().get(b.id).await?.map(|p| p.stock), Some(3));
//! store.close().await;
//! # Ok(()) }
//! ```
//!
//! The crate's README says how the design maps to MariaDB (what replaces partial indexes,
//! `RETURNING`, arrays, transactional DDL), how errors map, how Stockroom behaves as a guest in
//! the application's database and pool, and how it runs on a Galera cluster.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod ledger;
mod migrate;
mod moves;
mod options;
mod outbox;
mod plans;
mod records;
mod session;
mod store;
mod tables;

#[cfg(feature = "testing")]
pub mod testing;

/// The sqlx this adapter is built on, so that an application's pool, connections and queries
/// are of the same version as Stockroom's.
pub use sqlx;

pub use error::{classify, classify_on};
pub use options::{IsolationLevel, MariaDbOptions};
pub use session::{connection, read_connection};
pub use store::MariaDbStore;

/// The README's examples, compiled as doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! # stockroom-core
//!
//! The domain of Stockroom, with no database code: entities and their validated inputs, the ports
//! every storage backend implements, the soft-delete rules, the stock-transfer use case and the
//! one [`Error`] type.
//!
//! Applications use it through the `stockroom` facade crate, which also picks a backend. Adapters
//! implement [`Store`], [`UnitOfWork`], [`ReadSession`] and the repository traits; the
//! `stockroom-conformance` crate proves they all behave alike.
//!
//! [`traced()`] wraps any store so that every port operation runs inside a `tracing` span. With the
//! `mocks` feature, [`mocks`] holds mockall mocks of every port.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The derive macros and `entity_id!` name this crate by its path, inside it too.
extern crate self as stockroom_core;

pub mod adapter;
mod config;
pub mod entities;
mod error;
mod ids;
pub mod outbox;
mod ports;
mod query;
mod repo;
pub mod schema;
pub mod time;
mod traced;
mod usecases;
mod validate;

pub mod metrics;
#[cfg(feature = "mocks")]
#[cfg_attr(docsrs, doc(cfg(feature = "mocks")))]
pub mod mocks;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod problem;

pub use config::{Entities, StoreConfig};
// Every entity, its inputs and the traits they implement: a new entity of Stockroom's is
// exported with no line of its own.
pub use entities::*;
pub use error::{
    BackendCode, BoxError, ColumnDifference, Constraint, EntityKind, Error, Result, Rule,
    SchemaProblem, StorageFault,
};
pub use ids::{CategoryId, EntityId, ProductId, ReviewId, StockMovementId, UserId};
pub use ports::{
    Backend, ReadRepository, ReadSession, Readers, Repositories, Repository, Savepoint, StockMoved,
    StockMovementReader, StockMovementRepository, Store, UnitOfWork, UnknownBackend,
};
pub use query::{
    Cursor, KeysetPage, Limit, Page, SearchPage, SearchText, Total, MAX_EXACT_TOTAL, MAX_LIMIT,
    MAX_OFFSET, MAX_QUERY_LEN,
};
pub use repo::{ReadRepo, Repo};
pub use schema::{OnDelete, TextEnum};
pub use stockroom_macros::{Entity, TextEnum};
pub use time::Timestamp;
pub use traced::{traced, Traced};
pub use usecases::{
    product_details, run_in_unit_of_work, transfer_in, transfer_stock, RetryPolicy, StoreExt,
    TransferRequest, Transferred, UnitOfWorkExt, WorkFuture,
};
pub use validate::{
    Email, IdempotencyKey, Name, Quantity, Rating, Sku, Slug, Stock, StockDelta, Text,
    MAX_EMAIL_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_NAME_LEN, MAX_SKU_LEN, MAX_SLUG_LEN, MAX_STOCK,
    MAX_TEXT_LEN,
};

/// What the derive macros and `entity_id!` expand to, reached through this crate (or the
/// `stockroom` facade) so that an application needs no other dependency. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::entities::decode::{meta, Fields, Inputs};
    pub use crate::ids::parse_id;
    #[cfg(feature = "serde")]
    pub use serde;
    pub use uuid::Uuid;
}

//! The cases, one module per capability. Each case is a public async fn over `Arc<dyn Store>`
//! with a doc comment saying what it proves.

pub mod batch;
pub mod cancellation;
pub mod concurrency;
pub mod crud;
pub mod deadlines;
pub mod details;
pub mod idempotency;
pub mod keyset;
pub mod outbox;
pub mod own_events;
pub mod pagination;
pub mod relations;
pub mod savepoints;
pub mod search;
pub mod soft_delete;
pub mod stock;
pub mod store;
pub mod transactions;
pub mod transfer;
pub mod trash_and_purge;
pub mod uniqueness;
pub mod validation;
pub mod versioning;

//! The cases, one module per capability. Each case is a public async fn over `Arc<dyn Store>`
//! with a doc comment saying what it proves.

pub mod crud;
pub mod soft_delete;
pub mod trash_and_purge;
pub mod uniqueness;
pub mod pagination;
pub mod keyset;
pub mod search;
pub mod relations;
pub mod batch;
pub mod versioning;
pub mod stock;
pub mod transactions;
pub mod savepoints;
pub mod transfer;
pub mod idempotency;
pub mod concurrency;
pub mod validation;
pub mod details;
pub mod store;

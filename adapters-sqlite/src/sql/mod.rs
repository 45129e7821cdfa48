//! The SQL of every operation, each statement written once.
//!
//! - [`codec`]: conversions between Stockroom's values and SQLite's: the parameters a statement
//!   binds, and the [`RowReader`](codec::RowReader) a row is read with, by each column's declared
//!   storage.
//! - [`generic`]: the statement helpers every query runs on, the all-or-nothing savepoint and
//!   the ends of a transaction.
//! - [`plan`]: the statements of each declared entity, built once from its declaration when the
//!   store is built.
//! - [`records`]: the operations on any declared entity's records (Stockroom's and the
//!   application's alike), over its plan.
//! - [`ledger`]: the stock movements and the stock move (which reads and writes the products'
//!   `stock` column itself).
//! - [`outbox`]: the outbox's events and lanes: the append, the claim, its settling, the
//!   backlog and the purge.
//!
//! Everything here is synchronous and runs on a connection that one call owns for its duration,
//! inline or on a blocking thread (see `conn.rs`). A write runs in a unit of work, which holds
//! SQLite's single write lock ("One writer, many readers" in the [crate docs](crate#design)): no
//! other connection changes a row between a statement that reads it and one that writes it, so
//! a read is all that "locking" a row needs here.
//!
//! A new entity touches nothing here: its declaration is its plan, and its table is made from
//! the declaration too (`ddl.rs`).

pub(crate) mod codec;
pub(crate) mod generic;
pub(crate) mod ledger;
pub(crate) mod outbox;
pub(crate) mod plan;
pub(crate) mod records;

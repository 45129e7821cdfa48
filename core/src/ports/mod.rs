//! The ports: what a storage backend implements.
//!
//! - [`ReadRepository`] and [`Repository`]: the generic base operations over any [`Entity`].
//! - One reader and one repository trait per entity on top of them ([`ProductReader`],
//!   [`ProductRepository`], …). Readers are what a [`ReadSession`] offers (no transaction);
//!   repositories, with the writes, are what a [`UnitOfWork`] offers.
//! - [`UnitOfWork`]: one transaction. [`Store`]: the connected backend.
//!
//! Every method takes `&mut self`: a session or unit of work owns one connection, and the borrow
//! checker makes sure it runs one statement at a time.
//!
//! Rules every implementation keeps (the conformance suite checks each):
//! - Soft-deleted rows are invisible to every read except [`ReadRepository::list_deleted`], and
//!   every write treats them as absent.
//! - Lists are ordered by `(created_at, id)`; reviews of a product newest first.
//! - Uniqueness holds among live rows only.

mod repositories;
mod repository;
mod session;
mod stock;

pub use repositories::{
    CategoryReader, CategoryRepository, ProductReader, ProductRepository, ReviewReader,
    ReviewRepository, StockMovementReader, StockMovementRepository, UserReader, UserRepository,
};
pub use repository::{ReadRepository, Repository};
#[cfg(feature = "mocks")]
pub use session::MockStore;
pub use session::{
    native_unit_of_work, NativeUnitOfWork, ReadSession, Readers, Repositories, Savepoint,
    Savepoints, Store, UnitOfWork,
};
pub use stock::{
    check_move, check_stocks, key_taken_meanwhile, move_stock_in_own_unit_of_work,
    move_stock_with_repositories, StockMoved,
};

#[allow(unused_imports)] // used by the doc links above
use crate::entities::Entity;

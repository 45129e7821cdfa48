//! The ports: what a storage backend implements.
//!
//! - [`RecordReader`] and [`RecordWriter`]: the generic reads and writes of every declared entity,
//!   Stockroom's and the application's, as [`Record`](crate::schema::Record)s described by their
//!   [`Schema`](crate::schema::Schema). Implemented once per adapter.
//! - [`StockMovementReader`] and [`StockMovementRepository`]: the stock ledger.
//! - [`ReadSession`] (no transaction) and [`UnitOfWork`] (one transaction) hand them out;
//!   [`Store`] is the connected backend.
//! - [`ReadRepository`] and [`Repository`]: the typed base operations of an entity, which
//!   [`Repo`](crate::Repo) implements over the generic ports, for code that takes
//!   `&mut dyn Repository<E>`.
//!
//! Every method takes `&mut self`: a session or unit of work owns one connection, and the borrow
//! checker makes sure it runs one statement at a time.
//!
//! Rules every implementation keeps (the conformance suite checks each): see
//! [`records`](crate::schema::RecordReader) for the generic ones; lists are ordered by
//! `(created_at, id)`.

mod ledger;
mod records;
mod repository;
mod session;
mod stock;

pub use ledger::{StockMovementReader, StockMovementRepository};
pub use records::{RecordReader, RecordWriter};
pub use repository::{ReadRepository, Repository};
#[cfg(feature = "mocks")]
pub use session::MockStore;
pub use session::{
    native_read_session, native_unit_of_work, Backend, ReadSession, Readers, Repositories,
    Savepoint, Savepoints, Store, UnitOfWork, UnknownBackend,
};
pub use stock::{
    check_move, check_stocks, key_taken_meanwhile, move_stock_in_own_unit_of_work,
    move_stock_with_repositories, StockMoved,
};

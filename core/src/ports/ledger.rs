//! The stock ledger's ports: its reads and its append, which every adapter implements
//! natively (the ledger is append-only and outlives the products it names).

use async_trait::async_trait;

use crate::entities::{NewStockMovement, StockMovement};
use crate::error::Result;
use crate::ids::{ProductId, StockMovementId};
use crate::query::Page;

/// Reads of the stock ledger.
#[async_trait]
pub trait StockMovementReader: Send {
    /// The movement with this id (movements are never deleted, so every applied transfer's
    /// row is found).
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>>;

    /// The movement recorded under this idempotency key.
    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>>;

    /// Movements from or to `product`, in `(created_at, id)` order.
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>>;

    /// How many movements the ledger holds.
    async fn count(&mut self) -> Result<u64>;
}

/// Appends to the stock ledger inside a unit of work.
#[async_trait]
pub trait StockMovementRepository: StockMovementReader {
    /// Appends a row. [`Error::Conflict`](crate::Error::Conflict) on
    /// [`Constraint::IDEMPOTENCY_KEY`](crate::Constraint::IDEMPOTENCY_KEY) when its key is taken.
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement>;
}

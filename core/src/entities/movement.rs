use crate::ids::{ProductId, StockMovementId};
use crate::time::Timestamp;
use crate::validate::{IdempotencyKey, Quantity};

/// A ledger row: one applied transfer of stock. The ledger is append-only: rows are never
/// updated or deleted, and they keep their product ids even after the products are purged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StockMovement {
    /// The movement's id, a UUID v7 chosen when the transfer was applied.
    pub id: StockMovementId,
    /// The product the stock was taken from.
    pub source_id: ProductId,
    /// The product the stock was given to.
    pub target_id: ProductId,
    /// How many units moved: `1..=MAX_STOCK` ([`MAX_STOCK`](crate::MAX_STOCK)).
    pub quantity: i64,
    /// The transfer's idempotency key, if it had one; unique among movements
    /// ([`Constraint::IDEMPOTENCY_KEY`](crate::Constraint::IDEMPOTENCY_KEY)).
    pub idempotency_key: Option<String>,
    /// When the transfer was applied (UTC, microsecond precision).
    pub created_at: Timestamp,
}

/// The ledger row a transfer writes. Only the transfer use case makes one, so the ledger cannot
/// hold a row for stock that did not move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStockMovement {
    source_id: ProductId,
    target_id: ProductId,
    quantity: Quantity,
    idempotency_key: Option<IdempotencyKey>,
}

impl NewStockMovement {
    pub(crate) fn new(
        source_id: ProductId,
        target_id: ProductId,
        quantity: Quantity,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Self {
        Self {
            source_id,
            target_id,
            quantity,
            idempotency_key,
        }
    }
    /// The product the stock is taken from.
    pub fn source_id(&self) -> ProductId {
        self.source_id
    }
    /// The product the stock is given to.
    pub fn target_id(&self) -> ProductId {
        self.target_id
    }
    /// How many units move, in `1..=MAX_STOCK`.
    pub fn quantity(&self) -> i64 {
        self.quantity.get()
    }
    /// The quantity, as the validated type (for the stock adjustments of a move).
    pub(crate) fn validated_quantity(&self) -> Quantity {
        self.quantity
    }
    /// The transfer's idempotency key, if it has one.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_ref().map(IdempotencyKey::as_str)
    }

    /// The row this input creates: a fresh id, created at `now`.
    pub fn into_entity(self, now: Timestamp) -> StockMovement {
        StockMovement {
            id: StockMovementId::new(),
            source_id: self.source_id,
            target_id: self.target_id,
            quantity: self.quantity.get(),
            idempotency_key: self.idempotency_key.map(IdempotencyKey::into_string),
            created_at: now,
        }
    }
}

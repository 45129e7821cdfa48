use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tracing::Instrument;

use crate::entities::{NewStockMovement, Product, StockMovement};
use crate::error::{Constraint, EntityKind, Error, Result, Rule};
use crate::ids::ProductId;
use crate::ports::{Store, UnitOfWork};
use crate::validate::{IdempotencyKey, Quantity, StockDelta};

/// A request to move `quantity` units of stock from one product to another, as a caller (an HTTP
/// handler, say) hands it over: unvalidated. [`transfer_stock`] validates it before it begins a
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct TransferRequest {
    pub source_id: ProductId,
    pub target_id: ProductId,
    pub quantity: i64,
    /// A client-chosen key: a request repeated with the same key applies at most once.
    #[cfg_attr(feature = "serde", serde(default))]
    pub idempotency_key: Option<String>,
}

impl TransferRequest {
    pub fn new(source_id: ProductId, target_id: ProductId, quantity: i64) -> Self {
        Self {
            source_id,
            target_id,
            quantity,
            idempotency_key: None,
        }
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// How often, and how patiently, a transfer retries transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay before the second attempt; it doubles each time, with jitter.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// No retry at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay after failed attempt `attempt` (1-based): exponential with "full jitter", so
    /// that tasks that collided once do not collide again in lockstep.
    fn delay_after(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let random = RandomState::new().build_hasher().finish();
        cap.mul_f64((random % 1_000) as f64 / 1_000.0)
    }
}

/// A validated transfer.
#[derive(Debug)]
struct Transfer {
    source: ProductId,
    target: ProductId,
    quantity: Quantity,
    key: Option<IdempotencyKey>,
}

impl Transfer {
    fn validate(request: &TransferRequest) -> Result<Self> {
        let quantity = Quantity::parse("quantity", request.quantity)?;
        if request.source_id == request.target_id {
            return Err(Error::validation(
                "target_id",
                Rule::SameAs { other: "source_id" },
            ));
        }
        let key = request
            .idempotency_key
            .as_deref()
            .map(|k| IdempotencyKey::parse("idempotency_key", k))
            .transpose()?;
        Ok(Self {
            source: request.source_id,
            target: request.target_id,
            quantity,
            key,
        })
    }

    /// Both ids in the order every transfer locks them: by id.
    fn lock_order(&self) -> [ProductId; 2] {
        let mut ids = [self.source, self.target];
        ids.sort();
        ids
    }

    fn is_recorded_as(&self, movement: &StockMovement) -> bool {
        movement.source_id == self.source
            && movement.target_id == self.target
            && movement.quantity == self.quantity.get()
    }

    fn ledger_row(&self) -> NewStockMovement {
        NewStockMovement::new(self.source, self.target, self.quantity, self.key.clone())
    }
}

/// Moves stock between two live products and writes one ledger row, atomically.
///
/// Validates first (positive quantity, two distinct products, a well-formed key) and begins no
/// transaction for a bad request. Then, in one unit of work: returns the earlier movement if the
/// idempotency key was used already (a [`Constraint::IdempotencyKey`] conflict if that movement
/// differs), locks both rows in id order (so opposite transfers cannot deadlock), checks the
/// source's stock, moves it, records the ledger row and commits. Transient failures are retried
/// up to `policy.max_attempts` times with jittered exponential backoff, then returned as they are.
///
/// ```
/// # async fn demo(store: &dyn stockroom_core::Store, a: stockroom_core::ProductId, b: stockroom_core::ProductId) -> stockroom_core::Result<()> {
/// use stockroom_core::{transfer_stock, RetryPolicy, TransferRequest};
/// let request = TransferRequest::new(a, b, 5).with_idempotency_key("order-1234");
/// let movement = transfer_stock(store, &request, &RetryPolicy::default()).await?;
/// assert_eq!(movement.quantity, 5);
/// # Ok(()) }
/// ```
pub async fn transfer_stock(
    store: &dyn Store,
    request: &TransferRequest,
    policy: &RetryPolicy,
) -> Result<StockMovement> {
    let span = tracing::info_span!(
        "stockroom.transfer",
        source = %request.source_id,
        target = %request.target_id,
        quantity = request.quantity,
        idempotent = request.idempotency_key.is_some(),
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    async move {
        let result = retry(store, request, policy).await;
        let outcome = match &result {
            Ok(_) => "applied",
            Err(Error::Validation { .. }) => "invalid",
            Err(Error::InsufficientStock { .. }) => "insufficient_stock",
            Err(Error::NotFound { .. }) => "not_found",
            Err(e) if e.is_transient() => "gave_up",
            Err(_) => "failed",
        };
        tracing::Span::current().record("outcome", outcome);
        result
    }
    .instrument(span)
    .await
}

async fn retry(
    store: &dyn Store,
    request: &TransferRequest,
    policy: &RetryPolicy,
) -> Result<StockMovement> {
    let transfer = Transfer::validate(request)?;
    let mut attempt = 1;
    let mut key_race_seen = false;
    loop {
        tracing::Span::current().record("attempts", attempt);
        let error = match attempt_once(store, &transfer).await {
            Ok(movement) => return Ok(movement),
            Err(error) => error,
        };
        // A concurrent request with the same key committed first: the next attempt finds its
        // ledger row and returns it. Once is enough; a second conflict is real.
        let lost_key_race = transfer.key.is_some()
            && !key_race_seen
            && matches!(
                error,
                Error::Conflict {
                    constraint: Constraint::IdempotencyKey
                }
            );
        key_race_seen |= lost_key_race;
        if !(error.is_transient() || lost_key_race) || attempt >= policy.max_attempts.max(1) {
            return Err(error);
        }
        tracing::debug!(attempt, %error, "transfer attempt failed, retrying");
        tokio::time::sleep(policy.delay_after(attempt)).await;
        attempt += 1;
    }
}

async fn attempt_once(store: &dyn Store, transfer: &Transfer) -> Result<StockMovement> {
    let mut uow = store.begin().await?;
    match apply(uow.as_mut(), transfer).await {
        Ok(Applied::New(movement)) => {
            uow.commit().await?;
            Ok(movement)
        }
        Ok(Applied::Earlier(movement)) => {
            uow.rollback().await?;
            Ok(movement)
        }
        Err(error) => {
            // The error is what the caller needs; a failed rollback only means the connection
            // is gone, and the transaction with it.
            if let Err(rollback_error) = uow.rollback().await {
                tracing::debug!(%rollback_error, "rollback after a failed transfer failed");
            }
            Err(error)
        }
    }
}

enum Applied {
    New(StockMovement),
    Earlier(StockMovement),
}

async fn apply(uow: &mut dyn UnitOfWork, transfer: &Transfer) -> Result<Applied> {
    if let Some(key) = &transfer.key {
        if let Some(earlier) = uow.movements().by_idempotency_key(key.as_str()).await? {
            return if transfer.is_recorded_as(&earlier) {
                Ok(Applied::Earlier(earlier))
            } else {
                Err(Error::Conflict {
                    constraint: Constraint::IdempotencyKey,
                })
            };
        }
    }
    let locked = uow.products().lock(&transfer.lock_order()).await?;
    let source = find(&locked, transfer.source)?;
    find(&locked, transfer.target)?;
    if source.stock < transfer.quantity.get() {
        return Err(Error::InsufficientStock {
            product: transfer.source,
            available: source.stock,
            requested: transfer.quantity.get(),
        });
    }
    let products = uow.products();
    products
        .adjust_stock(transfer.source, StockDelta::remove(transfer.quantity))
        .await?;
    products
        .adjust_stock(transfer.target, StockDelta::add(transfer.quantity))
        .await?;
    let movement = uow.movements().record(transfer.ledger_row()).await?;
    Ok(Applied::New(movement))
}

fn find(locked: &[Product], id: ProductId) -> Result<&Product> {
    locked
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| Error::not_found(EntityKind::Product, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            assert!(policy.delay_after(attempt) <= policy.max_delay);
        }
    }

    #[test]
    fn validation_names_the_field() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let field = |r: &TransferRequest| match Transfer::validate(r) {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&TransferRequest::new(a, b, 0)), "quantity");
        assert_eq!(field(&TransferRequest::new(a, a, 1)), "target_id");
        assert_eq!(
            field(&TransferRequest::new(a, b, 1).with_idempotency_key("")),
            "idempotency_key"
        );
    }
}

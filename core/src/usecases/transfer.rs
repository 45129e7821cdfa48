use async_trait::async_trait;
use tracing::Instrument;

use crate::entities::{NewStockMovement, StockMovement};
use crate::error::{Constraint, Error, Result, Rule};
use crate::ids::ProductId;
use crate::ports::{StockMoved, Store, UnitOfWork};
use crate::usecases::retry::{Commits, Retries, RetryPolicy};
use crate::validate::{IdempotencyKey, Quantity};

/// A request to move `quantity` units of stock from one product to another, as a caller (an HTTP
/// handler, say) hands it over: unvalidated. [`transfer_stock`] validates it before it begins a
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct TransferRequest {
    /// The product the stock is taken from; it must be live ([`Error::NotFound`] otherwise).
    pub source_id: ProductId,
    /// The product the stock goes to; it must be live and differ from `source_id`
    /// ([`Error::Validation`] on `target_id`, [`Rule::SameAs`], otherwise).
    pub target_id: ProductId,
    /// How many units move: `1..=MAX_STOCK` ([`Error::Validation`] on `quantity` otherwise).
    /// More than the source holds is [`Error::InsufficientStock`].
    pub quantity: i64,
    /// A client-chosen key: a request repeated with the same key applies at most once. 1 to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`](crate::MAX_IDEMPOTENCY_KEY_LEN) visible ASCII characters. A
    /// key already used for a different transfer is [`Error::Conflict`] on
    /// [`Constraint::IDEMPOTENCY_KEY`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub idempotency_key: Option<String>,
}

impl TransferRequest {
    /// A request to move `quantity` units from `source_id` to `target_id`, without an
    /// idempotency key. Nothing is checked yet: the transfer validates it.
    pub fn new(source_id: ProductId, target_id: ProductId, quantity: i64) -> Self {
        Self {
            source_id,
            target_id,
            quantity,
            idempotency_key: None,
        }
    }

    /// The request, with an idempotency key: retried with the same key (after a timeout, say), it
    /// applies at most once, and a replay answers the first transfer's ledger row with
    /// [`Transferred::replayed`] set.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What a transfer did: the ledger row, and whether the request was a replay (its idempotency key
/// named a transfer recorded earlier, which is returned and nothing moved now).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Transferred {
    /// The ledger row of the transfer.
    pub movement: StockMovement,
    /// True when an earlier request with the same idempotency key had moved the stock.
    pub replayed: bool,
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

    fn is_recorded_as(&self, movement: &StockMovement) -> bool {
        movement.source_id == self.source
            && movement.target_id == self.target
            && movement.quantity == self.quantity.get()
    }

    fn ledger_row(&self) -> NewStockMovement {
        NewStockMovement::new(self.source, self.target, self.quantity, self.key.clone())
    }

    /// The use case's answer to what the stock move did: an earlier movement under the same key
    /// is the answer only if it moved the same stock.
    fn resolve(&self, moved: StockMoved) -> Result<Applied> {
        match moved {
            StockMoved::Applied(movement) => Ok(Applied::New(movement)),
            StockMoved::AlreadyRecorded(earlier) if self.is_recorded_as(&earlier) => {
                Ok(Applied::Earlier(earlier))
            }
            StockMoved::AlreadyRecorded(_) => Err(Error::Conflict {
                constraint: Constraint::IDEMPOTENCY_KEY,
            }),
        }
    }
}

/// Moves stock between two live products and writes one ledger row, atomically, in a unit of
/// work of its own (retried on transient failures).
///
/// Validates first (positive quantity, two distinct products, a well-formed key) and begins no
/// transaction for a bad request. Then runs the stock move ([`Store::move_stock`]: its rules
/// are those of [`transfer_in`]) in a transaction of its own: transient failures (a deadlock, a
/// busy database, a concurrent request that took the same idempotency key first) are retried up
/// to `policy.max_attempts` times with jittered exponential backoff, then returned as they are.
/// A commit whose outcome is unknown ([`Error::AmbiguousCommit`]) is retried only with an
/// idempotency key (which then finds the first attempt's movement if it was stored, answered
/// as a replay); without one it is returned, since a retry could move the stock twice.
///
/// ```
/// # async fn demo(store: &dyn stockroom_core::Store, a: stockroom_core::ProductId, b: stockroom_core::ProductId) -> stockroom_core::Result<()> {
/// use stockroom_core::{transfer_stock, RetryPolicy, TransferRequest};
/// let request = TransferRequest::new(a, b, 5).with_idempotency_key("order-1234");
/// let done = transfer_stock(store, &request, &RetryPolicy::default()).await?;
/// assert_eq!(done.movement.quantity, 5);
/// // The same request again (a client retrying after a timeout) moves nothing more.
/// let again = transfer_stock(store, &request, &RetryPolicy::default()).await?;
/// assert!(again.replayed && again.movement == done.movement);
/// # Ok(()) }
/// ```
pub async fn transfer_stock(
    store: &dyn Store,
    request: &TransferRequest,
    policy: &RetryPolicy,
) -> Result<Transferred> {
    let span = transfer_span(request, false);
    async move {
        let result = match Transfer::validate(request) {
            Ok(transfer) => {
                let moved = move_with_retries(store, &transfer, policy).await;
                let ended = match &moved {
                    Ok(_) => "committed",
                    Err(e) if e.is_transient() => "gave_up",
                    Err(_) => "failed",
                };
                crate::metrics::retry_outcome("transfer", ended);
                moved
            }
            Err(invalid) => Err(invalid),
        };
        record_outcome(&result);
        result.map(Applied::into_transferred)
    }
    .instrument(span)
    .await
}

/// Moves stock between two live products and writes one ledger row, inside the caller's unit of
/// work: it commits or rolls back with the caller's other writes, and is not retried here (wrap
/// the whole unit of work in [`run_in_unit_of_work`](crate::run_in_unit_of_work) /
/// [`StoreExt::run`](crate::StoreExt::run) for that). Usually called as [`UnitOfWorkExt::transfer`].
///
/// The rules are those of [`transfer_stock`]: a bad request is a validation error; with an
/// idempotency key already recorded, the earlier movement is returned and nothing moves (a
/// [`Constraint::IDEMPOTENCY_KEY`] conflict if it moved something else); both rows are locked in
/// id order; insufficient stock is [`Error::InsufficientStock`]; a target that would end above
/// [`MAX_STOCK`](crate::MAX_STOCK) is [`Error::Validation`] on `stock`. Nothing is written unless the
/// whole transfer is: the ledger row is recorded before the stock moves, so a concurrent request
/// that committed the same key first fails this one as [`Error::Transient`] (a retry of the
/// unit of work finds the earlier movement) with nothing written.
pub async fn transfer_in(
    uow: &mut dyn UnitOfWork,
    request: &TransferRequest,
) -> Result<Transferred> {
    let span = transfer_span(request, true);
    async move {
        let result = match Transfer::validate(request) {
            Ok(transfer) => match uow.move_stock(&transfer.ledger_row()).await {
                Ok(moved) => transfer.resolve(moved),
                Err(error) => Err(error),
            },
            Err(invalid) => Err(invalid),
        };
        record_outcome(&result);
        result.map(Applied::into_transferred)
    }
    .instrument(span)
    .await
}

/// The use cases of a unit of work as its methods, `dyn UnitOfWork` included.
#[async_trait]
pub trait UnitOfWorkExt: UnitOfWork {
    /// [`transfer_in`] this unit of work: the transfer commits or rolls back with the rest of
    /// it.
    ///
    /// ```
    /// # async fn demo(store: &dyn stockroom_core::Store, new: stockroom_core::NewProduct, from: stockroom_core::ProductId) -> stockroom_core::Result<()> {
    /// use stockroom_core::{TransferRequest, UnitOfWorkExt};
    /// // Create a product and stock it from another one: both or neither.
    /// let mut uow = store.begin().await?;
    /// let product = uow.products().create(new).await?;
    /// uow.transfer(&TransferRequest::new(from, product.id, 5)).await?;
    /// uow.commit().await?;
    /// # Ok(()) }
    /// ```
    async fn transfer(&mut self, request: &TransferRequest) -> Result<StockMovement> {
        Ok(transfer_in(self.as_dyn_mut(), request).await?.movement)
    }

    #[doc(hidden)]
    fn as_dyn_mut(&mut self) -> &mut dyn UnitOfWork;
}

impl<U: UnitOfWork> UnitOfWorkExt for U {
    fn as_dyn_mut(&mut self) -> &mut dyn UnitOfWork {
        self
    }
}

impl UnitOfWorkExt for dyn UnitOfWork + '_ {
    fn as_dyn_mut(&mut self) -> &mut dyn UnitOfWork {
        self
    }
}

fn transfer_span(request: &TransferRequest, in_unit_of_work: bool) -> tracing::Span {
    tracing::info_span!(
        "stockroom.transfer",
        source = %request.source_id,
        target = %request.target_id,
        quantity = request.quantity,
        idempotent = request.idempotency_key.is_some(),
        in_unit_of_work,
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

fn record_outcome(result: &Result<Applied>) {
    let outcome = match result {
        Ok(Applied::New(_)) => "applied",
        Ok(Applied::Earlier(_)) => "replayed",
        Err(Error::Validation { .. }) => "invalid",
        Err(Error::InsufficientStock { .. }) => "insufficient_stock",
        Err(Error::NotFound { .. }) => "not_found",
        Err(e) if e.is_transient() => "gave_up",
        Err(_) => "failed",
    };
    tracing::Span::current().record("outcome", outcome);
    crate::metrics::transfer(outcome);
}

enum Applied {
    New(StockMovement),
    Earlier(StockMovement),
}

impl Applied {
    fn into_transferred(self) -> Transferred {
        match self {
            Applied::New(movement) => Transferred {
                movement,
                replayed: false,
            },
            Applied::Earlier(movement) => Transferred {
                movement,
                replayed: true,
            },
        }
    }
}

async fn move_with_retries(
    store: &dyn Store,
    transfer: &Transfer,
    policy: &RetryPolicy,
) -> Result<Applied> {
    let movement = transfer.ledger_row();
    // With a key, a commit whose outcome is unknown is resolved by trying again: the key finds
    // the first attempt's movement if it was stored, and nothing moves twice.
    let mut retries =
        Retries::new(policy, "transfer").resolving_ambiguous_commits(transfer.key.is_some());
    let commits = Commits::default();
    let attempts = async {
        loop {
            // The stock move commits by itself: past the deadline, it may have.
            match commits.sending(store.move_stock(&movement)).await {
                Ok(moved) => return transfer.resolve(moved),
                Err(error) => retries.after(error).await?,
            }
        }
    };
    policy.within_deadline(&commits, attempts).await
}

#[cfg(test)]
mod tests {
    use super::*;

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

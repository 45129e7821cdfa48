//! The atomic stock move: the one write of the transfer use case, a port each adapter may
//! implement natively (in the fewest round trips its engine allows).
//!
//! The use case (`transfer_stock`, `transfer_in`) keeps everything else: it validates the request
//! into a [`NewStockMovement`], compares an earlier movement found under the same idempotency
//! key with the request, retries transient failures and traces. The port is
//! [`UnitOfWork::move_stock`] (inside a caller's transaction) and [`Store::move_stock`] (in a
//! transaction of its own); both have default bodies written with the repository ports
//! ([`move_stock_with_repositories`]), which is what the memory adapter uses.

use crate::entities::{NewStockMovement, Product, StockMovement};
use crate::error::{Constraint, EntityKind, Error, Result, Rule};
use crate::ids::ProductId;
use crate::ports::{RecordWriter, Repositories, StockMovementRepository, Store};
use crate::repo::Repo;
use crate::validate::{StockDelta, MAX_STOCK};

/// What a stock move did.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum StockMoved {
    /// The stock moved and this ledger row records it.
    Applied(StockMovement),
    /// The ledger already holds a movement under the move's idempotency key: nothing moved. The
    /// use case compares it with the request (the same move, or a conflict).
    AlreadyRecorded(StockMovement),
}

impl StockMoved {
    /// The ledger row.
    pub fn movement(&self) -> &StockMovement {
        match self {
            StockMoved::Applied(m) | StockMoved::AlreadyRecorded(m) => m,
        }
    }
}

/// The rules of a stock move, which every implementation keeps (the conformance suite checks
/// each), checked in this order, each failure changing nothing:
///
/// 1. With an idempotency key already in the ledger: [`StockMoved::AlreadyRecorded`] with that
///    row, and nothing moves.
/// 2. Both products are taken in id order (locked until the transaction ends, on a backend with
///    row locks), so opposite moves cannot deadlock.
/// 3. The source not live: [`Error::NotFound`] for the source; then the target likewise.
/// 4. The source holding less than the quantity: [`Error::InsufficientStock`] with the amounts.
/// 5. The target ending above [`MAX_STOCK`]: [`Error::Validation`] on `stock`
///    ([`Rule::OutOfRange`] `0..=MAX_STOCK`).
/// 6. The ledger row is written, then both stocks move (version and `updated_at` bumped).
///    A concurrent move that committed the same key after step 1 is [`Error::Transient`]
///    (retrying finds its row in step 1), with nothing written.
///
/// This body does it with the repository ports: a key lookup, a lock, the ledger insert and two
/// stock adjustments.
pub async fn move_stock_with_repositories(
    repositories: &mut dyn Repositories,
    movement: &NewStockMovement,
) -> Result<StockMoved> {
    if let Some(key) = movement.idempotency_key() {
        let ledger: &mut dyn StockMovementRepository = repositories;
        if let Some(earlier) = ledger.by_idempotency_key(key).await? {
            return Ok(StockMoved::AlreadyRecorded(earlier));
        }
    }
    let (source, target) = (movement.source_id(), movement.target_id());
    let mut ids = [source, target];
    ids.sort();
    let records: &mut dyn RecordWriter = repositories;
    let locked = Repo::<Product>::new(records).lock(&ids).await?;
    check_move(
        find(&locked, source)?,
        find(&locked, target)?,
        movement.quantity(),
    )?;
    let ledger: &mut dyn StockMovementRepository = repositories;
    let recorded = ledger
        .record(movement.clone())
        .await
        .map_err(key_taken_meanwhile)?;
    let quantity = movement.validated_quantity();
    let records: &mut dyn RecordWriter = repositories;
    let mut products = Repo::<Product>::new(records);
    products
        .adjust_stock_quietly(source, StockDelta::remove(quantity))
        .await?;
    products
        .adjust_stock_quietly(target, StockDelta::add(quantity))
        .await?;
    if records.own_events() {
        records
            .append_events(vec![crate::outbox::own::stock_moved(&recorded)])
            .await?;
    }
    Ok(StockMoved::Applied(recorded))
}

/// Steps 4 and 5 of a stock move (see [`move_stock_with_repositories`]) on the stocks the
/// source and the target hold.
#[doc(hidden)]
pub fn check_move(source: &Product, target: &Product, quantity: i64) -> Result<()> {
    check_stocks(source.id, source.stock, target.stock, quantity)
}

/// Steps 4 and 5 of a stock move on the stocks alone, for adapters that read only those.
#[doc(hidden)]
pub fn check_stocks(
    source: ProductId,
    source_stock: i64,
    target_stock: i64,
    quantity: i64,
) -> Result<()> {
    if source_stock < quantity {
        return Err(Error::InsufficientStock {
            product: source,
            available: source_stock,
            requested: quantity,
        });
    }
    if target_stock > MAX_STOCK - quantity {
        return Err(Error::validation(
            "stock",
            Rule::OutOfRange {
                min: 0,
                max: MAX_STOCK,
            },
        ));
    }
    Ok(())
}

/// The error of a move whose ledger insert found its idempotency key taken by a move that
/// committed after the lookup: transient, since a retry finds that move.
#[doc(hidden)]
pub fn key_taken_meanwhile(error: Error) -> Error {
    match error {
        Error::Conflict {
            constraint: Constraint::IDEMPOTENCY_KEY,
        } => Error::transient(
            "a concurrent transfer with the same idempotency key committed first".to_owned(),
        ),
        other => other,
    }
}

fn find(locked: &[Product], id: ProductId) -> Result<&Product> {
    locked
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| Error::not_found(EntityKind::PRODUCT, id))
}

/// [`Store::move_stock`](crate::Store::move_stock)'s default:
/// [`UnitOfWork::move_stock`](crate::UnitOfWork::move_stock) in a unit of work of its own,
/// committed when it applied or found the move, rolled back otherwise.
pub async fn move_stock_in_own_unit_of_work<S: Store + ?Sized>(
    store: &S,
    movement: &NewStockMovement,
) -> Result<StockMoved> {
    let mut uow = store.begin().await?;
    match uow.move_stock(movement).await {
        Ok(moved) => {
            uow.commit().await?;
            Ok(moved)
        }
        Err(error) => {
            // The error is what the caller needs; a failed rollback only means the connection
            // is gone, and the transaction with it.
            if let Err(rollback_error) = uow.rollback().await {
                tracing::debug!(%rollback_error, "rollback after a failed stock move failed");
            }
            Err(error)
        }
    }
}

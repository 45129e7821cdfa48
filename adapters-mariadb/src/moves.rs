//! The stock move of a unit of work (`UnitOfWork::move_stock`, what a transfer runs) in the
//! fewest statements MariaDB allows: the core's move (key lookup, both rows locked in id order,
//! the checks, the ledger row, the event) with both stocks changed by one `UPDATE`.
//!
//! The core's default body changes each stock with an increment, which on MariaDB (no
//! `UPDATE … RETURNING`) is an `UPDATE` and a read of the row back, for a row the move throws
//! away: four statements where one does. The rows are locked and checked before the `UPDATE`
//! (stock available, target within its bound), so it needs no guard of its own. Measured in
//! `benches/throughput.rs`: see the crate's README.

use sqlx::mysql::MySql;
use stockroom_core::adapter::{check_stocks, key_taken_meanwhile};
use stockroom_core::schema::{Record, RecordWriter};
use stockroom_core::{
    Entity, EntityKind, Error, NewStockMovement, Product, ProductId, Result, StockMoved,
    StockMovementReader, StockMovementRepository,
};

use crate::codec::utc;
use crate::session::Session;

/// Both stocks of a move in one statement: the source's by `-quantity`, the target's by
/// `+quantity`, each row's `updated_at` and `version` as an increment sets them.
const MOVE_BOTH: &str =
    "UPDATE `products` SET `stock` = `stock` + CASE WHEN `id` = ? THEN ? ELSE ? END, \
     `updated_at` = ?, `version` = `version` + 1 WHERE `id` IN (?, ?) AND `deleted_at` IS NULL";

/// Moves `movement`'s quantity in the session's transaction; what
/// [`stockroom_core::adapter::move_stock_with_repositories`] does, in two statements fewer.
pub(crate) async fn move_stock(
    session: &mut Session,
    movement: &NewStockMovement,
) -> Result<StockMoved> {
    if let Some(key) = movement.idempotency_key() {
        if let Some(earlier) = StockMovementReader::by_idempotency_key(session, key).await? {
            return Ok(StockMoved::AlreadyRecorded(earlier));
        }
    }
    let (source, target) = (movement.source_id(), movement.target_id());
    let mut ids = [source.as_uuid(), target.as_uuid()];
    ids.sort();
    let locked = RecordWriter::lock(session, Product::schema(), &ids).await?;
    let quantity = movement.quantity();
    check_stocks(
        source,
        stock_of(&locked, source)?,
        stock_of(&locked, target)?,
        quantity,
    )?;
    let recorded = StockMovementRepository::record(session, movement.clone())
        .await
        .map_err(key_taken_meanwhile)?;
    let query = sqlx::query::<MySql>(MOVE_BOTH)
        .bind(source.as_uuid())
        .bind(-quantity)
        .bind(quantity)
        .bind(utc(stockroom_core::time::now()))
        .bind(source.as_uuid())
        .bind(target.as_uuid());
    let done = session.execute(MOVE_BOTH, query).await?;
    if done.rows_affected() != 2 {
        // Both rows are locked live by this transaction: nothing else can have changed them.
        return Err(Error::backend_message(format!(
            "the stock move changed {} rows of 2 locked ones",
            done.rows_affected()
        )));
    }
    if session.own_events() {
        let event = stockroom_core::outbox::own::stock_moved(&recorded);
        crate::outbox::append_events(session, vec![event]).await?;
    }
    Ok(StockMoved::Applied(recorded))
}

/// The stock of the locked row of `id`; a row not locked (missing or deleted) is not found.
fn stock_of(locked: &[Record], id: ProductId) -> Result<i64> {
    let stock = Product::schema().index_of("stock");
    locked
        .iter()
        .find(|record| record.id == id.as_uuid())
        .and_then(|record| record.values[stock].as_int())
        .ok_or_else(|| Error::not_found(EntityKind::PRODUCT, id))
}

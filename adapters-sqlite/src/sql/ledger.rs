//! The ledger: the `stock_movements` table, its row mapping, queries and repository port, and
//! the stock move (the key lookup, the checks, the ledger row and both stocks' update, and,
//! when the store writes Stockroom's own events, the move's `stockroom.stock.moved` event).

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::Row;
use stockroom_core::adapter::{check_stocks, key_taken_meanwhile};
use stockroom_core::outbox::own;
use stockroom_core::time;
use stockroom_core::{
    EntityKind, Error, NewStockMovement, Page, ProductId, Result, StockMoved, StockMovement,
    StockMovementId, StockMovementReader, StockMovementRepository,
};

use super::codec::{blob, micros, opt_text, RowReader};
use super::generic::{atomically, commit, execute, query, query_first, rollback, scalar};
use super::outbox;
use crate::conn::{Conn, Cost, Db};
use crate::error::map;
use crate::moves::{not_run, Batch};

/// Calls `$then!` with the ledger's columns, in the order [`read_movement`] reads them: the one
/// list the column list and the statements' text are made of, at compile time (so that the
/// statements of a stock move are built once).
macro_rules! ledger_columns {
    ($then:ident) => {
        $then!(
            "id",
            "source_id",
            "target_id",
            "quantity",
            "idempotency_key",
            "created_at"
        )
    };
}

/// The columns as a list.
#[cfg(test)]
macro_rules! column_list {
    ($($column:literal),+) => { &[$($column),+] };
}

/// The columns as SQL text: `a, b, …`.
macro_rules! column_text {
    ($first:literal $(, $column:literal)*) => { concat!($first $(, ", ", $column)*) };
}

/// One parameter per column: `?, ?, …`.
macro_rules! column_params {
    (@one $column:literal) => { ", ?" };
    ($first:literal $(, $column:literal)*) => { concat!("?" $(, column_params!(@one $column))*) };
}

/// The ledger's table, named once for the statements' text.
macro_rules! ledger_table {
    () => {
        "stock_movements"
    };
}

/// The ledger's table (for the schema test).
#[cfg(test)]
pub(crate) const NAME: &str = ledger_table!();

/// The ledger's columns, in the order [`read_movement`] reads them (for the schema test).
#[cfg(test)]
pub(crate) const COLUMNS: &[&str] = ledger_columns!(column_list);

/// The ledger rows, for a condition to follow.
macro_rules! select_movements {
    () => {
        concat!(
            "SELECT ",
            ledger_columns!(column_text),
            " FROM ",
            ledger_table!()
        )
    };
}

fn read_movement(row: &Row<'_>) -> rusqlite::Result<StockMovement> {
    let mut row = RowReader::new(row, 0);
    Ok(StockMovement {
        id: StockMovementId::from_uuid(row.uuid()?),
        source_id: ProductId::from_uuid(row.uuid()?),
        target_id: ProductId::from_uuid(row.uuid()?),
        quantity: row.get()?,
        idempotency_key: row.get()?,
        created_at: row.timestamp()?,
    })
}

fn movement(conn: &Db<'_>, id: StockMovementId) -> Result<Option<StockMovement>> {
    let sql = concat!(select_movements!(), " WHERE id = ?");
    query_first(conn, sql, [id.as_uuid().as_bytes()], read_movement).map_err(map)
}

fn movement_by_key(conn: &Db<'_>, key: &str) -> Result<Option<StockMovement>> {
    let sql = concat!(select_movements!(), " WHERE idempotency_key = ?");
    query_first(conn, sql, [key], read_movement).map_err(map)
}

fn movements_for_product(
    conn: &Db<'_>,
    product: ProductId,
    page: Page,
) -> Result<Vec<StockMovement>> {
    let sql = concat!(
        select_movements!(),
        " WHERE source_id = ?1 OR target_id = ?1 ORDER BY created_at, id LIMIT ?2 OFFSET ?3"
    );
    let params = [
        blob(product),
        Value::Integer(i64::from(page.limit().get())),
        Value::Integer(i64::try_from(page.offset()).unwrap_or(i64::MAX)),
    ];
    query(conn, sql, &params, read_movement).map_err(map)
}

fn movement_count(conn: &Db<'_>) -> Result<u64> {
    scalar::<i64>(conn, concat!("SELECT COUNT(*) FROM ", ledger_table!()), [])
        .map(|n| n as u64)
        .map_err(map)
}

fn record_movement(conn: &Db<'_>, new: NewStockMovement) -> Result<StockMovement> {
    let m = new.into_entity(time::now());
    insert_movement(conn, &m)?;
    Ok(m)
}

fn insert_movement(conn: &Db<'_>, m: &StockMovement) -> Result<()> {
    let sql = concat!(
        "INSERT INTO ",
        ledger_table!(),
        " (",
        ledger_columns!(column_text),
        ") VALUES (",
        ledger_columns!(column_params),
        ")"
    );
    execute(
        conn,
        sql,
        &[
            blob(m.id),
            blob(m.source_id),
            blob(m.target_id),
            Value::Integer(m.quantity),
            opt_text(m.idempotency_key.as_deref()),
            micros(m.created_at),
        ],
    )
    .map_err(map)?;
    Ok(())
}

// ---- The stock move ------------------------------------------------------------------------

/// The stock move inside the connection's open transaction, with the rules of
/// `stockroom_core::move_stock_with_repositories`, in their order. The unit of work's write lock
/// covers both products from the read to the update (see the [module docs](super)), so reading
/// them is all "taking them in id order" needs. Its writes are all-or-nothing within the
/// transaction (a savepoint), its event (with `own_events`) included.
pub(crate) fn move_stock(
    conn: &Db<'_>,
    movement: &NewStockMovement,
    own_events: bool,
) -> Result<StockMoved> {
    let checked = check_movement(conn, movement)?;
    match checked {
        Checked::Recorded(earlier) => Ok(StockMoved::AlreadyRecorded(earlier)),
        Checked::Allowed(row) => atomically(conn, || apply_movement(conn, &row, own_events)),
    }
}

/// The stock move as a transaction of its own, already begun: [`move_stock`]'s statements, then
/// `COMMIT`, or `ROLLBACK` when the move is refused, or when its caller gave up on it meanwhile
/// (the transaction is its all-or-nothing unit, so no savepoint). A `COMMIT` that fails leaves
/// the transaction to the connection's release, which rolls it back.
pub(crate) fn move_stock_and_commit(
    conn: &Db<'_>,
    movement: &NewStockMovement,
    own_events: bool,
) -> Result<StockMoved> {
    let moved = check_movement(conn, movement)
        .and_then(|checked| match checked {
            Checked::Recorded(earlier) => Ok(StockMoved::AlreadyRecorded(earlier)),
            Checked::Allowed(row) => apply_movement(conn, &row, own_events),
        })
        .and_then(|moved| conn.check_still_awaited().map(|()| moved));
    match moved {
        Ok(moved) => commit(conn).map(|()| moved),
        Err(refused) => {
            if let Err(error) = rollback(conn) {
                tracing::debug!(%error, "rollback after a refused stock move failed");
            }
            Err(refused)
        }
    }
}

/// The moves of `batch` in the connection's transaction, already begun (see `moves.rs`): each
/// as [`move_stock`] runs it in a unit of work (a refused one changes nothing, in a savepoint of
/// its own), then one `COMMIT`. Returns the first move's answer (the caller's own) and sends
/// each other move its answer once the transaction has ended: when it did not commit, none of
/// its moves was applied, and each says so.
pub(crate) fn move_batch_and_commit(
    conn: &Db<'_>,
    batch: Batch<NewStockMovement>,
    own_events: bool,
) -> Result<StockMoved> {
    let mut answers = Vec::with_capacity(batch.tickets().len());
    for ticket in batch.tickets() {
        if conn.is_autocommit() {
            // SQLite rolled the transaction back (a full disk, an interrupt): nothing more runs.
            break;
        }
        answers.push(move_stock(conn, &ticket.movement, own_events));
    }
    let ended = if conn.is_autocommit() {
        Err(not_run("SQLite rolled back the transaction it was in"))
    } else {
        conn.check_still_awaited()
            .map_err(|_| not_run("the caller that ran its transaction gave up on it"))
            .and_then(|()| commit(conn))
    };
    if let Err(failed) = ended {
        if !conn.is_autocommit() {
            if let Err(error) = rollback(conn) {
                tracing::debug!(%error, "rollback of stock moves run together failed");
            }
        }
        let why = format!("the transaction it was in did not commit ({failed})");
        answers = batch.tickets().iter().map(|_| Err(not_run(&why))).collect();
        answers[0] = Err(failed);
    }
    let mut answers = answers.into_iter();
    let own = answers
        .next()
        .unwrap_or_else(|| Err(not_run("it did not run")));
    for (ticket, answer) in batch.tickets().iter().skip(1).zip(answers) {
        ticket.answer(answer);
    }
    if batch.tickets().len() > 1 {
        tracing::debug!(
            moves = batch.tickets().len(),
            "sqlite: stock moves committed together"
        );
    }
    own
}

/// What the checks of a stock move found.
enum Checked {
    /// The idempotency key is in the ledger already: nothing moves.
    Recorded(StockMovement),
    /// Every rule holds: this ledger row is to be written.
    Allowed(StockMovement),
}

/// Steps 1 to 5 of a stock move: the key lookup, both products in id order, the checks.
fn check_movement(conn: &Db<'_>, movement: &NewStockMovement) -> Result<Checked> {
    if let Some(key) = movement.idempotency_key() {
        if let Some(earlier) = movement_by_key(conn, key)? {
            return Ok(Checked::Recorded(earlier));
        }
    }
    let (source, target) = (movement.source_id(), movement.target_id());
    let stocks = live_stocks(conn, source, target)?;
    let stock_of = |id: ProductId| {
        stocks
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, stock)| *stock)
            .ok_or_else(|| Error::not_found(EntityKind::PRODUCT, id))
    };
    check_stocks(
        source,
        stock_of(source)?,
        stock_of(target)?,
        movement.quantity(),
    )?;
    Ok(Checked::Allowed(movement.clone().into_entity(time::now())))
}

/// The stock of each live product of the two, in id order: one statement.
fn live_stocks(conn: &Db<'_>, a: ProductId, b: ProductId) -> Result<Vec<(ProductId, i64)>> {
    query(
        conn,
        "SELECT id, stock FROM products WHERE id IN (?, ?) AND deleted_at IS NULL ORDER BY id",
        &[blob(a), blob(b)],
        |r| {
            let mut r = RowReader::new(r, 0);
            Ok((ProductId::from_uuid(r.uuid()?), r.get()?))
        },
    )
    .map_err(map)
}

/// Step 6: the ledger row, then both stocks in one statement (version and `updated_at`
/// bumped, at the ledger row's time), then, with `own_events`, the move's event.
fn apply_movement(conn: &Db<'_>, row: &StockMovement, own_events: bool) -> Result<StockMoved> {
    insert_movement(conn, row).map_err(key_taken_meanwhile)?;
    let moved = execute(
        conn,
        "UPDATE products SET stock = stock + CASE WHEN id = ?1 THEN -?3 ELSE ?3 END, \
         updated_at = ?4, version = version + 1 \
         WHERE id IN (?1, ?2) AND deleted_at IS NULL",
        &[
            blob(row.source_id),
            blob(row.target_id),
            Value::Integer(row.quantity),
            micros(row.created_at),
        ],
    )
    .map_err(map)?;
    if moved != 2 {
        // Both rows were read live under the same write lock: this is not a refusal.
        return Err(Error::backend_message(format!(
            "sqlite: a stock move updated {moved} products instead of 2"
        )));
    }
    if own_events {
        outbox::append(conn, &[own::stock_moved(row)], time::now())?;
    }
    Ok(StockMoved::Applied(row.clone()))
}

#[async_trait]
impl StockMovementReader for Conn {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        self.read(Cost::Short, move |c| movement(c, id)).await
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        let key = key.to_owned();
        self.read(Cost::Short, move |c| movement_by_key(c, &key))
            .await
    }

    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        self.read(Cost::Long, move |c| movements_for_product(c, product, page))
            .await
    }

    async fn count(&mut self) -> Result<u64> {
        self.read(Cost::Long, movement_count).await
    }
}

#[async_trait]
impl StockMovementRepository for Conn {
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement> {
        self.run(Cost::Short, move |c| record_movement(c, movement))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ledger is the one table not made from a declaration: its column list here is the
    /// live table's, in the same order, so a migration that adds, drops or renames a column
    /// without the row mapping following fails here.
    #[test]
    fn the_ledgers_columns_are_the_live_tables() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let catalog = stockroom_core::schema::Catalog::new(&[]).unwrap();
        crate::schema::migrate(&mut conn, &catalog).unwrap();
        let live: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .unwrap()
            .query_map([NAME], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(live, COLUMNS);
    }
}

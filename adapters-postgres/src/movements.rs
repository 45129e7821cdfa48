//! The stock ledger: its reads, the append of a ledger row, and the stock move that writes one.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::FromRow;
use stockroom_core::adapter::{check_stocks, key_taken_meanwhile};
use stockroom_core::outbox::NewEvent;
use stockroom_core::time::now;
use stockroom_core::{
    Constraint, EntityKind, Error, NewStockMovement, Page, ProductId, Result, StockMoved,
    StockMovement, StockMovementId, StockMovementReader, StockMovementRepository, MAX_STOCK,
};
use uuid::Uuid;

use crate::codec::{column, count_u64, decode, limit_i64, offset_i64, StockMovementRow};

/// A ledger row's id already taken.
const LEDGER_ROW_TAKEN: Constraint = Constraint::primary_key(EntityKind::STOCK_MOVEMENT);
use crate::error::map_error;
use crate::session::{PgQuery, Session};

/// The columns every read of the ledger selects (see [`StockMovementRow`]).
macro_rules! columns {
    () => {
        "id, source_id, target_id, quantity, idempotency_key, created_at"
    };
}

/// The ledger's table, for the schema test.
#[cfg(all(test, feature = "testing"))]
pub(crate) const TABLE: &str = "stock_movements";
/// The ledger's columns, for the schema test.
#[cfg(all(test, feature = "testing"))]
pub(crate) const COLUMNS: &str = columns!();

const MOVEMENT_GET: &str = concat!("SELECT ", columns!(), " FROM stock_movements WHERE id = $1");
const MOVEMENT_BY_KEY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM stock_movements WHERE idempotency_key = $1"
);
const MOVEMENTS_FOR_PRODUCT: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM stock_movements WHERE source_id = $1 OR target_id = $1 ",
    "ORDER BY created_at, id LIMIT $2 OFFSET $3"
);
const MOVEMENTS_COUNT: &str = "SELECT count(*) FROM stock_movements";
const RECORD: &str = concat!(
    "INSERT INTO stock_movements (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
);

/// A stock move (the rules of `stockroom_core::move_stock_with_repositories`, in their order) in
/// one statement, so one round trip: in autocommit it is a transaction of its own, with no
/// `BEGIN` or `COMMIT` to send.
///
/// Binds: the ledger row to write (`$1` id, `$2` source, `$3` target, `$4` quantity, `$5`
/// idempotency key or NULL, `$6` created at, also the products' new `updated_at`), `$7`
/// [`MAX_STOCK`], and `$8` a `lock_timeout` to set for this transaction only, or NULL to leave
/// the session's.
///
/// - `prior`: a ledger row with the move's own id (an earlier attempt of this very statement,
///   sent again after its connection was lost: it committed) or with its idempotency key (step
///   1: nothing moves). Either way nothing is locked or written.
/// - `locked`: both live products, locked in id order (`ORDER BY id` under `FOR UPDATE`: the
///   LockRows node locks rows in the order the sort hands them over), so opposite moves wait
///   for each other instead of deadlocking. A row another transaction holds is waited for (up
///   to `lock_timeout`: 55P03, `Transient`), then read again at its latest committed version
///   (READ COMMITTED): a product deleted meanwhile drops out, a stock changed meanwhile is seen
///   changed. The lock timeout is set first, since the statement's only waits come after it.
/// - `stocks`: their stocks, NULL for a product that is not live; the aggregate reads all of
///   `locked`, so both rows are locked before anything below runs.
/// - `recorded`: the ledger row, inserted only if both products are live, the source holds the
///   quantity and the target stays within [`MAX_STOCK`]. A key that a concurrent move committed
///   after this statement's snapshot makes it insert nothing (`ON CONFLICT … DO NOTHING`, which
///   does not abort a caller's transaction either).
/// - `moved`: both stock updates (version and `updated_at` bumped), only if the ledger row went
///   in. Both rows are locked by this statement, so neither can be missed. Each new stock is
///   the one `locked` read, plus or minus the quantity, not `stock ± $4`: an UPDATE computes
///   the new row from the version its snapshot sees, and checks `stock >= 0` on that before it
///   finds the row updated meanwhile and recomputes from the latest version; a stock that a
///   concurrent move lowered would fail the check spuriously. The value `locked` read is the
///   latest, and stays so: the statement holds the row's lock until its transaction ends.
///
/// The row it returns ([`MoveOutcome`]) tells which rule decided: the prior ledger row, the
/// stocks, whether the ledger row went in, how many stocks moved.
pub(crate) const MOVE_STOCK: &str = concat!(move_stock_ctes!(), move_stock_outcome!());

/// [`MOVE_STOCK`] writing Stockroom's own event of the move (`own::stock_moved`) to the outbox
/// too, when the ledger row went in (`announced`, a data-modifying CTE, which runs whether or
/// not it is read): with the move, in its transaction, under both products' row locks (so no
/// lane lock, see `crate::outbox`). A statement that finds its ledger row already there (an
/// earlier attempt of it committed) writes no event: that attempt wrote it. Binds, beside
/// [`MOVE_STOCK`]'s: the event's `$9` id, `$10` subject, `$11` aggregate, `$12` lane, `$13`
/// payload; it is written at `$6`, the ledger row's time.
pub(crate) const MOVE_STOCK_ANNOUNCED: &str = concat!(
    move_stock_ctes!(),
    "), announced AS (",
    "INSERT INTO stockroom_outbox (",
    crate::outbox::insert_columns!(),
    ") SELECT $9::uuid, $10::text, $11::text, $12::int2, $13::bytea, $6 ",
    "WHERE EXISTS (SELECT FROM recorded)",
    move_stock_outcome!()
);

/// The common table expressions of [`MOVE_STOCK`], up to the last one left open.
macro_rules! move_stock_ctes {
    () => {
        concat!(
            "WITH prior AS (",
            "SELECT ",
            columns!(),
            " FROM stock_movements WHERE id = $1 OR idempotency_key = $5",
            "), locked AS MATERIALIZED (",
            "SELECT id, stock FROM products ",
            "WHERE id IN ($2, $3) AND deleted_at IS NULL AND NOT EXISTS (SELECT FROM prior) ",
            "AND ($8::text IS NULL OR (SELECT set_config('lock_timeout', $8, true)) IS NOT NULL) ",
            "ORDER BY id FOR UPDATE",
            "), stocks AS (",
            "SELECT max(stock) FILTER (WHERE id = $2) AS source_stock, ",
            "max(stock) FILTER (WHERE id = $3) AS target_stock FROM locked",
            "), recorded AS (",
            "INSERT INTO stock_movements (",
            columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6 FROM stocks ",
            "WHERE source_stock >= $4 AND target_stock <= $7 - $4 ",
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            "), moved AS (",
            "UPDATE products p ",
            "SET stock = CASE p.id WHEN $2 THEN s.source_stock - $4 ELSE s.target_stock + $4 END, ",
            "updated_at = $6, version = p.version + 1 FROM stocks s ",
            "WHERE p.id IN ($2, $3) AND EXISTS (SELECT FROM recorded) RETURNING p.id"
        )
    };
}
use move_stock_ctes;

/// The end of [`MOVE_STOCK`]: the last common table expression closed, and the row it returns.
macro_rules! move_stock_outcome {
    () => {
        concat!(
            ") SELECT p.id, p.source_id, p.target_id, p.quantity, p.idempotency_key, p.created_at, ",
            "s.source_stock, s.target_stock, EXISTS (SELECT FROM recorded) AS recorded, ",
            "(SELECT count(*) FROM moved) AS moved ",
            "FROM stocks s LEFT JOIN prior p ON true"
        )
    };
}
use move_stock_outcome;

/// The row of [`MOVE_STOCK`], beside the prior ledger row's columns (NULL when there is none).
#[derive(FromRow)]
struct MoveOutcome {
    /// The prior ledger row's id.
    id: Option<Uuid>,
    /// The live source's stock under its lock; `None` when it is not live.
    source_stock: Option<i64>,
    /// The live target's stock under its lock; `None` when it is not live.
    target_stock: Option<i64>,
    /// Whether the ledger row went in.
    recorded: bool,
    /// How many stocks moved.
    moved: i64,
}

impl Session {
    /// Moves stock and writes `movement` to the ledger with [`MOVE_STOCK`], in this session's
    /// transaction, or in one of its own on a connection without one. `lock_timeout`: a
    /// PostgreSQL `lock_timeout` value for that transaction only.
    pub(crate) async fn move_stock(
        &mut self,
        movement: StockMovement,
        lock_timeout: Option<&str>,
    ) -> Result<StockMoved> {
        let event = self
            .publishing()
            .own_events
            .then(|| stockroom_core::outbox::own::stock_moved(&movement));
        let event = event.as_ref();
        let query = move_query(&movement, lock_timeout, event);
        let row = match self.fetch_move(query).await {
            // Only an earlier attempt of this very statement can hold the ledger row's id: one
            // sent on a connection that was lost (see `Lease::run`), still running then, which
            // committed after this statement's snapshot. Sent once more, the statement sees its
            // row. (In a transaction the failed insert aborted it: no second statement there.)
            Err(Error::Conflict { constraint })
                if !self.in_transaction() && constraint == LEDGER_ROW_TAKEN =>
            {
                let query = move_query(&movement, lock_timeout, event);
                self.fetch_move(query).await?
            }
            row => row?,
        };
        move_outcome(&row, movement)
    }

    /// [`MOVE_STOCK`]'s row (or [`MOVE_STOCK_ANNOUNCED`]'s). Outside a transaction the
    /// statement commits by itself, so a connection lost while it ran is an ambiguous commit
    /// (after `Lease::run` sent it again where it could: the ledger row's id makes a second send
    /// apply nothing twice).
    async fn fetch_move(&mut self, (sql, query): (&'static str, PgQuery<'_>)) -> Result<PgRow> {
        if self.in_transaction() {
            self.fetch_one(sql, query).await
        } else {
            self.fetch_one_autocommit(sql, query).await
        }
    }
}

/// [`MOVE_STOCK`] with its parameters bound, or, with the move's own `event`,
/// [`MOVE_STOCK_ANNOUNCED`]; and its text.
fn move_query<'q>(
    movement: &'q StockMovement,
    lock_timeout: Option<&'q str>,
    event: Option<&'q NewEvent>,
) -> (&'static str, PgQuery<'q>) {
    let sql = match event {
        Some(_) => MOVE_STOCK_ANNOUNCED,
        None => MOVE_STOCK,
    };
    let query = sqlx::query(sql)
        .bind(movement.id.as_uuid())
        .bind(movement.source_id.as_uuid())
        .bind(movement.target_id.as_uuid())
        .bind(movement.quantity)
        .bind(movement.idempotency_key.as_deref())
        .bind(movement.created_at)
        .bind(MAX_STOCK)
        .bind(lock_timeout);
    let query = match event {
        Some(event) => query
            .bind(event.id().as_uuid())
            .bind(event.subject())
            .bind(event.aggregate())
            .bind(crate::outbox::lane_i16(event.lane()))
            .bind(event.payload()),
        None => query,
    };
    (sql, query)
}

/// What the row of [`MOVE_STOCK`] says of the move that would have written `movement`, rule by
/// rule in the order of `stockroom_core::move_stock_with_repositories`.
fn move_outcome(row: &PgRow, movement: StockMovement) -> Result<StockMoved> {
    let outcome = MoveOutcome::from_row(row).map_err(map_error)?;
    if outcome.id.is_some() {
        let prior: StockMovement = decode::<StockMovementRow, _>(row)?;
        return Ok(if prior.id == movement.id {
            StockMoved::Applied(prior)
        } else {
            StockMoved::AlreadyRecorded(prior)
        });
    }
    let live_stock = |stock: Option<i64>, product: ProductId| -> Result<i64> {
        stock.ok_or_else(|| Error::not_found(EntityKind::PRODUCT, product))
    };
    let source_stock = live_stock(outcome.source_stock, movement.source_id)?;
    let target_stock = live_stock(outcome.target_stock, movement.target_id)?;
    check_stocks(
        movement.source_id,
        source_stock,
        target_stock,
        movement.quantity,
    )?;
    if !outcome.recorded {
        // The checks passed, so only the key stopped the insert.
        return Err(key_taken_meanwhile(Error::Conflict {
            constraint: Constraint::IDEMPOTENCY_KEY,
        }));
    }
    if outcome.moved != 2 {
        // Cannot happen: the statement holds both rows' locks from before the insert.
        return Err(Error::backend_message(format!(
            "stock move recorded but moved {} stocks instead of 2",
            outcome.moved
        )));
    }
    Ok(StockMoved::Applied(movement))
}

/// Decodes a ledger row.
fn movement(row: &PgRow) -> Result<StockMovement> {
    decode::<StockMovementRow, _>(row)
}

#[async_trait]
impl StockMovementReader for Session {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        let query = sqlx::query(MOVEMENT_GET).bind(id.as_uuid());
        let row = self.fetch_optional(MOVEMENT_GET, query).await?;
        row.as_ref().map(movement).transpose()
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        if key.contains('\0') {
            // As in `get_row_by`: no key holds a NUL byte, and PostgreSQL refuses one (22021).
            return Ok(None);
        }
        let query = sqlx::query(MOVEMENT_BY_KEY).bind(key);
        let row = self.fetch_optional(MOVEMENT_BY_KEY, query).await?;
        row.as_ref().map(movement).transpose()
    }

    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        let query = sqlx::query(MOVEMENTS_FOR_PRODUCT)
            .bind(product.as_uuid())
            .bind(limit_i64(page.limit()))
            .bind(offset_i64(page));
        let rows = self.fetch_all(MOVEMENTS_FOR_PRODUCT, query).await?;
        rows.iter().map(movement).collect()
    }

    async fn count(&mut self) -> Result<u64> {
        let row = self
            .fetch_one(MOVEMENTS_COUNT, sqlx::query(MOVEMENTS_COUNT))
            .await?;
        // PostgreSQL names the column after the aggregate.
        column(&row, "count").map(count_u64)
    }
}

#[async_trait]
impl StockMovementRepository for Session {
    async fn record(&mut self, new: NewStockMovement) -> Result<StockMovement> {
        let movement = new.into_entity(now());
        let query = sqlx::query(RECORD)
            .bind(movement.id.as_uuid())
            .bind(movement.source_id.as_uuid())
            .bind(movement.target_id.as_uuid())
            .bind(movement.quantity)
            .bind(&movement.idempotency_key)
            .bind(movement.created_at);
        if self.execute(RECORD, query).await?.rows_affected() == 1 {
            Ok(movement)
        } else if movement.idempotency_key.is_some() {
            Err(Error::Conflict {
                constraint: Constraint::IDEMPOTENCY_KEY,
            })
        } else {
            Err(Error::Conflict {
                constraint: LEDGER_ROW_TAKEN,
            })
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use std::time::Duration;

    use stockroom_core::schema::RecordReader;
    use stockroom_core::{Entity, NewProduct, Product, Store};

    use super::*;
    use crate::testing::TestDatabase;
    use crate::PostgresStore;

    /// Two products with ten in stock each.
    async fn seed(store: &PostgresStore) -> [ProductId; 2] {
        let mut uow = store.begin().await.unwrap();
        let mut ids = [ProductId::new(); 2];
        for (id, tag) in ids.iter_mut().zip(["a", "b"]) {
            let new = NewProduct::new(tag, tag, &tag.to_uppercase()).unwrap();
            *id = uow
                .products()
                .create(new.with_stock(10).unwrap())
                .await
                .unwrap()
                .id;
        }
        uow.commit().await.unwrap();
        ids
    }

    /// A ledger row from `a` to `b`, without an idempotency key.
    fn ledger_row([a, b]: [ProductId; 2]) -> StockMovement {
        StockMovement {
            id: StockMovementId::new(),
            source_id: a,
            target_id: b,
            quantity: 4,
            idempotency_key: None,
            created_at: now(),
        }
    }

    /// The stocks of `ids` and the size of the ledger.
    async fn state(session: &mut Session, ids: [ProductId; 2]) -> (Vec<i64>, u64) {
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        let records = RecordReader::get_many(session, Product::schema(), &uuids)
            .await
            .unwrap();
        let stocks = records
            .into_iter()
            .map(|r| Product::from_record(r).unwrap().stock)
            .collect();
        (stocks, StockMovementReader::count(session).await.unwrap())
    }

    /// Waits until a session on `db` waits for a lock.
    async fn until_a_session_waits_for_a_lock(db: &TestDatabase) {
        let mut admin = db.server().admin().await;
        for _ in 0..1_000 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(db.name())
            .fetch_one(&mut admin)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no session waited for a lock within ten seconds");
    }

    /// The stock move sent again with the same ledger row, as after a lost connection, finds
    /// that row by its id (no idempotency key needed) and answers `Applied` with it; the stock
    /// moved once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_move_sent_again_answers_applied_and_moves_once() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let ids = seed(&store).await;
        let movement = ledger_row(ids);
        let mut session = store.pooled_session().await.unwrap();
        let first = session.move_stock(movement.clone(), None).await.unwrap();
        let again = session.move_stock(movement.clone(), None).await.unwrap();
        assert_eq!(first, StockMoved::Applied(movement.clone()));
        assert_eq!(again, StockMoved::Applied(movement));
        assert_eq!(state(&mut session, ids).await, (vec![6, 14], 1));
        drop(session);
        store.close().await;
        db.drop_now().await;
    }

    /// An earlier attempt of the same move (same ledger row id) that runs on and commits while
    /// the move waits for its row locks: the move's insert meets the id, and the move answers
    /// `Applied` with the earlier attempt's row; the stock moved once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_move_whose_row_an_earlier_attempt_committed_meanwhile_answers_applied() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let ids = seed(&store).await;
        let movement = ledger_row(ids);
        let mut earlier = store.begin().await.unwrap();
        move_query(&movement, None, None)
            .1
            .fetch_one(crate::connection(earlier.as_mut()).unwrap())
            .await
            .unwrap();
        let mut session = store.pooled_session().await.unwrap();
        let (outcome, ()) = tokio::join!(session.move_stock(movement.clone(), None), async {
            until_a_session_waits_for_a_lock(&db).await;
            earlier.commit().await.unwrap();
        });
        assert_eq!(outcome.unwrap(), StockMoved::Applied(movement));
        assert_eq!(state(&mut session, ids).await, (vec![6, 14], 1));
        drop(session);
        store.close().await;
        db.drop_now().await;
    }
}

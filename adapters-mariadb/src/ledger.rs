//! The stock ledger (`stock_movements`, made by the migration `0002_ledger`): its reads and the
//! append of a ledger row, on a [`Session`] (a read session's pooled connection or a unit of
//! work's transaction).
//!
//! A stock move on MariaDB (`crate::moves`: the core's move, with both stocks changed by one
//! `UPDATE`) is a key lookup ([`StockMovementReader::by_idempotency_key`]), both products
//! locked, the ledger row appended ([`StockMovementRepository::record`]), both stocks changed.
//! What it needs of this module:
//!
//! - The lookup is a plain read of the unit of work's transaction: a row another transaction
//!   has not committed yet is not seen, and one committed after the transaction's snapshot is
//!   not seen at REPEATABLE READ either.
//! - So the append is a plain `INSERT`, and the unique index `stock_movements_idempotency_key`
//!   decides: a key another transaction holds uncommitted makes it wait for that one's end, a
//!   key committed (before or meanwhile) fails it with 1062 naming the index, which is
//!   [`Constraint::IDEMPOTENCY_KEY`](stockroom_core::Constraint::IDEMPOTENCY_KEY) (the core's
//!   `key_taken_meanwhile` makes that `Transient` in a move: a retry finds the row). The failed
//!   statement is rolled back alone (MariaDB keeps the transaction), so the unit of work stays
//!   usable. Not `INSERT IGNORE`, which would turn other errors (a CHECK, a value too long) into
//!   warnings too. A taken id (`PRIMARY`) is the ledger's primary key
//!   ([`Session::execute_on`]).
//! - On a Galera cluster the same key inserted on two nodes at once fails certification on one
//!   of them (the unique key is part of the write set): 1213 at its commit, `Transient`.

use async_trait::async_trait;
use sqlx::mysql::MySqlRow;
use stockroom_core::time::now;
use stockroom_core::{
    EntityKind, Error, NewStockMovement, Page, ProductId, Result, StockMovement, StockMovementId,
    StockMovementReader, StockMovementRepository, MAX_IDEMPOTENCY_KEY_LEN,
};
use uuid::Uuid;

use crate::codec::{at, count_u64, limit_i64, offset_i64, timestamp_at, utc};
use crate::session::Session;

/// The columns every read of the ledger selects, in the order [`movement`] reads them.
macro_rules! columns {
    () => {
        "`id`, `source_id`, `target_id`, `quantity`, `idempotency_key`, `created_at`"
    };
}

const MOVEMENT_GET: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM `stock_movements` WHERE `id` = ?"
);

const MOVEMENT_BY_KEY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM `stock_movements` WHERE `idempotency_key` = ?"
);

/// A product's movements, from either side, in `(created_at, id)` order, a page of them. Binds:
/// the product, the most rows either side can contribute (limit + offset), the product again,
/// the same bound, then the limit and the offset.
///
/// Each side is read in order through its own index (`stock_movements_source`,
/// `stock_movements_target`) and stops after `limit + offset` rows, instead of an
/// `OR` that merges both indexes and sorts every movement of the product. `UNION` (not `ALL`)
/// so that a row on both sides would come once.
const MOVEMENTS_FOR_PRODUCT: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM ((SELECT ",
    columns!(),
    " FROM `stock_movements` WHERE `source_id` = ? ORDER BY `created_at`, `id` LIMIT ?)",
    " UNION (SELECT ",
    columns!(),
    " FROM `stock_movements` WHERE `target_id` = ? ORDER BY `created_at`, `id` LIMIT ?))",
    " AS `m` ORDER BY `created_at`, `id` LIMIT ? OFFSET ?"
);

const MOVEMENTS_COUNT: &str = "SELECT COUNT(*) FROM `stock_movements`";

const RECORD: &str = concat!(
    "INSERT INTO `stock_movements` (",
    columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?)"
);

/// Decodes a ledger row selected with [`columns!`].
fn movement(row: &MySqlRow) -> Result<StockMovement> {
    Ok(StockMovement {
        id: StockMovementId::from_uuid(at::<Uuid>(row, 0)?),
        source_id: ProductId::from_uuid(at::<Uuid>(row, 1)?),
        target_id: ProductId::from_uuid(at::<Uuid>(row, 2)?),
        quantity: at(row, 3)?,
        idempotency_key: at(row, 4)?,
        created_at: timestamp_at(row, 5)?
            .ok_or_else(|| Error::backend_message("a ledger row without created_at"))?,
    })
}

/// Whether `key` could be a stored idempotency key: 1 to 128 visible ASCII characters (what
/// `IdempotencyKey::parse` admits, and so all the ledger holds). Any other text is answered
/// without asking the server, and must be: the column's collation pads with spaces
/// (`utf8mb4_bin` is a PAD SPACE collation), so `'k '` would find the row of `'k'`.
fn could_be_a_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}

#[async_trait]
impl StockMovementReader for Session {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        let query = sqlx::query(MOVEMENT_GET).bind(id.as_uuid());
        let row = self.fetch_optional(MOVEMENT_GET, query).await?;
        row.as_ref().map(movement).transpose()
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        if !could_be_a_key(key) {
            return Ok(None);
        }
        let query = sqlx::query(MOVEMENT_BY_KEY).bind(key);
        let row = self.fetch_optional(MOVEMENT_BY_KEY, query).await?;
        row.as_ref().map(movement).transpose()
    }

    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        let (limit, offset) = (limit_i64(page.limit()), offset_i64(page));
        let either_side = limit.saturating_add(offset);
        let query = sqlx::query(MOVEMENTS_FOR_PRODUCT)
            .bind(product.as_uuid())
            .bind(either_side)
            .bind(product.as_uuid())
            .bind(either_side)
            .bind(limit)
            .bind(offset);
        let rows = self.fetch_all(MOVEMENTS_FOR_PRODUCT, query).await?;
        rows.iter().map(movement).collect()
    }

    async fn count(&mut self) -> Result<u64> {
        let row = self
            .fetch_one(MOVEMENTS_COUNT, sqlx::query(MOVEMENTS_COUNT))
            .await?;
        at::<i64>(&row, 0).map(count_u64)
    }
}

#[async_trait]
impl StockMovementRepository for Session {
    /// One `INSERT` (see the module docs): a taken idempotency key is
    /// [`Constraint::IDEMPOTENCY_KEY`](stockroom_core::Constraint::IDEMPOTENCY_KEY), a taken id
    /// (which only a second send of the same row could meet: ids are fresh UUID v7s) the
    /// ledger's primary key.
    async fn record(&mut self, new: NewStockMovement) -> Result<StockMovement> {
        let movement = new.into_entity(now());
        let query = sqlx::query(RECORD)
            .bind(movement.id.as_uuid())
            .bind(movement.source_id.as_uuid())
            .bind(movement.target_id.as_uuid())
            .bind(movement.quantity)
            .bind(movement.idempotency_key.as_deref())
            .bind(utc(movement.created_at));
        self.execute_on(EntityKind::STOCK_MOVEMENT, RECORD, query)
            .await?;
        Ok(movement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_key_can_be_is_looked_up() {
        assert!(could_be_a_key("move-1"));
        assert!(could_be_a_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN)));
        for not_a_key in [
            "",
            "k ",
            " k",
            "a b",
            "k\0",
            "clé",
            &"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1),
        ] {
            assert!(!could_be_a_key(not_a_key), "{not_a_key:?}");
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod database {
    use std::time::Duration;

    use stockroom_core::{
        Constraint, Error, NewProduct, Page, Product, Store, StoreExt, TransferRequest,
        UnitOfWorkExt,
    };

    use crate::testing::TestDatabase;
    use crate::{MariaDbOptions, MariaDbStore};

    /// Products named by `tags`, ten in stock each, committed.
    async fn products(store: &MariaDbStore, tags: &[&str]) -> Vec<Product> {
        let mut uow = store.begin().await.unwrap();
        let mut created = Vec::new();
        for tag in tags {
            let new = NewProduct::new(tag, tag, &tag.to_uppercase()).unwrap();
            created.push(
                uow.products()
                    .create(new.with_stock(10).unwrap())
                    .await
                    .unwrap(),
            );
        }
        uow.commit().await.unwrap();
        created
    }

    /// Waits until a transaction waits for a row lock of a table of `db`, as InnoDB's own
    /// status says. (Not `information_schema.INNODB_TRX`: InnoDB refreshes that table's cache
    /// only when nobody read it in the last 100 ms, so a poll, or anyone else's, can keep it
    /// showing the moment before the wait.)
    async fn until_a_transaction_waits_for_a_lock(db: &TestDatabase) {
        let mut admin = db.server().admin().await;
        let table = format!("`{}`.", db.name());
        for _ in 0..400 {
            let status = sqlx::raw_sql("SHOW ENGINE INNODB STATUS")
                .fetch_one(&mut admin)
                .await
                .unwrap();
            let text: String = sqlx::Row::get(&status, "Status");
            let waiting = text
                .split("---TRANSACTION")
                .any(|block| block.contains("LOCK WAIT") && block.contains(&table));
            if waiting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no transaction waited for a lock of {table} within ten seconds");
    }

    /// A move whose key another unit of work holds uncommitted (on other products, so only the
    /// key is shared): its ledger insert waits on the unique index, and when the other commits
    /// it fails on `Constraint::IDEMPOTENCY_KEY`, which the move reports as `Transient` (a retry
    /// finds the other's row). Only that statement was rolled back: the unit of work goes on,
    /// and commits what else it did.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_committed_meanwhile_fails_the_insert_alone() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        // A lock wait long enough for the check that the second move waits, under load.
        let options = MariaDbOptions::from_config(&db.config())
            .with_lock_wait_timeout(Duration::from_secs(60));
        let store = MariaDbStore::connect_with(&db.config(), options)
            .await
            .unwrap();
        let p = products(&store, &["a", "b", "c", "d"]).await;
        let keyed = |from: &Product, to: &Product| {
            TransferRequest::new(from.id, to.id, 1).with_idempotency_key("shared-key")
        };
        let mut first = store.begin().await.unwrap();
        first.transfer(&keyed(&p[0], &p[1])).await.unwrap();

        let mut second = store.begin().await.unwrap();
        let same_key = keyed(&p[2], &p[3]);
        let (outcome, ()) = tokio::join!(second.transfer(&same_key), async {
            until_a_transaction_waits_for_a_lock(&db).await;
            first.commit().await.unwrap();
        });
        assert!(
            matches!(outcome, Err(Error::Transient { .. })),
            "{outcome:?}"
        );
        second
            .transfer(&TransferRequest::new(p[2].id, p[3].id, 2))
            .await
            .unwrap();
        second.commit().await.unwrap();

        let mut read = store.read().await.unwrap();
        assert_eq!(read.movements().count().await.unwrap(), 2);
        let found = read
            .movements()
            .by_idempotency_key("shared-key")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.source_id, found.target_id), (p[0].id, p[1].id));
        let stocks: Vec<i64> = read
            .products()
            .get_many(&p.iter().map(|p| p.id).collect::<Vec<_>>())
            .await
            .unwrap()
            .iter()
            .map(|p| p.stock)
            .collect();
        assert_eq!(stocks, [9, 11, 8, 12]);

        // The same key sent again, outside any unit of work: the first move's row.
        let replayed = store.transfer(&keyed(&p[0], &p[1])).await.unwrap();
        assert_eq!(replayed.id, found.id);
        // A second row under a taken key, inserted directly, is the key's conflict.
        let mut uow = store.begin().await.unwrap();
        let taken = uow.transfer(&keyed(&p[2], &p[3])).await;
        let key_taken = Constraint::IDEMPOTENCY_KEY;
        assert!(
            matches!(taken, Err(Error::Conflict { constraint }) if constraint == key_taken),
            "a key recorded for another move: {taken:?}"
        );
        uow.rollback().await.unwrap();
        drop(read);
        store.close().await;
        db.drop_now().await;
    }

    /// A product's movements, from either side, page by page in `(created_at, id)` order; and
    /// a key with a trailing space does not find the key without it (the column compares with
    /// PAD SPACE).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_products_movements_page_by_page_from_either_side() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let p = products(&store, &["hub", "x", "y"]).await;
        let mut expected = Vec::new();
        for round in 0..7 {
            let (from, to) = if round % 2 == 0 {
                (&p[0], &p[1])
            } else {
                (&p[2], &p[0])
            };
            let request =
                TransferRequest::new(from.id, to.id, 1).with_idempotency_key(format!("k{round}"));
            expected.push(store.transfer(&request).await.unwrap().id);
        }
        store
            .transfer(&TransferRequest::new(p[1].id, p[2].id, 1))
            .await
            .unwrap(); // not the hub's

        let mut read = store.read().await.unwrap();
        let mut paged = Vec::new();
        for offset in (0..8).step_by(3) {
            let page = Page::new(3, offset).unwrap();
            let rows = read.movements().for_product(p[0].id, page).await.unwrap();
            paged.extend(rows.iter().map(|m| m.id));
        }
        assert_eq!(paged, expected, "every movement of the hub, once, in order");
        assert_eq!(read.movements().count().await.unwrap(), 8);
        assert!(read
            .movements()
            .by_idempotency_key("k1 ")
            .await
            .unwrap()
            .is_none());
        assert!(read
            .movements()
            .by_idempotency_key("k1")
            .await
            .unwrap()
            .is_some());
        drop(read);
        store.close().await;
        db.drop_now().await;
    }
}

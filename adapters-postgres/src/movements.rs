//! The stock ledger: its reads, and the append of a ledger row.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;
use stockroom_core::time::now;
use stockroom_core::{
    Constraint, Error, NewStockMovement, Page, ProductId, Result, StockMovement, StockMovementId,
    StockMovementReader, StockMovementRepository,
};

use crate::entity::{get_i64, limit_i64, offset_i64};
use crate::error::map_error;
use crate::session::Session;

const MOVEMENT_GET: &str = concat!(
    "SELECT id, source_id, target_id, quantity, idempotency_key, created_at ",
    "FROM stock_movements WHERE id = $1"
);
const MOVEMENT_BY_KEY: &str = concat!(
    "SELECT id, source_id, target_id, quantity, idempotency_key, created_at ",
    "FROM stock_movements WHERE idempotency_key = $1"
);
const MOVEMENTS_FOR_PRODUCT: &str = concat!(
    "SELECT id, source_id, target_id, quantity, idempotency_key, created_at ",
    "FROM stock_movements WHERE source_id = $1 OR target_id = $1 ",
    "ORDER BY created_at, id LIMIT $2 OFFSET $3"
);
const MOVEMENTS_COUNT: &str = "SELECT count(*) FROM stock_movements";
const RECORD: &str = concat!(
    "INSERT INTO stock_movements (id, source_id, target_id, quantity, idempotency_key, ",
    "created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
);

fn movement(row: &PgRow) -> Result<StockMovement> {
    let decode = || -> sqlx::Result<StockMovement> {
        Ok(StockMovement {
            id: StockMovementId::from_uuid(row.try_get(0)?),
            source_id: ProductId::from_uuid(row.try_get(1)?),
            target_id: ProductId::from_uuid(row.try_get(2)?),
            quantity: row.try_get(3)?,
            idempotency_key: row.try_get(4)?,
            created_at: row.try_get(5)?,
        })
    };
    decode().map_err(map_error)
}

#[async_trait]
impl StockMovementReader for Session {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        let query = sqlx::query(MOVEMENT_GET).bind(id.as_uuid());
        let row = self.fetch_optional(MOVEMENT_GET, query).await?;
        row.as_ref().map(movement).transpose()
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
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
        Ok(u64::try_from(get_i64(&row, 0)?).unwrap_or(0))
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
                constraint: Constraint::IdempotencyKey,
            })
        } else {
            Err(Error::Conflict {
                constraint: Constraint::PrimaryKey,
            })
        }
    }
}

//! Type mapping between PostgreSQL and the core's entities: one `#[derive(sqlx::FromRow)]` row
//! struct per table (fields named after its columns), its conversion into the entity (failing
//! on a value out of the entity's range), and the conversions of bound parameters.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use stockroom_core::{
    Category, CategoryId, Error, Limit, Page, Product, ProductId, Result, Review, ReviewId,
    StockMovement, StockMovementId, User, UserId,
};
use uuid::Uuid;

use crate::error::map_error;

/// A value a column holds that its entity cannot (a status no product has, a rating out of
/// range): a decoding error, as sqlx reports one.
fn out_of_range(error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

/// Decodes the entity `E` from `row` through its row struct `R`.
pub(crate) fn decode<R, E>(row: &PgRow) -> Result<E>
where
    R: for<'r> FromRow<'r, PgRow> + TryInto<E, Error = sqlx::Error>,
{
    R::from_row(row)
        .and_then(TryInto::try_into)
        .map_err(map_error)
}

/// Reads the column `name` of `row`.
pub(crate) fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(map_error)
}

/// A row of `products`, as [`crate::products`] selects it (`search_text` is written, never
/// read).
#[derive(Debug, FromRow)]
pub(crate) struct ProductRow {
    id: Uuid,
    name: String,
    slug: String,
    sku: String,
    description: Option<String>,
    status: String,
    stock: i64,
    category_id: Option<Uuid>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

impl TryFrom<ProductRow> for Product {
    type Error = sqlx::Error;

    fn try_from(row: ProductRow) -> sqlx::Result<Self> {
        Ok(Product {
            id: ProductId::from_uuid(row.id),
            name: row.name,
            slug: row.slug,
            sku: row.sku,
            description: row.description,
            status: row.status.parse().map_err(|e: Error| out_of_range(e))?,
            stock: row.stock,
            category_id: row.category_id.map(CategoryId::from_uuid),
            created_by: row.created_by.map(UserId::from_uuid),
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        })
    }
}

/// A row of `categories`.
#[derive(Debug, FromRow)]
pub(crate) struct CategoryRow {
    id: Uuid,
    name: String,
    slug: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

impl TryFrom<CategoryRow> for Category {
    type Error = sqlx::Error;

    fn try_from(row: CategoryRow) -> sqlx::Result<Self> {
        Ok(Category {
            id: CategoryId::from_uuid(row.id),
            name: row.name,
            slug: row.slug,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        })
    }
}

/// A row of `users`.
#[derive(Debug, FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    email: String,
    display_name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

impl TryFrom<UserRow> for User {
    type Error = sqlx::Error;

    fn try_from(row: UserRow) -> sqlx::Result<Self> {
        Ok(User {
            id: UserId::from_uuid(row.id),
            email: row.email,
            display_name: row.display_name,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        })
    }
}

/// A row of `reviews`.
#[derive(Debug, FromRow)]
pub(crate) struct ReviewRow {
    id: Uuid,
    product_id: Uuid,
    author_id: Uuid,
    rating: i16,
    body: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

impl TryFrom<ReviewRow> for Review {
    type Error = sqlx::Error;

    fn try_from(row: ReviewRow) -> sqlx::Result<Self> {
        Ok(Review {
            id: ReviewId::from_uuid(row.id),
            product_id: ProductId::from_uuid(row.product_id),
            author_id: UserId::from_uuid(row.author_id),
            rating: u8::try_from(row.rating).map_err(out_of_range)?,
            body: row.body,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        })
    }
}

/// A row of `stock_movements`, the ledger.
#[derive(Debug, FromRow)]
pub(crate) struct StockMovementRow {
    id: Uuid,
    source_id: Uuid,
    target_id: Uuid,
    quantity: i64,
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<StockMovementRow> for StockMovement {
    type Error = sqlx::Error;

    fn try_from(row: StockMovementRow) -> sqlx::Result<Self> {
        Ok(StockMovement {
            id: StockMovementId::from_uuid(row.id),
            source_id: ProductId::from_uuid(row.source_id),
            target_id: ProductId::from_uuid(row.target_id),
            quantity: row.quantity,
            idempotency_key: row.idempotency_key,
            created_at: row.created_at,
        })
    }
}

/// The ids bound as a `uuid[]`.
pub(crate) fn uuids<I: Copy + Into<Uuid>>(ids: &[I]) -> Vec<Uuid> {
    ids.iter().map(|&id| id.into()).collect()
}

/// A limit bound as a `bigint`.
pub(crate) fn limit_i64(limit: Limit) -> i64 {
    i64::from(limit.get())
}

/// A page's offset bound as a `bigint`.
pub(crate) fn offset_i64(page: Page) -> i64 {
    // Page offsets are at most MAX_OFFSET (10^7).
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

/// A `count(*)` read back as a `u64`.
pub(crate) fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A product's category as `with_relations` joins it: the columns of [`CategoryRow`],
/// aliased `c_<column>`.
#[derive(Debug, FromRow)]
pub(crate) struct JoinedCategoryRow {
    #[sqlx(rename = "c_id")]
    id: Uuid,
    #[sqlx(rename = "c_name")]
    name: String,
    #[sqlx(rename = "c_slug")]
    slug: String,
    #[sqlx(rename = "c_created_at")]
    created_at: DateTime<Utc>,
    #[sqlx(rename = "c_updated_at")]
    updated_at: DateTime<Utc>,
    #[sqlx(rename = "c_deleted_at")]
    deleted_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "c_version")]
    version: i64,
}

impl TryFrom<JoinedCategoryRow> for Category {
    type Error = sqlx::Error;

    fn try_from(row: JoinedCategoryRow) -> sqlx::Result<Self> {
        CategoryRow {
            id: row.id,
            name: row.name,
            slug: row.slug,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        }
        .try_into()
    }
}

/// A product's creator as `with_relations` joins it: the columns of [`UserRow`], aliased
/// `u_<column>`.
#[derive(Debug, FromRow)]
pub(crate) struct JoinedUserRow {
    #[sqlx(rename = "u_id")]
    id: Uuid,
    #[sqlx(rename = "u_email")]
    email: String,
    #[sqlx(rename = "u_display_name")]
    display_name: String,
    #[sqlx(rename = "u_created_at")]
    created_at: DateTime<Utc>,
    #[sqlx(rename = "u_updated_at")]
    updated_at: DateTime<Utc>,
    #[sqlx(rename = "u_deleted_at")]
    deleted_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "u_version")]
    version: i64,
}

impl TryFrom<JoinedUserRow> for User {
    type Error = sqlx::Error;

    fn try_from(row: JoinedUserRow) -> sqlx::Result<Self> {
        UserRow {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            version: row.version,
        }
        .try_into()
    }
}

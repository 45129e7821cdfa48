//! Reviews: their table, the rule of one live review per author and product, a product's
//! reviews and their rating statistics.

use async_trait::async_trait;
use sqlx::{FromRow, Postgres, QueryBuilder};
use stockroom_core::{
    Constraint, EntityKind, Error, Page, ProductId, RatingStats, Result, Review, ReviewFilter,
    ReviewId, ReviewPatch, ReviewReader, ReviewRepository,
};

use crate::codec::{limit_i64, offset_i64, ReviewRow};
use crate::error::map_error;
use crate::session::{PgQuery, Session};
use crate::sql::{entity_sql, raced, PgEntity, PgWrite};

/// The columns every read of a review selects, each prefixed with `$p` (a table alias and a
/// dot, or nothing).
macro_rules! review_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "product_id, ",
            $p,
            "author_id, ",
            $p,
            "rating, ",
            $p,
            "body, ",
            $p,
            "created_at, ",
            $p,
            "updated_at, ",
            $p,
            "deleted_at, ",
            $p,
            "version"
        )
    };
}

impl PgEntity for Review {
    type Row = ReviewRow;
    entity_sql!("reviews", review_columns!(""));
    const RESTORE: &'static str = concat!(
        "UPDATE reviews r SET deleted_at = NULL, updated_at = $2, version = r.version + 1 ",
        "WHERE r.id = $1 AND r.deleted_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM reviews o ",
        "WHERE o.product_id = r.product_id AND o.author_id = r.author_id AND o.deleted_at IS NULL)"
    );
    const INSERT: &'static str = concat!(
        "INSERT INTO reviews (id, product_id, author_id, rating, body, created_at, updated_at) ",
        "SELECT $1, $2, $3, $4, $5, $6, $6 ",
        "WHERE EXISTS (SELECT 1 FROM products WHERE id = $2 AND deleted_at IS NULL) ",
        "AND EXISTS (SELECT 1 FROM users WHERE id = $3 AND deleted_at IS NULL) ",
        "ON CONFLICT DO NOTHING"
    );
    const INSERT_MANY: &'static str = concat!(
        "INSERT INTO reviews (id, product_id, author_id, rating, body, created_at, updated_at) ",
        "SELECT u.id, u.product_id, u.author_id, u.rating, u.body, $6, $6 ",
        "FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::smallint[], $5::text[]) ",
        "AS u(id, product_id, author_id, rating, body) ",
        "WHERE EXISTS (SELECT 1 FROM products p WHERE p.id = u.product_id AND p.deleted_at IS NULL) ",
        "AND EXISTS (SELECT 1 FROM users a WHERE a.id = u.author_id AND a.deleted_at IS NULL) ",
        "ON CONFLICT DO NOTHING RETURNING id"
    );

    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &ReviewFilter) {
        // A deleted product or author filters like an absent one.
        if let Some(product) = filter.product_id {
            qb.push(" AND product_id = ")
                .push_bind(product.as_uuid())
                .push(" AND EXISTS (SELECT 1 FROM products p WHERE p.id = ")
                .push_bind(product.as_uuid())
                .push(" AND p.deleted_at IS NULL)");
        }
        if let Some(author) = filter.author_id {
            qb.push(" AND author_id = ")
                .push_bind(author.as_uuid())
                .push(" AND EXISTS (SELECT 1 FROM users u WHERE u.id = ")
                .push_bind(author.as_uuid())
                .push(" AND u.deleted_at IS NULL)");
        }
        if let Some(rating) = filter.rating {
            qb.push(" AND rating = ").push_bind(i16::from(rating.get()));
        }
    }

    fn bind_insert<'q>(query: PgQuery<'q>, row: &'q Self) -> PgQuery<'q> {
        query
            .bind(row.id.as_uuid())
            .bind(row.product_id.as_uuid())
            .bind(row.author_id.as_uuid())
            .bind(i16::from(row.rating))
            .bind(&row.body)
            .bind(row.created_at)
    }

    fn bind_insert_many<'q>(query: PgQuery<'q>, rows: &'q [Self]) -> PgQuery<'q> {
        query
            .bind(rows.iter().map(|r| r.id.as_uuid()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.product_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.author_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| i16::from(r.rating)).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.body.as_deref()).collect::<Vec<_>>())
    }

    async fn why_not_inserted(
        session: &mut Session,
        row: &Self,
        _except: &[Self::Id],
    ) -> Result<Error> {
        session.why_review_not_inserted(row).await
    }

    fn push_set(qb: &mut QueryBuilder<Postgres>, patch: &ReviewPatch) {
        if let Some(rating) = patch.rating() {
            qb.push(", rating = ").push_bind(i16::from(rating));
        }
        if let Some(body) = patch.body() {
            qb.push(", body = ").push_bind(body.map(str::to_owned));
        }
    }
}

impl PgWrite for Review {
    async fn update(
        session: &mut Session,
        id: ReviewId,
        patch: &ReviewPatch,
        expected_version: Option<i64>,
    ) -> Result<Review> {
        if let Some(updated) = session.update_row(id, patch, expected_version).await? {
            return Ok(updated);
        }
        Err(session
            .stale_or_missing::<Review>(id, expected_version)
            .await?
            .unwrap_or_else(|| raced("the review")))
    }

    async fn update_many(
        session: &mut Session,
        ids: &[ReviewId],
        patch: &ReviewPatch,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        session.update_rows::<Review>(ids, patch).await
    }

    async fn restore(session: &mut Session, id: ReviewId) -> Result<bool> {
        let conflict = Error::Conflict {
            constraint: Constraint::ReviewAuthor,
        };
        session.restore_or::<Review>(id, conflict).await
    }
}

const FOR_PRODUCT: &str = concat!(
    "SELECT ",
    review_columns!("r."),
    " FROM reviews r ",
    "JOIN products p ON p.id = r.product_id AND p.deleted_at IS NULL ",
    "WHERE r.product_id = $1 AND r.deleted_at IS NULL ",
    "ORDER BY r.created_at DESC, r.id DESC LIMIT $2 OFFSET $3"
);
const STATS: &str = concat!(
    "SELECT r.rating, count(*) AS reviews FROM reviews r ",
    "JOIN products p ON p.id = r.product_id AND p.deleted_at IS NULL ",
    "WHERE r.product_id = $1 AND r.deleted_at IS NULL GROUP BY r.rating"
);
/// Why a review of product `$1` by user `$2` was not inserted (see [`WhyNotInserted`]).
const WHY_NOT_INSERTED: &str = concat!(
    "SELECT NOT EXISTS (SELECT 1 FROM products WHERE id = $1 AND deleted_at IS NULL) ",
    "AS product_missing, ",
    "NOT EXISTS (SELECT 1 FROM users WHERE id = $2 AND deleted_at IS NULL) AS author_missing, ",
    "EXISTS (SELECT 1 FROM reviews WHERE product_id = $1 AND author_id = $2 ",
    "AND deleted_at IS NULL) AS author_taken"
);

/// The row of [`WHY_NOT_INSERTED`].
#[derive(FromRow)]
struct WhyNotInserted {
    product_missing: bool,
    author_missing: bool,
    author_taken: bool,
}

/// A row of [`STATS`]: how many live reviews give the rating.
#[derive(FromRow)]
struct RatingCount {
    rating: i16,
    reviews: i64,
}

impl Session {
    async fn why_review_not_inserted(&mut self, review: &Review) -> Result<Error> {
        let query = sqlx::query(WHY_NOT_INSERTED)
            .bind(review.product_id.as_uuid())
            .bind(review.author_id.as_uuid());
        let row = self.fetch_one(WHY_NOT_INSERTED, query).await?;
        let why = WhyNotInserted::from_row(&row).map_err(map_error)?;
        Ok(if why.product_missing {
            Error::not_found(EntityKind::Product, review.product_id)
        } else if why.author_missing {
            Error::not_found(EntityKind::User, review.author_id)
        } else if why.author_taken {
            Error::Conflict {
                constraint: Constraint::ReviewAuthor,
            }
        } else {
            Error::Conflict {
                constraint: Constraint::PrimaryKey,
            }
        })
    }
}

#[async_trait]
impl ReviewReader for Session {
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>> {
        let query = sqlx::query(FOR_PRODUCT)
            .bind(product.as_uuid())
            .bind(limit_i64(page.limit()))
            .bind(offset_i64(page));
        let rows = self.fetch_all(FOR_PRODUCT, query).await?;
        rows.iter().map(Review::decode).collect()
    }

    async fn stats(&mut self, product: ProductId) -> Result<RatingStats> {
        let rows = self
            .fetch_all(STATS, sqlx::query(STATS).bind(product.as_uuid()))
            .await?;
        let mut histogram = [0u64; 5];
        for row in &rows {
            let RatingCount { rating, reviews } = RatingCount::from_row(row).map_err(map_error)?;
            if let Some(slot) = usize::try_from(rating - 1)
                .ok()
                .and_then(|i| histogram.get_mut(i))
            {
                *slot = u64::try_from(reviews).unwrap_or(0);
            }
        }
        Ok(RatingStats::from_histogram(histogram))
    }
}

impl ReviewRepository for Session {}

//! Reviews: the `reviews` table, its row mapping and filter, and the review's own queries (a
//! product's reviews, its rating statistics) and repository port.

use async_trait::async_trait;
use rusqlite::types::Value;
use stockroom_core::{
    Page, Product, ProductId, RatingStats, Result, Review, ReviewFilter, ReviewId, ReviewReader,
    ReviewRepository, User, UserId,
};

use super::codec::{blob, meta_values, opt_text, RowReader};
use super::generic::{columns, page_params, query, query_rows, require_live};
use super::{Table, Where};
use crate::conn::{Conn, Cost, Db};

impl Table for Review {
    table_columns!("reviews": "id", "product_id", "author_id", "rating", "body");

    fn read(row: &mut RowReader<'_, '_>) -> rusqlite::Result<Self> {
        let id = ReviewId::from_uuid(row.uuid()?);
        let product_id = ProductId::from_uuid(row.uuid()?);
        let author_id = UserId::from_uuid(row.uuid()?);
        let rating = row.get()?;
        let body = row.get()?;
        let (created_at, updated_at, deleted_at, version) = row.meta()?;
        Ok(Review {
            id,
            product_id,
            author_id,
            rating,
            body,
            created_at,
            updated_at,
            deleted_at,
            version,
        })
    }

    fn values(&self, out: &mut Vec<Value>) {
        out.extend([
            blob(self.id),
            blob(self.product_id),
            blob(self.author_id),
            Value::Integer(i64::from(self.rating)),
            opt_text(self.body.as_deref()),
        ]);
        out.extend(meta_values(self));
    }

    fn filter(filter: &ReviewFilter, w: &mut Where) {
        // A deleted product or author filters like an absent one.
        if let Some(p) = filter.product_id {
            w.and(&format!("product_id = ? AND {LIVE_PRODUCT}"), blob(p));
        }
        if let Some(a) = filter.author_id {
            w.and(
                "author_id = ? AND EXISTS (SELECT 1 FROM users u \
                 WHERE u.id = reviews.author_id AND u.deleted_at IS NULL)",
                blob(a),
            );
        }
        if let Some(r) = filter.rating {
            w.and("rating = ?", Value::Integer(i64::from(r.get())));
        }
    }

    fn check_new_refs(conn: &Db<'_>, rows: &[Self]) -> Result<()> {
        require_live::<Product>(conn, rows.iter().map(|r| r.product_id))?;
        require_live::<User>(conn, rows.iter().map(|r| r.author_id))
    }
}

const LIVE_PRODUCT: &str =
    "EXISTS (SELECT 1 FROM products p WHERE p.id = reviews.product_id AND p.deleted_at IS NULL)";

/// The live reviews of a live product, newest first.
fn reviews_for_product(conn: &Db<'_>, product: ProductId, page: Page) -> Result<Vec<Review>> {
    let sql = format!(
        "SELECT {} FROM reviews WHERE product_id = ? AND deleted_at IS NULL AND {LIVE_PRODUCT} \
         ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        columns::<Review>(None)
    );
    let mut params = vec![blob(product)];
    page_params(page, &mut params);
    query_rows::<Review>(conn, &sql, &params)
}

/// Rating statistics from `GROUP BY rating` counts.
fn review_stats(conn: &Db<'_>, product: ProductId) -> Result<RatingStats> {
    let sql = format!(
        "SELECT rating, COUNT(*) FROM reviews WHERE product_id = ? AND deleted_at IS NULL \
         AND {LIVE_PRODUCT} GROUP BY rating"
    );
    let counts = query(conn, &sql, &[blob(product)], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut histogram = [0u64; 5];
    for (rating, n) in counts {
        if let Some(slot) = usize::try_from(rating - 1)
            .ok()
            .and_then(|i| histogram.get_mut(i))
        {
            *slot = n as u64;
        }
    }
    Ok(RatingStats::from_histogram(histogram))
}

#[async_trait]
impl ReviewReader for Conn {
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>> {
        self.read(Cost::Long, move |c| reviews_for_product(c, product, page))
            .await
    }

    async fn stats(&mut self, product: ProductId) -> Result<RatingStats> {
        self.read(Cost::Long, move |c| review_stats(c, product))
            .await
    }
}

impl ReviewRepository for Conn {}

//! Products: their table, their search document, their two unique values (slug and sku),
//! their references (category, creator), their reads (by slug or sku, with relations, search),
//! their stock adjustment and row locks, and `create_many`'s binary `COPY`.

use async_trait::async_trait;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArgumentBuffer;
use sqlx::{FromRow, Postgres, QueryBuilder};
use stockroom_core::time::now;
use stockroom_core::{
    Constraint, Entity, EntityKind, Error, Page, Product, ProductFilter, ProductId, ProductPatch,
    ProductReader, ProductRepository, ProductWithRelations, Result, Rule, SearchPage, StockDelta,
    Timestamp, MAX_STOCK,
};
use uuid::Uuid;

use crate::codec::{
    column, count_u64, decode, limit_i64, offset_i64, uuids, JoinedCategoryRow, JoinedUserRow,
    ProductRow,
};
use crate::error::{map_error, sqlstate};
use crate::session::{PgQuery, Session};
use crate::sql::{entity_sql, raced, Derived, PgEntity, PgWrite};

/// The columns every read of a product selects, each prefixed with `$p` (a table alias and a
/// dot, or nothing).
macro_rules! product_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "name, ",
            $p,
            "slug, ",
            $p,
            "sku, ",
            $p,
            "description, ",
            $p,
            "status, ",
            $p,
            "stock, ",
            $p,
            "category_id, ",
            $p,
            "created_by, ",
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

/// Rows per `INSERT … SELECT FROM UNNEST(…)` statement, or per `COPY`, of `create_many`.
pub(crate) const BATCH: usize = 10_000;

/// Batches of at least this many rows go in by `COPY` (see `Product::insert_fast`); smaller
/// ones by `INSERT_MANY`. `COPY` takes four round trips to `INSERT_MANY`'s one, and ends with
/// a small write (`CopyDone`) right after the large one of the data: sqlx 0.9.0 leaves Nagle's
/// algorithm on, so that small write waits for the server to acknowledge the data, which a
/// server holds back up to 40 ms (delayed ACK) unless the data is large. Measured on this
/// machine over TCP: `COPY` of 256 rows was 4x slower than `INSERT_MANY`, of 500 rows and more
/// faster (1.2x at 500 and 1,000 rows, 1.3x to 1.4x at 2,000 and 10,000).
const COPY_FROM_ROWS: usize = 1_000;

/// The savepoint a `COPY` of products runs under: a row that breaks a rule fails the `COPY`,
/// and rolling back to it keeps the unit of work's transaction usable.
const COPY_SAVEPOINT: &str = "stockroom_copy";

/// SQLSTATE 0A000, what a server answers a `COPY` it will not run for this table or at all.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// Binary `COPY` of product rows, the fields of each in the order [`copy_data`] writes them.
const COPY_PRODUCTS: &str = concat!(
    "COPY products (id, name, slug, sku, description, status, stock, category_id, created_by, ",
    "search_text, created_at, updated_at) FROM STDIN (FORMAT binary)"
);

/// Whether a category among `$1` or a user among `$2` is not a live row (a foreign key would
/// accept a deleted one).
const DEAD_REFERENCE: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM unnest($1::uuid[]) r(id) WHERE NOT EXISTS ",
    "(SELECT 1 FROM categories c WHERE c.id = r.id AND c.deleted_at IS NULL)) ",
    "OR EXISTS (SELECT 1 FROM unnest($2::uuid[]) r(id) WHERE NOT EXISTS ",
    "(SELECT 1 FROM users u WHERE u.id = r.id AND u.deleted_at IS NULL)) AS dead"
);

/// The column holding the search document (`stockroom_core::adapter::search_document` of the
/// row), which search reads with `LIKE`.
const SEARCH_TEXT: &str = "search_text";

impl PgEntity for Product {
    type Row = ProductRow;
    entity_sql!("products", product_columns!(""));
    #[cfg(test)]
    const WRITE_ONLY_COLUMNS: &'static [&'static str] = &[SEARCH_TEXT];
    const RESTORE: &'static str = concat!(
        "UPDATE products p SET deleted_at = NULL, updated_at = $2, version = p.version + 1 ",
        "WHERE p.id = $1 AND p.deleted_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM products o ",
        "WHERE o.deleted_at IS NULL AND (o.slug = p.slug OR o.sku = p.sku))"
    );
    const INSERT: &'static str = concat!(
        "INSERT INTO products (id, name, slug, sku, description, status, stock, category_id, ",
        "created_by, created_at, updated_at, search_text) ",
        "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11 ",
        "WHERE ($8::uuid IS NULL OR EXISTS ",
        "(SELECT 1 FROM categories WHERE id = $8 AND deleted_at IS NULL)) ",
        "AND ($9::uuid IS NULL OR EXISTS ",
        "(SELECT 1 FROM users WHERE id = $9 AND deleted_at IS NULL)) ",
        "ON CONFLICT DO NOTHING"
    );
    const INSERT_MANY: &'static str = concat!(
        "INSERT INTO products (id, name, slug, sku, description, status, stock, category_id, ",
        "created_by, search_text, created_at, updated_at) ",
        "SELECT u.id, u.name, u.slug, u.sku, u.description, u.status, u.stock, u.category_id, ",
        "u.created_by, u.search_text, $11, $11 ",
        "FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], ",
        "$7::bigint[], $8::uuid[], $9::uuid[], $10::text[]) ",
        "AS u(id, name, slug, sku, description, status, stock, category_id, created_by, search_text) ",
        "WHERE (u.category_id IS NULL OR EXISTS ",
        "(SELECT 1 FROM categories c WHERE c.id = u.category_id AND c.deleted_at IS NULL)) ",
        "AND (u.created_by IS NULL OR EXISTS ",
        "(SELECT 1 FROM users c WHERE c.id = u.created_by AND c.deleted_at IS NULL)) ",
        "ON CONFLICT DO NOTHING RETURNING id"
    );
    const INSERT_BATCH: usize = BATCH;

    /// A binary `COPY` straight into `products`, which skips what makes `INSERT_MANY` slower
    /// per row (arrays to unnest, a speculative insert for `ON CONFLICT`, a row returned for
    /// each): all of `rows` go in, or none. It runs under a savepoint, so that a row breaking a
    /// rule (a taken slug or sku, a reference deleted meanwhile), which fails the `COPY` and
    /// would abort the transaction, only undoes the `COPY`; a batch that refers to a category
    /// or user that is not live, which the foreign keys would let through, is not copied.
    /// Either way `INSERT_MANY` then says which row breaks which rule. A `COPY` the server
    /// refuses as unsupported (0A000: row-level security on `products`, an engine without
    /// binary `COPY`) is undone the same way and the batch goes in by `INSERT_MANY`. Batches
    /// smaller than [`COPY_FROM_ROWS`] skip it.
    async fn insert_fast(
        session: &mut Session,
        rows: &[Self],
        created_at: Timestamp,
    ) -> Result<bool> {
        if rows.len() < COPY_FROM_ROWS || session.refers_to_dead_rows(rows).await? {
            return Ok(false);
        }
        let data = copy_data(rows, created_at).map_err(|e| map_error(sqlx::Error::Encode(e)))?;
        session.open_savepoint(COPY_SAVEPOINT).await?;
        match session.copy_in(COPY_PRODUCTS, &data).await {
            Ok(_) => {
                session.release_savepoint(COPY_SAVEPOINT).await?;
                Ok(true)
            }
            Err(Error::Conflict { .. } | Error::NotFound { .. } | Error::Validation { .. }) => {
                session.roll_back_to_savepoint(COPY_SAVEPOINT).await?;
                Ok(false)
            }
            // `COPY` refused where `INSERT` is not: row-level security on the table (PostgreSQL
            // refuses `COPY FROM` under it), an engine without binary `COPY`.
            Err(e) if sqlstate(&e).as_deref() == Some(FEATURE_NOT_SUPPORTED) => {
                session.roll_back_to_savepoint(COPY_SAVEPOINT).await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &ProductFilter) {
        if let Some(status) = filter.status {
            qb.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(category) = filter.category_id {
            // A deleted category filters like an absent one.
            qb.push(" AND category_id = ")
                .push_bind(category.as_uuid())
                .push(" AND EXISTS (SELECT 1 FROM categories c WHERE c.id = ")
                .push_bind(category.as_uuid())
                .push(" AND c.deleted_at IS NULL)");
        }
        if let Some(search) = &filter.search {
            // Served by the trigram index on search_text. The pattern escapes `%`, `_` and `\`
            // with a backslash, LIKE's default escape on every engine; CockroachDB does not use
            // its trigram index for a LIKE with an ESCAPE clause.
            qb.push(" AND search_text LIKE ")
                .push_bind(stockroom_core::adapter::like_pattern(search));
        }
    }

    fn bind_insert<'q>(query: PgQuery<'q>, row: &'q Self) -> PgQuery<'q> {
        query
            .bind(row.id.as_uuid())
            .bind(&row.name)
            .bind(&row.slug)
            .bind(&row.sku)
            .bind(&row.description)
            .bind(row.status.as_str())
            .bind(row.stock)
            .bind(row.category_id.map(Uuid::from))
            .bind(row.created_by.map(Uuid::from))
            .bind(row.created_at)
            .bind(row.search_document())
    }

    fn bind_insert_many<'q>(query: PgQuery<'q>, rows: &'q [Self]) -> PgQuery<'q> {
        query
            .bind(rows.iter().map(|p| p.id.as_uuid()).collect::<Vec<_>>())
            .bind(rows.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|p| p.slug.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|p| p.description.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|p| p.status.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|p| p.stock).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|p| p.category_id.map(Uuid::from))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|p| p.created_by.map(Uuid::from))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(Product::search_document)
                    .collect::<Vec<_>>(),
            )
    }

    async fn why_not_inserted(
        session: &mut Session,
        row: &Self,
        _except: &[Self::Id],
    ) -> Result<Error> {
        session.why_product_not_inserted(row).await
    }

    /// Only the fields the patch names (the search document: see
    /// [`PgEntity::derived_set`]).
    fn push_set(qb: &mut QueryBuilder<Postgres>, patch: &ProductPatch) {
        if let Some(name) = patch.name() {
            qb.push(", name = ").push_bind(name.to_owned());
        }
        if let Some(slug) = patch.slug() {
            qb.push(", slug = ").push_bind(slug.to_owned());
        }
        if let Some(sku) = patch.sku() {
            qb.push(", sku = ").push_bind(sku.to_owned());
        }
        if let Some(description) = patch.description() {
            qb.push(", description = ")
                .push_bind(description.map(str::to_owned));
        }
        if let Some(status) = patch.status() {
            qb.push(", status = ").push_bind(status.as_str());
        }
        if let Some(category) = patch.category() {
            qb.push(", category_id = ")
                .push_bind(category.map(Uuid::from));
        }
    }

    /// The search document of each patched row, made by the core from the row the patch
    /// gives, when the patch changes name, sku or description. A patch that sets all three
    /// gives every row the same document, known without a round trip; otherwise the rows'
    /// other parts are read first, and locked, so that no concurrent update changes them
    /// before this one writes the document.
    async fn derived_set(
        session: &mut Session,
        ids: &[ProductId],
        patch: &ProductPatch,
    ) -> Result<Derived> {
        let column = SEARCH_TEXT;
        match (patch.name(), patch.sku(), patch.description()) {
            (None, None, None) => Ok(Derived::Nothing),
            (Some(name), Some(sku), Some(description)) => Ok(Derived::Same {
                column,
                value: stockroom_core::adapter::search_document(name, sku, description),
            }),
            _ => {
                let now = now();
                let (ids, values) = session
                    .lock_products(ids)
                    .await?
                    .into_iter()
                    .map(|mut row| {
                        row.apply(patch, now);
                        (row.id.as_uuid(), row.search_document())
                    })
                    .unzip();
                Ok(Derived::PerRow {
                    column,
                    ids,
                    values,
                })
            }
        }
    }

    /// The new category must be live, a new slug or sku free.
    fn push_guards(qb: &mut QueryBuilder<Postgres>, patch: &ProductPatch) {
        if let Some(Some(category)) = patch.category() {
            qb.push(" AND EXISTS (SELECT 1 FROM categories c WHERE c.id = ")
                .push_bind(category.as_uuid())
                .push(" AND c.deleted_at IS NULL)");
        }
        if let Some(slug) = patch.slug() {
            qb.push(" AND NOT EXISTS (SELECT 1 FROM products o WHERE o.slug = ")
                .push_bind(slug.to_owned())
                .push(" AND o.deleted_at IS NULL AND o.id <> products.id)");
        }
        if let Some(sku) = patch.sku() {
            qb.push(" AND NOT EXISTS (SELECT 1 FROM products o WHERE o.sku = ")
                .push_bind(sku.to_owned())
                .push(" AND o.deleted_at IS NULL AND o.id <> products.id)");
        }
    }

    fn sets_unique(patch: &ProductPatch) -> bool {
        patch.slug().is_some() || patch.sku().is_some()
    }
}

impl PgWrite for Product {
    async fn update(
        session: &mut Session,
        id: ProductId,
        patch: &ProductPatch,
        expected_version: Option<i64>,
    ) -> Result<Product> {
        if let Some(updated) = session.update_row(id, patch, expected_version).await? {
            return Ok(updated);
        }
        let why = session
            .why_products_not_updated(&[id], patch, expected_version)
            .await?;
        Err(why.unwrap_or_else(|| Error::not_found(EntityKind::Product, id)))
    }

    async fn update_many(
        session: &mut Session,
        ids: &[ProductId],
        patch: &ProductPatch,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let changed = session.update_rows::<Product>(ids, patch).await?;
        let guarded = patch.slug().is_some()
            || patch.sku().is_some()
            || matches!(patch.category(), Some(Some(_)));
        if changed > 0 || !guarded {
            return Ok(changed);
        }
        match session.why_products_not_updated(ids, patch, None).await? {
            Some(error) => Err(error),
            None => Ok(0),
        }
    }

    async fn restore(session: &mut Session, id: ProductId) -> Result<bool> {
        if session.restore_row::<Product>(id).await? {
            return Ok(true);
        }
        let query = sqlx::query(WHY_NOT_RESTORED).bind(id.as_uuid());
        let Some(row) = session.fetch_optional(WHY_NOT_RESTORED, query).await? else {
            return session
                .exists_or_not_found::<Product>(id)
                .await
                .map(|()| false);
        };
        let why = WhyNotRestored::from_row(&row).map_err(map_error)?;
        Err(if why.slug_taken {
            Error::Conflict {
                constraint: Constraint::ProductSlug,
            }
        } else if why.sku_taken {
            Error::Conflict {
                constraint: Constraint::ProductSku,
            }
        } else {
            raced("the product")
        })
    }
}

const BY_SLUG: &str = concat!(
    "SELECT ",
    product_columns!(""),
    " FROM products WHERE slug = $1 AND deleted_at IS NULL"
);
const BY_SKU: &str = concat!(
    "SELECT ",
    product_columns!(""),
    " FROM products WHERE sku = $1 AND deleted_at IS NULL"
);
/// The live product `$1` with its live category (columns aliased `c_<column>`, see
/// [`JoinedCategoryRow`]) and creator (`u_<column>`, see [`JoinedUserRow`]).
const WITH_RELATIONS: &str = concat!(
    "SELECT ",
    product_columns!("p."),
    ", ",
    "c.id AS c_id, c.name AS c_name, c.slug AS c_slug, c.created_at AS c_created_at, ",
    "c.updated_at AS c_updated_at, c.deleted_at AS c_deleted_at, c.version AS c_version, ",
    "u.id AS u_id, u.email AS u_email, u.display_name AS u_display_name, ",
    "u.created_at AS u_created_at, u.updated_at AS u_updated_at, ",
    "u.deleted_at AS u_deleted_at, u.version AS u_version ",
    "FROM products p ",
    "LEFT JOIN categories c ON c.id = p.category_id AND c.deleted_at IS NULL ",
    "LEFT JOIN users u ON u.id = p.created_by AND u.deleted_at IS NULL ",
    "WHERE p.id = $1 AND p.deleted_at IS NULL"
);
/// Why a product row was not inserted: which reference is not live, which value is taken (see
/// [`WhyNotInserted`]).
const WHY_NOT_INSERTED: &str = concat!(
    "SELECT ",
    "($1::uuid IS NOT NULL AND NOT EXISTS ",
    "(SELECT 1 FROM categories WHERE id = $1 AND deleted_at IS NULL)) AS category_missing, ",
    "($2::uuid IS NOT NULL AND NOT EXISTS ",
    "(SELECT 1 FROM users WHERE id = $2 AND deleted_at IS NULL)) AS creator_missing, ",
    "EXISTS (SELECT 1 FROM products WHERE slug = $3 AND deleted_at IS NULL) AS slug_taken, ",
    "EXISTS (SELECT 1 FROM products WHERE sku = $4 AND deleted_at IS NULL) AS sku_taken, ",
    "EXISTS (SELECT 1 FROM products WHERE id = $5) AS id_taken"
);

/// The row of [`WHY_NOT_INSERTED`].
#[derive(FromRow)]
struct WhyNotInserted {
    category_missing: bool,
    creator_missing: bool,
    slug_taken: bool,
    sku_taken: bool,
    id_taken: bool,
}

/// Why an update of live products `$1` did not apply (see [`WhyNotUpdated`]).
const WHY_NOT_UPDATED: &str = concat!(
    "SELECT (SELECT max(version) FROM products WHERE id = ANY($1) AND deleted_at IS NULL) ",
    "AS version, ",
    "($2::uuid IS NOT NULL AND NOT EXISTS ",
    "(SELECT 1 FROM categories WHERE id = $2 AND deleted_at IS NULL)) AS category_missing, ",
    "($3::text IS NOT NULL AND EXISTS (SELECT 1 FROM products ",
    "WHERE slug = $3 AND deleted_at IS NULL AND id <> ALL($1))) AS slug_taken, ",
    "($4::text IS NOT NULL AND EXISTS (SELECT 1 FROM products ",
    "WHERE sku = $4 AND deleted_at IS NULL AND id <> ALL($1))) AS sku_taken, ",
    "(SELECT count(*) FROM products WHERE id = ANY($1) AND deleted_at IS NULL) AS live"
);

/// The row of [`WHY_NOT_UPDATED`].
#[derive(FromRow)]
struct WhyNotUpdated {
    /// The highest version among the live rows; `None` when none is live.
    version: Option<i64>,
    category_missing: bool,
    slug_taken: bool,
    sku_taken: bool,
    live: i64,
}

/// Which unique value of the deleted product `$1` a live product holds (see
/// [`WhyNotRestored`]); no row when `$1` is not a deleted product.
const WHY_NOT_RESTORED: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM products o WHERE o.slug = p.slug AND o.deleted_at IS NULL) ",
    "AS slug_taken, ",
    "EXISTS (SELECT 1 FROM products o WHERE o.sku = p.sku AND o.deleted_at IS NULL) ",
    "AS sku_taken ",
    "FROM products p WHERE p.id = $1 AND p.deleted_at IS NOT NULL"
);

/// The row of [`WHY_NOT_RESTORED`].
#[derive(FromRow)]
struct WhyNotRestored {
    slug_taken: bool,
    sku_taken: bool,
}
const ADJUST_STOCK: &str = concat!(
    "UPDATE products SET stock = stock + $2, updated_at = $3, version = version + 1 ",
    "WHERE id = $1 AND deleted_at IS NULL AND stock + $2 BETWEEN 0 AND $4 RETURNING ",
    product_columns!("")
);
const STOCK_OF: &str = "SELECT stock FROM products WHERE id = $1 AND deleted_at IS NULL";
const LOCK: &str = concat!(
    "SELECT ",
    product_columns!(""),
    " FROM products WHERE id = ANY($1) AND deleted_at IS NULL ORDER BY id FOR UPDATE"
);

/// `rows`, created at `created_at`, in `COPY`'s binary format: a header, one tuple per row (its
/// field count, then each field's length and bytes, -1 for NULL), a trailer. Each field is in
/// the binary form sqlx binds it in, which is the one `COPY` reads.
fn copy_data(rows: &[Product], created_at: Timestamp) -> std::result::Result<Vec<u8>, BoxDynError> {
    const FIELDS: i16 = 12;
    let mut buf = PgArgumentBuffer::default();
    // Signature, flags (no OIDs), header extension length.
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
    for p in rows {
        buf.extend_from_slice(&FIELDS.to_be_bytes());
        put_field(&mut buf, p.id.as_uuid())?;
        put_field(&mut buf, p.name.as_str())?;
        put_field(&mut buf, p.slug.as_str())?;
        put_field(&mut buf, p.sku.as_str())?;
        put_field(&mut buf, p.description.as_deref())?;
        put_field(&mut buf, p.status.as_str())?;
        put_field(&mut buf, p.stock)?;
        put_field(&mut buf, p.category_id.map(Uuid::from))?;
        put_field(&mut buf, p.created_by.map(Uuid::from))?;
        put_field(&mut buf, p.search_document())?;
        put_field(&mut buf, created_at)?;
        put_field(&mut buf, created_at)?;
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(std::mem::take(&mut *buf))
}

/// Appends `value` to a `COPY` tuple: its length, then its binary form, or -1 for NULL.
fn put_field<'q, T: Encode<'q, Postgres>>(
    buf: &mut PgArgumentBuffer,
    value: T,
) -> std::result::Result<(), BoxDynError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let length = match value.encode_by_ref(buf)? {
        IsNull::Yes => -1,
        IsNull::No => i32::try_from(buf.len() - start - 4)?,
    };
    buf[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

impl Session {
    /// Locks the live products among `ids` in id order (see `ProductRepository::lock`).
    async fn lock_products(&mut self, ids: &[ProductId]) -> Result<Vec<Product>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .fetch_all(LOCK, sqlx::query(LOCK).bind(uuids(ids)))
            .await?;
        rows.iter().map(Product::decode).collect()
    }

    /// Whether a row of `rows` refers to a category or a user that is not live.
    async fn refers_to_dead_rows(&mut self, rows: &[Product]) -> Result<bool> {
        let distinct = |ids: Vec<Uuid>| -> Vec<Uuid> {
            let set: std::collections::BTreeSet<Uuid> = ids.into_iter().collect();
            set.into_iter().collect()
        };
        let categories = distinct(
            rows.iter()
                .filter_map(|p| p.category_id.map(Uuid::from))
                .collect(),
        );
        let creators = distinct(
            rows.iter()
                .filter_map(|p| p.created_by.map(Uuid::from))
                .collect(),
        );
        if categories.is_empty() && creators.is_empty() {
            return Ok(false);
        }
        let query = sqlx::query(DEAD_REFERENCE).bind(categories).bind(creators);
        let row = self.fetch_one(DEAD_REFERENCE, query).await?;
        column(&row, "dead")
    }

    /// Why `product` (whose insert did nothing) was not inserted.
    async fn why_product_not_inserted(&mut self, product: &Product) -> Result<Error> {
        let query = sqlx::query(WHY_NOT_INSERTED)
            .bind(product.category_id.map(Uuid::from))
            .bind(product.created_by.map(Uuid::from))
            .bind(&product.slug)
            .bind(&product.sku)
            .bind(product.id.as_uuid());
        let row = self.fetch_one(WHY_NOT_INSERTED, query).await?;
        let why = WhyNotInserted::from_row(&row).map_err(map_error)?;
        Ok(if why.category_missing {
            let id = product.category_id.map(Uuid::from).unwrap_or_default();
            Error::not_found(EntityKind::Category, id)
        } else if why.creator_missing {
            let id = product.created_by.map(Uuid::from).unwrap_or_default();
            Error::not_found(EntityKind::User, id)
        } else if why.slug_taken {
            Error::Conflict {
                constraint: Constraint::ProductSlug,
            }
        } else if why.sku_taken {
            Error::Conflict {
                constraint: Constraint::ProductSku,
            }
        } else if why.id_taken {
            Error::Conflict {
                constraint: Constraint::PrimaryKey,
            }
        } else {
            raced("a referenced row")
        })
    }

    /// Why an update of `ids` with `patch` changed nothing: `Ok(None)` when none of them is
    /// live (or the version did not match, for a single update with `expected`).
    async fn why_products_not_updated(
        &mut self,
        ids: &[ProductId],
        patch: &ProductPatch,
        expected: Option<i64>,
    ) -> Result<Option<Error>> {
        let category = patch.category().flatten();
        let query = sqlx::query(WHY_NOT_UPDATED)
            .bind(uuids(ids))
            .bind(category.map(Uuid::from))
            .bind(patch.slug())
            .bind(patch.sku());
        let row = self.fetch_one(WHY_NOT_UPDATED, query).await?;
        let why = WhyNotUpdated::from_row(&row).map_err(map_error)?;
        let Some(version) = why.version else {
            return Ok(None);
        };
        if let (Some(expected), [id]) = (expected, ids) {
            if expected != version {
                return Ok(Some(Error::stale_version(
                    EntityKind::Product,
                    *id,
                    expected,
                    version,
                )));
            }
        }
        let unique_change = patch.slug().is_some() || patch.sku().is_some();
        Ok(Some(if why.category_missing {
            Error::not_found(
                EntityKind::Category,
                category.map(Uuid::from).unwrap_or_default(),
            )
        } else if why.slug_taken || (unique_change && why.live > 1) {
            // Two of the rows cannot both take the new slug (or sku).
            if patch.slug().is_some() {
                Error::Conflict {
                    constraint: Constraint::ProductSlug,
                }
            } else {
                Error::Conflict {
                    constraint: Constraint::ProductSku,
                }
            }
        } else if why.sku_taken {
            Error::Conflict {
                constraint: Constraint::ProductSku,
            }
        } else {
            raced("the product")
        }))
    }
}

#[async_trait]
impl ProductReader for Session {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>> {
        self.get_row_by::<Product>(BY_SLUG, slug).await
    }

    async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>> {
        self.get_row_by::<Product>(BY_SKU, sku).await
    }

    async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>> {
        let query = sqlx::query(WITH_RELATIONS).bind(id.as_uuid());
        let Some(row) = self.fetch_optional(WITH_RELATIONS, query).await? else {
            return Ok(None);
        };
        // A relation that is not live joins as NULLs.
        let category = match column::<Option<Uuid>>(&row, "c_id")? {
            Some(_) => Some(decode::<JoinedCategoryRow, _>(&row)?),
            None => None,
        };
        let creator = match column::<Option<Uuid>>(&row, "u_id")? {
            Some(_) => Some(decode::<JoinedUserRow, _>(&row)?),
            None => None,
        };
        Ok(Some(ProductWithRelations {
            product: Product::decode(&row)?,
            category,
            creator,
        }))
    }

    async fn search(&mut self, filter: &ProductFilter, page: Page) -> Result<SearchPage<Product>> {
        // One statement: the total comes from a count over the matching rows, joined to the
        // page so that a page past the end still carries it (one row of NULLs).
        let mut qb = QueryBuilder::new("WITH matched AS (SELECT ");
        qb.push(product_columns!(""))
            .push(" FROM products WHERE deleted_at IS NULL");
        Product::push_filter(&mut qb, filter);
        qb.push("), page AS (SELECT * FROM matched ORDER BY created_at, id LIMIT ")
            .push_bind(limit_i64(page.limit()))
            .push(" OFFSET ")
            .push_bind(offset_i64(page))
            .push(
                ") SELECT page.*, total.total FROM (SELECT count(*) AS total FROM matched) AS total \
                 LEFT JOIN page ON true ORDER BY page.created_at, page.id",
            );
        let sql = qb.sql();
        let rows = self.fetch_all(sql.as_str(), qb.build()).await?;
        let mut total = 0;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            total = column(row, "total")?;
            if column::<Option<Uuid>>(row, "id")?.is_some() {
                items.push(Product::decode(row)?);
            }
        }
        Ok(SearchPage {
            items,
            total: count_u64(total),
        })
    }
}

#[async_trait]
impl ProductRepository for Session {
    async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product> {
        let query = sqlx::query(ADJUST_STOCK)
            .bind(id.as_uuid())
            .bind(delta.get())
            .bind(now())
            .bind(MAX_STOCK);
        if let Some(row) = self.fetch_optional(ADJUST_STOCK, query).await? {
            return Product::decode(&row);
        }
        let query = sqlx::query(STOCK_OF).bind(id.as_uuid());
        match self.fetch_optional(STOCK_OF, query).await? {
            None => Err(Error::not_found(EntityKind::Product, id)),
            Some(row) => {
                let available: i64 = column(&row, "stock")?;
                if available + delta.get() > MAX_STOCK {
                    Err(Error::validation(
                        "stock",
                        Rule::OutOfRange {
                            min: 0,
                            max: MAX_STOCK,
                        },
                    ))
                } else if available + delta.get() >= 0 {
                    Err(raced("the product's stock"))
                } else {
                    Err(Error::InsufficientStock {
                        product: id,
                        available,
                        requested: -delta.get(),
                    })
                }
            }
        }
    }

    async fn lock(&mut self, ids: &[ProductId]) -> Result<Vec<Product>> {
        self.lock_products(ids).await
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use sqlx::Connection;
    use stockroom_core::{NewProduct, ProductPatch, Store};

    use super::*;
    use crate::testing::TestDatabase;

    /// The stored search document of each of `ids`, beside the one the core makes of the row.
    async fn documents(db: &TestDatabase, store: &crate::PostgresStore, ids: &[ProductId]) {
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let mut read = store.read().await.unwrap();
        for &id in ids {
            let product = read.products().require(id).await.unwrap();
            let stored: String =
                sqlx::query_scalar("SELECT search_text FROM products WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(stored, product.search_document(), "{product:?}");
        }
        conn.close().await.unwrap();
    }

    /// Whatever fields an update names (one text field, all three, the description cleared, none
    /// of them; one row or many), the stored search document is the core's
    /// `search_document` of the updated row, byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_stores_the_cores_search_document_of_the_updated_row() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut uow = store.begin().await.unwrap();
        let mut ids = Vec::new();
        for tag in ["a", "b", "c"] {
            let new = NewProduct::new(
                &format!("Straße {tag}"),
                tag,
                &format!("SKU-{}", tag.to_uppercase()),
            )
            .unwrap()
            .with_description("Ǆ ΣΑΣ")
            .unwrap();
            ids.push(uow.products().create(new).await.unwrap().id);
        }
        let patches = [
            ProductPatch::new().with_name("ÉCOLE Ⅻ").unwrap(),
            ProductPatch::new().with_sku("NEW-SKU").unwrap(),
            ProductPatch::new().with_description(Some("ﬁn ǅ")).unwrap(),
            ProductPatch::new().with_description(None).unwrap(),
            ProductPatch::new()
                .with_name("All")
                .unwrap()
                .with_sku("ALL-1")
                .unwrap()
                .with_description(Some("Three ß"))
                .unwrap(),
            ProductPatch::new().with_status(stockroom_core::ProductStatus::Active),
        ];
        for patch in &patches {
            uow.products().update(ids[0], patch, None).await.unwrap();
            let unique_free = patch.sku().is_none();
            if unique_free {
                let changed = uow.products().update_many(&ids[1..], patch).await.unwrap();
                assert_eq!(changed, 2, "{patch:?}");
            }
        }
        uow.commit().await.unwrap();
        documents(&db, &store, &ids).await;
        store.close().await;
        db.drop_now().await;
    }
}

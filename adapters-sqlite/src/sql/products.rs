//! Products: the `products` table, its row mapping and filter, and the product's own queries
//! (relations, search with its total, the stock adjustment, row locks) and repository port.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::Row;
use stockroom_core::time;
use stockroom_core::{
    Category, CategoryId, Constraint, EntityKind, Error, Page, Product, ProductFilter, ProductId,
    ProductReader, ProductRepository, ProductWithRelations, Result, Rule, SearchPage, StockDelta,
    User, UserId, MAX_STOCK,
};
use uuid::Uuid;

use super::codec::{blob, meta_values, micros, opt_blob, opt_text, text, RowReader};
use super::generic::{
    columns, count, filter_where, get_many, page_params, query, query_first, query_rows, read_row,
    require_live,
};
use super::{Table, Where};
use crate::conn::{Conn, Cost, Db};
use crate::error::map;

impl Table for Product {
    table_columns!(
        "products": "id", "name", "slug", "sku", "description", "status", "stock",
        "category_id", "created_by";
        derived "search_text"
    );

    fn read(row: &mut RowReader<'_, '_>) -> rusqlite::Result<Self> {
        let id = ProductId::from_uuid(row.uuid()?);
        let name = row.get()?;
        let slug = row.get()?;
        let sku = row.get()?;
        let description = row.get()?;
        let status = row.parsed("product status", |s| s.parse().ok())?;
        let stock = row.get()?;
        let category_id = row.opt_uuid()?.map(CategoryId::from_uuid);
        let created_by = row.opt_uuid()?.map(UserId::from_uuid);
        let (created_at, updated_at, deleted_at, version) = row.meta()?;
        Ok(Product {
            id,
            name,
            slug,
            sku,
            description,
            status,
            stock,
            category_id,
            created_by,
            created_at,
            updated_at,
            deleted_at,
            version,
        })
    }

    fn values(&self, out: &mut Vec<Value>) {
        out.extend([
            blob(self.id),
            text(&self.name),
            text(&self.slug),
            text(&self.sku),
            opt_text(self.description.as_deref()),
            text(self.status.as_str()),
            Value::Integer(self.stock),
            opt_blob(self.category_id),
            opt_blob(self.created_by),
        ]);
        out.extend(meta_values(self));
        out.push(Value::Text(self.search_document()));
    }

    fn filter(filter: &ProductFilter, w: &mut Where) {
        if let Some(s) = filter.status {
            w.and("status = ?", text(s.as_str()));
        }
        if let Some(c) = filter.category_id {
            // A deleted category filters like an absent one.
            w.and(
                "category_id = ? AND EXISTS (SELECT 1 FROM categories c \
                 WHERE c.id = products.category_id AND c.deleted_at IS NULL)",
                blob(c),
            );
        }
        if let Some(q) = &filter.search {
            w.and(
                "search_text LIKE ? ESCAPE '\\'",
                Value::Text(stockroom_core::adapter::like_pattern(q)),
            );
        }
    }

    fn check_new_refs(conn: &Db<'_>, rows: &[Self]) -> Result<()> {
        require_live::<Category>(conn, rows.iter().filter_map(|r| r.category_id))?;
        require_live::<User>(conn, rows.iter().filter_map(|r| r.created_by))
    }

    fn check_patch_refs(conn: &Db<'_>, patch: &Self::Patch) -> Result<()> {
        require_live::<Category>(conn, patch.category().flatten())
    }

    fn unique_columns(&self) -> Vec<(Constraint, &'static str, Value)> {
        vec![
            (Constraint::ProductSlug, "slug = ?", text(&self.slug)),
            (Constraint::ProductSku, "sku = ?", text(&self.sku)),
        ]
    }
}

/// The live product with its live category and creator: one statement with two outer joins.
fn with_relations(conn: &Db<'_>, id: ProductId) -> Result<Option<ProductWithRelations>> {
    let sql = format!(
        "SELECT {}, {}, {} FROM products p \
         LEFT JOIN categories c ON c.id = p.category_id AND c.deleted_at IS NULL \
         LEFT JOIN users u ON u.id = p.created_by AND u.deleted_at IS NULL \
         WHERE p.id = ? AND p.deleted_at IS NULL",
        columns::<Product>(Some("p")),
        columns::<Category>(Some("c")),
        columns::<User>(Some("u")),
    );
    // Each table's columns follow the one before: their offsets are the widths of the lists.
    let category_at = Product::COLUMNS.len();
    let creator_at = category_at + Category::COLUMNS.len();
    query_first(conn, &sql, id.as_uuid().as_bytes(), |r| {
        Ok(ProductWithRelations {
            product: read_row(r, 0)?,
            category: read_joined(r, category_at)?,
            creator: read_joined(r, creator_at)?,
        })
    })
}

/// The row of an outer join from column `at` on: `None` when the join found no row (its id is
/// `NULL`).
fn read_joined<E: Table>(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<E>> {
    if RowReader::new(row, at).next_is_null()? {
        return Ok(None);
    }
    read_row(row, at).map(Some)
}

/// A page of matching products and the number that match in all: one statement with a
/// `COUNT(*) OVER ()` window; only a page past the end falls back to a count statement, in the
/// same read transaction as the page.
fn search(conn: &Db<'_>, filter: &ProductFilter, page: Page) -> Result<SearchPage<Product>> {
    let mut w = filter_where::<Product>(filter);
    let sql = format!(
        "SELECT {}, COUNT(*) OVER () FROM products WHERE deleted_at IS NULL{} \
         ORDER BY created_at, id LIMIT ? OFFSET ?",
        columns::<Product>(None),
        w.sql
    );
    page_params(page, &mut w.params);
    let total_at = Product::COLUMNS.len();
    let read = || -> Result<(Vec<Product>, u64)> {
        let rows = query(conn, &sql, &w.params, |r| {
            Ok((read_row::<Product>(r, 0)?, r.get::<_, i64>(total_at)?))
        })?;
        let total = rows.first().map_or(0, |(_, t)| *t as u64);
        Ok((rows.into_iter().map(|(p, _)| p).collect(), total))
    };
    if page.offset() == 0 {
        let (items, total) = read()?;
        return Ok(SearchPage { items, total });
    }
    let own_transaction = conn.is_autocommit();
    if own_transaction {
        conn.execute_batch("BEGIN DEFERRED").map_err(map)?;
    }
    let result = read().and_then(|(items, total)| {
        let total = if items.is_empty() {
            count::<Product>(conn, filter)?
        } else {
            total
        };
        Ok(SearchPage { items, total })
    });
    if own_transaction {
        conn.execute_batch("COMMIT").map_err(map)?;
    }
    result
}

/// Adds `delta` in one conditional `UPDATE … RETURNING`; on no row, one more read tells
/// "not live" from "insufficient stock" and "above the maximum".
fn adjust_stock(conn: &Db<'_>, id: ProductId, delta: StockDelta) -> Result<Product> {
    let sql = format!(
        "UPDATE products SET stock = stock + ?1, updated_at = ?2, version = version + 1 \
         WHERE id = ?3 AND deleted_at IS NULL AND stock + ?1 BETWEEN 0 AND ?4 RETURNING {}",
        columns::<Product>(None)
    );
    let params = [
        Value::Integer(delta.get()),
        micros(time::now()),
        blob(id),
        Value::Integer(MAX_STOCK),
    ];
    if let Some(p) = query_rows::<Product>(conn, &sql, &params)?.pop() {
        return Ok(p);
    }
    let stock: Option<i64> = query(
        conn,
        "SELECT stock FROM products WHERE id = ? AND deleted_at IS NULL",
        &[blob(id)],
        |r| r.get(0),
    )?
    .pop();
    match stock {
        None => Err(Error::not_found(EntityKind::Product, id)),
        Some(stock) if stock + delta.get() > MAX_STOCK => Err(Error::validation(
            "stock",
            Rule::OutOfRange {
                min: 0,
                max: MAX_STOCK,
            },
        )),
        Some(available) => Err(Error::InsufficientStock {
            product: id,
            available,
            requested: -delta.get(),
        }),
    }
}

/// The live products among `ids`, sorted by id: reading them is all a row lock needs under the
/// unit of work's write lock (see the [module docs](super)).
fn lock(conn: &Db<'_>, ids: &[ProductId]) -> Result<Vec<Product>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let mut rows = get_many::<Product>(conn, &ids)?;
    rows.sort_by_key(|p| p.id);
    Ok(rows)
}

#[async_trait]
impl ProductReader for Conn {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>> {
        self.by_column("slug", slug.to_owned()).await
    }

    async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>> {
        self.by_column("sku", sku.to_owned()).await
    }

    async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>> {
        self.read(Cost::Short, move |c| with_relations(c, id)).await
    }

    async fn search(&mut self, filter: &ProductFilter, page: Page) -> Result<SearchPage<Product>> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| search(c, &filter, page))
            .await
    }
}

#[async_trait]
impl ProductRepository for Conn {
    async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product> {
        self.run(Cost::Short, move |c| adjust_stock(c, id, delta))
            .await
    }

    async fn lock(&mut self, ids: &[ProductId]) -> Result<Vec<Product>> {
        let ids = ids.to_vec();
        self.read(Cost::of_batch(ids.len()), move |c| lock(c, &ids))
            .await
    }
}

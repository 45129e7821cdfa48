//! The rows of every table and the SQL of every operation, each written once.
//!
//! Everything here is synchronous and runs on a connection that one call owns for its duration,
//! inline or on a blocking thread (see `conn.rs`).

use std::collections::HashSet;

use rusqlite::types::{Type, Value};
use rusqlite::Row;
use stockroom_core::adapter::{check_stocks, key_taken_meanwhile};
use stockroom_core::time::{self, Timestamp};
use stockroom_core::{
    Category, CategoryFilter, CategoryId, Constraint, Cursor, Entity, EntityKind, Error,
    NewStockMovement, Page, Product, ProductFilter, ProductId, ProductWithRelations, RatingStats,
    Result, Review, ReviewFilter, ReviewId, Rule, SearchPage, StockDelta, StockMoved,
    StockMovement, StockMovementId, User, UserFilter, UserId, MAX_STOCK,
};
use uuid::Uuid;

use crate::conn::Db;
use crate::error::map;

/// SQLite's default bound on the parameters of one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMS: usize = 32_766;

/// The internal savepoint that makes a multi-statement write all-or-nothing.
const ATOMIC: &str = "stockroom_atomic";

pub(crate) fn blob(id: impl Into<Uuid>) -> Value {
    Value::Blob(id.into().as_bytes().to_vec())
}

fn opt_blob(id: Option<impl Into<Uuid>>) -> Value {
    id.map_or(Value::Null, blob)
}

fn micros(ts: Timestamp) -> Value {
    Value::Integer(stockroom_core::adapter::to_micros(ts))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

fn conversion(index: usize, ty: Type, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, ty, what.to_owned().into())
}

fn uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    Ok(Uuid::from_bytes(row.get::<_, [u8; 16]>(index)?))
}

fn opt_uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Uuid>> {
    Ok(row.get::<_, Option<[u8; 16]>>(index)?.map(Uuid::from_bytes))
}

fn ts_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    let us: i64 = row.get(index)?;
    stockroom_core::adapter::from_micros(us)
        .ok_or_else(|| conversion(index, Type::Integer, "timestamp out of range"))
}

fn opt_ts_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(us) => stockroom_core::adapter::from_micros(us)
            .map(Some)
            .ok_or_else(|| conversion(index, Type::Integer, "timestamp out of range")),
    }
}

/// `created_at, updated_at, deleted_at, version`: the bookkeeping columns every entity table
/// has, in this order.
type Meta = (Timestamp, Timestamp, Option<Timestamp>, i64);

/// Reads the bookkeeping columns from column `at` on.
fn meta_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Meta> {
    Ok((
        ts_at(row, at)?,
        ts_at(row, at + 1)?,
        opt_ts_at(row, at + 2)?,
        row.get(at + 3)?,
    ))
}

/// The values of the bookkeeping columns of `row`.
fn meta_values<E: Entity>(row: &E) -> [Value; 4] {
    [
        micros(row.created_at()),
        micros(row.updated_at()),
        row.deleted_at().map_or(Value::Null, micros),
        Value::Integer(row.version()),
    ]
}

/// `Table::NAME`, `Table::COLUMNS`, `Table::WRITE_COLUMNS` and `Table::GET_SQL` of a table
/// from its name, its own columns (then the bookkeeping ones) and the derived columns a write
/// stores after them, each listed once.
macro_rules! table_columns {
    ($name:literal: $first:literal $(, $own:literal)* $(; derived $($derived:literal),+)?) => {
        const NAME: &'static str = $name;
        const COLUMNS: &'static [&'static str] =
            &[$first, $($own,)* "created_at", "updated_at", "deleted_at", "version"];
        const WRITE_COLUMNS: &'static [&'static str] = &[
            $first, $($own,)* "created_at", "updated_at", "deleted_at", "version"
            $($(, $derived)+)?
        ];
        const GET_SQL: &'static str = concat!(
            "SELECT ", $first, $(", ", $own,)* ", created_at, updated_at, deleted_at, version",
            " FROM ", $name, " WHERE id = ? AND deleted_at IS NULL"
        );
    };
}

/// The extra conditions of a filter, with their parameters in order.
#[derive(Debug, Default)]
pub(crate) struct Where {
    sql: String,
    params: Vec<Value>,
}

impl Where {
    fn and(&mut self, clause: &str, value: Value) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self.params.push(value);
    }
}

/// A table that stores one kind of entity.
pub(crate) trait Table: Entity {
    const NAME: &'static str;
    /// The columns a read returns, in the order `read` expects.
    const COLUMNS: &'static [&'static str];
    /// The columns a write stores: `COLUMNS` and any derived column after them.
    const WRITE_COLUMNS: &'static [&'static str];
    /// The live row by id: the point read, its text built at compile time.
    const GET_SQL: &'static str;

    fn read(row: &Row<'_>, at: usize) -> rusqlite::Result<Self>;
    /// The values of `WRITE_COLUMNS`.
    fn values(&self, out: &mut Vec<Value>);
    fn filter(filter: &Self::Filter, w: &mut Where);
    /// Checks that every row a new row refers to is live.
    fn check_new_refs(_conn: &Db<'_>, _rows: &[Self]) -> Result<()> {
        Ok(())
    }
    /// Checks that every row a patch points to is live.
    fn check_patch_refs(_conn: &Db<'_>, _patch: &Self::Patch) -> Result<()> {
        Ok(())
    }
    /// The row's unique values, each with its constraint and the condition (with one `?`) that
    /// finds a row holding it, in the order the entity declares them. Only an entity with more
    /// than one needs them: see [`first_conflict`].
    fn unique_columns(&self) -> Vec<(Constraint, &'static str, Value)> {
        Vec::new()
    }
}

/// SQLite reports whichever unique index it happened to check first; every backend names the
/// first rule broken in a fixed order: rows in input order, each row's unique values in the order
/// the entity declares them (a product's slug before its sku). Runs only after a write failed on
/// a unique index.
fn first_conflict<E: Table>(conn: &Db<'_>, rows: &[E], error: Error) -> Error {
    if !matches!(error, Error::Conflict { .. }) {
        return error;
    }
    let mut earlier = HashSet::new();
    for row in rows {
        for (constraint, condition, value) in row.unique_columns() {
            let in_batch = !earlier.insert((constraint, format!("{value:?}")));
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {condition} AND deleted_at IS NULL \
                 AND id <> ?)",
                E::NAME
            );
            let taken = scalar::<bool>(conn, &sql, &[value, blob(row.id())]);
            if in_batch || taken.unwrap_or(false) {
                return Error::Conflict { constraint };
            }
        }
    }
    error
}

/// `alias.col, alias.col, …` for a select list.
fn columns<E: Table>(alias: Option<&str>) -> String {
    let mut s = String::new();
    for (i, c) in E::COLUMNS.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if let Some(a) = alias {
            s.push_str(a);
            s.push('.');
        }
        s.push_str(c);
    }
    s
}

fn query<T>(
    conn: &Db<'_>,
    sql: &str,
    params: &[Value],
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    conn.observe(sql, || {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), f)?;
        rows.collect::<rusqlite::Result<Vec<T>>>()
    })
    .map_err(map)
}

fn query_rows<E: Table>(conn: &Db<'_>, sql: &str, params: &[Value]) -> Result<Vec<E>> {
    query(conn, sql, params, |r| E::read(r, 0))
}

/// The first row of a lookup by a unique key: it steps once, where collecting every row would
/// step again only to find no second one. The key is bound as it is (an id as its 16 bytes, no
/// owned `Value`), since this is the point read.
fn query_first<T>(
    conn: &Db<'_>,
    sql: &str,
    key: impl rusqlite::ToSql,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.observe(sql, || {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([key])?;
        rows.next()?.map(f).transpose()
    })
    .map_err(map)
}

fn scalar<T: rusqlite::types::FromSql>(conn: &Db<'_>, sql: &str, params: &[Value]) -> Result<T> {
    conn.observe(sql, || {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row(rusqlite::params_from_iter(params), |r| r.get(0)))
    })
    .map_err(map)
}

fn execute(conn: &Db<'_>, sql: &str, params: &[Value]) -> Result<usize> {
    conn.observe(sql, || {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
    })
    .map_err(map)
}

/// `?, ?, …` with `n` parameters.
fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ", ?" });
    }
    s
}

fn page_params(page: Page, params: &mut Vec<Value>) {
    params.push(Value::Integer(i64::from(page.limit().get())));
    params.push(Value::Integer(page.offset() as i64));
}

/// Runs `f` all-or-nothing: inside a savepoint that is rolled back when `f` fails.
pub(crate) fn atomically<T>(conn: &Db<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch(&format!("SAVEPOINT {ATOMIC}"))
        .map_err(map)?;
    match f() {
        Ok(v) => {
            conn.execute_batch(&format!("RELEASE {ATOMIC}"))
                .map_err(map)?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch(&format!("ROLLBACK TO {ATOMIC}; RELEASE {ATOMIC}"))
                .map_err(map)?;
            Err(e)
        }
    }
}

/// Fails with `NotFound{E::KIND}` unless every id names a live row of `E`'s table.
fn require_live<E: Table>(conn: &Db<'_>, ids: impl IntoIterator<Item = E::Id>) -> Result<()> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE id = ? AND deleted_at IS NULL)",
        E::NAME
    );
    let mut seen = HashSet::new();
    for id in ids.into_iter().map(Into::<Uuid>::into) {
        if seen.insert(id) && !scalar::<bool>(conn, &sql, &[blob(id)])? {
            return Err(Error::not_found(E::KIND, id));
        }
    }
    Ok(())
}

// ---- The generic operations ----------------------------------------------------------------

pub(crate) fn get<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<Option<E>> {
    query_first(conn, E::GET_SQL, id.as_bytes(), |r| E::read(r, 0))
}

/// The distinct ids, in a stable order.
fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub(crate) fn get_many<E: Table>(conn: &Db<'_>, ids: &[Uuid]) -> Result<Vec<E>> {
    let ids = distinct(ids);
    let mut rows = Vec::with_capacity(ids.len());
    // One statement unless the ids exceed SQLite's parameter bound.
    for chunk in ids.chunks(MAX_PARAMS) {
        let sql = format!(
            "SELECT {} FROM {} WHERE id IN ({}) AND deleted_at IS NULL ORDER BY created_at, id",
            columns::<E>(None),
            E::NAME,
            placeholders(chunk.len())
        );
        let params: Vec<Value> = chunk.iter().map(|id| blob(*id)).collect();
        rows.extend(query_rows::<E>(conn, &sql, &params)?);
    }
    if ids.len() > MAX_PARAMS {
        rows.sort_by_key(|r| (r.created_at(), r.id()));
    }
    Ok(rows)
}

fn live_where<E: Table>(filter: &E::Filter) -> Where {
    let mut w = Where::default();
    E::filter(filter, &mut w);
    w
}

pub(crate) fn list<E: Table>(conn: &Db<'_>, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
    let mut w = live_where::<E>(filter);
    let sql = format!(
        "SELECT {} FROM {} WHERE deleted_at IS NULL{} ORDER BY created_at, id LIMIT ? OFFSET ?",
        columns::<E>(None),
        E::NAME,
        w.sql
    );
    page_params(page, &mut w.params);
    query_rows::<E>(conn, &sql, &w.params)
}

/// Up to `limit` rows after `after` (`limit` is the overfetching size).
pub(crate) fn list_after<E: Table>(
    conn: &Db<'_>,
    filter: &E::Filter,
    after: Option<Cursor>,
    limit: u32,
) -> Result<Vec<E>> {
    let mut w = live_where::<E>(filter);
    if let Some(c) = after {
        w.sql.push_str(" AND (created_at, id) > (?, ?)");
        w.params.push(micros(c.created_at()));
        w.params.push(blob(c.id()));
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE deleted_at IS NULL{} ORDER BY created_at, id LIMIT ?",
        columns::<E>(None),
        E::NAME,
        w.sql
    );
    w.params.push(Value::Integer(i64::from(limit)));
    query_rows::<E>(conn, &sql, &w.params)
}

pub(crate) fn count<E: Table>(conn: &Db<'_>, filter: &E::Filter) -> Result<u64> {
    let w = live_where::<E>(filter);
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE deleted_at IS NULL{}",
        E::NAME,
        w.sql
    );
    scalar::<i64>(conn, &sql, &w.params).map(|n| n as u64)
}

pub(crate) fn exists<E: Table>(conn: &Db<'_>, filter: &E::Filter) -> Result<bool> {
    let w = live_where::<E>(filter);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE deleted_at IS NULL{})",
        E::NAME,
        w.sql
    );
    scalar(conn, &sql, &w.params)
}

pub(crate) fn list_deleted<E: Table>(conn: &Db<'_>, page: Page) -> Result<Vec<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE deleted_at IS NOT NULL ORDER BY created_at, id LIMIT ? OFFSET ?",
        columns::<E>(None),
        E::NAME
    );
    let mut params = Vec::with_capacity(2);
    page_params(page, &mut params);
    query_rows::<E>(conn, &sql, &params)
}

fn insert_sql<E: Table>(rows: usize) -> String {
    let one = format!("({})", placeholders(E::WRITE_COLUMNS.len()));
    let mut values = String::with_capacity(rows * (one.len() + 2));
    for i in 0..rows {
        if i > 0 {
            values.push_str(", ");
        }
        values.push_str(&one);
    }
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        E::NAME,
        E::WRITE_COLUMNS.join(", "),
        values
    )
}

pub(crate) fn create<E: Table>(conn: &Db<'_>, new: E::New) -> Result<E> {
    let row = E::create(new, time::now());
    E::check_new_refs(conn, std::slice::from_ref(&row))?;
    let mut params = Vec::with_capacity(E::WRITE_COLUMNS.len());
    row.values(&mut params);
    execute(conn, &insert_sql::<E>(1), &params)
        .map_err(|e| first_conflict(conn, std::slice::from_ref(&row), e))?;
    Ok(row)
}

/// Inserts `new` with one multi-row `INSERT` per batch of rows that fits SQLite's parameter
/// bound, all or nothing.
pub(crate) fn create_many<E: Table>(conn: &Db<'_>, new: Vec<E::New>) -> Result<Vec<E>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let now = time::now();
    let rows: Vec<E> = new.into_iter().map(|n| E::create(n, now)).collect();
    let per_batch = MAX_PARAMS / E::WRITE_COLUMNS.len();
    let insert_all = || {
        E::check_new_refs(conn, &rows)?;
        let mut params = Vec::with_capacity(per_batch.min(rows.len()) * E::WRITE_COLUMNS.len());
        for batch in rows.chunks(per_batch) {
            params.clear();
            for row in batch {
                row.values(&mut params);
            }
            execute(conn, &insert_sql::<E>(batch.len()), &params)?;
        }
        Ok(())
    };
    let inserted = if rows.len() > per_batch {
        atomically(conn, insert_all)
    } else {
        // One statement: SQLite's statement rollback makes it all-or-nothing already.
        insert_all()
    };
    inserted.map_err(|e| first_conflict(conn, &rows, e))?;
    Ok(rows)
}

fn write_back<E: Table>(conn: &Db<'_>, row: &E) -> Result<()> {
    let mut params = Vec::with_capacity(E::WRITE_COLUMNS.len() + 1);
    row.values(&mut params);
    // Everything but the id (first column), which becomes the key.
    let id = params.remove(0);
    params.push(id);
    let sets: Vec<String> = E::WRITE_COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect();
    let sql = format!("UPDATE {} SET {} WHERE id = ?", E::NAME, sets.join(", "));
    execute(conn, &sql, &params)?;
    Ok(())
}

/// Reads the live row, applies the patch in Rust (the core's semantics) and writes it back. The
/// unit of work holds SQLite's write lock from its `BEGIN IMMEDIATE`, so nothing changes the row
/// in between.
pub(crate) fn update<E: Table>(
    conn: &Db<'_>,
    id: Uuid,
    patch: &E::Patch,
    expected_version: Option<i64>,
) -> Result<E> {
    let mut row = get::<E>(conn, id)?.ok_or_else(|| Error::not_found(E::KIND, id))?;
    if let Some(expected) = expected_version {
        if row.version() != expected {
            return Err(Error::stale_version(E::KIND, id, expected, row.version()));
        }
    }
    E::check_patch_refs(conn, patch)?;
    row.apply(patch, time::now());
    write_back(conn, &row).map_err(|e| first_conflict(conn, std::slice::from_ref(&row), e))?;
    Ok(row)
}

pub(crate) fn update_many<E: Table>(conn: &Db<'_>, ids: &[Uuid], patch: &E::Patch) -> Result<u64> {
    let mut rows = get_many::<E>(conn, ids)?;
    if rows.is_empty() {
        return Ok(0);
    }
    E::check_patch_refs(conn, patch)?;
    let now = time::now();
    atomically(conn, || {
        for row in &mut rows {
            row.apply(patch, now);
            write_back(conn, row)?;
        }
        Ok(rows.len() as u64)
    })
}

pub(crate) fn soft_delete<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<bool> {
    let sql = format!(
        "UPDATE {} SET deleted_at = ?1, updated_at = ?1, version = version + 1 \
         WHERE id = ?2 AND deleted_at IS NULL",
        E::NAME
    );
    let changed = execute(conn, &sql, &[micros(time::now()), blob(id)])? == 1;
    changed_or_known::<E>(conn, id, changed)
}

/// `changed`, or, when the write changed nothing, whether that is because the row `id` is in
/// the other state (false) or does not exist at all ([`Error::NotFound`]).
fn changed_or_known<E: Table>(conn: &Db<'_>, id: Uuid, changed: bool) -> Result<bool> {
    if changed {
        return Ok(true);
    }
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE id = ?)", E::NAME);
    if scalar::<bool>(conn, &sql, &[blob(id)])? {
        Ok(false)
    } else {
        Err(Error::not_found(E::KIND, id))
    }
}

pub(crate) fn restore<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<bool> {
    let sql = format!(
        "UPDATE {} SET deleted_at = NULL, updated_at = ?1, version = version + 1 \
         WHERE id = ?2 AND deleted_at IS NOT NULL",
        E::NAME
    );
    match execute(conn, &sql, &[micros(time::now()), blob(id)]) {
        Ok(changed) => changed_or_known::<E>(conn, id, changed == 1),
        Err(error) => {
            let row = trashed::<E>(conn, id)?;
            Err(first_conflict(conn, &Vec::from_iter(row), error))
        }
    }
}

/// The soft-deleted row `id`.
fn trashed<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<Option<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE id = ? AND deleted_at IS NOT NULL",
        columns::<E>(None),
        E::NAME
    );
    query_first(conn, &sql, id.as_bytes(), |r| E::read(r, 0))
}

pub(crate) fn hard_delete<E: Table>(conn: &Db<'_>, id: Uuid) -> Result<()> {
    let sql = format!("DELETE FROM {} WHERE id = ?", E::NAME);
    match execute(conn, &sql, &[blob(id)])? {
        1 => Ok(()),
        _ => Err(Error::not_found(E::KIND, id)),
    }
}

pub(crate) fn purge_deleted_before<E: Table>(conn: &Db<'_>, before: Timestamp) -> Result<u64> {
    let before = time::supported("before", before)?;
    let sql = format!(
        "DELETE FROM {} WHERE deleted_at IS NOT NULL AND deleted_at < ?",
        E::NAME
    );
    Ok(execute(conn, &sql, &[micros(before)])? as u64)
}

pub(crate) fn by_column<E: Table>(conn: &Db<'_>, column: &str, value: &str) -> Result<Option<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {column} = ? AND deleted_at IS NULL",
        columns::<E>(None),
        E::NAME
    );
    query_first(conn, &sql, value, |r| E::read(r, 0))
}

// ---- Products ------------------------------------------------------------------------------

impl Table for Product {
    table_columns!(
        "products": "id", "name", "slug", "sku", "description", "status", "stock",
        "category_id", "created_by";
        derived "search_text"
    );

    fn read(row: &Row<'_>, at: usize) -> rusqlite::Result<Self> {
        let (created_at, updated_at, deleted_at, version) = meta_at(row, at + 9)?;
        // Parsed from the row's own text: no `String` just to be dropped.
        let status = row
            .get_ref(at + 5)?
            .as_str()
            .map_err(|_| conversion(at + 5, Type::Text, "product status is not text"))?;
        Ok(Product {
            id: ProductId::from_uuid(uuid_at(row, at)?),
            name: row.get(at + 1)?,
            slug: row.get(at + 2)?,
            sku: row.get(at + 3)?,
            description: row.get(at + 4)?,
            status: status
                .parse()
                .map_err(|_| conversion(at + 5, Type::Text, "unknown product status"))?,
            stock: row.get(at + 6)?,
            category_id: opt_uuid_at(row, at + 7)?.map(CategoryId::from_uuid),
            created_by: opt_uuid_at(row, at + 8)?.map(UserId::from_uuid),
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
pub(crate) fn with_relations(conn: &Db<'_>, id: ProductId) -> Result<Option<ProductWithRelations>> {
    let sql = format!(
        "SELECT {}, {}, {} FROM products p \
         LEFT JOIN categories c ON c.id = p.category_id AND c.deleted_at IS NULL \
         LEFT JOIN users u ON u.id = p.created_by AND u.deleted_at IS NULL \
         WHERE p.id = ? AND p.deleted_at IS NULL",
        columns::<Product>(Some("p")),
        columns::<Category>(Some("c")),
        columns::<User>(Some("u")),
    );
    let c_at = Product::COLUMNS.len();
    let u_at = c_at + Category::COLUMNS.len();
    query_first(conn, &sql, id.as_uuid().as_bytes(), |r| {
        let category = match r.get_ref(c_at)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(Category::read(r, c_at)?),
        };
        let creator = match r.get_ref(u_at)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(User::read(r, u_at)?),
        };
        Ok(ProductWithRelations {
            product: Product::read(r, 0)?,
            category,
            creator,
        })
    })
}

/// A page of matching products and the number that match in all: one statement with a
/// `COUNT(*) OVER ()` window; only a page past the end falls back to a count statement, in the
/// same read transaction as the page.
pub(crate) fn search(
    conn: &Db<'_>,
    filter: &ProductFilter,
    page: Page,
) -> Result<SearchPage<Product>> {
    let mut w = live_where::<Product>(filter);
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
            Ok((Product::read(r, 0)?, r.get::<_, i64>(total_at)?))
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
pub(crate) fn adjust_stock(conn: &Db<'_>, id: ProductId, delta: StockDelta) -> Result<Product> {
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

/// The live products among `ids`, sorted by id. The unit of work already holds SQLite's single
/// write lock (`BEGIN IMMEDIATE`), which covers every row: reading them is all a row lock needs.
pub(crate) fn lock(conn: &Db<'_>, ids: &[ProductId]) -> Result<Vec<Product>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
    let mut rows = get_many::<Product>(conn, &ids)?;
    rows.sort_by_key(|p| p.id);
    Ok(rows)
}

// ---- Categories and users ------------------------------------------------------------------

impl Table for Category {
    table_columns!("categories": "id", "name", "slug");

    fn read(row: &Row<'_>, at: usize) -> rusqlite::Result<Self> {
        let (created_at, updated_at, deleted_at, version) = meta_at(row, at + 3)?;
        Ok(Category {
            id: CategoryId::from_uuid(uuid_at(row, at)?),
            name: row.get(at + 1)?,
            slug: row.get(at + 2)?,
            created_at,
            updated_at,
            deleted_at,
            version,
        })
    }

    fn values(&self, out: &mut Vec<Value>) {
        out.extend([blob(self.id), text(&self.name), text(&self.slug)]);
        out.extend(meta_values(self));
    }

    fn filter(filter: &CategoryFilter, w: &mut Where) {
        if let Some(s) = &filter.slug {
            w.and("slug = ?", text(s.as_str()));
        }
    }
}

impl Table for User {
    table_columns!("users": "id", "email", "display_name");

    fn read(row: &Row<'_>, at: usize) -> rusqlite::Result<Self> {
        let (created_at, updated_at, deleted_at, version) = meta_at(row, at + 3)?;
        Ok(User {
            id: UserId::from_uuid(uuid_at(row, at)?),
            email: row.get(at + 1)?,
            display_name: row.get(at + 2)?,
            created_at,
            updated_at,
            deleted_at,
            version,
        })
    }

    fn values(&self, out: &mut Vec<Value>) {
        out.extend([blob(self.id), text(&self.email), text(&self.display_name)]);
        out.extend(meta_values(self));
    }

    fn filter(filter: &UserFilter, w: &mut Where) {
        if let Some(e) = &filter.email {
            w.and("email = ?", text(e.as_str()));
        }
    }
}

// ---- Reviews -------------------------------------------------------------------------------

impl Table for Review {
    table_columns!("reviews": "id", "product_id", "author_id", "rating", "body");

    fn read(row: &Row<'_>, at: usize) -> rusqlite::Result<Self> {
        let (created_at, updated_at, deleted_at, version) = meta_at(row, at + 5)?;
        Ok(Review {
            id: ReviewId::from_uuid(uuid_at(row, at)?),
            product_id: ProductId::from_uuid(uuid_at(row, at + 1)?),
            author_id: UserId::from_uuid(uuid_at(row, at + 2)?),
            rating: row.get(at + 3)?,
            body: row.get(at + 4)?,
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
pub(crate) fn reviews_for_product(
    conn: &Db<'_>,
    product: ProductId,
    page: Page,
) -> Result<Vec<Review>> {
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
pub(crate) fn review_stats(conn: &Db<'_>, product: ProductId) -> Result<RatingStats> {
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

// ---- The ledger ----------------------------------------------------------------------------

/// The ledger's columns, in the order `read_movement` reads them: a macro, so that the statements
/// of a stock move are `concat!`ed once, at compile time.
macro_rules! movement_columns {
    () => {
        "id, source_id, target_id, quantity, idempotency_key, created_at"
    };
}

const MOVEMENT_COLUMNS: &str = movement_columns!();

fn read_movement(row: &Row<'_>) -> rusqlite::Result<StockMovement> {
    Ok(StockMovement {
        id: StockMovementId::from_uuid(uuid_at(row, 0)?),
        source_id: ProductId::from_uuid(uuid_at(row, 1)?),
        target_id: ProductId::from_uuid(uuid_at(row, 2)?),
        quantity: row.get(3)?,
        idempotency_key: row.get(4)?,
        created_at: ts_at(row, 5)?,
    })
}

pub(crate) fn movement(conn: &Db<'_>, id: StockMovementId) -> Result<Option<StockMovement>> {
    let sql = format!("SELECT {MOVEMENT_COLUMNS} FROM stock_movements WHERE id = ?");
    query_first(conn, &sql, id.as_uuid().as_bytes(), read_movement)
}

pub(crate) fn movement_by_key(conn: &Db<'_>, key: &str) -> Result<Option<StockMovement>> {
    let sql = concat!(
        "SELECT ",
        movement_columns!(),
        " FROM stock_movements WHERE idempotency_key = ?"
    );
    query_first(conn, sql, key, read_movement)
}

pub(crate) fn movements_for_product(
    conn: &Db<'_>,
    product: ProductId,
    page: Page,
) -> Result<Vec<StockMovement>> {
    let sql = format!(
        "SELECT {MOVEMENT_COLUMNS} FROM stock_movements WHERE source_id = ?1 OR target_id = ?1 \
         ORDER BY created_at, id LIMIT ?2 OFFSET ?3"
    );
    let mut params = vec![blob(product)];
    page_params(page, &mut params);
    query(conn, &sql, &params, read_movement)
}

pub(crate) fn movement_count(conn: &Db<'_>) -> Result<u64> {
    scalar::<i64>(conn, "SELECT COUNT(*) FROM stock_movements", &[]).map(|n| n as u64)
}

pub(crate) fn record_movement(conn: &Db<'_>, new: NewStockMovement) -> Result<StockMovement> {
    let m = new.into_entity(time::now());
    insert_movement(conn, &m)?;
    Ok(m)
}

fn insert_movement(conn: &Db<'_>, m: &StockMovement) -> Result<()> {
    let sql = concat!(
        "INSERT INTO stock_movements (",
        movement_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?)"
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
    )?;
    Ok(())
}

// ---- The stock move ------------------------------------------------------------------------

/// The stock move inside the connection's open transaction, with the rules of
/// `stockroom_core::move_stock_with_repositories`, in their order. SQLite's single write lock
/// (taken by the transaction's `BEGIN IMMEDIATE`) covers both products from the read to the
/// update, so reading them is all "taking them in id order" needs. Its writes are
/// all-or-nothing within the transaction (a savepoint).
pub(crate) fn move_stock(conn: &Db<'_>, movement: &NewStockMovement) -> Result<StockMoved> {
    let checked = check_movement(conn, movement)?;
    match checked {
        Checked::Recorded(earlier) => Ok(StockMoved::AlreadyRecorded(earlier)),
        Checked::Allowed(row) => atomically(conn, || apply_movement(conn, &row)),
    }
}

/// The stock move as a transaction of its own, already begun: [`move_stock`]'s statements, then
/// `COMMIT`, or `ROLLBACK` when the move is refused (the transaction is its all-or-nothing
/// unit, so no savepoint). A `COMMIT` that fails leaves the transaction to the connection's
/// release, which rolls it back.
pub(crate) fn move_stock_and_commit(
    conn: &Db<'_>,
    movement: &NewStockMovement,
) -> Result<StockMoved> {
    let moved = check_movement(conn, movement).and_then(|checked| match checked {
        Checked::Recorded(earlier) => Ok(StockMoved::AlreadyRecorded(earlier)),
        Checked::Allowed(row) => apply_movement(conn, &row),
    });
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
            .ok_or_else(|| Error::not_found(EntityKind::Product, id))
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
        |r| Ok((ProductId::from_uuid(uuid_at(r, 0)?), r.get(1)?)),
    )
}

/// Step 6: the ledger row, then both stocks in one statement (version and `updated_at`
/// bumped, at the ledger row's time).
fn apply_movement(conn: &Db<'_>, row: &StockMovement) -> Result<StockMoved> {
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
    )?;
    if moved != 2 {
        // Both rows were read live under the same write lock: this is not a refusal.
        return Err(Error::Backend {
            message: format!("sqlite: a stock move updated {moved} products instead of 2"),
            source: None,
        });
    }
    Ok(StockMoved::Applied(row.clone()))
}

/// Ends the connection's transaction with `COMMIT`.
pub(crate) fn commit(conn: &Db<'_>) -> Result<()> {
    conn.observe("COMMIT", || conn.execute_batch("COMMIT"))
        .map_err(map)
}

/// Ends the connection's transaction with `ROLLBACK`.
pub(crate) fn rollback(conn: &Db<'_>) -> Result<()> {
    conn.observe("ROLLBACK", || conn.execute_batch("ROLLBACK"))
        .map_err(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point read built at compile time selects what `read` expects, from its own table.
    fn get_sql_matches_the_columns<E: Table>() {
        let built = format!(
            "SELECT {} FROM {} WHERE id = ? AND deleted_at IS NULL",
            columns::<E>(None),
            E::NAME
        );
        assert_eq!(E::GET_SQL, built);
    }

    #[test]
    fn each_tables_point_read_selects_its_columns() {
        get_sql_matches_the_columns::<Product>();
        get_sql_matches_the_columns::<Category>();
        get_sql_matches_the_columns::<User>();
        get_sql_matches_the_columns::<Review>();
    }
}

//! The generic SQL: the [`PgEntity`] trait a table's module implements, the statements every
//! table shares, and the repository ports implemented once, for every such entity, on
//! [`Session`].

use std::collections::{BTreeSet, HashSet};
use std::future::Future;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Postgres, QueryBuilder};
use stockroom_core::{
    Constraint, Cursor, Entity, Error, KeysetPage, Limit, Page, ReadRepository, Repository, Result,
    Timestamp,
};
use uuid::Uuid;

use crate::codec::{column, count_u64, limit_i64, offset_i64, uuids};
use crate::session::{PgQuery, Session};

/// A table holding one entity: its static statements, how to decode a row and how to narrow a
/// list by the entity's filter.
pub(crate) trait PgEntity: Entity {
    /// A row of the table as it is read (see [`crate::codec`]).
    type Row: for<'r> FromRow<'r, PgRow> + TryInto<Self, Error = sqlx::Error>;
    /// The table.
    const TABLE: &'static str;
    /// The columns every read selects, which [`PgEntity::Row`] decodes by name.
    const COLUMNS: &'static str;
    /// The table's other columns: written by the adapter from the entity, never read back
    /// (a product's search document). Only the schema test reads the list.
    #[cfg(test)]
    const WRITE_ONLY_COLUMNS: &'static [&'static str] = &[];
    // The statements every table shares, which `entity_sql!` defines.
    /// The live row `$1`.
    const GET: &'static str;
    /// The live rows among `$1`, in `(created_at, id)` order.
    const GET_MANY: &'static str;
    /// A page (`LIMIT $1 OFFSET $2`) of the soft-deleted rows.
    const LIST_DELETED: &'static str;
    /// Soft-deletes the live row `$1` at `$2`.
    const SOFT_DELETE: &'static str;
    /// Deletes the row `$1` for good.
    const HARD_DELETE: &'static str;
    /// Deletes for good the rows soft-deleted before `$1`.
    const PURGE: &'static str;
    /// The `version` of the live row `$1`.
    const VERSION_OF: &'static str;
    /// Deletes the rows `$1` for good.
    const DELETE_MANY: &'static str;
    /// Whether the row `$1` is soft-deleted, as `deleted`.
    const IS_DELETED: &'static str;
    /// `EXISTS` a row, live or deleted, with id `$1`, as `found`.
    const EXISTS_ANY: &'static str;
    /// Undeletes row `$1` at `$2` unless a live row holds one of its unique values.
    const RESTORE: &'static str;

    /// Inserts one row (binds: [`PgEntity::bind_insert`]); changes nothing, rather than
    /// failing, when a reference is not live or a unique value or the id is taken.
    const INSERT: &'static str;
    /// Inserts the rows of arrays (binds: [`PgEntity::bind_insert_many`], then the shared
    /// `created_at`) like [`PgEntity::INSERT`], `RETURNING id` of each row that went in.
    const INSERT_MANY: &'static str;
    /// Rows per [`PgEntity::INSERT_MANY`] statement.
    const INSERT_BATCH: usize = usize::MAX;

    /// Inserts all of `rows` (created at `created_at`) in a faster way than
    /// [`PgEntity::INSERT_MANY`], if the entity has one and it suits: `true` when every row
    /// went in, `false` when none did (`INSERT_MANY` then does the insert, and tells which
    /// row breaks which rule). The default has none.
    fn insert_fast(
        _session: &mut Session,
        _rows: &[Self],
        _created_at: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send {
        async { Ok(false) }
    }

    /// Binds the parameters of [`PgEntity::INSERT`] for `row`.
    fn bind_insert<'q>(query: PgQuery<'q>, row: &'q Self) -> PgQuery<'q>;

    /// Binds the array parameters of [`PgEntity::INSERT_MANY`] for `rows`.
    fn bind_insert_many<'q>(query: PgQuery<'q>, rows: &'q [Self]) -> PgQuery<'q>;

    /// Why `row`, whose insert changed nothing, was not inserted (`except`: the ids of the
    /// batch it was inserted with, which cannot hold its unique value).
    fn why_not_inserted(
        session: &mut Session,
        row: &Self,
        except: &[Self::Id],
    ) -> impl Future<Output = Result<Error>> + Send;

    /// Pushes ` AND …` conditions for `filter` (columns unqualified).
    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &Self::Filter);

    /// Pushes `, column = value` for every field `patch` sets.
    fn push_set(qb: &mut QueryBuilder<Postgres>, patch: &Self::Patch);

    /// Pushes ` AND …` guards that make an update change nothing (rather than fail and abort
    /// the transaction) when `patch` would break a reference or a unique value.
    fn push_guards(_qb: &mut QueryBuilder<Postgres>, _patch: &Self::Patch) {}

    /// Whether `patch` sets a unique value (then at most one row of an update may be live).
    fn sets_unique(_patch: &Self::Patch) -> bool {
        false
    }

    /// The write-only columns an update with `patch` of the live rows among `ids` sets,
    /// computed in Rust from the patched rows. The default: none.
    fn derived_set(
        _session: &mut Session,
        _ids: &[Self::Id],
        _patch: &Self::Patch,
    ) -> impl Future<Output = Result<Derived>> + Send {
        async { Ok(Derived::Nothing) }
    }

    /// Decodes the entity from a row that holds [`PgEntity::COLUMNS`].
    fn decode(row: &PgRow) -> Result<Self> {
        crate::codec::decode::<Self::Row, Self>(row)
    }
}

/// A write-only column that an update sets, with values computed in Rust from the patched rows
/// (see [`PgEntity::derived_set`]).
pub(crate) enum Derived {
    /// The update changes no write-only column.
    Nothing,
    /// Every row the update changes gets `value` in `column`.
    Same { column: &'static str, value: String },
    /// The row `ids[i]` gets `values[i]` in `column`, and the update changes no other row: the
    /// values come from rows read (and locked) before it, so a row that was not live then is
    /// left alone, as if it had not been live when the update ran.
    PerRow {
        column: &'static str,
        ids: Vec<Uuid>,
        values: Vec<String>,
    },
}

impl Derived {
    /// Pushes `, column = …` for the update of `table`.
    fn push_set(&self, qb: &mut QueryBuilder<Postgres>, table: &str) {
        match self {
            Derived::Nothing => {}
            Derived::Same { column, value } => {
                qb.push(", ")
                    .push(column)
                    .push(" = ")
                    .push_bind(value.clone());
            }
            Derived::PerRow {
                column,
                ids,
                values,
            } => {
                qb.push(", ")
                    .push(column)
                    .push(" = (SELECT d.value FROM unnest(")
                    .push_bind(ids.clone())
                    .push("::uuid[], ")
                    .push_bind(values.clone())
                    .push("::text[]) AS d(row_id, value) WHERE d.row_id = ")
                    .push(table)
                    .push(".id)");
            }
        }
    }

    /// Pushes ` AND id = ANY(…)` when only some rows have values.
    fn push_guard(&self, qb: &mut QueryBuilder<Postgres>) {
        if let Derived::PerRow { ids, .. } = self {
            qb.push(" AND id = ANY(").push_bind(ids.clone()).push(")");
        }
    }
}

/// Defines the statements every [`PgEntity`] shares from its table and column list (literals,
/// so that each statement is one `&'static str`).
macro_rules! entity_sql {
    ($table:literal, $columns:expr) => {
        const TABLE: &'static str = $table;
        const COLUMNS: &'static str = $columns;
        const GET: &'static str = concat!(
            "SELECT ",
            $columns,
            " FROM ",
            $table,
            " WHERE id = $1 AND deleted_at IS NULL"
        );
        const GET_MANY: &'static str = concat!(
            "SELECT ",
            $columns,
            " FROM ",
            $table,
            " WHERE id = ANY($1) AND deleted_at IS NULL ORDER BY created_at, id"
        );
        const LIST_DELETED: &'static str = concat!(
            "SELECT ",
            $columns,
            " FROM ",
            $table,
            " WHERE deleted_at IS NOT NULL ORDER BY created_at, id LIMIT $1 OFFSET $2"
        );
        const SOFT_DELETE: &'static str = concat!(
            "UPDATE ",
            $table,
            " SET deleted_at = $2, updated_at = $2, version = version + 1",
            " WHERE id = $1 AND deleted_at IS NULL"
        );
        const HARD_DELETE: &'static str = concat!("DELETE FROM ", $table, " WHERE id = $1");
        const PURGE: &'static str = concat!("DELETE FROM ", $table, " WHERE deleted_at < $1");
        const VERSION_OF: &'static str = concat!(
            "SELECT version FROM ",
            $table,
            " WHERE id = $1 AND deleted_at IS NULL"
        );
        const DELETE_MANY: &'static str = concat!("DELETE FROM ", $table, " WHERE id = ANY($1)");
        const IS_DELETED: &'static str = concat!(
            "SELECT EXISTS (SELECT 1 FROM ",
            $table,
            " WHERE id = $1 AND deleted_at IS NOT NULL) AS deleted"
        );
        const EXISTS_ANY: &'static str = concat!(
            "SELECT EXISTS (SELECT 1 FROM ",
            $table,
            " WHERE id = $1) AS found"
        );
    };
}
pub(crate) use entity_sql;

/// The writes whose follow-ups (why a statement changed nothing) are the entity's own.
pub(crate) trait PgWrite: PgEntity {
    /// `Repository::update`: the update, and the follow-up that says why it changed nothing.
    fn update(
        session: &mut Session,
        id: Self::Id,
        patch: &Self::Patch,
        expected_version: Option<i64>,
    ) -> impl Future<Output = Result<Self>> + Send;

    /// `Repository::update_many`: the update, and the follow-up that says why it changed
    /// nothing.
    fn update_many(
        session: &mut Session,
        ids: &[Self::Id],
        patch: &Self::Patch,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// `Repository::restore`: [`PgEntity::RESTORE`], and the follow-up that says why it changed
    /// nothing.
    fn restore(session: &mut Session, id: Self::Id) -> impl Future<Output = Result<bool>> + Send;
}

/// A table with one unique column is written like any other such table.
impl<E: PgUniqueEntity> PgWrite for E {
    async fn update(
        session: &mut Session,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E> {
        if let Some(updated) = session.update_row::<E>(id, patch, expected_version).await? {
            return Ok(updated);
        }
        if let Some(error) = session.stale_or_missing::<E>(id, expected_version).await? {
            return Err(error);
        }
        match E::unique_in(patch) {
            Some(value) if session.unique_taken::<E>(value, &[id]).await? => Err(E::CONFLICT),
            _ => Err(raced(E::WHAT)),
        }
    }

    async fn update_many(session: &mut Session, ids: &[E::Id], patch: &E::Patch) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let changed = session.update_rows::<E>(ids, patch).await?;
        match E::unique_in(patch) {
            Some(value) if changed == 0 => {
                // Nothing changed: no live row among `ids`, two of them cannot take one
                // value, or another live row holds it.
                let live = session.get_rows::<E>(ids).await?.len();
                if live == 0 {
                    Ok(0)
                } else if live > 1 || session.unique_taken::<E>(value, ids).await? {
                    Err(E::CONFLICT)
                } else {
                    Err(raced(E::WHAT))
                }
            }
            _ => Ok(changed),
        }
    }

    async fn restore(session: &mut Session, id: E::Id) -> Result<bool> {
        session.restore_or::<E>(id, E::CONFLICT).await
    }
}

/// A table with one unique column among live rows (a category's slug, a user's email): the
/// follow-ups that tell a taken value from a missing row or a lost race.
pub(crate) trait PgUniqueEntity: PgEntity {
    /// `EXISTS` a live row holding value `$1` whose id is not in `$2`, as `taken`.
    const TAKEN: &'static str;
    /// The error of a taken value.
    const CONFLICT: Error;
    /// What changed concurrently, for a lost race (`"the category"`).
    const WHAT: &'static str;

    /// The unique value `patch` sets.
    fn unique_in(patch: &Self::Patch) -> Option<&str>;
}

/// A write that lost a race with a concurrent one between its statement and its diagnosis.
pub(crate) fn raced(what: &str) -> Error {
    Error::Transient {
        reason: format!("{what} changed concurrently; retry"),
    }
}

/// The first of `given` whose id is not among the `RETURNING id` `rows` of an insert.
fn first_not_inserted<'a, E: Entity>(rows: &[PgRow], given: &'a [E]) -> Result<&'a E> {
    let inserted: HashSet<Uuid> = rows
        .iter()
        .map(|r| column::<Uuid>(r, "id"))
        .collect::<Result<_>>()?;
    Ok(given
        .iter()
        .find(|e| !inserted.contains(&e.id().into()))
        .expect("fewer rows inserted than given"))
}

/// `UPDATE <table> SET updated_at = now, version = version + 1, <patch>, <derived>`.
fn push_update<E: PgEntity>(qb: &mut QueryBuilder<Postgres>, patch: &E::Patch, derived: &Derived) {
    qb.push("UPDATE ")
        .push(E::TABLE)
        .push(" SET updated_at = ")
        .push_bind(stockroom_core::time::now())
        .push(", version = version + 1");
    E::push_set(qb, patch);
    derived.push_set(qb, E::TABLE);
}

#[async_trait]
impl<E: PgEntity> ReadRepository<E> for Session {
    async fn get(&mut self, id: E::Id) -> Result<Option<E>> {
        self.get_row::<E>(id).await
    }

    async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        self.get_rows::<E>(ids).await
    }

    async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
        self.list_rows::<E>(filter, page).await
    }

    async fn list_after(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>> {
        self.list_rows_after::<E>(filter, after, limit).await
    }

    async fn count(&mut self, filter: &E::Filter) -> Result<u64> {
        self.count_rows::<E>(filter).await
    }

    async fn exists(&mut self, filter: &E::Filter) -> Result<bool> {
        self.any_row::<E>(filter).await
    }

    async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>> {
        self.list_deleted_rows::<E>(page).await
    }
}

/// The generic writes, and the entity's own follow-ups of [`PgWrite`].
#[async_trait]
impl<E: PgWrite> Repository<E> for Session {
    async fn create(&mut self, new: E::New) -> Result<E> {
        self.create_row::<E>(new).await
    }

    async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        self.create_rows::<E>(new).await
    }

    async fn update(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E> {
        E::update(self, id, patch, expected_version).await
    }

    async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64> {
        E::update_many(self, ids, patch).await
    }

    async fn soft_delete(&mut self, id: E::Id) -> Result<bool> {
        self.soft_delete_row::<E>(id).await
    }

    async fn restore(&mut self, id: E::Id) -> Result<bool> {
        E::restore(self, id).await
    }

    async fn hard_delete(&mut self, id: E::Id) -> Result<()> {
        self.hard_delete_row::<E>(id).await
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        self.purge_rows::<E>(before).await
    }
}

/// For an update of many rows that sets a unique value: ` AND` at most one of `ids` is live
/// (two rows cannot take one value; the statement then changes nothing instead of failing).
/// Nothing when `ids` names one row.
pub(crate) fn push_one_live_guard<I: Copy + Ord + Into<Uuid>>(
    qb: &mut QueryBuilder<Postgres>,
    table: &'static str,
    ids: &[I],
) {
    let distinct: BTreeSet<I> = ids.iter().copied().collect();
    if distinct.len() > 1 {
        qb.push(" AND (SELECT count(*) FROM ")
            .push(table)
            .push(" l WHERE l.id = ANY(")
            .push_bind(uuids(ids))
            .push(") AND l.deleted_at IS NULL) < 2");
    }
}

/// `SELECT <columns> FROM <table> WHERE deleted_at IS NULL <filter>`.
pub(crate) fn select_live<E: PgEntity>(filter: &E::Filter) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("SELECT ");
    qb.push(E::COLUMNS)
        .push(" FROM ")
        .push(E::TABLE)
        .push(" WHERE deleted_at IS NULL");
    E::push_filter(&mut qb, filter);
    qb
}

impl Session {
    pub(crate) async fn get_row<E: PgEntity>(&mut self, id: E::Id) -> Result<Option<E>> {
        let query = sqlx::query(E::GET).bind(id.into());
        let row = self.fetch_optional(E::GET, query).await?;
        row.as_ref().map(E::decode).transpose()
    }

    pub(crate) async fn get_rows<E: PgEntity>(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = sqlx::query(E::GET_MANY).bind(uuids(ids));
        let rows = self.fetch_all(E::GET_MANY, query).await?;
        rows.iter().map(E::decode).collect()
    }

    pub(crate) async fn list_rows<E: PgEntity>(
        &mut self,
        filter: &E::Filter,
        page: Page,
    ) -> Result<Vec<E>> {
        let mut qb = select_live::<E>(filter);
        qb.push(" ORDER BY created_at, id LIMIT ")
            .push_bind(limit_i64(page.limit()))
            .push(" OFFSET ")
            .push_bind(offset_i64(page));
        let sql = qb.sql();
        let rows = self.fetch_all(sql.as_str(), qb.build()).await?;
        rows.iter().map(E::decode).collect()
    }

    pub(crate) async fn list_rows_after<E: PgEntity>(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>> {
        let mut qb = select_live::<E>(filter);
        if let Some(cursor) = after {
            qb.push(" AND (created_at, id) > (")
                .push_bind(cursor.created_at())
                .push(", ")
                .push_bind(cursor.id())
                .push(")");
        }
        qb.push(" ORDER BY created_at, id LIMIT ")
            .push_bind(limit_i64(limit) + 1);
        let sql = qb.sql();
        let rows = self.fetch_all(sql.as_str(), qb.build()).await?;
        let items = rows.iter().map(E::decode).collect::<Result<Vec<E>>>()?;
        Ok(stockroom_core::adapter::page_from_overfetch(items, limit))
    }

    pub(crate) async fn count_rows<E: PgEntity>(&mut self, filter: &E::Filter) -> Result<u64> {
        let mut qb = QueryBuilder::new("SELECT count(*) FROM ");
        qb.push(E::TABLE).push(" WHERE deleted_at IS NULL");
        E::push_filter(&mut qb, filter);
        let sql = qb.sql();
        let row = self.fetch_one(sql.as_str(), qb.build()).await?;
        // PostgreSQL names the column after the aggregate.
        column(&row, "count").map(count_u64)
    }

    pub(crate) async fn any_row<E: PgEntity>(&mut self, filter: &E::Filter) -> Result<bool> {
        let mut qb = QueryBuilder::new("SELECT EXISTS (SELECT 1 FROM ");
        qb.push(E::TABLE).push(" WHERE deleted_at IS NULL");
        E::push_filter(&mut qb, filter);
        qb.push(") AS found");
        let sql = qb.sql();
        let row = self.fetch_one(sql.as_str(), qb.build()).await?;
        column(&row, "found")
    }

    pub(crate) async fn list_deleted_rows<E: PgEntity>(&mut self, page: Page) -> Result<Vec<E>> {
        let query = sqlx::query(E::LIST_DELETED)
            .bind(limit_i64(page.limit()))
            .bind(offset_i64(page));
        let rows = self.fetch_all(E::LIST_DELETED, query).await?;
        rows.iter().map(E::decode).collect()
    }

    pub(crate) async fn soft_delete_row<E: PgEntity>(&mut self, id: E::Id) -> Result<bool> {
        let query = sqlx::query(E::SOFT_DELETE)
            .bind(id.into())
            .bind(stockroom_core::time::now());
        if self.execute(E::SOFT_DELETE, query).await?.rows_affected() > 0 {
            return Ok(true);
        }
        self.exists_or_not_found::<E>(id).await.map(|()| false)
    }

    pub(crate) async fn hard_delete_row<E: PgEntity>(&mut self, id: E::Id) -> Result<()> {
        let query = sqlx::query(E::HARD_DELETE).bind(id.into());
        match self.execute(E::HARD_DELETE, query).await?.rows_affected() {
            0 => Err(Error::not_found(E::KIND, id)),
            _ => Ok(()),
        }
    }

    /// `Ok` when a row, live or deleted, has the id `id` (a write on it changed nothing because
    /// of its state); [`Error::NotFound`] when none has.
    pub(crate) async fn exists_or_not_found<E: PgEntity>(&mut self, id: E::Id) -> Result<()> {
        let query = sqlx::query(E::EXISTS_ANY).bind(id.into());
        let row = self.fetch_one(E::EXISTS_ANY, query).await?;
        if column(&row, "found")? {
            Ok(())
        } else {
            Err(Error::not_found(E::KIND, id))
        }
    }

    /// Why an update of the live row `id` (expecting `expected`, if given) changed nothing,
    /// unless a guard did: `Ok(Some(error))` for a missing row or a stale version.
    pub(crate) async fn stale_or_missing<E: PgEntity>(
        &mut self,
        id: E::Id,
        expected: Option<i64>,
    ) -> Result<Option<stockroom_core::Error>> {
        let query = sqlx::query(E::VERSION_OF).bind(id.into());
        let Some(row) = self.fetch_optional(E::VERSION_OF, query).await? else {
            return Ok(Some(stockroom_core::Error::not_found(E::KIND, id)));
        };
        let actual: i64 = column(&row, "version")?;
        Ok(match expected {
            Some(expected) if expected != actual => Some(stockroom_core::Error::stale_version(
                E::KIND,
                id,
                expected,
                actual,
            )),
            _ => None,
        })
    }

    /// Runs the static `sql`, which selects the live row with the unique value `$1`.
    pub(crate) async fn get_row_by<E: PgEntity>(
        &mut self,
        sql: &'static str,
        value: &str,
    ) -> Result<Option<E>> {
        if value.contains('\0') {
            // No row holds a NUL byte (inputs refuse control characters), and PostgreSQL's text
            // refuses one as a parameter (22021), which would abort a unit of work's transaction.
            return Ok(None);
        }
        let row = self
            .fetch_optional(sql, sqlx::query(sql).bind(value))
            .await?;
        row.as_ref().map(E::decode).transpose()
    }

    /// `Repository::create`: inserts the row `new` makes, or says why it could not be.
    pub(crate) async fn create_row<E: PgEntity>(&mut self, new: E::New) -> Result<E> {
        let row = E::create(new, stockroom_core::time::now());
        let query = E::bind_insert(sqlx::query(E::INSERT), &row);
        if self.execute(E::INSERT, query).await?.rows_affected() == 1 {
            return Ok(row);
        }
        Err(E::why_not_inserted(self, &row, &[]).await?)
    }

    /// `Repository::create_many`: inserts all the rows of `new`, in order and with one shared
    /// `created_at`, or none of them.
    pub(crate) async fn create_rows<E: PgEntity>(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        let created_at = stockroom_core::time::now();
        let rows: Vec<E> = new.into_iter().map(|n| E::create(n, created_at)).collect();
        for (done, batch) in rows.chunks(E::INSERT_BATCH).enumerate() {
            if E::insert_fast(self, batch, created_at).await? {
                continue;
            }
            let query = E::bind_insert_many(sqlx::query(E::INSERT_MANY), batch).bind(created_at);
            let inserted = self.fetch_all(E::INSERT_MANY, query).await?;
            if inserted.len() == batch.len() {
                continue;
            }
            // All or nothing: find the first row that did not go in, say why, and take back
            // every row this call inserted.
            let failed = first_not_inserted(&inserted, batch)?;
            let error = E::why_not_inserted(self, failed, &[failed.id()]).await?;
            self.delete_rows(&rows[..done * E::INSERT_BATCH + batch.len()])
                .await?;
            return Err(error);
        }
        Ok(rows)
    }

    /// Updates the live row `id` (at version `expected`, if given) with `patch`; `None` when
    /// the statement changed nothing.
    pub(crate) async fn update_row<E: PgEntity>(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected: Option<i64>,
    ) -> Result<Option<E>> {
        let derived = E::derived_set(self, &[id], patch).await?;
        let mut qb = QueryBuilder::new("");
        push_update::<E>(&mut qb, patch, &derived);
        qb.push(" WHERE id = ")
            .push_bind(id.into())
            .push(" AND deleted_at IS NULL");
        if let Some(version) = expected {
            qb.push(" AND version = ").push_bind(version);
        }
        derived.push_guard(&mut qb);
        E::push_guards(&mut qb, patch);
        qb.push(" RETURNING ").push(E::COLUMNS);
        let sql = qb.sql();
        let row = self.fetch_optional(sql.as_str(), qb.build()).await?;
        row.as_ref().map(E::decode).transpose()
    }

    /// Updates the live rows among `ids` with `patch`; how many changed.
    pub(crate) async fn update_rows<E: PgEntity>(
        &mut self,
        ids: &[E::Id],
        patch: &E::Patch,
    ) -> Result<u64> {
        let derived = E::derived_set(self, ids, patch).await?;
        let mut qb = QueryBuilder::new("");
        push_update::<E>(&mut qb, patch, &derived);
        qb.push(" WHERE id = ANY(")
            .push_bind(uuids(ids))
            .push(") AND deleted_at IS NULL");
        derived.push_guard(&mut qb);
        E::push_guards(&mut qb, patch);
        if E::sets_unique(patch) {
            push_one_live_guard(&mut qb, E::TABLE, ids);
        }
        let sql = qb.sql();
        Ok(self
            .execute(sql.as_str(), qb.build())
            .await?
            .rows_affected())
    }

    /// Deletes every row of `given` (taking back a partial `create_many`).
    pub(crate) async fn delete_rows<E: PgEntity>(&mut self, given: &[E]) -> Result<()> {
        let ids: Vec<Uuid> = given.iter().map(|e| e.id().into()).collect();
        self.execute(E::DELETE_MANY, sqlx::query(E::DELETE_MANY).bind(ids))
            .await?;
        Ok(())
    }

    /// Runs [`PgEntity::RESTORE`]: whether the deleted row `id` came back.
    pub(crate) async fn restore_row<E: PgEntity>(&mut self, id: E::Id) -> Result<bool> {
        let query = sqlx::query(E::RESTORE)
            .bind(id.into())
            .bind(stockroom_core::time::now());
        Ok(self.execute(E::RESTORE, query).await?.rows_affected() == 1)
    }

    /// Restores `id`; `Err(conflict)` when it is deleted but a live row holds its unique value.
    pub(crate) async fn restore_or<E: PgEntity>(
        &mut self,
        id: E::Id,
        conflict: Error,
    ) -> Result<bool> {
        if self.restore_row::<E>(id).await? {
            return Ok(true);
        }
        let query = sqlx::query(E::IS_DELETED).bind(id.into());
        let row = self.fetch_one(E::IS_DELETED, query).await?;
        if column(&row, "deleted")? {
            Err(conflict)
        } else {
            self.exists_or_not_found::<E>(id).await.map(|()| false)
        }
    }

    /// Whether a live row other than `except` holds the unique `value`.
    pub(crate) async fn unique_taken<E: PgUniqueEntity>(
        &mut self,
        value: &str,
        except: &[E::Id],
    ) -> Result<bool> {
        let query = sqlx::query(E::TAKEN).bind(value).bind(uuids(except));
        let row = self.fetch_one(E::TAKEN, query).await?;
        column(&row, "taken")
    }

    /// Why `row` (whose insert did nothing) was not inserted: its unique value is held by a
    /// live row other than `except`, or its id is taken.
    pub(crate) async fn why_unique_not_inserted<E: PgUniqueEntity>(
        &mut self,
        row: &E,
        except: &[E::Id],
    ) -> Result<Error> {
        // The entity's one unique value, as the core declares it.
        for (constraint, value) in row.unique_values() {
            if self.unique_taken::<E>(&value, except).await? {
                return Ok(Error::Conflict { constraint });
            }
        }
        Ok(Error::Conflict {
            constraint: Constraint::PrimaryKey,
        })
    }

    pub(crate) async fn purge_rows<E: PgEntity>(&mut self, before: Timestamp) -> Result<u64> {
        let before = stockroom_core::time::supported("before", before)?;
        let query = sqlx::query(E::PURGE).bind(before);
        Ok(self.execute(E::PURGE, query).await?.rows_affected())
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use std::collections::BTreeSet;

    use sqlx::Connection;
    use stockroom_core::{Category, Product, Review, User};

    use super::PgEntity;
    use crate::testing::TestDatabase;

    /// The columns of `table` in the schema the store's statements resolve it in.
    async fn live_columns(conn: &mut sqlx::PgConnection, table: &str) -> BTreeSet<String> {
        sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    /// The names in a comma-separated column list.
    fn names(list: &str) -> BTreeSet<String> {
        list.split(',').map(|c| c.trim().to_owned()).collect()
    }

    /// Fails naming `table` and the columns only one side has.
    fn assert_same_columns(table: &str, adapter: &BTreeSet<String>, schema: &BTreeSet<String>) {
        let missing: Vec<_> = adapter.difference(schema).collect();
        let unknown: Vec<_> = schema.difference(adapter).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "table {table}: the adapter's columns not in the schema: {missing:?}; \
             the schema's columns the adapter does not know: {unknown:?}"
        );
    }

    /// The columns an entity's module reads and writes, against its table's.
    async fn check<E: PgEntity>(conn: &mut sqlx::PgConnection) {
        let mut adapter = names(E::COLUMNS);
        adapter.extend(E::WRITE_ONLY_COLUMNS.iter().map(|c| (*c).to_owned()));
        assert_same_columns(E::TABLE, &adapter, &live_columns(conn, E::TABLE).await);
    }

    /// Each table's column list in the adapter is the migrated schema's, so that a migration
    /// that adds, drops or renames a column cannot go unnoticed by the row structs.
    #[tokio::test]
    async fn the_column_lists_are_the_schemas() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        check::<Product>(&mut conn).await;
        check::<Category>(&mut conn).await;
        check::<User>(&mut conn).await;
        check::<Review>(&mut conn).await;
        let ledger = crate::movements::TABLE;
        let schema = live_columns(&mut conn, ledger).await;
        assert_same_columns(ledger, &names(crate::movements::COLUMNS), &schema);
        conn.close().await.unwrap();
        stockroom_core::Store::close(&store).await;
        db.drop_now().await;
    }
}

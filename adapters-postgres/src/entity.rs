//! What every table shares: the generic reads and deletes, written once for all entities.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use std::collections::HashSet;

use stockroom_core::{
    Constraint, Cursor, Entity, Error, KeysetPage, Limit, Page, Result, Timestamp,
};
use uuid::Uuid;

use crate::error::map_error;
use crate::session::{PgQuery, Session};

/// A table holding one entity: its static statements, how to decode a row and how to narrow a
/// list by the entity's filter.
pub(crate) trait PgEntity: Entity {
    const TABLE: &'static str;
    /// The entity's columns, in the order [`PgEntity::decode_at`] reads them.
    const COLUMNS: &'static str;
    const GET: &'static str;
    const GET_MANY: &'static str;
    const LIST_DELETED: &'static str;
    const SOFT_DELETE: &'static str;
    const HARD_DELETE: &'static str;
    const PURGE: &'static str;
    const VERSION_OF: &'static str;
    const DELETE_MANY: &'static str;
    const IS_DELETED: &'static str;
    /// `EXISTS` a row, live or deleted, with id `$1`.
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
    async fn insert_fast(
        _session: &mut Session,
        _rows: &[Self],
        _created_at: Timestamp,
    ) -> Result<bool> {
        Ok(false)
    }

    /// The row `new` makes when created at `now` (`NewX::into_entity`).
    fn from_new(new: Self::New, now: Timestamp) -> Self;

    /// Binds the parameters of [`PgEntity::INSERT`] for `row`.
    fn bind_insert<'q>(query: PgQuery<'q>, row: &'q Self) -> PgQuery<'q>;

    /// Binds the array parameters of [`PgEntity::INSERT_MANY`] for `rows`.
    fn bind_insert_many<'q>(query: PgQuery<'q>, rows: &'q [Self]) -> PgQuery<'q>;

    /// Why `row`, whose insert changed nothing, was not inserted (`except`: the ids of the
    /// batch it was inserted with, which cannot hold its unique value).
    async fn why_not_inserted(
        session: &mut Session,
        row: &Self,
        except: &[Self::Id],
    ) -> Result<Error>;

    /// Decodes the entity from the row's columns `base..`.
    fn decode_at(row: &PgRow, base: usize) -> sqlx::Result<Self>;

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

    fn decode(row: &PgRow) -> Result<Self> {
        Self::decode_at(row, 0).map_err(map_error)
    }
}

/// Defines the static statements of a [`PgEntity`] from its table and column list.
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
            " WHERE id = $1 AND deleted_at IS NOT NULL)"
        );
        const EXISTS_ANY: &'static str =
            concat!("SELECT EXISTS (SELECT 1 FROM ", $table, " WHERE id = $1)");
    };
}
pub(crate) use entity_sql;

/// The writes whose follow-ups (why a statement changed nothing) are the entity's own.
pub(crate) trait PgWrite: PgEntity {
    /// `Repository::update`: the update, and the follow-up that says why it changed nothing.
    async fn update(
        session: &mut Session,
        id: Self::Id,
        patch: &Self::Patch,
        expected_version: Option<i64>,
    ) -> Result<Self>;

    /// `Repository::update_many`: the update, and the follow-up that says why it changed
    /// nothing.
    async fn update_many(
        session: &mut Session,
        ids: &[Self::Id],
        patch: &Self::Patch,
    ) -> Result<u64>;

    /// `Repository::restore`: [`PgEntity::RESTORE`], and the follow-up that says why it changed
    /// nothing.
    async fn restore(session: &mut Session, id: Self::Id) -> Result<bool>;
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
    /// `EXISTS` a live row holding value `$1` whose id is not in `$2`.
    const TAKEN: &'static str;
    /// The error of a taken value.
    const CONFLICT: Error;
    /// What changed concurrently, for a lost race (`"the category"`).
    const WHAT: &'static str;

    /// The row's unique value.
    fn unique(&self) -> &str;
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
        .map(|r| r.try_get::<Uuid, _>(0))
        .collect::<sqlx::Result<_>>()
        .map_err(map_error)?;
    Ok(given
        .iter()
        .find(|e| !inserted.contains(&e.id().into()))
        .expect("fewer rows inserted than given"))
}

/// `UPDATE <table> SET updated_at = now, version = version + 1, <patch>`.
fn push_update<E: PgEntity>(qb: &mut QueryBuilder<Postgres>, patch: &E::Patch) {
    qb.push("UPDATE ")
        .push(E::TABLE)
        .push(" SET updated_at = ")
        .push_bind(stockroom_core::time::now())
        .push(", version = version + 1");
    E::push_set(qb, patch);
}

/// Implements `ReadRepository<$entity>` for [`Session`] with the generic reads.
macro_rules! read_repository {
    ($entity:ty) => {
        #[async_trait::async_trait]
        impl stockroom_core::ReadRepository<$entity> for crate::session::Session {
            async fn get(
                &mut self,
                id: <$entity as stockroom_core::Entity>::Id,
            ) -> stockroom_core::Result<Option<$entity>> {
                self.get_row::<$entity>(id).await
            }
            async fn get_many(
                &mut self,
                ids: &[<$entity as stockroom_core::Entity>::Id],
            ) -> stockroom_core::Result<Vec<$entity>> {
                self.get_rows::<$entity>(ids).await
            }
            async fn list(
                &mut self,
                filter: &<$entity as stockroom_core::Entity>::Filter,
                page: stockroom_core::Page,
            ) -> stockroom_core::Result<Vec<$entity>> {
                self.list_rows::<$entity>(filter, page).await
            }
            async fn list_after(
                &mut self,
                filter: &<$entity as stockroom_core::Entity>::Filter,
                after: Option<stockroom_core::Cursor>,
                limit: stockroom_core::Limit,
            ) -> stockroom_core::Result<stockroom_core::KeysetPage<$entity>> {
                self.list_rows_after::<$entity>(filter, after, limit).await
            }
            async fn count(
                &mut self,
                filter: &<$entity as stockroom_core::Entity>::Filter,
            ) -> stockroom_core::Result<u64> {
                self.count_rows::<$entity>(filter).await
            }
            async fn exists(
                &mut self,
                filter: &<$entity as stockroom_core::Entity>::Filter,
            ) -> stockroom_core::Result<bool> {
                self.any_row::<$entity>(filter).await
            }
            async fn list_deleted(
                &mut self,
                page: stockroom_core::Page,
            ) -> stockroom_core::Result<Vec<$entity>> {
                self.list_deleted_rows::<$entity>(page).await
            }
        }
    };
}
pub(crate) use read_repository;

/// Implements `Repository<$entity>` for [`Session`]: the generic writes, and those of
/// [`PgWrite`].
macro_rules! repository {
    ($entity:ty) => {
        #[async_trait::async_trait]
        impl stockroom_core::Repository<$entity> for crate::session::Session {
            async fn create(
                &mut self,
                new: <$entity as stockroom_core::Entity>::New,
            ) -> stockroom_core::Result<$entity> {
                self.create_row::<$entity>(new).await
            }
            async fn create_many(
                &mut self,
                new: Vec<<$entity as stockroom_core::Entity>::New>,
            ) -> stockroom_core::Result<Vec<$entity>> {
                self.create_rows::<$entity>(new).await
            }
            async fn update(
                &mut self,
                id: <$entity as stockroom_core::Entity>::Id,
                patch: &<$entity as stockroom_core::Entity>::Patch,
                expected_version: Option<i64>,
            ) -> stockroom_core::Result<$entity> {
                <$entity as crate::entity::PgWrite>::update(self, id, patch, expected_version).await
            }
            async fn update_many(
                &mut self,
                ids: &[<$entity as stockroom_core::Entity>::Id],
                patch: &<$entity as stockroom_core::Entity>::Patch,
            ) -> stockroom_core::Result<u64> {
                <$entity as crate::entity::PgWrite>::update_many(self, ids, patch).await
            }
            async fn soft_delete(
                &mut self,
                id: <$entity as stockroom_core::Entity>::Id,
            ) -> stockroom_core::Result<bool> {
                self.soft_delete_row::<$entity>(id).await
            }
            async fn restore(
                &mut self,
                id: <$entity as stockroom_core::Entity>::Id,
            ) -> stockroom_core::Result<bool> {
                <$entity as crate::entity::PgWrite>::restore(self, id).await
            }
            async fn hard_delete(
                &mut self,
                id: <$entity as stockroom_core::Entity>::Id,
            ) -> stockroom_core::Result<()> {
                self.hard_delete_row::<$entity>(id).await
            }
            async fn purge_deleted_before(
                &mut self,
                before: stockroom_core::Timestamp,
            ) -> stockroom_core::Result<u64> {
                self.purge_rows::<$entity>(before).await
            }
        }
    };
}
pub(crate) use repository;

pub(crate) fn uuids<I: Copy + Into<Uuid>>(ids: &[I]) -> Vec<Uuid> {
    ids.iter().map(|&id| id.into()).collect()
}

/// For an update of many rows that sets a unique value: ` AND` at most one of `ids` is live
/// (two rows cannot take one value; the statement then changes nothing instead of failing).
/// Nothing when `ids` names one row.
pub(crate) fn push_one_live_guard<I: Copy + Ord + Into<Uuid>>(
    qb: &mut QueryBuilder<Postgres>,
    table: &'static str,
    ids: &[I],
) {
    let distinct: std::collections::BTreeSet<I> = ids.iter().copied().collect();
    if distinct.len() > 1 {
        qb.push(" AND (SELECT count(*) FROM ")
            .push(table)
            .push(" l WHERE l.id = ANY(")
            .push_bind(uuids(ids))
            .push(") AND l.deleted_at IS NULL) < 2");
    }
}

pub(crate) fn limit_i64(limit: Limit) -> i64 {
    i64::from(limit.get())
}

pub(crate) fn offset_i64(page: Page) -> i64 {
    // Page offsets are at most MAX_OFFSET (10^7).
    i64::try_from(page.offset()).unwrap_or(i64::MAX)
}

fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
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
        row.try_get::<i64, _>(0).map(count_u64).map_err(map_error)
    }

    pub(crate) async fn any_row<E: PgEntity>(&mut self, filter: &E::Filter) -> Result<bool> {
        let mut qb = QueryBuilder::new("SELECT EXISTS (SELECT 1 FROM ");
        qb.push(E::TABLE).push(" WHERE deleted_at IS NULL");
        E::push_filter(&mut qb, filter);
        qb.push(")");
        let sql = qb.sql();
        let row = self.fetch_one(sql.as_str(), qb.build()).await?;
        row.try_get::<bool, _>(0).map_err(map_error)
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
        if get_bool(&row, 0)? {
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
        let actual = get_i64(&row, 0)?;
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
        let row = self
            .fetch_optional(sql, sqlx::query(sql).bind(value))
            .await?;
        row.as_ref().map(E::decode).transpose()
    }

    /// `Repository::create`: inserts the row `new` makes, or says why it could not be.
    pub(crate) async fn create_row<E: PgEntity>(&mut self, new: E::New) -> Result<E> {
        let row = E::from_new(new, stockroom_core::time::now());
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
        let rows: Vec<E> = new
            .into_iter()
            .map(|n| E::from_new(n, created_at))
            .collect();
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
        let mut qb = QueryBuilder::new("");
        push_update::<E>(&mut qb, patch);
        qb.push(" WHERE id = ")
            .push_bind(id.into())
            .push(" AND deleted_at IS NULL");
        if let Some(version) = expected {
            qb.push(" AND version = ").push_bind(version);
        }
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
        let mut qb = QueryBuilder::new("");
        push_update::<E>(&mut qb, patch);
        qb.push(" WHERE id = ANY(")
            .push_bind(uuids(ids))
            .push(") AND deleted_at IS NULL");
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
        if get_bool(&row, 0)? {
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
        get_bool(&row, 0)
    }

    /// Why `row` (whose insert did nothing) was not inserted: its unique value is held by a
    /// live row other than `except`, or its id is taken.
    pub(crate) async fn why_unique_not_inserted<E: PgUniqueEntity>(
        &mut self,
        row: &E,
        except: &[E::Id],
    ) -> Result<Error> {
        Ok(if self.unique_taken::<E>(row.unique(), except).await? {
            E::CONFLICT
        } else {
            Error::Conflict {
                constraint: Constraint::PrimaryKey,
            }
        })
    }

    pub(crate) async fn purge_rows<E: PgEntity>(&mut self, before: Timestamp) -> Result<u64> {
        let before = stockroom_core::time::supported("before", before)?;
        let query = sqlx::query(E::PURGE).bind(before);
        Ok(self.execute(E::PURGE, query).await?.rows_affected())
    }
}

/// Reads a `bigint` column.
pub(crate) fn get_i64(row: &PgRow, index: usize) -> Result<i64> {
    row.try_get::<i64, _>(index).map_err(map_error)
}

/// Reads a `boolean` column.
pub(crate) fn get_bool(row: &PgRow, index: usize) -> Result<bool> {
    row.try_get::<bool, _>(index).map_err(map_error)
}

//! What every table shares: the generic reads and deletes, written once for all entities.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use stockroom_core::{Cursor, Entity, KeysetPage, Limit, Page, Result, Timestamp};
use uuid::Uuid;

use crate::error::map_error;
use crate::session::Session;

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

    /// Decodes the entity from the row's columns `base..`.
    fn decode_at(row: &PgRow, base: usize) -> sqlx::Result<Self>;

    /// Pushes ` AND …` conditions for `filter` (columns unqualified).
    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &Self::Filter);

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
    };
}
pub(crate) use entity_sql;

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
        Ok(KeysetPage::from_overfetch(items, limit))
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
        Ok(self.execute(E::SOFT_DELETE, query).await?.rows_affected() > 0)
    }

    pub(crate) async fn hard_delete_row<E: PgEntity>(&mut self, id: E::Id) -> Result<bool> {
        let query = sqlx::query(E::HARD_DELETE).bind(id.into());
        Ok(self.execute(E::HARD_DELETE, query).await?.rows_affected() > 0)
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
            Some(expected) if expected != actual => Some(stockroom_core::Error::StaleVersion {
                entity: E::KIND,
                id: id.to_string(),
                expected,
                actual,
            }),
            _ => None,
        })
    }

    pub(crate) async fn purge_rows<E: PgEntity>(&mut self, before: Timestamp) -> Result<u64> {
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

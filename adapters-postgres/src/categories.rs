//! Categories.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use stockroom_core::time::now;
use stockroom_core::{
    Category, CategoryFilter, CategoryId, CategoryPatch, CategoryReader, CategoryRepository,
    Constraint, Error, NewCategory, Repository, Result, Timestamp,
};
use uuid::Uuid;

use crate::entity::{entity_sql, get_bool, push_one_live_guard, read_repository, uuids, PgEntity};
use crate::error::map_error;
use crate::session::Session;

impl PgEntity for Category {
    entity_sql!(
        "categories",
        "id, name, slug, created_at, updated_at, deleted_at, version"
    );

    fn decode_at(row: &PgRow, b: usize) -> sqlx::Result<Self> {
        Ok(Category {
            id: CategoryId::from_uuid(row.try_get(b)?),
            name: row.try_get(b + 1)?,
            slug: row.try_get(b + 2)?,
            created_at: row.try_get(b + 3)?,
            updated_at: row.try_get(b + 4)?,
            deleted_at: row.try_get(b + 5)?,
            version: row.try_get(b + 6)?,
        })
    }

    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &CategoryFilter) {
        if let Some(slug) = &filter.slug {
            qb.push(" AND slug = ").push_bind(slug.as_str().to_owned());
        }
    }
}

read_repository!(Category);

const BY_SLUG: &str = concat!(
    "SELECT id, name, slug, created_at, updated_at, deleted_at, version ",
    "FROM categories WHERE slug = $1 AND deleted_at IS NULL"
);
const INSERT: &str = concat!(
    "INSERT INTO categories (id, name, slug, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING"
);
const INSERT_MANY: &str = concat!(
    "INSERT INTO categories (id, name, slug, created_at, updated_at) ",
    "SELECT u.id, u.name, u.slug, $4, $4 FROM UNNEST($1::uuid[], $2::text[], $3::text[]) ",
    "AS u(id, name, slug) ON CONFLICT DO NOTHING RETURNING id"
);
const DELETE_MANY: &str = "DELETE FROM categories WHERE id = ANY($1)";
const SLUG_TAKEN: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM categories WHERE slug = $1 AND deleted_at IS NULL ",
    "AND id <> ALL($2))"
);
const RESTORE: &str = concat!(
    "UPDATE categories c SET deleted_at = NULL, updated_at = $2, version = c.version + 1 ",
    "WHERE c.id = $1 AND c.deleted_at IS NOT NULL AND NOT EXISTS ",
    "(SELECT 1 FROM categories o WHERE o.slug = c.slug AND o.deleted_at IS NULL)"
);
const IS_DELETED: &str =
    "SELECT EXISTS (SELECT 1 FROM categories WHERE id = $1 AND deleted_at IS NOT NULL)";

const SLUG_CONFLICT: Error = Error::Conflict {
    constraint: Constraint::CategorySlug,
};

impl Session {
    async fn category_slug_taken(&mut self, slug: &str, except: &[CategoryId]) -> Result<bool> {
        let query = sqlx::query(SLUG_TAKEN).bind(slug).bind(uuids(except));
        let row = self.fetch_one(SLUG_TAKEN, query).await?;
        get_bool(&row, 0)
    }
}

fn push_update(qb: &mut QueryBuilder<Postgres>, patch: &CategoryPatch) {
    qb.push("UPDATE categories SET updated_at = ")
        .push_bind(now())
        .push(", version = version + 1");
    if let Some(name) = patch.name_value() {
        qb.push(", name = ").push_bind(name.to_owned());
    }
    if let Some(slug) = patch.slug_value() {
        qb.push(", slug = ").push_bind(slug.to_owned());
    }
}

fn push_guards(qb: &mut QueryBuilder<Postgres>, patch: &CategoryPatch) {
    if let Some(slug) = patch.slug_value() {
        qb.push(" AND NOT EXISTS (SELECT 1 FROM categories o WHERE o.slug = ")
            .push_bind(slug.to_owned())
            .push(" AND o.deleted_at IS NULL AND o.id <> categories.id)");
    }
}

#[async_trait]
impl CategoryReader for Session {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        let row = self
            .fetch_optional(BY_SLUG, sqlx::query(BY_SLUG).bind(slug))
            .await?;
        row.as_ref().map(Category::decode).transpose()
    }
}

impl CategoryRepository for Session {}

#[async_trait]
impl Repository<Category> for Session {
    async fn create(&mut self, new: NewCategory) -> Result<Category> {
        let category = new.into_entity(now());
        let query = sqlx::query(INSERT)
            .bind(category.id.as_uuid())
            .bind(&category.name)
            .bind(&category.slug)
            .bind(category.created_at);
        if self.execute(INSERT, query).await?.rows_affected() == 1 {
            return Ok(category);
        }
        if self.category_slug_taken(&category.slug, &[]).await? {
            return Err(SLUG_CONFLICT);
        }
        Err(Error::Conflict {
            constraint: Constraint::PrimaryKey,
        })
    }

    async fn create_many(&mut self, new: Vec<NewCategory>) -> Result<Vec<Category>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let created_at = now();
        let categories: Vec<Category> =
            new.into_iter().map(|n| n.into_entity(created_at)).collect();
        let query = sqlx::query(INSERT_MANY)
            .bind(
                categories
                    .iter()
                    .map(|c| c.id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(
                categories
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                categories
                    .iter()
                    .map(|c| c.slug.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(created_at);
        let rows = self.fetch_all(INSERT_MANY, query).await?;
        if rows.len() == categories.len() {
            return Ok(categories);
        }
        // All or nothing: a slug was taken (by a live row or an earlier row of the batch).
        let inserted: HashSet<Uuid> = rows
            .iter()
            .map(|r| r.try_get::<Uuid, _>(0))
            .collect::<sqlx::Result<_>>()
            .map_err(map_error)?;
        let ids = uuids(&categories.iter().map(|c| c.id).collect::<Vec<_>>());
        let failed = categories
            .iter()
            .find(|c| !inserted.contains(&c.id.as_uuid()))
            .expect("fewer rows inserted than given");
        let error = if self.category_slug_taken(&failed.slug, &[failed.id]).await? {
            SLUG_CONFLICT
        } else {
            Error::Conflict {
                constraint: Constraint::PrimaryKey,
            }
        };
        self.execute(DELETE_MANY, sqlx::query(DELETE_MANY).bind(ids))
            .await?;
        Err(error)
    }

    async fn update(
        &mut self,
        id: CategoryId,
        patch: &CategoryPatch,
        expected_version: Option<i64>,
    ) -> Result<Category> {
        let mut qb = QueryBuilder::new("");
        push_update(&mut qb, patch);
        qb.push(" WHERE id = ")
            .push_bind(id.as_uuid())
            .push(" AND deleted_at IS NULL");
        if let Some(version) = expected_version {
            qb.push(" AND version = ").push_bind(version);
        }
        push_guards(&mut qb, patch);
        qb.push(" RETURNING ").push(Category::COLUMNS);
        let sql = qb.sql();
        if let Some(row) = self.fetch_optional(sql.as_str(), qb.build()).await? {
            return Category::decode(&row);
        }
        if let Some(error) = self
            .stale_or_missing::<Category>(id, expected_version)
            .await?
        {
            return Err(error);
        }
        match patch.slug_value() {
            Some(slug) if self.category_slug_taken(slug, &[id]).await? => Err(SLUG_CONFLICT),
            _ => Err(Error::Transient {
                reason: "the category changed concurrently; retry".to_owned(),
            }),
        }
    }

    async fn update_many(&mut self, ids: &[CategoryId], patch: &CategoryPatch) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut qb = QueryBuilder::new("");
        push_update(&mut qb, patch);
        qb.push(" WHERE id = ANY(")
            .push_bind(uuids(ids))
            .push(") AND deleted_at IS NULL");
        push_guards(&mut qb, patch);
        if patch.slug_value().is_some() {
            push_one_live_guard(&mut qb, "categories", ids);
        }
        let sql = qb.sql();
        let changed = self
            .execute(sql.as_str(), qb.build())
            .await?
            .rows_affected();
        match patch.slug_value() {
            Some(value) if changed == 0 => {
                // Nothing changed: no live row among `ids`, two of them cannot take one
                // value, or another live row holds it.
                let live = self.get_rows::<Category>(ids).await?.len();
                if live == 0 {
                    Ok(0)
                } else if live > 1 || self.category_slug_taken(value, ids).await? {
                    Err(SLUG_CONFLICT)
                } else {
                    Err(Error::Transient {
                        reason: "the category changed concurrently; retry".to_owned(),
                    })
                }
            }
            _ => Ok(changed),
        }
    }

    async fn soft_delete(&mut self, id: CategoryId) -> Result<bool> {
        self.soft_delete_row::<Category>(id).await
    }

    async fn restore(&mut self, id: CategoryId) -> Result<bool> {
        let query = sqlx::query(RESTORE).bind(id.as_uuid()).bind(now());
        if self.execute(RESTORE, query).await?.rows_affected() == 1 {
            return Ok(true);
        }
        let row = self
            .fetch_one(IS_DELETED, sqlx::query(IS_DELETED).bind(id.as_uuid()))
            .await?;
        if get_bool(&row, 0)? {
            Err(SLUG_CONFLICT)
        } else {
            Ok(false)
        }
    }

    async fn hard_delete(&mut self, id: CategoryId) -> Result<bool> {
        self.hard_delete_row::<Category>(id).await
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        self.purge_rows::<Category>(before).await
    }
}

//! Categories.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use stockroom_core::time::now;
use stockroom_core::{
    Category, CategoryFilter, CategoryId, CategoryPatch, CategoryReader, CategoryRepository,
    Constraint, Error, NewCategory, Repository, Result, Timestamp,
};

use crate::entity::{entity_sql, first_not_inserted, read_repository, PgEntity, PgUniqueEntity};
use crate::session::Session;

impl PgEntity for Category {
    entity_sql!(
        "categories",
        "id, name, slug, created_at, updated_at, deleted_at, version"
    );
    const RESTORE: &'static str = concat!(
        "UPDATE categories c SET deleted_at = NULL, updated_at = $2, version = c.version + 1 ",
        "WHERE c.id = $1 AND c.deleted_at IS NOT NULL AND NOT EXISTS ",
        "(SELECT 1 FROM categories o WHERE o.slug = c.slug AND o.deleted_at IS NULL)"
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

    fn push_set(qb: &mut QueryBuilder<Postgres>, patch: &CategoryPatch) {
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

    fn sets_unique(patch: &CategoryPatch) -> bool {
        patch.slug_value().is_some()
    }
}

impl PgUniqueEntity for Category {
    const TAKEN: &'static str = concat!(
        "SELECT EXISTS (SELECT 1 FROM categories WHERE slug = $1 AND deleted_at IS NULL ",
        "AND id <> ALL($2))"
    );
    const CONFLICT: Error = Error::Conflict {
        constraint: Constraint::CategorySlug,
    };
    const WHAT: &'static str = "the category";

    fn unique(&self) -> &str {
        &self.slug
    }

    fn unique_in(patch: &CategoryPatch) -> Option<&str> {
        patch.slug_value()
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
        Err(self.why_unique_not_inserted(&category, &[]).await?)
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
        // All or nothing: a unique value was taken (by a live row or an earlier row of the
        // batch).
        let failed = first_not_inserted(&rows, &categories)?;
        let error = self.why_unique_not_inserted(failed, &[failed.id]).await?;
        self.delete_rows(&categories).await?;
        Err(error)
    }

    async fn update(
        &mut self,
        id: CategoryId,
        patch: &CategoryPatch,
        expected_version: Option<i64>,
    ) -> Result<Category> {
        self.update_unique(id, patch, expected_version).await
    }

    async fn update_many(&mut self, ids: &[CategoryId], patch: &CategoryPatch) -> Result<u64> {
        self.update_many_unique::<Category>(ids, patch).await
    }

    async fn soft_delete(&mut self, id: CategoryId) -> Result<bool> {
        self.soft_delete_row::<Category>(id).await
    }

    async fn restore(&mut self, id: CategoryId) -> Result<bool> {
        self.restore_or::<Category>(id, Category::CONFLICT).await
    }

    async fn hard_delete(&mut self, id: CategoryId) -> Result<bool> {
        self.hard_delete_row::<Category>(id).await
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        self.purge_rows::<Category>(before).await
    }
}

//! Categories.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use stockroom_core::{
    Category, CategoryFilter, CategoryId, CategoryPatch, CategoryReader, CategoryRepository,
    Constraint, Error, NewCategory, Result, Timestamp,
};

use crate::entity::{entity_sql, read_repository, repository, PgEntity, PgUniqueEntity};
use crate::session::{PgQuery, Session};

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
    const INSERT: &'static str = concat!(
        "INSERT INTO categories (id, name, slug, created_at, updated_at) ",
        "VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING"
    );
    const INSERT_MANY: &'static str = concat!(
        "INSERT INTO categories (id, name, slug, created_at, updated_at) ",
        "SELECT u.id, u.name, u.slug, $4, $4 FROM UNNEST($1::uuid[], $2::text[], $3::text[]) ",
        "AS u(id, name, slug) ON CONFLICT DO NOTHING RETURNING id"
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

    fn from_new(new: NewCategory, now: Timestamp) -> Self {
        stockroom_core::Entity::create(new, now)
    }

    fn bind_insert<'q>(query: PgQuery<'q>, row: &'q Self) -> PgQuery<'q> {
        query
            .bind(row.id.as_uuid())
            .bind(&row.name)
            .bind(&row.slug)
            .bind(row.created_at)
    }

    fn bind_insert_many<'q>(query: PgQuery<'q>, rows: &'q [Self]) -> PgQuery<'q> {
        query
            .bind(rows.iter().map(|c| c.id.as_uuid()).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.name.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|c| c.slug.as_str()).collect::<Vec<_>>())
    }

    async fn why_not_inserted(
        session: &mut Session,
        row: &Self,
        except: &[Self::Id],
    ) -> Result<Error> {
        session.why_unique_not_inserted(row, except).await
    }

    fn push_set(qb: &mut QueryBuilder<Postgres>, patch: &CategoryPatch) {
        if let Some(name) = patch.name() {
            qb.push(", name = ").push_bind(name.to_owned());
        }
        if let Some(slug) = patch.slug() {
            qb.push(", slug = ").push_bind(slug.to_owned());
        }
    }

    fn push_guards(qb: &mut QueryBuilder<Postgres>, patch: &CategoryPatch) {
        if let Some(slug) = patch.slug() {
            qb.push(" AND NOT EXISTS (SELECT 1 FROM categories o WHERE o.slug = ")
                .push_bind(slug.to_owned())
                .push(" AND o.deleted_at IS NULL AND o.id <> categories.id)");
        }
    }

    fn sets_unique(patch: &CategoryPatch) -> bool {
        patch.slug().is_some()
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
        patch.slug()
    }
}

read_repository!(Category);

const BY_SLUG: &str = concat!(
    "SELECT id, name, slug, created_at, updated_at, deleted_at, version ",
    "FROM categories WHERE slug = $1 AND deleted_at IS NULL"
);

#[async_trait]
impl CategoryReader for Session {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        self.get_row_by::<Category>(BY_SLUG, slug).await
    }
}

impl CategoryRepository for Session {}

repository!(Category);

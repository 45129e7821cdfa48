//! Categories: their table, their one unique value (the slug) and their reads by slug.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};
use stockroom_core::{
    Category, CategoryFilter, CategoryPatch, CategoryReader, CategoryRepository, Constraint, Error,
    Result,
};

use crate::codec::CategoryRow;
use crate::session::{PgQuery, Session};
use crate::sql::{entity_sql, PgEntity, PgUniqueEntity};

/// The columns every read of a category selects.
macro_rules! columns {
    () => {
        "id, name, slug, created_at, updated_at, deleted_at, version"
    };
}

impl PgEntity for Category {
    type Row = CategoryRow;
    entity_sql!("categories", columns!());
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

    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &CategoryFilter) {
        if let Some(slug) = &filter.slug {
            qb.push(" AND slug = ").push_bind(slug.as_str().to_owned());
        }
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
        "AND id <> ALL($2)) AS taken"
    );
    const CONFLICT: Error = Error::Conflict {
        constraint: Constraint::CategorySlug,
    };
    const WHAT: &'static str = "the category";

    fn unique_in(patch: &CategoryPatch) -> Option<&str> {
        patch.slug()
    }
}

const BY_SLUG: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM categories WHERE slug = $1 AND deleted_at IS NULL"
);

#[async_trait]
impl CategoryReader for Session {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        self.get_row_by::<Category>(BY_SLUG, slug).await
    }
}

impl CategoryRepository for Session {}

//! Users: their table, their one unique value (the email) and their reads by email.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};
use stockroom_core::{
    Constraint, Error, Result, User, UserFilter, UserPatch, UserReader, UserRepository,
};

use crate::codec::UserRow;
use crate::session::{PgQuery, Session};
use crate::sql::{entity_sql, PgEntity, PgUniqueEntity};

/// The columns every read of a user selects.
macro_rules! columns {
    () => {
        "id, email, display_name, created_at, updated_at, deleted_at, version"
    };
}

impl PgEntity for User {
    type Row = UserRow;
    entity_sql!("users", columns!());
    const RESTORE: &'static str = concat!(
        "UPDATE users u SET deleted_at = NULL, updated_at = $2, version = u.version + 1 ",
        "WHERE u.id = $1 AND u.deleted_at IS NOT NULL AND NOT EXISTS ",
        "(SELECT 1 FROM users o WHERE o.email = u.email AND o.deleted_at IS NULL)"
    );
    const INSERT: &'static str = concat!(
        "INSERT INTO users (id, email, display_name, created_at, updated_at) ",
        "VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING"
    );
    const INSERT_MANY: &'static str = concat!(
        "INSERT INTO users (id, email, display_name, created_at, updated_at) ",
        "SELECT u.id, u.email, u.display_name, $4, $4 ",
        "FROM UNNEST($1::uuid[], $2::text[], $3::text[]) ",
        "AS u(id, email, display_name) ON CONFLICT DO NOTHING RETURNING id"
    );

    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &UserFilter) {
        if let Some(email) = &filter.email {
            qb.push(" AND email = ")
                .push_bind(email.as_str().to_owned());
        }
    }

    fn bind_insert<'q>(query: PgQuery<'q>, row: &'q Self) -> PgQuery<'q> {
        query
            .bind(row.id.as_uuid())
            .bind(&row.email)
            .bind(&row.display_name)
            .bind(row.created_at)
    }

    fn bind_insert_many<'q>(query: PgQuery<'q>, rows: &'q [Self]) -> PgQuery<'q> {
        query
            .bind(rows.iter().map(|u| u.id.as_uuid()).collect::<Vec<_>>())
            .bind(rows.iter().map(|u| u.email.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|u| u.display_name.as_str())
                    .collect::<Vec<_>>(),
            )
    }

    async fn why_not_inserted(
        session: &mut Session,
        row: &Self,
        except: &[Self::Id],
    ) -> Result<Error> {
        session.why_unique_not_inserted(row, except).await
    }

    fn push_set(qb: &mut QueryBuilder<Postgres>, patch: &UserPatch) {
        if let Some(email) = patch.email() {
            qb.push(", email = ").push_bind(email.to_owned());
        }
        if let Some(name) = patch.display_name() {
            qb.push(", display_name = ").push_bind(name.to_owned());
        }
    }

    fn push_guards(qb: &mut QueryBuilder<Postgres>, patch: &UserPatch) {
        if let Some(email) = patch.email() {
            qb.push(" AND NOT EXISTS (SELECT 1 FROM users o WHERE o.email = ")
                .push_bind(email.to_owned())
                .push(" AND o.deleted_at IS NULL AND o.id <> users.id)");
        }
    }

    fn sets_unique(patch: &UserPatch) -> bool {
        patch.email().is_some()
    }
}

impl PgUniqueEntity for User {
    const TAKEN: &'static str = concat!(
        "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1 AND deleted_at IS NULL ",
        "AND id <> ALL($2)) AS taken"
    );
    const CONFLICT: Error = Error::Conflict {
        constraint: Constraint::UserEmail,
    };
    const WHAT: &'static str = "the user";

    fn unique_in(patch: &UserPatch) -> Option<&str> {
        patch.email()
    }
}

const BY_EMAIL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE email = $1 AND deleted_at IS NULL"
);

#[async_trait]
impl UserReader for Session {
    async fn by_email(&mut self, email: &str) -> Result<Option<User>> {
        let email = email.to_lowercase();
        self.get_row_by::<User>(BY_EMAIL, &email).await
    }
}

impl UserRepository for Session {}

//! Users.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use stockroom_core::time::now;
use stockroom_core::{
    Constraint, Error, NewUser, Repository, Result, Timestamp, User, UserFilter, UserId, UserPatch,
    UserReader, UserRepository,
};
use uuid::Uuid;

use crate::entity::{entity_sql, get_bool, push_one_live_guard, read_repository, uuids, PgEntity};
use crate::error::map_error;
use crate::session::Session;

impl PgEntity for User {
    entity_sql!(
        "users",
        "id, email, display_name, created_at, updated_at, deleted_at, version"
    );

    fn decode_at(row: &PgRow, b: usize) -> sqlx::Result<Self> {
        Ok(User {
            id: UserId::from_uuid(row.try_get(b)?),
            email: row.try_get(b + 1)?,
            display_name: row.try_get(b + 2)?,
            created_at: row.try_get(b + 3)?,
            updated_at: row.try_get(b + 4)?,
            deleted_at: row.try_get(b + 5)?,
            version: row.try_get(b + 6)?,
        })
    }

    fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &UserFilter) {
        if let Some(email) = &filter.email {
            qb.push(" AND email = ")
                .push_bind(email.as_str().to_owned());
        }
    }
}

read_repository!(User);

const BY_EMAIL: &str = concat!(
    "SELECT id, email, display_name, created_at, updated_at, deleted_at, version ",
    "FROM users WHERE email = $1 AND deleted_at IS NULL"
);
const INSERT: &str = concat!(
    "INSERT INTO users (id, email, display_name, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING"
);
const INSERT_MANY: &str = concat!(
    "INSERT INTO users (id, email, display_name, created_at, updated_at) ",
    "SELECT u.id, u.email, u.display_name, $4, $4 ",
    "FROM UNNEST($1::uuid[], $2::text[], $3::text[]) ",
    "AS u(id, email, display_name) ON CONFLICT DO NOTHING RETURNING id"
);
const DELETE_MANY: &str = "DELETE FROM users WHERE id = ANY($1)";
const EMAIL_TAKEN: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1 AND deleted_at IS NULL ",
    "AND id <> ALL($2))"
);
const RESTORE: &str = concat!(
    "UPDATE users u SET deleted_at = NULL, updated_at = $2, version = u.version + 1 ",
    "WHERE u.id = $1 AND u.deleted_at IS NOT NULL AND NOT EXISTS ",
    "(SELECT 1 FROM users o WHERE o.email = u.email AND o.deleted_at IS NULL)"
);
const IS_DELETED: &str =
    "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NOT NULL)";

const EMAIL_CONFLICT: Error = Error::Conflict {
    constraint: Constraint::UserEmail,
};

impl Session {
    async fn user_email_taken(&mut self, email: &str, except: &[UserId]) -> Result<bool> {
        let query = sqlx::query(EMAIL_TAKEN).bind(email).bind(uuids(except));
        let row = self.fetch_one(EMAIL_TAKEN, query).await?;
        get_bool(&row, 0)
    }
}

fn push_update(qb: &mut QueryBuilder<Postgres>, patch: &UserPatch) {
    qb.push("UPDATE users SET updated_at = ")
        .push_bind(now())
        .push(", version = version + 1");
    if let Some(email) = patch.email_value() {
        qb.push(", email = ").push_bind(email.to_owned());
    }
    if let Some(name) = patch.display_name_value() {
        qb.push(", display_name = ").push_bind(name.to_owned());
    }
}

fn push_guards(qb: &mut QueryBuilder<Postgres>, patch: &UserPatch) {
    if let Some(email) = patch.email_value() {
        qb.push(" AND NOT EXISTS (SELECT 1 FROM users o WHERE o.email = ")
            .push_bind(email.to_owned())
            .push(" AND o.deleted_at IS NULL AND o.id <> users.id)");
    }
}

#[async_trait]
impl UserReader for Session {
    async fn by_email(&mut self, email: &str) -> Result<Option<User>> {
        let email = email.to_lowercase();
        let row = self
            .fetch_optional(BY_EMAIL, sqlx::query(BY_EMAIL).bind(email))
            .await?;
        row.as_ref().map(User::decode).transpose()
    }
}

impl UserRepository for Session {}

#[async_trait]
impl Repository<User> for Session {
    async fn create(&mut self, new: NewUser) -> Result<User> {
        let user = new.into_entity(now());
        let query = sqlx::query(INSERT)
            .bind(user.id.as_uuid())
            .bind(&user.email)
            .bind(&user.display_name)
            .bind(user.created_at);
        if self.execute(INSERT, query).await?.rows_affected() == 1 {
            return Ok(user);
        }
        if self.user_email_taken(&user.email, &[]).await? {
            return Err(EMAIL_CONFLICT);
        }
        Err(Error::Conflict {
            constraint: Constraint::PrimaryKey,
        })
    }

    async fn create_many(&mut self, new: Vec<NewUser>) -> Result<Vec<User>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let created_at = now();
        let users: Vec<User> = new.into_iter().map(|n| n.into_entity(created_at)).collect();
        let query = sqlx::query(INSERT_MANY)
            .bind(users.iter().map(|c| c.id.as_uuid()).collect::<Vec<_>>())
            .bind(users.iter().map(|c| c.email.as_str()).collect::<Vec<_>>())
            .bind(
                users
                    .iter()
                    .map(|c| c.display_name.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(created_at);
        let rows = self.fetch_all(INSERT_MANY, query).await?;
        if rows.len() == users.len() {
            return Ok(users);
        }
        // All or nothing: an email was taken (by a live row or an earlier row of the batch).
        let inserted: HashSet<Uuid> = rows
            .iter()
            .map(|r| r.try_get::<Uuid, _>(0))
            .collect::<sqlx::Result<_>>()
            .map_err(map_error)?;
        let ids = uuids(&users.iter().map(|c| c.id).collect::<Vec<_>>());
        let failed = users
            .iter()
            .find(|c| !inserted.contains(&c.id.as_uuid()))
            .expect("fewer rows inserted than given");
        let error = if self.user_email_taken(&failed.email, &[failed.id]).await? {
            EMAIL_CONFLICT
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
        id: UserId,
        patch: &UserPatch,
        expected_version: Option<i64>,
    ) -> Result<User> {
        let mut qb = QueryBuilder::new("");
        push_update(&mut qb, patch);
        qb.push(" WHERE id = ")
            .push_bind(id.as_uuid())
            .push(" AND deleted_at IS NULL");
        if let Some(version) = expected_version {
            qb.push(" AND version = ").push_bind(version);
        }
        push_guards(&mut qb, patch);
        qb.push(" RETURNING ").push(User::COLUMNS);
        let sql = qb.sql();
        if let Some(row) = self.fetch_optional(sql.as_str(), qb.build()).await? {
            return User::decode(&row);
        }
        if let Some(error) = self.stale_or_missing::<User>(id, expected_version).await? {
            return Err(error);
        }
        match patch.email_value() {
            Some(email) if self.user_email_taken(email, &[id]).await? => Err(EMAIL_CONFLICT),
            _ => Err(Error::Transient {
                reason: "the user changed concurrently; retry".to_owned(),
            }),
        }
    }

    async fn update_many(&mut self, ids: &[UserId], patch: &UserPatch) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut qb = QueryBuilder::new("");
        push_update(&mut qb, patch);
        qb.push(" WHERE id = ANY(")
            .push_bind(uuids(ids))
            .push(") AND deleted_at IS NULL");
        push_guards(&mut qb, patch);
        if patch.email_value().is_some() {
            push_one_live_guard(&mut qb, "users", ids);
        }
        let sql = qb.sql();
        let changed = self
            .execute(sql.as_str(), qb.build())
            .await?
            .rows_affected();
        match patch.email_value() {
            Some(value) if changed == 0 => {
                // Nothing changed: no live row among `ids`, two of them cannot take one
                // value, or another live row holds it.
                let live = self.get_rows::<User>(ids).await?.len();
                if live == 0 {
                    Ok(0)
                } else if live > 1 || self.user_email_taken(value, ids).await? {
                    Err(EMAIL_CONFLICT)
                } else {
                    Err(Error::Transient {
                        reason: "the user changed concurrently; retry".to_owned(),
                    })
                }
            }
            _ => Ok(changed),
        }
    }

    async fn soft_delete(&mut self, id: UserId) -> Result<bool> {
        self.soft_delete_row::<User>(id).await
    }

    async fn restore(&mut self, id: UserId) -> Result<bool> {
        let query = sqlx::query(RESTORE).bind(id.as_uuid()).bind(now());
        if self.execute(RESTORE, query).await?.rows_affected() == 1 {
            return Ok(true);
        }
        let row = self
            .fetch_one(IS_DELETED, sqlx::query(IS_DELETED).bind(id.as_uuid()))
            .await?;
        if get_bool(&row, 0)? {
            Err(EMAIL_CONFLICT)
        } else {
            Ok(false)
        }
    }

    async fn hard_delete(&mut self, id: UserId) -> Result<bool> {
        self.hard_delete_row::<User>(id).await
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        self.purge_rows::<User>(before).await
    }
}

//! Users: the `users` table, its row mapping and filter, and its repository port.

use async_trait::async_trait;
use rusqlite::types::Value;
use stockroom_core::{Result, User, UserFilter, UserId, UserReader, UserRepository};

use super::codec::{blob, meta_values, text, RowReader};
use super::{Table, Where};
use crate::conn::Conn;

impl Table for User {
    table_columns!("users": "id", "email", "display_name");

    fn read(row: &mut RowReader<'_, '_>) -> rusqlite::Result<Self> {
        let id = UserId::from_uuid(row.uuid()?);
        let email = row.get()?;
        let display_name = row.get()?;
        let (created_at, updated_at, deleted_at, version) = row.meta()?;
        Ok(User {
            id,
            email,
            display_name,
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

#[async_trait]
impl UserReader for Conn {
    /// Emails are stored lower-cased: the lookup is too.
    async fn by_email(&mut self, email: &str) -> Result<Option<User>> {
        self.by_column("email", email.to_lowercase()).await
    }
}

impl UserRepository for Conn {}

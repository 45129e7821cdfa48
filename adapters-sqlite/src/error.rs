//! Mapping of rusqlite's errors onto [`stockroom_core::Error`], and the adapter's own refusals.

use rusqlite::ffi;
use rusqlite::ErrorCode;
use stockroom_core::{Constraint, Error};

/// What the SQLite adapter itself refuses. It reaches a caller as [`Error::Backend`], whose
/// message says it and whose [`source`](std::error::Error::source) is this value, so a caller
/// can tell the cases apart with `downcast_ref::<SqliteError>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// An applied migration's recorded checksum differs from the embedded migration's: its SQL
    /// was edited after it was applied, or its bookkeeping row was changed. Nothing was changed.
    #[error(
        "Stockroom migration {version} ({description}) was applied with checksum {applied}, \
         but this build's is {embedded}: the migration or its row in stockroom_migrations changed"
    )]
    MigrationChecksum {
        version: i64,
        description: String,
        /// The checksum recorded in `stockroom_migrations`.
        applied: String,
        /// The checksum of the SQL this build embeds.
        embedded: String,
    },
    /// The database records a migration this build does not have: a newer Stockroom migrated
    /// it. Nothing was changed.
    #[error(
        "the database has Stockroom migration {version} ({description}), which this build does \
         not know: a newer Stockroom migrated it"
    )]
    UnknownMigration { version: i64, description: String },
    /// The unit of work's transaction ended under it: the application ran `COMMIT` or
    /// `ROLLBACK` through [`with_connection`](crate::with_connection), or SQLite rolled the
    /// transaction back after an error (such as a full disk). The unit of work runs no more
    /// statements, and neither commits nor rolls back: what was written is the application's
    /// to find out.
    #[error(
        "the unit of work's transaction already ended (COMMIT or ROLLBACK inside \
         with_connection, or a rollback by SQLite after an error): it runs nothing more"
    )]
    TransactionEnded,
    /// A database file could not be put in WAL mode, which the store's parallel reads need.
    #[error("the database file could not be put in WAL mode (it stays in {mode} mode)")]
    NotWal { mode: String },
    /// The `on_open` hook left a transaction open on a new connection.
    #[error("the on_open hook left a transaction open")]
    OpenHookLeftTransaction,
}

impl From<SqliteError> for Error {
    fn from(error: SqliteError) -> Self {
        Error::backend(format!("sqlite: {error}"), error)
    }
}

/// Maps a rusqlite error onto the core's error, naming the constraint of a unique violation.
pub(crate) fn map(error: rusqlite::Error) -> Error {
    let (code, extended, message) = match &error {
        rusqlite::Error::SqliteFailure(failure, message) => (
            failure.code,
            failure.extended_code,
            message.clone().unwrap_or_else(|| failure.to_string()),
        ),
        _ => return Error::backend(error.to_string(), error),
    };
    match code {
        ErrorCode::ConstraintViolation
            if matches!(
                extended,
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            match constraint_of(&message) {
                Some(constraint) => Error::Conflict { constraint },
                None => Error::backend(message, error),
            }
        }
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Error::Transient {
            reason: format!("sqlite: {message}"),
        },
        ErrorCode::CannotOpen
        | ErrorCode::SystemIoFailure
        | ErrorCode::DiskFull
        | ErrorCode::PermissionDenied
        | ErrorCode::ReadOnly => Error::Unavailable {
            reason: format!("sqlite: {message}"),
        },
        _ => Error::backend(format!("sqlite: {message}"), error),
    }
}

/// The constraint a unique violation names. SQLite reports the columns of the violated index
/// (`UNIQUE constraint failed: products.sku`), not its name, so the columns of every unique index
/// of the schema map back to the constraint whose name the index carries.
fn constraint_of(message: &str) -> Option<Constraint> {
    if let Some(c) = Constraint::from_message(message) {
        return Some(c);
    }
    let columns = message.rsplit_once(": ").map_or(message, |(_, c)| c).trim();
    Some(match columns {
        "products.slug" => Constraint::ProductSlug,
        "products.sku" => Constraint::ProductSku,
        "categories.slug" => Constraint::CategorySlug,
        "users.email" => Constraint::UserEmail,
        "reviews.product_id, reviews.author_id" => Constraint::ReviewAuthor,
        "stock_movements.idempotency_key" => Constraint::IdempotencyKey,
        c if c.ends_with(".id") => Constraint::PrimaryKey,
        _ => return None,
    })
}

/// The error of a store that was closed.
pub(crate) fn closed() -> Error {
    Error::Unavailable {
        reason: "the sqlite store is closed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_messages_name_their_constraint() {
        let cases = [
            (
                "UNIQUE constraint failed: products.sku",
                Constraint::ProductSku,
            ),
            (
                "UNIQUE constraint failed: products.slug",
                Constraint::ProductSlug,
            ),
            (
                "UNIQUE constraint failed: categories.slug",
                Constraint::CategorySlug,
            ),
            (
                "UNIQUE constraint failed: users.email",
                Constraint::UserEmail,
            ),
            (
                "UNIQUE constraint failed: reviews.product_id, reviews.author_id",
                Constraint::ReviewAuthor,
            ),
            (
                "UNIQUE constraint failed: stock_movements.idempotency_key",
                Constraint::IdempotencyKey,
            ),
            ("UNIQUE constraint failed: users.id", Constraint::PrimaryKey),
        ];
        for (message, constraint) in cases {
            assert_eq!(constraint_of(message), Some(constraint), "{message}");
        }
        assert_eq!(constraint_of("UNIQUE constraint failed: other.x"), None);
    }
}

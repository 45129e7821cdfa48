//! Mapping of rusqlite's errors onto [`stockroom_core::Error`].

use rusqlite::ffi;
use rusqlite::ErrorCode;
use stockroom_core::{Constraint, Error};

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

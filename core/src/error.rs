//! The one error type of Stockroom. Every adapter maps its driver's errors onto [`Error`], so a
//! caller never matches on sqlx or rusqlite types.

use std::fmt;

use crate::ids::EntityId;

/// Which kind of entity an error (or a span) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntityKind {
    /// A [`Product`](crate::Product) (`"product"`).
    Product,
    /// A [`Category`](crate::Category) (`"category"`).
    Category,
    /// A [`User`](crate::User) (`"user"`).
    User,
    /// A [`Review`](crate::Review) (`"review"`).
    Review,
    /// A [`StockMovement`](crate::StockMovement), a row of the stock ledger (`"stock_movement"`).
    StockMovement,
}

impl EntityKind {
    /// The lower-case name used in messages, spans and table names.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntityKind::Product => "product",
            EntityKind::Category => "category",
            EntityKind::User => "user",
            EntityKind::Review => "review",
            EntityKind::StockMovement => "stock_movement",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A uniqueness rule of the domain. Every one of them holds among live (not soft-deleted) rows only.
///
/// [`as_str`](Constraint::as_str) is its stable, machine-readable name (what an API shows a
/// client, and what `serde` writes); [`field`](Constraint::field) names the input field it is
/// about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Constraint {
    /// Two live products cannot share a slug.
    ProductSlug,
    /// Two live products cannot share a sku.
    ProductSku,
    /// Two live categories cannot share a slug.
    CategorySlug,
    /// Two live users cannot share an email.
    UserEmail,
    /// A user has at most one live review of a product.
    ReviewAuthor,
    /// An idempotency key names at most one transfer.
    IdempotencyKey,
    /// The id is already taken.
    PrimaryKey,
}

impl Constraint {
    /// The constraint's stable name: `product_slug`, `product_sku`, `category_slug`,
    /// `user_email`, `review_author`, `idempotency_key`, `primary_key`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Constraint::ProductSlug => "product_slug",
            Constraint::ProductSku => "product_sku",
            Constraint::CategorySlug => "category_slug",
            Constraint::UserEmail => "user_email",
            Constraint::ReviewAuthor => "review_author",
            Constraint::IdempotencyKey => "idempotency_key",
            Constraint::PrimaryKey => "primary_key",
        }
    }

    /// The input field whose value is taken: `slug`, `sku`, `email`, `author_id`,
    /// `idempotency_key` or `id`.
    pub const fn field(self) -> &'static str {
        match self {
            Constraint::ProductSlug | Constraint::CategorySlug => "slug",
            Constraint::ProductSku => "sku",
            Constraint::UserEmail => "email",
            Constraint::ReviewAuthor => "author_id",
            Constraint::IdempotencyKey => "idempotency_key",
            Constraint::PrimaryKey => "id",
        }
    }

    /// The kind of entity the constraint belongs to.
    pub const fn entity(self) -> Option<EntityKind> {
        match self {
            Constraint::ProductSlug | Constraint::ProductSku => Some(EntityKind::Product),
            Constraint::CategorySlug => Some(EntityKind::Category),
            Constraint::UserEmail => Some(EntityKind::User),
            Constraint::ReviewAuthor => Some(EntityKind::Review),
            Constraint::IdempotencyKey => Some(EntityKind::StockMovement),
            Constraint::PrimaryKey => None,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why the backend refuses work for good (see [`Error::Storage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum StorageFault {
    /// The database accepts no writes: a read-only file or file system, a server in recovery
    /// (a replica).
    ReadOnly,
    /// The database, a file or an object is not ours to write (file permissions, SQL
    /// privileges).
    PermissionDenied,
    /// No space is left for the database to grow.
    Full,
    /// The database file or a page of it is damaged.
    Corrupt,
}

impl StorageFault {
    /// The fault's stable name: `read_only`, `permission_denied`, `full` or `corrupt`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StorageFault::ReadOnly => "read_only",
            StorageFault::PermissionDenied => "permission_denied",
            StorageFault::Full => "full",
            StorageFault::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input was rejected.
///
/// [`as_str`](Rule::as_str) is the rule's stable, machine-readable name. With the `serde`
/// feature a rule serializes as an object: `{"rule": "too_long", "max": 120}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "rule", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Rule {
    /// The value is empty (or only white space).
    Empty,
    /// The value has more than `max` characters.
    TooLong {
        /// The most characters (Unicode scalar values, not bytes) the field takes, such as
        /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
        max: usize,
    },
    /// The value holds a NUL byte or another control character.
    ControlCharacter,
    /// The value does not have the expected shape.
    Malformed {
        /// What the value should look like, in words for a person (`"lowercase letters, digits
        /// and single hyphens"`, say); shown as `must be {expected}`.
        expected: &'static str,
    },
    /// The number is outside `min..=max`.
    OutOfRange {
        /// The smallest value allowed (inclusive).
        min: i64,
        /// The largest value allowed (inclusive), such as [`MAX_STOCK`](crate::MAX_STOCK).
        max: i64,
    },
    /// The value must differ from another field's.
    SameAs {
        /// The name of the other field, such as `source_id` for a transfer's `target_id`.
        other: &'static str,
    },
}

impl Rule {
    /// The rule's stable name: `empty`, `too_long`, `control_character`, `malformed`,
    /// `out_of_range` or `same_as`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Rule::Empty => "empty",
            Rule::TooLong { .. } => "too_long",
            Rule::ControlCharacter => "control_character",
            Rule::Malformed { .. } => "malformed",
            Rule::OutOfRange { .. } => "out_of_range",
            Rule::SameAs { .. } => "same_as",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("must not be empty"),
            Rule::TooLong { max } => write!(f, "must be at most {max} characters"),
            Rule::ControlCharacter => f.write_str("must not contain control characters"),
            Rule::Malformed { expected } => write!(f, "must be {expected}"),
            Rule::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Rule::SameAs { other } => write!(f, "must differ from {other}"),
        }
    }
}

/// The error of every Stockroom operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live row has this id (soft-deleted rows count as absent), for an operation on one
    /// row (see [`Repository`](crate::Repository) for which answer "not found" this way).
    #[error("{entity} {id} not found")]
    NotFound {
        /// The kind of row that was looked for.
        entity: EntityKind,
        /// The id that was asked for; it compares equal to the typed id passed in
        /// (`err_id == product_id`).
        id: EntityId,
    },

    /// A uniqueness rule would be broken.
    #[error("conflict on {constraint}")]
    Conflict {
        /// The rule that would be broken; [`Constraint::field`] names the input field whose
        /// value is taken.
        constraint: Constraint,
    },

    /// A transfer or stock adjustment would take a product's stock below zero.
    #[error(
        "insufficient stock for product {product}: {available} available, {requested} requested"
    )]
    InsufficientStock {
        /// The product whose stock is short (a transfer's source).
        product: crate::ProductId,
        /// The product's stock when the operation was refused, in units (`0..=MAX_STOCK`).
        available: i64,
        /// How many units the operation tried to take (always above `available`): a
        /// transfer's quantity, or the negated delta of a stock adjustment.
        requested: i64,
    },

    /// An input broke a rule; nothing was written.
    #[error("invalid {field}: {rule}")]
    Validation {
        /// The input field, by its stable name: `name`, `slug`, `stock`, `quantity`, `limit`,
        /// `target_id`, or a setting such as `DATABASE_URL` or `url`.
        field: &'static str,
        /// The rule the value broke.
        rule: Rule,
    },

    /// An update named a version that is no longer the row's current one.
    #[error("{entity} {id} was changed concurrently: expected version {expected}, found {actual}")]
    StaleVersion {
        /// The kind of row that was updated.
        entity: EntityKind,
        /// The row that was updated.
        id: EntityId,
        /// The version the caller named (the `version` it last read).
        expected: i64,
        /// The row's current version: read the row again, reapply the change and pass this.
        actual: i64,
    },

    /// A failure that may go away when the operation is retried (serialization failure, deadlock,
    /// busy database).
    #[error("transient failure, retry: {reason}")]
    Transient {
        /// What the backend reported, for logs (not a stable value to match on).
        reason: String,
    },

    /// The backend cannot be reached now (connection refused or lost, no free connection within
    /// the acquire timeout, a closed store). Retrying later may succeed.
    #[error("backend unavailable: {reason}")]
    Unavailable {
        /// Why, for logs (not a stable value to match on).
        reason: String,
    },

    /// The commit was sent, but whether it took effect is unknown: the connection was lost
    /// while the server ran `COMMIT`, or the engine answered that the result is ambiguous
    /// (SQLSTATE 40003, as distributed engines do). The unit of work may or may not be stored.
    ///
    /// Never retried blindly (a retry could apply the work twice): read back to find out, or
    /// retry an operation that is idempotent. A transfer with an idempotency key does this
    /// itself ([`transfer_stock`](crate::transfer_stock)): its key finds the first attempt if it
    /// committed.
    #[error("the commit's outcome is unknown: {reason}")]
    AmbiguousCommit {
        /// What the backend reported, for logs (not a stable value to match on).
        reason: String,
    },

    /// The backend answers but cannot do the operation, and retrying will not change that
    /// until an operator acts: the database is read-only, permission is denied, the disk is
    /// full, the file is corrupt.
    #[error("storage fault ({fault}): {reason}")]
    Storage {
        /// Which kind of fault, a stable value to match on or show.
        fault: StorageFault,
        /// What the backend reported, for logs (not a stable value to match on).
        reason: String,
    },

    /// The operation is not something this backend does, such as asking a memory unit of
    /// work for its SQL connection.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The operation asked for, such as `"with_connection"` (SQLite's connection of a unit
        /// of work).
        operation: &'static str,
        /// The backend that does not do it: `"memory"`, `"sqlite"` or `"postgres"`, as
        /// [`Store::backend`](crate::Store::backend) names it.
        backend: &'static str,
    },

    /// Anything else the backend reported.
    #[error("backend error: {message}")]
    Backend {
        /// What went wrong, for logs (not a stable value to match on).
        message: String,
        /// The driver's error, when there is one (reachable through
        /// [`std::error::Error::source`]).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl Error {
    /// A validation error on `field`.
    pub fn validation(field: &'static str, rule: Rule) -> Self {
        Error::Validation { field, rule }
    }

    /// A not-found error for the row `id` of kind `entity`.
    pub fn not_found(entity: EntityKind, id: impl Into<uuid::Uuid>) -> Self {
        Error::NotFound {
            entity,
            id: EntityId::new(entity, id.into()),
        }
    }

    /// A stale-version error for the row `id` of kind `entity`.
    pub fn stale_version(
        entity: EntityKind,
        id: impl Into<uuid::Uuid>,
        expected: i64,
        actual: i64,
    ) -> Self {
        Error::StaleVersion {
            entity,
            id: EntityId::new(entity, id.into()),
            expected,
            actual,
        }
    }

    /// A backend error carrying its cause.
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Whether retrying the same operation at once may succeed (what the retry runner retries).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// Whether a commit was sent and its outcome is unknown ([`Error::AmbiguousCommit`]).
    pub fn is_ambiguous_commit(&self) -> bool {
        matches!(self, Error::AmbiguousCommit { .. })
    }

    /// Whether the failure lasts until an operator acts ([`Error::Storage`]): retrying, now or
    /// later, is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Storage { .. })
    }
}

/// The result of every Stockroom operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_constraints_have_stable_names() {
        assert_eq!(Rule::TooLong { max: 3 }.as_str(), "too_long");
        assert_eq!(Rule::OutOfRange { min: 0, max: 1 }.as_str(), "out_of_range");
        assert_eq!(Constraint::ProductSlug.as_str(), "product_slug");
        assert_eq!(Constraint::ProductSlug.field(), "slug");
        assert_eq!(Constraint::ProductSlug.to_string(), "product_slug");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn rules_and_constraints_serialize_by_their_names() {
        let rule = serde_json::to_value(Rule::TooLong { max: 200 }).unwrap();
        assert_eq!(rule, serde_json::json!({ "rule": "too_long", "max": 200 }));
        let rule = serde_json::to_value(Rule::Empty).unwrap();
        assert_eq!(rule, serde_json::json!({ "rule": "empty" }));
        let constraint = serde_json::to_value(Constraint::UserEmail).unwrap();
        assert_eq!(constraint, serde_json::json!("user_email"));
    }
}

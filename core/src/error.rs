//! The one error type of Stockroom. Every adapter maps its driver's errors onto [`Error`], so a
//! caller never matches on sqlx or rusqlite types.

use std::fmt;

use crate::ids::EntityId;

/// Which entity an error (or a span) is about: the entity's declared name
/// ([`Schema::name`](crate::schema::Schema::name)), for Stockroom's entities and the
/// application's alike.
///
/// Compare it with the constants of Stockroom's entities ([`EntityKind::PRODUCT`], …) or with
/// [`EntityKind::of`] an entity type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKind(&'static str);

impl EntityKind {
    /// A [`Product`](crate::Product) (`"product"`).
    pub const PRODUCT: Self = Self("product");
    /// A [`Category`](crate::Category) (`"category"`).
    pub const CATEGORY: Self = Self("category");
    /// A [`User`](crate::User) (`"user"`).
    pub const USER: Self = Self("user");
    /// A [`Review`](crate::Review) (`"review"`).
    pub const REVIEW: Self = Self("review");
    /// A [`StockMovement`](crate::StockMovement), a row of the stock ledger (`"stock_movement"`).
    pub const STOCK_MOVEMENT: Self = Self("stock_movement");

    /// The entity named `name` (an entity's [`Schema::name`](crate::schema::Schema::name)).
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The entity `E`.
    pub fn of<E: crate::Entity>() -> Self {
        E::schema().kind()
    }

    /// The entity's name, as messages, spans and problem details show it.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityKind({:?})", self.0)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for EntityKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

/// A rule that values be unique, which holds among live (not soft-deleted) rows only: one of an
/// entity's declared [`Unique`](crate::schema::Unique) rules, or its primary key.
///
/// [`name`](Constraint::name) is its stable, machine-readable name (what an API shows a client,
/// and what `serde` writes); [`field`](Constraint::field) names the input field whose value is
/// taken; [`entity`](Constraint::entity) the entity it belongs to. Compare it with the constants
/// of Stockroom's rules ([`Constraint::PRODUCT_SLUG`], …) or with
/// [`Constraint::of`] an entity's rule.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Constraint {
    entity: EntityKind,
    name: &'static str,
    field: &'static str,
}

impl Constraint {
    /// Two live products cannot share a slug (`product_slug`).
    pub const PRODUCT_SLUG: Self = Self::new(EntityKind::PRODUCT, "product_slug", "slug");
    /// Two live products cannot share a sku (`product_sku`).
    pub const PRODUCT_SKU: Self = Self::new(EntityKind::PRODUCT, "product_sku", "sku");
    /// Two live categories cannot share a slug (`category_slug`).
    pub const CATEGORY_SLUG: Self = Self::new(EntityKind::CATEGORY, "category_slug", "slug");
    /// Two live users cannot share an email (`user_email`).
    pub const USER_EMAIL: Self = Self::new(EntityKind::USER, "user_email", "email");
    /// A user has at most one live review of a product (`review_author`).
    pub const REVIEW_AUTHOR: Self = Self::new(EntityKind::REVIEW, "review_author", "author_id");
    /// An idempotency key names at most one transfer (`idempotency_key`).
    pub const IDEMPOTENCY_KEY: Self = Self::new(
        EntityKind::STOCK_MOVEMENT,
        "idempotency_key",
        "idempotency_key",
    );

    /// The rule `name` of `entity`, about the input field `field`.
    pub const fn new(entity: EntityKind, name: &'static str, field: &'static str) -> Self {
        Self {
            entity,
            name,
            field,
        }
    }

    /// The primary key of `entity`: the id is already taken (`primary_key`, field `id`).
    pub const fn primary_key(entity: EntityKind) -> Self {
        Self::new(entity, "primary_key", "id")
    }

    /// The unique rule named `name` of entity `E`, if it declares one.
    pub fn of<E: crate::Entity>(name: &str) -> Option<Self> {
        let schema = E::schema();
        schema
            .unique
            .iter()
            .find(|u| u.name == name)
            .map(|u| Self::of_rule(schema, u))
    }

    /// A unique constraint of a table that is no entity's: an application's own table, as
    /// the error of the application's SQL names it (`stockroom::postgres::classify`,
    /// `stockroom::sqlite::classify`). Its [`entity`](Self::entity) is the table's name, its
    /// [`name`](Self::name) the table and its columns, `orders(customer_id, number)`, and its
    /// [`field`](Self::field) the last column, on every backend (SQLite's error names the
    /// columns, not the index).
    ///
    /// The names are kept for the life of the process, once per distinct table and column list
    /// (a schema has few), so the constraint stays `Copy` like the entities' own.
    ///
    /// ```
    /// use stockroom_core::Constraint;
    ///
    /// let taken = Constraint::of_table("orders", &["customer_id", "number"]);
    /// assert_eq!(taken.name(), "orders(customer_id, number)");
    /// assert_eq!(taken.entity().as_str(), "orders");
    /// assert_eq!(taken.field(), "number");
    /// assert_eq!(taken, Constraint::of_table("orders", &["customer_id", "number"]));
    /// ```
    pub fn of_table(table: &str, columns: &[&str]) -> Self {
        let name = format!("{table}({})", columns.join(", "));
        let field = columns.last().copied().unwrap_or("id");
        Self::new(EntityKind::new(intern(table)), intern(&name), intern(field))
    }

    /// The constraint of `rule`, a unique rule of `schema`.
    pub fn of_rule(schema: &'static crate::schema::Schema, rule: &crate::schema::Unique) -> Self {
        let field = rule.fields.last().copied().unwrap_or("id");
        Self::new(schema.kind(), rule.name, field)
    }

    /// The rule's stable name: `product_slug`, `product_sku`, `category_slug`, `user_email`,
    /// `review_author`, `idempotency_key`, `primary_key`, or an application's rule's name.
    pub const fn as_str(self) -> &'static str {
        self.name
    }

    /// The rule's stable name (the same as [`as_str`](Self::as_str)).
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// The input field whose value is taken (of a rule over several fields, the last one):
    /// `slug`, `sku`, `email`, `author_id`, `idempotency_key`, `id`, or an application's field.
    pub const fn field(self) -> &'static str {
        self.field
    }

    /// The entity the rule belongs to.
    pub const fn entity(self) -> EntityKind {
        self.entity
    }
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Constraint({}.{})", self.entity, self.name)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name)
    }
}

/// `text` as a `&'static str`, kept once per distinct value for the life of the process: the
/// names of an application's tables and constraints in [`Constraint::of_table`], a set the
/// database's schema bounds.
fn intern(text: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(name) = names.get(text) {
        return name;
    }
    let name: &'static str = Box::leak(text.to_owned().into_boxed_str());
    names.insert(name);
    name
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

/// The code a backend gave a failure, kept on the errors that come from a backend
/// ([`Error::code`]), for logs, metrics and decisions the core's variants do not make.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendCode {
    /// A SQLSTATE, as PostgreSQL reports it: five characters such as `"40001"` (serialization
    /// failure) or `"55P03"` (lock not available).
    SqlState(String),
    /// SQLite's extended result code, such as `5` (`SQLITE_BUSY`) or `2067`
    /// (`SQLITE_CONSTRAINT_UNIQUE`).
    Sqlite(i32),
    /// MariaDB's (MySQL's) error number, such as `1213` (a deadlock, or a Galera certification
    /// failure) or `1062` (a duplicate key): the precise cause, where MariaDB's SQLSTATE is
    /// often the catch-all `HY000` (the driver's error, the error's source, still has it).
    MariaDb(u16),
}

impl fmt::Display for BackendCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendCode::SqlState(state) => write!(f, "SQLSTATE {state}"),
            BackendCode::Sqlite(code) => write!(f, "SQLite result code {code}"),
            BackendCode::MariaDb(code) => write!(f, "MariaDB error {code}"),
        }
    }
}

/// A driver's error, kept as the [`source`](std::error::Error::source) of a Stockroom error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

/// What is wrong with an entity's declaration or table (see [`Error::Schema`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaProblem {
    /// The declaration is one no backend can store: an unknown field in a unique rule, a table
    /// name that is an SQL keyword or one of Stockroom's, a reference to an entity the store
    /// does not know, `SetNull` on a required field, and so on.
    Invalid {
        /// What is wrong, in words.
        reason: String,
    },
    /// The entity's table exists but differs from the declaration (a field added without a
    /// default, renamed, retyped or dropped, or a unique rule's index missing). Nothing was
    /// changed.
    Mismatch {
        /// The table.
        table: &'static str,
        /// The differing columns (or indexes), each once.
        differences: Vec<ColumnDifference>,
    },
    /// A table of the entity's name exists that Stockroom did not create for it, and the
    /// declaration does not say the application owns it ([`Ddl::Application`]); nothing was
    /// changed.
    ///
    /// [`Ddl::Application`]: crate::schema::Ddl::Application
    TableTaken {
        /// The table.
        table: &'static str,
    },
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaProblem::Invalid { reason } => write!(f, "invalid declaration: {reason}"),
            SchemaProblem::Mismatch { table, differences } => {
                write!(f, "table {table} does not match the declaration:")?;
                for (i, d) in differences.iter().enumerate() {
                    f.write_str(if i == 0 { " " } else { "; " })?;
                    write!(f, "{d}")?;
                }
                Ok(())
            }
            SchemaProblem::TableTaken { table } => write!(
                f,
                "a table {table} exists that Stockroom did not create for this entity \
                 (declare the table as the application's to use it)"
            ),
        }
    }
}

/// One column (or index) where a table and its declaration differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDifference {
    /// The column's (or index's) name.
    pub column: String,
    /// What the declaration says it is (`"text not null"`); `None` when the declaration has no
    /// such column.
    pub declared: Option<String>,
    /// What the table has (`"bigint null"`); `None` when the table has no such column.
    pub found: Option<String>,
}

impl fmt::Display for ColumnDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.declared, &self.found) {
            (Some(d), Some(t)) => write!(f, "{} is declared {d} but is {t}", self.column),
            (Some(d), None) => write!(f, "{} is declared {d} but missing", self.column),
            (None, Some(t)) => write!(f, "{} ({t}) is not declared", self.column),
            (None, None) => write!(f, "{}", self.column),
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

    /// A delete for good (`hard_delete`, or a purge of the trash) was refused because rows of
    /// another table still refer to the row: a foreign key of the application's own table (an
    /// order's `product_id`, say) without `ON DELETE CASCADE` or `SET NULL`. Nothing was
    /// deleted, and the unit of work goes on. A purge names one such row.
    #[error("{entity} {id} is still referenced from table {table}")]
    Referenced {
        /// The kind of row whose delete was refused.
        entity: EntityKind,
        /// The row whose delete was refused.
        id: EntityId,
        /// The table whose rows refer to it (the application's table that holds the
        /// foreign key).
        table: String,
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
    /// busy database). Nothing of the operation was applied.
    ///
    /// Build it with [`Error::transient`]; match it with `Error::Transient { .. }`.
    #[error("transient failure, retry: {reason}")]
    #[non_exhaustive]
    Transient {
        /// What the backend reported, for logs (not a stable value to match on).
        reason: String,
        /// The backend's code for it, when it gave one ([`Error::code`]).
        code: Option<BackendCode>,
        /// The driver's error, when there is one (reachable through
        /// [`std::error::Error::source`]).
        #[source]
        source: Option<BoxError>,
    },

    /// The backend cannot be reached now (connection refused or lost, no free connection within
    /// the acquire timeout, a closed store). Retrying later may succeed.
    ///
    /// Build it with [`Error::unavailable`]; match it with `Error::Unavailable { .. }`.
    #[error("backend unavailable: {reason}")]
    #[non_exhaustive]
    Unavailable {
        /// Why, for logs (not a stable value to match on).
        reason: String,
        /// The backend's code for it, when it gave one ([`Error::code`]).
        code: Option<BackendCode>,
        /// The driver's error, when there is one (reachable through
        /// [`std::error::Error::source`]).
        #[source]
        source: Option<BoxError>,
    },

    /// The commit was sent, but whether it took effect is unknown: the connection was lost
    /// while the server ran `COMMIT`, or the engine answered that the result is ambiguous
    /// (SQLSTATE 40003, as distributed engines do). The unit of work may or may not be stored.
    ///
    /// Never retried blindly (a retry could apply the work twice): read back to find out, or
    /// retry an operation that is idempotent. A transfer with an idempotency key does this
    /// itself ([`transfer_stock`](crate::transfer_stock)): its key finds the first attempt if it
    /// committed.
    ///
    /// Build it with [`Error::ambiguous_commit`]; match it with `Error::AmbiguousCommit { .. }`.
    #[error("the commit's outcome is unknown: {reason}")]
    #[non_exhaustive]
    AmbiguousCommit {
        /// What the backend reported, for logs (not a stable value to match on).
        reason: String,
        /// The backend's code for it, when it gave one ([`Error::code`]).
        code: Option<BackendCode>,
        /// The error that left the outcome unknown, when there is one (reachable through
        /// [`std::error::Error::source`]).
        #[source]
        source: Option<BoxError>,
    },

    /// The backend answers but cannot do the operation, and retrying will not change that
    /// until an operator acts: the database is read-only, permission is denied, the disk is
    /// full, the file is corrupt.
    ///
    /// Build it with [`Error::storage`]; match it with `Error::Storage { fault, .. }`.
    #[error("storage fault ({fault}): {reason}")]
    #[non_exhaustive]
    Storage {
        /// Which kind of fault, a stable value to match on or show.
        fault: StorageFault,
        /// What the backend reported, for logs (not a stable value to match on).
        reason: String,
        /// The backend's code for it, when it gave one ([`Error::code`]).
        code: Option<BackendCode>,
        /// The driver's error, when there is one (reachable through
        /// [`std::error::Error::source`]).
        #[source]
        source: Option<BoxError>,
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

    /// The entity is not one of the store's: an application's entity must be registered with
    /// [`StoreConfig::with_entity`](crate::StoreConfig::with_entity) before the store connects.
    #[error(
        "entity {entity} is not registered with this store (register it with \
         StoreConfig::with_entity before connecting)"
    )]
    UnknownEntity {
        /// The entity that was used.
        entity: EntityKind,
    },

    /// An entity's declaration cannot be stored, or its table does not match it. Raised when
    /// the store is built (connect, `from_pool`, `migrate`), before any row is read or written.
    #[error("entity {entity}: {problem}")]
    Schema {
        /// The entity whose declaration or table is at fault.
        entity: EntityKind,
        /// What is wrong.
        problem: SchemaProblem,
    },

    /// Anything else the backend reported.
    ///
    /// Build it with [`Error::backend`] or [`Error::backend_message`]; match it with
    /// `Error::Backend { .. }`.
    #[error("backend error: {message}")]
    #[non_exhaustive]
    Backend {
        /// What went wrong, for logs (not a stable value to match on).
        message: String,
        /// The backend's code for it, when it gave one ([`Error::code`]).
        code: Option<BackendCode>,
        /// The driver's error, when there is one (reachable through
        /// [`std::error::Error::source`]).
        #[source]
        source: Option<BoxError>,
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

    /// A [`Referenced`](Error::Referenced) error: the row `id` of kind `entity` cannot be
    /// deleted for good while rows of `table` refer to it.
    pub fn referenced(
        entity: EntityKind,
        id: impl Into<uuid::Uuid>,
        table: impl Into<String>,
    ) -> Self {
        Error::Referenced {
            entity,
            id: EntityId::new(entity, id.into()),
            table: table.into(),
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
        Error::backend_message(message).with_source(source)
    }

    /// A backend error with no driver error behind it (a value the backend returned that
    /// Stockroom cannot read, say).
    pub fn backend_message(message: impl Into<String>) -> Self {
        Error::Backend {
            message: message.into(),
            code: None,
            source: None,
        }
    }

    /// A [`Transient`](Error::Transient) failure: nothing was applied, and the same operation
    /// may succeed at once.
    pub fn transient(reason: impl Into<String>) -> Self {
        Error::Transient {
            reason: reason.into(),
            code: None,
            source: None,
        }
    }

    /// An [`Unavailable`](Error::Unavailable) backend.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
            code: None,
            source: None,
        }
    }

    /// An [`AmbiguousCommit`](Error::AmbiguousCommit): a commit was sent and its outcome is
    /// unknown.
    pub fn ambiguous_commit(reason: impl Into<String>) -> Self {
        Error::AmbiguousCommit {
            reason: reason.into(),
            code: None,
            source: None,
        }
    }

    /// A [`Storage`](Error::Storage) fault of kind `fault`.
    pub fn storage(fault: StorageFault, reason: impl Into<String>) -> Self {
        Error::Storage {
            fault,
            reason: reason.into(),
            code: None,
            source: None,
        }
    }

    /// This error with `source` as its cause (what [`std::error::Error::source`] returns),
    /// on the variants that come from a backend: `Transient`, `Unavailable`,
    /// `AmbiguousCommit`, `Storage` and `Backend`. The other variants say all there is to say
    /// and are returned unchanged.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        if let Some((_, slot)) = self.cause_mut() {
            *slot = Some(Box::new(source));
        }
        self
    }

    /// This error with the backend's `code` for it, on the variants that come from a backend
    /// (as [`with_source`](Error::with_source) says); the others are returned unchanged.
    pub fn with_code(mut self, code: BackendCode) -> Self {
        if let Some((slot, _)) = self.cause_mut() {
            *slot = Some(code);
        }
        self
    }

    /// The code the backend gave this failure: a SQLSTATE on PostgreSQL, an extended result
    /// code on SQLite. `None` for the variants that do not come from a backend, and for
    /// failures the backend gave no code (a refused connection, a closed store).
    ///
    /// ```
    /// use stockroom_core::{BackendCode, Error};
    ///
    /// let busy = Error::transient("could not serialize access")
    ///     .with_code(BackendCode::SqlState("40001".into()));
    /// assert_eq!(busy.sqlstate(), Some("40001"));
    /// assert_eq!(busy.code(), Some(&BackendCode::SqlState("40001".into())));
    /// ```
    pub fn code(&self) -> Option<&BackendCode> {
        match self {
            Error::Transient { code, .. }
            | Error::Unavailable { code, .. }
            | Error::AmbiguousCommit { code, .. }
            | Error::Storage { code, .. }
            | Error::Backend { code, .. } => code.as_ref(),
            _ => None,
        }
    }

    /// The SQLSTATE of this failure, when the backend gave one ([`code`](Error::code)).
    pub fn sqlstate(&self) -> Option<&str> {
        match self.code()? {
            BackendCode::SqlState(state) => Some(state),
            _ => None,
        }
    }

    fn cause_mut(&mut self) -> Option<(&mut Option<BackendCode>, &mut Option<BoxError>)> {
        match self {
            Error::Transient { code, source, .. }
            | Error::Unavailable { code, source, .. }
            | Error::AmbiguousCommit { code, source, .. }
            | Error::Storage { code, source, .. }
            | Error::Backend { code, source, .. } => Some((code, source)),
            _ => None,
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
        assert_eq!(Constraint::PRODUCT_SLUG.as_str(), "product_slug");
        assert_eq!(Constraint::PRODUCT_SLUG.field(), "slug");
        assert_eq!(Constraint::PRODUCT_SLUG.to_string(), "product_slug");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the driver's words")]
    struct DriverError;

    #[test]
    fn errors_from_a_backend_keep_their_cause_and_code() {
        use std::error::Error as _;
        let code = BackendCode::SqlState("40001".into());
        for error in [
            Error::transient("retry"),
            Error::unavailable("gone"),
            Error::ambiguous_commit("unknown"),
            Error::storage(StorageFault::Full, "full"),
            Error::backend_message("odd"),
        ] {
            let error = error.with_code(code.clone()).with_source(DriverError);
            assert_eq!(error.code(), Some(&code), "{error:?}");
            assert_eq!(error.sqlstate(), Some("40001"));
            let source = error.source().expect("the driver error is the source");
            assert!(source.is::<DriverError>(), "{source:?}");
        }
        let sqlite = Error::transient("busy").with_code(BackendCode::Sqlite(5));
        assert_eq!(sqlite.sqlstate(), None);
        assert_eq!(sqlite.code(), Some(&BackendCode::Sqlite(5)));
        // An error that does not come from a backend has neither.
        let not_found = Error::not_found(EntityKind::PRODUCT, uuid::Uuid::nil())
            .with_code(code)
            .with_source(DriverError);
        assert_eq!(not_found.code(), None);
        assert!(not_found.source().is_none());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn rules_and_constraints_serialize_by_their_names() {
        let rule = serde_json::to_value(Rule::TooLong { max: 200 }).unwrap();
        assert_eq!(rule, serde_json::json!({ "rule": "too_long", "max": 200 }));
        let rule = serde_json::to_value(Rule::Empty).unwrap();
        assert_eq!(rule, serde_json::json!({ "rule": "empty" }));
        let constraint = serde_json::to_value(Constraint::USER_EMAIL).unwrap();
        assert_eq!(constraint, serde_json::json!("user_email"));
    }
}

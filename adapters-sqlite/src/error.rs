//! Mapping of rusqlite's errors onto [`stockroom_core::Error`], and the adapter's own refusals.

use std::io;
use std::path::Path;

use rusqlite::ffi;
use rusqlite::ErrorCode;
use stockroom_core::adapter::LEDGER_TABLE;
use stockroom_core::schema::Catalog;
use stockroom_core::{BackendCode, Constraint, Error, StorageFault};

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
        /// The migration's version.
        version: i64,
        /// The migration's description.
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
    UnknownMigration {
        /// The version recorded in `stockroom_migrations`.
        version: i64,
        /// The description recorded with it.
        description: String,
    },
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
    NotWal {
        /// The journal mode the file stays in.
        mode: String,
    },
    /// The `on_open` hook left a transaction open on a new connection.
    #[error("the on_open hook left a transaction open")]
    OpenHookLeftTransaction,
}

impl From<SqliteError> for Error {
    fn from(error: SqliteError) -> Self {
        Error::backend(format!("sqlite: {error}"), error)
    }
}

/// Maps a rusqlite error onto the core's error. A unique violation names its constraint only
/// for the ledger's idempotency key: the entities' rules are named by [`map_with`] the store's
/// catalog.
pub(crate) fn map(error: rusqlite::Error) -> Error {
    map_in(None, error)
}

/// Maps an error of the application's own SQL (run in [`with_connection`](crate::with_connection)
/// or [`with_read_connection`](crate::with_read_connection)) onto Stockroom's error, as
/// Stockroom maps its own, so that `?` after `.map_err(stockroom_sqlite::classify)` keeps the
/// error's meaning and [`StoreExt::run`](stockroom_core::StoreExt::run) retries what it should:
/// `SQLITE_BUSY` and `SQLITE_LOCKED` are `Transient`; a unique violation is `Conflict`, on a rule
/// of Stockroom's entities by its name, on another table as [`Constraint::of_table`] (the
/// table, and the columns SQLite names); the storage faults and the rest as the table below
/// says. Every error from SQLite keeps the rusqlite error as its
/// [`source`](std::error::Error::source) and SQLite's extended result code as its
/// [`code`](Error::code).
///
/// One answer differs from PostgreSQL's: SQLite's error for a foreign key names neither the
/// key nor the row (`FOREIGN KEY constraint failed`), so an insert that refers to a missing
/// product is `Backend` with the code `SQLITE_CONSTRAINT_FOREIGNKEY` (787), where PostgreSQL's
/// is `NotFound` of the product. (A delete for good through Stockroom that another table's key
/// refuses is [`Error::Referenced`] on both: Stockroom finds the table.)
///
/// ```
/// use stockroom_core::{Constraint, Error};
///
/// let db = rusqlite::Connection::open_in_memory().unwrap();
/// db.execute_batch("CREATE TABLE orders (number INTEGER UNIQUE); INSERT INTO orders VALUES (42)")
///     .unwrap();
/// let taken = db
///     .execute("INSERT INTO orders VALUES (42)", [])
///     .map_err(stockroom_sqlite::classify)
///     .unwrap_err();
/// assert!(matches!(taken, Error::Conflict { constraint } if constraint == Constraint::of_table("orders", &["number"])));
/// ```
pub fn classify(error: rusqlite::Error) -> Error {
    static BUILT_IN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    let catalog =
        BUILT_IN.get_or_init(|| Catalog::new(&[]).expect("Stockroom's own declarations are valid"));
    map_with(catalog, error)
}

/// Maps a rusqlite error onto the core's error, naming the rule of `catalog` (or the primary key
/// of its entity) that a unique violation broke.
///
/// | SQLite result | core error |
/// |---|---|
/// | `SQLITE_CONSTRAINT_UNIQUE`, `_PRIMARYKEY` | `Conflict` (the rule whose columns it names; on a table no entity declares, [`Constraint::of_table`]) |
/// | `SQLITE_BUSY`, `SQLITE_LOCKED` | `Transient` |
/// | `SQLITE_READONLY` and its extended codes | `Storage` `ReadOnly` |
/// | `SQLITE_PERM`, `SQLITE_AUTH` | `Storage` `PermissionDenied` |
/// | `SQLITE_CANTOPEN` of a file that exists or behind a directory we may not search | `Storage` `PermissionDenied` |
/// | `SQLITE_FULL` | `Storage` `Full` |
/// | `SQLITE_CORRUPT`, `SQLITE_NOTADB` | `Storage` `Corrupt` |
/// | any other `SQLITE_CANTOPEN`, `SQLITE_IOERR` | `Unavailable` |
/// | anything else | `Backend`, with the rusqlite error as its source |
///
/// The `Storage` faults last until an operator acts (a retry, now or later, meets them again),
/// which is why they are not `Unavailable`.
pub(crate) fn map_with(catalog: &Catalog, error: rusqlite::Error) -> Error {
    map_in(Some(catalog), error)
}

/// Every error that comes from SQLite (`Transient`, `Unavailable`, `Storage`, `Backend`) keeps
/// the rusqlite error as its [`source`](std::error::Error::source) and SQLite's extended result
/// code, when there is one, as its [`code`](Error::code).
fn map_in(catalog: Option<&Catalog>, error: rusqlite::Error) -> Error {
    let mapped = kind_of(catalog, &error);
    let mapped = match error.sqlite_error() {
        Some(failure) => mapped.with_code(BackendCode::Sqlite(failure.extended_code)),
        None => mapped,
    };
    mapped.with_source(error)
}

/// The core's error for `error`, without its cause (which [`map_in`] attaches).
fn kind_of(catalog: Option<&Catalog>, error: &rusqlite::Error) -> Error {
    let (code, extended, message) = match error {
        rusqlite::Error::SqliteFailure(failure, message) => (
            failure.code,
            failure.extended_code,
            message.clone().unwrap_or_else(|| failure.to_string()),
        ),
        _ => return Error::backend_message(error.to_string()),
    };
    match code {
        ErrorCode::ConstraintViolation
            if matches!(
                extended,
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            match constraint_of(catalog, &message) {
                Some(constraint) => Error::Conflict { constraint },
                None => Error::backend_message(message),
            }
        }
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            Error::transient(format!("sqlite: {message}"))
        }
        ErrorCode::ReadOnly => storage(StorageFault::ReadOnly, &message),
        ErrorCode::PermissionDenied | ErrorCode::AuthorizationForStatementDenied => {
            storage(StorageFault::PermissionDenied, &message)
        }
        ErrorCode::DiskFull => storage(StorageFault::Full, &message),
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
            storage(StorageFault::Corrupt, &message)
        }
        ErrorCode::CannotOpen if cannot_open_for_permission(&message) => {
            storage(StorageFault::PermissionDenied, &message)
        }
        ErrorCode::CannotOpen | ErrorCode::SystemIoFailure => {
            Error::unavailable(format!("sqlite: {message}"))
        }
        _ => Error::backend_message(format!("sqlite: {message}")),
    }
}

fn storage(fault: StorageFault, message: &str) -> Error {
    Error::storage(fault, format!("sqlite: {message}"))
}

/// Whether an `SQLITE_CANTOPEN` is a permission problem. SQLite says only "unable to open
/// database file" (rusqlite appends the path when opening the database itself), not the
/// system's error, so the file system is asked: SQLite falls back to a read-only open when it
/// may not write a file, so a file that exists and still could not be opened may not even be
/// read; and a directory on the path that may not be searched hides the file. A missing file
/// (no such directory, say) is not a permission problem, nor is a file SQLite opens beside the
/// database (the journal), whose message names no path.
fn cannot_open_for_permission(message: &str) -> bool {
    let Some(path) = message.strip_prefix("unable to open database file: ") else {
        return false;
    };
    // Only `stat`: opening (and so closing) the file here would drop the POSIX locks that this
    // process's SQLite connections hold on it.
    match std::fs::metadata(Path::new(path)) {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

/// The constraint a unique violation names. SQLite reports the columns of the violated index
/// (`UNIQUE constraint failed: products.sku`), not its name (except for an index on
/// expressions, which an application's own table may have), so each rule of the catalog is
/// found by its table and columns, as its declaration names them, and a primary key by its
/// table.
fn constraint_of(catalog: Option<&Catalog>, message: &str) -> Option<Constraint> {
    if let Some(c) = catalog.and_then(|c| c.constraint_in_message(message)) {
        return Some(c);
    }
    let columns = message.rsplit_once(": ").map_or(message, |(_, c)| c).trim();
    if columns == "stock_movements.idempotency_key" {
        return Some(Constraint::IDEMPOTENCY_KEY);
    }
    let entries = catalog.map_or(&[][..], |c| c.entries());
    if let Some(table) = columns.strip_suffix(".id") {
        if let Some(e) = entries.iter().find(|e| e.schema.table == table) {
            return Some(Constraint::primary_key(e.schema.kind()));
        }
    }
    let declared = entries.iter().find_map(|e| {
        let schema = e.schema;
        schema
            .unique
            .iter()
            .find(|rule| names_columns(columns, schema.table, rule.fields))
            .map(|rule| Constraint::of_rule(schema, rule))
    });
    // A table no entity declares, other than the ledger: the application's own.
    let undeclared = |c: &Constraint| {
        let table = c.entity().as_str();
        table != LEDGER_TABLE && entries.iter().all(|e| e.schema.table != table)
    };
    declared.or_else(|| {
        table_constraint(columns)
            .filter(|_| catalog.is_some())
            .filter(undeclared)
    })
}

/// The unique constraint of a table no entity declares (an application's own), from the
/// columns SQLite names (`orders.customer_id, orders.number`); `None` for an index on
/// expressions, which SQLite names by the index instead (`index 'orders_lower_email'`).
fn table_constraint(columns: &str) -> Option<Constraint> {
    let mut table = None;
    let mut names = Vec::new();
    for column in columns.split(", ") {
        let (t, c) = column.split_once('.')?;
        if *table.get_or_insert(t) != t {
            return None;
        }
        names.push(c);
    }
    Some(Constraint::of_table(table?, &names))
}

/// Whether `columns` (`t.a, t.b`) names exactly `fields` of table `table`, in order.
fn names_columns(columns: &str, table: &str, fields: &[&str]) -> bool {
    let mut named = columns.split(", ");
    fields.iter().all(|field| {
        named.next().is_some_and(|c| {
            c.strip_prefix(table)
                .and_then(|c| c.strip_prefix('.'))
                .is_some_and(|c| c == *field)
        })
    }) && named.next().is_none()
}

/// The error of a store that was closed.
pub(crate) fn closed() -> Error {
    Error::unavailable("the sqlite store is closed")
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};
    use stockroom_core::EntityKind;

    use super::*;

    fn failure(code: i32, message: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message.to_owned()))
    }

    fn fault(error: Error) -> Option<StorageFault> {
        match error {
            Error::Storage { fault, .. } => Some(fault),
            _ => None,
        }
    }

    #[test]
    fn permanent_faults_are_storage_faults_not_unavailable() {
        let cases = [
            (ffi::SQLITE_READONLY, StorageFault::ReadOnly),
            (ffi::SQLITE_READONLY_DBMOVED, StorageFault::ReadOnly),
            (ffi::SQLITE_READONLY_DIRECTORY, StorageFault::ReadOnly),
            (ffi::SQLITE_PERM, StorageFault::PermissionDenied),
            (ffi::SQLITE_AUTH, StorageFault::PermissionDenied),
            (ffi::SQLITE_FULL, StorageFault::Full),
            (ffi::SQLITE_CORRUPT, StorageFault::Corrupt),
            (ffi::SQLITE_NOTADB, StorageFault::Corrupt),
        ];
        for (code, expected) in cases {
            let error = map(failure(code, "the message"));
            assert!(error.is_permanent(), "{code}: {error:?}");
            assert_eq!(fault(error), Some(expected), "{code}");
        }
    }

    #[test]
    fn busy_is_transient_and_io_errors_unavailable() {
        assert!(map(failure(ffi::SQLITE_BUSY, "database is locked")).is_transient());
        assert!(matches!(
            map(failure(ffi::SQLITE_IOERR_WRITE, "disk I/O error")),
            Error::Unavailable { .. }
        ));
    }

    /// The rusqlite error among the sources of `error`.
    fn driver_error_in(error: &Error) -> Option<&rusqlite::Error> {
        std::error::Error::source(error)?.downcast_ref::<rusqlite::Error>()
    }

    #[test]
    fn every_error_from_sqlite_keeps_its_extended_code_and_the_driver_error() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_MISMATCH,
        ] {
            let error = map(failure(code, "SQLite's words"));
            assert_eq!(error.code(), Some(&BackendCode::Sqlite(code)), "{error:?}");
            let kept = driver_error_in(&error).and_then(|e| e.sqlite_error_code());
            assert!(kept.is_some(), "{code}: no rusqlite error behind {error:?}");
        }
        // What SQLite itself answers: a write while another connection holds the write lock.
        let dir = std::env::temp_dir().join(format!("stockroom-busy-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("busy.db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let writer = Connection::open(&path).unwrap();
        writer.busy_timeout(std::time::Duration::ZERO).unwrap();
        let busy = map(writer
            .execute("INSERT INTO t VALUES (2)", [])
            .expect_err("the write lock is held"));
        assert!(busy.is_transient(), "{busy:?}");
        assert_eq!(busy.code(), Some(&BackendCode::Sqlite(ffi::SQLITE_BUSY)));
        assert!(driver_error_in(&busy).is_some(), "{busy:?}");
        drop((holder, writer));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn cannot_open_is_a_permission_problem_only_for_a_file_that_is_there() {
        let dir = std::env::temp_dir().join(format!("stockroom-cantopen-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let present = dir.join("present.db");
        std::fs::write(&present, b"").unwrap();
        let message = |path: &Path| format!("unable to open database file: {}", path.display());

        let refused = map(failure(ffi::SQLITE_CANTOPEN, &message(&present)));
        assert_eq!(fault(refused), Some(StorageFault::PermissionDenied));
        let missing = map(failure(
            ffi::SQLITE_CANTOPEN,
            &message(&dir.join("no-such-dir/x.db")),
        ));
        assert!(matches!(missing, Error::Unavailable { .. }), "{missing:?}");
        let journal = map(failure(
            ffi::SQLITE_CANTOPEN,
            "unable to open database file",
        ));
        assert!(matches!(journal, Error::Unavailable { .. }), "{journal:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The mapping of what SQLite itself answers, not of hand-made codes.
    #[test]
    fn sqlite_own_answers_map_to_their_faults() {
        let full = Connection::open_in_memory().unwrap();
        full.execute_batch("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 8;")
            .unwrap();
        let filled = (0..64).try_for_each(|_| {
            full.execute("INSERT INTO t VALUES (zeroblob(4096))", [])
                .map(drop)
        });
        let error = map(filled.expect_err("the database fills up"));
        assert_eq!(fault(error), Some(StorageFault::Full));

        let dir = std::env::temp_dir().join(format!("stockroom-readonly-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ro.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let read_only =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let error = map(read_only
            .execute("INSERT INTO t VALUES (1)", [])
            .expect_err("a read-only connection cannot write"));
        assert_eq!(fault(error), Some(StorageFault::ReadOnly));
        drop(read_only);

        std::fs::write(
            &path,
            b"this is not a database, and it is long enough to tell",
        )
        .unwrap();
        let not_a_db = Connection::open(&path).unwrap();
        let error = map(not_a_db
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect_err("not a database"));
        assert_eq!(fault(error), Some(StorageFault::Corrupt));
        drop(not_a_db);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unique_messages_name_their_constraint() {
        let catalog = Catalog::new(&[]).unwrap();
        let cases = [
            (
                "UNIQUE constraint failed: products.sku",
                Constraint::PRODUCT_SKU,
            ),
            (
                "UNIQUE constraint failed: products.slug",
                Constraint::PRODUCT_SLUG,
            ),
            (
                "UNIQUE constraint failed: categories.slug",
                Constraint::CATEGORY_SLUG,
            ),
            (
                "UNIQUE constraint failed: users.email",
                Constraint::USER_EMAIL,
            ),
            (
                "UNIQUE constraint failed: reviews.product_id, reviews.author_id",
                Constraint::REVIEW_AUTHOR,
            ),
            (
                "UNIQUE constraint failed: stock_movements.idempotency_key",
                Constraint::IDEMPOTENCY_KEY,
            ),
            (
                "UNIQUE constraint failed: users.id",
                Constraint::primary_key(EntityKind::USER),
            ),
            (
                "UNIQUE constraint failed: index 'products_sku_live'",
                Constraint::PRODUCT_SKU,
            ),
        ];
        for (message, constraint) in cases {
            assert_eq!(
                constraint_of(Some(&catalog), message),
                Some(constraint),
                "{message}"
            );
        }
        // A table no entity declares is named by its table and columns.
        assert_eq!(
            constraint_of(
                Some(&catalog),
                "UNIQUE constraint failed: orders.customer, orders.number"
            ),
            Some(Constraint::of_table("orders", &["customer", "number"]))
        );
        for unknown in [
            "UNIQUE constraint failed: stock_movements.source_id",
            "UNIQUE constraint failed: reviews.product_id",
            "UNIQUE constraint failed: reviews.author_id, reviews.product_id",
        ] {
            assert_eq!(constraint_of(Some(&catalog), unknown), None, "{unknown}");
        }
        // Without the catalog, only the ledger's key is named.
        assert_eq!(
            constraint_of(
                None,
                "UNIQUE constraint failed: stock_movements.idempotency_key"
            ),
            Some(Constraint::IDEMPOTENCY_KEY)
        );
        assert_eq!(
            constraint_of(None, "UNIQUE constraint failed: products.sku"),
            None
        );
    }
}

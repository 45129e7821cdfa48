//! sqlx errors mapped onto [`stockroom_core::Error`] by SQLSTATE, so a caller never sees a sqlx
//! type.

use std::io;

use sqlx::error::DatabaseError;
use sqlx::postgres::{PgDatabaseError, PgSeverity};
use stockroom_core::adapter::{IDEMPOTENCY_KEY_INDEX, LEDGER_TABLE};
use stockroom_core::schema::{Catalog, FieldType};
use stockroom_core::{BackendCode, Constraint, EntityKind, Error, Rule, StorageFault, MAX_STOCK};

/// Maps a driver error onto the core's error.
///
/// | driver error | core error |
/// |---|---|
/// | 23505 unique violation | `Conflict` on the ledger's idempotency key or primary key (an entity's rules, and a key of a table no entity declares: [`map_error_in`]) |
/// | 23514 check violation | `Validation` (field from the constraint name) |
/// | 23503 foreign key violation | `Backend` (`NotFound` of the referenced entity, or `Referenced` for a delete another table's key refuses: [`map_error_in`]) |
/// | 40001 serialization failure, 40P01 deadlock, 55P03 lock not available | `Transient` |
/// | 57014 statement canceled (`statement_timeout`, or a cancel request) | `Transient`: the statement applied nothing (in a transaction, PostgreSQL aborts the transaction, which then rolls back; in autocommit, its own transaction rolled back) |
/// | 25006 read-only transaction (a standby, `default_transaction_read_only`) | `Storage` `ReadOnly` |
/// | 42501 insufficient privilege | `Storage` `PermissionDenied` |
/// | 53100 disk full | `Storage` `Full` |
/// | XX001 data corrupted, XX002 index corrupted | `Storage` `Corrupt` |
/// | 40003 statement completion unknown, or a connection lost during `COMMIT` | `AmbiguousCommit` (see [`map_commit_error`]) |
/// | 08xxx connection exceptions, 57P0x sessions ended by the server (shutdown, database dropped, idle session timeout), 25P03 idle-in-transaction timeout, any other FATAL, I/O and TLS errors, pool timed out or closed | `Unavailable` (an I/O error says what failed: connection refused, no such socket, …) |
/// | 3D000 unknown database, 28000/28P01 login refused | `Backend`, its message naming the cause |
/// | anything else | `Backend`, with the driver error as its source |
///
/// The `Storage` faults last until an operator acts, so they are not `Unavailable` ("retry
/// later"); a login refused or a database missing is a configuration to fix, so it is not
/// either.
///
/// Every error that comes from the backend (`Transient`, `Unavailable`, `AmbiguousCommit`,
/// `Storage`, `Backend`) keeps the sqlx error as its [`source`](std::error::Error::source) and
/// the SQLSTATE, when the server sent one, as its [`code`](Error::code).
pub(crate) fn map_error(error: sqlx::Error) -> Error {
    let mapped = kind_of(&error);
    let mapped = match sqlstate_of(&error) {
        Some(state) => mapped.with_code(BackendCode::SqlState(state)),
        None => mapped,
    };
    mapped.with_source(error)
}

/// The SQLSTATE of a database error.
fn sqlstate_of(error: &sqlx::Error) -> Option<String> {
    error.as_database_error()?.code().map(|c| c.into_owned())
}

/// The core's error for `error`, without its cause (which [`map_error`] attaches).
fn kind_of(error: &sqlx::Error) -> Error {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let constraint = db.constraint().unwrap_or_default().to_owned();
            match code.as_str() {
                // The ledger's; an entity's rules are the catalog's (see `map_error_in`).
                "23505" if constraint == IDEMPOTENCY_KEY_INDEX => Error::Conflict {
                    constraint: Constraint::IDEMPOTENCY_KEY,
                },
                "23505" if constraint == LEDGER_PRIMARY_KEY => Error::Conflict {
                    constraint: Constraint::primary_key(EntityKind::STOCK_MOVEMENT),
                },
                "23505" => Error::backend_message("unique violation"),
                "23514" => check_violation(&constraint),
                "23503" => Error::backend_message("foreign key violation"),
                // Statement completion unknown: only a commit, or an autocommit statement, gets it.
                "40003" => Error::ambiguous_commit(db.message().to_owned()),
                "40001" | "40P01" | "55P03" => Error::transient(db.message().to_owned()),
                // The server canceled the statement before it ended: whatever it did is undone
                // with its transaction (its own in autocommit; the unit of work's, which
                // PostgreSQL aborts, otherwise). Nothing was applied.
                "57014" => Error::transient(format!(
                    "PostgreSQL canceled the statement ({}); nothing it did was applied",
                    db.message()
                )),
                "25006" => storage(StorageFault::ReadOnly, db.message()),
                "42501" => storage(StorageFault::PermissionDenied, db.message()),
                "53100" => storage(StorageFault::Full, db.message()),
                "XX001" | "XX002" => storage(StorageFault::Corrupt, db.message()),
                "3D000" => {
                    let message = format!("PostgreSQL has no such database: {}", db.message());
                    Error::backend_message(message)
                }
                "28000" | "28P01" => {
                    let message = format!("PostgreSQL refused the login: {}", db.message());
                    Error::backend_message(message)
                }
                _ if ends_the_session(db.as_ref()) => Error::unavailable(db.message().to_owned()),
                _ => Error::backend_message(format!("PostgreSQL error {code}")),
            }
        }
        sqlx::Error::Io(e) => Error::unavailable(io_failure(e)),
        sqlx::Error::Tls(e) => Error::unavailable(format!("TLS failure: {e}")),
        sqlx::Error::PoolTimedOut => {
            Error::unavailable("timed out waiting for a pooled connection")
        }
        sqlx::Error::PoolClosed => Error::unavailable("the store is closed"),
        sqlx::Error::WorkerCrashed => Error::unavailable("the connection's worker stopped"),
        // The server went away in the middle of a message.
        sqlx::Error::Protocol(p) if looks_like_lost_connection(p) => {
            Error::unavailable(format!("connection lost: {p}"))
        }
        _ => Error::backend_message("PostgreSQL driver error"),
    }
}

/// The unique constraint of a table no entity declares (an application's own) that a unique
/// violation broke, named by the table and the columns of the key PostgreSQL's detail shows
/// (`Key (customer_id, number)=(…) already exists.`), as SQLite names it too.
fn table_constraint(db: &dyn DatabaseError) -> Option<Constraint> {
    let pg = db.try_downcast_ref::<PgDatabaseError>()?;
    let columns = pg.detail()?.strip_prefix("Key (")?.split_once(")=(")?.0;
    let columns: Vec<&str> = columns.split(", ").collect();
    Some(Constraint::of_table(pg.table()?, &columns))
}

/// The primary key of the ledger's table.
const LEDGER_PRIMARY_KEY: &str = "stock_movements_pkey";

/// `map` of `error`, with the violations of a declared entity's rules named from `catalog`
/// (the declarations of the store's entities): a unique violation is a `Conflict` on the unique
/// rule whose index it names, or on the primary key of the entity whose table it names; a
/// a unique violation on a table no entity declares (the application's own) is a `Conflict` on
/// [`Constraint::of_table`]; a foreign-key violation is `NotFound` of the entity whose table its detail names (`Key
/// (category_id)=(…) is not present in table "categories"`), with the key as its id; a check
/// violation of a CHECK the adapter made for a field ([`check_constraint`]) is `Validation` on
/// the field. What the guards of the writes keep from happening, except in a race they cannot
/// see; anything else is as `map` says.
pub(crate) fn map_error_in(
    error: sqlx::Error,
    catalog: &Catalog,
    map: fn(sqlx::Error) -> Error,
) -> Error {
    let sqlx::Error::Database(db) = &error else {
        return map(error);
    };
    let pg = db.try_downcast_ref::<PgDatabaseError>();
    let constraint = db.constraint().unwrap_or_default();
    let entity_of = |table: &str| {
        catalog
            .entries()
            .iter()
            .find(|e| e.schema.table == table)
            .map(|e| e.schema.kind())
    };
    let mapped = match db.code().as_deref() {
        Some("23505") => catalog
            .constraint_of_index(constraint)
            .or_else(|| catalog.constraint_in_message(db.message()))
            .or_else(|| {
                let table = pg.and_then(PgDatabaseError::table)?;
                let entity = entity_of(table)?;
                (constraint == format!("{table}_pkey")).then(|| Constraint::primary_key(entity))
            })
            .or_else(|| {
                // A table no entity declares, other than the ledger: the application's own.
                let table = pg.and_then(PgDatabaseError::table)?;
                let applications = entity_of(table).is_none() && table != LEDGER_TABLE;
                applications.then(|| table_constraint(db.as_ref()))?
            })
            .map(|constraint| Error::Conflict { constraint }),
        Some("23503") => {
            let detail = pg.and_then(PgDatabaseError::detail).unwrap_or_default();
            // A delete the foreign key of another table refuses: `update or delete on table
            // "products" violates foreign key constraint "…" on table "orders"`.
            if let Some((_, referring)) = detail.split_once("is still referenced from table \"") {
                let deleted = db
                    .message()
                    .split_once("on table \"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .and_then(|(table, _)| entity_of(table));
                let referring = referring.split_once('"').map_or(referring, |(t, _)| t);
                deleted.map(|entity| Error::referenced(entity, key_in_detail(detail), referring))
            } else {
                detail
                    .split_once("is not present in table \"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .and_then(|(table, _)| entity_of(table))
                    .map(|entity| Error::not_found(entity, key_in_detail(detail)))
            }
        }
        Some("23514") => catalog.entries().iter().find_map(|e| {
            e.schema
                .fields
                .iter()
                .find(|f| check_constraint(e.schema.table, f.name) == constraint)
                .map(|f| {
                    let rule = match f.ty {
                        FieldType::Int { min, max } => Rule::OutOfRange { min, max },
                        _ => Rule::Malformed {
                            expected: "one of the field's declared values",
                        },
                    };
                    Error::validation(f.name, rule)
                })
        }),
        _ => None,
    };
    mapped.unwrap_or_else(|| map(error))
}

/// Maps an error of the application's own SQL (run on [`connection`](crate::connection) or
/// [`read_connection`](crate::read_connection)) onto Stockroom's error, as Stockroom maps its
/// own, so that `?` after `.map_err(stockroom_postgres::classify)` keeps the error's meaning
/// and [`StoreExt::run`](stockroom_core::StoreExt::run) retries what it should:
///
/// | the server's error | Stockroom's error |
/// |---|---|
/// | 40001 serialization failure, 40P01 deadlock, 55P03 lock not available, 57014 canceled | `Transient` (retried by the retry runner) |
/// | 23505 unique violation | `Conflict`: a rule of Stockroom's entities by its name; on another table, [`Constraint::of_table`] (the table, and the columns of the key) |
/// | 23503 on an insert or update: the referred row of a Stockroom entity is missing | `NotFound` of that entity, with the id |
/// | 23503 on a delete: rows of another table still refer to an entity's row | `Referenced` |
/// | 25006, 42501, 53100, XX001, XX002 | `Storage` (read-only, permission denied, full, corrupt) |
/// | 40003, connection lost, pool timed out or closed | `AmbiguousCommit` (40003), `Unavailable` |
/// | anything else | `Backend` |
///
/// Every error from the server keeps the sqlx error as its
/// [`source`](std::error::Error::source) and its SQLSTATE as its [`code`](Error::code). The
/// entities named are Stockroom's own; a table of an entity of the application's is named as a
/// table.
///
/// ```no_run
/// # async fn demo(conn: &mut sqlx::PgConnection) -> stockroom_core::Result<()> {
/// use stockroom_postgres::classify;
///
/// sqlx::query("INSERT INTO orders (number) VALUES ($1)")
///     .bind(42_i64)
///     .execute(&mut *conn)
///     .await
///     .map_err(classify)?; // a taken number is Error::Conflict, a deadlock Error::Transient
/// # Ok(()) }
/// ```
pub fn classify(error: sqlx::Error) -> Error {
    static BUILT_IN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    let catalog =
        BUILT_IN.get_or_init(|| Catalog::new(&[]).expect("Stockroom's own declarations are valid"));
    map_error_in(error, catalog, map_error)
}

/// The name of the CHECK the adapter gives the declared field `field` of `table` (an integer's
/// range, an enum's values), which a check violation is mapped back by.
pub(crate) fn check_constraint(table: &str, field: &str) -> String {
    format!("{table}_{field}_check")
}

/// The error of a `COMMIT` (or of a statement that commits by itself): a connection lost while
/// the server ran it, or SQLSTATE 40003 (statement completion unknown, as distributed engines
/// answer), leaves the outcome unknown and is [`Error::AmbiguousCommit`]; any other failure
/// (a serialization failure found at commit, a deferred constraint, a session the server had
/// ended as idle before the commit reached it) is definite and maps as [`map_error`] says.
pub(crate) fn map_commit_error(error: sqlx::Error) -> Error {
    if !is_dead_connection(&error) || ended_while_idle(&error) {
        return map_error(error); // 40003 included
    }
    let lost = map_error(error);
    let ambiguous = Error::ambiguous_commit(format!(
        "{lost}: the commit was sent, and whether it took effect is unknown"
    ));
    match lost.code().cloned() {
        Some(code) => ambiguous.with_code(code),
        None => ambiguous,
    }
    .with_source(lost)
}

/// Whether `error` says the connection it ran on is gone (closed by the server or the network),
/// as opposed to the pool being exhausted or closed.
pub(crate) fn is_dead_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => ends_the_session(db.as_ref()),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(p) => looks_like_lost_connection(p),
        _ => false,
    }
}

/// Whether the server ended the session for sitting idle (25P03 in a transaction, 57P05
/// outside one): it did so while waiting for the next statement, which it never read, so a
/// `COMMIT` (or a statement that commits by itself) answered so was not run.
fn ended_while_idle(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("25P03" | "57P05")))
}

/// Whether the server ended the session with this error, so that its connection is gone: a
/// connection exception (class 08); a session ended by the server (57P01 admin shutdown, 57P02
/// crash shutdown, 57P03 cannot connect now, 57P04 database dropped, 57P05 idle session
/// timeout); an idle transaction's timeout (25P03); any other error of severity FATAL or PANIC,
/// after which the server closes the session. A login the server refused (class 28, 3D000
/// unknown database, 42501 no `CONNECT` privilege) is left out: that connection never served,
/// and another one would be refused the same way.
fn ends_the_session(db: &dyn DatabaseError) -> bool {
    let code = db.code().unwrap_or_default();
    if code.starts_with("28") || matches!(&*code, "3D000" | "42501") {
        return false;
    }
    let fatal = db
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic));
    code.starts_with("08") || code.starts_with("57P0") || code == "25P03" || fatal
}

fn storage(fault: StorageFault, message: &str) -> Error {
    Error::storage(fault, message.to_owned())
}

/// What an I/O error of a connection says in words: while connecting, why no server could be
/// reached; afterwards, that the connection was lost.
fn io_failure(error: &io::Error) -> String {
    // A handshake refused (a certificate not trusted, or not for this host) comes as an I/O
    // error around rustls's: it is no lost connection.
    #[cfg(feature = "tls")]
    if let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return format!("TLS failure: {tls}");
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to PostgreSQL: connection refused, no server listens there ({error})")
        }
        io::ErrorKind::NotFound => {
            format!("cannot connect to PostgreSQL: no server socket there ({error})")
        }
        io::ErrorKind::TimedOut => {
            format!("cannot connect to PostgreSQL: the connection timed out ({error})")
        }
        io::ErrorKind::PermissionDenied => {
            format!("cannot connect to PostgreSQL: permission denied ({error})")
        }
        _ => format!("connection lost: {error}"),
    }
}

/// What tokio says when asked for I/O on a socket registered with a runtime that has shut down
/// (`tokio::runtime::io`): the socket cannot be used any more, and nothing was sent on it.
const RUNTIME_SHUT_DOWN: &str = "A Tokio 1.x context was found, but it is being shutdown";

/// Whether `error` is tokio refusing I/O on a connection opened by a runtime that has shut
/// down since. Tokio has no error type for it: its message is the only sign (the test of a
/// store outliving the runtime that opened its connections fails if tokio changes it).
pub(crate) fn is_runtime_gone(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Io(e) if e.to_string().starts_with(RUNTIME_SHUT_DOWN))
}

fn looks_like_lost_connection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("connection")
        || m.contains("eof")
        || m.contains(&io::ErrorKind::UnexpectedEof.to_string())
}

fn check_violation(constraint: &str) -> Error {
    let (field, rule) = match constraint {
        "products_stock_non_negative" => (
            "stock",
            Rule::OutOfRange {
                min: 0,
                max: MAX_STOCK,
            },
        ),
        "reviews_rating_range" => ("rating", Rule::OutOfRange { min: 1, max: 5 }),
        "stock_movements_quantity_positive" => (
            "quantity",
            Rule::OutOfRange {
                min: 1,
                max: MAX_STOCK,
            },
        ),
        "products_status_known" => (
            "status",
            Rule::Malformed {
                expected: "one of draft, active, archived",
            },
        ),
        _ => (
            "row",
            Rule::Malformed {
                expected: "a row that passes the table's checks",
            },
        ),
    };
    Error::validation(field, rule)
}

/// The id in a foreign-key violation's detail (`Key (category_id)=(<uuid>) is not present …`);
/// the nil UUID when the detail names none.
fn key_in_detail(detail: &str) -> uuid::Uuid {
    detail
        .split_once(")=(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(key, _)| uuid::Uuid::parse_str(key).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database error of this SQLSTATE, as a server would send it.
    #[derive(Debug)]
    struct ServerSaid {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for ServerSaid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl std::error::Error for ServerSaid {}

    impl sqlx::error::DatabaseError for ServerSaid {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn server_said(code: &'static str, message: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(ServerSaid { code, message }))
    }

    #[test]
    fn permanent_faults_are_storage_faults_not_unavailable() {
        let cases = [
            ("25006", StorageFault::ReadOnly),
            ("42501", StorageFault::PermissionDenied),
            ("53100", StorageFault::Full),
            ("XX001", StorageFault::Corrupt),
            ("XX002", StorageFault::Corrupt),
        ];
        for (code, expected) in cases {
            match map_error(server_said(code, "the server's words")) {
                Error::Storage { fault, reason, .. } => {
                    assert_eq!((fault, reason.as_str()), (expected, "the server's words"));
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn connection_failures_name_their_cause() {
        let refused = map_error(sqlx::Error::Io(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert!(
            matches!(&refused, Error::Unavailable { reason, .. } if reason.contains("connection refused")),
            "{refused:?}"
        );
        let unknown_db = map_error(server_said("3D000", "database \"shop\" does not exist"));
        assert_eq!(
            unknown_db.to_string(),
            "backend error: PostgreSQL has no such database: database \"shop\" does not exist"
        );
        let login = map_error(server_said(
            "28P01",
            "password authentication failed for user \"app\"",
        ));
        assert!(matches!(login, Error::Backend { .. }));
        assert!(login
            .to_string()
            .contains("refused the login: password authentication failed"));
        let shutdown = map_error(server_said("57P01", "terminating connection"));
        assert!(
            matches!(shutdown, Error::Unavailable { .. }),
            "{shutdown:?}"
        );
    }

    #[test]
    fn a_commit_whose_outcome_is_unknown_is_ambiguous_and_only_then() {
        let ambiguous = |e| matches!(map_commit_error(e), Error::AmbiguousCommit { .. });
        assert!(ambiguous(server_said("40003", "result is ambiguous")));
        assert!(ambiguous(server_said("57P01", "terminating connection")));
        assert!(ambiguous(sqlx::Error::Io(io::Error::from(
            io::ErrorKind::ConnectionReset
        ))));
        // Definite answers to a COMMIT: nothing was stored.
        // A COMMIT the server canceled, or refused, did not commit.
        let canceled = map_commit_error(server_said(
            "57014",
            "canceling statement due to statement timeout",
        ));
        assert!(matches!(canceled, Error::Transient { .. }), "{canceled:?}");
        let serialization = map_commit_error(server_said("40001", "could not serialize"));
        assert!(
            matches!(serialization, Error::Transient { .. }),
            "{serialization:?}"
        );
        let unique = map_commit_error(server_said("23505", "duplicate key"));
        assert!(
            !matches!(unique, Error::AmbiguousCommit { .. }),
            "{unique:?}"
        );
        // 40003 is about a commit wherever it comes; a lost connection outside one is not.
        let anywhere = map_error(server_said("40003", "result is ambiguous"));
        assert!(
            matches!(anywhere, Error::AmbiguousCommit { .. }),
            "{anywhere:?}"
        );
        let lost = map_error(server_said("57P01", "terminating connection"));
        assert!(matches!(lost, Error::Unavailable { .. }), "{lost:?}");
    }

    #[test]
    fn pool_and_io_failures_are_unavailable() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
        ] {
            assert!(matches!(map_error(e), Error::Unavailable { .. }));
        }
    }

    #[test]
    fn sessions_the_server_ended_are_dead_connections_and_logins_refused_are_not() {
        for code in ["08006", "57P01", "57P04", "57P05", "25P03"] {
            let error = server_said(code, "terminating connection");
            assert!(is_dead_connection(&error), "{code}");
            assert!(
                matches!(map_error(error), Error::Unavailable { .. }),
                "{code}"
            );
        }
        for code in ["28P01", "3D000", "42501", "40001", "22021"] {
            assert!(!is_dead_connection(&server_said(code, "no")), "{code}");
        }
        // Ended while idle: the COMMIT was never read, so its outcome is known.
        for code in ["25P03", "57P05"] {
            let commit = map_commit_error(server_said(code, "terminating connection"));
            assert!(matches!(commit, Error::Unavailable { .. }), "{commit:?}");
        }
    }

    #[test]
    fn only_connection_failures_count_as_dead_connections() {
        assert!(is_dead_connection(&sqlx::Error::Io(io::Error::from(
            io::ErrorKind::UnexpectedEof
        ))));
        assert!(!is_dead_connection(&sqlx::Error::PoolTimedOut));
        assert!(!is_dead_connection(&sqlx::Error::PoolClosed));
        assert!(!is_dead_connection(&sqlx::Error::RowNotFound));
    }

    /// The sqlx error behind `error`, found through its chain of sources.
    fn driver_error_in(error: &Error) -> Option<&sqlx::Error> {
        let mut next = std::error::Error::source(error);
        while let Some(cause) = next {
            if let Some(found) = cause.downcast_ref::<sqlx::Error>() {
                return Some(found);
            }
            next = cause.source();
        }
        None
    }

    #[test]
    fn every_error_from_the_server_keeps_its_sqlstate_and_the_driver_error() {
        for code in [
            "40001", "40P01", "55P03", "57014", "40003", "25006", "42501", "53100", "XX001",
            "57P01", "25P03", "3D000", "28P01", "23505", "22021",
        ] {
            let error = map_error(server_said(code, "the server's words"));
            assert_eq!(error.sqlstate(), Some(code), "{code}: {error:?}");
            let driver = driver_error_in(&error)
                .unwrap_or_else(|| panic!("{code}: no sqlx error among the sources of {error:?}"));
            let kept = driver.as_database_error().and_then(|db| db.code());
            assert_eq!(kept.as_deref(), Some(code), "{code}");
        }
        // A failure with no SQLSTATE keeps the driver error and has no code.
        let refused = map_error(sqlx::Error::Io(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(refused.code(), None, "{refused:?}");
        assert!(
            matches!(driver_error_in(&refused), Some(sqlx::Error::Io(_))),
            "{refused:?}"
        );
        // A commit whose outcome is unknown keeps what was lost: the code, and the error.
        let ambiguous = map_commit_error(server_said("57P01", "terminating connection"));
        assert!(
            matches!(ambiguous, Error::AmbiguousCommit { .. }),
            "{ambiguous:?}"
        );
        assert_eq!(ambiguous.sqlstate(), Some("57P01"));
        assert!(driver_error_in(&ambiguous).is_some(), "{ambiguous:?}");
    }

    #[test]
    fn other_driver_errors_keep_their_source() {
        let e = map_error(sqlx::Error::RowNotFound);
        match e {
            Error::Backend { source, .. } => assert!(source.is_some()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn check_constraints_name_their_field() {
        assert!(matches!(
            check_violation("products_stock_non_negative"),
            Error::Validation { field: "stock", .. }
        ));
        assert!(matches!(
            check_violation("reviews_rating_range"),
            Error::Validation {
                field: "rating",
                ..
            }
        ));
    }

    #[test]
    fn foreign_key_detail_gives_the_key() {
        assert_eq!(
            key_in_detail("Key (category_id)=(0190a0b2-0000-7000-8000-000000000000) is not present in table \"categories\"."),
            uuid::Uuid::parse_str("0190a0b2-0000-7000-8000-000000000000").unwrap()
        );
        assert_eq!(key_in_detail("something else"), uuid::Uuid::nil());
    }

    /// What a real server answers maps as the table says (skipped without PostgreSQL, as the
    /// harness decides).
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn a_real_server_answers_map_to_their_errors() {
        use sqlx::{ConnectOptions, Connection};
        let Some(server) = crate::testing::server().await else {
            return;
        };
        let mut conn = server.admin().await;
        let read_only = sqlx::raw_sql(
            "BEGIN READ ONLY; CREATE TEMPORARY TABLE stockroom_read_only_probe (x int)",
        )
        .execute(&mut conn)
        .await
        .expect_err("a read-only transaction refuses writes");
        assert!(matches!(
            map_error(read_only),
            Error::Storage {
                fault: StorageFault::ReadOnly,
                ..
            }
        ));
        let _ = conn.close().await;

        let url = crate::testing::with_database(server.url(), "stockroom_no_such_database");
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let missing = options.connect().await.expect_err("no such database");
        let missing = map_error(missing);
        assert!(
            missing.to_string().contains("no such database"),
            "{missing}"
        );
        let stranger = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .username("stockroom_no_such_role")
            .connect()
            .await
            .expect_err("no such role");
        let stranger = map_error(stranger);
        assert!(
            stranger.to_string().contains("refused the login"),
            "{stranger}"
        );
        let refused = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(1)
            .connect()
            .await
            .expect_err("nothing listens on port 1");
        let refused = map_error(refused);
        assert!(
            refused.to_string().contains("connection refused"),
            "{refused}"
        );
    }
}

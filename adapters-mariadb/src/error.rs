//! sqlx errors mapped onto [`stockroom_core::Error`] by MariaDB's error number (and, where the
//! number is shared, its SQLSTATE and message), so a caller never sees a sqlx type.
//!
//! MariaDB reports a failure with an error number ([`MySqlDatabaseError::number`], the precise
//! cause) and a SQLSTATE (a coarse class, often the catch-all `HY000`). The mapping reads the
//! number, and the mapped error carries it as its [`code`](Error::code)
//! ([`BackendCode::MariaDb`]); the SQLSTATE stays reachable through the error's
//! [`source`](std::error::Error::source), the sqlx error.
//!
//! # The application's own SQL
//!
//! [`classify`] maps an error of the application's SQL as Stockroom maps its own. One answer
//! needs more than the error: MariaDB's duplicate-key message (1062) names the index alone
//! (`Duplicate entry '7-1' for key 'customer'`), neither its table nor its columns, and its
//! diagnostics area leaves `TABLE_NAME` empty. For Stockroom's tables the index is enough (each
//! unique rule's index has a name of its own); for a table of the application's it is not: an
//! unnamed `UNIQUE (customer, number)` is called after its first column, and two tables may
//! have an index of the same name. So [`classify`], which is synchronous, answers `Backend`
//! there, naming the index, and [`classify_on`] asks the database's catalog
//! (`information_schema.STATISTICS`) which table of the connection's database has a unique
//! index of that name, and over which columns: the `Conflict` PostgreSQL and SQLite give
//! ([`Constraint::of_table`]). No naming convention is imposed on the application's schema,
//! and nothing is guessed: when the name is not unique in the database (the primary key,
//! `PRIMARY`, is every table's), the answer stays `Backend`.

use std::io;

use sqlx::mysql::MySqlDatabaseError;
use stockroom_core::adapter::{IDEMPOTENCY_KEY_INDEX, LEDGER_TABLE};
use stockroom_core::schema::{Catalog, FieldType};
use stockroom_core::{BackendCode, Constraint, EntityKind, Error, Rule, StorageFault, MAX_STOCK};

/// The error numbers of MariaDB (and of MySQL where MariaDB shares them) that this module
/// reads, named as `mysqld_error.h` names them.
mod number {
    /// Record has changed since last read (`innodb_snapshot_isolation`): the transaction was
    /// rolled back.
    pub const ER_CHECKREAD: u16 = 1020;
    pub const ER_DISK_FULL: u16 = 1021;
    pub const ER_DUP_KEY: u16 = 1022;
    pub const ER_NOT_KEYFILE: u16 = 1034;
    pub const ER_OPEN_AS_READONLY: u16 = 1036;
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
    pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
    /// "Unknown command"; Galera's node outside the primary component answers it too
    /// ("WSREP has not yet prepared node for application use").
    pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
    pub const ER_BAD_DB_ERROR: u16 = 1049;
    pub const ER_SERVER_SHUTDOWN: u16 = 1053;
    pub const ER_DUP_ENTRY: u16 = 1062;
    /// "Unknown error": Galera reports some of its refusals so, with "WSREP" in the message.
    pub const ER_UNKNOWN_ERROR: u16 = 1105;
    pub const ER_RECORD_FILE_FULL: u16 = 1114;
    pub const ER_HOST_IS_BLOCKED: u16 = 1129;
    pub const ER_HOST_NOT_PRIVILEGED: u16 = 1130;
    pub const ER_TABLEACCESS_DENIED_ERROR: u16 = 1142;
    pub const ER_COLUMNACCESS_DENIED_ERROR: u16 = 1143;
    pub const ER_ABORTING_CONNECTION: u16 = 1152;
    pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
    pub const ER_NET_READ_ERROR_FROM_PIPE: u16 = 1154;
    pub const ER_NET_FCNTL_ERROR: u16 = 1155;
    pub const ER_NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
    pub const ER_NET_UNCOMPRESS_ERROR: u16 = 1157;
    pub const ER_NET_READ_ERROR: u16 = 1158;
    pub const ER_NET_READ_INTERRUPTED: u16 = 1159;
    pub const ER_NET_ERROR_ON_WRITE: u16 = 1160;
    pub const ER_NET_WRITE_INTERRUPTED: u16 = 1161;
    pub const ER_DUP_UNIQUE: u16 = 1169;
    /// "Got error N during COMMIT": the engine (or Galera's replication) failed the commit.
    pub const ER_ERROR_DURING_COMMIT: u16 = 1180;
    pub const ER_NEW_ABORTING_CONNECTION: u16 = 1184;
    pub const ER_CRASHED_ON_USAGE: u16 = 1194;
    pub const ER_CRASHED_ON_REPAIR: u16 = 1195;
    pub const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
    pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub const ER_LOCK_DEADLOCK: u16 = 1213;
    pub const ER_NO_REFERENCED_ROW: u16 = 1216;
    pub const ER_ROW_IS_REFERENCED: u16 = 1217;
    pub const ER_SPECIFIC_ACCESS_DENIED_ERROR: u16 = 1227;
    /// "The server is running with the --X option so it cannot execute this statement".
    pub const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;
    pub const ER_QUERY_INTERRUPTED: u16 = 1317;
    pub const ER_PROCACCESS_DENIED_ERROR: u16 = 1370;
    pub const ER_ROW_IS_REFERENCED_2: u16 = 1451;
    pub const ER_NO_REFERENCED_ROW_2: u16 = 1452;
    pub const ER_DUP_ENTRY_WITH_KEY_NAME: u16 = 1586;
    pub const ER_TOO_MANY_CONCURRENT_TRXS: u16 = 1637;
    pub const ER_ACCESS_DENIED_NO_PASSWORD_ERROR: u16 = 1698;
    pub const ER_INDEX_CORRUPT: u16 = 1712;
    pub const ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: u16 = 1792;
    pub const ER_READ_ONLY_MODE: u16 = 1836;
    pub const ER_DUP_UNKNOWN_IN_INDEX: u16 = 1859;
    pub const ER_TABLE_CORRUPT: u16 = 1877;
    pub const ER_CONNECTION_KILLED: u16 = 1927;
    /// MariaDB's `max_statement_time` exceeded.
    pub const ER_STATEMENT_TIMEOUT: u16 = 1969;
    /// MySQL's `max_execution_time` exceeded.
    pub const ER_QUERY_TIMEOUT: u16 = 3024;
    /// MySQL's CHECK violation.
    pub const ER_CHECK_CONSTRAINT_VIOLATED: u16 = 3819;
    /// MariaDB's CHECK violation (SQLSTATE 23000; MySQL uses 4025 for something else).
    pub const ER_CONSTRAINT_FAILED: u16 = 4025;
    /// The client library's "Can't connect through socket", "Can't connect to server", "server
    /// has gone away" and "Lost connection during query". sqlx reports these as I/O errors, but
    /// a proxy in front of MariaDB (MaxScale, ProxySQL) sends them as server errors when it
    /// loses its backend.
    pub const CR_CONNECTION_ERROR: u16 = 2002;
    pub const CR_CONN_HOST_ERROR: u16 = 2003;
    pub const CR_SERVER_GONE_ERROR: u16 = 2006;
    pub const CR_SERVER_LOST: u16 = 2013;
}

use number::*;

/// The operating system's "no space left on device" (`ENOSPC`), as MariaDB quotes it in
/// messages about files it could not write ("Errcode: 28", "Got error 28 …").
const ENOSPC: &str = "28";

/// What the server said: its error number, SQLSTATE and message.
#[derive(Debug, Clone, Copy)]
struct Said<'a> {
    number: u16,
    state: &'a str,
    message: &'a str,
}

/// The server's error in `error`, if it is one.
fn said(error: &sqlx::Error) -> Option<Said<'_>> {
    let db = error.as_database_error()?;
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        return Some(Said {
            number: my.number(),
            state: my.code().unwrap_or_default(),
            message: my.message(),
        });
    }
    // sqlx gives no way to build a `MySqlDatabaseError` outside the driver: the unit tests
    // build their own server errors.
    #[cfg(test)]
    if let Some(test) = db.try_downcast_ref::<tests::ServerSaid>() {
        return Some(Said {
            number: test.number,
            state: test.state,
            message: test.message,
        });
    }
    None
}

/// Maps a driver error onto the core's error, naming the rules, entities and fields of
/// `catalog` (the store's entities) that a violation broke.
///
/// | MariaDB error | core error |
/// |---|---|
/// | 1062, 1586 duplicate entry | `Conflict` on the unique rule whose index the message names (`for key 'products_sku_live'`), or on the ledger's idempotency key; on the key `PRIMARY` MariaDB's message names no table (MySQL 8's `users.PRIMARY` does, and is mapped): `Backend`, which the record writer diagnoses (it knows the table) |
/// | 1452 a row refers to one that does not exist | `NotFound` of the entity whose table the foreign key `REFERENCES` (its id is not in the message: nil, which the record writer fills in) |
/// | 1451 a delete another table's foreign key refuses | `Referenced`: that entity, and the referring table |
/// | 4025 CHECK failed (`<table>_<field>_check`) | `Validation` of the field: `OutOfRange` for an integer, `Malformed` for an enum |
/// | 1213 deadlock (and Galera's certification failure, which MariaDB reports as one), 1020 record changed since last read (`innodb_snapshot_isolation`) | `Transient`: the server rolled the whole transaction back ([`rolls_back_transaction`]) |
/// | 1205 lock wait timeout, 1969 `max_statement_time` exceeded, 3024 (MySQL's `max_execution_time`), 1317 query interrupted (`KILL QUERY`), 1637 too many transactions | `Transient`: the statement applied nothing (MariaDB rolls back the statement, not the transaction) |
/// | 1047 / 1105 from Galera (`WSREP has not yet prepared node for application use`): the node is outside the cluster's primary component | `Unavailable`, see below |
/// | 1927 connection killed, 1053 server shutdown, 1152/1184 aborted connection, 1154–1161 network errors, 2002/2003/2006/2013 (a proxy's lost backend), SQLSTATE class 08, I/O errors, the pool timed out or closed | `Unavailable` ([`is_connection_lost`] tells which of them ended the connection) |
/// | 1040 too many connections, 1203 too many connections of the user | `Unavailable` |
/// | 1180 error during COMMIT (a Galera node that lost the cluster while replicating) | `AmbiguousCommit` |
/// | 1290 `--read-only`, 1792 read-only transaction, 1836 read-only mode, 1036 table read only | `Storage` `ReadOnly` |
/// | 1021 disk full, 1114 table full, errno 28 (`ENOSPC`) in a file error | `Storage` `Full` |
/// | 1044, 1142, 1143, 1227, 1370 access denied to a database, table, column, privilege or routine | `Storage` `PermissionDenied` |
/// | 1034, 1194, 1195, 1712, 1877 corrupt table or index | `Storage` `Corrupt` |
/// | 1049 unknown database; 1045, 1129, 1130, 1698 login refused; 1153 a packet over `max_allowed_packet` (the server closes the connection, but a retry would send the same) | `Backend`, its message naming the cause |
/// | anything else | `Backend` |
///
/// Galera's "not ready" is `Unavailable`, not `Transient`: the node refuses every statement
/// until it rejoins a primary component, which takes seconds at least, so an immediate retry
/// on it (what the retry runner does with `Transient`) would fail the same way; retrying later,
/// or on another node, may succeed, which is what `Unavailable` says. The connection itself is
/// sound (not [`is_connection_lost`]).
///
/// `Storage` faults last until an operator acts, so they are not `Unavailable`; a login refused
/// or a database missing is a configuration to fix, so it is not either.
///
/// Every error from the backend keeps the sqlx error as its
/// [`source`](std::error::Error::source) and MariaDB's error number as its
/// [`code`](Error::code).
pub(crate) fn map_error(e: sqlx::Error, catalog: &Catalog) -> Error {
    match named_violation(&e, catalog) {
        Some(violation) => violation,
        None => with_cause(kind_of(&e), e),
    }
}

/// Maps an error that comes from no statement on an entity's table (decoding a column,
/// encoding an argument, connecting, a migration) as [`map_error`] does without a catalog:
/// violations are named only when they are the ledger's.
pub(crate) fn decode_error(e: sqlx::Error) -> Error {
    with_cause(kind_of(&e), e)
}

/// The error of a `COMMIT` (or of a statement that commits by itself): the connection lost
/// while the server ran it ([`is_connection_lost`]: killed, reset, closed), or 1180 (the engine
/// or Galera's replication failed during COMMIT), leaves the outcome unknown and is
/// [`Error::AmbiguousCommit`]; any other failure (a deadlock or a certification failure found at
/// commit, a read-only server) is definite and maps as [`map_error`] says.
pub(crate) fn map_commit_error(e: sqlx::Error, catalog: &Catalog) -> Error {
    if !is_connection_lost(&e) {
        return map_error(e, catalog); // 1180 included
    }
    let lost = map_error(e, catalog);
    let ambiguous = Error::ambiguous_commit(format!(
        "{lost}: the commit was sent, and whether it took effect is unknown"
    ));
    match lost.code().cloned() {
        Some(code) => ambiguous.with_code(code),
        None => ambiguous,
    }
    .with_source(lost)
}

/// Whether the server rolled back the whole transaction when it answered `e`, so that the unit
/// of work cannot go on: a deadlock (1213: InnoDB picks a victim and rolls its transaction
/// back; Galera reports a certification failure, or a local transaction aborted by a
/// replicated one, as 1213 too), or a record changed since the snapshot was read (1020, with
/// `innodb_snapshot_isolation`).
///
/// Any other failure of a statement rolls back that statement only and leaves the transaction
/// open: a duplicate key, a foreign key, a CHECK, and a lock wait timeout (1205), unless the
/// server runs with `innodb_rollback_on_timeout=ON` (off by default, and a startup option), in
/// which case a 1205 rolls back the whole transaction too and this answer is wrong for it.
/// A connection lost is [`is_connection_lost`].
pub(crate) fn rolls_back_transaction(e: &sqlx::Error) -> bool {
    said(e).is_some_and(|s| matches!(s.number, ER_LOCK_DEADLOCK | ER_CHECKREAD))
}

/// Whether `e` says the connection it ran on is gone (killed, closed by the server, lost on
/// the network), as opposed to the pool being exhausted or closed, or a server that refuses
/// new connections: the server rolled back any transaction of that connection, and the
/// connection must not be reused.
pub(crate) fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(_) => said(e).is_some_and(ends_the_connection),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(p) => looks_like_lost_connection(p),
        _ => false,
    }
}

/// Maps an error of the application's own SQL onto Stockroom's error, as Stockroom maps its
/// own, so that `?` after `.map_err(stockroom_mariadb::classify)` keeps the error's meaning
/// and [`StoreExt::run`](stockroom_core::StoreExt::run) retries what it should:
///
/// | the server's error | Stockroom's error |
/// |---|---|
/// | 1213 deadlock (Galera's certification failure too), 1205 lock wait timeout, 1969 `max_statement_time`, 1317 interrupted, 1020 | `Transient` (retried by the retry runner) |
/// | 1062 duplicate entry on a unique index of Stockroom's entities, or on the ledger's idempotency key | `Conflict` on that rule |
/// | 1062 duplicate entry on a table of the application's | `Backend` naming the index: MariaDB's message names neither the table nor the columns; [`classify_on`] looks them up and answers `Conflict` |
/// | 1452 a row refers to a Stockroom entity's row that does not exist | `NotFound` of that entity (MariaDB's message does not say which id: it is nil) |
/// | 1451 rows of another table still refer to an entity's row | `Referenced`, naming the referring table (the id is nil, as above) |
/// | 4025 a CHECK failed | `Validation` (of the field, for a CHECK of Stockroom's; of `row` for the application's) |
/// | read-only, full, permission denied, corrupt | `Storage` |
/// | 1180 during COMMIT, connection lost, pool timed out or closed | `AmbiguousCommit` (1180), `Unavailable` |
/// | anything else | `Backend` |
///
/// Every error from the server keeps the sqlx error as its
/// [`source`](std::error::Error::source) (where its SQLSTATE is) and its error number as its
/// [`code`](Error::code) ([`BackendCode::MariaDb`]). The entities named are Stockroom's own; a
/// table of an entity of the application's is a table of the application's here.
///
/// ```no_run
/// # async fn demo(conn: &mut sqlx::MySqlConnection) -> stockroom_core::Result<()> {
/// use stockroom_mariadb::classify;
///
/// sqlx::query("UPDATE tallies SET n = n + 1 WHERE id = ?")
///     .bind(1_i32)
///     .execute(&mut *conn)
///     .await
///     .map_err(classify)?; // a deadlock is Error::Transient
/// # Ok(()) }
/// ```
pub fn classify(error: sqlx::Error) -> Error {
    map_error(error, built_in())
}

/// [`classify`], and for a duplicate entry on a unique index of a table of the application's
/// (which [`classify`] leaves `Backend`: MariaDB names the index alone), the
/// [`Error::Conflict`] PostgreSQL and SQLite give: [`Constraint::of_table`] with the table and
/// the index's columns, in the index's order, found in `information_schema.STATISTICS` on
/// `executor` (the connection the statement failed on, or the pool).
///
/// The index is looked for among the tables of the connection's current database
/// (`DATABASE()`), as MariaDB's message does not name the database either. The answer stays
/// [`classify`]'s when no table there has a unique index of that name (the statement named
/// another database), when several have one (an unnamed `UNIQUE (email)` is called `email` in
/// every table that has it: give your unique keys names of their own, such as
/// `orders_customer_number`, and the answer is exact), for the primary key (`PRIMARY`, every
/// table's), and when the lookup itself fails (its error is not reported: the statement's is
/// the one that matters). A unique rule of an entity of the application's, stored by Stockroom
/// as generated columns (`_live_<index>_<k>`, see the crate docs), is named by the fields it
/// covers.
///
/// Only a duplicate costs the lookup (one query on the catalog); any other error is
/// [`classify`]'s at once. A duplicate entry rolls back its statement alone, so the lookup runs
/// in the same transaction, which goes on.
///
/// ```no_run
/// # async fn demo(uow: &mut dyn stockroom_core::UnitOfWork) -> stockroom_core::Result<()> {
/// use stockroom_mariadb::{classify_on, connection};
///
/// let conn = connection(uow)?;
/// let placed = sqlx::query("INSERT INTO orders (customer, number) VALUES (?, ?)")
///     .bind(7_i64)
///     .bind(1_i64)
///     .execute(&mut *conn)
///     .await;
/// if let Err(e) = placed {
///     // A taken number: Error::Conflict on `orders(customer, number)`.
///     return Err(classify_on(&mut *conn, e).await);
/// }
/// # Ok(()) }
/// ```
pub async fn classify_on<'c, E>(executor: E, error: sqlx::Error) -> Error
where
    E: sqlx::Executor<'c, Database = sqlx::MySql>,
{
    let Some(key) = applications_duplicate(&error) else {
        return classify(error);
    };
    match unique_key(executor, &key).await {
        Ok(Some(constraint)) => Error::Conflict { constraint },
        // No table, several, or no answer: what the error alone says.
        Ok(None) | Err(_) => classify(error),
    }
}

/// The catalog of Stockroom's own entities, which [`classify`] names the rules of.
fn built_in() -> &'static Catalog {
    static BUILT_IN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    BUILT_IN.get_or_init(|| Catalog::new(&[]).expect("Stockroom's own declarations are valid"))
}

/// The key of a duplicate entry (1062, 1586) that [`classify`] cannot name: no rule of
/// Stockroom's, not the ledger's key, and not `PRIMARY` without a table (which no lookup could
/// place).
fn applications_duplicate(error: &sqlx::Error) -> Option<DuplicateKey> {
    let s = said(error)?;
    if !matches!(s.number, ER_DUP_ENTRY | ER_DUP_ENTRY_WITH_KEY_NAME) {
        return None;
    }
    let key = key_in_message(s.message)?;
    let anonymous_primary = key.key.eq_ignore_ascii_case("PRIMARY") && key.table.is_none();
    let named_by_classify = named_violation(error, built_in()).is_some();
    (!anonymous_primary && !named_by_classify).then_some(key)
}

/// The columns of every unique index named `?` (of table `?`, when the message named it) in
/// the connection's database, each with the expression that generates it, if any; by table,
/// then in the index's order.
const UNIQUE_KEY_COLUMNS: &str = "SELECT `s`.`TABLE_NAME`, `s`.`COLUMN_NAME`, \
     `c`.`GENERATION_EXPRESSION` \
     FROM `information_schema`.`STATISTICS` AS `s` \
     JOIN `information_schema`.`COLUMNS` AS `c` ON `c`.`TABLE_SCHEMA` = `s`.`TABLE_SCHEMA` \
       AND `c`.`TABLE_NAME` = `s`.`TABLE_NAME` AND `c`.`COLUMN_NAME` = `s`.`COLUMN_NAME` \
     WHERE `s`.`TABLE_SCHEMA` = DATABASE() AND `s`.`INDEX_NAME` = ? AND `s`.`NON_UNIQUE` = 0 \
       AND (? IS NULL OR `s`.`TABLE_NAME` = ?) \
     ORDER BY `s`.`TABLE_NAME`, `s`.`SEQ_IN_INDEX`";

/// The constraint of the one unique index `key` names in the connection's database, `None`
/// when there is none or more than one.
async fn unique_key<'c, E>(executor: E, key: &DuplicateKey) -> sqlx::Result<Option<Constraint>>
where
    E: sqlx::Executor<'c, Database = sqlx::MySql>,
{
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(UNIQUE_KEY_COLUMNS)
        .bind(&key.key)
        .bind(key.table.as_deref())
        .bind(key.table.as_deref())
        .fetch_all(executor)
        .await?;
    let Some((table, _, _)) = rows.first() else {
        return Ok(None);
    };
    if rows.iter().any(|(other, _, _)| other != table) {
        return Ok(None);
    }
    let columns: Vec<String> = rows
        .iter()
        .map(|(_, column, generated)| {
            generated
                .as_deref()
                .filter(|_| column.starts_with(LIVE_COLUMN_PREFIX))
                .and_then(live_field)
                .unwrap_or_else(|| column.clone())
        })
        .collect();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    Ok(Some(Constraint::of_table(table, &columns)))
}

/// How the generated columns of an entity's unique rule begin (`_live_<index>_<k>`, the
/// field's value while the row is live, NULL once it is deleted).
const LIVE_COLUMN_PREFIX: &str = "_live_";

/// The field a live-row column is generated from: of `if(`deleted_at` is null,`sku`,NULL)`
/// (as MariaDB keeps the expression), `sku`: the one column it reads besides `deleted_at`.
fn live_field(expression: &str) -> Option<String> {
    let mut fields = expression
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| *name != "deleted_at");
    let field = fields.next()?;
    fields.next().is_none().then(|| field.to_owned())
}

/// The name of the CHECK the adapter gives the declared field `field` of `table` (an integer's
/// range, an enum's values), which a check violation is mapped back by.
pub(crate) fn check_constraint(table: &str, field: &str) -> String {
    format!("{table}_{field}_check")
}

/// The name of the foreign key the adapter gives the reference field `field` of `table`.
pub(crate) fn foreign_key(table: &str, field: &str) -> String {
    format!("{table}_{field}_fk")
}

/// A duplicate key the server refused (1062, 1586): the index, and its table when the message
/// names it (MySQL 8 writes `table.index`; MariaDB writes the index alone).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DuplicateKey {
    /// The table, when the message names it.
    table: Option<String>,
    /// The index: a unique rule's (`products_sku_live`), or `PRIMARY`.
    key: String,
}

/// The key named at the end of a duplicate-entry message. The entry's value comes first and may
/// hold anything (even `' for key '`), so the key is read from the end.
fn key_in_message(message: &str) -> Option<DuplicateKey> {
    let (_, quoted) = message.rsplit_once(" for key '")?;
    let name = quoted.strip_suffix('\'')?;
    let (table, key) = match name.rsplit_once('.') {
        Some((table, key)) => (Some(table.to_owned()), key),
        None => (None, name),
    };
    Some(DuplicateKey {
        table,
        key: key.to_owned(),
    })
}

/// A write a foreign key refused (1452: the referred row is missing; 1451: rows still refer to
/// the row deleted), as MariaDB's message describes it: `… a foreign key constraint fails
/// (`shop`.`products`, CONSTRAINT `products_category_id_fk` FOREIGN KEY (`category_id`)
/// REFERENCES `categories` (`id`) …)`.
///
/// The message does not hold the key's value, so the mapped `NotFound` or `Referenced` has the
/// nil id: a caller that knows the value (the row it wrote, the row it deleted) puts it in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ForeignKeyFailure {
    /// The table that holds the foreign key (the referring rows).
    table: String,
    /// The foreign key's name (`<table>_<field>_fk` for an entity's).
    constraint: String,
    /// The referring columns.
    columns: Vec<String>,
    /// The table referred to.
    referenced_table: String,
}

/// The foreign key a 1451 or 1452 message describes (`None` for a message of another shape:
/// 1216 and 1217 name no constraint).
fn foreign_key_in_message(message: &str) -> Option<ForeignKeyFailure> {
    let (_, rest) = message.split_once("foreign key constraint fails (")?;
    let (table, rest) = rest.split_once(", CONSTRAINT ")?;
    let (constraint, rest) = rest.split_once(" FOREIGN KEY (")?;
    let (columns, rest) = rest.split_once(") REFERENCES ")?;
    let (referenced, _) = rest.split_once(" (")?;
    Some(ForeignKeyFailure {
        table: last_identifier(table)?,
        constraint: unquote(constraint)?,
        columns: columns
            .split(", ")
            .map(unquote)
            .collect::<Option<Vec<_>>>()?,
        referenced_table: last_identifier(referenced)?,
    })
}

/// A CHECK that failed (4025: `CONSTRAINT `products_stock_check` failed for
/// `shop`.`products``): the constraint's name and the table.
fn check_in_message(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("CONSTRAINT ")?;
    let (name, table) = rest.split_once(" failed for ")?;
    Some((unquote(name)?, last_identifier(table)?))
}

/// `` `name` `` without its backticks (a doubled backtick inside is one).
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.trim().strip_prefix('`')?.strip_suffix('`')?;
    Some(inner.replace("``", "`"))
}

/// The last part of `` `db`.`table` `` (or of `` `table` ``).
fn last_identifier(qualified: &str) -> Option<String> {
    let qualified = qualified.trim();
    // The parts are split at "`.`", which no doubled backtick inside a part can form.
    let last = qualified.rsplit_once("`.`").map_or(qualified, |(_, t)| t);
    let last = if last.starts_with('`') {
        last.to_owned()
    } else {
        format!("`{last}")
    };
    unquote(&last)
}

/// The core's error for a violation of a rule `catalog` names: a unique rule, a primary key, a
/// reference, a field's CHECK. `None` for any other error.
fn named_violation(e: &sqlx::Error, catalog: &Catalog) -> Option<Error> {
    let s = said(e)?;
    let entity_of = |table: &str| {
        catalog
            .entries()
            .iter()
            .find(|e| e.schema.table == table)
            .map(|e| e.schema.kind())
    };
    match s.number {
        ER_DUP_ENTRY | ER_DUP_ENTRY_WITH_KEY_NAME => {
            let duplicate = key_in_message(s.message)?;
            let constraint = if duplicate.key == IDEMPOTENCY_KEY_INDEX {
                Some(Constraint::IDEMPOTENCY_KEY)
            } else if duplicate.key == "PRIMARY" {
                // MariaDB's message names no table (only MySQL 8's `table.PRIMARY` does): the
                // record writer, which knows it, diagnoses the duplicate.
                let table = duplicate.table.as_deref()?;
                if table == LEDGER_TABLE {
                    Some(Constraint::primary_key(EntityKind::STOCK_MOVEMENT))
                } else {
                    entity_of(table).map(Constraint::primary_key)
                }
            } else {
                catalog.constraint_of_index(&duplicate.key)
            };
            constraint.map(|constraint| Error::Conflict { constraint })
        }
        ER_NO_REFERENCED_ROW_2 => {
            let failure = foreign_key_in_message(s.message)?;
            let entity = entity_of(&failure.referenced_table)
                .or_else(|| referred_by_constraint(catalog, &failure))?;
            Some(Error::not_found(entity, uuid::Uuid::nil()))
        }
        ER_ROW_IS_REFERENCED_2 => {
            let failure = foreign_key_in_message(s.message)?;
            let entity = entity_of(&failure.referenced_table)?;
            Some(Error::referenced(entity, uuid::Uuid::nil(), failure.table))
        }
        ER_CONSTRAINT_FAILED | ER_CHECK_CONSTRAINT_VIOLATED => {
            let (name, table) = check_in_message(s.message)?;
            let entry = catalog.entries().iter().find(|e| e.schema.table == table)?;
            // `<table>_<field>_check` (cut to an identifier as the table's DDL cuts it), or a
            // column's own CHECK, which MariaDB names after the column.
            let field = entry.schema.fields.iter().find(|f| {
                crate::tables::check_constraint(&table, f.name) == name || f.name == name
            })?;
            let rule = match field.ty {
                FieldType::Int { min, max } => Rule::OutOfRange { min, max },
                _ => Rule::Malformed {
                    expected: "one of the field's declared values",
                },
            };
            Some(Error::validation(field.name, rule))
        }
        _ => None,
    }
}

/// The entity a foreign key of an entity's table refers to, when its `REFERENCES` table is no
/// entity's (another database's, say): the reference field whose key it is, found by the key's
/// name (`<table>_<field>_fk`, as the adapter names it) or, for a key named otherwise (a table
/// whose DDL the application owns), by its one column.
fn referred_by_constraint(catalog: &Catalog, failure: &ForeignKeyFailure) -> Option<EntityKind> {
    let entry = catalog
        .entries()
        .iter()
        .find(|e| e.schema.table == failure.table)?;
    entry.schema.fields.iter().find_map(|f| match f.ty {
        FieldType::Ref(reference)
            if crate::tables::foreign_key(&failure.table, f.name) == failure.constraint
                || failure.columns == [f.name] =>
        {
            Some(reference.target().kind())
        }
        _ => None,
    })
}

/// `mapped` with the server's error number of `e` (when the server sent one) as its code
/// (MariaDB's SQLSTATE is often the generic `HY000`; the number tells the failures apart), and
/// `e` as its source.
fn with_cause(mapped: Error, e: sqlx::Error) -> Error {
    let mapped = match said(&e) {
        Some(said) => mapped.with_code(BackendCode::MariaDb(said.number)),
        None => mapped,
    };
    mapped.with_source(e)
}

/// The core's error for `e` without a catalog, and without its cause (which [`with_cause`]
/// attaches).
fn kind_of(e: &sqlx::Error) -> Error {
    if let Some(s) = said(e) {
        return server_error(s);
    }
    match e {
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
        sqlx::Error::Database(db) => {
            Error::backend_message(format!("MariaDB error: {}", db.message()))
        }
        sqlx::Error::RowNotFound => Error::backend_message("the statement returned no row"),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            Error::backend_message("cannot read a value MariaDB returned")
        }
        sqlx::Error::Encode(_) => Error::backend_message("cannot encode a statement's argument"),
        sqlx::Error::ColumnNotFound(_) | sqlx::Error::ColumnIndexOutOfBounds { .. } => {
            Error::backend_message("the statement did not return an expected column")
        }
        _ => Error::backend_message("MariaDB driver error"),
    }
}

/// The core's error for an error the server sent (see [`map_error`]'s table).
fn server_error(s: Said<'_>) -> Error {
    let message = s.message;
    match s.number {
        ER_DUP_ENTRY | ER_DUP_ENTRY_WITH_KEY_NAME => match key_in_message(message) {
            Some(k) if k.key == IDEMPOTENCY_KEY_INDEX => Error::Conflict {
                constraint: Constraint::IDEMPOTENCY_KEY,
            },
            Some(k) => Error::backend_message(format!("unique violation on key `{}`", k.key)),
            None => Error::backend_message("unique violation"),
        },
        ER_DUP_KEY | ER_DUP_UNIQUE | ER_DUP_UNKNOWN_IN_INDEX => {
            Error::backend_message(format!("unique violation: {message}"))
        }
        ER_NO_REFERENCED_ROW | ER_NO_REFERENCED_ROW_2 => Error::backend_message(format!(
            "foreign key violation: a row refers to one that does not exist ({message})"
        )),
        ER_ROW_IS_REFERENCED | ER_ROW_IS_REFERENCED_2 => Error::backend_message(format!(
            "foreign key violation: rows still refer to the row ({message})"
        )),
        ER_CONSTRAINT_FAILED | ER_CHECK_CONSTRAINT_VIOLATED => check_violation(message),
        ER_LOCK_DEADLOCK | ER_CHECKREAD => {
            Error::transient(format!("{message} (MariaDB rolled the transaction back)"))
        }
        ER_LOCK_WAIT_TIMEOUT | ER_TOO_MANY_CONCURRENT_TRXS => Error::transient(message),
        ER_STATEMENT_TIMEOUT | ER_QUERY_TIMEOUT | ER_QUERY_INTERRUPTED => Error::transient(
            format!("MariaDB interrupted the statement ({message}); nothing it did was applied"),
        ),
        ER_ERROR_DURING_COMMIT => Error::ambiguous_commit(format!(
            "{message}: the commit failed in the engine or in the cluster's replication, and \
             whether it took effect is unknown"
        )),
        _ if is_wsrep_not_ready(s) => Error::unavailable(format!(
            "the Galera node is not part of the cluster's primary component: {message}"
        )),
        ER_CON_COUNT_ERROR | ER_TOO_MANY_USER_CONNECTIONS => Error::unavailable(message),
        // The server closes the connection after it, but a retry would send the same packet:
        // the statement is what is wrong, not the server's reach.
        ER_NET_PACKET_TOO_LARGE => Error::backend_message(format!(
            "the statement is larger than the server's max_allowed_packet: {message}"
        )),
        _ if ends_the_connection(s) => Error::unavailable(message),
        ER_OPTION_PREVENTS_STATEMENT if mentions_read_only(message) => {
            Error::storage(StorageFault::ReadOnly, message)
        }
        ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION | ER_READ_ONLY_MODE | ER_OPEN_AS_READONLY => {
            Error::storage(StorageFault::ReadOnly, message)
        }
        ER_DISK_FULL | ER_RECORD_FILE_FULL => Error::storage(StorageFault::Full, message),
        _ if names_enospc(message) => Error::storage(StorageFault::Full, message),
        ER_DBACCESS_DENIED_ERROR
        | ER_TABLEACCESS_DENIED_ERROR
        | ER_COLUMNACCESS_DENIED_ERROR
        | ER_SPECIFIC_ACCESS_DENIED_ERROR
        | ER_PROCACCESS_DENIED_ERROR => Error::storage(StorageFault::PermissionDenied, message),
        ER_NOT_KEYFILE | ER_CRASHED_ON_USAGE | ER_CRASHED_ON_REPAIR | ER_INDEX_CORRUPT
        | ER_TABLE_CORRUPT => Error::storage(StorageFault::Corrupt, message),
        ER_BAD_DB_ERROR => {
            Error::backend_message(format!("MariaDB has no such database: {message}"))
        }
        ER_ACCESS_DENIED_ERROR
        | ER_HOST_IS_BLOCKED
        | ER_HOST_NOT_PRIVILEGED
        | ER_ACCESS_DENIED_NO_PASSWORD_ERROR => {
            Error::backend_message(format!("MariaDB refused the login: {message}"))
        }
        number => Error::backend_message(format!("MariaDB error {number}: {message}")),
    }
}

/// Whether the server's error says the connection is over: killed (1927, `KILL CONNECTION`),
/// the server shutting down (1053), aborted (1152, 1184), a network error the server saw
/// (1153–1161), a proxy's lost backend (2002, 2003, 2006, 2013), or any other error of
/// SQLSTATE class 08 (connection exception) but two whose connection is sound: 1047 (an
/// unknown command, and Galera's "not ready") and 1040 (too many connections, at login).
fn ends_the_connection(s: Said<'_>) -> bool {
    if is_wsrep_not_ready(s) {
        return false;
    }
    matches!(
        s.number,
        ER_CONNECTION_KILLED
            | ER_SERVER_SHUTDOWN
            | ER_ABORTING_CONNECTION
            | ER_NEW_ABORTING_CONNECTION
            | ER_NET_PACKET_TOO_LARGE
            | ER_NET_READ_ERROR_FROM_PIPE
            | ER_NET_FCNTL_ERROR
            | ER_NET_PACKETS_OUT_OF_ORDER
            | ER_NET_UNCOMPRESS_ERROR
            | ER_NET_READ_ERROR
            | ER_NET_READ_INTERRUPTED
            | ER_NET_ERROR_ON_WRITE
            | ER_NET_WRITE_INTERRUPTED
            | CR_CONNECTION_ERROR
            | CR_CONN_HOST_ERROR
            | CR_SERVER_GONE_ERROR
            | CR_SERVER_LOST
    ) || (s.state.starts_with("08")
        && !matches!(s.number, ER_CON_COUNT_ERROR | ER_UNKNOWN_COM_ERROR))
}

/// Whether a Galera node refused the statement because it is not part of a primary component
/// (`WSREP has not yet prepared node for application use`, 1047, or a 1105 about WSREP).
fn is_wsrep_not_ready(s: Said<'_>) -> bool {
    matches!(s.number, ER_UNKNOWN_COM_ERROR | ER_UNKNOWN_ERROR) && s.message.contains("WSREP")
}

/// Whether a 1290 is about `--read-only` (1290 names other options too: `--skip-grant-tables`,
/// `--secure-file-priv`).
fn mentions_read_only(message: &str) -> bool {
    message.contains("read-only") || message.contains("read_only")
}

/// Whether a message quotes the OS error `ENOSPC` (no space left on device): "Errcode: 28",
/// "Got error 28 …", or its text.
fn names_enospc(message: &str) -> bool {
    message.contains("No space left on device")
        || message.contains(&format!("Errcode: {ENOSPC} "))
        || message.contains(&format!("Errcode: {ENOSPC})"))
        || message.contains(&format!("Got error {ENOSPC} "))
}

/// The field of a CHECK no declared entity names (the ledger's, or an unknown table's): the
/// ledger's quantity by its name, anything else the row as a whole.
fn check_violation(message: &str) -> Error {
    let name = check_in_message(message).map(|(name, _)| name);
    match name.as_deref() {
        Some("stock_movements_quantity_check" | "stock_movements_quantity_positive") => {
            Error::validation(
                "quantity",
                Rule::OutOfRange {
                    min: 1,
                    max: MAX_STOCK,
                },
            )
        }
        _ => Error::validation(
            "row",
            Rule::Malformed {
                expected: "a row that passes the table's checks",
            },
        ),
    }
}

/// What an I/O error of a connection says in words: while connecting, why no server could be
/// reached; afterwards, that the connection was lost.
fn io_failure(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => format!(
            "cannot connect to MariaDB: connection refused, no server listens there ({error})"
        ),
        io::ErrorKind::NotFound => {
            format!("cannot connect to MariaDB: no server socket there ({error})")
        }
        io::ErrorKind::TimedOut => {
            format!("cannot connect to MariaDB: the connection timed out ({error})")
        }
        io::ErrorKind::PermissionDenied => {
            format!("cannot connect to MariaDB: permission denied ({error})")
        }
        _ => format!("connection lost: {error}"),
    }
}

fn looks_like_lost_connection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("connection")
        || m.contains("eof")
        || m.contains(&io::ErrorKind::UnexpectedEof.to_string())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use stockroom_core::Product;

    use super::*;

    /// A database error as a MariaDB server would send it (sqlx's own type cannot be built
    /// outside the driver; [`said`] reads this one in unit tests).
    #[derive(Debug)]
    pub(super) struct ServerSaid {
        pub(super) number: u16,
        pub(super) state: &'static str,
        pub(super) message: &'static str,
    }

    impl std::fmt::Display for ServerSaid {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} ({}): {}", self.number, self.state, self.message)
        }
    }

    impl std::error::Error for ServerSaid {}

    impl sqlx::error::DatabaseError for ServerSaid {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.state))
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

    fn server_said(number: u16, state: &'static str, message: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(ServerSaid {
            number,
            state,
            message,
        }))
    }

    fn catalog() -> Catalog {
        Catalog::new(&[]).unwrap()
    }

    fn map(e: sqlx::Error) -> Error {
        map_error(e, &catalog())
    }

    /// The product's unique index on `field`, as its declaration names it.
    fn product_index(field: &str) -> &'static str {
        let schema = <Product as stockroom_core::Entity>::schema();
        schema
            .unique
            .iter()
            .find(|u| u.fields == [field])
            .map(|u| u.index)
            .unwrap()
    }

    #[test]
    fn a_duplicate_names_the_rule_whose_index_the_message_names() {
        let sku = product_index("sku");
        let message: &'static str =
            Box::leak(format!("Duplicate entry 'SKU-1' for key '{sku}'").into_boxed_str());
        match map(server_said(1062, "23000", message)) {
            Error::Conflict { constraint } => assert_eq!(constraint, Constraint::PRODUCT_SKU),
            other => panic!("{other:?}"),
        }
        // The entry's value may name another index: the key is read from the message's end.
        let slug = product_index("slug");
        let tricky: &'static str =
            Box::leak(format!("Duplicate entry '{slug}' for key '{sku}'").into_boxed_str());
        assert!(matches!(
            map(server_said(1062, "23000", tricky)),
            Error::Conflict { constraint } if constraint == Constraint::PRODUCT_SKU
        ));
        // 1586 says the same in other words.
        assert!(matches!(
            map(server_said(1586, "23000", message)),
            Error::Conflict { constraint } if constraint == Constraint::PRODUCT_SKU
        ));
        let key = map(server_said(
            1062,
            "23000",
            "Duplicate entry 'k' for key 'stock_movements_idempotency_key'",
        ));
        assert!(
            matches!(key, Error::Conflict { constraint } if constraint == Constraint::IDEMPOTENCY_KEY),
            "{key:?}"
        );
        // Without a catalog too: the ledger's key is Stockroom's own.
        let bare = decode_error(server_said(
            1062,
            "23000",
            "Duplicate entry 'k' for key 'stock_movements_idempotency_key'",
        ));
        assert!(matches!(bare, Error::Conflict { .. }), "{bare:?}");
    }

    #[test]
    fn a_duplicate_primary_key_is_named_only_with_its_table() {
        let message = "Duplicate entry '\\x01\\x02' for key 'PRIMARY'";
        let alone = map(server_said(1062, "23000", message));
        match &alone {
            Error::Backend { message, code, .. } => {
                assert!(message.contains("`PRIMARY`"), "{message}");
                assert_eq!(code, &Some(BackendCode::MariaDb(1062)));
            }
            other => panic!("{other:?}"),
        }
        let on_ledger = map(server_said(
            1062,
            "23000",
            "Duplicate entry 'x' for key 'stock_movements.PRIMARY'",
        ));
        assert!(
            matches!(on_ledger, Error::Conflict { constraint } if constraint == Constraint::primary_key(EntityKind::STOCK_MOVEMENT)),
            "{on_ledger:?}"
        );
        // MySQL 8 names the table in the key: no context needed.
        let qualified = map(server_said(
            1062,
            "23000",
            "Duplicate entry 'x' for key 'users.PRIMARY'",
        ));
        assert!(
            matches!(qualified, Error::Conflict { constraint } if constraint == Constraint::primary_key(EntityKind::USER)),
            "{qualified:?}"
        );
        // An index of the application's table is no rule of the store's.
        let theirs = map(server_said(
            1062,
            "23000",
            "Duplicate entry '7-1' for key 'orders_number'",
        ));
        assert!(matches!(theirs, Error::Backend { .. }), "{theirs:?}");
    }

    /// `classify_on` looks up exactly the duplicates `classify` cannot name: an index of no rule
    /// of Stockroom's, or a primary key whose table the message names; never the anonymous
    /// `PRIMARY`, which every table has, nor any other error.
    #[test]
    fn only_a_duplicate_classify_cannot_name_is_looked_up() {
        let looked_up = |number, message: &'static str| {
            applications_duplicate(&server_said(number, "23000", message))
        };
        assert_eq!(
            looked_up(1062, "Duplicate entry '7-1' for key 'customer'"),
            Some(DuplicateKey {
                table: None,
                key: "customer".into()
            })
        );
        assert_eq!(
            looked_up(1062, "Duplicate entry '7' for key 'orders.PRIMARY'"),
            Some(DuplicateKey {
                table: Some("orders".into()),
                key: "PRIMARY".into()
            })
        );
        let sku: &'static str = Box::leak(
            format!("Duplicate entry 'S' for key '{}'", product_index("sku")).into_boxed_str(),
        );
        for (number, message) in [
            (1062, sku),
            (
                1062,
                "Duplicate entry 'k' for key 'stock_movements_idempotency_key'",
            ),
            (1062, "Duplicate entry 'x' for key 'products.PRIMARY'"),
            (1062, "Duplicate entry 'x' for key 'PRIMARY'"),
            (1062, "Duplicate entry"),
            (1452, "Duplicate entry '7' for key 'customer'"),
        ] {
            assert_eq!(looked_up(number, message), None, "{number}: {message}");
        }
        assert!(applications_duplicate(&sqlx::Error::PoolClosed).is_none());
    }

    #[test]
    fn a_live_rows_column_is_named_by_the_field_it_is_generated_from() {
        assert_eq!(
            live_field("if(`deleted_at` is null,`sku`,NULL)").as_deref(),
            Some("sku")
        );
        assert_eq!(
            live_field("if(`deleted_at` is null,`owner_id`,NULL)").as_deref(),
            Some("owner_id")
        );
        // An expression of another shape names no one field.
        assert_eq!(live_field("`a` + `b`"), None);
        assert_eq!(live_field("1"), None);
    }

    #[test]
    fn a_missing_referred_row_is_not_found_of_the_referenced_entity() {
        let message = "Cannot add or update a child row: a foreign key constraint fails \
                       (`stockroom_test_x`.`products`, CONSTRAINT `products_category_id_fk` \
                       FOREIGN KEY (`category_id`) REFERENCES `categories` (`id`) ON DELETE SET NULL)";
        match map(server_said(1452, "23000", message)) {
            Error::NotFound { entity, .. } => assert_eq!(entity, EntityKind::CATEGORY),
            other => panic!("{other:?}"),
        }
        let failure = foreign_key_in_message(message).unwrap();
        assert_eq!(
            failure,
            ForeignKeyFailure {
                table: "products".into(),
                constraint: "products_category_id_fk".into(),
                columns: vec!["category_id".into()],
                referenced_table: "categories".into(),
            }
        );
        // A table no entity declares: the foreign key's name still says which field it is.
        let renamed = "Cannot add or update a child row: a foreign key constraint fails \
                       (`db`.`products`, CONSTRAINT `products_created_by_fk` FOREIGN KEY \
                       (`created_by`) REFERENCES `other_db`.`people` (`id`))";
        match map(server_said(1452, "23000", renamed)) {
            Error::NotFound { entity, .. } => assert_eq!(entity, EntityKind::USER),
            other => panic!("{other:?}"),
        }
        // A key named otherwise (the application owns the table's DDL): its column says.
        let theirs_named = "Cannot add or update a child row: a foreign key constraint fails \
                            (`db`.`products`, CONSTRAINT `products_ibfk_2` FOREIGN KEY \
                            (`created_by`) REFERENCES `other_db`.`people` (`id`))";
        match map(server_said(1452, "23000", theirs_named)) {
            Error::NotFound { entity, .. } => assert_eq!(entity, EntityKind::USER),
            other => panic!("{other:?}"),
        }
        // The application's table referring to its own: no entity to name.
        let theirs = "Cannot add or update a child row: a foreign key constraint fails \
                      (`db`.`lines`, CONSTRAINT `lines_order_fk` FOREIGN KEY (`order_id`, `n`) \
                      REFERENCES `orders` (`id`, `n`))";
        let theirs = map(server_said(1452, "23000", theirs));
        assert!(matches!(theirs, Error::Backend { .. }), "{theirs:?}");
    }

    #[test]
    fn a_delete_another_table_refuses_is_referenced_by_that_table() {
        let message = "Cannot delete or update a parent row: a foreign key constraint fails \
                       (`stockroom_test_x`.`orders`, CONSTRAINT `orders_product_fk` FOREIGN KEY \
                       (`product_id`) REFERENCES `products` (`id`))";
        match map(server_said(1451, "23000", message)) {
            Error::Referenced { entity, table, .. } => {
                assert_eq!((entity, table.as_str()), (EntityKind::PRODUCT, "orders"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_check_names_its_field() {
        let stock = map(server_said(
            4025,
            "23000",
            "CONSTRAINT `products_stock_check` failed for `stockroom_test_x`.`products`",
        ));
        match stock {
            Error::Validation { field, rule } => {
                assert_eq!(field, "stock");
                assert_eq!(
                    rule,
                    Rule::OutOfRange {
                        min: 0,
                        max: MAX_STOCK
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        let status = map(server_said(
            4025,
            "23000",
            "CONSTRAINT `products_status_check` failed for `db`.`products`",
        ));
        assert!(
            matches!(
                status,
                Error::Validation {
                    field: "status",
                    rule: Rule::Malformed { .. }
                }
            ),
            "{status:?}"
        );
        // A column's own CHECK is named after the column.
        let rating = map(server_said(
            4025,
            "23000",
            "CONSTRAINT `rating` failed for `db`.`reviews`",
        ));
        assert!(
            matches!(
                rating,
                Error::Validation {
                    field: "rating",
                    ..
                }
            ),
            "{rating:?}"
        );
        let quantity = map(server_said(
            4025,
            "23000",
            "CONSTRAINT `stock_movements_quantity_check` failed for `db`.`stock_movements`",
        ));
        assert!(
            matches!(
                quantity,
                Error::Validation {
                    field: "quantity",
                    rule: Rule::OutOfRange { min: 1, .. }
                }
            ),
            "{quantity:?}"
        );
        let other = map(server_said(
            4025,
            "23000",
            "CONSTRAINT `orders_total_check` failed for `db`.`orders`",
        ));
        assert!(
            matches!(other, Error::Validation { field: "row", .. }),
            "{other:?}"
        );
    }

    #[test]
    fn deadlocks_timeouts_and_interruptions_are_transient() {
        for (number, state) in [
            (1213, "40001"),
            (1205, "HY000"),
            (1969, "70100"),
            (3024, "HY000"),
            (1317, "70100"),
            (1020, "HY000"),
            (1637, "HY000"),
        ] {
            let mapped = map(server_said(number, state, "the server's words"));
            assert!(mapped.is_transient(), "{number}: {mapped:?}");
            assert_eq!(
                mapped.code(),
                Some(&BackendCode::MariaDb(number)),
                "{number} ({state})"
            );
        }
    }

    #[test]
    fn only_deadlocks_and_stale_snapshots_roll_the_transaction_back() {
        let galera = server_said(
            1213,
            "40001",
            "Deadlock found when trying to get lock; try restarting transaction",
        );
        assert!(rolls_back_transaction(&galera));
        assert!(rolls_back_transaction(&server_said(
            1020,
            "HY000",
            "Record has changed"
        )));
        for number in [1205, 1969, 1317, 1062, 1452, 4025, 1792] {
            let e = server_said(number, "HY000", "no");
            assert!(!rolls_back_transaction(&e), "{number}");
        }
        assert!(!rolls_back_transaction(&sqlx::Error::PoolTimedOut));
    }

    #[test]
    fn permanent_faults_are_storage_faults_not_unavailable() {
        let cases = [
            (
                1290,
                "HY000",
                "The MariaDB server is running with the --read-only option so it cannot \
                 execute this statement",
                StorageFault::ReadOnly,
            ),
            (
                1792,
                "25006",
                "Cannot execute statement in a READ ONLY transaction",
                StorageFault::ReadOnly,
            ),
            (
                1836,
                "HY000",
                "Running in read-only mode",
                StorageFault::ReadOnly,
            ),
            (
                1036,
                "HY000",
                "Table 't' is read only",
                StorageFault::ReadOnly,
            ),
            (
                1021,
                "HY000",
                "Disk full (./shop/t); waiting for someone to free some space...",
                StorageFault::Full,
            ),
            (
                1114,
                "HY000",
                "The table 'products' is full",
                StorageFault::Full,
            ),
            (
                3,
                "HY000",
                "Error writing file './ib_logfile0' (Errcode: 28 \"No space left on device\")",
                StorageFault::Full,
            ),
            (
                1030,
                "HY000",
                "Got error 28 \"No space left on device\" from storage engine InnoDB",
                StorageFault::Full,
            ),
            (
                1142,
                "42000",
                "INSERT command denied to user 'app'@'localhost' for table `shop`.`products`",
                StorageFault::PermissionDenied,
            ),
            (
                1044,
                "42000",
                "Access denied for user 'app'@'%' to database 'shop'",
                StorageFault::PermissionDenied,
            ),
            (
                1034,
                "HY000",
                "Index for table 'products' is corrupt; try to repair it",
                StorageFault::Corrupt,
            ),
            (
                1712,
                "HY000",
                "Index products_sku_live is corrupted",
                StorageFault::Corrupt,
            ),
        ];
        for (number, state, message, expected) in cases {
            match map(server_said(number, state, message)) {
                Error::Storage {
                    fault,
                    reason,
                    code,
                    ..
                } => {
                    assert_eq!((fault, reason.as_str()), (expected, message), "{number}");
                    assert_eq!(code, Some(BackendCode::MariaDb(number)), "{state}");
                }
                other => panic!("{number}: {other:?}"),
            }
        }
        // 1290 about another option is no read-only server.
        let grants = map(server_said(
            1290,
            "HY000",
            "The MariaDB server is running with the --skip-grant-tables option so it cannot \
             execute this statement",
        ));
        assert!(matches!(grants, Error::Backend { .. }), "{grants:?}");
        // Error 28 of something else is not ENOSPC.
        let other = map(server_said(
            1030,
            "HY000",
            "Got error 280 from storage engine",
        ));
        assert!(matches!(other, Error::Backend { .. }), "{other:?}");
    }

    #[test]
    fn lost_connections_and_galeras_refusal_are_unavailable() {
        for (number, state) in [
            (1927, "70100"),
            (1053, "08S01"),
            (1152, "08S01"),
            (1184, "08S01"),
            (1158, "08S01"),
            (1161, "08S01"),
            (2006, "HY000"),
            (2013, "HY000"),
            (2003, "HY000"),
            (1080, "08S01"),
        ] {
            let e = server_said(number, state, "the connection is over");
            assert!(is_connection_lost(&e), "{number}");
            let mapped = map(e);
            assert!(
                matches!(mapped, Error::Unavailable { .. }),
                "{number}: {mapped:?}"
            );
            assert_eq!(
                mapped.code(),
                Some(&BackendCode::MariaDb(number)),
                "{state}"
            );
        }
        // Galera's node outside the primary component: unavailable, on a sound connection.
        let not_ready = server_said(
            1047,
            "08S01",
            "WSREP has not yet prepared node for application use",
        );
        assert!(!is_connection_lost(&not_ready));
        let mapped = map(not_ready);
        assert!(
            matches!(&mapped, Error::Unavailable { reason, .. } if reason.contains("primary component")),
            "{mapped:?}"
        );
        let wsrep = map(server_said(1105, "HY000", "WSREP: node is not ready"));
        assert!(matches!(wsrep, Error::Unavailable { .. }), "{wsrep:?}");
        // 1047 and 1105 without WSREP are what they say.
        let unknown = map(server_said(1047, "08S01", "Unknown command"));
        assert!(matches!(unknown, Error::Backend { .. }), "{unknown:?}");
        let unknown = map(server_said(1105, "HY000", "Unknown error"));
        assert!(matches!(unknown, Error::Backend { .. }), "{unknown:?}");
        // A packet too large ends the connection, but retrying would not help.
        let too_large = server_said(
            1153,
            "08S01",
            "Got a packet bigger than 'max_allowed_packet' bytes",
        );
        assert!(is_connection_lost(&too_large));
        let too_large = map(too_large);
        assert!(
            matches!(&too_large, Error::Backend { message, .. } if message.contains("max_allowed_packet")),
            "{too_large:?}"
        );
        // Too many connections: unavailable, but no connection was lost.
        let full = server_said(1040, "08004", "Too many connections");
        assert!(!is_connection_lost(&full));
        assert!(matches!(map(full), Error::Unavailable { .. }));
    }

    #[test]
    fn pool_and_io_failures_are_unavailable_and_only_io_loses_a_connection() {
        let refused = map(sqlx::Error::Io(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert!(
            matches!(&refused, Error::Unavailable { reason, .. } if reason.contains("connection refused")),
            "{refused:?}"
        );
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
            sqlx::Error::Protocol("unexpected EOF while reading a packet".into()),
        ] {
            let mapped = map(e);
            assert!(matches!(mapped, Error::Unavailable { .. }), "{mapped:?}");
            assert_eq!(mapped.code(), None);
        }
        assert!(is_connection_lost(&sqlx::Error::Io(io::Error::from(
            io::ErrorKind::UnexpectedEof
        ))));
        assert!(!is_connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(!is_connection_lost(&sqlx::Error::PoolClosed));
        assert!(!is_connection_lost(&sqlx::Error::RowNotFound));
        assert!(!is_connection_lost(&server_said(
            1062,
            "23000",
            "Duplicate entry"
        )));
    }

    #[test]
    fn a_commit_whose_outcome_is_unknown_is_ambiguous_and_only_then() {
        let commit = |e| map_commit_error(e, &catalog());
        for lost in [
            sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)),
            sqlx::Error::Io(io::Error::from(io::ErrorKind::UnexpectedEof)),
            server_said(1927, "70100", "Connection was killed"),
            server_said(2013, "HY000", "Lost connection to server during query"),
        ] {
            let mapped = commit(lost);
            assert!(mapped.is_ambiguous_commit(), "{mapped:?}");
        }
        let replication = commit(server_said(
            1180,
            "HY000",
            "Got error 6 \"No such device or address\" during COMMIT",
        ));
        assert!(replication.is_ambiguous_commit(), "{replication:?}");
        // Definite answers to a COMMIT: nothing was stored.
        let certification = commit(server_said(
            1213,
            "40001",
            "Deadlock found when trying to get lock; try restarting transaction",
        ));
        assert!(certification.is_transient(), "{certification:?}");
        let read_only = commit(server_said(1792, "25006", "read only"));
        assert!(read_only.is_permanent(), "{read_only:?}");
        let not_ready = commit(server_said(
            1047,
            "08S01",
            "WSREP has not yet prepared node for application use",
        ));
        assert!(
            matches!(not_ready, Error::Unavailable { .. }),
            "{not_ready:?}"
        );
        let pool = commit(sqlx::Error::PoolClosed);
        assert!(matches!(pool, Error::Unavailable { .. }), "{pool:?}");
        // A lost connection outside a commit is no ambiguity.
        let lost = map(server_said(1927, "70100", "Connection was killed"));
        assert!(matches!(lost, Error::Unavailable { .. }), "{lost:?}");
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
        for (number, state) in [
            (1213, "40001"),
            (1205, "HY000"),
            (1969, "70100"),
            (1927, "70100"),
            (1792, "25006"),
            (1021, "HY000"),
            (1049, "42000"),
            (1045, "28000"),
            (1062, "23000"),
            (1452, "23000"),
            (1180, "HY000"),
            (1146, "42S02"),
        ] {
            let error = map(server_said(number, state, "the server's words"));
            assert_eq!(
                error.code(),
                Some(&BackendCode::MariaDb(number)),
                "{number} ({state}): {error:?}"
            );
            let driver = driver_error_in(&error).unwrap_or_else(|| {
                panic!("{number}: no sqlx error among the sources of {error:?}")
            });
            assert!(driver.as_database_error().is_some(), "{number}: {driver:?}");
        }
        let ambiguous = map_commit_error(server_said(1927, "70100", "killed"), &catalog());
        assert_eq!(ambiguous.code(), Some(&BackendCode::MariaDb(1927)));
        assert!(driver_error_in(&ambiguous).is_some(), "{ambiguous:?}");
    }

    #[test]
    fn logins_refused_and_missing_databases_say_so() {
        let missing = map(server_said(1049, "42000", "Unknown database 'shop'"));
        assert_eq!(
            missing.to_string(),
            "backend error: MariaDB has no such database: Unknown database 'shop'"
        );
        let login = map(server_said(
            1045,
            "28000",
            "Access denied for user 'app'@'localhost' (using password: YES)",
        ));
        assert!(matches!(login, Error::Backend { .. }), "{login:?}");
        assert!(login
            .to_string()
            .contains("refused the login: Access denied"));
        let other = map(server_said(1146, "42S02", "Table 'shop.t' doesn't exist"));
        assert!(
            other
                .to_string()
                .contains("MariaDB error 1146: Table 'shop.t'"),
            "{other}"
        );
    }

    #[test]
    fn driver_errors_say_what_failed_and_keep_their_source() {
        let e = decode_error(sqlx::Error::RowNotFound);
        match &e {
            Error::Backend {
                message, source, ..
            } => {
                assert_eq!(message, "the statement returned no row");
                assert!(source.is_some());
            }
            other => panic!("{other:?}"),
        }
        let e = decode_error(sqlx::Error::Decode("bad bytes".into()));
        assert!(e.to_string().contains("cannot read a value"), "{e}");
    }

    /// What a real server answers ends the transaction, or the connection, as
    /// [`rolls_back_transaction`] and [`is_connection_lost`] say, and a commit on a killed
    /// connection is ambiguous (skipped without MariaDB, as the harness decides).
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_servers_answers_end_what_they_are_said_to() {
        use sqlx::{Connection, MySqlConnection};

        async fn run(conn: &mut MySqlConnection, sql: &str) -> sqlx::Result<()> {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(conn)
                .await
                .map(drop)
        }
        async fn in_transaction(conn: &mut MySqlConnection) -> bool {
            let open: u64 = sqlx::query_scalar("SELECT @@in_transaction")
                .fetch_one(conn)
                .await
                .unwrap();
            open == 1
        }

        let Some(db) = crate::testing::TestDatabase::create().await else {
            return;
        };
        let (mut a, mut b) = (db.connect().await, db.connect().await);
        run(
            &mut a,
            "CREATE TABLE `t` (`id` INT PRIMARY KEY, `n` INT) ENGINE=InnoDB; \
             INSERT INTO `t` VALUES (1, 0), (2, 0), (3, 0)",
        )
        .await
        .unwrap();

        // A duplicate and a lock wait timeout: the statement only.
        run(
            &mut a,
            "START TRANSACTION; UPDATE `t` SET `n` = 1 WHERE `id` = 1",
        )
        .await
        .unwrap();
        // (A duplicate leaves a shared lock on the row it collided with: a row of its own.)
        let duplicate = run(&mut a, "INSERT INTO `t` VALUES (3, 0)")
            .await
            .unwrap_err();
        assert!(!rolls_back_transaction(&duplicate) && !is_connection_lost(&duplicate));
        assert!(in_transaction(&mut a).await);
        run(
            &mut b,
            "SET SESSION `innodb_lock_wait_timeout` = 1; START TRANSACTION; \
             UPDATE `t` SET `n` = 1 WHERE `id` = 2",
        )
        .await
        .unwrap();
        let timeout = run(&mut b, "UPDATE `t` SET `n` = 2 WHERE `id` = 1")
            .await
            .unwrap_err();
        assert!(!rolls_back_transaction(&timeout), "{timeout:?}");
        assert!(map(timeout).is_transient());
        assert!(in_transaction(&mut b).await);

        // A deadlock: the victim's transaction is gone.
        let waiting = tokio::spawn(async move {
            let outcome = run(&mut a, "UPDATE `t` SET `n` = 3 WHERE `id` = 2").await;
            (a, outcome)
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let b_outcome = run(&mut b, "UPDATE `t` SET `n` = 3 WHERE `id` = 1").await;
        let (a, a_outcome) = waiting.await.unwrap();
        let (mut victim, mut survivor, deadlock) = match (a_outcome, b_outcome) {
            (Err(e), Ok(())) => (a, b, e),
            (Ok(()), Err(e)) => (b, a, e),
            other => panic!("exactly one victim: {other:?}"),
        };
        assert!(rolls_back_transaction(&deadlock), "{deadlock:?}");
        assert!(!is_connection_lost(&deadlock));
        assert!(!in_transaction(&mut victim).await);
        run(&mut survivor, "COMMIT").await.unwrap();

        // A connection killed while its transaction waits for COMMIT: lost, and the commit's
        // outcome is unknown to the client.
        run(
            &mut victim,
            "START TRANSACTION; UPDATE `t` SET `n` = 9 WHERE `id` = 1",
        )
        .await
        .unwrap();
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut victim)
            .await
            .unwrap();
        run(&mut survivor, &format!("KILL CONNECTION {id}"))
            .await
            .unwrap();
        let commit = run(&mut victim, "COMMIT").await.unwrap_err();
        assert!(is_connection_lost(&commit), "{commit:?}");
        assert!(!rolls_back_transaction(&commit));
        let mapped = map_commit_error(commit, &catalog());
        assert!(mapped.is_ambiguous_commit(), "{mapped:?}");
        let _ = survivor.close().await;
        db.drop_now().await;
    }

    #[test]
    fn messages_are_parsed_exactly() {
        assert_eq!(
            key_in_message("Duplicate entry 'a' for key 'b' for key 'c'"),
            Some(DuplicateKey {
                table: None,
                key: "c".into()
            })
        );
        assert_eq!(key_in_message("Duplicate entry 'a'"), None);
        assert_eq!(
            check_in_message("CONSTRAINT `a``b` failed for `db`.`t`"),
            Some(("a`b".into(), "t".into()))
        );
        assert_eq!(last_identifier("`t`").as_deref(), Some("t"));
        assert_eq!(last_identifier("`d`.`t`").as_deref(), Some("t"));
        assert_eq!(unquote("plain"), None);
        assert_eq!(
            check_constraint("products", "stock"),
            "products_stock_check"
        );
        assert_eq!(
            foreign_key("products", "category_id"),
            "products_category_id_fk"
        );
    }
}

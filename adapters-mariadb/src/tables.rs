//! The tables of the store's entities on MariaDB, Stockroom's own (products, categories, users,
//! reviews) and the application's alike: read from `information_schema` ([`live_table`]),
//! compared with their declarations by the core's [`plan`](tables::plan), and created or
//! extended with DDL written from the declarations, recorded in `stockroom_entities` (see
//! [`bring_up_to_date`]). No entity table is made by a migration: on MariaDB the declaration is
//! the only description of one.
//!
//! What replaces PostgreSQL's features here:
//!
//! - **Uniqueness among live rows** (MariaDB has no partial index): per unique rule, one virtual
//!   generated column per field of the rule ([`live_column`]),
//!   `IF(deleted_at IS NULL, <field>, NULL)`, and a `UNIQUE` index named exactly as the rule's
//!   index over them. A soft-deleted row holds `NULL` there, and a unique index lets any number
//!   of `NULL`s through. (A key longer than InnoDB's 3072 bytes, a `TEXT` field's, becomes a
//!   `USING HASH` unique index by itself.) Generated columns are left out when a live table is
//!   read for the plan: they are no field.
//! - **Text widths**: a text field is `VARCHAR(max_len)` up to 768 characters (so that it can be
//!   a B-tree key), `TEXT`/`MEDIUMTEXT` above ([`text_type`]). A declaration whose `max_len`
//!   grew is widened in place ([`Widen`]); the core's plan cannot see widths.
//! - **No transactional DDL**: each statement commits by itself. Every entity is compared before
//!   anything changes (as on PostgreSQL), and then each change is one statement, all or
//!   nothing, ordered so that a process that dies between two of them leaves a database the
//!   next connect finishes: a new table carries its ownership mark in its `COMMENT` (so a table
//!   made but not yet recorded is still Stockroom's), foreign keys that could not be made with
//!   their table are looked for and added, search documents are made again until the new
//!   definition is recorded, and the definition is recorded last.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, MySql, MySqlConnection, QueryBuilder, Row};
use stockroom_core::schema::tables::{self, LiveColumn, LiveTable, Step};
use stockroom_core::schema::{
    search_document, Catalog, Ddl, DefaultValue, Entry, Field, FieldType, OnDelete, Schema,
    Storage, Value,
};
use stockroom_core::{ColumnDifference, Error, Result, SchemaProblem};
use uuid::Uuid;

use crate::error::map_error;

/// The start of the `COMMENT` of every table Stockroom makes for an entity, followed by the
/// entity's name: made in the same statement as the table, it marks the table as Stockroom's
/// even when the process died before recording it in `stockroom_entities`.
pub(crate) const MARK: &str = "stockroom entity ";

/// The longest identifier MariaDB takes (tables, columns, indexes, constraints).
const MAX_IDENTIFIER: usize = 64;

/// The longest text that is a `VARCHAR` (768 characters of up to 4 bytes: InnoDB's 3072-byte
/// index key), so that a unique or reference index on it is a plain B-tree.
const MAX_VARCHAR: usize = 768;

/// The characters a `TEXT` column holds whatever they are (65,535 bytes, 4 per character).
const TEXT_CHARS: usize = 65_535 / 4;

/// The characters a `MEDIUMTEXT` column holds whatever they are (16 MiB, 4 bytes each).
const MEDIUMTEXT_CHARS: usize = 16_777_215 / 4;

/// The type of the search document: its length is the sum of several folded fields, and
/// folding may lengthen a text, so it gets room for any realistic sum.
const SEARCH_TEXT_TYPE: &str = "MEDIUMTEXT";

/// The table options of every table Stockroom makes: InnoDB (transactions, foreign keys), and
/// exact, case-sensitive comparison of text, as on the other backends.
const TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// The columns of table `?` of the current database: name, type, full type, whether it may be
/// NULL, its default (MariaDB shows `DEFAULT NULL` as the text `NULL`, no default as SQL
/// `NULL`), whether it is generated, its length in characters (text types).
const COLUMNS: &str = "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, \
     COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%', IS_GENERATED, \
     CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED) \
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
     ORDER BY ORDINAL_POSITION";

/// The names of the indexes of table `?`.
const INDEXES: &str = "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";

/// The comment of table `?` (see [`MARK`]).
const COMMENT: &str = "SELECT TABLE_COMMENT FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";

/// The names of the foreign keys of table `?`.
const FOREIGN_KEYS: &str =
    "SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS \
     WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?";

/// The definition Stockroom recorded for table `?`.
const RECORDED: &str = "SELECT `definition` FROM `stockroom_entities` WHERE `table_name` = ?";

/// Records (or refreshes) the definition of table `?` of entity `?`.
const RECORD: &str = "INSERT INTO `stockroom_entities` \
     (`table_name`, `entity`, `definition`, `checksum`, `applied_at`) \
     VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6)) \
     ON DUPLICATE KEY UPDATE `entity` = VALUES(`entity`), `definition` = VALUES(`definition`), \
     `checksum` = VALUES(`checksum`), `applied_at` = VALUES(`applied_at`)";

/// Rows read and written per statement when the search documents of a table are made again.
const REFOLD_BATCH: i64 = 1_000;

/// A table as the database has it: what the core's plan compares, and what only MariaDB's DDL
/// needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Live {
    /// The columns (generated ones left out) and the names of the indexes.
    pub(crate) table: LiveTable,
    /// The generated columns' names.
    pub(crate) generated: Vec<String>,
    /// For each text column (by name), how many characters it holds whatever they are.
    pub(crate) text_chars: Vec<(String, usize)>,
    /// The full type of each column, by name (`varchar(10)`), for errors.
    pub(crate) column_types: Vec<(String, String)>,
    /// The names of its foreign keys.
    pub(crate) foreign_keys: Vec<String>,
    /// Its `COMMENT`.
    pub(crate) comment: String,
}

impl Live {
    /// Whether Stockroom made the table for an entity (see [`MARK`]).
    fn is_marked(&self) -> bool {
        self.comment.starts_with(MARK)
    }

    /// Whether the table has the (non-generated) column `name`.
    fn has_column(&self, name: &str) -> bool {
        self.table.columns.iter().any(|c| c.name == name)
    }
}

/// The storage class of a column of MariaDB type `data_type` (as `information_schema` names
/// it) and full type `column_type`, if a declared field can be stored in it: the types
/// Stockroom makes, and the ones an application's own table may use for the same values.
fn storage_of(data_type: &str, column_type: &str) -> Option<Storage> {
    Some(match data_type {
        "varchar" | "char" | "tinytext" | "text" | "mediumtext" | "longtext" => Storage::Text,
        // BOOLEAN is TINYINT(1); any other TINYINT is too small for a field's integers.
        "tinyint" if column_type.starts_with("tinyint(1)") => Storage::Bool,
        "bigint" | "int" | "mediumint" | "smallint" => Storage::Int,
        // DATETIME(6): microseconds, and no time zone conversion (TIMESTAMP converts with the
        // session's zone, and ends in 2038).
        "datetime" if column_type == "datetime(6)" => Storage::Timestamp,
        // sqlx binds a UUID as its 16 bytes.
        "binary" if column_type == "binary(16)" => Storage::Uuid,
        _ => return None,
    })
}

/// How many characters of up to 4 bytes a text column of type `data_type` holds, from its
/// `CHARACTER_MAXIMUM_LENGTH` (characters for `VARCHAR`/`CHAR`, bytes for the `TEXT` types).
fn text_capacity(data_type: &str, max_length: Option<i64>) -> Option<usize> {
    let length = usize::try_from(max_length?).ok()?;
    match data_type {
        "varchar" | "char" => Some(length),
        "tinytext" | "text" | "mediumtext" | "longtext" => Some(length / 4),
        _ => None,
    }
}

/// The table `table` of the current database as it is, `None` when there is none.
pub(crate) async fn live_table(
    conn: &mut MySqlConnection,
    catalog: &Catalog,
    table: &str,
) -> Result<Option<Live>> {
    type ColumnRow = (String, String, String, String, bool, String, Option<i64>);
    let rows: Vec<ColumnRow> = sqlx::query_as(COLUMNS)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, catalog))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut live = Live::default();
    for (name, data_type, column_type, nullable, has_default, generated, max_length) in rows {
        if generated != "NEVER" {
            live.generated.push(name);
            continue;
        }
        if let Some(chars) = text_capacity(&data_type, max_length) {
            live.text_chars.push((name.clone(), chars));
        }
        live.column_types.push((name.clone(), column_type.clone()));
        live.table.columns.push(LiveColumn {
            storage: storage_of(&data_type, &column_type),
            nullable: nullable == "YES",
            has_default,
            type_name: data_type,
            name,
        });
    }
    live.table.indexes = sqlx::query_scalar(INDEXES)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, catalog))?;
    live.foreign_keys = sqlx::query_scalar(FOREIGN_KEYS)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, catalog))?;
    live.comment = sqlx::query_scalar(COMMENT)
        .bind(table)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| map_error(e, catalog))?
        .unwrap_or_default();
    Ok(Some(live))
}

/// The declaration `schema` as a table Stockroom manages. Stockroom's own entities are declared
/// [`Ddl::BuiltIn`] (on PostgreSQL and SQLite their migrations make their tables); on MariaDB
/// their tables are made and extended from the declaration like an application's, so the
/// core's plan gets a copy that says so. The copies are made once per process (four small
/// structs), the plan needing a `'static` declaration.
fn managed(schema: &'static Schema) -> &'static Schema {
    if schema.ddl != Ddl::BuiltIn {
        return schema;
    }
    static COPIES: OnceLock<Mutex<Vec<&'static Schema>>> = OnceLock::new();
    let mut copies = COPIES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(copy) = copies
        .iter()
        .find(|c| c.name == schema.name && c.table == schema.table)
    {
        return copy;
    }
    let copy: &'static Schema = Box::leak(Box::new(Schema {
        name: schema.name,
        table: schema.table,
        fields: schema.fields,
        unique: schema.unique,
        search: schema.search,
        ddl: Ddl::Stockroom,
    }));
    copies.push(copy);
    copy
}

/// A text field of a Stockroom-managed table whose column is narrower than its declaration
/// (its `max_len` grew), to be made wide enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Widen(pub(crate) usize);

/// What one entity's table needs, found before anything changes.
struct Work<'c> {
    /// The entity's entry in the catalog.
    entry: &'c Entry,
    /// The declaration as planned ([`managed`] for Stockroom's own).
    schema: &'static Schema,
    /// The core's plan for the table.
    steps: Vec<Step>,
    /// Text columns to widen.
    widen: Vec<Widen>,
    /// Reference fields of an existing table whose foreign key is missing (a process died
    /// between making the table and adding the foreign keys it could not be made with).
    missing_foreign_keys: Vec<usize>,
    /// Whether the search documents must be made again (a defaulted search field was added
    /// since the recorded definition).
    refold: bool,
    /// The definition to record ([`tables::definition`]).
    definition: String,
    /// Whether the definition must be recorded.
    record: bool,
}

/// Brings the tables of every entity of `catalog` (Stockroom's and the application's) to their
/// declarations, on `conn`, whose caller holds Stockroom's migration lock (or, on a Galera
/// cluster, whose lock is the node's only: see [`crate::migrate`]):
///
/// - each table is read and compared with its declaration ([`tables::plan`], and the widths of
///   text columns), every one before anything changes, so that a declaration that no longer
///   matches its table (a field renamed, retyped or dropped, a new required field without a
///   default; a table Stockroom did not make; for a table the application owns, any
///   difference, a text column too narrow included) fails with [`Error::Schema`] and changes
///   nothing at all;
/// - then the tables Stockroom manages are created (columns, the generated columns and unique
///   index of each rule, `<table>_order`, an index and a foreign key per reference field, the
///   CHECKs), in an order where a referred table comes first (the foreign keys of a cycle are
///   added after every table exists), extended (new nullable or defaulted fields, new unique
///   rules' indexes, text columns widened), their search documents made again where a
///   defaulted search field was added, and recorded in `stockroom_entities`. A table the
///   application owns is only checked.
///
/// MariaDB commits each DDL statement by itself: each change here is one statement, and a
/// process that dies between two leaves what the next call finishes (see the module's docs).
pub(crate) async fn bring_up_to_date(conn: &mut MySqlConnection, catalog: &Catalog) -> Result<()> {
    let db = |e| map_error(e, catalog);
    let mut work = Vec::new();
    let mut existing: HashSet<&'static str> = HashSet::new();
    for entry in catalog.entries() {
        let schema = managed(entry.schema);
        let live = live_table(conn, catalog, schema.table).await?;
        let recorded: Option<String> = sqlx::query_scalar(RECORDED)
            .bind(schema.table)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        let ours = recorded.is_some() || live.as_ref().is_some_and(Live::is_marked);
        let steps = tables::plan(schema, live.as_ref().map(|l| &l.table), ours)?;
        let owned = schema.ddl == Ddl::Stockroom;
        let mut widen = Vec::new();
        let mut missing_foreign_keys = Vec::new();
        if let Some(live) = &live {
            existing.insert(schema.table);
            widen = narrow_columns(schema, live)?;
            if owned {
                missing_foreign_keys = schema
                    .references()
                    .filter(|(_, field, _)| {
                        live.has_column(field.name)
                            && !live
                                .foreign_keys
                                .contains(&foreign_key(schema.table, field.name))
                    })
                    .map(|(i, _, _)| i)
                    .collect();
            }
        }
        let definition = tables::definition(schema);
        let record = owned && recorded.as_deref() != Some(definition.as_str());
        let refold = owned
            && live.is_some()
            && recorded
                .as_deref()
                .is_some_and(|recorded| lacks_a_defaulted_search_field(entry, recorded));
        if !steps.is_empty() || !widen.is_empty() || !missing_foreign_keys.is_empty() || record {
            work.push(Work {
                entry,
                schema,
                steps,
                widen,
                missing_foreign_keys,
                refold,
                definition,
                record,
            });
        }
    }
    if work.is_empty() {
        return Ok(());
    }

    // The new tables, a referred one before the tables that refer to it.
    let mut deferred: Vec<(&'static Schema, Vec<usize>)> = Vec::new();
    for i in creation_order(&work, &existing) {
        let schema = work[i].schema;
        let (ddl, later) = create_table(schema, |target| {
            target == schema.table || existing.contains(target)
        });
        execute(conn, catalog, &ddl).await?;
        existing.insert(schema.table);
        if !later.is_empty() {
            deferred.push((schema, later));
        }
    }
    // The tables there: one statement each, all or nothing.
    for w in &work {
        if let Some(ddl) = alter_table(w.schema, &w.steps, &w.widen) {
            execute(conn, catalog, &ddl).await?;
        }
    }
    // The foreign keys of a cycle of new tables, and any a process that died left unmade.
    deferred.extend(
        work.iter()
            .filter(|w| !w.missing_foreign_keys.is_empty())
            .map(|w| (w.schema, w.missing_foreign_keys.clone())),
    );
    for (schema, fields) in deferred {
        execute(conn, catalog, &add_foreign_keys(schema, &fields)).await?;
    }
    for w in &work {
        if w.refold || w.steps.iter().any(|&step| changes_documents(w.entry, step)) {
            refold(conn, catalog, w.entry).await?;
        }
        if w.record {
            sqlx::query(RECORD)
                .bind(w.schema.table)
                .bind(w.schema.name)
                .bind(&w.definition)
                .bind(checksum(&w.definition))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
        if !w.steps.is_empty() || !w.widen.is_empty() || !w.missing_foreign_keys.is_empty() {
            tracing::info!(
                target: "stockroom::sql",
                entity = w.schema.name,
                table = w.schema.table,
                steps = ?w.steps,
                widened = ?w.widen,
                foreign_keys_added = ?w.missing_foreign_keys,
                "brought the entity's table to its declaration"
            );
        }
    }
    Ok(())
}

/// Runs one DDL statement of ours (written from checked declarations).
async fn execute(conn: &mut MySqlConnection, catalog: &Catalog, ddl: &str) -> Result<()> {
    tracing::debug!(target: "stockroom::sql", "{ddl}");
    sqlx::raw_sql(AssertSqlSafe(ddl.to_owned()))
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(e, catalog))?;
    Ok(())
}

/// The positions in `work` of the tables to create, each after the tables it refers to, when
/// they are new too; in a cycle, the first of its tables left comes first (and its foreign keys
/// to the others are added after, see [`create_table`]). `existing` holds the tables there.
fn creation_order(work: &[Work<'_>], existing: &HashSet<&'static str>) -> Vec<usize> {
    let mut pending: Vec<usize> = (0..work.len())
        .filter(|&i| work[i].steps.contains(&Step::CreateTable))
        .collect();
    let mut made: HashSet<&str> = existing.clone();
    let mut order = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = |&i: &usize| {
            let schema = work[i].schema;
            schema.references().all(|(_, _, r)| {
                let target = r.target().table;
                target == schema.table || made.contains(target)
            })
        };
        let next = pending.iter().position(ready).unwrap_or(0);
        let i = pending.remove(next);
        made.insert(work[i].schema.table);
        order.push(i);
    }
    order
}

/// Whether the recorded definition `recorded` of `entry`'s table lacks one of its search fields
/// that has a default: a table extended with one, whose documents are made again until the new
/// definition is recorded.
fn lacks_a_defaulted_search_field(entry: &Entry, recorded: &str) -> bool {
    entry.search_fields.iter().any(|&i| {
        let field = &entry.schema.fields[i];
        field.default.is_some()
            && !recorded
                .lines()
                .any(|line| line.split(' ').next() == Some(field.name))
    })
}

/// Whether `step` changes the search documents of the rows there: a field of the document
/// added with a default, which every row now holds.
fn changes_documents(entry: &Entry, step: Step) -> bool {
    matches!(step, Step::AddColumn(i)
        if entry.search_fields.contains(&i) && entry.schema.fields[i].default.is_some())
}

/// The text fields of `schema` whose columns in `live` hold fewer characters than the
/// declaration allows: to widen for a table Stockroom manages, a mismatch for one the
/// application owns (a longer value would fail to be written).
fn narrow_columns(schema: &'static Schema, live: &Live) -> Result<Vec<Widen>> {
    let mut widen = Vec::new();
    let mut differences = Vec::new();
    for (i, field) in schema.fields.iter().enumerate() {
        let Some(wanted) = text_chars(field) else {
            continue;
        };
        let Some(&(_, found)) = live.text_chars.iter().find(|(name, _)| name == field.name) else {
            continue; // missing or not text: the plan's to report
        };
        if found >= wanted {
            continue;
        }
        if schema.ddl == Ddl::Stockroom {
            widen.push(Widen(i));
        } else {
            let found_type = live
                .column_types
                .iter()
                .find(|(name, _)| name == field.name)
                .map_or("text", |(_, t)| t.as_str());
            let nullable = if field.nullable { "null" } else { "not null" };
            differences.push(ColumnDifference {
                column: field.name.to_owned(),
                declared: Some(format!(
                    "{} (up to {wanted} characters)",
                    tables::describe(Storage::Text, field.nullable)
                )),
                found: Some(format!("{found_type} {nullable}")),
            });
        }
    }
    if differences.is_empty() {
        Ok(widen)
    } else {
        Err(Error::Schema {
            entity: schema.kind(),
            problem: SchemaProblem::Mismatch {
                table: schema.table,
                differences,
            },
        })
    }
}

/// The SHA-256 of `text`, in lower-case hex.
pub(crate) fn checksum(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name` as an identifier MariaDB takes: at most 64 characters, or else cut and ended with a
/// hash of the whole (MariaDB refuses a longer name, and two long names cut alike could meet).
pub(crate) fn identifier(name: String) -> String {
    if name.len() <= MAX_IDENTIFIER {
        return name;
    }
    let hash = checksum(&name);
    format!("{}_{}", &name[..MAX_IDENTIFIER - 9], &hash[..8])
}

/// The generated column that holds field `k` of the unique rule whose index is `index` for a
/// live row, `NULL` for a deleted one: `_live_<index>_<k>`.
pub(crate) fn live_column(index: &str, k: usize) -> String {
    identifier(format!("_live_{index}_{k}"))
}

/// The name of the CHECK of field `field` of `table` (an integer's range, an enum's names):
/// [`crate::error::check_constraint`]'s `<table>_<field>_check`, cut to an [`identifier`], as
/// a violation (4025) names it.
pub(crate) fn check_constraint(table: &str, field: &str) -> String {
    identifier(crate::error::check_constraint(table, field))
}

/// The name of the foreign key of the reference field `field` of `table`:
/// [`crate::error::foreign_key`]'s `<table>_<field>_fk`, cut to an [`identifier`], as a
/// violation (1451, 1452) names it.
pub(crate) fn foreign_key(table: &str, field: &str) -> String {
    identifier(crate::error::foreign_key(table, field))
}

/// The name of the index of the reference field `field` of `table`.
fn reference_index_name(table: &str, field: &str) -> String {
    identifier(format!("{table}_{field}_ref"))
}

/// `` `name` ``: every identifier is quoted (MariaDB reserves words PostgreSQL and SQLite do
/// not; declared names are letters, digits and `_`, so never hold a backtick).
fn quoted(name: &str) -> String {
    format!("`{name}`")
}

/// `text` as a MariaDB string literal, whatever the session's `sql_mode` (the migration sets
/// one without `NO_BACKSLASH_ESCAPES`, see [`crate::migrate`]): `'` and `\` escaped.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `default` as an SQL literal.
fn literal(default: DefaultValue) -> String {
    match default {
        DefaultValue::Bool(b) => if b { "TRUE" } else { "FALSE" }.to_owned(),
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Text(t) => quote(t),
    }
}

/// The column type of a text of up to `chars` characters: `VARCHAR` up to [`MAX_VARCHAR`],
/// then the smallest `TEXT` type that holds them.
pub(crate) fn text_type(chars: usize) -> String {
    if chars <= MAX_VARCHAR {
        format!("VARCHAR({chars})")
    } else if chars <= TEXT_CHARS {
        "TEXT".to_owned()
    } else if chars <= MEDIUMTEXT_CHARS {
        "MEDIUMTEXT".to_owned()
    } else {
        "LONGTEXT".to_owned()
    }
}

/// How many characters `field`'s column must hold, for a text or enum field.
fn text_chars(field: &Field) -> Option<usize> {
    match field.ty {
        FieldType::Text(rule) => Some(rule.max_len()),
        // Enum names take 255 characters, or their longest name's length if longer.
        FieldType::Enum(names) => Some(
            names
                .iter()
                .map(|n| n.chars().count())
                .max()
                .unwrap_or(0)
                .max(255),
        ),
        _ => None,
    }
}

/// The column type of `field`.
pub(crate) fn column_type(field: &Field) -> String {
    if let Some(chars) = text_chars(field) {
        return text_type(chars);
    }
    match field.ty.storage() {
        Storage::Int => "BIGINT",
        Storage::Bool => "BOOLEAN",
        Storage::Timestamp => "DATETIME(6)",
        Storage::Uuid => "BINARY(16)",
        Storage::Text => unreachable!("text fields have a width"),
    }
    .to_owned()
}

/// The definition of the declared field at `index` as a column: type, `NULL`/`NOT NULL`,
/// default.
fn column(schema: &Schema, index: usize) -> String {
    let field = &schema.fields[index];
    let mut sql = format!(
        "{} {} {}",
        quoted(field.name),
        column_type(field),
        if field.nullable { "NULL" } else { "NOT NULL" }
    );
    if let Some(default) = field.default {
        let _ = write!(sql, " DEFAULT {}", literal(default));
    }
    sql
}

/// The CHECK of the field at `index` (an integer's declared range, an enum's names), as a
/// table constraint, if it has one.
fn check(schema: &Schema, index: usize) -> Option<String> {
    let field = &schema.fields[index];
    let name = quoted(field.name);
    let condition = match field.ty {
        FieldType::Int { min, max } => {
            let mut bounds = Vec::new();
            if min > i64::MIN {
                bounds.push(format!("{name} >= {min}"));
            }
            if max < i64::MAX {
                bounds.push(format!("{name} <= {max}"));
            }
            (!bounds.is_empty()).then(|| bounds.join(" AND "))
        }
        FieldType::Enum(values) => {
            let values: Vec<String> = values.iter().map(|v| quote(v)).collect();
            Some(format!("{name} IN ({})", values.join(", ")))
        }
        _ => None,
    }?;
    Some(format!(
        "CONSTRAINT {} CHECK ({condition})",
        quoted(&check_constraint(schema.table, field.name))
    ))
}

/// The generated columns of the unique rule at `rule`: field `k` of the rule while the row is
/// live, `NULL` once it is deleted.
fn live_columns(schema: &Schema, rule: usize) -> Vec<String> {
    let unique = &schema.unique[rule];
    unique
        .fields
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let (_, field) = schema.field(name).expect("a checked declaration");
            format!(
                "{} {} AS (IF(`deleted_at` IS NULL, {}, NULL)) VIRTUAL",
                quoted(&live_column(unique.index, k)),
                column_type(field),
                quoted(name)
            )
        })
        .collect()
}

/// The unique index of the rule at `rule`, over its generated columns.
fn unique_index(schema: &Schema, rule: usize) -> String {
    let unique = &schema.unique[rule];
    let columns: Vec<String> = (0..unique.fields.len())
        .map(|k| quoted(&live_column(unique.index, k)))
        .collect();
    format!(
        "UNIQUE INDEX {} ({})",
        quoted(unique.index),
        columns.join(", ")
    )
}

/// The index of the reference field at `index`: the rows that refer to a row, in list order
/// (lists filtered by it, and what a delete for good of the referred row does; it is also the
/// index InnoDB needs for the foreign key).
fn reference_index(schema: &Schema, index: usize) -> String {
    let field = schema.fields[index].name;
    format!(
        "INDEX {} ({}, `created_at`, `id`)",
        quoted(&reference_index_name(schema.table, field)),
        quoted(field)
    )
}

/// The foreign key of the reference field at `index`, with its declared `ON DELETE`, as a
/// table constraint.
fn foreign_key_clause(schema: &Schema, index: usize) -> Option<String> {
    let field = &schema.fields[index];
    let FieldType::Ref(reference) = field.ty else {
        return None;
    };
    let action = match reference.on_delete {
        OnDelete::SetNull => "SET NULL",
        OnDelete::Cascade => "CASCADE",
    };
    Some(format!(
        "CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} (`id`) ON DELETE {action}",
        quoted(&foreign_key(schema.table, field.name)),
        quoted(field.name),
        quoted(reference.target().table)
    ))
}

/// `CREATE TABLE` of `schema`, in one statement: the columns of [`tables::columns`] in their
/// order, then the generated columns of the unique rules; the primary key, each rule's unique
/// index, `<table>_order` on `(created_at, id)`, an index per reference field, the CHECKs, the
/// foreign keys to the tables `may_refer` accepts (the table itself, and the tables that
/// exist), and the ownership [`MARK`] as the table's comment. Returns the statement and the
/// reference fields whose foreign keys must be added once their tables exist.
fn create_table(schema: &Schema, may_refer: impl Fn(&str) -> bool) -> (String, Vec<usize>) {
    let mut parts = vec!["`id` BINARY(16) NOT NULL".to_owned()];
    parts.extend((0..schema.fields.len()).map(|i| column(schema, i)));
    parts.extend([
        "`created_at` DATETIME(6) NOT NULL".to_owned(),
        "`updated_at` DATETIME(6) NOT NULL".to_owned(),
        "`deleted_at` DATETIME(6) NULL".to_owned(),
        "`version` BIGINT NOT NULL DEFAULT 1".to_owned(),
    ]);
    if schema.search.is_some() {
        parts.push(format!("`search_text` {SEARCH_TEXT_TYPE} NOT NULL"));
    }
    parts.extend((0..schema.unique.len()).flat_map(|rule| live_columns(schema, rule)));
    parts.push("PRIMARY KEY (`id`)".to_owned());
    parts.extend((0..schema.unique.len()).map(|rule| unique_index(schema, rule)));
    // The order of every list and the keyset position.
    parts.push(format!(
        "INDEX {} (`created_at`, `id`)",
        quoted(&identifier(format!("{}_order", schema.table)))
    ));
    parts.extend(
        schema
            .references()
            .map(|(i, _, _)| reference_index(schema, i)),
    );
    parts.extend((0..schema.fields.len()).filter_map(|i| check(schema, i)));
    let mut later = Vec::new();
    for (i, _, reference) in schema.references() {
        if may_refer(reference.target().table) {
            parts.extend(foreign_key_clause(schema, i));
        } else {
            later.push(i);
        }
    }
    let sql = format!(
        "CREATE TABLE {} ({}) {TABLE_OPTIONS} COMMENT {}",
        quoted(schema.table),
        parts.join(", "),
        quote(&format!("{MARK}{}", schema.name))
    );
    (sql, later)
}

/// `ALTER TABLE` that takes `schema`'s table through `steps` (other than creating it) and
/// widens the `widen` columns, in one statement (all or nothing), if there is anything to do:
/// each added field with its CHECK, and its index and foreign key if it is a reference; each new
/// unique rule's generated columns and index; each widened column with the generated columns
/// and index of the rules it is in.
fn alter_table(schema: &Schema, steps: &[Step], widen: &[Widen]) -> Option<String> {
    let mut parts = Vec::new();
    for &step in steps {
        match step {
            Step::CreateTable => return None,
            Step::AddColumn(i) => {
                parts.push(format!("ADD COLUMN {}", column(schema, i)));
                parts.extend(check(schema, i).map(|c| format!("ADD {c}")));
                if let Some(fk) = foreign_key_clause(schema, i) {
                    parts.push(format!("ADD {}", reference_index(schema, i)));
                    parts.push(format!("ADD {fk}"));
                }
            }
            Step::CreateUniqueIndex(rule) => {
                parts.extend(
                    live_columns(schema, rule)
                        .into_iter()
                        .map(|c| format!("ADD COLUMN {c}")),
                );
                parts.push(format!("ADD {}", unique_index(schema, rule)));
            }
        }
    }
    let mut rebuilt = HashSet::new();
    for &Widen(i) in widen {
        parts.push(format!("MODIFY COLUMN {}", column(schema, i)));
        let name = schema.fields[i].name;
        for (rule, unique) in schema.unique.iter().enumerate() {
            // A rule whose index is being made in this statement has its columns already.
            let new = steps.contains(&Step::CreateUniqueIndex(rule));
            if new || !unique.fields.contains(&name) || !rebuilt.insert(rule) {
                continue;
            }
            // The index is made again: a wider key may need to become a hash index.
            parts.push(format!("DROP INDEX {}", quoted(unique.index)));
            parts.extend(
                live_columns(schema, rule)
                    .into_iter()
                    .map(|c| format!("MODIFY COLUMN {c}")),
            );
            parts.push(format!("ADD {}", unique_index(schema, rule)));
        }
    }
    (!parts.is_empty())
        .then(|| format!("ALTER TABLE {} {}", quoted(schema.table), parts.join(", ")))
}

/// `ALTER TABLE` adding the foreign keys of the reference fields at `fields`, in one statement.
fn add_foreign_keys(schema: &Schema, fields: &[usize]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|&i| foreign_key_clause(schema, i))
        .map(|fk| format!("ADD {fk}"))
        .collect();
    format!("ALTER TABLE {} {}", quoted(schema.table), parts.join(", "))
}

/// Makes the search document of every row of `entry`'s table again, in batches in id order:
/// one read and one `UPDATE … JOIN` per batch. Idempotent: a process that dies half-way runs it
/// again from the start at the next connect.
async fn refold(conn: &mut MySqlConnection, catalog: &Catalog, entry: &Entry) -> Result<()> {
    let db = |e| map_error(e, catalog);
    let schema = entry.schema;
    let fields: Vec<String> = entry
        .search_fields
        .iter()
        .map(|&i| quoted(schema.fields[i].name))
        .collect();
    let table = quoted(schema.table);
    let read = format!(
        "SELECT `id`, {} FROM {table} WHERE `id` > ? ORDER BY `id` LIMIT ?",
        fields.join(", ")
    );
    let mut after = Uuid::nil();
    loop {
        let rows = sqlx::query(AssertSqlSafe(read.clone()))
            .bind(after)
            .bind(REFOLD_BATCH)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get(0).map_err(db)?;
        let mut update: QueryBuilder<MySql> =
            QueryBuilder::new(format!("UPDATE {table} AS t JOIN ("));
        for (n, row) in rows.iter().enumerate() {
            let mut values = vec![Value::Null; schema.fields.len()];
            for (column, &field) in entry.search_fields.iter().enumerate() {
                if let Some(text) = row.try_get::<Option<String>, _>(column + 1).map_err(db)? {
                    values[field] = Value::Text(text);
                }
            }
            let id: Uuid = row.try_get(0).map_err(db)?;
            update.push(if n == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            update.push_bind(id);
            update.push(if n == 0 { " AS `id`, " } else { ", " });
            update.push_bind(search_document(entry, &values));
            if n == 0 {
                update.push(" AS `document`");
            }
        }
        update.push(") AS d ON t.`id` = d.`id` SET t.`search_text` = d.`document`");
        update.build().execute(&mut *conn).await.map_err(db)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockroom_core::schema::{Reference, Search, TextRule, Unique};
    use stockroom_core::Entity as _;

    static BINS: Schema = Schema {
        name: "bin",
        table: "bins",
        fields: &[
            Field::new("code", FieldType::Text(TextRule::Line { max_len: 10 })),
            Field::new("state", FieldType::Enum(&["open", "o'clock"]))
                .with_default(DefaultValue::Text("open")),
            Field::new("slots", FieldType::Int { min: 0, max: 99 }),
            Field::new(
                "weight",
                FieldType::Int {
                    min: 1,
                    max: i64::MAX,
                },
            )
            .nullable(),
            Field::new(
                "product_id",
                FieldType::Ref(Reference {
                    target: stockroom_core::Product::schema,
                    on_delete: OnDelete::SetNull,
                }),
            )
            .nullable(),
            Field::new("note", FieldType::Text(TextRule::Text)).nullable(),
            Field::new("sealed", FieldType::Bool).with_default(DefaultValue::Bool(false)),
        ],
        unique: &[Unique {
            name: "bin_code",
            fields: &["code"],
            index: "bins_code_live",
        }],
        search: Some(Search { fields: &["code"] }),
        ddl: Ddl::Stockroom,
    };

    #[test]
    fn a_table_is_written_from_its_declaration() {
        let (sql, later) = create_table(&BINS, |_| true);
        assert_eq!(
            sql,
            "CREATE TABLE `bins` (`id` BINARY(16) NOT NULL, `code` VARCHAR(10) NOT NULL, \
             `state` VARCHAR(255) NOT NULL DEFAULT 'open', `slots` BIGINT NOT NULL, \
             `weight` BIGINT NULL, `product_id` BINARY(16) NULL, `note` TEXT NULL, \
             `sealed` BOOLEAN NOT NULL DEFAULT FALSE, \
             `created_at` DATETIME(6) NOT NULL, `updated_at` DATETIME(6) NOT NULL, \
             `deleted_at` DATETIME(6) NULL, `version` BIGINT NOT NULL DEFAULT 1, \
             `search_text` MEDIUMTEXT NOT NULL, \
             `_live_bins_code_live_0` VARCHAR(10) AS (IF(`deleted_at` IS NULL, `code`, NULL)) VIRTUAL, \
             PRIMARY KEY (`id`), UNIQUE INDEX `bins_code_live` (`_live_bins_code_live_0`), \
             INDEX `bins_order` (`created_at`, `id`), \
             INDEX `bins_product_id_ref` (`product_id`, `created_at`, `id`), \
             CONSTRAINT `bins_state_check` CHECK (`state` IN ('open', 'o''clock')), \
             CONSTRAINT `bins_slots_check` CHECK (`slots` >= 0 AND `slots` <= 99), \
             CONSTRAINT `bins_weight_check` CHECK (`weight` >= 1), \
             CONSTRAINT `bins_product_id_fk` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) \
             ON DELETE SET NULL) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT 'stockroom entity bin'"
        );
        assert!(later.is_empty());
    }

    #[test]
    fn a_foreign_key_to_a_table_not_made_yet_comes_after() {
        let (sql, later) = create_table(&BINS, |target| target == "bins");
        assert!(!sql.contains("FOREIGN KEY"), "{sql}");
        assert_eq!(later, [4]);
        assert_eq!(
            add_foreign_keys(&BINS, &later),
            "ALTER TABLE `bins` ADD CONSTRAINT `bins_product_id_fk` FOREIGN KEY (`product_id`) \
             REFERENCES `products` (`id`) ON DELETE SET NULL"
        );
    }

    #[test]
    fn fields_and_rules_are_added_in_one_statement() {
        assert_eq!(
            alter_table(
                &BINS,
                &[Step::AddColumn(4), Step::AddColumn(2), Step::CreateUniqueIndex(0)],
                &[]
            )
            .unwrap(),
            "ALTER TABLE `bins` ADD COLUMN `product_id` BINARY(16) NULL, \
             ADD INDEX `bins_product_id_ref` (`product_id`, `created_at`, `id`), \
             ADD CONSTRAINT `bins_product_id_fk` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) \
             ON DELETE SET NULL, \
             ADD COLUMN `slots` BIGINT NOT NULL, \
             ADD CONSTRAINT `bins_slots_check` CHECK (`slots` >= 0 AND `slots` <= 99), \
             ADD COLUMN `_live_bins_code_live_0` VARCHAR(10) AS (IF(`deleted_at` IS NULL, `code`, NULL)) VIRTUAL, \
             ADD UNIQUE INDEX `bins_code_live` (`_live_bins_code_live_0`)"
        );
        assert_eq!(alter_table(&BINS, &[], &[]), None);
        assert_eq!(alter_table(&BINS, &[Step::CreateTable], &[]), None);
    }

    #[test]
    fn a_widened_field_takes_its_rules_index_along() {
        assert_eq!(
            alter_table(&BINS, &[], &[Widen(0)]).unwrap(),
            "ALTER TABLE `bins` MODIFY COLUMN `code` VARCHAR(10) NOT NULL, \
             DROP INDEX `bins_code_live`, \
             MODIFY COLUMN `_live_bins_code_live_0` VARCHAR(10) AS (IF(`deleted_at` IS NULL, `code`, NULL)) VIRTUAL, \
             ADD UNIQUE INDEX `bins_code_live` (`_live_bins_code_live_0`)"
        );
        assert_eq!(
            alter_table(&BINS, &[], &[Widen(5)]).unwrap(),
            "ALTER TABLE `bins` MODIFY COLUMN `note` TEXT NULL"
        );
    }

    #[test]
    fn texts_are_varchar_up_to_768_characters_then_the_smallest_text_that_holds_them() {
        assert_eq!(text_type(1), "VARCHAR(1)");
        assert_eq!(text_type(768), "VARCHAR(768)");
        assert_eq!(text_type(769), "TEXT");
        assert_eq!(text_type(16_383), "TEXT");
        assert_eq!(text_type(16_384), "MEDIUMTEXT");
        assert_eq!(text_type(5_000_000), "LONGTEXT");
        let long = Field::new("x", FieldType::Enum(&["a", "b"]));
        assert_eq!(column_type(&long), "VARCHAR(255)");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote(r"a\b'c"), r"'a\\b''c'");
        assert_eq!(literal(DefaultValue::Int(-3)), "-3");
        assert_eq!(literal(DefaultValue::Bool(true)), "TRUE");
    }

    #[test]
    fn long_names_are_cut_the_same_way_every_time_and_stay_apart() {
        let a = identifier(format!("{}_a", "x".repeat(70)));
        let b = identifier(format!("{}_b", "x".repeat(70)));
        assert!(a.len() <= 64 && b.len() <= 64 && a != b);
        assert_eq!(a, identifier(format!("{}_a", "x".repeat(70))));
        assert_eq!(identifier("short".to_owned()), "short");
        assert!(live_column(&"i".repeat(63), 0).len() <= 64);
    }

    #[test]
    fn live_columns_are_read_by_their_types() {
        assert_eq!(storage_of("varchar", "varchar(10)"), Some(Storage::Text));
        assert_eq!(storage_of("mediumtext", "mediumtext"), Some(Storage::Text));
        assert_eq!(storage_of("tinyint", "tinyint(1)"), Some(Storage::Bool));
        assert_eq!(storage_of("tinyint", "tinyint(4)"), None);
        assert_eq!(storage_of("bigint", "bigint(20)"), Some(Storage::Int));
        assert_eq!(
            storage_of("datetime", "datetime(6)"),
            Some(Storage::Timestamp)
        );
        assert_eq!(storage_of("datetime", "datetime"), None);
        assert_eq!(storage_of("timestamp", "timestamp(6)"), None);
        assert_eq!(storage_of("binary", "binary(16)"), Some(Storage::Uuid));
        assert_eq!(storage_of("char", "char(36)"), Some(Storage::Text));
        assert_eq!(text_capacity("varchar", Some(10)), Some(10));
        assert_eq!(text_capacity("text", Some(65_535)), Some(16_383));
        assert_eq!(text_capacity("bigint", None), None);
    }

    #[test]
    fn a_narrow_text_column_is_widened_on_a_managed_table_and_refused_on_the_applications() {
        let live = Live {
            text_chars: vec![
                ("code".into(), 5),
                ("state".into(), 255),
                ("note".into(), 16_383),
            ],
            column_types: vec![("code".into(), "varchar(5)".into())],
            ..Live::default()
        };
        assert_eq!(narrow_columns(&BINS, &live).unwrap(), [Widen(0)]);
        static OWNED: Schema = Schema {
            ddl: Ddl::Application,
            ..BINS_SHAPE
        };
        let err = narrow_columns(&OWNED, &live).unwrap_err();
        let Error::Schema {
            problem: SchemaProblem::Mismatch { differences, .. },
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].column, "code");
        assert_eq!(differences[0].found.as_deref(), Some("varchar(5) not null"));
    }

    const BINS_SHAPE: Schema = Schema {
        name: "bin",
        table: "bins",
        fields: BINS.fields,
        unique: BINS.unique,
        search: None,
        ddl: Ddl::Stockroom,
    };

    #[test]
    fn stockroom_s_own_entities_are_planned_as_managed_tables() {
        let catalog = Catalog::new(&[]).unwrap();
        for entry in catalog.entries() {
            let copy = managed(entry.schema);
            assert_eq!(copy.ddl, Ddl::Stockroom);
            assert_eq!(copy.table, entry.schema.table);
            assert!(std::ptr::eq(copy, managed(entry.schema)), "made once");
            assert_eq!(
                tables::plan(copy, None, false).unwrap(),
                [Step::CreateTable]
            );
        }
        assert!(std::ptr::eq(managed(&BINS), &BINS));
    }

    #[test]
    fn referred_tables_are_made_first() {
        let catalog = Catalog::new(&[]).unwrap();
        let work: Vec<Work<'_>> = catalog
            .entries()
            .iter()
            .map(|entry| Work {
                entry,
                schema: managed(entry.schema),
                steps: vec![Step::CreateTable],
                widen: Vec::new(),
                missing_foreign_keys: Vec::new(),
                refold: false,
                definition: String::new(),
                record: true,
            })
            .collect();
        let order: Vec<&str> = creation_order(&work, &HashSet::new())
            .into_iter()
            .map(|i| work[i].schema.table)
            .collect();
        let at = |t: &str| order.iter().position(|&o| o == t).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at("categories") < at("products") && at("users") < at("products"));
        assert!(at("products") < at("reviews") && at("users") < at("reviews"));
    }

    /// Two new entities that refer to each other: one is made first, without its foreign key
    /// to the other, which is added once both exist.
    #[test]
    fn a_cycle_of_references_is_made_with_the_first_foreign_key_after() {
        fn aisle() -> &'static Schema {
            &AISLES
        }
        fn rack() -> &'static Schema {
            &RACKS
        }
        static AISLES: Schema = Schema {
            name: "aisle",
            table: "aisles",
            fields: &[Field::new(
                "first_rack",
                FieldType::Ref(Reference {
                    target: rack,
                    on_delete: OnDelete::SetNull,
                }),
            )
            .nullable()],
            unique: &[],
            search: None,
            ddl: Ddl::Stockroom,
        };
        static RACKS: Schema = Schema {
            name: "rack",
            table: "racks",
            fields: &[Field::new(
                "aisle_id",
                FieldType::Ref(Reference {
                    target: aisle,
                    on_delete: OnDelete::Cascade,
                }),
            )],
            unique: &[],
            search: None,
            ddl: Ddl::Stockroom,
        };
        let catalog = Catalog::new(&[&AISLES, &RACKS]).unwrap();
        let work: Vec<Work<'_>> = catalog.entries()[4..]
            .iter()
            .map(|entry| Work {
                entry,
                schema: entry.schema,
                steps: vec![Step::CreateTable],
                widen: Vec::new(),
                missing_foreign_keys: Vec::new(),
                refold: false,
                definition: String::new(),
                record: true,
            })
            .collect();
        let existing: HashSet<&'static str> = ["products", "categories", "users", "reviews"]
            .into_iter()
            .collect();
        let order = creation_order(&work, &existing);
        assert_eq!(order, [0, 1], "the first of the cycle comes first");
        let (aisles, later) = create_table(&AISLES, |t| t == "aisles" || existing.contains(t));
        assert!(!aisles.contains("FOREIGN KEY"), "{aisles}");
        assert_eq!(later, [0]);
        let (racks, later) = create_table(&RACKS, |t| {
            t == "racks" || t == "aisles" || existing.contains(t)
        });
        assert!(
            racks.contains(
                "CONSTRAINT `racks_aisle_id_fk` FOREIGN KEY (`aisle_id`) REFERENCES `aisles` (`id`) \
                 ON DELETE CASCADE"
            ),
            "{racks}"
        );
        assert!(later.is_empty());
    }

    #[test]
    fn a_recorded_definition_without_a_defaulted_search_field_asks_for_a_refold() {
        static SEARCHED: Schema = Schema {
            name: "shelf",
            table: "shelves",
            fields: &[
                Field::new("label", FieldType::Text(TextRule::Line { max_len: 20 })),
                Field::new("zone", FieldType::Text(TextRule::Line { max_len: 20 }))
                    .with_default(DefaultValue::Text("main")),
            ],
            unique: &[],
            search: Some(Search {
                fields: &["label", "zone"],
            }),
            ddl: Ddl::Stockroom,
        };
        static SHELF: Schema = Schema {
            fields: &[Field::new(
                "label",
                FieldType::Text(TextRule::Line { max_len: 20 }),
            )],
            search: Some(Search { fields: &["label"] }),
            ..SEARCHED_SHAPE
        };
        const SEARCHED_SHAPE: Schema = Schema {
            name: "shelf",
            table: "shelves",
            fields: &[],
            unique: &[],
            search: None,
            ddl: Ddl::Stockroom,
        };
        let catalog = Catalog::new(&[&SEARCHED]).unwrap();
        let entry = catalog.entry(&SEARCHED).unwrap();
        assert!(lacks_a_defaulted_search_field(
            entry,
            &tables::definition(&SHELF)
        ));
        assert!(!lacks_a_defaulted_search_field(
            entry,
            &tables::definition(&SEARCHED)
        ));
    }
}

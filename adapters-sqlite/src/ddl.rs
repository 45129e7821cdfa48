//! The tables of the entities an application declares: read as they are, brought to their
//! declarations, and recorded in `stockroom_entities`.
//!
//! When the store connects (after Stockroom's own migrations), each registered entity's table
//! is read from SQLite's catalog (`pragma_table_info`, `pragma_index_list`) and handed, with
//! whether `stockroom_entities` records it, to the core's [`tables::plan`], which decides; this
//! module writes the SQL of its steps and applies them:
//!
//! - **No table**: `CREATE TABLE … STRICT` from the declaration (the id a 16-byte BLOB primary
//!   key, each field's column type, `NOT NULL`, `CHECK`s for integer ranges, enum values,
//!   booleans and ids, `REFERENCES target (id) ON DELETE …`), its partial unique indexes over
//!   live rows named by the rules, `{table}_order` on `(created_at, id)` and one
//!   `{table}_{field}` index per reference field on `(field, created_at, id)`; for a searchable
//!   entity, its substring index `{table}_search` and triggers (`search_index.rs`), also added
//!   to a table Stockroom made before it had one.
//! - **A new nullable or defaulted field**: `ALTER TABLE … ADD COLUMN` (with its `DEFAULT`), and
//!   its index when it is a reference. **A new unique rule**: its partial unique index.
//! - **Anything else that differs** (a field retyped, renamed, dropped, or added as required
//!   without a default), or a table Stockroom did not make: the typed
//!   [`Error::Schema`](stockroom_core::Error::Schema) the plan returns, nothing changed, and the
//!   store does not connect.
//!
//! An entity whose table the application owns ([`Ddl::Application`]) is only checked, its
//! foreign keys too (each reference's `ON DELETE` is what a delete for good relies on); no row
//! is recorded for it. Stockroom's own tables ([`Ddl::BuiltIn`]) are its migrations' (`schema.rs`);
//! a test holds them to their declarations.
//!
//! Each entity whose table needs a change is changed in a `BEGIN IMMEDIATE` transaction of its
//! own, read and planned again under the write lock (another process may have made it
//! meanwhile), with its row in `stockroom_entities`. A table already as declared and recorded
//! is only read.

use std::fmt::Write as _;

use rusqlite::{params, Connection, TransactionBehavior};
use stockroom_core::schema::tables::{self, Column, LiveColumn, LiveTable, Step};
use stockroom_core::schema::{
    search_document, Catalog, Ddl, DefaultValue, Entry, Field, FieldType, OnDelete, Schema,
    Storage, Value,
};
use stockroom_core::{ColumnDifference, Error, Result, SchemaProblem};

use crate::error::map;
use crate::schema::sha256_hex;
use crate::search_index;
use crate::sql::codec::{Param, RowReader};

/// Brings the table of every entity of `catalog` that is not Stockroom's own to its
/// declaration, or checks it (see the module docs).
pub(crate) fn sync(conn: &mut Connection, catalog: &Catalog) -> Result<()> {
    for entry in catalog.entries() {
        if entry.schema.ddl == Ddl::BuiltIn {
            // Migration 4 made the products' index; one dropped since is made again.
            if lacks_search_index(conn, entry.schema)? {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(map)?;
                if lacks_search_index(&tx, entry.schema)? {
                    search_index::create(&tx, entry.schema.table).map_err(map)?;
                }
                tx.commit().map_err(map)?;
            }
            continue;
        }
        if is_settled(conn, entry.schema)? && !lacks_search_index(conn, entry.schema)? {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map)?;
        bring_to_declaration(&tx, entry)?;
        if lacks_search_index(&tx, entry.schema)? {
            search_index::create(&tx, entry.schema.table).map_err(map)?;
        }
        tx.commit().map_err(map)?;
    }
    Ok(())
}

/// Whether `schema`'s table is Stockroom's to index for search (its own, or one it made) and
/// has no complete index (an application's own table is left as it is: its searches read
/// every row).
fn lacks_search_index(conn: &Connection, schema: &'static Schema) -> Result<bool> {
    if schema.ddl == Ddl::Application || !search_index::searchable(schema) {
        return Ok(false);
    }
    Ok(!search_index::exists(conn, schema.table).map_err(map)?)
}

/// Whether `schema`'s table needs nothing: as declared, and (for a table Stockroom manages)
/// recorded with the declaration's definition. A table that cannot be brought to it is the
/// plan's error.
fn is_settled(conn: &Connection, schema: &'static Schema) -> Result<bool> {
    let recorded = recorded_definition(conn, schema).map_err(map)?;
    let live = live_table(conn, schema, recorded.as_deref()).map_err(map)?;
    let steps = tables::plan(schema, live.as_ref(), recorded.is_some())?;
    if schema.ddl == Ddl::Application {
        check_foreign_keys(conn, schema)?;
    }
    let recorded_as_declared =
        schema.ddl != Ddl::Stockroom || recorded.as_deref() == Some(&tables::definition(schema));
    Ok(steps.is_empty() && recorded_as_declared)
}

/// Refuses a table of the application's whose foreign keys do not apply each reference's
/// declared [`OnDelete`]: a delete for good relies on them (SQLite's `ON DELETE` runs it), so
/// without them it would leave rows naming a row that no longer exists, which the other
/// backends never do.
fn check_foreign_keys(conn: &Connection, schema: &'static Schema) -> Result<()> {
    let mut stmt = conn
        .prepare(
            "SELECT \"from\", \"table\", coalesce(\"to\", 'id'), on_delete \
             FROM pragma_foreign_key_list(?1)",
        )
        .map_err(map)?;
    let keys = stmt
        .query_map([schema.table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(map)?;
    let mut differences = Vec::new();
    for (_, field, reference) in schema.references() {
        let target = reference.target().table;
        let action = on_delete_sql(reference.on_delete);
        let key = keys.iter().find(|(from, ..)| from == field.name);
        let matches = key.is_some_and(|(_, table, to, on_delete)| {
            table.eq_ignore_ascii_case(target) && to == "id" && on_delete == action
        });
        if !matches {
            differences.push(ColumnDifference {
                column: field.name.to_owned(),
                declared: Some(format!("references {target} (id) on delete {action}")),
                found: Some(key.map_or(
                    "no foreign key".to_owned(),
                    |(_, table, to, on_delete)| {
                        format!("references {table} ({to}) on delete {on_delete}")
                    },
                )),
            });
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::Schema {
        entity: schema.kind(),
        problem: SchemaProblem::Mismatch {
            table: schema.table,
            differences,
        },
    })
}

/// The SQL of an [`OnDelete`], as `pragma_foreign_key_list` reports it too.
fn on_delete_sql(on_delete: OnDelete) -> &'static str {
    match on_delete {
        OnDelete::SetNull => "SET NULL",
        OnDelete::Cascade => "CASCADE",
    }
}

/// Reads, plans and applies, under the caller's write lock, and records the table.
fn bring_to_declaration(conn: &Connection, entry: &Entry) -> Result<()> {
    let schema = entry.schema;
    let recorded = recorded_definition(conn, schema).map_err(map)?;
    let live = live_table(conn, schema, recorded.as_deref()).map_err(map)?;
    let steps = tables::plan(schema, live.as_ref(), recorded.is_some())?;
    let mut stale_documents = false;
    for step in &steps {
        conn.execute_batch(&step_sql(schema, *step)).map_err(map)?;
        if let Step::AddColumn(field) = *step {
            // Rows written before the field existed hold its default, which their search
            // documents do not have yet.
            stale_documents |=
                entry.search_fields.contains(&field) && schema.fields[field].default.is_some();
        }
        tracing::info!(
            entity = schema.name,
            table = schema.table,
            step = ?step,
            "sqlite: brought an entity's table to its declaration"
        );
    }
    if stale_documents {
        refresh_search_documents(conn, entry).map_err(map)?;
    }
    if schema.ddl == Ddl::Stockroom {
        record(conn, schema).map_err(map)?;
    }
    Ok(())
}

/// The definition `stockroom_entities` records for `schema`'s table, if any.
fn recorded_definition(conn: &Connection, schema: &Schema) -> rusqlite::Result<Option<String>> {
    if schema.ddl != Ddl::Stockroom {
        return Ok(None);
    }
    let mut stmt =
        conn.prepare_cached("SELECT definition FROM stockroom_entities WHERE table_name = ?1")?;
    let mut rows = stmt.query([schema.table])?;
    rows.next()?.map(|r| r.get(0)).transpose()
}

/// Records (or records again) `schema`'s table with its definition.
fn record(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    let definition = tables::definition(schema);
    conn.execute(
        "INSERT INTO stockroom_entities (table_name, entity, definition, checksum, applied_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (table_name) DO UPDATE SET \
         entity = excluded.entity, definition = excluded.definition, \
         checksum = excluded.checksum, applied_at = excluded.applied_at",
        params![
            schema.table,
            schema.name,
            definition,
            sha256_hex(&definition),
            chrono::Utc::now().timestamp_micros()
        ],
    )
    .map(drop)
}

// ---- The live table ------------------------------------------------------------------------

/// `schema`'s table as SQLite has it, `None` when there is none.
///
/// SQLite's column types are fewer than the storage classes: a STRICT table stores integers,
/// booleans and timestamps alike as `INTEGER`. Such a column is taken for what `recorded` (the
/// definition Stockroom made the table to) says it is, so that a field retyped from one to
/// another is a difference; in a table Stockroom did not record, for what the declaration says
/// it is, since the type cannot tell.
pub(crate) fn live_table(
    conn: &Connection,
    schema: &Schema,
    recorded: Option<&str>,
) -> rusqlite::Result<Option<LiveTable>> {
    let declared = tables::columns(schema);
    let mut stmt = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk \
         FROM pragma_table_info(?1) ORDER BY cid",
    )?;
    let columns = stmt
        .query_map([schema.table], |r| {
            let name: String = r.get(0)?;
            let sql_type: String = r.get(1)?;
            let not_null: bool = r.get(2)?;
            let has_default: bool = r.get(3)?;
            // Stockroom never writes a NULL id: a primary key column counts as required.
            let primary_key = r.get::<_, i64>(4)? > 0;
            let declared = declared.iter().find(|c| c.name == name).map(|c| c.storage);
            let recorded = recorded.and_then(|d| recorded_storage(d, &name));
            let candidates = candidates(&sql_type);
            let storage = recorded
                .filter(|r| candidates.contains(r))
                .or_else(|| declared.filter(|d| candidates.contains(d)))
                .or_else(|| candidates.first().copied());
            let type_name = match recorded {
                Some(r) if Some(r) == storage => storage_word(r),
                _ => sql_type,
            };
            Ok(LiveColumn {
                name,
                storage,
                nullable: !not_null && !primary_key,
                has_default,
                type_name,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if columns.is_empty() {
        return Ok(None);
    }
    let mut stmt = conn.prepare("SELECT name FROM pragma_index_list(?1)")?;
    let indexes = stmt
        .query_map([schema.table], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(LiveTable { columns, indexes }))
}

/// The storage classes a column of SQLite type `sql_type` can hold, the likeliest first.
fn candidates(sql_type: &str) -> &'static [Storage] {
    let upper = sql_type.to_ascii_uppercase();
    match upper.as_str() {
        "BOOLEAN" | "BOOL" => &[Storage::Bool],
        "TIMESTAMP" | "DATETIME" => &[Storage::Timestamp],
        "BLOB" | "UUID" => &[Storage::Uuid],
        t if t.contains("INT") => &[Storage::Int, Storage::Bool, Storage::Timestamp],
        t if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") => &[Storage::Text],
        _ => &[],
    }
}

/// The word [`tables::describe`] names `storage` with (`integer`, `boolean`, …).
fn storage_word(storage: Storage) -> String {
    let described = tables::describe(storage, false);
    described
        .strip_suffix(" not null")
        .unwrap_or(&described)
        .to_owned()
}

/// Every storage class.
const STORAGES: [Storage; 5] = [
    Storage::Text,
    Storage::Int,
    Storage::Bool,
    Storage::Timestamp,
    Storage::Uuid,
];

/// How the recorded `definition` (one `name type null|not null` line per column, see
/// [`tables::definition`]) says column `column` is stored.
fn recorded_storage(definition: &str, column: &str) -> Option<Storage> {
    let line = definition
        .lines()
        .find(|l| l.split(' ').next() == Some(column) && !l.starts_with("unique "))?;
    let word = line.split(' ').nth(1)?;
    STORAGES.into_iter().find(|s| storage_word(*s) == word)
}

// ---- The DDL -------------------------------------------------------------------------------

/// The SQL of one step of the plan for `schema`'s table.
pub(crate) fn step_sql(schema: &Schema, step: Step) -> String {
    match step {
        Step::CreateTable => create_table(schema),
        Step::AddColumn(field) => {
            let declared = &schema.fields[field];
            let column = tables::columns(schema)
                .into_iter()
                .find(|c| c.field == Some(field))
                .expect("a declared field has a column");
            let mut sql = format!(
                "ALTER TABLE {} ADD COLUMN {};",
                schema.table,
                column_sql(schema, &column)
            );
            if let FieldType::Ref(_) = declared.ty {
                sql.push_str(&reference_index(schema, declared));
            }
            sql
        }
        Step::CreateUniqueIndex(rule) => unique_index(schema, rule),
    }
}

/// The table, its unique indexes, its list-order index and an index per reference field.
fn create_table(schema: &Schema) -> String {
    let table = schema.table;
    let columns: Vec<String> = tables::columns(schema)
        .iter()
        .map(|c| column_sql(schema, c))
        .collect();
    let mut sql = format!(
        "CREATE TABLE {table} (\n    {}\n) STRICT;\n",
        columns.join(",\n    ")
    );
    for rule in 0..schema.unique.len() {
        sql.push_str(&unique_index(schema, rule));
    }
    let _ = writeln!(
        sql,
        "CREATE INDEX {table}_order ON {table} (created_at, id);"
    );
    for (_, field, _) in schema.references() {
        sql.push_str(&reference_index(schema, field));
    }
    sql
}

/// The partial unique index of rule `rule`, over live rows.
fn unique_index(schema: &Schema, rule: usize) -> String {
    let rule = &schema.unique[rule];
    format!(
        "CREATE UNIQUE INDEX {} ON {} ({}) WHERE deleted_at IS NULL;\n",
        rule.index,
        schema.table,
        rule.fields.join(", ")
    )
}

/// The index of a reference field, in list order: a filter on it and the delete of the row it
/// names (the foreign key's action) both find the rows through it.
fn reference_index(schema: &Schema, field: &Field) -> String {
    format!(
        "CREATE INDEX {table}_{name} ON {table} ({name}, created_at, id);\n",
        table = schema.table,
        name = field.name
    )
}

/// One column's definition: its name, type, `NOT NULL`, and for a declared field its
/// `DEFAULT`, `CHECK` and `REFERENCES`.
fn column_sql(schema: &Schema, column: &Column) -> String {
    let name = column.name;
    if name == "id" {
        return "id BLOB NOT NULL PRIMARY KEY CHECK (length(id) = 16)".to_owned();
    }
    let sql_type = match column.storage {
        Storage::Text => "TEXT",
        Storage::Uuid => "BLOB",
        Storage::Int | Storage::Bool | Storage::Timestamp => "INTEGER",
    };
    let mut sql = format!("{name} {sql_type}");
    if !column.nullable {
        sql.push_str(" NOT NULL");
    }
    let Some(field) = column.field.map(|i| &schema.fields[i]) else {
        return sql;
    };
    match field.default {
        Some(DefaultValue::Bool(b)) => sql.push_str(if b { " DEFAULT 1" } else { " DEFAULT 0" }),
        Some(DefaultValue::Int(i)) => {
            let _ = write!(sql, " DEFAULT {i}");
        }
        Some(DefaultValue::Text(t)) => {
            let _ = write!(sql, " DEFAULT {}", quote(t));
        }
        None => {}
    }
    match field.ty {
        FieldType::Int { min, max } => match (min, max) {
            (i64::MIN, i64::MAX) => {}
            (i64::MIN, max) => {
                let _ = write!(sql, " CHECK ({name} <= {max})");
            }
            (min, i64::MAX) => {
                let _ = write!(sql, " CHECK ({name} >= {min})");
            }
            (min, max) => {
                let _ = write!(sql, " CHECK ({name} BETWEEN {min} AND {max})");
            }
        },
        FieldType::Enum(values) => {
            let values: Vec<String> = values.iter().map(|v| quote(v)).collect();
            let _ = write!(sql, " CHECK ({name} IN ({}))", values.join(", "));
        }
        FieldType::Bool => {
            let _ = write!(sql, " CHECK ({name} IN (0, 1))");
        }
        FieldType::Uuid => {
            let _ = write!(sql, " CHECK (length({name}) = 16)");
        }
        FieldType::Ref(reference) => {
            let action = on_delete_sql(reference.on_delete);
            let _ = write!(
                sql,
                " CHECK (length({name}) = 16) REFERENCES {} (id) ON DELETE {action}",
                reference.target().table
            );
        }
        FieldType::Text(_) | FieldType::Timestamp => {}
    }
    sql
}

/// `text` as an SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Makes every row's search document again (after a search field was added with a default).
fn refresh_search_documents(conn: &Connection, entry: &Entry) -> rusqlite::Result<()> {
    let schema = entry.schema;
    let fields: Vec<&str> = entry
        .search_fields
        .iter()
        .map(|&f| schema.fields[f].name)
        .collect();
    let mut read = conn.prepare(&format!(
        "SELECT id, {} FROM {}",
        fields.join(", "),
        schema.table
    ))?;
    let mut write = conn.prepare(&format!(
        "UPDATE {} SET search_text = ?1 WHERE id = ?2",
        schema.table
    ))?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let mut row = RowReader::new(row, 0);
        let id = row.uuid()?;
        let mut values = vec![Value::Null; schema.fields.len()];
        for &field in &entry.search_fields {
            values[field] = row.value(Storage::Text.into())?;
        }
        let document = search_document(entry, &values);
        write.execute([Param::Str(&document), Param::Id(id)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stockroom's own tables are made by its migrations, not from the declarations: each one,
    /// on a migrated database, is what its entity declares (its columns, their storage and
    /// nullability, its unique indexes), so the plan has no step for it. A migration or a
    /// declaration that changes one without the other fails here, naming the entity and the
    /// difference.
    #[test]
    fn each_built_in_table_is_what_its_declaration_says() {
        let mut conn = Connection::open_in_memory().unwrap();
        let catalog = Catalog::new(&[]).unwrap();
        crate::schema::migrate(&mut conn, &catalog).unwrap();
        let built_in: Vec<_> = catalog
            .entries()
            .iter()
            .filter(|e| e.schema.ddl == Ddl::BuiltIn)
            .collect();
        assert_eq!(built_in.len(), catalog.entries().len());
        for entry in built_in {
            let schema = entry.schema;
            let live = live_table(&conn, schema, None).unwrap();
            assert!(live.is_some(), "{}: no table {}", schema.name, schema.table);
            assert_eq!(
                tables::plan(schema, live.as_ref(), true).map_err(|e| e.to_string()),
                Ok(vec![]),
                "{}",
                schema.name
            );
        }
    }

    #[test]
    fn sqlite_types_map_to_the_storage_they_can_hold() {
        assert_eq!(candidates("TEXT"), [Storage::Text]);
        assert_eq!(candidates("varchar(20)"), [Storage::Text]);
        assert_eq!(candidates("BLOB"), [Storage::Uuid]);
        assert_eq!(
            candidates("INTEGER"),
            [Storage::Int, Storage::Bool, Storage::Timestamp]
        );
        assert_eq!(candidates("boolean"), [Storage::Bool]);
        assert_eq!(candidates("REAL"), []);
        let definition = "id uuid not null\nflag boolean null\nunique x_flag (flag) live\n";
        assert_eq!(recorded_storage(definition, "flag"), Some(Storage::Bool));
        assert_eq!(recorded_storage(definition, "id"), Some(Storage::Uuid));
        assert_eq!(recorded_storage(definition, "unique"), None);
        assert_eq!(recorded_storage(definition, "other"), None);
    }
}

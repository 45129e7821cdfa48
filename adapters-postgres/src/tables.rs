//! The tables of the application's entities: read from the database's catalog
//! ([`live_table`]), compared with their declarations by the core's
//! [`plan`](stockroom_core::schema::tables::plan), and created or extended with DDL written
//! from the declarations, recorded in `stockroom_entities` (see [`bring_up_to_date`]).
//!
//! Stockroom's own tables (products, categories, users, reviews, the ledger) are made by the
//! embedded migrations; their declarations are only held against them, by a test
//! (`the_built_in_tables_are_their_declarations`).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use stockroom_core::schema::tables::{self, LiveColumn, LiveTable, Step};
use stockroom_core::schema::{
    search_document, Catalog, Ddl, DefaultValue, Entry, FieldType, OnDelete, Schema, Storage,
};
use stockroom_core::Result;
use uuid::Uuid;

use crate::codec::{decode_value, sql_type};
use crate::error::{check_constraint, map_error};

/// The columns of `$1` in the schema unqualified names resolve in (`current_schema()`): name,
/// type, whether it may be NULL, whether an insert may leave it out.
const COLUMNS: &str = "SELECT column_name::text, data_type::text, is_nullable = 'YES', \
     (column_default IS NOT NULL OR is_identity = 'YES' OR is_generated = 'ALWAYS') \
     FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position";

/// The names of the indexes of `$1`.
const INDEXES: &str = "SELECT indexname::text FROM pg_indexes \
     WHERE schemaname = current_schema() AND tablename = $1";

/// The definition Stockroom recorded for the table `$1`.
const RECORDED: &str = "SELECT definition FROM stockroom_entities WHERE table_name = $1";

/// Records (or refreshes) the definition of the table `$1` of entity `$2`.
const RECORD: &str = "INSERT INTO stockroom_entities \
     (table_name, entity, definition, checksum, applied_at) VALUES ($1, $2, $3, $4, now()) \
     ON CONFLICT (table_name) DO UPDATE SET entity = excluded.entity, \
     definition = excluded.definition, checksum = excluded.checksum, \
     applied_at = excluded.applied_at";

/// Whether the trigram operator classes are there (the products migration creates `pg_trgm`
/// where the engine has it).
const HAS_TRIGRAMS: &str = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')";

/// Rows read and written per statement when the search documents of a table are made again.
const REFOLD_BATCH: i64 = 1_000;

/// The storage class of a column of PostgreSQL type `data_type` (as `information_schema`
/// names it), if a declared field can be stored in it.
fn storage_of(data_type: &str) -> Option<Storage> {
    Some(match data_type {
        "text" | "character varying" => Storage::Text,
        "bigint" | "integer" | "smallint" => Storage::Int,
        "boolean" => Storage::Bool,
        "timestamp with time zone" => Storage::Timestamp,
        "uuid" => Storage::Uuid,
        _ => return None,
    })
}

/// The table `table` as the database has it, `None` when there is none.
pub(crate) async fn live_table(conn: &mut PgConnection, table: &str) -> Result<Option<LiveTable>> {
    let columns: Vec<(String, String, bool, bool)> = sqlx::query_as(COLUMNS)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_error)?;
    if columns.is_empty() {
        return Ok(None);
    }
    let indexes: Vec<String> = sqlx::query_scalar(INDEXES)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_error)?;
    let columns = columns
        .into_iter()
        .map(|(name, type_name, nullable, has_default)| LiveColumn {
            name,
            storage: storage_of(&type_name),
            nullable,
            has_default,
            type_name,
        })
        .collect();
    Ok(Some(LiveTable { columns, indexes }))
}

/// Brings the tables of the application's entities of `catalog` to their declarations, on
/// `conn`, whose caller holds Stockroom's migration lock:
///
/// - each table is read from the database and compared with its declaration
///   ([`tables::plan`]), every one before anything changes, so that a declaration that no
///   longer matches its table (a field renamed, retyped or dropped, a new required field
///   without a default; a table Stockroom did not make; for a table the application owns, any
///   difference) fails with [`Error::Schema`] and changes nothing at all;
/// - then, in one transaction, the tables Stockroom owns are created (with their unique
///   indexes among live rows, the `(created_at, id)` index, one index per reference field, the
///   trigram index of a search document where the engine has `pg_trgm`, and the foreign keys
///   after every table exists, so that new entities may refer to each other), extended (a new
///   nullable or defaulted field, a new unique rule's index), and recorded in
///   `stockroom_entities`. A table the application owns is only checked.
pub(crate) async fn bring_up_to_date(conn: &mut PgConnection, catalog: &Catalog) -> Result<()> {
    let mut work = Vec::new();
    for entry in catalog.entries() {
        let schema = entry.schema;
        if schema.ddl == Ddl::BuiltIn {
            continue;
        }
        let live = live_table(conn, schema.table).await?;
        let recorded: Option<String> = sqlx::query_scalar(RECORDED)
            .bind(schema.table)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_error)?;
        let steps = tables::plan(schema, live.as_ref(), recorded.is_some())?;
        let definition = tables::definition(schema);
        let owned = schema.ddl == Ddl::Stockroom;
        if !steps.is_empty() || (owned && recorded.as_deref() != Some(definition.as_str())) {
            work.push((entry, steps, definition));
        }
    }
    if work.is_empty() {
        return Ok(());
    }
    let trigrams: bool = sqlx::query_scalar(HAS_TRIGRAMS)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_error)?;
    let mut ddl = Vec::new();
    let mut foreign_keys = Vec::new();
    for (entry, steps, _) in &work {
        for &step in steps {
            match step {
                Step::CreateTable => {
                    ddl.extend(create_table(entry.schema, trigrams));
                    foreign_keys.extend(add_foreign_keys(entry.schema));
                }
                Step::AddColumn(field) => ddl.extend(add_column(entry.schema, field)),
                Step::CreateUniqueIndex(rule) => ddl.push(unique_index(entry.schema, rule)),
            }
        }
    }
    ddl.extend(foreign_keys);
    let mut tx = conn.begin().await.map_err(map_error)?;
    if !ddl.is_empty() {
        // One round trip: the statements are ours, written from checked declarations.
        sqlx::raw_sql(AssertSqlSafe(ddl.join(";\n")))
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
    }
    for (entry, steps, definition) in &work {
        let schema = entry.schema;
        if steps.iter().any(|&step| changes_documents(entry, step)) {
            refold(&mut tx, entry).await?;
        }
        if schema.ddl == Ddl::Stockroom {
            sqlx::query(RECORD)
                .bind(schema.table)
                .bind(schema.name)
                .bind(definition)
                .bind(checksum(definition))
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        if !steps.is_empty() {
            tracing::info!(
                target: "stockroom::sql",
                entity = schema.name,
                table = schema.table,
                steps = ?steps,
                "brought the entity's table to its declaration"
            );
        }
    }
    tx.commit().await.map_err(map_error)
}

/// The SHA-256 of `definition`, in lower-case hex.
fn checksum(definition: &str) -> String {
    Sha256::digest(definition.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name` as an identifier PostgreSQL keeps whole: at most 63 bytes, or else cut and ended with
/// a hash of the whole (PostgreSQL would cut it silently, and two long names could meet).
fn identifier(name: String) -> String {
    if name.len() <= 63 {
        return name;
    }
    let hash = checksum(&name);
    format!("{}_{}", &name[..54], &hash[..8])
}

/// `default` as an SQL literal.
fn literal(default: DefaultValue) -> String {
    match default {
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Text(t) => quote(t),
    }
}

/// `text` as an SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The definition of the declared field at `index` as a column: its type, `NOT NULL`, its
/// default, and the CHECK of an integer's range or an enum's values.
fn column(schema: &Schema, index: usize) -> String {
    let field = &schema.fields[index];
    let name = field.name;
    let mut sql = format!("{name} {}", sql_type(field.ty.storage()));
    if !field.nullable {
        sql.push_str(" NOT NULL");
    }
    if let Some(default) = field.default {
        let _ = write!(sql, " DEFAULT {}", literal(default));
    }
    let check = match field.ty {
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
    };
    if let Some(check) = check {
        let constraint = identifier(check_constraint(schema.table, name));
        let _ = write!(sql, " CONSTRAINT {constraint} CHECK ({check})");
    }
    sql
}

/// `CREATE TABLE` with every column (the foreign keys come after, see [`add_foreign_keys`]),
/// then its indexes.
fn create_table(schema: &Schema, trigrams: bool) -> Vec<String> {
    let table = schema.table;
    let mut columns = vec!["id uuid PRIMARY KEY".to_owned()];
    columns.extend((0..schema.fields.len()).map(|i| column(schema, i)));
    columns.extend([
        "created_at timestamptz NOT NULL".to_owned(),
        "updated_at timestamptz NOT NULL".to_owned(),
        "deleted_at timestamptz".to_owned(),
        "version bigint NOT NULL DEFAULT 1".to_owned(),
    ]);
    if schema.search.is_some() {
        columns.push("search_text text NOT NULL".to_owned());
    }
    let mut ddl = vec![format!("CREATE TABLE {table} ({})", columns.join(", "))];
    ddl.extend((0..schema.unique.len()).map(|rule| unique_index(schema, rule)));
    // The order of every list and the keyset position; the order spelled out (see
    // `crate::engine`).
    ddl.push(format!(
        "CREATE INDEX {} ON {table} (created_at ASC, id ASC)",
        identifier(format!("{table}_order"))
    ));
    ddl.extend(
        schema
            .references()
            .map(|(i, _, _)| reference_index(schema, i)),
    );
    if schema.search.is_some() && trigrams {
        ddl.push(format!(
            "CREATE INDEX {} ON {table} USING gin (search_text gin_trgm_ops)",
            identifier(format!("{table}_search"))
        ));
    }
    ddl
}

/// The index of the reference field at `index`: the rows that refer to a row, in list order
/// (lists filtered by it, and what a delete for good of the referred row does).
fn reference_index(schema: &Schema, index: usize) -> String {
    let (table, field) = (schema.table, schema.fields[index].name);
    format!(
        "CREATE INDEX {} ON {table} ({field}, created_at ASC, id ASC)",
        identifier(format!("{table}_{field}_ref"))
    )
}

/// The partial unique index of the rule at `rule`: unique among live rows.
fn unique_index(schema: &Schema, rule: usize) -> String {
    let unique = &schema.unique[rule];
    format!(
        "CREATE UNIQUE INDEX {} ON {} ({}) WHERE deleted_at IS NULL",
        unique.index,
        schema.table,
        unique.fields.join(", ")
    )
}

/// `REFERENCES … ON DELETE …` of the reference field at `index`, as a clause.
fn references(schema: &Schema, index: usize) -> Option<String> {
    let FieldType::Ref(reference) = schema.fields[index].ty else {
        return None;
    };
    let action = match reference.on_delete {
        OnDelete::SetNull => "SET NULL",
        OnDelete::Cascade => "CASCADE",
    };
    Some(format!(
        "REFERENCES {} (id) ON DELETE {action}",
        reference.target().table
    ))
}

/// The name of the foreign key of the field `field` of `table`.
fn foreign_key(table: &str, field: &str) -> String {
    identifier(format!("{table}_{field}_fk"))
}

/// A foreign key per reference field of a new table.
fn add_foreign_keys(schema: &Schema) -> Vec<String> {
    schema
        .references()
        .filter_map(|(i, field, _)| {
            let clause = references(schema, i)?;
            Some(format!(
                "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) {clause}",
                schema.table,
                foreign_key(schema.table, field.name),
                field.name
            ))
        })
        .collect()
}

/// `ALTER TABLE … ADD COLUMN` of the declared field at `index` (nullable, or with its default,
/// which the rows there get), with its foreign key and index if it is a reference.
fn add_column(schema: &Schema, index: usize) -> Vec<String> {
    let mut column = column(schema, index);
    if let Some(clause) = references(schema, index) {
        let name = foreign_key(schema.table, schema.fields[index].name);
        let _ = write!(column, " CONSTRAINT {name} {clause}");
    }
    let mut ddl = vec![format!("ALTER TABLE {} ADD COLUMN {column}", schema.table)];
    if matches!(schema.fields[index].ty, FieldType::Ref(_)) {
        ddl.push(reference_index(schema, index));
    }
    ddl
}

/// Whether `step` changes the search documents of the rows there: a field of the document
/// added with a default, which every row now holds.
fn changes_documents(entry: &Entry, step: Step) -> bool {
    matches!(step, Step::AddColumn(i)
        if entry.search_fields.contains(&i) && entry.schema.fields[i].default.is_some())
}

/// Makes the search document of every row of `entry`'s table again, in batches in id order.
async fn refold(conn: &mut PgConnection, entry: &Entry) -> Result<()> {
    let schema = entry.schema;
    let fields: Vec<&str> = entry
        .search_fields
        .iter()
        .map(|&i| schema.fields[i].name)
        .collect();
    let read = format!(
        "SELECT id, {} FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
        fields.join(", "),
        schema.table
    );
    let write = format!(
        "UPDATE {table} SET search_text = d.document \
         FROM UNNEST($1::uuid[], $2::text[]) AS d(id, document) WHERE {table}.id = d.id",
        table = schema.table
    );
    let mut after = Uuid::nil();
    loop {
        let rows = sqlx::query(AssertSqlSafe(read.clone()))
            .bind(after)
            .bind(REFOLD_BATCH)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_error)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = crate::codec::at(last, 0)?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut documents = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = vec![stockroom_core::schema::Value::Null; schema.fields.len()];
            for (column, &field) in entry.search_fields.iter().enumerate() {
                values[field] = decode_value(row, column + 1, &schema.fields[field])?;
            }
            ids.push(crate::codec::at::<Uuid>(row, 0)?);
            documents.push(search_document(entry, &values));
        }
        sqlx::query(AssertSqlSafe(write.clone()))
            .bind(ids)
            .bind(documents)
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockroom_core::schema::{Field, Reference, Search, TextRule, Unique};
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
        assert_eq!(
            create_table(&BINS, true),
            [
                "CREATE TABLE bins (id uuid PRIMARY KEY, code text NOT NULL, \
                 state text NOT NULL DEFAULT 'open' CONSTRAINT bins_state_check \
                 CHECK (state IN ('open', 'o''clock')), \
                 slots bigint NOT NULL CONSTRAINT bins_slots_check CHECK (slots >= 0 AND slots <= 99), \
                 weight bigint CONSTRAINT bins_weight_check CHECK (weight >= 1), \
                 product_id uuid, created_at timestamptz NOT NULL, \
                 updated_at timestamptz NOT NULL, deleted_at timestamptz, \
                 version bigint NOT NULL DEFAULT 1, search_text text NOT NULL)",
                "CREATE UNIQUE INDEX bins_code_live ON bins (code) WHERE deleted_at IS NULL",
                "CREATE INDEX bins_order ON bins (created_at ASC, id ASC)",
                "CREATE INDEX bins_product_id_ref ON bins (product_id, created_at ASC, id ASC)",
                "CREATE INDEX bins_search ON bins USING gin (search_text gin_trgm_ops)",
            ]
        );
        assert_eq!(
            add_foreign_keys(&BINS),
            [
                "ALTER TABLE bins ADD CONSTRAINT bins_product_id_fk FOREIGN KEY (product_id) \
              REFERENCES products (id) ON DELETE SET NULL"
            ]
        );
        assert_eq!(
            add_column(&BINS, 4),
            [
                "ALTER TABLE bins ADD COLUMN product_id uuid CONSTRAINT bins_product_id_fk \
                 REFERENCES products (id) ON DELETE SET NULL",
                "CREATE INDEX bins_product_id_ref ON bins (product_id, created_at ASC, id ASC)",
            ]
        );
        assert!(!create_table(&BINS, false)
            .iter()
            .any(|s| s.contains("gin_trgm_ops")));
    }

    #[test]
    fn long_names_are_cut_the_same_way_every_time_and_stay_apart() {
        let a = identifier(format!("{}_a", "x".repeat(70)));
        let b = identifier(format!("{}_b", "x".repeat(70)));
        assert!(a.len() <= 63 && b.len() <= 63 && a != b);
        assert_eq!(a, identifier(format!("{}_a", "x".repeat(70))));
        assert_eq!(identifier("short".to_owned()), "short");
    }

    /// Each of Stockroom's declarations is the table its migrations made: the core's plan for
    /// the live table, as this module reads it, has no step (and no mismatch), so a
    /// declaration and a migration cannot drift apart unnoticed. The ledger, which is no
    /// declared entity, reads the columns its table has.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn the_built_in_tables_are_their_declarations() {
        let Some(db) = crate::testing::TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        let catalog = Catalog::new(&[]).unwrap();
        for entry in catalog.entries() {
            let schema = entry.schema;
            let live = live_table(&mut conn, schema.table)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no table {}", schema.table));
            let steps = tables::plan(schema, Some(&live), true)
                .unwrap_or_else(|e| panic!("{}: {e}", schema.name));
            assert!(
                steps.is_empty(),
                "{}: the migrated table needs {steps:?}",
                schema.name
            );
        }
        let ledger = live_table(&mut conn, crate::movements::TABLE)
            .await
            .unwrap()
            .expect("the ledger's table");
        let live: Vec<&str> = ledger.columns.iter().map(|c| c.name.as_str()).collect();
        let read: Vec<&str> = crate::movements::COLUMNS.split(", ").collect();
        assert_eq!(live, read, "the ledger's columns");
        conn.close().await.unwrap();
        stockroom_core::Store::close(&store).await;
        db.drop_now().await;
    }
}

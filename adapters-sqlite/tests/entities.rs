//! An application's own entities on SQLite: the table Stockroom makes from a declaration, and
//! what it does when the declaration changes or the table is not its own.

use std::marker::PhantomData;

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use stockroom_core::schema::{
    Condition, Ddl, DefaultValue, Field, FieldType, OnDelete, Record, Reference, Schema, TextRule,
    Unique, Value,
};
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Constraint, Entity, Error, FilterInput, NewInput, NewProduct, PatchInput, Product, ProductId,
    Result, SchemaProblem, Store,
};
use stockroom_sqlite::{SqliteOptions, SqliteStore};
use uuid::Uuid;

#[allow(dead_code)]
mod support;

use support::TempDb;

stockroom_core::entity_id!(
    /// The id of a warehouse.
    pub WarehouseId
);

/// The fields a warehouse has in every version of its declaration below.
macro_rules! warehouse_fields {
    ($($more:expr),*) => {
        &[
            Field::new("name", FieldType::Text(TextRule::Name)),
            Field::new("slug", FieldType::Text(TextRule::Slug)),
            Field::new("code", FieldType::Text(TextRule::Line { max_len: 12 })),
            Field::new(
                "product_id",
                FieldType::Ref(Reference {
                    target: Product::schema,
                    on_delete: OnDelete::SetNull,
                }),
            )
            .nullable(),
            Field::new("status", FieldType::Enum(&["open", "it's closed"])),
            Field::new("capacity", FieldType::Int { min: 0, max: 1_000 }),
            Field::new("heated", FieldType::Bool),
            Field::new("opened_at", FieldType::Timestamp).nullable(),
            $($more),*
        ]
    };
}

const WAREHOUSE_UNIQUE: &[Unique] = &[
    Unique {
        name: "warehouse_slug",
        fields: &["slug"],
        index: "warehouses_slug_live",
    },
    Unique {
        name: "warehouse_code",
        fields: &["code"],
        index: "warehouses_code_live",
    },
];

/// A warehouse, declared as an application declares its entity (by hand here).
static WAREHOUSE: Schema = Schema {
    name: "warehouse",
    table: "warehouses",
    fields: warehouse_fields!(),
    unique: WAREHOUSE_UNIQUE,
    search: None,
    ddl: Ddl::Stockroom,
};

/// A warehouse of the application's: every field of [`WAREHOUSE`], typed.
#[derive(Debug, Clone, PartialEq)]
struct Warehouse {
    id: WarehouseId,
    name: String,
    slug: String,
    code: String,
    product_id: Option<ProductId>,
    status: String,
    capacity: i64,
    heated: bool,
    opened_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
    deleted_at: Option<Timestamp>,
    version: i64,
}

impl Entity for Warehouse {
    type Id = WarehouseId;
    type New = Values;
    type Patch = Sets;
    type Filter = NoFilter;

    fn schema() -> &'static Schema {
        &WAREHOUSE
    }
    fn id(&self) -> WarehouseId {
        self.id
    }
    fn created_at(&self) -> Timestamp {
        self.created_at
    }
    fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
    fn deleted_at(&self) -> Option<Timestamp> {
        self.deleted_at
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn from_record(record: Record) -> Result<Self> {
        let (created_at, updated_at, deleted_at, version) =
            stockroom_core::__private::meta(&record);
        let mut values = record.values;
        let mut fields = stockroom_core::__private::Fields::new(&WAREHOUSE, &mut values);
        Ok(Warehouse {
            id: WarehouseId::from_uuid(record.id),
            name: fields.take()?,
            slug: fields.take()?,
            code: fields.take()?,
            product_id: fields.take()?,
            status: fields.take()?,
            capacity: fields.take()?,
            heated: fields.take()?,
            opened_at: fields.take()?,
            created_at,
            updated_at,
            deleted_at,
            version,
        })
    }
    fn to_record(&self) -> Record {
        use stockroom_core::schema::FieldValue;
        Record {
            id: self.id.as_uuid(),
            values: vec![
                self.name.to_value(),
                self.slug.to_value(),
                self.code.to_value(),
                self.product_id.to_value(),
                self.status.to_value(),
                self.capacity.to_value(),
                self.heated.to_value(),
                self.opened_at.to_value(),
            ]
            .into(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
            version: self.version,
        }
    }
}

/// The values of a new row, as the test gives them (each valid for its field: the stores
/// write them as they are).
#[derive(Debug, Clone, PartialEq)]
struct Values(Vec<Value>);

impl NewInput for Values {
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(self.0)
    }
    fn from_values(values: Vec<Value>) -> Result<Self> {
        Ok(Values(values))
    }
}

/// The fields an update sets, by position.
#[derive(Debug, Clone, PartialEq)]
struct Sets(Vec<(usize, Value)>);

impl PatchInput for Sets {
    fn sets(&self) -> Result<Vec<(usize, Value)>> {
        Ok(self.0.clone())
    }
    fn from_sets(sets: Vec<(usize, Value)>) -> Result<Self> {
        Ok(Sets(sets))
    }
}

/// Every row.
#[derive(Debug, Clone, Default, PartialEq)]
struct NoFilter;

impl FilterInput for NoFilter {
    fn conditions(&self) -> Result<Vec<Condition>> {
        Ok(Vec::new())
    }
    fn from_conditions(_: Vec<Condition>) -> Result<Self> {
        Ok(NoFilter)
    }
}

/// A warehouse's values, `n` making its slug and code unique.
fn new_warehouse(n: usize, product: Option<ProductId>) -> Values {
    Values(vec![
        Value::Text(format!("Warehouse {n}")),
        Value::Text(format!("warehouse-{n}")),
        Value::Text(format!("WH-{n}")),
        product.map_or(Value::Null, |p| Value::Uuid(p.as_uuid())),
        Value::Text("it's closed".into()),
        Value::Int(250),
        Value::Bool(true),
        Value::Null,
    ])
}

// ---- Other versions of the declaration, as records ------------------------------------------

/// A declaration of the warehouses' table (another version of it).
trait Declared: std::fmt::Debug + Clone + PartialEq + Send + Sync + 'static {
    fn schema() -> &'static Schema;
}

/// A row of a [`Declared`] table, as the record it is: the entity of the declarations below.
#[derive(Debug, Clone, PartialEq)]
struct Row<D>(Record, PhantomData<D>);

impl<D: Declared> Entity for Row<D> {
    type Id = Uuid;
    type New = Values;
    type Patch = Sets;
    type Filter = NoFilter;

    fn schema() -> &'static Schema {
        D::schema()
    }
    fn id(&self) -> Uuid {
        self.0.id
    }
    fn created_at(&self) -> Timestamp {
        self.0.created_at
    }
    fn updated_at(&self) -> Timestamp {
        self.0.updated_at
    }
    fn deleted_at(&self) -> Option<Timestamp> {
        self.0.deleted_at
    }
    fn version(&self) -> i64 {
        self.0.version
    }
    fn from_record(record: Record) -> Result<Self> {
        Ok(Row(record, PhantomData))
    }
    fn to_record(&self) -> Record {
        self.0.clone()
    }
}

/// A version of the warehouses' declaration, as an entity.
macro_rules! declared {
    ($name:ident, $schema:expr) => {
        #[derive(Debug, Clone, PartialEq)]
        struct $name;
        impl Declared for $name {
            fn schema() -> &'static Schema {
                static SCHEMA: Schema = $schema;
                &SCHEMA
            }
        }
    };
}

// The declaration grown by a nullable field and a defaulted one.
declared!(
    Grown,
    Schema {
        name: "warehouse",
        table: "warehouses",
        fields: warehouse_fields!(
            Field::new("note", FieldType::Text(TextRule::Text)).nullable(),
            Field::new("floors", FieldType::Int { min: 1, max: 99 })
                .with_default(DefaultValue::Int(1))
        ),
        unique: WAREHOUSE_UNIQUE,
        search: None,
        ddl: Ddl::Stockroom,
    }
);

// The declaration grown by a required field without a default: existing rows have no value.
declared!(
    GrownRequired,
    Schema {
        name: "warehouse",
        table: "warehouses",
        fields: warehouse_fields!(Field::new("manager", FieldType::Text(TextRule::Name))),
        unique: WAREHOUSE_UNIQUE,
        search: None,
        ddl: Ddl::Stockroom,
    }
);

/// The fields of [`WAREHOUSE`] with `capacity` a boolean.
const RETYPED_FIELDS: &[Field] = &[
    Field::new("name", FieldType::Text(TextRule::Name)),
    Field::new("slug", FieldType::Text(TextRule::Slug)),
    Field::new("code", FieldType::Text(TextRule::Line { max_len: 12 })),
    Field::new(
        "product_id",
        FieldType::Ref(Reference {
            target: Product::schema,
            on_delete: OnDelete::SetNull,
        }),
    )
    .nullable(),
    Field::new("status", FieldType::Enum(&["open", "it's closed"])),
    Field::new("capacity", FieldType::Bool),
    Field::new("heated", FieldType::Bool),
    Field::new("opened_at", FieldType::Timestamp).nullable(),
];

// `capacity` retyped from an integer to a boolean (both INTEGER columns in SQLite).
declared!(
    Retyped,
    Schema {
        name: "warehouse",
        table: "warehouses",
        fields: RETYPED_FIELDS,
        unique: WAREHOUSE_UNIQUE,
        search: None,
        ddl: Ddl::Stockroom,
    }
);

// The warehouses' table as the application's own.
declared!(
    Owned,
    Schema {
        name: "warehouse",
        table: "warehouses",
        fields: warehouse_fields!(),
        unique: WAREHOUSE_UNIQUE,
        search: None,
        ddl: Ddl::Application,
    }
);

// ---- Helpers --------------------------------------------------------------------------------

async fn connect(options: SqliteOptions) -> Result<SqliteStore> {
    SqliteStore::connect_with(options).await
}

fn open(db: &TempDb) -> Connection {
    Connection::open(db.path()).unwrap()
}

/// The SQL SQLite keeps for the table or index `name`.
fn schema_sql(conn: &Connection, name: &str) -> Option<String> {
    conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .ok()
}

/// The columns of `table`, in order.
fn column_names(conn: &Connection, table: &str) -> Vec<String> {
    conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The definition and checksum `stockroom_entities` records for `table`.
fn recorded(conn: &Connection, table: &str) -> Option<(String, String, String)> {
    conn.query_row(
        "SELECT entity, definition, checksum FROM stockroom_entities WHERE table_name = ?1",
        [table],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

fn mismatched_columns(error: &Error) -> Option<Vec<String>> {
    match error {
        Error::Schema {
            entity,
            problem: SchemaProblem::Mismatch { table, differences },
        } if entity.as_str() == "warehouse" && *table == "warehouses" => {
            Some(differences.iter().map(|d| d.column.clone()).collect())
        }
        _ => None,
    }
}

// ---- The tests ------------------------------------------------------------------------------

/// The table, its indexes and its record are made from the declaration when the store connects,
/// and its constraints hold for SQL that bypasses Stockroom too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_entitys_table_is_made_from_its_declaration() {
    let db = TempDb::new("stockroom-entities");
    let options = SqliteOptions::file(db.path()).with_entity::<Warehouse>();
    let store = connect(options).await.unwrap();

    let conn = open(&db);
    assert_eq!(
        schema_sql(&conn, "warehouses").as_deref(),
        Some(
            "CREATE TABLE warehouses (\n    \
             id BLOB NOT NULL PRIMARY KEY CHECK (length(id) = 16),\n    \
             name TEXT NOT NULL,\n    \
             slug TEXT NOT NULL,\n    \
             code TEXT NOT NULL,\n    \
             product_id BLOB CHECK (length(product_id) = 16) \
             REFERENCES products (id) ON DELETE SET NULL,\n    \
             status TEXT NOT NULL CHECK (status IN ('open', 'it''s closed')),\n    \
             capacity INTEGER NOT NULL CHECK (capacity BETWEEN 0 AND 1000),\n    \
             heated INTEGER NOT NULL CHECK (heated IN (0, 1)),\n    \
             opened_at INTEGER,\n    \
             created_at INTEGER NOT NULL,\n    \
             updated_at INTEGER NOT NULL,\n    \
             deleted_at INTEGER,\n    \
             version INTEGER NOT NULL\n) STRICT"
        )
    );
    for (index, sql) in [
        (
            "warehouses_slug_live",
            "CREATE UNIQUE INDEX warehouses_slug_live ON warehouses (slug) WHERE deleted_at IS NULL",
        ),
        (
            "warehouses_code_live",
            "CREATE UNIQUE INDEX warehouses_code_live ON warehouses (code) WHERE deleted_at IS NULL",
        ),
        (
            "warehouses_order",
            "CREATE INDEX warehouses_order ON warehouses (created_at, id)",
        ),
        (
            "warehouses_product_id",
            "CREATE INDEX warehouses_product_id ON warehouses (product_id, created_at, id)",
        ),
    ] {
        assert_eq!(schema_sql(&conn, index).as_deref(), Some(sql));
    }
    let (entity, definition, checksum) = recorded(&conn, "warehouses").unwrap();
    assert_eq!(entity, "warehouse");
    assert_eq!(
        definition,
        stockroom_core::schema::tables::definition(&WAREHOUSE)
    );
    let sha: String = Sha256::digest(definition.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(checksum, sha);
    // The CHECKs hold against SQL of the application's own.
    let bad_status = conn.execute(
        "INSERT INTO warehouses VALUES (randomblob(16), 'W', 'w', 'W', NULL, 'gone', 1, 0, \
         NULL, 0, 0, NULL, 1)",
        [],
    );
    assert!(bad_status.is_err(), "an undeclared status was stored");
    drop(conn);

    // The rows go through the generic ports, their references and rules included.
    let mut uow = store.begin().await.unwrap();
    let mug = uow
        .products()
        .create(NewProduct::new("Mug", "mug", "MUG-1").unwrap())
        .await
        .unwrap();
    let stored = uow
        .repository::<Warehouse>()
        .create(new_warehouse(1, Some(mug.id)))
        .await
        .unwrap();
    assert_eq!(stored.product_id, Some(mug.id));
    assert!(stored.heated);
    let mut same_code = new_warehouse(2, None);
    same_code.0[2] = Value::Text("WH-1".into());
    let taken = uow.repository::<Warehouse>().create(same_code).await;
    assert!(
        matches!(taken, Err(Error::Conflict { constraint }) if constraint == Constraint::of::<Warehouse>("warehouse_code").unwrap()),
        "{taken:?}"
    );
    // A delete for good of the product forgets it (ON DELETE SET NULL).
    uow.products().hard_delete(mug.id).await.unwrap();
    let read = uow.repository::<Warehouse>().get(stored.id).await.unwrap();
    assert_eq!(read.map(|w| w.product_id), Some(None));
    uow.commit().await.unwrap();
    store.close().await;

    // Connecting again finds the table as declared, and changes nothing.
    let store = connect(SqliteOptions::file(db.path()).with_entity::<Warehouse>())
        .await
        .unwrap();
    let mut read = store.read().await.unwrap();
    let found = read.reader::<Warehouse>().get(stored.id).await.unwrap();
    assert_eq!(found.map(|w| w.code), Some("WH-1".to_owned()));
    drop(read);
    store.close().await;
}

/// A field added to the declaration, nullable or with a default, is added to the table when the
/// store connects; the rows written before have it `NULL` or at its default, and the record
/// follows the declaration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_nullable_or_defaulted_field_is_added_to_the_table() {
    let db = TempDb::new("stockroom-entities");
    let store = connect(SqliteOptions::file(db.path()).with_entity::<Warehouse>())
        .await
        .unwrap();
    let mut uow = store.begin().await.unwrap();
    let old = uow
        .repository::<Warehouse>()
        .create(new_warehouse(1, None))
        .await
        .unwrap();
    uow.commit().await.unwrap();
    store.close().await;

    let store = connect(SqliteOptions::file(db.path()).with_entity::<Row<Grown>>())
        .await
        .unwrap();
    let conn = open(&db);
    // SQLite adds a column after the last one; reads name their columns.
    assert_eq!(
        column_names(&conn, "warehouses"),
        [
            "id",
            "name",
            "slug",
            "code",
            "product_id",
            "status",
            "capacity",
            "heated",
            "opened_at",
            "created_at",
            "updated_at",
            "deleted_at",
            "version",
            "note",
            "floors"
        ]
    );
    let (_, definition, _) = recorded(&conn, "warehouses").unwrap();
    assert_eq!(
        definition,
        stockroom_core::schema::tables::definition(Grown::schema())
    );
    drop(conn);
    let mut read = store.read().await.unwrap();
    let row = read
        .reader::<Row<Grown>>()
        .get(old.id.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.0.values[8..], [Value::Null, Value::Int(1)]);
    drop(read);
    let mut uow = store.begin().await.unwrap();
    let mut new = new_warehouse(2, None);
    new.0
        .extend([Value::Text("Second floor".into()), Value::Int(2)]);
    let added = uow.repository::<Row<Grown>>().create(new).await.unwrap();
    assert_eq!(added.0.values[9], Value::Int(2));
    uow.commit().await.unwrap();
    store.close().await;
}

/// A declaration whose field was retyped, or that adds a required field rows cannot have, no
/// longer matches the table: connecting fails with the typed error naming the column, and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retyped_or_required_new_field_is_a_mismatch_naming_the_column() {
    let db = TempDb::new("stockroom-entities");
    connect(SqliteOptions::file(db.path()).with_entity::<Warehouse>())
        .await
        .unwrap()
        .close()
        .await;
    let before = schema_sql(&open(&db), "warehouses");

    let retyped = connect(SqliteOptions::file(db.path()).with_entity::<Row<Retyped>>())
        .await
        .unwrap_err();
    assert_eq!(
        mismatched_columns(&retyped),
        Some(vec!["capacity".to_owned()]),
        "{retyped}"
    );
    assert!(
        retyped
            .to_string()
            .contains("capacity is declared boolean not null but is integer not null"),
        "{retyped}"
    );
    let required = connect(SqliteOptions::file(db.path()).with_entity::<Row<GrownRequired>>())
        .await
        .unwrap_err();
    assert_eq!(
        mismatched_columns(&required),
        Some(vec!["manager".to_owned()]),
        "{required}"
    );

    let conn = open(&db);
    assert_eq!(schema_sql(&conn, "warehouses"), before, "the table changed");
    let (_, definition, _) = recorded(&conn, "warehouses").unwrap();
    assert_eq!(
        definition,
        stockroom_core::schema::tables::definition(&WAREHOUSE)
    );
}

/// A table of the entity's name that Stockroom did not make is not taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_stockroom_did_not_make_is_not_taken_over() {
    let db = TempDb::new("stockroom-entities");
    open(&db)
        .execute_batch("CREATE TABLE warehouses (id BLOB PRIMARY KEY, label TEXT)")
        .unwrap();
    let error = connect(SqliteOptions::file(db.path()).with_entity::<Warehouse>())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Schema {
                entity,
                problem: SchemaProblem::TableTaken { table: "warehouses" },
            } if entity.as_str() == "warehouse"
        ),
        "{error:?}"
    );
    let conn = open(&db);
    assert_eq!(column_names(&conn, "warehouses"), ["id", "label"]);
    assert_eq!(recorded(&conn, "warehouses"), None);
}

/// A table the application owns is checked, never made or changed: missing or different, the
/// store does not connect; as declared, it serves the entity, with no record of Stockroom's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_owned_table_is_only_checked() {
    let db = TempDb::new("stockroom-entities");
    let owned = || SqliteOptions::file(db.path()).with_entity::<Row<Owned>>();
    let missing = connect(owned()).await.unwrap_err();
    assert_eq!(
        mismatched_columns(&missing),
        Some(vec!["warehouses".to_owned()]),
        "{missing}"
    );
    assert_eq!(schema_sql(&open(&db), "warehouses"), None);

    // The application's own DDL, with a column of its own that Stockroom's inserts may leave
    // out, but without the code's unique index.
    let table = "CREATE TABLE warehouses (
        id BLOB NOT NULL PRIMARY KEY, name TEXT NOT NULL, slug TEXT NOT NULL,
        code TEXT NOT NULL, product_id BLOB REFERENCES products (id) ON DELETE SET NULL,
        status TEXT NOT NULL, capacity INTEGER NOT NULL, heated BOOLEAN NOT NULL,
        opened_at TIMESTAMP, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
        deleted_at INTEGER, version INTEGER NOT NULL, audit_note TEXT);
        CREATE UNIQUE INDEX warehouses_slug_live ON warehouses (slug) WHERE deleted_at IS NULL;";
    open(&db).execute_batch(table).unwrap();
    let no_index = connect(owned()).await.unwrap_err();
    assert_eq!(
        mismatched_columns(&no_index),
        Some(vec!["warehouses_code_live".to_owned()]),
        "{no_index}"
    );

    open(&db)
        .execute_batch(
            "CREATE UNIQUE INDEX warehouses_code_live ON warehouses (code) \
             WHERE deleted_at IS NULL",
        )
        .unwrap();
    let store = connect(owned()).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let row = uow
        .repository::<Row<Owned>>()
        .create(new_warehouse(1, None))
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let mut read = store.read().await.unwrap();
    assert_eq!(
        read.reader::<Row<Owned>>().get(row.0.id).await.unwrap(),
        Some(row)
    );
    drop(read);
    store.close().await;
    assert_eq!(recorded(&open(&db), "warehouses"), None);

    // A column the declaration types otherwise is a mismatch naming it.
    open(&db)
        .execute_batch(
            "ALTER TABLE warehouses DROP COLUMN opened_at; \
             ALTER TABLE warehouses ADD COLUMN opened_at TEXT",
        )
        .unwrap();
    let retyped = connect(owned()).await.unwrap_err();
    assert_eq!(
        mismatched_columns(&retyped),
        Some(vec!["opened_at".to_owned()]),
        "{retyped}"
    );
}

/// A table of the application's whose reference has no foreign key (or another `ON DELETE`)
/// would keep rows naming a row deleted for good: it is a mismatch naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_owned_table_needs_the_declared_foreign_keys() {
    let db = TempDb::new("stockroom-entities");
    let owned = || SqliteOptions::file(db.path()).with_entity::<Row<Owned>>();
    let table = |product_id: &str| {
        format!(
            "CREATE TABLE warehouses (
            id BLOB NOT NULL PRIMARY KEY, name TEXT NOT NULL, slug TEXT NOT NULL,
            code TEXT NOT NULL, {product_id}, status TEXT NOT NULL,
            capacity INTEGER NOT NULL, heated INTEGER NOT NULL, opened_at INTEGER,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, deleted_at INTEGER,
            version INTEGER NOT NULL);
            CREATE UNIQUE INDEX warehouses_slug_live ON warehouses (slug) WHERE deleted_at IS NULL;
            CREATE UNIQUE INDEX warehouses_code_live ON warehouses (code) WHERE deleted_at IS NULL;"
        )
    };
    for (column, found) in [
        ("product_id BLOB", "no foreign key"),
        (
            "product_id BLOB REFERENCES products (id) ON DELETE CASCADE",
            "references products (id) on delete CASCADE",
        ),
    ] {
        let conn = open(&db);
        conn.execute_batch("DROP TABLE IF EXISTS warehouses")
            .unwrap();
        conn.execute_batch(&table(column)).unwrap();
        drop(conn);
        let error = connect(owned()).await.unwrap_err();
        assert_eq!(
            mismatched_columns(&error),
            Some(vec!["product_id".to_owned()]),
            "{error}"
        );
        assert!(
            error.to_string().contains(&format!(
                "product_id is declared references products (id) on delete SET NULL but is {found}"
            )),
            "{error}"
        );
    }
    let conn = open(&db);
    conn.execute_batch("DROP TABLE warehouses").unwrap();
    conn.execute_batch(&table(
        "product_id BLOB REFERENCES products ON DELETE SET NULL",
    ))
    .unwrap();
    drop(conn);
    connect(owned()).await.unwrap().close().await;
}

/// Stores connecting at once to a file without the table make it once: each plans again under
/// the write lock, and finds it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_connecting_at_once_make_the_table_once() {
    let db = TempDb::new("stockroom-entities");
    let connects = (0..4).map(|_| {
        let options = SqliteOptions::file(db.path()).with_entity::<Warehouse>();
        tokio::spawn(connect(options))
    });
    let stores: Vec<SqliteStore> = all_connected(connects).await;
    for store in &stores {
        store.close().await;
    }
    let conn = open(&db);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'warehouses'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let records: i64 = conn
        .query_row("SELECT count(*) FROM stockroom_entities", [], |r| r.get(0))
        .unwrap();
    assert_eq!((tables, records), (1, 1));
}

/// Every store the tasks connected, in order.
async fn all_connected(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<Result<SqliteStore>>>,
) -> Vec<SqliteStore> {
    let mut stores = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        stores.push(task.await.unwrap().unwrap());
    }
    stores
}

stockroom_core::entity_id!(
    /// The id of a note.
    pub NoteId
);

/// A searchable entity of the application's, declared with the derive.
#[derive(Debug, Clone, PartialEq, stockroom_core::Entity)]
#[entity(table = "notes")]
pub struct Note {
    /// Its id.
    pub id: NoteId,
    /// Its title, searched.
    #[entity(name, search)]
    pub title: String,
    /// When the row was created.
    pub created_at: Timestamp,
    /// When the row last changed.
    pub updated_at: Timestamp,
    /// When the row was soft-deleted.
    pub deleted_at: Option<Timestamp>,
    /// The row's version.
    pub version: i64,
}

/// The titles a search of the notes finds, sorted.
async fn notes_found(store: &SqliteStore, query: &str) -> Vec<String> {
    let filter = NoteFilter {
        search: Some(stockroom_core::SearchText::new(query).unwrap()),
        ..NoteFilter::default()
    };
    let mut read = store.read().await.unwrap();
    let page = read
        .reader::<Note>()
        .search(&filter, stockroom_core::Page::new(100, 0).unwrap())
        .await
        .unwrap();
    let mut titles: Vec<String> = page.items.into_iter().map(|n| n.title).collect();
    titles.sort();
    titles
}

/// The table Stockroom makes for an application's searchable entity gets the substring index
/// (`notes_search`) that searches of three characters or more read; a table Stockroom made
/// before it had one (the index dropped here, its triggers left behind) gets it again at the
/// next connect, with the rows already there indexed, and new rows are indexed from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_searchable_table_gets_its_search_index() {
    let db = TempDb::new("stockroom-sqlite-notes");
    let options = || SqliteOptions::file(db.path()).with_entity::<Note>();
    let index_exists = |conn: &Connection| -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'notes_search')",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let store = connect(options()).await.unwrap();
    assert!(index_exists(&open(&db)), "made with the table");
    let create = |title: &'static str| {
        let store = store.clone();
        async move {
            let mut uow = store.begin().await.unwrap();
            uow.repository::<Note>()
                .create(NewNote {
                    title: title.into(),
                })
                .await
                .unwrap();
            uow.commit().await.unwrap();
        }
    };
    create("Blue mug order").await;
    create("Red plate order").await;
    assert_eq!(notes_found(&store, "mug ord").await, ["Blue mug order"]);
    store.close().await;

    open(&db).execute_batch("DROP TABLE notes_search").unwrap();
    assert!(!index_exists(&open(&db)), "dropped");
    let store = connect(options()).await.unwrap();
    assert!(index_exists(&open(&db)), "made again at connect");
    let create = |title: &'static str| {
        let store = store.clone();
        async move {
            let mut uow = store.begin().await.unwrap();
            uow.repository::<Note>()
                .create(NewNote {
                    title: title.into(),
                })
                .await
                .unwrap();
            uow.commit().await.unwrap();
        }
    };
    create("Green mug order").await;
    assert_eq!(
        notes_found(&store, "mug ord").await,
        ["Blue mug order", "Green mug order"],
        "the rows from before the index, and the new one"
    );
    assert_eq!(
        notes_found(&store, "te ").await,
        ["Red plate order"],
        "a short query"
    );
    store.close().await;
}

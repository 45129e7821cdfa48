//! The application's own entities on PostgreSQL: what only a real server shows. Their tables
//! are made from their declarations when the store connects (columns, checks, partial unique
//! indexes, the keyset index, foreign keys with the declared `ON DELETE`, the trigram index),
//! extended when a nullable or defaulted field is added, refused when a field is retyped or the
//! table is not Stockroom's, only checked when the application owns its DDL, and made once by
//! concurrent connects. Their rows go through the same statements as Stockroom's own, including
//! the binary `COPY` of large batches (at each integer column's width) and its fallback to
//! `INSERT` where the server refuses `COPY`.
//!
//! The entities are declared here by hand, as the core declares Category: a typed `Warehouse`,
//! and record-backed `bin` entities in several versions of one table.

mod support;

use std::sync::{Arc, Mutex};

use sqlx::{Connection, PgConnection};
use stockroom_core::schema::{
    rules, tables, Condition, Ddl, DefaultValue, Field, FieldType, FieldValue, Incremented,
    OnDelete, Record, Reference, Schema, Search, TextRule, Unique, Value,
};
use stockroom_core::{
    Constraint, Entity, EntityKind, Error, FilterInput, NewInput, NewReview, NewUser, Page,
    PatchInput, Product, ProductId, SchemaProblem, SearchText, Store, Timestamp,
};
use stockroom_postgres::{PostgresOptions, PostgresStore};
use support::{product, seed_products, TestDatabase};

stockroom_core::entity_id!(
    /// The id of a [`Warehouse`].
    pub WarehouseId
);

/// A warehouse: an entity of the application's.
#[derive(Debug, Clone, PartialEq)]
pub struct Warehouse {
    pub id: WarehouseId,
    pub name: String,
    pub slug: String,
    pub code: String,
    pub product_id: Option<ProductId>,
    pub status: String,
    pub capacity: i64,
    pub opened_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub version: i64,
}

static WAREHOUSE: Schema = Schema {
    name: "warehouse",
    table: "warehouses",
    fields: &[
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
        Field::new("status", FieldType::Enum(&["open", "closed"])),
        Field::new(
            "capacity",
            FieldType::Int {
                min: 0,
                max: 1_000_000,
            },
        ),
        Field::new("opened_at", FieldType::Timestamp).nullable(),
    ],
    unique: &[
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
    ],
    search: Some(Search {
        fields: &["name", "code"],
    }),
    ddl: Ddl::Stockroom,
};

const PRODUCT_ID: usize = 3;
const CAPACITY: usize = 5;

/// A new warehouse: every field's value, in declaration order.
#[derive(Debug)]
pub struct NewWarehouse(Vec<Value>);

impl NewWarehouse {
    fn new(name: &str, slug: &str, code: &str) -> Self {
        Self(vec![
            Value::Text(name.into()),
            Value::Text(slug.into()),
            Value::Text(code.into()),
            Value::Null,
            Value::Text("open".into()),
            Value::Int(100),
            Value::Null,
        ])
    }
    fn holding(mut self, product: ProductId) -> Self {
        self.0[PRODUCT_ID] = product.to_value();
        self
    }
}

/// A change to a warehouse: the fields it sets, by position.
#[derive(Debug, Clone, Default)]
pub struct WarehousePatch(Vec<(usize, Value)>);

/// Which warehouses a list covers.
#[derive(Debug, Clone, Default)]
pub struct WarehouseFilter {
    product_id: Option<ProductId>,
    search: Option<SearchText>,
}

/// The next field of `values`, as `T`.
fn take<T: FieldValue>(values: &mut impl Iterator<Item = Value>) -> stockroom_core::Result<T> {
    T::from_value(values.next().unwrap_or_default())
        .ok_or_else(|| Error::backend_message("a stored value of another type"))
}

impl NewInput for NewWarehouse {
    fn into_values(self) -> stockroom_core::Result<Vec<Value>> {
        rules::check_all(&WAREHOUSE, self.0)
    }
    fn from_values(values: Vec<Value>) -> stockroom_core::Result<Self> {
        Ok(Self(values))
    }
}

impl PatchInput for WarehousePatch {
    fn sets(&self) -> stockroom_core::Result<Vec<(usize, Value)>> {
        self.0
            .iter()
            .map(|(i, v)| Ok((*i, rules::check(&WAREHOUSE.fields[*i], v.clone())?)))
            .collect()
    }
    fn from_sets(sets: Vec<(usize, Value)>) -> stockroom_core::Result<Self> {
        Ok(Self(sets))
    }
}

impl FilterInput for WarehouseFilter {
    fn conditions(&self) -> stockroom_core::Result<Vec<Condition>> {
        let mut conditions = Vec::new();
        if let Some(product) = self.product_id {
            conditions.push(Condition::Eq {
                field: PRODUCT_ID,
                value: product.to_value(),
            });
        }
        if let Some(query) = &self.search {
            conditions.push(Condition::Search(query.clone()));
        }
        Ok(conditions)
    }
    fn from_conditions(conditions: Vec<Condition>) -> stockroom_core::Result<Self> {
        let mut filter = Self::default();
        for condition in conditions {
            match condition {
                Condition::Eq {
                    field: PRODUCT_ID,
                    value,
                } => filter.product_id = ProductId::from_value(value),
                Condition::Search(query) => filter.search = Some(query),
                Condition::Eq { .. } => {
                    return Err(Error::validation(
                        "filter",
                        stockroom_core::Rule::Malformed {
                            expected: "a product or a search",
                        },
                    ))
                }
            }
        }
        Ok(filter)
    }
}

/// The values of a new row, as a test gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Values(Vec<Value>);

impl NewInput for Values {
    fn into_values(self) -> stockroom_core::Result<Vec<Value>> {
        Ok(self.0)
    }
    fn from_values(values: Vec<Value>) -> stockroom_core::Result<Self> {
        Ok(Self(values))
    }
}

/// The fields an update sets, by position.
#[derive(Debug, Clone, PartialEq)]
pub struct Sets(Vec<(usize, Value)>);

impl PatchInput for Sets {
    fn sets(&self) -> stockroom_core::Result<Vec<(usize, Value)>> {
        Ok(self.0.clone())
    }
    fn from_sets(sets: Vec<(usize, Value)>) -> stockroom_core::Result<Self> {
        Ok(Self(sets))
    }
}

/// The conditions of a list, as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions(Vec<Condition>);

impl FilterInput for Conditions {
    fn conditions(&self) -> stockroom_core::Result<Vec<Condition>> {
        Ok(self.0.clone())
    }
    fn from_conditions(conditions: Vec<Condition>) -> stockroom_core::Result<Self> {
        Ok(Self(conditions))
    }
}

impl Entity for Warehouse {
    type Id = WarehouseId;
    type New = NewWarehouse;
    type Patch = WarehousePatch;
    type Filter = WarehouseFilter;

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
    fn from_record(record: Record) -> stockroom_core::Result<Self> {
        let mut values = record.values.iter().cloned();
        Ok(Warehouse {
            id: WarehouseId::from_uuid(record.id),
            name: take(&mut values)?,
            slug: take(&mut values)?,
            code: take(&mut values)?,
            product_id: take(&mut values)?,
            status: take(&mut values)?,
            capacity: take(&mut values)?,
            opened_at: take(&mut values)?,
            created_at: record.created_at,
            updated_at: record.updated_at,
            deleted_at: record.deleted_at,
            version: record.version,
        })
    }
    fn to_record(&self) -> Record {
        Record {
            id: self.id.as_uuid(),
            values: vec![
                self.name.to_value(),
                self.slug.to_value(),
                self.code.to_value(),
                self.product_id.to_value(),
                self.status.to_value(),
                self.capacity.to_value(),
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

stockroom_core::entity_id!(
    /// The id of a bin.
    pub BinId
);

/// An entity that is its record, for declarations that differ only in their schema.
macro_rules! record_entity {
    ($(#[$doc:meta])* $name:ident = $schema:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(Record);

        impl Entity for $name {
            type Id = BinId;
            type New = Values;
            type Patch = Sets;
            type Filter = Conditions;

            fn schema() -> &'static Schema {
                &$schema
            }
            fn id(&self) -> BinId {
                BinId::from_uuid(self.0.id)
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
            fn from_record(record: Record) -> stockroom_core::Result<Self> {
                Ok(Self(record))
            }
            fn to_record(&self) -> Record {
                self.0.clone()
            }
        }
    };
}

static BINS: Schema = Schema {
    name: "bin",
    table: "bins",
    fields: &[
        Field::new("code", FieldType::Text(TextRule::Line { max_len: 10 })),
        Field::new("slots", FieldType::Int { min: 0, max: 99 }),
    ],
    unique: &[Unique {
        name: "bin_code",
        fields: &["code"],
        index: "bins_code_live",
    }],
    search: None,
    ddl: Ddl::Stockroom,
};

/// [`BINS`] with a nullable field and a defaulted one added.
static BINS_EXTENDED: Schema = Schema {
    fields: &[
        Field::new("code", FieldType::Text(TextRule::Line { max_len: 10 })),
        Field::new("slots", FieldType::Int { min: 0, max: 99 }),
        Field::new("note", FieldType::Text(TextRule::Text)).nullable(),
        Field::new("floor", FieldType::Int { min: 0, max: 9 }).with_default(DefaultValue::Int(1)),
    ],
    ..BINS_SHAPE
};

/// [`BINS`] with `slots` declared as text.
static BINS_RETYPED: Schema = Schema {
    fields: &[
        Field::new("code", FieldType::Text(TextRule::Line { max_len: 10 })),
        Field::new("slots", FieldType::Text(TextRule::Line { max_len: 10 })),
    ],
    ..BINS_SHAPE
};

/// [`BINS`], its table the application's.
static BINS_OWNED: Schema = Schema {
    fields: BINS.fields,
    ddl: Ddl::Application,
    ..BINS_SHAPE
};

/// What the versions of [`BINS`] share.
const BINS_SHAPE: Schema = Schema {
    name: "bin",
    table: "bins",
    fields: &[],
    unique: &[Unique {
        name: "bin_code",
        fields: &["code"],
        index: "bins_code_live",
    }],
    search: None,
    ddl: Ddl::Stockroom,
};

record_entity!(
    /// A bin as first declared.
    Bin = BINS
);
record_entity!(
    /// A bin with two more fields.
    ExtendedBin = BINS_EXTENDED
);
record_entity!(
    /// A bin whose `slots` became text.
    RetypedBin = BINS_RETYPED
);
record_entity!(
    /// A bin in a table the application made.
    OwnedBin = BINS_OWNED
);

/// A store on `db` holding entity `E`, or the error of its connect.
async fn connect<E: Entity>(db: &TestDatabase) -> stockroom_core::Result<PostgresStore> {
    PostgresStore::connect(&db.config().with_entity::<E>()).await
}

/// An admin connection to `db`.
async fn admin(db: &TestDatabase) -> PgConnection {
    PgConnection::connect(db.url()).await.unwrap()
}

/// `(column, data_type, nullable)` of `table`, in order.
async fn columns(conn: &mut PgConnection, table: &str) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable = 'YES' \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// The definition `stockroom_entities` records for `table`, if any, and whether its checksum
/// is the SHA-256 of it (as the server computes it).
async fn recorded(conn: &mut PgConnection, table: &str) -> Option<(String, bool)> {
    sqlx::query_as(
        "SELECT definition, checksum = encode(sha256(convert_to(definition, 'UTF8')), 'hex') \
         FROM stockroom_entities WHERE table_name = $1",
    )
    .bind(table)
    .fetch_optional(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_entity_gets_its_table_indexes_and_keys_on_connect() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = connect::<Warehouse>(&db).await.unwrap();
    let mut conn = admin(&db).await;
    let found = columns(&mut conn, "warehouses").await;
    let expected = [
        ("id", "uuid", false),
        ("name", "text", false),
        ("slug", "text", false),
        ("code", "text", false),
        ("product_id", "uuid", true),
        ("status", "text", false),
        ("capacity", "bigint", false),
        ("opened_at", "timestamp with time zone", true),
        ("created_at", "timestamp with time zone", false),
        ("updated_at", "timestamp with time zone", false),
        ("deleted_at", "timestamp with time zone", true),
        ("version", "bigint", false),
        ("search_text", "text", false),
    ];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|&(c, t, n)| (c.to_owned(), t.to_owned(), n))
        .collect();
    assert_eq!(found, expected);

    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'warehouses' \
         ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let def = |name: &str| {
        indexes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no index {name} among {indexes:?}"))
    };
    assert!(def("warehouses_slug_live").contains("UNIQUE INDEX"));
    assert!(def("warehouses_slug_live").ends_with("(slug) WHERE (deleted_at IS NULL)"));
    assert!(def("warehouses_code_live").ends_with("(code) WHERE (deleted_at IS NULL)"));
    assert!(def("warehouses_order").ends_with("(created_at, id)"));
    assert!(def("warehouses_product_id_ref").ends_with("(product_id, created_at, id)"));
    assert!(def("warehouses_search").contains("gin (search_text gin_trgm_ops)"));

    let on_delete: String = sqlx::query_scalar(
        "SELECT confdeltype::text FROM pg_constraint WHERE conname = 'warehouses_product_id_fk'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(on_delete, "n", "ON DELETE SET NULL");
    let checks: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint WHERE conrelid = 'warehouses'::regclass \
         AND contype = 'c' ORDER BY conname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        checks,
        ["warehouses_capacity_check", "warehouses_status_check"]
    );

    let (definition, checksum_ok) = recorded(&mut conn, "warehouses").await.unwrap();
    assert_eq!(definition, tables::definition(&WAREHOUSE));
    assert!(checksum_ok, "the checksum is the SHA-256 of the definition");
    const APPLIED_AT: &str =
        "SELECT applied_at FROM stockroom_entities WHERE table_name = 'warehouses'";
    let first: Timestamp = sqlx::query_scalar(APPLIED_AT)
        .fetch_one(&mut conn)
        .await
        .unwrap();

    // A second connect finds the table as declared, and changes nothing.
    let again = connect::<Warehouse>(&db).await.unwrap();
    let second: Timestamp = sqlx::query_scalar(APPLIED_AT)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(second, first);
    again.close().await;
    conn.close().await.unwrap();
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_entitys_rows_keep_its_rules_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = connect::<Warehouse>(&db).await.unwrap();
    let [mug, gone] = seed_products(&store, [1, 2]).await.map(|p| p.id);
    let mut uow = store.begin().await.unwrap();
    uow.products().soft_delete(gone).await.unwrap();
    let north = uow
        .repository::<Warehouse>()
        .create(NewWarehouse::new("North Hall", "north", "N-1").holding(mug))
        .await
        .unwrap();
    assert_eq!(north.product_id, Some(mug));
    let err = uow
        .repository::<Warehouse>()
        .create(NewWarehouse::new("North again", "north", "N-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { constraint } if constraint == Constraint::of::<Warehouse>("warehouse_slug").unwrap()),
        "{err:?}"
    );
    let err = uow
        .repository::<Warehouse>()
        .create(NewWarehouse::new("South", "south", "N-1").holding(gone))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { entity: EntityKind::PRODUCT, id } if id == gone),
        "a deleted reference comes before a taken code: {err:?}"
    );
    let south = uow
        .repository::<Warehouse>()
        .create(NewWarehouse::new("South Yard", "south", "S-1"))
        .await
        .unwrap();
    let err = uow
        .repository::<Warehouse>()
        .update(
            south.id,
            &WarehousePatch(vec![(2, Value::Text("N-1".into()))]),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { constraint } if constraint.name() == "warehouse_code"),
        "{err:?}"
    );
    // Two rows cannot take one code; nothing changes.
    let err = uow
        .repository::<Warehouse>()
        .update_many(
            &[north.id, south.id],
            &WarehousePatch(vec![(2, Value::Text("X-1".into()))]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // The integer field's declared range holds in the one conditional statement.
    let records = uow.repositories();
    let incremented = records
        .increment(
            &WAREHOUSE,
            south.id.as_uuid(),
            CAPACITY,
            1_000_000,
            stockroom_core::time::now(),
        )
        .await
        .unwrap();
    assert_eq!(incremented, Incremented::OutOfRange { current: 100 });
    match records
        .increment(
            &WAREHOUSE,
            south.id.as_uuid(),
            CAPACITY,
            -40,
            stockroom_core::time::now(),
        )
        .await
        .unwrap()
    {
        Incremented::Done(record) => assert_eq!(record.values[CAPACITY], Value::Int(60)),
        other => panic!("{other:?}"),
    }
    // Lists by a reference and searches read the declared columns.
    let held = uow
        .repository::<Warehouse>()
        .list(
            &WarehouseFilter {
                product_id: Some(mug),
                search: None,
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(held, std::slice::from_ref(&north));
    let found = uow
        .repository::<Warehouse>()
        .search(
            &WarehouseFilter {
                product_id: None,
                search: Some(SearchText::new("yard").unwrap()),
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!((found.total.count(), found.items[0].id), (1, south.id));
    // A delete for good of the product forgets it, as declared (ON DELETE SET NULL).
    uow.products().hard_delete(mug).await.unwrap();
    let north = uow
        .repository::<Warehouse>()
        .require(north.id)
        .await
        .unwrap();
    assert_eq!(north.product_id, None);
    uow.commit().await.unwrap();
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_nullable_or_defaulted_field_is_added_on_the_next_connect() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = connect::<Bin>(&db).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let bin = uow
        .repository::<Bin>()
        .create(Values(vec![Value::Text("A-1".into()), Value::Int(3)]))
        .await
        .unwrap();
    uow.commit().await.unwrap();
    store.close().await;

    let store = connect::<ExtendedBin>(&db).await.unwrap();
    let mut conn = admin(&db).await;
    let names: Vec<String> = columns(&mut conn, "bins")
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        names.ends_with(&["note".to_owned(), "floor".to_owned()]),
        "{names:?}"
    );
    let mut read = store.read().await.unwrap();
    let extended = read
        .reader::<ExtendedBin>()
        .require(BinId::from_uuid(bin.0.id))
        .await
        .unwrap();
    assert_eq!(
        *extended.0.values,
        [
            Value::Text("A-1".into()),
            Value::Int(3),
            Value::Null,
            Value::Int(1)
        ],
        "the row there gets NULL and the default"
    );
    let (definition, _) = recorded(&mut conn, "bins").await.unwrap();
    assert_eq!(definition, tables::definition(&BINS_EXTENDED));
    drop(read);
    conn.close().await.unwrap();
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retyped_field_refuses_to_connect_naming_the_column_and_changes_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<Bin>(&db).await.unwrap().close().await;
    let mut conn = admin(&db).await;
    let before = (
        columns(&mut conn, "bins").await,
        recorded(&mut conn, "bins").await,
    );

    let err = connect::<RetypedBin>(&db).await.unwrap_err();
    match &err {
        Error::Schema {
            entity,
            problem: SchemaProblem::Mismatch { table, differences },
        } => {
            assert_eq!((entity.as_str(), *table), ("bin", "bins"));
            assert_eq!(differences.len(), 1, "{err}");
            assert_eq!(differences[0].column, "slots");
            assert_eq!(differences[0].declared.as_deref(), Some("text not null"));
            assert_eq!(differences[0].found.as_deref(), Some("bigint not null"));
        }
        other => panic!("{other:?}"),
    }
    let after = (
        columns(&mut conn, "bins").await,
        recorded(&mut conn, "bins").await,
    );
    assert_eq!(before, after, "nothing changed");
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_stockroom_did_not_make_is_not_taken_over() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut conn = admin(&db).await;
    // The application's own table of that name, whatever its columns.
    sqlx::raw_sql("CREATE TABLE bins (id uuid PRIMARY KEY, code text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = connect::<Bin>(&db).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Schema {
                problem: SchemaProblem::TableTaken { table: "bins" },
                ..
            }
        ),
        "{err:?}"
    );
    let names: Vec<String> = columns(&mut conn, "bins")
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(names, ["id", "code"], "the table is left alone");
    // Stockroom's own migrations ran (the store connected that far), nothing was recorded.
    assert_eq!(recorded(&mut conn, "bins").await, None);
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_application_owns_is_only_checked() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let err = connect::<OwnedBin>(&db).await.unwrap_err();
    assert!(
        matches!(&err, Error::Schema { problem: SchemaProblem::Mismatch { differences, .. }, .. }
            if differences[0].column == "bins" && differences[0].found.is_none()),
        "a missing table is a mismatch, not made: {err:?}"
    );
    let mut conn = admin(&db).await;
    assert!(columns(&mut conn, "bins").await.is_empty());

    // The application's DDL: the declared columns (a smaller integer type is fine), the unique
    // index, and a column of its own that Stockroom's inserts may leave out.
    sqlx::raw_sql(
        "CREATE TABLE bins (id uuid PRIMARY KEY, code text NOT NULL, slots integer NOT NULL, \
         created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, \
         deleted_at timestamptz, version bigint NOT NULL, audit text); \
         CREATE UNIQUE INDEX bins_code_live ON bins (code) WHERE deleted_at IS NULL",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let store = connect::<OwnedBin>(&db).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let bin = uow
        .repository::<OwnedBin>()
        .create(Values(vec![Value::Text("B-1".into()), Value::Int(7)]))
        .await
        .unwrap();
    let again = uow
        .repository::<OwnedBin>()
        .create(Values(vec![Value::Text("B-1".into()), Value::Int(8)]))
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Conflict { .. }), "{again:?}");
    uow.commit().await.unwrap();
    let mut read = store.read().await.unwrap();
    let stored = read
        .reader::<OwnedBin>()
        .require(BinId::from_uuid(bin.0.id))
        .await
        .unwrap();
    assert_eq!(
        stored.0.values[1],
        Value::Int(7),
        "read from an integer column"
    );
    drop(read);
    assert_eq!(recorded(&mut conn, "bins").await, None, "nothing recorded");
    store.close().await;

    sqlx::raw_sql("ALTER TABLE bins ALTER COLUMN slots TYPE text")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = connect::<OwnedBin>(&db).await.unwrap_err();
    assert!(
        matches!(&err, Error::Schema { problem: SchemaProblem::Mismatch { differences, .. }, .. }
            if differences[0].column == "slots"),
        "{err:?}"
    );
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_make_the_table_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_entity::<Warehouse>();
    let connects = (0..6).map(|_| {
        let config = config.clone();
        tokio::spawn(async move { PostgresStore::connect(&config).await })
    });
    for connected in futures_util::future::join_all(connects).await {
        connected.unwrap().unwrap().close().await;
    }
    let mut conn = admin(&db).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM stockroom_entities")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert!(recorded(&mut conn, "warehouses").await.is_some());
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// Held by each test while it captures the statement log (see `tests/logging.rs`).
static ONE_CAPTURE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// How many logged statements start with `start`.
    fn statements(&self, start: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.matches(&format!("sql=\"{start}")).count()
    }

    /// A subscriber writing `stockroom::sql` events at debug here.
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter("stockroom::sql=debug")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish()
    }
}

/// Past the size from which batches are copied.
const LARGE: usize = 1_200;

#[tokio::test(flavor = "current_thread")]
async fn large_batches_are_copied_at_the_width_of_each_integer_column() {
    let _one = ONE_CAPTURE_AT_A_TIME.lock().await;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let config = db
        .config()
        .with_entity::<Warehouse>()
        .with_log_statements(true);
    let store = PostgresStore::connect(&config).await.unwrap();
    let [mug] = seed_products(&store, [1]).await.map(|p| p.id);
    let mut uow = store.begin().await.unwrap();
    let users = uow
        .users()
        .create_many(
            (0..LARGE)
                .map(|i| NewUser::new(&format!("u{i}@example.com"), "Reviewer").unwrap())
                .collect(),
        )
        .await
        .unwrap();
    // A review's rating is a smallint column: copied as two bytes.
    let reviews = uow
        .reviews()
        .create_many(
            users
                .iter()
                .enumerate()
                .map(|(i, u)| NewReview::new(mug, u.id, (i % 5) as i64 + 1).unwrap())
                .collect(),
        )
        .await
        .unwrap();
    let warehouses = uow
        .repository::<Warehouse>()
        .create_many(
            (0..LARGE)
                .map(|i| {
                    NewWarehouse::new(
                        &format!("Hall {i}"),
                        &format!("hall-{i}"),
                        &format!("H-{i}"),
                    )
                    .holding(mug)
                })
                .collect(),
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(captured.statements("COPY users"), 1);
    assert_eq!(captured.statements("COPY reviews"), 1);
    assert_eq!(captured.statements("COPY warehouses"), 1);
    assert_eq!(captured.statements("INSERT INTO reviews"), 0);

    let mut read = store.read().await.unwrap();
    let stats = read.reviews().stats(mug).await.unwrap();
    assert_eq!(stats.histogram, [(LARGE / 5) as u64; 5]);
    let again = read.reviews().get(reviews[7].id).await.unwrap().unwrap();
    assert_eq!(again, reviews[7]);
    let found = read
        .reader::<Warehouse>()
        .search(
            &WarehouseFilter {
                product_id: Some(mug),
                search: Some(SearchText::new("h-1199").unwrap()),
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(found.items, [warehouses[LARGE - 1].clone()]);
    drop(read);

    // A batch that breaks a rule is not copied in part: the insert names the first row's
    // rule, and the unit of work goes on.
    let mut uow = store.begin().await.unwrap();
    let mut batch: Vec<NewWarehouse> = (0..LARGE)
        .map(|i| NewWarehouse::new("Annex", &format!("annex-{i}"), &format!("A-{i}")))
        .collect();
    batch.push(NewWarehouse::new("Clash", "clash", "H-5"));
    let err = uow
        .repository::<Warehouse>()
        .create_many(batch)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { constraint } if constraint.name() == "warehouse_code"),
        "{err:?}"
    );
    let count = uow
        .repository::<Warehouse>()
        .count(&WarehouseFilter::default())
        .await
        .unwrap();
    assert_eq!(count, LARGE as u64, "none of the batch went in");
    uow.commit().await.unwrap();
    store.close().await;
    db.drop_now().await;
}

/// Runs `body` with connect options for `db` as a login role of its own (not a superuser, so
/// that row-level security applies to it), after `setup` (with `{role}` for its name) ran as
/// the server's admin; drops the database and the role after, whatever `body` did.
async fn as_role<F, Fut>(db: TestDatabase, setup: &[&str], body: F)
where
    F: FnOnce(sqlx::postgres::PgConnectOptions) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    let role = format!("stockroom_role_{}", uuid::Uuid::now_v7().simple());
    let mut server = support::admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&mut server)
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = db.url().parse().unwrap();
    let outcome = std::panic::AssertUnwindSafe(async {
        let mut on_db = PgConnection::connect_with(&options).await.unwrap();
        for statement in setup {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.replace("{role}", &role)))
                .execute(&mut on_db)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let _ = on_db.close().await;
        body(options.clone().username(&role)).await;
    })
    .catch_unwind()
    .await;
    db.drop_now().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut server)
        .await
        .unwrap();
    let _ = server.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A batch large enough to be copied goes in by `INSERT` where the server refuses `COPY` but
/// not `INSERT`: row-level security, which PostgreSQL enforces on `INSERT` and refuses `COPY
/// FROM` under (0A000), forced on the application's table for its owner, Stockroom's role.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_the_server_will_not_copy_goes_in_by_insert() {
    let _one = ONE_CAPTURE_AT_A_TIME.lock().await;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let setup = [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "GRANT USAGE, CREATE ON SCHEMA public TO {role}",
    ];
    as_role(db, &setup, |as_role| async move {
        let captured = Captured::default();
        let _guard = tracing::subscriber::set_default(captured.subscriber());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(as_role)
            .await
            .unwrap();
        let options = PostgresOptions::default()
            .with_entity::<Warehouse>()
            .with_log_statements(true);
        let store = PostgresStore::from_pool(pool.clone(), options)
            .await
            .unwrap();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "ALTER TABLE warehouses ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE warehouses FORCE ROW LEVEL SECURITY; \
             CREATE POLICY every_row ON warehouses USING (true) WITH CHECK (true)",
        )
        .execute(&mut admin)
        .await
        .unwrap();
        let _ = admin.close().await;

        let mut uow = store.begin().await.unwrap();
        let created = uow
            .repository::<Warehouse>()
            .create_many(
                (0..LARGE)
                    .map(|i| NewWarehouse::new("Hall", &format!("hall-{i}"), &format!("H-{i}")))
                    .collect(),
            )
            .await
            .unwrap_or_else(|e| panic!("create_many under row-level security: {e:?}"));
        assert_eq!(created.len(), LARGE);
        assert_eq!(captured.statements("COPY warehouses"), 1, "COPY was tried");
        assert_eq!(captured.statements("INSERT INTO warehouses"), 1);
        // The unit of work goes on after the refused COPY.
        uow.products().create(product(1)).await.unwrap();
        uow.commit().await.unwrap();
        let mut read = store.read().await.unwrap();
        let count = read
            .reader::<Warehouse>()
            .count(&WarehouseFilter::default())
            .await
            .unwrap();
        assert_eq!(count, LARGE as u64);
        drop(read);
        store.close().await;
        pool.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_the_store_was_not_built_with_is_unknown() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    let mut uow = store.begin().await.unwrap();
    let err = uow
        .repository::<Warehouse>()
        .create(NewWarehouse::new("Lost", "lost", "L-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownEntity { entity } if entity.as_str() == "warehouse"),
        "{err:?}"
    );
    uow.rollback().await.unwrap();
    store.close().await;
    let mut conn = admin(&db).await;
    assert!(columns(&mut conn, "warehouses").await.is_empty());
    let _ = conn.close().await;
    db.drop_now().await;
}

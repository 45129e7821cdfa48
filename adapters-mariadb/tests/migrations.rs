//! Stockroom's schema on a real MariaDB server: its migrations beside the application's own
//! sqlx migrations (each keeps its own bookkeeping table and lock), the tables of Stockroom's
//! entities and the application's made from their declarations (columns, generated columns and
//! unique indexes of live rows, the keyset index, foreign keys with the declared `ON DELETE`,
//! CHECKs), made once by concurrent connects, extended when a nullable or defaulted field is
//! added or a text grows, refused when a field is retyped or the table is not Stockroom's, only
//! checked when the application owns its DDL; and a database left half-migrated (MariaDB has no
//! transactional DDL) finished by the next connect.
//!
//! Each test makes and drops its own database (`support::TestDatabase`: the crate's test
//! harness, see `stockroom_mariadb::testing` for where the server comes from).

mod support;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Connection, MySqlConnection, MySqlPool, SqlSafeStr};
use stockroom_core::schema::{
    search_document, tables, Catalog, Condition, Ddl, DefaultValue, Field, FieldType, Record,
    Schema, Search, TextRule, Unique, Value,
};
use stockroom_core::{
    Entity, Error, FilterInput, NewInput, PatchInput, SchemaProblem, Store, Timestamp,
};
use stockroom_mariadb::MariaDbStore;
use support::TestDatabase;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Entities: record-backed, declarations that differ only in their schema.

stockroom_core::entity_id!(
    /// The id of a bin.
    pub BinId
);

/// The values of a new row.
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

/// The conditions of a list.
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

/// An entity that is its record.
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

const CODE: Field = Field::new("code", FieldType::Text(TextRule::Line { max_len: 10 }));
const SLOTS: Field = Field::new("slots", FieldType::Int { min: 0, max: 99 });

static BINS: Schema = Schema {
    fields: &[CODE, SLOTS],
    ..BINS_SHAPE
};

/// [`BINS`] with a nullable field and a defaulted one added.
static BINS_EXTENDED: Schema = Schema {
    fields: &[
        CODE,
        SLOTS,
        Field::new("note", FieldType::Text(TextRule::Text)).nullable(),
        Field::new("floor", FieldType::Int { min: 0, max: 9 }).with_default(DefaultValue::Int(1)),
    ],
    ..BINS_SHAPE
};

/// [`BINS`] with `slots` declared as text.
static BINS_RETYPED: Schema = Schema {
    fields: &[
        CODE,
        Field::new("slots", FieldType::Text(TextRule::Line { max_len: 10 })),
    ],
    ..BINS_SHAPE
};

/// [`BINS`] whose codes may be 20 characters long.
static BINS_WIDER: Schema = Schema {
    fields: &[
        Field::new("code", FieldType::Text(TextRule::Line { max_len: 20 })),
        SLOTS,
    ],
    ..BINS_SHAPE
};

/// [`BINS`], its table the application's.
static BINS_OWNED: Schema = Schema {
    fields: &[CODE, SLOTS],
    ddl: Ddl::Application,
    ..BINS_SHAPE
};

/// [`BINS`] with a search document of its code.
static BINS_SEARCHED: Schema = Schema {
    fields: &[CODE, SLOTS],
    search: Some(Search { fields: &["code"] }),
    ..BINS_SHAPE
};

/// [`BINS_SEARCHED`] with a defaulted field added to the document.
static BINS_ZONED: Schema = Schema {
    fields: &[
        CODE,
        SLOTS,
        Field::new("zone", FieldType::Text(TextRule::Line { max_len: 20 }))
            .with_default(DefaultValue::Text("Main Hall")),
    ],
    search: Some(Search {
        fields: &["code", "zone"],
    }),
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
    /// A bin with longer codes.
    WiderBin = BINS_WIDER
);
record_entity!(
    /// A bin in a table the application made.
    OwnedBin = BINS_OWNED
);
record_entity!(
    /// A bin found by its code.
    SearchedBin = BINS_SEARCHED
);
record_entity!(
    /// A bin found by its code and zone.
    ZonedBin = BINS_ZONED
);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A store on `db` holding entity `E`, or the error of its connect.
async fn connect<E: Entity>(db: &TestDatabase) -> stockroom_core::Result<MariaDbStore> {
    MariaDbStore::connect(&db.config().with_entity::<E>()).await
}

/// `work`'s output, or a panic after a minute (a migrator waiting for a lock that is never
/// released would otherwise hang the test).
async fn within_a_minute<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("the migrations finished within a minute")
}

/// Stockroom's embedded migrations, as the crate embeds them.
fn stockroom_versions() -> Vec<i64> {
    let embedded: Migrator = sqlx::migrate!("./migrations");
    embedded.iter().map(|m| m.version).collect()
}

/// The versions recorded in `table`, in order.
async fn versions(conn: &mut MySqlConnection, table: &str) -> Vec<i64> {
    let sql = format!("SELECT `version` FROM `{table}` ORDER BY `version`");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .unwrap()
}

/// `(column, column type, nullable)` of `table`, generated columns left out, in order.
async fn columns(conn: &mut MySqlConnection, table: &str) -> Vec<(String, String, bool)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND IS_GENERATED = 'NEVER' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(c, t, n)| (c, t, n == "YES"))
        .collect()
}

/// `SHOW CREATE TABLE` of every table of the database, by name.
async fn create_statements(conn: &mut MySqlConnection) -> Vec<(String, String)> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut all = Vec::new();
    for name in names {
        let (table, create): (String, String) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SHOW CREATE TABLE `{name}`")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        all.push((table, create));
    }
    all
}

/// `SHOW CREATE TABLE` of `table`.
async fn create_statement(conn: &mut MySqlConnection, table: &str) -> String {
    create_statements(conn)
        .await
        .into_iter()
        .find(|(t, _)| t == table)
        .unwrap_or_else(|| panic!("no table {table}"))
        .1
}

/// The definition `stockroom_entities` records for `table`, if any, and whether its checksum
/// is the SHA-256 of it (as the server computes it).
async fn recorded(conn: &mut MySqlConnection, table: &str) -> Option<(String, bool)> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT `definition`, `checksum` = SHA2(`definition`, 256) FROM `stockroom_entities` \
         WHERE `table_name` = ?",
    )
    .bind(table)
    .fetch_optional(conn)
    .await
    .unwrap();
    row.map(|(d, ok)| (d, ok == 1))
}

/// Every row of Stockroom's bookkeeping: the migrations and the entities' tables, with when
/// each was written.
async fn bookkeeping(conn: &mut MySqlConnection) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT CONCAT_WS(' ', `version`, `description`, `checksum`, \
         CAST(`applied_at` AS CHAR)) FROM `stockroom_migrations` ORDER BY `version`",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT CONCAT_WS(' ', `table_name`, `entity`, `checksum`, \
             CAST(`applied_at` AS CHAR)) FROM `stockroom_entities` ORDER BY `table_name`",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap(),
    );
    rows
}

/// Whether a session on `conn`'s database holds Stockroom's migration lock. (The lock is the
/// server's, and the tests of other databases take it too, so only this database's sessions
/// count.)
async fn holds_the_lock(conn: &mut MySqlConnection) -> bool {
    let held: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE ID = IS_USED_LOCK('stockroom_migrations') AND DB = DATABASE()",
    )
    .fetch_one(conn)
    .await
    .unwrap();
    held > 0
}

/// Inserts a bin row (`code`, `slots`) with SQL of the test's own; its id.
async fn insert_bin(conn: &mut MySqlConnection, code: &str, slots: i64) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO `bins` (`id`, `code`, `slots`, `created_at`, `updated_at`) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
    )
    .bind(id)
    .bind(code)
    .bind(slots)
    .execute(conn)
    .await
    .unwrap();
    id
}

/// The server's error number of `e`.
fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Migrations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_changes_nothing_the_second_time() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = connect::<Bin>(&db).await.unwrap();
    let mut conn = db.connect().await;
    let tables = create_statements(&mut conn).await;
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    for expected in [
        "bins",
        "categories",
        "products",
        "reviews",
        "stockroom_entities",
        "stockroom_migrations",
        "users",
    ] {
        assert!(names.contains(&expected), "{expected} among {names:?}");
    }
    assert_eq!(
        versions(&mut conn, "stockroom_migrations").await,
        stockroom_versions()
    );
    let before = bookkeeping(&mut conn).await;
    assert_eq!(
        before.len(),
        stockroom_versions().len() + 5,
        "each migration and each entity's table (4 of Stockroom's, bins) recorded: {before:?}"
    );

    store.migrate().await.unwrap();
    let again = connect::<Bin>(&db).await.unwrap();
    assert_eq!(
        create_statements(&mut conn).await,
        tables,
        "no table changed"
    );
    assert_eq!(
        bookkeeping(&mut conn).await,
        before,
        "nothing recorded again"
    );
    assert!(
        !holds_the_lock(&mut conn).await,
        "the migration lock is released"
    );
    again.close().await;
    store.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_make_each_table_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_entity::<Bin>();
    let connects = (0..4).map(|_| {
        let config = config.clone();
        tokio::spawn(async move { MariaDbStore::connect(&config).await })
    });
    // A table made twice would fail its second CREATE TABLE (1050), and a migration recorded
    // twice its second row: every connect succeeding is each made once.
    for connected in within_a_minute(futures_util::future::join_all(connects)).await {
        connected
            .unwrap()
            .expect("every concurrent connect succeeds")
            .close()
            .await;
    }
    let mut conn = db.connect().await;
    assert_eq!(
        versions(&mut conn, "stockroom_migrations").await,
        stockroom_versions()
    );
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT `table_name` FROM `stockroom_entities` ORDER BY `table_name`")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        ["bins", "categories", "products", "reviews", "users"]
    );
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// The application's migrations 1..=`count`, as an application would embed them.
fn app_migrator(count: usize) -> Migrator {
    let all = [
        (
            1,
            "orders",
            "CREATE TABLE app_orders (id BIGINT PRIMARY KEY, product_id BINARY(16))",
        ),
        (
            2,
            "notes",
            "CREATE TABLE app_notes (id BIGINT PRIMARY KEY, body TEXT)",
        ),
    ];
    Migrator::with_migrations(
        all[..count]
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_sqlx_migrations_are_left_to_it() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let pool = MySqlPool::connect(db.url()).await.unwrap();
    app_migrator(1).run(&pool).await.unwrap();
    let store = connect::<Bin>(&db).await.unwrap();
    // The application ships a new migration; both migrators run again, in both orders.
    app_migrator(2).run(&pool).await.unwrap();
    store.migrate().await.unwrap();
    let again = connect::<Bin>(&db).await.unwrap();
    app_migrator(2).run(&pool).await.unwrap();
    let mut conn = db.connect().await;
    assert_eq!(versions(&mut conn, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(
        versions(&mut conn, "stockroom_migrations").await,
        stockroom_versions()
    );
    // And concurrently, on a database of its own.
    let other = TestDatabase::create().await.unwrap();
    let other_pool = MySqlPool::connect(other.url()).await.unwrap();
    let config = other.config();
    let connects = futures_util::future::join_all((0..3).map(|_| MariaDbStore::connect(&config)));
    let app = app_migrator(2);
    let (stores, app_run) =
        within_a_minute(async { tokio::join!(connects, app.run(&other_pool)) }).await;
    app_run.expect("the application's migrator is not disturbed by Stockroom's");
    for store in stores {
        store
            .expect("every concurrent connect succeeds")
            .close()
            .await;
    }
    let mut other_conn = other.connect().await;
    assert_eq!(versions(&mut other_conn, "_sqlx_migrations").await, [1, 2]);
    assert_eq!(
        versions(&mut other_conn, "stockroom_migrations").await,
        stockroom_versions()
    );
    other_conn.close().await.unwrap();
    other_pool.close().await;
    other.drop_now().await;
    again.close().await;
    store.close().await;
    pool.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// A migration whose recorded text differs from this build's, or a version this build does
/// not have (a newer Stockroom migrated the database), refuses to connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_unknown_migration_refuses_to_connect() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<Bin>(&db).await.unwrap().close().await;
    let mut conn = db.connect().await;
    sqlx::query(
        "UPDATE `stockroom_migrations` SET `checksum` = REPEAT('0', 64) WHERE `version` = 1",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = connect::<Bin>(&db).await.unwrap_err();
    assert!(err.to_string().contains("another text"), "{err}");
    sqlx::query(
        "UPDATE `stockroom_migrations` SET `checksum` = \
         (SELECT SHA2(?, 256)) WHERE `version` = 1",
    )
    .bind(include_str!("../migrations/0001_entities.sql"))
    .execute(&mut conn)
    .await
    .unwrap();
    connect::<Bin>(&db).await.unwrap().close().await;
    sqlx::query(
        "INSERT INTO `stockroom_migrations` VALUES (999999, 'future', REPEAT('0', 64), \
         UTC_TIMESTAMP(6))",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = connect::<Bin>(&db).await.unwrap_err();
    assert!(err.to_string().contains("999999"), "{err}");
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// MariaDB commits each DDL statement by itself: a process that dies between two leaves a
/// database the next connect finishes. Here as if it had died after running every migration
/// but before recording any, after making the tables but before recording them, and before
/// adding a foreign key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_left_half_migrated_is_finished_by_the_next_connect() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<Bin>(&db).await.unwrap().close().await;
    let mut conn = db.connect().await;
    let tables = create_statements(&mut conn).await;
    sqlx::raw_sql(
        "DELETE FROM `stockroom_migrations`; DELETE FROM `stockroom_entities`; \
         ALTER TABLE `products` DROP FOREIGN KEY `products_category_id_fk`",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let store = connect::<Bin>(&db).await.unwrap();
    assert_eq!(
        versions(&mut conn, "stockroom_migrations").await,
        stockroom_versions(),
        "every migration ran again, and is recorded"
    );
    assert_eq!(
        create_statements(&mut conn).await,
        tables,
        "the tables are as the first connect made them, the foreign key included"
    );
    for (table, definition) in [
        ("bins", tables::definition(&BINS)),
        (
            "products",
            tables::definition(stockroom_core::Product::schema()),
        ),
    ] {
        let (found, checksum_ok) = recorded(&mut conn, table).await.unwrap();
        assert_eq!(found, definition);
        assert!(checksum_ok, "the checksum is the SHA-256 of the definition");
    }
    store.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// A connect waits for Stockroom's migration lock held by another session, and goes on once
/// it is released; one dropped while it waits leaves no lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_waits_for_the_migration_lock_and_a_dropped_one_leaves_none() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut holder = db.connect().await;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('stockroom_migrations', 60)")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let config = db.config();
    let dropped = tokio::spawn({
        let config = config.clone();
        async move { MariaDbStore::connect(&config).await }
    });
    let waiting = tokio::spawn(async move { MariaDbStore::connect(&config).await });
    // Both wait: no table is made while the lock is held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!dropped.is_finished() && !waiting.is_finished());
    dropped.abort();
    assert!(dropped.await.unwrap_err().is_cancelled());
    let mut conn = db.connect().await;
    let products: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'products'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(products, 0, "nothing made while the lock was held");
    sqlx::query("SELECT RELEASE_LOCK('stockroom_migrations')")
        .execute(&mut holder)
        .await
        .unwrap();
    let store = within_a_minute(waiting)
        .await
        .unwrap()
        .expect("the waiting connect migrates once the lock is free");
    assert_eq!(
        versions(&mut conn, "stockroom_migrations").await,
        stockroom_versions()
    );
    // The dropped connect's connection is closed, so its wait ended and took nothing (the
    // server may notice the closed connection only once it granted the lock: it then ends the
    // session, and the lock with it).
    let mut free = false;
    for _ in 0..50 {
        if !holds_the_lock(&mut conn).await {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(free, "no session of the database holds the migration lock");
    store.close().await;
    holder.close().await.unwrap();
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// A user with privileges on its own database only (no `SUPER`, nothing global: what an
/// application is usually given) migrates: the named lock needs no privilege, and every table,
/// foreign key and generated column is made within the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_privileges_on_its_database_only_migrates() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let grant = format!("GRANT ALL PRIVILEGES ON `{}`.* TO {{role}}", db.name());
    support::as_role(db, &[grant.as_str()], |as_role| async move {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(2)
            .connect_with(as_role)
            .await
            .unwrap();
        let options = stockroom_mariadb::MariaDbOptions::default().with_entity::<Bin>();
        let store = MariaDbStore::from_pool(pool.clone(), options.clone())
            .await
            .unwrap_or_else(|e| panic!("from_pool as a user of the database only: {e:?}"));
        store.close().await;
        // And again, with nothing left to do.
        MariaDbStore::from_pool(pool.clone(), options)
            .await
            .unwrap()
            .close()
            .await;
        let mut conn = pool.acquire().await.unwrap();
        assert_eq!(
            versions(&mut conn, "stockroom_migrations").await,
            stockroom_versions()
        );
        assert!(recorded(&mut conn, "bins").await.is_some());
        drop(conn);
        pool.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The entities' tables.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_are_made_from_their_declarations() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = connect::<Bin>(&db).await.unwrap();
    let mut conn = db.connect().await;
    let expected = [
        ("id", "binary(16)", false),
        ("code", "varchar(10)", false),
        ("slots", "bigint(20)", false),
        ("created_at", "datetime(6)", false),
        ("updated_at", "datetime(6)", false),
        ("deleted_at", "datetime(6)", true),
        ("version", "bigint(20)", false),
    ];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|&(c, t, n)| (c.to_owned(), t.to_owned(), n))
        .collect();
    assert_eq!(columns(&mut conn, "bins").await, expected);
    let bins = create_statement(&mut conn, "bins").await;
    for part in [
        "`_live_bins_code_live_0` varchar(10) GENERATED ALWAYS AS (if(`deleted_at` is null,`code`,NULL)) VIRTUAL",
        "UNIQUE KEY `bins_code_live` (`_live_bins_code_live_0`)",
        "KEY `bins_order` (`created_at`,`id`)",
        "CONSTRAINT `bins_slots_check` CHECK (`slots` >= 0 and `slots` <= 99)",
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin COMMENT='stockroom entity bin'",
    ] {
        assert!(bins.contains(part), "{part} in {bins}");
    }
    let products = create_statement(&mut conn, "products").await;
    for part in [
        "`name` varchar(200) NOT NULL",
        "`description` text DEFAULT NULL",
        "`search_text` mediumtext NOT NULL",
        "UNIQUE KEY `products_slug_live` (`_live_products_slug_live_0`)",
        "UNIQUE KEY `products_sku_live` (`_live_products_sku_live_0`)",
        "KEY `products_category_id_ref` (`category_id`,`created_at`,`id`)",
        "CONSTRAINT `products_category_id_fk` FOREIGN KEY (`category_id`) REFERENCES `categories` (`id`) ON DELETE SET NULL",
        "CONSTRAINT `products_created_by_fk` FOREIGN KEY (`created_by`) REFERENCES `users` (`id`) ON DELETE SET NULL",
        "CONSTRAINT `products_status_check` CHECK (`status` in ('draft','active','archived'))",
        "CONSTRAINT `products_stock_check` CHECK (`stock` >= 0 and `stock` <= 1000000000000)",
    ] {
        assert!(products.contains(part), "{part} in {products}");
    }
    let reviews = create_statement(&mut conn, "reviews").await;
    for part in [
        "UNIQUE KEY `reviews_author_live` (`_live_reviews_author_live_0`,`_live_reviews_author_live_1`)",
        "CONSTRAINT `reviews_product_id_fk` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON DELETE CASCADE",
        "CONSTRAINT `reviews_rating_check` CHECK (`rating` >= 1 and `rating` <= 5)",
    ] {
        assert!(reviews.contains(part), "{part} in {reviews}");
    }
    let (definition, checksum_ok) = recorded(&mut conn, "bins").await.unwrap();
    assert_eq!(definition, tables::definition(&BINS));
    assert!(checksum_ok, "the checksum is the SHA-256 of the definition");

    // Uniqueness holds among live rows only: a deleted row's code is free again.
    let first = insert_bin(&mut conn, "A-1", 1).await;
    let taken = sqlx::query(
        "INSERT INTO `bins` (`id`, `code`, `slots`, `created_at`, `updated_at`) \
         VALUES (?, 'A-1', 2, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
    )
    .bind(Uuid::now_v7())
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert_eq!(error_number(&taken), Some(1062), "{taken}");
    assert!(taken.to_string().contains("bins_code_live"), "{taken}");
    sqlx::query("UPDATE `bins` SET `deleted_at` = UTC_TIMESTAMP(6) WHERE `id` = ?")
        .bind(first)
        .execute(&mut conn)
        .await
        .unwrap();
    insert_bin(&mut conn, "A-1", 2).await;

    // The declared ON DELETE, on base columns of the generated columns of unique rules too
    // (a review's product and author are its rule's).
    sqlx::raw_sql(
        "SET @u = X'11111111111111111111111111111111', @c = X'22222222222222222222222222222222', \
         @p = X'33333333333333333333333333333333'; \
         INSERT INTO users (id, email, display_name, created_at, updated_at) \
         VALUES (@u, 'a@example.com', 'A', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)); \
         INSERT INTO categories (id, name, slug, created_at, updated_at) \
         VALUES (@c, 'C', 'c', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)); \
         INSERT INTO products (id, name, slug, sku, status, stock, category_id, created_by, \
         created_at, updated_at, search_text) VALUES (@p, 'P', 'p', 'P-1', 'draft', 1, @c, @u, \
         UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 'p'); \
         INSERT INTO reviews (id, product_id, author_id, rating, created_at, updated_at) \
         VALUES (X'44444444444444444444444444444444', @p, @u, 5, UTC_TIMESTAMP(6), \
         UTC_TIMESTAMP(6)); \
         DELETE FROM categories WHERE id = @c; DELETE FROM users WHERE id = @u",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let product: (Option<Vec<u8>>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT `category_id`, `created_by` FROM `products`")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(product, (None, None), "ON DELETE SET NULL");
    let reviews: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM `reviews`")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(reviews, 0, "ON DELETE CASCADE");
    let negative = sqlx::query("UPDATE `products` SET `stock` = -1")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(error_number(&negative), Some(4025), "{negative}");
    assert!(
        negative.to_string().contains("`products_stock_check`"),
        "{negative}"
    );
    store.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_nullable_or_defaulted_field_is_added_on_the_next_connect() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<Bin>(&db).await.unwrap().close().await;
    let mut conn = db.connect().await;
    let bin = insert_bin(&mut conn, "A-1", 3).await;

    let store = connect::<ExtendedBin>(&db).await.unwrap();
    let names: Vec<String> = columns(&mut conn, "bins")
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        names.ends_with(&["note".to_owned(), "floor".to_owned()]),
        "{names:?}"
    );
    let row: (Option<String>, i64) =
        sqlx::query_as("SELECT `note`, `floor` FROM `bins` WHERE `id` = ?")
            .bind(bin)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(row, (None, 1), "the row there gets NULL and the default");
    let floor_check = sqlx::query("UPDATE `bins` SET `floor` = 10 WHERE `id` = ?")
        .bind(bin)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        error_number(&floor_check),
        Some(4025),
        "the new field's CHECK"
    );
    let (definition, checksum_ok) = recorded(&mut conn, "bins").await.unwrap();
    assert_eq!(definition, tables::definition(&BINS_EXTENDED));
    assert!(checksum_ok);
    store.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// A text field whose `max_len` grew gets a wider column (the core's plan sees no widths), its
/// unique rule kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_text_field_is_widened_with_its_unique_index() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<Bin>(&db).await.unwrap().close().await;
    let store = connect::<WiderBin>(&db).await.unwrap();
    let mut conn = db.connect().await;
    let code = columns(&mut conn, "bins").await[1].clone();
    assert_eq!(code, ("code".to_owned(), "varchar(20)".to_owned(), false));
    let long = "ABCDEFGHIJ-123456789";
    insert_bin(&mut conn, long, 1).await;
    let taken = sqlx::query(
        "INSERT INTO `bins` (`id`, `code`, `slots`, `created_at`, `updated_at`) \
         VALUES (?, ?, 2, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
    )
    .bind(Uuid::now_v7())
    .bind(long)
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert_eq!(error_number(&taken), Some(1062), "{taken}");
    // Once wide, the first declaration (which fits) finds nothing to do.
    let before = create_statements(&mut conn).await;
    connect::<Bin>(&db).await.unwrap().close().await;
    assert_eq!(create_statements(&mut conn).await, before);
    store.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

/// A defaulted field added to an entity's search document: the rows there get their documents
/// made again, with the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defaulted_search_field_added_refolds_the_documents() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<SearchedBin>(&db).await.unwrap().close().await;
    let mut conn = db.connect().await;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO `bins` (`id`, `code`, `slots`, `created_at`, `updated_at`, `search_text`) \
         VALUES (?, 'A-1', 1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), 'a-1')",
    )
    .bind(id)
    .execute(&mut conn)
    .await
    .unwrap();

    let store = connect::<ZonedBin>(&db).await.unwrap();
    let document: String = sqlx::query_scalar("SELECT `search_text` FROM `bins` WHERE `id` = ?")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let catalog = Catalog::new(&[&BINS_ZONED]).unwrap();
    let expected = search_document(
        catalog.entry(&BINS_ZONED).unwrap(),
        &[
            Value::Text("A-1".into()),
            Value::Int(1),
            Value::Text("Main Hall".into()),
        ],
    );
    assert_eq!(document, expected);
    assert!(document.contains("main hall"), "{document:?}");
    store.close().await;
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retyped_field_refuses_to_connect_naming_the_column_and_changes_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    connect::<Bin>(&db).await.unwrap().close().await;
    let mut conn = db.connect().await;
    let before = (
        create_statements(&mut conn).await,
        bookkeeping(&mut conn).await,
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
        create_statements(&mut conn).await,
        bookkeeping(&mut conn).await,
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
    let mut conn = db.connect().await;
    // The application's own table of that name, whatever its columns.
    sqlx::raw_sql("CREATE TABLE bins (id BINARY(16) PRIMARY KEY, code TEXT NOT NULL)")
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
    // Stockroom's own migrations ran (the store connected that far), nothing else was made
    // (every entity is compared before any table changes) or recorded.
    assert_eq!(
        versions(&mut conn, "stockroom_migrations").await,
        stockroom_versions()
    );
    assert_eq!(recorded(&mut conn, "bins").await, None);
    let made: Vec<String> = create_statements(&mut conn)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| ["products", "categories", "users", "reviews"].contains(&t.as_str()))
        .collect();
    assert!(made.is_empty(), "{made:?}");
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
    let mut conn = db.connect().await;
    assert!(columns(&mut conn, "bins").await.is_empty());

    // The application's DDL: the declared columns (a smaller integer type and a TEXT are fine),
    // the unique index of live rows, and a column of its own that Stockroom's inserts may leave
    // out.
    sqlx::raw_sql(
        "CREATE TABLE bins (id BINARY(16) PRIMARY KEY, code TEXT NOT NULL, slots INT NOT NULL, \
         created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, \
         deleted_at DATETIME(6), version BIGINT NOT NULL, audit TEXT, \
         live_code TEXT AS (IF(deleted_at IS NULL, code, NULL)) VIRTUAL, \
         UNIQUE KEY bins_code_live (live_code))",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let before = create_statement(&mut conn, "bins").await;
    let store = connect::<OwnedBin>(&db).await.unwrap();
    assert_eq!(create_statement(&mut conn, "bins").await, before);
    assert_eq!(recorded(&mut conn, "bins").await, None, "nothing recorded");
    store.close().await;

    // A column too narrow for the declared texts is a difference too.
    sqlx::raw_sql("ALTER TABLE bins MODIFY code VARCHAR(5) NOT NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = connect::<OwnedBin>(&db).await.unwrap_err();
    assert!(
        matches!(&err, Error::Schema { problem: SchemaProblem::Mismatch { differences, .. }, .. }
            if differences[0].column == "code"
                && differences[0].found.as_deref() == Some("varchar(5) not null")),
        "{err:?}"
    );
    sqlx::raw_sql("ALTER TABLE bins MODIFY code VARCHAR(10) NOT NULL, MODIFY slots TEXT NOT NULL")
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

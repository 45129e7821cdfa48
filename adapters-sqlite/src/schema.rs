//! The schema, as embedded migrations, and the migrator that applies them.
//!
//! Stockroom keeps its migration bookkeeping in a table of its own, `stockroom_migrations`
//! (version, description, SHA-256 checksum of the SQL, time applied), never in
//! `PRAGMA user_version`: that one belongs to the application and its own migration tool.
//! Each pending migration runs in its own `BEGIN IMMEDIATE` transaction together with its
//! bookkeeping row, so processes connecting at once apply each migration exactly once.
//!
//! Ids are 16-byte BLOBs (the UUID's bytes, so `ORDER BY id` is the UUID order); timestamps are
//! INTEGER microseconds since the Unix epoch. Every unique index is partial (live rows only)
//! except the ledger's, and is named after the [`Constraint`](stockroom_core::Constraint) it
//! enforces.

use rusqlite::{params, params_from_iter, Connection, TransactionBehavior};
use sha2::{Digest, Sha256};
use stockroom_core::schema::Catalog;
use stockroom_core::Error;

use crate::error::{map, SqliteError};

/// One embedded migration: its SQL, and a step in Rust for what SQL cannot do (making search
/// documents again with the core's folding), run after the SQL in the same transaction.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
    pub(crate) then: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

impl Migration {
    /// The SHA-256 of the migration's SQL, in lower-case hex.
    pub(crate) fn checksum(&self) -> String {
        sha256_hex(self.sql)
    }
}

/// The SHA-256 of `text`, in lower-case hex: the checksum of a migration's SQL, and of an
/// entity table's recorded definition.
pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The migrations, in the order they apply.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "users, categories, products, reviews and the stock ledger",
        sql: V1,
        then: None,
    },
    Migration {
        version: 2,
        description: "search documents folded with full case folding and canonical composition",
        sql: V2,
        then: Some(refold_search_text),
    },
    Migration {
        version: 3,
        description: "the bookkeeping of the tables made for declared entities",
        sql: V3,
        then: None,
    },
    Migration {
        version: 4,
        description: "the substring index of product search documents",
        sql: V4,
        then: Some(create_products_search_index),
    },
    Migration {
        version: 5,
        description: "the transactional outbox and its lanes",
        sql: V5,
        then: None,
    },
];

/// The outbox (see `sql/outbox.rs`): the events units of work publish, each with its sequence
/// (`AUTOINCREMENT`, so that a sequence is never given again, even after the newest events were
/// purged), and the 32 lanes (`stockroom_core::outbox::LANES`) relays lease. The claim finds
/// each lane's undelivered events, in sequence order, through `stockroom_outbox_pending`
/// (whose last column, always `NULL` there, lets SQLite read the index alone: without it, each
/// entry would send it to the row to check `delivered_at IS NULL`); the purge finds delivered
/// events through `stockroom_outbox_delivered`.
const V5: &str = "
CREATE TABLE stockroom_outbox (
    sequence     INTEGER PRIMARY KEY AUTOINCREMENT,
    id           BLOB    NOT NULL CHECK (length(id) = 16),
    subject      TEXT    NOT NULL,
    aggregate    TEXT    NOT NULL,
    lane         INTEGER NOT NULL CHECK (lane BETWEEN 0 AND 31),
    payload      BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER
) STRICT;
CREATE UNIQUE INDEX stockroom_outbox_id ON stockroom_outbox (id);
CREATE INDEX stockroom_outbox_pending ON stockroom_outbox (lane, sequence, delivered_at)
    WHERE delivered_at IS NULL;
CREATE INDEX stockroom_outbox_delivered ON stockroom_outbox (delivered_at)
    WHERE delivered_at IS NOT NULL;

CREATE TABLE stockroom_outbox_lanes (
    lane         INTEGER NOT NULL PRIMARY KEY CHECK (lane BETWEEN 0 AND 31),
    holder       BLOB    CHECK (holder IS NULL OR length(holder) = 16),
    leased_until INTEGER
) STRICT;
WITH RECURSIVE lanes (lane) AS (SELECT 0 UNION ALL SELECT lane + 1 FROM lanes WHERE lane < 31)
INSERT INTO stockroom_outbox_lanes (lane) SELECT lane FROM lanes;";

/// V4 is made in Rust, by the same code that makes the index of an application's searchable
/// entity (`search_index.rs`).
const V4: &str = "-- products_search: crate::search_index::create(conn, \"products\")";

fn create_products_search_index(conn: &Connection) -> rusqlite::Result<()> {
    crate::search_index::create(conn, "products")
}

/// Stockroom's record of each table it made (or extended) for an entity the application
/// declared: the definition it made it to (`stockroom_core::schema::tables::definition`) and its
/// SHA-256. A table of that name the record does not list is not Stockroom's to change (see
/// `ddl.rs`).
const V3: &str = "
CREATE TABLE stockroom_entities (
    table_name TEXT    NOT NULL PRIMARY KEY,
    entity     TEXT    NOT NULL,
    definition TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT;";

/// V2 changes no table: the search documents V1 stored were lower-cased only, and the core now
/// folds them fully (`stockroom_core::adapter::fold`), so every product's `search_text` is made again.
const V2: &str =
    "-- search_text of every product made again with stockroom_core::adapter::search_document";

/// Makes every product's `search_text` again with the core's current folding.
fn refold_search_text(conn: &Connection) -> rusqlite::Result<()> {
    let mut read = conn.prepare("SELECT id, name, sku, description FROM products")?;
    let mut write = conn.prepare("UPDATE products SET search_text = ?1 WHERE id = ?2")?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let id: Vec<u8> = row.get(0)?;
        let (name, sku): (String, String) = (row.get(1)?, row.get(2)?);
        let description: Option<String> = row.get(3)?;
        let document =
            stockroom_core::adapter::search_document(&name, &sku, description.as_deref());
        write.execute(params![document, id])?;
    }
    Ok(())
}

/// Stockroom's bookkeeping: one row per applied migration.
const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS stockroom_migrations (
    version     INTEGER NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    checksum    TEXT    NOT NULL,
    applied_at  INTEGER NOT NULL
) STRICT;";

/// What V1 creates: a database with `user_version = 1` and every one of these, but no
/// bookkeeping, was migrated by a Stockroom that counted its migrations in `user_version`.
const V1_OBJECTS: &[&str] = &[
    "users",
    "users_email_live",
    "users_order",
    "categories",
    "categories_slug_live",
    "categories_order",
    "products",
    "products_slug_live",
    "products_sku_live",
    "products_order",
    "products_category",
    "products_created_by",
    "reviews",
    "reviews_author_live",
    "reviews_order",
    "reviews_product",
    "reviews_author",
    "stock_movements",
    "stock_movements_idempotency_key",
    "stock_movements_order",
    "stock_movements_source",
    "stock_movements_target",
];

const V1: &str = r#"
CREATE TABLE users (
    id           BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    email        TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER,
    version      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX users_email_live ON users (email) WHERE deleted_at IS NULL;
CREATE INDEX users_order ON users (created_at, id);

CREATE TABLE categories (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL,
    slug       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    version    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX categories_slug_live ON categories (slug) WHERE deleted_at IS NULL;
CREATE INDEX categories_order ON categories (created_at, id);

CREATE TABLE products (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name        TEXT    NOT NULL,
    slug        TEXT    NOT NULL,
    sku         TEXT    NOT NULL,
    description TEXT,
    status      TEXT    NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    category_id BLOB REFERENCES categories (id) ON DELETE SET NULL,
    created_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    version     INTEGER NOT NULL,
    search_text TEXT    NOT NULL
) STRICT;
CREATE UNIQUE INDEX products_slug_live ON products (slug) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX products_sku_live ON products (sku) WHERE deleted_at IS NULL;
CREATE INDEX products_order ON products (created_at, id);
CREATE INDEX products_category ON products (category_id, created_at, id);
CREATE INDEX products_created_by ON products (created_by);

CREATE TABLE reviews (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    product_id BLOB    NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    author_id  BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER,
    version    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX reviews_author_live ON reviews (product_id, author_id) WHERE deleted_at IS NULL;
CREATE INDEX reviews_order ON reviews (created_at, id);
CREATE INDEX reviews_product ON reviews (product_id, created_at, id);
CREATE INDEX reviews_author ON reviews (author_id);

-- The ledger: append-only, no foreign key (it outlives purged products).
CREATE TABLE stock_movements (
    id              BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    source_id       BLOB    NOT NULL,
    target_id       BLOB    NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX stock_movements_idempotency_key ON stock_movements (idempotency_key);
CREATE INDEX stock_movements_order ON stock_movements (created_at, id);
CREATE INDEX stock_movements_source ON stock_movements (source_id, created_at, id);
CREATE INDEX stock_movements_target ON stock_movements (target_id, created_at, id);
"#;

/// Why migrating stopped: SQLite failed, or the adapter refused the database.
enum Failure {
    Sql(rusqlite::Error),
    Refused(SqliteError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<SqliteError> for Failure {
    fn from(e: SqliteError) -> Self {
        Failure::Refused(e)
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Sql(e) => map(e),
            Failure::Refused(e) => e.into(),
        }
    }
}

/// A migration recorded in `stockroom_migrations`.
struct Applied {
    version: i64,
    description: String,
    checksum: String,
}

/// Brings the database up to the embedded schema, then the tables of `catalog`'s declared
/// entities to their declarations (see `ddl.rs`). A database already current is only read (no
/// write lock is taken); otherwise the bookkeeping table is created (carrying over the
/// `user_version` bookkeeping of earlier Stockroom builds) and each pending migration is applied
/// in its own `BEGIN IMMEDIATE` transaction with its bookkeeping row. Applied migrations that
/// this build does not know, or whose checksum differs, are refused before anything changes.
pub(crate) fn migrate(conn: &mut Connection, catalog: &Catalog) -> stockroom_core::Result<()> {
    apply_migrations(conn)?;
    crate::ddl::sync(conn, catalog)
}

fn apply_migrations(conn: &mut Connection) -> stockroom_core::Result<()> {
    if is_current(conn)? {
        return Ok(());
    }
    immediate(conn, |tx| {
        tx.execute_batch(BOOKKEEPING)?;
        Ok(carry_over(tx)?)
    })?;
    for migration in MIGRATIONS {
        // Another process may have applied it since: the check runs again under the lock.
        immediate(conn, |tx| {
            let applied = applied(tx)?;
            verify(&applied)?;
            if !applied.iter().any(|a| a.version == migration.version) {
                apply(tx, migration)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Whether every embedded migration is applied (refusing a database this build must not touch).
fn is_current(conn: &Connection) -> Result<bool, Failure> {
    if !bookkeeping_exists(conn)? {
        return Ok(false);
    }
    let applied = applied(conn)?;
    verify(&applied)?;
    Ok(MIGRATIONS
        .iter()
        .all(|m| applied.iter().any(|a| a.version == m.version)))
}

/// Runs `work` in a `BEGIN IMMEDIATE` transaction (waiting the busy timeout for the write lock),
/// committed if it succeeds and rolled back otherwise.
fn immediate(
    conn: &mut Connection,
    work: impl FnOnce(&Connection) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    work(&tx)?;
    tx.commit()?;
    Ok(())
}

fn bookkeeping_exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = 'stockroom_migrations')",
        [],
        |r| r.get(0),
    )
}

fn applied(conn: &Connection) -> rusqlite::Result<Vec<Applied>> {
    let mut stmt = conn.prepare(
        "SELECT version, description, checksum FROM stockroom_migrations ORDER BY version",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Applied {
            version: r.get(0)?,
            description: r.get(1)?,
            checksum: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Refuses an applied migration this build does not know, or one whose checksum differs.
fn verify(applied: &[Applied]) -> Result<(), SqliteError> {
    for row in applied {
        let Some(embedded) = MIGRATIONS.iter().find(|m| m.version == row.version) else {
            return Err(SqliteError::UnknownMigration {
                version: row.version,
                description: row.description.clone(),
            });
        };
        let checksum = embedded.checksum();
        if checksum != row.checksum {
            return Err(SqliteError::MigrationChecksum {
                version: row.version,
                description: row.description.clone(),
                applied: row.checksum.clone(),
                embedded: checksum,
            });
        }
    }
    Ok(())
}

/// Runs `migration` and records it, in the caller's transaction.
fn apply(conn: &Connection, migration: &Migration) -> rusqlite::Result<()> {
    conn.execute_batch(migration.sql)?;
    if let Some(step) = migration.then {
        step(conn)?;
    }
    record(conn, migration)?;
    tracing::info!(
        version = migration.version,
        description = migration.description,
        "sqlite: applied Stockroom migration"
    );
    Ok(())
}

fn record(conn: &Connection, migration: &Migration) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO stockroom_migrations (version, description, checksum, applied_at) \
         VALUES (?1, ?2, ?3, ?4)",
        params![
            migration.version,
            migration.description,
            migration.checksum(),
            chrono::Utc::now().timestamp_micros()
        ],
    )
    .map(drop)
}

/// Earlier builds counted their migrations in `PRAGMA user_version` (V1 only). A database they
/// migrated (no bookkeeping row yet, `user_version = 1`, every V1 table and index present) gets
/// V1 recorded as applied and `user_version` back at 0, so the application's tools own it
/// again. A `user_version` set by anyone else, on a database without Stockroom's tables, is left
/// alone.
fn carry_over(conn: &Connection) -> rusqlite::Result<()> {
    let has_rows: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM stockroom_migrations)",
        [],
        |r| r.get(0),
    )?;
    let user_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if has_rows || user_version != 1 || !has_v1_objects(conn)? {
        return Ok(());
    }
    record(conn, &MIGRATIONS[0])?;
    conn.execute_batch("PRAGMA user_version = 0")?;
    tracing::info!(
        "sqlite: Stockroom's schema bookkeeping moved from user_version to stockroom_migrations"
    );
    Ok(())
}

fn has_v1_objects(conn: &Connection) -> rusqlite::Result<bool> {
    let placeholders = vec!["?"; V1_OBJECTS.len()].join(", ");
    let found: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM sqlite_master \
             WHERE type IN ('table', 'index') AND name IN ({placeholders})"
        ),
        params_from_iter(V1_OBJECTS),
        |r| r.get(0),
    )?;
    Ok(usize::try_from(found) == Ok(V1_OBJECTS.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_checksums_are_sha256_hex() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(MIGRATIONS[0].version, 1);
        let checksum = MIGRATIONS[0].checksum();
        assert_eq!(checksum.len(), 64);
        assert!(checksum
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // SHA-256 of the empty string, the standard test vector.
        let empty = Migration {
            version: 0,
            description: "",
            sql: "",
            then: None,
        };
        assert_eq!(
            empty.checksum(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn v1_objects_are_exactly_what_v1_creates() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap();
        let created: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut expected: Vec<String> = V1_OBJECTS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(created, expected);
    }

    #[test]
    fn migrating_twice_applies_once_and_leaves_user_version_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
        let catalog = Catalog::new(&[]).unwrap();
        migrate(&mut conn, &catalog).unwrap();
        migrate(&mut conn, &catalog).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM stockroom_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, MIGRATIONS.len() as i64);
        let user_version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(user_version, 7);
    }
}

#[cfg(test)]
mod refold_tests {
    use super::*;

    #[test]
    fn v2_makes_search_documents_again_with_the_current_folding() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        // A row as V1's builds stored it: lower-cased only.
        conn.execute(
            "INSERT INTO products (id, name, slug, sku, status, stock, created_at, updated_at, \
             version, search_text) VALUES (x'0123456789abcdef0123456789abcdef', 'Straße', 'strasse', 'ST-1', 'draft', 0, 0, \
             0, 1, 'straße\nst-1')",
            [],
        )
        .unwrap();
        conn.execute_batch(BOOKKEEPING).unwrap();
        record(&conn, &MIGRATIONS[0]).unwrap();
        migrate(&mut conn, &Catalog::new(&[]).unwrap()).unwrap();
        let stored: String = conn
            .query_row("SELECT search_text FROM products", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            stored,
            stockroom_core::adapter::search_document("Straße", "ST-1", None)
        );
        assert_eq!(stored, "strasse\nst-1");
    }
}

//! Stockroom's schema migrations, kept apart from the application's own sqlx migrations.
//!
//! sqlx's migrator keeps its bookkeeping in `_sqlx_migrations` and locks with a key derived
//! from the database name, so an application that runs its own sqlx migrations on the same
//! database would share both with Stockroom, and each migrator would refuse the other's
//! versions (`VersionMissing`). Stockroom's migrator keeps its rows in `stockroom_migrations`
//! and takes an advisory lock of its own instead.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{Acquire, PgConnection};
use stockroom_core::schema::Catalog;
use stockroom_core::{Error, Result};

use crate::engine::Engine;
use crate::error::map_error;

/// The table of Stockroom's applied migrations.
pub(crate) const TABLE: &str = "stockroom_migrations";

/// sqlx's default table, where Stockroom kept its rows before it had its own.
const SQLX_TABLE: &str = "_sqlx_migrations";

/// The key of Stockroom's session-level advisory lock: `stockroo` in ASCII. Advisory locks are
/// per database, so one fixed key serves every database; it is not the key sqlx derives for
/// its own migrator, so an application's migrator never waits for Stockroom's, nor the reverse.
pub(crate) const LOCK_KEY: i64 = 0x7374_6f63_6b72_6f6f;

/// Earlier texts of embedded migrations that built the same schema on PostgreSQL, as
/// `(version, SHA-384 of the earlier text)`: a database that recorded one of them is up to date,
/// and its row takes the current checksum. Only for edits PostgreSQL cannot tell apart (an index
/// column's `ASC`, its default, written out), never for a change of schema.
const EQUIVALENT_REVISIONS: &[(i64, &str)] = &[(
    20261125000001,
    "cf9f758972c523f04ebddcbd0d6153bcbc3595e61a2848fd3bc9dd2e5c3ec583829e0a766ddcbb22f379d7b87ec8b1f0",
)];

/// Whether `checksum` is an earlier text of migration `version` that built the same schema.
fn is_equivalent_revision(version: i64, checksum: &[u8]) -> bool {
    earlier_revisions().any(|(v, earlier)| v == version && earlier == checksum)
}

/// [`EQUIVALENT_REVISIONS`] with their checksums as bytes.
fn earlier_revisions() -> impl Iterator<Item = (i64, Vec<u8>)> {
    EQUIVALENT_REVISIONS.iter().map(|&(version, hex)| {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("a hex checksum"))
            .collect();
        (version, bytes)
    })
}

/// Every `(version, checksum)` Stockroom recognises as one of its migrations: the embedded
/// ones and their equivalent earlier revisions.
fn known_checksums() -> (Vec<i64>, Vec<Vec<u8>>) {
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.checksum.to_vec()))
        .chain(earlier_revisions())
        .unzip()
}

/// The schema, embedded at build time from `migrations/`. Only its migrations are used: they
/// are applied by [`apply_pending`], into [`TABLE`], under [`LOCK_KEY`].
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Moves Stockroom's rows (same version and checksum as an embedded migration) from sqlx's
/// table to Stockroom's, in one statement; the application's rows stay where they are.
const CARRY_OVER: &str = "WITH moved AS (\
    DELETE FROM _sqlx_migrations \
    WHERE (version, checksum) IN (SELECT * FROM UNNEST($1::bigint[], $2::bytea[])) \
    RETURNING version, description, installed_on, success, checksum, execution_time) \
    INSERT INTO stockroom_migrations \
    (version, description, installed_on, success, checksum, execution_time) \
    SELECT version, description, installed_on, success, checksum, execution_time FROM moved \
    ON CONFLICT (version) DO NOTHING";

/// Whether sqlx's table holds a row of Stockroom's (same version and checksum as an embedded
/// migration), that [`CARRY_OVER`] would move.
const ANY_TO_CARRY_OVER: &str = "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations \
    WHERE (version, checksum) IN (SELECT * FROM UNNEST($1::bigint[], $2::bytea[])))";

/// Applies the embedded migrations the database lacks, on `conn`, under Stockroom's advisory
/// lock, after carrying Stockroom's rows over from `_sqlx_migrations` (a database created
/// before Stockroom had a table of its own); then, under the same lock, creates, extends or
/// checks the tables of the application's entities of `catalog` (see [`crate::tables`]). The
/// wait for the lock, every lock the migrations take and every statement they run are exempt
/// from `lock_timeout` and `statement_timeout`; the session's own values are restored after.
///
/// On an error, or when this future is dropped (it may be waiting for the lock, which the
/// server would grant the session later), the session may hold the lock or the changed
/// setting: the caller must then close `conn`, never return it to a pool.
///
/// On an engine without advisory locks ([`Engine::has_advisory_locks`]) nothing serializes two
/// migrating processes: each migration commits with its bookkeeping row, so of two processes
/// applying the same one, the second fails (on the row's key, or on an object the first made);
/// it then looks again once, and finds the schema up to date.
pub(crate) async fn run(conn: &mut PgConnection, engine: Engine, catalog: &Catalog) -> Result<()> {
    let previous: (String, String) = sqlx::query_as(
        "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    sqlx::raw_sql("SET lock_timeout = 0; SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    let migrated = if engine.has_advisory_locks() {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        let migrated = migrate_locked(conn, catalog).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        migrated
    } else {
        match migrate_locked(conn, catalog).await {
            Ok(()) => Ok(()),
            Err(_) => migrate_locked(conn, catalog).await,
        }
    };
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
    )
    .bind(previous.0)
    .bind(previous.1)
    .execute(&mut *conn)
    .await
    .map_err(map_error)?;
    migrated
}

async fn migrate_locked(conn: &mut PgConnection, catalog: &Catalog) -> Result<()> {
    carry_over(conn).await?;
    apply_pending(conn).await.map_err(|e| match e {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => map_error(e),
        other => Error::backend("migration failed", other),
    })?;
    crate::tables::bring_up_to_date(conn, catalog).await
}

/// Applies the embedded migrations missing from [`TABLE`], with the checks of sqlx's
/// `Migrator::run`: no failed (dirty) migration, no applied version that is not embedded, no
/// applied migration whose checksum changed.
///
/// Written on sqlx's `Migrate` trait rather than calling `Migrator::run`: that one is generic
/// over `Acquire<'a>`, and awaited with a `&mut PgConnection` its future is `Send` for one
/// lifetime only, not for every one ("implementation of `Send` is not general enough"), which
/// made `connect`, `from_pool` and `migrate` (and the facade's `connect_with`) futures that
/// `tokio::spawn` refuses. The trait's methods return boxed `Send` futures.
async fn apply_pending(conn: &mut PgConnection) -> Result<(), MigrateError> {
    conn.ensure_migrations_table(TABLE).await?;
    if let Some(version) = conn.dirty_version(TABLE).await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied: HashMap<i64, Cow<'static, [u8]>> = conn
        .list_applied_migrations(TABLE)
        .await?
        .into_iter()
        .map(|m| (m.version, m.checksum))
        .collect();
    if let Some(&unknown) = applied.keys().find(|v| !MIGRATOR.version_exists(**v)) {
        return Err(MigrateError::VersionMissing(unknown));
    }
    for migration in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match applied.get(&migration.version) {
            Some(checksum) if is_equivalent_revision(migration.version, checksum) => {
                sqlx::query("UPDATE stockroom_migrations SET checksum = $1 WHERE version = $2")
                    .bind(&*migration.checksum)
                    .bind(migration.version)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(checksum) if *checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => {
                if migration.version == REFOLD_VERSION {
                    refold_search_text(conn).await?;
                }
                conn.apply(TABLE, migration).await?;
            }
        }
    }
    Ok(())
}

/// The migration that records that every product's search document was made again with the
/// core's current folding. The refold runs right before the migration is recorded, so a process
/// that dies in between leaves it pending, and the next connect refolds again (it is idempotent).
const REFOLD_VERSION: i64 = 20261201000001;

/// Rows read and written per statement of the refold.
const REFOLD_BATCH: i64 = 1_000;

/// Makes every product's `search_text` again with `stockroom_core::adapter::search_document`, in
/// batches in id order: one read and one `UPDATE … FROM UNNEST` per batch.
async fn refold_search_text(conn: &mut PgConnection) -> Result<(), MigrateError> {
    let mut after = uuid::Uuid::nil();
    loop {
        let rows: Vec<(uuid::Uuid, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, name, sku, description FROM products WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(REFOLD_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.0;
        let (ids, documents): (Vec<uuid::Uuid>, Vec<String>) = rows
            .iter()
            .map(|(id, name, sku, description)| {
                let document =
                    stockroom_core::adapter::search_document(name, sku, description.as_deref());
                (*id, document)
            })
            .unzip();
        sqlx::query(
            "UPDATE products SET search_text = d.document \
             FROM UNNEST($1::uuid[], $2::text[]) AS d(id, document) WHERE products.id = d.id",
        )
        .bind(ids)
        .bind(documents)
        .execute(&mut *conn)
        .await?;
    }
}

/// Carries Stockroom's rows over from `_sqlx_migrations` into [`TABLE`] (created if needed),
/// in one transaction, when there are any; the caller holds the lock. Without any, sqlx's
/// table is only read. Only rows whose version and checksum are
/// those of an embedded migration move, so an application's migration is never taken for
/// Stockroom's, and the application's sqlx migrator no longer meets versions it does not know.
async fn carry_over(conn: &mut PgConnection) -> Result<()> {
    let legacy: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(SQLX_TABLE)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_error)?;
    if !legacy {
        return Ok(());
    }
    let (versions, checksums) = known_checksums();
    // Read first: an application's role may be refused `DELETE` on its own table, and with
    // nothing of Stockroom's there (the case at every connect once the rows have moved), it
    // must not fail for a delete that would delete nothing.
    let any: bool = sqlx::query_scalar(ANY_TO_CARRY_OVER)
        .bind(&versions)
        .bind(&checksums)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_error)?;
    if !any {
        return Ok(());
    }
    let mut tx = conn.begin().await.map_err(map_error)?;
    tx.ensure_migrations_table(TABLE)
        .await
        .map_err(|e| Error::backend("creating stockroom_migrations failed", e))?;
    let moved = sqlx::query(CARRY_OVER)
        .bind(versions)
        .bind(checksums)
        .execute(&mut *tx)
        .await
        .map_err(map_error)?
        .rows_affected();
    tx.commit().await.map_err(map_error)?;
    if moved > 0 {
        tracing::info!(
            target: "stockroom::sql",
            moved,
            "moved Stockroom's migration rows from _sqlx_migrations to stockroom_migrations"
        );
    }
    Ok(())
}

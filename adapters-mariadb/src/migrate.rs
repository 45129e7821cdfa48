//! Stockroom's schema on MariaDB: its embedded migrations (the tables no entity declares:
//! `stockroom_entities`, the ledger, the outbox), kept apart from the application's own sqlx
//! migrations, then the tables of every entity, made from their declarations
//! ([`crate::tables`]).
//!
//! sqlx's migrator keeps its bookkeeping in `_sqlx_migrations` and takes a named lock derived
//! from the database's name, so an application that runs its own sqlx migrations on the same
//! database would share both with Stockroom, and each migrator would refuse the other's
//! versions. Stockroom's migrator keeps its rows in `stockroom_migrations` and takes a named
//! lock of its own (`GET_LOCK('stockroom_migrations')`), so the two never meet.
//!
//! **No transactional DDL.** MariaDB commits every DDL statement by itself, so a migration
//! cannot be applied and recorded in one transaction as on PostgreSQL. Instead a migration is
//! recorded only after all of it ran, and every statement of every migration is written to be
//! harmless when it already took effect (`CREATE TABLE IF NOT EXISTS`, `INSERT IGNORE`, …; the
//! rules are in `migrations/README.md`): a process that dies half-way leaves the migration
//! unrecorded, and the next connect runs all of it again. The entities' tables follow the same
//! principle (see [`crate::tables`]).
//!
//! **Galera.** A named lock is the node's, not the cluster's (MariaDB before 10.4.31/10.11.5
//! refuses `GET_LOCK` on a cluster node outright): two processes migrating through two nodes
//! are not kept apart. Every step being harmless to repeat, the only failures they can cause
//! each other are a step the other did in between (a table made, 1050; a column added, 1060)
//! or a certification conflict (1213); on a cluster node a failed run is therefore run again
//! (a few times, see [`UNLOCKED_ATTEMPTS`]), each run doing what is left.

use std::collections::HashMap;

use sqlx::migrate::Migrator;
use sqlx::mysql::MySqlDatabaseError;
use sqlx::MySqlConnection;
use stockroom_core::schema::Catalog;
use stockroom_core::{Error, Result};

use crate::error::map_error;
use crate::tables::checksum;

/// The name of Stockroom's migration lock (a named lock is per server, not per database, so
/// every database of a server shares it: migrations of two databases wait for each other,
/// which costs a wait at connect and nothing else). Not the name sqlx derives for its own
/// migrator, so an application's migrator never waits for Stockroom's, nor the reverse.
pub(crate) const LOCK: &str = "stockroom_migrations";

/// How long `GET_LOCK` waits, in seconds: a year, i.e. until the holder is done. MariaDB
/// refuses a negative timeout (it returns `NULL` with a warning), so there is no "forever"; the
/// caller bounds the whole migration with its own timeout and closes the connection, which
/// ends the wait, when it gives up.
const LOCK_WAIT_SECONDS: i64 = 365 * 24 * 60 * 60;

/// MariaDB's error for a feature the server refuses: `GET_LOCK` on a Galera node before
/// MariaDB 10.4.31/10.11.5 ("GET_LOCK in cluster (WSREP_ON=ON)").
const ER_NOT_SUPPORTED_YET: u16 = 1235;

/// Whether the server is a node of a Galera cluster (1), or not (0).
const WSREP_ON: &str = "SELECT @@wsrep_on";

/// How many times the migrations run, at most, when no server-wide lock keeps other migrators
/// out (a Galera cluster): each collision with another migrator is a step that one of them did,
/// so the attempts run out only for an error that is not a collision.
const UNLOCKED_ATTEMPTS: u32 = 8;

/// The wait before the next attempt, times the attempts so far: the colliding migrators drift
/// apart.
const UNLOCKED_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

/// The `sql_mode` the migrations run in, whatever the session's: strict (a value that does not
/// fit is an error, never cut), no silent change of engine, and none of the modes that change
/// how our DDL reads (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`: literals are escaped for this
/// mode, see [`crate::tables`]).
const SQL_MODE: &str = "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

/// The schema, embedded at build time from `migrations/`. Only its migrations are used (sqlx's
/// runner is not): they are applied by [`apply_pending`], into `stockroom_migrations`, under [`LOCK`].
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Whether `stockroom_migrations` exists in the current database.
const HAS_TABLE: &str = "SELECT COUNT(*) FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'stockroom_migrations'";

/// `stockroom_migrations`: one row per applied migration.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS `stockroom_migrations` (\
     `version` BIGINT NOT NULL, \
     `description` VARCHAR(255) NOT NULL, \
     `checksum` CHAR(64) NOT NULL, \
     `applied_at` DATETIME(6) NOT NULL, \
     PRIMARY KEY (`version`)) \
     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Records an applied migration; a row already there (another node's migrator recorded it
/// meanwhile) is left as it is.
const RECORD: &str = "INSERT INTO `stockroom_migrations` \
     (`version`, `description`, `checksum`, `applied_at`) VALUES (?, ?, ?, UTC_TIMESTAMP(6)) \
     ON DUPLICATE KEY UPDATE `version` = `version`";

/// How far Stockroom's migration lock keeps other migrators out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Held on a single server: no other migrator runs.
    Server,
    /// Held on one node of a Galera cluster: migrators on other nodes may run.
    Node,
    /// Refused by the server (an older Galera node): nothing keeps migrators apart.
    None,
}

/// One of Stockroom's embedded migrations.
struct Embedded {
    /// Its version, the number its file name starts with.
    version: i64,
    /// The rest of its file name (`entities`).
    description: String,
    /// Its statements.
    sql: sqlx::SqlStr,
    /// The SHA-256 of its text, in lower-case hex.
    checksum: String,
}

/// The embedded migrations, in version order.
fn embedded() -> Vec<Embedded> {
    let mut all: Vec<Embedded> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Embedded {
            version: m.version,
            description: m.description.to_string(),
            checksum: checksum(m.sql.as_str()),
            sql: m.sql.clone(),
        })
        .collect();
    all.sort_by_key(|m| m.version);
    all
}

/// Applies the embedded migrations the database lacks, on `conn`, under Stockroom's named
/// lock; then, under the same lock, creates, extends or checks the tables of every entity of
/// `catalog`, Stockroom's and the application's (see [`crate::tables::bring_up_to_date`]).
/// The session's `sql_mode` and `max_statement_time` are set for the migrations (strict; no
/// statement time limit: the wait for the lock and a large table's change may take long) and
/// restored after.
///
/// On an error, or when this future is dropped (it may be waiting for the lock, which the
/// server would grant the session later, or be between two statements with the lock held), the
/// session may hold the lock or the changed settings: the caller must then close `conn`, never
/// return it to a pool. Closing the connection releases the lock.
///
/// Each step commits by itself (MariaDB has no transactional DDL), and each is written so that
/// a process that dies between two leaves a database the next call finishes; see the
/// [module's docs](self).
pub(crate) async fn migrate(conn: &mut MySqlConnection, catalog: &Catalog) -> Result<()> {
    let db = |e| map_error(e, catalog);
    let (sql_mode, max_statement_time): (String, f64) =
        sqlx::query_as("SELECT @@SESSION.sql_mode, @@SESSION.max_statement_time")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    sqlx::query("SET SESSION sql_mode = ?, max_statement_time = 0")
        .bind(SQL_MODE)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let lock = acquire(conn, catalog).await?;
    let migrated = migrate_under(conn, catalog, lock).await;
    if lock != Lock::None {
        let released = sqlx::query_scalar::<_, Option<i64>>("SELECT RELEASE_LOCK(?)")
            .bind(LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(db);
        if let Err(e) = released {
            return migrated.and(Err(e));
        }
    }
    sqlx::query("SET SESSION sql_mode = ?, max_statement_time = ?")
        .bind(sql_mode)
        .bind(max_statement_time)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    migrated
}

/// Takes Stockroom's migration lock, waiting for another migrator to finish, and says how far
/// it keeps others out.
async fn acquire(conn: &mut MySqlConnection, catalog: &Catalog) -> Result<Lock> {
    let got: Option<i64> = match sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(LOCK)
        .bind(LOCK_WAIT_SECONDS)
        .fetch_one(&mut *conn)
        .await
    {
        Ok(got) => got,
        Err(e) if error_number(&e) == Some(ER_NOT_SUPPORTED_YET) => {
            tracing::info!(
                target: "stockroom::sql",
                "GET_LOCK is refused on this cluster node: migrating without a lock"
            );
            return Ok(Lock::None);
        }
        Err(e) => return Err(map_error(e, catalog)),
    };
    if got != Some(1) {
        return Err(Error::backend_message(format!(
            "GET_LOCK('{LOCK}') was not granted (it returned {got:?})"
        )));
    }
    // `wsrep_on` exists on MariaDB's builds with Galera; a server without it is no cluster.
    let cluster: Option<i64> = sqlx::query_scalar(WSREP_ON)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or(None);
    Ok(if cluster == Some(1) {
        Lock::Node
    } else {
        Lock::Server
    })
}

/// The server's error number of `e`, if it is the server's error.
fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// The migrations, on `conn`, which holds Stockroom's lock as `lock` says. Without a
/// server-wide lock, another node's migrator may have done some of the work meanwhile, and
/// collided with this one (see the module's docs): a failed run is then run again, each run
/// reading the schema again and doing what is left. A declaration that does not match its
/// table ([`Error::Schema`]) is not run again: it will not change.
async fn migrate_under(conn: &mut MySqlConnection, catalog: &Catalog, lock: Lock) -> Result<()> {
    let mut attempt = 1;
    loop {
        let migrated = migrate_locked(conn, catalog).await;
        match migrated {
            Err(e)
                if lock != Lock::Server
                    && attempt < UNLOCKED_ATTEMPTS
                    && !matches!(e, Error::Schema { .. }) =>
            {
                tracing::info!(
                    target: "stockroom::sql",
                    error = %e,
                    attempt,
                    "migrating without a server-wide lock failed; running the migrations again"
                );
                tokio::time::sleep(UNLOCKED_BACKOFF * attempt).await;
                attempt += 1;
            }
            migrated => return migrated,
        }
    }
}

/// One run of the migrations: the embedded ones, then the entities' tables.
async fn migrate_locked(conn: &mut MySqlConnection, catalog: &Catalog) -> Result<()> {
    apply_pending(conn, catalog).await?;
    crate::tables::bring_up_to_date(conn, catalog).await
}

/// Applies the embedded migrations missing from `stockroom_migrations` (created if needed), in
/// version order, each recorded once all of it ran; with the checks of sqlx's runner: no
/// applied version that is not embedded (a newer Stockroom migrated this database), no applied
/// migration whose text changed.
async fn apply_pending(conn: &mut MySqlConnection, catalog: &Catalog) -> Result<()> {
    let db = |e| map_error(e, catalog);
    // Read first: `CREATE TABLE IF NOT EXISTS` is DDL even when the table is there (a metadata
    // lock, and on a Galera cluster a statement every node runs in total order).
    let exists: i64 = sqlx::query_scalar(HAS_TABLE)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if exists == 0 {
        sqlx::raw_sql(CREATE_TABLE)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let applied: HashMap<i64, String> =
        sqlx::query_as("SELECT `version`, `checksum` FROM `stockroom_migrations`")
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?
            .into_iter()
            .collect();
    let embedded = embedded();
    if let Some(unknown) = applied
        .keys()
        .filter(|v| !embedded.iter().any(|m| m.version == **v))
        .min()
    {
        return Err(Error::backend_message(format!(
            "stockroom_migrations records migration {unknown}, which this build of Stockroom \
             does not have: a newer Stockroom migrated this database"
        )));
    }
    for migration in &embedded {
        match applied.get(&migration.version) {
            Some(recorded) if *recorded != migration.checksum => {
                return Err(Error::backend_message(format!(
                    "migration {} ({}) was applied with another text than this build's \
                     (checksum {recorded}, now {})",
                    migration.version, migration.description, migration.checksum
                )));
            }
            Some(_) => {}
            None => apply(conn, catalog, migration).await?,
        }
    }
    Ok(())
}

/// Runs `migration` (all its statements, sent as one multi-statement query), then records it.
async fn apply(conn: &mut MySqlConnection, catalog: &Catalog, migration: &Embedded) -> Result<()> {
    let started = std::time::Instant::now();
    sqlx::raw_sql(migration.sql.clone())
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            tracing::warn!(
                target: "stockroom::sql",
                version = migration.version,
                description = %migration.description,
                error = %e,
                "a migration failed"
            );
            map_error(e, catalog)
        })?;
    sqlx::query(RECORD)
        .bind(migration.version)
        .bind(&migration.description)
        .bind(&migration.checksum)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_error(e, catalog))?;
    tracing::info!(
        target: "stockroom::sql",
        version = migration.version,
        description = %migration.description,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "applied a migration"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;

    /// Migrators without a server-wide lock (as through several Galera nodes, whose named locks
    /// are each node's own) collide on the same steps; each runs again until the work is done,
    /// and every one of them succeeds. Here four of them, at once, on one server.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn migrators_without_a_common_lock_each_finish() {
        let Some(db) = crate::testing::TestDatabase::create().await else {
            return;
        };
        let catalog = std::sync::Arc::new(Catalog::new(&[]).unwrap());
        let runs = (0..4).map(|_| {
            let (db, catalog) = (db.clone(), std::sync::Arc::clone(&catalog));
            tokio::spawn(async move {
                let mut conn = db.connect().await;
                sqlx::query("SET SESSION sql_mode = ?")
                    .bind(SQL_MODE)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let migrated = migrate_under(&mut conn, &catalog, Lock::None).await;
                let _ = conn.close().await;
                migrated
            })
        });
        let results = futures_util::future::join_all(runs).await;
        let mut conn = db.connect().await;
        let recorded: Vec<String> = sqlx::query_scalar(
            "SELECT `table_name` FROM `stockroom_entities` ORDER BY `table_name`",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT `version` FROM `stockroom_migrations` ORDER BY `version`")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let _ = conn.close().await;
        db.drop_now().await;
        for result in results {
            result.unwrap().expect("every migrator finishes");
        }
        assert_eq!(recorded, ["categories", "products", "reviews", "users"]);
        let embedded: Vec<i64> = embedded().iter().map(|m| m.version).collect();
        assert_eq!(versions, embedded);
    }

    /// After the migrations the connection holds no lock and has its own settings back, so a
    /// caller could go on using it (the store closes it anyway).
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lock_is_released_and_the_settings_restored() {
        let Some(db) = crate::testing::TestDatabase::create().await else {
            return;
        };
        let mut conn = db.connect().await;
        sqlx::raw_sql(
            "SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES', max_statement_time = 2.5",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let catalog = Catalog::new(&[]).unwrap();
        migrate(&mut conn, &catalog).await.unwrap();
        let wsrep_on: Option<i64> = sqlx::query_scalar(WSREP_ON)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let after: (Option<i64>, String, f64) = sqlx::query_as(
            "SELECT IS_USED_LOCK(?) = CONNECTION_ID(), @@SESSION.sql_mode, \
             @@SESSION.max_statement_time",
        )
        .bind(LOCK)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
        db.drop_now().await;
        assert_ne!(after.0, Some(1), "the lock is released");
        assert_eq!(after.1, "ANSI_QUOTES,NO_BACKSLASH_ESCAPES");
        assert_eq!(after.2, 2.5);
        // What tells a Galera node from a single server reads as a number (else a node would
        // be taken for a single server, and would not run the migrations again).
        assert_eq!(wsrep_on, Some(0), "the test server is no cluster node");
    }

    #[test]
    fn the_migrations_are_embedded_in_order_with_their_checksums() {
        let all = embedded();
        assert!(!all.is_empty());
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        let first = &all[0];
        assert_eq!((first.version, first.description.as_str()), (1, "entities"));
        assert_eq!(first.checksum, checksum(first.sql.as_str()));
        assert_eq!(first.checksum.len(), 64);
    }

    /// Every file of `migrations/` is a migration of the form `<version>_<description>.sql`
    /// (or the README), so that a file named otherwise is not silently left out; and every
    /// statement that makes something says `IF NOT EXISTS` (a migration runs again in full
    /// after a process died half-way, see the module's docs).
    #[test]
    fn every_migration_can_run_again() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files = 0;
        for file in std::fs::read_dir(folder).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name == "README.md" {
                continue;
            }
            let version = name.split('_').next().unwrap();
            assert!(
                name.ends_with(".sql") && version.parse::<i64>().is_ok(),
                "{name} is not <version>_<description>.sql"
            );
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for statement in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let words: Vec<&str> = statement.split_whitespace().collect();
                let makes = matches!(words.as_slice(), ["CREATE", ..] | ["ALTER", ..]);
                let inserts = words.first() == Some(&"INSERT");
                assert!(
                    !makes
                        || statement.contains("IF NOT EXISTS")
                        || statement.contains("IF EXISTS"),
                    "{name}: a statement that cannot run twice: {statement}"
                );
                assert!(
                    !inserts || words.get(1) == Some(&"IGNORE"),
                    "{name}: an INSERT that cannot run twice (INSERT IGNORE): {statement}"
                );
            }
        }
        assert_eq!(files, embedded().len(), "every migration file is embedded");
    }
}

//! What a real MariaDB answers, provoked one error at a time, maps onto Stockroom's error as
//! `stockroom_mariadb::classify` (the mapping of the store's own statements) says. The tables
//! are made here by hand, with the names the adapter gives them (`<table>_<field>_fk`,
//! `<table>_<field>_check`, a rule's index on generated `_live_` columns), so what is tested is
//! MariaDB's messages against the mapping, whatever the rest of the adapter does.
//!
//! Each test makes and drops its own database; without MariaDB they are skipped (see
//! `support`).

mod support;

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, MySqlConnection};
use stockroom_core::{
    BackendCode, Constraint, Entity, EntityKind, Error, Product, Rule, StorageFault,
};
use stockroom_mariadb::classify;
use support::{connection_id, until_a_session_waits_for_a_lock, TestDatabase};

/// The product's unique index on `field`, as its declaration names it.
fn product_index(field: &str) -> &'static str {
    Product::schema()
        .unique
        .iter()
        .find(|u| u.fields == [field])
        .map(|u| u.index)
        .expect("a unique rule on the field")
}

/// The tables of these tests: `categories`, `products` (a unique sku among live rows, a
/// reference to a category, CHECKs on stock and status), the ledger's idempotency key, and an
/// application's `orders` referring to products.
async fn tables(conn: &mut MySqlConnection) {
    let sku = product_index("sku");
    let ddl = format!(
        "CREATE TABLE `categories` (`id` BINARY(16) NOT NULL PRIMARY KEY) \
           ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin; \
         CREATE TABLE `products` ( \
           `id` BINARY(16) NOT NULL PRIMARY KEY, \
           `sku` VARCHAR(64) NOT NULL, \
           `status` VARCHAR(255) NOT NULL DEFAULT 'draft', \
           `stock` BIGINT NOT NULL DEFAULT 0, \
           `category_id` BINARY(16) NULL, \
           `deleted_at` DATETIME(6) NULL, \
           `_live_{sku}_0` VARCHAR(64) AS (IF(`deleted_at` IS NULL, `sku`, NULL)) VIRTUAL, \
           UNIQUE KEY `{sku}` (`_live_{sku}_0`), \
           CONSTRAINT `products_category_id_fk` FOREIGN KEY (`category_id`) \
             REFERENCES `categories` (`id`) ON DELETE SET NULL, \
           CONSTRAINT `products_stock_check` CHECK (`stock` BETWEEN 0 AND 1000000000000), \
           CONSTRAINT `products_status_check` CHECK (`status` IN ('draft', 'active', 'archived')) \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin; \
         CREATE TABLE `stock_movements` ( \
           `id` BINARY(16) NOT NULL PRIMARY KEY, \
           `idempotency_key` VARCHAR(255) NULL, \
           UNIQUE KEY `stock_movements_idempotency_key` (`idempotency_key`) \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin; \
         CREATE TABLE `orders` ( \
           `id` BIGINT NOT NULL PRIMARY KEY, \
           `product_id` BINARY(16) NOT NULL, \
           CONSTRAINT `orders_product_fk` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) \
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin; \
         CREATE TABLE `counters` (`id` INT NOT NULL PRIMARY KEY, `n` INT NOT NULL) ENGINE=InnoDB; \
         INSERT INTO `counters` VALUES (1, 0), (2, 0);"
    );
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(conn)
        .await
        .expect("the tables");
}

/// A database with [`tables`], and a connection to it; `None` without MariaDB.
async fn setup() -> Option<(TestDatabase, MySqlConnection)> {
    let db = TestDatabase::create().await?;
    let mut conn = db.connect().await;
    tables(&mut conn).await;
    Some((db, conn))
}

/// Runs `sql` (statements of the test's own) on `conn`, expecting it to fail, and maps the
/// error as the store would.
async fn refused(conn: &mut MySqlConnection, sql: &str) -> Error {
    let e = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .expect_err(sql);
    classify(e)
}

/// Runs `sql` on `conn`, which must succeed.
async fn run(conn: &mut MySqlConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One number `sql` selects (a signed `BIGINT`: cast what is not one).
async fn number(conn: &mut MySqlConnection, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Waits until the session `id` runs a statement that starts with `prefix` (at most ten
/// seconds), so that a test interrupts it mid-statement, not before it began. (`Execute` is a
/// prepared statement's command: sqlx's queries with arguments; `Query` is `raw_sql`'s.)
async fn until_running(admin: &mut MySqlConnection, id: i64, prefix: &str) {
    for _ in 0..1_000 {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM `information_schema`.`PROCESSLIST` \
             WHERE `ID` = ? AND `COMMAND` IN ('Query', 'Execute') AND `INFO` LIKE CONCAT(?, '%')",
        )
        .bind(id)
        .bind(prefix)
        .fetch_one(&mut *admin)
        .await
        .unwrap();
        if running > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session {id} did not run `{prefix}…` within ten seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violations_name_the_rule_the_entity_and_the_field() {
    let Some((db, mut conn)) = setup().await else {
        return;
    };
    run(
        &mut conn,
        "INSERT INTO `categories` VALUES (UNHEX('0A000000000000000000000000000000')); \
         INSERT INTO `products` (`id`, `sku`, `category_id`) VALUES (UNHEX('01000000000000000000000000000000'), 'SKU-1', UNHEX('0A000000000000000000000000000000'))",
    )
    .await;

    // A live duplicate of a unique rule: the rule, by the index MariaDB names.
    let taken = refused(
        &mut conn,
        "INSERT INTO `products` (`id`, `sku`) VALUES (UNHEX('02000000000000000000000000000000'), 'SKU-1')",
    )
    .await;
    assert!(
        matches!(taken, Error::Conflict { constraint } if constraint == Constraint::PRODUCT_SKU),
        "{taken:?}"
    );
    // A value that spells another index's name does not mislead the mapping.
    let slug_index = product_index("slug");
    run(
        &mut conn,
        &format!("UPDATE `products` SET `sku` = '{slug_index}' WHERE `id` = UNHEX('01000000000000000000000000000000')"),
    )
    .await;
    let tricky = refused(
        &mut conn,
        &format!("INSERT INTO `products` (`id`, `sku`) VALUES (UNHEX('02000000000000000000000000000000'), '{slug_index}')"),
    )
    .await;
    assert!(
        matches!(tricky, Error::Conflict { constraint } if constraint == Constraint::PRODUCT_SKU),
        "{tricky:?}"
    );
    // A soft-deleted row holds its value no more.
    run(
        &mut conn,
        "UPDATE `products` SET `deleted_at` = UTC_TIMESTAMP(6) WHERE `id` = UNHEX('01000000000000000000000000000000')",
    )
    .await;
    run(
        &mut conn,
        &format!("INSERT INTO `products` (`id`, `sku`) VALUES (UNHEX('02000000000000000000000000000000'), '{slug_index}')"),
    )
    .await;

    // The key `PRIMARY` names no table: without the statement's table (which the store's
    // writes pass), it stays a backend error that names the key.
    let primary = refused(
        &mut conn,
        "INSERT INTO `products` (`id`, `sku`) VALUES (UNHEX('01000000000000000000000000000000'), 'SKU-9')",
    )
    .await;
    assert!(
        matches!(&primary, Error::Backend { message, .. } if message.contains("`PRIMARY`")),
        "{primary:?}"
    );
    assert_eq!(primary.code(), Some(&BackendCode::MariaDb(1062)));

    // The ledger's idempotency key.
    run(
        &mut conn,
        "INSERT INTO `stock_movements` VALUES (UNHEX('01000000000000000000000000000000'), 'order-7')",
    )
    .await;
    let again = refused(
        &mut conn,
        "INSERT INTO `stock_movements` VALUES (UNHEX('02000000000000000000000000000000'), 'order-7')",
    )
    .await;
    assert!(
        matches!(again, Error::Conflict { constraint } if constraint == Constraint::IDEMPOTENCY_KEY),
        "{again:?}"
    );

    // A reference to a row that does not exist: NotFound of the entity referred to.
    let missing = refused(
        &mut conn,
        "INSERT INTO `products` (`id`, `sku`, `category_id`) VALUES (UNHEX('03000000000000000000000000000000'), 'SKU-3', UNHEX('0B000000000000000000000000000000'))",
    )
    .await;
    assert!(
        matches!(missing, Error::NotFound { entity, .. } if entity == EntityKind::CATEGORY),
        "{missing:?}"
    );

    // A delete another table's foreign key refuses: Referenced, naming that table.
    run(
        &mut conn,
        "INSERT INTO `orders` VALUES (1, UNHEX('02000000000000000000000000000000'))",
    )
    .await;
    let kept = refused(
        &mut conn,
        "DELETE FROM `products` WHERE `id` = UNHEX('02000000000000000000000000000000')",
    )
    .await;
    match &kept {
        Error::Referenced { entity, table, .. } => {
            assert_eq!((*entity, table.as_str()), (EntityKind::PRODUCT, "orders"));
        }
        other => panic!("{other:?}"),
    }

    // CHECKs: the field, and its rule.
    let negative = refused(
        &mut conn,
        "UPDATE `products` SET `stock` = -1 WHERE `id` = UNHEX('02000000000000000000000000000000')",
    )
    .await;
    match negative {
        Error::Validation { field, rule } => {
            assert_eq!(field, "stock");
            assert!(matches!(rule, Rule::OutOfRange { min: 0, .. }), "{rule:?}");
        }
        other => panic!("{other:?}"),
    }
    let unknown = refused(
        &mut conn,
        "UPDATE `products` SET `status` = 'lost' WHERE `id` = UNHEX('02000000000000000000000000000000')",
    )
    .await;
    assert!(
        matches!(
            unknown,
            Error::Validation {
                field: "status",
                rule: Rule::Malformed { .. }
            }
        ),
        "{unknown:?}"
    );
    let _ = conn.close().await;
    db.drop_now().await;
}

/// Two transactions that lock two rows in opposite orders: InnoDB rolls one back (1213), which
/// is `Transient`, and the other goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_transient_and_the_victims_transaction_is_gone() {
    let Some((db, mut a)) = setup().await else {
        return;
    };
    let mut b = db.connect().await;
    run(
        &mut a,
        "START TRANSACTION; UPDATE `counters` SET `n` = `n` + 1 WHERE `id` = 1",
    )
    .await;
    run(
        &mut b,
        "START TRANSACTION; UPDATE `counters` SET `n` = `n` + 1 WHERE `id` = 2",
    )
    .await;
    // `a` waits for `b`'s row…
    let waiting = tokio::spawn(async move {
        let outcome = sqlx::raw_sql("UPDATE `counters` SET `n` = `n` + 1 WHERE `id` = 2")
            .execute(&mut a)
            .await;
        (a, outcome)
    });
    until_a_session_waits_for_a_lock(db.name()).await;
    // …and `b` for `a`'s: one of them is the victim.
    let b_outcome = sqlx::raw_sql("UPDATE `counters` SET `n` = `n` + 1 WHERE `id` = 1")
        .execute(&mut b)
        .await;
    let (a, a_outcome) = waiting.await.unwrap();
    let (mut victim, mut survivor, error) = match (a_outcome, b_outcome) {
        (Err(e), Ok(_)) => (a, b, e),
        (Ok(_), Err(e)) => (b, a, e),
        other => panic!("exactly one transaction is the victim: {other:?}"),
    };
    let code = error
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    let mapped = classify(error);
    assert!(mapped.is_transient(), "{mapped:?}");
    assert_eq!(code.as_deref(), Some("40001"));
    assert_eq!(mapped.code(), Some(&BackendCode::MariaDb(1213)));
    // The victim's whole transaction was rolled back, its first update too: it is in none.
    assert_eq!(
        number(&mut victim, "SELECT CAST(@@in_transaction AS SIGNED)").await,
        0
    );
    run(&mut survivor, "COMMIT").await;
    assert_eq!(
        number(
            &mut victim,
            "SELECT CAST(SUM(`n`) AS SIGNED) FROM `counters`"
        )
        .await,
        2,
        "the survivor's two updates, none of the victim's"
    );
    let _ = victim.close().await;
    let _ = survivor.close().await;
    db.drop_now().await;
}

/// A lock wait that times out (1205) is `Transient`, and it rolls back the statement only: the
/// transaction goes on and commits what it did before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_timeout_is_transient_and_the_transaction_goes_on() {
    let Some((db, mut holder)) = setup().await else {
        return;
    };
    let mut waiter = db.connect().await;
    run(
        &mut holder,
        "START TRANSACTION; UPDATE `counters` SET `n` = 100 WHERE `id` = 1",
    )
    .await;
    run(
        &mut waiter,
        "SET SESSION `innodb_lock_wait_timeout` = 1; START TRANSACTION; \
         UPDATE `counters` SET `n` = 5 WHERE `id` = 2",
    )
    .await;
    let timed_out = refused(&mut waiter, "UPDATE `counters` SET `n` = 7 WHERE `id` = 1").await;
    assert!(timed_out.is_transient(), "{timed_out:?}");
    assert_eq!(
        number(&mut waiter, "SELECT CAST(@@in_transaction AS SIGNED)").await,
        1
    );
    run(&mut waiter, "COMMIT").await;
    run(&mut holder, "ROLLBACK").await;
    assert_eq!(
        number(&mut holder, "SELECT `n` FROM `counters` WHERE `id` = 2").await,
        5,
        "the waiter's earlier write committed"
    );
    let _ = holder.close().await;
    let _ = waiter.close().await;
    db.drop_now().await;
}

/// A statement over `max_statement_time` (1969), or one another session interrupts with `KILL
/// QUERY` (1317), is `Transient`; the transaction goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_statements_are_transient() {
    let Some((db, mut conn)) = setup().await else {
        return;
    };
    run(
        &mut conn,
        "START TRANSACTION; UPDATE `counters` SET `n` = 3 WHERE `id` = 1; \
         SET SESSION `max_statement_time` = 0.05",
    )
    .await;
    let slow = refused(&mut conn, "SELECT SLEEP(2)").await;
    assert!(slow.is_transient(), "{slow:?}");
    assert_eq!(slow.code(), Some(&BackendCode::MariaDb(1969)));
    run(&mut conn, "SET SESSION `max_statement_time` = 0").await;
    assert_eq!(
        number(&mut conn, "SELECT CAST(@@in_transaction AS SIGNED)").await,
        1
    );

    let id = connection_id(&mut conn).await;
    let mut admin = support::admin().await;
    let killer = tokio::spawn(async move {
        until_running(&mut admin, id, "SELECT COUNT(*)").await;
        run(&mut admin, &format!("KILL QUERY {id}")).await;
        admin
    });
    // SLEEP ends early without an error when interrupted; a statement that reads rows fails.
    let interrupted = sqlx::raw_sql(
        "SELECT COUNT(*) FROM `information_schema`.`COLUMNS` AS `a`, \
         `information_schema`.`COLUMNS` AS `b`, `information_schema`.`COLUMNS` AS `c`",
    )
    .execute(&mut conn)
    .await
    .expect_err("KILL QUERY interrupts the statement");
    let mut admin = killer.await.unwrap();
    let number_of = interrupted
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|d| d.number());
    assert_eq!(number_of, Some(1317), "{interrupted:?}");
    let interrupted = classify(interrupted);
    assert!(interrupted.is_transient(), "{interrupted:?}");
    // The transaction and its write survive both.
    run(&mut conn, "COMMIT").await;
    assert_eq!(
        number(
            &mut admin,
            &format!("SELECT `n` FROM `{}`.`counters` WHERE `id` = 1", db.name())
        )
        .await,
        3
    );
    let _ = admin.close().await;
    let _ = conn.close().await;
    db.drop_now().await;
}

/// A write in a read-only transaction (1792) is a `Storage` fault, `ReadOnly`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_read_only_transaction_is_a_read_only_storage_fault() {
    let Some((db, mut conn)) = setup().await else {
        return;
    };
    run(
        &mut conn,
        "SET SESSION TRANSACTION READ ONLY; START TRANSACTION",
    )
    .await;
    let refused = refused(&mut conn, "UPDATE `counters` SET `n` = 1 WHERE `id` = 1").await;
    match &refused {
        Error::Storage { fault, .. } => assert_eq!(*fault, StorageFault::ReadOnly),
        other => panic!("{other:?}"),
    }
    assert_eq!(refused.code(), Some(&BackendCode::MariaDb(1792)));
    assert!(refused.is_permanent());
    let _ = conn.close().await;
    db.drop_now().await;
}

/// A connection another session kills (`KILL CONNECTION`) is `Unavailable`, whether it was idle
/// or running a statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_unavailable() {
    let Some((db, mut idle)) = setup().await else {
        return;
    };
    let mut admin = support::admin().await;
    let id = connection_id(&mut idle).await;
    run(&mut admin, &format!("KILL CONNECTION {id}")).await;
    let gone = sqlx::query("SELECT 1")
        .execute(&mut idle)
        .await
        .unwrap_err();
    let mapped = classify(gone);
    assert!(matches!(mapped, Error::Unavailable { .. }), "{mapped:?}");

    let mut busy = db.connect().await;
    let id = connection_id(&mut busy).await;
    let killer = tokio::spawn(async move {
        until_running(&mut admin, id, "SELECT SLEEP").await;
        run(&mut admin, &format!("KILL CONNECTION {id}")).await;
        admin
    });
    let killed = sqlx::query("SELECT SLEEP(5)")
        .execute(&mut busy)
        .await
        .expect_err("the connection was killed mid-statement");
    let admin = killer.await.unwrap();
    let mapped = classify(killed);
    assert!(matches!(mapped, Error::Unavailable { .. }), "{mapped:?}");
    let _ = admin.close().await;
    db.drop_now().await;
}

/// Connecting: nothing listening is `Unavailable` and says so; a missing database and a login
/// refused are `Backend` errors that say which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_name_their_cause() {
    use sqlx::mysql::MySqlConnectOptions;
    use sqlx::ConnectOptions;

    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let nobody = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .connect()
        .await
        .expect_err("nothing listens on port 1");
    let nobody = classify(nobody);
    assert!(
        matches!(&nobody, Error::Unavailable { reason, .. } if reason.contains("connection refused")),
        "{nobody:?}"
    );

    let url = stockroom_mariadb::testing::with_database(db.url(), "stockroom_no_such_database");
    let missing = MySqlConnection::connect(&url)
        .await
        .expect_err("no such database");
    let missing = classify(missing);
    assert!(
        missing.to_string().contains("no such database"),
        "{missing}"
    );

    let stranger = db
        .url()
        .parse::<MySqlConnectOptions>()
        .unwrap()
        .username("stockroom_no_such_user")
        .password("wrong")
        .connect()
        .await
        .expect_err("no such user");
    let stranger = classify(stranger);
    assert!(
        matches!(&stranger, Error::Backend { .. })
            && stranger.to_string().contains("refused the login"),
        "{stranger}"
    );
    db.drop_now().await;
}

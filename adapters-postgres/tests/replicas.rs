//! Read replicas: read sessions on a streaming replica, units of work on the primary, a
//! read-your-writes session on the primary, a lagging or dead replica. Each test starts its own
//! primary and replica (`testing::ReplicatedServers`).

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use stockroom_core::{Error, NewProduct, ProductId, Store, StoreConfig, StoreExt, TransferRequest};
use stockroom_postgres::testing::{postgres_required, with_database, ReplicatedServers};
use stockroom_postgres::PostgresStore;

/// A primary and its replica, or `None` (with a line on stderr) when this machine cannot make
/// them and PostgreSQL is not required.
async fn replicated() -> Option<ReplicatedServers> {
    match tokio::task::spawn_blocking(ReplicatedServers::start)
        .await
        .unwrap()
    {
        Ok(servers) => Some(servers),
        Err(reason) if postgres_required() => panic!("cannot start a replica: {reason}"),
        Err(reason) => {
            eprintln!("skipped: cannot start a primary and a replica here: {reason}");
            None
        }
    }
}

/// Polls `check` until it is true, for up to ten seconds.
async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(what, Duration::from_secs(10), check).await;
}

/// Polls `check` until it is true, for up to `bound`.
async fn eventually_within(what: &str, bound: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < bound {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {bound:?}");
}

#[tokio::test]
async fn the_harness_replica_streams_the_primarys_writes() {
    let Some(servers) = replicated().await else {
        return;
    };
    let mut primary = PgConnection::connect(&servers.primary_url()).await.unwrap();
    let mut replica = PgConnection::connect(&servers.replica_url()).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut replica)
        .await
        .unwrap();
    assert!(in_recovery, "the replica is a standby");
    sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .execute(&mut primary)
        .await
        .unwrap();
    eventually("the row reaches the replica", async || {
        sqlx::query_scalar::<_, i32>("SELECT x FROM t")
            .fetch_optional(&mut replica)
            .await
            .ok()
            .flatten()
            == Some(7)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The store on a primary and its replica.

/// A database `shop` made on the primary (it reaches the replica with the WAL, waited for), and
/// the URLs of the primary and the replica on it.
async fn shop(servers: &ReplicatedServers) -> (String, String) {
    let mut admin = PgConnection::connect(&servers.primary_url()).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE shop")
        .execute(&mut admin)
        .await
        .unwrap();
    let mut replica = PgConnection::connect(&servers.replica_url()).await.unwrap();
    caught_up(&servers.primary_url(), &mut replica).await;
    (
        with_database(&servers.primary_url(), "shop"),
        with_database(&servers.replica_url(), "shop"),
    )
}

/// The configuration of the tests' stores: a short acquire timeout, no `test_before_acquire` (so nothing
/// here depends on it), and `replicas`.
fn config(primary: &str, replicas: &[&str]) -> StoreConfig {
    replicas.iter().fold(
        StoreConfig::new(primary)
            .with_acquire_timeout(Duration::from_secs(3))
            .with_test_before_acquire(false),
        |config, url| config.with_replica_url(*url),
    )
}

/// Waits until the replica has replayed everything the primary had written when called.
async fn caught_up(primary: &str, replica: &mut PgConnection) {
    let mut primary = PgConnection::connect(primary).await.unwrap();
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut primary)
        .await
        .unwrap();
    eventually("the replica catches up", async || {
        sqlx::query_scalar::<_, bool>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&lsn)
            .fetch_one(&mut *replica)
            .await
            .unwrap_or(false)
    })
    .await;
}

/// Pauses the replica's replay (the replica then lags behind every later commit) and waits
/// until it is paused.
async fn pause_replay(replica: &mut PgConnection) {
    sqlx::raw_sql("SELECT pg_wal_replay_pause()")
        .execute(&mut *replica)
        .await
        .unwrap();
    eventually("replay pauses", async || {
        sqlx::query_scalar::<_, String>("SELECT pg_get_wal_replay_pause_state()")
            .fetch_one(&mut *replica)
            .await
            .is_ok_and(|state| state == "paused")
    })
    .await;
}

/// Commits a new product through a unit of work of `store` (on the primary).
async fn commit_product(store: &PostgresStore, name: &str) -> ProductId {
    let mut uow = store.begin().await.unwrap();
    let product = uow
        .products()
        .create(NewProduct::new(name, name, &name.to_uppercase()).unwrap())
        .await
        .unwrap();
    uow.commit().await.unwrap();
    product.id
}

/// Whether a read session of `store` (`read`, else `read_primary`) sees `id`; every read must
/// answer within five seconds.
async fn sees(store: &PostgresStore, id: ProductId, primary: bool) -> bool {
    let read = async {
        let mut session = if primary {
            store.read_primary().await?
        } else {
            store.read().await?
        };
        session.products().get(id).await
    };
    let started = Instant::now();
    let found = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a read answers within 5 s")
        .expect("a read succeeds");
    assert!(started.elapsed() < Duration::from_secs(5));
    found.is_some()
}

#[tokio::test]
async fn reads_go_to_the_replica_and_read_primary_to_the_primary() {
    let Some(servers) = replicated().await else {
        return;
    };
    let (primary_url, replica_url) = shop(&servers).await;
    let store = PostgresStore::connect(&config(&primary_url, &[&replica_url]))
        .await
        .unwrap();
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    caught_up(&primary_url, &mut replica).await; // the schema is there
    pause_replay(&mut replica).await;

    let id = commit_product(&store, "lagging").await;
    for _ in 0..5 {
        assert!(
            !sees(&store, id, false).await,
            "read() is the lagging replica's"
        );
        assert!(
            sees(&store, id, true).await,
            "read_primary() sees its writes"
        );
    }

    sqlx::raw_sql("SELECT pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .unwrap();
    eventually("the replica shows the product", async || {
        sees(&store, id, false).await
    })
    .await;
    assert!(format!("{store:?}").contains("state: \"up\""), "{store:?}");
    store.close().await;
}

#[tokio::test]
async fn units_of_work_and_transfers_go_to_the_primary() {
    let Some(servers) = replicated().await else {
        return;
    };
    let (primary_url, replica_url) = shop(&servers).await;
    let store = PostgresStore::connect(&config(&primary_url, &[&replica_url]))
        .await
        .unwrap();
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    caught_up(&primary_url, &mut replica).await;
    // The premise: a write on the replica fails.
    let refused = sqlx::raw_sql("CREATE TABLE on_replica (x int)")
        .execute(&mut replica)
        .await
        .unwrap_err();
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("25006"),
        "read-only transaction: {refused}"
    );

    let mut uow = store.begin().await.unwrap();
    let a = uow
        .products()
        .create(
            NewProduct::new("A", "a", "A")
                .unwrap()
                .with_stock(10)
                .unwrap(),
        )
        .await
        .unwrap();
    let b = uow
        .products()
        .create(NewProduct::new("B", "b", "B").unwrap())
        .await
        .unwrap();
    uow.commit().await.unwrap();
    store
        .transfer(&TransferRequest::new(a.id, b.id, 3))
        .await
        .unwrap();
    store.health().await.unwrap();
    store.readiness().await.expect("the primary is writable");
    let mut read = store.read_primary().await.unwrap();
    assert_eq!(read.products().get(b.id).await.unwrap().unwrap().stock, 3);
    drop(read);
    eventually("the transfer reaches the replica", async || {
        let mut read = store.read().await.unwrap();
        read.products().get(a.id).await.unwrap().map(|p| p.stock) == Some(7)
    })
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_leaves_reads_to_the_primary_and_serves_again_once_back() {
    let Some(servers) = replicated().await else {
        return;
    };
    let (primary_url, replica_url) = shop(&servers).await;
    let store = PostgresStore::connect(&config(&primary_url, &[&replica_url]))
        .await
        .unwrap();
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    caught_up(&primary_url, &mut replica).await;
    drop(replica);
    let before = commit_product(&store, "before").await;
    eventually("the replica serves reads", async || {
        sees(&store, before, false).await
    })
    .await;

    // The replica's connection is kept by the store (for a second) and idle in its pool: the
    // next read finds it dead.
    tokio::task::block_in_place(|| servers.kill_replica()).unwrap();
    let after = commit_product(&store, "after").await;
    for _ in 0..20 {
        assert!(sees(&store, after, false).await, "served by the primary");
    }
    store.health().await.unwrap();
    store.readiness().await.unwrap();
    // Down, or being probed if the reads above took longer than its back-off.
    let debug = format!("{store:?}");
    assert!(
        debug.contains("state: \"down\"") || debug.contains("state: \"probing\""),
        "{debug}"
    );

    // Back: once its back-off has passed, a probe finds it and reads go to it again.
    tokio::task::block_in_place(|| servers.restart_replica()).unwrap();
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    caught_up(&primary_url, &mut replica).await;
    pause_replay(&mut replica).await;
    let lagging = commit_product(&store, "lagging").await;
    eventually_within(
        "reads go to the replica again",
        Duration::from_secs(20),
        async || !sees(&store, lagging, false).await,
    )
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_at_connect_leaves_reads_to_the_primary() {
    let Some(servers) = replicated().await else {
        return;
    };
    let (primary_url, replica_url) = shop(&servers).await;
    tokio::task::block_in_place(|| servers.kill_replica()).unwrap();
    // A password in the replica's URL (trust authentication ignores it) never shows.
    let replica_url = replica_url.replace("postgres@", "postgres:s3cret@");
    let started = Instant::now();
    let store = PostgresStore::connect(&config(&primary_url, &[&replica_url]))
        .await
        .expect("a replica that is down does not fail the connect");
    assert!(started.elapsed() < Duration::from_secs(5));
    let id = commit_product(&store, "only-on-primary").await;
    for _ in 0..10 {
        assert!(sees(&store, id, false).await, "served by the primary");
    }
    let debug = format!("{store:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("state: \"down\""), "{debug}");
    store.close().await;
}

#[tokio::test]
async fn a_replica_url_that_is_not_postgres_is_a_validation_error() {
    let config = StoreConfig::new("postgres://postgres@127.0.0.1:1/shop")
        .with_replica_url("mysql://replica/shop");
    let error = PostgresStore::connect(&config).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Validation {
                field: "replica_urls",
                ..
            }
        ),
        "checked before connecting: {error:?}"
    );
}

/// Round robin, shown with two "replicas": the lagging replica and the primary itself (read
/// only, as a second replica would be). Consecutive read sessions alternate between them: one
/// sees the new product, the next does not.
#[tokio::test]
async fn reads_take_the_replicas_in_turn() {
    let Some(servers) = replicated().await else {
        return;
    };
    let (primary_url, replica_url) = shop(&servers).await;
    let store = PostgresStore::connect(&config(&primary_url, &[&replica_url, &primary_url]))
        .await
        .unwrap();
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    caught_up(&primary_url, &mut replica).await;
    pause_replay(&mut replica).await;
    let id = commit_product(&store, "in-turn").await;
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(sees(&store, id, false).await);
    }
    assert!(
        seen.windows(2).all(|pair| pair[0] != pair[1]),
        "reads alternate between the replicas: {seen:?}"
    );
    store.close().await;
}

/// With `isolation = Serializable`, which a hot standby refuses (SQLSTATE 0A000 on every
/// statement at `default_transaction_isolation = serializable`), reads still go to the replica
/// and succeed: its sessions run at the strictest level a standby has, REPEATABLE READ. Units of
/// work on the primary keep SERIALIZABLE.
#[tokio::test]
async fn reads_on_a_replica_succeed_with_serializable_isolation() {
    let Some(servers) = replicated().await else {
        return;
    };
    let (primary_url, replica_url) = shop(&servers).await;
    let options = stockroom_postgres::PostgresOptions::default()
        .with_isolation(Some(stockroom_postgres::IsolationLevel::Serializable));
    let store = PostgresStore::connect_with(&config(&primary_url, &[&replica_url]), options)
        .await
        .unwrap();
    let mut replica = PgConnection::connect(&replica_url).await.unwrap();
    caught_up(&primary_url, &mut replica).await; // the schema is there
    pause_replay(&mut replica).await;
    let id = commit_product(&store, "serializable").await;
    for _ in 0..3 {
        assert!(!sees(&store, id, false).await, "read() is the replica's");
        assert!(sees(&store, id, true).await, "read_primary() sees it");
    }
    assert!(format!("{store:?}").contains("state: \"up\""), "{store:?}");
    let mut uow = store.begin().await.unwrap();
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&mut *stockroom_postgres::connection(uow.as_mut()).unwrap())
        .await
        .unwrap();
    assert_eq!(level, "serializable", "a unit of work on the primary");
    uow.rollback().await.unwrap();
    sqlx::raw_sql("SELECT pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .unwrap();
    store.close().await;
}

//! Read replicas: read sessions on a streaming replica, units of work on the primary, a
//! read-your-writes session on the primary, a lagging or dead replica. Each test starts its own
//! primary and replica (`testing::ReplicatedServers`).

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use stockroom_postgres::testing::{postgres_required, ReplicatedServers};

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
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
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

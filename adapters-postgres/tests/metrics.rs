//! The PostgreSQL adapter's metrics (feature `metrics`), recorded with a test recorder: the
//! pool's connections and waits, a read replica's state. A test binary of its own: the
//! recorder is the process's.

mod support;

use stockroom_conformance::metrics::{attribute as label, MetricKind, Recorded};
use stockroom_core::metrics::{CONNECTION_COUNT, CONNECTION_WAIT_TIME, REPLICA_UP};
use stockroom_core::{ProductFilter, Store, StoreConfig};
use stockroom_postgres::PostgresStore;
use support::TestDatabase;

#[tokio::test]
async fn the_pool_and_the_replicas_are_measured() {
    let recorded = Recorded::install();
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // A replica nobody listens for: the read that tries it marks it down, then reads on the
    // primary.
    let replica = "postgres://reader:s3cret@127.0.0.1:1/nowhere";
    let config = StoreConfig::new(db.url()).with_replica_url(replica);
    let store = PostgresStore::connect(&config).await.unwrap();
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap();
    drop(read);
    let mut uow = store.begin().await.unwrap();
    uow.products()
        .count(&ProductFilter::default())
        .await
        .unwrap();
    uow.rollback().await.unwrap();

    recorded.take();
    let primary = format!("/{}", db.name());
    let waits = recorded.series(MetricKind::Histogram, CONNECTION_WAIT_TIME);
    let primary_waits: f64 = waits
        .iter()
        .filter(|(labels, _)| {
            label(labels, "db.system.name") == Some("postgresql")
                && label(labels, "db.client.connection.pool.name")
                    .is_some_and(|pool| pool.ends_with(&primary))
        })
        .map(|(_, samples)| samples)
        .sum();
    assert!(
        primary_waits >= 2.0,
        "waits on the primary's pool {primary}: {waits:?}"
    );

    assert!(
        waits.iter().any(|(labels, _)| {
            label(labels, "db.namespace") == Some(db.name())
                && label(labels, "server.address").is_some_and(|a| !a.is_empty())
        }),
        "a wait names the test database and its server: {waits:?}"
    );

    let counts = recorded.series(MetricKind::Gauge, CONNECTION_COUNT);
    for state in ["used", "idle"] {
        assert!(
            counts.iter().any(|(labels, _)| {
                label(labels, "db.client.connection.state") == Some(state)
                    && label(labels, "db.client.connection.pool.name")
                        .is_some_and(|pool| pool.ends_with(&primary))
            }),
            "the primary's {state} connections: {counts:?}"
        );
    }

    let replicas = recorded.series(MetricKind::Gauge, REPLICA_UP);
    let state: Vec<_> = replicas
        .iter()
        .filter(|(labels, _)| {
            label(labels, "server.address").is_some_and(|a| a.contains("127.0.0.1:1"))
        })
        .collect();
    assert_eq!(state.len(), 1, "one series for the replica: {replicas:?}");
    let (labels, value) = state[0];
    assert_eq!(*value, 0.0, "the replica is down: {labels:?}");
    assert!(
        !label(labels, "server.address").unwrap().contains("s3cret"),
        "the replica's password is hidden: {labels:?}"
    );
    store.close().await;
}

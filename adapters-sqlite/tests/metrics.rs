//! The SQLite adapter's metrics (feature `metrics`), recorded with a test recorder: its read
//! connections and its writer, as pools. A test binary of its own: the recorder is the
//! process's.

#[allow(dead_code)]
mod support;

use stockroom_conformance::metrics::{has, MetricKind, Recorded};
use stockroom_core::metrics::{CONNECTION_COUNT, CONNECTION_WAIT_TIME};
use stockroom_core::{ProductFilter, Store};
use stockroom_sqlite::SqliteStore;
use support::TempDb;

#[tokio::test]
async fn the_read_connections_and_the_writer_are_measured() {
    let recorded = Recorded::install();
    let db = TempDb::new("stockroom-metrics");
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    for _ in 0..2 {
        let mut read = store.read().await.unwrap();
        read.products()
            .count(&ProductFilter::default())
            .await
            .unwrap();
    }
    let mut uow = store.begin().await.unwrap();
    uow.products()
        .count(&ProductFilter::default())
        .await
        .unwrap();
    uow.rollback().await.unwrap();

    recorded.take();
    let file = db.path().display().to_string();
    let waits = recorded.series(MetricKind::Histogram, CONNECTION_WAIT_TIME);
    for (pool, expected) in [("read", 2.0), ("writer", 1.0)] {
        let name = format!("{file} ({pool})");
        let samples: f64 = waits
            .iter()
            .filter(|(labels, _)| {
                has(labels, "db.system.name", "sqlite")
                    && has(labels, "db.client.connection.pool.name", &name)
                    && has(labels, "db.namespace", &file)
            })
            .map(|(_, samples)| samples)
            .sum();
        assert_eq!(samples, expected, "waits for {name}: {waits:?}");
    }
    let counts = recorded.series(MetricKind::Gauge, CONNECTION_COUNT);
    let readers = format!("{file} (read)");
    let reader_count = |state: &str| {
        counts
            .iter()
            .find(|(labels, _)| {
                has(labels, "db.client.connection.pool.name", &readers)
                    && has(labels, "db.client.connection.state", state)
            })
            .map(|(_, value)| *value)
    };
    // The second read found the first one's connection idle and took it: one in use, none idle.
    assert_eq!(reader_count("used"), Some(1.0), "{counts:?}");
    assert_eq!(reader_count("idle"), Some(0.0), "{counts:?}");
    store.close().await;
}

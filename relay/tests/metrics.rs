//! The relay's metrics (feature `metrics`), recorded with a test recorder. A test binary of its
//! own: the recorder is the process's.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use stockroom_conformance::metrics::{MetricKind, Recorded};
use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::{Error as CoreError, Store};
use stockroom_relay::metrics::{BACKLOG, DELIVERED, FAILURES, OLDEST_PENDING_AGE, PURGED};
use stockroom_relay::{ChannelSink, Relay};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_failures_the_backlog_and_purges_are_measured() {
    let seen = Recorded::install();
    stockroom_relay::metrics::describe();
    let faulty = FaultyStore::shared(memory());
    let store: Arc<dyn Store> = Arc::new(faulty.clone());
    publish(&*store, events("m", 3, 4), 12).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (sink, mut receiver) = ChannelSink::unbounded();
    let options = quick_options()
        .with_backlog_interval(Some(Duration::from_millis(20)))
        .with_purge_delivered_after(Some(Duration::ZERO))
        .with_purge_interval(Duration::from_millis(20));
    let relay = Relay::new(Arc::clone(&store), sink, options).unwrap();

    // The backlog, before anything is delivered.
    let backlog = relay.backlog().await.unwrap();
    assert_eq!(backlog.pending, 12);
    // (A snapshot resets the gauges: one snapshot, then both are read from it.)
    seen.take();
    assert_eq!(gauge(&seen, BACKLOG), 12.0);
    let age = gauge(&seen, OLDEST_PENDING_AGE);
    assert!((0.02..60.0).contains(&age), "{age}");

    // A failed round is counted once `run` backs off from it.
    faulty.inject(Fault::ClaimEvents, 1, || CoreError::unavailable("down"));
    let handle = relay.spawn();
    for _ in 0..12 {
        receiver.recv().await.unwrap();
    }
    drained(&*store, Duration::from_secs(5)).await;
    eventually(
        Duration::from_secs(5),
        "the purge and the gauges catch up",
        || async { store.outbox_backlog().await.unwrap().delivered == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.stop().await.unwrap();

    seen.take();
    assert_eq!(gauge(&seen, BACKLOG), 0.0);
    assert_eq!(gauge(&seen, OLDEST_PENDING_AGE), 0.0);
    let delivered = seen.value(
        MetricKind::Counter,
        DELIVERED,
        &[("messaging.system", "channel")],
    );
    assert_eq!(delivered, 12.0);
    let failures = seen.value(
        MetricKind::Counter,
        FAILURES,
        &[("messaging.system", "channel"), ("error.type", "store")],
    );
    assert_eq!(failures, 1.0);
    assert_eq!(seen.value(MetricKind::Counter, PURGED, &[]), 12.0);
}

/// The value of the gauge `name` as of the last snapshot.
fn gauge(seen: &Recorded, name: &str) -> f64 {
    seen.series(MetricKind::Gauge, name)
        .iter()
        .map(|(_, value)| value)
        .sum()
}

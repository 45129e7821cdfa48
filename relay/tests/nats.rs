//! The relay to NATS JetStream, on a nats-server of each test's own (`nats-server -js` on a
//! free port, a temporary store directory), from the memory store; the relay killed mid-batch
//! and the two relays also from PostgreSQL (a fresh database per test; skipped without a
//! server, a failure under `CI=true`).
//!
//! Without `/usr/sbin/nats-server` the tests fail when `CI=true`, and are skipped with the
//! reason otherwise.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use stockroom_core::Store;
use stockroom_relay::async_nats;
use stockroom_relay::async_nats::jetstream::{self, stream};
use stockroom_relay::sinks::nats::{AGGREGATE_HEADER, CREATED_AT_HEADER, SEQUENCE_HEADER};
use stockroom_relay::{NatsSink, Relay};
use support::*;

const STREAM: &str = "EVENTS";
const PREFIX: &str = "relay";

/// A JetStream context on `server` whose publishes wait `ack_timeout` for their
/// acknowledgement, and whose client reconnects every 100 ms while the server is away.
async fn jetstream(server: &NatsServer, ack_timeout: Duration) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(server.url())
        .await
        .expect("the test's nats-server answers");
    jetstream::ContextBuilder::new()
        .timeout(ack_timeout)
        .build(client)
}

/// The stream that captures the relay's subjects (`relay.>`), on file, with JetStream's
/// default duplicate window (2 minutes).
async fn create_stream(js: &jetstream::Context) {
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{PREFIX}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut tries = 0;
    while let Err(error) = js.get_or_create_stream(config.clone()).await {
        tries += 1;
        assert!(tries < 50, "could not create the stream: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message of the stream, in the stream's order, as the test reads the event back.
async fn stored(js: &jetstream::Context) -> Vec<Seen> {
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut seen = Vec::new();
    if state.messages == 0 {
        return seen;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("header {name} on message {sequence}"))
                .as_str()
                .to_owned()
        };
        assert!(
            message.subject.as_str() == "relay.orders.placed"
                || message.subject.as_str() == "relay.orders.shipped",
            "{}",
            message.subject
        );
        let created_at = header(CREATED_AT_HEADER);
        chrono::DateTime::parse_from_rfc3339(&created_at).expect("an RFC 3339 time");
        seen.push(Seen {
            id: header("Nats-Msg-Id"),
            aggregate: header(AGGREGATE_HEADER),
            sequence: header(SEQUENCE_HEADER).parse().unwrap(),
            payload: message.payload.to_vec(),
        });
    }
    seen
}

fn sink(js: &jetstream::Context) -> NatsSink {
    NatsSink::new(js.clone()).with_prefix(PREFIX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_reach_jetstream_once_in_order_with_their_ids_as_message_ids() {
    logs();
    let server = require!(NatsServer::start());
    let js = jetstream(&server, Duration::from_secs(5)).await;
    create_stream(&js).await;
    let store = memory();
    let committed = publish(&*store, events("a", 5, 20), 9).await;
    let rolled_back = publish_and_roll_back(&*store, events("gone", 2, 5)).await;

    let relay = Relay::new(Arc::clone(&store), sink(&js), quick_options())
        .unwrap()
        .spawn();
    drained(&*store, Duration::from_secs(20)).await;
    let later = publish(&*store, events("late", 2, 5), 5).await;
    drained(&*store, Duration::from_secs(20)).await;
    relay.stop().await.unwrap();

    let seen = stored(&js).await;
    let expected: Vec<_> = committed.iter().chain(&later).copied().collect();
    assert_each_once_in_order(&seen, &expected);
    for id in rolled_back {
        assert!(seen.iter().all(|s| s.id != id.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_while_the_broker_is_down_and_all_arrive_once_it_is_back() {
    logs();
    let mut server = require!(NatsServer::start());
    let js = jetstream(&server, Duration::from_millis(500)).await;
    create_stream(&js).await;
    let store = memory();
    let (recording, log) = Recording::new(sink(&js));
    let options = quick_options().with_backoff(Duration::from_millis(100), Duration::from_secs(2));
    let relay = Relay::new(Arc::clone(&store), recording, options)
        .unwrap()
        .spawn();

    let before = publish(&*store, events("before", 3, 5), 5).await;
    drained(&*store, Duration::from_secs(20)).await;

    server.kill();
    let attempts_before = log.lock().unwrap().len();
    let during = publish(&*store, events("during", 3, 5), 5).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The events wait in the outbox, and the relay backs off: each failed attempt waits
    // longer than the one before.
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 15);
    let failed: Vec<_> = log.lock().unwrap()[attempts_before..]
        .iter()
        .filter(|a| a.failed)
        .map(|a| a.at)
        .collect();
    assert!(failed.len() >= 4, "{} failed attempts", failed.len());
    let gaps: Vec<Duration> = failed.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        *gaps.last().unwrap() >= gaps[0] + Duration::from_millis(250),
        "the waits grow: {gaps:?}"
    );

    server.restart();
    drained(&*store, Duration::from_secs(30)).await;
    let after = publish(&*store, events("after", 3, 5), 5).await;
    drained(&*store, Duration::from_secs(20)).await;
    relay.stop().await.unwrap();

    let expected: Vec<_> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .copied()
        .collect();
    assert_each_once_in_order(&stored(&js).await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_is_followed_by_a_redelivery_that_jetstream_drops() {
    logs();
    killed_mid_batch(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_is_followed_by_a_redelivery_that_jetstream_drops_on_postgres() {
    logs();
    on_postgres(killed_mid_batch).await;
}

async fn killed_mid_batch(store: Arc<dyn Store>) {
    let server = require!(NatsServer::start());
    let js = jetstream(&server, Duration::from_secs(5)).await;
    create_stream(&js).await;
    let ids = publish(&*store, events("killed", 3, 10), 10).await;

    // The first relay delivers 12 of its 30 events, the broker confirms them, and it dies
    // before it acknowledges anything.
    let (confirmed, mut confirmations) = tokio::sync::mpsc::unbounded_channel();
    let stalling = StallAfter {
        inner: sink(&js),
        pass: 12,
        confirmed,
    };
    let first = Relay::new(Arc::clone(&store), stalling, quick_options())
        .unwrap()
        .spawn();
    assert_eq!(confirmations.recv().await, Some(12));
    first.abort().await;
    assert_eq!(stored(&js).await.len(), 12);
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 30);

    // Another relay claims them when the lease (1 s) runs out and delivers all 30 again.
    let (recording, log) = Recording::new(sink(&js));
    let second = Relay::new(Arc::clone(&store), recording, quick_options())
        .unwrap()
        .spawn();
    drained(&*store, Duration::from_secs(20)).await;
    second.stop().await.unwrap();
    let counts = confirmed_counts(&log);
    assert_eq!(counts.len(), 30);
    assert!(ids.iter().all(|id| counts.get(&id.to_string()) == Some(&1)));

    // JetStream dropped the 12 copies: the consumer sees each event once, in order.
    assert_each_once_in_order(&stored(&js).await, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_store_share_the_work_and_deliver_each_event_once() {
    logs();
    two_relays(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_store_share_the_work_and_deliver_each_event_once_on_postgres() {
    logs();
    on_postgres(two_relays).await;
}

async fn two_relays(store: Arc<dyn Store>) {
    let server = require!(NatsServer::start());
    let js = jetstream(&server, Duration::from_secs(5)).await;
    create_stream(&js).await;
    let ids = publish(&*store, events("shared", 40, 25), 40).await;

    // Each relay its own connection, as two processes would have; both start together.
    let mut sinks = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..2 {
        let js = jetstream(&server, Duration::from_secs(5)).await;
        // Each delivery takes 2 ms more, so that neither relay is done before the other starts.
        let slow = Slow {
            inner: sink(&js),
            by: Duration::from_millis(2),
        };
        let (recording, log) = Recording::new(slow);
        sinks.push(recording);
        logs.push(log);
    }
    let relays: Vec<_> = sinks
        .into_iter()
        .map(|recording| {
            let options = quick_options().with_claim(claim(16, 4));
            Relay::new(Arc::clone(&store), recording, options)
                .unwrap()
                .spawn()
        })
        .collect();
    drained(&*store, Duration::from_secs(30)).await;
    for relay in relays {
        relay.stop().await.unwrap();
    }

    // Counted at the sinks (JetStream would hide a second copy): each event once.
    let mut total = std::collections::HashMap::new();
    for log in &logs {
        let counts = confirmed_counts(log);
        assert!(!counts.is_empty(), "each relay delivered a share");
        for (id, n) in counts {
            *total.entry(id).or_insert(0) += n;
        }
    }
    assert_eq!(total.len(), ids.len());
    assert!(total.values().all(|n| *n == 1), "an event delivered twice");
    assert_each_once_in_order(&stored(&js).await, &ids);
}

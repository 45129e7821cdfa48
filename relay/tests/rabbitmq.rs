//! The relay to RabbitMQ (the broker at 127.0.0.1:5672, as guest), each test in a vhost of its
//! own that it makes and deletes with `rabbitmqctl`, from the memory store; the relay killed
//! mid-batch and the two relays also from PostgreSQL (a fresh database per test; skipped
//! without a server, a failure under `CI=true`).
//!
//! Without a broker there (or without `rabbitmqctl`) the tests fail when `CI=true`, and are
//! skipped with the reason otherwise.

#[macro_use]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::{Error as CoreError, Store};
use stockroom_relay::lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use stockroom_relay::lapin::types::{AMQPValue, FieldTable};
use stockroom_relay::lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use stockroom_relay::sinks::rabbitmq::{AGGREGATE_HEADER, CREATED_AT_HEADER, SEQUENCE_HEADER};
use stockroom_relay::{Error, RabbitMqSink, Relay};
use support::*;

const EXCHANGE: &str = "events";
const QUEUE: &str = "all-events";

/// A connection to the vhost, with a topic exchange and one durable queue bound to all of it.
async fn topology(vhost: &Vhost) -> (Connection, Channel) {
    let connection = Connection::connect(&vhost.uri(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ takes guest on the test's vhost");
    let channel = connection.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(QUEUE.into(), durable, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel)
}

fn sink(vhost: &Vhost) -> RabbitMqSink {
    RabbitMqSink::new(vhost.uri()).with_exchange(EXCHANGE)
}

/// Takes every message of the queue, in the queue's order (waiting up to 2 s for more once
/// it looks empty), on a connection of its own.
async fn consume(vhost: &Vhost) -> Vec<Seen> {
    let connection = Connection::connect(&vhost.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut seen = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        let options = BasicGetOptions { no_ack: true };
        match channel.basic_get(QUEUE.into(), options).await.unwrap() {
            Some(message) => {
                quiet_since = Instant::now();
                let delivery = message.delivery;
                let properties = &delivery.properties;
                assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
                assert!(
                    delivery.routing_key.as_str() == "orders.placed"
                        || delivery.routing_key.as_str() == "orders.shipped"
                );
                let headers = properties.headers().clone().expect("headers");
                let header = |name: &str| {
                    headers
                        .inner()
                        .get(name)
                        .unwrap_or_else(|| panic!("header {name}"))
                        .clone()
                };
                let AMQPValue::LongString(aggregate) = header(AGGREGATE_HEADER) else {
                    panic!("the aggregate is a long string");
                };
                let AMQPValue::LongLongInt(sequence) = header(SEQUENCE_HEADER) else {
                    panic!("the sequence is a 64-bit integer");
                };
                let AMQPValue::LongString(created_at) = header(CREATED_AT_HEADER) else {
                    panic!("the time is a long string");
                };
                chrono::DateTime::parse_from_rfc3339(&created_at.to_string()).unwrap();
                seen.push(Seen {
                    id: properties
                        .message_id()
                        .as_ref()
                        .expect("a message id")
                        .to_string(),
                    aggregate: aggregate.to_string(),
                    sequence,
                    payload: delivery.data.clone(),
                });
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let _ = connection.close(200, "done".into()).await;
    seen
}

/// What a consumer that remembers the message ids it saw keeps: the first copy of each, and
/// how many copies it told apart as duplicates.
fn first_copies(seen: &[Seen]) -> (Vec<Seen>, usize) {
    let mut ids = HashSet::new();
    let firsts: Vec<Seen> = seen
        .iter()
        .filter(|s| ids.insert(s.id.clone()))
        .cloned()
        .collect();
    let duplicates = seen.len() - firsts.len();
    (firsts, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_reach_the_queue_once_in_order_with_their_ids_as_message_ids() {
    logs();
    let vhost = require!(Vhost::create("once"));
    let _topology = topology(&vhost).await;
    let store = memory();
    let committed = publish(&*store, events("a", 5, 20), 9).await;
    let rolled_back = publish_and_roll_back(&*store, events("gone", 2, 5)).await;

    let rabbit = sink(&vhost);
    rabbit.connect().await.unwrap();
    let relay = Relay::new(Arc::clone(&store), rabbit, quick_options())
        .unwrap()
        .spawn();
    drained(&*store, Duration::from_secs(20)).await;
    let later = publish(&*store, events("late", 2, 5), 5).await;
    drained(&*store, Duration::from_secs(20)).await;
    relay.stop().await.unwrap();

    let seen = consume(&vhost).await;
    let expected: Vec<_> = committed.iter().chain(&later).copied().collect();
    assert_each_once_in_order(&seen, &expected);
    for id in rolled_back {
        assert!(seen.iter().all(|s| s.id != id.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_delivers_again_and_the_consumer_tells_by_the_message_id() {
    logs();
    let vhost = require!(Vhost::create("lost-ack"));
    let _topology = topology(&vhost).await;
    let faulty = FaultyStore::shared(memory());
    let store: Arc<dyn Store> = Arc::new(faulty.clone());
    let ids = publish(&*store, events("lost", 3, 6), 6).await;
    faulty.inject(Fault::AcknowledgeEvents, 1, || {
        CoreError::unavailable("the relay's connection to the database dropped")
    });
    let relay = Relay::new(Arc::clone(&store), sink(&vhost), quick_options()).unwrap();

    // Delivered and confirmed, but the store never hears of it.
    let error = relay.run_once().await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 18);
    // After the lease (1 s), delivered again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.claimed, round.delivered), (18, 18));
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 0);

    let seen = consume(&vhost).await;
    assert_eq!(seen.len(), 36, "RabbitMQ keeps both copies");
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *copies.entry(&s.id).or_default() += 1;
    }
    assert!(copies.values().all(|n| *n == 2), "each message id twice");
    let (firsts, duplicates) = first_copies(&seen);
    assert_eq!(duplicates, 18);
    assert_each_once_in_order(&firsts, &ids);
    assert_eq!(
        seen[..18],
        seen[18..],
        "the second copies are the same messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_is_followed_by_a_redelivery_of_the_same_message_ids() {
    logs();
    killed_mid_batch(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_is_followed_by_a_redelivery_of_the_same_message_ids_on_postgres()
{
    logs();
    on_postgres(killed_mid_batch).await;
}

async fn killed_mid_batch(store: Arc<dyn Store>) {
    let vhost = require!(Vhost::create("killed"));
    let _topology = topology(&vhost).await;
    let ids = publish(&*store, events("killed", 3, 10), 10).await;

    let (confirmed, mut confirmations) = tokio::sync::mpsc::unbounded_channel();
    let stalling = StallAfter {
        inner: sink(&vhost),
        pass: 12,
        confirmed,
    };
    let first = Relay::new(Arc::clone(&store), stalling, quick_options())
        .unwrap()
        .spawn();
    assert_eq!(confirmations.recv().await, Some(12));
    first.abort().await;
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 30);

    let second = Relay::new(Arc::clone(&store), sink(&vhost), quick_options())
        .unwrap()
        .spawn();
    drained(&*store, Duration::from_secs(20)).await;
    second.stop().await.unwrap();

    let seen = consume(&vhost).await;
    assert_eq!(seen.len(), 42, "12 confirmed before the kill, then all 30");
    let (firsts, duplicates) = first_copies(&seen);
    assert_eq!(duplicates, 12);
    assert_each_once_in_order(&firsts, &ids);
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
    let vhost = require!(Vhost::create("shared"));
    let _topology = topology(&vhost).await;
    let ids = publish(&*store, events("shared", 40, 25), 40).await;

    let mut relays = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..2 {
        // Each delivery takes 2 ms more, so that neither relay is done before the other starts.
        let slow = Slow {
            inner: sink(&vhost),
            by: Duration::from_millis(2),
        };
        let (recording, log) = Recording::new(slow);
        let options = quick_options().with_claim(claim(16, 4));
        relays.push(
            Relay::new(Arc::clone(&store), recording, options)
                .unwrap()
                .spawn(),
        );
        logs.push(log);
    }
    drained(&*store, Duration::from_secs(30)).await;
    for relay in relays {
        relay.stop().await.unwrap();
    }
    for log in &logs {
        assert!(
            !confirmed_counts(log).is_empty(),
            "each relay delivered a share"
        );
    }

    // RabbitMQ keeps every copy: the queue itself shows that none was delivered twice.
    assert_each_once_in_order(&consume(&vhost).await, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_broker_closed_is_opened_again() {
    logs();
    let vhost = require!(Vhost::create("closed"));
    let _topology = topology(&vhost).await;
    let store = memory();
    let relay = Relay::new(Arc::clone(&store), sink(&vhost), quick_options())
        .unwrap()
        .spawn();
    let before = publish(&*store, events("before", 2, 5), 5).await;
    drained(&*store, Duration::from_secs(20)).await;

    vhost.close_connections();
    let after = publish(&*store, events("after", 2, 5), 5).await;
    drained(&*store, Duration::from_secs(20)).await;
    relay.stop().await.unwrap();

    let expected: Vec<_> = before.iter().chain(&after).copied().collect();
    let (firsts, _) = first_copies(&consume(&vhost).await);
    assert_each_once_in_order(&firsts, &expected);
}

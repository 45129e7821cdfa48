//! The relay over the memory store (and a SQLite file) to the in-process channel: what a round
//! does, failures of the sink and of the store, two relays on one store, the purge. Delivery
//! once and in order, the lost acknowledgement and the two relays also run on PostgreSQL (a
//! fresh database per test; skipped without a server, a failure under `CI=true`).

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::outbox::{ClaimOptions, Event};
use stockroom_core::{Error as CoreError, Store};
use stockroom_relay::{ChannelSink, Delivery, Error, Relay, RelayOptions, Round, Sink};
use support::*;
use tokio::sync::mpsc;

/// Everything the receiver holds now.
fn drain(receiver: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        seen.push(Seen::from(&event));
    }
    seen
}

/// Receives until `n` events arrived (or fails after 10 s).
async fn receive(receiver: &mut mpsc::UnboundedReceiver<Event>, n: usize) -> Vec<Seen> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", seen.len()))
            .expect("the channel is open");
        seen.push(Seen::from(&event));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_arrive_once_in_order_and_rolled_back_ones_never() {
    logs();
    arrive_once_in_order(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_arrive_once_in_order_and_rolled_back_ones_never_on_postgres() {
    logs();
    on_postgres(arrive_once_in_order).await;
}

async fn arrive_once_in_order(store: Arc<dyn Store>) {
    let committed = publish(&*store, events("a", 6, 20), 7).await;
    let rolled_back = publish_and_roll_back(&*store, events("gone", 3, 4)).await;
    let (sink, mut receiver) = ChannelSink::unbounded();
    let relay = Relay::new(Arc::clone(&store), sink, quick_options())
        .unwrap()
        .spawn();

    let mut seen = receive(&mut receiver, committed.len()).await;
    // Events committed while it runs arrive too.
    let later = publish(&*store, events("late", 2, 5), 3).await;
    seen.extend(receive(&mut receiver, later.len()).await);
    drained(&*store, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    seen.extend(drain(&mut receiver));
    relay.stop().await.unwrap();

    let expected: Vec<_> = committed.iter().chain(&later).copied().collect();
    assert_each_once_in_order(&seen, &expected);
    for id in rolled_back {
        assert!(
            seen.iter().all(|s| s.id != id.to_string()),
            "an event of a rolled-back unit of work arrived"
        );
    }
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.delivered, backlog.oldest),
        (0, expected.len() as u64, None)
    );
}

#[tokio::test]
async fn a_round_says_what_it_did() {
    let store = memory();
    let (sink, mut receiver) = ChannelSink::unbounded();
    let options = quick_options().with_claim(claim(10, 32));
    let relay = Relay::new(Arc::clone(&store), sink, options).unwrap();
    assert_eq!(relay.run_once().await.unwrap(), Round::default());
    assert!(relay.run_once().await.unwrap().is_idle());

    let ids = publish(&*store, events("r", 2, 8), 16).await;
    let first = relay.run_once().await.unwrap();
    assert_eq!((first.claimed, first.delivered), (10, 10));
    let second = relay.run_once().await.unwrap();
    assert_eq!((second.claimed, second.delivered), (6, 6));
    assert!(relay.run_once().await.unwrap().is_idle());
    assert_each_once_in_order(&drain(&mut receiver), &ids);
    assert_eq!(store.outbox_backlog().await.unwrap().delivered, 16);
}

/// A sink that confirms the first `confirm` events of each batch (delivering them to the
/// channel), then fails: as a broker that went away in the middle of a batch.
struct FailsAfter {
    channel: ChannelSink,
    confirm: usize,
}

#[async_trait]
impl Sink for FailsAfter {
    fn system(&self) -> &'static str {
        "test"
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        let n = self.confirm.min(events.len());
        let delivered = self.channel.deliver(&events[..n]).await;
        assert!(delivered.is_complete());
        if n == events.len() {
            Delivery::complete(n)
        } else {
            Delivery::failed(n, "the broker went away")
        }
    }
}

#[tokio::test]
async fn a_sink_that_fails_midway_gets_the_rest_again_in_order() {
    let store = memory();
    let ids = publish(&*store, events("f", 4, 5), 4).await;
    let (channel, mut receiver) = ChannelSink::unbounded();
    let failing = FailsAfter {
        channel: channel.clone(),
        confirm: 7,
    };
    let relay = Relay::new(Arc::clone(&store), failing, quick_options()).unwrap();
    let error = relay.run_once().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Sink {
                confirmed: 7,
                attempted: 20,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), "sink");
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.delivered), (13, 7));

    // The lanes came back with the acknowledgement: the rest is claimed at once, and
    // continues each aggregate where it stopped.
    let relay = Relay::new(Arc::clone(&store), channel, quick_options()).unwrap();
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.claimed, round.delivered), (13, 13));
    assert_each_once_in_order(&drain(&mut receiver), &ids);
}

#[tokio::test]
async fn a_closed_channel_fails_the_delivery_and_the_events_wait() {
    let store = memory();
    publish(&*store, events("c", 2, 3), 6).await;
    let (sink, receiver) = ChannelSink::bounded(16);
    drop(receiver);
    let relay = Relay::new(Arc::clone(&store), sink, quick_options()).unwrap();
    let error = relay.run_once().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Sink {
                confirmed: 0,
                attempted: 6,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 6);
}

#[tokio::test]
async fn a_lost_acknowledgement_delivers_the_events_again_after_the_lease() {
    lost_acknowledgement(memory()).await;
}

#[tokio::test]
async fn a_lost_acknowledgement_delivers_the_events_again_after_the_lease_on_postgres() {
    on_postgres(lost_acknowledgement).await;
}

async fn lost_acknowledgement(store: Arc<dyn Store>) {
    let faulty = FaultyStore::shared(store);
    let store: Arc<dyn Store> = Arc::new(faulty.clone());
    let ids = publish(&*store, events("lost", 3, 4), 12).await;
    faulty.inject(Fault::AcknowledgeEvents, 1, || {
        CoreError::unavailable("the connection dropped")
    });
    let (sink, mut receiver) = ChannelSink::unbounded();
    let relay = Relay::new(Arc::clone(&store), sink, quick_options()).unwrap();

    let error = relay.run_once().await.unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let first = drain(&mut receiver);
    assert_each_once_in_order(&first, &ids);
    // Still leased: nobody claims them before the lease (1 s) runs out.
    assert!(relay.run_once().await.unwrap().is_idle());
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 12);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.claimed, round.delivered), (12, 12));
    let again = drain(&mut receiver);
    assert_each_once_in_order(&again, &ids);
    assert_eq!(
        first, again,
        "the same events, ids and all, in the same order"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_backs_off_when_the_store_fails_then_catches_up() {
    logs();
    let faulty = FaultyStore::shared(memory());
    let store: Arc<dyn Store> = Arc::new(faulty.clone());
    let ids = publish(&*store, events("b", 4, 10), 10).await;
    faulty.inject(Fault::ClaimEvents, 4, || {
        CoreError::unavailable("the database restarts")
    });
    let (sink, mut receiver) = ChannelSink::unbounded();
    let options = quick_options().with_backoff(Duration::from_millis(40), Duration::from_secs(1));
    let started = std::time::Instant::now();
    let relay = Relay::new(Arc::clone(&store), sink, options)
        .unwrap()
        .spawn();
    let seen = receive(&mut receiver, ids.len()).await;
    let waited = started.elapsed();
    relay.stop().await.unwrap();
    assert_each_once_in_order(&seen, &ids);
    // Four failures in a row: back-offs of at least 40, 40, 80 and 160 ms.
    assert!(waited >= Duration::from_millis(320), "{waited:?}");
    assert!(faulty.calls(Fault::ClaimEvents) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_and_deliver_each_event_once() {
    logs();
    two_relays_share_the_work(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_and_deliver_each_event_once_on_postgres() {
    logs();
    on_postgres(two_relays_share_the_work).await;
}

async fn two_relays_share_the_work(store: Arc<dyn Store>) {
    let ids = publish(&*store, events("two", 40, 25), 50).await;
    // Both relays send to one channel (two channels merged by the consumer would reorder what
    // the relays delivered in order, as two brokers would); each relay's deliveries are
    // recorded at its sink. Each delivery takes 2 ms, as a broker's round trip would, so
    // that neither relay is done before the other starts.
    let (sink, mut receiver) = ChannelSink::unbounded();
    let mut handles = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..2 {
        let slow = Slow {
            inner: sink.clone(),
            by: Duration::from_millis(2),
        };
        let (recording, log) = Recording::new(slow);
        let options = quick_options().with_claim(claim(64, 4));
        handles.push(
            Relay::new(Arc::clone(&store), recording, options)
                .unwrap()
                .spawn(),
        );
        logs.push(log);
    }
    drop(sink);
    drained(&*store, Duration::from_secs(20)).await;
    for handle in handles {
        handle.stop().await.unwrap();
    }
    let mut seen = Vec::new();
    while let Some(event) = receiver.recv().await {
        seen.push(Seen::from(&event));
    }
    assert_each_once_in_order(&seen, &ids);
    for log in &logs {
        let counts = confirmed_counts(log);
        assert!(!counts.is_empty(), "each relay delivered a share");
        assert!(counts.values().all(|n| *n == 1));
    }
}

#[tokio::test]
async fn delivered_events_are_purged() {
    let store = memory();
    publish(&*store, events("p", 2, 5), 10).await;
    let (sink, mut receiver) = ChannelSink::unbounded();
    let unset = Relay::new(Arc::clone(&store), sink.clone(), quick_options()).unwrap();
    assert_eq!(unset.purge().await.unwrap(), None, "no purge unless asked");

    // Kept for an hour: the purge keeps them.
    let options = quick_options().with_purge_delivered_after(Some(Duration::from_secs(3600)));
    let hour = Relay::new(Arc::clone(&store), sink.clone(), options).unwrap();
    hour.run_once().await.unwrap();
    assert_eq!(hour.purge().await.unwrap(), Some(0));
    assert_eq!(store.outbox_backlog().await.unwrap().delivered, 10);

    // Purged as soon as delivered, by the running relay.
    let options = quick_options()
        .with_purge_delivered_after(Some(Duration::ZERO))
        .with_purge_interval(Duration::from_millis(30));
    let relay = Relay::new(Arc::clone(&store), sink, options)
        .unwrap()
        .spawn();
    eventually(
        Duration::from_secs(5),
        "the delivered events are purged",
        || async { store.outbox_backlog().await.unwrap().delivered == 0 },
    )
    .await;
    // Undelivered events stay, and are delivered, then purged in turn.
    let more = publish(&*store, events("q", 1, 3), 3).await;
    eventually(
        Duration::from_secs(5),
        "the new events are delivered and purged",
        || async {
            let backlog = store.outbox_backlog().await.unwrap();
            backlog.pending == 0 && backlog.delivered == 0
        },
    )
    .await;
    relay.stop().await.unwrap();
    let seen = drain(&mut receiver);
    assert_eq!(seen.len(), 13);
    assert!(more
        .iter()
        .all(|id| seen.iter().any(|s| s.id == id.to_string())));
}

#[tokio::test]
async fn a_stopped_relay_has_finished_its_round() {
    let store = memory();
    let (sink, mut receiver) = ChannelSink::unbounded();
    let handle = Relay::new(Arc::clone(&store), sink, quick_options())
        .unwrap()
        .spawn();
    let ids = publish(&*store, events("s", 1, 3), 3).await;
    let seen = receive(&mut receiver, 3).await;
    handle.stop().await.unwrap();
    assert_each_once_in_order(&seen, &ids);
    publish(&*store, events("t", 1, 2), 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        receiver.try_recv().is_err(),
        "a stopped relay delivers nothing"
    );
}

#[tokio::test]
async fn options_out_of_bounds_are_refused() {
    let (sink, _receiver) = ChannelSink::unbounded();
    let bad = ClaimOptions {
        lease: Duration::from_millis(10),
        ..claim(10, 4)
    };
    let refused = Relay::new(memory(), sink, RelayOptions::default().with_claim(bad));
    assert!(matches!(
        refused,
        Err(Error::Store(CoreError::Validation { field: "lease", .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_outbox_is_relayed_too() {
    let dir = TempDir::new("sqlite");
    let store: Arc<dyn Store> = Arc::new(
        stockroom_sqlite::SqliteStore::open(dir.path().join("outbox.db"))
            .await
            .unwrap(),
    );
    let committed = publish(&*store, events("sq", 5, 10), 8).await;
    let rolled_back = publish_and_roll_back(&*store, events("sq-gone", 2, 2)).await;
    let (sink, mut receiver) = ChannelSink::unbounded();
    let relay = Relay::new(Arc::clone(&store), sink, quick_options())
        .unwrap()
        .spawn();
    let seen = receive(&mut receiver, committed.len()).await;
    drained(&*store, Duration::from_secs(5)).await;
    relay.stop().await.unwrap();
    assert_each_once_in_order(&seen, &committed);
    assert!(rolled_back
        .iter()
        .all(|id| seen.iter().all(|s| s.id != id.to_string())));
    store.close().await;
}

//! Events per second through the relay, from a store's outbox to a sink.
//!
//! `cargo bench -p stockroom-relay --all-features --bench relay` prints, for each store (the
//! memory store, a SQLite file, PostgreSQL) and each sink (the in-process channel, NATS
//! JetStream on a nats-server of the bench's own with file storage, RabbitMQ at 127.0.0.1:5672
//! in a vhost of the bench's own with a durable queue), the median of 5 samples (after one
//! warm-up sample, not counted) and the spread. Each sample seeds a fresh store with 19,968
//! events of 64 aggregates (312 each) (units of work of 100 events, not timed), then times one
//! relay running rounds (`Relay::run_once`: claim, deliver, acknowledge) until a round finds
//! nothing: what is timed is the relay's whole cycle, the broker's confirmations and the
//! store's acknowledgements included. Claims are the defaults (256 events, 8 lanes).
//!
//! The stores are built as applications build theirs: `stockroom::connect_with` on a
//! `memory://`, `sqlite://` or `postgres://` URL with the default settings, an `Arc<dyn Store>`
//! (the tracing decorator around the adapter's store). PostgreSQL: a fresh database per sample
//! on the test harness's server (`stockroom_postgres::testing`: `STOCKROOM_TEST_DATABASE_URL`,
//! else 127.0.0.1:5432; a throwaway cluster, fsync off, when none answers, which the row then
//! says), dropped after the sample.
//!
//! The JetStream and RabbitMQ rows need the `nats` and `rabbitmq` features and their brokers,
//! the PostgreSQL rows a server; without them the rows say why they were skipped (under `CI`
//! a missing PostgreSQL fails, as in the tests). `cargo bench ... -- sqlite` runs only the rows
//! whose name contains the word.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom_core::{Store, StoreConfig};
use stockroom_postgres::testing::TestDatabase;
use stockroom_relay::{ChannelSink, Relay, RelayOptions, Sink};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{events, publish, TempDir};

const SAMPLES: usize = 5;
/// 20,000 events, rounded down to a whole number per aggregate (19,968).
const EVENTS: usize = 20_000 / AGGREGATES * AGGREGATES;
const AGGREGATES: usize = 64;
const PER_UNIT: usize = 100;

/// The store a sample reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

const BACKENDS: [Backend; 3] = [Backend::Memory, Backend::Sqlite, Backend::Postgres];

/// What a sample's store lives in: removed or dropped after the sample.
enum Place {
    Memory,
    File(TempDir),
    Database(TestDatabase),
}

impl Place {
    async fn remove(self) {
        match self {
            Place::Memory => {}
            Place::File(dir) => drop(dir),
            Place::Database(db) => db.drop_now().await,
        }
    }
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Whether the bench can run it: `Err` says why not.
    async fn available(self) -> Result<(), String> {
        match self {
            Backend::Memory | Backend::Sqlite => Ok(()),
            Backend::Postgres => match stockroom_postgres::testing::server().await {
                Some(_) => Ok(()),
                None => Err("no PostgreSQL server (the line on stderr says why)".into()),
            },
        }
    }

    /// A note on the row: PostgreSQL on a throwaway cluster has fsync off.
    async fn note(self) -> &'static str {
        match self {
            Backend::Postgres => match stockroom_postgres::testing::server().await {
                Some(server) if server.is_throwaway() => "  [throwaway cluster, fsync off]",
                _ => "",
            },
            _ => "",
        }
    }

    /// A fresh store, as an application connects to it, with `events_per_sample` events of
    /// [`AGGREGATES`] aggregates committed in its outbox.
    async fn seeded(self, events_per_sample: usize) -> (Arc<dyn Store>, Place) {
        let (config, place) = match self {
            Backend::Memory => (StoreConfig::new("memory://"), Place::Memory),
            Backend::Sqlite => {
                let dir = TempDir::new("bench");
                let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
                (StoreConfig::new(url), Place::File(dir))
            }
            Backend::Postgres => {
                let db = TestDatabase::create()
                    .await
                    .expect("the server answered when the bench began");
                (StoreConfig::new(db.url()), Place::Database(db))
            }
        };
        let store = stockroom::connect_with(config).await.unwrap();
        let batch = events("bench", AGGREGATES, events_per_sample / AGGREGATES);
        publish(&*store, batch, PER_UNIT).await;
        (store, place)
    }
}

/// One sample: a fresh store, then the relay's rounds until it finds nothing; how long they
/// took and how many events they delivered.
async fn sample<S: Sink>(backend: Backend, sink: S, events_per_sample: usize) -> (Duration, usize) {
    let (store, place) = backend.seeded(events_per_sample).await;
    let relay = Relay::new(Arc::clone(&store), sink, RelayOptions::default()).unwrap();
    let started = Instant::now();
    let mut delivered = 0;
    loop {
        let round = relay.run_once().await.unwrap();
        if round.is_idle() {
            break;
        }
        delivered += round.delivered;
    }
    let elapsed = started.elapsed();
    assert_eq!(store.outbox_backlog().await.unwrap().pending, 0);
    store.close().await;
    place.remove().await;
    (elapsed, delivered)
}

/// Runs `samples` samples (after a warm-up one when there are several) and prints the median
/// throughput and the spread.
async fn measure<S, F>(name: &str, backend: Backend, samples: usize, per_sample: usize, mut sink: F)
where
    S: Sink,
    F: FnMut() -> S,
{
    if let Err(reason) = backend.available().await {
        println!("{name:<28} skipped: {reason}");
        return;
    }
    if samples > 1 {
        sample(backend, sink(), per_sample).await;
    }
    let mut rates = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (elapsed, delivered) = sample(backend, sink(), per_sample).await;
        rates.push(delivered as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{name:<28} {:>10.0} events/s   (spread {:.0} .. {:.0}){}",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        backend.note().await
    );
}

/// The channel sink, with a task that takes every event off the channel.
fn channel() -> ChannelSink {
    let (sink, mut receiver) = ChannelSink::unbounded();
    tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    sink
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let bench = std::env::args().any(|a| a == "--bench");
    let (samples, per_sample) = if bench {
        (SAMPLES, EVENTS)
    } else {
        (1, 10 * AGGREGATES)
    };
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let runs = |name: &str| only.as_deref().is_none_or(|word| name.contains(word));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "stockroom-relay: events/s from the outbox to the sink (claim, deliver, acknowledge), \
             median of {samples} samples of {per_sample} events, {AGGREGATES} aggregates"
        );
        for backend in BACKENDS {
            let name = format!("{} -> channel", backend.name());
            if runs(&name) {
                measure(&name, backend, samples, per_sample, channel).await;
            }
        }
        nats(&runs, samples, per_sample).await;
        rabbitmq(&runs, samples, per_sample).await;
    });
}

#[cfg(feature = "nats")]
async fn nats(runs: &dyn Fn(&str) -> bool, samples: usize, per_sample: usize) {
    use stockroom_relay::async_nats::jetstream::{self, stream};
    use stockroom_relay::NatsSink;

    if !BACKENDS
        .iter()
        .any(|backend| runs(&format!("{} -> jetstream", backend.name())))
    {
        return;
    }
    let server = match support::NatsServer::start() {
        Ok(server) => server,
        Err(reason) => {
            println!("{:<28} skipped: {reason}", "* -> jetstream");
            return;
        }
    };
    let client = stockroom_relay::async_nats::connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let config = stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.unwrap();
    for backend in BACKENDS {
        let name = format!("{} -> jetstream", backend.name());
        if runs(&name) {
            let sink = || NatsSink::new(js.clone()).with_prefix("bench");
            measure(&name, backend, samples, per_sample, sink).await;
        }
    }
    drop(server);
}

#[cfg(not(feature = "nats"))]
async fn nats(_: &dyn Fn(&str) -> bool, _: usize, _: usize) {
    println!(
        "{:<28} skipped: without the `nats` feature",
        "* -> jetstream"
    );
}

#[cfg(feature = "rabbitmq")]
async fn rabbitmq(runs: &dyn Fn(&str) -> bool, samples: usize, per_sample: usize) {
    use stockroom_relay::lapin::options::{
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
    };
    use stockroom_relay::lapin::types::FieldTable;
    use stockroom_relay::lapin::{Connection, ConnectionProperties, ExchangeKind};
    use stockroom_relay::RabbitMqSink;

    if !BACKENDS
        .iter()
        .any(|backend| runs(&format!("{} -> rabbitmq", backend.name())))
    {
        return;
    }
    let vhost = match support::Vhost::create("bench") {
        Ok(vhost) => vhost,
        Err(reason) => {
            println!("{:<28} skipped: {reason}", "* -> rabbitmq");
            return;
        }
    };
    let connection = Connection::connect(&vhost.uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            "events".into(),
            ExchangeKind::Topic,
            exchange,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare("all".into(), queue, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            "all".into(),
            "events".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for backend in BACKENDS {
        let name = format!("{} -> rabbitmq", backend.name());
        if runs(&name) {
            let sink = || RabbitMqSink::new(vhost.uri()).with_exchange("events");
            measure(&name, backend, samples, per_sample, sink).await;
            channel
                .queue_purge("all".into(), QueuePurgeOptions::default())
                .await
                .unwrap();
        }
    }
    let _ = connection.close(200, "done".into()).await;
}

#[cfg(not(feature = "rabbitmq"))]
async fn rabbitmq(_: &dyn Fn(&str) -> bool, _: usize, _: usize) {
    println!(
        "{:<28} skipped: without the `rabbitmq` feature",
        "* -> rabbitmq"
    );
}

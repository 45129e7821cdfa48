//! What the relay's tests share: stores with events in their outbox (the memory store, a fresh
//! PostgreSQL database per test), checks of what arrived, and the real brokers (a private
//! nats-server per test, a RabbitMQ vhost per test).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stockroom_core::outbox::{ClaimOptions, Event, EventId, NewEvent};
use stockroom_core::Store;
use stockroom_memory::MemoryStore;
use stockroom_relay::{Delivery, RelayOptions, Sink};

/// Whether this run is CI's (`CI=true`): a broker that is not there fails the test there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A broker this test needs is not there: fails loudly in CI, skips with the reason elsewhere.
#[allow(unused_macros)]
macro_rules! require {
    ($found:expr) => {
        match $found {
            Ok(found) => found,
            Err(reason) => {
                if crate::support::in_ci() {
                    panic!("the broker this test needs is not there (CI=true): {reason}");
                }
                eprintln!("SKIPPED: {reason} (set CI=true to make this a failure)");
                return;
            }
        }
    };
}

/// Logs to the test's output (`RUST_LOG=stockroom_relay=debug` for more).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "stockroom_relay=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A fresh memory store.
pub fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// Runs `body` on a store of a fresh PostgreSQL database (`stockroom_postgres::testing`: the
/// configured server, by default 127.0.0.1:5432, else a throwaway cluster; see its docs),
/// built as applications build theirs (`stockroom::connect_with`), then closes the store and
/// drops the database, whether `body` returned or panicked. Without a server the test is
/// skipped, and a line on stderr says why; under `CI=true` it fails instead.
pub async fn on_postgres<F, Fut>(body: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = stockroom_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let store = stockroom::connect_with(db.config())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
    let closing = Arc::clone(&store);
    db.drop_after(async move {
        body(store).await;
        closing.close().await;
    })
    .await;
}

/// Options for tests: 1 s leases, short waits.
pub fn quick_options() -> RelayOptions {
    RelayOptions::default()
        .with_claim(claim(256, 8))
        .with_idle_interval(Duration::from_millis(20))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_backlog_interval(None)
        .with_shutdown_grace(Duration::from_secs(5))
}

/// Claim options with a 1 s lease.
pub fn claim(max_events: usize, max_lanes: u16) -> ClaimOptions {
    ClaimOptions {
        max_events,
        max_lanes,
        lease: Duration::from_secs(1),
    }
}

/// `per_aggregate` events for each of `aggregates` aggregates (`<tag>-<a>`), interleaved as
/// units of work of `per_unit` events would write them; the payload names the aggregate and
/// the event's rank in it.
pub fn events(tag: &str, aggregates: usize, per_aggregate: usize) -> Vec<NewEvent> {
    let mut events = Vec::with_capacity(aggregates * per_aggregate);
    for rank in 0..per_aggregate {
        for a in 0..aggregates {
            let aggregate = format!("{tag}-{a}");
            let subject = if a % 2 == 0 {
                "orders.placed"
            } else {
                "orders.shipped"
            };
            let payload = format!("{aggregate}/{rank}");
            events.push(NewEvent::new(subject, aggregate, payload.into_bytes()).unwrap());
        }
    }
    events
}

/// Commits `events` in units of work of `per_unit` events each; their ids, in commit order.
pub async fn publish(store: &dyn Store, events: Vec<NewEvent>, per_unit: usize) -> Vec<EventId> {
    let ids = events.iter().map(NewEvent::id).collect();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let unit: Vec<NewEvent> = events.by_ref().take(per_unit.max(1)).collect();
        let mut uow = store.begin().await.unwrap();
        uow.publish_all(unit).await.unwrap();
        uow.commit().await.unwrap();
    }
    ids
}

/// Writes `events` in a unit of work that rolls back, and in one that is dropped; their ids.
pub async fn publish_and_roll_back(store: &dyn Store, events: Vec<NewEvent>) -> Vec<EventId> {
    let ids: Vec<EventId> = events.iter().map(NewEvent::id).collect();
    let half = events.len() / 2;
    let mut events = events;
    let dropped = events.split_off(half);
    let mut uow = store.begin().await.unwrap();
    uow.publish_all(events).await.unwrap();
    uow.rollback().await.unwrap();
    let mut uow = store.begin().await.unwrap();
    uow.publish_all(dropped).await.unwrap();
    drop(uow);
    ids
}

/// What a consumer saw of one message: the event's id, its aggregate, its outbox sequence,
/// its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub aggregate: String,
    pub sequence: i64,
    pub payload: Vec<u8>,
}

impl From<&Event> for Seen {
    fn from(event: &Event) -> Self {
        Seen {
            id: event.id.to_string(),
            aggregate: event.aggregate.clone(),
            sequence: event.sequence,
            payload: event.payload.clone(),
        }
    }
}

/// Checks that `seen` (in the broker's order) holds each of `expected` exactly once and
/// nothing else, each aggregate's events in their publish order (the payload's rank) and in
/// increasing outbox sequence.
pub fn assert_each_once_in_order(seen: &[Seen], expected: &[EventId]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in seen {
        *counts.entry(s.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let expected_ids: HashSet<String> = expected.iter().map(ToString::to_string).collect();
    let seen_ids: HashSet<String> = seen.iter().map(|s| s.id.clone()).collect();
    let missing = expected_ids.difference(&seen_ids).count();
    let extra: Vec<_> = seen_ids.difference(&expected_ids).collect();
    assert_eq!(
        missing,
        0,
        "{missing} of {} events never arrived",
        expected.len()
    );
    assert!(extra.is_empty(), "unexpected events arrived: {extra:?}");
    assert_in_order(seen);
}

/// Checks that each aggregate's events in `seen` (first copies only) come in publish order and
/// in increasing outbox sequence.
pub fn assert_in_order(seen: &[Seen]) {
    let mut first = HashSet::new();
    let mut last: HashMap<&str, (i64, usize)> = HashMap::new();
    for s in seen {
        if !first.insert(s.id.clone()) {
            continue;
        }
        let text = String::from_utf8(s.payload.clone()).unwrap();
        let (aggregate, rank) = text.rsplit_once('/').unwrap();
        assert_eq!(aggregate, s.aggregate);
        let rank: usize = rank.parse().unwrap();
        if let Some((sequence, previous)) = last.get(s.aggregate.as_str()) {
            assert!(
                s.sequence > *sequence && rank > *previous,
                "{} out of order: sequence {} rank {rank} after sequence {sequence} rank {previous}",
                s.aggregate,
                s.sequence
            );
        }
        last.insert(&s.aggregate, (s.sequence, rank));
    }
}

/// Waits until `check` holds, up to `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the store's outbox has nothing pending.
pub async fn drained(store: &dyn Store, limit: Duration) {
    eventually(limit, "the outbox drains", || async {
        store.outbox_backlog().await.unwrap().pending == 0
    })
    .await;
}

/// A sink around another that records every delivery: when, what it confirmed, whether it
/// failed. Not a mock: the events go to the real sink.
pub struct Recording<S> {
    pub inner: S,
    pub log: Arc<Mutex<Vec<Attempt>>>,
}

/// One delivery through a [`Recording`] sink.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub ids: Vec<String>,
    pub confirmed: usize,
    pub failed: bool,
}

impl<S> Recording<S> {
    pub fn new(inner: S) -> (Self, Arc<Mutex<Vec<Attempt>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                inner,
                log: Arc::clone(&log),
            },
            log,
        )
    }
}

/// The ids confirmed over every attempt of a log, with how often each.
pub fn confirmed_counts(log: &Mutex<Vec<Attempt>>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for attempt in log.lock().unwrap().iter() {
        for id in &attempt.ids[..attempt.confirmed] {
            *counts.entry(id.clone()).or_default() += 1;
        }
    }
    counts
}

#[async_trait]
impl<S: Sink> Sink for Recording<S> {
    fn system(&self) -> &'static str {
        self.inner.system()
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        let at = Instant::now();
        let delivery = self.inner.deliver(events).await;
        self.log.lock().unwrap().push(Attempt {
            at,
            ids: events.iter().map(|e| e.id.to_string()).collect(),
            confirmed: delivery.confirmed(),
            failed: !delivery.is_complete(),
        });
        delivery
    }
}

/// A sink that takes `by` before each delivery.
pub struct Slow<S> {
    pub inner: S,
    pub by: Duration,
}

#[async_trait]
impl<S: Sink> Sink for Slow<S> {
    fn system(&self) -> &'static str {
        self.inner.system()
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        tokio::time::sleep(self.by).await;
        self.inner.deliver(events).await
    }
}

/// A sink around another that delivers the first `pass` events of its first batch through it,
/// says so on `confirmed`, then never returns: a relay stuck between the broker's confirm and
/// the acknowledgement, to be killed there.
pub struct StallAfter<S> {
    pub inner: S,
    pub pass: usize,
    pub confirmed: tokio::sync::mpsc::UnboundedSender<usize>,
}

#[async_trait]
impl<S: Sink> Sink for StallAfter<S> {
    fn system(&self) -> &'static str {
        self.inner.system()
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        let pass = self.pass.min(events.len());
        let delivery = self.inner.deliver(&events[..pass]).await;
        assert!(delivery.is_complete(), "{delivery:?}");
        let _ = self.confirmed.send(delivery.confirmed());
        std::future::pending().await
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("stockroom-relay-{tag}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server of the test's own, with JetStream, on a free port of 127.0.0.1 and a
/// temporary store directory; killed (and its directory removed) when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts one; `Err` says why it could not.
    pub fn start() -> Result<Self, String> {
        if !Path::new(NATS_SERVER).exists() {
            return Err(format!(
                "{NATS_SERVER} is not installed (apt-get install nats-server)"
            ));
        }
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: TempDir::new("nats"),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("could not start {NATS_SERVER}: {e}"))?;
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "{NATS_SERVER} exited with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                ));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "{NATS_SERVER} did not listen on {} within 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("the server starts again");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const RABBITMQCTL: &str = "/usr/sbin/rabbitmqctl";

/// A RabbitMQ vhost of the test's own on the broker at 127.0.0.1:5672 (guest may use it);
/// deleted, with everything in it, when dropped.
pub struct Vhost {
    pub name: String,
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new(RABBITMQCTL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {RABBITMQCTL}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Vhost {
    /// Makes one; `Err` says why it could not.
    pub fn create(tag: &str) -> Result<Self, String> {
        if TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(2))
            .is_err()
        {
            return Err("no RabbitMQ listens on 127.0.0.1:5672".into());
        }
        if !Path::new(RABBITMQCTL).exists() {
            return Err(format!("{RABBITMQCTL} is not installed"));
        }
        let name = format!("stockroom-relay-{tag}-{}", uuid::Uuid::now_v7().simple());
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    /// The AMQP URI of the vhost, as guest.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// Closes every client connection to the vhost, as a broker restart would.
    pub fn close_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "closed by the test",
        ])
        .unwrap();
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(error) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("{error}");
        }
    }
}

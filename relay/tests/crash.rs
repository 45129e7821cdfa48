//! Crash safety of the outbox and its relay: a process killed right after a commit loses no
//! event, and a relay killed mid-batch delivers no event twice to JetStream nor out of order.
//!
//! A child process opens a SQLite file, runs tasks that publish events in units of work
//! (several aggregates, a per-aggregate counter in each payload) and a relay to a private
//! nats-server the parent started (a stream with a 10-minute duplicate window), and prints
//! `publishing <id>` before each commit and `committed <id>` after it (`rolled-back <id>` for
//! the units it rolls back, `delivered <n>` after each delivery of its relay). The parent
//! SIGKILLs it after some hundreds of committed events (once its relay delivered something, so
//! that the relay dies at work too), runs a second child on the same file and kills it too,
//! then opens the file itself and runs a relay until the outbox is empty. Then:
//!
//! - every event a child reported committed is in the stream exactly once (by `Nats-Msg-Id`);
//! - the stream holds nothing else than the outbox's events, and the outbox nothing else than
//!   what the children reported committed and the events of the units whose commit a child
//!   could not report before it died (announced, at most one unit per task per kill); no event
//!   of a rolled-back unit is anywhere;
//! - each aggregate's events are in the stream in commit order (their counters, and their
//!   outbox sequences, increase);
//! - nothing is pending in the outbox at the end.
//!
//! After each kill the stream is checked too: only outbox events, each once, in order.
//!
//! `harness = false`: the same binary is the child when `STOCKROOM_RELAY_CRASH_CHILD` names a
//! file. Without `/usr/sbin/nats-server` the test fails when `CI=true` and is skipped (with the
//! reason) otherwise.

#[macro_use]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom_core::outbox::{ClaimOptions, Event, NewEvent};
use stockroom_core::{Store, StoreConfig};
use stockroom_relay::async_nats;
use stockroom_relay::async_nats::jetstream::{self, stream};
use stockroom_relay::sinks::nats::{AGGREGATE_HEADER, SEQUENCE_HEADER};
use stockroom_relay::{Delivery, NatsSink, Relay, Sink};
use stockroom_sqlite::SqliteStore;
use support::{assert_in_order, claim, quick_options, NatsServer, Seen, TempDir};

/// Names the SQLite file: this process is the child.
const CHILD_ENV: &str = "STOCKROOM_RELAY_CRASH_CHILD";
/// The child's nats-server.
const NATS_ENV: &str = "STOCKROOM_RELAY_CRASH_NATS";
/// The child's round (0, 1): the high part of its counters.
const ROUND_ENV: &str = "STOCKROOM_RELAY_CRASH_ROUND";

const STREAM: &str = "CRASH";
const PREFIX: &str = "crash";
/// Publishing tasks of a child; each owns [`AGGREGATES_PER_WORKER`] aggregates, so that its
/// counters are its commit order.
const WORKERS: u64 = 8;
const AGGREGATES_PER_WORKER: u64 = 4;
/// Events per unit of work: 1 to this many.
const MAX_PER_UNIT: u64 = 3;
/// Every this many units of work of a task is rolled back.
const ROLLBACK_EVERY: u64 = 10;
/// A round's counters start at `round * ROUND_STRIDE`: a second child continues each
/// aggregate's counters above the first child's, without knowing where they stopped.
const ROUND_STRIDE: u64 = 1_000_000_000;
/// How many committed events each child reports before it is killed.
const KILL_AFTER: [usize; 2] = [400, 700];

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(Path::new(&path));
        return;
    }
    let started = Instant::now();
    println!("\nrunning 1 test");
    parent();
    println!("test crash::sigkill_after_commits_delivers_each_event_once_in_order ... ok");
    println!(
        "\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(path: &Path) -> StoreConfig {
    StoreConfig::new(format!("sqlite://{}", path.display()))
}

/// The relay's sink: JetStream on `url`, subjects under [`PREFIX`].
async fn sink(url: &str) -> NatsSink {
    let client = async_nats::connect(url)
        .await
        .expect("the test's nats-server answers");
    NatsSink::new(jetstream::new(client)).with_prefix(PREFIX)
}

/// Publishes forever on [`WORKERS`] tasks while a relay delivers to JetStream; prints
/// `publishing <id>` before each commit, `committed <id>` after it, `rolled-back <id>` after a
/// rollback.
fn child(path: &Path) {
    let url = std::env::var(NATS_ENV).expect("the parent names the nats-server");
    let round: u64 = std::env::var(ROUND_ENV)
        .expect("the parent names the round")
        .parse()
        .expect("a round number");
    runtime().block_on(async {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::connect(&config(path))
                .await
                .expect("child connect"),
        );
        // Leases of 2 s: the next process takes the lanes this one held soon after it died.
        let options = quick_options().with_claim(ClaimOptions {
            lease: Duration::from_secs(2),
            ..claim(256, 8)
        });
        let sink = Reporting(sink(&url).await);
        let _relay = Relay::new(Arc::clone(&store), sink, options)
            .expect("relay options")
            .spawn();
        let mut tasks = Vec::new();
        for worker in 0..WORKERS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64
                    ^ (worker + 1 + round * WORKERS).wrapping_mul(0xD1B5_4A32_D192_ED03);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut counters = [0u64; AGGREGATES_PER_WORKER as usize];
                for unit in 1u64.. {
                    let n = 1 + next() % MAX_PER_UNIT;
                    if unit % ROLLBACK_EVERY == 0 {
                        let aggregate = format!("gone-{worker}");
                        let events: Vec<NewEvent> = (0..n)
                            .map(|_| {
                                let payload = format!("{aggregate}/0").into_bytes();
                                NewEvent::new("orders.cancelled", aggregate.as_str(), payload)
                                    .unwrap()
                            })
                            .collect();
                        let ids: Vec<_> = events.iter().map(NewEvent::id).collect();
                        let mut uow = store.begin().await.expect("begin");
                        uow.publish_all(events).await.expect("publish");
                        uow.rollback().await.expect("rollback");
                        report(ids.iter().map(|id| format!("rolled-back {id}\n")));
                        continue;
                    }
                    let events: Vec<NewEvent> = (0..n)
                        .map(|_| {
                            let k = (next() % AGGREGATES_PER_WORKER) as usize;
                            counters[k] += 1;
                            let aggregate = format!("agg-{worker}-{k}");
                            let counter = round * ROUND_STRIDE + counters[k];
                            let subject = if k.is_multiple_of(2) {
                                "orders.placed"
                            } else {
                                "orders.shipped"
                            };
                            let payload = format!("{aggregate}/{counter}").into_bytes();
                            NewEvent::new(subject, aggregate, payload).unwrap()
                        })
                        .collect();
                    let ids: Vec<_> = events.iter().map(NewEvent::id).collect();
                    report(ids.iter().map(|id| format!("publishing {id}\n")));
                    let mut uow = store.begin().await.expect("begin");
                    uow.publish_all(events).await.expect("publish");
                    uow.commit().await.expect("commit");
                    report(ids.iter().map(|id| format!("committed {id}\n")));
                }
            }));
        }
        for task in tasks {
            task.await.expect("a publishing task");
        }
    });
}

/// The child's sink: says `delivered <n>` after each delivery (how many events JetStream
/// confirmed), so that the parent kills the child while its relay is at work.
struct Reporting(NatsSink);

#[async_trait::async_trait]
impl Sink for Reporting {
    fn system(&self) -> &'static str {
        self.0.system()
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        let delivery = self.0.deliver(events).await;
        report(std::iter::once(format!(
            "delivered {}\n",
            delivery.confirmed()
        )));
        delivery
    }
}

/// Writes `lines` to stdout at once and flushes: the parent reads them before the kill.
fn report(lines: impl Iterator<Item = String>) {
    let text: String = lines.collect();
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).expect("stdout");
    out.flush().expect("flush");
}

/// What a child said before it was killed (complete lines only).
#[derive(Default)]
struct Said {
    publishing: HashSet<String>,
    committed: HashSet<String>,
    rolled_back: HashSet<String>,
    /// Events the child's relay delivered (JetStream confirmed them).
    delivered: usize,
}

fn parent() {
    let server = require!(NatsServer::start());
    let rt = runtime();
    let js = rt.block_on(async {
        let client = async_nats::connect(server.url())
            .await
            .expect("the test's nats-server answers");
        let js = jetstream::new(client);
        let config = stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{PREFIX}.>")],
            storage: stream::StorageType::File,
            // Far longer than the leases and the whole test: every redelivery is dropped.
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .expect("create the stream");
        js
    });
    let dir = TempDir::new("crash");
    let path = dir.path().join("outbox.db");

    let mut said = Said::default();
    for (round, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let this = run_and_kill(&path, &server.url(), round, kill_after);
        let unreported = this.publishing.difference(&this.committed).count();
        println!(
            "round {round}: killed after {} committed events reported ({unreported} announced, \
             not reported committed; {} rolled back; {} delivered by its relay)",
            this.committed.len(),
            this.rolled_back.len(),
            this.delivered
        );
        assert!(
            this.committed.len() >= kill_after,
            "the child stopped early: {}",
            this.committed.len()
        );
        said.publishing.extend(this.publishing);
        said.committed.extend(this.committed);
        said.rolled_back.extend(this.rolled_back);

        // What the stream holds so far: outbox events only, each once, in order.
        let outbox = read_outbox(&path);
        let seen = rt.block_on(stored(&js));
        let pending = outbox.values().filter(|delivered| !**delivered).count();
        // Delivered by the killed relay, not acknowledged: the next relay delivers them again.
        let unacknowledged = seen
            .iter()
            .filter(|s| outbox.get(&s.id) == Some(&false))
            .count();
        println!(
            "round {round}: the outbox holds {} events ({pending} pending), the stream {} \
             ({unacknowledged} of them still pending in the outbox)",
            outbox.len(),
            seen.len()
        );
        check_stream(&seen, &outbox);
    }

    // The parent opens the file and relays the backlog.
    let backlog = rt.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::connect(&config(&path)).await.expect("connect"));
        let backlog = store.outbox_backlog().await.expect("backlog").pending;
        let relay = Relay::new(
            Arc::clone(&store),
            sink(&server.url()).await,
            quick_options(),
        )
        .expect("relay options")
        .spawn();
        support::drained(&*store, Duration::from_secs(60)).await;
        relay.stop().await.expect("the relay stops");
        assert_eq!(store.outbox_backlog().await.expect("backlog").pending, 0);
        store.close().await;
        backlog
    });

    let outbox = read_outbox(&path);
    let seen = rt.block_on(stored(&js));
    check_stream(&seen, &outbox);
    assert!(
        outbox.values().all(|delivered| *delivered),
        "an event is still pending"
    );
    let in_stream: HashSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let missing: Vec<_> = said
        .committed
        .iter()
        .filter(|id| !in_stream.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events reported committed are not in the stream: {missing:?}",
        missing.len()
    );
    // The outbox holds what was reported committed, and the events of the units whose commit
    // the child could not report: announced, at most one unit per task per kill.
    let unreported: Vec<&String> = outbox
        .keys()
        .filter(|id| !said.committed.contains(*id))
        .collect();
    for id in &unreported {
        assert!(
            said.publishing.contains(*id),
            "{id} is in the outbox, but no child announced it"
        );
    }
    let bound = KILL_AFTER.len() * (WORKERS * MAX_PER_UNIT) as usize;
    assert!(
        unreported.len() <= bound,
        "{} committed events were not reported (at most {bound})",
        unreported.len()
    );
    for id in &said.rolled_back {
        assert!(
            !outbox.contains_key(id) && !in_stream.contains(id.as_str()),
            "{id} of a rolled-back unit of work is in the outbox or the stream"
        );
    }
    assert_eq!(seen.len(), outbox.len());
    println!(
        "done: {} events reported committed, {} committed but not reported before a kill, {} \
         rolled back; the parent's relay delivered a backlog of {backlog}; the stream holds {} \
         messages, each outbox event once; {} aggregates in order",
        said.committed.len(),
        unreported.len(),
        said.rolled_back.len(),
        seen.len(),
        seen.iter()
            .map(|s| s.aggregate.as_str())
            .collect::<HashSet<_>>()
            .len()
    );
    drop(rt);
    drop(server);
}

/// Starts a child on `path`, waits for `kill_after` reported commits and a delivery of its
/// relay, SIGKILLs it, and returns what it said.
fn run_and_kill(path: &Path, nats: &str, round: usize, kill_after: usize) -> Said {
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, path)
        .env(NATS_ENV, nats)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut said = Said::default();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).expect("read child output") == 0 {
            break;
        }
        // A line cut by the kill has no newline: it is not counted.
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        if let Some(id) = line.strip_prefix("committed ") {
            said.committed.insert(id.to_owned());
        } else if let Some(id) = line.strip_prefix("publishing ") {
            said.publishing.insert(id.to_owned());
        } else if let Some(id) = line.strip_prefix("rolled-back ") {
            said.rolled_back.insert(id.to_owned());
        } else if let Some(n) = line.strip_prefix("delivered ") {
            said.delivered += n.parse::<usize>().expect("a count");
        }
        // Once the relay is at work too: it dies mid-run as well.
        let due = said.committed.len() >= kill_after && said.delivered > 0;
        if !killed && (due || Instant::now() > deadline) {
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the child was not killed: {status:?}"
        );
    }
    #[cfg(not(unix))]
    assert!(!status.success());
    said
}

/// A child process that a panic of the parent does not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Every event of the SQLite outbox, by id, and whether it was marked delivered.
fn read_outbox(path: &Path) -> HashMap<String, bool> {
    let conn = rusqlite::Connection::open(path).expect("open the file");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let mut statement = conn
        .prepare("SELECT id, delivered_at IS NOT NULL FROM stockroom_outbox")
        .expect("prepare");
    let rows = statement
        .query_map([], |row| {
            let id: Vec<u8> = row.get(0)?;
            let delivered: bool = row.get(1)?;
            Ok((id, delivered))
        })
        .expect("query");
    rows.map(|row| {
        let (id, delivered) = row.expect("a row");
        let id = uuid::Uuid::from_slice(&id).expect("a 16-byte id");
        (id.to_string(), delivered)
    })
    .collect()
}

/// Every message of the stream, in the stream's order.
async fn stored(js: &jetstream::Context) -> Vec<Seen> {
    let stream = js.get_stream(STREAM).await.expect("the stream");
    let state = stream.get_info().await.expect("stream info").state;
    let mut seen = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return seen;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("a stored message");
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("header {name} on message {sequence}"))
                .as_str()
                .to_owned()
        };
        assert!(
            message.subject.as_str() == "crash.orders.placed"
                || message.subject.as_str() == "crash.orders.shipped",
            "{}",
            message.subject
        );
        seen.push(Seen {
            id: header("Nats-Msg-Id"),
            aggregate: header(AGGREGATE_HEADER),
            sequence: header(SEQUENCE_HEADER).parse().expect("a sequence"),
            payload: message.payload.to_vec(),
        });
    }
    seen
}

/// The stream holds outbox events only, each once, each aggregate's in commit order.
fn check_stream(seen: &[Seen], outbox: &HashMap<String, bool>) {
    let mut ids = HashSet::new();
    for s in seen {
        assert!(ids.insert(s.id.as_str()), "{} is in the stream twice", s.id);
        assert!(
            outbox.contains_key(&s.id),
            "{} is in the stream but not in the outbox",
            s.id
        );
    }
    assert_in_order(seen);
}

//! The outbox on MariaDB: what only its locks and statements give. (The semantics every backend
//! shares are the conformance suite's `outbox` and `own_events` cases.)
//!
//! - Concurrent claims lease disjoint lanes and never wait for each other (`FOR UPDATE SKIP
//!   LOCKED` on the lease rows), one of them held in flight while the other runs.
//! - Within an aggregate, sequence order is commit order under concurrency (each unit of work
//!   holds its lanes' publishing locks, rows of `stockroom_outbox_lane_locks`, from its first
//!   publish to its end).
//! - A unit of work left open on a lane holds up the next unit of work publishing to that lane,
//!   but neither a claim nor a settle: those locks are not the lease rows.
//! - Appends are cut into statements the server takes (5,000 events; 20 MiB of payloads), in
//!   publish order; Stockroom's own events take no lane lock.
//! - A settle whose lease was taken over marks its events and gives back only its own lanes; a
//!   purge of more than one batch deletes them all.
//!
//! One fresh database per test; each test is skipped without MariaDB (see `support`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, MySqlConnection};
use stockroom_core::outbox::{lane_of, ClaimOptions, Claimed, Event, EventId, NewEvent, LANES};
use stockroom_core::{time, Store};
use stockroom_mariadb::{connection, MariaDbOptions, MariaDbStore};
use support::TestDatabase;

/// Runs `body` on a fresh database, dropped afterwards whether `body` passed or panicked.
async fn with_database<F, Fut>(body: F)
where
    F: FnOnce(TestDatabase) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    db.clone().drop_after(body(db)).await;
}

/// An aggregate on each lane, lane by lane.
fn an_aggregate_per_lane() -> Vec<String> {
    let mut by_lane: Vec<Option<String>> = vec![None; usize::from(LANES)];
    let mut i = 0;
    while by_lane.iter().any(Option::is_none) {
        let aggregate = format!("order-{i}");
        by_lane[usize::from(lane_of(&aggregate))].get_or_insert(aggregate);
        i += 1;
    }
    by_lane.into_iter().flatten().collect()
}

fn event(aggregate: &str, payload: impl Into<Vec<u8>>) -> NewEvent {
    NewEvent::new("orders.placed", aggregate, payload).unwrap()
}

/// Publishes `events` in a unit of work of their own, committed.
async fn publish(store: &MariaDbStore, events: Vec<NewEvent>) {
    let mut uow = store.begin().await.unwrap();
    uow.publish_all(events).await.unwrap();
    uow.commit().await.unwrap();
}

/// Commits `per_lane` events on every lane, in one unit of work: round by round, lane by lane.
async fn publish_on_every_lane(store: &MariaDbStore, per_lane: usize) {
    let mut events = Vec::new();
    for round in 0..per_lane {
        for aggregate in an_aggregate_per_lane() {
            events.push(event(&aggregate, format!("{round}")));
        }
    }
    publish(store, events).await;
}

/// The lanes of a claim's events.
fn lanes(claimed: &Claimed) -> BTreeSet<u16> {
    claimed.events().iter().map(|e| e.lane).collect()
}

fn payloads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect()
}

/// A claim of at most half the lanes.
fn half() -> ClaimOptions {
    ClaimOptions {
        max_lanes: LANES / 2,
        max_events: 1_000,
        ..ClaimOptions::default()
    }
}

/// A claim of everything.
fn everything() -> ClaimOptions {
    ClaimOptions {
        max_lanes: LANES,
        max_events: 10_000,
        ..ClaimOptions::default()
    }
}

/// Holds the first claim to lease lanes in flight, in its transaction, after it locked them:
/// the first row its update leases makes the trigger take the named lock `<database>/first`
/// (at once, or not at all when another session has it) and then, having taken it, wait for
/// `<database>/gate`, which the test holds. Every other session finds `first` taken and goes
/// on. (Named locks are the server's: the database's name keeps them to this test.)
const HOLD_CLAIM: &str = "\
CREATE TRIGGER `hold_claim` AFTER UPDATE ON `stockroom_outbox_lanes` FOR EACH ROW
BEGIN
  IF NEW.`holder` IS NOT NULL AND GET_LOCK(CONCAT(DATABASE(), '/first'), 0) = 1 THEN
    SET @gate = GET_LOCK(CONCAT(DATABASE(), '/gate'), 60);
  END IF;
END";

/// Waits until a session holds the named lock `<database>/first` (see [`HOLD_CLAIM`]).
async fn until_the_first_claim_is_held(conn: &mut MySqlConnection) {
    for _ in 0..1_000 {
        let held: Option<i64> =
            sqlx::query_scalar("SELECT IS_USED_LOCK(CONCAT(DATABASE(), '/first'))")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        if held.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no claim reached the trigger within ten seconds");
}

/// Two claims in flight at once, from two tasks: the first is held in its transaction after it
/// locked and leased its lanes, uncommitted, while the second runs. The second neither waits
/// for the first's lane rows (`SKIP LOCKED`: it returns while the first is still held) nor takes
/// any of them: it passes over the sixteen oldest lanes, which the first holds, and leases the
/// sixteen others. Together they lease every lane once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_flight_keeps_its_lanes_and_another_takes_the_others_without_waiting() {
    with_database(|db| async move {
        let store = Arc::new(db.store().await);
        publish_on_every_lane(&store, 2).await;
        let mut on_db = db.connect().await;
        sqlx::raw_sql(HOLD_CLAIM).execute(&mut on_db).await.unwrap();
        let gate: i64 = sqlx::query_scalar("SELECT GET_LOCK(CONCAT(DATABASE(), '/gate'), 0)")
            .fetch_one(&mut on_db)
            .await
            .unwrap();
        assert_eq!(gate, 1);

        let first = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.claim_events(&half()).await }
        });
        until_the_first_claim_is_held(&mut on_db).await;
        let second = tokio::time::timeout(Duration::from_secs(5), store.claim_events(&half()))
            .await
            .expect("the second claim waited for the first one's lanes")
            .unwrap();
        assert!(!first.is_finished(), "the first claim is still in flight");
        sqlx::query("SELECT RELEASE_LOCK(CONCAT(DATABASE(), '/gate'))")
            .execute(&mut on_db)
            .await
            .unwrap();
        let first = first.await.unwrap().unwrap();
        sqlx::raw_sql("DROP TRIGGER `hold_claim`")
            .execute(&mut on_db)
            .await
            .unwrap();

        // Lane k's oldest event is the k+1th published: the first claim took the sixteen
        // oldest lanes, the second the sixteen others, which the first had not released.
        let (a, b) = (lanes(&first), lanes(&second));
        assert_eq!(a, (0..16).collect(), "{a:?}");
        assert_eq!(b, (16..32).collect(), "{b:?}");
        // Every event of each lane, two per lane, in sequence order.
        assert_eq!((first.len(), second.len()), (32, 32));
        for claimed in [&first, &second] {
            let sequences: Vec<i64> = claimed.events().iter().map(|e| e.sequence).collect();
            assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
        }
        let none = store.claim_events(&ClaimOptions::default()).await.unwrap();
        assert!(none.is_empty(), "every lane is leased");

        first.release().await.unwrap();
        second.release().await.unwrap();
        let again = store.claim_events(&everything()).await.unwrap();
        assert_eq!(again.len(), 64, "released lanes are claimed again");
        again.acknowledge(64).await.unwrap();
        store.close().await;
        let _ = on_db.close().await;
    })
    .await;
}

/// Two tasks claim at once, round after round, on two connections of one store: each claim
/// gets half the lanes, never one of the other's. (That neither waits for the other is the
/// test above: here they may or may not overlap.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_lease_disjoint_lanes() {
    with_database(|db| async move {
        let store = Arc::new(db.store().await);
        publish_on_every_lane(&store, 1).await;
        for round in 0..30 {
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let claim = || {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim_events(&half()).await.unwrap()
                })
            };
            let (a, b) = (claim(), claim());
            let (a, b) = tokio::time::timeout(Duration::from_secs(10), async {
                (a.await.unwrap(), b.await.unwrap())
            })
            .await
            .expect("concurrent claims waited for each other");
            let (la, lb) = (lanes(&a), lanes(&b));
            assert_eq!(
                (la.len(), lb.len()),
                (16, 16),
                "round {round}: {la:?} {lb:?}"
            );
            assert!(la.is_disjoint(&lb), "round {round}: {la:?} {lb:?}");
            a.release().await.unwrap();
            b.release().await.unwrap();
        }
        store.close().await;
    })
    .await;
}

/// A small deterministic generator (SplitMix64), so that each task's choices differ.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Within an aggregate, sequence order is commit order, under concurrency.
///
/// Eight tasks each run units of work that publish an event for one or two of four shared
/// aggregates, sleep a random 0 to 3 ms, then, in the same transaction, increment each of those
/// aggregates' counter row and record the event's number `n`. The counter row is locked from
/// that update to the commit, so for each aggregate the numbers are exactly the commit order
/// (1, 2, 3, … without gaps). The check: each aggregate's events, in sequence order, are
/// numbered 1, 2, 3, …
///
/// Without the lane locks this fails: unit of work A publishes (sequence 10), B publishes
/// (sequence 11), B wakes first and takes the counter (n = 1) and commits, then A (n = 2):
/// sequence order 10, 11 but commit order B, A — the inversion a relay would deliver out of
/// order (it could read 11 committed while 10 was not yet). With them, B's publish waits for
/// A's commit, so B's sequence and its number both come after A's. (Checked by running this
/// test with `append_events`' lock statement left out: it fails on the first check.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_an_aggregate_sequence_order_is_commit_order() {
    const TASKS: u64 = 8;
    const UNITS: u64 = 30;
    const AGGREGATES: [&str; 4] = ["cart-1", "cart-2", "cart-3", "cart-4"];
    with_database(|db| async move {
        let config = db.config().with_max_connections(TASKS as u32 + 1);
        let store = Arc::new(MariaDbStore::connect(&config).await.unwrap());
        let mut on_db = db.connect().await;
        sqlx::raw_sql(
            "CREATE TABLE `counters` (`aggregate` VARCHAR(64) PRIMARY KEY,
                                      `n` BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB;
             CREATE TABLE `numbered` (`event_id` BINARY(16) PRIMARY KEY,
                                      `aggregate` VARCHAR(64) NOT NULL,
                                      `n` BIGINT NOT NULL) ENGINE=InnoDB;
             INSERT INTO `counters` (`aggregate`)
             VALUES ('cart-1'), ('cart-2'), ('cart-3'), ('cart-4');",
        )
        .execute(&mut on_db)
        .await
        .unwrap();

        let tasks = (0..TASKS).map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut random = Random(task + 1);
                for unit in 0..UNITS {
                    let first = random.below(4) as usize;
                    let mut chosen = BTreeSet::from([AGGREGATES[first]]);
                    if random.below(3) == 0 {
                        chosen.insert(AGGREGATES[(first + 1 + random.below(3) as usize) % 4]);
                    }
                    let events: Vec<NewEvent> = chosen
                        .iter()
                        .map(|a| event(a, format!("{task}/{unit}")))
                        .collect();
                    let published: Vec<(uuid::Uuid, String)> = events
                        .iter()
                        .map(|e| (e.id().as_uuid(), e.aggregate().to_owned()))
                        .collect();
                    let mut uow = store.begin().await.unwrap();
                    uow.publish_all(events).await.unwrap();
                    tokio::time::sleep(Duration::from_micros(random.below(3_000))).await;
                    let conn = connection(uow.as_mut()).unwrap();
                    for (id, aggregate) in &published {
                        sqlx::query("UPDATE `counters` SET `n` = `n` + 1 WHERE `aggregate` = ?")
                            .bind(aggregate)
                            .execute(&mut *conn)
                            .await
                            .unwrap();
                        let n: i64 =
                            sqlx::query_scalar("SELECT `n` FROM `counters` WHERE `aggregate` = ?")
                                .bind(aggregate)
                                .fetch_one(&mut *conn)
                                .await
                                .unwrap();
                        sqlx::query("INSERT INTO `numbered` VALUES (?, ?, ?)")
                            .bind(id)
                            .bind(aggregate)
                            .bind(n)
                            .execute(&mut *conn)
                            .await
                            .unwrap();
                    }
                    uow.commit().await.unwrap();
                }
            })
        });
        for task in futures_util::future::join_all(tasks).await {
            task.unwrap();
        }

        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT o.`aggregate`, o.`sequence`, x.`n` FROM `stockroom_outbox` o \
             JOIN `numbered` x ON x.`event_id` = o.`id` ORDER BY o.`aggregate`, o.`sequence`",
        )
        .fetch_all(&mut on_db)
        .await
        .unwrap();
        let mut numbers: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (aggregate, _, n) in rows {
            numbers.entry(aggregate).or_default().push(n);
        }
        assert_eq!(numbers.len(), AGGREGATES.len());
        let mut total = 0;
        for (aggregate, numbers) in &numbers {
            let commit_order: Vec<i64> = (1..=numbers.len() as i64).collect();
            assert_eq!(
                numbers, &commit_order,
                "{aggregate}: numbers (commit order) in sequence order"
            );
            total += numbers.len();
        }
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM `stockroom_outbox`")
            .fetch_one(&mut on_db)
            .await
            .unwrap();
        assert_eq!(events as usize, total, "every event was numbered");
        assert!(total as u64 >= TASKS * UNITS);
        store.close().await;
        let _ = on_db.close().await;
    })
    .await;
}

/// A unit of work left open after it published to a lane holds that lane's publishing lock: the
/// next unit of work publishing to the lane waits for it. But a claim of the lane's committed
/// events does not wait (it leases the lane, reads them, and returns), nor does the settle of
/// that claim; and once the first unit of work commits, the second goes on, and their events
/// come in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_open_on_a_lane_holds_up_the_next_publisher_but_no_relay() {
    with_database(|db| async move {
        // A lock wait long enough for the check that the next publisher waits, under load.
        let options = MariaDbOptions::from_config(&db.config())
            .with_lock_wait_timeout(Duration::from_secs(60));
        let store = Arc::new(
            MariaDbStore::connect_with(&db.config(), options)
                .await
                .unwrap(),
        );
        publish(&store, vec![event("order-1", "committed")]).await;

        let mut open = store.begin().await.unwrap();
        open.publish(event("order-1", "open")).await.unwrap();

        let claimed =
            tokio::time::timeout(Duration::from_secs(5), store.claim_events(&everything()))
                .await
                .expect("the claim waited for the open unit of work")
                .unwrap();
        assert_eq!(payloads(claimed.events()), ["committed"]);
        tokio::time::timeout(Duration::from_secs(5), claimed.acknowledge(1))
            .await
            .expect("the settle waited for the open unit of work")
            .unwrap();

        let next = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                let mut uow = store.begin().await.unwrap();
                uow.publish(event("order-1", "next")).await.unwrap();
                uow.commit().await.unwrap();
            }
        });
        until_a_transaction_waits_for_a_lock(&db).await;
        assert!(
            !next.is_finished(),
            "the next publisher waits for the open one"
        );
        open.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next publisher went on after the commit")
            .unwrap();

        let claimed = store.claim_events(&everything()).await.unwrap();
        assert_eq!(payloads(claimed.events()), ["open", "next"]);
        claimed.acknowledge(2).await.unwrap();
        let backlog = store.outbox_backlog().await.unwrap();
        assert_eq!((backlog.pending, backlog.delivered), (0, 3));
        store.close().await;
    })
    .await;
}

/// Waits until a transaction waits for a row lock of a table of `db`, as InnoDB's own status
/// says. (Not `information_schema.INNODB_TRX`: InnoDB refreshes that table's cache only when
/// nobody read it in the last 100 ms, so a poll, or another test's, can keep it showing the
/// moment before the wait.)
async fn until_a_transaction_waits_for_a_lock(db: &TestDatabase) {
    let mut admin = db.server().admin().await;
    let table = format!("`{}`.", db.name());
    for _ in 0..400 {
        let status = sqlx::raw_sql("SHOW ENGINE INNODB STATUS")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        let text: String = sqlx::Row::get(&status, "Status");
        let waiting = text
            .split("---TRANSACTION")
            .any(|block| block.contains("LOCK WAIT") && block.contains(&table));
        if waiting {
            let _ = admin.close().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no transaction waited for a lock of {table} within ten seconds");
}

/// The publishing locks' counters: lane by lane, how many appends locked it.
async fn publications(conn: &mut MySqlConnection) -> Vec<u64> {
    sqlx::query_scalar("SELECT `publications` FROM `stockroom_outbox_lane_locks` ORDER BY `lane`")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// A unit of work that publishes 5,000 events of distinct aggregates (4,000 in one call, then
/// 1,000 one by one) commits them all, in the order published (the 4,000 go in several
/// statements), and each call locked each of its lanes once: the first call all 32 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_go_in_in_publish_order_locking_each_lane_once_per_call() {
    with_database(|db| async move {
        let store = db.store().await;
        let events: Vec<NewEvent> = (0..5_000)
            .map(|i| event(&format!("order-{i}"), vec![1, 2, 3]))
            .collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id().as_uuid()).collect();
        let mut expected = vec![1u64; usize::from(LANES)];
        for e in &events[4_000..] {
            expected[usize::from(e.lane())] += 1;
        }
        let mut uow = store.begin().await.unwrap();
        let mut events = events.into_iter();
        uow.publish_all(events.by_ref().take(4_000).collect())
            .await
            .unwrap();
        for event in events {
            uow.publish(event).await.unwrap();
        }
        uow.commit().await.unwrap();

        let backlog = store.outbox_backlog().await.unwrap();
        assert_eq!(backlog.pending, 5_000);
        let mut on_db = db.connect().await;
        let stored: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT `id` FROM `stockroom_outbox` ORDER BY `sequence`")
                .fetch_all(&mut on_db)
                .await
                .unwrap();
        assert_eq!(stored, ids, "sequence order is publish order");
        assert_eq!(publications(&mut on_db).await, expected);
        store.close().await;
        let _ = on_db.close().await;
    })
    .await;
}

/// Twenty events of a megabyte each, published in one call, are more than one statement may
/// carry (the server's `max_allowed_packet` is 16 MiB): they go in several, and come back whole,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_of_payloads_in_one_call_go_in() {
    with_database(|db| async move {
        let store = db.store().await;
        let events: Vec<NewEvent> = (0..20u8)
            .map(|i| event("order-1", vec![i; 1 << 20]))
            .collect();
        let ids: Vec<EventId> = events.iter().map(NewEvent::id).collect();
        publish(&store, events).await;
        let claimed = store.claim_events(&everything()).await.unwrap();
        assert_eq!(
            claimed.events().iter().map(|e| e.id).collect::<Vec<_>>(),
            ids
        );
        for (i, e) in claimed.events().iter().enumerate() {
            assert_eq!(e.payload.len(), 1 << 20);
            assert!(e.payload.iter().all(|&b| usize::from(b) == i), "event {i}");
        }
        claimed.acknowledge(20).await.unwrap();
        store.close().await;
    })
    .await;
}

/// Stockroom's own events (here, of products created) take no lane lock: their product's row
/// lock orders them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_events_take_no_lane_lock() {
    with_database(|db| async move {
        let store = MariaDbStore::connect(&db.config().with_own_events(true))
            .await
            .unwrap();
        let mut uow = store.begin().await.unwrap();
        for n in 0..40 {
            uow.products().create(support::product(n)).await.unwrap();
        }
        uow.commit().await.unwrap();
        let mut on_db = db.connect().await;
        assert_eq!(publications(&mut on_db).await, vec![0; usize::from(LANES)]);
        let created: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM `stockroom_outbox` WHERE `subject` = 'stockroom.product.created'",
        )
        .fetch_one(&mut on_db)
        .await
        .unwrap();
        assert_eq!(created, 40);
        store.close().await;
        let _ = on_db.close().await;
    })
    .await;
}

/// A claim whose lease ran out and was taken by another claim still marks the events it
/// delivered when it is acknowledged (they were delivered), and gives back only what it still
/// holds: the lane stays the other claim's until that one is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_after_its_lease_was_taken_marks_its_events_and_frees_only_its_own() {
    with_database(|db| async move {
        let store = db.store().await;
        publish(&store, vec![event("order-1", "a")]).await;
        let short = ClaimOptions {
            lease: Duration::from_secs(1),
            ..everything()
        };
        let late = store.claim_events(&short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let taker = store.claim_events(&everything()).await.unwrap();
        assert_eq!(payloads(taker.events()), ["a"], "the lease ran out");
        late.acknowledge(1).await.unwrap();
        let backlog = store.outbox_backlog().await.unwrap();
        assert_eq!((backlog.pending, backlog.delivered), (0, 1), "{backlog:?}");

        publish(&store, vec![event("order-1", "b")]).await;
        assert!(
            store.claim_events(&everything()).await.unwrap().is_empty(),
            "the lane is still the taker's"
        );
        taker.release().await.unwrap();
        let next = store.claim_events(&everything()).await.unwrap();
        assert_eq!(payloads(next.events()), ["b"]);
        next.acknowledge(1).await.unwrap();
        store.close().await;
    })
    .await;
}

/// A purge of more delivered events than one batch takes deletes them all, and none of the
/// undelivered ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_several_batches_deletes_every_delivered_event() {
    with_database(|db| async move {
        let store = db.store().await;
        let events: Vec<NewEvent> = (0..2_500)
            .map(|i| event(&format!("order-{i}"), vec![0; 8]))
            .collect();
        publish(&store, events).await;
        let claimed = store.claim_events(&everything()).await.unwrap();
        assert_eq!(claimed.len(), 2_500);
        claimed.acknowledge(2_500).await.unwrap();
        publish(&store, vec![event("order-x", "waits")]).await;

        let later = time::now() + chrono::Duration::seconds(1);
        assert_eq!(store.purge_delivered_events(later).await.unwrap(), 2_500);
        let backlog = store.outbox_backlog().await.unwrap();
        assert_eq!((backlog.pending, backlog.delivered), (1, 0), "{backlog:?}");
        assert_eq!(store.purge_delivered_events(later).await.unwrap(), 0);
        store.close().await;
    })
    .await;
}

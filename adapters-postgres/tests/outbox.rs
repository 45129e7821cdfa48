//! The outbox on PostgreSQL: what only its locks give. (The semantics every backend shares are
//! the conformance suite's `outbox` cases.)
//!
//! - Concurrent claims lease disjoint lanes and never wait for each other (`FOR UPDATE SKIP
//!   LOCKED` on the lane rows), one of them held in flight while the other runs.
//! - Within an aggregate, sequence order is commit order under concurrency (each unit of work
//!   holds its lanes' advisory locks from its first publish to its end).
//! - However many aggregates a unit of work publishes to, it holds at most 32 advisory locks
//!   (one per lane), and Stockroom's own events take none.
//! - The native stock move writes its own event once, when it applies.
//!
//! One fresh database per test; each test is skipped without PostgreSQL (see `support`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use stockroom_core::outbox::{lane_of, subjects, ClaimOptions, Claimed, NewEvent, LANES};
use stockroom_core::{Error, Store, StoreExt, TransferRequest, UnitOfWorkExt};
use stockroom_postgres::{connection, PostgresStore};
use support::{seed_products, TestDatabase};

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

/// Commits `per_lane` events on every lane, in one unit of work.
async fn publish_on_every_lane(store: &PostgresStore, per_lane: usize) {
    let mut events = Vec::new();
    for round in 0..per_lane {
        for aggregate in an_aggregate_per_lane() {
            events.push(NewEvent::new("orders.placed", aggregate, format!("{round}")).unwrap());
        }
    }
    let mut uow = store.begin().await.unwrap();
    uow.publish_all(events).await.unwrap();
    uow.commit().await.unwrap();
}

/// The lanes of a claim's events.
fn lanes(claimed: &Claimed) -> BTreeSet<u16> {
    claimed.events().iter().map(|e| e.lane).collect()
}

/// A claim of at most half the lanes.
fn half() -> ClaimOptions {
    ClaimOptions {
        max_lanes: LANES / 2,
        max_events: 1_000,
        ..ClaimOptions::default()
    }
}

/// The application name of the store whose claims [`HOLD_CLAIM`] holds.
const HELD: &str = "outbox-claim-held";

/// The advisory lock (a `bigint` key of the test's own) that [`HOLD_CLAIM`] waits for.
const GATE: i64 = 4242;

/// Holds a claim of the store named [`HELD`] in flight, at the end of its statement: a trigger
/// after the statement's update of the lane rows (a statement-level `AFTER` trigger of a CTE's
/// update fires when the whole statement has run) waits for [`GATE`]. By then the claim has
/// locked and leased every lane it picked, and its transaction is still open.
const HOLD_CLAIM: &str = "\
CREATE FUNCTION hold_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('application_name') = 'outbox-claim-held' THEN
    PERFORM pg_advisory_xact_lock_shared(4242);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER hold_claim AFTER UPDATE ON stockroom_outbox_lanes
  FOR EACH STATEMENT EXECUTE FUNCTION hold_claim();";

/// Two claims in flight at once, on two connections (two stores) from two tasks: the first is
/// held at the end of its statement, its lanes locked and leased but not committed, while the
/// second runs. The second neither waits for the first's lane rows (`SKIP LOCKED`: it returns
/// while the first is still held) nor takes any of them; together they lease every lane once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_flight_keeps_its_lanes_and_another_takes_the_others_without_waiting() {
    with_database(|db| async move {
        let held = PostgresStore::connect(&db.config().with_application_name(HELD))
            .await
            .unwrap();
        let held = Arc::new(held);
        let other = db.store().await;
        publish_on_every_lane(&other, 2).await;
        let mut on_db = PgConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql(HOLD_CLAIM).execute(&mut on_db).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(GATE)
            .execute(&mut on_db)
            .await
            .unwrap();

        let first = tokio::spawn({
            let held = Arc::clone(&held);
            async move { held.claim_events(&half()).await }
        });
        support::until_a_session_waits_for_a_lock(db.name()).await;
        let second = tokio::time::timeout(Duration::from_secs(5), other.claim_events(&half()))
            .await
            .expect("the second claim waited for the first one's lanes")
            .unwrap();
        assert!(!first.is_finished(), "the first claim is still in flight");
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(GATE)
            .execute(&mut on_db)
            .await
            .unwrap();
        let first = first.await.unwrap().unwrap();

        // Lane k's oldest event is the k+1th published: the first claim took the sixteen
        // oldest lanes, the second the sixteen others, which the first had not released.
        let (a, b) = (lanes(&first), lanes(&second));
        assert_eq!(a, (0..16).collect(), "{a:?}");
        assert_eq!(b, (16..32).collect(), "{b:?}");
        // Every event of each lane, two per lane.
        assert_eq!((first.len(), second.len()), (32, 32));
        let none = other.claim_events(&ClaimOptions::default()).await.unwrap();
        assert!(none.is_empty(), "every lane is leased");

        first.release().await.unwrap();
        second.release().await.unwrap();
        let all = ClaimOptions {
            max_lanes: LANES,
            ..half()
        };
        let again = other.claim_events(&all).await.unwrap();
        assert_eq!(again.len(), 64, "released lanes are claimed again");
        again.acknowledge(64).await.unwrap();
        held.close().await;
        other.close().await;
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
/// aggregates' counter row (`UPDATE … RETURNING n`) and record the event's number `n`. The
/// counter row is locked from that update to the commit, so for each aggregate the numbers are
/// exactly the commit order (1, 2, 3, … without gaps). The check: each aggregate's events, in
/// sequence order, are numbered 1, 2, 3, …
///
/// Without the lane lock this fails: unit of work A publishes (sequence 10), B publishes
/// (sequence 11), B wakes first and takes the counter (n = 1) and commits, then A (n = 2):
/// sequence order 10, 11 but commit order B, A — the inversion a relay would deliver out of
/// order (it could read 11 committed while 10 was not yet). With it, B's publish waits for A's
/// commit, so B's sequence and its number both come after A's. (Checked by running this test
/// with the lock left out: it fails within the first few dozen units of work.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_an_aggregate_sequence_order_is_commit_order() {
    const TASKS: u64 = 8;
    const UNITS: u64 = 30;
    const AGGREGATES: [&str; 4] = ["cart-1", "cart-2", "cart-3", "cart-4"];
    with_database(|db| async move {
        let config = db.config().with_max_connections(TASKS as u32 + 1);
        let store = Arc::new(PostgresStore::connect(&config).await.unwrap());
        let mut on_db = PgConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE counters (aggregate text PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
             CREATE TABLE numbered (event_id uuid PRIMARY KEY, aggregate text NOT NULL,
                                    n bigint NOT NULL);
             INSERT INTO counters (aggregate)
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
                        .map(|a| NewEvent::new("carts.changed", *a, format!("{task}/{unit}")))
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let published: Vec<(uuid::Uuid, String)> = events
                        .iter()
                        .map(|e| (e.id().as_uuid(), e.aggregate().to_owned()))
                        .collect();
                    let mut uow = store.begin().await.unwrap();
                    uow.publish_all(events).await.unwrap();
                    tokio::time::sleep(Duration::from_micros(random.below(3_000))).await;
                    let conn = connection(uow.as_mut()).unwrap();
                    for (id, aggregate) in &published {
                        let n: i64 = sqlx::query_scalar(
                            "UPDATE counters SET n = n + 1 WHERE aggregate = $1 RETURNING n",
                        )
                        .bind(aggregate)
                        .fetch_one(&mut *conn)
                        .await
                        .unwrap();
                        sqlx::query("INSERT INTO numbered VALUES ($1, $2, $3)")
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
            "SELECT o.aggregate, o.sequence, x.n FROM stockroom_outbox o \
             JOIN numbered x ON x.event_id = o.id ORDER BY o.aggregate, o.sequence",
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
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM stockroom_outbox")
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

/// The advisory locks the unit of work's transaction holds: `(classid, objid, objsubid)`.
async fn advisory_locks(conn: &mut PgConnection) -> Vec<(i64, i64, i16)> {
    sqlx::query_as(
        "SELECT classid::int8, objid::int8, objsubid FROM pg_locks \
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY objid",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// A unit of work that publishes 5,000 events of distinct aggregates (4,000 in one call, then
/// 1,000 one by one) holds one advisory lock per lane, 32, whatever their number, and commits
/// them all, in the order published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_aggregates_take_at_most_one_lock_per_lane() {
    with_database(|db| async move {
        let store = db.store().await;
        let events: Vec<NewEvent> = (0..5_000)
            .map(|i| NewEvent::new("orders.placed", format!("order-{i}"), vec![1, 2, 3]).unwrap())
            .collect();
        let ids: Vec<_> = events.iter().map(|e| e.id()).collect();
        let mut uow = store.begin().await.unwrap();
        let mut events = events.into_iter();
        uow.publish_all(events.by_ref().take(4_000).collect())
            .await
            .unwrap();
        for event in events {
            uow.publish(event).await.unwrap();
        }
        let locks = advisory_locks(connection(uow.as_mut()).unwrap()).await;
        assert!(locks.len() <= usize::from(LANES), "{} locks", locks.len());
        // Every lane is reached by 5,000 aggregates: one lock each, on the documented class
        // (`STOB`), two int4 keys (objsubid 2).
        let expected: Vec<(i64, i64, i16)> = (0..i64::from(LANES))
            .map(|lane| (0x5354_4f42, lane, 2))
            .collect();
        assert_eq!(locks, expected);
        uow.commit().await.unwrap();

        let backlog = store.outbox_backlog().await.unwrap();
        assert_eq!(backlog.pending, 5_000);
        let mut session = store.read_primary().await.unwrap();
        let conn = stockroom_postgres::read_connection(session.as_mut()).unwrap();
        let stored: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM stockroom_outbox ORDER BY sequence")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let published: Vec<uuid::Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        assert_eq!(stored, published, "sequence order is publish order");
        let none = advisory_locks(conn).await;
        assert!(none.is_empty(), "the locks ended with the transaction");
        drop(session);
        store.close().await;
    })
    .await;
}

/// Stockroom's own events (here, of products created) take no advisory lock: their product's
/// row lock orders them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_events_take_no_lane_lock() {
    with_database(|db| async move {
        let store = PostgresStore::connect(&db.config().with_own_events(true))
            .await
            .unwrap();
        let mut uow = store.begin().await.unwrap();
        for n in 0..40 {
            uow.products().create(support::product(n)).await.unwrap();
        }
        let conn = connection(uow.as_mut()).unwrap();
        assert_eq!(advisory_locks(&mut *conn).await, []);
        let created: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stockroom_outbox WHERE subject = 'stockroom.product.created'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(created, 40);
        uow.commit().await.unwrap();
        store.close().await;
    })
    .await;
}

/// The subjects and aggregates of the outbox's events, in sequence order.
async fn outbox(store: &PostgresStore) -> Vec<(String, String)> {
    let mut session = store.read_primary().await.unwrap();
    let conn = stockroom_postgres::read_connection(session.as_mut()).unwrap();
    sqlx::query_as("SELECT subject, aggregate FROM stockroom_outbox ORDER BY sequence")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

/// The native stock move (a transfer's one statement, in autocommit, and the same statement in
/// a unit of work) writes `stockroom.stock.moved` with the move when own events are on, once:
/// not for a replay of its key, not for a refused move; and never with own events off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_stock_move_writes_its_own_event_once() {
    with_database(|db| async move {
        let store = PostgresStore::connect(&db.config().with_own_events(true))
            .await
            .unwrap();
        let [a, b] = seed_products(&store, [1, 2]).await;
        let before = outbox(&store).await.len();
        let keyed = TransferRequest::new(a.id, b.id, 3).with_idempotency_key("move-1");
        store.transfer(&keyed).await.unwrap();
        store.transfer(&keyed).await.unwrap(); // a replay: no event
        let refused = store
            .transfer(&TransferRequest::new(a.id, b.id, 1_000))
            .await;
        assert!(
            matches!(refused, Err(Error::InsufficientStock { .. })),
            "{refused:?}"
        );
        let mut uow = store.begin().await.unwrap();
        uow.transfer(&TransferRequest::new(b.id, a.id, 1))
            .await
            .unwrap();
        uow.commit().await.unwrap();
        let mut uow = store.begin().await.unwrap();
        uow.transfer(&TransferRequest::new(b.id, a.id, 1))
            .await
            .unwrap();
        uow.rollback().await.unwrap(); // the event goes with the move

        let events = outbox(&store).await;
        let moved = subjects::STOCK_MOVED.to_owned();
        assert_eq!(
            events[before..],
            [(moved.clone(), a.id.to_string()), (moved, b.id.to_string())]
        );
        let claimed = store.claim_events(&ClaimOptions::default()).await.unwrap();
        let moved = claimed
            .events()
            .iter()
            .find(|e| e.subject == subjects::STOCK_MOVED)
            .unwrap();
        let payload = String::from_utf8(moved.payload.clone()).unwrap();
        assert!(payload.contains(r#""quantity":3"#), "{payload}");
        assert!(
            payload.contains(r#""idempotency_key":"move-1""#),
            "{payload}"
        );
        claimed.release().await.unwrap();
        store.close().await;

        // Own events off (the default): the move writes none.
        let quiet = db.store().await;
        quiet
            .transfer(&TransferRequest::new(a.id, b.id, 1))
            .await
            .unwrap();
        assert_eq!(outbox(&quiet).await.len(), events.len());
        quiet.close().await;
    })
    .await;
}

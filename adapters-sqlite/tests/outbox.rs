//! What is SQLite's own in the outbox (the conformance suite checks the semantics every backend
//! shares): a database of the builds before the outbox migrates to it; the stock moves that the
//! group commit runs together write one event each, inside each move's savepoint; claims of two
//! stores on one file (two processes' worth), serialized by SQLite's write lock, lease disjoint
//! lanes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value as Json;
use stockroom_core::outbox::{lane_of, subjects, ClaimOptions, Claimed, Event, NewEvent, LANES};
use stockroom_core::{Error, NewProduct, ProductFilter, Store, StoreExt, TransferRequest};
use stockroom_sqlite::SqliteStore;

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use support::{create_products, TempDb};

/// A database as the builds with migrations 1 to 4 left it (see the file's header).
const V4_DATABASE: &str = include_str!("fixtures/v4-before-outbox.sql");

fn temp_db() -> TempDb {
    TempDb::new("stockroom-outbox")
}

fn product(i: usize, stock: i64) -> NewProduct {
    NewProduct::new(
        &format!("Product {i}"),
        &format!("p-{i}"),
        &format!("SKU-{i}"),
    )
    .unwrap()
    .with_stock(stock)
    .unwrap()
}

/// A claim of everything: every lane, as many events as one claim returns.
fn everything() -> ClaimOptions {
    ClaimOptions {
        max_events: stockroom_core::outbox::MAX_CLAIM,
        max_lanes: LANES,
        lease: Duration::from_secs(30),
    }
}

/// Every undelivered event, in sequence order (the claim is released).
async fn pending(store: &dyn Store) -> Vec<Event> {
    let claimed = store.claim_events(&everything()).await.unwrap();
    let events = claimed.events().to_vec();
    claimed.release().await.unwrap();
    events
}

fn versions(db: &TempDb) -> Vec<i64> {
    let conn = Connection::open(db.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM stockroom_migrations ORDER BY version")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

/// A file made by the builds before the outbox (migrations 1 to 4, with a product in it) gets
/// migration 5 when a store connects: its data stays, the outbox and its 32 lanes are there, and
/// an event published then is claimed, acknowledged and purged; connecting again changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_made_before_the_outbox_migrates_then_publishes_and_claims() {
    let db = temp_db();
    {
        let conn = Connection::open(db.path()).unwrap();
        let _: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(V4_DATABASE).unwrap();
        let now = chrono::Utc::now().timestamp_micros();
        conn.execute(
            "INSERT INTO products (id, name, slug, sku, description, status, stock, created_at, \
             updated_at, version, search_text) \
             VALUES (?1, 'Blue mug', 'blue-mug', 'MUG-B', NULL, 'active', 7, ?2, ?2, 1, ?3)",
            rusqlite::params![
                uuid::Uuid::now_v7().as_bytes().to_vec(),
                now,
                stockroom_core::adapter::search_document("Blue mug", "MUG-B", None)
            ],
        )
        .unwrap();
        assert!(!has_table(&conn, "stockroom_outbox"));
    }
    assert_eq!(versions(&db), [1, 2, 3, 4]);

    let store = SqliteStore::connect(&db.config()).await.unwrap();
    assert_eq!(versions(&db), [1, 2, 3, 4, 5], "migration 5 applied once");
    let mut read = store.read().await.unwrap();
    let mug = read
        .products()
        .by_sku("MUG-B")
        .await
        .unwrap()
        .expect("the mug");
    assert_eq!(mug.stock, 7);
    let found = read
        .products()
        .count(&ProductFilter::default().with_search("blue").unwrap())
        .await
        .unwrap();
    assert_eq!(found, 1, "the search index of migration 4 still serves");
    drop(read);
    {
        let conn = Connection::open(db.path()).unwrap();
        let lanes: Vec<i64> = conn
            .prepare("SELECT lane FROM stockroom_outbox_lanes WHERE holder IS NULL ORDER BY lane")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(lanes, (0..i64::from(LANES)).collect::<Vec<_>>());
    }

    let event = NewEvent::new("orders.placed", "order-17", br#"{"total":12}"#.to_vec()).unwrap();
    let (id, payload) = (event.id(), event.payload().to_vec());
    let mut uow = store.begin().await.unwrap();
    uow.publish(event).await.unwrap();
    uow.commit().await.unwrap();
    let claimed = store.claim_events(&ClaimOptions::default()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let got = &claimed.events()[0];
    assert_eq!(
        (
            got.id,
            got.sequence,
            got.subject.as_str(),
            got.aggregate.as_str()
        ),
        (id, 1, "orders.placed", "order-17")
    );
    assert_eq!(
        (got.lane, got.payload.as_slice()),
        (lane_of("order-17"), payload.as_slice())
    );
    claimed.acknowledge(1).await.unwrap();
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.oldest, backlog.delivered),
        (0, None, 1)
    );
    let purged = store
        .purge_delivered_events(stockroom_core::time::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    store.close().await;

    db.connect_and_close().await;
    assert_eq!(versions(&db), [1, 2, 3, 4, 5]);
}

/// Records the `moves` field of every "stock moves committed together" event.
#[derive(Clone, Default)]
struct Together(Arc<std::sync::Mutex<Vec<u64>>>);

impl tracing::Subscriber for Together {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Moves(Option<u64>);
        impl tracing::field::Visit for Moves {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "moves" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut moves = Moves(None);
        event.record(&mut moves);
        if let Some(n) = moves.0 {
            self.0.lock().unwrap().push(n);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// With own events on, the group commit's moves (8 transfers of one unit from a product that has
/// 4, waiting for the writer, run in one transaction, each in a savepoint) write exactly one
/// `stockroom.stock.moved` event per applied move, with its ledger row, and none for the 4
/// refused ones (their savepoints rolled back).
#[tokio::test]
async fn moves_committed_together_write_one_event_each_and_none_when_refused() {
    let together = Together::default();
    let _guard = tracing::subscriber::set_default(together.clone());
    let db = temp_db();
    let store = Arc::new(
        SqliteStore::connect(&db.config().with_own_events(true))
            .await
            .unwrap(),
    );
    let ids = create_products(store.as_ref(), vec![product(0, 4), product(1, 0)]).await;
    let (from, to) = (ids[0], ids[1]);
    let created = pending(store.as_ref()).await;
    assert_eq!(created.len(), 2, "each creation's own event");

    let held = store.begin().await.unwrap();
    let transfers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.transfer(&TransferRequest::new(from, to, 1)).await })
        })
        .collect();
    // Every transfer joins the queue and waits for the writer (one runtime thread: they run
    // while this task sleeps).
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    let mut applied = BTreeSet::new();
    let mut refused = 0;
    for transfer in transfers {
        match transfer.await.unwrap() {
            Ok(moved) => {
                applied.insert(moved.id.to_string());
            }
            Err(Error::InsufficientStock { .. }) => refused += 1,
            Err(other) => panic!("a transfer failed otherwise: {other:?}"),
        }
    }
    assert_eq!((applied.len(), refused), (4, 4), "moved and refused");
    assert_eq!(
        together.0.lock().unwrap().as_slice(),
        [8],
        "one transaction ran the 8 moves"
    );

    let events = pending(store.as_ref()).await;
    let moved: Vec<&Event> = events
        .iter()
        .filter(|e| e.subject == subjects::STOCK_MOVED)
        .collect();
    assert_eq!(events.len(), 2 + moved.len(), "no other event: {events:?}");
    assert_eq!(
        moved.len(),
        4,
        "one event per applied move, none per refused one"
    );
    let mut recorded = BTreeSet::new();
    for event in &moved {
        let payload: Json = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(
            event.aggregate,
            from.to_string(),
            "the source is the aggregate"
        );
        assert_eq!(payload["source_id"], Json::from(from.to_string()));
        assert_eq!(payload["target_id"], Json::from(to.to_string()));
        assert_eq!(payload["quantity"], Json::from(1));
        recorded.insert(payload["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(recorded, applied, "each event is its move's ledger row");
    assert!(
        events.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "in sequence order"
    );
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.pending, 6);
}

/// Two stores on one file (as two processes would have) claim at once, many times over: every
/// claim leases lanes no other claim holds (SQLite's write lock serializes the claims, across
/// processes too), together they cover every lane, and a claim while all are leased gets
/// nothing; released, the lanes are claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_of_two_stores_on_one_file_lease_disjoint_lanes() {
    const CLAIMS: usize = 8;
    let db = temp_db();
    let first = SqliteStore::connect(&db.config()).await.unwrap();
    let second = SqliteStore::connect(&db.config()).await.unwrap();

    // Events on every lane, two or more each.
    let mut per_lane: HashMap<u16, usize> = HashMap::new();
    let mut events = Vec::new();
    let mut i = 0;
    while per_lane.len() < usize::from(LANES) || per_lane.values().any(|&n| n < 2) {
        let aggregate = format!("order-{i}");
        *per_lane.entry(lane_of(&aggregate)).or_default() += 1;
        events.push(NewEvent::new("orders.placed", aggregate, Vec::new()).unwrap());
        i += 1;
    }
    let published = events.len();
    let mut uow = second.begin().await.unwrap();
    uow.publish_all(events).await.unwrap();
    uow.commit().await.unwrap();

    let stores = [first.clone(), second.clone()];
    let start = Arc::new(tokio::sync::Barrier::new(CLAIMS));
    let options = ClaimOptions {
        max_events: 1_000,
        max_lanes: LANES / CLAIMS as u16,
        lease: Duration::from_secs(30),
    };
    let claims: Vec<_> = (0..CLAIMS)
        .map(|n| {
            let (store, start) = (stores[n % 2].clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                store.claim_events(&options).await
            })
        })
        .collect();
    let mut held: Vec<Claimed> = Vec::new();
    for claim in claims {
        held.push(claim.await.unwrap().expect("claim"));
    }
    let mut seen = BTreeSet::new();
    let mut delivered = 0;
    for claimed in &held {
        let lanes: BTreeSet<u16> = claimed.events().iter().map(|e| e.lane).collect();
        assert_eq!(lanes.len(), usize::from(options.max_lanes), "{lanes:?}");
        for lane in &lanes {
            assert!(seen.insert(*lane), "lane {lane} leased by two claims");
            assert_eq!(
                claimed.events().iter().filter(|e| e.lane == *lane).count(),
                per_lane[lane],
                "every event of lane {lane}"
            );
        }
        delivered += claimed.len();
    }
    assert_eq!(seen.len(), usize::from(LANES), "every lane leased once");
    assert_eq!(delivered, published);
    for store in &stores {
        assert!(store.claim_events(&everything()).await.unwrap().is_empty());
    }

    for claimed in held {
        claimed.release().await.unwrap();
    }
    assert_eq!(
        pending(&second).await.len(),
        published,
        "released, claimed again"
    );
    first.close().await;
    second.close().await;
}

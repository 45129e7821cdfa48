//! Stockroom on a real multi-primary cluster: a throwaway three-node MariaDB Galera cluster
//! (`stockroom_mariadb::testing::galera`), shared by the tests of this file, each with its own
//! database and, mostly, one store per node.
//!
//! On Galera every node takes writes and `SELECT … FOR UPDATE` locks rows on one node only: two
//! transfers of the same product on two nodes both go ahead, and the one that commits second
//! fails certification with 1213, which the adapter reports as `Transient` and the retry runner
//! runs again. These tests check that this is enough to keep the bank exact (with transfers, and
//! with units of work of several statements of the application's), idempotency keys unique,
//! acknowledged transfers durable when a node dies, and a commit whose node dies resolvable by
//! its key.
//!
//! The tests run one at a time ([`SERIAL`]): some kill nodes, which every other test would see.
//! Skipped when Galera is not installed (see the harness), unless `CI` or
//! `STOCKROOM_TEST_REQUIRE_GALERA=1` is set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::mysql::MySqlDatabaseError;
use sqlx::{AssertSqlSafe, Connection, MySqlConnection};
use stockroom_core::{
    Error, NewProduct, Product, ProductId, RetryPolicy, StockDelta, Store, StoreExt,
    TransferRequest, UnitOfWorkExt,
};
use stockroom_mariadb::testing::galera::{self, GaleraCluster, GaleraDatabase, NODES};
use stockroom_mariadb::MariaDbStore;
use uuid::Uuid;

/// One test at a time: a test that kills a node changes the cluster under every other one.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test's turn on the cluster ([`SERIAL`]); says on stderr how long the test held it.
struct Turn {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    test: String,
    started: Instant,
}

impl Drop for Turn {
    fn drop(&mut self) {
        eprintln!("galera: {} took {:.1?}", self.test, self.started.elapsed());
    }
}

/// The shared cluster with every node running and synced (a node a failed test left killed is
/// started again), and the test's turn; `None` skips the test (no Galera here).
async fn cluster() -> Option<(&'static GaleraCluster, Turn)> {
    // The test harness names each test's thread after the test, and a tokio test's body runs
    // on that thread.
    let test = std::thread::current()
        .name()
        .unwrap_or("a galera test")
        .to_owned();
    let serial = SERIAL.lock().await;
    let cluster = galera::shared().await?;
    for node in 0..NODES {
        if !cluster.is_running(node) {
            cluster
                .restart(node)
                .await
                .unwrap_or_else(|e| panic!("restart node {node} a failed test left killed: {e}"));
        }
    }
    cluster.wait_all_synced().await.expect("a synced cluster");
    let turn = Turn {
        _serial: serial,
        test,
        started: Instant::now(),
    };
    Some((cluster, turn))
}

/// Runs `sql` (built by the test, never user text) on `conn`.
async fn raw(conn: &mut MySqlConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The server's error number of a failed statement.
fn mysql_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()?
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

/// The sum over every node of Galera's counters of transactions that lost to another node's:
/// failed certification at commit, or aborted by the applier of a write set that took their
/// locks.
async fn certification_losses(cluster: &GaleraCluster) -> u64 {
    let mut total = 0;
    for node in cluster.running_nodes() {
        let mut conn = cluster.connect(node).await.unwrap();
        let values: Vec<String> = sqlx::query_scalar(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME IN ('WSREP_LOCAL_CERT_FAILURES', 'WSREP_LOCAL_BF_ABORTS')",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        total += values
            .iter()
            .map(|v| v.parse::<u64>().unwrap())
            .sum::<u64>();
        let _ = conn.close().await;
    }
    total
}

/// A store on each node, connected at once (their migrations run concurrently on three nodes,
/// where no lock keeps them apart), with `configure` applied to each configuration.
async fn stores(
    db: &GaleraDatabase<'_>,
    configure: impl Fn(stockroom_core::StoreConfig) -> stockroom_core::StoreConfig,
) -> Vec<Arc<MariaDbStore>> {
    let connects = (0..NODES).map(|node| {
        let config = configure(db.config(node));
        async move {
            MariaDbStore::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("connect a store to node {node}: {e}"))
        }
    });
    futures_util::future::join_all(connects)
        .await
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// Creates `n` products with `stock` each through `store`, and waits until every running node
/// has them (a store on another node may look for them right away).
async fn products(
    db: &GaleraDatabase<'_>,
    store: &MariaDbStore,
    prefix: &str,
    n: usize,
    stock: i64,
) -> Vec<ProductId> {
    let news: Vec<NewProduct> = (0..n)
        .map(|i| {
            let tag = format!("{prefix}-{i}");
            NewProduct::new(&format!("Product {tag}"), &tag, &tag.to_uppercase())
                .and_then(|p| p.with_stock(stock))
                .expect("a valid product")
        })
        .collect();
    let mut uow = store.begin().await.unwrap();
    let made: Vec<Product> = uow.products().create_many(news).await.unwrap();
    uow.commit().await.unwrap();
    let ids: Vec<ProductId> = made.iter().map(|p| p.id).collect();
    for node in db.cluster().running_nodes() {
        let state = NodeState::read(db, node).await;
        assert!(
            ids.iter().all(|id| state.stock.contains_key(id)),
            "products not on node {node}"
        );
    }
    ids
}

/// What one node holds: every product's stock and every ledger row, read causally (after the
/// node applied everything committed before the read, on any node).
#[derive(Debug, PartialEq, Eq)]
struct NodeState {
    stock: BTreeMap<ProductId, i64>,
    /// id → (source, target, quantity, key).
    ledger: BTreeMap<Uuid, (ProductId, ProductId, i64, Option<String>)>,
}

impl NodeState {
    async fn read(db: &GaleraDatabase<'_>, node: usize) -> Self {
        let mut conn = db.connection(node).await;
        let stock: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT `id`, `stock` FROM `products` WHERE `deleted_at` IS NULL")
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("read products on node {node}: {e}"));
        type Row = (Uuid, Uuid, Uuid, i64, Option<String>);
        let ledger: Vec<Row> = sqlx::query_as(
            "SELECT `id`, `source_id`, `target_id`, `quantity`, `idempotency_key` \
             FROM `stock_movements`",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("read the ledger on node {node}: {e}"));
        let _ = conn.close().await;
        Self {
            stock: stock
                .into_iter()
                .map(|(id, stock)| (ProductId::from_uuid(id), stock))
                .collect(),
            ledger: ledger
                .into_iter()
                .map(|(id, source, target, quantity, key)| {
                    let (source, target) =
                        (ProductId::from_uuid(source), ProductId::from_uuid(target));
                    (id, (source, target, quantity, key))
                })
                .collect(),
        }
    }

    /// Checks the bank: the total is `total`, no stock is negative, and every product's stock
    /// is `initial` plus what the ledger says it got, minus what it gave.
    fn check_bank(&self, node: usize, initial: i64) {
        let total: i64 = self.stock.values().sum();
        assert_eq!(
            total,
            initial * self.stock.len() as i64,
            "node {node}: the total changed: {:?}",
            self.stock
        );
        assert!(
            self.stock.values().all(|&s| s >= 0),
            "node {node}: negative stock: {:?}",
            self.stock
        );
        let mut net: HashMap<ProductId, i64> = HashMap::new();
        for (source, target, quantity, _) in self.ledger.values() {
            *net.entry(*source).or_default() -= quantity;
            *net.entry(*target).or_default() += quantity;
        }
        for (id, stock) in &self.stock {
            let moved = net.get(id).copied().unwrap_or(0);
            assert_eq!(
                *stock,
                initial + moved,
                "node {node}: the stock of {id} is not {initial} plus its ledger's {moved}"
            );
        }
    }
}

/// Every running node's state, checked equal to each other's; returns it.
async fn agreed_state(db: &GaleraDatabase<'_>) -> NodeState {
    let nodes = db.cluster().running_nodes();
    let first = NodeState::read(db, nodes[0]).await;
    for &node in &nodes[1..] {
        let other = NodeState::read(db, node).await;
        assert_eq!(other, first, "node {node} disagrees with node {}", nodes[0]);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_forms_and_certification_conflicts_fail_with_1213() {
    let Some((cluster, _turn)) = cluster().await else {
        return;
    };
    for node in 0..NODES {
        let status = cluster.status(node).await.unwrap();
        assert!(status.synced(NODES), "node {node}: {status:?}");
    }
    let db = cluster.database().await;
    db.clone()
        .drop_after(async {
            let mut setup = db.connection(0).await;
            raw(
                &mut setup,
                "CREATE TABLE `counters` (`id` INT PRIMARY KEY, `v` INT NOT NULL) ENGINE=InnoDB",
            )
            .await;
            raw(&mut setup, "INSERT INTO `counters` VALUES (1, 0), (2, 0)").await;
            // Causal reads: both see the rows inserted through node 0.
            let mut a = db.connection(0).await;
            let mut b = db.connection(1).await;

            // Row 1 on both nodes: the row lock of node 0's transaction does not reach node 1,
            // so both updates go ahead; node 1 commits first, node 0's commit then loses.
            raw(&mut a, "START TRANSACTION").await;
            raw(&mut a, "UPDATE `counters` SET `v` = 1 WHERE `id` = 1").await;
            raw(&mut b, "START TRANSACTION").await;
            raw(&mut b, "UPDATE `counters` SET `v` = 2 WHERE `id` = 1").await;
            raw(&mut b, "COMMIT").await;
            let error = sqlx::raw_sql("COMMIT")
                .execute(&mut a)
                .await
                .expect_err("the later COMMIT of a conflicting update must fail");
            assert_eq!(mysql_number(&error), Some(1213), "{error}");
            assert_eq!(
                error.as_database_error().and_then(|e| e.code()).as_deref(),
                Some("40001"),
                "{error}"
            );

            // Different rows on two nodes: no conflict, both commit.
            raw(&mut a, "START TRANSACTION").await;
            raw(&mut a, "UPDATE `counters` SET `v` = 10 WHERE `id` = 2").await;
            raw(&mut b, "START TRANSACTION").await;
            raw(&mut b, "UPDATE `counters` SET `v` = 20 WHERE `id` = 1").await;
            raw(&mut b, "COMMIT").await;
            raw(&mut a, "COMMIT").await;

            // Every node holds the winners' values; the loser's connection is still usable.
            for node in 0..NODES {
                let mut conn = db.connection(node).await;
                let rows: Vec<(i32, i32)> =
                    sqlx::query_as("SELECT `id`, `v` FROM `counters` ORDER BY `id`")
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                assert_eq!(rows, [(1, 20), (2, 10)], "node {node}");
                let _ = conn.close().await;
            }
            for conn in [setup, a, b] {
                let _ = conn.close().await;
            }
        })
        .await;
}

/// What a task of transfers saw.
#[derive(Debug, Default)]
struct Tally {
    /// The movements of the transfers that moved stock.
    applied: Vec<stockroom_core::StockMovement>,
    /// The transfers refused for insufficient stock.
    refused: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bank_stays_exact_with_transfers_on_every_node() {
    const PRODUCTS: usize = 6;
    const INITIAL: i64 = 500;
    const TASKS_PER_NODE: usize = 3;
    const TRANSFERS: usize = 300;
    let Some((cluster, _turn)) = cluster().await else {
        return;
    };
    let db = cluster.database().await;
    db.clone()
        .drop_after(async {
            let stores = stores(&db, |c| c).await;
            let ids = products(&db, &stores[0], "bank", PRODUCTS, INITIAL).await;
            let losses_before = certification_losses(cluster).await;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for t in 0..NODES * TASKS_PER_NODE {
                let store = Arc::clone(&stores[t % NODES]);
                let ids = ids.clone();
                tasks.push(tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let mut rng = StdRng::seed_from_u64(0xBA4C + t as u64);
                        let mut tally = Tally::default();
                        for _ in 0..TRANSFERS {
                            let from = rng.random_range(0..ids.len());
                            let to = (from + rng.random_range(1..ids.len())) % ids.len();
                            // Up to half an average balance: some find too little stock.
                            let quantity = rng.random_range(1..=INITIAL / 2);
                            let request = TransferRequest::new(ids[from], ids[to], quantity);
                            match store.transfer(&request).await {
                                Ok(movement) => {
                                    assert_eq!(
                                        (movement.source_id, movement.target_id, movement.quantity),
                                        (ids[from], ids[to], quantity)
                                    );
                                    tally.applied.push(movement);
                                }
                                Err(Error::InsufficientStock {
                                    available,
                                    requested,
                                    ..
                                }) => {
                                    assert!(available < requested, "{available} < {requested}");
                                    tally.refused += 1;
                                }
                                Err(other) => panic!("task {t}: transfer failed: {other:?}"),
                            }
                        }
                        tally
                    },
                    tracing::info_span!("task", t),
                )));
            }
            let mut applied = Vec::new();
            let mut refused = 0;
            for task in tasks {
                let tally = task.await.expect("a transfer task panicked");
                applied.extend(tally.applied);
                refused += tally.refused;
            }
            let elapsed = started.elapsed();
            let losses = certification_losses(cluster).await - losses_before;
            eprintln!(
                "bank: {} transfers applied, {refused} refused for insufficient stock, in \
                 {elapsed:?}; {losses} transactions lost to another node's and were retried",
                applied.len()
            );
            assert_eq!(
                applied.len() as u64 + refused,
                (NODES * TASKS_PER_NODE * TRANSFERS) as u64
            );
            assert!(refused > 0, "no transfer hit insufficient stock");
            assert!(!applied.is_empty(), "no transfer applied");
            // Without certification conflicts the test would not show what it is about.
            assert!(losses > 0, "no transaction lost to another node's");

            let state = agreed_state(&db).await;
            state.check_bank(0, INITIAL);
            // The ledger is exactly the applied transfers.
            let acknowledged: BTreeMap<Uuid, (ProductId, ProductId, i64, Option<String>)> = applied
                .iter()
                .map(|m| {
                    (
                        m.id.as_uuid(),
                        (
                            m.source_id,
                            m.target_id,
                            m.quantity,
                            m.idempotency_key.clone(),
                        ),
                    )
                })
                .collect();
            assert_eq!(acknowledged.len(), applied.len(), "a movement id twice");
            assert_eq!(state.ledger, acknowledged, "ledger != applied transfers");
            for store in stores {
                store.close().await;
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_two_nodes_at_once_moves_stock_once() {
    const ROUNDS: usize = 30;
    let Some((cluster, _turn)) = cluster().await else {
        return;
    };
    let db = cluster.database().await;
    db.clone()
        .drop_after(async {
            let stores = stores(&db, |c| c).await;
            let ids = products(&db, &stores[0], "idem", 2, 100_000).await;
            let mut moved = 0;
            let mut keys = Vec::new();
            for round in 0..ROUNDS {
                let key = format!("galera-round-{round}-{}", Uuid::now_v7().simple());
                let quantity = 1 + round as i64;
                let request =
                    TransferRequest::new(ids[0], ids[1], quantity).with_idempotency_key(&key);
                let (x, y) = (round % NODES, (round + 1) % NODES);
                let barrier = Arc::new(tokio::sync::Barrier::new(2));
                let send = |node: usize| {
                    let (store, request, barrier) = (
                        Arc::clone(&stores[node]),
                        request.clone(),
                        Arc::clone(&barrier),
                    );
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.transfer_with(&request, &RetryPolicy::default()).await
                    })
                };
                let (first, second) = (send(x), send(y));
                let first = first
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("node {x}: {e:?}"));
                let second = second
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("node {y}: {e:?}"));
                assert_eq!(
                    first.movement, second.movement,
                    "round {round}: two movements for one key"
                );
                assert_eq!(
                    [first.replayed, second.replayed]
                        .iter()
                        .filter(|r| !**r)
                        .count(),
                    1,
                    "round {round}: exactly one request applies, the other replays it"
                );
                moved += quantity;
                keys.push(key);
            }
            let state = agreed_state(&db).await;
            assert_eq!(state.ledger.len(), ROUNDS, "one movement per key");
            let recorded: HashSet<&str> = state
                .ledger
                .values()
                .filter_map(|(_, _, _, key)| key.as_deref())
                .collect();
            assert_eq!(recorded, keys.iter().map(String::as_str).collect());
            assert_eq!(state.stock[&ids[0]], 100_000 - moved);
            assert_eq!(state.stock[&ids[1]], 100_000 + moved);
            for store in stores {
                store.close().await;
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unit_of_work_of_several_statements_is_all_or_nothing_on_every_node() {
    // The bank again, each move a unit of work of the application's own: two stock
    // adjustments (each an UPDATE and a read) retried as a whole by the retry runner. A
    // transaction another node's write set aborts must take both adjustments with it, even
    // when the abort reaches the server between two of its statements.
    const PRODUCTS: usize = 6;
    const INITIAL: i64 = 500;
    const TASKS_PER_NODE: usize = 3;
    const MOVES: usize = 300;
    let Some((cluster, _turn)) = cluster().await else {
        return;
    };
    let db = cluster.database().await;
    db.clone()
        .drop_after(async {
            let stores = stores(&db, |c| c).await;
            let ids = products(&db, &stores[0], "uow", PRODUCTS, INITIAL).await;
            let mut tasks = Vec::new();
            for t in 0..NODES * TASKS_PER_NODE {
                let store = Arc::clone(&stores[t % NODES]);
                let ids = ids.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(0xA70C + t as u64);
                    let mut done = Vec::new();
                    for _ in 0..MOVES {
                        let from = rng.random_range(0..ids.len());
                        let to = (from + rng.random_range(1..ids.len())) % ids.len();
                        let quantity = rng.random_range(1..=INITIAL / 2);
                        let (source, target) = (ids[from], ids[to]);
                        let moved = store
                            .run(&RetryPolicy::default(), |uow| {
                                Box::pin(async move {
                                    let mut products = uow.products();
                                    products
                                        .adjust_stock(source, StockDelta::new(-quantity)?)
                                        .await?;
                                    products
                                        .adjust_stock(target, StockDelta::new(quantity)?)
                                        .await?;
                                    Ok(())
                                })
                            })
                            .await;
                        match moved {
                            Ok(()) => done.push((source, target, quantity)),
                            Err(Error::InsufficientStock { .. }) => {}
                            Err(other) => panic!("task {t}: unit of work failed: {other:?}"),
                        }
                    }
                    done
                }));
            }
            let mut expected: BTreeMap<ProductId, i64> =
                ids.iter().map(|id| (*id, INITIAL)).collect();
            let mut committed = 0;
            for task in tasks {
                for (source, target, quantity) in task.await.expect("a task panicked") {
                    *expected.get_mut(&source).unwrap() -= quantity;
                    *expected.get_mut(&target).unwrap() += quantity;
                    committed += 1;
                }
            }
            let state = agreed_state(&db).await;
            let total: i64 = state.stock.values().sum();
            eprintln!(
                "units of work: {committed} committed; total {total} (expected {})",
                INITIAL * PRODUCTS as i64
            );
            assert!(committed > 0);
            // Each product holds exactly what the committed units of work moved: none applied
            // in part, none applied that was reported failed, none lost that was reported done.
            assert_eq!(
                state.stock, expected,
                "stocks != the committed units of work"
            );
            for store in stores {
                store.close().await;
            }
        })
        .await;
}

/// What became of one keyed transfer of the kill test.
#[derive(Debug, Clone)]
enum Outcome {
    /// Acknowledged: this movement is stored.
    Applied(stockroom_core::StockMovement),
    /// Refused for insufficient stock: nothing moved.
    Refused,
    /// Failed otherwise (its node died, or was down): unknown until sent again with its key.
    Unknown(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_run_loses_nothing_acknowledged_and_rejoins() {
    const PRODUCTS: usize = 6;
    const INITIAL: i64 = 1_000;
    const TASKS_PER_NODE: usize = 2;
    /// The node killed: the one that bootstrapped the cluster, which must rejoin, not
    /// bootstrap a second cluster.
    const VICTIM: usize = 0;
    let Some((cluster, _turn)) = cluster().await else {
        return;
    };
    let db = cluster.database().await;
    db.clone()
        .drop_after(async {
            // A store on the dead node gives up on a connection within seconds.
            let stores = stores(&db, |c| c.with_acquire_timeout(Duration::from_secs(3))).await;
            let ids = products(&db, &stores[1], "kill", PRODUCTS, INITIAL).await;
            let stop = Arc::new(AtomicBool::new(false));
            // Transfers acknowledged per node, as the run goes.
            let acked: Arc<[AtomicU64; NODES]> = Arc::new(Default::default());
            let mut tasks = Vec::new();
            for t in 0..NODES * TASKS_PER_NODE {
                let node = t % NODES;
                let (store, ids, stop, acked) = (
                    Arc::clone(&stores[node]),
                    ids.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&acked),
                );
                tasks.push(tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(0xC1A5 + t as u64);
                    let mut outcomes = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let from = rng.random_range(0..ids.len());
                        let to = (from + rng.random_range(1..ids.len())) % ids.len();
                        let quantity = rng.random_range(1..=INITIAL / 2);
                        let request = TransferRequest::new(ids[from], ids[to], quantity)
                            .with_idempotency_key(format!("kill-{t}-{i}"));
                        i += 1;
                        let outcome = match store.transfer(&request).await {
                            Ok(movement) => {
                                acked[node].fetch_add(1, Ordering::Relaxed);
                                Outcome::Applied(movement)
                            }
                            Err(Error::InsufficientStock { .. }) => Outcome::Refused,
                            Err(
                                e @ (Error::Unavailable { .. } | Error::AmbiguousCommit { .. }),
                            ) => {
                                // Its node is down: wait a little rather than spin.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                Outcome::Unknown(e.to_string())
                            }
                            Err(Error::Transient { .. }) => {
                                // The retries ran out while the cluster reconfigured.
                                Outcome::Unknown("gave up".into())
                            }
                            Err(other) => panic!("task {t} on node {node}: {other:?}"),
                        };
                        outcomes.push((request, outcome));
                    }
                    outcomes
                }));
            }
            let count = |acked: &[AtomicU64; NODES]| -> [u64; NODES] {
                std::array::from_fn(|n| acked[n].load(Ordering::Relaxed))
            };

            tokio::time::sleep(Duration::from_secs(3)).await;
            let before_kill = count(&acked);
            cluster.kill(VICTIM).unwrap();
            let killed_at = Instant::now();
            // The others declare it gone within seconds, then commit without it.
            tokio::time::sleep(Duration::from_secs(6)).await;
            cluster.wait_all_synced().await.expect("two nodes carry on");
            let while_down = count(&acked);
            cluster
                .restart(VICTIM)
                .await
                .expect("the killed node rejoins");
            let rejoined_after = killed_at.elapsed();
            let at_restart = count(&acked);
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.store(true, Ordering::Relaxed);
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.extend(task.await.expect("a transfer task panicked"));
            }
            let after = count(&acked);
            eprintln!(
                "kill: acknowledged per node {before_kill:?} before the kill, {while_down:?} \
                 6 s after it, {at_restart:?} once node {VICTIM} rejoined ({rejoined_after:?} \
                 after the kill), {after:?} at the end"
            );
            for node in (0..NODES).filter(|&n| n != VICTIM) {
                assert!(
                    at_restart[node] > before_kill[node],
                    "node {node}'s store made no progress while node {VICTIM} was down"
                );
            }
            assert!(
                after[VICTIM] > at_restart[VICTIM],
                "the store on node {VICTIM} did not work again after it rejoined"
            );

            // Every unknown outcome resolved by its key, through a node that never died.
            let resolver = &stores[(VICTIM + 1) % NODES];
            let mut acknowledged = Vec::new();
            let mut resolved = (0, 0, 0);
            let mut reasons = std::collections::BTreeSet::new();
            for (request, outcome) in outcomes {
                match outcome {
                    Outcome::Applied(movement) => acknowledged.push(movement),
                    Outcome::Refused => {}
                    Outcome::Unknown(reason) => {
                        // The kinds of failure, without their details.
                        reasons.insert(reason.split(':').next().unwrap_or_default().to_owned());
                        match resolver
                            .transfer_with(&request, &RetryPolicy::default())
                            .await
                        {
                            Ok(done) if done.replayed => {
                                resolved.0 += 1;
                                acknowledged.push(done.movement)
                            }
                            Ok(done) => {
                                resolved.1 += 1;
                                acknowledged.push(done.movement)
                            }
                            Err(Error::InsufficientStock { .. }) => resolved.2 += 1,
                            Err(e) => panic!("resolve {request:?}: {e:?}"),
                        }
                    }
                }
            }
            eprintln!(
                "kill: {} unknown outcomes ({reasons:?}) resolved by their keys: {} had been \
                 applied, {} were applied now, {} refused now",
                resolved.0 + resolved.1 + resolved.2,
                resolved.0,
                resolved.1,
                resolved.2
            );

            let state = agreed_state(&db).await;
            assert_eq!(cluster.running_nodes().len(), NODES);
            state.check_bank(VICTIM, INITIAL);
            for movement in &acknowledged {
                let stored = state.ledger.get(&movement.id.as_uuid());
                assert_eq!(
                    stored,
                    Some(&(
                        movement.source_id,
                        movement.target_id,
                        movement.quantity,
                        movement.idempotency_key.clone()
                    )),
                    "acknowledged movement lost: {movement:?}"
                );
            }
            assert_eq!(
                state.ledger.len(),
                acknowledged.len(),
                "the ledger holds a movement nobody was told of"
            );
            for store in stores {
                store.close().await;
            }
        })
        .await;
}

/// What the proxy does with the next `COMMIT` it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtCommit {
    /// Kills the node before the `COMMIT` reaches it: nothing is committed.
    KillBeforeSending,
    /// Sends the `COMMIT`, holds back the node's answer, then kills the node: committed, and
    /// the client never hears so.
    KillAfterReply,
}

/// A TCP proxy in front of one node that, once armed, kills the node while a client's `COMMIT`
/// is in flight, then cuts the client's connection: the client sees its connection lost
/// during `COMMIT`, deterministically, with the commit either certainly not applied or
/// certainly applied.
///
/// It reads the MySQL protocol's packets (a 3-byte length, a sequence number, the payload) in
/// both directions, so the connection must be in plain text (`ssl-mode=disabled`, the test
/// cluster has no TLS anyway) and uncompressed (sqlx never compresses).
struct CommitKiller {
    port: u16,
    trap: Arc<Trap>,
}

#[derive(Default)]
struct Trap {
    armed: Mutex<Option<AtCommit>>,
    /// What the proxy did: the mode, and the first byte of the node's held answer (0x00: OK).
    fired: Mutex<Option<(AtCommit, Option<u8>)>>,
    closed: AtomicBool,
}

/// A connection's server-to-client side, as the client-to-server side tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    Forward,
    /// Keep the next packet from the node (the COMMIT's answer) instead of forwarding it.
    Hold,
    /// The held packet's first byte.
    Held(Option<u8>),
}

impl CommitKiller {
    fn start(cluster: &'static GaleraCluster, node: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let trap = Arc::new(Trap::default());
        let upstream = cluster.port(node);
        let accepting = Arc::clone(&trap);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.closed.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // the node is down: the client sees its connection closed
                };
                let relay = Arc::new((Mutex::new(Relay::Forward), Condvar::new()));
                let (c2, s2, relay2) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Arc::clone(&relay),
                );
                std::thread::spawn(move || server_to_client(s2, c2, relay2));
                let trap = Arc::clone(&accepting);
                std::thread::spawn(move || {
                    client_to_server(client, server, relay, trap, || {
                        cluster.kill(node).expect("kill the node at COMMIT")
                    })
                });
            }
        });
        Self { port, trap }
    }

    fn arm(&self, mode: AtCommit) {
        *self.trap.fired.lock().unwrap() = None;
        *self.trap.armed.lock().unwrap() = Some(mode);
    }

    fn fired(&self) -> Option<(AtCommit, Option<u8>)> {
        *self.trap.fired.lock().unwrap()
    }
}

impl Drop for CommitKiller {
    fn drop(&mut self) {
        self.trap.closed.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which sees `closed` and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one protocol packet (header and payload), or `None` at the connection's end.
fn read_packet(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut packet = header.to_vec();
    packet.resize(4 + len, 0);
    stream.read_exact(&mut packet[4..]).ok()?;
    Some(packet)
}

/// Whether `packet` is an OK packet whose status says more results of the query follow
/// (`SERVER_MORE_RESULTS_EXISTS`).
fn more_results_follow(packet: &[u8]) -> bool {
    /// A length-encoded integer at `at`: its value's byte count after the first byte.
    fn skip(payload: &[u8], at: usize) -> Option<usize> {
        Some(match *payload.get(at)? {
            0xfc => at + 3,
            0xfd => at + 4,
            0xfe => at + 9,
            _ => at + 1,
        })
    }
    let payload = &packet[4..];
    if payload.first() != Some(&0x00) {
        return false;
    }
    let Some(at) = skip(payload, 1).and_then(|at| skip(payload, at)) else {
        return false;
    };
    payload
        .get(at..at + 2)
        .is_some_and(|status| u16::from_le_bytes([status[0], status[1]]) & 0x0008 != 0)
}

fn server_to_client(
    mut server: TcpStream,
    mut client: TcpStream,
    relay: Arc<(Mutex<Relay>, Condvar)>,
) {
    while let Some(packet) = read_packet(&mut server) {
        let (state, changed) = &*relay;
        let mut state = state.lock().unwrap();
        // The unit of work's commit is several statements in one query: their answers up to
        // the `COMMIT`'s go through (each an OK saying more results follow), and the last one
        // (the `COMMIT` has run by then) is held.
        if *state == Relay::Hold && !more_results_follow(&packet) {
            *state = Relay::Held(packet.get(4).copied());
            changed.notify_all();
            return; // the client hears nothing more from the node
        }
        drop(state);
        if client.write_all(&packet).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

fn client_to_server(
    mut client: TcpStream,
    mut server: TcpStream,
    relay: Arc<(Mutex<Relay>, Condvar)>,
    trap: Arc<Trap>,
    kill: impl FnOnce(),
) {
    // A COM_QUERY (3) that commits: the unit of work's commit (its marker check, `COMMIT`, and
    // autocommit back on, by the text protocol), or a plain `COMMIT`.
    let commits = |packet: &[u8]| {
        packet.get(4) == Some(&3)
            && (packet[5..] == *b"COMMIT" || packet[5..].ends_with(b"COMMIT; SET autocommit = 1"))
    };
    while let Some(packet) = read_packet(&mut client) {
        let armed = if commits(&packet) {
            trap.armed.lock().unwrap().take()
        } else {
            None
        };
        match armed {
            None => {
                if server.write_all(&packet).is_err() {
                    break;
                }
            }
            Some(AtCommit::KillBeforeSending) => {
                // Recorded first: the client may see its connection end as soon as the node
                // dies (the other direction's relay ends then).
                *trap.fired.lock().unwrap() = Some((AtCommit::KillBeforeSending, None));
                kill();
                break;
            }
            Some(AtCommit::KillAfterReply) => {
                let (state, changed) = &*relay;
                *state.lock().unwrap() = Relay::Hold;
                if server.write_all(&packet).is_err() {
                    break;
                }
                let state = state.lock().unwrap();
                let (state, _) = changed
                    .wait_timeout_while(state, Duration::from_secs(30), |s| {
                        matches!(s, Relay::Hold)
                    })
                    .unwrap();
                let reply = match *state {
                    Relay::Held(first) => first,
                    _ => None,
                };
                drop(state);
                *trap.fired.lock().unwrap() = Some((AtCommit::KillAfterReply, reply));
                kill();
                break;
            }
        }
    }
    // The client's connection ends here, mid-COMMIT for the trapped one.
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_whose_node_dies_is_ambiguous_and_its_key_resolves_it() {
    /// The node killed at COMMIT.
    const VICTIM: usize = 1;
    let Some((cluster, _turn)) = cluster().await else {
        return;
    };
    let db = cluster.database().await;
    db.clone()
        .drop_after(async {
            let other = Arc::new(db.store((VICTIM + 1) % NODES).await);
            let proxy = CommitKiller::start(cluster, VICTIM);
            for (round, mode) in [AtCommit::KillAfterReply, AtCommit::KillBeforeSending]
                .into_iter()
                .enumerate()
            {
                // The store on the victim, through the proxy: a fresh pool each round (the
                // last round's connections died with the node).
                let mut config = db
                    .config(VICTIM)
                    .with_acquire_timeout(Duration::from_secs(5));
                // Plain text, which the proxy reads (the cluster has no TLS anyway).
                config.url = format!("{}?ssl-mode=disabled", db.url_at(proxy.port));
                let victim = MariaDbStore::connect(&config)
                    .await
                    .unwrap_or_else(|e| panic!("connect through the proxy: {e}"));
                let ids = products(&db, &other, &format!("amb{round}"), 2, 100).await;
                let key = format!("ambiguous-{round}-{}", Uuid::now_v7().simple());
                let request = TransferRequest::new(ids[0], ids[1], 30).with_idempotency_key(&key);

                let mut uow = victim.begin().await.unwrap();
                let movement = uow.transfer(&request).await.unwrap();
                proxy.arm(mode);
                let error = uow.commit().await.expect_err("the node died during COMMIT");
                assert!(
                    matches!(error, Error::AmbiguousCommit { .. }),
                    "{mode:?}: {error:?}"
                );
                let fired = proxy.fired();
                match mode {
                    // The node answered OK before it died: the commit is in the cluster.
                    AtCommit::KillAfterReply => assert_eq!(fired, Some((mode, Some(0x00)))),
                    AtCommit::KillBeforeSending => assert_eq!(fired, Some((mode, None))),
                }
                assert!(!cluster.is_running(VICTIM));
                victim.close().await;

                // The key resolves it through another node: the first attempt's movement if it
                // was committed, else the transfer now; once either way.
                let done = other
                    .transfer_with(&request, &RetryPolicy::default())
                    .await
                    .unwrap_or_else(|e| panic!("{mode:?}: resolve by the key: {e:?}"));
                match mode {
                    AtCommit::KillAfterReply => {
                        assert!(done.replayed, "{mode:?}: the commit had gone through");
                        assert_eq!(done.movement, movement);
                    }
                    AtCommit::KillBeforeSending => {
                        assert!(!done.replayed, "{mode:?}: nothing had been committed");
                        assert_ne!(done.movement.id, movement.id);
                    }
                }

                cluster.restart(VICTIM).await.expect("the node rejoins");
                let state = agreed_state(&db).await;
                let with_key: Vec<_> = state
                    .ledger
                    .iter()
                    .filter(|(_, (_, _, _, k))| k.as_deref() == Some(key.as_str()))
                    .collect();
                assert_eq!(with_key.len(), 1, "{mode:?}: one movement for the key");
                assert_eq!(*with_key[0].0, done.movement.id.as_uuid());
                assert_eq!(state.stock[&ids[0]], 70, "{mode:?}");
                assert_eq!(state.stock[&ids[1]], 130, "{mode:?}");
            }
            other.close().await;
        })
        .await;
}

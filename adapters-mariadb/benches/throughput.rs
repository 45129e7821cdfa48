//! Throughput of the MariaDB adapter beside plain sqlx sending the same statements, on the same
//! server in the same run:
//!
//! - transfers per second with 8 concurrent tasks, random pairs among 1,000 products,
//!   quantities 1 to 5, through the path users take (what `stockroom::connect` returns: the
//!   tracing decorator around a [`MariaDbStore`], as `Arc<dyn Store>`, and
//!   `StoreExt::transfer`), beside a sqlx `MySqlPool` of the same size and settings sending, in
//!   one transaction per transfer, the statements the store sends (checked at the end of the
//!   run against what the store logs under `stockroom::sql`: see [`TRANSFER`]: the adapter's
//!   own stock move, both stocks in one `UPDATE`), and beside the same pool sending what the
//!   core's generic move sends through the record ports ([`GENERIC_TRANSFER`]: each stock
//!   changed by an increment, an `UPDATE` and a read of the row back, as MariaDB has no
//!   `UPDATE … RETURNING`), what the adapter's own move saves. All three draw the same pairs
//!   and quantities (the same generators);
//! - point reads per second (`products().get`, a whole product) by one task on the runtime, on
//!   one session held throughout and with a session taken from the store for each read (as a
//!   web handler does per request), beside the store's own prepared `SELECT` of the same columns
//!   sent by sqlx on one pooled connection held throughout, and on the pool (a connection
//!   acquired for each read).
//!
//! Everything runs once untimed first (one second of each workload: the warm-up), then
//! `STOCKROOM_BENCH_RUNS` runs (default 5) of `STOCKROOM_BENCH_SECS` seconds (default 5) each;
//! within a run the three transfer workloads take turns at going first, and so do the store and
//! sqlx for the reads, so that none always runs in the same place (after the others' ledger
//! inserts, say). Every ratio is computed within a run; the report gives each figure's and each
//! ratio's median over the runs with their lowest and highest. The server comes from
//! `STOCKROOM_TEST_MARIADB_URL`, else `mysql://root@127.0.0.1:3306`
//! (`stockroom_mariadb::testing::configured_url`); the bench makes one scratch database there
//! (`stockroom_test_<uuid>`, so that a later test run sweeps it if this process is killed) and
//! drops it at the end, panic or not. It ends by checking that the stock total is unchanged and
//! that the ledger holds one row per transfer counted.
//!
//! Run: `cargo bench -p stockroom-mariadb --bench throughput`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{Connection, Executor as _, MySqlConnection, MySqlPool};
use stockroom_core::{
    traced, NewProduct, ProductId, Store, StoreConfig, StoreExt, TransferRequest, MAX_STOCK,
};
use stockroom_mariadb::testing::{self, TestDatabase};
use stockroom_mariadb::MariaDbStore;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

const TASKS: usize = 8;
const PRODUCTS: usize = 1_000;
const INITIAL_STOCK: i64 = 1_000_000;

/// The columns a product is read with, in the order the store reads them.
macro_rules! product_columns {
    () => {
        "`id`, `name`, `slug`, `sku`, `description`, `status`, `stock`, `category_id`, \
         `created_by`, `created_at`, `updated_at`, `deleted_at`, `version`"
    };
}

/// What begins the store's units of work, in one text-protocol exchange: the isolation level
/// (READ COMMITTED by default), autocommit off, the transaction, and its marker row (the guard
/// against a transaction a Galera node rolls back silently: see the adapter's `session.rs`).
const BEGIN: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET autocommit = 0; \
                     START TRANSACTION; CREATE TEMPORARY TABLE IF NOT EXISTS \
                     `stockroom_transaction` (`open` BOOLEAN NOT NULL) ENGINE=InnoDB; INSERT \
                     INTO `stockroom_transaction` VALUES (TRUE)";

/// A transaction begun without the guard: what [`BEGIN`] would be without it.
const BEGIN_UNGUARDED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// Both products of a transfer, locked in id order. Binds: the lower id, the higher.
const LOCK: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM `products` WHERE `deleted_at` IS NULL AND `id` IN (?, ?) ORDER BY `id` FOR UPDATE"
);

/// The ledger row. Binds: id, source, target, quantity, idempotency key, created_at.
const RECORD: &str = "INSERT INTO `stock_movements` (`id`, `source_id`, `target_id`, \
                      `quantity`, `idempotency_key`, `created_at`) VALUES (?, ?, ?, ?, ?, ?)";

/// One product's stock moved by a delta, within range. Binds: delta, updated_at, id, the
/// lowest and the highest stock the delta may apply to.
const INCREMENT: &str = "UPDATE `products` SET `stock` = `stock` + ?, `updated_at` = ?, \
                         `version` = `version` + 1 WHERE `id` = ? AND `deleted_at` IS NULL AND \
                         `stock` BETWEEN ? AND ?";

/// A live product by id: the store's point read, and its read of a row after an increment
/// (MariaDB has no `UPDATE … RETURNING`). Binds: id.
const GET: &str = concat!(
    "SELECT ",
    product_columns!(),
    " FROM `products` WHERE `deleted_at` IS NULL AND `id` = ?"
);

/// How the store commits: the marker row checked and taken away, `COMMIT`, autocommit back on,
/// in one text-protocol exchange.
const COMMIT: &str = "BEGIN NOT ATOMIC IF NOT EXISTS (SELECT 1 FROM `stockroom_transaction`) \
                      THEN SIGNAL SQLSTATE '40001' SET MESSAGE_TEXT = 'stockroom: the \
                      transaction was rolled back under the unit of work'; END IF; DELETE FROM \
                      `stockroom_transaction`; END; COMMIT; SET autocommit = 1";

/// A commit without the guard.
const COMMIT_UNGUARDED: &str = "COMMIT";

/// What the core's generic stock move sends per transfer through the record ports, in order
/// (the adapter's own move replaces it: [`TRANSFER`]).
const GENERIC_TRANSFER: [&str; 8] = [BEGIN, LOCK, RECORD, INCREMENT, GET, INCREMENT, GET, COMMIT];

/// Both stocks moved in one statement, after the lock and the checks made on the locked rows
/// (the adapter's `src/moves.rs`). Binds: source, -quantity, +quantity, updated_at, source,
/// target.
const MOVE_BOTH: &str = "UPDATE `products` SET `stock` = `stock` + CASE WHEN `id` = ? THEN ? \
                         ELSE ? END, `updated_at` = ?, `version` = `version` + 1 WHERE `id` IN \
                         (?, ?) AND `deleted_at` IS NULL";

/// What the store sends per transfer without an idempotency key (the adapter's own stock
/// move), in order; the pool's ping on acquire comes before it.
const TRANSFER: [&str; 5] = [BEGIN, LOCK, RECORD, MOVE_BOTH, COMMIT];

/// A product row as plain sqlx decodes it (the store decodes the same columns into a
/// `Product`).
#[derive(sqlx::FromRow)]
#[allow(dead_code)] // decoded, as an application would, not read
struct ProductRow {
    id: Uuid,
    name: String,
    slug: String,
    sku: String,
    description: Option<String>,
    status: String,
    stock: i64,
    category_id: Option<Uuid>,
    created_by: Option<Uuid>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    deleted_at: Option<NaiveDateTime>,
    version: i64,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median, lowest and highest of `xs`.
fn spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

/// A small xorshift generator: the bench needs spread, not quality.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What sends the transfers.
#[derive(Clone)]
enum Transfers {
    /// `StoreExt::transfer` on the user's store.
    Store(Arc<dyn Store>),
    /// Plain sqlx, the store's statements ([`TRANSFER`]).
    Same(MySqlPool),
    /// Plain sqlx, the core's generic move ([`GENERIC_TRANSFER`]).
    Generic(MySqlPool),
    /// Plain sqlx, the store's statements without the Galera guard ([`BEGIN_UNGUARDED`],
    /// [`COMMIT_UNGUARDED`]): what the guard costs.
    Unguarded(MySqlPool),
}

/// The time now, as the store binds timestamps: UTC, as a `DATETIME(6)` (sqlx sends
/// microseconds).
fn utc_now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// One transfer by plain sqlx, in a transaction begun as the store begins its units of work:
/// both rows locked in id order and checked as the core checks them, the ledger row, then the
/// stocks, either both in one statement as the store changes them (`fused`) or one at a time
/// with a read back after each, as the core's generic move does.
async fn plain_transfer(
    pool: &MySqlPool,
    source: Uuid,
    target: Uuid,
    quantity: i64,
    fused: bool,
    guarded: bool,
) -> sqlx::Result<()> {
    let (begin, commit) = if guarded {
        (BEGIN, COMMIT)
    } else {
        (BEGIN_UNGUARDED, COMMIT_UNGUARDED)
    };
    let mut tx = pool.acquire().await?;
    tx.execute(begin).await?;
    let (low, high) = if source < target {
        (source, target)
    } else {
        (target, source)
    };
    let locked: Vec<ProductRow> = sqlx::query_as(LOCK)
        .bind(low)
        .bind(high)
        .fetch_all(&mut *tx)
        .await?;
    let stock_of = |id: Uuid| {
        locked
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.stock)
            .expect("a live product")
    };
    assert!(
        stock_of(source) >= quantity && stock_of(target) <= MAX_STOCK - quantity,
        "the bench's stocks never run out"
    );
    let now = utc_now();
    sqlx::query(RECORD)
        .bind(Uuid::now_v7())
        .bind(source)
        .bind(target)
        .bind(quantity)
        .bind(None::<&str>)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if fused {
        let moved = sqlx::query(MOVE_BOTH)
            .bind(source)
            .bind(-quantity)
            .bind(quantity)
            .bind(now)
            .bind(source)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        assert_eq!(moved.rows_affected(), 2);
    } else {
        for (id, delta) in [(source, -quantity), (target, quantity)] {
            let moved = sqlx::query(INCREMENT)
                .bind(delta)
                .bind(now)
                .bind(id)
                .bind(-delta)
                .bind(MAX_STOCK - delta)
                .execute(&mut *tx)
                .await?;
            assert_eq!(moved.rows_affected(), 1);
            let row: Option<ProductRow> = sqlx::query_as(GET)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            assert!(row.is_some());
        }
    }
    tx.execute(commit).await.map(drop)
}

/// Transfers per second by [`TASKS`] tasks through `side`, and how many were made.
async fn transfers_per_second(
    side: &Transfers,
    ids: &Arc<Vec<ProductId>>,
    secs: u64,
) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (side, ids, stop, done) = (
            side.clone(),
            Arc::clone(ids),
            Arc::clone(&stop),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            // The same pairs and quantities whichever side sends them.
            let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (t as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let a = rng.below(ids.len());
                let b = (a + 1 + rng.below(ids.len() - 1)) % ids.len();
                let quantity = 1 + rng.below(5) as i64;
                match &side {
                    Transfers::Store(store) => {
                        store
                            .transfer(&TransferRequest::new(ids[a], ids[b], quantity))
                            .await
                            .expect("transfer");
                    }
                    Transfers::Same(pool)
                    | Transfers::Generic(pool)
                    | Transfers::Unguarded(pool) => {
                        let fused = !matches!(side, Transfers::Generic(_));
                        let guarded = !matches!(side, Transfers::Unguarded(_));
                        let (source, target) = (ids[a].as_uuid(), ids[b].as_uuid());
                        plain_transfer(pool, source, target, quantity, fused, guarded)
                            .await
                            .expect("plain sqlx transfer");
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let done = done.load(Ordering::Relaxed);
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

/// What sends the point reads.
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    /// `products().get` on one read session held throughout.
    StoreHeld,
    /// `products().get` on a read session taken from the store for each read.
    StoreEach,
    /// [`GET`] by sqlx on one pooled connection held throughout.
    PlainHeld,
    /// [`GET`] by sqlx on the pool: a connection acquired for each read.
    PlainEach,
}

/// Point reads per second by one task on the runtime (as a request handler runs).
async fn reads_per_second(
    how: Reads,
    store: &Arc<dyn Store>,
    pool: &MySqlPool,
    ids: &Arc<Vec<ProductId>>,
    secs: u64,
) -> f64 {
    let (store, pool, ids) = (Arc::clone(store), pool.clone(), Arc::clone(ids));
    tokio::spawn(async move {
        let mut rng = Rng(42);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut n = 0u64;
        let mut held_session = match how {
            Reads::StoreHeld => Some(store.read().await.unwrap()),
            _ => None,
        };
        let mut held_connection = match how {
            Reads::PlainHeld => Some(pool.acquire().await.unwrap()),
            _ => None,
        };
        while Instant::now() < deadline {
            let id = ids[rng.below(ids.len())];
            let found = match how {
                Reads::StoreHeld => {
                    let session = held_session.as_mut().expect("held");
                    session.products().get(id).await.unwrap().is_some()
                }
                Reads::StoreEach => {
                    let mut session = store.read().await.unwrap();
                    session.products().get(id).await.unwrap().is_some()
                }
                Reads::PlainHeld => {
                    let conn = held_connection.as_mut().expect("held");
                    sqlx::query_as::<_, ProductRow>(GET)
                        .bind(id.as_uuid())
                        .fetch_optional(&mut **conn)
                        .await
                        .unwrap()
                        .is_some()
                }
                Reads::PlainEach => sqlx::query_as::<_, ProductRow>(GET)
                    .bind(id.as_uuid())
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
                    .is_some(),
            };
            assert!(found);
            n += 1;
        }
        n as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// The figures of one run.
#[derive(Default)]
struct Run {
    store_transfers: f64,
    same_transfers: f64,
    generic_transfers: f64,
    unguarded_transfers: f64,
    store_held: f64,
    plain_held: f64,
    store_each: f64,
    plain_each: f64,
}

/// What the bench measures, and where.
struct Bench {
    /// What `stockroom::connect` returns: the tracing decorator around the store, as
    /// `Arc<dyn Store>`.
    user: Arc<dyn Store>,
    /// Plain sqlx's pool: the size and settings of the store's.
    pool: MySqlPool,
    ids: Arc<Vec<ProductId>>,
    /// Every transfer made, for the ledger check at the end.
    transfers: u64,
}

impl Bench {
    /// Run `number` (0: the warm-up), each workload for `secs` seconds.
    async fn run(&mut self, secs: u64, number: usize) -> Run {
        let mut run = Run::default();
        let mut sides = [
            Transfers::Store(Arc::clone(&self.user)),
            Transfers::Same(self.pool.clone()),
            Transfers::Generic(self.pool.clone()),
            Transfers::Unguarded(self.pool.clone()),
        ];
        // Each takes its turn at going first.
        sides.rotate_left(number % 4);
        for side in &sides {
            let (rate, done) = transfers_per_second(side, &self.ids, secs).await;
            self.transfers += done;
            match side {
                Transfers::Store(_) => run.store_transfers = rate,
                Transfers::Same(_) => run.same_transfers = rate,
                Transfers::Generic(_) => run.generic_transfers = rate,
                Transfers::Unguarded(_) => run.unguarded_transfers = rate,
            }
        }
        let mut reads = [
            [Reads::StoreHeld, Reads::PlainHeld],
            [Reads::StoreEach, Reads::PlainEach],
        ];
        if number % 2 == 1 {
            reads.iter_mut().for_each(|pair| pair.reverse());
        }
        for how in reads.into_iter().flatten() {
            let rate = reads_per_second(how, &self.user, &self.pool, &self.ids, secs).await;
            match how {
                Reads::StoreHeld => run.store_held = rate,
                Reads::StoreEach => run.store_each = rate,
                Reads::PlainHeld => run.plain_held = rate,
                Reads::PlainEach => run.plain_each = rate,
            }
        }
        run
    }
}

/// Prints a figure's median and range over `runs`.
fn print_figure(name: &str, unit: &str, runs: &[Run], figure: impl Fn(&Run) -> f64) {
    let values: Vec<f64> = runs.iter().map(figure).collect();
    let (median, low, high) = spread(&values);
    println!("{name:<52} {median:>8.0} {unit:<3} ({low:.0} to {high:.0})");
}

/// Prints a ratio's median and range over `runs`, each computed within its run.
fn print_ratio(name: &str, runs: &[Run], ratio: impl Fn(&Run) -> f64) {
    let values: Vec<f64> = runs.iter().map(ratio).collect();
    let (median, low, high) = spread(&values);
    println!("{name:<52} {median:>8.2}     ({low:.2} to {high:.2})");
}

fn report(runs: &[Run]) {
    print_figure("transfers, 8 tasks, connect() store", "/s", runs, |r| {
        r.store_transfers
    });
    print_figure(
        "transfers, 8 tasks, sqlx, the store's 5 statements",
        "/s",
        runs,
        |r| r.same_transfers,
    );
    print_figure(
        "transfers, 8 tasks, sqlx, the generic move's 8",
        "/s",
        runs,
        |r| r.generic_transfers,
    );
    print_figure(
        "transfers, 8 tasks, sqlx, the store's, no guard",
        "/s",
        runs,
        |r| r.unguarded_transfers,
    );
    print_figure("point reads, one held session", "/s", runs, |r| {
        r.store_held
    });
    print_figure("point reads, sqlx, one held connection", "/s", runs, |r| {
        r.plain_held
    });
    print_figure("point reads, a session per read", "/s", runs, |r| {
        r.store_each
    });
    print_figure(
        "point reads, sqlx on the pool (acquire per read)",
        "/s",
        runs,
        |r| r.plain_each,
    );
    println!("ratios, each within its run:");
    print_ratio("transfers: store / sqlx same statements", runs, |r| {
        r.store_transfers / r.same_transfers
    });
    print_ratio("transfers: store / sqlx generic move", runs, |r| {
        r.store_transfers / r.generic_transfers
    });
    print_ratio(
        "transfers: sqlx same statements / sqlx generic",
        runs,
        |r| r.same_transfers / r.generic_transfers,
    );
    print_ratio(
        "transfers: sqlx same statements / sqlx no guard",
        runs,
        |r| r.same_transfers / r.unguarded_transfers,
    );
    print_ratio("point reads, held: store / sqlx", runs, |r| {
        r.store_held / r.plain_held
    });
    print_ratio("point reads, per read: store / sqlx", runs, |r| {
        r.store_each / r.plain_each
    });
}

/// 1,000 products with a million units each: room for every transfer of the bench.
async fn seed(store: &dyn Store) -> Vec<ProductId> {
    let mut uow = store.begin().await.unwrap();
    let seeded = uow
        .products()
        .create_many(
            (0..PRODUCTS)
                .map(|i| {
                    NewProduct::new(
                        &format!("Item {i}"),
                        &format!("item-{i}"),
                        &format!("IT-{i}"),
                    )
                    .unwrap()
                    .with_stock(INITIAL_STOCK)
                    .unwrap()
                })
                .collect(),
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    seeded.iter().map(|p| p.id).collect()
}

/// Collects the messages of the events of `stockroom::sql` (the statements a store with
/// `log_statements` sends).
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "stockroom::sql" {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let text = message.0;
        let text = text.strip_prefix("slow statement: ").unwrap_or(&text);
        self.0.lock().unwrap().push(text.to_owned());
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// What a store of `config` with `log_statements` sends for a transfer (its second, so that
/// nothing of a first use shows) and for a point read, as it logs them; a store of its own with
/// one connection, so that the log holds its statements alone.
async fn statements_sent(config: &StoreConfig, ids: &[ProductId]) -> (Vec<String>, Vec<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&log)));
    let config = config
        .clone()
        .with_log_statements(true)
        .with_run_migrations(false)
        .with_min_connections(0)
        .with_max_connections(1);
    let ids = ids.to_vec();
    let take = {
        let log = Arc::clone(&log);
        move || std::mem::take(&mut *log.lock().unwrap())
    };
    async move {
        let store: Arc<dyn Store> = Arc::new(traced(
            MariaDbStore::connect(&config).await.expect("connect"),
        ));
        let request = TransferRequest::new(ids[0], ids[1], 1);
        store.transfer(&request).await.expect("transfer");
        take();
        store.transfer(&request).await.expect("transfer");
        let transfer = take();
        let mut session = store.read().await.unwrap();
        assert!(session.products().get(ids[2]).await.unwrap().is_some());
        drop(session);
        let read = take();
        store.close().await;
        (transfer, read)
    }
    .with_subscriber(subscriber)
    .await
}

/// The server's version and durability setting, for the report.
async fn server_facts(admin: &mut MySqlConnection) -> String {
    let (version, flush): (String, i64) =
        sqlx::query_as("SELECT VERSION(), CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)")
            .fetch_one(&mut *admin)
            .await
            .unwrap();
    format!("MariaDB {version}, innodb_flush_log_at_trx_commit = {flush}")
}

/// The machine's load averages (1, 5, 15 minutes), for the report: the machine may be shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with no argument; run the
    // full measurement either way, it ends by itself.
    let secs = env_number("STOCKROOM_BENCH_SECS", 5);
    let runs = env_number("STOCKROOM_BENCH_RUNS", 5).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let db = TestDatabase::create().await.unwrap_or_else(|| {
            panic!(
                "no MariaDB server at {} (set STOCKROOM_TEST_MARIADB_URL)",
                stockroom_core::adapter::redact_url(&testing::configured_url())
            )
        });
        let url = db.url().to_owned();
        db.drop_after(bench(url, secs, runs)).await;
    });
}

async fn bench(url: String, secs: u64, runs: usize) {
    let config = StoreConfig::new(url.clone())
        .with_min_connections(TASKS as u32)
        .with_max_connections(TASKS as u32 + 2)
        .with_application_name("stockroom_bench");
    let user: Arc<dyn Store> = Arc::new(traced(
        MariaDbStore::connect(&config).await.expect("connect"),
    ));
    // Plain sqlx's pool: the size, the ping on acquire and the timeouts of the store's.
    let pool = MySqlPoolOptions::new()
        .min_connections(config.min_connections)
        .max_connections(config.max_connections)
        .test_before_acquire(config.test_before_acquire)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .max_lifetime(config.max_lifetime)
        .connect(&url)
        .await
        .expect("connect plain sqlx");
    let mut admin = MySqlConnection::connect(&url).await.expect("connect");
    let ids = Arc::new(seed(user.as_ref()).await);
    let mut bench = Bench {
        user,
        pool,
        ids,
        transfers: 0,
    };

    println!(
        "stockroom-mariadb throughput: warm-up, then {runs} runs x {secs} s; medians over the \
         runs, lowest to highest in brackets\n(server {}: {}; {} cores; load average {} at the \
         start)",
        stockroom_core::adapter::redact_url(&testing::configured_url()),
        server_facts(&mut admin).await,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    bench.run(1, 0).await;
    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        results.push(bench.run(secs, run).await);
    }
    report(&results);
    println!("load average {} at the end", load_average());

    // What the store sent is what plain sqlx sent: checked after the measurements, so that no
    // tracing subscriber ever existed while they ran.
    let (transfer, read) = statements_sent(&config, &bench.ids).await;
    bench.transfers += 2;
    println!(
        "per transfer, the store sends (after the pool's ping on acquire, test_before_acquire \
         = {}; plain sqlx's pool pings alike):",
        config.test_before_acquire
    );
    for statement in &transfer {
        println!("  {statement}");
    }
    assert_eq!(
        transfer, TRANSFER,
        "the store's transfer is no longer what plain sqlx sends: update TRANSFER"
    );
    assert_eq!(
        read,
        [GET],
        "the store's point read is no longer plain sqlx's: update GET"
    );
    println!("the generic move, plain sqlx sends:");
    for statement in GENERIC_TRANSFER {
        println!("  {statement}");
    }

    // Every transfer happened, once, and moved stock without making or losing any.
    let (total, movements): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT CAST(SUM(`stock`) AS SIGNED) FROM `products`), \
         (SELECT COUNT(*) FROM `stock_movements`)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(total, INITIAL_STOCK * PRODUCTS as i64, "stock total");
    assert_eq!(movements as u64, bench.transfers, "ledger rows");
    println!("checked: stock total unchanged, {movements} ledger rows = transfers made");

    let Bench { user, pool, .. } = bench;
    let _ = admin.close().await;
    pool.close().await;
    user.close().await;
}

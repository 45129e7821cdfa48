//! Throughput of the PostgreSQL adapter beside PostgreSQL's own pgbench, on the same server in
//! the same run:
//!
//! - transfers per second with 8 concurrent tasks (`StoreExt::transfer`, random pairs among
//!   1,000 products), beside `pgbench -M prepared -c 8 -j 2` (the built-in TPC-B-like script:
//!   7 statements per transaction, BEGIN and END included). A transfer is one statement in
//!   autocommit (data-modifying CTEs: key lookup, both rows locked in id order, checks, ledger
//!   insert, both stock updates), so one round trip and one commit; the connection comes from,
//!   and goes back to, the store's stack of kept connections, without a ping;
//! - point reads per second (`products().get`, a whole row) by one task on the runtime, beside
//!   `pgbench -M prepared -S -c 1` (one one-column select per transaction): on one session held
//!   throughout, and with a session taken from the store for every read, as a web handler does
//!   per request;
//! - `create_many` of 10,000 products in one unit of work (a binary `COPY`), in rows per
//!   second, beside the same number of rows of the same shape inserted by the server alone
//!   (`INSERT … SELECT … FROM generate_series`, no client, no data sent): the floor any client
//!   pays for the table's heap and its eight indexes (a trigram GIN index among them). Both
//!   follow an untimed `VACUUM products`, so that neither pays for the pending GIN entries and
//!   dead rows the transfers left.
//!
//! Everything runs once untimed first (one second of each workload, one `create_many`: the
//! warm-up), then `STOCKROOM_BENCH_RUNS` runs (default 5) of `STOCKROOM_BENCH_SECS` seconds
//! (default 5) each; the transfers of the store with `test_before_acquire` and of the one without take turns
//! at going first. Every ratio is computed within a run, Stockroom's figure over pgbench's
//! (or the server's) measured moments apart; the report gives each figure's and each ratio's
//! median over the runs with their lowest and highest. The server comes from
//! `STOCKROOM_TEST_DATABASE_URL`, else `DATABASE_URL` (when it is a PostgreSQL URL), else
//! `postgres://postgres@127.0.0.1:5432/postgres` (`stockroom_postgres::testing::configured_url`);
//! the bench makes two scratch databases there through sqlx (one for Stockroom, one initialised
//! by `pgbench -i -s 8`) and drops both. `pgbench` is looked up on PATH, then in
//! /usr/lib/postgresql/*/bin; `PGBENCH` overrides.
//!
//! Run: `cargo bench -p stockroom-postgres --bench throughput`

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use stockroom_core::{
    traced, NewProduct, ProductId, Store, StoreConfig, StoreExt, TransferRequest, MAX_STOCK,
};
use stockroom_postgres::testing::{self, with_database, Statements};
use stockroom_postgres::PostgresStore;

const TASKS: usize = 8;
const PRODUCTS: usize = 1_000;
const BATCH_ROWS: usize = 10_000;

/// The configured server, as the tests resolve it. The bench measures that server (the one
/// pgbench runs on too): it never starts a throwaway cluster, whose settings (fsync off) would
/// make other figures.
fn server_url() -> String {
    testing::configured_url()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pgbench_path() -> PathBuf {
    if let Ok(p) = std::env::var("PGBENCH") {
        return p.into();
    }
    if let Ok(out) = Command::new("which").arg("pgbench").output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !p.is_empty() {
            return p.into();
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("pgbench not found: install PostgreSQL's client tools or set PGBENCH")
}

/// Runs pgbench and returns what it printed.
fn run_pgbench(args: &[&str], url: &str) -> String {
    let out = Command::new(pgbench_path())
        .args(args)
        .arg(url)
        .output()
        .expect("run pgbench");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

/// Runs pgbench and returns its tps (without initial connection time).
fn pgbench(args: &[&str], url: &str) -> f64 {
    let text = run_pgbench(args, url);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{text}"))
}

async fn admin_exec(sql: String) {
    let url = server_url();
    let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL ({e}); start it or set STOCKROOM_TEST_DATABASE_URL")
    });
    // Database names below are generated here, never user text.
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
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

async fn transfers_per_second(
    store: &Arc<PostgresStore>,
    ids: &Arc<Vec<ProductId>>,
    secs: u64,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, ids, stop, done) = (
            Arc::clone(store),
            Arc::clone(ids),
            Arc::clone(&stop),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let a = rng.below(ids.len());
                let mut b = rng.below(ids.len());
                if b == a {
                    b = (b + 1) % ids.len();
                }
                store
                    .transfer(&TransferRequest::new(ids[a], ids[b], 1))
                    .await
                    .expect("transfer");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Point reads per second by one task on the runtime (as a request handler runs), on one
/// session held throughout or on a session taken for each read.
async fn reads_per_second(
    store: &Arc<PostgresStore>,
    ids: &Arc<Vec<ProductId>>,
    secs: u64,
    per_read_session: bool,
) -> f64 {
    let (store, ids) = (Arc::clone(store), Arc::clone(ids));
    tokio::spawn(async move {
        let mut rng = Rng(42);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut n = 0u64;
        let mut held = match per_read_session {
            true => None,
            false => Some(store.read().await.unwrap()),
        };
        while Instant::now() < deadline {
            let id = ids[rng.below(ids.len())];
            let found = match held.as_mut() {
                Some(session) => session.products().get(id).await.unwrap(),
                None => {
                    let mut session = store.read().await.unwrap();
                    session.products().get(id).await.unwrap()
                }
            };
            assert!(found.is_some());
            n += 1;
        }
        n as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// The user's path: transfers per second through what `stockroom::connect` returns (the
/// tracing decorator around the store, as `Arc<dyn Store>`), 8 tasks, random pairs among the
/// first `products` of `ids`, quantities 1 to 5.
async fn users_transfers_per_second(
    store: &Arc<dyn Store>,
    ids: &Arc<Vec<ProductId>>,
    products: usize,
    secs: u64,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, ids, stop, done) = (
            Arc::clone(store),
            Arc::clone(ids),
            Arc::clone(&stop),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (t as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let a = rng.below(products);
                let b = (a + 1 + rng.below(products - 1)) % products;
                let quantity = 1 + rng.below(5) as i64;
                store
                    .transfer(&TransferRequest::new(ids[a], ids[b], quantity))
                    .await
                    .expect("transfer");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The user's path: point reads per second by one task, a read session per read, through
/// what `stockroom::connect` returns.
async fn users_reads_per_second(
    store: &Arc<dyn Store>,
    ids: &Arc<Vec<ProductId>>,
    secs: u64,
) -> f64 {
    let (store, ids) = (Arc::clone(store), Arc::clone(ids));
    tokio::spawn(async move {
        let mut rng = Rng(7);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut n = 0u64;
        while Instant::now() < deadline {
            let id = ids[rng.below(ids.len())];
            let mut session = store.read().await.unwrap();
            assert!(session.products().get(id).await.unwrap().is_some());
            n += 1;
        }
        n as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// The id of the `n`th product (from 1), as the bench renumbers them ([`renumber`]) and as
/// the pgbench scripts compute it from a number: `00000000-0000-7000-8000-` and `n` on 12
/// digits.
fn bench_id(n: usize) -> ProductId {
    let text = format!("00000000-0000-7000-8000-{n:012}");
    ProductId::from_uuid(uuid::Uuid::parse_str(&text).unwrap())
}

/// The SQL expression of [`bench_id`] for the pgbench variable `var`.
fn bench_id_sql(var: &str) -> String {
    format!("('00000000-0000-7000-8000-' || lpad((:{var})::text, 12, '0'))::uuid")
}

/// Gives the seeded products the ids [`bench_id`] computes, so that a pgbench script can name
/// them; the ids, in order.
async fn renumber(admin: &mut PgConnection, ids: &[ProductId]) -> Vec<ProductId> {
    let mut renumbered = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let new = bench_id(i + 1);
        sqlx::query("UPDATE products SET id = $1 WHERE id = $2")
            .bind(new.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *admin)
            .await
            .unwrap();
        renumbered.push(new);
    }
    renumbered
}

/// The pgbench script that sends the adapter's own stock move (the statement a transfer
/// sends, [`Statements::move_stock`]) between random distinct products among the first
/// `products`, quantities 1 to 5: the ids computed by [`bench_id_sql`], a new ledger id made of
/// two random numbers (as parameters, so that the ledger's lookup by id uses its index, which a
/// volatile `gen_random_uuid()` would not), no idempotency key, `now()`, no `lock_timeout` of its
/// own.
fn move_stock_script(statements: &Statements, products: usize) -> String {
    let statement = statements
        .move_stock
        .replace("$8", "NULL::text")
        .replace("$7", &format!("{MAX_STOCK}::bigint"))
        .replace("$6", "now()")
        .replace("$5", "NULL::text")
        .replace("$4", "(:q)::bigint")
        .replace("$3", &bench_id_sql("b"))
        .replace("$2", &bench_id_sql("a"))
        .replace(
            "$1",
            "(lpad(to_hex((:r1)::bigint), 16, '0') || lpad(to_hex((:r2)::bigint), 16, '0'))::uuid",
        );
    format!(
        "\\set a random(1, {products})\n\\set b 1 + (:a + random(0, {})) % {products}\n\\set q random(1, 5)\n\\set r1 random(1, 9223372036854775806)\n\\set r2 random(1, 9223372036854775806)\n{statement};\n",
        products - 2
    )
}

/// The pgbench script that sends the adapter's own point read of a product
/// ([`Statements::product_get`]) by a random id among `products`.
fn get_script(statements: &Statements, products: usize) -> String {
    let statement = statements.product_get.replace("$1", &bench_id_sql("a"));
    format!("\\set a random(1, {products})\n{statement};\n")
}

/// Writes `script` to a file of its own, for `pgbench -f`.
fn script_file(name: &str, script: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("stockroom-{}-{name}.sql", std::process::id()));
    std::fs::write(&path, script).unwrap();
    path
}

/// `create_many` of 10,000 products in a unit of work of its own, commit included, after an
/// untimed `VACUUM products`; rows per second.
async fn create_many_rows_per_second(
    store: &PostgresStore,
    admin: &mut PgConnection,
    run: i32,
) -> f64 {
    vacuum_products(admin).await;
    let news: Vec<NewProduct> = (0..BATCH_ROWS)
        .map(|i| {
            NewProduct::new(
                &format!("Bulk {run} {i}"),
                &format!("bulk-{run}-{i}"),
                &format!("BULK-{run}-{i}"),
            )
            .unwrap()
            .with_description("Imported in bulk")
            .unwrap()
        })
        .collect();
    let started = Instant::now();
    let mut uow = store.begin().await.unwrap();
    let created = uow.products().create_many(news).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(created.len(), BATCH_ROWS);
    BATCH_ROWS as f64 / started.elapsed().as_secs_f64()
}

/// The server alone inserting 10,000 products shaped like `create_many`'s (ids in order as
/// UUIDv7 are, the same text lengths, the search text folded), in one autocommit statement,
/// after an untimed `VACUUM products`; rows per second.
async fn server_insert_rows_per_second(admin: &mut PgConnection, run: i32) -> f64 {
    const SERVER_INSERT: &str = concat!(
        "INSERT INTO products (id, name, slug, sku, description, status, stock, category_id, ",
        "created_by, search_text, created_at, updated_at) ",
        "SELECT ('01900000-0000-7000-8000-' || lpad(to_hex($1 * 100000 + i), 12, '0'))::uuid, ",
        "'Floor ' || $1 || ' ' || i, 'floor-' || $1 || '-' || i, 'FLOOR-' || $1 || '-' || i, ",
        "'Imported in bulk', 'draft', 0, NULL, NULL, ",
        "'floor ' || $1 || ' ' || i || E'\\nfloor-' || $1 || '-' || i || E'\\nimported in bulk', ",
        "now(), now() FROM generate_series(1, $2) i"
    );
    vacuum_products(admin).await;
    let started = Instant::now();
    let inserted = sqlx::query(SERVER_INSERT)
        .bind(run)
        .bind(BATCH_ROWS as i32)
        .execute(&mut *admin)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(inserted, BATCH_ROWS as u64);
    BATCH_ROWS as f64 / started.elapsed().as_secs_f64()
}

async fn vacuum_products(admin: &mut PgConnection) {
    sqlx::raw_sql("VACUUM products")
        .execute(&mut *admin)
        .await
        .unwrap();
}

/// The figures of one run.
#[derive(Default)]
struct Run {
    transfers: f64,
    tpcb: f64,
    transfers_unpinged: f64,
    reads_per_session: f64,
    select_only: f64,
    reads_held: f64,
    create_many: f64,
    server_insert: f64,
    /// The user's path among 1,000 and 100 products, and pgbench sending the same statement.
    users_1000: f64,
    own_1000: f64,
    users_100: f64,
    own_100: f64,
    /// The user's point reads (a session each), and pgbench sending the same statement.
    users_reads: f64,
    own_get: f64,
}

/// What the bench measures, and where.
struct Bench {
    store: Arc<PostgresStore>,
    unpinged: Arc<PostgresStore>,
    ids: Arc<Vec<ProductId>>,
    admin: PgConnection,
    pgbench_url: String,
    /// What `stockroom::connect` returns: the tracing decorator around a store of the same
    /// settings, as `Arc<dyn Store>`.
    user: Arc<dyn Store>,
    /// Stockroom's database, where pgbench sends the adapter's own statements.
    our_url: String,
    /// The pgbench scripts of the adapter's statements: the move among 1,000 and among 100
    /// products, the point read.
    move_1000: PathBuf,
    move_100: PathBuf,
    get: PathBuf,
}

impl Bench {
    /// Run `number` (0: the warm-up), each workload for `secs` seconds.
    async fn run(&mut self, secs: u64, number: i32) -> Run {
        let secs_arg = secs.to_string();
        let tpcb = [
            "-M", "prepared", "-c", "8", "-j", "2", "-n", "-T", &secs_arg,
        ];
        let select_only = ["-M", "prepared", "-S", "-c", "1", "-n", "-T", &secs_arg];
        // The two stores' transfers take turns at going first, so that neither always follows
        // the previous run's inserts (and the autovacuum they start).
        let (first, second) = match number % 2 {
            0 => (&self.unpinged, &self.store),
            _ => (&self.store, &self.unpinged),
        };
        let first_transfers = transfers_per_second(first, &self.ids, secs).await;
        let tpcb = pgbench(&tpcb, &self.pgbench_url);
        let second_transfers = transfers_per_second(second, &self.ids, secs).await;
        let (transfers, transfers_unpinged) = match number % 2 {
            0 => (second_transfers, first_transfers),
            _ => (first_transfers, second_transfers),
        };
        let script = |path: &PathBuf, clients: &'static str| -> Vec<String> {
            let mut args: Vec<String> = ["-M", "prepared", "-c", clients, "-n", "-T", &secs_arg]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if clients != "1" {
                args.extend(["-j".to_owned(), "2".to_owned()]);
            }
            args.extend(["-f".to_owned(), path.display().to_string()]);
            args
        };
        let pgbench_own = |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pgbench(&args, &self.our_url)
        };
        let users_1000 = users_transfers_per_second(&self.user, &self.ids, PRODUCTS, secs).await;
        let own_1000 = pgbench_own(script(&self.move_1000, "8"));
        let users_100 = users_transfers_per_second(&self.user, &self.ids, 100, secs).await;
        let own_100 = pgbench_own(script(&self.move_100, "8"));
        let users_reads = users_reads_per_second(&self.user, &self.ids, secs).await;
        let own_get = pgbench_own(script(&self.get, "1"));
        // The rest are measured in the order written: each of Stockroom's figures next to the
        // one it is divided by.
        Run {
            users_1000,
            own_1000,
            users_100,
            own_100,
            users_reads,
            own_get,
            transfers,
            tpcb,
            transfers_unpinged,
            reads_per_session: reads_per_second(&self.store, &self.ids, secs, true).await,
            select_only: pgbench(&select_only, &self.pgbench_url),
            reads_held: reads_per_second(&self.store, &self.ids, secs, false).await,
            create_many: create_many_rows_per_second(&self.store, &mut self.admin, number).await,
            server_insert: server_insert_rows_per_second(&mut self.admin, number).await,
        }
    }
}

/// Prints a figure's median and range over `runs`.
fn print_figure(name: &str, unit: &str, runs: &[Run], figure: impl Fn(&Run) -> f64) {
    let values: Vec<f64> = runs.iter().map(figure).collect();
    let (median, low, high) = spread(&values);
    println!("{name:<46} {median:>9.0} {unit:<7} ({low:.0} to {high:.0})");
}

/// Prints a ratio's median and range over `runs`, each computed within its run.
fn print_ratio(name: &str, runs: &[Run], ratio: impl Fn(&Run) -> f64) {
    let values: Vec<f64> = runs.iter().map(ratio).collect();
    let (median, low, high) = spread(&values);
    println!("{name:<46} {median:>9.2}         ({low:.2} to {high:.2})");
}

fn report(runs: &[Run]) {
    print_figure("transfers, 8 tasks", "/s", runs, |r| r.transfers);
    print_figure(
        "transfers, 8 tasks, test_before_acquire off",
        "/s",
        runs,
        |r| r.transfers_unpinged,
    );
    print_figure(
        "pgbench TPC-B-like, -M prepared -c 8 -j 2",
        "tps",
        runs,
        |r| r.tpcb,
    );
    print_figure("point reads, one held session", "/s", runs, |r| {
        r.reads_held
    });
    print_figure("point reads, a session per read", "/s", runs, |r| {
        r.reads_per_session
    });
    print_figure("pgbench -M prepared -S -c 1", "tps", runs, |r| {
        r.select_only
    });
    print_figure("create_many of 10,000 products", "rows/s", runs, |r| {
        r.create_many
    });
    print_figure(
        "the same rows inserted by the server alone",
        "rows/s",
        runs,
        |r| r.server_insert,
    );
    print_figure("connect(): transfers among 1,000, q 1-5", "/s", runs, |r| {
        r.users_1000
    });
    print_figure("pgbench -f the same statement, -c 8", "tps", runs, |r| {
        r.own_1000
    });
    print_figure("connect(): transfers among 100, q 1-5", "/s", runs, |r| {
        r.users_100
    });
    print_figure("pgbench -f the same statement, -c 8", "tps", runs, |r| {
        r.own_100
    });
    print_figure("connect(): point reads, a session each", "/s", runs, |r| {
        r.users_reads
    });
    print_figure("pgbench -f the same get, -c 1", "tps", runs, |r| r.own_get);
    println!("ratios, each within its run:");
    print_ratio("connect() transfers / own statement, 1,000", runs, |r| {
        r.users_1000 / r.own_1000
    });
    print_ratio("connect() transfers / own statement, 100", runs, |r| {
        r.users_100 / r.own_100
    });
    print_ratio("connect() point reads / own get", runs, |r| {
        r.users_reads / r.own_get
    });
    print_ratio("transfers / pgbench TPC-B", runs, |r| r.transfers / r.tpcb);
    print_ratio(
        "transfers, test_before_acquire off / pgbench TPC-B",
        runs,
        |r| r.transfers_unpinged / r.tpcb,
    );
    print_ratio("point reads, held session / pgbench -S", runs, |r| {
        r.reads_held / r.select_only
    });
    print_ratio("point reads, session per read / pgbench -S", runs, |r| {
        r.reads_per_session / r.select_only
    });
    print_ratio("create_many / server alone", runs, |r| {
        r.create_many / r.server_insert
    });
}

/// 1,000 products with a million units each: room for every transfer of the bench.
async fn seed(store: &PostgresStore) -> Vec<ProductId> {
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
                    .with_stock(1_000_000)
                    .unwrap()
                })
                .collect(),
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    seeded.iter().map(|p| p.id).collect()
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
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let ours = format!("stockroom_bench_{tag}");
        let theirs = format!("stockroom_pgbench_{tag}");
        admin_exec(format!("CREATE DATABASE {ours}")).await;
        admin_exec(format!("CREATE DATABASE {theirs}")).await;
        let our_url = with_database(&server_url(), &ours);
        let pgbench_url = with_database(&server_url(), &theirs);

        let config = StoreConfig::new(our_url.clone())
            .with_min_connections(TASKS as u32)
            .with_max_connections(TASKS as u32 + 2)
            .with_application_name("stockroom_bench");
        let store = Arc::new(PostgresStore::connect(&config).await.expect("connect"));
        // The same pool with `test_before_acquire` off: no check of a connection the server closed.
        let mut unpinged = config.clone();
        unpinged.test_before_acquire = false;
        unpinged.run_migrations = false;
        let unpinged = Arc::new(PostgresStore::connect(&unpinged).await.expect("connect"));
        let seeded = seed(&store).await;
        run_pgbench(&["-i", "-s", "8", "-q"], &pgbench_url);
        let mut admin = PgConnection::connect(&our_url).await.expect("connect");
        let ids = Arc::new(renumber(&mut admin, &seeded).await);
        let statements = Statements::of(&store);
        let move_1000 = script_file("move-1000", &move_stock_script(&statements, PRODUCTS));
        let move_100 = script_file("move-100", &move_stock_script(&statements, 100));
        let get = script_file("get", &get_script(&statements, PRODUCTS));
        let mut user_config = config.clone();
        user_config.run_migrations = false;
        let user: Arc<dyn Store> = Arc::new(traced(
            PostgresStore::connect(&user_config).await.expect("connect"),
        ));
        let mut bench = Bench {
            store,
            unpinged,
            ids,
            admin,
            pgbench_url,
            user,
            our_url,
            move_1000,
            move_100,
            get,
        };

        println!(
            "stockroom-postgres throughput: warm-up, then {runs} runs x {secs} s; medians over \
             the runs, lowest to highest in brackets (server {})",
            stockroom_core::adapter::redact_url(&server_url())
        );
        bench.run(1, 0).await;
        let mut results = Vec::with_capacity(runs);
        for run in 1..=runs as i32 {
            results.push(bench.run(secs, run).await);
        }
        report(&results);

        let Bench {
            store,
            unpinged,
            admin,
            user,
            move_1000,
            move_100,
            get,
            ..
        } = bench;
        for script in [move_1000, move_100, get] {
            let _ = std::fs::remove_file(script);
        }
        user.close().await;
        let _ = admin.close().await;
        unpinged.close().await;
        store.close().await;
        admin_exec(format!("DROP DATABASE IF EXISTS {ours} WITH (FORCE)")).await;
        admin_exec(format!("DROP DATABASE IF EXISTS {theirs} WITH (FORCE)")).await;
    });
}

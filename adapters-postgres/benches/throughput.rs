//! Throughput of the PostgreSQL adapter beside PostgreSQL's own pgbench, on the same server in
//! the same run:
//!
//! - transfers per second with 8 concurrent tasks, beside `pgbench -M prepared -c 8 -j 2` (the
//!   built-in TPC-B-like script: 7 statements per transaction; a transfer is 6: BEGIN, lock
//!   both rows, two stock updates, one ledger insert, COMMIT);
//! - point reads per second on one connection, beside `pgbench -M prepared -S -c 1`;
//! - `create_many` of 10,000 products, in rows per second.
//!
//! Each figure is the median of `STOCKROOM_BENCH_RUNS` runs (default 3) of
//! `STOCKROOM_BENCH_SECS` seconds (default 5). The server comes from
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
use stockroom_core::{NewProduct, ProductId, Store, StoreConfig, StoreExt, TransferRequest};
use stockroom_postgres::testing::{self, with_database};
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
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

async fn reads_per_second(
    store: &PostgresStore,
    ids: &[ProductId],
    secs: u64,
    per_read_session: bool,
) -> f64 {
    let mut rng = Rng(42);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut n = 0u64;
    let mut held = store.read().await.unwrap();
    while Instant::now() < deadline {
        let id = ids[rng.below(ids.len())];
        let found = if per_read_session {
            let mut session = store.read().await.unwrap();
            session.products().get(id).await.unwrap()
        } else {
            held.products().get(id).await.unwrap()
        };
        assert!(found.is_some());
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn create_many_rows_per_second(store: &PostgresStore, run: usize) -> f64 {
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

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with no argument; run the
    // full measurement either way, it ends by itself.
    let secs = env_number("STOCKROOM_BENCH_SECS", 5);
    let runs = env_number("STOCKROOM_BENCH_RUNS", 3).max(1) as usize;
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
        let pgbench_url = with_database(&server_url(), &theirs);

        let config = StoreConfig::new(with_database(&server_url(), &ours))
            .with_pool_size(TASKS as u32)
            .with_max_overflow(2)
            .with_application_name("stockroom_bench");
        let store = Arc::new(PostgresStore::connect(&config).await.expect("connect"));
        // The same pool without the ping before each acquire (SQLAlchemy's pool_pre_ping off).
        let mut unpinged = config.clone();
        unpinged.test_before_acquire = false;
        unpinged.run_migrations = false;
        let unpinged = Arc::new(PostgresStore::connect(&unpinged).await.expect("connect"));
        let mut uow = store.begin().await.unwrap();
        let seeded = uow
            .products()
            .create_many(
                (0..PRODUCTS)
                    .map(|i| {
                        NewProduct::new(&format!("Item {i}"), &format!("item-{i}"), &format!("IT-{i}"))
                            .unwrap()
                            .with_stock(1_000_000)
                            .unwrap()
                    })
                    .collect(),
            )
            .await
            .unwrap();
        uow.commit().await.unwrap();
        let ids: Arc<Vec<ProductId>> = Arc::new(seeded.iter().map(|p| p.id).collect());
        run_pgbench(&["-i", "-s", "8", "-q"], &pgbench_url);

        println!("stockroom-postgres throughput: {runs} runs x {secs} s, medians (server {})", stockroom_core::redact_url(&server_url()));
        let secs_arg = secs.to_string();
        let (mut tr, mut tu, mut pb, mut rd, mut rs, mut pbs, mut cm) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            tr.push(transfers_per_second(&store, &ids, secs).await);
            tu.push(transfers_per_second(&unpinged, &ids, secs).await);
            pb.push(pgbench(&["-M", "prepared", "-c", "8", "-j", "2", "-n", "-T", &secs_arg], &pgbench_url));
            rd.push(reads_per_second(&store, &ids, secs, false).await);
            rs.push(reads_per_second(&store, &ids, secs, true).await);
            pbs.push(pgbench(&["-M", "prepared", "-S", "-c", "1", "-n", "-T", &secs_arg], &pgbench_url));
            cm.push(create_many_rows_per_second(&store, run).await);
        }
        let (tr, tu, pb) = (median(tr), median(tu), median(pb));
        let (rd, rs, pbs, cm) = (median(rd), median(rs), median(pbs), median(cm));
        println!("transfers, 8 tasks:               {tr:>10.0} /s");
        println!("transfers, 8 tasks, no pre-ping:  {tu:>10.0} /s");
        println!("pgbench TPC-B-like, -c 8 -j 2:    {pb:>10.0} tps   ratio stockroom/pgbench = {:.2} ({:.2} without pre-ping)", tr / pb, tu / pb);
        println!("point reads, one held session:    {rd:>10.0} /s");
        println!("point reads, a session per read:  {rs:>10.0} /s   (pool acquire + pre-ping each)");
        println!("pgbench -S, -c 1:                 {pbs:>10.0} tps   ratio stockroom/pgbench = {:.2} (held), {:.2} (per read)", rd / pbs, rs / pbs);
        println!("create_many of {BATCH_ROWS} products:    {cm:>10.0} rows/s");

        unpinged.close().await;
        store.close().await;
        admin_exec(format!("DROP DATABASE IF EXISTS {ours} WITH (FORCE)")).await;
        admin_exec(format!("DROP DATABASE IF EXISTS {theirs} WITH (FORCE)")).await;
    });
}

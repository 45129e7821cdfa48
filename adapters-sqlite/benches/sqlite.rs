//! The SQLite adapter beside plain rusqlite running the same SQL on one connection.
//!
//! `cargo bench -p stockroom-sqlite --bench sqlite` prints, per scenario, the median of 11
//! samples for the adapter and for the baseline (after one warm-up pair, not counted), the
//! spread of the samples (fastest and slowest), and the ratio of the medians as throughputs:
//! the adapter's over the baseline's (1.00x = as fast as plain rusqlite; higher is better).
//! Adapter and baseline samples alternate, and so does which of the two goes first, so that
//! both see the same machine and neither always runs on the heels of the other.
//!
//! The baseline connection has the adapter's writer settings (WAL, `synchronous=NORMAL`,
//! foreign keys, a 64-statement cache) and runs the statements the adapter runs, written out by
//! hand: those `src/sql/plan.rs` builds from the product's declaration, and `src/sql/ledger.rs`'s
//! for the stock move:
//!
//! - transfers: 4,000 stock transfers; the adapter runs them from 8 concurrent tasks through
//!   `StoreExt::transfer` (the use case: validation, retries, tracing; then the native
//!   `Store::move_stock`, which commits the moves waiting for the writer together: see
//!   `src/moves.rs`). The baseline runs the same statements one transfer after another:
//!   `BEGIN IMMEDIATE`, both products' stock in one `SELECT`, the checks, the ledger `INSERT`,
//!   one `UPDATE` of both stocks, `COMMIT`.
//! - create_many: 10,000 products in one unit of work (one multi-row INSERT per batch of up to
//!   2,340 rows, inside a savepoint since there are several batches), into a fresh file.
//! - point reads: 10,000 `get` by id on one read session (sequential), and the same from 8
//!   read sessions at once; the baseline runs the same SELECT on one connection.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use stockroom_core::time;
use stockroom_core::{NewProduct, ProductId, ReadSession, Store, StoreExt, TransferRequest};
use stockroom_sqlite::SqliteStore;
use uuid::Uuid;

const SAMPLES: usize = 11;
const TRANSFERS: usize = 4_000;
const TASKS: usize = 8;
const PRODUCTS: usize = 10_000;
const READS: usize = 10_000;
const HOT: usize = 64;

const COLUMNS: &str = "id, name, slug, sku, description, status, stock, category_id, created_by, \
                       created_at, updated_at, deleted_at, version";

#[path = "../tests/support/mod.rs"]
mod support;

use support::{create_products, TempDb};

/// A fresh database file for one sample.
fn temp_db() -> TempDb {
    TempDb::new("stockroom-bench")
}

fn new_product(prefix: &str, i: usize, stock: i64) -> NewProduct {
    NewProduct::new(
        &format!("Product {prefix} {i}"),
        &format!("p-{}-{i}", prefix.to_lowercase()),
        &format!("SKU-{prefix}-{i}"),
    )
    .unwrap()
    .with_description("A product made for the benchmark, with a description of modest length.")
    .unwrap()
    .with_stock(stock)
    .unwrap()
}

/// A fresh file with the adapter's schema and `n` products of `stock` units; their ids.
async fn seeded(n: usize, stock: i64) -> (TempDb, Vec<ProductId>) {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let new = (0..n).map(|i| new_product("SEED", i, stock)).collect();
    let ids = create_products(&store, new).await;
    store.close().await;
    (db, ids)
}

/// The baseline's connection: the adapter's writer settings, no pool, no threads.
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.set_prepared_statement_cache_capacity(64);
    conn
}

/// Reads a product row the way the adapter does (every column, owned).
type Row = (
    [u8; 16],
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<[u8; 16]>,
    Option<[u8; 16]>,
    i64,
    i64,
    Option<i64>,
    i64,
);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Row::try_from(r)
}

fn pairs(ids: &[ProductId], n: usize, seed: u64) -> Vec<(ProductId, ProductId)> {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (0..n)
        .map(|_| {
            let a = (next() % ids.len() as u64) as usize;
            let b = (a + 1 + (next() % (ids.len() as u64 - 1)) as usize) % ids.len();
            (ids[a], ids[b])
        })
        .collect()
}

async fn adapter_transfers(seed: u64) -> Duration {
    let (db, ids) = seeded(HOT, 1_000_000).await;
    let store = Arc::new(SqliteStore::connect(&db.config()).await.unwrap());
    let work = pairs(&ids, TRANSFERS, seed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in work.chunks(TRANSFERS / TASKS) {
        let store = Arc::clone(&store);
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for (a, b) in chunk {
                store
                    .transfer(&TransferRequest::new(a, b, 1))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await;
    elapsed
}

/// The statements of the adapter's stock move (`src/sql/ledger.rs`), without an idempotency key.
const STOCKS_SQL: &str =
    "SELECT id, stock FROM products WHERE id IN (?, ?) AND deleted_at IS NULL ORDER BY id";
const LEDGER_SQL: &str = "INSERT INTO stock_movements \
                          (id, source_id, target_id, quantity, idempotency_key, created_at) \
                          VALUES (?, ?, ?, ?, ?, ?)";
const SHIFT_SQL: &str =
    "UPDATE products SET stock = stock + CASE WHEN id = ?1 THEN -?3 ELSE ?3 END, \
                         updated_at = ?4, version = version + 1 \
                         WHERE id IN (?1, ?2) AND deleted_at IS NULL";

/// One transfer as the adapter's `Store::move_stock` runs it, on a plain connection.
fn raw_transfer(conn: &Connection, source: ProductId, target: ProductId, quantity: i64) {
    let (src, tgt) = (source.as_uuid().into_bytes(), target.as_uuid().into_bytes());
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let stocks: Vec<([u8; 16], i64)> = conn
        .prepare_cached(STOCKS_SQL)
        .unwrap()
        .query_map(params![src, tgt], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let stock_of = |id| stocks.iter().find(|(p, _)| *p == id).unwrap().1;
    stockroom_core::adapter::check_stocks(source, stock_of(src), stock_of(tgt), quantity).unwrap();
    let now = stockroom_core::adapter::to_micros(time::now());
    conn.prepare_cached(LEDGER_SQL)
        .unwrap()
        .execute(params![
            Uuid::now_v7().into_bytes(),
            src,
            tgt,
            quantity,
            None::<String>,
            now
        ])
        .unwrap();
    let moved = conn
        .prepare_cached(SHIFT_SQL)
        .unwrap()
        .execute(params![src, tgt, quantity, now])
        .unwrap();
    assert_eq!(moved, 2);
    conn.execute_batch("COMMIT").unwrap();
}

async fn baseline_transfers(seed: u64) -> Duration {
    let (db, ids) = seeded(HOT, 1_000_000).await;
    let work = pairs(&ids, TRANSFERS, seed);
    let conn = raw(db.path());
    let started = Instant::now();
    for (a, b) in work {
        raw_transfer(&conn, a, b, 1);
    }
    started.elapsed()
}

async fn adapter_create_many(sample: usize) -> Duration {
    let db = temp_db();
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let prefix = format!("S{sample}");
    let new: Vec<_> = (0..PRODUCTS).map(|i| new_product(&prefix, i, 5)).collect();
    let started = Instant::now();
    let mut uow = store.begin().await.unwrap();
    let created = uow.products().create_many(new).await.unwrap();
    uow.commit().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(created.len(), PRODUCTS);
    store.close().await;
    elapsed
}

async fn baseline_create_many(sample: usize) -> Duration {
    let db = temp_db();
    db.connect_and_close().await;
    let conn = raw(db.path());
    let prefix = format!("S{sample}");
    let new: Vec<_> = (0..PRODUCTS).map(|i| new_product(&prefix, i, 5)).collect();
    let columns = format!("{COLUMNS}, search_text");
    let per_row = 14;
    let per_batch = 32_766 / per_row;
    let started = Instant::now();
    let now = time::now();
    let rows: Vec<_> = new
        .into_iter()
        .map(|n| stockroom_core::Product {
            id: ProductId::new(),
            name: n.name().to_owned(),
            slug: n.slug().to_owned(),
            sku: n.sku().to_owned(),
            description: n.description().map(str::to_owned),
            status: n.status(),
            stock: n.stock(),
            category_id: n.category_id(),
            created_by: n.created_by(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        })
        .collect();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    // More rows than one batch: the adapter makes them all-or-nothing with a savepoint.
    let savepoint = rows.len() > per_batch;
    if savepoint {
        conn.execute_batch("SAVEPOINT stockroom_atomic").unwrap();
    }
    for batch in rows.chunks(per_batch) {
        let one = format!("({})", vec!["?"; per_row].join(", "));
        let sql = format!(
            "INSERT INTO products ({columns}) VALUES {}",
            vec![one; batch.len()].join(", ")
        );
        let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(batch.len() * per_row);
        for p in batch {
            use rusqlite::types::Value::*;
            values.extend([
                Blob(p.id.as_uuid().as_bytes().to_vec()),
                Text(p.name.clone()),
                Text(p.slug.clone()),
                Text(p.sku.clone()),
                p.description.clone().map_or(Null, Text),
                Text(p.status.as_str().to_owned()),
                Integer(p.stock),
                Null,
                Null,
                Integer(stockroom_core::adapter::to_micros(p.created_at)),
                Integer(stockroom_core::adapter::to_micros(p.updated_at)),
                Null,
                Integer(p.version),
                Text(p.search_document()),
            ]);
        }
        conn.prepare_cached(&sql)
            .unwrap()
            .execute(rusqlite::params_from_iter(values))
            .unwrap();
    }
    if savepoint {
        conn.execute_batch("RELEASE stockroom_atomic").unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    started.elapsed()
}

/// The `i`-th id of the read pattern: a stride through `ids` that touches each of them.
fn nth(ids: &[ProductId], i: usize) -> ProductId {
    ids[(i * 7919) % ids.len()]
}

/// Reads the `i`-th product of the read pattern through the adapter; it must exist.
async fn read_nth(read: &mut dyn ReadSession, ids: &[ProductId], i: usize) {
    let p = read.products().get(nth(ids, i)).await.unwrap();
    assert!(p.is_some());
}

async fn adapter_reads_sequential(db: &TempDb, ids: &[ProductId]) -> Duration {
    let store = SqliteStore::connect(&db.config()).await.unwrap();
    let mut read = store.read().await.unwrap();
    let started = Instant::now();
    for i in 0..READS {
        read_nth(read.as_mut(), ids, i).await;
    }
    let elapsed = started.elapsed();
    drop(read);
    store.close().await;
    elapsed
}

async fn adapter_reads_concurrent(db: &TempDb, ids: &[ProductId]) -> Duration {
    let store = Arc::new(SqliteStore::connect(&db.config()).await.unwrap());
    let ids = Arc::new(ids.to_vec());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
        tasks.push(tokio::spawn(async move {
            let mut read = store.read().await.unwrap();
            for i in (t..READS).step_by(TASKS) {
                read_nth(read.as_mut(), &ids, i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await;
    elapsed
}

fn baseline_reads(db: &TempDb, ids: &[ProductId]) -> Duration {
    let conn = raw(db.path());
    let sql = format!("SELECT {COLUMNS} FROM products WHERE id = ? AND deleted_at IS NULL");
    let started = Instant::now();
    for i in 0..READS {
        let id = nth(ids, i).as_uuid().into_bytes();
        let row = conn
            .prepare_cached(&sql)
            .unwrap()
            .query_row([id], read_row)
            .optional()
            .unwrap();
        assert!(row.is_some());
    }
    started.elapsed()
}

/// The times of one side of a scenario, the warm-up (the first) left out.
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        self.0[self.0.len() / 2]
    }

    /// The fastest and the slowest sample.
    fn range_ms(&self) -> (f64, f64) {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        (ms(&self.0[0]), ms(&self.0[self.0.len() - 1]))
    }
}

/// Runs a warm-up pair, then `samples` pairs of the adapter and the baseline, alternating which
/// goes first, so that neither always runs on the heels of the other (the writeback of its
/// files, the caches it warmed). Sample `s` of both sides gets `s` (a seed, a prefix).
async fn paired<FA, A, FB, B>(
    samples: usize,
    mut adapter: FA,
    mut baseline: FB,
) -> (Samples, Samples)
where
    FA: FnMut(usize) -> A,
    A: Future<Output = Duration>,
    FB: FnMut(usize) -> B,
    B: Future<Output = Duration>,
{
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for s in 0..=samples {
        if s % 2 == 0 {
            a.push(adapter(s).await);
            b.push(baseline(s).await);
        } else {
            b.push(baseline(s).await);
            a.push(adapter(s).await);
        }
    }
    let counted = |mut v: Vec<Duration>| {
        v.remove(0);
        v.sort();
        Samples(v)
    };
    (counted(a), counted(b))
}

/// Prints both medians, the ratio of the throughputs (adapter over rusqlite) and the spread of
/// the samples.
fn report(name: &str, unit: usize, what: &str, adapter: &Samples, baseline: &Samples) {
    let rate = |d: Duration| unit as f64 / d.as_secs_f64();
    let (a, b) = (adapter.median(), baseline.median());
    println!(
        "{name:<34} adapter {:>9.2} ms ({:>9.0} {what}/s)   rusqlite {:>9.2} ms ({:>9.0} {what}/s)   ratio {:>5.2}x",
        a.as_secs_f64() * 1e3,
        rate(a),
        b.as_secs_f64() * 1e3,
        rate(b),
        rate(a) / rate(b),
    );
    let ((a_min, a_max), (b_min, b_max)) = (adapter.range_ms(), baseline.range_ms());
    println!(
        "{:<34} samples: adapter {a_min:.2}-{a_max:.2} ms, rusqlite {b_min:.2}-{b_max:.2} ms",
        ""
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let samples = if std::env::args().any(|a| a == "--bench") {
        SAMPLES
    } else {
        1
    };
    // `cargo bench ... -- create_many` runs only the scenarios whose name contains the word.
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let runs = |name: &str| only.as_deref().is_none_or(|word| name.contains(word));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "stockroom-sqlite vs plain rusqlite: median of {samples} samples after a warm-up; \
             ratio = adapter throughput / rusqlite throughput"
        );

        let name = format!("transfers ({TRANSFERS}, {TASKS} tasks)");
        if runs(&name) {
            let seed = |s: usize| s as u64 + 1;
            let (a, b) = paired(
                samples,
                |s| adapter_transfers(seed(s)),
                |s| baseline_transfers(seed(s)),
            )
            .await;
            report(&name, TRANSFERS, "tx", &a, &b);
        }

        let name = format!("create_many ({PRODUCTS} products)");
        if runs(&name) {
            let (a, b) = paired(samples, adapter_create_many, baseline_create_many).await;
            report(&name, PRODUCTS, "rows", &a, &b);
        }

        let one = format!("point reads ({READS}, 1 session)");
        let many = format!("point reads ({READS}, {TASKS} sessions)");
        if runs(&one) || runs(&many) {
            let (db, ids) = seeded(PRODUCTS, 5).await;
            let baseline = |_| async { baseline_reads(&db, &ids) };
            if runs(&one) {
                let adapter = |_| adapter_reads_sequential(&db, &ids);
                let (a, b) = paired(samples, adapter, baseline).await;
                report(&one, READS, "get", &a, &b);
            }
            if runs(&many) {
                let adapter = |_| adapter_reads_concurrent(&db, &ids);
                let (a, b) = paired(samples, adapter, baseline).await;
                report(&many, READS, "get", &a, &b);
            }
        }

        // What the adapter avoids for short calls: one blocking-pool round trip, no SQL.
        if !runs("thread hop") {
            return;
        }
        let mut hops = Vec::new();
        for _ in 0..=samples {
            let started = Instant::now();
            for _ in 0..READS {
                tokio::task::spawn_blocking(|| ()).await.unwrap();
            }
            hops.push(started.elapsed());
        }
        hops.remove(0);
        hops.sort();
        println!(
            "{:<34} {:>9.2} us per spawn_blocking round trip (no SQL)",
            "thread hop",
            Samples(hops).median().as_secs_f64() * 1e6 / READS as f64
        );
    });
}

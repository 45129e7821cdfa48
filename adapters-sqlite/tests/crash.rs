//! Crash safety: a child process runs concurrent transfers on a SQLite file and prints the id
//! of every transfer it saw commit; the parent kills it with SIGKILL mid-run, reopens the file
//! and checks that the database is intact, the total stock unchanged, every reported transfer in
//! the ledger and every product's stock equal to what the ledger says. Three rounds on the same
//! file, so recovery after a kill is itself followed by a kill.
//!
//! `harness = false`: the same binary is the child when `STOCKROOM_CRASH_CHILD` names a file.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use stockroom_core::{
    NewProduct, Page, ProductFilter, StockMovementId, Store, StoreConfig, StoreExt, TransferRequest,
};
use stockroom_sqlite::SqliteStore;

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use support::{create_products, TempDb};

const CHILD_ENV: &str = "STOCKROOM_CRASH_CHILD";
const PRODUCTS: usize = 16;
const INITIAL_STOCK: i64 = 1_000;
const WORKERS: u64 = 8;

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(Path::new(&path));
        return;
    }
    let started = Instant::now();
    println!("\nrunning 1 test");
    parent();
    println!("test crash::sigkill_mid_transfers_loses_nothing ... ok");
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

fn url(path: &Path) -> StoreConfig {
    StoreConfig::new(format!("sqlite://{}", path.display()))
}

/// Runs transfers forever on 8 tasks, printing `committed <id>` after each commit.
fn child(path: &Path) {
    runtime().block_on(async {
        let store = Arc::new(
            SqliteStore::connect(&url(path))
                .await
                .expect("child connect"),
        );
        let mut read = store.read().await.expect("read");
        let ids: Vec<_> = read
            .products()
            .list(&ProductFilter::default(), Page::new(1_000, 0).unwrap())
            .await
            .expect("list")
            .into_iter()
            .map(|p| p.id)
            .collect();
        drop(read);
        println!("ready");
        let mut tasks = Vec::new();
        for worker in 0..WORKERS {
            let store = Arc::clone(&store);
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng =
                    0x9E37_79B9_7F4A_7C15u64 ^ (worker + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                loop {
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    let a = (next() % ids.len() as u64) as usize;
                    let b = (a + 1 + (next() % (ids.len() as u64 - 1)) as usize) % ids.len();
                    let quantity = 1 + (next() % 7) as i64;
                    let request = TransferRequest::new(ids[a], ids[b], quantity);
                    match store.transfer(&request).await {
                        Ok(movement) => {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "committed {}", movement.id).expect("stdout");
                            out.flush().expect("flush");
                        }
                        Err(stockroom_core::Error::InsufficientStock { .. }) => {}
                        Err(e) => panic!("transfer failed: {e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("worker");
        }
    });
}

fn parent() {
    let db = TempDb::new("stockroom-crash");
    let path = db.path();
    let total = INITIAL_STOCK * PRODUCTS as i64;
    runtime().block_on(async {
        let store = SqliteStore::connect(&url(path)).await.expect("connect");
        let new = (0..PRODUCTS)
            .map(|i| {
                NewProduct::new(
                    &format!("Product {i}"),
                    &format!("p-{i}"),
                    &format!("SKU-{i}"),
                )
                .unwrap()
                .with_stock(INITIAL_STOCK)
                .unwrap()
            })
            .collect();
        create_products(&store, new).await;
        store.close().await;
    });

    let mut reported = HashSet::new();
    for (round, kill_after) in [150usize, 400, 250].into_iter().enumerate() {
        let seen = run_and_kill(path, kill_after);
        println!(
            "round {round}: killed after {} reported commits",
            seen.len()
        );
        assert!(
            seen.len() >= kill_after,
            "the child stopped early: {}",
            seen.len()
        );
        reported.extend(seen);
        verify(path, &reported, total);
    }
}

/// Starts the child, waits for `kill_after` reported commits, SIGKILLs it and returns every
/// transfer it reported (complete lines only).
fn run_and_kill(path: &Path, kill_after: usize) -> Vec<StockMovementId> {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ids = Vec::new();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).expect("read child output") == 0 {
            break;
        }
        if let Some(id) = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("committed "))
        {
            ids.push(id.parse().expect("a movement id"));
        }
        if !killed && (ids.len() >= kill_after || Instant::now() > deadline) {
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
    ids
}

fn verify(path: &Path, reported: &HashSet<StockMovementId>, total: i64) {
    let conn = Connection::open(path).expect("reopen");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let sum: i64 = conn
        .query_row("SELECT SUM(stock) FROM products", [], |r| r.get(0))
        .expect("sum");
    assert_eq!(sum, total, "total stock changed");
    // Every product's stock is its initial stock plus what the ledger moved in, minus out.
    let mismatched: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM products p WHERE p.stock != ?1 \
             + COALESCE((SELECT SUM(quantity) FROM stock_movements WHERE target_id = p.id), 0) \
             - COALESCE((SELECT SUM(quantity) FROM stock_movements WHERE source_id = p.id), 0)",
            [INITIAL_STOCK],
            |r| r.get(0),
        )
        .expect("ledger check");
    assert_eq!(mismatched, 0, "stock and ledger disagree");
    let negative: i64 = conn
        .query_row("SELECT COUNT(*) FROM products WHERE stock < 0", [], |r| {
            r.get(0)
        })
        .expect("negative check");
    assert_eq!(negative, 0);
    drop(conn);

    runtime().block_on(async {
        let store = SqliteStore::connect(&url(path)).await.expect("reconnect");
        let mut read = store.read().await.expect("read");
        let ledger = read.movements().count().await.expect("count");
        assert!(
            ledger as usize >= reported.len(),
            "ledger {ledger} < reported {}",
            reported.len()
        );
        for id in reported {
            assert!(
                read.movements().get(*id).await.expect("get").is_some(),
                "reported transfer {id} is not in the ledger"
            );
        }
        drop(read);
        store.close().await;
    });
}

//! The user's path: what `stockroom::connect` returns (an `Arc<dyn Store>`, the tracing
//! decorator around the concrete store) beside the concrete store itself, on the same database
//! in the same run, and the time from process start to the first committed transfer.
//!
//! `cargo bench --bench users_path --features postgres` prints, per backend (a SQLite file;
//! PostgreSQL on a fresh database of the test harness when a server is reachable):
//!
//! - transfers: 8 tasks, each `TRANSFERS` transfers between random pairs of 1,000 products,
//!   quantities 1 to 5, through `StoreExt::transfer`: on the store `connect` returned, and on the
//!   concrete store (`SqliteStore`, `PostgresStore`) in an `Arc`. Samples alternate which goes
//!   first; the ratio is the user's path's throughput over the concrete store's (1.00x = the
//!   decorator and the trait object cost nothing measurable).
//! - point reads, a session per read: 8 tasks, each `READS` `get`s by id, each on a read
//!   session of its own.
//! - first transfer: this binary started again as a child process, which connects to the
//!   existing database with `stockroom::connect` and commits one transfer, then exits; the
//!   parent times the whole process (spawn to exit), the child reports its connect and its
//!   transfer. Median of the samples.
//!
//! `-- first-transfer` runs only the last. Medians of `SAMPLES` samples after one warm-up pair; the spread (fastest, slowest) beside
//! them. `cargo test --benches` runs each once, as a smoke test.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stockroom::{NewProduct, ProductId, Store, StoreExt, TransferRequest};

const TASKS: usize = 8;
const PRODUCTS: usize = 1_000;
const TRANSFERS: usize = 300;
const READS: usize = 1_000;
const SAMPLES: usize = 7;
const FIRST_TRANSFER_SAMPLES: usize = 11;

/// What a sample measured.
struct Samples(Vec<Duration>);

impl Samples {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }
    fn median(&self) -> Duration {
        self.0[self.0.len() / 2]
    }
    fn low(&self) -> Duration {
        self.0[0]
    }
    fn high(&self) -> Duration {
        self.0[self.0.len() - 1]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn seed(store: &dyn Store) -> Vec<ProductId> {
    let mut uow = store.begin().await.unwrap();
    let new = (0..PRODUCTS)
        .map(|i| {
            NewProduct::new(
                &format!("Product {i}"),
                &format!("p-{i}"),
                &format!("SKU-{i}"),
            )
            .unwrap()
            .with_stock(1_000_000_000)
            .unwrap()
        })
        .collect();
    let products = uow.products().create_many(new).await.unwrap();
    uow.commit().await.unwrap();
    products.into_iter().map(|p| p.id).collect()
}

/// `TASKS` tasks of `TRANSFERS` transfers each on `store`; the wall time.
async fn transfers<S: Store + stockroom::StoreExt + ?Sized + 'static>(
    store: Arc<S>,
    ids: Arc<Vec<ProductId>>,
    seed: u64,
) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 100 + t as u64);
                for _ in 0..TRANSFERS {
                    let a = rng.random_range(0..ids.len());
                    let mut b = rng.random_range(0..ids.len() - 1);
                    if b >= a {
                        b += 1;
                    }
                    let quantity = rng.random_range(1..=5);
                    store
                        .transfer(&TransferRequest::new(ids[a], ids[b], quantity))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// `TASKS` tasks of `READS` point reads each, a read session per read; the wall time.
async fn reads<S: Store + ?Sized + 'static>(
    store: Arc<S>,
    ids: Arc<Vec<ProductId>>,
    seed: u64,
) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 100 + t as u64);
                for _ in 0..READS {
                    let id = ids[rng.random_range(0..ids.len())];
                    let mut session = store.read().await.unwrap();
                    assert!(session.products().get(id).await.unwrap().is_some());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// Runs `user` (on the store `connect` returned) and `concrete` alternately, `samples` times
/// each after a warm-up pair; both sample sets.
async fn paired<FU, U, FC, C>(samples: usize, mut user: FU, mut concrete: FC) -> (Samples, Samples)
where
    FU: FnMut(u64) -> U,
    U: std::future::Future<Output = Duration>,
    FC: FnMut(u64) -> C,
    C: std::future::Future<Output = Duration>,
{
    let (mut u, mut c) = (Vec::new(), Vec::new());
    for s in 0..=samples {
        let seed = s as u64 + 1;
        if s % 2 == 0 {
            u.push(user(seed).await);
            c.push(concrete(seed).await);
        } else {
            c.push(concrete(seed).await);
            u.push(user(seed).await);
        }
    }
    u.remove(0);
    c.remove(0);
    (Samples::of(u), Samples::of(c))
}

fn report(name: &str, ops: usize, user: &Samples, concrete: &Samples) {
    let rate = |d: Duration| ops as f64 / d.as_secs_f64();
    println!(
        "  {name:<34} connect(): {:>8.0}/s ({:.1}-{:.1} ms)   concrete: {:>8.0}/s ({:.1}-{:.1} ms)   ratio {:.3}x",
        rate(user.median()),
        ms(user.low()),
        ms(user.high()),
        rate(concrete.median()),
        ms(concrete.low()),
        ms(concrete.high()),
        rate(user.median()) / rate(concrete.median()),
    );
}

/// The child: connect to `url`, commit one transfer, print the two phases in microseconds.
fn first_transfer_child(url: &str, source: &str, target: &str) {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = stockroom::connect(url).await.unwrap();
        let connected = started.elapsed();
        let (source, target) = (source.parse().unwrap(), target.parse().unwrap());
        store
            .transfer(&TransferRequest::new(source, target, 1))
            .await
            .unwrap();
        let transferred = started.elapsed();
        println!(
            "{} {}",
            connected.as_micros(),
            (transferred - connected).as_micros()
        );
    });
    // Exit at once: the time measured ends with the first committed transfer.
    std::process::exit(0);
}

/// Spawns the child `samples` times (after one warm-up); the medians of the whole process, of
/// the connect and of the first transfer.
fn first_transfer(url: &str, ids: &[ProductId], samples: usize) {
    let exe = std::env::current_exe().unwrap();
    let (mut whole, mut connect, mut transfer) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..=samples {
        let started = Instant::now();
        let out = Command::new(&exe)
            .args(["--first-transfer", url])
            .arg(ids[s % ids.len()].to_string())
            .arg(ids[(s + 1) % ids.len()].to_string())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut phases = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        if s == 0 {
            continue;
        }
        whole.push(elapsed);
        connect.push(Duration::from_micros(phases.next().unwrap()));
        transfer.push(Duration::from_micros(phases.next().unwrap()));
    }
    let (whole, connect, transfer) = (
        Samples::of(whole),
        Samples::of(connect),
        Samples::of(transfer),
    );
    println!(
        "  {:<34} {:.1} ms ({:.1}-{:.1}): connect {:.1} ms, first transfer {:.1} ms, the rest (exec, runtime) {:.1} ms",
        "process start to first transfer",
        ms(whole.median()),
        ms(whole.low()),
        ms(whole.high()),
        ms(connect.median()),
        ms(transfer.median()),
        ms(whole.median()) - ms(connect.median()) - ms(transfer.median()),
    );
}

async fn bench_backend<S: Store + 'static>(
    name: &str,
    url: &str,
    concrete: Arc<S>,
    samples: usize,
    only_first_transfer: bool,
) {
    println!("{name}:");
    let user = stockroom::connect(url).await.unwrap();
    let ids = Arc::new(seed(user.as_ref()).await);
    if only_first_transfer {
        user.close().await;
        concrete.close().await;
        tokio::task::block_in_place(|| first_transfer(url, &ids, FIRST_TRANSFER_SAMPLES));
        return;
    }
    let (u, c) = paired(
        samples,
        |s| transfers(Arc::clone(&user), Arc::clone(&ids), s),
        |s| transfers(Arc::clone(&concrete), Arc::clone(&ids), s),
    )
    .await;
    report(
        &format!("transfers ({TASKS}x{TRANSFERS})"),
        TASKS * TRANSFERS,
        &u,
        &c,
    );
    let (u, c) = paired(
        samples,
        |s| reads(Arc::clone(&user), Arc::clone(&ids), s),
        |s| reads(Arc::clone(&concrete), Arc::clone(&ids), s),
    )
    .await;
    report(
        &format!("point reads ({TASKS}x{READS}, a session each)"),
        TASKS * READS,
        &u,
        &c,
    );
    user.close().await;
    concrete.close().await;
    let first_samples = if samples > 1 {
        FIRST_TRANSFER_SAMPLES
    } else {
        1
    };
    tokio::task::block_in_place(|| first_transfer(url, &ids, first_samples));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--first-transfer") {
        first_transfer_child(&args[i + 1], &args[i + 2], &args[i + 3]);
    }
    let samples = if args.iter().any(|a| a == "--bench") {
        SAMPLES
    } else {
        1
    };
    // `cargo bench --bench users_path -- first-transfer` measures only the time to the first
    // transfer.
    let only_first_transfer = args.iter().any(|a| a == "first-transfer");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "the user's path (stockroom::connect, Arc<dyn Store>) beside the concrete store: \
             median of {samples} samples; ratio = connect()'s throughput / the concrete store's"
        );
        let dir = std::env::temp_dir().join(format!("stockroom-users-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let concrete = stockroom::sqlite::SqliteStore::connect(&stockroom::StoreConfig::new(&url))
            .await
            .unwrap();
        bench_backend(
            "SQLite (a file)",
            &url,
            Arc::new(concrete),
            samples,
            only_first_transfer,
        )
        .await;
        std::fs::remove_dir_all(&dir).ok();

        #[cfg(feature = "postgres")]
        if let Some(db) = stockroom::postgres::testing::TestDatabase::create().await {
            let url = db.url().to_owned();
            // The same settings as `connect`'s (the harness's own store has a smaller pool).
            let config = stockroom::StoreConfig::new(&url);
            let concrete = stockroom::postgres::PostgresStore::connect(&config)
                .await
                .unwrap();
            bench_backend(
                "PostgreSQL",
                &url,
                Arc::new(concrete),
                samples,
                only_first_transfer,
            )
            .await;
            db.drop_now().await;
        }
    });
}

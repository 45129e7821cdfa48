//! What the outbox costs the writes that use it, on the user's path (`stockroom::connect_with`,
//! an `Arc<dyn Store>`), per backend: the in-memory store, a SQLite file, and PostgreSQL on a
//! fresh database of the test harness when a server is reachable (`--features postgres`).
//!
//! - transfers: 8 tasks, each `TRANSFERS` transfers between random pairs of 1,000 products
//!   (quantities 1 to 5) through `StoreExt::transfer`, on a store without Stockroom's own events
//!   and on one with them (`StoreConfig::with_own_events(true)`: one `stockroom.stock.moved`
//!   event written in each transfer's transaction), on the same database.
//! - units of work: 8 tasks, each `UNITS` units of work that create a product and commit,
//!   without an event and with one (`uow.publish`, an application's event of 64 bytes).
//!
//! Medians of `SAMPLES` samples after a warm-up; samples alternate which store goes first. The
//! ratio is the throughput with events over the throughput without (1.00x: the event costs
//! nothing measurable). `cargo test --benches` runs each once, as a smoke test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stockroom::outbox::NewEvent;
use stockroom::{NewProduct, ProductId, Store, StoreConfig, StoreExt, TransferRequest};

const TASKS: usize = 8;
const PRODUCTS: usize = 1_000;
const TRANSFERS: usize = 300;
const UNITS: usize = 200;
const SAMPLES: usize = 7;

fn median(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

async fn seed(store: &Arc<dyn Store>) -> Vec<ProductId> {
    let news = (0..PRODUCTS)
        .map(|i| {
            NewProduct::new(
                &format!("Bench {i}"),
                &format!("bench-{i}"),
                &format!("BENCH-{i}"),
            )
            .unwrap()
            .with_stock(1_000_000)
            .unwrap()
        })
        .collect();
    let mut uow = store.begin().await.unwrap();
    let created = uow.products().create_many(news).await.unwrap();
    uow.commit().await.unwrap();
    created.into_iter().map(|p| p.id).collect()
}

/// 8 tasks of `TRANSFERS` transfers each between random pairs of `ids`.
async fn transfers(store: &Arc<dyn Store>, ids: &Arc<Vec<ProductId>>, seed: u64) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, ids) = (Arc::clone(store), Arc::clone(ids));
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 100 + t as u64);
                for _ in 0..TRANSFERS {
                    let a = ids[rng.random_range(0..ids.len())];
                    let mut b = ids[rng.random_range(0..ids.len())];
                    while b == a {
                        b = ids[rng.random_range(0..ids.len())];
                    }
                    let request = TransferRequest::new(a, b, rng.random_range(1..=5));
                    store.transfer(&request).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// What makes the names of the products the units of work create unique.
static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// 8 tasks of `UNITS` units of work each: a product created, with an event if `publish`.
async fn units(store: &Arc<dyn Store>, publish: bool) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for _ in 0..UNITS {
                    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
                    let new = NewProduct::new(
                        &format!("Unit {n}"),
                        &format!("unit-{n}"),
                        &format!("UNIT-{n}"),
                    )
                    .unwrap();
                    let mut uow = store.begin().await.unwrap();
                    let product = uow.products().create(new).await.unwrap();
                    if publish {
                        let event =
                            NewEvent::new("bench.created", product.id.to_string(), vec![7u8; 64])
                                .unwrap();
                        uow.publish(event).await.unwrap();
                    }
                    uow.commit().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

fn report(what: &str, operations: usize, without: Vec<Duration>, with: Vec<Duration>) {
    let (off, off_low, off_high) = median(without);
    let (on, on_low, on_high) = median(with);
    let rate = |d: Duration| operations as f64 / d.as_secs_f64();
    println!(
        "  {what:<16} without events {:>8.0}/s ({:.0}..{:.0})   with {:>8.0}/s ({:.0}..{:.0})   ratio {:.2}x",
        rate(off),
        rate(off_high),
        rate(off_low),
        rate(on),
        rate(on_high),
        rate(on_low),
        rate(on) / rate(off),
    );
}

/// Runs both measurements on `off` (own events off) and `on` (on), each on its products (the
/// same ones when both stores are on one database).
async fn bench_backend(
    name: &str,
    (off, off_ids): (&Arc<dyn Store>, Vec<ProductId>),
    (on, on_ids): (&Arc<dyn Store>, Vec<ProductId>),
    samples: usize,
) {
    println!("{name}:");
    let (off_ids, on_ids) = (Arc::new(off_ids), Arc::new(on_ids));
    let (mut t_off, mut t_on, mut u_off, mut u_on) = (vec![], vec![], vec![], vec![]);
    // A warm-up of each, then the samples, alternating which goes first.
    transfers(off, &off_ids, 0).await;
    transfers(on, &on_ids, 0).await;
    units(off, false).await;
    units(on, true).await;
    for sample in 0..samples {
        let seed = sample as u64 + 1;
        if sample % 2 == 0 {
            t_off.push(transfers(off, &off_ids, seed).await);
            t_on.push(transfers(on, &on_ids, seed).await);
            u_off.push(units(off, false).await);
            u_on.push(units(on, true).await);
        } else {
            t_on.push(transfers(on, &on_ids, seed).await);
            t_off.push(transfers(off, &off_ids, seed).await);
            u_on.push(units(on, true).await);
            u_off.push(units(off, false).await);
        }
    }
    report("transfers", TASKS * TRANSFERS, t_off, t_on);
    report("units of work", TASKS * UNITS, u_off, u_on);
}

async fn connect(config: StoreConfig) -> Arc<dyn Store> {
    stockroom::connect_with(config).await.unwrap()
}

fn main() {
    let samples = if std::env::args().any(|a| a == "--bench") {
        SAMPLES
    } else {
        1
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "what the outbox costs a write (stockroom::connect_with, Arc<dyn Store>): median of \
             {samples} samples, operations per second (slowest..fastest); ratio = with / without"
        );

        // Two memory stores: each its own data, seeded alike.
        let off = connect(StoreConfig::new("memory://")).await;
        let on = connect(StoreConfig::new("memory://").with_own_events(true)).await;
        let (off_ids, on_ids) = (seed(&off).await, seed(&on).await);
        bench_backend("memory", (&off, off_ids), (&on, on_ids), samples).await;

        let dir =
            std::env::temp_dir().join(format!("stockroom-outbox-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let off = connect(StoreConfig::new(&url)).await;
        let on = connect(StoreConfig::new(&url).with_own_events(true)).await;
        let ids = seed(&off).await;
        bench_backend("SQLite (a file)", (&off, ids.clone()), (&on, ids), samples).await;
        off.close().await;
        on.close().await;
        std::fs::remove_dir_all(&dir).ok();

        #[cfg(feature = "postgres")]
        if let Some(db) = stockroom::postgres::testing::TestDatabase::create().await {
            let url = db.url().to_owned();
            let off = connect(StoreConfig::new(&url)).await;
            let on = connect(StoreConfig::new(&url).with_own_events(true)).await;
            let ids = seed(&off).await;
            bench_backend("PostgreSQL", (&off, ids.clone()), (&on, ids), samples).await;
            off.close().await;
            on.close().await;
            db.drop_now().await;
        }
    });
}

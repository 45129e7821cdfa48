//! Cost as the catalogue grows: one product table of `STOCKROOM_SCALE_ROWS` rows (default
//! 1,000,000; `cargo test --benches` uses 2,000) loaded with `create_many` through
//! `stockroom::connect`, then, on each backend (memory; a SQLite file; PostgreSQL on a fresh
//! database of the test harness with the `postgres` feature):
//!
//! - search with its total, a page of 20: a rare word (in 20 rows), `blue mug` (two common words
//!   in a row), `mug` (a common word);
//! - a keyset page of 100 right after the load (the first one is shown apart: nothing waits for
//!   the backend to settle, since "right after" is the point);
//! - an offset page of 20 at the middle of the table;
//! - a keyset page of 100 of a search's matches, the rare word and `mug`;
//! - on PostgreSQL, the searches again once the table is analyzed (`ANALYZE`, what autovacuum
//!   does within a minute of a bulk load by default).
//!
//! Names are three words drawn from a list of 16, so `mug` is in about 3 rows in 16 and `blue
//! mug` (two words in a row) in about one in 128; a rare word is in 20 rows. Each figure is the
//! median of 5 runs of the query, after one untimed.
//!
//! Each search's total is checked against an exact `count` of the same filter (untimed), and
//! the rare word's against its 20 rows, so a run also proves the totals at that size; CI runs
//! it with 100,000 rows (`.ci/run`).
//!
//! Run: `cargo bench --bench scale --features postgres` (loading a million rows takes about
//! 10 to 20 s per backend).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom::{Limit, NewProduct, Page, ProductFilter, Store, Total, MAX_EXACT_TOTAL};

const WORDS: [&str; 16] = [
    "blue", "red", "green", "black", "steel", "clay", "glass", "oak", "mug", "plate", "bowl",
    "jug", "cup", "vase", "tray", "lamp",
];
const RARE: &str = "zephyrine";
const RARE_ROWS: usize = 20;
const BATCH: usize = 10_000;
const RUNS: usize = 5;

/// A well-spread number from `x` (splitmix64), so that names look random and load the same
/// every run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Row `i`'s name among `rows`: three words drawn from [`WORDS`], so that `mug` is in about 3
/// rows in 16 and `blue mug`, two words in a row, in about one in 128; [`RARE`] replaces the
/// middle word of 20 rows spread over the table.
fn name(i: usize, rows: usize) -> String {
    let word = |k: u64| WORDS[(mix(i as u64 * 3 + k) % 16) as usize];
    let stride = (rows / RARE_ROWS).max(1);
    let middle = if i % stride == stride / 2 && i / stride < RARE_ROWS {
        RARE
    } else {
        word(1)
    };
    format!("{} {middle} {}", word(0), word(2))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn median<F, Fut, T>(mut f: F) -> (Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut last = f().await;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        last = f().await;
        times.push(started.elapsed());
    }
    times.sort();
    (times[RUNS / 2], last)
}

async fn load(store: &dyn Store, rows: usize) -> Duration {
    let started = Instant::now();
    let mut i = 0;
    while i < rows {
        let n = BATCH.min(rows - i);
        let new = (i..i + n)
            .map(|k| {
                NewProduct::new(&name(k, rows), &format!("p-{k}"), &format!("SKU-{k}")).unwrap()
            })
            .collect();
        let mut uow = store.begin().await.unwrap();
        uow.products().create_many(new).await.unwrap();
        uow.commit().await.unwrap();
        i += n;
    }
    started.elapsed()
}

/// A search's median time and its total, after checking the total against an exact `count`
/// of the same filter (untimed): `Exact` up to the bound, `AtLeast` the bound beyond.
async fn search(store: &dyn Store, text: &str) -> (Duration, Total) {
    let filter = ProductFilter::default().with_search(text).unwrap();
    let counted = {
        let mut read = store.read().await.unwrap();
        read.products().count(&filter).await.unwrap()
    };
    let (time, total) = search_timed(store, &filter).await;
    let expected = if counted > MAX_EXACT_TOTAL {
        Total::AtLeast(MAX_EXACT_TOTAL)
    } else {
        Total::Exact(counted)
    };
    assert_eq!(
        total, expected,
        "the total of {text:?}, {counted} rows counted"
    );
    (time, total)
}

async fn search_timed(store: &dyn Store, filter: &ProductFilter) -> (Duration, Total) {
    median(|| async {
        let mut read = store.read().await.unwrap();
        let page = read
            .products()
            .search(filter, Page::new(20, 0).unwrap())
            .await
            .unwrap();
        page.total
    })
    .await
}

/// The three searches: (label, median).
async fn searches(store: &dyn Store) -> Vec<(String, Duration)> {
    let (rare, rare_total) = search(store, RARE).await;
    assert_eq!(
        rare_total,
        Total::Exact(RARE_ROWS as u64),
        "the rare word's rows"
    );
    let (two, two_total) = search(store, "blue mug").await;
    let (common, common_total) = search(store, "mug").await;
    vec![
        (format!("search, rare word ({rare_total} hits)"), rare),
        (format!("search, \"blue mug\" ({two_total} hits)"), two),
        (format!("search, \"mug\" ({common_total} hits)"), common),
    ]
}

/// The median of a keyset page of 100 of the matches of `text`.
async fn search_keyset(store: &dyn Store, text: &str) -> Duration {
    let filter = ProductFilter::default().with_search(text).unwrap();
    let (time, _) = median(|| async {
        let mut read = store.read().await.unwrap();
        read.products()
            .list_after(&filter, None, Limit::new(100).unwrap())
            .await
            .unwrap()
            .items
            .len()
    })
    .await;
    time
}

fn line(label: &str, value: Duration) {
    println!("  {label:<52} {:>9.2} ms", ms(value));
}

async fn bench(name: &str, store: Arc<dyn Store>, rows: usize) {
    let loaded = load(store.as_ref(), rows).await;
    // Right after the load: the first keyset page, timed once, then its median.
    let first = Instant::now();
    {
        let mut read = store.read().await.unwrap();
        read.products()
            .list_after(&ProductFilter::default(), None, Limit::new(100).unwrap())
            .await
            .unwrap();
    }
    let first_keyset = first.elapsed();
    let (keyset, _) = median(|| async {
        let mut read = store.read().await.unwrap();
        read.products()
            .list_after(&ProductFilter::default(), None, Limit::new(100).unwrap())
            .await
            .unwrap()
            .items
            .len()
    })
    .await;
    let (offset, _) = median(|| async {
        let mut read = store.read().await.unwrap();
        read.products()
            .list(
                &ProductFilter::default(),
                Page::new(20, (rows / 2) as i64).unwrap(),
            )
            .await
            .unwrap()
            .len()
    })
    .await;
    let found = searches(store.as_ref()).await;
    println!(
        "{name} ({rows} rows, loaded in {:.1} s):",
        loaded.as_secs_f64()
    );
    for (label, value) in &found {
        line(label, *value);
    }
    line("keyset page of 100 right after the load", first_keyset);
    line("keyset page of 100, median of the next", keyset);
    line("offset page of 20 at the middle", offset);
    line(
        "keyset page of 100 of a search, rare word",
        search_keyset(store.as_ref(), RARE).await,
    );
    line(
        "keyset page of 100 of a search, \"mug\"",
        search_keyset(store.as_ref(), "mug").await,
    );
}

fn main() {
    let bench_run = std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("STOCKROOM_SCALE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_run { 1_000_000 } else { 2_000 });
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let runs = |name: &str| only.as_deref().is_none_or(|w| name.contains(w));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if runs("memory") {
            let store = stockroom::connect("memory://").await.unwrap();
            bench("memory", store.clone(), rows).await;
            store.close().await;
        }
        if runs("sqlite") {
            let dir = std::env::temp_dir().join(format!("stockroom-scale-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("scale.db").display());
            let store = stockroom::connect(&url).await.unwrap();
            bench("sqlite", store.clone(), rows).await;
            store.close().await;
            std::fs::remove_dir_all(&dir).ok();
        }
        #[cfg(feature = "postgres")]
        if runs("postgres") {
            if let Some(db) = stockroom::postgres::testing::TestDatabase::create().await {
                let store = stockroom::connect(db.url()).await.unwrap();
                bench("postgres", store.clone(), rows).await;
                // Right after a bulk load the planner's statistics do not know the new rows
                // until autovacuum analyzes the table (up to a minute later, by default):
                // the searches again once they do.
                let pool = stockroom::postgres::sqlx::PgPool::connect(db.url())
                    .await
                    .unwrap();
                stockroom::postgres::sqlx::query("ANALYZE products")
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                println!("postgres, once the table is analyzed:");
                for (label, value) in searches(store.as_ref()).await {
                    line(&label, value);
                }
                store.close().await;
                db.drop_now().await;
            }
        }
    });
}

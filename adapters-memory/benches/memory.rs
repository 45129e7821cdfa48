//! What the in-memory store costs an application's unit tests.
//!
//! `cargo bench -p stockroom-memory --bench memory` prints, per operation, the median time per
//! operation over several samples (and the fastest and slowest sample), on a store holding
//! 10,000 products:
//!
//! - get: `read.products().get` by id on one held read session;
//! - search: a case-insensitive search returning a page of 20 and the total; and the same search
//!   right after a write that changed a product's name (the search then scans the document index
//!   built earlier and checks the rows written since one by one; past a sixteenth of the table
//!   written, the next search builds the index again);
//! - product_details: the product, its 20 latest reviews and rating statistics (three sessions);
//! - transfer: one `StoreExt::transfer` (begin, lock, two updates, ledger row, commit), from one
//!   task, and from 8 tasks at once (time per transfer);
//! - create_many: 10,000 products in one unit of work, into an empty store (time per product).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom_core::{
    Limit, NewProduct, NewReview, NewUser, Page, ProductFilter, ProductId, ProductPatch, Store,
    StoreExt, TransferRequest,
};
use stockroom_memory::MemoryStore;

const SAMPLES: usize = 7;
const PRODUCTS: usize = 10_000;
const OPS: usize = 2_000;
const TASKS: usize = 8;

fn new_product(i: usize) -> NewProduct {
    NewProduct::new(
        &format!("Product {i}"),
        &format!("product-{i}"),
        &format!("SKU-{i}"),
    )
    .unwrap()
    .with_description("A product made for the benchmark, with a description of modest length.")
    .unwrap()
    .with_stock(1_000_000)
    .unwrap()
}

/// A store with [`PRODUCTS`] products, the first of which has 50 reviews; the products' ids.
async fn seeded() -> (Arc<MemoryStore>, Vec<ProductId>) {
    let store = Arc::new(MemoryStore::new());
    let mut uow = store.begin().await.unwrap();
    let products = uow
        .products()
        .create_many((0..PRODUCTS).map(new_product).collect())
        .await
        .unwrap();
    let authors = (0..50)
        .map(|i| NewUser::new(&format!("reader{i}@example.com"), "Reader").unwrap())
        .collect();
    let authors = uow.users().create_many(authors).await.unwrap();
    // One review per author and product (a design rule), so 50 authors for 50 reviews.
    let reviews = authors
        .iter()
        .zip(0..)
        .map(|(author, i)| NewReview::new(products[0].id, author.id, i % 5 + 1).unwrap())
        .collect();
    uow.reviews().create_many(reviews).await.unwrap();
    uow.commit().await.unwrap();
    (store, products.into_iter().map(|p| p.id).collect())
}

/// Runs `sample` [`SAMPLES`] times; each run does `ops` operations and returns its duration.
/// Prints the median, fastest and slowest time per operation.
async fn report<F, Fut>(name: &str, ops: usize, mut sample: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut per_op: Vec<Duration> = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        per_op.push(sample().await / ops as u32);
    }
    per_op.sort();
    println!(
        "{name:<28} median {:>10.2?}/op   (fastest {:.2?}, slowest {:.2?}; {SAMPLES} samples of {ops})",
        per_op[SAMPLES / 2],
        per_op[0],
        per_op[SAMPLES - 1],
    );
}

async fn gets(store: &MemoryStore, ids: &[ProductId]) -> Duration {
    let mut read = store.read().await.unwrap();
    let start = Instant::now();
    for i in 0..OPS {
        let id = ids[i * 7919 % ids.len()];
        assert!(read.products().get(id).await.unwrap().is_some());
    }
    start.elapsed()
}

async fn searches(store: &MemoryStore) -> Duration {
    let filter = ProductFilter::default().with_search("product 99").unwrap();
    let page = Page::new(20, 0).unwrap();
    let mut read = store.read().await.unwrap();
    let start = Instant::now();
    for _ in 0..OPS / 10 {
        let found = read.products().search(&filter, page).await.unwrap();
        assert_eq!(
            found.total,
            stockroom_core::Total::Exact(111),
            "Product 99 and 990..999 and 9900..9999"
        );
    }
    start.elapsed()
}

/// Each search follows a rename of one product (not timed), so it rebuilds the document index.
async fn searches_after_a_rename(store: &MemoryStore, id: ProductId) -> Duration {
    let filter = ProductFilter::default().with_search("product 99").unwrap();
    let page = Page::new(20, 0).unwrap();
    let mut elapsed = Duration::ZERO;
    for i in 0..OPS / 10 {
        let patch = ProductPatch::new()
            .with_name(&format!("Renamed {i}"))
            .unwrap();
        let mut uow = store.begin().await.unwrap();
        uow.products().update(id, &patch, None).await.unwrap();
        uow.commit().await.unwrap();
        let mut read = store.read().await.unwrap();
        let start = Instant::now();
        let found = read.products().search(&filter, page).await.unwrap();
        elapsed += start.elapsed();
        assert_eq!(found.total, stockroom_core::Total::Exact(111));
    }
    elapsed
}

async fn details(store: &MemoryStore, id: ProductId) -> Duration {
    let limit = Limit::new(20).unwrap();
    let start = Instant::now();
    for _ in 0..OPS {
        let details = store.product_details(id, limit).await.unwrap().unwrap();
        assert_eq!(details.reviews.len(), 20);
    }
    start.elapsed()
}

/// `ops` transfers split over `tasks` tasks, each between a pair of products chosen from `ids`.
async fn transfers(store: &Arc<MemoryStore>, ids: &Arc<Vec<ProductId>>, tasks: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move {
                for i in 0..OPS / tasks {
                    let from = ids[(task * 31 + i) % 64];
                    let to = ids[(task * 31 + i + 1) % 64];
                    store
                        .transfer(&TransferRequest::new(from, to, 1))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

async fn create_many() -> Duration {
    let store = MemoryStore::new();
    let new: Vec<_> = (0..PRODUCTS).map(new_product).collect();
    let start = Instant::now();
    let mut uow = store.begin().await.unwrap();
    uow.products().create_many(new).await.unwrap();
    uow.commit().await.unwrap();
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (store, ids) = seeded().await;
    let ids = Arc::new(ids);
    report("get", OPS, || gets(&store, &ids)).await;
    report("search (page 20 + total)", OPS / 10, || searches(&store)).await;
    report("search after a rename", OPS / 10, || {
        searches_after_a_rename(&store, ids[1])
    })
    .await;
    report("product_details", OPS, || details(&store, ids[0])).await;
    report("transfer, 1 task", OPS, || transfers(&store, &ids, 1)).await;
    report("transfer, 8 tasks", OPS, || transfers(&store, &ids, TASKS)).await;
    report("create_many 10,000", PRODUCTS, create_many).await;
}

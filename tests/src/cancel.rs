//! The drop sweep: a public operation of a store, dropped after 0, 1, 2, … polls until it
//! completes, and after every drop a check that it left nothing behind: no lock held (a unit of
//! work locks every row the operations touch, and the store's writer is free), no connection
//! returned dirty (the next sessions work), no half-applied write (each operation's writes are
//! tied by an invariant that holds only if they are all applied or none is: totals exact,
//! exactly one ledger row per applied move).
//!
//! Counting polls, rather than timing out after a delay, drops the operation at each await in
//! turn whatever the machine's speed. The cases of [`cases::cancellation`](crate::cases::cancellation)
//! run the sweep on every backend; an adapter's own tests run it with a check of their own after
//! each drop (the server's locks, another connection's write lock), through [`sweep`].

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use stockroom_core::{
    time, Error, Limit, NewCategory, NewReview, NewUser, Page, ProductFilter, ProductId,
    ProductPatch, Result, RetryPolicy, StockDelta, Store, StoreExt, TransferRequest, UnitOfWorkExt,
    MAX_LIMIT,
};

use crate::support::{new_product, retry_transient};

/// Polls `operation` at most `polls` times: its output if it completed within them, `None`
/// once it was dropped, still pending, after the last one (or before the first, for zero).
pub async fn polled_at_most<F: Future>(polls: usize, operation: F) -> Option<F::Output> {
    let mut operation = pin!(operation);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return Poll::Ready(None);
        }
        left -= 1;
        operation.as_mut().poll(cx).map(Some)
    })
    .await
}

/// The most tries (polls, or steps of time) an operation may take before a sweep gives up on
/// it and fails.
pub const MOST_TRIES: usize = 10_000;

/// How long the check after a drop may wait for what the dropped operation still holds (a
/// rollback that its connection runs after the drop, a call on SQLite's blocking pool that
/// stops at its next check) before it fails.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// The public operations a sweep drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `Store::begin`, the unit of work dropped after it.
    Begin,
    /// `Store::read` and the reads of every reader of a read session (products, categories,
    /// users, reviews, the ledger).
    Read,
    /// A unit of work that calls the repositories (lock, create, update, update_many,
    /// hard_delete, purge_deleted_before, adjust_stock, get, get_many, exists, by_sku, list,
    /// count, search, categories, users, reviews, create_many, soft_delete and restore in a
    /// savepoint, a transfer inside it) and commits.
    UnitOfWork,
    /// A unit of work that creates a product and rolls back.
    Rollback,
    /// A transfer without an idempotency key (`StoreExt::transfer`).
    Transfer,
    /// A transfer with an idempotency key.
    KeyedTransfer,
    /// A unit of work run by the retry runner (`StoreExt::run`): a transfer and a product.
    Run,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 7] = [
        Operation::Begin,
        Operation::Read,
        Operation::UnitOfWork,
        Operation::Rollback,
        Operation::Transfer,
        Operation::KeyedTransfer,
        Operation::Run,
    ];
}

/// The rows the operations work on, created before the sweep, in pairs: the first of each gives
/// stock to the second.
#[derive(Debug)]
struct Ground {
    /// A keyless transfer moves one unit from `transfer.0` to `transfer.1`.
    transfer: (ProductId, ProductId),
    /// A keyed transfer, likewise.
    keyed: (ProductId, ProductId),
    /// The unit of work adjusts `adjusted.0` by -1 and `adjusted.1` by +1.
    adjusted: (ProductId, ProductId),
    /// The unit of work's transfer, likewise.
    in_unit_of_work: (ProductId, ProductId),
    /// The retried unit of work's transfer, likewise.
    run: (ProductId, ProductId),
    /// How many operations ran on the ground: what makes their names unique.
    runs: AtomicUsize,
    /// What the names of the ground's rows begin with (`g<number>z`), unique in the process,
    /// so that several grounds share a store.
    tag: String,
}

/// How many grounds were laid in this process.
static GROUNDS: AtomicUsize = AtomicUsize::new(0);

/// What every source holds at first (far more than a sweep moves).
const SOURCE_STOCK: i64 = 1_000_000;

impl Ground {
    async fn lay(store: &Arc<dyn Store>) -> Self {
        let tag = format!("g{}z", GROUNDS.fetch_add(1, Ordering::Relaxed));
        let mut uow = store.begin().await.expect("begin");
        let mut pair = async |pair: &str| -> (ProductId, ProductId) {
            let from = new_product(&format!("{tag}{pair}from"), SOURCE_STOCK);
            let to = new_product(&format!("{tag}{pair}to"), 0);
            let from = uow.products().create(from).await.expect("create");
            let to = uow.products().create(to).await.expect("create");
            (from.id, to.id)
        };
        let ground = Ground {
            transfer: pair("t").await,
            keyed: pair("k").await,
            adjusted: pair("a").await,
            in_unit_of_work: pair("u").await,
            // Not `m`, `p`, `r` or `x`: those name what the operations create.
            run: pair("w").await,
            runs: AtomicUsize::new(0),
            tag,
        };
        uow.commit().await.expect("commit");
        ground
    }

    fn ids(&self) -> Vec<ProductId> {
        let mut ids = Vec::new();
        for (a, b) in [
            self.transfer,
            self.keyed,
            self.adjusted,
            self.in_unit_of_work,
            self.run,
        ] {
            ids.extend([a, b]);
        }
        ids.sort();
        ids
    }

    /// Runs `operation`; `Ok` when it completed.
    async fn run(&self, store: &Arc<dyn Store>, operation: Operation) -> Result<()> {
        // What makes the names of the rows it creates unique.
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let tag = &self.tag;
        match operation {
            Operation::Begin => store.begin().await.map(drop),
            Operation::Read => self.read(store).await,
            Operation::UnitOfWork => self.unit_of_work(store, n).await,
            Operation::Rollback => {
                let mut uow = store.begin().await?;
                uow.products()
                    .create(new_product(&format!("{tag}x{n}"), 1))
                    .await?;
                uow.rollback().await
            }
            Operation::Transfer => {
                let (from, to) = self.transfer;
                store
                    .transfer(&TransferRequest::new(from, to, 1))
                    .await
                    .map(drop)
            }
            Operation::KeyedTransfer => {
                let (from, to) = self.keyed;
                let request =
                    TransferRequest::new(from, to, 1).with_idempotency_key(format!("{tag}-{n}"));
                store.transfer(&request).await.map(drop)
            }
            Operation::Run => {
                let (from, to) = self.run;
                let new = new_product(&format!("{tag}r{n}"), 0);
                let new = &new;
                store
                    .run(&RetryPolicy::default(), move |uow| {
                        Box::pin(async move {
                            uow.transfer(&TransferRequest::new(from, to, 1)).await?;
                            uow.products().create(new.clone()).await?;
                            Ok(())
                        })
                    })
                    .await
            }
        }
    }

    async fn read(&self, store: &Arc<dyn Store>) -> Result<()> {
        let (from, to) = self.transfer;
        let tag = &self.tag;
        let mut read = store.read().await?;
        let mut products = read.products();
        products.get(from).await?;
        products.get_many(&[from, to]).await?;
        products
            .by_sku(&format!("SKU-{}TFROM", tag.to_uppercase()))
            .await?;
        products.by_slug(&format!("product-{tag}tfrom")).await?;
        products.with_relations(from).await?;
        let all = ProductFilter::default();
        products.list(&all, first_page()).await?;
        products.list_after(&all, None, Limit::new(10)?).await?;
        products.count(&all).await?;
        products.exists(&all).await?;
        products.list_deleted(first_page()).await?;
        let search = ProductFilter::default().with_search(tag)?;
        products.search(&search, first_page()).await?;
        read.categories()
            .list(&Default::default(), first_page())
            .await?;
        read.categories().by_slug(&format!("{tag}-c-0")).await?;
        read.users()
            .by_email(&format!("{tag}0@example.com"))
            .await?;
        read.reviews().for_product(from, first_page()).await?;
        read.reviews().stats(from).await?;
        let movements = read.movements();
        let ledger = movements.for_product(to, first_page()).await?;
        movements.count().await?;
        if let Some(row) = ledger.first() {
            movements.get(row.id).await?;
        }
        movements.by_idempotency_key(&format!("{tag}-0")).await?;
        Ok(())
    }

    async fn unit_of_work(&self, store: &Arc<dyn Store>, n: usize) -> Result<()> {
        let (down, up) = self.adjusted;
        let tag = &self.tag;
        let mut uow = store.begin().await?;
        let mut pair = [up, down];
        pair.sort();
        uow.products().lock(&pair).await?;
        let product = uow
            .products()
            .create(new_product(&format!("{tag}p{n}"), 0))
            .await?;
        let renamed = ProductPatch::new().with_name(&format!("Swept {n}"))?;
        uow.products().update(product.id, &renamed, None).await?;
        let described = ProductPatch::new().with_description(Some("swept"))?;
        uow.products()
            .update_many(&[product.id], &described)
            .await?;
        // A product made and deleted for good within the unit of work: never seen outside it.
        let gone = uow
            .products()
            .create(new_product(&format!("{tag}x{n}h"), 0))
            .await?;
        uow.products().hard_delete(gone.id).await?;
        uow.products().purge_deleted_before(time::MIN).await?;
        uow.products().get_many(&[product.id, up]).await?;
        uow.products().exists(&ProductFilter::default()).await?;
        uow.products().adjust_stock(up, StockDelta::new(1)?).await?;
        uow.products()
            .adjust_stock(down, StockDelta::new(-1)?)
            .await?;
        uow.products().get(product.id).await?;
        uow.products().by_sku(&product.sku).await?;
        let all = ProductFilter::default();
        uow.products().list(&all, first_page()).await?;
        uow.products().count(&all).await?;
        let search = ProductFilter::default().with_search("swept")?;
        uow.products().search(&search, first_page()).await?;
        let category = NewCategory::new(&format!("Swept {n}"), &format!("{tag}-c-{n}"))?;
        uow.categories().create(category).await?;
        let user = NewUser::new(&format!("{tag}{n}@example.com"), &format!("Sweeper {n}"))?;
        let user = uow.users().create(user).await?;
        uow.reviews()
            .create(NewReview::new(product.id, user.id, 4)?)
            .await?;
        uow.products()
            .create_many(vec![
                new_product(&format!("{tag}m{n}a"), 0),
                new_product(&format!("{tag}m{n}b"), 0),
            ])
            .await?;
        let savepoint = uow.savepoint().await?;
        uow.products().soft_delete(product.id).await?;
        uow.products().restore(product.id).await?;
        uow.rollback_to(savepoint).await?;
        let (from, to) = self.in_unit_of_work;
        uow.transfer(&TransferRequest::new(from, to, 1)).await?;
        uow.commit().await
    }

    /// Checks, in a unit of work that locks every row of the ground (so it waits for none and
    /// sees no move half-done), that every operation's writes were applied all or none; then
    /// that a read session works.
    async fn check(&self, store: &Arc<dyn Store>) {
        let found = tokio::time::timeout(SETTLE_WITHIN, retry_transient(|| self.state(store)))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no unit of work could lock the rows within {SETTLE_WITHIN:?}: a lock is held"
                )
            })
            .expect("the store works after the drop");
        found.assert_consistent();
        let mut read = store.read().await.expect("a read session after the drop");
        let count = read.products().count(&ProductFilter::default()).await;
        count.expect("a read after the drop");
    }

    async fn state(&self, store: &Arc<dyn Store>) -> Result<State> {
        let mut uow = store.begin().await?;
        let locked = uow.products().lock(&self.ids()).await?;
        let stock = |id: ProductId| locked.iter().find(|p| p.id == id).map_or(-1, |p| p.stock);
        let mut moved_to = Vec::new();
        for (from, to) in [self.transfer, self.keyed, self.in_unit_of_work, self.run] {
            let ledger =
                every_page(async |page| uow.movements().for_product(to, page).await).await?;
            moved_to.push((stock(from), stock(to), ledger.len() as i64));
        }
        let products =
            every_page(async |page| uow.products().list(&ProductFilter::default(), page).await)
                .await?;
        let tag = &self.tag;
        let with_prefix = |kind: &str| {
            let prefix = format!("product-{tag}{kind}");
            products
                .iter()
                .filter(|p| p.slug.starts_with(&prefix))
                .count() as i64
        };
        let swept: Vec<ProductId> = products
            .iter()
            .filter(|p| p.slug.starts_with(&format!("product-{tag}p")))
            .map(|p| p.id)
            .collect();
        let categories =
            every_page(async |page| uow.categories().list(&Default::default(), page).await).await?;
        let users =
            every_page(async |page| uow.users().list(&Default::default(), page).await).await?;
        let reviews =
            every_page(async |page| uow.reviews().list(&Default::default(), page).await).await?;
        let state = State {
            moved_to,
            adjusted: (stock(self.adjusted.1), stock(self.adjusted.0)),
            swept_products: swept.len() as i64,
            batch_products: with_prefix("m"),
            run_products: with_prefix("r"),
            rolled_back_products: with_prefix("x"),
            categories: categories
                .iter()
                .filter(|c| c.slug.starts_with(&format!("{tag}-c-")))
                .count() as i64,
            users: users
                .iter()
                .filter(|u| u.email.starts_with(tag.as_str()))
                .count() as i64,
            reviews: reviews
                .iter()
                .filter(|r| swept.contains(&r.product_id))
                .count() as i64,
        };
        uow.rollback().await?;
        Ok(state)
    }
}

/// What a check found.
#[derive(Debug)]
struct State {
    /// For each transfer pair (keyless, keyed, in the unit of work, in the retried one): the
    /// source's stock, the target's, and how many ledger rows moved stock to the target.
    moved_to: Vec<(i64, i64, i64)>,
    /// The stocks the unit of work adjusts by +1 and -1.
    adjusted: (i64, i64),
    swept_products: i64,
    batch_products: i64,
    run_products: i64,
    rolled_back_products: i64,
    categories: i64,
    users: i64,
    reviews: i64,
}

impl State {
    fn assert_consistent(&self) {
        for &(from, to, rows) in &self.moved_to {
            assert_eq!(
                (from + to, to),
                (SOURCE_STOCK, rows),
                "a transfer pair (total, target) against its ledger rows, in {self:?}"
            );
        }
        // How many of the unit of work's runs committed: each adds one to the adjusted stock.
        let committed = self.adjusted.0;
        let expected = (
            SOURCE_STOCK - committed,
            committed,
            2 * committed,
            committed,
            committed,
            committed,
            self.moved_to[2].2,
        );
        assert_eq!(
            (
                self.adjusted.1,
                self.swept_products,
                self.batch_products,
                self.categories,
                self.users,
                self.reviews,
                committed,
            ),
            expected,
            "the unit of work's writes, all or none, in {self:?}"
        );
        assert_eq!(
            self.run_products, self.moved_to[3].2,
            "the retried unit of work's product against its transfer, in {self:?}"
        );
        assert_eq!(
            self.rolled_back_products, 0,
            "a rolled-back product is stored, in {self:?}"
        );
    }
}

fn first_page() -> Page {
    Page::new(10, 0).expect("a valid page")
}

/// Every row `read` finds, page by page.
async fn every_page<T>(mut read: impl AsyncFnMut(Page) -> Result<Vec<T>>) -> Result<Vec<T>> {
    let limit = i64::from(MAX_LIMIT);
    let mut rows = Vec::new();
    loop {
        let page = Page::new(limit, rows.len() as i64).expect("a valid page");
        let got = read(page).await?;
        let full = got.len() as i64 == limit;
        rows.extend(got);
        if !full {
            return Ok(rows);
        }
    }
}

/// When a sweep drops the operation, on its `n`th try (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drops {
    /// After `n` polls: at each await that made the operation wait, in turn, whatever the
    /// machine's speed.
    AfterPolls,
    /// At the first poll that finds it pending `n` steps of real time after it began, a step
    /// being a hundredth of the time a whole run of the operation takes (the quickest of three,
    /// measured first):
    /// wherever it is then, in the middle of a round trip or of a call on a blocking thread
    /// included. The operation is polled again at once while it waits (a busy loop), so that
    /// it can be dropped at any moment, not only when it is woken.
    Spread,
}

impl Drops {
    /// Both.
    pub const BOTH: [Drops; 2] = [Drops::AfterPolls, Drops::Spread];
}

/// Runs `operation` for at most `time`: its output if it completed within it, `None` once it
/// was dropped, still pending, at the first poll past it. It is polled again at once whenever
/// it is pending, so that it is dropped at `time` wherever it is.
pub async fn run_for_at_most<F: Future>(time: Duration, operation: F) -> Option<F::Output> {
    let started = Instant::now();
    let mut operation = pin!(operation);
    std::future::poll_fn(move |cx| match operation.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if started.elapsed() >= time => Poll::Ready(None),
        Poll::Pending => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Drops `operation` on `store` after 0, 1, 2, … polls (or steps of time, as `drops` says)
/// until it completes within them, checking after each drop that it left nothing behind (see
/// the module docs), then running `after_each` (an adapter's own check). The rows it works on
/// are laid first, on the store as it is. Returns after how many polls (or steps) the operation
/// completed; its answer then must be `Ok`.
pub async fn sweep<C, CF>(
    store: &Arc<dyn Store>,
    operation: Operation,
    drops: Drops,
    mut after_each: C,
) -> usize
where
    C: FnMut() -> CF,
    CF: Future<Output = ()>,
{
    let ground = Ground::lay(store).await;
    sweep_on(&ground, store, operation, drops, &mut after_each).await
}

/// [`sweep`] each way of [`Drops::BOTH`], on the same rows.
pub async fn sweep_both_ways<C, CF>(store: &Arc<dyn Store>, operation: Operation, mut after_each: C)
where
    C: FnMut() -> CF,
    CF: Future<Output = ()>,
{
    let ground = Ground::lay(store).await;
    for drops in Drops::BOTH {
        sweep_on(&ground, store, operation, drops, &mut after_each).await;
    }
}

async fn sweep_on<C, CF>(
    ground: &Ground,
    store: &Arc<dyn Store>,
    operation: Operation,
    drops: Drops,
    after_each: &mut C,
) -> usize
where
    C: FnMut() -> CF,
    CF: Future<Output = ()>,
{
    let step = match drops {
        Drops::AfterPolls => Duration::ZERO,
        Drops::Spread => {
            // The quickest of three whole runs: the first may pay for what the next reuse
            // (connections, prepared statements).
            let mut quickest = Duration::MAX;
            for _ in 0..3 {
                let started = Instant::now();
                let whole = ground.run(store, operation).await;
                quickest = quickest.min(started.elapsed());
                whole.unwrap_or_else(|e| panic!("{operation:?} run whole: {e:?}"));
                ground.check(store).await;
            }
            (quickest / 100).max(Duration::from_micros(1))
        }
    };
    for n in 0..MOST_TRIES {
        let run = ground.run(store, operation);
        let done = match drops {
            Drops::AfterPolls => polled_at_most(n, run).await,
            Drops::Spread => {
                let time = step.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
                run_for_at_most(time, run).await
            }
        };
        ground.check(store).await;
        after_each().await;
        if let Some(answer) = done {
            answer.unwrap_or_else(|e: Error| {
                panic!("{operation:?} completed on try {n} ({drops:?}) with {e:?}")
            });
            eprintln!(
                "{}: {operation:?} completed on try {n} ({drops:?}), dropped on each before",
                store.backend()
            );
            return n;
        }
    }
    panic!("{operation:?} did not complete within {MOST_TRIES} tries ({drops:?})");
}

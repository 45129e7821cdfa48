//! Helpers shared by the cases: seeding rows, reading state back, and asserting typed errors, so
//! each case reads as the rule it checks.
//!
//! Every write helper runs in its own unit of work and commits; a failed write drops its unit of
//! work (which rolls back) before the error is returned, so a case never holds two units of work
//! at once.

use std::fmt::Debug;
use std::sync::Arc;

use stockroom_core::{
    Category, CategoryFilter, Constraint, EntityId, EntityKind, Error, NewCategory, NewProduct,
    NewUser, Page, Product, ProductFilter, ProductId, Result, ReviewFilter, Rule, Store, Total,
    User, UserFilter, MAX_LIMIT,
};

/// Runs `$body` (an expression using the unit of work bound to `$uow`) in a fresh unit of work;
/// commits when it returned `Ok`, drops (rolls back) the unit of work when it returned `Err`.
/// Evaluates to the body's `Result`.
macro_rules! in_uow {
    ($store:expr, |$uow:ident| $body:expr) => {{
        let mut $uow = $store.begin().await.expect("begin a unit of work");
        let result = $body;
        if result.is_ok() {
            $uow.commit().await.expect("commit");
        } else {
            drop($uow);
        }
        result
    }};
}
pub(crate) use in_uow;

/// Runs `$body` (an expression using the read session bound to `$read`) in a fresh read session.
macro_rules! in_read {
    ($store:expr, |$read:ident| $body:expr) => {{
        let mut $read = $store.read().await.expect("open a read session");
        $body
    }};
}
pub(crate) use in_read;

/// The largest page: every row of a small test store.
pub fn all() -> Page {
    Page::new(i64::from(MAX_LIMIT), 0).expect("a valid page")
}

/// The number of a search's total, which must be exact (the small stores of the cases match
/// far fewer rows than [`MAX_EXACT_TOTAL`](stockroom_core::MAX_EXACT_TOTAL)).
pub fn exact(total: Total) -> u64 {
    assert!(total.is_exact(), "the total {total:?} is not exact");
    total.count()
}

/// A valid new product named after `tag` (lower-case letters and digits): name `Product <tag>`,
/// slug `product-<tag>`, sku `SKU-<TAG>`, with `stock` units.
pub fn new_product(tag: &str, stock: i64) -> NewProduct {
    NewProduct::new(
        &format!("Product {tag}"),
        &format!("product-{tag}"),
        &format!("SKU-{}", tag.to_uppercase()),
    )
    .expect("valid product")
    .with_stock(stock)
    .expect("valid stock")
}

/// Creates one product and commits.
pub async fn create_product(store: &Arc<dyn Store>, new: NewProduct) -> Product {
    try_create_product(store, new)
        .await
        .expect("create product")
}

/// Tries to create one product; commits on success.
pub async fn try_create_product(store: &Arc<dyn Store>, new: NewProduct) -> Result<Product> {
    in_uow!(store, |uow| uow.products().create(new).await)
}

/// Creates `n` products (tags `<prefix>0`, `<prefix>1`, …) with `stock` each in one
/// `create_many`; they share one `created_at`.
pub async fn create_products(
    store: &Arc<dyn Store>,
    prefix: &str,
    n: usize,
    stock: i64,
) -> Vec<Product> {
    let news = (0..n)
        .map(|i| new_product(&format!("{prefix}{i}"), stock))
        .collect();
    in_uow!(store, |uow| uow.products().create_many(news).await).expect("create_many")
}

/// Creates a category `Category <slug>` and commits.
pub async fn create_category(store: &Arc<dyn Store>, slug: &str) -> Category {
    let new = NewCategory::new(&format!("Category {slug}"), slug).expect("valid category");
    in_uow!(store, |uow| uow.categories().create(new).await).expect("create category")
}

/// Creates a user `<local>@example.com` and commits.
pub async fn create_user(store: &Arc<dyn Store>, local: &str) -> User {
    let new = NewUser::new(&format!("{local}@example.com"), &format!("User {local}"))
        .expect("valid user");
    in_uow!(store, |uow| uow.users().create(new).await).expect("create user")
}

/// Soft-deletes a product and commits; returns what `soft_delete` returned.
pub async fn soft_delete_product(store: &Arc<dyn Store>, id: ProductId) -> bool {
    in_uow!(store, |uow| uow.products().soft_delete(id).await).expect("soft delete")
}

/// The live product `id`, read outside a transaction.
pub async fn get_product(store: &Arc<dyn Store>, id: ProductId) -> Option<Product> {
    in_read!(store, |r| r.products().get(id).await).expect("get product")
}

/// The product `id` as the trash shows it (it must be soft-deleted).
pub async fn trashed_product(store: &Arc<dyn Store>, id: ProductId) -> Option<Product> {
    let trash = in_read!(store, |r| r.products().list_deleted(all()).await).expect("trash");
    trash.into_iter().find(|p| p.id == id)
}

/// Every live product, in list order.
pub async fn live_products(store: &Arc<dyn Store>) -> Vec<Product> {
    in_read!(store, |r| r
        .products()
        .list(&ProductFilter::default(), all())
        .await)
    .expect("list products")
}

/// The stock of the live product `id`.
pub async fn stock_of(store: &Arc<dyn Store>, id: ProductId) -> i64 {
    get_product(store, id)
        .await
        .unwrap_or_else(|| panic!("product {id} is not live"))
        .stock
}

/// The total stock of the live products among `ids`.
pub async fn total_stock(store: &Arc<dyn Store>, ids: &[ProductId]) -> i64 {
    let rows = in_read!(store, |r| r.products().get_many(ids).await).expect("get_many");
    rows.iter().map(|p| p.stock).sum()
}

/// How many rows the ledger holds.
pub async fn ledger_count(store: &Arc<dyn Store>) -> u64 {
    in_read!(store, |r| r.movements().count().await).expect("ledger count")
}

/// How many rows of each kind a store holds, live and trashed: equal snapshots before and after
/// an operation mean it wrote no row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live products.
    pub products: u64,
    /// Soft-deleted products in the trash (up to [`MAX_LIMIT`] of them, one page of [`all`]).
    pub trashed_products: usize,
    /// Live categories.
    pub categories: u64,
    /// Live users.
    pub users: u64,
    /// Live reviews.
    pub reviews: u64,
    /// Rows of the stock ledger (never deleted).
    pub movements: u64,
}

/// The [`Counts`] of a store now.
pub async fn counts(store: &Arc<dyn Store>) -> Counts {
    let mut r = store.read().await.expect("read");
    Counts {
        products: r
            .products()
            .count(&ProductFilter::default())
            .await
            .expect("count"),
        trashed_products: r.products().list_deleted(all()).await.expect("trash").len(),
        categories: r
            .categories()
            .count(&CategoryFilter::default())
            .await
            .expect("count"),
        users: r
            .users()
            .count(&UserFilter::default())
            .await
            .expect("count"),
        reviews: r
            .reviews()
            .count(&ReviewFilter::default())
            .await
            .expect("count"),
        movements: r.movements().count().await.expect("count"),
    }
}

/// Asserts a validation error on `field` for `rule`.
#[track_caller]
pub fn expect_validation<T: Debug>(result: Result<T>, field: &str, rule: Rule) {
    match result {
        Err(Error::Validation { field: f, rule: r }) => {
            assert_eq!(
                (f, &r),
                (field, &rule),
                "validation error names ({f:?}, {r:?}), expected ({field:?}, {rule:?})"
            );
        }
        other => panic!("expected Validation {{ {field}, {rule:?} }}, got {other:?}"),
    }
}

/// Asserts a validation error on `field` for a malformed value (any expected shape).
#[track_caller]
pub fn expect_malformed<T: Debug>(result: Result<T>, field: &str) {
    match result {
        Err(Error::Validation {
            field: f,
            rule: Rule::Malformed { .. },
        }) if f == field => {}
        other => panic!("expected Validation {{ {field}, Malformed }}, got {other:?}"),
    }
}

/// Asserts a not-found error for `entity` `id` (a typed id).
#[track_caller]
pub fn expect_not_found<T: Debug>(result: Result<T>, entity: EntityKind, id: impl Into<EntityId>) {
    let id = id.into();
    match result {
        Err(Error::NotFound { entity: e, id: i }) => {
            assert_eq!(
                (e, &i),
                (entity, &id),
                "not found names ({e:?}, {i}), expected ({entity:?}, {id})"
            );
        }
        other => panic!("expected NotFound {{ {entity:?}, {id} }}, got {other:?}"),
    }
}

/// Asserts a conflict on `constraint`.
#[track_caller]
pub fn expect_conflict<T: Debug>(result: Result<T>, constraint: Constraint) {
    match result {
        Err(Error::Conflict { constraint: c }) => {
            assert_eq!(c, constraint, "conflict on {c:?}, expected {constraint:?}")
        }
        other => panic!("expected Conflict {{ {constraint:?} }}, got {other:?}"),
    }
}

/// Asserts `Unavailable`.
#[track_caller]
pub fn expect_unavailable<T: Debug>(result: Result<T>) {
    match result {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Sorts rows the way every list orders them: `(created_at, id)`.
pub fn sorted(mut products: Vec<Product>) -> Vec<Product> {
    products.sort_by_key(|p| (p.created_at, p.id));
    products
}

/// The ids of `rows`, in order.
pub fn ids(rows: &[Product]) -> Vec<ProductId> {
    rows.iter().map(|p| p.id).collect()
}

/// Sleeps long enough that the next `time::now()` differs from every earlier one.
pub async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

/// Retries `op` while it fails with a transient error (a single-writer backend may answer a
/// crowd of writers with `Transient` after its busy timeout), at most 50 times.
pub async fn retry_transient<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(e) if e.is_transient() && attempt < 50 => {
                tokio::time::sleep(std::time::Duration::from_millis(attempt * 2)).await;
            }
            other => return other,
        }
    }
}

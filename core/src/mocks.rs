//! [mockall] mocks of every port (feature `mocks`), so an application can unit-test its own code
//! against Stockroom without a database.
//!
//! - Repositories and readers: [`MockProductRepository`], [`MockProductReader`],
//!   [`MockCategoryRepository`], [`MockCategoryReader`], [`MockUserRepository`],
//!   [`MockUserReader`], [`MockReviewRepository`], [`MockReviewReader`],
//!   [`MockStockMovementRepository`], [`MockStockMovementReader`]: plain mockall mocks, with one
//!   `expect_<method>()` per port method (the generic [`ReadRepository`] and [`Repository`]
//!   methods included). `require` is not mocked: it keeps its default body, which calls the
//!   mocked `get`.
//! - [`MockStore`]: a mockall mock of [`Store`]; `expect_begin()` / `expect_read()` return the
//!   units of work and sessions below.
//! - [`MockUnitOfWork`] and [`MockReadSession`] are written by hand: they own one repository mock
//!   per entity as public fields (what `products()`, `categories()`, … hand out), and a
//!   [`MockUnitOfWork`] forwards `commit`, `rollback`, `savepoint`, `rollback_to` and `release`
//!   to its [`MockTransaction`] field, so a test states how many commits or rollbacks it
//!   expects exactly like any other mockall expectation. (mockall 0.13 can generate them — it
//!   handles `self: Box<Self>` and stores a `&mut dyn ProductRepository` return value as a
//!   `Box<dyn ProductRepository>` given to `return_var` — but then each repository mock is moved
//!   into an expectation before the test runs, every accessor needs an expectation of its own,
//!   and a test would have to forge `Savepoint`s. Here the repositories stay reachable fields,
//!   accessors just work, and savepoints are checked like a real adapter checks them.)
//!
//! ```
//! use stockroom_core::mocks::{MockStore, MockUnitOfWork};
//! use stockroom_core::{transfer_stock, Error, ProductId, RetryPolicy, TransferRequest};
//!
//! let (a, b) = (ProductId::new(), ProductId::new());
//! let mut uow = MockUnitOfWork::new();
//! // Product `a` is not there: the transfer fails, rolls back and never adjusts any stock.
//! uow.products.expect_lock().times(1).returning(|_| Ok(Vec::new()));
//! uow.products.expect_adjust_stock().never();
//! uow.transaction.expect_commit().never();
//! uow.transaction.expect_rollback().times(1).returning(|| Ok(()));
//! let mut store = MockStore::new();
//! store.expect_begin().times(1).return_once(move || Ok(Box::new(uow)));
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let result = runtime.block_on(transfer_stock(
//!     &store,
//!     &TransferRequest::new(a, b, 1),
//!     &RetryPolicy::default(),
//! ));
//! assert!(matches!(result, Err(Error::NotFound { .. })));
//! ```

use async_trait::async_trait;
use mockall::mock;

use crate::entities::{
    Category, CategoryFilter, CategoryPatch, NewCategory, NewProduct, NewReview, NewStockMovement,
    NewUser, Product, ProductFilter, ProductPatch, ProductWithRelations, RatingStats, Review,
    ReviewFilter, ReviewPatch, StockMovement, User, UserFilter, UserPatch,
};
use crate::error::Result;
use crate::ids::{CategoryId, ProductId, ReviewId, StockMovementId, UserId};
use crate::ports::{
    CategoryReader, CategoryRepository, ProductReader, ProductRepository, ReadRepository,
    ReadSession, Repository, ReviewReader, ReviewRepository, Savepoint, Savepoints,
    StockMovementReader, StockMovementRepository, Store, UnitOfWork, UserReader, UserRepository,
};
use crate::query::{Cursor, KeysetPage, Limit, Page, SearchPage};
use crate::time::Timestamp;
use crate::validate::StockDelta;

// One reader mock and one repository mock per entity. The generic base methods
// (`ReadRepository`, `Repository`) are spelled out in each: `mock!` cannot be generated from a
// `macro_rules!` here, because async-trait's `self` rewriting breaks on the macro's hygienic
// `self` tokens.

mock! {
    pub ProductReader {}

    #[async_trait]
    impl ReadRepository<Product> for ProductReader {
        async fn get(&mut self, id: ProductId) -> Result<Option<Product>>;
        async fn get_many(&mut self, ids: &[ProductId]) -> Result<Vec<Product>>;
        async fn list(&mut self, filter: &ProductFilter, page: Page) -> Result<Vec<Product>>;
        async fn list_after(
            &mut self,
            filter: &ProductFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<Product>>;
        async fn count(&mut self, filter: &ProductFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &ProductFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<Product>>;
    }

    #[async_trait]
    impl ProductReader for ProductReader {
        async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>>;
        async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>>;
        async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>>;
        async fn search(
            &mut self,
            filter: &ProductFilter,
            page: Page,
        ) -> Result<SearchPage<Product>>;
    }
}

mock! {
    pub ProductRepository {}

    #[async_trait]
    impl ReadRepository<Product> for ProductRepository {
        async fn get(&mut self, id: ProductId) -> Result<Option<Product>>;
        async fn get_many(&mut self, ids: &[ProductId]) -> Result<Vec<Product>>;
        async fn list(&mut self, filter: &ProductFilter, page: Page) -> Result<Vec<Product>>;
        async fn list_after(
            &mut self,
            filter: &ProductFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<Product>>;
        async fn count(&mut self, filter: &ProductFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &ProductFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<Product>>;
    }

    #[async_trait]
    impl ProductReader for ProductRepository {
        async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>>;
        async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>>;
        async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>>;
        async fn search(
            &mut self,
            filter: &ProductFilter,
            page: Page,
        ) -> Result<SearchPage<Product>>;
    }

    #[async_trait]
    impl Repository<Product> for ProductRepository {
        async fn create(&mut self, new: NewProduct) -> Result<Product>;
        async fn create_many(&mut self, new: Vec<NewProduct>) -> Result<Vec<Product>>;
        async fn update(
            &mut self,
            id: ProductId,
            patch: &ProductPatch,
            expected_version: Option<i64>,
        ) -> Result<Product>;
        async fn update_many(&mut self, ids: &[ProductId], patch: &ProductPatch) -> Result<u64>;
        async fn soft_delete(&mut self, id: ProductId) -> Result<bool>;
        async fn restore(&mut self, id: ProductId) -> Result<bool>;
        async fn hard_delete(&mut self, id: ProductId) -> Result<()>;
        async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64>;
    }

    #[async_trait]
    impl ProductRepository for ProductRepository {
        async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product>;
        async fn lock(&mut self, ids: &[ProductId]) -> Result<Vec<Product>>;
    }
}

mock! {
    pub CategoryReader {}

    #[async_trait]
    impl ReadRepository<Category> for CategoryReader {
        async fn get(&mut self, id: CategoryId) -> Result<Option<Category>>;
        async fn get_many(&mut self, ids: &[CategoryId]) -> Result<Vec<Category>>;
        async fn list(&mut self, filter: &CategoryFilter, page: Page) -> Result<Vec<Category>>;
        async fn list_after(
            &mut self,
            filter: &CategoryFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<Category>>;
        async fn count(&mut self, filter: &CategoryFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &CategoryFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<Category>>;
    }

    #[async_trait]
    impl CategoryReader for CategoryReader {
        async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>>;
    }
}

mock! {
    pub CategoryRepository {}

    #[async_trait]
    impl ReadRepository<Category> for CategoryRepository {
        async fn get(&mut self, id: CategoryId) -> Result<Option<Category>>;
        async fn get_many(&mut self, ids: &[CategoryId]) -> Result<Vec<Category>>;
        async fn list(&mut self, filter: &CategoryFilter, page: Page) -> Result<Vec<Category>>;
        async fn list_after(
            &mut self,
            filter: &CategoryFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<Category>>;
        async fn count(&mut self, filter: &CategoryFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &CategoryFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<Category>>;
    }

    #[async_trait]
    impl CategoryReader for CategoryRepository {
        async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>>;
    }

    #[async_trait]
    impl Repository<Category> for CategoryRepository {
        async fn create(&mut self, new: NewCategory) -> Result<Category>;
        async fn create_many(&mut self, new: Vec<NewCategory>) -> Result<Vec<Category>>;
        async fn update(
            &mut self,
            id: CategoryId,
            patch: &CategoryPatch,
            expected_version: Option<i64>,
        ) -> Result<Category>;
        async fn update_many(&mut self, ids: &[CategoryId], patch: &CategoryPatch) -> Result<u64>;
        async fn soft_delete(&mut self, id: CategoryId) -> Result<bool>;
        async fn restore(&mut self, id: CategoryId) -> Result<bool>;
        async fn hard_delete(&mut self, id: CategoryId) -> Result<()>;
        async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64>;
    }

    #[async_trait]
    impl CategoryRepository for CategoryRepository {

    }
}

mock! {
    pub UserReader {}

    #[async_trait]
    impl ReadRepository<User> for UserReader {
        async fn get(&mut self, id: UserId) -> Result<Option<User>>;
        async fn get_many(&mut self, ids: &[UserId]) -> Result<Vec<User>>;
        async fn list(&mut self, filter: &UserFilter, page: Page) -> Result<Vec<User>>;
        async fn list_after(
            &mut self,
            filter: &UserFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<User>>;
        async fn count(&mut self, filter: &UserFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &UserFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<User>>;
    }

    #[async_trait]
    impl UserReader for UserReader {
        async fn by_email(&mut self, email: &str) -> Result<Option<User>>;
    }
}

mock! {
    pub UserRepository {}

    #[async_trait]
    impl ReadRepository<User> for UserRepository {
        async fn get(&mut self, id: UserId) -> Result<Option<User>>;
        async fn get_many(&mut self, ids: &[UserId]) -> Result<Vec<User>>;
        async fn list(&mut self, filter: &UserFilter, page: Page) -> Result<Vec<User>>;
        async fn list_after(
            &mut self,
            filter: &UserFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<User>>;
        async fn count(&mut self, filter: &UserFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &UserFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<User>>;
    }

    #[async_trait]
    impl UserReader for UserRepository {
        async fn by_email(&mut self, email: &str) -> Result<Option<User>>;
    }

    #[async_trait]
    impl Repository<User> for UserRepository {
        async fn create(&mut self, new: NewUser) -> Result<User>;
        async fn create_many(&mut self, new: Vec<NewUser>) -> Result<Vec<User>>;
        async fn update(
            &mut self,
            id: UserId,
            patch: &UserPatch,
            expected_version: Option<i64>,
        ) -> Result<User>;
        async fn update_many(&mut self, ids: &[UserId], patch: &UserPatch) -> Result<u64>;
        async fn soft_delete(&mut self, id: UserId) -> Result<bool>;
        async fn restore(&mut self, id: UserId) -> Result<bool>;
        async fn hard_delete(&mut self, id: UserId) -> Result<()>;
        async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64>;
    }

    #[async_trait]
    impl UserRepository for UserRepository {

    }
}

mock! {
    pub ReviewReader {}

    #[async_trait]
    impl ReadRepository<Review> for ReviewReader {
        async fn get(&mut self, id: ReviewId) -> Result<Option<Review>>;
        async fn get_many(&mut self, ids: &[ReviewId]) -> Result<Vec<Review>>;
        async fn list(&mut self, filter: &ReviewFilter, page: Page) -> Result<Vec<Review>>;
        async fn list_after(
            &mut self,
            filter: &ReviewFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<Review>>;
        async fn count(&mut self, filter: &ReviewFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &ReviewFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<Review>>;
    }

    #[async_trait]
    impl ReviewReader for ReviewReader {
        async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>>;
        async fn stats(&mut self, product: ProductId) -> Result<RatingStats>;
    }
}

mock! {
    pub ReviewRepository {}

    #[async_trait]
    impl ReadRepository<Review> for ReviewRepository {
        async fn get(&mut self, id: ReviewId) -> Result<Option<Review>>;
        async fn get_many(&mut self, ids: &[ReviewId]) -> Result<Vec<Review>>;
        async fn list(&mut self, filter: &ReviewFilter, page: Page) -> Result<Vec<Review>>;
        async fn list_after(
            &mut self,
            filter: &ReviewFilter,
            after: Option<Cursor>,
            limit: Limit,
        ) -> Result<KeysetPage<Review>>;
        async fn count(&mut self, filter: &ReviewFilter) -> Result<u64>;
        async fn exists(&mut self, filter: &ReviewFilter) -> Result<bool>;
        async fn list_deleted(&mut self, page: Page) -> Result<Vec<Review>>;
    }

    #[async_trait]
    impl ReviewReader for ReviewRepository {
        async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>>;
        async fn stats(&mut self, product: ProductId) -> Result<RatingStats>;
    }

    #[async_trait]
    impl Repository<Review> for ReviewRepository {
        async fn create(&mut self, new: NewReview) -> Result<Review>;
        async fn create_many(&mut self, new: Vec<NewReview>) -> Result<Vec<Review>>;
        async fn update(
            &mut self,
            id: ReviewId,
            patch: &ReviewPatch,
            expected_version: Option<i64>,
        ) -> Result<Review>;
        async fn update_many(&mut self, ids: &[ReviewId], patch: &ReviewPatch) -> Result<u64>;
        async fn soft_delete(&mut self, id: ReviewId) -> Result<bool>;
        async fn restore(&mut self, id: ReviewId) -> Result<bool>;
        async fn hard_delete(&mut self, id: ReviewId) -> Result<()>;
        async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64>;
    }

    #[async_trait]
    impl ReviewRepository for ReviewRepository {

    }
}

mock! {
    pub StockMovementReader {}

    #[async_trait]
    impl StockMovementReader for StockMovementReader {
        async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>>;
        async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>>;
        async fn for_product(
            &mut self,
            product: ProductId,
            page: Page,
        ) -> Result<Vec<StockMovement>>;
        async fn count(&mut self) -> Result<u64>;
    }
}

mock! {
    pub StockMovementRepository {}

    #[async_trait]
    impl StockMovementReader for StockMovementRepository {
        async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>>;
        async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>>;
        async fn for_product(
            &mut self,
            product: ProductId,
            page: Page,
        ) -> Result<Vec<StockMovement>>;
        async fn count(&mut self) -> Result<u64>;
    }

    #[async_trait]
    impl StockMovementRepository for StockMovementRepository {
        async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement>;
    }
}

mock! {
    pub Store {}

    #[async_trait]
    impl Store for Store {
        fn backend(&self) -> &'static str;
        async fn begin(&self) -> Result<Box<dyn UnitOfWork>>;
        async fn read(&self) -> Result<Box<dyn ReadSession>>;
        async fn health(&self) -> Result<()>;
        async fn close(&self);
    }
}

mock! {
    /// The transaction control of a [`MockUnitOfWork`]: each of its methods is called by the
    /// [`UnitOfWork`] method of the same name, savepoints by their depth (1 for the outermost).
    pub Transaction {
        pub fn savepoint(&mut self, depth: u32) -> Result<()>;
        pub fn rollback_to(&mut self, depth: u32) -> Result<()>;
        pub fn release(&mut self, depth: u32) -> Result<()>;
        pub fn commit(&mut self) -> Result<()>;
        pub fn rollback(&mut self) -> Result<()>;
    }
}

/// A hand-written [`UnitOfWork`] made of mocks: `products()` hands out `&mut self.products`, and
/// so on, and the transaction control goes to [`MockUnitOfWork::transaction`].
///
/// Set the expectations, then box it into a [`MockStore`]'s `begin`. Every expectation is
/// checked when the unit of work is dropped, that is when the code under test commits or rolls
/// it back (or drops it). Savepoints are checked like a real adapter checks them (a savepoint
/// closed already, or one of another unit of work, is a validation error that never reaches the
/// mock).
///
/// ```
/// use stockroom_core::mocks::MockUnitOfWork;
/// use stockroom_core::UnitOfWork;
///
/// let mut uow = MockUnitOfWork::new();
/// uow.products.expect_soft_delete().times(1).returning(|_| Ok(true));
/// uow.transaction.expect_savepoint().withf(|depth| *depth == 1).times(1).returning(|_| Ok(()));
/// uow.transaction.expect_rollback_to().withf(|depth| *depth == 1).times(1).returning(|_| Ok(()));
/// uow.transaction.expect_commit().times(1).returning(|| Ok(()));
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// runtime.block_on(async {
///     let mut uow: Box<dyn UnitOfWork> = Box::new(uow);
///     let sp = uow.savepoint().await?;
///     assert!(uow.products().soft_delete(stockroom_core::ProductId::new()).await?);
///     uow.rollback_to(sp).await?;
///     uow.commit().await
/// })
/// .unwrap();
/// ```
pub struct MockUnitOfWork {
    pub products: MockProductRepository,
    pub categories: MockCategoryRepository,
    pub users: MockUserRepository,
    pub reviews: MockReviewRepository,
    pub movements: MockStockMovementRepository,
    pub transaction: MockTransaction,
    savepoints: Savepoints,
}

impl MockUnitOfWork {
    /// A unit of work whose every method panics until given an expectation.
    pub fn new() -> Self {
        Self {
            products: MockProductRepository::new(),
            categories: MockCategoryRepository::new(),
            users: MockUserRepository::new(),
            reviews: MockReviewRepository::new(),
            movements: MockStockMovementRepository::new(),
            transaction: MockTransaction::new(),
            savepoints: Savepoints::default(),
        }
    }
}

impl Default for MockUnitOfWork {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MockUnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUnitOfWork")
            .field("savepoints", &self.savepoints.depth())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl UnitOfWork for MockUnitOfWork {
    fn backend(&self) -> &'static str {
        "mock"
    }

    fn products(&mut self) -> &mut dyn ProductRepository {
        &mut self.products
    }

    fn categories(&mut self) -> &mut dyn CategoryRepository {
        &mut self.categories
    }

    fn users(&mut self) -> &mut dyn UserRepository {
        &mut self.users
    }

    fn reviews(&mut self) -> &mut dyn ReviewRepository {
        &mut self.reviews
    }

    fn movements(&mut self) -> &mut dyn StockMovementRepository {
        &mut self.movements
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        self.transaction.savepoint(self.savepoints.depth() + 1)?;
        Ok(self.savepoints.open())
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        self.transaction.rollback_to(savepoint.depth())
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        self.savepoints.close(&savepoint)?;
        self.transaction.release(savepoint.depth())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.transaction.commit()
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.transaction.rollback()
    }
}

/// A hand-written [`ReadSession`] made of reader mocks: `products()` hands out
/// `&mut self.products`, and so on.
///
/// ```
/// use stockroom_core::mocks::{MockReadSession, MockStore};
/// use stockroom_core::{ProductId, Store};
///
/// let mut session = MockReadSession::new();
/// session.products.expect_by_slug().times(1).returning(|_| Ok(None));
/// let mut store = MockStore::new();
/// store.expect_read().times(1).return_once(move || Ok(Box::new(session)));
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let found = runtime.block_on(async {
///     let mut session = store.read().await?;
///     session.products().by_slug("lamp").await
/// });
/// assert!(found.unwrap().is_none());
/// ```
pub struct MockReadSession {
    pub products: MockProductReader,
    pub categories: MockCategoryReader,
    pub users: MockUserReader,
    pub reviews: MockReviewReader,
    pub movements: MockStockMovementReader,
}

impl MockReadSession {
    /// A session whose every method panics until given an expectation.
    pub fn new() -> Self {
        Self {
            products: MockProductReader::new(),
            categories: MockCategoryReader::new(),
            users: MockUserReader::new(),
            reviews: MockReviewReader::new(),
            movements: MockStockMovementReader::new(),
        }
    }
}

impl Default for MockReadSession {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MockReadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockReadSession").finish_non_exhaustive()
    }
}

impl ReadSession for MockReadSession {
    fn products(&mut self) -> &mut dyn ProductReader {
        &mut self.products
    }

    fn categories(&mut self) -> &mut dyn CategoryReader {
        &mut self.categories
    }

    fn users(&mut self) -> &mut dyn UserReader {
        &mut self.users
    }

    fn reviews(&mut self) -> &mut dyn ReviewReader {
        &mut self.reviews
    }

    fn movements(&mut self) -> &mut dyn StockMovementReader {
        &mut self.movements
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test]
    async fn a_closed_savepoint_is_refused_before_reaching_the_mock() {
        let mut uow = MockUnitOfWork::new();
        uow.transaction
            .expect_savepoint()
            .times(2)
            .returning(|_| Ok(()));
        uow.transaction
            .expect_release()
            .withf(|depth| *depth == 1)
            .times(1)
            .returning(|_| Ok(()));
        uow.transaction.expect_rollback_to().never();
        let outer = uow.savepoint().await.unwrap();
        let inner = uow.savepoint().await.unwrap();
        assert_eq!((outer.depth(), inner.depth()), (1, 2));
        uow.release(outer).await.unwrap();
        // Releasing the outer one closed the inner one too.
        let refused = uow.rollback_to(inner).await;
        assert!(
            matches!(refused, Err(Error::Validation { .. })),
            "{refused:?}"
        );
    }
}

use async_trait::async_trait;

use crate::entities::{
    Category, NewStockMovement, Product, ProductWithRelations, RatingStats, Review, StockMovement,
    User,
};
use crate::error::Result;
use crate::ids::{ProductId, StockMovementId};
use crate::ports::{ReadRepository, Repository};
use crate::query::{Page, SearchPage};
use crate::validate::StockDelta;
use crate::ProductFilter;

/// Reads of products. Products of one category and status are a [`ReadRepository::list`] with a
/// [`ProductFilter`].
#[async_trait]
pub trait ProductReader: ReadRepository<Product> {
    /// The live product with this slug.
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>>;

    /// The live product with this sku.
    async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>>;

    /// The live product with its live category and creator.
    async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>>;

    /// A page of the live products that pass `filter` (search included), and how many pass in
    /// all.
    async fn search(&mut self, filter: &ProductFilter, page: Page) -> Result<SearchPage<Product>>;
}

/// Reads and writes of products inside a unit of work.
#[async_trait]
pub trait ProductRepository: ProductReader + Repository<Product> {
    /// Adds `delta` to the live product's stock in one conditional statement. Fails, changing
    /// nothing, with [`Error::InsufficientStock`](crate::Error::InsufficientStock) when the stock
    /// would go below zero, with [`Error::Validation`](crate::Error::Validation) on `stock`
    /// ([`Rule::OutOfRange`](crate::Rule::OutOfRange) `0..=MAX_STOCK`) when it would go above
    /// [`MAX_STOCK`](crate::MAX_STOCK), and with [`Error::NotFound`](crate::Error::NotFound) when
    /// the product is not live.
    async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product>;

    /// Locks the live products among `ids` until the unit of work ends, taking them in id
    /// order so that two units of work locking the same rows cannot deadlock; returns them
    /// sorted by id.
    async fn lock(&mut self, ids: &[ProductId]) -> Result<Vec<Product>>;
}

/// Reads of categories.
#[async_trait]
pub trait CategoryReader: ReadRepository<Category> {
    /// The live category with this slug.
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>>;
}

/// Reads and writes of categories inside a unit of work.
pub trait CategoryRepository: CategoryReader + Repository<Category> {}

/// Reads of users.
#[async_trait]
pub trait UserReader: ReadRepository<User> {
    /// The live user with this email (compared lower-cased).
    async fn by_email(&mut self, email: &str) -> Result<Option<User>>;
}

/// Reads and writes of users inside a unit of work.
pub trait UserRepository: UserReader + Repository<User> {}

/// Reads of reviews.
#[async_trait]
pub trait ReviewReader: ReadRepository<Review> {
    /// The live reviews of a live product, newest first (`created_at` then id, descending).
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>>;

    /// Rating statistics of the live reviews of a live product (all zero otherwise).
    async fn stats(&mut self, product: ProductId) -> Result<RatingStats>;
}

/// Reads and writes of reviews inside a unit of work.
pub trait ReviewRepository: ReviewReader + Repository<Review> {}

/// Reads of the stock ledger.
#[async_trait]
pub trait StockMovementReader: Send {
    /// The movement with this id (movements are never deleted, so every applied transfer's
    /// row is found).
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>>;

    /// The movement recorded under this idempotency key.
    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>>;

    /// Movements from or to `product`, in `(created_at, id)` order.
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>>;

    /// How many movements the ledger holds.
    async fn count(&mut self) -> Result<u64>;
}

/// Appends to the stock ledger inside a unit of work.
#[async_trait]
pub trait StockMovementRepository: StockMovementReader {
    /// Appends a row. [`Error::Conflict`](crate::Error::Conflict) on
    /// [`Constraint::IdempotencyKey`](crate::Constraint::IdempotencyKey) when its key is taken.
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement>;
}

//! The repository ports, implemented on [`Conn`]: each method hands owned inputs to a call that
//! runs the statements of `table.rs`, with the call's [`Cost`] (which decides where it runs:
//! inline for a few indexed statements, the blocking pool for work that grows with the data).

use async_trait::async_trait;
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Category, CategoryReader, CategoryRepository, Cursor, KeysetPage, Limit, NewStockMovement,
    Page, Product, ProductFilter, ProductId, ProductReader, ProductRepository,
    ProductWithRelations, RatingStats, ReadRepository, Repository, Result, Review, ReviewReader,
    ReviewRepository, SearchPage, StockDelta, StockMovement, StockMovementId, StockMovementReader,
    StockMovementRepository, User, UserReader, UserRepository,
};
use uuid::Uuid;

use crate::conn::{Conn, Cost};
use crate::table::{self, Table};

fn uuids<I: Into<Uuid> + Copy>(ids: &[I]) -> Vec<Uuid> {
    ids.iter().map(|id| (*id).into()).collect()
}

impl Conn {
    /// The live row of `E` whose unique `column` equals `value`.
    async fn by_column<E: Table>(
        &mut self,
        column: &'static str,
        value: String,
    ) -> Result<Option<E>> {
        self.read(Cost::Short, move |c| {
            table::by_column::<E>(c, column, &value)
        })
        .await
    }
}

#[async_trait]
impl<E: Table> ReadRepository<E> for Conn {
    async fn get(&mut self, id: E::Id) -> Result<Option<E>> {
        let id: Uuid = id.into();
        self.read(Cost::Short, move |c| table::get::<E>(c, id))
            .await
    }

    async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = uuids(ids);
        self.read(Cost::of_batch(ids.len()), move |c| {
            table::get_many::<E>(c, &ids)
        })
        .await
    }

    async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| table::list::<E>(c, &filter, page))
            .await
    }

    async fn list_after(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>> {
        let filter = filter.clone();
        let rows = self
            .read(Cost::Long, move |c| {
                table::list_after::<E>(c, &filter, after, limit.get() + 1)
            })
            .await?;
        Ok(stockroom_core::adapter::page_from_overfetch(rows, limit))
    }

    async fn count(&mut self, filter: &E::Filter) -> Result<u64> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| table::count::<E>(c, &filter))
            .await
    }

    async fn exists(&mut self, filter: &E::Filter) -> Result<bool> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| table::exists::<E>(c, &filter))
            .await
    }

    async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>> {
        self.read(Cost::Long, move |c| table::list_deleted::<E>(c, page))
            .await
    }
}

#[async_trait]
impl<E: Table> Repository<E> for Conn {
    async fn create(&mut self, new: E::New) -> Result<E> {
        self.run(Cost::Short, move |c| table::create::<E>(c, new))
            .await
    }

    async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        self.run(Cost::of_batch(new.len()), move |c| {
            table::create_many::<E>(c, new)
        })
        .await
    }

    async fn update(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E> {
        let id: Uuid = id.into();
        let patch = patch.clone();
        self.run(Cost::Short, move |c| {
            table::update::<E>(c, id, &patch, expected_version)
        })
        .await
    }

    async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = uuids(ids);
        let patch = patch.clone();
        self.run(Cost::of_batch(ids.len()), move |c| {
            table::update_many::<E>(c, &ids, &patch)
        })
        .await
    }

    async fn soft_delete(&mut self, id: E::Id) -> Result<bool> {
        let id: Uuid = id.into();
        self.run(Cost::Short, move |c| table::soft_delete::<E>(c, id))
            .await
    }

    async fn restore(&mut self, id: E::Id) -> Result<bool> {
        let id: Uuid = id.into();
        self.run(Cost::Short, move |c| table::restore::<E>(c, id))
            .await
    }

    async fn hard_delete(&mut self, id: E::Id) -> Result<()> {
        let id: Uuid = id.into();
        // Long: the foreign keys cascade to the row's reviews and clear references to it.
        self.run(Cost::Long, move |c| table::hard_delete::<E>(c, id))
            .await
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        self.run(Cost::Long, move |c| {
            table::purge_deleted_before::<E>(c, before)
        })
        .await
    }
}

#[async_trait]
impl ProductReader for Conn {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>> {
        self.by_column("slug", slug.to_owned()).await
    }

    async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>> {
        self.by_column("sku", sku.to_owned()).await
    }

    async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>> {
        self.read(Cost::Short, move |c| table::with_relations(c, id))
            .await
    }

    async fn search(&mut self, filter: &ProductFilter, page: Page) -> Result<SearchPage<Product>> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| table::search(c, &filter, page))
            .await
    }
}

#[async_trait]
impl ProductRepository for Conn {
    async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product> {
        self.run(Cost::Short, move |c| table::adjust_stock(c, id, delta))
            .await
    }

    async fn lock(&mut self, ids: &[ProductId]) -> Result<Vec<Product>> {
        let ids = ids.to_vec();
        self.read(Cost::of_batch(ids.len()), move |c| table::lock(c, &ids))
            .await
    }
}

#[async_trait]
impl CategoryReader for Conn {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        self.by_column("slug", slug.to_owned()).await
    }
}

impl CategoryRepository for Conn {}

#[async_trait]
impl UserReader for Conn {
    async fn by_email(&mut self, email: &str) -> Result<Option<User>> {
        self.by_column("email", email.to_lowercase()).await
    }
}

impl UserRepository for Conn {}

#[async_trait]
impl ReviewReader for Conn {
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>> {
        self.read(Cost::Long, move |c| {
            table::reviews_for_product(c, product, page)
        })
        .await
    }

    async fn stats(&mut self, product: ProductId) -> Result<RatingStats> {
        self.read(Cost::Long, move |c| table::review_stats(c, product))
            .await
    }
}

impl ReviewRepository for Conn {}

#[async_trait]
impl StockMovementReader for Conn {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        self.read(Cost::Short, move |c| table::movement(c, id))
            .await
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        let key = key.to_owned();
        self.read(Cost::Short, move |c| table::movement_by_key(c, &key))
            .await
    }

    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        self.read(Cost::Long, move |c| {
            table::movements_for_product(c, product, page)
        })
        .await
    }

    async fn count(&mut self) -> Result<u64> {
        self.read(Cost::Long, table::movement_count).await
    }
}

#[async_trait]
impl StockMovementRepository for Conn {
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement> {
        self.run(Cost::Short, move |c| table::record_movement(c, movement))
            .await
    }
}

//! The repositories: one type, [`Tables`], holding a [`State`] and implementing every reader and
//! repository port over it. A read session hands out only its reader traits; a unit of work hands
//! out the repository traits too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stockroom_core::adapter::page_from_overfetch;
use stockroom_core::time::{self, Timestamp};
use stockroom_core::{
    Category, CategoryReader, CategoryRepository, Constraint, Cursor, Entity, Error, KeysetPage,
    Limit, NewStockMovement, Page, Product, ProductFilter, ProductId, ProductReader,
    ProductRepository, ProductWithRelations, RatingStats, ReadRepository, Repository, Result,
    Review, ReviewReader, ReviewRepository, Rule, SearchPage, StockDelta, StockMovement,
    StockMovementId, StockMovementReader, StockMovementRepository, User, UserReader,
    UserRepository, MAX_STOCK,
};

use crate::state::{key_of, key_of_cursor, Row, State};

/// A [`State`] and the ports over it. Every call fails with `Unavailable` once the store is
/// closed, as on the SQL backends.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) state: State,
    pub(crate) closed: Arc<AtomicBool>,
}

impl Tables {
    /// The tables, if the store is still open.
    fn state(&self) -> Result<&State> {
        self.check_open()?;
        Ok(&self.state)
    }

    /// The tables, for writing, if the store is still open.
    fn state_mut(&mut self) -> Result<&mut State> {
        self.check_open()?;
        Ok(&mut self.state)
    }

    fn check_open(&self) -> Result<()> {
        check_open(&self.closed)
    }
}

/// `Unavailable` once the store whose flag `closed` is has been closed.
pub(crate) fn check_open(closed: &AtomicBool) -> Result<()> {
    if closed.load(Ordering::Acquire) {
        return Err(Error::Unavailable {
            reason: "the memory store is closed".to_owned(),
        });
    }
    Ok(())
}

/// `rows` from `page`: skip `offset`, take `limit`.
fn paged<'a, E: Clone + 'a>(rows: impl Iterator<Item = &'a E>, page: Page) -> Vec<E> {
    let (offset, limit) = bounds(page);
    rows.skip(offset).take(limit).cloned().collect()
}

/// The page's offset and limit as counts of rows.
fn bounds(page: Page) -> (usize, usize) {
    let offset = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    (offset, page.limit().get() as usize)
}

/// `ids` without repeats, in their first order.
fn distinct<T: Copy + Eq + std::hash::Hash>(ids: &[T]) -> Vec<T> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

#[async_trait]
impl<E: Row> ReadRepository<E> for Tables {
    async fn get(&mut self, id: E::Id) -> Result<Option<E>> {
        Ok(E::table(self.state()?).live(id).cloned())
    }

    async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        let table = E::table(self.state()?);
        let mut rows: Vec<E> = distinct(ids)
            .into_iter()
            .filter_map(|id| table.live(id).cloned())
            .collect();
        rows.sort_by_key(key_of);
        Ok(rows)
    }

    async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
        if !filter_can_match::<E>(filter, self.state()?) {
            return Ok(Vec::new());
        }
        Ok(paged(E::table(self.state()?).matching(filter), page))
    }

    async fn list_after(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>> {
        if !filter_can_match::<E>(filter, self.state()?) {
            return Ok(page_from_overfetch(Vec::new(), limit));
        }
        let table = E::table(self.state()?);
        let take = limit.get() as usize + 1;
        let rows: Vec<E> = match after {
            Some(cursor) => table
                .matching_after(filter, key_of_cursor(&cursor))
                .take(take)
                .cloned()
                .collect(),
            None => table.matching(filter).take(take).cloned().collect(),
        };
        Ok(page_from_overfetch(rows, limit))
    }

    async fn count(&mut self, filter: &E::Filter) -> Result<u64> {
        if !filter_can_match::<E>(filter, self.state()?) {
            return Ok(0);
        }
        Ok(E::table(self.state()?).matching(filter).count() as u64)
    }

    async fn exists(&mut self, filter: &E::Filter) -> Result<bool> {
        Ok(filter_can_match::<E>(filter, self.state()?)
            && E::table(self.state()?).matching(filter).next().is_some())
    }

    async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>> {
        let rows = E::table(self.state()?).all().filter(|row| !row.is_live());
        Ok(paged(rows, page))
    }
}

/// Whether any row can pass `filter`: not when it names a row that is not live, which filters
/// like an absent one.
fn filter_can_match<E: Row>(filter: &E::Filter, state: &State) -> bool {
    E::filter_references(filter)
        .into_iter()
        .all(|id| state.is_live(id))
}

/// Creates `new` in `state` at `now`: references, then uniqueness.
fn insert<E: Row>(state: &mut State, new: E::New, now: Timestamp) -> Result<E> {
    let row = E::create(new, now);
    state.require_live(row.references())?;
    E::table_mut(state).put(row.clone())?;
    Ok(row)
}

#[async_trait]
impl<E: Row> Repository<E> for Tables {
    async fn create(&mut self, new: E::New) -> Result<E> {
        insert(self.state_mut()?, new, time::now())
    }

    async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        let now = time::now();
        let mut next = self.state()?.clone();
        let rows = new
            .into_iter()
            .map(|new| insert(&mut next, new, now))
            .collect::<Result<Vec<E>>>()?;
        *self.state_mut()? = next;
        Ok(rows)
    }

    async fn update(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E> {
        let table = E::table(self.state()?);
        let mut row = table
            .live(id)
            .cloned()
            .ok_or_else(|| Error::not_found(E::KIND, id))?;
        if let Some(expected) = expected_version {
            if expected != row.version() {
                return Err(Error::stale_version(E::KIND, id, expected, row.version()));
            }
        }
        self.state()?.require_live(E::patch_references(patch))?;
        row.apply(patch, time::now());
        E::table_mut(self.state_mut()?).put(row.clone())?;
        Ok(row)
    }

    async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64> {
        let table = E::table(self.state()?);
        let live: Vec<E> = distinct(ids)
            .into_iter()
            .filter_map(|id| table.live(id).cloned())
            .collect();
        if live.is_empty() {
            return Ok(0);
        }
        self.state()?.require_live(E::patch_references(patch))?;
        let now = time::now();
        let mut next = self.state()?.clone();
        for mut row in live.iter().cloned() {
            row.apply(patch, now);
            E::table_mut(&mut next).put(row)?;
        }
        *self.state_mut()? = next;
        Ok(live.len() as u64)
    }

    async fn soft_delete(&mut self, id: E::Id) -> Result<bool> {
        let table = E::table_mut(self.state_mut()?);
        let row = table.any(id).ok_or_else(|| Error::not_found(E::KIND, id))?;
        if !row.is_live() {
            return Ok(false);
        }
        let mut row = row.clone();
        let now = time::now();
        row.set_deleted_at(Some(now), now);
        table.put(row)?;
        Ok(true)
    }

    async fn restore(&mut self, id: E::Id) -> Result<bool> {
        let table = E::table_mut(self.state_mut()?);
        let row = table.any(id).ok_or_else(|| Error::not_found(E::KIND, id))?;
        if row.is_live() {
            return Ok(false);
        }
        let mut row = row.clone();
        row.set_deleted_at(None, time::now());
        table.put(row)?;
        Ok(true)
    }

    async fn hard_delete(&mut self, id: E::Id) -> Result<()> {
        if E::remove(self.state_mut()?, id) {
            Ok(())
        } else {
            Err(Error::not_found(E::KIND, id))
        }
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        let before = time::supported("before", before)?;
        let doomed: Vec<E::Id> = E::table(self.state()?)
            .all()
            .filter(|row| row.deleted_at().is_some_and(|at| at < before))
            .map(Entity::id)
            .collect();
        for &id in &doomed {
            E::remove(self.state_mut()?, id);
        }
        Ok(doomed.len() as u64)
    }
}

#[async_trait]
impl ProductReader for Tables {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>> {
        let table = &self.state()?.products;
        Ok(table.by_unique(Constraint::ProductSlug, slug).cloned())
    }

    async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>> {
        let table = &self.state()?.products;
        Ok(table.by_unique(Constraint::ProductSku, sku).cloned())
    }

    async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>> {
        let state = self.state()?;
        Ok(state.products.live(id).map(|product| ProductWithRelations {
            category: product
                .category_id
                .and_then(|c| state.categories.live(c).cloned()),
            creator: product
                .created_by
                .and_then(|u| state.users.live(u).cloned()),
            product: product.clone(),
        }))
    }

    async fn search(&mut self, filter: &ProductFilter, page: Page) -> Result<SearchPage<Product>> {
        let (offset, limit) = bounds(page);
        if !filter_can_match::<Product>(filter, self.state()?) {
            return Ok(SearchPage {
                total: 0,
                items: Vec::new(),
            });
        }
        let table = &self.state()?.products;
        // One pass: count every match, keep the page's. With a query, the candidates come from
        // one scan of the table's document index, and the rest of the filter decides.
        let matching: Box<dyn Iterator<Item = &Product>> = match &filter.search {
            Some(query) => {
                let rest = ProductFilter {
                    search: None,
                    ..filter.clone()
                };
                Box::new(
                    table
                        .containing(query.folded())
                        .filter(move |p| rest.matches(p)),
                )
            }
            None => Box::new(table.matching(filter)),
        };
        let mut items = Vec::with_capacity(limit.min(64));
        let mut total = 0;
        for product in matching {
            if total >= offset && items.len() < limit {
                items.push(product.clone());
            }
            total += 1;
        }
        Ok(SearchPage {
            total: total as u64,
            items,
        })
    }
}

#[async_trait]
impl ProductRepository for Tables {
    async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product> {
        let table = &mut self.state_mut()?.products;
        let mut product = table
            .live(id)
            .cloned()
            .ok_or_else(|| Error::not_found(Product::KIND, id))?;
        let delta = delta.get();
        // |delta| and the stock are both at most MAX_STOCK: the sum cannot overflow.
        let stock = product.stock + delta;
        if stock > MAX_STOCK {
            return Err(Error::validation(
                "stock",
                Rule::OutOfRange {
                    min: 0,
                    max: MAX_STOCK,
                },
            ));
        }
        if stock < 0 {
            return Err(Error::InsufficientStock {
                product: id,
                available: product.stock,
                requested: -delta,
            });
        }
        product.stock = stock;
        product.updated_at = time::now();
        product.version += 1;
        table.put(product.clone())?;
        Ok(product)
    }

    async fn lock(&mut self, ids: &[ProductId]) -> Result<Vec<Product>> {
        // The unit of work holds the only writer slot: every row it sees is already its own.
        let mut ids = distinct(ids);
        ids.sort_unstable();
        let table = &self.state()?.products;
        Ok(ids
            .into_iter()
            .filter_map(|id| table.live(id).cloned())
            .collect())
    }
}

#[async_trait]
impl CategoryReader for Tables {
    async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        let table = &self.state()?.categories;
        Ok(table.by_unique(Constraint::CategorySlug, slug).cloned())
    }
}

impl CategoryRepository for Tables {}

#[async_trait]
impl UserReader for Tables {
    async fn by_email(&mut self, email: &str) -> Result<Option<User>> {
        let table = &self.state()?.users;
        let email = email.to_lowercase();
        Ok(table.by_unique(Constraint::UserEmail, &email).cloned())
    }
}

impl UserRepository for Tables {}

impl Tables {
    /// The live reviews of `product` (none unless it is live), newest first.
    fn reviews_of(&self, product: ProductId) -> Result<impl Iterator<Item = &Review> + '_> {
        let state = self.state()?;
        let live = state.products.live(product).is_some();
        Ok(state
            .reviews
            .children(*product.as_uuid().as_bytes())
            .rev()
            .filter(move |r| live && r.is_live()))
    }
}

#[async_trait]
impl ReviewReader for Tables {
    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>> {
        Ok(paged(self.reviews_of(product)?, page))
    }

    async fn stats(&mut self, product: ProductId) -> Result<RatingStats> {
        Ok(RatingStats::from_ratings(
            self.reviews_of(product)?.map(|r| r.rating),
        ))
    }
}

impl ReviewRepository for Tables {}

#[async_trait]
impl StockMovementReader for Tables {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        Ok(self.state()?.movements.get(id).cloned())
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        Ok(self.state()?.movements.by_key(key).cloned())
    }

    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        Ok(paged(self.state()?.movements.of_product(product), page))
    }

    async fn count(&mut self) -> Result<u64> {
        Ok(self.state()?.movements.len() as u64)
    }
}

#[async_trait]
impl StockMovementRepository for Tables {
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement> {
        let row = movement.into_entity(time::now());
        self.state_mut()?.movements.append(row.clone())?;
        Ok(row)
    }
}

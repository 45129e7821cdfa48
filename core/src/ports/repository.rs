use async_trait::async_trait;

use crate::entities::Entity;
use crate::error::{Error, Result};
use crate::query::{Cursor, KeysetPage, Limit, Page};
use crate::time::Timestamp;

/// The base reads over one kind of entity. Only live rows are seen, except by
/// [`list_deleted`](ReadRepository::list_deleted).
///
/// A filter that names another row (products of a category, reviews of a product or by an
/// author) matches nothing when that row is soft-deleted, as when it does not exist.
#[async_trait]
pub trait ReadRepository<E: Entity>: Send {
    /// The live row with this id.
    async fn get(&mut self, id: E::Id) -> Result<Option<E>>;

    /// The live rows among `ids`, each once, in `(created_at, id)` order; one statement.
    async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>>;

    /// An offset page of the live rows that pass `filter`, in `(created_at, id)` order.
    async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>>;

    /// A keyset page: up to `limit` live rows that pass `filter` and come after `after` in
    /// `(created_at, id)` order (from the start when `after` is `None`).
    async fn list_after(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>>;

    /// How many live rows pass `filter`.
    async fn count(&mut self, filter: &E::Filter) -> Result<u64>;

    /// Whether any live row passes `filter`; stops at the first.
    async fn exists(&mut self, filter: &E::Filter) -> Result<bool>;

    /// The trash: an offset page of soft-deleted rows, in `(created_at, id)` order.
    async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>>;

    /// The live row with this id, or [`Error::NotFound`].
    async fn require(&mut self, id: E::Id) -> Result<E> {
        self.get(id)
            .await?
            .ok_or_else(|| Error::not_found(E::schema().kind(), id))
    }
}

/// The base writes over one kind of entity, inside a unit of work.
///
/// # Not found
///
/// Reads answer "no such live row" with `None` ([`ReadRepository::get`]) or by leaving the row
/// out (lists, `get_many`); [`ReadRepository::require`] turns `None` into
/// [`Error::NotFound`]. A write on one row by id answers it with [`Error::NotFound`], whose
/// [`EntityId`](crate::EntityId) compares with the typed id asked for: `update` and
/// `adjust_stock` (no live row), `soft_delete`, `restore` and `hard_delete` (no row at all;
/// `soft_delete` of a deleted row and `restore` of a live one answer `Ok(false)` and change
/// nothing). A batch (`update_many`) skips ids without a live row and counts the rest.
#[async_trait]
pub trait Repository<E: Entity>: ReadRepository<E> {
    /// Inserts a row.
    ///
    /// Errors: [`Error::Conflict`] when a live row holds a unique value; [`Error::NotFound`] when
    /// a referenced row (category, creator, product, author) is not live.
    ///
    /// When a write breaks several rules, the error names the first in this order, on every
    /// backend and for `create`, `create_many`, `update` and `restore` alike: a referenced row
    /// that is not live ([`Error::NotFound`]), then the unique values in the order the entity
    /// declares them (a product's slug before its sku).
    async fn create(&mut self, new: E::New) -> Result<E>;

    /// Inserts rows in one statement per batch, all with the same `created_at`; returns them in
    /// input order. All or nothing: one bad row inserts none.
    async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>>;

    /// Applies `patch` to the live row `id`, bumping `version` and `updated_at`. With
    /// `expected_version`, fails with [`Error::StaleVersion`] unless it is the current version.
    async fn update(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E>;

    /// Applies `patch` to every live row among `ids`; returns how many changed.
    async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64>;

    /// Soft-deletes the live row `id`: true. False when the row is already deleted (the first
    /// timestamp stays); [`Error::NotFound`] when no row, live or deleted, has the id.
    async fn soft_delete(&mut self, id: E::Id) -> Result<bool>;

    /// Brings back the soft-deleted row `id`: true. False when the row is live already;
    /// [`Error::NotFound`] when no row, live or deleted, has the id; [`Error::Conflict`] when a
    /// live row took one of its unique values meanwhile.
    async fn restore(&mut self, id: E::Id) -> Result<bool>;

    /// Deletes the row `id`, live or soft-deleted, for good; [`Error::NotFound`] when there is
    /// no such row; [`Error::Referenced`] when a table of the application's refers to it (a
    /// foreign key without `ON DELETE`), and then nothing is deleted.
    async fn hard_delete(&mut self, id: E::Id) -> Result<()>;

    /// Deletes for good every row soft-deleted before `before`; returns how many. A `before`
    /// outside the years every backend stores (see [`time::supported`](crate::time::supported))
    /// is [`Error::Validation`] on `before`, and nothing is deleted. [`Error::Referenced`], naming
    /// one such row, when a table of the application's refers to one of them, and then nothing
    /// is deleted.
    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64>;
}

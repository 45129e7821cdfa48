//! The typed repositories: an entity's reads and writes on a read session or a unit of work,
//! written once for every entity over the generic ports ([`RecordReader`], [`RecordWriter`]).
//!
//! Every value is checked against the entity's declaration here, before any adapter sees it:
//! a bad input is [`Error::Validation`] and nothing is written; a filter or lookup naming a
//! value no row can hold (a NUL byte, a malformed slug) finds nothing, on every backend, without
//! asking one.

use std::fmt;
use std::marker::PhantomData;

use async_trait::async_trait;
use uuid::Uuid;

use crate::adapter::page_from_overfetch;
use crate::entities::{Entity, FilterInput, NewInput, PatchInput};
use crate::error::{Error, Result};
use crate::outbox::{own, subjects};
use crate::ports::{ReadRepository, RecordReader, RecordWriter, Repository};
use crate::query::{Cursor, KeysetPage, Limit, Page, SearchPage};
use crate::schema::{
    invalid, rules, Changes, Condition, Order, Record, Schema, Selection, Start, Value,
};
use crate::time::{self, Timestamp};

/// The repository of entity `E` on a read session (`P` is `dyn RecordReader`: reads only) or a
/// unit of work (`P` is `dyn RecordWriter`, the default: reads and writes), as
/// `session.reader::<E>()`, `uow.repository::<E>()`, `uow.products()`, … hand it out.
///
/// Its methods are the base operations of every entity, Stockroom's and the application's
/// alike; Stockroom's entities add their own (`by_slug`, `search`, `adjust_stock`, …). It also
/// implements [`ReadRepository<E>`] and [`Repository<E>`], for code that takes
/// `&mut dyn Repository<E>`.
pub struct Repo<'a, E, P: ?Sized + 'a = dyn RecordWriter + 'a> {
    pub(crate) port: &'a mut P,
    _entity: PhantomData<fn() -> E>,
}

/// The reads of entity `E` on a read session: [`Repo`] over [`RecordReader`].
pub type ReadRepo<'a, E> = Repo<'a, E, dyn RecordReader + 'a>;

impl<E: Entity, P: ?Sized> fmt::Debug for Repo<'_, E, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Repo<{}>", E::schema().name)
    }
}

impl<'a, E: Entity, P: ?Sized + 'a> Repo<'a, E, P> {
    /// The repository of `E` over `port`.
    pub fn new(port: &'a mut P) -> Self {
        Self {
            port,
            _entity: PhantomData,
        }
    }
}

/// The entities of `records`, in order.
pub(crate) fn entities<E: Entity>(records: Vec<Record>) -> Result<Vec<E>> {
    records.into_iter().map(E::from_record).collect()
}

/// Whether Stockroom writes its own events for writes to `E` through `port`: when the store
/// was configured so ([`StoreConfig::own_events`](crate::StoreConfig::own_events)), for
/// products.
pub(crate) fn announces<E: Entity, P: RecordWriter + ?Sized>(port: &P) -> bool {
    let (schema, product) = (E::schema(), crate::entities::Product::schema());
    schema.name == product.name && schema.table == product.table && port.own_events()
}

/// Writes Stockroom's own event `subject` for each of `records` of `E`, when it
/// [`announces`] them.
pub(crate) async fn announce<E: Entity, P: RecordWriter + ?Sized>(
    port: &mut P,
    subject: &str,
    records: &[Record],
) -> Result<()> {
    if records.is_empty() || !announces::<E, P>(port) {
        return Ok(());
    }
    let events = records
        .iter()
        .map(|record| own::record_event(subject, E::schema(), record))
        .collect();
    port.append_events(events).await
}

fn uuids<I: Into<Uuid> + Copy>(ids: &[I]) -> Vec<Uuid> {
    ids.iter().map(|&id| id.into()).collect()
}

/// The conditions of `conditions` with their values in stored form; `None` when one names a
/// value no row can hold, so that nothing matches.
pub(crate) fn prepare(
    schema: &'static Schema,
    conditions: Vec<Condition>,
) -> Result<Option<Vec<Condition>>> {
    // Each value is replaced in place: the conditions keep their allocation.
    let mut conditions = conditions;
    for condition in &mut conditions {
        match condition {
            Condition::Eq { field, value } => {
                let Some(declared) = schema.fields.get(*field) else {
                    return Err(invalid(schema, format!("a condition names field #{field}")));
                };
                match rules::lookup(declared, std::mem::take(value)) {
                    Some(looked_up) => *value = looked_up,
                    None => return Ok(None),
                }
            }
            Condition::Search(_) => {
                if schema.search.is_none() {
                    return Err(invalid(
                        schema,
                        "a search on an entity without a search document",
                    ));
                }
            }
        }
    }
    Ok(Some(conditions))
}

impl<'a, E: Entity, P: RecordReader + ?Sized + 'a> Repo<'a, E, P> {
    /// The conditions of `filter`, or `None` when it can match nothing.
    fn conditions(filter: &E::Filter) -> Result<Option<Vec<Condition>>> {
        prepare(E::schema(), filter.conditions()?)
    }

    /// The live row with this id.
    pub async fn get(&mut self, id: E::Id) -> Result<Option<E>> {
        let record = self.port.get(E::schema(), id.into()).await?;
        record.map(E::from_record).transpose()
    }

    /// The live row with this id, or [`Error::NotFound`].
    pub async fn require(&mut self, id: E::Id) -> Result<E> {
        self.get(id)
            .await?
            .ok_or_else(|| Error::not_found(E::schema().kind(), id))
    }

    /// The live rows among `ids`, each once, in `(created_at, id)` order; one statement.
    pub async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        entities(self.port.get_many(E::schema(), &uuids(ids)).await?)
    }

    /// An offset page of the live rows that pass `filter`, in `(created_at, id)` order.
    pub async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
        self.list_in(filter, page, Order::Oldest).await
    }

    /// An offset page of the live rows that pass `filter`, in `order`.
    pub(crate) async fn list_in(
        &mut self,
        filter: &E::Filter,
        page: Page,
        order: Order,
    ) -> Result<Vec<E>> {
        let Some(conditions) = Self::conditions(filter)? else {
            return Ok(Vec::new());
        };
        let selection = Selection {
            conditions,
            order,
            start: Start::Offset(page.offset()),
            limit: page.limit().get(),
        };
        entities(self.port.list(E::schema(), &selection).await?)
    }

    /// A keyset page: up to `limit` live rows that pass `filter` and come after `after` in
    /// `(created_at, id)` order (from the start when `after` is `None`).
    pub async fn list_after(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>> {
        let Some(conditions) = Self::conditions(filter)? else {
            return Ok(KeysetPage {
                items: Vec::new(),
                next: None,
            });
        };
        let selection = Selection {
            conditions,
            order: Order::Oldest,
            start: Start::After(after),
            // One more than asked: whether it comes tells whether a next page exists.
            limit: limit.get() + 1,
        };
        let rows = entities(self.port.list(E::schema(), &selection).await?)?;
        Ok(page_from_overfetch(rows, limit))
    }

    /// How many live rows pass `filter`.
    pub async fn count(&mut self, filter: &E::Filter) -> Result<u64> {
        match Self::conditions(filter)? {
            Some(conditions) => self.port.count(E::schema(), &conditions).await,
            None => Ok(0),
        }
    }

    /// Whether any live row passes `filter`; stops at the first.
    pub async fn exists(&mut self, filter: &E::Filter) -> Result<bool> {
        match Self::conditions(filter)? {
            Some(conditions) => self.port.exists(E::schema(), &conditions).await,
            None => Ok(false),
        }
    }

    /// A page of the live rows that pass `filter`, and how many pass in all: exactly up to
    /// [`MAX_EXACT_TOTAL`](crate::MAX_EXACT_TOTAL), a lower bound beyond (see [`Total`]; for
    /// an exact number however large, [`count`](Self::count)).
    ///
    /// [`Total`]: crate::Total
    pub async fn search(&mut self, filter: &E::Filter, page: Page) -> Result<SearchPage<E>> {
        let Some(conditions) = Self::conditions(filter)? else {
            return Ok(SearchPage {
                items: Vec::new(),
                total: crate::Total::Exact(0),
            });
        };
        let found = self.port.search(E::schema(), &conditions, page).await?;
        Ok(SearchPage {
            items: entities(found.items)?,
            total: found.total,
        })
    }

    /// The trash: an offset page of soft-deleted rows, in `(created_at, id)` order.
    pub async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>> {
        entities(self.port.list_deleted(E::schema(), page).await?)
    }

    /// The live row whose values for the unique rule `rule` (its
    /// [`name`](crate::schema::Unique::name)) are `values`, one per field of the rule. A value
    /// no row can hold finds nothing. A rule the entity does not declare is
    /// [`Error::Schema`].
    pub async fn find_unique(&mut self, rule: &str, values: Vec<Value>) -> Result<Option<E>> {
        let schema = E::schema();
        let Some(position) = schema.unique.iter().position(|u| u.name == rule) else {
            return Err(invalid(
                schema,
                format!("it declares no unique rule {rule:?}"),
            ));
        };
        let fields = schema.unique[position].fields;
        if values.len() != fields.len() {
            return Err(invalid(
                schema,
                format!("unique rule {rule:?} has {} fields", fields.len()),
            ));
        }
        let mut stored = Vec::with_capacity(values.len());
        for (name, value) in fields.iter().zip(values) {
            let (_, field) = schema.field(name).expect("a checked declaration");
            match rules::lookup(field, value) {
                Some(value) => stored.push(value),
                None => return Ok(None),
            }
        }
        let record = self.port.find(schema, position, &stored).await?;
        record.map(E::from_record).transpose()
    }
}

impl<'a, E: Entity, P: RecordWriter + ?Sized + 'a> Repo<'a, E, P> {
    /// Inserts a row.
    ///
    /// Errors: [`Error::Validation`] for a bad input; [`Error::NotFound`] when a referenced row
    /// is not live; [`Error::Conflict`] when a live row holds a unique value. When a write breaks
    /// several rules, the error names the first in this order, on every backend and for
    /// `create`, `create_many`, `update` and `restore` alike: a referenced row that is not live,
    /// then the unique values in the order the entity declares them.
    pub async fn create(&mut self, new: E::New) -> Result<E> {
        let record = Record::new(new.into_values()?, time::now());
        let mut stored = self.port.insert(E::schema(), vec![record]).await?;
        announce::<E, P>(self.port, subjects::PRODUCT_CREATED, &stored).await?;
        E::from_record(stored.pop().expect("one row inserted, one returned"))
    }

    /// Inserts rows in one statement per batch, all with the same `created_at`; returns them in
    /// input order. All or nothing: one bad row inserts none.
    pub async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let now = time::now();
        let records = new
            .into_iter()
            .map(|n| Ok(Record::new(n.into_values()?, now)))
            .collect::<Result<Vec<_>>>()?;
        let stored = self.port.insert(E::schema(), records).await?;
        announce::<E, P>(self.port, subjects::PRODUCT_CREATED, &stored).await?;
        entities(stored)
    }

    /// Applies `patch` to the live row `id`, bumping `version` and `updated_at`. With
    /// `expected_version`, fails with [`Error::StaleVersion`] unless it is the current version.
    pub async fn update(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E> {
        let changes = Changes {
            sets: patch.sets()?,
            at: time::now(),
        };
        let record = self
            .port
            .update(E::schema(), id.into(), &changes, expected_version)
            .await?;
        announce::<E, P>(
            self.port,
            subjects::PRODUCT_UPDATED,
            std::slice::from_ref(&record),
        )
        .await?;
        E::from_record(record)
    }

    /// Applies `patch` to every live row among `ids`; returns how many changed.
    pub async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64> {
        let changes = Changes {
            sets: patch.sets()?,
            at: time::now(),
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = uuids(ids);
        let changed = self.port.update_many(E::schema(), &ids, &changes).await?;
        if changed > 0 && announces::<E, P>(self.port) {
            // The rows this call changed: live, and updated at this call's instant.
            let mut records = self.port.get_many(E::schema(), &ids).await?;
            records.retain(|r| r.updated_at == changes.at);
            announce::<E, P>(self.port, subjects::PRODUCT_UPDATED, &records).await?;
        }
        Ok(changed)
    }

    /// Locks the live rows among `ids` until the unit of work ends, taking them in id order so
    /// that two units of work locking the same rows cannot deadlock; returns them sorted by id.
    pub async fn lock(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        entities(self.port.lock(E::schema(), &uuids(ids)).await?)
    }

    /// Soft-deletes the live row `id`: true. False when the row is already deleted (the first
    /// timestamp stays); [`Error::NotFound`] when no row, live or deleted, has the id.
    pub async fn soft_delete(&mut self, id: E::Id) -> Result<bool> {
        let at = time::now();
        let deleted = self.port.soft_delete(E::schema(), id.into(), at).await?;
        if deleted && announces::<E, P>(self.port) {
            let event = own::deleted(id.into(), at);
            self.port.append_events(vec![event]).await?;
        }
        Ok(deleted)
    }

    /// Brings back the soft-deleted row `id`: true. False when the row is live already;
    /// [`Error::NotFound`] when no row, live or deleted, has the id; [`Error::Conflict`] when a
    /// live row took one of its unique values meanwhile.
    pub async fn restore(&mut self, id: E::Id) -> Result<bool> {
        let restored = self
            .port
            .restore(E::schema(), id.into(), time::now())
            .await?;
        if restored && announces::<E, P>(self.port) {
            let records: Vec<Record> = self
                .port
                .get(E::schema(), id.into())
                .await?
                .into_iter()
                .collect();
            announce::<E, P>(self.port, subjects::PRODUCT_RESTORED, &records).await?;
        }
        Ok(restored)
    }

    /// Deletes the row `id`, live or soft-deleted, for good, with what the entities that refer
    /// to it declare for that (their references forgotten, or their rows deleted too);
    /// [`Error::NotFound`] when there is no such row.
    pub async fn hard_delete(&mut self, id: E::Id) -> Result<()> {
        self.port.hard_delete(E::schema(), id.into()).await?;
        if announces::<E, P>(self.port) {
            self.port
                .append_events(vec![own::purged(id.into())])
                .await?;
        }
        Ok(())
    }

    /// Deletes for good every row soft-deleted before `before`; returns how many. A `before`
    /// outside the years every backend stores (see [`time::supported`]) is
    /// [`Error::Validation`] on `before`, and nothing is deleted.
    pub async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        let before = time::supported("before", before)?;
        self.port.purge_deleted_before(E::schema(), before).await
    }
}

#[async_trait]
impl<'a, E: Entity, P: RecordReader + ?Sized + 'a> ReadRepository<E> for Repo<'a, E, P> {
    async fn get(&mut self, id: E::Id) -> Result<Option<E>> {
        Repo::get(self, id).await
    }
    async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        Repo::get_many(self, ids).await
    }
    async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
        Repo::list(self, filter, page).await
    }
    async fn list_after(
        &mut self,
        filter: &E::Filter,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<KeysetPage<E>> {
        Repo::list_after(self, filter, after, limit).await
    }
    async fn count(&mut self, filter: &E::Filter) -> Result<u64> {
        Repo::count(self, filter).await
    }
    async fn exists(&mut self, filter: &E::Filter) -> Result<bool> {
        Repo::exists(self, filter).await
    }
    async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>> {
        Repo::list_deleted(self, page).await
    }
}

#[async_trait]
impl<'a, E: Entity, P: RecordWriter + ?Sized + 'a> Repository<E> for Repo<'a, E, P> {
    async fn create(&mut self, new: E::New) -> Result<E> {
        Repo::create(self, new).await
    }
    async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        Repo::create_many(self, new).await
    }
    async fn update(
        &mut self,
        id: E::Id,
        patch: &E::Patch,
        expected_version: Option<i64>,
    ) -> Result<E> {
        Repo::update(self, id, patch, expected_version).await
    }
    async fn update_many(&mut self, ids: &[E::Id], patch: &E::Patch) -> Result<u64> {
        Repo::update_many(self, ids, patch).await
    }
    async fn soft_delete(&mut self, id: E::Id) -> Result<bool> {
        Repo::soft_delete(self, id).await
    }
    async fn restore(&mut self, id: E::Id) -> Result<bool> {
        Repo::restore(self, id).await
    }
    async fn hard_delete(&mut self, id: E::Id) -> Result<()> {
        Repo::hard_delete(self, id).await
    }
    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        Repo::purge_deleted_before(self, before).await
    }
}

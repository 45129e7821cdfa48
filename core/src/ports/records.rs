//! The generic ports every adapter implements once, for every declared entity: rows as
//! [`Record`]s, described by their [`Schema`].
//!
//! Applications do not call these: they use the typed repositories of a read session or unit of
//! work ([`Repo`](crate::Repo)), which turn entities, inputs and filters into records, changes and
//! conditions (and validate them) before any adapter sees them, and turn records back into
//! entities.
//!
//! # What every implementation keeps
//!
//! - Only live rows are read, counted, listed, found, related, locked, changed or incremented;
//!   [`list_deleted`](RecordReader::list_deleted) reads only soft-deleted ones.
//! - A [`Condition::Eq`] on a reference field matches nothing when the row it names is not live.
//! - A write that breaks several rules reports the first, in this order: for each row in input
//!   order, its references that are not live in declaration order ([`Error::NotFound`] naming
//!   the referred entity), then its unique values taken by another live row in declaration
//!   order ([`Error::Conflict`] naming the rule). A write that fails changes nothing.
//! - A delete for good applies each referring entity's [`OnDelete`](crate::schema::OnDelete)
//!   to the rows that refer to the deleted one, among the entities registered with the store.
//!
//! [`Error::NotFound`]: crate::Error::NotFound
//! [`Error::Conflict`]: crate::Error::Conflict

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::outbox::NewEvent;
use crate::query::{Page, SearchPage};
use crate::schema::{Changes, Condition, Incremented, Record, Schema, Selection, Value};
use crate::time::Timestamp;

/// The reads of any declared entity.
#[async_trait]
pub trait RecordReader: Send {
    /// The live row `id`.
    async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>>;

    /// The live rows among `ids`, each once, in `(created_at, id)` order; one statement.
    async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>>;

    /// The live row holding `values` for the unique rule at position `unique` of
    /// [`Schema::unique`] (one value per field of the rule, none of them `Null`).
    async fn find(
        &mut self,
        schema: &'static Schema,
        unique: usize,
        values: &[Value],
    ) -> Result<Option<Record>>;

    /// The live row `id` with, for each of its reference fields in declaration order, the row
    /// it refers to if that row is live; one statement.
    async fn get_related(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
    ) -> Result<Option<(Record, Vec<Option<Record>>)>>;

    /// The live rows `selection` picks.
    async fn list(&mut self, schema: &'static Schema, selection: &Selection)
        -> Result<Vec<Record>>;

    /// How many live rows pass every condition.
    async fn count(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<u64>;

    /// Whether a live row passes every condition; stops at the first.
    async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool>;

    /// An offset page of the live rows that pass every condition, oldest first, and how many
    /// pass in all.
    async fn search(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        page: Page,
    ) -> Result<SearchPage<Record>>;

    /// How many live rows that pass every condition hold each value of field `field` (values no
    /// row holds are left out), in no particular order.
    async fn tally(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        field: usize,
    ) -> Result<Vec<(Value, u64)>>;

    /// An offset page of the soft-deleted rows, oldest first.
    async fn list_deleted(&mut self, schema: &'static Schema, page: Page) -> Result<Vec<Record>>;
}

/// The writes of any declared entity, inside a unit of work.
#[async_trait]
pub trait RecordWriter: RecordReader {
    /// Inserts `rows` (new rows: version 1, live), all or nothing, in as few statements as the
    /// engine allows; returns them as stored.
    async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>>;

    /// Applies `changes` to the live row `id` (at version `expected_version`, if given):
    /// [`Error::NotFound`](crate::Error::NotFound) when it is not live, then
    /// [`Error::StaleVersion`](crate::Error::StaleVersion), then the rules of the new values.
    /// Returns the row as stored.
    async fn update(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        changes: &Changes,
        expected_version: Option<i64>,
    ) -> Result<Record>;

    /// Applies `changes` to every live row among `ids`, all or nothing; how many changed. No
    /// live row among them: `Ok(0)`, nothing checked. Two rows given the same unique value
    /// conflict.
    async fn update_many(
        &mut self,
        schema: &'static Schema,
        ids: &[Uuid],
        changes: &Changes,
    ) -> Result<u64>;

    /// Adds `delta` to the integer field `field` of the live row `id` in one conditional
    /// statement, unless the sum leaves the field's declared range; bumps `version` and sets
    /// `updated_at` to `at`.
    async fn increment(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        field: usize,
        delta: i64,
        at: Timestamp,
    ) -> Result<Incremented>;

    /// Locks the live rows among `ids` until the transaction ends, in id order (so that two
    /// units of work locking the same rows cannot deadlock); returns them sorted by id.
    async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>>;

    /// Soft-deletes the live row `id` at `at`: true; false when it is deleted already;
    /// [`Error::NotFound`](crate::Error::NotFound) when no row has the id.
    async fn soft_delete(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        at: Timestamp,
    ) -> Result<bool>;

    /// Brings back the deleted row `id` at `at`: true; false when it is live;
    /// [`Error::NotFound`](crate::Error::NotFound) when no row has the id;
    /// [`Error::Conflict`](crate::Error::Conflict) when a live row holds one of its unique
    /// values.
    async fn restore(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp) -> Result<bool>;

    /// Deletes the row `id`, live or not, for good, with what that does to the rows that refer
    /// to it; [`Error::NotFound`](crate::Error::NotFound) when there is no such row.
    async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()>;

    /// Deletes for good every row soft-deleted before `before` (a time every backend stores);
    /// how many.
    async fn purge_deleted_before(
        &mut self,
        schema: &'static Schema,
        before: Timestamp,
    ) -> Result<u64>;

    /// Writes `events` (already validated) to the outbox in this transaction, in order, each with
    /// the next sequence number: committed with the unit of work, gone with its rollback or with
    /// a savepoint rolled back to. On PostgreSQL the unit of work then holds a transaction-level
    /// advisory lock on the lane of each application event (not of Stockroom's own, see
    /// [`NewEvent::is_own`]), taken in lane order, so that sequence order is commit order within
    /// an aggregate (see [`outbox`](crate::outbox)).
    async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()>;

    /// Whether the store writes Stockroom's own events for its writes
    /// ([`StoreConfig::own_events`](crate::StoreConfig::own_events)). Every adapter answers
    /// its store's setting; the default, false, is for writers that are not a store's (a mock,
    /// a test double), so that they need no expectation for it.
    fn own_events(&self) -> bool {
        false
    }
}

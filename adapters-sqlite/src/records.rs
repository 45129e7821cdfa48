//! The generic record ports ([`RecordReader`] and [`RecordWriter`]), implemented on [`Conn`] once
//! for every entity of the store's catalog: each method finds the entity's statements (its
//! [`Plan`](crate::sql::plan::Plan)), hands owned inputs to a call that runs
//! [`sql::records`](records), with the call's [`Cost`] (which decides where it runs: see
//! `conn.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use stockroom_core::outbox::NewEvent;
use stockroom_core::schema::{
    Changes, Condition, Incremented, Record, RecordReader, RecordWriter, Schema, Selection, Value,
};
use stockroom_core::time::{self, Timestamp};
use stockroom_core::{Page, Result, SearchPage};
use uuid::Uuid;

use crate::conn::{Conn, Cost};
use crate::sql::outbox;
use crate::sql::plan::Plans;
use crate::sql::records::{self, On};

/// The most payload bytes an append of events runs inline with: beyond, copying them into
/// SQLite's pages is no longer a few microseconds.
const SHORT_PAYLOADS: usize = 64 * 1024;

impl Conn {
    /// The store's statements and the position of `schema`'s among them
    /// ([`Error::UnknownEntity`](stockroom_core::Error::UnknownEntity) when the store does not
    /// hold it), for a call to take along.
    fn entity(&self, schema: &'static Schema) -> Result<(Arc<Plans>, usize)> {
        let plans = self.plans();
        let position = plans.position(schema)?;
        Ok((Arc::clone(plans), position))
    }
}

#[async_trait]
impl RecordReader for Conn {
    async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>> {
        let (plans, at) = self.entity(schema)?;
        self.read(Cost::Short, move |c| {
            records::get(c, On::new(&plans, at), id)
        })
        .await
    }

    async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (plans, at) = self.entity(schema)?;
        let ids = ids.to_vec();
        self.read(Cost::of_batch(ids.len()), move |c| {
            records::get_many(c, On::new(&plans, at), &ids)
        })
        .await
    }

    async fn find(
        &mut self,
        schema: &'static Schema,
        unique: usize,
        values: &[Value],
    ) -> Result<Option<Record>> {
        let (plans, at) = self.entity(schema)?;
        let values = values.to_vec();
        self.read(Cost::Short, move |c| {
            records::find(c, On::new(&plans, at), unique, &values)
        })
        .await
    }

    async fn get_related(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
    ) -> Result<Option<(Record, Vec<Option<Record>>)>> {
        let (plans, at) = self.entity(schema)?;
        self.read(Cost::Short, move |c| {
            records::get_related(c, On::new(&plans, at), id)
        })
        .await
    }

    async fn list(
        &mut self,
        schema: &'static Schema,
        selection: &Selection,
    ) -> Result<Vec<Record>> {
        let (plans, at) = self.entity(schema)?;
        let selection = selection.clone();
        self.read(Cost::Long, move |c| {
            records::list(c, On::new(&plans, at), &selection)
        })
        .await
    }

    async fn count(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<u64> {
        let (plans, at) = self.entity(schema)?;
        let conditions = conditions.to_vec();
        self.read(Cost::Long, move |c| {
            records::count(c, On::new(&plans, at), &conditions)
        })
        .await
    }

    async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool> {
        let (plans, at) = self.entity(schema)?;
        let conditions = conditions.to_vec();
        self.read(Cost::Long, move |c| {
            records::exists(c, On::new(&plans, at), &conditions)
        })
        .await
    }

    async fn search(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        page: Page,
    ) -> Result<SearchPage<Record>> {
        let (plans, at) = self.entity(schema)?;
        let conditions = conditions.to_vec();
        self.read(Cost::Long, move |c| {
            records::search(c, On::new(&plans, at), &conditions, page)
        })
        .await
    }

    async fn tally(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        field: usize,
    ) -> Result<Vec<(Value, u64)>> {
        let (plans, at) = self.entity(schema)?;
        let conditions = conditions.to_vec();
        self.read(Cost::Long, move |c| {
            records::tally(c, On::new(&plans, at), &conditions, field)
        })
        .await
    }

    async fn list_deleted(&mut self, schema: &'static Schema, page: Page) -> Result<Vec<Record>> {
        let (plans, at) = self.entity(schema)?;
        self.read(Cost::Long, move |c| {
            records::list_deleted(c, On::new(&plans, at), page)
        })
        .await
    }
}

#[async_trait]
impl RecordWriter for Conn {
    async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>> {
        if rows.is_empty() {
            return Ok(rows);
        }
        let (plans, at) = self.entity(schema)?;
        self.run(Cost::of_batch(rows.len()), move |c| {
            records::insert(c, On::new(&plans, at), rows)
        })
        .await
    }

    async fn update(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        changes: &Changes,
        expected_version: Option<i64>,
    ) -> Result<Record> {
        let (plans, at) = self.entity(schema)?;
        let changes = changes.clone();
        self.run(Cost::Short, move |c| {
            records::update(c, On::new(&plans, at), id, &changes, expected_version)
        })
        .await
    }

    async fn update_many(
        &mut self,
        schema: &'static Schema,
        ids: &[Uuid],
        changes: &Changes,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (plans, at) = self.entity(schema)?;
        let ids = ids.to_vec();
        let changes = changes.clone();
        self.run(Cost::of_batch(ids.len()), move |c| {
            records::update_many(c, On::new(&plans, at), &ids, &changes)
        })
        .await
    }

    async fn increment(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        field: usize,
        delta: i64,
        at: Timestamp,
    ) -> Result<Incremented> {
        let (plans, position) = self.entity(schema)?;
        self.run(Cost::Short, move |c| {
            records::increment(c, On::new(&plans, position), id, field, delta, at)
        })
        .await
    }

    async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (plans, at) = self.entity(schema)?;
        let ids = ids.to_vec();
        self.read(Cost::of_batch(ids.len()), move |c| {
            records::lock(c, On::new(&plans, at), &ids)
        })
        .await
    }

    async fn soft_delete(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        at: Timestamp,
    ) -> Result<bool> {
        let (plans, position) = self.entity(schema)?;
        self.run(Cost::Short, move |c| {
            records::soft_delete(c, On::new(&plans, position), id, at)
        })
        .await
    }

    async fn restore(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp) -> Result<bool> {
        let (plans, position) = self.entity(schema)?;
        self.run(Cost::Short, move |c| {
            records::restore(c, On::new(&plans, position), id, at)
        })
        .await
    }

    async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()> {
        let (plans, at) = self.entity(schema)?;
        // Long: the foreign keys cascade to the rows that refer to it.
        self.run(Cost::Long, move |c| {
            records::hard_delete(c, On::new(&plans, at), id)
        })
        .await
    }

    async fn purge_deleted_before(
        &mut self,
        schema: &'static Schema,
        before: Timestamp,
    ) -> Result<u64> {
        let (plans, at) = self.entity(schema)?;
        self.run(Cost::Long, move |c| {
            records::purge_deleted_before(c, On::new(&plans, at), before)
        })
        .await
    }

    /// One `INSERT` per event, in the unit of work's transaction: inline for a few small
    /// events, on the blocking pool for many or large ones.
    async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let bytes: usize = events.iter().map(|e| e.payload().len()).sum();
        let cost = Cost::of_batch(events.len()).and(if bytes > SHORT_PAYLOADS {
            Cost::Long
        } else {
            Cost::Short
        });
        let at = time::now();
        self.run(cost, move |c| outbox::append(c, &events, at))
            .await
    }

    fn own_events(&self) -> bool {
        self.writes_own_events()
    }
}

//! The generic repository ports ([`ReadRepository`] and [`Repository`]), implemented on [`Conn`]
//! for every [`Table`]: each method hands owned inputs to a call that runs the statements of
//! [`sql::generic`](generic), with the call's [`Cost`] (which decides where it runs: see
//! `conn.rs`). Each entity's own port is implemented in its module of [`sql`](crate::sql).

use async_trait::async_trait;
use stockroom_core::time::Timestamp;
use stockroom_core::{Cursor, KeysetPage, Limit, Page, ReadRepository, Repository, Result};
use uuid::Uuid;

use crate::conn::{Conn, Cost};
use crate::sql::{generic, Table};

fn uuids<I: Into<Uuid> + Copy>(ids: &[I]) -> Vec<Uuid> {
    ids.iter().map(|id| (*id).into()).collect()
}

impl Conn {
    /// The live row of `E` whose unique `column` equals `value`.
    pub(crate) async fn by_column<E: Table>(
        &mut self,
        column: &'static str,
        value: String,
    ) -> Result<Option<E>> {
        self.read(Cost::Short, move |c| {
            generic::by_column::<E>(c, column, &value)
        })
        .await
    }
}

#[async_trait]
impl<E: Table> ReadRepository<E> for Conn {
    async fn get(&mut self, id: E::Id) -> Result<Option<E>> {
        let id: Uuid = id.into();
        self.read(Cost::Short, move |c| generic::get::<E>(c, id))
            .await
    }

    async fn get_many(&mut self, ids: &[E::Id]) -> Result<Vec<E>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = uuids(ids);
        self.read(Cost::of_batch(ids.len()), move |c| {
            generic::get_many::<E>(c, &ids)
        })
        .await
    }

    async fn list(&mut self, filter: &E::Filter, page: Page) -> Result<Vec<E>> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| generic::list::<E>(c, &filter, page))
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
                generic::list_after::<E>(c, &filter, after, limit.get() + 1)
            })
            .await?;
        Ok(stockroom_core::adapter::page_from_overfetch(rows, limit))
    }

    async fn count(&mut self, filter: &E::Filter) -> Result<u64> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| generic::count::<E>(c, &filter))
            .await
    }

    async fn exists(&mut self, filter: &E::Filter) -> Result<bool> {
        let filter = filter.clone();
        self.read(Cost::Long, move |c| generic::exists::<E>(c, &filter))
            .await
    }

    async fn list_deleted(&mut self, page: Page) -> Result<Vec<E>> {
        self.read(Cost::Long, move |c| generic::list_deleted::<E>(c, page))
            .await
    }
}

#[async_trait]
impl<E: Table> Repository<E> for Conn {
    async fn create(&mut self, new: E::New) -> Result<E> {
        self.run(Cost::Short, move |c| generic::create::<E>(c, new))
            .await
    }

    async fn create_many(&mut self, new: Vec<E::New>) -> Result<Vec<E>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        self.run(Cost::of_batch(new.len()), move |c| {
            generic::create_many::<E>(c, new)
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
            generic::update::<E>(c, id, &patch, expected_version)
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
            generic::update_many::<E>(c, &ids, &patch)
        })
        .await
    }

    async fn soft_delete(&mut self, id: E::Id) -> Result<bool> {
        let id: Uuid = id.into();
        self.run(Cost::Short, move |c| generic::soft_delete::<E>(c, id))
            .await
    }

    async fn restore(&mut self, id: E::Id) -> Result<bool> {
        let id: Uuid = id.into();
        self.run(Cost::Short, move |c| generic::restore::<E>(c, id))
            .await
    }

    async fn hard_delete(&mut self, id: E::Id) -> Result<()> {
        let id: Uuid = id.into();
        // Long: the foreign keys cascade to the row's reviews and clear references to it.
        self.run(Cost::Long, move |c| generic::hard_delete::<E>(c, id))
            .await
    }

    async fn purge_deleted_before(&mut self, before: Timestamp) -> Result<u64> {
        self.run(Cost::Long, move |c| {
            generic::purge_deleted_before::<E>(c, before)
        })
        .await
    }
}

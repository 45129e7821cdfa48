//! The ports over the tables: [`Tables`], a [`State`] behind the store's closed flag, implements
//! the generic record ports for every entity of the store's catalog, and the ledger's ports. A
//! read session hands out only the readers; a unit of work hands out the writers too.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stockroom_core::outbox::NewEvent;
use stockroom_core::schema::{
    Changes, Condition, FieldType, Incremented, Order, Record, RecordReader, RecordWriter, Schema,
    Selection, Start, Value,
};
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Error, NewStockMovement, Page, ProductId, Result, SearchPage, StockMovement, StockMovementId,
    StockMovementReader, StockMovementRepository, Total, MAX_EXACT_TOTAL,
};
use uuid::Uuid;

use crate::state::State;
use crate::table::{key_of, key_of_cursor, Key, Table};

/// A [`State`] and the ports over it. Every call fails with `Unavailable` once the store is
/// closed, as on the SQL backends. A unit of work's writes copy the state on the first write
/// after it was shared (a savepoint, the committed version).
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) state: Arc<State>,
    pub(crate) closed: Arc<AtomicBool>,
    /// The store's `own_events` setting.
    pub(crate) own_events: bool,
}

impl Tables {
    /// The tables, if the store is still open.
    fn state(&self) -> Result<&State> {
        check_open(&self.closed)?;
        Ok(&self.state)
    }

    /// The tables, for writing, if the store is still open.
    fn state_mut(&mut self) -> Result<&mut State> {
        check_open(&self.closed)?;
        Ok(Arc::make_mut(&mut self.state))
    }
}

/// `Unavailable` once the store whose flag `closed` is has been closed.
pub(crate) fn check_open(closed: &AtomicBool) -> Result<()> {
    if closed.load(Ordering::Acquire) {
        return Err(Error::unavailable("the memory store is closed"));
    }
    Ok(())
}

/// `ids` without repeats, in their first order.
fn distinct<T: Copy + Eq + std::hash::Hash>(ids: &[T]) -> Vec<T> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// The live rows of the table at `position` that pass every condition, in `(created_at, id)`
/// order (newest first when `newest`), after `after` when given; `None` when a condition names
/// a row that is not live, which matches nothing.
fn matching<'a>(
    state: &'a State,
    position: usize,
    conditions: &'a [Condition],
    after: Option<Key>,
    newest: bool,
) -> Option<Box<dyn Iterator<Item = &'a Record> + 'a>> {
    let (table, entry) = state.table(position);
    let mut by_reference = None;
    for condition in conditions {
        if let Condition::Eq { field, value } = condition {
            if let FieldType::Ref(reference) = entry.schema.fields[*field].ty {
                let target = value.as_uuid()?;
                if !state.is_live(reference.target(), target) {
                    return None;
                }
                by_reference.get_or_insert((*field, target));
            }
        }
    }
    let search = conditions.iter().find_map(|c| match c {
        Condition::Search(query) => Some(query.folded()),
        _ => None,
    });
    // The conditions the source of rows (below) does not already apply.
    let from_index = search.is_some();
    let rest: Vec<&Condition> = conditions
        .iter()
        .filter(|c| match c {
            Condition::Search(_) => !from_index,
            Condition::Eq { field, .. } => {
                from_index || by_reference.is_none_or(|(f, _)| f != *field)
            }
        })
        .collect();
    // The narrowest source of rows: the search index, a reference's index, or the table.
    Some(match (search, by_reference) {
        (Some(needle), _) => {
            let found = table
                .containing(needle)
                .filter(move |row| after.is_none_or(|a| (key_of(row) > a) != newest));
            if newest {
                let found: Vec<&Record> = found.collect();
                passing(table, found.into_iter().rev(), rest)
            } else {
                passing(table, found, rest)
            }
        }
        (None, Some((field, target))) => passing(
            table,
            table
                .referring(field, target, after, newest)
                .expect("a reference field")
                .filter(|row| row.is_live()),
            rest,
        ),
        (None, None) => passing(table, table.live_rows(after, newest), rest),
    })
}

/// The rows of `rows` that pass every condition of `rest`, boxed once.
fn passing<'a>(
    table: &'a Table,
    rows: impl Iterator<Item = &'a Record> + 'a,
    rest: Vec<&'a Condition>,
) -> Box<dyn Iterator<Item = &'a Record> + 'a> {
    if rest.is_empty() {
        return Box::new(rows);
    }
    Box::new(rows.filter(move |row| {
        rest.iter().all(|c| match c {
            Condition::Eq { field, value } => row.values[*field] == *value,
            Condition::Search(query) => query.matches(table.document(row.id)),
        })
    }))
}

/// In one pass over `matches`: the rows of those from `offset` (at most `limit`, each read by
/// `row`), and how many there are in all (see [`Total::counted`]).
fn page_and_total<'a, T>(
    matches: impl Iterator<Item = T>,
    offset: usize,
    limit: usize,
    row: impl Fn(T) -> Option<&'a Record>,
) -> SearchPage<Record> {
    let mut items = Vec::with_capacity(limit.min(64));
    // Counted up to one past the bound, or to the page's end if that is further.
    let enough = (MAX_EXACT_TOTAL as usize + 1).max(offset.saturating_add(limit));
    let mut counted = 0;
    for found in matches.take(enough) {
        if counted >= offset && items.len() < limit {
            items.extend(row(found).cloned());
        }
        counted += 1;
    }
    let on_page = items.len();
    SearchPage {
        items,
        total: Total::counted(counted as u64, offset as u64, on_page),
    }
}

/// The page `page` of `rows`.
fn paged<'a>(rows: impl Iterator<Item = &'a Record>, offset: u64, limit: u32) -> Vec<Record> {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    // Sized for a full page up front (a filtered iterator cannot tell its length).
    let mut page = Vec::with_capacity((limit as usize).min(1024));
    page.extend(rows.skip(offset).take(limit as usize).cloned());
    page
}

#[async_trait]
impl RecordReader for Tables {
    async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>> {
        let state = self.state()?;
        let (table, _) = state.table(state.position(schema)?);
        Ok(table.live(id).cloned())
    }

    async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        let state = self.state()?;
        let (table, _) = state.table(state.position(schema)?);
        let mut rows: Vec<Record> = distinct(ids)
            .into_iter()
            .filter_map(|id| table.live(id).cloned())
            .collect();
        rows.sort_by_key(key_of);
        Ok(rows)
    }

    async fn find(
        &mut self,
        schema: &'static Schema,
        unique: usize,
        values: &[Value],
    ) -> Result<Option<Record>> {
        let state = self.state()?;
        let (table, _) = state.table(state.position(schema)?);
        Ok(table.by_unique(unique, values).cloned())
    }

    async fn get_related(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
    ) -> Result<Option<(Record, Vec<Option<Record>>)>> {
        let state = self.state()?;
        let (table, _) = state.table(state.position(schema)?);
        let Some(row) = table.live(id) else {
            return Ok(None);
        };
        let related = schema
            .references()
            .map(|(field, _, reference)| {
                let target = row.values[field].as_uuid()?;
                let (table, _) = state.table(state.position(reference.target()).ok()?);
                table.live(target).cloned()
            })
            .collect();
        Ok(Some((row.clone(), related)))
    }

    async fn list(
        &mut self,
        schema: &'static Schema,
        selection: &Selection,
    ) -> Result<Vec<Record>> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let newest = selection.order == Order::Newest;
        let (after, offset) = match selection.start {
            Start::Offset(offset) => (None, offset),
            Start::After(cursor) => (cursor.as_ref().map(key_of_cursor), 0),
        };
        Ok(
            match matching(state, position, &selection.conditions, after, newest) {
                Some(rows) => paged(rows, offset, selection.limit),
                None => Vec::new(),
            },
        )
    }

    async fn count(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<u64> {
        let state = self.state()?;
        let position = state.position(schema)?;
        if let [Condition::Search(query)] = conditions {
            let (table, _) = state.table(position);
            return Ok(table.containing_keys(query.folded()).count() as u64);
        }
        Ok(
            matching(state, position, conditions, None, false)
                .map_or(0, |rows| rows.count() as u64),
        )
    }

    async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool> {
        let state = self.state()?;
        let position = state.position(schema)?;
        Ok(matching(state, position, conditions, None, false)
            .is_some_and(|mut rows| rows.next().is_some()))
    }

    async fn search(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        page: Page,
    ) -> Result<SearchPage<Record>> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let offset = usize::try_from(page.offset()).unwrap_or(usize::MAX);
        let limit = page.limit().get() as usize;
        // A search and nothing else: the index's keys are the live matches, so only the page's
        // rows are read, and the others only counted.
        if let [Condition::Search(query)] = conditions {
            let (table, _) = state.table(position);
            let keys = table.containing_keys(query.folded());
            return Ok(page_and_total(keys, offset, limit, |key| table.at(key)));
        }
        let Some(rows) = matching(state, position, conditions, None, false) else {
            return Ok(SearchPage {
                items: Vec::new(),
                total: Total::Exact(0),
            });
        };
        Ok(page_and_total(rows, offset, limit, Some))
    }

    async fn tally(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        field: usize,
    ) -> Result<Vec<(Value, u64)>> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let mut tally: Vec<(Value, u64)> = Vec::with_capacity(8);
        for row in matching(state, position, conditions, None, false)
            .into_iter()
            .flatten()
        {
            let value = &row.values[field];
            match tally.iter_mut().find(|(v, _)| v == value) {
                Some((_, n)) => *n += 1,
                None => tally.push((value.clone(), 1)),
            }
        }
        Ok(tally)
    }

    async fn list_deleted(&mut self, schema: &'static Schema, page: Page) -> Result<Vec<Record>> {
        let state = self.state()?;
        let (table, _) = state.table(state.position(schema)?);
        let rows = table.all().filter(|row| !row.is_live());
        Ok(paged(rows, page.offset(), page.limit().get()))
    }
}

/// Inserts `rows` into the table at `position` of `state`: each row's references, then its
/// unique values. On an error, `state` may hold some of the rows: the caller throws it away.
fn insert_into(state: &mut State, position: usize, rows: &[Record]) -> Result<()> {
    for row in rows {
        let (_, entry) = state.table(position);
        state.require_references(entry, &row.values, None)?;
        state.put(position, row.clone())?;
    }
    Ok(())
}

/// The live row `id` of the table at `position`, or [`Error::NotFound`].
fn live_row(state: &State, position: usize, id: Uuid) -> Result<Record> {
    let (table, entry) = state.table(position);
    table
        .live(id)
        .cloned()
        .ok_or_else(|| Error::not_found(entry.schema.kind(), id))
}

/// The row `id` of the table at `position`, live or not, or [`Error::NotFound`].
fn any_row(state: &State, position: usize, id: Uuid) -> Result<Record> {
    let (table, entry) = state.table(position);
    table
        .any(id)
        .cloned()
        .ok_or_else(|| Error::not_found(entry.schema.kind(), id))
}

/// The fields `changes` sets.
fn set_fields(changes: &Changes) -> Vec<usize> {
    changes.sets.iter().map(|(f, _)| *f).collect()
}

#[async_trait]
impl RecordWriter for Tables {
    async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()> {
        if !events.is_empty() {
            let at = stockroom_core::time::now();
            self.state_mut()?.outbox.append(events, at);
        }
        Ok(())
    }

    fn own_events(&self) -> bool {
        self.own_events
    }

    async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>> {
        let position = self.state()?.position(schema)?;
        if let [row] = rows.as_slice() {
            // One row: its checks come before any change.
            insert_into(self.state_mut()?, position, std::slice::from_ref(row))?;
        } else {
            let mut next = self.state()?.clone();
            insert_into(&mut next, position, &rows)?;
            *self.state_mut()? = next;
        }
        Ok(rows)
    }

    async fn update(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        changes: &Changes,
        expected_version: Option<i64>,
    ) -> Result<Record> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let mut row = live_row(state, position, id)?;
        if let Some(expected) = expected_version {
            if expected != row.version {
                return Err(Error::stale_version(
                    schema.kind(),
                    id,
                    expected,
                    row.version,
                ));
            }
        }
        changes.apply_to(&mut row);
        let (_, entry) = state.table(position);
        state.require_references(entry, &row.values, Some(&set_fields(changes)))?;
        self.state_mut()?.put(position, row.clone())?;
        Ok(row)
    }

    async fn update_many(
        &mut self,
        schema: &'static Schema,
        ids: &[Uuid],
        changes: &Changes,
    ) -> Result<u64> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let (table, entry) = state.table(position);
        let live: Vec<Record> = distinct(ids)
            .into_iter()
            .filter_map(|id| table.live(id).cloned())
            .collect();
        let Some(first) = live.first() else {
            return Ok(0);
        };
        let mut changed = first.clone();
        changes.apply_to(&mut changed);
        state.require_references(entry, &changed.values, Some(&set_fields(changes)))?;
        let mut next = state.clone();
        for mut row in live.iter().cloned() {
            changes.apply_to(&mut row);
            next.put(position, row)?;
        }
        *self.state_mut()? = next;
        Ok(live.len() as u64)
    }

    async fn increment(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        field: usize,
        delta: i64,
        at: Timestamp,
    ) -> Result<Incremented> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let (table, _) = state.table(position);
        let Some(row) = table.live(id) else {
            return Ok(Incremented::NotLive);
        };
        let (min, max) = match schema.fields[field].ty {
            FieldType::Int { min, max } => (min, max),
            _ => {
                return Err(stockroom_core::schema::invalid(
                    schema,
                    "increment of a field that is not an integer",
                ))
            }
        };
        let current = row.values[field].as_int().unwrap_or(0);
        let Some(next) = current
            .checked_add(delta)
            .filter(|n| (min..=max).contains(n))
        else {
            return Ok(Incremented::OutOfRange { current });
        };
        let mut row = row.clone();
        row.values_mut()[field] = Value::Int(next);
        row.updated_at = at;
        row.version += 1;
        self.state_mut()?.put(position, row.clone())?;
        Ok(Incremented::Done(row))
    }

    async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        // The unit of work holds the only writer slot: every row it sees is already its own.
        let state = self.state()?;
        let (table, _) = state.table(state.position(schema)?);
        let mut ids = distinct(ids);
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .filter_map(|id| table.live(id).cloned())
            .collect())
    }

    async fn soft_delete(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        at: Timestamp,
    ) -> Result<bool> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let mut row = any_row(state, position, id)?;
        if !row.is_live() {
            return Ok(false);
        }
        row.deleted_at = Some(at);
        row.updated_at = at;
        row.version += 1;
        self.state_mut()?.put(position, row)?;
        Ok(true)
    }

    async fn restore(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp) -> Result<bool> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let mut row = any_row(state, position, id)?;
        if row.is_live() {
            return Ok(false);
        }
        row.deleted_at = None;
        row.updated_at = at;
        row.version += 1;
        self.state_mut()?.put(position, row)?;
        Ok(true)
    }

    async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()> {
        let position = self.state()?.position(schema)?;
        if self.state_mut()?.remove(position, id) {
            Ok(())
        } else {
            Err(Error::not_found(schema.kind(), id))
        }
    }

    async fn purge_deleted_before(
        &mut self,
        schema: &'static Schema,
        before: Timestamp,
    ) -> Result<u64> {
        let state = self.state()?;
        let position = state.position(schema)?;
        let (table, _) = state.table(position);
        let doomed: Vec<Uuid> = table
            .all()
            .filter(|row| row.deleted_at.is_some_and(|at| at < before))
            .map(|row| row.id)
            .collect();
        let state = self.state_mut()?;
        for &id in &doomed {
            state.remove(position, id);
        }
        Ok(doomed.len() as u64)
    }
}

#[async_trait]
impl StockMovementReader for Tables {
    async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>> {
        Ok(self.state()?.movements.get(id).cloned())
    }

    async fn by_idempotency_key(&mut self, key: &str) -> Result<Option<StockMovement>> {
        Ok(self.state()?.movements.by_key(key).cloned())
    }

    async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<StockMovement>> {
        let offset = usize::try_from(page.offset()).unwrap_or(usize::MAX);
        Ok(self
            .state()?
            .movements
            .of_product(product)
            .skip(offset)
            .take(page.limit().get() as usize)
            .cloned()
            .collect())
    }

    async fn count(&mut self) -> Result<u64> {
        Ok(self.state()?.movements.len() as u64)
    }
}

#[async_trait]
impl StockMovementRepository for Tables {
    async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement> {
        let row = movement.into_entity(stockroom_core::time::now());
        self.state_mut()?.movements.append(row.clone())?;
        Ok(row)
    }
}

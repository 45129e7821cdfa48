//! Everything the store holds: one [`Table`] per entity of the store's catalog and the ledger,
//! and the rules that span tables (references must be live; what a delete for good does to the
//! rows that refer to the deleted one), applied as each entity's declaration says.

use std::sync::Arc;

use stockroom_core::schema::{Catalog, Entry, OnDelete, Record, Schema, Value};
use stockroom_core::{EntityKind, Error, Result};
use uuid::Uuid;

use crate::ledger::Ledger;
use crate::outbox::Outbox;
use crate::table::Table;

/// Everything the store holds. Cloning it is O(number of entities): each table is persistent.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) catalog: Arc<Catalog>,
    /// One table per catalog entry, in the catalog's order.
    tables: Vec<Table>,
    pub(crate) movements: Ledger,
    pub(crate) outbox: Outbox,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("State");
        for (entry, table) in self.catalog.entries().iter().zip(&self.tables) {
            s.field(entry.schema.table, &table.len());
        }
        s.field("stock_movements", &self.movements.len())
            .field("stockroom_outbox", &self.outbox.len())
            .finish()
    }
}

impl State {
    /// An empty store of the entities of `catalog`.
    pub(crate) fn new(catalog: Arc<Catalog>) -> Self {
        let tables = catalog.entries().iter().map(Table::new).collect();
        Self {
            catalog,
            tables,
            movements: Ledger::default(),
            outbox: Outbox::default(),
        }
    }

    /// The position of `schema` in the catalog ([`Error::UnknownEntity`] when the store does
    /// not hold it).
    pub(crate) fn position(&self, schema: &'static Schema) -> Result<usize> {
        self.catalog.position(schema)
    }

    /// The table and catalog entry at `position`.
    pub(crate) fn table(&self, position: usize) -> (&Table, &Entry) {
        (&self.tables[position], &self.catalog.entries()[position])
    }

    /// Whether the row `id` of `schema` is live.
    pub(crate) fn is_live(&self, schema: &'static Schema, id: Uuid) -> bool {
        self.position(schema)
            .is_ok_and(|p| self.tables[p].live(id).is_some())
    }

    /// [`Error::NotFound`] for the first reference of `row` (in declaration order) whose row
    /// is not live; only the fields `fields` when given (the fields an update sets).
    pub(crate) fn require_references(
        &self,
        entry: &Entry,
        values: &[Value],
        fields: Option<&[usize]>,
    ) -> Result<()> {
        for (field, _, reference) in entry.schema.references() {
            if fields.is_some_and(|set| !set.contains(&field)) {
                continue;
            }
            if let Some(id) = values[field].as_uuid() {
                let target = reference.target();
                if !self.is_live(target, id) {
                    return Err(Error::not_found(EntityKind::new(target.name), id));
                }
            }
        }
        Ok(())
    }

    /// Writes `row` into the table at `position` (see [`Table::put`]).
    pub(crate) fn put(&mut self, position: usize, row: Record) -> Result<()> {
        let (table, entry) = (
            &mut self.tables[position],
            &self.catalog.entries()[position],
        );
        table.put(entry, row)
    }

    /// Deletes the row `id` of the table at `position` for good, and applies to the rows of
    /// the catalog's entities that refer to it what their declarations say. False when there
    /// is no such row.
    pub(crate) fn remove(&mut self, position: usize, id: Uuid) -> bool {
        let catalog = Arc::clone(&self.catalog);
        let entry = &catalog.entries()[position];
        if self.tables[position].take(entry, id).is_none() {
            return false;
        }
        for referrer in &entry.referrers {
            let at = catalog
                .position(referrer.schema)
                .expect("a referrer is in the catalog");
            let referring: Vec<Record> = self.tables[at]
                .referring(referrer.field, id, None, false)
                .expect("a referrer's field is a reference")
                .cloned()
                .collect();
            for mut row in referring {
                match referrer.on_delete {
                    OnDelete::SetNull => {
                        row.values_mut()[referrer.field] = Value::Null;
                        self.put(at, row)
                            .expect("forgetting a reference breaks no unique rule");
                    }
                    OnDelete::Cascade => {
                        self.remove(at, row.id);
                    }
                }
            }
        }
        true
    }
}

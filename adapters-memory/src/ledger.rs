//! The append-only stock ledger: movements by id, by idempotency key and by product.

use std::ops::Bound::Included;
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};
use stockroom_core::time::Timestamp;
use stockroom_core::{Constraint, Error, ProductId, Result, StockMovement, StockMovementId};

use crate::table::Key;

/// The id of a product, as bytes.
type ProductKey = [u8; 16];

/// The append-only stock ledger.
#[derive(Clone, Default)]
pub(crate) struct Ledger {
    rows: OrdMap<Key, Arc<StockMovement>>,
    created: HashMap<StockMovementId, Timestamp>,
    keys: HashMap<Arc<str>, StockMovementId>,
    /// `(product, key)` of every movement from or to the product.
    by_product: OrdSet<(ProductKey, Key)>,
}

impl Ledger {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn get(&self, id: StockMovementId) -> Option<&StockMovement> {
        let created_at = *self.created.get(&id)?;
        self.rows
            .get(&(created_at, *id.as_uuid().as_bytes()))
            .map(|row| &**row)
    }

    pub(crate) fn by_key(&self, key: &str) -> Option<&StockMovement> {
        self.get(*self.keys.get(&Arc::from(key))?)
    }

    /// The movements from or to `product`, in `(created_at, id)` order.
    pub(crate) fn of_product(
        &self,
        product: ProductId,
    ) -> impl Iterator<Item = &StockMovement> + '_ {
        let product = *product.as_uuid().as_bytes();
        let first = (product, (Timestamp::MIN_UTC, [0; 16]));
        let last = (product, (Timestamp::MAX_UTC, [u8::MAX; 16]));
        self.by_product
            .range((Included(first), Included(last)))
            .filter_map(|(_, key)| self.rows.get(key).map(|row| &**row))
    }

    /// Appends `row`; [`Constraint::IDEMPOTENCY_KEY`] conflict (nothing changed) when its key is
    /// taken.
    pub(crate) fn append(&mut self, row: StockMovement) -> Result<()> {
        if let Some(key) = &row.idempotency_key {
            let key = Arc::from(key.as_str());
            if self.keys.contains_key(&key) {
                return Err(Error::Conflict {
                    constraint: Constraint::IDEMPOTENCY_KEY,
                });
            }
            self.keys.insert(key, row.id);
        }
        let key = (row.created_at, *row.id.as_uuid().as_bytes());
        self.created.insert(row.id, row.created_at);
        for product in [row.source_id, row.target_id] {
            self.by_product.insert((*product.as_uuid().as_bytes(), key));
        }
        self.rows.insert(key, Arc::new(row));
        Ok(())
    }
}

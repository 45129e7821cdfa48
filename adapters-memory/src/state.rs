//! The data: one persistent table per entity, the ledger, and the per-entity rules
//! (uniqueness, references, cascades) of the shared semantics.
//!
//! Every structure here is made of `imbl` persistent maps, so cloning a [`State`] is O(1): a unit
//! of work works on its own clone, a savepoint is a clone, a read session holds a clone.

use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::{Arc, OnceLock};

use imbl::{HashMap, OrdMap, OrdSet};
use stockroom_core::time::Timestamp;
use stockroom_core::{
    Category, Constraint, Cursor, Entity, EntityId, EntityKind, Error, OnDelete, Product,
    ProductFilter, ProductId, Result, Review, StockMovement, StockMovementId, User,
};

/// The position of a row in the `(created_at, id)` order every list follows (a UUID orders
/// like its bytes).
pub(crate) type Key = (Timestamp, [u8; 16]);

/// The key a cursor points after.
pub(crate) fn key_of_cursor(cursor: &Cursor) -> Key {
    (cursor.created_at(), *cursor.id().as_bytes())
}

/// A value that must be unique among live rows, with the constraint that says so.
pub(crate) type UniqueKey = (Constraint, Arc<str>);

/// The id of the row another one belongs to (a review's product), as bytes.
pub(crate) type ParentKey = [u8; 16];

/// Everything the store holds.
#[derive(Clone, Default)]
pub(crate) struct State {
    pub(crate) products: Table<Product>,
    pub(crate) categories: Table<Category>,
    pub(crate) users: Table<User>,
    pub(crate) reviews: Table<Review>,
    pub(crate) movements: Ledger,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("products", &self.products.len())
            .field("categories", &self.categories.len())
            .field("users", &self.users.len())
            .field("reviews", &self.reviews.len())
            .field("movements", &self.movements.len())
            .finish()
    }
}

/// The rows of one entity, live and soft-deleted, in `(created_at, id)` order, with an index by
/// id, one of the unique values of the live rows, one of the rows by parent, and each row's
/// [`Row::document`] (made once per write, as the SQL adapters store a search column).
///
/// Rows are behind an `Arc` so that the copy-on-write of a shared map node copies pointers,
/// not rows.
pub(crate) struct Table<E: Row> {
    rows: OrdMap<Key, Arc<E>>,
    created: HashMap<E::Id, Timestamp>,
    unique: HashMap<UniqueKey, E::Id>,
    children: OrdSet<(ParentKey, Key)>,
    documents: HashMap<E::Id, Arc<str>>,
    /// The documents of the live rows laid end to end, built by a search that finds no usable
    /// [`base`](Self::base), and shared by every copy of this version of the table (a read
    /// session, the next unit of work) until the next write.
    index: Arc<OnceLock<Arc<DocumentIndex>>>,
    /// An index of an earlier version, still good for every row but the [`stale`](Self::stale)
    /// ones: a search scans it, skips those, and checks them one by one, so a write between two
    /// searches costs them a few checks rather than a rebuild.
    base: Option<Arc<DocumentIndex>>,
    /// The rows written since `base` was built (new, removed, or whose document or liveness
    /// changed), by key.
    stale: OrdSet<Key>,
}

impl<E: Row> Clone for Table<E> {
    fn clone(&self) -> Self {
        Self {
            rows: self.rows.clone(),
            created: self.created.clone(),
            unique: self.unique.clone(),
            children: self.children.clone(),
            documents: self.documents.clone(),
            index: Arc::clone(&self.index),
            base: self.base.clone(),
            stale: self.stale.clone(),
        }
    }
}

impl<E: Row> Default for Table<E> {
    fn default() -> Self {
        Self {
            rows: OrdMap::new(),
            created: HashMap::new(),
            unique: HashMap::new(),
            children: OrdSet::new(),
            documents: HashMap::new(),
            index: Arc::default(),
            base: None,
            stale: OrdSet::new(),
        }
    }
}

/// The documents of a table's live rows in `(created_at, id)` order, joined by NUL bytes (which
/// no document holds: inputs refuse control characters) into one buffer, so that a search is
/// one substring scan of contiguous memory instead of a lookup and a scan per row. It holds the
/// rows' keys, not the rows, so a write that changes no document and no row's liveness (a stock
/// change) keeps it.
pub(crate) struct DocumentIndex {
    text: Vec<u8>,
    /// Where each row's document starts in `text`.
    starts: Vec<usize>,
    keys: Vec<Key>,
}

impl DocumentIndex {
    /// The keys of the rows whose document contains `needle`, each once, in `(created_at, id)`
    /// order.
    fn containing<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = Key> + 'a {
        let mut last = None;
        memchr::memmem::find_iter(&self.text, needle.as_bytes()).filter_map(move |at| {
            let row = self.starts.partition_point(|&start| start <= at) - 1;
            if last == Some(row) {
                return None;
            }
            last = Some(row);
            Some(self.keys[row])
        })
    }
}

/// How many rows may be written since a search index was built before searches stop checking
/// them one by one and build a new index (or a sixteenth of the table, if more).
const MAX_STALE: usize = 64;

/// The keys of two ascending sequences, in ascending order (a key is in at most one of them).
fn merge_in_order(
    a: impl Iterator<Item = Key>,
    b: impl Iterator<Item = Key>,
) -> impl Iterator<Item = Key> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

pub(crate) fn key_of<E: Entity>(row: &E) -> Key {
    (row.created_at(), *row.id().into().as_bytes())
}

fn key_at<E: Entity>(created_at: Timestamp, id: E::Id) -> Key {
    (created_at, *id.into().as_bytes())
}

impl<E: Row> Table<E> {
    /// How many rows, live or not.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The row `id`, live or not.
    pub(crate) fn any(&self, id: E::Id) -> Option<&E> {
        let created_at = *self.created.get(&id)?;
        self.rows
            .get(&key_at::<E>(created_at, id))
            .map(|row| &**row)
    }

    /// The live row `id`.
    pub(crate) fn live(&self, id: E::Id) -> Option<&E> {
        self.any(id).filter(|row| row.is_live())
    }

    /// The live row holding a unique value.
    pub(crate) fn by_unique(&self, constraint: Constraint, value: &str) -> Option<&E> {
        let id = *self.unique.get(&(constraint, Arc::from(value)))?;
        self.live(id)
    }

    /// The [`Row::document`] of the row `id` as it was last written ("" for an entity without).
    pub(crate) fn document(&self, id: E::Id) -> &str {
        self.documents.get(&id).map_or("", |d| d)
    }

    /// The live rows whose [`Row::document`] contains `needle`, in `(created_at, id)` order:
    /// one scan of a [`DocumentIndex`]. That is this version's index if a search built it, else
    /// an earlier one with the rows written since checked one by one (merged in order), else
    /// this version's, built now.
    pub(crate) fn containing<'a>(
        &'a self,
        needle: &'a str,
    ) -> Box<dyn Iterator<Item = &'a E> + 'a> {
        let keys: Box<dyn Iterator<Item = Key> + 'a> = match (self.index.get(), &self.base) {
            (Some(index), _) => Box::new(index.containing(needle)),
            (None, Some(base)) => Box::new(merge_in_order(
                base.containing(needle)
                    .filter(move |key| !self.stale.contains(key)),
                self.stale
                    .iter()
                    .copied()
                    .filter(move |key| self.live_document_contains(key, needle)),
            )),
            (None, None) => {
                let index = self.index.get_or_init(|| Arc::new(self.build_index()));
                Box::new(index.containing(needle))
            }
        };
        Box::new(keys.filter_map(|key| self.rows.get(&key).map(|row| &**row)))
    }

    fn live_document_contains(&self, key: &Key, needle: &str) -> bool {
        self.rows
            .get(key)
            .is_some_and(|row| row.is_live() && self.document(row.id()).contains(needle))
    }

    /// Records that the row at `key` was written in a way a search sees (new, removed, another
    /// document or liveness): this version's index, if built, becomes the base with `key` stale;
    /// past [`MAX_STALE`] stale rows the base is dropped, and the next search builds anew.
    fn mark_searched_row_written(&mut self, key: Key) {
        if let Some(index) = self.index.get() {
            self.base = Some(Arc::clone(index));
            self.stale = OrdSet::new();
        }
        self.index = Arc::default();
        if self.base.is_none() {
            return;
        }
        self.stale.insert(key);
        if self.stale.len() > MAX_STALE.max(self.rows.len() / 16) {
            self.base = None;
            self.stale = OrdSet::new();
        }
    }

    fn build_index(&self) -> DocumentIndex {
        let mut index = DocumentIndex {
            text: Vec::new(),
            starts: Vec::new(),
            keys: Vec::new(),
        };
        for (key, row) in self.rows.iter().filter(|(_, row)| row.is_live()) {
            index.starts.push(index.text.len());
            index
                .text
                .extend_from_slice(self.document(row.id()).as_bytes());
            index.text.push(0);
            index.keys.push(*key);
        }
        index
    }

    /// Every row, live or not, in `(created_at, id)` order.
    pub(crate) fn all(&self) -> impl DoubleEndedIterator<Item = &E> + '_ {
        self.rows.values().map(|row| &**row)
    }

    /// The live rows in `(created_at, id)` order.
    pub(crate) fn live_rows(&self) -> impl DoubleEndedIterator<Item = &E> + '_ {
        self.all().filter(|row| row.is_live())
    }

    /// The live rows strictly after `after` in `(created_at, id)` order.
    pub(crate) fn live_after(&self, after: Key) -> impl Iterator<Item = &E> + '_ {
        self.rows
            .range((Excluded(after), Unbounded))
            .map(|(_, row)| &**row)
            .filter(|row| row.is_live())
    }

    /// The live rows that pass `filter`, in `(created_at, id)` order.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a E::Filter,
    ) -> impl Iterator<Item = &'a E> + 'a {
        self.live_rows().filter(|row| E::passes(filter, row, self))
    }

    /// The live rows strictly after `after` that pass `filter`, in `(created_at, id)` order.
    pub(crate) fn matching_after<'a>(
        &'a self,
        filter: &'a E::Filter,
        after: Key,
    ) -> impl Iterator<Item = &'a E> + 'a {
        self.live_after(after)
            .filter(|row| E::passes(filter, row, self))
    }

    /// The rows, live or not, whose [`Row::parent`] is `parent`, in `(created_at, id)` order.
    pub(crate) fn children(&self, parent: ParentKey) -> impl DoubleEndedIterator<Item = &E> + '_ {
        let first = (parent, (Timestamp::MIN_UTC, [0; 16]));
        let last = (parent, (Timestamp::MAX_UTC, [u8::MAX; 16]));
        self.children
            .range((Included(first), Included(last)))
            .filter_map(|(_, key)| self.rows.get(key).map(|row| &**row))
    }

    /// Inserts or replaces the row with `row`'s id, keeping the unique values of live rows
    /// unique. On [`Error::Conflict`] nothing changed.
    pub(crate) fn put(&mut self, row: E) -> Result<()> {
        let id = row.id();
        let live_keys = |row: &E| {
            if row.is_live() {
                row.unique_keys()
            } else {
                Vec::new()
            }
        };
        let new_keys = live_keys(&row);
        let old = self.any(id);
        debug_assert!(
            old.is_none_or(
                |old| old.created_at() == row.created_at() && old.parent() == row.parent()
            ),
            "a row's created_at and parent never change"
        );
        let is_new = old.is_none();
        let liveness_changed = old.is_some_and(|old| old.is_live() != row.is_live());
        let old_keys = old.map(live_keys).unwrap_or_default();
        if new_keys != old_keys {
            for key in &new_keys {
                if self.unique.get(key).is_some_and(|holder| *holder != id) {
                    return Err(Error::Conflict { constraint: key.0 });
                }
            }
            for key in old_keys {
                self.unique.remove(&key);
            }
            for key in new_keys {
                self.unique.insert(key, id);
            }
        }
        let key = key_of(&row);
        if is_new {
            self.created.insert(id, row.created_at());
            if let Some(parent) = row.parent() {
                self.children.insert((parent, key));
            }
        }
        let mut document_changed = false;
        if let Some(document) = row.document() {
            if self.documents.get(&id).is_none_or(|old| **old != *document) {
                document_changed = true;
                self.documents.insert(id, Arc::from(document));
            }
        }
        self.rows.insert(key, Arc::new(row));
        if is_new || liveness_changed || document_changed {
            self.mark_searched_row_written(key);
        }
        Ok(())
    }

    /// Removes the row `id` (not its dependants: see [`Row::remove`]).
    fn take(&mut self, id: E::Id) -> Option<Arc<E>> {
        let created_at = self.created.remove(&id)?;
        let key = key_at::<E>(created_at, id);
        let row = self.rows.remove(&key)?;
        self.documents.remove(&id);
        self.mark_searched_row_written(key);
        if row.is_live() {
            for unique in row.unique_keys() {
                self.unique.remove(&unique);
            }
        }
        if let Some(parent) = row.parent() {
            self.children.remove(&(parent, key));
        }
        Some(row)
    }
}

/// The append-only stock ledger.
#[derive(Clone, Default)]
pub(crate) struct Ledger {
    rows: OrdMap<Key, Arc<StockMovement>>,
    created: HashMap<StockMovementId, Timestamp>,
    keys: HashMap<Arc<str>, StockMovementId>,
    /// `(product, key)` of every movement from or to the product.
    by_product: OrdSet<(ParentKey, Key)>,
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

    /// Appends `row`; [`Constraint::IdempotencyKey`] conflict (nothing changed) when its key is
    /// taken.
    pub(crate) fn append(&mut self, row: StockMovement) -> Result<()> {
        if let Some(key) = &row.idempotency_key {
            let key = Arc::from(key.as_str());
            if self.keys.contains_key(&key) {
                return Err(Error::Conflict {
                    constraint: Constraint::IdempotencyKey,
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

/// Where the memory store keeps one entity: its table, and what the table indexes beside the
/// rows (the search document, the parent row). The entity's rules (creating, patching, unique
/// values, references, what a delete does to the rows that refer to it) are the core's
/// [`Entity`] methods.
pub(crate) trait Row: Entity {
    fn table(state: &State) -> &Table<Self>;
    fn table_mut(state: &mut State) -> &mut Table<Self>;

    /// Text derived from the row that filters read, kept by the table per write. An entity has
    /// one for every row or for none.
    fn document(&self) -> Option<String> {
        None
    }
    /// The row this one belongs to, indexed for [`Table::children`].
    fn parent(&self) -> Option<ParentKey> {
        None
    }
    /// Whether a live row of `table` passes `filter` (the core's [`Entity::matches`], unless
    /// the table keeps what it needs).
    fn passes(filter: &Self::Filter, row: &Self, _table: &Table<Self>) -> bool {
        row.matches(filter)
    }

    /// The unique values of the row, as the table indexes them.
    fn unique_keys(&self) -> Vec<UniqueKey> {
        self.unique_values()
            .into_iter()
            .map(|(constraint, value)| (constraint, Arc::from(value)))
            .collect()
    }

    /// Deletes the row `id` for good, with what that does to the rows that refer to it. False
    /// when there is no such row.
    fn remove(state: &mut State, id: Self::Id) -> bool {
        let removed = Self::table_mut(state).take(id).is_some();
        if removed {
            let target = EntityId::new(Self::KIND, id.into());
            for &kind in Self::REFERRED_BY {
                state.on_delete_of(kind, target);
            }
        }
        removed
    }
}

impl State {
    /// Whether the row `id`, of any kind, is live.
    pub(crate) fn is_live(&self, id: EntityId) -> bool {
        match id {
            EntityId::Product(id) => self.products.live(id).is_some(),
            EntityId::Category(id) => self.categories.live(id).is_some(),
            EntityId::User(id) => self.users.live(id).is_some(),
            EntityId::Review(id) => self.reviews.live(id).is_some(),
            _ => false,
        }
    }

    /// [`Error::NotFound`] for the first of `ids` that is not live.
    pub(crate) fn require_live(&self, ids: impl IntoIterator<Item = EntityId>) -> Result<()> {
        match ids.into_iter().find(|id| !self.is_live(*id)) {
            Some(missing) => Err(Error::not_found(missing.entity(), missing.as_uuid())),
            None => Ok(()),
        }
    }

    /// Applies to the rows of `kind` what the deletion for good of `target` does to them.
    fn on_delete_of(&mut self, kind: EntityKind, target: EntityId) {
        match kind {
            EntityKind::Product => self.apply_on_delete::<Product>(target),
            EntityKind::Category => self.apply_on_delete::<Category>(target),
            EntityKind::User => self.apply_on_delete::<User>(target),
            EntityKind::Review => self.apply_on_delete::<Review>(target),
            _ => {}
        }
    }

    fn apply_on_delete<D: Row>(&mut self, target: EntityId) {
        let affected: Vec<(D, OnDelete)> = D::table(self)
            .all()
            .filter_map(|row| Some((row.clone(), row.on_delete_of(target)?)))
            .collect();
        for (mut row, on_delete) in affected {
            match on_delete {
                OnDelete::SetNull => {
                    row.clear_reference(target);
                    D::table_mut(self)
                        .put(row)
                        .expect("unique values are unchanged");
                }
                OnDelete::Cascade => {
                    D::remove(self, row.id());
                }
            }
        }
    }
}

impl Row for Product {
    fn table(state: &State) -> &Table<Self> {
        &state.products
    }
    fn table_mut(state: &mut State) -> &mut Table<Self> {
        &mut state.products
    }
    fn document(&self) -> Option<String> {
        Some(self.search_document())
    }
    /// Reads the search document the table keeps instead of making it again.
    fn passes(filter: &ProductFilter, row: &Self, table: &Table<Self>) -> bool {
        filter.matches_with_document(row, || table.document(row.id))
    }
}

impl Row for Category {
    fn table(state: &State) -> &Table<Self> {
        &state.categories
    }
    fn table_mut(state: &mut State) -> &mut Table<Self> {
        &mut state.categories
    }
}

impl Row for User {
    fn table(state: &State) -> &Table<Self> {
        &state.users
    }
    fn table_mut(state: &mut State) -> &mut Table<Self> {
        &mut state.users
    }
}

impl Row for Review {
    fn table(state: &State) -> &Table<Self> {
        &state.reviews
    }
    fn table_mut(state: &mut State) -> &mut Table<Self> {
        &mut state.reviews
    }
    fn parent(&self) -> Option<ParentKey> {
        Some(*self.product_id.as_uuid().as_bytes())
    }
}

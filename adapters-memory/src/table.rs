//! One entity's rows, live and soft-deleted, with the indexes a read or a rule needs: by id,
//! by unique value among live rows, by the row each reference names, and the search documents.
//!
//! Every structure is an `imbl` persistent map, so cloning a [`Table`] is O(1): a unit of work
//! works on its own clone, a savepoint is a clone, a read session holds a clone.

use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::{Arc, OnceLock};

use either::Either;
use imbl::{HashMap, OrdMap, OrdSet};
use stockroom_core::schema::{search_document, Entry, Record, Value};
use stockroom_core::time::Timestamp;
use stockroom_core::{Constraint, Cursor, Error, Result};
use uuid::Uuid;

/// The position of a row in the `(created_at, id)` order every list follows (a UUID orders
/// like its bytes).
pub(crate) type Key = (Timestamp, [u8; 16]);

/// The key of a row.
pub(crate) fn key_of(row: &Record) -> Key {
    (row.created_at, *row.id.as_bytes())
}

/// The key a cursor points after.
pub(crate) fn key_of_cursor(cursor: &Cursor) -> Key {
    (cursor.created_at(), *cursor.id().as_bytes())
}

/// The values of a unique rule a live row holds: the rule's position and its values, joined by
/// U+001F (which no stored text holds: inputs refuse control characters).
type UniqueKey = (usize, Arc<str>);

/// The row a reference names and the key of the referring row.
type RefKey = ([u8; 16], Key);

/// The rows of one entity. Rows are behind an `Arc` so that the copy-on-write of a shared map
/// node copies pointers, not rows.
#[derive(Clone)]
pub(crate) struct Table {
    rows: OrdMap<Key, Arc<Record>>,
    created: HashMap<Uuid, Timestamp>,
    unique: HashMap<UniqueKey, Uuid>,
    /// Per reference field (in declaration order): the rows, live or not, by the row they name.
    /// It holds the rows themselves (shared with `rows`), so that reading a row's referrers (a
    /// product's reviews) looks nothing up.
    refs: Vec<OrdMap<RefKey, Arc<Record>>>,
    /// The positions of the reference fields, in declaration order.
    ref_fields: Arc<[usize]>,
    /// Each row's search document, made once per write (as the SQL adapters store a column).
    documents: HashMap<Uuid, Arc<str>>,
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

/// `rows`, or `rows` reversed when `newest`: one type for both directions, so that the caller
/// need not box it.
fn in_order<I: DoubleEndedIterator>(rows: I, newest: bool) -> Either<std::iter::Rev<I>, I> {
    if newest {
        Either::Left(rows.rev())
    } else {
        Either::Right(rows)
    }
}

/// The unique keys a live row holds, one per rule whose values are all present.
fn unique_keys(entry: &Entry, row: &Record) -> Vec<UniqueKey> {
    if !row.is_live() {
        return Vec::new();
    }
    entry
        .unique_fields
        .iter()
        .enumerate()
        .filter(|(_, fields)| fields.iter().all(|&f| !row.values[f].is_null()))
        .map(|(rule, fields)| {
            let mut key = String::new();
            for (i, &f) in fields.iter().enumerate() {
                if i > 0 {
                    key.push('\u{1f}');
                }
                key.push_str(&row.values[f].to_string());
            }
            (rule, Arc::from(key))
        })
        .collect()
}

/// The row a reference value names, as bytes.
fn target_of(value: &Value) -> Option<[u8; 16]> {
    value.as_uuid().map(|u| *u.as_bytes())
}

impl Table {
    /// An empty table of `entry`'s entity.
    pub(crate) fn new(entry: &Entry) -> Self {
        let ref_fields: Arc<[usize]> = entry.schema.references().map(|(i, _, _)| i).collect();
        Self {
            rows: OrdMap::new(),
            created: HashMap::new(),
            unique: HashMap::new(),
            refs: vec![OrdMap::new(); ref_fields.len()],
            ref_fields,
            documents: HashMap::new(),
            index: Arc::default(),
            base: None,
            stale: OrdSet::new(),
        }
    }

    /// How many rows, live or not.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The row `id`, live or not.
    pub(crate) fn any(&self, id: Uuid) -> Option<&Record> {
        let created_at = *self.created.get(&id)?;
        self.rows
            .get(&(created_at, *id.as_bytes()))
            .map(|row| &**row)
    }

    /// The live row `id`.
    pub(crate) fn live(&self, id: Uuid) -> Option<&Record> {
        self.any(id).filter(|row| row.is_live())
    }

    /// The live row holding `values` for the unique rule at `rule`.
    pub(crate) fn by_unique(&self, rule: usize, values: &[Value]) -> Option<&Record> {
        let mut key = String::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            key.push_str(&v.to_string());
        }
        let id = *self.unique.get(&(rule, Arc::from(key)))?;
        self.live(id)
    }

    /// Every row, live or not, in `(created_at, id)` order.
    pub(crate) fn all(&self) -> impl DoubleEndedIterator<Item = &Record> + '_ {
        self.rows.values().map(|row| &**row)
    }

    /// The live rows in `(created_at, id)` order, from `after` (exclusive) when given, and
    /// newest first when `newest`.
    pub(crate) fn live_rows(
        &self,
        after: Option<Key>,
        newest: bool,
    ) -> impl Iterator<Item = &Record> + '_ {
        let range = match (after, newest) {
            (None, _) => self.rows.range::<_, Key>(..),
            (Some(after), false) => self.rows.range((Excluded(after), Unbounded)),
            (Some(after), true) => self.rows.range((Unbounded, Excluded(after))),
        };
        let rows = range.map(|(_, row)| &**row).filter(|row| row.is_live());
        in_order(rows, newest)
    }

    /// The rows, live or not, whose reference field `field` names `target`, in `(created_at,
    /// id)` order, from `after` (exclusive) when given, newest first when `newest`. `None`
    /// when `field` is not a reference field.
    pub(crate) fn referring(
        &self,
        field: usize,
        target: Uuid,
        after: Option<Key>,
        newest: bool,
    ) -> Option<impl Iterator<Item = &Record> + '_> {
        let slot = self.ref_fields.iter().position(|&f| f == field)?;
        let target = *target.as_bytes();
        let first = (target, (Timestamp::MIN_UTC, [0; 16]));
        let last = (target, (Timestamp::MAX_UTC, [u8::MAX; 16]));
        let range = match (after, newest) {
            (None, _) => self.refs[slot].range((Included(first), Included(last))),
            (Some(after), false) => {
                self.refs[slot].range((Excluded((target, after)), Included(last)))
            }
            (Some(after), true) => {
                self.refs[slot].range((Included(first), Excluded((target, after))))
            }
        };
        let rows = range.map(|(_, row)| &**row);
        Some(in_order(rows, newest))
    }

    /// The search document of the row `id` as it was last written ("" for an entity without).
    pub(crate) fn document(&self, id: Uuid) -> &str {
        self.documents.get(&id).map_or("", |d| d)
    }

    /// The keys of the live rows whose search document contains `needle`, in `(created_at, id)`
    /// order: one scan of a [`DocumentIndex`]. That is this version's index if a search built
    /// it, else an earlier one with the rows written since checked one by one (merged in
    /// order), else this version's, built now. A key is looked up (see [`Table::at`]) only for
    /// the rows a caller keeps: counting the matches reads no row.
    pub(crate) fn containing_keys<'a>(
        &'a self,
        needle: &'a str,
    ) -> Box<dyn Iterator<Item = Key> + 'a> {
        match (self.index.get(), &self.base) {
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
        }
    }

    /// The live rows whose search document contains `needle`, in `(created_at, id)` order.
    pub(crate) fn containing<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = &'a Record> {
        self.containing_keys(needle).filter_map(|key| self.at(key))
    }

    /// The row at `key`, live or not.
    pub(crate) fn at(&self, key: Key) -> Option<&Record> {
        self.rows.get(&key).map(|row| &**row)
    }

    fn live_document_contains(&self, key: &Key, needle: &str) -> bool {
        self.rows
            .get(key)
            .is_some_and(|row| row.is_live() && self.document(row.id).contains(needle))
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
                .extend_from_slice(self.document(row.id).as_bytes());
            index.text.push(0);
            index.keys.push(*key);
        }
        index
    }

    /// Inserts or replaces the row with `row`'s id, keeping the unique values of live rows
    /// unique. On [`Error::Conflict`] (naming the first rule, in declaration order) nothing
    /// changed.
    pub(crate) fn put(&mut self, entry: &Entry, row: Record) -> Result<()> {
        let id = row.id;
        let old = self.any(id);
        debug_assert!(
            old.is_none_or(|old| old.created_at == row.created_at),
            "a row's created_at never changes"
        );
        let is_new = old.is_none();
        let liveness_changed = old.is_some_and(|old| old.is_live() != row.is_live());
        // Whether every one of `fields` holds what it held: then what is made of them (unique
        // keys, the search document) is what it was, and a write that changes other fields (a
        // stock change) does not make it again.
        let kept = |fields: &[usize]| {
            old.is_some_and(|old| fields.iter().all(|&f| old.values[f] == row.values[f]))
        };
        let old_refs: Vec<Option<[u8; 16]>> = match old {
            Some(old) => self
                .ref_fields
                .iter()
                .map(|&f| target_of(&old.values[f]))
                .collect(),
            None => vec![None; self.ref_fields.len()],
        };
        let unique_kept = !liveness_changed && entry.unique_fields.iter().all(|f| kept(f));
        let document_kept = kept(&entry.search_fields);
        if !unique_kept {
            let new_keys = unique_keys(entry, &row);
            let old_keys = old.map(|old| unique_keys(entry, old)).unwrap_or_default();
            for key in &new_keys {
                if self.unique.get(key).is_some_and(|holder| *holder != id) {
                    let rule = &entry.schema.unique[key.0];
                    return Err(Error::Conflict {
                        constraint: Constraint::of_rule(entry.schema, rule),
                    });
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
            self.created.insert(id, row.created_at);
        }
        let mut document_changed = false;
        if !entry.search_fields.is_empty() && !document_kept {
            let document = search_document(entry, &row.values);
            if self.documents.get(&id).is_none_or(|old| **old != *document) {
                document_changed = true;
                self.documents.insert(id, Arc::from(document));
            }
        }
        let row = Arc::new(row);
        for (slot, &field) in self.ref_fields.iter().enumerate() {
            let new = target_of(&row.values[field]);
            if let Some(old) = old_refs[slot].filter(|&old| Some(old) != new) {
                self.refs[slot].remove(&(old, key));
            }
            if let Some(new) = new {
                self.refs[slot].insert((new, key), Arc::clone(&row));
            }
        }
        self.rows.insert(key, row);
        if is_new || liveness_changed || document_changed {
            self.mark_searched_row_written(key);
        }
        Ok(())
    }

    /// Removes the row `id` (not the rows that refer to it: see `State::remove`).
    pub(crate) fn take(&mut self, entry: &Entry, id: Uuid) -> Option<Arc<Record>> {
        let created_at = self.created.remove(&id)?;
        let key = (created_at, *id.as_bytes());
        let row = self.rows.remove(&key)?;
        self.documents.remove(&id);
        self.mark_searched_row_written(key);
        for unique in unique_keys(entry, &row) {
            self.unique.remove(&unique);
        }
        for (slot, &field) in self.ref_fields.iter().enumerate() {
            if let Some(target) = target_of(&row.values[field]) {
                self.refs[slot].remove(&(target, key));
            }
        }
        Some(row)
    }
}

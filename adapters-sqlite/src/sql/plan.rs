//! The statements of every entity a store holds, built once from its declaration when the store
//! is built: a [`Plan`] per catalog entry, in the catalog's order, held by the store's
//! [`Plans`] (with the catalog itself) and shared by every connection.
//!
//! A plan holds the text of each statement whose text depends only on the entity (the point
//! read, the inserts, soft delete, restore, delete for good, purge, one lookup per unique rule,
//! the read with related rows, …) and the fragments the statements that depend on the call are
//! made of (a condition per field). `prepare_cached` finds each text's prepared statement in
//! the connection's cache.

use std::fmt::Write as _;

use rusqlite::Row;
use stockroom_core::schema::{tables, Catalog, Entry, FieldType, Record, Schema};
use stockroom_core::{Error, Result};

use super::codec::{Decode, RowReader};
use super::generic::placeholders;

/// The columns every record read selects after the id and the declared fields.
const BOOKKEEPING: &str = "created_at, updated_at, deleted_at, version";

/// The statements of every entity of a store, and the catalog they were built from.
pub(crate) struct Plans {
    catalog: Catalog,
    plans: Vec<Plan>,
}

impl std::fmt::Debug for Plans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plans")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Plans {
    /// The plans of every entity of `catalog`; `search_indexes` says, per entity, whether its
    /// table has a search index (missing entries: no).
    pub(crate) fn new(catalog: Catalog, search_indexes: &[bool]) -> Self {
        let plans = catalog
            .entries()
            .iter()
            .enumerate()
            .map(|(at, entry)| {
                let indexed = search_indexes.get(at).copied().unwrap_or(false);
                Plan::new(&catalog, entry, indexed)
            })
            .collect();
        Self { catalog, plans }
    }

    /// The position of `schema`'s plan ([`Error::UnknownEntity`] when the store does not hold
    /// it).
    pub(crate) fn position(&self, schema: &'static Schema) -> Result<usize> {
        self.catalog.position(schema)
    }

    /// The plan at `position`.
    pub(crate) fn plan(&self, position: usize) -> &Plan {
        &self.plans[position]
    }

    /// The catalog entry at `position`.
    pub(crate) fn entry(&self, position: usize) -> &Entry {
        &self.catalog.entries()[position]
    }

    /// Maps a rusqlite error, naming the rule of a unique index it broke.
    pub(crate) fn error(&self, error: rusqlite::Error) -> Error {
        crate::error::map_with(&self.catalog, error)
    }
}

/// A reference field of an entity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefField {
    /// The field's position.
    pub(crate) field: usize,
    /// The position of the referred entity's plan.
    pub(crate) target: usize,
}

/// The statements of one entity, built once.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The declaration.
    pub(crate) schema: &'static Schema,
    /// How each declared field is stored, in declaration order.
    pub(crate) decoders: Box<[Decode]>,
    /// Whether the table has a `search_text` column.
    pub(crate) searchable: bool,
    /// The table's substring index (`search_index.rs`), if it has one.
    pub(crate) search_index: Option<String>,
    /// The reference fields, in declaration order.
    pub(crate) references: Box<[RefField]>,
    /// How many columns a read selects: the id, the fields and the bookkeeping.
    pub(crate) width: usize,
    /// How many columns an insert writes: those a read selects and `search_text`, if any.
    pub(crate) write_width: usize,
    /// `id, fields…, created_at, updated_at, deleted_at, version`.
    pub(crate) columns: String,
    /// The live row by id: the point read.
    pub(crate) get: String,
    /// The row by id, live or not.
    pub(crate) get_any: String,
    /// The live rows among some ids: this, then as many `?` as ids, then [`GET_MANY_END`].
    pub(crate) get_many: String,
    /// Whether the row by id is live (for the rows that refer to this entity).
    pub(crate) live: String,
    /// Whether a row, live or not, has the id.
    pub(crate) exists_any: String,
    /// One row's insert.
    pub(crate) insert_one: String,
    /// The insert of several rows, before their values.
    pub(crate) insert_into: String,
    /// One row's `(?, …)` in a multi-row insert.
    pub(crate) insert_row: String,
    /// Every column of a row (but `search_text`) written back by id, and the same with its
    /// `search_text`.
    pub(crate) write_back: String,
    /// [`write_back`](Self::write_back) with `search_text`.
    pub(crate) write_back_searched: String,
    pub(crate) soft_delete: String,
    pub(crate) restore: String,
    pub(crate) hard_delete: String,
    pub(crate) purge: String,
    pub(crate) list_deleted: String,
    /// Per unique rule: the live row holding its values.
    pub(crate) find: Box<[String]>,
    /// Per unique rule: whether a live row other than the given id holds its values.
    pub(crate) taken: Box<[String]>,
    /// The live row by id with each referred row, if live: one `LEFT JOIN` per reference.
    pub(crate) related: String,
    /// Per field: its condition in a `WHERE` (` AND field = ?`, and for a reference, that the
    /// row it names is live: ` AND EXISTS (… id = ? …)`, the value bound again).
    pub(crate) eq: Box<[String]>,
    /// Per field: for an integer field, its conditional increment (`?1` delta, `?2` time, `?3`
    /// id, `?4`..`?5` the range the current value must be in), returning the row.
    pub(crate) increment: Box<[Option<String>]>,
}

/// What follows the ids of [`Plan::get_many`].
pub(crate) const GET_MANY_END: &str = ") ORDER BY created_at, id";

impl Plan {
    fn new(catalog: &Catalog, entry: &Entry, search_indexed: bool) -> Self {
        let schema = entry.schema;
        let table = schema.table;
        let field_names: Vec<&str> = schema.fields.iter().map(|f| f.name).collect();
        let columns = select_list(schema, None);
        let searchable = schema.search.is_some();
        let write_columns = tables::columns(schema)
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>();
        let write_width = write_columns.len();
        let references: Box<[RefField]> = schema
            .references()
            .map(|(field, _, reference)| RefField {
                field,
                target: catalog
                    .position(reference.target())
                    .expect("a checked catalog holds every referred entity"),
            })
            .collect();
        let select_live = format!("SELECT {columns} FROM {table} WHERE deleted_at IS NULL");
        let mut sets = String::new();
        for name in &field_names {
            let _ = write!(sets, "{name} = ?, ");
        }
        sets.push_str("updated_at = ?, version = ?");
        let where_all = |fields: &[&str]| {
            fields
                .iter()
                .map(|f| format!("{f} = ?"))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let row_params = format!("({})", placeholders(write_width));
        let insert_into = format!("INSERT INTO {table} ({}) VALUES ", write_columns.join(", "));
        let related = related_sql(catalog, schema);
        Plan {
            schema,
            decoders: schema.fields.iter().map(Decode::from).collect(),
            searchable,
            search_index: search_indexed.then(|| crate::search_index::name(table)),
            width: field_names.len() + 5,
            write_width,
            get: format!("{select_live} AND id = ?"),
            get_any: format!("SELECT {columns} FROM {table} WHERE id = ?"),
            get_many: format!("{select_live} AND id IN ("),
            live: format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ? AND deleted_at IS NULL)"
            ),
            exists_any: format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = ?)"),
            insert_one: format!("{insert_into}{row_params}"),
            insert_into,
            insert_row: row_params,
            write_back: format!("UPDATE {table} SET {sets} WHERE id = ?"),
            write_back_searched: format!("UPDATE {table} SET {sets}, search_text = ? WHERE id = ?"),
            soft_delete: format!(
                "UPDATE {table} SET deleted_at = ?1, updated_at = ?1, version = version + 1 \
                 WHERE id = ?2 AND deleted_at IS NULL"
            ),
            restore: format!(
                "UPDATE {table} SET deleted_at = NULL, updated_at = ?1, version = version + 1 \
                 WHERE id = ?2 AND deleted_at IS NOT NULL"
            ),
            hard_delete: format!("DELETE FROM {table} WHERE id = ?"),
            purge: format!("DELETE FROM {table} WHERE deleted_at IS NOT NULL AND deleted_at < ?"),
            list_deleted: format!(
                "SELECT {columns} FROM {table} WHERE deleted_at IS NOT NULL \
                 ORDER BY created_at, id LIMIT ? OFFSET ?"
            ),
            find: schema
                .unique
                .iter()
                .map(|u| format!("{select_live} AND {}", where_all(u.fields)))
                .collect(),
            taken: schema
                .unique
                .iter()
                .map(|u| {
                    format!(
                        "SELECT EXISTS (SELECT 1 FROM {table} WHERE {} \
                         AND deleted_at IS NULL AND id <> ?)",
                        where_all(u.fields)
                    )
                })
                .collect(),
            related,
            eq: schema
                .fields
                .iter()
                .map(|f| match f.ty {
                    FieldType::Ref(reference) => format!(
                        " AND {} = ? AND EXISTS (SELECT 1 FROM {} WHERE id = ? \
                         AND deleted_at IS NULL)",
                        f.name,
                        reference.target().table
                    ),
                    _ => format!(" AND {} = ?", f.name),
                })
                .collect(),
            increment: schema
                .fields
                .iter()
                .map(|f| match f.ty {
                    FieldType::Int { .. } => {
                        // A nullable counter counts from 0, as the memory store's does.
                        let current = if f.nullable {
                            format!("coalesce({}, 0)", f.name)
                        } else {
                            f.name.to_owned()
                        };
                        Some(format!(
                            "UPDATE {table} SET {name} = {current} + ?1, updated_at = ?2, \
                             version = version + 1 WHERE id = ?3 AND deleted_at IS NULL \
                             AND {current} BETWEEN ?4 AND ?5 RETURNING {columns}",
                            name = f.name
                        ))
                    }
                    _ => None,
                })
                .collect(),
            references,
            columns,
        }
    }

    /// The record a row holds from column `at` on (the columns of [`columns`](Self::columns)).
    pub(crate) fn read(&self, row: &Row<'_>, at: usize) -> rusqlite::Result<Record> {
        RowReader::new(row, at).record(&self.decoders)
    }

    /// The insert of `rows` rows.
    pub(crate) fn insert_sql(&self, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.insert_into.len() + rows * (self.insert_row.len() + 2));
        sql.push_str(&self.insert_into);
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&self.insert_row);
        }
        sql
    }

    /// The name of field `field`'s column.
    pub(crate) fn column(&self, field: usize) -> &'static str {
        self.schema.fields[field].name
    }

    /// Whether field `field` refers to another row.
    pub(crate) fn is_reference(&self, field: usize) -> bool {
        self.references.iter().any(|r| r.field == field)
    }
}

/// `id, fields…, created_at, updated_at, deleted_at, version`, each prefixed with `alias.` when
/// given.
fn select_list(schema: &Schema, alias: Option<&str>) -> String {
    let mut list = String::new();
    let names = std::iter::once("id")
        .chain(schema.fields.iter().map(|f| f.name))
        .chain(BOOKKEEPING.split(", "));
    for (i, name) in names.enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        if let Some(alias) = alias {
            list.push_str(alias);
            list.push('.');
        }
        list.push_str(name);
    }
    list
}

/// The live row `?` of `schema`'s table and, per reference field in declaration order, the
/// live row it refers to (all `NULL` when there is none), in one statement.
fn related_sql(catalog: &Catalog, schema: &Schema) -> String {
    let mut select = select_list(schema, Some("s"));
    let mut joins = String::new();
    for (i, (_, field, reference)) in schema.references().enumerate() {
        let target = reference.target();
        debug_assert!(catalog.position(target).is_ok());
        let alias = format!("r{i}");
        select.push_str(", ");
        select.push_str(&select_list(target, Some(&alias)));
        let _ = write!(
            joins,
            " LEFT JOIN {} {alias} ON {alias}.id = s.{} AND {alias}.deleted_at IS NULL",
            target.table, field.name
        );
    }
    format!(
        "SELECT {select} FROM {} s{joins} WHERE s.id = ? AND s.deleted_at IS NULL",
        schema.table
    )
}

#[cfg(test)]
mod tests {
    use stockroom_core::{Entity, Product};

    use super::*;

    /// The statements are the entity's own, each written once from the declaration: the
    /// product's, which the stock move and the benchmark's baseline also spell out by hand.
    #[test]
    fn a_products_statements_are_built_from_its_declaration() {
        let plans = Plans::new(Catalog::new(&[]).unwrap(), &[]);
        let plan = plans.plan(plans.position(Product::schema()).unwrap());
        let columns = "id, name, slug, sku, description, status, stock, category_id, \
                       created_by, created_at, updated_at, deleted_at, version";
        assert_eq!(plan.columns, columns);
        assert_eq!(
            plan.get,
            format!("SELECT {columns} FROM products WHERE deleted_at IS NULL AND id = ?")
        );
        assert_eq!(
            plan.insert_one,
            format!(
                "INSERT INTO products ({columns}, search_text) VALUES ({})",
                placeholders(14)
            )
        );
        assert_eq!((plan.width, plan.write_width), (13, 14));
        assert_eq!(
            plan.related,
            format!(
                "SELECT {}, {}, {} FROM products s \
                 LEFT JOIN categories r0 ON r0.id = s.category_id AND r0.deleted_at IS NULL \
                 LEFT JOIN users r1 ON r1.id = s.created_by AND r1.deleted_at IS NULL \
                 WHERE s.id = ? AND s.deleted_at IS NULL",
                select_list(Product::schema(), Some("s")),
                "r0.id, r0.name, r0.slug, r0.created_at, r0.updated_at, r0.deleted_at, r0.version",
                "r1.id, r1.email, r1.display_name, r1.created_at, r1.updated_at, r1.deleted_at, \
                 r1.version",
            )
        );
        assert_eq!(
            plan.eq[6],
            " AND category_id = ? AND EXISTS (SELECT 1 FROM categories WHERE id = ? \
             AND deleted_at IS NULL)"
        );
        assert!(plan.increment[5].is_some() && plan.increment[0].is_none());
    }
}

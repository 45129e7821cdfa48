//! The statements of every entity a store holds, written once per catalog entry from its
//! declaration when the store is built ([`Plans::new`]) and shared by every session of the
//! store: an operation on any entity looks its plan up by the catalog's position and binds
//! values to a text it did not have to build. Statements whose text depends on the call (the
//! conditions of a list, the fields an update sets) are written per call in [`crate::sql`].
//!
//! Every read selects the same columns in the same order (`id`, the declared fields,
//! `created_at`, `updated_at`, `deleted_at`, `version`: [`Plan::columns`]) and decodes them by
//! position ([`crate::codec::decode_record`]). The search document (`search_text`, for an entity
//! with a [`Search`](stockroom_core::schema::Search)) is written, never read.
//!
//! The SQL is the subset CockroachDB and YugabyteDB also run (see `crate::engine`). Names
//! come from checked declarations (identifiers that are not SQL keywords), so they are written
//! unquoted. Aliases: `t` the entity's row, `o` another row of its table, `x` a referenced row,
//! `u` a row of an `UNNEST`, `r0`, `r1`, … the related rows of `get_related`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use stockroom_core::schema::{Catalog, Entry, FieldType, Schema, Storage};
use stockroom_core::Result;

use crate::codec::sql_type;

/// The plans of every entity of a store's catalog, in the catalog's order.
pub(crate) struct Plans {
    /// The store's entities.
    pub(crate) catalog: Catalog,
    /// One plan per catalog entry, at the entry's position.
    entries: Vec<Plan>,
}

impl std::fmt::Debug for Plans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|p| p.schema.name))
            .finish()
    }
}

impl Plans {
    /// The plans of every entity of `catalog`.
    pub(crate) fn new(catalog: Catalog) -> Self {
        let entries = catalog
            .entries()
            .iter()
            .enumerate()
            .map(|(position, entry)| Plan::new(entry, position, &catalog))
            .collect();
        Self { catalog, entries }
    }

    /// The plan of `schema`, or [`Error::UnknownEntity`](stockroom_core::Error::UnknownEntity)
    /// when the store does not hold it.
    pub(crate) fn of(&self, schema: &'static Schema) -> Result<&Plan> {
        Ok(&self.entries[self.catalog.position(schema)?])
    }

    /// The plan at `position` of the catalog.
    pub(crate) fn at(&self, position: usize) -> &Plan {
        &self.entries[position]
    }

    /// The catalog entry of `plan`.
    pub(crate) fn entry(&self, plan: &Plan) -> &Entry {
        &self.catalog.entries()[plan.position]
    }
}

/// A reference field of an entity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ref {
    /// The field's position.
    pub(crate) field: usize,
    /// The referred entity's table.
    pub(crate) target: &'static str,
    /// The referred entity's position in the catalog.
    pub(crate) target_position: usize,
}

/// An integer field's increment: the conditional update and the follow-up read.
#[derive(Debug)]
pub(crate) struct Increment {
    /// Adds `$2` to the live row `$1`'s field, at `$3`, when the field is in `$4..=$5` (the
    /// declared range shifted by `-$2`, so that the sum cannot leave it nor overflow);
    /// `RETURNING` the row.
    pub(crate) update: Arc<str>,
    /// The field of the live row `$1`.
    pub(crate) current: Arc<str>,
    /// The declared range.
    pub(crate) min: i64,
    /// The declared range.
    pub(crate) max: i64,
}

/// The statements of one entity, and what of its declaration they are written from.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The entity's position in the catalog.
    pub(crate) position: usize,
    /// The declaration.
    pub(crate) schema: &'static Schema,
    /// Its table.
    pub(crate) table: &'static str,
    /// Each field's storage class, in declaration order.
    pub(crate) storages: Vec<Storage>,
    /// For each unique rule, the positions of its fields.
    pub(crate) unique_fields: Vec<Vec<usize>>,
    /// The fields the search document is made of; empty without one.
    pub(crate) search_fields: Vec<usize>,
    /// Whether the table has a `search_text` column.
    pub(crate) searchable: bool,
    /// The reference fields, in declaration order.
    pub(crate) references: Vec<Ref>,
    /// The columns every read selects, in order, unqualified.
    pub(crate) columns: String,
    /// The live row `$1`.
    pub(crate) get: Arc<str>,
    /// The live rows among `$1`, in `(created_at, id)` order.
    pub(crate) get_many: Arc<str>,
    /// The live row holding `$1`, `$2`, … for the unique rule at each position.
    pub(crate) find: Vec<Arc<str>>,
    /// The live row `$1` and, per reference field, the live row it names (its columns follow
    /// the row's, or are NULL).
    pub(crate) get_related: Arc<str>,
    /// A page (`LIMIT $1 OFFSET $2`) of the soft-deleted rows.
    pub(crate) list_deleted: Arc<str>,
    /// The live rows among `$1`, locked, in id order.
    pub(crate) lock: Arc<str>,
    /// Inserts one row (`$1` id, the fields, then `created_at`, `updated_at`, `version` and the
    /// search document) if every reference is live; nothing when a unique value or the id is
    /// taken (`ON CONFLICT DO NOTHING`).
    pub(crate) insert: Arc<str>,
    /// The same for rows of arrays (one per column of [`Plan::insert`], in its order),
    /// `RETURNING id` of each row that went in.
    pub(crate) insert_many: Arc<str>,
    /// Binary `COPY` of the columns of [`Plan::insert`], in its order.
    pub(crate) copy: Arc<str>,
    /// Whether a row among the arrays `$1`, … (one per reference field, in declaration order)
    /// is not a live row of its entity; `None` for an entity without references.
    pub(crate) dead_references: Option<Arc<str>>,
    /// Why a row was not inserted, as booleans by position: per reference field whether it
    /// names a row that is not live, per unique rule whether a live row holds its values,
    /// whether a row has its id. `$1` is the id, then the values of
    /// [`Plan::why_not_inserted_fields`].
    pub(crate) why_not_inserted: Arc<str>,
    /// The fields bound to [`Plan::why_not_inserted`], after the id.
    pub(crate) why_not_inserted_fields: Vec<usize>,
    /// Soft-deletes the live row `$1` at `$2`.
    pub(crate) soft_delete: Arc<str>,
    /// Whether a row, live or not, has the id `$1`.
    pub(crate) exists_any: Arc<str>,
    /// Brings back the deleted row `$1` at `$2` unless a live row holds one of its unique
    /// values.
    pub(crate) restore: Arc<str>,
    /// Of the row `$1`: whether it is deleted, then per unique rule whether a live row holds
    /// its values; no row when there is no row `$1`.
    pub(crate) why_not_restored: Arc<str>,
    /// Deletes the row `$1` for good.
    pub(crate) hard_delete: Arc<str>,
    /// Deletes the rows among `$1` for good.
    pub(crate) delete_many: Arc<str>,
    /// Deletes for good the rows soft-deleted before `$1`.
    pub(crate) purge: Arc<str>,
    /// The increment of each integer field, by position (`None` for other fields).
    pub(crate) increments: Vec<Option<Increment>>,
    /// The width of each integer column of the live table as `COPY` must write it, learned at
    /// the first `COPY` (see `crate::copy`).
    pub(crate) copy_layout: OnceLock<Option<crate::copy::Layout>>,
}

/// The columns every read selects, each prefixed with `alias` (`"t."`, or nothing).
fn read_columns(schema: &Schema, alias: &str) -> String {
    let mut columns = format!("{alias}id");
    for field in schema.fields {
        let _ = write!(columns, ", {alias}{}", field.name);
    }
    for name in ["created_at", "updated_at", "deleted_at", "version"] {
        let _ = write!(columns, ", {alias}{name}");
    }
    columns
}

/// The columns an insert writes, in order: `id`, the fields, the bookkeeping and, for a
/// searchable entity, `search_text`.
fn insert_columns(schema: &Schema) -> Vec<&'static str> {
    let mut columns = vec!["id"];
    columns.extend(schema.fields.iter().map(|f| f.name));
    columns.extend(["created_at", "updated_at", "version"]);
    if schema.search.is_some() {
        columns.push("search_text");
    }
    columns
}

/// `EXISTS` a live row of `table` with id `id` (an SQL expression).
fn live(table: &str, id: &str) -> String {
    format!("EXISTS (SELECT 1 FROM {table} x WHERE x.id = {id} AND x.deleted_at IS NULL)")
}

impl Plan {
    fn new(entry: &Entry, position: usize, catalog: &Catalog) -> Self {
        let schema = entry.schema;
        let table = schema.table;
        let columns = read_columns(schema, "");
        let select = |condition: &str| format!("SELECT {columns} FROM {table} WHERE {condition}");
        let references: Vec<Ref> = schema
            .references()
            .map(|(field, _, reference)| {
                let target = reference.target();
                Ref {
                    field,
                    target: target.table,
                    target_position: catalog
                        .position(target)
                        .expect("a checked catalog holds every referred entity"),
                }
            })
            .collect();
        let storages: Vec<Storage> = schema.fields.iter().map(|f| f.ty.storage()).collect();
        let inserted = insert_columns(schema);

        // One row: `$1` id, `$2`… the fields, then created_at, updated_at, version, search_text.
        let params: Vec<String> = (1..=inserted.len()).map(|i| format!("${i}")).collect();
        let mut insert = format!(
            "INSERT INTO {table} ({}) SELECT {}",
            inserted.join(", "),
            params.join(", ")
        );
        for (i, r) in references.iter().enumerate() {
            let p = &params[1 + r.field];
            insert.push_str(if i == 0 { " WHERE " } else { " AND " });
            if schema.fields[r.field].nullable {
                let _ = write!(insert, "({p}::uuid IS NULL OR {})", live(r.target, p));
            } else {
                insert.push_str(&live(r.target, p));
            }
        }
        insert.push_str(" ON CONFLICT DO NOTHING");

        // Rows of arrays, one per inserted column.
        let mut types = vec!["uuid"];
        types.extend(storages.iter().map(|&s| sql_type(s)));
        types.extend(["timestamptz", "timestamptz", "bigint"]);
        if schema.search.is_some() {
            types.push("text");
        }
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
            .collect();
        let from_unnest: Vec<String> = inserted.iter().map(|c| format!("u.{c}")).collect();
        let mut insert_many = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM UNNEST({}) AS u({})",
            inserted.join(", "),
            from_unnest.join(", "),
            arrays.join(", "),
            inserted.join(", ")
        );
        for (i, r) in references.iter().enumerate() {
            let column = format!("u.{}", schema.fields[r.field].name);
            insert_many.push_str(if i == 0 { " WHERE " } else { " AND " });
            if schema.fields[r.field].nullable {
                let _ = write!(
                    insert_many,
                    "({column} IS NULL OR {})",
                    live(r.target, &column)
                );
            } else {
                insert_many.push_str(&live(r.target, &column));
            }
        }
        insert_many.push_str(" ON CONFLICT DO NOTHING RETURNING id");

        let copy = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            inserted.join(", ")
        );
        let dead_references = (!references.is_empty()).then(|| {
            let checks: Vec<String> = references
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    format!(
                        "EXISTS (SELECT 1 FROM unnest(${}::uuid[]) AS u(id) WHERE NOT {})",
                        i + 1,
                        live(r.target, "u.id")
                    )
                })
                .collect();
            Arc::from(format!("SELECT {}", checks.join(" OR ")))
        });

        // Why an insert changed nothing: `$1` the id, then each field it needs, once.
        let mut why_not_inserted_fields: Vec<usize> = Vec::new();
        let mut param_of = HashMap::new();
        let mut param = |field: usize, fields: &mut Vec<usize>| -> String {
            let p = param_of.entry(field).or_insert_with(|| {
                fields.push(field);
                fields.len() + 1
            });
            format!("${p}")
        };
        let mut why = Vec::new();
        for r in &references {
            let p = param(r.field, &mut why_not_inserted_fields);
            why.push(format!(
                "({p}::uuid IS NOT NULL AND NOT {})",
                live(r.target, &p)
            ));
        }
        for fields in &entry.unique_fields {
            let mut matches = Vec::new();
            for &f in fields {
                let p = param(f, &mut why_not_inserted_fields);
                matches.push(format!("o.{} = {p}", schema.fields[f].name));
            }
            why.push(format!(
                "EXISTS (SELECT 1 FROM {table} o WHERE {} AND o.deleted_at IS NULL)",
                matches.join(" AND ")
            ));
        }
        why.push(format!("EXISTS (SELECT 1 FROM {table} o WHERE o.id = $1)"));
        let why_not_inserted = format!("SELECT {}", why.join(", "));

        // Restore, unless a live row holds the row's values of a unique rule.
        let same_values: Vec<String> = entry
            .unique_fields
            .iter()
            .map(|fields| {
                let matches: Vec<String> = fields
                    .iter()
                    .map(|&f| {
                        let name = schema.fields[f].name;
                        format!("o.{name} = t.{name}")
                    })
                    .collect();
                format!(
                    "EXISTS (SELECT 1 FROM {table} o WHERE {} AND o.deleted_at IS NULL)",
                    matches.join(" AND ")
                )
            })
            .collect();
        let mut restore = format!(
            "UPDATE {table} AS t SET deleted_at = NULL, updated_at = $2, version = t.version + 1 \
             WHERE t.id = $1 AND t.deleted_at IS NOT NULL"
        );
        for taken in &same_values {
            let _ = write!(restore, " AND NOT {taken}");
        }
        let mut why_not_restored = String::from("SELECT t.deleted_at IS NOT NULL");
        for taken in &same_values {
            let _ = write!(why_not_restored, ", {taken}");
        }
        let _ = write!(why_not_restored, " FROM {table} t WHERE t.id = $1");

        // Related rows: one LEFT JOIN per reference field, live rows only.
        let mut get_related = format!("SELECT {}", read_columns(schema, "t."));
        let mut joins = String::new();
        for (i, r) in references.iter().enumerate() {
            let target = catalog.entries()[r.target_position].schema;
            let _ = write!(get_related, ", {}", read_columns(target, &format!("r{i}.")));
            let _ = write!(
                joins,
                " LEFT JOIN {} r{i} ON r{i}.id = t.{} AND r{i}.deleted_at IS NULL",
                r.target, schema.fields[r.field].name
            );
        }
        let _ = write!(
            get_related,
            " FROM {table} t{joins} WHERE t.id = $1 AND t.deleted_at IS NULL"
        );

        let increments = schema
            .fields
            .iter()
            .map(|field| match field.ty {
                FieldType::Int { min, max } => {
                    let name = field.name;
                    // A missing value counts as 0, as on the other backends.
                    let value = if field.nullable {
                        format!("COALESCE({name}, 0)")
                    } else {
                        name.to_owned()
                    };
                    Some(Increment {
                        update: Arc::from(format!(
                            "UPDATE {table} SET {name} = {value} + $2, updated_at = $3, \
                             version = version + 1 WHERE id = $1 AND deleted_at IS NULL \
                             AND {value} BETWEEN $4 AND $5 RETURNING {columns}"
                        )),
                        current: Arc::from(format!(
                            "SELECT {value} FROM {table} WHERE id = $1 AND deleted_at IS NULL"
                        )),
                        min,
                        max,
                    })
                }
                _ => None,
            })
            .collect();

        let find = entry
            .unique_fields
            .iter()
            .map(|fields| {
                let matches: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, &f)| format!("{} = ${}", schema.fields[f].name, i + 1))
                    .collect();
                Arc::from(select(&format!(
                    "{} AND deleted_at IS NULL",
                    matches.join(" AND ")
                )))
            })
            .collect();

        Self {
            position,
            schema,
            table,
            unique_fields: entry.unique_fields.clone(),
            search_fields: entry.search_fields.clone(),
            searchable: schema.search.is_some(),
            get: Arc::from(select("id = $1 AND deleted_at IS NULL")),
            get_many: Arc::from(select(
                "id = ANY($1) AND deleted_at IS NULL ORDER BY created_at, id",
            )),
            find,
            get_related: Arc::from(get_related),
            list_deleted: Arc::from(select(
                "deleted_at IS NOT NULL ORDER BY created_at, id LIMIT $1 OFFSET $2",
            )),
            lock: Arc::from(select(
                "id = ANY($1) AND deleted_at IS NULL ORDER BY id FOR UPDATE",
            )),
            insert: Arc::from(insert),
            insert_many: Arc::from(insert_many),
            copy: Arc::from(copy),
            dead_references,
            why_not_inserted: Arc::from(why_not_inserted),
            why_not_inserted_fields,
            soft_delete: Arc::from(format!(
                "UPDATE {table} SET deleted_at = $2, updated_at = $2, version = version + 1 \
                 WHERE id = $1 AND deleted_at IS NULL"
            )),
            exists_any: Arc::from(format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"
            )),
            restore: Arc::from(restore),
            why_not_restored: Arc::from(why_not_restored),
            hard_delete: Arc::from(format!("DELETE FROM {table} WHERE id = $1")),
            delete_many: Arc::from(format!("DELETE FROM {table} WHERE id = ANY($1)")),
            purge: Arc::from(format!("DELETE FROM {table} WHERE deleted_at < $1")),
            increments,
            copy_layout: OnceLock::new(),
            columns,
            storages,
            references,
        }
    }

    /// The number of columns a read selects.
    pub(crate) fn width(&self) -> usize {
        self.storages.len() + 5
    }
}

#[cfg(test)]
mod tests {
    use stockroom_core::Entity as _;

    use super::*;

    fn plans() -> Plans {
        Plans::new(Catalog::new(&[]).unwrap())
    }

    /// The statements written from Stockroom's declarations, spelled out for the ones whose
    /// shape matters (guards, arrays): a change of the writer shows here first.
    #[test]
    fn the_products_statements_are_written_from_its_declaration() {
        let plans = plans();
        let product = plans.of(stockroom_core::Product::schema()).unwrap();
        assert_eq!(
            &*product.get,
            "SELECT id, name, slug, sku, description, status, stock, category_id, created_by, \
             created_at, updated_at, deleted_at, version FROM products \
             WHERE id = $1 AND deleted_at IS NULL"
        );
        assert_eq!(
            &*product.insert,
            "INSERT INTO products (id, name, slug, sku, description, status, stock, \
             category_id, created_by, created_at, updated_at, version, search_text) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
             WHERE ($8::uuid IS NULL OR EXISTS (SELECT 1 FROM categories x WHERE x.id = $8 \
             AND x.deleted_at IS NULL)) AND ($9::uuid IS NULL OR EXISTS (SELECT 1 FROM users x \
             WHERE x.id = $9 AND x.deleted_at IS NULL)) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            &*product.why_not_inserted,
            "SELECT ($2::uuid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM categories x \
             WHERE x.id = $2 AND x.deleted_at IS NULL)), ($3::uuid IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM users x WHERE x.id = $3 AND x.deleted_at IS NULL)), \
             EXISTS (SELECT 1 FROM products o WHERE o.slug = $4 AND o.deleted_at IS NULL), \
             EXISTS (SELECT 1 FROM products o WHERE o.sku = $5 AND o.deleted_at IS NULL), \
             EXISTS (SELECT 1 FROM products o WHERE o.id = $1)"
        );
        assert_eq!(product.why_not_inserted_fields, [6, 7, 1, 2]);
        assert!(product.increments[5].is_some() && product.increments[0].is_none());
        assert_eq!(product.width(), 13);
    }

    #[test]
    fn a_review_joins_its_product_and_author_and_restores_unless_its_pair_is_taken() {
        let plans = plans();
        let review = plans.of(stockroom_core::Review::schema()).unwrap();
        assert!(review.get_related.contains(
            "FROM reviews t LEFT JOIN products r0 ON r0.id = t.product_id AND r0.deleted_at IS \
             NULL LEFT JOIN users r1 ON r1.id = t.author_id AND r1.deleted_at IS NULL"
        ));
        assert!(review.restore.ends_with(
            "AND NOT EXISTS (SELECT 1 FROM reviews o WHERE o.product_id = t.product_id AND \
             o.author_id = t.author_id AND o.deleted_at IS NULL)"
        ));
        assert!(!review.searchable);
    }
}

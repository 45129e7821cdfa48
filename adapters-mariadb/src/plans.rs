//! The statements of every entity a store holds, written once per catalog entry from its
//! declaration when the store is built ([`Plans::new`]) and shared by every session of the
//! store: an operation on any entity looks its plan up by the catalog's position and binds
//! values to a text it did not have to build. Statements whose text depends on the call (the
//! conditions of a list, the fields an update sets, the number of rows of an insert) are
//! written per call in `crate::records`, from the fragments kept here.
//!
//! Every read selects the same columns in the same order (`id`, the declared fields,
//! `created_at`, `updated_at`, `deleted_at`, `version`, as [`Plan::select_live`] does) and
//! decodes them by position ([`crate::codec::decode_record`]). The search document
//! (`search_text`, for an entity with a [`Search`](stockroom_core::schema::Search)) is written,
//! never read.
//!
//! Every identifier is quoted with backticks: MariaDB reserves words the declarations' checks
//! (SQL:2016, PostgreSQL and SQLite keywords) let through. Aliases: `t` the entity's row, `o`
//! another row of its table, `x` a referenced row, `r0`, `r1`, … the related rows of
//! `get_related`.
//!
//! # Uniqueness among live rows
//!
//! MariaDB has no partial index. A table Stockroom creates has, per unique rule and per field of
//! the rule, a virtual column `_live_<index>_<k>` (`crate::tables::live_column`) that holds the
//! field's value while the row is live and `NULL` once it is deleted, and a `UNIQUE` index named
//! after the rule over those columns (`NULL`s never collide). The statements here look a rule's
//! values up through those columns, which is also how they reach the index ([`UniqueKey`]). A
//! table the application creates (`Ddl::Application`) need not have them: its rules are matched
//! on the fields and `deleted_at IS NULL`.

use std::fmt::Write as _;
use std::sync::Arc;

use stockroom_core::schema::{Catalog, Ddl, Entry, FieldType, Schema, Storage};
use stockroom_core::Result;

use crate::tables::live_column;

/// `name` as an identifier: in backticks. Names come from checked declarations (lower-case
/// letters, digits and `_`), so none holds a backtick.
pub(crate) fn quoted(name: &str) -> String {
    format!("`{name}`")
}

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

/// How a statement finds the live row holding given values for one unique rule.
#[derive(Debug)]
pub(crate) struct UniqueKey {
    /// Per field of the rule, the column compared with its value: the rule's live column, or
    /// the field itself on an application's table.
    pub(crate) columns: Vec<String>,
    /// Whether the columns are `NULL` in a deleted row (the live columns), so that matching
    /// them needs no `deleted_at IS NULL`.
    pub(crate) live_only: bool,
}

impl UniqueKey {
    /// `<alias>.<column> = <value> AND …` for each field of the rule (values from `value`, by
    /// the field's position in the rule), and `deleted_at IS NULL` when the columns need it: a
    /// row of alias `alias` that is live and holds the values.
    pub(crate) fn matches(&self, alias: &str, mut value: impl FnMut(usize) -> String) -> String {
        let mut condition = String::new();
        for (k, column) in self.columns.iter().enumerate() {
            if k > 0 {
                condition.push_str(" AND ");
            }
            let _ = write!(condition, "{alias}.{column} = {}", value(k));
        }
        if !self.live_only {
            let _ = write!(condition, " AND {alias}.`deleted_at` IS NULL");
        }
        condition
    }
}

/// An integer field's increment: the conditional update and the follow-up read.
#[derive(Debug)]
pub(crate) struct Increment {
    /// Adds the first argument to the live row (the third)'s field, at the second, when the
    /// field is between the fourth and the fifth (the declared range shifted by minus the
    /// delta, so that the sum can neither leave it nor overflow).
    pub(crate) update: Arc<str>,
    /// The field of the live row (a missing value counting as 0).
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
    /// Its table, unquoted.
    pub(crate) table: &'static str,
    /// Its table, quoted.
    pub(crate) quoted_table: String,
    /// Each field's storage class, in declaration order.
    pub(crate) storages: Vec<Storage>,
    /// Each field's column, quoted.
    pub(crate) field_columns: Vec<String>,
    /// For each unique rule, the positions of its fields.
    pub(crate) unique_fields: Vec<Vec<usize>>,
    /// For each unique rule, how a live row holding values for it is found.
    pub(crate) unique_keys: Vec<UniqueKey>,
    /// The fields the search document is made of; empty without one.
    pub(crate) search_fields: Vec<usize>,
    /// Whether the table has a `search_text` column.
    pub(crate) searchable: bool,
    /// The reference fields, in declaration order.
    pub(crate) references: Vec<Ref>,
    /// `SELECT <columns> FROM <table> WHERE deleted_at IS NULL`, for conditions to follow.
    pub(crate) select_live: String,
    /// The live row (argument: its id).
    pub(crate) get: Arc<str>,
    /// The live row, locked until the transaction ends (argument: its id).
    pub(crate) get_locked: Arc<str>,
    /// The live row holding the arguments for the unique rule at each position.
    pub(crate) find: Vec<Arc<str>>,
    /// The live row (argument: its id) and, per reference field, the live row it names (its
    /// columns follow the row's, or are NULL).
    pub(crate) get_related: Arc<str>,
    /// A page (`LIMIT ? OFFSET ?`) of the soft-deleted rows, in list order.
    pub(crate) list_deleted: Arc<str>,
    /// `INSERT INTO <table> (<columns>) VALUES `, the rows to follow: `id`, the fields,
    /// `created_at`, `updated_at`, `version` and, for a searchable entity, `search_text`.
    pub(crate) insert_into: String,
    /// How many values one row of an insert binds.
    pub(crate) insert_width: usize,
    /// The insert of one row.
    pub(crate) insert_one: Arc<str>,
    /// Soft-deletes the live row (arguments: the time twice, the id).
    pub(crate) soft_delete: Arc<str>,
    /// Whether a row, live or not, has the id (argument).
    pub(crate) exists_any: Arc<str>,
    /// Brings back the deleted row (arguments: the time, the id) unless a live row holds its
    /// values for a unique rule.
    pub(crate) restore: Arc<str>,
    /// Of the row (argument: its id): whether it is deleted, then per unique rule whether
    /// another live row holds its values; no row when there is no such row.
    pub(crate) why_not_restored: Arc<str>,
    /// Deletes the row (argument: its id) for good.
    pub(crate) hard_delete: Arc<str>,
    /// Deletes for good the rows soft-deleted before the argument.
    pub(crate) purge: Arc<str>,
    /// The increment of each integer field, by position (`None` for other fields).
    pub(crate) increments: Vec<Option<Increment>>,
}

/// The columns every read selects, each prefixed with `alias` (`"t."`, or nothing).
fn read_columns(schema: &Schema, alias: &str) -> String {
    let mut columns = format!("{alias}`id`");
    for field in schema.fields {
        let _ = write!(columns, ", {alias}`{}`", field.name);
    }
    for name in ["created_at", "updated_at", "deleted_at", "version"] {
        let _ = write!(columns, ", {alias}`{name}`");
    }
    columns
}

/// The columns an insert writes, in order: `id`, the fields, the bookkeeping and, for a
/// searchable entity, `search_text` (`deleted_at` is left to its default, `NULL`: a new row is
/// live).
fn insert_columns(schema: &Schema) -> Vec<String> {
    let mut columns = vec![quoted("id")];
    columns.extend(schema.fields.iter().map(|f| quoted(f.name)));
    columns.extend(["created_at", "updated_at", "version"].map(quoted));
    if schema.search.is_some() {
        columns.push(quoted("search_text"));
    }
    columns
}

/// `(?, ?, …)`: one row of `width` placeholders.
pub(crate) fn placeholders(width: usize) -> String {
    let mut row = String::with_capacity(width * 3 + 2);
    row.push('(');
    for i in 0..width {
        if i > 0 {
            row.push_str(", ");
        }
        row.push('?');
    }
    row.push(')');
    row
}

impl Plan {
    fn new(entry: &Entry, position: usize, catalog: &Catalog) -> Self {
        let schema = entry.schema;
        let table = schema.table;
        let quoted_table = quoted(table);
        let columns = read_columns(schema, "");
        let select_live =
            format!("SELECT {columns} FROM {quoted_table} WHERE `deleted_at` IS NULL");
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
        let field_columns: Vec<String> = schema.fields.iter().map(|f| quoted(f.name)).collect();

        // The live columns exist on the tables Stockroom makes (its own migrations, or the
        // DDL it writes from a declaration); an application's table is matched on its fields.
        let live_columns = schema.ddl != Ddl::Application;
        let unique_keys: Vec<UniqueKey> = schema
            .unique
            .iter()
            .zip(&entry.unique_fields)
            .map(|(rule, fields)| UniqueKey {
                columns: fields
                    .iter()
                    .enumerate()
                    .map(|(k, &field)| {
                        if live_columns {
                            quoted(&live_column(rule.index, k))
                        } else {
                            field_columns[field].clone()
                        }
                    })
                    .collect(),
                live_only: live_columns,
            })
            .collect();

        let inserted = insert_columns(schema);
        let insert_width = inserted.len();
        let insert_into = format!(
            "INSERT INTO {quoted_table} ({}) VALUES ",
            inserted.join(", ")
        );
        let insert_one = format!("{insert_into}{}", placeholders(insert_width));

        // Restore, unless another live row holds the row's values of a unique rule.
        let taken: Vec<String> = unique_keys
            .iter()
            .zip(&entry.unique_fields)
            .map(|(key, fields)| {
                let same = key.matches("o", |k| format!("t.{}", field_columns[fields[k]]));
                format!("EXISTS (SELECT 1 FROM {quoted_table} o WHERE {same} AND o.`id` <> t.`id`)")
            })
            .collect();
        let mut restore = format!(
            "UPDATE {quoted_table} AS t SET t.`deleted_at` = NULL, t.`updated_at` = ?, \
             t.`version` = t.`version` + 1 WHERE t.`id` = ? AND t.`deleted_at` IS NOT NULL"
        );
        for exists in &taken {
            let _ = write!(restore, " AND NOT {exists}");
        }
        let mut why_not_restored = String::from("SELECT t.`deleted_at` IS NOT NULL");
        for exists in &taken {
            let _ = write!(why_not_restored, ", {exists}");
        }
        let _ = write!(why_not_restored, " FROM {quoted_table} t WHERE t.`id` = ?");

        // Related rows: one LEFT JOIN per reference field, live rows only.
        let mut get_related = format!("SELECT {}", read_columns(schema, "t."));
        let mut joins = String::new();
        for (i, r) in references.iter().enumerate() {
            let target = catalog.entries()[r.target_position].schema;
            let _ = write!(get_related, ", {}", read_columns(target, &format!("r{i}.")));
            let _ = write!(
                joins,
                " LEFT JOIN {} r{i} ON r{i}.`id` = t.{} AND r{i}.`deleted_at` IS NULL",
                quoted(r.target),
                field_columns[r.field]
            );
        }
        let _ = write!(
            get_related,
            " FROM {quoted_table} t{joins} WHERE t.`id` = ? AND t.`deleted_at` IS NULL"
        );

        let increments = schema
            .fields
            .iter()
            .zip(&field_columns)
            .map(|(field, column)| match field.ty {
                FieldType::Int { min, max } => {
                    // A missing value counts as 0, as on the other backends.
                    let value = if field.nullable {
                        format!("COALESCE({column}, 0)")
                    } else {
                        column.clone()
                    };
                    Some(Increment {
                        update: Arc::from(format!(
                            "UPDATE {quoted_table} SET {column} = {value} + ?, \
                             `updated_at` = ?, `version` = `version` + 1 \
                             WHERE `id` = ? AND `deleted_at` IS NULL AND {value} BETWEEN ? AND ?"
                        )),
                        current: Arc::from(format!(
                            "SELECT {value} FROM {quoted_table} \
                             WHERE `id` = ? AND `deleted_at` IS NULL"
                        )),
                        min,
                        max,
                    })
                }
                _ => None,
            })
            .collect();

        let find = unique_keys
            .iter()
            .map(|key| {
                let condition = key.matches(&quoted_table, |_| "?".to_owned());
                Arc::from(format!("{select_live} AND {condition}"))
            })
            .collect();

        Self {
            position,
            schema,
            table,
            unique_fields: entry.unique_fields.clone(),
            unique_keys,
            search_fields: entry.search_fields.clone(),
            searchable: schema.search.is_some(),
            get: Arc::from(format!("{select_live} AND `id` = ?")),
            get_locked: Arc::from(format!("{select_live} AND `id` = ? FOR UPDATE")),
            find,
            get_related: Arc::from(get_related),
            list_deleted: Arc::from(format!(
                "SELECT {columns} FROM {quoted_table} WHERE `deleted_at` IS NOT NULL \
                 ORDER BY `created_at`, `id` LIMIT ? OFFSET ?"
            )),
            insert_into,
            insert_width,
            insert_one: Arc::from(insert_one),
            soft_delete: Arc::from(format!(
                "UPDATE {quoted_table} SET `deleted_at` = ?, `updated_at` = ?, \
                 `version` = `version` + 1 WHERE `id` = ? AND `deleted_at` IS NULL"
            )),
            exists_any: Arc::from(format!(
                "SELECT EXISTS (SELECT 1 FROM {quoted_table} WHERE `id` = ?)"
            )),
            restore: Arc::from(restore),
            why_not_restored: Arc::from(why_not_restored),
            hard_delete: Arc::from(format!("DELETE FROM {quoted_table} WHERE `id` = ?")),
            purge: Arc::from(format!(
                "DELETE FROM {quoted_table} WHERE `deleted_at` IS NOT NULL AND `deleted_at` < ?"
            )),
            increments,
            select_live,
            storages,
            field_columns,
            references,
            quoted_table,
        }
    }

    /// The number of columns a read selects.
    pub(crate) fn width(&self) -> usize {
        self.storages.len() + 5
    }

    /// Whether field `field` refers to another row.
    pub(crate) fn reference(&self, field: usize) -> Option<&Ref> {
        self.references.iter().find(|r| r.field == field)
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
    /// shape matters: a change of the writer shows here first.
    #[test]
    fn the_products_statements_are_written_from_its_declaration() {
        let plans = plans();
        let product = plans.of(stockroom_core::Product::schema()).unwrap();
        let columns = "`id`, `name`, `slug`, `sku`, `description`, `status`, `stock`, \
                       `category_id`, `created_by`, `created_at`, `updated_at`, `deleted_at`, \
                       `version`";
        assert_eq!(
            &*product.get,
            format!("SELECT {columns} FROM `products` WHERE `deleted_at` IS NULL AND `id` = ?")
        );
        assert_eq!(
            &*product.insert_one,
            "INSERT INTO `products` (`id`, `name`, `slug`, `sku`, `description`, `status`, \
             `stock`, `category_id`, `created_by`, `created_at`, `updated_at`, `version`, \
             `search_text`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        assert_eq!(product.insert_width, 13);
        assert_eq!(
            &*product.find[0],
            format!(
                "SELECT {columns} FROM `products` WHERE `deleted_at` IS NULL AND \
                 `products`.`_live_products_slug_live_0` = ?"
            )
        );
        assert!(product.increments[5].is_some() && product.increments[0].is_none());
        assert_eq!(product.width(), 13);
    }

    /// A review joins its product and author, and restores unless its pair is taken, looked up
    /// through the rule's live columns.
    #[test]
    fn a_review_joins_its_product_and_author_and_restores_unless_its_pair_is_taken() {
        let plans = plans();
        let review = plans.of(stockroom_core::Review::schema()).unwrap();
        assert!(review.get_related.contains(
            "FROM `reviews` t LEFT JOIN `products` r0 ON r0.`id` = t.`product_id` AND \
             r0.`deleted_at` IS NULL LEFT JOIN `users` r1 ON r1.`id` = t.`author_id` AND \
             r1.`deleted_at` IS NULL WHERE t.`id` = ? AND t.`deleted_at` IS NULL"
        ));
        assert!(
            review.restore.ends_with(
                "AND NOT EXISTS (SELECT 1 FROM `reviews` o WHERE \
                 o.`_live_reviews_author_live_0` = t.`product_id` AND \
                 o.`_live_reviews_author_live_1` = t.`author_id` AND o.`id` <> t.`id`)"
            ),
            "{}",
            review.restore
        );
        assert!(!review.searchable);
    }
}

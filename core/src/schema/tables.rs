//! What an entity's SQL table holds and how a live table is brought to, or checked against, its
//! declaration: the part of schema migration every SQL adapter shares. Each adapter writes the
//! SQL (its column types, its DDL, its catalog queries); the decisions are made here, once.

use std::fmt::Write as _;

use super::declaration::{Ddl, Schema, Storage};
use crate::error::{ColumnDifference, Error, Result, SchemaProblem};

/// A column of an entity's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: &'static str,
    /// How its values are stored.
    pub storage: Storage,
    /// Whether it may hold `NULL`.
    pub nullable: bool,
    /// The declared field it holds (its position), if it is one (not `id` or the bookkeeping).
    pub field: Option<usize>,
}

/// The columns of `schema`'s table, in the order every adapter creates them: `id`, the declared
/// fields, `created_at`, `updated_at`, `deleted_at`, `version`, and `search_text` for an entity
/// with a search document.
pub fn columns(schema: &Schema) -> Vec<Column> {
    let column = |name, storage, nullable| Column {
        name,
        storage,
        nullable,
        field: None,
    };
    let mut columns = vec![column("id", Storage::Uuid, false)];
    columns.extend(schema.fields.iter().enumerate().map(|(i, f)| Column {
        name: f.name,
        storage: f.ty.storage(),
        nullable: f.nullable,
        field: Some(i),
    }));
    columns.extend([
        column("created_at", Storage::Timestamp, false),
        column("updated_at", Storage::Timestamp, false),
        column("deleted_at", Storage::Timestamp, true),
        column("version", Storage::Int, false),
    ]);
    if schema.search.is_some() {
        columns.push(column("search_text", Storage::Text, false));
    }
    columns
}

/// How a column is described in errors and in the recorded definition: `text not null`.
pub fn describe(storage: Storage, nullable: bool) -> String {
    let ty = match storage {
        Storage::Text => "text",
        Storage::Int => "integer",
        Storage::Bool => "boolean",
        Storage::Timestamp => "timestamp",
        Storage::Uuid => "uuid",
    };
    format!("{ty} {}", if nullable { "null" } else { "not null" })
}

/// The definition of `schema`'s table as Stockroom records it beside the table: its columns and
/// unique rules, one per line.
pub fn definition(schema: &Schema) -> String {
    let mut text = String::new();
    for c in columns(schema) {
        let _ = writeln!(text, "{} {}", c.name, describe(c.storage, c.nullable));
    }
    for u in schema.unique {
        let _ = writeln!(text, "unique {} ({}) live", u.index, u.fields.join(", "));
    }
    text
}

/// A column of a live table, as an adapter reads it from its engine's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveColumn {
    /// The column's name.
    pub name: String,
    /// How the engine's type maps to a storage class; `None` for a type no declaration has.
    pub storage: Option<Storage>,
    /// Whether it may hold `NULL`.
    pub nullable: bool,
    /// Whether it has a default (so that a row can be inserted without it).
    pub has_default: bool,
    /// The engine's name of its type, for errors.
    pub type_name: String,
}

/// A live table: its columns and the names of its indexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveTable {
    /// Its columns.
    pub columns: Vec<LiveColumn>,
    /// The names of its indexes.
    pub indexes: Vec<String>,
}

/// One step that brings a table to its declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create the table with every column, its unique indexes, the `(created_at, id)` index and
    /// one index per reference field.
    CreateTable,
    /// Add the column of the declared field at this position (nullable, or with its default).
    AddColumn(usize),
    /// Create the unique index of the rule at this position.
    CreateUniqueIndex(usize),
}

/// The steps that bring `live` (the table as it is, `None` when it does not exist) to `schema`'s
/// declaration, or why that cannot be done without risk: [`SchemaProblem::Mismatch`] when the
/// table differs in a way only a person can resolve (a column renamed, retyped, dropped or added
/// without a default; for a table the application owns, any difference), and
/// [`SchemaProblem::TableTaken`] when a table of that name exists that Stockroom did not create
/// (`recorded` is false) for an entity whose table is Stockroom's to manage.
///
/// No step for a table that matches. Built-in tables (Stockroom's own migrations make them) are
/// only checked.
pub fn plan(
    schema: &'static Schema,
    live: Option<&LiveTable>,
    recorded: bool,
) -> Result<Vec<Step>> {
    let managed = schema.ddl == Ddl::Stockroom;
    let Some(live) = live else {
        return if managed {
            Ok(vec![Step::CreateTable])
        } else {
            Err(mismatch(
                schema,
                vec![ColumnDifference {
                    column: schema.table.to_owned(),
                    declared: Some("table".to_owned()),
                    found: None,
                }],
            ))
        };
    };
    if managed && !recorded {
        return Err(Error::Schema {
            entity: schema.kind(),
            problem: SchemaProblem::TableTaken {
                table: schema.table,
            },
        });
    }
    let mut steps = Vec::new();
    let mut differences = Vec::new();
    let declared = columns(schema);
    for column in &declared {
        let wanted = describe(column.storage, column.nullable);
        match live.columns.iter().find(|c| c.name == column.name) {
            None => match column.field {
                Some(i) if managed && addable(schema, i) => steps.push(Step::AddColumn(i)),
                _ => differences.push(ColumnDifference {
                    column: column.name.to_owned(),
                    declared: Some(wanted),
                    found: None,
                }),
            },
            Some(found)
                if found.storage != Some(column.storage) || found.nullable != column.nullable =>
            {
                differences.push(ColumnDifference {
                    column: column.name.to_owned(),
                    declared: Some(wanted),
                    found: Some(format!(
                        "{} {}",
                        found.type_name,
                        if found.nullable { "null" } else { "not null" }
                    )),
                });
            }
            Some(_) => {}
        }
    }
    for found in &live.columns {
        let extra = !declared.iter().any(|c| c.name == found.name);
        // A column the declaration lacks is harmless to Stockroom if its inserts may leave it
        // out (an application's own column on its own table); any other is a field renamed or
        // dropped from the declaration.
        if extra && !(found.nullable || found.has_default) || extra && managed {
            differences.push(ColumnDifference {
                column: found.name.clone(),
                declared: None,
                found: Some(format!(
                    "{} {}",
                    found.type_name,
                    if found.nullable { "null" } else { "not null" }
                )),
            });
        }
    }
    for (i, rule) in schema.unique.iter().enumerate() {
        if !live.indexes.iter().any(|name| name == rule.index) {
            if managed {
                steps.push(Step::CreateUniqueIndex(i));
            } else {
                differences.push(ColumnDifference {
                    column: rule.index.to_owned(),
                    declared: Some(format!(
                        "unique index on ({}) of live rows",
                        rule.fields.join(", ")
                    )),
                    found: None,
                });
            }
        }
    }
    if differences.is_empty() {
        Ok(steps)
    } else {
        Err(mismatch(schema, differences))
    }
}

/// Whether the declared field at `index` can be added to a table that has rows: it is nullable
/// or has a default.
fn addable(schema: &Schema, index: usize) -> bool {
    let field = &schema.fields[index];
    field.nullable || field.default.is_some()
}

fn mismatch(schema: &'static Schema, differences: Vec<ColumnDifference>) -> Error {
    Error::Schema {
        entity: schema.kind(),
        problem: SchemaProblem::Mismatch {
            table: schema.table,
            differences,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{DefaultValue, Field, FieldType, TextRule, Unique};

    static BINS: Schema = Schema {
        name: "bin",
        table: "bins",
        fields: &[
            Field::new("code", FieldType::Text(TextRule::Line { max_len: 10 })),
            Field::new("note", FieldType::Text(TextRule::Text)).nullable(),
            Field::new("slots", FieldType::INT).with_default(DefaultValue::Int(4)),
        ],
        unique: &[Unique {
            name: "bin_code",
            fields: &["code"],
            index: "bins_code_live",
        }],
        search: None,
        ddl: Ddl::Stockroom,
    };

    fn live(schema: &Schema, skip: &[&str]) -> LiveTable {
        LiveTable {
            columns: columns(schema)
                .into_iter()
                .filter(|c| !skip.contains(&c.name))
                .map(|c| LiveColumn {
                    name: c.name.to_owned(),
                    storage: Some(c.storage),
                    nullable: c.nullable,
                    has_default: false,
                    type_name: "t".to_owned(),
                })
                .collect(),
            indexes: schema.unique.iter().map(|u| u.index.to_owned()).collect(),
        }
    }

    #[test]
    fn a_missing_table_is_created_and_a_matching_one_left_alone() {
        assert_eq!(plan(&BINS, None, false).unwrap(), [Step::CreateTable]);
        assert_eq!(plan(&BINS, Some(&live(&BINS, &[])), true).unwrap(), []);
    }

    #[test]
    fn new_nullable_or_defaulted_fields_are_added_and_a_required_one_is_refused() {
        let table = live(&BINS, &["note", "slots"]);
        assert_eq!(
            plan(&BINS, Some(&table), true).unwrap(),
            [Step::AddColumn(1), Step::AddColumn(2)]
        );
        let table = live(&BINS, &["code"]);
        let err = plan(&BINS, Some(&table), true).unwrap_err();
        assert!(
            matches!(&err, Error::Schema { problem: SchemaProblem::Mismatch { differences, .. }, .. }
                if differences[0].column == "code" && differences[0].found.is_none()),
            "{err}"
        );
    }

    #[test]
    fn a_retyped_or_undeclared_column_is_a_mismatch_naming_it() {
        let mut table = live(&BINS, &[]);
        table.columns[1].storage = Some(Storage::Int);
        table.columns.push(LiveColumn {
            name: "old_name".into(),
            storage: Some(Storage::Text),
            nullable: false,
            has_default: false,
            type_name: "text".into(),
        });
        let err = plan(&BINS, Some(&table), true).unwrap_err();
        let Error::Schema {
            problem: SchemaProblem::Mismatch { differences, .. },
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        let named: Vec<&str> = differences.iter().map(|d| d.column.as_str()).collect();
        assert_eq!(named, ["code", "old_name"], "{err}");
    }

    #[test]
    fn a_table_stockroom_did_not_create_is_not_adopted() {
        let err = plan(&BINS, Some(&live(&BINS, &[])), false).unwrap_err();
        assert!(matches!(
            err,
            Error::Schema {
                problem: SchemaProblem::TableTaken { .. },
                ..
            }
        ));
    }
}

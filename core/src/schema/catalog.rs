//! The entities a store holds: Stockroom's and the application's registered ones, their
//! declarations checked once, and what the adapters look up in them at every call.

use std::collections::HashSet;
use std::fmt;

use super::declaration::{DefaultValue, Field, FieldType, OnDelete, Schema, TextRule};
use crate::error::{Constraint, Error, Result, SchemaProblem};

/// The names a table may not take: Stockroom's own tables (besides an entity of Stockroom's own),
/// and prefixes the engines keep for themselves.
const TAKEN_TABLES: &[&str] = &[
    "products",
    "categories",
    "users",
    "reviews",
    "stock_movements",
    "stockroom_migrations",
    "stockroom_entities",
];
const TAKEN_PREFIXES: &[&str] = &["stockroom_", "sqlite_", "pg_", "_sqlx"];

/// The columns every entity table has besides its declared fields.
pub const BOOKKEEPING_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "deleted_at",
    "version",
    "search_text",
];

/// SQL keywords a table or column may not be named after: the reserved words of SQL:2016,
/// PostgreSQL and SQLite (an identifier among them would need quoting on some engine).
const KEYWORDS: &[&str] = &[
    "abort",
    "all",
    "alter",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "begin",
    "between",
    "binary",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "commit",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "delete",
    "desc",
    "distinct",
    "do",
    "drop",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "glob",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "index",
    "initially",
    "inner",
    "insert",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "regexp",
    "returning",
    "right",
    "rollback",
    "row",
    "select",
    "session_user",
    "set",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "transaction",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// An entity a store holds, with what its declaration implies, resolved once.
pub struct Entry {
    /// The declaration.
    pub schema: &'static Schema,
    /// For each unique rule, the positions of its fields.
    pub unique_fields: Vec<Vec<usize>>,
    /// The positions of the fields the search document is made of.
    pub search_fields: Vec<usize>,
    /// The registered entities' fields that refer to this entity, with what a delete for good
    /// of one of its rows does to theirs.
    pub referrers: Vec<Referrer>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("entity", &self.schema.name)
            .field("referrers", &self.referrers)
            .finish()
    }
}

/// A field of a registered entity that refers to another entity.
#[derive(Clone, Copy)]
pub struct Referrer {
    /// The referring entity.
    pub schema: &'static Schema,
    /// The referring field's position.
    pub field: usize,
    /// What a delete for good of the referred row does to the referring one.
    pub on_delete: OnDelete,
}

impl fmt::Debug for Referrer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{} ({:?})",
            self.schema.name, self.schema.fields[self.field].name, self.on_delete
        )
    }
}

/// The entities of one store: Stockroom's own, then the application's registered ones, each
/// declaration checked. Adapters keep what they derive from each entry (statements, tables) in
/// the entry's position.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<Entry>,
}

impl Catalog {
    /// The catalog of Stockroom's entities and `registered`, each declaration checked: a
    /// declaration no backend can store is [`Error::Schema`] with
    /// [`SchemaProblem::Invalid`], naming the entity and why.
    pub fn new(registered: &[&'static Schema]) -> Result<Self> {
        let mut schemas = crate::entities::built_in().to_vec();
        for &schema in registered {
            if !schemas.iter().any(|s| same(s, schema)) {
                schemas.push(schema);
            }
        }
        for schema in &schemas {
            check_declaration(schema, &schemas)?;
        }
        check_distinct(&schemas)?;
        let entries = schemas
            .iter()
            .map(|&schema| Entry {
                schema,
                unique_fields: schema
                    .unique
                    .iter()
                    .map(|u| u.fields.iter().map(|f| schema.index_of(f)).collect())
                    .collect(),
                search_fields: schema
                    .search
                    .iter()
                    .flat_map(|s| s.fields.iter().map(|f| schema.index_of(f)))
                    .collect(),
                referrers: referrers_of(schema, &schemas),
            })
            .collect();
        Ok(Self { entries })
    }

    /// Every entity, Stockroom's first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The position of `schema`'s entry, or [`Error::UnknownEntity`] when the store does not
    /// hold it.
    pub fn position(&self, schema: &'static Schema) -> Result<usize> {
        // Declarations are statics: the address finds them, the names confirm a copy.
        self.entries
            .iter()
            .position(|e| std::ptr::eq(e.schema, schema))
            .or_else(|| self.entries.iter().position(|e| same(e.schema, schema)))
            .ok_or(Error::UnknownEntity {
                entity: schema.kind(),
            })
    }

    /// The entry of `schema`, or [`Error::UnknownEntity`].
    pub fn entry(&self, schema: &'static Schema) -> Result<&Entry> {
        self.position(schema).map(|i| &self.entries[i])
    }

    /// The rule enforced by the SQL index named `index`, for adapters that map a unique
    /// violation back to the rule it broke.
    pub fn constraint_of_index(&self, index: &str) -> Option<Constraint> {
        self.entries.iter().find_map(|e| {
            e.schema
                .unique
                .iter()
                .find(|u| u.index == index)
                .map(|u| Constraint::of_rule(e.schema, u))
        })
    }

    /// The rule whose index a database's error message names, if any (the ledger's
    /// idempotency key included).
    pub fn constraint_in_message(&self, message: &str) -> Option<Constraint> {
        if message.contains(crate::adapter::IDEMPOTENCY_KEY_INDEX) {
            return Some(Constraint::IDEMPOTENCY_KEY);
        }
        self.entries.iter().find_map(|e| {
            e.schema
                .unique
                .iter()
                .find(|u| message.contains(u.index))
                .map(|u| Constraint::of_rule(e.schema, u))
        })
    }
}

/// Whether `a` and `b` are the same entity's declaration.
fn same(a: &Schema, b: &Schema) -> bool {
    std::ptr::eq(a, b) || (a.name == b.name && a.table == b.table)
}

/// The invalid-declaration error of `schema`.
pub fn invalid(schema: &Schema, reason: impl Into<String>) -> Error {
    Error::Schema {
        entity: schema.kind(),
        problem: SchemaProblem::Invalid {
            reason: reason.into(),
        },
    }
}

/// Whether `name` is a name errors, spans and problem details can show as it is: lower-case
/// ASCII letters, digits and `_`, starting with a letter, at most 63 bytes (PostgreSQL's limit
/// on identifiers).
fn is_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63
}

/// Whether `name` may name a table, a column or an index on every backend without quoting: a
/// [name](is_name) that is not an SQL keyword.
fn is_identifier(name: &str) -> bool {
    is_name(name) && !KEYWORDS.contains(&name)
}

fn check_declaration(schema: &'static Schema, all: &[&'static Schema]) -> Result<()> {
    let bad = |reason: String| Err(invalid(schema, reason));
    if !is_name(schema.name) {
        return bad(format!(
            "entity name {:?} is not lower-case letters, digits and _",
            schema.name
        ));
    }
    if !is_identifier(schema.table) {
        return bad(format!("table name {:?} is not an identifier (lower-case letters, digits and _, not an SQL keyword)", schema.table));
    }
    let built_in = schema.ddl == super::Ddl::BuiltIn;
    let reserved = TAKEN_TABLES.contains(&schema.table)
        || TAKEN_PREFIXES.iter().any(|p| schema.table.starts_with(p));
    if reserved && !built_in {
        return bad(format!(
            "table name {:?} is Stockroom's or an engine's",
            schema.table
        ));
    }
    if schema.fields.is_empty() {
        return bad("it declares no field".to_owned());
    }
    let mut names = HashSet::new();
    for field in schema.fields {
        if !is_identifier(field.name) || BOOKKEEPING_COLUMNS.contains(&field.name) {
            return bad(format!(
                "field name {:?} is not an identifier or is one of the bookkeeping columns {BOOKKEEPING_COLUMNS:?}",
                field.name
            ));
        }
        if !names.insert(field.name) {
            return bad(format!("field {:?} is declared twice", field.name));
        }
        check_field(schema, field, all)?;
    }
    for rule in schema.unique {
        if !is_name(rule.name) || !is_identifier(rule.index) {
            return bad(format!(
                "unique rule {:?} or its index {:?} is not an identifier",
                rule.name, rule.index
            ));
        }
        if rule.fields.is_empty() {
            return bad(format!("unique rule {:?} names no field", rule.name));
        }
        for name in rule.fields {
            if schema.field(name).is_none() {
                return bad(format!(
                    "unique rule {:?} names the field {name:?}, which the entity does not declare",
                    rule.name
                ));
            }
        }
    }
    if let Some(search) = &schema.search {
        for name in search.fields {
            match schema.field(name) {
                Some((
                    _,
                    Field {
                        ty: FieldType::Text(_),
                        ..
                    },
                )) => {}
                _ => {
                    return bad(format!(
                        "search names {name:?}, which is not a text field of the entity"
                    ))
                }
            }
        }
    }
    Ok(())
}

fn check_field(schema: &'static Schema, field: &Field, all: &[&'static Schema]) -> Result<()> {
    let bad = |reason: String| Err(invalid(schema, format!("field {:?}: {reason}", field.name)));
    match field.ty {
        FieldType::Int { min, max } if min > max => {
            return bad(format!("range {min}..={max} is empty"))
        }
        FieldType::Text(TextRule::Line { max_len: 0 }) => return bad("max_len is 0".to_owned()),
        FieldType::Enum([]) => return bad("the enum has no value".to_owned()),
        FieldType::Enum(values)
            if values
                .iter()
                .any(|v| v.is_empty() || v.chars().any(char::is_control)) =>
        {
            return bad("an enum value is empty or holds a control character".to_owned())
        }
        FieldType::Ref(reference) => {
            let target = reference.target();
            if !all.iter().any(|s| same(s, target)) {
                return bad(format!(
                    "it refers to entity {:?}, which is not registered with the store",
                    target.name
                ));
            }
            if reference.on_delete == OnDelete::SetNull && !field.nullable {
                return bad("on_delete SetNull needs a nullable (Option) field".to_owned());
            }
        }
        _ => {}
    }
    match (field.default, field.ty) {
        (None, _) => Ok(()),
        (Some(DefaultValue::Bool(_)), FieldType::Bool) => Ok(()),
        (Some(DefaultValue::Int(i)), FieldType::Int { min, max }) if (min..=max).contains(&i) => {
            Ok(())
        }
        (Some(DefaultValue::Text(t)), FieldType::Enum(values)) if values.contains(&t) => Ok(()),
        (Some(DefaultValue::Text(t)), FieldType::Text(_))
            if matches!(
                super::rules::check(field, super::Value::Text(t.to_owned())),
                Ok(super::Value::Text(checked)) if checked == t
            ) =>
        {
            Ok(())
        }
        (Some(default), _) => bad(format!(
            "the default {default:?} is not a valid value of the field"
        )),
    }
}

fn check_distinct(schemas: &[&'static Schema]) -> Result<()> {
    let mut names = HashSet::new();
    let mut tables = HashSet::new();
    let mut rules = HashSet::new();
    let mut indexes = HashSet::new();
    for schema in schemas {
        if !names.insert(schema.name) {
            return Err(invalid(
                schema,
                "another registered entity has the same name",
            ));
        }
        if !tables.insert(schema.table) {
            return Err(invalid(
                schema,
                format!("another registered entity has the table {:?}", schema.table),
            ));
        }
        for rule in schema.unique {
            if !rules.insert(rule.name) || !indexes.insert(rule.index) {
                return Err(invalid(
                    schema,
                    format!("the unique rule {:?} (index {:?}) has the name or index of another registered rule", rule.name, rule.index),
                ));
            }
        }
    }
    Ok(())
}

fn referrers_of(target: &'static Schema, all: &[&'static Schema]) -> Vec<Referrer> {
    all.iter()
        .flat_map(|&schema| {
            schema
                .references()
                .filter(|(_, _, r)| same(r.target(), target))
                .map(move |(field, _, r)| Referrer {
                    schema,
                    field,
                    on_delete: r.on_delete,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Ddl, Field, FieldType, Reference, TextRule, Unique};
    use crate::{Category, Entity, EntityKind, Product, Review, User};

    #[test]
    fn stockroom_s_declarations_are_valid_and_name_its_constraints() {
        let catalog = Catalog::new(&[]).unwrap();
        assert_eq!(catalog.entries().len(), 4);
        let rules: Vec<Constraint> = catalog
            .entries()
            .iter()
            .flat_map(|e| {
                e.schema
                    .unique
                    .iter()
                    .map(|u| Constraint::of_rule(e.schema, u))
            })
            .collect();
        assert_eq!(
            rules,
            [
                Constraint::PRODUCT_SLUG,
                Constraint::PRODUCT_SKU,
                Constraint::CATEGORY_SLUG,
                Constraint::USER_EMAIL,
                Constraint::REVIEW_AUTHOR,
            ]
        );
        assert_eq!(EntityKind::of::<Product>(), EntityKind::PRODUCT);
        assert_eq!(EntityKind::of::<Category>(), EntityKind::CATEGORY);
        assert_eq!(EntityKind::of::<User>(), EntityKind::USER);
        assert_eq!(EntityKind::of::<Review>(), EntityKind::REVIEW);
        assert_eq!(
            catalog.constraint_in_message("violates \"products_sku_live\""),
            Some(Constraint::PRODUCT_SKU)
        );
    }

    #[test]
    fn deleting_a_product_reaches_its_reviews_and_a_user_both() {
        let catalog = Catalog::new(&[]).unwrap();
        let referrers = |schema| {
            let entry = catalog.entry(schema).unwrap();
            format!("{:?}", entry.referrers)
        };
        assert_eq!(
            referrers(Product::schema()),
            "[review.product_id (Cascade)]"
        );
        assert_eq!(
            referrers(User::schema()),
            "[product.created_by (SetNull), review.author_id (Cascade)]"
        );
    }

    static TAKEN: Schema = Schema {
        name: "thing",
        table: "products",
        fields: &[Field::new("code", FieldType::Text(TextRule::Name))],
        unique: &[],
        search: None,
        ddl: Ddl::Stockroom,
    };
    static KEYWORD: Schema = Schema {
        name: "order",
        table: "order",
        fields: &[Field::new("code", FieldType::Text(TextRule::Name))],
        unique: &[],
        search: None,
        ddl: Ddl::Stockroom,
    };
    static BAD_UNIQUE: Schema = Schema {
        name: "bin",
        table: "bins",
        fields: &[Field::new("code", FieldType::Text(TextRule::Name))],
        unique: &[Unique {
            name: "bin_slug",
            fields: &["slug"],
            index: "bins_slug_live",
        }],
        search: None,
        ddl: Ddl::Stockroom,
    };
    static REQUIRED_SET_NULL: Schema = Schema {
        name: "bin",
        table: "bins",
        fields: &[Field::new(
            "product_id",
            FieldType::Ref(Reference {
                target: Product::schema,
                on_delete: OnDelete::SetNull,
            }),
        )],
        unique: &[],
        search: None,
        ddl: Ddl::Stockroom,
    };
    fn unregistered() -> &'static Schema {
        &TAKEN
    }
    static REFERS_TO_UNREGISTERED: Schema = Schema {
        name: "bin",
        table: "bins",
        fields: &[Field::new(
            "thing_id",
            FieldType::Ref(Reference {
                target: unregistered,
                on_delete: OnDelete::Cascade,
            }),
        )],
        unique: &[],
        search: None,
        ddl: Ddl::Stockroom,
    };

    #[test]
    fn a_declaration_no_backend_can_store_is_refused_naming_the_entity_and_why() {
        for (schema, why) in [
            (&TAKEN, "Stockroom's"),
            (&KEYWORD, "not an identifier"),
            (&BAD_UNIQUE, "does not declare"),
            (&REQUIRED_SET_NULL, "nullable"),
            (&REFERS_TO_UNREGISTERED, "not registered"),
        ] {
            let err = Catalog::new(&[schema]).unwrap_err();
            match &err {
                Error::Schema {
                    entity,
                    problem: SchemaProblem::Invalid { reason },
                } => {
                    assert_eq!(entity.as_str(), schema.name);
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_entity_the_store_does_not_hold_is_unknown() {
        let catalog = Catalog::new(&[]).unwrap();
        let err = catalog.position(&BAD_UNIQUE).unwrap_err();
        assert!(matches!(err, Error::UnknownEntity { entity } if entity.as_str() == "bin"));
    }
}

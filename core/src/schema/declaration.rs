//! The declaration of an entity: its table, its fields and their types, the values unique among
//! live rows, what it refers to and what a delete for good does to the rows that refer to it.

use std::fmt;

use crate::validate::{MAX_EMAIL_LEN, MAX_NAME_LEN, MAX_SKU_LEN, MAX_SLUG_LEN, MAX_TEXT_LEN};

/// Everything a backend needs to know to store an entity and keep its rules, declared once
/// (usually by `#[derive(Entity)]`, see the facade crate's docs) and read by every adapter: memory
/// applies it to its maps, the SQL adapters derive their tables, statements and error mapping
/// from it.
///
/// Besides its declared [`fields`](Schema::fields), every entity has the bookkeeping columns
/// `id` (a UUID v7), `created_at`, `updated_at`, `deleted_at` (soft delete) and `version`.
pub struct Schema {
    /// The entity's name, as errors, spans and problem details show it: lower-case ASCII
    /// letters, digits and `_` (`"warehouse"`).
    pub name: &'static str,
    /// The SQL table that holds it (`"warehouses"`): lower-case ASCII letters, digits and `_`,
    /// not an SQL keyword, not one of Stockroom's own tables unless it is Stockroom's entity.
    pub table: &'static str,
    /// The fields besides the bookkeeping ones, in the order of the table's columns.
    pub fields: &'static [Field],
    /// The values that must be unique among live rows, in the order a write that breaks
    /// several reports them (the first one).
    pub unique: &'static [Unique],
    /// A text document derived from some fields, which a [`Condition::Search`] matches.
    ///
    /// [`Condition::Search`]: crate::schema::Condition::Search
    pub search: Option<Search>,
    /// Who creates and changes the table: Stockroom (the default) or the application.
    pub ddl: Ddl,
}

impl Schema {
    /// The field named `name`, with its position.
    pub fn field(&self, name: &str) -> Option<(usize, &'static Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    /// The position of the field named `name`.
    ///
    /// # Panics
    ///
    /// When the schema has no such field: for code that names a field its own declaration
    /// holds (a built-in entity's), where a missing one is a bug caught by the first test.
    pub fn index_of(&self, name: &str) -> usize {
        self.field(name)
            .unwrap_or_else(|| panic!("entity {} has no field {name}", self.name))
            .0
    }

    /// The fields that refer to other entities, with their positions and targets.
    pub fn references(&self) -> impl Iterator<Item = (usize, &'static Field, Reference)> + '_ {
        self.fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f.ty {
                FieldType::Ref(reference) => Some((i, f, reference)),
                _ => None,
            })
    }

    /// The entity's name as errors carry it.
    pub fn kind(&self) -> crate::EntityKind {
        crate::EntityKind::new(self.name)
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.name)
            .field("table", &self.table)
            .field("fields", &self.fields)
            .field("unique", &self.unique)
            .field("search", &self.search.as_ref().map(|s| s.fields))
            .field("ddl", &self.ddl)
            .finish()
    }
}

/// Who owns an entity's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Ddl {
    /// Stockroom creates the table (and its indexes) from the declaration when the store
    /// connects, adds a new nullable or defaulted column by itself, and refuses to connect when
    /// the table no longer matches the declaration.
    #[default]
    Stockroom,
    /// The application creates and migrates the table itself; Stockroom only checks, when the
    /// store connects, that the live table matches the declaration.
    Application,
    /// One of Stockroom's own tables, made by its embedded migrations.
    #[doc(hidden)]
    BuiltIn,
}

/// One declared field: a column of the entity's table.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name: the column's, and the `field` of validation errors about it.
    pub name: &'static str,
    /// What it holds, and the rule its values keep.
    pub ty: FieldType,
    /// Whether it may be absent (`Option<_>`, SQL `NULL`).
    pub nullable: bool,
    /// The value a row written before the field existed gets, which lets Stockroom add the
    /// column to an existing table by itself (nullable fields need none: they get `NULL`).
    pub default: Option<DefaultValue>,
}

impl Field {
    /// A required field of type `ty`.
    pub const fn new(name: &'static str, ty: FieldType) -> Self {
        Self {
            name,
            ty,
            nullable: false,
            default: None,
        }
    }

    /// The field, optional.
    pub const fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }

    /// The field, with the value existing rows get when it is added to a table.
    pub const fn with_default(mut self, default: DefaultValue) -> Self {
        self.default = Some(default);
        self
    }
}

/// A constant a field starts with in rows written before it existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A text (of a text or enum field).
    Text(&'static str),
}

/// What a field holds, and the rule every value keeps (checked by the core before any backend
/// sees it, the same way on every backend).
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    /// Text, with its rule.
    Text(TextRule),
    /// A 64-bit integer in `min..=max`.
    Int {
        /// The smallest value allowed.
        min: i64,
        /// The largest value allowed.
        max: i64,
    },
    /// A boolean.
    Bool,
    /// A UTC instant at microsecond precision, in the years 1 to 9999.
    Timestamp,
    /// A UUID that refers to no declared entity.
    Uuid,
    /// One of a fixed set of names, stored as text (`"open"`, `"closed"`).
    Enum(&'static [&'static str]),
    /// The id of a row of another entity (or of this one), which must be live when a row is
    /// written with it.
    Ref(Reference),
}

impl FieldType {
    /// Any 64-bit integer.
    pub const INT: FieldType = FieldType::Int {
        min: i64::MIN,
        max: i64::MAX,
    };

    /// `base` (an integer type) narrowed to `min..=max` where given: what a declaration's
    /// `min` and `max` make of a field's integer type.
    pub const fn int_between(base: FieldType, min: Option<i64>, max: Option<i64>) -> FieldType {
        match base {
            FieldType::Int {
                min: base_min,
                max: base_max,
            } => FieldType::Int {
                min: match min {
                    Some(m) => m,
                    None => base_min,
                },
                max: match max {
                    Some(m) => m,
                    None => base_max,
                },
            },
            other => other,
        }
    }

    /// The storage class of the field, as the SQL adapters map it to column types.
    pub const fn storage(&self) -> Storage {
        match self {
            FieldType::Text(_) | FieldType::Enum(_) => Storage::Text,
            FieldType::Int { .. } => Storage::Int,
            FieldType::Bool => Storage::Bool,
            FieldType::Timestamp => Storage::Timestamp,
            FieldType::Uuid | FieldType::Ref(_) => Storage::Uuid,
        }
    }
}

/// How a value is stored: the column type an SQL adapter gives a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    /// Text.
    Text,
    /// A 64-bit integer.
    Int,
    /// A boolean.
    Bool,
    /// A timestamp.
    Timestamp,
    /// A UUID.
    Uuid,
}

/// The rule a text field keeps (see [`Name`](crate::Name) and the other validated texts for the characters every rule
/// refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRule {
    /// A display name ([`Name`](crate::Name)): trimmed, 1 to [`MAX_NAME_LEN`] characters.
    Name,
    /// A URL slug ([`Slug`](crate::Slug)).
    Slug,
    /// A stock-keeping unit ([`Sku`](crate::Sku)).
    Sku,
    /// An email address ([`Email`](crate::Email)), stored lower-cased.
    Email,
    /// Free text ([`Text`](crate::Text)): line breaks allowed, up to [`MAX_TEXT_LEN`]
    /// characters.
    Text,
    /// One line of any text up to `max_len` characters: no control characters, not blank.
    Line {
        /// The most characters it may have.
        max_len: usize,
    },
}

impl TextRule {
    /// The most characters a value may have.
    pub const fn max_len(self) -> usize {
        match self {
            TextRule::Name => MAX_NAME_LEN,
            TextRule::Slug => MAX_SLUG_LEN,
            TextRule::Sku => MAX_SKU_LEN,
            TextRule::Email => MAX_EMAIL_LEN,
            TextRule::Text => MAX_TEXT_LEN,
            TextRule::Line { max_len } => max_len,
        }
    }
}

/// A field's reference to another entity.
#[derive(Clone, Copy)]
pub struct Reference {
    /// The entity referred to (a function, so that entities may refer to each other).
    pub target: fn() -> &'static Schema,
    /// What a delete for good of the target does to the rows that refer to it.
    pub on_delete: OnDelete,
}

impl Reference {
    /// The schema of the entity referred to.
    pub fn target(&self) -> &'static Schema {
        (self.target)()
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reference")
            .field("target", &self.target().name)
            .field("on_delete", &self.on_delete)
            .finish()
    }
}

/// What becomes of a row when a row it refers to is deleted for good (the `ON DELETE` of the SQL
/// schemas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// The reference is forgotten (`ON DELETE SET NULL`); the field must be nullable.
    SetNull,
    /// The row is deleted for good too (`ON DELETE CASCADE`).
    Cascade,
}

/// Values that must be unique among live (not soft-deleted) rows.
#[derive(Debug, Clone, Copy)]
pub struct Unique {
    /// The rule's stable name, as [`Constraint::name`](crate::Constraint::name) and problem
    /// details show it (`"warehouse_slug"`).
    pub name: &'static str,
    /// The fields whose values, together, are unique; the last one is the input field a
    /// conflict names.
    pub fields: &'static [&'static str],
    /// The name of the SQL index that enforces it (`"warehouses_slug_live"`).
    pub index: &'static str,
}

/// A search document derived from some text fields: the [`fold`](crate::adapter::fold)ed
/// values, one per line, of those that are present.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    /// The text fields the document is made of, in order.
    pub fields: &'static [&'static str],
}

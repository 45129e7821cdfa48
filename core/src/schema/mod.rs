//! Declaring an entity: the one description of an entity that every backend works from.
//!
//! An entity ([`Entity`](crate::Entity)) is declared once, as a [`Schema`]: its table, its
//! fields and their types ([`Field`], [`FieldType`], each with the rule its values keep), the
//! values unique among live rows ([`Unique`]), what it refers to and what a delete for good does
//! to the rows that refer to it ([`Reference`], [`OnDelete`]), and an optional search document
//! ([`Search`]). `#[derive(Entity)]` writes the declaration from a struct and its attributes;
//! Stockroom's own entities are declared the same way.
//!
//! That declaration is all an adapter needs: the memory store applies it to its maps, the SQL
//! adapters derive their tables, statements and error mapping from it. Rows cross the ports as
//! [`Record`]s (the declared fields' [`Value`]s in order, and the bookkeeping every row has);
//! the typed repositories ([`Repo`](crate::Repo)) turn entities into records and back, and
//! check every value against its field's rule ([`rules`]) before any backend sees it.
//!
//! A store holds Stockroom's entities and those the application registers
//! ([`StoreConfig::with_entity`](crate::StoreConfig::with_entity)): its [`Catalog`], whose
//! construction refuses a declaration no backend can store.

mod catalog;
mod declaration;
mod record;
pub mod rules;
pub mod tables;
mod value;

pub use catalog::{invalid, Catalog, Entry, Referrer, BOOKKEEPING_COLUMNS};
pub use declaration::{
    Ddl, DefaultValue, Field, FieldType, OnDelete, Reference, Schema, Search, Storage, TextRule,
    Unique,
};
pub use record::{
    collect_values, Changes, Condition, Incremented, Order, Record, Selection, Start, Values,
};
pub use value::{declared_name, FieldValue, TextEnum, Value};

pub use crate::ports::{RecordReader, RecordWriter};

/// The search document of a row of `entry`: the folded values of its search fields that are
/// present, one per line (see [`Search`]). Empty for an entity without a search document.
pub fn search_document(entry: &Entry, values: &[Value]) -> String {
    let mut document = String::new();
    for &field in &entry.search_fields {
        if let Value::Text(text) = &values[field] {
            if !document.is_empty() {
                document.push('\n');
            }
            document.push_str(&crate::query::fold(text));
        }
    }
    document
}

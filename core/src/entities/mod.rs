//! The entities of the catalogue and their inputs.
//!
//! Each entity is a plain row as the backends return it, declared once as a
//! [`crate::schema::Schema`] (its table, fields, unique values and references; see
//! [`schema`](crate::schema)). Its inputs are their own types: `NewX` (everything a new row
//! needs, validated on construction), `XPatch` (only the fields an update may touch) and
//! `XFilter` (which rows a list covers). [`Entity`] turns them into what every adapter works
//! with: field values, changes and conditions.

mod category;
pub(crate) mod decode;
mod movement;
mod product;
mod review;
mod user;

pub use category::{Category, CategoryFilter, CategoryPatch, NewCategory};
pub use movement::{NewStockMovement, StockMovement};
pub use product::{
    NewProduct, Product, ProductDetails, ProductFilter, ProductPatch, ProductStatus,
    ProductWithRelations,
};
pub use review::{NewReview, RatingStats, Review, ReviewFilter, ReviewPatch};
pub use user::{NewUser, User, UserFilter, UserPatch};

pub(crate) use decode::Inputs;

use std::fmt;
use std::hash::Hash;

use uuid::Uuid;

use crate::error::Result;
use crate::query::Cursor;
use crate::schema::{Condition, Record, Schema, Value};
use crate::time::Timestamp;

/// Stockroom's own entities, which every store holds.
pub(crate) fn built_in() -> [&'static Schema; 4] {
    [
        Product::schema(),
        Category::schema(),
        User::schema(),
        Review::schema(),
    ]
}

/// An entity: a row type declared once ([`Entity::schema`]) and the conversions between it,
/// its inputs and the [`Record`]s every adapter stores.
///
/// `#[derive(Entity)]` implements it from a struct and its attributes (see the facade crate's
/// docs, "Your own entities"); Stockroom's own entities implement it the same way. The
/// conversions are the core's: they run before any adapter sees a value, and the values they
/// produce are checked against the declaration ([`schema::rules`](crate::schema::rules)).
pub trait Entity: Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The typed id.
    type Id: Copy
        + Eq
        + Ord
        + Hash
        + fmt::Debug
        + fmt::Display
        + From<Uuid>
        + Into<Uuid>
        + Send
        + Sync
        + 'static;
    /// The input that creates one.
    type New: NewInput + fmt::Debug + Send + Sync + 'static;
    /// The input that updates one.
    type Patch: PatchInput + fmt::Debug + Clone + Send + Sync + 'static;
    /// The typed filter of `count`, `exists` and `list`.
    type Filter: FilterInput + fmt::Debug + Clone + Default + Send + Sync + 'static;

    /// The declaration: table, fields, unique values, references.
    fn schema() -> &'static Schema;

    /// The row's id.
    fn id(&self) -> Self::Id;
    /// When the row was created (the first key of the list order).
    fn created_at(&self) -> Timestamp;
    /// When the row last changed: an update, a soft delete or a restore.
    fn updated_at(&self) -> Timestamp;
    /// When the row was soft-deleted; `None` while it is live.
    fn deleted_at(&self) -> Option<Timestamp>;
    /// The row's version: 1 at creation, one more at every change.
    fn version(&self) -> i64;

    /// Whether the row is live (not soft-deleted).
    fn is_live(&self) -> bool {
        self.deleted_at().is_none()
    }

    /// The keyset position of this row in the `(created_at, id)` order.
    fn cursor(&self) -> Cursor {
        Cursor::after_row(self.created_at(), self.id().into())
    }

    /// The entity a stored record holds. A record whose values do not have the declared types
    /// is an [`Error::Backend`](crate::Error::Backend) (the table does not hold what the declaration says).
    fn from_record(record: Record) -> Result<Self>;

    /// The record of this row.
    fn to_record(&self) -> Record;
}

/// An input that creates a row of an entity: the values of the entity's declared fields.
pub trait NewInput: Sized {
    /// The values of the declared fields of the row this input creates, in declaration order,
    /// each valid for its field ([`Error::Validation`](crate::Error::Validation) naming the first that is not).
    fn into_values(self) -> Result<Vec<Value>>;

    /// The input holding `values`, one per declared field in declaration order (what generic
    /// code, such as the conformance battery or an admin API, builds inputs from). A value of
    /// the wrong type, or one that breaks its field's rule, is [`Error::Validation`](crate::Error::Validation) naming
    /// the field.
    fn from_values(values: Vec<Value>) -> Result<Self>;
}

/// An input that changes rows of an entity: the fields it sets.
pub trait PatchInput: Sized {
    /// The fields the patch sets, by position in the declaration, in declaration order, each
    /// value valid for its field ([`Error::Validation`](crate::Error::Validation) naming the first that is not).
    fn sets(&self) -> Result<Vec<(usize, Value)>>;

    /// The patch setting `sets` (field positions and values). A field the patch cannot change
    /// (a product's stock, say), or a value that breaks its field's rule, is
    /// [`Error::Validation`](crate::Error::Validation) naming the field.
    fn from_sets(sets: Vec<(usize, Value)>) -> Result<Self>;
}

/// A filter of an entity's rows: the conditions a row passes.
pub trait FilterInput: Sized {
    /// The conditions of the filter (their values are checked by the repository: one no row
    /// can hold makes the filter match nothing).
    fn conditions(&self) -> Result<Vec<Condition>>;

    /// The filter of `conditions`. A condition the filter cannot express (equality on a field
    /// it does not filter by) is [`Error::Validation`](crate::Error::Validation) naming the field.
    fn from_conditions(conditions: Vec<Condition>) -> Result<Self>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positions the hand-written inputs of Stockroom's entities use are those of the
    /// declarations the derive wrote.
    #[test]
    fn the_inputs_name_the_declared_positions() {
        let at = |schema: &'static Schema, name| schema.index_of(name);
        let (p, c, u, r) = (
            Product::schema(),
            Category::schema(),
            User::schema(),
            Review::schema(),
        );
        let product_fields = [
            "name",
            "slug",
            "sku",
            "description",
            "status",
            "stock",
            "category_id",
        ];
        assert_eq!(
            [
                product::NAME,
                product::SLUG,
                product::SKU,
                product::DESCRIPTION,
                product::STATUS,
                product::STOCK,
                product::CATEGORY_ID
            ],
            product_fields.map(|f| at(p, f))
        );
        assert_eq!(
            [category::NAME, category::SLUG],
            [at(c, "name"), at(c, "slug")]
        );
        assert_eq!(
            [user::EMAIL, user::DISPLAY_NAME],
            [at(u, "email"), at(u, "display_name")]
        );
        assert_eq!(
            [
                review::PRODUCT_ID,
                review::AUTHOR_ID,
                review::RATING,
                review::BODY
            ],
            ["product_id", "author_id", "rating", "body"].map(|f| at(r, f))
        );
    }

    /// An entity read from a record whose values another record shares (a row of an in-memory
    /// table) is the entity read from a record of its own (a row just decoded), and the values
    /// it shared are left whole for their other holder.
    #[test]
    fn an_entity_from_shared_values_is_the_same_and_leaves_them_whole() {
        let values = NewProduct::new("Lamp", "lamp", "LAMP-1")
            .unwrap()
            .with_description("A desk lamp")
            .unwrap()
            .into_values()
            .unwrap();
        let kept = Record::new(values, crate::time::now());
        let shared = Product::from_record(kept.clone()).unwrap();
        assert_eq!(
            std::sync::Arc::strong_count(&kept.values),
            1,
            "the decoded copy let go of the values"
        );
        let own_values: Vec<Value> = kept.values.to_vec();
        let alone = Record {
            values: own_values.into(),
            ..kept.clone()
        };
        assert_eq!(std::sync::Arc::strong_count(&alone.values), 1);
        let alone = Product::from_record(alone).unwrap();
        assert_eq!(shared, alone);
        assert_eq!(shared.description.as_deref(), Some("A desk lamp"));
        assert_eq!(
            shared.to_record(),
            kept,
            "the shared values are unchanged, and the entity writes back the record it came from"
        );
    }

    /// Every entity declared in this folder is one of Stockroom's own, which every store holds:
    /// a new entity file whose entity is missing from [`built_in`] fails here, naming it.
    #[test]
    fn every_entity_declared_here_is_built_in() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/src/entities");
        let built_in: Vec<&str> = built_in().iter().map(|s| s.table).collect();
        for file in std::fs::read_dir(folder).unwrap() {
            let path = file.unwrap().path();
            if path.ends_with("mod.rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            if !source.contains("derive(Debug, Clone, PartialEq, Entity)") {
                continue;
            }
            let table = source
                .split("table = \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{}: an entity without a table", path.display()));
            assert!(
                built_in.contains(&table),
                "{}: the entity of table {table} is not in entities::built_in()",
                path.display()
            );
        }
    }
}

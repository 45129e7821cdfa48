//! The entities of the catalogue and their inputs.
//!
//! Each entity is a plain row as the backends return it. Its inputs are their own types: `NewX`
//! (everything a new row needs, validated on construction) and `XPatch` (only the fields an update
//! may touch). Each entity states its own rules once, through [`Entity`]: the row an input
//! creates, what a patch changes, which filter a row passes, its unique values and references,
//! and what a delete for good does to the rows that refer to it. The memory adapter applies them
//! directly; the SQL adapters create and patch rows with them and enforce the same rules in
//! their schemas.

mod category;
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

use std::fmt;
use std::hash::Hash;

use uuid::Uuid;

use crate::error::{Constraint, EntityKind};
use crate::ids::EntityId;
use crate::ports::{ReadRepository, Readers, Repositories, Repository};
use crate::query::Cursor;
use crate::time::Timestamp;

/// What the generic repository needs to know of an entity.
pub trait Entity: Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The typed id.
    type Id: Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + Into<Uuid> + Send + Sync + 'static;
    /// The validated input that creates one.
    type New: fmt::Debug + Send + Sync + 'static;
    /// The validated input that updates one.
    type Patch: fmt::Debug + Clone + Send + Sync + 'static;
    /// The typed filter of `count`, `exists` and `list`.
    type Filter: fmt::Debug + Clone + Default + Send + Sync + 'static;
    /// Which entity this is.
    const KIND: EntityKind;

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

    /// The row `new` creates at `now`: a fresh id, version 1, created and updated at `now`.
    fn create(new: Self::New, now: Timestamp) -> Self;

    /// Applies `patch` to the row at `now` (new `updated_at`, next version).
    fn apply(&mut self, patch: &Self::Patch, now: Timestamp);

    /// Whether the row passes `filter` (for a backend that filters rows it holds; the SQL
    /// adapters translate the filter into SQL instead).
    fn matches(&self, filter: &Self::Filter) -> bool;

    /// Soft-deletes (`Some`) or restores (`None`) the row at `now` (new `updated_at`, next
    /// version).
    fn set_deleted_at(&mut self, deleted_at: Option<Timestamp>, now: Timestamp);

    /// The values that must be unique among live rows, each with its rule, in the order a
    /// write that breaks several reports them (the first one).
    fn unique_values(&self) -> Vec<(Constraint, String)> {
        Vec::new()
    }

    /// The rows this one refers to, which must be live when it is written, in the order a write
    /// that misses several reports them (the first one).
    fn references(&self) -> Vec<EntityId> {
        Vec::new()
    }

    /// The rows a patch makes a row refer to, which must be live.
    fn patch_references(_patch: &Self::Patch) -> Vec<EntityId> {
        Vec::new()
    }

    /// The rows a filter names (a category, a product, an author): a filter naming a row that is
    /// not live matches nothing, as if the row did not exist.
    fn filter_references(_filter: &Self::Filter) -> Vec<EntityId> {
        Vec::new()
    }

    /// The kinds of rows that may refer to a row of this entity (whose `on_delete_of` says what
    /// becomes of them when it is deleted for good).
    const REFERRED_BY: &'static [EntityKind] = &[];

    /// What becomes of this row when `target`, a row it refers to, is deleted for good (`None`
    /// when it does not refer to it).
    fn on_delete_of(&self, _target: EntityId) -> Option<OnDelete> {
        None
    }

    /// Forgets the reference to `target` (for [`OnDelete::SetNull`]).
    fn clear_reference(&mut self, _target: EntityId) {}

    /// The base reads of this entity among a session's readers: the one generic path to them
    /// (`ReadSession::reader::<E>()`).
    fn reader(readers: &mut dyn Readers) -> &mut dyn ReadRepository<Self>;

    /// The base reads and writes of this entity among a unit of work's repositories: the one
    /// generic path to them (`UnitOfWork::repository::<E>()`).
    fn repository(repositories: &mut dyn Repositories) -> &mut dyn Repository<Self>;
}

/// `Entity::reader` and `Entity::repository` of an entity: the upcasts to its ports.
macro_rules! entity_ports {
    () => {
        fn reader(
            readers: &mut dyn crate::ports::Readers,
        ) -> &mut dyn crate::ports::ReadRepository<Self> {
            readers
        }
        fn repository(
            repositories: &mut dyn crate::ports::Repositories,
        ) -> &mut dyn crate::ports::Repository<Self> {
            repositories
        }
    };
}
pub(crate) use entity_ports;

/// What becomes of a row when a row it refers to is deleted for good (the `ON DELETE` of the SQL
/// schemas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// The reference is forgotten (`ON DELETE SET NULL`).
    SetNull,
    /// The row is deleted for good too (`ON DELETE CASCADE`).
    Cascade,
}

/// Implements the row-metadata part of [`Entity`] for a struct with the standard fields.
macro_rules! entity_meta {
    () => {
        fn set_deleted_at(
            &mut self,
            deleted_at: Option<crate::time::Timestamp>,
            now: crate::time::Timestamp,
        ) {
            self.deleted_at = deleted_at;
            crate::entities::touch(&mut self.updated_at, &mut self.version, now);
        }
        fn id(&self) -> Self::Id {
            self.id
        }
        fn created_at(&self) -> crate::time::Timestamp {
            self.created_at
        }
        fn updated_at(&self) -> crate::time::Timestamp {
            self.updated_at
        }
        fn deleted_at(&self) -> Option<crate::time::Timestamp> {
            self.deleted_at
        }
        fn version(&self) -> i64 {
            self.version
        }
    };
}
pub(crate) use entity_meta;

/// Marks a row as changed at `now`: a new `updated_at` and the next version.
pub(crate) fn touch(updated_at: &mut Timestamp, version: &mut i64, now: Timestamp) {
    *updated_at = now;
    *version += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CategoryId, NewProduct, NewReview, Product, ProductId, Review, UserId};

    fn product() -> Product {
        let new = NewProduct::new("Mug", "mug", "MUG")
            .unwrap()
            .in_category(CategoryId::new())
            .created_by(UserId::new());
        Product::create(new, crate::time::now())
    }

    #[test]
    fn a_product_declares_its_rules_in_reporting_order() {
        let p = product();
        assert_eq!(
            p.unique_values(),
            [
                (Constraint::ProductSlug, "mug".to_owned()),
                (Constraint::ProductSku, "MUG".to_owned())
            ]
        );
        let (category, creator) = (p.category_id.unwrap(), p.created_by.unwrap());
        assert_eq!(
            p.references(),
            [EntityId::from(category), EntityId::from(creator)]
        );
        assert_eq!(p.on_delete_of(category.into()), Some(OnDelete::SetNull));
        assert_eq!(p.on_delete_of(ProductId::new().into()), None);
        let mut forgotten = p.clone();
        forgotten.clear_reference(creator.into());
        assert_eq!(
            (forgotten.category_id, forgotten.created_by),
            (Some(category), None)
        );
    }

    #[test]
    fn a_review_goes_with_its_product_and_its_author() {
        let (product, author) = (ProductId::new(), UserId::new());
        let review = Review::create(
            NewReview::new(product, author, 4).unwrap(),
            crate::time::now(),
        );
        assert_eq!(
            review.references(),
            [EntityId::from(product), author.into()]
        );
        assert_eq!(review.on_delete_of(product.into()), Some(OnDelete::Cascade));
        assert_eq!(review.on_delete_of(author.into()), Some(OnDelete::Cascade));
        assert!(Product::REFERRED_BY.contains(&EntityKind::Review));
    }

    #[test]
    fn soft_delete_bumps_the_version() {
        let mut p = product();
        let later = p.created_at + chrono::Duration::seconds(1);
        p.set_deleted_at(Some(later), later);
        assert_eq!(
            (p.deleted_at, p.updated_at, p.version),
            (Some(later), later, 2)
        );
    }
}

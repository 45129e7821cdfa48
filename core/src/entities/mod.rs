//! The entities of the catalogue and their inputs.
//!
//! Each entity is a plain row as the backends return it. Its inputs are their own types: `NewX`
//! (everything a new row needs, validated on construction) and `XPatch` (only the fields an update
//! may touch). Each also defines how it behaves in the reference semantics (`into_entity`,
//! `apply_to`, `matches`), which the in-memory adapter uses directly and the SQL adapters mirror.

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

use crate::error::EntityKind;
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

    fn id(&self) -> Self::Id;
    fn created_at(&self) -> Timestamp;
    fn updated_at(&self) -> Timestamp;
    fn deleted_at(&self) -> Option<Timestamp>;
    fn version(&self) -> i64;

    /// Whether the row is live (not soft-deleted).
    fn is_live(&self) -> bool {
        self.deleted_at().is_none()
    }

    /// The keyset position of this row in the `(created_at, id)` order.
    fn cursor(&self) -> Cursor {
        Cursor::after_row(self.created_at(), self.id().into())
    }

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

/// Implements the row-metadata part of [`Entity`] for a struct with the standard fields.
macro_rules! entity_meta {
    () => {
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

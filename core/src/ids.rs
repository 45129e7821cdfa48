//! Typed ids. Each is a UUID v7, so ids sort by creation time and a product id can never be passed
//! where a category id is expected.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id (UUID v7: time-ordered).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. one read from a database.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;

            /// Parses a UUID; a malformed one is a validation error on the field `id`.
            fn from_str(s: &str) -> crate::Result<Self> {
                Uuid::parse_str(s).map(Self).map_err(|_| {
                    crate::Error::validation("id", crate::Rule::Malformed { expected: "a UUID" })
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl PartialEq<$name> for EntityId {
            fn eq(&self, other: &$name) -> bool {
                *self == EntityId::from(*other)
            }
        }
    };
}

/// The id of a row of any kind, as errors name it: compare it with a typed id
/// (`error_id == product.id`) or match on its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "entity", content = "id", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum EntityId {
    /// The id of a product.
    Product(ProductId),
    /// The id of a category.
    Category(CategoryId),
    /// The id of a user.
    User(UserId),
    /// The id of a review.
    Review(ReviewId),
    /// The id of a stock movement (a ledger row).
    StockMovement(StockMovementId),
}

impl EntityId {
    /// The id `uuid` of a row of kind `entity`.
    pub fn new(entity: crate::EntityKind, uuid: Uuid) -> Self {
        use crate::EntityKind as K;
        match entity {
            K::Product => Self::Product(ProductId(uuid)),
            K::Category => Self::Category(CategoryId(uuid)),
            K::User => Self::User(UserId(uuid)),
            K::Review => Self::Review(ReviewId(uuid)),
            K::StockMovement => Self::StockMovement(StockMovementId(uuid)),
        }
    }

    /// Which kind of row it names.
    pub fn entity(&self) -> crate::EntityKind {
        use crate::EntityKind as K;
        match self {
            Self::Product(_) => K::Product,
            Self::Category(_) => K::Category,
            Self::User(_) => K::User,
            Self::Review(_) => K::Review,
            Self::StockMovement(_) => K::StockMovement,
        }
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> Uuid {
        match *self {
            Self::Product(id) => id.0,
            Self::Category(id) => id.0,
            Self::User(id) => id.0,
            Self::Review(id) => id.0,
            Self::StockMovement(id) => id.0,
        }
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_uuid(), f)
    }
}

macro_rules! entity_id_from {
    ($($variant:ident($id:ident)),+) => {
        $(
            impl From<$id> for EntityId {
                fn from(id: $id) -> Self {
                    EntityId::$variant(id)
                }
            }
        )+
    };
}

entity_id_from!(
    Product(ProductId),
    Category(CategoryId),
    User(UserId),
    Review(ReviewId),
    StockMovement(StockMovementId)
);

typed_id!(
    /// The id of a [`Product`](crate::Product).
    ProductId
);
typed_id!(
    /// The id of a [`Category`](crate::Category).
    CategoryId
);
typed_id!(
    /// The id of a [`User`](crate::User).
    UserId
);
typed_id!(
    /// The id of a [`Review`](crate::Review).
    ReviewId
);
typed_id!(
    /// The id of a [`StockMovement`](crate::StockMovement).
    StockMovementId
);

//! Typed ids. Each is a UUID v7, so ids sort by creation time and a product id can never be passed
//! where a category id is expected. An application declares its own with [`entity_id!`].

use std::fmt;

use uuid::Uuid;

use crate::error::EntityKind;

/// Declares a typed id for an entity: a UUID v7 (time-ordered) that cannot be mixed up with
/// another entity's id.
///
/// ```
/// stockroom_core::entity_id!(
///     /// The id of a warehouse.
///     pub WarehouseId
/// );
/// let id = WarehouseId::new();
/// assert_eq!(id.to_string().parse::<WarehouseId>().unwrap(), id);
/// ```
///
/// The id has `new` (a fresh UUID v7; there is no `Default`, which would be a different id at
/// every call), `from_uuid`, `as_uuid`, `Debug`, `Display`, `FromStr` (a
/// malformed one is a validation error on the field `id`), conversions from and to `Uuid`,
/// ordering and hashing, equality with the [`EntityId`] an error carries, `Serialize` and
/// `Deserialize` as a UUID string with the `serde` feature, and it is a
/// [`FieldValue`](crate::schema::FieldValue), so entities may refer to it.
///
/// An id has no `Default`:
///
/// ```compile_fail
/// stockroom_core::entity_id!(pub WarehouseId);
/// let id = WarehouseId::default();
/// ```
#[macro_export]
macro_rules! entity_id {
    ($(#[$doc:meta])* $vis:vis $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis struct $name($crate::__private::Uuid);

        // No `Default`: a default that is a different random id at every call would surprise a
        // `#[derive(Default)]` on a struct holding the id.
        #[allow(clippy::new_without_default)]
        impl $name {
            /// A fresh id (UUID v7: time-ordered).
            pub fn new() -> Self {
                Self($crate::__private::Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. one read from a database.
            pub const fn from_uuid(uuid: $crate::__private::Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> $crate::__private::Uuid {
                self.0
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::Error;

            /// Parses a UUID; a malformed one is a validation error on the field `id`.
            fn from_str(s: &str) -> $crate::Result<Self> {
                $crate::__private::parse_id(s).map(Self)
            }
        }

        impl ::core::convert::From<$crate::__private::Uuid> for $name {
            fn from(uuid: $crate::__private::Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ::core::convert::From<$name> for $crate::__private::Uuid {
            fn from(id: $name) -> $crate::__private::Uuid {
                id.0
            }
        }

        impl ::core::cmp::PartialEq<$name> for $crate::EntityId {
            fn eq(&self, other: &$name) -> bool {
                self.as_uuid() == other.0
            }
        }

        impl $crate::schema::FieldValue for $name {
            const TYPE: $crate::schema::FieldType = $crate::schema::FieldType::Uuid;
            fn to_value(&self) -> $crate::schema::Value {
                $crate::schema::Value::Uuid(self.0)
            }
            fn from_value(value: $crate::schema::Value) -> ::core::option::Option<Self> {
                value.as_uuid().map(Self)
            }
        }

        $crate::__id_serde!($name);
    };
}

/// `Serialize` and `Deserialize` of a typed id as its UUID, when stockroom-core has the `serde`
/// feature.
#[cfg(feature = "serde")]
#[doc(hidden)]
#[macro_export]
macro_rules! __id_serde {
    ($name:ident) => {
        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::__private::serde::Serialize::serialize(&self.0, serializer)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::core::result::Result<Self, D::Error> {
                <$crate::__private::Uuid as $crate::__private::serde::Deserialize>::deserialize(
                    deserializer,
                )
                .map(Self)
            }
        }
    };
}

/// Nothing: stockroom-core was built without the `serde` feature.
#[cfg(not(feature = "serde"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __id_serde {
    ($name:ident) => {};
}

/// Parses a typed id's text; a malformed one is a validation error on the field `id`.
#[doc(hidden)]
pub fn parse_id(s: &str) -> crate::Result<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| crate::Error::validation("id", crate::Rule::Malformed { expected: "a UUID" }))
}

/// The id of a row of any entity, as errors name it: compare it with a typed id
/// (`error_id == product.id`, which compares the UUIDs) or read its entity and UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityId {
    entity: EntityKind,
    id: Uuid,
}

impl EntityId {
    /// The id `uuid` of a row of entity `entity`.
    pub const fn new(entity: EntityKind, uuid: Uuid) -> Self {
        Self { entity, id: uuid }
    }

    /// Which entity's row it names.
    pub const fn entity(&self) -> EntityKind {
        self.entity
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.id
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({} {})", self.entity, self.id)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

/// `{"entity": "product", "id": "…"}`.
#[cfg(feature = "serde")]
impl serde::Serialize for EntityId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("EntityId", 2)?;
        s.serialize_field("entity", self.entity.as_str())?;
        s.serialize_field("id", &self.id)?;
        s.end()
    }
}

/// `EntityId::from(typed id)` for Stockroom's own ids, whose entity is known.
macro_rules! entity_id_from {
    ($($id:ident => $kind:ident),+ $(,)?) => {
        $(
            impl From<$id> for EntityId {
                fn from(id: $id) -> Self {
                    EntityId::new(EntityKind::$kind, id.as_uuid())
                }
            }
        )+
    };
}

crate::entity_id!(
    /// The id of a [`Product`](crate::Product).
    pub ProductId
);
crate::entity_id!(
    /// The id of a [`Category`](crate::Category).
    pub CategoryId
);
crate::entity_id!(
    /// The id of a [`User`](crate::User).
    pub UserId
);
crate::entity_id!(
    /// The id of a [`Review`](crate::Review).
    pub ReviewId
);
crate::entity_id!(
    /// The id of a [`StockMovement`](crate::StockMovement).
    pub StockMovementId
);

entity_id_from!(
    ProductId => PRODUCT,
    CategoryId => CATEGORY,
    UserId => USER,
    ReviewId => REVIEW,
    StockMovementId => STOCK_MOVEMENT,
);

//! The values of declared fields, as every backend stores them, and the Rust types a field may
//! have.

use std::fmt;

use uuid::Uuid;

use super::declaration::{FieldType, TextRule};
use crate::time::Timestamp;
use crate::validate::MAX_TEXT_LEN;

/// The value of one field of one row, as every backend stores it.
///
/// Text compares and hashes by its characters, whether it is [`Text`](Value::Text) or a
/// [`Name`](Value::Name).
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// No value (`None`, SQL `NULL`).
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
    /// One of an enum field's declared names (stored as text): a name the declaration holds,
    /// so that reading or writing one allocates nothing.
    Name(&'static str),
    /// A UUID (also a reference).
    Uuid(Uuid),
    /// A UTC instant at microsecond precision.
    Timestamp(Timestamp),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Uuid(a), Value::Uuid(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            (a, b) => a.as_text().is_some() && a.as_text() == b.as_text(),
        }
    }
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => 0u8.hash(state),
            Value::Bool(b) => (1u8, b).hash(state),
            Value::Int(i) => (2u8, i).hash(state),
            Value::Text(_) | Value::Name(_) => (3u8, self.as_text()).hash(state),
            Value::Uuid(u) => (4u8, u).hash(state),
            Value::Timestamp(t) => (5u8, t).hash(state),
        }
    }
}

impl Value {
    /// Whether it is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text inside, if it is text (or an enum's name).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Name(s) => Some(s),
            _ => None,
        }
    }

    /// The UUID inside, if it is one.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Value::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    /// The integer inside, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// The value as text: what a unique key is made of, and what a log may show of a value that
    /// is not secret (Stockroom's spans show none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => f.write_str(s),
            Value::Name(s) => f.write_str(s),
            Value::Uuid(u) => write!(f, "{u}"),
            Value::Timestamp(t) => write!(f, "{}", crate::adapter::to_micros(*t)),
        }
    }
}

/// A Rust type a declared field may have: how its values convert to and from [`Value`], and
/// the [`FieldType`] a field of this type has unless its declaration says more (a text rule, a
/// range, a reference).
///
/// Implemented for `String`, `i64`, `i32`, `i16`, `u8`, `bool`, [`Timestamp`], `Uuid`, the
/// typed ids (see [`entity_id!`](crate::entity_id)), enums that derive `TextEnum`, and
/// `Option<T>` of any of those. A field of another type does not compile.
pub trait FieldValue: Sized {
    /// The field type of a field of this type with no further declaration.
    const TYPE: FieldType;
    /// Whether the field may be absent (only `Option<_>`).
    const NULLABLE: bool = false;

    /// The stored form.
    fn to_value(&self) -> Value;

    /// The stored form, taking the value (no copy of a string).
    fn into_value(self) -> Value {
        self.to_value()
    }

    /// The Rust value of a stored one; `None` when the stored value has another type or is out
    /// of this type's range (a table that does not hold what the declaration says).
    fn from_value(value: Value) -> Option<Self>;
}

impl FieldValue for String {
    const TYPE: FieldType = FieldType::Text(TextRule::Line {
        max_len: MAX_TEXT_LEN,
    });
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn into_value(self) -> Value {
        Value::Text(self)
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s),
            Value::Name(s) => Some(s.to_owned()),
            _ => None,
        }
    }
}

impl FieldValue for i64 {
    const TYPE: FieldType = FieldType::INT;
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
    fn from_value(value: Value) -> Option<Self> {
        value.as_int()
    }
}

macro_rules! small_int {
    ($($t:ty),+) => {
        $(
            impl FieldValue for $t {
                const TYPE: FieldType = FieldType::Int {
                    min: <$t>::MIN as i64,
                    max: <$t>::MAX as i64,
                };
                fn to_value(&self) -> Value {
                    Value::Int(i64::from(*self))
                }
                fn from_value(value: Value) -> Option<Self> {
                    value.as_int().and_then(|i| <$t>::try_from(i).ok())
                }
            }
        )+
    };
}
small_int!(i32, i16, u8);

impl FieldValue for bool {
    const TYPE: FieldType = FieldType::Bool;
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl FieldValue for Timestamp {
    const TYPE: FieldType = FieldType::Timestamp;
    fn to_value(&self) -> Value {
        Value::Timestamp(*self)
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Timestamp(t) => Some(t),
            _ => None,
        }
    }
}

impl FieldValue for Uuid {
    const TYPE: FieldType = FieldType::Uuid;
    fn to_value(&self) -> Value {
        Value::Uuid(*self)
    }
    fn from_value(value: Value) -> Option<Self> {
        value.as_uuid()
    }
}

impl<T: FieldValue> FieldValue for Option<T> {
    const TYPE: FieldType = T::TYPE;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_value)
    }
    fn into_value(self) -> Value {
        self.map_or(Value::Null, T::into_value)
    }
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// The declared name `text` is, among `names`, as a [`Value::Name`] (no copy of the text);
/// `None` when it is none of them.
pub fn declared_name(names: &'static [&'static str], text: &str) -> Option<Value> {
    names.iter().find(|n| **n == text).map(|n| Value::Name(n))
}

/// An enum stored as text: its variants' stable names. `#[derive(TextEnum)]` implements it
/// (with [`FieldValue`]), naming each variant in `snake_case` unless told otherwise.
pub trait TextEnum: Copy + 'static {
    /// Every variant's name, in declaration order.
    const VALUES: &'static [&'static str];
    /// The variant's name.
    fn as_str(&self) -> &'static str;
    /// The variant named `name`.
    fn from_name(name: &str) -> Option<Self>;
}

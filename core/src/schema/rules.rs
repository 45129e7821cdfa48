//! The rules every declared value keeps, checked in the core before any backend sees a value,
//! so that every backend refuses the same input with the same error.

use super::declaration::{Field, FieldType, Schema, TextRule};
use super::value::Value;
use crate::error::{Error, Result, Rule};
use crate::validate::{check_length, check_no_control, check_range, check_visible};
use crate::validate::{Email, Name, Sku, Slug, Text};

/// `value` for `field` as it is stored: checked against the field's declaration and normalized
/// (a name trimmed of surrounding white space, an email lower-cased). A value that breaks the
/// field's rule is [`Error::Validation`] on the field.
pub fn check(field: &Field, value: Value) -> Result<Value> {
    let name = field.name;
    match (&field.ty, value) {
        (_, Value::Null) if field.nullable => Ok(Value::Null),
        (_, Value::Null) => Err(Error::validation(name, Rule::Empty)),
        (FieldType::Text(rule), Value::Text(text)) => {
            check_text(name, *rule, text).map(Value::Text)
        }
        (FieldType::Enum(names), v @ (Value::Text(_) | Value::Name(_))) => {
            // Stored as the declaration's own name: comparing and writing it copies nothing.
            super::value::declared_name(names, v.as_text().unwrap_or_default()).ok_or_else(|| {
                Error::validation(
                    name,
                    Rule::Malformed {
                        expected: "one of the field's declared values",
                    },
                )
            })
        }
        (FieldType::Int { min, max }, Value::Int(i)) => {
            check_range(name, i, *min, *max).map(|()| Value::Int(i))
        }
        (FieldType::Bool, v @ Value::Bool(_)) => Ok(v),
        (FieldType::Timestamp, Value::Timestamp(t)) => {
            crate::time::supported(name, t).map(Value::Timestamp)
        }
        (FieldType::Uuid | FieldType::Ref(_), v @ Value::Uuid(_)) => Ok(v),
        (_, _) => Err(Error::validation(
            name,
            Rule::Malformed {
                expected: "a value of the field's declared type",
            },
        )),
    }
}

fn check_text(field: &'static str, rule: TextRule, text: String) -> Result<String> {
    Ok(match rule {
        TextRule::Name => Name::parse(field, &text)?.into_string(),
        TextRule::Slug => Slug::parse(field, &text)?.into_string(),
        TextRule::Sku => Sku::parse(field, &text)?.into_string(),
        TextRule::Email => Email::parse(field, &text)?.into_string(),
        TextRule::Text => Text::parse(field, &text)?.into_string(),
        TextRule::Line { max_len } => {
            check_no_control(field, &text, false)?;
            check_length(field, &text, max_len)?;
            check_visible(field, &text)?;
            text
        }
    })
}

/// The values of a new row, in declaration order, each checked with [`check`]. A value for
/// every field: the first one that breaks its rule is the error.
pub fn check_all(schema: &'static Schema, values: Vec<Value>) -> Result<Vec<Value>> {
    debug_assert_eq!(values.len(), schema.fields.len(), "{}", schema.name);
    schema
        .fields
        .iter()
        .zip(values)
        .map(|(field, value)| check(field, value))
        .collect()
}

/// The stored form of a value looked up in `field` (by a unique rule or a filter), or `None`
/// when no stored row can hold it (it breaks the field's rule: a NUL byte, a malformed slug):
/// such a lookup finds nothing, on every backend, without asking one.
pub fn lookup(field: &Field, value: Value) -> Option<Value> {
    match check(field, value) {
        Ok(Value::Null) | Err(_) => None,
        Ok(v) => Some(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Field, FieldType, TextRule};

    static NAME: Field = Field::new("name", FieldType::Text(TextRule::Name));
    static CODE: Field = Field::new("code", FieldType::Text(TextRule::Line { max_len: 4 }));
    static COUNT: Field = Field::new("count", FieldType::Int { min: 0, max: 9 });
    static NOTE: Field = Field::new("note", FieldType::Text(TextRule::Text)).nullable();

    #[test]
    fn values_are_checked_and_normalized_by_their_declaration() {
        let trimmed = check(&NAME, Value::Text("  Mug ".into())).unwrap();
        assert_eq!(trimmed, Value::Text("Mug".into()));
        assert!(matches!(
            check(&CODE, Value::Text("ABCDE".into())),
            Err(Error::Validation {
                field: "code",
                rule: Rule::TooLong { max: 4 }
            })
        ));
        assert!(matches!(
            check(&CODE, Value::Text("A\0".into())),
            Err(Error::Validation {
                field: "code",
                rule: Rule::ControlCharacter
            })
        ));
        assert!(matches!(
            check(&COUNT, Value::Int(10)),
            Err(Error::Validation {
                field: "count",
                rule: Rule::OutOfRange { min: 0, max: 9 }
            })
        ));
        assert!(matches!(
            check(&COUNT, Value::Null),
            Err(Error::Validation {
                field: "count",
                rule: Rule::Empty
            })
        ));
        assert_eq!(check(&NOTE, Value::Null).unwrap(), Value::Null);
        assert!(check(&COUNT, Value::Text("1".into())).is_err());
    }

    #[test]
    fn a_lookup_of_a_value_no_row_can_hold_finds_nothing() {
        assert_eq!(lookup(&CODE, Value::Text("A\0B".into())), None);
        assert_eq!(
            lookup(&NAME, Value::Text(" Mug".into())),
            Some(Value::Text("Mug".into()))
        );
    }
}

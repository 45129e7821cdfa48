//! Sample rows made from an entity's declaration alone: a valid value for every field (distinct
//! for distinct sample numbers, so that unique rules hold), live rows for the references that
//! need one, and a value that breaks each field's rule.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use stockroom_core::schema::{
    rules, Field, FieldType, Record, RecordWriter, Schema, TextRule, Value,
};
use stockroom_core::{time, Store};
use uuid::Uuid;

/// The numbers of the rows made for references, apart from the samples a case numbers itself.
static NEXT_TARGET: AtomicU32 = AtomicU32::new(10_000);

/// The `n`th value of `field` (not a reference): valid for the field's rule, and different for
/// every `n` below 36 to the power of its length (what unique fields need).
pub fn value(field: &Field, n: u32) -> Value {
    match field.ty {
        FieldType::Text(rule) => Value::Text(text(rule, n)),
        FieldType::Int { min, max } => {
            let base = if min <= 0 && 0 <= max { 0 } else { min };
            Value::Int(base.saturating_add(i64::from(n)).min(max))
        }
        FieldType::Bool => Value::Bool(n % 2 == 1),
        FieldType::Timestamp => Value::Timestamp(
            Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::hours(i64::from(n)),
        ),
        FieldType::Uuid => Value::Uuid(Uuid::now_v7()),
        FieldType::Enum(values) => Value::Text(values[n as usize % values.len()].to_owned()),
        FieldType::Ref(_) => Value::Null,
    }
}

fn text(rule: TextRule, n: u32) -> String {
    match rule {
        TextRule::Name => format!("Sample {n}"),
        TextRule::Slug => format!("sample-{n}"),
        TextRule::Sku => format!("SAMPLE-{n}"),
        TextRule::Email => format!("sample{n}@example.com"),
        TextRule::Text => format!("Sample text {n}\nwith a second line"),
        TextRule::Line { max_len } => {
            let full = format!("s{n}");
            if full.len() <= max_len {
                return full;
            }
            // The last base-36 digits that fit: distinct while n < 36^max_len.
            let mut digits = String::new();
            let mut rest = n;
            loop {
                digits.insert(0, char::from_digit(rest % 36, 36).expect("a digit"));
                rest /= 36;
                if rest == 0 {
                    break;
                }
            }
            digits[digits.len().saturating_sub(max_len)..].to_owned()
        }
    }
}

/// A value of `field` that breaks its rule, with the words of the breach, or `None` when every
/// value of the field's type is valid (a boolean, an integer over all of `i64`).
pub fn bad_value(field: &Field) -> Option<(Value, &'static str)> {
    match field.ty {
        FieldType::Text(rule) => Some((
            Value::Text(format!("{}\0", text(rule, 1).chars().next().unwrap())),
            "a NUL byte",
        )),
        FieldType::Int { max, .. } if max < i64::MAX => {
            Some((Value::Int(max + 1), "above the range"))
        }
        FieldType::Int { min, .. } if min > i64::MIN => {
            Some((Value::Int(min - 1), "below the range"))
        }
        FieldType::Enum(_) => Some((
            Value::Text("no-such-value".to_owned()),
            "an undeclared name",
        )),
        FieldType::Timestamp => Some((
            Value::Timestamp(chrono::DateTime::<Utc>::MIN_UTC),
            "outside the years every backend stores",
        )),
        _ => None,
    }
}

/// The values of sample row `n` of `schema`: [`value`] for every field; for a reference, the id
/// of a live row made (and committed) for it when `fill` says so or the field is required, else
/// `Null`.
pub async fn values(
    store: &Arc<dyn Store>,
    schema: &'static Schema,
    n: u32,
    fill: bool,
) -> Vec<Value> {
    let mut values = Vec::with_capacity(schema.fields.len());
    for field in schema.fields {
        let v = match field.ty {
            FieldType::Ref(reference) if fill || !field.nullable => {
                Value::Uuid(Box::pin(target(store, reference.target())).await)
            }
            _ => value(field, n),
        };
        values.push(v);
    }
    values
}

/// Makes and commits a live row of `schema` for a reference to name; its id.
pub async fn target(store: &Arc<dyn Store>, schema: &'static Schema) -> Uuid {
    let n = NEXT_TARGET.fetch_add(1, Ordering::Relaxed);
    let values = values(store, schema, n, false).await;
    let values = rules::check_all(schema, values).expect("sample values are valid");
    let record = Record::new(values, time::now());
    let id = record.id;
    let mut uow = store.begin().await.expect("begin");
    let records: &mut dyn RecordWriter = uow.repositories();
    records
        .insert(schema, vec![record])
        .await
        .unwrap_or_else(|e| panic!("a sample {} for a reference: {e}", schema.name));
    uow.commit().await.expect("commit");
    id
}

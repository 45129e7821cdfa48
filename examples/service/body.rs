//! Reading a request's JSON body and query string, with problems in the API's words.
//!
//! A body is read within its time and size limits, parsed as JSON, checked against the fields
//! its type declares ([`Schema`]), and only then deserialized, so that every refusal names the
//! field (`price`, `products[1].sku`) and a stable rule, and says what was expected in the API's
//! terms ("an integer", "a UUID"), never in serde's ("i64", "struct ProductBody with 8
//! elements"). The rules:
//!
//! | rule | meaning |
//! |---|---|
//! | `unknown` | the body (or the query) has a field (parameter) the route does not take |
//! | `required` | a required field is missing |
//! | `not_null` | `null` where a value is needed |
//! | `malformed` | a value of the wrong type or shape; `expected` says what fits |
//! | `repeated` | a query parameter given more than once |

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use stockroom::axum::Problem;

/// How much of a body the service reads, and how long it waits for it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

/// Whether a field may be left out, and whether it may be `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Must be there, not `null`.
    Required,
    /// May be left out or `null` (which then means "none", or "clear it" in a patch).
    Nullable,
    /// May be left out, but not `null`.
    NotNull,
}

/// A field of a JSON body, as clients know it.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    /// What a valid value is, in the API's words: "a string", "a UUID", …
    pub expected: &'static str,
    pub presence: Presence,
    /// For an array of objects: their fields.
    pub items: Option<&'static [Field]>,
}

impl Field {
    pub const fn new(name: &'static str, expected: &'static str, presence: Presence) -> Self {
        Self {
            name,
            expected,
            presence,
            items: None,
        }
    }

    /// An array of objects, each with `items` as its fields.
    pub const fn array(
        name: &'static str,
        expected: &'static str,
        presence: Presence,
        items: &'static [Field],
    ) -> Self {
        Self {
            name,
            expected,
            presence,
            items: Some(items),
        }
    }
}

/// A body type's fields, checked before it is deserialized.
pub trait Schema: DeserializeOwned {
    const FIELDS: &'static [Field];
}

/// A JSON body of type `T`, read within the [`BodyLimits`] of the state; any refusal is a
/// problem response: 415 without a JSON content type, 413 when too large, 408 when too slow,
/// 400 when not JSON, 422 naming the field otherwise.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: Schema,
    BodyLimits: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let limits = BodyLimits::from_ref(state);
        if !is_json(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be JSON, sent as content-type: application/json",
            ));
        }
        let bytes = read(request.into_body(), limits).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
            .with("line", e.line())
            .with("column", e.column())
        })?;
        check(&value, T::FIELDS, "")?;
        serde_path_to_error::deserialize(value)
            .map(Body)
            .map_err(|e| mistyped(e.path(), T::FIELDS))
    }
}

/// `application/json`, or a `+json` type, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read(body: axum::body::Body, limits: BodyLimits) -> Result<Bytes, Problem> {
    let reading = axum::body::to_bytes(body, limits.max_bytes);
    match tokio::time::timeout(limits.read_timeout, reading).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_too_large(&e) => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body is larger than {} bytes", limits.max_bytes),
        )
        .with("max_bytes", limits.max_bytes)),
        Ok(Err(_)) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "the body could not be read",
        )),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!(
                "the body did not arrive within {} ms",
                limits.read_timeout.as_millis()
            ),
        )),
    }
}

fn is_too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Checks the object `value` against `fields`: no unknown field, every required one there, no
/// `null` where none is taken, and the same for the objects of an array field. `at` is the path
/// of `value` in the body (empty for the body itself).
fn check(value: &Value, fields: &'static [Field], at: &str) -> Result<(), Problem> {
    let Some(object) = value.as_object() else {
        let field = if at.is_empty() { "body" } else { at };
        return Err(malformed(field, "a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !fields.iter().any(|f| f.name == *k)) {
        let known: Vec<_> = fields.iter().map(|f| f.name).collect();
        let field = join(at, unknown);
        let detail = format!(
            "{field} is not a field of this body; its fields are {}",
            known.join(", ")
        );
        return Err(invalid(field, "unknown", detail));
    }
    for field in fields {
        let path = join(at, field.name);
        match (object.get(field.name), field.presence) {
            (None, Presence::Required) => {
                let detail = format!("{path} is required");
                return Err(invalid(path, "required", detail));
            }
            (Some(Value::Null), Presence::Required | Presence::NotNull) => {
                let detail = format!("{path} cannot be null");
                return Err(invalid(path, "not_null", detail));
            }
            (Some(Value::Array(items)), _) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(item_fields) = field.items {
                        check(item, item_fields, &format!("{path}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

/// The problem of a value that did not deserialize: its path in the body, and what its field
/// expects.
fn mistyped(path: &serde_path_to_error::Path, fields: &'static [Field]) -> Problem {
    let mut at = String::new();
    let mut fields = Some(fields);
    let mut expected = "a JSON object";
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Map { key } => {
                let field = fields.and_then(|fs| fs.iter().find(|f| f.name == key.as_str()));
                expected = field.map_or("a known field", |f| f.expected);
                fields = field.and_then(|f| f.items);
                at = join(&at, key);
            }
            serde_path_to_error::Segment::Seq { index } => {
                expected = "a JSON object";
                at = format!("{at}[{index}]");
            }
            _ => {}
        }
    }
    malformed(if at.is_empty() { "body" } else { &at }, expected)
}

/// A 422 problem on `field` with `rule`.
pub fn invalid(field: impl Into<String>, rule: &'static str, detail: String) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
        .with("field", field.into())
        .with("rule", rule)
}

fn malformed(field: &str, expected: &'static str) -> Problem {
    invalid(field, "malformed", format!("{field} must be {expected}")).with("expected", expected)
}

/// The query string's parameters, not yet checked against a route's.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-request",
                    "the query string is not URL-encoded name=value pairs",
                )
            })?;
        Ok(Self(pairs))
    }
}

impl QueryParams {
    /// The parameters, when each is one of `known` and given at most once (a 422 naming it
    /// otherwise).
    pub fn only(self, known: &[&'static str]) -> Result<Params, Problem> {
        let mut params = HashMap::new();
        for (name, value) in self.0 {
            let Some(known_name) = known.iter().copied().find(|k| *k == name) else {
                let detail = if known.is_empty() {
                    format!("{name} is not a parameter of this route, which takes none")
                } else {
                    format!(
                        "{name} is not a parameter of this route; its parameters are {}",
                        known.join(", ")
                    )
                };
                return Err(invalid(name, "unknown", detail));
            };
            if params.insert(known_name, value).is_some() {
                let detail = format!("{name} is given more than once");
                return Err(invalid(name, "repeated", detail));
            }
        }
        Ok(Params(params))
    }
}

/// The checked parameters of a query string.
pub struct Params(HashMap<&'static str, String>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The query string of a route that takes no parameters: any parameter is a 422.
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        QueryParams::from_request_parts(parts, state)
            .await?
            .only(&[])
            .map(|_| NoQuery)
    }
}

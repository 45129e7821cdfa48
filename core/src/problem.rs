//! Errors as HTTP responses: RFC 9457 problem details (feature `axum`).
//!
//! [`Error`] implements axum's `IntoResponse`, so a handler can return
//! `Result<T, stockroom::Error>` and use `?` on every Stockroom call. The response is an
//! `application/problem+json` [`Problem`] whose members are stable names of the API, never Rust
//! type names, driver messages or database index names:
//!
//! | error | status | `type` | members |
//! |---|---|---|---|
//! | `Validation` | 422 | `urn:stockroom:problem:validation` | `field`, `rule` (+ `max`, `min`, `expected`, `other`) |
//! | `NotFound` | 404 | `…:not-found` | `entity`, `id` |
//! | `Conflict` | 409 | `…:conflict` | `entity`, `constraint`, `field`, `rule: "taken"` |
//! | `Referenced` | 409 | `…:referenced` | `entity`, `id`, `table` |
//! | `InsufficientStock` | 409 | `…:insufficient-stock` | `product_id`, `available`, `requested` |
//! | `StaleVersion` | 412 | `…:stale-version` | `entity`, `id`, `expected_version`, `current_version` |
//! | `Transient` (nothing was applied) | 503, `Retry-After: 1` | `…:transient` | |
//! | `Unavailable` | 503, `Retry-After: 5` | `…:unavailable` | |
//! | `AmbiguousCommit` (may or may not have been applied) | 500, no `Retry-After` | `…:ambiguous-commit` | |
//! | `Storage` | 500, no `Retry-After` | `…:storage-fault` | `fault` (`read_only`, `permission_denied`, `full`, `corrupt`) |
//! | `Unsupported`, `Backend` | 500 | `…:internal` | (the cause is logged, not sent) |
//!
//! A stale version is a failed precondition (412, as for a stale `If-Match`): the caller named
//! the version it expected and the row has moved on.
//!
//! The `type` is `<base><kind>`. The base is `urn:stockroom:problem:` unless the application
//! chooses its own, once, when it starts ([`set_type_base`], e.g.
//! `https://api.example.com/problems/`, where it may document each kind), or for one problem
//! ([`Problem::with_type_base`]).

use axum_core::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::StatusCode;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::OnceLock;

/// The base of every problem's `type` when the application chose none.
pub const DEFAULT_TYPE_BASE: &str = "urn:stockroom:problem:";

static TYPE_BASE: OnceLock<String> = OnceLock::new();

/// Sets the base of every problem's `type` for the rest of the process: a problem of kind
/// `validation` then has the type `<base>validation`. Call it once, when the application
/// starts, before the first response.
///
/// The base must be an absolute URI (a scheme, then `:`) with no white space, such as
/// `https://api.example.com/problems/` or `urn:example:problem:`. A base that is not, or a
/// second call with a different base, is refused and changes nothing: the process keeps one
/// base, so a client never sees two types for one kind.
///
/// ```
/// use stockroom_core::problem::{set_type_base, type_base};
///
/// set_type_base("https://api.example.com/problems/")?;
/// assert_eq!(type_base(), "https://api.example.com/problems/");
/// // The same base again is fine; another one is refused.
/// set_type_base("https://api.example.com/problems/")?;
/// assert!(set_type_base("urn:other:").is_err());
/// # Ok::<(), stockroom_core::problem::TypeBaseError>(())
/// ```
pub fn set_type_base(base: &str) -> Result<(), TypeBaseError> {
    if !is_absolute_uri(base) {
        return Err(TypeBaseError::NotAnAbsoluteUri(base.to_owned()));
    }
    let chosen = TYPE_BASE.get_or_init(|| base.to_owned());
    if chosen != base {
        return Err(TypeBaseError::AlreadySet(chosen.clone()));
    }
    Ok(())
}

/// The base of every problem's `type`: the one [`set_type_base`] set, else
/// [`DEFAULT_TYPE_BASE`].
pub fn type_base() -> &'static str {
    TYPE_BASE.get().map_or(DEFAULT_TYPE_BASE, String::as_str)
}

/// Why [`set_type_base`] (or [`Problem::with_type_base`]) refused a base.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeBaseError {
    /// The base is not an absolute URI with no white space (the refused base).
    NotAnAbsoluteUri(String),
    /// The process already has another base (the one it keeps).
    AlreadySet(String),
}

impl fmt::Display for TypeBaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeBaseError::NotAnAbsoluteUri(base) => write!(
                f,
                "the problem type base {base:?} is not an absolute URI (a scheme, then ':', no white space)"
            ),
            TypeBaseError::AlreadySet(base) => {
                write!(f, "the problem type base is already {base:?}")
            }
        }
    }
}

impl std::error::Error for TypeBaseError {}

/// Whether `base` is an absolute URI as RFC 3986 starts one (`scheme ":"`, the scheme a letter
/// then letters, digits, `+`, `-` or `.`), with no white space or control character in it.
fn is_absolute_uri(base: &str) -> bool {
    let Some((scheme, _)) = base.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !base.chars().any(|c| c.is_whitespace() || c.is_control())
}

use crate::error::{Error, Rule};

/// An RFC 9457 problem: an `application/problem+json` response with a status, a stable `type`
/// (`<base><kind>`, the base `urn:stockroom:problem:` unless the application set its own: see
/// [`set_type_base`]), a `title`, a `detail` and extension members.
///
/// Made from an [`Error`] (`Problem::from(error)`), or directly for an application's own
/// failures:
///
/// ```
/// use stockroom_core::problem::Problem;
/// use http::StatusCode;
///
/// let problem = Problem::new(StatusCode::BAD_REQUEST, "malformed-request", "the body is not JSON")
///     .with("field", "body");
/// assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
/// assert_eq!(problem.kind(), "malformed-request");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    members: Map<String, Value>,
    retry_after: Option<u32>,
    type_base: Option<String>,
}

impl Problem {
    /// A problem of `status`, whose `type` is `<base><kind>` (see [`type_base`]).
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            members: Map::new(),
            retry_after: None,
            type_base: None,
        }
    }

    /// The problem with its `type` under `base` instead of the process's [`type_base`]; a base
    /// that is not an absolute URI is refused, as [`set_type_base`] refuses it.
    pub fn with_type_base(mut self, base: &str) -> Result<Self, TypeBaseError> {
        if !is_absolute_uri(base) {
            return Err(TypeBaseError::NotAnAbsoluteUri(base.to_owned()));
        }
        self.type_base = Some(base.to_owned());
        Ok(self)
    }

    /// The `type` URI: the base, then the kind.
    pub fn type_uri(&self) -> String {
        let base: &str = match &self.type_base {
            Some(base) => base,
            None => type_base(),
        };
        format!("{base}{}", self.kind)
    }

    /// The problem with one more extension member.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.members.insert(name.to_owned(), value.into());
        self
    }

    /// The problem with a `Retry-After` header of `seconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A 500 that says nothing about its cause (which belongs in the log).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The last part of the `type` URI, such as `validation`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The extension members.
    pub fn members(&self) -> &Map<String, Value> {
        &self.members
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), self.type_uri().into());
        body.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        body.extend(self.members.clone());
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        let detail = error.to_string();
        match error {
            Error::Validation { field, rule } => validation(field, &rule, detail),
            Error::NotFound { entity, id } => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
                    .with("entity", entity.as_str())
                    .with("id", id.to_string())
            }
            Error::Conflict { constraint } => {
                Problem::new(StatusCode::CONFLICT, "conflict", detail)
                    .with("entity", constraint.entity().as_str())
                    .with("constraint", constraint.as_str())
                    .with("field", constraint.field())
                    .with("rule", "taken")
            }
            Error::Referenced { entity, id, table } => {
                Problem::new(StatusCode::CONFLICT, "referenced", detail)
                    .with("entity", entity.as_str())
                    .with("id", id.to_string())
                    .with("table", table)
            }
            Error::InsufficientStock {
                product,
                available,
                requested,
            } => Problem::new(StatusCode::CONFLICT, "insufficient-stock", detail)
                .with("product_id", product.to_string())
                .with("available", available)
                .with("requested", requested),
            Error::StaleVersion {
                entity,
                id,
                expected,
                actual,
            } => Problem::new(StatusCode::PRECONDITION_FAILED, "stale-version", detail)
                .with("entity", entity.as_str())
                .with("id", id.to_string())
                .with("expected_version", expected)
                .with("current_version", actual),
            Error::Transient { .. } => {
                tracing::warn!(%error, "transient failure");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "transient",
                    "the store is busy or the request ran out of time; nothing was applied: \
                     retry the request",
                )
                .with_retry_after(1)
            }
            Error::Unavailable { .. } => {
                tracing::error!(%error, "store unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store cannot be reached; retry later",
                )
                .with_retry_after(5)
            }
            Error::AmbiguousCommit { .. } => {
                tracing::error!(%error, "commit outcome unknown");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ambiguous-commit",
                    "the request may or may not have been applied; read before retrying, or \
                     retry with the same idempotency key",
                )
            }
            Error::Storage { fault, .. } => {
                tracing::error!(%error, "storage fault");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage-fault",
                    "the store cannot do this until an operator intervenes",
                )
                .with("fault", fault.as_str())
            }
            other => {
                // The details (driver messages, causes) go to the log, never to the client.
                tracing::error!(error = ?other, "request failed");
                Problem::internal()
            }
        }
    }
}

fn validation(field: &'static str, rule: &Rule, detail: String) -> Problem {
    let problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
        .with("field", field)
        .with("rule", rule.as_str());
    match *rule {
        Rule::TooLong { max } => problem.with("max", max),
        Rule::Malformed { expected } => problem.with("expected", expected),
        Rule::OutOfRange { min, max } => problem.with("min", min).with("max", max),
        Rule::SameAs { other } => problem.with("other", other),
        _ => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Constraint, EntityKind};

    #[test]
    fn a_problem_takes_the_type_base_it_is_given_and_refuses_one_that_is_not_a_uri() {
        let problem = Problem::from(Error::validation("name", Rule::Empty));
        assert_eq!(problem.type_uri(), "urn:stockroom:problem:validation");
        let ours = problem
            .clone()
            .with_type_base("https://api.example.com/problems/")
            .unwrap();
        assert_eq!(
            ours.body()["type"],
            "https://api.example.com/problems/validation"
        );
        for bad in [
            "",
            "problems/",
            "/problems/",
            "1http://x/",
            "https://a b/",
            "urn:x:\n",
        ] {
            let refused = problem.clone().with_type_base(bad);
            assert_eq!(
                refused,
                Err(TypeBaseError::NotAnAbsoluteUri(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_conflict_names_the_constraint_and_the_field_not_the_index() {
        let problem = Problem::from(Error::Conflict {
            constraint: Constraint::PRODUCT_SLUG,
        });
        assert_eq!(problem.status(), StatusCode::CONFLICT);
        let body = problem.body();
        assert_eq!(body["constraint"], "product_slug");
        assert_eq!(body["field"], "slug");
        assert_eq!(body["rule"], "taken");
        assert!(!body.to_string().contains("products_slug_live"), "{body}");
    }

    /// An application's entity and rule are named as Stockroom's are.
    #[test]
    fn a_conflict_on_an_applications_rule_names_its_entity_rule_and_field() {
        let warehouse = EntityKind::new("warehouse");
        let problem = Problem::from(Error::Conflict {
            constraint: Constraint::new(warehouse, "warehouse_code", "code"),
        });
        let body = problem.body();
        assert_eq!(
            (&body["entity"], &body["constraint"], &body["field"]),
            (
                &Value::from("warehouse"),
                &Value::from("warehouse_code"),
                &Value::from("code")
            )
        );
        let missing = Problem::from(Error::not_found(warehouse, uuid::Uuid::now_v7())).body();
        assert_eq!(missing["entity"], "warehouse");
    }

    /// A delete another table's rows refuse is a conflict with the row and that table.
    #[test]
    fn a_referenced_row_is_a_conflict_naming_the_referring_table() {
        let id = uuid::Uuid::now_v7();
        let problem = Problem::from(Error::referenced(EntityKind::PRODUCT, id, "orders"));
        assert_eq!(problem.status(), StatusCode::CONFLICT);
        let body = problem.body();
        assert!(
            body["type"].as_str().unwrap().ends_with("referenced"),
            "{body}"
        );
        assert_eq!(
            (&body["entity"], &body["id"], &body["table"]),
            (
                &Value::from("product"),
                &Value::from(id.to_string()),
                &Value::from("orders")
            )
        );
    }

    #[test]
    fn a_validation_error_names_the_field_and_the_rule() {
        let body = Problem::from(Error::validation("name", Rule::TooLong { max: 200 })).body();
        assert_eq!(
            (&body["status"], &body["field"], &body["rule"], &body["max"]),
            (
                &Value::from(422),
                &Value::from("name"),
                &Value::from("too_long"),
                &Value::from(200)
            )
        );
        assert_eq!(body["type"], "urn:stockroom:problem:validation");
    }

    #[test]
    fn a_stale_version_is_a_failed_precondition() {
        let problem = Problem::from(Error::StaleVersion {
            entity: EntityKind::PRODUCT,
            id: crate::EntityId::from(crate::ProductId::new()),
            expected: 1,
            actual: 2,
        });
        assert_eq!(problem.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(problem.body()["current_version"], 2);
    }

    #[test]
    fn backend_errors_say_nothing_of_their_cause() {
        let error = Error::backend("boom", std::io::Error::other("secret driver detail"));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn a_storage_fault_is_not_retry_later() {
        let response = Error::storage(
            crate::StorageFault::ReadOnly,
            "attempt to write a readonly database",
        )
        .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn unavailable_asks_to_retry_later() {
        let response = Error::unavailable("pool timed out").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}

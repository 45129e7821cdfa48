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

use axum_core::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::StatusCode;
use serde_json::{Map, Value};

use crate::error::{Error, Rule};

/// An RFC 9457 problem: an `application/problem+json` response with a status, a stable `type`
/// (`urn:stockroom:problem:<kind>`), a `title`, a `detail` and extension members.
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
}

impl Problem {
    /// A problem of `status`, whose `type` is `urn:stockroom:problem:<kind>`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            members: Map::new(),
            retry_after: None,
        }
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
        body.insert(
            "type".into(),
            format!("urn:stockroom:problem:{}", self.kind).into(),
        );
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
        let response = Error::Storage {
            fault: crate::StorageFault::ReadOnly,
            reason: "attempt to write a readonly database".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn unavailable_asks_to_retry_later() {
        let response = Error::Unavailable {
            reason: "pool timed out".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}

//! The service's router: state, the per-request unit of work as an extractor, handlers, the
//! bounds of every request, and the mapping of `stockroom::Error` onto RFC 9457 problem
//! responses.
//!
//! # How a request's unit of work works here
//!
//! The service uses the facade's `axum` feature (`stockroom::axum`). A handler that writes takes a
//! [`RequestUnitOfWork`] argument. Extracting it costs nothing: it begins its transaction only
//! when the handler first asks for a repository (`work.products().await?`), after the input was
//! validated. The handler's success type is [`Committed<T>`], and the only way to make one is
//! [`RequestUnitOfWork::commit`], which commits *before* the response exists: a failed commit is
//! an `Err`, so the client gets a problem response, never a success for data that was thrown
//! away. Returning early with an error (`?`) or panicking drops the unit of work, and the
//! transaction rolls back. As a backstop, [`commit_guard`] turns any 2xx response of a request
//! whose work began and did not commit into a 500.
//!
//! A write that may simply be run again when it meets a transient failure (a busy database, a
//! deadlock) goes through the retry runner instead: `create_category` runs its unit of work with
//! `store.run(&policy, …)`, and the transfer use case does the same inside. Their policy has a
//! deadline (`STOCKROOM_WRITE_DEADLINE_MS`, shortened to fit in the request's own time), so a
//! row locked for long costs the requests that want it a few seconds, and holds no connection
//! longer.
//!
//! # Answers that say what happened
//!
//! A 503 with `Retry-After` (`transient`, `unavailable`, `timeout`) promises that nothing was
//! applied: the same request may be sent again. A write whose outcome is unknown (a commit, or
//! a transfer's stock move, still running when its deadline or the request's timeout came) is
//! a 500 `ambiguous-commit` without `Retry-After`: read back before sending it again. So that a
//! transfer can always be sent again safely, the service requires an `Idempotency-Key` for it
//! (chosen by the client before it sends the request, so that it holds the key even when no
//! answer arrives); sent again with the same key, a transfer applies at most once. A deadline
//! of the retry runner ends within the request's time, so the runner, which knows whether a
//! commit was in flight, answers before the request is cut off; a unit of work cut off while
//! its commit ran is answered as ambiguous by `commit_guard`.
//!
//! # Events
//!
//! Each product write and transfer also writes Stockroom's own event in its unit of work (the
//! service turns `StoreConfig::own_events` on), so the event is committed with the write or
//! rolled back with it; the service's relay (`events.rs`) delivers committed events to NATS
//! JetStream or to the log. `GET /outbox` answers what waits ([`outbox`]).
//!
//! Handlers that only read take the [`AppState`] and use `store.read()` (no transaction) or the
//! use cases of `StoreExt`; those whose answer a client uses to check its own write (the ledger,
//! an empty PATCH's ETag) use `store.read_primary()`, which a read replica's lag cannot hide
//! that write from. Errors are `stockroom::Error`s, answered as RFC 9457 problems by the
//! library's mapping ([`Problem`]); the service adds the problems of its own (bodies and query
//! strings, see `body.rs`; unknown routes; timeouts).
//!
//! # Bounds
//!
//! Every API request waits for one of `max_in_flight` slots and must be answered within
//! `request_timeout`, the wait included; past it the handler is dropped (its unit of work rolls
//! back) and the answer is a 503 `timeout` problem. The health probes are not counted, so a
//! busy service still says it is alive; the readiness probes share one check of the store
//! instead (see [`readyz`]).

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
pub use stockroom::axum::{commit_guard, Problem};
use stockroom::request::{Committed, RequestUnitOfWork};
use stockroom::{
    Category, CategoryId, Cursor, EntityKind, Error, Limit, NewCategory, NewProduct, NewReview,
    NewUser, Page, Product, ProductFilter, ProductId, ProductPatch, ProductStatus, RetryPolicy,
    Rule, Store, StoreExt, TransferRequest, UserId,
};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::body::{Body, BodyLimits, Field, NoQuery, Params, Presence, QueryParams, Schema};
use crate::events::{Deliveries, Outbox};
use crate::settings::Limits;

/// What every handler shares: the store, chosen at run time, and the service's limits. The
/// per-request unit of work takes its store from here (`FromRef`).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub limits: Arc<Limits>,
    /// The readiness check the probes share (see [`readyz`]).
    readiness: Arc<SharedCheck>,
    /// What `/metrics` renders: the process's Prometheus recorder, when one is installed.
    metrics: Option<PrometheusHandle>,
    /// What the service's relay delivered, for `/outbox` (none when no relay runs).
    outbox: Option<Arc<Deliveries>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self {
            store,
            limits: Arc::new(limits),
            readiness: Arc::default(),
            metrics: None,
            outbox: None,
        }
    }

    /// The state, with `/outbox` showing what the service's relay delivered.
    pub fn with_outbox(mut self, deliveries: Arc<Deliveries>) -> Self {
        self.outbox = Some(deliveries);
        self
    }

    /// The state, with `/metrics` rendering what `handle`'s recorder has recorded (Stockroom's
    /// metrics, with the facade's `metrics` feature, among the application's own).
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// How transfers and retried units of work are run: the default retries, within the write
    /// deadline, and within the request's time less the runner's grace (see
    /// [`RetryPolicy::DEADLINE_GRACE`]) and a margin for the answer: the runner's answer past
    /// its deadline says whether a commit may have happened, which the answer of a request cut
    /// off by its timeout cannot. With no time left for that, the write does not begin:
    /// `Transient`, nothing applied.
    fn policy(&self, request: Option<&RequestDeadline>) -> Result<RetryPolicy, Error> {
        const MARGIN: Duration = Duration::from_millis(100);
        let mut deadline = self.limits.write_deadline;
        if let Some(RequestDeadline(cut_off)) = request {
            let left = cut_off
                .saturating_duration_since(tokio::time::Instant::now())
                .saturating_sub(RetryPolicy::DEADLINE_GRACE + MARGIN);
            if left.is_zero() {
                return Err(Error::transient(
                    "the request's time ran out before its write began",
                ));
            }
            deadline = deadline.min(left);
        }
        Ok(RetryPolicy::default().with_deadline(deadline))
    }
}

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.store)
    }
}

impl FromRef<AppState> for BodyLimits {
    fn from_ref(state: &AppState) -> Self {
        BodyLimits {
            max_bytes: state.limits.max_body_bytes,
            read_timeout: state.limits.body_read_timeout,
        }
    }
}

/// The service: every route, with its middleware.
pub fn router(state: AppState) -> Router {
    service(routes(), state)
}

/// The API routes alone, without middleware, so that a test can add routes of its own to them
/// before [`service`] wraps them all.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/categories", post(create_category))
        .route("/products", post(create_product).get(list_products))
        .route(
            "/products/{id}",
            get(get_product)
                .patch(update_product)
                .delete(delete_product),
        )
        .route("/products/{id}/details", get(product_details))
        .route("/products/{id}/restore", post(restore_product))
        .route(
            "/products/{id}/reviews",
            post(create_review).get(list_reviews),
        )
        .route("/products/{id}/movements", get(list_movements))
        .route("/trash/products", get(trash))
        .route("/transfers", post(transfer))
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user).delete(delete_user))
        .route("/outbox", get(outbox))
}

/// The health probes: outside the in-flight limit, so a busy service still answers them.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Wraps `routes` (bounded as the [module docs](self) say) and the probes with the middleware:
/// request spans, panics as 500 problems, the commit guard and the body limit.
pub fn service(routes: Router<AppState>, state: AppState) -> Router {
    let gate = Gate {
        slots: Arc::new(Semaphore::new(state.limits.max_in_flight as usize)),
        timeout: state.limits.request_timeout,
    };
    routes
        .route_layer(middleware::from_fn_with_state(gate, bounded))
        .merge(probes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by `Body`, within the same limit; this bounds any other extractor.
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn(commit_guard))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    tracing::info_span!(
                        "http.request",
                        method = %request.method(),
                        route,
                        status = tracing::field::Empty,
                        latency_ms = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16());
                    span.record("latency_ms", latency.as_secs_f64() * 1_000.0);
                    tracing::info!("response");
                }),
        )
        .with_state(state)
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves and the connections
/// are drained (see `server.rs`), then stops the relay (after the last request's events were
/// committed; its round under way finishes), then closes the store.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    store: Arc<dyn Store>,
    outbox: Option<Outbox>,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    crate::server::serve(listener, router, limits, shutdown).await;
    if let Some(outbox) = outbox {
        outbox.stop().await;
    }
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// Bounds

/// The in-flight slots and the time every API request has.
#[derive(Clone)]
struct Gate {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// When the request is cut off by its timeout (a request extension): the deadlines of its
/// writes end before it (see [`AppState::policy`]).
#[derive(Debug, Clone, Copy)]
struct RequestDeadline(tokio::time::Instant);

/// Runs the request in a slot, within the request timeout (the wait for the slot included).
///
/// Cut off, the request is answered 503 `timeout` with `Retry-After`: its unit of work, if it
/// began one, is dropped and rolls back. One cut off while its commit ran is answered as an
/// ambiguous commit instead, by `commit_guard` outside this layer, which knows; a transfer's or
/// a retried unit of work's deadline ends before the cut-off, so their own answer comes first.
async fn bounded(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let cut_off = tokio::time::Instant::now() + gate.timeout;
    request.extensions_mut().insert(RequestDeadline(cut_off));
    let answer = async {
        // The semaphore is never closed.
        let _slot = gate.slots.acquire().await;
        next.run(request).await
    };
    match tokio::time::timeout_at(cut_off, answer).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = gate.timeout.as_millis(),
                "request timed out; its work was dropped"
            );
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request was not answered within {} ms; retry it",
                    gate.timeout.as_millis()
                ),
            )
            .with_retry_after(1)
            .into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Problems (RFC 9457)

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no-route", "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "the route does not accept this method",
    )
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked; its unit of work rolled back");
    Problem::internal().into_response()
}

// ---------------------------------------------------------------------------------------------
// Path ids, pages, ETags

/// The `{id}` of the path, parsed as a typed id; a malformed one is a 422 on the field `id`.
pub struct Id<T>(pub T);

impl<S, T> FromRequestParts<S> for Id<T>
where
    T: FromStr<Err = Error> + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-request",
                    "the path is malformed",
                )
            })?;
        Ok(Id(raw.parse::<T>()?))
    }
}

fn number(field: &'static str, value: Option<&str>, default: i64) -> Result<i64, Error> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            Error::validation(
                field,
                Rule::Malformed {
                    expected: "an integer",
                },
            )
        }),
    }
}

/// The parameters of an offset page.
const PAGE_PARAMS: &[&str] = &["limit", "offset"];

/// The offset page `limit` and `offset` ask for (50 rows from the start by default).
fn page(params: &Params) -> Result<Page, Error> {
    let default = i64::from(Limit::default().get());
    Page::new(
        number("limit", params.get("limit"), default)?,
        number("offset", params.get("offset"), 0)?,
    )
}

/// The ETag of a row: its version, as a quoted strong validator (`"3"`).
fn etag(version: i64) -> [(HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}

/// An `If-Match` precondition (RFC 9110, 13.1.1).
#[derive(Debug)]
enum IfMatch {
    /// `*`: any live row.
    Any,
    /// The versions of the strong entity tags listed; the row's must be one of them. A weak
    /// tag (`W/"3"`) never matches (If-Match compares strongly), nor does a tag that is not one
    /// of our versions.
    Versions(Vec<i64>),
}

impl IfMatch {
    /// The request's precondition, if it has one; a header that is not `*` or a list of entity
    /// tags is a 422 on `if_match`.
    fn of(headers: &HeaderMap) -> Result<Option<Self>, Error> {
        let malformed = || {
            Error::validation(
                "if_match",
                Rule::Malformed {
                    expected: "* or a list of ETags, such as \"3\"",
                },
            )
        };
        let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
        if values.peek().is_none() {
            return Ok(None);
        }
        let mut versions = Vec::new();
        for value in values {
            let value = value.to_str().map_err(|_| malformed())?;
            // A list may have empty elements (RFC 9110, 5.6.1); they say nothing.
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    return Ok(Some(IfMatch::Any));
                }
                let (weak, opaque) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                let quoted = opaque
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|t| !t.contains('"'))
                    .ok_or_else(malformed)?;
                match quoted.parse::<i64>() {
                    Ok(version) if !weak => versions.push(version),
                    _ => {}
                }
            }
        }
        Ok(Some(IfMatch::Versions(versions)))
    }

    fn matches(&self, version: i64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Versions(versions) => versions.contains(&version),
        }
    }

    /// The version an update must still find, when the precondition names exactly one: the
    /// update then checks it itself, in one round trip.
    fn single(&self) -> Option<i64> {
        match self {
            IfMatch::Versions(versions) if versions.len() == 1 => Some(versions[0]),
            _ => None,
        }
    }
}

/// The 412 of a precondition that `product` does not meet.
fn precondition_failed(product: &Product) -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "stale-version",
        format!(
            "product {} is at version {}, which If-Match does not name",
            product.id, product.version
        ),
    )
    .with("entity", EntityKind::PRODUCT.as_str())
    .with("id", product.id.to_string())
    .with("current_version", product.version)
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// The fields of a new product.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductBody {
    pub name: String,
    pub slug: String,
    pub sku: String,
    pub description: Option<String>,
    pub status: Option<ProductStatus>,
    pub stock: Option<i64>,
    pub category_id: Option<CategoryId>,
    pub created_by: Option<UserId>,
}

const STATUS: &str = "one of draft, active, archived";

impl Schema for ProductBody {
    const FIELDS: &'static [Field] = &[
        Field::new("name", "a string", Presence::Required),
        Field::new("slug", "a string", Presence::Required),
        Field::new("sku", "a string", Presence::Required),
        Field::new("description", "a string or null", Presence::Nullable),
        Field::new("status", STATUS, Presence::Nullable),
        Field::new("stock", "an integer", Presence::Nullable),
        Field::new("category_id", "a UUID or null", Presence::Nullable),
        Field::new("created_by", "a UUID or null", Presence::Nullable),
    ];
}

impl ProductBody {
    fn validate(self) -> Result<NewProduct, Error> {
        let mut new = NewProduct::new(&self.name, &self.slug, &self.sku)?;
        if let Some(d) = &self.description {
            new = new.with_description(d)?;
        }
        if let Some(s) = self.status {
            new = new.with_status(s);
        }
        if let Some(s) = self.stock {
            new = new.with_stock(s)?;
        }
        if let Some(c) = self.category_id {
            new = new.with_category_id(c);
        }
        if let Some(u) = self.created_by {
            new = new.with_created_by(u);
        }
        Ok(new)
    }
}

/// A new category, optionally with products created in it in the same transaction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryBody {
    pub name: String,
    pub slug: String,
    #[serde(default)]
    pub products: Vec<CategoryProductBody>,
}

impl Schema for CategoryBody {
    const FIELDS: &'static [Field] = &[
        Field::new("name", "a string", Presence::Required),
        Field::new("slug", "a string", Presence::Required),
        Field::array(
            "products",
            "an array of products",
            Presence::NotNull,
            CategoryProductBody::FIELDS,
        ),
    ];
}

/// A product created together with its category (which it belongs to).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryProductBody {
    pub name: String,
    pub slug: String,
    pub sku: String,
    pub description: Option<String>,
    pub status: Option<ProductStatus>,
    pub stock: Option<i64>,
}

impl CategoryProductBody {
    const FIELDS: &'static [Field] = &[
        Field::new("name", "a string", Presence::Required),
        Field::new("slug", "a string", Presence::Required),
        Field::new("sku", "a string", Presence::Required),
        Field::new("description", "a string or null", Presence::Nullable),
        Field::new("status", STATUS, Presence::Nullable),
        Field::new("stock", "an integer", Presence::Nullable),
    ];
}

#[derive(Debug, Serialize)]
pub struct CategoryCreated {
    #[serde(flatten)]
    pub category: Category,
    pub products: Vec<Product>,
}

/// A product patch. An absent field is unchanged; `null` clears `description` / `category_id`
/// and is refused for the others (they cannot be empty). Stock is not patchable: it moves only
/// through transfers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub sku: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    pub status: Option<ProductStatus>,
    #[serde(default, deserialize_with = "present")]
    pub category_id: Option<Option<CategoryId>>,
}

impl Schema for PatchBody {
    const FIELDS: &'static [Field] = &[
        Field::new("name", "a string", Presence::NotNull),
        Field::new("slug", "a string", Presence::NotNull),
        Field::new("sku", "a string", Presence::NotNull),
        Field::new("description", "a string or null", Presence::Nullable),
        Field::new("status", STATUS, Presence::NotNull),
        Field::new("category_id", "a UUID or null", Presence::Nullable),
    ];
}

/// Tells `null` (`Some(None)`) from an absent field (`None`, by `#[serde(default)]`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl PatchBody {
    /// Whether the patch names no field at all (`{}`).
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.slug.is_none()
            && self.sku.is_none()
            && self.description.is_none()
            && self.status.is_none()
            && self.category_id.is_none()
    }

    fn validate(self) -> Result<ProductPatch, Error> {
        let mut patch = ProductPatch::new();
        if let Some(v) = &self.name {
            patch = patch.with_name(v)?;
        }
        if let Some(v) = &self.slug {
            patch = patch.with_slug(v)?;
        }
        if let Some(v) = &self.sku {
            patch = patch.with_sku(v)?;
        }
        if let Some(v) = &self.description {
            patch = patch.with_description(v.as_deref())?;
        }
        if let Some(v) = self.status {
            patch = patch.with_status(v);
        }
        if let Some(v) = self.category_id {
            patch = patch.with_category(v);
        }
        Ok(patch)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub author_id: UserId,
    pub rating: i64,
    pub body: Option<String>,
}

impl Schema for ReviewBody {
    const FIELDS: &'static [Field] = &[
        Field::new("author_id", "a UUID", Presence::Required),
        Field::new("rating", "an integer", Presence::Required),
        Field::new("body", "a string or null", Presence::Nullable),
    ];
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub source_id: ProductId,
    pub target_id: ProductId,
    pub quantity: i64,
}

impl Schema for TransferBody {
    const FIELDS: &'static [Field] = &[
        Field::new("source_id", "a UUID", Presence::Required),
        Field::new("target_id", "a UUID", Presence::Required),
        Field::new("quantity", "an integer", Presence::Required),
    ];
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub email: String,
    pub display_name: String,
}

impl Schema for UserBody {
    const FIELDS: &'static [Field] = &[
        Field::new("email", "a string", Presence::Required),
        Field::new("display_name", "a string", Presence::Required),
    ];
}

// ---------------------------------------------------------------------------------------------
// Handlers: the outbox

/// The outbox's backlog (`Store::outbox_backlog`): `pending` events committed and not yet
/// delivered, the `oldest` one's time and its `age_ms`, and `delivered` events not purged yet;
/// and under `relay`, what the service's relay delivered since it started (its sink, whether it
/// runs, how many events, the last ones), or `null` when it runs none. An API route (within the
/// in-flight limit and the request timeout): it reads the store.
async fn outbox(State(app): State<AppState>, _: NoQuery) -> Result<Json<Value>, Problem> {
    let backlog = app.store.outbox_backlog().await?;
    let age = backlog.age(stockroom::time::now());
    Ok(Json(json!({
        "pending": backlog.pending,
        "oldest": backlog.oldest,
        "age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        "delivered": backlog.delivered,
        "relay": app.outbox.as_ref().map(|deliveries| deliveries.view()),
    })))
}

// ---------------------------------------------------------------------------------------------
// Handlers: probes

/// Liveness: the process serves HTTP. It asks nothing of the store: a restart would not bring
/// a database back.
async fn livez(_: NoQuery) -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// The metrics in Prometheus's text format (Stockroom's are listed in `stockroom::metrics`);
/// 404 when the service runs without a recorder.
async fn metrics(State(state): State<AppState>, _: NoQuery) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => not_found().await.into_response(),
    }
}

/// Readiness: the store can take writes now (`Store::readiness`, which waits behind no busy
/// connection), within the request timeout. Not ready is a 503 `not-ready` problem whose
/// `cause` is the kind of the store's error (`unavailable`, `storage-fault` with its `fault`,
/// …). `/healthz` is the same check, under its older name.
///
/// The probes are outside the in-flight limit, and a store's check may open a connection of
/// its own (PostgreSQL's, when its pool is busy), so they share one check ([`SharedCheck`]): at
/// most one runs at a time, and the probes that arrive while it runs get its answer.
async fn readyz(State(app): State<AppState>, _: NoQuery) -> Result<Json<Value>, Problem> {
    let timeout = app.limits.request_timeout;
    let ready = tokio::time::timeout(timeout, app.readiness.check(app.store.as_ref()))
        .await
        .unwrap_or_else(|_| {
            Err(not_ready(Error::unavailable(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))))
        });
    match ready {
        Ok(()) => Ok(Json(
            json!({ "status": "ready", "backend": app.store.backend().as_str() }),
        )),
        Err(problem) => Err(problem),
    }
}

/// One readiness check at a time, its answer shared by the probes that waited for it.
#[derive(Default)]
struct SharedCheck {
    /// The last answer and when it came; held while a check runs, so that probes queue here.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), Problem>)>>,
}

impl SharedCheck {
    /// The answer of a check that ended after this call began: the one in flight, if a probe
    /// already runs one (waited for, in turn), else one run now. Never an answer older than the
    /// call, so a probe after a change of the store's state sees the change.
    async fn check(&self, store: &dyn Store) -> Result<(), Problem> {
        let asked = tokio::time::Instant::now();
        let mut last = self.last.lock().await;
        if let Some((answered, answer)) = last.as_ref() {
            if *answered >= asked {
                return answer.clone();
            }
        }
        let answer = store.readiness().await.map_err(not_ready);
        *last = Some((tokio::time::Instant::now(), answer.clone()));
        answer
    }
}

/// The 503 of a store that cannot take writes: the kind of its error (as the problem of a
/// request that met it would name it), never its text, which goes to the log.
fn not_ready(error: Error) -> Problem {
    tracing::warn!(%error, "not ready");
    let problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "the store cannot take writes now",
    );
    match error {
        Error::Storage { fault, .. } => problem
            .with("cause", "storage-fault")
            .with("fault", fault.as_str()),
        Error::Unavailable { .. } => problem.with("cause", "unavailable"),
        Error::Transient { .. } => problem.with("cause", "transient"),
        _ => problem.with("cause", "internal"),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: categories and products

async fn create_category(
    State(app): State<AppState>,
    deadline: Option<Extension<RequestDeadline>>,
    _: NoQuery,
    Body(body): Body<CategoryBody>,
) -> Result<(StatusCode, Json<CategoryCreated>), Problem> {
    // Everything is validated before the transaction begins.
    let new = NewCategory::new(&body.name, &body.slug)?;
    let products = body
        .products
        .into_iter()
        .map(|p| {
            ProductBody {
                name: p.name,
                slug: p.slug,
                sku: p.sku,
                description: p.description,
                status: p.status,
                stock: p.stock,
                category_id: None,
                created_by: None,
            }
            .validate()
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let (new, products) = (&new, &products);

    // The category and its products in one unit of work, run again from the start if it meets
    // a transient failure, within the write deadline. If one product fails (a sku taken, say),
    // the category goes too.
    let policy = app.policy(deadline.as_ref().map(|Extension(d)| d))?;
    let created = app
        .store
        .run(&policy, |uow| {
            Box::pin(async move {
                let category = uow.categories().create(new.clone()).await?;
                let products = if products.is_empty() {
                    Vec::new()
                } else {
                    let in_category = products
                        .iter()
                        .map(|p| p.clone().with_category_id(category.id))
                        .collect();
                    uow.products().create_many(in_category).await?
                };
                Ok(CategoryCreated { category, products })
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn create_product(
    mut work: RequestUnitOfWork,
    _: NoQuery,
    Body(body): Body<ProductBody>,
) -> Result<Committed<Response>, Problem> {
    let new = body.validate()?;
    let product = work.products().await?.create(new).await?;
    let location = format!("/products/{}", product.id);
    let etag = etag(product.version);
    let created = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        etag,
        Json(product),
    );
    Ok(work.commit(created.into_response()).await?)
}

async fn get_product(
    State(app): State<AppState>,
    Id(id): Id<ProductId>,
    _: NoQuery,
) -> Result<Response, Problem> {
    let mut read = app.store.read().await?;
    let product = read.products().require(id).await?;
    Ok((etag(product.version), Json(product)).into_response())
}

async fn product_details(
    State(app): State<AppState>,
    Id(id): Id<ProductId>,
    _: NoQuery,
) -> Result<Json<stockroom::ProductDetails>, Problem> {
    let details = app
        .store
        .product_details(id, Limit::default())
        .await?
        .ok_or_else(|| Error::not_found(EntityKind::PRODUCT, id))?;
    Ok(Json(details))
}

/// Applies a patch, under the request's `If-Match` if it has one. An empty patch changes
/// nothing: it answers the current row (its precondition checked) and bumps no version, read on
/// the primary (`read_primary`), so its ETag is the one the next conditional write will meet,
/// not a lagging replica's.
async fn update_product(
    State(app): State<AppState>,
    mut work: RequestUnitOfWork,
    Id(id): Id<ProductId>,
    _: NoQuery,
    headers: HeaderMap,
    Body(body): Body<PatchBody>,
) -> Result<Committed<Response>, Problem> {
    let condition = IfMatch::of(&headers)?;
    if body.is_empty() {
        let mut read = app.store.read_primary().await?;
        let current = read.products().require(id).await?;
        if condition
            .as_ref()
            .is_some_and(|c| !c.matches(current.version))
        {
            return Err(precondition_failed(&current));
        }
        let unchanged = (etag(current.version), Json(current)).into_response();
        return Ok(work.commit(unchanged).await?);
    }
    let patch = body.validate()?;
    let mut products = work.products().await?;
    let expected = match &condition {
        None => None,
        Some(condition) => Some(version_to_update(&mut products, id, condition).await?),
    };
    let product = products.update(id, &patch, expected).await?;
    let etag = etag(product.version);
    Ok(work.commit((etag, Json(product)).into_response()).await?)
}

/// The version an update under `condition` must still find: the one tag it names (the update
/// checks it, in the same round trip), or else the current row's, once the row is found to
/// match (`*`, a list of tags); a row that does not is a 412.
async fn version_to_update(
    products: &mut stockroom::Repo<'_, Product>,
    id: ProductId,
    condition: &IfMatch,
) -> Result<i64, Problem> {
    if let Some(version) = condition.single() {
        return Ok(version);
    }
    let current = products.require(id).await?;
    if !condition.matches(current.version) {
        return Err(precondition_failed(&current));
    }
    Ok(current.version)
}

async fn delete_product(
    mut work: RequestUnitOfWork,
    Id(id): Id<ProductId>,
    _: NoQuery,
) -> Result<Committed<StatusCode>, Problem> {
    if !work.products().await?.soft_delete(id).await? {
        return Err(Error::not_found(EntityKind::PRODUCT, id).into());
    }
    Ok(work.commit(StatusCode::NO_CONTENT).await?)
}

async fn restore_product(
    mut work: RequestUnitOfWork,
    Id(id): Id<ProductId>,
    _: NoQuery,
) -> Result<Committed<Json<Product>>, Problem> {
    let mut products = work.products().await?;
    // Restoring a live product changes nothing and answers it, so a retried restore succeeds;
    // an id that is neither live nor in the trash is a 404.
    products.restore(id).await?;
    let product = products.require(id).await?;
    Ok(work.commit(Json(product)).await?)
}

async fn trash(State(app): State<AppState>, params: QueryParams) -> Result<Json<Value>, Problem> {
    let page = page(&params.only(PAGE_PARAMS)?)?;
    let mut read = app.store.read().await?;
    let items = read.products().list_deleted(page).await?;
    Ok(Json(json!({ "items": items })))
}

async fn list_products(
    State(app): State<AppState>,
    params: QueryParams,
) -> Result<Json<Value>, Problem> {
    let params = params.only(&["q", "category_id", "status", "limit", "offset", "cursor"])?;
    let mut filter = ProductFilter::default();
    if let Some(q) = params.get("q") {
        filter = filter.with_search(q)?;
    }
    if let Some(c) = params.get("category_id") {
        let id = CategoryId::from_str(c).map_err(|_| {
            Error::validation("category_id", Rule::Malformed { expected: "a UUID" })
        })?;
        filter = filter.with_category_id(id);
    }
    if let Some(s) = params.get("status") {
        filter = filter.with_status(s.parse()?);
    }
    let mut read = app.store.read().await?;
    match params.get("cursor") {
        // Keyset pages: `cursor=` (empty) starts at the beginning, then `next_cursor` goes on.
        Some(cursor) => {
            if params.get("offset").is_some() {
                return Err(Error::validation(
                    "offset",
                    Rule::Malformed {
                        expected: "absent when a cursor is given",
                    },
                )
                .into());
            }
            let after = match cursor {
                "" => None,
                text => Some(Cursor::parse(text)?),
            };
            let limit = Limit::new(number(
                "limit",
                params.get("limit"),
                i64::from(Limit::default().get()),
            )?)?;
            let page = read.products().list_after(&filter, after, limit).await?;
            Ok(Json(json!({
                "items": page.items,
                "next_cursor": page.next.map(|c| c.to_string()),
            })))
        }
        None => {
            // `total` is `{"count": n, "exact": bool}`: exact up to MAX_EXACT_TOTAL.
            let found = read.products().search(&filter, page(&params)?).await?;
            Ok(Json(json!({ "items": found.items, "total": found.total })))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: reviews, the ledger, transfers

async fn create_review(
    mut work: RequestUnitOfWork,
    Id(product_id): Id<ProductId>,
    _: NoQuery,
    Body(body): Body<ReviewBody>,
) -> Result<Committed<(StatusCode, Json<stockroom::Review>)>, Problem> {
    let mut new = NewReview::new(product_id, body.author_id, body.rating)?;
    if let Some(text) = &body.body {
        new = new.with_body(text)?;
    }
    let review = work.reviews().await?.create(new).await?;
    Ok(work.commit((StatusCode::CREATED, Json(review))).await?)
}

/// A page of a live product's reviews, newest first.
async fn list_reviews(
    State(app): State<AppState>,
    Id(id): Id<ProductId>,
    params: QueryParams,
) -> Result<Json<Value>, Problem> {
    let page = page(&params.only(PAGE_PARAMS)?)?;
    let mut read = app.store.read().await?;
    read.products().require(id).await?;
    let items = read.reviews().for_product(id, page).await?;
    Ok(Json(json!({ "items": items })))
}

/// A page of a live product's ledger: the stock movements from or to it, oldest first. A
/// client whose transfer got no answer (a timeout, a crash) finds here whether it applied (its
/// idempotency key is on the row), or sends it again with the same key. Read on the primary
/// (`read_primary`): a replica that has not replayed the transfer yet would say it did not
/// apply, and the client would send it again.
async fn list_movements(
    State(app): State<AppState>,
    Id(id): Id<ProductId>,
    params: QueryParams,
) -> Result<Json<Value>, Problem> {
    let page = page(&params.only(PAGE_PARAMS)?)?;
    let mut read = app.store.read_primary().await?;
    read.products().require(id).await?;
    let items = read.movements().for_product(id, page).await?;
    Ok(Json(json!({ "items": items })))
}

/// The header that marks the answer to a replayed idempotent transfer.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Moves stock: 201 with the new ledger row, or, for a request whose `Idempotency-Key` named a
/// transfer made earlier, 200 with that transfer's row and `Idempotent-Replayed: true` (nothing
/// moved now).
///
/// The `Idempotency-Key` header is required (a 422 `validation` problem on `idempotency_key`,
/// rule `required`, without it): whatever answer a transfer gets, or none, the client can send
/// it again with the same key and it applies at most once.
async fn transfer(
    State(app): State<AppState>,
    deadline: Option<Extension<RequestDeadline>>,
    headers: HeaderMap,
    _: NoQuery,
    Body(body): Body<TransferBody>,
) -> Result<Response, Problem> {
    let Some(key) = headers.get("idempotency-key") else {
        return Err(crate::body::invalid(
            "idempotency_key",
            "required",
            "the Idempotency-Key header is required: a transfer sent again with the same key \
             applies at most once"
                .to_owned(),
        ));
    };
    let key = key.to_str().map_err(|_| {
        Error::validation(
            "idempotency_key",
            Rule::Malformed {
                expected: "visible ASCII characters",
            },
        )
    })?;
    let request = TransferRequest::new(body.source_id, body.target_id, body.quantity)
        .with_idempotency_key(key);
    // The use case runs (and retries, within the write deadline) its own unit of work; it has
    // committed when it returns.
    let policy = app.policy(deadline.as_ref().map(|Extension(d)| d))?;
    let done = app.store.transfer_with(&request, &policy).await?;
    if done.replayed {
        let replayed = [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))];
        Ok((StatusCode::OK, replayed, Json(done.movement)).into_response())
    } else {
        Ok((StatusCode::CREATED, Json(done.movement)).into_response())
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: users

async fn create_user(
    mut work: RequestUnitOfWork,
    _: NoQuery,
    Body(body): Body<UserBody>,
) -> Result<Committed<Response>, Problem> {
    let new = NewUser::new(&body.email, &body.display_name)?;
    let user = work.users().await?.create(new).await?;
    let location = format!("/users/{}", user.id);
    let created = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        etag(user.version),
        Json(user),
    );
    Ok(work.commit(created.into_response()).await?)
}

async fn get_user(
    State(app): State<AppState>,
    Id(id): Id<UserId>,
    _: NoQuery,
) -> Result<Response, Problem> {
    let mut read = app.store.read().await?;
    let user = read.users().require(id).await?;
    Ok((etag(user.version), Json(user)).into_response())
}

async fn delete_user(
    mut work: RequestUnitOfWork,
    Id(id): Id<UserId>,
    _: NoQuery,
) -> Result<Committed<StatusCode>, Problem> {
    if !work.users().await?.soft_delete(id).await? {
        return Err(Error::not_found(EntityKind::USER, id).into());
    }
    Ok(work.commit(StatusCode::NO_CONTENT).await?)
}

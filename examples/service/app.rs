//! The service's router: state, the per-request unit of work as an extractor, handlers, and the
//! mapping of `stockroom::Error` onto RFC 9457 problem responses.
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
//! `store.run(&policy, …)`, and the transfer use case does the same inside.
//!
//! Handlers that only read take the [`AppState`] and use `store.read()` (no transaction) or the
//! use cases of `StoreExt`. Errors are `stockroom::Error`s, answered as RFC 9457 problems by the
//! library's mapping ([`Problem`]); the service adds the problems of its own (malformed bodies,
//! unknown routes).

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request,
    State,
};
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
pub use stockroom::axum::{commit_guard, Problem};
use stockroom::request::{Committed, RequestUnitOfWork};
use stockroom::{
    Category, CategoryId, Cursor, Error, Limit, NewCategory, NewProduct, NewReview, Page, Product,
    ProductFilter, ProductId, ProductPatch, ProductStatus, RetryPolicy, Rule, Store, StoreExt,
    TransferRequest, UserId,
};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The largest request body the service reads; a larger one is a 413 problem.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares: the store, chosen at run time. The per-request unit of work takes
/// its store from here (`FromRef`).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
}

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.store)
    }
}

/// The service: every route, with its middleware.
pub fn router(state: AppState) -> Router {
    service(routes(), state)
}

/// The routes alone, without middleware, so that a test can add routes of its own to them before
/// [`service`] wraps them all.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
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
        .route("/products/{id}/reviews", post(create_review))
        .route("/trash/products", get(trash))
        .route("/transfers", post(transfer))
}

/// Wraps `routes` with the middleware: request spans, panics as 500 problems, the commit guard
/// and the body limit.
pub fn service(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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

/// Serves `router` on `listener` until `shutdown` resolves, lets the requests in flight finish,
/// then closes the store (whatever way serving ended).
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    store: Arc<dyn Store>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    store.close().await;
    served
}

// ---------------------------------------------------------------------------------------------
// Problems (RFC 9457)

/// The problem of a request the framework refused before a handler ran (a malformed body, query
/// or path).
fn rejection(status: StatusCode, detail: String) -> Problem {
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-body",
        StatusCode::BAD_REQUEST => "malformed-request",
        _ => "bad-request",
    };
    Problem::new(status, kind, detail)
}

fn json_rejection(r: JsonRejection) -> Problem {
    rejection(r.status(), r.body_text())
}

fn query_rejection(r: QueryRejection) -> Problem {
    rejection(r.status(), r.body_text())
}

fn path_rejection(r: PathRejection) -> Problem {
    rejection(r.status(), r.body_text())
}

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
// Extractors

/// A JSON body; a malformed, mistyped or oversized one is a problem response.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let Json(value) = Json::<T>::from_request(request, state)
            .await
            .map_err(json_rejection)?;
        Ok(Body(value))
    }
}

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
            .map_err(path_rejection)?;
        Ok(Id(raw.parse::<T>()?))
    }
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
            new = new.in_category(c);
        }
        if let Some(u) = self.created_by {
            new = new.created_by(u);
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

#[derive(Debug, Serialize)]
pub struct CategoryCreated {
    #[serde(flatten)]
    pub category: Category,
    pub products: Vec<Product>,
}

/// A product patch. An absent field is unchanged; `null` clears `description` / `category_id`.
/// Stock is not patchable: it moves only through transfers.
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

/// Tells `null` (`Some(None)`) from an absent field (`None`, by `#[serde(default)]`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl PatchBody {
    fn validate(self) -> Result<ProductPatch, Error> {
        let mut patch = ProductPatch::new();
        if let Some(v) = &self.name {
            patch = patch.name(v)?;
        }
        if let Some(v) = &self.slug {
            patch = patch.slug(v)?;
        }
        if let Some(v) = &self.sku {
            patch = patch.sku(v)?;
        }
        if let Some(v) = &self.description {
            patch = patch.description(v.as_deref())?;
        }
        if let Some(v) = self.status {
            patch = patch.status(v);
        }
        if let Some(v) = self.category_id {
            patch = patch.category(v);
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub source_id: ProductId,
    pub target_id: ProductId,
    pub quantity: i64,
}

/// The query of `GET /products`, as text: each value is validated with the library's rules, so
/// a bad one is a 422 naming its parameter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub q: Option<String>,
    pub category_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub offset: Option<String>,
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

fn page(limit: Option<&str>, offset: Option<&str>) -> Result<Page, Error> {
    let default = i64::from(Limit::default().get());
    Page::new(
        number("limit", limit, default)?,
        number("offset", offset, 0)?,
    )
}

fn etag(version: i64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}

/// `If-Match: 3` or `If-Match: "3"` (the product's ETag): the version the client last saw.
fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Error::validation(
                "if_match",
                Rule::Malformed {
                    expected: "a product version, such as 3 or \"3\"",
                },
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn healthz(State(app): State<AppState>) -> Result<Json<Value>, Problem> {
    app.store.health().await?;
    Ok(Json(
        json!({ "status": "ok", "backend": app.store.backend() }),
    ))
}

async fn create_category(
    State(app): State<AppState>,
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
    // a transient failure. If one product fails (a sku taken, say), the category goes too.
    let created = app
        .store
        .run(&RetryPolicy::default(), |uow| {
            Box::pin(async move {
                let category = uow.categories().create(new.clone()).await?;
                let products = if products.is_empty() {
                    Vec::new()
                } else {
                    let in_category = products
                        .iter()
                        .map(|p| p.clone().in_category(category.id))
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
) -> Result<Response, Problem> {
    let mut read = app.store.read().await?;
    let product = read.products().require(id).await?;
    Ok((etag(product.version), Json(product)).into_response())
}

async fn product_details(
    State(app): State<AppState>,
    Id(id): Id<ProductId>,
) -> Result<Json<stockroom::ProductDetails>, Problem> {
    let details = app
        .store
        .product_details(id, Limit::default())
        .await?
        .ok_or_else(|| Error::not_found(stockroom::EntityKind::Product, id))?;
    Ok(Json(details))
}

async fn update_product(
    mut work: RequestUnitOfWork,
    Id(id): Id<ProductId>,
    headers: HeaderMap,
    Body(body): Body<PatchBody>,
) -> Result<Committed<Response>, Problem> {
    let expected = expected_version(&headers)?;
    let patch = body.validate()?;
    let product = work.products().await?.update(id, &patch, expected).await?;
    let etag = etag(product.version);
    Ok(work.commit((etag, Json(product)).into_response()).await?)
}

async fn delete_product(
    mut work: RequestUnitOfWork,
    Id(id): Id<ProductId>,
) -> Result<Committed<StatusCode>, Problem> {
    if !work.products().await?.soft_delete(id).await? {
        return Err(Error::not_found(stockroom::EntityKind::Product, id).into());
    }
    Ok(work.commit(StatusCode::NO_CONTENT).await?)
}

async fn restore_product(
    mut work: RequestUnitOfWork,
    Id(id): Id<ProductId>,
) -> Result<Committed<Json<Product>>, Problem> {
    let products = work.products().await?;
    // Restoring a live product changes nothing and answers it, so a retried restore succeeds;
    // an id that is neither live nor in the trash is a 404.
    products.restore(id).await?;
    let product = products.require(id).await?;
    Ok(work.commit(Json(product)).await?)
}

async fn create_review(
    mut work: RequestUnitOfWork,
    Id(product_id): Id<ProductId>,
    Body(body): Body<ReviewBody>,
) -> Result<Committed<(StatusCode, Json<stockroom::Review>)>, Problem> {
    let mut new = NewReview::new(product_id, body.author_id, body.rating)?;
    if let Some(text) = &body.body {
        new = new.with_body(text)?;
    }
    let review = work.reviews().await?.create(new).await?;
    Ok(work.commit((StatusCode::CREATED, Json(review))).await?)
}

async fn trash(
    State(app): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let page = page(query.limit.as_deref(), query.offset.as_deref())?;
    let mut read = app.store.read().await?;
    let items = read.products().list_deleted(page).await?;
    Ok(Json(json!({ "items": items })))
}

async fn list_products(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(query) = query.map_err(query_rejection)?;
    let mut filter = ProductFilter::default();
    if let Some(q) = &query.q {
        filter = filter.search(q)?;
    }
    if let Some(c) = &query.category_id {
        let id = CategoryId::from_str(c).map_err(|_| {
            Error::validation("category_id", Rule::Malformed { expected: "a UUID" })
        })?;
        filter = filter.category(id);
    }
    if let Some(s) = &query.status {
        filter = filter.status(s.parse()?);
    }
    let mut read = app.store.read().await?;
    match &query.cursor {
        // Keyset pages: `cursor=` (empty) starts at the beginning, then `next_cursor` goes on.
        Some(cursor) => {
            if query.offset.is_some() {
                return Err(Error::validation(
                    "offset",
                    Rule::Malformed {
                        expected: "absent when a cursor is given",
                    },
                )
                .into());
            }
            let after = match cursor.as_str() {
                "" => None,
                text => Some(Cursor::parse(text)?),
            };
            let limit = Limit::new(number(
                "limit",
                query.limit.as_deref(),
                i64::from(Limit::default().get()),
            )?)?;
            let page = read.products().list_after(&filter, after, limit).await?;
            Ok(Json(json!({
                "items": page.items,
                "next_cursor": page.next.map(|c| c.to_string()),
            })))
        }
        None => {
            let page = page(query.limit.as_deref(), query.offset.as_deref())?;
            let found = read.products().search(&filter, page).await?;
            Ok(Json(json!({ "items": found.items, "total": found.total })))
        }
    }
}

async fn transfer(
    State(app): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<TransferBody>,
) -> Result<(StatusCode, Json<stockroom::StockMovement>), Problem> {
    let mut request = TransferRequest::new(body.source_id, body.target_id, body.quantity);
    if let Some(key) = headers.get("idempotency-key") {
        let key = key.to_str().map_err(|_| {
            Error::validation(
                "idempotency_key",
                Rule::Malformed {
                    expected: "visible ASCII characters",
                },
            )
        })?;
        request = request.with_idempotency_key(key);
    }
    // The use case runs (and retries) its own unit of work; it has committed when it returns.
    let movement = app.store.transfer(&request).await?;
    Ok((StatusCode::CREATED, Json(movement)))
}

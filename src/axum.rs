//! Stockroom in an axum service (feature `axum`): errors as problem responses, and the
//! per-request unit of work as an extractor.
//!
//! - [`Error`](crate::Error) implements `IntoResponse` as an RFC 9457 `application/problem+json`
//!   [`Problem`] (see [`stockroom_core::problem`] for the mapping), so handlers return
//!   `Result<T, stockroom::Error>` and use `?` on every Stockroom call.
//! - [`RequestUnitOfWork`] is an extractor: a handler that takes one gets a unit of work that
//!   begins on first use, and returns its success through
//!   [`commit`](RequestUnitOfWork::commit), whose [`Committed`] is a response once the commit
//!   succeeded. An early `?` or a panic drops it, and the transaction rolls back. The store comes
//!   from the router's state through `FromRef` (`Arc<dyn Store>` itself, or a field of your
//!   state).
//! - [`commit_guard`], an optional middleware, is the backstop: a request whose unit of work
//!   began and did not commit never gets a 2xx, even from a handler that dodged the types; and a
//!   request cut off while its commit ran (by a timeout layer inside the guard) is answered as
//!   an ambiguous commit, whatever the cutting layer said.
//!
//! ```
//! use axum::routing::post;
//! use axum::{http::StatusCode, Json, Router};
//! use stockroom::request::{Committed, RequestUnitOfWork};
//! use stockroom::{Category, NewCategory};
//!
//! async fn create_category(
//!     mut work: RequestUnitOfWork,
//!     Json(name): Json<String>,
//! ) -> Result<Committed<(StatusCode, Json<Category>)>, stockroom::Error> {
//!     let new = NewCategory::new(&name, &name.to_lowercase())?; // 422 before any transaction
//!     let category = work.categories().await?.create(new).await?; // 409 if the slug is taken
//!     work.commit((StatusCode::CREATED, Json(category))).await // a failed commit is a 503/500
//! }
//!
//! # async fn app() -> stockroom::Result<()> {
//! let store = stockroom::connect("memory://").await?;
//! let app: Router = Router::new()
//!     .route("/categories", post(create_category))
//!     .layer(axum::middleware::from_fn(stockroom::axum::commit_guard))
//!     .with_state(store); // or a state of yours with `impl FromRef<YourState> for Arc<dyn Store>`
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use ::axum::extract::{FromRef, FromRequestParts, Request};
use ::axum::http::request::Parts;
use ::axum::middleware::Next;
use ::axum::response::{IntoResponse, Response};

pub use stockroom_core::problem::{
    set_type_base, type_base, Problem, TypeBaseError, DEFAULT_TYPE_BASE,
};

use crate::request::{Committed, RequestUnitOfWork, WorkWatch};
use crate::Store;

impl<S> FromRequestParts<S> for RequestUnitOfWork
where
    Arc<dyn Store>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    /// A unit of work on the state's store that has not begun (it takes no connection until
    /// the handler first asks for a repository). Under [`commit_guard`], the guard watches it.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let work = RequestUnitOfWork::new(Arc::<dyn Store>::from_ref(state));
        if let Some(slot) = parts.extensions.get::<WatchSlot>() {
            slot.watch(work.watch());
        }
        Ok(work)
    }
}

impl<T: IntoResponse> IntoResponse for Committed<T> {
    fn into_response(self) -> Response {
        self.into_inner().into_response()
    }
}

/// Where [`commit_guard`] finds the watches of the request's units of work.
#[derive(Clone, Default)]
struct WatchSlot(Arc<Mutex<Vec<WorkWatch>>>);

impl WatchSlot {
    fn watch(&self, watch: WorkWatch) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(watch);
    }

    fn any(&self, check: impl Fn(&WorkWatch) -> bool) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .any(check)
    }
}

/// Middleware (`axum::middleware::from_fn(commit_guard)`): turns the success response of a
/// request whose [`RequestUnitOfWork`] began and then did not commit (rolled back, dropped, or
/// its commit failed) into a 500 problem, so a client is never told "done" about work that was
/// thrown away.
///
/// And the response of a request whose handler was dropped while its commit ran (cut off by a
/// timeout layer between the guard and the handler, which cannot know) becomes the problem of
/// [`Error::AmbiguousCommit`](crate::Error::AmbiguousCommit): a 500 without `Retry-After`, since
/// the work may have been stored. A handler dropped before its commit began rolled back, and
/// its response (a timeout's "retry later", say) stands.
pub async fn commit_guard(mut request: Request, next: Next) -> Response {
    let slot = WatchSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    if slot.any(WorkWatch::commit_unanswered) {
        tracing::error!(
            status = response.status().as_u16(),
            "the request was cut off while its commit ran: its outcome is unknown"
        );
        let ambiguous =
            crate::Error::ambiguous_commit("the request was cut off while its commit ran");
        return Problem::from(ambiguous).into_response();
    }
    if slot.any(WorkWatch::abandoned) && response.status().is_success() {
        tracing::error!("a handler answered success but did not commit its unit of work");
        return Problem::internal().into_response();
    }
    response
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use ::axum::body::Body;
    use ::axum::http::{Request, StatusCode};
    use ::axum::routing::post;
    use ::axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::{Category, NewCategory};

    async fn store() -> Arc<dyn Store> {
        crate::connect("memory://").await.unwrap()
    }

    async fn post_to(app: Router, path: &str) -> Response {
        let request = Request::post(path).body(Body::empty()).unwrap();
        app.oneshot(request).await.unwrap()
    }

    async fn kitchen_exists(store: &dyn Store) -> bool {
        let mut read = store.read().await.unwrap();
        read.categories()
            .by_slug("kitchen")
            .await
            .unwrap()
            .is_some()
    }

    async fn create(mut work: RequestUnitOfWork) -> Result<Committed<StatusCode>, crate::Error> {
        let new = NewCategory::new("Kitchen", "kitchen")?;
        work.categories().await?.create(new).await?;
        work.commit(StatusCode::CREATED).await
    }

    async fn create_twice(
        mut work: RequestUnitOfWork,
    ) -> Result<Committed<StatusCode>, crate::Error> {
        for _ in 0..2 {
            let new = NewCategory::new("Kitchen", "kitchen")?;
            work.categories().await?.create(new).await?;
        }
        work.commit(StatusCode::CREATED).await
    }

    /// A handler that dodges the types: it writes, then answers 200 without committing.
    async fn forgets_to_commit(mut work: RequestUnitOfWork) -> StatusCode {
        let new = NewCategory::new("Kitchen", "kitchen").unwrap();
        let _: Category = work.categories().await.unwrap().create(new).await.unwrap();
        StatusCode::OK
    }

    fn app(store: Arc<dyn Store>) -> Router {
        Router::new()
            .route("/create", post(create))
            .route("/create-twice", post(create_twice))
            .route("/forgets", post(forgets_to_commit))
            .layer(::axum::middleware::from_fn(commit_guard))
            .with_state(store)
    }

    #[tokio::test]
    async fn the_extracted_unit_of_work_commits_before_the_response() {
        let store = store().await;
        let response = post_to(app(store.clone()), "/create").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(kitchen_exists(store.as_ref()).await);
    }

    #[tokio::test]
    async fn an_error_rolls_back_and_is_a_problem_response() {
        let store = store().await;
        let response = post_to(app(store.clone()), "/create-twice").await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(
            !kitchen_exists(store.as_ref()).await,
            "the first create rolled back with the second"
        );
    }

    /// A handler cut off (by a timeout inside the guard) while its commit ran, on a store whose
    /// commit takes a minute.
    async fn cut_off_during_commit(work: RequestUnitOfWork) -> Response {
        let create = create(work);
        match tokio::time::timeout(std::time::Duration::from_millis(50), create).await {
            Ok(answer) => answer.into_response(),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out, retry").into_response(),
        }
    }

    #[tokio::test]
    async fn a_request_cut_off_during_its_commit_is_an_ambiguous_commit() {
        use stockroom_core::mocks::{Fault, FaultyStore};
        let faulty = FaultyStore::shared(store().await);
        faulty.delay(Fault::Commit, 1, std::time::Duration::from_secs(60));
        let app = Router::new()
            .route("/create", post(cut_off_during_commit))
            .layer(::axum::middleware::from_fn(commit_guard))
            .with_state(Arc::new(faulty) as Arc<dyn Store>);
        let response = post_to(app, "/create").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get("retry-after").is_none());
        let body = ::axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("urn:stockroom:problem:ambiguous-commit"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn the_guard_refuses_a_success_for_uncommitted_work() {
        let store = store().await;
        let response = post_to(app(store.clone()), "/forgets").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!kitchen_exists(store.as_ref()).await);
    }
}

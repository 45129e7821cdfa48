//! The service example, driven over real HTTP (reqwest) on every backend: each case runs on the
//! memory store and on a SQLite file (and on PostgreSQL with the `postgres` feature), configured
//! as the service configures its store (Stockroom's own events on). The cases of the service's
//! limits, health, faults, deadlines and startup are in `hardening_tests.rs`.

#[path = "app.rs"]
mod app;
#[path = "body.rs"]
mod body;
#[path = "events.rs"]
mod events;
#[path = "server.rs"]
mod server;
#[path = "settings.rs"]
mod settings;
#[path = "startup.rs"]
mod startup;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::post;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use settings::Limits;
// The dev-dependency on stockroom-core has `mocks` on, whatever the facade's features.
use stockroom::{Error, Page, ProductFilter, Store};
use stockroom_core::mocks::{Fault, FaultyStore};

// ---------------------------------------------------------------------------------------------
// Harness

/// A store for one test case, and what to clean up after it.
struct Backend {
    store: Arc<dyn Store>,
    dir: Option<PathBuf>,
}

/// The store the service makes of `url` (`Settings::from_lookup` with only `DATABASE_URL`
/// set): Stockroom's own events on.
async fn service_store(url: &str) -> Arc<dyn Store> {
    let settings =
        settings::Settings::from_lookup(|name| (name == "DATABASE_URL").then(|| url.to_owned()))
            .unwrap();
    assert!(settings.store.own_events, "the service's default");
    stockroom::connect_with(settings.store).await.unwrap()
}

impl Backend {
    async fn memory() -> Self {
        Self {
            store: service_store("memory://").await,
            dir: None,
        }
    }

    async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stockroom-service-test-{}",
            stockroom::ProductId::new()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("service.db").display());
        Self {
            store: service_store(&url).await,
            dir: Some(dir),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

/// Runs `case` on a store of a fresh PostgreSQL database from the test harness, which finds or
/// starts a server (see `stockroom_postgres::testing`), and drops the database afterwards, even
/// if the case panicked. Without PostgreSQL the case is skipped (one line on stderr says so),
/// unless `CI` or `STOCKROOM_TEST_REQUIRE_POSTGRES=1` makes that a failure.
#[cfg(feature = "postgres")]
async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use stockroom_postgres::testing::TestDatabase;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db
        .config()
        .with_min_connections(4)
        .with_max_connections(12)
        .with_own_events(true);
    let store = stockroom::connect_with(config).await.unwrap();
    db.drop_after(async move {
        case(store.clone()).await;
        store.close().await;
    })
    .await;
}

/// The service on 127.0.0.1:0, and a client for it.
struct Server {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
}

/// A response, its body parsed as JSON (`Null` when empty).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem of this status and kind, and returns its body.
    #[track_caller]
    fn problem(&self, status: StatusCode, kind: &str) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], status.as_u16(), "{self:?}");
        assert_eq!(
            self.body["type"],
            format!("urn:stockroom:problem:{kind}"),
            "{self:?}"
        );
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        &self.body
    }

    #[track_caller]
    fn ok(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        &self.body
    }
}

/// The service with the default limits.
async fn start(store: Arc<dyn Store>) -> Server {
    start_limited(store, Limits::default()).await
}

/// The service with `limits`.
async fn start_limited(store: Arc<dyn Store>, limits: Limits) -> Server {
    let router = app::router(app::AppState::new(store, limits.clone()));
    serve(router, limits).await
}

/// The service with extra routes (which get the same middleware), with `limits`.
async fn start_with(
    store: Arc<dyn Store>,
    routes: axum::Router<app::AppState>,
    limits: Limits,
) -> Server {
    let router = app::service(routes, app::AppState::new(store, limits.clone()));
    serve(router, limits).await
}

/// Serves `router` as the service does (`server.rs`), until the test ends.
async fn serve(router: axum::Router, limits: Limits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        server::serve(listener, router, &limits, std::future::pending()).await;
    });
    Server {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

impl Server {
    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn patch(&self, path: &str, if_match: Option<&str>, body: Value) -> Reply {
        let mut request = self
            .client
            .patch(format!("{}{path}", self.base))
            .json(&body);
        if let Some(v) = if_match {
            request = request.header("if-match", v);
        }
        self.send(request).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    /// A transfer with the idempotency key `key`, or, without one, a new key of its own (the
    /// service requires one), as a client chooses it before it sends the request.
    async fn transfer(&self, body: Value, key: Option<&str>) -> Reply {
        let key = key.map_or_else(
            || format!("test-{}", stockroom::ProductId::new()),
            str::to_owned,
        );
        let request = self
            .client
            .post(format!("{}/transfers", self.base))
            .header("idempotency-key", key)
            .json(&body);
        self.send(request).await
    }

    /// A transfer sent without an `Idempotency-Key`.
    async fn transfer_without_key(&self, body: Value) -> Reply {
        let request = self
            .client
            .post(format!("{}/transfers", self.base))
            .json(&body);
        self.send(request).await
    }

    async fn user(&self, email: &str, name: &str) -> Value {
        let reply = self
            .post("/users", json!({ "email": email, "display_name": name }))
            .await;
        reply.ok(StatusCode::CREATED).clone()
    }

    async fn product(&self, slug: &str, sku: &str, stock: i64) -> Value {
        let reply = self
            .post(
                "/products",
                json!({ "name": format!("Product {sku}"), "slug": slug, "sku": sku, "stock": stock, "status": "active" }),
            )
            .await;
        reply.ok(StatusCode::CREATED).clone()
    }
}

/// The service with its relay to the in-process channel (as `main` starts it without
/// `STOCKROOM_NATS_URL`), until the test ends or the relay is stopped.
async fn start_with_relay(store: Arc<dyn Store>) -> (Server, events::Outbox) {
    let outbox = relay_of(store.clone());
    let state = app::AppState::new(store, Limits::default()).with_outbox(outbox.deliveries());
    (serve(app::router(state), Limits::default()).await, outbox)
}

/// The service's relay on `store`, to the in-process channel, with the service's options.
fn relay_of(store: Arc<dyn Store>) -> events::Outbox {
    let options = events::relay_options(&settings::OutboxSettings::default());
    events::Outbox::in_process(store, options).expect("the service's relay options are valid")
}

/// The service run as `main` runs it (`app::run`, its relay included), until `stop` is sent.
struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    /// Ends once the connections are drained, the relay stopped and the store closed.
    serving: tokio::task::JoinHandle<()>,
    /// What its relay delivered.
    deliveries: Arc<events::Deliveries>,
}

async fn run_until_stopped(
    store: Arc<dyn Store>,
    routes: axum::Router<app::AppState>,
    limits: Limits,
) -> Running {
    let outbox = relay_of(store.clone());
    let deliveries = outbox.deliveries();
    let state = app::AppState::new(store.clone(), limits.clone()).with_outbox(outbox.deliveries());
    let router = app::service(routes, state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        let shutdown = async {
            stopped.await.ok();
        };
        app::run(listener, router, store, Some(outbox), &limits, shutdown).await;
    });
    Running {
        addr,
        stop,
        serving,
        deliveries,
    }
}

async fn product_count(store: &dyn Store) -> u64 {
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap()
}

async fn category_exists(store: &dyn Store, slug: &str) -> bool {
    let mut read = store.read().await.unwrap();
    read.categories().by_slug(slug).await.unwrap().is_some()
}

/// Proves no unit of work is left holding the writer slot (or a lock) behind a request.
async fn writes_still_go_through(store: &dyn Store) {
    let uow = tokio::time::timeout(std::time::Duration::from_secs(2), store.begin())
        .await
        .expect("the writer slot is free")
        .unwrap();
    uow.rollback().await.unwrap();
}

fn id_of(row: &Value) -> String {
    row["id"].as_str().expect("an id").to_owned()
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::Backend::memory().await;
                    super::$case(backend.store.clone()).await;
                    backend.store.close().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::Backend::sqlite().await;
                    super::$case(backend.store.clone()).await;
                    backend.store.close().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_postgres(super::$case).await;
                }
            )*
        }
    };
}

// After the macro, which its cases use too.
#[path = "hardening_tests.rs"]
mod hardening;

on_every_backend!(
    health_and_unknown_routes,
    product_lifecycle,
    stale_if_match_is_a_failed_precondition,
    reviews_and_details,
    search_offset_and_keyset_pages,
    bad_input_is_a_problem_and_writes_nothing,
    a_handler_that_fails_after_writing_leaves_nothing,
    a_success_without_commit_is_refused,
    a_panicking_handler_rolls_back,
    a_failed_commit_is_an_error_response,
    transfers_and_their_errors,
    concurrent_transfers_keep_the_total_exact,
    an_idempotent_transfer_retried_at_once_applies_once,
    a_closed_store_is_unavailable,
    shutdown_finishes_requests_in_flight_then_closes_the_store,
    malformed_bodies_are_named_in_the_api_words,
    patches_and_preconditions_follow_http,
    unknown_query_parameters_are_refused,
    users_reviews_and_the_ledger_are_reachable,
    metrics_are_served_in_prometheus_format,
    writes_are_delivered_by_the_relay,
    the_outbox_reports_its_backlog,
    the_relay_stops_after_the_requests_and_before_the_store_closes,
);

// ---------------------------------------------------------------------------------------------
// Cases

async fn health_and_unknown_routes(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let alive = server.get("/livez").await;
    assert_eq!(alive.ok(StatusCode::OK)["status"], "alive");
    let ready = server.get("/readyz").await;
    assert_eq!(ready.ok(StatusCode::OK)["status"], "ready");
    assert_eq!(ready.body["backend"], store.backend().as_str());
    // The older name answers the same readiness check.
    assert_eq!(server.get("/healthz").await.ok(StatusCode::OK), &ready.body);
    server
        .get("/no/such/route")
        .await
        .problem(StatusCode::NOT_FOUND, "no-route");
    server
        .post("/readyz", json!({}))
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}

/// The process's Prometheus recorder, installed by the first test that asks for it.
fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("the only recorder of this test binary");
            stockroom::metrics::describe();
            stockroom::relay::metrics::describe();
            handle
        })
        .clone()
}

async fn metrics_are_served_in_prometheus_format(store: Arc<dyn Store>) {
    let without = start(store.clone()).await;
    without
        .get("/metrics")
        .await
        .problem(StatusCode::NOT_FOUND, "no-route");

    let handle = prometheus();
    let relay = relay_of(store.clone());
    let state = app::AppState::new(store.clone(), Limits::default())
        .with_metrics(handle)
        .with_outbox(relay.deliveries());
    let server = serve(app::router(state), Limits::default()).await;
    server.product("metered", "METERED-1", 3).await;
    // The relay's metrics are there too, once it delivered the product's event.
    outbox_until(&server, "the event delivered", |outbox| {
        outbox["relay"]["delivered"] == 1
    })
    .await;
    relay.stop().await;
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let system = stockroom::metrics::system_name(store.backend());
    let insert = text.lines().find(|line| {
        line.starts_with("db_client_operation_duration")
            && line.contains(&format!("db_system_name=\"{system}\""))
            && line.contains("db_operation_name=\"insert\"")
            && line.contains("db_collection_name=\"products\"")
    });
    assert!(
        insert.is_some(),
        "no insert into products on {system} in:\n{text}"
    );
    assert!(
        text.contains("# HELP db_client_operation_duration"),
        "{text}"
    );
    let relayed = text.lines().find(|line| {
        line.starts_with("stockroom_relay_delivered")
            && line.contains("messaging_system=\"channel\"")
    });
    assert!(relayed.is_some(), "no events relayed in:\n{text}");
    assert!(text.contains("# HELP stockroom_relay_delivered"), "{text}");
}

async fn product_lifecycle(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;

    let created = server
        .post(
            "/categories",
            json!({ "name": "Kitchen", "slug": "kitchen" }),
        )
        .await;
    let kitchen = created.ok(StatusCode::CREATED);
    assert_eq!(kitchen["slug"], "kitchen");
    assert_eq!(kitchen["products"], json!([]));
    let kitchen_id = id_of(kitchen);

    let reply = server
        .post(
            "/products",
            json!({
                "name": "Blue mug", "slug": "blue-mug", "sku": "MUG-BLUE", "stock": 10,
                "description": "A mug", "status": "active", "category_id": kitchen_id,
            }),
        )
        .await;
    let mug = reply.ok(StatusCode::CREATED).clone();
    let id = id_of(&mug);
    assert_eq!(
        reply.header("location"),
        Some(format!("/products/{id}").as_str())
    );
    assert_eq!(reply.header("etag"), Some("\"1\""));
    assert_eq!(
        (
            &mug["stock"],
            &mug["status"],
            &mug["version"],
            &mug["category_id"]
        ),
        (&json!(10), &json!("active"), &json!(1), &json!(kitchen_id))
    );

    let fetched = server.get(&format!("/products/{id}")).await;
    assert_eq!(fetched.ok(StatusCode::OK), &mug);
    assert_eq!(fetched.header("etag"), Some("\"1\""));

    // A typed patch: absent fields stay, null clears.
    let patched = server
        .patch(
            &format!("/products/{id}"),
            Some("\"1\""),
            json!({ "name": "Big blue mug", "description": null }),
        )
        .await;
    let patched_body = patched.ok(StatusCode::OK);
    assert_eq!(patched_body["name"], "Big blue mug");
    assert_eq!(patched_body["description"], Value::Null);
    assert_eq!(patched_body["slug"], "blue-mug");
    assert_eq!(patched_body["version"], 2);
    assert_eq!(patched.header("etag"), Some("\"2\""));
    // Without If-Match the update is unconditional.
    let unconditional = server
        .patch(
            &format!("/products/{id}"),
            None,
            json!({ "status": "archived" }),
        )
        .await;
    assert_eq!(unconditional.ok(StatusCode::OK)["version"], 3);

    // Soft delete, the trash, restore.
    assert_eq!(
        server.delete(&format!("/products/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    server
        .get(&format!("/products/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    server
        .delete(&format!("/products/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let trash = server.get("/trash/products").await;
    let items = trash.ok(StatusCode::OK)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json!(id));
    assert!(items[0]["deleted_at"].is_string());

    let restored = server
        .post(&format!("/products/{id}/restore"), json!(null))
        .await;
    assert_eq!(restored.ok(StatusCode::OK)["deleted_at"], Value::Null);
    assert_eq!(
        server.get(&format!("/products/{id}")).await.status,
        StatusCode::OK
    );
    let trash = server.get("/trash/products").await;
    assert_eq!(trash.ok(StatusCode::OK)["items"], json!([]));
    // Restoring a live product answers it unchanged; an unknown id is a 404.
    let again = server
        .post(&format!("/products/{id}/restore"), json!(null))
        .await;
    assert_eq!(
        again.ok(StatusCode::OK)["version"],
        restored.body["version"]
    );
    server
        .post(
            &format!("/products/{}/restore", stockroom::ProductId::new()),
            json!(null),
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    // A category given as a reference must be live.
    let body = server
        .post(
            "/products",
            json!({ "name": "Pot", "slug": "pot", "sku": "POT", "category_id": stockroom::CategoryId::new() }),
        )
        .await;
    assert_eq!(
        body.problem(StatusCode::NOT_FOUND, "not-found")["entity"],
        "category"
    );
    writes_still_go_through(store.as_ref()).await;
}

async fn stale_if_match_is_a_failed_precondition(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let mug = server.product("mug", "MUG", 1).await;
    let id = id_of(&mug);
    let first = server
        .patch(
            &format!("/products/{id}"),
            Some("\"1\""),
            json!({ "name": "First" }),
        )
        .await;
    first.ok(StatusCode::OK);
    let second = server
        .patch(
            &format!("/products/{id}"),
            Some("\"1\""),
            json!({ "name": "Second" }),
        )
        .await;
    let problem = second.problem(StatusCode::PRECONDITION_FAILED, "stale-version");
    assert_eq!(
        (&problem["expected_version"], &problem["current_version"]),
        (&json!(1), &json!(2))
    );
    let current = server.get(&format!("/products/{id}")).await;
    assert_eq!(
        current.body["name"], "First",
        "the stale update changed nothing"
    );
    server
        .patch(
            &format!("/products/{id}"),
            Some("two"),
            json!({ "name": "Third" }),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
}

async fn reviews_and_details(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let mug = server.product("mug", "MUG", 3).await;
    let id = id_of(&mug);
    let ann = id_of(&server.user("ann@example.com", "Ann").await);
    let bob = id_of(&server.user("bob@example.com", "Bob").await);

    let first = server
        .post(
            &format!("/products/{id}/reviews"),
            json!({ "author_id": ann, "rating": 5, "body": "Lovely" }),
        )
        .await;
    assert_eq!(first.ok(StatusCode::CREATED)["rating"], 5);
    let second = server
        .post(
            &format!("/products/{id}/reviews"),
            json!({ "author_id": bob, "rating": 2 }),
        )
        .await;
    second.ok(StatusCode::CREATED);
    let duplicate = server
        .post(
            &format!("/products/{id}/reviews"),
            json!({ "author_id": ann, "rating": 1 }),
        )
        .await;
    assert_eq!(
        duplicate.problem(StatusCode::CONFLICT, "conflict")["constraint"],
        "review_author"
    );
    let bad = server
        .post(
            &format!("/products/{id}/reviews"),
            json!({ "author_id": bob, "rating": 6 }),
        )
        .await;
    let problem = bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("rating"), &json!("out_of_range"))
    );
    server
        .post(
            &format!("/products/{}/reviews", stockroom::ProductId::new()),
            json!({ "author_id": ann, "rating": 4 }),
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    let details = server.get(&format!("/products/{id}/details")).await;
    let details = details.ok(StatusCode::OK);
    assert_eq!(details["product"]["id"], json!(id));
    let reviews = details["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 2);
    assert_eq!(reviews[0]["author_id"], json!(bob), "newest first");
    assert_eq!(details["stats"]["count"], 2);
    assert_eq!(details["stats"]["average"], 3.5);
    assert_eq!(details["stats"]["histogram"], json!([0, 1, 0, 0, 1]));
    server
        .get(&format!(
            "/products/{}/details",
            stockroom::ProductId::new()
        ))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

async fn search_offset_and_keyset_pages(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let kitchen = server
        .post(
            "/categories",
            json!({ "name": "Kitchen", "slug": "kitchen" }),
        )
        .await;
    let kitchen_id = id_of(kitchen.ok(StatusCode::CREATED));
    let mut ids = Vec::new();
    for (i, name) in ["Blue mug", "Red mug", "Teapot", "Green mug", "Spoon"]
        .iter()
        .enumerate()
    {
        let mut body = json!({
            "name": name, "slug": format!("item-{i}"), "sku": format!("SKU-{i}"),
            "status": if i % 2 == 0 { "active" } else { "draft" },
        });
        if i < 3 {
            body["category_id"] = json!(kitchen_id);
        }
        ids.push(id_of(
            server.post("/products", body).await.ok(StatusCode::CREATED),
        ));
    }

    let mugs = server.get("/products?q=MUG").await;
    let mugs = mugs.ok(StatusCode::OK);
    assert_eq!(mugs["total"], json!({"count": 3, "exact": true}));
    let names: Vec<_> = mugs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("Blue mug"), json!("Red mug"), json!("Green mug")]
    );

    let page = server.get("/products?q=mug&limit=2&offset=2").await;
    let page = page.ok(StatusCode::OK);
    assert_eq!(
        (
            page["total"].clone(),
            page["items"].as_array().unwrap().len()
        ),
        (json!({"count": 3, "exact": true}), 1)
    );
    let filtered = server
        .get(&format!("/products?category_id={kitchen_id}&status=active"))
        .await;
    let filtered = filtered.ok(StatusCode::OK);
    assert_eq!(filtered["total"], json!({"count": 2, "exact": true}));
    assert_eq!(filtered["items"][1]["id"], json!(ids[2]));

    // Keyset pages: `cursor=` starts, `next_cursor` goes on, null at the end.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let reply = server
            .get(&format!("/products?limit=2&cursor={cursor}"))
            .await;
        let body = reply.ok(StatusCode::OK);
        assert!(body.get("total").is_none());
        seen.extend(body["items"].as_array().unwrap().iter().map(id_of));
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every product once, in creation order");

    for (query, field, rule) in [
        ("limit=0", "limit", "out_of_range"),
        ("limit=ten", "limit", "malformed"),
        ("offset=-1", "offset", "out_of_range"),
        ("cursor=nonsense", "cursor", "malformed"),
        ("cursor=&offset=2", "offset", "malformed"),
        ("category_id=42", "category_id", "malformed"),
        ("status=sold", "status", "malformed"),
        ("q=", "q", "empty"),
    ] {
        let reply = server.get(&format!("/products?{query}")).await;
        let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(
            (&problem["field"], &problem["rule"]),
            (&json!(field), &json!(rule)),
            "{query}"
        );
    }
}

async fn bad_input_is_a_problem_and_writes_nothing(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let url = format!("{}/products", server.base);

    let empty_name = server
        .post(
            "/products",
            json!({ "name": " ", "slug": "mug", "sku": "MUG" }),
        )
        .await;
    let problem = empty_name.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("name"), &json!("empty"))
    );
    let bad_sku = server
        .post(
            "/products",
            json!({ "name": "Mug", "slug": "mug", "sku": "mug lower" }),
        )
        .await;
    assert_eq!(
        bad_sku.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "sku"
    );
    let negative = server
        .post(
            "/products",
            json!({ "name": "Mug", "slug": "mug", "sku": "MUG", "stock": -1 }),
        )
        .await;
    assert_eq!(
        negative.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "stock"
    );

    let malformed = server
        .send(
            server
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"name\": \"Mug\", "),
        )
        .await;
    malformed.problem(StatusCode::BAD_REQUEST, "malformed-request");
    let mistyped = server
        .post(
            "/products",
            json!({ "name": "Mug", "slug": "mug", "sku": "MUG", "stock": "ten" }),
        )
        .await;
    let problem = mistyped.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"], &problem["expected"]),
        (&json!("stock"), &json!("malformed"), &json!("an integer"))
    );
    let missing = server.post("/products", json!({ "name": "Mug" })).await;
    let problem = missing.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("slug"), &json!("required"))
    );
    let not_json = server.send(server.client.post(&url).body("name=Mug")).await;
    not_json.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    let huge = json!({
        "name": "Mug", "slug": "mug", "sku": "MUG",
        "description": "x".repeat(Limits::default().max_body_bytes + 1),
    });
    server
        .post("/products", huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");

    let bad_id = server.get("/products/not-a-uuid").await;
    let problem = bad_id.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("id"), &json!("malformed"))
    );
    server
        .patch("/products/42", None, json!({ "name": "X" }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    server
        .delete("/products/42")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");

    assert_eq!(
        product_count(store.as_ref()).await,
        0,
        "no bad request wrote anything"
    );

    // Stock is not patchable (transfers move it), and a taken sku is a conflict.
    let mug = server.product("mug", "MUG", 5).await;
    let stock_patch = server
        .patch(
            &format!("/products/{}", id_of(&mug)),
            None,
            json!({ "stock": 500 }),
        )
        .await;
    let problem = stock_patch.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("stock"), &json!("unknown"))
    );
    let twin = server
        .post(
            "/products",
            json!({ "name": "Twin", "slug": "twin", "sku": "MUG" }),
        )
        .await;
    assert_eq!(
        twin.problem(StatusCode::CONFLICT, "conflict")["constraint"],
        "product_sku"
    );
    let current = server.get(&format!("/products/{}", id_of(&mug))).await;
    assert_eq!(
        (
            current.body["stock"].clone(),
            current.body["version"].clone()
        ),
        (json!(5), json!(1))
    );
    assert_eq!(product_count(store.as_ref()).await, 1);
    writes_still_go_through(store.as_ref()).await;
}

async fn a_handler_that_fails_after_writing_leaves_nothing(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    server.product("taken", "TAKEN", 0).await;
    // The category is written first, then its products; the second product's sku is taken.
    let reply = server
        .post(
            "/categories",
            json!({
                "name": "Kitchen", "slug": "kitchen",
                "products": [
                    { "name": "Pot", "slug": "pot", "sku": "POT" },
                    { "name": "Clash", "slug": "clash", "sku": "TAKEN" },
                ],
            }),
        )
        .await;
    assert_eq!(
        reply.problem(StatusCode::CONFLICT, "conflict")["constraint"],
        "product_sku"
    );
    assert!(
        !category_exists(store.as_ref(), "kitchen").await,
        "the category rolled back"
    );
    assert_eq!(product_count(store.as_ref()).await, 1);
    writes_still_go_through(store.as_ref()).await;

    let reply = server
        .post(
            "/categories",
            json!({
                "name": "Kitchen", "slug": "kitchen",
                "products": [{ "name": "Pot", "slug": "pot", "sku": "POT", "stock": 2 }],
            }),
        )
        .await;
    let body = reply.ok(StatusCode::CREATED);
    assert_eq!(body["products"][0]["category_id"], body["id"]);
    assert!(category_exists(store.as_ref(), "kitchen").await);
    assert_eq!(product_count(store.as_ref()).await, 2);
}

/// A handler that writes and then answers 201 without committing (it cannot return `Committed`
/// without `commit`, so it returns a bare status): the guard turns it into a 500, and the write
/// rolled back.
async fn forgets_to_commit(mut tx: stockroom::request::RequestUnitOfWork) -> StatusCode {
    let new = stockroom::NewCategory::new("Forgotten", "forgotten").unwrap();
    tx.categories().await.unwrap().create(new).await.unwrap();
    StatusCode::CREATED
}

async fn a_success_without_commit_is_refused(store: Arc<dyn Store>) {
    let routes = app::routes().route("/test/forgets", post(forgets_to_commit));
    let server = start_with(store.clone(), routes, Limits::default()).await;
    server
        .post("/test/forgets", json!({}))
        .await
        .problem(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!category_exists(store.as_ref(), "forgotten").await);
    writes_still_go_through(store.as_ref()).await;
}

async fn panics_after_writing(mut tx: stockroom::request::RequestUnitOfWork) -> StatusCode {
    let new = stockroom::NewCategory::new("Doomed", "doomed").unwrap();
    tx.categories().await.unwrap().create(new).await.unwrap();
    panic!("the handler fails after writing");
}

async fn a_panicking_handler_rolls_back(store: Arc<dyn Store>) {
    let routes = app::routes().route("/test/panics", post(panics_after_writing));
    let server = start_with(store.clone(), routes, Limits::default()).await;
    let reply = server.post("/test/panics", json!({})).await;
    let problem = reply.problem(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(
        !problem.to_string().contains("fails after writing"),
        "no internals: {problem}"
    );
    assert!(!category_exists(store.as_ref(), "doomed").await);
    writes_still_go_through(store.as_ref()).await;
    server.get("/healthz").await.ok(StatusCode::OK);
}

async fn a_failed_commit_is_an_error_response(store: Arc<dyn Store>) {
    // What the commit fails with, and the answer it must become (status, kind, Retry-After).
    type Case = (
        fn() -> Error,
        StatusCode,
        &'static str,
        Option<&'static str>,
    );
    let cases: [Case; 3] = [
        (
            || Error::transient("database is locked"),
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            Some("1"),
        ),
        (
            || Error::unavailable("connection reset"),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            Some("5"),
        ),
        (
            || {
                Error::backend(
                    "driver secret: password=hunter2",
                    std::io::Error::other("disk I/O"),
                )
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
        ),
    ];
    for (i, (error, status, kind, retry_after)) in cases.into_iter().enumerate() {
        let faulty = FaultyStore::shared(store.clone());
        faulty.inject(Fault::Commit, usize::MAX, error);
        let faulty: Arc<dyn Store> = Arc::new(faulty);
        let server = start(faulty).await;
        let slug = format!("doomed-{i}");
        let reply = server
            .post(
                "/products",
                json!({ "name": "Doomed", "slug": slug, "sku": format!("DOOMED-{i}") }),
            )
            .await;
        let problem = reply.problem(status, kind);
        assert_eq!(reply.header("retry-after"), retry_after);
        assert!(
            !problem.to_string().contains("hunter2"),
            "no internals: {problem}"
        );
        assert_eq!(
            product_count(store.as_ref()).await,
            0,
            "the failed commit wrote nothing"
        );
    }
    writes_still_go_through(store.as_ref()).await;
}

async fn transfers_and_their_errors(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let a = id_of(&server.product("a", "A", 10).await);
    let b = id_of(&server.product("b", "B", 0).await);

    // Without an Idempotency-Key: refused, nothing moves.
    let keyless = server
        .transfer_without_key(json!({ "source_id": a, "target_id": b, "quantity": 4 }))
        .await;
    let problem = keyless.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("idempotency_key"), &json!("required"))
    );

    let reply = server
        .transfer(
            json!({ "source_id": a, "target_id": b, "quantity": 4 }),
            Some("order-1"),
        )
        .await;
    let movement = reply.ok(StatusCode::CREATED);
    assert_eq!(
        (
            &movement["source_id"],
            &movement["target_id"],
            &movement["quantity"]
        ),
        (&json!(a), &json!(b), &json!(4))
    );
    assert_eq!(movement["idempotency_key"], "order-1");

    let short = server
        .transfer(
            json!({ "source_id": a, "target_id": b, "quantity": 7 }),
            None,
        )
        .await;
    let problem = short.problem(StatusCode::CONFLICT, "insufficient-stock");
    assert_eq!(
        (&problem["available"], &problem["requested"]),
        (&json!(6), &json!(7))
    );
    let same = server
        .transfer(
            json!({ "source_id": a, "target_id": a, "quantity": 1 }),
            None,
        )
        .await;
    let problem = same.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("target_id"), &json!("same_as"))
    );
    let zero = server
        .transfer(
            json!({ "source_id": a, "target_id": b, "quantity": 0 }),
            None,
        )
        .await;
    assert_eq!(
        zero.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "quantity"
    );
    let long_key = "k".repeat(129);
    let key = server
        .transfer(
            json!({ "source_id": a, "target_id": b, "quantity": 1 }),
            Some(&long_key),
        )
        .await;
    assert_eq!(
        key.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "idempotency_key"
    );
    let ghost = server
        .transfer(
            json!({ "source_id": a, "target_id": stockroom::ProductId::new(), "quantity": 1 }),
            None,
        )
        .await;
    ghost.problem(StatusCode::NOT_FOUND, "not-found");

    let stock = |id: String| {
        let server = &server;
        async move { server.get(&format!("/products/{id}")).await.body["stock"].clone() }
    };
    assert_eq!(
        (stock(a.clone()).await, stock(b.clone()).await),
        (json!(6), json!(4))
    );
    let mut read = store.read().await.unwrap();
    assert_eq!(
        read.movements().count().await.unwrap(),
        1,
        "only the good transfer is in the ledger"
    );
}

async fn concurrent_transfers_keep_the_total_exact(store: Arc<dyn Store>) {
    const CLIENTS: usize = 16;
    const TRANSFERS: usize = 10;
    let server = Arc::new(start(store.clone()).await);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(id_of(
            &server
                .product(&format!("p-{i}"), &format!("P-{i}"), 25)
                .await,
        ));
    }
    let ids = Arc::new(ids);

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (server, ids) = (server.clone(), ids.clone());
        clients.push(tokio::spawn(async move {
            let mut applied = 0u64;
            for n in 0..TRANSFERS {
                // Every direction between the four products, opposite ones included.
                let source = (client + n) % 4;
                let target = (source + 1 + (client / 4 + n) % 3) % 4;
                let quantity = 1 + ((client * 7 + n * 3) % 9) as i64;
                let reply = server
                    .transfer(
                        json!({ "source_id": ids[source], "target_id": ids[target], "quantity": quantity }),
                        None,
                    )
                    .await;
                match reply.status {
                    StatusCode::CREATED => applied += 1,
                    StatusCode::CONFLICT => {
                        reply.problem(StatusCode::CONFLICT, "insufficient-stock");
                    }
                    _ => panic!("unexpected answer: {reply:?}"),
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for client in clients {
        applied += client.await.unwrap();
    }
    assert!(applied > 0);

    let mut total = 0;
    for id in ids.iter() {
        let stock = server.get(&format!("/products/{id}")).await.body["stock"]
            .as_i64()
            .unwrap();
        assert!(stock >= 0);
        total += stock;
    }
    assert_eq!(total, 4 * 25, "stock is neither created nor lost");
    let mut read = store.read().await.unwrap();
    assert_eq!(
        read.movements().count().await.unwrap(),
        applied,
        "one ledger row per 201"
    );
}

async fn an_idempotent_transfer_retried_at_once_applies_once(store: Arc<dyn Store>) {
    let server = Arc::new(start(store.clone()).await);
    let a = id_of(&server.product("a", "A", 100).await);
    let b = id_of(&server.product("b", "B", 0).await);
    let body = json!({ "source_id": a, "target_id": b, "quantity": 7 });

    let mut retries = Vec::new();
    for _ in 0..10 {
        let (server, body) = (server.clone(), body.clone());
        retries.push(tokio::spawn(async move {
            server.transfer(body, Some("order-1234")).await
        }));
    }
    let mut movement_ids = HashSet::new();
    let mut created = 0;
    for retry in retries {
        let reply = retry.await.unwrap();
        // One request applied the transfer (201); the others are told theirs is a replay (200).
        let movement = match reply.status {
            StatusCode::CREATED => {
                created += 1;
                assert_eq!(reply.header("idempotent-replayed"), None);
                reply.ok(StatusCode::CREATED)
            }
            _ => {
                assert_eq!(reply.header("idempotent-replayed"), Some("true"));
                reply.ok(StatusCode::OK)
            }
        };
        assert_eq!(movement["idempotency_key"], "order-1234");
        movement_ids.insert(id_of(movement));
    }
    assert_eq!(created, 1, "one request applied the transfer");
    assert_eq!(
        movement_ids.len(),
        1,
        "every retry answers the same ledger row"
    );

    // Once more, later: still the same row, as a replay.
    let later = server.transfer(body.clone(), Some("order-1234")).await;
    assert_eq!(later.header("idempotent-replayed"), Some("true"));
    assert!(movement_ids.contains(&id_of(later.ok(StatusCode::OK))));
    // The same key for a different transfer is a conflict.
    let other = server
        .transfer(
            json!({ "source_id": a, "target_id": b, "quantity": 8 }),
            Some("order-1234"),
        )
        .await;
    assert_eq!(
        other.problem(StatusCode::CONFLICT, "conflict")["constraint"],
        "idempotency_key"
    );

    let a_now = server.get(&format!("/products/{a}")).await.body["stock"].clone();
    let b_now = server.get(&format!("/products/{b}")).await.body["stock"].clone();
    assert_eq!((a_now, b_now), (json!(93), json!(7)), "applied once");
    let mut read = store.read().await.unwrap();
    assert_eq!(read.movements().count().await.unwrap(), 1);
    assert_eq!(
        read.products()
            .list(&ProductFilter::default(), Page::new(10, 0).unwrap())
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn a_closed_store_is_unavailable(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    server.get("/readyz").await.ok(StatusCode::OK);
    store.close().await;
    // The process still serves; the store does not.
    server.get("/livez").await.ok(StatusCode::OK);
    let ready = server.get("/readyz").await;
    let problem = ready.problem(StatusCode::SERVICE_UNAVAILABLE, "not-ready");
    assert_eq!(problem["cause"], "unavailable");
    let read = server.get("/products").await;
    read.problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(read.header("retry-after"), Some("5"));
    let write = server
        .post(
            "/products",
            json!({ "name": "Mug", "slug": "mug", "sku": "MUG" }),
        )
        .await;
    write.problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

// ---------------------------------------------------------------------------------------------
// What clients see: the API's words, HTTP's semantics, every resource

/// Words of the implementation that must never reach a client: serde's and Rust's type names,
/// and the database's index names.
const IMPLEMENTATION_WORDS: &[&str] = &[
    "struct ",
    "i64",
    "u64",
    "u8",
    "Option",
    "ProductBody",
    "PatchBody",
    "CategoryBody",
    "TransferBody",
    "ReviewBody",
    "invalid type",
    "unknown variant",
    "UUID parsing",
    "sequence",
    "EOF while",
    "_live",
    "_pkey",
    "_fk",
];

#[track_caller]
fn speaks_the_api(reply: &Reply) {
    let text = reply.body.to_string();
    for word in IMPLEMENTATION_WORDS {
        assert!(!text.contains(word), "{word:?} in {text}");
    }
}

async fn malformed_bodies_are_named_in_the_api_words(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let mug = id_of(&server.product("mug", "MUG", 5).await);
    let good = || json!({ "name": "Cup", "slug": "cup", "sku": "CUP" });
    let with = |field: &str, value: Value| {
        let mut body = good();
        body[field] = value;
        body
    };
    let category = |products: Value| json!({ "name": "K", "slug": "k", "products": products });
    let transfer =
        |quantity: Value| json!({ "source_id": mug, "target_id": mug, "quantity": quantity });
    // (route, body, field, rule, what the field expects)
    let cases: Vec<(String, Value, &str, &str, Option<&str>)> = vec![
        (
            "/products".into(),
            json!([1, 2, 3]),
            "body",
            "malformed",
            Some("a JSON object"),
        ),
        (
            "/products".into(),
            json!("a mug"),
            "body",
            "malformed",
            Some("a JSON object"),
        ),
        (
            "/products".into(),
            with("name", json!(7)),
            "name",
            "malformed",
            Some("a string"),
        ),
        (
            "/products".into(),
            with("stock", json!("ten")),
            "stock",
            "malformed",
            Some("an integer"),
        ),
        (
            "/products".into(),
            with("stock", json!(1.5)),
            "stock",
            "malformed",
            Some("an integer"),
        ),
        (
            "/products".into(),
            with("stock", json!(1e30)),
            "stock",
            "malformed",
            Some("an integer"),
        ),
        (
            "/products".into(),
            with("status", json!("sold")),
            "status",
            "malformed",
            Some("one of draft, active, archived"),
        ),
        (
            "/products".into(),
            with("category_id", json!("42")),
            "category_id",
            "malformed",
            Some("a UUID or null"),
        ),
        (
            "/products".into(),
            with("price", json!(3)),
            "price",
            "unknown",
            None,
        ),
        (
            "/products".into(),
            with("name", Value::Null),
            "name",
            "not_null",
            None,
        ),
        (
            "/products".into(),
            json!({ "name": "Cup", "sku": "CUP" }),
            "slug",
            "required",
            None,
        ),
        (
            "/categories".into(),
            category(json!("none")),
            "products",
            "malformed",
            Some("an array of products"),
        ),
        (
            "/categories".into(),
            category(json!([1])),
            "products[0]",
            "malformed",
            Some("a JSON object"),
        ),
        (
            "/categories".into(),
            category(json!([{ "name": "A" }])),
            "products[0].slug",
            "required",
            None,
        ),
        (
            "/categories".into(),
            category(json!([good(), { "name": "B", "slug": "b", "sku": "B", "stock": "x" }])),
            "products[1].stock",
            "malformed",
            Some("an integer"),
        ),
        (
            "/transfers".into(),
            transfer(json!("1")),
            "quantity",
            "malformed",
            Some("an integer"),
        ),
        (
            "/transfers".into(),
            json!({ "source_id": 5, "target_id": mug, "quantity": 1 }),
            "source_id",
            "malformed",
            Some("a UUID"),
        ),
        (
            format!("/products/{mug}/reviews"),
            json!({ "author_id": mug, "rating": 4.5 }),
            "rating",
            "malformed",
            Some("an integer"),
        ),
        (
            "/users".into(),
            json!({ "email": "a@example.com" }),
            "display_name",
            "required",
            None,
        ),
    ];
    for (route, body, field, rule, expected) in cases {
        let reply = server.post(&route, body.clone()).await;
        let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(
            (&problem["field"], &problem["rule"]),
            (&json!(field), &json!(rule)),
            "{route} {body}: {problem}"
        );
        if let Some(expected) = expected {
            assert_eq!(problem["expected"], expected, "{route} {body}");
        }
        speaks_the_api(&reply);
    }

    // A body that is not JSON says where, without the parser's words.
    let broken = server
        .send(
            server
                .client
                .post(format!("{}/products", server.base))
                .header("content-type", "application/json")
                .body("{\"name\": \"Mug\",\n \"slug\": }"),
        )
        .await;
    let problem = broken.problem(StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(
        (&problem["line"], &problem["column"]),
        (&json!(2), &json!(10))
    );
    speaks_the_api(&broken);

    // A taken value names the field and the rule, not the index.
    let taken = server.post("/products", with("slug", json!("mug"))).await;
    let problem = taken.problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(
        (&problem["field"], &problem["rule"], &problem["constraint"]),
        (&json!("slug"), &json!("taken"), &json!("product_slug"))
    );
    speaks_the_api(&taken);
    assert_eq!(
        product_count(store.as_ref()).await,
        1,
        "nothing was written"
    );
}

async fn patches_and_preconditions_follow_http(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let created = server
        .post(
            "/products",
            json!({ "name": "Mug", "slug": "mug", "sku": "MUG" }),
        )
        .await;
    let id = id_of(created.ok(StatusCode::CREATED));
    // ETags are quoted strong validators.
    assert_eq!(created.header("etag"), Some("\"1\""));
    let path = format!("/products/{id}");
    let version = |reply: &Reply| reply.body["version"].clone();

    // `null` on a field that cannot be empty is refused, and changes nothing.
    for field in ["name", "slug", "sku", "status"] {
        let mut body = json!({});
        body[field] = Value::Null;
        let reply = server.patch(&path, None, body).await;
        let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(
            (&problem["field"], &problem["rule"]),
            (&json!(field), &json!("not_null"))
        );
    }
    // An empty patch changes nothing: the current row, the same version.
    let empty = server.patch(&path, None, json!({})).await;
    assert_eq!(version(&empty), json!(1));
    assert_eq!(empty.ok(StatusCode::OK)["name"], "Mug");
    assert_eq!(empty.header("etag"), Some("\"1\""));
    assert_eq!(
        version(&server.get(&path).await),
        json!(1),
        "no version bump"
    );
    server
        .patch(&path, Some("\"7\""), json!({}))
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "stale-version");

    // If-Match compares strongly: a stale tag, a weak tag, a tag of no version of ours fail.
    for stale in ["\"0\"", "W/\"1\"", "\"abc\"", "W/\"1\", \"2\""] {
        let reply = server
            .patch(&path, Some(stale), json!({ "name": "Nope" }))
            .await;
        let problem = reply.problem(StatusCode::PRECONDITION_FAILED, "stale-version");
        assert_eq!(problem["current_version"], 1, "{stale}");
    }
    // `*` matches any live row; a list matches when one of its tags does.
    let any = server
        .patch(&path, Some("*"), json!({ "name": "Any" }))
        .await;
    assert_eq!(version(&any), json!(2));
    assert_eq!(any.header("etag"), Some("\"2\""));
    let listed = server
        .patch(&path, Some("\"1\", \"2\""), json!({ "name": "Listed" }))
        .await;
    assert_eq!(listed.ok(StatusCode::OK)["version"], 3);
    // Not an entity tag at all: a 422 on `if_match`.
    let unquoted = server.patch(&path, Some("3"), json!({ "name": "X" })).await;
    assert_eq!(
        unquoted.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "if_match"
    );
    // No live row: 404, whatever the precondition.
    let ghost = format!("/products/{}", stockroom::ProductId::new());
    server
        .patch(&ghost, Some("*"), json!({ "name": "Ghost" }))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(server.get(&path).await.body["name"], "Listed");
}

/// A store with a read replica that has replayed nothing yet: `read` sessions are the
/// replica's (an empty store), everything else, `read_primary` included, the primary's.
struct ReplicaBehind {
    primary: Arc<dyn Store>,
    replica: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl Store for ReplicaBehind {
    fn backend(&self) -> stockroom::Backend {
        self.primary.backend()
    }
    async fn begin(&self) -> stockroom::Result<Box<dyn stockroom::UnitOfWork>> {
        self.primary.begin().await
    }
    async fn read(&self) -> stockroom::Result<Box<dyn stockroom::ReadSession>> {
        self.replica.read().await
    }
    async fn read_primary(&self) -> stockroom::Result<Box<dyn stockroom::ReadSession>> {
        self.primary.read_primary().await
    }
    async fn health(&self) -> stockroom::Result<()> {
        self.primary.health().await
    }
    async fn move_stock(
        &self,
        movement: &stockroom::NewStockMovement,
    ) -> stockroom::Result<stockroom::StockMoved> {
        self.primary.move_stock(movement).await
    }
    async fn claim_events(
        &self,
        options: &stockroom::outbox::ClaimOptions,
    ) -> stockroom::Result<stockroom::outbox::Claimed> {
        self.primary.claim_events(options).await
    }
    async fn outbox_backlog(&self) -> stockroom::Result<stockroom::outbox::Backlog> {
        self.primary.outbox_backlog().await
    }
    async fn purge_delivered_events(&self, before: stockroom::Timestamp) -> stockroom::Result<u64> {
        self.primary.purge_delivered_events(before).await
    }
    async fn close(&self) {
        self.primary.close().await;
        self.replica.close().await;
    }
}

/// What a client checks right after its own write is read on the primary, not on a replica
/// that may lag: the ledger it reads to learn whether its transfer applied, and the current
/// row (and its ETag) an empty PATCH answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_and_an_empty_patch_answer_from_the_primary() {
    let store: Arc<dyn Store> = Arc::new(ReplicaBehind {
        primary: stockroom::connect("memory://").await.unwrap(),
        replica: stockroom::connect("memory://").await.unwrap(),
    });
    let server = start(store.clone()).await;
    let mug = id_of(&server.product("mug", "MUG", 5).await);
    let cup = id_of(&server.product("cup", "CUP", 0).await);
    server
        .transfer(
            json!({ "source_id": mug, "target_id": cup, "quantity": 2 }),
            Some("order-1"),
        )
        .await
        .ok(StatusCode::CREATED);
    let ledger = server.get(&format!("/products/{mug}/movements")).await;
    let rows = ledger.ok(StatusCode::OK)["items"].clone();
    assert_eq!(rows[0]["idempotency_key"], "order-1", "{rows}");
    let empty = server
        .patch(&format!("/products/{mug}"), None, json!({}))
        .await;
    let current = empty.ok(StatusCode::OK);
    assert_eq!(current["stock"], 3, "the row after the transfer");
    let etag = format!("\"{}\"", current["version"]);
    assert_eq!(empty.header("etag"), Some(etag.as_str()));
    store.close().await;
}

async fn unknown_query_parameters_are_refused(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let a = id_of(&server.product("a", "A", 5).await);
    let b = id_of(&server.product("b", "B", 0).await);
    for (path, field, rule) in [
        ("/products?colour=red".to_owned(), "colour", "unknown"),
        ("/products?q=a&Limit=2".to_owned(), "Limit", "unknown"),
        (format!("/products/{a}?fields=name"), "fields", "unknown"),
        (
            "/trash/products?limit=1&limit=2".to_owned(),
            "limit",
            "repeated",
        ),
        (format!("/products/{a}/movements?page=2"), "page", "unknown"),
        ("/readyz?verbose=1".to_owned(), "verbose", "unknown"),
    ] {
        let reply = server.get(&path).await;
        let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert_eq!(
            (&problem["field"], &problem["rule"]),
            (&json!(field), &json!(rule)),
            "{path}"
        );
    }
    // A write with an unknown parameter does nothing.
    let dry_run = server
        .send(
            server
                .client
                .post(format!("{}/transfers?dry_run=true", server.base))
                .json(&json!({ "source_id": a, "target_id": b, "quantity": 1 })),
        )
        .await;
    assert_eq!(
        dry_run.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "dry_run"
    );
    assert_eq!(server.get(&format!("/products/{a}")).await.body["stock"], 5);
}

async fn users_reviews_and_the_ledger_are_reachable(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let created = server
        .post(
            "/users",
            json!({ "email": "Ann@Example.com", "display_name": "Ann" }),
        )
        .await;
    let ann = created.ok(StatusCode::CREATED).clone();
    let ann_id = id_of(&ann);
    assert_eq!(ann["email"], "ann@example.com");
    assert_eq!(
        created.header("location"),
        Some(format!("/users/{ann_id}").as_str())
    );
    assert_eq!(created.header("etag"), Some("\"1\""));
    let fetched = server.get(&format!("/users/{ann_id}")).await;
    assert_eq!(fetched.ok(StatusCode::OK), &ann);
    let twin = server
        .post(
            "/users",
            json!({ "email": "ann@example.com", "display_name": "Twin" }),
        )
        .await;
    let problem = twin.problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(
        (&problem["field"], &problem["rule"]),
        (&json!("email"), &json!("taken"))
    );
    let bad = server
        .post(
            "/users",
            json!({ "email": "not an email", "display_name": "X" }),
        )
        .await;
    assert_eq!(
        bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation")["field"],
        "email"
    );

    // A product's reviews, newest first, a page at a time.
    let mug = id_of(&server.product("mug", "MUG", 10).await);
    let cup = id_of(&server.product("cup", "CUP", 0).await);
    let bob = id_of(&server.user("bob@example.com", "Bob").await);
    for (author, rating) in [(&ann_id, 5), (&bob, 3)] {
        server
            .post(
                &format!("/products/{mug}/reviews"),
                json!({ "author_id": author, "rating": rating }),
            )
            .await
            .ok(StatusCode::CREATED);
    }
    let first = server
        .get(&format!("/products/{mug}/reviews?limit=1"))
        .await;
    let second = server
        .get(&format!("/products/{mug}/reviews?limit=1&offset=1"))
        .await;
    let author = |reply: &Reply| reply.ok(StatusCode::OK)["items"][0]["author_id"].clone();
    assert_eq!(
        (author(&first), author(&second)),
        (json!(bob), json!(ann_id))
    );
    assert_eq!(first.body["items"].as_array().unwrap().len(), 1);
    let none = server.get(&format!("/products/{cup}/reviews")).await;
    assert_eq!(none.ok(StatusCode::OK)["items"], json!([]));

    // The ledger of a product, oldest first: what a client reads to learn whether a transfer
    // it got no answer for was applied.
    server
        .transfer(
            json!({ "source_id": mug, "target_id": cup, "quantity": 2 }),
            None,
        )
        .await
        .ok(StatusCode::CREATED);
    server
        .transfer(
            json!({ "source_id": cup, "target_id": mug, "quantity": 1 }),
            Some("order-9"),
        )
        .await
        .ok(StatusCode::CREATED);
    let ledger = server.get(&format!("/products/{mug}/movements")).await;
    let rows = ledger.ok(StatusCode::OK)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0]["quantity"], &rows[0]["source_id"]),
        (&json!(2), &json!(mug))
    );
    assert_eq!(rows[1]["idempotency_key"], "order-9");
    let later = server
        .get(&format!("/products/{cup}/movements?limit=1&offset=1"))
        .await;
    assert_eq!(later.ok(StatusCode::OK)["items"], json!([rows[1].clone()]));
    for path in [
        format!("/products/{}/movements", stockroom::ProductId::new()),
        format!("/products/{}/reviews", stockroom::ProductId::new()),
    ] {
        server
            .get(&path)
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }

    // Users are soft-deleted.
    assert_eq!(
        server.delete(&format!("/users/{ann_id}")).await.status,
        StatusCode::NO_CONTENT
    );
    for _ in 0..2 {
        let reply = server.get(&format!("/users/{ann_id}")).await;
        assert_eq!(
            reply.problem(StatusCode::NOT_FOUND, "not-found")["entity"],
            "user"
        );
        server
            .delete(&format!("/users/{ann_id}"))
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
}

/// Lets a test hold a request in flight.
#[derive(Default)]
struct Gate {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

async fn slow_write(
    axum::Extension(gate): axum::Extension<Arc<Gate>>,
    mut tx: stockroom::request::RequestUnitOfWork,
) -> Result<stockroom::request::Committed<StatusCode>, app::Problem> {
    let new = stockroom::NewCategory::new("Slow", "slow")?;
    tx.categories().await?.create(new).await?;
    gate.started.notify_one();
    gate.release.notified().await;
    Ok(tx.commit(StatusCode::CREATED).await?)
}

async fn shutdown_finishes_requests_in_flight_then_closes_the_store(store: Arc<dyn Store>) {
    let gate = Arc::new(Gate::default());
    let routes = app::routes().route(
        "/test/slow",
        post(slow_write).layer(axum::Extension(gate.clone())),
    );
    let Running {
        addr,
        stop,
        serving,
        ..
    } = run_until_stopped(store.clone(), routes, Limits::default()).await;
    let url = format!("http://{addr}/test/slow");

    let request = tokio::spawn(reqwest::Client::new().post(url).send());
    gate.started.notified().await;
    stop.send(()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !serving.is_finished(),
        "shutdown waits for the request in flight"
    );
    store
        .health()
        .await
        .expect("the store stays open while a request is in flight");

    gate.release.notify_one();
    let response = request
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), StatusCode::CREATED);
    tokio::time::timeout(std::time::Duration::from_secs(5), serving)
        .await
        .expect("shutdown completes once the request is done")
        .unwrap();
    assert!(
        matches!(store.health().await, Err(Error::Unavailable { .. })),
        "the store is closed after the last request"
    );
}

// ---------------------------------------------------------------------------------------------
// Events: Stockroom's own events, the service's relay, `GET /outbox`

/// `GET /outbox`, asked until `done` says yes (within 10 s): its last answer.
async fn outbox_until(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let outbox = server.get("/outbox").await.ok(StatusCode::OK).clone();
        if done(&outbox) {
            return outbox;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within 10 s: {outbox:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The subject and aggregate of each event the relay says it delivered, in delivery order.
fn delivered(outbox: &Value) -> Vec<(String, String)> {
    let recent = outbox["relay"]["recent"]
        .as_array()
        .expect("the relay's recent events");
    recent
        .iter()
        .map(|event| {
            let text = |field: &str| event[field].as_str().expect(field).to_owned();
            (text("subject"), text("aggregate"))
        })
        .collect()
}

fn event(subject: &str, aggregate: &str) -> (String, String) {
    (subject.to_owned(), aggregate.to_owned())
}

/// A product created and a transfer made through HTTP are delivered by the service's relay:
/// `stockroom.product.created` for each product (the product as aggregate), and
/// `stockroom.stock.moved` with the source as aggregate, after its creation; writes that are
/// refused deliver nothing. Without the relay nothing would be delivered and the backlog would
/// keep them pending.
async fn writes_are_delivered_by_the_relay(store: Arc<dyn Store>) {
    use stockroom::outbox::subjects::{PRODUCT_CREATED, STOCK_MOVED};
    let (server, relay) = start_with_relay(store.clone()).await;
    let mug = id_of(&server.product("relayed-mug", "RELAY-MUG", 10).await);
    let cup = id_of(&server.product("relayed-cup", "RELAY-CUP", 0).await);
    let transfer = json!({ "source_id": mug, "target_id": cup, "quantity": 4 });
    server
        .transfer(transfer, None)
        .await
        .ok(StatusCode::CREATED);
    // Refused writes roll back, and their events with them.
    let too_many = json!({ "source_id": mug, "target_id": cup, "quantity": 99 });
    server
        .transfer(too_many, None)
        .await
        .problem(StatusCode::CONFLICT, "insufficient-stock");
    server
        .post(
            "/products",
            json!({ "name": "Twin", "slug": "relayed-mug", "sku": "RELAY-TWIN" }),
        )
        .await
        .problem(StatusCode::CONFLICT, "conflict");

    let answer = outbox_until(&server, "the three events delivered", |outbox| {
        outbox["pending"] == 0 && outbox["relay"]["delivered"] == 3
    })
    .await;
    assert_eq!(
        (&answer["relay"]["sink"], &answer["relay"]["running"]),
        (&json!("channel"), &json!(true)),
        "{answer:#}"
    );
    // Delivered and not purged (the retention is a day); none waits.
    assert_eq!(
        (&answer["delivered"], &answer["oldest"], &answer["age_ms"]),
        (&json!(3), &Value::Null, &json!(0)),
        "{answer:#}"
    );
    let seen = delivered(&answer);
    let mut sorted = seen.clone();
    sorted.sort();
    let mut expected = vec![
        event(PRODUCT_CREATED, &mug),
        event(PRODUCT_CREATED, &cup),
        event(STOCK_MOVED, &mug),
    ];
    expected.sort();
    assert_eq!(sorted, expected, "{answer:#}");
    // Each aggregate's events in commit order: the mug's creation, then its stock move.
    let at = |subject: &str| {
        seen.iter()
            .position(|e| *e == event(subject, &mug))
            .unwrap()
    };
    assert!(at(PRODUCT_CREATED) < at(STOCK_MOVED), "{seen:?}");
    let recent = answer["relay"]["recent"].as_array().unwrap();
    let ids: HashSet<&str> = recent.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "each event has an id of its own: {answer:#}");

    // Nothing else comes: the refused writes published nothing.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let later = server.get("/outbox").await;
    let later = later.ok(StatusCode::OK);
    assert_eq!(
        (&later["pending"], &later["relay"]["delivered"]),
        (&json!(0), &json!(3)),
        "{later:#}"
    );
    relay.stop().await;
}

/// `GET /outbox` answers the backlog: an event waits while no relay runs, with its time and
/// age, and is delivered once the service's relay starts; a stopped relay says so.
async fn the_outbox_reports_its_backlog(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let empty = server.get("/outbox").await;
    assert_eq!(
        empty.ok(StatusCode::OK),
        &json!({ "pending": 0, "oldest": null, "age_ms": 0, "delivered": 0, "relay": null })
    );
    server
        .get("/outbox?limit=1")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");

    let before = stockroom::time::now() - std::time::Duration::from_secs(1);
    let mug = id_of(&server.product("waiting-mug", "WAITING-MUG", 1).await);
    // No relay: the event waits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = server.get("/outbox").await;
    let waiting = waiting.ok(StatusCode::OK);
    assert_eq!(
        (
            &waiting["pending"],
            &waiting["delivered"],
            &waiting["relay"]
        ),
        (&json!(1), &json!(0), &Value::Null),
        "{waiting:#}"
    );
    let oldest: stockroom::Timestamp = serde_json::from_value(waiting["oldest"].clone()).unwrap();
    assert!(oldest >= before, "{waiting:#}");
    assert!(waiting["age_ms"].as_u64().unwrap() >= 250, "{waiting:#}");

    // The service's relay, started on the same store, delivers it.
    let relay = relay_of(store.clone());
    let deliveries = relay.deliveries();
    let state =
        app::AppState::new(store.clone(), Limits::default()).with_outbox(relay.deliveries());
    let relayed = serve(app::router(state), Limits::default()).await;
    let answer = outbox_until(&relayed, "the waiting event delivered", |outbox| {
        outbox["pending"] == 0
    })
    .await;
    assert_eq!(
        (&answer["delivered"], &answer["oldest"], &answer["age_ms"]),
        (&json!(1), &Value::Null, &json!(0)),
        "{answer:#}"
    );
    assert_eq!(
        delivered(&answer),
        [event(stockroom::outbox::subjects::PRODUCT_CREATED, &mug)]
    );
    assert_eq!(answer["relay"]["running"], true);

    relay.stop().await;
    assert!(!deliveries.is_running());
    let stopped = relayed.get("/outbox").await;
    assert_eq!(stopped.ok(StatusCode::OK)["relay"]["running"], false);
}

/// A store that notes whether the service's relay still ran when the store was closed.
struct NotesClose {
    inner: Arc<dyn Store>,
    relay: std::sync::OnceLock<Arc<events::Deliveries>>,
    relay_ran_at_close: std::sync::Mutex<Option<bool>>,
}

#[async_trait::async_trait]
impl Store for NotesClose {
    fn backend(&self) -> stockroom::Backend {
        self.inner.backend()
    }
    async fn begin(&self) -> stockroom::Result<Box<dyn stockroom::UnitOfWork>> {
        self.inner.begin().await
    }
    async fn read(&self) -> stockroom::Result<Box<dyn stockroom::ReadSession>> {
        self.inner.read().await
    }
    async fn health(&self) -> stockroom::Result<()> {
        self.inner.health().await
    }
    async fn claim_events(
        &self,
        options: &stockroom::outbox::ClaimOptions,
    ) -> stockroom::Result<stockroom::outbox::Claimed> {
        self.inner.claim_events(options).await
    }
    async fn outbox_backlog(&self) -> stockroom::Result<stockroom::outbox::Backlog> {
        self.inner.outbox_backlog().await
    }
    async fn purge_delivered_events(&self, before: stockroom::Timestamp) -> stockroom::Result<u64> {
        self.inner.purge_delivered_events(before).await
    }
    async fn close(&self) {
        let running = self.relay.get().map(|relay| relay.is_running());
        *self.relay_ran_at_close.lock().unwrap() = running;
        self.inner.close().await;
    }
}

/// On shutdown the service drains its requests, then stops its relay, then closes the store:
/// the relay never claims from a closed store, and what it delivered before is kept.
async fn the_relay_stops_after_the_requests_and_before_the_store_closes(store: Arc<dyn Store>) {
    let noting = Arc::new(NotesClose {
        inner: store.clone(),
        relay: std::sync::OnceLock::new(),
        relay_ran_at_close: std::sync::Mutex::new(None),
    });
    let Running {
        addr,
        stop,
        serving,
        deliveries,
    } = run_until_stopped(noting.clone(), app::routes(), Limits::default()).await;
    noting.relay.set(Arc::clone(&deliveries)).unwrap();
    let server = Server {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    };
    let mug = id_of(&server.product("stopping-mug", "STOPPING-MUG", 1).await);
    let answer = outbox_until(&server, "the event delivered", |outbox| {
        outbox["relay"]["delivered"] == 1
    })
    .await;
    assert_eq!(
        delivered(&answer),
        [event(stockroom::outbox::subjects::PRODUCT_CREATED, &mug)]
    );
    assert!(deliveries.is_running());

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), serving)
        .await
        .expect("the shutdown ends")
        .unwrap();
    assert!(!deliveries.is_running(), "the relay stopped");
    assert_eq!(
        *noting.relay_ran_at_close.lock().unwrap(),
        Some(false),
        "the store was closed after the relay stopped"
    );
    assert!(matches!(
        store.health().await,
        Err(Error::Unavailable { .. })
    ));
}

/// The service's event settings: its own events on unless `STOCKROOM_OWN_EVENTS` says
/// otherwise, the in-process channel unless `STOCKROOM_NATS_URL` is set, a day's retention.
#[test]
fn the_event_settings_and_their_defaults() {
    let settings = |pairs: &'static [(&'static str, &'static str)]| {
        settings::Settings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let defaults = settings(&[]).unwrap();
    assert!(defaults.store.own_events);
    assert_eq!(defaults.outbox, settings::OutboxSettings::default());
    assert_eq!(
        (
            &defaults.outbox.nats_url,
            defaults.outbox.nats_stream.as_str(),
            defaults.outbox.retention
        ),
        (&None, "STOCKROOM", std::time::Duration::from_secs(86_400))
    );
    assert!(
        !settings(&[("STOCKROOM_OWN_EVENTS", "false")])
            .unwrap()
            .store
            .own_events
    );
    let set = settings(&[
        ("STOCKROOM_NATS_URL", " nats://127.0.0.1:4222 "),
        ("STOCKROOM_NATS_STREAM", "SHOP_EVENTS"),
        ("STOCKROOM_OUTBOX_RETENTION_MS", "60000"),
    ])
    .unwrap()
    .outbox;
    assert_eq!(
        set,
        settings::OutboxSettings {
            nats_url: Some("nats://127.0.0.1:4222".to_owned()),
            nats_stream: "SHOP_EVENTS".to_owned(),
            retention: std::time::Duration::from_secs(60),
        }
    );
    assert_eq!(
        settings(&[("STOCKROOM_NATS_URL", "")])
            .unwrap()
            .outbox
            .nats_url,
        None
    );
    for (pairs, says) in [
        (
            &[("STOCKROOM_NATS_STREAM", "shop.events")][..],
            "invalid STOCKROOM_NATS_STREAM: \"shop.events\" is not a stream name",
        ),
        (
            &[("STOCKROOM_OUTBOX_RETENTION_MS", "0")][..],
            "invalid STOCKROOM_OUTBOX_RETENTION_MS: \"0\" is not a positive integer",
        ),
        (
            &[("STOCKROOM_OWN_EVENTS", "maybe")][..],
            "STOCKROOM_OWN_EVENTS",
        ),
    ] {
        let error = settings(pairs).unwrap_err().to_string();
        assert!(error.contains(says), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

/// `STOCKROOM_NATS_URL` on a server that is not there stops the startup with one line naming
/// it (with the `nats` feature), or, without the feature, one line saying what to build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_url_that_cannot_be_used_fails_startup_readably() {
    let store = stockroom::connect("memory://").await.unwrap();
    let settings = settings::OutboxSettings {
        nats_url: Some("nats://user:secret@127.0.0.1:1".to_owned()),
        ..settings::OutboxSettings::default()
    };
    let started = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        events::Outbox::start(store.clone(), &settings, std::time::Duration::from_secs(3)),
    )
    .await
    .expect("startup gives up within its connect timeout");
    let error = started.unwrap_err().to_string();
    #[cfg(feature = "nats")]
    assert!(
        error.starts_with("cannot use NATS at nats://user:***@127.0.0.1:1: "),
        "{error}"
    );
    #[cfg(not(feature = "nats"))]
    assert!(
        error.starts_with("invalid STOCKROOM_NATS_URL: is set, but the service was built without"),
        "{error}"
    );
    assert!(
        !error.contains('\n') && !error.contains("secret"),
        "{error}"
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// Fault injection: a store whose commits fail

// ---------------------------------------------------------------------------------------------
// Tracing: the library's spans open inside the request's span

mod spans {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use serde_json::json;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    /// Every span seen: its name, the names of its ancestors, and its fields as text.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub name: &'static str,
        pub ancestors: Vec<&'static str>,
        pub fields: HashMap<&'static str, String>,
    }

    static SEEN: OnceLock<Mutex<HashMap<u64, Seen>>> = OnceLock::new();

    fn seen() -> &'static Mutex<HashMap<u64, Seen>> {
        SEEN.get_or_init(Default::default)
    }

    struct Fields<'a>(&'a mut HashMap<&'static str, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name(), value.to_owned());
        }
    }

    struct Recorder;

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            let ancestors = span.scope().skip(1).map(|s| s.name()).collect();
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            let entry = Seen {
                name: span.name(),
                ancestors,
                fields,
            };
            seen().lock().unwrap().insert(id.into_u64(), entry);
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
            if let Some(entry) = seen().lock().unwrap().get_mut(&id.into_u64()) {
                values.record(&mut Fields(&mut entry.fields));
            }
        }
    }

    pub fn install() {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(Recorder);
            tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        });
    }

    pub fn snapshot() -> Vec<Seen> {
        seen().lock().unwrap().values().cloned().collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn request_spans_hold_the_library_spans() {
        install();
        let store = stockroom::connect("memory://").await.unwrap();
        let server = super::start(store).await;
        let a = super::id_of(&server.product("span-a", "SPAN-A", 5).await);
        let b = super::id_of(&server.product("span-b", "SPAN-B", 0).await);
        let key = format!("spans-{}", stockroom::ProductId::new());
        let reply = server
            .transfer(
                json!({ "source_id": a, "target_id": b, "quantity": 2 }),
                Some(&key),
            )
            .await;
        reply.ok(reqwest::StatusCode::CREATED);

        let spans = snapshot();
        let transfer = spans
            .iter()
            .find(|s| s.name == "stockroom.transfer" && s.fields.get("source") == Some(&a))
            .expect("the transfer use case opened its span");
        assert_eq!(transfer.ancestors, ["http.request"], "{transfer:?}");
        assert_eq!(transfer.fields["outcome"], "applied");
        let request = spans
            .iter()
            .find(|s| {
                s.name == "http.request"
                    && s.fields.get("route").map(String::as_str) == Some("/transfers")
                    && s.fields.get("status").map(String::as_str) == Some("201")
            })
            .expect("the request span of the transfer");
        assert_eq!(request.fields["method"], "POST");
        assert!(request.fields.contains_key("latency_ms"), "{request:?}");
    }
}

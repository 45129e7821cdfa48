//! The service as an operator and an attacker try it: slow and idle clients, a shutdown that
//! must end, health that tells the truth, faults that are not "retry later", a locked row that
//! must not starve everyone, and a startup that fails fast and readably. Every wait is bounded:
//! a case that would hang fails instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use reqwest::StatusCode;
use serde_json::json;
// The dev-dependency on stockroom-core has `mocks` on, whatever the facade's features.
use stockroom::{Error, Store};
use stockroom_core::mocks::{Fault, FaultyStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[cfg(feature = "postgres")]
use super::on_postgres;
use super::{
    app, id_of, run_until_stopped, start, start_limited, start_with, Backend, Gate, Limits, Running,
};
use crate::settings::Settings;
use crate::startup;

on_every_backend!(
    a_shutdown_ends_despite_half_sent_requests,
    readiness_waits_behind_no_busy_connection,
);

/// Limits small enough for a test to outwait.
fn short_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(1_500),
        write_deadline: Duration::from_millis(1_000),
        shutdown_grace: Duration::from_millis(500),
        ..Limits::default()
    }
}

/// Fails the test unless `future` finishes within `bound`.
async fn within<T>(bound: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(bound, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {bound:?}"),
    }
}

/// A raw connection that has sent `bytes`, and no more.
async fn half_sent(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Everything the server sends until it closes the connection.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    // A reset counts as closed too.
    let _ = stream.read_to_end(&mut received).await;
    String::from_utf8_lossy(&received).into_owned()
}

const HALF_HEADERS: &[u8] = b"POST /products HTTP/1.1\r\nhost: stockroom\r\ncontent-type: appl";
const HALF_BODY: &[u8] = b"POST /products HTTP/1.1\r\nhost: stockroom\r\n\
content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\": \"Mu";

// ---------------------------------------------------------------------------------------------
// 1. A slow client cannot keep the process alive

/// One client that sent half its headers, one half its body, one nothing at all: after the
/// shutdown signal the service still ends (within the grace period), and closes the store.
async fn a_shutdown_ends_despite_half_sent_requests(store: Arc<dyn Store>) {
    let limits = Limits {
        // Long enough that only the shutdown deadline can end these clients.
        header_read_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_millis(500),
        ..Limits::default()
    };
    let Running {
        addr,
        stop,
        serving,
        ..
    } = run_until_stopped(store.clone(), app::routes(), limits).await;
    let mut clients = vec![
        half_sent(addr, HALF_HEADERS).await,
        half_sent(addr, HALF_BODY).await,
        half_sent(addr, b"").await,
    ];
    // The half body is in a handler by now, waiting for the rest.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    within(Duration::from_secs(10), "the shutdown", serving)
        .await
        .unwrap();
    assert!(
        matches!(store.health().await, Err(Error::Unavailable { .. })),
        "the store is closed"
    );
    for client in &mut clients {
        within(
            Duration::from_secs(2),
            "the dropped connection",
            until_closed(client),
        )
        .await;
    }
}

/// Half headers: the connection is closed after the header timeout. Half a body: a 408
/// problem after the body timeout. A handler that takes too long: a 503 problem after the
/// request timeout, its unit of work rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_and_slow_requests_are_cut_off() {
    let backend = Backend::memory().await;
    let gate = Arc::new(Gate::default());
    let routes = app::routes().route(
        "/test/slow",
        post(super::slow_write).layer(axum::Extension(gate.clone())),
    );
    let server = start_with(backend.store.clone(), routes, short_limits()).await;

    let mut headers = half_sent(server.addr, HALF_HEADERS).await;
    within(
        Duration::from_secs(5),
        "the header timeout",
        until_closed(&mut headers),
    )
    .await;

    let mut body = half_sent(server.addr, HALF_BODY).await;
    let answer = within(
        Duration::from_secs(5),
        "the body timeout",
        until_closed(&mut body),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.contains("urn:stockroom:problem:body-timeout"),
        "{answer}"
    );

    // The handler writes, then waits forever: the request timeout drops it.
    let reply = within(
        Duration::from_secs(10),
        "the request timeout",
        server.post("/test/slow", json!({})),
    )
    .await;
    reply.problem(StatusCode::SERVICE_UNAVAILABLE, "timeout");
    assert_eq!(reply.header("retry-after"), Some("1"));
    super::writes_still_go_through(backend.store.as_ref()).await;
    assert!(!super::category_exists(backend.store.as_ref(), "slow").await);
}

/// 500 connections that send nothing, with room for 50 at a time: every one is closed by the
/// server after the header timeout, and a real request, queued behind them, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_are_bounded_and_closed() {
    const IDLE: usize = 500;
    let backend = Backend::memory().await;
    let limits = Limits {
        max_connections: 50,
        ..short_limits()
    };
    let server = start_limited(backend.store.clone(), limits).await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let live = within(
        Duration::from_secs(30),
        "a request behind 500 idle connections",
        server.get("/livez"),
    )
    .await;
    live.ok(StatusCode::OK);
    // Each closes on its own, so awaiting them in turn waits as long as the last one.
    let closing = async {
        for connection in &mut idle {
            until_closed(connection).await;
        }
    };
    within(
        Duration::from_secs(30),
        "closing every idle connection",
        closing,
    )
    .await;
}

/// With one request in flight allowed, a second waits for the slot until the first is done;
/// the probes are not held behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_the_in_flight_limit_wait_their_turn() {
    let backend = Backend::memory().await;
    let gate = Arc::new(Gate::default());
    let routes = app::routes().route(
        "/test/slow",
        post(super::slow_write).layer(axum::Extension(gate.clone())),
    );
    let limits = Limits {
        max_in_flight: 1,
        request_timeout: Duration::from_secs(30),
        ..short_limits()
    };
    let server = Arc::new(start_with(backend.store.clone(), routes, limits).await);
    let held = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/test/slow", json!({})).await })
    };
    gate.started.notified().await;
    let mut queued = {
        let server = server.clone();
        tokio::spawn(async move { server.get("/products").await })
    };
    server.get("/livez").await.ok(StatusCode::OK);
    let early = tokio::time::timeout(Duration::from_millis(500), &mut queued).await;
    assert!(early.is_err(), "the second request waits for the slot");
    gate.release.notify_one();
    held.await.unwrap().ok(StatusCode::CREATED);
    let queued = within(Duration::from_secs(5), "the queued request", queued).await;
    queued.unwrap().ok(StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// 2. Health says what is true

/// With the writer and every pooled connection taken, readiness still answers at once: it
/// waits behind none of them (the old health check waited the acquire timeout).
async fn readiness_waits_behind_no_busy_connection(store: Arc<dyn Store>) {
    let server = start(store.clone()).await;
    let writer = store.begin().await.unwrap();
    let mut readers = Vec::new();
    // Every read connection the store has (a memory store has no bound: 64 is plenty).
    while readers.len() < 64 {
        match tokio::time::timeout(Duration::from_millis(300), store.read()).await {
            Ok(Ok(session)) => readers.push(session),
            _ => break,
        }
    }
    let ready = within(Duration::from_secs(5), "readiness", server.get("/readyz")).await;
    assert_eq!(ready.ok(StatusCode::OK)["status"], "ready");
    drop(readers);
    writer.rollback().await.unwrap();
}

/// A store whose readiness check takes a while (300 ms) and counts how many run at once: what a
/// PostgreSQL store does when its pool is busy, where each check opens a server connection of
/// its own.
struct SlowReadiness {
    inner: Arc<dyn Store>,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for SlowReadiness {
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
    async fn readiness(&self) -> stockroom::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.running.fetch_sub(1, SeqCst);
        self.inner.readiness().await
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
        self.inner.close().await;
    }
}

/// Many readiness probes at once (a load balancer's, a crowd's) run one check of the store at a
/// time, and those that arrived while it ran share its answer: 200 probes never make the
/// store run two checks at once (on PostgreSQL, each may open a connection of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readiness_probes_share_one_check() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = Arc::new(SlowReadiness {
        inner: stockroom::connect("memory://").await.unwrap(),
        running: 0.into(),
        most: 0.into(),
        calls: 0.into(),
    });
    let server = Arc::new(start(store.clone()).await);
    const PROBES: usize = 200;
    let probes: Vec<_> = (0..PROBES)
        .map(|_| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.get("/readyz").await })
        })
        .collect();
    let answers = within(
        Duration::from_secs(30),
        "the probes",
        futures_join_all(probes),
    )
    .await;
    for answer in answers {
        assert_eq!(answer.unwrap().ok(StatusCode::OK)["status"], "ready");
    }
    assert_eq!(
        store.most.load(SeqCst),
        1,
        "checks run at once ({} checks for {PROBES} probes)",
        store.calls.load(SeqCst)
    );
    store.close().await;
}

/// Awaits every handle of `handles`, in order.
async fn futures_join_all<T>(
    handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 3. Permanent faults are not "retry later"

/// A file made read-only for this process: `a-w`, and, for a process that permissions do not
/// stop (root), the immutable attribute too. Undone when dropped.
struct ReadOnlyFile {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyFile {
    /// `None` when the file cannot be made read-only here (root without `chattr`, or a file
    /// system without the attribute): the case is then skipped.
    fn make(path: &Path) -> Option<Self> {
        set_mode(path, 0o444);
        let mut file = Self {
            path: path.to_owned(),
            immutable: false,
        };
        if !permissions_bind_us(path.parent().unwrap()) {
            let set = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status();
            if !set.is_ok_and(|s| s.success()) {
                eprintln!("skipped: cannot make {} read-only for root", path.display());
                return None;
            }
            file.immutable = true;
        }
        Some(file)
    }
}

impl Drop for ReadOnlyFile {
    fn drop(&mut self) {
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        }
        set_mode(&self.path, 0o644);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether file permissions stop this process, tried on a file of its own in `dir` (never on a
/// database file: closing a descriptor of it would drop SQLite's locks).
fn permissions_bind_us(dir: &Path) -> bool {
    let probe = dir.join("permission-probe");
    std::fs::write(&probe, b"").unwrap();
    set_mode(&probe, 0o444);
    let bound = std::fs::OpenOptions::new()
        .write(true)
        .open(&probe)
        .is_err();
    set_mode(&probe, 0o644);
    std::fs::remove_file(&probe).ok();
    bound
}

/// A SQLite file made read-only under a running service: readiness says so at once (the next
/// store on the file cannot write; the running writer keeps the descriptor it opened). After a
/// restart on the file, reads still work, every write is a 500 `storage-fault` without
/// `Retry-After` (not a 503 "retry later" forever), and readiness still says not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_sqlite_file_is_a_storage_fault() {
    let backend = Backend::sqlite().await;
    let path = backend.dir.as_ref().unwrap().join("service.db");
    let server = start(backend.store.clone()).await;
    let mug = id_of(&server.product("mug", "MUG", 3).await);
    server.get("/readyz").await.ok(StatusCode::OK);

    let Some(_read_only) = ReadOnlyFile::make(&path) else {
        return;
    };
    let not_ready = |reply: &super::Reply| {
        let problem = reply.problem(StatusCode::SERVICE_UNAVAILABLE, "not-ready");
        assert_eq!(
            (&problem["cause"], &problem["fault"]),
            (&json!("storage-fault"), &json!("read_only"))
        );
    };
    not_ready(&server.get("/readyz").await);
    backend.store.close().await;

    let store = stockroom::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("a read-only file still opens for reads");
    let server = start(store.clone()).await;
    assert_eq!(
        server
            .get(&format!("/products/{mug}"))
            .await
            .ok(StatusCode::OK)["stock"],
        3
    );
    let write = server
        .post(
            "/products",
            json!({ "name": "Cup", "slug": "cup", "sku": "CUP" }),
        )
        .await;
    assert_eq!(
        write.problem(StatusCode::INTERNAL_SERVER_ERROR, "storage-fault")["fault"],
        "read_only"
    );
    assert_eq!(write.header("retry-after"), None);
    not_ready(&server.get("/readyz").await);
    server.get("/livez").await.ok(StatusCode::OK);
    store.close().await;
}

/// A SQLite database that cannot grow (its page limit stands in for a full disk): a write is a
/// 500 `storage-fault` `full`, without `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sqlite_database_is_a_storage_fault() {
    let backend = Backend::sqlite().await;
    let path = backend.dir.as_ref().unwrap().join("service.db");
    backend.store.close().await;
    let pages = std::fs::metadata(&path).unwrap().len() / 4096;
    let options = stockroom::sqlite::SqliteOptions::file(&path)
        .with_pragma("max_page_count", (pages + 2).to_string());
    let store: Arc<dyn Store> = Arc::new(stockroom::traced(
        stockroom::sqlite::SqliteStore::connect_with(options)
            .await
            .unwrap(),
    ));
    let server = start(store.clone()).await;
    let mut faults = 0;
    for i in 0..200 {
        let description = "x".repeat(4_000);
        let reply = server
            .post(
                "/products",
                json!({ "name": "Big", "slug": format!("big-{i}"), "sku": format!("BIG-{i}"), "description": description }),
            )
            .await;
        if reply.status == StatusCode::CREATED {
            continue;
        }
        assert_eq!(
            reply.problem(StatusCode::INTERNAL_SERVER_ERROR, "storage-fault")["fault"],
            "full"
        );
        assert_eq!(reply.header("retry-after"), None);
        faults += 1;
        break;
    }
    assert_eq!(faults, 1, "the database filled up");
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Lock waits cannot starve everything

/// With the writer held (by a unit of work that does not end), a transfer answers a 503
/// `transient` at the write deadline instead of waiting the acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_writer_costs_a_transfer_its_deadline_only() {
    for backend in [Backend::memory().await, Backend::sqlite().await] {
        let server = start_limited(backend.store.clone(), short_limits()).await;
        let a = id_of(&server.product("a", "A", 5).await);
        let b = id_of(&server.product("b", "B", 0).await);
        let writer = backend.store.begin().await.unwrap();
        let reply = within(
            Duration::from_secs(5),
            "a transfer behind the held writer",
            server.transfer(
                json!({ "source_id": a, "target_id": b, "quantity": 1 }),
                None,
            ),
        )
        .await;
        reply.problem(StatusCode::SERVICE_UNAVAILABLE, "transient");
        writer.rollback().await.unwrap();
        server
            .transfer(
                json!({ "source_id": a, "target_id": b, "quantity": 1 }),
                None,
            )
            .await
            .ok(StatusCode::CREATED);
        backend.store.close().await;
    }
}

/// A request cut off by its timeout while its commit runs (here a commit that takes a minute)
/// is a 500 `ambiguous-commit` without `Retry-After`, not a 503 "retry": its work may be
/// stored. (One cut off before its commit began stays a 503 `timeout`: it rolled back, see
/// `slow_clients_and_slow_requests_are_cut_off`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_cut_off_while_its_commit_runs_is_an_ambiguous_commit() {
    let backend = Backend::memory().await;
    let faulty = FaultyStore::shared(backend.store.clone());
    faulty.delay(Fault::Commit, usize::MAX, Duration::from_secs(60));
    let server = start_limited(Arc::new(faulty), short_limits()).await;
    let reply = within(
        Duration::from_secs(10),
        "the request timeout",
        server.post(
            "/products",
            json!({ "name": "Slow", "slug": "slow", "sku": "SLOW" }),
        ),
    )
    .await;
    reply.problem(StatusCode::INTERNAL_SERVER_ERROR, "ambiguous-commit");
    assert_eq!(reply.header("retry-after"), None);
    backend.store.close().await;
}

/// A transfer whose write deadline is longer than the request's own time gets its deadline
/// shortened to end before the request is cut off, so that its answer is the transfer's own,
/// which knows whether a commit was in flight: behind a held writer, a 503 `transient`
/// (nothing applied); with a commit that takes a minute, a 500 `ambiguous-commit`, not the
/// request timeout's 503 "retry".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_answers_before_its_request_is_cut_off() {
    let backend = Backend::memory().await;
    let faulty = FaultyStore::shared(backend.store.clone());
    let limits = Limits {
        write_deadline: Duration::from_secs(30),
        ..short_limits()
    };
    let server = start_limited(Arc::new(faulty.clone()), limits).await;
    let a = id_of(&server.product("a", "A", 5).await);
    let b = id_of(&server.product("b", "B", 0).await);
    let body = json!({ "source_id": a, "target_id": b, "quantity": 1 });

    let writer = backend.store.begin().await.unwrap();
    let held = within(
        Duration::from_secs(10),
        "a transfer behind the held writer",
        server.transfer(body.clone(), None),
    )
    .await;
    held.problem(StatusCode::SERVICE_UNAVAILABLE, "transient");
    assert_eq!(held.header("retry-after"), Some("1"));
    writer.rollback().await.unwrap();

    faulty.delay(Fault::Commit, usize::MAX, Duration::from_secs(60));
    let slow = within(
        Duration::from_secs(10),
        "a transfer whose commit takes a minute",
        server.transfer(body, None),
    )
    .await;
    slow.problem(StatusCode::INTERNAL_SERVER_ERROR, "ambiguous-commit");
    assert_eq!(slow.header("retry-after"), None);
    backend.store.close().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Startup fails fast and readably

/// A setting that cannot be used is one line naming it.
#[test]
fn bad_settings_are_named() {
    let settings = |pairs: &'static [(&'static str, &'static str)]| {
        Settings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let defaults = settings(&[]).unwrap();
    assert_eq!(defaults.limits, Limits::default());
    assert_eq!(defaults.addr.to_string(), "127.0.0.1:3000");
    assert_eq!(defaults.store.url, "sqlite://stockroom-service.db");
    for (pairs, says) in [
        (
            &[("STOCKROOM_MAX_HTTP_CONNECTIONS", "many")][..],
            "invalid STOCKROOM_MAX_HTTP_CONNECTIONS: \"many\" is not a positive integer",
        ),
        (
            &[("STOCKROOM_REQUEST_TIMEOUT_MS", "0")][..],
            "invalid STOCKROOM_REQUEST_TIMEOUT_MS: \"0\" is not a positive integer",
        ),
        (
            &[("STOCKROOM_ADDR", "localhost")][..],
            "invalid STOCKROOM_ADDR: \"localhost\" is not an address such as 127.0.0.1:3000",
        ),
        (
            &[("STOCKROOM_MIN_CONNECTIONS", "x")][..],
            "STOCKROOM_MIN_CONNECTIONS",
        ),
    ] {
        let error = settings(pairs).unwrap_err().to_string();
        assert!(error.contains(says), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    let limits = settings(&[
        ("STOCKROOM_HEADER_READ_TIMEOUT_MS", "250"),
        ("STOCKROOM_MAX_IN_FLIGHT", "3"),
    ])
    .unwrap()
    .limits;
    assert_eq!(
        (limits.header_read_timeout, limits.max_in_flight),
        (Duration::from_millis(250), 3)
    );
}

/// The startup of `url`, which must fail within a few seconds with one line that says `cause`
/// (and no debug structure).
async fn startup_fails(url: &str, cause: &str) {
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.to_owned()),
        "STOCKROOM_CONNECT_TIMEOUT_MS" => Some("3000".to_owned()),
        _ => None,
    })
    .unwrap();
    let failed = within(
        Duration::from_secs(6),
        "a failing startup",
        startup::connect(&settings),
    )
    .await;
    let Err(error) = failed else {
        panic!("{url} connected");
    };
    let line = error.to_string();
    assert!(line.contains(cause), "{line}");
    assert!(!line.contains('\n') && !line.contains(" { "), "{line}");
}

/// An address taken by another listener is one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_fails_startup_readably() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = startup::listen(addr).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("cannot listen on {addr}: ")),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_open_fails_startup_readably() {
    startup_fails(
        "sqlite:///no/such/directory/service.db",
        "unable to open database file: /no/such/directory/service.db",
    )
    .await;
    startup_fails("oracle://localhost/shop", "invalid url").await;
}

/// PostgreSQL at a dead port, an unknown database, an unknown role: each fails startup at once
/// with its cause (the pool alone would retry the refused connection for its whole acquire
/// timeout and then say only that it timed out).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_cannot_be_reached_fails_startup_naming_why() {
    startup_fails(
        "postgres://postgres@127.0.0.1:1/postgres",
        "connection refused",
    )
    .await;
    let Some(server) = stockroom_postgres::testing::server().await else {
        return;
    };
    let unknown_db =
        stockroom_postgres::testing::with_database(server.url(), "stockroom_no_such_database");
    startup_fails(&unknown_db, "no such database").await;
    startup_fails(
        &with_user(server.url(), "stockroom_no_such_role"),
        "refused the login",
    )
    .await;
}

/// `url` with `user` as its user (and no password).
#[cfg(feature = "postgres")]
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a read-only database, a locked row

#[cfg(feature = "postgres")]
mod on_a_postgres_database {
    use super::*;
    use stockroom_postgres::sqlx::{self, Connection, PgConnection};
    use stockroom_postgres::testing::TestDatabase;

    /// Runs `case` with a store on a fresh database, its name and URL; drops the database after.
    async fn on_database<F, Fut>(case: F)
    where
        F: FnOnce(Arc<dyn Store>, String, String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let config = db.config().with_min_connections(4).with_max_connections(12);
        let store = stockroom::connect_with(config).await.unwrap();
        let (name, url) = (db.name().to_owned(), db.url().to_owned());
        db.drop_after(async move {
            case(store.clone(), name, url).await;
            store.close().await;
        })
        .await;
    }

    async fn execute(url: &str, sql: &str) {
        let mut conn = PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    /// The database turned read-only under the running service (what a standby, or a host
    /// guarding a full disk, does to new sessions) and its sessions ended: writes are a 500
    /// `storage-fault` without `Retry-After`, reads still work, readiness says not ready.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_read_only_database_is_a_storage_fault() {
        on_database(|store, name, _url| async move {
            let server = start(store.clone()).await;
            let mug = id_of(&server.product("mug", "MUG", 3).await);
            server.get("/readyz").await.ok(StatusCode::OK);

            let admin = stockroom_postgres::testing::server().await.unwrap().url().to_owned();
            execute(&admin, &format!("ALTER DATABASE {name} SET default_transaction_read_only = on")).await;
            execute(
                &admin,
                &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"),
            )
            .await;

            let write = server
                .post("/products", json!({ "name": "Cup", "slug": "cup", "sku": "CUP" }))
                .await;
            assert_eq!(
                write.problem(StatusCode::INTERNAL_SERVER_ERROR, "storage-fault")["fault"],
                "read_only"
            );
            assert_eq!(write.header("retry-after"), None);
            assert_eq!(server.get(&format!("/products/{mug}")).await.ok(StatusCode::OK)["stock"], 3);
            let ready = server.get("/readyz").await;
            let problem = ready.problem(StatusCode::SERVICE_UNAVAILABLE, "not-ready");
            assert_eq!(problem["fault"], "read_only");
        })
        .await;
    }

    /// A row held locked by another session: a transfer on it answers a 503 `transient` at
    /// the write deadline (not after ten lock timeouts), and a transfer on other rows goes
    /// through meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_locked_row_costs_only_the_requests_that_want_it() {
        on_database(|store, _name, url| async move {
            let server = Arc::new(start_limited(store.clone(), short_limits()).await);
            let a = id_of(&server.product("a", "A", 5).await);
            let b = id_of(&server.product("b", "B", 0).await);
            let c = id_of(&server.product("c", "C", 5).await);
            let d = id_of(&server.product("d", "D", 0).await);

            let mut holder = PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT id FROM products WHERE id = '{a}' FOR UPDATE"
            )))
            .execute(&mut holder)
            .await
            .unwrap();

            let stuck = {
                let server = server.clone();
                let body = json!({ "source_id": a, "target_id": b, "quantity": 1 });
                tokio::spawn(async move { server.transfer(body, None).await })
            };
            let free = within(
                Duration::from_secs(5),
                "a transfer on free rows",
                server.transfer(
                    json!({ "source_id": c, "target_id": d, "quantity": 2 }),
                    None,
                ),
            )
            .await;
            free.ok(StatusCode::CREATED);
            let stuck = within(
                Duration::from_secs(4),
                "the transfer on the locked row",
                stuck,
            )
            .await
            .unwrap();
            stuck.problem(StatusCode::SERVICE_UNAVAILABLE, "transient");
            assert_eq!(stuck.header("retry-after"), Some("1"));

            sqlx::raw_sql("ROLLBACK")
                .execute(&mut holder)
                .await
                .unwrap();
            holder.close().await.unwrap();
            let later = within(
                Duration::from_secs(10),
                "the transfer once the row is free",
                server.transfer(
                    json!({ "source_id": a, "target_id": b, "quantity": 1 }),
                    None,
                ),
            )
            .await;
            later.ok(StatusCode::CREATED);
        })
        .await;
    }
}

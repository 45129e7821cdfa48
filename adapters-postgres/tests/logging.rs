//! Statement logging (echo and slow statements) under the target `stockroom::sql`, never with a
//! password.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stockroom_core::{ProductFilter, Store, StoreConfig, StoreExt, TransferRequest};
use stockroom_postgres::PostgresStore;
use support::TestDatabase;

/// Held by each test while it captures: tracing caches, per call site, whether any subscriber
/// wants its events, and subscribers set and dropped on several threads at once can leave a
/// test's own subscriber without them.
static ONE_CAPTURE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs one count through a store built from `config` with a subscriber capturing
/// `stockroom::sql` at debug, on one thread so that the subscriber sees every event.
async fn capture(config: StoreConfig) -> String {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(&captured));
    let store = PostgresStore::connect(&config).await.unwrap();
    let mut read = store.read().await.unwrap();
    read.products()
        .count(&ProductFilter::default())
        .await
        .unwrap();
    drop(read);
    store.close().await;
    captured.text()
}

/// A subscriber writing `stockroom::sql` events at debug into `captured`.
fn subscriber(captured: &Captured) -> impl tracing::Subscriber + Send + Sync {
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("stockroom::sql=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish()
}

/// With a password in the URL (the test server trusts local connections and never asks).
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    match rest.split_once('@') {
        Some((user, host)) if !user.contains(':') => format!("{scheme}://{user}:hunter2@{host}"),
        Some(_) => url.to_owned(),
        None => format!("{scheme}://postgres:hunter2@{rest}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn echo_logs_every_statement_and_slow_ones_are_warned() {
    let _one = ONE_CAPTURE_AT_A_TIME.lock().await;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut base = db.config();
    base.url = with_password(db.url());

    let echo = capture(base.clone().with_log_statements(true)).await;
    assert!(echo.contains("SELECT count(*) FROM products"), "{echo}");
    assert!(
        echo.contains("DEBUG") && echo.contains("stockroom::sql"),
        "{echo}"
    );
    assert!(!echo.contains("hunter2"), "{echo}");

    let quiet = capture(base.clone()).await;
    assert!(!quiet.contains("SELECT count(*)"), "{quiet}");

    let mut slow = base.clone();
    slow.slow_statement_threshold = Duration::ZERO;
    let slow = capture(slow).await;
    assert!(
        slow.contains("WARN")
            && slow.contains("slow statement")
            && slow.contains("SELECT count(*)"),
        "{slow}"
    );
    assert!(!slow.contains("hunter2"), "{slow}");
    db.drop_now().await;
}

/// A transfer in a transaction of its own is one statement on the wire: no `BEGIN`, no
/// `COMMIT`, no separate lock, insert or updates (echo logs every statement sent).
#[tokio::test(flavor = "current_thread")]
async fn a_transfer_is_one_statement() {
    let _one = ONE_CAPTURE_AT_A_TIME.lock().await;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.config().with_log_statements(true))
        .await
        .unwrap();
    let [a, b] = support::seed_products(&store, [1, 2]).await;
    let captured = Captured::default();
    {
        let _guard = tracing::subscriber::set_default(subscriber(&captured));
        store
            .transfer(&TransferRequest::new(a.id, b.id, 1))
            .await
            .unwrap();
    }
    let statements: Vec<String> = captured
        .text()
        .lines()
        .filter(|l| l.contains("statement"))
        .map(str::to_owned)
        .collect();
    assert_eq!(statements.len(), 1, "{statements:#?}");
    assert!(statements[0].contains("INSERT INTO stock_movements"));
    store.close().await;
    db.drop_now().await;
}

//! Startup: connecting the store quickly or failing with one readable line that names the cause.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stockroom::Store;

use crate::settings::Settings;

/// Why the service could not start. Its `Display` is one line for an operator: what failed and
/// why, never a Rust debug structure.
#[derive(Debug)]
pub enum StartupError {
    /// A variable of the service's own cannot be used.
    Setting { name: &'static str, problem: String },
    /// A variable of the store's configuration cannot be used.
    StoreSetting(stockroom::Error),
    /// The store refused to connect, or its backend could not be reached.
    Connect {
        url: String,
        error: stockroom::Error,
    },
    /// The store did not connect within `STOCKROOM_CONNECT_TIMEOUT_MS`.
    ConnectTimeout { url: String, timeout: Duration },
    /// The address cannot be listened on.
    Listen { addr: SocketAddr, error: io::Error },
    /// The relay's broker (NATS) cannot be reached, or its stream cannot be made or used.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Broker { url: String, problem: String },
    /// The relay refused its options.
    Relay(stockroom::relay::Error),
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Setting { name, problem } => write!(f, "invalid {name}: {problem}"),
            StartupError::StoreSetting(error) => write!(f, "{error}"),
            StartupError::Connect { url, error } => write!(f, "cannot connect to {url}: {error}"),
            StartupError::ConnectTimeout { url, timeout } => write!(
                f,
                "cannot connect to {url}: no answer within {} ms (STOCKROOM_CONNECT_TIMEOUT_MS)",
                timeout.as_millis()
            ),
            StartupError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            StartupError::Broker { url, problem } => {
                write!(f, "cannot use NATS at {url}: {problem}")
            }
            StartupError::Relay(error) => write!(f, "cannot start the outbox relay: {error}"),
        }
    }
}

impl std::error::Error for StartupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartupError::StoreSetting(error) | StartupError::Connect { error, .. } => Some(error),
            StartupError::Listen { error, .. } => Some(error),
            StartupError::Relay(error) => Some(error),
            _ => None,
        }
    }
}

/// Listens on `addr`.
pub async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| StartupError::Listen { addr, error })
}

/// Connects the store of `settings` (migrating it), within `settings.connect_timeout`.
///
/// A PostgreSQL server is first asked once, directly, whether it can be reached: a pool retries a
/// refused connection until its acquire timeout and then says only that it timed out, where an
/// operator needs "connection refused", "no such database" or "login refused" at once.
pub async fn connect(settings: &Settings) -> Result<Arc<dyn Store>, StartupError> {
    let url = settings.store.redacted_url();
    let timeout = settings.connect_timeout;
    let connecting = async {
        #[cfg(feature = "postgres")]
        if matches!(
            settings.store.scheme().as_deref(),
            Some("postgres" | "postgresql")
        ) {
            probe_postgres(&settings.store, timeout).await?;
        }
        stockroom::connect_with(settings.store.clone()).await
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(error)) => Err(StartupError::Connect { url, error }),
        Err(_) => Err(StartupError::ConnectTimeout { url, timeout }),
    }
}

/// One connection to the PostgreSQL server of `config`, made by the readiness check of a store
/// on an empty pool (so its failure is mapped, and named, by the adapter), before the real
/// store's pool opens. A server that answers but cannot take writes (a standby) is not a reason
/// to stay down: `/readyz` says so until it can.
#[cfg(feature = "postgres")]
async fn probe_postgres(
    config: &stockroom::StoreConfig,
    timeout: Duration,
) -> stockroom::Result<()> {
    use stockroom::postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use stockroom::postgres::{PostgresOptions, PostgresStore};

    // The parse error may quote the URL, password included: it is not passed on.
    let options: PgConnectOptions = config.url.parse().map_err(|_| {
        stockroom::Error::validation(
            "url",
            stockroom::Rule::Malformed {
                expected: "a postgres:// or postgresql:// URL",
            },
        )
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect_lazy_with(options.application_name(&config.application_name));
    let probe = PostgresStore::from_pool(
        pool.clone(),
        PostgresOptions::from_config(config).with_run_migrations(false),
    )
    .await?;
    let ready = probe.readiness().await;
    pool.close().await;
    match ready {
        Err(error) if !error.is_permanent() => Err(error),
        _ => Ok(()),
    }
}

//! Stockroom behind a JSON HTTP API (axum), with a unit of work per request.
//!
//! ```text
//! cargo run --example service                              # SQLite file ./stockroom-service.db
//! DATABASE_URL=memory:// cargo run --example service       # or postgres://…, sqlite://other.db
//! STOCKROOM_ADDR=0.0.0.0:8080 cargo run --example service  # listen elsewhere
//! RUST_LOG=stockroom=debug,info cargo run --example service
//! ```
//!
//! The other `STOCKROOM_*` variables of `StoreConfig::from_env` (pool size, timeouts, …) apply
//! too. Ctrl-C or SIGTERM stops accepting connections, lets the requests in flight finish, then
//! closes the store. See `app.rs` for the routes and how a request's unit of work is handled.

mod app;

use std::net::SocketAddr;

use stockroom::StoreConfig;
use tracing_subscriber::EnvFilter;

/// The database when `DATABASE_URL` is not set: a SQLite file in the working directory.
const DEFAULT_DATABASE_URL: &str = "sqlite://stockroom-service.db";
const DEFAULT_ADDR: &str = "127.0.0.1:3000";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = StoreConfig::from_lookup(|name| {
        std::env::var(name)
            .ok()
            .or_else(|| (name == "DATABASE_URL").then(|| DEFAULT_DATABASE_URL.to_owned()))
    })?;
    let addr: SocketAddr = std::env::var("STOCKROOM_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
        .parse()
        .map_err(|e| format!("STOCKROOM_ADDR: {e}"))?;

    let store = stockroom::connect_with(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        backend = store.backend(),
        url = %config.redacted_url(),
        addr = %listener.local_addr()?,
        "stockroom service listening"
    );

    let router = app::router(app::AppState {
        store: store.clone(),
    });
    // Returns once every request in flight has finished and the store is closed.
    app::run(listener, router, store, shutdown_signal()).await?;
    tracing::info!("store closed, bye");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

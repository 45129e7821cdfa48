//! Stockroom behind a JSON HTTP API (axum), with a unit of work per request.
//!
//! ```text
//! cargo run --example service --features axum,metrics                        # SQLite file ./stockroom-service.db
//! DATABASE_URL=memory:// cargo run --example service --features axum,metrics     # or sqlite://other.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example service --features axum,metrics,postgres
//! STOCKROOM_ADDR=0.0.0.0:8080 cargo run --example service --features axum,metrics  # listen elsewhere
//! RUST_LOG=stockroom=debug,info cargo run --example service --features axum,metrics
//! ```
//!
//! The other `STOCKROOM_*` variables of `StoreConfig::from_env` (pool size, timeouts, …) apply
//! too, and so do the service's limits and timeouts (`settings.rs`). Ctrl-C or SIGTERM stops
//! accepting connections, lets the requests in flight finish within the shutdown grace period,
//! drops what is left, then closes the store. A store that cannot be connected stops the
//! service at once, non-zero, with one line that says why. See `app.rs` for the routes and how a
//! request's unit of work is handled.

mod app;
mod body;
mod server;
mod settings;
mod startup;

use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

use crate::settings::Settings;
use crate::startup::StartupError;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stockroom service: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Connects the store, serves until a shutdown signal, drains, closes the store.
async fn serve() -> Result<(), StartupError> {
    let settings = Settings::from_env()?;
    tracing::info!(url = %settings.store.redacted_url(), "connecting the store");
    let store = startup::connect(&settings).await?;
    let listener = match startup::listen(settings.addr).await {
        Ok(listener) => listener,
        Err(error) => {
            store.close().await;
            return Err(error);
        }
    };
    tracing::info!(
        backend = store.backend().as_str(),
        addr = %listener.local_addr().unwrap_or(settings.addr),
        "stockroom service listening"
    );
    let state = app::AppState::new(store.clone(), settings.limits.clone());
    let state = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            stockroom::metrics::describe();
            state.with_metrics(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "no metrics recorder: /metrics answers 404");
            state
        }
    };
    let router = app::router(state);
    app::run(listener, router, store, &settings.limits, shutdown_signal()).await;
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

//! Stockroom behind a JSON HTTP API (axum), with a unit of work per request, publishing its
//! writes through the transactional outbox.
//!
//! ```text
//! cargo run --example service --features axum,metrics,relay                  # SQLite file ./stockroom-service.db
//! DATABASE_URL=memory:// cargo run --example service --features axum,metrics,relay     # or sqlite://other.db
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example service --features axum,metrics,relay,postgres
//! STOCKROOM_NATS_URL=127.0.0.1:4222 cargo run --example service --features axum,metrics,nats  # events to JetStream
//! STOCKROOM_ADDR=0.0.0.0:8080 cargo run --example service --features axum,metrics,relay  # listen elsewhere
//! RUST_LOG=stockroom=debug,info cargo run --example service --features axum,metrics,relay
//! ```
//!
//! The other `STOCKROOM_*` variables of `StoreConfig::from_env` (pool size, timeouts, …) apply
//! too, and so do the service's limits, timeouts and event settings (`settings.rs`).
//!
//! Stockroom writes its own events for product writes and transfers (`stockroom.product.*`,
//! `stockroom.stock.moved`; `STOCKROOM_OWN_EVENTS=false` turns them off), and a relay delivers
//! them once committed: to NATS JetStream when `STOCKROOM_NATS_URL` is set (the stream
//! `STOCKROOM` on `stockroom.>`, made at startup if missing; `examples/consumer.rs` prints what
//! arrives), else to an in-process channel whose events the service logs at info (subject,
//! aggregate, id). `GET /outbox` answers the backlog. See `events.rs`.
//!
//! Ctrl-C or SIGTERM stops accepting connections, lets the requests in flight finish within the
//! shutdown grace period, drops what is left, stops the relay, then closes the store. A store
//! (or a NATS server) that cannot be connected stops the service at once, non-zero, with one
//! line that says why. See `app.rs` for the routes and how a request's unit of work is handled.

mod app;
mod body;
mod events;
mod server;
mod settings;
mod startup;

use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

use crate::events::Outbox;
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

/// Connects the store, starts the relay, serves until a shutdown signal, drains, stops the
/// relay, closes the store.
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
    // Before the relay starts, so that its first backlog gauges are recorded.
    let metrics = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            stockroom::metrics::describe();
            stockroom::relay::metrics::describe();
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "no metrics recorder: /metrics answers 404");
            None
        }
    };
    let outbox =
        match Outbox::start(store.clone(), &settings.outbox, settings.connect_timeout).await {
            Ok(outbox) => outbox,
            Err(error) => {
                store.close().await;
                return Err(error);
            }
        };
    tracing::info!(
        backend = store.backend().as_str(),
        own_events = settings.store.own_events,
        addr = %listener.local_addr().unwrap_or(settings.addr),
        "stockroom service listening"
    );
    let mut state =
        app::AppState::new(store.clone(), settings.limits.clone()).with_outbox(outbox.deliveries());
    if let Some(handle) = metrics {
        state = state.with_metrics(handle);
    }
    let router = app::router(state);
    app::run(
        listener,
        router,
        store,
        Some(outbox),
        &settings.limits,
        shutdown_signal(),
    )
    .await;
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

//! Serving the router over HTTP/1.1 with bounds that a slow or idle client cannot outwait.
//!
//! `axum::serve` has no header timeout (hyper needs a timer for one), no connection limit and no
//! shutdown deadline: a client that sends half its headers keeps a connection, and a shutdown
//! waits for it forever. Here:
//!
//! - at most `max_connections` connections are open; the listener accepts no more until one
//!   closes (the rest wait in the kernel's backlog);
//! - a connection must deliver a request's headers within `header_read_timeout`, which also
//!   bounds how long an idle keep-alive connection waits for its next request;
//! - on shutdown the listener closes, every connection finishes the request it is serving and
//!   closes, and after `shutdown_grace` the connections still open are dropped (their handlers
//!   with them, so their units of work roll back).
//!
//! The request and body timeouts and the in-flight limit are the router's (see `app.rs`).
//! HTTP/2 is not offered: the service sits behind a proxy that speaks HTTP/1.1 to it, and an
//! HTTP/2 connection would need bounds of its own.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::settings::Limits;

/// Where a shutdown stands, as every connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Finish the request in flight, then close.
    Draining,
    /// Close now.
    Dropping,
}

/// How long dropped connections get to let go of their slots once told to.
const DROP_WAIT: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then drains the
/// connections as the [module docs](self) say. Returns once no connection is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (phase, watch_phase) = watch::channel(Phase::Serving);
    let http = http1_builder(limits);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        if let Some((stream, slot)) = accepted {
            let connection = serve_connection(
                stream,
                router.clone(),
                http.clone(),
                watch_phase.clone(),
                slot,
            );
            tokio::spawn(connection);
        }
    }
    // From here on the kernel refuses new connections.
    drop(listener);
    drain(&slots, &phase, limits).await;
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    http
}

/// The next connection, once a connection slot is free. `None` after an accept error (a
/// connection that went away before it was accepted, or a lack of file descriptors, after which
/// accepting pauses a second as hyper did).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    // The semaphore is never closed.
    let slot = Arc::clone(slots).acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _peer)) => Some((stream, slot)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionRefused
            ) =>
        {
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "accept failed; pausing for a second");
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

/// Serves one connection until it closes, the shutdown drains it, or the deadline drops it. The
/// connection's slot is free again when this returns.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    http: http1::Builder,
    mut phase: watch::Receiver<Phase>,
    _slot: OwnedSemaphorePermit,
) {
    // Small JSON answers: no point waiting to coalesce them.
    let _ = stream.set_nodelay(true);
    let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let mut connection = pin!(connection);
    // A closed channel (the server is gone) counts as every phase reached.
    tokio::select! {
        result = connection.as_mut() => return finished(result),
        _ = phase.wait_for(|p| *p >= Phase::Draining) => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        result = connection.as_mut() => finished(result),
        _ = phase.wait_for(|p| *p == Phase::Dropping) => {
            tracing::warn!("connection dropped at the shutdown deadline");
        }
    }
}

fn finished(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts and clients that went away: routine, not the service's failure.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Tells every connection to finish, waits up to the grace period for all their slots to come
/// back, then tells the rest to drop.
async fn drain(slots: &Semaphore, phase: &watch::Sender<Phase>, limits: &Limits) {
    let all = limits.max_connections;
    phase.send_replace(Phase::Draining);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_ok()
    {
        return;
    }
    let open = all as usize - slots.available_permits();
    tracing::warn!(
        open,
        grace_ms = limits.shutdown_grace.as_millis(),
        "shutdown grace period over: dropping the connections still open"
    );
    phase.send_replace(Phase::Dropping);
    let _ = tokio::time::timeout(DROP_WAIT, slots.acquire_many(all)).await;
}

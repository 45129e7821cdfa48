//! The store itself: health, concurrent read sessions, close.

use std::sync::Arc;

use stockroom_core::{Error, ProductFilter, Store};

use crate::support::*;

fn is_unavailable<T>(result: &stockroom_core::Result<T>) -> bool {
    matches!(result, Err(Error::Unavailable { .. }))
}

/// An open store is healthy and names a known backend.
pub async fn open_store_is_healthy(store: Arc<dyn Store>) {
    store.health().await.expect("health");
    let backend = store.backend();
    assert!(
        ["memory", "sqlite", "postgres"].contains(&backend),
        "backend {backend:?}"
    );
}

/// After `close`, `begin`, `read` and `health` all fail with `Unavailable`.
pub async fn closed_store_is_unavailable(store: Arc<dyn Store>) {
    create_product(&store, new_product("a", 1)).await;
    store.close().await;
    let begin = store.begin().await;
    let read = store.read().await;
    let health = store.health().await;
    let got = (
        is_unavailable(&begin),
        is_unavailable(&read),
        is_unavailable(&health),
    );
    assert_eq!(
        got,
        (true, true, true),
        "(begin, read, health) after close; health was {health:?}"
    );
}

/// Many read sessions can be open at once, each answering on its own.
pub async fn read_sessions_run_concurrently(store: Arc<dyn Store>) {
    create_products(&store, "p", 3, 1).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut r = store.read().await.expect("read");
                r.products()
                    .count(&ProductFilter::default())
                    .await
                    .expect("count")
            })
        })
        .collect();
    // Three sessions held by one task at once (what `product_details` does), released before
    // waiting for the tasks so that a small pool cannot starve them.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            store
                .read()
                .await
                .expect("several sessions held by one task"),
        );
    }
    for s in &mut sessions {
        let n = s.products().count(&ProductFilter::default()).await.unwrap();
        assert_eq!(n, 3, "count in a held session");
    }
    drop(sessions);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 3, "count in a concurrent session");
    }
}

/// Waiting for a unit of work is bounded the same way on every backend: once every connection
/// (on a single-writer backend, the writer slot) is held by an open unit of work, `begin` waits
/// for the store's `acquire_timeout` and then fails with `Unavailable`; as soon as one unit of
/// work ends, `begin` succeeds again. (The fixtures use an acquire timeout of a few seconds.)
pub async fn begin_gives_up_after_the_acquire_timeout_as_unavailable(store: Arc<dyn Store>) {
    const MAX_HELD: usize = 64;
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() < MAX_HELD,
            "{MAX_HELD} units of work open at once and no wait"
        );
        match store.begin().await {
            Ok(uow) => held.push(uow),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(refused, Error::Unavailable { .. }),
        "begin with {} units of work open: expected Unavailable, got {refused:?}",
        held.len()
    );
    drop(held.pop());
    let again = store.begin().await;
    assert!(
        again.is_ok(),
        "begin after one unit of work ended: {:?}",
        again.err()
    );
}

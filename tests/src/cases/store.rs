//! The store itself: health, concurrent read sessions, close.

use std::sync::Arc;

use stockroom_core::{Error, ProductFilter, Store};

use crate::support::*;

fn is_unavailable<T>(result: &stockroom_core::Result<T>) -> bool {
    matches!(result, Err(Error::Unavailable { .. }))
}

/// An open store is healthy and names its backend, as its units of work do; the name parses
/// back to the same backend.
pub async fn open_store_is_healthy(store: Arc<dyn Store>) {
    store.health().await.expect("health");
    let backend = store.backend();
    let uow = store.begin().await.expect("begin");
    assert_eq!(
        uow.backend(),
        backend,
        "the unit of work's backend and the store's"
    );
    uow.rollback().await.expect("rollback");
    assert_eq!(
        backend.as_str().parse::<stockroom_core::Backend>(),
        Ok(backend),
        "{backend} parsed back"
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

/// `close` also ends the sessions in flight: each later call of a read session, and each later
/// write and the commit of a unit of work, fails with `Unavailable`; what the unit of work wrote
/// is not committed.
pub async fn sessions_in_flight_fail_after_close(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    let mut read = store.read().await.expect("read");
    let mut uow = store.begin().await.expect("begin");
    uow.products()
        .create(new_product("b", 1))
        .await
        .expect("write before close");
    store.close().await;
    expect_unavailable(read.products().get(p.id).await);
    expect_unavailable(read.products().count(&ProductFilter::default()).await);
    expect_unavailable(uow.products().create(new_product("c", 1)).await);
    expect_unavailable(uow.products().get(p.id).await);
    expect_unavailable(uow.commit().await);
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_store_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) store:
        open_store_is_healthy,
        closed_store_is_unavailable,
        read_sessions_run_concurrently,
        begin_gives_up_after_the_acquire_timeout_as_unavailable,
        sessions_in_flight_fail_after_close,
    } };
}

//! Faults injected into a running store: its server sessions are killed while transfers run.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Row};
use stockroom_core::{Error, NewProduct, ProductFilter, Store, StoreExt, TransferRequest};
use stockroom_postgres::PostgresStore;
use support::TestDatabase;

const TASKS: usize = 16;
const PRODUCTS: usize = 8;
const INITIAL_STOCK: i64 = 1_000;
const KILLS: usize = 6;

#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    /// Failed transfers and their idempotency keys.
    failed: Vec<(String, Error)>,
}

/// While 16 tasks run transfers, another task terminates every server session of the store
/// (`pg_terminate_backend` on its application name) six times. Every transfer either applied
/// fully or returned a typed error (connection loss as `Unavailable`), the total stock is
/// unchanged, every product's stock equals its initial stock plus its ledger movements, the
/// ledger holds one row per applied transfer, and the same store then serves requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_survive_sessions_killed_under_them() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db
        .config()
        .with_min_connections(4)
        .with_max_connections(8)
        .with_acquire_timeout(Duration::from_secs(10));
    assert!(
        config.test_before_acquire,
        "the pool pings before handing out a connection"
    );
    let store = Arc::new(PostgresStore::connect(&config).await.unwrap());

    let mut uow = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..PRODUCTS {
        let new = NewProduct::new(
            &format!("Item {i}"),
            &format!("item-{i}"),
            &format!("IT-{i}"),
        )
        .unwrap()
        .with_stock(INITIAL_STOCK)
        .unwrap();
        ids.push(uow.products().create(new).await.unwrap().id);
    }
    uow.commit().await.unwrap();
    let ids = Arc::new(ids);

    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let name = config.application_name.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut admin = support::admin().await;
            let mut terminated = 0usize;
            for _ in 0..KILLS {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let rows = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .fetch_all(&mut admin)
                .await
                .unwrap();
                terminated += rows.iter().filter(|r| r.get::<bool, _>(0)).count();
            }
            stop.store(true, Ordering::SeqCst);
            let _ = admin.close().await;
            terminated
        })
    };

    let mut workers = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let ids = Arc::clone(&ids);
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut n = 0usize;
            // Run until the killer is done (and at least 20 transfers), at most 2,000.
            while (n < 20 || !stop.load(Ordering::SeqCst)) && n < 2_000 {
                let from = (task + n) % PRODUCTS;
                let to = (task * 3 + n * 7 + 1) % PRODUCTS;
                let to = if to == from { (to + 1) % PRODUCTS } else { to };
                let key = format!("t{task}-{n}");
                let request = TransferRequest::new(ids[from], ids[to], (n % 5 + 1) as i64)
                    .with_idempotency_key(key.clone());
                match store.transfer(&request).await {
                    Ok(_) => outcomes.ok += 1,
                    Err(e) => outcomes.failed.push((key, e)),
                }
                n += 1;
            }
            outcomes
        }));
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    for w in workers {
        let o = w.await.unwrap();
        ok += o.ok;
        failed.extend(o.failed);
    }
    let terminated = killer.await.unwrap();

    // Every error is one of the typed outcomes a killed connection can cause.
    for (key, e) in &failed {
        assert!(
            matches!(e, Error::Unavailable { .. } | Error::Transient { .. }),
            "transfer {key} failed with an unexpected error: {e:?}"
        );
    }
    assert!(terminated > 0, "the killer terminated no session");

    // The same store serves again: health, reads and new transfers.
    store.health().await.expect("health after the faults");
    let mut read = store.read().await.unwrap();
    // A failed transfer applied only if its COMMIT reached the server and the answer was lost:
    // then its idempotency key is in the ledger, and only a lost connection can cause that.
    let mut applied_despite_error = 0;
    for (key, e) in &failed {
        if read
            .movements()
            .by_idempotency_key(key)
            .await
            .unwrap()
            .is_some()
        {
            assert!(
                matches!(e, Error::Unavailable { .. }),
                "{key} applied but failed with {e:?}"
            );
            applied_despite_error += 1;
        }
    }
    let ledger = read.movements().count().await.unwrap() as usize;
    assert_eq!(
        ledger,
        ok + applied_despite_error,
        "one ledger row per applied transfer"
    );
    let products = read.products().get_many(&ids).await.unwrap();
    let total: i64 = products.iter().map(|p| p.stock).sum();
    assert_eq!(
        total,
        INITIAL_STOCK * PRODUCTS as i64,
        "total stock unchanged"
    );
    drop(read);

    // Each product's stock is its initial stock plus what the ledger moved in and out.
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut moved: HashMap<uuid::Uuid, i64> = HashMap::new();
    for row in sqlx::query("SELECT source_id, target_id, quantity FROM stock_movements")
        .fetch_all(&mut conn)
        .await
        .unwrap()
    {
        *moved.entry(row.get(0)).or_default() -= row.get::<i64, _>(2);
        *moved.entry(row.get(1)).or_default() += row.get::<i64, _>(2);
    }
    let _ = conn.close().await;
    for p in &products {
        let expected = INITIAL_STOCK + moved.get(&p.id.as_uuid()).copied().unwrap_or(0);
        assert_eq!(
            p.stock, expected,
            "stock of {} disagrees with the ledger",
            p.id
        );
        assert!(p.stock >= 0);
    }

    for i in 0..20 {
        let request = TransferRequest::new(ids[i % PRODUCTS], ids[(i + 1) % PRODUCTS], 1);
        store
            .transfer(&request)
            .await
            .expect("a transfer after the faults");
    }
    let mut read = store.read().await.unwrap();
    assert_eq!(
        read.movements().count().await.unwrap() as usize,
        ledger + 20
    );
    assert_eq!(
        read.products()
            .count(&ProductFilter::default())
            .await
            .unwrap(),
        PRODUCTS as u64
    );
    drop(read);

    let unavailable = failed
        .iter()
        .filter(|(_, e)| matches!(e, Error::Unavailable { .. }))
        .count();
    println!(
        "fault test: {ok} transfers applied, {} failed ({unavailable} unavailable, {} transient), \
         {applied_despite_error} applied despite an error, {terminated} sessions terminated in \
         {KILLS} rounds",
        failed.len(),
        failed.len() - unavailable,
    );
    store.close().await;
    db.drop_now().await;
}

/// Terminates every server session named `name` and waits until they are gone.
async fn terminate_all(name: &str) {
    let mut admin = support::admin().await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&mut admin)
    .await
    .unwrap();
    for _ in 0..500 {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = admin.close().await;
}

/// Idle pooled connections whose server sessions were terminated: with `test_before_acquire`
/// the store notices (a unit of work's BEGIN, a read session's ping) and takes a fresh
/// connection, so the caller sees no error; without it, the first caller gets `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_before_acquire_replaces_connections_the_server_closed() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    for test_before_acquire in [true, false] {
        let mut config = db.config().with_min_connections(2).with_max_connections(2);
        config.test_before_acquire = test_before_acquire;
        let store = PostgresStore::connect(&config).await.unwrap();
        // Two idle connections in the pool.
        let (a, b) = (store.read().await.unwrap(), store.read().await.unwrap());
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        terminate_all(&config.application_name).await;
        let begun = store.begin().await;
        if test_before_acquire {
            let mut uow = begun.expect("begin after the kill, with test_before_acquire");
            uow.products()
                .create(NewProduct::new("Kept", "kept", "KEPT").unwrap())
                .await
                .unwrap();
            uow.commit().await.unwrap();
            terminate_all(&config.application_name).await;
            let mut read = store
                .read()
                .await
                .expect("read after the kill, with test_before_acquire");
            assert_eq!(
                read.products()
                    .count(&ProductFilter::default())
                    .await
                    .unwrap(),
                1
            );
        } else {
            assert!(
                matches!(begun.err(), Some(Error::Unavailable { .. })),
                "without test_before_acquire the dead connection is handed out"
            );
            // Each dead connection is dropped when it fails; once the second idle one has
            // failed too, the store serves again on its own.
            let mut healthy = false;
            for _ in 0..3 {
                healthy = store.health().await.is_ok();
                if healthy {
                    break;
                }
            }
            assert!(
                healthy,
                "the store recovers without test_before_acquire after the dead connections"
            );
        }
        store.close().await;
    }
    db.drop_now().await;
}

/// A transfer's single statement is the check of its connection: on connections whose server
/// sessions were terminated it is sent again on a fresh one (with `test_before_acquire`) and
/// applies once; the ledger row's id, sent again with it, keeps a statement that committed
/// before its connection died from applying twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_on_a_connection_the_server_closed_is_sent_again_and_applies_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_min_connections(3).with_max_connections(3);
    assert!(config.test_before_acquire);
    let store = PostgresStore::connect(&config).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..2 {
        let new = NewProduct::new(
            &format!("Item {i}"),
            &format!("item-{i}"),
            &format!("IT-{i}"),
        )
        .unwrap()
        .with_stock(10)
        .unwrap();
        ids.push(uow.products().create(new).await.unwrap().id);
    }
    uow.commit().await.unwrap();
    // Every connection of the pool opened and given back, then killed on the server.
    let sessions = futures_util::future::join_all((0..3).map(|_| store.read())).await;
    drop(sessions);
    tokio::time::sleep(Duration::from_millis(100)).await;
    terminate_all(&config.application_name).await;
    let moved = store
        .transfer(&TransferRequest::new(ids[0], ids[1], 4))
        .await
        .expect("a transfer after the kill, with test_before_acquire");
    let mut read = store.read().await.unwrap();
    let stocks: Vec<i64> = read
        .products()
        .get_many(&ids)
        .await
        .unwrap()
        .iter()
        .map(|p| p.stock)
        .collect();
    assert_eq!(stocks, vec![6, 14]);
    assert_eq!(read.movements().count().await.unwrap(), 1);
    assert_eq!(read.movements().get(moved.id).await.unwrap(), Some(moved));
    drop(read);
    store.close().await;
    db.drop_now().await;
}

/// Waits until the server has no session named `name` left (only those in a transaction,
/// with `in_transaction`), at most ten seconds.
async fn until_no_session_of(name: &str, in_transaction: bool) {
    let mut admin = support::admin().await;
    for _ in 0..1_000 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND (NOT $2 OR state LIKE 'idle in transaction%')",
        )
        .bind(name)
        .bind(in_transaction)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if left == 0 {
            let _ = admin.close().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("sessions named {name} still open after ten seconds");
}

/// Sessions the server ended because they sat idle (`idle_session_timeout`: FATAL, SQLSTATE
/// 57P05) are dead connections like any other: with `test_before_acquire` each read that finds
/// one is sent again on a fresh connection, so two reads in a row succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_the_server_ended_as_idle_are_replaced() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_min_connections(2).with_max_connections(2);
    assert!(config.test_before_acquire);
    let options = stockroom_postgres::PostgresOptions::from_config(&config).with_session_settings(
        vec![("idle_session_timeout".to_owned(), "200ms".to_owned())],
    );
    let store = PostgresStore::connect_with(&config, options).await.unwrap();
    // Both connections used, then left idle until the server ends their sessions.
    let (mut a, mut b) = (store.read().await.unwrap(), store.read().await.unwrap());
    let filter = ProductFilter::default();
    let (mut pa, mut pb) = (a.products(), b.products());
    let (x, y) = tokio::join!(pa.count(&filter), pb.count(&filter));
    assert_eq!((x.unwrap(), y.unwrap()), (0, 0));
    drop((a, b));
    until_no_session_of(&config.application_name, false).await;
    for attempt in 1..=2 {
        let mut read = store.read().await.unwrap();
        let counted = read.products().count(&filter).await;
        assert!(
            matches!(counted, Ok(0)),
            "read {attempt} after the idle sessions ended: {counted:?}"
        );
    }
    store.close().await;
    db.drop_now().await;
}

/// A unit of work whose session the server ended for sitting idle in its transaction
/// (`idle_in_transaction_session_timeout`: FATAL, SQLSTATE 25P03) fails as `Unavailable`, a
/// dead connection, not as a backend error, at its next statement or at its commit (which the
/// server never ran: not `AmbiguousCommit`); nothing it wrote is kept, and the store serves the
/// next unit of work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_ended_as_idle_in_transaction_is_unavailable() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config = db.config().with_min_connections(1).with_max_connections(2);
    let options =
        stockroom_postgres::PostgresOptions::from_config(&config).with_session_settings(vec![(
            "idle_in_transaction_session_timeout".to_owned(),
            "200ms".to_owned(),
        )]);
    let store = PostgresStore::connect_with(&config, options).await.unwrap();
    let mut uow = store.begin().await.unwrap();
    uow.products()
        .create(NewProduct::new("Lost", "lost", "LOST").unwrap())
        .await
        .unwrap();
    until_no_session_of(&config.application_name, true).await;
    let next = uow.products().count(&ProductFilter::default()).await;
    assert!(
        matches!(next, Err(Error::Unavailable { .. })),
        "a statement on the ended session: {next:?}"
    );
    drop(uow);
    let mut uow = store.begin().await.unwrap();
    uow.products()
        .create(NewProduct::new("Lost too", "lost-too", "LOST-2").unwrap())
        .await
        .unwrap();
    until_no_session_of(&config.application_name, true).await;
    let committed = uow.commit().await;
    assert!(
        matches!(committed, Err(Error::Unavailable { .. })),
        "a commit on the ended session: {committed:?}"
    );
    let mut uow = store.begin().await.unwrap();
    let counted = uow.products().count(&ProductFilter::default()).await;
    assert!(matches!(counted, Ok(0)), "{counted:?}");
    uow.rollback().await.unwrap();
    store.close().await;
    db.drop_now().await;
}

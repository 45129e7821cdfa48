//! Stockroom's metrics (feature `metrics`), recorded with a test recorder on the store an
//! application gets from `stockroom::connect`: the memory store inside the tracing decorator.
//! A test binary of its own: the recorder is the process's.

use std::sync::Arc;

use stockroom_conformance::metrics::{MetricKind, Recorded};
use stockroom_core::metrics::{OPERATION_DURATION, RETRIES, RETRY_OUTCOMES, TRANSFERS};
use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::{
    traced, Error, NewProduct, RetryPolicy, Store, StoreConfig, StoreExt, TransferRequest,
};
use stockroom_memory::MemoryStore;

#[tokio::test]
async fn every_metric_is_recorded_with_its_attributes() {
    let seen = Recorded::install();

    let memory = MemoryStore::connect(&StoreConfig::new("memory://")).unwrap();
    let faulty = FaultyStore::new(memory);
    let store: Arc<dyn Store> = Arc::new(traced(faulty.clone()));

    // Operations: each is timed, with its backend, name, table and outcome (a product's
    // `create` is the record port's `insert`).
    let mut uow = store.begin().await.unwrap();
    let mug = NewProduct::new("Mug", "mug", "MUG")
        .unwrap()
        .with_stock(5)
        .unwrap();
    let mug = uow.products().create(mug).await.unwrap();
    let cup = uow
        .products()
        .create(NewProduct::new("Cup", "cup", "CUP").unwrap())
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let created = [
        ("db.system.name", "memory"),
        ("db.operation.name", "insert"),
        ("db.collection.name", "products"),
        ("outcome", "ok"),
    ];
    let n = seen.value(MetricKind::Histogram, OPERATION_DURATION, &created);
    assert_eq!(n, 2.0, "timed inserts {created:?}");
    let committed = [("db.operation.name", "commit"), ("outcome", "ok")];
    let n = seen.value(MetricKind::Histogram, OPERATION_DURATION, &committed);
    assert_eq!(n, 1.0, "timed commits");
    let mut read = store.read().await.unwrap();
    let missing = read.products().get(stockroom_core::ProductId::new()).await;
    assert!(matches!(missing, Ok(None)));
    let got = [
        ("db.operation.name", "get"),
        ("db.collection.name", "products"),
    ];
    let n = seen.value(MetricKind::Histogram, OPERATION_DURATION, &got);
    assert_eq!(n, 1.0, "timed gets");
    drop(read);

    // Transfers: applied, replayed, refused.
    let order = TransferRequest::new(mug.id, cup.id, 2).with_idempotency_key("order-1");
    let first = store.transfer(&order).await.unwrap();
    let again = store.transfer(&order).await.unwrap();
    assert_eq!(first.id, again.id, "the key replays the first movement");
    let too_many = TransferRequest::new(mug.id, cup.id, 99);
    let refused = store.transfer(&too_many).await;
    assert!(
        matches!(refused, Err(Error::InsufficientStock { .. })),
        "{refused:?}"
    );
    for (outcome, expected) in [
        ("applied", 1.0),
        ("replayed", 1.0),
        ("insufficient_stock", 1.0),
    ] {
        let n = seen.value(MetricKind::Counter, TRANSFERS, &[("outcome", outcome)]);
        assert_eq!(n, expected, "transfers {outcome}");
    }

    // A retried unit of work: one transient commit, then a committed run.
    faulty.inject(Fault::Commit, 1, || Error::transient("busy on purpose"));
    store
        .run(&RetryPolicy::default(), |uow| {
            Box::pin(async move {
                uow.products()
                    .create(NewProduct::new("Bowl", "bowl", "BOWL").unwrap())
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap();
    let retried = [
        ("stockroom.operation", "unit_of_work"),
        ("error.type", "transient"),
    ];
    let n = seen.value(MetricKind::Counter, RETRIES, &retried);
    assert_eq!(n, 1.0, "retries {retried:?}");
    let ended = [
        ("stockroom.operation", "unit_of_work"),
        ("outcome", "committed"),
    ];
    let n = seen.value(MetricKind::Counter, RETRY_OUTCOMES, &ended);
    assert_eq!(n, 1.0, "retry outcomes {ended:?}");
    let failed_commit = [("db.operation.name", "commit"), ("outcome", "transient")];
    let n = seen.value(MetricKind::Histogram, OPERATION_DURATION, &failed_commit);
    assert_eq!(n, 1.0, "the failed commit is timed with its outcome");
    let transfers_ended = [
        ("stockroom.operation", "transfer"),
        ("outcome", "committed"),
    ];
    let n = seen.value(MetricKind::Counter, RETRY_OUTCOMES, &transfers_ended);
    assert_eq!(n, 2.0, "the applied and the replayed transfer committed");
}

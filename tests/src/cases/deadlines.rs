//! Honest answers under deadlines: an operation of the retry runner (a transfer, a unit of work
//! run by `StoreExt::run`) whose deadline runs out answers `Error::Transient` only when nothing
//! was applied and nothing will be, so that sending the same request again is safe.
//!
//! A row is held by another unit of work that locks it (a row lock on PostgreSQL, the single
//! writer on SQLite and memory) until the deadline has passed; then the holder commits, which is
//! when a wait that outlived the answer would apply its write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom_core::{
    transfer_stock, Error, ProductId, RetryPolicy, StockDelta, Store, StoreExt, TransferRequest,
};

use crate::support::*;

/// The deadline of the operations that wait behind the held row.
const DEADLINE: Duration = Duration::from_millis(800);

/// How long after its deadline an operation may answer in these cases: generous, so that a
/// loaded machine does not fail them; an answer that waited for the holder would come only
/// after [`HOLD`].
const ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// How long the holder keeps the row when the operation behind it does not answer.
const HOLD: Duration = Duration::from_secs(8);

/// Products `a` (10 in stock) and `b` (none), and a unit of work that holds `a` locked.
async fn a_held_source(
    store: &Arc<dyn Store>,
) -> (ProductId, ProductId, Box<dyn stockroom_core::UnitOfWork>) {
    let a = create_product(store, new_product("a", 10)).await;
    let b = create_product(store, new_product("b", 0)).await;
    let mut holder = store.begin().await.expect("begin the holder");
    holder
        .products()
        .lock(&[a.id])
        .await
        .expect("lock the source");
    (a.id, b.id, holder)
}

/// Runs `operation`, which waits behind the holder, and returns its answer and how long it
/// took; a case fails if it is still waiting [`HOLD`] after it began.
async fn answer_of<T>(
    operation: impl std::future::Future<Output = stockroom_core::Result<T>>,
) -> (stockroom_core::Result<T>, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(HOLD, operation)
        .await
        .expect("the operation answered while the row was still held");
    (answer, started.elapsed())
}

/// Checks that the answer is `Transient` and came within [`ANSWER_WITHIN`] of the deadline.
fn expect_transient_in_time<T: std::fmt::Debug>(
    answer: &stockroom_core::Result<T>,
    took: Duration,
) {
    assert!(
        matches!(answer, Err(Error::Transient { .. })),
        "the answer at the deadline: {answer:?}"
    );
    assert!(
        took <= DEADLINE + ANSWER_WITHIN,
        "answered {took:?} after it began, with a deadline of {DEADLINE:?}"
    );
}

/// A transfer without an idempotency key whose deadline runs out while its source is held
/// answers `Transient`, and nothing moves, neither then nor once the holder commits: a client
/// that sends it again (as `Transient` tells it it may) moves the stock once.
pub async fn a_transfer_past_its_deadline_behind_a_held_row_applies_nothing(store: Arc<dyn Store>) {
    let (a, b, holder) = a_held_source(&store).await;
    let policy = RetryPolicy::default().with_deadline(DEADLINE);
    let request = TransferRequest::new(a, b, 3);
    let (answer, took) = answer_of(transfer_stock(store.as_ref(), &request, &policy)).await;
    expect_transient_in_time(&answer, took);
    holder.commit().await.expect("the holder commits");
    // A transfer of the same rows queues behind anything still waiting for them, so what the
    // stores hold after it is final.
    store
        .transfer(&TransferRequest::new(a, b, 1))
        .await
        .expect("a transfer once the row is free");
    let state = (
        stock_of(&store, a).await,
        stock_of(&store, b).await,
        ledger_count(&store).await,
    );
    assert_eq!(
        state,
        (9, 1, 1),
        "(source, target, ledger rows): only the transfer after the holder applied"
    );
}

/// A unit of work run by the retry runner whose deadline runs out while it waits for a held
/// row answers `Transient`, and none of its writes is applied, neither then nor once the holder
/// commits.
pub async fn a_unit_of_work_past_its_deadline_behind_a_held_row_applies_nothing(
    store: Arc<dyn Store>,
) {
    let (a, b, holder) = a_held_source(&store).await;
    let policy = RetryPolicy::default().with_deadline(DEADLINE);
    let run = store.run(&policy, move |uow| {
        Box::pin(async move {
            uow.products()
                .adjust_stock(b, StockDelta::new(5).expect("a delta"))
                .await?;
            uow.products()
                .adjust_stock(a, StockDelta::new(-4).expect("a delta"))
                .await?;
            Ok(())
        })
    });
    let (answer, took) = answer_of(run).await;
    expect_transient_in_time(&answer, took);
    holder.commit().await.expect("the holder commits");
    let mut uow = store.begin().await.expect("begin after the holder");
    let locked = uow.products().lock(&[a, b]).await.expect("lock both");
    uow.rollback().await.expect("roll back");
    let stocks: Vec<i64> = locked.iter().map(|p| p.stock).collect();
    let expected = if a < b { vec![10, 0] } else { vec![0, 10] };
    assert_eq!(stocks, expected, "stocks of both products, in id order");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_deadlines_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) deadlines:
        a_transfer_past_its_deadline_behind_a_held_row_applies_nothing,
        a_unit_of_work_past_its_deadline_behind_a_held_row_applies_nothing,
    } };
}

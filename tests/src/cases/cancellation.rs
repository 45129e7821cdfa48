//! Every public future is cancel-safe: each operation, dropped after 0, 1, 2, … polls until it
//! completes, then again after 0, 200, 400 µs … of real time (see [`crate::cancel`]), leaves
//! no lock held, no connection dirty and no write half-applied, and the store goes on working.

use std::sync::Arc;

use stockroom_core::Store;

use crate::cancel::{sweep_both_ways, Operation};

/// `Store::begin`, dropped at every poll: the writer (or connection) it took is free again.
pub async fn a_dropped_begin_leaves_nothing_behind(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::Begin, || async {}).await;
}

/// A read session and its reads, dropped at every poll: the connection goes back clean.
pub async fn dropped_reads_leave_nothing_behind(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::Read, || async {}).await;
}

/// A unit of work calling every kind of repository method, then committing, dropped at every
/// poll: its writes are applied all or none, and nothing stays locked.
pub async fn a_dropped_unit_of_work_applies_all_or_nothing(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::UnitOfWork, || async {}).await;
}

/// A unit of work that rolls back, dropped at every poll: nothing of it is ever stored.
pub async fn a_dropped_rollback_leaves_nothing_behind(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::Rollback, || async {}).await;
}

/// A transfer without an idempotency key, dropped at every poll: the stock moved with exactly
/// one ledger row, or not at all.
pub async fn a_dropped_transfer_moves_all_or_nothing(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::Transfer, || async {}).await;
}

/// A transfer with an idempotency key, dropped at every poll: likewise.
pub async fn a_dropped_keyed_transfer_moves_all_or_nothing(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::KeyedTransfer, || async {}).await;
}

/// A unit of work run by the retry runner, dropped at every poll: all or nothing.
pub async fn a_dropped_retried_unit_of_work_applies_all_or_nothing(store: Arc<dyn Store>) {
    sweep_both_ways(&store, Operation::Run, || async {}).await;
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_cancellation_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) cancellation:
        a_dropped_begin_leaves_nothing_behind,
        dropped_reads_leave_nothing_behind,
        a_dropped_unit_of_work_applies_all_or_nothing,
        a_dropped_rollback_leaves_nothing_behind,
        a_dropped_transfer_moves_all_or_nothing,
        a_dropped_keyed_transfer_moves_all_or_nothing,
        a_dropped_retried_unit_of_work_applies_all_or_nothing,
    } };
}

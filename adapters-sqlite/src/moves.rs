//! Stock moves committed together: group commit of [`Store::move_stock`].
//!
//! SQLite has one writer, so concurrent stock moves (transfers) take turns. Each used to be a
//! transaction of its own; now a move joins a queue, and whichever caller gets the writer runs
//! every move waiting then (up to [`MOST_TOGETHER`]) in one transaction: each in a savepoint of
//! its own, so that a refused move (insufficient stock, a product not live) changes nothing and
//! the others go on, then one `COMMIT` for all. Each caller gets its own move's answer, sent
//! once the transaction has ended. A move alone is run as before, its transaction its own.
//!
//! What a caller can be told, and is true:
//!
//! - its move's answer (moved, already recorded under its key, or the error that refused it),
//!   when the transaction committed;
//! - when the `COMMIT` failed: nothing of the transaction was applied; the caller that ran it
//!   gets the commit's error, the others `Transient` naming it (their moves were not applied;
//!   the use case's retry runs them again);
//! - when the caller that ran the transaction gave up on it (its future dropped, so it was
//!   rolled back), or it could not begin: `Transient`, not applied.
//!
//! A caller whose future is dropped before its move is taken withdraws it; once taken, the move
//! is applied or not with its transaction, as a statement already sent to a server is.
//!
//! [`Store::move_stock`]: stockroom_core::Store::move_stock

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use stockroom_core::{Error, Result, StockMoved};
use tokio::sync::oneshot;

/// The most moves one transaction runs.
pub(crate) const MOST_TOGETHER: usize = 64;

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

/// One caller's move (`T`: a `NewStockMovement`), waiting to be run.
#[derive(Debug)]
pub(crate) struct Ticket<T> {
    pub(crate) movement: T,
    state: AtomicU8,
    answer: Mutex<Option<oneshot::Sender<Result<StockMoved>>>>,
}

impl<T> Ticket<T> {
    /// Withdraws the move unless a caller has taken it to run; whether it was withdrawn.
    pub(crate) fn withdraw(&self) -> bool {
        self.state
            .compare_exchange(WAITING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn take(&self) -> bool {
        self.state
            .compare_exchange(WAITING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sends the move's answer (the first one only).
    pub(crate) fn answer(&self, result: Result<StockMoved>) {
        let sender = self
            .answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            // The caller may be gone: then nobody needs the answer.
            let _ = sender.send(result);
        }
    }
}

/// The moves waiting for the writer.
#[derive(Debug)]
pub(crate) struct MoveQueue<T> {
    waiting: Mutex<Vec<Arc<Ticket<T>>>>,
}

impl<T> Default for MoveQueue<T> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(Vec::new()),
        }
    }
}

impl<T> MoveQueue<T> {
    /// Queues `movement`; its answer comes on the receiver.
    pub(crate) fn join(
        &self,
        movement: T,
    ) -> (Arc<Ticket<T>>, oneshot::Receiver<Result<StockMoved>>) {
        let (sender, receiver) = oneshot::channel();
        let ticket = Arc::new(Ticket {
            movement,
            state: AtomicU8::new(WAITING),
            answer: Mutex::new(Some(sender)),
        });
        self.lock().push(Arc::clone(&ticket));
        (ticket, receiver)
    }

    /// Takes `own` and the other moves waiting, oldest first, up to [`MOST_TOGETHER`], `own`
    /// first; withdrawn ones are dropped from the queue. Nothing when `own` is no longer
    /// waiting (another caller took it, and answers it).
    pub(crate) fn take(&self, own: &Arc<Ticket<T>>) -> Batch<T> {
        let mut waiting = self.lock();
        if !own.take() {
            return Batch(Vec::new());
        }
        let mut batch = Vec::with_capacity(waiting.len().clamp(1, MOST_TOGETHER));
        batch.push(Arc::clone(own));
        waiting.retain(|ticket| {
            if Arc::ptr_eq(ticket, own) {
                return false;
            }
            match ticket.state.load(Ordering::Acquire) {
                WITHDRAWN => false,
                _ if batch.len() < MOST_TOGETHER && ticket.take() => {
                    batch.push(Arc::clone(ticket));
                    false
                }
                _ => true,
            }
        });
        Batch(batch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Ticket<T>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The moves one caller runs in one transaction, its own first. Each is answered once: by the
/// caller, or, if the batch is dropped before that (the transaction could not begin, or its
/// call was dropped before it ran), as not run.
#[derive(Debug)]
pub(crate) struct Batch<T>(Vec<Arc<Ticket<T>>>);

impl<T> Batch<T> {
    pub(crate) fn tickets(&self) -> &[Arc<Ticket<T>>] {
        &self.0
    }
}

impl<T> Drop for Batch<T> {
    fn drop(&mut self) {
        for ticket in &self.0 {
            ticket.answer(Err(not_run("its transaction did not run")));
        }
    }
}

/// The error of a move that was not applied because of its transaction, not of itself.
pub(crate) fn not_run(why: &str) -> Error {
    Error::transient(format!(
        "sqlite: the stock move was not applied: {why}; nothing of it was written"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movement() -> u32 {
        7
    }

    #[test]
    fn a_caller_takes_its_own_move_first_and_the_others_waiting_but_not_withdrawn_ones() {
        let queue = MoveQueue::default();
        let (first, _a) = queue.join(movement());
        let (gone, _b) = queue.join(movement());
        let (own, _c) = queue.join(movement());
        assert!(gone.withdraw());
        let batch = queue.take(&own);
        let taken: Vec<_> = batch.tickets().iter().map(Arc::as_ptr).collect();
        assert_eq!(taken, [Arc::as_ptr(&own), Arc::as_ptr(&first)]);
        assert!(!first.withdraw(), "a taken move cannot be withdrawn");
        assert!(queue.lock().is_empty());
    }

    #[test]
    fn a_caller_whose_move_another_took_takes_nothing() {
        let queue = MoveQueue::default();
        let (own, _a) = queue.join(movement());
        let (other, _b) = queue.join(movement());
        let taken_by_other = queue.take(&other);
        assert_eq!(taken_by_other.tickets().len(), 2);
        let (later, _c) = queue.join(movement());
        assert!(queue.take(&own).tickets().is_empty());
        assert!(later.withdraw(), "a move that joined later still waits");
    }

    #[test]
    fn a_batch_dropped_unanswered_answers_each_move_as_not_run() {
        let queue = MoveQueue::default();
        let (own, mut answer) = queue.join(movement());
        drop(queue.take(&own));
        let answered = answer.try_recv().expect("answered");
        assert!(
            matches!(answered, Err(Error::Transient { .. })),
            "{answered:?}"
        );
    }
}

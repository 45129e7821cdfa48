//! The deadline of the operation in progress, as the adapters see it.
//!
//! The retry runner ([`RetryPolicy::deadline`](crate::RetryPolicy::deadline)) runs its
//! operation inside a deadline scope: a tokio task-local value (it needs no tokio runtime, and
//! goes with the operation's future, whichever executor polls it), read by the adapters through
//! [`time_left`]. Each adapter bounds the waits it starts by the time left (a lock, a busy
//! database, a free connection or writer), so that running out of time is the backend's own,
//! definite refusal ([`deadline_reached`]: `Error::Transient`, nothing applied) rather than a
//! future dropped while the backend goes on.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

tokio::task_local! {
    /// When the operation in progress must have answered.
    static DEADLINE: Instant;
}

/// Runs `operation` with `deadline` as the deadline of the operation in progress: the earlier
/// of it and any deadline already in effect, so that a scope inside another never extends it.
pub(crate) async fn scope<F: Future>(deadline: Instant, operation: F) -> F::Output {
    let deadline = current().map_or(deadline, |outer| outer.min(deadline));
    DEADLINE.scope(deadline, operation).await
}

fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// How much time the operation in progress on this task has left before its deadline: `None`
/// outside a deadline scope (no bound but the backend's own timeouts), `Some(Duration::ZERO)`
/// once the deadline has passed.
///
/// An adapter bounds each wait it starts by this (as well as by its own timeouts), so that the
/// wait ends, with nothing applied, by the deadline.
pub fn time_left() -> Option<Duration> {
    current().map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// The error of a wait cut short by the deadline of the operation in progress:
/// [`Error::Transient`], since the wait applied nothing. `waiting_for` says for what, for the
/// log (`"the writer"`, `"a lock"`).
pub fn deadline_reached(waiting_for: &str) -> Error {
    Error::transient(format!(
        "the operation's deadline ran out while waiting for {waiting_for}; nothing was applied"
    ))
}

/// Waits for `wait` at most the [time left](time_left) before the deadline of the operation in
/// progress, if it has one: past it, the answer is [`deadline_reached`]. `waiting_for` names
/// what is waited for, for the log.
pub async fn until_deadline<T>(wait: impl Future<Output = T>, waiting_for: &str) -> Result<T> {
    match time_left() {
        Some(left) => tokio::time::timeout(left, wait)
            .await
            .map_err(|_| deadline_reached(waiting_for)),
        None => Ok(wait.await),
    }
}

/// Waits for `wait` at most `limit` (the backend's own bound, such as the acquire timeout) and
/// at most the [time left](time_left) before the deadline of the operation in progress: past
/// `limit` the answer is `on_limit()`, past the deadline [`deadline_reached`]. `waiting_for`
/// names what is waited for, for the log.
pub async fn wait_within<T>(
    limit: Duration,
    wait: impl Future<Output = T>,
    on_limit: impl FnOnce() -> Error,
    waiting_for: &str,
) -> Result<T> {
    if time_left().is_some_and(|left| left < limit) {
        return until_deadline(wait, waiting_for).await;
    }
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| on_limit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scope_inside_another_never_extends_its_deadline() {
        assert_eq!(time_left(), None);
        let now = Instant::now();
        let inner = scope(now + Duration::from_secs(2), async {
            scope(now + Duration::from_secs(9), async { time_left() }).await
        })
        .await;
        assert_eq!(inner, Some(Duration::from_secs(2)));
        let shorter = scope(now + Duration::from_secs(9), async {
            scope(now + Duration::from_secs(1), async { time_left() }).await
        })
        .await;
        assert_eq!(shorter, Some(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_deadline_or_at_its_limit_whichever_comes_first() {
        let forever = std::future::pending::<()>;
        let limit = || Error::unavailable("limit");
        let started = Instant::now();
        let deadline = started + Duration::from_secs(1);
        let cut = scope(
            deadline,
            wait_within(Duration::from_secs(5), forever(), limit, "x"),
        )
        .await;
        assert!(matches!(cut, Err(Error::Transient { .. })), "{cut:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(9);
        let cut = scope(
            deadline,
            wait_within(Duration::from_secs(5), forever(), limit, "x"),
        )
        .await;
        assert!(matches!(cut, Err(Error::Unavailable { .. })), "{cut:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}

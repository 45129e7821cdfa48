//! The retry runner: a whole unit of work, re-run on transient failures.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::ports::{Store, UnitOfWork};
use crate::usecases::deadline;

/// The future a unit-of-work closure returns (see [`run_in_unit_of_work`]): boxed and `Send`,
/// and free to borrow the unit of work and whatever the closure borrows.
pub type WorkFuture<'u, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'u>>;

/// How often, and how patiently, a unit of work is re-run after a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay before the second attempt; it doubles each time, with jitter.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// The most time the whole operation may take, every attempt, wait and backoff included.
    ///
    /// The store sees it: every wait it starts within the operation (for a free connection or
    /// the writer, for a row lock, for a busy database) is bounded by the time left, so that
    /// running out of time is the store's own refusal, [`Error::Transient`]: nothing was
    /// applied, and sending the same request again is safe. No attempt begins, and no backoff
    /// sleeps, past the deadline.
    ///
    /// As a backstop, the runner answers [`DEADLINE_GRACE`](Self::DEADLINE_GRACE) after the
    /// deadline whatever the store is doing, and drops the attempt in flight: the answer is
    /// [`Error::Transient`] when no call that can commit was in flight (the unit of work is
    /// dropped, and rolls back), and [`Error::AmbiguousCommit`] when one was (a unit of work's
    /// commit, or a transfer's stock move, which commits by itself): it may or may not have
    /// been applied. `None`: no bound but the attempts' own (lock and acquire timeouts) times
    /// `max_attempts`.
    pub deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Thirty attempts, 2 ms before the second, doubling up to 200 ms; no deadline.
    ///
    /// Thirty, because on a SERIALIZABLE database (PostgreSQL with
    /// `default_transaction_isolation = serializable`, CockroachDB, YugabyteDB) every writer
    /// that waited for a row another transaction changed fails with a serialization failure
    /// and must start over: with sixteen tasks transferring between the same two products, ten
    /// attempts were not always enough for each transfer's turn to come.
    fn default() -> Self {
        Self {
            max_attempts: 30,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// How long after its [`deadline`](Self::deadline) the runner answers, at the latest,
    /// whatever the store is doing: the store's own bounds end its waits at the deadline, and
    /// its answer needs a round trip to arrive.
    pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

    /// No retry at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The policy, with `max_attempts` attempts in all (the first included).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The policy, with the whole operation bounded by `deadline`.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The policy, with `base_delay` before the second attempt and at most `max_delay` between
    /// two.
    pub fn with_backoff(mut self, base_delay: Duration, max_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self.max_delay = max_delay;
        self
    }

    /// Runs `operation` within the deadline, if any, in a deadline scope the store sees (see
    /// [`deadline`](Self::deadline)). Past the deadline and its grace, the operation is dropped
    /// and the answer is [`Error::AmbiguousCommit`] if `commits` says a call that can commit
    /// was in flight, [`Error::Transient`] otherwise.
    pub(crate) async fn within_deadline<T>(
        &self,
        commits: &Commits,
        operation: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let now = Instant::now();
        let Some((until, backstop)) = self.deadline.and_then(|deadline| {
            let until = now.checked_add(deadline)?;
            Some((until, until.checked_add(Self::DEADLINE_GRACE)?))
        }) else {
            // No deadline, or one too far to tell from none.
            return operation.await;
        };
        let deadline = until - now;
        match tokio::time::timeout_at(backstop, deadline::scope(until, operation)).await {
            Ok(result) => result,
            Err(_) if commits.in_flight() => Err(Error::ambiguous_commit(format!(
                "the deadline of {deadline:?} ran out while a commit was in flight: it may or \
                 may not have been applied"
            ))),
            Err(_) => Err(Error::transient(format!(
                "gave up after the deadline of {deadline:?}, before anything was committed"
            ))),
        }
    }

    /// The delay after failed attempt `attempt` (1-based): exponential with "full jitter", so
    /// that tasks that collided once do not collide again in lockstep.
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let random = RandomState::new().build_hasher().finish();
        cap.mul_f64((random % 1_000) as f64 / 1_000.0)
    }

    fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

/// Runs `work` in a unit of work of its own and commits it; when `work`, `begin` or the commit
/// fails with a [transient](Error::is_transient) error (serialization failure, deadlock, busy
/// database, a concurrent request that took the same idempotency key), rolls back and runs
/// `work` again in a new unit of work, up to `policy.max_attempts` times in all, with jittered
/// exponential backoff between attempts, and within `policy.deadline` if one is set. Any other
/// error rolls back and is returned at once; so is the last transient one. A commit whose
/// outcome is unknown ([`Error::AmbiguousCommit`]) is returned, never re-run: the work may have
/// been stored.
///
/// `work` is a closure that takes the unit of work and returns a boxed future
/// ([`WorkFuture`]); it may borrow from its surroundings, and it must be safe to run more than
/// once (its effects on the store roll back with each failed attempt; effects outside the store
/// do not). It is usually called as [`StoreExt::run`](crate::StoreExt::run):
///
/// ```
/// # async fn demo(store: &dyn stockroom_core::Store, new: stockroom_core::NewCategory) -> stockroom_core::Result<()> {
/// use stockroom_core::{RetryPolicy, StoreExt};
///
/// let new = &new; // borrowed by every attempt
/// let category = store
///     .run(&RetryPolicy::default(), |uow| {
///         Box::pin(async move {
///             let category = uow.categories().create(new.clone()).await?;
///             Ok(category)
///         })
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub async fn run_in_unit_of_work<'a, T, F>(
    store: &dyn Store,
    policy: &RetryPolicy,
    mut work: F,
) -> Result<T>
where
    T: Send + 'a,
    F: for<'u> FnMut(&'u mut (dyn UnitOfWork + 'a)) -> WorkFuture<'u, T> + Send + 'a,
{
    let span = tracing::debug_span!(
        "stockroom.run",
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    async move {
        let mut retries = Retries::new(policy, "unit_of_work");
        let commits = Commits::default();
        let attempts = async {
            loop {
                match attempt_once(store, &mut work, &commits).await {
                    Ok(value) => break Ok(value),
                    Err(error) => retries.after(error).await?,
                }
            }
        };
        let result = policy.within_deadline(&commits, attempts).await;
        let outcome = match &result {
            Ok(_) => "committed",
            Err(e) if e.is_transient() => "gave_up",
            Err(_) => "failed",
        };
        tracing::Span::current().record("outcome", outcome);
        crate::metrics::retry_outcome("unit_of_work", outcome);
        result
    }
    .instrument(span)
    .await
}

/// The bookkeeping of one retried operation: which attempt this is, and whether a failure is
/// worth another one.
pub(crate) struct Retries<'p> {
    policy: &'p RetryPolicy,
    /// The operation's name among the metrics: `transfer` or `unit_of_work`.
    operation: &'static str,
    attempt: u32,
    /// Whether an [`Error::AmbiguousCommit`] is worth another attempt: only for an operation
    /// that cannot apply twice.
    idempotent: bool,
}

impl<'p> Retries<'p> {
    pub(crate) fn new(policy: &'p RetryPolicy, operation: &'static str) -> Self {
        tracing::Span::current().record("attempts", 1);
        Self {
            policy,
            operation,
            attempt: 1,
            idempotent: false,
        }
    }

    /// Also retries ambiguous commits, when `idempotent`: the operation cannot apply twice, so
    /// running it again resolves the ambiguity.
    pub(crate) fn resolving_ambiguous_commits(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    fn worth_retrying(&self, error: &Error) -> bool {
        error.is_transient() || (self.idempotent && error.is_ambiguous_commit())
    }

    /// After a failed attempt: `Err(error)` when it is not worth retrying, the attempts are
    /// used up, or the deadline would pass before the next attempt begins; otherwise waits the
    /// backoff delay and returns `Ok` for the next attempt.
    pub(crate) async fn after(&mut self, error: Error) -> Result<()> {
        if !self.worth_retrying(&error) || self.attempt >= self.policy.attempts() {
            return Err(error);
        }
        let delay = self.policy.delay_after(self.attempt);
        if deadline::time_left().is_some_and(|left| left <= delay) {
            // No time for another attempt: the last answer is the true one.
            return Err(error);
        }
        tracing::debug!(attempt = self.attempt, %error, "transient failure, retrying");
        crate::metrics::retry(self.operation, crate::traced::outcome_of(&error));
        tokio::time::sleep(delay).await;
        self.attempt += 1;
        tracing::Span::current().record("attempts", self.attempt);
        Ok(())
    }
}

/// Whether a call that can commit is in flight in a retried operation: a unit of work's
/// `commit`, or [`Store::move_stock`], which commits by itself. Past the deadline, what the
/// runner answers depends on it (see [`RetryPolicy::deadline`]).
#[derive(Debug, Default)]
pub(crate) struct Commits(AtomicBool);

impl Commits {
    /// Runs `call`, a call that can commit, marked as in flight until it returns; a call
    /// dropped before it returned stays marked.
    pub(crate) async fn sending<T>(&self, call: impl Future<Output = T>) -> T {
        // The runner reads the mark on the task that polls `call`: no ordering is needed.
        self.0.store(true, Ordering::Relaxed);
        let answer = call.await;
        self.0.store(false, Ordering::Relaxed);
        answer
    }

    fn in_flight(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

async fn attempt_once<'a, T, F>(store: &dyn Store, work: &mut F, commits: &Commits) -> Result<T>
where
    F: for<'u> FnMut(&'u mut (dyn UnitOfWork + 'a)) -> WorkFuture<'u, T>,
{
    let mut uow = store.begin().await?;
    match work(uow.as_mut()).await {
        Ok(value) => {
            commits.sending(uow.commit()).await?;
            Ok(value)
        }
        Err(error) => {
            // The error is what the caller needs; a failed rollback only means the connection
            // is gone, and the transaction with it.
            if let Err(rollback_error) = uow.rollback().await {
                tracing::debug!(%rollback_error, "rollback after a failed attempt failed");
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            assert!(policy.delay_after(attempt) <= policy.max_delay);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_whole_operation() {
        let policy = RetryPolicy::default().with_deadline(Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let commits = Commits::default();
        let stuck = policy
            .within_deadline(&commits, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .await;
        assert!(matches!(stuck, Err(Error::Transient { .. })), "{stuck:?}");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2) + RetryPolicy::DEADLINE_GRACE
        );
        let quick = policy.within_deadline(&commits, async { Ok(7) }).await;
        assert_eq!(quick.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_in_flight_past_the_deadline_is_ambiguous() {
        let policy = RetryPolicy::default().with_deadline(Duration::from_secs(2));
        let commits = Commits::default();
        let stuck: Result<()> = policy
            .within_deadline(&commits, async {
                commits
                    .sending(tokio::time::sleep(Duration::from_secs(60)))
                    .await;
                Ok(())
            })
            .await;
        assert!(
            matches!(stuck, Err(Error::AmbiguousCommit { .. })),
            "{stuck:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_operation_sees_its_deadline() {
        let policy = RetryPolicy::default().with_deadline(Duration::from_secs(3));
        let commits = Commits::default();
        let left = policy
            .within_deadline(&commits, async { Ok(deadline::time_left()) })
            .await;
        assert_eq!(left.unwrap(), Some(Duration::from_secs(3)));
        let unbounded = RetryPolicy::default()
            .within_deadline(&commits, async { Ok(deadline::time_left()) })
            .await;
        assert_eq!(unbounded.unwrap(), None);
        let huge = RetryPolicy::default().with_deadline(Duration::MAX);
        let left = huge
            .within_deadline(&commits, async { Ok(deadline::time_left()) })
            .await;
        assert_eq!(left.unwrap(), None, "a deadline past any instant is none");
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_begins_past_the_deadline() {
        let policy = RetryPolicy::default()
            .with_backoff(Duration::from_secs(1), Duration::from_secs(1))
            .with_deadline(Duration::from_millis(10));
        let commits = Commits::default();
        let mut attempts = 0;
        let answer: Result<()> = policy
            .within_deadline(&commits, async {
                let mut retries = Retries::new(&policy, "test");
                loop {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(9)).await;
                    let busy = Error::transient("busy");
                    retries.after(busy).await?;
                }
            })
            .await;
        assert!(
            matches!(&answer, Err(Error::Transient { reason, .. }) if reason == "busy"),
            "{answer:?}"
        );
        assert_eq!(attempts, 1, "the backoff would have outlived the deadline");
    }

    #[test]
    fn a_policy_makes_at_least_one_attempt() {
        let zero = RetryPolicy::default().with_max_attempts(0);
        assert_eq!(zero.attempts(), 1);
        assert_eq!(RetryPolicy::none().attempts(), 1);
    }
}

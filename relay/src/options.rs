//! How a relay claims, waits, backs off and cleans up.

use std::time::Duration;

use rand::Rng;
use stockroom_core::outbox::ClaimOptions;

use crate::error::Error;

/// A relay's settings. Every field has a default ([`RelayOptions::default`]); the `with_`
/// methods set one each.
///
/// ```
/// use std::time::Duration;
/// use stockroom_relay::RelayOptions;
///
/// let options = RelayOptions::default()
///     .with_idle_interval(Duration::from_millis(50))
///     .with_purge_delivered_after(Some(Duration::from_secs(24 * 3600)));
/// assert_eq!(options.claim.max_events, 256);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayOptions {
    /// What each round claims: the most events and lanes, and the lease (see
    /// [`ClaimOptions`]). The lease must outlast a round (a delivery of `max_events` events
    /// and their acknowledgement), or another relay claims the lanes meanwhile and delivers
    /// the same events again. Default: [`ClaimOptions::default`] (256 events, 8 lanes, 30 s).
    pub claim: ClaimOptions,
    /// How long [`Relay::run`](crate::Relay::run) waits before it claims again after a round
    /// that found nothing to claim. Default: 200 ms.
    pub idle_interval: Duration,
    /// The first back-off after a round that failed (the sink or the store); each failure in a
    /// row doubles it, up to [`backoff_max`](Self::backoff_max), and each wait is drawn at
    /// random between half the step and the whole step (but never below this) so that relays
    /// that failed together do not retry together. Default: 100 ms.
    pub backoff_min: Duration,
    /// The longest back-off. Default: 30 s.
    pub backoff_max: Duration,
    /// Deletes delivered events once they were delivered this long ago
    /// ([`Store::purge_delivered_events`](stockroom_core::Store::purge_delivered_events)),
    /// every [`purge_interval`](Self::purge_interval). `None` (the default) keeps them.
    pub purge_delivered_after: Option<Duration>,
    /// How often the relay purges, when [`purge_delivered_after`](Self::purge_delivered_after)
    /// is set. Default: 60 s.
    pub purge_interval: Duration,
    /// How often the relay reads the outbox's backlog
    /// ([`Store::outbox_backlog`](stockroom_core::Store::outbox_backlog)) for its gauges and
    /// logs; `None` never. Default: 15 s.
    pub backlog_interval: Option<Duration>,
    /// How long a stopping relay lets the round under way finish (its delivery and
    /// acknowledgement) before it drops it: the events of a dropped round are claimed again
    /// when their lease runs out. Default: 10 s.
    pub shutdown_grace: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            claim: ClaimOptions::default(),
            idle_interval: Duration::from_millis(200),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            purge_delivered_after: None,
            purge_interval: Duration::from_secs(60),
            backlog_interval: Some(Duration::from_secs(15)),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl RelayOptions {
    /// Sets [`claim`](Self::claim).
    pub fn with_claim(mut self, claim: ClaimOptions) -> Self {
        self.claim = claim;
        self
    }
    /// Sets [`idle_interval`](Self::idle_interval).
    pub fn with_idle_interval(mut self, interval: Duration) -> Self {
        self.idle_interval = interval;
        self
    }
    /// Sets [`backoff_min`](Self::backoff_min) and [`backoff_max`](Self::backoff_max).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }
    /// Sets [`purge_delivered_after`](Self::purge_delivered_after).
    pub fn with_purge_delivered_after(mut self, after: Option<Duration>) -> Self {
        self.purge_delivered_after = after;
        self
    }
    /// Sets [`purge_interval`](Self::purge_interval).
    pub fn with_purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = interval;
        self
    }
    /// Sets [`backlog_interval`](Self::backlog_interval).
    pub fn with_backlog_interval(mut self, interval: Option<Duration>) -> Self {
        self.backlog_interval = interval;
        self
    }
    /// Sets [`shutdown_grace`](Self::shutdown_grace).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Checks the options: the claim options' bounds ([`ClaimOptions::check`], as
    /// [`Error::Store`] with a validation error), a back-off whose minimum is positive and not
    /// above its maximum, positive intervals ([`Error::Options`]).
    pub fn check(&self) -> Result<(), Error> {
        self.claim.check()?;
        let positive = |field, value: Duration| {
            if value.is_zero() {
                Err(Error::Options {
                    field,
                    expected: "a positive duration",
                })
            } else {
                Ok(())
            }
        };
        positive("idle_interval", self.idle_interval)?;
        positive("backoff_min", self.backoff_min)?;
        positive("purge_interval", self.purge_interval)?;
        if let Some(interval) = self.backlog_interval {
            positive("backlog_interval", interval)?;
        }
        if self.backoff_max < self.backoff_min {
            return Err(Error::Options {
                field: "backoff_max",
                expected: "at least backoff_min",
            });
        }
        Ok(())
    }

    /// The wait after the `failures`-th failure in a row (1 for the first): the step
    /// `backoff_min · 2^(failures-1)`, at most `backoff_max`, drawn between half of it and all
    /// of it, never below `backoff_min`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let step = self
            .backoff_min
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max);
        let low = (step / 2).max(self.backoff_min).min(step);
        if low >= step {
            return step;
        }
        rand::rng().random_range(low..=step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_maximum_with_jitter() {
        let options = RelayOptions::default()
            .with_backoff(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(options.backoff(1), Duration::from_millis(100));
        for _ in 0..100 {
            let second = options.backoff(2);
            assert!(
                (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&second),
                "{second:?}"
            );
            let fourth = options.backoff(4);
            assert!(
                (Duration::from_millis(400)..=Duration::from_millis(800)).contains(&fourth),
                "{fourth:?}"
            );
            let late = options.backoff(u32::MAX);
            assert!(
                (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&late),
                "{late:?}"
            );
        }
        let draws: std::collections::HashSet<_> = (0..50).map(|_| options.backoff(5)).collect();
        assert!(draws.len() > 1, "jittered: {draws:?}");
    }

    #[test]
    fn options_out_of_bounds_are_refused() {
        assert!(RelayOptions::default().check().is_ok());
        let inverted =
            RelayOptions::default().with_backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert!(matches!(
            inverted.check(),
            Err(Error::Options {
                field: "backoff_max",
                ..
            })
        ));
        let busy = RelayOptions::default().with_idle_interval(Duration::ZERO);
        assert!(matches!(
            busy.check(),
            Err(Error::Options {
                field: "idle_interval",
                ..
            })
        ));
        let claim = ClaimOptions {
            max_events: 0,
            ..ClaimOptions::default()
        };
        assert!(matches!(
            RelayOptions::default().with_claim(claim).check(),
            Err(Error::Store(stockroom_core::Error::Validation { .. }))
        ));
    }
}

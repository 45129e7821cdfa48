//! The relay: claims committed events from a store, delivers them to a sink, acknowledges what
//! the broker confirmed; over and over, backing off on failures.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use stockroom_core::outbox::Backlog;
use stockroom_core::{time, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, debug_span, field, info, warn, Instrument, Span};

use crate::error::{Chain, Error};
use crate::metrics;
use crate::options::RelayOptions;
use crate::sink::Sink;

/// What one round of a relay did ([`Relay::run_once`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Round {
    /// How many events it claimed (0: no free lane had an undelivered event).
    pub claimed: usize,
    /// How many of them the broker confirmed and the store marked delivered (all of them, in
    /// a round that succeeded).
    pub delivered: usize,
}

impl Round {
    /// Whether it found nothing to claim.
    pub fn is_idle(&self) -> bool {
        self.claimed == 0
    }
}

/// An outbox relay: claims committed events from a [`Store`] and delivers them to a [`Sink`],
/// at least once, each aggregate's events in commit order (see the crate's documentation).
///
/// Several relays, in one process or many, may run on one store: each claim leases lanes that
/// no other claim holds, so they share the work and never deliver one aggregate at once.
pub struct Relay<S> {
    store: Arc<dyn Store>,
    sink: S,
    options: RelayOptions,
}

impl<S> std::fmt::Debug for Relay<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("backend", &self.store.backend())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: Sink> Relay<S> {
    /// A relay from `store` to `sink`. Options out of bounds are refused (see
    /// [`RelayOptions::check`]).
    pub fn new(store: Arc<dyn Store>, sink: S, options: RelayOptions) -> Result<Self, Error> {
        options.check()?;
        Ok(Self {
            store,
            sink,
            options,
        })
    }

    /// Its options.
    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// Its sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Its store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// One round: claims events ([`Store::claim_events`] with
    /// [`RelayOptions::claim`]), delivers them to the sink, and acknowledges the prefix the
    /// broker confirmed, which gives the lanes back (the rest is claimed again).
    ///
    /// A sink that failed is [`Error::Sink`] with the count it confirmed (that prefix was
    /// acknowledged); a store that failed is [`Error::Store`] (when the acknowledgement fails,
    /// the confirmed events are delivered again after the lease: the broker tells them by
    /// their ids). Dropped before it ends, the round leaves its claim unsettled: its events
    /// are claimed again when the lease runs out.
    pub async fn run_once(&self) -> Result<Round, Error> {
        let span = debug_span!(
            "relay.round",
            messaging.system = self.sink.system(),
            claimed = field::Empty,
            delivered = field::Empty,
        );
        self.round().instrument(span).await
    }

    async fn round(&self) -> Result<Round, Error> {
        let claimed = self.store.claim_events(&self.options.claim).await?;
        if claimed.is_empty() {
            claimed.release().await?;
            Span::current().record("claimed", 0);
            return Ok(Round::default());
        }
        let attempted = claimed.len();
        Span::current().record("claimed", attempted);
        let (mut confirmed, failure) = self.sink.deliver(claimed.events()).await.into_parts();
        if confirmed > attempted {
            warn!(
                confirmed,
                attempted, "the sink confirmed more events than it was given; counting those"
            );
            confirmed = attempted;
        }
        metrics::delivered(self.sink.system(), confirmed);
        Span::current().record("delivered", confirmed);
        let acknowledged = claimed.acknowledge(confirmed).await;
        match (failure, acknowledged) {
            (None, Ok(())) => {
                debug!(claimed = attempted, delivered = confirmed, "relayed");
                Ok(Round {
                    claimed: attempted,
                    delivered: confirmed,
                })
            }
            (Some(source), Ok(())) => Err(Error::Sink {
                confirmed,
                attempted,
                source,
            }),
            (failure, Err(error)) => {
                if let Some(source) = failure {
                    warn!(
                        error = %Chain(&*source),
                        confirmed,
                        attempted,
                        "the sink failed, then the acknowledgement too"
                    );
                }
                Err(Error::Store(error))
            }
        }
    }

    /// Reads the outbox's backlog, sets the backlog gauges (feature `metrics`) and returns it.
    pub async fn backlog(&self) -> Result<Backlog, Error> {
        let backlog = self.store.outbox_backlog().await?;
        let age = backlog.age(time::now());
        metrics::backlog(backlog.pending, age);
        debug!(
            pending = backlog.pending,
            oldest_age_ms = age.as_millis() as u64,
            delivered = backlog.delivered,
            "outbox backlog"
        );
        Ok(backlog)
    }

    /// Deletes the events delivered more than
    /// [`RelayOptions::purge_delivered_after`] ago; how many (`None` when the option is
    /// unset: nothing is purged). [`run`](Self::run) calls it every
    /// [`RelayOptions::purge_interval`].
    pub async fn purge(&self) -> Result<Option<u64>, Error> {
        let Some(after) = self.options.purge_delivered_after else {
            return Ok(None);
        };
        let before = chrono::TimeDelta::from_std(after)
            .ok()
            .and_then(|after| time::now().checked_sub_signed(after))
            .map_or(time::MIN, |before| before.max(time::MIN));
        let purged = self.store.purge_delivered_events(before).await?;
        metrics::purged(purged);
        if purged > 0 {
            info!(purged, "purged delivered outbox events");
        }
        Ok(Some(purged))
    }

    /// Runs rounds until `shutdown` completes: right after a round that claimed events, after
    /// [`RelayOptions::idle_interval`] after one that found none, after a back-off after one
    /// that failed (logged as a warning). Every [`RelayOptions::backlog_interval`] it reads
    /// the backlog ([`backlog`](Self::backlog)) and every [`RelayOptions::purge_interval`] it
    /// purges ([`purge`](Self::purge)), if set.
    ///
    /// When `shutdown` completes, a wait ends at once, and the round under way gets
    /// [`RelayOptions::shutdown_grace`] to deliver and acknowledge; past that it is dropped
    /// (its events are claimed again after their lease).
    pub async fn run<F>(&self, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown = pin!(shutdown);
        let system = self.sink.system();
        info!(messaging.system = system, backend = %self.store.backend(), "relay started");
        let mut failures = 0_u32;
        let mut next_backlog = Instant::now();
        let mut next_purge = Instant::now();
        loop {
            let now = Instant::now();
            if let Some(interval) = self.options.backlog_interval {
                if now >= next_backlog {
                    next_backlog = now + interval;
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        result = self.backlog() => if let Err(error) = result {
                            warn!(error = %Chain(&error), "could not read the outbox backlog");
                        },
                    }
                }
            }
            if self.options.purge_delivered_after.is_some() && now >= next_purge {
                next_purge = now + self.options.purge_interval;
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    result = self.purge() => if let Err(error) = result {
                        warn!(error = %Chain(&error), "could not purge delivered events");
                    },
                }
            }

            let mut round = pin!(self.run_once());
            let result = tokio::select! {
                biased;
                result = &mut round => result,
                () = &mut shutdown => {
                    self.finish(round).await;
                    break;
                }
            };
            let pause = match result {
                Ok(round) => {
                    failures = 0;
                    if round.is_idle() {
                        self.options.idle_interval
                    } else {
                        Duration::ZERO
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    metrics::failure(system, error.kind());
                    let pause = self.options.backoff(failures);
                    warn!(
                        error = %Chain(&error),
                        failures,
                        backoff_ms = pause.as_millis() as u64,
                        "relay round failed; backing off"
                    );
                    pause
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        info!(messaging.system = system, "relay stopped");
    }

    /// The end of the round under way at shutdown, within the grace.
    async fn finish(&self, round: impl Future<Output = Result<Round, Error>>) {
        match tokio::time::timeout(self.options.shutdown_grace, round).await {
            Ok(Ok(round)) => debug!(?round, "the last round ended"),
            Ok(Err(error)) => warn!(error = %Chain(&error), "the last round failed"),
            Err(_) => warn!(
                grace_ms = self.options.shutdown_grace.as_millis() as u64,
                "the last round did not end within the grace; its events are claimed again \
                 after their lease"
            ),
        }
    }
}

impl<S: Sink + 'static> Relay<S> {
    /// Runs the relay ([`run`](Self::run)) on a task of the current Tokio runtime until the
    /// returned handle stops it ([`RelayHandle::stop`]), or is dropped (which stops it the same
    /// way, without waiting for it).
    pub fn spawn(self) -> RelayHandle {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            self.run(async move {
                // Sent, or the handle dropped: either way, stop.
                let _ = stopped.await;
            })
            .await;
        });
        RelayHandle {
            stop: Some(stop),
            task,
        }
    }
}

/// A relay running on a task of its own ([`Relay::spawn`]).
#[derive(Debug)]
pub struct RelayHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the relay gracefully (see [`Relay::run`]: the round under way may finish, within
    /// [`RelayOptions::shutdown_grace`]) and waits until it has stopped. [`Error::Panicked`]
    /// if its task panicked.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_panic() => Err(Error::Panicked),
            Err(_) => Ok(()),
        }
    }

    /// Kills the relay at once, as a crash would, and waits until its task is gone: the claim
    /// under way is dropped unsettled, so its events are claimed (and delivered) again when
    /// their lease runs out.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether the relay's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

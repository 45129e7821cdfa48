//! The relay's metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): the application installs the recorder it likes, as for Stockroom's own metrics
//! (`stockroom_core::metrics`). Without the feature nothing is measured.
//!
//! | name | kind | unit | attributes | what it says |
//! |---|---|---|---|---|
//! | `stockroom.relay.delivered` | counter | events | `messaging.system` | events the broker confirmed (each time: an event delivered twice counts twice) |
//! | `stockroom.relay.failures` | counter | rounds | `messaging.system`, `error.type` (`sink`, `store`) | rounds that failed, each followed by a back-off |
//! | `stockroom.relay.backlog` | gauge | events | | committed events not delivered yet, as of the last read of the backlog |
//! | `stockroom.relay.oldest_pending_age` | gauge | seconds | | how long the oldest of them has waited (0 when none) |
//! | `stockroom.relay.purged` | counter | events | | delivered events the relay's purge deleted |
//!
//! The gauges come from [`Store::outbox_backlog`](stockroom_core::Store::outbox_backlog),
//! read every [`RelayOptions::backlog_interval`](crate::RelayOptions::backlog_interval) by a
//! running relay (or when [`Relay::backlog`](crate::Relay::backlog) is called). With several
//! relays on one store, each sets the same gauges to the same store-wide values.

/// `stockroom.relay.delivered`: a counter of events confirmed by the broker.
pub const DELIVERED: &str = "stockroom.relay.delivered";
/// `stockroom.relay.failures`: a counter of failed rounds, by the kind of error.
pub const FAILURES: &str = "stockroom.relay.failures";
/// `stockroom.relay.backlog`: a gauge of the events waiting in the outbox.
pub const BACKLOG: &str = "stockroom.relay.backlog";
/// `stockroom.relay.oldest_pending_age`: a gauge of the oldest waiting event's age, in seconds.
pub const OLDEST_PENDING_AGE: &str = "stockroom.relay.oldest_pending_age";
/// `stockroom.relay.purged`: a counter of delivered events purged.
pub const PURGED: &str = "stockroom.relay.purged";

/// Gives the installed recorder the unit and description of each of the relay's metrics. Call
/// it once after installing the recorder; without the `metrics` feature it does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::Unit;
        metrics::describe_counter!(
            DELIVERED,
            Unit::Count,
            "Outbox events confirmed by the broker"
        );
        metrics::describe_counter!(
            FAILURES,
            Unit::Count,
            "Relay rounds that failed, by kind of error"
        );
        metrics::describe_gauge!(
            BACKLOG,
            Unit::Count,
            "Committed outbox events not delivered yet"
        );
        metrics::describe_gauge!(
            OLDEST_PENDING_AGE,
            Unit::Seconds,
            "Age of the oldest undelivered outbox event"
        );
        metrics::describe_counter!(PURGED, Unit::Count, "Delivered outbox events purged");
    }
}

/// `confirmed` events delivered through `system`.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn delivered(system: &'static str, confirmed: usize) {
    #[cfg(feature = "metrics")]
    if confirmed > 0 {
        metrics::counter!(DELIVERED, "messaging.system" => system).increment(confirmed as u64);
    }
}

/// A round through `system` that failed with an error of `kind`.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn failure(system: &'static str, kind: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(FAILURES, "messaging.system" => system, "error.type" => kind).increment(1);
}

/// The backlog as last read.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn backlog(pending: u64, oldest_age: std::time::Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(BACKLOG).set(pending as f64);
        metrics::gauge!(OLDEST_PENDING_AGE).set(oldest_age.as_secs_f64());
    }
}

/// `count` delivered events purged.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn purged(count: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(PURGED).increment(count);
}

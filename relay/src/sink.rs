//! Where a relay delivers events: the [`Sink`] port, and what one delivery did.

use std::sync::Arc;

use async_trait::async_trait;
use stockroom_core::outbox::Event;

use crate::error::BoxError;

/// A broker, or anything else that takes events: what a [`Relay`](crate::Relay) delivers to.
///
/// [`deliver`](Sink::deliver) sends a batch of events **in order** and says how many of them,
/// from the first, the broker *confirmed* (stored, so that they survive the relay: a
/// JetStream `PublishAck`, a RabbitMQ publisher confirm, a channel that took it). It stops at
/// the first event that fails and returns the error with the count before it. The relay
/// acknowledges exactly that prefix to the store; the rest is claimed again later, so an event
/// may reach the broker more than once (the broker tells by its [`Event::id`]) but never out of
/// order within an aggregate, as long as the sink does not confirm an event after one that
/// failed.
///
/// A sink may pipeline (send many, then wait for their confirmations in order), as
/// [`NatsSink`](crate::NatsSink) and [`RabbitMqSink`](crate::RabbitMqSink) do: an event sent
/// after one that then fails may still have reached the broker, and reaches it again when
/// redelivered (see the crate's documentation on ordering).
#[async_trait]
pub trait Sink: Send + Sync {
    /// The messaging system, as spans and metrics name it (`messaging.system`): `nats`,
    /// `rabbitmq`, `channel`, …
    fn system(&self) -> &'static str;

    /// Delivers `events` in order; how many leading events were confirmed, and the error that
    /// stopped it, if one did. Never more than `events.len()` (the relay clamps a sink that
    /// says more).
    async fn deliver(&self, events: &[Event]) -> Delivery;
}

/// What a [`Sink::deliver`] did: how many leading events the broker confirmed, and the error
/// that stopped the delivery, if one did.
#[derive(Debug)]
#[must_use]
pub struct Delivery {
    confirmed: usize,
    failure: Option<BoxError>,
}

impl Delivery {
    /// All `events` events confirmed.
    pub fn complete(events: usize) -> Self {
        Self {
            confirmed: events,
            failure: None,
        }
    }

    /// The first `confirmed` events confirmed, then `error` on the next one.
    pub fn failed(confirmed: usize, error: impl Into<BoxError>) -> Self {
        Self {
            confirmed,
            failure: Some(error.into()),
        }
    }

    /// How many leading events the broker confirmed.
    pub fn confirmed(&self) -> usize {
        self.confirmed
    }

    /// The error that stopped the delivery, if one did.
    pub fn failure(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.failure.as_deref()
    }

    /// Whether every event was confirmed (no error stopped it).
    pub fn is_complete(&self) -> bool {
        self.failure.is_none()
    }

    /// The count and the error.
    pub fn into_parts(self) -> (usize, Option<BoxError>) {
        (self.confirmed, self.failure)
    }
}

#[async_trait]
impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn system(&self) -> &'static str {
        (**self).system()
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        (**self).deliver(events).await
    }
}

#[async_trait]
impl<S: Sink + ?Sized> Sink for Box<S> {
    fn system(&self) -> &'static str {
        (**self).system()
    }
    async fn deliver(&self, events: &[Event]) -> Delivery {
        (**self).deliver(events).await
    }
}

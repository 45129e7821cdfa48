//! [`NatsSink`]: events to NATS JetStream (feature `nats`).

use std::collections::VecDeque;

use async_nats::jetstream;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use stockroom_core::outbox::Event;
use tracing::trace;

use crate::sink::{Delivery, Sink};

/// The header that carries the event's aggregate.
pub const AGGREGATE_HEADER: &str = "Stockroom-Aggregate";
/// The header that carries the event's outbox sequence (its place in the outbox: within one
/// aggregate, commit order).
pub const SEQUENCE_HEADER: &str = "Stockroom-Sequence";
/// The header that carries when the event was written (RFC 3339, microseconds, UTC).
pub const CREATED_AT_HEADER: &str = "Stockroom-Created-At";

/// Publishes events to NATS JetStream, each confirmed by the stream's `PublishAck`.
///
/// - The subject is the event's [`subject`](Event::subject), after a prefix if one is set
///   (`with_prefix("acme")`: `orders.placed` goes to `acme.orders.placed`). A stream must
///   capture the subjects, or the publish fails (JetStream answers "no responders") and the
///   events wait in the outbox.
/// - `Nats-Msg-Id` is the event's id: JetStream drops a message whose id it saw within the
///   stream's duplicate window (2 minutes by default), so an event delivered again after a
///   relay died before acknowledging it is stored once. Keep the duplicate window longer
///   than the relay's lease ([`ClaimOptions::lease`]) plus its longest back-off.
/// - The headers [`AGGREGATE_HEADER`], [`SEQUENCE_HEADER`] and [`CREATED_AT_HEADER`] carry the
///   aggregate, the outbox sequence and the time the event was written.
///
/// Publishes are pipelined: up to [`with_max_in_flight`](Self::with_max_in_flight) (default
/// 256) are sent before the first acknowledgement is awaited, and acknowledgements are taken
/// in order. A publish that fails stops the delivery; those sent after it may have been stored
/// and are stored again (or dropped as duplicates) when redelivered. `with_max_in_flight(1)`
/// publishes one event at a time.
///
/// How long an acknowledgement may take is the JetStream context's
/// ([`ContextBuilder::timeout`](async_nats::jetstream::ContextBuilder::timeout), 5 s by
/// default); the client reconnects by itself after the server went away.
///
/// [`ClaimOptions::lease`]: stockroom_core::outbox::ClaimOptions::lease
#[derive(Debug, Clone)]
pub struct NatsSink {
    jetstream: jetstream::Context,
    prefix: Option<String>,
    max_in_flight: usize,
}

impl NatsSink {
    /// A sink that publishes through `jetstream`.
    pub fn new(jetstream: jetstream::Context) -> Self {
        Self {
            jetstream,
            prefix: None,
            max_in_flight: 256,
        }
    }

    /// Publishes to `prefix.<subject>` (a prefix of NATS subject tokens, no wildcard).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let prefix = prefix.trim_end_matches('.');
        self.prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
        self
    }

    /// How many publishes may await their acknowledgement at once (at least 1).
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// The JetStream context it publishes through.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The subject `event` is published to.
    pub fn subject_of(&self, event: &Event) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}.{}", event.subject),
            None => event.subject.clone(),
        }
    }

    /// The message of `event`: its payload, its id as `Nats-Msg-Id`, and the headers.
    pub fn message(event: &Event) -> PublishMessage {
        PublishMessage::build()
            .payload(event.payload.clone().into())
            .message_id(event.id.to_string())
            .header(AGGREGATE_HEADER, event.aggregate.as_str())
            .header(SEQUENCE_HEADER, event.sequence.to_string())
            .header(
                CREATED_AT_HEADER,
                event
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )
    }
}

/// Awaits the oldest acknowledgement in flight: counted in `confirmed` if the stream stored
/// the message (or had it already: a duplicate).
async fn take_oldest(
    in_flight: &mut VecDeque<PublishAckFuture>,
    confirmed: &mut usize,
) -> Result<(), PublishError> {
    let Some(ack) = in_flight.pop_front() else {
        return Ok(());
    };
    let ack = ack.await?;
    trace!(
        stream = %ack.stream,
        sequence = ack.sequence,
        duplicate = ack.duplicate,
        "acknowledged"
    );
    *confirmed += 1;
    Ok(())
}

#[async_trait]
impl Sink for NatsSink {
    fn system(&self) -> &'static str {
        "nats"
    }

    async fn deliver(&self, events: &[Event]) -> Delivery {
        let mut in_flight = VecDeque::with_capacity(self.max_in_flight.min(events.len()));
        let mut confirmed = 0;
        for event in events {
            if in_flight.len() >= self.max_in_flight {
                if let Err(error) = take_oldest(&mut in_flight, &mut confirmed).await {
                    return Delivery::failed(confirmed, error);
                }
            }
            let sent = self
                .jetstream
                .send_publish(self.subject_of(event), Self::message(event))
                .await;
            match sent {
                Ok(ack) => in_flight.push_back(ack),
                Err(error) => {
                    // Those sent before it may still be confirmed; the first failure is the
                    // one reported.
                    while !in_flight.is_empty() {
                        if let Err(earlier) = take_oldest(&mut in_flight, &mut confirmed).await {
                            return Delivery::failed(confirmed, earlier);
                        }
                    }
                    return Delivery::failed(confirmed, error);
                }
            }
        }
        while !in_flight.is_empty() {
            if let Err(error) = take_oldest(&mut in_flight, &mut confirmed).await {
                return Delivery::failed(confirmed, error);
            }
        }
        Delivery::complete(confirmed)
    }
}

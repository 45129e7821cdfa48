//! [`RabbitMqSink`]: events to RabbitMQ with publisher confirms (feature `rabbitmq`).

use std::collections::VecDeque;
use std::fmt;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};
use stockroom_core::outbox::Event;
use tokio::sync::Mutex;
use tracing::{debug, trace};

use crate::sink::{Delivery, Sink};

/// The header that carries the event's aggregate (a long string).
pub const AGGREGATE_HEADER: &str = "stockroom-aggregate";
/// The header that carries the event's outbox sequence (a signed 64-bit integer).
pub const SEQUENCE_HEADER: &str = "stockroom-sequence";
/// The header that carries when the event was written (RFC 3339, microseconds, UTC).
pub const CREATED_AT_HEADER: &str = "stockroom-created-at";

/// Publishes events to a RabbitMQ exchange, each confirmed by the broker (publisher confirms).
///
/// - The exchange is [`with_exchange`](Self::with_exchange)'s (default: the default exchange
///   `""`, which routes to the queue named by the routing key); the routing key is the
///   event's [`subject`](Event::subject). The application declares the exchange, its queues
///   and bindings.
/// - Messages are persistent (`delivery-mode` 2) and carry the event's id as `message-id`,
///   its creation time as `timestamp` (seconds), and the headers [`AGGREGATE_HEADER`],
///   [`SEQUENCE_HEADER`] and [`CREATED_AT_HEADER`]. RabbitMQ keeps no duplicate window: an
///   event delivered again (its relay died before acknowledging it) reaches the queue twice,
///   with the same `message-id`, and the consumer tells the second one by it.
/// - A message the exchange routes to no queue is confirmed and dropped by RabbitMQ, as for
///   any publisher; [`with_mandatory(true)`](Self::with_mandatory) makes it a failure instead
///   (the event waits in the outbox, and so do the events after it in the claim: until a
///   queue is bound for it, its lane does not move).
///
/// The sink connects on its first delivery (or [`connect`](Self::connect)) and connects again
/// on the next delivery after the connection or its channel failed. Publishes are pipelined:
/// up to [`with_max_in_flight`](Self::with_max_in_flight) (default 256) before the first
/// confirm is awaited, confirms taken in order; a publish that fails stops the delivery, and
/// those sent after it may reach the queue again when redelivered.
///
/// Without TLS: `amqps://` URIs need one of lapin's TLS features, which the application turns
/// on in its own `Cargo.toml` (`lapin = { version = "4", features = ["rustls"] }`).
pub struct RabbitMqSink {
    uri: String,
    properties: ConnectionProperties,
    exchange: ShortString,
    mandatory: bool,
    max_in_flight: usize,
    link: Mutex<Option<Link>>,
}

/// A connection and the channel it publishes on, in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn is_up(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl fmt::Debug for RabbitMqSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqSink")
            .field("uri", &redacted(&self.uri))
            .field("exchange", &self.exchange.as_str())
            .field("mandatory", &self.mandatory)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// `uri` without its password.
fn redacted(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &uri[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &uri[..scheme + 3],
                    &credentials[..colon],
                    &uri[at..]
                ),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

/// Why RabbitMQ did not take a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitMqError {
    /// The connection, the channel or a publish failed.
    #[error("RabbitMQ")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (a `basic.nack`).
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    /// The broker returned a mandatory message that no queue took.
    #[error("RabbitMQ returned the message: {reply_code} {reply_text}")]
    Returned {
        /// The AMQP reply code (312 `NO_ROUTE`).
        reply_code: u16,
        /// The broker's text.
        reply_text: String,
    },
    /// The channel is not in confirm mode.
    #[error("the channel does not confirm publishes")]
    NotConfirmed,
}

impl RabbitMqSink {
    /// A sink to the broker at `uri` (`amqp://user:password@host:port/vhost`, the vhost
    /// URL-encoded: `%2f` for `/`).
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            properties: ConnectionProperties::default()
                .with_connection_name("stockroom-relay".into()),
            exchange: ShortString::from(""),
            mandatory: false,
            max_in_flight: 256,
            link: Mutex::new(None),
        }
    }

    /// Publishes to `exchange` (which the application declares).
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = ShortString::from(exchange.into());
        self
    }

    /// Whether a message that no queue takes is a failure (default: no, RabbitMQ drops it).
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// How many publishes may await their confirm at once (at least 1).
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// The connection's properties (its name, authentication, …).
    pub fn with_properties(mut self, properties: ConnectionProperties) -> Self {
        self.properties = properties;
        self
    }

    /// Connects now, if it is not connected: to learn at start-up that the broker answers.
    pub async fn connect(&self) -> Result<(), RabbitMqError> {
        let mut link = self.link.lock().await;
        self.channel(&mut link).await.map(drop)
    }

    /// Closes the connection, if open (the next delivery opens another).
    pub async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            let _ = link
                .connection
                .close(200, "stockroom relay closing".into())
                .await;
        }
    }

    /// The channel of a link that is up, connecting first if there is none.
    async fn channel<'l>(&self, link: &'l mut Option<Link>) -> Result<&'l Channel, RabbitMqError> {
        if link.as_ref().is_some_and(|l| !l.is_up()) {
            debug!("the RabbitMQ connection or channel is down; connecting again");
            *link = None;
        }
        if link.is_none() {
            let connection = Connection::connect(&self.uri, self.properties.clone()).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            *link = Some(Link {
                connection,
                channel,
            });
        }
        Ok(&link.as_ref().expect("connected above").channel)
    }

    /// The properties of `event`'s message.
    pub fn properties(event: &Event) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            AGGREGATE_HEADER.into(),
            AMQPValue::LongString(LongString::from(event.aggregate.as_str())),
        );
        headers.insert(
            SEQUENCE_HEADER.into(),
            AMQPValue::LongLongInt(event.sequence),
        );
        headers.insert(
            CREATED_AT_HEADER.into(),
            AMQPValue::LongString(LongString::from(
                event
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )),
        );
        BasicProperties::default()
            .with_message_id(event.id.to_string().into())
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(event.created_at.timestamp()).unwrap_or(0))
            .with_headers(headers)
    }

    async fn publish_all(
        &self,
        channel: &Channel,
        events: &[Event],
        confirmed: &mut usize,
    ) -> Result<(), RabbitMqError> {
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            ..BasicPublishOptions::default()
        };
        let mut in_flight = VecDeque::with_capacity(self.max_in_flight.min(events.len()));
        for event in events {
            if in_flight.len() >= self.max_in_flight {
                take_oldest(&mut in_flight, confirmed).await?;
            }
            let sent = channel
                .basic_publish(
                    self.exchange.clone(),
                    event.subject.as_str().into(),
                    options,
                    &event.payload,
                    Self::properties(event),
                )
                .await;
            match sent {
                Ok(confirm) => in_flight.push_back(confirm),
                Err(error) => {
                    // Those sent before it may still be confirmed; the first failure is the
                    // one reported.
                    while !in_flight.is_empty() {
                        take_oldest(&mut in_flight, confirmed).await?;
                    }
                    return Err(error.into());
                }
            }
        }
        while !in_flight.is_empty() {
            take_oldest(&mut in_flight, confirmed).await?;
        }
        Ok(())
    }
}

/// Awaits the oldest confirm in flight: counted in `confirmed` if the broker took the message.
async fn take_oldest(
    in_flight: &mut VecDeque<PublisherConfirm>,
    confirmed: &mut usize,
) -> Result<(), RabbitMqError> {
    let Some(confirm) = in_flight.pop_front() else {
        return Ok(());
    };
    match confirm.await? {
        Confirmation::Ack(None) => {}
        Confirmation::Ack(Some(returned)) => {
            return Err(RabbitMqError::Returned {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            })
        }
        Confirmation::Nack(_) => return Err(RabbitMqError::Nacked),
        Confirmation::NotRequested => return Err(RabbitMqError::NotConfirmed),
    }
    trace!("confirmed");
    *confirmed += 1;
    Ok(())
}

#[async_trait]
impl Sink for RabbitMqSink {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    async fn deliver(&self, events: &[Event]) -> Delivery {
        if events.is_empty() {
            return Delivery::complete(0);
        }
        let mut link = self.link.lock().await;
        let channel = match self.channel(&mut link).await {
            Ok(channel) => channel.clone(),
            Err(error) => {
                *link = None;
                return Delivery::failed(0, error);
            }
        };
        let mut confirmed = 0;
        match self.publish_all(&channel, events, &mut confirmed).await {
            Ok(()) => Delivery::complete(confirmed),
            Err(error) => {
                if link.as_ref().is_some_and(|l| !l.is_up()) {
                    *link = None;
                }
                Delivery::failed(confirmed, error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn the_password_is_hidden() {
        assert_eq!(
            redacted("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redacted("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(redacted("amqp://user@host/v"), "amqp://user@host/v");
    }
}

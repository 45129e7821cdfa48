//! Stockroom's outbox relay: claims the events that units of work committed to a store's
//! outbox ([`stockroom_core::outbox`]) and delivers them to a broker.
//!
//! - A [`Relay`] runs rounds over an `Arc<dyn Store>`: [`Store::claim_events`] leases up to
//!   [`ClaimOptions::max_lanes`] lanes and returns their undelivered events in sequence order;
//!   the [`Sink`] delivers them in order and says how many, from the first, the broker
//!   confirmed; the relay acknowledges that prefix ([`Claimed::acknowledge`]), which marks
//!   those events delivered and gives the lanes back. The rest are claimed again.
//! - [`Relay::run`] repeats that until a shutdown future completes, waits
//!   [`RelayOptions::idle_interval`] when there was nothing to claim, backs off exponentially
//!   with jitter on errors, reads the backlog for its gauges and purges delivered events when
//!   asked to. [`Relay::spawn`] runs it on a task and returns a [`RelayHandle`] that stops it.
//! - Sinks: [`ChannelSink`] (a Tokio channel, in process), [`NatsSink`] (NATS JetStream,
//!   feature `nats`), [`RabbitMqSink`] (RabbitMQ with publisher confirms, feature
//!   `rabbitmq`), or an application's own [`Sink`].
//!
//! # Guarantees
//!
//! - **At least once.** An event leaves the outbox only after the broker confirmed it. If the
//!   relay dies after the broker confirmed events but before the store marked them delivered
//!   (or the acknowledgement is lost), their lanes stay leased until
//!   [`ClaimOptions::lease`] runs out, and then a relay delivers them again, with the same
//!   [`Event::id`](stockroom_core::outbox::Event::id) as message id: JetStream drops the
//!   second copy within its duplicate window; a RabbitMQ consumer tells it by its
//!   `message-id`.
//! - **Each aggregate in order.** A lane is held by one claim at a time, so one aggregate's
//!   events are never delivered by two relays at once, and a claim's events come in sequence
//!   (commit) order. A sink stops at the first failure and only the prefix before it is
//!   acknowledged, so an event is never confirmed after an earlier one of its aggregate that
//!   failed. One caveat of pipelining sinks: an event *published* after one that then fails
//!   may still have reached the broker; when the batch is delivered again, the failed event
//!   arrives after it (JetStream drops the later one's second copy as a duplicate). A sink
//!   with one publish in flight at a time (`with_max_in_flight(1)`) has no such window, at
//!   the cost of one round trip per event.
//! - **Nothing of a rolled-back unit of work.** Events are written in the unit of work's
//!   transaction: a rollback takes them with it, and a relay only ever sees committed events.
//!
//! The lease must outlast a round (a delivery of [`ClaimOptions::max_events`] events and the
//! acknowledgement): a round that takes longer lets another relay claim the same lanes and
//! deliver the same events again (still in order per aggregate, but twice).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use stockroom_core::outbox::{ClaimOptions, NewEvent};
//! use stockroom_core::Store;
//! use stockroom_relay::{ChannelSink, Relay, RelayOptions};
//!
//! # async fn example(store: Arc<dyn Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let mut uow = store.begin().await?;
//! uow.publish(NewEvent::new("orders.placed", "order-17", br#"{"total":12}"#.to_vec())?)
//!     .await?;
//! uow.commit().await?;
//!
//! let (sink, mut events) = ChannelSink::bounded(1024);
//! let options = RelayOptions::default()
//!     .with_purge_delivered_after(Some(Duration::from_secs(24 * 3600)));
//! let relay = Relay::new(store, sink, options)?.spawn();
//! let event = events.recv().await.expect("the relay delivers it");
//! assert_eq!(event.subject, "orders.placed");
//! relay.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Store::claim_events`]: stockroom_core::Store::claim_events
//! [`ClaimOptions::max_lanes`]: stockroom_core::outbox::ClaimOptions::max_lanes
//! [`ClaimOptions::max_events`]: stockroom_core::outbox::ClaimOptions::max_events
//! [`ClaimOptions::lease`]: stockroom_core::outbox::ClaimOptions::lease
//! [`Claimed::acknowledge`]: stockroom_core::outbox::Claimed::acknowledge

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod error;
pub mod metrics;
mod options;
mod relay;
mod sink;
pub mod sinks;

pub use error::{BoxError, Error};
pub use options::RelayOptions;
pub use relay::{Relay, RelayHandle, Round};
pub use sink::{Delivery, Sink};
pub use sinks::channel::{ChannelClosed, ChannelSink};
#[cfg(feature = "nats")]
pub use sinks::nats::NatsSink;
#[cfg(feature = "rabbitmq")]
pub use sinks::rabbitmq::{RabbitMqError, RabbitMqSink};

/// The async-nats crate this relay's [`NatsSink`] is built on (feature `nats`).
#[cfg(feature = "nats")]
pub use async_nats;
/// The lapin crate this relay's [`RabbitMqSink`] is built on (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
pub use lapin;

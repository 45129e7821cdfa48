//! [`ChannelSink`]: events to a Tokio channel, in process.

use async_trait::async_trait;
use stockroom_core::outbox::Event;
use tokio::sync::mpsc;

use crate::sink::{Delivery, Sink};

/// Delivers events to a Tokio [`mpsc`] channel in the same process: the sink of an application
/// that handles its events itself (and of tests). An event is confirmed once the channel took
/// it; the receiver's handling of it is the application's affair (a crash after the channel
/// took it loses it: use a broker for more).
///
/// A bounded channel that is full makes the delivery wait for room, holding the round's
/// lease: give the channel room for a claim ([`ClaimOptions::max_events`]) or keep the lease
/// long enough. A closed channel (its receiver dropped) fails the delivery.
///
/// [`ClaimOptions::max_events`]: stockroom_core::outbox::ClaimOptions::max_events
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use stockroom_relay::{ChannelSink, Sink};
///
/// let (sink, mut events) = ChannelSink::bounded(1024);
/// assert_eq!(sink.deliver(&[]).await.confirmed(), 0);
/// drop(sink);
/// assert!(events.recv().await.is_none());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChannelSink {
    sender: Sender,
}

#[derive(Debug, Clone)]
enum Sender {
    Bounded(mpsc::Sender<Event>),
    Unbounded(mpsc::UnboundedSender<Event>),
}

/// The receiver of a channel that [`ChannelSink`] closed: the receiver dropped.
#[derive(Debug, thiserror::Error)]
#[error("the channel is closed: its receiver was dropped")]
pub struct ChannelClosed;

impl ChannelSink {
    /// A sink that sends to `sender`.
    pub fn new(sender: mpsc::Sender<Event>) -> Self {
        Self {
            sender: Sender::Bounded(sender),
        }
    }

    /// A sink that sends to an unbounded channel.
    pub fn unbounded_sender(sender: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            sender: Sender::Unbounded(sender),
        }
    }

    /// A channel of `capacity` events (at least 1) and a sink that sends to it.
    pub fn bounded(capacity: usize) -> (Self, mpsc::Receiver<Event>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self::new(sender), receiver)
    }

    /// An unbounded channel and a sink that sends to it.
    pub fn unbounded() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self::unbounded_sender(sender), receiver)
    }
}

#[async_trait]
impl Sink for ChannelSink {
    fn system(&self) -> &'static str {
        "channel"
    }

    async fn deliver(&self, events: &[Event]) -> Delivery {
        for (sent, event) in events.iter().enumerate() {
            let taken = match &self.sender {
                Sender::Bounded(sender) => sender.send(event.clone()).await.is_ok(),
                Sender::Unbounded(sender) => sender.send(event.clone()).is_ok(),
            };
            if !taken {
                return Delivery::failed(sent, ChannelClosed);
            }
        }
        Delivery::complete(events.len())
    }
}

//! The sinks: an in-process channel, NATS JetStream (feature `nats`), RabbitMQ (feature
//! `rabbitmq`).

pub mod channel;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

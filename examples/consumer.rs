//! Reads the events the service example's relay publishes to NATS JetStream, and prints each.
//!
//! ```text
//! STOCKROOM_NATS_URL=127.0.0.1:4222 cargo run --example service --features axum,metrics,nats   # one shell
//! cargo run --example consumer --features nats                                                  # another
//! ```
//!
//! It binds a durable pull consumer (`NATS_CONSUMER`, default `stockroom-consumer`) on the
//! service's stream (`NATS_STREAM`, default `STOCKROOM`, as `STOCKROOM_NATS_STREAM` names it for
//! the service) at `NATS_URL` (default `127.0.0.1:4222`), and for each message prints its
//! subject, its aggregate (the relay's `Stockroom-Aggregate` header), its `Nats-Msg-Id` (the
//! outbox event's id) and its payload (the product, or the transfer's ledger row, as JSON), then
//! acknowledges it. Delivery is at least once: a message id seen before in this run (the relay
//! published it again after the stream's duplicate window, or JetStream redelivered a message
//! whose acknowledgement was lost) is said so, and is where a real consumer skips what it has
//! done already. Ctrl-C stops it; the durable consumer keeps its place, so the next run goes on
//! after the last message acknowledged.

use std::collections::HashSet;
use std::process::ExitCode;

use futures_util::StreamExt;
use stockroom::relay::async_nats::jetstream::consumer::{
    pull, AckPolicy, DeliverPolicy, PullConsumer,
};
use stockroom::relay::async_nats::jetstream::{self, Message};
use stockroom::relay::async_nats::ConnectOptions;
use stockroom::relay::sinks::nats::AGGREGATE_HEADER;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match consume().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stockroom consumer: {error}");
            ExitCode::FAILURE
        }
    }
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

async fn consume() -> Result<(), BoxError> {
    let url = setting("NATS_URL", "127.0.0.1:4222");
    let stream_name = setting("NATS_STREAM", "STOCKROOM");
    let durable = setting("NATS_CONSUMER", "stockroom-consumer");

    let client = ConnectOptions::new()
        .name("stockroom-consumer")
        .connect(url.as_str())
        .await
        .map_err(|error| format!("cannot connect to NATS at {url}: {error}"))?;
    let jetstream = jetstream::new(client);
    let stream = jetstream.get_stream(&stream_name).await.map_err(|error| {
        format!(
            "no stream {stream_name} at {url} ({error}): start the service with \
             STOCKROOM_NATS_URL first, it makes the stream"
        )
    })?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                description: Some("examples/consumer.rs".to_owned()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .map_err(|error| format!("cannot bind the consumer {durable} on {stream_name}: {error}"))?;
    println!("reading {stream_name} as {durable} at {url} (Ctrl-C stops)");

    let mut messages = consumer.messages().await?;
    let mut seen = HashSet::new();
    loop {
        let message = tokio::select! {
            next = messages.next() => match next {
                Some(message) => message?,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        print_event(&message, &mut seen)?;
        message.ack().await?;
    }
    println!("stopped after {} distinct events", seen.len());
    Ok(())
}

/// Prints `message`, and says so when its id is one of `seen`.
fn print_event(message: &Message, seen: &mut HashSet<String>) -> Result<(), BoxError> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map_or_else(|| "-".to_owned(), |value| value.as_str().to_owned())
    };
    let id = header("Nats-Msg-Id");
    let info = message.info()?;
    println!(
        "#{} {}  aggregate={}  Nats-Msg-Id={}  {}",
        info.stream_sequence,
        message.subject,
        header(AGGREGATE_HEADER),
        id,
        String::from_utf8_lossy(&message.payload)
    );
    if !seen.insert(id.clone()) {
        println!(
            "   repeated: message id {id} was seen before (delivery {} of this message); \
             already handled, a real consumer skips it",
            info.delivered
        );
    } else if info.delivered > 1 {
        println!(
            "   redelivered by JetStream (delivery {}): its acknowledgement was lost or never sent",
            info.delivered
        );
    }
    Ok(())
}

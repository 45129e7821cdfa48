//! The service's events: Stockroom writes its own events for product writes and transfers
//! (`stockroom.product.created`, `.updated`, `.deleted`, `.restored`, `.purged`,
//! `stockroom.stock.moved`) in the unit of work of each write, and the service runs a relay
//! (`stockroom::relay`) that delivers them once committed:
//!
//! - with `STOCKROOM_NATS_URL` (and the facade's `nats` feature), to NATS JetStream: at startup
//!   the service makes the stream `STOCKROOM_NATS_STREAM` on `stockroom.>` with a 2-minute
//!   duplicate window, or checks the one there; each message carries the event's id as
//!   `Nats-Msg-Id` (`examples/consumer.rs` reads them);
//! - else to an in-process channel, whose events the service logs at info (subject, aggregate,
//!   id): the consumer is the log.
//!
//! Either way the relay purges the events delivered more than `STOCKROOM_OUTBOX_RETENTION_MS`
//! ago, and `GET /outbox` answers the backlog and the last events the relay delivered. On
//! shutdown the relay stops after the HTTP requests have drained and before the store closes
//! (see `app::run`): the round under way finishes, and what is still pending waits in the
//! outbox for the next start.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use stockroom::outbox::Event;
use stockroom::relay::{ChannelSink, Delivery, Relay, RelayHandle, RelayOptions, Sink};
use stockroom::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::settings::OutboxSettings;
use crate::startup::StartupError;

/// The subjects of Stockroom's own events, which the service's stream captures.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub const SUBJECTS: &str = "stockroom.>";
/// The stream's duplicate window: longer than the relay's lease (30 s) plus its longest
/// back-off (30 s), so that JetStream drops an event delivered again after a relay died.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How many delivered events `GET /outbox` lists.
pub const RECENT: usize = 50;
/// Room in the in-process channel: more than a claim's events (256), so a round never waits
/// for the logger.
const CHANNEL_CAPACITY: usize = 1024;

/// The relay of the service, running until [`stop`](Self::stop).
#[derive(Debug)]
pub struct Outbox {
    relay: RelayHandle,
    /// The task that logs the in-process channel's events (none with NATS).
    logger: Option<JoinHandle<()>>,
    deliveries: Arc<Deliveries>,
}

impl Outbox {
    /// The relay `settings` ask for: to NATS JetStream when `nats_url` is set (connected, and its
    /// stream made or checked, within `connect_timeout`), else to the in-process channel.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &OutboxSettings,
        connect_timeout: Duration,
    ) -> Result<Self, StartupError> {
        let options = relay_options(settings);
        match &settings.nats_url {
            None => Self::in_process(store, options),
            #[cfg(feature = "nats")]
            Some(url) => {
                Self::to_nats(store, options, url, &settings.nats_stream, connect_timeout).await
            }
            #[cfg(not(feature = "nats"))]
            Some(_) => {
                let _ = connect_timeout;
                Err(StartupError::Setting {
                    name: "STOCKROOM_NATS_URL",
                    problem: "is set, but the service was built without the `nats` feature: \
                              run it with `--features axum,metrics,nats`"
                        .to_owned(),
                })
            }
        }
    }

    /// A relay to an in-process channel, and the task that logs what arrives there.
    pub fn in_process(store: Arc<dyn Store>, options: RelayOptions) -> Result<Self, StartupError> {
        let (sink, events) = ChannelSink::bounded(CHANNEL_CAPACITY);
        let mut outbox = Self::spawn(store, sink, options)?;
        outbox.logger = Some(tokio::spawn(log_events(events)));
        tracing::info!("the outbox relay delivers to the log (set STOCKROOM_NATS_URL for NATS)");
        Ok(outbox)
    }

    /// A relay to NATS JetStream at `url`, into the stream `stream` (made if missing).
    #[cfg(feature = "nats")]
    async fn to_nats(
        store: Arc<dyn Store>,
        options: RelayOptions,
        url: &str,
        stream: &str,
        connect_timeout: Duration,
    ) -> Result<Self, StartupError> {
        let shown = redacted(url);
        let failed = |problem: String| StartupError::Broker {
            url: shown.clone(),
            problem,
        };
        let jetstream = tokio::time::timeout(connect_timeout, nats::jetstream(url, stream))
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer within {} ms (STOCKROOM_CONNECT_TIMEOUT_MS)",
                    connect_timeout.as_millis()
                ))
            })?
            .map_err(failed)?;
        let sink = stockroom::relay::NatsSink::new(jetstream);
        let outbox = Self::spawn(store, sink, options)?;
        tracing::info!(url = %shown, stream, "the outbox relay delivers to NATS JetStream");
        Ok(outbox)
    }

    fn spawn<S: Sink + 'static>(
        store: Arc<dyn Store>,
        sink: S,
        options: RelayOptions,
    ) -> Result<Self, StartupError> {
        let deliveries = Arc::new(Deliveries::new(sink.system()));
        let sink = Tracked {
            inner: sink,
            deliveries: Arc::clone(&deliveries),
        };
        let relay = Relay::new(store, sink, options)
            .map_err(StartupError::Relay)?
            .spawn();
        Ok(Self {
            relay,
            logger: None,
            deliveries,
        })
    }

    /// What the relay delivered, as `GET /outbox` shows it.
    pub fn deliveries(&self) -> Arc<Deliveries> {
        Arc::clone(&self.deliveries)
    }

    /// Stops the relay gracefully (its round under way finishes, within the relay's grace) and
    /// waits for it, and for the logger to log what the channel still holds.
    pub async fn stop(self) {
        if let Err(error) = self.relay.stop().await {
            tracing::error!(%error, "the outbox relay ended badly");
        }
        // The relay's end dropped the channel's sender: the logger ends once it is empty.
        if let Some(logger) = self.logger {
            let _ = logger.await;
        }
        tracing::info!("outbox relay stopped");
    }
}

/// The relay's options: the library's defaults, with the purge of delivered events.
pub fn relay_options(settings: &OutboxSettings) -> RelayOptions {
    RelayOptions::default().with_purge_delivered_after(Some(settings.retention))
}

/// Logs each event of the in-process channel at info, until the relay drops its sender.
async fn log_events(mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        tracing::info!(
            subject = %event.subject,
            aggregate = %event.aggregate,
            id = %event.id,
            sequence = event.sequence,
            "event delivered"
        );
    }
}

/// `url` with its credentials hidden: the password of `user:password@`, or a token (`token@`).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
fn redacted(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => format!("{}***{}", &url[..start], &url[at..]),
    }
}

// ---------------------------------------------------------------------------------------------
// What the relay delivered

/// What the service's relay delivered since it started: `GET /outbox` shows it.
#[derive(Debug)]
pub struct Deliveries {
    /// The sink's messaging system (`channel`, `nats`).
    system: &'static str,
    /// Whether the relay's task runs: cleared when the relay (and its sink) is dropped, whether
    /// it stopped or its task died.
    running: AtomicBool,
    delivered: AtomicU64,
    recent: Mutex<VecDeque<Delivered>>,
}

/// One event the relay delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub subject: String,
    pub aggregate: String,
    pub id: String,
    pub sequence: i64,
}

/// The relay's side of `GET /outbox`.
#[derive(Debug, Clone, Serialize)]
pub struct RelayView {
    /// Where it delivers: `channel` (the log) or `nats`.
    pub sink: &'static str,
    pub running: bool,
    /// Events the broker confirmed since the service started.
    pub delivered: u64,
    /// The last ones, oldest first (at most [`RECENT`]).
    pub recent: Vec<Delivered>,
}

impl Deliveries {
    fn new(system: &'static str) -> Self {
        Self {
            system,
            running: AtomicBool::new(true),
            delivered: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }

    /// Whether the relay still runs.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub fn view(&self) -> RelayView {
        RelayView {
            sink: self.system,
            running: self.is_running(),
            delivered: self.delivered.load(Ordering::SeqCst),
            recent: self
                .recent
                .lock()
                .expect("no panic holds it")
                .iter()
                .cloned()
                .collect(),
        }
    }

    fn record(&self, events: &[Event]) {
        let mut recent = self.recent.lock().expect("no panic holds it");
        for event in events {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Delivered {
                subject: event.subject.clone(),
                aggregate: event.aggregate.clone(),
                id: event.id.to_string(),
                sequence: event.sequence,
            });
        }
        self.delivered
            .fetch_add(events.len() as u64, Ordering::SeqCst);
    }
}

/// A sink that notes, in [`Deliveries`], the events its inner sink confirmed.
struct Tracked<S> {
    inner: S,
    deliveries: Arc<Deliveries>,
}

#[async_trait]
impl<S: Sink> Sink for Tracked<S> {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    async fn deliver(&self, events: &[Event]) -> Delivery {
        let delivery = self.inner.deliver(events).await;
        let confirmed = delivery.confirmed().min(events.len());
        self.deliveries.record(&events[..confirmed]);
        delivery
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        self.deliveries.running.store(false, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream

#[cfg(feature = "nats")]
mod nats {
    use stockroom::relay::async_nats::jetstream::{self, stream};
    use stockroom::relay::async_nats::ConnectOptions;

    use super::{DUPLICATE_WINDOW, SUBJECTS};

    /// A JetStream context on the server at `url`, with the stream `name` on [`SUBJECTS`]:
    /// made if missing; if there, it must capture the subjects (or every message would fail),
    /// and a duplicate window shorter than [`DUPLICATE_WINDOW`] is warned about.
    pub async fn jetstream(url: &str, name: &str) -> Result<jetstream::Context, String> {
        let client = ConnectOptions::new()
            .name("stockroom-service")
            .connect(url)
            .await
            .map_err(|error| error.to_string())?;
        let jetstream = jetstream::new(client);
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let stream = jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| format!("the stream {name}: {error}"))?;
        let info = stream.cached_info();
        let subjects = &info.config.subjects;
        if !subjects.iter().any(|s| s == SUBJECTS || s == ">") {
            return Err(format!(
                "the stream {name} exists on {subjects:?}, not on {SUBJECTS}: give \
                 STOCKROOM_NATS_STREAM another name, or add {SUBJECTS} to it"
            ));
        }
        if info.config.duplicate_window < DUPLICATE_WINDOW {
            tracing::warn!(
                stream = name,
                duplicate_window_ms = info.config.duplicate_window.as_millis() as u64,
                "the stream's duplicate window is shorter than 2 minutes: an event delivered \
                 again after a relay died may be stored twice"
            );
        }
        tracing::info!(
            stream = name,
            messages = info.state.messages,
            "JetStream stream ready"
        );
        Ok(jetstream)
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_nats_password_is_hidden() {
        assert_eq!(
            redacted("nats://app:secret@127.0.0.1:4222"),
            "nats://app:***@127.0.0.1:4222"
        );
        assert_eq!(redacted("nats://s3cr3t@host:4222"), "nats://***@host:4222");
        assert_eq!(redacted("127.0.0.1:4222"), "127.0.0.1:4222");
    }
}

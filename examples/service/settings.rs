//! The service's settings, from the environment: where it listens, which store it uses, and the
//! limits that keep slow, idle or too many clients (and a stuck database row) from holding it.
//!
//! | setting | variable | default |
//! |---|---|---|
//! | listen address | `STOCKROOM_ADDR` | `127.0.0.1:3000` |
//! | store | `DATABASE_URL` and the other variables of `StoreConfig::from_env` | `sqlite://stockroom-service.db` |
//! | time to connect the store at startup | `STOCKROOM_CONNECT_TIMEOUT_MS` | 5 000 |
//! | time to send the request headers; also how long an idle keep-alive connection stays open | `STOCKROOM_HEADER_READ_TIMEOUT_MS` | 10 000 |
//! | time to send the request body | `STOCKROOM_BODY_READ_TIMEOUT_MS` | 10 000 |
//! | time to answer a request, waiting for a slot included | `STOCKROOM_REQUEST_TIMEOUT_MS` | 15 000 |
//! | time a transfer or a retried write may take, every attempt included | `STOCKROOM_WRITE_DEADLINE_MS` | 5 000 |
//! | largest request body, in bytes | `STOCKROOM_MAX_BODY_BYTES` | 65 536 |
//! | open connections (more wait in the listen backlog) | `STOCKROOM_MAX_HTTP_CONNECTIONS` | 1 024 |
//! | requests handled at once (more wait, within their request timeout) | `STOCKROOM_MAX_IN_FLIGHT` | 256 |
//! | time after SIGTERM for the requests in flight, before the rest are dropped | `STOCKROOM_SHUTDOWN_GRACE_MS` | 20 000 |
//! | Stockroom's own events for product writes and transfers (`StoreConfig::own_events`; `false` turns them off) | `STOCKROOM_OWN_EVENTS` | `true` (the library's default is `false`) |
//! | where the relay delivers the outbox's events: NATS JetStream at this address (the facade's `nats` feature); unset, an in-process channel whose events the service logs at info | `STOCKROOM_NATS_URL` | unset |
//! | the JetStream stream the service makes (or checks) at startup, on the subjects `stockroom.>`, with a 2-minute duplicate window | `STOCKROOM_NATS_STREAM` | `STOCKROOM` |
//! | how long delivered events stay in the outbox before the relay purges them | `STOCKROOM_OUTBOX_RETENTION_MS` | 86 400 000 (24 h) |
//!
//! Every number must be a positive integer.

use std::net::SocketAddr;
use std::time::Duration;

use stockroom::StoreConfig;

use crate::startup::StartupError;

/// The database when `DATABASE_URL` is not set: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://stockroom-service.db";
/// The address when `STOCKROOM_ADDR` is not set.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";
/// The JetStream stream when `STOCKROOM_NATS_STREAM` is not set.
pub const DEFAULT_NATS_STREAM: &str = "STOCKROOM";

/// Everything the service is told by its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub store: StoreConfig,
    /// How long startup may take to connect the store (and migrate it) before it gives up.
    pub connect_timeout: Duration,
    pub limits: Limits,
    pub outbox: OutboxSettings,
}

/// Where the service's relay delivers the outbox's events, and how long it keeps them (see
/// `events.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// NATS JetStream at this address (`nats://host:port`, or `host:port`); `None`: an
    /// in-process channel whose events the service logs.
    pub nats_url: Option<String>,
    /// The JetStream stream that captures the events' subjects.
    pub nats_stream: String,
    /// Delivered events are purged once they were delivered this long ago.
    pub retention: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_stream: DEFAULT_NATS_STREAM.to_owned(),
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// The bounds of the HTTP side (see the [module docs](self) for their variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A client has this long to send a request's headers, and a keep-alive connection may wait
    /// this long for its next request, before the connection is closed.
    pub header_read_timeout: Duration,
    /// A client has this long to send a request's body (a 408 problem after it).
    pub body_read_timeout: Duration,
    /// A request has this long to be answered, its wait for a slot included (a 503 problem
    /// after it, and its unit of work rolls back; a 500 `ambiguous-commit` if its commit was
    /// running).
    pub request_timeout: Duration,
    /// A transfer, or a unit of work run by the retry runner, has this long in all, every
    /// attempt and lock wait included, and never more than the request's own time allows (a
    /// 503 `transient` problem after it, nothing applied; a 500 `ambiguous-commit` if a commit
    /// was still running).
    pub write_deadline: Duration,
    /// The largest request body (a 413 problem beyond it).
    pub max_body_bytes: usize,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: u32,
    /// Requests handled at once; more wait for a slot, within their request timeout.
    pub max_in_flight: u32,
    /// After a shutdown signal, how long the requests in flight may take before the connections
    /// still open are dropped (and their units of work rolled back).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            write_deadline: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            max_in_flight: 256,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Settings {
    /// The settings of the process's environment.
    // Only `main` reads the real environment; the tests give theirs to `from_lookup`.
    #[cfg_attr(test, allow(dead_code))]
    pub fn from_env() -> Result<Self, StartupError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings `lookup` gives (a name to its value, `None` when unset), with the defaults
    /// of the [module docs](self) for the rest.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StartupError> {
        // The service's defaults for two of the store's variables: its SQLite file, and its own
        // events on (`STOCKROOM_OWN_EVENTS=false` still turns them off).
        let store = StoreConfig::from_lookup(|name| {
            lookup(name).or_else(|| match name {
                "DATABASE_URL" => Some(DEFAULT_DATABASE_URL.into()),
                "STOCKROOM_OWN_EVENTS" => Some("true".into()),
                _ => None,
            })
        })
        .map_err(StartupError::StoreSetting)?;
        let addr = lookup("STOCKROOM_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = addr.trim().parse().map_err(|_| StartupError::Setting {
            name: "STOCKROOM_ADDR",
            problem: format!("{addr:?} is not an address such as {DEFAULT_ADDR}"),
        })?;
        let read = Reader(&lookup);
        let defaults = Limits::default();
        let limits = Limits {
            header_read_timeout: read.millis(
                "STOCKROOM_HEADER_READ_TIMEOUT_MS",
                defaults.header_read_timeout,
            )?,
            body_read_timeout: read
                .millis("STOCKROOM_BODY_READ_TIMEOUT_MS", defaults.body_read_timeout)?,
            request_timeout: read
                .millis("STOCKROOM_REQUEST_TIMEOUT_MS", defaults.request_timeout)?,
            write_deadline: read.millis("STOCKROOM_WRITE_DEADLINE_MS", defaults.write_deadline)?,
            max_body_bytes: read.count("STOCKROOM_MAX_BODY_BYTES", defaults.max_body_bytes)?,
            max_connections: read
                .count("STOCKROOM_MAX_HTTP_CONNECTIONS", defaults.max_connections)?,
            max_in_flight: read.count("STOCKROOM_MAX_IN_FLIGHT", defaults.max_in_flight)?,
            shutdown_grace: read.millis("STOCKROOM_SHUTDOWN_GRACE_MS", defaults.shutdown_grace)?,
        };
        let outbox = outbox_settings(&lookup, &read)?;
        Ok(Self {
            addr,
            store,
            connect_timeout: read.millis("STOCKROOM_CONNECT_TIMEOUT_MS", Duration::from_secs(5))?,
            limits,
            outbox,
        })
    }
}

/// The relay's settings: an empty `STOCKROOM_NATS_URL` counts as unset; a stream name is what
/// JetStream takes (letters, digits, `-` and `_`).
fn outbox_settings<F: Fn(&str) -> Option<String>>(
    lookup: &F,
    read: &Reader<'_, F>,
) -> Result<OutboxSettings, StartupError> {
    let defaults = OutboxSettings::default();
    let nats_url = lookup("STOCKROOM_NATS_URL")
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty());
    let nats_stream = lookup("STOCKROOM_NATS_STREAM")
        .map(|name| name.trim().to_owned())
        .unwrap_or(defaults.nats_stream);
    if nats_stream.is_empty()
        || !nats_stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StartupError::Setting {
            name: "STOCKROOM_NATS_STREAM",
            problem: format!(
                "{nats_stream:?} is not a stream name (letters, digits, '-' and '_'), such as \
                 {DEFAULT_NATS_STREAM}"
            ),
        });
    }
    Ok(OutboxSettings {
        nats_url,
        nats_stream,
        retention: read.millis("STOCKROOM_OUTBOX_RETENTION_MS", defaults.retention)?,
    })
}

/// Reads positive integers from the environment.
struct Reader<'a, F>(&'a F);

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    /// The variable `name` as a positive number, or `default` when it is unset.
    fn count<T: std::str::FromStr + PartialEq + From<u8>>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, StartupError> {
        let Some(text) = (self.0)(name) else {
            return Ok(default);
        };
        match text.trim().parse::<T>() {
            Ok(value) if value != T::from(0) => Ok(value),
            _ => Err(StartupError::Setting {
                name,
                problem: format!("{text:?} is not a positive integer"),
            }),
        }
    }

    /// The variable `name` as a positive number of milliseconds, or `default` when it is unset.
    fn millis(&self, name: &'static str, default: Duration) -> Result<Duration, StartupError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.count(name, default_ms).map(Duration::from_millis)
    }
}

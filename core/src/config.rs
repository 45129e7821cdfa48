//! Store configuration: the settings every backend shares, named as sqlx names them, with
//! documented defaults, loadable from the environment. Its `Debug` never shows a password.
//!
//! What only one backend has lives in its adapter crate and in the query of its URL:
//! `sqlite://shop.db?busy_timeout_ms=2000&synchronous=full`,
//! `postgres://app@db/shop?options=-c%20lock_timeout%3D2s` (see each adapter's options).

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result, Rule};

/// How a store connects and behaves. Build with [`StoreConfig::new`] and the `with_*` methods,
/// or read it from the environment with [`StoreConfig::from_env`].
///
/// | field | environment variable | default |
/// |---|---|---|
/// | `url` | `DATABASE_URL` (required by `from_env`) | (none) |
/// | `max_connections` | `STOCKROOM_MAX_CONNECTIONS` | 10 |
/// | `min_connections` | `STOCKROOM_MIN_CONNECTIONS` | 0 |
/// | `acquire_timeout` | `STOCKROOM_ACQUIRE_TIMEOUT_MS` | 30 s |
/// | `idle_timeout` | `STOCKROOM_IDLE_TIMEOUT_MS` (0: none) | 10 min |
/// | `max_lifetime` | `STOCKROOM_MAX_LIFETIME_MS` (0: none) | 30 min |
/// | `test_before_acquire` | `STOCKROOM_TEST_BEFORE_ACQUIRE` | true |
/// | `log_statements` | `STOCKROOM_LOG_STATEMENTS` | false |
/// | `slow_statement_threshold` | `STOCKROOM_SLOW_STATEMENT_MS` | 1 s |
/// | `application_name` | `STOCKROOM_APPLICATION_NAME` | `stockroom` |
/// | `run_migrations` | `STOCKROOM_RUN_MIGRATIONS` | true |
/// | `replica_urls` | `STOCKROOM_REPLICA_URLS` (comma-separated) | none |
/// | `own_events` | `STOCKROOM_OWN_EVENTS` | false |
///
/// Every duration in the environment is a whole number of milliseconds, in a variable whose name
/// ends in `_MS` (as the service example's are); the names Stockroom read before, in seconds
/// (`STOCKROOM_IDLE_TIMEOUT_SECS`, `STOCKROOM_MAX_LIFETIME_SECS`), are refused with an error
/// naming the variable to use instead, so a deployment that still sets them is not silently run
/// on the defaults.
///
/// With the `serde` feature a configuration deserializes from the application's own settings
/// (a TOML or YAML file, say): the field names above, `url` required, every other field
/// optional (its default when absent), durations in a human format (`"30s"`, `"1m 30s"`,
/// `"250ms"`; `"none"` for the optional ones), unknown fields refused. The application's
/// entities are registered in code ([`with_entity`](Self::with_entity)), not deserialized.
///
/// ```
/// use std::time::Duration;
/// use stockroom_core::StoreConfig;
///
/// let config = StoreConfig::new("postgres://app:s3cret@db.internal/shop")
///     .with_max_connections(20)
///     .with_acquire_timeout(Duration::from_secs(5));
/// assert_eq!(config.max_connections, 20);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Where the data lives: `memory://`, `sqlite://path`, `postgres://…`.
    pub url: String,
    /// The most connections a pool opens (on SQLite: read connections; the writer is one more).
    pub max_connections: u32,
    /// Connections a pool keeps open even when idle.
    pub min_connections: u32,
    /// How long `begin` and `read` wait for a free connection (PostgreSQL's pool, SQLite's
    /// read connections) or, on a single-writer backend (SQLite, memory), for the writer slot,
    /// before failing with `Unavailable`.
    pub acquire_timeout: Duration,
    /// Connections above `min_connections` idle for longer than this are closed.
    pub idle_timeout: Option<Duration>,
    /// Connections older than this are closed and replaced.
    pub max_lifetime: Option<Duration>,
    /// Check a connection the server may have closed before a session uses it.
    pub test_before_acquire: bool,
    /// Log every statement (at `debug`, target `stockroom::sql`).
    pub log_statements: bool,
    /// Statements slower than this are logged at `warn`.
    pub slow_statement_threshold: Duration,
    /// The name the server shows for our sessions (PostgreSQL's `application_name`).
    pub application_name: String,
    /// Apply the embedded schema migrations on connect.
    pub run_migrations: bool,
    /// Read replicas of the database at `url` (PostgreSQL streaming replicas): read sessions
    /// go to them in turn, falling back to the primary when none answers; units of work, and
    /// [`Store::read_primary`](crate::Store::read_primary), go to the primary. Each replica
    /// gets a pool of its own with the settings above. Backends without replicas refuse a
    /// configuration that names some ([`Error::Unsupported`]).
    pub replica_urls: Vec<String>,
    /// Write Stockroom's own events to the outbox for the writes to products and for stock
    /// moves, in the unit of work that makes them (see
    /// [`outbox::subjects`](crate::outbox::subjects)).
    pub own_events: bool,
    /// The application's own entities the store holds besides Stockroom's (see
    /// [`with_entity`](Self::with_entity)).
    pub entities: Entities,
}

/// The application's entities a store is configured with (see
/// [`StoreConfig::with_entity`]): their declarations, compared by entity and table name.
#[derive(Clone, Default)]
pub struct Entities(Vec<&'static crate::schema::Schema>);

impl Entities {
    /// The declarations, in the order they were added.
    pub fn schemas(&self) -> &[&'static crate::schema::Schema] {
        &self.0
    }
}

impl PartialEq for Entities {
    fn eq(&self, other: &Self) -> bool {
        let key = |s: &&crate::schema::Schema| (s.name, s.table);
        self.0.iter().map(key).eq(other.0.iter().map(key))
    }
}

impl Eq for Entities {}

impl fmt::Debug for Entities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.name))
            .finish()
    }
}

impl StoreConfig {
    /// The defaults of the table above, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            test_before_acquire: true,
            log_statements: false,
            slow_statement_threshold: Duration::from_secs(1),
            application_name: "stockroom".to_owned(),
            run_migrations: true,
            entities: Entities::default(),
            replica_urls: Vec::new(),
            own_events: false,
        }
    }

    /// Reads the configuration from the process environment (see the table above).
    /// `DATABASE_URL` must be set: a missing one is a validation error naming it, not a silent
    /// fallback that would hide a misconfigured deployment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable's value, if set). A missing
    /// `DATABASE_URL` or a malformed value is a validation error naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let url = lookup("DATABASE_URL")
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| Error::validation("DATABASE_URL", Rule::Empty))?;
        let mut c = Self::new(url);
        let get = |name: &'static str| lookup(name).map(|v| (name, v));
        if let Some((n, v)) = get("STOCKROOM_MAX_CONNECTIONS") {
            c.max_connections = parse_number(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_MIN_CONNECTIONS") {
            c.min_connections = parse_number(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_ACQUIRE_TIMEOUT_MS") {
            c.acquire_timeout = Duration::from_millis(parse_number(n, &v)?);
        }
        for (old, new) in RENAMED_VARIABLES {
            if lookup(old).is_some() {
                return Err(Error::validation(old, Rule::Malformed { expected: new }));
            }
        }
        if let Some((n, v)) = get("STOCKROOM_IDLE_TIMEOUT_MS") {
            c.idle_timeout = optional_millis(parse_number(n, &v)?);
        }
        if let Some((n, v)) = get("STOCKROOM_MAX_LIFETIME_MS") {
            c.max_lifetime = optional_millis(parse_number(n, &v)?);
        }
        if let Some((n, v)) = get("STOCKROOM_TEST_BEFORE_ACQUIRE") {
            c.test_before_acquire = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_LOG_STATEMENTS") {
            c.log_statements = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_SLOW_STATEMENT_MS") {
            c.slow_statement_threshold = Duration::from_millis(parse_number(n, &v)?);
        }
        if let Some((_, v)) = get("STOCKROOM_APPLICATION_NAME") {
            c.application_name = v;
        }
        if let Some((n, v)) = get("STOCKROOM_RUN_MIGRATIONS") {
            c.run_migrations = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_OWN_EVENTS") {
            c.own_events = parse_bool(n, &v)?;
        }
        if let Some((_, v)) = get("STOCKROOM_REPLICA_URLS") {
            c.replica_urls = v
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect();
        }
        Ok(c)
    }

    /// The configuration, with [`max_connections`](Self::max_connections) (at least 1).
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }
    /// The configuration, with [`min_connections`](Self::min_connections).
    pub fn with_min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }
    /// The configuration, with [`acquire_timeout`](Self::acquire_timeout).
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
    /// The configuration, with [`idle_timeout`](Self::idle_timeout).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// The configuration, with [`max_lifetime`](Self::max_lifetime).
    pub fn with_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }
    /// The configuration, with [`test_before_acquire`](Self::test_before_acquire).
    pub fn with_test_before_acquire(mut self, on: bool) -> Self {
        self.test_before_acquire = on;
        self
    }
    /// The configuration, with [`log_statements`](Self::log_statements).
    pub fn with_log_statements(mut self, on: bool) -> Self {
        self.log_statements = on;
        self
    }
    /// The configuration, with [`slow_statement_threshold`](Self::slow_statement_threshold).
    pub fn with_slow_statement_threshold(mut self, threshold: Duration) -> Self {
        self.slow_statement_threshold = threshold;
        self
    }
    /// The configuration, with [`application_name`](Self::application_name).
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }
    /// The configuration, with [`run_migrations`](Self::run_migrations).
    pub fn with_run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }
    /// The configuration, with [`own_events`](Self::own_events).
    pub fn with_own_events(mut self, on: bool) -> Self {
        self.own_events = on;
        self
    }
    /// The configuration, with the application's entity `E` among the store's: the store
    /// checks its declaration and, on a SQL backend, creates or checks its table when it
    /// connects (see [`schema`](crate::schema)). An entity used with a store that does not hold
    /// it is [`Error::UnknownEntity`](crate::Error::UnknownEntity).
    pub fn with_entity<E: crate::Entity>(mut self) -> Self {
        let schema = E::schema();
        if !self
            .entities
            .0
            .iter()
            .any(|s| s.name == schema.name && s.table == schema.table)
        {
            self.entities.0.push(schema);
        }
        self
    }
    /// The configuration, with one more read replica (see
    /// [`replica_urls`](Self::replica_urls)).
    pub fn with_replica_url(mut self, url: impl Into<String>) -> Self {
        self.replica_urls.push(url.into());
        self
    }

    /// The URL's scheme (`memory`, `sqlite`, `postgres`, …), lower-cased: what comes before the
    /// first `:`, so `sqlite::memory:` counts as well as `sqlite://file.db`.
    pub fn scheme(&self) -> Option<String> {
        let (scheme, _) = self.url.split_once(':')?;
        let well_formed = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        well_formed.then(|| scheme.to_ascii_lowercase())
    }

    /// The URL with any password replaced by `***`: safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("test_before_acquire", &self.test_before_acquire)
            .field("log_statements", &self.log_statements)
            .field("slow_statement_threshold", &self.slow_statement_threshold)
            .field("application_name", &self.application_name)
            .field("run_migrations", &self.run_migrations)
            .field("own_events", &self.own_events)
            .field(
                "replica_urls",
                &self
                    .replica_urls
                    .iter()
                    .map(|url| redact_url(url))
                    .collect::<Vec<_>>(),
            )
            .field("entities", &self.entities)
            .finish()
    }
}

/// `url` with any password replaced by `***`: the password of its user-info part, and the value
/// of every query parameter named `password` in any case (`password=`, `PASSWORD=`, also
/// percent-encoded). Safe to log. Text that is not a URL is returned with everything after its
/// scheme hidden, since it cannot be told where a password would be in it.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        // An opaque URL (`sqlite::memory:`) has no user-info part; one that looks as if it held
        // credentials is hidden like text that is not a URL.
        Ok(parsed) if parsed.cannot_be_a_base() && !may_hold_credentials(url) => url.to_owned(),
        Ok(parsed) if !parsed.cannot_be_a_base() => redact_parsed(parsed),
        _ => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:***"),
            None => "***".to_owned(),
        },
    }
}

fn may_hold_credentials(text: &str) -> bool {
    text.contains('@') || text.to_ascii_lowercase().contains("pass")
}

fn redact_parsed(mut url: url::Url) -> String {
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = url.set_password(Some("***"));
    }
    let has_password_param = url
        .query_pairs()
        .any(|(name, _)| name.eq_ignore_ascii_case("password"));
    if has_password_param {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if name.eq_ignore_ascii_case("password") {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The serializer percent-encodes `***` in the user-info part; show it as written.
    url.to_string().replace("%2A%2A%2A", "***")
}

fn malformed(name: &'static str, expected: &'static str) -> Error {
    Error::validation(name, Rule::Malformed { expected })
}

fn parse_number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| malformed(name, "a whole number"))
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(malformed(name, "true or false")),
    }
}

fn optional_millis(millis: u64) -> Option<Duration> {
    (millis > 0).then(|| Duration::from_millis(millis))
}

/// Variables Stockroom read before, in seconds, and what a deployment sets instead: refused, not
/// ignored, so a deployment that sets one does not run silently on the default.
const RENAMED_VARIABLES: [(&str, &str); 2] = [
    (
        "STOCKROOM_IDLE_TIMEOUT_SECS",
        "unset: STOCKROOM_IDLE_TIMEOUT_MS (milliseconds) replaces it",
    ),
    (
        "STOCKROOM_MAX_LIFETIME_SECS",
        "unset: STOCKROOM_MAX_LIFETIME_MS (milliseconds) replaces it",
    ),
];

#[cfg(feature = "serde")]
mod de {
    //! `StoreConfig` from the application's settings (feature `serde`).

    use std::time::Duration;

    use serde::de::{Deserialize, Deserializer, Error as _};

    use super::StoreConfig;

    /// What a settings file may hold: every field but `url` optional.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        url: String,
        max_connections: Option<u32>,
        min_connections: Option<u32>,
        #[serde(default, deserialize_with = "duration")]
        acquire_timeout: Option<Duration>,
        #[serde(default, deserialize_with = "optional_duration")]
        idle_timeout: Option<Option<Duration>>,
        #[serde(default, deserialize_with = "optional_duration")]
        max_lifetime: Option<Option<Duration>>,
        test_before_acquire: Option<bool>,
        log_statements: Option<bool>,
        #[serde(default, deserialize_with = "duration")]
        slow_statement_threshold: Option<Duration>,
        application_name: Option<String>,
        run_migrations: Option<bool>,
        #[serde(default)]
        own_events: Option<bool>,
        replica_urls: Option<Vec<String>>,
    }

    impl<'de> Deserialize<'de> for StoreConfig {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let s = Settings::deserialize(deserializer)?;
            if s.url.trim().is_empty() {
                return Err(D::Error::custom("url: must not be empty"));
            }
            let mut c = StoreConfig::new(s.url);
            if let Some(max) = s.max_connections {
                c = c.with_max_connections(max);
            }
            c.min_connections = s.min_connections.unwrap_or(c.min_connections);
            c.acquire_timeout = s.acquire_timeout.unwrap_or(c.acquire_timeout);
            c.idle_timeout = s.idle_timeout.unwrap_or(c.idle_timeout);
            c.max_lifetime = s.max_lifetime.unwrap_or(c.max_lifetime);
            c.test_before_acquire = s.test_before_acquire.unwrap_or(c.test_before_acquire);
            c.log_statements = s.log_statements.unwrap_or(c.log_statements);
            c.slow_statement_threshold = s
                .slow_statement_threshold
                .unwrap_or(c.slow_statement_threshold);
            c.application_name = s.application_name.unwrap_or(c.application_name);
            c.run_migrations = s.run_migrations.unwrap_or(c.run_migrations);
            c.own_events = s.own_events.unwrap_or(c.own_events);
            c.replica_urls = s.replica_urls.unwrap_or(c.replica_urls);
            Ok(c)
        }
    }

    /// A duration in a human format: `"30s"`, `"1m 30s"`, `"250ms"`.
    fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(Some).map_err(D::Error::custom)
    }

    /// A duration as [`duration`] reads it, or `"none"` (or `null`) for none.
    fn optional_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Some(None)),
            Some(text) if text.trim().eq_ignore_ascii_case("none") => Ok(Some(None)),
            Some(text) => parse(&text)
                .map(|d| Some(Some(d)))
                .map_err(D::Error::custom),
        }
    }

    fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("{text:?} is not a duration such as \"30s\", \"1m 30s\" or \"250ms\" ({e})")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        assert_eq!(redact_url("sqlite://data.db"), "sqlite://data.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        let c = StoreConfig::new("postgres://u:hunter2@h/db");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn passwords_in_any_spelling_never_show() {
        for url in [
            "postgres://u:p%40ss%3Aw0rd@h/db",
            "postgres://h/db?user=u&PASSWORD=hunter2",
            "postgres://h/db?user=u&Password=hunter2&sslmode=require",
            "postgres://h/db?user=u&pass%77ord=hunter2",
            "postgresql://u:hunter2@[::1]:5432/db",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("hunter2") && !shown.contains("w0rd"),
                "{url} shown as {shown}"
            );
            assert!(shown.contains("***"), "{shown}");
        }
        assert_eq!(
            redact_url("postgres://h/db?user=u&PASSWORD=x&sslmode=require"),
            "postgres://h/db?user=u&PASSWORD=***&sslmode=require"
        );
        // Not a URL at all: nothing after the scheme can be shown.
        assert_eq!(redact_url("postgres:u:secret@@"), "postgres:***");
        assert_eq!(redact_url("not a url"), "***");
    }

    #[test]
    fn scheme_is_what_comes_before_the_first_colon() {
        let scheme = |url: &str| StoreConfig::new(url).scheme();
        assert_eq!(scheme("sqlite::memory:").as_deref(), Some("sqlite"));
        assert_eq!(scheme("SQLite://a.db").as_deref(), Some("sqlite"));
        assert_eq!(scheme("postgres://u@h/db").as_deref(), Some("postgres"));
        assert_eq!(scheme("no scheme here"), None);
    }

    #[test]
    fn environment_overrides_defaults_and_names_bad_variables() {
        let env: HashMap<&str, &str> = [
            ("DATABASE_URL", "postgres://h/db"),
            ("STOCKROOM_MAX_CONNECTIONS", "7"),
            ("STOCKROOM_MIN_CONNECTIONS", "2"),
            ("STOCKROOM_TEST_BEFORE_ACQUIRE", "false"),
            ("STOCKROOM_IDLE_TIMEOUT_MS", "0"),
            ("STOCKROOM_MAX_LIFETIME_MS", "90000"),
            ("STOCKROOM_RUN_MIGRATIONS", "no"),
        ]
        .into();
        let c = StoreConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(
            (c.max_connections, c.min_connections, c.test_before_acquire),
            (7, 2, false)
        );
        assert_eq!((c.idle_timeout, c.run_migrations), (None, false));
        assert_eq!(c.max_lifetime, Some(Duration::from_secs(90)));
        let bad = StoreConfig::from_lookup(|k| match k {
            "DATABASE_URL" => Some("memory://".into()),
            "STOCKROOM_MAX_CONNECTIONS" => Some("many".into()),
            _ => None,
        });
        assert!(matches!(
            bad,
            Err(Error::Validation {
                field: "STOCKROOM_MAX_CONNECTIONS",
                ..
            })
        ));
    }

    #[test]
    fn the_variables_in_seconds_of_before_are_refused_naming_their_replacement() {
        for (old, new) in [
            ("STOCKROOM_IDLE_TIMEOUT_SECS", "STOCKROOM_IDLE_TIMEOUT_MS"),
            ("STOCKROOM_MAX_LIFETIME_SECS", "STOCKROOM_MAX_LIFETIME_MS"),
        ] {
            let refused = StoreConfig::from_lookup(|k| match k {
                "DATABASE_URL" => Some("memory://".into()),
                k if k == old => Some("60".into()),
                _ => None,
            })
            .expect_err("a variable that is no more is refused");
            assert!(
                matches!(&refused, Error::Validation { field, .. } if *field == old),
                "{refused:?}"
            );
            assert!(refused.to_string().contains(new), "{refused}");
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_configuration_deserializes_with_human_durations_and_defaults() {
        let c: StoreConfig = serde_json::from_value(serde_json::json!({
            "url": "postgres://app@db/shop",
            "max_connections": 20,
            "acquire_timeout": "1m 30s",
            "idle_timeout": "none",
            "max_lifetime": "250ms",
            "slow_statement_threshold": "2s",
            "replica_urls": ["postgres://app@replica/shop"],
        }))
        .unwrap();
        let expected = StoreConfig::new("postgres://app@db/shop")
            .with_max_connections(20)
            .with_acquire_timeout(Duration::from_secs(90))
            .with_idle_timeout(None)
            .with_max_lifetime(Some(Duration::from_millis(250)))
            .with_slow_statement_threshold(Duration::from_secs(2))
            .with_replica_url("postgres://app@replica/shop");
        assert_eq!(c, expected);

        let only_url: StoreConfig =
            serde_json::from_value(serde_json::json!({ "url": "memory://" })).unwrap();
        assert_eq!(only_url, StoreConfig::new("memory://"));
        let null_is_none: StoreConfig =
            serde_json::from_value(serde_json::json!({ "url": "memory://", "max_lifetime": null }))
                .unwrap();
        assert_eq!(null_is_none.max_lifetime, None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_configuration_that_is_wrong_is_refused_saying_where() {
        let refused = |value: serde_json::Value| {
            serde_json::from_value::<StoreConfig>(value)
                .expect_err("refused")
                .to_string()
        };
        let bad_duration =
            refused(serde_json::json!({ "url": "memory://", "acquire_timeout": "30" }));
        assert!(bad_duration.contains("is not a duration"), "{bad_duration}");
        let unknown = refused(serde_json::json!({ "url": "memory://", "acquire_timeout_ms": 5 }));
        assert!(
            unknown.contains("unknown field `acquire_timeout_ms`"),
            "{unknown}"
        );
        let no_url = refused(serde_json::json!({ "max_connections": 5 }));
        assert!(no_url.contains("missing field `url`"), "{no_url}");
        let empty_url = refused(serde_json::json!({ "url": " " }));
        assert!(empty_url.contains("url"), "{empty_url}");
    }

    #[test]
    fn replicas_come_from_a_comma_separated_variable_and_never_show_a_password() {
        let c = StoreConfig::from_lookup(|k| match k {
            "DATABASE_URL" => Some("postgres://app@primary/shop".into()),
            "STOCKROOM_REPLICA_URLS" => Some(
                " postgres://app:s3cret@replica-a/shop , ,postgres://app@replica-b/shop".into(),
            ),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.replica_urls,
            [
                "postgres://app:s3cret@replica-a/shop",
                "postgres://app@replica-b/shop"
            ]
        );
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let built =
            StoreConfig::new("postgres://app@primary/shop").with_replica_url("postgres://r/x");
        assert_eq!(built.replica_urls, ["postgres://r/x"]);
        assert!(matches!(
            crate::adapter::refuse_replicas(&built, "sqlite"),
            Err(Error::Unsupported {
                operation: "read replicas",
                backend: "sqlite"
            })
        ));
        let without = StoreConfig::new("memory://");
        assert!(crate::adapter::refuse_replicas(&without, "memory").is_ok());
    }

    #[test]
    fn from_env_without_a_database_url_names_the_variable() {
        let missing = StoreConfig::from_lookup(|_| None);
        assert!(matches!(
            missing,
            Err(Error::Validation {
                field: "DATABASE_URL",
                rule: Rule::Empty
            })
        ));
    }
}

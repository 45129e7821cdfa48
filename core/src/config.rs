//! Store configuration: what the model's engine settings carry, with documented defaults, loadable
//! from the environment. Its `Debug` never shows a password.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result, Rule};

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `NORMAL`: in WAL mode a commit survives a process crash; a power loss may lose the last
    /// commits, never corrupt the file.
    #[default]
    Normal,
    /// `FULL`: a commit also survives a power loss.
    Full,
}

/// How a store connects and behaves. Build with [`StoreConfig::new`] and the `with_*` methods,
/// or read it from the environment with [`StoreConfig::from_env`].
///
/// | field | environment variable | default |
/// |---|---|---|
/// | `url` | `DATABASE_URL` | `sqlite://stockroom.db` |
/// | `pool_size` | `STOCKROOM_POOL_SIZE` | 5 |
/// | `max_overflow` | `STOCKROOM_MAX_OVERFLOW` | 10 |
/// | `acquire_timeout` | `STOCKROOM_ACQUIRE_TIMEOUT_MS` | 30 s |
/// | `max_lifetime` | `STOCKROOM_MAX_LIFETIME_SECS` (0: none) | 30 min |
/// | `idle_timeout` | `STOCKROOM_IDLE_TIMEOUT_SECS` (0: none) | 10 min |
/// | `test_before_acquire` | `STOCKROOM_PRE_PING` | true |
/// | `log_statements` | `STOCKROOM_ECHO` | false |
/// | `slow_statement_threshold` | `STOCKROOM_SLOW_STATEMENT_MS` | 1 s |
/// | `application_name` | `STOCKROOM_APPLICATION_NAME` | `stockroom` |
/// | `session_settings` | `STOCKROOM_PG_SETTINGS` (`name=value,…`) | `jit=off` |
/// | `run_migrations` | `STOCKROOM_MIGRATE` | true |
/// | `busy_timeout` | `STOCKROOM_BUSY_TIMEOUT_MS` | 5 s |
/// | `durability` | `STOCKROOM_SQLITE_SYNCHRONOUS` (`normal`/`full`) | normal |
///
/// ```
/// use stockroom_core::StoreConfig;
/// let config = StoreConfig::new("postgres://app:s3cret@db.internal/shop").with_pool_size(20);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Where the data lives: `memory://`, `sqlite://path`, `postgres://…`.
    pub url: String,
    /// Connections a pool keeps open.
    pub pool_size: u32,
    /// Connections a pool may open beyond `pool_size` under load; they are closed again after
    /// `idle_timeout`.
    pub max_overflow: u32,
    /// How long `begin` and `read` wait for a free connection (PostgreSQL's pool, SQLite's
    /// read connections) or, on a single-writer backend (SQLite, memory), for the writer slot,
    /// before failing with `Unavailable`.
    pub acquire_timeout: Duration,
    /// Connections older than this are closed and replaced (recycle).
    pub max_lifetime: Option<Duration>,
    /// Connections idle for longer than this, above `pool_size`, are closed.
    pub idle_timeout: Option<Duration>,
    /// Check a connection with a ping before handing it out (pre-ping).
    pub test_before_acquire: bool,
    /// Log every statement (at `debug`, target `stockroom::sql`) (echo).
    pub log_statements: bool,
    /// Statements slower than this are logged at `warn`.
    pub slow_statement_threshold: Duration,
    /// The name the server shows for our sessions (PostgreSQL's `application_name`).
    pub application_name: String,
    /// Session settings applied to every new PostgreSQL connection, such as `jit=off`.
    pub session_settings: Vec<(String, String)>,
    /// Apply the embedded schema migrations on connect.
    pub run_migrations: bool,
    /// How long a statement waits for a lock held by another transaction before failing as
    /// `Transient`: SQLite's busy timeout (a lock held by another connection or process),
    /// PostgreSQL's `lock_timeout` (a row lock).
    pub busy_timeout: Duration,
    /// SQLite's durability level.
    pub durability: Durability,
}

impl StoreConfig {
    /// The defaults of the table above, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 5,
            max_overflow: 10,
            acquire_timeout: Duration::from_secs(30),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            test_before_acquire: true,
            log_statements: false,
            slow_statement_threshold: Duration::from_secs(1),
            application_name: "stockroom".to_owned(),
            session_settings: vec![("jit".to_owned(), "off".to_owned())],
            run_migrations: true,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
        }
    }

    /// Reads the configuration from the process environment (see the table above).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable's value, if set). A malformed value is
    /// a validation error naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c =
            Self::new(lookup("DATABASE_URL").unwrap_or_else(|| "sqlite://stockroom.db".to_owned()));
        let get = |name: &'static str| lookup(name).map(|v| (name, v));
        if let Some((n, v)) = get("STOCKROOM_POOL_SIZE") {
            c.pool_size = parse_number(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_MAX_OVERFLOW") {
            c.max_overflow = parse_number(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_ACQUIRE_TIMEOUT_MS") {
            c.acquire_timeout = Duration::from_millis(parse_number(n, &v)?);
        }
        if let Some((n, v)) = get("STOCKROOM_MAX_LIFETIME_SECS") {
            c.max_lifetime = optional_secs(parse_number(n, &v)?);
        }
        if let Some((n, v)) = get("STOCKROOM_IDLE_TIMEOUT_SECS") {
            c.idle_timeout = optional_secs(parse_number(n, &v)?);
        }
        if let Some((n, v)) = get("STOCKROOM_PRE_PING") {
            c.test_before_acquire = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_ECHO") {
            c.log_statements = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_SLOW_STATEMENT_MS") {
            c.slow_statement_threshold = Duration::from_millis(parse_number(n, &v)?);
        }
        if let Some((_, v)) = get("STOCKROOM_APPLICATION_NAME") {
            c.application_name = v;
        }
        if let Some((n, v)) = get("STOCKROOM_PG_SETTINGS") {
            c.session_settings = parse_settings(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_MIGRATE") {
            c.run_migrations = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("STOCKROOM_BUSY_TIMEOUT_MS") {
            c.busy_timeout = Duration::from_millis(parse_number(n, &v)?);
        }
        if let Some((n, v)) = get("STOCKROOM_SQLITE_SYNCHRONOUS") {
            c.durability = match v.to_ascii_lowercase().as_str() {
                "normal" => Durability::Normal,
                "full" => Durability::Full,
                _ => return Err(malformed(n, "normal or full")),
            };
        }
        Ok(c)
    }

    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size;
        self
    }
    pub fn with_max_overflow(mut self, max_overflow: u32) -> Self {
        self.max_overflow = max_overflow;
        self
    }
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }
    pub fn with_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
    pub fn with_log_statements(mut self, on: bool) -> Self {
        self.log_statements = on;
        self
    }

    /// The most connections a pool opens: `pool_size + max_overflow` (at least 1).
    pub fn max_connections(&self) -> u32 {
        self.pool_size.saturating_add(self.max_overflow).max(1)
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
            .field("pool_size", &self.pool_size)
            .field("max_overflow", &self.max_overflow)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("test_before_acquire", &self.test_before_acquire)
            .field("log_statements", &self.log_statements)
            .field("slow_statement_threshold", &self.slow_statement_threshold)
            .field("application_name", &self.application_name)
            .field("session_settings", &self.session_settings)
            .field("run_migrations", &self.run_migrations)
            .field("busy_timeout", &self.busy_timeout)
            .field("durability", &self.durability)
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

fn optional_secs(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn parse_settings(name: &'static str, value: &str) -> Result<Vec<(String, String)>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| malformed(name, "name=value pairs separated by commas"))?;
            let valid_name = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !valid_name {
                return Err(malformed(
                    name,
                    "setting names of letters, digits, '_' and '.'",
                ));
            }
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
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
            ("STOCKROOM_POOL_SIZE", "7"),
            ("STOCKROOM_PG_SETTINGS", "jit=off, statement_timeout=5s"),
            ("STOCKROOM_PRE_PING", "false"),
        ]
        .into();
        let c = StoreConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(
            (c.pool_size, c.test_before_acquire, c.max_connections()),
            (7, false, 17)
        );
        assert_eq!(
            c.session_settings[1],
            ("statement_timeout".into(), "5s".into())
        );
        let bad = StoreConfig::from_lookup(|k| (k == "STOCKROOM_POOL_SIZE").then(|| "many".into()));
        assert!(matches!(
            bad,
            Err(Error::Validation {
                field: "STOCKROOM_POOL_SIZE",
                ..
            })
        ));
    }
}

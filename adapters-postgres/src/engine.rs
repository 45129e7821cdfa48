//! Which engine answers on the PostgreSQL wire protocol, and what Stockroom does differently on
//! each.
//!
//! CockroachDB and YugabyteDB speak PostgreSQL's protocol and most of its SQL, but not all of
//! it. At connect the store asks `SELECT version()` ([`Engine::from_version`]) and then adapts:
//!
//! | | PostgreSQL (and Citus) | CockroachDB | YugabyteDB |
//! |---|---|---|---|
//! | migrations serialized by | a session advisory lock | nothing (see below) | nothing |
//! | `jit` session setting | sent (`jit=off` by default) | not sent: no such setting | sent |
//!
//! Without an advisory lock, two processes migrating one database at the same moment may both
//! try to apply a migration; each migration runs in a transaction with its bookkeeping row, so
//! one of them fails on that row's primary key and nothing is applied twice (the failed
//! process's `connect` fails, and a retry finds the schema up to date).
//!
//! The SQL itself is written once for all three: `LIKE` patterns use the default escape
//! character (backslash, the same on every engine) instead of an `ESCAPE` clause, and every
//! index names its column order (`ASC`), since YugabyteDB hash-shards an index on its first
//! column unless told otherwise (which would turn the keyset scans into full scans). What is
//! verified where is in `docs/scale-out.md`.

use std::fmt;

/// The engine behind a PostgreSQL connection, as its `version()` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// PostgreSQL itself, or an extension of it such as Citus (whose `version()` is
    /// PostgreSQL's).
    PostgreSql,
    /// CockroachDB: `CockroachDB CCL v23.2.4 (…)` or `CockroachDB OSS v…`.
    CockroachDb,
    /// YugabyteDB's YSQL: `PostgreSQL 11.2-YB-2.20.1.0-b0 on …`.
    YugabyteDb,
}

impl Engine {
    /// The engine that answered `SELECT version()` with `version`. Anything that is not
    /// recognisably CockroachDB or YugabyteDB is taken for PostgreSQL.
    ///
    /// ```
    /// use stockroom_postgres::Engine;
    /// let pg = "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc";
    /// assert_eq!(Engine::from_version(pg), Engine::PostgreSql);
    /// let crdb = "CockroachDB CCL v23.2.4 (x86_64-pc-linux-gnu, built 2024/04/11 18:20:29, go1.21.9)";
    /// assert_eq!(Engine::from_version(crdb), Engine::CockroachDb);
    /// ```
    pub fn from_version(version: &str) -> Self {
        let version = version.trim_start();
        if version.starts_with("CockroachDB") {
            Engine::CockroachDb
        } else if version
            .split_whitespace()
            .nth(1)
            .is_some_and(|number| number.contains("-YB-"))
        {
            Engine::YugabyteDb
        } else {
            Engine::PostgreSql
        }
    }

    /// The engine's name, as in logs and errors.
    pub const fn name(self) -> &'static str {
        match self {
            Engine::PostgreSql => "PostgreSQL",
            Engine::CockroachDb => "CockroachDB",
            Engine::YugabyteDb => "YugabyteDB",
        }
    }

    /// Whether session advisory locks (`pg_advisory_lock`) exist, to serialize migrations.
    /// CockroachDB has none; YugabyteDB has them only on recent releases, behind a flag, so
    /// they are not relied on there either.
    pub const fn has_advisory_locks(self) -> bool {
        matches!(self, Engine::PostgreSql)
    }

    /// Whether the server knows the session setting `name`: a startup option it does not know
    /// fails the connection, so settings that only PostgreSQL has are left out elsewhere.
    pub fn has_setting(self, name: &str) -> bool {
        match self {
            Engine::PostgreSql | Engine::YugabyteDb => true,
            Engine::CockroachDb => !POSTGRES_ONLY_SETTINGS.contains(&name),
        }
    }

    /// `settings` without those the engine does not know.
    pub fn supported_settings<'a>(
        self,
        settings: &'a [(String, String)],
    ) -> impl Iterator<Item = &'a (String, String)> + 'a {
        settings
            .iter()
            .filter(move |(name, _)| self.has_setting(name))
    }
}

/// Settings of PostgreSQL's planner that CockroachDB does not have.
const POSTGRES_ONLY_SETTINGS: &[&str] =
    &["jit", "jit_above_cost", "max_parallel_workers_per_gather"];

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `version()` as each engine answers it (from the engines' documentation and release
    /// notes; PostgreSQL's from this machine).
    const POSTGRES_15: &str = "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu, \
                               compiled by gcc (Debian 12.2.0-14+deb12u1) 12.2.0, 64-bit";
    const POSTGRES_17: &str = "PostgreSQL 17.2 on x86_64-pc-linux-musl, compiled by gcc \
                               (Alpine 14.2.0) 14.2.0, 64-bit";
    const COCKROACH_CCL: &str = "CockroachDB CCL v23.2.4 (x86_64-pc-linux-gnu, built \
                                 2024/04/11 18:20:29, go1.21.9 X:nocoverageredesign)";
    const COCKROACH_OSS: &str = "CockroachDB OSS v21.2.17 (x86_64-unknown-linux-gnu, built \
                                 2022/10/17 18:57:23, go1.16.6)";
    const YUGABYTE_11: &str = "PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu, compiled \
                               by clang version 16.0.6, 64-bit";
    const YUGABYTE_15: &str = "PostgreSQL 15.2-YB-2.25.0.0-b0 on x86_64-pc-linux-gnu, compiled \
                               by clang version 17.0.6, 64-bit";

    #[test]
    fn each_engine_is_told_apart_by_its_version_string() {
        let seen: Vec<Engine> = [
            POSTGRES_15,
            POSTGRES_17,
            COCKROACH_CCL,
            COCKROACH_OSS,
            YUGABYTE_11,
            YUGABYTE_15,
        ]
        .into_iter()
        .map(Engine::from_version)
        .collect();
        use Engine::*;
        assert_eq!(
            seen,
            [
                PostgreSql,
                PostgreSql,
                CockroachDb,
                CockroachDb,
                YugabyteDb,
                YugabyteDb
            ]
        );
    }

    #[test]
    fn an_unknown_answer_is_taken_for_postgres() {
        assert_eq!(Engine::from_version(""), Engine::PostgreSql);
        assert_eq!(
            Engine::from_version("EnterpriseDB 16.1"),
            Engine::PostgreSql
        );
        // "YB" elsewhere than in the version number is not YugabyteDB.
        assert_eq!(
            Engine::from_version("PostgreSQL 16.1 on x86_64, compiled by YB-gcc"),
            Engine::PostgreSql
        );
    }

    #[test]
    fn migrations_take_an_advisory_lock_only_on_postgres() {
        let locks: Vec<bool> = [POSTGRES_15, COCKROACH_CCL, YUGABYTE_11]
            .into_iter()
            .map(|v| Engine::from_version(v).has_advisory_locks())
            .collect();
        assert_eq!(locks, [true, false, false]);
    }

    #[test]
    fn jit_is_sent_only_where_the_setting_exists() {
        let wanted = vec![
            ("jit".to_owned(), "off".to_owned()),
            ("lock_timeout".to_owned(), "5s".to_owned()),
        ];
        let sent = |version: &str| -> Vec<&str> {
            Engine::from_version(version)
                .supported_settings(&wanted)
                .map(|(name, _)| name.as_str())
                .collect()
        };
        assert_eq!(sent(POSTGRES_15), ["jit", "lock_timeout"]);
        assert_eq!(sent(YUGABYTE_11), ["jit", "lock_timeout"]);
        assert_eq!(sent(COCKROACH_CCL), ["lock_timeout"]);
    }

    #[test]
    fn engines_print_their_names() {
        assert_eq!(Engine::CockroachDb.to_string(), "CockroachDB");
        assert_eq!(Engine::YugabyteDb.name(), "YugabyteDB");
    }
}

//! The transactional outbox (`stockroom_core::outbox`) on PostgreSQL: the events a unit of work
//! publishes, in `stockroom_outbox`, and the lanes relays lease, in `stockroom_outbox_lanes`
//! (both made by the migration `20261215000001_outbox`).
//!
//! - **Append** ([`Session::append_to_outbox`]): one statement in the unit of work's
//!   transaction, an `INSERT … SELECT FROM UNNEST(…)` of typed arrays, in the order given, so
//!   each event gets the next `sequence`. On PostgreSQL the same statement first takes
//!   `pg_advisory_xact_lock(`[`LANE_LOCK_CLASS`]`, lane)` for each distinct lane of the
//!   application's events, in ascending lane order (Stockroom's own events take none: their
//!   product's row lock orders them). The lock is held until the transaction ends, so a unit of
//!   work that publishes to a lane another one holds waits for it to commit or roll back: within
//!   an aggregate, sequence order is commit order. At most [`LANES`] locks per transaction,
//!   however many events. CockroachDB and YugabyteDB have no such locks
//!   ([`Engine::has_advisory_locks`]): there the events are written without them, and sequence
//!   order is insert order, not necessarily commit order.
//! - **Claim** ([`claim`]): two statements in autocommit. The first leases the free lanes (no
//!   holder, or a lease run out) with an undelivered event, oldest first, locked
//!   `FOR UPDATE SKIP LOCKED` (two claims never take the same lane and never wait for each
//!   other), to a fresh token until the server's `now()` plus the lease; the second, with a
//!   snapshot taken after the first committed, reads their undelivered events in sequence
//!   order (see [`LEASE_LANES`] for why not one). Leases are timed by the server's clock, the
//!   one clock every relay shares. A claim dropped between the two leaves its lanes leased
//!   until the lease runs out.
//! - **Settle** ([`PgLease`]): one statement in autocommit: the delivered events marked
//!   (`delivered_at` the caller's `now()`, only where still unset) and the lanes the token
//!   still holds given back.
//! - **Backlog** and **purge** ([`backlog`], [`purge`]): one statement each, on the primary.
//!
//! Every statement goes through [`Session`], so it is logged and its errors mapped like every
//! other of the adapter; the store-level ones run on a pooled connection of the primary, with
//! the connection's wait bounded by the operation's deadline, and, where they may wait for a row
//! lock (settle, purge), the `lock_timeout` a transfer's statement sets for itself
//! ([`AutocommitLockTimeout`]). Each is a transaction of its own: a future dropped midway leaves
//! no transaction or lock behind (the connection, its state unknown, goes back to sqlx's pool,
//! which checks it), and sending one again is harmless (a second claim leases other lanes; a
//! settle or a purge applies once).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{FromRow, Row};
use stockroom_core::adapter::until_deadline;
use stockroom_core::outbox::{Backlog, ClaimOptions, Event, EventId, Lease, NewEvent, LANES};
use stockroom_core::time::{now, Timestamp};
use stockroom_core::{Error, Result};
use uuid::Uuid;

use crate::codec::count_u64;
use crate::connections::Connections;
use crate::engine::Engine;
use crate::error::map_error;
use crate::options::PostgresOptions;
use crate::plans::Plans;
use crate::session::{store_closed, PgQuery, Session, StatementLog};
use crate::store::AutocommitLockTimeout;

/// The class key (the first `int4`) of the transaction-level advisory locks a unit of work takes
/// on the lanes it publishes to: `STOB` in ASCII. The second key is the lane. Advisory locks
/// with two `int4` keys never meet those with one `bigint` key (such as the migrations' lock,
/// `crate::migrate::LOCK_KEY`): `pg_locks` shows them with `objsubid` 2, `classid` this key and
/// `objid` the lane.
pub(crate) const LANE_LOCK_CLASS: i32 = 0x5354_4f42;

/// The outbox's columns an insert writes (`sequence` is the identity's, `delivered_at` unset).
macro_rules! insert_columns {
    () => {
        "id, subject, aggregate, lane, payload, created_at"
    };
}
pub(crate) use insert_columns;

/// How a store's sessions write to the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Publishing {
    /// Write Stockroom's own events ([`PostgresOptions::own_events`]).
    pub(crate) own_events: bool,
    /// Take the lane locks: on an engine with advisory locks.
    pub(crate) lane_locks: bool,
}

impl Publishing {
    /// What `options` ask for, on `engine`.
    pub(crate) fn of(options: &PostgresOptions, engine: Engine) -> Self {
        Self {
            own_events: options.own_events,
            lane_locks: engine.has_advisory_locks(),
        }
    }
}

/// The insert of an append: the events from `UNNEST` of `$1` ids, `$2` subjects, `$3`
/// aggregates, `$4` lanes, `$5` payloads, in their order (`WITH ORDINALITY`), each written at
/// `$6`; `$gate` a condition that must hold first.
macro_rules! append {
    ($prefix:expr, $gate:expr) => {
        concat!(
            $prefix,
            "INSERT INTO stockroom_outbox (",
            insert_columns!(),
            ") SELECT e.id, e.subject, e.aggregate, e.lane, e.payload, $6 ",
            "FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::bytea[]) ",
            "WITH ORDINALITY AS e(id, subject, aggregate, lane, payload, n)",
            $gate,
            " ORDER BY e.n"
        )
    };
}

/// An append on PostgreSQL: the lane locks, then the insert. `$7` the lanes to lock, distinct
/// and ascending, `$8` [`LANE_LOCK_CLASS`]. `locks` is materialized and read whole by the
/// insert's condition, a one-time filter the executor evaluates before it reads the first event,
/// so every lock is held (waited for, in the array's order) before any row goes in; an
/// unreferenced CTE would not run at all.
const APPEND: &str = append!(
    "WITH locks AS MATERIALIZED (SELECT pg_advisory_xact_lock($8, l) FROM UNNEST($7::int4[]) AS l) ",
    " WHERE (SELECT count(*) FROM locks) >= 0"
);

/// An append on an engine without advisory locks.
const APPEND_UNLOCKED: &str = append!("", "");

impl Session {
    /// Writes `events` to the outbox in this session's transaction, in order (see the module
    /// docs): one statement, none for no event.
    pub(crate) async fn append_to_outbox(&mut self, events: Vec<NewEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let publishing = self.publishing();
        let count = events.len();
        let (mut ids, mut subjects, mut aggregates, mut lanes, mut payloads) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        // Ascending and distinct: the order every unit of work takes them in.
        let mut locked = BTreeSet::new();
        for event in &events {
            if !event.is_own() {
                locked.insert(i32::from(event.lane()));
            }
            ids.push(event.id().as_uuid());
            subjects.push(event.subject());
            aggregates.push(event.aggregate());
            lanes.push(lane_i16(event.lane()));
            payloads.push(event.payload());
        }
        let sql = if publishing.lane_locks {
            APPEND
        } else {
            APPEND_UNLOCKED
        };
        let mut query = sqlx::query(sql)
            .bind(ids)
            .bind(subjects)
            .bind(aggregates)
            .bind(lanes)
            .bind(payloads)
            .bind(now());
        if publishing.lane_locks {
            let locked: Vec<i32> = locked.into_iter().collect();
            query = query.bind(locked).bind(LANE_LOCK_CLASS);
        }
        let inserted = self.execute(sql, query).await?.rows_affected();
        if inserted != count as u64 {
            return Err(Error::backend_message(format!(
                "the outbox took {inserted} of {count} events"
            )));
        }
        Ok(())
    }
}

/// A lane as the `smallint` column stores it.
pub(crate) fn lane_i16(lane: u16) -> i16 {
    // Lanes are below LANES (32).
    i16::try_from(lane).unwrap_or(i16::MAX)
}

/// The columns of an event, as a claim reads them ([`EventRow`]).
macro_rules! event_columns {
    () => {
        "sequence, id, subject, aggregate, lane, payload, created_at"
    };
}

/// A claim's first statement: the lanes. Binds: `$1` the most lanes, `$2` the claim's token,
/// `$3` the lease in milliseconds.
///
/// - `picked`: the free lanes with an undelivered event, the one whose oldest such event is
///   oldest first, at most `$1`, locked in that order; a lane another claim holds locked (its
///   statement still running) is skipped, not waited for, and does not count against `$1`. A
///   lane leased and committed by another claim since this statement's snapshot is read again
///   at its latest version (READ COMMITTED), found leased, and left out.
/// - those lanes, leased to `$2` until `now() + $3` ms.
///
/// The events are read by [`CLAIMED_EVENTS`], a statement of its own: its snapshot is taken
/// after this one committed, so it sees every settle that gave back a lane this one leased.
/// Read in this statement, with this statement's snapshot, the events of a lane another relay
/// claimed, delivered and gave back while this statement ran would still look undelivered, and
/// would be delivered twice.
const LEASE_LANES: &str = concat!(
    "WITH picked AS (",
    "SELECT l.lane FROM stockroom_outbox_lanes l CROSS JOIN LATERAL (",
    "SELECT o.sequence FROM stockroom_outbox o ",
    "WHERE o.lane = l.lane AND o.delivered_at IS NULL ORDER BY o.sequence LIMIT 1",
    ") oldest ",
    "WHERE l.holder IS NULL OR l.leased_until < now() ",
    "ORDER BY oldest.sequence LIMIT $1 FOR UPDATE OF l SKIP LOCKED",
    ") UPDATE stockroom_outbox_lanes l ",
    "SET holder = $2, leased_until = now() + $3::float8 * interval '1 millisecond' ",
    "FROM picked p WHERE l.lane = p.lane RETURNING l.lane"
);

/// A claim's second statement: the undelivered events of the lanes `$1` (those the first
/// leased), each lane's in sequence order (at most `$2` of each, through the pending index),
/// then at most `$2` of them all in sequence order.
const CLAIMED_EVENTS: &str = concat!(
    "SELECT e.sequence, e.id, e.subject, e.aggregate, e.lane, e.payload, e.created_at ",
    "FROM unnest($1::int2[]) AS l(lane) CROSS JOIN LATERAL (",
    "SELECT ",
    event_columns!(),
    " FROM stockroom_outbox o ",
    "WHERE o.lane = l.lane AND o.delivered_at IS NULL ORDER BY o.sequence LIMIT $2",
    ") e ORDER BY e.sequence LIMIT $2"
);

/// An event as [`CLAIMED_EVENTS`] reads it.
#[derive(FromRow)]
struct EventRow {
    sequence: i64,
    id: Uuid,
    subject: String,
    aggregate: String,
    lane: i16,
    payload: Vec<u8>,
    created_at: Timestamp,
}

impl EventRow {
    fn into_event(self) -> Result<Event> {
        let lane = u16::try_from(self.lane)
            .ok()
            .filter(|&lane| lane < LANES)
            .ok_or_else(|| {
                Error::backend_message(format!(
                    "the outbox holds an event on lane {}, not one of 0..{LANES}",
                    self.lane
                ))
            })?;
        Ok(Event {
            id: EventId::from_uuid(self.id),
            sequence: self.sequence,
            subject: self.subject,
            aggregate: self.aggregate,
            lane,
            payload: self.payload,
            created_at: self.created_at,
        })
    }
}

/// Claims events for the lease `token` with [`LEASE_LANES`] then [`CLAIMED_EVENTS`], on `session` (a pooled connection of the
/// primary, in autocommit): the events, in sequence order; none when no lane was leased.
pub(crate) async fn claim(
    session: &mut Session,
    options: &ClaimOptions,
    token: Uuid,
) -> Result<Vec<Event>> {
    let query = sqlx::query(LEASE_LANES)
        .bind(i64::from(options.max_lanes))
        .bind(token)
        .bind(options.lease_millis());
    let lanes: Vec<i16> = session
        .fetch_all(LEASE_LANES, query)
        .await?
        .iter()
        .map(|row| row.try_get::<i16, _>(0).map_err(map_error))
        .collect::<Result<_>>()?;
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    let query = sqlx::query(CLAIMED_EVENTS)
        .bind(&lanes)
        .bind(i64::try_from(options.max_events).unwrap_or(i64::MAX));
    let rows = session.fetch_all(CLAIMED_EVENTS, query).await?;
    rows.iter()
        .map(|row| {
            EventRow::from_row(row)
                .map_err(map_error)
                .and_then(EventRow::into_event)
        })
        .collect()
}

/// A settle, in one statement: `settings` sets `$4`, a `lock_timeout` for this statement's
/// transaction (or NULL), before anything waits; then the events `$1` still undelivered are
/// marked delivered at `$2` (a data-modifying CTE runs whether or not it is read), and the
/// lanes `$3` holds are given back.
const SETTLE: &str = concat!(
    "WITH settings AS MATERIALIZED (",
    "SELECT $4::text IS NULL OR set_config('lock_timeout', $4, true) IS NOT NULL AS done",
    "), delivered AS (",
    "UPDATE stockroom_outbox SET delivered_at = $2 ",
    "WHERE id = ANY($1) AND delivered_at IS NULL AND (SELECT done FROM settings)",
    ") UPDATE stockroom_outbox_lanes SET holder = NULL, leased_until = NULL ",
    "WHERE holder = $3 AND (SELECT done FROM settings)"
);

/// The lease of a claim: its token, and what it needs to settle on the store's primary.
pub(crate) struct PgLease {
    token: Uuid,
    connections: Arc<Connections>,
    plans: Arc<Plans>,
    log: StatementLog,
    publishing: Publishing,
    lock_timeout: AutocommitLockTimeout,
}

impl PgLease {
    pub(crate) fn new(
        token: Uuid,
        connections: Arc<Connections>,
        plans: Arc<Plans>,
        log: StatementLog,
        publishing: Publishing,
        lock_timeout: AutocommitLockTimeout,
    ) -> Self {
        Self {
            token,
            connections,
            plans,
            log,
            publishing,
            lock_timeout,
        }
    }
}

impl fmt::Debug for PgLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLease")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Lease for PgLease {
    /// [`SETTLE`] on a pooled connection of the primary, in autocommit.
    async fn settle(self: Box<Self>, delivered: Vec<EventId>) -> Result<()> {
        if self.connections.is_closed() {
            return Err(store_closed());
        }
        let lock_timeout = self.lock_timeout.now("the claim to be settled")?;
        let lease = until_deadline(self.connections.lend(), "a pooled PostgreSQL connection")
            .await?
            .map_err(map_error)?;
        let PgLease {
            token,
            connections,
            plans,
            log,
            publishing,
            ..
        } = *self;
        let mut session = Session::pooled(lease, connections, plans, log, publishing);
        let ids: Vec<Uuid> = delivered.iter().map(EventId::as_uuid).collect();
        let at = now();
        // A settle applies once however often it runs (it marks only what is undelivered and
        // frees only what the token holds), so a serialization failure or a deadlock (at
        // REPEATABLE READ or SERIALIZABLE, against a concurrent claim) is retried here rather
        // than left to the lease: otherwise the delivered events would be delivered again.
        let mut attempt = 1;
        loop {
            let query = sqlx::query(SETTLE)
                .bind(&ids)
                .bind(at)
                .bind(token)
                .bind(lock_timeout.clone());
            match session.execute(SETTLE, query).await {
                Err(error) if error.is_transient() && attempt < SETTLE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                    attempt += 1;
                }
                outcome => return outcome.map(drop),
            }
        }
    }
}

/// How many times a settle runs before its transient error is returned.
const SETTLE_ATTEMPTS: u64 = 5;

/// The backlog: undelivered events, the oldest one's time, delivered events (each through its
/// partial index).
const BACKLOG: &str = concat!(
    "SELECT (SELECT count(*) FROM stockroom_outbox WHERE delivered_at IS NULL), ",
    "(SELECT min(created_at) FROM stockroom_outbox WHERE delivered_at IS NULL), ",
    "(SELECT count(*) FROM stockroom_outbox WHERE delivered_at IS NOT NULL)"
);

/// [`BACKLOG`] on `session`.
pub(crate) async fn backlog(session: &mut Session) -> Result<Backlog> {
    let row = session.fetch_one(BACKLOG, sqlx::query(BACKLOG)).await?;
    let (pending, oldest, delivered): (i64, Option<Timestamp>, i64) =
        FromRow::from_row(&row).map_err(map_error)?;
    Ok(Backlog {
        pending: count_u64(pending),
        oldest,
        delivered: count_u64(delivered),
    })
}

/// A purge: the events delivered before `$1`; `$2` a `lock_timeout` for this statement's
/// transaction (or NULL), set before the first row is deleted (an uncorrelated subquery runs
/// once, when first needed).
const PURGE: &str = concat!(
    "DELETE FROM stockroom_outbox WHERE delivered_at < $1 ",
    "AND ($2::text IS NULL OR (SELECT set_config('lock_timeout', $2, true)) IS NOT NULL)"
);

/// [`PURGE`] on `session`: how many events it deleted.
pub(crate) async fn purge(
    session: &mut Session,
    before: Timestamp,
    lock_timeout: Option<String>,
) -> Result<u64> {
    let query: PgQuery<'_> = sqlx::query(PURGE).bind(before).bind(lock_timeout);
    Ok(session.execute(PURGE, query).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_lock_class_is_stob_and_fits_an_int4() {
        assert_eq!(&LANE_LOCK_CLASS.to_be_bytes(), b"STOB");
    }

    #[test]
    fn the_append_locks_before_it_inserts_and_only_on_postgres() {
        let locks = APPEND.find("pg_advisory_xact_lock").unwrap();
        assert!(locks < APPEND.find("INSERT").unwrap());
        assert!(APPEND.contains("(SELECT count(*) FROM locks)"), "{APPEND}");
        assert!(!APPEND_UNLOCKED.contains("advisory"));
        let options = PostgresOptions::default();
        assert!(Publishing::of(&options, Engine::PostgreSql).lane_locks);
        assert!(!Publishing::of(&options, Engine::CockroachDb).lane_locks);
        assert!(!Publishing::of(&options, Engine::YugabyteDb).lane_locks);
    }
}

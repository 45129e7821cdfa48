//! The transactional outbox (`stockroom_core::outbox`) on MariaDB: the events units of work
//! publish, in `stockroom_outbox`; the lanes relays lease, in `stockroom_outbox_lanes`; and the
//! lanes' publishing locks, in `stockroom_outbox_lane_locks` (all made by the migration
//! `0003_outbox`).
//!
//! # Commit order within an aggregate
//!
//! An event's `sequence` is the table's `AUTO_INCREMENT`, given when the row is inserted, not
//! when its transaction commits. Two units of work that publish to one aggregate could take 10
//! and 11 and commit 11 first: a relay would deliver 11, then find 10. PostgreSQL orders them
//! with a transaction-level advisory lock per lane; MariaDB has none (`GET_LOCK` is the
//! session's, outlives the transaction, and is refused on a Galera cluster), so a row lock does
//! the same: before it inserts an application's events, [`append_events`] increments
//! `publications` of each of their lanes' rows in `stockroom_outbox_lane_locks`, ascending (one
//! `UPDATE … WHERE lane IN (…)`, which InnoDB applies in primary key order), and the unit of
//! work holds those row locks until it commits or rolls back. A second unit of work publishing
//! to the lane waits for the first one's end before it inserts, so it takes a larger sequence
//! and commits later: within a lane, sequence order is commit order. Stockroom's own events take
//! no lane lock: each is written under its product's row lock, which orders them the same way.
//! At most [`LANES`] row locks per transaction, however many events. Two units of work that
//! publish to the same two lanes in opposite orders (in two calls each) can deadlock: InnoDB
//! rolls one of them back (1213, `Transient`), as PostgreSQL does.
//!
//! Why a table of its own rather than the lease rows of `stockroom_outbox_lanes`: a claim leases
//! a lane by updating its row, and a settle gives it back the same way. With the publishing
//! lock on that row too, a settle would wait for every unit of work still open on one of its
//! lanes (an application may keep one open for seconds), and a claim, which must not wait,
//! would skip a lane as long as units of work publish to it back to back: under a steady load
//! its events would never be delivered. Kept apart, relays and units of work never wait for each
//! other: a claim or a settle locks only lease rows and events already committed, a unit of work
//! only publishing-lock rows and the events it inserts. (A settle marks events delivered, which
//! no unit of work locks; a claim reads events without locking them.)
//!
//! It is an `UPDATE`, not a `SELECT … FOR UPDATE`, for Galera: row locks are each node's own,
//! but two transactions that changed one row on two nodes fail certification (the later one
//! gets 1213 at its commit and runs again), so within a lane, sequence order stays commit order
//! across the cluster. (A node's `AUTO_INCREMENT` counter passes every value it applies from
//! the others, so a unit of work that starts after another's commit was applied takes a
//! larger number.)
//!
//! Every statement on a set of lanes names them in an `IN` list and reads the table through its
//! primary key (`FORCE INDEX (PRIMARY)`): on a 32-row table the optimizer would otherwise scan
//! it whole, locking every row it passes (until the transaction ends at REPEATABLE READ, a unit
//! of work's isolation level if the application chose it, and so serializing every publisher;
//! for a moment at READ COMMITTED, long enough for a concurrent claim to skip a lane it should
//! have had). The adapter's tests check the plans.
//!
//! # Relays
//!
//! Every write outside a unit of work (a claim, a settle, a batch of a purge) is one
//! transaction of its own, at READ COMMITTED whatever the store's isolation level: at
//! REPEATABLE READ a claim would read its lanes' events in a snapshot taken before it locked
//! them (see below), and a range scan would take gap locks that units of work inserting events
//! wait for; at SERIALIZABLE every read would lock. A future dropped before the `COMMIT` was
//! sent leaves nothing (its session rolls the transaction back, or closes its connection if a
//! statement was cut short, before anything else runs on it); dropped while the `COMMIT` is on
//! its way, the transaction applied whole or not at all. A claim dropped after its commit holds
//! its lanes until the lease runs out, then its events are claimed again.
//!
//! - **Claim** ([`claim_events`]): (1) a plain read of the free lanes (no holder, or a lease run
//!   out by the server's clock, `UTC_TIMESTAMP(6)`) that have an undelivered event, the one
//!   whose oldest such event is oldest first; (2) those lanes locked in that order,
//!   `FOR UPDATE SKIP LOCKED`, as many as the claim may take, with the check that they are still
//!   free: a lane another claim (or a settle) is writing is skipped, not waited for, and the
//!   next candidates are tried; (3) the lanes leased to a fresh token until the server's time
//!   plus the lease; (4) their undelivered events, in sequence order, read by a statement whose
//!   snapshot (READ COMMITTED: one per statement) is taken after the lanes were locked, so it
//!   sees every settle that gave one of them back (a settle writes the lane's row, which (2)
//!   could lock only once that settle had ended). A claim never waits for a lock, so claims
//!   never wait for one another nor deadlock. If (4) finds no event (a relay delivered them
//!   between (1) and (2)) the transaction is rolled back: nothing is leased. On Galera, two
//!   claims on two nodes that lease one lane fail certification (1213, `Transient`, for the
//!   later one to commit): a lane is still leased to one claim at a time.
//! - **Settle** ([`MariaDbLease`]): the delivered events marked (`delivered_at` the caller's
//!   clock, only where still unset), and the claim's lanes that its token still holds given back,
//!   in one transaction. It may wait only for a claim taking one of its lanes after its lease ran
//!   out (a claim's short transaction), or for another settle of the same events; a deadlock or
//!   a lock wait timeout (or a Galera certification failure) is retried, as on PostgreSQL (it
//!   applies once however often it runs), so that delivered events are not delivered again.
//! - **Backlog** ([`outbox_backlog`]): one statement in autocommit (one snapshot).
//! - **Purge** ([`purge_delivered_events`]): the delivered events delivered before the bound,
//!   [`PURGE_BATCH`] at a time, each batch a transaction of its own (a Galera write set holds
//!   the rows whole, payloads included: one statement for a month of events could exceed
//!   `wsrep_max_ws_size` and would stall every node while it applied). A purge cut short has
//!   deleted some of the events and none of the others; running it again deletes the rest.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::MySqlRow;
use sqlx::AssertSqlSafe;
use stockroom_core::adapter::{deadline_reached, time_left, until_deadline};
use stockroom_core::outbox::{
    Backlog, ClaimOptions, Claimed, Event, EventId, Lease, NewEvent, LANES,
};
use stockroom_core::time::{now, Timestamp};
use stockroom_core::{Error, Result};
use uuid::Uuid;

use crate::codec::{at, count_u64, timestamp_at, utc};
use crate::session::{store_closed, MyQuery, Session};
use crate::store::Shared;

/// A list of [`LANES`] placeholders: every statement on a set of lanes binds exactly 32 (the
/// set, then its last lane again), so that each is one prepared statement whatever the set.
macro_rules! lane_list {
    () => {
        concat!(
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ",
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    };
}

/// The columns an append writes (`sequence` is the `AUTO_INCREMENT`'s, `delivered_at` unset).
macro_rules! insert_columns {
    () => {
        "(`id`, `subject`, `aggregate`, `lane`, `payload`, `created_at`)"
    };
}

/// The columns of an event, in the order [`event`] reads them.
macro_rules! event_columns {
    () => {
        "o.`sequence`, o.`id`, o.`subject`, o.`aggregate`, o.`lane`, o.`payload`, o.`created_at`"
    };
}

/// The publishing locks of an append: the lanes' rows, incremented (and so locked until the
/// transaction ends), in primary key order.
const LOCK_LANES: &str = concat!(
    "UPDATE `stockroom_outbox_lane_locks` FORCE INDEX (PRIMARY) ",
    "SET `publications` = `publications` + 1 ",
    "WHERE `lane` IN ",
    lane_list!()
);

/// The most events one `INSERT` writes.
const MOST_ROWS_PER_INSERT: usize = 256;

/// The most payload bytes one `INSERT` carries (well under the server's default
/// `max_allowed_packet`, 16 MiB; a single event's payload is at most 1 MiB).
const MOST_BYTES_PER_INSERT: usize = 4 << 20;

/// `INSERT`s of 1, 2, 4, … [`MOST_ROWS_PER_INSERT`] events: an append writes its events in
/// statements of those sizes, so a connection prepares at most nine of them.
static INSERTS: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
    powers_of_two(MOST_ROWS_PER_INSERT)
        .map(|rows| {
            let values = vec!["(?, ?, ?, ?, ?, ?)"; rows].join(", ");
            Arc::from(format!(
                concat!(
                    "INSERT INTO `stockroom_outbox` ",
                    insert_columns!(),
                    " VALUES {}"
                ),
                values
            ))
        })
        .collect()
});

/// 1, 2, 4, … up to `most` (a power of two).
fn powers_of_two(most: usize) -> impl Iterator<Item = usize> {
    (0..=most.trailing_zeros()).map(|k| 1 << k)
}

/// Writes `events` to the outbox in `session`'s transaction (a unit of work's), in order, each
/// with the next sequence (see the module docs): first the publishing locks of the lanes of the
/// application's events, then the events, in batches. None for no event.
pub(crate) async fn append_events(session: &mut Session, events: Vec<NewEvent>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    if !session.in_transaction() {
        // In autocommit the lock would end with its own statement, before the events go in.
        return Err(Error::backend_message(
            "events are written in a unit of work's transaction",
        ));
    }
    // Ascending and distinct: one statement locks them in that order.
    let lanes: BTreeSet<u16> = events
        .iter()
        .filter(|event| !event.is_own())
        .map(NewEvent::lane)
        .collect();
    if !lanes.is_empty() {
        let lanes: Vec<u16> = lanes.into_iter().collect();
        let query = bind_lanes(sqlx::query(LOCK_LANES), &lanes);
        let locked = session.execute(LOCK_LANES, query).await?.rows_affected();
        if locked != lanes.len() as u64 {
            // A lane without its row would be published to without a lock.
            return Err(Error::backend_message(format!(
                "stockroom_outbox_lane_locks holds {locked} of the lanes {lanes:?}"
            )));
        }
    }
    let at = utc(now());
    for batch in insert_batches(&events) {
        let sql = &INSERTS[batch.len().trailing_zeros() as usize];
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(sql)));
        for event in &events[batch.clone()] {
            query = query
                .bind(event.id().as_uuid())
                .bind(event.subject())
                .bind(event.aggregate())
                .bind(lane_i16(event.lane()))
                .bind(event.payload())
                .bind(at);
        }
        let inserted = session.execute(sql, query).await?.rows_affected();
        if inserted != batch.len() as u64 {
            return Err(Error::backend_message(format!(
                "the outbox took {inserted} of {} events",
                batch.len()
            )));
        }
    }
    Ok(())
}

/// The ranges of `events` each `INSERT` writes, in order: runs of at most
/// [`MOST_ROWS_PER_INSERT`] events and [`MOST_BYTES_PER_INSERT`] payload bytes (at least one
/// event each), each split into powers of two, largest first.
fn insert_batches(events: &[NewEvent]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let mut end = start + 1;
        let mut bytes = events[start].payload().len();
        while end < events.len() && end - start < MOST_ROWS_PER_INSERT {
            bytes += events[end].payload().len();
            if bytes > MOST_BYTES_PER_INSERT {
                break;
            }
            end += 1;
        }
        let mut run = start;
        while run < end {
            let size = 1 << (end - run).ilog2();
            batches.push(run..run + size);
            run += size;
        }
        start = end;
    }
    batches
}

/// A lane as the `SMALLINT` columns store it.
fn lane_i16(lane: u16) -> i16 {
    // Lanes are below LANES (32).
    i16::try_from(lane).unwrap_or(i16::MAX)
}

/// `query` with `lanes` (1 to 32 of them) bound to a [`lane_list!`]: the lanes, then the last
/// one again up to 32 (a value repeated in an `IN` list matches once).
fn bind_lanes<'q>(mut query: MyQuery<'q>, lanes: &[u16]) -> MyQuery<'q> {
    let last = lanes.last().copied().unwrap_or(0);
    for k in 0..usize::from(LANES) {
        query = query.bind(lane_i16(lanes.get(k).copied().unwrap_or(last)));
    }
    query
}

/// A session in a new READ COMMITTED transaction (whatever the store's level: see the module
/// docs); the wait for a connection ends at the deadline of the operation in progress, if any.
async fn begin_read_committed(shared: &Arc<Shared>) -> Result<Session> {
    // Through the store, which begins every transaction the same way (see `Shared::begin_with`).
    shared
        .begin_with(crate::store::begin_statement(
            crate::IsolationLevel::ReadCommitted,
        ))
        .await
}

/// Commits `session`'s transaction (a lost connection during the `COMMIT` is
/// `AmbiguousCommit`).
async fn commit(session: Session) -> Result<()> {
    session.commit(false).await
}

/// Rolls `session`'s transaction back. Its failure is not reported: the transaction ends with
/// the connection anyway.
async fn roll_back(session: Session) {
    if let Err(error) = session.rollback().await {
        tracing::debug!(
            target: "stockroom::sql",
            %error,
            "rollback of an outbox transaction failed"
        );
    }
}

/// `Err(deadline_reached)` when the operation in progress has no time left.
fn ensure_time_left(what: &str) -> Result<()> {
    if time_left().is_some_and(|left| left.is_zero()) {
        return Err(deadline_reached(what));
    }
    Ok(())
}

/// A claim's step 1: the free lanes with an undelivered event, the one whose oldest undelivered
/// event is oldest first (each lane's oldest is one lookup in `stockroom_outbox_pending`).
const CANDIDATES: &str = concat!(
    "SELECT `lane` FROM (SELECT l.`lane`, (SELECT o.`sequence` FROM `stockroom_outbox` o ",
    "WHERE o.`lane` = l.`lane` AND o.`delivered_at` IS NULL ORDER BY o.`sequence` LIMIT 1) ",
    "AS `oldest` FROM `stockroom_outbox_lanes` l ",
    "WHERE l.`holder` IS NULL OR l.`leased_until` < UTC_TIMESTAMP(6)) AS c ",
    "WHERE `oldest` IS NOT NULL ORDER BY `oldest`"
);

/// A claim's step 2: of the lanes bound, those still free, locked; those another transaction
/// holds locked are skipped, not waited for. (At READ COMMITTED a row read and found no longer
/// free is unlocked at once.)
const LOCK_FREE_LANES: &str = concat!(
    "SELECT `lane` FROM `stockroom_outbox_lanes` FORCE INDEX (PRIMARY) WHERE `lane` IN ",
    lane_list!(),
    " AND (`holder` IS NULL OR `leased_until` < UTC_TIMESTAMP(6)) FOR UPDATE SKIP LOCKED"
);

/// A claim's step 3: the lanes (locked by step 2) leased to the token (the first bind) for the
/// lease (the second, in microseconds) from the server's time.
const LEASE_LANES: &str = concat!(
    "UPDATE `stockroom_outbox_lanes` FORCE INDEX (PRIMARY) SET `holder` = ?, ",
    "`leased_until` = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND WHERE `lane` IN ",
    lane_list!()
);

/// A claim's step 4, for 1 to 32 lanes: the sequences of each lane's first undelivered events
/// (at most the claim's `max_events` of each, in order through `stockroom_outbox_pending`),
/// the first `max_events` of them all, then those events read whole. Binds: each lane and the
/// most events, then the most events again. Indexed by the number of lanes less one.
static CLAIMED_EVENTS: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
    (1..=usize::from(LANES))
        .map(|lanes| {
            let per_lane = vec![
                concat!(
                    "(SELECT `sequence` FROM `stockroom_outbox` WHERE `lane` = ? ",
                    "AND `delivered_at` IS NULL ORDER BY `sequence` LIMIT ?)"
                );
                lanes
            ]
            .join(" UNION ALL ");
            Arc::from(format!(
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM (SELECT `sequence` FROM ({}) AS pending ",
                    "ORDER BY `sequence` LIMIT ?) AS picked ",
                    "JOIN `stockroom_outbox` o ON o.`sequence` = picked.`sequence` ",
                    "ORDER BY o.`sequence`"
                ),
                per_lane
            ))
        })
        .collect()
});

/// The lane in column `index` of `row`.
fn lane_in(row: &MySqlRow, index: usize) -> Result<u16> {
    let lane: i16 = at(row, index)?;
    u16::try_from(lane)
        .ok()
        .filter(|&lane| lane < LANES)
        .ok_or_else(|| {
            Error::backend_message(format!(
                "the outbox holds lane {lane}, not one of 0..{LANES}"
            ))
        })
}

/// The lane a lane's statement selected (its first column).
fn lane_at(row: &MySqlRow) -> Result<u16> {
    lane_in(row, 0)
}

/// Decodes an event selected with [`event_columns!`].
fn event(row: &MySqlRow) -> Result<Event> {
    let lane = lane_in(row, 4)?;
    Ok(Event {
        sequence: at(row, 0)?,
        id: EventId::from_uuid(at::<Uuid>(row, 1)?),
        subject: at(row, 2)?,
        aggregate: at(row, 3)?,
        lane,
        payload: at(row, 5)?,
        created_at: timestamp_at(row, 6)?
            .ok_or_else(|| Error::backend_message("an outbox event without created_at"))?,
    })
}

/// Claims events for a relay (see the module docs): their lanes leased to a fresh token, in one
/// READ COMMITTED transaction.
pub(crate) async fn claim_events(shared: &Arc<Shared>, options: &ClaimOptions) -> Result<Claimed> {
    options.check()?;
    ensure_time_left("the claim to be sent")?;
    let token = Uuid::now_v7();
    let mut session = begin_read_committed(shared).await?;
    // Bounded by the deadline up to the commit: cut short, the transaction rolls back.
    let leased = until_deadline(lease(&mut session, options, token), "the claim").await?;
    match leased {
        Ok(Some((lanes, events))) => {
            commit(session).await?;
            let lease = MariaDbLease {
                token,
                lanes,
                shared: Arc::clone(shared),
            };
            Ok(Claimed::new(events, Box::new(lease)))
        }
        Ok(None) => {
            roll_back(session).await;
            Ok(Claimed::nothing())
        }
        Err(error) => {
            roll_back(session).await;
            Err(error)
        }
    }
}

/// A claim's four steps on `session` (see the module docs): the lanes leased to `token`,
/// ascending, and their events in sequence order; `None` when no lane with an undelivered event
/// was free.
async fn lease(
    session: &mut Session,
    options: &ClaimOptions,
    token: Uuid,
) -> Result<Option<(Vec<u16>, Vec<Event>)>> {
    let candidates = session
        .fetch_all(CANDIDATES, sqlx::query(CANDIDATES))
        .await?
        .iter()
        .map(lane_at)
        .collect::<Result<Vec<u16>>>()?;
    let most = usize::from(options.max_lanes);
    let mut leased: Vec<u16> = Vec::with_capacity(most);
    let mut next = candidates.as_slice();
    while leased.len() < most && !next.is_empty() {
        // As many candidates as lanes are still wanted, oldest first: all of them unless
        // another claim holds some, whose places the next ones take.
        let (batch, rest) = next.split_at((most - leased.len()).min(next.len()));
        next = rest;
        let query = bind_lanes(sqlx::query(LOCK_FREE_LANES), batch);
        let locked: BTreeSet<u16> = session
            .fetch_all(LOCK_FREE_LANES, query)
            .await?
            .iter()
            .map(lane_at)
            .collect::<Result<_>>()?;
        leased.extend(batch.iter().filter(|lane| locked.contains(lane)));
    }
    if leased.is_empty() {
        return Ok(None);
    }
    leased.sort_unstable();
    let lease_micros = options.lease_millis().saturating_mul(1_000);
    let query = bind_lanes(
        sqlx::query(LEASE_LANES).bind(token).bind(lease_micros),
        &leased,
    );
    let updated = session.execute(LEASE_LANES, query).await?.rows_affected();
    if updated != leased.len() as u64 {
        // Cannot happen: this transaction holds the rows' locks since step 2.
        return Err(Error::backend_message(format!(
            "a claim leased {updated} of the lanes {leased:?} it had locked"
        )));
    }
    let most_events = i64::try_from(options.max_events).unwrap_or(i64::MAX);
    let sql = &CLAIMED_EVENTS[leased.len() - 1];
    let mut query = sqlx::query(AssertSqlSafe(Arc::clone(sql)));
    for lane in &leased {
        query = query.bind(lane_i16(*lane)).bind(most_events);
    }
    let query = query.bind(most_events);
    let events = session
        .fetch_all(sql, query)
        .await?
        .iter()
        .map(event)
        .collect::<Result<Vec<Event>>>()?;
    if events.is_empty() {
        // Delivered between steps 1 and 2: lease nothing rather than lanes without events.
        return Ok(None);
    }
    Ok(Some((leased, events)))
}

/// The most event ids one statement of a settle marks.
const MOST_IDS_PER_MARK: usize = 1024;

/// Marks of 1, 2, 4, … [`MOST_IDS_PER_MARK`] ids: a settle binds its ids in lists of those
/// sizes (the last id repeated to fill one), so a connection prepares at most eleven of them.
/// Binds: the delivery time, then the ids.
static MARKS: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
    powers_of_two(MOST_IDS_PER_MARK)
        .map(|ids| {
            Arc::from(format!(
                concat!(
                    "UPDATE `stockroom_outbox` FORCE INDEX (`stockroom_outbox_id`) ",
                    "SET `delivered_at` = ? ",
                    "WHERE `delivered_at` IS NULL AND `id` IN ({})"
                ),
                vec!["?"; ids].join(", ")
            ))
        })
        .collect()
});

/// A settle's last statement: the claim's lanes its token still holds, given back. Binds: the
/// token, then the lanes.
const GIVE_BACK: &str = concat!(
    "UPDATE `stockroom_outbox_lanes` FORCE INDEX (PRIMARY) ",
    "SET `holder` = NULL, `leased_until` = NULL ",
    "WHERE `holder` = ? AND `lane` IN ",
    lane_list!()
);

/// How many times a settle runs before its transient error is returned.
const SETTLE_ATTEMPTS: u64 = 5;

/// The lease of a claim: its token, the lanes it leased, and the store to settle it on.
pub(crate) struct MariaDbLease {
    token: Uuid,
    /// Ascending, 1 to 32.
    lanes: Vec<u16>,
    shared: Arc<Shared>,
}

impl fmt::Debug for MariaDbLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariaDbLease")
            .field("token", &self.token)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Lease for MariaDbLease {
    /// The events marked and the lanes given back in one READ COMMITTED transaction, retried on
    /// a transient failure (see the module docs).
    async fn settle(self: Box<Self>, delivered: Vec<EventId>) -> Result<()> {
        let ids: Vec<Uuid> = delivered.iter().map(EventId::as_uuid).collect();
        let at = utc(now());
        let mut attempt = 1;
        loop {
            if self.shared.is_closed() {
                return Err(store_closed());
            }
            ensure_time_left("the claim to be settled")?;
            match self.settle_once(&ids, at).await {
                // A settle applies once however often it runs (it marks only what is
                // undelivered and frees only what the token holds), so a deadlock, a lock wait
                // timeout or a certification failure is retried here rather than left to the
                // lease: otherwise the delivered events would be delivered again.
                Err(error)
                    if error.is_transient()
                        && attempt < SETTLE_ATTEMPTS
                        && time_left().is_none_or(|left| !left.is_zero()) =>
                {
                    tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

impl MariaDbLease {
    /// One attempt of a settle: one transaction, committed.
    async fn settle_once(&self, ids: &[Uuid], at: chrono::NaiveDateTime) -> Result<()> {
        let mut session = begin_read_committed(&self.shared).await?;
        let work = until_deadline(self.mark_and_give_back(&mut session, ids, at), "the settle")
            .await
            .and_then(|done| done);
        match work {
            Ok(()) => commit(session).await,
            Err(error) => {
                roll_back(session).await;
                Err(error)
            }
        }
    }

    async fn mark_and_give_back(
        &self,
        session: &mut Session,
        ids: &[Uuid],
        at: chrono::NaiveDateTime,
    ) -> Result<()> {
        for chunk in ids.chunks(MOST_IDS_PER_MARK) {
            let size = chunk.len().next_power_of_two();
            let sql = &MARKS[size.trailing_zeros() as usize];
            let mut query = sqlx::query(AssertSqlSafe(Arc::clone(sql))).bind(at);
            let last = chunk[chunk.len() - 1];
            for k in 0..size {
                query = query.bind(chunk.get(k).copied().unwrap_or(last));
            }
            session.execute(sql, query).await?;
        }
        let query = bind_lanes(sqlx::query(GIVE_BACK).bind(self.token), &self.lanes);
        session.execute(GIVE_BACK, query).await?;
        Ok(())
    }
}

/// The backlog: undelivered events, the oldest one's time, delivered events (each through
/// `stockroom_outbox_delivered`: the oldest time is its first entry).
const BACKLOG: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM `stockroom_outbox` WHERE `delivered_at` IS NULL), ",
    "(SELECT MIN(`created_at`) FROM `stockroom_outbox` WHERE `delivered_at` IS NULL), ",
    "(SELECT COUNT(*) FROM `stockroom_outbox` WHERE `delivered_at` IS NOT NULL)"
);

/// What waits in the outbox: [`BACKLOG`] on a pooled connection in autocommit.
pub(crate) async fn outbox_backlog(shared: &Arc<Shared>) -> Result<Backlog> {
    ensure_time_left("the backlog to be read")?;
    let mut session = shared.session().await?;
    let row = session.fetch_one(BACKLOG, sqlx::query(BACKLOG)).await?;
    Ok(Backlog {
        pending: count_u64(at(&row, 0)?),
        oldest: timestamp_at(&row, 1)?,
        delivered: count_u64(at(&row, 2)?),
    })
}

/// How many events one batch of a purge deletes.
const PURGE_BATCH: u64 = 1_000;

/// A batch of a purge: the events delivered before the bound, oldest delivery first.
const PURGE: &str = concat!(
    "DELETE FROM `stockroom_outbox` WHERE `delivered_at` < ? ",
    "ORDER BY `delivered_at` LIMIT 1000"
);

/// Deletes the events delivered before `before` (a time every backend stores, or a validation
/// error on `before`), [`PURGE_BATCH`] at a time, each batch committed on its own (see the
/// module docs); how many.
pub(crate) async fn purge_delivered_events(shared: &Arc<Shared>, before: Timestamp) -> Result<u64> {
    let before = utc(stockroom_core::time::supported("before", before)?);
    let mut purged = 0;
    loop {
        ensure_time_left("the purge to be sent")?;
        let mut session = begin_read_committed(shared).await?;
        let deleted = until_deadline(
            session.execute(PURGE, sqlx::query(PURGE).bind(before)),
            "the purge",
        )
        .await
        .and_then(|done| done);
        let deleted = match deleted {
            Ok(result) => result.rows_affected(),
            Err(error) => {
                roll_back(session).await;
                return Err(error);
            }
        };
        commit(session).await?;
        purged += deleted;
        if deleted < PURGE_BATCH {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(payload_sizes: &[usize]) -> Vec<NewEvent> {
        payload_sizes
            .iter()
            .map(|&n| NewEvent::new("orders.placed", "order-1", vec![0; n]).unwrap())
            .collect()
    }

    #[test]
    fn lane_lists_have_a_placeholder_per_lane() {
        let count = |sql: &str| sql.matches('?').count();
        assert_eq!(count(lane_list!()), usize::from(LANES));
        assert_eq!(count(LOCK_LANES), usize::from(LANES));
        assert_eq!(count(LOCK_FREE_LANES), usize::from(LANES));
        assert_eq!(count(LEASE_LANES), 2 + usize::from(LANES));
        assert_eq!(count(GIVE_BACK), 1 + usize::from(LANES));
        assert!(PURGE.ends_with(&format!("LIMIT {PURGE_BATCH}")), "{PURGE}");
    }

    #[test]
    fn the_variable_statements_bind_what_their_callers_bind() {
        for (k, sql) in INSERTS.iter().enumerate() {
            assert_eq!(sql.matches('?').count(), 6 << k, "{sql}");
        }
        assert_eq!(INSERTS.len(), 9);
        for (k, sql) in MARKS.iter().enumerate() {
            assert_eq!(sql.matches('?').count(), 1 + (1 << k), "{sql}");
        }
        assert_eq!(MARKS.len(), 11);
        for (k, sql) in CLAIMED_EVENTS.iter().enumerate() {
            assert_eq!(sql.matches('?').count(), 2 * (k + 1) + 1, "{sql}");
        }
        assert_eq!(CLAIMED_EVENTS.len(), usize::from(LANES));
    }

    #[test]
    fn appends_are_cut_in_powers_of_two_within_the_bounds() {
        let sizes = |events: &[NewEvent]| -> Vec<usize> {
            insert_batches(events).iter().map(Range::len).collect()
        };
        assert_eq!(sizes(&events(&[1])), [1]);
        assert_eq!(sizes(&events(&[1; 13])), [8, 4, 1]);
        assert_eq!(sizes(&events(&[1; 300])), [256, 32, 8, 4]);
        // 1 MiB payloads: four fill a statement's 4 MiB.
        let mib = 1 << 20;
        assert_eq!(sizes(&events(&[mib; 6])), [4, 2]);
        assert_eq!(sizes(&events(&[mib, mib, 10, mib, mib])), [4, 1]);
        // Contiguous and covering, in order.
        let many = events(&[7; 1000]);
        let batches = insert_batches(&many);
        assert_eq!(batches.first().unwrap().start, 0);
        assert_eq!(batches.last().unwrap().end, 1000);
        assert!(batches.windows(2).all(|w| w[0].end == w[1].start));
        assert!(batches.iter().all(|b| b.len().is_power_of_two()));
    }

    #[test]
    fn lanes_bind_a_value_per_placeholder() {
        let mut query = bind_lanes(sqlx::query(LOCK_LANES), &[3, 7]);
        let arguments = sqlx::Execute::take_arguments(&mut query).unwrap().unwrap();
        assert_eq!(sqlx::Arguments::len(&arguments), usize::from(LANES));
    }
}

#[cfg(all(test, feature = "testing"))]
mod plans {
    use sqlx::Row;
    use stockroom_core::Store;

    use super::*;
    use crate::testing::TestDatabase;

    /// `sql` with its placeholders replaced by `values`, in order (for `EXPLAIN`, which takes
    /// no parameters here).
    fn literal(sql: &str, values: &[String]) -> String {
        let mut values = values.iter();
        sql.chars()
            .map(|c| match c {
                '?' => values.next().expect("a value per placeholder").clone(),
                c => c.to_string(),
            })
            .collect()
    }

    /// How MariaDB reads each table of `sql` (`EXPLAIN`'s `type` and `key`).
    async fn plan(conn: &mut sqlx::MySqlConnection, sql: &str) -> Vec<(String, Option<String>)> {
        sqlx::raw_sql(AssertSqlSafe(format!("EXPLAIN {sql}")))
            .fetch_all(conn)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
            .iter()
            .map(|row| (row.get("type"), row.get("key")))
            .collect()
    }

    /// The statements on a set of lanes (1, 16 or 31 of them, repeated to fill the list as the
    /// adapter binds them) read only those lanes' rows, by primary key, never the whole table;
    /// a settle's mark reads its events by id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lane_statements_read_only_the_lanes_they_name() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut conn = db.connect().await;
        let token = "x'0123456789abcdef0123456789abcdef'".to_owned();
        for count in [1u16, 16, 31] {
            let named: Vec<String> = (0..LANES).map(|k| k.min(count - 1).to_string()).collect();
            let statements = [
                (LOCK_LANES, named.clone()),
                (LOCK_FREE_LANES, named.clone()),
                (
                    LEASE_LANES,
                    [vec![token.clone(), "30000000".to_owned()], named.clone()].concat(),
                ),
                (GIVE_BACK, [vec![token.clone()], named.clone()].concat()),
            ];
            for (sql, values) in statements {
                let sql = literal(sql, &values);
                let plan = plan(&mut conn, &sql).await;
                assert!(
                    plan.iter().all(|(access, key)| {
                        matches!(access.as_str(), "range" | "const" | "eq_ref")
                            && key.as_deref() == Some("PRIMARY")
                    }),
                    "{count} lanes: {plan:?} for {sql}"
                );
            }
        }
        let ids = [
            token.clone(),
            "x'00000000000000000000000000000001'".to_owned(),
        ];
        let mark = literal(
            &MARKS[1],
            &[
                "'2030-01-01 00:00:00'".to_owned(),
                ids[0].clone(),
                ids[1].clone(),
            ],
        );
        let plan = plan(&mut conn, &mark).await;
        assert!(
            plan.iter()
                .all(|(access, key)| access != "ALL"
                    && key.as_deref() == Some("stockroom_outbox_id")),
            "{plan:?}"
        );
        drop(conn);
        store.close().await;
        db.drop_now().await;
    }
}

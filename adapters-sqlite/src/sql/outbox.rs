//! The outbox (`stockroom_core::outbox`): the events units of work publish, in
//! `stockroom_outbox`, and who leases each of the 32 lanes, in `stockroom_outbox_lanes` (both
//! made by migration 5, `schema.rs`); each statement written once.
//!
//! - **Append**: one `INSERT` per event, in the caller's transaction (a unit of work's, or a
//!   stock move's savepoint): `sequence` is the table's `AUTOINCREMENT` rowid, so it is given in
//!   commit order (SQLite has one writer) and never given again, even after a purge deleted
//!   the newest events.
//! - **Claim**: in a writer transaction of its own (`BEGIN IMMEDIATE`, as every write): one
//!   `UPDATE … RETURNING` leases the free lanes (never leased, given back, or whose lease ran
//!   out) that have an undelivered event, the oldest such event first (each lane's oldest is one
//!   lookup in `stockroom_outbox_pending`), then one `SELECT` reads the undelivered events of
//!   the lanes the claim's token now holds, in sequence order. SQLite's single write lock
//!   serializes claims, those of other processes included, so two claims never lease one lane.
//! - **Settle**: the delivered events marked (by id, only those still undelivered), then every
//!   lane the claim's token still holds given back, in one transaction.
//! - **Backlog**: one statement on a read connection (one snapshot): the undelivered events,
//!   the oldest one's time, the delivered ones.
//! - **Purge**: the delivered events delivered before a bound (`stockroom_outbox_delivered`).
//!
//! Ids (the events' and the claims' tokens) are 16-byte BLOBs and times INTEGER microseconds,
//! as everywhere in the adapter.

use rusqlite::types::Value;
use rusqlite::{Row, ToSql};
use stockroom_core::outbox::{Backlog, Event, EventId, NewEvent};
use stockroom_core::time::Timestamp;
use stockroom_core::Result;
use uuid::Uuid;

use super::codec::{blob, micros, RowReader};
use super::generic::{execute, query, query_first};
use crate::conn::Db;
use crate::error::map;

/// The events' table, named once for the statements' text
/// (`stockroom_core::adapter::OUTBOX_TABLE`).
macro_rules! outbox_table {
    () => {
        "stockroom_outbox"
    };
}

/// The lanes' table.
macro_rules! lanes_table {
    () => {
        "stockroom_outbox_lanes"
    };
}

/// The columns of an event as [`read_event`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, id, subject, aggregate, lane, payload, created_at"
    };
}

/// Writes `events`, in order, each with the next sequence, written at `at`.
pub(crate) fn append(conn: &Db<'_>, events: &[NewEvent], at: Timestamp) -> Result<()> {
    let sql = concat!(
        "INSERT INTO ",
        outbox_table!(),
        " (id, subject, aggregate, lane, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    );
    let at = stockroom_core::adapter::to_micros(at);
    for event in events {
        let id = event.id().as_uuid();
        let params: [&dyn ToSql; 6] = [
            id.as_bytes(),
            &event.subject(),
            &event.aggregate(),
            &event.lane(),
            &event.payload(),
            &at,
        ];
        execute(conn, sql, &params).map_err(map)?;
    }
    Ok(())
}

/// Leases to `token`, until `until`, up to `max_lanes` lanes free at `now` that have an
/// undelivered event, those whose oldest undelivered event is oldest first; the lanes leased.
pub(crate) fn lease_lanes(
    conn: &Db<'_>,
    token: Uuid,
    now: Timestamp,
    until: Timestamp,
    max_lanes: u16,
) -> Result<Vec<u16>> {
    let sql = concat!(
        "UPDATE ",
        lanes_table!(),
        " SET holder = ?1, leased_until = ?2 WHERE lane IN (",
        "SELECT lane FROM (SELECT free.lane AS lane, (SELECT min(event.sequence) FROM ",
        outbox_table!(),
        " AS event WHERE event.lane = free.lane AND event.delivered_at IS NULL) AS oldest FROM ",
        lanes_table!(),
        " AS free WHERE free.holder IS NULL OR free.leased_until < ?3)",
        " WHERE oldest IS NOT NULL ORDER BY oldest LIMIT ?4) RETURNING lane"
    );
    let params = [
        blob(token),
        micros(until),
        micros(now),
        Value::Integer(i64::from(max_lanes)),
    ];
    query(conn, sql, &params, |r| r.get::<_, u16>(0)).map_err(map)
}

/// The undelivered events of the lanes `token` holds, in sequence order, at most `max`.
pub(crate) fn leased_events(conn: &Db<'_>, token: Uuid, max: usize) -> Result<Vec<Event>> {
    // The inner select reads only the pending index (lane, sequence): the rows themselves are
    // read for the events returned.
    let sql = concat!(
        "SELECT ",
        event_columns!(),
        " FROM ",
        outbox_table!(),
        " WHERE sequence IN (SELECT sequence FROM ",
        outbox_table!(),
        " WHERE delivered_at IS NULL AND lane IN (SELECT lane FROM ",
        lanes_table!(),
        " WHERE holder = ?1) ORDER BY sequence LIMIT ?2) ORDER BY sequence"
    );
    let params = [
        blob(token),
        Value::Integer(i64::try_from(max).unwrap_or(i64::MAX)),
    ];
    query(conn, sql, &params, read_event).map_err(map)
}

fn read_event(row: &Row<'_>) -> rusqlite::Result<Event> {
    let mut row = RowReader::new(row, 0);
    Ok(Event {
        sequence: row.get()?,
        id: EventId::from_uuid(row.uuid()?),
        subject: row.get()?,
        aggregate: row.get()?,
        lane: row.get()?,
        payload: row.get()?,
        created_at: row.timestamp()?,
    })
}

/// Marks `delivered` delivered at `at` (those still undelivered), then gives back every lane
/// `token` still holds.
pub(crate) fn settle(
    conn: &Db<'_>,
    token: Uuid,
    delivered: &[EventId],
    at: Timestamp,
) -> Result<()> {
    let mark = concat!(
        "UPDATE ",
        outbox_table!(),
        " SET delivered_at = ?1 WHERE id = ?2 AND delivered_at IS NULL"
    );
    let at = micros(at);
    for id in delivered {
        execute(conn, mark, &[at.clone(), blob(*id)]).map_err(map)?;
    }
    let give_back = concat!(
        "UPDATE ",
        lanes_table!(),
        " SET holder = NULL, leased_until = NULL WHERE holder = ?1"
    );
    execute(conn, give_back, &[blob(token)]).map_err(map)?;
    Ok(())
}

/// What waits: the undelivered events (counted in the pending index alone), the oldest one's
/// time (the earliest of each lane's oldest undelivered event: one lookup per lane, since a
/// lane's events are written in sequence order), the delivered events (counted in the delivered
/// index alone).
pub(crate) fn backlog(conn: &Db<'_>) -> Result<Backlog> {
    let sql = concat!(
        "SELECT (SELECT count(*) FROM ",
        outbox_table!(),
        " WHERE delivered_at IS NULL), (SELECT min((SELECT event.created_at FROM ",
        outbox_table!(),
        " AS event WHERE event.lane = lanes.lane AND event.delivered_at IS NULL",
        " ORDER BY event.sequence LIMIT 1)) FROM ",
        lanes_table!(),
        " AS lanes), (SELECT count(*) FROM ",
        outbox_table!(),
        " WHERE delivered_at IS NOT NULL)"
    );
    let backlog = query_first(conn, sql, [], |r| {
        let mut r = RowReader::new(r, 0);
        Ok(Backlog {
            pending: r.get::<i64>()? as u64,
            oldest: r.opt_timestamp()?,
            delivered: r.get::<i64>()? as u64,
        })
    })
    .map_err(map)?;
    Ok(backlog.unwrap_or_default())
}

/// Deletes the events delivered before `before`; how many.
pub(crate) fn purge_delivered(conn: &Db<'_>, before: Timestamp) -> Result<u64> {
    let sql = concat!(
        "DELETE FROM ",
        outbox_table!(),
        " WHERE delivered_at IS NOT NULL AND delivered_at < ?1"
    );
    execute(conn, sql, &[micros(before)])
        .map(|n| n as u64)
        .map_err(map)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use stockroom_core::outbox::LANES;

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        let catalog = stockroom_core::schema::Catalog::new(&[]).unwrap();
        crate::schema::migrate(&mut conn, &catalog).unwrap();
        conn
    }

    /// The tables are the core's names, and the migration made one lane row per lane.
    #[test]
    fn the_migration_makes_every_lane() {
        assert_eq!(outbox_table!(), stockroom_core::adapter::OUTBOX_TABLE);
        let conn = migrated();
        let lanes: Vec<u16> = conn
            .prepare(concat!(
                "SELECT lane FROM ",
                lanes_table!(),
                " WHERE holder IS NULL AND leased_until IS NULL ORDER BY lane"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(lanes, (0..LANES).collect::<Vec<_>>());
    }

    /// The plans the module docs promise: each lane's oldest event, the claim's events, the
    /// counts of the backlog and the purge go through the partial indexes, and the reads of
    /// sequences and counts read an index alone.
    #[test]
    fn the_claim_and_the_purge_use_the_partial_indexes() {
        let conn = migrated();
        let plan = |sql: &str| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("\n")
        };
        let oldest = plan(concat!(
            "SELECT min(sequence) FROM ",
            outbox_table!(),
            " WHERE lane = 3 AND delivered_at IS NULL"
        ));
        assert!(
            oldest.contains("COVERING INDEX stockroom_outbox_pending"),
            "{oldest}"
        );
        let events = plan(concat!(
            "SELECT sequence FROM ",
            outbox_table!(),
            " WHERE delivered_at IS NULL AND lane IN (SELECT lane FROM ",
            lanes_table!(),
            " WHERE holder = x'00') ORDER BY sequence LIMIT 10"
        ));
        assert!(
            events.contains("COVERING INDEX stockroom_outbox_pending"),
            "{events}"
        );
        for counted in [
            concat!(
                "SELECT count(*) FROM ",
                outbox_table!(),
                " WHERE delivered_at IS NULL"
            ),
            concat!(
                "SELECT count(*) FROM ",
                outbox_table!(),
                " WHERE delivered_at IS NOT NULL"
            ),
        ] {
            let count = plan(counted);
            assert!(
                count.contains("COVERING INDEX stockroom_outbox_"),
                "{count}"
            );
        }
        let purge = plan(concat!(
            "DELETE FROM ",
            outbox_table!(),
            " WHERE delivered_at IS NOT NULL AND delivered_at < 5"
        ));
        assert!(purge.contains("stockroom_outbox_delivered"), "{purge}");
    }
}

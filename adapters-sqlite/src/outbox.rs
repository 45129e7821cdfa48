//! The outbox's store side: the claim, the lease that settles it, the backlog and the purge,
//! each on the connection it needs (the statements are `sql/outbox.rs`'s).
//!
//! The claim, the settling of a claim and the purge are writes outside any unit of work: each
//! takes the store's writer as a unit of work does (waiting its turn behind units of work and
//! stock moves, up to the acquire timeout and never past the deadline of the operation in
//! progress), opens its transaction with `BEGIN IMMEDIATE` and commits it in the same call,
//! or rolls it back when a statement fails or the call was abandoned. The backlog reads on a
//! read connection.

use std::fmt;

use async_trait::async_trait;
use stockroom_core::outbox::{Backlog, ClaimOptions, Claimed, EventId, Lease};
use stockroom_core::time::{self, Timestamp};
use stockroom_core::Result;
use uuid::Uuid;

use crate::conn::Cost;
use crate::sql::generic::and_commit;
use crate::sql::outbox as sql;
use crate::store::SqliteStore;

/// Claims events for a relay (see `Store::claim_events`): in one writer transaction, leases up
/// to `options.max_lanes` lanes to a fresh token and reads their undelivered events.
pub(crate) async fn claim(store: &SqliteStore, options: &ClaimOptions) -> Result<Claimed> {
    options.check()?;
    let mut conn = store.writer().await?;
    let token = Uuid::now_v7();
    let options = *options;
    let cost = Cost::of_batch(options.max_events).and(conn.commit_cost());
    let events = conn
        .run(cost, move |c| {
            and_commit(c, || {
                let now = time::now();
                let until = options.lease_until(now);
                let lanes = sql::lease_lanes(c, token, now, until, options.max_lanes)?;
                if lanes.is_empty() {
                    return Ok(None);
                }
                sql::leased_events(c, token, options.max_events).map(Some)
            })
        })
        .await?;
    Ok(match events {
        None => Claimed::nothing(),
        Some(events) => Claimed::new(
            events,
            Box::new(SqliteLease {
                store: store.clone(),
                token,
            }),
        ),
    })
}

/// What waits in the outbox, read on a read connection.
pub(crate) async fn backlog(store: &SqliteStore) -> Result<Backlog> {
    let mut conn = store.reader().await?;
    conn.read(Cost::Long, sql::backlog).await
}

/// Deletes the events delivered before `before` (a time every backend stores, or a validation
/// error on `before`); how many.
pub(crate) async fn purge_delivered(store: &SqliteStore, before: Timestamp) -> Result<u64> {
    let before = time::supported("before", before)?;
    let mut conn = store.writer().await?;
    conn.run(Cost::Long, move |c| {
        and_commit(c, || sql::purge_delivered(c, before))
    })
    .await
}

/// The lanes a claim leased, under its token: settling it marks the delivered events and gives
/// back what the token still holds, in one writer transaction. A lease dropped unsettled does
/// nothing: its lanes are free again once `leased_until` has passed.
pub(crate) struct SqliteLease {
    store: SqliteStore,
    token: Uuid,
}

impl fmt::Debug for SqliteLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLease")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Lease for SqliteLease {
    async fn settle(self: Box<Self>, delivered: Vec<EventId>) -> Result<()> {
        let mut conn = self.store.writer().await?;
        let token = self.token;
        let cost = Cost::of_batch(delivered.len()).and(conn.commit_cost());
        conn.run(cost, move |c| {
            and_commit(c, || sql::settle(c, token, &delivered, time::now()))
        })
        .await
    }
}

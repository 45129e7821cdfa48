//! The transactional outbox: an event exists if and only if its unit of work committed; a
//! relay claims committed events lane by lane, each lane leased to one claim, in sequence order
//! (commit order within an aggregate); what a claim acknowledges is delivered for good, the rest
//! comes back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::outbox::{ClaimOptions, Event, EventId, NewEvent, LANES};
use stockroom_core::{time, Error, ProductFilter, Rule, Store, StoreExt, TransferRequest};

use crate::cancel::{polled_at_most, MOST_TRIES, SETTLE_WITHIN};
use crate::support::*;

/// A claim of everything: every lane, up to 10,000 events, a lease of 30 s.
fn everything() -> ClaimOptions {
    ClaimOptions {
        max_events: 10_000,
        max_lanes: LANES,
        lease: Duration::from_secs(30),
    }
}

fn event(subject: &str, aggregate: &str, payload: &str) -> NewEvent {
    NewEvent::new(subject, aggregate, payload.as_bytes().to_vec()).expect("a valid event")
}

/// Publishes `events` in a unit of work of their own, committed; their ids.
async fn publish(store: &Arc<dyn Store>, events: Vec<NewEvent>) -> Vec<EventId> {
    let ids = events.iter().map(NewEvent::id).collect();
    let mut uow = store.begin().await.expect("begin");
    uow.publish_all(events).await.expect("publish");
    uow.commit().await.expect("commit");
    ids
}

/// Claims every undelivered event (every lane) and releases the claim: what a relay would see.
async fn pending(store: &Arc<dyn Store>) -> Vec<Event> {
    let claimed = store.claim_events(&everything()).await.expect("claim");
    let events = claimed.events().to_vec();
    claimed.release().await.expect("release");
    events
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

fn assert_in_sequence_order(events: &[Event]) {
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequences strictly increasing: {sequences:?}"
    );
}

/// An event is claimed if and only if its unit of work committed: committed → there; rolled
/// back, dropped, or published after a savepoint rolled back to → gone; published in a released
/// savepoint → there. Each comes back as it was published (id, subject, aggregate, lane,
/// payload), in sequence order.
pub async fn events_exist_if_and_only_if_their_unit_of_work_committed(store: Arc<dyn Store>) {
    let committed = event("orders.placed", "order-1", "one");
    let mut expected = vec![expected_of(&committed)];
    publish(&store, vec![committed]).await;

    let mut uow = store.begin().await.expect("begin");
    uow.publish(event("orders.placed", "order-2", "rolled back"))
        .await
        .expect("publish");
    uow.rollback().await.expect("rollback");

    let mut uow = store.begin().await.expect("begin");
    uow.publish(event("orders.placed", "order-3", "dropped"))
        .await
        .expect("publish");
    drop(uow);

    let kept = event("orders.placed", "order-4", "before the savepoint");
    let released = event("orders.shipped", "order-4", "in a released savepoint");
    expected.extend([expected_of(&kept), expected_of(&released)]);
    let mut uow = store.begin().await.expect("begin");
    uow.publish(kept).await.expect("publish");
    let sp = uow.savepoint().await.expect("savepoint");
    uow.publish(event("orders.paid", "order-4", "rolled back to"))
        .await
        .expect("publish");
    uow.rollback_to(sp).await.expect("rollback_to");
    let sp = uow.savepoint().await.expect("savepoint");
    uow.publish(released).await.expect("publish");
    uow.release(sp).await.expect("release");
    uow.commit().await.expect("commit");

    let events = pending(&store).await;
    assert_in_sequence_order(&events);
    let got: Vec<Published> = events.iter().map(published_of).collect();
    assert_eq!(got, expected, "claimed: {events:?}");
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.delivered), (3, 0), "{backlog:?}");
}

/// What a relay should see of a published event: id, subject, aggregate, lane, payload.
type Published = (EventId, String, String, u16, Vec<u8>);

fn expected_of(event: &NewEvent) -> Published {
    (
        event.id(),
        event.subject().to_owned(),
        event.aggregate().to_owned(),
        event.lane(),
        event.payload().to_vec(),
    )
}

fn published_of(event: &Event) -> Published {
    (
        event.id,
        event.subject.clone(),
        event.aggregate.clone(),
        event.lane,
        event.payload.clone(),
    )
}

/// Within an aggregate, events come in the order their units of work committed, and in the
/// order each unit of work published them.
pub async fn each_aggregates_events_come_in_commit_order(store: Arc<dyn Store>) {
    publish(
        &store,
        vec![
            event("carts.changed", "cart-x", "x1"),
            event("carts.changed", "cart-y", "y1"),
            event("carts.changed", "cart-x", "x2"),
        ],
    )
    .await;
    publish(&store, vec![event("carts.changed", "cart-x", "x3")]).await;
    publish(&store, vec![event("carts.changed", "cart-y", "y2")]).await;

    let events = pending(&store).await;
    assert_in_sequence_order(&events);
    let of = |aggregate: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.aggregate == aggregate)
            .map(|e| String::from_utf8(e.payload.clone()).unwrap())
            .collect()
    };
    assert_eq!(of("cart-x"), ["x1", "x2", "x3"]);
    assert_eq!(of("cart-y"), ["y1", "y2"]);
}

/// Two claims at once lease disjoint lanes: together they hold every undelivered event, none
/// twice. What the first acknowledges is delivered for good; what the second releases comes
/// back, whole, to the next claim.
pub async fn claims_lease_disjoint_lanes_until_settled(store: Arc<dyn Store>) {
    let published: Vec<NewEvent> = (0..64)
        .map(|i| event("stock.counted", &format!("bin-{i}"), "n"))
        .collect();
    let lanes_used: BTreeSet<u16> = published.iter().map(NewEvent::lane).collect();
    publish(&store, published).await;
    assert!(lanes_used.len() > 8, "64 aggregates span many lanes");

    let few = ClaimOptions {
        max_lanes: 4,
        ..everything()
    };
    let first = store.claim_events(&few).await.expect("first claim");
    let second = store
        .claim_events(&everything())
        .await
        .expect("second claim");
    let lanes = |events: &[Event]| events.iter().map(|e| e.lane).collect::<BTreeSet<u16>>();
    let (first_lanes, second_lanes) = (lanes(first.events()), lanes(second.events()));
    assert_eq!(first_lanes.len(), 4, "the first claim leased 4 lanes");
    assert!(
        first_lanes.is_disjoint(&second_lanes),
        "disjoint lanes: {first_lanes:?} and {second_lanes:?}"
    );
    let mut all: Vec<EventId> = ids(first.events());
    all.extend(ids(second.events()));
    let distinct: HashSet<EventId> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (64, 64),
        "every event once, in one claim or the other"
    );
    assert!(
        store
            .claim_events(&everything())
            .await
            .expect("third")
            .is_empty(),
        "every lane with events is leased"
    );

    let delivered = first.len();
    let second_ids: HashSet<EventId> = ids(second.events()).into_iter().collect();
    first.acknowledge(delivered).await.expect("acknowledge");
    second.release().await.expect("release");

    let again = pending(&store).await;
    let again_ids: HashSet<EventId> = ids(&again).into_iter().collect();
    assert_eq!(
        again_ids, second_ids,
        "the released events, and only they, come back"
    );
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(
        (backlog.pending, backlog.delivered),
        (second_ids.len() as u64, delivered as u64),
        "{backlog:?}"
    );
}

/// `acknowledge(n)` marks the first `n` events delivered; the rest come back. More than the
/// claim holds is a validation error on `delivered` that marks nothing.
pub async fn acknowledge_marks_only_the_delivered_prefix(store: Arc<dyn Store>) {
    let published: Vec<NewEvent> = (1..=3)
        .map(|i| event("orders.step", "order-9", &i.to_string()))
        .collect();
    let published = publish(&store, published).await;

    let short = ClaimOptions {
        lease: Duration::from_secs(1),
        ..everything()
    };
    let claimed = store.claim_events(&short).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    expect_validation(
        claimed.acknowledge(4).await,
        "delivered",
        Rule::OutOfRange { min: 0, max: 3 },
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await; // that claim's lease runs out
    let claimed = store.claim_events(&everything()).await.expect("claim");
    assert_eq!(ids(claimed.events()), published, "nothing was marked");
    claimed.acknowledge(2).await.expect("acknowledge 2");
    assert_eq!(
        ids(&pending(&store).await),
        vec![published[2]],
        "only the third is left"
    );
}

/// A claim never settled (its relay died) holds its lanes until its lease runs out; then the
/// next claim gets the same events again (at least once).
pub async fn an_unsettled_claim_comes_back_after_its_lease(store: Arc<dyn Store>) {
    publish(
        &store,
        vec![
            event("orders.placed", "order-5", "a"),
            event("orders.placed", "order-6", "b"),
        ],
    )
    .await;
    let short = ClaimOptions {
        lease: Duration::from_secs(1),
        ..everything()
    };
    let claimed = store.claim_events(&short).await.expect("claim");
    let first: HashSet<EventId> = ids(claimed.events()).into_iter().collect();
    drop(claimed);
    assert!(
        store
            .claim_events(&everything())
            .await
            .expect("claim while leased")
            .is_empty(),
        "the lanes are still leased"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = store
        .claim_events(&everything())
        .await
        .expect("claim after the lease");
    let second: HashSet<EventId> = ids(again.events()).into_iter().collect();
    assert_eq!(second, first, "the same events, again");
    again.acknowledge(2).await.expect("acknowledge");
    assert!(pending(&store).await.is_empty());
}

/// The backlog counts undelivered events (with the oldest one's time) and delivered ones;
/// purging deletes only delivered events delivered before the given time.
pub async fn backlog_counts_and_purge_deletes_only_delivered_events(store: Arc<dyn Store>) {
    let empty = store.outbox_backlog().await.expect("backlog");
    assert_eq!((empty.pending, empty.oldest, empty.delivered), (0, None, 0));
    let before = time::now();
    publish(
        &store,
        (0..3)
            .map(|i| event("orders.placed", &format!("order-{i}"), "p"))
            .collect(),
    )
    .await;
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.delivered), (3, 0), "{backlog:?}");
    let oldest = backlog.oldest.expect("an oldest event");
    assert!(
        oldest >= before - chrono::Duration::seconds(1) && oldest <= time::now(),
        "oldest {oldest} is when it was published"
    );

    let claimed = store.claim_events(&everything()).await.expect("claim");
    let acknowledged = ids(&claimed.events()[..2]);
    claimed.acknowledge(2).await.expect("acknowledge");
    assert_eq!(
        store
            .purge_delivered_events(before - chrono::Duration::seconds(60))
            .await
            .expect("purge before any delivery"),
        0
    );
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.delivered), (1, 2), "{backlog:?}");

    let later = time::now() + chrono::Duration::seconds(1);
    assert_eq!(
        store.purge_delivered_events(later).await.expect("purge"),
        2,
        "the two delivered events"
    );
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.delivered), (1, 0), "{backlog:?}");
    let left = pending(&store).await;
    assert_eq!(left.len(), 1);
    assert!(
        !acknowledged.contains(&left[0].id),
        "the undelivered one stays"
    );
    assert_eq!(store.purge_delivered_events(later).await.expect("again"), 0);
}

/// Claim options out of bounds are a validation error naming the option, and lease nothing.
pub async fn claim_options_out_of_bounds_are_refused(store: Arc<dyn Store>) {
    publish(&store, vec![event("orders.placed", "order-1", "p")]).await;
    let refused = [
        (
            ClaimOptions {
                max_events: 0,
                ..everything()
            },
            "max_events",
        ),
        (
            ClaimOptions {
                max_lanes: 0,
                ..everything()
            },
            "max_lanes",
        ),
        (
            ClaimOptions {
                lease: Duration::from_millis(999),
                ..everything()
            },
            "lease",
        ),
    ];
    for (options, field) in refused {
        match store.claim_events(&options).await {
            Err(Error::Validation { field: f, .. }) if f == field => {}
            other => panic!("{field}: expected a validation error, got {other:?}"),
        }
    }
    assert_eq!(pending(&store).await.len(), 1, "nothing was leased");
}

/// Four relays claiming and acknowledging at once deliver every event exactly once, each
/// aggregate's in sequence order.
pub async fn concurrent_claims_deliver_each_event_once(store: Arc<dyn Store>) {
    let aggregates = 24;
    for round in 0..5 {
        publish(
            &store,
            (0..aggregates)
                .map(|a| event("orders.step", &format!("order-{a}"), &round.to_string()))
                .collect(),
        )
        .await;
    }
    let options = ClaimOptions {
        max_events: 7,
        max_lanes: 3,
        lease: Duration::from_secs(30),
    };
    let relays: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut idle = 0;
                while idle < 20 {
                    let claimed = retry_transient(|| store.claim_events(&options))
                        .await
                        .expect("claim");
                    if claimed.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    seen.extend(claimed.events().iter().cloned());
                    let n = claimed.len();
                    claimed.acknowledge(n).await.expect("acknowledge");
                }
                seen
            })
        })
        .collect();
    let mut delivered = Vec::new();
    for relay in relays {
        delivered.extend(relay.await.expect("a relay"));
    }
    let mut times: HashMap<EventId, usize> = HashMap::new();
    for e in &delivered {
        *times.entry(e.id).or_default() += 1;
    }
    assert_eq!(times.len(), aggregates * 5, "every event delivered");
    assert!(
        times.values().all(|&n| n == 1),
        "none twice: {:?}",
        times.values().filter(|&&n| n > 1).count()
    );
    // Each aggregate's events were delivered in sequence order (its lane was held by one claim
    // at a time, and claims come in sequence order).
    let mut by_aggregate: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in &delivered {
        by_aggregate.entry(&e.aggregate).or_default().push(e);
    }
    for (aggregate, events) in by_aggregate {
        let mut sorted: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        sorted.sort_unstable();
        let rounds: Vec<String> = sorted
            .iter()
            .map(|s| {
                let e = events.iter().find(|e| e.sequence == *s).unwrap();
                String::from_utf8(e.payload.clone()).unwrap()
            })
            .collect();
        assert_eq!(rounds, ["0", "1", "2", "3", "4"], "{aggregate}");
    }
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(
        (backlog.pending, backlog.delivered),
        (0, (aggregates * 5) as u64)
    );
}

/// The relay's contract under faults (a [`FaultyStore`] around the store): a claim that fails
/// leases nothing; an acknowledgement lost on its way (the relay's connection dropped) marks
/// nothing delivered, and once the lease runs out the same events are claimed again: at least
/// once, never lost.
pub async fn a_lost_acknowledgement_delivers_again_after_the_lease(store: Arc<dyn Store>) {
    let published = publish(
        &store,
        vec![
            event("orders.placed", "order-7", "a"),
            event("orders.paid", "order-7", "b"),
        ],
    )
    .await;
    let faulty = FaultyStore::shared(Arc::clone(&store));
    let short = ClaimOptions {
        lease: Duration::from_secs(1),
        ..everything()
    };
    faulty.inject(Fault::ClaimEvents, 1, || {
        Error::unavailable("connection refused")
    });
    assert!(matches!(
        faulty.claim_events(&short).await,
        Err(Error::Unavailable { .. })
    ));
    faulty.inject(Fault::AcknowledgeEvents, 1, || {
        Error::unavailable("connection lost")
    });
    let claimed = faulty.claim_events(&short).await.expect("claim");
    assert_eq!(
        ids(claimed.events()),
        published,
        "the failed claim leased nothing"
    );
    assert!(
        claimed.acknowledge(2).await.is_err(),
        "the acknowledgement is lost"
    );
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(
        (backlog.pending, backlog.delivered),
        (2, 0),
        "nothing marked"
    );
    assert!(
        faulty
            .claim_events(&everything())
            .await
            .expect("claim")
            .is_empty(),
        "the lane stays leased until the lease runs out"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = faulty.claim_events(&everything()).await.expect("claim");
    assert_eq!(ids(again.events()), published, "the same events, in order");
    again.acknowledge(2).await.expect("acknowledge");
    assert_eq!(faulty.calls(Fault::AcknowledgeEvents), 2);
    assert!(pending(&store).await.is_empty());
}

/// Every outbox call may be dropped at any await: a unit of work that creates a product and
/// publishes its event, dropped after 0, 1, 2, … polls until it completes, leaves both or
/// neither; a claim and its acknowledgement, dropped likewise, marks all of the claim's events
/// delivered or none; and after every drop the store goes on working (a unit of work begins, a
/// claim leases what it finds free).
pub async fn dropped_outbox_calls_leave_nothing_half_done(store: Arc<dyn Store>) {
    for polls in 0..MOST_TRIES {
        let tag = format!("dropped{polls}");
        let published = polled_at_most(polls, async {
            let mut uow = store.begin().await?;
            uow.products().create(new_product(&tag, 1)).await?;
            uow.publish(event("orders.placed", &tag, "p")).await?;
            uow.commit().await
        })
        .await;
        let writable = tokio::time::timeout(SETTLE_WITHIN, retry_transient(|| store.begin()))
            .await
            .expect("the writer is free again after the drop")
            .expect("begin after the drop");
        drop(writable);
        let pending = store.outbox_backlog().await.expect("backlog").pending;
        let mut read = store.read().await.expect("read");
        let products = read.products().count(&ProductFilter::default()).await;
        assert_eq!(
            pending,
            products.expect("count"),
            "after a drop at poll {polls}: one event per committed product"
        );
        if let Some(outcome) = published {
            outcome.expect("the unit of work, run to the end");
            break;
        }
    }

    let short = ClaimOptions {
        lease: Duration::from_secs(1),
        ..everything()
    };
    let total = store.outbox_backlog().await.expect("backlog").pending;
    for polls in 0..MOST_TRIES {
        let settled = polled_at_most(polls, async {
            let claimed = store.claim_events(&short).await?;
            let n = claimed.len();
            claimed.acknowledge(n).await.map(|()| n)
        })
        .await;
        let backlog = store.outbox_backlog().await.expect("backlog");
        assert_eq!(
            backlog.pending + backlog.delivered,
            total,
            "after a drop at poll {polls}: no event lost or added"
        );
        assert!(
            backlog.delivered == 0 || backlog.delivered == total,
            "after a drop at poll {polls}: all of the claim delivered or none, not {backlog:?}"
        );
        if let Some(outcome) = settled {
            let claimed = outcome.expect("claim and acknowledge");
            if claimed as u64 == total {
                break;
            }
            // It found the lanes leased by a claim dropped earlier, whose statement reached
            // the server after the drop (a server runs what it was sent): wait for that lease.
        }
        // A claim dropped after it leased its lanes holds them until its lease runs out; an
        // acknowledgement dropped after it was sent may still mark the events delivered.
        if !wait_for_free_lanes(&store, &short).await {
            break; // every event delivered: the dropped acknowledgement applied, all of it
        }
    }
    assert_eq!(store.outbox_backlog().await.expect("backlog").pending, 0);
}

/// Waits until a claim finds the pending events' lanes free, and gives them back: true. False
/// when no event is pending any more.
async fn wait_for_free_lanes(store: &Arc<dyn Store>, options: &ClaimOptions) -> bool {
    let started = std::time::Instant::now();
    loop {
        let claimed = store.claim_events(options).await.expect("claim");
        if !claimed.is_empty() {
            claimed.release().await.expect("release");
            return true;
        }
        if store.outbox_backlog().await.expect("backlog").pending == 0 {
            return false;
        }
        assert!(
            started.elapsed() < SETTLE_WITHIN,
            "the lanes stayed leased past {SETTLE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Without `own_events` (the default), Stockroom's own writes put nothing in the outbox.
pub async fn own_events_are_off_by_default(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 5)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    store
        .transfer(&TransferRequest::new(a.id, b.id, 2))
        .await
        .expect("transfer");
    soft_delete_product(&store, a.id).await;
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(backlog.pending, 0, "{backlog:?}");
}

/// A closed store refuses claims, backlogs and purges as `Unavailable`.
pub async fn a_closed_store_refuses_the_outbox(store: Arc<dyn Store>) {
    store.close().await;
    expect_unavailable(store.claim_events(&everything()).await);
    expect_unavailable(store.outbox_backlog().await);
    expect_unavailable(store.purge_delivered_events(time::now()).await);
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_outbox_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) outbox:
        events_exist_if_and_only_if_their_unit_of_work_committed,
        each_aggregates_events_come_in_commit_order,
        claims_lease_disjoint_lanes_until_settled,
        acknowledge_marks_only_the_delivered_prefix,
        an_unsettled_claim_comes_back_after_its_lease,
        backlog_counts_and_purge_deletes_only_delivered_events,
        claim_options_out_of_bounds_are_refused,
        concurrent_claims_deliver_each_event_once,
        a_lost_acknowledgement_delivers_again_after_the_lease,
        dropped_outbox_calls_leave_nothing_half_done,
        own_events_are_off_by_default,
        a_closed_store_refuses_the_outbox,
    } };
}

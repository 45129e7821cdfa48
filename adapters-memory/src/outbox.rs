//! The outbox: events in the state (committed with it, gone with a rollback or a savepoint
//! rolled back to), and the leases of its lanes, which live beside the state since a lease is
//! not part of any unit of work.

use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};
use stockroom_core::outbox::{Backlog, Event, EventId, NewEvent, LANES};
use stockroom_core::time::Timestamp;
use uuid::Uuid;

/// A stored event: the event and when it was delivered.
#[derive(Clone)]
struct Stored {
    event: Arc<Event>,
    delivered_at: Option<Timestamp>,
}

/// The events of a state.
#[derive(Clone, Default)]
pub(crate) struct Outbox {
    /// Every event not purged, by sequence.
    events: OrdMap<i64, Stored>,
    /// The last sequence given (never given again, even after a purge).
    last: i64,
    by_id: HashMap<EventId, i64>,
    /// `(lane, sequence)` of every undelivered event.
    pending: OrdSet<(u16, i64)>,
    /// `(delivered_at, sequence)` of every delivered event.
    delivered: OrdSet<(Timestamp, i64)>,
}

impl Outbox {
    /// Appends `events`, in order, written at `at`.
    pub(crate) fn append(&mut self, events: Vec<NewEvent>, at: Timestamp) {
        for event in events {
            self.last += 1;
            let sequence = self.last;
            let event = event.stored(sequence, at);
            self.by_id.insert(event.id, sequence);
            self.pending.insert((event.lane, sequence));
            self.events.insert(
                sequence,
                Stored {
                    event: Arc::new(event),
                    delivered_at: None,
                },
            );
        }
    }

    /// The oldest undelivered sequence of `lane`, if any.
    fn head_of(&self, lane: u16) -> Option<i64> {
        self.pending
            .range((lane, i64::MIN)..(lane + 1, i64::MIN))
            .next()
            .map(|&(_, sequence)| sequence)
    }

    /// The lanes with undelivered events, oldest head first.
    pub(crate) fn lanes_with_events(&self) -> Vec<u16> {
        let mut heads: Vec<(i64, u16)> = (0..LANES)
            .filter_map(|lane| self.head_of(lane).map(|head| (head, lane)))
            .collect();
        heads.sort_unstable();
        heads.into_iter().map(|(_, lane)| lane).collect()
    }

    /// The undelivered events of `lanes`, in sequence order, at most `max`.
    pub(crate) fn pending_of(&self, lanes: &[u16], max: usize) -> Vec<Event> {
        let mut sequences: Vec<i64> = lanes
            .iter()
            .flat_map(|&lane| {
                self.pending
                    .range((lane, i64::MIN)..(lane + 1, i64::MIN))
                    .take(max)
                    .map(|&(_, sequence)| sequence)
            })
            .collect();
        sequences.sort_unstable();
        sequences.truncate(max);
        sequences
            .into_iter()
            .map(|sequence| Event::clone(&self.events[&sequence].event))
            .collect()
    }

    /// Marks the undelivered events among `ids` delivered at `at`.
    pub(crate) fn mark_delivered(&mut self, ids: &[EventId], at: Timestamp) {
        for id in ids {
            let Some(&sequence) = self.by_id.get(id) else {
                continue; // purged meanwhile
            };
            let Some(stored) = self.events.get_mut(&sequence) else {
                continue;
            };
            if stored.delivered_at.is_some() {
                continue;
            }
            stored.delivered_at = Some(at);
            self.pending.remove(&(stored.event.lane, sequence));
            self.delivered.insert((at, sequence));
        }
    }

    /// Deletes the events delivered before `before`; how many.
    pub(crate) fn purge_delivered_before(&mut self, before: Timestamp) -> u64 {
        let purged: Vec<(Timestamp, i64)> = self
            .delivered
            .iter()
            .take_while(|(at, _)| *at < before)
            .copied()
            .collect();
        for (at, sequence) in &purged {
            self.delivered.remove(&(*at, *sequence));
            if let Some(stored) = self.events.remove(sequence) {
                self.by_id.remove(&stored.event.id);
            }
        }
        purged.len() as u64
    }

    /// What waits.
    pub(crate) fn backlog(&self) -> Backlog {
        let oldest = (0..LANES)
            .filter_map(|lane| self.head_of(lane))
            .map(|sequence| self.events[&sequence].event.created_at)
            .min();
        Backlog {
            pending: self.pending.len() as u64,
            oldest,
            delivered: self.delivered.len() as u64,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

/// Who holds each lane, and until when.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    holders: [Option<(Uuid, Timestamp)>; LANES as usize],
}

impl Leases {
    /// Whether `lane` is free at `now` (never leased, given back, or its lease ran out).
    pub(crate) fn is_free(&self, lane: u16, now: Timestamp) -> bool {
        self.holders[usize::from(lane)].is_none_or(|(_, until)| until < now)
    }

    /// Leases `lane` to `token` until `until`.
    pub(crate) fn lease(&mut self, lane: u16, token: Uuid, until: Timestamp) {
        self.holders[usize::from(lane)] = Some((token, until));
    }

    /// Gives back every lane `token` still holds.
    pub(crate) fn give_back(&mut self, token: Uuid) {
        for holder in &mut self.holders {
            if holder.is_some_and(|(t, _)| t == token) {
                *holder = None;
            }
        }
    }
}

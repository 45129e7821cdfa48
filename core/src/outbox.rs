//! The transactional outbox: events written in a unit of work, committed with it or gone with
//! its rollback, and claimed afterwards by a relay that delivers them to a broker.
//!
//! - An application publishes a [`NewEvent`] inside a unit of work
//!   ([`UnitOfWork::publish`](crate::UnitOfWork)); with
//!   [`StoreConfig::with_own_events`](crate::StoreConfig::with_own_events) Stockroom also writes
//!   its own events for the writes to products and for stock moves (see [`subjects`]).
//! - Every event gets a sequence number when it is written. Within one aggregate (the
//!   [`NewEvent::aggregate`] string) sequence order is commit order on every backend: SQLite
//!   and the memory store have one writer; PostgreSQL serializes the units of work that publish
//!   for the same lane (a transaction-level advisory lock on each lane an application's event
//!   goes to, taken when the event is written, at most [`LANES`] per transaction; two units of
//!   work that publish to the same two lanes in opposite orders can deadlock, and PostgreSQL
//!   fails one of them, as `Transient`). Stockroom's own events need no lane lock: each is
//!   written under the row lock of its product.
//! - A relay claims committed, undelivered events with
//!   [`Store::claim_events`](crate::Store::claim_events): the events of up to
//!   [`ClaimOptions::max_lanes`] *lanes* (an aggregate's lane is [`lane_of`] its name, one of
//!   [`LANES`]), leased to this claim until it is settled or its [`ClaimOptions::lease`] runs
//!   out. Two claims never hold the same lane, so two relays never deliver the same aggregate's
//!   events at once, and each lane's events come in sequence order.
//! - [`Claimed::acknowledge`] marks the events the relay delivered and gives the lanes back; the
//!   others are claimed again (at least once). An event's [`Event::id`] is stable: the broker
//!   uses it to drop duplicates.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result, Rule};
use crate::time::Timestamp;

/// How many lanes the outbox has: an aggregate's events all go to lane
/// [`lane_of`]`(aggregate)`, one of `0..LANES`.
pub const LANES: u16 = 32;

/// The longest subject, in bytes (a RabbitMQ routing key takes 255).
pub const MAX_SUBJECT_LEN: usize = 200;

/// The longest aggregate name, in characters.
pub const MAX_AGGREGATE_LEN: usize = 200;

/// The largest payload, in bytes (NATS' default `max_payload` is 1 MiB).
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// The prefix of Stockroom's own subjects, refused to applications.
const OWN_PREFIX: &str = "stockroom.";

/// The most events one claim returns.
pub const MAX_CLAIM: usize = 10_000;

crate::entity_id!(
    /// The id of an outbox event: a UUID v7 given when the event is made, the message id the
    /// broker sees (JetStream's `Nats-Msg-Id`, AMQP's `message-id`), so it drops or tells a
    /// duplicate delivery.
    pub EventId
);

/// The lane of `aggregate`: FNV-1a (64-bit) of its UTF-8 bytes, modulo [`LANES`]. Stable across
/// versions and backends: the lane is stored with each event.
///
/// ```
/// use stockroom_core::outbox::{lane_of, LANES};
/// assert_eq!(lane_of("order-17"), lane_of("order-17"));
/// assert!(lane_of("order-17") < LANES);
/// ```
pub fn lane_of(aggregate: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in aggregate.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(LANES)) as u16
}

/// An event to publish in a unit of work: validated when made, so that a unit of work never
/// fails on an event at commit. It is not `Clone`: each `NewEvent` has an id of its own, so the
/// outbox never holds two events with one id (publishing consumes it).
///
/// ```
/// use stockroom_core::outbox::NewEvent;
/// let event = NewEvent::new("orders.placed", "order-17", br#"{"total":12}"#.to_vec()).unwrap();
/// assert_eq!(event.subject(), "orders.placed");
/// assert!(NewEvent::new("orders.*", "order-17", Vec::new()).is_err()); // a wildcard
/// ```
#[derive(PartialEq, Eq)]
pub struct NewEvent {
    id: EventId,
    subject: String,
    aggregate: String,
    payload: Vec<u8>,
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("aggregate", &self.aggregate)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl NewEvent {
    /// An event with a fresh id. `subject` is where the relay sends it (a NATS subject, a
    /// RabbitMQ routing key): 1 to [`MAX_SUBJECT_LEN`] bytes of ASCII letters, digits, `-` and
    /// `_`, in tokens separated by single dots (no wildcard, no space). `aggregate` names what
    /// it is about (an order's id, say): 1 to [`MAX_AGGREGATE_LEN`] characters, no control
    /// character; events of one aggregate are delivered in commit order. `payload` is at most
    /// [`MAX_PAYLOAD_LEN`] bytes. Anything else is [`Error::Validation`] naming the field.
    pub fn new(
        subject: impl Into<String>,
        aggregate: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Self> {
        let subject = subject.into();
        if subject.starts_with(OWN_PREFIX) {
            return Err(Error::validation(
                "subject",
                Rule::Malformed {
                    expected: "a subject outside `stockroom.`, which Stockroom's own events use",
                },
            ));
        }
        Self::any(subject, aggregate.into(), payload.into())
    }

    /// [`new`](Self::new) without the reserved prefix's check: Stockroom's own events.
    fn any(subject: String, aggregate: String, payload: Vec<u8>) -> Result<Self> {
        check_subject(&subject)?;
        check_aggregate(&aggregate)?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::validation(
                "payload",
                Rule::TooLong {
                    max: MAX_PAYLOAD_LEN,
                },
            ));
        }
        Ok(Self {
            id: EventId::new(),
            subject,
            aggregate,
            payload,
        })
    }

    /// An event whose payload is `payload` as JSON (as [`new`](Self::new) checks it). A value
    /// serde cannot write as JSON (a map with non-string keys, say) is [`Error::Validation`] on
    /// `payload`.
    pub fn json<T: serde::Serialize + ?Sized>(
        subject: impl Into<String>,
        aggregate: impl Into<String>,
        payload: &T,
    ) -> Result<Self> {
        let bytes = serde_json::to_vec(payload).map_err(|_| {
            Error::validation(
                "payload",
                Rule::Malformed {
                    expected: "a value serde_json can write",
                },
            )
        })?;
        Self::new(subject, aggregate, bytes)
    }

    /// Whether it is one of Stockroom's own events (its subject starts with `stockroom.`,
    /// which [`new`](Self::new) refuses to an application). Their order within an aggregate
    /// comes from the product's row lock, so PostgreSQL takes no lane lock for them.
    pub fn is_own(&self) -> bool {
        self.subject.starts_with(OWN_PREFIX)
    }

    /// Its id.
    pub fn id(&self) -> EventId {
        self.id
    }
    /// Where it goes.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// What it is about.
    pub fn aggregate(&self) -> &str {
        &self.aggregate
    }
    /// The lane of its aggregate.
    pub fn lane(&self) -> u16 {
        lane_of(&self.aggregate)
    }
    /// Its payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The event as stored, with the `sequence` and `created_at` the backend gave it.
    pub fn stored(self, sequence: i64, created_at: Timestamp) -> Event {
        let lane = self.lane();
        Event {
            id: self.id,
            sequence,
            subject: self.subject,
            aggregate: self.aggregate,
            lane,
            payload: self.payload,
            created_at,
        }
    }
}

fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(Error::validation("subject", Rule::Empty));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(Error::validation(
            "subject",
            Rule::TooLong {
                max: MAX_SUBJECT_LEN,
            },
        ));
    }
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !subject.split('.').all(token_ok) {
        return Err(Error::validation(
            "subject",
            Rule::Malformed {
                expected: "ASCII letters, digits, '-' and '_' in tokens separated by single dots",
            },
        ));
    }
    Ok(())
}

fn check_aggregate(aggregate: &str) -> Result<()> {
    if aggregate.is_empty() {
        return Err(Error::validation("aggregate", Rule::Empty));
    }
    if aggregate.chars().count() > MAX_AGGREGATE_LEN {
        return Err(Error::validation(
            "aggregate",
            Rule::TooLong {
                max: MAX_AGGREGATE_LEN,
            },
        ));
    }
    if aggregate.chars().any(char::is_control) {
        return Err(Error::validation("aggregate", Rule::ControlCharacter));
    }
    Ok(())
}

/// A committed event, as a relay claims it.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id (the broker's message id).
    pub id: EventId,
    /// Its place in the outbox: within one aggregate, commit order.
    pub sequence: i64,
    /// Where it goes.
    pub subject: String,
    /// What it is about.
    pub aggregate: String,
    /// The lane of its aggregate ([`lane_of`]).
    pub lane: u16,
    /// Its payload.
    pub payload: Vec<u8>,
    /// When its unit of work wrote it.
    pub created_at: Timestamp,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("sequence", &self.sequence)
            .field("subject", &self.subject)
            .field("aggregate", &self.aggregate)
            .field("lane", &self.lane)
            .field("payload_len", &self.payload.len())
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What a relay asks of [`Store::claim_events`](crate::Store::claim_events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimOptions {
    /// The most events the claim returns: 1 to [`MAX_CLAIM`] (default 256).
    pub max_events: usize,
    /// The most lanes it leases: 1 to [`LANES`] (default 8), those whose oldest undelivered
    /// event is oldest first. Fewer lanes per claim let more relays share the work.
    pub max_lanes: u16,
    /// How long the lanes stay leased if the claim is never settled (its relay died): then
    /// another claim takes them and delivers their events again. 1 s to 1 h (default 30 s).
    pub lease: Duration,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        Self {
            max_events: 256,
            max_lanes: 8,
            lease: Duration::from_secs(30),
        }
    }
}

impl ClaimOptions {
    /// Checks the bounds above: a value outside is [`Error::Validation`] naming it.
    pub fn check(&self) -> Result<()> {
        let out_of_range = |field, min: i64, max: i64| {
            Err(Error::validation(field, Rule::OutOfRange { min, max }))
        };
        if !(1..=MAX_CLAIM).contains(&self.max_events) {
            return out_of_range("max_events", 1, MAX_CLAIM as i64);
        }
        if !(1..=LANES).contains(&self.max_lanes) {
            return out_of_range("max_lanes", 1, i64::from(LANES));
        }
        if self.lease < Duration::from_secs(1) || self.lease > Duration::from_secs(3600) {
            return out_of_range("lease", 1, 3600);
        }
        Ok(())
    }

    /// The lease in whole milliseconds.
    pub fn lease_millis(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// When a lease taken at `now` runs out.
    pub fn lease_until(&self, now: Timestamp) -> Timestamp {
        now + chrono::Duration::milliseconds(self.lease_millis())
    }
}

/// The adapter's side of a claim: gives the claim's lanes back, marking the events delivered
/// first. Implemented by adapters; applications use [`Claimed`].
#[async_trait]
pub trait Lease: Send + Sync + fmt::Debug {
    /// Marks `delivered` delivered (events of this claim, by id) and gives every lane of the
    /// claim back, in one transaction. A lease that ran out and was taken by another claim
    /// meanwhile still marks its events delivered (they were), and gives back only what it
    /// still holds.
    async fn settle(self: Box<Self>, delivered: Vec<EventId>) -> Result<()>;
}

/// Events claimed for delivery, and the lease of their lanes.
///
/// Settle it with [`acknowledge`](Self::acknowledge) (or [`release`](Self::release) when
/// nothing was delivered). Dropped unsettled (the relay died, or its future was dropped), its
/// lanes come back when the lease runs out and their events are claimed again.
#[derive(Debug)]
#[must_use = "settle a claim with acknowledge or release, or its lanes stay leased"]
pub struct Claimed {
    events: Vec<Event>,
    lease: Option<Box<dyn Lease>>,
}

impl Claimed {
    /// A claim of `events` (in sequence order) under `lease`.
    pub fn new(events: Vec<Event>, lease: Box<dyn Lease>) -> Self {
        Self {
            events,
            lease: Some(lease),
        }
    }

    /// Nothing to claim: no lane was free with undelivered events.
    pub fn nothing() -> Self {
        Self {
            events: Vec::new(),
            lease: None,
        }
    }

    /// The events, in sequence order (so each aggregate's in commit order).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// The events and the lease (`None` for [`nothing`](Self::nothing)), for a wrapper of a
    /// store that wraps the lease too.
    pub fn into_parts(self) -> (Vec<Event>, Option<Box<dyn Lease>>) {
        (self.events, self.lease)
    }

    /// Marks the first `delivered` events delivered (the relay delivers in order and stops at
    /// the first failure) and gives the lanes back: the other events are claimed again. More
    /// than [`len`](Self::len) is [`Error::Validation`] on `delivered`, and nothing changes.
    pub async fn acknowledge(self, delivered: usize) -> Result<()> {
        if delivered > self.events.len() {
            return Err(Error::validation(
                "delivered",
                Rule::OutOfRange {
                    min: 0,
                    max: self.events.len() as i64,
                },
            ));
        }
        let ids = self.events[..delivered].iter().map(|e| e.id).collect();
        match self.lease {
            Some(lease) => lease.settle(ids).await,
            None => Ok(()),
        }
    }

    /// Gives the lanes back with nothing delivered.
    pub async fn release(self) -> Result<()> {
        self.acknowledge(0).await
    }
}

/// What waits in the outbox, as [`Store::outbox_backlog`](crate::Store::outbox_backlog) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Backlog {
    /// Committed events not delivered yet.
    pub pending: u64,
    /// When the oldest of them was written; `None` when there is none.
    pub oldest: Option<Timestamp>,
    /// Delivered events not purged yet.
    pub delivered: u64,
}

impl Backlog {
    /// How long the oldest pending event has waited at `now` (zero when none waits).
    pub fn age(&self, now: Timestamp) -> Duration {
        self.oldest
            .and_then(|oldest| (now - oldest).to_std().ok())
            .unwrap_or_default()
    }
}

/// The subjects of Stockroom's own events (see
/// [`StoreConfig::with_own_events`](crate::StoreConfig::with_own_events)). Each carries the
/// product's id as its aggregate and, as its payload, the product as JSON (the fields of its
/// declaration, `id`, `created_at`, `updated_at`, `deleted_at`, `version`), or for a stock move
/// the ledger row (`id`, `source_id`, `target_id`, `quantity`, `idempotency_key`,
/// `created_at`) with the source product as its aggregate.
pub mod subjects {
    /// A product was created.
    pub const PRODUCT_CREATED: &str = "stockroom.product.created";
    /// A product's fields changed (`update`, `update_many`, `adjust_stock`; a transfer writes
    /// [`STOCK_MOVED`] instead).
    pub const PRODUCT_UPDATED: &str = "stockroom.product.updated";
    /// A product was soft-deleted; the payload is `{"id": …, "deleted_at": …}`.
    pub const PRODUCT_DELETED: &str = "stockroom.product.deleted";
    /// A soft-deleted product was restored.
    pub const PRODUCT_RESTORED: &str = "stockroom.product.restored";
    /// A product was deleted for good with `hard_delete`; the payload is `{"id": …}`.
    /// (`purge_deleted_before` writes no event: each row it deletes was announced deleted.)
    pub const PRODUCT_PURGED: &str = "stockroom.product.purged";
    /// Stock moved between two products (a transfer applied; not a replay of its key).
    pub const STOCK_MOVED: &str = "stockroom.stock.moved";
}

/// Builds Stockroom's own events: used by the core's repositories and by adapters' native stock
/// moves.
#[doc(hidden)]
pub mod own {
    use serde_json::{Map, Value as Json};

    use super::{subjects, NewEvent};
    use crate::entities::StockMovement;
    use crate::schema::{Record, Schema, Value};
    use crate::time::Timestamp;

    fn timestamp(at: Timestamp) -> Json {
        Json::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }

    fn value(value: &Value) -> Json {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Text(_) | Value::Name(_) => {
                Json::String(value.as_text().unwrap_or_default().to_owned())
            }
            Value::Uuid(u) => Json::String(u.to_string()),
            Value::Timestamp(t) => timestamp(*t),
        }
    }

    /// `record` of `schema` as a JSON object.
    pub fn record_json(schema: &'static Schema, record: &Record) -> Vec<u8> {
        let mut object = Map::new();
        object.insert("id".into(), Json::String(record.id.to_string()));
        for (field, v) in schema.fields.iter().zip(record.values.iter()) {
            object.insert(field.name.into(), value(v));
        }
        object.insert("created_at".into(), timestamp(record.created_at));
        object.insert("updated_at".into(), timestamp(record.updated_at));
        object.insert(
            "deleted_at".into(),
            record.deleted_at.map_or(Json::Null, timestamp),
        );
        object.insert("version".into(), Json::from(record.version));
        serde_json::to_vec(&Json::Object(object)).expect("a JSON object serializes")
    }

    /// The event `subject` about `record` of `schema`.
    pub fn record_event(subject: &str, schema: &'static Schema, record: &Record) -> NewEvent {
        NewEvent::any(
            subject.to_owned(),
            record.id.to_string(),
            record_json(schema, record),
        )
        .expect("Stockroom's own subjects and ids are valid")
    }

    /// The event of a product soft-deleted at `at`: `{"id": …, "deleted_at": …}`.
    pub fn deleted(id: uuid::Uuid, at: Timestamp) -> NewEvent {
        let payload = serde_json::json!({ "id": id.to_string(), "deleted_at": timestamp(at) });
        NewEvent::any(
            subjects::PRODUCT_DELETED.to_owned(),
            id.to_string(),
            serde_json::to_vec(&payload).expect("a JSON object serializes"),
        )
        .expect("Stockroom's own subjects and ids are valid")
    }

    /// The event of a product deleted for good.
    pub fn purged(id: uuid::Uuid) -> NewEvent {
        let payload = serde_json::to_vec(&serde_json::json!({ "id": id.to_string() }))
            .expect("a JSON object serializes");
        NewEvent::any(subjects::PRODUCT_PURGED.to_owned(), id.to_string(), payload)
            .expect("Stockroom's own subjects and ids are valid")
    }

    /// The event of an applied stock move.
    pub fn stock_moved(movement: &StockMovement) -> NewEvent {
        let payload = serde_json::json!({
            "id": movement.id.to_string(),
            "source_id": movement.source_id.to_string(),
            "target_id": movement.target_id.to_string(),
            "quantity": movement.quantity,
            "idempotency_key": movement.idempotency_key,
            "created_at": timestamp(movement.created_at),
        });
        NewEvent::any(
            subjects::STOCK_MOVED.to_owned(),
            movement.source_id.to_string(),
            serde_json::to_vec(&payload).expect("a JSON object serializes"),
        )
        .expect("Stockroom's own subjects and ids are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_checked() {
        for good in ["a", "orders.placed", "a-b_c.D9"] {
            assert!(NewEvent::new(good, "x", Vec::new()).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a.*",
            "a.>",
            "ä",
            "stockroom.product.created",
        ] {
            let err = NewEvent::new(bad, "x", Vec::new()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Validation {
                        field: "subject",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        assert!(NewEvent::new(long, "x", Vec::new()).is_err());
    }

    #[test]
    fn aggregates_and_payloads_are_checked() {
        let err = NewEvent::new("s", "", Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            Error::Validation {
                field: "aggregate",
                rule: Rule::Empty
            }
        ));
        let err = NewEvent::new("s", "a\nb", Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            Error::Validation {
                field: "aggregate",
                rule: Rule::ControlCharacter
            }
        ));
        let err = NewEvent::new("s", "a", vec![0; MAX_PAYLOAD_LEN + 1]).unwrap_err();
        assert!(matches!(
            err,
            Error::Validation {
                field: "payload",
                ..
            }
        ));
        assert!(NewEvent::new("s", "a", vec![0; MAX_PAYLOAD_LEN]).is_ok());
    }

    #[test]
    fn lanes_are_fnv1a_modulo_lanes() {
        // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(lane_of(""), (0xcbf2_9ce4_8422_2325_u64 % 32) as u16);
        assert_eq!(lane_of("a"), (0xaf63_dc4c_8601_ec8c_u64 % 32) as u16);
        let lanes: std::collections::HashSet<u16> =
            (0..1000).map(|i| lane_of(&format!("order-{i}"))).collect();
        assert_eq!(
            lanes.len(),
            LANES as usize,
            "1,000 aggregates reach every lane"
        );
    }

    #[test]
    fn claim_options_are_checked() {
        assert!(ClaimOptions::default().check().is_ok());
        let bad = ClaimOptions {
            max_events: 0,
            ..ClaimOptions::default()
        };
        assert!(matches!(
            bad.check(),
            Err(Error::Validation {
                field: "max_events",
                ..
            })
        ));
        let bad = ClaimOptions {
            max_lanes: LANES + 1,
            ..ClaimOptions::default()
        };
        assert!(matches!(
            bad.check(),
            Err(Error::Validation {
                field: "max_lanes",
                ..
            })
        ));
        let bad = ClaimOptions {
            lease: Duration::from_millis(10),
            ..ClaimOptions::default()
        };
        assert!(matches!(
            bad.check(),
            Err(Error::Validation { field: "lease", .. })
        ));
    }
}

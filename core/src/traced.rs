//! The tracing decorator of every port: [`Traced`].

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};

use uuid::Uuid;

use crate::entities::{NewStockMovement, StockMovement};
use crate::error::{Error, Result};
use crate::ids::{ProductId, StockMovementId};
use crate::outbox::{Backlog, ClaimOptions, Claimed, NewEvent};
use crate::ports::{
    ReadSession, Readers, RecordReader, RecordWriter, Repositories, Savepoint, StockMoved,
    StockMovementReader, StockMovementRepository, Store, UnitOfWork,
};
use crate::query::{Page, SearchPage};
use crate::schema::{Changes, Condition, Incremented, Record, Schema, Selection, Value};
use crate::time::Timestamp;

/// A [`Store`] whose every operation, and every operation of its units of work and read sessions,
/// runs inside a `tracing` span. It delegates everything to the store it wraps.
///
/// - Span names: `stockroom.<operation>` for the operations of every entity, Stockroom's and the
///   application's (e.g. `stockroom.get`, `stockroom.create`, `stockroom.increment` for a stock
///   adjustment), with the entity in the `entity` field; `stockroom.stock_movement.<operation>`
///   for the ledger (e.g. `stockroom.stock_movement.record`); `stockroom.begin`,
///   `stockroom.read`, `stockroom.health`, `stockroom.readiness`, `stockroom.close`, `stockroom.savepoint`,
///   `stockroom.rollback_to`, `stockroom.release`, `stockroom.commit`, `stockroom.rollback`.
/// - Fields: `entity` (the entity's declared name) and `operation`, and the same as
///   OpenTelemetry's database conventions name them: `db.system.name` (`postgresql`, `sqlite`,
///   `memory`), `db.operation.name` and `db.collection.name` (the entity's table), on every
///   operation of an entity or of the ledger; the ids an operation is
///   about (`id`, `ids`, `product`, `source`, `target`; the new rows' ids for an insert); a few
///   sizes (`count` of a batch, `delta` of a stock adjustment, `limit` of a list, savepoint
///   `depth`); the `rule` of a lookup by unique value; and `outcome`: `ok`, or the kind
///   of the error (`not_found`, `conflict`, `referenced`, `insufficient_stock`, `validation`, `stale_version`,
///   `transient`, `unavailable`, `ambiguous_commit`, `storage_fault`, `unsupported`,
///   `unknown_entity`, `schema`, `backend`). Never a row, a search text, a slug, an email or an
///   idempotency key.
/// - Level `DEBUG`, so they cost next to nothing unless a subscriber asks for them; nothing is
///   printed without a subscriber.
/// - The operations of one unit of work (or read session) are children of a
///   `stockroom.unit_of_work` (or `stockroom.read_session`) span opened by `begin` (or `read`),
///   itself a child of the span current at that moment (e.g. `stockroom.transfer`).
///
/// ```
/// # async fn demo(store: impl stockroom_core::Store + 'static) -> stockroom_core::Result<()> {
/// use stockroom_core::{traced, ProductId, Store};
/// let store = traced(store);
/// let mut session = store.read().await?;
/// // Runs in a `stockroom.get` span with `entity = "product"`, `id` and `outcome` fields.
/// session.products().get(ProductId::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Traced<S>(S);

/// Wraps `store` so that every operation runs inside a `tracing` span: see [`Traced`].
pub fn traced<S: Store + 'static>(store: S) -> Traced<S> {
    Traced::new(store)
}

impl<S: Store> Traced<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Traced(store)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.0
    }

    /// The wrapped store, unwrapped.
    pub fn into_inner(self) -> S {
        self.0
    }
}

/// The `outcome` field of a finished operation.
fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => outcome_of(error),
    }
}

/// The kind of `error`, as the spans' `outcome` field and the metrics name it.
pub(crate) fn outcome_of(error: &Error) -> &'static str {
    match error {
        Error::NotFound { .. } => "not_found",
        Error::Conflict { .. } => "conflict",
        Error::Referenced { .. } => "referenced",
        Error::InsufficientStock { .. } => "insufficient_stock",
        Error::Validation { .. } => "validation",
        Error::StaleVersion { .. } => "stale_version",
        Error::Transient { .. } => "transient",
        Error::Unavailable { .. } => "unavailable",
        Error::AmbiguousCommit { .. } => "ambiguous_commit",
        Error::Storage { .. } => "storage_fault",
        Error::Unsupported { .. } => "unsupported",
        Error::UnknownEntity { .. } => "unknown_entity",
        Error::Schema { .. } => "schema",
        Error::Backend { .. } => "backend",
    }
}

/// What an operation is, for its metrics: the backend, the operation's name and the table it
/// is on (empty for none). Read only with the `metrics` feature.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
struct Op {
    backend: crate::Backend,
    name: &'static str,
    table: &'static str,
}

impl Op {
    fn new(backend: crate::Backend, name: &'static str) -> Self {
        Self {
            backend,
            name,
            table: "",
        }
    }

    fn on(mut self, table: &'static str) -> Self {
        self.table = table;
        self
    }
}

/// Runs `operation` inside `span`, then records its outcome (and, on success, whatever
/// `on_ok` records) on the span, and its duration among the metrics (feature `metrics`).
async fn observe<T>(
    span: Span,
    op: Op,
    operation: impl Future<Output = Result<T>>,
    on_ok: impl FnOnce(&Span, &T),
) -> Result<T> {
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let result = operation.instrument(span.clone()).await;
    if let Ok(value) = &result {
        on_ok(&span, value);
    }
    let outcome = outcome(&result);
    span.record("outcome", outcome);
    #[cfg(feature = "metrics")]
    crate::metrics::operation(op.backend, op.name, op.table, outcome, started.elapsed());
    #[cfg(not(feature = "metrics"))]
    let _ = op;
    result
}

/// A list of ids as a span field: `[a, b]`, the first few only.
struct Ids<'a, I>(&'a [I]);

impl<I: fmt::Display> fmt::Display for Ids<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        f.write_str("[")?;
        for (i, id) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, ", … {} more", self.0.len() - SHOWN)?;
        }
        f.write_str("]")
    }
}

impl<S: Store> Traced<S> {
    /// The read session `opening` gives, opened inside `span` and traced in a
    /// `stockroom.read_session` span of its own.
    async fn traced_read_session(
        &self,
        span: Span,
        op: &'static str,
        opening: impl Future<Output = Result<Box<dyn ReadSession>>>,
    ) -> Result<Box<dyn ReadSession>> {
        let backend = self.0.backend();
        let inner = observe(span, Op::new(backend, op), opening, |_, _| {}).await?;
        let span = tracing::debug_span!(
            "stockroom.read_session",
            backend = self.0.backend().as_str()
        );
        Ok(Box::new(TracedReadSession {
            inner,
            span,
            backend,
        }))
    }
}

#[async_trait]
impl<S: Store> Store for Traced<S> {
    fn backend(&self) -> crate::Backend {
        self.0.backend()
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        let backend = self.0.backend().as_str();
        let span = tracing::debug_span!("stockroom.begin", backend, outcome = Empty);
        let op = Op::new(self.0.backend(), "begin");
        let mut inner = observe(span, op, self.0.begin(), |_, _| {}).await?;
        let span = tracing::debug_span!("stockroom.unit_of_work", backend);
        let own_events = inner.repositories().own_events();
        Ok(Box::new(TracedUnitOfWork {
            inner,
            span,
            own_events,
        }))
    }

    async fn read(&self) -> Result<Box<dyn ReadSession>> {
        let span = tracing::debug_span!(
            "stockroom.read",
            backend = self.0.backend().as_str(),
            outcome = Empty
        );
        self.traced_read_session(span, "read", self.0.read()).await
    }

    async fn read_primary(&self) -> Result<Box<dyn ReadSession>> {
        let backend = self.0.backend().as_str();
        let span = tracing::debug_span!("stockroom.read_primary", backend, outcome = Empty);
        self.traced_read_session(span, "read_primary", self.0.read_primary())
            .await
    }

    async fn health(&self) -> Result<()> {
        let span = tracing::debug_span!(
            "stockroom.health",
            backend = self.0.backend().as_str(),
            outcome = Empty
        );
        let op = Op::new(self.0.backend(), "health");
        observe(span, op, self.0.health(), |_, _| {}).await
    }

    async fn readiness(&self) -> Result<()> {
        let span = tracing::debug_span!(
            "stockroom.readiness",
            backend = self.0.backend().as_str(),
            outcome = Empty
        );
        let op = Op::new(self.0.backend(), "readiness");
        observe(span, op, self.0.readiness(), |_, _| {}).await
    }

    async fn close(&self) {
        let span = tracing::debug_span!("stockroom.close", backend = self.0.backend().as_str());
        self.0.close().instrument(span).await
    }

    async fn claim_events(&self, options: &ClaimOptions) -> Result<Claimed> {
        let span = tracing::debug_span!(
            "stockroom.claim_events",
            backend = self.0.backend().as_str(),
            max_events = options.max_events,
            claimed = Empty,
            outcome = Empty
        );
        let op = Op::new(self.0.backend(), "claim_events").on(OUTBOX_TABLE);
        observe(
            span,
            op,
            self.0.claim_events(options),
            |span, claimed: &Claimed| {
                span.record("claimed", claimed.len());
            },
        )
        .await
    }

    async fn outbox_backlog(&self) -> Result<Backlog> {
        let span = tracing::debug_span!(
            "stockroom.outbox_backlog",
            backend = self.0.backend().as_str(),
            outcome = Empty
        );
        let op = Op::new(self.0.backend(), "outbox_backlog").on(OUTBOX_TABLE);
        observe(span, op, self.0.outbox_backlog(), |_, _| {}).await
    }

    async fn purge_delivered_events(&self, before: Timestamp) -> Result<u64> {
        let span = tracing::debug_span!(
            "stockroom.purge_delivered_events",
            backend = self.0.backend().as_str(),
            outcome = Empty
        );
        let op = Op::new(self.0.backend(), "purge_delivered_events").on(OUTBOX_TABLE);
        observe(span, op, self.0.purge_delivered_events(before), |_, _| {}).await
    }

    async fn move_stock(&self, movement: &NewStockMovement) -> Result<StockMoved> {
        let span = move_stock_span(&Span::current(), self.0.backend(), movement);
        let op = Op::new(self.0.backend(), "move_stock").on(LEDGER_TABLE);
        observe(span, op, self.0.move_stock(movement), record_moved).await
    }
}

/// The ledger's table, for the metrics of its operations.
use crate::adapter::LEDGER_TABLE;
/// The outbox's table, for the metrics of its operations.
use crate::adapter::OUTBOX_TABLE;

/// The span of a stock move: `stockroom.move_stock` with the products, the quantity, whether it
/// is keyed, and (once done) the ledger row's id.
fn move_stock_span(parent: &Span, backend: crate::Backend, movement: &NewStockMovement) -> Span {
    tracing::debug_span!(
        parent: parent,
        "stockroom.move_stock",
        backend = backend.as_str(),
        db.system.name = crate::metrics::system_name(backend),
        db.operation.name = "move_stock",
        db.collection.name = LEDGER_TABLE,
        source = %movement.source_id(),
        target = %movement.target_id(),
        quantity = movement.quantity(),
        idempotent = movement.idempotency_key().is_some(),
        id = Empty,
        outcome = Empty,
    )
}

fn record_moved(span: &Span, moved: &StockMoved) {
    span.record("id", display(moved.movement().id));
}

/// A unit of work whose operations run in spans, children of `span`. It implements every port
/// itself, so `repositories()` simply returns `self`.
struct TracedUnitOfWork {
    inner: Box<dyn UnitOfWork>,
    span: Span,
    /// What the unit of work's writer answers to `own_events` (asked once, at `begin`).
    own_events: bool,
}

/// A read session whose reads run in spans, children of `span`; like [`TracedUnitOfWork`], it
/// is every reader itself.
struct TracedReadSession {
    inner: Box<dyn ReadSession>,
    span: Span,
    backend: crate::Backend,
}

/// `$wrapper: $trait => ("entity", accessor) { methods }` implements `$trait` for `$wrapper`, each
/// listed method delegating to `self.inner.$accessor().$op(..)` inside a span
/// `stockroom.$entity.$op` with the fields in `[..]`. After `=>`, a closure `|span, value|` that
/// records more fields from a successful result.
macro_rules! traced_impl {
    (
        $wrapper:ty: $trait:ty => ($entity:literal, $accessor:ident) {
            $(
                async fn $op:ident(&mut self $(, $arg:ident: $arg_ty:ty)*) -> $ret:ty
                    $([$($field:tt)*])? $(=> $on_ok:expr)?;
            )*
        }
    ) => {
        #[async_trait]
        impl $trait for $wrapper {
            $(
                async fn $op(&mut self $(, $arg: $arg_ty)*) -> $ret {
                    let span = tracing::debug_span!(
                        parent: &self.span,
                        concat!("stockroom.", $entity, ".", stringify!($op)),
                        entity = $entity,
                        operation = stringify!($op),
                        db.system.name = crate::metrics::system_name(self.backend()),
                        db.operation.name = stringify!($op),
                        db.collection.name = LEDGER_TABLE,
                        $($($field)*,)?
                        outcome = Empty,
                    );
                    let op = Op::new(self.backend(), stringify!($op)).on(LEDGER_TABLE);
                    let operation = self.inner.$accessor().$op($($arg),*);
                    observe(span, op, operation, traced_impl!(@on_ok $($on_ok)?)).await
                }
            )*
        }
    };
    (@on_ok) => {
        |_: &Span, _: &_| {}
    };
    (@on_ok $on_ok:expr) => {
        $on_ok
    };
}

/// `$wrapper: $trait { methods }` implements a generic port for `$wrapper`: each method, whose
/// first argument is the entity's `schema`, delegates to `self.inner.$accessor().$op(..)` inside
/// a span `stockroom.$op` whose `entity` field is the schema's name.
macro_rules! traced_records {
    (
        $wrapper:ty: $trait:ty => $accessor:ident {
            $(extra { $($extra:item)* })?
            $(
                async fn $op:ident(&mut self, $schema:ident: &'static Schema $(, $arg:ident: $arg_ty:ty)*)
                    -> $ret:ty $([$($field:tt)*])?;
            )*
        }
    ) => {
        #[async_trait]
        impl $trait for $wrapper {
            $($($extra)*)?
            $(
                async fn $op(&mut self, $schema: &'static Schema $(, $arg: $arg_ty)*) -> $ret {
                    let span = tracing::debug_span!(
                        parent: &self.span,
                        concat!("stockroom.", stringify!($op)),
                        entity = $schema.name,
                        operation = stringify!($op),
                        db.system.name = crate::metrics::system_name(self.backend()),
                        db.operation.name = stringify!($op),
                        db.collection.name = $schema.table,
                        $($($field)*,)?
                        outcome = Empty,
                    );
                    let op = Op::new(self.backend(), stringify!($op)).on($schema.table);
                    let operation = <_ as $trait>::$op(self.inner.$accessor(), $schema $(, $arg)*);
                    observe(span, op, operation, |_, _| {}).await
                }
            )*
        }
    };
}

/// The traced [`RecordReader`] of one wrapper.
macro_rules! traced_record_reader {
    ($wrapper:ty => $accessor:ident) => {
        traced_records! {
            $wrapper: RecordReader => $accessor {
                async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>>
                    [id = %id];
                async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid])
                    -> Result<Vec<Record>>
                    [ids = %Ids(ids)];
                async fn find(
                    &mut self,
                    schema: &'static Schema,
                    unique: usize,
                    values: &[Value]
                ) -> Result<Option<Record>>
                    [rule = schema.unique.get(unique).map_or("?", |u| u.name)];
                async fn get_related(&mut self, schema: &'static Schema, id: Uuid)
                    -> Result<Option<(Record, Vec<Option<Record>>)>>
                    [id = %id];
                async fn list(&mut self, schema: &'static Schema, selection: &Selection)
                    -> Result<Vec<Record>>
                    [limit = selection.limit];
                async fn count(&mut self, schema: &'static Schema, conditions: &[Condition])
                    -> Result<u64>;
                async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition])
                    -> Result<bool>;
                async fn search(
                    &mut self,
                    schema: &'static Schema,
                    conditions: &[Condition],
                    page: Page
                ) -> Result<SearchPage<Record>>;
                async fn tally(
                    &mut self,
                    schema: &'static Schema,
                    conditions: &[Condition],
                    field: usize
                ) -> Result<Vec<(Value, u64)>>;
                async fn list_deleted(&mut self, schema: &'static Schema, page: Page)
                    -> Result<Vec<Record>>;
            }
        }
    };
}
traced_record_reader!(TracedUnitOfWork => repositories);
traced_record_reader!(TracedReadSession => readers);

traced_records! {
    TracedUnitOfWork: RecordWriter => repositories {
        extra {
            async fn increment(
                &mut self,
                schema: &'static Schema,
                id: Uuid,
                field: usize,
                delta: i64,
                at: Timestamp,
            ) -> Result<Incremented> {
                self.traced_increment(schema, id, field, delta, at).await
            }

            async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()> {
                let span = tracing::debug_span!(
                    parent: &self.span,
                    "stockroom.append_events",
                    operation = "append_events",
                    count = events.len(),
                    outcome = Empty,
                );
                let op = Op::new(self.backend(), "append_events").on(OUTBOX_TABLE);
                let operation = self.inner.repositories().append_events(events);
                observe(span, op, operation, |_, _| {}).await
            }

            fn own_events(&self) -> bool {
                self.own_events
            }
        }
        async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>)
            -> Result<Vec<Record>>
            [count = rows.len(), id = %Ids(&rows.iter().map(|r| r.id).collect::<Vec<_>>())];
        async fn update(
            &mut self,
            schema: &'static Schema,
            id: Uuid,
            changes: &Changes,
            expected_version: Option<i64>
        ) -> Result<Record>
            [id = %id, expected_version];
        async fn update_many(&mut self, schema: &'static Schema, ids: &[Uuid], changes: &Changes)
            -> Result<u64>
            [ids = %Ids(ids)];
        async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>>
            [ids = %Ids(ids)];
        async fn soft_delete(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp)
            -> Result<bool>
            [id = %id];
        async fn restore(&mut self, schema: &'static Schema, id: Uuid, at: Timestamp)
            -> Result<bool>
            [id = %id];
        async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()>
            [id = %id];
        async fn purge_deleted_before(&mut self, schema: &'static Schema, before: Timestamp)
            -> Result<u64>
            [before = %before];
    }
}

impl TracedUnitOfWork {
    /// [`RecordWriter::increment`] in a `stockroom.increment` span, whose outcome tells a
    /// refused increment (`not_found`, `out_of_range`) from an applied one.
    async fn traced_increment(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        field: usize,
        delta: i64,
        at: Timestamp,
    ) -> Result<Incremented> {
        let span = tracing::debug_span!(
            parent: &self.span,
            "stockroom.increment",
            entity = schema.name,
            operation = "increment",
            db.system.name = crate::metrics::system_name(self.inner.backend()),
            db.operation.name = "increment",
            db.collection.name = schema.table,
            field = schema.fields.get(field).map_or("?", |f| f.name),
            id = %id,
            delta,
            outcome = Empty,
        );
        #[cfg(feature = "metrics")]
        let (backend, started) = (self.inner.backend(), std::time::Instant::now());
        let operation =
            RecordWriter::increment(self.inner.repositories(), schema, id, field, delta, at);
        let result = operation.instrument(span.clone()).await;
        let outcome = match &result {
            Ok(Incremented::Done(_)) => "ok",
            Ok(Incremented::NotLive) => "not_found",
            Ok(Incremented::OutOfRange { .. }) => "out_of_range",
            Err(_) => outcome(&result),
        };
        span.record("outcome", outcome);
        #[cfg(feature = "metrics")]
        crate::metrics::operation(
            backend,
            "increment",
            schema.table,
            outcome,
            started.elapsed(),
        );
        result
    }
}

// The stock ledger.

macro_rules! traced_movement_reader {
    ($wrapper:ty) => {
        traced_impl! {
            $wrapper: StockMovementReader => ("stock_movement", movements) {
                async fn get(&mut self, id: StockMovementId) -> Result<Option<StockMovement>>
                    [id = %id];
                async fn by_idempotency_key(&mut self, key: &str)
                    -> Result<Option<StockMovement>>;
                async fn for_product(&mut self, product: ProductId, page: Page)
                    -> Result<Vec<StockMovement>>
                    [product = %product];
                async fn count(&mut self) -> Result<u64>;
            }
        }
    };
}
traced_movement_reader!(TracedUnitOfWork);
traced_movement_reader!(TracedReadSession);

traced_impl! {
    TracedUnitOfWork: StockMovementRepository => ("stock_movement", movements) {
        async fn record(&mut self, movement: NewStockMovement) -> Result<StockMovement>
            [
                source = %movement.source_id(),
                target = %movement.target_id(),
                quantity = movement.quantity(),
                id = Empty
            ]
            => |span: &Span, row: &StockMovement| {
                span.record("id", display(row.id));
            };
    }
}

// The sessions themselves.

impl ReadSession for TracedReadSession {
    fn backend(&self) -> crate::Backend {
        self.backend
    }

    fn readers(&mut self) -> &mut dyn Readers {
        self
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        self.inner.as_native()
    }
}

impl TracedUnitOfWork {
    fn span(&self, name: &'static str) -> Span {
        // The span macros want a literal name: one arm per control operation.
        macro_rules! control_span {
            ($($name:literal),*) => {
                match name {
                    $($name => tracing::debug_span!(
                        parent: &self.span, $name, depth = Empty, outcome = Empty
                    ),)*
                    _ => unreachable!("not a unit of work operation: {name}"),
                }
            };
        }
        control_span!(
            "stockroom.savepoint",
            "stockroom.rollback_to",
            "stockroom.release",
            "stockroom.commit",
            "stockroom.rollback"
        )
    }
}

#[async_trait]
impl UnitOfWork for TracedUnitOfWork {
    fn backend(&self) -> crate::Backend {
        self.inner.backend()
    }

    fn repositories(&mut self) -> &mut dyn Repositories {
        self
    }

    async fn savepoint(&mut self) -> Result<Savepoint> {
        let span = self.span("stockroom.savepoint");
        let op = Op::new(self.inner.backend(), "savepoint");
        observe(span, op, self.inner.savepoint(), |span, sp| {
            span.record("depth", sp.depth());
        })
        .await
    }

    async fn rollback_to(&mut self, savepoint: Savepoint) -> Result<()> {
        let span = self.span("stockroom.rollback_to");
        span.record("depth", savepoint.depth());
        let op = Op::new(self.inner.backend(), "rollback_to");
        observe(span, op, self.inner.rollback_to(savepoint), |_, _| {}).await
    }

    async fn release(&mut self, savepoint: Savepoint) -> Result<()> {
        let span = self.span("stockroom.release");
        span.record("depth", savepoint.depth());
        let op = Op::new(self.inner.backend(), "release");
        observe(span, op, self.inner.release(savepoint), |_, _| {}).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let span = self.span("stockroom.commit");
        let op = Op::new(self.inner.backend(), "commit");
        observe(span, op, self.inner.commit(), |_, _| {}).await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let span = self.span("stockroom.rollback");
        let op = Op::new(self.inner.backend(), "rollback");
        observe(span, op, self.inner.rollback(), |_, _| {}).await
    }

    async fn move_stock(&mut self, movement: &NewStockMovement) -> Result<StockMoved> {
        let span = move_stock_span(&self.span, self.inner.backend(), movement);
        let op = Op::new(self.inner.backend(), "move_stock").on(LEDGER_TABLE);
        observe(span, op, self.inner.move_stock(movement), record_moved).await
    }

    fn as_native(&mut self) -> Option<&mut (dyn std::any::Any + Send)> {
        self.inner.as_native()
    }
}

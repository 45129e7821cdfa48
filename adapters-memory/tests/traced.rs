//! The tracing decorator (`stockroom_core::traced`) over the memory store: every operation runs
//! in a span named after it, with the ids it is about and its outcome, never a row's content.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use stockroom_core::mocks::{Fault, FaultyStore};
use stockroom_core::{
    product_details, traced, Error, Limit, NewProduct, ProductId, StockDelta, Store,
    TransferRequest, UnitOfWorkExt,
};
use stockroom_memory::MemoryStore;
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One span as a subscriber saw it: its name, its parent's name and every field value
/// recorded on it (at creation or later).
#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<&'static str, String>,
}

/// A layer that keeps every span it sees.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is registered");
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        span.extensions_mut().insert(Index(spans.len()));
        spans.push(Captured {
            name: attrs.metadata().name(),
            parent: span.parent().map(|p| p.name()),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span is registered");
        let extensions = span.extensions();
        let Index(index) = extensions.get::<Index>().expect("indexed on creation");
        values.record(&mut Fields(&mut self.0.lock().unwrap()[*index].fields));
    }
}

/// tracing caches each callsite's interest globally. A test that runs with no subscriber
/// and one that installs a capture, on two threads at once, can race on that cache and leave
/// a callsite disabled for the capture; so these tests take turns, and each one rebuilds the
/// cache after installing its capture.
static TRACING_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn install(capture: &Capture) -> tracing::subscriber::DefaultGuard {
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    tracing::callsite::rebuild_interest_cache();
    guard
}

impl Capture {
    fn named(&self, name: &str) -> Vec<Captured> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    fn one(&self, name: &str) -> Captured {
        let found = self.named(name);
        assert_eq!(found.len(), 1, "spans named {name}: {found:?}");
        found.into_iter().next().unwrap()
    }
}

fn fields(span: &Captured) -> Vec<(&'static str, &str)> {
    span.fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A memory store holding two products, "Secret Lamp" (2 in stock) and "Secret Desk" (0).
async fn store_with_two_products() -> (MemoryStore, ProductId, ProductId) {
    let store = MemoryStore::new();
    let mut uow = store.begin().await.unwrap();
    let lamp = NewProduct::new("Secret Lamp", "secret-lamp", "SECRET-1")
        .unwrap()
        .with_stock(2)
        .unwrap();
    let desk = NewProduct::new("Secret Desk", "secret-desk", "SECRET-2").unwrap();
    let a = uow.products().create(lamp).await.unwrap().id;
    let b = uow.products().create(desk).await.unwrap().id;
    uow.commit().await.unwrap();
    (store, a, b)
}

#[tokio::test]
async fn unit_of_work_operations_run_in_spans_with_ids_and_outcome() {
    let _turn = TRACING_TESTS.lock().await;
    let (store, a, b) = store_with_two_products().await;
    let capture = Capture::default();
    let _guard = install(&capture);
    let store = traced(store);

    let mut uow = store.begin().await.unwrap();
    let got = uow.products().get(a).await.unwrap();
    assert_eq!(got.map(|p| p.id), Some(a), "the result passes through");
    let err = uow
        .products()
        .adjust_stock(a, StockDelta::new(-3).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InsufficientStock { .. }), "{err:?}");
    let moved = uow.transfer(&TransferRequest::new(a, b, 1)).await.unwrap();
    uow.commit().await.unwrap();

    let begin = capture.one("stockroom.begin");
    assert_eq!(fields(&begin), [("backend", "memory"), ("outcome", "ok")]);

    let get = capture.one("stockroom.get");
    assert_eq!(get.parent, Some("stockroom.unit_of_work"));
    // The id and the outcome, never the row.
    assert_eq!(
        fields(&get),
        [
            ("db.collection.name", "products"),
            ("db.operation.name", "get"),
            ("db.system.name", "memory"),
            ("entity", "product"),
            ("id", a.to_string().as_str()),
            ("operation", "get"),
            ("outcome", "ok"),
        ]
    );

    let adjust = capture.one("stockroom.increment");
    assert_eq!(adjust.fields["outcome"], "out_of_range");
    assert_eq!(adjust.fields["field"], "stock");
    assert_eq!(adjust.fields["delta"], "-3");
    assert_eq!(adjust.fields["id"], a.to_string());

    let movement = capture.one("stockroom.move_stock");
    assert_eq!(movement.parent, Some("stockroom.unit_of_work"));
    assert_eq!(
        movement.fields["id"],
        moved.id.to_string(),
        "recorded on success"
    );
    assert_eq!(movement.fields["source"], a.to_string());
    assert_eq!(movement.fields["target"], b.to_string());
    assert_eq!(movement.fields["outcome"], "ok");
    assert_eq!(movement.fields["db.collection.name"], "stock_movements");
    assert_eq!(movement.fields["db.system.name"], "memory");

    let commit = capture.one("stockroom.commit");
    assert_eq!(commit.parent, Some("stockroom.unit_of_work"));
    assert_eq!(commit.fields["outcome"], "ok");

    let spans = capture.0.lock().unwrap();
    for span in spans.iter() {
        for value in span.fields.values() {
            assert!(!value.contains("Secret"), "a row leaked into {span:?}");
        }
    }
}

#[tokio::test]
async fn read_session_operations_and_failures_are_traced() {
    let _turn = TRACING_TESTS.lock().await;
    let (store, a, _) = store_with_two_products().await;
    let faulty = FaultyStore::new(store);
    let capture = Capture::default();
    let _guard = install(&capture);
    let store = traced(faulty.clone());

    let details = product_details(&store, a, Limit::new(3).unwrap()).await;
    assert!(matches!(details, Ok(Some(_))), "{details:?}");
    assert_eq!(capture.named("stockroom.read").len(), 3);
    let get = capture.one("stockroom.get");
    assert_eq!(get.parent, Some("stockroom.read_session"));
    assert_eq!(get.fields["outcome"], "ok");
    let sessions = capture.named("stockroom.read_session");
    assert_eq!(sessions.len(), 3);
    assert!(
        sessions
            .iter()
            .all(|s| s.parent == Some("stockroom.product_details")),
        "sessions are children of the use case's span: {sessions:?}"
    );

    faulty.inject(Fault::Read, 1, || Error::transient("busy"));
    assert!(store.read().await.is_err());
    let reads = capture.named("stockroom.read");
    assert_eq!(reads.last().unwrap().fields["outcome"], "transient");
}

#[tokio::test]
async fn a_read_on_the_primary_is_traced_as_such() {
    let _turn = TRACING_TESTS.lock().await;
    let (store, a, _) = store_with_two_products().await;
    let capture = Capture::default();
    let _guard = install(&capture);
    let store = traced(store);

    let mut session = store.read_primary().await.unwrap();
    session.products().get(a).await.unwrap();
    let opened = capture.one("stockroom.read_primary");
    assert_eq!(opened.fields["outcome"], "ok");
    let get = capture.one("stockroom.get");
    assert_eq!(get.parent, Some("stockroom.read_session"));
    assert!(
        capture.named("stockroom.read").is_empty(),
        "not a plain read"
    );
}

#[tokio::test]
async fn without_a_subscriber_it_only_delegates() {
    let _turn = TRACING_TESTS.lock().await;
    let (store, a, _) = store_with_two_products().await;
    let store = traced(store);
    assert_eq!(store.backend(), stockroom_core::Backend::Memory);
    store.health().await.unwrap();
    let mut session = store.read().await.unwrap();
    let got = session.products().get(a).await.unwrap().unwrap();
    assert_eq!((got.id, got.stock), (a, 2));
    store.close().await;
    assert!(matches!(
        store.health().await,
        Err(Error::Unavailable { .. })
    ));
}

//! Stockroom's own events, on a store configured with `own_events` (run by
//! [`suite!`](crate::suite) on its `own_events` fixture): each write to a product, and each applied
//! stock move, writes its event in the same unit of work; a refused or rolled-back write writes
//! none.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use stockroom_core::outbox::{subjects, ClaimOptions, Event, LANES};
use stockroom_core::{ProductPatch, StockDelta, Store, StoreExt, TransferRequest, UnitOfWorkExt};

use crate::support::*;

/// Every undelivered event, in sequence order (the claim is released).
async fn outbox(store: &Arc<dyn Store>) -> Vec<Event> {
    let options = ClaimOptions {
        max_events: 10_000,
        max_lanes: LANES,
        lease: Duration::from_secs(30),
    };
    let claimed = store.claim_events(&options).await.expect("claim");
    let mut events = claimed.events().to_vec();
    claimed.release().await.expect("release");
    events.sort_by_key(|e| e.sequence);
    events
}

fn subjects_of(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.subject.as_str()).collect()
}

fn json(event: &Event) -> Json {
    serde_json::from_slice(&event.payload).expect("a JSON payload")
}

/// create, update, adjust_stock, soft_delete, restore and hard_delete each write their event,
/// about the product (its id the aggregate), in order, with the product as stored; a write
/// refused (a stale version, a delete of a deleted product) or rolled back writes none.
pub async fn product_writes_write_their_events(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 5)).await;
    let mut uow = store.begin().await.expect("begin");
    let renamed = uow
        .products()
        .update(
            p.id,
            &ProductPatch::new().with_name("Renamed").unwrap(),
            Some(1),
        )
        .await
        .expect("update");
    assert!(
        uow.products()
            .update(
                p.id,
                &ProductPatch::new().with_name("Stale").unwrap(),
                Some(1)
            )
            .await
            .is_err(),
        "a stale version is refused"
    );
    uow.products()
        .adjust_stock(p.id, StockDelta::new(-2).unwrap())
        .await
        .expect("adjust");
    assert!(uow.products().soft_delete(p.id).await.expect("delete"));
    assert!(!uow
        .products()
        .soft_delete(p.id)
        .await
        .expect("delete again"));
    assert!(uow.products().restore(p.id).await.expect("restore"));
    uow.commit().await.expect("commit");

    let mut uow = store.begin().await.expect("begin");
    uow.products()
        .create(new_product("rolled-back", 1))
        .await
        .expect("create");
    uow.rollback().await.expect("rollback");

    let mut uow = store.begin().await.expect("begin");
    uow.products().hard_delete(p.id).await.expect("hard delete");
    uow.commit().await.expect("commit");

    let events = outbox(&store).await;
    assert_eq!(
        subjects_of(&events),
        [
            subjects::PRODUCT_CREATED,
            subjects::PRODUCT_UPDATED,
            subjects::PRODUCT_UPDATED,
            subjects::PRODUCT_DELETED,
            subjects::PRODUCT_RESTORED,
            subjects::PRODUCT_PURGED,
        ]
    );
    let id = p.id.to_string();
    assert!(
        events.iter().all(|e| e.aggregate == id),
        "about the product"
    );
    let created = json(&events[0]);
    assert_eq!(
        (
            &created["id"],
            &created["name"],
            &created["stock"],
            &created["version"]
        ),
        (
            &Json::from(id.clone()),
            &Json::from(p.name.as_str()),
            &Json::from(5),
            &Json::from(1)
        ),
        "{created}"
    );
    let updated = json(&events[1]);
    assert_eq!(
        (&updated["name"], &updated["version"]),
        (&Json::from("Renamed"), &Json::from(renamed.version))
    );
    assert_eq!(
        json(&events[2])["stock"],
        Json::from(3),
        "after the adjustment"
    );
    assert!(json(&events[3])["deleted_at"].is_string());
    assert_eq!(json(&events[4])["deleted_at"], Json::Null, "restored");
    assert_eq!(json(&events[5]), serde_json::json!({ "id": id }));
}

/// An applied transfer writes one `stock.moved` event (the ledger row, the source its
/// aggregate) and no product event; a replay of its key, and a refused transfer, write none.
pub async fn an_applied_transfer_writes_one_stock_moved_event(store: Arc<dyn Store>) {
    let a = create_product(&store, new_product("a", 5)).await;
    let b = create_product(&store, new_product("b", 0)).await;
    let before = outbox(&store).await.len();
    assert_eq!(before, 2, "two products created");

    let request = TransferRequest::new(a.id, b.id, 3).with_idempotency_key("move-1");
    let moved = store.transfer(&request).await.expect("transfer");
    store.transfer(&request).await.expect("replay");
    assert!(
        store
            .transfer(&TransferRequest::new(a.id, b.id, 50))
            .await
            .is_err(),
        "insufficient stock"
    );
    let mut uow = store.begin().await.expect("begin");
    let in_uow = uow
        .transfer(&TransferRequest::new(b.id, a.id, 1))
        .await
        .expect("transfer in a unit of work");
    uow.commit().await.expect("commit");

    let events = outbox(&store).await;
    let moves = &events[before..];
    assert_eq!(
        subjects_of(moves),
        [subjects::STOCK_MOVED, subjects::STOCK_MOVED],
        "{moves:?}"
    );
    let first = json(&moves[0]);
    assert_eq!(moves[0].aggregate, a.id.to_string());
    assert_eq!(
        first,
        serde_json::json!({
            "id": moved.id.to_string(),
            "source_id": a.id.to_string(),
            "target_id": b.id.to_string(),
            "quantity": 3,
            "idempotency_key": "move-1",
            "created_at": first["created_at"].clone(),
        })
    );
    assert_eq!(json(&moves[1])["id"], Json::from(in_uow.id.to_string()));
    assert_eq!(moves[1].aggregate, b.id.to_string());
}

/// `update_many` writes one `product.updated` per row it changed: not for a deleted row among
/// the ids.
pub async fn update_many_writes_an_event_per_changed_row(store: Arc<dyn Store>) {
    let rows = create_products(&store, "many", 3, 1).await;
    soft_delete_product(&store, rows[2].id).await;
    let before = outbox(&store).await.len();
    let mut uow = store.begin().await.expect("begin");
    let changed = uow
        .products()
        .update_many(
            &ids(&rows),
            &ProductPatch::new()
                .with_description(Some("same for all"))
                .unwrap(),
        )
        .await
        .expect("update_many");
    uow.commit().await.expect("commit");
    assert_eq!(changed, 2);
    let events = outbox(&store).await;
    let updates = &events[before..];
    assert_eq!(
        subjects_of(updates),
        [subjects::PRODUCT_UPDATED, subjects::PRODUCT_UPDATED]
    );
    let mut about: Vec<String> = updates.iter().map(|e| e.aggregate.clone()).collect();
    about.sort();
    let mut expected = vec![rows[0].id.to_string(), rows[1].id.to_string()];
    expected.sort();
    assert_eq!(about, expected);
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_own_events_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) own_events:
        product_writes_write_their_events,
        an_applied_transfer_writes_one_stock_moved_event,
        update_many_writes_an_event_per_changed_row,
    } };
}

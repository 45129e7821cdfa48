//! The battery: every rule a declared entity gets, as one public async fn per rule, generic over
//! the entity, on a fresh store that holds it. Inputs come from the declaration alone
//! ([`super::samples`]), so the battery needs nothing from the entity but its
//! `Entity` implementation.

use std::fmt::Debug;
use std::sync::Arc;

use stockroom_core::schema::{rules, Condition, FieldType, RecordWriter, Schema, Value};
use stockroom_core::{
    time, Constraint, Entity, EntityKind, Error, FilterInput, Limit, NewInput, Page, PatchInput,
    Result, Store,
};
use uuid::Uuid;

use super::samples;
use crate::support::{expect_conflict, in_read, in_uow, tick};

// ---- Helpers -------------------------------------------------------------------------------

/// The input of sample row `n` (its required references made live; all of them when `fill`).
async fn sample<E: Entity>(store: &Arc<dyn Store>, n: u32, fill: bool) -> Vec<Value> {
    samples::values(store, E::schema(), n, fill).await
}

/// `values` as the entity's input.
fn input<E: Entity>(values: Vec<Value>) -> Result<E::New> {
    E::New::from_values(values)
}

/// Creates a row from `values` in a unit of work of its own; commits on success.
async fn create<E: Entity>(store: &Arc<dyn Store>, values: Vec<Value>) -> Result<E> {
    let new = input::<E>(values)?;
    in_uow!(store, |uow| uow.repository::<E>().create(new).await)
}

/// Creates sample row `n`.
async fn create_sample<E: Entity>(store: &Arc<dyn Store>, n: u32) -> E {
    let values = sample::<E>(store, n, false).await;
    create(store, values)
        .await
        .unwrap_or_else(|e| panic!("create sample {} {n}: {e}", E::schema().name))
}

async fn get<E: Entity>(store: &Arc<dyn Store>, id: E::Id) -> Option<E> {
    in_read!(store, |r| r.reader::<E>().get(id).await).expect("get")
}

async fn count<E: Entity>(store: &Arc<dyn Store>) -> u64 {
    in_read!(store, |r| r
        .reader::<E>()
        .count(&E::Filter::default())
        .await)
    .expect("count")
}

async fn trash<E: Entity>(store: &Arc<dyn Store>) -> Vec<E> {
    let all = Page::new(1_000, 0).unwrap();
    in_read!(store, |r| r.reader::<E>().list_deleted(all).await).expect("trash")
}

async fn soft_delete<E: Entity>(store: &Arc<dyn Store>, id: E::Id) -> bool {
    in_uow!(store, |uow| uow.repository::<E>().soft_delete(id).await).expect("soft delete")
}

/// Soft-deletes (`Some(at)`) or deletes for good (`None`) the row `id` of `schema` through the
/// generic port: for the rows a reference names, whatever entity they are.
async fn delete_target(store: &Arc<dyn Store>, schema: &'static Schema, id: Uuid, soft: bool) {
    let mut uow = store.begin().await.expect("begin");
    let records: &mut dyn RecordWriter = uow.repositories();
    if soft {
        assert!(records
            .soft_delete(schema, id, time::now())
            .await
            .expect("soft delete"));
    } else {
        records.hard_delete(schema, id).await.expect("hard delete");
    }
    uow.commit().await.expect("commit");
}

/// The stored form of `values` (names trimmed, emails lower-cased).
fn stored<E: Entity>(values: Vec<Value>) -> Vec<Value> {
    rules::check_all(E::schema(), values).expect("valid sample values")
}

/// The first unique rule whose every field holds the same value in `a` and `b`.
fn first_shared_rule<E: Entity>(a: &[Value], b: &[Value]) -> Option<Constraint> {
    let schema = E::schema();
    schema
        .unique
        .iter()
        .find(|rule| {
            rule.fields.iter().all(|f| {
                let i = schema.index_of(f);
                !a[i].is_null() && a[i] == b[i]
            })
        })
        .map(|rule| Constraint::of_rule(schema, rule))
}

/// A row holding sample `n`'s values, the values of another sample row given the holder's
/// values for `rule`'s fields, and the conflict writing them names: the first rule whose values
/// both rows share.
async fn holder_and_taker<E: Entity>(
    store: &Arc<dyn Store>,
    rule: &stockroom_core::schema::Unique,
    n: u32,
) -> (E, Vec<Value>, Constraint) {
    let schema = E::schema();
    let holder: E = create(store, sample::<E>(store, n, true).await)
        .await
        .unwrap();
    let held = holder.to_record().values;
    let mut values = sample::<E>(store, n + 1, true).await;
    for field in rule.fields {
        let at = schema.index_of(field);
        values[at] = held[at].clone();
    }
    let expected = first_shared_rule::<E>(&held, &stored::<E>(values.clone()))
        .expect("the rule's values are shared");
    (holder, values, expected)
}

fn kind<E: Entity>() -> EntityKind {
    E::schema().kind()
}

#[track_caller]
fn expect_not_found_of<T: Debug>(result: Result<T>, entity: EntityKind, id: Uuid) {
    match result {
        Err(Error::NotFound { entity: e, id: i }) if e == entity && i.as_uuid() == id => {}
        other => panic!("expected NotFound {{ {entity}, {id} }}, got {other:?}"),
    }
}

/// A patch that changes a field of the entity neither unique nor a reference, if its patch can
/// (else the empty patch, which still bumps the version).
fn some_patch<E: Entity>(n: u32) -> E::Patch {
    let schema = E::schema();
    let unique: Vec<&str> = schema
        .unique
        .iter()
        .flat_map(|u| u.fields.iter().copied())
        .collect();
    for (i, field) in schema.fields.iter().enumerate() {
        if unique.contains(&field.name) || matches!(field.ty, FieldType::Ref(_)) {
            continue;
        }
        if let Ok(patch) = E::Patch::from_sets(vec![(i, samples::value(field, n))]) {
            return patch;
        }
    }
    E::Patch::from_sets(Vec::new()).expect("the empty patch")
}

// ---- The battery ---------------------------------------------------------------------------

/// A created row is returned as stored (its values in stored form, version 1, live, created and
/// updated at once) and read back identical by `get`, `get_many`, `list`, `count`, `exists`.
pub async fn created_rows_read_back_as_stored<E: Entity>(store: Arc<dyn Store>) {
    let values = sample::<E>(&store, 1, true).await;
    let expected = stored::<E>(values.clone());
    let row: E = create(&store, values).await.expect("create");
    let record = row.to_record();
    assert_eq!(*record.values, *expected, "the created row's values");
    assert_eq!(
        (
            record.version,
            record.deleted_at,
            record.created_at == record.updated_at
        ),
        (1, None, true),
        "a new row: version 1, live, created and updated at once"
    );
    assert_eq!(get::<E>(&store, row.id()).await.as_ref(), Some(&row), "get");
    let ids = [row.id(), row.id()];
    let many = in_read!(store, |r| r.reader::<E>().get_many(&ids).await).unwrap();
    assert_eq!(many, std::slice::from_ref(&row), "get_many, each row once");
    let listed = in_read!(store, |r| r
        .reader::<E>()
        .list(&E::Filter::default(), Page::new(10, 0).unwrap())
        .await)
    .unwrap();
    assert_eq!(listed, std::slice::from_ref(&row), "list");
    assert_eq!(count::<E>(&store).await, 1, "count");
    let exists = in_read!(store, |r| r
        .reader::<E>()
        .exists(&E::Filter::default())
        .await);
    assert!(exists.unwrap(), "exists");
    assert_eq!(
        E::from_record(row.to_record()).unwrap(),
        row,
        "record round trip"
    );
}

/// A value of a unique rule held by a live row is a conflict naming the rule; once that row is
/// soft-deleted, the value is free.
pub async fn unique_values_hold_among_live_rows<E: Entity>(store: Arc<dyn Store>) {
    for (i, rule) in E::schema().unique.iter().enumerate() {
        let (a, values, expected) = holder_and_taker::<E>(&store, rule, 100 + 2 * i as u32).await;
        expect_conflict(create::<E>(&store, values.clone()).await, expected);
        assert!(soft_delete::<E>(&store, a.id()).await);
        let b = create::<E>(&store, values).await;
        assert!(
            b.is_ok(),
            "{}: the value is free once its row is deleted: {b:?}",
            rule.name
        );
    }
}

/// Restoring a row whose unique value a live row took meanwhile is a conflict naming the rule,
/// and changes nothing; once that row is gone, the restore succeeds.
pub async fn restore_conflicts_when_a_unique_value_was_taken<E: Entity>(store: Arc<dyn Store>) {
    for (i, rule) in E::schema().unique.iter().enumerate() {
        let (a, values, expected) = holder_and_taker::<E>(&store, rule, 200 + 2 * i as u32).await;
        assert!(soft_delete::<E>(&store, a.id()).await);
        let b: E = create(&store, values).await.unwrap();
        let restored = in_uow!(store, |uow| uow.repository::<E>().restore(a.id()).await);
        expect_conflict(restored, expected);
        assert!(
            get::<E>(&store, a.id()).await.is_none(),
            "the failed restore changed nothing"
        );
        assert!(soft_delete::<E>(&store, b.id()).await);
        let restored = in_uow!(store, |uow| uow.repository::<E>().restore(a.id()).await);
        assert!(
            restored.unwrap(),
            "{}: restored once the value is free",
            rule.name
        );
    }
}

/// A soft-deleted row is invisible to every read but the trash; deleting it again answers false
/// and keeps the first timestamp; restore brings it back, once.
pub async fn soft_delete_hides_the_row_until_restored<E: Entity>(store: Arc<dyn Store>) {
    let a: E = create_sample(&store, 1).await;
    let b: E = create_sample(&store, 2).await;
    assert!(
        soft_delete::<E>(&store, a.id()).await,
        "the first soft delete"
    );
    assert_eq!(get::<E>(&store, a.id()).await, None, "get");
    let ids = [a.id(), b.id()];
    let many = in_read!(store, |r| r.reader::<E>().get_many(&ids).await).unwrap();
    assert_eq!(many, std::slice::from_ref(&b), "get_many");
    let keyset = in_read!(store, |r| r
        .reader::<E>()
        .list_after(&E::Filter::default(), None, Limit::new(10).unwrap())
        .await)
    .unwrap();
    assert_eq!(keyset.items, std::slice::from_ref(&b), "list_after");
    assert_eq!(count::<E>(&store).await, 1, "count");
    let trashed = trash::<E>(&store).await;
    assert_eq!(trashed.len(), 1, "the trash");
    let first = trashed[0].to_record();
    assert_eq!(
        (first.id, first.version),
        (a.id().into(), 2),
        "trashed, version bumped"
    );
    tick().await;
    assert!(
        !soft_delete::<E>(&store, a.id()).await,
        "a second soft delete answers false"
    );
    let again = trash::<E>(&store).await[0].to_record();
    assert_eq!(
        again.deleted_at, first.deleted_at,
        "the first timestamp stays"
    );
    let restore = |store: Arc<dyn Store>, id| async move {
        in_uow!(store, |uow| uow.repository::<E>().restore(id).await).unwrap()
    };
    assert!(restore(Arc::clone(&store), a.id()).await, "restore");
    let back = get::<E>(&store, a.id())
        .await
        .expect("restored")
        .to_record();
    assert_eq!(
        (back.deleted_at, back.version),
        (None, 3),
        "live again, version bumped"
    );
    assert!(
        !restore(store, a.id()).await,
        "restoring a live row answers false"
    );
}

/// Every write treats a soft-deleted row as absent: `update` is not found, `update_many` skips it.
pub async fn writes_treat_a_deleted_row_as_absent<E: Entity>(store: Arc<dyn Store>) {
    let a: E = create_sample(&store, 1).await;
    assert!(soft_delete::<E>(&store, a.id()).await);
    let patch = some_patch::<E>(7);
    let updated = in_uow!(store, |uow| uow
        .repository::<E>()
        .update(a.id(), &patch, None)
        .await);
    expect_not_found_of(updated, kind::<E>(), a.id().into());
    let ids = [a.id()];
    let changed = in_uow!(store, |uow| uow
        .repository::<E>()
        .update_many(&ids, &patch)
        .await);
    assert_eq!(changed.unwrap(), 0, "update_many skips a deleted row");
}

/// Purge deletes for good the rows soft-deleted before its bound, and no other.
pub async fn purge_deletes_only_rows_deleted_before_the_bound<E: Entity>(store: Arc<dyn Store>) {
    let a: E = create_sample(&store, 1).await;
    let b: E = create_sample(&store, 2).await;
    let c: E = create_sample(&store, 3).await;
    assert!(soft_delete::<E>(&store, a.id()).await);
    tick().await;
    let bound = time::now();
    tick().await;
    assert!(soft_delete::<E>(&store, b.id()).await);
    let purged = in_uow!(store, |uow| uow
        .repository::<E>()
        .purge_deleted_before(bound)
        .await);
    assert_eq!(purged.unwrap(), 1, "only the row deleted before the bound");
    let trashed: Vec<E::Id> = trash::<E>(&store).await.iter().map(Entity::id).collect();
    assert_eq!(trashed, [b.id()], "the later one stays in the trash");
    assert!(get::<E>(&store, c.id()).await.is_some(), "a live row stays");
}

/// A delete for good removes the row, live or trashed; a second one is not found.
pub async fn hard_delete_removes_the_row_for_good<E: Entity>(store: Arc<dyn Store>) {
    let a: E = create_sample(&store, 1).await;
    let b: E = create_sample(&store, 2).await;
    assert!(soft_delete::<E>(&store, b.id()).await);
    for id in [a.id(), b.id()] {
        let deleted = in_uow!(store, |uow| uow.repository::<E>().hard_delete(id).await);
        deleted.expect("hard delete");
        let again = in_uow!(store, |uow| uow.repository::<E>().hard_delete(id).await);
        expect_not_found_of(again, kind::<E>(), id.into());
    }
    assert_eq!(
        (count::<E>(&store).await, trash::<E>(&store).await.len()),
        (0, 0)
    );
}

/// An update naming a version that is no longer the row's is refused with both versions, and
/// changes nothing; naming the current one, it applies and bumps the version.
pub async fn stale_versions_are_refused<E: Entity>(store: Arc<dyn Store>) {
    let a: E = create_sample(&store, 1).await;
    let patch = some_patch::<E>(9);
    let stale = in_uow!(store, |uow| uow
        .repository::<E>()
        .update(a.id(), &patch, Some(2))
        .await);
    match stale {
        Err(Error::StaleVersion {
            entity,
            id,
            expected: 2,
            actual: 1,
        }) if entity == kind::<E>() && id.as_uuid() == a.id().into() => {}
        other => panic!("expected StaleVersion {{ expected 2, actual 1 }}, got {other:?}"),
    }
    let updated = in_uow!(store, |uow| uow
        .repository::<E>()
        .update(a.id(), &patch, Some(1))
        .await);
    assert_eq!(updated.expect("update at the current version").version(), 2);
    let again = in_uow!(store, |uow| uow
        .repository::<E>()
        .update(a.id(), &patch, Some(1))
        .await);
    assert!(
        matches!(
            again,
            Err(Error::StaleVersion {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "{again:?}"
    );
}

/// Keyset pages walk rows created together (one `created_at`) each once, in `(created_at, id)`
/// order; offset pages cover them in the same order.
pub async fn pages_walk_every_row_once_in_order<E: Entity>(store: Arc<dyn Store>) {
    let mut news = Vec::new();
    for n in 300..305 {
        news.push(input::<E>(sample::<E>(&store, n, false).await).unwrap());
    }
    let rows = in_uow!(store, |uow| uow.repository::<E>().create_many(news).await).unwrap();
    let mut expected: Vec<E::Id> = rows.iter().map(Entity::id).collect();
    expected.sort_by_key(|id| (rows[0].created_at(), Into::<Uuid>::into(*id)));
    let (mut walked, mut after) = (Vec::new(), None);
    loop {
        let page = in_read!(store, |r| r
            .reader::<E>()
            .list_after(&E::Filter::default(), after, Limit::new(2).unwrap())
            .await)
        .unwrap();
        walked.extend(page.items.iter().map(Entity::id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, expected, "keyset pages");
    let mut offset = Vec::new();
    for start in [0, 2, 4] {
        let page = in_read!(store, |r| r
            .reader::<E>()
            .list(&E::Filter::default(), Page::new(2, start).unwrap())
            .await)
        .unwrap();
        offset.extend(page.iter().map(Entity::id));
    }
    assert_eq!(offset, expected, "offset pages");
}

/// A row referring to a row that does not exist, or is soft-deleted, is refused as not found,
/// naming the referred entity and id, and nothing is written.
pub async fn references_must_be_live<E: Entity>(store: Arc<dyn Store>) {
    let schema = E::schema();
    for (field, declared, reference) in schema.references() {
        let target = reference.target();
        let missing = Uuid::now_v7();
        let mut values = sample::<E>(&store, 400, true).await;
        values[field] = Value::Uuid(missing);
        expect_not_found_of(
            create::<E>(&store, values.clone()).await,
            target.kind(),
            missing,
        );
        let deleted = samples::target(&store, target).await;
        delete_target(&store, target, deleted, true).await;
        values[field] = Value::Uuid(deleted);
        expect_not_found_of(create::<E>(&store, values).await, target.kind(), deleted);
        assert_eq!(
            count::<E>(&store).await,
            0,
            "{}: nothing written",
            declared.name
        );
    }
}

/// Deleting a referred row for good does to the rows that refer to it what the reference
/// declares: forgets the reference (`SetNull`) or deletes them too (`Cascade`).
pub async fn deleting_a_referred_row_applies_its_on_delete<E: Entity>(store: Arc<dyn Store>) {
    use stockroom_core::schema::OnDelete;
    let schema = E::schema();
    for (i, (field, declared, reference)) in schema.references().enumerate() {
        let target = reference.target();
        let referred = samples::target(&store, target).await;
        let mut values = sample::<E>(&store, 500 + i as u32, true).await;
        values[field] = Value::Uuid(referred);
        let row: E = create(&store, values).await.expect("create");
        delete_target(&store, target, referred, false).await;
        let after = get::<E>(&store, row.id()).await;
        match reference.on_delete {
            OnDelete::SetNull => {
                let after = after.expect("the referring row stays").to_record();
                assert_eq!(
                    after.values[field],
                    Value::Null,
                    "{}: forgotten",
                    declared.name
                );
            }
            OnDelete::Cascade => {
                assert_eq!(
                    after, None,
                    "{}: deleted with the referred row",
                    declared.name
                );
                let trashed = trash::<E>(&store).await;
                assert!(
                    !trashed.iter().any(|r| r.id() == row.id()),
                    "not in the trash either"
                );
            }
        }
    }
}

/// A filter naming a referred row matches the rows referring to it while that row is live, and
/// nothing once it is soft-deleted, as if it did not exist.
pub async fn a_filter_naming_a_deleted_row_matches_nothing<E: Entity>(store: Arc<dyn Store>) {
    let schema = E::schema();
    for (i, (field, declared, reference)) in schema.references().enumerate() {
        let target = reference.target();
        let referred = samples::target(&store, target).await;
        let condition = Condition::Eq {
            field,
            value: Value::Uuid(referred),
        };
        let Ok(filter) = E::Filter::from_conditions(vec![condition]) else {
            continue; // The entity's filter does not filter by this reference.
        };
        let mut values = sample::<E>(&store, 600 + i as u32, true).await;
        values[field] = Value::Uuid(referred);
        let row: E = create(&store, values).await.expect("create");
        let read = |store: Arc<dyn Store>, filter: E::Filter| async move {
            in_read!(store, |r| {
                let mut reader = r.reader::<E>();
                let all = Page::new(100, 0).unwrap();
                (
                    reader.list(&filter, all).await.unwrap().len(),
                    reader.count(&filter).await.unwrap(),
                    reader.exists(&filter).await.unwrap(),
                )
            })
        };
        let live = read(Arc::clone(&store), filter.clone()).await;
        assert_eq!(
            live,
            (1, 1, true),
            "{}: the live referred row's rows",
            declared.name
        );
        delete_target(&store, target, referred, true).await;
        let gone = read(Arc::clone(&store), filter).await;
        assert_eq!(
            gone,
            (0, 0, false),
            "{}: a deleted referred row matches nothing",
            declared.name
        );
        assert!(
            get::<E>(&store, row.id()).await.is_some(),
            "the row itself is still live"
        );
    }
}

/// A value that breaks its field's rule is refused as a validation error naming the field, on
/// create and on update, and nothing is written.
pub async fn bad_values_are_refused_naming_the_field<E: Entity>(store: Arc<dyn Store>) {
    let schema = E::schema();
    let kept: E = create_sample(&store, 1).await;
    for (i, field) in schema.fields.iter().enumerate() {
        let Some((bad, what)) = samples::bad_value(field) else {
            continue;
        };
        let mut values = sample::<E>(&store, 700 + i as u32, false).await;
        values[i] = bad.clone();
        match create::<E>(&store, values).await {
            Err(Error::Validation { field: named, .. }) if named == field.name => {}
            other => panic!(
                "{} with {what}: expected Validation on it, got {other:?}",
                field.name
            ),
        }
        let patched = E::Patch::from_sets(vec![(i, bad)]);
        let updated = match patched {
            Ok(patch) => in_uow!(store, |uow| uow
                .repository::<E>()
                .update(kept.id(), &patch, None)
                .await),
            Err(e) => Err(e),
        };
        match updated {
            Err(Error::Validation { field: named, .. }) if named == field.name => {}
            other => panic!(
                "{} set to {what} by a patch: expected Validation on it, got {other:?}",
                field.name
            ),
        }
    }
    assert_eq!(count::<E>(&store).await, 1, "nothing written");
    assert_eq!(
        get::<E>(&store, kept.id()).await.as_ref(),
        Some(&kept),
        "nothing changed"
    );
}

/// When a write breaks a reference and a unique rule at once, the reference is reported, as on
/// every backend: references first, then unique values in declaration order.
pub async fn a_missing_reference_is_reported_before_a_taken_value<E: Entity>(
    store: Arc<dyn Store>,
) {
    let schema = E::schema();
    let Some(rule) = schema.unique.first() else {
        return; // No unique rule: nothing to order.
    };
    let Some((field, _, reference)) = schema
        .references()
        .find(|(_, f, _)| !rule.fields.contains(&f.name))
    else {
        return; // Every reference is part of the rule: both cannot break at once.
    };
    let a: E = create(&store, sample::<E>(&store, 800, true).await)
        .await
        .unwrap();
    let held = a.to_record().values;
    let mut values = sample::<E>(&store, 801, true).await;
    for name in rule.fields {
        let at = schema.index_of(name);
        values[at] = held[at].clone();
    }
    let missing = Uuid::now_v7();
    values[field] = Value::Uuid(missing);
    expect_not_found_of(
        create::<E>(&store, values).await,
        reference.target().kind(),
        missing,
    );
}

/// `update_many` changes only live rows and counts them; giving two rows one unique value is a
/// conflict, and changes neither.
pub async fn update_many_is_all_or_nothing<E: Entity>(store: Arc<dyn Store>) {
    let a: E = create_sample(&store, 1).await;
    let b: E = create_sample(&store, 2).await;
    let c: E = create_sample(&store, 3).await;
    assert!(soft_delete::<E>(&store, c.id()).await);
    let patch = some_patch::<E>(11);
    let ids = [a.id(), c.id()];
    let changed = in_uow!(store, |uow| uow
        .repository::<E>()
        .update_many(&ids, &patch)
        .await);
    assert_eq!(changed.unwrap(), 1, "only the live row changes");
    let schema = E::schema();
    let single = schema.unique.iter().find_map(|rule| match rule.fields {
        [name] => {
            let at = schema.index_of(name);
            let patch = E::Patch::from_sets(vec![(at, samples::value(&schema.fields[at], 12))]);
            patch.ok().map(|patch| (rule, patch))
        }
        _ => None,
    });
    let Some((rule, patch)) = single else {
        return; // No single-field rule a patch can set.
    };
    let before = (
        get::<E>(&store, a.id()).await,
        get::<E>(&store, b.id()).await,
    );
    let ids = [a.id(), b.id()];
    let both = in_uow!(store, |uow| uow
        .repository::<E>()
        .update_many(&ids, &patch)
        .await);
    expect_conflict(both, Constraint::of_rule(schema, rule));
    let after = (
        get::<E>(&store, a.id()).await,
        get::<E>(&store, b.id()).await,
    );
    assert_eq!(after, before, "neither row changed");
}

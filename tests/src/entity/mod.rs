//! The battery every declared entity passes, on every backend: Stockroom's own entities (the
//! suite runs it for each) and an application's (its own tests run it, with
//! [`entity_battery!`](crate::entity_battery)).
//!
//! Each rule is one public async fn of [`cases`], generic over the entity, with a doc comment
//! saying what it proves. The inputs come from the entity's declaration alone
//! ([`samples`]): valid values for every field, live rows for the references, values that
//! break each rule. An application runs the whole battery on its entity in its own tests:
//!
//! ```text
//! async fn fixture() -> stockroom_conformance::Fixture {
//!     let config = StoreConfig::new("memory://").with_entity::<Warehouse>();
//!     stockroom_conformance::Fixture::new(Arc::new(MemoryStore::with_config(config).unwrap()))
//! }
//! stockroom_conformance::entity_battery!(crate::fixture, warehouse: Warehouse);
//! ```
//!
//! which expands to one `#[tokio::test]` per rule, named `warehouse::<rule>`.

pub mod cases;
pub mod samples;

/// Expands, for each `module: Entity`, to `mod module { #[tokio::test] async fn <rule>() … }`
/// with one test per rule of the battery ([`cases`]), each on a fresh fixture from `$fixture`
/// (as for [`suite!`](crate::suite): an `async fn() -> Fixture` or `-> Option<Fixture>`), which
/// must hold the entity and every entity it refers to.
#[macro_export]
macro_rules! entity_battery {
    ($fixture:path, $($module:ident: $entity:ty),+ $(,)?) => {
        $(
            pub mod $module {
                #[allow(unused_imports)]
                use super::*;
                $crate::__stockroom_entity_cases! { $fixture, $entity }
            }
        )+
    };
}

/// The battery's rules, in the order they run: the battery runs exactly these, and the
/// conformance crate's own tests fail if a public rule of [`cases`] is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_entity_cases {
    ($($request:tt)*) => { $crate::__stockroom_entity_cases_of! { ($($request)*)
        created_rows_read_back_as_stored,
        unique_values_hold_among_live_rows,
        restore_conflicts_when_a_unique_value_was_taken,
        soft_delete_hides_the_row_until_restored,
        writes_treat_a_deleted_row_as_absent,
        purge_deletes_only_rows_deleted_before_the_bound,
        hard_delete_removes_the_row_for_good,
        stale_versions_are_refused,
        pages_walk_every_row_once_in_order,
        references_must_be_live,
        deleting_a_referred_row_applies_its_on_delete,
        a_filter_naming_a_deleted_row_matches_nothing,
        bad_values_are_refused_naming_the_field,
        a_missing_reference_is_reported_before_a_taken_value,
        update_many_is_all_or_nothing,
    } };
}

/// Expands the battery's list: `(@names)` to the rules' names, `($fixture, $entity)` to one
/// `#[tokio::test]` per rule.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_entity_cases_of {
    ((@names) $($case:ident),+ $(,)?) => {
        &[$(stringify!($case)),+]
    };
    (($fixture:path, $entity:ty) $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::run($fixture, $crate::entity::cases::$case::<$entity>).await;
            }
        )+
    };
}

/// The battery's rules, by name, in the order they run.
pub const RULES: &[&str] = crate::__stockroom_entity_cases! { @names };

//! The macro that turns the suite into named tests inside an adapter's crate.
//!
//! Each capability's module keeps its own list of cases next to them (its
//! `__stockroom_<module>_cases!` macro, at the bottom of the file); this file only names the
//! modules. A public case missing from its module's list fails the conformance crate's own
//! tests (`every_public_case_is_listed`), so no case is written and silently never run.

/// Expands to `mod conformance { mod <capability> { #[tokio::test] async fn <case>() … } }`
/// for every case of the suite, each on a fresh fixture from `$fixture` (an absolute path to an
/// `async fn() -> Fixture`, such as `crate::fixture`, or to an `async fn() -> Option<Fixture>`
/// for a backend that may be unavailable, whose `None` skips the case; see [`run`](crate::run)).
/// `own_events = $own` names a second fixture, of a store configured with
/// [`StoreConfig::with_own_events(true)`](stockroom_core::StoreConfig::with_own_events): the
/// cases of Stockroom's own events (`conformance::own_events::<case>`) run on it. It is
/// required, so no adapter can leave those cases out.
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features among its
/// dev-dependencies.
#[macro_export]
macro_rules! suite {
    ($fixture:path, own_events = $own:path $(,)?) => {
        #[allow(clippy::module_inception)]
        mod conformance {
            $crate::__stockroom_own_events_cases! { $own }
            $crate::__stockroom_batch_cases! { $fixture }
            $crate::__stockroom_cancellation_cases! { $fixture }
            $crate::__stockroom_concurrency_cases! { $fixture }
            $crate::__stockroom_crud_cases! { $fixture }
            $crate::__stockroom_deadlines_cases! { $fixture }
            $crate::__stockroom_details_cases! { $fixture }
            $crate::__stockroom_idempotency_cases! { $fixture }
            $crate::__stockroom_keyset_cases! { $fixture }
            $crate::__stockroom_outbox_cases! { $fixture }
            $crate::__stockroom_pagination_cases! { $fixture }
            $crate::__stockroom_relations_cases! { $fixture }
            $crate::__stockroom_savepoints_cases! { $fixture }
            $crate::__stockroom_search_cases! { $fixture }
            $crate::__stockroom_soft_delete_cases! { $fixture }
            $crate::__stockroom_stock_cases! { $fixture }
            $crate::__stockroom_store_cases! { $fixture }
            $crate::__stockroom_transactions_cases! { $fixture }
            $crate::__stockroom_transfer_cases! { $fixture }
            $crate::__stockroom_trash_and_purge_cases! { $fixture }
            $crate::__stockroom_uniqueness_cases! { $fixture }
            $crate::__stockroom_validation_cases! { $fixture }
            $crate::__stockroom_versioning_cases! { $fixture }

            /// The entity battery on each of Stockroom's own entities.
            pub mod entities {
                $crate::entity_battery!(
                    $fixture,
                    product: $crate::__core::Product,
                    category: $crate::__core::Category,
                    user: $crate::__core::User,
                    review: $crate::__core::Review,
                );
            }
        }
    };
}

/// The cases [`suite!`] runs on its `own_events` fixture, as `(module, &[case])`.
pub const OWN_EVENTS_CASES: (&str, &[&str]) = crate::__stockroom_own_events_cases! { @names };

/// The entities whose battery [`suite!`] runs, by name: each of Stockroom's own (the crate's
/// tests check that none is missing).
pub const BUILT_IN_BATTERIES: &[&str] = &["product", "category", "user", "review"];

/// Every case of the suite by module, as `(module, &[case])`, in the order they run.
pub const CASES: &[(&str, &[&str])] = &[
    crate::__stockroom_batch_cases! { @names },
    crate::__stockroom_cancellation_cases! { @names },
    crate::__stockroom_concurrency_cases! { @names },
    crate::__stockroom_crud_cases! { @names },
    crate::__stockroom_deadlines_cases! { @names },
    crate::__stockroom_details_cases! { @names },
    crate::__stockroom_idempotency_cases! { @names },
    crate::__stockroom_keyset_cases! { @names },
    crate::__stockroom_outbox_cases! { @names },
    crate::__stockroom_pagination_cases! { @names },
    crate::__stockroom_relations_cases! { @names },
    crate::__stockroom_savepoints_cases! { @names },
    crate::__stockroom_search_cases! { @names },
    crate::__stockroom_soft_delete_cases! { @names },
    crate::__stockroom_stock_cases! { @names },
    crate::__stockroom_store_cases! { @names },
    crate::__stockroom_transactions_cases! { @names },
    crate::__stockroom_transfer_cases! { @names },
    crate::__stockroom_trash_and_purge_cases! { @names },
    crate::__stockroom_uniqueness_cases! { @names },
    crate::__stockroom_validation_cases! { @names },
    crate::__stockroom_versioning_cases! { @names },
];

/// Expands one module's case list: `(@names)` to `(module, &[case…])`, `($fixture)` to one
/// `#[tokio::test]` per case.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_cases_of {
    ((@names) $module:ident: $($case:ident),+ $(,)?) => {
        (stringify!($module), &[$(stringify!($case)),+])
    };
    (($fixture:path) $module:ident: $($case:ident),+ $(,)?) => {
        pub mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    $crate::run($fixture, $crate::cases::$module::$case).await;
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::CASES;

    /// The public async fns of each case module's source, in the order written.
    fn public_cases(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .map(|rest| rest.split(['(', '<']).next().unwrap_or(rest).trim())
            .collect()
    }

    fn source_of(module: &str) -> &'static str {
        match module {
            "batch" => include_str!("cases/batch.rs"),
            "cancellation" => include_str!("cases/cancellation.rs"),
            "concurrency" => include_str!("cases/concurrency.rs"),
            "crud" => include_str!("cases/crud.rs"),
            "deadlines" => include_str!("cases/deadlines.rs"),
            "details" => include_str!("cases/details.rs"),
            "idempotency" => include_str!("cases/idempotency.rs"),
            "keyset" => include_str!("cases/keyset.rs"),
            "outbox" => include_str!("cases/outbox.rs"),
            "own_events" => include_str!("cases/own_events.rs"),
            "pagination" => include_str!("cases/pagination.rs"),
            "relations" => include_str!("cases/relations.rs"),
            "savepoints" => include_str!("cases/savepoints.rs"),
            "search" => include_str!("cases/search.rs"),
            "soft_delete" => include_str!("cases/soft_delete.rs"),
            "stock" => include_str!("cases/stock.rs"),
            "store" => include_str!("cases/store.rs"),
            "transactions" => include_str!("cases/transactions.rs"),
            "transfer" => include_str!("cases/transfer.rs"),
            "trash_and_purge" => include_str!("cases/trash_and_purge.rs"),
            "uniqueness" => include_str!("cases/uniqueness.rs"),
            "validation" => include_str!("cases/validation.rs"),
            "versioning" => include_str!("cases/versioning.rs"),
            other => panic!("no source for case module {other}: add it here and to the suite"),
        }
    }

    #[test]
    fn every_public_case_is_listed() {
        for (module, listed) in CASES.iter().chain([&super::OWN_EVENTS_CASES]) {
            let written = public_cases(source_of(module));
            let unlisted: Vec<_> = written.iter().filter(|c| !listed.contains(c)).collect();
            assert!(
                unlisted.is_empty(),
                "cases of `{module}` written but missing from its list (they would never run): {unlisted:?}"
            );
            assert_eq!(listed.len(), written.len(), "`{module}` lists a case twice");
        }
    }

    /// Every public rule of the entity battery is in its list, once.
    #[test]
    fn every_battery_rule_is_listed() {
        let written = public_cases(include_str!("entity/cases.rs"));
        assert_eq!(
            written,
            crate::entity::RULES,
            "the battery's rules written (left) vs. listed (right)"
        );
    }

    /// The suite runs the battery on every entity Stockroom declares, and its list of them is
    /// the one the macro expands: a new entity of Stockroom's own fails here until it is added.
    #[test]
    fn every_built_in_entity_has_its_battery() {
        let catalog = stockroom_core::schema::Catalog::new(&[]).unwrap();
        let declared: Vec<&str> = catalog.entries().iter().map(|e| e.schema.name).collect();
        assert_eq!(super::BUILT_IN_BATTERIES, declared.as_slice());
        let suite = include_str!("suite.rs");
        for name in declared {
            assert!(
                suite.contains(&format!("{name}: $crate::__core::")),
                "suite! runs no battery for {name}"
            );
        }
    }

    #[test]
    fn every_case_module_is_in_the_suite() {
        let modules: Vec<_> = include_str!("cases/mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub mod "))
            .map(|rest| rest.trim_end_matches(';'))
            .collect();
        let mut in_suite: Vec<_> = CASES
            .iter()
            .chain([&super::OWN_EVENTS_CASES])
            .map(|(module, _)| *module)
            .collect();
        in_suite.sort_unstable();
        assert_eq!(
            in_suite, modules,
            "case modules in the suite vs. in cases/mod.rs"
        );
    }
}

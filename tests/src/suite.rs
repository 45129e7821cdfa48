//! The macro that turns the suite into named tests inside an adapter's crate.
//!
//! Every case is listed once, in `__stockroom_cases!`; add a new case there (module and function
//! name) and every adapter runs it.

/// Expands to `mod conformance { mod <capability> { #[tokio::test] async fn <case>() … } }`
/// for every case of the suite, each on a fresh fixture from `$fixture` (an absolute path to an
/// `async fn() -> Fixture`, such as `crate::fixture`, or to an `async fn() -> Option<Fixture>`
/// for a backend that may be unavailable, whose `None` skips the case; see [`run`](crate::run)).
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features among its
/// dev-dependencies.
#[macro_export]
macro_rules! suite {
    ($fixture:path) => {
        $crate::__stockroom_cases!($fixture);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_case_tests {
    ($fixture:path; $module:ident: $($case:ident),+ $(,)?) => {
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

#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_cases {
    ($fixture:path) => {
        #[allow(clippy::module_inception)]
        mod conformance {
            $crate::__stockroom_case_tests!($fixture; batch:
                create_many_keeps_input_order_and_one_created_at,
                create_many_with_a_duplicate_inside_writes_nothing,
                create_many_conflicting_with_a_stored_row_writes_nothing,
                create_many_with_an_unknown_reference_writes_nothing,
                update_many_changes_live_rows_and_counts_them,
                update_many_is_all_or_nothing,
                empty_batches_are_empty_results,
            );
            $crate::__stockroom_case_tests!($fixture; concurrency:
                bank_invariant_holds_under_concurrent_transfers,
                readers_never_see_a_half_applied_transfer,
                idempotent_transfer_fired_at_once_applies_once,
                concurrent_increments_lose_no_update,
                opposite_transfers_do_not_deadlock,
                concurrent_creates_of_one_sku_let_exactly_one_win,
            );
            $crate::__stockroom_case_tests!($fixture; crud:
                create_then_get_returns_the_same_row,
                created_row_starts_at_version_one,
                update_applies_the_patch_and_bumps_the_version,
                unknown_id_is_absent_everywhere,
                get_many_returns_each_live_row_once_in_order,
                create_with_unknown_reference_is_not_found,
                update_with_unknown_category_is_not_found,
                hard_delete_removes_the_row_for_good,
                count_and_exists_follow_the_filter,
                categories_and_users_round_trip,
                review_needs_a_live_product_and_author,
            );
            $crate::__stockroom_case_tests!($fixture; details:
                details_hold_the_product_latest_reviews_and_stats,
                details_of_an_unknown_or_deleted_product_are_none,
            );
            $crate::__stockroom_case_tests!($fixture; idempotency:
                same_key_returns_the_same_movement_and_moves_once,
                same_key_with_other_parameters_is_a_conflict,
                different_keys_apply_separately,
                failed_keyed_transfer_does_not_use_up_the_key,
                a_replayed_request_says_so,
            );
            $crate::__stockroom_case_tests!($fixture; keyset:
                keyset_pages_walk_tied_rows_once_in_order,
                last_page_has_no_cursor,
                cursor_round_trips_through_text,
                keyset_honours_filter_and_deletes_between_pages,
                cursor_after_the_end_gives_an_empty_page,
            );
            $crate::__stockroom_case_tests!($fixture; pagination:
                offset_pages_cover_tied_rows_once_in_order,
                list_orders_by_created_at_then_id,
                page_past_the_end_is_empty,
                filtered_pages_hold_only_matching_rows,
                users_page_in_the_same_order,
            );
            $crate::__stockroom_case_tests!($fixture; relations:
                with_relations_returns_the_live_category_and_creator,
                deleted_category_shows_as_none,
                deleted_creator_shows_as_none,
                deleted_category_cannot_be_referenced,
                deleted_author_or_product_cannot_be_reviewed,
                reviews_of_a_product_come_newest_first,
                rating_stats_summarise_live_reviews,
                products_of_a_category_are_listed_in_order,
            );
            $crate::__stockroom_case_tests!($fixture; savepoints:
                rollback_to_a_savepoint_undoes_only_its_part,
                released_savepoint_keeps_its_writes,
                inner_rollback_keeps_the_outer_writes,
                outer_rollback_undoes_the_inner_writes,
                closed_savepoint_is_rejected,
                savepoint_of_another_unit_of_work_is_rejected,
                savepoints_can_be_reused_after_rollback,
            );
            $crate::__stockroom_case_tests!($fixture; search:
                search_is_case_insensitive,
                search_folds_non_ascii_letters,
                wildcards_in_the_query_are_literal,
                search_matches_name_sku_and_description,
                search_total_is_correct_while_paging,
                search_combines_with_status_and_category,
                search_follows_updates,
                search_matches_case_folded_and_canonically_equivalent_text,
            );
            $crate::__stockroom_case_tests!($fixture; soft_delete:
                soft_delete_marks_the_row_and_bumps_the_version,
                second_soft_delete_returns_false_and_keeps_the_first_timestamp,
                deleted_row_is_invisible_to_get_and_get_many,
                deleted_row_is_invisible_to_list_and_list_after,
                deleted_row_is_invisible_to_count_and_exists,
                deleted_row_is_invisible_to_search,
                deleted_row_is_invisible_to_by_slug_and_by_sku,
                deleted_row_is_invisible_to_the_category_listing,
                deleted_row_is_invisible_to_with_relations,
                reviews_of_a_deleted_product_are_hidden,
                deleted_row_cannot_be_written,
                deleted_category_and_user_are_invisible,
                deleted_review_is_hidden,
                a_deleted_category_filters_like_an_absent_one,
                a_review_filter_on_a_deleted_product_or_author_matches_nothing,
            );
            $crate::__stockroom_case_tests!($fixture; stock:
                adjust_stock_adds_and_removes,
                adjust_stock_to_exactly_zero_is_allowed,
                adjust_stock_below_zero_is_insufficient_and_changes_nothing,
                adjust_stock_of_an_unknown_product_is_not_found,
                lock_returns_live_rows_sorted_by_id,
                adjust_stock_rolls_back_with_the_unit_of_work,
                adjust_stock_past_the_maximum_is_refused_and_changes_nothing,
            );
            $crate::__stockroom_case_tests!($fixture; store:
                open_store_is_healthy,
                closed_store_is_unavailable,
                read_sessions_run_concurrently,
                begin_gives_up_after_the_acquire_timeout_as_unavailable,
            );
            $crate::__stockroom_case_tests!($fixture; transactions:
                unit_of_work_sees_its_own_writes,
                others_do_not_see_uncommitted_writes,
                rollback_leaves_no_trace,
                dropped_unit_of_work_rolls_back,
                sequential_units_of_work_build_on_each_other,
                unit_of_work_survives_a_failed_statement_in_a_savepoint,
            );
            $crate::__stockroom_case_tests!($fixture; transfer:
                transfer_moves_stock_and_writes_one_ledger_row,
                transfer_of_the_whole_stock_leaves_zero,
                bad_quantity_is_a_validation_error_and_changes_nothing,
                same_source_and_target_is_rejected_and_changes_nothing,
                unknown_product_is_not_found_and_changes_nothing,
                deleted_product_is_not_found_and_changes_nothing,
                insufficient_stock_names_the_amounts_and_changes_nothing,
                malformed_idempotency_key_is_rejected_and_changes_nothing,
                successive_transfers_add_up,
                transfer_past_the_target_maximum_is_refused_and_changes_nothing,
                broken_rules_are_reported_in_a_fixed_order,
            );
            $crate::__stockroom_case_tests!($fixture; trash_and_purge:
                restore_brings_the_row_back,
                restore_of_a_live_row_is_false_and_of_an_unknown_one_not_found,
                trash_lists_only_deleted_rows_in_order,
                purge_removes_only_rows_deleted_before_the_time,
                purge_of_a_product_cascades_to_its_reviews,
                purge_of_a_category_clears_it_from_products,
                hard_delete_of_a_user_cascades_and_clears,
                ledger_survives_the_purge_of_its_products,
            );
            $crate::__stockroom_case_tests!($fixture; uniqueness:
                duplicate_sku_or_slug_is_a_conflict,
                deleted_products_sku_and_slug_can_be_reused,
                restore_when_the_sku_is_taken_is_a_conflict,
                restore_when_the_slug_is_taken_is_a_conflict,
                update_to_a_taken_sku_is_a_conflict,
                category_slug_is_unique_among_live_rows,
                user_email_is_unique_ignoring_case,
                one_live_review_per_author_and_product,
                restore_of_a_category_whose_slug_is_taken_is_a_conflict,
                restore_of_a_user_whose_email_is_taken_is_a_conflict,
                restore_of_a_review_when_the_author_reviewed_again_is_a_conflict,
                update_of_a_category_to_a_taken_slug_is_a_conflict,
                several_broken_rules_are_reported_in_a_fixed_order,
            );
            $crate::__stockroom_case_tests!($fixture; validation:
                product_name_rules,
                slug_rules,
                sku_rules,
                text_rules,
                stock_rules,
                stock_delta_rules,
                email_and_display_name_rules,
                rating_rules,
                category_name_rules,
                page_rules,
                cursor_rules,
                search_query_rules,
                status_and_id_parsing_rules,
                names_and_texts_need_a_visible_character,
                bidirectional_overrides_are_refused,
                cursor_outside_the_stored_years_is_refused,
                purge_bound_outside_the_stored_years_is_refused,
            );
            $crate::__stockroom_case_tests!($fixture; versioning:
                update_with_the_current_version_succeeds,
                update_with_a_stale_version_is_rejected,
                update_with_a_future_version_is_rejected,
                every_write_bumps_the_version,
                the_second_of_two_writers_is_stale,
                empty_patch_still_bumps_the_version,
            );
        }
    };
}

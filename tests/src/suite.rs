//! The macro that turns the suite into named tests inside an adapter's crate.
//!
//! Every case is listed once, in `__stockroom_cases!`; add a new case there (module and function
//! name) and every adapter runs it.

/// Expands to `mod conformance { mod <capability> { #[tokio::test] async fn <case>() … } }`
/// for every case of the suite, each on a fresh fixture from `$fixture` (an absolute path to an
/// `async fn() -> Fixture`, such as `crate::fixture`). The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features among its dev-dependencies.
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
            $crate::__stockroom_case_tests!($fixture; crud:
                create_then_get_returns_the_same_row,
            );
        }
    };
}

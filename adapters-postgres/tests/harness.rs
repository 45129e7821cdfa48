//! The test harness on a machine without PostgreSQL: its tests skip with one line on stderr,
//! unless CI (or `STOCKROOM_TEST_REQUIRE_POSTGRES=1`) makes them fail.
//!
//! The harness settles its server once per process from the environment, so each check runs the
//! `without_postgres` tests of this binary in a child process, pointed at a port nobody listens
//! on and at an empty directory of PostgreSQL binaries.

use std::process::{Command, Output};

/// Runs this binary's `without_postgres` tests in a child without PostgreSQL, with `env` set.
fn run_without_postgres(env: &[(&str, &str)]) -> Output {
    let no_binaries = std::env::temp_dir().join(format!(
        "stockroom-harness-{}",
        stockroom_postgres::testing::database_name()
    ));
    std::fs::create_dir(&no_binaries).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--ignored", "--test-threads=4", "without_postgres::"])
        .env_remove("CI")
        .env_remove("STOCKROOM_TEST_REQUIRE_POSTGRES")
        .env_remove("DATABASE_URL")
        .env(
            "STOCKROOM_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .env("STOCKROOM_TEST_PG_BIN_DIR", &no_binaries)
        .envs(env.iter().copied());
    let output = child.output().expect("run the test binary");
    std::fs::remove_dir(&no_binaries).unwrap();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn without_postgres_the_tests_skip_and_say_so_once() {
    for env in [&[][..], &[("CI", "false")], &[("CI", "0")]] {
        let output = run_without_postgres(env);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{env:?}\n{stdout}\n{stderr}");
        assert!(stdout.contains("3 passed"), "{stdout}");
        let notices: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("PostgreSQL tests skipped"))
            .collect();
        assert_eq!(notices.len(), 1, "one notice per process:\n{stderr}");
        let notice = notices[0];
        assert!(notice.contains("127.0.0.1:1"), "{notice}");
        assert!(notice.contains("STOCKROOM_TEST_PG_BIN_DIR"), "{notice}");
        assert!(notice.contains("STOCKROOM_TEST_DATABASE_URL"), "{notice}");
        assert!(!stdout.contains("panicked"), "{stdout}");
    }
}

#[test]
fn without_postgres_ci_fails_instead_of_skipping() {
    for env in [
        [("CI", "true")],
        [("CI", "1")],
        [("STOCKROOM_TEST_REQUIRE_POSTGRES", "1")],
    ] {
        let output = run_without_postgres(&env);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(!output.status.success(), "{env:?}\n{stdout}\n{stderr}");
        assert!(stdout.contains("3 failed"), "{stdout}");
        assert!(
            stdout.contains("PostgreSQL is required") && stdout.contains("127.0.0.1:1"),
            "{stdout}"
        );
        assert!(!stderr.contains("PostgreSQL tests skipped"), "{stderr}");
    }
}

/// The tests the checks above run in a child: ordinary PostgreSQL tests (they pass, or skip, on
/// any machine), several at once so that the notice is seen to be printed once per process.
mod without_postgres {
    use stockroom_core::Store;
    use stockroom_postgres::testing::TestDatabase;

    /// What a test does with its database, when there is one.
    async fn use_a_database() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        db.drop_after(async move { store.close().await }).await;
    }

    #[tokio::test]
    #[ignore = "run in a child process by the tests above"]
    async fn one() {
        use_a_database().await;
    }

    #[tokio::test]
    #[ignore = "run in a child process by the tests above"]
    async fn two() {
        use_a_database().await;
    }

    #[tokio::test]
    #[ignore = "run in a child process by the tests above"]
    async fn several_at_once() {
        futures_util::future::join_all((0..4).map(|_| use_a_database())).await;
    }
}

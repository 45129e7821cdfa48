//! The conformance suite, each case on a fresh SQLite file in the temp directory.

use std::sync::Arc;
use std::time::Duration;

use stockroom_sqlite::SqliteStore;

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use support::TempDb;

async fn fixture() -> stockroom_conformance::Fixture {
    let db = TempDb::new("stockroom-conformance");
    // An acquire timeout of a few seconds, so the case that waits for the writer gives up soon.
    let config = db.config().with_acquire_timeout(Duration::from_secs(5));
    let store = SqliteStore::connect(&config).await.expect("connect");
    // The teardown drops the file, which removes it with its WAL and shared-memory files.
    stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(async move { drop(db) })
}

stockroom_conformance::suite!(crate::fixture);

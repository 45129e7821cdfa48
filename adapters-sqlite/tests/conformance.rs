//! The conformance suite, each case on a fresh SQLite file in the temp directory.

use std::sync::Arc;

use stockroom_sqlite::SqliteStore;

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use support::TempDb;

async fn fixture() -> stockroom_conformance::Fixture {
    let db = TempDb::new("stockroom-conformance");
    let store = SqliteStore::connect(&db.config()).await.expect("connect");
    // The teardown drops the file, which removes it with its WAL and shared-memory files.
    stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(async move { drop(db) })
}

stockroom_conformance::suite!(crate::fixture);

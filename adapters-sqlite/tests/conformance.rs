//! The conformance suite, each case on a fresh SQLite file in the temp directory.

use std::sync::Arc;
use std::time::Duration;

use stockroom_sqlite::SqliteStore;

// Not every helper of the shared support module is used here.
#[allow(dead_code)]
mod support;

use support::TempDb;

async fn fixture() -> stockroom_conformance::Fixture {
    fixture_of(TempDb::new("stockroom-conformance"), |config| config).await
}

/// A store that writes Stockroom's own events, for the cases of those events.
async fn own_events_fixture() -> stockroom_conformance::Fixture {
    let db = TempDb::new("stockroom-conformance-own-events");
    fixture_of(db, |config| config.with_own_events(true)).await
}

async fn fixture_of(
    db: TempDb,
    configure: impl FnOnce(stockroom_core::StoreConfig) -> stockroom_core::StoreConfig,
) -> stockroom_conformance::Fixture {
    // An acquire timeout of a few seconds, so the case that waits for the writer gives up soon.
    let config = configure(db.config().with_acquire_timeout(Duration::from_secs(5)));
    let store = SqliteStore::connect(&config).await.expect("connect");
    // The teardown drops the file, which removes it with its WAL and shared-memory files.
    stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(async move { drop(db) })
}

stockroom_conformance::suite!(crate::fixture, own_events = crate::own_events_fixture);

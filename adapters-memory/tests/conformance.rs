//! The conformance suite, run against the in-memory adapter: every case on a fresh store.

use std::time::Duration;

use stockroom_core::StoreConfig;
use stockroom_memory::MemoryStore;

async fn fixture() -> stockroom_conformance::Fixture {
    // A short acquire timeout, so the case that waits for the writer slot gives up quickly.
    let config = StoreConfig::new("memory://").with_acquire_timeout(Duration::from_secs(5));
    stockroom_conformance::Fixture::new(std::sync::Arc::new(
        MemoryStore::with_config(config).expect("a memory store"),
    ))
}

async fn own_events_fixture() -> stockroom_conformance::Fixture {
    let config = StoreConfig::new("memory://").with_own_events(true);
    stockroom_conformance::Fixture::new(std::sync::Arc::new(
        MemoryStore::with_config(config).expect("a memory store"),
    ))
}

stockroom_conformance::suite!(crate::fixture, own_events = crate::own_events_fixture);

//! The conformance suite, run against the in-memory adapter: every case on a fresh store.

async fn fixture() -> stockroom_conformance::Fixture {
    stockroom_conformance::Fixture::new(std::sync::Arc::new(stockroom_memory::MemoryStore::new()))
}

stockroom_conformance::suite!(crate::fixture);

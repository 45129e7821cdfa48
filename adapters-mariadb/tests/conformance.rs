//! The conformance suite against a real MariaDB, one fresh database per case (each case is
//! skipped when there is no MariaDB, see `support`).

mod support;

async fn fixture() -> Option<stockroom_conformance::Fixture> {
    support::fixture().await
}

/// A store that writes Stockroom's own events, for the cases of those events.
async fn own_events_fixture() -> Option<stockroom_conformance::Fixture> {
    support::fixture_with(|config| config.with_own_events(true)).await
}

stockroom_conformance::suite!(crate::fixture, own_events = crate::own_events_fixture);

//! The conformance suite against a real PostgreSQL, one fresh database per case (each case is
//! skipped when there is no PostgreSQL, see `support`).

mod support;

async fn fixture() -> Option<stockroom_conformance::Fixture> {
    support::fixture().await
}

stockroom_conformance::suite!(crate::fixture);

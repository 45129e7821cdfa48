//! The conformance suite against a real PostgreSQL, one fresh database per case.

mod support;

async fn fixture() -> stockroom_conformance::Fixture {
    support::fixture().await
}

stockroom_conformance::suite!(crate::fixture);

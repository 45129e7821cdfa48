//! The conformance suite on one node of a throwaway three-node Galera cluster
//! (`stockroom_mariadb::testing::galera`), one fresh database per case: every write a case
//! makes is certified and replicated to the two other nodes before its commit returns, and
//! every migration's DDL runs on all three in total order. Skipped when Galera is not installed,
//! unless `CI` or `STOCKROOM_TEST_REQUIRE_GALERA=1` is set.

use std::sync::Arc;
use std::time::Duration;

use stockroom_core::StoreConfig;
use stockroom_mariadb::testing::galera;
use stockroom_mariadb::MariaDbStore;

/// The node the cases run on: the one that bootstrapped the cluster.
const NODE: usize = 0;

async fn fixture_with(
    configure: impl FnOnce(StoreConfig) -> StoreConfig,
) -> Option<stockroom_conformance::Fixture> {
    let cluster = galera::shared().await?;
    let db = cluster.database().await;
    // As the single server's fixture: five connections, and an acquire timeout of a few
    // seconds, so that the case that holds every connection gives up soon.
    let config = configure(
        db.config(NODE)
            .with_max_connections(5)
            .with_acquire_timeout(Duration::from_secs(5)),
    );
    let store = MariaDbStore::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("connect to {} on node {NODE}: {e}", db.name()));
    Some(stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(db.drop_now()))
}

async fn fixture() -> Option<stockroom_conformance::Fixture> {
    fixture_with(|config| config).await
}

/// A store that writes Stockroom's own events, for the cases of those events.
async fn own_events_fixture() -> Option<stockroom_conformance::Fixture> {
    fixture_with(|config| config.with_own_events(true)).await
}

stockroom_conformance::suite!(crate::fixture, own_events = crate::own_events_fixture);

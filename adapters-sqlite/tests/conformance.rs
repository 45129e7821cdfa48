//! The conformance suite, each case on a fresh SQLite file in the temp directory.

use std::path::PathBuf;
use std::sync::Arc;

use stockroom_core::StoreConfig;
use stockroom_sqlite::SqliteStore;

async fn fixture() -> stockroom_conformance::Fixture {
    let path = std::env::temp_dir().join(format!(
        "stockroom-conformance-{}-{}.db",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let config = StoreConfig::new(format!("sqlite://{}", path.display()));
    let store = SqliteStore::connect(&config).await.expect("connect");
    stockroom_conformance::Fixture::new(Arc::new(store)).with_teardown(remove(path))
}

/// Removes the database file and its WAL and shared-memory files.
async fn remove(path: PathBuf) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

stockroom_conformance::suite!(crate::fixture);

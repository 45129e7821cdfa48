//! Setup shared by the integration tests and the benchmark (the bench includes this file by
//! path, so it stays free of test-only dependencies).

use std::path::{Path, PathBuf};

use stockroom_core::{NewProduct, ProductId, Store, StoreConfig};
use stockroom_sqlite::SqliteStore;

/// A fresh database file, removed (with its WAL files) on drop.
pub struct TempDb(PathBuf);

impl TempDb {
    /// A new, not yet created file in the temporary directory, named `{prefix}-{pid}-{uuid}.db`.
    pub fn new(prefix: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "{prefix}-{}-{}.db",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn config(&self) -> StoreConfig {
        StoreConfig::new(format!("sqlite://{}", self.0.display()))
    }

    /// Connects the adapter to the file (which applies any pending migration), then closes it.
    pub async fn connect_and_close(&self) {
        SqliteStore::connect(&self.config())
            .await
            .unwrap()
            .close()
            .await;
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.0.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Creates `new` in one committed unit of work; the ids, in input order.
pub async fn create_products(store: &dyn Store, new: Vec<NewProduct>) -> Vec<ProductId> {
    let mut uow = store.begin().await.unwrap();
    let ids = uow
        .products()
        .create_many(new)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    uow.commit().await.unwrap();
    ids
}

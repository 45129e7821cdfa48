//! Create, get and update of single rows.

use std::sync::Arc;

use stockroom_core::{NewProduct, Store};

/// A created product reads back identical, field for field, timestamps included (microsecond
/// precision on every backend).
pub async fn create_then_get_returns_the_same_row(store: Arc<dyn Store>) {
    let mut uow = store.begin().await.expect("begin");
    let created = uow
        .products()
        .create(NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE").unwrap().with_stock(3).unwrap())
        .await
        .expect("create");
    uow.commit().await.expect("commit");
    let mut read = store.read().await.expect("read");
    let fetched = read.products().get(created.id).await.expect("get");
    assert_eq!(fetched.as_ref(), Some(&created), "fetched {fetched:?} != created {created:?}");
}

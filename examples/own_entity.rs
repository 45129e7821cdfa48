//! An application's own entity next to Stockroom's: a `Warehouse`, declared in this file, stored
//! and checked with the same semantics as products, in one unit of work with a transfer.
//!
//! ```text
//! cargo run --example own_entity                                        # a SQLite file
//! DATABASE_URL=memory:// cargo run --example own_entity                 # in memory
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres \
//!     cargo run --example own_entity --features postgres                # PostgreSQL
//! DATABASE_URL=mariadb://root@127.0.0.1/shop \
//!     cargo run --example own_entity --features mariadb                 # MariaDB
//! ```
//!
//! It prints one line per step and exits non-zero on any failure.

use stockroom::{
    Constraint, Entity, Error, NewProduct, ProductId, StoreConfig, TextEnum, Timestamp,
    TransferRequest, UnitOfWorkExt,
};

stockroom::entity_id!(
    /// The id of a [`Warehouse`].
    pub WarehouseId
);

/// Whether a warehouse takes goods: stored as the text `open` or `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TextEnum)]
pub enum WarehouseStatus {
    /// It takes goods.
    Open,
    /// It does not.
    Closed,
}

/// The application's entity: declared once, here. Stockroom creates its table on SQLite and
/// PostgreSQL when the store connects, and keeps its rules on every backend.
#[derive(Debug, Clone, PartialEq, Entity)]
#[entity(table = "warehouses")]
pub struct Warehouse {
    pub id: WarehouseId,
    #[entity(name)]
    pub name: String,
    #[entity(slug, unique)]
    pub slug: String,
    #[entity(unique, max_len = 16)]
    pub code: String,
    #[entity(references = stockroom::Product, on_delete = set_null)]
    pub product_id: Option<ProductId>,
    pub status: WarehouseStatus,
    #[entity(min = 0)]
    pub capacity: i64,
    pub inspected_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub version: i64,
}

#[tokio::main]
async fn main() -> stockroom::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| fresh_sqlite_url());
    // Register the entity: the store checks its declaration, and makes or checks its table.
    let config = StoreConfig::new(url).with_entity::<Warehouse>();
    let redacted = config.redacted_url();
    let store = stockroom::connect_with(config).await?;
    println!(
        "connected to {} ({redacted}), holding warehouses",
        store.backend()
    );

    // A product, a warehouse that names it, and a transfer: one unit of work.
    let mut uow = store.begin().await?;
    let mugs = uow
        .products()
        .create(NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE")?.with_stock(30)?)
        .await?;
    let spare = uow
        .products()
        .create(NewProduct::new(
            "Blue mug (spare)",
            "blue-mug-spare",
            "MUG-BLUE-2",
        )?)
        .await?;
    let north = uow
        .repository::<Warehouse>()
        .create(NewWarehouse {
            name: "North".into(),
            slug: "north".into(),
            code: "N-1".into(),
            product_id: Some(mugs.id),
            status: WarehouseStatus::Open,
            capacity: 500,
            inspected_at: None,
        })
        .await?;
    let moved = uow
        .transfer(&TransferRequest::new(mugs.id, spare.id, 12))
        .await?;
    uow.commit().await?;
    println!(
        "created warehouse {:?} ({}) for {:?}, and moved {} mugs in the same unit of work",
        north.name, north.code, mugs.name, moved.quantity
    );

    // A unique value among live rows: a second warehouse with code N-1 is a conflict that names
    // the application's rule, and nothing is written.
    let mut uow = store.begin().await?;
    let taken = uow
        .repository::<Warehouse>()
        .create(NewWarehouse {
            name: "Other".into(),
            slug: "other".into(),
            code: "N-1".into(),
            product_id: None,
            status: WarehouseStatus::Closed,
            capacity: 10,
            inspected_at: None,
        })
        .await;
    match taken {
        Err(Error::Conflict { constraint })
            if constraint == Constraint::of::<Warehouse>("warehouse_code").unwrap() =>
        {
            println!(
                "a second code N-1 is refused: conflict on {} (field {}) of {}",
                constraint,
                constraint.field(),
                constraint.entity()
            );
        }
        other => return Err(unexpected("a conflict on warehouse_code", other)),
    }
    drop(uow);

    // Bad input is a validation error naming the field, before any backend sees it.
    let mut uow = store.begin().await?;
    let patch = WarehousePatch {
        capacity: Some(-1),
        ..WarehousePatch::default()
    };
    match uow
        .repository::<Warehouse>()
        .update(north.id, &patch, Some(north.version))
        .await
    {
        Err(Error::Validation {
            field: "capacity",
            rule,
        }) => {
            println!("a negative capacity is refused: capacity {rule}")
        }
        other => return Err(unexpected("a validation error on capacity", other)),
    }
    drop(uow);

    // Soft delete, and a filter on the reference: the warehouse of the mugs, until it goes.
    let mut read = store.read().await?;
    let of_mugs = WarehouseFilter {
        product_id: Some(mugs.id),
        ..WarehouseFilter::default()
    };
    let found = read.reader::<Warehouse>().count(&of_mugs).await?;
    println!("warehouses for the mugs: {found}");
    drop(read);
    let mut uow = store.begin().await?;
    uow.repository::<Warehouse>().soft_delete(north.id).await?;
    uow.commit().await?;
    let mut read = store.read().await?;
    let hidden = read.reader::<Warehouse>().get(north.id).await?;
    let trash = read
        .reader::<Warehouse>()
        .list_deleted(stockroom::Page::new(10, 0)?)
        .await?;
    if hidden.is_some() || trash.len() != 1 {
        return Err(unexpected("the warehouse in the trash only", Ok(())));
    }
    println!(
        "soft-deleted {:?}: gone from reads, in the trash",
        north.name
    );

    store.close().await;
    println!("done");
    Ok(())
}

/// The error of a step that did not answer as it should.
fn unexpected<T: std::fmt::Debug>(wanted: &str, got: stockroom::Result<T>) -> Error {
    Error::backend_message(format!("expected {wanted}, got {got:?}"))
}

/// A fresh SQLite file in the temp directory, a new one per run.
fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join("stockroom-own-entity.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}", path.display())
}

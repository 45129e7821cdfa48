//! A short tour of Stockroom: categories and products, a search, a burst of concurrent
//! transfers, a soft delete and a restore, and the trash.
//!
//! ```text
//! cargo run --example quickstart                          # a SQLite file in the temp directory
//! DATABASE_URL=memory:// cargo run --example quickstart   # or any other backend URL
//! ```

use std::sync::Arc;

use stockroom::{
    NewCategory, NewProduct, Page, ProductFilter, ProductStatus, StoreConfig, StoreExt,
    TransferRequest,
};

#[tokio::main]
async fn main() -> stockroom::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| fresh_sqlite_url());
    let config = StoreConfig::new(url);
    let redacted = config.redacted_url();
    let store = stockroom::connect_with(config).await?;
    println!("connected to {} ({redacted})", store.backend());

    // One unit of work: a category and its products, committed together.
    let mut uow = store.begin().await?;
    let kitchen = uow
        .categories()
        .create(NewCategory::new("Kitchen", "kitchen")?)
        .await?;
    let new_products = [
        ("Blue mug", "blue-mug", "MUG-BLUE", 40),
        ("Red mug", "red-mug", "MUG-RED", 40),
        ("Teapot", "teapot", "POT-1", 20),
        ("Crème brûlée torch", "torch", "TORCH-1", 5),
    ]
    .into_iter()
    .map(|(name, slug, sku, stock)| {
        Ok(NewProduct::new(name, slug, sku)?
            .with_stock(stock)?
            .with_status(ProductStatus::Active)
            .with_category_id(kitchen.id))
    })
    .collect::<stockroom::Result<Vec<_>>>()?;
    let products = uow.products().create_many(new_products).await?;
    uow.commit().await?;
    println!(
        "created category {:?} with {} products",
        kitchen.name,
        products.len()
    );

    // Reads need no transaction. Search is case-insensitive, Unicode included.
    let mut read = store.read().await?;
    let mugs = read
        .products()
        .search(
            &ProductFilter::default().with_search("MUG")?,
            Page::new(10, 0)?,
        )
        .await?;
    println!(
        "search \"MUG\": {} of {} match",
        mugs.items.len(),
        mugs.total
    );
    let brulee = read
        .products()
        .search(
            &ProductFilter::default().with_search("BRÛLÉE")?,
            Page::new(10, 0)?,
        )
        .await?;
    println!(
        "search \"BRÛLÉE\": found {:?}",
        brulee.items.first().map(|p| &p.name)
    );
    drop(read);

    // A burst of concurrent transfers between the two mugs; the total never changes.
    let (blue, red) = (products[0].id, products[1].id);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            let (source, target) = if i % 2 == 0 { (blue, red) } else { (red, blue) };
            tokio::spawn(async move {
                store
                    .transfer(&TransferRequest::new(source, target, 3))
                    .await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if task.await.expect("transfer task").is_ok() {
            applied += 1;
        }
    }
    let mut read = store.read().await?;
    let mugs = read.products().get_many(&[blue, red]).await?;
    let total: i64 = mugs.iter().map(|p| p.stock).sum();
    println!("{applied} concurrent transfers applied; mugs hold {total} units in all (was 80)");
    println!("ledger rows: {}", read.movements().count().await?);
    drop(read);

    // Soft delete hides a product everywhere; restore brings it back; the trash shows it meanwhile.
    let teapot = products[2].id;
    let mut uow = store.begin().await?;
    uow.products().soft_delete(teapot).await?;
    uow.commit().await?;
    let mut read = store.read().await?;
    let hidden = read.products().get(teapot).await?.is_none();
    let trash = read.products().list_deleted(Page::new(10, 0)?).await?;
    println!(
        "teapot deleted: hidden from reads = {hidden}, trash holds {:?}",
        trash.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    drop(read);
    let mut uow = store.begin().await?;
    uow.products().restore(teapot).await?;
    uow.commit().await?;
    let mut read = store.read().await?;
    println!(
        "teapot restored: {:?}",
        read.products().get(teapot).await?.map(|p| p.name)
    );
    drop(read);

    store.close().await;
    Ok(())
}

/// A SQLite file of its own in the temp directory, new on every run.
fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join("stockroom-quickstart.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}", path.display())
}

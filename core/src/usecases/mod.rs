//! Use cases written once against the ports, so every backend behaves the same.

mod details;
mod transfer;

pub use details::product_details;
pub use transfer::{transfer_stock, RetryPolicy, TransferRequest};

use async_trait::async_trait;

use crate::entities::{ProductDetails, StockMovement};
use crate::error::Result;
use crate::ids::ProductId;
use crate::ports::Store;
use crate::query::Limit;

/// The use cases as methods of every [`Store`], `dyn Store` included.
#[async_trait]
pub trait StoreExt: Store {
    /// [`transfer_stock`] with the default [`RetryPolicy`].
    async fn transfer(&self, request: &TransferRequest) -> Result<StockMovement> {
        transfer_stock(self.as_dyn(), request, &RetryPolicy::default()).await
    }

    /// [`product_details`]: the product, its latest reviews and rating statistics, read
    /// concurrently on three connections.
    async fn product_details(
        &self,
        id: ProductId,
        reviews: Limit,
    ) -> Result<Option<ProductDetails>> {
        product_details(self.as_dyn(), id, reviews).await
    }

    #[doc(hidden)]
    fn as_dyn(&self) -> &dyn Store;
}

impl<S: Store + Sized> StoreExt for S {
    fn as_dyn(&self) -> &dyn Store {
        self
    }
}

impl StoreExt for dyn Store {
    fn as_dyn(&self) -> &dyn Store {
        self
    }
}

#[cfg(all(test, feature = "mocks"))]
mod tests;

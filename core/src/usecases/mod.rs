//! Use cases written once against the ports, so every backend behaves the same.

pub(crate) mod deadline;
mod details;
mod retry;
mod transfer;

pub use details::product_details;
pub use retry::{run_in_unit_of_work, RetryPolicy, WorkFuture};
pub use transfer::{transfer_in, transfer_stock, TransferRequest, Transferred, UnitOfWorkExt};

use async_trait::async_trait;

use crate::entities::{ProductDetails, StockMovement};
use crate::error::Result;
use crate::ids::ProductId;
use crate::ports::{Store, UnitOfWork};
use crate::query::Limit;

/// The use cases as methods of every [`Store`]: concrete stores, `dyn Store` (behind `&`,
/// `Box` or `Arc`) and the stores of the facade's `connect`.
#[async_trait]
pub trait StoreExt: Store {
    /// [`transfer_stock`] with the default [`RetryPolicy`]: the ledger row of the transfer (the
    /// earlier one, for a replayed idempotency key).
    async fn transfer(&self, request: &TransferRequest) -> Result<StockMovement> {
        let done = transfer_stock(self.as_dyn(), request, &RetryPolicy::default()).await?;
        Ok(done.movement)
    }

    /// [`transfer_stock`] with `policy`, telling a replayed request from a new one.
    async fn transfer_with(
        &self,
        request: &TransferRequest,
        policy: &RetryPolicy,
    ) -> Result<Transferred> {
        transfer_stock(self.as_dyn(), request, policy).await
    }

    /// [`run_in_unit_of_work`]: runs `work` in a unit of work and commits it, running it again
    /// in a new one after a transient failure, as `policy` allows.
    ///
    /// ```
    /// # async fn demo(store: std::sync::Arc<dyn stockroom_core::Store>, from: stockroom_core::ProductId) -> stockroom_core::Result<()> {
    /// use stockroom_core::{NewProduct, RetryPolicy, StoreExt, TransferRequest, UnitOfWorkExt};
    ///
    /// // Create a product and stock it from another one, both or neither, retried as a whole.
    /// let product = store
    ///     .run(&RetryPolicy::default(), |uow| {
    ///         Box::pin(async move {
    ///             let new = NewProduct::new("Tea cup", "tea-cup", "CUP-TEA")?;
    ///             let product = uow.products().create(new).await?;
    ///             uow.transfer(&TransferRequest::new(from, product.id, 5)).await?;
    ///             Ok(product)
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    async fn run<'a, T, F>(&self, policy: &RetryPolicy, work: F) -> Result<T>
    where
        T: Send + 'a,
        F: for<'u> FnMut(&'u mut (dyn UnitOfWork + 'a)) -> WorkFuture<'u, T> + Send + 'a,
    {
        run_in_unit_of_work(self.as_dyn(), policy, work).await
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

impl StoreExt for dyn Store + '_ {
    fn as_dyn(&self) -> &dyn Store {
        self
    }
}

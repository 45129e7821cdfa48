use futures_util::future::try_join3;
use tracing::Instrument;

use crate::entities::ProductDetails;
use crate::error::Result;
use crate::ids::ProductId;
use crate::ports::Store;
use crate::query::{Limit, Page};

/// A product page's data: the live product, its `reviews` newest reviews and its rating
/// statistics. The three reads run at once on three read sessions (three connections on a SQL
/// backend), so the page costs one round trip of latency, not three.
pub async fn product_details(
    store: &dyn Store,
    id: ProductId,
    reviews: Limit,
) -> Result<Option<ProductDetails>> {
    let span = tracing::debug_span!("stockroom.product_details", product = %id);
    async move {
        let (mut a, mut b, mut c) = try_join3(store.read(), store.read(), store.read()).await?;
        let (product, reviews, stats) = try_join3(
            a.products().get(id),
            b.reviews().for_product(id, Page::first(reviews)),
            c.reviews().stats(id),
        )
        .await?;
        Ok(product.map(|product| ProductDetails {
            product,
            reviews,
            stats,
        }))
    }
    .instrument(span)
    .await
}

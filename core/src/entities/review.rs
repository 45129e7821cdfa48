use crate::entities::{entity_meta, entity_ports, touch, Entity, OnDelete};
use crate::error::{Constraint, EntityKind, Result};
use crate::ids::{EntityId, ProductId, ReviewId, UserId};
use crate::time::Timestamp;
use crate::validate::{Rating, Text};

/// A user's review of a product.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Review {
    /// The review's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: ReviewId,
    /// The product reviewed. Deleting the product for good deletes its reviews.
    pub product_id: ProductId,
    /// The user who wrote the review; one live review per author and product
    /// ([`Constraint::ReviewAuthor`]). Deleting the user for good deletes their reviews.
    pub author_id: UserId,
    /// The rating, `1..=5`.
    pub rating: u8,
    /// The review's text, if any (see [`Text`](crate::Text)).
    pub body: Option<String>,
    /// When the row was created (UTC, microsecond precision).
    pub created_at: Timestamp,
    /// When the row last changed: an update, a soft delete or a restore.
    pub updated_at: Timestamp,
    /// When the row was soft-deleted; `None` for a live row. Reads see only live rows, except
    /// the trash listing.
    pub deleted_at: Option<Timestamp>,
    /// The row's version for optimistic concurrency: 1 at creation, one more at every change.
    /// Pass it to `update` to fail with [`Error::StaleVersion`](crate::Error::StaleVersion) if
    /// someone changed the row since.
    pub version: i64,
}

impl Entity for Review {
    type Id = ReviewId;
    type New = NewReview;
    type Patch = ReviewPatch;
    type Filter = ReviewFilter;
    const KIND: EntityKind = EntityKind::Review;
    entity_meta!();
    entity_ports!();

    fn create(new: NewReview, now: Timestamp) -> Self {
        new.into_entity(now)
    }
    fn apply(&mut self, patch: &ReviewPatch, now: Timestamp) {
        patch.apply_to(self, now);
    }
    fn matches(&self, filter: &ReviewFilter) -> bool {
        filter.matches(self)
    }
    /// One live review per author and product.
    fn unique_values(&self) -> Vec<(Constraint, String)> {
        let key = format!("{}/{}", self.product_id, self.author_id);
        vec![(Constraint::ReviewAuthor, key)]
    }
    /// The product, then the author.
    fn references(&self) -> Vec<EntityId> {
        vec![self.product_id.into(), self.author_id.into()]
    }
    fn filter_references(filter: &ReviewFilter) -> Vec<EntityId> {
        let product = filter.product_id.map(EntityId::from);
        product
            .into_iter()
            .chain(filter.author_id.map(EntityId::from))
            .collect()
    }
    /// A review goes with its product and with its author.
    fn on_delete_of(&self, target: EntityId) -> Option<OnDelete> {
        (target == self.product_id || target == self.author_id).then_some(OnDelete::Cascade)
    }
}

/// A validated new review. Its product and author must be live when it is created.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    product_id: ProductId,
    author_id: UserId,
    rating: Rating,
    body: Option<Text>,
}

impl NewReview {
    /// A review of `product_id` by `author_id`, without a body. Fails with
    /// [`Error::Validation`](crate::Error::Validation) on `rating`
    /// ([`Rule::OutOfRange`](crate::Rule::OutOfRange)) outside `1..=5`. When it is created, a
    /// product or author that is not live is [`Error::NotFound`](crate::Error::NotFound) (the
    /// product is checked first), and a second live review by the same author of the same
    /// product is [`Error::Conflict`](crate::Error::Conflict) on [`Constraint::ReviewAuthor`].
    pub fn new(product_id: ProductId, author_id: UserId, rating: i64) -> Result<Self> {
        Ok(Self {
            product_id,
            author_id,
            rating: Rating::new(rating)?,
            body: None,
        })
    }
    /// The input, with a body. Fails with [`Error::Validation`](crate::Error::Validation) on
    /// `body` when it is blank, longer than [`MAX_TEXT_LEN`](crate::MAX_TEXT_LEN) characters or
    /// holds a forbidden control character (see [`Text`](crate::Text)).
    pub fn with_body(mut self, body: &str) -> Result<Self> {
        self.body = Some(Text::parse("body", body)?);
        Ok(self)
    }
    /// The product reviewed.
    pub fn product_id(&self) -> ProductId {
        self.product_id
    }
    /// The review's author.
    pub fn author_id(&self) -> UserId {
        self.author_id
    }
    /// The rating, in `1..=5`.
    pub fn rating(&self) -> u8 {
        self.rating.get()
    }
    /// The body, if one was given.
    pub fn body(&self) -> Option<&str> {
        self.body.as_ref().map(Text::as_str)
    }

    /// The row this input creates: a fresh id, version 1, created and updated at `now`.
    pub(crate) fn into_entity(self, now: Timestamp) -> Review {
        Review {
            id: ReviewId::new(),
            product_id: self.product_id,
            author_id: self.author_id,
            rating: self.rating.get(),
            body: self.body.map(Text::into_string),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
    }
}

/// A validated change to a review.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewPatch {
    rating: Option<Rating>,
    body: Option<Option<Text>>,
}

impl ReviewPatch {
    /// A patch that changes nothing but `updated_at` and `version`.
    pub fn new() -> Self {
        Self::default()
    }
    /// The patch, changing the rating. Fails with
    /// [`Error::Validation`](crate::Error::Validation) on `rating` outside `1..=5`.
    pub fn with_rating(mut self, rating: i64) -> Result<Self> {
        self.rating = Some(Rating::new(rating)?);
        Ok(self)
    }
    /// The patch, setting (`Some`) or clearing (`None`) the body.
    pub fn with_body(mut self, body: Option<&str>) -> Result<Self> {
        self.body = Some(body.map(|b| Text::parse("body", b)).transpose()?);
        Ok(self)
    }
    /// The new rating, if the patch sets one.
    pub fn rating(&self) -> Option<u8> {
        self.rating.map(Rating::get)
    }
    /// `None`: unchanged; `Some(None)`: cleared; `Some(Some(b))`: set.
    pub fn body(&self) -> Option<Option<&str>> {
        self.body.as_ref().map(|b| b.as_ref().map(Text::as_str))
    }

    /// Applies the patch to `review` at `now` (new `updated_at`, next version).
    pub(crate) fn apply_to(&self, review: &mut Review, now: Timestamp) {
        if let Some(v) = self.rating {
            review.rating = v.get();
        }
        if let Some(v) = &self.body {
            review.body = v.as_ref().map(|t| t.as_str().to_owned());
        }
        touch(&mut review.updated_at, &mut review.version, now);
    }
}

/// Which reviews a list, count or exists covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewFilter {
    /// Only reviews of this product. A product that is not live matches no review.
    pub product_id: Option<ProductId>,
    /// Only reviews by this user. A user who is not live matches no review.
    pub author_id: Option<UserId>,
    /// Only reviews with this rating.
    pub rating: Option<Rating>,
}

impl ReviewFilter {
    /// The filter, narrowed to reviews of `product` (none if the product is not live).
    pub fn product(mut self, product: ProductId) -> Self {
        self.product_id = Some(product);
        self
    }
    /// The filter, narrowed to reviews by `author` (none if the user is not live).
    pub fn author(mut self, author: UserId) -> Self {
        self.author_id = Some(author);
        self
    }
    /// The filter, narrowed to reviews rated `rating`. Fails with
    /// [`Error::Validation`](crate::Error::Validation) on `rating` outside `1..=5`.
    pub fn rating(mut self, rating: i64) -> Result<Self> {
        self.rating = Some(Rating::new(rating)?);
        Ok(self)
    }
    /// Whether a live `review` passes the filter.
    pub fn matches(&self, review: &Review) -> bool {
        self.product_id.is_none_or(|p| review.product_id == p)
            && self.author_id.is_none_or(|a| review.author_id == a)
            && self.rating.is_none_or(|r| review.rating == r.get())
    }
}

/// Rating statistics of a product's live reviews.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RatingStats {
    /// How many live reviews the product has (0 for a product that is not live).
    pub count: u64,
    /// The mean rating, `None` without reviews.
    pub average: Option<f64>,
    /// How many reviews gave 1, 2, 3, 4 and 5.
    pub histogram: [u64; 5],
}

impl RatingStats {
    /// Statistics from the number of reviews per rating (`histogram[0]` counts ones). Every
    /// backend counts with `GROUP BY rating` and builds the rest here, so the average is computed
    /// the same way everywhere.
    pub fn from_histogram(histogram: [u64; 5]) -> Self {
        let count: u64 = histogram.iter().sum();
        let sum: u64 = histogram
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u64 + 1) * n)
            .sum();
        let average = (count > 0).then(|| sum as f64 / count as f64);
        Self {
            count,
            average,
            histogram,
        }
    }

    /// Statistics of a list of ratings.
    pub fn from_ratings(ratings: impl IntoIterator<Item = u8>) -> Self {
        let mut histogram = [0; 5];
        for r in ratings {
            if (1..=5).contains(&r) {
                histogram[usize::from(r) - 1] += 1;
            }
        }
        Self::from_histogram(histogram)
    }
}

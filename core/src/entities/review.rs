use crate::entities::{FilterInput, Inputs, NewInput, PatchInput, Product, User};
use crate::error::Result;
use crate::ids::{ProductId, ReviewId, UserId};
use crate::ports::RecordReader;
use crate::query::Page;
use crate::repo::Repo;
use crate::schema::{Condition, FieldValue, Order, Value};
use crate::time::Timestamp;
use crate::validate::{Rating, Text};
use crate::Entity;

/// A user's review of a product.
#[derive(Debug, Clone, PartialEq, Entity)]
#[entity(
    table = "reviews",
    ddl = "builtin",
    unique(
        name = "review_author",
        fields(product_id, author_id),
        index = "reviews_author_live"
    ),
    new = NewReview,
    patch = ReviewPatch,
    filter = ReviewFilter
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Review {
    /// The review's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: ReviewId,
    #[entity(references = Product)]
    /// The product reviewed. Deleting the product for good deletes its reviews.
    pub product_id: ProductId,
    #[entity(references = User)]
    /// The user who wrote the review; one live review per author and product
    /// ([`Constraint::REVIEW_AUTHOR`](crate::Constraint::REVIEW_AUTHOR)). Deleting the user for good deletes their reviews.
    pub author_id: UserId,
    #[entity(min = 1, max = 5)]
    /// The rating, `1..=5`.
    pub rating: u8,
    #[entity(text)]
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

/// The positions of the declared fields, for the inputs written by hand (checked against the
/// declaration by `entities::tests`).
pub(crate) const PRODUCT_ID: usize = 0;
pub(crate) const AUTHOR_ID: usize = 1;
pub(crate) const RATING: usize = 2;
pub(crate) const BODY: usize = 3;

impl<'a, P: RecordReader + ?Sized + 'a> Repo<'a, Review, P> {
    /// The live reviews of a live product, newest first (`created_at` then id, descending).
    pub async fn for_product(&mut self, product: ProductId, page: Page) -> Result<Vec<Review>> {
        let filter = ReviewFilter::default().with_product_id(product);
        self.list_in(&filter, page, Order::Newest).await
    }

    /// Rating statistics of the live reviews of a live product (all zero otherwise): one
    /// `GROUP BY rating` on the SQL backends.
    pub async fn stats(&mut self, product: ProductId) -> Result<RatingStats> {
        let conditions = [Condition::Eq {
            field: PRODUCT_ID,
            value: product.to_value(),
        }];
        let tally = self
            .port
            .tally(Review::schema(), &conditions, RATING)
            .await?;
        let mut histogram = [0; 5];
        for (rating, count) in tally {
            if let Some(slot) = rating
                .as_int()
                .and_then(|r| usize::try_from(r - 1).ok())
                .and_then(|i| histogram.get_mut(i))
            {
                *slot = count;
            }
        }
        Ok(RatingStats::from_histogram(histogram))
    }
}

impl NewInput for NewReview {
    fn from_values(values: Vec<Value>) -> Result<Self> {
        let schema = Review::schema();
        Inputs::check_len(schema, &values)?;
        let mut values = values.into_iter();
        let product: ProductId = Inputs::take_next(schema, PRODUCT_ID, &mut values)?;
        let author: UserId = Inputs::take_next(schema, AUTHOR_ID, &mut values)?;
        let rating: i64 = Inputs::take_next(schema, RATING, &mut values)?;
        let body: Option<String> = Inputs::take_next(schema, BODY, &mut values)?;
        let review = NewReview::new(product, author, rating)?;
        match body {
            Some(body) => review.with_body(&body),
            None => Ok(review),
        }
    }
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(vec![
            self.product_id.to_value(),
            self.author_id.to_value(),
            Value::Int(i64::from(self.rating.get())),
            self.body
                .map_or(Value::Null, |b| Value::Text(b.into_string())),
        ])
    }
}

impl PatchInput for ReviewPatch {
    fn from_sets(sets: Vec<(usize, Value)>) -> Result<Self> {
        let schema = Review::schema();
        let mut patch = ReviewPatch::new();
        for (field, value) in sets {
            patch = match field {
                RATING => patch.with_rating(Inputs::take(schema, field, value)?)?,
                BODY => {
                    let body: Option<String> = Inputs::take(schema, field, value)?;
                    patch.with_body(body.as_deref())?
                }
                _ => return Err(Inputs::unsupported(schema, field)),
            };
        }
        Ok(patch)
    }
    fn sets(&self) -> Result<Vec<(usize, Value)>> {
        let mut sets = Vec::new();
        if let Some(v) = self.rating {
            sets.push((RATING, Value::Int(i64::from(v.get()))));
        }
        if let Some(v) = &self.body {
            let body = v
                .as_ref()
                .map_or(Value::Null, |t| Value::Text(t.as_str().to_owned()));
            sets.push((BODY, body));
        }
        Ok(sets)
    }
}

impl FilterInput for ReviewFilter {
    fn from_conditions(conditions: Vec<Condition>) -> Result<Self> {
        let schema = Review::schema();
        let mut filter = ReviewFilter::default();
        for condition in conditions {
            filter = match condition {
                Condition::Eq { field, value } => match field {
                    PRODUCT_ID => filter.with_product_id(Inputs::take(schema, field, value)?),
                    AUTHOR_ID => filter.with_author_id(Inputs::take(schema, field, value)?),
                    RATING => filter.with_rating(Inputs::take(schema, field, value)?)?,
                    _ => return Err(Inputs::unsupported(schema, field)),
                },
                Condition::Search(_) => return Err(Inputs::no_search()),
            };
        }
        Ok(filter)
    }
    fn conditions(&self) -> Result<Vec<Condition>> {
        let mut conditions = Vec::new();
        if let Some(p) = self.product_id {
            conditions.push(Condition::Eq {
                field: PRODUCT_ID,
                value: p.to_value(),
            });
        }
        if let Some(a) = self.author_id {
            conditions.push(Condition::Eq {
                field: AUTHOR_ID,
                value: a.to_value(),
            });
        }
        if let Some(r) = self.rating {
            conditions.push(Condition::Eq {
                field: RATING,
                value: Value::Int(i64::from(r.get())),
            });
        }
        Ok(conditions)
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
    /// product is [`Error::Conflict`](crate::Error::Conflict) on [`Constraint::REVIEW_AUTHOR`](crate::Constraint::REVIEW_AUTHOR).
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
    pub fn with_product_id(mut self, product: ProductId) -> Self {
        self.product_id = Some(product);
        self
    }
    /// The filter, narrowed to reviews by `author` (none if the user is not live).
    pub fn with_author_id(mut self, author: UserId) -> Self {
        self.author_id = Some(author);
        self
    }
    /// The filter, narrowed to reviews rated `rating`. Fails with
    /// [`Error::Validation`](crate::Error::Validation) on `rating` outside `1..=5`.
    pub fn with_rating(mut self, rating: i64) -> Result<Self> {
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

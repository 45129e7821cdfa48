use std::fmt;
use std::str::FromStr;

use crate::entities::{
    Category, FilterInput, Inputs, NewInput, PatchInput, RatingStats, Review, User,
};
use crate::error::{EntityKind, Error, Result, Rule};
use crate::ids::{CategoryId, ProductId, UserId};
use crate::ports::{RecordReader, RecordWriter};
use crate::query::{search_document, SearchText};
use crate::repo::Repo;
use crate::schema::{Condition, FieldType, FieldValue, Incremented, TextEnum, Value};
use crate::time::Timestamp;
use crate::validate::{Name, Sku, Slug, Stock, StockDelta, Text, MAX_STOCK};
use crate::Entity;

/// Where a product is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum ProductStatus {
    /// Being prepared, not yet offered (`"draft"`); what a new product is unless told otherwise.
    #[default]
    Draft,
    /// Offered to customers (`"active"`).
    Active,
    /// No longer offered, kept for its history (`"archived"`). Unlike a soft delete, an archived
    /// product stays visible to every read.
    Archived,
}

impl ProductStatus {
    /// The lower-case name stored by the SQL adapters.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Draft => "draft",
            ProductStatus::Active => "active",
            ProductStatus::Archived => "archived",
        }
    }
}

impl fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProductStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "draft" => Ok(ProductStatus::Draft),
            "active" => Ok(ProductStatus::Active),
            "archived" => Ok(ProductStatus::Archived),
            _ => Err(Error::validation(
                "status",
                Rule::Malformed {
                    expected: "one of draft, active, archived",
                },
            )),
        }
    }
}

impl TextEnum for ProductStatus {
    const VALUES: &'static [&'static str] = &["draft", "active", "archived"];
    fn as_str(&self) -> &'static str {
        ProductStatus::as_str(*self)
    }
    fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

impl FieldValue for ProductStatus {
    const TYPE: FieldType = FieldType::Enum(<Self as TextEnum>::VALUES);
    fn to_value(&self) -> Value {
        Value::Name(ProductStatus::as_str(*self))
    }
    fn from_value(value: Value) -> Option<Self> {
        value.as_text().and_then(Self::from_name)
    }
}

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq, Entity)]
#[entity(
    table = "products",
    ddl = "builtin",
    new = NewProduct,
    patch = ProductPatch,
    filter = ProductFilter
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Product {
    /// The product's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: ProductId,
    #[entity(name, search)]
    /// The display name: 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) characters (see
    /// [`Name`](crate::Name)).
    pub name: String,
    #[entity(slug, unique)]
    /// The URL slug, unique among live products ([`Constraint::PRODUCT_SLUG`](crate::Constraint::PRODUCT_SLUG); see
    /// [`Slug`](crate::Slug)).
    pub slug: String,
    #[entity(sku, unique, search)]
    /// The stock-keeping unit, unique among live products ([`Constraint::PRODUCT_SKU`](crate::Constraint::PRODUCT_SKU); see
    /// [`Sku`](crate::Sku)).
    pub sku: String,
    #[entity(text, search)]
    /// Free text, if any (see [`Text`](crate::Text)).
    pub description: Option<String>,
    /// Where the product is in its life.
    pub status: ProductStatus,
    #[entity(min = 0, max = MAX_STOCK)]
    /// Units in stock: `0..=MAX_STOCK` ([`MAX_STOCK`](crate::MAX_STOCK) is 10¹²), never negative.
    /// Changed only by [`adjust_stock`](crate::Repo::adjust_stock) and transfers.
    pub stock: i64,
    #[entity(references = Category)]
    /// The category, if any. `None` also when the category was deleted for good; a soft-deleted
    /// category still shows here, but not in [`ProductWithRelations`].
    pub category_id: Option<CategoryId>,
    #[entity(references = User)]
    /// The user who created the product, if known (set with [`NewProduct::with_created_by`];
    /// `None` once that user is deleted for good).
    pub created_by: Option<UserId>,
    /// When the row was created (UTC, microsecond precision).
    pub created_at: Timestamp,
    /// When the row last changed: an update, a stock change, a soft delete or a restore.
    pub updated_at: Timestamp,
    /// When the row was soft-deleted; `None` for a live row. Reads see only live rows, except
    /// the trash listing.
    pub deleted_at: Option<Timestamp>,
    /// The row's version for optimistic concurrency: 1 at creation, one more at every change
    /// (stock changes included). Pass it to `update` to fail with
    /// [`Error::StaleVersion`] if someone changed the row since.
    pub version: i64,
}

impl Product {
    /// The text search matches against (see [`search_document`]).
    pub fn search_document(&self) -> String {
        search_document(&self.name, &self.sku, self.description.as_deref())
    }
}

/// The positions of the declared fields, for the inputs written by hand (checked against the
/// declaration by `entities::tests`).
pub(crate) const NAME: usize = 0;
pub(crate) const SLUG: usize = 1;
pub(crate) const SKU: usize = 2;
pub(crate) const DESCRIPTION: usize = 3;
pub(crate) const STATUS: usize = 4;
pub(crate) const STOCK: usize = 5;
pub(crate) const CATEGORY_ID: usize = 6;

impl<'a, P: RecordReader + ?Sized + 'a> Repo<'a, Product, P> {
    /// The live product with this slug.
    pub async fn by_slug(&mut self, slug: &str) -> Result<Option<Product>> {
        self.find_unique("product_slug", vec![Value::Text(slug.to_owned())])
            .await
    }

    /// The live product with this sku.
    pub async fn by_sku(&mut self, sku: &str) -> Result<Option<Product>> {
        self.find_unique("product_sku", vec![Value::Text(sku.to_owned())])
            .await
    }

    /// The live product with its live category and creator: one statement on the SQL
    /// backends.
    pub async fn with_relations(&mut self, id: ProductId) -> Result<Option<ProductWithRelations>> {
        let Some((record, related)) = self
            .port
            .get_related(Product::schema(), id.as_uuid())
            .await?
        else {
            return Ok(None);
        };
        // One entry per reference field, in declaration order: the category, then the creator.
        let mut related = related.into_iter();
        let category = related.next().flatten().map(Category::from_record);
        let creator = related.next().flatten().map(User::from_record);
        Ok(Some(ProductWithRelations {
            product: Product::from_record(record)?,
            category: category.transpose()?,
            creator: creator.transpose()?,
        }))
    }
}

impl<'a, P: RecordWriter + ?Sized + 'a> Repo<'a, Product, P> {
    /// Adds `delta` to the live product's stock in one conditional statement. Fails, changing
    /// nothing, with [`Error::InsufficientStock`] when the stock would go below zero, with
    /// [`Error::Validation`] on `stock` ([`Rule::OutOfRange`] `0..=MAX_STOCK`) when it would go
    /// above [`MAX_STOCK`], and with [`Error::NotFound`] when the product is not live.
    pub async fn adjust_stock(&mut self, id: ProductId, delta: StockDelta) -> Result<Product> {
        let product = self.adjust_stock_quietly(id, delta).await?;
        if crate::repo::announces::<Product, P>(self.port) {
            let record = product.to_record();
            let event = crate::outbox::own::record_event(
                crate::outbox::subjects::PRODUCT_UPDATED,
                Product::schema(),
                &record,
            );
            self.port.append_events(vec![event]).await?;
        }
        Ok(product)
    }

    /// [`adjust_stock`](Self::adjust_stock) without Stockroom's own event: a stock move writes
    /// its own.
    pub(crate) async fn adjust_stock_quietly(
        &mut self,
        id: ProductId,
        delta: StockDelta,
    ) -> Result<Product> {
        let delta = delta.get();
        let at = crate::time::now();
        match self
            .port
            .increment(Product::schema(), id.as_uuid(), STOCK, delta, at)
            .await?
        {
            Incremented::Done(record) => Product::from_record(record),
            Incremented::NotLive => Err(Error::not_found(EntityKind::PRODUCT, id)),
            // |delta| and the stock are both at most MAX_STOCK: the sum cannot overflow.
            Incremented::OutOfRange { current } if current + delta < 0 => {
                Err(Error::InsufficientStock {
                    product: id,
                    available: current,
                    requested: -delta,
                })
            }
            Incremented::OutOfRange { .. } => Err(Error::validation(
                "stock",
                Rule::OutOfRange {
                    min: 0,
                    max: MAX_STOCK,
                },
            )),
        }
    }
}

impl NewInput for NewProduct {
    fn from_values(values: Vec<Value>) -> Result<Self> {
        let schema = Product::schema();
        Inputs::check_len(schema, &values)?;
        let mut values = values.into_iter();
        let (name, slug, sku): (String, String, String) = (
            Inputs::take_next(schema, NAME, &mut values)?,
            Inputs::take_next(schema, SLUG, &mut values)?,
            Inputs::take_next(schema, SKU, &mut values)?,
        );
        let description: Option<String> = Inputs::take_next(schema, DESCRIPTION, &mut values)?;
        let status: ProductStatus = Inputs::take_next(schema, STATUS, &mut values)?;
        let stock: i64 = Inputs::take_next(schema, STOCK, &mut values)?;
        let category: Option<CategoryId> = Inputs::take_next(schema, CATEGORY_ID, &mut values)?;
        let creator: Option<UserId> = Inputs::take_next(schema, CATEGORY_ID + 1, &mut values)?;
        let mut new = NewProduct::new(&name, &slug, &sku)?
            .with_stock(stock)?
            .with_status(status);
        if let Some(description) = description {
            new = new.with_description(&description)?;
        }
        new.category_id = category;
        new.created_by = creator;
        Ok(new)
    }
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(vec![
            Value::Text(self.name.into_string()),
            Value::Text(self.slug.into_string()),
            Value::Text(self.sku.into_string()),
            self.description
                .map_or(Value::Null, |d| Value::Text(d.into_string())),
            self.status.to_value(),
            Value::Int(self.stock.get()),
            self.category_id.to_value(),
            self.created_by.to_value(),
        ])
    }
}

impl PatchInput for ProductPatch {
    fn from_sets(sets: Vec<(usize, Value)>) -> Result<Self> {
        let schema = Product::schema();
        let mut patch = ProductPatch::new();
        for (field, value) in sets {
            patch = match field {
                NAME => patch.with_name(&Inputs::take::<String>(schema, field, value)?)?,
                SLUG => patch.with_slug(&Inputs::take::<String>(schema, field, value)?)?,
                SKU => patch.with_sku(&Inputs::take::<String>(schema, field, value)?)?,
                DESCRIPTION => {
                    let description: Option<String> = Inputs::take(schema, field, value)?;
                    patch.with_description(description.as_deref())?
                }
                STATUS => patch.with_status(Inputs::take(schema, field, value)?),
                CATEGORY_ID => patch.with_category(Inputs::take(schema, field, value)?),
                _ => return Err(Inputs::unsupported(schema, field)),
            };
        }
        Ok(patch)
    }
    fn sets(&self) -> Result<Vec<(usize, Value)>> {
        let text = |t: &str| Value::Text(t.to_owned());
        let mut sets = Vec::new();
        if let Some(v) = self.name() {
            sets.push((NAME, text(v)));
        }
        if let Some(v) = self.slug() {
            sets.push((SLUG, text(v)));
        }
        if let Some(v) = self.sku() {
            sets.push((SKU, text(v)));
        }
        if let Some(v) = self.description() {
            sets.push((DESCRIPTION, v.map_or(Value::Null, text)));
        }
        if let Some(v) = self.status {
            sets.push((STATUS, v.to_value()));
        }
        if let Some(v) = self.category_id {
            sets.push((CATEGORY_ID, v.to_value()));
        }
        Ok(sets)
    }
}

impl FilterInput for ProductFilter {
    fn from_conditions(conditions: Vec<Condition>) -> Result<Self> {
        let schema = Product::schema();
        let mut filter = ProductFilter::default();
        for condition in conditions {
            filter = match condition {
                Condition::Eq { field, value } => match field {
                    STATUS => filter.with_status(Inputs::take(schema, field, value)?),
                    CATEGORY_ID => filter.with_category_id(Inputs::take(schema, field, value)?),
                    _ => return Err(Inputs::unsupported(schema, field)),
                },
                Condition::Search(query) => ProductFilter {
                    search: Some(query),
                    ..filter
                },
            };
        }
        Ok(filter)
    }
    fn conditions(&self) -> Result<Vec<Condition>> {
        let mut conditions = Vec::new();
        if let Some(status) = self.status {
            conditions.push(Condition::Eq {
                field: STATUS,
                value: status.to_value(),
            });
        }
        if let Some(category) = self.category_id {
            conditions.push(Condition::Eq {
                field: CATEGORY_ID,
                value: category.to_value(),
            });
        }
        if let Some(query) = &self.search {
            conditions.push(Condition::Search(query.clone()));
        }
        Ok(conditions)
    }
}

/// A validated new product.
///
/// ```
/// use stockroom_core::{NewProduct, ProductStatus};
/// let mug = NewProduct::new("Blue mug", "blue-mug", "MUG-BLUE")?
///     .with_stock(12)?
///     .with_status(ProductStatus::Active);
/// assert_eq!(mug.stock(), 12);
/// assert!(NewProduct::new("", "blue-mug", "MUG-BLUE").is_err());
/// # Ok::<(), stockroom_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    name: Name,
    slug: Slug,
    sku: Sku,
    description: Option<Text>,
    status: ProductStatus,
    stock: Stock,
    category_id: Option<CategoryId>,
    created_by: Option<UserId>,
}

impl NewProduct {
    /// A draft product with no stock, no description, no category and no creator.
    pub fn new(name: &str, slug: &str, sku: &str) -> Result<Self> {
        Ok(Self {
            name: Name::parse("name", name)?,
            slug: Slug::parse("slug", slug)?,
            sku: Sku::parse("sku", sku)?,
            description: None,
            status: ProductStatus::Draft,
            stock: Stock::default(),
            category_id: None,
            created_by: None,
        })
    }

    /// The input, with a description. Fails with [`Error::Validation`] on `description` when it
    /// is blank ([`Rule::Empty`]), longer than [`MAX_TEXT_LEN`](crate::MAX_TEXT_LEN) characters
    /// or holds a forbidden control character (see [`Text`](crate::Text)).
    pub fn with_description(mut self, description: &str) -> Result<Self> {
        self.description = Some(Text::parse("description", description)?);
        Ok(self)
    }

    /// The input, with `stock` units in stock (0 by default). Fails with [`Error::Validation`]
    /// on `stock` ([`Rule::OutOfRange`]) outside `0..=MAX_STOCK`.
    pub fn with_stock(mut self, stock: i64) -> Result<Self> {
        self.stock = Stock::parse("stock", stock)?;
        Ok(self)
    }

    /// The input, with a status other than [`ProductStatus::Draft`].
    pub fn with_status(mut self, status: ProductStatus) -> Self {
        self.status = status;
        self
    }

    /// The input, in a category. The category must be live when the product is created, else
    /// the create fails with [`Error::NotFound`] on it.
    pub fn with_category_id(mut self, category: CategoryId) -> Self {
        self.category_id = Some(category);
        self
    }

    /// The input, naming the user who creates the product. The user must be live when the
    /// product is created, else the create fails with [`Error::NotFound`] on it.
    pub fn with_created_by(mut self, user: UserId) -> Self {
        self.created_by = Some(user);
        self
    }

    /// The validated name, trimmed of surrounding white space.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// The validated slug.
    pub fn slug(&self) -> &str {
        self.slug.as_str()
    }
    /// The validated sku.
    pub fn sku(&self) -> &str {
        self.sku.as_str()
    }
    /// The description, if one was given.
    pub fn description(&self) -> Option<&str> {
        self.description.as_ref().map(Text::as_str)
    }
    /// The status the product starts with ([`ProductStatus::Draft`] unless set).
    pub fn status(&self) -> ProductStatus {
        self.status
    }
    /// The units the product starts with, in `0..=MAX_STOCK` (0 unless set).
    pub fn stock(&self) -> i64 {
        self.stock.get()
    }
    /// The category, if one was given.
    pub fn category_id(&self) -> Option<CategoryId> {
        self.category_id
    }
    /// The creating user, if one was given (see [`with_created_by`](Self::with_created_by)).
    pub fn created_by(&self) -> Option<UserId> {
        self.created_by
    }
}

/// A validated change to a product. Stock is not part of it: stock moves only through
/// [`adjust_stock`](crate::Repo::adjust_stock) and transfers, which cannot race.
///
/// ```
/// use stockroom_core::{ProductPatch, ProductStatus};
/// let patch = ProductPatch::new().with_name("Red mug")?.with_status(ProductStatus::Archived);
/// assert_eq!(patch.name(), Some("Red mug"));
/// # Ok::<(), stockroom_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductPatch {
    name: Option<Name>,
    slug: Option<Slug>,
    sku: Option<Sku>,
    description: Option<Option<Text>>,
    status: Option<ProductStatus>,
    category_id: Option<Option<CategoryId>>,
}

impl ProductPatch {
    /// A patch that changes nothing but `updated_at` and `version`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The patch, renaming the product (validated as [`Name`]).
    pub fn with_name(mut self, name: &str) -> Result<Self> {
        self.name = Some(Name::parse("name", name)?);
        Ok(self)
    }
    /// The patch, giving the product another slug (validated as [`Slug`]).
    pub fn with_slug(mut self, slug: &str) -> Result<Self> {
        self.slug = Some(Slug::parse("slug", slug)?);
        Ok(self)
    }
    /// The patch, giving the product another sku (validated as [`Sku`]).
    pub fn with_sku(mut self, sku: &str) -> Result<Self> {
        self.sku = Some(Sku::parse("sku", sku)?);
        Ok(self)
    }
    /// The patch, setting (`Some`) or clearing (`None`) the description.
    pub fn with_description(mut self, description: Option<&str>) -> Result<Self> {
        self.description = Some(
            description
                .map(|d| Text::parse("description", d))
                .transpose()?,
        );
        Ok(self)
    }
    /// The patch, giving the product another status.
    pub fn with_status(mut self, status: ProductStatus) -> Self {
        self.status = Some(status);
        self
    }
    /// The patch, moving the product to a category (`Some`) or out of any (`None`).
    pub fn with_category(mut self, category: Option<CategoryId>) -> Self {
        self.category_id = Some(category);
        self
    }

    /// The new name, if the patch sets one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Name::as_str)
    }
    /// The new slug, if the patch sets one.
    pub fn slug(&self) -> Option<&str> {
        self.slug.as_ref().map(Slug::as_str)
    }
    /// The new sku, if the patch sets one.
    pub fn sku(&self) -> Option<&str> {
        self.sku.as_ref().map(Sku::as_str)
    }
    /// `None`: unchanged; `Some(None)`: cleared; `Some(Some(d))`: set.
    pub fn description(&self) -> Option<Option<&str>> {
        self.description
            .as_ref()
            .map(|d| d.as_ref().map(Text::as_str))
    }
    /// The new status, if the patch sets one.
    pub fn status(&self) -> Option<ProductStatus> {
        self.status
    }
    /// `None`: unchanged; `Some(None)`: cleared; `Some(Some(c))`: set.
    pub fn category(&self) -> Option<Option<CategoryId>> {
        self.category_id
    }
    /// Whether the patch changes no field (applied, it still bumps the version).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Which products a list, count, exists or search covers. Every field narrows; the default
/// filter covers every live product.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductFilter {
    /// Only products with this status.
    pub status: Option<ProductStatus>,
    /// Only products in this category. A category that is not live matches no product.
    pub category_id: Option<CategoryId>,
    /// Only products whose name, sku or description contains this text, compared
    /// case-insensitively (see [`SearchText`]).
    pub search: Option<SearchText>,
}

impl ProductFilter {
    /// The filter, narrowed to products with `status`.
    pub fn with_status(mut self, status: ProductStatus) -> Self {
        self.status = Some(status);
        self
    }
    /// The filter, narrowed to products in `category` (none if the category is not live).
    pub fn with_category_id(mut self, category: CategoryId) -> Self {
        self.category_id = Some(category);
        self
    }
    /// Validates and adds a search query (see [`SearchText`]).
    pub fn with_search(mut self, query: &str) -> Result<Self> {
        self.search = Some(SearchText::new(query)?);
        Ok(self)
    }

    /// Whether a live `product` passes the filter.
    pub fn matches(&self, product: &Product) -> bool {
        self.matches_with_document(product, || product.search_document())
    }

    /// [`matches`](Self::matches) for a backend that keeps each product's
    /// [`search_document`](Product::search_document) from the time the row was written:
    /// `document` gives it, and is called only when the filter has a search.
    pub fn matches_with_document<D: AsRef<str>>(
        &self,
        product: &Product,
        document: impl FnOnce() -> D,
    ) -> bool {
        self.status.is_none_or(|s| product.status == s)
            && self
                .category_id
                .is_none_or(|c| product.category_id == Some(c))
            && self
                .search
                .as_ref()
                .is_none_or(|q| q.matches(document().as_ref()))
    }
}

/// A product with its live relatives: a deleted category or creator shows as `None`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ProductWithRelations {
    /// The live product.
    pub product: Product,
    /// Its category, if it has one and that category is live.
    pub category: Option<Category>,
    /// The user who created it, if known and live.
    pub creator: Option<User>,
}

/// A product page's data: the product, its latest reviews and its rating statistics.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ProductDetails {
    /// The live product.
    pub product: Product,
    /// Its newest live reviews, newest first, at most as many as asked for.
    pub reviews: Vec<Review>,
    /// The count and average rating of all its live reviews (not only those in `reviews`).
    pub stats: RatingStats,
}

use std::fmt;
use std::str::FromStr;

use crate::entities::{
    entity_meta, entity_ports, touch, Category, Entity, OnDelete, RatingStats, Review, User,
};
use crate::error::{Constraint, EntityKind, Error, Result, Rule};
use crate::ids::{CategoryId, EntityId, ProductId, UserId};
use crate::query::{search_document, SearchText};
use crate::time::Timestamp;
use crate::validate::{Name, Sku, Slug, Stock, Text};

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

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Product {
    /// The product's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: ProductId,
    /// The display name: 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) characters (see
    /// [`Name`](crate::Name)).
    pub name: String,
    /// The URL slug, unique among live products ([`Constraint::ProductSlug`]; see
    /// [`Slug`](crate::Slug)).
    pub slug: String,
    /// The stock-keeping unit, unique among live products ([`Constraint::ProductSku`]; see
    /// [`Sku`](crate::Sku)).
    pub sku: String,
    /// Free text, if any (see [`Text`](crate::Text)).
    pub description: Option<String>,
    /// Where the product is in its life.
    pub status: ProductStatus,
    /// Units in stock: `0..=MAX_STOCK` ([`MAX_STOCK`](crate::MAX_STOCK) is 10¹²), never negative.
    /// Changed only by [`adjust_stock`](crate::ProductRepository::adjust_stock) and transfers.
    pub stock: i64,
    /// The category, if any. `None` also when the category was deleted for good; a soft-deleted
    /// category still shows here, but not in [`ProductWithRelations`].
    pub category_id: Option<CategoryId>,
    /// The user who created the product, if known (set with [`NewProduct::created_by`];
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

impl Entity for Product {
    type Id = ProductId;
    type New = NewProduct;
    type Patch = ProductPatch;
    type Filter = ProductFilter;
    const KIND: EntityKind = EntityKind::Product;
    const REFERRED_BY: &'static [EntityKind] = &[EntityKind::Review];
    entity_meta!();
    entity_ports!();

    fn create(new: NewProduct, now: Timestamp) -> Self {
        new.into_entity(now)
    }
    fn apply(&mut self, patch: &ProductPatch, now: Timestamp) {
        patch.apply_to(self, now);
    }
    fn matches(&self, filter: &ProductFilter) -> bool {
        filter.matches(self)
    }
    /// The slug, then the sku.
    fn unique_values(&self) -> Vec<(Constraint, String)> {
        vec![
            (Constraint::ProductSlug, self.slug.clone()),
            (Constraint::ProductSku, self.sku.clone()),
        ]
    }
    /// The category, then the creator.
    fn references(&self) -> Vec<EntityId> {
        let category = self.category_id.map(EntityId::from);
        category
            .into_iter()
            .chain(self.created_by.map(EntityId::from))
            .collect()
    }
    fn patch_references(patch: &ProductPatch) -> Vec<EntityId> {
        patch
            .category()
            .flatten()
            .map(EntityId::from)
            .into_iter()
            .collect()
    }
    fn filter_references(filter: &ProductFilter) -> Vec<EntityId> {
        filter.category_id.map(EntityId::from).into_iter().collect()
    }
    /// A deleted category or creator is forgotten.
    fn on_delete_of(&self, target: EntityId) -> Option<OnDelete> {
        let refers = match target {
            EntityId::Category(c) => self.category_id == Some(c),
            EntityId::User(u) => self.created_by == Some(u),
            _ => false,
        };
        refers.then_some(OnDelete::SetNull)
    }
    fn clear_reference(&mut self, target: EntityId) {
        match target {
            EntityId::Category(c) if self.category_id == Some(c) => self.category_id = None,
            EntityId::User(u) if self.created_by == Some(u) => self.created_by = None,
            _ => {}
        }
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
    pub fn in_category(mut self, category: CategoryId) -> Self {
        self.category_id = Some(category);
        self
    }

    /// The input, naming the user who creates the product. The user must be live when the
    /// product is created, else the create fails with [`Error::NotFound`] on it.
    pub fn created_by(mut self, user: UserId) -> Self {
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
    /// The creating user, if one was given (see [`created_by`](Self::created_by)).
    pub fn creator(&self) -> Option<UserId> {
        self.created_by
    }

    /// The row this input creates: a fresh id, version 1, created and updated at `now`.
    pub(crate) fn into_entity(self, now: Timestamp) -> Product {
        Product {
            id: ProductId::new(),
            name: self.name.into_string(),
            slug: self.slug.into_string(),
            sku: self.sku.into_string(),
            description: self.description.map(Text::into_string),
            status: self.status,
            stock: self.stock.get(),
            category_id: self.category_id,
            created_by: self.created_by,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
    }
}

/// A validated change to a product. Stock is not part of it: stock moves only through
/// [`adjust_stock`](crate::ProductRepository::adjust_stock) and transfers, which cannot race.
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

    /// Applies the patch to `product` at `now` (new `updated_at`, next version).
    pub(crate) fn apply_to(&self, product: &mut Product, now: Timestamp) {
        if let Some(v) = &self.name {
            product.name = v.as_str().to_owned();
        }
        if let Some(v) = &self.slug {
            product.slug = v.as_str().to_owned();
        }
        if let Some(v) = &self.sku {
            product.sku = v.as_str().to_owned();
        }
        if let Some(v) = &self.description {
            product.description = v.as_ref().map(|t| t.as_str().to_owned());
        }
        if let Some(v) = self.status {
            product.status = v;
        }
        if let Some(v) = self.category_id {
            product.category_id = v;
        }
        touch(&mut product.updated_at, &mut product.version, now);
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
    pub fn status(mut self, status: ProductStatus) -> Self {
        self.status = Some(status);
        self
    }
    /// The filter, narrowed to products in `category` (none if the category is not live).
    pub fn category(mut self, category: CategoryId) -> Self {
        self.category_id = Some(category);
        self
    }
    /// Validates and adds a search query (see [`SearchText`]).
    pub fn search(mut self, query: &str) -> Result<Self> {
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

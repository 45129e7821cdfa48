use crate::entities::{entity_meta, entity_ports, touch, Entity};
use crate::error::{Constraint, EntityKind, Result};
use crate::ids::CategoryId;
use crate::time::Timestamp;
use crate::validate::{Name, Slug};

/// A category of products.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Category {
    /// The category's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: CategoryId,
    /// The display name: 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) characters (see
    /// [`Name`](crate::Name)).
    pub name: String,
    /// The URL slug, unique among live categories ([`Constraint::CategorySlug`]; see
    /// [`Slug`](crate::Slug)).
    pub slug: String,
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

impl Entity for Category {
    type Id = CategoryId;
    type New = NewCategory;
    type Patch = CategoryPatch;
    type Filter = CategoryFilter;
    const KIND: EntityKind = EntityKind::Category;
    const REFERRED_BY: &'static [EntityKind] = &[EntityKind::Product];
    entity_meta!();
    entity_ports!();

    fn create(new: NewCategory, now: Timestamp) -> Self {
        new.into_entity(now)
    }
    fn apply(&mut self, patch: &CategoryPatch, now: Timestamp) {
        patch.apply_to(self, now);
    }
    fn matches(&self, filter: &CategoryFilter) -> bool {
        filter.matches(self)
    }
    fn unique_values(&self) -> Vec<(Constraint, String)> {
        vec![(Constraint::CategorySlug, self.slug.clone())]
    }
}

/// A validated new category.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCategory {
    name: Name,
    slug: Slug,
}

impl NewCategory {
    /// A new category. Fails with [`Error::Validation`](crate::Error::Validation) on `name` when
    /// the name breaks the rules of [`Name`](crate::Name), and on `slug` when the slug is not a
    /// [`Slug`](crate::Slug). That the slug is free is checked when the category is created
    /// ([`Error::Conflict`](crate::Error::Conflict) on [`Constraint::CategorySlug`]).
    pub fn new(name: &str, slug: &str) -> Result<Self> {
        Ok(Self {
            name: Name::parse("name", name)?,
            slug: Slug::parse("slug", slug)?,
        })
    }
    /// The validated name, trimmed of surrounding white space.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// The validated slug.
    pub fn slug(&self) -> &str {
        self.slug.as_str()
    }

    /// The row this input creates: a fresh id, version 1, created and updated at `now`.
    pub(crate) fn into_entity(self, now: Timestamp) -> Category {
        Category {
            id: CategoryId::new(),
            name: self.name.into_string(),
            slug: self.slug.into_string(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
    }
}

/// A validated change to a category.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryPatch {
    name: Option<Name>,
    slug: Option<Slug>,
}

impl CategoryPatch {
    /// A patch that changes nothing but `updated_at` and `version`.
    pub fn new() -> Self {
        Self::default()
    }
    /// The patch, renaming the category.
    pub fn with_name(mut self, name: &str) -> Result<Self> {
        self.name = Some(Name::parse("name", name)?);
        Ok(self)
    }
    /// The patch, giving the category another slug.
    pub fn with_slug(mut self, slug: &str) -> Result<Self> {
        self.slug = Some(Slug::parse("slug", slug)?);
        Ok(self)
    }
    /// The new name, if the patch sets one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(Name::as_str)
    }
    /// The new slug, if the patch sets one.
    pub fn slug(&self) -> Option<&str> {
        self.slug.as_ref().map(Slug::as_str)
    }

    /// Applies the patch to `category` at `now` (new `updated_at`, next version).
    pub(crate) fn apply_to(&self, category: &mut Category, now: Timestamp) {
        if let Some(v) = &self.name {
            category.name = v.as_str().to_owned();
        }
        if let Some(v) = &self.slug {
            category.slug = v.as_str().to_owned();
        }
        touch(&mut category.updated_at, &mut category.version, now);
    }
}

/// Which categories a list, count or exists covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryFilter {
    /// Only the category with this slug.
    pub slug: Option<Slug>,
}

impl CategoryFilter {
    /// The filter, narrowed to the live category with `slug`. Fails with
    /// [`Error::Validation`](crate::Error::Validation) on `slug` when it is not a
    /// [`Slug`](crate::Slug).
    pub fn slug(mut self, slug: &str) -> Result<Self> {
        self.slug = Some(Slug::parse("slug", slug)?);
        Ok(self)
    }
    /// Whether a live `category` passes the filter.
    pub fn matches(&self, category: &Category) -> bool {
        self.slug
            .as_ref()
            .is_none_or(|s| category.slug == s.as_str())
    }
}

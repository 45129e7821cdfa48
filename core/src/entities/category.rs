use crate::entities::{FilterInput, Inputs, NewInput, PatchInput};
use crate::error::Result;
use crate::ids::CategoryId;
use crate::ports::RecordReader;
use crate::repo::Repo;
use crate::schema::{Condition, Value};
use crate::time::Timestamp;
use crate::validate::{Name, Slug};
use crate::Entity;

/// A category of products.
#[derive(Debug, Clone, PartialEq, Entity)]
#[entity(
    table = "categories",
    ddl = "builtin",
    new = NewCategory,
    patch = CategoryPatch,
    filter = CategoryFilter
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Category {
    /// The category's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: CategoryId,
    #[entity(name)]
    /// The display name: 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) characters (see
    /// [`Name`](crate::Name)).
    pub name: String,
    #[entity(slug, unique)]
    /// The URL slug, unique among live categories ([`Constraint::CATEGORY_SLUG`](crate::Constraint::CATEGORY_SLUG); see
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

/// The positions of the declared fields, for the inputs written by hand (checked against the
/// declaration by `entities::tests`).
pub(crate) const NAME: usize = 0;
pub(crate) const SLUG: usize = 1;

impl<'a, P: RecordReader + ?Sized + 'a> Repo<'a, Category, P> {
    /// The live category with this slug.
    pub async fn by_slug(&mut self, slug: &str) -> Result<Option<Category>> {
        self.find_unique("category_slug", vec![Value::Text(slug.to_owned())])
            .await
    }
}

impl NewInput for NewCategory {
    fn from_values(values: Vec<Value>) -> Result<Self> {
        let schema = Category::schema();
        Inputs::check_len(schema, &values)?;
        let mut values = values.into_iter();
        let name: String = Inputs::take(schema, NAME, values.next().unwrap_or_default())?;
        let slug: String = Inputs::take(schema, SLUG, values.next().unwrap_or_default())?;
        NewCategory::new(&name, &slug)
    }
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(vec![
            Value::Text(self.name.into_string()),
            Value::Text(self.slug.into_string()),
        ])
    }
}

impl PatchInput for CategoryPatch {
    fn from_sets(sets: Vec<(usize, Value)>) -> Result<Self> {
        let schema = Category::schema();
        let mut patch = CategoryPatch::new();
        for (field, value) in sets {
            patch = match field {
                NAME => patch.with_name(&Inputs::take::<String>(schema, field, value)?)?,
                SLUG => patch.with_slug(&Inputs::take::<String>(schema, field, value)?)?,
                _ => return Err(Inputs::unsupported(schema, field)),
            };
        }
        Ok(patch)
    }
    fn sets(&self) -> Result<Vec<(usize, Value)>> {
        let mut sets = Vec::new();
        if let Some(v) = &self.name {
            sets.push((NAME, Value::Text(v.as_str().to_owned())));
        }
        if let Some(v) = &self.slug {
            sets.push((SLUG, Value::Text(v.as_str().to_owned())));
        }
        Ok(sets)
    }
}

impl FilterInput for CategoryFilter {
    fn from_conditions(conditions: Vec<Condition>) -> Result<Self> {
        let schema = Category::schema();
        let mut filter = CategoryFilter::default();
        for condition in conditions {
            filter = match condition {
                Condition::Eq { field: SLUG, value } => {
                    filter.with_slug(&Inputs::take::<String>(schema, SLUG, value)?)?
                }
                Condition::Eq { field, .. } => return Err(Inputs::unsupported(schema, field)),
                Condition::Search(_) => return Err(Inputs::no_search()),
            };
        }
        Ok(filter)
    }
    fn conditions(&self) -> Result<Vec<Condition>> {
        Ok(self
            .slug
            .iter()
            .map(|s| Condition::Eq {
                field: SLUG,
                value: Value::Text(s.as_str().to_owned()),
            })
            .collect())
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
    /// ([`Error::Conflict`](crate::Error::Conflict) on [`Constraint::CATEGORY_SLUG`](crate::Constraint::CATEGORY_SLUG)).
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
    pub fn with_slug(mut self, slug: &str) -> Result<Self> {
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

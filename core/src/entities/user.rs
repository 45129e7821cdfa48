use crate::entities::{FilterInput, Inputs, NewInput, PatchInput};
use crate::error::Result;
use crate::ids::UserId;
use crate::ports::RecordReader;
use crate::repo::Repo;
use crate::schema::{Condition, Value};
use crate::time::Timestamp;
use crate::validate::{Email, Name};
use crate::Entity;

/// A user: a product's creator or a review's author.
#[derive(Debug, Clone, PartialEq, Entity)]
#[entity(
    table = "users",
    ddl = "builtin",
    new = NewUser,
    patch = UserPatch,
    filter = UserFilter
)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct User {
    /// The user's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: UserId,
    #[entity(email, unique)]
    /// The email address, lower-cased; unique among live users ([`Constraint::USER_EMAIL`](crate::Constraint::USER_EMAIL)).
    pub email: String,
    #[entity(name)]
    /// The name shown for the user: 1 to [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) characters (see
    /// [`Name`](crate::Name)).
    pub display_name: String,
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
pub(crate) const EMAIL: usize = 0;
pub(crate) const DISPLAY_NAME: usize = 1;

impl<'a, P: RecordReader + ?Sized + 'a> Repo<'a, User, P> {
    /// The live user with this email (compared lower-cased).
    pub async fn by_email(&mut self, email: &str) -> Result<Option<User>> {
        self.find_unique("user_email", vec![Value::Text(email.to_owned())])
            .await
    }
}

impl NewInput for NewUser {
    fn from_values(values: Vec<Value>) -> Result<Self> {
        let schema = User::schema();
        Inputs::check_len(schema, &values)?;
        let mut values = values.into_iter();
        let email: String = Inputs::take(schema, EMAIL, values.next().unwrap_or_default())?;
        let name: String = Inputs::take(schema, DISPLAY_NAME, values.next().unwrap_or_default())?;
        NewUser::new(&email, &name)
    }
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(vec![
            Value::Text(self.email.into_string()),
            Value::Text(self.display_name.into_string()),
        ])
    }
}

impl PatchInput for UserPatch {
    fn from_sets(sets: Vec<(usize, Value)>) -> Result<Self> {
        let schema = User::schema();
        let mut patch = UserPatch::new();
        for (field, value) in sets {
            let text: String = Inputs::take(schema, field, value)?;
            patch = match field {
                EMAIL => patch.with_email(&text)?,
                DISPLAY_NAME => patch.with_display_name(&text)?,
                _ => return Err(Inputs::unsupported(schema, field)),
            };
        }
        Ok(patch)
    }
    fn sets(&self) -> Result<Vec<(usize, Value)>> {
        let mut sets = Vec::new();
        if let Some(v) = &self.email {
            sets.push((EMAIL, Value::Text(v.as_str().to_owned())));
        }
        if let Some(v) = &self.display_name {
            sets.push((DISPLAY_NAME, Value::Text(v.as_str().to_owned())));
        }
        Ok(sets)
    }
}

impl FilterInput for UserFilter {
    fn from_conditions(conditions: Vec<Condition>) -> Result<Self> {
        let schema = User::schema();
        let mut filter = UserFilter::default();
        for condition in conditions {
            filter = match condition {
                Condition::Eq {
                    field: EMAIL,
                    value,
                } => filter.with_email(&Inputs::take::<String>(schema, EMAIL, value)?)?,
                Condition::Eq { field, .. } => return Err(Inputs::unsupported(schema, field)),
                Condition::Search(_) => return Err(Inputs::no_search()),
            };
        }
        Ok(filter)
    }
    fn conditions(&self) -> Result<Vec<Condition>> {
        Ok(self
            .email
            .iter()
            .map(|e| Condition::Eq {
                field: EMAIL,
                value: Value::Text(e.as_str().to_owned()),
            })
            .collect())
    }
}

/// A validated new user.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    email: Email,
    display_name: Name,
}

impl NewUser {
    /// A new user. Fails with [`Error::Validation`](crate::Error::Validation) on `email` when
    /// it is not an email address of at most [`MAX_EMAIL_LEN`](crate::MAX_EMAIL_LEN) characters
    /// (see [`Email`](crate::Email)), and on `display_name` when it breaks the rules of
    /// [`Name`](crate::Name). The email is lower-cased; that it is free is checked when the user
    /// is created ([`Error::Conflict`](crate::Error::Conflict) on [`Constraint::USER_EMAIL`](crate::Constraint::USER_EMAIL)).
    pub fn new(email: &str, display_name: &str) -> Result<Self> {
        Ok(Self {
            email: Email::parse("email", email)?,
            display_name: Name::parse("display_name", display_name)?,
        })
    }
    /// The validated email, lower-cased.
    pub fn email(&self) -> &str {
        self.email.as_str()
    }
    /// The validated display name, trimmed of surrounding white space.
    pub fn display_name(&self) -> &str {
        self.display_name.as_str()
    }
}

/// A validated change to a user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPatch {
    email: Option<Email>,
    display_name: Option<Name>,
}

impl UserPatch {
    /// A patch that changes nothing but `updated_at` and `version`.
    pub fn new() -> Self {
        Self::default()
    }
    /// The patch, giving the user another email.
    pub fn with_email(mut self, email: &str) -> Result<Self> {
        self.email = Some(Email::parse("email", email)?);
        Ok(self)
    }
    /// The patch, giving the user another display name.
    pub fn with_display_name(mut self, name: &str) -> Result<Self> {
        self.display_name = Some(Name::parse("display_name", name)?);
        Ok(self)
    }
    /// The new email (lower-cased), if the patch sets one.
    pub fn email(&self) -> Option<&str> {
        self.email.as_ref().map(Email::as_str)
    }
    /// The new display name, if the patch sets one.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_ref().map(Name::as_str)
    }
}

/// Which users a list, count or exists covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    /// Only the user with this email.
    pub email: Option<Email>,
}

impl UserFilter {
    /// The filter, narrowed to the live user with `email` (compared lower-cased). Fails with
    /// [`Error::Validation`](crate::Error::Validation) on `email` when it is not an email
    /// address.
    pub fn with_email(mut self, email: &str) -> Result<Self> {
        self.email = Some(Email::parse("email", email)?);
        Ok(self)
    }
    /// Whether a live `user` passes the filter.
    pub fn matches(&self, user: &User) -> bool {
        self.email.as_ref().is_none_or(|e| user.email == e.as_str())
    }
}

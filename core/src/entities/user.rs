use crate::entities::{entity_meta, entity_ports, touch, Entity};
use crate::error::{Constraint, EntityKind, Result};
use crate::ids::UserId;
use crate::time::Timestamp;
use crate::validate::{Email, Name};

/// A user: a product's creator or a review's author.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct User {
    /// The user's id, a UUID v7 chosen at creation (ids sort by creation time).
    pub id: UserId,
    /// The email address, lower-cased; unique among live users ([`Constraint::UserEmail`]).
    pub email: String,
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

impl Entity for User {
    type Id = UserId;
    type New = NewUser;
    type Patch = UserPatch;
    type Filter = UserFilter;
    const KIND: EntityKind = EntityKind::User;
    const REFERRED_BY: &'static [EntityKind] = &[EntityKind::Product, EntityKind::Review];
    entity_meta!();
    entity_ports!();

    fn create(new: NewUser, now: Timestamp) -> Self {
        new.into_entity(now)
    }
    fn apply(&mut self, patch: &UserPatch, now: Timestamp) {
        patch.apply_to(self, now);
    }
    fn matches(&self, filter: &UserFilter) -> bool {
        filter.matches(self)
    }
    fn unique_values(&self) -> Vec<(Constraint, String)> {
        vec![(Constraint::UserEmail, self.email.clone())]
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
    /// is created ([`Error::Conflict`](crate::Error::Conflict) on [`Constraint::UserEmail`]).
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

    /// The row this input creates: a fresh id, version 1, created and updated at `now`.
    pub(crate) fn into_entity(self, now: Timestamp) -> User {
        User {
            id: UserId::new(),
            email: self.email.into_string(),
            display_name: self.display_name.into_string(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
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

    /// Applies the patch to `user` at `now` (new `updated_at`, next version).
    pub(crate) fn apply_to(&self, user: &mut User, now: Timestamp) {
        if let Some(v) = &self.email {
            user.email = v.as_str().to_owned();
        }
        if let Some(v) = &self.display_name {
            user.display_name = v.as_str().to_owned();
        }
        touch(&mut user.updated_at, &mut user.version, now);
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
    pub fn email(mut self, email: &str) -> Result<Self> {
        self.email = Some(Email::parse("email", email)?);
        Ok(self)
    }
    /// Whether a live `user` passes the filter.
    pub fn matches(&self, user: &User) -> bool {
        self.email.as_ref().is_none_or(|e| user.email == e.as_str())
    }
}

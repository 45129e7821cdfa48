//! Validated input values. Each type can only hold a value that passed its rule, so an adapter
//! never sees bad input, and every backend rejects the same inputs with the same error.
//!
//! # Characters
//!
//! - **Control characters** (Unicode category Cc, NUL included) are refused everywhere
//!   ([`Rule::ControlCharacter`]), except line feed, carriage return and tab in free text
//!   ([`Text`]: descriptions and review bodies).
//! - **Bidirectional embeddings, overrides and isolates** (U+202A–U+202E, U+2066–U+2069), which
//!   make text display in another order than it is stored, are refused everywhere too
//!   ([`Rule::ControlCharacter`]). The left-to-right, right-to-left and Arabic letter marks
//!   (U+200E, U+200F, U+061C), which right-to-left text needs, are allowed.
//! - **Invisible characters** (white space, and Unicode's default-ignorable code points such as
//!   U+200B ZERO WIDTH SPACE, U+200D ZERO WIDTH JOINER, U+FEFF or U+3164 HANGUL FILLER) are
//!   allowed inside text, but a name, a description or a review body needs at least one visible
//!   character: one made only of invisible characters is [`Rule::Empty`], as a blank one is.

use std::fmt;

use crate::error::{Error, Result, Rule};

/// The most characters a name may have.
pub const MAX_NAME_LEN: usize = 200;
/// The most characters a slug may have.
pub const MAX_SLUG_LEN: usize = 100;
/// The most characters a sku may have.
pub const MAX_SKU_LEN: usize = 64;
/// The most characters a description or review body may have.
pub const MAX_TEXT_LEN: usize = 5_000;
/// The most characters an email may have (RFC 5321).
pub const MAX_EMAIL_LEN: usize = 254;
/// The most characters an idempotency key may have.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// The most stock a product may hold, and the largest quantity one transfer or adjustment moves.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

pub(crate) fn check_length(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::validation(field, Rule::Empty));
    }
    if value.chars().count() > max {
        return Err(Error::validation(field, Rule::TooLong { max }));
    }
    Ok(())
}

pub(crate) fn check_no_control(
    field: &'static str,
    value: &str,
    allow_line_breaks: bool,
) -> Result<()> {
    let line_break = |c: char| allow_line_breaks && matches!(c, '\n' | '\r' | '\t');
    let bad = |c: char| (c.is_control() && !line_break(c)) || is_bidi_control(c);
    if value.chars().any(bad) {
        return Err(Error::validation(field, Rule::ControlCharacter));
    }
    Ok(())
}

/// A bidirectional embedding, override or isolate (U+202A–U+202E, U+2066–U+2069).
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` shows on screen: not white space, not a control character, not a default-ignorable
/// code point.
pub(crate) fn is_visible(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || is_default_ignorable(c))
}

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, Unicode 15): code
/// points that render as nothing when a font has no glyph for them.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// [`Rule::Empty`] on `field` unless `value` has a visible character.
pub(crate) fn check_visible(field: &'static str, value: &str) -> Result<()> {
    if value.chars().any(is_visible) {
        Ok(())
    } else {
        Err(Error::validation(field, Rule::Empty))
    }
}

pub(crate) fn check_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::validation(field, Rule::OutOfRange { min, max }))
    }
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The validated text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            #[doc = concat!("Validates `s` as `parse(\"", $field, "\", s)` does: a refusal names the field `", $field, "`.")]
            fn from_str(s: &str) -> Result<Self> {
                Self::parse($field, s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;

            #[doc = concat!("Validates `s` as `parse(\"", $field, "\", s)` does.")]
            fn try_from(s: &str) -> Result<Self> {
                Self::parse($field, s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            #[doc = concat!("Validates `s` as `parse(\"", $field, "\", &s)` does.")]
            fn try_from(s: String) -> Result<Self> {
                Self::parse($field, &s)
            }
        }
    };
}

text_type!(
    /// A display name: 1 to [`MAX_NAME_LEN`] (200) characters with at least one visible
    /// character (white space and invisible characters such as U+200B alone are
    /// [`Rule::Empty`]), no control characters (NUL, line breaks and tabs included) and no
    /// bidirectional embeddings, overrides or isolates (U+202A–U+202E, U+2066–U+2069), which are
    /// [`Rule::ControlCharacter`]; surrounding white space trimmed.
    Name,
    "name"
);
text_type!(
    /// A URL slug: lower-case ASCII letters and digits in groups joined by single hyphens
    /// (`blue-mug-2`), at most [`MAX_SLUG_LEN`] (100) characters; anything else is
    /// [`Rule::Malformed`].
    Slug,
    "slug"
);
text_type!(
    /// A stock-keeping unit: upper-case ASCII letters, digits, `-`, `_` and `.`, starting with a
    /// letter or digit, at most 64 characters.
    Sku,
    "sku"
);
text_type!(
    /// Free text (a description or a review body): at most [`MAX_TEXT_LEN`] (5,000) characters
    /// with at least one visible character (else [`Rule::Empty`]); line feeds, carriage returns
    /// and tabs allowed, other control characters (NUL included) and bidirectional embeddings,
    /// overrides or isolates (U+202A–U+202E, U+2066–U+2069) not ([`Rule::ControlCharacter`]).
    Text,
    "text"
);
text_type!(
    /// An email address, lower-cased: one `@`, a non-empty local part, a domain with a dot.
    Email,
    "email"
);
text_type!(
    /// A client-chosen key that makes a retried transfer apply at most once: 1 to 128 visible
    /// ASCII characters.
    IdempotencyKey,
    "idempotency_key"
);

impl Name {
    /// Validates `value` as the field `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_no_control(field, value, false)?;
        let trimmed = value.trim();
        check_length(field, trimmed, MAX_NAME_LEN)?;
        check_visible(field, trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }
}

impl Slug {
    /// Validates `value` as the field `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_no_control(field, value, false)?;
        check_length(field, value, MAX_SLUG_LEN)?;
        let well_formed = value.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !well_formed {
            return Err(Error::validation(
                field,
                Rule::Malformed {
                    expected: "lower-case letters and digits joined by single hyphens",
                },
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl Sku {
    /// Validates `value` as the field `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_no_control(field, value, false)?;
        check_length(field, value, MAX_SKU_LEN)?;
        let mut bytes = value.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
        if !(first_ok && rest_ok) {
            return Err(Error::validation(
                field,
                Rule::Malformed {
                    expected: "upper-case letters, digits, '-', '_' or '.', starting with a letter or digit",
                },
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl Text {
    /// Validates `value` as the field `field`. Text with nothing visible in it (empty, blank or
    /// only invisible characters) is [`Rule::Empty`]: to have no description, give none.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_no_control(field, value, true)?;
        if value.chars().count() > MAX_TEXT_LEN {
            return Err(Error::validation(
                field,
                Rule::TooLong { max: MAX_TEXT_LEN },
            ));
        }
        check_visible(field, value)?;
        Ok(Self(value.to_owned()))
    }
}

impl Email {
    /// Validates `value` as the field `field`, and lower-cases it.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_no_control(field, value, false)?;
        check_length(field, value, MAX_EMAIL_LEN)?;
        let malformed = || {
            Error::validation(
                field,
                Rule::Malformed {
                    expected: "an email address",
                },
            )
        };
        let (local, domain) = value.split_once('@').ok_or_else(malformed)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@');
        if local.is_empty() || !domain_ok || value.chars().any(char::is_whitespace) {
            return Err(malformed());
        }
        Ok(Self(value.to_lowercase()))
    }
}

impl IdempotencyKey {
    /// Validates `value` as the field `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_no_control(field, value, false)?;
        check_length(field, value, MAX_IDEMPOTENCY_KEY_LEN)?;
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::validation(
                field,
                Rule::Malformed {
                    expected: "visible ASCII characters",
                },
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A product's stock: `0..=MAX_STOCK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stock(i64);

impl Stock {
    /// Validates `value` as the field `field`.
    pub fn parse(field: &'static str, value: i64) -> Result<Self> {
        check_range(field, value, 0, MAX_STOCK)?;
        Ok(Self(value))
    }

    /// The amount.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A quantity to move: `1..=MAX_STOCK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// Validates `value` as the field `field`.
    pub fn parse(field: &'static str, value: i64) -> Result<Self> {
        check_range(field, value, 1, MAX_STOCK)?;
        Ok(Self(value))
    }

    /// The amount.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A change of stock: non-zero, at most `MAX_STOCK` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StockDelta(i64);

impl StockDelta {
    /// Validates `value` as the field `delta`.
    pub fn new(value: i64) -> Result<Self> {
        check_range("delta", value, -MAX_STOCK, MAX_STOCK)?;
        if value == 0 {
            return Err(Error::validation(
                "delta",
                Rule::Malformed {
                    expected: "a non-zero change",
                },
            ));
        }
        Ok(Self(value))
    }

    /// A delta that adds `quantity`.
    pub const fn add(quantity: Quantity) -> Self {
        Self(quantity.0)
    }

    /// A delta that removes `quantity`.
    pub const fn remove(quantity: Quantity) -> Self {
        Self(-quantity.0)
    }

    /// The signed amount.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A review's rating: `1..=5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rating(u8);

impl Rating {
    /// Validates `value` as the field `rating`.
    pub fn new(value: i64) -> Result<Self> {
        check_range("rating", value, 1, 5)?;
        Ok(Self(value as u8))
    }

    /// The rating.
    pub const fn get(self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of<T: fmt::Debug>(r: Result<T>) -> Rule {
        match r {
            Err(Error::Validation { rule, .. }) => rule,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    /// The field a validation error names.
    fn field_of<T: fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Validation { field, .. }) => field.to_string(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    /// `FromStr` and `TryFrom` validate as `parse` does, naming the type's own field.
    #[test]
    fn text_types_parse_from_str_and_convert_from_strings() {
        assert_eq!("  Mug ".parse::<Name>().unwrap().as_str(), "Mug");
        assert_eq!(Slug::try_from("blue-mug").unwrap().as_str(), "blue-mug");
        assert_eq!(
            Sku::try_from(String::from("MUG-1")).unwrap().as_str(),
            "MUG-1"
        );
        assert_eq!(
            "A@B.example".parse::<Email>().unwrap().as_str(),
            "a@b.example"
        );
        assert_eq!("Line\nline".parse::<Text>().unwrap().as_str(), "Line\nline");
        assert_eq!("key-1".parse::<IdempotencyKey>().unwrap().as_str(), "key-1");
        assert_eq!(field_of("   ".parse::<Name>()), "name");
        assert_eq!(field_of(Slug::try_from("Blue Mug")), "slug");
        assert_eq!(field_of(Sku::try_from(String::from("mug"))), "sku");
        assert_eq!(field_of("no-at".parse::<Email>()), "email");
        assert_eq!(field_of("".parse::<Text>()), "text");
        assert_eq!(
            field_of("a key".parse::<IdempotencyKey>()),
            "idempotency_key"
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("name", "  Mug ").unwrap().as_str(), "Mug");
        assert_eq!(rule_of(Name::parse("name", "   ")), Rule::Empty);
        assert_eq!(
            rule_of(Name::parse("name", &"x".repeat(201))),
            Rule::TooLong { max: 200 }
        );
        assert_eq!(
            Name::parse("name", &"é".repeat(200))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            200
        );
        assert_eq!(rule_of(Name::parse("name", "a\0b")), Rule::ControlCharacter);
    }

    #[test]
    fn text_needs_a_visible_character() {
        for invisible in [
            "\u{200B}",
            "\u{200B}\u{200D}\u{FEFF}",
            " \u{3164} ",
            "\u{00AD}",
        ] {
            assert_eq!(
                rule_of(Name::parse("name", invisible)),
                Rule::Empty,
                "{invisible:?}"
            );
            assert_eq!(
                rule_of(Text::parse("body", invisible)),
                Rule::Empty,
                "{invisible:?}"
            );
        }
        assert_eq!(rule_of(Text::parse("body", "")), Rule::Empty);
        assert_eq!(rule_of(Text::parse("body", "\n\t")), Rule::Empty);
        // Invisible characters inside visible text are kept: emoji sequences need U+200D.
        let family = "👩\u{200D}👩\u{200D}👧";
        assert_eq!(Name::parse("name", family).unwrap().as_str(), family);
    }

    #[test]
    fn bidi_overrides_are_refused_and_marks_allowed() {
        for c in ['\u{202E}', '\u{202A}', '\u{2066}', '\u{2069}'] {
            let value = format!("abc{c}def");
            assert_eq!(rule_of(Name::parse("name", &value)), Rule::ControlCharacter);
            assert_eq!(rule_of(Text::parse("body", &value)), Rule::ControlCharacter);
        }
        assert!(Name::parse("name", "\u{200F}שלום").is_ok());
    }

    #[test]
    fn slugs_and_skus_have_a_shape() {
        assert!(Slug::parse("slug", "blue-mug-2").is_ok());
        for bad in ["Blue", "a--b", "-a", "a-", "a b", "ü"] {
            assert!(
                matches!(rule_of(Slug::parse("slug", bad)), Rule::Malformed { .. }),
                "{bad}"
            );
        }
        assert!(Sku::parse("sku", "MUG-01.B_2").is_ok());
        for bad in ["mug", "-MUG", "MUG 1", "MÜG"] {
            assert!(
                matches!(rule_of(Sku::parse("sku", bad)), Rule::Malformed { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers_are_bounded() {
        assert!(Stock::parse("stock", -1).is_err());
        assert!(Stock::parse("stock", 0).is_ok());
        assert!(Quantity::parse("quantity", 0).is_err());
        assert!(StockDelta::new(0).is_err());
        assert!(Rating::new(0).is_err() && Rating::new(6).is_err() && Rating::new(5).is_ok());
    }

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(
            Email::parse("email", "Ann@Example.COM").unwrap().as_str(),
            "ann@example.com"
        );
        assert!(Email::parse("email", "ann@localhost").is_err());
        assert!(Email::parse("email", "a b@x.io").is_err());
    }
}

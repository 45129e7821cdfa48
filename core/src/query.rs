//! Pagination, cursors and search: the read-side inputs and outputs shared by every repository.
//!
//! Every list is ordered by `(created_at, id)`: ids are UUID v7, so ties on `created_at` (rows
//! created in one batch share it) are broken deterministically and pages never repeat or skip rows.

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result, Rule};
use crate::time::{self, Timestamp};
use crate::validate::{is_bidi_control, is_visible};

/// The largest page a list returns.
pub const MAX_LIMIT: u32 = 1_000;
/// The largest offset an offset page may start at; deeper pages should use a [`Cursor`].
pub const MAX_OFFSET: u64 = 10_000_000;
/// The most characters a search query may have.
pub const MAX_QUERY_LEN: usize = 200;
/// Up to how many matches a search counts exactly: beyond it, its [`Total`] is
/// [`Total::AtLeast`], so a search costs about as much for a common term as for a rare one.
/// `count` counts exactly however many rows match.
pub const MAX_EXACT_TOTAL: u64 = 10_000;

/// How many rows a page holds: `1..=MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Limit(u32);

impl Limit {
    /// Validates `value` as the field `limit`.
    pub fn new(value: i64) -> Result<Self> {
        if (1..=i64::from(MAX_LIMIT)).contains(&value) {
            Ok(Self(value as u32))
        } else {
            Err(Error::validation(
                "limit",
                Rule::OutOfRange {
                    min: 1,
                    max: i64::from(MAX_LIMIT),
                },
            ))
        }
    }

    /// The number of rows.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self(50)
    }
}

/// An offset page: `limit` rows after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Page {
    limit: Limit,
    offset: u64,
}

impl Page {
    /// Validates a page (`limit` in `1..=MAX_LIMIT`, `offset` in `0..=MAX_OFFSET`).
    pub fn new(limit: i64, offset: i64) -> Result<Self> {
        let limit = Limit::new(limit)?;
        if !(0..=MAX_OFFSET as i64).contains(&offset) {
            return Err(Error::validation(
                "offset",
                Rule::OutOfRange {
                    min: 0,
                    max: MAX_OFFSET as i64,
                },
            ));
        }
        Ok(Self {
            limit,
            offset: offset as u64,
        })
    }

    /// The first `limit` rows.
    pub fn first(limit: Limit) -> Self {
        Self { limit, offset: 0 }
    }

    /// The page size.
    pub const fn limit(self) -> Limit {
        self.limit
    }

    /// How many rows to skip.
    pub const fn offset(self) -> u64 {
        self.offset
    }
}

/// A position in the `(created_at, id)` order: a keyset page starts right after it.
///
/// Its text form (`Display` / [`Cursor::parse`]) is opaque to clients and safe in a URL.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    created_at: Timestamp,
    id: Uuid,
}

impl Cursor {
    /// The cursor just after a row with this creation time and id. A time no backend stores
    /// (outside the years 1 to 9999) is a validation error on `cursor`.
    pub fn new(created_at: Timestamp, id: Uuid) -> Result<Self> {
        let created_at = time::supported("cursor", created_at)?;
        Ok(Self { created_at, id })
    }

    /// The cursor after a stored row, whose time is in range by construction.
    pub(crate) fn after_row(created_at: Timestamp, id: Uuid) -> Self {
        Self { created_at, id }
    }

    /// Parses the text form; anything else is a validation error on `cursor`: malformed text, or
    /// a position whose time no backend stores (outside the years 1 to 9999, see
    /// [`time::supported`]).
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = || {
            Error::validation(
                "cursor",
                Rule::Malformed {
                    expected: "a cursor returned by a previous page",
                },
            )
        };
        let (micros, id) = text.split_once('.').ok_or_else(malformed)?;
        let micros: i64 = micros.parse().map_err(|_| malformed())?;
        let created_at = crate::adapter::from_micros(micros).ok_or_else(malformed)?;
        let created_at = time::supported("cursor", created_at)?;
        let id = Uuid::try_parse(id).map_err(|_| malformed())?;
        Ok(Self { created_at, id })
    }

    /// The creation time of the row the cursor points after.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The id of the row the cursor points after.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            crate::adapter::to_micros(self.created_at),
            self.id.simple()
        )
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({self})")
    }
}

/// A keyset page: the rows, and the cursor of the next page if there are more rows.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct KeysetPage<E> {
    /// The rows, in `(created_at, id)` order, at most the limit asked for.
    pub items: Vec<E>,
    /// Where the next page starts (pass it as `after`); `None` when no row follows the last
    /// one. With the `serde` feature it serializes as the cursor's opaque string.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_cursor"))]
    pub next: Option<Cursor>,
}

#[cfg(feature = "serde")]
fn serialize_cursor<S: serde::Serializer>(c: &Option<Cursor>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
    }
}

/// A search page: the rows of the page and how many rows match in all.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SearchPage<E> {
    /// The rows of the requested page, at most its limit.
    pub items: Vec<E>,
    /// How many live rows match the query in all, on every page (not only this one): exact up
    /// to [`MAX_EXACT_TOTAL`], a lower bound beyond.
    pub total: Total,
}

/// How many rows a search matches in all.
///
/// Counting every match of a common term in a large catalogue costs more than finding the page
/// (176,050 matches of a word among a million products took 227 ms to 376 ms to count, the page
/// alone a few), so a search counts up to [`MAX_EXACT_TOTAL`] and says which it is. Every
/// backend gives the same answer for the same rows.
///
/// ```
/// use stockroom_core::{Total, MAX_EXACT_TOTAL};
///
/// assert_eq!(Total::counted(12, 0, 12), Total::Exact(12));
/// // More matches than the bound: at least the bound, or the rows up to this page's end.
/// assert_eq!(Total::counted(MAX_EXACT_TOTAL + 1, 0, 20), Total::AtLeast(MAX_EXACT_TOTAL));
/// assert_eq!(Total::counted(MAX_EXACT_TOTAL + 1, 20_000, 20).count(), 20_020);
/// assert_eq!(Total::counted(MAX_EXACT_TOTAL + 1, 20_000, 0).count(), MAX_EXACT_TOTAL);
/// assert_eq!(Total::AtLeast(10_000).to_string(), "10000+");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(into = "TotalJson"))]
pub enum Total {
    /// Exactly this many rows match: at most [`MAX_EXACT_TOTAL`].
    Exact(u64),
    /// At least this many rows match: more than [`MAX_EXACT_TOTAL`] do, and this is
    /// [`MAX_EXACT_TOTAL`] or, on a page with rows beyond it, the rows up to the page's end.
    AtLeast(u64),
}

impl Total {
    /// The total of a page of `on_page` rows at `offset` when `counted` rows were counted with
    /// the count stopping after `MAX_EXACT_TOTAL + 1` (what every adapter does).
    pub fn counted(counted: u64, offset: u64, on_page: usize) -> Self {
        if counted > MAX_EXACT_TOTAL {
            // A page with rows proves that many up to its end; an empty one proves nothing.
            let page_end = match on_page {
                0 => 0,
                n => offset.saturating_add(n as u64),
            };
            Total::AtLeast(MAX_EXACT_TOTAL.max(page_end))
        } else {
            Total::Exact(counted)
        }
    }

    /// The number: exact, or the lower bound.
    pub fn count(self) -> u64 {
        match self {
            Total::Exact(n) | Total::AtLeast(n) => n,
        }
    }

    /// Whether [`count`](Self::count) is the exact number of matches.
    pub fn is_exact(self) -> bool {
        matches!(self, Total::Exact(_))
    }
}

/// `12` when exact, `10000+` when a lower bound.
impl fmt::Display for Total {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Total::Exact(n) => write!(f, "{n}"),
            Total::AtLeast(n) => write!(f, "{n}+"),
        }
    }
}

/// How a [`Total`] serializes: `{"count": 10000, "exact": false}`.
#[cfg(feature = "serde")]
#[derive(serde::Serialize)]
struct TotalJson {
    count: u64,
    exact: bool,
}

#[cfg(feature = "serde")]
impl From<Total> for TotalJson {
    fn from(total: Total) -> Self {
        TotalJson {
            count: total.count(),
            exact: total.is_exact(),
        }
    }
}

/// A search query: case-insensitive, matched as a literal substring (`%` and `_` are ordinary
/// characters).
///
/// Matching happens on folded text: [`fold`] applied to both the query and the searched text, so
/// every backend gives the same rows for the same query, non-ASCII letters included.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SearchText {
    folded: String,
}

impl SearchText {
    /// Validates `query` as the field `q`: at least one visible character, at most 200
    /// characters, no control or bidirectional-override characters.
    pub fn new(query: &str) -> Result<Self> {
        if query.chars().any(|c| c.is_control() || is_bidi_control(c)) {
            return Err(Error::validation("q", Rule::ControlCharacter));
        }
        if !query.chars().any(is_visible) {
            return Err(Error::validation("q", Rule::Empty));
        }
        if query.chars().count() > MAX_QUERY_LEN {
            return Err(Error::validation("q", Rule::TooLong { max: MAX_QUERY_LEN }));
        }
        Ok(Self {
            folded: fold(query),
        })
    }

    /// The folded query.
    pub fn folded(&self) -> &str {
        &self.folded
    }

    /// Whether a document made by [`search_document`] contains the query.
    pub fn matches(&self, document: &str) -> bool {
        document.contains(&self.folded)
    }
}

impl fmt::Debug for SearchText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SearchText({:?})", self.folded)
    }
}

/// The folding search matches on, the same on every backend: Unicode canonical caseless matching
/// (Unicode 15, §3.13): canonical decomposition (NFD), full case folding, then canonical
/// composition (NFC) of the result.
///
/// So "STRASSE" finds "Straße" (ß folds to "ss"), "ΟΔΟΣ" finds "οδος" and "οδοσ" (final sigma
/// folds to σ), and an "é" typed as "e" + U+0301 finds a precomposed "é" and the other way
/// round. It is not accent-insensitive ("e" does not find "é") and not compatibility folding
/// ("ﬁ" does not find "fi").
///
/// ```
/// use stockroom_core::adapter::fold;
/// assert_eq!(fold("Straße"), fold("STRASSE"));
/// assert_eq!(fold("ΟΔΟΣ"), fold("οδος"));
/// assert_eq!(fold("e\u{301}"), fold("\u{e9}"));
/// assert_ne!(fold("e"), fold("é"));
/// ```
pub fn fold(text: &str) -> String {
    use icu_casemap::CaseMapper;
    use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};

    const NFD: DecomposingNormalizerBorrowed<'static> = DecomposingNormalizerBorrowed::new_nfd();
    const NFC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfc();
    let decomposed = NFD.normalize(text);
    let folded = CaseMapper::new().fold_string(&decomposed);
    NFC.normalize(&folded).into_owned()
}

/// Which [`fold`] the SQL adapters' stored search documents were made with. A document made
/// with an older version is made again (the adapters re-fold such rows when they migrate).
pub const FOLD_VERSION: i32 = 2;

/// The searchable text of a product: its name, sku and description, folded, one per line. SQL
/// adapters store it in a column at write time so their search is a plain `LIKE`.
pub fn search_document(name: &str, sku: &str, description: Option<&str>) -> String {
    let mut doc = fold(name);
    doc.push('\n');
    doc.push_str(&fold(sku));
    if let Some(d) = description {
        doc.push('\n');
        doc.push_str(&fold(d));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_through_text() {
        let c = Cursor::new(time::now(), Uuid::now_v7()).unwrap();
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        assert!(Cursor::parse("nonsense").is_err());
    }

    #[test]
    fn a_cursor_outside_the_stored_years_is_refused() {
        let id = Uuid::now_v7();
        for micros in [-8_000_000_000_000_000_000_i64, i64::MIN, i64::MAX] {
            let parsed = Cursor::parse(&format!("{micros}.{}", id.simple()));
            assert!(
                matches!(
                    parsed,
                    Err(Error::Validation {
                        field: "cursor",
                        ..
                    })
                ),
                "{micros}: {parsed:?}"
            );
        }
        let year_minus_7500 =
            crate::adapter::to_micros(time::MIN) - 7_501 * 365 * 86_400 * 1_000_000;
        assert!(Cursor::parse(&format!("{year_minus_7500}.{}", id.simple())).is_err());
        assert!(Cursor::new(chrono::DateTime::<chrono::Utc>::MIN_UTC, id).is_err());
    }

    #[test]
    fn search_matches_what_a_reader_calls_the_same_text() {
        let doc = search_document("Straße ΟΔΟΣ Cafe\u{301}", "S-1", None);
        for query in [
            "STRASSE",
            "strasse",
            "οδοσ",
            "οδος",
            "ΟΔΟΣ",
            "café",
            "CAFE\u{301}",
        ] {
            assert!(SearchText::new(query).unwrap().matches(&doc), "{query}");
        }
        assert!(!SearchText::new("cafe ").unwrap().matches(&doc));
    }

    #[test]
    fn search_folds_non_ascii() {
        let q = SearchText::new("ÉCLAIR").unwrap();
        assert!(q.matches(&search_document("Chocolate éclair", "EC-1", None)));
    }

    #[test]
    fn limits_are_bounded() {
        assert!(Limit::new(0).is_err());
        assert!(Limit::new(1_001).is_err());
        assert!(Page::new(10, -1).is_err());
    }
}

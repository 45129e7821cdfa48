//! The bad-input catalogue: every validation rule of the core. Validation happens when the input
//! is built, so each case builds the bad input, checks that the error names the field and the
//! rule, and checks that the store holds exactly what it held before (nothing written).

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use stockroom_core::{
    Category, CategoryPatch, Cursor, Limit, NewCategory, NewProduct, NewReview, NewUser, Page,
    Product, ProductFilter, ProductId, ProductPatch, ProductStatus, ReadRepo, Readers,
    ReviewFilter, ReviewPatch, Rule, SearchText, StockDelta, StockMovementReader, Store, User,
    UserId, UserPatch, MAX_LIMIT, MAX_OFFSET, MAX_STOCK,
};

use crate::support::*;

const SLUG_SHAPE: Rule = Rule::Malformed {
    expected: "lower-case letters and digits joined by single hyphens",
};
const SKU_SHAPE: Rule = Rule::Malformed {
    expected: "upper-case letters, digits, '-', '_' or '.', starting with a letter or digit",
};
const EMAIL_SHAPE: Rule = Rule::Malformed {
    expected: "an email address",
};
const CURSOR_SHAPE: Rule = Rule::Malformed {
    expected: "a cursor returned by a previous page",
};

/// Seeds one row of each kind, so "nothing written" is checked against a non-empty store.
async fn seeded(store: &Arc<dyn Store>) -> Counts {
    let cat = create_category(store, "seed").await;
    let user = create_user(store, "seed").await;
    let p = create_product(
        store,
        new_product("seed", 5)
            .with_category_id(cat.id)
            .with_created_by(user.id),
    )
    .await;
    let review = NewReview::new(p.id, user.id, 3).unwrap();
    in_uow!(store, |uow| uow.reviews().create(review).await).unwrap();
    counts(store).await
}

/// Product names: empty or blank, over 200 characters, control characters (NUL, line break) are
/// refused on `name`; 200 non-ASCII characters and surrounding blanks (trimmed) are accepted.
pub async fn product_name_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    let long = "x".repeat(201);
    for (name, rule) in [
        ("", Rule::Empty),
        ("   ", Rule::Empty),
        (long.as_str(), Rule::TooLong { max: 200 }),
        ("a\0b", Rule::ControlCharacter),
        ("a\nb", Rule::ControlCharacter),
    ] {
        expect_validation(
            NewProduct::new(name, "ok-slug", "OK-SKU"),
            "name",
            rule.clone(),
        );
        expect_validation(ProductPatch::new().with_name(name), "name", rule);
    }
    assert_eq!(counts(&store).await, before, "store changed");
    let longest = "é".repeat(200);
    let p = create_product(
        &store,
        NewProduct::new(&format!("  {longest} "), "ok-slug", "OK-SKU").unwrap(),
    )
    .await;
    assert_eq!(p.name, longest, "a 200-character name is stored trimmed");
}

/// Slugs: upper case, double, leading or trailing hyphens, spaces, underscores and non-ASCII are
/// malformed; empty, over 100 characters and NUL are refused too; for products, categories,
/// patches and filters alike.
pub async fn slug_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for bad in ["Blue", "a--b", "-a", "a-", "a b", "a_b", "ü", "mug!"] {
        expect_validation(NewProduct::new("Mug", bad, "MUG"), "slug", SLUG_SHAPE);
        expect_validation(NewCategory::new("Mugs", bad), "slug", SLUG_SHAPE);
        expect_validation(ProductPatch::new().with_slug(bad), "slug", SLUG_SHAPE);
        expect_validation(CategoryPatch::new().with_slug(bad), "slug", SLUG_SHAPE);
        expect_validation(
            stockroom_core::CategoryFilter::default().with_slug(bad),
            "slug",
            SLUG_SHAPE,
        );
    }
    expect_validation(NewProduct::new("Mug", "", "MUG"), "slug", Rule::Empty);
    expect_validation(
        NewProduct::new("Mug", &"a".repeat(101), "MUG"),
        "slug",
        Rule::TooLong { max: 100 },
    );
    expect_validation(
        NewProduct::new("Mug", "a\0b", "MUG"),
        "slug",
        Rule::ControlCharacter,
    );
    assert_eq!(counts(&store).await, before, "store changed");
    create_product(
        &store,
        NewProduct::new("Mug", &"a".repeat(100), "MUG").unwrap(),
    )
    .await;
}

/// Skus: lower case, a leading punctuation mark, spaces and non-ASCII are malformed; empty, over
/// 64 characters and NUL are refused.
pub async fn sku_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for bad in ["mug", "-MUG", ".MUG", "MUG 1", "MÜG", "MUG/1"] {
        expect_validation(NewProduct::new("Mug", "mug", bad), "sku", SKU_SHAPE);
        expect_validation(ProductPatch::new().with_sku(bad), "sku", SKU_SHAPE);
    }
    expect_validation(NewProduct::new("Mug", "mug", ""), "sku", Rule::Empty);
    expect_validation(
        NewProduct::new("Mug", "mug", &"M".repeat(65)),
        "sku",
        Rule::TooLong { max: 64 },
    );
    expect_validation(
        NewProduct::new("Mug", "mug", "M\0G"),
        "sku",
        Rule::ControlCharacter,
    );
    assert_eq!(counts(&store).await, before, "store changed");
    create_product(
        &store,
        NewProduct::new("Mug", "mug", &format!("9{}", "A._-".repeat(15))).unwrap(),
    )
    .await;
}

/// Descriptions and review bodies: over 5,000 characters or with NUL are refused; line breaks
/// and tabs are allowed.
pub async fn text_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    let long = "x".repeat(5_001);
    let base = || NewProduct::new("Mug", "mug", "MUG").unwrap();
    expect_validation(
        base().with_description(&long),
        "description",
        Rule::TooLong { max: 5_000 },
    );
    expect_validation(
        base().with_description("a\0b"),
        "description",
        Rule::ControlCharacter,
    );
    expect_validation(
        ProductPatch::new().with_description(Some("a\u{7}b")),
        "description",
        Rule::ControlCharacter,
    );
    let review = || NewReview::new(ProductId::new(), UserId::new(), 3).unwrap();
    expect_validation(
        review().with_body(&long),
        "body",
        Rule::TooLong { max: 5_000 },
    );
    expect_validation(review().with_body("a\0b"), "body", Rule::ControlCharacter);
    expect_validation(
        ReviewPatch::new().with_body(Some("\0")),
        "body",
        Rule::ControlCharacter,
    );
    assert_eq!(counts(&store).await, before, "store changed");
    let ok = base().with_description("line one\n\tline two\r\n").unwrap();
    let p = create_product(&store, ok).await;
    assert_eq!(
        p.description.as_deref(),
        Some("line one\n\tline two\r\n"),
        "description round trip"
    );
}

/// Stock: negative or above `MAX_STOCK` is `OutOfRange{0, MAX_STOCK}` on `stock`; 0 and
/// `MAX_STOCK` are accepted.
pub async fn stock_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for bad in [-1, -1_000, MAX_STOCK + 1, i64::MIN, i64::MAX] {
        expect_validation(
            NewProduct::new("Mug", "mug", "MUG")
                .unwrap()
                .with_stock(bad),
            "stock",
            Rule::OutOfRange {
                min: 0,
                max: MAX_STOCK,
            },
        );
    }
    assert_eq!(counts(&store).await, before, "store changed");
    let p = create_product(
        &store,
        NewProduct::new("Mug", "mug", "MUG")
            .unwrap()
            .with_stock(MAX_STOCK)
            .unwrap(),
    )
    .await;
    assert_eq!(p.stock, MAX_STOCK, "largest stock round trip");
}

/// Stock deltas: zero is `Malformed` on `delta`, beyond `±MAX_STOCK` is `OutOfRange` on
/// `delta`.
pub async fn stock_delta_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    expect_validation(
        StockDelta::new(0),
        "delta",
        Rule::Malformed {
            expected: "a non-zero change",
        },
    );
    for bad in [MAX_STOCK + 1, -MAX_STOCK - 1, i64::MIN] {
        expect_validation(
            StockDelta::new(bad),
            "delta",
            Rule::OutOfRange {
                min: -MAX_STOCK,
                max: MAX_STOCK,
            },
        );
    }
    assert_eq!(counts(&store).await, before, "store changed");
}

/// Emails: without `@`, without a dotted domain, with an empty local part, with spaces, with a
/// dot at either end of the domain or two `@` are malformed; empty and over 254 characters are
/// refused; display names follow the name rules.
pub async fn email_and_display_name_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for bad in [
        "ann",
        "ann@localhost",
        "@example.com",
        "a b@example.com",
        "ann@.com",
        "ann@example.",
        "a@b@c.com",
    ] {
        expect_validation(NewUser::new(bad, "Ann"), "email", EMAIL_SHAPE);
        expect_validation(UserPatch::new().with_email(bad), "email", EMAIL_SHAPE);
        expect_validation(
            stockroom_core::UserFilter::default().with_email(bad),
            "email",
            EMAIL_SHAPE,
        );
    }
    expect_validation(NewUser::new("", "Ann"), "email", Rule::Empty);
    let long = format!("{}@example.com", "a".repeat(243));
    expect_validation(
        NewUser::new(&long, "Ann"),
        "email",
        Rule::TooLong { max: 254 },
    );
    expect_validation(
        NewUser::new("ann@example.com", " "),
        "display_name",
        Rule::Empty,
    );
    expect_validation(
        UserPatch::new().with_display_name("a\0"),
        "display_name",
        Rule::ControlCharacter,
    );
    assert_eq!(counts(&store).await, before, "store changed");
}

/// Ratings outside 1..=5 (0, 6, negative) are `OutOfRange{1, 5}` on `rating`, for new reviews,
/// patches and filters.
pub async fn rating_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for bad in [0, 6, -1, 100] {
        let rule = Rule::OutOfRange { min: 1, max: 5 };
        expect_validation(
            NewReview::new(ProductId::new(), UserId::new(), bad),
            "rating",
            rule.clone(),
        );
        expect_validation(ReviewPatch::new().with_rating(bad), "rating", rule.clone());
        expect_validation(ReviewFilter::default().with_rating(bad), "rating", rule);
    }
    assert_eq!(counts(&store).await, before, "store changed");
}

/// Category names follow the name rules on `name`.
pub async fn category_name_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    expect_validation(NewCategory::new("", "ok"), "name", Rule::Empty);
    expect_validation(
        NewCategory::new(&"c".repeat(201), "ok"),
        "name",
        Rule::TooLong { max: 200 },
    );
    expect_validation(
        CategoryPatch::new().with_name("\0"),
        "name",
        Rule::ControlCharacter,
    );
    assert_eq!(counts(&store).await, before, "store changed");
}

/// Page limits 0, 1001 and negative are `OutOfRange{1, 1000}` on `limit`; offsets below 0 or
/// above `MAX_OFFSET` are refused on `offset`; limits 1 and 1000 work.
pub async fn page_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    let limit_rule = Rule::OutOfRange {
        min: 1,
        max: i64::from(MAX_LIMIT),
    };
    for bad in [0, 1_001, -1, i64::MAX] {
        expect_validation(Limit::new(bad), "limit", limit_rule.clone());
        expect_validation(Page::new(bad, 0), "limit", limit_rule.clone());
    }
    let offset_rule = Rule::OutOfRange {
        min: 0,
        max: MAX_OFFSET as i64,
    };
    expect_validation(Page::new(10, -1), "offset", offset_rule.clone());
    expect_validation(Page::new(10, MAX_OFFSET as i64 + 1), "offset", offset_rule);
    assert_eq!(counts(&store).await, before, "store changed");
    for limit in [1, 1_000] {
        let rows = in_read!(store, |r| r
            .products()
            .list(&ProductFilter::default(), Page::new(limit, 0).unwrap())
            .await)
        .unwrap();
        assert_eq!(rows.len(), 1, "limit {limit} on a store with one product");
    }
}

/// Cursors that were not printed by a page are `Malformed` on `cursor`.
pub async fn cursor_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    let uuid = uuid::Uuid::now_v7().simple().to_string();
    for bad in [
        String::new(),
        "nonsense".to_owned(),
        "123".to_owned(),
        "abc.def".to_owned(),
        "1.not-a-uuid".to_owned(),
        format!("x1.{uuid}"),
        format!("99999999999999999999.{uuid}"),
        format!("{}.{uuid}", i64::MAX),
    ] {
        expect_validation(Cursor::parse(&bad), "cursor", CURSOR_SHAPE);
    }
    assert_eq!(counts(&store).await, before, "store changed");
}

/// Search queries: empty or blank are `Empty`, over 200 characters `TooLong{200}`, control
/// characters refused, all on `q`; 200 characters are accepted.
pub async fn search_query_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for (q, rule) in [
        (String::new(), Rule::Empty),
        ("  ".to_owned(), Rule::Empty),
        ("q".repeat(201), Rule::TooLong { max: 200 }),
        ("mug\0".to_owned(), Rule::ControlCharacter),
        ("a\nb".to_owned(), Rule::ControlCharacter),
    ] {
        expect_validation(SearchText::new(&q), "q", rule.clone());
        expect_validation(ProductFilter::default().with_search(&q), "q", rule);
    }
    assert_eq!(counts(&store).await, before, "store changed");
    let filter = ProductFilter::default()
        .with_search(&"é".repeat(200))
        .unwrap();
    let page = in_read!(store, |r| r.products().search(&filter, all()).await).unwrap();
    assert_eq!(
        exact(page.total),
        0,
        "a 200-character query runs and finds nothing"
    );
}

/// Statuses and ids parsed from text: an unknown status is `Malformed` on `status`, a bad UUID
/// `Malformed` on `id`.
pub async fn status_and_id_parsing_rules(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for bad in ["deleted", "Active", ""] {
        expect_malformed(ProductStatus::from_str(bad), "status");
    }
    for bad in ["", "42", "not-a-uuid", "0190b5e6-7c3a-7d1e-9a1b"] {
        expect_malformed(ProductId::from_str(bad), "id");
    }
    assert_eq!(
        ProductStatus::from_str("archived").unwrap(),
        ProductStatus::Archived
    );
    assert_eq!(counts(&store).await, before, "store changed");
}

/// Names, descriptions and review bodies need a visible character: text made only of white
/// space and invisible characters (U+200B zero width space, U+200D joiner, U+FEFF, U+3164 Hangul
/// filler, a soft hyphen) is `Empty`, on every field that holds a name or free text; invisible
/// characters inside visible text are kept as given.
pub async fn names_and_texts_need_a_visible_character(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    let base = || NewProduct::new("Mug", "mug", "MUG").unwrap();
    let review = || NewReview::new(ProductId::new(), UserId::new(), 3).unwrap();
    for invisible in [
        "\u{200B}",
        " \u{200B}\u{200D} ",
        "\u{FEFF}",
        "\u{3164}",
        "\u{AD}",
    ] {
        expect_validation(
            NewProduct::new(invisible, "mug", "MUG"),
            "name",
            Rule::Empty,
        );
        expect_validation(
            ProductPatch::new().with_name(invisible),
            "name",
            Rule::Empty,
        );
        expect_validation(NewCategory::new(invisible, "mugs"), "name", Rule::Empty);
        expect_validation(
            NewUser::new("ann@example.com", invisible),
            "display_name",
            Rule::Empty,
        );
        expect_validation(
            base().with_description(invisible),
            "description",
            Rule::Empty,
        );
        expect_validation(
            ProductPatch::new().with_description(Some(invisible)),
            "description",
            Rule::Empty,
        );
        expect_validation(review().with_body(invisible), "body", Rule::Empty);
    }
    assert_eq!(counts(&store).await, before, "store changed");
    let joined = "Tea\u{200B}pot";
    let p = create_product(&store, NewProduct::new(joined, "teapot", "TEA").unwrap()).await;
    assert_eq!(
        p.name, joined,
        "a name with an invisible character inside is kept"
    );
}

/// Bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) are
/// `ControlCharacter` in names, free text and search queries; the right-to-left mark (U+200F),
/// which right-to-left text needs, is accepted.
pub async fn bidirectional_overrides_are_refused(store: Arc<dyn Store>) {
    let before = seeded(&store).await;
    for c in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
        let text = format!("Mug{c}gnp.exe");
        expect_validation(
            NewProduct::new(&text, "mug", "MUG"),
            "name",
            Rule::ControlCharacter,
        );
        expect_validation(
            NewProduct::new("Mug", "mug", "MUG")
                .unwrap()
                .with_description(&text),
            "description",
            Rule::ControlCharacter,
        );
        expect_validation(
            NewReview::new(ProductId::new(), UserId::new(), 3)
                .unwrap()
                .with_body(&text),
            "body",
            Rule::ControlCharacter,
        );
        expect_validation(SearchText::new(&text), "q", Rule::ControlCharacter);
    }
    assert_eq!(counts(&store).await, before, "store changed");
    let hebrew = "\u{200F}כוס";
    let p = create_product(&store, NewProduct::new(hebrew, "cup", "CUP").unwrap()).await;
    assert_eq!(p.name, hebrew);
}

/// A keyset cursor names a position every backend can store: one whose time is outside the
/// years 1 to 9999 (a year like -7500, micros of -8e18, the ends of `i64`) is a validation error
/// on `cursor` when parsed or built, before any backend sees it.
pub async fn cursor_outside_the_stored_years_is_refused(store: Arc<dyn Store>) {
    let id = uuid::Uuid::now_v7().simple();
    let year_minus_7500: i64 = -298_800_000_000_000_000;
    for micros in [
        year_minus_7500,
        -8_000_000_000_000_000_000,
        i64::MIN,
        i64::MAX,
    ] {
        let parsed = Cursor::parse(&format!("{micros}.{id}"));
        assert!(
            matches!(
                parsed,
                Err(stockroom_core::Error::Validation {
                    field: "cursor",
                    ..
                })
            ),
            "cursor at {micros} µs: {parsed:?}"
        );
    }
    for extreme in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
        let built = Cursor::new(extreme, uuid::Uuid::now_v7());
        assert!(built.is_err(), "cursor at {extreme}: {built:?}");
    }
    // The ends of the range are valid, and every backend answers them (with nothing before the
    // first and everything after it).
    create_product(&store, new_product("a", 1)).await;
    let limit = Limit::new(10).unwrap();
    let first = Cursor::new(stockroom_core::time::MIN, uuid::Uuid::nil()).unwrap();
    let last = Cursor::new(stockroom_core::time::MAX, uuid::Uuid::max()).unwrap();
    let filter = ProductFilter::default();
    let mut r = store.read().await.unwrap();
    let after_first = r.products().list_after(&filter, Some(first), limit).await;
    let after_last = r.products().list_after(&filter, Some(last), limit).await;
    assert_eq!(after_first.unwrap().items.len(), 1, "rows after year 1");
    assert_eq!(after_last.unwrap().items.len(), 0, "rows after year 9999");
}

/// The bound of a purge is a time every backend can store: one outside the years 1 to 9999 is a
/// validation error on `before` and purges nothing.
pub async fn purge_bound_outside_the_stored_years_is_refused(store: Arc<dyn Store>) {
    let p = create_product(&store, new_product("a", 1)).await;
    assert!(soft_delete_product(&store, p.id).await);
    for extreme in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
        let purged = in_uow!(store, |uow| uow
            .products()
            .purge_deleted_before(extreme)
            .await);
        match purged {
            Err(stockroom_core::Error::Validation {
                field: "before", ..
            }) => {}
            other => panic!("purge before {extreme}: expected Validation on before, got {other:?}"),
        }
    }
    assert!(
        trashed_product(&store, p.id).await.is_some(),
        "a refused purge removed a row"
    );
}

/// A lookup by a unique text (`by_slug`, `by_sku`, `by_email`, `by_idempotency_key`) whose
/// argument holds a NUL byte finds nothing (`Ok(None)`), in a read session and in a unit of
/// work: no stored value can hold one, since inputs refuse control characters. It is an answer
/// like any other miss, not a backend error.
pub async fn lookups_with_a_nul_byte_find_nothing(store: Arc<dyn Store>) {
    create_category(&store, "kitchen").await;
    create_user(&store, "ann").await;
    create_product(&store, new_product("mug", 5)).await;
    let mut read = store.read().await.expect("open a read session");
    nul_lookups_find_nothing("read session", read.readers()).await;
    let mut uow = store.begin().await.expect("begin a unit of work");
    nul_lookups_find_nothing("unit of work", uow.repositories()).await;
    uow.rollback().await.expect("roll back");
}

/// The generic reads of a session's readers.
fn records(readers: &mut dyn Readers) -> &mut dyn stockroom_core::schema::RecordReader {
    readers
}

/// The product reader of a session's readers.
fn products(readers: &mut dyn Readers) -> ReadRepo<'_, Product> {
    ReadRepo::new(records(readers))
}

/// The lookups of [`lookups_with_a_nul_byte_find_nothing`] on one session's readers.
async fn nul_lookups_find_nothing(session: &str, readers: &mut dyn Readers) {
    let miss = |found: &stockroom_core::Result<bool>| matches!(found, Ok(false));
    for nul in ["\0", "product-mug\0", "product\0mug"] {
        let found = products(readers).by_slug(nul).await.map(|p| p.is_some());
        assert!(
            miss(&found),
            "{session}: product by_slug({nul:?}): {found:?}"
        );
    }
    for nul in ["\0", "kitchen\0", "kit\0chen"] {
        let found = ReadRepo::<Category>::new(records(readers))
            .by_slug(nul)
            .await
            .map(|c| c.is_some());
        assert!(
            miss(&found),
            "{session}: category by_slug({nul:?}): {found:?}"
        );
    }
    for nul in ["\0", "SKU-MUG\0", "SKU\0MUG"] {
        let found = products(readers).by_sku(nul).await.map(|p| p.is_some());
        assert!(miss(&found), "{session}: by_sku({nul:?}): {found:?}");
    }
    for nul in ["\0", "ann@example.com\0", "ann\0@example.com"] {
        let found = ReadRepo::<User>::new(records(readers))
            .by_email(nul)
            .await
            .map(|u| u.is_some());
        assert!(miss(&found), "{session}: by_email({nul:?}): {found:?}");
    }
    let found = StockMovementReader::by_idempotency_key(readers, "key\0")
        .await
        .map(|m| m.is_some());
    assert!(miss(&found), "{session}: by_idempotency_key: {found:?}");
    // The same session still finds what is there.
    let found = products(readers).by_slug("product-mug").await;
    assert!(matches!(found, Ok(Some(_))), "{session}: {found:?}");
}

/// This module's cases, in the order they run: the suite runs exactly these, and the
/// conformance crate's own tests fail if a public case of this module is missing here.
#[doc(hidden)]
#[macro_export]
macro_rules! __stockroom_validation_cases {
    ($($request:tt)*) => { $crate::__stockroom_cases_of! { ($($request)*) validation:
        product_name_rules,
        slug_rules,
        sku_rules,
        text_rules,
        stock_rules,
        stock_delta_rules,
        email_and_display_name_rules,
        rating_rules,
        category_name_rules,
        page_rules,
        cursor_rules,
        search_query_rules,
        status_and_id_parsing_rules,
        names_and_texts_need_a_visible_character,
        bidirectional_overrides_are_refused,
        cursor_outside_the_stored_years_is_refused,
        purge_bound_outside_the_stored_years_is_refused,
        lookups_with_a_nul_byte_find_nothing,
    } };
}

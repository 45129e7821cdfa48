//! Timestamps at microsecond precision: what PostgreSQL's `timestamptz` keeps, so that every
//! backend round-trips a timestamp to the identical value.
//!
//! Every backend stores the years 1 to 9999 ([`MIN`] to [`MAX`]); a timestamp a caller hands
//! over (a cursor, the bound of a purge) outside that range is a validation error on every
//! backend, before any backend sees it.

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};

use crate::error::{Error, Result, Rule};

/// A UTC instant.
pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to whole microseconds.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// The earliest instant every backend stores: 0001-01-01T00:00:00Z.
pub const MIN: Timestamp = NaiveDate::from_ymd_opt(1, 1, 1)
    .expect("a valid date")
    .and_hms_opt(0, 0, 0)
    .expect("a valid time")
    .and_utc();

/// The latest instant every backend stores: 9999-12-31T23:59:59.999999Z.
pub const MAX: Timestamp = NaiveDate::from_ymd_opt(9999, 12, 31)
    .expect("a valid date")
    .and_hms_micro_opt(23, 59, 59, 999_999)
    .expect("a valid time")
    .and_utc();

/// `ts` if every backend can store it ([`MIN`]`..=`[`MAX`]), else a validation error on `field`
/// ([`Rule::OutOfRange`] in microseconds since the Unix epoch).
pub fn supported(field: &'static str, ts: Timestamp) -> Result<Timestamp> {
    if (MIN..=MAX).contains(&ts) {
        Ok(ts)
    } else {
        Err(Error::validation(
            field,
            Rule::OutOfRange {
                min: crate::adapter::to_micros(MIN),
                max: crate::adapter::to_micros(MAX),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_has_no_sub_microsecond_digits() {
        let ts = now();
        assert_eq!(ts.timestamp_subsec_nanos() % 1_000, 0, "{ts:?}");
    }

    #[test]
    fn the_supported_range_is_years_1_to_9999() {
        assert_eq!(MIN.to_rfc3339(), "0001-01-01T00:00:00+00:00");
        assert_eq!(
            MAX.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "9999-12-31T23:59:59.999999Z"
        );
        assert!(supported("at", MIN).is_ok() && supported("at", MAX).is_ok());
        let before = MIN - chrono::Duration::microseconds(1);
        assert!(matches!(
            supported("at", before),
            Err(Error::Validation { field: "at", .. })
        ));
        assert!(supported("at", DateTime::<Utc>::MAX_UTC).is_err());
    }
}

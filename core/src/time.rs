//! Timestamps at microsecond precision: what PostgreSQL's `timestamptz` keeps, so that every
//! backend round-trips a timestamp to the identical value.

use chrono::{DateTime, SubsecRound, TimeZone, Utc};

/// A UTC instant.
pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to whole microseconds.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// Microseconds since the Unix epoch: the form the SQLite adapter stores and cursors carry.
pub fn to_micros(ts: Timestamp) -> i64 {
    ts.timestamp_micros()
}

/// The instant `micros` microseconds after the Unix epoch, if representable.
pub fn from_micros(micros: i64) -> Option<Timestamp> {
    Utc.timestamp_micros(micros).single()
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
    fn micros_round_trip() {
        let ts = now();
        assert_eq!(from_micros(to_micros(ts)), Some(ts));
    }
}

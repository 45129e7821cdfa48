//! The toolkit for writing a storage backend: what the adapter crates share beyond the ports.
//!
//! Applications do not need this module (the `stockroom` facade does not re-export it); it is
//! public so that the adapter crates, and a third-party backend, keep the rules every backend
//! shares in one place instead of restating them: the savepoint bookkeeping, the search folding
//! and document format, the keyset page built from one extra row, the checks around a stock move and the timestamp encoding.
//!
//! It follows the ports' semantics but not their stability promise: it may change in a minor
//! release, together with the adapter crates.

use chrono::{TimeZone, Utc};

pub use crate::config::redact_url;
pub use crate::ports::{
    check_move, check_stocks, key_taken_meanwhile, move_stock_in_own_unit_of_work,
    move_stock_with_repositories, native_read_session, native_unit_of_work, Savepoints,
};
pub use crate::query::{fold, search_document, FOLD_VERSION};
pub use crate::usecases::deadline::{deadline_reached, time_left, until_deadline, wait_within};

use crate::query::{KeysetPage, Limit, SearchText};
use crate::time::Timestamp;
use crate::Entity;

/// Builds a page from up to `limit + 1` rows read in `(created_at, id)` order: the extra row,
/// if present, only tells that a next page exists. Adapters read one row more than asked and
/// call this, so "is there a next page" costs no extra statement.
pub fn page_from_overfetch<E: Entity>(mut rows: Vec<E>, limit: Limit) -> KeysetPage<E> {
    let limit = limit.get() as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(Entity::cursor)
    } else {
        None
    };
    KeysetPage { items: rows, next }
}

/// A SQL `LIKE` pattern (escape character `\`) that matches the documents made by
/// [`search_document`] that contain the query.
pub fn like_pattern(query: &SearchText) -> String {
    let folded = query.folded();
    let mut pattern = String::with_capacity(folded.len() + 2);
    pattern.push('%');
    for c in folded.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The name of the ledger's unique index on idempotency keys
/// ([`Constraint::IDEMPOTENCY_KEY`](crate::Constraint::IDEMPOTENCY_KEY)) in the SQL adapters'
/// schemas. The entities' unique indexes are named by their declarations (see
/// [`Catalog::constraint_in_message`](crate::schema::Catalog::constraint_in_message)).
pub const IDEMPOTENCY_KEY_INDEX: &str = "stock_movements_idempotency_key";

/// The stock ledger's table in the SQL adapters' schemas: Stockroom's own, though no entity
/// declares it (an application's table is any other that no entity declares).
pub const LEDGER_TABLE: &str = "stock_movements";

/// The outbox's table, in metrics and spans (and its name on the SQL backends).
pub const OUTBOX_TABLE: &str = "stockroom_outbox";

/// Microseconds since the Unix epoch: the form the SQLite adapter stores and cursors carry.
pub fn to_micros(ts: Timestamp) -> i64 {
    ts.timestamp_micros()
}

/// The instant `micros` microseconds after the Unix epoch, if representable.
pub fn from_micros(micros: i64) -> Option<Timestamp> {
    Utc.timestamp_micros(micros).single()
}

/// `Err(Unsupported)` when `config` names read replicas and `backend` has none.
pub fn refuse_replicas(config: &crate::StoreConfig, backend: &'static str) -> crate::Result<()> {
    if config.replica_urls.is_empty() {
        return Ok(());
    }
    Err(crate::Error::Unsupported {
        operation: "read replicas",
        backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_the_wildcards_and_the_escape_character() {
        let query = SearchText::new("50%_off\\now").unwrap();
        assert_eq!(like_pattern(&query), "%50\\%\\_off\\\\now%");
    }

    #[test]
    fn micros_round_trip_over_the_supported_range() {
        for ts in [crate::time::MIN, crate::time::MAX, crate::time::now()] {
            assert_eq!(from_micros(to_micros(ts)), Some(ts));
        }
    }
}

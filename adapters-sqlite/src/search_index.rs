//! The substring index of a searchable entity's table: an FTS5 table with the trigram tokenizer
//! over the live rows' search documents, kept by triggers in the same statement (and so the
//! same transaction) as the row.
//!
//! Without it a search reads every row (`search_text LIKE '%…%'`): 133 ms to 274 ms among a
//! million products (`cargo bench --bench scale`). With it, a search of three characters or more
//! reads the index: the rows that contain every trigram of the query, in sequence (an FTS5
//! phrase of trigrams is a substring match). Shorter queries still read every row.
//!
//! `{table}_search` is contentless (`content=''`, it keeps no copy of the text) with
//! `contentless_delete=1`, keyed by the table's rowid, and holds live rows only:
//!
//! - an insert of a live row adds its document;
//! - an update of `search_text` or `deleted_at` that changes what the index should hold
//!   removes the old document (if the row was live) and adds the new one (if it is live); stock
//!   moves and other updates do not touch the index;
//! - a delete for good of a live row removes it.
//!
//! The documents are folded by the core already (`stockroom_core::adapter::fold`), so the
//! tokenizer is case-sensitive: it matches exactly what `LIKE` matches on the folded text.
//! `VACUUM` keeps the rowids of these tables (they have indexes; tested by
//! `a_vacuum_keeps_the_search_index_right` in `tests/sqlite.rs`).

use rusqlite::Connection;
use stockroom_core::schema::{Catalog, Schema};

/// The fewest characters a query has for the index to serve it: one trigram.
pub(crate) const MIN_INDEXED_CHARS: usize = 3;

/// The index's name for `table`.
pub(crate) fn name(table: &str) -> String {
    format!("{table}_search")
}

/// The names of the index's triggers.
fn triggers(index: &str) -> [String; 3] {
    ["insert", "update", "delete"].map(|event| format!("{index}_{event}"))
}

/// Creates the index of `table` and its triggers, and indexes the live rows already there; an
/// index or trigger of a former, incomplete one is dropped first.
pub(crate) fn create(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let index = name(table);
    for trigger in triggers(&index) {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {trigger}"))?;
    }
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {index}"))?;
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {index} USING fts5(document, content='', contentless_delete=1, \
             tokenize='trigram case_sensitive 1');
         CREATE TRIGGER {index}_insert AFTER INSERT ON {table} WHEN new.deleted_at IS NULL
         BEGIN
             INSERT INTO {index} (rowid, document) VALUES (new.rowid, new.search_text);
         END;
         CREATE TRIGGER {index}_update AFTER UPDATE OF search_text, deleted_at ON {table}
         WHEN (old.deleted_at IS NULL OR new.deleted_at IS NULL)
             AND (old.search_text IS NOT new.search_text
                  OR (old.deleted_at IS NULL) <> (new.deleted_at IS NULL))
         BEGIN
             DELETE FROM {index} WHERE rowid = old.rowid AND old.deleted_at IS NULL;
             INSERT INTO {index} (rowid, document)
                 SELECT new.rowid, new.search_text WHERE new.deleted_at IS NULL;
         END;
         CREATE TRIGGER {index}_delete AFTER DELETE ON {table} WHEN old.deleted_at IS NULL
         BEGIN
             DELETE FROM {index} WHERE rowid = old.rowid;
         END;
         INSERT INTO {index} (rowid, document)
             SELECT rowid, search_text FROM {table} WHERE deleted_at IS NULL;"
    ))
}

/// Whether `table` has its index, triggers included.
pub(crate) fn exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let index = name(table);
    let [insert, update, delete] = triggers(&index);
    let found: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE (type = 'table' AND name = ?1) \
         OR (type = 'trigger' AND tbl_name = ?2 AND name IN (?3, ?4, ?5))",
        [&index, table, &insert, &update, &delete],
        |r| r.get(0),
    )?;
    Ok(found == 4)
}

/// Per entity of `catalog`, in catalog order: whether searches of it can use its index.
pub(crate) fn present(conn: &Connection, catalog: &Catalog) -> rusqlite::Result<Vec<bool>> {
    catalog
        .entries()
        .iter()
        .map(|entry| Ok(searchable(entry.schema) && exists(conn, entry.schema.table)?))
        .collect()
}

/// Whether `schema`'s table has search documents to index.
pub(crate) fn searchable(schema: &Schema) -> bool {
    schema.search.is_some()
}

/// The FTS5 query that matches the documents containing `folded`: one phrase (a string in
/// double quotes, each `"` doubled), whose trigrams must follow one another.
pub(crate) fn phrase(folded: &str) -> String {
    let mut phrase = String::with_capacity(folded.len() + 2);
    phrase.push('"');
    for c in folded.chars() {
        if c == '"' {
            phrase.push('"');
        }
        phrase.push(c);
    }
    phrase.push('"');
    phrase
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phrase_quotes_the_query_and_doubles_its_quotes() {
        assert_eq!(phrase("blue mug"), "\"blue mug\"");
        assert_eq!(phrase("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}

//! The generic operations on the records of any declared entity, over the statements of its
//! [`Plan`]: the reads, the writes, soft delete, restore and purge, with the rules every backend
//! keeps (see `stockroom_core::schema::RecordReader`), in their order.
//!
//! Each function runs on a connection one call owns (see `conn.rs`). A write runs in a unit of
//! work, which holds SQLite's single write lock: no other connection changes a row between a
//! statement that reads it and one that writes it, so reading the rows is all "locking" them
//! needs, and a check made before a write still holds when the write runs.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use stockroom_core::adapter::like_pattern;
use stockroom_core::schema::{
    invalid, search_document, Changes, Condition, FieldType, Incremented, Order, Record, Selection,
    Start, Value,
};
use stockroom_core::time::Timestamp;
use stockroom_core::{Constraint, Error, Page, Result, SearchPage, Total, MAX_EXACT_TOTAL};
use uuid::Uuid;

use super::codec::{Param, RowReader};
use super::generic::{
    atomically, execute, page_params, placeholders, query, query_first, scalar, MAX_PARAMS,
};
use super::plan::{Plan, Plans, GET_MANY_END};
use crate::conn::Db;
use crate::search_index::{self, MIN_INDEXED_CHARS};

/// One entity's statements and the store's (the catalog, and the other entities' statements),
/// for one call.
#[derive(Clone, Copy)]
pub(crate) struct On<'p> {
    plans: &'p Plans,
    at: usize,
    plan: &'p Plan,
}

impl<'p> On<'p> {
    /// The entity at `position` of `plans`.
    pub(crate) fn new(plans: &'p Plans, position: usize) -> Self {
        Self {
            plans,
            at: position,
            plan: plans.plan(position),
        }
    }

    fn error(&self, error: rusqlite::Error) -> Error {
        self.plans.error(error)
    }

    fn not_found(&self, id: Uuid) -> Error {
        Error::not_found(self.plan.schema.kind(), id)
    }
}

// ---- Reads ---------------------------------------------------------------------------------

/// The live row `id`: the point read.
pub(crate) fn get(conn: &Db<'_>, on: On<'_>, id: Uuid) -> Result<Option<Record>> {
    query_first(conn, &on.plan.get, [Param::Id(id)], |r| on.plan.read(r, 0))
        .map_err(|e| on.error(e))
}

/// The distinct ids, in a stable order.
fn distinct_sorted(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The live rows among `ids`, each once, in the list order: one statement unless the ids exceed
/// SQLite's bound on parameters.
pub(crate) fn get_many(conn: &Db<'_>, on: On<'_>, ids: &[Uuid]) -> Result<Vec<Record>> {
    let ids = distinct_sorted(ids);
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_PARAMS) {
        let sql = format!(
            "{}{}{GET_MANY_END}",
            on.plan.get_many,
            placeholders(chunk.len())
        );
        let params: Vec<Param<'_>> = chunk.iter().map(|id| Param::Id(*id)).collect();
        rows.extend(query(conn, &sql, &params, |r| on.plan.read(r, 0)).map_err(|e| on.error(e))?);
    }
    if ids.len() > MAX_PARAMS {
        rows.sort_by_key(|r| (r.created_at, r.id));
    }
    Ok(rows)
}

/// The live row holding `values` for the unique rule at `rule`.
pub(crate) fn find(
    conn: &Db<'_>,
    on: On<'_>,
    rule: usize,
    values: &[Value],
) -> Result<Option<Record>> {
    let Some(sql) = on.plan.find.get(rule) else {
        return Err(invalid(
            on.plan.schema,
            format!("it has no unique rule #{rule}"),
        ));
    };
    let params: Vec<Param<'_>> = values.iter().map(Param::Value).collect();
    query_first(conn, sql, rusqlite::params_from_iter(&params), |r| {
        on.plan.read(r, 0)
    })
    .map_err(|e| on.error(e))
}

/// The live row `id` with, per reference field, the live row it refers to: one statement.
pub(crate) fn get_related(
    conn: &Db<'_>,
    on: On<'_>,
    id: Uuid,
) -> Result<Option<(Record, Vec<Option<Record>>)>> {
    let plans = on.plans;
    query_first(conn, &on.plan.related, [Param::Id(id)], |r| {
        let record = on.plan.read(r, 0)?;
        let mut at = on.plan.width;
        let mut related = Vec::with_capacity(on.plan.references.len());
        for reference in on.plan.references.iter() {
            let target = plans.plan(reference.target);
            // An outer join that found no live row gives `NULL` for every column.
            let found = r.get_ref(at)? != rusqlite::types::ValueRef::Null;
            related.push(if found {
                Some(target.read(r, at)?)
            } else {
                None
            });
            at += target.width;
        }
        Ok((record, related))
    })
    .map_err(|e| on.error(e))
}

/// The `WHERE` conditions of `conditions` after `deleted_at IS NULL`, and their parameters.
fn conditions_sql<'c>(
    on: On<'_>,
    conditions: &'c [Condition],
    sql: &mut String,
    params: &mut Vec<Param<'c>>,
) -> Result<()> {
    conditions_sql_but(on, conditions, None, sql, params)
}

/// [`conditions_sql`] but for the condition at position `served` (the search index serves it).
fn conditions_sql_but<'c>(
    on: On<'_>,
    conditions: &'c [Condition],
    served: Option<usize>,
    sql: &mut String,
    params: &mut Vec<Param<'c>>,
) -> Result<()> {
    for (at, condition) in conditions.iter().enumerate() {
        if served == Some(at) {
            continue;
        }
        match condition {
            Condition::Eq { field, value } => {
                let Some(clause) = on.plan.eq.get(*field) else {
                    return Err(invalid(
                        on.plan.schema,
                        format!("a condition names field #{field}"),
                    ));
                };
                sql.push_str(clause);
                params.push(Param::Value(value));
                if on.plan.is_reference(*field) {
                    // The referred row must be live: its `EXISTS` takes the id again.
                    params.push(Param::Value(value));
                }
            }
            Condition::Search(query) => {
                if !on.plan.searchable {
                    return Err(invalid(
                        on.plan.schema,
                        "a search on an entity without a search document",
                    ));
                }
                sql.push_str(" AND search_text LIKE ? ESCAPE '\\'");
                params.push(Param::Text(like_pattern(query)));
            }
        }
    }
    Ok(())
}

/// A search condition the table's search index serves: its position among the conditions and
/// the index's query.
struct Indexed<'p> {
    index: &'p str,
    at: usize,
    phrase: String,
}

impl<'p> Indexed<'p> {
    /// The first search condition among `conditions` that the index of `on`'s table can serve
    /// (one of at least [`MIN_INDEXED_CHARS`] characters), if the table has one.
    fn of(on: On<'p>, conditions: &[Condition]) -> Option<Self> {
        let index = on.plan.search_index.as_deref()?;
        conditions
            .iter()
            .enumerate()
            .find_map(|(at, condition)| match condition {
                Condition::Search(query) if query.folded().chars().count() >= MIN_INDEXED_CHARS => {
                    Some(Indexed {
                        index,
                        at,
                        phrase: search_index::phrase(query.folded()),
                    })
                }
                _ => None,
            })
    }
}

/// `SELECT {select}` of the live rows that pass every condition, through the search index when
/// `indexed` (its matches joined to the table by rowid), reading the table otherwise.
fn select_matching<'c>(
    on: On<'_>,
    select: &str,
    conditions: &'c [Condition],
    indexed: Option<&Indexed<'_>>,
    sql: &mut String,
    params: &mut Vec<Param<'c>>,
) -> Result<()> {
    let table = on.plan.schema.table;
    match indexed {
        Some(Indexed { index, at, phrase }) => {
            let _ = write!(
                sql,
                "SELECT {select} FROM {index} JOIN {table} ON {table}.rowid = {index}.rowid \
                 WHERE {index} MATCH ? AND deleted_at IS NULL"
            );
            params.push(Param::Text(phrase.clone()));
            conditions_sql_but(on, conditions, Some(*at), sql, params)
        }
        None => {
            let _ = write!(sql, "SELECT {select} FROM {table} WHERE deleted_at IS NULL");
            conditions_sql(on, conditions, sql, params)
        }
    }
}

/// The live rows `selection` picks.
///
/// With a search the index serves whose matches are few (at most [`FEW_MATCHES`]), the rows come
/// from the index, sorted; otherwise from the table in list order, every condition a filter on
/// each row (with many matches, a page is found in a few rows; with few, most of the table
/// would be read).
pub(crate) fn list(conn: &Db<'_>, on: On<'_>, selection: &Selection) -> Result<Vec<Record>> {
    let conditions = &selection.conditions;
    let indexed = Indexed::of(on, conditions);
    let through_index = match &indexed {
        Some(indexed)
            if bounded(conn, on, conditions, Some(indexed), FEW_MATCHES)? <= FEW_MATCHES =>
        {
            Some(indexed)
        }
        _ => None,
    };
    let mut sql = String::new();
    let mut params = Vec::new();
    select_matching(
        on,
        &on.plan.columns,
        conditions,
        through_index,
        &mut sql,
        &mut params,
    )?;
    let newest = selection.order == Order::Newest;
    if let Start::After(Some(cursor)) = selection.start {
        sql.push_str(if newest {
            " AND (created_at, id) < (?, ?)"
        } else {
            " AND (created_at, id) > (?, ?)"
        });
        params.push(Param::time(cursor.created_at()));
        params.push(Param::Id(cursor.id()));
    }
    sql.push_str(if newest {
        " ORDER BY created_at DESC, id DESC LIMIT ?"
    } else {
        " ORDER BY created_at, id LIMIT ?"
    });
    params.push(Param::Int(i64::from(selection.limit)));
    if let Start::Offset(offset) = selection.start {
        sql.push_str(" OFFSET ?");
        params.push(Param::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
    }
    query(conn, &sql, &params, |r| on.plan.read(r, 0)).map_err(|e| on.error(e))
}

/// How many live rows pass every condition.
pub(crate) fn count(conn: &Db<'_>, on: On<'_>, conditions: &[Condition]) -> Result<u64> {
    let mut sql = String::new();
    let mut params = Vec::new();
    let indexed = Indexed::of(on, conditions);
    select_matching(
        on,
        "COUNT(*)",
        conditions,
        indexed.as_ref(),
        &mut sql,
        &mut params,
    )?;
    scalar::<i64>(conn, &sql, rusqlite::params_from_iter(&params))
        .map(|n| n as u64)
        .map_err(|e| on.error(e))
}

/// Whether a live row passes every condition: the first one found ends the search.
pub(crate) fn exists(conn: &Db<'_>, on: On<'_>, conditions: &[Condition]) -> Result<bool> {
    let mut sql = String::from("SELECT EXISTS (");
    let mut params = Vec::new();
    let indexed = Indexed::of(on, conditions);
    select_matching(on, "1", conditions, indexed.as_ref(), &mut sql, &mut params)?;
    sql.push(')');
    scalar(conn, &sql, rusqlite::params_from_iter(&params)).map_err(|e| on.error(e))
}

/// A page of the live rows that pass every condition and how many pass in all (see
/// [`Total`]), in one read transaction.
///
/// A search the index serves first reads up to one past the bound of its matches through the
/// index, sorted, with their number (`COUNT(*) OVER ()`): within the bound, that is the page
/// and the total in one statement. Beyond it (the term is common), or when the page is empty,
/// the matches are counted up to one past the bound, and a page beyond the bound is found by
/// walking the table in list order with the conditions a filter on each row (a common term's
/// page is found in a few rows). Without the index: that count, then the page.
pub(crate) fn search(
    conn: &Db<'_>,
    on: On<'_>,
    conditions: &[Condition],
    page: Page,
) -> Result<SearchPage<Record>> {
    let indexed = Indexed::of(on, conditions);
    let read = || -> Result<SearchPage<Record>> {
        if let Some(indexed) = &indexed {
            let (items, counted) = indexed_page(conn, on, conditions, indexed, page)?;
            if counted.is_some_and(|n| n <= MAX_EXACT_TOTAL) {
                let on_page = items.len();
                let total = Total::counted(counted.unwrap_or(0), page.offset(), on_page);
                return Ok(SearchPage { items, total });
            }
        }
        let counted = bounded(conn, on, conditions, indexed.as_ref(), MAX_EXACT_TOTAL)?;
        let items = if counted <= MAX_EXACT_TOTAL && page.offset() >= counted {
            Vec::new()
        } else {
            table_page(conn, on, conditions, page)?
        };
        let on_page = items.len();
        Ok(SearchPage {
            items,
            total: Total::counted(counted, page.offset(), on_page),
        })
    };
    let own_transaction = conn.is_autocommit();
    if own_transaction {
        conn.execute_batch("BEGIN DEFERRED")
            .map_err(|e| on.error(e))?;
    }
    let result = read();
    if own_transaction {
        conn.execute_batch("COMMIT").map_err(|e| on.error(e))?;
    }
    result
}

/// The page among the first `MAX_EXACT_TOTAL + 1` matches the index finds, sorted, and their
/// number (`None` when the page is empty: the statement returns no row to carry it).
fn indexed_page(
    conn: &Db<'_>,
    on: On<'_>,
    conditions: &[Condition],
    indexed: &Indexed<'_>,
    page: Page,
) -> Result<(Vec<Record>, Option<u64>)> {
    // The matches' keys are sorted, the page's rows read by rowid: sorting whole rows cost
    // more than the page (about 11 ms for 10,001 rows of products).
    let table = on.plan.schema.table;
    let columns: Vec<String> = on
        .plan
        .columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect();
    let mut sql = format!(
        "SELECT {}, page.n FROM (SELECT r, created_at, id, COUNT(*) OVER () AS n FROM (",
        columns.join(", ")
    );
    let mut params = Vec::new();
    let keys = format!("{table}.rowid AS r, created_at, id");
    select_matching(on, &keys, conditions, Some(indexed), &mut sql, &mut params)?;
    let _ = write!(
        sql,
        " LIMIT {}) ORDER BY created_at, id LIMIT ? OFFSET ?) AS page \
         JOIN {table} ON {table}.rowid = page.r ORDER BY page.created_at, page.id",
        MAX_EXACT_TOTAL + 1
    );
    page_params(page, &mut params);
    let total_at = on.plan.width;
    let rows = query(conn, &sql, &params, |r| {
        Ok((on.plan.read(r, 0)?, r.get::<_, i64>(total_at)?))
    })
    .map_err(|e| on.error(e))?;
    let counted = rows.first().map(|(_, n)| u64::try_from(*n).unwrap_or(0));
    Ok((rows.into_iter().map(|(row, _)| row).collect(), counted))
}

/// Up to how many matches a list reads through the search index: reading the table in list
/// order instead reads about `limit × rows ÷ matches` rows (50,000 for a page of 100 among a
/// million rows with 2,000 matches), and counting the matches up to this bound costs one rowid
/// lookup each.
const FEW_MATCHES: u64 = 2_000;

/// How many live rows pass every condition, counted up to `bound + 1` (through the index when
/// `indexed`).
fn bounded(
    conn: &Db<'_>,
    on: On<'_>,
    conditions: &[Condition],
    indexed: Option<&Indexed<'_>>,
    bound: u64,
) -> Result<u64> {
    let mut sql = String::from("SELECT COUNT(*) FROM (");
    let mut params = Vec::new();
    select_matching(on, "1", conditions, indexed, &mut sql, &mut params)?;
    let _ = write!(sql, " LIMIT {})", bound + 1);
    let counted =
        scalar::<i64>(conn, &sql, rusqlite::params_from_iter(&params)).map_err(|e| on.error(e))?;
    Ok(u64::try_from(counted).unwrap_or(0))
}

/// The page read from the table in list order, every condition a filter on each row.
fn table_page(
    conn: &Db<'_>,
    on: On<'_>,
    conditions: &[Condition],
    page: Page,
) -> Result<Vec<Record>> {
    let mut sql = String::new();
    let mut params = Vec::new();
    select_matching(
        on,
        &on.plan.columns,
        conditions,
        None,
        &mut sql,
        &mut params,
    )?;
    sql.push_str(" ORDER BY created_at, id LIMIT ? OFFSET ?");
    page_params(page, &mut params);
    query(conn, &sql, &params, |r| on.plan.read(r, 0)).map_err(|e| on.error(e))
}

/// How many live rows that pass every condition hold each value of field `field`: one
/// `GROUP BY`.
pub(crate) fn tally(
    conn: &Db<'_>,
    on: On<'_>,
    conditions: &[Condition],
    field: usize,
) -> Result<Vec<(Value, u64)>> {
    let Some(&decode) = on.plan.decoders.get(field) else {
        return Err(invalid(
            on.plan.schema,
            format!("a tally names field #{field}"),
        ));
    };
    let column = on.plan.column(field);
    let mut sql = format!(
        "SELECT {column}, COUNT(*) FROM {} WHERE deleted_at IS NULL",
        on.plan.schema.table
    );
    let mut params = Vec::new();
    conditions_sql(on, conditions, &mut sql, &mut params)?;
    sql.push_str(" GROUP BY ");
    sql.push_str(column);
    query(conn, &sql, &params, |r| {
        let mut r = RowReader::new(r, 0);
        Ok((r.value(decode)?, r.get::<i64>()? as u64))
    })
    .map_err(|e| on.error(e))
}

/// A page of the soft-deleted rows, in the list order.
pub(crate) fn list_deleted(conn: &Db<'_>, on: On<'_>, page: Page) -> Result<Vec<Record>> {
    let mut params = Vec::with_capacity(2);
    page_params(page, &mut params);
    query(conn, &on.plan.list_deleted, &params, |r| on.plan.read(r, 0)).map_err(|e| on.error(e))
}

// ---- The rules of a write ------------------------------------------------------------------

/// Whether the row `id` of the entity at `target` is live.
fn is_live(conn: &Db<'_>, on: On<'_>, target: usize, id: Uuid) -> Result<bool> {
    scalar(conn, &on.plans.plan(target).live, [Param::Id(id)]).map_err(|e| on.error(e))
}

/// The first row of `rows` (its position) with a reference to a row that is not live, in input
/// order and each row's references in declaration order, with its [`Error::NotFound`] naming
/// the referred entity. A reference to an earlier row of `rows` itself is to a live row.
fn first_missing_reference(
    conn: &Db<'_>,
    on: On<'_>,
    rows: &[Record],
) -> Result<Option<(usize, Error)>> {
    if on.plan.references.is_empty() {
        return Ok(None);
    }
    let mut live = HashSet::new();
    for (k, row) in rows.iter().enumerate() {
        for reference in on.plan.references.iter() {
            let Some(id) = row.values[reference.field].as_uuid() else {
                continue;
            };
            if live.contains(&(reference.target, id)) {
                continue;
            }
            let earlier_row = reference.target == on.at && rows[..k].iter().any(|r| r.id == id);
            if !earlier_row && !is_live(conn, on, reference.target, id)? {
                let target = on.plans.plan(reference.target).schema;
                return Ok(Some((k, Error::not_found(target.kind(), id))));
            }
            live.insert((reference.target, id));
        }
    }
    Ok(None)
}

/// [`Error::NotFound`] for the first reference among the fields `changes` sets (in
/// declaration order) to a row that is not live.
fn require_set_references(conn: &Db<'_>, on: On<'_>, changes: &Changes) -> Result<()> {
    for reference in on.plan.references.iter() {
        let set = changes.sets.iter().find(|(f, _)| *f == reference.field);
        if let Some(id) = set.and_then(|(_, v)| v.as_uuid()) {
            if !is_live(conn, on, reference.target, id)? {
                let target = on.plans.plan(reference.target).schema;
                return Err(Error::not_found(target.kind(), id));
            }
        }
    }
    Ok(())
}

/// The first unique rule `rows` break, as the memory store finds it: rows in order, each row's
/// rules in declaration order, a rule broken when another live row (or an earlier row of
/// `rows`) holds the row's values for it. SQLite reports whichever index it checked first, so
/// this runs after a write failed on one (the write undone), or before reporting a later row's
/// missing reference.
fn first_conflict(conn: &Db<'_>, on: On<'_>, rows: &[Record]) -> Result<Option<Error>> {
    let entry = on.plans.entry(on.at);
    let mut earlier = HashSet::new();
    for row in rows {
        for (rule, fields) in entry.unique_fields.iter().enumerate() {
            // A rule with an absent value holds whatever the others hold (SQL's NULLs are
            // distinct).
            if fields.iter().any(|&f| row.values[f].is_null()) {
                continue;
            }
            let values: Vec<&Value> = fields.iter().map(|&f| &row.values[f]).collect();
            let in_batch = !earlier.insert((rule, values.clone()));
            let taken = in_batch || {
                let mut params: Vec<Param<'_>> = values.into_iter().map(Param::Value).collect();
                params.push(Param::Id(row.id));
                scalar(
                    conn,
                    &on.plan.taken[rule],
                    rusqlite::params_from_iter(&params),
                )
                .map_err(|e| on.error(e))?
            };
            if taken {
                let schema = on.plan.schema;
                return Ok(Some(Error::Conflict {
                    constraint: Constraint::of_rule(schema, &schema.unique[rule]),
                }));
            }
        }
    }
    Ok(None)
}

/// `error`, or when it is a unique violation, the first rule `rows` break (see
/// [`first_conflict`]).
fn diagnosed(conn: &Db<'_>, on: On<'_>, rows: &[Record], error: Error) -> Error {
    if !matches!(error, Error::Conflict { .. }) {
        return error;
    }
    match first_conflict(conn, on, rows) {
        Ok(Some(conflict)) => conflict,
        Ok(None) => error,
        Err(failed) => failed,
    }
}

// ---- Writes --------------------------------------------------------------------------------

/// Appends `row`'s values in the order of the table's columns (`search_text` last, from
/// `document`).
fn push_row<'r>(row: &'r Record, document: Option<&'r str>, params: &mut Vec<Param<'r>>) {
    params.push(Param::Id(row.id));
    params.extend(row.values.iter().map(Param::Value));
    params.push(Param::time(row.created_at));
    params.push(Param::time(row.updated_at));
    params.push(Param::opt_time(row.deleted_at));
    params.push(Param::Int(row.version));
    if let Some(document) = document {
        params.push(Param::Str(document));
    }
}

/// Inserts `rows` with one multi-row `INSERT` per batch of rows that fits SQLite's parameter
/// bound, all or nothing; the rules first (references, then unique values, row by row).
pub(crate) fn insert(conn: &Db<'_>, on: On<'_>, rows: Vec<Record>) -> Result<Vec<Record>> {
    if rows.is_empty() {
        return Ok(rows);
    }
    if let Some((k, missing)) = first_missing_reference(conn, on, &rows)? {
        // A row before it that breaks a unique rule comes first.
        return Err(first_conflict(conn, on, &rows[..k])?.unwrap_or(missing));
    }
    let entry = on.plans.entry(on.at);
    let documents: Vec<String> = if on.plan.searchable {
        rows.iter()
            .map(|r| search_document(entry, &r.values))
            .collect()
    } else {
        Vec::new()
    };
    let per_batch = MAX_PARAMS / on.plan.write_width;
    let insert_all = || {
        let mut params = Vec::with_capacity(per_batch.min(rows.len()) * on.plan.write_width);
        for (b, batch) in rows.chunks(per_batch).enumerate() {
            params.clear();
            for (i, row) in batch.iter().enumerate() {
                let document = documents.get(b * per_batch + i).map(String::as_str);
                push_row(row, document, &mut params);
            }
            let built;
            let sql = if batch.len() == 1 {
                &on.plan.insert_one
            } else {
                built = on.plan.insert_sql(batch.len());
                &built
            };
            execute(conn, sql, &params).map_err(|e| on.error(e))?;
        }
        Ok(())
    };
    let inserted = if rows.len() > per_batch {
        atomically(conn, insert_all)
    } else {
        // One statement: SQLite's statement rollback makes it all-or-nothing already.
        insert_all()
    };
    inserted.map_err(|e| diagnosed(conn, on, &rows, e))?;
    Ok(rows)
}

/// Writes every column of `row` back (`search_text` too when `searched` says a field of the
/// search document changed).
fn write_back(conn: &Db<'_>, on: On<'_>, row: &Record, searched: bool) -> Result<()> {
    let mut params = Vec::with_capacity(on.plan.write_width + 1);
    params.extend(row.values.iter().map(Param::Value));
    params.push(Param::time(row.updated_at));
    params.push(Param::Int(row.version));
    let document;
    let sql = if searched {
        document = search_document(on.plans.entry(on.at), &row.values);
        params.push(Param::Str(&document));
        &on.plan.write_back_searched
    } else {
        &on.plan.write_back
    };
    params.push(Param::Id(row.id));
    execute(conn, sql, &params).map_err(|e| on.error(e))?;
    Ok(())
}

/// Whether `changes` sets a field of the search document.
fn changes_search(on: On<'_>, changes: &Changes) -> bool {
    let fields = &on.plans.entry(on.at).search_fields;
    changes.sets.iter().any(|(f, _)| fields.contains(f))
}

/// Reads the live row, checks the version and the references it is given, applies the changes
/// in Rust (the core's semantics) and writes the row back.
pub(crate) fn update(
    conn: &Db<'_>,
    on: On<'_>,
    id: Uuid,
    changes: &Changes,
    expected_version: Option<i64>,
) -> Result<Record> {
    let mut row = get(conn, on, id)?.ok_or_else(|| on.not_found(id))?;
    if let Some(expected) = expected_version {
        if row.version != expected {
            return Err(Error::stale_version(
                on.plan.schema.kind(),
                id,
                expected,
                row.version,
            ));
        }
    }
    require_set_references(conn, on, changes)?;
    changes.apply_to(&mut row);
    write_back(conn, on, &row, changes_search(on, changes))
        .map_err(|e| diagnosed(conn, on, std::slice::from_ref(&row), e))?;
    Ok(row)
}

/// Applies `changes` to each live row among `ids`, all or nothing; how many it changed.
pub(crate) fn update_many(
    conn: &Db<'_>,
    on: On<'_>,
    ids: &[Uuid],
    changes: &Changes,
) -> Result<u64> {
    let mut rows = get_many(conn, on, ids)?;
    if rows.is_empty() {
        return Ok(0);
    }
    // In the order the ids came, as the memory store writes them (and so reports a conflict
    // between two of them).
    let mut first_at = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        first_at.entry(*id).or_insert(i);
    }
    rows.sort_by_key(|r| first_at.get(&r.id).copied());
    require_set_references(conn, on, changes)?;
    let searched = changes_search(on, changes);
    for row in &mut rows {
        changes.apply_to(row);
    }
    atomically(conn, || {
        for row in &rows {
            write_back(conn, on, row, searched)?;
        }
        Ok(rows.len() as u64)
    })
    .map_err(|e| diagnosed(conn, on, &rows, e))
}

/// Adds `delta` to the integer field `field` of the live row `id` in one conditional `UPDATE …
/// RETURNING`; when it changes nothing, a point read tells "not live" from "out of range".
pub(crate) fn increment(
    conn: &Db<'_>,
    on: On<'_>,
    id: Uuid,
    field: usize,
    delta: i64,
    at: Timestamp,
) -> Result<Incremented> {
    let (Some(Some(sql)), Some(declared)) = (
        on.plan.increment.get(field),
        on.plan.schema.fields.get(field),
    ) else {
        return Err(invalid(
            on.plan.schema,
            "increment of a field that is not an integer",
        ));
    };
    let FieldType::Int { min, max } = declared.ty else {
        unreachable!("an increment statement is built for integer fields only")
    };
    // The current values `v` with `v + delta` in `min..=max`, found in Rust without overflow:
    // the statement then adds without leaving the range (or i64).
    let low = (i128::from(min) - i128::from(delta)).max(i128::from(i64::MIN));
    let high = (i128::from(max) - i128::from(delta)).min(i128::from(i64::MAX));
    if low <= high {
        let params = [
            Param::Int(delta),
            Param::time(at),
            Param::Id(id),
            Param::Int(low as i64),
            Param::Int(high as i64),
        ];
        let done = query_first(conn, sql, rusqlite::params_from_iter(&params), |r| {
            on.plan.read(r, 0)
        })
        .map_err(|e| on.error(e))?;
        if let Some(row) = done {
            return Ok(Incremented::Done(row));
        }
    }
    Ok(match get(conn, on, id)? {
        None => Incremented::NotLive,
        Some(row) => Incremented::OutOfRange {
            current: row.values[field].as_int().unwrap_or(0),
        },
    })
}

/// The live rows among `ids`, sorted by id: reading them is all a row lock needs under the unit
/// of work's write lock (see the module docs).
pub(crate) fn lock(conn: &Db<'_>, on: On<'_>, ids: &[Uuid]) -> Result<Vec<Record>> {
    let mut rows = get_many(conn, on, ids)?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Marks the live row `id` deleted; false when it already was.
pub(crate) fn soft_delete(conn: &Db<'_>, on: On<'_>, id: Uuid, at: Timestamp) -> Result<bool> {
    let changed = execute(
        conn,
        &on.plan.soft_delete,
        &[Param::time(at), Param::Id(id)],
    )
    .map_err(|e| on.error(e))?;
    changed_or_known(conn, on, id, changed == 1)
}

/// `changed`, or, when the write changed nothing, whether that is because the row `id` is in
/// the other state (false) or does not exist at all ([`Error::NotFound`]).
fn changed_or_known(conn: &Db<'_>, on: On<'_>, id: Uuid, changed: bool) -> Result<bool> {
    if changed {
        return Ok(true);
    }
    if scalar::<bool>(conn, &on.plan.exists_any, [Param::Id(id)]).map_err(|e| on.error(e))? {
        Ok(false)
    } else {
        Err(on.not_found(id))
    }
}

/// Brings the soft-deleted row `id` back; false when it is live. A unique value a live row
/// took meanwhile is a conflict, naming the first such rule.
pub(crate) fn restore(conn: &Db<'_>, on: On<'_>, id: Uuid, at: Timestamp) -> Result<bool> {
    match execute(conn, &on.plan.restore, &[Param::time(at), Param::Id(id)]) {
        Ok(changed) => changed_or_known(conn, on, id, changed == 1),
        Err(error) => {
            let error = on.error(error);
            let row = query_first(conn, &on.plan.get_any, [Param::Id(id)], |r| {
                on.plan.read(r, 0)
            })
            .map_err(|e| on.error(e))?;
            Err(diagnosed(conn, on, &Vec::from_iter(row), error))
        }
    }
}

/// Deletes the row `id` for good, live or not: the foreign keys of the referring tables apply
/// their `ON DELETE` (each declared [`OnDelete`](stockroom_core::OnDelete)).
///
/// A foreign key of an application's table that refuses the delete is [`Error::Referenced`],
/// naming that table; SQLite undoes the failed statement alone, so the unit of work goes on.
pub(crate) fn hard_delete(conn: &Db<'_>, on: On<'_>, id: Uuid) -> Result<()> {
    let params = [Param::Id(id)];
    match execute(conn, &on.plan.hard_delete, &params) {
        Ok(1) => Ok(()),
        Ok(_) => Err(on.not_found(id)),
        Err(error) => Err(refused_delete(
            conn,
            on,
            &on.plan.hard_delete,
            &params,
            Some(id),
            error,
        )),
    }
}

fn is_foreign_key_failure(error: &rusqlite::Error) -> bool {
    error
        .sqlite_error()
        .is_some_and(|e| e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// The error of a delete for good (`sql` with `params`; of the row `asked`, when it is one row)
/// that failed with `error`: when a foreign key of another table refused it,
/// [`Error::Referenced`] naming a row of this entity that is still referred to and the table
/// that refers to it; otherwise `error`, mapped.
fn refused_delete(
    conn: &Db<'_>,
    on: On<'_>,
    sql: &str,
    params: &[Param<'_>],
    asked: Option<Uuid>,
    error: rusqlite::Error,
) -> Error {
    if !is_foreign_key_failure(&error) {
        return on.error(error);
    }
    match referring_row(conn, on, sql, params) {
        Ok(Some((table, Some(id)))) => Error::referenced(on.plan.schema.kind(), id, table),
        // Referred to through a row the delete cascaded to: the row asked for is the one.
        Ok(Some((table, None))) => match asked {
            Some(id) => Error::referenced(on.plan.schema.kind(), id, table),
            None => on.error(error),
        },
        Ok(None) => on.error(error),
        Err(e) => on.error(e),
    }
}

/// A row that keeps the delete `sql` from going through, as (the referring table, the id of
/// this entity's row it refers to, or `None` when it refers to a row the delete cascaded to).
/// SQLite's error names neither, so the delete runs again with the foreign keys deferred,
/// inside a savepoint that is then rolled back (nothing of it stays), and SQLite's foreign-key
/// check names a row left referring to a deleted one, one referring to this entity's table
/// first. Only on this refusal's path.
fn referring_row(
    conn: &Db<'_>,
    on: On<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> rusqlite::Result<Option<(String, Option<Uuid>)>> {
    const CHECK: &str = "SELECT c.\"table\", c.rowid, k.\"from\", c.\"parent\" \
                         FROM pragma_foreign_key_check AS c \
                         JOIN pragma_foreign_key_list(c.\"table\") AS k ON k.id = c.fkid \
                         ORDER BY c.\"parent\" <> ?1 LIMIT 1";
    conn.execute_batch("PRAGMA defer_foreign_keys = ON; SAVEPOINT stockroom_referenced")?;
    let found = execute(conn, sql, params).and_then(|_| {
        let violation = query_first(conn, CHECK, [on.plan.schema.table], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let Some((table, rowid, column, parent)) = violation else {
            return Ok(None);
        };
        if parent != on.plan.schema.table {
            return Ok(Some((table, None)));
        }
        // Names from SQLite's own catalog, quoted as identifiers.
        let key = format!(
            "SELECT {} FROM {} WHERE rowid = ?1",
            quoted(&column),
            quoted(&table)
        );
        let id: Option<Vec<u8>> = query_first(conn, &key, [rowid], |row| row.get(0))?;
        let id = id.and_then(|bytes| Uuid::from_slice(&bytes).ok());
        Ok(Some((table, id)))
    });
    let undone = conn.execute_batch(
        "ROLLBACK TO stockroom_referenced; RELEASE stockroom_referenced; \
         PRAGMA defer_foreign_keys = OFF",
    );
    let found = found?;
    undone?;
    Ok(found)
}

/// `name` as an SQL identifier: in double quotes, its own double quotes doubled.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Deletes for good the rows soft-deleted before `before`; how many.
///
/// A foreign key of an application's table that refuses it is [`Error::Referenced`], naming one
/// row still referred to and the table; nothing is purged, and the unit of work goes on.
pub(crate) fn purge_deleted_before(conn: &Db<'_>, on: On<'_>, before: Timestamp) -> Result<u64> {
    let params = [Param::time(before)];
    execute(conn, &on.plan.purge, &params)
        .map(|n| n as u64)
        .map_err(|error| refused_delete(conn, on, &on.plan.purge, &params, None, error))
}

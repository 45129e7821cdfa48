//! The generic SQL: the record ports ([`RecordReader`], [`RecordWriter`]) implemented once, on
//! [`Session`], for every entity of the store's catalog, Stockroom's and the application's
//! alike, over the statements of the entity's [`Plan`] (written when the store was built) and
//! the ones written here per call (conditions, `SET` lists, `IN` lists, multi-row inserts).
//!
//! # What replaces PostgreSQL's features
//!
//! - No `UPDATE … RETURNING`: an update reads and locks the live row first (`FOR UPDATE`),
//!   checks it, and returns the row it computed from it and the changes (the row is locked, so
//!   that is what the table holds); an increment is one conditional `UPDATE`, then a point read.
//! - No `ON CONFLICT`: an insert or update runs, and the unique indexes refuse a taken value
//!   (1062, which rolls back that statement alone, not the transaction). A second statement
//!   then says which rule was broken, in the order every backend reports them.
//! - No arrays: `id IN (?, ?, …)` and multi-row `INSERT … VALUES (…), (…)`, each statement
//!   within MariaDB's 65,535 placeholders. Several statements of one write run inside a
//!   savepoint of their own, so that the write is all or nothing.
//! - Foreign keys check that a referred row exists, not that it is live: the references a write
//!   sets are read first (the only check that runs before the write).
//!
//! The order of the rules a write breaks, every backend's: the row missing, a stale version,
//! then per row in input order its references that are not live in declaration order, then
//! its unique values held by another live row in declaration order (then its id taken). When a
//! statement failed and the diagnosis finds no broken rule (a concurrent write changed things
//! between the two), the statement's own error is returned.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::mysql::{MySqlDatabaseError, MySqlRow};
use sqlx::Row as _;
use stockroom_core::adapter::like_pattern;
use stockroom_core::outbox::NewEvent;
use stockroom_core::schema::{
    invalid, search_document, Changes, Condition, Entry, Incremented, Order, Record, RecordReader,
    RecordWriter, Schema, Selection, Start, Storage, Value,
};
use stockroom_core::time::Timestamp;
use stockroom_core::{Constraint, Error, Page, Result, SearchPage, Total, MAX_EXACT_TOTAL};
use uuid::Uuid;

use crate::codec::{
    at, bind_value, count_u64, decode_record, decode_value, limit_i64, offset_i64, query, utc,
    Statement,
};
use crate::plans::{quoted, Plan, Plans};
use crate::session::Session;

/// The most placeholders one statement may have (MariaDB counts them in 16 bits).
const MAX_PARAMS: usize = 65_535;

/// The most answers one diagnosis statement asks for (one `EXISTS` column each): far below
/// MariaDB's limit on a select list, and enough for any batch in a few statements.
const MAX_ANSWERS: usize = 1_000;

/// The savepoint around a write of several statements (a name of ours, apart from the unit of
/// work's `sp1`, `sp2`, …).
const SAVEPOINT: &str = "stockroom_records";

/// A write that lost a race with a concurrent one between its statement and its diagnosis:
/// nothing was applied, and the same request may be sent again.
fn raced(what: &str) -> Error {
    Error::transient(format!("{what} changed concurrently; retry"))
}

/// Whether `error` is a unique index's refusal of a duplicate entry (1062): a `Conflict` the
/// mapping named, or one on a key it could not name (the primary key, whose message names no
/// table). Only then does a failed write look for the rule it broke.
fn is_duplicate(error: &Error) -> bool {
    if matches!(error, Error::Conflict { .. }) {
        return true;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(sqlx::Error::Database(db)) = current.downcast_ref::<sqlx::Error>() {
            return db
                .try_downcast_ref::<MySqlDatabaseError>()
                .is_some_and(|my| matches!(my.number(), 1062 | 1586));
        }
        cause = current.source();
    }
    false
}

/// Whether `error` is a foreign key's refusal of a reference to a row that does not exist
/// (1452), whose message names the entity but not the id (the mapping leaves it nil).
fn is_unnamed_not_found(error: &Error) -> bool {
    matches!(error, Error::NotFound { id, .. } if id.as_uuid().is_nil())
}

/// The rule a diagnosis found broken, else the failed statement's own `error` (also when the
/// diagnosis itself failed: the statement's error says more).
fn diagnosed(why: Result<Option<Error>>, error: Error) -> Error {
    why.ok().flatten().unwrap_or(error)
}

/// The records of `rows`, each read as `plan`'s entity.
fn records(plan: &Plan, rows: &[MySqlRow]) -> Result<Vec<Record>> {
    rows.iter()
        .map(|row| decode_record(row, 0, plan.schema.fields))
        .collect()
}

/// A `COUNT(*)` at `index` of `row`: a `BIGINT`, which the server may flag unsigned.
fn count_at(row: &MySqlRow, index: usize) -> Result<u64> {
    match row.try_get::<i64, _>(index) {
        Ok(n) => Ok(count_u64(n)),
        Err(_) => at::<u64>(row, index),
    }
}

/// The distinct ids of `ids`, sorted (the order rows are locked in).
fn distinct_sorted(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Appends `(?, ?, …)` with each of `ids` bound.
fn push_ids(statement: &mut Statement, ids: &[Uuid]) {
    statement.push("(");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            statement.push(", ");
        }
        statement.bind(*id);
    }
    statement.push(")");
}

/// Appends ` AND …` for each of `conditions` to a statement over `plan`'s table (columns
/// unqualified). A condition on a reference field also needs the row it names to be live: a
/// deleted row filters like an absent one.
fn push_conditions(statement: &mut Statement, plan: &Plan, conditions: &[Condition]) -> Result<()> {
    for condition in conditions {
        match condition {
            Condition::Eq { field, value } => {
                let Some(column) = plan.field_columns.get(*field) else {
                    return Err(invalid(
                        plan.schema,
                        format!("a condition names field #{field}"),
                    ));
                };
                statement.push(&format!(" AND {column} = "));
                statement.value(plan.storages[*field], value);
                if let Some(reference) = plan.reference(*field) {
                    // MariaDB's placeholders are positional: the id is bound again.
                    statement.push(&format!(
                        " AND EXISTS (SELECT 1 FROM {} x WHERE x.`id` = ",
                        quoted(reference.target)
                    ));
                    statement.value(Storage::Uuid, value);
                    statement.push(" AND x.`deleted_at` IS NULL)");
                }
            }
            Condition::Search(query) => {
                if !plan.searchable {
                    return Err(invalid(
                        plan.schema,
                        "a search on an entity without a search document",
                    ));
                }
                // The pattern escapes `%`, `_` and `\` with a backslash, LIKE's default escape
                // character in MariaDB too; `search_text` is compared in `utf8mb4_bin`, code
                // point by code point, as the core folded it.
                statement.push(" AND `search_text` LIKE ");
                statement.bind(like_pattern(query));
            }
        }
    }
    Ok(())
}

/// Appends the condition that a row of alias `alias` is live and holds `values` for the unique
/// rule at `rule` (through the rule's live columns where the table has them).
fn push_unique_match(
    statement: &mut Statement,
    plan: &Plan,
    rule: usize,
    alias: &str,
    values: &[&Value],
) {
    let key = &plan.unique_keys[rule];
    for (k, column) in key.columns.iter().enumerate() {
        if k > 0 {
            statement.push(" AND ");
        }
        statement.push(&format!("{alias}.{column} = "));
        statement.value(plan.storages[plan.unique_fields[rule][k]], values[k]);
    }
    if !key.live_only {
        statement.push(&format!(" AND {alias}.`deleted_at` IS NULL"));
    }
}

/// `Ok` when every field `changes` sets is one of the entity's.
fn check_changes(plan: &Plan, changes: &Changes) -> Result<()> {
    match changes
        .sets
        .iter()
        .find(|(field, _)| *field >= plan.storages.len())
    {
        Some((field, _)) => Err(invalid(
            plan.schema,
            format!("an update sets field #{field}"),
        )),
        None => Ok(()),
    }
}

/// Whether `changes` sets a field of the search document.
fn touches_search(plan: &Plan, changes: &Changes) -> bool {
    plan.searchable
        && changes
            .sets
            .iter()
            .any(|(field, _)| plan.search_fields.contains(field))
}

/// The values of `record` for the unique rule at `rule`, or `None` when one is `NULL` (SQL's
/// `NULL`s never collide, so the rule holds whatever the others hold).
fn rule_values<'r>(plan: &Plan, rule: usize, record: &'r Record) -> Option<Vec<&'r Value>> {
    let values: Vec<&Value> = plan.unique_fields[rule]
        .iter()
        .map(|&f| &record.values[f])
        .collect();
    (!values.iter().any(|v| v.is_null())).then_some(values)
}

/// One question of a uniqueness diagnosis: whether a live row other than `id` holds `values`
/// for the unique rule at `rule`.
struct Taken<'r> {
    rule: usize,
    id: Uuid,
    values: Vec<&'r Value>,
}

#[async_trait]
impl RecordReader for Session {
    async fn get(&mut self, schema: &'static Schema, id: Uuid) -> Result<Option<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let row = self
            .fetch_optional(&plan.get, query(&plan.get).bind(id))
            .await?;
        row.map(|row| decode_record(&row, 0, plan.schema.fields))
            .transpose()
    }

    async fn get_many(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let ids = distinct_sorted(ids);
        let mut rows = Vec::with_capacity(ids.len());
        let chunks = ids.chunks(MAX_PARAMS).len();
        for chunk in ids.chunks(MAX_PARAMS) {
            let mut statement = Statement::new(&plan.select_live);
            statement.push(" AND `id` IN ");
            push_ids(&mut statement, chunk);
            statement.push(" ORDER BY `created_at`, `id`");
            let (sql, statement) = statement.build()?;
            rows.extend(records(plan, &self.fetch_all(&sql, statement).await?)?);
        }
        if chunks > 1 {
            rows.sort_by_key(|r| (r.created_at, r.id));
        }
        Ok(rows)
    }

    async fn find(
        &mut self,
        schema: &'static Schema,
        unique: usize,
        values: &[Value],
    ) -> Result<Option<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let (Some(sql), Some(fields)) = (plan.find.get(unique), plan.unique_fields.get(unique))
        else {
            return Err(invalid(
                schema,
                format!("it declares no unique rule #{unique}"),
            ));
        };
        if values.len() != fields.len() {
            return Err(invalid(
                schema,
                format!(
                    "a lookup by unique rule #{unique} gives {} values for its {} fields",
                    values.len(),
                    fields.len()
                ),
            ));
        }
        let mut statement = query(sql);
        for (&field, value) in fields.iter().zip(values) {
            statement = bind_value(statement, plan.storages[field], value);
        }
        let row = self.fetch_optional(sql, statement).await?;
        row.map(|row| decode_record(&row, 0, plan.schema.fields))
            .transpose()
    }

    async fn get_related(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
    ) -> Result<Option<(Record, Vec<Option<Record>>)>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let sql = &plan.get_related;
        let Some(row) = self.fetch_optional(sql, query(sql).bind(id)).await? else {
            return Ok(None);
        };
        let record = decode_record(&row, 0, plan.schema.fields)?;
        // Each related row's columns follow, in declaration order; all NULL when it is not
        // live.
        let mut start = plan.width();
        let mut related = Vec::with_capacity(plan.references.len());
        for reference in &plan.references {
            let target = plans.at(reference.target_position);
            related.push(match at::<Option<Uuid>>(&row, start)? {
                Some(_) => Some(decode_record(&row, start, target.schema.fields)?),
                None => None,
            });
            start += target.width();
        }
        Ok(Some((record, related)))
    }

    async fn list(
        &mut self,
        schema: &'static Schema,
        selection: &Selection,
    ) -> Result<Vec<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let mut statement = Statement::new(&plan.select_live);
        push_conditions(&mut statement, plan, &selection.conditions)?;
        let (after, descending) = match selection.order {
            Order::Oldest => (">", ""),
            Order::Newest => ("<", " DESC"),
        };
        if let Start::After(Some(cursor)) = selection.start {
            // `(created_at, id) > (?, ?)`, spelled so that the index on (created_at, id)
            // serves it: MariaDB does not turn a row comparison into a range.
            let created_at = utc(cursor.created_at());
            statement.push(&format!(" AND `created_at` {after}= "));
            statement.bind(created_at);
            statement.push(&format!(" AND (`created_at` {after} "));
            statement.bind(created_at);
            statement.push(&format!(" OR `id` {after} "));
            statement.bind(cursor.id());
            statement.push(")");
        }
        statement.push(&format!(
            " ORDER BY `created_at`{descending}, `id`{descending} LIMIT "
        ));
        statement.bind(i64::from(selection.limit));
        if let Start::Offset(offset) = selection.start {
            statement.push(" OFFSET ");
            // Offsets are at most MAX_OFFSET (10^7).
            statement.bind(i64::try_from(offset).unwrap_or(i64::MAX));
        }
        let (sql, statement) = statement.build()?;
        let rows = self.fetch_all(&sql, statement).await?;
        records(plan, &rows)
    }

    async fn count(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<u64> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let mut statement = Statement::new(&format!(
            "SELECT COUNT(*) FROM {} WHERE `deleted_at` IS NULL",
            plan.quoted_table
        ));
        push_conditions(&mut statement, plan, conditions)?;
        let (sql, statement) = statement.build()?;
        let row = self.fetch_one(&sql, statement).await?;
        count_at(&row, 0)
    }

    async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let mut statement = Statement::new(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE `deleted_at` IS NULL",
            plan.quoted_table
        ));
        push_conditions(&mut statement, plan, conditions)?;
        statement.push(")");
        let (sql, statement) = statement.build()?;
        let row = self.fetch_one(&sql, statement).await?;
        at(&row, 0)
    }

    async fn search(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        page: Page,
    ) -> Result<SearchPage<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        // One statement, so that the page and the count see the same rows outside a
        // transaction too: the matches counted up to one past the bound (`c`, one row), and
        // the page in list order (`p`), joined so that a page past the end still carries the
        // count (one row of NULLs). The page is found by walking the list order with the
        // conditions a filter on each row: MariaDB has no index that serves a `LIKE '%…%'`.
        let bound = MAX_EXACT_TOTAL;
        let mut statement = Statement::new(&format!(
            "SELECT p.*, c.`n` FROM (SELECT COUNT(*) AS `n` FROM (SELECT 1 FROM {} \
             WHERE `deleted_at` IS NULL",
            plan.quoted_table
        ));
        push_conditions(&mut statement, plan, conditions)?;
        statement.push(&format!(" LIMIT {}) AS m) AS c LEFT JOIN (", bound + 1));
        statement.push(&plan.select_live);
        push_conditions(&mut statement, plan, conditions)?;
        statement.push(" ORDER BY `created_at`, `id` LIMIT ");
        statement.bind(limit_i64(page.limit()));
        statement.push(" OFFSET ");
        statement.bind(offset_i64(page));
        statement.push(") AS p ON 1 = 1 ORDER BY p.`created_at`, p.`id`");
        let (sql, statement) = statement.build()?;
        let rows = self.fetch_all(&sql, statement).await?;
        let mut counted = 0;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            counted = count_at(row, plan.width())?;
            if at::<Option<Uuid>>(row, 0)?.is_some() {
                items.push(decode_record(row, 0, plan.schema.fields)?);
            }
        }
        let on_page = items.len();
        Ok(SearchPage {
            items,
            total: Total::counted(counted, page.offset(), on_page),
        })
    }

    async fn tally(
        &mut self,
        schema: &'static Schema,
        conditions: &[Condition],
        field: usize,
    ) -> Result<Vec<(Value, u64)>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let Some(column) = plan.field_columns.get(field) else {
            return Err(invalid(schema, format!("a tally of field #{field}")));
        };
        let mut statement = Statement::new(&format!(
            "SELECT {column}, COUNT(*) FROM {} WHERE `deleted_at` IS NULL",
            plan.quoted_table
        ));
        push_conditions(&mut statement, plan, conditions)?;
        statement.push(&format!(" GROUP BY {column}"));
        let (sql, statement) = statement.build()?;
        let rows = self.fetch_all(&sql, statement).await?;
        rows.iter()
            .map(|row| {
                let value = decode_value(row, 0, &plan.schema.fields[field])?;
                Ok((value, count_at(row, 1)?))
            })
            .collect()
    }

    async fn list_deleted(&mut self, schema: &'static Schema, page: Page) -> Result<Vec<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let statement = query(&plan.list_deleted)
            .bind(limit_i64(page.limit()))
            .bind(offset_i64(page));
        let rows = self.fetch_all(&plan.list_deleted, statement).await?;
        records(plan, &rows)
    }
}

impl Session {
    /// Runs `command` (`SAVEPOINT`, `ROLLBACK TO SAVEPOINT`, `RELEASE SAVEPOINT`) on this
    /// module's savepoint.
    async fn records_savepoint(&mut self, command: &str) -> Result<()> {
        let sql: Arc<str> = Arc::from(format!("{command} {SAVEPOINT}"));
        self.execute(&sql, query(&sql)).await.map(drop)
    }

    /// Undoes what a write of several statements did since its savepoint, after `error`.
    async fn undo_to_savepoint(&mut self) {
        // When the error ended the transaction (a deadlock), the session refuses every
        // statement and reports that itself: the write's own error says more than this.
        if self
            .records_savepoint("ROLLBACK TO SAVEPOINT")
            .await
            .is_ok()
        {
            let _ = self.records_savepoint("RELEASE SAVEPOINT").await;
        }
    }

    /// The live rows of `plan`'s table among `ids` (distinct, sorted), locked until the
    /// transaction ends, in id order: one statement per chunk of ids, the chunks in id order
    /// too, so that two units of work locking the same rows cannot deadlock.
    async fn lock_rows(&mut self, plan: &Plan, ids: &[Uuid]) -> Result<Vec<Record>> {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PARAMS) {
            let mut statement = Statement::new(&plan.select_live);
            statement.push(" AND `id` IN ");
            push_ids(&mut statement, chunk);
            statement.push(" ORDER BY `id` FOR UPDATE");
            let (sql, statement) = statement.build()?;
            rows.extend(records(plan, &self.fetch_all(&sql, statement).await?)?);
        }
        Ok(rows)
    }

    /// Which of `wanted` (a referred entity's position in the catalog, an id) are live rows:
    /// one statement (`UNION ALL` of one `SELECT` per referred table) per chunk of ids.
    async fn live_ids(
        &mut self,
        plans: &Plans,
        wanted: impl IntoIterator<Item = (usize, Uuid)>,
    ) -> Result<HashSet<(usize, Uuid)>> {
        let mut by_target: BTreeMap<usize, BTreeSet<Uuid>> = BTreeMap::new();
        for (target, id) in wanted {
            by_target.entry(target).or_default().insert(id);
        }
        let mut live = HashSet::new();
        let mut statement: Option<(Statement, usize)> = None;
        let mut statements = Vec::new();
        for (&target, ids) in &by_target {
            let ids: Vec<Uuid> = ids.iter().copied().collect();
            for chunk in ids.chunks(MAX_PARAMS) {
                if statement
                    .as_ref()
                    .is_some_and(|(_, bound)| bound + chunk.len() > MAX_PARAMS)
                {
                    statements.extend(statement.take().map(|(s, _)| s));
                }
                let (current, bound) = statement.get_or_insert_with(|| (Statement::new(""), 0));
                if *bound > 0 {
                    current.push(" UNION ALL ");
                }
                current.push(&format!(
                    "SELECT {target}, `id` FROM {} WHERE `deleted_at` IS NULL AND `id` IN ",
                    plans.at(target).quoted_table
                ));
                push_ids(current, chunk);
                *bound += chunk.len();
            }
        }
        statements.extend(statement.map(|(s, _)| s));
        for statement in statements {
            let (sql, statement) = statement.build()?;
            for row in self.fetch_all(&sql, statement).await? {
                let target = usize::try_from(at::<i64>(&row, 0)?).unwrap_or(usize::MAX);
                live.insert((target, at::<Uuid>(&row, 1)?));
            }
        }
        Ok(live)
    }

    /// The first row of `rows` (its position) with a reference to a row that is not live, in
    /// input order and each row's references in declaration order, with its
    /// [`Error::NotFound`] naming the referred entity. A reference to an earlier row of `rows`
    /// (an entity that refers to itself) is to a live row: it goes in first.
    async fn first_dead_reference(
        &mut self,
        plans: &Plans,
        plan: &Plan,
        rows: &[Record],
    ) -> Result<Option<(usize, Error)>> {
        if plan.references.is_empty() {
            return Ok(None);
        }
        let mut first_at: HashMap<Uuid, usize> = HashMap::new();
        for (k, row) in rows.iter().enumerate() {
            first_at.entry(row.id).or_insert(k);
        }
        let earlier = |target: usize, id: Uuid, k: usize| {
            target == plan.position && first_at.get(&id).is_some_and(|&at| at < k)
        };
        let mut wanted = Vec::new();
        for (k, row) in rows.iter().enumerate() {
            for reference in &plan.references {
                if let Some(id) = row.values[reference.field].as_uuid() {
                    if !earlier(reference.target_position, id, k) {
                        wanted.push((reference.target_position, id));
                    }
                }
            }
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        let live = self.live_ids(plans, wanted).await?;
        for (k, row) in rows.iter().enumerate() {
            for reference in &plan.references {
                let Some(id) = row.values[reference.field].as_uuid() else {
                    continue;
                };
                let target = reference.target_position;
                if !earlier(target, id, k) && !live.contains(&(target, id)) {
                    let kind = plans.at(target).schema.kind();
                    return Ok(Some((k, Error::not_found(kind, id))));
                }
            }
        }
        Ok(None)
    }

    /// [`Error::NotFound`] for the first reference among the fields `changes` sets (in
    /// declaration order) to a row that is not live.
    async fn dead_set_reference(
        &mut self,
        plans: &Plans,
        plan: &Plan,
        changes: &Changes,
    ) -> Result<Option<Error>> {
        let set: Vec<(usize, Uuid)> = plan
            .references
            .iter()
            .filter_map(|reference| {
                let (_, value) = changes.sets.iter().find(|(f, _)| *f == reference.field)?;
                Some((reference.target_position, value.as_uuid()?))
            })
            .collect();
        if set.is_empty() {
            return Ok(None);
        }
        let live = self.live_ids(plans, set.iter().copied()).await?;
        Ok(set
            .into_iter()
            .find(|wanted| !live.contains(wanted))
            .map(|(target, id)| Error::not_found(plans.at(target).schema.kind(), id)))
    }

    /// For each question, whether a live row other than its id holds its values for its
    /// rule: one `EXISTS` column per question, each answered by the rule's unique index.
    async fn taken(&mut self, plan: &Plan, questions: &[Taken<'_>]) -> Result<Vec<bool>> {
        let mut answers = Vec::with_capacity(questions.len());
        let mut rest = questions;
        while !rest.is_empty() {
            // One statement's questions: within the bounds on answers and placeholders.
            let mut params = 0;
            let mut n = 0;
            for question in rest.iter().take(MAX_ANSWERS) {
                let needs = question.values.len() + 1;
                if params + needs > MAX_PARAMS {
                    break;
                }
                params += needs;
                n += 1;
            }
            let (batch, later) = rest.split_at(n.max(1));
            rest = later;
            let mut statement = Statement::new("SELECT ");
            for (i, question) in batch.iter().enumerate() {
                if i > 0 {
                    statement.push(", ");
                }
                statement.push(&format!(
                    "EXISTS (SELECT 1 FROM {} o WHERE ",
                    plan.quoted_table
                ));
                push_unique_match(&mut statement, plan, question.rule, "o", &question.values);
                statement.push(" AND o.`id` <> ");
                statement.bind(question.id);
                statement.push(")");
            }
            let (sql, statement) = statement.build()?;
            let row = self.fetch_one(&sql, statement).await?;
            for i in 0..batch.len() {
                answers.push(at::<bool>(&row, i)?);
            }
        }
        Ok(answers)
    }

    /// The ids among `ids` that rows of `plan`'s table, live or not, have.
    async fn stored_ids(&mut self, plan: &Plan, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
        let mut stored = HashSet::new();
        for chunk in ids.chunks(MAX_PARAMS) {
            let mut statement = Statement::new(&format!(
                "SELECT `id` FROM {} WHERE `id` IN ",
                plan.quoted_table
            ));
            push_ids(&mut statement, chunk);
            let (sql, statement) = statement.build()?;
            for row in self.fetch_all(&sql, statement).await? {
                stored.insert(at::<Uuid>(&row, 0)?);
            }
        }
        Ok(stored)
    }

    /// The first rule `rows` (not in the table) break, as every backend finds it: rows in
    /// order, each row's unique rules in declaration order, a rule broken when another live
    /// row or an earlier row of `rows` holds the row's values for it; then the row's id, when
    /// a row already has it.
    async fn first_conflict(&mut self, plan: &Plan, rows: &[Record]) -> Result<Option<Error>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut questions = Vec::new();
        for row in rows {
            for rule in 0..plan.unique_fields.len() {
                if let Some(values) = rule_values(plan, rule, row) {
                    questions.push(Taken {
                        rule,
                        id: row.id,
                        values,
                    });
                }
            }
        }
        let answers = self.taken(plan, &questions).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let stored = self.stored_ids(plan, &ids).await?;
        let mut answers = answers.into_iter();
        let mut earlier: HashSet<(usize, Vec<&Value>)> = HashSet::new();
        let mut earlier_ids = HashSet::new();
        for row in rows {
            for rule in 0..plan.unique_fields.len() {
                let Some(values) = rule_values(plan, rule, row) else {
                    continue;
                };
                let held = answers.next().unwrap_or(false);
                if held || !earlier.insert((rule, values)) {
                    let schema = plan.schema;
                    return Ok(Some(Error::Conflict {
                        constraint: Constraint::of_rule(schema, &schema.unique[rule]),
                    }));
                }
            }
            if stored.contains(&row.id) || !earlier_ids.insert(row.id) {
                return Ok(Some(Error::Conflict {
                    constraint: Constraint::primary_key(plan.schema.kind()),
                }));
            }
        }
        Ok(None)
    }

    /// The first unique rule (in declaration order) that `changes`, applied to the live rows
    /// whose new state is `rows`, break: a rule whose fields the changes set (none to `NULL`,
    /// which nothing conflicts with) is broken when two of the rows would hold the same values,
    /// or another live row holds a row's new values.
    async fn unique_broken(
        &mut self,
        plan: &Plan,
        rows: &[Record],
        changes: &Changes,
    ) -> Result<Option<Error>> {
        let rules: Vec<usize> = (0..plan.unique_fields.len())
            .filter(|&rule| {
                let fields = &plan.unique_fields[rule];
                let set: Vec<&Value> = changes
                    .sets
                    .iter()
                    .filter(|(f, _)| fields.contains(f))
                    .map(|(_, v)| v)
                    .collect();
                !set.is_empty() && !set.iter().any(|v| v.is_null())
            })
            .collect();
        let mut questions = Vec::new();
        for &rule in &rules {
            for row in rows {
                if let Some(values) = rule_values(plan, rule, row) {
                    questions.push(Taken {
                        rule,
                        id: row.id,
                        values,
                    });
                }
            }
        }
        let answers = self.taken(plan, &questions).await?;
        for &rule in &rules {
            let mut seen = HashSet::new();
            let among = questions
                .iter()
                .filter(|q| q.rule == rule)
                .any(|q| !seen.insert(&q.values));
            let held = questions
                .iter()
                .zip(&answers)
                .any(|(q, &held)| q.rule == rule && held);
            if among || held {
                let schema = plan.schema;
                return Ok(Some(Error::Conflict {
                    constraint: Constraint::of_rule(schema, &schema.unique[rule]),
                }));
            }
        }
        Ok(None)
    }

    /// Inserts `rows` (none of whose references is dead), all or nothing: one multi-row
    /// `INSERT` per batch that fits the placeholders, the batches inside a savepoint when there
    /// are several. When a batch fails on a unique index, the error names the first row's
    /// first broken rule.
    async fn insert_rows(&mut self, plan: &Plan, entry: &Entry, rows: &[Record]) -> Result<()> {
        if let [row] = rows {
            // In the columns' order: the id, the fields, the bookkeeping, the document.
            let mut statement = query(&plan.insert_one).bind(row.id);
            for (value, &storage) in row.values.iter().zip(&plan.storages) {
                statement = bind_value(statement, storage, value);
            }
            statement = statement
                .bind(utc(row.created_at))
                .bind(utc(row.updated_at))
                .bind(row.version);
            if plan.searchable {
                statement = statement.bind(search_document(entry, &row.values));
            }
            return match self.execute(&plan.insert_one, statement).await {
                Ok(_) => Ok(()),
                Err(error) if is_duplicate(&error) => {
                    Err(diagnosed(self.first_conflict(plan, rows).await, error))
                }
                Err(error) => Err(error),
            };
        }
        let per_statement = (MAX_PARAMS / plan.insert_width).max(1);
        let batches = rows.len().div_ceil(per_statement);
        let guarded = batches > 1 && self.in_transaction();
        if guarded {
            self.records_savepoint("SAVEPOINT").await?;
        }
        for batch in rows.chunks(per_statement) {
            let mut statement = Statement::new(&plan.insert_into);
            for (i, row) in batch.iter().enumerate() {
                statement.push(if i == 0 { "(" } else { ", (" });
                statement.bind(row.id);
                for (value, &storage) in row.values.iter().zip(&plan.storages) {
                    statement.push(", ");
                    statement.value(storage, value);
                }
                statement.push(", ");
                statement.bind(utc(row.created_at));
                statement.push(", ");
                statement.bind(utc(row.updated_at));
                statement.push(", ");
                statement.bind(row.version);
                if plan.searchable {
                    statement.push(", ");
                    statement.bind(search_document(entry, &row.values));
                }
                statement.push(")");
            }
            let (sql, statement) = statement.build()?;
            if let Err(error) = self.execute(&sql, statement).await {
                // The failed statement changed nothing; the batches before it are in the table
                // (until the savepoint is rolled back), so they count as earlier rows.
                let why = if is_duplicate(&error) {
                    self.first_conflict(plan, batch).await
                } else {
                    Ok(None)
                };
                if guarded {
                    self.undo_to_savepoint().await;
                }
                return Err(diagnosed(why, error));
            }
        }
        if guarded {
            self.records_savepoint("RELEASE SAVEPOINT").await?;
        }
        Ok(())
    }

    /// When a purge of `plan`'s rows soft-deleted before `before` was refused by a foreign key
    /// of the table `referring`, one of the rows it would have deleted that a row of
    /// `referring` refers to (the first in list order); `None` when there is none (the refusal
    /// came through a row the purge cascaded to).
    async fn referred_row(
        &mut self,
        plan: &Plan,
        referring: &str,
        before: Timestamp,
    ) -> Result<Option<Uuid>> {
        let keys = "SELECT `COLUMN_NAME` FROM information_schema.`KEY_COLUMN_USAGE` \
                    WHERE `TABLE_SCHEMA` = DATABASE() AND `TABLE_NAME` = ? \
                    AND `REFERENCED_TABLE_SCHEMA` = DATABASE() AND `REFERENCED_TABLE_NAME` = ? \
                    AND `REFERENCED_COLUMN_NAME` = 'id'";
        let sql: Arc<str> = Arc::from(keys);
        let statement = query(&sql)
            .bind(referring.to_owned())
            .bind(plan.table.to_owned());
        let columns: Vec<String> = self
            .fetch_all(&sql, statement)
            .await?
            .iter()
            .map(|row| at::<String>(row, 0))
            .collect::<Result<_>>()?;
        for column in columns {
            // Names from the server's catalog, quoted as identifiers.
            let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
            let mut statement = Statement::new(&format!(
                "SELECT p.`id` FROM {} p WHERE p.`deleted_at` IS NOT NULL AND p.`deleted_at` < ",
                plan.quoted_table
            ));
            statement.bind(utc(before));
            statement.push(&format!(
                " AND EXISTS (SELECT 1 FROM {} r WHERE r.{} = p.`id`) \
                 ORDER BY p.`created_at`, p.`id` LIMIT 1",
                quote(referring),
                quote(&column)
            ));
            let (sql, statement) = statement.build()?;
            if let Some(row) = self.fetch_optional(&sql, statement).await? {
                return Ok(Some(at::<Uuid>(&row, 0)?));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl RecordWriter for Session {
    async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let entry = plans.entry(plan);
        if rows.is_empty() {
            return Ok(rows);
        }
        if let Some((k, missing)) = self.first_dead_reference(&plans, plan, &rows).await? {
            // A row before it that breaks a unique rule comes first.
            return Err(self
                .first_conflict(plan, &rows[..k])
                .await?
                .unwrap_or(missing));
        }
        match self.insert_rows(plan, entry, &rows).await {
            Ok(()) => Ok(rows),
            // A referred row deleted for good between the check and the insert: the foreign
            // key's refusal names the entity but not the id, which the check finds again.
            Err(error) if is_unnamed_not_found(&error) => {
                let why = self.first_dead_reference(&plans, plan, &rows).await;
                Err(diagnosed(why.map(|found| found.map(|(_, e)| e)), error))
            }
            Err(error) => Err(error),
        }
    }

    async fn update(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        changes: &Changes,
        expected_version: Option<i64>,
    ) -> Result<Record> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        check_changes(plan, changes)?;
        // The row, locked: what the update starts from stays so until the transaction ends.
        let locked = self
            .fetch_optional(&plan.get_locked, query(&plan.get_locked).bind(id))
            .await?;
        let Some(locked) = locked else {
            return Err(Error::not_found(schema.kind(), id));
        };
        let mut row = decode_record(&locked, 0, plan.schema.fields)?;
        if let Some(expected) = expected_version.filter(|&e| e != row.version) {
            return Err(Error::stale_version(
                schema.kind(),
                id,
                expected,
                row.version,
            ));
        }
        if let Some(missing) = self.dead_set_reference(&plans, plan, changes).await? {
            return Err(missing);
        }
        changes.apply_to(&mut row);
        let mut statement =
            Statement::new(&format!("UPDATE {} SET `updated_at` = ", plan.quoted_table));
        statement.bind(utc(changes.at));
        statement.push(", `version` = `version` + 1");
        for (field, value) in &changes.sets {
            statement.push(&format!(", {} = ", plan.field_columns[*field]));
            statement.value(plan.storages[*field], value);
        }
        if touches_search(plan, changes) {
            statement.push(", `search_text` = ");
            statement.bind(search_document(plans.entry(plan), &row.values));
        }
        statement.push(" WHERE `id` = ");
        statement.bind(id);
        statement.push(" AND `deleted_at` IS NULL");
        let (sql, statement) = statement.build()?;
        match self.execute(&sql, statement).await {
            Ok(done) if done.rows_affected() == 1 => Ok(row),
            Ok(_) => Err(raced(&format!("the {}", schema.name))),
            Err(error) if is_unnamed_not_found(&error) => {
                let why = self.dead_set_reference(&plans, plan, changes).await;
                Err(diagnosed(why, error))
            }
            Err(error) if is_duplicate(&error) => {
                let rows = std::slice::from_ref(&row);
                Err(diagnosed(
                    self.unique_broken(plan, rows, changes).await,
                    error,
                ))
            }
            Err(error) => Err(error),
        }
    }

    async fn update_many(
        &mut self,
        schema: &'static Schema,
        ids: &[Uuid],
        changes: &Changes,
    ) -> Result<u64> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        check_changes(plan, changes)?;
        let ids = distinct_sorted(ids);
        let mut rows = self.lock_rows(plan, &ids).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        if let Some(missing) = self.dead_set_reference(&plans, plan, changes).await? {
            return Err(missing);
        }
        for row in &mut rows {
            changes.apply_to(row);
        }
        // The search document: the same for every row when the changes set all its fields,
        // else each row's own, from the row as the update leaves it.
        let entry = plans.entry(plan);
        let documents = touches_search(plan, changes).then(|| {
            if plan.search_fields.iter().all(|&f| changes.sets(f)) {
                vec![search_document(entry, &rows[0].values)]
            } else {
                rows.iter()
                    .map(|row| search_document(entry, &row.values))
                    .collect()
            }
        });
        let per_row = match &documents {
            Some(documents) if documents.len() > 1 => 3,
            _ => 1,
        };
        let fixed = 2 + changes.sets.len();
        let per_statement = (MAX_PARAMS.saturating_sub(fixed) / per_row).max(1);
        let batches = rows.len().div_ceil(per_statement);
        let guarded = batches > 1 && self.in_transaction();
        if guarded {
            self.records_savepoint("SAVEPOINT").await?;
        }
        let mut changed = 0;
        for (number, batch) in rows.chunks(per_statement).enumerate() {
            let mut statement =
                Statement::new(&format!("UPDATE {} SET `updated_at` = ", plan.quoted_table));
            statement.bind(utc(changes.at));
            statement.push(", `version` = `version` + 1");
            for (field, value) in &changes.sets {
                statement.push(&format!(", {} = ", plan.field_columns[*field]));
                statement.value(plan.storages[*field], value);
            }
            match &documents {
                None => {}
                Some(documents) if documents.len() == 1 => {
                    statement.push(", `search_text` = ");
                    statement.bind(documents[0].clone());
                }
                Some(documents) => {
                    statement.push(", `search_text` = CASE `id`");
                    let first = number * per_statement;
                    for (row, document) in batch.iter().zip(&documents[first..]) {
                        statement.push(" WHEN ");
                        statement.bind(row.id);
                        statement.push(" THEN ");
                        statement.bind(document.clone());
                    }
                    statement.push(" END");
                }
            }
            let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
            statement.push(" WHERE `id` IN ");
            push_ids(&mut statement, &ids);
            statement.push(" AND `deleted_at` IS NULL");
            let (sql, statement) = statement.build()?;
            match self.execute(&sql, statement).await {
                Ok(done) => changed += done.rows_affected(),
                Err(error) => {
                    let why = if is_duplicate(&error) {
                        self.unique_broken(plan, &rows, changes).await
                    } else if is_unnamed_not_found(&error) {
                        self.dead_set_reference(&plans, plan, changes).await
                    } else {
                        Ok(None)
                    };
                    if guarded {
                        self.undo_to_savepoint().await;
                    }
                    return Err(diagnosed(why, error));
                }
            }
        }
        if guarded {
            self.records_savepoint("RELEASE SAVEPOINT").await?;
        }
        Ok(changed)
    }

    async fn increment(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        field: usize,
        delta: i64,
        at_: Timestamp,
    ) -> Result<Incremented> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let Some(Some(increment)) = plan.increments.get(field) else {
            return Err(invalid(
                schema,
                format!("an increment of field #{field}, which is not an integer"),
            ));
        };
        // The sum is in the declared range when the current value is in it shifted by
        // -delta; computed without overflow, and bound within i64 (the value is one).
        let low = i128::from(increment.min) - i128::from(delta);
        let high = i128::from(increment.max) - i128::from(delta);
        let low = low.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        let high = high.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        let in_range = low <= high;
        if in_range {
            let statement = query(&increment.update)
                .bind(delta)
                .bind(utc(at_))
                .bind(id)
                .bind(i64::try_from(low).expect("clamped"))
                .bind(i64::try_from(high).expect("clamped"));
            let done = self.execute(&increment.update, statement).await?;
            if done.rows_affected() == 1 {
                // No RETURNING on an UPDATE: the row as the transaction now sees it (its own
                // write, which holds the row's lock until it ends).
                let row = self
                    .fetch_optional(&plan.get, query(&plan.get).bind(id))
                    .await?;
                return match row {
                    Some(row) => Ok(Incremented::Done(decode_record(
                        &row,
                        0,
                        plan.schema.fields,
                    )?)),
                    None => Err(raced(&format!("the {}", schema.name))),
                };
            }
        }
        let statement = query(&increment.current).bind(id);
        let Some(row) = self.fetch_optional(&increment.current, statement).await? else {
            return Ok(Incremented::NotLive);
        };
        let current: i64 = at(&row, 0)?;
        let fits = current
            .checked_add(delta)
            .is_some_and(|sum| (increment.min..=increment.max).contains(&sum));
        if fits && in_range {
            // The statement saw another value: a concurrent write changed it since.
            return Err(raced(&format!("the {}", schema.name)));
        }
        Ok(Incremented::OutOfRange { current })
    }

    async fn lock(&mut self, schema: &'static Schema, ids: &[Uuid]) -> Result<Vec<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let ids = distinct_sorted(ids);
        self.lock_rows(plan, &ids).await
    }

    async fn soft_delete(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        at_: Timestamp,
    ) -> Result<bool> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let statement = query(&plan.soft_delete)
            .bind(utc(at_))
            .bind(utc(at_))
            .bind(id);
        if self
            .execute(&plan.soft_delete, statement)
            .await?
            .rows_affected()
            > 0
        {
            return Ok(true);
        }
        let row = self
            .fetch_one(&plan.exists_any, query(&plan.exists_any).bind(id))
            .await?;
        if at::<bool>(&row, 0)? {
            Ok(false)
        } else {
            Err(Error::not_found(schema.kind(), id))
        }
    }

    async fn restore(&mut self, schema: &'static Schema, id: Uuid, at_: Timestamp) -> Result<bool> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let statement = query(&plan.restore).bind(utc(at_)).bind(id);
        // A live row that took a value meanwhile makes the guarded update change nothing; one
        // that committed it between the guard and the write makes the unique index refuse it.
        let refused = match self.execute(&plan.restore, statement).await {
            Ok(done) if done.rows_affected() == 1 => return Ok(true),
            Ok(_) => None,
            Err(error) if is_duplicate(&error) => Some(error),
            Err(error) => return Err(error),
        };
        let sql = &plan.why_not_restored;
        let Some(row) = self.fetch_optional(sql, query(sql).bind(id)).await? else {
            return Err(Error::not_found(schema.kind(), id));
        };
        if !at::<bool>(&row, 0)? {
            return Ok(false);
        }
        for (i, rule) in schema.unique.iter().enumerate() {
            if at::<bool>(&row, 1 + i)? {
                let constraint = Constraint::of_rule(schema, rule);
                return Err(Error::Conflict { constraint });
            }
        }
        Err(refused.unwrap_or_else(|| raced(&format!("the {}", schema.name))))
    }

    async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        // The foreign keys apply each referring entity's OnDelete, in the same statement; a
        // refusal rolls back that statement alone, and the unit of work goes on.
        let statement = query(&plan.hard_delete).bind(id);
        match self.execute(&plan.hard_delete, statement).await {
            Ok(done) if done.rows_affected() == 0 => Err(Error::not_found(schema.kind(), id)),
            Ok(_) => Ok(()),
            // The refused row is the one asked for (or a row its delete cascaded to, which is
            // refused because of it).
            Err(Error::Referenced { table, .. }) => {
                Err(Error::referenced(schema.kind(), id, table))
            }
            Err(error) => Err(error),
        }
    }

    async fn purge_deleted_before(
        &mut self,
        schema: &'static Schema,
        before: Timestamp,
    ) -> Result<u64> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let statement = query(&plan.purge).bind(utc(before));
        match self.execute(&plan.purge, statement).await {
            Ok(done) => Ok(done.rows_affected()),
            Err(Error::Referenced { entity, id, table }) => {
                // MariaDB's refusal names the referring table, not the row: one of the rows
                // the purge would have deleted that the table refers to.
                let referred = self.referred_row(plan, &table, before).await?;
                Err(match referred {
                    Some(row) => Error::referenced(schema.kind(), row, table),
                    None => Error::Referenced { entity, id, table },
                })
            }
            Err(error) => Err(error),
        }
    }

    async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()> {
        crate::outbox::append_events(self, events).await
    }

    fn own_events(&self) -> bool {
        Session::own_events(self)
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use sqlx::Connection as _;
    use stockroom_core::schema::{RecordWriter, Value};
    use stockroom_core::{
        CategoryId, Constraint, Entity as _, EntityKind, Error, NewProduct, ProductFilter,
        ProductId, ProductPatch, Store,
    };

    use crate::testing::TestDatabase;

    /// The stored search document of each of `ids`, beside the one the core makes of the row.
    async fn documents(db: &TestDatabase, store: &crate::MariaDbStore, ids: &[ProductId]) {
        let mut conn = db.connect().await;
        let mut read = store.read().await.unwrap();
        for &id in ids {
            let product = read.products().require(id).await.unwrap();
            let stored: String =
                sqlx::query_scalar("SELECT `search_text` FROM `products` WHERE `id` = ?")
                    .bind(id.as_uuid())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(stored, product.search_document(), "{product:?}");
        }
        conn.close().await.unwrap();
    }

    /// How many products, live or not, the table holds.
    async fn stored_products(db: &TestDatabase) -> i64 {
        let mut conn = db.connect().await;
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM `products`")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        n
    }

    /// Whatever fields an update names (one text field, all three, the description cleared,
    /// none of them; one row or many, each row then getting its own document), the stored
    /// search document is the core's `search_document` of the updated row, byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_stores_the_cores_search_document_of_the_updated_row() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut uow = store.begin().await.unwrap();
        let mut ids = Vec::new();
        for tag in ["a", "b", "c"] {
            let new = NewProduct::new(
                &format!("Straße {tag}"),
                tag,
                &format!("SKU-{}", tag.to_uppercase()),
            )
            .unwrap()
            .with_description("Ǆ ΣΑΣ")
            .unwrap();
            ids.push(uow.products().create(new).await.unwrap().id);
        }
        let patches = [
            ProductPatch::new().with_name("ÉCOLE Ⅻ").unwrap(),
            ProductPatch::new().with_sku("NEW-SKU").unwrap(),
            ProductPatch::new().with_description(Some("ﬁn ǅ")).unwrap(),
            ProductPatch::new().with_description(None).unwrap(),
            ProductPatch::new()
                .with_name("All")
                .unwrap()
                .with_sku("ALL-1")
                .unwrap()
                .with_description(Some("Three ß"))
                .unwrap(),
            ProductPatch::new().with_status(stockroom_core::ProductStatus::Active),
        ];
        for patch in &patches {
            uow.products().update(ids[0], patch, None).await.unwrap();
            if patch.sku().is_none() {
                let changed = uow.products().update_many(&ids[1..], patch).await.unwrap();
                assert_eq!(changed, 2, "{patch:?}");
            }
        }
        uow.commit().await.unwrap();
        documents(&db, &store, &ids).await;
        store.close().await;
        db.drop_now().await;
    }

    /// An insert of more rows than one statement's placeholders hold runs as several
    /// statements, all or nothing: a taken value in the last row names its rule, leaves none of
    /// the rows in the table, and the unit of work goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_insert_over_several_statements_is_all_or_nothing() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let plan_rows = {
            let plans =
                crate::plans::Plans::new(stockroom_core::schema::Catalog::new(&[]).unwrap());
            let plan = plans.of(stockroom_core::Product::schema()).unwrap();
            super::MAX_PARAMS / plan.insert_width
        };
        let count = plan_rows + 50;
        let news = |last_sku: &str| -> Vec<NewProduct> {
            (0..count)
                .map(|i| {
                    let sku = if i + 1 == count {
                        last_sku.to_owned()
                    } else {
                        format!("B-{i}")
                    };
                    NewProduct::new(&format!("Bulk {i}"), &format!("bulk-{i}"), &sku).unwrap()
                })
                .collect()
        };
        let mut uow = store.begin().await.unwrap();
        let refused = uow.products().create_many(news("B-0")).await;
        match refused {
            Err(Error::Conflict { constraint }) => assert_eq!(constraint, Constraint::PRODUCT_SKU),
            other => panic!(
                "expected a conflict on the sku, got {:?}",
                other.map(|r| r.len())
            ),
        }
        let kept = NewProduct::new("Kept", "kept", "KEPT-1").unwrap();
        uow.products().create(kept).await.unwrap();
        uow.commit().await.unwrap();
        assert_eq!(
            stored_products(&db).await,
            1,
            "only the product after the refusal"
        );

        let mut uow = store.begin().await.unwrap();
        let rows = uow.products().create_many(news("B-LAST")).await.unwrap();
        uow.commit().await.unwrap();
        assert_eq!(rows.len(), count);
        let mut read = store.read().await.unwrap();
        let all = read
            .products()
            .count(&ProductFilter::default())
            .await
            .unwrap();
        assert_eq!(all, count as u64 + 1);
        drop(read);
        store.close().await;
        db.drop_now().await;
    }

    /// The rules several rows break are reported per row in input order: a taken value of the
    /// first row before a missing reference of the second, and the other way round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_row_that_breaks_a_rule_is_the_one_reported() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut uow = store.begin().await.unwrap();
        let taken = NewProduct::new("Taken", "taken", "T-1").unwrap();
        uow.products().create(taken).await.unwrap();
        uow.commit().await.unwrap();
        let ghost = CategoryId::new();
        let clash = || NewProduct::new("Clash", "taken", "C-1").unwrap();
        let lost = || {
            NewProduct::new("Lost", "lost", "L-1")
                .unwrap()
                .with_category_id(ghost)
        };
        let mut uow = store.begin().await.unwrap();
        match uow.products().create_many(vec![clash(), lost()]).await {
            Err(Error::Conflict { constraint }) => {
                assert_eq!(constraint, Constraint::PRODUCT_SLUG)
            }
            other => panic!("expected the first row's conflict, got {other:?}"),
        }
        match uow.products().create_many(vec![lost(), clash()]).await {
            Err(Error::NotFound { entity, id }) => {
                assert_eq!(
                    (entity, id.as_uuid()),
                    (EntityKind::CATEGORY, ghost.as_uuid())
                )
            }
            other => panic!("expected the first row's missing category, got {other:?}"),
        }
        uow.rollback().await.unwrap();
        assert_eq!(stored_products(&db).await, 1);
        store.close().await;
        db.drop_now().await;
    }

    /// A row whose id a row already has is a conflict on the primary key (MariaDB's message
    /// names the key `PRIMARY`, not the table), and is not written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_already_taken_is_a_conflict_on_the_primary_key() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut uow = store.begin().await.unwrap();
        let first = NewProduct::new("First", "first", "F-1").unwrap();
        let first = uow.products().create(first).await.unwrap();
        let mut again = first.to_record();
        again.values_mut()[1] = Value::Text("second".to_owned());
        again.values_mut()[2] = Value::Text("S-2".to_owned());
        let records: &mut dyn RecordWriter = uow.repositories();
        let schema = stockroom_core::Product::schema();
        match records.insert(schema, vec![again.clone()]).await {
            Err(Error::Conflict { constraint }) => {
                assert_eq!(constraint, Constraint::primary_key(EntityKind::PRODUCT))
            }
            other => panic!("expected a conflict on the primary key, got {other:?}"),
        }
        let mut other = again.clone();
        other.id = uuid::Uuid::now_v7();
        other.values_mut()[1] = Value::Text("third".to_owned());
        other.values_mut()[2] = Value::Text("T-3".to_owned());
        match records.insert(schema, vec![other, again]).await {
            Err(Error::Conflict { constraint }) => {
                assert_eq!(constraint, Constraint::primary_key(EntityKind::PRODUCT))
            }
            other => panic!("expected a conflict on the primary key, got {other:?}"),
        }
        uow.commit().await.unwrap();
        assert_eq!(stored_products(&db).await, 1);
        store.close().await;
        db.drop_now().await;
    }

    /// A delete for good, or a purge, that a foreign key of the application's own table
    /// refuses is `Referenced`, naming the product and the table (MariaDB's message names
    /// neither the row nor its id), and the unit of work goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_the_applications_table_refuses_names_the_row_and_the_table() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.store().await;
        let mut uow = store.begin().await.unwrap();
        let other = NewProduct::new("Other", "other", "O-1").unwrap();
        uow.products().create(other).await.unwrap();
        let ordered = NewProduct::new("Ordered", "ordered", "OR-1").unwrap();
        let ordered = uow.products().create(ordered).await.unwrap();
        uow.commit().await.unwrap();
        let mut conn = db.connect().await;
        sqlx::raw_sql(
            "CREATE TABLE `orders` (`number` BIGINT PRIMARY KEY, \
             `product_id` BINARY(16) NOT NULL, CONSTRAINT `orders_product` FOREIGN KEY \
             (`product_id`) REFERENCES `products` (`id`)) ENGINE=InnoDB",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO `orders` VALUES (1, ?)")
            .bind(ordered.id.as_uuid())
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        stockroom_conformance::application_sql::a_delete_another_table_refuses_is_referenced(
            &store, ordered.id, "orders",
        )
        .await;
        stockroom_conformance::application_sql::a_purge_another_table_refuses_is_referenced(
            &store, ordered.id, "orders",
        )
        .await;
        store.close().await;
        db.drop_now().await;
    }
}

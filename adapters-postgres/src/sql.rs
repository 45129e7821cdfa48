//! The generic SQL: the record ports ([`RecordReader`], [`RecordWriter`]) implemented once, on
//! [`Session`], for every entity of the store's catalog, Stockroom's and the application's
//! alike, over the statements of the entity's [`Plan`] (written when the store was built) and
//! the ones written here per call (conditions, `SET` lists).
//!
//! One statement per operation on the success path. Expected failures never abort the
//! transaction: an insert is `ON CONFLICT DO NOTHING` and checks that its references are live;
//! an update carries guards (the rows it refers to are live, its new unique values are free)
//! and changes nothing rather than fail. A second statement, run only when the first changed
//! nothing, says which rule was broken, in the order every backend reports them: the row
//! missing, a stale version, then references in declaration order, then unique rules in
//! declaration order; when none is (a concurrent write changed things between the two), the
//! error is `Transient`, and the same request may be sent again.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use stockroom_core::adapter::like_pattern;
use stockroom_core::outbox::NewEvent;
use stockroom_core::schema::{
    invalid, search_document, Changes, Condition, Entry, Incremented, Order, Record, RecordReader,
    RecordWriter, Schema, Selection, Start, Value,
};
use stockroom_core::time::Timestamp;
use stockroom_core::{Constraint, Error, Page, Result, SearchPage, Total, MAX_EXACT_TOTAL};
use uuid::Uuid;

use crate::codec::{
    at, bind_column, bind_value, count_u64, decode_record, decode_value, limit_i64, offset_i64,
    query, Statement,
};
use crate::plans::{Plan, Plans};
use crate::session::Session;

/// Rows per `INSERT … SELECT FROM UNNEST(…)` statement, or per `COPY`, of an insert of many
/// rows.
pub(crate) const BATCH: usize = 10_000;

/// A write that lost a race with a concurrent one between its statement and its diagnosis:
/// nothing was applied, and the same request may be sent again.
pub(crate) fn raced(what: &str) -> Error {
    Error::transient(format!("{what} changed concurrently; retry"))
}

/// Appends ` AND …` for each of `conditions` to a statement over `plan`'s table (columns
/// unqualified). A condition on a reference field also needs the row it names to be live: a
/// deleted row filters like an absent one.
fn push_conditions(statement: &mut Statement, plan: &Plan, conditions: &[Condition]) -> Result<()> {
    for condition in conditions {
        match condition {
            Condition::Eq { field, value } => {
                let Some(declared) = plan.schema.fields.get(*field) else {
                    return Err(invalid(
                        plan.schema,
                        format!("a condition names field #{field}"),
                    ));
                };
                let placeholder = statement.value(plan.storages[*field], value);
                statement.push(&format!(" AND {} = {placeholder}", declared.name));
                if let Some(reference) = plan.references.iter().find(|r| r.field == *field) {
                    statement.push(&format!(
                        " AND EXISTS (SELECT 1 FROM {} x WHERE x.id = {placeholder} \
                         AND x.deleted_at IS NULL)",
                        reference.target
                    ));
                }
            }
            Condition::Search(query) => {
                // Served by the trigram index on search_text. The pattern escapes `%`, `_` and
                // `\` with a backslash, LIKE's default escape on every engine; CockroachDB does
                // not use its trigram index for a LIKE with an ESCAPE clause.
                let placeholder = statement.arg(like_pattern(query));
                statement.push(&format!(" AND search_text LIKE {placeholder}"));
            }
        }
    }
    Ok(())
}

/// `SELECT <columns> FROM <table> WHERE deleted_at IS NULL <conditions>`.
fn select_live(plan: &Plan, conditions: &[Condition]) -> Result<Statement> {
    let mut statement = Statement::new(&format!(
        "SELECT {} FROM {} WHERE deleted_at IS NULL",
        plan.columns, plan.table
    ));
    push_conditions(&mut statement, plan, conditions)?;
    Ok(statement)
}

/// The records of `rows`, each read as `plan`'s entity.
fn records(plan: &Plan, rows: &[PgRow]) -> Result<Vec<Record>> {
    rows.iter()
        .map(|row| decode_record(row, 0, plan.schema.fields))
        .collect()
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
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .fetch_all(&plan.get_many, query(&plan.get_many).bind(ids))
            .await?;
        records(plan, &rows)
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
        let mut statement = select_live(plan, &selection.conditions)?;
        let (after, descending) = match selection.order {
            Order::Oldest => (">", ""),
            Order::Newest => ("<", " DESC"),
        };
        if let Start::After(Some(cursor)) = selection.start {
            let created_at = statement.arg(cursor.created_at());
            let id = statement.arg(cursor.id());
            statement.push(&format!(
                " AND (created_at, id) {after} ({created_at}, {id})"
            ));
        }
        statement.push(&format!(
            " ORDER BY created_at{descending}, id{descending} LIMIT "
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
            "SELECT count(*) FROM {} WHERE deleted_at IS NULL",
            plan.table
        ));
        push_conditions(&mut statement, plan, conditions)?;
        let (sql, statement) = statement.build()?;
        let row = self.fetch_one(&sql, statement).await?;
        at(&row, 0).map(count_u64)
    }

    async fn exists(&mut self, schema: &'static Schema, conditions: &[Condition]) -> Result<bool> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let mut statement = Statement::new(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE deleted_at IS NULL",
            plan.table
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
        // One statement. `matched`: the matching rows' keys, up to one past the bound (one
        // scan of the matches). Within the bound the page is the first of them in list order,
        // read by id; beyond it (the term is common) the page is found by walking the list
        // order, the conditions a filter on each row. A page past the end still carries the
        // count (one row of NULLs).
        let bound = MAX_EXACT_TOTAL;
        let mut statement = Statement::new(&format!(
            "WITH matched AS MATERIALIZED (SELECT created_at, id FROM {} WHERE deleted_at IS NULL",
            plan.table
        ));
        push_conditions(&mut statement, plan, conditions)?;
        let limit = statement.arg(limit_i64(page.limit()));
        let offset = statement.arg(offset_i64(page));
        statement.push(&format!(
            " LIMIT {}), counted AS (SELECT count(*) AS total FROM matched), \
             page AS ((SELECT {columns} FROM {table} WHERE id IN (SELECT id FROM matched \
             ORDER BY created_at, id LIMIT {limit} OFFSET {offset}) \
             AND (SELECT total FROM counted) <= {bound}) \
             UNION ALL (SELECT {columns} FROM {table} WHERE deleted_at IS NULL",
            bound + 1,
            columns = plan.columns,
            table = plan.table,
        ));
        push_conditions(&mut statement, plan, conditions)?;
        statement.push(&format!(
            " AND (SELECT total FROM counted) > {bound} \
             ORDER BY created_at, id LIMIT {limit} OFFSET {offset})) \
             SELECT page.*, counted.total FROM counted LEFT JOIN page ON true \
             ORDER BY page.created_at, page.id"
        ));
        let (sql, statement) = statement.build()?;
        // Planned for its arguments each time (an unnamed statement): a generic plan cannot
        // tell a rare term from a common one, and sorted every match of "mug" among a million
        // rows (105 ms where the plan for the term takes 8 ms).
        let rows = self.fetch_all(&sql, statement.persistent(false)).await?;
        let mut counted = 0;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            counted = at(row, plan.width())?;
            if at::<Option<Uuid>>(row, 0)?.is_some() {
                items.push(decode_record(row, 0, plan.schema.fields)?);
            }
        }
        let on_page = items.len();
        Ok(SearchPage {
            items,
            total: Total::counted(count_u64(counted), page.offset(), on_page),
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
        let Some(declared) = schema.fields.get(field) else {
            return Err(invalid(schema, format!("a tally of field #{field}")));
        };
        let mut statement = Statement::new(&format!(
            "SELECT {name}, count(*) FROM {} WHERE deleted_at IS NULL",
            plan.table,
            name = declared.name
        ));
        push_conditions(&mut statement, plan, conditions)?;
        statement.push(&format!(" GROUP BY {}", declared.name));
        let (sql, statement) = statement.build()?;
        let rows = self.fetch_all(&sql, statement).await?;
        rows.iter()
            .map(|row| {
                let value = decode_value(row, 0, &plan.schema.fields[field])?;
                Ok((value, count_u64(at(row, 1)?)))
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

/// The search document an update writes, computed in Rust (the core's
/// [`search_document`]) from the rows as the update leaves them.
enum Derived {
    /// The update changes no field of the document.
    Nothing,
    /// Every row gets this document: the update sets every field of it.
    Same(String),
    /// The row `ids[i]` gets `documents[i]`, and the update changes no other row: the
    /// documents come from rows read (and locked) before it, so a row that was not live then
    /// is left alone, as if it had not been live when the update ran.
    PerRow {
        ids: Vec<Uuid>,
        documents: Vec<String>,
    },
}

impl Derived {
    /// Pushes `, search_text = …` for the update (the row is `t`).
    fn push_set(&self, statement: &mut Statement) {
        match self {
            Derived::Nothing => {}
            Derived::Same(document) => {
                let placeholder = statement.arg(document.as_str());
                statement.push(&format!(", search_text = {placeholder}"));
            }
            Derived::PerRow { ids, documents } => {
                let ids = statement.arg(ids.as_slice());
                let documents = statement.arg(documents.as_slice());
                statement.push(&format!(
                    ", search_text = (SELECT d.document FROM unnest({ids}::uuid[], \
                     {documents}::text[]) AS d(id, document) WHERE d.id = t.id)"
                ));
            }
        }
    }

    /// Pushes ` AND t.id = ANY(…)` when only some rows have a document.
    fn push_guard(&self, statement: &mut Statement) {
        if let Derived::PerRow { ids, .. } = self {
            let ids = statement.arg(ids.as_slice());
            statement.push(&format!(" AND t.id = ANY({ids})"));
        }
    }
}

/// The placeholders of the values an update sets, each bound once, when first used.
#[derive(Default)]
struct Placeholders(HashMap<usize, String>);

impl Placeholders {
    /// The placeholder of the value `changes` sets for `field`.
    fn of(
        &mut self,
        statement: &mut Statement,
        plan: &Plan,
        changes: &Changes,
        field: usize,
    ) -> String {
        self.0
            .entry(field)
            .or_insert_with(|| {
                let value = changes
                    .sets
                    .iter()
                    .find(|(f, _)| *f == field)
                    .map_or(&Value::Null, |(_, v)| v);
                statement.value(plan.storages[field], value)
            })
            .clone()
    }
}

/// The conditions an update's new values must meet, as SQL expressions over the updated row
/// `t`: per reference field set to a row, that the row is live; per unique rule whose fields
/// the update sets (none of them to NULL, which nothing conflicts with), that another live row
/// holds the values (the rule is broken when it is true).
struct Guards {
    /// `(field, the referred row is live)`, in declaration order.
    references: Vec<(usize, String)>,
    /// `(rule, another live row holds the values)`, in declaration order.
    uniques: Vec<(usize, String)>,
}

impl Guards {
    /// The guards of `changes` to `plan`'s rows. For one row (`ids` is `None`), a unique
    /// rule's other fields are the row's (`t.<field>`). For the rows of `ids` (a placeholder
    /// of an array), the conditions do not depend on the row, so the update changes every row
    /// or none: a rule is broken when a live row outside them, or two of them, would hold the
    /// same values (when the update sets every field of the rule, when two of them are live).
    fn of(
        statement: &mut Statement,
        placeholders: &mut Placeholders,
        plans: &Plans,
        plan: &Plan,
        changes: &Changes,
        ids: Option<&str>,
    ) -> Self {
        let table = plan.table;
        let mut references = Vec::new();
        for (field, value) in &changes.sets {
            if value.is_null() {
                continue;
            }
            if let Some(reference) = plan.references.iter().find(|r| r.field == *field) {
                let target = plans.at(reference.target_position).table;
                let id = placeholders.of(statement, plan, changes, *field);
                references.push((
                    *field,
                    format!(
                        "EXISTS (SELECT 1 FROM {target} x WHERE x.id = {id} \
                         AND x.deleted_at IS NULL)"
                    ),
                ));
            }
        }
        let mut uniques = Vec::new();
        for (rule, fields) in plan.unique_fields.iter().enumerate() {
            let set: Vec<usize> = fields
                .iter()
                .copied()
                .filter(|&f| changes.sets(f))
                .collect();
            let null = changes
                .sets
                .iter()
                .any(|(f, v)| set.contains(f) && v.is_null());
            if set.is_empty() || null {
                continue;
            }
            let unset: Vec<&str> = fields
                .iter()
                .filter(|f| !set.contains(f))
                .map(|&f| plan.schema.fields[f].name)
                .collect();
            let mut values = String::new();
            for &f in &set {
                let placeholder = placeholders.of(statement, plan, changes, f);
                values.push_str(&format!(
                    " AND o.{} = {placeholder}",
                    plan.schema.fields[f].name
                ));
            }
            let taken = match ids {
                None => {
                    let same: String = unset
                        .iter()
                        .map(|name| format!(" AND o.{name} = t.{name}"))
                        .collect();
                    format!(
                        "EXISTS (SELECT 1 FROM {table} o WHERE o.deleted_at IS NULL \
                         AND o.id <> t.id{values}{same})"
                    )
                }
                Some(ids) => {
                    let same: String = unset
                        .iter()
                        .map(|name| format!(" AND o.{name} = a.{name}"))
                        .collect();
                    let others = format!(
                        "EXISTS (SELECT 1 FROM {table} a, {table} o WHERE a.id = ANY({ids}) \
                         AND a.deleted_at IS NULL AND o.deleted_at IS NULL AND o.id <> a.id\
                         {values}{same})"
                    );
                    let among = if unset.is_empty() {
                        format!(
                            "(SELECT count(*) FROM {table} a WHERE a.id = ANY({ids}) \
                             AND a.deleted_at IS NULL) > 1"
                        )
                    } else {
                        let same: String = unset
                            .iter()
                            .map(|name| format!(" AND a.{name} = b.{name}"))
                            .collect();
                        format!(
                            "EXISTS (SELECT 1 FROM {table} a JOIN {table} b ON a.id < b.id \
                             WHERE a.id = ANY({ids}) AND b.id = ANY({ids}) \
                             AND a.deleted_at IS NULL AND b.deleted_at IS NULL{same})"
                        )
                    };
                    format!("({others} OR {among})")
                }
            };
            uniques.push((rule, taken));
        }
        Self {
            references,
            uniques,
        }
    }

    fn is_empty(&self) -> bool {
        self.references.is_empty() && self.uniques.is_empty()
    }

    /// Pushes ` AND …` so that the update changes nothing when a guard fails.
    fn push(&self, statement: &mut Statement) {
        for (_, live) in &self.references {
            statement.push(&format!(" AND {live}"));
        }
        for (_, taken) in &self.uniques {
            statement.push(&format!(" AND NOT {taken}"));
        }
    }

    /// Pushes `, NOT <live>` and `, <taken>` columns, for the follow-up that says which failed.
    fn push_columns(&self, statement: &mut Statement) {
        for (_, live) in &self.references {
            statement.push(&format!(", NOT {live}"));
        }
        for (_, taken) in &self.uniques {
            statement.push(&format!(", {taken}"));
        }
    }

    /// The first broken rule, read from the columns [`Guards::push_columns`] added, starting
    /// at `start` in `row`.
    fn first_broken(
        &self,
        row: &PgRow,
        start: usize,
        plans: &Plans,
        plan: &Plan,
        changes: &Changes,
    ) -> Result<Option<Error>> {
        let mut column = start;
        for (field, _) in &self.references {
            if at::<bool>(row, column)? {
                let reference = plan
                    .references
                    .iter()
                    .find(|r| r.field == *field)
                    .expect("a guarded reference field");
                let target = plans.at(reference.target_position).schema.kind();
                let id = changes
                    .sets
                    .iter()
                    .find(|(f, _)| f == field)
                    .and_then(|(_, v)| v.as_uuid())
                    .unwrap_or_default();
                return Ok(Some(Error::not_found(target, id)));
            }
            column += 1;
        }
        for (rule, _) in &self.uniques {
            if at::<bool>(row, column)? {
                let constraint = Constraint::of_rule(plan.schema, &plan.schema.unique[*rule]);
                return Ok(Some(Error::Conflict { constraint }));
            }
            column += 1;
        }
        Ok(None)
    }
}

/// `UPDATE <table> AS t SET updated_at = …, version = t.version + 1, <field> = …, …` with the
/// search document the update derives.
fn update_statement(
    plan: &Plan,
    changes: &Changes,
    derived: &Derived,
    placeholders: &mut Placeholders,
) -> Statement {
    let mut statement = Statement::new(&format!("UPDATE {} AS t SET updated_at = ", plan.table));
    statement.bind(changes.at);
    statement.push(", version = t.version + 1");
    for (field, _) in &changes.sets {
        let placeholder = placeholders.of(&mut statement, plan, changes, *field);
        statement.push(&format!(
            ", {} = {placeholder}",
            plan.schema.fields[*field].name
        ));
    }
    derived.push_set(&mut statement);
    statement
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

/// Whether a row of `rows` refers to another row of `rows` (an entity that refers to itself).
fn refers_within(plan: &Plan, rows: &[Record]) -> bool {
    let fields: Vec<usize> = plan
        .references
        .iter()
        .filter(|r| r.target_position == plan.position)
        .map(|r| r.field)
        .collect();
    if fields.is_empty() {
        return false;
    }
    let ids: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    rows.iter().any(|row| {
        fields
            .iter()
            .any(|&f| row.values[f].as_uuid().is_some_and(|id| ids.contains(&id)))
    })
}

impl Session {
    /// Inserts `row` with [`Plan::insert`]: `Ok(None)` when it went in, `Ok(Some(why))` when it
    /// did not (a rule it breaks), `Err` when the statement failed.
    async fn insert_one(
        &mut self,
        plans: &Plans,
        plan: &Plan,
        entry: &Entry,
        row: &Record,
    ) -> Result<Option<Error>> {
        let mut statement = query(&plan.insert).bind(row.id);
        for (value, &storage) in row.values.iter().zip(&plan.storages) {
            statement = bind_value(statement, storage, value);
        }
        statement = statement
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(row.version);
        if plan.searchable {
            statement = statement.bind(search_document(entry, &row.values));
        }
        if self.execute(&plan.insert, statement).await?.rows_affected() == 1 {
            return Ok(None);
        }
        self.why_not_inserted(plans, plan, row).await.map(Some)
    }

    /// Why `row`, whose insert changed nothing, was not inserted: its first reference that is
    /// not live, its first unique value a live row holds, its id taken, or a race.
    async fn why_not_inserted(
        &mut self,
        plans: &Plans,
        plan: &Plan,
        row: &Record,
    ) -> Result<Error> {
        let sql = &plan.why_not_inserted;
        let mut statement = query(sql).bind(row.id);
        for &field in &plan.why_not_inserted_fields {
            statement = bind_value(statement, plan.storages[field], &row.values[field]);
        }
        let why = self.fetch_one(sql, statement).await?;
        let mut column = 0;
        for reference in &plan.references {
            if at::<bool>(&why, column)? {
                let target = plans.at(reference.target_position).schema.kind();
                let id = row.values[reference.field].as_uuid().unwrap_or_default();
                return Ok(Error::not_found(target, id));
            }
            column += 1;
        }
        for rule in plan.schema.unique {
            if at::<bool>(&why, column)? {
                let constraint = Constraint::of_rule(plan.schema, rule);
                return Ok(Error::Conflict { constraint });
            }
            column += 1;
        }
        if at::<bool>(&why, column)? {
            let constraint = Constraint::primary_key(plan.schema.kind());
            return Ok(Error::Conflict { constraint });
        }
        Ok(raced(&format!(
            "a row the {} refers to, or one holding its unique values,",
            plan.schema.name
        )))
    }

    /// Inserts `rows`, in order, all or none: by `COPY` or one `INSERT … SELECT FROM
    /// UNNEST(…)` per [`BATCH`]. When a row does not go in, the rows this call inserted are
    /// deleted again and the error names the first row's first broken rule.
    async fn insert_rows(
        &mut self,
        plans: &Plans,
        plan: &Plan,
        entry: &Entry,
        rows: &[Record],
    ) -> Result<()> {
        if refers_within(plan, rows) {
            // Each row must see the rows before it: one statement per row.
            for (done, row) in rows.iter().enumerate() {
                if let Some(why) = self.insert_one(plans, plan, entry, row).await? {
                    let inserted: Vec<Uuid> = rows[..done].iter().map(|r| r.id).collect();
                    self.take_back(plan, inserted).await?;
                    return Err(why);
                }
            }
            return Ok(());
        }
        for (number, batch) in rows.chunks(BATCH).enumerate() {
            if self.copy_rows(plan, entry, batch).await? {
                continue;
            }
            let mut statement =
                query(&plan.insert_many).bind(batch.iter().map(|r| r.id).collect::<Vec<_>>());
            for (field, &storage) in plan.storages.iter().enumerate() {
                statement = bind_column(statement, storage, batch, field);
            }
            statement = statement
                .bind(batch.iter().map(|r| r.created_at).collect::<Vec<_>>())
                .bind(batch.iter().map(|r| r.updated_at).collect::<Vec<_>>())
                .bind(batch.iter().map(|r| r.version).collect::<Vec<_>>());
            if plan.searchable {
                let documents: Vec<String> = batch
                    .iter()
                    .map(|r| search_document(entry, &r.values))
                    .collect();
                statement = statement.bind(documents);
            }
            let inserted = self.fetch_all(&plan.insert_many, statement).await?;
            if inserted.len() == batch.len() {
                continue;
            }
            // The first row that did not go in (in input order), why, and every row this call
            // inserted taken back.
            let mut taken = rows[..number * BATCH]
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>();
            for row in &inserted {
                taken.push(at(row, 0)?);
            }
            let went_in: HashSet<Uuid> = taken.iter().copied().collect();
            let failed = batch
                .iter()
                .find(|r| !went_in.contains(&r.id))
                .expect("fewer rows inserted than given");
            let why = self.why_not_inserted(plans, plan, failed).await?;
            self.take_back(plan, taken).await?;
            return Err(why);
        }
        Ok(())
    }

    /// Deletes the rows `ids`, which this insert of many rows put in, when another did not go
    /// in.
    async fn take_back(&mut self, plan: &Plan, ids: Vec<Uuid>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let statement = query(&plan.delete_many).bind(ids);
        self.execute(&plan.delete_many, statement).await?;
        Ok(())
    }

    /// The search document `changes` gives the live rows among `ids` (see [`Derived`]). When
    /// the update sets some of its fields only, the rows' other parts are read first, and
    /// locked, so that no concurrent update changes them before this one writes the document.
    async fn derive(
        &mut self,
        plan: &Plan,
        entry: &Entry,
        ids: &[Uuid],
        changes: &Changes,
    ) -> Result<Derived> {
        let touches = changes
            .sets
            .iter()
            .any(|(field, _)| plan.search_fields.contains(field));
        if !plan.searchable || !touches {
            return Ok(Derived::Nothing);
        }
        if plan.search_fields.iter().all(|&field| changes.sets(field)) {
            let mut values = vec![Value::Null; plan.storages.len()];
            for (field, value) in &changes.sets {
                values[*field] = value.clone();
            }
            return Ok(Derived::Same(search_document(entry, &values)));
        }
        let rows = self
            .fetch_all(&plan.lock, query(&plan.lock).bind(ids))
            .await?;
        let mut locked = Vec::with_capacity(rows.len());
        let mut documents = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut record = decode_record(row, 0, plan.schema.fields)?;
            changes.apply_to(&mut record);
            locked.push(record.id);
            documents.push(search_document(entry, &record.values));
        }
        Ok(Derived::PerRow {
            ids: locked,
            documents,
        })
    }
}

#[async_trait]
impl RecordWriter for Session {
    async fn insert(&mut self, schema: &'static Schema, rows: Vec<Record>) -> Result<Vec<Record>> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let entry = plans.entry(plan);
        match rows.as_slice() {
            [] => {}
            [row] => {
                if let Some(why) = self.insert_one(&plans, plan, entry, row).await? {
                    return Err(why);
                }
            }
            rows => self.insert_rows(&plans, plan, entry, rows).await?,
        }
        self.inserted.add(plan.table, rows.len() as u64);
        Ok(rows)
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
        let derived = self.derive(plan, plans.entry(plan), &[id], changes).await?;
        let mut placeholders = Placeholders::default();
        let mut statement = update_statement(plan, changes, &derived, &mut placeholders);
        statement.push(" WHERE t.id = ");
        statement.bind(id);
        statement.push(" AND t.deleted_at IS NULL");
        if let Some(version) = expected_version {
            statement.push(" AND t.version = ");
            statement.bind(version);
        }
        derived.push_guard(&mut statement);
        let guards = Guards::of(
            &mut statement,
            &mut placeholders,
            &plans,
            plan,
            changes,
            None,
        );
        guards.push(&mut statement);
        statement.push(&format!(" RETURNING {}", plan.columns));
        let (sql, statement) = statement.build()?;
        if let Some(row) = self.fetch_optional(&sql, statement).await? {
            return decode_record(&row, 0, plan.schema.fields);
        }

        // Why: the row missing, its version, then the rules of the new values.
        let mut why = Statement::new("SELECT t.version");
        let guards = Guards::of(
            &mut why,
            &mut Placeholders::default(),
            &plans,
            plan,
            changes,
            None,
        );
        guards.push_columns(&mut why);
        why.push(&format!(" FROM {} t WHERE t.id = ", plan.table));
        why.bind(id);
        why.push(" AND t.deleted_at IS NULL");
        let (sql, why) = why.build()?;
        let Some(row) = self.fetch_optional(&sql, why).await? else {
            return Err(Error::not_found(schema.kind(), id));
        };
        let version: i64 = at(&row, 0)?;
        if let Some(expected) = expected_version.filter(|&e| e != version) {
            return Err(Error::stale_version(schema.kind(), id, expected, version));
        }
        Err(guards
            .first_broken(&row, 1, &plans, plan, changes)?
            .unwrap_or_else(|| raced(&format!("the {}", schema.name))))
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
        if ids.is_empty() {
            return Ok(0);
        }
        let derived = self.derive(plan, plans.entry(plan), ids, changes).await?;
        let mut placeholders = Placeholders::default();
        let mut statement = update_statement(plan, changes, &derived, &mut placeholders);
        let all = statement.arg(ids);
        statement.push(&format!(
            " WHERE t.id = ANY({all}) AND t.deleted_at IS NULL"
        ));
        derived.push_guard(&mut statement);
        let guards = Guards::of(
            &mut statement,
            &mut placeholders,
            &plans,
            plan,
            changes,
            Some(&all),
        );
        guards.push(&mut statement);
        let (sql, statement) = statement.build()?;
        let changed = self.execute(&sql, statement).await?.rows_affected();
        if changed > 0 || guards.is_empty() {
            return Ok(changed);
        }

        // Nothing changed: no live row among `ids`, or a guard failed. Which?
        let mut why = Statement::new("SELECT (SELECT count(*) FROM ");
        let all = why.arg(ids);
        why.push(&format!(
            "{} a WHERE a.id = ANY({all}) AND a.deleted_at IS NULL)",
            plan.table
        ));
        let guards = Guards::of(
            &mut why,
            &mut Placeholders::default(),
            &plans,
            plan,
            changes,
            Some(&all),
        );
        guards.push_columns(&mut why);
        let (sql, why) = why.build()?;
        let row = self.fetch_one(&sql, why).await?;
        if at::<i64>(&row, 0)? == 0 {
            return Ok(0);
        }
        Err(guards
            .first_broken(&row, 1, &plans, plan, changes)?
            .unwrap_or_else(|| raced(&format!("the {} rows", schema.name))))
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
                .bind(id)
                .bind(delta)
                .bind(at_)
                .bind(i64::try_from(low).expect("clamped"))
                .bind(i64::try_from(high).expect("clamped"));
            if let Some(row) = self.fetch_optional(&increment.update, statement).await? {
                return Ok(Incremented::Done(decode_record(
                    &row,
                    0,
                    plan.schema.fields,
                )?));
            }
        }
        let statement = query(&increment.current).bind(id);
        let Some(row) = self.fetch_optional(&increment.current, statement).await? else {
            return Ok(Incremented::NotLive);
        };
        let current = match decode_value(&row, 0, &plan.schema.fields[field])? {
            Value::Int(current) => current,
            _ => 0,
        };
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
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .fetch_all(&plan.lock, query(&plan.lock).bind(ids))
            .await?;
        records(plan, &rows)
    }

    async fn soft_delete(
        &mut self,
        schema: &'static Schema,
        id: Uuid,
        at_: Timestamp,
    ) -> Result<bool> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let statement = query(&plan.soft_delete).bind(id).bind(at_);
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
        let statement = query(&plan.restore).bind(id).bind(at_);
        if self
            .execute(&plan.restore, statement)
            .await?
            .rows_affected()
            == 1
        {
            return Ok(true);
        }
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
        Err(raced(&format!("the {}", schema.name)))
    }

    async fn hard_delete(&mut self, schema: &'static Schema, id: Uuid) -> Result<()> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        // The foreign keys apply each referring entity's OnDelete, in the same statement.
        let statement = query(&plan.hard_delete).bind(id);
        let deleted = self
            .delete_in_savepoint(&plan.hard_delete, statement)
            .await?
            .rows_affected();
        match deleted {
            0 => Err(Error::not_found(schema.kind(), id)),
            _ => Ok(()),
        }
    }

    async fn purge_deleted_before(
        &mut self,
        schema: &'static Schema,
        before: Timestamp,
    ) -> Result<u64> {
        let plans = self.plans();
        let plan = plans.of(schema)?;
        let statement = query(&plan.purge).bind(before);
        let purged = self.delete_in_savepoint(&plan.purge, statement).await?;
        Ok(purged.rows_affected())
    }

    /// One statement: the lane locks of the application's events, then the insert (see
    /// `crate::outbox`).
    async fn append_events(&mut self, events: Vec<NewEvent>) -> Result<()> {
        self.append_to_outbox(events).await
    }

    fn own_events(&self) -> bool {
        self.publishing().own_events
    }
}

impl Session {
    /// Runs `statement` (`sql`, a delete for good) in a savepoint of its own: a foreign key of
    /// an application's table that refuses it (`Error::Referenced`) then undoes the statement
    /// alone, where PostgreSQL would otherwise abort the unit of work's whole transaction.
    async fn delete_in_savepoint(
        &mut self,
        sql: &str,
        statement: crate::session::PgQuery<'_>,
    ) -> Result<sqlx::postgres::PgQueryResult> {
        self.open_savepoint(DELETE_SAVEPOINT).await?;
        match self.execute(sql, statement).await {
            Ok(done) => {
                self.release_savepoint(DELETE_SAVEPOINT).await?;
                Ok(done)
            }
            Err(refused) => {
                self.roll_back_to_savepoint(DELETE_SAVEPOINT).await?;
                Err(refused)
            }
        }
    }
}

/// The savepoint around a delete for good (a name of ours, apart from the unit of work's
/// `sp1`, `sp2`, …).
const DELETE_SAVEPOINT: &str = "stockroom_delete";

#[cfg(all(test, feature = "testing"))]
mod tests {
    use sqlx::Connection;
    use stockroom_core::{NewProduct, ProductId, ProductPatch, Store};

    use crate::testing::TestDatabase;

    /// The stored search document of each of `ids`, beside the one the core makes of the row.
    async fn documents(db: &TestDatabase, store: &crate::PostgresStore, ids: &[ProductId]) {
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let mut read = store.read().await.unwrap();
        for &id in ids {
            let product = read.products().require(id).await.unwrap();
            let stored: String =
                sqlx::query_scalar("SELECT search_text FROM products WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(stored, product.search_document(), "{product:?}");
        }
        conn.close().await.unwrap();
    }

    /// Whatever fields an update names (one text field, all three, the description cleared, none
    /// of them; one row or many), the stored search document is the core's
    /// `search_document` of the updated row, byte for byte.
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
            let unique_free = patch.sku().is_none();
            if unique_free {
                let changed = uow.products().update_many(&ids[1..], patch).await.unwrap();
                assert_eq!(changed, 2, "{patch:?}");
            }
        }
        uow.commit().await.unwrap();
        documents(&db, &store, &ids).await;
        store.close().await;
        db.drop_now().await;
    }
}

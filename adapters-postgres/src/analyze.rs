//! Statistics refreshed after a bulk insert.
//!
//! Right after a large import the planner's statistics do not know the new rows until
//! autovacuum analyzes the table (it checks once a minute by default). Meanwhile it plans with
//! the old ones: among a million products just loaded, it took "mug" (in 176,290 rows) for a
//! rare term and read every match through the trigram index, 201 ms for a search that takes
//! 8.9 ms once the table is analyzed (`cargo bench --bench scale --features postgres`).
//!
//! So after a unit of work that inserted [`BULK_ROWS`] rows or more into a table commits, the
//! table is analyzed in the background, on a connection of the store's pool, when those rows
//! are at least a tenth of what its statistics last counted (`pg_class.reltuples`; autovacuum's
//! own default threshold). One `ANALYZE` per table runs at a time; a commit that asks
//! meanwhile runs it once more afterwards. A failure (a role that does not own the table, a
//! store closed meanwhile) is logged at `debug` and changes nothing else. On PostgreSQL only
//! (CockroachDB and YugabyteDB keep their statistics their own way); off with
//! [`PostgresOptions::analyze_after_bulk_insert`](crate::PostgresOptions::analyze_after_bulk_insert).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::PgPool;

/// The fewest rows one unit of work inserts into a table for the table to be analyzed after it
/// commits.
pub(crate) const BULK_ROWS: u64 = 1_000;

/// The rows a unit of work inserted, per table.
#[derive(Debug, Default)]
pub(crate) struct Inserted(Vec<(&'static str, u64)>);

impl Inserted {
    /// Notes `rows` more rows inserted into `table`.
    pub(crate) fn add(&mut self, table: &'static str, rows: u64) {
        match self.0.iter_mut().find(|(t, _)| *t == table) {
            Some((_, n)) => *n += rows,
            None => self.0.push((table, rows)),
        }
    }

    /// The tables that got at least [`BULK_ROWS`] rows, and how many.
    fn bulk(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().copied().filter(|(_, n)| *n >= BULK_ROWS)
    }
}

/// The store's background `ANALYZE`s.
#[derive(Debug)]
pub(crate) struct Analyzer {
    pool: PgPool,
    /// The tables being analyzed, each with whether a commit asked again meanwhile.
    running: Mutex<HashMap<&'static str, bool>>,
}

impl Analyzer {
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// After a unit of work that inserted `inserted` committed: analyzes, in the background,
    /// each table it bulk-inserted into whose statistics the new rows outdate.
    pub(crate) fn after_commit(self: &Arc<Self>, inserted: &Inserted) {
        for (table, rows) in inserted.bulk() {
            if self.claim(table) {
                let analyzer = Arc::clone(self);
                tokio::spawn(async move { analyzer.analyze(table, rows).await });
            }
        }
    }

    /// Whether the caller is to analyze `table`: no, if an `ANALYZE` of it is running (which
    /// then runs once more).
    fn claim(&self, table: &'static str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match running.get_mut(table) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                running.insert(table, false);
                true
            }
        }
    }

    /// Whether `table` is to be analyzed once more (and so stays claimed).
    fn again(&self, table: &'static str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(table) == Some(&true) {
            running.insert(table, false);
            true
        } else {
            running.remove(table);
            false
        }
    }

    async fn analyze(&self, table: &'static str, rows: u64) {
        let mut check_first = true;
        loop {
            if let Err(error) = self.analyze_once(table, rows, check_first).await {
                tracing::debug!(table, %error, "postgres: the analyze after a bulk insert failed");
            }
            if !self.again(table) {
                return;
            }
            // Another bulk insert committed meanwhile: analyze whatever the count says.
            check_first = false;
        }
    }

    async fn analyze_once(&self, table: &str, rows: u64, check_first: bool) -> sqlx::Result<()> {
        if check_first {
            let counted: Option<f32> =
                sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
                    .bind(table)
                    .fetch_optional(&self.pool)
                    .await?;
            // -1: never analyzed; below ten times the new rows: the new rows are a tenth or more.
            let outdated = counted.is_none_or(|n| n < 0.0 || (n as f64) < 10.0 * rows as f64);
            if !outdated {
                return Ok(());
            }
        }
        // The table's name comes from its entity's declaration, never from user input.
        let sql = format!("ANALYZE {table}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await?;
        tracing::debug!(table, rows, "postgres: analyzed after a bulk insert");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tables_with_a_bulk_of_rows_count() {
        let mut inserted = Inserted::default();
        inserted.add("products", 600);
        inserted.add("reviews", 10);
        inserted.add("products", 400);
        assert_eq!(inserted.bulk().collect::<Vec<_>>(), [("products", 1_000)]);
    }
}

//! The SQL of every operation and the rows of every table, each written once.
//!
//! - [`codec`]: conversions between Stockroom's values and SQLite's, and the [`RowReader`] a
//!   row mapping reads its columns with.
//! - [`generic`]: the SQL every entity table shares, written once for any [`Table`].
//! - One module per entity ([`products`], [`categories`], [`users`], [`reviews`]): its
//!   [`Table`] implementation (its columns, its row mapping, its filter), its own queries, and
//!   its own repository port on [`Conn`](crate::conn::Conn).
//! - [`ledger`]: the stock movements and the stock move.
//!
//! Everything here but the port implementations is synchronous and runs on a connection that
//! one call owns for its duration, inline or on a blocking thread (see `conn.rs`). A write runs
//! in a unit of work, which holds SQLite's single write lock ("One writer, many readers" in the
//! [crate docs](crate#design)): no other connection changes a row between a statement that reads
//! it and one that writes it, so a read is all that "locking" a row needs here.
//!
//! Adding an entity table: its module here (a [`Table`] implementation, with `table_columns!`,
//! and its repository port), its `mod` line below and its line in `TABLES`, and its
//! migration in `schema.rs`.

use rusqlite::types::Value;
use stockroom_core::{Constraint, Entity, Result};

use crate::conn::Db;
use codec::RowReader;

/// `Table::NAME`, `Table::COLUMNS`, `Table::WRITE_COLUMNS` and `Table::GET_SQL` of a table
/// from its name, its own columns (then the bookkeeping ones, `created_at, updated_at,
/// deleted_at, version`, which every entity table has) and the derived columns a write stores
/// after them, each listed once.
macro_rules! table_columns {
    ($name:literal: $first:literal $(, $own:literal)* $(; derived $($derived:literal),+)?) => {
        const NAME: &'static str = $name;
        const COLUMNS: &'static [&'static str] =
            &[$first, $($own,)* "created_at", "updated_at", "deleted_at", "version"];
        const WRITE_COLUMNS: &'static [&'static str] = &[
            $first, $($own,)* "created_at", "updated_at", "deleted_at", "version"
            $($(, $derived)+)?
        ];
        const GET_SQL: &'static str = concat!(
            "SELECT ", $first, $(", ", $own,)* ", created_at, updated_at, deleted_at, version",
            " FROM ", $name, " WHERE id = ? AND deleted_at IS NULL"
        );
    };
}

pub(crate) mod codec;
pub(crate) mod generic;
pub(crate) mod ledger;

pub(crate) mod categories;
pub(crate) mod products;
pub(crate) mod reviews;
pub(crate) mod users;

/// Every table the adapter maps, with the columns it writes (in the order it writes them):
/// what the schema test holds against the live schema.
#[cfg(test)]
pub(crate) const TABLES: &[(&str, &[&str])] = &[
    (
        <stockroom_core::Product as Table>::NAME,
        <stockroom_core::Product as Table>::WRITE_COLUMNS,
    ),
    (
        <stockroom_core::Category as Table>::NAME,
        <stockroom_core::Category as Table>::WRITE_COLUMNS,
    ),
    (
        <stockroom_core::User as Table>::NAME,
        <stockroom_core::User as Table>::WRITE_COLUMNS,
    ),
    (
        <stockroom_core::Review as Table>::NAME,
        <stockroom_core::Review as Table>::WRITE_COLUMNS,
    ),
    (ledger::NAME, ledger::COLUMNS),
];

/// The extra conditions of a filter, with their parameters in order.
#[derive(Debug, Default)]
pub(crate) struct Where {
    sql: String,
    params: Vec<Value>,
}

impl Where {
    /// Adds ` AND clause`, whose one `?` takes `value`.
    pub(crate) fn and(&mut self, clause: &str, value: Value) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self.params.push(value);
    }
}

/// A table that stores one kind of entity: its columns, its row mapping and its filter. The SQL
/// on top of it is [`generic`]'s.
pub(crate) trait Table: Entity {
    /// The table's name.
    const NAME: &'static str;
    /// The columns a read returns, in the order `read` reads them.
    const COLUMNS: &'static [&'static str];
    /// The columns a write stores: `COLUMNS` and any derived column after them.
    const WRITE_COLUMNS: &'static [&'static str];
    /// The live row by id: the point read, its text built at compile time.
    const GET_SQL: &'static str;

    /// Reads the entity from `COLUMNS`, in their order (see [`generic::read_row`]).
    fn read(row: &mut RowReader<'_, '_>) -> rusqlite::Result<Self>;
    /// The values of `WRITE_COLUMNS`, in their order.
    fn values(&self, out: &mut Vec<Value>);
    /// The conditions of `filter`.
    fn filter(filter: &Self::Filter, w: &mut Where);
    /// Checks that every row a new row refers to is live.
    fn check_new_refs(_conn: &Db<'_>, _rows: &[Self]) -> Result<()> {
        Ok(())
    }
    /// Checks that every row a patch points to is live.
    fn check_patch_refs(_conn: &Db<'_>, _patch: &Self::Patch) -> Result<()> {
        Ok(())
    }
    /// The row's unique values, each with its constraint and the condition (with one `?`) that
    /// finds a row holding it, in the order the entity declares them. Only an entity with more
    /// than one needs them: see `generic::first_conflict`.
    fn unique_columns(&self) -> Vec<(Constraint, &'static str, Value)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use stockroom_core::{Category, Product, Review, Store, StoreConfig, User};

    use super::*;
    use crate::{with_connection, SqliteStore};

    /// The point read built at compile time selects what `read` expects, from its own table.
    fn get_sql_matches_the_columns<E: Table>() {
        let built = format!(
            "SELECT {} FROM {} WHERE id = ? AND deleted_at IS NULL",
            generic::columns::<E>(None),
            E::NAME
        );
        assert_eq!(E::GET_SQL, built);
    }

    #[test]
    fn each_tables_point_read_selects_its_columns() {
        get_sql_matches_the_columns::<Product>();
        get_sql_matches_the_columns::<Category>();
        get_sql_matches_the_columns::<User>();
        get_sql_matches_the_columns::<Review>();
    }

    /// The tables of the live schema (Stockroom's bookkeeping aside) and their columns, in the
    /// schema's order.
    fn live_tables(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
        let mut tables = conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> 'stockroom_migrations' ORDER BY name",
        )?;
        let names = tables
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut columns = conn.prepare("SELECT name FROM pragma_table_info(?) ORDER BY cid")?;
        names
            .into_iter()
            .map(|table| {
                let cols = columns
                    .query_map([&table], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((table, cols))
            })
            .collect()
    }

    /// Each table's column list in the adapter is the live schema's, in the same order, and the
    /// adapter maps every table the migrations create: a migration that adds, drops or renames
    /// a column (or adds a table) without the row mapping following fails here, naming the table
    /// and the difference.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_column_lists_are_the_live_schemas() {
        let store = SqliteStore::connect(&StoreConfig::new("sqlite::memory:"))
            .await
            .unwrap();
        let mut uow = store.begin().await.unwrap();
        let live = with_connection(uow.as_mut(), live_tables)
            .await
            .unwrap()
            .unwrap();
        uow.rollback().await.unwrap();
        store.close().await;

        let mapped: BTreeSet<&str> = TABLES.iter().map(|(name, _)| *name).collect();
        let created: BTreeSet<&str> = live.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            mapped, created,
            "the tables the adapter maps (left) are not the tables the migrations create (right)"
        );
        for (table, schema) in &live {
            let (_, adapter) = TABLES.iter().find(|(name, _)| name == table).unwrap();
            let missing: Vec<&String> = schema
                .iter()
                .filter(|c| !adapter.contains(&c.as_str()))
                .collect();
            let unknown: Vec<&&str> = adapter
                .iter()
                .filter(|c| !schema.iter().any(|s| s == *c))
                .collect();
            assert!(
                missing.is_empty() && unknown.is_empty(),
                "{table}: columns in the schema but not in the adapter's list: {missing:?}; \
                 in the adapter's list but not in the schema: {unknown:?}"
            );
            assert_eq!(
                adapter, schema,
                "{table}: the adapter's column order (left) is not the schema's (right)"
            );
        }
    }
}

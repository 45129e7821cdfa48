//! # stockroom-sqlite
//!
//! Stockroom's SQLite backend (rusqlite, bundled SQLite): the embedded default. It implements
//! every port of [`stockroom_core`] with the semantics the conformance suite checks.
//!
//! ```
//! use stockroom_core::{NewProduct, StoreConfig, Store, StoreExt, TransferRequest};
//! use stockroom_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> stockroom_core::Result<()> {
//! let store = SqliteStore::connect(&StoreConfig::new("sqlite::memory:")).await?;
//! let mut uow = store.begin().await?;
//! let a = uow.products().create(NewProduct::new("Blue mug", "blue-mug", "MUG-B")?.with_stock(10)?).await?;
//! let b = uow.products().create(NewProduct::new("Red mug", "red-mug", "MUG-R")?).await?;
//! uow.commit().await?;
//!
//! store.transfer(&TransferRequest::new(a.id, b.id, 4)).await?;
//! let mut read = store.read().await?;
//! assert_eq!(read.products().get(b.id).await?.map(|p| p.stock), Some(4));
//! # store.close().await;
//! # Ok(()) }
//! ```
//!
//! ## A guest in the application's database
//!
//! Stockroom does not assume it owns the database file:
//!
//! - **Its own bookkeeping.** Applied migrations are recorded in `stockroom_migrations`
//!   (version, description, SHA-256 checksum of the SQL, `applied_at` in µs), never in
//!   `PRAGMA user_version`, which stays the application's (rusqlite_migration counts in it;
//!   refinery and diesel keep tables of their own). The application's migrations can run before
//!   or after Stockroom's, in any order. Each pending migration is applied in its own
//!   `BEGIN IMMEDIATE` transaction with its bookkeeping row, so processes connecting at once apply
//!   it once; a database already current is only read. An applied migration whose checksum
//!   differs from this build's, or that this build does not know (a newer Stockroom migrated the
//!   file), is refused before anything changes: [`Error::Backend`](stockroom_core::Error::Backend)
//!   whose source is a [`SqliteError`] naming the version. A file migrated by the builds that
//!   counted in `user_version` (`user_version = 1` and Stockroom's tables, no
//!   `stockroom_migrations`) has its bookkeeping carried over and `user_version` set back to 0.
//! - **The application's file and options.** [`SqliteOptions`] names the file (or a private
//!   in-memory database) and every setting, including the application's own pragmas and an
//!   `on_open` hook run on every connection Stockroom opens (pragmas, functions, collations);
//!   [`SqliteStore::connect_with`] opens it. [`SqliteStore::connect`] builds its options from a
//!   [`StoreConfig`](stockroom_core::StoreConfig) and takes the same path. Stockroom still sets,
//!   last, what its semantics need: WAL on a file, `foreign_keys=ON`, `query_only` on the read
//!   connections.
//! - **The application's SQL in a unit of work.** [`with_connection`] runs a closure on the unit
//!   of work's writer connection inside its transaction, so the application's rows commit or
//!   roll back with Stockroom's. A closure that ends the transaction (its own `COMMIT` or
//!   `ROLLBACK`, or SQLite's rollback after an error such as a full disk) leaves a unit of work
//!   that refuses to run anything more or to commit ([`SqliteError::TransactionEnded`]).
//! - **One rusqlite.** The adapter accepts a range of rusqlite releases (0.39 to 0.43) and
//!   re-exports the one it is built with as [`stockroom_sqlite::rusqlite`](rusqlite), so the
//!   application's code and Stockroom share one rusqlite and one SQLite.
//!
//! ```
//! use stockroom_core::{NewProduct, Store};
//! use stockroom_sqlite::{rusqlite, with_connection, SqliteOptions, SqliteStore};
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("stockroom-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("app.db");
//! // The application's own database, with its own table and its own migration tool's
//! // user_version.
//! let app = rusqlite::Connection::open(&path)?;
//! app.execute_batch("CREATE TABLE audit (sku TEXT NOT NULL); PRAGMA user_version = 4;")?;
//!
//! let options = SqliteOptions::file(&path)
//!     .with_busy_timeout(std::time::Duration::from_secs(2))
//!     .with_pragma("cache_size", "-16000")
//!     .with_on_open(|conn| conn.execute_batch("PRAGMA temp_store = MEMORY"));
//! let store = SqliteStore::connect_with(options).await?;
//!
//! // The application's row and Stockroom's product, in one transaction.
//! let mut uow = store.begin().await?;
//! let mug = uow.products().create(NewProduct::new("Mug", "mug", "MUG-1")?).await?;
//! with_connection(uow.as_mut(), move |conn| {
//!     conn.execute("INSERT INTO audit (sku) VALUES (?1)", [mug.sku])
//! })
//! .await??;
//! uow.commit().await?;
//! store.close().await;
//!
//! let audited: i64 = app.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
//! let user_version: i64 = app.query_row("PRAGMA user_version", [], |r| r.get(0))?;
//! assert_eq!((audited, user_version), (1, 4));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! ## Your own entities
//!
//! An application's entity (see `stockroom_core::schema`) is registered with
//! [`StoreConfig::with_entity`](stockroom_core::StoreConfig::with_entity) (for
//! [`SqliteStore::connect`]) or [`SqliteOptions::with_entity`], and served by the same code as
//! Stockroom's own. When the store connects, after Stockroom's migrations, its table is brought
//! to its declaration:
//!
//! - **No table**: Stockroom creates it, `STRICT`, with a column per field (`NOT NULL` unless
//!   the field is optional, `CHECK`s for integer ranges, enum values, booleans and ids,
//!   `REFERENCES … ON DELETE SET NULL` or `CASCADE` for a reference), a partial unique index per
//!   unique rule (named by the rule's `index`), `{table}_order` on `(created_at, id)` and
//!   `{table}_{field}` on `(field, created_at, id)` per reference field. It records the table
//!   in `stockroom_entities` (the definition it made it to, and its SHA-256).
//! - **A new optional or defaulted field**: added with `ALTER TABLE … ADD COLUMN` (with its
//!   `DEFAULT`), and recorded again; **a new unique rule**: its index created.
//! - **Anything else that differs** (a field renamed, retyped, dropped, or added as required
//!   without a default): connecting fails with
//!   [`Error::Schema`](stockroom_core::Error::Schema) naming the entity and each differing
//!   column ([`SchemaProblem::Mismatch`](stockroom_core::SchemaProblem::Mismatch)), and nothing
//!   is changed. A table of that name that Stockroom did not create is not taken over
//!   ([`SchemaProblem::TableTaken`](stockroom_core::SchemaProblem::TableTaken)).
//! - **A table the application owns** (`Ddl::Application`) is only checked against the
//!   declaration: it must have each declared column with a type that can hold it (`TEXT`, an
//!   integer type, `BOOLEAN`, `TIMESTAMP`, `BLOB`), the declared nullability and the unique
//!   indexes by name, and a foreign key per reference with the declared `ON DELETE` (a delete
//!   for good relies on it); a column of its own is fine if Stockroom's inserts may leave it
//!   out.
//!
//! Each change runs in a `BEGIN IMMEDIATE` transaction of its own, planned again under the lock,
//! so processes connecting at once make it once. With migrations turned off
//! ([`SqliteOptions::with_run_migrations`]), entity tables are neither made nor checked.
//!
//! ## Design
//!
//! - **One writer, many readers.** SQLite allows one writer at a time. The store keeps one writer
//!   connection behind an async mutex: [`Store::begin`](stockroom_core::Store::begin) waits up to
//!   the acquire timeout for it (then fails as `Unavailable`, as a pool without a free
//!   connection does), and the unit of work holds it
//!   exclusively until commit, rollback or drop, so no other statement can slip into its
//!   transaction. The transaction opens with `BEGIN IMMEDIATE` (run in the same call as the
//!   first statement), so a transaction that reads first cannot fail its later write with
//!   `SQLITE_BUSY`; a lock held by another process past the busy timeout shows as `Transient`.
//!   Reads outside a unit of work take connections from a pool of up to `max_read_connections`
//!   read connections (`query_only`; `StoreConfig::max_connections` with `connect`), which
//!   run in parallel under WAL.
//! - **Short calls inline, long ones on the blocking pool.** A call whose statements find their
//!   rows through an index (a point read, a write by id, a stock move, a savepoint, a commit)
//!   runs inline, on the async worker that polls it: it takes a few microseconds, less than
//!   handing it to `tokio::task::spawn_blocking` and back (about 20 µs on a small machine). Work
//!   that grows with the data or the input (lists, counts, searches, batches of more than 32
//!   rows, purges, hard deletes with their cascades, the commit of a transaction that did any
//!   of those, [`with_connection`]) runs on tokio's blocking pool. See
//!   [Where calls run](#where-calls-run).
//! - **The stock move natively.** [`Store::move_stock`](stockroom_core::Store::move_stock)
//!   (what `transfer` runs and retries) takes the writer and runs `BEGIN IMMEDIATE`, the
//!   idempotency-key lookup, both products' stock (one `SELECT`, in id order), the checks,
//!   the ledger `INSERT`, one `UPDATE` of both stocks and `COMMIT` (`ROLLBACK` when a rule
//!   refuses the move) in one call. SQLite's single write lock covers both rows from the read
//!   to the update, so no row lock is needed.
//!   [`UnitOfWork::move_stock`](stockroom_core::UnitOfWork::move_stock) runs the same
//!   statements in one call inside the unit of work's transaction, its writes in a savepoint.
//!   With own events on ([`SqliteOptions::with_own_events`]), an applied move writes its
//!   `stockroom.stock.moved` event with its ledger row, in the same savepoint or transaction.
//! - **The outbox** (`stockroom_outbox`, and `stockroom_outbox_lanes` with a row per lane, made
//!   by migration 5): an event published in a unit of work is one `INSERT` in its transaction,
//!   its sequence the table's `AUTOINCREMENT` rowid (commit order, never given again after a
//!   purge). [`Store::claim_events`](stockroom_core::Store::claim_events), a settled claim and
//!   [`Store::purge_delivered_events`](stockroom_core::Store::purge_delivered_events) each take
//!   the writer (waiting their turn like a unit of work) for one `BEGIN IMMEDIATE` transaction
//!   committed in the same call; SQLite's single write lock serializes claims, those of other
//!   processes on the file included, so two claims never lease one lane.
//!   [`Store::outbox_backlog`](stockroom_core::Store::outbox_backlog) is one statement on a read
//!   connection.
//! - **A connection is never shared**: a lease owns it. Dropping a lease (a unit of work
//!   dropped without commit, or a call on the blocking pool whose future was dropped mid-way)
//!   rolls back any open transaction before the connection serves anyone else (checked with
//!   `is_autocommit`); an inline call cannot be dropped mid-way. After every call of a unit of
//!   work the connection is checked to still be in its transaction.
//! - **Deadlines and dropped calls.** Within a retried operation's deadline
//!   ([`RetryPolicy::deadline`](stockroom_core::RetryPolicy::deadline)), the waits for the
//!   writer, for a read connection and for a lock held elsewhere (the busy handler) end at the
//!   deadline, as `Transient` with nothing applied. A call on the blocking pool whose future
//!   is dropped (at a deadline, or by the application) is abandoned: it stops waiting for a
//!   lock, runs neither its pending `BEGIN` nor a `COMMIT` it has not begun (a stock move rolls
//!   back instead), and the statement it runs is interrupted (`sqlite3_interrupt`), so its
//!   connection is free again soon after; `tests/deadlines.rs` checks all three.
//! - **Connections**, in this order: the busy timeout, `synchronous=NORMAL` (`FULL` with
//!   `Durability::Full`), the application's pragmas and `on_open` hook, then WAL (the writer
//!   switches a file to it), `foreign_keys=ON` and `query_only` on read connections; a
//!   prepared-statement cache (`prepare_cached`, 64 statements). With `log_statements`, every
//!   statement is logged at `debug` (target `stockroom::sql`); statements slower than the slow
//!   statement threshold at `warn`. Idle read connections older than `max_lifetime` are closed
//!   and replaced; those beyond the kept idle ones, idle for `idle_timeout`, are closed.
//! - **Schema**: embedded migrations (see above), applied on connect unless turned off, for
//!   Stockroom's own tables; the tables of the application's entities are made from their
//!   declarations (see [Your own entities](#your-own-entities)). Ids are 16-byte BLOBs,
//!   timestamps INTEGER microseconds, booleans INTEGER 0 or 1, unique rules partial unique
//!   indexes over live rows named by the rule's declared index, `CHECK (stock >= 0)`, foreign
//!   keys as the declarations say, and `(created_at, id)` indexes for the list order.
//! - **One implementation for every entity.** The generic record ports
//!   ([`RecordReader`](stockroom_core::schema::RecordReader),
//!   [`RecordWriter`](stockroom_core::schema::RecordWriter)) are implemented once, over
//!   statements built from each entity's declaration when the store is built (the point read,
//!   the inserts, the lookups by unique rule, the read with related rows as one `LEFT JOIN` per
//!   reference, …), so Stockroom's entities and the application's are served by the same code
//!   and the same rules. A write that breaks several rules reports the first in the order every
//!   backend keeps (references before unique values, rules in declaration order): SQLite reports
//!   whichever unique index it met first, so after such a failure the rules are checked again in
//!   that order.
//! - **Search** matches a `search_text` column (the core's `search_document`, folded in Rust at
//!   write time) with `LIKE ? ESCAPE '\'`, so it gives the same rows as the memory adapter for
//!   any Unicode text. The page and the total come from one statement (`COUNT(*) OVER ()`).
//! - **URLs**: `sqlite://path/to/file.db` (created if missing; `sqlite:///abs/path.db` for an
//!   absolute path) and `sqlite::memory:` or `sqlite://:memory:` for a private in-memory database
//!   (SQLite's `memdb` VFS, shared by the store's connections, without WAL).
//!
//! ## Where calls run
//!
//! Each call runs in one place, chosen before it starts:
//!
//! - **Inline**: a short call on a database file. No statement run inline ever sleeps waiting
//!   for a lock: between blocking calls a connection's busy handler refuses to wait (and notes
//!   that it was asked to). So when another connection (another process, or the application's
//!   own) holds the write lock, the unit of work's `BEGIN IMMEDIATE` fails at once inline, and
//!   the whole call moves to the blocking pool, where the `BEGIN` waits up to the busy timeout;
//!   a read that met a lock (under WAL only while another process recovers the WAL
//!   index after a crash) runs again there too. Nothing else inline waits for a lock: under
//!   WAL readers never wait for the writer, and the writer, once its transaction holds the
//!   write lock, waits for nobody.
//! - **On the blocking pool**: long calls, the calls above that met a lock, commits with
//!   [`Durability::Full`] (they wait for the disk), WAL
//!   checkpoints, and every call on the private in-memory database, whose `memdb` VFS makes a
//!   reader wait for the writer's whole transaction.
//!
//! **Checkpoints.** SQLite checkpoints the WAL inside the commit that makes it reach
//! `wal_autocheckpoint` frames (1,000 by default), and a checkpoint writes and syncs pages: on a
//! shared virtual disk we measured up to hundreds of milliseconds. So the writer's WAL hook is
//! Stockroom's: it only notes the WAL's length after a commit, and when an inline commit
//! reached the threshold (the application's `wal_autocheckpoint` pragma, if it set one), a
//! `PASSIVE` checkpoint, as SQLite's own, follows on the blocking pool before the commit
//! returns; a commit already on the blocking pool checkpoints there. Setting
//! `wal_autocheckpoint` again inside [`with_connection`] gives the checkpoint back to SQLite.
//!
//! What this costs:
//!
//! - An inline call holds its tokio worker for as long as its statements run: a few
//!   microseconds for a point read; for a whole stock move, commit included (it writes the
//!   WAL), about 150 µs on the 2-core machine of the figures in the README; more when SQLite
//!   must read pages the OS does not cache. Inline calls never yield inside, so each one takes
//!   a unit of the task's tokio budget: a task that runs many in a row yields now and then,
//!   like one reading a socket.
//! - It works on any tokio runtime, `current_thread` included: nothing uses `block_in_place`.
//! - Cancellation: an inline call runs within one poll, so its future can only be dropped
//!   before it starts or after it ends; a call on the blocking pool is abandoned as above (the
//!   connection, its transaction rolled back, goes back when the work ends).
//! - The busy handler is Stockroom's: set how long to wait with
//!   [`SqliteOptions::with_busy_timeout`] (or a `busy_timeout` pragma); a handler the
//!   application installs in its `on_open` hook is replaced. During a blocking call it naps
//!   at most 20 ms at a time, so that an abandoned call stops waiting soon.

// The one unsafe item is the WAL hook in `hooks.rs` (rusqlite's safe `wal_hook` differs between
// the rusqlite releases this crate supports): everything else is safe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod application_sql;
mod conn;
mod ddl;
mod error;
#[allow(unsafe_code)] // the WAL hook: see the module docs
mod hooks;
mod moves;
mod options;
mod outbox;
mod records;
mod schema;
mod search_index;
mod sql;
mod store;

/// The rusqlite this adapter is built with: use it for [`with_connection`] and
/// [`SqliteOptions::with_on_open`], so the application's code and Stockroom share one version
/// (and one SQLite).
pub use rusqlite;

pub use application_sql::{with_connection, with_read_connection};
pub use error::{classify, SqliteError};
pub use options::{Durability, SqliteOptions};
pub use store::SqliteStore;
